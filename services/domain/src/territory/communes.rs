//! The commune table: every code a fact may carry (today's communes, the municipal arrondissements
//! of Paris, Lyon and Marseille, the former codes of merged communes) with today's commune and the
//! RSA authority responsible for it. Generated from the INSEE list as Etalab publishes it (npm
//! `@etalab/decoupage-administratif`) by `services/domain/reference/communes/build.py`; compiled
//! into the binary and read once, at the first lookup.

use std::{collections::HashMap, sync::LazyLock};

const TABLE: &str = include_str!("../../reference/communes.csv");

/// What a code is in the INSEE list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A commune of today.
    Commune,
    /// A municipal arrondissement of Paris, Lyon or Marseille.
    Arrondissement,
    /// The former code of a commune merged into today's (delegated, associated or absorbed).
    Former,
}

/// One row of the table.
#[derive(Debug)]
pub struct Entry {
    kind: Kind,
    name: &'static str,
    today: &'static str,
    authority: &'static str,
}

impl Entry {
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The name the list gives (empty for some former codes).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Today's commune(s): the code itself, or the one(s) a former commune merged into (two when
    /// it was split).
    pub fn today(&self) -> impl Iterator<Item = &'static str> + use<> {
        self.today.split(' ')
    }

    /// The RSA authority responsible, none where the RSA does not apply (TAAF, Wallis-et-Futuna,
    /// Polynésie française, Nouvelle-Calédonie, Clipperton).
    pub fn authority(&self) -> Option<&'static str> {
        (!self.authority.is_empty()).then_some(self.authority)
    }
}

struct Table {
    source: &'static str,
    entries: HashMap<&'static str, Entry>,
}

static COMMUNES: LazyLock<Table> = LazyLock::new(|| read(TABLE));

fn read(text: &'static str) -> Table {
    let mut source = "";
    let mut entries = HashMap::with_capacity(40_000);
    let mut lines = text.lines().filter(|line| {
        if let Some(comment) = line.strip_prefix("# source: ") {
            source = comment;
        }
        !line.starts_with('#')
    });
    assert_eq!(lines.next(), Some("code,kind,name,today,authority"), "the commune table's header changed");
    for line in lines {
        let fields: Vec<&'static str> = line.split(',').collect();
        let [code, kind, name, today, authority] = fields[..] else {
            panic!(
                "the commune table's row {line:?} does not have 5 fields: regenerate it (infra/communes.sh --build)"
            );
        };
        let kind = match kind {
            "commune" => Kind::Commune,
            "arrondissement" => Kind::Arrondissement,
            "ancienne" => Kind::Former,
            other => panic!("the commune table's row {line:?} has an unknown kind {other:?}"),
        };
        entries.insert(code, Entry { kind, name, today, authority });
    }
    Table { source, entries }
}

/// The row of a code, when the list holds it.
pub fn entry(code: &str) -> Option<&'static Entry> {
    COMMUNES.entries.get(code)
}

/// Every code of the table.
pub fn all() -> impl Iterator<Item = (&'static str, &'static Entry)> {
    COMMUNES.entries.iter().map(|(code, entry)| (*code, entry))
}

/// The list's origin and version, as the table's header gives it
/// (`@etalab/decoupage-administratif 6.0.0`).
pub fn source() -> &'static str {
    COMMUNES.source
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_reads_whole_and_names_its_source() {
        assert!(source().starts_with("@etalab/decoupage-administratif "), "{}", source());
        assert!(all().count() > 39_000);
        let lyon = entry("69123").expect("Lyon");
        assert_eq!((lyon.kind(), lyon.name(), lyon.authority()), (Kind::Commune, "Lyon", Some("69M")));
        let split = entry("55273").expect("a former commune split in two");
        assert_eq!(split.today().count(), 2);
        assert_eq!(entry("98714").expect("Bora-Bora").authority(), None);
    }
}
