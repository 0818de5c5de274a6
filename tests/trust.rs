//! Trust comes from GitHub's permission API, not from a delivery's author association, and an
//! approval stands only while its label does.

mod support;

use serde_json::json;
use support::*;

const APPROVE: &str = "preview:approved";

#[tokio::test]
async fn a_collaborator_without_write_access_is_not_trusted() {
    let s = Scenario::start("t-readonly", web_template).await;
    // GitHub shows a triage collaborator as COLLABORATOR; it may not push, so its fork's
    // code must not run unapproved.
    s.github.set_permission(&s.repo, "triager", "triage");
    let opened = s
        .github
        .open_pr(&s.repo, fork_pr("triager", "COLLABORATOR"))
        .await
        .expect("opened");
    assert_eq!(opened.status, 200, "{}", opened.body);
    let number = opened.payload["number"].as_u64().expect("number");
    let env = s
        .wait_awaiting_approval(number, "waiting for approval")
        .await;
    assert_eq!(condition(&env, "Approved").reason, "AwaitingApproval");
    assert!(!namespace_exists(&s.client, &s.preview_ns(number)).await);
    s.github
        .close(&s.repo, number, false)
        .await
        .expect("closed");
}

#[tokio::test]
async fn removing_the_label_withdraws_an_approval_not_yet_deployed() {
    // One slot: a trusted PR holds it, so the fork's approved head waits in the queue.
    let s = Scenario::start("t-revoke", |repo| {
        let mut spec = web_template(repo);
        spec["maxEnvironments"] = json!(1);
        spec
    })
    .await;
    s.github.set_permission(&s.repo, "maintainer", "write");
    let (first, _) = s.open("Holds the slot").await;
    s.wait_env(first, "the first one deployed", |e| {
        e.status.as_ref().is_some_and(|st| st.namespace.is_some())
    })
    .await;

    let opened = s
        .github
        .open_pr(&s.repo, fork_pr("outsider", "CONTRIBUTOR"))
        .await
        .expect("opened");
    let number = opened.payload["number"].as_u64().expect("number");
    let sha = head_sha(&opened);
    s.github
        .add_label(&s.repo, number, APPROVE, "maintainer")
        .await
        .expect("labeled");
    s.wait_env(number, "approved and queued", |e| {
        e.spec.approved.as_ref().is_some_and(|a| a.head_sha == sha)
            && e.status.as_ref().is_some_and(|st| st.is_queued())
    })
    .await;

    // The maintainer changes their mind before it ever ran.
    s.github
        .remove_label(&s.repo, number, APPROVE, "maintainer")
        .await
        .expect("unlabeled");
    let env = s
        .wait_env(number, "the approval withdrawn", |e| {
            e.spec.approved.is_none()
                && e.status.as_ref().is_some_and(|st| !st.is_queued())
                && e.status.as_ref().is_some_and(|st| {
                    st.conditions
                        .iter()
                        .any(|c| c.type_ == "Approved" && c.reason == "AwaitingApproval")
                })
        })
        .await;
    let reason = env.spec.awaiting_approval.unwrap_or_default();
    assert!(reason.contains("withdrawn"), "{reason}");
    s.wait_bot_comment(number, "the PR told", |body| body.contains("withdrawn"))
        .await;

    // The slot frees up: the withdrawn head still does not run.
    s.github.close(&s.repo, first, false).await.expect("closed");
    s.wait_env_gone(first).await;
    let env = s
        .wait_awaiting_approval(number, "still waiting after the slot freed")
        .await;
    assert!(env.spec.approved.is_none());
    assert!(!namespace_exists(&s.client, &s.preview_ns(number)).await);
    s.github
        .close(&s.repo, number, false)
        .await
        .expect("closed");
}

#[tokio::test]
async fn a_flood_of_fork_pull_requests_waits_within_the_templates_cap() {
    let s = Scenario::start_custom(
        "t-forkcap",
        |repo| {
            let mut spec = web_template(repo);
            spec["trust"] = json!({"maxAwaitingApproval": 2});
            spec
        },
        |_, _| async {},
        Default::default(),
        &["--resync-interval", "2s"],
    )
    .await;
    let mut numbers = Vec::new();
    let mut replies = Vec::new();
    for i in 0..3 {
        let opened = s
            .github
            .open_pr(&s.repo, fork_pr(&format!("stranger{i}"), "NONE"))
            .await
            .expect("opened");
        assert_eq!(opened.status, 200, "{}", opened.body);
        numbers.push(opened.payload["number"].as_u64().expect("number"));
        replies.push(opened.body);
    }
    // Two wait for approval, each with its comment; the third gets neither, yet.
    for n in &numbers[..2] {
        s.wait_awaiting_approval(*n, "waiting for approval").await;
        s.wait_bot_comment(*n, "the waiting comment", |body| {
            body.contains("Not deployed")
        })
        .await;
    }
    assert!(replies[2].contains("deferred"), "{}", replies[2]);
    assert!(replies[2].contains("maxAwaitingApproval"), "{}", replies[2]);
    let third = numbers[2];
    assert!(
        environment(&s.client, &s.ns, &s.env_name(third))
            .await
            .is_none()
    );
    // Resync passes (every 2 s) keep it out too while the cap is full.
    let passes = || async {
        let text = reqwest::get(format!("{}/metrics", s.prenv.admin_url()))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find(|l| l.starts_with("prenv_resync_runs_total{result=\"success\"}"))?
            .rsplit(' ')
            .next()?
            .parse::<f64>()
            .ok()
    };
    let before = passes().await.unwrap_or_default();
    wait_for(
        "two more resync passes",
        std::time::Duration::from_secs(60),
        || async { passes().await.filter(|n| *n >= before + 2.0) },
    )
    .await;
    assert!(
        environment(&s.client, &s.ns, &s.env_name(third))
            .await
            .is_none()
    );
    assert!(
        s.github
            .comments(&s.repo, third)
            .iter()
            .all(|c| c.login != BOT),
        "a comment for the deferred PR"
    );

    // One of the waiting PRs closes: the resync brings the third in.
    s.github
        .close(&s.repo, numbers[0], false)
        .await
        .expect("closed");
    s.wait_awaiting_approval(third, "the third now waiting")
        .await;
    for n in &numbers[1..] {
        s.github.close(&s.repo, *n, false).await.expect("closed");
    }
}
