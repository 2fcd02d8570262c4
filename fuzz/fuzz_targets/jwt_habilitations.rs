//! The API's doors: an `Authorization` header of any content against the token verifier, and
//! any text as the habilitations file. Refusals, never a panic.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use passerelle_api::{auth::Verifier, habilitations::Habilitations};

/// A P-256 public key made for this target (its private half was thrown away).
const JWKS: &str = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"fuzz","use":"sig","alg":"ES256",
  "x":"Jpak90vuUWXFA_UaAsZ2A8DkdXjl1pkexE7RjgU9fRs","y":"AF9NKy9LIA9sE6eNIYHJTGNroMvW1Z0FMEIBdvUgoRs"}]}"#;

static VERIFIER: LazyLock<Verifier> = LazyLock::new(|| {
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(JWKS).expect("the key set parses");
    Verifier::new(&jwks, "https://fuzz.invalid", "passerelle").expect("the verifier builds")
});

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = VERIFIER.verify(Some(&text));
    let _ = VERIFIER.verify(Some(&format!("Bearer {text}")));
    let _ = Habilitations::parse(&text);
});
