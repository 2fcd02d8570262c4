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

/// Whether the hub's state must be consulted before accepting `event` from `institution`: a
/// département's fact, and a CAF/MSA dossier's fact (pushed by the caisse or relayed).
pub fn needs_hub_state(institution: &Institution, event: &CanonicalEvent) -> bool {
    // A retraction only withdraws the caller's own fact (same source, same subject): it never
    // widens anyone's reach, and the former authority may still withdraw its mistakes.
    let retraction = matches!(event.payload, Payload::Retraction { .. });
    let departement = institution.kind == InstitutionKind::Departement && event.family == Family::Orientation;
    let dossier = event.family == Family::Allocataire && event.envelope.household.is_some();
    let parcours = event.family == Family::Parcours;
    (departement || dossier || parcours) && !retraction
}

/// What the hub holds for the persons `event`'s identifiers lead to.
fn held_for<'a>(event: &CanonicalEvent, held: &'a [HeldAuthority]) -> impl Iterator<Item = &'a HeldAuthority> {
    let keys: Vec<String> = std::iter::once(&event.envelope.subject)
        .chain(&event.envelope.linked_keys)
        .map(|key| key.as_str().to_owned())
        .collect();
    held.iter().filter(move |h| keys.contains(&h.subject_key))
}

/// Decides a fact against what the hub holds for the persons its identifiers lead to (`held`:
/// one entry per linked key known to the hub).
pub fn check(institution: &Institution, event: &CanonicalEvent, held: &[HeldAuthority]) -> Result<(), Denied> {
    if event.family == Family::Allocataire {
        return check_dossier(event, held);
    }
    if event.family == Family::Parcours && institution.kind != InstitutionKind::Departement {
        return check_accompanies(institution, event, held);
    }
    let caller = institution.territory.as_deref();
    for dossier in held_for(event, held) {
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

/// A parcours fact of France Travail or of a structure: only for a person it accompanies, from
/// the hub's state (the département's orientation and référent facts, France Travail's
/// inscription), never from the event: the person's active référent belongs to one of the
/// caller's establishments (`sirets` in the institutions file), or an orientation decision sent
/// the person to one of them, or, for France Travail, the person is registered with it. Every
/// person the event's identifiers lead to must be so: an identifier of another person cannot
/// ride along. A person the hub does not hold is nobody's to accompany yet.
fn check_accompanies(institution: &Institution, event: &CanonicalEvent, held: &[HeldAuthority]) -> Result<(), Denied> {
    let ours = |siret: &Option<String>| siret.as_ref().is_some_and(|siret| institution.sirets.contains(siret));
    let registered = |person: &HeldAuthority| {
        institution.kind == InstitutionKind::FranceTravail && person.ft_status.as_deref() == Some("INSCRIT")
    };
    let persons: Vec<&HeldAuthority> = held_for(event, held).collect();
    let accompanied = !persons.is_empty()
        && persons
            .iter()
            .all(|person| ours(&person.referent_siret) || ours(&person.structure_siret) || registered(person));
    if accompanied {
        return Ok(());
    }
    let (rule, whom) = match institution.kind {
        InstitutionKind::FranceTravail => (
            "france_travail.accompanies",
            "persons registered with France Travail, or whose référent or orientation is one of its establishments'",
        ),
        _ => (
            "structure.accompanies",
            "persons whose active référent belongs to the structure or whom an orientation decision sent to it",
        ),
    };
    Err(Denied {
        rule,
        message: format!(
            "the hub does not hold this person as accompanied by the caller: parcours facts are pushed only for {whom} \
             (sirets in the institutions file); the département names the référent or the orientation first"
        ),
    })
}

/// A CAF/MSA dossier's fact about a person the hub holds in another caisse's dossier that is
/// still open: a caisse attaches to its dossiers only persons no other caisse's open dossier
/// holds, so that no caisse moves a person (and their territory) by what it pushes. A change of
/// caisse is a mutation: accepted once the former caisse closed the dossier (state 5 or 6), or
/// when the fact names the dossier it takes over (`OrganismeCedant` and its matricule). The
/// refusal surfaces the conflict to the caisse, counted and logged with the rule, never a
/// silent move.
fn check_dossier(event: &CanonicalEvent, held: &[HeldAuthority]) -> Result<(), Denied> {
    let Some(household) = &event.envelope.household else { return Ok(()) };
    let taken_over = match &event.payload {
        Payload::AddressChanged { mutation: Some(mutation), .. } => mutation.previous_household_key.as_ref(),
        _ => None,
    };
    for dossier in held_for(event, held) {
        let (Some(held_household), Some(held_organisme)) = (&dossier.household_key, &dossier.household_organisme)
        else {
            continue;
        };
        // Its own dossier of the person, or one the person was already in (the former caisse
        // closing the dossier a mutation took over): no takeover.
        let known = *held_household == household.key.as_str()
            || dossier.known_households.iter().any(|key| key == household.key.as_str());
        let same_caisse = *held_organisme == household.organisme || known;
        let closed = matches!(dossier.right_state.as_deref(), Some("5" | "6"));
        let named = taken_over.is_some_and(|key| key.as_str() == held_household);
        if same_caisse || closed || named {
            continue;
        }
        return Err(Denied {
            rule: "dossier.other_caisse",
            message: "the hub holds this person in another caisse's open dossier: a change of caisse is a mutation; \
                      push this fact once the former caisse has closed the dossier (MUT), or with the mutation naming \
                      the dossier taken over (organisme cédant and matricule)"
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
            household_key: None,
            household_organisme: None,
            right_state: None,
            known_households: Vec::new(),
            referent_siret: None,
            structure_siret: None,
            ft_status: None,
        }
    }

    fn in_dossier(organisme: &str, household: &str, right_state: &str) -> HeldAuthority {
        HeldAuthority {
            household_key: Some(household.into()),
            household_organisme: Some(organisme.into()),
            right_state: Some(right_state.into()),
            ..held("nir:aa", Some("52"), None, Some(1))
        }
    }

    #[test]
    fn a_caisse_cannot_take_over_a_person_of_another_caisses_open_dossier() {
        let institutions = Institutions::from_toml(
            "[[institution]]\nid = \"caf-691\"\nkind = \"CAF\"\norganisme = \"691\"\nserves = [\"69M\"]\n",
        )
        .expect("valid");
        let caf691 = institutions.get("caf-691").expect("listed");
        let mut event = fact(10, Payload::SddChanged { soumis: true });
        event.family = Family::Allocataire;
        event.envelope.household = Some(passerelle_domain::event::HouseholdRef {
            key: SubjectKey("hh:lyon".into()),
            organisme: "691".into(),
            role: None,
        });
        assert!(needs_hub_state(caf691, &event));
        let denial = check(caf691, &event, &[in_dossier("521", "hh:haute-marne", "2")]).expect_err("takeover");
        assert_eq!(denial.rule, "dossier.other_caisse");
        // Its own dossiers, a closed dossier elsewhere, a person unknown or without a dossier.
        assert!(check(caf691, &event, &[in_dossier("691", "hh:other", "2")]).is_ok());
        assert!(check(caf691, &event, &[in_dossier("521", "hh:haute-marne", "5")]).is_ok());
        assert!(check(caf691, &event, &[in_dossier("521", "hh:haute-marne", "6")]).is_ok());
        assert!(check(caf691, &event, &[]).is_ok());
        assert!(check(caf691, &event, &[held("nir:aa", Some("52"), None, Some(1))]).is_ok());
        // The mutation naming the dossier it takes over.
        event.payload = Payload::AddressChanged {
            previous_authority: Some("52".into()),
            mutation: Some(passerelle_domain::event::Mutation {
                organisme_cedant: "521".into(),
                organisme_prenant: "691".into(),
                previous_household_key: Some(SubjectKey("hh:haute-marne".into())),
            }),
        };
        assert!(check(caf691, &event, &[in_dossier("521", "hh:haute-marne", "2")]).is_ok());
        assert!(check(caf691, &event, &[in_dossier("521", "hh:elsewhere", "2")]).is_err(), "another dossier");
        // A dossier the person was already in (the former caisse closing after the mutation).
        let before =
            HeldAuthority { known_households: vec!["hh:lyon".into()], ..in_dossier("521", "hh:haute-marne", "2") };
        event.payload = Payload::SddChanged { soumis: false };
        assert!(check(caf691, &event, &[before]).is_ok());
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

    /// The attacker's test: a structure or France Travail that pushes for a person it does not
    /// accompany, whatever the event says, and with an identifier of a person it does accompany
    /// riding along.
    #[test]
    fn a_structure_or_france_travail_pushes_parcours_facts_only_for_the_persons_it_accompanies() {
        let institutions = Institutions::from_toml(
            "[[institution]]\nid = \"ml\"\nkind = \"STRUCTURE\"\nsirets = [\"73282932000074\"]\n\
             [[institution]]\nid = \"ft\"\nkind = \"FRANCE_TRAVAIL\"\nsirets = [\"13000548100010\"]\n",
        )
        .expect("valid");
        let (ml, ft) = (institutions.get("ml").expect("listed"), institutions.get("ft").expect("listed"));
        let mut event = fact(10, Payload::RendezVousHonoured { rdv_id: "rdv-1".into() });
        event.family = Family::Parcours;
        assert!(needs_hub_state(ml, &event));
        let accompanied_by =
            |key: &str, referent: Option<&str>, structure: Option<&str>, ft_status: Option<&str>| HeldAuthority {
                referent_siret: referent.map(str::to_owned),
                structure_siret: structure.map(str::to_owned),
                ft_status: ft_status.map(str::to_owned),
                ..held(key, Some("52"), None, Some(1))
            };
        let ml_siret = Some("73282932000074");
        // Its référent, or its orientation.
        assert!(check(ml, &event, &[accompanied_by("nir:aa", ml_siret, None, None)]).is_ok());
        assert!(check(ml, &event, &[accompanied_by("nir:aa", Some("13000548100010"), ml_siret, None)]).is_ok());
        // Someone else's, unknown to the hub, or registered with France Travail only.
        for held in [
            vec![accompanied_by("nir:aa", Some("13000548100010"), None, None)],
            vec![],
            vec![accompanied_by("nir:aa", None, None, Some("INSCRIT"))],
        ] {
            let denial = check(ml, &event, &held).expect_err("not accompanied");
            assert_eq!(denial.rule, "structure.accompanies");
        }
        // An identifier of another person riding along with one of its own.
        let both = [
            accompanied_by("nir:aa", ml_siret, None, None),
            accompanied_by("dep:bb", Some("13000548100010"), None, None),
        ];
        assert_eq!(check(ml, &event, &both).expect_err("another person").rule, "structure.accompanies");
        // France Travail: its registered persons and its establishments' orientations.
        assert!(check(ft, &event, &[accompanied_by("nir:aa", None, None, Some("INSCRIT"))]).is_ok());
        assert!(check(ft, &event, &[accompanied_by("nir:aa", None, Some("13000548100010"), None)]).is_ok());
        let denial = check(ft, &event, &[accompanied_by("nir:aa", None, None, Some("RADIATION"))]).expect_err("gone");
        assert_eq!(denial.rule, "france_travail.accompanies");
        assert!(check(ft, &event, &[accompanied_by("nir:aa", ml_siret, None, None)]).is_err());
    }
}
