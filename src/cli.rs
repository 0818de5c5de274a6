//! Command line: `prenv serve`, `prenv crds`, `prenv render`.

use crate::github::{Auth, GitHubConfig};
use crate::receive::signature::Secrets;
use crate::reconcile::Settings;
use crate::reconcile::fence::{ObjectRules, Platform, PodSecurity, ReservedNamespaces, quantity};
use crate::serve::ServeConfig;
use crate::serving::RepositoryPolicy;
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
    Serve(Box<ServeArgs>),
    /// Print every CRD as multi-document YAML.
    Crds,
    /// Print what a template renders to for a webhook payload, without a cluster.
    Render(RenderArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address for `POST /webhooks/github` (the one to publish to GitHub).
    #[arg(long, env = "PRENV_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Address for `/metrics`, `/healthz`, `/readyz` and the status page (`/`): keep it private.
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
    /// GitHub API root (GitHub Enterprise Server: `https://HOST/api/v3`).
    #[arg(
        long,
        env = "PRENV_GITHUB_API_URL",
        default_value = "https://api.github.com"
    )]
    pub github_api_url: String,
    /// GitHub token (a PAT or fine-grained token) for comments, deployments and statuses.
    /// Ignored when a GitHub App is configured.
    #[arg(long, env = "GITHUB_TOKEN", hide_env_values = true)]
    pub github_token: Option<String>,
    /// GitHub App id; with --github-app-key-file prenv acts through the App's installations.
    #[arg(long, env = "PRENV_GITHUB_APP_ID", requires = "github_app_key_file")]
    pub github_app_id: Option<u64>,
    /// The GitHub App's private key (PEM).
    #[arg(long, env = "PRENV_GITHUB_APP_KEY_FILE", requires = "github_app_id")]
    pub github_app_key_file: Option<PathBuf>,
    /// Least time between two writes to GitHub per installation (`1s`, `500ms`).
    #[arg(long, env = "PRENV_GITHUB_WRITE_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub github_write_interval: std::time::Duration,
    /// How long a webhook request (headers and body) may take before it is cut off.
    #[arg(long, env = "PRENV_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: std::time::Duration,
    /// How often the open pull requests of every templated repository are listed from GitHub
    /// to repair what deliveries missed (`30s`, `5m`, `1h`; `0s` turns it off).
    #[arg(long, env = "PRENV_RESYNC_INTERVAL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub resync_interval: std::time::Duration,
    /// How often preview namespaces whose PreviewEnvironment is gone are looked for and
    /// deleted (`30s`, `10m`).
    #[arg(long, env = "PRENV_ORPHAN_SWEEP_INTERVAL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub orphan_sweep_interval: std::time::Duration,
    /// ClusterRole bound to each preview's deployer ServiceAccount; rendered objects are
    /// applied with its permissions only.
    #[arg(
        long,
        env = "PRENV_DEPLOYER_CLUSTER_ROLE",
        default_value = "prenv-deployer"
    )]
    pub deployer_cluster_role: String,
    /// Namespaces (comma-separated) whose pods may reach previews: the ingress controller's.
    #[arg(
        long,
        env = "PRENV_INGRESS_NAMESPACES",
        default_value = "ingress-nginx",
        value_delimiter = ','
    )]
    pub ingress_namespaces: Vec<String>,
    /// The loosest pod security level a template may choose (restricted, baseline, privileged).
    #[arg(long, env = "PRENV_POD_SECURITY_FLOOR", default_value = "baseline", value_parser = parse_pod_security)]
    pub pod_security_floor: PodSecurity,
    /// The most a template's quota may grant, as `resource=quantity` pairs (comma-separated);
    /// these resources are always limited.
    #[arg(
        long,
        env = "PRENV_MAX_QUOTA",
        default_value = "requests.cpu=8,requests.memory=16Gi,limits.cpu=16,limits.memory=32Gi,pods=50",
        value_delimiter = ',',
        value_parser = parse_pair
    )]
    pub max_quota: Vec<(String, String)>,
    /// Let templates turn the preview's NetworkPolicy off.
    #[arg(long, env = "PRENV_ALLOW_NETWORK_POLICY_OPT_OUT")]
    pub allow_network_policy_opt_out: bool,
    /// Let templates open egress to further CIDRs (cloud metadata addresses stay blocked).
    #[arg(long, env = "PRENV_ALLOW_EGRESS")]
    pub allow_egress: bool,
    /// Further kinds whose objects may hold pod specs (`group/Kind`, comma-separated; e.g.
    /// `argoproj.io/Rollout`): their controllers run pods, which prenv cannot check.
    #[arg(long, env = "PRENV_ALLOWED_POD_KINDS", value_delimiter = ',')]
    pub allowed_pod_kinds: Vec<String>,
    /// Let templates create Services that reach outside the namespace (NodePort,
    /// LoadBalancer, ExternalName, externalIPs).
    #[arg(long, env = "PRENV_ALLOW_EXTERNAL_SERVICES")]
    pub allow_external_services: bool,
    /// Namespaces no preview may be, besides `kube-*`, `default`, prenv's own and each
    /// template's own (names or patterns with `*`, comma-separated; e.g. `platform-*,monitoring`).
    #[arg(long, env = "PRENV_RESERVED_NAMESPACES", value_delimiter = ',')]
    pub reserved_namespaces: Vec<String>,
    /// Which namespaces' templates may serve which repositories (`namespace=owner/pattern`,
    /// comma-separated; `*` matches within a name: `team-a=acme/shop*,team-b=acme/*`). Unset:
    /// any template serves its repository; set: a namespace without a matching entry serves none.
    #[arg(long, env = "PRENV_REPOSITORY_NAMESPACES", value_delimiter = ',')]
    pub repository_namespaces: Vec<String>,
    /// Only serve PreviewTemplates and PreviewEnvironments in this namespace (default: all
    /// namespaces).
    #[arg(long, env = "PRENV_NAMESPACE")]
    pub namespace: Option<String>,
    /// Name of the Lease used for leader election.
    #[arg(long, env = "PRENV_LEASE_NAME", default_value = "prenv-leader")]
    pub lease_name: String,
    /// Namespace of that Lease (default: --namespace, else `default`; the chart sets its own).
    #[arg(long, env = "PRENV_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
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
    #[error("reading --github-app-key-file {path}: {source}")]
    AppKey {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no webhook secret: set --webhook-secret / PRENV_WEBHOOK_SECRET or --webhook-secret-file (or, for a local experiment only, --insecure-no-webhook-secret)"
    )]
    NoSecret,
    #[error("--reserved-namespaces: {0}")]
    ReservedNamespaces(String),
    #[error("--repository-namespaces: {0}")]
    RepositoryNamespaces(String),
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
        let auth = match (
            self.github_token,
            self.github_app_id,
            &self.github_app_key_file,
        ) {
            (_, Some(id), Some(path)) => Some(Auth::App {
                id,
                private_key_pem: std::fs::read(path).map_err(|source| ConfigError::AppKey {
                    path: path.display().to_string(),
                    source,
                })?,
            }),
            (Some(token), _, _) if !token.trim().is_empty() => {
                Some(Auth::Token(token.trim().to_string()))
            }
            _ => None,
        };
        let github = auth.map(|auth| {
            let mut config = GitHubConfig::new(self.github_api_url.trim_end_matches('/'), auth);
            config.write_interval = self.github_write_interval;
            config
        });
        if github.is_none() {
            tracing::warn!(
                "no GitHub credentials: environments work, but nothing is reported on pull requests"
            );
        }
        // prenv's own namespace: where its Lease lives, and where its pod runs.
        let own = [
            self.lease_namespace.clone(),
            std::env::var("POD_NAMESPACE").ok(),
        ];
        let reserved_namespaces = ReservedNamespaces::new(
            trimmed(self.reserved_namespaces)
                .into_iter()
                .chain(own.into_iter().flatten().filter(|n| !n.is_empty())),
        )
        .map_err(ConfigError::ReservedNamespaces)?;
        let platform = Platform {
            deployer_cluster_role: self.deployer_cluster_role,
            ingress_namespaces: trimmed(self.ingress_namespaces),
            pod_security_floor: self.pod_security_floor,
            max_quota: self.max_quota.into_iter().collect(),
            allow_network_policy_opt_out: self.allow_network_policy_opt_out,
            allow_egress: self.allow_egress,
            objects: ObjectRules {
                allowed_pod_kinds: trimmed(self.allowed_pod_kinds),
                allow_external_services: self.allow_external_services,
            },
            reserved_namespaces,
        };
        let repositories = RepositoryPolicy::parse(&self.repository_namespaces)
            .map_err(ConfigError::RepositoryNamespaces)?;
        Ok(ServeConfig {
            repositories,
            platform,
            listen: self.listen,
            github,
            resync_interval: self.resync_interval,
            orphan_sweep_interval: self.orphan_sweep_interval,
            request_timeout: self.request_timeout,
            admin_listen: self.admin_listen,
            secrets,
            namespace: self.namespace,
            instance,
            lease_name: self.lease_name,
            lease_namespace: self.lease_namespace,
            settings: Settings::default(),
        })
    }
}

/// The items of a comma-separated flag, trimmed, empty ones dropped (`a, ,b` is `[a, b]`).
fn trimmed(items: Vec<String>) -> Vec<String> {
    items
        .into_iter()
        .map(|i| i.trim().to_string())
        .filter(|i| !i.is_empty())
        .collect()
}

fn parse_pod_security(s: &str) -> Result<PodSecurity, String> {
    s.parse()
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not resource=quantity"))?;
    let (k, v) = (k.trim(), v.trim());
    if quantity(v).is_none() {
        return Err(format!("{v:?} is not a quantity"));
    }
    Ok((k.to_string(), v.to_string()))
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
