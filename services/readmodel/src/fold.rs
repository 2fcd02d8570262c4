//! The dossier as a fold over a person's events: pure, no I/O. Events are taken in the order
//! they happened (`occurred_at`, then when the hub recorded them), never in arrival order, so a
//! late event never overwrites a newer fact. Superseded (corrected) and retracted events are
//! left out.
//!
//! Reach is decided by the facts that legally decide it (DESIGN.md, trust rules): a person's
//! territory comes from their CAF/MSA dossier only (its receiving authority and address, a
//! mutation), never from the location a département or France Travail writes in a fact. A
//! département's fact (orientation, référent, contract, opposition, consent) counts only if the
//! authority that pushed it is the person's authority when it happened; a move to another
//! authority ends the référent of the former one. The person's own choices, recorded in their
//! space, count whoever their authority is; nothing else the person records decides anything.

use chrono::{DateTime, NaiveDate, Utc};
use passerelle_domain::{
    RightState,
    event::Payload,
    territory::{TO_ASSIGN, authority_at},
};

/// One stored event of a person, as the fold reads it.
#[derive(Debug, Clone)]
pub struct Fact {
    /// The institution that published it (with `event_id`, the fact's identity).
    pub source: String,
    pub event_id: String,
    /// The source family (`allocataire`, `demandeur_emploi`, `orientation`).
    pub family: String,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    /// For a CAF/MSA fact, the authority its content places the person in; for a département's
    /// fact, the authority that pushed it (the ingestion sets it to the caller's).
    pub territory: Option<String>,
    pub household_key: Option<String>,
    pub role: Option<String>,
    pub payload: Payload,
    pub active: bool,
    /// Recorded by the person in their own space ([`passerelle_domain::event::PERSON_SOURCE`]):
    /// it may only state their choices (opposition, consent), and those count whatever the
    /// person's authority.
    pub by_person: bool,
}

/// The state of a dossier's sections.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct State {
    pub territory: Option<String>,
    pub territory_since: Option<DateTime<Utc>>,
    pub previous_territory: Option<String>,
    pub household_key: Option<String>,
    pub role: Option<String>,
    pub right_state: Option<String>,
    pub right_state_at: Option<DateTime<Utc>>,
    pub right_motif: Option<String>,
    pub sdd: bool,
    pub sdd_since: Option<DateTime<Utc>>,
    pub ft_status: Option<String>,
    pub ft_status_at: Option<DateTime<Utc>>,
    pub ft_categorie: Option<String>,
    pub ft_accompagnement: Option<String>,
    pub orientation_status: Option<String>,
    pub orientation_type: Option<String>,
    pub oriented_at: Option<DateTime<Utc>>,
    pub structure_siret: Option<String>,
    pub referent_uid: Option<String>,
    pub referent_siret: Option<String>,
    pub referent_since: Option<DateTime<Utc>>,
    pub contract_kind: Option<String>,
    pub contract_start: Option<NaiveDate>,
    pub contract_end: Option<NaiveDate>,
    pub opposition: bool,
    pub consent_diagnostic: bool,
    pub last_contact_at: Option<DateTime<Utc>>,
}

/// Where a fold stands: the order key of the last fact it took, (`occurred_at`, `recorded_at`,
/// `event_id`), the order every fold reads facts in. Event ids compare byte by byte (`COLLATE
/// "C"` in SQL).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Watermark {
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub event_id: String,
}

impl Fact {
    pub fn key(&self) -> Watermark {
        Watermark { occurred_at: self.occurred_at, recorded_at: self.recorded_at, event_id: self.event_id.clone() }
    }

    fn bears_on_right(&self) -> bool {
        self.payload.right_state().is_some()
    }
}

fn in_order(facts: &[Fact]) -> Vec<&Fact> {
    let mut ordered: Vec<&Fact> = facts.iter().filter(|fact| fact.active && !fact.held()).collect();
    ordered
        .sort_by(|a, b| (a.occurred_at, a.recorded_at, &a.event_id).cmp(&(b.occurred_at, b.recorded_at, &b.event_id)));
    ordered
}

/// The watermark of a person's dossier folded from `facts`: its last active fact (every one
/// counts, even one that decided nothing: a CAF fact sorting before it could make it count).
pub fn watermark(facts: &[Fact]) -> Option<Watermark> {
    in_order(facts).last().map(|fact| fact.key())
}

/// The watermark of a household's right state folded from `facts`: its last active right fact.
pub fn right_watermark(facts: &[Fact]) -> Option<Watermark> {
    in_order(facts).into_iter().rfind(|fact| fact.bears_on_right()).map(Fact::key)
}

/// Whether [`dossier_on`] the stored state, with `later` (the facts stored after its watermark,
/// including every new fact of the person), gives what [`dossier`] over the whole history would.
/// The facts already folded never need reading again, except when a new CAF fact changes which
/// authority they belong to: a first CAF fact (the authority of the facts before it is the one
/// it names), or one at the watermark's very instant (facts at the same instant belong to the
/// authority it names).
pub fn can_fold_on(stored: &State, watermark: &Watermark, later: &[Fact]) -> bool {
    in_order(later).into_iter().all(|fact| {
        fact.key() > *watermark
            && !(decides_territory(fact)
                && fact.territory.is_some()
                && (stored.territory.is_none() || fact.occurred_at == watermark.occurred_at))
    })
}

impl Fact {
    /// A CAF/MSA fact "à affecter": received by the split département 69 without a commune that
    /// says whether it is the Métropole's or the Rhône's. It waits in the queue, applied to
    /// nothing (as if not yet received) until the caisse corrects it with its authority or a
    /// relay by that authority settles it (docs/territories.md).
    pub fn held(&self) -> bool {
        decides_territory(self) && self.territory.as_deref() == Some(TO_ASSIGN)
    }
}

/// Whether a fact may decide the person's territory: only the CAF/MSA dossier's facts do.
fn decides_territory(fact: &Fact) -> bool {
    fact.family == "allocataire"
}

/// Folds a person's own events into their dossier (the right state comes from the household,
/// see [`right_state`]).
pub fn dossier(facts: &[Fact]) -> State {
    fold_on(State::default(), facts)
}

/// Folds `later` on from a stored state, as if its whole history were folded again: valid when
/// [`can_fold_on`] says so.
pub fn dossier_on(stored: State, later: &[Fact]) -> State {
    fold_on(stored, later)
}

fn fold_on(mut state: State, facts: &[Fact]) -> State {
    let ordered = in_order(facts);
    // The authority before these facts is the one the stored state holds (the latest CAF fact's,
    // before any of these).
    let stored_authority = state.territory.clone();
    let territories: Vec<(DateTime<Utc>, &str)> = stored_authority
        .as_deref()
        .map(|territory| (DateTime::<Utc>::MIN_UTC, territory))
        .into_iter()
        .chain(
            ordered
                .iter()
                .filter(|fact| decides_territory(fact))
                .filter_map(|fact| fact.territory.as_deref().map(|territory| (fact.occurred_at, territory))),
        )
        .collect();
    for fact in ordered {
        if fact.by_person {
            // The person's own choice: the latest, from them or from their département, holds.
            apply_choice(&mut state, &fact.payload);
            continue;
        }
        if fact.family == "orientation" {
            let pushed_by = fact.territory.as_deref();
            if pushed_by.is_none() || pushed_by != authority_at(&territories, fact.occurred_at) {
                // Not the person's authority at the time: the fact stays in the timeline, it
                // decides nothing.
                continue;
            }
        }
        state.last_contact_at = Some(fact.occurred_at);
        if decides_territory(fact)
            && let Some(territory) = &fact.territory
            && state.territory.as_ref() != Some(territory)
        {
            if state.territory.is_some() {
                // A move: the former authority's référent no longer accompanies the person.
                state.referent_uid = None;
                state.referent_siret = None;
                state.referent_since = None;
            }
            state.previous_territory = state.territory.take();
            state.territory = Some(territory.clone());
            state.territory_since = Some(fact.occurred_at);
        }
        if let Some(household) = &fact.household_key {
            state.household_key = Some(household.clone());
        }
        if let Some(role) = &fact.role {
            state.role = Some(role.clone());
        }
        match &fact.payload {
            Payload::SddChanged { soumis } => {
                if *soumis && !state.sdd {
                    state.sdd_since = Some(fact.occurred_at);
                }
                if !*soumis {
                    state.sdd_since = None;
                }
                state.sdd = *soumis;
            }
            Payload::HouseholdRoleSet { role } => state.role = Some(role.code().to_owned()),
            Payload::Inscription { categorie, .. } => {
                state.ft_status = Some("INSCRIT".into());
                state.ft_status_at = Some(fact.occurred_at);
                state.ft_categorie = Some(categorie.code().to_owned());
            }
            Payload::CategorieChanged { categorie } => state.ft_categorie = Some(categorie.code().to_owned()),
            Payload::AccompagnementChanged { modalite } => state.ft_accompagnement = Some(modalite.code().to_owned()),
            Payload::Cessation { .. } => {
                state.ft_status = Some("CESSATION".into());
                state.ft_status_at = Some(fact.occurred_at);
            }
            Payload::Radiation { .. } => {
                state.ft_status = Some("RADIATION".into());
                state.ft_status_at = Some(fact.occurred_at);
            }
            Payload::OrientationRequested { .. } => state.orientation_status = Some("DEMANDEE".into()),
            Payload::OrientationDecided { orientation_type, structure_siret, referent, .. } => {
                state.orientation_status = Some("DECIDEE".into());
                state.orientation_type = Some(orientation_type.code().to_owned());
                state.oriented_at = Some(fact.occurred_at);
                state.structure_siret = structure_siret.clone();
                if let Some(referent) = referent {
                    state.referent_uid = Some(referent.uid.clone());
                    state.referent_siret = Some(referent.siret.clone());
                    state.referent_since = Some(fact.occurred_at);
                }
            }
            Payload::OrientationDenied => state.orientation_status = Some("REFUSEE".into()),
            Payload::ReferentAssigned { referent } => {
                state.referent_uid = Some(referent.uid.clone());
                state.referent_siret = Some(referent.siret.clone());
                state.referent_since = Some(fact.occurred_at);
            }
            Payload::ReferentEnded { uid } if state.referent_uid.as_ref() == Some(uid) => {
                state.referent_uid = None;
                state.referent_siret = None;
                state.referent_since = None;
            }
            Payload::ContractSigned { kind, date_debut, date_fin } => {
                state.contract_kind = Some(kind.code().to_owned());
                state.contract_start = Some(*date_debut);
                state.contract_end = *date_fin;
            }
            Payload::ContractEnded { kind, date_fin } if state.contract_kind.as_deref() == Some(kind.code()) => {
                state.contract_end = Some(*date_fin);
            }
            choice if choice.is_person_choice() => apply_choice(&mut state, choice),
            _ => {}
        }
    }
    state
}

/// An opposition or a consent, recorded by the person or by their département.
fn apply_choice(state: &mut State, choice: &Payload) {
    match choice {
        Payload::OppositionRecorded => state.opposition = true,
        Payload::OppositionWithdrawn => state.opposition = false,
        Payload::ConsentGiven => state.consent_diagnostic = true,
        Payload::ConsentWithdrawn => state.consent_diagnostic = false,
        _ => {}
    }
}

/// The RSA right state of a household, folded from the right facts of all its members.
pub fn right_state(household_facts: &[Fact]) -> RightFold {
    right_state_on((None, None, None), household_facts)
}

/// A household's right state, its date and its motif.
pub type RightFold = (Option<String>, Option<DateTime<Utc>>, Option<String>);

/// Folds right facts on from a stored right state; valid when every active right fact of
/// `later` sorts after the stored watermark (the state depends on nothing else).
pub fn right_state_on(stored: RightFold, later: &[Fact]) -> RightFold {
    let mut current = stored;
    for fact in in_order(later) {
        let Some(state) = fact.payload.right_state() else { continue };
        let motif = match &fact.payload {
            Payload::RsaRightSuspended { motif, .. } | Payload::RsaRightClosed { motif, .. } => {
                Some(motif.code.clone())
            }
            Payload::RsaRightRefused { motif } => motif.as_ref().map(|m| m.code.clone()),
            _ => None,
        };
        // A demand recorded after the right opened does not reopen the instruction.
        if state == RightState::Pending && current.0.is_some() {
            continue;
        }
        current = (Some(state.code().to_owned()), Some(fact.occurred_at), motif);
    }
    current
}

#[cfg(test)]
mod tests {
    use passerelle_domain::event::AgentRef;

    use super::*;

    fn at(day: u32) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&format!("2026-10-{day:02}T10:00:00Z")).expect("instant").with_timezone(&Utc)
    }

    fn fact(id: &str, day: u32, payload: Payload) -> Fact {
        let family = match &payload {
            Payload::SddChanged { .. } | Payload::RsaRightOpened { .. } => "allocataire",
            Payload::Inscription { .. } | Payload::Radiation { .. } => "demandeur_emploi",
            _ => "orientation",
        };
        Fact {
            source: "test".into(),
            event_id: id.into(),
            family: family.into(),
            occurred_at: at(day),
            recorded_at: at(28),
            territory: Some("52".into()),
            household_key: None,
            role: None,
            payload,
            active: true,
            by_person: false,
        }
    }

    #[test]
    fn a_late_event_does_not_overwrite_a_newer_fact() {
        let newer = fact("b", 10, Payload::OppositionWithdrawn);
        let older_arriving_later = fact("a", 5, Payload::OppositionRecorded);
        let dossier_received = fact("0", 1, Payload::SddChanged { soumis: true });
        assert!(!dossier(&[newer.clone(), older_arriving_later.clone(), dossier_received.clone()]).opposition);
        assert!(!dossier(&[dossier_received, older_arriving_later, newer]).opposition);
    }

    #[test]
    fn one_active_referent_and_retracted_events_do_not_count() {
        let first = AgentRef { uid: "a1".into(), siret: "73282932000074".into() };
        let second = AgentRef { uid: "a2".into(), siret: "73282932000074".into() };
        let facts = vec![
            fact("0", 1, Payload::SddChanged { soumis: true }),
            fact("1", 1, Payload::ReferentAssigned { referent: first }),
            fact("2", 2, Payload::ReferentAssigned { referent: second }),
            fact("3", 3, Payload::ReferentEnded { uid: "a1".into() }),
        ];
        assert_eq!(dossier(&facts).referent_uid.as_deref(), Some("a2"), "ending a former référent ends nothing");
        let mut retracted = facts.clone();
        retracted[2].active = false;
        assert_eq!(dossier(&retracted).referent_uid, None, "with the second assignment retracted, a1 was ended");
    }

    #[test]
    fn becoming_sdd_dates_from_the_first_fact_that_set_it() {
        let facts = vec![
            fact("1", 3, Payload::SddChanged { soumis: true }),
            fact("2", 9, Payload::SddChanged { soumis: true }),
        ];
        let state = dossier(&facts);
        assert!(state.sdd);
        assert_eq!(state.sdd_since, Some(at(3)));
    }

    #[test]
    fn a_move_keeps_the_previous_territory_and_its_date() {
        let mut moved = fact("2", 8, Payload::SddChanged { soumis: true });
        moved.territory = Some("69M".into());
        let state = dossier(&[fact("1", 2, Payload::SddChanged { soumis: true }), moved]);
        assert_eq!(state.territory.as_deref(), Some("69M"));
        assert_eq!(state.previous_territory.as_deref(), Some("52"));
        assert_eq!(state.territory_since, Some(at(8)));
    }

    #[test]
    fn a_fact_to_assign_waits_and_counts_once_its_authority_is_known() {
        let received = fact("0", 1, Payload::SddChanged { soumis: true });
        let mut held = fact("held", 8, Payload::SddChanged { soumis: false });
        held.territory = Some(TO_ASSIGN.into());
        let facts = vec![received.clone(), held.clone()];
        let state = dossier(&facts);
        assert_eq!(state.territory.as_deref(), Some("52"), "neither placed in 69 nor moved");
        assert!(state.sdd, "the held fact is applied to nothing");
        assert_eq!(state, dossier(std::slice::from_ref(&received)));
        assert_eq!(watermark(&facts), Some(received.key()), "nor moves the watermark");
        // The caisse's correction names the authority: it counts from then on.
        let mut settled = held;
        settled.event_id = "correction".into();
        settled.territory = Some("69M".into());
        let state = dossier(&[received, settled]);
        assert_eq!((state.territory.as_deref(), state.sdd), (Some("69M"), false));
    }

    #[test]
    fn only_the_caf_dossier_decides_the_territory() {
        let mut claimed =
            fact("2", 5, Payload::OrientationRequested { origine: passerelle_domain::OrientationOrigin::Initiale });
        claimed.territory = Some("51".into());
        let mut ft = fact("3", 6, Payload::Radiation { motif: None, date_radiation: None });
        ft.territory = Some("69M".into());
        let state = dossier(&[fact("1", 2, Payload::SddChanged { soumis: true }), claimed, ft]);
        assert_eq!(state.territory.as_deref(), Some("52"));
        assert_eq!(state.previous_territory, None, "nobody moved");
        assert_eq!(state.orientation_status, None, "another authority's orientation decides nothing");
    }

    #[test]
    fn another_authoritys_referent_is_never_the_persons() {
        let intruder = AgentRef { uid: "cd51.agent".into(), siret: "22510001700011".into() };
        let mut takeover = fact("2", 5, Payload::ReferentAssigned { referent: intruder });
        takeover.territory = Some("51".into());
        let state = dossier(&[fact("1", 2, Payload::SddChanged { soumis: true }), takeover.clone()]);
        assert_eq!(state.referent_uid, None);
        // Nor before the CAF dossier arrives, nor for a person the CAF never placed anywhere.
        assert_eq!(dossier(&[takeover.clone()]).referent_uid, None);
        let mut early = takeover;
        early.occurred_at = at(1);
        assert_eq!(dossier(&[fact("1", 2, Payload::SddChanged { soumis: true }), early]).referent_uid, None);
    }

    #[test]
    fn a_move_ends_the_former_authoritys_referent_and_its_earlier_facts_stay_its_own() {
        let referent = AgentRef { uid: "cd52.referent".into(), siret: "73282932000074".into() };
        let assigned = fact("2", 3, Payload::ReferentAssigned { referent });
        let mut moved = fact("3", 8, Payload::SddChanged { soumis: true });
        moved.territory = Some("51".into());
        let before_move = dossier(&[fact("1", 2, Payload::SddChanged { soumis: true }), assigned.clone()]);
        assert_eq!(before_move.referent_uid.as_deref(), Some("cd52.referent"));
        let after = dossier(&[fact("1", 2, Payload::SddChanged { soumis: true }), assigned, moved]);
        assert_eq!(after.referent_uid, None);
        assert_eq!(after.territory.as_deref(), Some("51"));
        let mut late_from_former = fact("4", 9, Payload::OppositionRecorded);
        late_from_former.territory = Some("52".into());
        let mut moved_again = fact("3", 8, Payload::SddChanged { soumis: true });
        moved_again.territory = Some("51".into());
        let state = dossier(&[fact("1", 2, Payload::SddChanged { soumis: true }), moved_again, late_from_former]);
        assert!(!state.opposition, "the former authority acts no more after the move");
    }

    /// The person's own choices count wherever they live and whoever pushed the last one;
    /// anything else recorded as theirs decides nothing (no référent, no orientation).
    #[test]
    fn the_persons_choices_count_and_nothing_else_they_record_does() {
        let lives_in_52 = fact("1", 2, Payload::SddChanged { soumis: true });
        let mut opposes = fact("2", 4, Payload::OppositionRecorded);
        opposes.by_person = true;
        opposes.territory = None;
        let state = dossier(&[lives_in_52.clone(), opposes.clone()]);
        assert!(state.opposition);
        assert_eq!(state.last_contact_at, Some(at(2)), "a choice is not a contact with an accompanying body");
        // The département withdraws it later on the person's word: the latest choice holds.
        let withdrawn_by_department = fact("3", 6, Payload::OppositionWithdrawn);
        assert!(!dossier(&[lives_in_52.clone(), opposes.clone(), withdrawn_by_department.clone()]).opposition);
        let mut opposes_again = fact("4", 8, Payload::OppositionRecorded);
        opposes_again.by_person = true;
        assert!(dossier(&[lives_in_52.clone(), opposes, withdrawn_by_department, opposes_again]).opposition);
        let mut consents = fact("5", 5, Payload::ConsentGiven);
        consents.by_person = true;
        assert!(dossier(&[lives_in_52.clone(), consents]).consent_diagnostic);
        let mut referent_claimed = fact(
            "6",
            5,
            Payload::ReferentAssigned { referent: AgentRef { uid: "someone".into(), siret: "73282932000074".into() } },
        );
        referent_claimed.by_person = true;
        assert_eq!(dossier(&[lives_in_52, referent_claimed]).referent_uid, None);
    }

    /// Random histories cut at a random point: whenever `can_fold_on` accepts the facts after
    /// the cut, folding them on from the state before it gives the full fold, watermark
    /// included; and it accepts the common case (nothing late, no first CAF fact).
    #[test]
    fn folding_on_from_a_stored_state_equals_the_full_fold() {
        use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(20261203);
        let referent = |n: u32| AgentRef { uid: format!("agent{n}"), siret: "73282932000074".into() };
        let (mut accepted, mut refused) = (0, 0);
        for round in 0..4000 {
            let count = rng.random_range(1..14);
            let mut facts = Vec::new();
            for n in 0..count {
                let payload = match rng.random_range(0..12) {
                    0 | 1 => Payload::SddChanged { soumis: rng.random_bool(0.8) },
                    2 => Payload::OppositionRecorded,
                    3 => Payload::OppositionWithdrawn,
                    4 => Payload::ConsentGiven,
                    5 | 6 => Payload::ReferentAssigned { referent: referent(rng.random_range(0..3)) },
                    7 => Payload::ReferentEnded { uid: format!("agent{}", rng.random_range(0..3)) },
                    8 => Payload::Radiation { motif: None, date_radiation: None },
                    9 => Payload::OrientationDenied,
                    10 => Payload::OrientationRequested { origine: passerelle_domain::OrientationOrigin::Initiale },
                    _ => Payload::ConsentWithdrawn,
                };
                // Few days, so that facts share an instant and the order falls to the ids.
                let mut fact = fact(&format!("{round}-{n:02}"), rng.random_range(1..6), payload);
                fact.recorded_at = at(rng.random_range(20..22));
                fact.territory = Some(["52", "51", "69M", TO_ASSIGN][rng.random_range(0..4)].into());
                if fact.family == "allocataire" && rng.random_bool(0.2) {
                    fact.territory = None;
                }
                fact.by_person = fact.payload.is_person_choice() && rng.random_bool(0.3);
                fact.active = rng.random_bool(0.9);
                fact.household_key = rng.random_bool(0.3).then(|| format!("h{}", rng.random_range(0..2)));
                facts.push(fact);
            }
            let full = (dossier(&facts), watermark(&facts));
            let mut ordered: Vec<Fact> = facts.clone();
            ordered.sort_by_key(Fact::key);
            let cut = rng.random_range(0..=ordered.len());
            let (before, after) = ordered.split_at(cut);
            let Some(mark) = watermark(before) else { continue };
            // What the store holds after the watermark: the later facts, and (sometimes) a late
            // one of the earlier slice that sorts before it.
            let later: Vec<Fact> = after.iter().filter(|f| f.key() > mark).cloned().collect();
            let stored = dossier(before);
            if can_fold_on(&stored, &mark, &later) {
                accepted += 1;
                let on = dossier_on(stored, &later);
                let on_mark = watermark(&later).unwrap_or(mark);
                assert_eq!((on, Some(on_mark)), full, "round {round}: folded on differs from the full fold");
            } else {
                refused += 1;
            }
        }
        assert!(accepted > 1000, "the common case folds on ({accepted} on, {refused} in full)");
    }
}
