//! Injected faults: the answers GitHub gives when it is down, limiting, or refusing a token.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::model::FaultKind;
use crate::server::ApiError;

pub(crate) const SECONDARY_MESSAGE: &str = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID";
pub(crate) const SECONDARY_DOCS: &str = "https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits";
pub(crate) const PRIMARY_DOCS: &str =
    "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api";

/// The answer to a faulted request, and for a primary rate limit the reset it announces.
pub(crate) fn response(
    kind: &FaultKind,
    request_id: &str,
    user_id: u64,
) -> (Response, Option<i64>) {
    match kind {
        FaultKind::ServerError => (
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Server Error").into_response(),
            None,
        ),
        FaultKind::SecondaryRateLimit { retry_after_secs } => (
            secondary(StatusCode::FORBIDDEN, *retry_after_secs, request_id),
            None,
        ),
        FaultKind::TooManyRequests { retry_after_secs } => (
            secondary(StatusCode::TOO_MANY_REQUESTS, *retry_after_secs, request_id),
            None,
        ),
        FaultKind::PrimaryRateLimit { reset_in_secs } => {
            let reset = chrono::Utc::now().timestamp() + *reset_in_secs as i64;
            (primary_response(user_id), Some(reset))
        }
        FaultKind::Unauthorized => (ApiError::bad_credentials().into_response(), None),
        FaultKind::Status { status, message } => {
            let code = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (ApiError::new(code, message).into_response(), None)
        }
        FaultKind::Delay { .. } => (StatusCode::OK.into_response(), None),
        FaultKind::LostAnswer => (lost_answer(), None),
    }
}

/// The 502 that replaces the answer of a request that was carried out.
pub(crate) fn lost_answer() -> Response {
    ApiError::new(StatusCode::BAD_GATEWAY, "Server Error").into_response()
}

fn secondary(status: StatusCode, retry_after: u64, request_id: &str) -> Response {
    let body = json!({
        "message": format!("{SECONDARY_MESSAGE} {request_id}."),
        "documentation_url": SECONDARY_DOCS,
        "status": status.as_u16().to_string(),
    });
    let mut resp = (status, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
        resp.headers_mut().insert("retry-after", v);
    }
    resp
}

/// 403 for an exhausted primary rate limit (the caller sets the `x-ratelimit-*` headers).
pub(crate) fn primary_response(user_id: u64) -> Response {
    let body = json!({
        "message": format!("API rate limit exceeded for user ID {user_id}. If you reach out to GitHub Support for help, please include the request ID."),
        "documentation_url": PRIMARY_DOCS,
        "status": "403",
    });
    (StatusCode::FORBIDDEN, axum::Json(body)).into_response()
}
