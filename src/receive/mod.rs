//! Receive: `POST /webhooks/github`. Verifies, dedupes and parses a delivery, decides for every
//! template serving its repository and writes the desired `PreviewEnvironment`s (or, for a
//! `/preview` command in a PR comment, annotates them). Everything else (rendering, applying,
//! GitHub feedback) happens in the controller.

pub mod checks;
pub mod dedupe;
pub mod limits;
pub mod peers;
pub mod server;
pub mod signature;

use crate::command::{self, Command, CommentCommand, Parsed};
use crate::decide::{self, PrAction};
use crate::intake::Intake;
use crate::metrics::Metrics;
use crate::model::PreviewTemplate;
use crate::trust::{LabelEvent, TrustChecker};
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use dedupe::{Claim, Dedupe};
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
    seen: Dedupe,
    metrics: Arc<Metrics>,
}

impl Receiver {
    /// The cached templates that serve `repository`.
    fn serving(&self, repository: &str) -> Vec<Arc<PreviewTemplate>> {
        self.templates
            .state()
            .into_iter()
            .filter(|t| self.intake.serves(t, repository))
            .collect()
    }

    pub fn new(
        secrets: Secrets,
        templates: Store<PreviewTemplate>,
        ready: crate::serve::Ready,
        intake: Arc<Intake>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            secrets,
            templates,
            ready,
            intake,
            metrics,
            seen: Dedupe::new(DEDUPE_CAPACITY, DEDUPE_WINDOW),
        }
    }
}

pub fn router(receiver: Arc<Receiver>) -> Router {
    Router::new()
        .route("/webhooks/github", post(github_webhook))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn_with_state(
            limits::Limits::default(),
            limits::limit_body,
        ))
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

/// Answer a delivery and count it (event, action, result) with its latency.
async fn github_webhook(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let start = std::time::Instant::now();
    // Header values are the sender's: only known names become metric labels.
    let event = match header(&headers, "x-github-event") {
        Some(e @ ("pull_request" | "issue_comment" | "ping" | "installation" | "push")) => e,
        Some(_) => "other",
        None => "none",
    };
    let reply = answer(&receiver, &headers, body).await;
    let action = reply.1.get("action").and_then(|a| a.as_str()).unwrap_or("");
    let result = match reply.1.get("result").and_then(|r| r.as_str()) {
        Some(result) => result.to_string(),
        None => reply.0.as_u16().to_string(),
    };
    receiver
        .metrics
        .delivery(event, action, &result, start.elapsed().as_secs_f64());
    reply
}

async fn answer(
    receiver: &Receiver,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let body = match body {
        Ok(body) => body,
        // A chunked body over the cap (one declared too large is refused before this).
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return reject(e.status(), limits::too_large_reason(None));
        }
        Err(e) => return reject(e.status(), e.body_text()),
    };
    // Authenticity first: nothing about an unsigned body is looked at.
    if let Err(e) = receiver.secrets.verify(
        header(headers, "x-hub-signature-256"),
        headers.contains_key("x-hub-signature"),
        &body,
    ) {
        tracing::warn!(error = %e, "rejected webhook delivery");
        return reject(StatusCode::UNAUTHORIZED, e);
    }
    let Some(event) = header(headers, "x-github-event") else {
        return reject(StatusCode::BAD_REQUEST, "missing X-GitHub-Event header");
    };
    let delivery = match checks::delivery_id(header(headers, "x-github-delivery")) {
        Ok(delivery) => delivery,
        Err(e) => return reject(StatusCode::BAD_REQUEST, e),
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
                    json!({"result": "ignored", "action": "other", "reason": format!("action {action:?} is not acted on")}),
                );
            };
            drop(_enter);
            let mut reply = handle_pull_request(receiver, &delivery, action, &body).await;
            if let Some(answer) = reply.1.as_object_mut() {
                answer.insert("action".into(), json!(action.as_str()));
            }
            reply
        }
        "issue_comment" => {
            // Only known names become metric labels.
            let action = value
                .get("action")
                .and_then(|a| a.as_str())
                .filter(|a| matches!(*a, "created" | "edited" | "deleted"))
                .unwrap_or("other");
            drop(_enter);
            let mut reply = handle_issue_comment(receiver, &delivery, &body).await;
            if let Some(answer) = reply.1.as_object_mut() {
                answer.insert("action".into(), json!(action));
            }
            reply
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

/// Claim a delivery that passed every check, or the answer when it must not be acted on: a
/// duplicate, or the caches are not ready. Only a delivery that passed every check claims its
/// id, so a rejected one can be redelivered; the claim is given back unless [`settle`] keeps
/// it, so a failed one or one cut off by the request timeout can be too.
async fn claim<'a>(receiver: &'a Receiver, delivery: &str) -> Result<Claim<'a>, Reply> {
    let Some(claim) = receiver.seen.claim(delivery) else {
        return Err(Reply(
            StatusCode::OK,
            json!({"result": "duplicate", "reason": "delivery already handled"}),
        ));
    };
    if !matches!(
        tokio::time::timeout(CACHE_WAIT, receiver.ready.clone().wait_for(|r| *r)).await,
        Ok(Ok(_))
    ) {
        return Err(reject(
            StatusCode::SERVICE_UNAVAILABLE,
            "template cache not ready yet",
        ));
    }
    Ok(claim)
}

/// Keep a claimed delivery's id unless it could not be carried out (a 5xx): GitHub's
/// redelivery of that must be acted on.
fn settle(claim: Claim<'_>, reply: Reply) -> Reply {
    if !reply.0.is_server_error() {
        claim.keep();
    }
    reply
}

/// A claimed delivery that could not be carried out everywhere: 503 (so its claim is given
/// back, and GitHub's redelivery is acted on).
fn incomplete(
    error: &str,
    failed: Vec<serde_json::Value>,
    environments: serde_json::Value,
) -> Reply {
    Reply(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"error": error, "failed": failed, "environments": environments}),
    )
}

fn not_served(repository: &str) -> Reply {
    Reply(
        StatusCode::ACCEPTED,
        json!({"result": "ignored", "reason": format!("no PreviewTemplate serves {repository}")}),
    )
}

/// A `/preview` command in a pull request comment. Acknowledged on the comment with a
/// reaction once the sender is known to have write access: 👍 carried out, 😕 not understood
/// or nothing to act on. A sender without it gets no reaction at all.
async fn handle_issue_comment(receiver: &Receiver, delivery: &str, body: &[u8]) -> Reply {
    let command = match command::from_delivery(body) {
        Ok(Parsed::Command(c)) => c,
        Ok(Parsed::Ignored(reason)) => {
            tracing::debug!(reason, "ignored comment");
            return Reply(
                StatusCode::ACCEPTED,
                json!({"result": "ignored", "reason": reason}),
            );
        }
        Err(e) => return reject(StatusCode::BAD_REQUEST, e),
    };
    match claim(receiver, delivery).await {
        Ok(claim) => settle(claim, redeploy(receiver, &command).await),
        Err(reply) => reply,
    }
}

/// Carry out a `/preview` command from a claimed delivery. Nothing is written for a sender
/// who may not command any template here (no reaction either: strangers get no write budget).
async fn redeploy(receiver: &Receiver, command: &CommentCommand) -> Reply {
    let templates = receiver.serving(&command.repository);
    if templates.is_empty() {
        return not_served(&command.repository);
    }
    let trust = receiver.intake.trust();
    let mut allowed = Vec::new();
    let mut denied = Vec::new();
    for template in templates {
        let may = trust
            .may_command(
                &template.spec.trust,
                &command.repository,
                &command.login,
                &command.association,
            )
            .await;
        if may {
            allowed.push(template);
        } else {
            denied.push(template.name_any());
        }
    }
    if allowed.is_empty() {
        tracing::info!(login = %command.login, denied = ?denied, "command from someone without write access");
        return Reply(
            StatusCode::OK,
            json!({"result": "denied", "denied": denied}),
        );
    }
    if let Command::Unknown(word) = &command.command {
        react(trust, command, "confused");
        return Reply(
            StatusCode::ACCEPTED,
            json!({"result": "unknown_command", "reason": format!("/preview {word} is not a command (try /preview redeploy)")}),
        );
    }
    let mut redeploying = Vec::new();
    let mut failed = Vec::new();
    for template in allowed {
        let name = template.name_any();
        match receiver
            .intake
            .request_redeploy(&template, command.number, &command.request())
            .await
        {
            Ok(Some(environment)) => redeploying.push(environment),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(template = %name, error = %e, "could not request a redeploy");
                failed.push(json!({"template": name, "error": e.to_string()}));
            }
        }
    }
    if !failed.is_empty() {
        return incomplete(
            "could not reach every environment",
            failed,
            json!(redeploying),
        );
    }
    tracing::info!(login = %command.login, environments = ?redeploying, denied = ?denied, "redeploy command");
    let (reaction, result) = if redeploying.is_empty() {
        ("confused", "no_environment")
    } else {
        ("+1", "handled")
    };
    react(trust, command, reaction);
    Reply(
        StatusCode::OK,
        json!({"result": result, "command": "redeploy", "environments": redeploying, "denied": denied}),
    )
}

/// Acknowledge a command with a reaction, in the background (GitHub's pace is not ours).
fn react(trust: &TrustChecker, command: &CommentCommand, content: &'static str) {
    let Some(github) = trust.github().cloned() else {
        return;
    };
    let repository = command.repository.clone();
    let path = format!(
        "/repos/{repository}/issues/comments/{}/reactions",
        command.comment_id
    );
    tokio::spawn(async move {
        let body = json!({ "content": content });
        if let Err(e) = github
            .request(&repository, http::Method::POST, &path, Some(&body))
            .await
        {
            tracing::warn!(%repository, error = %e, "could not react to a command");
        }
    });
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
                format!("not a pull_request delivery: {}", checks::explain(body, &e)),
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
    // Who added which label: an approval counts only from someone with write access.
    let label = match (action, &payload.label, &parsed.sender) {
        (PrAction::Labeled, Some(label), Some(sender)) => Some(LabelEvent {
            label: label.name.clone(),
            sender: sender.login.clone(),
        }),
        _ => None,
    };
    match claim(receiver, delivery).await {
        Ok(claim) => settle(claim, act(receiver, action, &state, label.as_ref()).await),
        Err(reply) => reply,
    }
}

/// Write the environments of a claimed `pull_request` delivery.
async fn act(
    receiver: &Receiver,
    action: PrAction,
    state: &decide::PullRequestState,
    label: Option<&LabelEvent>,
) -> Reply {
    let repository = state.facts.repository.clone();
    let templates = receiver.serving(&repository);
    // The templates at once: each may wait (briefly) for an earlier teardown to finish, and
    // GitHub gives up on a delivery after 10 s, however many templates serve the repository.
    let handled = futures::future::join_all(
        templates
            .iter()
            .map(|template| receiver.intake.handle(action, state, template, label)),
    )
    .await;
    let mut outcomes = Vec::new();
    let mut failed = Vec::new();
    for (template, handled) in templates.iter().zip(handled) {
        match handled {
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
        return incomplete("could not write every environment", failed, json!(outcomes));
    }
    if outcomes.is_empty() {
        return not_served(&repository);
    }
    Reply(
        StatusCode::OK,
        json!({"result": "handled", "environments": outcomes}),
    )
}
