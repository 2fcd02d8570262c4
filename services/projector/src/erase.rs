//! Erasure: the hub forgets a person (docs/decisions/0007-erasure-that-forgets.md). In one
//! transaction their data keys are destroyed (every record of theirs on the log is sealed whole
//! under those keys, so none can be read or linked to them again, by a replay or a rebuild
//! either) and the key hierarchy moves to a new root; they leave every read model, the applied
//! events, the identity decisions and pins, the search index and the dead letters; the journal
//! keeps the reads of their dossier under a new random id. A fact pushed afterwards starts a new
//! dossier.

use chrono::{DateTime, Utc};
use passerelle_eventlog::shredding::KeyStore;
use passerelle_readmodel::store::erasure;
use sqlx::PgPool;
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
    erasure::lock_against_swap(&mut tx).await?;
    let persons = erasure::persons_of(&mut tx, person_ids).await?;
    if persons.is_empty() {
        return Ok(Erased::default());
    }
    let subject_keys = erasure::subject_keys_of(&mut tx, &persons).await?;
    // The households their facts named fold again without them: locked first, in the order a
    // projection batch takes them (households, then keys), so the two never wait on each other
    // in a cycle.
    let linked = erasure::with_linked(&mut tx, persons.clone(), &subject_keys).await?;
    let households = erasure::households_of(&mut tx, &linked).await?;
    passerelle_readmodel::store::dossiers::lock(&mut tx, &[], &households).await?;
    // The keys first: a projection batch that opened this person's records holds their rows
    // until it commits, so once they are destroyed every such batch is in the tables below,
    // and no later one can open a record of theirs.
    let forgotten = keys.forget(&mut tx, &subject_keys).await?;
    let persons = erasure::with_linked(&mut tx, persons, &subject_keys).await?;
    let households = [households, erasure::households_of(&mut tx, &persons).await?].concat();
    let events = erasure::remove_persons(&mut tx, &persons, &subject_keys).await?;
    // The other members' right state, without the erased person's facts.
    let mut refold = crate::refold::Touched::default();
    refold.rewritten_households(households);
    crate::refold::refold(&mut tx, &mut refold, false).await?;
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
    if erasure::enter_rebuild(&mut tx, REBUILD_SCHEMA).await? {
        let rebuilt = erasure::with_linked(&mut tx, Vec::new(), &subject_keys).await?;
        erasure::remove_persons(&mut tx, &rebuilt, &subject_keys).await?;
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

/// Erases every person without contact since `cutoff` (the retention job: two years after the
/// last contact), a thousand per transaction. Returns how many persons were erased.
pub async fn retention(pool: &PgPool, keys: &KeyStore, cutoff: DateTime<Utc>) -> Result<u64, Error> {
    let expired = erasure::without_contact_since(&mut *pool.acquire().await?, cutoff).await?;
    let mut erased = 0;
    for chunk in expired.chunks(1000) {
        erased += erase_persons(pool, keys, chunk, Reason::Retention).await?.persons;
    }
    Ok(erased)
}
