//! Decide: what a pull request's current state means for one template's environment.
//! Pure functions; the receiver and the resync feed them, the intake carries the result out.

use crate::model::{Approval, PreviewEnvironmentSpec, PreviewTemplateSpec, Trigger};
use crate::trust::Verdict;
use octocrab::models::pulls::PullRequest;
use regex::RegexBuilder;

/// The pull request actions prenv acts on; every other action is acknowledged and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrAction {
    Opened,
    Reopened,
    Synchronize,
    ReadyForReview,
    ConvertedToDraft,
    Labeled,
    Unlabeled,
    Edited,
    Closed,
    /// Not a delivery: the periodic resync read the pull request's current state from GitHub.
    Resync,
}

impl PrAction {
    /// The delivery's name of the action (`resync` for the resync).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Opened => "opened",
            Self::Reopened => "reopened",
            Self::Synchronize => "synchronize",
            Self::ReadyForReview => "ready_for_review",
            Self::ConvertedToDraft => "converted_to_draft",
            Self::Labeled => "labeled",
            Self::Unlabeled => "unlabeled",
            Self::Edited => "edited",
            Self::Closed => "closed",
            Self::Resync => "resync",
        }
    }

    /// Parse a delivery's `action`; `None` for actions prenv does not act on.
    pub fn from_delivery(action: &str) -> Option<Self> {
        Some(match action {
            "opened" => Self::Opened,
            "reopened" => Self::Reopened,
            "synchronize" => Self::Synchronize,
            "ready_for_review" => Self::ReadyForReview,
            "converted_to_draft" => Self::ConvertedToDraft,
            "labeled" => Self::Labeled,
            "unlabeled" => Self::Unlabeled,
            "edited" => Self::Edited,
            "closed" => Self::Closed,
            _ => return None,
        })
    }
}

/// The facts of a pull request, as carried by a `PreviewEnvironment`'s spec (minus the template).
#[derive(Debug, Clone, PartialEq)]
pub struct PullRequestState {
    pub open: bool,
    pub facts: PreviewEnvironmentSpec,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FactsError {
    #[error("pull_request.{0} is missing")]
    Missing(&'static str),
}

/// Read the facts prenv keeps from GitHub's pull request object.
pub fn pull_request_state(pr: &PullRequest) -> Result<PullRequestState, FactsError> {
    let base_repo = pr
        .base
        .repo
        .as_ref()
        .ok_or(FactsError::Missing("base.repo"))?;
    let repository = base_repo
        .full_name
        .clone()
        .ok_or(FactsError::Missing("base.repo.full_name"))?;
    let head_repository = pr.head.repo.as_ref().and_then(|r| r.full_name.clone());
    // A deleted head repository can only have been a fork.
    let fork = match &pr.head.repo {
        None => true,
        Some(head) => head.id != base_repo.id,
    };
    let author = pr
        .user
        .as_ref()
        .map(|u| u.login.clone())
        .ok_or(FactsError::Missing("user"))?;
    let author_association = pr
        .author_association
        .as_ref()
        .and_then(|a| serde_json::to_value(a).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let updated_at = pr.updated_at.ok_or(FactsError::Missing("updated_at"))?;
    let open =
        !matches!(pr.state, Some(octocrab::models::IssueState::Closed)) && pr.closed_at.is_none();
    Ok(PullRequestState {
        open,
        facts: PreviewEnvironmentSpec {
            template: String::new(),
            repository,
            number: pr.number,
            head_sha: pr.head.sha.clone(),
            head_ref: pr.head.ref_field.clone(),
            base_ref: pr.base.ref_field.clone(),
            author,
            author_association,
            title: pr.title.clone().unwrap_or_default(),
            labels: pr.labels.iter().flatten().map(|l| l.name.clone()).collect(),
            draft: pr.draft.unwrap_or(false),
            fork,
            head_repository,
            html_url: pr.html_url.as_ref().map(|u| u.to_string()),
            updated_at,
            approved: None,
            awaiting_approval: None,
        },
    })
}

/// What to do with one template's environment for a pull request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The environment should exist with this spec.
    Apply(Box<PreviewEnvironmentSpec>),
    /// The environment should not exist.
    Delete { reason: String },
}

/// Whether `template` serves `repository` (GitHub names are case-insensitive).
pub fn serves(template: &PreviewTemplateSpec, repository: &str) -> bool {
    template.repository.eq_ignore_ascii_case(repository)
}

/// Decide for one template. The caller has checked [`serves`] and judged the head's trust
/// (the verdict carries the earlier approval that still stands, whose head stays deployed).
pub fn decide(
    action: PrAction,
    state: &PullRequestState,
    template_name: &str,
    template: &PreviewTemplateSpec,
    verdict: &Verdict,
) -> Decision {
    if action == PrAction::Closed || !state.open {
        return Decision::Delete {
            reason: "pull request closed".into(),
        };
    }
    let facts = &state.facts;
    if let Err(reason) = passes_trigger(&template.trigger, facts) {
        return Decision::Delete { reason };
    }
    let mut spec = facts.clone();
    spec.template = template_name.to_string();
    match verdict {
        Verdict::Trusted => {}
        Verdict::Approved { by } => {
            spec.approved = Some(Approval {
                head_sha: facts.head_sha.clone(),
                by: by.clone(),
            });
        }
        Verdict::Untrusted { reason, keep } => {
            spec.approved = keep.clone();
            spec.awaiting_approval = Some(reason.clone());
        }
    }
    Decision::Apply(Box::new(spec))
}

/// `Ok` when the pull request passes the template's trigger rules, else why not.
pub fn passes_trigger(trigger: &Trigger, facts: &PreviewEnvironmentSpec) -> Result<(), String> {
    if trigger.skip_drafts && facts.draft {
        return Err("pull request is a draft".into());
    }
    if let Some(missing) = trigger
        .require_labels
        .iter()
        .find(|l| !facts.labels.contains(l))
    {
        return Err(format!("label {missing} is required"));
    }
    if let Some(excluded) = trigger
        .exclude_labels
        .iter()
        .find(|l| facts.labels.contains(l))
    {
        return Err(format!("label {excluded} excludes it"));
    }
    if !full_match(&trigger.branches, &facts.head_ref)? {
        return Err(format!(
            "head branch {} does not match {}",
            facts.head_ref, trigger.branches
        ));
    }
    if !full_match(&trigger.base_branches, &facts.base_ref)? {
        return Err(format!(
            "base branch {} does not match {}",
            facts.base_ref, trigger.base_branches
        ));
    }
    Ok(())
}

fn full_match(pattern: &str, text: &str) -> Result<bool, String> {
    let re = RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("trigger pattern {pattern:?} is invalid: {e}"))?;
    Ok(re.is_match(text))
}

/// Check a template's trigger patterns, so an invalid one is reported on the template.
pub fn validate_trigger(trigger: &Trigger) -> Result<(), String> {
    full_match(&trigger.branches, "")?;
    full_match(&trigger.base_branches, "")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decision for a trusted head of pull request `state` under template `t` ("shop").
    fn trusted(action: PrAction, state: &PullRequestState, t: &PreviewTemplateSpec) -> Decision {
        decide(action, state, "shop", t, &Verdict::Trusted)
    }
    use crate::reconcile::render::tests::pr;

    fn state(open: bool) -> PullRequestState {
        let mut facts = pr();
        facts.template = String::new();
        PullRequestState { open, facts }
    }

    fn template() -> PreviewTemplateSpec {
        serde_json::from_value(
            serde_json::json!({"repository": "acme/storefront", "resources": ""}),
        )
        .unwrap()
    }

    #[test]
    fn acted_actions_parse_and_others_do_not() {
        for a in [
            "opened",
            "reopened",
            "synchronize",
            "ready_for_review",
            "converted_to_draft",
            "labeled",
            "unlabeled",
            "edited",
            "closed",
        ] {
            assert!(PrAction::from_delivery(a).is_some(), "{a}");
        }
        for a in ["assigned", "locked", "review_requested", "milestoned", ""] {
            assert_eq!(PrAction::from_delivery(a), None, "{a}");
        }
    }

    #[test]
    fn open_actions_apply_with_template_name() {
        for action in [
            PrAction::Opened,
            PrAction::Reopened,
            PrAction::Synchronize,
            PrAction::ReadyForReview,
            PrAction::Labeled,
            PrAction::Unlabeled,
            PrAction::Edited,
            PrAction::Resync,
        ] {
            match trusted(action, &state(true), &template()) {
                Decision::Apply(spec) => {
                    assert_eq!(spec.template, "shop");
                    assert_eq!(spec.number, 42);
                }
                other => panic!("{action:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn closed_deletes() {
        assert!(matches!(
            trusted(PrAction::Closed, &state(false), &template()),
            Decision::Delete { .. }
        ));
        // A resync that finds the pull request closed also deletes.
        assert!(matches!(
            trusted(PrAction::Resync, &state(false), &template()),
            Decision::Delete { .. }
        ));
    }

    #[test]
    fn converted_to_draft_deletes_unless_drafts_allowed() {
        let mut s = state(true);
        s.facts.draft = true;
        assert!(matches!(
            trusted(PrAction::ConvertedToDraft, &s, &template()),
            Decision::Delete { .. }
        ));
        let mut t = template();
        t.trigger.skip_drafts = false;
        assert!(matches!(
            trusted(PrAction::ConvertedToDraft, &s, &t),
            Decision::Apply(_)
        ));
    }

    #[test]
    fn labels_gate() {
        let mut t = template();
        t.trigger.require_labels = vec!["preview".into()];
        assert!(matches!(
            trusted(PrAction::Labeled, &state(true), &t),
            Decision::Apply(_)
        ));
        t.trigger.require_labels = vec!["deploy-me".into()];
        assert!(matches!(
            trusted(PrAction::Unlabeled, &state(true), &t),
            Decision::Delete { .. }
        ));
        t.trigger.require_labels.clear();
        t.trigger.exclude_labels = vec!["preview".into()];
        assert!(matches!(
            trusted(PrAction::Labeled, &state(true), &t),
            Decision::Delete { .. }
        ));
    }

    #[test]
    fn branch_patterns_match_in_full() {
        let mut t = template();
        t.trigger.branches = "feature/.*".into();
        assert!(matches!(
            trusted(PrAction::Opened, &state(true), &t),
            Decision::Apply(_)
        ));
        t.trigger.branches = "feature".into();
        assert!(matches!(
            trusted(PrAction::Opened, &state(true), &t),
            Decision::Delete { .. }
        ));
        t.trigger.branches = ".*".into();
        t.trigger.base_branches = "release/.*".into();
        assert!(matches!(
            trusted(PrAction::Opened, &state(true), &t),
            Decision::Delete { .. }
        ));
        t.trigger.base_branches = "(".into();
        assert!(validate_trigger(&t.trigger).is_err());
    }

    #[test]
    fn untrusted_head_awaits_approval_and_keeps_the_approved_one() {
        let mut s = state(true);
        s.facts.fork = true;
        let untrusted = Verdict::Untrusted {
            reason: "needs approval".into(),
            keep: None,
        };
        let Decision::Apply(spec) = decide(PrAction::Opened, &s, "shop", &template(), &untrusted)
        else {
            panic!("an environment waiting for approval");
        };
        assert_eq!(spec.awaiting_approval.as_deref(), Some("needs approval"));
        assert_eq!(spec.deployable_sha(), None);

        let approved = Verdict::Approved {
            by: "maintainer".into(),
        };
        let Decision::Apply(spec) = decide(PrAction::Labeled, &s, "shop", &template(), &approved)
        else {
            panic!("approved");
        };
        assert_eq!(spec.deployable_sha(), Some(s.facts.head_sha.as_str()));

        // A new push: the approved head stays deployable, the new one waits.
        let mut pushed = s.clone();
        pushed.facts.head_sha = "f".repeat(40);
        let still = Verdict::Untrusted {
            reason: "needs approval".into(),
            keep: spec.approved.clone(),
        };
        let Decision::Apply(next) =
            decide(PrAction::Synchronize, &pushed, "shop", &template(), &still)
        else {
            panic!("waiting");
        };
        assert_eq!(next.head_sha, "f".repeat(40));
        assert_eq!(next.deployable_sha(), Some(s.facts.head_sha.as_str()));
    }

    #[test]
    fn repository_match_ignores_case() {
        assert!(serves(&template(), "Acme/StoreFront"));
        assert!(!serves(&template(), "acme/other"));
    }
}
