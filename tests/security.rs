//! Security against a real API server and the GitHub stand-in: untrusted code never runs
//! unapproved, every preview is fenced, templates cannot escalate, secrets stay home.

mod support;

use github_standin::NewPr;
use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, Namespace, Pod, ResourceQuota, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, Role, RoleBinding};
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;
use std::time::Duration;
use support::*;

const APPROVE: &str = "preview:approved";

async fn deployed_sha(client: &Client, ns: &str) -> Option<String> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt("app-config")
        .await
        .ok()??;
    cm.data?.get("HEAD_SHA").cloned()
}

/// Wait until the preview in `ns` has `sha` applied (its ConfigMap).
async fn wait_deployed(client: &Client, ns: &str, sha: &str, what: &str) {
    wait_for(what, Duration::from_secs(120), || async {
        (deployed_sha(client, ns).await.as_deref() == Some(sha)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn fork_pull_requests_run_only_when_approved_by_a_writer() {
    let s = Scenario::start("t-trust", web_template).await;
    let (client, github, repo) = (&s.client, &s.github, &s.repo);
    github.set_permission(repo, "maintainer", "write");

    // A fork PR by a CONTRIBUTOR: an environment waiting for approval, no namespace, and a
    // comment telling the author why.
    let opened = github
        .open_pr(repo, fork_pr("mallory", "CONTRIBUTOR"))
        .await
        .expect("opened");
    assert_eq!(opened.status, 200, "{}", opened.body);
    let number = opened.payload["number"].as_u64().expect("number");
    let sha1 = head_sha(&opened);
    let preview_ns = s.preview_ns(number);
    let env = s
        .wait_env(number, "waiting for approval", |e| {
            phase(e).as_deref() == Some("Pending")
        })
        .await;
    assert_eq!(condition(&env, "Approved").reason, "AwaitingApproval");
    s.wait_bot_comment(number, "the explanatory comment", |body| {
        body.contains("Not deployed") && body.contains(APPROVE)
    })
    .await;
    assert!(!namespace_exists(client, &preview_ns).await);

    // The author approving their own PR does not count.
    let labeled = github
        .add_label(repo, number, APPROVE, "mallory")
        .await
        .expect("labeled");
    assert_eq!(labeled.status, 200, "{}", labeled.body);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !namespace_exists(client, &preview_ns).await,
        "self-approval deployed"
    );
    let env = environment(client, &s.ns, &s.env_name(number))
        .await
        .expect("env");
    assert_eq!(phase(&env).as_deref(), Some("Pending"));

    // The label from someone with write access: deployed, at the approved head.
    github
        .remove_label(repo, number, APPROVE, "mallory")
        .await
        .expect("unlabeled");
    github
        .add_label(repo, number, APPROVE, "maintainer")
        .await
        .expect("labeled");
    wait_deployed(client, &preview_ns, &sha1, "deployed after approval").await;
    let env = s
        .wait_env(number, "approved", |e| {
            e.status.as_ref().is_some_and(|st| {
                st.conditions
                    .iter()
                    .any(|c| c.type_ == "Approved" && c.status == "True")
            })
        })
        .await;
    assert!(condition(&env, "Approved").message.contains("maintainer"));
    // The comment names exactly which commit the approval covers.
    let approved_at = format!("at `{}` by @maintainer", &sha1[..7]);
    s.wait_bot_comment(number, "the approved commit named", |body| {
        body.contains(&approved_at)
    })
    .await;

    // A new push from the fork is not deployed until approved again.
    let pushed = github.push(repo, number).await.expect("pushed");
    let sha2 = head_sha(&pushed);
    s.wait_env(number, "the new head awaiting approval", |e| {
        e.spec.head_sha == sha2 && e.spec.awaiting_approval.is_some()
    })
    .await;
    s.wait_bot_comment(number, "the comment saying the new head waits", |body| {
        body.contains("New commits since maintainer approved")
    })
    .await;
    assert_eq!(
        deployed_sha(client, &preview_ns).await.as_deref(),
        Some(sha1.as_str()),
        "the approved head keeps running"
    );
    github
        .remove_label(repo, number, APPROVE, "maintainer")
        .await
        .expect("unlabeled");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        deployed_sha(client, &preview_ns).await.as_deref(),
        Some(sha1.as_str())
    );
    github
        .add_label(repo, number, APPROVE, "maintainer")
        .await
        .expect("labeled");
    wait_deployed(
        client,
        &preview_ns,
        &sha2,
        "the new head deployed after re-approval",
    )
    .await;

    // A private org member shows up as CONTRIBUTOR; the permission API confirms write access.
    github.set_permission(repo, "insider", "write");
    let insider = github
        .open_pr(repo, fork_pr("insider", "CONTRIBUTOR"))
        .await
        .expect("opened");
    let insider_number = insider.payload["number"].as_u64().expect("number");
    let insider_sha = head_sha(&insider);
    wait_deployed(
        client,
        &s.preview_ns(insider_number),
        &insider_sha,
        "the member's fork deployed",
    )
    .await;

    for n in [number, insider_number] {
        github.close(repo, n, false).await.expect("closed");
    }
}

#[tokio::test]
async fn every_preview_namespace_is_fenced() {
    let s = Scenario::start("t-fence", web_template).await;
    let (client, github, repo) = (&s.client, &s.github, &s.repo);
    let opened = github
        .open_pr(repo, NewPr::new("Fence"))
        .await
        .expect("opened");
    let number = opened.payload["number"].as_u64().expect("number");
    let ns = s.preview_ns(number);
    s.wait_deployed(number, &head_sha(&opened)).await;

    let namespace = Api::<Namespace>::all(client.clone())
        .get(&ns)
        .await
        .expect("namespace");
    let labels = namespace.metadata.labels.expect("labels");
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
    let quota = Api::<ResourceQuota>::namespaced(client.clone(), &ns)
        .get("prenv-quota")
        .await
        .expect("quota");
    let hard = quota.spec.and_then(|s| s.hard).expect("hard");
    assert_eq!(hard["requests.cpu"].0, "2");
    assert_eq!(hard["pods"].0, "20");
    Api::<LimitRange>::namespaced(client.clone(), &ns)
        .get("prenv-limits")
        .await
        .expect("limit range");
    let policy = Api::<NetworkPolicy>::namespaced(client.clone(), &ns)
        .get("prenv-isolation")
        .await
        .expect("network policy");
    let spec = policy.spec.expect("spec");
    assert_eq!(
        spec.policy_types.as_deref(),
        Some(&["Ingress".to_string(), "Egress".to_string()][..])
    );
    let binding = Api::<RoleBinding>::namespaced(client.clone(), &ns)
        .get("prenv-deployer")
        .await
        .expect("deployer binding");
    assert_eq!(binding.role_ref.name, support::DEPLOYER_ROLE);

    // Even the deployer itself (a stolen token, a pod running as it) cannot take the fence
    // down: the fence's objects are prenv's.
    let deployer = client_as(&ns, "prenv-deployer").await;
    let dp = kube::api::DeleteParams::default();
    let refusals = [
        Api::<NetworkPolicy>::namespaced(deployer.clone(), &ns)
            .delete("prenv-isolation", &dp)
            .await
            .map(|_| ()),
        Api::<ResourceQuota>::namespaced(deployer.clone(), &ns)
            .delete("prenv-quota", &dp)
            .await
            .map(|_| ()),
        Api::<LimitRange>::namespaced(deployer.clone(), &ns)
            .delete("prenv-limits", &dp)
            .await
            .map(|_| ()),
        Api::<RoleBinding>::namespaced(deployer.clone(), &ns)
            .delete("prenv-deployer", &dp)
            .await
            .map(|_| ()),
    ];
    for refused in refusals {
        match refused {
            Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{}", status.message),
            other => panic!("the deployer touched the fence: {other:?}"),
        }
    }
    Api::<NetworkPolicy>::namespaced(client.clone(), &ns)
        .get("prenv-isolation")
        .await
        .expect("the network policy is still there");

    // A Pod over the LimitRange's maximum is refused by the API server.
    let big: Pod = serde_json::from_value(json!({
        "metadata": {"name": "greedy"},
        // No token to mount: the namespace is new and its default token may not exist yet.
        "spec": {"automountServiceAccountToken": false, "containers": [{
            "name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": "3", "memory": "64Mi"}, "limits": {"cpu": "3", "memory": "64Mi"}},
        }]},
    }))
    .expect("pod");
    let refused = Api::<Pod>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &big)
        .await
        .expect_err("the LimitRange refuses it");
    let kube::Error::Api(status) = refused else {
        panic!("expected an API refusal, got {refused:?}");
    };
    assert_eq!(status.code, 403, "{}", status.message);
    assert!(
        status.message.contains("maximum cpu usage"),
        "{}",
        status.message
    );

    github.close(repo, number, false).await.expect("closed");
}

#[tokio::test]
async fn templates_cannot_escalate() {
    let crb_name = unique("escalate");
    let s = Scenario::start("t-escalate", web_template).await;
    let (client, github, repo) = (&s.client, &s.github, &s.repo);
    let templates = [
        (
            "crb",
            format!(
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: {crb_name}\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\nsubjects:\n- kind: ServiceAccount\n  name: default\n  namespace: default\n"
            ),
        ),
        (
            "ks",
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {crb_name}\n  namespace: kube-system\ndata:\n  owned: \"yes\"\n"
            ),
        ),
        (
            "role",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: harmless\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: everything\nrules:\n- apiGroups: [\"*\"]\n  resources: [\"*\"]\n  verbs: [\"*\"]\n".to_string(),
        ),
    ];
    for (suffix, resources) in &templates {
        apply_template(
            client,
            &s.ns,
            &format!("{}-{suffix}", s.template),
            json!({"repository": repo, "resources": resources}),
        )
        .await;
    }
    // Let the receiver's cache see the new templates.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let opened = github
        .open_pr(repo, NewPr::new("Escalate"))
        .await
        .expect("opened");
    assert_eq!(opened.status, 200, "{}", opened.body);
    let number = opened.payload["number"].as_u64().expect("number");

    let (ns, template) = (s.ns.clone(), s.template.clone());
    let failed = |suffix: &'static str| {
        let name = format!("{template}-{suffix}-{number}");
        let ns = ns.clone();
        async move {
            wait_environment(client, &ns, &name, &format!("{suffix} failed"), |e| {
                phase(e).as_deref() == Some("Failed")
            })
            .await
        }
    };
    let crb = failed("crb").await;
    let rendered = condition(&crb, "Rendered");
    assert_eq!(rendered.reason, "ObjectRejected");
    assert!(
        rendered.message.contains("cluster-scoped"),
        "{}",
        rendered.message
    );
    let ks = failed("ks").await;
    let rendered = condition(&ks, "Rendered");
    assert_eq!(rendered.reason, "ObjectRejected");
    assert!(
        rendered.message.contains("kube-system"),
        "{}",
        rendered.message
    );
    let role = failed("role").await;
    let applied = condition(&role, "Applied");
    assert_eq!(applied.reason, "Forbidden", "{}", applied.message);
    assert!(
        applied.message.contains("prenv-deployer"),
        "{}",
        applied.message
    );

    // None of those objects exists, and the Role template's harmless ConfigMap was not
    // applied either (a dry run refused the set first).
    assert!(
        Api::<ClusterRoleBinding>::all(client.clone())
            .get_opt(&crb_name)
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        Api::<ConfigMap>::namespaced(client.clone(), "kube-system")
            .get_opt(&crb_name)
            .await
            .expect("get")
            .is_none()
    );
    let role_ns = format!("{}-role-pr-{number}", s.template);
    assert!(
        Api::<Role>::namespaced(client.clone(), &role_ns)
            .get_opt("everything")
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        Api::<ConfigMap>::namespaced(client.clone(), &role_ns)
            .get_opt("harmless")
            .await
            .expect("get")
            .is_none()
    );
    github.close(repo, number, false).await.expect("closed");
}

#[tokio::test]
async fn secrets_are_copied_but_never_into_a_fork_preview() {
    let s = Scenario::start("t-secrets", |repo| {
        let mut spec = web_template(repo);
        spec["copySecrets"] = json!(["registry-creds"]);
        spec["trust"] = json!({"allowForks": true});
        spec
    })
    .await;
    let (client, github, repo) = (&s.client, &s.github, &s.repo);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "registry-creds"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": "eyJhdXRocyI6e319"},
    }))
    .expect("secret");
    Api::<Secret>::namespaced(client.clone(), &s.ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret created");

    let own = github
        .open_pr(repo, NewPr::new("Own branch"))
        .await
        .expect("opened");
    let own_number = own.payload["number"].as_u64().expect("number");
    let fork = github
        .open_pr(repo, fork_pr("stranger", "NONE"))
        .await
        .expect("opened");
    let fork_number = fork.payload["number"].as_u64().expect("number");
    for (n, delivered) in [(own_number, &own), (fork_number, &fork)] {
        s.wait_deployed(n, &head_sha(delivered)).await;
    }
    let copied = Api::<Secret>::namespaced(client.clone(), &s.preview_ns(own_number))
        .get("registry-creds")
        .await
        .expect("copied into the own-branch preview");
    assert_eq!(copied.data, secret.data);
    assert!(
        Api::<Secret>::namespaced(client.clone(), &s.preview_ns(fork_number))
            .get_opt("registry-creds")
            .await
            .expect("get")
            .is_none(),
        "a fork's preview gets no secrets"
    );
    for n in [own_number, fork_number] {
        github.close(repo, n, false).await.expect("closed");
    }
}
