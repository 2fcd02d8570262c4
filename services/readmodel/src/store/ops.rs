//! What operators read and settle of the projection's own state: dead letters, identity
//! conflicts awaiting a human, the stored offsets (against the broker's, for the lag), the
//! persons known by a secondary identifier only. Nothing personal: pseudonymous keys and hub
//! ids.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// One dead letter as operators see it: where it came from and why, never its content.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeadLetter {
    pub dead_letter_id: i64,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub person_id: Option<Uuid>,
    pub reason: String,
    pub recorded_at: DateTime<Utc>,
    pub replayed_at: Option<DateTime<Utc>>,
}

/// The dead letters not replayed yet (every one with `include_replayed`), oldest first.
pub async fn dead_letters(conn: &mut PgConnection, include_replayed: bool) -> Result<Vec<DeadLetter>, sqlx::Error> {
    sqlx::query_as(
        "SELECT dead_letter_id, topic, partition, \"offset\", person_id, reason, recorded_at, replayed_at
         FROM dead_letters WHERE $1 OR replayed_at IS NULL ORDER BY dead_letter_id",
    )
    .bind(include_replayed)
    .fetch_all(conn)
    .await
}

pub async fn dead_letter(conn: &mut PgConnection, dead_letter_id: i64) -> Result<Option<DeadLetter>, sqlx::Error> {
    sqlx::query_as(
        "SELECT dead_letter_id, topic, partition, \"offset\", person_id, reason, recorded_at, replayed_at
         FROM dead_letters WHERE dead_letter_id = $1",
    )
    .bind(dead_letter_id)
    .fetch_optional(conn)
    .await
}

/// Marks a dead letter replayed; returns the subject key it was about, when known.
pub async fn mark_replayed(conn: &mut PgConnection, dead_letter_id: i64) -> Result<Option<String>, sqlx::Error> {
    let subject: Option<Option<String>> = sqlx::query_scalar(
        "UPDATE dead_letters SET replayed_at = now() WHERE dead_letter_id = $1 RETURNING subject_key",
    )
    .bind(dead_letter_id)
    .fetch_optional(conn)
    .await?;
    Ok(subject.flatten())
}

/// A subject key claimed for two persons.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Conflict {
    pub conflict_id: i64,
    pub subject_key: String,
    /// The person the key is linked to while undecided.
    pub holder: Uuid,
    /// The person an event claimed it for.
    pub claimant: Uuid,
    pub source: String,
    pub event_id: String,
    pub recorded_at: DateTime<Utc>,
    pub resolution: Option<String>,
}

/// The identity conflicts (every one with `all`, else those undecided), oldest first, each
/// person followed to where it was merged.
pub async fn conflicts(conn: &mut PgConnection, all: bool) -> Result<Vec<Conflict>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.conflict_id, c.subject_key, COALESCE(h.merged_into, c.linked_to) AS holder,
                COALESCE(k.merged_into, c.claimed_for) AS claimant, c.source, c.event_id, c.recorded_at, c.resolution
         FROM identity_conflicts c
         LEFT JOIN persons h ON h.person_id = c.linked_to
         LEFT JOIN persons k ON k.person_id = c.claimed_for
         WHERE $1 OR c.resolution IS NULL
         ORDER BY c.conflict_id",
    )
    .bind(all)
    .fetch_all(conn)
    .await
}

/// The identity key a person was minted from (None for a person minted before ids were
/// derived, or unknown).
pub async fn identity_key_of(conn: &mut PgConnection, person_id: Uuid) -> Result<Option<String>, sqlx::Error> {
    let key: Option<Option<String>> = sqlx::query_scalar("SELECT id_key FROM persons WHERE person_id = $1")
        .bind(person_id)
        .fetch_optional(conn)
        .await?;
    Ok(key.flatten())
}

/// The persons known by a secondary identifier only (no NIR linked): France Travail-only or
/// département-only persons whose link may still come.
pub async fn unlinked_persons(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM persons p WHERE p.merged_into IS NULL
           AND NOT EXISTS (SELECT 1 FROM subject_links l WHERE l.person_id = p.person_id AND l.subject_key LIKE $1)",
    )
    .bind(format!("{}:%", passerelle_domain::event::SubjectKind::Nir.prefix()))
    .fetch_one(conn)
    .await
}

/// A projection's stored position in one partition.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredOffset {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
    /// When it last moved, in milliseconds since the Unix epoch.
    pub updated_at_ms: i64,
}

pub async fn stored_offsets(conn: &mut PgConnection, projection: &str) -> Result<Vec<StoredOffset>, sqlx::Error> {
    sqlx::query_as(
        "SELECT topic, partition, next_offset, (extract(epoch FROM updated_at) * 1000)::bigint AS updated_at_ms
         FROM projector_offsets WHERE projection = $1",
    )
    .bind(projection)
    .fetch_all(conn)
    .await
}
