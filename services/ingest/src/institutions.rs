//! The institutions allowed to push events: who they are, what kind, and what they cover.
//! Ops keep this mapping in a TOML file (see `infra/dev/institutions.toml`).

use std::{collections::HashMap, path::Path};

use passerelle_domain::event::InstitutionKind;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Institution {
    /// Stable identifier, named in the caller's credentials (`caf-521`, `cd-52`, `france-travail`).
    pub id: String,
    pub kind: InstitutionKind,
    /// For a CAF or MSA caisse: its organisme number (NUMORG).
    #[serde(default)]
    pub organisme: Option<String>,
    /// For an RSA authority: the territory it covers (authority code).
    #[serde(default)]
    pub territory: Option<String>,
    /// For a CAF or MSA caisse: the RSA authorities whose territory it serves, the only ones
    /// that may relay its flux.
    #[serde(default)]
    pub serves: Vec<String>,
    /// For a structure (required) and France Travail (optional): the SIRETs of its
    /// establishments. A structure pushes parcours facts for the persons whose active référent
    /// belongs to one of them or whom an orientation decision sent to one of them; France Travail
    /// likewise, besides the persons registered with it.
    #[serde(default)]
    pub sirets: Vec<String>,
    #[serde(default)]
    pub name: Option<String>,
}

impl Institution {
    fn check(&self) -> Result<(), String> {
        if self.id == passerelle_domain::event::PERSON_SOURCE {
            return Err(format!("institution {:?}: this id names the persons' own space, choose another", self.id));
        }
        match self.kind {
            InstitutionKind::Caf | InstitutionKind::Msa => {
                for (index, served) in self.serves.iter().enumerate() {
                    let authority = passerelle_domain::Authority::parse(served)
                        .map_err(|e| format!("institution {:?}: serves[{index}]: {e}", self.id))?;
                    if authority.as_str() != served {
                        return Err(format!(
                            "institution {:?}: serves[{index}]: write the authority code {:?}",
                            self.id,
                            authority.as_str()
                        ));
                    }
                }
                match &self.organisme {
                    Some(organisme) => passerelle_domain::Organisme::parse(organisme)
                        .map(|_| ())
                        .map_err(|e| format!("institution {:?}: organisme: {e}", self.id)),
                    None => Err(format!("institution {:?}: a caisse needs its organisme number", self.id)),
                }
            }
            InstitutionKind::Departement => match &self.territory {
                Some(territory) => passerelle_domain::Authority::parse(territory)
                    .map(|authority| {
                        if authority.as_str() == territory {
                            Ok(())
                        } else {
                            Err(format!(
                                "institution {:?}: write the territory as the authority code {:?}",
                                self.id,
                                authority.as_str()
                            ))
                        }
                    })
                    .map_err(|e| format!("institution {:?}: territory: {e}", self.id))?,
                None => Err(format!("institution {:?}: an RSA authority needs its territory", self.id)),
            },
            InstitutionKind::FranceTravail => Ok(()),
            InstitutionKind::Structure if self.sirets.is_empty() => Err(format!(
                "institution {:?}: a structure needs the SIRETs of its establishments (sirets = [\"...\"])",
                self.id
            )),
            InstitutionKind::Structure => Ok(()),
            InstitutionKind::Personne => Err(format!(
                "institution {:?}: PERSONNE is the kind of the facts persons record in their space, not of an institution",
                self.id
            )),
        }?;
        if !self.serves.is_empty() && !matches!(self.kind, InstitutionKind::Caf | InstitutionKind::Msa) {
            return Err(format!("institution {:?}: serves is for a CAF or MSA caisse", self.id));
        }
        if !self.sirets.is_empty() && !matches!(self.kind, InstitutionKind::Structure | InstitutionKind::FranceTravail)
        {
            return Err(format!("institution {:?}: sirets is for a structure or France Travail", self.id));
        }
        for (index, siret) in self.sirets.iter().enumerate() {
            let parsed = passerelle_domain::Siret::parse(siret)
                .map_err(|e| format!("institution {:?}: sirets[{index}]: {e}", self.id))?;
            if parsed.as_str() != siret {
                return Err(format!("institution {:?}: sirets[{index}]: write it as {:?}", self.id, parsed.as_str()));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default)]
pub struct Institutions {
    by_id: HashMap<String, Institution>,
}

#[derive(Deserialize)]
struct File {
    #[serde(default, rename = "institution")]
    institutions: Vec<Institution>,
}

impl Institutions {
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let file: File = toml_parse(text)?;
        let mut by_id = HashMap::new();
        for institution in file.institutions {
            institution.check()?;
            if by_id.contains_key(&institution.id) {
                return Err(format!("institution {:?} is listed twice", institution.id));
            }
            by_id.insert(institution.id.clone(), institution);
        }
        Ok(Self { by_id })
    }

    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn get(&self, id: &str) -> Option<&Institution> {
        self.by_id.get(id)
    }

    /// The CAF or MSA caisse with this organisme number.
    pub fn caisse(&self, organisme: &str) -> Option<&Institution> {
        self.by_id.values().find(|institution| {
            matches!(institution.kind, InstitutionKind::Caf | InstitutionKind::Msa)
                && institution.organisme.as_deref() == Some(organisme)
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Institution> {
        self.by_id.values()
    }
}

fn toml_parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No institution can pose as the persons' own space: neither its source id nor its kind.
    #[test]
    fn the_persons_space_is_no_institution() {
        let by_id = "[[institution]]\nid = \"espace-personne\"\nkind = \"DEPARTEMENT\"\nterritory = \"52\"\n";
        assert!(Institutions::from_toml(by_id).expect_err("the id is reserved").contains("persons' own space"));
        let by_kind = "[[institution]]\nid = \"cd-52\"\nkind = \"PERSONNE\"\n";
        assert!(Institutions::from_toml(by_kind).expect_err("the kind is reserved").contains("PERSONNE"));
        let fine = "[[institution]]\nid = \"cd-52\"\nkind = \"DEPARTEMENT\"\nterritory = \"52\"\n";
        assert!(Institutions::from_toml(fine).is_ok());
    }
}
