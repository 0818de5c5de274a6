//! GitHub App: JWT checks, installations, installation tokens and their expiry.

mod common;

use std::time::Duration;

use common::{Receiver, SECRET};
use github_standin::test_keys::{APP_PRIVATE_KEY_PEM, APP_PUBLIC_KEY_PEM};
use github_standin::{AppConfig, AuthKind, Config, NewPr, StandIn};
use octocrab::Octocrab;
use octocrab::models::AppId;
use serde_json::{Value, json};

const APP_ID: u64 = 424242;

async fn app_standin(ttl: Duration) -> StandIn {
    let cfg = Config::default()
        .with_app(AppConfig::new(APP_ID, APP_PUBLIC_KEY_PEM))
        .with_installation_token_ttl(ttl);
    let s = StandIn::start(cfg).await.unwrap();
    s.add_repo("acme/shop");
    s.add_repo("globex/web");
    s
}

fn app_client(s: &StandIn) -> Octocrab {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(APP_PRIVATE_KEY_PEM.as_bytes()).unwrap();
    Octocrab::builder()
        .base_uri(s.url())
        .unwrap()
        .app(AppId(APP_ID), key)
        .build()
        .unwrap()
}

fn jwt(claims: Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(APP_PRIVATE_KEY_PEM.as_bytes()).unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &key,
    )
    .unwrap()
}

#[tokio::test]
async fn octocrab_app_flow_installation_token_and_bot_identity() {
    let s = app_standin(Duration::from_secs(3600)).await;
    s.open_pr("acme/shop", NewPr::default()).await.unwrap();
    let app = app_client(&s);
    let me = app.current().app().await.unwrap();
    assert_eq!(me.id.0, APP_ID);
    let inst = app
        .apps()
        .get_repository_installation("acme", "shop")
        .await
        .unwrap();
    assert_eq!(inst.account.login, "acme");
    assert_eq!(Some(inst.id.0), s.installation_id("acme"));
    let other = app
        .apps()
        .get_repository_installation("globex", "web")
        .await
        .unwrap();
    assert_ne!(other.id, inst.id, "one installation per owner");

    let (gh, token) = app.installation_and_token(inst.id).await.unwrap();
    use secrecy::ExposeSecret as _;
    assert!(token.expose_secret().starts_with("ghs_"));
    let c = gh
        .issues("acme", "shop")
        .create_comment(1, "from the app")
        .await
        .unwrap();
    assert_eq!(c.user.login, "prenv-standin[bot]");
    assert_eq!(c.user.r#type, "Bot");
    let prs = gh.pulls("acme", "shop").list().send().await.unwrap();
    assert_eq!(prs.items.len(), 1);
    // The installation of acme cannot see globex's repositories.
    let err = gh.pulls("globex", "web").list().send().await.unwrap_err();
    assert!(
        matches!(err, octocrab::Error::GitHub { ref source, .. } if source.status_code == 404),
        "{err:?}"
    );

    let recs = s.requests();
    let post = recs
        .iter()
        .find(|r| r.path.ends_with("/access_tokens"))
        .unwrap();
    assert_eq!(post.auth, AuthKind::AppJwt);
    assert_eq!(post.status, 201);
    let comment = recs.iter().find(|r| r.path.ends_with("/comments")).unwrap();
    assert_eq!(comment.auth, AuthKind::Installation);
    assert_eq!(comment.identity.as_deref(), Some("prenv-standin[bot]"));

    // A JWT is not a token for repository endpoints, and a PAT is not a JWT.
    let err = app.pulls("acme", "shop").list().send().await.unwrap_err();
    assert!(
        matches!(err, octocrab::Error::GitHub { ref source, .. } if source.status_code == 403),
        "{err:?}"
    );
    let r = reqwest::Client::new()
        .get(format!("{}app", s.url()))
        .bearer_auth(token.expose_secret())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn installation_tokens_expire_with_401() {
    let s = app_standin(Duration::from_secs(2)).await;
    let inst = s.installation_id("acme").unwrap();
    let http = reqwest::Client::new();
    let now = chrono::Utc::now().timestamp();
    let r = http
        .post(format!("{}app/installations/{inst}/access_tokens", s.url()))
        .bearer_auth(jwt(
            json!({"iss": APP_ID, "iat": now - 60, "exp": now + 540}),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    let token = v["token"].as_str().unwrap().to_string();
    let expires: chrono::DateTime<chrono::Utc> = v["expires_at"].as_str().unwrap().parse().unwrap();
    assert!(expires <= chrono::Utc::now() + chrono::Duration::seconds(3));
    assert!(v["permissions"]["pull_requests"].is_string());

    let get = |t: String| {
        let http = http.clone();
        let url = format!("{}repos/acme/shop/pulls", s.url());
        async move {
            http.get(url)
                .header("Authorization", format!("token {t}"))
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(get(token.clone()).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let r = get(token.clone()).await;
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["message"], "Bad credentials");

    // A fresh token works again; expire_installation_tokens() kills it at once.
    let r = http
        .post(format!("{}app/installations/{inst}/access_tokens", s.url()))
        .bearer_auth(jwt(
            json!({"iss": APP_ID.to_string(), "iat": now - 60, "exp": now + 540}),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "string iss accepted");
    let token2 = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(get(token2.clone()).await.status(), 200);
    s.expire_installation_tokens();
    assert_eq!(get(token2).await.status(), 401);
}

#[tokio::test]
async fn bad_jwts_are_refused_like_github() {
    let s = app_standin(Duration::from_secs(3600)).await;
    let http = reqwest::Client::new();
    let now = chrono::Utc::now().timestamp();
    let call = |token: String| {
        let http = http.clone();
        let url = format!("{}app", s.url());
        async move {
            let r = http.get(url).bearer_auth(token).send().await.unwrap();
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap();
            (
                status,
                v["message"].as_str().unwrap_or_default().to_string(),
            )
        }
    };
    let ok = call(jwt(
        json!({"iss": APP_ID, "iat": now - 60, "exp": now + 540}),
    ))
    .await;
    assert_eq!(ok.0, 200);
    let (st, msg) = call(jwt(
        json!({"iss": APP_ID, "iat": now - 700, "exp": now - 100}),
    ))
    .await;
    assert_eq!(st, 401);
    assert!(msg.contains("'exp'"), "{msg}");
    let (st, msg) = call(jwt(json!({"iss": APP_ID, "iat": now, "exp": now + 1200}))).await;
    assert_eq!(st, 401);
    assert!(msg.contains("too far"), "{msg}");
    let (st, _) = call(jwt(json!({"iss": 1, "iat": now - 60, "exp": now + 540}))).await;
    assert_eq!(st, 401);
    let (st, msg) = call(jwt(json!({"iss": APP_ID, "exp": now + 540}))).await;
    assert_eq!(st, 401);
    assert!(msg.contains("'iat'"), "{msg}");
    // Signed by another key.
    let other = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOjF9.c2lnbmF0dXJl".to_string();
    let (st, msg) = call(other).await;
    assert_eq!(st, 401);
    assert_eq!(msg, "A JSON web token could not be decoded");
}

#[tokio::test]
async fn deliveries_carry_the_installation() {
    let s = app_standin(Duration::from_secs(3600)).await;
    let rx = Receiver::start().await;
    s.add_hook(&rx.url, SECRET);
    let d = s.open_pr("acme/shop", NewPr::default()).await.unwrap();
    assert_eq!(
        d.payload["installation"]["id"].as_u64(),
        s.installation_id("acme")
    );
    let r = rx.last();
    let ev = octocrab::models::webhook_events::WebhookEvent::try_from_header_and_body(
        r.header("x-github-event"),
        &r.body,
    )
    .unwrap();
    assert!(ev.installation.is_some());
}

#[tokio::test]
async fn private_key_pem_is_accepted_as_the_app_key() {
    let cfg = Config::default().with_app(AppConfig::new(APP_ID, APP_PRIVATE_KEY_PEM));
    let s = StandIn::start(cfg).await.unwrap();
    s.add_repo("acme/shop");
    let app = app_client(&s);
    assert_eq!(app.current().app().await.unwrap().id.0, APP_ID);
}
