//! The habilitations file: which organisations exist (SIRET → kind and territory or caisse) and
//! which agents may act, individually, in which role for which organisation (DOMAIN.md §7). A
//! valid token of an agent not listed here gets nothing.

use std::{collections::HashMap, path::Path};

use passerelle_domain::{Organisme, Siret, territory::Authority};
use serde::Deserialize;

use crate::policy::{OrganisationKind, Role};

#[derive(Debug, Clone)]
pub struct Organisation {
    pub siret: String,
    pub nom: String,
    pub kind: OrganisationKind,
    /// The RSA authority whose territory it serves (authority, France Travail agency).
    pub territory: Option<String>,
    /// The caisse (CAF/MSA organisme).
    pub organisme: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Agent {
    pub uid: String,
    /// The identity provider that vouches for `uid` (ProConnect's `idp_id`); `uid` is unique
    /// only within one identity provider, so an agent is keyed by both.
    pub idp_id: Option<String>,
    pub role: Role,
    pub organisation: Organisation,
    /// Given and usual names the development identity provider vouches for (development files
    /// only; in production the names come from ProConnect's id_token).
    pub dev_names: Option<(String, String)>,
}

#[derive(Debug, Clone, Default)]
pub struct Habilitations {
    /// Agents by (identity provider, uid).
    agents: HashMap<(Option<String>, String), Agent>,
    /// Organisations by SIRET.
    organisations: HashMap<String, Organisation>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    organisations: Vec<OrganisationEntry>,
    #[serde(default)]
    agents: Vec<AgentEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrganisationEntry {
    siret: String,
    nom: String,
    kind: String,
    territory: Option<String>,
    organisme: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentEntry {
    uid: String,
    #[serde(default)]
    idp_id: Option<String>,
    siret: String,
    role: String,
    /// For the development identity provider only.
    #[serde(default)]
    given_name: Option<String>,
    #[serde(default)]
    usual_name: Option<String>,
}

impl Habilitations {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the habilitations file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut organisations = HashMap::new();
        for (index, entry) in file.organisations.into_iter().enumerate() {
            let at = format!("organisations[{index}]");
            Siret::parse(&entry.siret).map_err(|e| format!("{at}.siret: {e}"))?;
            let kind = match entry.kind.as_str() {
                "autorite_rsa" => OrganisationKind::AutoriteRsa,
                "caisse" => OrganisationKind::Caisse,
                "france_travail" => OrganisationKind::FranceTravail,
                "structure" => OrganisationKind::Structure,
                other => {
                    return Err(format!(
                        "{at}.kind: {other:?} is not autorite_rsa, caisse, france_travail or structure"
                    ));
                }
            };
            if let Some(territory) = &entry.territory {
                Authority::parse(territory).map_err(|e| format!("{at}.territory: {e}"))?;
            }
            if let Some(organisme) = &entry.organisme {
                Organisme::parse(organisme).map_err(|e| format!("{at}.organisme: {e}"))?;
            }
            match kind {
                OrganisationKind::AutoriteRsa | OrganisationKind::FranceTravail if entry.territory.is_none() => {
                    return Err(format!("{at}.territory: required for {}", entry.kind));
                }
                OrganisationKind::Caisse if entry.organisme.is_none() => {
                    return Err(format!("{at}.organisme: required for a caisse"));
                }
                _ => {}
            }
            let organisation = Organisation {
                siret: entry.siret.clone(),
                nom: entry.nom,
                kind,
                territory: entry.territory,
                organisme: entry.organisme,
            };
            if organisations.insert(entry.siret.clone(), organisation).is_some() {
                return Err(format!("{at}.siret: {} is listed twice", entry.siret));
            }
        }
        let mut agents = HashMap::new();
        for (index, entry) in file.agents.into_iter().enumerate() {
            let at = format!("agents[{index}]");
            let role = Role::parse(&entry.role).ok_or_else(|| {
                format!("{at}.role: {:?} is not charge_orientation, gestionnaire_rsa, agent_caisse, conseiller_ft, agent_structure or dpo", entry.role)
            })?;
            let organisation = organisations
                .get(&entry.siret)
                .cloned()
                .ok_or_else(|| format!("{at}.siret: no organisation {} in this file", entry.siret))?;
            if let Some(kind) = role.organisation_kind()
                && kind != organisation.kind
            {
                return Err(format!(
                    "{at}.role: {} is not a role of a {:?} organisation",
                    entry.role, organisation.kind
                ));
            }
            let key = (entry.idp_id.clone(), entry.uid.clone());
            if agents.contains_key(&key) {
                return Err(format!("{at}.uid: {} is listed twice for the same identity provider", entry.uid));
            }
            let dev_names = match (entry.given_name, entry.usual_name) {
                (Some(given), Some(usual)) => Some((given, usual)),
                (None, None) => None,
                _ => return Err(format!("{at}: given_name and usual_name go together")),
            };
            agents.insert(key, Agent { uid: entry.uid, idp_id: entry.idp_id, role, organisation, dev_names });
        }
        Ok(Self { agents, organisations })
    }

    /// The organisation of a SIRET, if this hub knows it (its name, shown to a person who reads
    /// who consulted their dossier).
    pub fn organisation(&self, siret: &str) -> Option<&Organisation> {
        self.organisations.get(siret)
    }

    /// Every agent, by uid (the development identity provider lists them).
    pub fn agents(&self) -> Vec<&Agent> {
        let mut agents: Vec<&Agent> = self.agents.values().collect();
        agents.sort_by(|a, b| (&a.uid, &a.idp_id).cmp(&(&b.uid, &b.idp_id)));
        agents
    }

    /// The agent `uid` of identity provider `idp_id` (None: the file lists it without one).
    pub fn agent(&self, idp_id: Option<&str>, uid: &str) -> Option<&Agent> {
        self.agents.get(&(idp_id.map(str::to_owned), uid.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_development_file_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/dev/habilitations.toml");
        let habilitations = Habilitations::load(Path::new(path)).expect("valid");
        assert!(habilitations.agent(None, "cd52.orientation").is_some());
    }

    #[test]
    fn mistakes_are_named_with_their_place() {
        let org = "[[organisations]]\nsiret = \"73282932000074\"\nnom = \"x\"\nkind = \"structure\"\n";
        for (text, expected) in [
            ("[[organisations]]\nsiret = \"123\"\nnom = \"x\"\nkind = \"structure\"\n", "organisations[0].siret"),
            (
                "[[organisations]]\nsiret = \"73282932000074\"\nnom = \"x\"\nkind = \"autorite_rsa\"\n",
                "organisations[0].territory",
            ),
            (&format!("{org}[[agents]]\nuid = \"a\"\nsiret = \"73282932000074\"\nrole = \"chef\"\n"), "agents[0].role"),
            (
                &format!("{org}[[agents]]\nuid = \"a\"\nsiret = \"73282932000074\"\nrole = \"agent_caisse\"\n"),
                "agents[0].role",
            ),
            (
                &format!("{org}[[agents]]\nuid = \"a\"\nsiret = \"35600000000048\"\nrole = \"agent_structure\"\n"),
                "agents[0].siret",
            ),
        ] {
            let error = Habilitations::parse(text).expect_err(text);
            assert!(error.starts_with(expected), "{error}");
        }
    }

    #[test]
    fn the_same_uid_at_two_identity_providers_is_two_agents() {
        let text = "[[organisations]]\nsiret = \"73282932000074\"\nnom = \"x\"\nkind = \"structure\"\n\
                    [[organisations]]\nsiret = \"35600000000006\"\nnom = \"y\"\nkind = \"structure\"\n\
                    [[agents]]\nuid = \"jdupont\"\nidp_id = \"idp-a\"\nsiret = \"73282932000074\"\nrole = \"agent_structure\"\n\
                    [[agents]]\nuid = \"jdupont\"\nidp_id = \"idp-b\"\nsiret = \"35600000000006\"\nrole = \"agent_structure\"\n";
        let habilitations = Habilitations::parse(text).expect("valid");
        let a = habilitations.agent(Some("idp-a"), "jdupont").expect("listed");
        let b = habilitations.agent(Some("idp-b"), "jdupont").expect("listed");
        assert_ne!(a.organisation.siret, b.organisation.siret);
        assert!(habilitations.agent(None, "jdupont").is_none(), "no agent jdupont without an identity provider");
        assert!(habilitations.agent(Some("idp-c"), "jdupont").is_none());
    }
}
