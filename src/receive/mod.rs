//! Receive: `POST /webhooks/github`. Verifies, dedupes and parses a delivery, decides for every
//! template serving its repository and writes the desired `PreviewEnvironment`s. Everything
//! else (rendering, applying, GitHub feedback) happens in the controller.

pub mod signature;

use crate::decide::{self, Decision, PrAction};
use crate::intake::Intake;
use crate::model::PreviewTemplate;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use octocrab::models::webhook_events::{WebhookEvent, WebhookEventPayload};
use serde_json::json;
use signature::Secrets;
use std::sync::Arc;
use std::time::Duration;

/// GitHub caps a delivery at 25 MiB.
pub const MAX_BODY: usize = 25 * 1024 * 1024;
/// How many delivery ids are remembered, and for how long, to drop redeliveries.
const DEDUPE_CAPACITY: u64 = 100_000;
const DEDUPE_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// How long a delivery waits for the template cache on start-up before being refused.
const CACHE_WAIT: Duration = Duration::from_secs(5);

pub struct Receiver {
    secrets: Secrets,
    templates: Store<PreviewTemplate>,
    ready: crate::serve::Ready,
    intake: Arc<Intake>,
    seen: moka::sync::Cache<String, ()>,
}

impl Receiver {
    pub fn new(
        secrets: Secrets,
        templates: Store<PreviewTemplate>,
        ready: crate::serve::Ready,
        intake: Arc<Intake>,
    ) -> Self {
        Self {
            secrets,
            templates,
            ready,
            intake,
            seen: moka::sync::Cache::builder()
                .max_capacity(DEDUPE_CAPACITY)
                .time_to_live(DEDUPE_WINDOW)
                .build(),
        }
    }
}

pub fn router(receiver: Arc<Receiver>) -> Router {
    Router::new()
        .route("/webhooks/github", post(github_webhook))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(receiver)
}

/// A reply to GitHub: a status and a small JSON body saying what happened.
struct Reply(StatusCode, serde_json::Value);

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        (self.0, axum::Json(self.1)).into_response()
    }
}

fn reject(status: StatusCode, reason: impl std::fmt::Display) -> Reply {
    Reply(status, json!({"error": reason.to_string()}))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn github_webhook(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> Reply {
    // Authenticity first: nothing about an unsigned body is looked at.
    if let Err(e) = receiver.secrets.verify(
        header(&headers, "x-hub-signature-256"),
        headers.contains_key("x-hub-signature"),
        &body,
    ) {
        tracing::warn!(error = %e, "rejected webhook delivery");
        return reject(StatusCode::UNAUTHORIZED, e);
    }
    let Some(event) = header(&headers, "x-github-event") else {
        return reject(StatusCode::BAD_REQUEST, "missing X-GitHub-Event header");
    };
    let Some(delivery) = header(&headers, "x-github-delivery").filter(|d| !d.is_empty()) else {
        return reject(StatusCode::BAD_REQUEST, "missing X-GitHub-Delivery header");
    };
    let event = event.to_string();
    let delivery = delivery.to_string();
    // Well-formed JSON first, whatever the event: a broken body is the sender's bug.
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return reject(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")),
    };
    let span = tracing::info_span!("delivery", %delivery, %event);
    let _enter = span.enter();
    match event.as_str() {
        "ping" => Reply(StatusCode::OK, json!({"result": "pong"})),
        "pull_request" => {
            let action = value.get("action").and_then(|a| a.as_str()).unwrap_or("");
            let Some(action) = PrAction::from_delivery(action) else {
                tracing::debug!(action, "ignored pull_request action");
                return Reply(
                    StatusCode::ACCEPTED,
                    json!({"result": "ignored", "reason": format!("action {action:?} is not acted on")}),
                );
            };
            drop(_enter);
            handle_pull_request(&receiver, &delivery, action, &body).await
        }
        other => {
            tracing::debug!(event = other, "ignored event");
            Reply(
                StatusCode::ACCEPTED,
                json!({"result": "ignored", "reason": format!("event {other:?} is not acted on")}),
            )
        }
    }
}

async fn handle_pull_request(
    receiver: &Receiver,
    delivery: &str,
    action: PrAction,
    body: &[u8],
) -> Reply {
    let parsed = match WebhookEvent::try_from_header_and_body("pull_request", body) {
        Ok(e) => e,
        Err(e) => {
            return reject(
                StatusCode::BAD_REQUEST,
                format!("not a pull_request delivery: {e}"),
            );
        }
    };
    let WebhookEventPayload::PullRequest(payload) = parsed.specific else {
        return reject(StatusCode::BAD_REQUEST, "not a pull_request delivery");
    };
    let state = match decide::pull_request_state(&payload.pull_request) {
        Ok(s) => s,
        Err(e) => return reject(StatusCode::BAD_REQUEST, e),
    };
    // Only a delivery that passed every check claims its id, so a rejected or failed one
    // can be redelivered.
    if !receiver
        .seen
        .entry(delivery.to_string())
        .or_insert(())
        .is_fresh()
    {
        return Reply(
            StatusCode::OK,
            json!({"result": "duplicate", "reason": "delivery already handled"}),
        );
    }

    if !matches!(
        tokio::time::timeout(CACHE_WAIT, receiver.ready.clone().wait_for(|r| *r)).await,
        Ok(Ok(_))
    ) {
        receiver.seen.invalidate(delivery);
        return reject(
            StatusCode::SERVICE_UNAVAILABLE,
            "template cache not ready yet",
        );
    }
    let repository = state.facts.repository.clone();
    let templates: Vec<_> = receiver
        .templates
        .state()
        .into_iter()
        .filter(|t| decide::serves(&t.spec, &repository))
        .collect();
    let mut outcomes = Vec::new();
    let mut failed = Vec::new();
    for template in templates {
        let decision = decide::decide(action, &state, &template.name_any(), &template.spec);
        if let Decision::Keep { reason } = &decision {
            tracing::info!(template = %template.name_any(), %reason, "environment left as it is");
        }
        match receiver
            .intake
            .carry_out(
                &template,
                state.facts.number,
                state.facts.updated_at,
                decision,
            )
            .await
        {
            Ok(outcome) => {
                tracing::info!(?outcome, "delivery handled");
                outcomes.push(outcome);
            }
            Err(e) => {
                tracing::error!(template = %template.name_any(), error = %e, "could not write environment");
                failed.push(json!({"template": template.name_any(), "error": e.to_string()}));
            }
        }
    }
    if !failed.is_empty() {
        receiver.seen.invalidate(delivery);
        return Reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "could not write every environment", "failed": failed, "environments": outcomes}),
        );
    }
    if outcomes.is_empty() {
        return Reply(
            StatusCode::ACCEPTED,
            json!({"result": "ignored", "reason": format!("no PreviewTemplate serves {repository}")}),
        );
    }
    Reply(
        StatusCode::OK,
        json!({"result": "handled", "environments": outcomes}),
    )
}
