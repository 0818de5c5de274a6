//! `prenv serve`: wires the receiver, the controller and the admin endpoints together.

use crate::github::{GitHub, GitHubConfig};
use crate::intake::Intake;
use crate::metrics::Metrics;
use crate::model::PreviewTemplate;
use crate::receive::{self, Receiver, signature::Secrets};
use crate::reconcile::{self, Context, Settings};
use crate::report::Reporter;
use crate::resync::Resync;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use futures::StreamExt;
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
    /// GitHub access for feedback on pull requests (none: no feedback).
    pub github: Option<GitHubConfig>,
    /// How long a request (headers and body) may take before it is cut off, so a slow sender
    /// cannot hold connections open.
    pub request_timeout: Duration,
    /// How often open pull requests are listed from GitHub to repair missed deliveries.
    pub resync_interval: std::time::Duration,
    /// Serve only this namespace's templates and environments.
    pub namespace: Option<String>,
    pub instance: String,
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
    #[error("serving HTTP: {0}")]
    Http(#[source] std::io::Error),
}

/// Run until SIGTERM/SIGINT (or `shutdown` is cancelled): stop taking deliveries, let the
/// controller finish in-flight reconciles, then return.
pub async fn serve(config: ServeConfig, shutdown: CancellationToken) -> Result<(), ServeError> {
    let client = Client::try_default().await?;
    // kube's `Store::wait_until_ready` wakes only one waiter, so one task waits and everyone
    // else watches this flag.
    let (ready_tx, ready) = tokio::sync::watch::channel(false);
    let metrics = Arc::new(Metrics::new());
    let github = match &config.github {
        Some(github) => Some(Arc::new(GitHub::new(github.clone(), metrics.clone())?)),
        None => None,
    };
    let reporter = github
        .as_ref()
        .map(|github| Reporter::new(github.clone(), client.clone(), metrics.clone()));

    let (templates, writer) = reflector::store::<PreviewTemplate>();
    let template_watch = reflector(
        writer,
        watcher(
            scoped(&client, config.namespace.as_deref()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects()
    .for_each(|event| async move {
        if let Err(e) = event {
            tracing::warn!(error = %e, "template watch error; retrying");
        }
    });
    tokio::spawn(template_watch);
    {
        let templates = templates.clone();

        tokio::spawn(async move {
            if templates.wait_until_ready().await.is_ok() {
                let _ = ready_tx.send(true);
                tracing::info!("template cache synced");
            }
        });
    }

    let intake = Arc::new(Intake::new(client.clone()));
    if let Some(github) = &github {
        let resync = Resync {
            github: github.clone(),
            client: client.clone(),
            templates: templates.clone(),
            ready: ready.clone(),
            intake: intake.clone(),
            metrics: metrics.clone(),
            interval: config.resync_interval,
        };
        tokio::spawn(resync.run(shutdown.clone()));
    }
    let receiver = Arc::new(Receiver::new(
        config.secrets.clone(),
        templates,
        ready.clone(),
        intake,
    ));
    let app = receive::router(receiver)
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
        ));
    let admin = admin_router(ready, metrics.clone());

    let ctx = Arc::new(Context::new(
        client,
        config.namespace.clone(),
        config.instance.clone(),
        config.settings.clone(),
        reporter,
        metrics.clone(),
    ));
    let controller_shutdown = shutdown.clone();
    let controller = tokio::spawn(reconcile::run(ctx, async move {
        controller_shutdown.cancelled().await
    }));

    let listener = bind(config.listen).await?;
    let admin_listener = bind(config.admin_listen).await?;
    tracing::info!(listen = %config.listen, admin = %config.admin_listen, "prenv serving");
    let stop = shutdown.clone();
    let admin_server = tokio::spawn(async move {
        axum::serve(admin_listener, admin)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
    });
    let stop = shutdown.clone();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    shutdown.cancel();
    let _ = controller.await;
    let _ = admin_server.await;
    served.map_err(ServeError::Http)
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

fn admin_router(ready: Ready, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
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
