//! Authentication: OpenID Connect access tokens shaped like ProConnect's (claims `uid`, `email`,
//! `siret`), ES256-signed, checked against a configured key set (JWKS), issuer, audience and
//! expiry. Who the agent is comes from the token; what they may do comes from the habilitations
//! file, never from the token alone.

use std::path::Path;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, jwk::JwkSet};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

/// The claims the hub reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    pub uid: String,
    pub email: String,
    pub siret: String,
    /// ProConnect's identity provider (`idp_id`): `uid` is unique only within one of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idp_id: Option<String>,
}

/// Why a token is refused (never echoing the token).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rejected {
    #[error("no bearer token (Authorization: Bearer …)")]
    Missing,
    #[error("the token is not a valid ES256 JWT of a known key: {0}")]
    Invalid(String),
    #[error("the token has expired")]
    Expired,
}

/// Verifies tokens against a key set.
#[derive(Clone)]
pub struct Verifier {
    keys: Vec<(Option<String>, DecodingKey)>,
    validation: Validation,
    /// Tokens already verified (by SHA-256 of the token), with their claims: an agent's token
    /// is presented on every request, and an ES256 signature check costs more than the rest
    /// of a dossier read's CPU. Expiry is still checked on every use.
    verified: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<[u8; 32], Claims>>>,
}

/// Verified tokens remembered at most (the memory is cleared when full).
const VERIFIED_CAPACITY: usize = 10_000;

impl Verifier {
    pub fn new(jwks: &JwkSet, issuer: &str, audience: &str) -> Result<Self, String> {
        let mut keys = Vec::new();
        for jwk in &jwks.keys {
            let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("a key of the key set: {e}"))?;
            keys.push((jwk.common.key_id.clone(), key));
        }
        if keys.is_empty() {
            return Err("the key set has no key".into());
        }
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = 30;
        Ok(Self { keys, validation, verified: Default::default() })
    }

    pub fn from_file(path: &Path, issuer: &str, audience: &str) -> Result<Self, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read the key set {}: {e}", path.display()))?;
        let jwks: JwkSet = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::new(&jwks, issuer, audience).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The claims of a valid token, from an `Authorization` header value.
    pub fn verify(&self, authorization: Option<&str>) -> Result<Claims, Rejected> {
        let token = authorization
            .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or(Rejected::Missing)?;
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let remembered = self.verified.lock().ok().and_then(|verified| verified.get(&digest).cloned());
        if let Some(claims) = remembered {
            if claims.exp + self.validation.leeway as i64 >= chrono::Utc::now().timestamp() {
                return Ok(claims);
            }
            if let Ok(mut verified) = self.verified.lock() {
                verified.remove(&digest);
            }
            return Err(Rejected::Expired);
        }
        let claims = self.verify_signature(token)?;
        if let Ok(mut verified) = self.verified.lock() {
            if verified.len() >= VERIFIED_CAPACITY {
                verified.clear();
            }
            verified.insert(digest, claims.clone());
        }
        Ok(claims)
    }

    fn verify_signature(&self, token: &str) -> Result<Claims, Rejected> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| Rejected::Invalid(e.to_string()))?;
        let candidates = self.keys.iter().filter(|(kid, _)| header.kid.is_none() || kid == &header.kid);
        let mut last = Rejected::Invalid("no key of the key set matches".into());
        for (_, key) in candidates {
            match jsonwebtoken::decode::<Claims>(token, key, &self.validation) {
                Ok(data) => return Ok(data.claims),
                Err(error) if matches!(error.kind(), jsonwebtoken::errors::ErrorKind::ExpiredSignature) => {
                    return Err(Rejected::Expired);
                }
                Err(error) => last = Rejected::Invalid(error.to_string()),
            }
        }
        Err(last)
    }
}

/// A development signing key and its public key set (`passerelle dev pki` writes them; only a
/// hub configured with that key set accepts the tokens `passerelle dev token` mints).
pub struct DevKeys {
    pub pkcs8_der: Vec<u8>,
    pub jwks: JwkSet,
}

pub const DEV_KEY_ID: &str = "passerelle-dev-1";

impl DevKeys {
    /// `public_point`: the uncompressed P-256 point (0x04 ‖ X ‖ Y) of the key in `pkcs8_der`.
    pub fn new(pkcs8_der: Vec<u8>, public_point: &[u8]) -> Result<Self, String> {
        if public_point.len() != 65 || public_point[0] != 4 {
            return Err("expected an uncompressed P-256 point".into());
        }
        let jwks: JwkSet = serde_json::from_value(serde_json::json!({
            "keys": [{
                "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": DEV_KEY_ID,
                "x": URL_SAFE_NO_PAD.encode(&public_point[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&public_point[33..]),
            }]
        }))
        .map_err(|e| e.to_string())?;
        Ok(Self { pkcs8_der, jwks })
    }
}

/// Mints a token for `claims` with a PKCS#8 P-256 key (development and tests).
pub fn mint(pkcs8_der: &[u8], claims: &Claims) -> Result<String, String> {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(DEV_KEY_ID.into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(pkcs8_der)).map_err(|e| e.to_string())
}
