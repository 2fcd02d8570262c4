//! The DPO's journal: who read which dossier, when, through which channel and for what purpose,
//! searched by person, agent, period, purpose and outcome, and exported as CSV. The DPO reads
//! the journal, never a dossier; the search itself is journaled.

use passerelle_api::service::{JOURNAL_MAX_ROWS, JournalQuery};
use serde_json::Value;

use super::*;

#[derive(Debug, Default, Deserialize)]
pub(super) struct JournalForm {
    personne: Option<String>,
    agent: Option<String>,
    depuis: Option<String>,
    jusqu_a: Option<String>,
    motif: Option<String>,
    resultat: Option<String>,
    page: Option<usize>,
}

impl JournalForm {
    fn query(&self) -> JournalQuery {
        let given =
            |value: &Option<String>| value.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
        JournalQuery {
            person_id: given(&self.personne),
            agent: given(&self.agent),
            depuis: given(&self.depuis),
            jusqu_a: given(&self.jusqu_a),
            motif: given(&self.motif),
            resultat: given(&self.resultat),
            // The console pages the rows itself (the most recent first): up to the API's maximum.
            page: passerelle_api::service::PageQuery { limite: Some(JOURNAL_MAX_ROWS.to_string()), curseur: None },
        }
    }

    fn href(&self, path: &str, page: Option<usize>) -> String {
        let mut url = url::form_urlencoded::Serializer::new(String::new());
        for (key, value) in [
            ("personne", &self.personne),
            ("agent", &self.agent),
            ("depuis", &self.depuis),
            ("jusqu_a", &self.jusqu_a),
            ("motif", &self.motif),
            ("resultat", &self.resultat),
        ] {
            if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
                url.append_pair(key, value);
            }
        }
        if let Some(page) = page {
            url.append_pair("page", &page.to_string());
        }
        format!("{path}?{}", url.finish())
    }
}

fn channel_label(code: &str) -> &'static str {
    match code {
        "console" => "Console",
        "api_grpc" => "API (gRPC)",
        "espace_personne" => "Espace de la personne",
        _ => "API (REST)",
    }
}

fn outcome_label(code: &str) -> String {
    match code {
        "shown" => "Consulté".into(),
        "found" => "Personne(s) trouvée(s)".into(),
        "none" => "Aucun résultat".into(),
        "moved_out" => "Déménagement signalé".into(),
        "not_found" => "Introuvable".into(),
        "invalid" => "Demande invalide".into(),
        "unauthenticated" => "Non authentifié".into(),
        "not_habilitated" => "Non habilité".into(),
        "error" => "Erreur".into(),
        "matched" => "Personne identifiée".into(),
        "not_identified" => "Personne non identifiée".into(),
        "ambiguous" => "Identification ambiguë".into(),
        other => match other.strip_prefix("refused:") {
            Some(motif) => format!("Refusé ({motif})"),
            None => other.to_owned(),
        },
    }
}

/// One journal row, as the DPO reads it.
struct JournalLine {
    at: String,
    channel: &'static str,
    action: String,
    agent: String,
    organisation: String,
    role: String,
    purpose: String,
    person: String,
    sections: String,
    withheld: String,
    outcome: String,
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or("").to_owned()
}

fn lines(answer: &Value) -> Vec<JournalLine> {
    answer["entrees"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| {
            let found: Vec<String> = row["persons_found"].as_array().into_iter().flatten().map(text).collect();
            JournalLine {
                at: row["at"].as_str().map(views::date_time).unwrap_or_default(),
                channel: channel_label(row["channel"].as_str().unwrap_or("")),
                action: text(&row["action"]),
                agent: text(&row["agent_uid"]),
                organisation: text(&row["agent_siret"]),
                role: row["agent_role"].as_str().and_then(Role::parse).map(views::role_label).unwrap_or("").to_owned(),
                purpose: row["purpose"]
                    .as_str()
                    .and_then(Purpose::parse)
                    .map(views::purpose_label)
                    .unwrap_or("")
                    .to_owned(),
                person: match row["person_id"].as_str() {
                    Some(person) => person.to_owned(),
                    None => found.join(" "),
                },
                sections: row["sections_shown"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(text)
                    .collect::<Vec<_>>()
                    .join(", "),
                withheld: row["sections_withheld"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|item| format!("{} ({})", text(&item["section"]), text(&item["motif"])))
                    .collect::<Vec<_>>()
                    .join(", "),
                outcome: outcome_label(row["outcome"].as_str().unwrap_or("")),
            }
        })
        .collect()
}

struct Choice {
    code: &'static str,
    label: &'static str,
    selected: bool,
}

#[derive(Template)]
#[template(path = "journal.html")]
struct JournalPage {
    layout: Layout,
    person: String,
    agent: String,
    since: String,
    until: String,
    purposes: Vec<Choice>,
    outcomes: Vec<Choice>,
    searched: bool,
    error: Option<String>,
    lines: Vec<JournalLine>,
    total: usize,
    capped: bool,
    max: i64,
    pages: Vec<super::reads::PageLink>,
    export: String,
}

const JOURNAL_PAGE: usize = 50;

pub(super) async fn journal(
    State(console): State<Arc<Console>>,
    session: Session,
    Query(form): Query<JournalForm>,
) -> Response {
    let (caller, layout, request_id) =
        match agent_page(&console, &session, "journal", "Journal des accès", "journal").await {
            Ok(page) => page,
            Err(answer) => return answer,
        };
    let layout = layout.crumbs(&[("Journal des accès", None)]);
    let query = form.query();
    let chosen = |value: &Option<String>, code: &str| value.as_deref() == Some(code);
    let mut page = JournalPage {
        layout,
        person: form.personne.clone().unwrap_or_default(),
        agent: form.agent.clone().unwrap_or_default(),
        since: form.depuis.clone().unwrap_or_default(),
        until: form.jusqu_a.clone().unwrap_or_default(),
        purposes: Purpose::ALL
            .into_iter()
            .map(|p| Choice { code: p.code(), label: views::purpose_label(p), selected: chosen(&form.motif, p.code()) })
            .collect(),
        outcomes: [
            ("shown", "Consulté"),
            ("found", "Personne(s) trouvée(s)"),
            ("none", "Aucun résultat"),
            ("moved_out", "Déménagement signalé"),
            ("not_found", "Introuvable"),
            ("refused", "Refusé"),
            ("invalid", "Demande invalide"),
            ("unauthenticated", "Non authentifié"),
            ("not_habilitated", "Non habilité"),
        ]
        .into_iter()
        .map(|(code, label)| Choice { code, label, selected: chosen(&form.resultat, code) })
        .collect(),
        searched: false,
        error: None,
        lines: Vec::new(),
        total: 0,
        capped: false,
        max: JOURNAL_MAX_ROWS,
        pages: Vec::new(),
        export: form.href("/console/journal/export.csv", None),
    };
    // The first visit shows the form; a search needs at least one criterion.
    let any = [&query.person_id, &query.agent, &query.depuis, &query.jusqu_a, &query.motif, &query.resultat]
        .iter()
        .any(|value| value.is_some());
    if !any {
        return render(&page);
    }
    let answer = match console.api.journal_read(&caller, request_id, &query).await {
        Ok(answer) => answer,
        Err(Failure::BadRequest { parameter, reason }) => {
            page.error = Some(format!("{parameter} : {reason}"));
            return (StatusCode::BAD_REQUEST, render(&page)).into_response();
        }
        Err(failure) => return failure_page(&console, &session, &caller, failure).await,
    };
    let mut all = lines(&answer);
    // The most recent first.
    all.reverse();
    page.searched = true;
    page.total = all.len();
    page.capped = all.len() as i64 >= JOURNAL_MAX_ROWS;
    let page_count = all.len().div_ceil(JOURNAL_PAGE).max(1);
    let number = form.page.unwrap_or(1).clamp(1, page_count);
    page.lines = all.into_iter().skip((number - 1) * JOURNAL_PAGE).take(JOURNAL_PAGE).collect();
    if page_count > 1 {
        page.pages = (1..=page_count)
            .map(|n| super::reads::PageLink {
                number: n,
                href: form.href("/console/journal", Some(n)),
                current: n == number,
            })
            .collect();
    }
    render(&page)
}

/// The journal rows of a search as CSV (UTF-8 with BOM, `;`).
pub(super) async fn export(
    State(console): State<Arc<Console>>,
    session: Session,
    headers: axum::http::HeaderMap,
    Query(form): Query<JournalForm>,
) -> Response {
    if super::cross_site(&headers) {
        return super::cross_site_refused(&console, &session).await;
    }
    let (caller, _, request_id) = match agent_page(&console, &session, "journal", "Journal des accès", "journal").await
    {
        Ok(page) => page,
        Err(answer) => return answer,
    };
    let answer = match console.api.journal_read(&caller, request_id, &form.query()).await {
        Ok(answer) => answer,
        Err(failure) => return failure_page(&console, &session, &caller, failure).await,
    };
    let header = [
        "date",
        "canal",
        "action",
        "agent",
        "siret",
        "role",
        "motif",
        "personne",
        "rubriques_montrees",
        "rubriques_masquees",
        "resultat",
    ]
    .map(str::to_owned)
    .to_vec();
    let records = std::iter::once(header).chain(lines(&answer).into_iter().map(|line| {
        vec![
            line.at,
            line.channel.to_owned(),
            line.action,
            super::spreadsheet_safe(&line.agent),
            line.organisation,
            line.role,
            line.purpose,
            line.person,
            line.sections,
            line.withheld,
            line.outcome,
        ]
    }));
    let filename = format!("journal-{}.csv", chrono::Utc::now().date_naive());
    super::csv_file(&console, &session, &filename, records).await
}
