//! GitHub feedback against the stand-in (octocrab over HTTP) and the real control plane: one
//! sticky comment, a deployment per head with statuses, a commit status, within rate limits.

mod support;

use github_standin::{AppConfig, Config as StandInConfig, Fault, FaultKind, Method, StandIn};
use serde_json::json;
use std::time::Duration;
use support::*;

/// Mutating requests the stand-in received (everything but GETs).
fn writes(github: &StandIn) -> Vec<github_standin::RecordedRequest> {
    github
        .requests()
        .into_iter()
        .filter(|r| r.method != Method::GET)
        .collect()
}

/// Comments on the PR written by `login`.
fn comments_by(
    github: &StandIn,
    repo: &str,
    number: u64,
    login: &str,
) -> Vec<github_standin::Comment> {
    github
        .comments(repo, number)
        .into_iter()
        .filter(|c| c.login == login)
        .collect()
}

/// Wait until the stand-in shows the state `check` looks for.
async fn eventually<T>(what: &str, check: impl Fn() -> Option<T>) -> T {
    wait_for(what, Duration::from_secs(60), || {
        let found = check();
        async move { found }
    })
    .await
}

/// The deployment for `sha` and the states posted on it, newest last.
fn deployment_states(
    github: &StandIn,
    repo: &str,
    sha: &str,
) -> Option<(u64, Vec<String>, Option<String>)> {
    let deployment = github
        .deployments(repo)
        .into_iter()
        .find(|d| d.sha == sha)?;
    let statuses = github.deployment_statuses(repo, deployment.id);
    let url = statuses
        .iter()
        .rev()
        .map(|s| s.environment_url.clone())
        .find(|u| !u.is_empty());
    Some((
        deployment.id,
        statuses.into_iter().map(|s| s.state).collect(),
        url,
    ))
}

async fn settle() {
    // Long enough for a reconcile and a feedback pass that should not happen to show up.
    tokio::time::sleep(Duration::from_secs(3)).await;
}

#[tokio::test]
async fn comment_deployment_and_status_follow_the_pull_request_across_restarts() {
    let mut s = Scenario::start("t-fb", web_template).await;
    let (github, repo) = (s.github.clone(), s.repo.clone());

    // Opened: deploying, then ready once the pod is.
    let opened = github
        .open_pr(&repo, new_pr("Feedback"))
        .await
        .expect("opened");
    let number = opened.payload["number"].as_u64().expect("number");
    let sha1 = head_sha(&opened);
    let env = s
        .wait_env(number, "ready at the head", |e| {
            phase(e).as_deref() == Some("Ready") && observed_head(e) == Some(sha1.as_str())
        })
        .await;
    let url = env
        .status
        .as_ref()
        .and_then(|st| st.url.clone())
        .expect("url");

    let comment = eventually("one comment saying ready", || {
        let mine = comments_by(&github, &repo, number, BOT);
        (mine.len() == 1 && mine[0].body.contains(&format!("Ready at `{}`", &sha1[..7])))
            .then(|| mine[0].clone())
    })
    .await;
    assert!(comment.body.contains(&url), "{}", comment.body);
    assert!(
        comment.body.contains(&s.preview_ns(number)),
        "{}",
        comment.body
    );
    let (deployment1, states, env_url) = eventually("deployment success", || {
        deployment_states(&github, &repo, &sha1)
            .filter(|(_, st, _)| st.last().map(String::as_str) == Some("success"))
    })
    .await;
    assert_eq!(env_url.as_deref(), Some(url.as_str()));
    assert!(!states.contains(&"failure".to_string()), "{states:?}");
    assert_eq!(github.deployments(&repo).len(), 1);
    let deployment = &github.deployments(&repo)[0];
    assert!(deployment.transient_environment);
    assert!(!deployment.production_environment);
    let statuses = eventually("success commit status", || {
        let st = github.statuses(&repo, &sha1);
        st.iter().any(|c| c.state == "success").then_some(st)
    })
    .await;
    let success = statuses
        .iter()
        .find(|c| c.state == "success")
        .expect("success");
    // The template's namespace is part of the context: two teams' `shop` templates differ.
    assert_eq!(success.context, format!("prenv/{}/{}", s.ns, s.template));
    assert_eq!(
        github.deployments(&repo)[0].environment,
        format!("{}/{}-pr-{number}", s.ns, s.template)
    );
    assert_eq!(success.target_url.as_deref(), Some(url.as_str()));
    // The ids are recorded on the environment.
    let env = s
        .wait_env(number, "ids in status", |e| {
            e.status.as_ref().and_then(|st| st.comment_id) == Some(comment.id)
                && e.status.as_ref().and_then(|st| st.deployment_id) == Some(deployment1)
                && e.status
                    .as_ref()
                    .is_some_and(|st| st.conditions.iter().any(|c| c.type_ == "Reported"))
        })
        .await;
    assert_eq!(condition(&env, "Reported").status, "True");
    // The remaining rate limit GitHub reported is a metric.
    let metrics = reqwest::get(format!("{}/metrics", s.prenv.admin_url()))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let remaining: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("prenv_github_rate_limit_remaining "))
        .and_then(|v| v.trim().parse().ok())
        .expect("rate limit gauge");
    assert!(remaining > 0 && remaining < 5000, "{remaining}");

    // Restarts and redeliveries write nothing more.
    settle().await;
    let before = writes(&github).len();
    s.prenv.restart().await;
    let again = github.redeliver(&opened.id).await.expect("redelivered");
    assert_eq!(again.status, 200, "{}", again.body);
    settle().await;
    assert_eq!(
        writes(&github).len(),
        before,
        "no writes after a restart and a redelivery: {:?}",
        &writes(&github)[before..]
    );

    // A push: the same comment edited with the new head, a new deployment, the old one inactive.
    let pushed = github.push(&repo, number).await.expect("pushed");
    let sha2 = head_sha(&pushed);
    s.wait_env(number, "ready at the new head", |e| {
        phase(e).as_deref() == Some("Ready") && observed_head(e) == Some(sha2.as_str())
    })
    .await;
    eventually("comment at the new head", || {
        let mine = comments_by(&github, &repo, number, BOT);
        (mine.len() == 1
            && mine[0].id == comment.id
            && mine[0].body.contains(&format!("`{}`", &sha2[..7])))
        .then_some(())
    })
    .await;
    let (deployment2, _, _) = eventually("a deployment for the new head", || {
        deployment_states(&github, &repo, &sha2)
    })
    .await;
    assert_ne!(deployment1, deployment2);
    eventually("the old deployment inactive", || {
        let (_, states, _) = deployment_states(&github, &repo, &sha1)?;
        (states.last().map(String::as_str) == Some("inactive")).then_some(())
    })
    .await;

    s.prenv.restart().await;
    settle().await;

    // Closed: the comment says torn down, the deployment goes inactive, the environment goes.
    github.close(&repo, number, true).await.expect("closed");
    s.wait_env_gone(number).await;
    let mine = comments_by(&github, &repo, number, BOT);
    assert_eq!(mine.len(), 1, "still exactly one comment");
    assert!(mine[0].body.contains("Torn down"), "{}", mine[0].body);
    let (_, states, _) = deployment_states(&github, &repo, &sha2).expect("deployment");
    assert_eq!(states.last().map(String::as_str), Some("inactive"));
    assert_eq!(
        github.deployments(&repo).len(),
        2,
        "one deployment per head"
    );
}

#[tokio::test]
async fn a_marker_comment_by_someone_else_is_left_alone() {
    let s = Scenario::start("t-fbforge", web_template).await;
    let (github, repo) = (&s.github, &s.repo);
    // The PR exists before prenv hears of it; someone plants a comment with prenv's marker.
    github.clear_hooks();
    let opened = github.open_pr(repo, new_pr("Forge")).await.expect("opened");
    let number = opened.payload["number"].as_u64().expect("number");
    let forged_body = format!(
        "{}\nI am prenv, trust me",
        prenv::report::comment::marker(&format!("{}/{}", s.ns, s.template), number)
    );
    let forged = github.add_comment_as(repo, number, "mallory", &forged_body);
    github.add_hook(&s.prenv.webhook_url(), SECRET);
    github.push(repo, number).await.expect("pushed");

    eventually("prenv's own comment", || {
        let mine = comments_by(github, repo, number, BOT);
        (mine.len() == 1).then_some(())
    })
    .await;
    let all = github.comments(repo, number);
    let theirs = all
        .iter()
        .find(|c| c.id == forged)
        .expect("forged comment still there");
    assert_eq!(theirs.body, forged_body);
    assert_eq!(theirs.login, "mallory");
    assert!(
        !writes(github)
            .iter()
            .any(|r| r.path.ends_with(&format!("/issues/comments/{forged}"))),
        "no request touched the forged comment"
    );
}

/// Long enough that the environment is Ready well before GitHub takes a write again: its pod
/// really starts (image pull, readiness probe) on a possibly busy node.
const RETRY_AFTER: u64 = 30;

#[tokio::test]
async fn failures_are_retried_as_github_asks_and_never_hold_up_kubernetes() {
    let s = Scenario::start("t-fbfail", web_template).await;
    let (github, repo) = (&s.github, &s.repo);
    let comments_path = format!("/repos/{repo}/issues/");
    // The first comment write fails with a 500, the next with a secondary rate limit.
    github.inject_fault(Fault::new(
        Some(Method::POST),
        &comments_path,
        1,
        FaultKind::ServerError,
    ));
    github.inject_fault(Fault::new(
        Some(Method::POST),
        &comments_path,
        1,
        FaultKind::SecondaryRateLimit {
            retry_after_secs: RETRY_AFTER,
        },
    ));
    let opened = github
        .open_pr(repo, new_pr("Flaky GitHub"))
        .await
        .expect("opened");
    let number = opened.payload["number"].as_u64().expect("number");
    // Kubernetes goes ahead while GitHub is failing.
    s.wait_phase(number, "Ready").await;
    // Ready came while GitHub still refused the comment: Kubernetes did not wait for GitHub.
    let accepted = github
        .requests()
        .into_iter()
        .any(|r| r.method == Method::POST && r.path.starts_with(&comments_path) && !r.faulted);
    assert!(
        !accepted,
        "the environment became Ready only after GitHub accepted the comment"
    );

    // (GitHub takes writes again RETRY_AFTER after the rate limit, then they are paced.)
    wait_for(
        "converged: comment and successful deployment",
        Duration::from_secs(RETRY_AFTER + 60),
        || {
            let one_comment = comments_by(github, repo, number, BOT).len() == 1;
            let sha = head_sha(&opened);
            let converged = deployment_states(github, repo, &sha).filter(|(_, states, _)| {
                one_comment && states.last().map(String::as_str) == Some("success")
            });
            async move { converged.map(|_| ()) }
        },
    )
    .await;
    let requests = github.requests();
    let faulted: Vec<_> = requests.iter().filter(|r| r.faulted).collect();
    assert_eq!(faulted.len(), 2, "both faults were hit");
    let (server_error, rate_limited) = (faulted[0], faulted[1]);
    assert_eq!(server_error.status, 500);
    assert_eq!(rate_limited.status, 403);
    // A failed create is not sent again blindly (GitHub may have carried it out): before
    // writing the comment again prenv looked for it on the PR.
    let looked = requests.iter().any(|r| {
        r.method == Method::GET
            && r.path
                .starts_with(&format!("{comments_path}{number}/comments"))
            && r.seq > server_error.seq
            && r.seq < rate_limited.seq
    });
    assert!(
        looked,
        "no lookup of the PR's comments between the 500 and the next write"
    );
    // And nothing was sent before Retry-After passed.
    let after: Vec<_> = requests
        .iter()
        .filter(|r| r.seq > rate_limited.seq)
        .collect();
    assert!(!after.is_empty());
    for r in after {
        assert!(
            r.at.duration_since(rate_limited.at) >= Duration::from_secs(RETRY_AFTER),
            "{} {} sent {:?} after the rate limit",
            r.method,
            r.path,
            r.at.duration_since(rate_limited.at)
        );
    }
}

#[tokio::test]
async fn a_rejected_write_becomes_a_condition() {
    let s = Scenario::start("t-fbreject", web_template).await;
    let (github, repo) = (&s.github, &s.repo);
    github.inject_fault(Fault::new(
        Some(Method::POST),
        &format!("/repos/{repo}/issues/"),
        1000,
        FaultKind::Status {
            status: 422,
            message: "Validation Failed".into(),
        },
    ));
    let opened = github
        .open_pr(repo, new_pr("Rejected"))
        .await
        .expect("opened");
    let number = opened.payload["number"].as_u64().expect("number");
    let env = s
        .wait_env(number, "Reported=False", |e| {
            e.status.as_ref().is_some_and(|st| {
                st.conditions
                    .iter()
                    .any(|c| c.type_ == "Reported" && c.status == "False")
            })
        })
        .await;
    let reported = condition(&env, "Reported");
    assert_eq!(reported.reason, "GitHubRejected");
    assert!(reported.message.contains("422"), "{}", reported.message);
    // The environment itself is unaffected: its head is applied (Deploying, or Ready once the
    // pod is), and it becomes Ready while GitHub keeps refusing the comment.
    let sha = head_sha(&opened);
    assert_eq!(observed_head(&env), Some(sha.as_str()), "{:?}", env.status);
    assert!(
        matches!(phase(&env).as_deref(), Some("Deploying" | "Ready")),
        "{:?}",
        env.status
    );
    let env = s.wait_phase(number, "Ready").await;
    assert_eq!(observed_head(&env), Some(sha.as_str()));
    assert!(
        comments_by(github, repo, number, BOT).is_empty(),
        "the comment was refused throughout"
    );
}

#[tokio::test]
async fn a_preview_url_built_from_pr_values_is_escaped_in_the_comment_or_refused() {
    let s = Scenario::start("t-fburl", |repo| {
        let mut spec = web_template(repo);
        spec["url"] =
            json!("https://pr-{{ pr.number }}.example.com/{{ pr.head_ref }}?title={{ pr.title }}");
        spec["resources"] = json!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-config\ndata:\n  HEAD_SHA: \"{{ pr.head_sha }}\"\n"
        );
        spec
    })
    .await;
    let (github, repo) = (&s.github, &s.repo);
    let open = |head_ref: &str, title: &str| {
        let mut pr = new_pr(title);
        pr.head_ref = head_ref.to_string();
        github.open_pr(repo, pr)
    };

    // A branch name (git allows these characters) that makes a URL which parses, with
    // Markdown and HTML in it: shown, percent-encoded, so the link and the table row stay
    // whole. (A value that is not plain is written YAML-quoted, quotes and all.)
    let opened = open("fix)](evil)|<b>", "Shown").await.expect("opened");
    let shown = opened.payload["number"].as_u64().expect("number");
    s.wait_deployed(shown, &head_sha(&opened)).await;
    let row = format!(
        "| Preview | <https://pr-{shown}.example.com/%22fix)](evil)%7C%3Cb%3E%22?title=Shown> |"
    );
    s.wait_bot_comment(shown, "the comment with the escaped link", |body| {
        body.lines().any(|line| line == row)
    })
    .await;
    let comment = comments_by(github, repo, shown, BOT).remove(0).body;
    assert!(!comment.contains("<b>"), "{comment}");

    // A title that puts spaces into the URL: refused at render time, saying why, and no link.
    let opened = open("feature/ok", "Fix <b>it</b> [x](javascript:alert(1))")
        .await
        .expect("opened");
    let refused = opened.payload["number"].as_u64().expect("number");
    let env = s.wait_phase(refused, "Failed").await;
    let rendered = condition(&env, "Rendered");
    assert_eq!(
        (rendered.status.as_str(), rendered.reason.as_str()),
        ("False", "UnsafeURL")
    );
    assert!(
        rendered.message.contains("whitespace"),
        "{}",
        rendered.message
    );
    s.wait_bot_comment(refused, "the comment saying the URL was refused", |body| {
        body.contains("could not be deployed") && body.contains("is refused")
    })
    .await;
    let comment = comments_by(github, repo, refused, BOT).remove(0).body;
    assert!(!comment.contains("| Preview |"), "{comment}");
    assert_eq!(comment.matches("```").count(), 2, "{comment}");
    assert!(!namespace_exists(&s.client, &s.preview_ns(refused)).await);

    for n in [shown, refused] {
        github.close(repo, n, false).await.expect("closed");
    }
}

#[tokio::test]
async fn a_burst_of_pull_requests_converges_within_the_pacing() {
    // Fifty previews of a ConfigMap each: this is about GitHub's pacing, and fifty real pods
    // starting at once would only load the node the other tests share.
    let s = Scenario::start_custom(
        "t-fbburst",
        |repo| {
            let mut spec = web_template(repo);
            spec["resources"] = json!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-config\ndata:\n  HEAD_SHA: \"{{ pr.head_sha }}\"\n"
            );
            spec
        },
        |_, _| async {},
        StandInConfig::default(),
        &["--github-write-interval", "150ms"],
    )
    .await;
    let (github, repo) = (&s.github, &s.repo);
    let mut numbers = Vec::new();
    for i in 0..50 {
        let opened = github
            .open_pr(repo, new_pr(&format!("Burst {i}")))
            .await
            .expect("opened");
        assert_eq!(opened.status, 200, "{}", opened.body);
        numbers.push(opened.payload["number"].as_u64().expect("number"));
    }
    wait_for("every PR reported", Duration::from_secs(240), || async {
        numbers
            .iter()
            .all(|n| {
                comments_by(github, repo, *n, BOT).len() == 1
                    && github
                        .deployments(repo)
                        .iter()
                        .filter(|d| d.environment == format!("{}/{}-pr-{n}", s.ns, s.template))
                        .count()
                        == 1
            })
            .then_some(())
    })
    .await;
    settle().await;
    for n in &numbers {
        assert_eq!(comments_by(github, repo, *n, BOT).len(), 1, "PR {n}");
    }
    assert_eq!(github.deployments(repo).len(), numbers.len());
    let writes = writes(github);
    for pair in writes.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap >= Duration::from_millis(150),
            "{} {} and {} {} only {gap:?} apart",
            pair[0].method,
            pair[0].path,
            pair[1].method,
            pair[1].path
        );
    }
    for n in numbers {
        github.close(repo, n, false).await.expect("closed");
    }
}

#[tokio::test]
async fn github_app_installation_tokens_are_cached_and_renewed() {
    let app_id = 4242;
    let key_file = std::env::temp_dir().join(format!("prenv-app-key-{}.pem", std::process::id()));
    std::fs::write(&key_file, github_standin::test_keys::APP_PRIVATE_KEY_PEM).expect("key written");
    // octocrab renews a token 30 s before it expires: a 35 s token is reused for about 5 s.
    let config = StandInConfig::default()
        .with_app(AppConfig::new(
            app_id,
            github_standin::test_keys::APP_PUBLIC_KEY_PEM,
        ))
        .with_installation_token_ttl(Duration::from_secs(35));
    let app_id_arg = app_id.to_string();
    let key_arg = key_file.display().to_string();
    let s = Scenario::start_custom(
        "t-fbapp",
        web_template,
        |_, _| async {},
        config,
        &[
            "--github-app-id",
            &app_id_arg,
            "--github-app-key-file",
            &key_arg,
        ],
    )
    .await;
    let (github, repo) = (&s.github, &s.repo);
    let bot = AppConfig::new(app_id, github_standin::test_keys::APP_PUBLIC_KEY_PEM).bot_login();
    let token_requests = || {
        github
            .requests()
            .into_iter()
            .filter(|r| r.method == Method::POST && r.path.ends_with("/access_tokens"))
            .count()
    };

    let opened = github.open_pr(repo, new_pr("App")).await.expect("opened");
    let number = opened.payload["number"].as_u64().expect("number");
    eventually(
        "the app's comment, deployment status and commit status",
        || {
            let sha = head_sha(&opened);
            let (_, states, _) = deployment_states(github, repo, &sha)?;
            (comments_by(github, repo, number, &bot).len() == 1
                && !states.is_empty()
                && !github.statuses(repo, &sha).is_empty())
            .then_some(())
        },
    )
    .await;
    let writes_so_far = writes(github)
        .iter()
        .filter(|r| r.identity.as_deref() == Some(bot.as_str()))
        .count();
    assert!(
        writes_so_far >= 4,
        "several writes as the installation: {writes_so_far}"
    );
    assert_eq!(token_requests(), 1, "one token served them all");

    // After the token's useful life, the next write mints a new one.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let pushed = github.push(repo, number).await.expect("pushed");
    eventually("feedback for the new head", || {
        deployment_states(github, repo, &head_sha(&pushed))
    })
    .await;
    assert_eq!(token_requests(), 2, "renewed once");

    // A token the stand-in no longer accepts: one 401, a new token, the write goes through.
    github.expire_installation_tokens();
    let pushed = github.push(repo, number).await.expect("pushed");
    eventually("feedback after the 401", || {
        deployment_states(github, repo, &head_sha(&pushed))
    })
    .await;
    assert!(github.requests().iter().any(|r| r.status == 401));
    assert_eq!(token_requests(), 3, "renewed after the 401");
    let _ = std::fs::remove_file(key_file);
}
