//! Report: GitHub feedback for each environment — one sticky PR comment, a GitHub deployment
//! per head with its statuses, and a commit status. Runs beside the controller: the controller
//! only submits the state it settled on, never waits for GitHub. Submissions are keyed per
//! environment, so a burst of changes sends only the latest state; each repository owner (one
//! installation) has one worker, whose writes the [`GitHub`] client paces.

pub mod comment;
mod sync;

use crate::github::GitHub;
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::model::{FeedbackStatus, Phase, PreviewEnvironment};
use comment::{CommentFacts, Stage};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use sync::sync;
use tokio::sync::Notify;

/// Finalizer held while the teardown still has to be reported on GitHub.
pub const FINALIZER: &str = "prenv.dev/github-feedback";

/// What has been written to GitHub for one environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Known {
    pub comment_id: Option<u64>,
    pub deployment_id: Option<u64>,
    pub feedback: FeedbackStatus,
}

/// The feedback one environment should have on GitHub.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// `<namespace>/<name>` of the environment.
    pub key: String,
    pub repository: String,
    pub facts: CommentFacts,
    /// What the environment's status says was already reported.
    pub known: Known,
}

impl Desired {
    /// The feedback `env` calls for: its phase, or its teardown when it is being deleted.
    /// `None` while there is nothing to say yet.
    pub fn for_environment(env: &PreviewEnvironment) -> Option<Desired> {
        let status = env.status.clone().unwrap_or_default();
        let awaiting = env.spec.awaiting_approval.clone();
        let deployable = env.spec.deployable_sha();
        let stage = if env.metadata.deletion_timestamp.is_some() {
            Stage::TornDown
        } else {
            match status.phase? {
                Phase::Deploying => Stage::Deploying,
                Phase::Ready => Stage::Ready,
                Phase::Failed => Stage::Failed {
                    reason: failure_reason(&status),
                },
                Phase::Pending if status.expired_head_sha.is_some() => Stage::Expired {
                    reason: status.message.clone().unwrap_or_default(),
                },
                Phase::Pending if status.is_queued() => Stage::Queued {
                    reason: status.message.clone().unwrap_or_default(),
                },
                Phase::Pending if deployable.is_none() => Stage::Waiting {
                    reason: awaiting.clone()?,
                },
                Phase::Pending | Phase::Deleting => return None,
            }
        };
        let namespace = env.namespace()?;
        // A newer head waiting for approval is mentioned beside the deployed one.
        let note = awaiting.filter(|_| {
            !matches!(
                stage,
                Stage::Waiting { .. }
                    | Stage::TornDown
                    | Stage::Expired { .. }
                    | Stage::Queued { .. }
            )
        });
        Some(Desired {
            key: format!("{namespace}/{}", env.name_any()),
            repository: env.spec.repository.clone(),
            facts: CommentFacts {
                template: format!("{namespace}/{}", env.spec.template),
                number: env.spec.number,
                stage,
                head_sha: deployable.unwrap_or(&env.spec.head_sha).to_string(),
                url: status.url.clone(),
                namespace: status.namespace.clone(),
                expires_at: status.expires_at,
                note,
                approval: env
                    .spec
                    .approved
                    .as_ref()
                    .map(|a| (a.head_sha.clone(), a.by.clone())),
            },
            known: Known {
                comment_id: status.comment_id,
                deployment_id: status.deployment_id,
                feedback: status.feedback.clone().unwrap_or_default(),
            },
        })
    }

    fn owner(&self) -> String {
        self.repository
            .split_once('/')
            .map_or(self.repository.as_str(), |(o, _)| o)
            .to_ascii_lowercase()
    }
}

/// The failing condition's message (what a template author can act on).
fn failure_reason(status: &crate::model::PreviewEnvironmentStatus) -> String {
    status
        .conditions
        .iter()
        .find(|c| c.status == "False" && c.type_ != "Ready")
        .map(|c| format!("{}: {}", c.reason, c.message))
        .or_else(|| status.message.clone())
        .unwrap_or_else(|| "unknown failure".into())
}

#[derive(Default)]
struct Queue {
    order: VecDeque<String>,
    pending: HashMap<String, Desired>,
}

#[derive(Default)]
struct Shared {
    queues: HashMap<String, Queue>,
    notifies: HashMap<String, Arc<Notify>>,
    /// What this process last wrote per environment; fresher than a status snapshot.
    known: HashMap<String, Known>,
    /// Submissions that failed for good, so the same state is not retried on every reconcile.
    given_up: HashMap<String, Desired>,
    /// Consecutive transient failures per environment, for the retry delay.
    failures: HashMap<String, u32>,
    /// Environments whose retry is already scheduled.
    retrying: HashSet<String>,
    /// The latest state submitted per environment, until it is carried out: what a retry
    /// sends (never an older state that failed after a newer one went through).
    latest: HashMap<String, Desired>,
}

pub struct Reporter {
    github: Arc<GitHub>,
    /// Only the leader writes to GitHub.
    leadership: Leadership,
    client: kube::Client,
    metrics: Arc<Metrics>,
    shared: Mutex<Shared>,
    /// Longest wait between retries of a transiently failing environment.
    max_retry_delay: Duration,
}

impl Reporter {
    pub fn new(
        github: Arc<GitHub>,
        client: kube::Client,
        metrics: Arc<Metrics>,
        leadership: Leadership,
    ) -> Arc<Self> {
        Arc::new(Self {
            github,
            leadership,
            client,
            metrics,
            shared: Mutex::new(Shared::default()),
            max_retry_delay: Duration::from_secs(300),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        // A panic while holding the lock would poison it; the data stays usable.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue `desired` (replacing any state still waiting for the same environment) and make
    /// sure its owner's worker runs. Never waits for GitHub.
    pub fn submit(self: &Arc<Self>, desired: Desired) {
        let owner = desired.owner();
        let spawn = {
            let mut shared = self.lock();
            if shared.given_up.get(&desired.key) == Some(&desired) {
                return;
            }
            shared.latest.insert(desired.key.clone(), desired.clone());
            let queue = shared.queues.entry(owner.clone()).or_default();
            if !queue.pending.contains_key(&desired.key) {
                queue.order.push_back(desired.key.clone());
            }
            queue.pending.insert(desired.key.clone(), desired);
            match shared.notifies.get(&owner) {
                Some(notify) => {
                    notify.notify_one();
                    None
                }
                None => {
                    let notify = Arc::new(Notify::new());
                    shared.notifies.insert(owner.clone(), notify.clone());
                    Some(notify)
                }
            }
        };
        if let Some(notify) = spawn {
            let this = self.clone();
            tokio::spawn(async move { this.work(owner, notify).await });
        }
    }

    fn next(&self, owner: &str) -> Option<Desired> {
        let mut shared = self.lock();
        let queue = shared.queues.get_mut(owner)?;
        let key = queue.order.pop_front()?;
        queue.pending.remove(&key)
    }

    async fn work(self: Arc<Self>, owner: String, notify: Arc<Notify>) {
        loop {
            match self.next(&owner) {
                Some(desired) => self.process(desired).await,
                None => notify.notified().await,
            }
        }
    }

    async fn process(self: &Arc<Self>, desired: Desired) {
        if !self.leadership.is_leader() {
            // The new leader reports from the environments' status; what this replica
            // remembers may be outdated by then.
            self.lock().known.clear();
            return;
        }
        let key = desired.key.clone();
        let start = {
            let shared = self.lock();
            shared
                .known
                .get(&key)
                .cloned()
                .unwrap_or_else(|| desired.known.clone())
        };
        let mut known = start.clone();
        let result = sync(&self.github, &desired, &mut known).await;
        let torn_down = desired.facts.stage == Stage::TornDown;
        match &result {
            Ok(()) => {
                self.metrics.feedback("success");
                known.feedback.error = None;
                known.feedback.error_reason = None;
                let mut shared = self.lock();
                shared.failures.remove(&key);
                shared.given_up.remove(&key);
                if shared.latest.get(&key) == Some(&desired) {
                    shared.latest.remove(&key);
                }
                if torn_down {
                    shared.known.remove(&key);
                } else {
                    shared.known.insert(key.clone(), known.clone());
                }
            }
            Err(e) => {
                self.metrics
                    .feedback(if e.is_transient() { "retry" } else { "failed" });
                tracing::warn!(environment = %key, error = %e, "GitHub feedback failed");
                known.feedback.error = Some(e.to_string());
                known.feedback.error_reason = Some(e.reason().to_string());
                let mut shared = self.lock();
                shared.known.insert(key.clone(), known.clone());
                if !e.is_transient() {
                    shared.given_up.insert(key.clone(), desired.clone());
                    if shared.latest.get(&key) == Some(&desired) {
                        shared.latest.remove(&key);
                    }
                }
            }
        }
        self.write_back(&desired, &known).await;
        match result {
            Err(e) if e.is_transient() => self.retry_later(desired),
            // A teardown is done, or given up on for good: the environment may go.
            _ if torn_down => self.release(&key).await,
            _ => {}
        }
    }

    fn retry_later(self: &Arc<Self>, desired: Desired) {
        let delay = {
            let mut shared = self.lock();
            if !shared.retrying.insert(desired.key.clone()) {
                return;
            }
            let n = shared.failures.entry(desired.key.clone()).or_insert(0);
            *n += 1;
            let secs = 5u64.saturating_mul(1 << (*n).min(10));
            Duration::from_secs(secs).min(self.max_retry_delay)
        };
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let key = desired.key.clone();
            // The latest state not yet carried out, unless it already waits in the queue.
            let latest = {
                let mut shared = this.lock();
                shared.retrying.remove(&key);
                let pending = shared
                    .queues
                    .get(&desired.owner())
                    .is_some_and(|q| q.pending.contains_key(&key));
                shared.latest.get(&key).filter(|_| !pending).cloned()
            };
            if let Some(latest) = latest {
                this.submit(latest);
            }
        });
    }

    /// Record what was reported in the environment's status (only what changed).
    async fn write_back(&self, desired: &Desired, known: &Known) {
        if *known == desired.known {
            return;
        }
        let Some((namespace, name)) = desired.key.split_once('/') else {
            return;
        };
        let f = &known.feedback;
        let patch = json!({"status": {
            "commentId": known.comment_id,
            "deploymentId": known.deployment_id,
            "feedback": {
                "commentDigest": f.comment_digest,
                "deploymentSha": f.deployment_sha,
                "deploymentState": f.deployment_state,
                "commitStatus": f.commit_status,
                "error": f.error,
                "errorReason": f.error_reason,
            },
        }});
        let api: Api<PreviewEnvironment> = Api::namespaced(self.client.clone(), namespace);
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            // Gone already (e.g. torn down without our finalizer): nothing to record on.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                tracing::warn!(environment = %desired.key, error = %e, "could not record GitHub feedback in status")
            }
        }
    }

    /// Drop the feedback finalizer so a deleted environment can go.
    async fn release(&self, key: &str) {
        let Some((namespace, name)) = key.split_once('/') else {
            return;
        };
        let api: Api<PreviewEnvironment> = Api::namespaced(self.client.clone(), namespace);
        if let Err(e) = remove_finalizer(&api, name, FINALIZER).await {
            tracing::warn!(environment = %key, error = %e, "could not release the GitHub feedback finalizer");
        }
    }
}

/// Remove `finalizer` from `name`, guarded by a test so a concurrent change is not clobbered.
pub async fn remove_finalizer(
    api: &Api<PreviewEnvironment>,
    name: &str,
    finalizer: &str,
) -> Result<(), kube::Error> {
    let Some(env) = api.get_opt(name).await? else {
        return Ok(());
    };
    let Some(index) = env.finalizers().iter().position(|f| f == finalizer) else {
        return Ok(());
    };
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": format!("/metadata/finalizers/{index}"), "value": finalizer},
        {"op": "remove", "path": format!("/metadata/finalizers/{index}")},
    ]))
    .map_err(kube::Error::SerdeError)?;
    api.patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await?;
    Ok(())
}

/// Add `finalizer` to `env` if it lacks it.
pub async fn add_finalizer(
    api: &Api<PreviewEnvironment>,
    env: &PreviewEnvironment,
    finalizer: &str,
) -> Result<(), kube::Error> {
    if env.finalizers().iter().any(|f| f == finalizer) {
        return Ok(());
    }
    let patch: json_patch::Patch = if env.finalizers().is_empty() {
        serde_json::from_value(json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": env.resource_version()},
            {"op": "add", "path": "/metadata/finalizers", "value": [finalizer]},
        ]))
    } else {
        serde_json::from_value(json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": env.resource_version()},
            {"op": "add", "path": "/metadata/finalizers/-", "value": finalizer},
        ]))
    }
    .map_err(kube::Error::SerdeError)?;
    api.patch(
        &env.name_any(),
        &PatchParams::default(),
        &Patch::Json::<()>(patch),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::sync::{deployment_environment, truncate, urlencode};
    use super::*;
    use crate::model::{PreviewEnvironmentSpec, PreviewEnvironmentStatus};

    fn env(phase: Option<Phase>) -> PreviewEnvironment {
        let spec: PreviewEnvironmentSpec = serde_json::from_value(json!({
            "template": "shop", "repository": "acme/shop", "number": 7,
            "headSha": "abcdef0123456789abcdef0123456789abcdef01", "headRef": "f", "baseRef": "main",
            "author": "alice", "updatedAt": "2026-01-01T00:00:00Z",
        }))
        .unwrap();
        let mut env = PreviewEnvironment::new("shop-7", spec);
        env.metadata.namespace = Some("previews".into());
        env.status = Some(PreviewEnvironmentStatus {
            phase,
            url: Some("https://x".into()),
            comment_id: Some(5),
            ..Default::default()
        });
        env
    }

    #[test]
    fn desired_follows_phase() {
        assert_eq!(Desired::for_environment(&env(None)), None);
        assert_eq!(Desired::for_environment(&env(Some(Phase::Pending))), None);
        let d = Desired::for_environment(&env(Some(Phase::Ready))).unwrap();
        assert_eq!(d.key, "previews/shop-7");
        assert_eq!(d.facts.template, "previews/shop");
        assert_eq!(d.facts.stage, Stage::Ready);
        assert_eq!(d.known.comment_id, Some(5));
        assert_eq!(d.owner(), "acme");
        assert_eq!(deployment_environment(&d), "previews/shop-pr-7");
        let mut deleting = env(Some(Phase::Ready));
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now()),
        );
        assert_eq!(
            Desired::for_environment(&deleting).unwrap().facts.stage,
            Stage::TornDown
        );
    }

    #[test]
    fn failed_uses_the_failing_condition() {
        let mut e = env(Some(Phase::Failed));
        let status = e.status.as_mut().unwrap();
        crate::reconcile::status::set_condition(
            &mut status.conditions,
            "Rendered",
            false,
            "TemplateError",
            "undefined value",
            None,
        );
        crate::reconcile::status::set_condition(
            &mut status.conditions,
            "Ready",
            false,
            "Failed",
            "undefined value",
            None,
        );
        let d = Desired::for_environment(&e).unwrap();
        assert_eq!(
            d.facts.stage,
            Stage::Failed {
                reason: "TemplateError: undefined value".into()
            }
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
        assert_eq!(urlencode("shop pr/1"), "shop%20pr%2F1");
    }
}
