//! Identifiers other than the NIR: France Travail, département, CAF/MSA dossier, events, agents.

use crate::Invalid;

macro_rules! redacted_debug {
    ($name:ident) => {
        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($name), "(<redacted>)"))
            }
        }
    };
}

/// The 11-digit France Travail id (numéro France Travail). Legacy forms (8-character IDASSEDIC,
/// UUIDs of old extracts) are not person keys and are refused here; see [`Idassedic`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct FranceTravailId(String);
redacted_debug!(FranceTravailId);

impl FranceTravailId {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let trimmed = raw.trim();
        if trimmed.len() != 11 || !trimmed.chars().all(|c| c.is_ascii_digit()) {
            return Err(Invalid::new(
                "france_travail_id.format",
                "a France Travail id is 11 digits (the 8-character IDASSEDIC is a legacy attribute, sent as idassedic)",
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }
    /// Personal data: never log it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The legacy 8-character Assedic id found in the CNAF flux (`1253359X`). An attribute only: the
/// same value is seen on several persons, so it never identifies one.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Idassedic(String);
redacted_debug!(Idassedic);

impl Idassedic {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let trimmed = raw.trim().to_ascii_uppercase();
        if trimmed.is_empty() || trimmed.len() > 8 || !trimmed.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(Invalid::new("idassedic.format", "an IDASSEDIC is up to 8 letters and digits"));
        }
        Ok(Self(trimmed))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The id of a person in a département's own information system (IODAS, Solis, WebRSA…). Unique
/// within that département only, so it always travels with the département code.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DepartementInternalId(String);
redacted_debug!(DepartementInternalId);

impl DepartementInternalId {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let trimmed = raw.trim();
        // Characters (code points), as the OpenAPI document's maxLength and the proto count
        // them: 64 accented or non-BMP characters are more than 64 bytes.
        if trimmed.is_empty() || trimmed.chars().count() > 64 {
            return Err(Invalid::new("departement_id.length", "a département id has 1 to 64 characters"));
        }
        if trimmed.chars().any(|c| c.is_control()) {
            return Err(Invalid::new("departement_id.characters", "a département id has no control characters"));
        }
        Ok(Self(trimmed.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A CAF or MSA caisse number (`NUMORG`), three digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Organisme(String);

impl Organisme {
    /// Accepts 1 to 3 digits and zero-pads them (`21` is caisse `021`).
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.len() > 3 || !trimmed.chars().all(|c| c.is_ascii_digit()) {
            return Err(Invalid::new("organisme.format", "a CAF/MSA organisme number (NUMORG) is 3 digits"));
        }
        Ok(Self(format!("{trimmed:0>3}")))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A CAF/MSA dossier number (`MATRICULE`), normalised to its 15-character form: the flux writes
/// the same dossier `205599000000000` or `2055990`, so significant characters are right-padded
/// with zeros. For the MSA the matricule is the NIR: it is personal data, never logged.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Matricule(String);
redacted_debug!(Matricule);

impl Matricule {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let trimmed = raw.trim().to_ascii_uppercase();
        if trimmed.is_empty() || trimmed.len() > 15 {
            return Err(Invalid::new("matricule.length", "a matricule has 1 to 15 characters"));
        }
        if !trimmed.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(Invalid::new("matricule.characters", "a matricule holds letters and digits only"));
        }
        if trimmed.chars().all(|c| c == '0') {
            return Err(Invalid::new("matricule.zero", "a matricule cannot be all zeros"));
        }
        Ok(Self(format!("{trimmed:0<15}")))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The caller's idempotency key for one fact. Opaque to the hub, but bounded and printable so it
/// can be logged: it must never embed personal data (callers are told so in the API docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EventId(String);

impl TryFrom<String> for EventId {
    type Error = Invalid;
    fn try_from(raw: String) -> Result<Self, Invalid> {
        Self::parse(&raw)
    }
}

impl From<EventId> for String {
    fn from(id: EventId) -> Self {
        id.0
    }
}

impl EventId {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if raw.is_empty() || raw.len() > 128 {
            return Err(Invalid::new("event_id.length", "an event_id has 1 to 128 characters"));
        }
        if !raw.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/')) {
            return Err(Invalid::new(
                "event_id.characters",
                "an event_id holds ASCII letters, digits and - _ . : / only",
            ));
        }
        Ok(Self(raw.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A SIRET (14 digits, Luhn checked; La Poste's establishments use the sum-of-digits rule).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Siret(String);

impl Siret {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let cleaned: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
        if cleaned.len() != 14 || !cleaned.chars().all(|c| c.is_ascii_digit()) {
            return Err(Invalid::new("siret.format", "a SIRET is 14 digits"));
        }
        let valid = if cleaned.starts_with("356000000") {
            cleaned.bytes().map(|b| u32::from(b - b'0')).sum::<u32>().is_multiple_of(5)
        } else {
            luhn(&cleaned)
        };
        if !valid {
            return Err(Invalid::new("siret.checksum", "this SIRET fails its check digit (Luhn)"));
        }
        Ok(Self(cleaned))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn luhn(digits: &str) -> bool {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// A ProConnect-style agent identifier (`uid` claim): opaque, stable, not an e-mail.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct AgentUid(String);

impl AgentUid {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.chars().count() > 128 {
            return Err(Invalid::new("uid.length", "an agent uid has 1 to 128 characters"));
        }
        if trimmed.contains('@') || trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Invalid::new(
                "uid.characters",
                "an agent uid is an opaque identifier, not an e-mail, without spaces",
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A professional e-mail address (of a référent): checked for shape only.
#[derive(Clone, PartialEq, Eq)]
pub struct Email(String);
redacted_debug!(Email);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let trimmed = raw.trim();
        let shape_ok = match trimmed.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
            }
            None => false,
        };
        if !shape_ok || trimmed.chars().count() > 254 || trimmed.chars().any(char::is_whitespace) {
            return Err(Invalid::new("email.format", "not an e-mail address"));
        }
        Ok(Self(trimmed.to_ascii_lowercase()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_departement_id_is_measured_in_characters_not_bytes() {
        let astral: String = std::iter::repeat_n('𝔄', 40).chain(std::iter::repeat_n('é', 24)).collect();
        assert_eq!(astral.chars().count(), 64);
        assert!(astral.len() > 64);
        assert!(DepartementInternalId::parse(&astral).is_ok());
        assert!(DepartementInternalId::parse(&format!("{astral}x")).is_err());
    }

    #[test]
    fn a_seven_character_matricule_is_the_same_dossier_as_its_padded_form() {
        let short = Matricule::parse("2055990").expect("valid");
        let long = Matricule::parse("205599000000000").expect("valid");
        assert_eq!(short, long);
        assert_eq!(long.as_str().len(), 15);
        assert!(Matricule::parse("0000000").is_err());
        assert!(Matricule::parse("2055990000000000").is_err());
    }

    #[test]
    fn organismes_are_zero_padded_to_three_digits() {
        assert_eq!(Organisme::parse("21").expect("valid").as_str(), "021");
        assert!(Organisme::parse("5210").is_err());
        assert!(Organisme::parse("5A1").is_err());
    }

    #[test]
    fn a_france_travail_id_is_eleven_digits() {
        assert!(FranceTravailId::parse("12345678901").is_ok());
        assert!(FranceTravailId::parse("1253359X").is_err());
    }

    #[test]
    fn sirets_are_luhn_checked() {
        assert!(Siret::parse("73282932000074").is_ok());
        assert_eq!(Siret::parse("73282932000075").expect_err("checksum").rule, "siret.checksum");
        assert_eq!(Siret::parse("7328293200007").expect_err("short").rule, "siret.format");
    }

    #[test]
    fn event_ids_are_bounded_and_printable() {
        assert!(EventId::parse("caf-521:2022-02:abc").is_ok());
        assert!(EventId::parse("").is_err());
        assert!(EventId::parse("with space").is_err());
        assert!(EventId::parse(&"x".repeat(129)).is_err());
    }

    #[test]
    fn personal_identifiers_do_not_print_themselves() {
        let id = FranceTravailId::parse("12345678901").expect("valid");
        assert!(!format!("{id:?}").contains("12345678901"));
    }
}
