//! A preview namespace is never a system, platform or foreign one: refused before anything
//! is created, and never adopted when it appears between prenv's read and its write.

mod support;

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::PostParams;
use prenv::model::PreviewTemplate;
use prenv::reconcile::apply::{self, ApplyError};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;
use support::*;

#[tokio::test]
async fn system_platform_and_template_namespaces_are_refused_before_anything_is_created() {
    // prenv's own namespace (set as POD_NAMESPACE in a pod) and a platform pattern.
    let own = unique("prenv-home");
    let platform = unique("platform");
    let reserved = format!("{platform}-*");
    let home = own.clone();
    let s = Scenario::start_custom(
        "t-reserved",
        web_template,
        |client, _| async move { create_namespace(&client, &home).await },
        Default::default(),
        &[
            "--lease-namespace",
            &own,
            "--reserved-namespaces",
            &reserved,
        ],
    )
    .await;
    let (client, github, repo) = (&s.client, &s.github, &s.repo);
    let patterns = [
        ("sys", "kube-{{ pr.number }}-preview".to_string()),
        ("dflt", "default".to_string()),
        ("mine", s.ns.clone()),
        ("home", own.clone()),
        ("plat", format!("{platform}-{{{{ pr.number }}}}")),
    ];
    for (suffix, pattern) in &patterns {
        let mut spec = web_template(repo);
        spec["namespace"] = json!(pattern);
        apply_template(client, &s.ns, &format!("{}-{suffix}", s.template), spec).await;
    }
    // Let the receiver's cache see the new templates.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (number, _) = s.open("Reserved").await;

    let namespaces: Api<Namespace> = Api::all(client.clone());
    for (suffix, pattern) in &patterns {
        let name = format!("{}-{suffix}-{number}", s.template);
        let env = wait_environment(client, &s.ns, &name, &format!("{suffix} failed"), |e| {
            phase(e).as_deref() == Some("Failed")
        })
        .await;
        let rendered = condition(&env, "Rendered");
        assert_eq!(
            rendered.reason, "ReservedNamespace",
            "{suffix}: {rendered:?}"
        );
        let preview_ns = pattern.replace("{{ pr.number }}", &number.to_string());
        assert!(
            rendered.message.contains(&preview_ns),
            "{suffix}: {}",
            rendered.message
        );
        assert!(
            env.status
                .as_ref()
                .and_then(|s| s.namespace.as_ref())
                .is_none(),
            "{suffix}: a refused namespace is not the environment's"
        );
        // Nothing was created, and what existed was not touched.
        match namespaces.get_opt(&preview_ns).await.expect("get") {
            None => {}
            Some(ns) => {
                let labels = ns.metadata.labels.unwrap_or_default();
                assert!(
                    !labels.keys().any(|k| k.starts_with("prenv.dev/")),
                    "{suffix}: {preview_ns} got prenv's labels: {labels:?}"
                );
            }
        }
    }
    assert!(!namespace_exists(client, &format!("kube-{number}-preview")).await);
    // The ordinary template in the same scenario still deploys.
    s.wait_phase(number, "Ready").await;
    github.close(repo, number, false).await.expect("closed");
}

/// The race: prenv read the namespace and saw nothing, then someone else created it before
/// prenv's write. prenv must refuse it, not take it over with its labels.
#[tokio::test]
async fn a_namespace_made_between_the_read_and_the_write_is_not_adopted() {
    let client = client().await;
    let name = unique("raced");
    let foreign: Namespace = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"team": "someone-else"}},
    }))
    .expect("namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &foreign)
        .await
        .expect("someone else's namespace");

    // What prenv's read saw: nothing.
    let claimed =
        apply::claim_namespace(&client, &name, "team-a", "shop-1", &BTreeMap::new(), None).await;
    assert!(
        matches!(claimed, Err(ApplyError::NamespaceConflict(ref n)) if *n == name),
        "{claimed:?}"
    );
    let after = Api::<Namespace>::all(client.clone())
        .get(&name)
        .await
        .expect("still there");
    let labels = after.metadata.labels.unwrap_or_default();
    assert_eq!(labels.get("team").map(String::as_str), Some("someone-else"));
    assert!(
        !labels.keys().any(|k| k.starts_with("prenv.dev/")),
        "adopted: {labels:?}"
    );

    // A namespace that did not exist is created as ours, and claiming it again is a no-op.
    let fresh = unique("claimed");
    apply::claim_namespace(&client, &fresh, "team-a", "shop-1", &BTreeMap::new(), None)
        .await
        .expect("created");
    let seen = Api::<Namespace>::all(client.clone())
        .get(&fresh)
        .await
        .expect("created");
    apply::claim_namespace(
        &client,
        &fresh,
        "team-a",
        "shop-1",
        &BTreeMap::new(),
        Some(seen),
    )
    .await
    .expect("ours");
    for ns in [&name, &fresh] {
        let _ = Api::<Namespace>::all(client.clone())
            .delete(ns, &Default::default())
            .await;
    }
}

/// The platform's repository map: a template outside it serves nothing and says why in its
/// status; one inside it works as usual.
#[tokio::test]
async fn templates_serve_only_the_repositories_the_platform_maps_to_their_namespace() {
    let allowed_repo = format!("acme/{}", unique("allowed"));
    let s = Scenario::start_with_args(
        "t-repomap",
        &["--repository-namespaces", "{ns}=acme/allowed-*"],
    )
    .await;
    let (client, github) = (&s.client, &s.github);
    github.add_repo(&allowed_repo);
    let allowed_template = format!("{}-ok", s.template);
    apply_template(
        client,
        &s.ns,
        &allowed_template,
        web_template(&allowed_repo),
    )
    .await;

    let templates: Api<PreviewTemplate> = Api::namespaced(client.clone(), &s.ns);
    let accepted = |name: String| {
        let templates = templates.clone();
        async move {
            wait_for(
                &format!("{name}'s Accepted condition"),
                Duration::from_secs(60),
                || async {
                    let t = templates.get(&name).await.ok()?;
                    t.status?
                        .conditions
                        .into_iter()
                        .find(|c| c.type_ == "Accepted")
                },
            )
            .await
        }
    };
    let refused = accepted(s.template.clone()).await;
    assert_eq!(
        (refused.status.as_str(), refused.reason.as_str()),
        ("False", "RepositoryNotAllowed")
    );
    assert!(
        refused.message.contains("acme/allowed-*"),
        "{}",
        refused.message
    );
    let ok = accepted(allowed_template.clone()).await;
    assert_eq!(
        (ok.status.as_str(), ok.reason.as_str()),
        ("True", "Serving")
    );

    // A PR on the unmapped repository: no environment, nothing written on GitHub.
    let opened = github
        .open_pr(&s.repo, new_pr("Not ours"))
        .await
        .expect("opened");
    assert_eq!(opened.status, 202, "{}", opened.body);
    assert!(
        opened.body.contains("no PreviewTemplate serves"),
        "{}",
        opened.body
    );
    let number = opened.payload["number"].as_u64().expect("number");
    assert!(
        environment(client, &s.ns, &s.env_name(number))
            .await
            .is_none()
    );
    // A PR on the mapped one deploys as usual.
    let opened = github
        .open_pr(&allowed_repo, new_pr("Ours"))
        .await
        .expect("opened");
    assert_eq!(opened.status, 200, "{}", opened.body);
    let number = opened.payload["number"].as_u64().expect("number");
    let name = prenv::naming::environment_name(&allowed_template, number);
    wait_environment(client, &s.ns, &name, "the mapped template's preview", |e| {
        phase(e).is_some()
    })
    .await;
    github
        .close(&allowed_repo, number, false)
        .await
        .expect("closed");
}
