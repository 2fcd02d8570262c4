//! A structure's parcours export: the diagnostics and plans d'action of the persons it
//! accompanies, as a ";"-separated CSV with a header, **one row per item**, the rows of one
//! person following each other. Columns are found by name (case and accents of the header do
//! not matter); unknown columns are ignored.
//!
//! Who the row is about (at least one): `nir`, `identifiant_ft`, `identifiant_departement` with
//! `code_departement`.
//!
//! `type`: what the row is.
//! - `SITUATION`: a situation of the diagnostic: `theme`, `libelle`, `sensible` (oui/non),
//!   `note_par` (the agent's uid), `date` (when it was noted).
//! - `OBJECTIF`: an objective of the plan: `theme`, `libelle`.
//! - `ACTION`: an action of the plan: `identifiant_action`, `theme`, `libelle`, `statut` (PREVUE,
//!   EN_COURS, REALISEE, ABANDONNEE), `date_debut`, `date_fin`, `prescripteur_siret`.
//!
//! Per person, the first non-empty value wins for the diagnostic's `date_diagnostic`,
//! `metier_rome`, `niveau_qualification`, `dernier_emploi` and the plan's `date_signature`,
//! `heures_hebdomadaires`, `motif_heures`. A person's SITUATION rows make one diagnostic
//! (recorded whole, on `date_diagnostic`, else the latest `date` of its situations), their
//! OBJECTIF and ACTION rows one plan (on `date_signature`). Dates: `YYYY-MM-DD` or `DD/MM/YYYY`.
//!
//! Fact ids are keyed hashes of the person and the content: importing the same file again adds
//! nothing; a changed diagnostic or plan is a new fact that replaces the previous one.

use std::{collections::HashSet, io::Read};

use passerelle_ingest::proto::{self, ParcoursEvent, Person, parcours_event::Fact};

use crate::{
    csv_rows::{Row, read_rows},
    dates::normalise,
    fact_id,
};

/// A date column of a row, normalised (`YYYY-MM-DD`), empty when not given; the error names the
/// line and the column.
fn date(row: &Row, column: &str) -> Result<String, String> {
    normalise(&row.text(column)).map(Option::unwrap_or_default).map_err(|e| format!("line {}: {column}: {e}", row.line))
}

/// The identifiers of the person, as one key (rows of one person follow each other).
fn person_key(row: &Row) -> String {
    ["nir", "identifiant_ft", "identifiant_departement", "code_departement"]
        .map(|column| row.text(column))
        .join("\u{1f}")
}

/// A person's rows, gathered until the next person's.
#[derive(Default)]
pub struct PersonRows {
    pub first_line: u64,
    pub rows: Vec<Row>,
}

/// Reads the export row by row and hands each person's rows, once complete, to `on_person`.
/// Fails on a file that is not such an export (no `type` column), saying where.
pub fn read_export<R: Read>(
    file_name: &str,
    input: R,
    mut on_person: impl FnMut(PersonRows) -> anyhow::Result<()>,
    mut on_refused: impl FnMut(u64, String) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let mut current = PersonRows::default();
    let mut current_key = None;
    let mut done: HashSet<String> = HashSet::new();
    let rows = read_rows(
        file_name,
        input,
        "a structure's parcours export",
        "type",
        " (SITUATION, OBJECTIF or ACTION)",
        |row| {
            let key = person_key(&row);
            if key.chars().all(|c| c == '\u{1f}') {
                return on_refused(row.line, "no identifier: nir, identifiant_ft or identifiant_departement".into());
            }
            if current_key.as_ref() != Some(&key) {
                if done.contains(&key) {
                    return on_refused(
                        row.line,
                        "this person's rows do not follow each other: sort the export by person (a person's \
                         diagnostic and plan are recorded whole, from all their rows at once)"
                            .into(),
                    );
                }
                if let Some(previous) = current_key.replace(key) {
                    done.insert(previous);
                    on_person(std::mem::take(&mut current))?;
                }
                current.first_line = row.line;
            }
            current.rows.push(row);
            Ok(())
        },
    )?;
    if current_key.is_some() {
        on_person(current)?;
    }
    Ok(rows)
}

/// The parcours events a person's rows imply (a diagnostic, a plan), or why they cannot be
/// imported.
pub fn events_of(id_key: &crate::IdKey, person: &PersonRows) -> Result<Vec<ParcoursEvent>, String> {
    let first = |column: &str| person.rows.iter().find_map(|row| row.get(column));
    let first_date = |column: &str| -> Result<Option<String>, String> {
        for row in &person.rows {
            let value = date(row, column)?;
            if !value.is_empty() {
                return Ok(Some(value));
            }
        }
        Ok(None)
    };
    let row = &person.rows[0];
    let who = Some(Person {
        nir: row.text("nir"),
        france_travail_id: row.text("identifiant_ft"),
        departement_id: row.text("identifiant_departement"),
        departement_id_code: row.text("code_departement"),
        ..Person::default()
    });
    let mut situations = Vec::new();
    let mut objectives = Vec::new();
    let mut actions = Vec::new();
    let mut latest_noted = String::new();
    for row in &person.rows {
        let kind = row.text("type").to_uppercase();
        match kind.as_str() {
            "SITUATION" => {
                let noted_on = date(row, "date")?;
                latest_noted = latest_noted.max(noted_on.clone());
                let sensitive = matches!(row.text("sensible").to_lowercase().as_str(), "oui" | "o" | "1" | "true");
                situations.push(proto::Situation {
                    theme: row.text("theme"),
                    label: row.text("libelle"),
                    sensitive,
                    noted_on,
                    noted_by: row.text("note_par"),
                });
            }
            "OBJECTIF" => objectives.push(proto::Objective { theme: row.text("theme"), label: row.text("libelle") }),
            "ACTION" => actions.push(proto::PlanActionItem {
                action_id: row.text("identifiant_action"),
                theme: row.text("theme"),
                label: row.text("libelle"),
                status: row.text("statut"),
                date_debut: date(row, "date_debut")?,
                date_fin: date(row, "date_fin")?,
                prescriber_siret: row.text("prescripteur_siret"),
            }),
            other => {
                return Err(format!(
                    "line {}: type {other:?}: a row is a SITUATION, an OBJECTIF or an ACTION",
                    row.line
                ));
            }
        }
    }
    let person_parts = [row.text("nir"), row.text("identifiant_ft"), row.text("identifiant_departement")];
    let id = |prefix: &str, content: &str| {
        let mut parts: Vec<&str> = person_parts.iter().map(String::as_str).collect();
        parts.push(content);
        fact_id(id_key, prefix, &parts)
    };
    let mut events = Vec::new();
    if !situations.is_empty() {
        let date = first_date("date_diagnostic")?.unwrap_or(latest_noted);
        let diagnostic = proto::DiagnosticRecorded {
            dernier_emploi: first("dernier_emploi").unwrap_or_default(),
            experience: String::new(),
            rome_code: first("metier_rome").unwrap_or_default(),
            niveau_qualification: first("niveau_qualification").unwrap_or_default(),
            situations,
        };
        events.push(ParcoursEvent {
            event_id: id("structure.diagnostic", &format!("{date}{}", content_of(&diagnostic))),
            occurred_at: format!("{date}T00:00:00Z"),
            person: who.clone(),
            location: None,
            corrects_event_id: String::new(),
            fact: Some(Fact::DiagnosticRecorded(diagnostic)),
        });
    }
    if !objectives.is_empty() || !actions.is_empty() {
        let Some(signed) = first_date("date_signature")? else {
            return Err(format!(
                "line {}: the plan's rows give no date_signature (the contrat d'engagement's signature date)",
                person.first_line
            ));
        };
        let weekly_hours = match first("heures_hebdomadaires") {
            None => None,
            Some(hours) => Some(hours.parse::<u32>().map_err(|_| {
                format!("line {}: heures_hebdomadaires {hours:?} is not a whole number of hours", person.first_line)
            })?),
        };
        let plan = proto::EngagementPlanSet {
            signed_on: signed.clone(),
            revised_on: String::new(),
            weekly_hours,
            hours_motif: first("motif_heures").unwrap_or_default(),
            objectives,
            actions,
        };
        let content = format!("{signed}{weekly_hours:?}{}{}", plan.hours_motif, plan_content(&plan));
        events.push(ParcoursEvent {
            event_id: id("structure.plan", &content),
            occurred_at: format!("{signed}T00:00:00Z"),
            person: who,
            location: None,
            corrects_event_id: String::new(),
            fact: Some(Fact::EngagementPlanSet(plan)),
        });
    }
    Ok(events)
}

/// The content of a diagnostic, for its fact id (the Debug of the message hides its values).
fn content_of(diagnostic: &proto::DiagnosticRecorded) -> String {
    let mut content =
        format!("{}\u{1f}{}\u{1f}{}", diagnostic.dernier_emploi, diagnostic.rome_code, diagnostic.niveau_qualification);
    for s in &diagnostic.situations {
        content.push_str(&format!(
            "\u{1e}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}",
            s.theme, s.label, s.sensitive, s.noted_on, s.noted_by
        ));
    }
    content
}

fn plan_content(plan: &proto::EngagementPlanSet) -> String {
    let mut content = String::new();
    for o in &plan.objectives {
        content.push_str(&format!("\u{1e}{}\u{1f}{}", o.theme, o.label));
    }
    for a in &plan.actions {
        content.push_str(&format!(
            "\u{1e}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}",
            a.action_id, a.theme, a.label, a.status, a.date_debut, a.date_fin, a.prescriber_siret
        ));
    }
    content
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPORT: &str = "\
NIR;Type;Thème;Libellé;Sensible;Noté par;Date;Métier ROME;Identifiant action;Statut;Date début;Date signature;Heures hebdomadaires;Motif heures
1850752121003;SITUATION;LOGEMENT;Difficulté à payer le loyer;non;agent-1;05/10/2026;N1103;;;;;;
1850752121003;SITUATION;SANTE;Existence d'un dossier MDPH;;agent-1;2026-10-06;;;;;;;
1850752121003;OBJECTIF;MOBILITE;Obtenir le permis B;;;;;;;;10/10/2026;10;PARENT_ISOLE
1850752121003;ACTION;MOBILITE;Code de la route;;;;;permis-b;EN_COURS;15/10/2026;;;
2870552121004;SITUATION;NUMERIQUE;Pas d'accès à internet;;agent-2;2026-10-07;;;;;;;
1850752121003;SITUATION;EMPLOI;Sans emploi;;agent-1;2026-10-07;;;;;;;
;SITUATION;EMPLOI;Sans identifiant;;agent-1;2026-10-07;;;;;;;
";

    fn key() -> crate::IdKey {
        crate::IdKey::from_bytes([7; 32])
    }

    fn read() -> (Vec<PersonRows>, Vec<(u64, String)>) {
        let (mut persons, mut refused) = (Vec::new(), Vec::new());
        read_export(
            "export.csv",
            EXPORT.as_bytes(),
            |person| {
                persons.push(person);
                Ok(())
            },
            |line, reason| {
                refused.push((line, reason));
                Ok(())
            },
        )
        .expect("an export");
        (persons, refused)
    }

    #[test]
    fn a_persons_rows_make_one_diagnostic_and_one_plan_and_stray_rows_are_refused_by_line() {
        let (persons, refused) = read();
        assert_eq!(persons.len(), 2);
        let refused_lines: Vec<u64> = refused.iter().map(|(line, _)| *line).collect();
        assert_eq!(refused_lines, [7, 8], "{refused:?}");
        assert!(refused[0].1.contains("do not follow each other"), "{}", refused[0].1);
        let events = events_of(&key(), &persons[0]).expect("events");
        assert_eq!(events.len(), 2);
        let Some(Fact::DiagnosticRecorded(diagnostic)) = &events[0].fact else { panic!("a diagnostic first") };
        assert_eq!(diagnostic.situations.len(), 2);
        assert_eq!(diagnostic.rome_code, "N1103");
        assert_eq!(events[0].occurred_at, "2026-10-06T00:00:00Z", "the latest situation's date");
        let Some(Fact::EngagementPlanSet(plan)) = &events[1].fact else { panic!("then the plan") };
        assert_eq!(
            (plan.signed_on.as_str(), plan.weekly_hours, plan.hours_motif.as_str()),
            ("2026-10-10", Some(10), "PARENT_ISOLE")
        );
        assert_eq!(plan.actions[0].date_debut, "2026-10-15");
        // The same content gives the same ids; another content, other ids.
        let again = events_of(&key(), &read().0[0]).expect("events");
        assert_eq!(again[0].event_id, events[0].event_id);
        assert!(!events[0].event_id.contains("1850752121003"));
        let second = events_of(&key(), &persons[1]).expect("events");
        assert_ne!(second[0].event_id, events[0].event_id);
    }

    fn persons_of(text: &str) -> Vec<PersonRows> {
        let mut persons = Vec::new();
        read_export(
            "x.csv",
            text.as_bytes(),
            |p| {
                persons.push(p);
                Ok(())
            },
            |_, _| Ok(()),
        )
        .expect("read");
        persons
    }

    #[test]
    fn a_plan_without_its_signature_date_and_an_unknown_row_type_are_refused_naming_the_line() {
        let text = "nir;type;theme;libelle\n1850752121003;OBJECTIF;MOBILITE;Permis\n";
        let persons = persons_of(text);
        assert!(events_of(&key(), &persons[0]).expect_err("no date").contains("date_signature"));
        let text = "nir;type\n1850752121003;NOTE\n";
        let persons = persons_of(text);
        assert!(events_of(&key(), &persons[0]).expect_err("unknown").contains("line 2"));
        let error = read_export("x.csv", "nir;nom\n1;2\n".as_bytes(), |_| Ok(()), |_, _| Ok(())).expect_err("no type");
        assert!(error.to_string().contains("no type column"), "{error}");
    }
}
