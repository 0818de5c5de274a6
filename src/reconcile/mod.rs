//! Reconcile: the controller on `PreviewEnvironment`. Render the template, apply into the
//! preview namespace, prune what the render dropped, observe readiness, write status and
//! Events. A finalizer is the single top-level action, so deletion always tears down.

pub mod apply;
pub mod fence;
pub mod observe;
pub mod render;
pub mod status;

use crate::collect;
use crate::command::REDEPLOY_ANNOTATION;
use crate::metrics::Metrics;
use crate::model::{
    AppliedKind, Phase, PreviewEnvironment, PreviewEnvironmentStatus, PreviewTemplate,
};
use crate::naming;
use crate::report::{self, Desired, Reporter};
use crate::serve::scoped;
use apply::{ApplyError, Discovery, PlanError};
use fence::Platform;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter as EventReporter};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use render::RenderError;
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Finalizer that makes deletion wait for the teardown.
pub const FINALIZER: &str = "prenv.dev/cleanup";

/// Timing knobs of the controller.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often a `Ready` environment is re-checked even without changes.
    pub ready_resync: Duration,
    /// How often a `Deploying` environment is re-checked (watches usually come first).
    pub deploying_poll: Duration,
    /// How soon a failed environment is retried after a transient error.
    pub retry: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            ready_resync: Duration::from_secs(300),
            deploying_poll: Duration::from_secs(30),
            retry: Duration::from_secs(10),
        }
    }
}

pub struct Context {
    pub client: Client,
    /// prenv's own client configuration, from which the deployer's impersonating clients
    /// are made.
    pub config: kube::Config,
    /// What the platform team allows templates.
    pub platform: Platform,
    /// Impersonating clients per preview namespace.
    deployers: moka::sync::Cache<String, Client>,
    /// GitHub feedback, when GitHub credentials are configured.
    pub reporter: Option<Arc<Reporter>>,
    pub metrics: Arc<Metrics>,
    /// Serve only this namespace (all when `None`).
    pub namespace: Option<String>,
    pub event_reporter: EventReporter,
    pub discovery: Discovery,
    pub settings: Settings,
}

impl Context {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        config: kube::Config,
        platform: Platform,
        namespace: Option<String>,
        instance: String,
        settings: Settings,
        reporter: Option<Arc<Reporter>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let event_reporter = EventReporter {
            controller: "prenv".into(),
            instance: Some(instance),
        };
        Self {
            client,
            config,
            platform,
            deployers: moka::sync::Cache::builder()
                .max_capacity(1000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
            reporter,
            event_reporter,
            metrics,
            namespace,
            discovery: Discovery::default(),
            settings,
        }
    }

    /// A client acting as `namespace`'s deployer ServiceAccount: the API server itself then
    /// refuses whatever the deployer's role does not allow (cluster-scoped objects, other
    /// namespaces, RBAC grants it does not hold).
    pub fn deployer(&self, namespace: &str) -> Result<Client, ReconcileError> {
        if let Some(client) = self.deployers.get(namespace) {
            return Ok(client);
        }
        let mut config = self.config.clone();
        config.auth_info.impersonate = Some(format!(
            "system:serviceaccount:{namespace}:{}",
            fence::DEPLOYER
        ));
        config.auth_info.impersonate_groups = None;
        let client = Client::try_from(config)?;
        self.deployers.insert(namespace.to_string(), client.clone());
        Ok(client)
    }

    /// Record a Kubernetes Event on `env`; failing to record one is logged, never fatal.
    pub async fn event(
        &self,
        env: &PreviewEnvironment,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(truncate(&note, 1000)),
            action: "Reconcile".into(),
            secondary: None,
        };
        // A fresh recorder per event: prenv only records transitions, and kube's recorder
        // would fold events of the same reason into one series that keeps the first note
        // (a second "Deployed" would still name the first head).
        let recorder = Recorder::new(self.client.clone(), self.event_reporter.clone());
        if let Err(e) = recorder.publish(&event, &env.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not record event");
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("environment has no namespace")]
    NoNamespace,
    #[error("teardown incomplete: {0}")]
    Cleanup(String),
    #[error(transparent)]
    Finalizer(#[from] Box<finalizer::Error<ReconcileError>>),
}

/// Run the controller until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let client = ctx.client.clone();
    let scope = ctx.namespace.as_deref();
    let controller = Controller::new(
        scoped::<PreviewEnvironment>(&client, scope),
        watcher::Config::default(),
    );
    let store = controller.store();
    let siblings = store.clone();
    let managed = watcher::Config::default().labels(&format!(
        "{}={}",
        naming::MANAGED_BY_LABEL,
        naming::MANAGED_BY_VALUE
    ));
    controller
        // A template change re-renders every environment made from it.
        .watches(
            scoped::<PreviewTemplate>(&client, scope),
            watcher::Config::default(),
            move |template| made_from(&store, template.namespace(), &template.name_any(), |_| true),
        )
        // A slot under a template's cap frees up when an environment goes away, expires or
        // stops wanting one: its queued siblings get another look.
        .watches(
            scoped::<PreviewEnvironment>(&client, scope),
            watcher::Config::default(),
            move |changed| {
                let name = changed.name_any();
                made_from(
                    &siblings,
                    changed.namespace(),
                    &changed.spec.template,
                    |env| {
                        env.name_any() != name && env.status.as_ref().is_some_and(|s| s.is_queued())
                    },
                )
            },
        )
        // Workload status changes move an environment to Ready.
        .watches(
            Api::<Deployment>::all(client.clone()),
            managed.clone(),
            owner_of,
        )
        .watches(
            Api::<StatefulSet>::all(client.clone()),
            managed.clone(),
            owner_of,
        )
        .watches(Api::<DaemonSet>::all(client), managed, owner_of)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(environment = %obj, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile failed"),
            }
        })
        .await;
}

/// The cached environments of template `namespace/template` that `pick` selects.
fn made_from(
    store: &Store<PreviewEnvironment>,
    namespace: Option<String>,
    template: &str,
    pick: impl Fn(&PreviewEnvironment) -> bool,
) -> Vec<ObjectRef<PreviewEnvironment>> {
    store
        .state()
        .into_iter()
        .filter(|env| env.namespace() == namespace && env.spec.template == template && pick(env))
        .map(|env| ObjectRef::from_obj(&*env))
        .collect()
}

fn owner_of<K: Resource>(obj: K) -> Option<ObjectRef<PreviewEnvironment>> {
    let (namespace, name) = naming::owner_from_annotations(obj.meta().annotations.as_ref())?;
    Some(ObjectRef::new(&name).within(&namespace))
}

async fn reconcile(
    env: Arc<PreviewEnvironment>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let namespace = env.namespace().ok_or(ReconcileError::NoNamespace)?;
    let api: Api<PreviewEnvironment> = Api::namespaced(ctx.client.clone(), &namespace);
    let span = tracing::info_span!(
        "reconcile",
        environment = %format!("{namespace}/{}", env.name_any())
    );
    let start = Instant::now();
    let result = async {
        if has_finalizer(&env, report::FINALIZER) && !has_finalizer(&env, FINALIZER) {
            // Torn down already; only the GitHub side of the teardown is left.
            if env.metadata.deletion_timestamp.is_some() {
                release_feedback(&env, &ctx, &api).await?;
            }
            return Ok(Action::await_change());
        }
        finalizer(&api, FINALIZER, env, |event| async {
            match event {
                finalizer::Event::Apply(env) => deploy(&env, &ctx).await,
                finalizer::Event::Cleanup(env) => collect::teardown(&env, &ctx).await,
            }
        })
        .await
        .map_err(|e| ReconcileError::Finalizer(Box::new(e)))
    }
    .instrument(span)
    .await;
    let label = if result.is_ok() { "success" } else { "error" };
    ctx.metrics.reconcile(label, start.elapsed().as_secs_f64());
    result
}

fn has_finalizer(env: &PreviewEnvironment, finalizer: &str) -> bool {
    env.finalizers().iter().any(|f| f == finalizer)
}

/// Hand a deleted environment's teardown to the reporter, which releases the feedback
/// finalizer once GitHub was told; without a reporter, release it at once.
pub(crate) async fn release_feedback(
    env: &PreviewEnvironment,
    ctx: &Context,
    api: &Api<PreviewEnvironment>,
) -> Result<(), ReconcileError> {
    if !has_finalizer(env, report::FINALIZER) {
        return Ok(());
    }
    match (&ctx.reporter, Desired::for_environment(env)) {
        (Some(reporter), Some(desired)) => reporter.submit(desired),
        _ => report::remove_finalizer(api, &env.name_any(), report::FINALIZER).await?,
    }
    Ok(())
}

fn error_policy(env: Arc<PreviewEnvironment>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    tracing::warn!(environment = %env.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(ctx.settings.retry)
}

/// What the deploy pipeline got to.
enum Outcome {
    Deployed {
        namespace: String,
        url: Option<String>,
        kinds: BTreeSet<AppliedKind>,
        /// How many objects were applied.
        objects: usize,
        waiting: Vec<String>,
        pruned: Vec<String>,
        expires_after: Option<Duration>,
    },
    /// Nothing may be deployed yet: the head awaits approval.
    Waiting { reason: String },
    /// The preview of `head` was idle past the template's TTL and is torn down.
    Expired { head: String, reason: String },
    /// The template's `maxEnvironments` slots are taken by older environments.
    Queued { reason: String },
    /// A stage failed. `stage` is the condition it fails.
    Failed {
        stage: &'static str,
        reason: &'static str,
        message: String,
        namespace: Option<String>,
        url: Option<String>,
        /// Kinds that may still have objects to prune later.
        kinds: BTreeSet<AppliedKind>,
        permanent: bool,
    },
}

impl Outcome {
    fn render_failed(e: &RenderError) -> Self {
        Outcome::Failed {
            stage: status::RENDERED,
            reason: e.reason(),
            message: e.to_string(),
            namespace: None,
            url: None,
            kinds: BTreeSet::new(),
            permanent: true,
        }
    }
}

async fn deploy(cached: &PreviewEnvironment, ctx: &Context) -> Result<Action, ReconcileError> {
    let namespace = cached.namespace().ok_or(ReconcileError::NoNamespace)?;
    let name = cached.name_any();
    let api: Api<PreviewEnvironment> = Api::namespaced(ctx.client.clone(), &namespace);
    // The cache can lag behind our own last status write (a workload's event may wake this
    // reconcile first); decisions about "what changed" need the current object.
    let Some(fresh) = api.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    let env = &fresh;
    if ctx.reporter.is_some() && !has_finalizer(env, report::FINALIZER) {
        // Deletion must wait until the teardown is on the pull request too.
        report::add_finalizer(&api, env, report::FINALIZER).await?;
    }
    let old = env.status.clone().unwrap_or_default();
    let outcome = pipeline(env, ctx, &namespace, &name, &old).await?;
    let new = next_status(env, &old, &outcome);
    if let Some(patch) = status::patch(&old, &new) {
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    if let Some(reporter) = &ctx.reporter {
        let mut settled = env.clone();
        settled.status = Some(new.clone());
        if let Some(desired) = Desired::for_environment(&settled) {
            reporter.submit(desired);
        }
    }
    announce(env, ctx, &old, &new, &outcome).await;
    // Come back when the preview expires, if that is sooner than the usual recheck.
    let until_expiry = new
        .expires_at
        .and_then(|at| (at - chrono::Utc::now()).to_std().ok())
        .map(|d| d + Duration::from_secs(1));
    let recheck = |usual: Duration| Action::requeue(until_expiry.map_or(usual, |d| d.min(usual)));
    Ok(match &outcome {
        Outcome::Deployed { waiting, .. } if waiting.is_empty() => {
            recheck(ctx.settings.ready_resync)
        }
        Outcome::Deployed { .. } => recheck(ctx.settings.deploying_poll),
        Outcome::Failed {
            permanent: true, ..
        } => Action::requeue(ctx.settings.ready_resync),
        Outcome::Failed { .. } => Action::requeue(ctx.settings.retry),
        Outcome::Waiting { .. } | Outcome::Expired { .. } => {
            Action::requeue(ctx.settings.ready_resync)
        }
        // Freed slots wake queued environments through the watch; this is only the backstop.
        Outcome::Queued { .. } => Action::requeue(ctx.settings.ready_resync),
    })
}

/// Whether `env` carries a redeploy request that was not carried out yet.
fn fresh_redeploy(env: &PreviewEnvironment, old: &PreviewEnvironmentStatus) -> bool {
    env.annotations()
        .get(REDEPLOY_ANNOTATION)
        .is_some_and(|r| old.redeployed.as_ref() != Some(r))
}

/// Whether an environment competes for one of its template's `maxEnvironments` slots: it has
/// something to deploy that has not expired, and it is not being deleted.
fn wants_slot(env: &PreviewEnvironment) -> bool {
    let expired = env
        .status
        .as_ref()
        .and_then(|s| s.expired_head_sha.as_deref());
    env.metadata.deletion_timestamp.is_none()
        && env
            .spec
            .deployable_sha()
            .is_some_and(|sha| Some(sha) != expired)
}

/// Why `env` has to wait for a slot under the template's cap of `max`, or `None` when it holds
/// one. Slots go to the oldest environments that want one (first come, first served), so every
/// sibling's reconcile reaches the same answer without coordination.
async fn queued_behind(
    client: &Client,
    env: &PreviewEnvironment,
    namespace: &str,
    max: u32,
) -> Result<Option<String>, kube::Error> {
    let api: Api<PreviewEnvironment> = Api::namespaced(client.clone(), namespace);
    let mut wanting: Vec<PreviewEnvironment> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.spec.template == env.spec.template && wants_slot(e))
        .collect();
    wanting.sort_by(|a, b| {
        let key = |e: &PreviewEnvironment| (e.metadata.creation_timestamp.clone(), e.name_any());
        key(a).cmp(&key(b))
    });
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    let name = env.name_any();
    // Not listed yet (a lagging list): it is the newest, so it queues behind all of them.
    let rank = wanting
        .iter()
        .position(|e| e.name_any() == name)
        .unwrap_or(wanting.len());
    if rank < max {
        return Ok(None);
    }
    let mut holders: Vec<u64> = wanting.iter().take(max).map(|e| e.spec.number).collect();
    holders.sort_unstable();
    let holders = holders
        .iter()
        .map(|n| format!("#{n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let held = if holders.is_empty() {
        "none may run".to_string()
    } else {
        format!("held by {holders}")
    };
    Ok(Some(format!(
        "queued: template {} allows {max} preview(s) at a time ({held}); this one deploys when a slot frees up",
        env.spec.template
    )))
}

/// Render → plan → namespace → apply → prune → observe. Errors a template author or operator
/// can act on become an `Outcome::Failed`; only API trouble writing our own status is an `Err`.
async fn pipeline(
    env: &PreviewEnvironment,
    ctx: &Context,
    namespace: &str,
    name: &str,
    old: &PreviewEnvironmentStatus,
) -> Result<Outcome, ReconcileError> {
    let client = &ctx.client;
    // A fork's head that awaits approval is not run; the approved one (if any) stays.
    let Some(deployable) = env.spec.deployable_sha() else {
        return Ok(Outcome::Waiting {
            reason: env.spec.awaiting_approval.clone().unwrap_or_default(),
        });
    };
    let mut facts = env.spec.clone();
    facts.head_sha = deployable.to_string();
    let templates: Api<PreviewTemplate> = Api::namespaced(client.clone(), namespace);
    let Some(template) = templates.get_opt(&env.spec.template).await? else {
        return Ok(Outcome::Failed {
            stage: status::RENDERED,
            reason: "TemplateMissing",
            message: format!("PreviewTemplate {} does not exist", env.spec.template),
            namespace: None,
            url: None,
            kinds: BTreeSet::new(),
            permanent: true,
        });
    };
    let expires_after = match template.spec.ttl.as_deref().map(humantime::parse_duration) {
        Some(Err(e)) => {
            return Ok(Outcome::render_failed(&RenderError::Resources(format!(
                "ttl: {e}"
            ))));
        }
        Some(Ok(d)) => Some(d),
        None => None,
    };
    let redeploy = env.annotations().get(REDEPLOY_ANNOTATION);
    // An idle preview past its TTL is torn down; it stays so until a new head arrives or a
    // redeploy is asked for.
    if let Some(ttl) = &template.spec.ttl
        && !fresh_redeploy(env, old)
    {
        let reason = format!(
            "expired: nothing new was deployed for {ttl} after {}; push a commit or comment `/preview redeploy` to deploy it again",
            deployable.chars().take(7).collect::<String>()
        );
        let idle = old.observed_head_sha.as_deref() == Some(deployable)
            && old.expires_at.is_some_and(|at| at <= chrono::Utc::now());
        if old.expired_head_sha.as_deref() == Some(deployable) || idle {
            apply::delete_namespaces(client, namespace, name, None).await?;
            return Ok(Outcome::Expired {
                head: deployable.to_string(),
                reason,
            });
        }
    }
    if let Some(max) = template.spec.max_environments
        && let Some(reason) = queued_behind(client, env, namespace, max).await?
    {
        // Also when the cap was lowered under a running preview: the cap is a promise.
        apply::delete_namespaces(client, namespace, name, None).await?;
        return Ok(Outcome::Queued { reason });
    }
    let rendered = match render::render(&template.name_any(), &template.spec, &facts) {
        Ok(r) => r,
        Err(e) => return Ok(Outcome::render_failed(&e)),
    };
    let preview_ns = rendered.namespace.clone();
    let url = rendered.url.clone();
    let previous: BTreeSet<AppliedKind> = old.applied_kinds.iter().cloned().collect();
    let failed = |stage, e: &ApplyError, kinds: BTreeSet<AppliedKind>| Outcome::Failed {
        stage,
        reason: e.reason(),
        message: e.to_string(),
        namespace: Some(preview_ns.clone()),
        url: url.clone(),
        kinds,
        permanent: e.is_permanent(),
    };

    let labels = naming::owned_labels(namespace, name);
    let annotations = naming::owned_annotations(namespace, name);
    let mut objects = rendered.objects;
    for object in &mut objects {
        if let Err(e) = render::claim_object(object, &preview_ns, &labels, &annotations) {
            return Ok(Outcome::render_failed(&e));
        }
        if let Some(request) = redeploy {
            // A new value rolls the workloads; the same value keeps them as they are.
            render::stamp_pod_template(object, REDEPLOY_ANNOTATION, request);
        }
    }
    let isolation = &template.spec.isolation;
    let fence_failed = |e: fence::FenceError| Outcome::Failed {
        stage: status::RENDERED,
        reason: e.reason(),
        message: e.to_string(),
        namespace: None,
        url: None,
        kinds: previous.clone(),
        permanent: true,
    };
    if let Err(e) = fence::check_objects_with(&objects, &ctx.platform.objects) {
        return Ok(fence_failed(e));
    }
    if let Err(e) = ctx
        .platform
        .reserved_namespaces
        .check(&preview_ns, namespace)
    {
        return Ok(fence_failed(e));
    }
    let quota = match fence::check(isolation, &ctx.platform) {
        Ok(q) => q,
        Err(e) => return Ok(fence_failed(e)),
    };
    let fence_objects = fence::objects(
        isolation,
        &quota,
        &ctx.platform,
        &preview_ns,
        &labels,
        &annotations,
    );
    let (planned, fence_planned) = match (
        apply::plan(client, &ctx.discovery, objects).await,
        apply::plan(client, &ctx.discovery, fence_objects).await,
    ) {
        (Ok(p), Ok(f)) => (p, f),
        (Err(PlanError::Apply(e)), _) | (_, Err(PlanError::Apply(e))) => {
            return Ok(failed(status::RENDERED, &e, previous));
        }
        (Err(PlanError::Discovery(e)), _) | (_, Err(PlanError::Discovery(e))) => {
            return Err(e.into());
        }
    };

    let ns_labels = fence::namespace_labels(isolation);
    if let Err(e) = apply::ensure_namespace(client, &preview_ns, namespace, name, &ns_labels).await
    {
        return Ok(failed(status::APPLIED, &e, previous));
    }
    // A namespace left from an earlier namespace pattern goes away.
    apply::delete_namespaces(client, namespace, name, Some(&preview_ns)).await?;

    // The fence, as prenv itself; then everything the template rendered, as the deployer.
    if let Err(e) = apply::apply_all(client, &preview_ns, &fence_planned, false).await {
        return Ok(failed(status::APPLIED, &e, previous));
    }
    let deployer = ctx.deployer(&preview_ns)?;
    if let Err(e) = apply::wait_for_deployer(&deployer, &preview_ns).await {
        return Ok(failed(status::APPLIED, &e, previous));
    }
    let secrets: &[String] = if env.spec.fork && !template.spec.trust.secrets_for_forks {
        &[] // a fork's code never sees the template's secrets
    } else {
        &template.spec.copy_secrets
    };
    if let Err(e) = apply::copy_secrets(
        client,
        &deployer,
        namespace,
        &preview_ns,
        secrets,
        &labels,
        &annotations,
    )
    .await
    {
        return Ok(failed(status::APPLIED, &e, previous));
    }
    let kinds: BTreeSet<AppliedKind> = planned.iter().map(|p| p.kind.clone()).collect();
    let mut all_kinds = previous.clone();
    all_kinds.extend(kinds.iter().cloned());
    // Everything is tried first (dry run): one refused object means none is applied.
    if let Err(e) = apply::apply_all(&deployer, &preview_ns, &planned, true).await {
        return Ok(failed(status::APPLIED, &e, previous));
    }
    let applied = match apply::apply_all(&deployer, &preview_ns, &planned, false).await {
        Ok(a) => a,
        Err(e) => return Ok(failed(status::APPLIED, &e, all_kinds)),
    };
    let keep: BTreeSet<(AppliedKind, String)> = planned
        .iter()
        .map(|p| (p.kind.clone(), p.name.clone()))
        .collect();
    let selector = naming::environment_selector(namespace, name);
    let pruned = match apply::prune(
        &deployer,
        &ctx.discovery,
        &preview_ns,
        &selector,
        &all_kinds,
        &keep,
    )
    .await
    {
        Ok(p) => p,
        Err(e) => return Ok(failed(status::APPLIED, &e, all_kinds)),
    };
    let mut waiting: Vec<String> = applied.iter().filter_map(observe::not_ready).collect();
    if !waiting.is_empty() {
        // Say why, when a pod tells: an image that cannot be pulled, a crash loop.
        waiting.extend(apply::pod_problems(&deployer, &preview_ns).await);
    }
    Ok(Outcome::Deployed {
        namespace: preview_ns,
        url,
        kinds,
        objects: planned.len(),
        waiting,
        pruned,
        expires_after,
    })
}

/// The status `outcome` leads to. Fields only change when something real changed, so a
/// reconcile that finds everything in place writes nothing.
fn next_status(
    env: &PreviewEnvironment,
    old: &PreviewEnvironmentStatus,
    outcome: &Outcome,
) -> PreviewEnvironmentStatus {
    let mut new = old.clone();
    let generation = env.metadata.generation;
    match new.feedback.as_ref() {
        Some(f) if f.error.is_some() => {
            let reason = f
                .error_reason
                .clone()
                .unwrap_or_else(|| "GitHubError".into());
            let message = f.error.clone().unwrap_or_default();
            status::set_condition(
                &mut new.conditions,
                status::REPORTED,
                false,
                &reason,
                &message,
                generation,
            );
        }
        _ if new.comment_id.is_some() => {
            status::set_condition(
                &mut new.conditions,
                status::REPORTED,
                true,
                "Reported",
                "the pull request shows this environment's state",
                generation,
            );
        }
        _ => {}
    }
    new.observed_generation = generation;
    approval_condition(env, &mut new.conditions);
    let head = env
        .spec
        .deployable_sha()
        .unwrap_or(&env.spec.head_sha)
        .to_string();
    let head = &head;
    let short: String = head.chars().take(7).collect();
    match outcome {
        Outcome::Deployed {
            namespace,
            url,
            kinds,
            objects,
            waiting,
            expires_after,
            ..
        } => {
            if new.observed_head_sha.as_ref() != Some(head)
                || new.last_deployed_at.is_none()
                || fresh_redeploy(env, old)
            {
                new.last_deployed_at = Some(chrono::Utc::now());
            }
            new.redeployed = env.annotations().get(REDEPLOY_ANNOTATION).cloned();
            new.observed_head_sha = Some(head.clone());
            new.expired_head_sha = None;
            new.short_sha = Some(short.clone());
            new.namespace = Some(namespace.clone());
            new.url = url.clone();
            new.applied_kinds = kinds.iter().cloned().collect();
            new.expires_at = match (expires_after, new.last_deployed_at) {
                (Some(ttl), Some(at)) => chrono::Duration::from_std(*ttl).ok().map(|d| at + d),
                _ => None,
            };
            // Condition messages are never empty: some API servers read "" as null.
            let rendered = format!("rendered {objects} objects at {short}");
            status::set_condition(
                &mut new.conditions,
                status::RENDERED,
                true,
                "Rendered",
                &rendered,
                generation,
            );
            let applied = format!("applied {objects} objects into namespace {namespace}");
            status::set_condition(
                &mut new.conditions,
                status::APPLIED,
                true,
                "Applied",
                &applied,
                generation,
            );
            if waiting.is_empty() {
                new.phase = Some(Phase::Ready);
                new.message = Some(format!("{short} is ready in namespace {namespace}"));
                status::set_condition(
                    &mut new.conditions,
                    status::READY,
                    true,
                    "Available",
                    "all workloads are available",
                    generation,
                );
            } else {
                new.phase = Some(Phase::Deploying);
                let message = format!("deploying {short}: waiting for {}", waiting.join("; "));
                status::set_condition(
                    &mut new.conditions,
                    status::READY,
                    false,
                    "Deploying",
                    &message,
                    generation,
                );
                new.message = Some(message);
            }
        }
        Outcome::Waiting { reason } => {
            new.phase = Some(Phase::Pending);
            new.message = Some(reason.clone());
            // Not queued any more (an approval withdrawn while queued): say what it waits for.
            status::set_condition(
                &mut new.conditions,
                status::READY,
                false,
                "AwaitingApproval",
                reason,
                generation,
            );
        }
        Outcome::Queued { reason } => {
            stood_down(&mut new, crate::model::QUEUED_REASON, reason, generation);
            // A later admission deploys afresh (and restarts the TTL clock).
            new.observed_head_sha = None;
            new.short_sha = None;
        }
        Outcome::Expired { head, reason } => {
            stood_down(&mut new, "Expired", reason, generation);
            new.expired_head_sha = Some(head.clone());
        }
        Outcome::Failed {
            stage,
            reason,
            message,
            namespace,
            url,
            kinds,
            ..
        } => {
            // Keep what is known to be deployed; say which head failed.
            if namespace.is_some() {
                new.namespace = namespace.clone();
                new.url = url.clone();
            }
            new.applied_kinds = kinds.iter().cloned().collect();
            new.phase = Some(Phase::Failed);
            new.message = Some(format!("{short}: {message}"));
            if *stage == status::RENDERED {
                status::set_condition(
                    &mut new.conditions,
                    status::RENDERED,
                    false,
                    reason,
                    message,
                    generation,
                );
                status::remove_condition(&mut new.conditions, status::APPLIED);
            } else {
                let rendered = format!("rendered {short}");
                status::set_condition(
                    &mut new.conditions,
                    status::RENDERED,
                    true,
                    "Rendered",
                    &rendered,
                    generation,
                );
                status::set_condition(
                    &mut new.conditions,
                    status::APPLIED,
                    false,
                    reason,
                    message,
                    generation,
                );
            }
            status::set_condition(
                &mut new.conditions,
                status::READY,
                false,
                "Failed",
                message,
                generation,
            );
        }
    }
    new
}

/// For a pull request from a fork: whether its head may run, and on whose approval.
fn approval_condition(
    env: &PreviewEnvironment,
    conditions: &mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
) {
    let generation = env.metadata.generation;
    let spec = &env.spec;
    if !spec.fork {
        status::remove_condition(conditions, status::APPROVED);
        return;
    }
    match (&spec.awaiting_approval, &spec.approved) {
        (Some(reason), _) => status::set_condition(
            conditions,
            status::APPROVED,
            false,
            "AwaitingApproval",
            reason,
            generation,
        ),
        (None, Some(approval)) => {
            let short: String = approval.head_sha.chars().take(7).collect();
            let message = format!("approved at {short} by {}", approval.by);
            status::set_condition(
                conditions,
                status::APPROVED,
                true,
                "Approved",
                &message,
                generation,
            )
        }
        (None, None) => status::set_condition(
            conditions,
            status::APPROVED,
            true,
            "TrustedAuthor",
            &format!("{} ({}) is trusted", spec.author, spec.author_association),
            generation,
        ),
    }
}

/// `new` for an environment whose preview was taken down on purpose (`reason`): nothing runs.
fn stood_down(
    new: &mut PreviewEnvironmentStatus,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    new.phase = Some(Phase::Pending);
    new.message = Some(message.to_string());
    new.namespace = None;
    new.url = None;
    new.expires_at = None;
    new.applied_kinds.clear();
    status::set_condition(
        &mut new.conditions,
        status::READY,
        false,
        reason,
        message,
        generation,
    );
}

/// Kubernetes Events for what changed: a failure (once per distinct message), a deploy of a
/// new head, pruned objects, becoming ready.
async fn announce(
    env: &PreviewEnvironment,
    ctx: &Context,
    old: &PreviewEnvironmentStatus,
    new: &PreviewEnvironmentStatus,
    outcome: &Outcome,
) {
    match outcome {
        Outcome::Waiting { reason } => {
            if old.message != new.message {
                ctx.event(env, EventType::Normal, "AwaitingApproval", reason.clone())
                    .await;
            }
        }
        Outcome::Queued { reason } => {
            if !old.is_queued() {
                ctx.event(env, EventType::Normal, "Queued", reason.clone())
                    .await;
            }
        }
        Outcome::Expired { reason, .. } => {
            if old.expired_head_sha != new.expired_head_sha {
                ctx.event(env, EventType::Normal, "Expired", reason.clone())
                    .await;
            }
        }
        Outcome::Failed {
            reason, message, ..
        } => {
            if old.phase != Some(Phase::Failed) || old.message != new.message {
                ctx.event(env, EventType::Warning, reason, message.clone())
                    .await;
            }
        }
        Outcome::Deployed {
            namespace, pruned, ..
        } => {
            if old.observed_head_sha != new.observed_head_sha {
                let short = new.short_sha.clone().unwrap_or_default();
                ctx.event(
                    env,
                    EventType::Normal,
                    "Deployed",
                    format!("applied {short} into namespace {namespace}"),
                )
                .await;
            }
            if let Some(request) = new
                .redeployed
                .as_ref()
                .filter(|_| old.redeployed != new.redeployed)
            {
                ctx.event(
                    env,
                    EventType::Normal,
                    "Redeployed",
                    format!("redeployed into namespace {namespace} as asked ({request})"),
                )
                .await;
            }
            if !pruned.is_empty() {
                ctx.event(
                    env,
                    EventType::Normal,
                    "Pruned",
                    format!("deleted {}", pruned.join(", ")),
                )
                .await;
            }
            if new.phase == Some(Phase::Ready) && old.phase != Some(Phase::Ready) {
                ctx.event(
                    env,
                    EventType::Normal,
                    "Ready",
                    new.message.clone().unwrap_or_default(),
                )
                .await;
            }
        }
    }
}
