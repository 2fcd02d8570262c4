//! The access policy (DOMAIN.md §6–7): one pure function decides, for an agent acting in a role
//! for an organisation, for a stated purpose, what they may see of a person's dossier, section
//! by section. No I/O: the caller gathers the situation, the policy decides, the journal keeps
//! the decision. The table of expected decisions (`docs/policy/decisions.csv`) is written from
//! DOMAIN.md, not from this code, and checked against it by the tests.

use serde::Serialize;

/// What an organisation is, for the law.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrganisationKind {
    /// The département (or Métropole de Lyon, collectivité…): the RSA authority of a territory.
    AutoriteRsa,
    /// A CAF or an MSA caisse.
    Caisse,
    /// A France Travail agency.
    FranceTravail,
    /// A structure d'accompagnement (association, CCAS, PLIE…), référents only.
    Structure,
}

/// The role an agent is habilitated to act in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    ChargeOrientation,
    GestionnaireRsa,
    AgentCaisse,
    ConseillerFt,
    AgentStructure,
    Dpo,
}

impl Role {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "charge_orientation" => Role::ChargeOrientation,
            "gestionnaire_rsa" => Role::GestionnaireRsa,
            "agent_caisse" => Role::AgentCaisse,
            "conseiller_ft" => Role::ConseillerFt,
            "agent_structure" => Role::AgentStructure,
            "dpo" => Role::Dpo,
            _ => return None,
        })
    }

    pub fn code(self) -> &'static str {
        match self {
            Role::ChargeOrientation => "charge_orientation",
            Role::GestionnaireRsa => "gestionnaire_rsa",
            Role::AgentCaisse => "agent_caisse",
            Role::ConseillerFt => "conseiller_ft",
            Role::AgentStructure => "agent_structure",
            Role::Dpo => "dpo",
        }
    }

    /// The kind of organisation the role is exercised in.
    pub fn organisation_kind(self) -> Option<OrganisationKind> {
        match self {
            Role::ChargeOrientation | Role::GestionnaireRsa => Some(OrganisationKind::AutoriteRsa),
            Role::AgentCaisse => Some(OrganisationKind::Caisse),
            Role::ConseillerFt => Some(OrganisationKind::FranceTravail),
            Role::AgentStructure => Some(OrganisationKind::Structure),
            Role::Dpo => None,
        }
    }
}

/// Why a read is made (a legal purpose of the processing; never fraud detection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    Orientation,
    Accompagnement,
    InstructionRsa,
}

impl Purpose {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "orientation" => Purpose::Orientation,
            "accompagnement" => Purpose::Accompagnement,
            "instruction_rsa" => Purpose::InstructionRsa,
            _ => return None,
        })
    }

    pub fn code(self) -> &'static str {
        match self {
            Purpose::Orientation => "orientation",
            Purpose::Accompagnement => "accompagnement",
            Purpose::InstructionRsa => "instruction_rsa",
        }
    }

    pub const ALL: [Purpose; 3] = [Purpose::Orientation, Purpose::Accompagnement, Purpose::InstructionRsa];
}

/// The sections of the dossier unique.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Section {
    Identite,
    DroitsRsa,
    Emploi,
    Parcours,
    /// The contrat d'engagement's plan, actions and statuses, activity hours, rendez-vous and
    /// sanctions (DOMAIN.md §8).
    Engagements,
    Diagnostic,
}

impl Section {
    pub const ALL: [Section; 6] = [
        Section::Identite,
        Section::DroitsRsa,
        Section::Emploi,
        Section::Parcours,
        Section::Engagements,
        Section::Diagnostic,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Section::Identite => "identite",
            Section::DroitsRsa => "droits_rsa",
            Section::Emploi => "emploi",
            Section::Parcours => "parcours",
            Section::Engagements => "engagements",
            Section::Diagnostic => "diagnostic",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Section::ALL.into_iter().find(|section| section.code() == text)
    }
}

/// How the agent's organisation stands to the person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// The person lives in the organisation's territory (authority, France Travail agency) or
    /// belongs to a household of the organisation's caisse.
    Own,
    /// The person lived in the organisation's territory and moved out.
    MovedOut,
    /// Neither.
    None,
}

/// What the policy needs to know about the person, gathered by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Situation {
    pub relation: Relation,
    /// The agent is the person's active référent.
    pub referent: bool,
    /// The person opposed the parcours processing.
    pub opposition: bool,
    /// The person consented to sharing their diagnostic beyond their référent.
    pub consent_diagnostic: bool,
}

/// Why a section is withheld.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Motif {
    /// The person opposed the parcours processing (accompaniment data stops flowing).
    Opposition,
    /// The diagnostic is shared beyond the référent only with the person's consent.
    Consentement,
    /// The agent's role has no need to know this section.
    Role,
    /// The stated purpose does not need this section.
    MotifAcces,
    /// The person moved out of the agent's territory.
    Demenagement,
}

impl Motif {
    pub fn code(self) -> &'static str {
        match self {
            Motif::Opposition => "opposition",
            Motif::Consentement => "consentement",
            Motif::Role => "role",
            Motif::MotifAcces => "motif_acces",
            Motif::Demenagement => "demenagement",
        }
    }
}

/// The decision for one section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Shown,
    /// Shown in part (a France Travail conseiller sees the SDD flag and the right state only).
    Reduced,
    Withheld(Motif),
}

/// The decision for a whole read, before any section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The person is out of reach: answered exactly as a person who does not exist.
    NotFound,
    /// The role may not read dossiers for this purpose (independent of the person).
    Refused(Motif),
    /// In reach; each section decided by [`section`].
    Granted,
}

/// Whether the role may read for this purpose at all: decided before looking at any person,
/// so the answer says nothing about who exists.
pub fn purpose_allowed(role: Role, purpose: Purpose) -> bool {
    match role {
        Role::ChargeOrientation => matches!(purpose, Purpose::Orientation | Purpose::Accompagnement),
        Role::GestionnaireRsa => matches!(purpose, Purpose::InstructionRsa | Purpose::Orientation),
        Role::AgentCaisse => purpose == Purpose::InstructionRsa,
        Role::ConseillerFt => matches!(purpose, Purpose::Orientation | Purpose::Accompagnement),
        Role::AgentStructure => purpose == Purpose::Accompagnement,
        Role::Dpo => false,
    }
}

/// Whether a read of this person may happen at all.
pub fn access(role: Role, purpose: Purpose, situation: &Situation) -> Access {
    if role == Role::Dpo {
        // A DPO reads the journal, not dossiers.
        return Access::Refused(Motif::Role);
    }
    // A référent accompanies the person, whatever their organisation.
    let referent_reading = situation.referent && purpose == Purpose::Accompagnement && role != Role::Dpo;
    if !purpose_allowed(role, purpose) && !referent_reading {
        return Access::Refused(Motif::MotifAcces);
    }
    if situation.referent {
        return Access::Granted;
    }
    match (role, situation.relation) {
        (Role::Dpo | Role::AgentStructure, _) => Access::NotFound,
        (_, Relation::Own) => Access::Granted,
        // Only the former authority is told that the person moved out, and when.
        (Role::ChargeOrientation | Role::GestionnaireRsa, Relation::MovedOut) => Access::Granted,
        _ => Access::NotFound,
    }
}

/// The decision for one section of a person the agent may read ([`access`] granted).
pub fn section(role: Role, purpose: Purpose, situation: &Situation, section: Section) -> Decision {
    use Decision::{Reduced, Shown, Withheld};
    if situation.relation == Relation::MovedOut && !situation.referent {
        return Withheld(Motif::Demenagement);
    }
    // The référent sees the whole dossier they accompany (they produced the parcours data).
    if situation.referent {
        return Shown;
    }
    let accompaniment =
        matches!(section, Section::Emploi | Section::Parcours | Section::Engagements | Section::Diagnostic);
    if purpose == Purpose::InstructionRsa && accompaniment {
        // The caisse applies a suspension-remobilisation and the authority instructs the right:
        // of the engagements, instruction needs the sanctions, nothing else ([`parcours_view`]).
        if section == Section::Engagements && matches!(role, Role::AgentCaisse | Role::GestionnaireRsa) {
            return Reduced;
        }
        return Withheld(Motif::MotifAcces);
    }
    let by_role = match (role, section) {
        (_, Section::Identite) => Shown,
        (Role::ChargeOrientation | Role::GestionnaireRsa, Section::DroitsRsa) => Shown,
        (Role::AgentCaisse, Section::DroitsRsa) => Shown,
        (Role::ConseillerFt, Section::DroitsRsa) => Reduced,
        (
            Role::ChargeOrientation | Role::GestionnaireRsa | Role::ConseillerFt,
            Section::Emploi | Section::Parcours | Section::Engagements,
        ) => Shown,
        // With consent, beyond the référent: the diagnostic without its sensitive items (health,
        // disability), which only those who accompany the person see.
        (Role::ChargeOrientation | Role::GestionnaireRsa | Role::ConseillerFt, Section::Diagnostic) => {
            if situation.consent_diagnostic { Reduced } else { Withheld(Motif::Consentement) }
        }
        _ => Withheld(Motif::Role),
    };
    if situation.opposition && accompaniment && by_role != Withheld(Motif::Role) {
        // Accompaniment data stays with the institution that produced it: France Travail its
        // emploi data, the département its parcours and diagnostic.
        let producer = match section {
            Section::Emploi => role == Role::ConseillerFt,
            _ => matches!(role, Role::ChargeOrientation | Role::GestionnaireRsa),
        };
        if !producer {
            return Withheld(Motif::Opposition);
        }
        if section == Section::Engagements {
            // The authority's own facts of the plan only ([`parcours_view`]).
            return Reduced;
        }
    }
    by_role
}

/// What a shown or reduced diagnostic or engagements section carries of the parcours facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParcoursView {
    /// Health and disability items (RGPD art. 9): to the référent only, who accompanies the
    /// person; the others are told how many were left out.
    pub sensitive: bool,
    /// Of the engagements, the sanctions only (instruction of the right: the caisse applies them).
    pub sanctions_only: bool,
    /// Only the facts the reader's authority pushed (the person's opposition: accompaniment data
    /// stays with the institution that produced it).
    pub own_authority_only: bool,
    /// The motif of a sanction, in the département's words: to the authority and the référent,
    /// not to the caisse, which applies the share and the months.
    pub sanction_motif: bool,
}

/// The view of the parcours facts for a read the policy granted ([`section`] shown or reduced).
pub fn parcours_view(role: Role, purpose: Purpose, situation: &Situation) -> ParcoursView {
    let referent = situation.referent;
    ParcoursView {
        sensitive: referent,
        sanctions_only: !referent && purpose == Purpose::InstructionRsa,
        own_authority_only: !referent && situation.opposition && purpose != Purpose::InstructionRsa,
        sanction_motif: referent || matches!(role, Role::ChargeOrientation | Role::GestionnaireRsa),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a read of one section gives, as the decisions table writes it.
    fn outcome(role: Role, purpose: Purpose, situation: &Situation, wanted: Section) -> String {
        match access(role, purpose, situation) {
            Access::NotFound => "not_found".into(),
            Access::Refused(motif) => format!("refused:{}", motif.code()),
            Access::Granted => match section(role, purpose, situation, wanted) {
                Decision::Shown => "shown".into(),
                Decision::Reduced => "reduced".into(),
                Decision::Withheld(motif) => format!("withheld:{}", motif.code()),
            },
        }
    }

    #[test]
    fn every_decision_of_the_committed_table_holds() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/policy/decisions.csv");
        let mut reader = csv::ReaderBuilder::new().comment(Some(b'#')).from_path(path).expect("decisions.csv");
        let yes = |text: &str| match text {
            "yes" => true,
            "no" => false,
            other => panic!("yes or no, not {other:?}"),
        };
        let mut rows = 0;
        let mut wrong = Vec::new();
        for (line, record) in reader.records().enumerate() {
            let record = record.expect("a well-formed row");
            let field = |index: usize| record.get(index).expect("8 columns");
            let role = Role::parse(field(0)).unwrap_or_else(|| panic!("row {line}: role {:?}", field(0)));
            let relation = match field(1) {
                "own" => Relation::Own,
                "moved_out" => Relation::MovedOut,
                "none" => Relation::None,
                other => panic!("row {line}: relation {other:?}"),
            };
            let situation = Situation {
                relation,
                referent: yes(field(2)),
                opposition: yes(field(3)),
                consent_diagnostic: yes(field(4)),
            };
            let purpose = Purpose::parse(field(5)).unwrap_or_else(|| panic!("row {line}: purpose {:?}", field(5)));
            let wanted = Section::parse(field(6)).unwrap_or_else(|| panic!("row {line}: section {:?}", field(6)));
            let got = outcome(role, purpose, &situation, wanted);
            if got != field(7) {
                wrong.push(format!(
                    "{}: expected {}, decided {got}",
                    record.iter().collect::<Vec<_>>().join(","),
                    field(7)
                ));
            }
            rows += 1;
        }
        assert!(rows >= 60, "the table lost rows: {rows}");
        assert!(
            wrong.is_empty(),
            "{} decisions differ from docs/policy/decisions.csv:\n{}",
            wrong.len(),
            wrong.join("\n")
        );
    }

    #[test]
    fn out_of_reach_is_decided_before_any_section_so_it_answers_like_a_missing_person() {
        // Whatever the person's situation (opposition, consent), an agent without relation who is
        // not the référent gets not_found: the answer carries nothing about the person.
        for role in [
            Role::ChargeOrientation,
            Role::GestionnaireRsa,
            Role::AgentCaisse,
            Role::ConseillerFt,
            Role::AgentStructure,
        ] {
            for purpose in Purpose::ALL.into_iter().filter(|p| purpose_allowed(role, *p)) {
                for (opposition, consent_diagnostic) in [(false, false), (true, false), (false, true), (true, true)] {
                    let situation =
                        Situation { relation: Relation::None, referent: false, opposition, consent_diagnostic };
                    assert_eq!(access(role, purpose, &situation), Access::NotFound, "{role:?} {purpose:?}");
                }
            }
        }
    }
}
