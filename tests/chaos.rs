//! Convergence under chaos: 30 pull requests of two templates live through opens, pushes,
//! label and draft changes, closes, merges and reopens; their deliveries reach prenv shuffled,
//! some late, some twice, some never; prenv is killed (SIGKILL) twice while they arrive and
//! GitHub fails a share of its calls (some of its writes are done but answered 502). Then
//! the resync must bring everything to what GitHub says is true. Prints the seed
//! (`PRENV_CHAOS_SEED` replays the plan) and the figures of the run.

#[path = "chaos/plan.rs"]
mod plan;
mod support;
#[path = "chaos/truth.rs"]
mod truth;

use futures::StreamExt;
use github_standin::{Fault, FaultKind, Method};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client};
use plan::{PREVIEW, Plan, Rng};
use prenv::model::{PreviewEnvironment, PreviewTemplate};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::*;
use truth::{Template, World};

const PRS: usize = 30;
/// At least this many changes, so that at least 200 deliveries are sent whatever is dropped.
const MIN_CHANGES: usize = 240;
/// The changes are made, and their deliveries sent, in this many waves.
const WAVES: usize = 8;
/// prenv is killed while these waves' deliveries arrive.
const CRASH_WAVES: [usize; 2] = [2, 5];
/// Percentages of deliveries never sent, and sent a second time (same delivery id, later).
const DROP: usize = 10;
const DUPLICATE: usize = 10;
/// While the deliveries arrive, every this many POSTs of prenv to GitHub is carried out but
/// answered 502, and every this many of its other calls fails with a 500.
const LOST_EVERY: u32 = 5;
const FAULT_EVERY: u32 = 4;
/// Deliveries in flight at once.
const PARALLEL: usize = 4;
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(240);

/// Light resources: the point is the bookkeeping, not the pods.
const RESOURCES: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: head\ndata:\n  HEAD_SHA: \"{{ pr.head_sha }}\"\n";

/// One delivery as GitHub would send it.
#[derive(Clone)]
struct Outgoing {
    id: String,
    body: Arc<Vec<u8>>,
}

/// What sending deliveries came to.
#[derive(Default, Debug)]
struct Tally {
    sent: usize,
    /// Not answered: prenv was down or died with the request in flight.
    unanswered: usize,
    /// Answers by HTTP status.
    answers: BTreeMap<u16, usize>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.sent += other.sent;
        self.unanswered += other.unanswered;
        for (status, n) in other.answers {
            *self.answers.entry(status).or_default() += n;
        }
    }
}

/// Send `batch` to prenv at `url`, [`PARALLEL`] at a time, counting answers in `answered`.
async fn send(url: String, batch: Vec<Outgoing>, answered: Arc<AtomicUsize>) -> Tally {
    let results: Vec<_> = futures::stream::iter(batch)
        .map(|d| {
            let url = url.clone();
            let answered = answered.clone();
            async move {
                let sig = sign(&d.body);
                let r = try_post_delivery(&url, "pull_request", &d.id, &d.body, Some(sig)).await;
                answered.fetch_add(1, Ordering::SeqCst);
                r.map(|(status, _)| status)
            }
        })
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let mut tally = Tally {
        sent: results.len(),
        ..Tally::default()
    };
    for r in results {
        match r {
            Ok(status) => *tally.answers.entry(status).or_default() += 1,
            Err(_) => tally.unanswered += 1,
        }
    }
    tally
}

/// Send `batch`, killing prenv with SIGKILL once a few deliveries were answered (others in
/// flight), and starting it again while the rest keep coming.
async fn send_through_a_crash(prenv: &mut Prenv, batch: Vec<Outgoing>) -> Tally {
    assert!(batch.len() > 2 * PARALLEL, "a crash wave sends enough");
    let answered = Arc::new(AtomicUsize::new(0));
    let sending = tokio::spawn(send(prenv.webhook_url(), batch, answered.clone()));
    wait_for(
        "a few deliveries answered before the crash",
        Duration::from_secs(60),
        || async { (answered.load(Ordering::SeqCst) >= PARALLEL).then_some(()) },
    )
    .await;
    prenv.kill();
    prenv.start_again().await;
    sending.await.expect("sending task")
}

#[tokio::test]
async fn converges_to_github_truth_under_chaos() {
    let seed = plan::seed();
    println!("chaos seed {seed} (PRENV_CHAOS_SEED={seed} replays this plan)");
    let mut rng = Rng::new(seed);
    let client = client().await;
    let ns = unique("t-chaos");
    let repo = format!("acme/{}", unique("chaos"));
    let templates = [
        Template {
            name: unique("web"),
            triggers: truth::not_draft,
        },
        Template {
            name: unique("lab"),
            triggers: truth::labelled_preview,
        },
    ];
    create_namespace(&client, &ns).await;
    let web = json!({"repository": repo, "resources": RESOURCES});
    apply_template(&client, &ns, &templates[0].name, web).await;
    let lab = json!({
        "repository": repo,
        "trigger": {"requireLabels": [PREVIEW], "skipDrafts": false},
        "resources": RESOURCES,
    });
    apply_template(&client, &ns, &templates[1].name, lab).await;
    // No hook: every delivery is the test's to send, drop, repeat or reorder.
    let github = github(&repo).await;
    // A flaky GitHub: some writes are done but their answer is lost (a 502), and a share of
    // every call fails with a 500.
    github.inject_fault(
        Fault::new(
            Some(Method::POST),
            "/repos/",
            u32::MAX,
            FaultKind::LostAnswer,
        )
        .every(LOST_EVERY),
    );
    github.inject_fault(Fault::new(None, "", u32::MAX, FaultKind::ServerError).every(FAULT_EVERY));
    let mut prenv = Prenv::start_with(&ns, &github, &["--resync-interval", "5s"]).await;

    let mut plan = Plan::new(&mut rng, PRS, MIN_CHANGES);
    let per_wave = plan.len().div_ceil(WAVES);
    let (mut events, mut dropped, mut duplicated, mut restarts) = (0, 0, 0, 0);
    let mut tally = Tally::default();
    // Deliveries to send wait here; a fifth of each wave's stay for the next one (late).
    let mut pool: Vec<Outgoing> = Vec::new();
    // Second copies, with the wave they are sent in.
    let mut copies: Vec<(usize, Outgoing)> = Vec::new();
    for wave in 0..WAVES {
        let last = wave + 1 == WAVES;
        for step in wave * per_wave..((wave + 1) * per_wave).min(plan.len()) {
            let delivered = plan.apply(step, &github, &repo).await;
            events += 1;
            if rng.percent(DROP) {
                dropped += 1;
                continue;
            }
            let out = Outgoing {
                id: delivered.id,
                body: Arc::new(delivered.body_bytes),
            };
            if rng.percent(DUPLICATE) {
                duplicated += 1;
                copies.push((wave + 1 + rng.below(3), out.clone()));
            }
            pool.push(out);
        }
        let (due, later): (Vec<_>, Vec<_>) =
            copies.into_iter().partition(|(w, _)| *w <= wave || last);
        copies = later;
        pool.extend(due.into_iter().map(|(_, d)| d));
        rng.shuffle(&mut pool);
        let batch = pool.split_off(if last { 0 } else { pool.len() / 5 });
        if CRASH_WAVES.contains(&wave) {
            tally.add(send_through_a_crash(&mut prenv, batch).await);
            restarts += 1;
        } else {
            let answered = Arc::new(AtomicUsize::new(0));
            tally.add(send(prenv.webhook_url(), batch, answered).await);
        }
    }
    assert!(
        pool.is_empty() && copies.is_empty(),
        "everything due was sent"
    );
    let start = Instant::now();
    // GitHub stays flaky until prenv has felt it, then recovers.
    let faulted = || github.requests().iter().filter(|r| r.faulted).count();
    wait_for(
        "prenv to meet GitHub's faults",
        Duration::from_secs(120),
        || async { (faulted() >= 20).then_some(()) },
    )
    .await;
    github.clear_faults();
    let faults = faulted();
    let calls = github.requests().len();

    // The resync (every 5 s) repairs what the chaos left; wait for the truth.
    let numbers = plan.numbers();
    let world = World {
        client: &client,
        ns: &ns,
        repo: &repo,
        github: &github,
        templates: &templates,
        numbers: &numbers,
    };
    let outcome = converge(&world, start).await;
    let converged = match &outcome {
        Ok(_) => format!("converged in {:.1}s", start.elapsed().as_secs_f64()),
        Err(_) => format!("NOT converged after {CONVERGE_TIMEOUT:?}"),
    };
    println!(
        "chaos figures: seed {seed} | {} PRs, {events} changes | deliveries sent {} \
         (dropped {dropped}, duplicated {duplicated}, unanswered {}, answers {:?}) | \
         restarts {restarts} (SIGKILL) | GitHub calls {calls}, faulted {faults} | {converged}",
        numbers.len(),
        tally.sent,
        tally.unanswered,
        tally.answers,
    );
    // Leave the shared cluster as found, whatever the outcome.
    let torn_down = tear_down(&client, &ns, &templates).await;
    let expected = outcome.unwrap_or_else(|differences| {
        panic!(
            "not converged (seed {seed}, prenv log {}); {} differences:\n{}",
            prenv.log().display(),
            differences.len(),
            differences.join("\n")
        )
    });
    println!("environments the truth calls for: {expected:?}");

    // The run was the chaos the issue asks for.
    assert!(tally.sent >= 200, "at least 200 deliveries sent: {tally:?}");
    assert_eq!(restarts, 2);
    assert!(dropped > 0 && duplicated > 0);
    // (A 408 is prenv cutting off a delivery it took too long over, which is not refusing it.)
    assert!(
        tally
            .answers
            .keys()
            .all(|s| !(400..500).contains(s) || *s == 408),
        "every delivery was well-formed and signed: {tally:?}"
    );
    for t in &templates {
        let n = expected.get(&t.name).copied().unwrap_or(0);
        assert!(
            0 < n && n < numbers.len(),
            "{}: some pull requests have an environment, some do not ({n})",
            t.name
        );
    }
    assert!(
        torn_down,
        "deleting the templates tore their environments down"
    );
}

/// Check `world` until it matches the truth ([`CONVERGE_TIMEOUT`] after `start`): the
/// environments the truth calls for, or the differences left at the end.
async fn converge(world: &World<'_>, start: Instant) -> Result<truth::Expected, Vec<String>> {
    loop {
        let differences = match world.check().await {
            Ok(expected) => return Ok(expected),
            Err(differences) => differences,
        };
        if start.elapsed() > CONVERGE_TIMEOUT {
            return Err(differences);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Delete the templates (their environments go with them, torn down by prenv), then the
/// test's namespace. Whether the environments were gone in time.
async fn tear_down(client: &Client, ns: &str, templates: &[Template]) -> bool {
    for t in templates {
        Api::<PreviewTemplate>::namespaced(client.clone(), ns)
            .delete(&t.name, &DeleteParams::default())
            .await
            .expect("template deleted");
    }
    let envs = Api::<PreviewEnvironment>::namespaced(client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        let left = envs
            .list(&ListParams::default())
            .await
            .expect("environments");
        if left.items.is_empty() {
            Api::<Namespace>::all(client.clone())
                .delete(ns, &DeleteParams::default())
                .await
                .expect("test namespace deleted");
            return true;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    false
}
