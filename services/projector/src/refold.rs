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

use chrono::{DateTime, Utc};
use passerelle_readmodel::{
    fold::{self, Fact, RightFold, State, Watermark},
    store::dossiers::{self as table, Subject},
};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::Error;

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
    /// Each new fact: its subject key and the person it was stored with.
    placed: Vec<Placed>,
}

/// Where a new fact of the batch was stored.
struct Placed {
    subject: String,
    person: Uuid,
    source: String,
    event_id: String,
}

/// A new fact of a batch, as the refold sees it before reading anything.
pub struct NewFact<'a> {
    pub person: Uuid,
    pub source: &'a str,
    pub event_id: &'a str,
    /// The fact's subject key: the fact belongs with the person it is linked to.
    pub subject: &'a str,
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
        self.placed.push(Placed {
            subject: fact.subject.to_owned(),
            person: fact.person,
            source: fact.source.to_owned(),
            event_id: fact.event_id.to_owned(),
        });
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

/// Folds what `touched` names, under [`table::lock`], and writes each dossier and household once.
pub async fn refold(tx: &mut PgConnection, touched: &mut Touched, check: bool) -> Result<Folds, Error> {
    let mut folds = Folds::default();
    if touched.is_empty() {
        return Ok(folds);
    }
    let mut persons: Vec<Uuid> = touched.persons.iter().copied().collect();
    // The households the batch will write: those of its facts, those the dossiers name now, and
    // for a person whose history changed, every household of their facts (a full fold may name
    // any). A household found only after folding is locked then (below).
    let mut locked: BTreeSet<String> = touched.households.clone();
    let rewritten: Vec<Uuid> = touched.rewritten_persons.iter().copied().collect();
    locked.extend(table::households_of(tx, &persons, &rewritten).await?);
    table::lock(tx, &persons, &locked.iter().cloned().collect::<Vec<_>>()).await?;
    // Under the locks, an identity change another worker committed is visible; one it makes
    // from here waits for this batch (a merge or relink takes the lock of the person it moves
    // facts from). A fact this batch stored with a person another worker merged or relinked
    // meanwhile, which that worker could not see, follows its subject key now.
    let moved = follow_identity_changes(tx, touched).await?;
    if !moved.is_empty() {
        table::lock(tx, &moved, &[]).await?;
        touched.rewritten_persons(moved);
        persons = touched.persons.iter().copied().collect();
    }
    // A fact stored waiting "à affecter" while another worker recorded ops' decision on its
    // foyer saw neither the other's write: under the foyer's lock (which the decision takes
    // before it is recorded), the committed decision is visible, and placing the fact now
    // keeps the live projection where a rebuild would end.
    if !touched.waiting.is_empty() {
        let waiting: Vec<String> = touched.waiting.iter().cloned().collect();
        passerelle_readmodel::territory::place_waiting(tx, &waiting).await?;
    }

    // A person merged into another has no dossier of their own any more.
    let merged = table::merged_among(tx, &persons).await?;
    let live: Vec<Uuid> = persons.iter().copied().filter(|person| !merged.contains(person)).collect();

    // Dossiers: on from the stored row where that gives the same result, in full otherwise.
    let stored = table::stored_dossiers(tx, &live).await?;
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
    let mut later = table::facts_after(tx, Subject::Person, &marks).await?;
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
    let mut histories = table::facts_of_all(tx, Subject::Person, &[full.clone(), checking].concat()).await?;
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
        table::lock(tx, &[], &unlocked).await?;
    }
    let stored = table::stored_households(tx, &households).await?;
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
    let mut later = table::facts_after(tx, Subject::Household, &marks).await?;
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
    let mut histories = table::facts_of_all(tx, Subject::Household, &[full.clone(), checking].concat()).await?;
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

    table::delete(tx, &gone).await?;
    table::write_households(tx, &rights).await?;
    table::write_dossiers(tx, &states, &rights).await?;
    table::spread_rights(tx, &rights).await?;
    Ok(folds)
}

/// Moves the batch's facts whose subject key now leads to another person than the one they
/// were stored with (another worker merged or relinked meanwhile) to that person; returns the
/// persons whose history changed so. A destination is locked before anything moves to it, and
/// the links are read again once it is: a chain of changes (a merge into a person itself being
/// merged) is followed to its end. One read of the links of the batch's subject keys in the
/// common case, where nothing moves.
async fn follow_identity_changes(tx: &mut PgConnection, touched: &Touched) -> Result<Vec<Uuid>, Error> {
    if touched.placed.is_empty() {
        return Ok(Vec::new());
    }
    let mut subjects: Vec<&str> = touched.placed.iter().map(|placed| placed.subject.as_str()).collect();
    subjects.sort_unstable();
    subjects.dedup();
    // Where each fact is now, and the persons this batch holds the lock of.
    let mut current: Vec<Uuid> = touched.placed.iter().map(|placed| placed.person).collect();
    let mut locked: HashSet<Uuid> = touched.persons.iter().copied().collect();
    let mut changed = Vec::new();
    loop {
        let links = passerelle_readmodel::store::identity::links_of(tx, &subjects).await?;
        let wanted: Vec<(usize, Uuid)> = touched
            .placed
            .iter()
            .enumerate()
            .filter_map(|(index, placed)| {
                links.get(&placed.subject).filter(|now| **now != current[index]).map(|now| (index, *now))
            })
            .collect();
        if wanted.is_empty() {
            break;
        }
        let mut unlocked: Vec<Uuid> = wanted.iter().map(|(_, to)| *to).filter(|to| !locked.contains(to)).collect();
        if !unlocked.is_empty() {
            // Out of the global order: a deadlock is possible, detected and retried (rare:
            // identity changes racing each other).
            unlocked.sort_unstable();
            unlocked.dedup();
            table::lock(tx, &unlocked, &[]).await?;
            locked.extend(unlocked);
            continue;
        }
        for (index, to) in wanted {
            let (placed, from) = (&touched.placed[index], current[index]);
            if passerelle_readmodel::store::events::move_event(tx, &placed.source, &placed.event_id, from, to).await? {
                tracing::info!(%from, %to, "a fact follows an identity change another worker made meanwhile");
                changed.extend([from, to]);
            }
            current[index] = to;
        }
    }
    changed.sort_unstable();
    changed.dedup();
    Ok(changed)
}

/// Whether `facts` hold every one of `ids` (a new fact missing sorts at or before the watermark:
/// a late fact).
fn contains_all(facts: &[Fact], ids: &HashSet<(String, String)>) -> bool {
    let present: HashSet<(&str, &str)> = facts.iter().map(|f| (f.source.as_str(), f.event_id.as_str())).collect();
    ids.iter().all(|(source, id)| present.contains(&(source.as_str(), id.as_str())))
}
