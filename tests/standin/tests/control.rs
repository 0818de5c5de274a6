//! The `github-standin` binary and its `/_standin/` control API, as a demo script uses them.

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Receiver, SECRET, verify_sha256};
use serde_json::{Value, json};

/// Kills the process if the test fails before it ends it.
struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_binary(extra: &[&str]) -> (Proc, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_github-standin"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--token",
            "tok123=prenv-bot",
            "--repo",
            "acme/shop",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let proc = Proc(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with('/'),
        "{url}"
    );
    (proc, url)
}

#[tokio::test]
async fn binary_serves_the_api_and_the_control_api_and_stops_on_sigterm() {
    let rx = Receiver::start().await;
    let (mut proc, url) = start_binary(&["--hook", &rx.url, "--hook-secret", SECRET]);
    let http = reqwest::Client::new();
    let ctl = |p: &str| format!("{url}_standin/{p}");

    let r = http.get(ctl("healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .post(ctl("repos/acme/shop/pulls"))
        .json(&json!({"title": "Demo", "author": "alice", "labels": ["preview"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["status"], 202);
    assert_eq!(d["event"], "pull_request");
    assert_eq!(d["payload"]["pull_request"]["user"]["login"], "alice");
    let got = rx.last();
    assert!(verify_sha256(
        SECRET,
        &got.body,
        got.header("x-hub-signature-256")
    ));
    assert_eq!(got.header("x-github-delivery"), d["id"].as_str().unwrap());

    // The REST API with the token from the command line.
    let pulls: Value = http
        .get(format!("{url}repos/acme/shop/pulls"))
        .header("Authorization", "token tok123")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(pulls.as_array().unwrap().len(), 1);
    http.post(format!("{url}repos/acme/shop/issues/1/comments"))
        .header("Authorization", "token tok123")
        .json(&json!({"body": "Preview ready"}))
        .send()
        .await
        .unwrap();

    // Every control operation.
    let post = |p: &str, body: Value| {
        let http = http.clone();
        let u = ctl(p);
        async move {
            let r = http.post(u).json(&body).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let get = |p: &str| {
        let http = http.clone();
        let u = ctl(p);
        async move {
            http.get(u)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    assert_eq!(post("repos/acme/shop/pulls/1/push", json!({})).await.0, 200);
    let sha = "cd".repeat(20);
    let (st, v) = post("repos/acme/shop/pulls/1/push", json!({"sha": sha})).await;
    assert_eq!(st, 200);
    assert_eq!(v["payload"]["after"], sha);
    assert_eq!(
        post(
            "repos/acme/shop/pulls/1/labels",
            json!({"name": "preview:approved", "sender": "acme"})
        )
        .await
        .0,
        200
    );
    let r = http
        .delete(ctl("repos/acme/shop/pulls/1/labels/preview?sender=acme"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        post("repos/acme/shop/pulls/1/draft", json!({"draft": true}))
            .await
            .0,
        200
    );
    assert_eq!(
        post("repos/acme/shop/pulls/1/title", json!({"title": "Demo 2"}))
            .await
            .0,
        200
    );
    assert_eq!(
        post(
            "repos/acme/shop/pulls/1/comments",
            json!({"login": "bob", "body": "/deploy"})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        post("repos/acme/shop/pulls/1/close", json!({"merged": false}))
            .await
            .0,
        200
    );
    assert_eq!(
        post("repos/acme/shop/pulls/1/reopen", json!({})).await.0,
        200
    );
    let (st, v) = post("repos/acme/shop/pulls/1/close", json!({"merged": false})).await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = post("repos/acme/shop/pulls/1/close", json!({})).await;
    assert_eq!(st, 422, "already closed: {v}");
    assert!(v["error"].is_string());
    assert_eq!(post("repos/acme/shop/pulls/9/push", json!({})).await.0, 404);
    assert_eq!(post("ping", json!({})).await.0, 200);
    assert_eq!(
        post("tokens", json!({"token": "t2", "login": "carol"}))
            .await
            .0,
        201
    );
    assert_eq!(
        post("repos", json!({"full_name": "platform/api", "org": true}))
            .await
            .0,
        201
    );
    assert_eq!(
        post(
            "permissions",
            json!({"full_name": "acme/shop", "login": "carol", "permission": "write"})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        post("faults", json!({"method": "GET", "path_prefix": "/user", "times": 1, "kind": {"type": "secondary_rate_limit", "retry_after_secs": 1}})).await.0,
        201
    );
    let r = http
        .get(format!("{url}user"))
        .header("Authorization", "token t2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .get(format!("{url}user"))
        .header("Authorization", "token t2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["login"], "carol");

    let comments: Value = get("repos/acme/shop/pulls/1/comments").await;
    let logins: Vec<&str> = comments
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["login"].as_str().unwrap())
        .collect();
    assert_eq!(logins, vec!["prenv-bot", "bob"]);
    let pr: Value = get("repos/acme/shop/pulls/1").await;
    assert_eq!(pr["title"], "Demo 2");
    assert_eq!(pr["state"], "closed");

    let deliveries: Value = get("deliveries").await;
    let deliveries = deliveries.as_array().unwrap();
    let first_id = deliveries[0]["id"].as_str().unwrap().to_string();
    assert_eq!(deliveries[0]["event"], "pull_request");
    assert_eq!(deliveries[0]["action"], "opened");
    assert!(deliveries[0]["headers"]["X-Hub-Signature-256"].is_string());
    let (st, v) = post(&format!("deliveries/{first_id}/redeliver"), json!({})).await;
    assert_eq!(st, 200);
    assert_eq!(v["id"], first_id.as_str());
    let requests: Value = get("requests").await;
    let requests = requests.as_array().unwrap();
    assert!(
        requests
            .iter()
            .any(|r| r["path"] == "/repos/acme/shop/issues/1/comments"
                && r["identity"] == "prenv-bot"
                && r["status"] == 201)
    );
    assert!(
        requests
            .iter()
            .all(|r| !r["path"].as_str().unwrap().starts_with("/_standin"))
    );

    // SIGTERM ends it.
    let pid = proc.0.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let mut waited = 0;
    loop {
        if let Some(st) = proc.0.try_wait().unwrap() {
            assert!(st.success(), "{st:?}");
            break;
        }
        waited += 1;
        assert!(waited < 100, "did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
