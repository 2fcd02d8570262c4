//! Départements, communes and the RSA authorities (territories) responsible for a person.
//!
//! The body responsible for the RSA is not always one département: the Métropole de Lyon covers
//! the communes of its territory inside the Rhône, the Collectivité européenne d'Alsace covers 67
//! and 68, the Collectivité de Corse 2A and 2B; Martinique and Guyane are single collectivités.
//! Authorities are therefore a reference table of what they cover, not bare département codes.

use crate::Invalid;

/// A département code: `01`–`19`, `2A`, `2B`, `21`–`95`, `971`–`974`, `976`. The CNAF flux writes
/// metropolitan codes on 3 characters (`052`); both forms are accepted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DepartementCode(String);

impl DepartementCode {
    /// Every département code: 01-19, 2A, 2B, 21-95, 971-974, 976.
    pub fn all() -> impl Iterator<Item = DepartementCode> {
        (1..=95u8)
            .filter(|n| *n != 20)
            .map(|n| format!("{n:02}"))
            .chain(["2A", "2B", "971", "972", "973", "974", "976"].map(str::to_owned))
            .map(DepartementCode)
    }

    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let upper = raw.trim().to_ascii_uppercase();
        let code = match upper.len() {
            3 if upper.starts_with('0') => upper[1..].to_owned(),
            _ => upper,
        };
        let valid = match code.as_str() {
            "2A" | "2B" | "971" | "972" | "973" | "974" | "976" => true,
            two if two.len() == 2 && two.chars().all(|c| c.is_ascii_digit()) => {
                matches!(two.parse::<u8>(), Ok(n) if (1..=95).contains(&n) && n != 20)
            }
            _ => false,
        };
        if !valid {
            return Err(Invalid::new(
                "departement.unknown",
                format!("{code:?} is not a département code (01-19, 2A, 2B, 21-95, 971-974, 976)"),
            ));
        }
        Ok(Self(code))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An INSEE commune code (`NUMCOM`): 5 characters, the département then the commune number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CommuneCode(String);

impl CommuneCode {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let code = raw.trim().to_ascii_uppercase();
        let well_formed = code.len() == 5
            && code.is_ascii()
            && code[2..].chars().all(|c| c.is_ascii_digit())
            && (code[..2].chars().all(|c| c.is_ascii_digit()) || &code[..2] == "2A" || &code[..2] == "2B");
        if !well_formed {
            return Err(Invalid::new("commune.format", format!("{code:?} is not a 5-character INSEE commune code")));
        }
        let commune = Self(code);
        commune.departement()?;
        if &commune.0[commune.departement_len()..] == "000"
            || commune.0.ends_with("00") && commune.departement_len() == 3
        {
            return Err(Invalid::new("commune.format", "commune number 000 does not exist"));
        }
        Ok(commune)
    }

    fn departement_len(&self) -> usize {
        if self.0.starts_with("97") { 3 } else { 2 }
    }

    /// The département the commune lies in.
    pub fn departement(&self) -> Result<DepartementCode, Invalid> {
        DepartementCode::parse(&self.0[..self.departement_len()]).map_err(|_| {
            Invalid::new("commune.departement", format!("commune {:?} lies in no known département", self.0))
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An RSA authority: the body responsible for a person's RSA and its insertion parcours.
/// Codes: the département code for most; `69M` Métropole de Lyon, `69D` Département du Rhône,
/// `6AE` Collectivité européenne d'Alsace, `20R` Collectivité de Corse; `972` and `973` are the
/// collectivités territoriales of Martinique and Guyane.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Authority(String);

/// INSEE codes of the communes of the Métropole de Lyon (Lyon and its arrondissements included).
/// Reference data, to keep in step with the Code officiel géographique (see docs/territories.md).
pub const METROPOLE_DE_LYON_COMMUNES: &[&str] = &[
    "69003", "69029", "69033", "69034", "69040", "69044", "69046", "69063", "69068", "69069", "69071", "69072",
    "69081", "69085", "69087", "69088", "69089", "69091", "69096", "69100", "69116", "69117", "69123", "69127",
    "69142", "69143", "69149", "69152", "69153", "69163", "69168", "69191", "69194", "69199", "69202", "69204",
    "69205", "69207", "69233", "69244", "69250", "69256", "69259", "69260", "69266", "69271", "69273", "69275",
    "69276", "69278", "69279", "69282", "69283", "69284", "69286", "69290", "69292", "69293", "69296", "69381",
    "69382", "69383", "69384", "69385", "69386", "69387", "69388", "69389",
];

impl Authority {
    /// Parses an authority code as written above, or a département code whose authority is not
    /// ambiguous (`052`, `67`, `2A`). `69` alone is ambiguous: use [`Authority::locate`] with the
    /// commune, or `69M` / `69D`.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let upper = raw.trim().to_ascii_uppercase();
        if matches!(upper.as_str(), "69M" | "69D" | "6AE" | "20R") {
            return Ok(Self(upper));
        }
        let departement = DepartementCode::parse(&upper).map_err(|_| {
            Invalid::new("authority.unknown", format!("{upper:?} is neither an RSA authority nor a département code"))
        })?;
        Self::of_departement(&departement).ok_or_else(|| {
            Invalid::new(
                "authority.ambiguous",
                "département 69 is split between the Métropole de Lyon (69M) and the Rhône (69D): give the commune or the authority",
            )
        })
    }

    /// The authority of a département, when the département alone decides it.
    pub fn of_departement(departement: &DepartementCode) -> Option<Self> {
        let code = match departement.as_str() {
            "69" => return None,
            "67" | "68" => "6AE",
            "2A" | "2B" => "20R",
            other => other,
        };
        Some(Self(code.to_owned()))
    }

    /// The authority responsible for a commune.
    pub fn of_commune(commune: &CommuneCode) -> Result<Self, Invalid> {
        let departement = commune.departement()?;
        if departement.as_str() == "69" {
            let metropole = METROPOLE_DE_LYON_COMMUNES.contains(&commune.as_str());
            return Ok(Self(if metropole { "69M" } else { "69D" }.to_owned()));
        }
        Self::of_departement(&departement)
            .ok_or_else(|| Invalid::new("authority.ambiguous", "no authority for this commune"))
    }

    /// The authority responsible for a fact: the receiving authority when given (for the RSA,
    /// the CAF dossier's `IDEPARTE`), else the authority of the residence commune. A receiving
    /// département 69 is settled by the commune when it lies in the Rhône.
    pub fn locate(receiving: Option<&str>, commune: Option<&CommuneCode>) -> Result<Self, Invalid> {
        match (receiving, commune) {
            (Some(code), commune) => match Self::parse(code) {
                Ok(authority) => Ok(authority),
                Err(error) if error.rule == "authority.ambiguous" => match commune {
                    Some(commune) if commune.departement().map(|d| d.as_str() == "69").unwrap_or(false) => {
                        Self::of_commune(commune)
                    }
                    _ => Err(error),
                },
                Err(error) => Err(error),
            },
            (None, Some(commune)) => Self::of_commune(commune),
            (None, None) => Err(Invalid::new(
                "location.missing",
                "a fact must say where it belongs: the receiving authority or the residence commune",
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flux_three_character_departement_is_accepted() {
        assert_eq!(DepartementCode::parse("052").expect("valid").as_str(), "52");
        assert_eq!(DepartementCode::parse("2a").expect("valid").as_str(), "2A");
        assert_eq!(DepartementCode::parse("971").expect("valid").as_str(), "971");
        assert!(DepartementCode::parse("20").is_err());
        assert!(DepartementCode::parse("975").is_err());
        assert!(DepartementCode::parse("96").is_err());
    }

    #[test]
    fn communes_are_five_characters_in_a_known_departement() {
        assert_eq!(CommuneCode::parse("51108").expect("valid").departement().expect("dep").as_str(), "51");
        assert_eq!(CommuneCode::parse("97411").expect("valid").departement().expect("dep").as_str(), "974");
        assert!(CommuneCode::parse("2A004").is_ok());
        assert!(CommuneCode::parse("5110").is_err());
        assert!(CommuneCode::parse("96001").is_err());
    }

    #[test]
    fn authorities_that_are_not_one_departement_are_resolved() {
        assert_eq!(Authority::parse("067").expect("valid").as_str(), "6AE");
        assert_eq!(Authority::parse("2B").expect("valid").as_str(), "20R");
        assert_eq!(Authority::parse("052").expect("valid").as_str(), "52");
        assert_eq!(Authority::parse("69").expect_err("ambiguous").rule, "authority.ambiguous");
        let villeurbanne = CommuneCode::parse("69266").expect("valid");
        let tarare = CommuneCode::parse("69243").expect("valid");
        assert_eq!(Authority::locate(Some("069"), Some(&villeurbanne)).expect("lyon").as_str(), "69M");
        assert_eq!(Authority::locate(Some("069"), Some(&tarare)).expect("rhone").as_str(), "69D");
        assert_eq!(Authority::locate(None, None).expect_err("missing").rule, "location.missing");
    }
}
