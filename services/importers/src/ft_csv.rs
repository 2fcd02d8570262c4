//! The France Travail extract: a ";"-separated CSV, one row per job seeker, with a header.
//! Columns are found by name (case and accents of the header do not matter); unknown columns
//! are ignored. Expected columns:
//!
//! `identifiant_ft` (11 digits), `nir`, `nom`, `prenom`, `date_naissance`, `code_commune`,
//! `date_inscription`, `categorie`, `motif_inscription`, `modalite_accompagnement`,
//! `referent_nom`, `referent_email`, `code_safir`, `date_ppae`, `date_cessation`,
//! `motif_cessation`, `date_radiation`, `motif_radiation`.
//!
//! Real files contain stray quotes, empty and `NULL` values and several date formats: all are
//! read; a value the hub cannot accept is refused by the hub, with its reason, row by row.

use std::io::Read;

use passerelle_ingest::proto::{self, DemandeurEmploiEvent, Location, Person, demandeur_emploi_event::Fact};

pub use crate::csv_rows::MAX_LINE_BYTES;
use crate::{
    csv_rows::{Row, read_rows},
    dates::normalise,
    fact_id,
};

/// Reads the extract row by row, calling `on_row`. Fails on a file that is not a CSV extract
/// (no identifiant_ft column), saying where.
pub fn read_extract<R: Read>(
    file_name: &str,
    input: R,
    on_row: impl FnMut(Row) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    read_rows(file_name, input, "a France Travail extract", "identifiant_ft", "", on_row)
}

/// The demandeur d'emploi events a row implies, or the reasons it cannot be imported.
pub fn events_of(id_key: &crate::IdKey, row: &Row) -> Result<Vec<DemandeurEmploiEvent>, String> {
    let Some(ft_id) = row.get("identifiant_ft") else {
        return Err("identifiant_ft is empty".into());
    };
    let date = |column: &str| normalise(&row.get(column).unwrap_or_default()).map_err(|e| format!("{column}: {e}"));
    let birth = date("date_naissance")?.unwrap_or_default();
    let person = Some(Person {
        france_travail_id: ft_id.clone(),
        nir: row.get("nir").unwrap_or_default(),
        nom: row.get("nom").unwrap_or_default(),
        prenoms: row.get("prenom").unwrap_or_default(),
        date_naissance: birth,
        ..Person::default()
    });
    let location =
        Some(Location { receiving_authority: String::new(), commune: row.get("code_commune").unwrap_or_default() });
    let event = |fact_name: &str, parts: &[&str], when: &str, fact: Fact| {
        let mut all = vec![ft_id.as_str()];
        all.extend_from_slice(parts);
        DemandeurEmploiEvent {
            event_id: fact_id(id_key, &format!("ft.{fact_name}"), &all),
            occurred_at: format!("{when}T00:00:00Z"),
            person: person.clone(),
            location: location.clone(),
            corrects_event_id: String::new(),
            fact: Some(fact),
        }
    };
    let mut events = Vec::new();
    let inscription = date("date_inscription")?;
    let Some(inscription_date) = inscription.clone() else {
        return Err("date_inscription is empty: a row of the extract is a registration".into());
    };
    let categorie = row.get("categorie").unwrap_or_default();
    let motif = row.get("motif_inscription").unwrap_or_default();
    events.push(event(
        "inscription",
        &[&inscription_date, &categorie, &motif],
        &inscription_date,
        Fact::Inscription(proto::Inscription {
            categorie: categorie.clone(),
            motif: motif.clone(),
            date_inscription: inscription_date.clone(),
        }),
    ));
    if let Some(modalite) = row.get("modalite_accompagnement") {
        events.push(event(
            "accompagnement",
            &[&inscription_date, &modalite],
            &inscription_date,
            Fact::AccompagnementChanged(proto::AccompagnementChanged { modalite: modalite.clone() }),
        ));
    }
    let referent_nom = row.get("referent_nom").unwrap_or_default();
    let referent_email = row.get("referent_email").unwrap_or_default();
    if !referent_nom.is_empty() || !referent_email.is_empty() {
        let safir = row.get("code_safir").unwrap_or_default();
        events.push(event(
            "referent",
            &[&inscription_date, &referent_nom, &referent_email, &safir],
            &inscription_date,
            Fact::ReferentAssigned(proto::FtReferentAssigned {
                nom: referent_nom.clone(),
                email: referent_email.clone(),
                code_safir: safir.clone(),
            }),
        ));
    }
    if let Some(ppae) = date("date_ppae")? {
        events.push(event(
            "ppae",
            &[&ppae],
            &ppae,
            Fact::PpaeSigned(proto::PpaeSigned { date_signature: ppae.clone() }),
        ));
    }
    if let Some(cessation) = date("date_cessation")? {
        let motif = row.get("motif_cessation").unwrap_or_default();
        events.push(event(
            "cessation",
            &[&cessation, &motif],
            &cessation,
            Fact::Cessation(proto::Cessation { motif: motif.clone(), date_cessation: cessation.clone() }),
        ));
    }
    if let Some(radiation) = date("date_radiation")? {
        let motif = row.get("motif_radiation").unwrap_or_default();
        events.push(event(
            "radiation",
            &[&radiation, &motif],
            &radiation,
            Fact::Radiation(proto::Radiation { motif: motif.clone(), date_radiation: radiation.clone() }),
        ));
    }
    Ok(events)
}

#[cfg(test)]
mod bounds_tests {
    use super::*;

    #[test]
    fn a_line_too_long_is_refused_naming_it() {
        let text =
            format!("identifiant_ft;nom\n12345678901;MARTIN\n12345678902;\"{}\n", "A".repeat(MAX_LINE_BYTES + 10));
        let mut rows = 0;
        let error = read_extract("x.csv", text.as_bytes(), |_| {
            rows += 1;
            Ok(())
        })
        .expect_err("a line too long");
        assert!(error.to_string().contains("line 3 runs over"), "{error}");
        assert_eq!(rows, 1, "the rows before were read");
    }
}
