//! The parcours of a person (DOMAIN.md §8): diagnostic, engagement plan, rendez-vous and
//! sanctions. What the hub keeps in clear (dates, statuses, hours, the structures' SIRETs, the
//! share and length of a sanction) is in the event's payload; every label, the situations noted in
//! the diagnostic and whatever tells of the person's health are personal data
//! ([`ParcoursDetail`]), sealed with the subject's data key like names and NIRs.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::{Invalid, codes::closed_list};

closed_list!(
    /// The themes of the diagnostic's situations and of the plan's objectives and actions (the
    /// referential of Carnet de bord, which rdv-insertion and the départements' tools follow).
    Theme, "theme.unknown", {
        Logement => "LOGEMENT",
        Emploi => "EMPLOI",
        Formation => "FORMATION",
        DifficulteAdministrative => "DIFFICULTE_ADMINISTRATIVE",
        DifficulteFinanciere => "DIFFICULTE_FINANCIERE",
        Mobilite => "MOBILITE",
        Sante => "SANTE",
        ContraintesFamiliales => "CONTRAINTES_FAMILIALES",
        MaitriseLangue => "MAITRISE_LANGUE",
        Numerique => "NUMERIQUE",
    }
);

impl Theme {
    /// Whether every item of the theme is health data (RGPD art. 9): shown only where the
    /// policy allows sensitive items, whatever the pusher said.
    pub fn sensitive(self) -> bool {
        self == Theme::Sante
    }
}

closed_list!(
    /// The status of an action of the plan.
    ActionStatus, "action_status.unknown", {
        Prevue => "PREVUE",
        EnCours => "EN_COURS",
        Realisee => "REALISEE",
        Abandonnee => "ABANDONNEE",
    }
);

closed_list!(
    /// The level of qualification (cadre national des certifications professionnelles, 2019:
    /// levels 1 to 8; 3 is the CAP, 4 the baccalauréat, 5 bac + 2, 6 the licence).
    NiveauQualification, "niveau_qualification.unknown", {
        N1 => "1",
        N2 => "2",
        N3 => "3",
        N4 => "4",
        N5 => "5",
        N6 => "6",
        N7 => "7",
        N8 => "8",
    }
);

closed_list!(
    /// Why the weekly activity hours of a contrat d'engagement are below 15 h (reduced) or 0
    /// (exempted): loi n° 2023-1196, art. L262-34 CASF. Sealed: a health or disability motif is
    /// health data.
    HoursMotif, "hours_motif.unknown", {
        Sante => "SANTE",
        Handicap => "HANDICAP",
        ParentIsole => "PARENT_ISOLE",
        Aidant => "AIDANT",
        Autre => "AUTRE",
    }
);

closed_list!(
    /// What a rendez-vous is for.
    RendezVousObjet, "rendez_vous_objet.unknown", {
        Orientation => "ORIENTATION",
        Accompagnement => "ACCOMPAGNEMENT",
        Diagnostic => "DIAGNOSTIC",
        SignatureContrat => "SIGNATURE_CONTRAT",
        Suivi => "SUIVI",
    }
);

/// The weekly activity hours of a contrat d'engagement by default (loi n° 2023-1196).
pub const DEFAULT_WEEKLY_HOURS: u8 = 15;

/// An action of the plan, as the hub keeps it in clear: its id (the pusher's, unique within the
/// person's plan), status, planned dates and prescriber. Its theme and label are sealed
/// ([`ActionDetail`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanAction {
    pub action_id: String,
    pub status: ActionStatus,
    pub start: Option<NaiveDate>,
    pub end: Option<NaiveDate>,
    pub prescriber_siret: Option<String>,
}

/// A situation noted in the diagnostic (sealed).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SituationNoted {
    pub theme: Theme,
    pub label: String,
    /// Whether the label is one of the referential's; an unknown label is kept, flagged.
    pub known: bool,
    /// Health or disability (RGPD art. 9): always for the theme SANTE, or as the pusher marked it
    /// (an RQTH noted under EMPLOI, say).
    pub sensitive: bool,
    pub noted_on: NaiveDate,
    /// The uid of the agent who noted it.
    pub noted_by: String,
}

/// An objective of the plan (sealed).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Objective {
    pub theme: Theme,
    pub label: String,
}

/// The theme and label of an action of the plan (sealed), by the action's id.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionDetail {
    pub action_id: String,
    pub theme: Theme,
    pub label: String,
}

/// The personal part of a parcours fact, sealed with the subject's data key. `Debug` counts the
/// items, never prints them.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParcoursDetail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dernier_emploi: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experience: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub situations: Vec<SituationNoted>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objectives: Vec<Objective>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<ActionDetail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours_motif: Option<HoursMotif>,
    /// The motif of a sanction, in the département's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub motif: Option<String>,
}

impl ParcoursDetail {
    pub fn is_empty(&self) -> bool {
        self == &ParcoursDetail::default()
    }
}

/// The items of a diagnostic or a plan print nothing of their content (their theme may be
/// health data).
macro_rules! opaque_debug {
    ($($item:ident),+) => {
        $(impl std::fmt::Debug for $item {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($item), " { .. }"))
            }
        })+
    };
}
opaque_debug!(SituationNoted, Objective, ActionDetail);

impl std::fmt::Debug for ParcoursDetail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParcoursDetail")
            .field("dernier_emploi", &self.dernier_emploi.is_some())
            .field("experience", &self.experience.is_some())
            .field("situations", &self.situations.len())
            .field("objectives", &self.objectives.len())
            .field("actions", &self.actions.len())
            .field("hours_motif", &self.hours_motif.is_some())
            .field("motif", &self.motif.is_some())
            .finish()
    }
}

/// The situations of the referential the hub knows, by theme (DOMAIN.md §8's examples). A
/// label outside it is kept, flagged `known = false`: the referential is an open list, and the
/// full one (Carnet de bord's) is to be loaded here when it is published in a form the hub can
/// pin, as the commune list is.
const KNOWN_SITUATIONS: &[(Theme, &str)] = &[
    (Theme::Logement, "Doit quitter le logement"),
    (Theme::Logement, "Difficulté à payer le loyer"),
    (Theme::Mobilite, "Aucun moyen de transport à disposition"),
    (Theme::ContraintesFamiliales, "Enfant(s) de moins de 3 ans sans solution de garde"),
    (Theme::DifficulteFinanciere, "En situation de surendettement"),
    (Theme::Sante, "Existence d'un dossier MDPH"),
];

/// Whether a situation's label is one of the referential's for its theme (compared without
/// regard to case or surrounding spaces).
pub fn known_situation(theme: Theme, label: &str) -> bool {
    let label = label.trim();
    KNOWN_SITUATIONS.iter().any(|(known_theme, known)| *known_theme == theme && known.eq_ignore_ascii_case(label))
}

/// A ROME code (répertoire opérationnel des métiers et des emplois): a letter and four digits.
pub fn parse_rome(raw: &str) -> Result<String, Invalid> {
    let code = raw.trim().to_ascii_uppercase();
    let mut chars = code.chars();
    let well_formed =
        code.len() == 5 && chars.next().is_some_and(|c| c.is_ascii_uppercase()) && chars.all(|c| c.is_ascii_digit());
    if well_formed {
        Ok(code)
    } else {
        Err(Invalid::new("rome.format", "a ROME code is a letter and four digits (K1303)"))
    }
}

/// The pusher's id of an action, a rendez-vous or a sanction: 1 to 64 letters, digits, `-`, `_`,
/// `.` or `:`. It names the item in later facts; it must not embed personal data.
pub fn parse_item_id(raw: &str) -> Result<String, Invalid> {
    let id = raw.trim();
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':');
    if !id.is_empty() && id.chars().count() <= 64 && id.chars().all(allowed) {
        Ok(id.to_owned())
    } else {
        Err(Invalid::new("item_id.format", "1 to 64 letters, digits, - _ . or :"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_debug_of_a_parcours_detail_counts_its_items_and_prints_none() {
        let detail = ParcoursDetail {
            situations: vec![SituationNoted {
                theme: Theme::Sante,
                label: "Existence d'un dossier MDPH".into(),
                known: true,
                sensitive: true,
                noted_on: NaiveDate::from_ymd_opt(2026, 3, 2).expect("date"),
                noted_by: "agent-1".into(),
            }],
            motif: Some("absent aux trois rendez-vous".into()),
            ..ParcoursDetail::default()
        };
        let printed = format!("{detail:?}");
        for secret in ["MDPH", "SANTE", "Sante", "absent", "agent-1"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(printed.contains("situations: 1"), "{printed}");
    }

    #[test]
    fn themes_parse_in_either_case_and_only_health_is_sensitive_by_nature() {
        assert_eq!(Theme::parse("contraintes_familiales"), Ok(Theme::ContraintesFamiliales));
        assert_eq!(Theme::ALL.len(), 10);
        assert_eq!(Theme::ALL.iter().filter(|theme| theme.sensitive()).count(), 1);
        assert!(Theme::parse("loisirs").is_err());
    }

    #[test]
    fn rome_codes_item_ids_and_the_referential() {
        assert_eq!(parse_rome(" k1303 ").as_deref(), Ok("K1303"));
        for wrong in ["K130", "11303", "K13033", "K13O3"] {
            assert_eq!(parse_rome(wrong).expect_err(wrong).rule, "rome.format");
        }
        assert_eq!(parse_item_id("a-1").as_deref(), Ok("a-1"));
        assert!(parse_item_id("a 1").is_err() && parse_item_id("").is_err() && parse_item_id(&"a".repeat(65)).is_err());
        assert!(known_situation(Theme::Logement, "doit quitter le logement "));
        assert!(!known_situation(Theme::Mobilite, "Doit quitter le logement"));
    }
}
