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
        .wait_env(number, "waiting for approval", |e| {
            phase(e).as_deref() == Some("Pending") && e.spec.awaiting_approval.is_some()
        })
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
        .wait_env(number, "still waiting after the slot freed", |e| {
            phase(e).as_deref() == Some("Pending") && e.spec.awaiting_approval.is_some()
        })
        .await;
    assert!(env.spec.approved.is_none());
    assert!(!namespace_exists(&s.client, &s.preview_ns(number)).await);
    s.github
        .close(&s.repo, number, false)
        .await
        .expect("closed");
}
