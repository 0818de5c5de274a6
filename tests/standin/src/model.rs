//! The public records and inputs of the stand-in: what tests plant, inject and read back.

use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use http::Method;
use serde::{Deserialize, Serialize};

/// A pull request to open with [`crate::StandIn::open_pr`].
///
/// Every field has a default (`NewPr::default()`, or omitted in the control API's JSON):
/// the author is the repository owner, the head branch `feature-<number>`, the base `main`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NewPr {
    pub title: String,
    /// `None` gives GitHub's `"body": null`.
    pub body: Option<String>,
    /// Login of the author; empty = the fork owner for fork PRs, else the repository owner.
    pub author: String,
    /// Head branch; empty = `feature-<number>`.
    pub head_ref: String,
    pub base_ref: String,
    pub labels: Vec<String>,
    pub draft: bool,
    /// Full name of the head repository when the PR comes from a fork (`None` = same repo).
    /// The fork is created (owned by its owner, `"fork": true`) when it does not exist.
    pub fork: Option<String>,
    /// With `fork`: the fork is already deleted, so `head.repo` is `null`.
    pub fork_deleted: bool,
    /// `OWNER|MEMBER|COLLABORATOR|CONTRIBUTOR|FIRST_TIME_CONTRIBUTOR|FIRST_TIMER|NONE`;
    /// empty = derived: OWNER for the repository owner, COLLABORATOR for a login given a
    /// permission with `set_permission`, otherwise CONTRIBUTOR.
    pub author_association: String,
    /// 40-hex head commit; `None` = random.
    pub head_sha: Option<String>,
}

impl Default for NewPr {
    fn default() -> Self {
        NewPr {
            title: "Update the README with new information".to_string(),
            body: Some(
                "This is a pretty simple change that we need to pull into main.".to_string(),
            ),
            author: String::new(),
            head_ref: String::new(),
            base_ref: "main".to_string(),
            labels: Vec::new(),
            draft: false,
            fork: None,
            fork_deleted: false,
            author_association: String::new(),
            head_sha: None,
        }
    }
}

impl NewPr {
    /// A PR with this title and every other field defaulted.
    pub fn new(title: &str) -> Self {
        NewPr {
            title: title.to_string(),
            ..NewPr::default()
        }
    }
    pub fn title(mut self, title: &str) -> Self {
        self.title = title.to_string();
        self
    }
    pub fn body(mut self, body: Option<&str>) -> Self {
        self.body = body.map(str::to_string);
        self
    }
    pub fn author(mut self, login: &str) -> Self {
        self.author = login.to_string();
        self
    }
    pub fn head_ref(mut self, head_ref: &str) -> Self {
        self.head_ref = head_ref.to_string();
        self
    }
    pub fn base_ref(mut self, base_ref: &str) -> Self {
        self.base_ref = base_ref.to_string();
        self
    }
    pub fn label(mut self, label: &str) -> Self {
        self.labels.push(label.to_string());
        self
    }
    pub fn labels(mut self, labels: &[&str]) -> Self {
        self.labels = labels.iter().map(|l| l.to_string()).collect();
        self
    }
    pub fn draft(mut self, draft: bool) -> Self {
        self.draft = draft;
        self
    }
    /// From a fork with this full name (`"alice/shop"`).
    pub fn fork(mut self, fork_full_name: &str) -> Self {
        self.fork = Some(fork_full_name.to_string());
        self
    }
    pub fn fork_deleted(mut self, deleted: bool) -> Self {
        self.fork_deleted = deleted;
        self
    }
    pub fn association(mut self, association: &str) -> Self {
        self.author_association = association.to_string();
        self
    }
    pub fn head_sha(mut self, sha: &str) -> Self {
        self.head_sha = Some(sha.to_string());
        self
    }
}

/// What a library call that delivers a webhook returns: the first hook's answer.
/// With no hook configured, `status` is 0 and `body` empty (the state still changed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivered {
    /// The `X-GitHub-Delivery` GUID (of the first hook's delivery).
    pub id: String,
    /// HTTP status the hook answered; 0 when nothing answered (no hook, connection error).
    pub status: u16,
    /// The hook's response body (or the connection error).
    pub body: String,
    /// `X-GitHub-Event`.
    pub event: String,
    /// The delivered JSON body.
    pub payload: serde_json::Value,
    /// The exact body bytes that were signed and sent (to replay or tamper with).
    #[serde(skip)]
    pub body_bytes: Vec<u8>,
}

/// One webhook delivery attempt to one hook (redeliveries are recorded as new entries that
/// keep the original `id`).
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: String,
    pub hook_id: u64,
    pub url: String,
    pub event: String,
    pub action: Option<String>,
    /// The exact body bytes that were signed and sent.
    pub body: Vec<u8>,
    /// Every request header that was sent (signatures included).
    pub headers: Vec<(String, String)>,
    /// Response status; 0 when the hook could not be reached.
    pub status: u16,
    pub response_body: String,
    /// Connection/timeout error, if any.
    pub error: Option<String>,
    pub redelivery: bool,
    pub time: SystemTime,
    pub at: Instant,
    pub duration: Duration,
}

impl Delivery {
    /// The body as JSON.
    pub fn payload(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    /// A sent header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How an API request authenticated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    /// No `Authorization` header.
    None,
    /// A token added with `add_token`.
    Token,
    /// A GitHub App installation token.
    Installation,
    /// A GitHub App JWT.
    AppJwt,
    /// Credentials that were refused (401).
    Invalid,
}

/// One API request the stand-in received (control-API requests are not recorded).
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Arrival order, from 0.
    pub seq: u64,
    pub method: Method,
    pub path: String,
    /// Raw query string, without `?`.
    pub query: Option<String>,
    /// Request body as JSON (a JSON string holding the text when it was not JSON).
    pub body: Option<serde_json::Value>,
    pub auth: AuthKind,
    /// The login acting: a user, `<app-slug>[bot]` for an installation token, `app/<slug>`
    /// for an App JWT; `None` when anonymous or refused.
    pub identity: Option<String>,
    /// Request headers (the `Authorization` value is redacted to its scheme).
    pub headers: Vec<(String, String)>,
    /// Arrival time.
    pub at: Instant,
    pub time: SystemTime,
    pub status: u16,
    /// Answered by an injected fault.
    pub faulted: bool,
}

impl RecordedRequest {
    /// A request header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// `method` and `path` match (`"POST"`, `"/repos/o/r/deployments"`).
    pub fn is(&self, method: &str, path: &str) -> bool {
        self.method.as_str().eq_ignore_ascii_case(method) && self.path == path
    }
}

/// A reaction on an issue comment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reaction {
    pub login: String,
    /// `+1`, `-1`, `laugh`, `confused`, `heart`, `hooray`, `rocket` or `eyes`.
    pub content: String,
}

/// An issue comment on a pull request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Comment {
    pub id: u64,
    pub number: u64,
    pub login: String,
    pub body: String,
    pub author_association: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deployment {
    pub id: u64,
    pub sha: String,
    #[serde(rename = "ref")]
    pub r#ref: String,
    pub task: String,
    pub environment: String,
    pub original_environment: String,
    pub description: Option<String>,
    pub payload: serde_json::Value,
    pub transient_environment: bool,
    pub production_environment: bool,
    pub auto_merge: bool,
    pub required_contexts: Option<Vec<String>>,
    pub creator: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeploymentStatus {
    pub id: u64,
    pub deployment_id: u64,
    pub state: String,
    pub description: String,
    pub environment: String,
    pub environment_url: String,
    pub log_url: String,
    pub creator: String,
    pub created_at: DateTime<Utc>,
    /// Added by the stand-in itself (GitHub's `auto_inactive` rule), not by a request.
    pub automatic: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitStatus {
    pub id: u64,
    pub sha: String,
    pub state: String,
    pub target_url: Option<String>,
    pub description: Option<String>,
    pub context: String,
    pub creator: String,
    pub created_at: DateTime<Utc>,
}

/// A fault to answer matching API requests with, `times` times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// `None` matches every method.
    pub method: Option<Method>,
    /// Matches request paths that start with it (`"/repos/o/r/issues"`, `""` = all).
    pub path_prefix: String,
    pub times: u32,
    pub kind: FaultKind,
    /// Only every `every`-th matching request is faulted (1, the default: each one); the
    /// others are left to the next faults, or answered normally, and use up nothing. A flaky
    /// GitHub, not a dead one.
    pub every: u32,
    /// Matching requests seen so far (for `every`).
    pub(crate) seen: u32,
}

impl Fault {
    pub fn new(method: Option<Method>, path_prefix: &str, times: u32, kind: FaultKind) -> Self {
        Fault {
            method,
            path_prefix: path_prefix.to_string(),
            times,
            kind,
            every: 1,
            seen: 0,
        }
    }

    /// Fault only every `n`-th matching request (`n` of 0 counts as 1).
    pub fn every(mut self, n: u32) -> Self {
        self.every = n.max(1);
        self
    }
}

/// What a faulted request gets. In the control API's JSON: `{"type": "server_error"}`,
/// `{"type": "secondary_rate_limit", "retry_after_secs": 3}`, ...
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FaultKind {
    /// 500 `{"message":"Server Error"}`.
    ServerError,
    /// 403 with `retry-after` and GitHub's secondary-rate-limit message.
    SecondaryRateLimit { retry_after_secs: u64 },
    /// 429 with `retry-after`.
    TooManyRequests { retry_after_secs: u64 },
    /// 403 with `x-ratelimit-remaining: 0` and `x-ratelimit-reset` in that many seconds.
    PrimaryRateLimit { reset_in_secs: u64 },
    /// 401 Bad credentials, as for an expired or revoked token.
    Unauthorized,
    /// Any status with GitHub's `{"message": ...}` body.
    Status { status: u16, message: String },
    /// Waits this long, then answers normally (a slow GitHub).
    Delay { millis: u64 },
    /// Carries the request out, then answers 502 `{"message":"Server Error"}` instead of its
    /// result: GitHub timing out between its front end and the back end that did the work.
    /// Whoever retries a create then creates twice.
    LostAnswer,
}
