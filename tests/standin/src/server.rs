//! The HTTP front: routing, and around every API request authentication, injected faults,
//! GitHub's rate-limit headers and accounting, strong ETags with `If-None-Match`, and the
//! request record.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::Shared;
use crate::app_auth;
use crate::model::{AuthKind, FaultKind, RecordedRequest};
use crate::state::{Bucket, key};

pub(crate) const DOCS: &str = "https://docs.github.com/rest";

/// Who is calling, resolved from `Authorization`.
#[derive(Debug, Clone)]
pub(crate) enum Identity {
    Anonymous,
    User(String),
    Installation {
        bot: String,
        account: String,
        installation_id: u64,
    },
    App,
}

impl Identity {
    fn kind(&self) -> AuthKind {
        match self {
            Identity::Anonymous => AuthKind::None,
            Identity::User(_) => AuthKind::Token,
            Identity::Installation { .. } => AuthKind::Installation,
            Identity::App => AuthKind::AppJwt,
        }
    }

    fn name(&self, sh: &Shared) -> Option<String> {
        match self {
            Identity::Anonymous => None,
            Identity::User(l) => Some(l.clone()),
            Identity::Installation { bot, .. } => Some(bot.clone()),
            Identity::App => sh.cfg.app.as_ref().map(|a| format!("app/{}", a.slug)),
        }
    }

    /// The rate-limit bucket and its hourly limit.
    pub(crate) fn bucket(&self, sh: &Shared) -> (String, u64) {
        match self {
            Identity::Anonymous => ("anonymous".to_string(), 60),
            Identity::User(l) => (format!("user:{}", key(l)), sh.cfg.rate_limit),
            Identity::Installation {
                installation_id, ..
            } => (format!("installation:{installation_id}"), sh.cfg.rate_limit),
            Identity::App => ("app".to_string(), sh.cfg.rate_limit),
        }
    }
}

/// A GitHub-shaped error answer: `{"message", "documentation_url", "status"}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub errors: Option<Value>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: &str) -> Self {
        ApiError {
            status,
            message: message.to_string(),
            errors: None,
        }
    }
    pub(crate) fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not Found")
    }
    pub(crate) fn bad_credentials() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Bad credentials")
    }
    pub(crate) fn requires_auth() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Requires authentication")
    }
    pub(crate) fn not_accessible() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "Resource not accessible by integration",
        )
    }
    pub(crate) fn bad_json() -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Problems parsing JSON")
    }
    /// 422 Validation Failed with one error entry.
    pub(crate) fn invalid(resource: &str, field: &str, code: &str) -> Self {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: "Validation Failed".to_string(),
            errors: Some(json!([{ "resource": resource, "code": code, "field": field }])),
        }
    }
    /// 422 with a custom message in `errors` (GitHub's `"code": "custom"`).
    pub(crate) fn invalid_custom(resource: &str, field: &str, message: &str) -> Self {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message: "Validation Failed".to_string(),
            errors: Some(json!([{
                "resource": resource, "code": "custom", "field": field, "message": message
            }])),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({
            "message": self.message,
            "documentation_url": DOCS,
            "status": self.status.as_u16().to_string(),
        });
        if let (Some(errors), Some(obj)) = (self.errors, body.as_object_mut()) {
            obj.insert("errors".into(), errors);
        }
        (self.status, axum::Json(body)).into_response()
    }
}

pub(crate) type ApiResult = Result<Response, ApiError>;

/// A JSON answer.
pub(crate) fn json_response(status: StatusCode, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

/// 201 with a `Location` header.
pub(crate) fn created(v: &Value, location: &str) -> Response {
    let mut resp = json_response(StatusCode::CREATED, v);
    if let Ok(loc) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    resp
}

/// Query parameters, decoded.
pub(crate) fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|q| {
        form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    })
    .unwrap_or_default()
}

pub(crate) fn query_get<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// One page of `items` (GitHub's `per_page` default 30, max 100; `page` from 1) with a
/// `Link` header carrying `prev`/`next`/`last`/`first` as GitHub does.
pub(crate) fn paginate(
    sh: &Shared,
    path: &str,
    raw_query: Option<&str>,
    items: Vec<Value>,
) -> Response {
    let pairs = query_pairs(raw_query);
    let per_page = query_get(&pairs, "per_page")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(30)
        .min(100);
    let page = query_get(&pairs, "page")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(1);
    let total = items.len();
    let last = total.div_ceil(per_page).max(1);
    let start = (page - 1).saturating_mul(per_page).min(total);
    let end = (start + per_page).min(total);
    let page_items: Vec<Value> = items.into_iter().skip(start).take(end - start).collect();
    let mut resp = json_response(StatusCode::OK, &Value::Array(page_items));
    let link_for = |p: usize| {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs.iter().filter(|(k, _)| k != "page") {
            ser.append_pair(k, v);
        }
        ser.append_pair("page", &p.to_string());
        format!(
            "{}{}?{}",
            sh.api_url,
            path.trim_start_matches('/'),
            ser.finish()
        )
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!(
            "<{}>; rel=\"prev\"",
            link_for((page - 1).min(last))
        ));
    }
    if page < last {
        links.push(format!("<{}>; rel=\"next\"", link_for(page + 1)));
        links.push(format!("<{}>; rel=\"last\"", link_for(last)));
    }
    if page > 1 {
        links.push(format!("<{}>; rel=\"first\"", link_for(1)));
    }
    if !links.is_empty()
        && let Ok(v) = HeaderValue::from_str(&links.join(", "))
    {
        resp.headers_mut().insert(header::LINK, v);
    }
    resp
}

pub(crate) fn router(sh: Arc<Shared>) -> Router {
    let api = crate::api::routes()
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .layer(middleware::from_fn_with_state(sh.clone(), api_layer))
        .with_state(sh.clone());
    let control = crate::control::routes().with_state(sh);
    Router::new().nest("/_standin", control).merge(api)
}

async fn not_found() -> ApiError {
    ApiError::not_found()
}

fn authenticate(sh: &Shared, headers: &HeaderMap) -> Result<Identity, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(Identity::Anonymous);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::bad_credentials())?
        .trim();
    let (scheme, token) = value.split_once(' ').unwrap_or(("", value));
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("token") && !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::bad_credentials());
    }
    {
        let st = sh.lock();
        if let Some(login) = st.tokens.get(token) {
            return Ok(Identity::User(login.clone()));
        }
        if let Some(t) = st.inst_tokens.get(token) {
            if std::time::SystemTime::now() >= t.expires {
                return Err(ApiError::bad_credentials());
            }
            let bot = sh
                .cfg
                .app
                .as_ref()
                .map(|a| a.bot_login())
                .unwrap_or_default();
            return Ok(Identity::Installation {
                bot,
                account: t.account.clone(),
                installation_id: t.installation_id,
            });
        }
    }
    if app_auth::looks_like_jwt(token)
        && let (Some(app), Some(k)) = (sh.cfg.app.as_ref(), sh.app_key.as_ref())
    {
        return match app_auth::verify_jwt(token, k, app) {
            Ok(()) => Ok(Identity::App),
            Err(msg) => Err(ApiError::new(StatusCode::UNAUTHORIZED, msg)),
        };
    }
    Err(ApiError::bad_credentials())
}

fn request_id() -> String {
    let b: [u8; 10] = rand::random();
    format!(
        "{:04X}:{:04X}:{:06X}:{:06X}:{:08X}",
        u16::from_be_bytes([b[0], b[1]]),
        u16::from_be_bytes([b[2], b[3]]),
        u32::from_be_bytes([0, b[4], b[5], b[6]]),
        u32::from_be_bytes([0, b[7], b[8], b[9]]),
        chrono::Utc::now().timestamp() as u32
    )
}

fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    let bare = etag.trim_matches('"');
    if_none_match.split(',').any(|t| {
        let t = t.trim();
        t == "*" || t.trim_start_matches("W/").trim_matches('"') == bare
    })
}

async fn api_layer(State(sh): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let (seq, at, time) = sh.lock().begin_request();
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 32 << 20)
        .await
        .unwrap_or_default();
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().map(str::to_string);
    let headers_rec: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            let v = if *k == header::AUTHORIZATION {
                format!("{} ***", v.split(' ').next().unwrap_or(""))
            } else {
                v
            };
            (k.as_str().to_string(), v)
        })
        .collect();
    let body_json = if bytes.is_empty() {
        None
    } else {
        Some(
            serde_json::from_slice::<Value>(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned())),
        )
    };
    let if_none_match = parts
        .headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let rid = request_id();

    let auth = authenticate(&sh, &parts.headers);
    let ident = auth.as_ref().ok().cloned();
    let (bucket_key, limit) = ident.as_ref().unwrap_or(&Identity::Anonymous).bucket(&sh);
    let user_id = match &ident {
        Some(Identity::User(l)) => sh.lock().user(l).map(|u| u.id).unwrap_or(0),
        _ => 0,
    };

    let fault = sh.lock().take_fault(&method, &path);
    let mut faulted = false;
    let mut reset_override = None;
    let mut exhausted = false;
    let mut response: Option<Response> = None;
    let mut lose_answer = false;
    match fault {
        Some(FaultKind::Delay { millis }) => {
            tokio::time::sleep(std::time::Duration::from_millis(millis)).await;
        }
        Some(FaultKind::LostAnswer) => lose_answer = true,
        Some(kind) => {
            faulted = true;
            let (resp, reset) = crate::faults::response(&kind, &rid, user_id);
            reset_override = reset;
            response = Some(resp);
        }
        None => {}
    }
    if response.is_none() {
        match auth {
            Err(e) => response = Some(e.into_response()),
            Ok(ident) => {
                let now = chrono::Utc::now().timestamp();
                let used = {
                    let mut st = sh.lock();
                    let b = st.rate.entry(bucket_key.clone()).or_insert(Bucket {
                        used: 0,
                        reset: now + 3600,
                    });
                    if now >= b.reset {
                        *b = Bucket {
                            used: 0,
                            reset: now + 3600,
                        };
                    }
                    b.used
                };
                if used >= limit && path != "/rate_limit" {
                    exhausted = true;
                    response = Some(crate::faults::primary_response(user_id));
                } else {
                    let mut req = Request::from_parts(parts, Body::from(bytes));
                    req.extensions_mut().insert(ident);
                    response = Some(next.run(req).await);
                }
            }
        }
    }
    let mut resp = response.unwrap_or_else(|| ApiError::not_found().into_response());
    if lose_answer {
        // Done, but the caller never learns it.
        faulted = true;
        resp = crate::faults::lost_answer();
    }

    let (mut rparts, rbody) = resp.into_parts();
    let rbytes: Bytes = axum::body::to_bytes(rbody, usize::MAX)
        .await
        .unwrap_or_default();
    let mut not_modified = false;
    if method == Method::GET && rparts.status == StatusCode::OK && !faulted {
        let etag = format!("\"{}\"", hex::encode(sha2::Sha256::digest(&rbytes)));
        if let Some(inm) = &if_none_match {
            not_modified = etag_matches(inm, &etag);
        }
        if let Ok(v) = HeaderValue::from_str(&etag) {
            rparts.headers.insert(header::ETAG, v);
        }
    }
    let counts = !faulted && !not_modified && !exhausted && path != "/rate_limit";
    let (mut remaining, mut reset, mut used) = {
        let now = chrono::Utc::now().timestamp();
        let mut st = sh.lock();
        let b = st.rate.entry(bucket_key).or_insert(Bucket {
            used: 0,
            reset: now + 3600,
        });
        if counts {
            b.used += 1;
        }
        (limit.saturating_sub(b.used), b.reset, b.used)
    };
    if let Some(r) = reset_override {
        remaining = 0;
        reset = r;
        used = limit;
    }
    let hdrs = &mut rparts.headers;
    let mut set = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            hdrs.insert(name, v);
        }
    };
    set("x-ratelimit-limit", limit.to_string());
    set("x-ratelimit-remaining", remaining.to_string());
    set("x-ratelimit-reset", reset.to_string());
    set("x-ratelimit-used", used.to_string());
    set("x-ratelimit-resource", "core".to_string());
    set("x-github-request-id", rid);
    set("x-github-media-type", "github.v3; format=json".to_string());
    set("x-github-api-version-selected", "2022-11-28".to_string());
    set("server", "github.com".to_string());
    let final_resp = if not_modified {
        rparts.status = StatusCode::NOT_MODIFIED;
        rparts.headers.remove(header::CONTENT_TYPE);
        rparts.headers.remove(header::CONTENT_LENGTH);
        Response::from_parts(rparts, Body::empty())
    } else {
        Response::from_parts(rparts, Body::from(rbytes))
    };

    tracing::debug!(
        method = %method,
        path = %path,
        status = final_resp.status().as_u16(),
        faulted,
        "api request"
    );
    let rec = RecordedRequest {
        seq,
        method,
        path,
        query,
        body: body_json,
        auth: match &ident {
            Some(i) => i.kind(),
            None => AuthKind::Invalid,
        },
        identity: ident.as_ref().and_then(|i| i.name(&sh)),
        headers: headers_rec,
        at,
        time,
        status: final_resp.status().as_u16(),
        faulted,
    };
    sh.lock().record_request(rec);
    final_resp
}
