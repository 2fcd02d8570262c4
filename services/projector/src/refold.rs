//! Folding the touched dossiers and households at the end of a batch (docs/projector.md,
//! "Incremental fold"). A dossier and a household keep the order key of the last fact their
//! fold took (a [`Watermark`]); when every fact stored after it is new and the new facts cannot
//! change what the older ones decided ([`fold::can_fold_on`]), the fold goes on from the stored
//! row and reads only those facts. Anything else (a first fact, a late fact, a correction or
//! retraction, a merge or relink, an identity decision, a row folded before watermarks existed)
//! folds the whole history again. Each touched dossier is written once, right state and
//! `incomplete` flag included; each touched household once; the other members of a household
//! whose right state changed once more.
//!
//! With `PASSERELLE_FOLD_CHECK=1` (the test suite sets it), every fold that went on from the
//! stored state is folded again in full and compared, and the batch fails on any difference.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{Postgres, Row as _, Transaction, postgres::PgRow};
use uuid::Uuid;

use crate::{
    Error,
    apply::{FACT_COLUMNS, facts_of},
    fold::{self, Fact, RightFold, State, Watermark},
};

/// The environment variable that turns the both-ways check on.
pub const CHECK_VARIABLE: &str = "PASSERELLE_FOLD_CHECK";

/// What a batch did to the persons and households it touched.
#[derive(Default)]
pub struct Touched {
    persons: BTreeSet<Uuid>,
    households: BTreeSet<String>,
    /// Whose history changed otherwise than by new facts: folded in full.
    rewritten_persons: HashSet<Uuid>,
    rewritten_households: HashSet<String>,
    /// The new facts of the batch, by person, and the new right facts, by household.
    appended: HashMap<Uuid, HashSet<(String, String)>>,
    appended_right: HashMap<String, HashSet<(String, String)>>,
    /// Their order keys (and, for a person's, whether it is a CAF fact naming an authority):
    /// a fold known to fall back is decided before any fact is read.
    appended_keys: HashMap<Uuid, Vec<(Watermark, bool)>>,
    appended_right_keys: HashMap<String, Vec<Watermark>>,
    /// The households of the batch's facts stored waiting for their authority.
    waiting: BTreeSet<String>,
}

/// A new fact of a batch, as the refold sees it before reading anything.
pub struct NewFact<'a> {
    pub person: Uuid,
    pub source: &'a str,
    pub event_id: &'a str,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub household: Option<&'a str>,
    /// Bears on the household's right.
    pub right: bool,
    /// A CAF/MSA fact naming the person's authority.
    pub decides_territory: bool,
    /// A CAF/MSA fact stored waiting for its authority ("à affecter").
    pub waiting: bool,
}

impl Touched {
    /// A new fact of a person (and of a household, bearing on its right or not).
    pub fn appended(&mut self, fact: NewFact<'_>) {
        use chrono::SubsecRound as _;
        let id = (fact.source.to_owned(), fact.event_id.to_owned());
        // As PostgreSQL stores it: microseconds (sqlx truncates).
        let key = Watermark {
            occurred_at: fact.occurred_at.trunc_subsecs(6),
            recorded_at: fact.recorded_at.trunc_subsecs(6),
            event_id: fact.event_id.to_owned(),
        };
        self.persons.insert(fact.person);
        self.appended.entry(fact.person).or_default().insert(id.clone());
        self.appended_keys.entry(fact.person).or_default().push((key.clone(), fact.decides_territory));
        if let Some(household) = fact.household {
            if fact.waiting {
                self.waiting.insert(household.to_owned());
            }
            self.households.insert(household.to_owned());
            if fact.right {
                self.appended_right.entry(household.to_owned()).or_default().insert(id);
                self.appended_right_keys.entry(household.to_owned()).or_default().push(key);
            }
        }
    }

    /// Whether the new facts of `person` may fold on from `stored` (what [`fold::can_fold_on`]
    /// checks once they are read): none sorts at or before the watermark, and none is a CAF
    /// fact that changes the authority of the facts already folded.
    fn may_fold_on(&self, person: &Uuid, stored: &State, mark: &Watermark) -> bool {
        self.appended_keys.get(person).is_none_or(|facts| {
            facts.iter().all(|(key, decides_territory)| {
                key > mark
                    && !(*decides_territory && (stored.territory.is_none() || key.occurred_at == mark.occurred_at))
            })
        })
    }

    /// Whether the new right facts of `household` all sort after its watermark.
    fn may_fold_household_on(&self, household: &str, mark: &Watermark) -> bool {
        self.appended_right_keys.get(household).is_none_or(|keys| keys.iter().all(|key| key > mark))
    }

    /// Persons whose history changed otherwise (events moved, a decision, a correction).
    pub fn rewritten_persons(&mut self, persons: impl IntoIterator<Item = Uuid>) {
        for person in persons {
            self.persons.insert(person);
            self.rewritten_persons.insert(person);
        }
    }

    /// Households one of whose facts was corrected or retracted.
    pub fn rewritten_households(&mut self, households: impl IntoIterator<Item = String>) {
        for household in households {
            self.households.insert(household.clone());
            self.rewritten_households.insert(household);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.persons.is_empty() && self.households.is_empty()
    }
}

/// How the batch's folds went: from the stored state, or over the whole history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Folds {
    pub dossiers_on: u64,
    pub dossiers_full: u64,
    pub households_on: u64,
    pub households_full: u64,
}

/// Folds what `touched` names, under [`lock`], and writes each dossier and household once.
pub async fn refold(tx: &mut Transaction<'_, Postgres>, touched: &Touched, check: bool) -> Result<Folds, Error> {
    let mut folds = Folds::default();
    if touched.is_empty() {
        return Ok(folds);
    }
    let persons: Vec<Uuid> = touched.persons.iter().copied().collect();
    // The households the batch will write: those of its facts, those the dossiers name now, and
    // for a person whose history changed, every household of their facts (a full fold may name
    // any). A household found only after folding is locked then (below).
    let mut locked: BTreeSet<String> = touched.households.clone();
    let rewritten: Vec<Uuid> = touched.rewritten_persons.iter().copied().collect();
    locked.extend(
        sqlx::query_scalar::<_, String>(
            "SELECT household_key FROM dossiers WHERE person_id = ANY($1) AND household_key IS NOT NULL
             UNION SELECT household_key FROM person_events WHERE person_id = ANY($2) AND household_key IS NOT NULL",
        )
        .bind(&persons)
        .bind(&rewritten)
        .fetch_all(&mut **tx)
        .await?,
    );
    lock(tx, &persons, &locked.iter().cloned().collect::<Vec<_>>()).await?;
    // A fact stored waiting "à affecter" while another worker recorded ops' decision on its
    // foyer saw neither the other's write: under the foyer's lock (which the decision takes
    // before it is recorded), the committed decision is visible, and placing the fact now
    // keeps the live projection where a rebuild would end.
    if !touched.waiting.is_empty() {
        let waiting: Vec<String> = touched.waiting.iter().cloned().collect();
        passerelle_readmodel::territory::place_waiting(tx, &waiting).await?;
    }

    // A person merged into another has no dossier of their own any more.
    let merged: HashSet<Uuid> = sqlx::query_scalar(
        "SELECT person_id FROM persons WHERE person_id = ANY($1) AND merged_into IS NOT NULL AND merged_into <> person_id",
    )
    .bind(&persons)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .collect();
    let live: Vec<Uuid> = persons.iter().copied().filter(|person| !merged.contains(person)).collect();

    // Dossiers: on from the stored row where that gives the same result, in full otherwise.
    let stored = stored_dossiers(tx, &live).await?;
    let mut marks: Vec<(Uuid, Watermark)> = Vec::new();
    for person in &live {
        if touched.rewritten_persons.contains(person) {
            continue;
        }
        if let Some((state, Some(mark))) = stored.get(person)
            && touched.may_fold_on(person, state, mark)
        {
            marks.push((*person, mark.clone()));
        }
    }
    let mut later = facts_after(tx, Subject::Person, &marks).await?;
    let mut states: HashMap<Uuid, (State, Option<Watermark>)> = HashMap::new();
    let mut full: Vec<Uuid> = Vec::new();
    for person in &live {
        let on = match (stored.get(person), later.remove(&person.to_string())) {
            (Some((state, Some(mark))), Some(facts)) if !touched.rewritten_persons.contains(person) => {
                let new = touched.appended.get(person);
                let all_new_later = new.is_none_or(|new| contains_all(&facts, new));
                (all_new_later && fold::can_fold_on(state, mark, &facts)).then(|| {
                    let folded = fold::dossier_on(state.clone(), &facts);
                    let mark = fold::watermark(&facts).unwrap_or_else(|| mark.clone());
                    (folded, Some(mark))
                })
            }
            _ => None,
        };
        match on {
            Some(folded) => {
                folds.dossiers_on += 1;
                states.insert(*person, folded);
            }
            None => full.push(*person),
        }
    }
    let checking: Vec<Uuid> = if check { states.keys().copied().collect() } else { Vec::new() };
    let mut histories = facts_of_all(tx, Subject::Person, &[full.clone(), checking].concat()).await?;
    for person in states.keys().filter(|_| check) {
        let history = histories.remove(&person.to_string()).unwrap_or_default();
        let expected = (fold::dossier(&history), fold::watermark(&history));
        if states[person] != expected {
            return Err(Error::FoldMismatch(format!(
                "dossier {person}: folded on {:?}, in full {:?}",
                states[person], expected
            )));
        }
    }
    // Every event of theirs moved to another person (a key reassigned by a decision).
    let mut gone: Vec<Uuid> = merged.into_iter().collect();
    for person in full {
        match histories.remove(&person.to_string()) {
            Some(history) => {
                folds.dossiers_full += 1;
                states.insert(person, (fold::dossier(&history), fold::watermark(&history)));
            }
            None => gone.push(person),
        }
    }

    // Households: those the batch touched and those the folded dossiers belong to.
    let mut households: BTreeSet<String> = touched.households.clone();
    households.extend(states.values().filter_map(|(state, _)| state.household_key.clone()));
    let households: Vec<String> = households.into_iter().collect();
    // Out of the global order, so two batches may wait on each other: PostgreSQL detects it and
    // the batch is applied again (a deadlock is transient). Rare: a full fold naming a household
    // neither its facts nor its dossier named.
    let unlocked: Vec<String> = households.iter().filter(|household| !locked.contains(*household)).cloned().collect();
    if !unlocked.is_empty() {
        lock(tx, &[], &unlocked).await?;
    }
    let stored = stored_households(tx, &households).await?;
    let marks: Vec<(String, Watermark)> = households
        .iter()
        .filter(|household| !touched.rewritten_households.contains(*household))
        .filter_map(|household| match stored.get(household) {
            Some((_, Some(mark))) if touched.may_fold_household_on(household, mark) => {
                Some((household.clone(), mark.clone()))
            }
            _ => None,
        })
        .collect();
    let mut later = facts_after(tx, Subject::Household, &marks).await?;
    let mut rights: HashMap<String, (RightFold, Option<Watermark>)> = HashMap::new();
    let mut full: Vec<String> = Vec::new();
    for household in &households {
        let on = match (stored.get(household), later.remove(household)) {
            (Some((right, Some(mark))), Some(facts)) if !touched.rewritten_households.contains(household) => {
                let new = touched.appended_right.get(household);
                let all_new_later = new.is_none_or(|new| contains_all(&facts, new));
                let in_order =
                    facts.iter().filter(|f| f.active && f.payload.right_state().is_some()).all(|f| f.key() > *mark);
                (all_new_later && in_order).then(|| {
                    let folded = fold::right_state_on(right.clone(), &facts);
                    let mark = fold::right_watermark(&facts).unwrap_or_else(|| mark.clone());
                    (folded, Some(mark))
                })
            }
            _ => None,
        };
        match on {
            Some(folded) => {
                folds.households_on += 1;
                rights.insert(household.clone(), folded);
            }
            None => full.push(household.clone()),
        }
    }
    let checking: Vec<String> = if check { rights.keys().cloned().collect() } else { Vec::new() };
    let mut histories = facts_of_all(tx, Subject::Household, &[full.clone(), checking].concat()).await?;
    for household in rights.keys().filter(|_| check) {
        let history = histories.remove(household).unwrap_or_default();
        let expected = (fold::right_state(&history), fold::right_watermark(&history));
        if rights[household] != expected {
            return Err(Error::FoldMismatch(format!(
                "household right state: folded on {:?}, in full {:?}",
                rights[household], expected
            )));
        }
    }
    for household in full {
        let history = histories.remove(&household).unwrap_or_default();
        folds.households_full += 1;
        rights.insert(household, (fold::right_state(&history), fold::right_watermark(&history)));
    }

    if !gone.is_empty() {
        sqlx::query("DELETE FROM dossiers WHERE person_id = ANY($1)").bind(&gone).execute(&mut **tx).await?;
    }
    write_households(tx, &rights).await?;
    write_dossiers(tx, &states, &rights).await?;
    spread_rights(tx, &rights).await?;
    Ok(folds)
}

/// Whether `facts` hold every one of `ids` (a new fact missing sorts at or before the watermark:
/// a late fact).
fn contains_all(facts: &[Fact], ids: &HashSet<(String, String)>) -> bool {
    let present: HashSet<(&str, &str)> = facts.iter().map(|f| (f.source.as_str(), f.event_id.as_str())).collect();
    ids.iter().all(|(source, id)| present.contains(&(source.as_str(), id.as_str())))
}

/// Serialises the refolds of the same persons and households by concurrent workers: a
/// household's members (and a person's keys) may sit in different partitions, so two workers
/// can refold one household at once, each without the other's uncommitted event, and the later
/// write would win. Before refolding, a batch takes a transaction-scoped advisory lock on every
/// household it may refold, then on every person, each set in sorted order: one global order,
/// so two batches never wait on each other in a cycle; and every dossier or household row is
/// written only under these locks. A worker that waits reads, once it has the locks, what the
/// other committed.
pub async fn lock(tx: &mut Transaction<'_, Postgres>, persons: &[Uuid], households: &[String]) -> Result<(), Error> {
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
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Takes the advisory lock of one household ahead of a batch's refold (see [`lock`]).
pub async fn lock_household(tx: &mut Transaction<'_, Postgres>, household: &str) -> Result<(), Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 7301))").bind(household).execute(&mut **tx).await?;
    Ok(())
}

/// Whose facts a read gathers: a person's own, or every fact that names a household.
#[derive(Clone, Copy)]
enum Subject {
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
async fn facts_after<K: ToString>(
    tx: &mut Transaction<'_, Postgres>,
    subject: Subject,
    marks: &[(K, Watermark)],
) -> Result<HashMap<String, Vec<Fact>>, Error> {
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
    .fetch_all(&mut **tx)
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
async fn facts_of_all<K: ToString>(
    tx: &mut Transaction<'_, Postgres>,
    subject: Subject,
    subjects: &[K],
) -> Result<HashMap<String, Vec<Fact>>, Error> {
    if subjects.is_empty() {
        return Ok(HashMap::new());
    }
    let (column, kind) = subject.column();
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT e.{column}::text AS folded_subject, {FACT_COLUMNS} FROM person_events e WHERE e.{column} = ANY($1::text[]::{kind}[])"
    )))
    .bind(subjects.iter().map(ToString::to_string).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await?;
    group(rows)?.into_iter().map(|(subject, rows)| Ok((subject, facts_of(rows)?))).collect()
}

fn group(rows: Vec<PgRow>) -> Result<HashMap<String, Vec<PgRow>>, Error> {
    let mut grouped: HashMap<String, Vec<PgRow>> = HashMap::new();
    for row in rows {
        grouped.entry(row.try_get("folded_subject")?).or_default().push(row);
    }
    Ok(grouped)
}

fn watermark_of(row: &PgRow) -> Result<Option<Watermark>, Error> {
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
async fn stored_dossiers(
    tx: &mut Transaction<'_, Postgres>,
    persons: &[Uuid],
) -> Result<HashMap<Uuid, (State, Option<Watermark>)>, Error> {
    let rows = sqlx::query(
        "SELECT person_id, territory, territory_since, previous_territory, household_key, role, sdd, sdd_since,
                ft_status, ft_status_at, ft_categorie, ft_accompagnement, orientation_status, orientation_type,
                oriented_at, structure_siret, referent_uid, referent_siret, referent_since, contract_kind,
                contract_start, contract_end, opposition, consent_diagnostic, last_contact_at,
                folded_occurred_at, folded_recorded_at, folded_event_id
         FROM dossiers WHERE person_id = ANY($1)",
    )
    .bind(persons)
    .fetch_all(&mut **tx)
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
async fn stored_households(
    tx: &mut Transaction<'_, Postgres>,
    households: &[String],
) -> Result<HashMap<String, (RightFold, Option<Watermark>)>, Error> {
    let rows = sqlx::query(
        "SELECT household_key, right_state, right_state_at, right_motif, folded_occurred_at, folded_recorded_at, folded_event_id
         FROM households WHERE household_key = ANY($1)",
    )
    .bind(households)
    .fetch_all(&mut **tx)
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

/// One upsert for the households, in key order (concurrent upserts lock rows in one order).
async fn write_households(
    tx: &mut Transaction<'_, Postgres>,
    rights: &HashMap<String, (RightFold, Option<Watermark>)>,
) -> Result<(), Error> {
    if rights.is_empty() {
        return Ok(());
    }
    let mut keys: Vec<&String> = rights.keys().collect();
    keys.sort();
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
    .bind(keys.iter().map(|key| (*key).clone()).collect::<Vec<_>>())
    .bind(keys.iter().map(|key| rights[*key].0.0.clone()).collect::<Vec<_>>())
    .bind(keys.iter().map(|key| rights[*key].0.1).collect::<Vec<_>>())
    .bind(keys.iter().map(|key| rights[*key].0.2.clone()).collect::<Vec<_>>())
    .bind(occurred)
    .bind(recorded)
    .bind(ids)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The members of `rights`' households the batch did not fold carry their household's right
/// state too (once the folded ones are written, which already carry it).
async fn spread_rights(
    tx: &mut Transaction<'_, Postgres>,
    rights: &HashMap<String, (RightFold, Option<Watermark>)>,
) -> Result<(), Error> {
    if rights.is_empty() {
        return Ok(());
    }
    let mut keys: Vec<&String> = rights.keys().collect();
    keys.sort();
    sqlx::query(
        "UPDATE dossiers d SET right_state = u.state, right_state_at = u.at, right_motif = u.motif, updated_at = now()
         FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[]) AS u(household_key, state, at, motif)
         WHERE d.household_key = u.household_key
           AND (d.right_state, d.right_state_at, d.right_motif) IS DISTINCT FROM (u.state, u.at, u.motif)",
    )
    .bind(keys.iter().map(|key| (*key).clone()).collect::<Vec<_>>())
    .bind(keys.iter().map(|key| rights[*key].0.0.clone()).collect::<Vec<_>>())
    .bind(keys.iter().map(|key| rights[*key].0.1).collect::<Vec<_>>())
    .bind(keys.iter().map(|key| rights[*key].0.2.clone()).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One upsert for the dossiers, in person order: every section, the household's right state,
/// the watermark, and `incomplete` (a dead letter about the person, known then or by one of
/// their subject keys, waits to be replayed).
async fn write_dossiers(
    tx: &mut Transaction<'_, Postgres>,
    states: &HashMap<Uuid, (State, Option<Watermark>)>,
    rights: &HashMap<String, (RightFold, Option<Watermark>)>,
) -> Result<(), Error> {
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
    .execute(&mut **tx)
    .await?;
    Ok(())
}
