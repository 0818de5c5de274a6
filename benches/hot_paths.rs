//! Figures for prenv's hot paths, printed by `cargo bench` (no test depends on them):
//!
//! - a webhook delivery from bytes to answer, through the real axum router: signature check
//!   (with two secrets, matching the second, as during a rotation), JSON and octocrab parsing,
//!   the decision and the dedupe claim. GitHub gives a delivery 10 s; prenv aims for well under
//!   a millisecond of its own time.
//! - the signature check alone for small and large bodies (it runs before anything is parsed);
//! - rendering the README's web app template for a pull request;
//! - the memory the delivery-id dedupe window holds when full.
//!
//! The deliveries are real-shaped: the GitHub stand-in the tests use writes them.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use github_standin::{Config as StandInConfig, NewPr, StandIn};
use http_body_util::BodyExt;
use kube::runtime::reflector;
use prenv::decide;
use prenv::intake::Intake;
use prenv::metrics::Metrics;
use prenv::model::{PreviewEnvironmentSpec, PreviewTemplate, PreviewTemplateSpec};
use prenv::receive::signature::{Secrets, sign};
use prenv::receive::{Receiver, router};
use prenv::reconcile::render;
use prenv::trust::TrustChecker;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tower::ServiceExt;

const SECRETS: [&str; 2] = ["old-secret", "current-secret"];

/// A real-shaped `pull_request.opened` body for `acme/shop`, as the stand-in delivers it.
fn opened_body(rt: &tokio::runtime::Runtime) -> Vec<u8> {
    rt.block_on(async {
        let github = StandIn::start(StandInConfig::default())
            .await
            .expect("stand-in starts");
        github.add_repo("acme/shop");
        let delivered = github
            .open_pr("acme/shop", NewPr::new("Add checkout"))
            .await
            .expect("opened");
        github.stop();
        delivered.body_bytes
    })
}

/// prenv's receiver with no template serving the repository: everything up to the decision
/// runs, and no Kubernetes call is made (the client points nowhere).
fn receiver(rt: &tokio::runtime::Runtime) -> (axum::Router, tokio::sync::watch::Sender<bool>) {
    rt.block_on(async {
        let config = kube::Config::new("http://127.0.0.1:9".parse().expect("url"));
        let client = kube::Client::try_from(config).expect("client");
        let (templates, _writer) = reflector::store::<PreviewTemplate>();
        let (ready_tx, ready) = tokio::sync::watch::channel(true);
        let receiver = Receiver::new(
            Secrets::from_list(SECRETS),
            templates,
            ready,
            Arc::new(Intake::new(client, TrustChecker::new(None))),
            Arc::new(Metrics::new()),
        );
        (router(Arc::new(receiver)), ready_tx)
    })
}

fn request(body: &[u8], delivery: u64) -> http::Request<axum::body::Body> {
    http::Request::post("/webhooks/github")
        .header("content-type", "application/json")
        .header("x-github-event", "pull_request")
        .header(
            "x-github-delivery",
            format!("00000000-0000-4000-8000-{delivery:012x}"),
        )
        .header("x-hub-signature-256", sign(SECRETS[1], body))
        .body(axum::body::Body::from(body.to_vec()))
        .expect("request")
}

async fn answer(app: &axum::Router, body: &[u8], delivery: u64) -> u16 {
    let response = app
        .clone()
        .oneshot(request(body, delivery))
        .await
        .expect("answered");
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    status
}

fn delivery(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let body = opened_body(&rt);
    let (app, _ready) = receiver(&rt);
    let next = AtomicU64::new(1);
    assert_eq!(
        rt.block_on(answer(&app, &body, 0)),
        202,
        "an unserved delivery"
    );
    let mut group = c.benchmark_group("delivery");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function(format!("pull_request.opened ({} bytes)", body.len()), |b| {
        b.to_async(&rt).iter(|| {
            let id = next.fetch_add(1, Ordering::Relaxed);
            answer(&app, &body, id)
        })
    });
    group.finish();
}

fn signature(c: &mut Criterion) {
    let secrets = Secrets::from_list(SECRETS);
    let mut group = c.benchmark_group("signature");
    for size in [2 * 1024, 64 * 1024, 1024 * 1024] {
        let body = vec![b'x'; size];
        let header = sign(SECRETS[1], &body);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &body, |b, body| {
            b.iter(|| secrets.verify(Some(black_box(&header)), false, black_box(body)))
        });
    }
    group.finish();
}

fn rendering(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let body = opened_body(&rt);
    let event = octocrab::models::webhook_events::WebhookEvent::try_from_header_and_body(
        "pull_request",
        &body,
    )
    .expect("a pull_request delivery");
    let octocrab::models::webhook_events::WebhookEventPayload::PullRequest(payload) =
        event.specific
    else {
        panic!("not a pull_request payload");
    };
    let facts: PreviewEnvironmentSpec = decide::pull_request_state(&payload.pull_request)
        .expect("facts")
        .facts;
    let example = include_str!("../deploy/examples/preview-template.yaml");
    let template: PreviewTemplate = serde_yaml_ng::from_str(example).expect("example template");
    let spec: PreviewTemplateSpec = template.spec;
    let rendered = render::render("shop", &spec, &facts).expect("renders");
    c.bench_function(
        &format!(
            "render/example template ({} objects)",
            rendered.objects.len()
        ),
        |b| b.iter(|| render::render("shop", black_box(&spec), black_box(&facts))),
    );
}

/// Resident memory of this process in KiB (Linux).
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Not a timing: fill the dedupe window (100 000 delivery ids) through the router and print
/// what it costs in memory.
fn dedupe_memory(_: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let body = opened_body(&rt);
    let (app, _ready) = receiver(&rt);
    let ids = 100_000u64;
    let before = rss_kib();
    rt.block_on(async {
        for id in 0..ids {
            assert_eq!(answer(&app, &body, id).await, 202);
        }
    });
    match (before, rss_kib()) {
        (Some(before), Some(after)) => println!(
            "dedupe window full ({ids} delivery ids): +{:.1} MiB resident ({:.0} bytes per id)",
            after.saturating_sub(before) as f64 / 1024.0,
            after.saturating_sub(before) as f64 * 1024.0 / ids as f64
        ),
        _ => println!("dedupe window: resident memory unknown (no /proc/self/status)"),
    }
}

criterion_group!(benches, delivery, signature, rendering, dedupe_memory);
criterion_main!(benches);
