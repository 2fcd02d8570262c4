//! The canonical events: what the hub publishes, once validated and normalised.
//!
//! An event is an [`Envelope`] (who, when, about whom, where) and a typed [`Payload`]. Fields that
//! identify a person (NIR, names, birth date, address, free text) are not here in clear: they
//! travel in [`PersonalData`], which the event log seals with the subject's data key.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    Accompagnement, Categorie, ContractKind, EventId, Motif, OrientationOrigin, OrientationType, RightState, Role,
    SuspensionScope,
    parcours::{ActionStatus, NiveauQualification, ParcoursDetail, PlanAction, RendezVousObjet},
};

/// The source families, one topic each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Allocataire,
    DemandeurEmploi,
    Orientation,
    /// The parcours (DOMAIN.md §8): diagnostic, engagement plan, rendez-vous, sanctions, pushed by
    /// the départements, France Travail and the structures that accompany people.
    Parcours,
}

impl Family {
    pub const ALL: [Family; 4] = [Family::Allocataire, Family::DemandeurEmploi, Family::Orientation, Family::Parcours];

    /// The topic of the family, as DESIGN.md names it.
    pub fn topic(self) -> &'static str {
        match self {
            Family::Allocataire => "passerelle.allocataire.v1",
            Family::DemandeurEmploi => "passerelle.demandeur-emploi.v1",
            Family::Orientation => "passerelle.orientation.v1",
            Family::Parcours => "passerelle.parcours.v1",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Family::Allocataire => "allocataire",
            Family::DemandeurEmploi => "demandeur_emploi",
            Family::Orientation => "orientation",
            Family::Parcours => "parcours",
        }
    }
}

/// Kinds of institution that own facts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InstitutionKind {
    Caf,
    Msa,
    FranceTravail,
    Departement,
    /// A structure that accompanies people (Mission locale, Cap emploi, SIAE, PLIE, CCAS,
    /// association), by its SIRET: it pushes parcours facts only for the persons it accompanies.
    Structure,
    /// The person the facts are about, recording their own choices (opposition, consent) in
    /// their space: never an institution of the institutions file.
    Personne,
}

impl InstitutionKind {
    pub fn code(self) -> &'static str {
        match self {
            InstitutionKind::Caf => "CAF",
            InstitutionKind::Msa => "MSA",
            InstitutionKind::FranceTravail => "FRANCE_TRAVAIL",
            InstitutionKind::Departement => "DEPARTEMENT",
            InstitutionKind::Structure => "STRUCTURE",
            InstitutionKind::Personne => "PERSONNE",
        }
    }
}

/// The source of the facts a person records in their own space. No institution may take this
/// id (the institutions file refuses it), so a fact of this source was recorded by the person.
pub const PERSON_SOURCE: &str = "espace-personne";

impl Payload {
    /// Whether the person may record this fact about themselves: their own choices only.
    pub fn is_person_choice(&self) -> bool {
        matches!(
            self,
            Payload::OppositionRecorded
                | Payload::OppositionWithdrawn
                | Payload::ConsentGiven
                | Payload::ConsentWithdrawn
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub institution: String,
    pub kind: InstitutionKind,
    pub relayed_by: Option<String>,
    pub relay_file: Option<String>,
}

/// A pseudonymous key for a subject: a keyed hash of one identifier, prefixed by its kind
/// (`nir:`, `ft:`, `dep:`, `civ:`), or of a household (`foyer:`). Safe to log and to use as a
/// Kafka key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SubjectKey(pub String);

impl SubjectKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The kind of identifier the key was derived from (None for a key of no known kind).
    pub fn kind(&self) -> Option<SubjectKind> {
        SubjectKind::of(&self.0)
    }
}

/// The kinds of subject key, strongest identification first (DOMAIN.md §2). The prefix is the
/// key's text up to its first `:`; SQL that must tell kinds apart compares that prefix
/// (`split_part(subject_key, ':', 1)`) with [`SubjectKind::prefix`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SubjectKind {
    Nir,
    FranceTravail,
    Departement,
    /// A household member known by civil identity only: never merged automatically.
    Civil,
    /// A CAF/MSA household, not a person.
    Household,
}

impl SubjectKind {
    pub const PERSONS: [SubjectKind; 4] =
        [SubjectKind::Nir, SubjectKind::FranceTravail, SubjectKind::Departement, SubjectKind::Civil];

    pub fn prefix(self) -> &'static str {
        match self {
            SubjectKind::Nir => "nir",
            SubjectKind::FranceTravail => "ft",
            SubjectKind::Departement => "dep",
            SubjectKind::Civil => "civ",
            SubjectKind::Household => "foyer",
        }
    }

    /// The kind of a key's text, from its prefix.
    pub fn of(key: &str) -> Option<SubjectKind> {
        let prefix = key.split_once(':')?.0;
        [
            SubjectKind::Nir,
            SubjectKind::FranceTravail,
            SubjectKind::Departement,
            SubjectKind::Civil,
            SubjectKind::Household,
        ]
        .into_iter()
        .find(|kind| kind.prefix() == prefix)
    }

    /// Kinds a person has at most one of: two persons holding different keys of one of these
    /// kinds are two persons until a human decides otherwise.
    pub fn exclusive(self) -> bool {
        matches!(self, SubjectKind::Nir | SubjectKind::FranceTravail)
    }

    /// How strongly a key of this kind identifies a person: 0 is the strongest.
    pub fn strength(self) -> u8 {
        match self {
            SubjectKind::Nir => 0,
            SubjectKind::FranceTravail => 1,
            SubjectKind::Departement => 2,
            SubjectKind::Civil => 3,
            SubjectKind::Household => 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HouseholdRef {
    pub key: SubjectKey,
    pub organisme: String,
    pub role: Option<Role>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub event_id: EventId,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub source: Source,
    /// The Kafka key: the strongest identifier's subject key.
    pub subject: SubjectKey,
    /// Every subject key the event's identifiers imply, strongest first (the subject included).
    pub linked_keys: Vec<SubjectKey>,
    pub household: Option<HouseholdRef>,
    /// The RSA authority code, see [`crate::Authority`].
    pub territory: Option<String>,
    pub commune: Option<String>,
    pub corrects_event_id: Option<EventId>,
}

/// Personal data of an event, sealed with the subject's data key before it reaches the log.
/// `Debug` says which fields are present, never their values (a `{:?}` in a log line or a
/// panic message must not print a name, a NIR or a birth date).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonalData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub france_travail_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub departement_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub departement_id_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idassedic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matricule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nom: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prenoms: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_naissance: Option<NaiveDate>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub address_lines: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_postal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numero_demande: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matricule_cedant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referent_nom: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referent_email: Option<String>,
    /// Free text (reason of a denial or a retraction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_text: Option<String>,
    /// The personal part of a parcours fact: situations, labels, motifs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parcours: Option<ParcoursDetail>,
}

impl PersonalData {
    pub fn is_empty(&self) -> bool {
        self == &PersonalData::default()
    }
}

/// An agent (référent): uid and structure in clear; e-mail is personal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRef {
    pub uid: String,
    pub siret: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mutation {
    pub organisme_cedant: String,
    pub organisme_prenant: String,
    pub previous_household_key: Option<SubjectKey>,
}

/// Serialised (for read models) with the variant name in `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Payload {
    // CAF / MSA
    RsaDemandRecorded {
        date_demande: NaiveDate,
    },
    RsaRightOpened {
        date_ouverture: Option<NaiveDate>,
    },
    RsaRightSuspended {
        scope: SuspensionScope,
        motif: Motif,
        date_suspension: Option<NaiveDate>,
    },
    RsaRightClosed {
        motif: Motif,
        date_cloture: Option<NaiveDate>,
        prior_month: bool,
    },
    RsaRightRefused {
        motif: Option<Motif>,
    },
    SddChanged {
        soumis: bool,
    },
    HouseholdRoleSet {
        role: Role,
    },
    AddressChanged {
        previous_authority: Option<String>,
        mutation: Option<Mutation>,
    },
    // France Travail
    Inscription {
        categorie: Categorie,
        motif: Option<Motif>,
        date_inscription: Option<NaiveDate>,
    },
    CategorieChanged {
        categorie: Categorie,
    },
    AccompagnementChanged {
        modalite: Accompagnement,
    },
    FtReferentAssigned {
        code_safir: Option<String>,
    },
    PpaeSigned {
        date_signature: NaiveDate,
    },
    Cessation {
        motif: Option<Motif>,
        date_cessation: Option<NaiveDate>,
    },
    Radiation {
        motif: Option<Motif>,
        date_radiation: Option<NaiveDate>,
    },
    // Département
    OrientationRequested {
        origine: OrientationOrigin,
    },
    OrientationDecided {
        orientation_type: OrientationType,
        structure_siret: Option<String>,
        structure_nom: Option<String>,
        referent: Option<AgentRef>,
    },
    OrientationDenied,
    ReferentAssigned {
        referent: AgentRef,
    },
    ReferentEnded {
        uid: String,
    },
    ContractSigned {
        kind: ContractKind,
        date_debut: NaiveDate,
        date_fin: Option<NaiveDate>,
    },
    ContractEnded {
        kind: ContractKind,
        date_fin: NaiveDate,
    },
    OppositionRecorded,
    OppositionWithdrawn,
    ConsentGiven,
    ConsentWithdrawn,
    // Parcours
    /// The diagnostic socio-professionnel, recorded or revised whole by the référent: its
    /// situations and the professional side's texts are sealed ([`ParcoursDetail`]).
    DiagnosticRecorded {
        rome_code: Option<String>,
        niveau_qualification: Option<NiveauQualification>,
    },
    /// The plan d'action of the contrat d'engagement, set or revised whole: the objectives and
    /// the actions' themes and labels are sealed, the reduction motif too.
    EngagementPlanSet {
        signed_on: Option<NaiveDate>,
        revised_on: Option<NaiveDate>,
        weekly_hours: u8,
        actions: Vec<PlanAction>,
    },
    ActionStatusChanged {
        action_id: String,
        status: ActionStatus,
    },
    /// Activity hours the person did in a month (`month`: its first day).
    ActivityHoursDeclared {
        month: NaiveDate,
        hours: u16,
    },
    RendezVousConvoked {
        rdv_id: String,
        at: DateTime<Utc>,
        structure_siret: String,
        objet: RendezVousObjet,
    },
    RendezVousHonoured {
        rdv_id: String,
    },
    RendezVousMissed {
        rdv_id: String,
        excused: bool,
    },
    /// A suspension-remobilisation decided by the président du conseil départemental: a share of
    /// the allowance suspended for a number of months from `start` (the motif, in words, sealed).
    SanctionDecided {
        sanction_id: String,
        share_percent: u8,
        duration_months: u8,
        start: NaiveDate,
    },
    SanctionLifted {
        sanction_id: String,
        lifted_on: NaiveDate,
        /// The suspended amounts are paid back (the person re-engaged within the period).
        back_payment: bool,
    },
    // Every family
    Retraction {
        retracted_event_id: EventId,
    },
}

impl Payload {
    /// The stable `event_type` of the envelope.
    pub fn event_type(&self) -> &'static str {
        match self {
            Payload::RsaDemandRecorded { .. } => "rsa.demand_recorded",
            Payload::RsaRightOpened { .. } => "rsa.right_opened",
            Payload::RsaRightSuspended { .. } => "rsa.right_suspended",
            Payload::RsaRightClosed { .. } => "rsa.right_closed",
            Payload::RsaRightRefused { .. } => "rsa.right_refused",
            Payload::SddChanged { .. } => "rsa.sdd_changed",
            Payload::HouseholdRoleSet { .. } => "rsa.household_role_set",
            Payload::AddressChanged { .. } => "rsa.address_changed",
            Payload::Inscription { .. } => "ft.inscription",
            Payload::CategorieChanged { .. } => "ft.categorie_changed",
            Payload::AccompagnementChanged { .. } => "ft.accompagnement_changed",
            Payload::FtReferentAssigned { .. } => "ft.referent_assigned",
            Payload::PpaeSigned { .. } => "ft.ppae_signed",
            Payload::Cessation { .. } => "ft.cessation",
            Payload::Radiation { .. } => "ft.radiation",
            Payload::OrientationRequested { .. } => "orientation.requested",
            Payload::OrientationDecided { .. } => "orientation.decided",
            Payload::OrientationDenied => "orientation.denied",
            Payload::ReferentAssigned { .. } => "referent.assigned",
            Payload::ReferentEnded { .. } => "referent.ended",
            Payload::ContractSigned { .. } => "contract.signed",
            Payload::ContractEnded { .. } => "contract.ended",
            Payload::OppositionRecorded => "opposition.recorded",
            Payload::OppositionWithdrawn => "opposition.withdrawn",
            Payload::ConsentGiven => "consent.given",
            Payload::ConsentWithdrawn => "consent.withdrawn",
            Payload::DiagnosticRecorded { .. } => "parcours.diagnostic_recorded",
            Payload::EngagementPlanSet { .. } => "parcours.plan_set",
            Payload::ActionStatusChanged { .. } => "parcours.action_status_changed",
            Payload::ActivityHoursDeclared { .. } => "parcours.activity_hours_declared",
            Payload::RendezVousConvoked { .. } => "parcours.rendez_vous_convoked",
            Payload::RendezVousHonoured { .. } => "parcours.rendez_vous_honoured",
            Payload::RendezVousMissed { .. } => "parcours.rendez_vous_missed",
            Payload::SanctionDecided { .. } => "parcours.sanction_decided",
            Payload::SanctionLifted { .. } => "parcours.sanction_lifted",
            Payload::Retraction { .. } => "retraction",
        }
    }

    /// The RSA right state a CAF/MSA fact sets, if it sets one.
    pub fn right_state(&self) -> Option<RightState> {
        match self {
            Payload::RsaDemandRecorded { .. } => Some(RightState::Pending),
            Payload::RsaRightOpened { .. } => Some(RightState::OpenPayable),
            Payload::RsaRightSuspended { scope: SuspensionScope::Right, .. } => Some(RightState::OpenRightSuspended),
            Payload::RsaRightSuspended { scope: SuspensionScope::Payment, .. } => {
                Some(RightState::OpenPaymentSuspended)
            }
            Payload::RsaRightClosed { prior_month: false, .. } => Some(RightState::Closed),
            Payload::RsaRightClosed { prior_month: true, .. } => Some(RightState::ClosedPriorMonth),
            Payload::RsaRightRefused { .. } => Some(RightState::Refused),
            _ => None,
        }
    }
}

impl std::fmt::Debug for PersonalData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fields = [
            ("nir", self.nir.is_some()),
            ("france_travail_id", self.france_travail_id.is_some()),
            ("departement_id", self.departement_id.is_some()),
            ("departement_id_code", self.departement_id_code.is_some()),
            ("idassedic", self.idassedic.is_some()),
            ("matricule", self.matricule.is_some()),
            ("nom", self.nom.is_some()),
            ("prenoms", self.prenoms.is_some()),
            ("date_naissance", self.date_naissance.is_some()),
            ("address_lines", !self.address_lines.is_empty()),
            ("code_postal", self.code_postal.is_some()),
            ("numero_demande", self.numero_demande.is_some()),
            ("matricule_cedant", self.matricule_cedant.is_some()),
            ("referent_nom", self.referent_nom.is_some()),
            ("referent_email", self.referent_email.is_some()),
            ("free_text", self.free_text.is_some()),
            ("parcours", self.parcours.is_some()),
        ];
        let present: Vec<&str> = fields.iter().filter(|(_, set)| *set).map(|(name, _)| *name).collect();
        f.debug_struct("PersonalData").field("redacted_fields", &present).finish()
    }
}

/// A canonical event: envelope, typed payload, and the personal data that will be sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalEvent {
    pub family: Family,
    pub envelope: Envelope,
    pub payload: Payload,
    pub personal: PersonalData,
}

#[cfg(test)]
mod redaction_tests {
    use super::*;

    #[test]
    fn the_debug_of_personal_data_names_its_fields_not_their_values() {
        let personal = PersonalData {
            nir: Some("1850752121003".into()),
            nom: Some("LEGRAND".into()),
            date_naissance: NaiveDate::from_ymd_opt(1985, 7, 12),
            ..PersonalData::default()
        };
        let printed = format!("{personal:?}");
        for secret in ["1850752121003", "LEGRAND", "1985"] {
            assert!(!printed.contains(secret), "{printed}");
        }
        assert!(printed.contains("nom"), "{printed}");
    }
}

#[cfg(test)]
mod subject_kind_tests {
    use super::*;

    #[test]
    fn a_keys_kind_is_its_prefix_and_kinds_rank_by_strength() {
        assert_eq!(SubjectKey("nir:ab".into()).kind(), Some(SubjectKind::Nir));
        assert_eq!(SubjectKind::of("foyer:01"), Some(SubjectKind::Household));
        assert_eq!(SubjectKind::of("nn:01"), None, "a search index key is no subject");
        assert_eq!(SubjectKind::of("nir"), None);
        let mut kinds = SubjectKind::PERSONS.to_vec();
        kinds.reverse();
        kinds.sort_by_key(|kind| kind.strength());
        assert_eq!(kinds, SubjectKind::PERSONS);
        assert!(SubjectKind::Nir.exclusive() && SubjectKind::FranceTravail.exclusive());
        assert!(!SubjectKind::Departement.exclusive() && !SubjectKind::Civil.exclusive());
    }
}
