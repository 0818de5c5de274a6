//! GitHub App authentication: RS256 JWTs checked like GitHub checks them, and installation
//! tokens with an expiry.

use std::time::SystemTime;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rsa::pkcs1::{DecodeRsaPrivateKey as _, EncodeRsaPublicKey as _};
use rsa::pkcs8::{DecodePrivateKey as _, LineEnding};

use crate::{AppConfig, Error};

/// The key that verifies the App's JWTs, from a public-key PEM (SPKI or PKCS#1) or from the
/// private key itself (PKCS#1 or PKCS#8).
pub(crate) fn decoding_key(pem: &str) -> Result<DecodingKey, Error> {
    if pem.contains("PRIVATE KEY") {
        let private = rsa::RsaPrivateKey::from_pkcs1_pem(pem)
            .or_else(|_| rsa::RsaPrivateKey::from_pkcs8_pem(pem))
            .map_err(|e| Error::AppKey(format!("cannot read the RSA private key: {e}")))?;
        let public = private
            .to_public_key()
            .to_pkcs1_pem(LineEnding::LF)
            .map_err(|e| Error::AppKey(format!("cannot encode the public key: {e}")))?;
        return DecodingKey::from_rsa_pem(public.as_bytes())
            .map_err(|e| Error::AppKey(e.to_string()));
    }
    DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| Error::AppKey(e.to_string()))
}

/// GitHub's answers to a bad App JWT (all 401).
pub(crate) const JWT_UNDECODABLE: &str = "A JSON web token could not be decoded";
const JWT_EXPIRED: &str = "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires";
const JWT_TOO_FAR: &str = "'Expiration time' claim ('exp') is too far in the future";
const JWT_IAT: &str = "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued";
const JWT_ISS: &str = "'Issuer' claim ('iss') must be an Integer or the App's Client ID";

/// Looks like a JWT (three base64url parts).
pub(crate) fn looks_like_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3 && parts[0].starts_with("eyJ")
}

/// Checks an App JWT: RS256 signature by the App's key, `iss` = App id (number or string) or
/// client id, `iat` not in the future (60 s drift allowed), `exp` in the future and at most
/// 10 minutes ahead. Returns GitHub's message on refusal.
pub(crate) fn verify_jwt(
    token: &str,
    key: &DecodingKey,
    app: &AppConfig,
) -> Result<(), &'static str> {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<serde_json::Value>(token, key, &validation)
        .map_err(|_| JWT_UNDECODABLE)?;
    let claims = data.claims;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let num = |name: &str| {
        claims
            .get(name)
            .and_then(|v| v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)))
    };
    let iss_ok = match claims.get("iss") {
        Some(serde_json::Value::Number(n)) => n.as_u64() == Some(app.id),
        Some(serde_json::Value::String(s)) => {
            s.parse::<u64>().ok() == Some(app.id) || *s == app.client_id()
        }
        _ => false,
    };
    let iat = num("iat").ok_or(JWT_IAT)?;
    if iat > now + 60 {
        return Err(JWT_IAT);
    }
    let exp = num("exp").ok_or(JWT_EXPIRED)?;
    if exp <= now {
        return Err(JWT_EXPIRED);
    }
    if exp > now + 600 {
        return Err(JWT_TOO_FAR);
    }
    if !iss_ok {
        return Err(JWT_ISS);
    }
    Ok(())
}
