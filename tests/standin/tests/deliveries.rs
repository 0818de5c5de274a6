//! Webhook deliveries: headers, signatures, shapes octocrab parses, ordering of updated_at.

mod common;

use std::time::Duration;

use common::{REPO, Receiver, SECRET, TOKEN, octocrab, standin, verify_sha1, verify_sha256};
use github_standin::NewPr;
use octocrab::models::webhook_events::{WebhookEvent, WebhookEventPayload, WebhookEventType};
use serde_json::Value;

fn parse(r: &common::Received) -> WebhookEvent {
    WebhookEvent::try_from_header_and_body(r.header("x-github-event"), &r.body).unwrap_or_else(
        |e| {
            panic!(
                "octocrab cannot parse {}: {e}\n{}",
                r.header("x-github-event"),
                String::from_utf8_lossy(&r.body)
            )
        },
    )
}

fn check_headers(r: &common::Received) {
    assert_eq!(r.header("content-type"), "application/json");
    assert!(r.header("user-agent").starts_with("GitHub-Hookshot/"));
    assert_eq!(r.header("x-github-delivery").len(), 36, "a GUID");
    assert!(uuid::Uuid::parse_str(r.header("x-github-delivery")).is_ok());
    assert!(r.header("x-github-hook-id").parse::<u64>().is_ok());
    assert_eq!(
        r.header("x-github-hook-installation-target-type"),
        "repository"
    );
    assert!(
        r.header("x-github-hook-installation-target-id")
            .parse::<u64>()
            .is_ok()
    );
    assert!(
        verify_sha256(SECRET, &r.body, r.header("x-hub-signature-256")),
        "sha256 signature"
    );
    assert!(
        verify_sha1(SECRET, &r.body, r.header("x-hub-signature")),
        "sha1 signature"
    );
    assert!(!verify_sha256(
        "wrong secret",
        &r.body,
        r.header("x-hub-signature-256")
    ));
}

#[tokio::test]
async fn every_delivery_is_signed_and_parsed_by_octocrab() {
    let s = standin().await;
    let rx = Receiver::start().await;
    s.add_hook(&rx.url, SECRET);

    let d = s.ping().await.unwrap();
    assert_eq!(d.status, 202);
    assert_eq!(d.body, "accepted");
    let opened = s
        .open_pr(
            REPO,
            NewPr::new("Add search").head_ref("search").label("preview"),
        )
        .await
        .unwrap();
    assert_eq!(opened.event, "pull_request");
    assert_eq!(opened.payload["action"], "opened");
    s.push(REPO, 1).await.unwrap();
    s.add_label(REPO, 1, "preview:approved", "acme")
        .await
        .unwrap();
    s.remove_label(REPO, 1, "preview", "acme").await.unwrap();
    s.set_draft(REPO, 1, true).await.unwrap();
    s.set_draft(REPO, 1, false).await.unwrap();
    s.edit_title(REPO, 1, "Add full-text search").await.unwrap();
    s.comment(REPO, 1, "alice", "/preview redeploy")
        .await
        .unwrap();
    s.close(REPO, 1, false).await.unwrap();
    s.reopen(REPO, 1).await.unwrap();
    s.close(REPO, 1, true).await.unwrap();

    let got = rx.all();
    assert_eq!(got.len(), 12);
    let mut actions = Vec::new();
    for r in &got {
        check_headers(r);
        let ev = parse(r);
        let body = r.json();
        match (&ev.kind, &ev.specific) {
            (WebhookEventType::Ping, WebhookEventPayload::Ping(p)) => {
                assert!(p.zen.is_some());
                assert_eq!(
                    p.hook_id.unwrap().0,
                    r.header("x-github-hook-id").parse::<u64>().unwrap()
                );
                actions.push("ping".to_string());
            }
            (WebhookEventType::PullRequest, WebhookEventPayload::PullRequest(p)) => {
                assert_eq!(p.number, 1);
                assert_eq!(p.pull_request.number, 1);
                assert_eq!(
                    ev.repository.as_ref().unwrap().full_name.as_deref(),
                    Some(REPO)
                );
                assert_eq!(
                    r.header("x-github-hook-installation-target-id"),
                    ev.repository.as_ref().unwrap().id.0.to_string()
                );
                actions.push(body["action"].as_str().unwrap().to_string());
            }
            (WebhookEventType::IssueComment, WebhookEventPayload::IssueComment(c)) => {
                assert_eq!(c.comment.body.as_deref(), Some("/preview redeploy"));
                assert_eq!(c.comment.user.login, "alice");
                assert_eq!(c.issue.number, 1);
                assert!(
                    c.issue.pull_request.is_some(),
                    "a PR's issue has pull_request"
                );
                assert_eq!(ev.sender.as_ref().unwrap().login, "alice");
                actions.push(format!("comment.{}", body["action"].as_str().unwrap()));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        actions,
        vec![
            "ping",
            "opened",
            "synchronize",
            "labeled",
            "unlabeled",
            "converted_to_draft",
            "ready_for_review",
            "edited",
            "comment.created",
            "closed",
            "reopened",
            "closed"
        ]
    );

    // Event-specific fields.
    let sync = got[2].json();
    assert_eq!(
        sync["before"],
        opened.payload["pull_request"]["head"]["sha"]
    );
    assert_eq!(sync["after"], sync["pull_request"]["head"]["sha"]);
    let labeled = got[3].json();
    assert_eq!(labeled["label"]["name"], "preview:approved");
    assert_eq!(labeled["sender"]["login"], "acme");
    let names: Vec<&str> = labeled["pull_request"]["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["preview", "preview:approved"]);
    assert_eq!(got[4].json()["label"]["name"], "preview");
    assert_eq!(got[5].json()["pull_request"]["draft"], true);
    assert_eq!(got[7].json()["changes"]["title"]["from"], "Add search");
    let closed = got[9].json();
    assert_eq!(closed["pull_request"]["state"], "closed");
    assert_eq!(closed["pull_request"]["merged"], false);
    assert!(closed["pull_request"]["merged_at"].is_null());
    let merged = got[11].json();
    assert_eq!(merged["pull_request"]["merged"], true);
    assert!(merged["pull_request"]["merged_at"].is_string());

    // Records match what arrived.
    let recs = s.deliveries();
    assert_eq!(recs.len(), 12);
    for (rec, r) in recs.iter().zip(&got) {
        assert_eq!(rec.id, r.header("x-github-delivery"));
        assert_eq!(rec.body, r.body.to_vec());
        assert_eq!(rec.status, 202);
    }
}

#[tokio::test]
async fn updated_at_strictly_increases_even_within_a_second() {
    let s = standin().await;
    let rx = Receiver::start().await;
    s.add_hook(&rx.url, SECRET);
    s.open_pr(REPO, NewPr::default()).await.unwrap();
    s.add_label(REPO, 1, "a", "acme").await.unwrap();
    s.add_label(REPO, 1, "b", "acme").await.unwrap();
    s.push(REPO, 1).await.unwrap();
    s.push(REPO, 1).await.unwrap();
    s.comment(REPO, 1, "alice", "hi").await.unwrap();
    s.remove_label(REPO, 1, "a", "acme").await.unwrap();
    let mut stamps: Vec<chrono::DateTime<chrono::Utc>> = rx
        .all()
        .iter()
        .map(|r| {
            let v = r.json();
            let pr = if v.get("pull_request").is_some() {
                &v["pull_request"]
            } else {
                &v["issue"]
            };
            pr["updated_at"].as_str().unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(stamps.len(), 7);
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");
    let last = stamps.pop().unwrap();
    let api: chrono::DateTime<chrono::Utc> = s.pr_json(REPO, 1)["updated_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(api, last);
    // The API's list agrees with the deliveries.
    let gh = octocrab(&s, TOKEN);
    let pr = gh.pulls("acme", "shop").get(1).await.unwrap();
    assert_eq!(pr.updated_at, Some(last));
}

#[tokio::test]
async fn fork_and_deleted_fork_shapes() {
    let s = standin().await;
    let rx = Receiver::start().await;
    s.add_hook(&rx.url, SECRET);
    let d = s
        .open_pr(
            REPO,
            NewPr::new("From a fork")
                .fork("mallory/shop")
                .head_ref("main"),
        )
        .await
        .unwrap();
    let pr = &d.payload["pull_request"];
    assert_eq!(
        pr["user"]["login"], "mallory",
        "fork owner is the default author"
    );
    assert_eq!(pr["author_association"], "CONTRIBUTOR");
    assert_eq!(pr["head"]["repo"]["full_name"], "mallory/shop");
    assert_eq!(pr["head"]["repo"]["fork"], true);
    assert_eq!(pr["head"]["label"], "mallory:main");
    assert_eq!(pr["head"]["user"]["login"], "mallory");
    assert_eq!(pr["base"]["repo"]["full_name"], REPO);
    assert_eq!(pr["base"]["repo"]["fork"], false);
    assert_ne!(pr["head"]["repo"]["id"], pr["base"]["repo"]["id"]);
    parse(&rx.last());

    s.delete_fork(REPO, 1).unwrap();
    let d = s.push(REPO, 1).await.unwrap();
    assert!(d.payload["pull_request"]["head"]["repo"].is_null());
    assert_eq!(d.payload["pull_request"]["head"]["ref"], "main");
    let ev = parse(&rx.last());
    match ev.specific {
        WebhookEventPayload::PullRequest(p) => assert!(p.pull_request.head.repo.is_none()),
        other => panic!("{other:?}"),
    }
    // The API agrees.
    let gh = octocrab(&s, TOKEN);
    let pr = gh.pulls("acme", "shop").get(1).await.unwrap();
    assert!(pr.head.repo.is_none());

    // Opened already deleted, with an explicit association.
    let d = s
        .open_pr(
            REPO,
            NewPr::new("Gone")
                .fork("eve/shop")
                .fork_deleted(true)
                .association("FIRST_TIME_CONTRIBUTOR"),
        )
        .await
        .unwrap();
    assert!(d.payload["pull_request"]["head"]["repo"].is_null());
    assert_eq!(
        d.payload["pull_request"]["author_association"],
        "FIRST_TIME_CONTRIBUTOR"
    );
    parse(&rx.last());
}

#[tokio::test]
async fn redelivery_keeps_id_and_body_and_re_signs() {
    let s = standin().await;
    let rx = Receiver::start().await;
    let hook = s.add_hook(&rx.url, SECRET);
    let d = s.open_pr(REPO, NewPr::default()).await.unwrap();
    rx.set_status(500);
    s.set_hook_secret(hook, "rotated");
    let again = s.redeliver(&d.id).await.unwrap();
    assert_eq!(again.id, d.id);
    assert_eq!(again.status, 500);
    let got = rx.all();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].body, got[1].body);
    assert_eq!(
        got[0].header("x-github-delivery"),
        got[1].header("x-github-delivery")
    );
    assert!(verify_sha256(
        "rotated",
        &got[1].body,
        got[1].header("x-hub-signature-256")
    ));
    let recs = s.deliveries();
    assert!(!recs[0].redelivery && recs[1].redelivery);
    assert_eq!(recs[1].status, 500);
    assert!(s.redeliver("no-such-id").await.is_err());
}

#[tokio::test]
async fn no_hook_changes_state_and_answers_status_zero() {
    let s = standin().await;
    let d = s.open_pr(REPO, NewPr::default()).await.unwrap();
    assert_eq!(d.status, 0);
    assert_eq!(d.payload["action"], "opened");
    let d = s.push_sha(REPO, 1, &"ab".repeat(20)).await.unwrap();
    assert_eq!(d.status, 0);
    assert_eq!(s.head_sha(REPO, 1).unwrap(), "ab".repeat(20));
    assert!(s.deliveries().is_empty());
    // Unreachable hook: status 0 and the error in body.
    s.add_hook("http://127.0.0.1:9/webhooks/github", SECRET);
    let d = s.push(REPO, 1).await.unwrap();
    assert_eq!(d.status, 0);
    assert!(!d.body.is_empty());
    assert!(s.deliveries()[0].error.is_some());
    // Bad inputs are errors, not panics.
    assert!(s.push_sha(REPO, 1, "not-a-sha").await.is_err());
    assert!(s.push(REPO, 42).await.is_err());
    assert!(s.open_pr("acme/unknown", NewPr::default()).await.is_err());
    assert!(s.add_label(REPO, 1, "x", "acme").await.is_ok());
    assert!(
        s.add_label(REPO, 1, "x", "acme").await.is_err(),
        "already labeled"
    );
}

#[tokio::test]
async fn several_hooks_and_unsigned_hook() {
    let s = standin().await;
    let a = Receiver::start().await;
    let b = Receiver::start().await;
    s.add_hook(&a.url, SECRET);
    s.add_hook(&b.url, "");
    b.set_status(204);
    let d = s.open_pr(REPO, NewPr::default()).await.unwrap();
    assert_eq!(d.status, 202, "first hook's answer");
    assert_eq!(a.all().len(), 1);
    let rb = b.last();
    assert_eq!(
        rb.header("x-hub-signature-256"),
        "",
        "no secret, no signature"
    );
    assert_ne!(
        a.last().header("x-github-delivery"),
        rb.header("x-github-delivery")
    );
    assert_eq!(a.last().body, rb.body);
}

#[tokio::test]
async fn api_comments_are_delivered_too() {
    let s = standin().await;
    let rx = Receiver::start().await;
    s.add_hook(&rx.url, SECRET);
    s.open_pr(REPO, NewPr::default()).await.unwrap();
    let gh = octocrab(&s, TOKEN);
    let c = gh
        .issues("acme", "shop")
        .create_comment(1, "marker")
        .await
        .unwrap();
    gh.issues("acme", "shop")
        .update_comment(c.id, "marker v2")
        .await
        .unwrap();
    gh.issues("acme", "shop")
        .delete_comment(c.id)
        .await
        .unwrap();
    // Delivered in the background: wait a little.
    for _ in 0..50 {
        if rx.all().len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = rx.all();
    assert_eq!(got.len(), 4);
    let acts: Vec<String> = got[1..]
        .iter()
        .map(|r| {
            parse(r);
            r.json()["action"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(acts, vec!["created", "edited", "deleted"]);
    let edited: Value = got[2].json();
    assert_eq!(edited["changes"]["body"]["from"], "marker");
    assert_eq!(edited["comment"]["user"]["login"], "prenv-bot");
    assert_eq!(edited["sender"]["login"], "prenv-bot");
}

#[tokio::test]
async fn organization_repos_carry_organization() {
    let s = standin().await;
    s.add_org("platform");
    s.add_repo("platform/api");
    let rx = Receiver::start().await;
    s.add_hook(&rx.url, SECRET);
    let d = s
        .open_pr("platform/api", NewPr::new("x").author("bob"))
        .await
        .unwrap();
    assert_eq!(d.payload["organization"]["login"], "platform");
    assert_eq!(d.payload["repository"]["owner"]["type"], "Organization");
    let ev = parse(&rx.last());
    assert!(ev.organization.is_some());
}
