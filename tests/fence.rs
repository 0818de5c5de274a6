//! The fence around a preview, enforced by the real cluster (Kubernetes 1.37 with a node):
//! the API server's PodSecurity admission refuses pods below the namespace's level, and the
//! network policy's namespace selectors match namespaces by the label the API server sets.

mod support;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use support::*;

/// A bare pod with no security settings: fine under `privileged`, refused by `restricted`.
const LOOSE_POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: loose
spec:
  containers:
  - name: app
    image: "APP_IMAGE"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_security_is_enforced_in_previews() {
    let s = Scenario::start("t-psa", web_template).await;
    let (number, sha) = s.open("Pod security").await;
    s.wait_phase(number, "Ready").await;
    let preview_ns = s.preview_ns(number);
    let ns = Api::<Namespace>::all(s.client.clone())
        .get(&preview_ns)
        .await
        .expect("preview namespace");
    let labels = ns.metadata.labels.expect("labels");
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");

    // Anyone creating such a pod there, even a cluster admin, is refused by admission.
    let pod: Pod =
        serde_yaml_ng::from_str(&LOOSE_POD.replace("APP_IMAGE", app_image())).expect("pod YAML");
    let refused = Api::<Pod>::namespaced(s.client.clone(), &preview_ns)
        .create(&PostParams::default(), &pod)
        .await
        .expect_err("a pod below `restricted` is refused");
    let message = refused.to_string();
    assert!(
        message.contains("violates PodSecurity \"restricted"),
        "{message}"
    );

    // A template that renders one: the dry run is refused, nothing of the new render applied,
    // and the environment says why.
    let resources = format!(
        "{}\n---\n{}",
        web_resources().replace("HEAD_SHA:", "NEW_HEAD:"),
        LOOSE_POD.replace("APP_IMAGE", app_image())
    );
    let mut spec = web_template(&s.repo);
    spec["resources"] = json!(resources);
    apply_template(&s.client, &s.ns, &s.template, spec).await;
    let env = s
        .wait_env(number, "refused by pod security", |e| {
            phase(e).as_deref() == Some("Failed")
        })
        .await;
    let applied = condition(&env, "Applied");
    assert_eq!(applied.status, "False");
    assert!(
        applied.message.contains("PodSecurity"),
        "{}",
        applied.message
    );
    let config: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(s.client.clone(), &preview_ns);
    let data = config
        .get("app-config")
        .await
        .expect("config")
        .data
        .expect("data");
    assert!(
        !data.contains_key("NEW_HEAD"),
        "part of a refused render was applied"
    );
    assert_eq!(data["HEAD_SHA"], sha);
    s.github
        .close(&s.repo, number, false)
        .await
        .expect("closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_policy_admits_the_ingress_namespace_by_its_name_label() {
    let ingress = unique("ingress");
    let s = Scenario::start_with_args("t-netpol", &["--ingress-namespaces", &ingress]).await;
    create_namespace(&s.client, &ingress).await;
    let (number, sha) = s.open("Network policy").await;
    s.wait_deployed(number, &sha).await;
    let policy = Api::<NetworkPolicy>::namespaced(s.client.clone(), &s.preview_ns(number))
        .get("prenv-isolation")
        .await
        .expect("network policy");
    let namespaces: Api<Namespace> = Api::all(s.client.clone());
    // Every namespace selector of the policy's ingress rules, and which namespaces match it
    // by the labels the API server gave them.
    let matches = |labels: &std::collections::BTreeMap<String, String>| {
        let spec = policy.spec.clone().expect("spec");
        spec.ingress.unwrap_or_default().iter().any(|rule| {
            rule.from.iter().flatten().any(|peer| {
                peer.namespace_selector
                    .as_ref()
                    .and_then(|sel| sel.match_labels.as_ref())
                    .is_some_and(|want| want.iter().all(|(k, v)| labels.get(k) == Some(v)))
            })
        })
    };
    let ingress_labels = namespaces
        .get(&ingress)
        .await
        .expect("ingress namespace")
        .metadata
        .labels
        .unwrap_or_default();
    assert_eq!(ingress_labels["kubernetes.io/metadata.name"], ingress);
    assert!(
        matches(&ingress_labels),
        "the ingress namespace is not admitted"
    );
    let other = namespaces
        .get(&s.ns)
        .await
        .expect("template namespace")
        .metadata
        .labels
        .unwrap_or_default();
    assert!(!matches(&other), "another namespace is admitted");
    s.github
        .close(&s.repo, number, false)
        .await
        .expect("closed");
    let _ = namespaces.delete(&ingress, &Default::default()).await;
}
