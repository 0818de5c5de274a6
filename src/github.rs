//! GitHub client: octocrab with a token or as a GitHub App (installation tokens per repository
//! owner, which octocrab caches, renews before expiry and renews once more on a 401), and one
//! request path that paces writes per installation and handles rate limits and retries.

use crate::metrics::Metrics;
use backon::BackoffBuilder;
use http::{HeaderMap, Method, StatusCode};
use octocrab::Octocrab;
use octocrab::models::{AppId, InstallationId};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{Mutex, OnceCell};
use tokio::time::Instant;

/// How prenv authenticates to GitHub.
#[derive(Clone)]
pub enum Auth {
    Token(String),
    App { id: u64, private_key_pem: Vec<u8> },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Token(_) => f.write_str("Token(***)"),
            Auth::App { id, .. } => write!(f, "App {{ id: {id}, key: *** }}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GitHubConfig {
    /// API root, e.g. `https://api.github.com` or a GitHub Enterprise Server's `/api/v3`.
    pub api_url: String,
    pub auth: Auth,
    /// Least time between two mutating requests to one installation (GitHub asks for at
    /// least a second; that also keeps content creation under 80 a minute).
    pub write_interval: Duration,
    /// First delay when retrying 5xx answers and transport errors (doubles, with jitter).
    pub retry_base: Duration,
    /// Attempts per request before the failure is reported.
    pub attempts: usize,
}

impl GitHubConfig {
    pub fn new(api_url: impl Into<String>, auth: Auth) -> Self {
        Self {
            api_url: api_url.into(),
            auth,
            write_interval: Duration::from_secs(1),
            retry_base: Duration::from_secs(1),
            attempts: 6,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum GitHubError {
    #[error("GitHub client setup: {0}")]
    Setup(String),
    #[error("GitHub answered {status} to {method} {path}: {message}")]
    Rejected {
        method: Method,
        path: String,
        status: u16,
        message: String,
    },
    #[error("GitHub kept failing {method} {path}: {message}")]
    Unavailable {
        method: Method,
        path: String,
        message: String,
    },
    #[error("GitHub rate limit on {method} {path}; retry after {retry_after:?}")]
    RateLimited {
        method: Method,
        path: String,
        retry_after: Duration,
    },
    #[error("no GitHub App installation for {0}")]
    NoInstallation(String),
}

impl GitHubError {
    /// The HTTP status of a rejection, if that is what this is.
    pub fn status(&self) -> Option<u16> {
        match self {
            GitHubError::Rejected { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Short reason for conditions and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            GitHubError::Setup(_) | GitHubError::NoInstallation(_) => "GitHubNotConfigured",
            GitHubError::Rejected { .. } => "GitHubRejected",
            GitHubError::Unavailable { .. } => "GitHubUnavailable",
            GitHubError::RateLimited { .. } => "GitHubRateLimited",
        }
    }

    /// Whether trying again later can help.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            GitHubError::Unavailable { .. } | GitHubError::RateLimited { .. }
        )
    }
}

/// A GitHub answer: status and JSON body (`Null` when empty).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    /// The `ETag` GitHub sent, for a conditional request next time.
    pub etag: Option<String>,
}

/// Per-installation write gate: one mutating request at a time, spaced by the write interval,
/// and held back while GitHub asked us to wait.
#[derive(Default)]
struct Gate {
    last_write: Option<Instant>,
    paused_until: Option<Instant>,
}

pub struct GitHub {
    config: GitHubConfig,
    /// Token client, or the App (JWT) client.
    root: Arc<Octocrab>,
    identity: OnceCell<String>,
    /// Installation clients per owner. Shared, never cloned: cloning an `Octocrab` copies its
    /// token cache, and the copy's renewals would be lost.
    installations: Mutex<HashMap<String, Arc<Octocrab>>>,
    gates: Mutex<HashMap<String, Arc<Mutex<Gate>>>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for GitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHub")
            .field("config", &self.config)
            .finish()
    }
}

impl GitHub {
    pub fn new(config: GitHubConfig, metrics: Arc<Metrics>) -> Result<Self, GitHubError> {
        let setup = |e: octocrab::Error| GitHubError::Setup(e.to_string());
        let builder = Octocrab::builder()
            .base_uri(config.api_url.as_str())
            .map_err(setup)?
            .set_connect_timeout(Some(Duration::from_secs(10)))
            .set_read_timeout(Some(Duration::from_secs(30)))
            .set_write_timeout(Some(Duration::from_secs(30)));
        let root = match &config.auth {
            Auth::Token(token) => builder.personal_token(token.clone()).build(),
            Auth::App {
                id,
                private_key_pem,
            } => builder
                .app_from_rsa_pem(AppId(*id), private_key_pem)
                .map_err(setup)?
                .build(),
        }
        .map_err(setup)?;
        Ok(Self {
            config,
            root: Arc::new(root),
            identity: OnceCell::new(),
            installations: Mutex::new(HashMap::new()),
            gates: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    pub fn config(&self) -> &GitHubConfig {
        &self.config
    }

    /// The login prenv writes as: the token's user, or `<app slug>[bot]`.
    pub async fn identity(&self) -> Result<String, GitHubError> {
        self.identity
            .get_or_try_init(|| async {
                match &self.config.auth {
                    Auth::Token(_) => {
                        let user = self
                            .send(&self.root, "", Method::GET, "/user", None, None)
                            .await?;
                        login(&user.body, "login")
                    }
                    Auth::App { .. } => {
                        let app = self
                            .send(&self.root, "", Method::GET, "/app", None, None)
                            .await?;
                        login(&app.body, "slug").map(|slug| format!("{slug}[bot]"))
                    }
                }
            })
            .await
            .cloned()
    }

    /// The client acting for `owner`'s repositories.
    async fn client_for(&self, owner: &str, repo: &str) -> Result<Arc<Octocrab>, GitHubError> {
        if let Auth::Token(_) = self.config.auth {
            return Ok(self.root.clone());
        }
        let key = owner.to_ascii_lowercase();
        if let Some(client) = self.installations.lock().await.get(&key) {
            return Ok(client.clone());
        }
        let found = self
            .send(
                &self.root,
                "",
                Method::GET,
                &format!("/repos/{owner}/{repo}/installation"),
                None,
                None,
            )
            .await
            .map_err(|e| match e.status() {
                Some(404) => GitHubError::NoInstallation(format!("{owner}/{repo}")),
                _ => e,
            })?;
        let id = found
            .body
            .get("id")
            .and_then(Value::as_u64)
            .ok_or_else(|| GitHubError::NoInstallation(format!("{owner}/{repo}")))?;
        // octocrab mints the installation token on first use, caches it, renews it shortly
        // before it expires and once more when GitHub answers 401.
        let client = Arc::new(
            self.root
                .installation(InstallationId(id))
                .map_err(|e| GitHubError::Setup(e.to_string()))?,
        );
        self.installations.lock().await.insert(key, client.clone());
        Ok(client)
    }

    async fn gate(&self, owner: &str) -> Arc<Mutex<Gate>> {
        self.gates
            .lock()
            .await
            .entry(owner.to_ascii_lowercase())
            .or_default()
            .clone()
    }

    /// One request to `repository` (`owner/name`), `path` relative to the API root.
    /// Mutating requests are serialized and paced per installation; 5xx answers and transport
    /// errors are retried with jittered exponential backoff; `Retry-After` and
    /// `X-RateLimit-Reset` are honoured (the whole installation waits); other 4xx answers
    /// are returned as [`GitHubError::Rejected`] at once.
    pub async fn request(
        &self,
        repository: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, GitHubError> {
        let (owner, repo) = repository.split_once('/').unwrap_or((repository, ""));
        let client = self.client_for(owner, repo).await?;
        self.send(&client, owner, method, path, body, None).await
    }

    /// A conditional GET: with the `ETag` of an earlier answer GitHub may answer
    /// `304 Not Modified` (which does not count against the rate limit).
    pub async fn get_if_changed(
        &self,
        repository: &str,
        path: &str,
        etag: Option<&str>,
    ) -> Result<Answer, GitHubError> {
        let (owner, repo) = repository.split_once('/').unwrap_or((repository, ""));
        let client = self.client_for(owner, repo).await?;
        self.send(&client, owner, Method::GET, path, None, etag)
            .await
    }

    async fn send(
        &self,
        client: &Octocrab,
        owner: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        etag: Option<&str>,
    ) -> Result<Answer, GitHubError> {
        let mutating = method != Method::GET && method != Method::HEAD;
        let gate = self.gate(owner).await;
        let mut backoff = backon::ExponentialBuilder::default()
            .with_min_delay(self.config.retry_base)
            .with_max_delay(Duration::from_secs(60))
            .with_max_times(self.config.attempts.saturating_sub(1))
            .with_jitter()
            .build();
        let endpoint = endpoint_label(&method, path);
        loop {
            // Writes hold the gate for the whole request: serialized per installation.
            let mut guard = gate.lock().await;
            let now = Instant::now();
            let mut wait_until = guard.paused_until.filter(|t| *t > now);
            if mutating && let Some(last) = guard.last_write {
                let next = last + self.config.write_interval;
                wait_until = Some(wait_until.map_or(next, |w| w.max(next)));
            }
            if let Some(t) = wait_until {
                tokio::time::sleep_until(t).await;
            }
            let result = if mutating {
                let result = execute(client, &method, path, body, etag).await;
                guard.last_write = Some(Instant::now());
                result
            } else {
                // Reads run concurrently; only a pause GitHub asked for holds them back.
                drop(guard);
                let result = execute(client, &method, path, body, etag).await;
                guard = gate.lock().await;
                result
            };
            let outcome = self.judge(result, &method, path, &mut guard, &mut backoff, &endpoint);
            drop(guard);
            match outcome {
                Judged::Done(r) => return r,
                Judged::Retry(delay) => tokio::time::sleep(delay).await,
            }
        }
    }

    /// Classify one attempt: done (success or final failure) or retry after a delay.
    fn judge(
        &self,
        result: Result<(StatusCode, HeaderMap, Value), String>,
        method: &Method,
        path: &str,
        gate: &mut Gate,
        backoff: &mut impl Iterator<Item = Duration>,
        endpoint: &str,
    ) -> Judged {
        let unavailable = |message: String| GitHubError::Unavailable {
            method: method.clone(),
            path: path.to_string(),
            message,
        };
        // A POST creates something (a comment, a deployment): one that failed may still have
        // been carried out, so it is not sent again blindly. The caller's next pass looks for
        // what it meant to create before creating it (marker comment, deployment by head).
        let retry = *method != Method::POST;
        let (status, headers, body) = match result {
            Ok(answer) => answer,
            Err(message) => {
                self.metrics.github_request(endpoint, "transport_error");
                return match backoff.next().filter(|_| retry) {
                    Some(delay) => Judged::Retry(delay),
                    None => Judged::Done(Err(unavailable(message))),
                };
            }
        };
        if let Some(remaining) = header_u64(&headers, "x-ratelimit-remaining") {
            self.metrics.github_rate_limit_remaining(remaining as i64);
        }
        if status.is_success() || status == StatusCode::NOT_MODIFIED {
            let result = if status == StatusCode::NOT_MODIFIED {
                "not_modified"
            } else {
                "success"
            };
            self.metrics.github_request(endpoint, result);
            let etag = headers
                .get(http::header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            return Judged::Done(Ok(Answer { status, body, etag }));
        }
        let message = body
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if let Some(wait) = rate_limit_wait(status, &headers, &message) {
            self.metrics.github_request(endpoint, "rate_limited");
            gate.paused_until = Some(Instant::now() + wait);
            tracing::warn!(%method, path, ?wait, "GitHub rate limit; waiting as asked");
            return match backoff.next() {
                // The wait GitHub asked for replaces our own backoff.
                Some(_) => Judged::Retry(wait),
                None => Judged::Done(Err(GitHubError::RateLimited {
                    method: method.clone(),
                    path: path.to_string(),
                    retry_after: wait,
                })),
            };
        }
        if status.is_server_error() {
            self.metrics.github_request(endpoint, "server_error");
            return match backoff.next().filter(|_| retry) {
                Some(delay) => Judged::Retry(delay),
                None => Judged::Done(Err(unavailable(format!("{status}: {message}")))),
            };
        }
        self.metrics.github_request(endpoint, "rejected");
        Judged::Done(Err(GitHubError::Rejected {
            method: method.clone(),
            path: path.to_string(),
            status: status.as_u16(),
            message,
        }))
    }
}

enum Judged {
    Done(Result<Answer, GitHubError>),
    Retry(Duration),
}

async fn execute(
    client: &Octocrab,
    method: &Method,
    path: &str,
    body: Option<&Value>,
    etag: Option<&str>,
) -> Result<(StatusCode, HeaderMap, Value), String> {
    let response = match *method {
        Method::GET => {
            let mut headers = HeaderMap::new();
            if let Some(value) = etag.and_then(|e| http::HeaderValue::from_str(e).ok()) {
                headers.insert(http::header::IF_NONE_MATCH, value);
            }
            client._get_with_headers(path, Some(headers)).await
        }
        Method::POST => client._post(path, body).await,
        Method::PATCH => client._patch(path, body).await,
        Method::DELETE => client._delete(path, body).await,
        Method::PUT => client._put(path, body).await,
        _ => return Err(format!("unsupported method {method}")),
    }
    .map_err(|e| e.to_string())?;
    let status = response.status();
    let headers = response.headers().clone();
    let text = client
        .body_to_string(response)
        .await
        .map_err(|e| e.to_string())?;
    let body = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Ok((status, headers, body))
}

fn login(body: &Value, field: &str) -> Result<String, GitHubError> {
    body.get(field)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| GitHubError::Setup(format!("GitHub identity answer has no {field}")))
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// How long GitHub asks us to wait, if this answer is a rate limit: `Retry-After` on 403/429
/// (secondary limits), or the primary limit's reset time when nothing remains.
pub fn rate_limit_wait(status: StatusCode, headers: &HeaderMap, message: &str) -> Option<Duration> {
    if status != StatusCode::FORBIDDEN && status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    if let Some(secs) = header_u64(headers, "retry-after") {
        return Some(Duration::from_secs(secs.max(1)));
    }
    let exhausted = header_u64(headers, "x-ratelimit-remaining") == Some(0);
    if exhausted && let Some(reset) = header_u64(headers, "x-ratelimit-reset") {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        return Some(Duration::from_secs(reset.saturating_sub(now).max(1)));
    }
    if status == StatusCode::TOO_MANY_REQUESTS
        || message.to_ascii_lowercase().contains("rate limit")
    {
        // A secondary limit without a hint: GitHub recommends waiting at least a minute.
        return Some(Duration::from_secs(60));
    }
    None
}

/// The REST routes prenv calls, as metric labels. Paths carry logins, SHAs and numbers from
/// deliveries (a stranger picks their login), so a label is only ever one of these templates.
const ROUTES: &[&str] = &[
    "/user",
    "/app",
    "/repos/{owner}/{repo}/installation",
    "/repos/{owner}/{repo}/pulls",
    "/repos/{owner}/{repo}/pulls/{number}",
    "/repos/{owner}/{repo}/issues/{number}/comments",
    "/repos/{owner}/{repo}/issues/comments/{id}",
    "/repos/{owner}/{repo}/issues/comments/{id}/reactions",
    "/repos/{owner}/{repo}/deployments",
    "/repos/{owner}/{repo}/deployments/{id}/statuses",
    "/repos/{owner}/{repo}/statuses/{sha}",
    "/repos/{owner}/{repo}/collaborators/{user}/permission",
];

/// `METHOD /route/{template}` for metrics: the route of `path` in [`ROUTES`], else `other`.
fn endpoint_label(method: &Method, path: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    let route = ROUTES
        .iter()
        .find(|route| {
            route.split('/').count() == path.split('/').count()
                && route
                    .split('/')
                    .zip(path.split('/'))
                    .all(|(want, got)| want == got || (want.starts_with('{') && !got.is_empty()))
        })
        .copied()
        .unwrap_or("other");
    format!("{method} {route}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn retry_after_is_honoured() {
        let h = headers(&[("retry-after", "7")]);
        assert_eq!(
            rate_limit_wait(StatusCode::FORBIDDEN, &h, "secondary rate limit"),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            rate_limit_wait(StatusCode::TOO_MANY_REQUESTS, &h, ""),
            Some(Duration::from_secs(7))
        );
    }

    #[test]
    fn primary_limit_waits_until_reset() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let h = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", &(now + 30).to_string()),
        ]);
        let wait = rate_limit_wait(StatusCode::FORBIDDEN, &h, "API rate limit exceeded").unwrap();
        assert!(
            wait >= Duration::from_secs(29) && wait <= Duration::from_secs(31),
            "{wait:?}"
        );
    }

    #[test]
    fn other_forbidden_is_not_a_rate_limit() {
        let h = headers(&[("x-ratelimit-remaining", "4000")]);
        assert_eq!(
            rate_limit_wait(
                StatusCode::FORBIDDEN,
                &h,
                "Resource not accessible by integration"
            ),
            None
        );
        assert_eq!(rate_limit_wait(StatusCode::NOT_FOUND, &h, ""), None);
    }

    #[test]
    fn endpoint_labels_are_route_templates() {
        assert_eq!(
            endpoint_label(&Method::PATCH, "/repos/acme/shop/issues/comments/123"),
            "PATCH /repos/{owner}/{repo}/issues/comments/{id}"
        );
        assert_eq!(
            endpoint_label(
                &Method::POST,
                "/repos/acme/shop/statuses/0123456789abcdef0123456789abcdef01234567"
            ),
            "POST /repos/{owner}/{repo}/statuses/{sha}"
        );
        assert_eq!(
            endpoint_label(
                &Method::GET,
                "/repos/acme/shop/collaborators/evil-login-1234/permission"
            ),
            "GET /repos/{owner}/{repo}/collaborators/{user}/permission"
        );
        assert_eq!(
            endpoint_label(
                &Method::GET,
                "/repos/acme/shop/deployments?sha=abc&environment=x&per_page=100"
            ),
            "GET /repos/{owner}/{repo}/deployments"
        );
        assert_eq!(
            endpoint_label(&Method::GET, "/repos/acme/shop/issues/7/comments?page=2"),
            "GET /repos/{owner}/{repo}/issues/{number}/comments"
        );
        assert_eq!(endpoint_label(&Method::GET, "/user?x=1"), "GET /user");
    }

    #[test]
    fn paths_off_the_route_list_share_one_label() {
        for path in [
            "/users/evil-login-1234",
            "/repos/acme/shop/branches/evil-branch",
            "/repos/acme/shop/collaborators//permission",
            "/repos/acme/shop/pulls/7/evil",
            "",
        ] {
            assert_eq!(endpoint_label(&Method::GET, path), "GET other", "{path}");
        }
    }

    #[test]
    fn secrets_do_not_print() {
        let auth = Auth::Token("ghp_secret".into());
        assert!(!format!("{auth:?}").contains("ghp_secret"));
    }
}
