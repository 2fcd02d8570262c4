//! What a batch knows and writes in bulk, so that applying an event costs no round trip to
//! PostgreSQL in the common cases (docs/projector.md, "Batching"):
//!
//! - read once per batch: the links, pins and erasures of every key the batch names, and which
//!   of the persons it could mint exist already; the (source, event_id) pairs it applies are
//!   recorded in one statement;
//! - written once per batch (or before any statement that must see them): new persons, new
//!   links and the projected events, each as one multi-row statement;
//! - dossiers folded again in bulk: one read of the touched persons' events, one upsert.
//!
//! Anything out of the ordinary (a key linked to another person, a pin, an erased identity
//! key, a correction or retraction, an identity decision) takes the per-event path of
//! `apply.rs` after the pending writes are flushed, and what the batch knows is read again.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Row as _, Transaction};
use uuid::Uuid;

use crate::{Error, fold};

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
                                    sealed_key_id, sealed_nonce, sealed_data, commune, organisme,
                                    superseded_by, retracted_by)
         SELECT u.person_id, u.source, u.event_id, u.family, u.event_type, u.occurred_at, u.recorded_at, u.relayed_by,
                u.household_key, u.territory, u.fact::jsonb, u.corrects, u.role, u.subject_key,
                u.sealed_key_id, u.sealed_nonce, u.sealed_data, u.commune, u.organisme,
                (SELECT event_id FROM person_events c WHERE c.source = u.source AND c.corrects = u.event_id AND c.event_type <> 'retraction' AND (c.subject_key = u.subject_key OR u.subject_key IN (SELECT l.subject_key FROM subject_links l WHERE l.person_id = c.person_id)) LIMIT 1),
                (SELECT event_id FROM person_events c WHERE c.source = u.source AND c.corrects = u.event_id AND c.event_type = 'retraction' AND (c.subject_key = u.subject_key OR u.subject_key IN (SELECT l.subject_key FROM subject_links l WHERE l.person_id = c.person_id)) LIMIT 1)
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::timestamptz[],
                     $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::uuid[],
                     $16::bytea[], $17::bytea[], $18::text[], $19::text[])
           AS u(person_id, source, event_id, family, event_type, occurred_at, recorded_at, relayed_by, household_key,
                territory, fact, corrects, role, subject_key, sealed_key_id, sealed_nonce, sealed_data, commune, organisme)
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

/// Folds the dossiers of `persons` again in bulk; returns their households, whose right state
/// the caller folds next.
/// Serialises the refolds of the same persons and households by concurrent workers: a
/// household's members (and a person's keys) may sit in different partitions, so two workers
/// can refold one household at once, each without the other's uncommitted event, and the later
/// write would win. Before refolding, a batch takes a transaction-scoped advisory lock on every
/// household it may refold (those of its events and of its persons' events), then on every
/// person, each set in sorted order: one global order, so two batches never wait on each other
/// in a cycle; and every dossier or household row is written only under these locks. A worker
/// that waits reads, once it has the locks, what the other committed.
pub async fn lock_for_refold(
    tx: &mut Transaction<'_, Postgres>,
    persons: &[Uuid],
    households: &[String],
) -> Result<(), Error> {
    let mut all_households: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT household_key FROM person_events WHERE person_id = ANY($1) AND household_key IS NOT NULL",
    )
    .bind(persons)
    .fetch_all(&mut **tx)
    .await?;
    all_households.extend(households.iter().cloned());
    all_households.sort();
    all_households.dedup();
    let mut persons: Vec<Uuid> = persons.to_vec();
    persons.sort();
    persons.dedup();
    let keys: Vec<String> =
        all_households.into_iter().chain(persons.iter().map(|person| format!("person:{person}"))).collect();
    if keys.is_empty() {
        return Ok(());
    }
    // Volatile functions of the select list run after the ORDER BY: the locks are taken in
    // the array's order.
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended(key, 7301)) FROM unnest($1::text[]) WITH ORDINALITY AS k(key, n) ORDER BY n",
    )
    .bind(&keys)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub async fn refold_persons(tx: &mut Transaction<'_, Postgres>, persons: &[Uuid]) -> Result<Vec<String>, Error> {
    if persons.is_empty() {
        return Ok(Vec::new());
    }
    // A person merged into another has no dossier of their own any more.
    let merged: Vec<Uuid> = sqlx::query_scalar(
        "SELECT person_id FROM persons WHERE person_id = ANY($1) AND merged_into IS NOT NULL AND merged_into <> person_id",
    )
    .bind(persons)
    .fetch_all(&mut **tx)
    .await?;
    let merged: HashSet<Uuid> = merged.into_iter().collect();
    let live: Vec<Uuid> = persons.iter().copied().filter(|p| !merged.contains(p)).collect();
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT person_id, {} FROM person_events WHERE person_id = ANY($1)",
        crate::apply::FACT_COLUMNS
    )))
    .bind(&live)
    .fetch_all(&mut **tx)
    .await?;
    let mut facts: HashMap<Uuid, Vec<sqlx::postgres::PgRow>> = HashMap::new();
    for row in rows {
        facts.entry(row.try_get("person_id")?).or_default().push(row);
    }
    // Every event of theirs moved to another person (a key reassigned by a decision).
    let mut gone: Vec<Uuid> = merged.into_iter().collect();
    let mut states = Vec::new();
    for person in &live {
        match facts.remove(person) {
            Some(rows) => states.push((*person, fold::dossier(&crate::apply::facts_of(rows)?))),
            None => gone.push(*person),
        }
    }
    if !gone.is_empty() {
        sqlx::query("DELETE FROM dossiers WHERE person_id = ANY($1)").bind(&gone).execute(&mut **tx).await?;
    }
    if states.is_empty() {
        return Ok(Vec::new());
    }
    upsert_dossiers(tx, &states).await?;
    let ids: Vec<Uuid> = states.iter().map(|(id, _)| *id).collect();
    // Incomplete while a dead letter about the person (known then, or by one of their subject
    // keys) waits to be replayed.
    sqlx::query(
        "UPDATE dossiers d SET incomplete = EXISTS (
             SELECT 1 FROM dead_letters x WHERE x.replayed_at IS NULL AND (x.person_id = d.person_id OR x.subject_key IN (
                 SELECT subject_key FROM subject_links WHERE person_id = d.person_id)))
         WHERE d.person_id = ANY($1)",
    )
    .bind(&ids)
    .execute(&mut **tx)
    .await?;
    Ok(states.into_iter().filter_map(|(_, state)| state.household_key).collect())
}

async fn upsert_dossiers(tx: &mut Transaction<'_, Postgres>, states: &[(Uuid, fold::State)]) -> Result<(), Error> {
    macro_rules! column {
        ($field:ident) => {
            states.iter().map(|(_, state)| state.$field.clone()).collect::<Vec<_>>()
        };
    }
    sqlx::query(
        "INSERT INTO dossiers (person_id, territory, territory_since, previous_territory, household_key, role, sdd, sdd_since,
                               ft_status, ft_status_at, ft_categorie, ft_accompagnement, orientation_status, orientation_type,
                               oriented_at, structure_siret, referent_uid, referent_siret, referent_since, contract_kind,
                               contract_start, contract_end, opposition, consent_diagnostic, last_contact_at, updated_at)
         SELECT *, now() FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::bool[],
                                     $8::timestamptz[], $9::text[], $10::timestamptz[], $11::text[], $12::text[], $13::text[],
                                     $14::text[], $15::timestamptz[], $16::text[], $17::text[], $18::text[], $19::timestamptz[],
                                     $20::text[], $21::date[], $22::date[], $23::bool[], $24::bool[], $25::timestamptz[])
         ON CONFLICT (person_id) DO UPDATE SET
            territory = EXCLUDED.territory, territory_since = EXCLUDED.territory_since,
            previous_territory = EXCLUDED.previous_territory, household_key = EXCLUDED.household_key, role = EXCLUDED.role,
            sdd = EXCLUDED.sdd, sdd_since = EXCLUDED.sdd_since, ft_status = EXCLUDED.ft_status,
            ft_status_at = EXCLUDED.ft_status_at, ft_categorie = EXCLUDED.ft_categorie,
            ft_accompagnement = EXCLUDED.ft_accompagnement, orientation_status = EXCLUDED.orientation_status,
            orientation_type = EXCLUDED.orientation_type, oriented_at = EXCLUDED.oriented_at,
            structure_siret = EXCLUDED.structure_siret, referent_uid = EXCLUDED.referent_uid,
            referent_siret = EXCLUDED.referent_siret, referent_since = EXCLUDED.referent_since,
            contract_kind = EXCLUDED.contract_kind, contract_start = EXCLUDED.contract_start,
            contract_end = EXCLUDED.contract_end, opposition = EXCLUDED.opposition,
            consent_diagnostic = EXCLUDED.consent_diagnostic, last_contact_at = EXCLUDED.last_contact_at, updated_at = now()",
    )
    .bind(states.iter().map(|(id, _)| *id).collect::<Vec<_>>())
    .bind(column!(territory))
    .bind(column!(territory_since))
    .bind(column!(previous_territory))
    .bind(column!(household_key))
    .bind(column!(role))
    .bind(column!(sdd))
    .bind(column!(sdd_since))
    .bind(column!(ft_status))
    .bind(column!(ft_status_at))
    .bind(column!(ft_categorie))
    .bind(column!(ft_accompagnement))
    .bind(column!(orientation_status))
    .bind(column!(orientation_type))
    .bind(column!(oriented_at))
    .bind(column!(structure_siret))
    .bind(column!(referent_uid))
    .bind(column!(referent_siret))
    .bind(column!(referent_since))
    .bind(column!(contract_kind))
    .bind(column!(contract_start))
    .bind(column!(contract_end))
    .bind(column!(opposition))
    .bind(column!(consent_diagnostic))
    .bind(column!(last_contact_at))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Folds the right state of `households` again in bulk (one read, one update).
pub async fn refold_households(tx: &mut Transaction<'_, Postgres>, households: &[String]) -> Result<(), Error> {
    if households.is_empty() {
        return Ok(());
    }
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT household_key AS folded_household, {} FROM person_events WHERE household_key = ANY($1)",
        crate::apply::FACT_COLUMNS
    )))
    .bind(households)
    .fetch_all(&mut **tx)
    .await?;
    let mut facts: HashMap<String, Vec<sqlx::postgres::PgRow>> = HashMap::new();
    for row in rows {
        facts.entry(row.try_get("folded_household")?).or_default().push(row);
    }
    let mut keys = Vec::with_capacity(households.len());
    let mut states = Vec::with_capacity(households.len());
    let mut ats = Vec::with_capacity(households.len());
    let mut motifs = Vec::with_capacity(households.len());
    for household in households {
        let rows = facts.remove(household).unwrap_or_default();
        let (state, at, motif) = fold::right_state(&crate::apply::facts_of(rows)?);
        keys.push(household.clone());
        states.push(state);
        ats.push(at);
        motifs.push(motif);
    }
    sqlx::query(
        "UPDATE dossiers d SET right_state = u.state, right_state_at = u.at, right_motif = u.motif, updated_at = now()
         FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[]) AS u(household_key, state, at, motif)
         WHERE d.household_key = u.household_key",
    )
    .bind(keys)
    .bind(states)
    .bind(ats)
    .bind(motifs)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
