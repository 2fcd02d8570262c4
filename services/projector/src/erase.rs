//! Erasure: a person's data keys are destroyed (their events stay on the log, unreadable) and
//! they leave every read model, in one transaction. Their subject keys are remembered as erased,
//! so replaying or rebuilding never brings back what happened before the erasure; a fact that
//! happens afterwards (a new demand) starts a new dossier.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::Error;

/// Why a person is erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A lawful request (right to erasure, end of the legal basis).
    Request,
    /// Two years without contact (accompaniment data retention).
    Retention,
}

impl Reason {
    pub fn code(self) -> &'static str {
        match self {
            Reason::Request => "request",
            Reason::Retention => "retention",
        }
    }
}

/// What an erasure removed (counts only: nothing personal).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Erased {
    pub persons: u64,
    pub subject_keys: u64,
    pub data_keys_destroyed: u64,
    pub events_removed: u64,
}

/// Erases a person (and any person merged into them).
pub async fn erase_person(pool: &PgPool, person_id: Uuid, reason: Reason) -> Result<Erased, Error> {
    let mut tx = pool.begin().await?;
    let persons: Vec<(Uuid,)> =
        sqlx::query_as("SELECT person_id FROM persons WHERE person_id = $1 OR merged_into = $1")
            .bind(person_id)
            .fetch_all(&mut *tx)
            .await?;
    let persons: Vec<Uuid> = persons.into_iter().map(|(id,)| id).collect();
    if persons.is_empty() {
        return Ok(Erased::default());
    }
    let keys: Vec<(String,)> = sqlx::query_as("SELECT subject_key FROM subject_links WHERE person_id = ANY($1)")
        .bind(&persons)
        .fetch_all(&mut *tx)
        .await?;
    let keys: Vec<String> = keys.into_iter().map(|(key,)| key).collect();
    sqlx::query(
        "INSERT INTO erased_subjects (subject_key, reason) SELECT unnest($1::text[]), $2
         ON CONFLICT (subject_key) DO UPDATE SET erased_at = now(), reason = EXCLUDED.reason",
    )
    .bind(&keys)
    .bind(reason.code())
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM public.search_index WHERE subject_key = ANY($1)").bind(&keys).execute(&mut *tx).await?;
    let destroyed = sqlx::query(
        "UPDATE data_keys SET wrapped_key = NULL, destroyed_at = now() WHERE subject_key = ANY($1) AND destroyed_at IS NULL",
    )
    .bind(&keys)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let events = remove_persons(&mut tx, &persons).await?;
    tx.commit().await?;
    tracing::info!(reason = reason.code(), persons = persons.len(), keys = keys.len(), "person erased");
    Ok(Erased {
        persons: persons.len() as u64,
        subject_keys: keys.len() as u64,
        data_keys_destroyed: destroyed,
        events_removed: events,
    })
}

/// Removes a person (and those merged into them) from the read models of the transaction's
/// search_path, without touching keys: a rebuild applies an erasure made while it ran.
pub async fn remove_from_read_models(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    person_id: Uuid,
) -> Result<u64, Error> {
    let persons: Vec<(Uuid,)> =
        sqlx::query_as("SELECT person_id FROM persons WHERE person_id = $1 OR merged_into = $1")
            .bind(person_id)
            .fetch_all(&mut **tx)
            .await?;
    let persons: Vec<Uuid> = persons.into_iter().map(|(id,)| id).collect();
    remove_persons(tx, &persons).await
}

async fn remove_persons(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>, persons: &[Uuid]) -> Result<u64, Error> {
    let events = sqlx::query("DELETE FROM person_events WHERE person_id = ANY($1)")
        .bind(persons)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM dossiers WHERE person_id = ANY($1)").bind(persons).execute(&mut **tx).await?;
    sqlx::query("DELETE FROM identity_conflicts WHERE linked_to = ANY($1) OR claimed_for = ANY($1)")
        .bind(persons)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE dead_letters SET person_id = NULL WHERE person_id = ANY($1)")
        .bind(persons)
        .execute(&mut **tx)
        .await?;
    sqlx::query("DELETE FROM subject_links WHERE person_id = ANY($1)").bind(persons).execute(&mut **tx).await?;
    sqlx::query("DELETE FROM persons WHERE merged_into = ANY($1)").bind(persons).execute(&mut **tx).await?;
    sqlx::query("DELETE FROM persons WHERE person_id = ANY($1)").bind(persons).execute(&mut **tx).await?;
    Ok(events)
}

/// Erases every person without contact since `cutoff` (the retention job: two years after the
/// last contact). Returns how many persons were erased.
pub async fn retention(pool: &PgPool, cutoff: DateTime<Utc>) -> Result<u64, Error> {
    let expired: Vec<(Uuid,)> = sqlx::query_as("SELECT person_id FROM dossiers WHERE last_contact_at < $1")
        .bind(cutoff)
        .fetch_all(pool)
        .await?;
    let mut erased = 0;
    for (person_id,) in expired {
        erased += erase_person(pool, person_id, Reason::Retention).await?.persons;
    }
    Ok(erased)
}
