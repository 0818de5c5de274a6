//! Refusals of what a template renders, against a real API server, the real `prenv serve` and
//! the GitHub stand-in: objects that would carry or use the deployer's credentials, pods of
//! kinds the platform does not know, Services that reach outside the namespace, and pull
//! request values that would change the rendered YAML's structure. A refused render fails the
//! environment with a `Rendered` condition and an Event saying why, and nothing of it is
//! applied; the same pull request deploys where nothing is refused.

#[path = "refusals/deployer.rs"]
mod deployer;
#[path = "refusals/kinds.rs"]
mod kinds;
#[path = "refusals/services.rs"]
mod services;
#[path = "refusals/shape.rs"]
mod shape;
mod support;

use github_standin::Config as StandInConfig;
use kube::Api;
use kube::api::ListParams;
use prenv::model::{PreviewEnvironment, PreviewTemplate};
use serde_json::json;
use std::time::Duration;
use support::*;

/// A ConfigMap each case renders next to what is refused: it must not be applied either. Also
/// the whole of each scenario's own template, the control that deploys for the same pull
/// request.
const HARMLESS: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: harmless
data:
  pr: "{{ pr.number }}"
"#;

/// A template of a scenario: `<scenario template>-<suffix>`, rendering `resources`.
pub struct Case {
    pub suffix: &'static str,
    pub resources: String,
}

impl Case {
    /// `resources` after the harmless ConfigMap.
    pub fn with_harmless(suffix: &'static str, resources: &str) -> Case {
        Case {
            suffix,
            resources: format!("{HARMLESS}---\n{resources}"),
        }
    }
}

/// A scenario whose own template is `control` (the harmless ConfigMap when `None`), with one
/// more template per case for the same repository, all applied before prenv (started with
/// `args`) so its caches hold them from the start.
pub async fn start(prefix: &str, control: Option<&str>, cases: &[Case], args: &[&str]) -> Scenario {
    let control = control.unwrap_or(HARMLESS).to_string();
    let cases: Vec<(String, String)> = cases
        .iter()
        .map(|c| (c.suffix.to_string(), c.resources.clone()))
        .collect();
    Scenario::start_custom(
        prefix,
        |repo| json!({"repository": repo, "resources": control}),
        |client, template| async move {
            let repo = format!("acme/{template}");
            // The scenario's namespace: where its own template was just applied.
            let found = Api::<PreviewTemplate>::all(client.clone())
                .list(&ListParams::default().fields(&format!("metadata.name={template}")))
                .await
                .expect("templates listed");
            let ns = found
                .items
                .first()
                .and_then(|t| t.metadata.namespace.clone())
                .expect("the scenario's template");
            for (suffix, resources) in cases {
                apply_template(
                    &client,
                    &ns,
                    &format!("{template}-{suffix}"),
                    json!({"repository": repo, "resources": resources}),
                )
                .await;
            }
        },
        StandInConfig::default(),
        args,
    )
    .await
}

/// Name of the environment of `case` for pull request `number`.
pub fn case_env(s: &Scenario, suffix: &str, number: u64) -> String {
    format!("{}-{suffix}-{number}", s.template)
}

/// Wait until the environment `name` has settled, `Failed` or `Ready`.
pub async fn settled(s: &Scenario, name: &str) -> PreviewEnvironment {
    wait_environment(
        &s.client,
        &s.ns,
        name,
        &format!("{name} failed or ready"),
        |e| matches!(phase(e).as_deref(), Some("Failed" | "Ready")),
    )
    .await
}

/// What a refusal must look like: the `Rendered` condition's reason and what its message says.
pub struct Refusal {
    pub reason: &'static str,
    pub says: Vec<String>,
}

impl Refusal {
    pub fn new(reason: &'static str, says: &[&str]) -> Refusal {
        Refusal {
            reason,
            says: says.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// Check that the environment of `case` for pull request `number` is refused as `want` says:
/// `Failed`, `Rendered=False` with that reason and message, a Warning Event with it, and no
/// preview namespace, so nothing of the render (not even its harmless ConfigMap) was applied.
/// Returns what is wrong instead of panicking, so that every case is reported (and the pull
/// request closed) before the test fails.
pub async fn check_refused(
    s: &Scenario,
    suffix: &str,
    number: u64,
    want: &Refusal,
) -> Result<(), String> {
    let name = case_env(s, suffix, number);
    let env = settled(s, &name).await;
    let status = env.status.clone().unwrap_or_default();
    if phase(&env).as_deref() != Some("Failed") {
        return Err(format!(
            "{suffix}: not refused: phase {:?}, message {:?}",
            status.phase, status.message
        ));
    }
    let Some(rendered) = status.conditions.iter().find(|c| c.type_ == "Rendered") else {
        return Err(format!("{suffix}: no Rendered condition: {status:?}"));
    };
    if rendered.status != "False" || rendered.reason != want.reason {
        return Err(format!(
            "{suffix}: Rendered is {} {} ({}), want False {}; phase {:?}: {:?}",
            rendered.status,
            rendered.reason,
            rendered.message,
            want.reason,
            status.phase,
            status.message
        ));
    }
    if let Some(missing) = want.says.iter().find(|w| !rendered.message.contains(*w)) {
        return Err(format!(
            "{suffix}: the message does not say {missing:?}: {}",
            rendered.message
        ));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !events_for(&s.client, &s.ns, &name).await.iter().any(|e| {
        e.type_.as_deref() == Some("Warning")
            && e.reason.as_deref() == Some(want.reason)
            // The note is the message, cut short when long.
            && e.note.as_deref().is_some_and(|note| {
                let head = note.strip_suffix('…').unwrap_or(note);
                !head.is_empty() && rendered.message.starts_with(head)
            })
    }) {
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "{suffix}: no Warning Event {} about {name}",
                want.reason
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let preview_ns = format!("{}-{suffix}-pr-{number}", s.template);
    if namespace_exists(&s.client, &preview_ns).await {
        return Err(format!(
            "{suffix}: namespace {preview_ns} exists: something was applied"
        ));
    }
    Ok(())
}

/// Check pull request `number` in scenario `s`: every case of `refusals` refused as said, the
/// environments of the `deployed` cases and of the control `Ready`. Returns what is wrong.
pub async fn check_pr(
    s: &Scenario,
    number: u64,
    refusals: &[(&str, Refusal)],
    deployed: &[&str],
) -> Vec<String> {
    let mut problems = Vec::new();
    for (suffix, want) in refusals {
        if let Err(problem) = check_refused(s, suffix, number, want).await {
            problems.push(problem);
        }
    }
    let names = deployed
        .iter()
        .map(|suffix| case_env(s, suffix, number))
        .chain([s.env_name(number)]);
    for name in names {
        if let Err(problem) = check_ready(s, &name).await {
            problems.push(problem);
        }
    }
    problems
}

/// Close the pull requests and wait until prenv has torn their environments down (their
/// namespaces gone: nothing piles up on the shared node), then fail listing every problem, if
/// any.
pub async fn close_and_assert(s: &Scenario, numbers: &[u64], problems: &[String]) {
    for number in numbers {
        s.github
            .close(&s.repo, *number, false)
            .await
            .expect("closed");
    }
    let envs: Api<PreviewEnvironment> = Api::namespaced(s.client.clone(), &s.ns);
    wait_for(
        "the closed pull requests' environments torn down",
        Duration::from_secs(180),
        || async {
            let left = envs.list(&ListParams::default()).await.ok()?;
            (!left.items.iter().any(|e| numbers.contains(&e.spec.number))).then_some(())
        },
    )
    .await;
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

/// Open a pull request, check it as [`check_pr`] does, close it and fail on any problem.
pub async fn refused(s: &Scenario, refusals: &[(&str, Refusal)], deployed: &[&str]) {
    let (number, _) = s.open("Refusals").await;
    let problems = check_pr(s, number, refusals, deployed).await;
    close_and_assert(s, &[number], &problems).await;
}
/// Check that environment `name` deploys: `Ready`.
pub async fn check_ready(s: &Scenario, name: &str) -> Result<(), String> {
    let env = settled(s, name).await;
    match phase(&env).as_deref() {
        Some("Ready") => Ok(()),
        _ => Err(format!(
            "{name}: not deployed: {:?}",
            env.status.map(|st| (st.phase, st.message))
        )),
    }
}
