//! The second half of who may push what: what the hub already holds about the person. A
//! département's fact is accepted only for a person the hub holds in the caller's territory
//! (from the CAF/MSA dossier), or held there before a move the fact predates. The decision is
//! pure; the hub's state is read by [`crate::hub::IngestHub::held_authorities`] in one query
//! per chunk of events.
//!
//! The projection applies the same rule on its own (a département's fact decides nothing unless
//! its authority is the person's when it happened, see the projector's fold): this check is the
//! early, explicit refusal, the fold is the guarantee that holds whatever the arrival order.

use passerelle_domain::event::{CanonicalEvent, Family, InstitutionKind, Payload};
use passerelle_readmodel::HeldAuthority;

use crate::{institutions::Institution, scope::Denied};

/// Whether the hub's state must be consulted before accepting `event` from `institution`.
pub fn needs_hub_state(institution: &Institution, event: &CanonicalEvent) -> bool {
    institution.kind == InstitutionKind::Departement
        && event.family == Family::Orientation
        // A retraction only withdraws the caller's own fact (same source, same subject): it
        // never widens anyone's reach, and the former authority may still withdraw its mistakes.
        && !matches!(event.payload, Payload::Retraction { .. })
}

/// Decides a département's fact against the authorities the hub holds for the persons its
/// identifiers lead to (`held`: one entry per linked key known to the hub).
pub fn check(institution: &Institution, event: &CanonicalEvent, held: &[HeldAuthority]) -> Result<(), Denied> {
    let caller = institution.territory.as_deref();
    let keys: Vec<&str> = event.envelope.linked_keys.iter().map(|key| key.as_str()).collect();
    for dossier in held
        .iter()
        .filter(|h| keys.contains(&h.subject_key.as_str()) || h.subject_key == event.envelope.subject.as_str())
    {
        let Some(territory) = dossier.territory.as_deref() else {
            // No CAF/MSA dossier places the person anywhere yet: the projection decides once
            // one does (the fact counts only if it places the person in the caller's territory).
            continue;
        };
        if Some(territory) == caller {
            continue;
        }
        let before_move = dossier.previous_territory.as_deref() == caller
            && dossier.territory_since.is_some_and(|since| event.envelope.occurred_at < since);
        if before_move {
            continue;
        }
        return Err(Denied {
            rule: "territory.held",
            message: "the hub holds this person in another RSA authority's territory (from their CAF/MSA dossier): \
                      a département pushes facts only for the persons it is responsible for; if the person's dossier \
                      moved to your territory just now, push again once the CAF/MSA fact has reached the hub"
                .into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use passerelle_domain::{
        EventId,
        event::{Envelope, PersonalData, Source, SubjectKey},
    };

    use super::*;
    use crate::institutions::Institutions;

    fn at(day: u32) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&format!("2026-10-{day:02}T10:00:00Z")).expect("instant").with_timezone(&Utc)
    }

    fn fact(day: u32, payload: Payload) -> CanonicalEvent {
        CanonicalEvent {
            family: Family::Orientation,
            envelope: Envelope {
                event_id: EventId::parse("reach-1").expect("valid"),
                occurred_at: at(day),
                recorded_at: at(28),
                source: Source {
                    institution: "cd-51".into(),
                    kind: InstitutionKind::Departement,
                    relayed_by: None,
                    relay_file: None,
                },
                subject: SubjectKey("nir:aa".into()),
                linked_keys: vec![SubjectKey("nir:aa".into()), SubjectKey("dep:bb".into())],
                household: None,
                // What the caller wrote: its own code, to pass the old check.
                territory: Some("51".into()),
                commune: None,
                corrects_event_id: None,
            },
            payload,
            personal: PersonalData::default(),
        }
    }

    fn held(key: &str, territory: Option<&str>, previous: Option<&str>, since: Option<u32>) -> HeldAuthority {
        HeldAuthority {
            subject_key: key.into(),
            territory: territory.map(str::to_owned),
            previous_territory: previous.map(str::to_owned),
            territory_since: since.map(at),
        }
    }

    #[test]
    fn a_departement_cannot_take_over_a_person_the_hub_holds_elsewhere() {
        let institutions =
            Institutions::from_toml("[[institution]]\nid = \"cd-51\"\nkind = \"DEPARTEMENT\"\nterritory = \"51\"\n")
                .expect("valid");
        let cd51 = institutions.get("cd-51").expect("listed");
        let referent = Payload::OppositionRecorded;
        let event = fact(10, referent);
        assert!(needs_hub_state(cd51, &event));
        // Held in the Haute-Marne: refused whatever the caller wrote in the fact's location.
        let denial = check(cd51, &event, &[held("nir:aa", Some("52"), None, Some(1))]).expect_err("takeover");
        assert_eq!(denial.rule, "territory.held");
        // Through the weaker of its identifiers too.
        assert!(check(cd51, &event, &[held("dep:bb", Some("52"), None, Some(1))]).is_err());
        // Held in its own territory, or before a move out of it that the fact predates.
        assert!(check(cd51, &event, &[held("nir:aa", Some("51"), Some("52"), Some(1))]).is_ok());
        assert!(check(cd51, &event, &[held("nir:aa", Some("52"), Some("51"), Some(12))]).is_ok());
        assert!(check(cd51, &event, &[held("nir:aa", Some("52"), Some("51"), Some(8))]).is_err(), "after the move");
        // Unknown to the hub, or without a CAF/MSA dossier: the projection decides.
        assert!(check(cd51, &event, &[]).is_ok());
        assert!(check(cd51, &event, &[held("nir:aa", None, None, None)]).is_ok());
        // A retraction of its own fact needs no hub state.
        let retraction = fact(10, Payload::Retraction { retracted_event_id: EventId::parse("x").expect("valid") });
        assert!(!needs_hub_state(cd51, &retraction));
    }
}
