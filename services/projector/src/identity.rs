//! Identity resolution (docs/projector.md, "Identity"): which person an event is about, from
//! the subject keys it names. Two paths give the same answer:
//!
//! - the fast path ([`fast_identity`]): decided from what the batch read once ([`Known`]), its
//!   new persons and links queued ([`crate::store::Pending`]), no round trip;
//! - the full path ([`resolve_identity`]): anything out of the ordinary (a key linked to another
//!   person, a pin, a person to mint that exists already), statement by statement, with merges
//!   and contests.
//!
//! Human decisions on contested keys are applied here too ([`apply_decision`]). The tables are
//! `passerelle_readmodel::store::identity`'s.

use std::collections::{HashMap, HashSet};

use passerelle_domain::event::SubjectKey;
use passerelle_eventlog::identity::{Decision, IdentityDecision};
use passerelle_readmodel::store::identity::{self as table, Conflict, Decided, NewLink};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{Error, store::Pending};

/// The batch's view of identity state, valid until a per-event path changes it.
#[derive(Debug, Default)]
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
    pub async fn read(conn: &mut PgConnection, keys: Vec<String>, candidates: Vec<Uuid>) -> Result<Self, Error> {
        let mut known = Known { keys, candidates, ..Known::default() };
        known.refresh(conn).await?;
        Ok(known)
    }

    /// Reads it all again (after a per-event path changed links or persons).
    pub async fn refresh(&mut self, conn: &mut PgConnection) -> Result<(), Error> {
        let names: Vec<&str> = self.keys.iter().map(String::as_str).collect();
        self.links = table::links_of(conn, &names).await?;
        self.pinned = table::pinned_among(conn, &self.keys).await?;
        self.existing = table::existing_among(conn, &self.candidates).await?;
        Ok(())
    }
}

/// The keys identity resolution considers, strongest first (the subject when none is linked).
pub fn identity_names<'a>(keys: &'a [SubjectKey], subject: &'a SubjectKey) -> Vec<&'a str> {
    let mut names: Vec<&str> = keys.iter().map(SubjectKey::as_str).collect();
    if names.is_empty() {
        names.push(subject.as_str());
    }
    names.sort_by(|a, b| passerelle_readmodel::key_strength(a).cmp(&passerelle_readmodel::key_strength(b)));
    names.dedup();
    names
}

/// Identity resolution without a round trip, when the batch's knowledge decides it as
/// [`resolve_identity`] would: no key pinned, and either every linked key already belongs to
/// the person of the strongest key (the others are linked to them), or no key is linked and the
/// strongest key mints a person that does not exist yet. `None`: take the full path.
pub fn fast_identity(
    known: &mut Known,
    pending: &mut Pending,
    linked_keys: &[SubjectKey],
    subject: &SubjectKey,
    via: &str,
) -> Option<Uuid> {
    let names = identity_names(linked_keys, subject);
    if names.iter().any(|key| known.pinned.contains(*key)) {
        return None;
    }
    let head = names[0];
    let person = match known.links.get(head) {
        Some(person) => {
            if names.iter().any(|key| known.links.get(*key).is_some_and(|other| other != person)) {
                return None;
            }
            *person
        }
        None => {
            if names.iter().any(|key| known.links.contains_key(*key)) {
                return None;
            }
            let minted = passerelle_readmodel::person_id_for(head);
            if known.existing.contains(&minted) {
                return None;
            }
            known.existing.insert(minted);
            pending.persons.push((minted, head.to_owned()));
            minted
        }
    };
    for key in &names {
        if !known.links.contains_key(*key) {
            known.links.insert((*key).to_owned(), person);
            pending.links.push(NewLink { subject_key: (*key).to_owned(), person_id: person, via: via.to_owned() });
        }
    }
    // The event's own person: that of its subject key.
    Some(known.links.get(subject.as_str()).copied().unwrap_or(person))
}

/// Persons whose dossier must be folded again after identity resolution moved events.
pub type Moved = Vec<Uuid>;

/// The full path: the person of the event's strongest linked key, or the person minted from
/// that key (a deterministic id). Unlinked keys are linked to them. A key linked to another
/// person either reveals that the two are one (no exclusive key of theirs differs: merged into
/// the one with the stronger identity key, the other redirecting) or contests a link (two NIRs
/// claim one France Travail id): recorded for a human, never merged; meanwhile the key stays
/// with the smaller person id, a rule that does not depend on arrival order. A human decision
/// (identity pin) overrides both rules. `via` names the event (`source/event_id`).
pub async fn resolve_identity(
    conn: &mut PgConnection,
    linked_keys: &[SubjectKey],
    subject: &SubjectKey,
    source: &str,
    event_id: &str,
) -> Result<(Uuid, Moved), Error> {
    let names = identity_names(linked_keys, subject);
    let mut links = table::links_of(conn, &names).await?;
    let mut pins: HashMap<String, Uuid> = HashMap::new();
    for (key, owner_key) in table::pins_of(conn, &names).await? {
        pins.insert(key, table::ensure_person(conn, &owner_key).await?);
    }
    let head = names[0];
    let mut target = match (links.get(head), pins.get(head)) {
        (Some(person), _) | (None, Some(person)) => *person,
        (None, None) => table::ensure_person(conn, head).await?,
    };
    let via = format!("{source}/{event_id}");
    for key in &names {
        if !links.contains_key(*key) {
            let owner = pins.get(*key).copied().unwrap_or(target);
            // Another worker may have linked the key meanwhile (its event sits in another
            // partition): its link counts as one read before, and becomes a merge or a contest
            // below, never a silent split of one person in two.
            let holder = table::link_unless_linked(conn, key, owner, &via).await?;
            if holder != owner {
                links.insert((*key).to_owned(), holder);
            }
        }
    }
    let mut moved = Vec::new();
    for key in &names {
        let Some(holder) = links.get(*key) else { continue };
        let holder = table::canonical(conn, *holder).await?;
        target = table::canonical(conn, target).await?;
        if holder == target {
            continue;
        }
        if let Some(owner) = pins.get(*key) {
            // Decided by a human: the key is the owner's, whoever claims it.
            let owner = table::canonical(conn, *owner).await?;
            if owner != holder {
                table::relink(conn, key, holder, owner).await?;
                moved.extend([holder, owner]);
            }
            continue;
        }
        if table::compatible(conn, target, holder).await? {
            let (from, into) = table::by_strength(conn, target, holder).await?;
            table::merge(conn, from, into).await?;
            moved.push(into);
            target = into;
        } else {
            tracing::warn!(subject = key, "identity conflict recorded for review");
            let (keeper, other) = if target < holder { (target, holder) } else { (holder, target) };
            if keeper != holder {
                table::relink(conn, key, holder, keeper).await?;
                moved.extend([holder, keeper]);
            }
            let conflict = Conflict {
                subject_key: key,
                linked_to: keeper,
                claimed_for: other,
                source,
                event_id,
                resolution: None,
            };
            table::record_conflict(conn, &conflict).await?;
        }
    }
    // The event's own person: that of its subject key (a contested key's events follow the key).
    let person = match table::person_of(conn, subject.as_str()).await? {
        Some(person) => person,
        None => table::canonical(conn, target).await?,
    };
    Ok((person, moved))
}

/// Applies a human identity decision; returns the persons to fold again.
pub async fn apply_decision(conn: &mut PgConnection, decision: &IdentityDecision) -> Result<Moved, Error> {
    let holder = table::ensure_person(conn, &decision.holder_key).await?;
    let claimant = table::ensure_person(conn, &decision.claimant_key).await?;
    let resolution = decision.decision.code().to_ascii_lowercase();
    let decided = Decided {
        decision_id: decision.decision_id,
        decided_at: decision.decided_at,
        decided_by: &decision.decided_by,
        subject_key: &decision.subject_key,
        holder_key: &decision.holder_key,
        claimant_key: &decision.claimant_key,
        decision: decision.decision.code(),
    };
    table::record_decision(conn, &decided).await?;
    let current = table::person_of(conn, &decision.subject_key).await?;
    let owner = match decision.decision {
        Decision::Confirm => Some((decision.claimant_key.as_str(), claimant)),
        Decision::Reject => Some((decision.holder_key.as_str(), holder)),
        Decision::Merge => None,
    };
    let mut moved = vec![holder, claimant];
    match owner {
        Some((owner_key, owner)) => {
            table::pin(conn, &decision.subject_key, owner_key, decision.decision_id).await?;
            match current {
                Some(current) if current != owner => table::relink(conn, &decision.subject_key, current, owner).await?,
                Some(_) => {}
                None => table::link_by_decision(conn, &decision.subject_key, owner).await?,
            }
        }
        None => {
            table::unpin(conn, &decision.subject_key).await?;
            if holder != claimant {
                let (from, into) = table::by_strength(conn, holder, claimant).await?;
                table::merge(conn, from, into).await?;
                moved = vec![into];
            }
        }
    }
    table::resolve_conflicts(conn, &decision.subject_key, &[holder, claimant], &resolution).await?;
    // A rebuild may read the decision before the events that raised the conflict (another
    // topic); the pin then keeps the conflict from arising, so the decision records it.
    let decision_id = decision.decision_id.to_string();
    let conflict = Conflict {
        subject_key: &decision.subject_key,
        linked_to: holder,
        claimed_for: claimant,
        source: "passerelle.identite",
        event_id: &decision_id,
        resolution: Some(&resolution),
    };
    table::record_conflict(conn, &conflict).await?;
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> SubjectKey {
        SubjectKey(text.to_owned())
    }

    #[test]
    fn a_new_person_is_minted_from_the_strongest_key_and_every_key_linked_to_them() {
        let mut known = Known::default();
        let mut pending = Pending::default();
        let (nir, ft) = (key("nir:aaaa"), key("ft:bbbb"));
        let person = fast_identity(&mut known, &mut pending, &[ft.clone(), nir.clone()], &ft, "cnaf/1");
        let minted = passerelle_readmodel::person_id_for(identity_names(&[ft.clone(), nir.clone()], &ft)[0]);
        assert_eq!(person, Some(minted));
        assert_eq!(pending.persons.len(), 1);
        assert_eq!(pending.links.len(), 2);
        assert!(pending.links.iter().all(|link| link.person_id == minted && link.via == "cnaf/1"));
        // The same keys again: no second person, no second link.
        let again = fast_identity(&mut known, &mut pending, &[nir.clone(), ft.clone()], &nir, "cnaf/2");
        assert_eq!(again, Some(minted));
        assert_eq!((pending.persons.len(), pending.links.len()), (1, 2));
    }

    #[test]
    fn a_key_linked_to_someone_else_takes_the_full_path() {
        let mut known = Known::default();
        let mut pending = Pending::default();
        let (nir, ft) = (key("nir:aaaa"), key("ft:bbbb"));
        known.links.insert(ft.as_str().to_owned(), Uuid::from_u128(7));
        known.links.insert(nir.as_str().to_owned(), Uuid::from_u128(8));
        assert_eq!(fast_identity(&mut known, &mut pending, &[nir.clone(), ft.clone()], &nir, "cnaf/1"), None);
        // One linked, the other not, and the strongest unlinked: a merge may be due.
        known.links.remove(nir.as_str());
        assert_eq!(fast_identity(&mut known, &mut pending, &[nir, ft.clone()], &ft, "cnaf/1"), None);
        assert!(pending.persons.is_empty() && pending.links.is_empty());
    }

    #[test]
    fn a_pinned_key_or_an_existing_person_takes_the_full_path() {
        let mut known = Known::default();
        let mut pending = Pending::default();
        let nir = key("nir:aaaa");
        known.pinned.insert(nir.as_str().to_owned());
        assert_eq!(fast_identity(&mut known, &mut pending, &[], &nir, "cnaf/1"), None);
        known.pinned.clear();
        // The person exists (minted earlier, its link since moved by a decision).
        known.existing.insert(passerelle_readmodel::person_id_for(nir.as_str()));
        assert_eq!(fast_identity(&mut known, &mut pending, &[], &nir, "cnaf/1"), None);
        assert!(pending.persons.is_empty() && pending.links.is_empty());
    }

    #[test]
    fn an_event_follows_its_own_subject_key() {
        let mut known = Known::default();
        let mut pending = Pending::default();
        let (nir, ft) = (key("nir:aaaa"), key("ft:bbbb"));
        let person = Uuid::from_u128(5);
        known.links.insert(nir.as_str().to_owned(), person);
        known.links.insert(ft.as_str().to_owned(), person);
        assert_eq!(fast_identity(&mut known, &mut pending, &[nir], &ft, "ft/1"), Some(person));
        assert!(pending.links.is_empty());
    }
}
