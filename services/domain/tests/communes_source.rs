//! The commune table against its source: the INSEE list as Etalab publishes it (npm
//! `@etalab/decoupage-administratif`, installed by `infra/communes.sh`). The rules are derived
//! here again from the package's own data, independently of the script that wrote the table:
//! every commune and arrondissement maps to exactly one authority, the Métropole de Lyon is the
//! EPCI 200046977's members (and Lyon's arrondissements), every former code lands in today's
//! commune and its authority, and the table holds nothing the source does not.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
};

use passerelle_domain::{
    Authority, CommuneCode,
    territory::communes::{self, Kind},
};
use serde::Deserialize;

#[derive(Deserialize)]
struct Commune {
    code: String,
    #[serde(rename = "type")]
    kind: String,
    departement: String,
    #[serde(rename = "chefLieu")]
    chef_lieu: Option<String>,
    /// An arrondissement's commune.
    commune: Option<String>,
    #[serde(rename = "anciensCodes", default)]
    former_codes: Vec<String>,
}

#[derive(Deserialize)]
struct Epci {
    code: String,
    membres: Vec<Member>,
}

#[derive(Deserialize)]
struct Member {
    code: String,
}

fn package() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("reference/communes/node_modules/@etalab/decoupage-administratif")
}

fn read<T: for<'de> Deserialize<'de>>(file: &str) -> T {
    let path = package().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; install the source with infra/communes.sh", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The authority the law gives a commune of today, from the package's data alone.
fn expected_authority(departement: &str, commune_of_today: &str, metropole: &HashSet<String>) -> Option<String> {
    let authority = match departement {
        "984" | "986" | "987" | "988" | "989" => return None,
        "69" if metropole.contains(commune_of_today) => "69M",
        "69" => "69D",
        "67" | "68" => "6AE",
        "2A" | "2B" => "20R",
        other => other,
    };
    Some(authority.to_owned())
}

fn authority_of(code: &str) -> Option<String> {
    let commune = CommuneCode::parse(code).unwrap_or_else(|e| panic!("{code}: {e}"));
    match Authority::of_commune(&commune) {
        Ok(authority) => Some(authority.as_str().to_owned()),
        Err(error) => {
            assert_eq!(error.rule, "commune.outside_rsa", "{code}: {error}");
            None
        }
    }
}

#[test]
fn every_code_of_the_insee_list_maps_to_the_authority_the_law_gives_it() {
    let version: serde_json::Value = read("package.json");
    let version = version["version"].as_str().expect("the package's version");
    assert_eq!(
        communes::source(),
        format!("@etalab/decoupage-administratif {version}"),
        "the table was built from another version than the installed package: run infra/communes.sh --build"
    );
    let source: Vec<Commune> = read("data/communes.json");
    let epci: Vec<Epci> = read("data/epci.json");
    let metropole: HashSet<String> = epci
        .iter()
        .filter(|group| group.code == "200046977")
        .flat_map(|group| group.membres.iter().map(|member| member.code.clone()))
        .collect();
    assert!(metropole.contains("69123") && metropole.len() > 50, "the Métropole de Lyon's members: {metropole:?}");

    // Today's communes and arrondissements, with the authority the package's data gives them.
    let mut today: HashMap<&str, Option<String>> = HashMap::new();
    for c in &source {
        let (kind, of) = match c.kind.as_str() {
            "commune-actuelle" => (Kind::Commune, c.code.as_str()),
            "arrondissement-municipal" => (Kind::Arrondissement, c.commune.as_deref().expect("its commune")),
            _ => continue,
        };
        let expected = expected_authority(&c.departement, of, &metropole);
        assert_eq!(authority_of(&c.code), expected, "commune {}", c.code);
        assert_eq!(communes::entry(&c.code).expect("in the table").kind(), kind, "commune {}", c.code);
        today.insert(&c.code, expected);
    }

    // Former codes: each lands in today's commune(s) named by the source, and their authority.
    let mut former: HashMap<&str, HashSet<&str>> = HashMap::new();
    for c in &source {
        if let Some(chef_lieu) = c.chef_lieu.as_deref().filter(|chef_lieu| *chef_lieu != c.code) {
            former.entry(&c.code).or_default().insert(chef_lieu);
        }
        for old in &c.former_codes {
            former.entry(old).or_default().insert(&c.code);
        }
    }
    former.retain(|code, _| !today.contains_key(code));
    for (code, communes_of_today) in &former {
        let entry = communes::entry(code).unwrap_or_else(|| panic!("former code {code} is not in the table"));
        assert_eq!(entry.kind(), Kind::Former, "{code}");
        assert_eq!(&entry.today().collect::<HashSet<_>>(), communes_of_today, "former code {code}");
        let authorities: HashSet<_> = communes_of_today.iter().map(|t| today[t].clone()).collect();
        assert_eq!(authorities.len(), 1, "former code {code} lies in several authorities: {authorities:?}");
        assert_eq!(Some(&authority_of(code)), authorities.iter().next(), "former code {code}");
    }

    // Nothing in the table that the source does not hold.
    let stale: Vec<&str> = communes::all()
        .map(|(code, _)| code)
        .filter(|code| !today.contains_key(code) && !former.contains_key(code))
        .collect();
    assert!(stale.is_empty(), "codes in the table the source does not hold: {stale:?}");
    assert_eq!(communes::all().count(), today.len() + former.len());
}

#[test]
fn the_rhone_splits_between_the_metropole_and_the_departement_as_the_epci_draws_it() {
    let source: Vec<Commune> = read("data/communes.json");
    let epci: Vec<Epci> = read("data/epci.json");
    let metropole: HashSet<&str> = epci
        .iter()
        .filter(|group| group.code == "200046977")
        .flat_map(|group| group.membres.iter().map(|member| member.code.as_str()))
        .collect();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for c in source.iter().filter(|c| c.departement == "69") {
        let member = match c.kind.as_str() {
            "commune-actuelle" => metropole.contains(c.code.as_str()),
            "arrondissement-municipal" => metropole.contains(c.commune.as_deref().expect("its commune")),
            _ => continue,
        };
        let located = Authority::locate(Some("069"), Some(&CommuneCode::parse(&c.code).expect("in the table")))
            .unwrap_or_else(|e| panic!("{}: {e}", c.code));
        assert_eq!(located.as_str(), if member { "69M" } else { "69D" }, "commune {} of the Rhône", c.code);
        *counts.entry(located.as_str().to_owned()).or_default() += 1;
    }
    // The Métropole: its member communes and Lyon's nine arrondissements.
    assert_eq!(counts["69M"], metropole.len() + 9);
    assert!(counts["69D"] > 200, "{counts:?}");
}
