//! The core flow against a real API server: a pull request becomes a preview namespace,
//! follows its pushes and is torn down on close.

mod support;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use kube::api::ListParams;
use kube::{Api, Client};
use prenv::model::PreviewEnvironment;
use serde_json::json;
use std::time::Duration;
use support::*;

async fn config_map(client: &Client, ns: &str, name: &str) -> Option<ConfigMap> {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .ok()
        .flatten()
}

/// The value of environment variable `name` set directly on the Deployment's first container.
fn container_env(deployment: &Deployment, name: &str) -> Option<String> {
    deployment
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .first()?
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)?
        .value
        .clone()
}

#[tokio::test]
async fn pull_request_lifecycle_open_push_ready_prune_close() {
    // The web template, its pod template carrying the head too (as an image tag would), so
    // every push rolls the pods and the Service serves the new head.
    let Scenario {
        client,
        ns,
        template,
        repo,
        github,
        prenv,
    } = Scenario::start("t-life", web_template).await;

    // Opened: namespace with the rendered ConfigMap, Deployment and Service at the head SHA.
    let opened = github
        .open_pr(&repo, new_pr("Add checkout"))
        .await
        .expect("opened");
    assert_eq!(opened.status, 200, "{}", opened.body);
    let number = opened.payload["number"].as_u64().expect("number");
    let env_name = format!("{template}-{number}");
    let preview_ns = format!("{template}-pr-{number}");
    let sha1 = head_sha(&opened);
    // (Deploying until its pod is ready, then Ready: either means the head was applied.)
    let env = wait_environment(&client, &ns, &env_name, "the head applied", |e| {
        observed_head(e) == Some(sha1.as_str())
            && matches!(phase(e).as_deref(), Some("Deploying" | "Ready"))
    })
    .await;
    let status = env.status.clone().expect("status");
    assert_eq!(status.namespace.as_deref(), Some(preview_ns.as_str()));
    assert_eq!(
        status.url.as_deref(),
        Some(format!("https://pr-{number}.{template}.preview.example.com").as_str())
    );
    assert_eq!(status.observed_head_sha.as_deref(), Some(sha1.as_str()));
    assert_eq!(status.short_sha.as_deref(), Some(&sha1[..7]));

    let ns_obj = Api::<Namespace>::all(client.clone())
        .get(&preview_ns)
        .await
        .expect("namespace");
    let labels = ns_obj.metadata.labels.expect("labels");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "prenv");
    assert_eq!(labels["prenv.dev/environment"], format!("{ns}.{env_name}"));
    let cm = config_map(&client, &preview_ns, "app-config")
        .await
        .expect("configmap");
    assert_eq!(cm.data.as_ref().expect("data")["HEAD_SHA"], sha1);
    assert_eq!(cm.data.as_ref().expect("data")["PR_TITLE"], "Add checkout");
    assert_eq!(
        cm.metadata.labels.as_ref().expect("labels")["app.kubernetes.io/managed-by"],
        "prenv"
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &preview_ns);
    let image = |d: &Deployment| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .map(|s| s.containers[0].image.clone())
    };
    let web = deployments.get("web").await.expect("deployment");
    assert_eq!(image(&web).flatten().as_deref(), Some(app_image()));
    assert_eq!(
        container_env(&web, "GIT_SHA").as_deref(),
        Some(sha1.as_str())
    );
    Api::<Service>::namespaced(client.clone(), &preview_ns)
        .get("web")
        .await
        .expect("service");

    // The pod passes its readiness probe: the Deployment becomes available and so Ready, and
    // the preview's Service answers with the head.
    let env = wait_environment(&client, &ns, &env_name, "environment ready", |e| {
        phase(e).as_deref() == Some("Ready") && observed_head(e) == Some(sha1.as_str())
    })
    .await;
    let ready = condition(&env, "Ready");
    assert_eq!(ready.status, "True");
    wait_served_sha(&client, &preview_ns, "web", &sha1).await;

    // A push: the objects follow the new head.
    let pushed = github.push(&repo, number).await.expect("pushed");
    assert_eq!(pushed.status, 200, "{}", pushed.body);
    let sha2 = head_sha(&pushed);
    assert_ne!(sha1, sha2);
    wait_for(
        "config map at the new head",
        Duration::from_secs(60),
        || async {
            let cm = config_map(&client, &preview_ns, "app-config").await?;
            (cm.data?.get("HEAD_SHA")? == &sha2).then_some(())
        },
    )
    .await;
    let web = deployments.get("web").await.expect("deployment");
    assert_eq!(image(&web).flatten().as_deref(), Some(app_image()));
    assert_eq!(
        container_env(&web, "GIT_SHA").as_deref(),
        Some(sha2.as_str())
    );
    let env = wait_environment(&client, &ns, &env_name, "status at the new head", |e| {
        observed_head(e) == Some(sha2.as_str())
    })
    .await;
    assert_eq!(env.spec.head_sha, sha2);
    // Each head gets its own "Deployed" event naming it.
    let note = format!("applied {} into namespace {preview_ns}", &sha2[..7]);
    wait_for(
        "a Deployed event for the new head",
        Duration::from_secs(30),
        || async {
            events_for(&client, &ns, &env_name)
                .await
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("Deployed") && e.note.as_deref() == Some(&note)
                })
                .then_some(())
        },
    )
    .await;
    // The pods rolled: the new head is served and Ready, and the old pod is gone.
    wait_served_sha(&client, &preview_ns, "web", &sha2).await;
    let env = wait_environment(&client, &ns, &env_name, "ready at the new head", |e| {
        phase(e).as_deref() == Some("Ready") && observed_head(e) == Some(sha2.as_str())
    })
    .await;
    assert_eq!(condition(&env, "Ready").status, "True");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &preview_ns);
    wait_for(
        "the rollout finished: one pod, updated and available",
        Duration::from_secs(120),
        || async {
            let status = deployments.get("web").await.ok()?.status?;
            let rolled = status.replicas == Some(1)
                && status.updated_replicas == Some(1)
                && status.available_replicas == Some(1);
            let pods = pods.list(&ListParams::default()).await.ok()?.items;
            (rolled && pods.len() == 1).then_some(())
        },
    )
    .await;

    // The older "opened" delivery arrives late (fresh delivery id): nothing moves back.
    let (code, body) = post_delivery(
        &prenv.webhook_url(),
        "pull_request",
        "late-delivery-1",
        &opened.body_bytes,
        Some(sign(&opened.body_bytes)),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("stale"), "{body}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let env = environment(&client, &ns, &env_name)
        .await
        .expect("environment");
    assert_eq!(env.spec.head_sha, sha2);
    let cm = config_map(&client, &preview_ns, "app-config")
        .await
        .expect("configmap");
    assert_eq!(cm.data.as_ref().expect("data")["HEAD_SHA"], sha2);

    // The template drops the Service: it is pruned, the rest stays.
    let without_service = web_resources()
        .split("\n---\n")
        .filter(|doc| !doc.contains("kind: Service"))
        .collect::<Vec<_>>()
        .join("\n---\n");
    let mut spec = web_template(&repo);
    spec["resources"] = json!(without_service);
    apply_template(&client, &ns, &template, spec).await;
    wait_for("service pruned", Duration::from_secs(60), || async {
        let svc = Api::<Service>::namespaced(client.clone(), &preview_ns)
            .get_opt("web")
            .await
            .ok()?;
        svc.is_none().then_some(())
    })
    .await;
    assert!(
        config_map(&client, &preview_ns, "app-config")
            .await
            .is_some()
    );
    assert!(deployments.get_opt("web").await.expect("get").is_some());

    // Closed: the environment goes, the namespace is finalized.
    let closed = github.close(&repo, number, false).await.expect("closed");
    assert_eq!(closed.status, 200, "{}", closed.body);
    wait_for("environment deleted", Duration::from_secs(60), || async {
        environment(&client, &ns, &env_name)
            .await
            .is_none()
            .then_some(())
    })
    .await;
    wait_for(
        "preview namespace finalized",
        Duration::from_secs(90),
        || async { (!namespace_exists(&client, &preview_ns).await).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn forged_or_altered_deliveries_create_nothing() {
    let Scenario {
        client,
        ns,
        template: _,
        repo,
        github,
        prenv,
    } = Scenario::start("t-forged", web_template).await;
    // The stand-in signs with the wrong secret.
    github.clear_hooks();
    github.add_hook(&prenv.webhook_url(), "not-the-secret");
    let opened = github
        .open_pr(&repo, new_pr("Forged"))
        .await
        .expect("opened");
    assert_eq!(opened.status, 401, "{}", opened.body);

    // The right signature over a body altered by one byte.
    let mut altered = opened.body_bytes.clone();
    let pos = altered
        .iter()
        .position(|b| *b == b'F')
        .expect("an F in the title");
    altered[pos] = b'G';
    let (code, _) = post_delivery(
        &prenv.webhook_url(),
        "pull_request",
        "altered-1",
        &altered,
        Some(sign(&opened.body_bytes)),
    )
    .await;
    assert_eq!(code, 401);
    // No signature at all.
    let (code, _) = post_delivery(
        &prenv.webhook_url(),
        "pull_request",
        "unsigned-1",
        &opened.body_bytes,
        None,
    )
    .await;
    assert_eq!(code, 401);

    // The same body properly signed is accepted, proving the rejections were about the
    // signature alone; then closed again so nothing is left behind.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let envs: Api<PreviewEnvironment> = Api::namespaced(client.clone(), &ns);
    assert!(
        envs.list(&ListParams::default())
            .await
            .expect("list")
            .items
            .is_empty()
    );
    let (code, body) = post_delivery(
        &prenv.webhook_url(),
        "pull_request",
        "genuine-1",
        &opened.body_bytes,
        Some(sign(&opened.body_bytes)),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        envs.list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len(),
        1
    );
}

#[tokio::test]
async fn broken_template_fails_with_condition_and_event_and_applies_nothing() {
    let Scenario {
        client,
        ns,
        template,
        repo,
        github,
        prenv,
    } = Scenario::start("t-broken", |repo| {
        let mut spec = web_template(repo);
        spec["resources"] = json!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ok\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: broken\ndata:\n  x: {{ pr.no_such_variable }}\n"
        );
        spec
    })
    .await;
    let opened = github
        .open_pr(&repo, new_pr("Broken"))
        .await
        .expect("opened");
    assert_eq!(opened.status, 200, "{}", opened.body);
    let number = opened.payload["number"].as_u64().expect("number");
    let env_name = format!("{template}-{number}");
    let env = wait_environment(&client, &ns, &env_name, "environment failed", |e| {
        phase(e).as_deref() == Some("Failed")
    })
    .await;
    let rendered = condition(&env, "Rendered");
    assert_eq!(rendered.status, "False");
    assert_eq!(rendered.reason, "TemplateError");
    assert!(
        rendered.message.contains("undefined"),
        "{}",
        rendered.message
    );
    let events = wait_for("a TemplateError event", Duration::from_secs(30), || async {
        let events = events_for(&client, &ns, &env_name).await;
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("TemplateError"))
            .then_some(events)
    })
    .await;
    assert!(events.iter().any(|e| e.type_.as_deref() == Some("Warning")));
    // Nothing applied: not even the namespace.
    assert!(!namespace_exists(&client, &format!("{template}-pr-{number}")).await);
    drop(prenv);
}

/// The web app's Deployment, but its image is one the cluster's registry does not have (a tag
/// per head, as a CI that has not pushed yet would leave it): its pod can never start.
fn missing_image_resources() -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {{app: web}}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: "{}/prenv-missing:{{{{ pr.head_sha }}}}"
        ports: [{{containerPort: 8080}}]
        readinessProbe:
          httpGet: {{path: /healthz, port: 8080}}
          periodSeconds: 1
        securityContext:
          runAsNonRoot: true
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {{drop: [ALL]}}
          seccompProfile: {{type: RuntimeDefault}}
"#,
        registry()
    )
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_keeps_the_preview_deploying_and_says_why() {
    let s = Scenario::start("t-pull", |repo| {
        let mut spec = web_template(repo);
        spec["resources"] = json!(missing_image_resources());
        spec
    })
    .await;
    let (number, sha) = s.open("Not pushed yet").await;
    let image = format!("{}/prenv-missing:{sha}", registry());
    let deployment = wait_for(
        "the deployment applied",
        Duration::from_secs(120),
        || async {
            Api::<Deployment>::namespaced(s.client.clone(), &s.preview_ns(number))
                .get_opt("web")
                .await
                .ok()?
        },
    )
    .await;
    let rendered = deployment
        .spec
        .and_then(|d| d.template.spec)
        .and_then(|p| p.containers.first().and_then(|c| c.image.clone()));
    assert_eq!(rendered.as_deref(), Some(image.as_str()));

    // The kubelet cannot pull it: prenv's status says so, in the pod's own words.
    let pull_failed = |message: &str| {
        message.contains("container web: ErrImagePull")
            || message.contains("container web: ImagePullBackOff")
    };
    let env = s
        .wait_env(number, "the pull failure in the status message", |e| {
            e.status
                .as_ref()
                .and_then(|st| st.message.as_deref())
                .is_some_and(pull_failed)
        })
        .await;
    let status = env.status.clone().expect("status");
    let message = status.message.clone().unwrap_or_default();
    assert_eq!(phase(&env).as_deref(), Some("Deploying"), "{message}");
    assert_eq!(status.observed_head_sha.as_deref(), Some(sha.as_str()));
    assert!(
        message.starts_with(&format!(
            "deploying {}: waiting for deployment web",
            &sha[..7]
        )),
        "{message}"
    );
    assert!(message.contains("; pod web-"), "{message}");
    assert!(
        message.contains("prenv-missing"),
        "names the image: {message}"
    );
    let ready = condition(&env, "Ready");
    assert_eq!(ready.status, "False", "{ready:?}");
    assert_eq!(ready.reason, "Deploying", "{ready:?}");
    assert!(pull_failed(&ready.message), "{ready:?}");

    // It stays so: the pod really cannot start, and the environment is not Ready.
    let pods = Api::<Pod>::namespaced(s.client.clone(), &s.preview_ns(number))
        .list(&ListParams::default())
        .await
        .expect("pods");
    assert!(!pods.items.is_empty(), "a pod was made");
    for pod in &pods.items {
        let ready = pod
            .status
            .as_ref()
            .and_then(|st| st.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        assert!(
            !ready,
            "a pod of a missing image is ready: {:?}",
            pod.status
        );
    }
    let env = environment(&s.client, &s.ns, &s.env_name(number))
        .await
        .expect("environment");
    assert_eq!(phase(&env).as_deref(), Some("Deploying"));
    assert_eq!(condition(&env, "Ready").status, "False");
    s.github
        .close(&s.repo, number, false)
        .await
        .expect("closed");
}

#[tokio::test]
async fn foreign_namespace_is_left_alone() {
    let Scenario {
        client,
        ns,
        template,
        repo,
        github,
        prenv: _prenv,
    } = Scenario::start_before("t-foreign", web_template, |client, template| async move {
        // Someone else's namespace already has the name PR 1 would get.
        let foreign = format!("{template}-pr-1");
        create_namespace(&client, &foreign).await;
        let precious: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "app-config", "namespace": foreign},
            "data": {"owner": "someone else"},
        }))
        .expect("configmap");
        Api::<ConfigMap>::namespaced(client.clone(), &foreign)
            .create(&Default::default(), &precious)
            .await
            .expect("created");
    })
    .await;
    let foreign = format!("{template}-pr-1");
    let opened = github
        .open_pr(&repo, new_pr("Collide"))
        .await
        .expect("opened");
    assert_eq!(opened.payload["number"], 1);
    let env_name = format!("{template}-1");
    let env = wait_environment(&client, &ns, &env_name, "environment failed", |e| {
        phase(e).as_deref() == Some("Failed")
    })
    .await;
    let applied = condition(&env, "Applied");
    assert_eq!(applied.reason, "NamespaceConflict");
    assert!(applied.message.contains(&foreign), "{}", applied.message);

    let check_untouched = || async {
        let ns_obj = Api::<Namespace>::all(client.clone())
            .get(&foreign)
            .await
            .expect("still there");
        assert!(
            ns_obj
                .metadata
                .labels
                .unwrap_or_default()
                .keys()
                .all(|k| !k.starts_with("prenv.dev") && k != "app.kubernetes.io/managed-by")
        );
        let cm = config_map(&client, &foreign, "app-config")
            .await
            .expect("configmap");
        assert_eq!(cm.data.expect("data")["owner"], "someone else");
        assert!(
            Api::<Deployment>::namespaced(client.clone(), &foreign)
                .list(&ListParams::default())
                .await
                .expect("list")
                .items
                .is_empty()
        );
    };
    check_untouched().await;

    // Closing tears down the environment but never the foreign namespace.
    github.close(&repo, 1, false).await.expect("closed");
    wait_for("environment deleted", Duration::from_secs(60), || async {
        environment(&client, &ns, &env_name)
            .await
            .is_none()
            .then_some(())
    })
    .await;
    check_untouched().await;
    let ns_obj = Api::<Namespace>::all(client.clone())
        .get(&foreign)
        .await
        .expect("exists");
    assert!(ns_obj.metadata.deletion_timestamp.is_none());
}

#[tokio::test]
async fn restarts_between_deliveries_reach_the_same_end_state() {
    let Scenario {
        client,
        ns,
        template,
        repo,
        github,
        mut prenv,
    } = Scenario::start("t-restart", web_template).await;

    let opened = github
        .open_pr(&repo, new_pr("Restart"))
        .await
        .expect("opened");
    let number = opened.payload["number"].as_u64().expect("number");
    let env_name = format!("{template}-{number}");
    let preview_ns = format!("{template}-pr-{number}");
    let sha1 = head_sha(&opened);
    wait_environment(&client, &ns, &env_name, "the first head applied", |e| {
        observed_head(e) == Some(sha1.as_str())
    })
    .await;

    prenv.restart().await;
    // The same delivery again after the restart: applied state is unchanged.
    let again = github.redeliver(&opened.id).await.expect("redelivered");
    assert_eq!(again.status, 200, "{}", again.body);
    let pushed = github.push(&repo, number).await.expect("pushed");
    assert_eq!(pushed.status, 200, "{}", pushed.body);
    let sha2 = head_sha(&pushed);
    wait_environment(&client, &ns, &env_name, "at the new head", |e| {
        observed_head(e) == Some(sha2.as_str())
    })
    .await;
    prenv.restart().await;
    wait_environment(&client, &ns, &env_name, "ready at the new head", |e| {
        phase(e).as_deref() == Some("Ready") && observed_head(e) == Some(sha2.as_str())
    })
    .await;
    prenv.restart().await;
    // Let the restarted controller re-reconcile everything.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Nothing duplicated: one environment, one namespace, one of each object, and one
    // "Deployed" event per head.
    let envs: Api<PreviewEnvironment> = Api::namespaced(client.clone(), &ns);
    assert_eq!(
        envs.list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len(),
        1
    );
    let owned = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default().labels(&format!("prenv.dev/environment={ns}.{env_name}")))
        .await
        .expect("list");
    assert_eq!(owned.items.len(), 1);
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &preview_ns)
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=prenv"))
        .await
        .expect("list");
    assert_eq!(cms.items.len(), 1);
    let mut deployed: Vec<String> = events_for(&client, &ns, &env_name)
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("Deployed"))
        .filter_map(|e| e.note)
        .collect();
    deployed.sort();
    let mut expected = vec![
        format!("applied {} into namespace {preview_ns}", &sha1[..7]),
        format!("applied {} into namespace {preview_ns}", &sha2[..7]),
    ];
    expected.sort();
    assert_eq!(deployed, expected, "one Deployed event per head");
    let env = environment(&client, &ns, &env_name)
        .await
        .expect("environment");
    assert_eq!(phase(&env).as_deref(), Some("Ready"));

    github.close(&repo, number, true).await.expect("closed");
    wait_for("environment deleted", Duration::from_secs(60), || async {
        environment(&client, &ns, &env_name)
            .await
            .is_none()
            .then_some(())
    })
    .await;
}

/// The web template with `ttl`.
fn with_ttl(repo: &str, ttl: &str) -> serde_json::Value {
    let mut spec = web_template(repo);
    spec["ttl"] = json!(ttl);
    spec
}

#[tokio::test]
async fn an_idle_preview_expires_and_a_push_brings_it_back() {
    let s = Scenario::start("t-ttl", |repo| with_ttl(repo, "5s")).await;
    let (number, sha1) = s.open("Idle").await;
    let env = s
        .wait_env(number, "deploying with an expiry", |e| {
            e.status.as_ref().is_some_and(|st| st.expires_at.is_some())
        })
        .await;
    let status = env.status.expect("status");
    let deployed = status.last_deployed_at.expect("deployed at");
    assert_eq!(
        status.expires_at,
        Some(deployed + chrono::Duration::seconds(5))
    );

    // Nothing new for longer than the TTL: torn down, the environment says why.
    let env = s
        .wait_env(number, "expired", |e| {
            e.status.as_ref().and_then(|st| st.expired_head_sha.clone()) == Some(sha1.clone())
        })
        .await;
    assert_eq!(phase(&env).as_deref(), Some("Pending"));
    assert_eq!(condition(&env, "Ready").reason, "Expired");
    wait_for(
        "the preview namespace gone",
        Duration::from_secs(90),
        || async { (!namespace_exists(&s.client, &s.preview_ns(number)).await).then_some(()) },
    )
    .await;
    s.wait_bot_comment(number, "the PR told", |body| body.contains("Expired"))
        .await;

    // A push deploys it again.
    let pushed = s.github.push(&s.repo, number).await.expect("pushed");
    let sha2 = head_sha(&pushed);
    wait_for(
        "redeployed at the new head",
        Duration::from_secs(60),
        || async {
            let cm = config_map(&s.client, &s.preview_ns(number), "app-config").await?;
            (cm.data?.get("HEAD_SHA")? == &sha2).then_some(())
        },
    )
    .await;
    // The status follows the apply (it may already have expired again: only the old head's
    // expiry must be gone).
    s.wait_env(number, "the old head's expiry gone", |e| {
        e.status
            .as_ref()
            .and_then(|st| st.expired_head_sha.as_deref())
            != Some(sha1.as_str())
    })
    .await;
    s.github
        .close(&s.repo, number, false)
        .await
        .expect("closed");
}

#[tokio::test]
async fn beyond_the_cap_a_preview_queues_until_a_slot_frees_up() {
    let s = Scenario::start("t-cap", |repo| {
        let mut spec = web_template(repo);
        spec["maxEnvironments"] = json!(1);
        spec
    })
    .await;
    let (first, _) = s.open("First").await;
    s.wait_env(first, "the first one deployed", |e| {
        e.status.as_ref().is_some_and(|st| st.namespace.is_some())
    })
    .await;
    assert!(namespace_exists(&s.client, &s.preview_ns(first)).await);

    // The only slot is taken: the second waits, says for whom, and runs nothing.
    let (second, _) = s.open("Second").await;
    let env = s
        .wait_env(second, "the second one queued", |e| {
            e.status.as_ref().is_some_and(|st| st.is_queued())
        })
        .await;
    assert_eq!(phase(&env).as_deref(), Some("Pending"));
    let message = condition(&env, "Ready").message;
    assert!(message.contains(&format!("#{first}")), "{message}");
    assert!(message.contains("allows 1 preview"), "{message}");
    assert!(!namespace_exists(&s.client, &s.preview_ns(second)).await);
    wait_for("a Queued event", Duration::from_secs(30), || async {
        events_for(&s.client, &s.ns, &s.env_name(second))
            .await
            .iter()
            .any(|e| e.reason.as_deref() == Some("Queued"))
            .then_some(())
    })
    .await;
    s.wait_bot_comment(second, "the PR told", |body| body.contains("Queued"))
        .await;
    // The first is untouched by the second's wait.
    assert!(namespace_exists(&s.client, &s.preview_ns(first)).await);

    // Closing the first frees the slot and the second deploys, woken by the first's change
    // (the periodic backstop is minutes away, well past this wait).
    s.github.close(&s.repo, first, false).await.expect("closed");
    let env = s
        .wait_env(second, "the second one deployed", |e| {
            e.status.as_ref().is_some_and(|st| st.namespace.is_some())
        })
        .await;
    assert!(!env.status.expect("status").is_queued());
    assert!(namespace_exists(&s.client, &s.preview_ns(second)).await);
    s.github
        .close(&s.repo, second, false)
        .await
        .expect("closed");
}

/// A namespace labelled and annotated by prenv for environment `env_namespace/env_name`
/// (as if that environment had made it), or with its label pointing at `label_name` instead.
async fn preview_like_namespace(
    client: &Client,
    name: &str,
    env_namespace: &str,
    env_name: &str,
    label_name: &str,
) {
    let ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(prenv::naming::owned_labels(env_namespace, label_name)),
            annotations: Some(prenv::naming::owned_annotations(env_namespace, env_name)),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&Default::default(), &ns)
        .await
        .expect("namespace created");
}

/// Whether namespace `name` is gone or on its way out.
async fn namespace_going(client: &Client, name: &str) -> bool {
    Api::<Namespace>::all(client.clone())
        .get_opt(name)
        .await
        .expect("get namespace")
        .is_none_or(|ns| ns.metadata.deletion_timestamp.is_some())
}

#[tokio::test]
async fn preview_namespaces_whose_environment_is_gone_are_swept() {
    let s = Scenario::start_with_args("t-orphan", &["--orphan-sweep-interval", "1s"]).await;
    let (number, _) = s.open("Alive").await;
    s.wait_env(number, "deployed", |e| {
        e.status.as_ref().is_some_and(|st| st.namespace.is_some())
    })
    .await;
    let live = s.preview_ns(number);

    // prenv's own sweep finds a namespace whose environment does not exist.
    let gone = format!("{}-999", s.template);
    let orphan = support::unique("orphan");
    preview_like_namespace(&s.client, &orphan, &s.ns, &gone, &gone).await;
    wait_for("the orphan swept", Duration::from_secs(60), || async {
        namespace_going(&s.client, &orphan).await.then_some(())
    })
    .await;
    let metrics = reqwest::get(format!("{}/metrics", s.prenv.admin_url()))
        .await
        .expect("metrics answered")
        .text()
        .await
        .expect("metrics text");
    assert!(
        metrics.contains("prenv_orphan_namespaces_deleted_total 1"),
        "{metrics}"
    );

    // One sweep, step by step: what it must leave alone and what it must take.
    let other = support::unique("t-orphan-other");
    let elsewhere = support::unique("orphan");
    preview_like_namespace(&s.client, &elsewhere, &other, "shop-1", "shop-1").await;
    let mislabelled = support::unique("mislabelled");
    preview_like_namespace(&s.client, &mislabelled, &other, "shop-2", "shop-3").await;
    let swept = prenv::collect::sweep_orphans(&s.client, Some(&s.ns))
        .await
        .expect("sweep");
    assert!(swept.is_empty(), "{swept:?}");
    assert!(!namespace_going(&s.client, &live).await, "a live preview");
    assert!(
        !namespace_going(&s.client, &elsewhere).await,
        "another scope"
    );
    let swept = prenv::collect::sweep_orphans(&s.client, Some(&other))
        .await
        .expect("sweep");
    assert_eq!(swept, vec![elsewhere.clone()]);
    assert!(namespace_going(&s.client, &elsewhere).await);
    assert!(
        !namespace_going(&s.client, &mislabelled).await,
        "labels and annotation disagree: not provably ours"
    );
    assert!(!namespace_going(&s.client, &live).await);

    Api::<Namespace>::all(s.client.clone())
        .delete(&mislabelled, &Default::default())
        .await
        .expect("cleanup");
    s.github
        .close(&s.repo, number, false)
        .await
        .expect("closed");
}

async fn pod_template_annotation(client: &Client, ns: &str, key: &str) -> Option<String> {
    let deployment = Api::<Deployment>::namespaced(client.clone(), ns)
        .get_opt("web")
        .await
        .ok()
        .flatten()?;
    deployment
        .spec?
        .template
        .metadata?
        .annotations?
        .get(key)
        .cloned()
}

/// Wait for prenv's reaction `content` on the comment `delivered` carried.
async fn wait_reaction(s: &Scenario, delivered: &github_standin::Delivered, content: &str) {
    let id = comment_id(delivered);
    wait_for(
        &format!("prenv's {content} on comment {id}"),
        Duration::from_secs(30),
        || async {
            s.github
                .reactions(id)
                .iter()
                .any(|r| r.login == BOT && r.content == content)
                .then_some(())
        },
    )
    .await;
}

/// The id of the comment a `comment` delivery carried.
fn comment_id(delivered: &github_standin::Delivered) -> u64 {
    delivered.payload["comment"]["id"]
        .as_u64()
        .expect("delivery has a comment id")
}

#[tokio::test]
async fn a_redeploy_command_brings_an_expired_preview_back_for_people_with_write_access() {
    let s = Scenario::start("t-cmd", |repo| with_ttl(repo, "5s")).await;
    s.github.set_permission(&s.repo, "reviewer", "write");
    let (number, sha) = s.open("Idle").await;
    s.wait_env(number, "expired", |e| {
        e.status.as_ref().and_then(|st| st.expired_head_sha.clone()) == Some(sha.clone())
    })
    .await;
    let key = prenv::command::REDEPLOY_ANNOTATION;
    let annotation = |e: &PreviewEnvironment| {
        e.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key).cloned())
    };

    // Someone without write access: refused, and nothing is written to GitHub for them, not
    // even a reaction. A triage collaborator shows up as COLLABORATOR, which is no permission
    // to deploy.
    s.github.set_permission(&s.repo, "triager", "triage");
    let mut denied = Vec::new();
    for login in ["mallory", "triager"] {
        let reply = s
            .github
            .comment(&s.repo, number, login, "/preview redeploy")
            .await
            .expect("commented");
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(reply.body.contains("denied"), "{}", reply.body);
        denied.push(comment_id(&reply));
    }
    let env = environment(&s.client, &s.ns, &s.env_name(number))
        .await
        .expect("env");
    assert_eq!(annotation(&env), None);

    // Not a command prenv knows, from someone who may command: the commenter is told.
    let unknown = s
        .github
        .comment(&s.repo, number, "reviewer", "/preview destroy")
        .await
        .expect("commented");
    assert_eq!(unknown.status, 202, "{}", unknown.body);
    wait_reaction(&s, &unknown, "confused").await;
    // Reactions go out in the order commands arrive: the refused ones, earlier, got none.
    for id in denied {
        assert!(s.github.reactions(id).is_empty(), "reaction on {id}");
    }

    // A collaborator asks: the same head is deployed again, its pods rolled by the request.
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let asked = s
        .github
        .comment(
            &s.repo,
            number,
            "reviewer",
            "Stale preview, bringing it back.\n/preview redeploy",
        )
        .await
        .expect("commented");
    assert_eq!(asked.status, 200, "{}", asked.body);
    let request = format!("comment {} by reviewer", comment_id(&asked));
    let env = environment(&s.client, &s.ns, &s.env_name(number))
        .await
        .expect("env");
    assert_eq!(annotation(&env), Some(request.clone()));
    wait_for(
        "the preview back, its pods stamped with the request",
        Duration::from_secs(60),
        || async {
            let stamped = pod_template_annotation(&s.client, &s.preview_ns(number), key).await?;
            (stamped == request).then_some(())
        },
    )
    .await;
    let cm = config_map(&s.client, &s.preview_ns(number), "app-config")
        .await
        .expect("config map");
    assert_eq!(
        cm.data.and_then(|d| d.get("HEAD_SHA").cloned()),
        Some(sha.clone())
    );
    let env = s
        .wait_env(number, "the request recorded", |e| {
            e.status.as_ref().and_then(|st| st.redeployed.clone()) == Some(request.clone())
        })
        .await;
    let deployed = env.status.and_then(|st| st.last_deployed_at);
    assert!(
        deployed.is_some_and(|at| at >= before),
        "the TTL clock restarted: {deployed:?}"
    );
    wait_reaction(&s, &asked, "+1").await;
    wait_for("a Redeployed event", Duration::from_secs(30), || async {
        events_for(&s.client, &s.ns, &s.env_name(number))
            .await
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("Redeployed")
                    && e.note.as_deref().is_some_and(|n| n.contains(&request))
            })
            .then_some(())
    })
    .await;

    // A redelivered command is not carried out twice.
    let again = s.github.redeliver(&asked.id).await.expect("redelivered");
    assert!(again.body.contains("duplicate"), "{}", again.body);
    s.github
        .close(&s.repo, number, false)
        .await
        .expect("closed");
}
