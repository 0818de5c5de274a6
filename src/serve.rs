//! `prenv serve`: wires the receiver, the controller and the admin endpoints together.

use crate::collect;
use crate::github::{GitHub, GitHubConfig};
use crate::intake::Intake;
use crate::leader::{self, Leadership};
use crate::metrics::Metrics;
use crate::model::{Phase, PreviewEnvironment, PreviewTemplate};
use crate::receive::{self, Receiver, signature::Secrets};
use crate::reconcile::{self, Context, Settings};
use crate::report::Reporter;
use crate::resync::Resync;
use crate::status_page;
use crate::trust::TrustChecker;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use futures::StreamExt;
use kube::runtime::reflector::Store;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Whether the caches are synced; `wait_for(|r| *r)` to wait for it.
pub type Ready = tokio::sync::watch::Receiver<bool>;

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub secrets: Secrets,
    /// What templates may ask of the fence.
    pub platform: crate::reconcile::fence::Platform,
    /// GitHub access for feedback on pull requests (none: no feedback).
    pub github: Option<GitHubConfig>,
    /// How long a request (headers and body) may take before it is cut off, so a slow sender
    /// cannot hold connections open.
    pub request_timeout: Duration,
    /// How often open pull requests are listed from GitHub to repair missed deliveries.
    pub resync_interval: std::time::Duration,
    /// How often preview namespaces without an environment are swept.
    pub orphan_sweep_interval: Duration,
    /// Serve only this namespace's templates and environments.
    pub namespace: Option<String>,
    /// Which namespaces' templates may serve which repositories.
    pub repositories: crate::serving::RepositoryPolicy,
    pub instance: String,
    /// The leader election Lease, and its namespace (default: `namespace`, else `default`).
    pub lease_name: String,
    pub lease_namespace: Option<String>,
    pub settings: Settings,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("kubernetes client: {0}")]
    Kube(#[from] kube::Error),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    GitHub(#[from] crate::github::GitHubError),
    #[error("kubernetes configuration: {0}")]
    KubeConfig(String),
    #[error(transparent)]
    Leader(#[from] leader::LeaderError),
    #[error("serving HTTP: {0}")]
    Http(#[source] std::io::Error),
}

/// The oldest Kubernetes release prenv supports: the oldest its client library covers
/// (k8s-openapi 0.29, feature `earliest`); the chart's `kubeVersion` says the same.
pub const OLDEST_SUPPORTED_KUBERNETES: (u64, u64) = (1, 33);

/// Whether an API server reporting `major`.`minor` (as `/version` spells them: `"1"`, `"37"`,
/// sometimes `"37+"`) is one prenv supports. Unknown spellings are given the benefit of doubt.
pub fn supported_kubernetes(major: &str, minor: &str) -> bool {
    let number = |s: &str| s.trim_end_matches('+').parse::<u64>().ok();
    match (number(major), number(minor)) {
        (Some(major), Some(minor)) => (major, minor) >= OLDEST_SUPPORTED_KUBERNETES,
        _ => true,
    }
}

/// Say loudly when the API server is older than prenv supports (it still tries).
async fn warn_if_unsupported(client: &Client) {
    match client.apiserver_version().await {
        Ok(info) if !supported_kubernetes(&info.major, &info.minor) => tracing::warn!(
            server = %info.git_version,
            "this Kubernetes is older than prenv supports (1.33 and newer)"
        ),
        Ok(info) => tracing::info!(server = %info.git_version, "Kubernetes API server"),
        Err(e) => tracing::warn!(error = %e, "could not read the API server's version"),
    }
}

/// Run until SIGTERM/SIGINT (or `shutdown` is cancelled): stop taking deliveries, let the
/// controller finish in-flight reconciles, release the leader lease, then return.
pub async fn serve(config: ServeConfig, shutdown: CancellationToken) -> Result<(), ServeError> {
    let kube_config = kube::Config::infer()
        .await
        .map_err(|e| ServeError::KubeConfig(e.to_string()))?;
    let client = Client::try_from(kube_config.clone())?;
    warn_if_unsupported(&client).await;
    let metrics = Arc::new(Metrics::new());
    let scope = config.namespace.as_deref();

    let (templates, templates_ready) = cache::<PreviewTemplate>(&client, scope);
    let (environments, environments_ready) = cache::<PreviewEnvironment>(&client, scope);
    // kube's `Store::wait_until_ready` wakes only one waiter, so one task waits for both
    // caches and everyone else watches this flag.
    let (ready_tx, ready) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if templates_ready.await && environments_ready.await {
            let _ = ready_tx.send(true);
            tracing::info!("caches synced");
        }
    });

    let lease_namespace = config
        .lease_namespace
        .clone()
        .or_else(|| config.namespace.clone())
        .unwrap_or_else(|| "default".into());
    let (leadership, election) = leader::elect(
        client.clone(),
        &config.lease_name,
        &lease_namespace,
        &config.instance,
        shutdown.clone(),
    )
    .await?;
    watch_leadership(leadership.clone(), metrics.clone());

    let github = match &config.github {
        Some(github) => Some(Arc::new(GitHub::new(github.clone(), metrics.clone())?)),
        None => None,
    };
    let reporter = github.as_ref().map(|github| {
        Reporter::new(
            github.clone(),
            client.clone(),
            metrics.clone(),
            leadership.clone(),
        )
    });
    let policy = Arc::new(config.repositories.clone());
    let intake = Arc::new(Intake::with_policy(
        client.clone(),
        TrustChecker::new(github.clone()),
        policy.clone(),
    ));
    tokio::spawn(crate::serving::keep_statuses(
        client.clone(),
        templates.clone(),
        policy,
        leadership.clone(),
        shutdown.clone(),
    ));
    // An interval of zero turns the resync off (deliveries alone then drive prenv).
    if let Some(github) = github
        .as_ref()
        .filter(|_| !config.resync_interval.is_zero())
    {
        let resync = Resync {
            github: github.clone(),
            client: client.clone(),
            templates: templates.clone(),
            ready: ready.clone(),
            intake: intake.clone(),
            metrics: metrics.clone(),
            interval: config.resync_interval,
            leadership: leadership.clone(),
        };
        tokio::spawn(resync.run(shutdown.clone()));
    }

    tokio::spawn(sweep_orphans(
        client.clone(),
        config.namespace.clone(),
        config.orphan_sweep_interval,
        leadership.clone(),
        metrics.clone(),
        shutdown.clone(),
    ));

    // Every replica answers webhooks (they only write PreviewEnvironments) and the pages.
    let receiver = Arc::new(Receiver::new(
        config.secrets.clone(),
        templates.clone(),
        ready.clone(),
        intake,
        metrics.clone(),
    ));
    let app = receive::router(receiver).layer(tower_http::trace::TraceLayer::new_for_http());
    // The status page shows every team's PR titles and errors: it stays off the webhook
    // listener, which is the one published to the internet.
    let admin = admin_router(ready, metrics.clone(), environments.clone())
        .merge(status_page::router(environments, templates, client.clone()));

    let ctx = Arc::new(Context::new(
        client,
        kube_config,
        config.platform.clone(),
        config.namespace.clone(),
        config.instance.clone(),
        config.settings.clone(),
        reporter,
        metrics.clone(),
    ));
    let controller = tokio::spawn(lead(ctx, leadership, shutdown.clone()));

    let listener = bind(config.listen).await?;
    let admin_listener = bind(config.admin_listen).await?;
    tracing::info!(listen = %config.listen, admin = %config.admin_listen, "prenv serving");
    let admin_server = tokio::spawn(receive::server::serve(
        admin_listener,
        admin,
        shutdown.clone(),
        config.request_timeout,
    ));
    let served =
        receive::server::serve(listener, app, shutdown.clone(), config.request_timeout).await;
    shutdown.cancel();
    let _ = controller.await;
    let _ = admin_server.await;
    let _ = election.await;
    served.map_err(ServeError::Http)
}

/// A reflector cache of `K` (in `scope`, or everywhere) and a future that resolves once it
/// has synced (false if it never will).
fn cache<K>(
    client: &Client,
    scope: Option<&str>,
) -> (
    Store<K>,
    impl std::future::Future<Output = bool> + Send + 'static,
)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer) = reflector::store::<K>();
    let stream = reflector(
        writer,
        watcher(scoped::<K>(client, scope), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects()
    .for_each(|event| async move {
        if let Err(e) = event {
            tracing::warn!(error = %e, "watch error; retrying");
        }
    });
    tokio::spawn(stream);
    let waiter = store.clone();
    (
        store,
        async move { waiter.wait_until_ready().await.is_ok() },
    )
}

/// Run the controller while this replica leads; stop it promptly when the lease is lost and
/// start again when it is won back.
async fn lead(ctx: Arc<Context>, mut leadership: Leadership, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            acquired = leadership.acquired() => if !acquired { return },
        }
        tracing::info!("leading: starting the controller");
        let mut lost = leadership.clone();
        let stop = shutdown.clone();
        reconcile::run(ctx.clone(), async move {
            tokio::select! {
                _ = lost.lost() => {}
                _ = stop.cancelled() => {}
            }
        })
        .await;
        if shutdown.is_cancelled() {
            return;
        }
        tracing::warn!("lost the leader lease: controller stopped");
    }
}

/// Sweep orphaned preview namespaces every `interval` while this replica leads (the first
/// sweep as soon as it leads); a failed sweep is logged and the next one tries again.
async fn sweep_orphans(
    client: Client,
    scope: Option<String>,
    interval: Duration,
    leadership: Leadership,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    leadership
        .every_interval(interval, &shutdown, || async {
            match collect::sweep_orphans(&client, scope.as_deref()).await {
                Ok(deleted) => deleted.iter().for_each(|_| metrics.orphan_deleted()),
                Err(e) => tracing::warn!(error = %e, "orphan sweep failed; the next one retries"),
            }
        })
        .await;
}

fn watch_leadership(mut leadership: Leadership, metrics: Arc<Metrics>) {
    metrics.set_leader(leadership.is_leader());
    tokio::spawn(async move {
        while let Some(leading) = leadership.changed().await {
            metrics.set_leader(leading);
        }
    });
}

/// An API for `K` in `namespace`, or in all namespaces.
pub fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ServeError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

fn admin_router(
    ready: Ready,
    metrics: Arc<Metrics>,
    environments: Store<PreviewEnvironment>,
) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                metrics.set_environments(environments.state().iter().map(|env| {
                    let template = format!(
                        "{}/{}",
                        env.metadata.namespace.as_deref().unwrap_or_default(),
                        env.spec.template
                    );
                    let phase = env.phase().map_or("Pending", phase_name);
                    (template, phase)
                }));
                let text = metrics.encode();
                async move {
                    (
                        [(
                            http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = *ready.borrow();
                async move {
                    if ready {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
                    }
                }
            }),
        )
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Pending => "Pending",
        Phase::Deploying => "Deploying",
        Phase::Ready => "Ready",
        Phase::Failed => "Failed",
        Phase::Deleting => "Deleting",
    }
}

/// Cancel `token` on SIGTERM or SIGINT.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut term) = signal(SignalKind::terminate()) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
        token.cancel();
    });
}

#[cfg(test)]
mod tests {
    use super::supported_kubernetes;

    #[test]
    fn supported_kubernetes_releases_start_at_1_33() {
        assert!(supported_kubernetes("1", "33"));
        assert!(supported_kubernetes("1", "37+"));
        assert!(supported_kubernetes("2", "0"));
        assert!(!supported_kubernetes("1", "32"));
        assert!(!supported_kubernetes("1", "20"));
        assert!(supported_kubernetes("", ""));
    }
}
