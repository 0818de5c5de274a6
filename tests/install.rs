//! prenv installed the way users install it: `helm install` of `charts/prenv` into the real
//! cluster, with prenv's own image from the cluster's registry, two replicas, the chart's
//! ServiceAccount and ClusterRole and nothing added by hand. The GitHub stand-in listens on the
//! node's address (where pods reach this host) and delivers to the prenv Service through
//! kube-proxy; previews are real pods whose Service answers with the commit they run.

mod support;

use github_standin::{Config as StandInConfig, NewPr, StandIn};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client, ResourceExt};
use std::process::Command;
use std::time::Duration;
use support::tools::{Cleanup, helm, helm_with_values, kubectl, text};
use support::{SECRET, TOKEN};

/// Containers containerd holds for pods of `namespace`.
fn containers_of(namespace: &str) -> Vec<String> {
    let out = Command::new("ctr")
        .arg("--address")
        .arg(support::containerd_socket())
        .args(["-n", "k8s.io", "containers", "ls", "-q"])
        .arg(format!(
            "labels.\"io.kubernetes.pod.namespace\"=={namespace}"
        ))
        .output()
        .expect("ctr runs");
    assert!(out.status.success(), "ctr: {}", text(&out).1);
    text(&out).0.lines().map(str::to_string).collect()
}

async fn pods(client: &Client, namespace: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

/// The holder of the chart's leader Lease, once someone holds it.
async fn leader(client: &Client, namespace: &str, lease: &str) -> Option<String> {
    let lease = Api::<Lease>::namespaced(client.clone(), namespace)
        .get_opt(lease)
        .await
        .ok()??;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

/// Wait until namespace `name` is gone (finalized, not just terminating).
async fn namespace_gone(client: &Client, name: &str) {
    support::wait_for(
        &format!("namespace {name} gone"),
        Duration::from_secs(180),
        || async { (!support::namespace_exists(client, name).await).then_some(()) },
    )
    .await;
}

fn pr(title: &str, head_ref: &str) -> NewPr {
    NewPr {
        title: title.into(),
        author: "octocat".into(),
        head_ref: head_ref.into(),
        base_ref: "main".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_installed_prenv_serves_each_commit_and_survives_losing_its_leader() {
    let client = support::client().await;
    let image = support::prenv_image();
    let (repository, tag) = image.rsplit_once(':').expect("image reference with a tag");
    let release = support::unique("e2e");
    let system_ns = support::unique("prenv-sys");
    let team_ns = support::unique("team");
    let template = support::unique("shop");
    let repo = format!("acme/{template}");
    for ns in [&system_ns, &team_ns] {
        support::create_namespace(&client, ns).await;
    }
    let github =
        StandIn::start(StandInConfig::default().with_listen((support::node_ip(), 0).into()))
            .await
            .expect("stand-in starts");
    github.add_repo(&repo);
    github.add_token(TOKEN, support::BOT);
    support::apply_template(&client, &team_ns, &template, support::web_template(&repo)).await;

    let values = format!(
        r#"
replicaCount: 2
image: {{repository: "{repository}", tag: "{tag}"}}
webhook: {{secret: "{SECRET}"}}
github: {{auth: token, token: "{TOKEN}", apiUrl: "{url}"}}
config:
  namespace: {team_ns}
  githubWriteInterval: 100ms
  logLevel: info,prenv=debug
"#,
        url = github.url()
    );
    let kubeconfig = support::kubeconfig().display().to_string();
    let args = [
        "install",
        &release,
        "charts/prenv",
        "--namespace",
        &system_ns,
        "--kubeconfig",
        &kubeconfig,
    ];
    let out = helm_with_values(&args, &values);
    let _cleanup = Cleanup(vec![
        format!("namespace/{system_ns}"),
        format!("namespace/{team_ns}"),
        format!("clusterrole/{release}-prenv"),
        format!("clusterrolebinding/{release}-prenv"),
    ]);
    assert!(out.status.success(), "helm install: {}", text(&out).1);

    // Both replicas run from the image and are ready (their /readyz probe).
    let name = format!("{release}-prenv");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &system_ns);
    support::wait_for(
        "prenv's two replicas ready",
        Duration::from_secs(180),
        || async {
            let status = deployments.get_opt(&name).await.ok()??.status?;
            (status.ready_replicas == Some(2) && status.updated_replicas == Some(2)).then_some(())
        },
    )
    .await;
    let service = Api::<Service>::namespaced(client.clone(), &system_ns)
        .get(&name)
        .await
        .expect("prenv's Service");
    let ip = service.spec.and_then(|s| s.cluster_ip).expect("cluster IP");
    // kube-proxy routes the Service once the ready pods are in its EndpointSlice.
    support::wait_for(
        "prenv's Service reachable",
        Duration::from_secs(60),
        || async {
            tokio::net::TcpStream::connect((ip.as_str(), 8080))
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
    github.add_hook(&format!("http://{ip}:8080/webhooks/github"), SECRET);
    let lease = format!("{release}-prenv-leader");
    let first_leader = support::wait_for("a leader", Duration::from_secs(60), || {
        leader(&client, &system_ns, &lease)
    })
    .await;

    // Opened: the preview's Service answers with the PR's head.
    let opened = github
        .open_pr(&repo, pr("Checkout", "feature/checkout"))
        .await
        .expect("opened");
    assert_eq!(
        opened.status, 200,
        "prenv answered the delivery: {}",
        opened.body
    );
    let one = opened.payload["number"].as_u64().expect("number");
    let sha1 = support::head_sha(&opened);
    let ns1 = format!("{template}-pr-{one}");
    let env1 = format!("{template}-{one}");
    support::wait_environment(&client, &team_ns, &env1, "first PR ready", |e| {
        support::phase(e).as_deref() == Some("Ready") && support::observed_head(e) == Some(&sha1)
    })
    .await;
    support::wait_served_sha(&client, &ns1, "web", &sha1).await;

    // Pushed: the new head is served and the old pod is gone.
    let pushed = github.push(&repo, one).await.expect("pushed");
    let sha2 = support::head_sha(&pushed);
    support::wait_served_sha(&client, &ns1, "web", &sha2).await;
    support::wait_for(
        "only the new pod left",
        Duration::from_secs(120),
        || async {
            let pods = pods(&client, &ns1).await;
            let env_of = |p: &Pod| -> Option<String> {
                p.spec.as_ref()?.containers[0]
                    .env
                    .as_ref()?
                    .iter()
                    .find(|e| e.name == "GIT_SHA")?
                    .value
                    .clone()
            };
            (pods.len() == 1 && env_of(&pods[0]).as_deref() == Some(sha2.as_str())).then_some(())
        },
    )
    .await;

    // A second PR gets its own namespace and serves its own head.
    let second = github
        .open_pr(&repo, pr("Search", "feature/search"))
        .await
        .expect("opened");
    let two = second.payload["number"].as_u64().expect("number");
    let ns2 = format!("{template}-pr-{two}");
    assert_ne!(ns1, ns2);
    let _previews = Cleanup(vec![format!("namespace/{ns1}"), format!("namespace/{ns2}")]);
    support::wait_served_sha(&client, &ns2, "web", &support::head_sha(&second)).await;

    // Closed: the namespace goes and containerd holds none of its containers.
    assert!(
        !containers_of(&ns1).is_empty(),
        "containerd runs the first preview's pod"
    );
    github.close(&repo, one, false).await.expect("closed");
    namespace_gone(&client, &ns1).await;
    support::wait_for("its containers gone", Duration::from_secs(60), || async {
        containers_of(&ns1).is_empty().then_some(())
    })
    .await;

    // The leader's pod is deleted: the other replica takes over and acts on the next delivery.
    Api::<Pod>::namespaced(client.clone(), &system_ns)
        .delete(&first_leader, &DeleteParams::default())
        .await
        .expect("leader pod deleted");
    let second_leader = support::wait_for("a new leader", Duration::from_secs(120), || async {
        leader(&client, &system_ns, &lease)
            .await
            .filter(|h| *h != first_leader)
    })
    .await;
    let running: Vec<String> = pods(&client, &system_ns)
        .await
        .iter()
        .map(|p| p.name_any())
        .collect();
    assert!(
        running.contains(&second_leader),
        "{second_leader} not among {running:?}"
    );
    let pushed = github.push(&repo, two).await.expect("pushed");
    assert_eq!(pushed.status, 200, "{}", pushed.body);
    support::wait_served_sha(&client, &ns2, "web", &support::head_sha(&pushed)).await;

    // Nothing the chart's RBAC should have allowed was refused, on any replica.
    let out = kubectl(
        &[
            "logs",
            "-n",
            &system_ns,
            "-l",
            "app.kubernetes.io/name=prenv",
            "--tail=-1",
        ],
        None,
    );
    let (logs, stderr) = text(&out);
    assert!(out.status.success(), "kubectl logs: {stderr}");
    let forbidden: Vec<&str> = logs
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains("forbidden"))
        .collect();
    assert!(
        forbidden.is_empty(),
        "refused with the chart's RBAC:\n{}",
        forbidden.join("\n")
    );

    github.close(&repo, two, false).await.expect("closed");
    namespace_gone(&client, &ns2).await;
    helm(&[
        "uninstall",
        &release,
        "--namespace",
        &system_ns,
        "--kubeconfig",
        &kubeconfig,
    ]);
}
