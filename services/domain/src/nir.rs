//! The NIR (numéro d'inscription au répertoire, "numéro de sécurité sociale").

use crate::Invalid;

/// A valid NIR. Persons are matched on its first 13 characters (the CNAF flux carries no key),
/// so equality and hashing use those 13 characters only; the key, when it was given, was checked.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Nir {
    core: String,
}

impl std::fmt::Debug for Nir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Nir(<redacted>)")
    }
}

impl Nir {
    /// Parses a NIR of 13 characters (no key) or 15 (with its key, which must match). Spaces are
    /// ignored and letters upper-cased (`2a` is Corse-du-Sud).
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let cleaned: String = raw.chars().filter(|c| !c.is_whitespace()).map(|c| c.to_ascii_uppercase()).collect();
        if cleaned.len() != 13 && cleaned.len() != 15 {
            return Err(Invalid::new(
                "nir.length",
                format!("a NIR has 13 characters, or 15 with its key; this one has {}", cleaned.len()),
            ));
        }
        if !cleaned.is_ascii() {
            return Err(Invalid::new("nir.characters", "a NIR holds digits only, and 2A or 2B for Corse"));
        }
        let core = &cleaned[..13];
        let sex = &core[0..1];
        if !matches!(sex, "1" | "2" | "3" | "4" | "7" | "8") {
            return Err(Invalid::new(
                "nir.sex",
                "the first character of a NIR is 1, 2 (or 3, 4, 7, 8 for temporary numbers)",
            ));
        }
        let department = &core[5..7];
        let department_is_corse = department == "2A" || department == "2B";
        let digits_ok = core.char_indices().all(|(i, c)| c.is_ascii_digit() || (department_is_corse && (i == 6)));
        if !digits_ok {
            return Err(Invalid::new("nir.characters", "a NIR holds digits only, and 2A or 2B for Corse"));
        }
        let month: u32 = core[3..5].parse().unwrap_or(0);
        if month == 0 || (13..=19).contains(&month) {
            return Err(Invalid::new("nir.month", format!("month of birth {month:02} is not a valid NIR month")));
        }
        if department == "00" {
            return Err(Invalid::new(
                "nir.department",
                "00 is not a department of birth (99 is used for persons born abroad)",
            ));
        }
        if &core[10..13] == "000" {
            return Err(Invalid::new("nir.order", "the order number of a NIR cannot be 000"));
        }
        if cleaned.len() == 15 {
            let given = &cleaned[13..15];
            if !given.chars().all(|c| c.is_ascii_digit()) {
                return Err(Invalid::new("nir.key", "the key of a NIR is two digits"));
            }
            let expected = key_of(core);
            if given.parse::<u64>().ok() != Some(expected) {
                return Err(Invalid::new("nir.key", "the key does not match the first 13 characters of the NIR"));
            }
        }
        Ok(Self { core: core.to_owned() })
    }

    /// The 13 characters persons are matched on. Personal data: never log it.
    pub fn core(&self) -> &str {
        &self.core
    }

    /// The full 15-character NIR, key included.
    pub fn with_key(&self) -> String {
        format!("{}{:02}", self.core, key_of(&self.core))
    }

    /// Whether the person was born abroad (department of birth 99).
    pub fn born_abroad(&self) -> bool {
        &self.core[5..7] == "99"
    }

    /// The NIR as agents may see it: all but the last four characters of the 13 hidden.
    pub fn masked(&self) -> String {
        format!("*********{}", &self.core[9..13])
    }
}

/// Key = 97 − (number mod 97), with 2A → 19 and 2B → 18 substituted before computing.
fn key_of(core: &str) -> u64 {
    let numeric = core.replacen("2A", "19", 1).replacen("2B", "18", 1);
    let number: u64 = numeric.parse().unwrap_or(0);
    97 - (number % 97)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nir_of_the_cnaf_flux_without_key_is_accepted() {
        let nir = Nir::parse("2820251108030").expect("valid");
        assert_eq!(nir.core(), "2820251108030");
        assert_eq!(nir.with_key().len(), 15);
    }

    #[test]
    fn a_nir_with_its_key_is_checked() {
        let with_key = Nir::parse("2820251108030").expect("valid").with_key();
        assert!(Nir::parse(&with_key).is_ok());
        let mut wrong = with_key.clone();
        let last = wrong.pop().expect("digit");
        wrong.push(if last == '0' { '1' } else { '0' });
        assert_eq!(Nir::parse(&wrong).expect_err("wrong key").rule, "nir.key");
    }

    #[test]
    fn corse_departments_substitute_before_the_key() {
        // 1 85 05 2A 004 012: key computed with 2A -> 19.
        let core = "185052A004012";
        let key = 97 - ("1850519004012".parse::<u64>().expect("number") % 97);
        assert!(Nir::parse(&format!("{core}{key:02}")).is_ok());
        assert!(Nir::parse(&format!("{core}{:02}", (key % 97) + 1)).is_err());
        assert!(Nir::parse("185052B004012").is_ok());
        assert!(Nir::parse("185052C004012").is_err());
    }

    #[test]
    fn a_person_born_abroad_has_department_99() {
        let nir = Nir::parse("1 75 12 99 352 001").expect("valid");
        assert!(nir.born_abroad());
    }

    #[test]
    fn malformed_nirs_say_which_rule_they_break() {
        assert_eq!(Nir::parse("123").expect_err("short").rule, "nir.length");
        assert_eq!(Nir::parse("5820251108030").expect_err("sex").rule, "nir.sex");
        assert_eq!(Nir::parse("2821551108030").expect_err("month").rule, "nir.month");
        assert_eq!(Nir::parse("2820251108000").expect_err("order").rule, "nir.order");
        assert_eq!(Nir::parse("28202511080X0").expect_err("chars").rule, "nir.characters");
    }

    #[test]
    fn the_15_and_13_forms_of_one_nir_are_the_same_person() {
        let short = Nir::parse("2820251108030").expect("valid");
        let long = Nir::parse(&short.with_key()).expect("valid");
        assert_eq!(short, long);
        assert_eq!(format!("{long:?}"), "Nir(<redacted>)");
    }
}
