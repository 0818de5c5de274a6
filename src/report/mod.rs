//! Report: GitHub feedback for each environment — one sticky PR comment, a GitHub deployment
//! per head with its statuses, and a commit status. Runs beside the controller: the controller
//! only submits the state it settled on, never waits for GitHub. Submissions are keyed per
//! environment, so a burst of changes sends only the latest state; each repository owner (one
//! installation) has one worker, whose writes the [`GitHub`] client paces.

pub mod comment;

use crate::github::{GitHub, GitHubError};
use crate::leader::Leadership;
use crate::metrics::Metrics;
use crate::model::{FeedbackStatus, Phase, PreviewEnvironment};
use crate::naming;
use comment::{CommentFacts, Stage};
use http::Method;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
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

/// Bring GitHub to `desired`, updating `known` as each write succeeds (so a failure half-way
/// keeps what was done).
async fn sync(github: &GitHub, desired: &Desired, known: &mut Known) -> Result<(), GitHubError> {
    sync_comment(github, desired, known).await?;
    sync_deployment(github, desired, known).await?;
    sync_commit_status(github, desired, known).await
}

async fn sync_comment(
    github: &GitHub,
    desired: &Desired,
    known: &mut Known,
) -> Result<(), GitHubError> {
    let text = comment::render(&desired.facts);
    let digest = naming::short_hash(&text);
    if known.comment_id.is_some() && known.feedback.comment_digest.as_deref() == Some(&digest) {
        return Ok(());
    }
    let repo = &desired.repository;
    let body = json!({"body": text});
    if let Some(id) = known.comment_id {
        let path = format!("/repos/{repo}/issues/comments/{id}");
        match github
            .request(repo, Method::PATCH, &path, Some(&body))
            .await
        {
            Ok(_) => {
                known.feedback.comment_digest = Some(digest);
                return Ok(());
            }
            // Someone deleted it: write it again (once; then it is known again).
            Err(e) if e.status() == Some(404) => known.comment_id = None,
            Err(e) => return Err(e),
        }
    }
    let marker = comment::marker(&desired.facts.template, desired.facts.number);
    let id = match find_comment(github, repo, desired.facts.number, &marker).await? {
        Some((id, existing)) => {
            if existing != text {
                let path = format!("/repos/{repo}/issues/comments/{id}");
                github
                    .request(repo, Method::PATCH, &path, Some(&body))
                    .await?;
            }
            id
        }
        None => {
            let path = format!("/repos/{repo}/issues/{}/comments", desired.facts.number);
            create(github, repo, path, &body).await?
        }
    };
    known.comment_id = Some(id);
    known.feedback.comment_digest = Some(digest);
    Ok(())
}

/// POST `body` to `path` and return the id of what GitHub created.
async fn create(
    github: &GitHub,
    repo: &str,
    path: String,
    body: &Value,
) -> Result<u64, GitHubError> {
    let created = github
        .request(repo, Method::POST, &path, Some(body))
        .await?;
    created
        .body
        .get("id")
        .and_then(Value::as_u64)
        .ok_or_else(|| GitHubError::Unavailable {
            method: Method::POST,
            path,
            message: "the answer has no id".into(),
        })
}

/// prenv's own comment carrying `marker` on the pull request: only comments written by prenv's
/// identity count, since anyone can paste a marker.
async fn find_comment(
    github: &GitHub,
    repo: &str,
    number: u64,
    marker: &str,
) -> Result<Option<(u64, String)>, GitHubError> {
    let identity = github.identity().await?;
    for page in 1..=50 {
        let path = format!("/repos/{repo}/issues/{number}/comments?per_page=100&page={page}");
        let answer = github.request(repo, Method::GET, &path, None).await?;
        let comments = answer.body.as_array().cloned().unwrap_or_default();
        for c in &comments {
            let author = c.pointer("/user/login").and_then(Value::as_str);
            let body = c.get("body").and_then(Value::as_str).unwrap_or_default();
            if author.is_some_and(|a| a.eq_ignore_ascii_case(&identity))
                && body.starts_with(marker)
                && let Some(id) = c.get("id").and_then(Value::as_u64)
            {
                return Ok(Some((id, body.to_string())));
            }
        }
        if comments.len() < 100 {
            break;
        }
    }
    Ok(None)
}

/// GitHub deployment environment name of the preview (`<namespace>/<template>-pr-<n>`).
fn deployment_environment(desired: &Desired) -> String {
    format!("{}-pr-{}", desired.facts.template, desired.facts.number)
}

async fn sync_deployment(
    github: &GitHub,
    desired: &Desired,
    known: &mut Known,
) -> Result<(), GitHubError> {
    let repo = &desired.repository;
    let head = &desired.facts.head_sha;
    let (state, description) = match &desired.facts.stage {
        Stage::Deploying => ("in_progress", "Deploying the preview".to_string()),
        Stage::Ready => ("success", "Preview ready".to_string()),
        Stage::Failed { reason } => ("failure", truncate(reason, 140)),
        Stage::TornDown | Stage::Expired { .. } | Stage::Queued { .. } => {
            ("inactive", "Preview removed".to_string())
        }
        Stage::Waiting { .. } => return Ok(()),
    };
    if state == "inactive" {
        if let Some(id) = known.deployment_id
            && known.feedback.deployment_state.as_deref() != Some("inactive")
        {
            post_deployment_status(github, repo, id, "inactive", &description, None).await?;
            known.feedback.deployment_state = Some("inactive".into());
        }
        return Ok(());
    }
    if known.feedback.deployment_sha.as_ref() != Some(head) || known.deployment_id.is_none() {
        // The previous head's deployment goes inactive (GitHub does not do this for
        // transient environments).
        if let Some(old) = known.deployment_id
            && known.feedback.deployment_state.as_deref() != Some("inactive")
        {
            post_deployment_status(
                github,
                repo,
                old,
                "inactive",
                "Superseded by a newer commit",
                None,
            )
            .await?;
        }
        let environment = deployment_environment(desired);
        let id = match find_deployment(github, repo, &environment, head).await? {
            Some(id) => id,
            None => {
                let path = format!("/repos/{repo}/deployments");
                let body = json!({
                    "ref": head,
                    "environment": environment,
                    "description": format!("Preview of pull request #{}", desired.facts.number),
                    "transient_environment": true,
                    "production_environment": false,
                    "auto_merge": false,
                    "required_contexts": [],
                    "payload": {"prenv": {"environment": desired.key}},
                });
                create(github, repo, path, &body).await?
            }
        };
        known.deployment_id = Some(id);
        known.feedback.deployment_sha = Some(head.clone());
        known.feedback.deployment_state = None;
    }
    if known.feedback.deployment_state.as_deref() != Some(state)
        && let Some(id) = known.deployment_id
    {
        let url = (state == "success")
            .then_some(desired.facts.url.as_deref())
            .flatten();
        post_deployment_status(github, repo, id, state, &description, url).await?;
        known.feedback.deployment_state = Some(state.to_string());
    }
    Ok(())
}

/// The deployment prenv already created for `environment` at `sha` (after a restart between
/// creating it and recording it).
async fn find_deployment(
    github: &GitHub,
    repo: &str,
    environment: &str,
    sha: &str,
) -> Result<Option<u64>, GitHubError> {
    let path = format!(
        "/repos/{repo}/deployments?sha={sha}&environment={}&per_page=100",
        urlencode(environment)
    );
    let answer = github.request(repo, Method::GET, &path, None).await?;
    let identity = github.identity().await?;
    Ok(answer.body.as_array().and_then(|list| {
        list.iter()
            .filter(|d| {
                d.pointer("/creator/login")
                    .and_then(Value::as_str)
                    .is_some_and(|l| l.eq_ignore_ascii_case(&identity))
            })
            .find_map(|d| d.get("id").and_then(Value::as_u64))
    }))
}

async fn post_deployment_status(
    github: &GitHub,
    repo: &str,
    id: u64,
    state: &str,
    description: &str,
    environment_url: Option<&str>,
) -> Result<(), GitHubError> {
    let path = format!("/repos/{repo}/deployments/{id}/statuses");
    let mut body = json!({"state": state, "description": description, "auto_inactive": false});
    if let Some(url) = environment_url {
        body["environment_url"] = json!(url);
    }
    match github.request(repo, Method::POST, &path, Some(&body)).await {
        Ok(_) => Ok(()),
        // The deployment was deleted on GitHub: nothing left to mark.
        Err(e) if e.status() == Some(404) && state == "inactive" => Ok(()),
        Err(e) => Err(e),
    }
}

async fn sync_commit_status(
    github: &GitHub,
    desired: &Desired,
    known: &mut Known,
) -> Result<(), GitHubError> {
    let head = &desired.facts.head_sha;
    let (state, description, target) = match &desired.facts.stage {
        Stage::Deploying => ("pending", "Deploying the preview".to_string(), None),
        Stage::Ready => (
            "success",
            "Preview ready".to_string(),
            desired.facts.url.clone(),
        ),
        Stage::Failed { reason } => ("failure", truncate(reason, 140), None),
        Stage::TornDown | Stage::Waiting { .. } | Stage::Expired { .. } | Stage::Queued { .. } => {
            return Ok(());
        }
    };
    let key = format!("{head}:{state}");
    if known.feedback.commit_status.as_deref() == Some(&key) {
        return Ok(());
    }
    let repo = &desired.repository;
    let mut body = json!({
        "state": state,
        "description": description,
        // The template's namespace too: two teams' templates of one name stay apart.
        "context": format!("prenv/{}", desired.facts.template),
    });
    if let Some(url) = target {
        body["target_url"] = json!(url);
    }
    let path = format!("/repos/{repo}/statuses/{head}");
    github
        .request(repo, Method::POST, &path, Some(&body))
        .await?;
    known.feedback.commit_status = Some(key);
    Ok(())
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max.saturating_sub(1)) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
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
