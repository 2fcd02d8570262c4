//! Events the end-to-end tests push, with the personal data they must never leak.
#![allow(dead_code)]

use passerelle_ingest::proto::{
    self, AllocataireEvent, DemandeurEmploiEvent, Household, Location, OrientationEvent, Person,
    allocataire_event::Fact as Caf, demandeur_emploi_event::Fact as Ft, orientation_event::Fact as Cd,
};

pub const NIR_LEGRAND: &str = "1850752121003";
pub const NIR_FONTAINE: &str = "2870552121004";
/// An MSA allocataire: the matricule is the NIR.
pub const NIR_MSA: &str = "1790352121005";
pub const FT_LEGRAND: &str = "12345678901";
pub const FT_ONLY: &str = "98765432109";

pub fn nir15(nir13: &str) -> String {
    passerelle_domain::Nir::parse(nir13).expect("fixture NIR").with_key()
}

/// Every string that identifies a fixture person and must never appear in clear outside the
/// sealed personal fields.
pub fn personal_needles() -> Vec<String> {
    vec![
        NIR_LEGRAND.into(),
        nir15(NIR_LEGRAND),
        NIR_FONTAINE.into(),
        nir15(NIR_FONTAINE),
        NIR_MSA.into(),
        nir15(NIR_MSA),
        "LEGRAND".into(),
        "Aurélie".into(),
        "FONTAINE".into(),
        "Mireille".into(),
        "VIGNERON".into(),
        "1985-07-12".into(),
        "1987-05-03".into(),
        "1979-03-30".into(),
        FT_LEGRAND.into(),
        "1 rue des Tanneurs".into(),
    ]
}

pub use passerelle::demo::person;

pub fn legrand() -> Option<Person> {
    person(NIR_LEGRAND, "", "LEGRAND", "Aurélie", "1985-07-12")
}

pub fn fontaine() -> Option<Person> {
    person(&nir15(NIR_FONTAINE), "", "FONTAINE", "Mireille", "1987-05-03")
}

pub fn in_52() -> Option<Location> {
    Some(Location { receiving_authority: "052".into(), commune: "52121".into() })
}

pub fn caf_household(role: &str) -> Option<Household> {
    Some(Household { organisme: "521".into(), matricule: "2055990".into(), role: role.into() })
}

pub fn caf(event_id: &str, when: &str, who: Option<Person>, role: &str, fact: Caf) -> AllocataireEvent {
    AllocataireEvent {
        event_id: event_id.into(),
        occurred_at: when.into(),
        person: who,
        household: caf_household(role),
        location: in_52(),
        corrects_event_id: String::new(),
        fact: Some(fact),
    }
}

pub fn right_opened() -> Caf {
    Caf::RightOpened(proto::RsaRightOpened { date_ouverture: "2026-09-01".into() })
}

pub fn sdd(soumis: bool) -> Caf {
    Caf::SddChanged(proto::SddChanged { soumis })
}

pub fn ft(event_id: &str, when: &str, who: Option<Person>, fact: Ft) -> DemandeurEmploiEvent {
    DemandeurEmploiEvent {
        event_id: event_id.into(),
        occurred_at: when.into(),
        person: who,
        location: Some(Location { receiving_authority: String::new(), commune: "52121".into() }),
        corrects_event_id: String::new(),
        fact: Some(fact),
    }
}

pub fn cd(event_id: &str, when: &str, who: Option<Person>, fact: Cd) -> OrientationEvent {
    OrientationEvent {
        event_id: event_id.into(),
        occurred_at: when.into(),
        person: who,
        location: Some(Location { receiving_authority: "52".into(), commune: String::new() }),
        corrects_event_id: String::new(),
        fact: Some(fact),
    }
}

pub fn referent() -> proto::Agent {
    proto::Agent {
        uid: "agent-cd52-0042".into(),
        email: "referent@haute-marne.example".into(),
        siret: "73282932000074".into(),
    }
}

/// A France Travail inscription (category 1) of `who`.
/// A socio-professional orientation to the Haute-Marne's insertion association, with its référent.
pub fn orientation_decided() -> Cd {
    Cd::OrientationDecided(proto::OrientationDecided {
        r#type: "SOCIO_PRO".into(),
        structure_siret: "73282932000074".into(),
        structure_nom: "Association d'insertion".into(),
        referent: Some(referent()),
    })
}

pub fn ft_inscription(id: &str, who: Option<proto::Person>) -> proto::DemandeurEmploiEvent {
    ft(
        id,
        "2026-09-22T08:00:00+02:00",
        who,
        Ft::Inscription(proto::Inscription {
            categorie: "1".into(),
            motif: String::new(),
            date_inscription: "2026-09-22".into(),
        }),
    )
}
