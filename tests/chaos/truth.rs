//! The end state the chaos must converge to, read from what the stand-in says is true, and
//! every way the cluster or GitHub differs from it.

use crate::support::{BOT, namespace_exists, observed_head, phase};
use github_standin::StandIn;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use prenv::model::PreviewEnvironment;
use serde_json::Value;
use std::collections::BTreeMap;

/// A template and which open pull requests it deploys.
pub struct Template {
    pub name: String,
    /// Whether an open pull request (as `GET /pulls/{n}` shows it) passes its trigger.
    pub triggers: fn(&Value) -> bool,
}

/// The `web` template's rule: drafts are skipped (the default).
pub fn not_draft(pr: &Value) -> bool {
    pr["draft"] != Value::Bool(true)
}

/// The `lab` template's rule: the `preview` label is required (drafts are fine).
pub fn labelled_preview(pr: &Value) -> bool {
    pr["labels"]
        .as_array()
        .is_some_and(|ls| ls.iter().any(|l| l["name"] == super::plan::PREVIEW))
}

/// One test's world, as the check needs it.
pub struct World<'a> {
    pub client: &'a Client,
    /// Namespace of the templates and their environments.
    pub ns: &'a str,
    pub repo: &'a str,
    pub github: &'a StandIn,
    pub templates: &'a [Template],
    pub numbers: &'a [u64],
}

/// How many environments the truth calls for, per template (for the figures).
pub type Expected = BTreeMap<String, usize>;

impl World<'_> {
    /// `Ok` with the expected counts when the cluster and GitHub match the stand-in's truth,
    /// else every difference found.
    pub async fn check(&self) -> Result<Expected, Vec<String>> {
        let mut wrong = Vec::new();
        let mut expected = Expected::new();
        let envs: BTreeMap<String, PreviewEnvironment> =
            Api::<PreviewEnvironment>::namespaced(self.client.clone(), self.ns)
                .list(&ListParams::default())
                .await
                .map_err(|e| vec![format!("listing environments: {e}")])?
                .items
                .into_iter()
                .map(|e| (e.name_any(), e))
                .collect();
        let mut wanted = BTreeMap::new();
        for &number in self.numbers {
            let pr = self.github.pr_json(self.repo, number);
            let open = pr["state"] == "open";
            let head = pr["head"]["sha"].as_str().unwrap_or_default().to_string();
            for t in self.templates {
                let name = format!("{}-{number}", t.name);
                let want = open && (t.triggers)(&pr);
                if want {
                    *expected.entry(t.name.clone()).or_default() += 1;
                    wanted.insert(name.clone(), ());
                }
                match envs.get(&name) {
                    Some(env) if !want => wrong.push(format!(
                        "{name}: exists (deleting: {}, finalizers {:?}) but #{number} is {} and {} its trigger",
                        env.metadata.deletion_timestamp.is_some(),
                        env.finalizers(),
                        pr["state"],
                        if (t.triggers)(&pr) { "passes" } else { "fails" },
                    )),
                    Some(env) => wrong.extend(environment_differs(env, &head)),
                    None if want => wrong.push(format!("{name}: missing (#{number} is open and triggers it)")),
                    None => {}
                }
                wrong.extend(self.comment_differs(t, number, want, &head));
            }
            wrong.extend(self.stray_comments(number));
        }
        let known: Vec<String> = self
            .templates
            .iter()
            .flat_map(|t| self.numbers.iter().map(move |n| format!("{}-{n}", t.name)))
            .collect();
        for name in envs.keys().filter(|n| !known.contains(n)) {
            wrong.push(format!("{name}: an environment of no pull request"));
        }
        wrong.extend(self.namespaces_differ(&envs, &wanted).await);
        if wrong.is_empty() {
            Ok(expected)
        } else {
            Err(wrong)
        }
    }

    /// Exactly one prenv comment for a deployed environment, reporting its head ready; for a
    /// pull request without one, none or one that says it was torn down.
    fn comment_differs(&self, t: &Template, number: u64, want: bool, head: &str) -> Vec<String> {
        let marker = marker(self.ns, &t.name, number);
        let ours: Vec<String> = self
            .github
            .comments(self.repo, number)
            .into_iter()
            .filter(|c| c.login == BOT && c.body.starts_with(&marker))
            .map(|c| c.body)
            .collect();
        let headline = |body: &str| body.lines().nth(1).unwrap_or_default().to_string();
        let ready = format!("Ready at `{}`", &head[..7]);
        match ours.as_slice() {
            [] if want => vec![format!("#{number} has no {} comment", t.name)],
            [] => vec![],
            [one] if want && !one.contains(&ready) => vec![format!(
                "#{number}'s {} comment says {:?}, not {ready:?}",
                t.name,
                headline(one)
            )],
            [one] if !want && !one.contains("Torn down") => vec![format!(
                "#{number} has no {} environment but its comment says {:?}",
                t.name,
                headline(one)
            )],
            [_] => vec![],
            many => vec![format!(
                "#{number} has {} {} comments: {:?}",
                many.len(),
                t.name,
                many.iter().map(|b| headline(b)).collect::<Vec<_>>()
            )],
        }
    }

    /// prenv's comments on the pull request that carry none of the templates' markers.
    fn stray_comments(&self, number: u64) -> Vec<String> {
        let markers: Vec<String> = self
            .templates
            .iter()
            .map(|t| marker(self.ns, &t.name, number))
            .collect();
        self.github
            .comments(self.repo, number)
            .into_iter()
            .filter(|c| c.login == BOT && !markers.iter().any(|m| c.body.starts_with(m)))
            .map(|c| format!("#{number} has a stray prenv comment: {:?}", c.body))
            .collect()
    }

    /// Every preview namespace prenv made for this test's environments belongs to a wanted
    /// environment and is not being deleted; every wanted environment's namespace exists.
    async fn namespaces_differ(
        &self,
        envs: &BTreeMap<String, PreviewEnvironment>,
        wanted: &BTreeMap<String, ()>,
    ) -> Vec<String> {
        let mut wrong = Vec::new();
        let managed = ListParams::default().labels("app.kubernetes.io/managed-by=prenv");
        let namespaces = match Api::<Namespace>::all(self.client.clone())
            .list(&managed)
            .await
        {
            Ok(list) => list.items,
            Err(e) => return vec![format!("listing namespaces: {e}")],
        };
        for ns in namespaces {
            let owner = ns
                .annotations()
                .get("prenv.dev/environment")
                .cloned()
                .unwrap_or_default();
            let Some(env_name) = owner.strip_prefix(&format!("{}/", self.ns)) else {
                continue;
            };
            let name = ns.name_any();
            if ns.metadata.deletion_timestamp.is_some() {
                wrong.push(format!("namespace {name} of {env_name}: still terminating"));
            } else if !wanted.contains_key(env_name) {
                wrong.push(format!(
                    "namespace {name}: its environment {env_name} should not exist"
                ));
            } else if !envs.contains_key(env_name) {
                wrong.push(format!(
                    "namespace {name}: its environment {env_name} is gone"
                ));
            }
        }
        for (name, env) in envs.iter().filter(|(n, _)| wanted.contains_key(*n)) {
            let preview = env.status.as_ref().and_then(|s| s.namespace.clone());
            match preview {
                Some(p) if namespace_exists(self.client, &p).await => {}
                other => wrong.push(format!("{name}: its namespace {other:?} does not exist")),
            }
        }
        wrong
    }
}

/// prenv's hidden marker for `template` (in `ns`) on pull request `number`.
fn marker(ns: &str, template: &str, number: u64) -> String {
    format!("<!-- prenv:environment template={ns}/{template} pr={number} -->")
}

/// How a wanted environment differs from one deployed and ready at `head`.
fn environment_differs(env: &PreviewEnvironment, head: &str) -> Vec<String> {
    let name = env.name_any();
    let mut wrong = Vec::new();
    if env.metadata.deletion_timestamp.is_some() {
        wrong.push(format!(
            "{name}: being deleted (finalizers {:?})",
            env.finalizers()
        ));
    }
    if env.spec.head_sha != head {
        wrong.push(format!(
            "{name}: spec.headSha {} is not the head {head}",
            env.spec.head_sha
        ));
    }
    if observed_head(env) != Some(head) || phase(env).as_deref() != Some("Ready") {
        wrong.push(format!(
            "{name}: {:?} at {:?}, not Ready at {head}",
            phase(env),
            observed_head(env)
        ));
    }
    wrong
}
