//! Observe: whether the applied workloads are rolled out. Pure: reads the objects the API
//! server returned from the apply.

use serde_json::Value;

/// Why an object is not ready yet, or `None` when it is (or is not a workload).
pub fn not_ready(object: &Value) -> Option<String> {
    let kind = object.get("kind").and_then(Value::as_str)?;
    let api_version = object.get("apiVersion").and_then(Value::as_str)?;
    if api_version != "apps/v1" {
        return None;
    }
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let generation = int(object, "/metadata/generation");
    let observed = int(object, "/status/observedGeneration");
    let what = format!("{} {name}", kind.to_lowercase());
    if observed < generation {
        return Some(format!(
            "{what}: rollout of generation {generation} not observed yet"
        ));
    }
    let (want, updated, available) = match kind {
        "Deployment" => (
            object
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1),
            int(object, "/status/updatedReplicas"),
            int(object, "/status/availableReplicas"),
        ),
        "StatefulSet" => (
            object
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1),
            int(object, "/status/updatedReplicas"),
            int(object, "/status/readyReplicas"),
        ),
        "DaemonSet" => {
            let want = int(object, "/status/desiredNumberScheduled");
            (
                want,
                int(object, "/status/updatedNumberScheduled"),
                int(object, "/status/numberAvailable"),
            )
        }
        _ => return None,
    };
    if updated < want || available < want {
        return Some(format!(
            "{what}: {available}/{want} available, {updated}/{want} updated"
        ));
    }
    if kind == "Deployment" {
        // Old pods still running: the rollout has not finished.
        let total = int(object, "/status/replicas");
        if total > want {
            return Some(format!(
                "{what}: {} old replicas still terminating",
                total - want
            ));
        }
    }
    None
}

fn int(object: &Value, pointer: &str) -> i64 {
    object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(generation: i64, status: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "generation": generation},
               "spec": {"replicas": 2}, "status": status})
    }

    #[test]
    fn deployment_needs_current_generation_available() {
        assert!(not_ready(&deployment(2, json!({}))).is_some());
        assert!(
            not_ready(&deployment(
                2,
                json!({"observedGeneration": 1, "updatedReplicas": 2, "availableReplicas": 2, "replicas": 2})
            ))
            .is_some()
        );
        assert!(
            not_ready(&deployment(
                2,
                json!({"observedGeneration": 2, "updatedReplicas": 2, "availableReplicas": 1, "replicas": 2})
            ))
            .unwrap()
            .contains("1/2 available")
        );
        assert!(
            not_ready(&deployment(
                2,
                json!({"observedGeneration": 2, "updatedReplicas": 2, "availableReplicas": 2, "replicas": 3})
            ))
            .is_some()
        );
        assert_eq!(
            not_ready(&deployment(
                2,
                json!({"observedGeneration": 2, "updatedReplicas": 2, "availableReplicas": 2, "replicas": 2})
            )),
            None
        );
    }

    #[test]
    fn statefulset_and_daemonset() {
        let sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "generation": 1},
            "spec": {"replicas": 1}, "status": {"observedGeneration": 1, "updatedReplicas": 1, "readyReplicas": 0}});
        assert!(not_ready(&sts).is_some());
        let ds = json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "generation": 1},
            "status": {"observedGeneration": 1, "desiredNumberScheduled": 0}});
        assert_eq!(not_ready(&ds), None);
    }

    #[test]
    fn other_kinds_are_ready() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}});
        assert_eq!(not_ready(&cm), None);
    }
}
