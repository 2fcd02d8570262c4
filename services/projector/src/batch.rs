//! What a batch knows and writes in bulk, so that applying an event costs no round trip to
//! PostgreSQL in the common cases (docs/projector.md, "Batching"):
//!
//! - read once per batch: the links, pins and erasures of every key the batch names, and which
//!   of the persons it could mint exist already; the (source, event_id) pairs it applies are
//!   recorded in one statement;
//! - written once per batch (or before any statement that must see them): new persons, new
//!   links and the projected events, each as one multi-row statement;
//! - dossiers and households folded at the end (`refold.rs`).
//!
//! Anything out of the ordinary (a key linked to another person, a pin, an erased identity
//! key, a correction or retraction, an identity decision) takes the per-event path of
//! `apply.rs` after the pending writes are flushed, and what the batch knows is read again.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::Error;

/// The batch's view of identity state, valid until a per-event path changes it.
#[derive(Default)]
pub struct Known {
    /// Canonical person of each linked key.
    pub links: HashMap<String, Uuid>,
    /// Keys a human decision pinned.
    pub pinned: HashSet<String>,
    /// Persons (among those the batch could mint) that exist.
    pub existing: HashSet<Uuid>,
    keys: Vec<String>,
    candidates: Vec<Uuid>,
}

impl Known {
    /// Reads the state of `keys` and of the persons `candidates` (ids the batch could mint).
    pub async fn read(
        tx: &mut Transaction<'_, Postgres>,
        keys: Vec<String>,
        candidates: Vec<Uuid>,
    ) -> Result<Self, Error> {
        let mut known = Known { keys, candidates, ..Known::default() };
        known.refresh(tx).await?;
        Ok(known)
    }

    /// Reads it all again (after a per-event path changed links or persons).
    pub async fn refresh(&mut self, tx: &mut Transaction<'_, Postgres>) -> Result<(), Error> {
        let known = self;
        let keys = &known.keys;
        let candidates = &known.candidates;
        let names: Vec<&str> = keys.iter().map(String::as_str).collect();
        known.links = crate::apply::links_of(tx, &names).await?;
        known.pinned =
            sqlx::query_scalar::<_, String>("SELECT subject_key FROM identity_pins WHERE subject_key = ANY($1)")
                .bind(keys)
                .fetch_all(&mut **tx)
                .await?
                .into_iter()
                .collect();
        known.existing = sqlx::query_scalar::<_, Uuid>("SELECT person_id FROM persons WHERE person_id = ANY($1)")
            .bind(candidates)
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .collect();
        Ok(())
    }
}

/// A projected event waiting for the batch's multi-row insert.
pub struct EventRow {
    pub person_id: Uuid,
    pub source: String,
    pub event_id: String,
    pub family: &'static str,
    pub event_type: &'static str,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub relayed_by: Option<String>,
    pub household_key: Option<String>,
    pub territory: Option<String>,
    pub fact: String,
    /// The event this one corrects or retracts.
    pub corrects: Option<String>,
    pub role: Option<&'static str>,
    pub subject_key: String,
    pub sealed_key_id: Option<Uuid>,
    pub sealed_nonce: Option<Vec<u8>>,
    pub sealed_data: Option<Vec<u8>>,
    pub commune: Option<String>,
    pub organisme: Option<String>,
}

/// Writes queued by the fast path, flushed in three statements.
#[derive(Default)]
pub struct Pending {
    pub persons: Vec<(Uuid, String)>,
    pub links: Vec<(String, Uuid, String)>,
    pub events: Vec<EventRow>,
}

impl Pending {
    pub async fn flush(&mut self, tx: &mut Transaction<'_, Postgres>) -> Result<(), Error> {
        // Rows in one order for every worker: concurrent multi-row inserts of overlapping keys
        // in different orders deadlock (a deadlock is retried, but costs the batch).
        self.persons.sort_unstable();
        self.links.sort_unstable();
        if !self.persons.is_empty() {
            let (ids, keys): (Vec<Uuid>, Vec<String>) = self.persons.drain(..).unzip();
            sqlx::query(
                "INSERT INTO persons (person_id, id_key) SELECT * FROM unnest($1::uuid[], $2::text[])
                 ON CONFLICT DO NOTHING",
            )
            .bind(ids)
            .bind(keys)
            .execute(&mut **tx)
            .await?;
        }
        if !self.links.is_empty() {
            let mut keys = Vec::with_capacity(self.links.len());
            let mut persons = Vec::with_capacity(self.links.len());
            let mut vias = Vec::with_capacity(self.links.len());
            for (key, person, via) in self.links.drain(..) {
                keys.push(key);
                persons.push(person);
                vias.push(via);
            }
            let wanted = keys.len();
            let inserted: Vec<String> = sqlx::query_scalar(
                "INSERT INTO subject_links (subject_key, person_id, via_event)
                 SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[]) ON CONFLICT DO NOTHING RETURNING subject_key",
            )
            .bind(keys)
            .bind(persons)
            .bind(vias)
            .fetch_all(&mut **tx)
            .await?;
            if inserted.len() != wanted {
                // A key this batch saw unlinked was linked by another worker meanwhile.
                return Err(Error::LinkedMeanwhile);
            }
        }
        if !self.events.is_empty() {
            let rows: Vec<EventRow> = self.events.drain(..).collect();
            insert_events(tx, rows).await?;
        }
        Ok(())
    }
}

/// One multi-row insert of projected events. An event corrected or retracted by one already
/// projected (a correction that arrived first) is marked as such.
async fn insert_events(tx: &mut Transaction<'_, Postgres>, rows: Vec<EventRow>) -> Result<(), Error> {
    macro_rules! column {
        ($field:ident) => {
            rows.iter().map(|row| row.$field.clone()).collect::<Vec<_>>()
        };
    }
    sqlx::query(
        "INSERT INTO person_events (person_id, source, event_id, family, event_type, occurred_at, recorded_at, relayed_by,
                                    household_key, territory, fact, corrects, role, subject_key,
                                    sealed_key_id, sealed_nonce, sealed_data, commune, organisme, assigned_by,
                                    superseded_by, retracted_by)
         SELECT u.person_id, u.source, u.event_id, u.family, u.event_type, u.occurred_at, u.recorded_at, u.relayed_by,
                u.household_key,
                -- A waiting fact takes its foyer's decided authority; a waiting correction, the
                -- place of the fact it corrects (it does not move it).
                COALESCE(a.authority,
                         CASE WHEN u.territory = $20 AND u.corrects IS NOT NULL THEN
                              (SELECT c.territory FROM person_events c
                               WHERE c.source = u.source AND c.event_id = u.corrects AND c.territory <> $20 LIMIT 1)
                         END,
                         u.territory),
                u.fact::jsonb, u.corrects, u.role, u.subject_key,
                u.sealed_key_id, u.sealed_nonce, u.sealed_data, u.commune, u.organisme, a.decision_id,
                (SELECT event_id FROM person_events c WHERE c.source = u.source AND c.corrects = u.event_id AND c.event_type <> 'retraction' AND (c.subject_key = u.subject_key OR u.subject_key IN (SELECT l.subject_key FROM subject_links l WHERE l.person_id = c.person_id)) LIMIT 1),
                (SELECT event_id FROM person_events c WHERE c.source = u.source AND c.corrects = u.event_id AND c.event_type = 'retraction' AND (c.subject_key = u.subject_key OR u.subject_key IN (SELECT l.subject_key FROM subject_links l WHERE l.person_id = c.person_id)) LIMIT 1)
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::timestamptz[],
                     $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::uuid[],
                     $16::bytea[], $17::bytea[], $18::text[], $19::text[])
           AS u(person_id, source, event_id, family, event_type, occurred_at, recorded_at, relayed_by, household_key,
                territory, fact, corrects, role, subject_key, sealed_key_id, sealed_nonce, sealed_data, commune, organisme)
         -- A fact waiting to be assigned whose foyer ops already placed takes that authority.
         LEFT JOIN territory_assignments a
                ON u.territory = $20 AND u.family = 'allocataire' AND a.household_key = u.household_key
         ON CONFLICT DO NOTHING",
    )
    .bind(column!(person_id))
    .bind(column!(source))
    .bind(column!(event_id))
    .bind(rows.iter().map(|row| row.family).collect::<Vec<_>>())
    .bind(rows.iter().map(|row| row.event_type).collect::<Vec<_>>())
    .bind(column!(occurred_at))
    .bind(column!(recorded_at))
    .bind(column!(relayed_by))
    .bind(column!(household_key))
    .bind(column!(territory))
    .bind(column!(fact))
    .bind(column!(corrects))
    .bind(rows.iter().map(|row| row.role).collect::<Vec<_>>())
    .bind(column!(subject_key))
    .bind(column!(sealed_key_id))
    .bind(column!(sealed_nonce))
    .bind(column!(sealed_data))
    .bind(column!(commune))
    .bind(column!(organisme))
    .bind(passerelle_domain::territory::TO_ASSIGN)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The (source, event_id) pairs of a batch, recorded as applied in one statement.
pub struct Dedupe {
    /// Pairs recorded now (first publication seen by this projection).
    pub new: HashSet<(String, String)>,
    /// Fingerprints of pairs applied by an earlier batch.
    pub seen: HashMap<(String, String), Vec<u8>>,
}

/// A pair to record: (source, event_id, fingerprint, topic, partition, offset).
pub type Applying = (String, String, Vec<u8>, String, i32, i64);

pub async fn record_applied(
    tx: &mut Transaction<'_, Postgres>,
    projection: &str,
    pairs: Vec<Applying>,
) -> Result<Dedupe, Error> {
    let mut dedupe = Dedupe { new: HashSet::new(), seen: HashMap::new() };
    if pairs.is_empty() {
        return Ok(dedupe);
    }
    let mut sources = Vec::with_capacity(pairs.len());
    let mut ids = Vec::with_capacity(pairs.len());
    let mut fingerprints = Vec::with_capacity(pairs.len());
    let mut topics = Vec::with_capacity(pairs.len());
    let mut partitions = Vec::with_capacity(pairs.len());
    let mut offsets = Vec::with_capacity(pairs.len());
    for (source, id, fingerprint, topic, partition, offset) in pairs {
        sources.push(source);
        ids.push(id);
        fingerprints.push(fingerprint);
        topics.push(topic);
        partitions.push(partition);
        offsets.push(offset);
    }
    let inserted: Vec<(String, String)> = sqlx::query_as(
        "INSERT INTO applied_events (projection, source, event_id, fingerprint, topic, partition, \"offset\")
         SELECT $1, * FROM unnest($2::text[], $3::text[], $4::bytea[], $5::text[], $6::int[], $7::bigint[])
         ON CONFLICT DO NOTHING RETURNING source, event_id",
    )
    .bind(projection)
    .bind(&sources)
    .bind(&ids)
    .bind(&fingerprints)
    .bind(&topics)
    .bind(&partitions)
    .bind(&offsets)
    .fetch_all(&mut **tx)
    .await?;
    dedupe.new = inserted.into_iter().collect();
    if dedupe.new.len() < sources.len() {
        let seen: Vec<(String, String, Vec<u8>)> = sqlx::query_as(
            "SELECT a.source, a.event_id, a.fingerprint FROM applied_events a
             JOIN unnest($2::text[], $3::text[]) AS u(source, event_id) USING (source, event_id)
             WHERE a.projection = $1",
        )
        .bind(projection)
        .bind(&sources)
        .bind(&ids)
        .fetch_all(&mut **tx)
        .await?;
        for (source, id, fingerprint) in seen {
            let pair = (source, id);
            if !dedupe.new.contains(&pair) {
                dedupe.seen.insert(pair, fingerprint);
            }
        }
    }
    Ok(dedupe)
}
