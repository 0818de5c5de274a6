//! The receiver under pressure: a delivery cut off by the request timeout must not be
//! remembered as handled.

use super::*;
use github_standin::{Fault, FaultKind, Method};

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
