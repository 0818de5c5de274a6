//! Command line: `prenv serve`, `prenv crds`, `prenv render`.

use crate::receive::signature::Secrets;
use crate::reconcile::Settings;
use crate::serve::ServeConfig;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "prenv",
    version,
    about = "A preview environment for every GitHub pull request"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format.
    #[arg(long, env = "PRENV_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator: webhook receiver, controller, admin endpoints.
    Serve(ServeArgs),
    /// Print every CRD as multi-document YAML.
    Crds,
    /// Print what a template renders to for a webhook payload, without a cluster.
    Render(RenderArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address for `POST /webhooks/github` and the human-facing pages.
    #[arg(long, env = "PRENV_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Address for `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "PRENV_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    pub admin_listen: SocketAddr,
    /// Webhook secrets, comma-separated; any one may match (for rotation).
    #[arg(long, env = "PRENV_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// File holding webhook secrets, one per line or comma-separated.
    #[arg(long, env = "PRENV_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Accept unsigned deliveries. Only for local experiments: anyone who can reach the
    /// receiver can then create environments.
    #[arg(long)]
    pub insecure_no_webhook_secret: bool,
    /// Only serve PreviewTemplates and PreviewEnvironments in this namespace (default: all
    /// namespaces).
    #[arg(long, env = "PRENV_NAMESPACE")]
    pub namespace: Option<String>,
    /// Name of this replica in Events (defaults to the pod or host name).
    #[arg(long, env = "POD_NAME")]
    pub instance: Option<String>,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// A PreviewTemplate manifest (YAML).
    #[arg(long)]
    pub template: PathBuf,
    /// A GitHub `pull_request` webhook payload (JSON).
    #[arg(long)]
    pub event: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading --webhook-secret-file {path}: {source}")]
    SecretFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no webhook secret: set --webhook-secret / PRENV_WEBHOOK_SECRET or --webhook-secret-file (or, for a local experiment only, --insecure-no-webhook-secret)"
    )]
    NoSecret,
}

impl ServeArgs {
    pub fn into_config(self) -> Result<ServeConfig, ConfigError> {
        let mut sources = Vec::new();
        if let Some(list) = &self.webhook_secret {
            sources.push(list.clone());
        }
        if let Some(path) = &self.webhook_secret_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
                path: path.display().to_string(),
                source,
            })?;
            sources.extend(text.lines().map(str::to_string));
        }
        let secrets = Secrets::from_list(sources);
        if secrets.is_empty() {
            if !self.insecure_no_webhook_secret {
                return Err(ConfigError::NoSecret);
            }
            tracing::warn!(
                "!!! --insecure-no-webhook-secret: deliveries are NOT authenticated; anyone who can reach this port can deploy !!!"
            );
        }
        let instance = self
            .instance
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("prenv-{}", std::process::id()));
        Ok(ServeConfig {
            listen: self.listen,
            admin_listen: self.admin_listen,
            secrets,
            namespace: self.namespace,
            instance,
            settings: Settings::default(),
        })
    }
}

/// Set up logging: level from `RUST_LOG` (default `info`), text or JSON lines on stderr.
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
