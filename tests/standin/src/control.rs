//! The `/_standin/` control API: the library's operations over HTTP, for scripts.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::model::{Delivery, Fault, FaultKind, NewPr, RecordedRequest};
use crate::server::{query_get, query_pairs};
use crate::{Error, Shared, StandIn};

type S = State<Arc<Shared>>;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/repos", post(add_repo))
        .route("/orgs", post(add_org))
        .route("/tokens", post(add_token))
        .route("/hooks", post(add_hook))
        .route("/permissions", post(set_permission))
        .route("/ping", post(ping))
        .route("/faults", post(add_fault).delete(clear_faults))
        .route("/deliveries", get(list_deliveries))
        .route("/deliveries/{id}/redeliver", post(redeliver))
        .route("/requests", get(list_requests))
        .route("/repos/{o}/{r}/pulls", post(open_pr))
        .route("/repos/{o}/{r}/pulls/{n}", get(get_pr))
        .route("/repos/{o}/{r}/pulls/{n}/push", post(push))
        .route("/repos/{o}/{r}/pulls/{n}/close", post(close))
        .route("/repos/{o}/{r}/pulls/{n}/reopen", post(reopen))
        .route("/repos/{o}/{r}/pulls/{n}/labels", post(add_label))
        .route(
            "/repos/{o}/{r}/pulls/{n}/labels/{name}",
            delete(remove_label),
        )
        .route("/repos/{o}/{r}/pulls/{n}/draft", post(set_draft))
        .route("/repos/{o}/{r}/pulls/{n}/title", post(edit_title))
        .route("/repos/{o}/{r}/pulls/{n}/delete_fork", post(delete_fork))
        .route(
            "/repos/{o}/{r}/pulls/{n}/comments",
            get(list_comments).post(comment),
        )
        .route("/repos/{o}/{r}/deployments", get(list_deployments))
        .route("/repos/{o}/{r}/statuses/{sha}", get(list_statuses))
        .fallback(|| async { fail(StatusCode::NOT_FOUND, "no such control route") })
}

/// A refused control request: `{"error": ...}` with a status.
struct Fail(StatusCode, String);

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

fn fail(status: StatusCode, msg: &str) -> Response {
    Fail(status, msg.to_string()).into_response()
}

fn err(e: Error) -> Response {
    let status = match e {
        Error::UnknownRepo(_) | Error::UnknownPr { .. } | Error::UnknownDelivery(_) => {
            StatusCode::NOT_FOUND
        }
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    fail(status, &e.to_string())
}

fn parse<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, Fail> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| Fail(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))
}

fn number(n: &str) -> Result<u64, Fail> {
    n.parse().map_err(|_| {
        Fail(
            StatusCode::NOT_FOUND,
            "not a pull request number".to_string(),
        )
    })
}

fn si(sh: &Arc<Shared>) -> StandIn {
    StandIn::weak(sh.clone())
}

fn done<T: serde::Serialize>(r: Result<T, Error>) -> Response {
    match r {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => err(e),
    }
}

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(fail) => return fail.into_response(),
        }
    };
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RepoReq {
    full_name: String,
    org: bool,
    private: bool,
}

async fn add_repo(State(sh): S, body: Bytes) -> Response {
    let req: RepoReq = tri!(parse(&body));
    let s = si(&sh);
    if req.org
        && let Some(owner) = req.full_name.split('/').next()
    {
        s.add_org(owner);
    }
    let added = s.try_add_repo(&req.full_name);
    if req.private {
        s.set_private(&req.full_name, true);
    }
    match added {
        Ok(()) => (
            StatusCode::CREATED,
            axum::Json(json!({"full_name": req.full_name})),
        )
            .into_response(),
        Err(e) => err(e),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct OrgReq {
    login: String,
}

async fn add_org(State(sh): S, body: Bytes) -> Response {
    let req: OrgReq = tri!(parse(&body));
    if req.login.is_empty() {
        return fail(StatusCode::UNPROCESSABLE_ENTITY, "login is required");
    }
    si(&sh).add_org(&req.login);
    (StatusCode::CREATED, axum::Json(json!({"login": req.login}))).into_response()
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TokenReq {
    token: String,
    login: String,
}

async fn add_token(State(sh): S, body: Bytes) -> Response {
    let req: TokenReq = tri!(parse(&body));
    if req.token.is_empty() || req.login.is_empty() {
        return fail(
            StatusCode::UNPROCESSABLE_ENTITY,
            "token and login are required",
        );
    }
    si(&sh).add_token(&req.token, &req.login);
    (StatusCode::CREATED, axum::Json(json!({"login": req.login}))).into_response()
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct HookReq {
    url: String,
    secret: String,
}

async fn add_hook(State(sh): S, body: Bytes) -> Response {
    let req: HookReq = tri!(parse(&body));
    if req.url.is_empty() {
        return fail(StatusCode::UNPROCESSABLE_ENTITY, "url is required");
    }
    let id = si(&sh).add_hook(&req.url, &req.secret);
    (StatusCode::CREATED, axum::Json(json!({"id": id}))).into_response()
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PermReq {
    full_name: String,
    login: String,
    permission: String,
}

async fn set_permission(State(sh): S, body: Bytes) -> Response {
    let req: PermReq = tri!(parse(&body));
    si(&sh).set_permission(&req.full_name, &req.login, &req.permission);
    axum::Json(json!({"permission": req.permission})).into_response()
}

async fn ping(State(sh): S) -> Response {
    done(si(&sh).ping().await)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct FaultReq {
    method: Option<String>,
    path_prefix: String,
    times: Option<u32>,
    kind: Option<FaultKind>,
    /// Fault only every n-th matching request.
    every: Option<u32>,
}

async fn add_fault(State(sh): S, body: Bytes) -> Response {
    let req: FaultReq = tri!(parse(&body));
    let method = match req.method.as_deref() {
        None | Some("") | Some("*") => None,
        Some(m) => match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
            Ok(m) => Some(m),
            Err(_) => return fail(StatusCode::UNPROCESSABLE_ENTITY, "bad method"),
        },
    };
    let fault = Fault::new(
        method,
        &req.path_prefix,
        req.times.unwrap_or(1),
        req.kind.unwrap_or(FaultKind::ServerError),
    )
    .every(req.every.unwrap_or(1));
    si(&sh).inject_fault(fault);
    (StatusCode::CREATED, axum::Json(json!({"ok": true}))).into_response()
}

async fn clear_faults(State(sh): S) -> Response {
    si(&sh).clear_faults();
    StatusCode::NO_CONTENT.into_response()
}

fn rfc3339(t: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn delivery_view(d: &Delivery) -> Value {
    let headers: serde_json::Map<String, Value> = d
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "id": d.id,
        "hook_id": d.hook_id,
        "url": d.url,
        "event": d.event,
        "action": d.action,
        "status": d.status,
        "response_body": d.response_body,
        "error": d.error,
        "redelivery": d.redelivery,
        "time": rfc3339(d.time),
        "duration_ms": d.duration.as_millis() as u64,
        "headers": headers,
        "payload": d.payload(),
    })
}

fn request_view(r: &RecordedRequest) -> Value {
    let headers: serde_json::Map<String, Value> = r
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "seq": r.seq,
        "method": r.method.as_str(),
        "path": r.path,
        "query": r.query,
        "body": r.body,
        "auth": r.auth,
        "identity": r.identity,
        "status": r.status,
        "faulted": r.faulted,
        "time": rfc3339(r.time),
        "headers": headers,
    })
}

async fn list_deliveries(State(sh): S, RawQuery(q): RawQuery) -> Response {
    let pairs = query_pairs(q.as_deref());
    let event = query_get(&pairs, "event");
    let v: Vec<Value> = si(&sh)
        .deliveries()
        .iter()
        .filter(|d| event.is_none_or(|e| d.event == e))
        .map(delivery_view)
        .collect();
    axum::Json(v).into_response()
}

async fn redeliver(State(sh): S, Path(id): Path<String>) -> Response {
    done(si(&sh).redeliver(&id).await)
}

async fn list_requests(State(sh): S) -> Response {
    let v: Vec<Value> = si(&sh).requests().iter().map(request_view).collect();
    axum::Json(v).into_response()
}

async fn open_pr(State(sh): S, Path((o, r)): Path<(String, String)>, body: Bytes) -> Response {
    let pr: NewPr = tri!(parse(&body));
    done(si(&sh).open_pr(&format!("{o}/{r}"), pr).await)
}

async fn get_pr(State(sh): S, Path((o, r, n)): Path<(String, String, String)>) -> Response {
    let n = tri!(number(&n));
    let v = si(&sh).pr_json(&format!("{o}/{r}"), n);
    if v.is_null() {
        return fail(StatusCode::NOT_FOUND, "no such pull request");
    }
    axum::Json(v).into_response()
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PushReq {
    sha: Option<String>,
}

async fn push(
    State(sh): S,
    Path((o, r, n)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let n = tri!(number(&n));
    let req: PushReq = tri!(parse(&body));
    let full = format!("{o}/{r}");
    match req.sha {
        Some(sha) => done(si(&sh).push_sha(&full, n, &sha).await),
        None => done(si(&sh).push(&full, n).await),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CloseReq {
    merged: bool,
}

async fn close(
    State(sh): S,
    Path((o, r, n)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let n = tri!(number(&n));
    let req: CloseReq = tri!(parse(&body));
    done(si(&sh).close(&format!("{o}/{r}"), n, req.merged).await)
}

async fn reopen(State(sh): S, Path((o, r, n)): Path<(String, String, String)>) -> Response {
    let n = tri!(number(&n));
    done(si(&sh).reopen(&format!("{o}/{r}"), n).await)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LabelReq {
    name: String,
    sender: Option<String>,
}

fn sender_or_owner(sh: &Arc<Shared>, full: &str, sender: Option<String>) -> String {
    sender.filter(|s| !s.is_empty()).unwrap_or_else(|| {
        sh.lock()
            .repo(full)
            .map(|r| r.owner.clone())
            .unwrap_or_default()
    })
}

async fn add_label(
    State(sh): S,
    Path((o, r, n)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let n = tri!(number(&n));
    let req: LabelReq = tri!(parse(&body));
    let full = format!("{o}/{r}");
    let sender = sender_or_owner(&sh, &full, req.sender);
    done(si(&sh).add_label(&full, n, &req.name, &sender).await)
}

async fn remove_label(
    State(sh): S,
    Path((o, r, n, name)): Path<(String, String, String, String)>,
    RawQuery(q): RawQuery,
) -> Response {
    let n = tri!(number(&n));
    let pairs = query_pairs(q.as_deref());
    let full = format!("{o}/{r}");
    let sender = sender_or_owner(&sh, &full, query_get(&pairs, "sender").map(str::to_string));
    done(si(&sh).remove_label(&full, n, &name, &sender).await)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct DraftReq {
    draft: bool,
}

async fn set_draft(
    State(sh): S,
    Path((o, r, n)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let n = tri!(number(&n));
    let req: DraftReq = tri!(parse(&body));
    done(si(&sh).set_draft(&format!("{o}/{r}"), n, req.draft).await)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TitleReq {
    title: String,
}

async fn edit_title(
    State(sh): S,
    Path((o, r, n)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let n = tri!(number(&n));
    let req: TitleReq = tri!(parse(&body));
    done(si(&sh).edit_title(&format!("{o}/{r}"), n, &req.title).await)
}

async fn delete_fork(State(sh): S, Path((o, r, n)): Path<(String, String, String)>) -> Response {
    let n = tri!(number(&n));
    done(
        si(&sh)
            .delete_fork(&format!("{o}/{r}"), n)
            .map(|()| json!({"ok": true})),
    )
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CommentReq {
    login: String,
    body: String,
}

async fn comment(
    State(sh): S,
    Path((o, r, n)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let n = tri!(number(&n));
    let req: CommentReq = tri!(parse(&body));
    if req.login.is_empty() {
        return fail(StatusCode::UNPROCESSABLE_ENTITY, "login is required");
    }
    done(
        si(&sh)
            .comment(&format!("{o}/{r}"), n, &req.login, &req.body)
            .await,
    )
}

async fn list_comments(State(sh): S, Path((o, r, n)): Path<(String, String, String)>) -> Response {
    let n = tri!(number(&n));
    axum::Json(si(&sh).comments(&format!("{o}/{r}"), n)).into_response()
}

async fn list_deployments(State(sh): S, Path((o, r)): Path<(String, String)>) -> Response {
    let full = format!("{o}/{r}");
    let s = si(&sh);
    let v: Vec<Value> = s
        .deployments(&full)
        .into_iter()
        .map(|d| {
            let statuses = s.deployment_statuses(&full, d.id);
            json!({"deployment": d, "statuses": statuses})
        })
        .collect();
    axum::Json(v).into_response()
}

async fn list_statuses(
    State(sh): S,
    Path((o, r, sha)): Path<(String, String, String)>,
) -> Response {
    axum::Json(si(&sh).statuses(&format!("{o}/{r}"), &sha)).into_response()
}
