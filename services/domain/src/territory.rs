//! Départements, communes and the RSA authorities (territories) responsible for a person.
//!
//! The body responsible for the RSA is not always one département: the Métropole de Lyon covers
//! the communes of its territory inside the Rhône, the Collectivité européenne d'Alsace covers 67
//! and 68, the Collectivité de Corse 2A and 2B; Martinique and Guyane are single collectivités.
//! Authorities are therefore a reference table of what they cover, not bare département codes.

use crate::Invalid;

pub mod communes;

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

/// An INSEE commune code (`NUMCOM`) found in the commune table: a commune of today, a municipal
/// arrondissement (Paris, Lyon, Marseille), or the former code of a merged commune (an old flux
/// still lands right). The code is kept as given; [`CommuneCode::today`] names today's commune.
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
        if communes::entry(&code).is_none() {
            return Err(Invalid::new(
                "commune.unknown",
                format!(
                    "{code:?} is neither a commune, a municipal arrondissement nor a former commune code of the INSEE \
                     list the hub holds ({}); check the code (a commune created since: see docs/territories.md)",
                    communes::source()
                ),
            ));
        }
        Ok(Self(code))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What the commune table says of this code.
    pub fn entry(&self) -> &'static communes::Entry {
        communes::entry(&self.0).expect("a CommuneCode is in the table by construction")
    }

    /// Today's commune(s) this code is: itself, or the commune(s) a former commune merged into.
    pub fn today(&self) -> impl Iterator<Item = &'static str> {
        self.entry().today()
    }
}

/// An RSA authority: the body responsible for a person's RSA and its insertion parcours.
/// Codes: the département code for most; `69M` Métropole de Lyon, `69D` Département du Rhône,
/// `6AE` Collectivité européenne d'Alsace, `20R` Collectivité de Corse; `972` and `973` are the
/// collectivités territoriales of Martinique and Guyane; `975`, `977`, `978` the collectivités of
/// Saint-Pierre-et-Miquelon, Saint-Barthélemy and Saint-Martin (ordinance 2010-686 extended the
/// RSA to them; see docs/territories.md).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Authority(String);

/// Where a fact belongs: an RSA authority, or "à affecter" (a CAF/MSA dossier received by the
/// split département 69 whose commune does not say whether it is the Métropole's or the
/// Rhône's). On the log, the event's territory is the authority's code, or [`TO_ASSIGN`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    Authority(Authority),
    ToAssign,
}

/// The territory an event carries while it waits for its authority: the split département's
/// code, which no authority has (`69M` and `69D` do).
pub const TO_ASSIGN: &str = "69";

/// The person's RSA authority when `at` happened, from the places their CAF/MSA facts gave
/// (`(occurred_at, authority)`, in the order they happened): the latest at or before it, or,
/// before the first, the authority that first one names (a département acts on a dossier it
/// received; its earlier facts belong to that authority). None without any place. A
/// département's fact counts only when it comes from this authority (the dossier's fold and the
/// parcours read alike).
pub fn authority_at<T: AsRef<str>>(
    places: &[(chrono::DateTime<chrono::Utc>, T)],
    at: chrono::DateTime<chrono::Utc>,
) -> Option<&str> {
    places.iter().take_while(|(since, _)| *since <= at).last().or_else(|| places.first()).map(|(_, t)| t.as_ref())
}

impl Placement {
    /// The code the event's territory carries.
    pub fn code(&self) -> &str {
        match self {
            Placement::Authority(authority) => authority.as_str(),
            Placement::ToAssign => TO_ASSIGN,
        }
    }
}

impl Authority {
    /// Parses an authority code as written above, or a département code whose authority is not
    /// ambiguous (`052`, `67`, `2A`). `69` alone is ambiguous: use [`Authority::locate`] with the
    /// commune, or `69M` / `69D`.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let upper = raw.trim().to_ascii_uppercase();
        if matches!(upper.as_str(), "69M" | "69D" | "6AE" | "20R" | "975" | "977" | "978") {
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

    /// The authority responsible for a commune, from the commune table (a former code: today's
    /// commune's). Refused for the collectivités where the RSA does not apply.
    pub fn of_commune(commune: &CommuneCode) -> Result<Self, Invalid> {
        let entry = commune.entry();
        match entry.authority() {
            Some(authority) => Ok(Self(authority.to_owned())),
            None => Err(Invalid::new(
                "commune.outside_rsa",
                format!(
                    "{} ({}) lies in a collectivité d'outre-mer where the RSA does not apply (TAAF, Wallis-et-Futuna, \
                     Polynésie française, Nouvelle-Calédonie, Clipperton)",
                    entry.name(),
                    commune.as_str()
                ),
            )),
        }
    }

    /// The authority responsible for a fact: the receiving authority when given (for the RSA,
    /// the CAF dossier's `IDEPARTE`), else the authority of the residence commune. A receiving
    /// département 69 is settled by the commune when it lies in the Rhône.
    pub fn locate(receiving: Option<&str>, commune: Option<&CommuneCode>) -> Result<Self, Invalid> {
        match Self::place(receiving, commune)? {
            Placement::Authority(authority) => Ok(authority),
            Placement::ToAssign => Err(Invalid::new(
                "authority.ambiguous",
                "département 69 is split between the Métropole de Lyon (69M) and the Rhône (69D), and the commune \
                 does not settle which: give a commune of the Rhône or the authority",
            )),
        }
    }

    /// Where a CAF/MSA dossier's fact places the person: as [`Authority::locate`], except that a
    /// dossier received by the split département (69) whose commune does not settle the authority
    /// (a residence outside the Rhône, or none given) is [`Placement::ToAssign`]: the fact is
    /// accepted and waits in the "à affecter" queue, never lost for want of a territory.
    pub fn place(receiving: Option<&str>, commune: Option<&CommuneCode>) -> Result<Placement, Invalid> {
        match (receiving, commune) {
            (Some(code), commune) => match Self::parse(code) {
                Ok(authority) => Ok(Placement::Authority(authority)),
                Err(error) if error.rule == "authority.ambiguous" => match commune {
                    Some(commune) if matches!(commune.entry().authority(), Some("69M" | "69D")) => {
                        Self::of_commune(commune).map(Placement::Authority)
                    }
                    _ => Ok(Placement::ToAssign),
                },
                Err(error) => Err(error),
            },
            (None, Some(commune)) => Self::of_commune(commune).map(Placement::Authority),
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
    fn communes_are_codes_of_the_insee_list() {
        assert_eq!(CommuneCode::parse("51108").expect("Châlons-en-Champagne").as_str(), "51108");
        assert!(CommuneCode::parse("97411").is_ok());
        assert!(CommuneCode::parse("2a004").is_ok());
        assert_eq!(CommuneCode::parse("5110").expect_err("short").rule, "commune.format");
        assert_eq!(CommuneCode::parse("96001").expect_err("no such département").rule, "commune.unknown");
        assert_eq!(CommuneCode::parse("52999").expect_err("no such commune").rule, "commune.unknown");
    }

    #[test]
    fn a_former_code_lands_in_todays_commune_and_its_authority() {
        // Pierre-Bénite merged into Oullins-Pierre-Bénite (69149), a commune of the Métropole.
        let pierre_benite = CommuneCode::parse("69152").expect("former code");
        assert_eq!(pierre_benite.today().collect::<Vec<_>>(), ["69149"]);
        assert_eq!(Authority::locate(Some("069"), Some(&pierre_benite)).expect("located").as_str(), "69M");
        // Corsican codes before the 1976 split (20xxx) are Corse's.
        let ajaccio = CommuneCode::parse("20004").expect("former code");
        assert_eq!(Authority::of_commune(&ajaccio).expect("located").as_str(), "20R");
        // Lyon's arrondissements are the Métropole's; Mayotte is its own département.
        assert_eq!(Authority::of_commune(&CommuneCode::parse("69385").expect("valid")).expect("69M").as_str(), "69M");
        assert_eq!(Authority::of_commune(&CommuneCode::parse("97611").expect("valid")).expect("976").as_str(), "976");
        assert_eq!(Authority::of_commune(&CommuneCode::parse("97801").expect("valid")).expect("978").as_str(), "978");
        let bora_bora = CommuneCode::parse("98714").expect("a commune");
        assert_eq!(Authority::of_commune(&bora_bora).expect_err("no RSA").rule, "commune.outside_rsa");
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
        let grenoble = CommuneCode::parse("38185").expect("valid");
        assert_eq!(
            Authority::locate(Some("069"), Some(&grenoble)).expect_err("outside 69").rule,
            "authority.ambiguous"
        );
    }
}
