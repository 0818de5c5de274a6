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

/// Why a pod cannot become ready, when it says so: a container waiting for a reason other than
/// the normal start-up (an image that cannot be pulled, a crash loop, a bad configuration), a
/// container that ran and failed, or a pod the scheduler cannot place. `None` while it is just
/// starting. Pure: reads the pod as the API server returned it.
pub fn pod_problem(pod: &Value) -> Option<String> {
    let name = pod.pointer("/metadata/name").and_then(Value::as_str)?;
    let statuses = ["/status/initContainerStatuses", "/status/containerStatuses"]
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten();
    for status in statuses {
        let container = status.get("name").and_then(Value::as_str).unwrap_or("?");
        let waiting = status.pointer("/state/waiting");
        let reason = waiting
            .and_then(|w| w.get("reason"))
            .and_then(Value::as_str);
        if let Some(reason) =
            reason.filter(|r| !matches!(*r, "ContainerCreating" | "PodInitializing"))
        {
            let message = waiting
                .and_then(|w| w.get("message"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            return Some(describe(name, container, reason, message));
        }
        let terminated = status.pointer("/lastState/terminated");
        if let Some(reason) = terminated
            .and_then(|t| t.get("reason"))
            .and_then(Value::as_str)
        {
            let code = terminated
                .and_then(|t| t.get("exitCode"))
                .and_then(Value::as_i64);
            let message = code.map(|c| format!("exit code {c}")).unwrap_or_default();
            return Some(describe(name, container, reason, &message));
        }
    }
    let conditions = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)?;
    conditions
        .iter()
        .find(|c| {
            c.get("type").and_then(Value::as_str) == Some("PodScheduled")
                && c.get("status").and_then(Value::as_str) == Some("False")
        })
        .map(|c| {
            let reason = c
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("Unschedulable");
            let message = c.get("message").and_then(Value::as_str).unwrap_or_default();
            format!("pod {name}: {reason}: {}", short(message))
        })
}

fn describe(pod: &str, container: &str, reason: &str, message: &str) -> String {
    if message.is_empty() {
        format!("pod {pod}, container {container}: {reason}")
    } else {
        format!(
            "pod {pod}, container {container}: {reason}: {}",
            short(message)
        )
    }
}

/// Kubelet messages can be long (a registry's whole answer); the status keeps the gist.
fn short(message: &str) -> String {
    const MAX: usize = 300;
    let line = message.lines().next().unwrap_or_default();
    match line.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_string(),
    }
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
    fn pod_problems_name_the_pod_container_and_reason() {
        let starting = json!({"metadata": {"name": "web-1"}, "status": {"containerStatuses": [
            {"name": "web", "state": {"waiting": {"reason": "ContainerCreating"}}}]}});
        assert_eq!(pod_problem(&starting), None);
        let pull = json!({"metadata": {"name": "web-1"}, "status": {"containerStatuses": [
            {"name": "web", "state": {"waiting": {"reason": "ImagePullBackOff",
             "message": "Back-off pulling image \"r/app:1\"\nmore"}}}]}});
        assert_eq!(
            pod_problem(&pull).as_deref(),
            Some("pod web-1, container web: ImagePullBackOff: Back-off pulling image \"r/app:1\"")
        );
        let crashed = json!({"metadata": {"name": "web-1"}, "status": {"containerStatuses": [
            {"name": "web", "state": {"running": {}},
             "lastState": {"terminated": {"reason": "Error", "exitCode": 3}}}]}});
        assert_eq!(
            pod_problem(&crashed).as_deref(),
            Some("pod web-1, container web: Error: exit code 3")
        );
        let unschedulable = json!({"metadata": {"name": "web-1"}, "status": {"conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "0/1 nodes are available"}]}});
        assert_eq!(
            pod_problem(&unschedulable).as_deref(),
            Some("pod web-1: Unschedulable: 0/1 nodes are available")
        );
        let long = "x".repeat(1000);
        let verbose = json!({"metadata": {"name": "p"}, "status": {"containerStatuses": [
            {"name": "c", "state": {"waiting": {"reason": "ErrImagePull", "message": long}}}]}});
        assert!(pod_problem(&verbose).is_some_and(|m| m.chars().count() < 400));
    }

    #[test]
    fn other_kinds_are_ready() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}});
        assert_eq!(not_ready(&cm), None);
    }
}
