//! Server-side sessions: `tower-sessions` manages the cookie, ids and expiry; this module gives
//! it a PostgreSQL store (the crate's own sqlx store follows another sqlx version) and keeps the
//! console's few session keys in one place: who signed in, the sign-in or logout in progress,
//! and the CSRF token.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use passerelle_api::service::SignedInAgent;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tower_sessions::{
    Session,
    session::{Id, Record},
    session_store::{self, SessionStore},
};

/// Sessions in `web.sessions`: the id, the session's data as JSON, its expiry.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Deletes expired sessions; returns how many.
    pub async fn delete_expired(&self) -> Result<u64, sqlx::Error> {
        let done = sqlx::query("DELETE FROM web.sessions WHERE expires_at < now()").execute(&self.pool).await?;
        Ok(done.rows_affected())
    }
}

fn backend(error: sqlx::Error) -> session_store::Error {
    session_store::Error::Backend(error.to_string())
}

fn expiry(record: &Record) -> Result<DateTime<Utc>, session_store::Error> {
    DateTime::from_timestamp(record.expiry_date.unix_timestamp(), record.expiry_date.nanosecond())
        .ok_or_else(|| session_store::Error::Encode("session expiry out of range".into()))
}

#[async_trait::async_trait]
impl SessionStore for PgStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let value = serde_json::to_value(&record.data).map_err(|e| session_store::Error::Encode(e.to_string()))?;
        loop {
            let inserted = sqlx::query(
                "INSERT INTO web.sessions (id, record, expires_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
            )
            .bind(record.id.to_string())
            .bind(&value)
            .bind(expiry(record)?)
            .execute(&self.pool)
            .await
            .map_err(backend)?;
            if inserted.rows_affected() == 1 {
                return Ok(());
            }
            // An id already taken (vanishingly rare): draw another.
            record.id = Id::default();
        }
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let value = serde_json::to_value(&record.data).map_err(|e| session_store::Error::Encode(e.to_string()))?;
        sqlx::query(
            "INSERT INTO web.sessions (id, record, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET record = excluded.record, expires_at = excluded.expires_at",
        )
        .bind(record.id.to_string())
        .bind(&value)
        .bind(expiry(record)?)
        .execute(&self.pool)
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let row: Option<(serde_json::Value, DateTime<Utc>)> =
            sqlx::query_as("SELECT record, expires_at FROM web.sessions WHERE id = $1 AND expires_at > now()")
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await
                .map_err(backend)?;
        let Some((value, expires_at)) = row else { return Ok(None) };
        let data = serde_json::from_value(value).map_err(|e| session_store::Error::Decode(e.to_string()))?;
        let expiry_date = time::OffsetDateTime::from_unix_timestamp(expires_at.timestamp())
            .map_err(|e| session_store::Error::Decode(e.to_string()))?;
        Ok(Some(Record { id: *id, data, expiry_date }))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        sqlx::query("DELETE FROM web.sessions WHERE id = $1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

/// The session keys of the console.
const PERSON: &str = "person";
const PERSON_SIGN_IN: &str = "person_sign_in";
const SIGNED_IN: &str = "agent";
const SIGN_IN: &str = "sign_in";
const LOGOUT: &str = "logout";
const CSRF: &str = "csrf";

/// An agent signed in: who (verified claims), their names for the header, when (for the
/// absolute lifetime), and the id_token to end the session at the provider. `Debug` leaves out
/// the names and the token.
#[derive(Clone, Serialize, Deserialize)]
pub struct SignedIn {
    pub agent: SignedInAgent,
    pub given_name: String,
    pub usual_name: String,
    pub at: DateTime<Utc>,
    pub id_token: String,
}

/// A person signed in to their space: the hub's id of their dossier (found from the identité
/// pivot at sign-in), their given name for the header, when, and the id_token for logout.
/// `Debug` leaves out the name and the token.
#[derive(Clone, Serialize, Deserialize)]
pub struct PersonSignedIn {
    pub person_id: uuid::Uuid,
    pub given_name: String,
    pub at: DateTime<Utc>,
    pub id_token: String,
}

impl std::fmt::Debug for SignedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedIn").field("agent", &self.agent).field("at", &self.at).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for PersonSignedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersonSignedIn")
            .field("person_id", &self.person_id)
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

pub async fn person(session: &Session) -> Result<Option<PersonSignedIn>, SessionError> {
    Ok(session.get(PERSON).await?)
}

/// Records the person as signed in, under a new session id.
pub async fn sign_in_person(session: &Session, person: &PersonSignedIn) -> Result<(), SessionError> {
    record_sign_in(session, PERSON_SIGN_IN, PERSON, person).await
}

pub async fn start_person_sign_in(session: &Session, in_progress: &SignInInProgress) -> Result<(), SessionError> {
    Ok(session.insert(PERSON_SIGN_IN, in_progress).await?)
}

pub async fn take_person_sign_in(session: &Session) -> Result<Option<SignInInProgress>, SessionError> {
    Ok(session.remove(PERSON_SIGN_IN).await?)
}

/// Ends the person's sign-in here at once, keeping the logout's `state` to check on return.
pub async fn start_person_logout(session: &Session, state: &str) -> Result<(), SessionError> {
    record_logout(session, PERSON, state).await
}

/// A sign-in in progress: what the callback must find again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignInInProgress {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

/// The session's store failed: the page cannot be served safely.
#[derive(Debug, thiserror::Error)]
#[error("session store: {0}")]
pub struct SessionError(String);

impl From<tower_sessions::session::Error> for SessionError {
    fn from(error: tower_sessions::session::Error) -> Self {
        Self(error.to_string())
    }
}

pub async fn signed_in(session: &Session) -> Result<Option<SignedIn>, SessionError> {
    Ok(session.get(SIGNED_IN).await?)
}

/// Records the agent as signed in, under a new session id (no fixation of an id set before).
pub async fn sign_in(session: &Session, signed_in: &SignedIn) -> Result<(), SessionError> {
    record_sign_in(session, SIGN_IN, SIGNED_IN, signed_in).await
}

/// A sign-in completed: the one in progress forgotten, a new session id (no fixation of an id
/// set before), who signed in under `key`, a new CSRF token.
async fn record_sign_in(
    session: &Session,
    in_progress: &str,
    key: &str,
    who: &impl Serialize,
) -> Result<(), SessionError> {
    session.remove::<SignInInProgress>(in_progress).await?;
    session.cycle_id().await?;
    session.insert(key, who).await?;
    session.insert(CSRF, random_token()).await?;
    Ok(())
}

/// A logout started: who signed in under `key` forgotten at once, the `state` kept to check
/// on return.
async fn record_logout(session: &Session, key: &str, state: &str) -> Result<(), SessionError> {
    session.remove_value(key).await?;
    session.insert(LOGOUT, state).await?;
    Ok(())
}

pub async fn start_sign_in(session: &Session, in_progress: &SignInInProgress) -> Result<(), SessionError> {
    Ok(session.insert(SIGN_IN, in_progress).await?)
}

pub async fn take_sign_in(session: &Session) -> Result<Option<SignInInProgress>, SessionError> {
    Ok(session.remove(SIGN_IN).await?)
}

/// Ends the local sign-in at once (the provider's session is ended by the redirect that
/// follows), keeping the logout's `state` to check on return.
pub async fn start_logout(session: &Session, state: &str) -> Result<(), SessionError> {
    record_logout(session, SIGNED_IN, state).await
}

/// Whether `state` is the one of a logout started in this session (consumed either way).
pub async fn logout_started_here(session: &Session, state: Option<&str>) -> bool {
    let expected: Option<String> = session.remove(LOGOUT).await.ok().flatten();
    match (expected, state) {
        (Some(expected), Some(state)) => constant_time_eq(expected.as_bytes(), state.as_bytes()),
        _ => false,
    }
}

/// The session's CSRF token, created on first use.
pub async fn csrf_token(session: &Session) -> Result<String, SessionError> {
    if let Some(token) = session.get::<String>(CSRF).await? {
        return Ok(token);
    }
    let token = random_token();
    session.insert(CSRF, &token).await?;
    Ok(token)
}

/// Whether `presented` is this session's CSRF token (compared in constant time).
pub async fn csrf_valid(session: &Session, presented: Option<&str>) -> Result<bool, SessionError> {
    let Some(expected) = session.get::<String>(CSRF).await? else { return Ok(false) };
    let Some(presented) = presented else { return Ok(false) };
    Ok(constant_time_eq(expected.as_bytes(), presented.as_bytes()))
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 32 random bytes, URL-safe base64 (43 characters).
pub fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}
