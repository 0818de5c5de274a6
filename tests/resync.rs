//! The periodic resync against GitHub repairs missed and reordered deliveries.

mod support;

use github_standin::Method;
use support::*;

#[tokio::test]
async fn resync_repairs_missed_and_reordered_deliveries() {
    let s = Scenario::start_with_args("t-resync", &["--resync-interval", "1s"]).await;
    let (github, repo) = (&s.github, &s.repo);

    // Missed deliveries: nothing reaches prenv, the resync finds the pull request anyway.
    github.clear_hooks();
    let opened = github
        .open_pr(repo, new_pr("Missed"))
        .await
        .expect("opened");
    assert_eq!(opened.status, 0, "no hook, no delivery");
    let number = opened.payload["number"].as_u64().expect("number");
    let sha1 = head_sha(&opened);
    s.wait_env(number, "environment from the resync", |e| {
        e.spec.head_sha == sha1
    })
    .await;
    let pushed = github.push(repo, number).await.expect("pushed");
    let sha2 = head_sha(&pushed);
    s.wait_env(number, "the pushed head from the resync", |e| {
        observed_head(e) == Some(sha2.as_str())
    })
    .await;
    github.close(repo, number, false).await.expect("closed");
    s.wait_env_gone(number).await;

    // Reordered: a stale "opened" arrives after the close and recreates the environment;
    // the resync sees the pull request is closed and removes it again.
    github.add_hook(&s.prenv.webhook_url(), SECRET);
    let opened = github
        .open_pr(repo, new_pr("Reordered"))
        .await
        .expect("opened");
    let number = opened.payload["number"].as_u64().expect("number");
    s.wait_env(number, "environment", |_| true).await;
    let closed = github.close(repo, number, false).await.expect("closed");
    assert_eq!(closed.status, 200, "{}", closed.body);
    s.wait_env_gone(number).await;
    let (code, body) = post_delivery(
        &s.prenv.webhook_url(),
        "pull_request",
        "late-opened",
        &opened.body_bytes,
        Some(sign(&opened.body_bytes)),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    s.wait_env(number, "recreated by the stale delivery", |_| true)
        .await;
    s.wait_env_gone(number).await;

    // Unchanged listings cost nothing: GitHub answered 304 to the conditional requests.
    let not_modified = github
        .requests()
        .iter()
        .filter(|r| r.method == Method::GET && r.path.ends_with("/pulls") && r.status == 304)
        .count();
    assert!(not_modified > 0, "conditional listings answered 304");
    let metrics = reqwest::get(format!("{}/metrics", s.prenv.admin_url()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("prenv_resync_repairs_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
}
