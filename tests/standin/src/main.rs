//! `github-standin`: the GitHub stand-in as a process, for the demo and scripts.
//! Prints `listening on <url>` once ready; logs to stderr; stops on SIGTERM/SIGINT.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use github_standin::{AppConfig, Config, StandIn};

#[derive(Parser, Debug)]
#[command(
    name = "github-standin",
    about = "A GitHub stand-in: REST API + signed webhooks over plain HTTP"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Base URL to advertise instead of the bound address.
    #[arg(long)]
    public_url: Option<String>,
    /// TOKEN=LOGIN: a token acting as that user (repeatable).
    #[arg(long = "token", value_name = "TOKEN=LOGIN")]
    tokens: Vec<String>,
    /// owner/name: a repository to create (repeatable).
    #[arg(long = "repo", value_name = "OWNER/NAME")]
    repos: Vec<String>,
    /// Login to make an Organization (repeatable).
    #[arg(long = "org", value_name = "LOGIN")]
    orgs: Vec<String>,
    /// Webhook URL to deliver every event to.
    #[arg(long)]
    hook: Option<String>,
    /// Secret for --hook (empty: unsigned, as GitHub).
    #[arg(long, default_value = "")]
    hook_secret: String,
    /// GitHub App id whose JWTs to accept.
    #[arg(long, requires = "app_public_key")]
    app_id: Option<u64>,
    /// PEM file with the App's public key (or its private key).
    #[arg(long)]
    app_public_key: Option<PathBuf>,
    /// GitHub App slug (installation tokens act as `<slug>[bot]`).
    #[arg(long, default_value = "prenv-standin")]
    app_slug: String,
    /// Installation token lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    installation_token_ttl: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let mut cfg = Config {
        listen: args.listen,
        public_url: args.public_url.clone(),
        installation_token_ttl: Duration::from_secs(args.installation_token_ttl),
        ..Config::default()
    };
    if let (Some(id), Some(path)) = (args.app_id, &args.app_public_key) {
        let pem =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        cfg.app = Some(AppConfig::new(id, &pem).with_slug(&args.app_slug));
    }
    let standin = StandIn::start(cfg).await?;
    for org in &args.orgs {
        standin.add_org(org);
    }
    for repo in &args.repos {
        standin
            .try_add_repo(repo)
            .with_context(|| format!("--repo {repo}"))?;
    }
    for t in &args.tokens {
        let (token, login) = t
            .split_once('=')
            .with_context(|| format!("--token {t:?} is not TOKEN=LOGIN"))?;
        standin.add_token(token, login);
    }
    if let Some(hook) = &args.hook {
        standin.add_hook(hook, &args.hook_secret);
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", standin.url())?;
        out.flush()?;
    }
    shutdown_signal().await;
    tracing::info!("stopping");
    standin.stop();
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
