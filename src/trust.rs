//! Trust: whether a pull request's code may run in the cluster. A PR from a fork runs only if
//! its author has write access to the repository (GitHub's collaborator-permission API: write,
//! maintain or admin; an author association is not a permission — a COLLABORATOR may be
//! read-only, and private org members show up as CONTRIBUTOR) or someone with write access —
//! not the author — approved its current head by adding the approval label. An approval
//! holds for the head it was given on, and only while the label stays on the pull request
//! (removing it revokes the approval of any head not deployed yet).

use crate::github::GitHub;
use crate::model::{Approval, PreviewEnvironmentSpec, Trust as TrustSpec};
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
    /// The current head may not run; the reason is for the PR comment. `keep` is the earlier
    /// approval that still stands (its head stays deployed).
    Untrusted {
        reason: String,
        keep: Option<Approval>,
    },
}

/// A label being added, as a `pull_request.labeled` delivery reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelEvent {
    pub label: String,
    pub sender: String,
}

/// What can be decided without asking GitHub: `Some` when that settles it. Associations
/// count only where the template lists them (none by default).
pub fn offline_verdict(trust: &TrustSpec, facts: &PreviewEnvironmentSpec) -> Option<Verdict> {
    if !facts.fork || trust.allow_forks {
        return Some(Verdict::Trusted);
    }
    trust
        .trusts_association(&facts.author_association)
        .then_some(Verdict::Trusted)
}

/// The earlier approval that still stands for `facts`: while the approval label is on the
/// pull request, or for the head already deployed (`deployed`), which keeps running.
pub fn standing_approval(
    trust: &TrustSpec,
    facts: &PreviewEnvironmentSpec,
    existing: Option<&PreviewEnvironmentSpec>,
    deployed: Option<&str>,
) -> Option<Approval> {
    let approval = existing.and_then(|e| e.approved.as_ref())?;
    let labelled = facts.labels.contains(&trust.approval_label);
    (labelled || deployed == Some(approval.head_sha.as_str())).then(|| approval.clone())
}

/// Why a fork's head is not deployed, in words for its author.
pub fn untrusted_reason(
    trust: &TrustSpec,
    facts: &PreviewEnvironmentSpec,
    existing: Option<&PreviewEnvironmentSpec>,
) -> String {
    let label = &trust.approval_label;
    let revoked = existing
        .and_then(|e| e.approved.as_ref())
        .filter(|_| !facts.labels.contains(label));
    match existing.and_then(|e| e.approved.as_ref()) {
        Some(approval) if revoked.is_some() => {
            let short: String = approval.head_sha.chars().take(7).collect();
            format!(
                "The approval of {short} by {} was withdrawn (the label {label} was removed). \
                 Someone with write access to {} can approve the current head by adding the label {label}.",
                approval.by, facts.repository
            )
        }
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
    /// delivery just added; `existing` the environment's current spec and `deployed` the head
    /// it runs.
    pub async fn assess(
        &self,
        trust: &TrustSpec,
        facts: &PreviewEnvironmentSpec,
        label: Option<&LabelEvent>,
        existing: Option<&PreviewEnvironmentSpec>,
        deployed: Option<&str>,
    ) -> Verdict {
        if let Some(verdict) = offline_verdict(trust, facts) {
            return verdict;
        }
        // Associations are not permissions: ask GitHub what the author may do.
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
        // An approval holds for the head it was given on, while it stands.
        let keep = standing_approval(trust, facts, existing, deployed);
        if let Some(approval) = &keep
            && approval.head_sha == facts.head_sha
        {
            return Verdict::Approved {
                by: approval.by.clone(),
            };
        }
        Verdict::Untrusted {
            reason: untrusted_reason(trust, facts, existing),
            keep,
        }
    }

    /// Whether `user` (author association `association`) may give prenv commands on pull
    /// requests of `repository`: write access, or an association the template lists.
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
    async fn same_repository_and_allowed_forks_pass_without_github() {
        let checker = TrustChecker::new(None);
        let trust = TrustSpec::default();
        assert_eq!(
            checker.assess(&trust, &pr(), None, None, None).await,
            Verdict::Trusted
        );
        // An association alone is not trusted: without GitHub nothing confirms write access.
        assert!(matches!(
            checker
                .assess(&trust, &fork("COLLABORATOR"), None, None, None)
                .await,
            Verdict::Untrusted { .. }
        ));
        let open = TrustSpec {
            allow_forks: true,
            ..TrustSpec::default()
        };
        assert_eq!(
            checker.assess(&open, &fork("NONE"), None, None, None).await,
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
                None,
            )
            .await;
        // Without GitHub nobody's write access can be confirmed.
        assert!(
            matches!(verdict, Verdict::Untrusted { reason, keep: None } if reason.contains("preview:approved"))
        );
    }

    /// A fork PR whose head `maintainer` approved; the label still on it if `labelled`.
    fn approved_fork(
        trust: &TrustSpec,
        labelled: bool,
    ) -> (PreviewEnvironmentSpec, PreviewEnvironmentSpec, Approval) {
        let mut facts = fork("CONTRIBUTOR");
        if labelled {
            facts.labels.push(trust.approval_label.clone());
        }
        let approval = Approval {
            head_sha: facts.head_sha.clone(),
            by: "maintainer".into(),
        };
        let mut existing = facts.clone();
        existing.approved = Some(approval.clone());
        (facts, existing, approval)
    }

    #[tokio::test]
    async fn approval_holds_for_its_head_only() {
        let checker = TrustChecker::new(None);
        let trust = TrustSpec::default();
        let (facts, existing, approval) = approved_fork(&trust, true);
        assert_eq!(
            checker
                .assess(&trust, &facts, None, Some(&existing), None)
                .await,
            Verdict::Approved {
                by: "maintainer".into()
            }
        );
        let mut pushed = facts.clone();
        pushed.head_sha = "f".repeat(40);
        let verdict = checker
            .assess(&trust, &pushed, None, Some(&existing), None)
            .await;
        assert!(
            matches!(&verdict, Verdict::Untrusted { reason, keep: Some(kept) }
                if reason.contains("New commits since maintainer approved") && *kept == approval),
            "{verdict:?}"
        );
    }

    #[tokio::test]
    async fn removing_the_label_revokes_what_is_not_deployed_yet() {
        let checker = TrustChecker::new(None);
        let trust = TrustSpec::default();
        let (facts, existing, approval) = approved_fork(&trust, false);
        // Approved but not deployed yet: the approval is gone, and the comment says so.
        let verdict = checker
            .assess(&trust, &facts, None, Some(&existing), None)
            .await;
        assert!(
            matches!(&verdict, Verdict::Untrusted { reason, keep: None } if reason.contains("withdrawn")),
            "{verdict:?}"
        );
        // Already deployed: that head keeps running (and stays approved).
        let deployed = Some(facts.head_sha.as_str());
        assert_eq!(
            checker
                .assess(&trust, &facts, None, Some(&existing), deployed)
                .await,
            Verdict::Approved {
                by: "maintainer".into()
            }
        );
        // A newer head after the withdrawal: the deployed one stays, the new one waits.
        let mut pushed = facts.clone();
        pushed.head_sha = "f".repeat(40);
        let verdict = checker
            .assess(&trust, &pushed, None, Some(&existing), deployed)
            .await;
        assert!(
            matches!(&verdict, Verdict::Untrusted { keep: Some(kept), .. } if *kept == approval),
            "{verdict:?}"
        );
    }

    #[test]
    fn associations_are_not_trusted_by_default() {
        let trust = TrustSpec::default();
        for association in ["OWNER", "MEMBER", "COLLABORATOR", "CONTRIBUTOR"] {
            assert_eq!(offline_verdict(&trust, &fork(association)), None);
        }
        let listed = TrustSpec {
            associations: vec!["MEMBER".into()],
            ..TrustSpec::default()
        };
        assert_eq!(
            offline_verdict(&listed, &fork("MEMBER")),
            Some(Verdict::Trusted)
        );
    }
}
