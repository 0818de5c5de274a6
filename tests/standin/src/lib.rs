#![recursion_limit = "256"]
//! A GitHub stand-in for prenv's tests and demo.
//!
//! It serves GitHub's REST API (the part prenv uses) over plain HTTP with GitHub-shaped
//! answers, keeps an in-memory GitHub (repositories, pull requests, comments, deployments,
//! statuses, App installations), and delivers signed webhooks the way GitHub does. Tests drive
//! it in-process through [`StandIn`]; scripts drive it through the `/_standin/` control API
//! of the `github-standin` binary.
//!
//! Modules: `state` (the in-memory GitHub), `shapes` (GitHub's JSON), `api` (REST
//! routes), `server` (auth, rate limits, ETags, faults, records), `app_auth` (App JWTs and
//! installation tokens), `hooks` (deliveries), `faults`, `control` (`/_standin/`), `model`
//! (the public records).

mod api;
mod app_auth;
mod control;
mod faults;
mod hooks;
mod model;
mod server;
mod shapes;
mod state;
pub mod test_keys;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use http::Method;
pub use model::{
    AuthKind, Comment, CommitStatus, Delivered, Delivery, Deployment, DeploymentStatus, Fault,
    FaultKind, NewPr, Reaction, RecordedRequest,
};

pub use hooks::{signature_256, signature_sha1};

use state::{State, UserKind};

/// How to start a [`StandIn`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen; default `127.0.0.1:0` (a free port).
    pub listen: SocketAddr,
    /// The base URL to advertise (in [`StandIn::url`] and every URL in answers and
    /// deliveries) instead of the bound address, e.g. when prenv reaches it by another name.
    pub public_url: Option<String>,
    /// A GitHub App whose JWTs the stand-in accepts.
    pub app: Option<AppConfig>,
    /// Lifetime of installation tokens; default 1 h (GitHub's).
    pub installation_token_ttl: Duration,
    /// Primary rate limit per identity and hour; default 5000 (60 when anonymous).
    pub rate_limit: u64,
    /// How long a hook may take to answer a delivery; default 10 s (GitHub's).
    pub hook_timeout: Duration,
    /// Deliver `issue_comment` created/edited/deleted when a comment is written through the
    /// REST API (as GitHub does, so prenv sees its own comments); sent in the background.
    /// Default true.
    pub api_comment_deliveries: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_url: None,
            app: None,
            installation_token_ttl: Duration::from_secs(3600),
            rate_limit: 5000,
            hook_timeout: Duration::from_secs(10),
            api_comment_deliveries: true,
        }
    }
}

impl Config {
    pub fn with_app(mut self, app: AppConfig) -> Self {
        self.app = Some(app);
        self
    }
    pub fn with_installation_token_ttl(mut self, ttl: Duration) -> Self {
        self.installation_token_ttl = ttl;
        self
    }
    pub fn with_listen(mut self, listen: SocketAddr) -> Self {
        self.listen = listen;
        self
    }
}

/// A GitHub App the stand-in knows: its id and its RSA public key (a private-key PEM is
/// accepted too; the public half is derived).
#[derive(Debug, Clone)]
pub struct AppConfig {
    pub id: u64,
    pub slug: String,
    pub name: String,
    /// Login of the App's owner (created as an Organization).
    pub owner: String,
    pub public_key_pem: String,
}

impl AppConfig {
    pub fn new(id: u64, public_key_pem: &str) -> Self {
        AppConfig {
            id,
            slug: "prenv-standin".to_string(),
            name: "prenv (stand-in)".to_string(),
            owner: "prenv-dev".to_string(),
            public_key_pem: public_key_pem.to_string(),
        }
    }
    pub fn with_slug(mut self, slug: &str) -> Self {
        self.slug = slug.to_string();
        self
    }
    /// The App's client id (accepted as JWT `iss` too, as GitHub does).
    pub fn client_id(&self) -> String {
        format!("Iv1.{:016x}", self.id.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }
    /// The login of the App's installation-token identity.
    pub fn bot_login(&self) -> String {
        format!("{}[bot]", self.slug)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("unknown repository {0}")]
    UnknownRepo(String),
    #[error("{repo} has no pull request #{number}")]
    UnknownPr { repo: String, number: u64 },
    #[error("unknown delivery {0}")]
    UnknownDelivery(String),
    #[error("{0}")]
    Invalid(String),
    #[error("GitHub App key: {0}")]
    AppKey(String),
}

pub(crate) struct Shared {
    state: Mutex<State>,
    pub(crate) cfg: Config,
    /// API base URL, ending in `/`.
    pub(crate) api_url: String,
    /// Web base URL (html_url), ending in `/`.
    pub(crate) web_url: String,
    pub(crate) addr: SocketAddr,
    pub(crate) app_key: Option<jsonwebtoken::DecodingKey>,
    pub(crate) http: reqwest::Client,
    pub(crate) hookshot: String,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn ctx<'a>(&'a self, st: &'a State) -> shapes::Ctx<'a> {
        shapes::Ctx {
            st,
            api: &self.api_url,
            web: &self.web_url,
            app: self.cfg.app.as_ref(),
        }
    }
}

struct Guard {
    shutdown: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let tx = self
            .shutdown
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(tx) = tx {
            let _ = tx.send(());
        }
    }
}

/// A running GitHub stand-in. Cheap to clone; the server stops when the last clone drops.
#[derive(Clone)]
pub struct StandIn {
    shared: Arc<Shared>,
    guard: Arc<Guard>,
}

impl std::fmt::Debug for StandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandIn")
            .field("url", &self.shared.api_url)
            .finish()
    }
}

impl StandIn {
    /// Binds `cfg.listen` and serves until the last clone is dropped (or [`StandIn::stop`]).
    pub async fn start(cfg: Config) -> Result<StandIn, Error> {
        let app_key = match &cfg.app {
            Some(app) => Some(app_auth::decoding_key(&app.public_key_pem)?),
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: cfg.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: cfg.listen,
            source,
        })?;
        let host = if addr.ip().is_unspecified() {
            SocketAddr::new([127, 0, 0, 1].into(), addr.port()).to_string()
        } else {
            addr.to_string()
        };
        let api_url = match &cfg.public_url {
            Some(u) if u.ends_with('/') => u.clone(),
            Some(u) => format!("{u}/"),
            None => format!("http://{host}/"),
        };
        let web_url = match api_url.split_once("://") {
            Some((scheme, rest)) => {
                let authority = rest.split('/').next().unwrap_or(rest);
                format!("{scheme}://{authority}/")
            }
            None => api_url.clone(),
        };
        // A fresh connection per delivery, as GitHub's hookshot makes: a pooled one could
        // outlive the replica (pod) it reached.
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(cfg.hook_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Invalid(format!("HTTP client: {e}")))?;
        let mut st = State::new();
        if let Some(app) = &cfg.app {
            st.ensure_user(&app.owner, UserKind::Organization);
            st.ensure_user(&app.bot_login(), UserKind::Bot);
        }
        let hookshot = format!("GitHub-Hookshot/{}", &state::random_sha()[..7]);
        let shared = Arc::new(Shared {
            state: Mutex::new(st),
            cfg,
            api_url,
            web_url,
            addr,
            app_key,
            http,
            hookshot,
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let router = server::router(shared.clone());
        tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                let _ = rx.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "github stand-in server failed");
            }
        });
        tracing::info!(url = %shared.api_url, "github stand-in listening");
        Ok(StandIn {
            shared,
            guard: Arc::new(Guard {
                shutdown: Mutex::new(Some(tx)),
            }),
        })
    }

    /// A handle on the same stand-in that does not keep the server alive (for its own
    /// control routes).
    pub(crate) fn weak(shared: Arc<Shared>) -> StandIn {
        StandIn {
            shared,
            guard: Arc::new(Guard {
                shutdown: Mutex::new(None),
            }),
        }
    }

    /// Stops serving (new connections are refused; clones keep their state readable).
    pub fn stop(&self) {
        let tx = self
            .guard
            .shutdown
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(tx) = tx {
            let _ = tx.send(());
        }
    }

    /// The API base URL, ending in `/` (`http://127.0.0.1:41234/`): octocrab's `base_uri`.
    pub fn url(&self) -> String {
        self.shared.api_url.clone()
    }

    /// The bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// A personal-access-style token acting as `login` (created as a user if new).
    pub fn add_token(&self, token: &str, login: &str) {
        let mut st = self.shared.lock();
        st.ensure_user(login, UserKind::User);
        st.tokens.insert(token.to_string(), login.to_string());
    }

    /// Creates repository `owner/name` (and its owner as a user) with a `main` branch.
    /// With an App configured, the owner gets an installation.
    pub fn add_repo(&self, full_name: &str) {
        if let Err(e) = self.try_add_repo(full_name) {
            tracing::warn!(error = %e, "add_repo");
        }
    }

    /// [`StandIn::add_repo`] that reports a malformed name.
    pub fn try_add_repo(&self, full_name: &str) -> Result<(), Error> {
        let mut st = self.shared.lock();
        let owner = st.add_repo(full_name, false)?.owner.clone();
        if self.shared.cfg.app.is_some() {
            st.ensure_installation(&owner);
        }
        Ok(())
    }

    /// Makes a repository private (`"private": true`; anonymous requests get 404) or public.
    pub fn set_private(&self, full_name: &str, private: bool) {
        if let Ok(repo) = self.shared.lock().repo_mut(full_name) {
            repo.private = private;
        }
    }

    /// Makes `login` an Organization (webhooks of its repositories then carry
    /// `organization`, and its installation targets an Organization).
    pub fn add_org(&self, login: &str) {
        let mut st = self.shared.lock();
        st.ensure_user(login, UserKind::Organization).kind = UserKind::Organization;
    }

    /// Gives `login` a role (admin|maintain|write|triage|read|none) on the repository.
    pub fn set_permission(&self, full_name: &str, login: &str, perm: &str) {
        let mut st = self.shared.lock();
        st.ensure_user(login, UserKind::User);
        if let Ok(repo) = st.repo_mut(full_name) {
            repo.permissions
                .insert(state::key(login), perm.to_ascii_lowercase());
        }
    }

    /// Adds a webhook receiving every event of every repository; returns its hook id.
    /// An empty secret sends no signature headers (as GitHub does).
    pub fn add_hook(&self, url: &str, secret: &str) -> u64 {
        let mut st = self.shared.lock();
        let id = st.next_id("hook");
        st.hooks.push(state::HookRec {
            id,
            url: url.to_string(),
            secret: secret.to_string(),
            created_at: state::now(),
        });
        id
    }

    /// Changes a hook's secret (for rotation tests).
    pub fn set_hook_secret(&self, hook_id: u64, secret: &str) {
        let mut st = self.shared.lock();
        if let Some(h) = st.hooks.iter_mut().find(|h| h.id == hook_id) {
            h.secret = secret.to_string();
        }
    }

    /// Removes every hook.
    pub fn clear_hooks(&self) {
        self.shared.lock().hooks.clear();
    }

    // ---- pull request events ----

    /// Opens a PR (number = next of the repository) and delivers `pull_request.opened`.
    pub async fn open_pr(&self, full_name: &str, pr: NewPr) -> Result<Delivered, Error> {
        let change = self.shared.lock().open_pr(full_name, pr)?;
        Ok(self.shared.deliver_pr(change, None).await)
    }

    /// Pushes a new random head commit: `pull_request.synchronize`.
    pub async fn push(&self, full_name: &str, number: u64) -> Result<Delivered, Error> {
        self.push_sha(full_name, number, &state::random_sha()).await
    }

    /// Pushes head commit `sha` (40 hex): `pull_request.synchronize`.
    pub async fn push_sha(
        &self,
        full_name: &str,
        number: u64,
        sha: &str,
    ) -> Result<Delivered, Error> {
        let change = self.shared.lock().push(full_name, number, sha)?;
        Ok(self.shared.deliver_pr(change, None).await)
    }

    /// Closes (or merges) a PR: `pull_request.closed` with `merged` set accordingly.
    pub async fn close(
        &self,
        full_name: &str,
        number: u64,
        merged: bool,
    ) -> Result<Delivered, Error> {
        let change = self.shared.lock().close(full_name, number, merged)?;
        Ok(self.shared.deliver_pr(change, None).await)
    }

    /// `pull_request.reopened`.
    pub async fn reopen(&self, full_name: &str, number: u64) -> Result<Delivered, Error> {
        let change = self.shared.lock().reopen(full_name, number)?;
        Ok(self.shared.deliver_pr(change, None).await)
    }

    /// `pull_request.labeled` by `sender`.
    pub async fn add_label(
        &self,
        full_name: &str,
        number: u64,
        label: &str,
        sender: &str,
    ) -> Result<Delivered, Error> {
        let change = self
            .shared
            .lock()
            .add_label(full_name, number, label, sender)?;
        Ok(self.shared.deliver_pr(change, Some(label)).await)
    }

    /// `pull_request.unlabeled` by `sender`.
    pub async fn remove_label(
        &self,
        full_name: &str,
        number: u64,
        label: &str,
        sender: &str,
    ) -> Result<Delivered, Error> {
        let change = self
            .shared
            .lock()
            .remove_label(full_name, number, label, sender)?;
        Ok(self.shared.deliver_pr(change, Some(label)).await)
    }

    /// `pull_request.converted_to_draft` / `ready_for_review`.
    pub async fn set_draft(
        &self,
        full_name: &str,
        number: u64,
        draft: bool,
    ) -> Result<Delivered, Error> {
        let change = self.shared.lock().set_draft(full_name, number, draft)?;
        Ok(self.shared.deliver_pr(change, None).await)
    }

    /// `pull_request.edited` with `changes.title.from`.
    pub async fn edit_title(
        &self,
        full_name: &str,
        number: u64,
        title: &str,
    ) -> Result<Delivered, Error> {
        let change = self.shared.lock().edit_title(full_name, number, title)?;
        Ok(self.shared.deliver_pr(change, None).await)
    }

    /// The fork of a fork PR is deleted: `head.repo` becomes `null` (no delivery).
    pub fn delete_fork(&self, full_name: &str, number: u64) -> Result<(), Error> {
        self.shared.lock().delete_fork(full_name, number)
    }

    /// `login` comments on the PR: `issue_comment.created`.
    pub async fn comment(
        &self,
        full_name: &str,
        number: u64,
        login: &str,
        body: &str,
    ) -> Result<Delivered, Error> {
        let (id, sender) = {
            let mut st = self.shared.lock();
            let id = st.add_comment(full_name, number, login, body, false)?;
            (id, login.to_string())
        };
        let out = {
            let st = self.shared.lock();
            hooks::issue_comment_event(&self.shared.ctx(&st), id, "created", None, &sender)
        };
        match out {
            Some(out) => Ok(self.shared.deliver(out).await),
            None => Err(Error::Invalid(format!("comment {id} vanished"))),
        }
    }

    /// Delivers `ping` to every hook (the repository is the first one added, if any).
    pub async fn ping(&self) -> Result<Delivered, Error> {
        Ok(self.shared.deliver_ping().await)
    }

    /// Sends delivery `delivery_id` again to the same hook: same body, same
    /// `X-GitHub-Delivery`, signed with the hook's current secret.
    pub async fn redeliver(&self, delivery_id: &str) -> Result<Delivered, Error> {
        self.shared.redeliver(delivery_id).await
    }

    // ---- records ----

    /// Every delivery attempt, in order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared.lock().deliveries.clone()
    }

    /// Every API request received (not control-API ones), in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Forgets the recorded requests and deliveries.
    pub fn clear_records(&self) {
        let mut st = self.shared.lock();
        st.requests.clear();
        st.deliveries.clear();
    }

    /// The live comments of a PR, oldest first.
    pub fn comments(&self, full_name: &str, number: u64) -> Vec<Comment> {
        let st = self.shared.lock();
        st.live_comments(full_name, number)
            .into_iter()
            .map(|c| Comment {
                id: c.id,
                number: c.number,
                login: c.login.clone(),
                body: c.body.clone(),
                author_association: c.author_association.clone(),
                created_at: c.created_at,
                updated_at: c.updated_at,
            })
            .collect()
    }

    /// The reactions on comment `id`, oldest first.
    pub fn reactions(&self, id: u64) -> Vec<Reaction> {
        let st = self.shared.lock();
        st.reactions
            .iter()
            .filter(|r| r.comment_id == id)
            .map(|r| Reaction {
                login: r.login.clone(),
                content: r.content.clone(),
            })
            .collect()
    }

    /// The deployments of a repository, oldest first.
    pub fn deployments(&self, full_name: &str) -> Vec<Deployment> {
        let st = self.shared.lock();
        let k = state::key(full_name);
        st.deployments
            .values()
            .filter(|(r, _)| *r == k)
            .map(|(_, d)| d.clone())
            .collect()
    }

    /// The statuses of a deployment, oldest first.
    pub fn deployment_statuses(&self, full_name: &str, id: u64) -> Vec<DeploymentStatus> {
        let st = self.shared.lock();
        let k = state::key(full_name);
        st.deployment_statuses
            .values()
            .filter(|(r, s)| *r == k && s.deployment_id == id)
            .map(|(_, s)| s.clone())
            .collect()
    }

    /// The commit statuses of a sha, oldest first.
    pub fn statuses(&self, full_name: &str, sha: &str) -> Vec<CommitStatus> {
        let st = self.shared.lock();
        let k = state::key(full_name);
        st.commit_statuses
            .iter()
            .filter(|(r, s)| *r == k && s.sha.eq_ignore_ascii_case(sha))
            .map(|(_, s)| s.clone())
            .collect()
    }

    /// Plants a comment by `login` without a delivery (e.g. a forged marker); returns its id.
    /// Returns 0 when the PR does not exist.
    pub fn add_comment_as(&self, full_name: &str, number: u64, login: &str, body: &str) -> u64 {
        let mut st = self.shared.lock();
        let bot = st.user(login).is_some_and(|u| u.kind == UserKind::Bot);
        st.add_comment(full_name, number, login, body, bot)
            .unwrap_or(0)
    }

    /// Deletes a comment (no delivery); later API calls on it answer 404.
    pub fn delete_comment(&self, full_name: &str, id: u64) -> bool {
        self.shared.lock().delete_comment(full_name, id)
    }

    /// Answers matching API requests with a fault, `fault.times` times.
    pub fn inject_fault(&self, fault: Fault) {
        if fault.times > 0 {
            self.shared.lock().faults.push(fault);
        }
    }

    /// Removes every pending fault.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// The PR as `GET /repos/{o}/{r}/pulls/{n}` answers it (`Value::Null` if unknown).
    pub fn pr_json(&self, full_name: &str, number: u64) -> serde_json::Value {
        let st = self.shared.lock();
        match st.pr(full_name, number) {
            Ok(pr) => self
                .shared
                .ctx(&st)
                .pr(pr, shapes::PrFlavor::Full, shapes::RepoFlavor::Api),
            Err(_) => serde_json::Value::Null,
        }
    }

    /// The PR's current head sha.
    pub fn head_sha(&self, full_name: &str, number: u64) -> Option<String> {
        let st = self.shared.lock();
        st.pr(full_name, number).ok().map(|p| p.head_sha.clone())
    }

    /// The App installation id of an account (repository owner), when an App is configured.
    pub fn installation_id(&self, owner: &str) -> Option<u64> {
        self.shared.cfg.app.as_ref()?;
        let mut st = self.shared.lock();
        Some(st.ensure_installation(owner).id)
    }

    /// Makes every installation token issued so far expired (their next use answers 401).
    pub fn expire_installation_tokens(&self) {
        let mut st = self.shared.lock();
        let past = std::time::SystemTime::now() - Duration::from_secs(1);
        for t in st.inst_tokens.values_mut() {
            t.expires = past;
        }
    }
}
