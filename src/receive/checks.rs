//! Checks on what a delivery carries besides its signature, with answers that say exactly what
//! was wrong: the delivery id, and which field of a `pull_request` payload could not be read.

use octocrab::models::orgs::Organization;
use octocrab::models::webhook_events::EventInstallation;
use octocrab::models::webhook_events::payload::PullRequestWebhookEventPayload;
use octocrab::models::{Author, Repository};
use serde::Deserialize;

/// GitHub's delivery ids are GUIDs (36 characters); this leaves room for other senders while
/// keeping the ids remembered for deduplication small.
pub const MAX_DELIVERY_ID: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryIdError {
    #[error("missing X-GitHub-Delivery header")]
    Missing,
    #[error(
        "X-GitHub-Delivery must be 1 to {MAX_DELIVERY_ID} visible ASCII characters (GitHub sends a GUID)"
    )]
    Invalid,
}

/// The `X-GitHub-Delivery` value (`None`: absent or not text), checked.
pub fn delivery_id(header: Option<&str>) -> Result<&str, DeliveryIdError> {
    let id = header.ok_or(DeliveryIdError::Missing)?;
    if id.is_empty() {
        return Err(DeliveryIdError::Missing);
    }
    if id.len() > MAX_DELIVERY_ID || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(DeliveryIdError::Invalid);
    }
    Ok(id)
}

/// The fields octocrab reads besides the event's own payload (`WebhookEvent`'s common part).
/// Only deserialized to find a broken one, so never read.
#[derive(Deserialize)]
#[allow(dead_code)]
struct Common {
    sender: Option<Author>,
    repository: Option<Repository>,
    organization: Option<Organization>,
    installation: Option<EventInstallation>,
}

/// Why `body` is not a `pull_request` delivery, given octocrab's `error` for it: the path of the
/// offending field (`pull_request.head.sha: invalid type: null, expected a string at line 1
/// column 812`) where it can be found, which octocrab's own message does not say.
pub fn explain(body: &[u8], error: &serde_json::Error) -> String {
    // Only on the error path, so reading the body again costs nothing on good deliveries.
    let mut de = serde_json::Deserializer::from_slice(body);
    if let Err(e) = serde_path_to_error::deserialize::<_, PullRequestWebhookEventPayload>(&mut de) {
        return at_path(&e);
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    if let Err(e) = serde_path_to_error::deserialize::<_, Common>(&mut de) {
        return at_path(&e);
    }
    error.to_string()
}

fn at_path(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = e.path().to_string();
    // A syntax error has no field to name (its path is the root, `.`).
    if path == "." || e.inner().is_syntax() || e.inner().is_eof() {
        e.inner().to_string()
    } else {
        format!("{path}: {}", e.inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use octocrab::models::webhook_events::WebhookEvent;
    use serde_json::{Value, json};

    /// A minimal pull_request delivery octocrab accepts.
    fn delivery() -> Value {
        json!({
            "action": "opened",
            "number": 7,
            "pull_request": {
                "url": "https://api.github.com/repos/acme/shop/pulls/7",
                "id": 1,
                "number": 7,
                "head": {"ref": "feature", "sha": "0123456789abcdef0123456789abcdef01234567"},
                "base": {"ref": "main", "sha": "89abcdef0123456789abcdef0123456789abcdef"}
            }
        })
    }

    fn explained(value: &Value) -> String {
        let body = serde_json::to_vec(value).unwrap();
        let err = WebhookEvent::try_from_header_and_body("pull_request", &body)
            .expect_err("octocrab refuses it");
        explain(&body, &err)
    }

    #[test]
    fn the_fixture_is_accepted() {
        let body = serde_json::to_vec(&delivery()).unwrap();
        WebhookEvent::try_from_header_and_body("pull_request", &body).unwrap();
    }

    #[test]
    fn names_the_field_with_the_wrong_type() {
        let mut v = delivery();
        v["number"] = json!("7");
        let msg = explained(&v);
        assert!(msg.starts_with("number: invalid type: string"), "{msg}");

        let mut v = delivery();
        v["pull_request"]["head"]["sha"] = Value::Null;
        let msg = explained(&v);
        assert!(
            msg.starts_with("pull_request.head.sha: invalid type: null"),
            "{msg}"
        );

        let mut v = delivery();
        v["pull_request"] = Value::Null;
        let msg = explained(&v);
        assert!(msg.starts_with("pull_request: invalid type: null"), "{msg}");
    }

    #[test]
    fn names_a_broken_common_field() {
        let mut v = delivery();
        v["sender"] = json!({"login": 5});
        let msg = explained(&v);
        assert!(msg.starts_with("sender"), "{msg}");
    }

    #[test]
    fn missing_fields_are_named() {
        let mut v = delivery();
        v.as_object_mut().unwrap().remove("pull_request");
        let msg = explained(&v);
        assert!(msg.contains("missing field `pull_request`"), "{msg}");
    }

    #[test]
    fn delivery_ids() {
        assert_eq!(
            delivery_id(Some("72d3162e-cc78-11e3-81ab-4c9367dc0958")),
            Ok("72d3162e-cc78-11e3-81ab-4c9367dc0958")
        );
        assert_eq!(delivery_id(None), Err(DeliveryIdError::Missing));
        assert_eq!(delivery_id(Some("")), Err(DeliveryIdError::Missing));
        assert_eq!(delivery_id(Some("a b")), Err(DeliveryIdError::Invalid));
        assert_eq!(
            delivery_id(Some(&"x".repeat(MAX_DELIVERY_ID + 1))),
            Err(DeliveryIdError::Invalid)
        );
        assert!(delivery_id(Some(&"x".repeat(MAX_DELIVERY_ID))).is_ok());
    }
}
