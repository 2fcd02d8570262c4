//! The dossier as a fold over a person's events: pure, no I/O. Events are taken in the order
//! they happened (`occurred_at`, then when the hub recorded them), never in arrival order, so a
//! late event never overwrites a newer fact. Superseded (corrected) and retracted events are
//! left out.

use chrono::{DateTime, NaiveDate, Utc};
use passerelle_domain::{RightState, event::Payload};

/// One stored event of a person, as the fold reads it.
#[derive(Debug, Clone)]
pub struct Fact {
    pub event_id: String,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub territory: Option<String>,
    pub household_key: Option<String>,
    pub role: Option<String>,
    pub payload: Payload,
    pub active: bool,
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

fn in_order(facts: &[Fact]) -> Vec<&Fact> {
    let mut ordered: Vec<&Fact> = facts.iter().filter(|fact| fact.active).collect();
    ordered
        .sort_by(|a, b| (a.occurred_at, a.recorded_at, &a.event_id).cmp(&(b.occurred_at, b.recorded_at, &b.event_id)));
    ordered
}

/// Folds a person's own events into their dossier (the right state comes from the household,
/// see [`right_state`]).
pub fn dossier(facts: &[Fact]) -> State {
    let mut state = State::default();
    for fact in in_order(facts) {
        state.last_contact_at = Some(fact.occurred_at);
        if let Some(territory) = &fact.territory
            && state.territory.as_ref() != Some(territory)
        {
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
            Payload::OppositionRecorded => state.opposition = true,
            Payload::OppositionWithdrawn => state.opposition = false,
            Payload::ConsentGiven => state.consent_diagnostic = true,
            Payload::ConsentWithdrawn => state.consent_diagnostic = false,
            _ => {}
        }
    }
    state
}

/// The RSA right state of a household, folded from the right facts of all its members.
pub fn right_state(household_facts: &[Fact]) -> (Option<String>, Option<DateTime<Utc>>, Option<String>) {
    let mut current = (None, None, None);
    for fact in in_order(household_facts) {
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
        Fact {
            event_id: id.into(),
            occurred_at: at(day),
            recorded_at: at(28),
            territory: Some("52".into()),
            household_key: None,
            role: None,
            payload,
            active: true,
        }
    }

    #[test]
    fn a_late_event_does_not_overwrite_a_newer_fact() {
        let newer = fact("b", 10, Payload::OppositionWithdrawn);
        let older_arriving_later = fact("a", 5, Payload::OppositionRecorded);
        assert!(!dossier(&[newer.clone(), older_arriving_later.clone()]).opposition);
        assert!(!dossier(&[older_arriving_later, newer]).opposition);
    }

    #[test]
    fn one_active_referent_and_retracted_events_do_not_count() {
        let first = AgentRef { uid: "a1".into(), siret: "73282932000074".into() };
        let second = AgentRef { uid: "a2".into(), siret: "73282932000074".into() };
        let facts = vec![
            fact("1", 1, Payload::ReferentAssigned { referent: first }),
            fact("2", 2, Payload::ReferentAssigned { referent: second }),
            fact("3", 3, Payload::ReferentEnded { uid: "a1".into() }),
        ];
        assert_eq!(dossier(&facts).referent_uid.as_deref(), Some("a2"), "ending a former référent ends nothing");
        let mut retracted = facts.clone();
        retracted[1].active = false;
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
}
