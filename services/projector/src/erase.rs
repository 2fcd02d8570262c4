//! Erasure: the hub forgets a person (docs/decisions/0007-erasure-that-forgets.md). In one
//! transaction their data keys are destroyed (every record of theirs on the log is sealed whole
//! under those keys, so none can be read or linked to them again, by a replay or a rebuild
//! either) and the key hierarchy moves to a new root; they leave every read model, the applied
//! events, the identity decisions and pins, the search index and the dead letters; the journal
//! keeps the reads of their dossier under a new random id. A fact pushed afterwards starts a new
//! dossier.

use chrono::{DateTime, Utc};
use passerelle_eventlog::shredding::KeyStore;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::{Error, rebuild::REBUILD_SCHEMA};

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
    /// Bucket keys replaced, and the live data keys wrapped again under them.
    pub buckets_rotated: u64,
    pub keys_rewrapped: u64,
    /// Journal rows moved to a new random person id.
    pub journal_rows: u64,
    /// The root keys' generation after the erasure (the older ones deleted).
    pub root_generation: i32,
}

/// Erases a person (and any person merged into them).
pub async fn erase_person(pool: &PgPool, keys: &KeyStore, person_id: Uuid, reason: Reason) -> Result<Erased, Error> {
    erase_persons(pool, keys, &[person_id], reason).await
}

/// Erases persons (and any person merged into them) in one transaction: one new root
/// generation for all of them.
pub async fn erase_persons(
    pool: &PgPool,
    keys: &KeyStore,
    person_ids: &[Uuid],
    reason: Reason,
) -> Result<Erased, Error> {
    let mut tx = pool.begin().await?;
    // A rebuild's swap takes this table EXCLUSIVE: it waits for this erasure, or this erasure
    // for it, so the person leaves whichever tables are live when it commits.
    sqlx::query("LOCK TABLE projector_offsets IN ROW SHARE MODE").execute(&mut *tx).await?;
    let persons = persons_of(&mut tx, person_ids).await?;
    if persons.is_empty() {
        return Ok(Erased::default());
    }
    let subject_keys: Vec<String> =
        sqlx::query_scalar("SELECT subject_key FROM subject_links WHERE person_id = ANY($1)")
            .bind(&persons)
            .fetch_all(&mut *tx)
            .await?;
    // The households their facts named fold again without them: locked first, in the order a
    // projection batch takes them (households, then keys), so the two never wait on each other
    // in a cycle.
    let linked = with_linked(&mut tx, persons.clone(), &subject_keys).await?;
    let households = households_of(&mut tx, &linked).await?;
    crate::refold::lock(&mut tx, &[], &households).await?;
    // The keys first: a projection batch that opened this person's records holds their rows
    // until it commits, so once they are destroyed every such batch is in the tables below,
    // and no later one can open a record of theirs.
    let forgotten = keys.forget(&mut tx, &subject_keys).await?;
    let persons = with_linked(&mut tx, persons, &subject_keys).await?;
    let households = [households, households_of(&mut tx, &persons).await?].concat();
    let events = remove_persons(&mut tx, &persons, &subject_keys).await?;
    // The other members' right state, without the erased person's facts.
    let mut refold = crate::refold::Touched::default();
    refold.rewritten_households(households);
    crate::refold::refold(&mut tx, &refold, false).await?;
    let journal_rows: i64 =
        sqlx::query_scalar("SELECT journal.pseudonymise($1)").bind(&persons).fetch_one(&mut *tx).await?;
    // A session of the person's own space names them: signed out.
    for person in &persons {
        sqlx::query("DELETE FROM web.sessions WHERE strpos(record::text, $1) > 0")
            .bind(person.to_string())
            .execute(&mut *tx)
            .await?;
    }
    // A rebuild running meanwhile forgets them too (its later batches cannot open their records).
    let rebuilding: bool =
        sqlx::query_scalar("SELECT to_regnamespace($1) IS NOT NULL").bind(REBUILD_SCHEMA).fetch_one(&mut *tx).await?;
    if rebuilding {
        sqlx::query(sqlx::AssertSqlSafe(format!("SET LOCAL search_path TO {REBUILD_SCHEMA}, public")))
            .execute(&mut *tx)
            .await?;
        let rebuilt = with_linked(&mut tx, Vec::new(), &subject_keys).await?;
        remove_persons(&mut tx, &rebuilt, &subject_keys).await?;
    }
    tx.commit().await?;
    // The erasure holds from here. Deleting the older root files completes it; if that fails
    // it is said, and the next erasure or start of the hub deletes them.
    let retired = match keys.retire_old_roots(forgotten.root_generation) {
        Ok(retired) => retired,
        Err(error) => {
            tracing::error!(error = %error, "the older root keys could not be deleted: delete them, or restart the hub");
            0
        }
    };
    tracing::info!(
        reason = reason.code(),
        persons = persons.len(),
        keys = subject_keys.len(),
        root_generation = forgotten.root_generation,
        root_keys_retired = retired,
        "person erased"
    );
    Ok(Erased {
        persons: persons.len() as u64,
        subject_keys: subject_keys.len() as u64,
        data_keys_destroyed: forgotten.data_keys_destroyed,
        events_removed: events,
        buckets_rotated: forgotten.buckets_rotated,
        keys_rewrapped: forgotten.keys_rewrapped,
        journal_rows: u64::try_from(journal_rows).unwrap_or_default(),
        root_generation: forgotten.root_generation,
    })
}

async fn persons_of(tx: &mut Transaction<'_, Postgres>, person_ids: &[Uuid]) -> Result<Vec<Uuid>, Error> {
    Ok(sqlx::query_scalar("SELECT person_id FROM persons WHERE person_id = ANY($1) OR merged_into = ANY($1)")
        .bind(person_ids)
        .fetch_all(&mut **tx)
        .await?)
}

/// `persons`, with every person (and those merged into them) a link of `subject_keys` names.
async fn with_linked(
    tx: &mut Transaction<'_, Postgres>,
    mut persons: Vec<Uuid>,
    subject_keys: &[String],
) -> Result<Vec<Uuid>, Error> {
    let linked: Vec<Uuid> = sqlx::query_scalar(
        "SELECT p.person_id FROM persons p
         WHERE p.person_id IN (SELECT person_id FROM subject_links WHERE subject_key = ANY($1))
            OR p.merged_into IN (SELECT person_id FROM subject_links WHERE subject_key = ANY($1))",
    )
    .bind(subject_keys)
    .fetch_all(&mut **tx)
    .await?;
    persons.extend(linked);
    persons.sort_unstable();
    persons.dedup();
    Ok(persons)
}

/// The households the facts of `persons` name.
async fn households_of(tx: &mut Transaction<'_, Postgres>, persons: &[Uuid]) -> Result<Vec<String>, Error> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT household_key FROM person_events WHERE person_id = ANY($1) AND household_key IS NOT NULL",
    )
    .bind(persons)
    .fetch_all(&mut **tx)
    .await?)
}

async fn remove_persons(
    tx: &mut Transaction<'_, Postgres>,
    persons: &[Uuid],
    subject_keys: &[String],
) -> Result<u64, Error> {
    // Which (source, event id) pairs were theirs: an importer's id is a keyed hash, an
    // institution's may name a dossier.
    sqlx::query(
        "DELETE FROM applied_events a USING person_events e
         WHERE e.person_id = ANY($1) AND a.source = e.source AND a.event_id = e.event_id",
    )
    .bind(persons)
    .execute(&mut **tx)
    .await?;
    // A household folded from their facts folds again in full, without them.
    sqlx::query(
        "DELETE FROM households WHERE household_key IN (
             SELECT household_key FROM person_events WHERE person_id = ANY($1) AND household_key IS NOT NULL)",
    )
    .bind(persons)
    .execute(&mut **tx)
    .await?;
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
    sqlx::query(
        "DELETE FROM identity_decisions
         WHERE subject_key = ANY($1) OR holder_key = ANY($1) OR claimant_key = ANY($1)",
    )
    .bind(subject_keys)
    .execute(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM identity_pins WHERE subject_key = ANY($1) OR owner_key = ANY($1)")
        .bind(subject_keys)
        .execute(&mut **tx)
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
    .execute(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM subject_links WHERE person_id = ANY($1)").bind(persons).execute(&mut **tx).await?;
    sqlx::query("DELETE FROM persons WHERE merged_into = ANY($1)").bind(persons).execute(&mut **tx).await?;
    sqlx::query("DELETE FROM persons WHERE person_id = ANY($1)").bind(persons).execute(&mut **tx).await?;
    Ok(events)
}

/// Erases every person without contact since `cutoff` (the retention job: two years after the
/// last contact), a thousand per transaction. Returns how many persons were erased.
pub async fn retention(pool: &PgPool, keys: &KeyStore, cutoff: DateTime<Utc>) -> Result<u64, Error> {
    let expired: Vec<Uuid> = sqlx::query_scalar("SELECT person_id FROM dossiers WHERE last_contact_at < $1")
        .bind(cutoff)
        .fetch_all(pool)
        .await?;
    let mut erased = 0;
    for chunk in expired.chunks(1000) {
        erased += erase_persons(pool, keys, chunk, Reason::Retention).await?.persons;
    }
    Ok(erased)
}
