//! Services that reach outside the preview namespace (`NodePort`, `LoadBalancer`,
//! `ExternalName`, `externalIPs`: CVE-2020-8554) are refused unless the platform allows them
//! (`--allow-external-services`).

use super::{Case, Refusal, check_pr, close_and_assert, refused, start};
use k8s_openapi::api::core::v1::Service;
use kube::Api;

/// `(case, Service spec, what the refusal names)`.
const EXTERNAL: [(&str, &str, &str); 4] = [
    (
        "nodeport",
        "{type: NodePort, selector: {app: web}, ports: [{port: 80}]}",
        "NodePort",
    ),
    (
        "loadbalancer",
        "{type: LoadBalancer, selector: {app: web}, ports: [{port: 80}]}",
        "LoadBalancer",
    ),
    (
        "externalname",
        "{type: ExternalName, externalName: example.com}",
        "ExternalName",
    ),
    (
        // TEST-NET-1: nothing real answers there, should kube-proxy capture it.
        "externalips",
        "{selector: {app: web}, ports: [{port: 80}], externalIPs: [192.0.2.10]}",
        "CVE-2020-8554",
    ),
];

fn cases() -> Vec<Case> {
    EXTERNAL
        .iter()
        .map(|(suffix, spec, _)| {
            Case::with_harmless(
                suffix,
                &format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec: {spec}\n"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_reaching_outside_are_refused_by_default() {
    let s = start("t-extsvc", None, &cases(), &[]).await;
    let refusals: Vec<(&str, Refusal)> = EXTERNAL
        .iter()
        .map(|(suffix, _, why)| {
            let says = ["Service web: ", why, "--allow-external-services"];
            (*suffix, Refusal::new("ObjectRejected", &says))
        })
        .collect();
    refused(&s, &refusals, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_reaching_outside_are_accepted_when_the_platform_allows_them() {
    let s = start(
        "t-extsvc-ok",
        None,
        &cases(),
        &["--allow-external-services"],
    )
    .await;
    let (number, _) = s.open("External services").await;
    let suffixes: Vec<&str> = EXTERNAL.iter().map(|(suffix, _, _)| *suffix).collect();
    let mut problems = check_pr(&s, number, &[], &suffixes).await;
    // Applied as rendered.
    for (suffix, want) in [
        ("nodeport", "NodePort"),
        ("loadbalancer", "LoadBalancer"),
        ("externalname", "ExternalName"),
        ("externalips", "ClusterIP"),
    ] {
        let ns = format!("{}-{suffix}-pr-{number}", s.template);
        let service = Api::<Service>::namespaced(s.client.clone(), &ns)
            .get_opt("web")
            .await
            .expect("get service")
            .and_then(|svc| svc.spec);
        let applied = service.as_ref().is_some_and(|spec| {
            spec.type_.as_deref() == Some(want)
                && (suffix != "externalips"
                    || spec.external_ips.as_deref() == Some(&["192.0.2.10".to_string()][..]))
        });
        if !applied {
            problems.push(format!("{suffix}: Service web in {ns} is {service:?}"));
        }
    }
    close_and_assert(&s, &[number], &problems).await;
}
