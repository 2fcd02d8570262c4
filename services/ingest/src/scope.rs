//! Who may push what. The decision compares the caller's credentials with what the hub derives
//! from the event's content (caisse of the dossier, RSA authority of the fact), never with a
//! field the caller sets only to pass the check. Pure: no I/O, tested as a matrix.

use passerelle_domain::{
    event::{CanonicalEvent, Family, InstitutionKind, Payload, Source},
    territory::TO_ASSIGN,
};

use crate::institutions::{Institution, Institutions};

/// A refusal: the rule broken, and an explanation without personal data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    pub rule: &'static str,
    pub message: String,
}

fn denied(rule: &'static str, message: impl Into<String>) -> Denied {
    Denied { rule, message: message.into() }
}

/// Whether `institution` may call a family's service at all (before reading the events).
/// A département may call the allocataire service only to relay a CNAF flux (`relay_file`).
pub fn may_call(institution: &Institution, family: Family, relay_file: Option<&str>) -> Result<(), Denied> {
    let allowed = match (institution.kind, family) {
        (InstitutionKind::Caf | InstitutionKind::Msa, Family::Allocataire) => true,
        (InstitutionKind::FranceTravail, Family::DemandeurEmploi) => true,
        (InstitutionKind::Departement, Family::Orientation) => true,
        (InstitutionKind::Departement, Family::Allocataire) => relay_file.is_some(),
        // The parcours: the authority, France Travail and the structures, each for the persons
        // it accompanies (crate::reach, from the hub's state).
        (
            InstitutionKind::Departement | InstitutionKind::FranceTravail | InstitutionKind::Structure,
            Family::Parcours,
        ) => true,
        _ => false,
    };
    if allowed {
        return Ok(());
    }
    if institution.kind == InstitutionKind::Departement && family == Family::Allocataire {
        return Err(denied(
            "relay",
            "a département publishes allocataire events only when relaying a CNAF flux (name the file in x-passerelle-relay-file)",
        ));
    }
    Err(denied(
        "family",
        format!("a {} institution does not publish {} events", institution.kind.code(), family.label()),
    ))
}

/// Checks one normalised event against the caller's scope and, for a relayed CNAF flux, makes
/// the event the caisse's, recorded as relayed by the authority from that file.
pub fn authorise(
    institution: &Institution,
    relay_file: Option<&str>,
    institutions: &Institutions,
    event: &mut CanonicalEvent,
) -> Result<(), Denied> {
    may_call(institution, event.family, relay_file)?;
    let territory = event.envelope.territory.clone();
    let organisme = event.envelope.household.as_ref().map(|h| h.organisme.clone());
    if event.family == Family::Parcours
        && institution.kind != InstitutionKind::Departement
        && matches!(event.payload, Payload::SanctionDecided { .. } | Payload::SanctionLifted { .. })
    {
        return Err(denied(
            "sanction.authority",
            "a suspension-remobilisation is decided (and lifted) by the président du conseil départemental: only the RSA authority pushes it",
        ));
    }
    match (institution.kind, event.family) {
        (InstitutionKind::Caf | InstitutionKind::Msa, Family::Allocataire) => {
            if let Some(organisme) = organisme
                && Some(&organisme) != institution.organisme.as_ref()
            {
                return Err(denied("organisme", "the dossier belongs to another caisse than the caller's"));
            }
            event.envelope.source = source(institution, None, None);
        }
        (InstitutionKind::FranceTravail, Family::DemandeurEmploi) => {
            event.envelope.source = source(institution, None, None);
        }
        (InstitutionKind::Departement, Family::Orientation | Family::Parcours) => {
            if let Some(territory) = territory
                && Some(&territory) != institution.territory.as_ref()
            {
                return Err(denied("territory", "the fact belongs to another RSA authority than the caller's"));
            }
            // The fact is recorded as the caller's authority's, whatever its location said: the
            // projection counts it only if that authority is the person's (from the hub's state).
            event.envelope.territory = institution.territory.clone();
            event.envelope.source = source(institution, None, None);
        }
        (InstitutionKind::Departement, Family::Allocataire) => {
            let file = relay_file.unwrap_or_default();
            match territory {
                Some(territory) if Some(&territory) == institution.territory.as_ref() => {}
                // A flux received by département 69 and relayed by the Métropole or the Rhône
                // is that authority's: the file came to it (the caller's identity, from the
                // institutions file, settles what the flux's IDEPARTE cannot).
                Some(territory)
                    if territory == TO_ASSIGN
                        && institution.territory.as_deref().is_some_and(|own| matches!(own, "69M" | "69D")) =>
                {
                    event.envelope.territory = institution.territory.clone();
                }
                Some(_) => {
                    return Err(denied(
                        "relay.territory",
                        "a relayed dossier must be received by the relaying authority",
                    ));
                }
                None => return Err(denied("relay.territory", "a relayed fact must say which authority received it")),
            }
            let Some(organisme) = organisme else {
                return Err(denied("relay.organisme", "a relayed fact must name its caisse (household.organisme)"));
            };
            let Some(caisse) = institutions.caisse(&organisme) else {
                return Err(denied(
                    "relay.organisme",
                    "the caisse of the relayed dossier is not in the institutions file",
                ));
            };
            if !caisse.serves.iter().any(|served| Some(served) == institution.territory.as_ref()) {
                return Err(denied(
                    "relay.caisse",
                    "the caisse of the relayed dossier does not serve the relaying authority's territory (serves in the institutions file)",
                ));
            }
            event.envelope.source = source(caisse, Some(&institution.id), Some(file));
        }
        (InstitutionKind::FranceTravail | InstitutionKind::Structure, Family::Parcours) => {
            // Where they accompany the person says nothing of the person's authority: only the
            // CAF/MSA dossier places a person.
            event.envelope.territory = None;
            event.envelope.source = source(institution, None, None);
        }
        _ => unreachable!("may_call refused the other combinations"),
    }
    Ok(())
}

fn source(owner: &Institution, relayed_by: Option<&str>, relay_file: Option<&str>) -> Source {
    Source {
        institution: owner.id.clone(),
        kind: owner.kind,
        relayed_by: relayed_by.map(str::to_owned),
        relay_file: relay_file.map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use passerelle_domain::{
        EventId,
        event::{Envelope, HouseholdRef, Payload, PersonalData, SubjectKey},
    };

    use super::*;

    const INSTITUTIONS: &str = r#"
        [[institution]]
        id = "caf-521"
        kind = "CAF"
        organisme = "521"
        serves = ["52"]
        [[institution]]
        id = "msa-052"
        kind = "MSA"
        organisme = "052"
        serves = ["10", "52"]
        [[institution]]
        id = "caf-511"
        kind = "CAF"
        organisme = "511"
        serves = ["51"]
        [[institution]]
        id = "france-travail"
        kind = "FRANCE_TRAVAIL"
        [[institution]]
        id = "cd-52"
        kind = "DEPARTEMENT"
        territory = "52"
        [[institution]]
        id = "ml-chaumont"
        kind = "STRUCTURE"
        sirets = ["73282932000074"]
    "#;

    /// An event of `family` whose content places it in the Haute-Marne (52) with caisse
    /// `organisme`, or elsewhere (the Marne, 51, caisse 511) when `own` is false.
    fn event(family: Family, own_territory: bool, organisme: &str) -> CanonicalEvent {
        let payload = match family {
            Family::Allocataire => Payload::SddChanged { soumis: true },
            Family::DemandeurEmploi => Payload::PpaeSigned { date_signature: chrono::NaiveDate::default() },
            Family::Orientation => Payload::OppositionRecorded,
            Family::Parcours => Payload::RendezVousHonoured { rdv_id: "rdv-1".into() },
        };
        CanonicalEvent {
            family,
            envelope: Envelope {
                event_id: EventId::parse("matrix-1").expect("valid"),
                occurred_at: Utc::now(),
                recorded_at: Utc::now(),
                source: Source {
                    institution: "caller".into(),
                    kind: InstitutionKind::Caf,
                    relayed_by: None,
                    relay_file: None,
                },
                subject: SubjectKey("nir:00".into()),
                linked_keys: vec![SubjectKey("nir:00".into())],
                household: (family == Family::Allocataire).then(|| HouseholdRef {
                    key: SubjectKey("foyer:00".into()),
                    organisme: organisme.into(),
                    role: None,
                }),
                territory: Some(if own_territory { "52" } else { "51" }.into()),
                commune: None,
                corrects_event_id: None,
            },
            payload,
            personal: PersonalData::default(),
        }
    }

    /// (caller, relay file, family, own territory or organisme, expected outcome)
    type Case = (&'static str, Option<&'static str>, Family, bool, Result<(), &'static str>);

    #[test]
    fn the_authorisation_matrix_of_institutions_families_and_scopes() {
        let institutions = Institutions::from_toml(INSTITUTIONS).expect("valid");
        let relay = Some("RSABEM.xml");
        // (caller, relay file, family, own territory or organisme, expected outcome)
        let matrix: &[Case] = &[
            ("caf-521", None, Family::Allocataire, true, Ok(())),
            ("caf-521", None, Family::Allocataire, false, Err("organisme")),
            ("caf-521", None, Family::DemandeurEmploi, true, Err("family")),
            ("caf-521", None, Family::DemandeurEmploi, false, Err("family")),
            ("caf-521", None, Family::Orientation, true, Err("family")),
            ("caf-521", None, Family::Orientation, false, Err("family")),
            ("caf-521", relay, Family::Orientation, true, Err("family")),
            ("msa-052", None, Family::Allocataire, true, Ok(())),
            ("msa-052", None, Family::Allocataire, false, Err("organisme")),
            ("msa-052", None, Family::DemandeurEmploi, true, Err("family")),
            ("msa-052", None, Family::Orientation, true, Err("family")),
            ("france-travail", None, Family::DemandeurEmploi, true, Ok(())),
            ("france-travail", None, Family::DemandeurEmploi, false, Ok(())),
            ("france-travail", None, Family::Allocataire, true, Err("family")),
            ("france-travail", None, Family::Allocataire, false, Err("family")),
            ("france-travail", None, Family::Orientation, true, Err("family")),
            ("france-travail", None, Family::Orientation, false, Err("family")),
            ("cd-52", None, Family::Orientation, true, Ok(())),
            ("cd-52", None, Family::Orientation, false, Err("territory")),
            ("cd-52", None, Family::DemandeurEmploi, true, Err("family")),
            ("cd-52", None, Family::DemandeurEmploi, false, Err("family")),
            ("cd-52", None, Family::Allocataire, true, Err("relay")),
            ("cd-52", None, Family::Allocataire, false, Err("relay")),
            ("cd-52", relay, Family::Allocataire, true, Ok(())),
            ("cd-52", relay, Family::Allocataire, false, Err("relay.territory")),
            // The parcours: every accompanying kind may call; whom for is decided from the hub's
            // state (crate::reach); the authority's facts are its territory's.
            ("cd-52", None, Family::Parcours, true, Ok(())),
            ("cd-52", None, Family::Parcours, false, Err("territory")),
            ("france-travail", None, Family::Parcours, true, Ok(())),
            ("ml-chaumont", None, Family::Parcours, true, Ok(())),
            ("ml-chaumont", None, Family::Parcours, false, Ok(())),
            ("ml-chaumont", None, Family::Orientation, true, Err("family")),
            ("ml-chaumont", None, Family::Allocataire, true, Err("family")),
            ("ml-chaumont", relay, Family::Allocataire, true, Err("family")),
            ("ml-chaumont", None, Family::DemandeurEmploi, true, Err("family")),
            ("caf-521", None, Family::Parcours, true, Err("family")),
            ("msa-052", None, Family::Parcours, true, Err("family")),
        ];
        for (caller, relay_file, family, own, expected) in matrix {
            let institution = institutions.get(caller).expect("listed");
            let organisme = match (*caller, *own) {
                ("msa-052", true) => "052",
                (_, true) => "521",
                (_, false) => "511",
            };
            let mut candidate = event(*family, *own, organisme);
            let outcome = authorise(institution, *relay_file, &institutions, &mut candidate).map_err(|d| d.rule);
            assert_eq!(outcome, *expected, "{caller} relay={relay_file:?} {family:?} own={own}");
        }
    }

    #[test]
    fn a_relayed_fact_is_the_caisses_recorded_as_relayed_by_the_authority() {
        let institutions = Institutions::from_toml(INSTITUTIONS).expect("valid");
        let cd = institutions.get("cd-52").expect("listed");
        let mut relayed = event(Family::Allocataire, true, "521");
        authorise(cd, Some("RSABEM.xml"), &institutions, &mut relayed).expect("allowed");
        assert_eq!(relayed.envelope.source.institution, "caf-521");
        assert_eq!(relayed.envelope.source.kind, InstitutionKind::Caf);
        assert_eq!(relayed.envelope.source.relayed_by.as_deref(), Some("cd-52"));
        assert_eq!(relayed.envelope.source.relay_file.as_deref(), Some("RSABEM.xml"));
        // A caisse that serves another territory: its flux is not the authority's to relay,
        // whatever the dossier's receiving authority says.
        let mut other_caisse = event(Family::Allocataire, true, "511");
        let denial = authorise(cd, Some("RSABEM.xml"), &institutions, &mut other_caisse).expect_err("not served");
        assert_eq!(denial.rule, "relay.caisse");
        let mut unknown_caisse = event(Family::Allocataire, true, "999");
        let denial = authorise(cd, Some("RSABEM.xml"), &institutions, &mut unknown_caisse).expect_err("unknown caisse");
        assert_eq!(denial.rule, "relay.organisme");
    }

    #[test]
    fn a_flux_received_by_69_and_relayed_by_the_metropole_or_the_rhone_is_the_relayers() {
        let rhone = r#"
            [[institution]]
            id = "caf-691"
            kind = "CAF"
            organisme = "691"
            serves = ["69M", "69D"]
            [[institution]]
            id = "cd-69D"
            kind = "DEPARTEMENT"
            territory = "69D"
        "#;
        let institutions = Institutions::from_toml(&format!("{INSTITUTIONS}{rhone}")).expect("valid");
        let mut held = event(Family::Allocataire, true, "691");
        held.envelope.territory = Some(TO_ASSIGN.into());
        authorise(institutions.get("cd-69D").expect("listed"), Some("RSABEM.xml"), &institutions, &mut held)
            .expect("the Rhône relays its flux");
        assert_eq!(held.envelope.territory.as_deref(), Some("69D"), "placed by who relays it");
        // Pushed by the caisse itself, it stays "à affecter"; relayed by another authority, refused.
        let mut pushed = event(Family::Allocataire, true, "691");
        pushed.envelope.territory = Some(TO_ASSIGN.into());
        authorise(institutions.get("caf-691").expect("listed"), None, &institutions, &mut pushed).expect("own dossier");
        assert_eq!(pushed.envelope.territory.as_deref(), Some(TO_ASSIGN));
        let mut elsewhere = event(Family::Allocataire, true, "691");
        elsewhere.envelope.territory = Some(TO_ASSIGN.into());
        let denial =
            authorise(institutions.get("cd-52").expect("listed"), Some("RSABEM.xml"), &institutions, &mut elsewhere)
                .expect_err("not the Rhône's");
        assert_eq!(denial.rule, "relay.territory");
    }

    #[test]
    fn a_departements_fact_is_recorded_as_its_authoritys_whatever_the_location_says() {
        let institutions = Institutions::from_toml(INSTITUTIONS).expect("valid");
        let mut fact = event(Family::Orientation, true, "521");
        fact.envelope.territory = Some("52".into());
        authorise(institutions.get("cd-52").expect("listed"), None, &institutions, &mut fact).expect("own");
        assert_eq!(fact.envelope.territory.as_deref(), Some("52"));
        let mut retraction = event(Family::Orientation, true, "521");
        retraction.envelope.territory = None;
        authorise(institutions.get("cd-52").expect("listed"), None, &institutions, &mut retraction).expect("own");
        assert_eq!(retraction.envelope.territory.as_deref(), Some("52"), "the pushing authority");
    }

    #[test]
    fn only_the_authority_decides_or_lifts_a_sanction_and_a_structure_places_nobody() {
        let institutions = Institutions::from_toml(INSTITUTIONS).expect("valid");
        let sanction = Payload::SanctionDecided {
            sanction_id: "s-1".into(),
            share_percent: 100,
            duration_months: 1,
            start: chrono::NaiveDate::default(),
        };
        let lifted = Payload::SanctionLifted {
            sanction_id: "s-1".into(),
            lifted_on: chrono::NaiveDate::default(),
            back_payment: true,
        };
        for payload in [sanction, lifted] {
            for caller in ["france-travail", "ml-chaumont"] {
                let mut fact = event(Family::Parcours, true, "521");
                fact.payload = payload.clone();
                let denial = authorise(institutions.get(caller).expect("listed"), None, &institutions, &mut fact)
                    .expect_err("not the authority");
                assert_eq!(denial.rule, "sanction.authority", "{caller}");
            }
            let mut fact = event(Family::Parcours, true, "521");
            fact.payload = payload.clone();
            authorise(institutions.get("cd-52").expect("listed"), None, &institutions, &mut fact)
                .expect("the authority");
            assert_eq!(fact.envelope.territory.as_deref(), Some("52"));
        }
        // A structure that writes a location does not place the person there.
        let mut fact = event(Family::Parcours, true, "521");
        authorise(institutions.get("ml-chaumont").expect("listed"), None, &institutions, &mut fact).expect("may call");
        assert_eq!(fact.envelope.territory, None);
        assert_eq!(fact.envelope.source.kind, InstitutionKind::Structure);
        assert_eq!(fact.envelope.source.institution, "ml-chaumont");
    }

    #[test]
    fn the_source_is_the_callers_never_what_the_request_claims() {
        let institutions = Institutions::from_toml(INSTITUTIONS).expect("valid");
        let mut claimed = event(Family::DemandeurEmploi, true, "521");
        claimed.envelope.source.institution = "someone-else".into();
        authorise(institutions.get("france-travail").expect("listed"), None, &institutions, &mut claimed).expect("ok");
        assert_eq!(claimed.envelope.source.institution, "france-travail");
    }

    #[test]
    fn an_institutions_file_with_a_caisse_without_organisme_is_refused() {
        let broken = "[[institution]]\nid = \"caf-x\"\nkind = \"CAF\"\n";
        assert!(Institutions::from_toml(broken).expect_err("invalid").contains("organisme"));
        let ambiguous = "[[institution]]\nid = \"cd-69\"\nkind = \"DEPARTEMENT\"\nterritory = \"69\"\n";
        assert!(Institutions::from_toml(ambiguous).is_err());
    }
}
