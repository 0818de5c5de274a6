//! The REST routes: GitHub's paths, rules and answers for what prenv uses.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use crate::Shared;
use crate::hooks;
use crate::model::{CommitStatus, Deployment, DeploymentStatus};
use crate::server::{
    ApiError, ApiResult, Identity, created, json_response, paginate, query_get, query_pairs,
};
use crate::shapes::{Ctx, PrFlavor, RepoFlavor, ts};
use crate::state::{PrState, State as GhState, after, key, now};

type S = State<Arc<Shared>>;
type Ident = Extension<Identity>;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/user", get(get_user))
        .route("/users/{login}", get(get_user_by_login))
        .route("/users/{login}/installation", get(account_installation))
        .route("/orgs/{login}/installation", get(account_installation))
        .route("/rate_limit", get(rate_limit))
        .route("/app", get(get_app))
        .route("/app/installations", get(list_installations))
        .route("/app/installations/{id}", get(get_installation))
        .route(
            "/app/installations/{id}/access_tokens",
            post(create_installation_token),
        )
        .route("/installation/repositories", get(installation_repositories))
        .route("/repos/{o}/{r}", get(get_repo))
        .route("/repos/{o}/{r}/installation", get(repo_installation))
        .route("/repos/{o}/{r}/pulls", get(list_pulls))
        .route("/repos/{o}/{r}/pulls/{n}", get(get_pull))
        .route("/repos/{o}/{r}/issues/{n}", get(get_issue))
        .route(
            "/repos/{o}/{r}/issues/{n}/comments",
            get(list_comments).post(create_comment),
        )
        .route(
            "/repos/{o}/{r}/issues/comments/{id}",
            get(get_comment)
                .patch(update_comment)
                .post(update_comment)
                .delete(delete_comment),
        )
        .route(
            "/repos/{o}/{r}/issues/comments/{id}/reactions",
            get(list_reactions).post(create_reaction),
        )
        .route(
            "/repos/{o}/{r}/deployments",
            get(list_deployments).post(create_deployment),
        )
        .route(
            "/repos/{o}/{r}/deployments/{id}",
            get(get_deployment).delete(delete_deployment),
        )
        .route(
            "/repos/{o}/{r}/deployments/{id}/statuses",
            get(list_deployment_statuses).post(create_deployment_status),
        )
        .route(
            "/repos/{o}/{r}/deployments/{id}/statuses/{sid}",
            get(get_deployment_status),
        )
        .route("/repos/{o}/{r}/statuses/{sha}", post(create_commit_status))
        .route(
            "/repos/{o}/{r}/commits/{rf}/statuses",
            get(list_commit_statuses),
        )
        .route("/repos/{o}/{r}/commits/{rf}/status", get(combined_status))
        .route(
            "/repos/{o}/{r}/collaborators/{u}/permission",
            get(collaborator_permission),
        )
}

// ---- helpers ----

fn ok(v: &Value) -> Response {
    json_response(StatusCode::OK, v)
}

fn body_object(bytes: &Bytes) -> Result<Map<String, Value>, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(ApiError::bad_json()),
    }
}

fn str_field<'a>(m: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    m.get(name).and_then(Value::as_str)
}

fn bool_field(
    m: &Map<String, Value>,
    name: &str,
    resource: &str,
    default: bool,
) -> Result<bool, ApiError> {
    match m.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::invalid(resource, name, "invalid")),
    }
}

fn num(s: &str) -> Result<u64, ApiError> {
    s.parse::<u64>().map_err(|_| ApiError::not_found())
}

/// The canonical full name of a repository the caller may use (404 otherwise, as GitHub
/// hides what a token cannot see).
fn repo_for(st: &GhState, ident: &Identity, o: &str, r: &str) -> Result<String, ApiError> {
    let repo = st
        .repo(&format!("{o}/{r}"))
        .map_err(|_| ApiError::not_found())?;
    match ident {
        Identity::Installation { account, .. } if !account.eq_ignore_ascii_case(&repo.owner) => {
            Err(ApiError::not_found())
        }
        Identity::App => Err(ApiError::not_accessible()),
        Identity::Anonymous if repo.private => Err(ApiError::not_found()),
        _ => Ok(repo.full_name.clone()),
    }
}

/// The login that writes (and whether through the App), or 401/403.
fn writer(ident: &Identity) -> Result<(String, bool), ApiError> {
    match ident {
        Identity::User(l) => Ok((l.clone(), false)),
        Identity::Installation { bot, .. } => Ok((bot.clone(), true)),
        Identity::Anonymous => Err(ApiError::requires_auth()),
        Identity::App => Err(ApiError::not_accessible()),
    }
}

fn require_app(sh: &Shared, ident: &Identity) -> Result<(), ApiError> {
    if sh.cfg.app.is_none() {
        return Err(ApiError::not_found());
    }
    match ident {
        Identity::App => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            crate::app_auth::JWT_UNDECODABLE,
        )),
    }
}

fn ctx<'a>(sh: &'a Shared, st: &'a GhState) -> Ctx<'a> {
    sh.ctx(st)
}

// ---- users ----

async fn get_user(State(sh): S, Extension(ident): Ident) -> ApiResult {
    match ident {
        Identity::User(login) => {
            let st = sh.lock();
            Ok(ok(&ctx(&sh, &st).user_profile(&login, true)))
        }
        Identity::Anonymous => Err(ApiError::requires_auth()),
        _ => Err(ApiError::not_accessible()),
    }
}

async fn get_user_by_login(State(sh): S, Path(login): Path<String>) -> ApiResult {
    let st = sh.lock();
    if st.user(&login).is_none() {
        return Err(ApiError::not_found());
    }
    Ok(ok(&ctx(&sh, &st).user_profile(&login, false)))
}

async fn rate_limit(State(sh): S, Extension(ident): Ident) -> ApiResult {
    let (bucket, limit) = ident.bucket(&sh);
    let now = chrono::Utc::now().timestamp();
    let (used, reset) = {
        let st = sh.lock();
        st.rate
            .get(&bucket)
            .filter(|b| b.reset > now)
            .map(|b| (b.used, b.reset))
            .unwrap_or((0, now + 3600))
    };
    let rate = |limit: u64, used: u64, reset: i64| json!({"limit": limit, "used": used, "remaining": limit.saturating_sub(used), "reset": reset});
    let core = rate(limit, used, reset);
    let minute = now + 60;
    Ok(ok(&json!({
        "resources": {
            "core": core,
            "search": rate(30, 0, minute),
            "graphql": rate(5000, 0, now + 3600),
            "integration_manifest": rate(5000, 0, now + 3600),
            "source_import": rate(100, 0, minute),
            "actions_runner_registration": rate(10000, 0, now + 3600),
            "scim": rate(15000, 0, now + 3600),
            "dependency_snapshots": rate(100, 0, minute),
            "code_search": rate(10, 0, minute),
            "code_scanning_autofix": rate(10, 0, minute),
        },
        "rate": core,
    })))
}

// ---- GitHub App ----

async fn get_app(State(sh): S, Extension(ident): Ident) -> ApiResult {
    require_app(&sh, &ident)?;
    let st = sh.lock();
    Ok(ok(&ctx(&sh, &st).app()))
}

async fn list_installations(
    State(sh): S,
    Extension(ident): Ident,
    RawQuery(q): RawQuery,
) -> ApiResult {
    require_app(&sh, &ident)?;
    let items: Vec<Value> = {
        let st = sh.lock();
        let c = ctx(&sh, &st);
        st.installations
            .values()
            .map(|i| c.installation(i))
            .collect()
    };
    Ok(paginate(&sh, "/app/installations", q.as_deref(), items))
}

async fn get_installation(
    State(sh): S,
    Extension(ident): Ident,
    Path(id): Path<String>,
) -> ApiResult {
    require_app(&sh, &ident)?;
    let id = num(&id)?;
    let st = sh.lock();
    let inst = st.installation_by_id(id).ok_or_else(ApiError::not_found)?;
    Ok(ok(&ctx(&sh, &st).installation(inst)))
}

async fn create_installation_token(
    State(sh): S,
    Extension(ident): Ident,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    require_app(&sh, &ident)?;
    let id = num(&id)?;
    let req = body_object(&body)?;
    let mut st = sh.lock();
    let account = st
        .installation_by_id(id)
        .map(|i| i.account.clone())
        .ok_or_else(ApiError::not_found)?;
    let (token, expires_at) =
        st.mint_installation_token(id, &account, sh.cfg.installation_token_ttl);
    let c = ctx(&sh, &st);
    let mut v = json!({
        "token": token,
        "expires_at": ts(expires_at),
        "permissions": Ctx::app_permissions(),
        "repository_selection": "all",
    });
    if let Some(names) = req.get("repositories").and_then(Value::as_array) {
        let repos: Vec<Value> = names
            .iter()
            .filter_map(Value::as_str)
            .map(|n| c.repo(&format!("{account}/{n}"), RepoFlavor::Api))
            .filter(|r| !r.is_null())
            .collect();
        if let Some(o) = v.as_object_mut() {
            o.insert("repository_selection".into(), "selected".into());
            o.insert("repositories".into(), Value::Array(repos));
        }
    }
    Ok(created(
        &v,
        &format!("{}app/installations/{id}/access_tokens", sh.api_url),
    ))
}

async fn installation_repositories(
    State(sh): S,
    Extension(ident): Ident,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let Identity::Installation { account, .. } = &ident else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "You must authenticate with an installation access token in order to list repositories for an installation.",
        ));
    };
    let all: Vec<Value> = {
        let st = sh.lock();
        let c = ctx(&sh, &st);
        st.repos
            .values()
            .filter(|r| r.owner.eq_ignore_ascii_case(account))
            .map(|r| c.repo(&r.full_name, RepoFlavor::Api))
            .collect()
    };
    let total = all.len();
    // Paginate the repositories array, answer the envelope GitHub uses.
    let page = paginate(&sh, "/installation/repositories", q.as_deref(), all);
    let (parts, body) = page.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let repos: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Array(vec![]));
    let v = json!({"total_count": total, "repository_selection": "all", "repositories": repos});
    let mut resp = ok(&v);
    if let Some(link) = parts.headers.get(axum::http::header::LINK) {
        resp.headers_mut()
            .insert(axum::http::header::LINK, link.clone());
    }
    Ok(resp)
}

fn installation_for(sh: &Shared, ident: &Identity, account: &str) -> ApiResult {
    require_app(sh, ident)?;
    let mut st = sh.lock();
    let owner = st
        .users
        .get(&key(account))
        .map(|u| u.login.clone())
        .ok_or_else(ApiError::not_found)?;
    if !st
        .repos
        .values()
        .any(|r| r.owner.eq_ignore_ascii_case(&owner))
    {
        return Err(ApiError::not_found());
    }
    let inst = st.ensure_installation(&owner);
    Ok(ok(&ctx(sh, &st).installation(&inst)))
}

async fn repo_installation(
    State(sh): S,
    Extension(ident): Ident,
    Path((o, r)): Path<(String, String)>,
) -> ApiResult {
    let owner = {
        let st = sh.lock();
        st.repo(&format!("{o}/{r}"))
            .map(|r| r.owner.clone())
            .map_err(|_| ApiError::not_found())?
    };
    installation_for(&sh, &ident, &owner)
}

async fn account_installation(
    State(sh): S,
    Extension(ident): Ident,
    Path(login): Path<String>,
) -> ApiResult {
    installation_for(&sh, &ident, &login)
}

// ---- repositories and pull requests ----

async fn get_repo(
    State(sh): S,
    Extension(ident): Ident,
    Path((o, r)): Path<(String, String)>,
) -> ApiResult {
    let st = sh.lock();
    let full = repo_for(&st, &ident, &o, &r)?;
    Ok(ok(&ctx(&sh, &st).repo(&full, RepoFlavor::Api)))
}

async fn list_pulls(
    State(sh): S,
    Extension(ident): Ident,
    Path((o, r)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let pairs = query_pairs(q.as_deref());
    let state = query_get(&pairs, "state").unwrap_or("open");
    if !matches!(state, "open" | "closed" | "all") {
        return Err(ApiError::invalid("PullRequest", "state", "invalid"));
    }
    let sort = query_get(&pairs, "sort").unwrap_or("created");
    let desc = match query_get(&pairs, "direction") {
        Some("asc") => false,
        Some("desc") => true,
        _ => sort == "created",
    };
    let head = query_get(&pairs, "head");
    let base = query_get(&pairs, "base");
    let (path, items) = {
        let st = sh.lock();
        let full = repo_for(&st, &ident, &o, &r)?;
        let mut prs: Vec<_> = st
            .prs
            .values()
            .filter(|p| key(&p.repo) == key(&full))
            .filter(|p| match state {
                "open" => p.state == PrState::Open,
                "closed" => p.state == PrState::Closed,
                _ => true,
            })
            .filter(|p| {
                head.is_none_or(|h| {
                    let owner = p.head_repo.split('/').next().unwrap_or_default();
                    let (hu, hr) = h.split_once(':').unwrap_or((owner, h));
                    hu.eq_ignore_ascii_case(owner) && hr == p.head_ref
                })
            })
            .filter(|p| base.is_none_or(|b| b == p.base_ref))
            .collect();
        match sort {
            "updated" => prs.sort_by_key(|p| (p.updated_at, p.number)),
            _ => prs.sort_by_key(|p| (p.created_at, p.number)),
        }
        if desc {
            prs.reverse();
        }
        let c = ctx(&sh, &st);
        let items: Vec<Value> = prs
            .into_iter()
            .map(|p| c.pr(p, PrFlavor::List, RepoFlavor::Api))
            .collect();
        (format!("/repos/{full}/pulls"), items)
    };
    Ok(paginate(&sh, &path, q.as_deref(), items))
}

async fn get_pull(
    State(sh): S,
    Extension(ident): Ident,
    Path((o, r, n)): Path<(String, String, String)>,
) -> ApiResult {
    let n = num(&n)?;
    let st = sh.lock();
    let full = repo_for(&st, &ident, &o, &r)?;
    let pr = st.pr(&full, n).map_err(|_| ApiError::not_found())?;
    Ok(ok(&ctx(&sh, &st).pr(pr, PrFlavor::Full, RepoFlavor::Api)))
}

async fn get_issue(
    State(sh): S,
    Extension(ident): Ident,
    Path((o, r, n)): Path<(String, String, String)>,
) -> ApiResult {
    let n = num(&n)?;
    let st = sh.lock();
    let full = repo_for(&st, &ident, &o, &r)?;
    let pr = st.pr(&full, n).map_err(|_| ApiError::not_found())?;
    Ok(ok(&ctx(&sh, &st).issue(pr)))
}

// ---- comments ----

async fn list_comments(
    State(sh): S,
    Extension(ident): Ident,
    Path((o, r, n)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let n = num(&n)?;
    let pairs = query_pairs(q.as_deref());
    let since = query_get(&pairs, "since")
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|d| d.with_timezone(&chrono::Utc));
    let (path, items) = {
        let st = sh.lock();
        let full = repo_for(&st, &ident, &o, &r)?;
        st.pr(&full, n).map_err(|_| ApiError::not_found())?;
        let c = ctx(&sh, &st);
        let items: Vec<Value> = st
            .live_comments(&full, n)
            .into_iter()
            .filter(|cm| since.is_none_or(|s| cm.updated_at >= s))
            .map(|cm| c.comment(cm, false))
            .collect();
        (format!("/repos/{full}/issues/{n}/comments"), items)
    };
    Ok(paginate(&sh, &path, q.as_deref(), items))
}

const MAX_BODY: usize = 65536;

fn comment_body(req: &Map<String, Value>) -> Result<String, ApiError> {
    let body = str_field(req, "body")
        .ok_or_else(|| ApiError::invalid("IssueComment", "body", "missing_field"))?;
    if body.chars().count() > MAX_BODY {
        return Err(ApiError::invalid_custom(
            "IssueComment",
            "body",
            "body is too long (maximum is 65536 characters)",
        ));
    }
    Ok(body.to_string())
}

fn spawn_comment_delivery(
    sh: &Arc<Shared>,
    id: u64,
    action: &'static str,
    changes: Option<Value>,
    sender: String,
) {
    if !sh.cfg.api_comment_deliveries {
        return;
    }
    let out = {
        let st = sh.lock();
        if st.hooks.is_empty() {
            return;
        }
        hooks::issue_comment_event(&sh.ctx(&st), id, action, changes, &sender)
    };
    if let Some(out) = out {
        let sh = sh.clone();
        tokio::spawn(async move {
            sh.deliver(out).await;
        });
    }
}

async fn create_comment(
    State(sh): S,
    Extension(ident): Ident,
    Path((o, r, n)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult {
    let n = num(&n)?;
    let (login, via_app) = writer(&ident)?;
    let req = body_object(&body)?;
    let text = comment_body(&req)?;
    let (v, url, id) = {
        let mut st = sh.lock();
        let full = repo_for(&st, &ident, &o, &r)?;
        let id = st
            .add_comment(&full, n, &login, &text, via_app)
            .map_err(|_| ApiError::not_found())?;
        let c = ctx(&sh, &st);
        let cm = st.comments.get(&id).ok_or_else(ApiError::not_found)?;
        let v = c.comment(cm, false);
        let url = v
            .get("url")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        (v, url, id)
    };
    spawn_comment_delivery(&sh, id, "created", None, login);
    Ok(created(&v, &url))
}

async fn get_comment(
    State(sh): S,
    Extension(ident): Ident,
    Path((o, r, id)): Path<(String, String, String)>,
) -> ApiResult {
    let id = num(&id)?;
    let st = sh.lock();
    let full = repo_for(&st, &ident, &o, &r)?;
    let cm = st.comment(&full, id).ok_or_else(ApiError::not_found)?;
    Ok(ok(&ctx(&sh, &st).comment(cm, false)))
}

async fn update_comment(
    State(sh): S,
    Extension(ident): Ident,
    Path((o, r, id)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult {
    let id = num(&id)?;
    let (login, _) = writer(&ident)?;
    let req = body_object(&body)?;
    let text = comment_body(&req)?;
    let (v, from) = {
        let mut st = sh.lock();
        let full = repo_for(&st, &ident, &o, &r)?;
        let from = st
            .edit_comment(&full, id, &text)
            .ok_or_else(ApiError::not_found)?;
        if let Some(cm) = st.comments.get(&id) {
            let (repo, number) = (cm.repo.clone(), cm.number);
            if let Ok(pr) = st.pr_mut(&repo, number) {
                pr.updated_at = after(pr.updated_at);
            }
        }
        let cm = st.comments.get(&id).ok_or_else(ApiError::not_found)?;
        (ctx(&sh, &st).comment(cm, false), from)
    };
    spawn_comment_delivery(
        &sh,
        id,
        "edited",
        Some(json!({"body": {"from": from}})),
        login,
    );
    Ok(ok(&v))
}

async fn delete_comment(
    State(sh): S,
    Extension(ident): Ident,
    Path((o, r, id)): Path<(String, String, String)>,
) -> ApiResult {
    let id = num(&id)?;
    let (login, _) = writer(&ident)?;
    {
        let mut st = sh.lock();
        let full = repo_for(&st, &ident, &o, &r)?;
        if !st.delete_comment(&full, id) {
            return Err(ApiError::not_found());
        }
    }
    spawn_comment_delivery(&sh, id, "deleted", None, login);
    Ok(StatusCode::NO_CONTENT.into_response())
}

const REACTIONS: &[&str] = &[
    "+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes",
];

async fn create_reaction(
    State(sh): S,
    Extension(ident): Ident,
    Path((o, r, id)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult {
    let id = num(&id)?;
    let (login, _) = writer(&ident)?;
    let req = body_object(&body)?;
    let content = str_field(&req, "content")
        .filter(|c| REACTIONS.contains(c))
        .ok_or_else(|| ApiError::invalid("Reaction", "content", "invalid"))?
        .to_string();
    let mut st = sh.lock();
    let full = repo_for(&st, &ident, &o, &r)?;
    st.comment(&full, id).ok_or_else(ApiError::not_found)?;
    if let Some(existing) = st
        .reactions
        .iter()
        .find(|x| x.comment_id == id && x.content == content && key(&x.login) == key(&login))
        .cloned()
    {
        let v = ctx(&sh, &st).reaction(
            existing.id,
            &existing.login,
            &existing.content,
            existing.created_at,
        );
        return Ok(ok(&v));
    }
    let rid = st.next_id("reaction");
    let t = now();
    st.reactions.push(crate::state::ReactionRec {
        id: rid,
        comment_id: id,
        login: login.clone(),
        content: content.clone(),
        created_at: t,
    });
    let v = ctx(&sh, &st).reaction(rid, &login, &content, t);
    Ok(json_response(StatusCode::CREATED, &v))
}

async fn list_reactions(
    State(sh): S,
    Extension(ident): Ident,
    Path((o, r, id)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let id = num(&id)?;
    let (path, items) = {
        let st = sh.lock();
        let full = repo_for(&st, &ident, &o, &r)?;
        st.comment(&full, id).ok_or_else(ApiError::not_found)?;
        let c = ctx(&sh, &st);
        let items: Vec<Value> = st
            .reactions
            .iter()
            .filter(|x| x.comment_id == id)
            .map(|x| c.reaction(x.id, &x.login, &x.content, x.created_at))
            .collect();
        (
            format!("/repos/{full}/issues/comments/{id}/reactions"),
            items,
        )
    };
    Ok(paginate(&sh, &path, q.as_deref(), items))
}

// ---- deployments ----

fn latest_status<'a>(
    st: &'a GhState,
    repo_key: &str,
    deployment_id: u64,
) -> Option<&'a DeploymentStatus> {
    st.deployment_statuses
        .values()
        .filter(|(r, s)| r == repo_key && s.deployment_id == deployment_id)
        .map(|(_, s)| s)
        .next_back()
}

async fn create_deployment(
    State(sh): S,
    Extension(ident): Ident,
    Path((o, r)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let (creator, _) = writer(&ident)?;
    let req = body_object(&body)?;
    const RES: &str = "Deployment";
    let r#ref = match req.get("ref") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            return Err(ApiError::invalid(RES, "ref", "missing_field"));
        }
        Some(_) => return Err(ApiError::invalid(RES, "ref", "invalid")),
    };
    let task = str_field(&req, "task").unwrap_or("deploy").to_string();
    let environment = str_field(&req, "environment")
        .unwrap_or("production")
        .to_string();
    let description = match req.get("description") {
        Some(Value::String(s)) => Some(s.clone()),
        _ => None,
    };
    let transient = bool_field(&req, "transient_environment", RES, false)?;
    let production = bool_field(
        &req,
        "production_environment",
        RES,
        environment == "production",
    )?;
    let auto_merge = bool_field(&req, "auto_merge", RES, true)?;
    let required_contexts = match req.get("required_contexts") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| ApiError::invalid(RES, "required_contexts", "invalid"))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err(ApiError::invalid(RES, "required_contexts", "invalid")),
    };
    let payload = match req.get("payload") {
        None | Some(Value::Null) => json!({}),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => v,
            _ => Value::String(s.clone()),
        },
        Some(v) => v.clone(),
    };
    let mut st = sh.lock();
    let full = repo_for(&st, &ident, &o, &r)?;
    let rk = key(&full);
    let sha = st.resolve_ref(&full, &r#ref).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("No ref found for: {}", r#ref),
        )
    })?;
    // GitHub's commit-status gate: every required context (all present contexts when
    // `required_contexts` is omitted) must be success on the commit.
    let contexts: Vec<String> = match &required_contexts {
        Some(c) => c.clone(),
        None => {
            let mut c: Vec<String> = st
                .commit_statuses
                .iter()
                .filter(|(r, s)| *r == rk && s.sha == sha)
                .map(|(_, s)| s.context.clone())
                .collect();
            c.sort();
            c.dedup();
            c
        }
    };
    let failing: Vec<&String> = contexts
        .iter()
        .filter(|ctx_name| {
            st.commit_statuses
                .iter()
                .rfind(|(r, s)| *r == rk && s.sha == sha && &s.context == *ctx_name)
                .is_none_or(|(_, s)| s.state != "success")
        })
        .collect();
    if !failing.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            &format!("Conflict: Commit status checks failed for {}.", r#ref),
        ));
    }
    let id = st.next_id("deployment");
    let t = now();
    let d = Deployment {
        id,
        sha,
        r#ref,
        task,
        original_environment: environment.clone(),
        environment,
        description,
        payload,
        transient_environment: transient,
        production_environment: production,
        auto_merge,
        required_contexts,
        creator,
        created_at: t,
        updated_at: t,
    };
    let v = ctx(&sh, &st).deployment(&full, &d);
    st.deployments.insert(id, (rk, d));
    Ok(created(
        &v,
        &format!("{}repos/{full}/deployments/{id}", sh.api_url),
    ))
}

async fn list_deployments(
    State(sh): S,
    Extension(ident): Ident,
    Path((o, r)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let pairs = query_pairs(q.as_deref());
    let (path, items) = {
        let st = sh.lock();
        let full = repo_for(&st, &ident, &o, &r)?;
        let rk = key(&full);
        let c = ctx(&sh, &st);
        let items: Vec<Value> = st
            .deployments
            .values()
            .rev()
            .filter(|(r, _)| *r == rk)
            .map(|(_, d)| d)
            .filter(|d| query_get(&pairs, "sha").is_none_or(|s| d.sha == s))
            .filter(|d| query_get(&pairs, "ref").is_none_or(|s| d.r#ref == s))
            .filter(|d| query_get(&pairs, "environment").is_none_or(|s| d.environment == s))
            .filter(|d| query_get(&pairs, "task").is_none_or(|s| d.task == s))
            .map(|d| c.deployment(&full, d))
            .collect();
        (format!("/repos/{full}/deployments"), items)
    };
    Ok(paginate(&sh, &path, q.as_deref(), items))
}

fn find_deployment<'a>(st: &'a GhState, full: &str, id: &str) -> Result<&'a Deployment, ApiError> {
    let id = num(id)?;
    st.deployments
        .get(&id)
        .filter(|(r, _)| *r == key(full))
        .map(|(_, d)| d)
        .ok_or_else(ApiError::not_found)
}

async fn get_deployment(
    State(sh): S,
    Extension(ident): Ident,
    Path((o, r, id)): Path<(String, String, String)>,
) -> ApiResult {
    let st = sh.lock();
    let full = repo_for(&st, &ident, &o, &r)?;
    let d = find_deployment(&st, &full, &id)?;
    Ok(ok(&ctx(&sh, &st).deployment(&full, d)))
}

async fn delete_deployment(
    State(sh): S,
    Extension(ident): Ident,
    Path((o, r, id)): Path<(String, String, String)>,
) -> ApiResult {
    writer(&ident)?;
    let mut st = sh.lock();
    let full = repo_for(&st, &ident, &o, &r)?;
    let d = find_deployment(&st, &full, &id)?.clone();
    let rk = key(&full);
    let active = latest_status(&st, &rk, d.id).is_some_and(|s| s.state != "inactive")
        && st
            .deployment_statuses
            .values()
            .any(|(r, s)| *r == rk && s.deployment_id == d.id && s.state == "success");
    let others = st
        .deployments
        .values()
        .any(|(r, x)| *r == rk && x.id != d.id && x.environment == d.environment);
    if active && others {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "We cannot delete an active deployment unless it is the only deployment in a given environment.",
        ));
    }
    st.deployments.remove(&d.id);
    st.deployment_statuses
        .retain(|_, (r, s)| !(*r == rk && s.deployment_id == d.id));
    Ok(StatusCode::NO_CONTENT.into_response())
}

const DEPLOYMENT_STATES: &[&str] = &[
    "error",
    "failure",
    "inactive",
    "in_progress",
    "queued",
    "pending",
    "success",
];

async fn create_deployment_status(
    State(sh): S,
    Extension(ident): Ident,
    Path((o, r, id)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult {
    let (creator, _) = writer(&ident)?;
    let req = body_object(&body)?;
    const RES: &str = "DeploymentStatus";
    let state = match req.get("state") {
        None | Some(Value::Null) => return Err(ApiError::invalid(RES, "state", "missing_field")),
        Some(Value::String(s)) if DEPLOYMENT_STATES.contains(&s.as_str()) => s.clone(),
        Some(_) => return Err(ApiError::invalid(RES, "state", "invalid")),
    };
    let log_url = str_field(&req, "log_url")
        .or_else(|| str_field(&req, "target_url"))
        .unwrap_or_default()
        .to_string();
    let environment_url = str_field(&req, "environment_url")
        .unwrap_or_default()
        .to_string();
    let description = str_field(&req, "description").unwrap_or_default();
    if description.chars().count() > 140 {
        return Err(ApiError::invalid_custom(
            RES,
            "description",
            "description is too long (maximum is 140 characters)",
        ));
    }
    let description = description.to_string();
    let auto_inactive = bool_field(&req, "auto_inactive", RES, true)?;
    let mut st = sh.lock();
    let full = repo_for(&st, &ident, &o, &r)?;
    let rk = key(&full);
    let dep_id = find_deployment(&st, &full, &id)?.id;
    let environment = match str_field(&req, "environment") {
        Some(e) if !e.is_empty() => e.to_string(),
        _ => find_deployment(&st, &full, &id)?.environment.clone(),
    };
    if let Some((_, d)) = st.deployments.get_mut(&dep_id) {
        d.environment = environment.clone();
        d.updated_at = after(d.updated_at);
    }
    let sid = st.next_id("deployment_status");
    let t = now();
    let s = DeploymentStatus {
        id: sid,
        deployment_id: dep_id,
        state: state.clone(),
        description,
        environment: environment.clone(),
        environment_url,
        log_url,
        creator: creator.clone(),
        created_at: t,
        automatic: false,
    };
    st.deployment_statuses.insert(sid, (rk.clone(), s.clone()));
    if state == "success" && auto_inactive {
        // GitHub: "Adds a new inactive status to all prior non-transient, non-production
        // environment deployments with the same repository and environment name as the
        // created status's deployment. An inactive status is only added to deployments that
        // had a success state."
        let prior: Vec<u64> = st
            .deployments
            .values()
            .filter(|(r, d)| {
                *r == rk
                    && d.id < dep_id
                    && d.environment == environment
                    && !d.transient_environment
                    && !d.production_environment
            })
            .map(|(_, d)| d.id)
            .filter(|did| {
                let had_success = st
                    .deployment_statuses
                    .values()
                    .any(|(r, s)| *r == rk && s.deployment_id == *did && s.state == "success");
                let latest_inactive =
                    latest_status(&st, &rk, *did).is_some_and(|s| s.state == "inactive");
                had_success && !latest_inactive
            })
            .collect();
        for did in prior {
            let aid = st.next_id("deployment_status");
            let auto = DeploymentStatus {
                id: aid,
                deployment_id: did,
                state: "inactive".to_string(),
                description: String::new(),
                environment: environment.clone(),
                environment_url: String::new(),
                log_url: String::new(),
                creator: creator.clone(),
                created_at: t,
                automatic: true,
            };
            st.deployment_statuses.insert(aid, (rk.clone(), auto));
            if let Some((_, d)) = st.deployments.get_mut(&did) {
                d.updated_at = after(d.updated_at);
            }
        }
    }
    let v = ctx(&sh, &st).deployment_status(&full, &s);
    Ok(created(
        &v,
        &format!(
            "{}repos/{full}/deployments/{dep_id}/statuses/{sid}",
            sh.api_url
        ),
    ))
}

async fn list_deployment_statuses(
    State(sh): S,
    Extension(ident): Ident,
    Path((o, r, id)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let (path, items) = {
        let st = sh.lock();
        let full = repo_for(&st, &ident, &o, &r)?;
        let rk = key(&full);
        let dep_id = find_deployment(&st, &full, &id)?.id;
        let c = ctx(&sh, &st);
        let items: Vec<Value> = st
            .deployment_statuses
            .values()
            .rev()
            .filter(|(r, s)| *r == rk && s.deployment_id == dep_id)
            .map(|(_, s)| c.deployment_status(&full, s))
            .collect();
        (
            format!("/repos/{full}/deployments/{dep_id}/statuses"),
            items,
        )
    };
    Ok(paginate(&sh, &path, q.as_deref(), items))
}

async fn get_deployment_status(
    State(sh): S,
    Extension(ident): Ident,
    Path((o, r, id, sid)): Path<(String, String, String, String)>,
) -> ApiResult {
    let sid = num(&sid)?;
    let st = sh.lock();
    let full = repo_for(&st, &ident, &o, &r)?;
    let dep_id = find_deployment(&st, &full, &id)?.id;
    let s = st
        .deployment_statuses
        .get(&sid)
        .filter(|(r, s)| *r == key(&full) && s.deployment_id == dep_id)
        .map(|(_, s)| s)
        .ok_or_else(ApiError::not_found)?;
    Ok(ok(&ctx(&sh, &st).deployment_status(&full, s)))
}

// ---- commit statuses ----

async fn create_commit_status(
    State(sh): S,
    Extension(ident): Ident,
    Path((o, r, sha)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult {
    let (creator, _) = writer(&ident)?;
    let req = body_object(&body)?;
    const RES: &str = "Status";
    let state = match req.get("state") {
        None | Some(Value::Null) => return Err(ApiError::invalid(RES, "state", "missing_field")),
        Some(Value::String(s))
            if matches!(s.as_str(), "error" | "failure" | "pending" | "success") =>
        {
            s.clone()
        }
        Some(_) => return Err(ApiError::invalid(RES, "state", "invalid")),
    };
    let mut st = sh.lock();
    let full = repo_for(&st, &ident, &o, &r)?;
    let sha = st.resolve_ref(&full, &sha).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("No commit found for SHA: {sha}"),
        )
    })?;
    let context = str_field(&req, "context").unwrap_or("default").to_string();
    let description = str_field(&req, "description").map(str::to_string);
    if description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 140)
    {
        return Err(ApiError::invalid_custom(
            RES,
            "description",
            "description is too long (maximum is 140 characters)",
        ));
    }
    let rk = key(&full);
    let same = st
        .commit_statuses
        .iter()
        .filter(|(r, s)| *r == rk && s.sha == sha && s.context == context)
        .count();
    if same >= 1000 {
        return Err(ApiError::invalid_custom(
            RES,
            "context",
            "This SHA and context has reached the maximum number of statuses.",
        ));
    }
    let id = st.next_id("status");
    let s = CommitStatus {
        id,
        sha: sha.clone(),
        state,
        target_url: str_field(&req, "target_url").map(str::to_string),
        description,
        context,
        creator,
        created_at: now(),
    };
    st.commit_statuses.push((rk, s.clone()));
    let v = ctx(&sh, &st).commit_status(&full, &s);
    Ok(created(
        &v,
        &format!("{}repos/{full}/statuses/{sha}", sh.api_url),
    ))
}

async fn list_commit_statuses(
    State(sh): S,
    Extension(ident): Ident,
    Path((o, r, rf)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let (path, items) = {
        let st = sh.lock();
        let full = repo_for(&st, &ident, &o, &r)?;
        let rk = key(&full);
        let sha = st.resolve_ref(&full, &rf).ok_or_else(ApiError::not_found)?;
        let c = ctx(&sh, &st);
        let items: Vec<Value> = st
            .commit_statuses
            .iter()
            .rev()
            .filter(|(r, s)| *r == rk && s.sha == sha)
            .map(|(_, s)| c.commit_status(&full, s))
            .collect();
        (format!("/repos/{full}/commits/{rf}/statuses"), items)
    };
    Ok(paginate(&sh, &path, q.as_deref(), items))
}

async fn combined_status(
    State(sh): S,
    Extension(ident): Ident,
    Path((o, r, rf)): Path<(String, String, String)>,
) -> ApiResult {
    let st = sh.lock();
    let full = repo_for(&st, &ident, &o, &r)?;
    let rk = key(&full);
    let sha = st.resolve_ref(&full, &rf).ok_or_else(ApiError::not_found)?;
    let mut latest: Vec<&CommitStatus> = Vec::new();
    for (_, s) in st
        .commit_statuses
        .iter()
        .rev()
        .filter(|(r, s)| *r == rk && s.sha == sha)
    {
        if !latest.iter().any(|x| x.context == s.context) {
            latest.push(s);
        }
    }
    let state = if latest
        .iter()
        .any(|s| s.state == "error" || s.state == "failure")
    {
        "failure"
    } else if latest.is_empty() || latest.iter().any(|s| s.state == "pending") {
        "pending"
    } else {
        "success"
    };
    let c = ctx(&sh, &st);
    let statuses: Vec<Value> = latest.iter().map(|s| c.commit_status(&full, s)).collect();
    Ok(ok(&json!({
        "state": state,
        "statuses": statuses,
        "sha": sha,
        "total_count": statuses.len(),
        "repository": c.repo(&full, RepoFlavor::Api),
        "commit_url": format!("{}repos/{full}/commits/{sha}", sh.api_url),
        "url": format!("{}repos/{full}/commits/{sha}/status", sh.api_url),
    })))
}

// ---- collaborators ----

async fn collaborator_permission(
    State(sh): S,
    Extension(ident): Ident,
    Path((o, r, u)): Path<(String, String, String)>,
) -> ApiResult {
    let mut st = sh.lock();
    let full = repo_for(&st, &ident, &o, &r)?;
    if st.user(&u).is_none() {
        st.ensure_user(&u, crate::state::UserKind::User);
    }
    let role = st.role(&full, &u);
    let permission = match role.as_str() {
        "admin" => "admin",
        "maintain" | "write" => "write",
        "triage" | "read" => "read",
        _ => "none",
    };
    let rank = |r: &str| match r {
        "admin" => 5,
        "maintain" => 4,
        "write" => 3,
        "triage" => 2,
        "read" => 1,
        _ => 0,
    };
    let level = rank(&role);
    let c = ctx(&sh, &st);
    let mut user = c.user(&u);
    if let Some(obj) = user.as_object_mut() {
        obj.insert(
            "permissions".into(),
            json!({
                "admin": level >= 5,
                "maintain": level >= 4,
                "push": level >= 3,
                "triage": level >= 2,
                "pull": level >= 1,
            }),
        );
        obj.insert("role_name".into(), role.clone().into());
    }
    Ok(ok(&json!({
        "permission": permission,
        "role_name": role,
        "user": user,
    })))
}
