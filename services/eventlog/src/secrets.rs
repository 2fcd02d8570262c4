//! The hub's crown jewels: the pepper of subject keys and the master key that wraps data keys.
//! Loaded from files or the environment, never printed.

use std::path::Path;

use zeroize::Zeroizing;

use crate::Error;

/// 32 secret bytes. `Debug` prints nothing of them.
#[derive(Clone)]
pub struct SecretKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl SecretKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Parses 64 hexadecimal characters (surrounding whitespace ignored).
    pub fn from_hex(name: &'static str, text: &str) -> Result<Self, Error> {
        let decoded = hex::decode(text.trim()).map_err(|_| Error::Secret {
            name,
            reason: "expected 64 hexadecimal characters (generate one with: openssl rand -hex 32)".into(),
        })?;
        let bytes: [u8; 32] = decoded.try_into().map_err(|_| Error::Secret {
            name,
            reason: "expected 32 bytes, 64 hexadecimal characters (openssl rand -hex 32)".into(),
        })?;
        Ok(Self::from_bytes(bytes))
    }

    /// Reads a key file holding 64 hexadecimal characters.
    pub fn from_file(name: &'static str, path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|error| Error::Secret {
            name,
            reason: format!(
                "cannot read {}: {error} (create it with: openssl rand -hex 32 > {})",
                path.display(),
                path.display()
            ),
        })?;
        Self::from_hex(name, &text)
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        use aes_gcm::aead::{OsRng, rand_core::RngCore};
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        Self::from_bytes(bytes)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(*self.0)
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}
