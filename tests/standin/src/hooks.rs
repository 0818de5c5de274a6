//! Webhook deliveries: payloads shaped like GitHub's, signed and POSTed to every hook.

use std::time::{Instant, SystemTime};

use hmac::{Hmac, KeyInit as _, Mac as _};
use serde_json::{Map, Value, json};

use crate::model::{Delivered, Delivery};
use crate::shapes::{Ctx, PrFlavor, RepoFlavor, ts};
use crate::state::{HookRec, PrChange};
use crate::{Error, Shared};

/// `sha256=<hex HMAC-SHA256 of body>`: the `X-Hub-Signature-256` value GitHub sends.
pub fn signature_256(secret: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// `sha1=<hex HMAC-SHA1 of body>`: the legacy `X-Hub-Signature` value.
pub fn signature_sha1(secret: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha1={}", hex::encode(mac.finalize().into_bytes()))
}

/// An event ready to deliver.
pub(crate) struct Outgoing {
    pub event: &'static str,
    pub action: Option<String>,
    pub payload: Value,
    /// `X-GitHub-Hook-Installation-Target-ID` (the repository id).
    pub target_id: u64,
}

fn common(ctx: &Ctx<'_>, m: &mut Map<String, Value>, repo: &str, sender: &str) -> u64 {
    let (owner, repo_id) = match ctx.st.repo(repo) {
        Ok(r) => (r.owner.clone(), r.id),
        Err(_) => (String::new(), 0),
    };
    m.insert("repository".into(), ctx.repo(repo, RepoFlavor::Hook));
    if ctx.is_org(&owner) {
        m.insert("organization".into(), ctx.org(&owner));
    }
    if let Some(inst) = ctx.event_installation(&owner) {
        m.insert("installation".into(), inst);
    }
    m.insert("sender".into(), ctx.user(sender));
    repo_id
}

/// A `pull_request` delivery for a change (`label` for labeled/unlabeled).
pub(crate) fn pull_request_event(
    ctx: &Ctx<'_>,
    change: &PrChange,
    label: Option<&str>,
) -> Option<Outgoing> {
    let pr = ctx.st.pr(&change.repo, change.number).ok()?;
    let mut m = Map::new();
    m.insert("action".into(), change.action.into());
    m.insert("number".into(), change.number.into());
    for (k, v) in &change.extra {
        m.insert(k.clone(), v.clone());
    }
    m.insert(
        "pull_request".into(),
        ctx.pr(pr, PrFlavor::Full, RepoFlavor::Hook),
    );
    if let Some(l) = label {
        m.insert("label".into(), ctx.label(&change.repo, l));
    }
    let target_id = common(ctx, &mut m, &change.repo, &change.sender);
    Some(Outgoing {
        event: "pull_request",
        action: Some(change.action.to_string()),
        payload: Value::Object(m),
        target_id,
    })
}

/// An `issue_comment` delivery (`changes` for edited).
pub(crate) fn issue_comment_event(
    ctx: &Ctx<'_>,
    comment_id: u64,
    action: &str,
    changes: Option<Value>,
    sender: &str,
) -> Option<Outgoing> {
    let c = ctx.st.comments.get(&comment_id)?;
    let pr = ctx.st.pr(&c.repo, c.number).ok()?;
    let mut m = Map::new();
    m.insert("action".into(), action.into());
    if let Some(ch) = changes {
        m.insert("changes".into(), ch);
    }
    m.insert("issue".into(), ctx.issue(pr));
    m.insert("comment".into(), ctx.comment(c, true));
    let target_id = common(ctx, &mut m, &c.repo, sender);
    Some(Outgoing {
        event: "issue_comment",
        action: Some(action.to_string()),
        payload: Value::Object(m),
        target_id,
    })
}

const ZEN: &[&str] = &[
    "Anything added dilutes everything else.",
    "Keep it logically awesome.",
    "Design for failure.",
    "Favor focus over features.",
    "Approachable is better than simple.",
    "Mind your words, they are important.",
    "Non-blocking is better than blocking.",
    "Practicality beats purity.",
    "Speak like a human.",
    "Responsive is better than fast.",
];

fn ping_event(ctx: &Ctx<'_>, hook: &HookRec) -> Outgoing {
    let repo = ctx.st.repos.values().next().map(|r| r.full_name.clone());
    let hook_base = match &repo {
        Some(f) => ctx.api_path(&format!("repos/{f}/hooks/{}", hook.id)),
        None => ctx.api_path(&format!("hooks/{}", hook.id)),
    };
    let t = ts(hook.created_at);
    let zen = ZEN[(hook.id as usize) % ZEN.len()];
    let mut m = Map::new();
    m.insert("zen".into(), zen.into());
    m.insert("hook_id".into(), hook.id.into());
    let mut hook_obj = json!({
        "type": "Repository",
        "id": hook.id,
        "name": "web",
        "active": true,
        "events": ["*"],
        "config": {
            "content_type": "json",
            "url": hook.url,
            "insecure_ssl": "0",
        },
        "updated_at": t,
        "created_at": t,
        "url": hook_base,
        "test_url": format!("{hook_base}/test"),
        "ping_url": format!("{hook_base}/pings"),
        "deliveries_url": format!("{hook_base}/deliveries"),
        "last_response": {"code": null, "status": "unused", "message": null},
    });
    if !hook.secret.is_empty()
        && let Some(cfg) = hook_obj.get_mut("config").and_then(Value::as_object_mut)
    {
        cfg.insert("secret".into(), "********".into());
    }
    m.insert("hook".into(), hook_obj);
    let target_id = match &repo {
        Some(f) => {
            let owner = ctx.st.repo(f).map(|r| r.owner.clone()).unwrap_or_default();
            common(ctx, &mut m, f, &owner)
        }
        None => {
            let sender = ctx.app.map(|a| a.owner.clone()).unwrap_or_default();
            m.insert("sender".into(), ctx.user(&sender));
            0
        }
    };
    Outgoing {
        event: "ping",
        action: None,
        payload: Value::Object(m),
        target_id,
    }
}

impl Ctx<'_> {
    pub(crate) fn api_path(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }
}

impl Shared {
    pub(crate) async fn deliver_pr(&self, change: PrChange, label: Option<&str>) -> Delivered {
        let out = {
            let st = self.lock();
            pull_request_event(&self.ctx(&st), &change, label)
        };
        if let Ok(pr) = self.lock().pr_mut(&change.repo, change.number) {
            // GitHub has computed mergeability by the time anyone asks again.
            pr.mergeable_known = true;
        }
        match out {
            Some(out) => self.deliver(out).await,
            None => Delivered::nowhere(String::new(), "pull_request", Value::Null, Vec::new()),
        }
    }

    /// Sends an event to every hook, in order; answers with the first hook's result.
    pub(crate) async fn deliver(&self, out: Outgoing) -> Delivered {
        let body = serde_json::to_vec(&out.payload).unwrap_or_default();
        let hooks = self.lock().hooks.clone();
        let mut first: Option<Delivered> = None;
        for hook in &hooks {
            let id = uuid::Uuid::new_v4().to_string();
            let d = self
                .send(
                    hook,
                    &id,
                    out.event,
                    out.action.clone(),
                    &body,
                    out.target_id,
                    false,
                )
                .await;
            if first.is_none() {
                first = Some(Delivered::of(
                    &d,
                    out.event,
                    out.payload.clone(),
                    body.clone(),
                ));
            }
            self.lock().deliveries.push(d);
        }
        first.unwrap_or_else(|| {
            Delivered::nowhere(
                uuid::Uuid::new_v4().to_string(),
                out.event,
                out.payload,
                body,
            )
        })
    }

    pub(crate) async fn deliver_ping(&self) -> Delivered {
        let hooks = self.lock().hooks.clone();
        let mut first: Option<Delivered> = None;
        for hook in &hooks {
            let out = {
                let st = self.lock();
                ping_event(&self.ctx(&st), hook)
            };
            let body = serde_json::to_vec(&out.payload).unwrap_or_default();
            let id = uuid::Uuid::new_v4().to_string();
            let d = self
                .send(hook, &id, out.event, None, &body, out.target_id, false)
                .await;
            if first.is_none() {
                first = Some(Delivered::of(&d, "ping", out.payload, body.clone()));
            }
            self.lock().deliveries.push(d);
        }
        first.unwrap_or_else(|| {
            Delivered::nowhere(
                uuid::Uuid::new_v4().to_string(),
                "ping",
                Value::Null,
                Vec::new(),
            )
        })
    }

    pub(crate) async fn redeliver(&self, delivery_id: &str) -> Result<Delivered, Error> {
        let (orig, hook) = {
            let st = self.lock();
            let orig = st
                .deliveries
                .iter()
                .find(|d| d.id == delivery_id)
                .cloned()
                .ok_or_else(|| Error::UnknownDelivery(delivery_id.to_string()))?;
            let hook = st
                .hooks
                .iter()
                .find(|h| h.id == orig.hook_id)
                .cloned()
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "hook {} of delivery {delivery_id} is gone",
                        orig.hook_id
                    ))
                })?;
            (orig, hook)
        };
        let target_id = orig
            .header("X-GitHub-Hook-Installation-Target-ID")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let event: &'static str = match orig.event.as_str() {
            "pull_request" => "pull_request",
            "issue_comment" => "issue_comment",
            "ping" => "ping",
            _ => "unknown",
        };
        let d = self
            .send(
                &hook,
                &orig.id,
                event,
                orig.action.clone(),
                &orig.body,
                target_id,
                true,
            )
            .await;
        let delivered = Delivered::of(&d, &orig.event, orig.payload(), orig.body.clone());
        self.lock().deliveries.push(d);
        Ok(delivered)
    }

    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        hook: &HookRec,
        id: &str,
        event: &str,
        action: Option<String>,
        body: &[u8],
        target_id: u64,
        redelivery: bool,
    ) -> Delivery {
        let mut headers: Vec<(String, String)> = vec![
            ("Accept".into(), "*/*".into()),
            ("Content-Type".into(), "application/json".into()),
            ("User-Agent".into(), self.hookshot.clone()),
            ("X-GitHub-Delivery".into(), id.to_string()),
            ("X-GitHub-Event".into(), event.to_string()),
            ("X-GitHub-Hook-ID".into(), hook.id.to_string()),
            (
                "X-GitHub-Hook-Installation-Target-ID".into(),
                target_id.to_string(),
            ),
            (
                "X-GitHub-Hook-Installation-Target-Type".into(),
                "repository".into(),
            ),
        ];
        if !hook.secret.is_empty() {
            headers.push(("X-Hub-Signature".into(), signature_sha1(&hook.secret, body)));
            headers.push((
                "X-Hub-Signature-256".into(),
                signature_256(&hook.secret, body),
            ));
        }
        let mut req = self.http.post(&hook.url).body(body.to_vec());
        for (k, v) in &headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let time = SystemTime::now();
        let at = Instant::now();
        let (status, response_body, error) = match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                match resp.text().await {
                    Ok(text) => (status, truncate(text), None),
                    Err(e) => (status, String::new(), Some(e.to_string())),
                }
            }
            Err(e) => (0, String::new(), Some(error_chain(&e))),
        };
        tracing::debug!(%event, ?action, %id, url = %hook.url, status, "delivered");
        Delivery {
            id: id.to_string(),
            hook_id: hook.id,
            url: hook.url.clone(),
            event: event.to_string(),
            action,
            body: body.to_vec(),
            headers,
            status,
            response_body,
            error,
            redelivery,
            time,
            at,
            duration: at.elapsed(),
        }
    }
}

fn truncate(mut s: String) -> String {
    const MAX: usize = 64 * 1024;
    if s.len() > MAX {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

impl Delivered {
    /// What the first hook made of delivery `d` (its answer, or the connection error).
    fn of(d: &Delivery, event: &str, payload: Value, body_bytes: Vec<u8>) -> Self {
        Delivered {
            id: d.id.clone(),
            status: d.status,
            body: d.error.clone().unwrap_or_else(|| d.response_body.clone()),
            event: event.to_string(),
            payload,
            body_bytes,
        }
    }

    /// An event no hook answered (none is registered): status 0.
    fn nowhere(id: String, event: &str, payload: Value, body_bytes: Vec<u8>) -> Self {
        Delivered {
            id,
            status: 0,
            body: String::new(),
            event: event.to_string(),
            payload,
            body_bytes,
        }
    }
}
