//! Search, dossier and timeline: each read through the API's service layer, journaled.

use super::*;

/// A purpose the agent may choose.
struct PurposeChoice {
    code: &'static str,
    label: &'static str,
    checked: bool,
}

fn purpose_choices(role: Role, chosen: Option<&str>) -> Vec<PurposeChoice> {
    let mut choices: Vec<PurposeChoice> = Purpose::ALL
        .into_iter()
        .filter(|purpose| {
            passerelle_api::policy::purpose_allowed(role, *purpose)
                // A référent of any structure reads for accompaniment.
                || (*purpose == Purpose::Accompagnement && role != Role::Dpo)
        })
        .map(|purpose| PurposeChoice {
            code: purpose.code(),
            label: views::purpose_label(purpose),
            checked: chosen == Some(purpose.code()),
        })
        .collect();
    if chosen.is_none()
        && let Some(first) = choices.first_mut()
    {
        first.checked = true;
    }
    choices
}

struct SearchResult {
    href: String,
    label: String,
    moved: bool,
}

#[derive(Template)]
#[template(path = "recherche.html")]
struct SearchPage {
    layout: Layout,
    purposes: Vec<PurposeChoice>,
    error: Option<(String, String)>,
    searched: bool,
    results: Vec<SearchResult>,
}

impl SearchPage {
    /// Whether the refusal names this field (its input is then marked in error).
    fn has_error(&self, field: &str) -> bool {
        self.error.as_ref().is_some_and(|(parameter, _)| parameter == field)
    }
}

pub(super) async fn search_page(State(console): State<Arc<Console>>, session: Session) -> Response {
    let (caller, layout, _) =
        match agent_page(&console, &session, "recherche", "Rechercher une personne", "recherche").await {
            Ok(page) => page,
            Err(answer) => return answer,
        };
    if caller.agent.role == Role::Dpo {
        return failure_page(&console, &session, &caller, Failure::Forbidden("role")).await;
    }
    let layout = layout.crumbs(&[("Rechercher une personne", None)]);
    render(&SearchPage {
        layout,
        purposes: purpose_choices(caller.agent.role, None),
        error: None,
        searched: false,
        results: Vec::new(),
    })
}

/// The search form. Empty fields are absent criteria.
#[derive(Deserialize)]
pub(super) struct SearchForm {
    csrf: Option<String>,
    motif: Option<String>,
    nir: Option<String>,
    nom: Option<String>,
    date_naissance: Option<String>,
    matricule_caf: Option<String>,
    organisme: Option<String>,
    id_france_travail: Option<String>,
    id_departement: Option<String>,
}

fn filled(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// What the form's fields are called on the page, for an error message.
fn field_label(parameter: &str) -> &'static str {
    match parameter {
        "nir" => "NIR",
        "nom" => "Nom",
        "date_naissance" => "Date de naissance",
        "matricule_caf" => "Matricule CAF/MSA",
        "organisme" => "Organisme (caisse)",
        "id_france_travail" => "Identifiant France Travail",
        "id_departement" | "departement" => "Identifiant départemental",
        "motif" => "Motif d’accès",
        _ => "Critères",
    }
}

pub(super) async fn search(
    State(console): State<Arc<Console>>,
    session: Session,
    Form(form): Form<SearchForm>,
) -> Response {
    if let Err(refused) = check_csrf(&console, &session, form.csrf.as_deref()).await {
        return refused;
    }
    let (caller, layout, request_id) =
        match agent_page(&console, &session, "recherche", "Rechercher une personne", "recherche").await {
            Ok(page) => page,
            Err(answer) => return answer,
        };
    let layout = layout.crumbs(&[("Rechercher une personne", None)]);
    let motif = filled(form.motif);
    let request = SearchRequest {
        motif: motif.clone(),
        nir: filled(form.nir).map(|nir| nir.replace(' ', "")),
        nom: filled(form.nom),
        date_naissance: filled(form.date_naissance),
        matricule_caf: filled(form.matricule_caf),
        organisme: filled(form.organisme),
        id_france_travail: filled(form.id_france_travail),
        id_departement: filled(form.id_departement),
        departement: None,
    };
    let answer = match console.api.search(&caller, request_id, &request).await {
        Ok(answer) => answer,
        Err(Failure::BadRequest { parameter, reason }) => {
            let message = if parameter == "criteres" {
                "Remplissez un seul critère : le NIR, ou le nom et la date de naissance, ou le matricule et \
                 l’organisme, ou l’identifiant France Travail, ou l’identifiant départemental."
                    .to_owned()
            } else {
                // The reason names the rule, never the value typed.
                format!("{} : {reason}", field_label(parameter))
            };
            let page = SearchPage {
                layout,
                purposes: purpose_choices(caller.agent.role, motif.as_deref()),
                error: Some((parameter.to_owned(), message)),
                searched: false,
                results: Vec::new(),
            };
            return (StatusCode::BAD_REQUEST, render(&page)).into_response();
        }
        Err(failure) => return failure_page(&console, &session, &caller, failure).await,
    };
    let motif = motif.unwrap_or_default();
    let results: Vec<SearchResult> = answer["resultats"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(index, item)| {
            let person_id = item["person_id"].as_str()?;
            Some(SearchResult {
                href: format!("/console/dossiers/{person_id}?motif={motif}"),
                label: format!("Personne {}", index + 1),
                moved: item["demenage"].as_bool().unwrap_or(false),
            })
        })
        .collect();
    if let [only] = results.as_slice() {
        return Redirect::to(&only.href).into_response();
    }
    render(&SearchPage {
        layout,
        purposes: purpose_choices(caller.agent.role, Some(&motif)),
        error: None,
        searched: true,
        results,
    })
}

// ---- dossier and timeline -------------------------------------------------------------------

#[derive(Deserialize)]
pub(super) struct PurposeQuery {
    pub(super) motif: Option<String>,
}

#[derive(Template)]
#[template(path = "motif.html")]
struct PurposePage {
    layout: Layout,
    action: String,
    purposes: Vec<PurposeChoice>,
}

#[derive(Template)]
#[template(path = "dossier.html")]
struct DossierPage {
    layout: Layout,
    purpose: &'static str,
    purpose_code: &'static str,
    dossier: DossierView,
}

/// The page that asks for the purpose of a read before it happens (`suffix`: the page of the
/// dossier, empty, or `/historique`).
fn purpose_page(layout: Layout, role: Role, person_id: &str, suffix: &str) -> Response {
    let id = person_id.parse::<Uuid>().map(|id| id.to_string()).unwrap_or_default();
    render(&PurposePage {
        layout: layout.crumbs(&[("Motif de la consultation", None)]),
        action: format!("/console/dossiers/{id}{suffix}"),
        purposes: purpose_choices(role, None),
    })
}

/// The purpose of a read, or the page that asks for it.
fn chosen_purpose(raw: Option<&str>) -> Option<Purpose> {
    raw.and_then(Purpose::parse)
}

pub(super) async fn dossier(
    State(console): State<Arc<Console>>,
    session: Session,
    headers: axum::http::HeaderMap,
    Path(person_id): Path<String>,
    Query(query): Query<PurposeQuery>,
) -> Response {
    if super::cross_site(&headers) {
        return super::cross_site_refused(&console, &session).await;
    }
    let (caller, layout, request_id) = match agent_page(&console, &session, "dossier", "Dossier", "recherche").await {
        Ok(page) => page,
        Err(answer) => return answer,
    };
    let Some(purpose) = chosen_purpose(query.motif.as_deref()) else {
        return purpose_page(layout, caller.agent.role, &person_id, "");
    };
    let answer = match console.api.dossier(&caller, request_id, &person_id, Some(purpose.code())).await {
        Ok(answer) => answer,
        Err(failure) => return failure_page(&console, &session, &caller, failure).await,
    };
    let view = DossierView::from_answer(&answer, caller.agent.role, purpose);
    let layout = layout.crumbs(&[("Rechercher une personne", Some("/console/recherche".into())), ("Dossier", None)]);
    render(&DossierPage { layout, purpose: views::purpose_label(purpose), purpose_code: purpose.code(), dossier: view })
}

#[derive(Deserialize)]
pub(super) struct TimelineQuery {
    motif: Option<String>,
    source: Option<String>,
    depuis: Option<String>,
    jusqu_a: Option<String>,
    page: Option<usize>,
}

struct TimelineRow {
    date: String,
    received: String,
    source: &'static str,
    event: String,
    note: String,
}

struct SourceChoice {
    code: &'static str,
    label: &'static str,
    selected: bool,
}

pub(super) struct PageLink {
    pub(super) number: usize,
    pub(super) href: String,
    pub(super) current: bool,
}

#[derive(Template)]
#[template(path = "historique.html")]
struct TimelinePage {
    layout: Layout,
    person_id: String,
    purpose_code: &'static str,
    purpose: &'static str,
    sources: Vec<SourceChoice>,
    since: String,
    until: String,
    rows: Vec<TimelineRow>,
    total: usize,
    pages: Vec<PageLink>,
    previous: Option<String>,
    next: Option<String>,
}

const TIMELINE_PAGE: usize = 20;

pub(super) async fn timeline(
    State(console): State<Arc<Console>>,
    session: Session,
    headers: axum::http::HeaderMap,
    Path(person_id): Path<String>,
    Query(query): Query<TimelineQuery>,
) -> Response {
    if super::cross_site(&headers) {
        return super::cross_site_refused(&console, &session).await;
    }
    let (caller, layout, request_id) =
        match agent_page(&console, &session, "historique", "Historique du dossier", "recherche").await {
            Ok(page) => page,
            Err(answer) => return answer,
        };
    let Some(purpose) = chosen_purpose(query.motif.as_deref()) else {
        return purpose_page(layout, caller.agent.role, &person_id, "/historique");
    };
    let answer = match console.api.timeline_whole(&caller, request_id, &person_id, Some(purpose.code())).await {
        Ok(answer) => answer,
        Err(failure) => return failure_page(&console, &session, &caller, failure).await,
    };
    let source = query.source.as_deref().filter(|s| ["allocataire", "demandeur_emploi", "orientation"].contains(s));
    let day = |raw: &Option<String>| raw.as_deref().and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
    let (since, until) = (day(&query.depuis), day(&query.jusqu_a));
    let family_of = |item: &serde_json::Value| match item["section"].as_str() {
        Some("droits_rsa") => "allocataire",
        Some("emploi") => "demandeur_emploi",
        _ => "orientation",
    };
    let mut rows: Vec<&serde_json::Value> = answer["evenements"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|item| source.is_none_or(|wanted| family_of(item) == wanted))
        .filter(|item| {
            let at = item["date"]
                .as_str()
                .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok())
                .map(|d| d.with_timezone(&chrono_tz::Europe::Paris).date_naive());
            match at {
                Some(at) => since.is_none_or(|s| at >= s) && until.is_none_or(|u| at <= u),
                None => since.is_none() && until.is_none(),
            }
        })
        .collect();
    // Most recent first: what an agent looks for.
    rows.reverse();
    let total = rows.len();
    let page_count = total.div_ceil(TIMELINE_PAGE).max(1);
    let page = query.page.unwrap_or(1).clamp(1, page_count);
    let href = |number: usize| {
        let mut url = format!("/console/dossiers/{person_id}/historique?motif={}", purpose.code());
        if let Some(source) = source {
            url.push_str(&format!("&source={source}"));
        }
        if let Some(since) = since {
            url.push_str(&format!("&depuis={since}"));
        }
        if let Some(until) = until {
            url.push_str(&format!("&jusqu_a={until}"));
        }
        url.push_str(&format!("&page={number}"));
        url
    };
    let shown: Vec<TimelineRow> = rows
        .iter()
        .skip((page - 1) * TIMELINE_PAGE)
        .take(TIMELINE_PAGE)
        .map(|item| {
            let mut notes = Vec::new();
            if item["relaye_par"].is_string() {
                notes.push(format!("relayé par {}", item["relaye_par"].as_str().unwrap_or_default()));
            }
            if item["corrige_par"].is_string() {
                notes.push("corrigé depuis".to_owned());
            }
            if item["retire_par"].is_string() {
                notes.push("retiré depuis".to_owned());
            }
            TimelineRow {
                date: item["date"].as_str().map(views::date).unwrap_or_default(),
                received: item["recu_le"].as_str().map(views::date_time).unwrap_or_default(),
                source: if item["source"] == passerelle_domain::event::PERSON_SOURCE {
                    "La personne, depuis son espace"
                } else {
                    views::family_label(family_of(item))
                },
                event: item["evenement"].as_str().map(views::event_label).unwrap_or_default(),
                note: notes.join(", "),
            }
        })
        .collect();
    let pages =
        (1..=page_count).map(|number| PageLink { number, href: href(number), current: number == page }).collect();
    let dossier_href = format!("/console/dossiers/{person_id}?motif={}", purpose.code());
    let layout = layout.crumbs(&[
        ("Rechercher une personne", Some("/console/recherche".into())),
        ("Dossier", Some(dossier_href)),
        ("Historique", None),
    ]);
    render(&TimelinePage {
        layout,
        person_id: person_id.clone(),
        purpose_code: purpose.code(),
        purpose: views::purpose_label(purpose),
        sources: [("allocataire", "CAF / MSA"), ("demandeur_emploi", "France Travail"), ("orientation", "Département")]
            .into_iter()
            .map(|(code, label)| SourceChoice { code, label, selected: source == Some(code) })
            .collect(),
        since: since.map(|d| d.to_string()).unwrap_or_default(),
        until: until.map(|d| d.to_string()).unwrap_or_default(),
        rows: shown,
        total,
        pages,
        previous: (page > 1).then(|| href(page - 1)),
        next: (page < page_count).then(|| href(page + 1)),
    })
}
