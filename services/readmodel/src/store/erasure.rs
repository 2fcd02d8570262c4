//! What an erasure removes from the read models (docs/decisions/0007-erasure-that-forgets.md):
//! a person, those merged into them, their keys' links, events, dossier, the households folded
//! from their facts, the applied pairs that were theirs, the identity decisions, pins and
//! conflicts that name them; their dead letters closed without anything that names them. The
//! erasure's transaction (the projector's `erase.rs`) destroys their data keys and folds the
//! households again.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// Takes the lock a rebuild's swap conflicts with (the swap takes `projector_offsets`
/// EXCLUSIVE): the erasure waits for the swap, or the swap for the erasure, so the person
/// leaves whichever tables are live when it commits.
pub async fn lock_against_swap(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("LOCK TABLE projector_offsets IN ROW SHARE MODE").execute(conn).await?;
    Ok(())
}

/// The subject keys linked to `persons`.
pub async fn subject_keys_of(conn: &mut PgConnection, persons: &[Uuid]) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT subject_key FROM subject_links WHERE person_id = ANY($1)")
        .bind(persons)
        .fetch_all(conn)
        .await
}

/// Whether a rebuild is running (its schema exists); if so, the rest of the transaction reads
/// and writes the rebuild's tables.
pub async fn enter_rebuild(conn: &mut PgConnection, rebuild_schema: &str) -> Result<bool, sqlx::Error> {
    let rebuilding: bool =
        sqlx::query_scalar("SELECT to_regnamespace($1) IS NOT NULL").bind(rebuild_schema).fetch_one(&mut *conn).await?;
    if rebuilding {
        sqlx::query(sqlx::AssertSqlSafe(format!("SET LOCAL search_path TO {rebuild_schema}, public")))
            .execute(conn)
            .await?;
    }
    Ok(rebuilding)
}

/// The persons without contact since `cutoff` (the retention job's).
pub async fn without_contact_since(conn: &mut PgConnection, cutoff: DateTime<Utc>) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT person_id FROM dossiers WHERE last_contact_at < $1").bind(cutoff).fetch_all(conn).await
}

/// `person_ids` and those merged into them, as they exist.
pub async fn persons_of(conn: &mut PgConnection, person_ids: &[Uuid]) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT person_id FROM persons WHERE person_id = ANY($1) OR merged_into = ANY($1)")
        .bind(person_ids)
        .fetch_all(conn)
        .await
}

/// `persons`, with every person (and those merged into them) a link of `subject_keys` names.
pub async fn with_linked(
    conn: &mut PgConnection,
    mut persons: Vec<Uuid>,
    subject_keys: &[String],
) -> Result<Vec<Uuid>, sqlx::Error> {
    let linked: Vec<Uuid> = sqlx::query_scalar(
        "SELECT p.person_id FROM persons p
         WHERE p.person_id IN (SELECT person_id FROM subject_links WHERE subject_key = ANY($1))
            OR p.merged_into IN (SELECT person_id FROM subject_links WHERE subject_key = ANY($1))",
    )
    .bind(subject_keys)
    .fetch_all(&mut *conn)
    .await?;
    persons.extend(linked);
    persons.sort_unstable();
    persons.dedup();
    Ok(persons)
}

/// The households the facts of `persons` name.
pub async fn households_of(conn: &mut PgConnection, persons: &[Uuid]) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT household_key FROM person_events WHERE person_id = ANY($1) AND household_key IS NOT NULL",
    )
    .bind(persons)
    .fetch_all(conn)
    .await
}

/// Removes `persons` (and their keys' traces) from the read models; returns how many events went.
pub async fn remove_persons(
    conn: &mut PgConnection,
    persons: &[Uuid],
    subject_keys: &[String],
) -> Result<u64, sqlx::Error> {
    // Which (source, event id) pairs were theirs: an importer's id is a keyed hash, an
    // institution's may name a dossier.
    sqlx::query(
        "DELETE FROM applied_events a USING person_events e
         WHERE e.person_id = ANY($1) AND a.source = e.source AND a.event_id = e.event_id",
    )
    .bind(persons)
    .execute(&mut *conn)
    .await?;
    // A household folded from their facts folds again in full, without them.
    sqlx::query(
        "DELETE FROM households WHERE household_key IN (
             SELECT household_key FROM person_events WHERE person_id = ANY($1) AND household_key IS NOT NULL)",
    )
    .bind(persons)
    .execute(&mut *conn)
    .await?;
    let events = sqlx::query("DELETE FROM person_events WHERE person_id = ANY($1)")
        .bind(persons)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM dossiers WHERE person_id = ANY($1)").bind(persons).execute(&mut *conn).await?;
    sqlx::query("DELETE FROM identity_conflicts WHERE linked_to = ANY($1) OR claimed_for = ANY($1)")
        .bind(persons)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "DELETE FROM identity_decisions
         WHERE subject_key = ANY($1) OR holder_key = ANY($1) OR claimant_key = ANY($1)",
    )
    .bind(subject_keys)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM identity_pins WHERE subject_key = ANY($1) OR owner_key = ANY($1)")
        .bind(subject_keys)
        .execute(&mut *conn)
        .await?;
    // Their dead letters stay for the counts, closed and without anything that names them
    // (their records can no longer be opened to be replayed).
    sqlx::query(
        "UPDATE dead_letters SET person_id = NULL, subject_key = NULL, source = NULL, event_id = NULL,
                reason = 'personne effacée', replayed_at = COALESCE(replayed_at, now())
         WHERE person_id = ANY($1) OR subject_key = ANY($2)",
    )
    .bind(persons)
    .bind(subject_keys)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM subject_links WHERE person_id = ANY($1)").bind(persons).execute(&mut *conn).await?;
    sqlx::query("DELETE FROM persons WHERE merged_into = ANY($1)").bind(persons).execute(&mut *conn).await?;
    sqlx::query("DELETE FROM persons WHERE person_id = ANY($1)").bind(persons).execute(&mut *conn).await?;
    Ok(events)
}
