//! The receiver under pressure: unauthenticated senders that declare big bodies and trickle
//! them must not keep genuine deliveries waiting past GitHub's 10 s, and a delivery cut off by
//! the request timeout must not be remembered as handled.

use super::*;
use github_standin::{Fault, FaultKind, Method};
use prenv::receive::MAX_BODY;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::TcpStream as AsyncStream;

/// GitHub gives up on a delivery after 10 s; a genuine one must be answered well within that.
const GITHUB_PATIENCE: Duration = Duration::from_secs(8);
/// Longer than any holder may be kept when prenv's own limits work.
const HOLD_AT_MOST: Duration = Duration::from_secs(60);

/// Write all of `bytes` (tokio's `io-util` is not among prenv's features); false once the
/// connection is gone.
async fn send_all(stream: &AsyncStream, mut bytes: &[u8]) -> bool {
    while !bytes.is_empty() {
        if stream.writable().await.is_err() {
            return false;
        }
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return false,
        }
    }
    true
}

/// An unauthenticated sender: headers declaring `declared` body bytes, then one byte a second
/// until prenv answers or closes (or `HOLD_AT_MOST`). Counts itself in `holding` once its
/// headers and first byte are out.
async fn hold(port: u16, declared: usize, holding: Arc<AtomicUsize>) -> (Ended, Duration) {
    let start = Instant::now();
    let Ok(stream) = AsyncStream::connect(("127.0.0.1", port)).await else {
        return (Ended::Closed, start.elapsed());
    };
    let head = format!(
        "POST /webhooks/github HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Type: application/json\r\nX-GitHub-Event: pull_request\r\n\
         X-GitHub-Delivery: {id}\r\nX-Hub-Signature-256: sha256={sig}\r\n\
         Content-Length: {declared}\r\n\r\n{{",
        id = unique("holder"),
        sig = "0".repeat(64),
    );
    if !send_all(&stream, head.as_bytes()).await {
        return (Ended::Closed, start.elapsed());
    }
    holding.fetch_add(1, Ordering::SeqCst);
    let mut answer = Vec::new();
    while start.elapsed() < HOLD_AT_MOST {
        let mut buf = [0u8; 512];
        tokio::select! {
            _ = stream.readable() => match stream.try_read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Ok(0) | Err(_) => return (Ended::Closed, start.elapsed()),
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&answer);
                    let status = text.lines().next().unwrap_or_default().to_string();
                    return (Ended::Answered(status), start.elapsed());
                }
            },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if !send_all(&stream, b" ").await {
                    return (Ended::Closed, start.elapsed());
                }
            }
        }
    }
    (Ended::Sent, start.elapsed())
}

#[tokio::test]
async fn genuine_deliveries_get_through_while_senders_trickle_big_bodies() {
    // The request timeout as shipped: holders must be cut off well before it.
    let request_timeout = Duration::from_secs(30);
    let s = quiet_scenario("t-recv-starve", &["--request-timeout", "30s"]).await;
    let port = s.prenv.port;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(90))
        .build()
        .expect("client");
    // A handful declaring GitHub's cap, then a crowd declaring 1 MiB each (more than the
    // whole body budget between them, yet every one below any "large body" line).
    for (what, count, declared) in [("25 MiB", 8, MAX_BODY), ("1 MiB", 200, 1024 * 1024)] {
        let holding = Arc::new(AtomicUsize::new(0));
        let holders: Vec<_> = (0..count)
            .map(|_| tokio::spawn(hold(port, declared, holding.clone())))
            .collect();
        wait_for(
            &format!("{count} senders declaring {what} to be holding"),
            Duration::from_secs(30),
            || async { (holding.load(Ordering::SeqCst) >= count).then_some(()) },
        )
        .await;
        // Their headers are read by now (prenv reads them as they come); give the slowest a
        // moment to reach the body budget before the genuine delivery does.
        tokio::time::sleep(Duration::from_secs(1)).await;

        let opened = s
            .github
            .open_pr(&s.repo, new_pr(&format!("Amid {what} senders")))
            .await
            .expect("open");
        let number = opened.payload["number"].as_u64().expect("number");
        let sent = Instant::now();
        let resp = http
            .post(s.prenv.webhook_url())
            .header("content-type", "application/json")
            .header("x-github-event", "pull_request")
            .header("x-github-delivery", unique("genuine"))
            .header("x-hub-signature-256", sign(&opened.body_bytes))
            .body(opened.body_bytes.clone())
            .send()
            .await
            .expect("genuine delivery answered");
        let took = sent.elapsed();
        let code = resp.status().as_u16();
        let answer = resp.text().await.unwrap_or_default();
        assert_eq!(code, 200, "amid {what} senders: {answer}");
        assert!(
            took < GITHUB_PATIENCE,
            "amid {what} senders the genuine delivery took {took:?}, GitHub waits 10 s"
        );
        let still_holding = holders.iter().filter(|h| !h.is_finished()).count();
        assert!(
            still_holding > 0,
            "the {what} senders were all gone before the genuine delivery was answered"
        );
        s.wait_env(number, "environment of the genuine delivery", |_| true)
            .await;

        // Every holder is answered (refused or cut off) well before the request timeout.
        for holder in holders {
            let (ended, after) = holder.await.expect("holder");
            let refused = match &ended {
                Ended::Answered(status) => ["408", "429", "503"]
                    .iter()
                    .any(|code| status.starts_with(&format!("HTTP/1.1 {code}"))),
                Ended::Closed => true,
                Ended::Sent => false,
            };
            assert!(refused, "{what} sender: {ended:?} after {after:?}");
            assert!(
                after < request_timeout - Duration::from_secs(5),
                "{what} sender held on for {after:?}: {ended:?}"
            );
        }

        close_and_wait_gone(&s, number).await;
    }
    assert_healthy(&s).await;
}

#[tokio::test]
async fn a_delivery_cut_off_by_the_request_timeout_is_acted_on_when_redelivered() {
    let s = quiet_scenario("t-recv-cut", &["--request-timeout", "3s"]).await;
    let url = s.prenv.webhook_url();
    s.github.set_permission(&s.repo, "reviewer", "write");
    let opened = s
        .github
        .open_pr(&s.repo, new_pr("Cut off"))
        .await
        .expect("open");
    let number = opened.payload["number"].as_u64().expect("number");
    let (code, answer) = Delivery::signed("pull_request", &unique("open"), &opened.body_bytes)
        .send(&url)
        .await;
    assert_eq!(code, 200, "{answer}");
    s.wait_env(number, "environment", |_| true).await;

    // A collaborator's association is trusted without asking GitHub; as a CONTRIBUTOR the
    // reviewer's write access is looked up, and GitHub is made slower than the request timeout.
    let commented = s
        .github
        .comment(&s.repo, number, "reviewer", "/preview redeploy")
        .await
        .expect("comment");
    let body = altered(&commented.body_bytes, |v| {
        v["comment"]["author_association"] = json!("CONTRIBUTOR");
    });
    let comment_id = commented.payload["comment"]["id"].as_u64().expect("id");
    s.github.inject_fault(Fault::new(
        Some(Method::GET),
        &format!("/repos/{}/collaborators", s.repo),
        1,
        FaultKind::Delay { millis: 10_000 },
    ));
    let id = unique("cut");
    let (code, answer) = Delivery::signed("issue_comment", &id, &body)
        .send(&url)
        .await;
    assert_eq!(code, 408, "{answer}");

    // GitHub's redelivery (same id) is acted on, not taken for a duplicate.
    let (code, answer) = Delivery::signed("issue_comment", &id, &body)
        .send(&url)
        .await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["result"], "handled", "{answer}");
    let request = format!("comment {comment_id} by reviewer");
    s.wait_env(number, "the redeploy requested", |e| {
        e.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(prenv::command::REDEPLOY_ANNOTATION))
            == Some(&request)
    })
    .await;
    // And now it is remembered.
    let (code, answer) = Delivery::signed("issue_comment", &id, &body)
        .send(&url)
        .await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["result"], "duplicate", "{answer}");

    close_and_wait_gone(&s, number).await;
}
