//! Which namespaces' templates may serve which repositories: the platform's map
//! (`--repository-namespaces team-a=acme/shop*,team-b=acme/*`). Without one, any template
//! serves its repository. With one, a template whose namespace has no matching entry serves
//! nothing (its deliveries are ignored, the resync skips it) and its status says why, so one
//! team cannot run previews of (and comment on) another team's repository.

use crate::model::{PreviewTemplate, PreviewTemplateStatus};
use crate::reconcile::status::set_condition;
use globset::{GlobBuilder, GlobMatcher};
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The condition on a `PreviewTemplate` that says whether it serves its repository.
pub const ACCEPTED: &str = "Accepted";
/// How often templates' `Accepted` conditions are brought up to date.
const STATUS_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Default)]
pub struct RepositoryPolicy {
    /// (namespace, repository pattern); empty: no restriction.
    entries: Vec<(String, String, GlobMatcher)>,
}

impl RepositoryPolicy {
    /// Parse `namespace=owner/pattern` entries (`*` matches within a name).
    pub fn parse<I, S>(entries: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut parsed = Vec::new();
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry.is_empty() {
                continue;
            }
            let (namespace, pattern) = entry
                .split_once('=')
                .filter(|(n, p)| !n.trim().is_empty() && p.contains('/'))
                .ok_or_else(|| format!("{entry:?} is not namespace=owner/repository"))?;
            let glob = GlobBuilder::new(pattern.trim())
                .case_insensitive(true)
                .literal_separator(true)
                .build()
                .map_err(|e| format!("{entry:?}: {e}"))?;
            parsed.push((
                namespace.trim().to_string(),
                pattern.trim().to_string(),
                glob.compile_matcher(),
            ));
        }
        Ok(Self { entries: parsed })
    }

    /// `Err` with the reason when templates in `namespace` may not serve `repository`.
    pub fn check(&self, namespace: &str, repository: &str) -> Result<(), String> {
        if self.entries.is_empty() {
            return Ok(());
        }
        let mut allowed = self.entries.iter().filter(|(n, _, _)| n == namespace);
        if allowed
            .clone()
            .any(|(_, _, glob)| glob.is_match(repository))
        {
            return Ok(());
        }
        let patterns: Vec<&str> = allowed.by_ref().map(|(_, p, _)| p.as_str()).collect();
        Err(if patterns.is_empty() {
            format!(
                "templates in namespace {namespace} may not serve any repository (the platform's --repository-namespaces has no entry for it)"
            )
        } else {
            format!(
                "templates in namespace {namespace} may serve only {}; {repository} is not one of them",
                patterns.join(", ")
            )
        })
    }
}

/// The status `template` should have under `policy`.
pub fn template_status(
    policy: &RepositoryPolicy,
    template: &PreviewTemplate,
) -> PreviewTemplateStatus {
    let mut status = template.status.clone().unwrap_or_default();
    let namespace = template.namespace().unwrap_or_default();
    let (ok, reason, message) = match policy.check(&namespace, &template.spec.repository) {
        Ok(()) => (
            true,
            "Serving",
            format!("serves {}", template.spec.repository),
        ),
        Err(why) => (false, "RepositoryNotAllowed", why),
    };
    let generation = template.metadata.generation;
    set_condition(
        &mut status.conditions,
        ACCEPTED,
        ok,
        reason,
        &message,
        generation,
    );
    status
}

/// Keep every template's `Accepted` condition current (the leader only; a write only when it
/// changed).
pub async fn keep_statuses(
    client: Client,
    templates: Store<PreviewTemplate>,
    policy: Arc<RepositoryPolicy>,
    leadership: crate::leader::Leadership,
    shutdown: CancellationToken,
) {
    loop {
        if leadership.is_leader() {
            for template in templates.state() {
                let wanted = template_status(&policy, &template);
                if template.status.as_ref() == Some(&wanted) {
                    continue;
                }
                let Some(namespace) = template.namespace() else {
                    continue;
                };
                let api: Api<PreviewTemplate> = Api::namespaced(client.clone(), &namespace);
                let patch = serde_json::json!({"status": wanted});
                if let Err(e) = api
                    .patch_status(
                        &template.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    tracing::warn!(template = %template.name_any(), error = %e, "could not write a template's status");
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(STATUS_INTERVAL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_serve_only_their_repositories() {
        let policy =
            RepositoryPolicy::parse(["team-a=acme/shop*", "team-b=acme/*", " "]).expect("valid");
        assert!(policy.check("team-a", "acme/shop").is_ok());
        assert!(policy.check("team-a", "Acme/Shop-API").is_ok());
        let refused = policy
            .check("team-a", "acme/billing")
            .expect_err("not team-a's");
        assert!(refused.contains("acme/shop*"), "{refused}");
        assert!(policy.check("team-b", "acme/billing").is_ok());
        assert!(policy.check("team-b", "other/billing").is_err());
        // `*` stays within the owner or the name.
        assert!(policy.check("team-b", "acme/x/y").is_err());
        let none = policy.check("team-c", "acme/shop").expect_err("no entry");
        assert!(none.contains("no entry"), "{none}");
        // No map: no restriction.
        assert!(
            RepositoryPolicy::default()
                .check("any", "any/thing")
                .is_ok()
        );
    }

    #[test]
    fn malformed_entries_are_clear_errors() {
        for bad in ["team-a", "=acme/x", "team-a=shop", "team-a=acme/[x"] {
            let err = RepositoryPolicy::parse([bad]).expect_err(bad);
            assert!(err.contains(bad.split('=').next().unwrap_or(bad)), "{err}");
        }
    }
}
