//! Shared test helpers: a webhook receiver and octocrab clients against a stand-in.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use github_standin::{Config, StandIn};
use hmac::{Hmac, KeyInit, Mac};
use octocrab::Octocrab;

pub const TOKEN: &str = "ghp_standinTestToken0000000000000000000";
pub const REPO: &str = "acme/shop";
pub const SECRET: &str = "It's a Secret to Everybody";

#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A webhook endpoint that records what it gets and answers `status` (default 202).
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    pub got: Arc<Mutex<Vec<Received>>>,
    pub status: Arc<AtomicU16>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let got = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(202));
        let (g, s) = (got.clone(), status.clone());
        let app = axum::Router::new().route(
            "/webhooks/github",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let (g, s) = (g.clone(), s.clone());
                async move {
                    g.lock().unwrap().push(Received { headers, body });
                    (
                        StatusCode::from_u16(s.load(Ordering::SeqCst)).unwrap(),
                        "accepted",
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            url: format!("http://{addr}/webhooks/github"),
            got,
            status,
        }
    }

    pub fn all(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    pub fn last(&self) -> Received {
        self.got.lock().unwrap().last().cloned().unwrap()
    }

    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }
}

/// A stand-in with one repository, one token (acting as `prenv-bot`) and, optionally, a hook.
pub async fn standin() -> StandIn {
    let s = StandIn::start(Config::default()).await.unwrap();
    s.add_repo(REPO);
    s.add_token(TOKEN, "prenv-bot");
    s
}

pub fn octocrab(s: &StandIn, token: &str) -> Octocrab {
    Octocrab::builder()
        .base_uri(s.url())
        .unwrap()
        .personal_token(token.to_string())
        .build()
        .unwrap()
}

/// Verifies `X-Hub-Signature-256` independently of the stand-in's own signing code.
pub fn verify_sha256(secret: &str, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

pub fn verify_sha1(secret: &str, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("sha1=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}
