//! The receiver against hostile or broken senders: every bad delivery gets its exact 4xx and
//! changes nothing in the cluster, slow senders are cut off, and prenv stays healthy and keeps
//! taking genuine deliveries afterwards.

// The receiver under load: its own file, to keep this one readable.
#[path = "receiver/pressure.rs"]
mod pressure;
mod support;

use github_standin::NewPr;
use kube::Api;
use kube::api::{DynamicObject, ListParams};
use prenv::model::PreviewEnvironment;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::*;

/// A request as a test wants to send it: every header optional.
struct Delivery<'a> {
    event: Option<&'a str>,
    id: Option<&'a str>,
    headers: Vec<(&'a str, String)>,
    body: Vec<u8>,
}

impl<'a> Delivery<'a> {
    /// A `pull_request` delivery of `body` with id `id`, correctly signed.
    fn signed(event: &'a str, id: &'a str, body: &[u8]) -> Self {
        Self {
            event: Some(event),
            id: Some(id),
            headers: vec![("x-hub-signature-256", sign(body))],
            body: body.to_vec(),
        }
    }

    /// Like [`Delivery::signed`] but with exactly these signature headers.
    fn with_signature(
        event: &'a str,
        id: &'a str,
        body: &[u8],
        headers: Vec<(&'a str, String)>,
    ) -> Self {
        Self {
            event: Some(event),
            id: Some(id),
            headers,
            body: body.to_vec(),
        }
    }

    async fn send(self, url: &str) -> (u16, Value) {
        let mut req = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .body(self.body);
        if let Some(event) = self.event {
            req = req.header("x-github-event", event);
        }
        if let Some(id) = self.id {
            req = req.header("x-github-delivery", id);
        }
        for (name, value) in self.headers {
            req = req.header(name, value);
        }
        let resp = req.send().await.expect("delivery sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

/// `body` parsed, changed by `f`, and serialized again.
fn altered(body: &[u8], f: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut value: Value = serde_json::from_slice(body).expect("JSON body");
    f(&mut value);
    serde_json::to_vec(&value).expect("serialize")
}

async fn environments(s: &Scenario) -> Vec<PreviewEnvironment> {
    Api::<PreviewEnvironment>::namespaced(s.client.clone(), &s.ns)
        .list(&ListParams::default())
        .await
        .expect("list environments")
        .items
}

/// No `PreviewEnvironment` in the scenario's namespace, now and a little later (a delivery
/// that was wrongly accepted would have written one by then).
async fn assert_no_environment(s: &Scenario) {
    for _ in 0..2 {
        let envs = environments(s).await;
        assert!(
            envs.is_empty(),
            "bad deliveries created environments: {:?}",
            envs.iter()
                .map(|e| e.metadata.name.clone())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn assert_healthy(s: &Scenario) {
    let resp = reqwest::get(format!("{}/healthz", s.prenv.admin_url()))
        .await
        .expect("healthz answers");
    assert_eq!(resp.status().as_u16(), 200);
}

/// A genuine, signed `opened` delivery creates the environment; its `closed` delivery removes
/// it again, so nothing is left behind.
async fn assert_genuine_delivery_works(s: &Scenario, title: &str) {
    let opened = s
        .github
        .open_pr(&s.repo, new_pr(title))
        .await
        .expect("open");
    let number = opened.payload["number"].as_u64().expect("number");
    let (code, answer) = Delivery::signed("pull_request", &unique("genuine"), &opened.body_bytes)
        .send(&s.prenv.webhook_url())
        .await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["result"], "handled", "{answer}");
    s.wait_env(number, "environment of a genuine delivery", |_| true)
        .await;
    close_and_wait_gone(s, number).await;
}

/// Close pull request `number` and deliver that; its environment is removed.
async fn close_and_wait_gone(s: &Scenario, number: u64) {
    let closed = s.github.close(&s.repo, number, false).await.expect("close");
    let (code, answer) = Delivery::signed("pull_request", &unique("close"), &closed.body_bytes)
        .send(&s.prenv.webhook_url())
        .await;
    assert_eq!(code, 200, "{answer}");
    s.wait_env_gone(number).await;
}

/// A scenario whose stand-in sends no deliveries itself: the test sends every one.
async fn quiet_scenario(prefix: &str, args: &[&str]) -> Scenario {
    // No resync either: these tests check what deliveries alone do, and a resync pass (which
    // would rightly repair a PR whose delivery was refused) could run at any moment.
    let mut args = args.to_vec();
    args.extend(["--resync-interval", "0s"]);
    let s = Scenario::start_with_args(prefix, &args).await;
    s.github.clear_hooks();
    s
}

#[tokio::test]
async fn forged_and_malformed_deliveries_are_refused_and_change_nothing() {
    let s = quiet_scenario("t-recv-bad", &[]).await;
    let url = s.prenv.webhook_url();
    let opened = s
        .github
        .open_pr(&s.repo, new_pr("Receiver"))
        .await
        .expect("open");
    let body = opened.body_bytes.clone();
    assert!(!body.is_empty());
    let good = sign(&body);

    // Authenticity: every one of these is 401, and says why.
    let sha1 = github_standin::signature_sha1(SECRET, &body);
    let mut one_byte_off = body.clone();
    let pos = one_byte_off
        .iter()
        .position(|b| *b == b'R')
        .expect("an R in the title");
    one_byte_off[pos] = b'S';
    let forged: Vec<(&str, Delivery, &str)> = vec![
        (
            "missing signature",
            Delivery::with_signature("pull_request", "sig-missing", &body, vec![]),
            "missing X-Hub-Signature-256",
        ),
        (
            "SHA-1 only",
            Delivery::with_signature(
                "pull_request",
                "sig-sha1",
                &body,
                vec![("x-hub-signature", sha1)],
            ),
            "SHA-1",
        ),
        (
            "non-hex",
            Delivery::with_signature(
                "pull_request",
                "sig-nonhex",
                &body,
                vec![("x-hub-signature-256", format!("sha256={}", "zz".repeat(32)))],
            ),
            "malformed",
        ),
        (
            "truncated",
            Delivery::with_signature(
                "pull_request",
                "sig-truncated",
                &body,
                vec![("x-hub-signature-256", good[..good.len() - 8].to_string())],
            ),
            "",
        ),
        (
            "wrong secret",
            Delivery::with_signature(
                "pull_request",
                "sig-wrong-secret",
                &body,
                vec![(
                    "x-hub-signature-256",
                    prenv::receive::signature::sign("not-the-secret", &body),
                )],
            ),
            "does not match",
        ),
        (
            "body altered by one byte",
            Delivery::with_signature(
                "pull_request",
                "sig-altered",
                &one_byte_off,
                vec![("x-hub-signature-256", good.clone())],
            ),
            "does not match",
        ),
    ];
    for (what, delivery, reason) in forged {
        let (code, answer) = delivery.send(&url).await;
        assert_eq!(code, 401, "{what}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(reason), "{what}: {answer}");
    }

    // Correctly signed but not a usable delivery: 400, saying what was wrong.
    let number_as_string = altered(&body, |v| {
        v["number"] = json!(v["number"].to_string());
        v["pull_request"]["number"] = json!(v["pull_request"]["number"].to_string());
    });
    let null_pull_request = altered(&body, |v| v["pull_request"] = Value::Null);
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes();
    let malformed: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        (
            "malformed JSON",
            "bad-json",
            br#"{"action": "opened", "number": "#.to_vec(),
            "malformed JSON",
        ),
        (
            "number as a string",
            "bad-number",
            number_as_string,
            "number",
        ),
        (
            "pull_request: null",
            "bad-null-pr",
            null_pull_request,
            "pull_request",
        ),
        ("deeply nested JSON", "bad-deep", deep, "malformed JSON"),
    ];
    for (what, id, bad, reason) in malformed {
        let (code, answer) = Delivery::signed("pull_request", id, &bad).send(&url).await;
        assert_eq!(code, 400, "{what}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(reason), "{what}: {answer}");
    }

    // Headers GitHub always sends.
    let mut no_event = Delivery::signed("pull_request", "no-event", &body);
    no_event.event = None;
    let (code, answer) = no_event.send(&url).await;
    assert_eq!(code, 400, "{answer}");
    let mut no_id = Delivery::signed("pull_request", "", &body);
    no_id.id = None;
    let (code, answer) = no_id.send(&url).await;
    assert_eq!(code, 400, "{answer}");
    let long_id = "x".repeat(4096);
    let (code, answer) = Delivery::signed("pull_request", &long_id, &body)
        .send(&url)
        .await;
    assert_eq!(code, 400, "{answer}");

    // More than GitHub's 25 MiB cap: refused without reading it all, and the connection is
    // answered, not reset.
    let huge = vec![b' '; 27 * 1000 * 1000];
    let (code, answer) = Delivery::signed("pull_request", "too-big", &huge)
        .send(&url)
        .await;
    assert_eq!(code, 413, "{answer}");

    // Events prenv does not act on are acknowledged and ignored; a ping is answered.
    let star = serde_json::to_vec(&json!({
        "action": "created",
        "starred_at": "2024-05-01T12:00:00Z",
        "repository": opened.payload["repository"],
        "sender": opened.payload["sender"],
    }))
    .expect("star body");
    let (code, answer) = Delivery::signed("star", "star-1", &star).send(&url).await;
    assert_eq!(code, 202, "{answer}");
    assert_eq!(answer["result"], "ignored", "{answer}");
    s.github.add_hook(&url, SECRET);
    let ping = s.github.ping().await.expect("ping");
    s.github.clear_hooks();
    assert_eq!(ping.status, 200, "{}", ping.body);
    let (code, answer) = Delivery::signed("ping", "ping-again", &ping.body_bytes)
        .send(&url)
        .await;
    assert_eq!(code, 200, "{answer}");

    // None of that wrote anything; prenv is healthy, and takes the very same body when it is
    // genuine.
    assert_no_environment(&s).await;
    assert_healthy(&s).await;
    assert_genuine_delivery_works(&s, "Receiver genuine").await;
}

#[tokio::test]
async fn a_pull_request_from_a_deleted_fork_is_untrusted() {
    // GitHub sends `head.repo: null` once the fork a pull request came from was deleted. That
    // is a well-formed delivery (not a 400), but nobody can tell whose code the head is any
    // more, so it counts as a fork: from a CONTRIBUTOR (not a trusted association) it is
    // answered 2xx and nothing is deployed.
    let s = quiet_scenario("t-recv-fork", &[]).await;
    let pr = NewPr {
        fork: Some("stranger/shop".to_string()),
        fork_deleted: true,
        author: "stranger".to_string(),
        author_association: "CONTRIBUTOR".to_string(),
        ..new_pr("From a deleted fork")
    };
    let opened = s.github.open_pr(&s.repo, pr).await.expect("open");
    assert!(opened.payload["pull_request"]["head"]["repo"].is_null());
    let number = opened.payload["number"].as_u64().expect("number");
    let (code, answer) = Delivery::signed("pull_request", "deleted-fork", &opened.body_bytes)
        .send(&s.prenv.webhook_url())
        .await;
    assert!((200..300).contains(&code), "{code}: {answer}");
    // Nothing runs: no environment, or (where untrusted heads are recorded for approval) one
    // that waits for approval and never deploys.
    for _ in 0..2 {
        if let Some(env) = environment(&s.client, &s.ns, &s.env_name(number)).await {
            assert!(
                env_waits_for_approval(&s, number).await,
                "an untrusted head got an environment: {:?}",
                env.spec
            );
        }
        let preview = Api::<k8s_openapi::api::core::v1::Namespace>::all(s.client.clone())
            .get_opt(&s.preview_ns(number))
            .await
            .expect("get namespace");
        assert!(preview.is_none(), "an untrusted head was deployed");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert_healthy(&s).await;
}

/// Whether the environment of `number` is marked as waiting for an approval (read as plain
/// JSON, so this holds whatever else the spec carries).
async fn env_waits_for_approval(s: &Scenario, number: u64) -> bool {
    let gvk = kube::api::GroupVersionKind::gvk("prenv.dev", "v1alpha1", "PreviewEnvironment");
    let resource = kube::api::ApiResource::from_gvk(&gvk);
    let api: Api<DynamicObject> = Api::namespaced_with(s.client.clone(), &s.ns, &resource);
    api.get_opt(&s.env_name(number))
        .await
        .expect("get environment")
        .and_then(|e| {
            e.data["spec"]["awaitingApproval"]
                .as_str()
                .map(str::to_owned)
        })
        .is_some_and(|reason| !reason.is_empty())
}

#[tokio::test]
async fn a_delivery_id_is_acted_on_once() {
    let s = quiet_scenario("t-recv-dup", &[]).await;
    let url = s.prenv.webhook_url();
    let opened = s
        .github
        .open_pr(&s.repo, new_pr("Twice"))
        .await
        .expect("open");
    let number = opened.payload["number"].as_u64().expect("number");
    let id = unique("delivery");

    let (code, answer) = Delivery::signed("pull_request", &id, &opened.body_bytes)
        .send(&url)
        .await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["result"], "handled", "{answer}");
    let env = s.wait_env(number, "environment", |_| true).await;
    let generation = env.metadata.generation;
    let head = env.spec.head_sha.clone();

    // GitHub's redelivery: same id, same body.
    let (code, answer) = Delivery::signed("pull_request", &id, &opened.body_bytes)
        .send(&url)
        .await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["result"], "duplicate", "{answer}");

    // The id alone decides: a newer head under the same id is not acted on either, and two
    // copies of a new id arriving together are acted on exactly once.
    let pushed = s.github.push(&s.repo, number).await.expect("push");
    let (code, answer) = Delivery::signed("pull_request", &id, &pushed.body_bytes)
        .send(&url)
        .await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["result"], "duplicate", "{answer}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let env = environment(&s.client, &s.ns, &s.env_name(number))
        .await
        .expect("environment");
    assert_eq!(env.metadata.generation, generation, "spec rewritten");
    assert_eq!(env.spec.head_sha, head);

    let id2 = unique("together");
    let (a, b) = tokio::join!(
        Delivery::signed("pull_request", &id2, &pushed.body_bytes).send(&url),
        Delivery::signed("pull_request", &id2, &pushed.body_bytes).send(&url),
    );
    let mut results = [
        a.1["result"].as_str().unwrap_or_default().to_string(),
        b.1["result"].as_str().unwrap_or_default().to_string(),
    ];
    results.sort();
    assert_eq!(results, ["duplicate", "handled"], "{a:?} {b:?}");
    let new_head = pushed.payload["pull_request"]["head"]["sha"]
        .as_str()
        .expect("sha")
        .to_string();
    s.wait_env(number, "environment at the pushed head", |e| {
        e.spec.head_sha == new_head
    })
    .await;

    close_and_wait_gone(&s, number).await;
}

/// How a raw connection ended.
#[derive(Debug)]
enum Ended {
    /// The server answered with this status line.
    Answered(String),
    /// The server closed (or reset) the connection without an answer.
    Closed,
    /// The client sent everything and heard nothing.
    Sent,
}

/// Send `head` then `body` over a raw connection, `step` bytes at a time with `pause` between,
/// until the server answers or closes. Returns how it ended and after how long.
fn trickle(port: u16, head: &[u8], body: &[u8], pause: Duration) -> (Ended, Duration) {
    let start = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    // Reading with a timeout doubles as the pause between two bytes.
    stream.set_read_timeout(Some(pause)).expect("timeout");
    let (bulk, slow): (&[u8], &[u8]) = if body.is_empty() {
        (&[], head)
    } else {
        (head, body)
    };
    if stream.write_all(bulk).is_err() {
        return (Ended::Closed, start.elapsed());
    }
    let mut answer = Vec::new();
    for byte in slow {
        if stream.write_all(&[*byte]).is_err() {
            return (Ended::Closed, start.elapsed());
        }
        let mut buf = [0u8; 512];
        match stream.read(&mut buf) {
            Ok(0) => return (Ended::Closed, start.elapsed()),
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&answer);
                let status = text.lines().next().unwrap_or_default().to_string();
                return (Ended::Answered(status), start.elapsed());
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (Ended::Closed, start.elapsed()),
        }
    }
    (Ended::Sent, start.elapsed())
}

#[tokio::test]
async fn slow_senders_are_cut_off_after_the_request_timeout() {
    let s = quiet_scenario("t-recv-slow", &["--request-timeout", "5s"]).await;
    let opened = s
        .github
        .open_pr(&s.repo, new_pr("Slow"))
        .await
        .expect("open");
    let body = opened.body_bytes.clone();
    // Closed on GitHub at once (hooks are off, so nothing is delivered): the resync, which may
    // run at any time, then has no reason to create its environment either, and the check
    // below that the cut-off delivery was not acted on cannot be confused by it.
    s.github
        .close(
            &s.repo,
            opened.payload["number"].as_u64().expect("number"),
            false,
        )
        .await
        .expect("closed");
    let head = format!(
        "POST /webhooks/github HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         X-GitHub-Event: pull_request\r\nX-GitHub-Delivery: {id}\r\nX-Hub-Signature-256: {sig}\r\n\
         Content-Length: {len}\r\n\r\n",
        port = s.prenv.port,
        id = unique("slow"),
        sig = sign(&body),
        len = body.len(),
    )
    .into_bytes();
    // 60 bytes at one a second: a full minute if nobody cut it off.
    let slow_body = body[..60].to_vec();
    let slow_head = head[..head.len().min(60)].to_vec();
    let port = s.prenv.port;

    // Meanwhile a crowd of connections that send nothing, or half a request line, to show
    // that they neither block genuine deliveries nor stay open.
    let mut crowd = Vec::new();
    for i in 0..100 {
        let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        if i % 2 == 0 {
            c.write_all(b"POST /webhooks/github HT").expect("write");
        }
        crowd.push(c);
    }

    let body_task = {
        let head = head.clone();
        tokio::task::spawn_blocking(move || {
            trickle(port, &head, &slow_body, Duration::from_secs(1))
        })
    };
    let head_task =
        tokio::task::spawn_blocking(move || trickle(port, &slow_head, &[], Duration::from_secs(1)));

    // A genuine delivery (another pull request) goes through while the slow ones hang.
    let during = s
        .github
        .open_pr(&s.repo, new_pr("During"))
        .await
        .expect("open");
    let (code, answer) = Delivery::signed("pull_request", &unique("during"), &during.body_bytes)
        .send(&s.prenv.webhook_url())
        .await;
    assert_eq!(code, 200, "{answer}");
    let number = during.payload["number"].as_u64().expect("number");
    s.wait_env(number, "environment", |_| true).await;

    let (ended, after) = body_task.await.expect("slow body");
    assert!(
        matches!(&ended, Ended::Answered(status) if status.starts_with("HTTP/1.1 408")),
        "slow body: {ended:?} after {after:?}"
    );
    assert!(
        after >= Duration::from_secs(4) && after < Duration::from_secs(12),
        "slow body cut off after {after:?}"
    );
    let (ended, after) = head_task.await.expect("slow headers");
    assert!(
        matches!(ended, Ended::Closed),
        "slow headers: {ended:?} after {after:?}"
    );
    assert!(
        after >= Duration::from_secs(4) && after < Duration::from_secs(12),
        "slow headers cut off after {after:?}"
    );
    // The crowd was closed too.
    let crowd_closed = tokio::task::spawn_blocking(move || {
        crowd
            .into_iter()
            .filter(|mut c| {
                let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = [0u8; 64];
                match c.read(&mut buf) {
                    Ok(n) => n == 0,
                    Err(e) => !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ),
                }
            })
            .count()
    })
    .await
    .expect("crowd");
    assert_eq!(crowd_closed, 100);

    // The cut-off delivery (which was genuine, only slow) was not acted on, not even later.
    let slow_number = opened.payload["number"].as_u64().expect("number");
    for _ in 0..2 {
        assert!(
            environment(&s.client, &s.ns, &s.env_name(slow_number))
                .await
                .is_none()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_healthy(&s).await;
    close_and_wait_gone(&s, number).await;
    assert_no_environment(&s).await;
    assert_genuine_delivery_works(&s, "After the slow ones").await;
}
