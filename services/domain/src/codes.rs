//! Code lists. Closed lists (right states, roles, catégories, orientation types…) refuse an
//! unknown code; open lists (motifs) keep it raw and flag it as unknown, because the CNAF and
//! France Travail add codes without notice and a fact must not be lost for a new motif.

use crate::Invalid;

macro_rules! closed_list {
    ($(#[$doc:meta])* $name:ident, $rule:literal, { $($variant:ident => $code:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn parse(raw: &str) -> Result<Self, Invalid> {
                match raw.trim().to_ascii_uppercase().as_str() {
                    $($code => Ok($name::$variant),)+
                    other => Err(Invalid::new(
                        $rule,
                        format!("unknown code {:?}; expected one of {}", other, [$($code),+].join(", ")),
                    )),
                }
            }

            pub fn code(self) -> &'static str {
                match self { $($name::$variant => $code),+ }
            }
        }
    };
}

pub(crate) use closed_list;

closed_list!(
    /// `ETATDOSRSA`: the state of a foyer's RSA right.
    RightState, "right_state.unknown", {
        Pending => "0",
        Refused => "1",
        OpenPayable => "2",
        OpenRightSuspended => "3",
        OpenPaymentSuspended => "4",
        Closed => "5",
        ClosedPriorMonth => "6",
    }
);

closed_list!(
    /// `ROLEPERS`: a person's role in the foyer.
    Role, "role.unknown", {
        Demandeur => "DEM",
        Conjoint => "CJT",
        Enfant => "ENF",
        Autre => "AUT",
        Rdo => "RDO",
    }
);

closed_list!(
    /// France Travail catégorie of a job seeker (1–3: immediately available).
    Categorie, "categorie.unknown", {
        One => "1",
        Two => "2",
        Three => "3",
        Four => "4",
        Five => "5",
    }
);

closed_list!(
    /// France Travail accompaniment mode (`modalite_accompagnement`).
    Accompagnement, "accompagnement.unknown", {
        Suivi => "SUIVI",
        Guide => "GUIDE",
        Renforce => "RENFORCE",
        Global => "GLOBAL",
    }
);

closed_list!(
    /// Orientation decided by the département.
    OrientationType, "orientation_type.unknown", {
        Pro => "PRO",
        SocioPro => "SOCIO_PRO",
        Social => "SOCIAL",
    }
);

closed_list!(
    /// Why an orientation is requested.
    OrientationOrigin, "orientation_origin.unknown", {
        Initiale => "INITIALE",
        Reorientation => "REORIENTATION",
        Demenagement => "DEMENAGEMENT",
    }
);

closed_list!(
    /// Insertion contracts. Since the 2025 reform the contrat d'engagement replaces CER and PPAE
    /// for new entrants; the older kinds stay valid for running contracts.
    ContractKind, "contract_kind.unknown", {
        Cer => "CER",
        ContratEngagement => "CONTRAT_ENGAGEMENT",
        Ppae => "PPAE",
        Cej => "CEJ",
        Pacea => "PACEA",
    }
);

closed_list!(
    /// A CAF/MSA suspension bears on the right itself (state 3) or on its payment only (state 4).
    SuspensionScope, "suspension_scope.unknown", {
        Right => "RIGHT",
        Payment => "PAYMENT",
    }
);

/// The open motif lists of the CNAF flux and France Travail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MotifList {
    /// `MOTIREFURSA`
    Refus,
    /// `MOTISUSDRORSA`
    SuspensionDroit,
    /// `MOTISUSVERSRSA`
    SuspensionVersement,
    /// `MOTICLORSA`
    Cloture,
    /// France Travail motif of inscription
    InscriptionFt,
    /// France Travail motif of cessation
    CessationFt,
    /// France Travail motif of radiation
    RadiationFt,
}

impl MotifList {
    fn known(self) -> &'static [&'static str] {
        match self {
            MotifList::Refus => &["DEF", "DRD", "FIN", "NRP", "PCG", "RSA", "RSP"],
            MotifList::SuspensionDroit => &[
                "01", "02", "03", "04", "05", "06", "07", "09", "19", "31", "34", "35", "36", "44", "70", "78", "AB",
                "CV", "DE", "DI", "DR", "PM",
            ],
            MotifList::SuspensionVersement => &[
                "01", "02", "03", "04", "05", "06", "09", "10", "11", "12", "13", "14", "15", "16", "17", "19", "31",
                "34", "35", "36", "44", "70", "78",
            ],
            MotifList::Cloture => &["PCG", "ECH", "EFF", "MUT", "RFD", "RGD", "RAU", "RST", "RSO"],
            MotifList::InscriptionFt => &[
                "01", "02", "03", "04", "05", "06", "07", "08", "09", "10", "11", "12", "13", "14", "15", "16", "17",
                "18", "19", "20", "21", "22", "23", "24", "25", "26", "27", "28", "29", "30",
            ],
            MotifList::CessationFt => &["CD", "CR", "DF", "EF", "EN", "FO", "MA", "RE", "SA", "RV", "DC"],
            MotifList::RadiationFt => &["AA", "AB", "AC", "AM", "DC", "IC", "IN", "NP", "RI", "RR", "SD"],
        }
    }
}

/// A motif of an open list: its code as sent (trimmed, upper-cased) and whether the hub knows it.
/// An unknown motif is kept, flagged, never refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Motif {
    pub code: String,
    pub known: bool,
}

impl Motif {
    pub fn parse(list: MotifList, raw: &str) -> Result<Self, Invalid> {
        let code = raw.trim().to_ascii_uppercase();
        if code.is_empty() || code.len() > 8 || !code.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(Invalid::new("motif.format", "a motif code is 1 to 8 letters or digits"));
        }
        let known = list.known().contains(&code.as_str());
        Ok(Self { code, known })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_lists_refuse_unknown_codes_and_name_the_expected_ones() {
        assert_eq!(RightState::parse("2").expect("valid"), RightState::OpenPayable);
        let refused = RightState::parse("7").expect_err("unknown");
        assert_eq!(refused.rule, "right_state.unknown");
        assert!(refused.message.contains("0, 1, 2"));
        assert_eq!(Role::parse("cjt").expect("valid"), Role::Conjoint);
        assert!(OrientationType::parse("SOCIOPRO").is_err());
    }

    #[test]
    fn an_unknown_motif_is_kept_raw_and_flagged() {
        let known = Motif::parse(MotifList::Cloture, "mut").expect("valid");
        assert_eq!(known, Motif { code: "MUT".into(), known: true });
        let unknown = Motif::parse(MotifList::Cloture, "ZZ9").expect("kept");
        assert!(!unknown.known);
        assert!(Motif::parse(MotifList::Cloture, "").is_err());
    }
}
