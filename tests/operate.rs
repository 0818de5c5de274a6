//! Operating prenv: leader election between two replicas, metrics, the status page (in a real
//! headless Chromium), and the `prenv render` dry run.

mod support;

use github_standin::NewPr;
use kube::Api;
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

async fn metrics_text(prenv: &Prenv) -> String {
    reqwest::get(format!("{}/metrics", prenv.admin_url()))
        .await
        .expect("metrics answered")
        .text()
        .await
        .expect("metrics text")
}

/// The value of `name` with all of `labels` in Prometheus text, parsed by an independent
/// parser (so the exposition is valid Prometheus text).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
        .reduce(|a, b| a + b)
}

/// The instances that recorded Events about environments in `namespace`.
async fn event_reporters(client: &kube::Client, namespace: &str) -> Vec<String> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), namespace);
    let mut who: Vec<String> = api
        .list(&Default::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter_map(|e| e.reporting_instance)
        .collect();
    who.sort();
    who.dedup();
    who
}

#[tokio::test]
async fn one_replica_leads_and_the_other_takes_over() {
    let mut s = Scenario::start_with_args("t-leader", &["--instance", "replica-a"]).await;
    // The first replica leads; a second one joins and follows.
    wait_for("replica-a leads", Duration::from_secs(30), || async {
        (sample(&metrics_text(&s.prenv).await, "prenv_leader", &[]) == Some(1.0)).then_some(())
    })
    .await;
    let mut follower = Prenv::start_with(&s.ns, &s.github, &["--instance", "replica-b"]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let follower_metrics = metrics_text(&follower).await;
    assert_eq!(sample(&follower_metrics, "prenv_leader", &[]), Some(0.0));
    // A follower leaves the resync (GitHub's rate limit) to the leader.
    assert_eq!(
        sample(
            &follower_metrics,
            "prenv_resync_runs_total",
            &[("result", "success")]
        ),
        Some(0.0)
    );

    // Deliveries go to the follower: it writes the environment, the leader reconciles it.
    s.github.clear_hooks();
    s.github.add_hook(&follower.webhook_url(), SECRET);
    let opened = s
        .github
        .open_pr(&s.repo, NewPr::new("Two replicas"))
        .await
        .expect("opened");
    assert_eq!(opened.status, 200, "{}", opened.body);
    let number = opened.payload["number"].as_u64().expect("number");
    s.wait_deployed(number, &head_sha(&opened)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        event_reporters(&s.client, &s.ns).await,
        ["replica-a"],
        "only the leader reconciled"
    );

    // The leader stops (SIGTERM releases its lease); the follower takes over within 15 s
    // and acts on what arrives next.
    s.prenv.stop().await;
    let stopped = Instant::now();
    wait_for("replica-b leads", Duration::from_secs(15), || async {
        (sample(&metrics_text(&follower).await, "prenv_leader", &[]) == Some(1.0)).then_some(())
    })
    .await;
    let took_over = stopped.elapsed();
    assert!(took_over <= Duration::from_secs(15), "{took_over:?}");
    // The new leader catches up with GitHub at once rather than a resync interval (5 min)
    // after it started.
    wait_for("replica-b resyncs", Duration::from_secs(10), || async {
        let text = metrics_text(&follower).await;
        (sample(&text, "prenv_resync_runs_total", &[("result", "success")]) >= Some(1.0))
            .then_some(())
    })
    .await;
    let pushed = s.github.push(&s.repo, number).await.expect("pushed");
    let sha = head_sha(&pushed);
    s.wait_env(number, "the new head deployed by the new leader", |e| {
        observed_head(e) == Some(sha.as_str())
    })
    .await;
    // The Event follows the status write.
    wait_for("an Event by replica-b", Duration::from_secs(30), || async {
        event_reporters(&s.client, &s.ns)
            .await
            .contains(&"replica-b".to_string())
            .then_some(())
    })
    .await;
    s.github
        .close(&s.repo, number, false)
        .await
        .expect("closed");
    s.wait_env_gone(number).await;
    follower.stop().await;
}

#[tokio::test]
async fn metrics_count_reconciles_and_environments() {
    let s = Scenario::start("t-metrics", web_template).await;
    let before = metrics_text(&s.prenv).await;
    let reconciles_before =
        sample(&before, "prenv_reconciles_total", &[("result", "success")]).unwrap_or(0.0);
    let opened = s
        .github
        .open_pr(&s.repo, NewPr::new("Metrics"))
        .await
        .expect("opened");
    let number = opened.payload["number"].as_u64().expect("number");
    s.wait_deployed(number, &head_sha(&opened)).await;
    let template = format!("{}/{}", s.ns, s.template);
    // The environment is counted once, under the phase it is in (Deploying, or Ready once its
    // pod is: read from the environment itself, since it may move on at any time).
    let after = wait_for("metrics to move", Duration::from_secs(60), || async {
        let env = environment(&s.client, &s.ns, &s.env_name(number)).await?;
        let current = phase(&env).filter(|p| p == "Deploying" || p == "Ready")?;
        let text = metrics_text(&s.prenv).await;
        let moved = sample(&text, "prenv_reconciles_total", &[("result", "success")])
            .unwrap_or(0.0)
            > reconciles_before
            && sample(
                &text,
                "prenv_environments",
                &[("template", &template), ("phase", &current)],
            ) == Some(1.0)
            && sample(&text, "prenv_environments", &[("template", &template)]) == Some(1.0)
            && sample(
                &text,
                "prenv_github_requests_total",
                &[("result", "success")],
            )
            .unwrap_or(0.0)
                > 0.0;
        moved.then_some(text)
    })
    .await;
    assert!(sample(&after, "prenv_reconcile_duration_seconds_count", &[]).unwrap_or(0.0) > 0.0);
    assert_eq!(
        sample(
            &after,
            "prenv_webhook_deliveries_total",
            &[
                ("event", "pull_request"),
                ("action", "opened"),
                ("result", "handled")
            ]
        ),
        Some(1.0)
    );
    assert!(sample(&after, "prenv_webhook_duration_seconds_count", &[]).unwrap_or(0.0) >= 1.0);
    assert!(sample(&after, "prenv_github_rate_limit_remaining", &[]).is_some_and(|v| v > 0.0));

    // The Grafana dashboard only queries metrics prenv exposes. (A labelled family without
    // zero-initialised series shows up with its first sample, so give traffic time to count.)
    let dashboard = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana-dashboard.json"),
    )
    .expect("dashboard");
    let names = regex::Regex::new(r"prenv_[a-z_]+").expect("regex");
    let queried: std::collections::BTreeSet<&str> =
        names.find_iter(&dashboard).map(|m| m.as_str()).collect();
    assert!(queried.len() > 5, "{queried:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = metrics_text(&s.prenv).await;
        let missing: Vec<&str> = queried
            .iter()
            .copied()
            .filter(|name| {
                let family = ["_total", "_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .unwrap_or(name);
                !text.contains(&format!("# TYPE {family} "))
            })
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dashboard queries {missing:?}, which /metrics does not have"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.github
        .close(&s.repo, number, false)
        .await
        .expect("closed");
}

#[tokio::test]
async fn metric_labels_carry_no_login_or_branch_from_a_pull_request() {
    let s = Scenario::start("t-labels", web_template).await;
    // A stranger's fork PR: prenv asks GitHub whether the author may write.
    let opened = s
        .github
        .open_pr(
            &s.repo,
            NewPr {
                title: "evil-title-4321".into(),
                author: "evil-login-1234".into(),
                fork: Some("evil-login-1234/shop-fork".into()),
                author_association: "CONTRIBUTOR".into(),
                head_ref: "evil-branch-5678".into(),
                ..Default::default()
            },
        )
        .await
        .expect("opened");
    assert_eq!(opened.status, 200, "{}", opened.body);
    let number = opened.payload["number"].as_u64().expect("number");
    let env = s
        .wait_env(number, "waiting for approval", |e| {
            phase(e).as_deref() == Some("Pending")
        })
        .await;
    assert_eq!(condition(&env, "Approved").reason, "AwaitingApproval");
    // A command from another stranger: asked again, for that login. The answer comes after
    // the check, so both requests are counted by now.
    let denied = s
        .github
        .comment(&s.repo, number, "evil-login-9876", "/preview redeploy")
        .await
        .expect("commented");
    assert!(denied.body.contains("denied"), "{}", denied.body);

    let text = metrics_text(&s.prenv).await;
    for planted in ["evil-login", "evil-branch", "evil-title"] {
        assert!(!text.contains(planted), "{planted} in a label:\n{text}");
    }
    // Read by hand: prometheus-parse cannot read a `}` inside a label value.
    let series = r#"prenv_github_requests_total{endpoint="GET /repos/{owner}/{repo}/collaborators/{user}/permission","#;
    let permission_checks: f64 = text
        .lines()
        .filter_map(|line| line.strip_prefix(series))
        .filter_map(|rest| rest.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(permission_checks >= 2.0, "{text}");
    s.github
        .close(&s.repo, number, false)
        .await
        .expect("closed");
}

/// Debian's Chromium, headless, as CI installs it.
fn chromium() -> String {
    for candidate in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new(candidate)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return candidate.to_string();
        }
    }
    panic!("no headless Chromium: install Debian's `chromium` package (scripts/test.sh does)");
}

fn headless(
    browser: &str,
    profile: &std::path::Path,
    extra: &[String],
    url: &str,
) -> std::process::Output {
    Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("chromium runs")
}

#[tokio::test]
async fn status_page_lists_environments_escaped_in_a_real_browser() {
    let s = Scenario::start("t-page", web_template).await;
    let title = "<script>document.title='pwned'</script><img src=x onerror=alert(1)> Fix & ship";
    let opened = s
        .github
        .open_pr(
            &s.repo,
            NewPr {
                title: title.to_string(),
                author: "octocat".into(),
                head_ref: "feature/<b>bold</b>".into(),
                ..Default::default()
            },
        )
        .await
        .expect("opened");
    let number = opened.payload["number"].as_u64().expect("number");
    s.wait_deployed(number, &head_sha(&opened)).await;
    // On the admin listener only: the webhook listener is the one published to the internet.
    let detail_path = format!("/environments/{}/{}", s.ns, s.env_name(number));
    for path in ["/", detail_path.as_str()] {
        let webhook_listener = format!("http://127.0.0.1:{}{path}", s.prenv.port);
        let answer = reqwest::get(&webhook_listener).await.expect("answered");
        assert_eq!(answer.status(), 404, "{webhook_listener}");
    }
    let index_url = format!("{}/", s.prenv.admin_url());
    // The page is served from a cache that follows the cluster.
    let html = wait_for(
        "the environment on the page",
        Duration::from_secs(30),
        || async {
            let html = reqwest::get(&index_url).await.ok()?.text().await.ok()?;
            // (minijinja's HTML escaping writes `/` as `&#x2f;`.)
            (html.contains(&format!("#{number}"))
                && html.contains(&format!("pr-{number}.{}", s.template)))
            .then_some(html)
        },
    )
    .await;
    assert!(html.contains(&s.template), "{html}");
    assert!(
        !html.contains("<script>document.title"),
        "title not escaped: {html}"
    );
    assert!(html.contains("&lt;script&gt;"), "{html}");
    let detail_url = format!("{}{detail_path}", s.prenv.admin_url());
    let detail = reqwest::get(&detail_url)
        .await
        .expect("page")
        .text()
        .await
        .expect("html");
    assert!(
        detail.contains("Rendered") && detail.contains("Deployed"),
        "conditions and events: {detail}"
    );
    assert!(!detail.contains("<script>document.title"));

    // A real browser: the DOM holds the title as text, no injected element ran, and a
    // screenshot shows the page.
    let browser = chromium();
    let profile = tempfile::tempdir().expect("profile dir");
    let dom = headless(&browser, profile.path(), &["--dump-dom".into()], &index_url);
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("<title>prenv: preview environments</title>"),
        "the script did not change the title: {dom}"
    );
    assert!(dom.contains("&lt;script&gt;document.title"), "{dom}");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = headless(
        &browser,
        profile.path(),
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=390,844".into(),
        ],
        &index_url,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5_000,
        "a real screenshot ({} bytes)",
        png.len()
    );
    s.github
        .close(&s.repo, number, false)
        .await
        .expect("closed");
}

#[test]
fn render_prints_what_would_be_applied_or_the_error() {
    let dir = tempfile::tempdir().expect("dir");
    let template = dir.path().join("template.yaml");
    let event = dir.path().join("event.json");
    std::fs::write(
        &template,
        "apiVersion: prenv.dev/v1alpha1\nkind: PreviewTemplate\nmetadata: {name: shop, namespace: previews}\nspec:\n  repository: acme/shop\n  url: \"https://pr-{{ pr.number }}.example.com\"\n  resources: |\n    apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: config}\n    data:\n      SHA: \"{{ pr.head_sha }}\"\n",
    )
    .expect("template");
    let payload = json!({
        "action": "opened", "number": 7,
        "pull_request": {
            "id": 1, "number": 7, "url": "https://api.github.com/repos/acme/shop/pulls/7", "state": "open", "locked": false,
            "title": "Seven", "user": {"login": "octocat", "id": 1, "node_id": "U", "avatar_url": "https://a", "gravatar_id": "", "url": "https://api.github.com/users/octocat", "html_url": "https://github.com/octocat", "followers_url": "https://a", "following_url": "https://a", "gists_url": "https://a", "starred_url": "https://a", "subscriptions_url": "https://a", "organizations_url": "https://a", "repos_url": "https://a", "events_url": "https://a", "received_events_url": "https://a", "type": "User", "site_admin": false},
            "head": {"label": "acme:f", "ref": "f", "sha": "0123456789abcdef0123456789abcdef01234567", "repo": {"id": 9, "name": "shop", "full_name": "acme/shop", "url": "https://api.github.com/repos/acme/shop"}},
            "base": {"label": "acme:main", "ref": "main", "sha": "fedcba9876543210fedcba9876543210fedcba98", "repo": {"id": 9, "name": "shop", "full_name": "acme/shop", "url": "https://api.github.com/repos/acme/shop"}},
            "author_association": "OWNER", "draft": false, "merged": false,
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"
        },
        "repository": {"id": 9, "name": "shop", "full_name": "acme/shop", "url": "https://api.github.com/repos/acme/shop"},
        "sender": {"login": "octocat", "id": 1, "node_id": "U", "avatar_url": "https://a", "gravatar_id": "", "url": "https://api.github.com/users/octocat", "html_url": "https://github.com/octocat", "followers_url": "https://a", "following_url": "https://a", "gists_url": "https://a", "starred_url": "https://a", "subscriptions_url": "https://a", "organizations_url": "https://a", "repos_url": "https://a", "events_url": "https://a", "received_events_url": "https://a", "type": "User", "site_admin": false}
    });
    std::fs::write(&event, payload.to_string()).expect("event");
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_prenv"))
            .args(["render", "--template"])
            .arg(&template)
            .arg("--event")
            .arg(&event)
            .output()
            .expect("prenv render runs")
    };
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("# namespace: shop-pr-7"), "{stdout}");
    assert!(
        stdout.contains("# url: https://pr-7.example.com"),
        "{stdout}"
    );
    assert!(
        stdout.contains("SHA: 0123456789abcdef0123456789abcdef01234567"),
        "{stdout}"
    );
    assert!(
        stdout.contains("prenv.dev/environment: previews.shop-7"),
        "{stdout}"
    );
    assert!(stdout.contains("namespace: shop-pr-7"), "{stdout}");

    // A broken template: a non-zero exit and the error a template author needs.
    let broken = std::fs::read_to_string(&template)
        .expect("template")
        .replace("{{ pr.head_sha }}", "{{ pr.nope }}");
    std::fs::write(&template, broken).expect("template");
    let out = run();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("undefined") && stderr.contains("resources"),
        "{stderr}"
    );
}
