//! Crypto-shredding: personal fields are sealed with a data key per subject (AES-256-GCM); the
//! data keys live in PostgreSQL wrapped by the master key. Destroying a subject's keys makes
//! every event sealed for it unreadable, while the events stay on the log.

use aes_gcm::{
    Aes256Gcm, Key, Nonce,
    aead::{Aead, AeadCore, KeyInit, OsRng, Payload},
};
use passerelle_domain::event::SubjectKey;
use sqlx::PgPool;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::{Error, secrets::SecretKey};

/// Personal data sealed for one subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: Uuid,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// A subject's data key, unwrapped in memory.
pub struct DataKey {
    pub key_id: Uuid,
    key: Zeroizing<[u8; 32]>,
}

impl DataKey {
    /// Seals `plaintext`; `associated` (the event id) is authenticated, so a sealed blob cannot be
    /// moved to another event.
    pub fn seal(&self, plaintext: &[u8], associated: &[u8]) -> Result<Sealed, Error> {
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&*self.key));
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = cipher
            .encrypt(&nonce, Payload { msg: plaintext, aad: associated })
            .map_err(|_| Error::Crypto("sealing failed"))?;
        Ok(Sealed { key_id: self.key_id, nonce: nonce.to_vec(), ciphertext })
    }

    pub fn open(&self, sealed: &Sealed, associated: &[u8]) -> Result<Vec<u8>, Error> {
        if sealed.nonce.len() != 12 {
            return Err(Error::Crypto("a sealed blob has a 12-byte nonce"));
        }
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&*self.key));
        cipher
            .decrypt(Nonce::from_slice(&sealed.nonce), Payload { msg: &sealed.ciphertext, aad: associated })
            .map_err(|_| Error::Crypto("the sealed blob does not open with its key (tampered or wrong event)"))
    }
}

/// The store of data keys.
#[derive(Clone)]
pub struct KeyStore {
    pool: PgPool,
    master: SecretKey,
}

impl KeyStore {
    pub fn new(pool: PgPool, master: SecretKey) -> Self {
        Self { pool, master }
    }

    fn wrap(&self, key_id: Uuid, key: &[u8; 32]) -> Result<Vec<u8>, Error> {
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(self.master.bytes()));
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let mut wrapped = nonce.to_vec();
        let ciphertext = cipher
            .encrypt(&nonce, Payload { msg: key, aad: key_id.as_bytes() })
            .map_err(|_| Error::Crypto("wrapping failed"))?;
        wrapped.extend(ciphertext);
        Ok(wrapped)
    }

    fn unwrap_key(&self, key_id: Uuid, wrapped: &[u8]) -> Result<DataKey, Error> {
        if wrapped.len() < 12 {
            return Err(Error::Crypto("a wrapped key is too short"));
        }
        let (nonce, ciphertext) = wrapped.split_at(12);
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(self.master.bytes()));
        let plain = Zeroizing::new(
            cipher.decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad: key_id.as_bytes() }).map_err(
                |_| Error::Crypto("a data key does not unwrap: is this the master key it was wrapped with?"),
            )?,
        );
        let key: [u8; 32] = plain.as_slice().try_into().map_err(|_| Error::Crypto("a data key is 32 bytes"))?;
        Ok(DataKey { key_id, key: Zeroizing::new(key) })
    }

    /// The live data key of a subject, created on first use. Concurrent callers converge on one
    /// key (a unique index allows one live key per subject).
    pub async fn key_for_subject(&self, subject: &SubjectKey) -> Result<DataKey, Error> {
        loop {
            let live: Option<(Uuid, Vec<u8>)> = sqlx::query_as(
                "SELECT key_id, wrapped_key FROM data_keys WHERE subject_key = $1 AND destroyed_at IS NULL",
            )
            .bind(subject.as_str())
            .fetch_optional(&self.pool)
            .await?;
            if let Some((key_id, wrapped)) = live {
                return self.unwrap_key(key_id, &wrapped);
            }
            let key_id = Uuid::new_v4();
            let fresh = SecretKey::generate();
            let wrapped = self.wrap(key_id, fresh.bytes())?;
            let inserted = sqlx::query(
                "INSERT INTO data_keys (key_id, subject_key, wrapped_key) VALUES ($1, $2, $3)
                 ON CONFLICT (subject_key) WHERE destroyed_at IS NULL DO NOTHING",
            )
            .bind(key_id)
            .bind(subject.as_str())
            .bind(&wrapped)
            .execute(&self.pool)
            .await?;
            if inserted.rows_affected() == 1 {
                return Ok(DataKey { key_id, key: Zeroizing::new(*fresh.bytes()) });
            }
        }
    }

    /// The live data keys of `subjects` (by subject key), created on first use: one read, and
    /// one insert for the new ones. Concurrent callers converge on one key per subject.
    pub async fn keys_for_subjects(
        &self,
        subjects: &[&SubjectKey],
    ) -> Result<std::collections::HashMap<String, DataKey>, Error> {
        let mut keys = std::collections::HashMap::new();
        let mut wanted: Vec<&str> = subjects.iter().map(|s| s.as_str()).collect();
        wanted.sort_unstable();
        wanted.dedup();
        loop {
            let live: Vec<(String, Uuid, Vec<u8>)> = sqlx::query_as(
                "SELECT subject_key, key_id, wrapped_key FROM data_keys
                 WHERE subject_key = ANY($1) AND destroyed_at IS NULL",
            )
            .bind(&wanted)
            .fetch_all(&self.pool)
            .await?;
            for (subject, key_id, wrapped) in live {
                keys.insert(subject, self.unwrap_key(key_id, &wrapped)?);
            }
            let missing: Vec<&str> = wanted.iter().copied().filter(|s| !keys.contains_key(*s)).collect();
            if missing.is_empty() {
                return Ok(keys);
            }
            let mut fresh = std::collections::HashMap::new();
            let (mut ids, mut wrapped_keys) = (Vec::new(), Vec::new());
            for subject in &missing {
                let key_id = Uuid::new_v4();
                let key = SecretKey::generate();
                ids.push(key_id);
                wrapped_keys.push(self.wrap(key_id, key.bytes())?);
                fresh.insert((*subject).to_owned(), DataKey { key_id, key: Zeroizing::new(*key.bytes()) });
            }
            let inserted: Vec<String> = sqlx::query_scalar(
                "INSERT INTO data_keys (key_id, subject_key, wrapped_key)
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::bytea[])
                 ON CONFLICT (subject_key) WHERE destroyed_at IS NULL DO NOTHING RETURNING subject_key",
            )
            .bind(&ids)
            .bind(&missing)
            .bind(&wrapped_keys)
            .fetch_all(&self.pool)
            .await?;
            for subject in inserted {
                if let Some(key) = fresh.remove(&subject) {
                    keys.insert(subject, key);
                }
            }
            // Keys another caller created meanwhile are read on the next turn.
            wanted = missing.into_iter().filter(|s| !keys.contains_key(*s)).collect();
            if wanted.is_empty() {
                return Ok(keys);
            }
        }
    }

    /// `index_for_search` for many (search key, subject key) pairs, in one statement.
    pub async fn index_many_for_search(&self, entries: &[(String, String)]) -> Result<(), Error> {
        if entries.is_empty() {
            return Ok(());
        }
        // In one order for every caller: concurrent multi-row inserts of overlapping keys in
        // different orders deadlock.
        let mut sorted: Vec<(&str, &str)> = entries.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        sorted.sort_unstable();
        sorted.dedup();
        let (search, subjects): (Vec<&str>, Vec<&str>) = sorted.into_iter().unzip();
        sqlx::query(
            "INSERT INTO search_index (search_key, subject_key) SELECT * FROM unnest($1::text[], $2::text[])
             ON CONFLICT DO NOTHING",
        )
        .bind(&search)
        .bind(&subjects)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A data key by id, to open an event. `Error::Shredded` once destroyed.
    pub async fn key_by_id(&self, key_id: Uuid) -> Result<DataKey, Error> {
        let row: Option<(Option<Vec<u8>>,)> = sqlx::query_as("SELECT wrapped_key FROM data_keys WHERE key_id = $1")
            .bind(key_id)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some((Some(wrapped),)) => self.unwrap_key(key_id, &wrapped),
            Some((None,)) | None => Err(Error::Shredded),
        }
    }

    /// Records that `subject` carries the name and birth date whose blind index is `search_key`
    /// (the API's search by name); an erasure deletes the subject's rows.
    pub async fn index_for_search(&self, search_key: &str, subject: &SubjectKey) -> Result<(), Error> {
        sqlx::query("INSERT INTO search_index (search_key, subject_key) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(search_key)
            .bind(subject.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Destroys every data key of these subjects. Returns how many keys were destroyed.
    pub async fn destroy_subjects(&self, subjects: &[SubjectKey]) -> Result<u64, Error> {
        let keys: Vec<&str> = subjects.iter().map(SubjectKey::as_str).collect();
        let destroyed = sqlx::query(
            "UPDATE data_keys SET wrapped_key = NULL, destroyed_at = now()
             WHERE subject_key = ANY($1) AND destroyed_at IS NULL",
        )
        .bind(&keys)
        .execute(&self.pool)
        .await?;
        Ok(destroyed.rows_affected())
    }
}
