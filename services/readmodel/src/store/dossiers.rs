//! The folded read models: dossiers and households' right state, with the watermark of the last
//! fact each fold took, the facts they are folded from (`person_events`), and the advisory locks
//! that serialise concurrent refolds. What to fold and how is the projector's (`refold.rs`) and
//! [`crate::fold`]'s; how it is read and written is here.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use passerelle_domain::event::Payload;
use sqlx::{PgConnection, Row as _, postgres::PgRow};
use uuid::Uuid;

use crate::fold::{Fact, RightFold, State, Watermark};

/// The households a batch's refold may write besides those of its facts: those the dossiers of
/// `persons` name now, and every household of the facts of `rewritten` (a full fold may name any).
pub async fn households_of(
    conn: &mut PgConnection,
    persons: &[Uuid],
    rewritten: &[Uuid],
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT household_key FROM dossiers WHERE person_id = ANY($1) AND household_key IS NOT NULL
         UNION SELECT household_key FROM person_events WHERE person_id = ANY($2) AND household_key IS NOT NULL",
    )
    .bind(persons)
    .bind(rewritten)
    .fetch_all(conn)
    .await
}

/// Which of `persons` were merged into another (they have no dossier of their own any more).
pub async fn merged_among(conn: &mut PgConnection, persons: &[Uuid]) -> Result<HashSet<Uuid>, sqlx::Error> {
    let merged: Vec<Uuid> = sqlx::query_scalar(
        "SELECT person_id FROM persons WHERE person_id = ANY($1) AND merged_into IS NOT NULL AND merged_into <> person_id",
    )
    .bind(persons)
    .fetch_all(conn)
    .await?;
    Ok(merged.into_iter().collect())
}

/// Deletes the dossiers of `persons` (merged into another, or every event of theirs moved).
pub async fn delete(conn: &mut PgConnection, persons: &[Uuid]) -> Result<(), sqlx::Error> {
    if !persons.is_empty() {
        sqlx::query("DELETE FROM dossiers WHERE person_id = ANY($1)").bind(persons).execute(conn).await?;
    }
    Ok(())
}

/// Serialises the refolds of the same persons and households by concurrent workers: a
/// household's members (and a person's keys) may sit in different partitions, so two workers
/// can refold one household at once, each without the other's uncommitted event, and the later
/// write would win. Before refolding, a batch takes a transaction-scoped advisory lock on every
/// household it may refold, then on every person, each set in sorted order: one global order,
/// so two batches never wait on each other in a cycle; and every dossier or household row is
/// written only under these locks. A worker that waits reads, once it has the locks, what the
/// other committed.
pub async fn lock(conn: &mut PgConnection, persons: &[Uuid], households: &[String]) -> Result<(), sqlx::Error> {
    let mut all_households: Vec<String> = households.to_vec();
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
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Takes the advisory lock of one household ahead of a batch's refold (see [`lock`]).
pub async fn lock_household(conn: &mut PgConnection, household: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7301))").bind(household).execute(&mut *conn).await?;
    Ok(())
}

/// Whose facts a read gathers: a person's own, or every fact that names a household.
#[derive(Clone, Copy)]
pub enum Subject {
    Person,
    Household,
}

impl Subject {
    /// The column the facts are gathered by (indexed: it must be compared as it is, not cast),
    /// and its SQL type.
    fn column(self) -> (&'static str, &'static str) {
        match self {
            Subject::Person => ("person_id", "uuid"),
            Subject::Household => ("household_key", "text"),
        }
    }
}

/// The stored facts of each subject that sort after its watermark, by subject (as text).
pub async fn facts_after<K: ToString>(
    conn: &mut PgConnection,
    subject: Subject,
    marks: &[(K, Watermark)],
) -> Result<HashMap<String, Vec<Fact>>, sqlx::Error> {
    if marks.is_empty() {
        return Ok(HashMap::new());
    }
    let (column, kind) = subject.column();
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT w.subject::text AS folded_subject, {FACT_COLUMNS} FROM person_events e
         JOIN unnest($1::text[]::{kind}[], $2::timestamptz[], $3::timestamptz[], $4::text[]) AS w(subject, mark_occurred, mark_recorded, mark_event)
           ON e.{column} = w.subject
         WHERE (e.occurred_at, e.recorded_at, e.event_id COLLATE \"C\") > (w.mark_occurred, w.mark_recorded, w.mark_event COLLATE \"C\")"
    )))
    .bind(marks.iter().map(|(subject, _)| subject.to_string()).collect::<Vec<_>>())
    .bind(marks.iter().map(|(_, mark)| mark.occurred_at).collect::<Vec<_>>())
    .bind(marks.iter().map(|(_, mark)| mark.recorded_at).collect::<Vec<_>>())
    .bind(marks.iter().map(|(_, mark)| mark.event_id.clone()).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    // Every subject with a watermark gets an entry, empty when nothing sorts after it.
    let mut by_subject: HashMap<String, Vec<Fact>> =
        marks.iter().map(|(subject, _)| (subject.to_string(), Vec::new())).collect();
    for (subject, rows) in group(rows)? {
        by_subject.insert(subject, facts_of(rows)?);
    }
    Ok(by_subject)
}

/// Every stored fact of each subject, by subject (as text); a subject without any has no entry.
pub async fn facts_of_all<K: ToString>(
    conn: &mut PgConnection,
    subject: Subject,
    subjects: &[K],
) -> Result<HashMap<String, Vec<Fact>>, sqlx::Error> {
    if subjects.is_empty() {
        return Ok(HashMap::new());
    }
    let (column, kind) = subject.column();
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT e.{column}::text AS folded_subject, {FACT_COLUMNS} FROM person_events e WHERE e.{column} = ANY($1::text[]::{kind}[])"
    )))
    .bind(subjects.iter().map(ToString::to_string).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    group(rows)?.into_iter().map(|(subject, rows)| Ok((subject, facts_of(rows)?))).collect()
}

fn group(rows: Vec<PgRow>) -> Result<HashMap<String, Vec<PgRow>>, sqlx::Error> {
    let mut grouped: HashMap<String, Vec<PgRow>> = HashMap::new();
    for row in rows {
        grouped.entry(row.try_get("folded_subject")?).or_default().push(row);
    }
    Ok(grouped)
}

fn watermark_of(row: &PgRow) -> Result<Option<Watermark>, sqlx::Error> {
    let occurred_at: Option<DateTime<Utc>> = row.try_get("folded_occurred_at")?;
    let recorded_at: Option<DateTime<Utc>> = row.try_get("folded_recorded_at")?;
    let event_id: Option<String> = row.try_get("folded_event_id")?;
    Ok(match (occurred_at, recorded_at, event_id) {
        (Some(occurred_at), Some(recorded_at), Some(event_id)) => {
            Some(Watermark { occurred_at, recorded_at, event_id })
        }
        _ => None,
    })
}

/// The stored dossiers of `persons`, as the fold's state, with their watermark.
pub async fn stored_dossiers(
    conn: &mut PgConnection,
    persons: &[Uuid],
) -> Result<HashMap<Uuid, (State, Option<Watermark>)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT person_id, territory, territory_since, previous_territory, household_key, role, sdd, sdd_since,
                ft_status, ft_status_at, ft_categorie, ft_accompagnement, orientation_status, orientation_type,
                oriented_at, structure_siret, referent_uid, referent_siret, referent_since, contract_kind,
                contract_start, contract_end, opposition, consent_diagnostic, last_contact_at,
                folded_occurred_at, folded_recorded_at, folded_event_id
         FROM dossiers WHERE person_id = ANY($1)",
    )
    .bind(persons)
    .fetch_all(&mut *conn)
    .await?;
    let mut stored = HashMap::with_capacity(rows.len());
    for row in rows {
        let state = State {
            territory: row.try_get("territory")?,
            territory_since: row.try_get("territory_since")?,
            previous_territory: row.try_get("previous_territory")?,
            household_key: row.try_get("household_key")?,
            role: row.try_get("role")?,
            // The right state is the household's, folded apart.
            right_state: None,
            right_state_at: None,
            right_motif: None,
            sdd: row.try_get("sdd")?,
            sdd_since: row.try_get("sdd_since")?,
            ft_status: row.try_get("ft_status")?,
            ft_status_at: row.try_get("ft_status_at")?,
            ft_categorie: row.try_get("ft_categorie")?,
            ft_accompagnement: row.try_get("ft_accompagnement")?,
            orientation_status: row.try_get("orientation_status")?,
            orientation_type: row.try_get("orientation_type")?,
            oriented_at: row.try_get("oriented_at")?,
            structure_siret: row.try_get("structure_siret")?,
            referent_uid: row.try_get("referent_uid")?,
            referent_siret: row.try_get("referent_siret")?,
            referent_since: row.try_get("referent_since")?,
            contract_kind: row.try_get("contract_kind")?,
            contract_start: row.try_get::<Option<NaiveDate>, _>("contract_start")?,
            contract_end: row.try_get::<Option<NaiveDate>, _>("contract_end")?,
            opposition: row.try_get("opposition")?,
            consent_diagnostic: row.try_get("consent_diagnostic")?,
            last_contact_at: row.try_get("last_contact_at")?,
        };
        stored.insert(row.try_get("person_id")?, (state, watermark_of(&row)?));
    }
    Ok(stored)
}

/// The stored right state of `households`, with its watermark.
pub async fn stored_households(
    conn: &mut PgConnection,
    households: &[String],
) -> Result<HashMap<String, (RightFold, Option<Watermark>)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT household_key, right_state, right_state_at, right_motif, folded_occurred_at, folded_recorded_at, folded_event_id
         FROM households WHERE household_key = ANY($1)",
    )
    .bind(households)
    .fetch_all(&mut *conn)
    .await?;
    let mut stored = HashMap::with_capacity(rows.len());
    for row in rows {
        let right = (row.try_get("right_state")?, row.try_get("right_state_at")?, row.try_get("right_motif")?);
        stored.insert(row.try_get("household_key")?, (right, watermark_of(&row)?));
    }
    Ok(stored)
}

/// Watermarks as three columns, for `unnest`.
type MarkColumns = (Vec<Option<DateTime<Utc>>>, Vec<Option<DateTime<Utc>>>, Vec<Option<String>>);

fn split_marks<'a>(marks: impl Iterator<Item = &'a Option<Watermark>>) -> MarkColumns {
    let mut occurred = Vec::new();
    let mut recorded = Vec::new();
    let mut ids = Vec::new();
    for mark in marks {
        occurred.push(mark.as_ref().map(|m| m.occurred_at));
        recorded.push(mark.as_ref().map(|m| m.recorded_at));
        ids.push(mark.as_ref().map(|m| m.event_id.clone()));
    }
    (occurred, recorded, ids)
}

/// The households of `rights` in key order (concurrent writes lock rows in one order), and their
/// right state as three columns, for `unnest`.
type RightColumns<'a> = (Vec<&'a String>, Vec<Option<String>>, Vec<Option<DateTime<Utc>>>, Vec<Option<String>>);

fn right_columns(rights: &HashMap<String, (RightFold, Option<Watermark>)>) -> RightColumns<'_> {
    let mut keys: Vec<&String> = rights.keys().collect();
    keys.sort();
    let states = keys.iter().map(|key| rights[*key].0.0.clone()).collect();
    let at = keys.iter().map(|key| rights[*key].0.1).collect();
    let motifs = keys.iter().map(|key| rights[*key].0.2.clone()).collect();
    (keys, states, at, motifs)
}

/// One upsert for the households, in key order.
pub async fn write_households(
    conn: &mut PgConnection,
    rights: &HashMap<String, (RightFold, Option<Watermark>)>,
) -> Result<(), sqlx::Error> {
    if rights.is_empty() {
        return Ok(());
    }
    let (keys, states, at, motifs) = right_columns(rights);
    let (occurred, recorded, ids) = split_marks(keys.iter().map(|key| &rights[*key].1));
    sqlx::query(
        "INSERT INTO households (household_key, right_state, right_state_at, right_motif,
                                 folded_occurred_at, folded_recorded_at, folded_event_id, updated_at)
         SELECT *, now() FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[],
                                     $5::timestamptz[], $6::timestamptz[], $7::text[])
         ON CONFLICT (household_key) DO UPDATE SET
            right_state = EXCLUDED.right_state, right_state_at = EXCLUDED.right_state_at,
            right_motif = EXCLUDED.right_motif, folded_occurred_at = EXCLUDED.folded_occurred_at,
            folded_recorded_at = EXCLUDED.folded_recorded_at, folded_event_id = EXCLUDED.folded_event_id,
            updated_at = now()",
    )
    .bind(keys)
    .bind(states)
    .bind(at)
    .bind(motifs)
    .bind(occurred)
    .bind(recorded)
    .bind(ids)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The members of `rights`' households the batch did not fold carry their household's right
/// state too (once the folded ones are written, which already carry it).
pub async fn spread_rights(
    conn: &mut PgConnection,
    rights: &HashMap<String, (RightFold, Option<Watermark>)>,
) -> Result<(), sqlx::Error> {
    if rights.is_empty() {
        return Ok(());
    }
    let (keys, states, at, motifs) = right_columns(rights);
    sqlx::query(
        "UPDATE dossiers d SET right_state = u.state, right_state_at = u.at, right_motif = u.motif, updated_at = now()
         FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[]) AS u(household_key, state, at, motif)
         WHERE d.household_key = u.household_key
           AND (d.right_state, d.right_state_at, d.right_motif) IS DISTINCT FROM (u.state, u.at, u.motif)",
    )
    .bind(keys)
    .bind(states)
    .bind(at)
    .bind(motifs)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// One upsert for the dossiers, in person order: every section, the household's right state,
/// the watermark, and `incomplete` (a dead letter about the person, known then or by one of
/// their subject keys, waits to be replayed).
pub async fn write_dossiers(
    conn: &mut PgConnection,
    states: &HashMap<Uuid, (State, Option<Watermark>)>,
    rights: &HashMap<String, (RightFold, Option<Watermark>)>,
) -> Result<(), sqlx::Error> {
    if states.is_empty() {
        return Ok(());
    }
    let mut persons: Vec<Uuid> = states.keys().copied().collect();
    persons.sort();
    let ordered: Vec<&State> = persons.iter().map(|person| &states[person].0).collect();
    let right = |state: &State| -> RightFold {
        state
            .household_key
            .as_ref()
            .and_then(|household| rights.get(household))
            .map(|(right, _)| right.clone())
            .unwrap_or_default()
    };
    let rights: Vec<RightFold> = ordered.iter().map(|state| right(state)).collect();
    let (occurred, recorded, ids) = split_marks(persons.iter().map(|person| &states[person].1));
    macro_rules! column {
        ($field:ident) => {
            ordered.iter().map(|state| state.$field.clone()).collect::<Vec<_>>()
        };
    }
    sqlx::query(
        "INSERT INTO dossiers (person_id, territory, territory_since, previous_territory, household_key, role, sdd, sdd_since,
                               ft_status, ft_status_at, ft_categorie, ft_accompagnement, orientation_status, orientation_type,
                               oriented_at, structure_siret, referent_uid, referent_siret, referent_since, contract_kind,
                               contract_start, contract_end, opposition, consent_diagnostic, last_contact_at,
                               right_state, right_state_at, right_motif, folded_occurred_at, folded_recorded_at,
                               folded_event_id, incomplete, updated_at)
         SELECT u.*, EXISTS (
                    SELECT 1 FROM dead_letters x WHERE x.replayed_at IS NULL AND (x.person_id = u.person_id OR x.subject_key IN (
                        SELECT subject_key FROM subject_links WHERE person_id = u.person_id))),
                now()
         FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::bool[],
                     $8::timestamptz[], $9::text[], $10::timestamptz[], $11::text[], $12::text[], $13::text[],
                     $14::text[], $15::timestamptz[], $16::text[], $17::text[], $18::text[], $19::timestamptz[],
                     $20::text[], $21::date[], $22::date[], $23::bool[], $24::bool[], $25::timestamptz[],
                     $26::text[], $27::timestamptz[], $28::text[], $29::timestamptz[], $30::timestamptz[], $31::text[])
           AS u(person_id, territory, territory_since, previous_territory, household_key, role, sdd, sdd_since,
                ft_status, ft_status_at, ft_categorie, ft_accompagnement, orientation_status, orientation_type,
                oriented_at, structure_siret, referent_uid, referent_siret, referent_since, contract_kind,
                contract_start, contract_end, opposition, consent_diagnostic, last_contact_at,
                right_state, right_state_at, right_motif, folded_occurred_at, folded_recorded_at, folded_event_id)
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
            consent_diagnostic = EXCLUDED.consent_diagnostic, last_contact_at = EXCLUDED.last_contact_at,
            right_state = EXCLUDED.right_state, right_state_at = EXCLUDED.right_state_at,
            right_motif = EXCLUDED.right_motif, folded_occurred_at = EXCLUDED.folded_occurred_at,
            folded_recorded_at = EXCLUDED.folded_recorded_at, folded_event_id = EXCLUDED.folded_event_id,
            incomplete = EXCLUDED.incomplete, updated_at = now()",
    )
    .bind(&persons)
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
    .bind(rights.iter().map(|right| right.0.clone()).collect::<Vec<_>>())
    .bind(rights.iter().map(|right| right.1).collect::<Vec<_>>())
    .bind(rights.iter().map(|right| right.2.clone()).collect::<Vec<_>>())
    .bind(occurred)
    .bind(recorded)
    .bind(ids)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn facts_of(rows: Vec<PgRow>) -> Result<Vec<Fact>, sqlx::Error> {
    rows.into_iter()
        .map(|row| {
            let text: &str = row.try_get("fact")?;
            let payload: Payload = serde_json::from_str(text).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
            let superseded: Option<String> = row.try_get("superseded_by")?;
            let retracted: Option<String> = row.try_get("retracted_by")?;
            let role: Option<String> = row.try_get("role")?;
            let source: String = row.try_get("source")?;
            Ok(Fact {
                by_person: source == passerelle_domain::event::PERSON_SOURCE,
                source,
                event_id: row.try_get("event_id")?,
                family: row.try_get("family")?,
                occurred_at: row.try_get("occurred_at")?,
                recorded_at: row.try_get("recorded_at")?,
                territory: row.try_get("territory")?,
                household_key: row.try_get("household_key")?,
                role,
                active: superseded.is_none() && retracted.is_none() && !matches!(payload, Payload::Retraction { .. }),
                payload,
            })
        })
        .collect()
}

const FACT_COLUMNS: &str = "source, event_id, family, occurred_at, recorded_at, territory, household_key, role, fact::text AS fact, superseded_by, retracted_by";
