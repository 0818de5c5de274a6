//! Trust: whether a pull request's code may run in the cluster. A PR from a fork runs only if
//! its author is trusted (association, confirmed through GitHub's permission API since
//! deliveries show private org members as CONTRIBUTOR) or someone with write access — not the
//! author — approved its current head by adding the approval label.

use crate::github::GitHub;
use crate::model::{PreviewEnvironmentSpec, Trust as TrustSpec};
use http::Method;
use std::sync::Arc;
use std::time::Duration;

/// How long a permission answer is reused.
const PERMISSION_TTL: Duration = Duration::from_secs(60);

/// The trust verdict for a pull request's current head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not from a fork, forks allowed, or a trusted author.
    Trusted,
    /// The current head was approved by this login.
    Approved { by: String },
    /// The current head may not run; the reason is for the PR comment.
    Untrusted { reason: String },
}

/// A label being added, as a `pull_request.labeled` delivery reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelEvent {
    pub label: String,
    pub sender: String,
}

/// What can be decided without asking GitHub: `Some` when that settles it.
pub fn offline_verdict(trust: &TrustSpec, facts: &PreviewEnvironmentSpec) -> Option<Verdict> {
    if !facts.fork || trust.allow_forks {
        return Some(Verdict::Trusted);
    }
    trust
        .trusts_association(&facts.author_association)
        .then_some(Verdict::Trusted)
}

/// Why a fork's head is not deployed, in words for its author.
pub fn untrusted_reason(
    trust: &TrustSpec,
    facts: &PreviewEnvironmentSpec,
    existing: Option<&PreviewEnvironmentSpec>,
) -> String {
    let label = &trust.approval_label;
    match existing.and_then(|e| e.approved.as_ref()) {
        Some(approval) if approval.head_sha != facts.head_sha => {
            let short: String = approval.head_sha.chars().take(7).collect();
            format!(
                "New commits since {} approved {short} are not deployed; the preview still runs {short}. \
                 Someone with write access to {} can approve the new head by adding the label {label} again (remove it first).",
                approval.by, facts.repository
            )
        }
        _ => format!(
            "This pull request comes from a fork and {} is not a member or collaborator of {}, so its code \
             is not run in the cluster yet. Someone with write access to {} can approve this commit for a \
             preview by adding the label {label} (a label added by the author does not count).",
            facts.author, facts.repository, facts.repository
        ),
    }
}

pub struct TrustChecker {
    github: Option<Arc<GitHub>>,
    permissions: moka::sync::Cache<(String, String), Option<bool>>,
}

impl TrustChecker {
    pub fn new(github: Option<Arc<GitHub>>) -> Self {
        Self {
            github,
            permissions: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(PERMISSION_TTL)
                .build(),
        }
    }

    /// The verdict for `facts`' head under `trust`. `label` is the label a `labeled`
    /// delivery just added; `existing` the environment's current spec.
    pub async fn assess(
        &self,
        trust: &TrustSpec,
        facts: &PreviewEnvironmentSpec,
        label: Option<&LabelEvent>,
        existing: Option<&PreviewEnvironmentSpec>,
    ) -> Verdict {
        if let Some(verdict) = offline_verdict(trust, facts) {
            return verdict;
        }
        // Private org members show up as CONTRIBUTOR: ask GitHub what the author may do.
        if self.can_write(&facts.repository, &facts.author).await == Some(true) {
            return Verdict::Trusted;
        }
        if let Some(event) = label
            && event.label == trust.approval_label
            && !event.sender.eq_ignore_ascii_case(&facts.author)
            && self.can_write(&facts.repository, &event.sender).await == Some(true)
        {
            return Verdict::Approved {
                by: event.sender.clone(),
            };
        }
        // An approval holds for the head it was given on.
        if let Some(approval) = existing.and_then(|e| e.approved.as_ref())
            && approval.head_sha == facts.head_sha
        {
            return Verdict::Approved {
                by: approval.by.clone(),
            };
        }
        Verdict::Untrusted {
            reason: untrusted_reason(trust, facts, existing),
        }
    }

    /// Whether `user` (author association `association`) may give prenv commands on pull
    /// requests of `repository`: a trusted association under `trust`, or write access.
    pub async fn may_command(
        &self,
        trust: &TrustSpec,
        repository: &str,
        user: &str,
        association: &str,
    ) -> bool {
        trust.trusts_association(association)
            || self.can_write(repository, user).await == Some(true)
    }

    /// The GitHub client, when prenv has credentials.
    pub fn github(&self) -> Option<&Arc<GitHub>> {
        self.github.as_ref()
    }

    /// Whether `user` has write access (write, maintain or admin) to `repository`; `None`
    /// when GitHub cannot tell us (then nobody is trusted on that ground).
    async fn can_write(&self, repository: &str, user: &str) -> Option<bool> {
        let github = self.github.as_ref()?;
        let key = (repository.to_ascii_lowercase(), user.to_ascii_lowercase());
        if let Some(known) = self.permissions.get(&key) {
            return known;
        }
        let path = format!("/repos/{repository}/collaborators/{user}/permission");
        let answer = match github.request(repository, Method::GET, &path, None).await {
            Ok(a) => Some(
                a.body
                    .get("permission")
                    .and_then(|p| p.as_str())
                    .is_some_and(|p| matches!(p, "admin" | "maintain" | "write")),
            ),
            // Not a collaborator at all.
            Err(e) if e.status() == Some(404) => Some(false),
            Err(e) => {
                tracing::warn!(%repository, %user, error = %e, "could not check permission");
                None
            }
        };
        if answer.is_some() {
            self.permissions.insert(key, answer);
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Approval;
    use crate::reconcile::render::tests::pr;

    fn fork(association: &str) -> PreviewEnvironmentSpec {
        let mut f = pr();
        f.fork = true;
        f.author = "mallory".into();
        f.author_association = association.into();
        f
    }

    #[tokio::test]
    async fn same_repository_and_trusted_associations_pass_without_github() {
        let checker = TrustChecker::new(None);
        let trust = TrustSpec::default();
        assert_eq!(
            checker.assess(&trust, &pr(), None, None).await,
            Verdict::Trusted
        );
        assert_eq!(
            checker
                .assess(&trust, &fork("COLLABORATOR"), None, None)
                .await,
            Verdict::Trusted
        );
        let open = TrustSpec {
            allow_forks: true,
            ..TrustSpec::default()
        };
        assert_eq!(
            checker.assess(&open, &fork("NONE"), None, None).await,
            Verdict::Trusted
        );
    }

    #[tokio::test]
    async fn untrusted_fork_without_github_is_not_deployed() {
        let checker = TrustChecker::new(None);
        let trust = TrustSpec::default();
        let verdict = checker
            .assess(
                &trust,
                &fork("CONTRIBUTOR"),
                Some(&LabelEvent {
                    label: "preview:approved".into(),
                    sender: "maintainer".into(),
                }),
                None,
            )
            .await;
        // Without GitHub nobody's write access can be confirmed.
        assert!(
            matches!(verdict, Verdict::Untrusted { reason } if reason.contains("preview:approved"))
        );
    }

    #[tokio::test]
    async fn approval_holds_for_its_head_only() {
        let checker = TrustChecker::new(None);
        let trust = TrustSpec::default();
        let facts = fork("CONTRIBUTOR");
        let mut existing = facts.clone();
        existing.approved = Some(Approval {
            head_sha: facts.head_sha.clone(),
            by: "maintainer".into(),
        });
        assert_eq!(
            checker.assess(&trust, &facts, None, Some(&existing)).await,
            Verdict::Approved {
                by: "maintainer".into()
            }
        );
        let mut pushed = facts.clone();
        pushed.head_sha = "f".repeat(40);
        let verdict = checker.assess(&trust, &pushed, None, Some(&existing)).await;
        assert!(
            matches!(&verdict, Verdict::Untrusted { reason } if reason.contains("New commits since maintainer approved")),
            "{verdict:?}"
        );
    }
}
