//! Crypto-shredding with a key hierarchy whose erased leaves cannot be unwrapped again.
//!
//! Three levels (docs/decisions/0007-erasure-that-forgets.md):
//! - **root keys**, outside PostgreSQL (one file per generation in `secrets.root_keys_dir`), so
//!   that no database backup, WAL segment or dead tuple ever holds one;
//! - **bucket keys** (`key_buckets`, [`BUCKETS`] of them), wrapped by the current root key;
//! - **data keys** (`data_keys`), one live key per subject, wrapped by its bucket's key. A data
//!   key's random id is also the subject's pseudonym on the log (the Kafka key of its events).
//!
//! Erasing subjects destroys their data keys, gives every bucket that held one a new key (the
//! other keys of the bucket are wrapped again under it), wraps every bucket key under a new root
//! generation and deletes the old root file. A backup taken before the erasure still holds the
//! erased key, but wrapped by a bucket key that only a deleted root key could unwrap.

use std::{
    collections::HashMap,
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use aes_gcm::{
    Aes256Gcm, Key, Nonce,
    aead::{Aead, AeadCore, KeyInit, OsRng, Payload},
};
use passerelle_domain::event::SubjectKey;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::{Error, secrets::SecretKey};

/// How many bucket keys wrap the data keys. An erasure wraps again the live keys of the buckets
/// it touched (about 1/1024 of all keys each) and the 1024 bucket keys.
pub const BUCKETS: i16 = 1024;

/// Data sealed for one subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: Uuid,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

fn seal_with(key: &[u8; 32], plaintext: &[u8], associated: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Error> {
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let ciphertext = cipher
        .encrypt(&nonce, Payload { msg: plaintext, aad: associated })
        .map_err(|_| Error::Crypto("sealing failed"))?;
    Ok((nonce.to_vec(), ciphertext))
}

fn open_with(key: &[u8; 32], nonce: &[u8], ciphertext: &[u8], associated: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if nonce.len() != 12 {
        return None;
    }
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
    cipher.decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad: associated }).ok().map(Zeroizing::new)
}

/// A subject's data key, unwrapped in memory.
pub struct DataKey {
    pub key_id: Uuid,
    key: Zeroizing<[u8; 32]>,
}

impl DataKey {
    /// Seals `plaintext`; `associated` is authenticated with it, so a sealed blob cannot be moved
    /// to another event, source, family or subject (see [`associated_data`]).
    pub fn seal(&self, plaintext: &[u8], associated: &[u8]) -> Result<Sealed, Error> {
        let (nonce, ciphertext) = seal_with(&self.key, plaintext, associated)?;
        Ok(Sealed { key_id: self.key_id, nonce, ciphertext })
    }

    pub fn open(&self, sealed: &Sealed, associated: &[u8]) -> Result<Vec<u8>, Error> {
        open_with(&self.key, &sealed.nonce, &sealed.ciphertext, associated)
            .map(|plain| plain.to_vec())
            .ok_or(Error::Crypto("the sealed blob does not open with its key (tampered, or moved from elsewhere)"))
    }
}

/// The additional data a sealed blob is bound to: what it is (`purpose`), the family, the
/// source institution, the subject (its data key's id) and the event.
pub fn associated_data(purpose: &str, family: &str, source: &str, key_id: Uuid, event_id: &str) -> Vec<u8> {
    // Lengths first: no two different tuples give the same bytes.
    let mut out = Vec::with_capacity(64 + event_id.len());
    for part in [purpose.as_bytes(), family.as_bytes(), source.as_bytes(), key_id.as_bytes(), event_id.as_bytes()] {
        out.extend((part.len() as u32).to_be_bytes());
        out.extend(part);
    }
    out
}

/// The root keys: one file per generation (`<generation>.key`, 64 hex characters) in a
/// directory outside the database. Only the newest generation wraps the bucket keys; an erasure
/// writes the next one and deletes the older ones.
pub struct RootKeys {
    dir: PathBuf,
    loaded: Mutex<HashMap<i32, SecretKey>>,
}

impl std::fmt::Debug for RootKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootKeys").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl RootKeys {
    /// The root keys kept in `dir` (created, owner only, if missing).
    pub fn open(dir: &Path) -> Result<Self, Error> {
        let secret = |reason: String| Error::Secret { name: "root_keys_dir", reason };
        std::fs::create_dir_all(dir).map_err(|e| secret(format!("cannot create {}: {e}", dir.display())))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| secret(format!("cannot restrict {} to its owner: {e}", dir.display())))?;
        }
        Ok(Self { dir: dir.to_owned(), loaded: Mutex::new(HashMap::new()) })
    }

    fn path(&self, generation: i32) -> PathBuf {
        self.dir.join(format!("{generation}.key"))
    }

    fn get(&self, generation: i32) -> Result<SecretKey, Error> {
        if let Some(key) = self.loaded.lock().expect("root keys lock").get(&generation) {
            return Ok(key.clone());
        }
        let path = self.path(generation);
        if !path.exists() {
            return Err(Error::Secret {
                name: "root_keys_dir",
                reason: format!(
                    "the root key of generation {generation} is not in {} (every hub process must share this directory)",
                    self.dir.display()
                ),
            });
        }
        let key = SecretKey::from_file("root key", &path)?;
        let mut loaded = self.loaded.lock().expect("root keys lock");
        // Only the newest root wraps the buckets: the older ones leave this process's memory.
        loaded.retain(|g, _| *g >= generation);
        loaded.insert(generation, key.clone());
        Ok(key)
    }

    /// Creates the root key of `generation` (or reads it if another process made it first).
    fn create(&self, generation: i32) -> Result<SecretKey, Error> {
        let path = self.path(generation);
        let key = SecretKey::generate();
        let written = std::fs::OpenOptions::new().write(true).create_new(true).open(&path).and_then(|mut file| {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            }
            file.write_all(key.to_hex().as_bytes())?;
            file.sync_all()?;
            // The file's name is durable once its directory is.
            std::fs::File::open(&self.dir)?.sync_all()
        });
        match written {
            Ok(()) => {
                self.loaded.lock().expect("root keys lock").insert(generation, key.clone());
                Ok(key)
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => self.get(generation),
            Err(error) => Err(Error::Secret {
                name: "root_keys_dir",
                reason: format!("cannot write {}: {error}", path.display()),
            }),
        }
    }

    /// Deletes the root keys older than `current`, on disk and in memory.
    fn retire_below(&self, current: i32) -> Result<usize, Error> {
        let mut retired = 0;
        let entries = std::fs::read_dir(&self.dir).map_err(|e| Error::Secret {
            name: "root_keys_dir",
            reason: format!("cannot list {}: {e}", self.dir.display()),
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(generation) =
                name.to_str().and_then(|n| n.strip_suffix(".key")).and_then(|g| g.parse::<i32>().ok())
            else {
                continue;
            };
            if generation < current {
                // Overwritten first: a file system that keeps the freed blocks keeps zeros.
                let _ = std::fs::write(entry.path(), "0".repeat(64));
                std::fs::remove_file(entry.path()).map_err(|e| Error::Secret {
                    name: "root_keys_dir",
                    reason: format!("cannot delete {}: {e}", entry.path().display()),
                })?;
                retired += 1;
            }
        }
        self.loaded.lock().expect("root keys lock").retain(|generation, _| *generation >= current);
        if retired > 0 {
            std::fs::File::open(&self.dir).and_then(|dir| dir.sync_all()).map_err(|e| Error::Secret {
                name: "root_keys_dir",
                reason: format!("cannot sync {}: {e}", self.dir.display()),
            })?;
        }
        Ok(retired)
    }
}

/// The bucket of a subject key.
fn bucket_of(subject: &str) -> i16 {
    let digest = Sha256::digest(subject.as_bytes());
    (u16::from_be_bytes([digest[0], digest[1]]) % BUCKETS as u16) as i16
}

fn bucket_aad(bucket: i16, generation: i32) -> Vec<u8> {
    format!("passerelle-bucket/{bucket}/{generation}").into_bytes()
}

/// A bucket key row as stored: its generation, the root generation that wraps it, the blob.
type BucketRow = (i16, i32, i32, Vec<u8>);

/// A bucket key, unwrapped.
type BucketKey = Arc<Zeroizing<[u8; 32]>>;

/// A live data key with the bucket key row that wraps it.
#[derive(sqlx::FromRow)]
struct LiveKey {
    subject_key: Option<String>,
    key_id: Uuid,
    wrapped_key: Vec<u8>,
    bucket: i16,
    generation: i32,
    root_generation: i32,
    bucket_wrapped: Vec<u8>,
}

/// What an erasure did to the keys (counts only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forgotten {
    pub data_keys_destroyed: u64,
    pub buckets_rotated: u64,
    pub keys_rewrapped: u64,
    pub root_generation: i32,
}

/// The store of data keys.
#[derive(Clone)]
pub struct KeyStore {
    pool: PgPool,
    roots: Arc<RootKeys>,
    buckets: Arc<Mutex<HashMap<(i16, i32), BucketKey>>>,
}

impl KeyStore {
    pub fn new(pool: PgPool, roots: Arc<RootKeys>) -> Self {
        Self { pool, roots, buckets: Arc::default() }
    }

    /// Creates the bucket keys (and the first root key) if this database has none yet; refuses
    /// data keys from before the key hierarchy.
    pub async fn prepare(&self) -> Result<(), Error> {
        let (count,): (i64,) = sqlx::query_as("SELECT count(*) FROM key_buckets").fetch_one(&self.pool).await?;
        if count < i64::from(BUCKETS) {
            let mut tx = self.pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('passerelle.key_buckets'))").execute(&mut *tx).await?;
            let root: Option<i32> =
                sqlx::query_scalar("SELECT max(root_generation) FROM key_buckets").fetch_one(&mut *tx).await?;
            let root_generation = root.unwrap_or(1);
            let root_key =
                if root.is_some() { self.roots.get(root_generation)? } else { self.roots.create(root_generation)? };
            let existing: Vec<i16> = sqlx::query_scalar("SELECT bucket FROM key_buckets").fetch_all(&mut *tx).await?;
            let (mut ids, mut blobs) = (Vec::new(), Vec::new());
            for bucket in (0..BUCKETS).filter(|b| !existing.contains(b)) {
                let key = SecretKey::generate();
                let (nonce, ciphertext) = seal_with(root_key.bytes(), key.bytes(), &bucket_aad(bucket, 1))?;
                ids.push(bucket);
                blobs.push([nonce, ciphertext].concat());
            }
            sqlx::query(
                "INSERT INTO key_buckets (bucket, generation, root_generation, wrapped)
                 SELECT b, 1, $2, w FROM unnest($1::smallint[], $3::bytea[]) AS t(b, w)",
            )
            .bind(&ids)
            .bind(root_generation)
            .bind(&blobs)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        // The root that wraps the buckets now must be in the directory, or nothing can be
        // sealed or opened: said at start, not at the first event.
        let current: Option<i32> =
            sqlx::query_scalar("SELECT max(root_generation) FROM key_buckets").fetch_one(&self.pool).await?;
        if let Some(current) = current
            && self.roots.get(current).is_err()
        {
            return Err(Error::Secret {
                name: "root_keys_dir",
                reason: format!(
                    "this database's keys are wrapped by root key generation {current}, which is not in {}: point secrets.root_keys_dir at the directory that holds it (restore it from the secret store); for development data only, drop the database (dropdb -U postgres passerelle) to start afresh",
                    self.roots.dir.display()
                ),
            });
        }
        self.retire_unused_roots().await?;
        let legacy: i64 =
            sqlx::query_scalar("SELECT count(*) FROM data_keys WHERE bucket IS NULL AND destroyed_at IS NULL")
                .fetch_one(&self.pool)
                .await?;
        if legacy > 0 {
            return Err(Error::Secret {
                name: "root_keys_dir",
                reason: format!(
                    "{legacy} data keys predate the key hierarchy (docs/decisions/0007-erasure-that-forgets.md) and their events predate sealed events; this is development data from before: stop the hub, run `dropdb -U postgres passerelle` and `rm -rf var/tansu`, then infra/up.sh"
                ),
            });
        }
        Ok(())
    }

    fn bucket_key(&self, (bucket, generation, root_generation, wrapped): &BucketRow) -> Result<BucketKey, Error> {
        self.bucket_key_of(*bucket, *generation, *root_generation, wrapped)
    }

    fn bucket_key_of(
        &self,
        bucket: i16,
        generation: i32,
        root_generation: i32,
        wrapped: &[u8],
    ) -> Result<BucketKey, Error> {
        if let Some(key) = self.buckets.lock().expect("bucket keys lock").get(&(bucket, generation)) {
            return Ok(key.clone());
        }
        let root = self.roots.get(root_generation)?;
        let (nonce, ciphertext) = wrapped.split_at(12.min(wrapped.len()));
        let plain = open_with(root.bytes(), nonce, ciphertext, &bucket_aad(bucket, generation))
            .ok_or(Error::Crypto("a bucket key does not unwrap with its root key (wrong root_keys_dir?)"))?;
        let key: [u8; 32] = plain.as_slice().try_into().map_err(|_| Error::Crypto("a bucket key is 32 bytes"))?;
        let key = Arc::new(Zeroizing::new(key));
        let mut cached = self.buckets.lock().expect("bucket keys lock");
        // A bucket's older generations are no longer used by anyone: gone from memory too.
        cached.retain(|(b, g), _| *b != bucket || *g >= generation);
        cached.insert((bucket, generation), key.clone());
        Ok(key)
    }

    fn unwrap_live(&self, live: &LiveKey) -> Result<DataKey, Error> {
        let bucket_key =
            self.bucket_key_of(live.bucket, live.generation, live.root_generation, &live.bucket_wrapped)?;
        Self::unwrap_data_key(&bucket_key, live.key_id, &live.wrapped_key)
    }

    fn wrap_data_key(bucket_key: &[u8; 32], key_id: Uuid, key: &[u8; 32]) -> Result<Vec<u8>, Error> {
        let (nonce, ciphertext) = seal_with(bucket_key, key, key_id.as_bytes())?;
        Ok([nonce, ciphertext].concat())
    }

    fn unwrap_data_key(bucket_key: &[u8; 32], key_id: Uuid, wrapped: &[u8]) -> Result<DataKey, Error> {
        let (nonce, ciphertext) = wrapped.split_at(12.min(wrapped.len()));
        let plain = open_with(bucket_key, nonce, ciphertext, key_id.as_bytes())
            .ok_or(Error::Crypto("a data key does not unwrap with its bucket key"))?;
        let key: [u8; 32] = plain.as_slice().try_into().map_err(|_| Error::Crypto("a data key is 32 bytes"))?;
        Ok(DataKey { key_id, key: Zeroizing::new(key) })
    }

    /// Runs `read` again when a root generation it met was retired meanwhile (an erasure
    /// committed between the read and the unwrap): the next read sees the new generation.
    async fn retrying<T, F, Fut>(&self, read: F) -> Result<T, Error>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let mut attempt = 0;
        loop {
            match read().await {
                Err(Error::Secret { .. }) if attempt < 3 => attempt += 1,
                other => return other,
            }
        }
    }

    /// The live data key of a subject, created on first use.
    pub async fn key_for_subject(&self, subject: &SubjectKey) -> Result<DataKey, Error> {
        let mut keys = self.keys_for_subjects(&[subject]).await?;
        keys.remove(subject.as_str()).ok_or(Error::Crypto("no data key was made for a subject"))
    }

    /// The live data keys of `subjects` (by subject key), created on first use: one read, and
    /// one insert for the new ones. Concurrent callers converge on one key per subject.
    pub async fn keys_for_subjects(&self, subjects: &[&SubjectKey]) -> Result<HashMap<String, DataKey>, Error> {
        self.retrying(|| self.keys_for_subjects_once(subjects)).await
    }

    async fn keys_for_subjects_once(&self, subjects: &[&SubjectKey]) -> Result<HashMap<String, DataKey>, Error> {
        let mut keys = HashMap::new();
        let mut wanted: Vec<&str> = subjects.iter().map(|s| s.as_str()).collect();
        wanted.sort_unstable();
        wanted.dedup();
        loop {
            let live: Vec<LiveKey> = sqlx::query_as(
                "SELECT d.subject_key, d.key_id, d.wrapped_key, b.bucket, b.generation, b.root_generation,
                        b.wrapped AS bucket_wrapped
                 FROM data_keys d JOIN key_buckets b ON b.bucket = d.bucket AND b.generation = d.generation
                 WHERE d.subject_key = ANY($1) AND d.destroyed_at IS NULL",
            )
            .bind(&wanted)
            .fetch_all(&self.pool)
            .await?;
            for live in live {
                let key = self.unwrap_live(&live)?;
                keys.insert(live.subject_key.unwrap_or_default(), key);
            }
            let missing: Vec<&str> = wanted.iter().copied().filter(|s| !keys.contains_key(*s)).collect();
            if missing.is_empty() {
                return Ok(keys);
            }
            let buckets: Vec<i16> = missing.iter().map(|s| bucket_of(s)).collect();
            let rows: Vec<BucketRow> = sqlx::query_as(
                "SELECT bucket, generation, root_generation, wrapped FROM key_buckets WHERE bucket = ANY($1)",
            )
            .bind(&buckets)
            .fetch_all(&self.pool)
            .await?;
            if rows.is_empty() {
                return Err(Error::Crypto("the key hierarchy is not prepared (KeyStore::prepare)"));
            }
            let rows: HashMap<i16, BucketRow> = rows.into_iter().map(|row| (row.0, row)).collect();
            let mut fresh = HashMap::new();
            let (mut ids, mut wrapped_keys, mut generations) = (Vec::new(), Vec::new(), Vec::new());
            for (subject, bucket) in missing.iter().zip(&buckets) {
                let row = rows.get(bucket).ok_or(Error::Crypto("a bucket key is missing"))?;
                let bucket_key = self.bucket_key(row)?;
                let key_id = Uuid::new_v4();
                let key = SecretKey::generate();
                ids.push(key_id);
                wrapped_keys.push(Self::wrap_data_key(&bucket_key, key_id, key.bytes())?);
                generations.push(row.1);
                fresh.insert((*subject).to_owned(), DataKey { key_id, key: Zeroizing::new(*key.bytes()) });
            }
            // Inserted only under the bucket generation it was wrapped with: the row lock waits
            // for an erasure rotating the bucket, after which the generation no longer matches
            // and the key is made again on the next turn.
            let inserted: Vec<String> = sqlx::query_scalar(
                "INSERT INTO data_keys (key_id, subject_key, bucket, generation, wrapped_key)
                 SELECT t.key_id, t.subject_key, t.bucket, t.generation, t.wrapped
                 FROM unnest($1::uuid[], $2::text[], $3::smallint[], $4::int[], $5::bytea[])
                      AS t(key_id, subject_key, bucket, generation, wrapped)
                 JOIN key_buckets b ON b.bucket = t.bucket AND b.generation = t.generation
                 FOR SHARE OF b
                 ON CONFLICT (subject_key) WHERE destroyed_at IS NULL DO NOTHING RETURNING subject_key",
            )
            .bind(&ids)
            .bind(&missing)
            .bind(&buckets)
            .bind(&generations)
            .bind(&wrapped_keys)
            .fetch_all(&self.pool)
            .await?;
            for subject in inserted {
                if let Some(key) = fresh.remove(&subject) {
                    keys.insert(subject, key);
                }
            }
            // Keys another caller created meanwhile (or refused for a rotated bucket) are read
            // or made on the next turn.
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
        // Most pairs are already there (a person's every event carries their name): those are
        // read, not written again. Each written pair share-locks its subject's data key, which
        // writes the key's row (WAL) and, with concurrent callers, makes them wait on each
        // other: the benchmark's ingest spent most of its key-store time so (docs/benchmarks.md).
        let present: std::collections::HashSet<(String, String)> = sqlx::query_as(
            "SELECT s.search_key, s.subject_key FROM search_index s
             JOIN unnest($1::text[], $2::text[]) AS t(search_key, subject_key)
               ON s.search_key = t.search_key AND s.subject_key = t.subject_key",
        )
        .bind(sorted.iter().map(|(search, _)| *search).collect::<Vec<_>>())
        .bind(sorted.iter().map(|(_, subject)| *subject).collect::<Vec<_>>())
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .collect();
        sorted.retain(|(search, subject)| !present.contains(&((*search).to_owned(), (*subject).to_owned())));
        if sorted.is_empty() {
            return Ok(());
        }
        let (search, subjects): (Vec<&str>, Vec<&str>) = sorted.into_iter().unzip();
        // Only for subjects whose key is live, waiting for an erasure of theirs in progress:
        // no row outlives the subject's erasure.
        sqlx::query(
            "INSERT INTO search_index (search_key, subject_key)
             SELECT t.search_key, t.subject_key FROM unnest($1::text[], $2::text[]) AS t(search_key, subject_key)
             JOIN data_keys d ON d.subject_key = t.subject_key AND d.destroyed_at IS NULL
             FOR SHARE OF d
             ON CONFLICT DO NOTHING",
        )
        .bind(&search)
        .bind(&subjects)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A data key by id, to open an event. `Error::Shredded` once destroyed (or never made).
    pub async fn key_by_id(&self, key_id: Uuid) -> Result<DataKey, Error> {
        let mut keys = self.keys_by_id(&[key_id]).await?;
        keys.remove(&key_id).ok_or(Error::Shredded)
    }

    /// The data keys of these ids that still exist; destroyed ones are absent.
    pub async fn keys_by_id(&self, key_ids: &[Uuid]) -> Result<HashMap<Uuid, DataKey>, Error> {
        self.retrying(|| async {
            let rows: Vec<LiveKey> = sqlx::query_as(
                "SELECT d.subject_key, d.key_id, d.wrapped_key, b.bucket, b.generation, b.root_generation,
                        b.wrapped AS bucket_wrapped
                 FROM data_keys d JOIN key_buckets b ON b.bucket = d.bucket AND b.generation = d.generation
                 WHERE d.key_id = ANY($1) AND d.destroyed_at IS NULL",
            )
            .bind(key_ids)
            .fetch_all(&self.pool)
            .await?;
            let mut keys = HashMap::with_capacity(rows.len());
            for live in rows {
                keys.insert(live.key_id, self.unwrap_live(&live)?);
            }
            Ok(keys)
        })
        .await
    }

    /// Which of these key ids an erasure destroyed (the row keeps its id).
    pub async fn destroyed_among(&self, key_ids: &[Uuid]) -> Result<std::collections::HashSet<Uuid>, Error> {
        if key_ids.is_empty() {
            return Ok(Default::default());
        }
        let destroyed: Vec<Uuid> =
            sqlx::query_scalar("SELECT key_id FROM data_keys WHERE key_id = ANY($1) AND destroyed_at IS NOT NULL")
                .bind(key_ids)
                .fetch_all(&self.pool)
                .await?;
        Ok(destroyed.into_iter().collect())
    }

    /// Holds the rows of these live keys until the caller's transaction ends (an erasure waits
    /// for it); false when one of them was destroyed meanwhile. Rows are locked in key id order,
    /// as an erasure locks them: neither can hold one the other waits for while waiting itself.
    pub async fn hold_keys(&self, tx: &mut Transaction<'_, Postgres>, key_ids: &[Uuid]) -> Result<bool, Error> {
        if key_ids.is_empty() {
            return Ok(true);
        }
        let held: Vec<Uuid> = sqlx::query_scalar(
            "SELECT key_id FROM public.data_keys WHERE key_id = ANY($1) AND destroyed_at IS NULL
             ORDER BY key_id FOR SHARE",
        )
        .bind(key_ids)
        .fetch_all(&mut **tx)
        .await?;
        Ok(held.len() == key_ids.len())
    }

    /// The subject a live data key belongs to (`None` once destroyed).
    pub async fn subject_of(&self, key_id: Uuid) -> Result<Option<String>, Error> {
        Ok(sqlx::query_scalar("SELECT subject_key FROM data_keys WHERE key_id = $1 AND destroyed_at IS NULL")
            .bind(key_id)
            .fetch_optional(&self.pool)
            .await?
            .flatten())
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

    /// Forgets `subjects` inside the caller's transaction: their search-index rows go, their
    /// data keys are destroyed (the row keeps only its random id and the time), every bucket
    /// that held one gets a new key, and all bucket keys are wrapped under a new root generation.
    /// Call [`KeyStore::retire_old_roots`] once the transaction committed.
    pub async fn forget(&self, tx: &mut Transaction<'_, Postgres>, subjects: &[String]) -> Result<Forgotten, Error> {
        // The bucket table locked first (no key is made meanwhile: its insert takes a row lock
        // on its bucket), then every row this erasure will change, in key id order, as a
        // projection batch holds them: no deadlock with either.
        sqlx::query("LOCK TABLE public.key_buckets IN EXCLUSIVE MODE").execute(&mut **tx).await?;
        let rows: Vec<BucketRow> = sqlx::query_as(
            "SELECT bucket, generation, root_generation, wrapped FROM key_buckets ORDER BY bucket FOR UPDATE",
        )
        .fetch_all(&mut **tx)
        .await?;
        if rows.is_empty() {
            return Err(Error::Crypto("the key hierarchy is not prepared (KeyStore::prepare)"));
        }
        sqlx::query(
            "SELECT key_id FROM data_keys
             WHERE destroyed_at IS NULL
               AND bucket IN (SELECT bucket FROM data_keys WHERE subject_key = ANY($1) AND destroyed_at IS NULL)
             ORDER BY key_id FOR UPDATE",
        )
        .bind(subjects)
        .execute(&mut **tx)
        .await?;
        sqlx::query("DELETE FROM search_index WHERE subject_key = ANY($1)").bind(subjects).execute(&mut **tx).await?;
        let touched: Vec<i16> = sqlx::query_scalar(
            "UPDATE data_keys d SET wrapped_key = NULL, subject_key = NULL, bucket = NULL, generation = NULL,
                    destroyed_at = now()
             FROM (SELECT key_id, bucket FROM data_keys WHERE subject_key = ANY($1) AND destroyed_at IS NULL) old
             WHERE d.key_id = old.key_id RETURNING old.bucket",
        )
        .bind(subjects)
        .fetch_all(&mut **tx)
        .await?;
        let destroyed = touched.len() as u64;
        let touched: std::collections::BTreeSet<i16> = touched.into_iter().collect();

        let root_generation = rows.iter().map(|row| row.2).max().unwrap_or(1) + 1;
        let root = self.roots.create(root_generation)?;
        let mut rewrapped = 0;
        let (mut ids, mut generations, mut blobs) = (Vec::new(), Vec::new(), Vec::new());
        for row in &rows {
            let old = self.bucket_key(row)?;
            let (bucket, generation) = (row.0, row.1);
            let (key, new_generation) = if touched.contains(&bucket) {
                let fresh = SecretKey::generate();
                let fresh = Zeroizing::new(*fresh.bytes());
                rewrapped += self.rewrap_bucket(tx, bucket, generation, &old, &fresh).await?;
                (fresh, generation + 1)
            } else {
                (Zeroizing::new(**old), generation)
            };
            let (nonce, ciphertext) = seal_with(root.bytes(), key.as_slice(), &bucket_aad(bucket, new_generation))?;
            ids.push(bucket);
            generations.push(new_generation);
            blobs.push([nonce, ciphertext].concat());
        }
        sqlx::query(
            "UPDATE key_buckets k SET generation = t.generation, root_generation = $2, wrapped = t.wrapped
             FROM unnest($1::smallint[], $3::int[], $4::bytea[]) AS t(bucket, generation, wrapped)
             WHERE k.bucket = t.bucket",
        )
        .bind(&ids)
        .bind(root_generation)
        .bind(&generations)
        .bind(&blobs)
        .execute(&mut **tx)
        .await?;
        Ok(Forgotten {
            data_keys_destroyed: destroyed,
            buckets_rotated: touched.len() as u64,
            keys_rewrapped: rewrapped,
            root_generation,
        })
    }

    /// The live data keys of a bucket, wrapped again under its new key (generation + 1).
    async fn rewrap_bucket(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        bucket: i16,
        generation: i32,
        old: &[u8; 32],
        new: &[u8; 32],
    ) -> Result<u64, Error> {
        let live: Vec<(Uuid, Vec<u8>)> = sqlx::query_as(
            "SELECT key_id, wrapped_key FROM data_keys WHERE bucket = $1 AND generation = $2 AND destroyed_at IS NULL",
        )
        .bind(bucket)
        .bind(generation)
        .fetch_all(&mut **tx)
        .await?;
        let (mut ids, mut blobs) = (Vec::with_capacity(live.len()), Vec::with_capacity(live.len()));
        for (key_id, wrapped) in &live {
            let key = Self::unwrap_data_key(old, *key_id, wrapped)?;
            ids.push(*key_id);
            blobs.push(Self::wrap_data_key(new, *key_id, &key.key)?);
        }
        sqlx::query(
            "UPDATE data_keys d SET wrapped_key = t.wrapped, generation = $3
             FROM unnest($1::uuid[], $2::bytea[]) AS t(key_id, wrapped) WHERE d.key_id = t.key_id",
        )
        .bind(&ids)
        .bind(&blobs)
        .bind(generation + 1)
        .execute(&mut **tx)
        .await?;
        Ok(ids.len() as u64)
    }

    /// After an erasure committed: deletes the root keys older than `current` and forgets the
    /// bucket keys cached in this process. Returns how many root files were deleted.
    pub fn retire_old_roots(&self, current: i32) -> Result<usize, Error> {
        self.buckets.lock().expect("bucket keys lock").clear();
        self.roots.retire_below(current)
    }

    /// Deletes the root keys older than the one the buckets are wrapped with now: what an
    /// erasure that committed but could not retire them (a crash, a full disk) left behind.
    pub async fn retire_unused_roots(&self) -> Result<usize, Error> {
        let current: Option<i32> =
            sqlx::query_scalar("SELECT min(root_generation) FROM key_buckets").fetch_one(&self.pool).await?;
        match current {
            Some(current) => self.roots.retire_below(current),
            None => Ok(0),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// A data key made of `byte`, with a random id.
    pub fn key(byte: u8) -> DataKey {
        DataKey { key_id: Uuid::new_v4(), key: Zeroizing::new([byte; 32]) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn associated_data_tells_every_field_apart() {
        let id = Uuid::nil();
        let a = associated_data("event", "allocataire", "caf-521", id, "e1");
        assert_ne!(a, associated_data("event", "allocataire", "caf-52", id, "1e1"));
        assert_ne!(a, associated_data("personal", "allocataire", "caf-521", id, "e1"));
        assert_ne!(a, associated_data("event", "orientation", "caf-521", id, "e1"));
        assert_ne!(a, associated_data("event", "allocataire", "caf-521", Uuid::from_u128(1), "e1"));
    }

    #[test]
    fn a_root_key_is_created_once_and_retired_from_disk() {
        let dir = std::env::temp_dir().join(format!("passerelle-roots-{}", Uuid::new_v4()));
        let roots = RootKeys::open(&dir).expect("open");
        let first = roots.create(1).expect("create");
        let again = RootKeys::open(&dir).expect("open").create(1).expect("read back");
        assert_eq!(first.to_hex(), again.to_hex());
        roots.create(2).expect("create");
        assert_eq!(roots.retire_below(2).expect("retire"), 1);
        assert!(!dir.join("1.key").exists());
        assert!(roots.get(1).is_err());
        assert!(roots.get(2).is_ok());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn buckets_spread_and_stay_in_range() {
        let buckets: std::collections::HashSet<i16> = (0..5000).map(|i| bucket_of(&format!("nir:{i:032x}"))).collect();
        assert!(buckets.iter().all(|b| (0..BUCKETS).contains(b)));
        assert!(buckets.len() > 900);
    }
}
