//! The REST API against octocrab (and raw HTTP where octocrab has no typed call).

mod common;

use common::{REPO, TOKEN, octocrab, standin};
use github_standin::{AuthKind, Fault, FaultKind, Method, NewPr};
use octocrab::models::pulls::PullRequest;
use octocrab::models::repos::DeploymentStatusState;
use octocrab::models::{CommentId, StatusState};
use octocrab::params;
use serde_json::Value;

/// GET `url` with the test token; the JSON answer.
async fn get_json(url: String) -> Value {
    reqwest::Client::new()
        .get(url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn octocrab_lists_and_gets_pull_requests() {
    let s = standin().await;
    s.open_pr(REPO, NewPr::new("First").labels(&["preview"]))
        .await
        .unwrap();
    s.open_pr(REPO, NewPr::new("Second").author("alice").draft(true))
        .await
        .unwrap();
    s.open_pr(REPO, NewPr::new("Third")).await.unwrap();
    s.close(REPO, 3, true).await.unwrap();
    let gh = octocrab(&s, TOKEN);

    let open = gh.pulls("acme", "shop").list().send().await.unwrap();
    let numbers: Vec<u64> = open.items.iter().map(|p| p.number).collect();
    assert_eq!(numbers, vec![2, 1], "open PRs, newest first");
    let first = open.items.iter().find(|p| p.number == 1).unwrap();
    assert_eq!(first.title.as_deref(), Some("First"));
    assert_eq!(first.head.sha.len(), 40);
    assert_eq!(first.base.ref_field, "main");
    let labels: Vec<String> = first
        .labels
        .as_ref()
        .unwrap()
        .iter()
        .map(|l| l.name.clone())
        .collect();
    assert_eq!(labels, vec!["preview".to_string()]);
    assert_eq!(
        first.user.as_ref().unwrap().login,
        "acme",
        "default author is the owner"
    );

    let all = gh
        .pulls("acme", "shop")
        .list()
        .state(params::State::All)
        .send()
        .await
        .unwrap();
    assert_eq!(all.items.len(), 3);
    let closed = gh
        .pulls("acme", "shop")
        .list()
        .state(params::State::Closed)
        .send()
        .await
        .unwrap();
    assert_eq!(closed.items.len(), 1);

    let pr: PullRequest = gh.pulls("acme", "shop").get(3).await.unwrap();
    assert_eq!(pr.merged, Some(true));
    assert!(pr.merged_at.is_some());
    assert_eq!(pr.merged_by.as_ref().unwrap().login, "acme");
    let pr2 = gh.pulls("acme", "shop").get(2).await.unwrap();
    assert_eq!(pr2.draft, Some(true));
    assert_eq!(pr2.user.unwrap().login, "alice");

    // URLs are built from the stand-in's base URL.
    assert!(pr.url.starts_with(&s.url()), "{} vs {}", pr.url, s.url());

    // Unknown PR and unknown repo: GitHub's 404.
    let err = gh.pulls("acme", "shop").get(99).await.unwrap_err();
    assert!(
        matches!(err, octocrab::Error::GitHub { ref source, .. } if source.status_code == 404),
        "{err:?}"
    );
    let err = gh.pulls("acme", "nope").list().send().await.unwrap_err();
    assert!(
        matches!(err, octocrab::Error::GitHub { ref source, .. } if source.status_code == 404),
        "{err:?}"
    );
}

#[tokio::test]
async fn json_shapes_carry_every_field_of_githubs_examples() {
    let s = standin().await;
    s.open_pr(REPO, NewPr::new("Shape")).await.unwrap();
    let list: Value = get_json(format!("{}repos/acme/shop/pulls", s.url())).await;
    let item = &list[0];
    for k in [
        "url",
        "id",
        "node_id",
        "html_url",
        "diff_url",
        "patch_url",
        "issue_url",
        "commits_url",
        "review_comments_url",
        "review_comment_url",
        "comments_url",
        "statuses_url",
        "number",
        "state",
        "locked",
        "title",
        "user",
        "body",
        "labels",
        "milestone",
        "active_lock_reason",
        "created_at",
        "updated_at",
        "closed_at",
        "merged_at",
        "merge_commit_sha",
        "assignee",
        "assignees",
        "requested_reviewers",
        "requested_teams",
        "head",
        "base",
        "_links",
        "author_association",
        "auto_merge",
        "draft",
    ] {
        assert!(item.get(k).is_some(), "list item lacks {k}");
    }
    let repo = &item["head"]["repo"];
    for k in [
        "id",
        "node_id",
        "name",
        "full_name",
        "owner",
        "private",
        "html_url",
        "fork",
        "url",
        "archive_url",
        "clone_url",
        "default_branch",
        "permissions",
        "temp_clone_token",
        "allow_merge_commit",
        "license",
        "watchers",
        "topics",
        "visibility",
        "pushed_at",
    ] {
        assert!(repo.get(k).is_some(), "repo lacks {k}");
    }
    let full = s.pr_json(REPO, 1);
    for k in [
        "merged",
        "mergeable",
        "rebaseable",
        "mergeable_state",
        "merged_by",
        "comments",
        "review_comments",
        "maintainer_can_modify",
        "commits",
        "additions",
        "deletions",
        "changed_files",
    ] {
        assert!(full.get(k).is_some(), "PR lacks {k}");
    }
    let user = &item["user"];
    assert_eq!(user.as_object().unwrap().len(), 18, "{user}");
    assert_eq!(
        user["node_id"], "MDQ6VXNlcjEwMDE=",
        "legacy node id of user 1001"
    );
}

#[tokio::test]
async fn etag_gives_304_that_does_not_count() {
    let s = standin().await;
    s.open_pr(REPO, NewPr::default()).await.unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}repos/acme/shop/pulls", s.url());
    let r1 = http.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r1.status(), 200);
    let etag = r1.headers()["etag"].to_str().unwrap().to_string();
    assert!(
        etag.starts_with('"') && !etag.starts_with("W/"),
        "strong: {etag}"
    );
    let remaining1: u64 = r1.headers()["x-ratelimit-remaining"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    for h in [
        "x-ratelimit-limit",
        "x-ratelimit-reset",
        "x-ratelimit-used",
        "x-ratelimit-resource",
        "x-github-request-id",
    ] {
        assert!(r1.headers().contains_key(h), "missing {h}");
    }

    let r2 = http
        .get(&url)
        .bearer_auth(TOKEN)
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r2.status(), 304);
    let remaining2: u64 = r2.headers()["x-ratelimit-remaining"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(remaining2, remaining1, "a 304 does not count");
    assert_eq!(r2.headers()["etag"].to_str().unwrap(), etag);
    assert!(r2.bytes().await.unwrap().is_empty());

    // A change gives a new ETag and a full answer, counted.
    s.push(REPO, 1).await.unwrap();
    let r3 = http
        .get(&url)
        .bearer_auth(TOKEN)
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r3.status(), 200);
    assert_ne!(r3.headers()["etag"].to_str().unwrap(), etag);
    let remaining3: u64 = r3.headers()["x-ratelimit-remaining"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(remaining3, remaining1 - 1);
    let statuses: Vec<u16> = s.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![200, 304, 200]);
}

#[tokio::test]
async fn pagination_with_link_headers() {
    let s = standin().await;
    for i in 0..7 {
        s.open_pr(REPO, NewPr::new(&format!("PR {i}")))
            .await
            .unwrap();
    }
    let gh = octocrab(&s, TOKEN);
    let page = gh
        .pulls("acme", "shop")
        .list()
        .state(params::State::All)
        .per_page(3)
        .send()
        .await
        .unwrap();
    assert_eq!(page.items.len(), 3);
    assert!(page.next.is_some());
    assert!(page.last.is_some());
    assert!(page.prev.is_none());
    let next = page.next.as_ref().unwrap().to_string();
    assert!(
        next.contains("per_page=3") && next.contains("page=2") && next.contains("state=all"),
        "{next}"
    );
    let all = gh.all_pages(page).await.unwrap();
    let numbers: Vec<u64> = all.iter().map(|p| p.number).collect();
    assert_eq!(numbers, vec![7, 6, 5, 4, 3, 2, 1]);

    // Raw: the last page has prev/first and no next.
    let r = reqwest::Client::new()
        .get(format!(
            "{}repos/acme/shop/pulls?per_page=3&page=3",
            s.url()
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let link = r.headers()["link"].to_str().unwrap().to_string();
    assert!(
        link.contains("rel=\"prev\"")
            && link.contains("rel=\"first\"")
            && !link.contains("rel=\"next\""),
        "{link}"
    );
    let items: Vec<Value> = r.json().await.unwrap();
    assert_eq!(items.len(), 1);
}

#[tokio::test]
async fn comments_by_octocrab_with_identity() {
    let s = standin().await;
    s.open_pr(REPO, NewPr::default()).await.unwrap();
    let gh = octocrab(&s, TOKEN);
    let me = gh.current().user().await.unwrap();
    assert_eq!(me.login, "prenv-bot");

    let c = gh
        .issues("acme", "shop")
        .create_comment(1, "<!-- prenv -->\nPreview is deploying")
        .await
        .unwrap();
    assert_eq!(c.user.login, "prenv-bot");
    let id = c.id;
    let forged = s.add_comment_as(REPO, 1, "mallory", "<!-- prenv -->\nforged");
    assert!(forged > 0);

    let listed = gh
        .issues("acme", "shop")
        .list_comments(1)
        .send()
        .await
        .unwrap();
    let authors: Vec<String> = listed.items.iter().map(|c| c.user.login.clone()).collect();
    assert_eq!(authors, vec!["prenv-bot", "mallory"]);

    let edited = gh
        .issues("acme", "shop")
        .update_comment(id, "<!-- prenv -->\nPreview ready")
        .await
        .unwrap();
    assert_eq!(
        edited.body.as_deref(),
        Some("<!-- prenv -->\nPreview ready")
    );
    let got = gh.issues("acme", "shop").get_comment(id).await.unwrap();
    assert_eq!(got.body.as_deref(), Some("<!-- prenv -->\nPreview ready"));
    assert_eq!(s.comments(REPO, 1)[0].body, "<!-- prenv -->\nPreview ready");
    assert_eq!(s.comments(REPO, 1)[0].login, "prenv-bot");

    gh.issues("acme", "shop").delete_comment(id).await.unwrap();
    let err = gh.issues("acme", "shop").get_comment(id).await.unwrap_err();
    assert!(
        matches!(err, octocrab::Error::GitHub { ref source, .. } if source.status_code == 404),
        "{err:?}"
    );
    let err = gh
        .issues("acme", "shop")
        .update_comment(id, "again")
        .await
        .unwrap_err();
    assert!(
        matches!(err, octocrab::Error::GitHub { ref source, .. } if source.status_code == 404),
        "{err:?}"
    );
    assert!(s.delete_comment(REPO, forged));
    assert!(s.comments(REPO, 1).is_empty());
    let err = gh
        .issues("acme", "shop")
        .delete_comment(CommentId(forged))
        .await
        .unwrap_err();
    assert!(
        matches!(err, octocrab::Error::GitHub { ref source, .. } if source.status_code == 404),
        "{err:?}"
    );

    // Who did what is recorded.
    let posts: Vec<_> = s
        .requests()
        .into_iter()
        .filter(|r| r.method == Method::POST && r.path.ends_with("/issues/1/comments"))
        .collect();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].path, "/repos/acme/shop/issues/1/comments");
    assert_eq!(posts[0].identity.as_deref(), Some("prenv-bot"));
    assert_eq!(posts[0].auth, AuthKind::Token);
    assert_eq!(posts[0].status, 201);
    assert_eq!(
        posts[0].body.as_ref().unwrap()["body"],
        "<!-- prenv -->\nPreview is deploying"
    );
}

#[tokio::test]
async fn comment_validation_and_auth() {
    let s = standin().await;
    s.open_pr(REPO, NewPr::default()).await.unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}repos/acme/shop/issues/1/comments", s.url());
    let r = http
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["message"], "Validation Failed");
    let r = http
        .post(&url)
        .bearer_auth(TOKEN)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .post(&url)
        .json(&serde_json::json!({"body": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "anonymous writes need auth");
    let r = http
        .get(&url)
        .header("Authorization", "token ghp_unknown")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["message"], "Bad credentials");
    assert_eq!(v["status"], "401");
    assert!(v["documentation_url"].is_string());
    let rec = s.requests().pop().unwrap();
    assert_eq!(rec.auth, AuthKind::Invalid);
    assert_eq!(rec.status, 401);

    let r = http
        .get(format!("{}no/such/route", s.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["message"], "Not Found");
}

#[tokio::test]
async fn deployments_and_statuses_with_auto_inactive() {
    let s = standin().await;
    s.open_pr(REPO, NewPr::new("Deploy me").head_ref("feat/x"))
        .await
        .unwrap();
    let sha1 = s.head_sha(REPO, 1).unwrap();
    let gh = octocrab(&s, TOKEN);
    let deployments = gh.repos("acme", "shop");
    let d1 = deployments
        .deployments()
        .create(sha1.clone())
        .environment("pr-1")
        .transient_environment(false)
        .production_environment(false)
        .auto_merge(false)
        .required_contexts(Vec::<String>::new())
        .description("Preview for #1")
        .payload(serde_json::json!({"pr": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(d1.sha, sha1);
    assert_eq!(d1.environment, "pr-1");
    assert_eq!(d1.creator.as_ref().unwrap().login, "prenv-bot");
    let st1 = gh
        .repos("acme", "shop")
        .deployments()
        .statuses(d1.id)
        .create(DeploymentStatusState::Success)
        .environment_url("https://pr-1.preview.example.com")
        .log_url("https://prenv.example.com/pr-1")
        .send()
        .await
        .unwrap();
    assert_eq!(st1.state, DeploymentStatusState::Success);
    assert_eq!(
        st1.environment_url.as_deref(),
        Some("https://pr-1.preview.example.com")
    );

    // A branch ref resolves to its head.
    s.push(REPO, 1).await.unwrap();
    let sha2 = s.head_sha(REPO, 1).unwrap();
    let d2 = gh
        .repos("acme", "shop")
        .deployments()
        .create("feat/x")
        .environment("pr-1")
        .production_environment(false)
        .required_contexts(Vec::<String>::new())
        .send()
        .await
        .unwrap();
    assert_eq!(d2.sha, sha2);
    gh.repos("acme", "shop")
        .deployments()
        .statuses(d2.id)
        .create(DeploymentStatusState::InProgress)
        .send()
        .await
        .unwrap();
    assert_eq!(
        s.deployment_statuses(REPO, d1.id.0).len(),
        1,
        "in_progress does not deactivate"
    );
    gh.repos("acme", "shop")
        .deployments()
        .statuses(d2.id)
        .create(DeploymentStatusState::Success)
        .send()
        .await
        .unwrap();
    let s1 = s.deployment_statuses(REPO, d1.id.0);
    assert_eq!(s1.len(), 2);
    assert_eq!(s1[1].state, "inactive");
    assert!(s1[1].automatic);

    // auto_inactive=false leaves earlier ones alone.
    let d3 = gh
        .repos("acme", "shop")
        .deployments()
        .create(sha2.clone())
        .environment("pr-1")
        .production_environment(false)
        .required_contexts(Vec::<String>::new())
        .send()
        .await
        .unwrap();
    gh.repos("acme", "shop")
        .deployments()
        .statuses(d3.id)
        .create(DeploymentStatusState::Success)
        .auto_inactive(false)
        .send()
        .await
        .unwrap();
    assert_eq!(s.deployment_statuses(REPO, d2.id.0).len(), 2);

    // Listing with filters, newest first; statuses newest first.
    let listed = gh
        .repos("acme", "shop")
        .deployments()
        .list()
        .environment("pr-1")
        .send()
        .await
        .unwrap();
    let ids: Vec<u64> = listed.items.iter().map(|d| d.id.0).collect();
    assert_eq!(ids, vec![d3.id.0, d2.id.0, d1.id.0]);
    let by_sha = gh
        .repos("acme", "shop")
        .deployments()
        .list()
        .sha(sha1.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(by_sha.items.len(), 1);
    let statuses = gh
        .repos("acme", "shop")
        .deployments()
        .statuses(d1.id)
        .list()
        .send()
        .await
        .unwrap();
    assert_eq!(statuses.items[0].state, DeploymentStatusState::Inactive);
    let got = gh
        .repos("acme", "shop")
        .deployments()
        .get(d1.id)
        .await
        .unwrap();
    assert_eq!(got.id, d1.id);

    // Unknown ref: 422 as GitHub.
    let err = gh
        .repos("acme", "shop")
        .deployments()
        .create("no-such-branch")
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(err, octocrab::Error::GitHub { ref source, .. } if source.status_code == 422),
        "{err:?}"
    );

    // Deleting: an active deployment with siblings is refused, an inactive one goes.
    let err = gh
        .repos("acme", "shop")
        .deployments()
        .delete(d3.id)
        .await
        .unwrap_err();
    assert!(
        matches!(err, octocrab::Error::GitHub { ref source, .. } if source.status_code == 422),
        "{err:?}"
    );
    gh.repos("acme", "shop")
        .deployments()
        .delete(d1.id)
        .await
        .unwrap();
    assert_eq!(s.deployments(REPO).len(), 2);
}

#[tokio::test]
async fn production_and_transient_deployments_are_not_auto_deactivated() {
    let s = standin().await;
    s.open_pr(REPO, NewPr::default()).await.unwrap();
    let sha = s.head_sha(REPO, 1).unwrap();
    let gh = octocrab(&s, TOKEN);
    let mk = |transient: bool| {
        let gh = gh.clone();
        let sha = sha.clone();
        async move {
            let d = gh
                .repos("acme", "shop")
                .deployments()
                .create(sha)
                .environment("pr-1")
                .transient_environment(transient)
                .production_environment(false)
                .required_contexts(Vec::<String>::new())
                .send()
                .await
                .unwrap();
            gh.repos("acme", "shop")
                .deployments()
                .statuses(d.id)
                .create(DeploymentStatusState::Success)
                .send()
                .await
                .unwrap();
            d.id.0
        }
    };
    let t1 = mk(true).await;
    let _t2 = mk(true).await;
    assert_eq!(
        s.deployment_statuses(REPO, t1).len(),
        1,
        "transient: kept active"
    );
}

#[tokio::test]
async fn commit_statuses_and_required_contexts() {
    let s = standin().await;
    s.open_pr(REPO, NewPr::default()).await.unwrap();
    let sha = s.head_sha(REPO, 1).unwrap();
    let gh = octocrab(&s, TOKEN);
    let st = gh
        .repos("acme", "shop")
        .create_status(sha.clone(), StatusState::Pending)
        .context("prenv/preview".to_string())
        .description("Deploying".to_string())
        .target(format!("{}ui/pr-1", "http://prenv.example.com/"))
        .send()
        .await
        .unwrap();
    assert_eq!(st.state, StatusState::Pending);
    assert_eq!(st.context.as_deref(), Some("prenv/preview"));
    assert_eq!(s.statuses(REPO, &sha).len(), 1);
    let listed = gh
        .repos("acme", "shop")
        .list_statuses(sha.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);

    // A pending status blocks a deployment that does not say required_contexts: [] (GitHub).
    let err = gh
        .repos("acme", "shop")
        .deployments()
        .create(sha.clone())
        .environment("pr-1")
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(err, octocrab::Error::GitHub { ref source, .. } if source.status_code == 409),
        "{err:?}"
    );
    gh.repos("acme", "shop")
        .create_status(sha.clone(), StatusState::Success)
        .context("prenv/preview".to_string())
        .send()
        .await
        .unwrap();
    gh.repos("acme", "shop")
        .deployments()
        .create(sha.clone())
        .environment("pr-1")
        .send()
        .await
        .unwrap();

    let combined: Value =
        get_json(format!("{}repos/acme/shop/commits/{sha}/status", s.url())).await;
    assert_eq!(combined["state"], "success");
    assert_eq!(combined["total_count"], 1);

    let r = reqwest::Client::new()
        .post(format!("{}repos/acme/shop/statuses/{sha}", s.url()))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"state": "bogus"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
}

#[tokio::test]
async fn collaborator_permission_and_rate_limit() {
    let s = standin().await;
    s.set_permission(REPO, "alice", "write");
    s.set_permission(REPO, "tri", "triage");
    let gh = octocrab(&s, TOKEN);
    // octocrab's typed call understands "admin" (its enum lacks GitHub's "write"/"read"/"none").
    let owner = gh
        .repos("acme", "shop")
        .get_contributor_permission("acme")
        .send()
        .await
        .unwrap();
    assert_eq!(owner.role_name, "admin");
    assert!(owner.user.permissions.admin);
    let get = |u: &'static str| {
        let gh = gh.clone();
        async move {
            gh.get::<Value, _, ()>(
                format!("/repos/acme/shop/collaborators/{u}/permission"),
                None,
            )
            .await
            .unwrap()
        }
    };
    let alice = get("alice").await;
    assert_eq!(alice["permission"], "write");
    assert_eq!(alice["role_name"], "write");
    assert_eq!(alice["user"]["permissions"]["push"], true);
    let tri = get("tri").await;
    assert_eq!(tri["permission"], "read");
    assert_eq!(tri["role_name"], "triage");
    let stranger = get("stranger").await;
    assert_eq!(stranger["permission"], "read");

    let rl = gh.ratelimit().get().await.unwrap();
    assert_eq!(rl.resources.core.limit, 5000);
    assert_eq!(rl.rate.used, 4, "four counted requests before");
}

#[tokio::test]
async fn faults_are_consumed_once_and_recorded() {
    let s = standin().await;
    s.open_pr(REPO, NewPr::default()).await.unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}repos/acme/shop/issues/1/comments", s.url());
    s.inject_fault(Fault::new(
        Some(Method::POST),
        "/repos/acme/shop/issues",
        1,
        FaultKind::ServerError,
    ));
    s.inject_fault(Fault::new(
        None,
        "/repos/acme/shop/pulls",
        1,
        FaultKind::SecondaryRateLimit {
            retry_after_secs: 7,
        },
    ));
    s.inject_fault(Fault::new(
        None,
        "/repos/acme/shop/deployments",
        1,
        FaultKind::PrimaryRateLimit { reset_in_secs: 30 },
    ));
    s.inject_fault(Fault::new(None, "/user", 1, FaultKind::Unauthorized));
    s.inject_fault(Fault::new(
        None,
        "/rate_limit",
        1,
        FaultKind::TooManyRequests {
            retry_after_secs: 2,
        },
    ));

    // GET on the issues prefix is not POST: unaffected.
    let r = http.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let post = || {
        http.post(&url)
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"body": "hi"}))
    };
    let r = post().send().await.unwrap();
    assert_eq!(r.status(), 500);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["message"], "Server Error");
    assert_eq!(post().send().await.unwrap().status(), 201, "consumed once");

    let r = http
        .get(format!("{}repos/acme/shop/pulls", s.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["retry-after"], "7");
    let v: Value = r.json().await.unwrap();
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("You have exceeded a secondary rate limit")
    );

    let r = http
        .get(format!("{}repos/acme/shop/deployments", s.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    let reset: i64 = r.headers()["x-ratelimit-reset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(reset > chrono::Utc::now().timestamp() + 20);

    let r = http
        .get(format!("{}user", s.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(format!("{}rate_limit", s.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "2");

    // All consumed: everything answers normally again.
    for path in [
        "repos/acme/shop/pulls",
        "repos/acme/shop/deployments",
        "user",
        "rate_limit",
    ] {
        let r = http
            .get(format!("{}{path}", s.url()))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let faulted: Vec<(String, u16)> = s
        .requests()
        .iter()
        .filter(|r| r.faulted)
        .map(|r| (r.path.clone(), r.status))
        .collect();
    assert_eq!(
        faulted,
        vec![
            ("/repos/acme/shop/issues/1/comments".to_string(), 500),
            ("/repos/acme/shop/pulls".to_string(), 403),
            ("/repos/acme/shop/deployments".to_string(), 403),
            ("/user".to_string(), 401),
            ("/rate_limit".to_string(), 429),
        ]
    );
    // Recorded times are usable for pacing checks.
    let reqs = s.requests();
    assert!(
        reqs.windows(2)
            .all(|w| w[0].at <= w[1].at && w[0].seq < w[1].seq)
    );
}

#[tokio::test]
async fn a_flaky_fault_answers_only_every_nth_matching_request() {
    let s = standin().await;
    s.open_pr(REPO, NewPr::default()).await.unwrap();
    s.inject_fault(Fault::new(None, "/repos/", 2, FaultKind::ServerError).every(3));
    let status = |path: &str| {
        let url = format!("{}{path}", s.url());
        async move {
            let r = reqwest::Client::new().get(url).bearer_auth(TOKEN).send();
            r.await.unwrap().status().as_u16()
        }
    };
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(status("repos/acme/shop/pulls/1").await);
        // Requests the fault does not match do not count.
        assert_eq!(status("user").await, 200);
    }
    // The third and sixth fail; then the fault is used up.
    assert_eq!(statuses, [200, 200, 500, 200, 200, 500, 200, 200]);
    assert_eq!(s.requests().iter().filter(|r| r.faulted).count(), 2);
}

#[tokio::test]
async fn a_lost_answer_hides_a_write_that_was_done() {
    let s = standin().await;
    s.open_pr(REPO, NewPr::default()).await.unwrap();
    // Every second comment created loses its answer; the others are left to the next fault.
    s.inject_fault(
        Fault::new(
            Some(Method::POST),
            "/repos/acme/shop/issues/1/comments",
            1,
            FaultKind::LostAnswer,
        )
        .every(2),
    );
    s.inject_fault(Fault::new(None, "/repos/", 1, FaultKind::ServerError));
    let http = reqwest::Client::new();
    let post = |body: &str| {
        http.post(format!("{}repos/acme/shop/issues/1/comments", s.url()))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"body": body}))
            .send()
    };
    assert_eq!(post("one").await.unwrap().status(), 500, "the second fault");
    let r = post("two").await.unwrap();
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["message"], "Server Error");
    assert_eq!(post("three").await.unwrap().status(), 201);
    let bodies: Vec<String> = s.comments(REPO, 1).into_iter().map(|c| c.body).collect();
    assert_eq!(
        bodies,
        ["two", "three"],
        "the lost answer's comment was made"
    );
    assert_eq!(s.requests().iter().filter(|r| r.faulted).count(), 2);
}

#[tokio::test]
async fn octocrab_surfaces_faults_as_errors() {
    let s = standin().await;
    s.open_pr(REPO, NewPr::default()).await.unwrap();
    let gh = octocrab(&s, TOKEN);
    s.inject_fault(Fault::new(
        None,
        "/repos/acme/shop/pulls",
        2,
        FaultKind::ServerError,
    ));
    assert!(gh.pulls("acme", "shop").list().send().await.is_err());
    assert!(gh.pulls("acme", "shop").list().send().await.is_err());
    assert_eq!(
        gh.pulls("acme", "shop")
            .list()
            .send()
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

#[tokio::test]
async fn private_repositories_hide_from_anonymous_callers() {
    let s = standin().await;
    s.open_pr(REPO, NewPr::default()).await.unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}repos/acme/shop/pulls", s.url());
    assert_eq!(
        http.get(&url).send().await.unwrap().status(),
        200,
        "public: anonymous reads"
    );
    s.set_private(REPO, true);
    assert_eq!(http.get(&url).send().await.unwrap().status(), 404);
    let r = http.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Vec<Value> = r.json().await.unwrap();
    assert_eq!(v[0]["base"]["repo"]["private"], true);
    assert_eq!(v[0]["base"]["repo"]["visibility"], "private");
    let perm: Value = get_json(format!(
        "{}repos/acme/shop/collaborators/stranger/permission",
        s.url()
    ))
    .await;
    assert_eq!(perm["permission"], "none");
}
