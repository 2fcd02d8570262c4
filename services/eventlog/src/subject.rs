//! Subject keys: pseudonymous Kafka keys derived from identifiers with a secret pepper.

use hmac::{Hmac, Mac};
use passerelle_domain::{
    DepartementCode, DepartementInternalId, FranceTravailId, Matricule, Nir, Organisme,
    event::{SubjectKey, SubjectKind},
};
use sha2::Sha256;

use crate::secrets::SecretKey;

/// Derives subject keys: `kind:` + the first 128 bits, in hex, of HMAC-SHA256(pepper, kind:value).
/// Without the pepper, a key cannot be linked back to a NIR by trying all NIRs.
#[derive(Clone, Debug)]
pub struct SubjectKeys {
    pepper: SecretKey,
}

impl SubjectKeys {
    pub fn new(pepper: SecretKey) -> Self {
        Self { pepper }
    }

    fn derive(&self, kind: &str, value: &str) -> SubjectKey {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(self.pepper.bytes()).expect("HMAC takes keys of any length");
        mac.update(kind.as_bytes());
        mac.update(b":");
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        SubjectKey(format!("{kind}:{}", hex::encode(&digest[..16])))
    }

    /// From the 13 characters persons are matched on, so both forms of a NIR give one key.
    pub fn nir(&self, nir: &Nir) -> SubjectKey {
        self.derive(SubjectKind::Nir.prefix(), nir.core())
    }

    pub fn france_travail(&self, id: &FranceTravailId) -> SubjectKey {
        self.derive(SubjectKind::FranceTravail.prefix(), id.as_str())
    }

    /// A département id is unique within its département only.
    pub fn departement(&self, departement: &DepartementCode, id: &DepartementInternalId) -> SubjectKey {
        self.derive(SubjectKind::Departement.prefix(), &format!("{}/{}", departement.as_str(), id.as_str()))
    }

    /// A member of a CAF/MSA household known by civil identity only (the flux carries persons
    /// without NIR): the dossier, names and birth date. The weakest key: identity resolution never
    /// merges it with another person automatically (DOMAIN.md §2).
    pub fn civil(
        &self,
        organisme: &Organisme,
        matricule: &Matricule,
        nom: &str,
        prenoms: &str,
        date_naissance: chrono::NaiveDate,
    ) -> SubjectKey {
        let normalise = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ").to_uppercase();
        self.derive(
            SubjectKind::Civil.prefix(),
            &format!(
                "{}/{}/{}/{}/{date_naissance}",
                organisme.as_str(),
                matricule.as_str(),
                normalise(nom),
                normalise(prenoms)
            ),
        )
    }

    /// The blind index of a name and birth date, for the API's search (never a subject key:
    /// namesakes share it). Names are compared without case, accents or extra spaces.
    pub fn name_and_birth_date(&self, nom: &str, date_naissance: chrono::NaiveDate) -> SubjectKey {
        self.derive("nn", &format!("{}/{date_naissance}", normalise_name(nom)))
    }

    /// A household: the CAF/MSA dossier (organisme + normalised matricule).
    pub fn household(&self, organisme: &Organisme, matricule: &Matricule) -> SubjectKey {
        self.derive(SubjectKind::Household.prefix(), &format!("{}/{}", organisme.as_str(), matricule.as_str()))
    }
}

/// Upper case, without accents, hyphens and apostrophes as spaces, single spaces.
pub fn normalise_name(text: &str) -> String {
    let plain: String = text
        .chars()
        .flat_map(char::to_uppercase)
        .map(|c| match c {
            'À' | 'Â' | 'Ä' | 'Á' | 'Ã' => 'A',
            'Ç' => 'C',
            'É' | 'È' | 'Ê' | 'Ë' => 'E',
            'Î' | 'Ï' | 'Í' | 'Ì' => 'I',
            'Ô' | 'Ö' | 'Ó' | 'Ò' | 'Õ' => 'O',
            'Ù' | 'Û' | 'Ü' | 'Ú' => 'U',
            'Ÿ' => 'Y',
            'Ñ' => 'N',
            '-' | '\'' | '’' => ' ',
            other => other,
        })
        .collect();
    plain.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_keys_are_stable_pseudonyms_that_depend_on_the_pepper() {
        let keys = SubjectKeys::new(SecretKey::from_bytes([7; 32]));
        let other = SubjectKeys::new(SecretKey::from_bytes([8; 32]));
        let nir = Nir::parse("2820251108030").expect("valid");
        let with_key = Nir::parse(&nir.with_key()).expect("valid");
        assert_eq!(keys.nir(&nir), keys.nir(&with_key));
        assert_ne!(keys.nir(&nir), other.nir(&nir));
        assert!(keys.nir(&nir).as_str().starts_with("nir:"));
        assert!(!keys.nir(&nir).as_str().contains("2820251108030"));
        let short = Matricule::parse("2055990").expect("valid");
        let long = Matricule::parse("205599000000000").expect("valid");
        let caf = Organisme::parse("521").expect("valid");
        assert_eq!(keys.household(&caf, &short), keys.household(&caf, &long));
    }
}
