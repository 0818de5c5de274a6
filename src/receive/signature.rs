//! Webhook signatures: HMAC-SHA256 of the raw body (`X-Hub-Signature-256`), checked in constant
//! time by octocrab's verifier against every configured secret (several during a rotation).

use octocrab::models::webhook_events::verify_signature;
use std::fmt;

/// The webhook secrets; any one may match. Never printed.
#[derive(Clone, Default)]
pub struct Secrets(Vec<String>);

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} configured)", self.0.len())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    #[error("only a SHA-1 signature (X-Hub-Signature) was sent; prenv needs X-Hub-Signature-256")]
    Sha1Only,
    #[error("malformed X-Hub-Signature-256 header: {0}")]
    Malformed(String),
    #[error("signature does not match any configured secret")]
    Mismatch,
}

impl Secrets {
    /// Secrets from a comma-separated list (empty entries dropped).
    pub fn from_list<I: IntoIterator<Item = S>, S: AsRef<str>>(items: I) -> Self {
        Self(
            items
                .into_iter()
                .flat_map(|s| {
                    s.as_ref()
                        .split(',')
                        .map(|p| p.trim().to_string())
                        .collect::<Vec<_>>()
                })
                .filter(|s| !s.is_empty())
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Check `header` (the `X-Hub-Signature-256` value, if sent) over `body`. With no secrets
    /// configured (only with `--insecure-no-webhook-secret`) every delivery passes.
    pub fn verify(
        &self,
        header: Option<&str>,
        sha1_header_present: bool,
        body: &[u8],
    ) -> Result<(), SignatureError> {
        if self.0.is_empty() {
            return Ok(());
        }
        let header = match header {
            Some(h) => h,
            None if sha1_header_present => return Err(SignatureError::Sha1Only),
            None => return Err(SignatureError::Missing),
        };
        let mut last = SignatureError::Mismatch;
        for secret in &self.0 {
            match verify_signature(header, secret, body) {
                Ok(()) => return Ok(()),
                Err(octocrab::models::webhook_events::WebhookVerificationError::Mismatch) => {
                    last = SignatureError::Mismatch;
                }
                Err(octocrab::models::webhook_events::WebhookVerificationError::DeprecatedSha1) => {
                    return Err(SignatureError::Sha1Only);
                }
                Err(other) => return Err(SignatureError::Malformed(other.to_string())),
            }
        }
        Err(last)
    }
}

/// `sha256=<hex>` signature of `body` under `secret`, as GitHub sends it (for tests and tools).
pub fn sign(secret: &str, body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // GitHub's published example: https://docs.github.com/webhooks/using-webhooks/validating-webhook-deliveries
    const SECRET: &str = "It's a Secret to Everybody";
    const BODY: &[u8] = b"Hello, World!";
    const SIGNATURE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn githubs_published_vector_verifies() {
        let secrets = Secrets::from_list([SECRET]);
        assert_eq!(secrets.verify(Some(SIGNATURE), false, BODY), Ok(()));
        assert_eq!(sign(SECRET, BODY), SIGNATURE);
    }

    #[test]
    fn body_altered_by_one_byte_fails() {
        let secrets = Secrets::from_list([SECRET]);
        assert_eq!(
            secrets.verify(Some(SIGNATURE), false, b"Hello, World?"),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn any_rotated_secret_matches() {
        let secrets = Secrets::from_list(["old-secret, It's a Secret to Everybody"]);
        assert_eq!(secrets.verify(Some(SIGNATURE), false, BODY), Ok(()));
        let wrong = Secrets::from_list(["a", "b"]);
        assert_eq!(
            wrong.verify(Some(SIGNATURE), false, BODY),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn missing_sha1_and_malformed_headers_fail() {
        let secrets = Secrets::from_list([SECRET]);
        assert_eq!(
            secrets.verify(None, false, BODY),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            secrets.verify(None, true, BODY),
            Err(SignatureError::Sha1Only)
        );
        assert_eq!(
            secrets.verify(Some("sha1=0123"), false, BODY),
            Err(SignatureError::Sha1Only)
        );
        for bad in ["sha256=zz", "sha256=7571", "757107ea", ""] {
            assert!(
                matches!(
                    secrets.verify(Some(bad), false, BODY),
                    Err(SignatureError::Malformed(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn secrets_are_not_printed() {
        let secrets = Secrets::from_list([SECRET]);
        assert!(!format!("{secrets:?}").contains("Secret to"));
    }
}
