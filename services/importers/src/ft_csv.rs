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

use std::{collections::HashMap, io::Read};

use passerelle_ingest::proto::{self, DemandeurEmploiEvent, Location, Person, demandeur_emploi_event::Fact};

use crate::{
    InvalidFile,
    dates::{normalise, present},
    fact_id,
};

/// One row, by column name.
pub struct Row {
    pub line: u64,
    values: HashMap<String, String>,
}

impl Row {
    fn get(&self, column: &str) -> Option<String> {
        self.values.get(column).and_then(|raw| present(raw))
    }
}

pub(crate) fn column_name(raw: &str) -> String {
    raw.trim()
        .trim_matches('"')
        .trim_start_matches('\u{feff}')
        .to_lowercase()
        .replace(['é', 'è', 'ê'], "e")
        .replace(['à', 'â'], "a")
        .replace([' ', '-'], "_")
}

/// The longest line of an extract, in bytes: a row is a few hundred; one far longer (a field
/// whose quote never closes, a file that is not CSV) is refused at this size, naming its line,
/// instead of filling memory.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Refuses a line longer than [`MAX_LINE_BYTES`] as the bytes stream in.
pub(crate) struct BoundedLines<R> {
    pub(crate) inner: R,
    /// Bytes since the last newline, and the lines seen.
    pub(crate) run: usize,
    pub(crate) line: u64,
    /// What the file should be, for the refusal ("a France Travail extract").
    pub(crate) what: &'static str,
}

impl<R: Read> Read for BoundedLines<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        for byte in &buf[..read] {
            if *byte == b'\n' {
                self.run = 0;
                self.line += 1;
            } else {
                self.run += 1;
                if self.run > MAX_LINE_BYTES {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "line {} runs over {MAX_LINE_BYTES} bytes: not {} (or a quote never closes)",
                            self.line + 1,
                            self.what
                        ),
                    ));
                }
            }
        }
        Ok(read)
    }
}

/// Reads the extract row by row, calling `on_row`. Fails on a file that is not a CSV extract
/// (no identifiant_ft column), saying where.
pub fn read_extract<R: Read>(
    file_name: &str,
    input: R,
    mut on_row: impl FnMut(Row) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b';')
        .flexible(true)
        .quoting(true)
        .double_quote(true)
        .trim(csv::Trim::All)
        .from_reader(BoundedLines { inner: input, run: 0, line: 0, what: "a France Travail extract" });
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| InvalidFile { file: file_name.into(), line: 1, reason: format!("no header: {e}") })?
        .iter()
        .map(column_name)
        .collect();
    if !headers.iter().any(|h| h == "identifiant_ft") {
        return Err(InvalidFile {
            file: file_name.into(),
            line: 1,
            reason: format!("not a France Travail extract: no identifiant_ft column (columns: {})", headers.join(", ")),
        }
        .into());
    }
    let mut rows = 0;
    let mut record = csv::ByteRecord::new();
    loop {
        let line = reader.position().line();
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(error) => {
                return Err(
                    InvalidFile { file: file_name.into(), line, reason: format!("unreadable row: {error}") }.into()
                );
            }
        }
        let values = headers.iter().zip(record.iter()).map(|(name, value)| (name.clone(), decode(value))).collect();
        rows += 1;
        on_row(Row { line: record.position().map(|p| p.line()).unwrap_or(line), values })?;
    }
    Ok(rows)
}

/// Extracts are UTF-8, or windows-1252 when produced by older tools.
pub(crate) fn decode(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => encoding_rs::WINDOWS_1252.decode(bytes).0.into_owned(),
    }
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
