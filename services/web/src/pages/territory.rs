//! The territory's dashboard (indicators drawn as server-side SVG charts, each with a table as
//! its text alternative) and its work queues (filters in the URL, never personal data; pages;
//! a CSV export of exactly the rows the filters keep, journaled as one entry naming them).

use chrono::NaiveDate;
use passerelle_api::service::{EXPORT_MAX_ROWS, QueueRequest};
use passerelle_readmodel::territory::{Queue, QueueFilter};

use super::*;

fn queue_title(queue: Queue) -> &'static str {
    match queue {
        Queue::SddNotOriented => "Soumis aux droits et devoirs, non orientés depuis plus de 30 jours",
        Queue::OrientedWithoutReferent => "Orientés sans référent",
        Queue::RadiationWithOpenRight => "Radiés de France Travail avec un droit RSA ouvert",
        Queue::RecentArrivals => "Arrivés sur le territoire depuis moins de 90 jours",
        Queue::OrientedWithoutPlan => "Orientés sans plan d’action depuis plus de 2 mois",
        Queue::WithoutDiagnostic => "Orientés sans diagnostic",
        Queue::MissedRendezVous => "Rendez-vous manqués non suivis",
    }
}

fn queue_since(queue: Queue) -> &'static str {
    match queue {
        Queue::SddNotOriented => "Soumis depuis le",
        Queue::OrientedWithoutReferent => "Orienté le",
        Queue::RadiationWithOpenRight => "Radié le",
        Queue::RecentArrivals => "Arrivé le",
        Queue::OrientedWithoutPlan | Queue::WithoutDiagnostic => "Orienté le",
        Queue::MissedRendezVous => "Rendez-vous manqué le",
    }
}

/// A horizontal bar of a chart, in the SVG's units.
pub(super) struct Bar {
    label: String,
    value: String,
    y: u32,
    width: u32,
    secondary: bool,
}

/// A bar chart drawn on the server: SVG markup, no script.
pub(super) struct Chart {
    id: &'static str,
    title: &'static str,
    height: u32,
    bars: Vec<Bar>,
    /// The same figures as a table: (label, value) rows under the headers.
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

const BAR_MAX: f64 = 360.0;

fn chart(
    id: &'static str,
    title: &'static str,
    data: &[(String, f64, bool)],
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
) -> Chart {
    let max = data.iter().map(|(_, value, _)| *value).fold(0.0, f64::max);
    let bars = data
        .iter()
        .enumerate()
        .map(|(index, (label, value, secondary))| Bar {
            label: label.clone(),
            value: if value.fract() == 0.0 { format!("{value:.0}") } else { format!("{value:.1}") },
            y: 8 + index as u32 * 30,
            width: if max > 0.0 { ((value / max) * BAR_MAX).round().max(1.0) as u32 } else { 1 },
            secondary: *secondary,
        })
        .collect::<Vec<_>>();
    Chart { id, title, height: 16 + bars.len() as u32 * 30, bars, headers, rows }
}

struct QueueCounter {
    title: &'static str,
    count: i64,
    href: String,
}

#[derive(Template)]
#[template(path = "territoire.html")]
struct DashboardPage {
    layout: Layout,
    territory: String,
    counters: Vec<QueueCounter>,
    persons_sdd: i64,
    median: String,
    p90: String,
    charts: Vec<Chart>,
}

fn days(value: Option<f64>) -> String {
    value.map(|days| format!("{days:.0} jours")).unwrap_or_else(|| "—".into())
}

pub(super) async fn dashboard(
    State(console): State<Arc<Console>>,
    session: Session,
    Query(query): Query<super::reads::PurposeQuery>,
) -> Response {
    let (caller, layout, request_id) =
        match agent_page(&console, &session, "territoire", "Tableau de bord du territoire", "territoire").await {
            Ok(page) => page,
            Err(answer) => return answer,
        };
    let territory = caller.agent.organisation.territory.clone().unwrap_or_default();
    let purpose = query.motif.clone().unwrap_or_else(|| Purpose::Orientation.code().to_owned());
    let dashboard = match console.api.dashboard(&caller, request_id, &territory, Some(&purpose)).await {
        Ok(dashboard) => dashboard,
        Err(failure) => return failure_page(&console, &session, &caller, failure).await,
    };
    let indicators = &dashboard.indicators;
    let counters = dashboard
        .queue_sizes
        .iter()
        .map(|(queue, count)| QueueCounter {
            title: queue_title(*queue),
            count: *count,
            href: format!("/console/territoire/files/{}?motif={purpose}", queue.name()),
        })
        .collect();
    let by_state: Vec<(String, f64, bool)> = indicators
        .households_by_right_state
        .iter()
        .map(|(state, count)| (views::right_state_label(state), *count as f64, false))
        .collect();
    let sdd = vec![
        ("Orientés".to_owned(), indicators.sdd_oriented as f64, false),
        ("Non orientés".to_owned(), indicators.sdd_not_oriented as f64, false),
        ("Inscrits à France Travail".to_owned(), indicators.sdd_registered_france_travail as f64, false),
        ("Sans référent".to_owned(), indicators.sdd_without_referent as f64, false),
    ];
    let by_type: Vec<(String, f64, bool)> = indicators
        .orientations_by_type
        .iter()
        .map(|(kind, count)| (views::orientation_label(kind), *count as f64, false))
        .collect();
    let mut delays = Vec::new();
    for (month, _, median, p90) in &dashboard.delay_by_month {
        delays.push((format!("{month} médiane"), *median, false));
        delays.push((format!("{month} 90e centile"), *p90, true));
    }
    let pairs = |data: &[(String, f64, bool)]| {
        data.iter().map(|(label, value, _)| vec![label.clone(), format!("{value:.0}")]).collect::<Vec<_>>()
    };
    let charts = vec![
        chart(
            "foyers-etat",
            "Foyers par état du droit RSA",
            &by_state,
            vec!["État du droit", "Foyers"],
            pairs(&by_state),
        ),
        chart("sdd", "Personnes soumises aux droits et devoirs", &sdd, vec!["Situation", "Personnes"], pairs(&sdd)),
        chart(
            "types",
            "Orientations décidées par type",
            &by_type,
            vec!["Type d’orientation", "Personnes"],
            pairs(&by_type),
        ),
        chart(
            "delais",
            "Délai d’orientation par mois de décision (jours)",
            &delays,
            vec!["Mois", "Décisions", "Médiane (jours)", "90e centile (jours)"],
            dashboard
                .delay_by_month
                .iter()
                .map(|(month, count, median, p90)| {
                    vec![month.clone(), count.to_string(), format!("{median:.0}"), format!("{p90:.0}")]
                })
                .collect(),
        ),
    ];
    let parcours = &indicators.parcours;
    let engagement = vec![
        ("Orientés depuis plus de 2 mois".to_owned(), parcours.oriented_two_months_ago as f64, false),
        ("dont plan signé sous 2 mois".to_owned(), parcours.plan_within_two_months as f64, false),
        ("Rendez-vous honorés".to_owned(), parcours.rendez_vous_honoured as f64, false),
        ("Rendez-vous manqués".to_owned(), parcours.rendez_vous_missed as f64, false),
        ("Suspensions-remobilisations en cours".to_owned(), parcours.sanctions_in_force as f64, false),
    ];
    let mut charts = charts;
    charts.push(chart(
        "parcours",
        "Parcours : plans d’action, rendez-vous et sanctions",
        &engagement,
        vec!["Situation", "Nombre"],
        pairs(&engagement),
    ));
    let layout = layout.crumbs(&[("Tableau de bord du territoire", None)]);
    render(&DashboardPage {
        layout,
        territory,
        counters,
        persons_sdd: indicators.persons_sdd,
        median: days(indicators.orientation_delay_median_days),
        p90: days(indicators.orientation_delay_p90_days),
        charts,
    })
}

/// The queue's filters, as the URL carries them (codes and dates only).
#[derive(Debug, Default, Deserialize)]
pub(super) struct QueueQuery {
    motif: Option<String>,
    commune: Option<String>,
    sdd: Option<String>,
    avant: Option<String>,
    tri: Option<String>,
    page: Option<String>,
}

/// The filters checked, or what is wrong with them (in French, naming the field).
fn filters(query: &QueueQuery) -> Result<(QueueFilter, i64), String> {
    let commune = query.commune.as_deref().map(str::trim).filter(|c| !c.is_empty()).map(str::to_uppercase);
    if let Some(code) = &commune
        && passerelle_domain::CommuneCode::parse(code).is_err()
    {
        return Err(format!(
            "Commune : « {code} » n'est pas un code INSEE de commune (5 caractères, par exemple 52121)"
        ));
    }
    let sdd = match query.sdd.as_deref().unwrap_or("") {
        "" => None,
        "oui" => Some(true),
        "non" => Some(false),
        _ => return Err("Droits et devoirs : oui, non, ou vide".into()),
    };
    let since_until = match query.avant.as_deref().map(str::trim).filter(|d| !d.is_empty()) {
        None => None,
        Some(day) => Some(
            NaiveDate::parse_from_str(day, "%Y-%m-%d")
                .map_err(|_| "En attente depuis avant le : une date".to_owned())?
                .and_hms_opt(23, 59, 59)
                .unwrap_or_default()
                .and_utc(),
        ),
    };
    let newest_first = match query.tri.as_deref().unwrap_or("anciens") {
        "anciens" | "" => false,
        "recents" => true,
        _ => return Err("Tri : anciens ou recents".into()),
    };
    let page = match query.page.as_deref() {
        None | Some("") => 1,
        Some(raw) => raw.parse::<i64>().ok().filter(|p| (1..=100_000).contains(p)).ok_or("Page : un nombre entier")?,
    };
    Ok((QueueFilter { commune, sdd, since_until, newest_first }, page))
}

/// The URL of the queue with these filters (and a page), for links and the export.
fn queue_href(path: &str, purpose: &str, query: &QueueQuery, page: Option<i64>) -> String {
    let mut url = url::form_urlencoded::Serializer::new(String::new());
    url.append_pair("motif", purpose);
    for (key, value) in [("commune", &query.commune), ("sdd", &query.sdd), ("avant", &query.avant), ("tri", &query.tri)]
    {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            url.append_pair(key, value);
        }
    }
    if let Some(page) = page {
        url.append_pair("page", &page.to_string());
    }
    format!("{path}?{}", url.finish())
}

struct QueueLine {
    href: String,
    name: String,
    commune: String,
    since: String,
}

#[derive(Template)]
#[template(path = "file.html")]
struct QueuePage {
    layout: Layout,
    title: &'static str,
    since_header: &'static str,
    purpose: String,
    commune: String,
    sdd: String,
    before: String,
    newest_first: bool,
    error: Option<String>,
    lines: Vec<QueueLine>,
    total: i64,
    pages: Vec<super::reads::PageLink>,
    previous: Option<String>,
    next: Option<String>,
    export: String,
    export_max: i64,
}

const QUEUE_PAGE: i64 = 20;

pub(super) async fn queue(
    State(console): State<Arc<Console>>,
    session: Session,
    headers: axum::http::HeaderMap,
    Path(file): Path<String>,
    Query(query): Query<QueueQuery>,
) -> Response {
    if super::cross_site(&headers) {
        return super::cross_site_refused(&console, &session).await;
    }
    let (caller, layout, request_id) =
        match agent_page(&console, &session, "territoire", "File de travail", "territoire").await {
            Ok(page) => page,
            Err(answer) => return answer,
        };
    let Some(queue) = Queue::from_name(&file) else {
        return super::info::unknown_page(State(console.clone()), session).await;
    };
    let purpose = query.motif.clone().unwrap_or_else(|| Purpose::Orientation.code().to_owned());
    let path = format!("/console/territoire/files/{}", queue.name());
    let layout = layout.crumbs(&[
        ("Tableau de bord du territoire", Some(format!("/console/territoire?motif={purpose}"))),
        (queue_title(queue), None),
    ]);
    let mut page = QueuePage {
        layout,
        title: queue_title(queue),
        since_header: queue_since(queue),
        purpose: purpose.clone(),
        commune: query.commune.clone().unwrap_or_default(),
        sdd: query.sdd.clone().unwrap_or_default(),
        before: query.avant.clone().unwrap_or_default(),
        newest_first: query.tri.as_deref() == Some("recents"),
        error: None,
        lines: Vec::new(),
        total: 0,
        pages: Vec::new(),
        previous: None,
        next: None,
        export: queue_href(&format!("{path}/export.csv"), &purpose, &query, None),
        export_max: EXPORT_MAX_ROWS,
    };
    let (filter, number) = match filters(&query) {
        Ok(parsed) => parsed,
        Err(message) => {
            page.error = Some(message);
            return (StatusCode::BAD_REQUEST, render(&page)).into_response();
        }
    };
    let territory = caller.agent.organisation.territory.clone().unwrap_or_default();
    let request =
        QueueRequest { code: &territory, queue, purpose: Some(&purpose), filter, page: number, size: QUEUE_PAGE };
    let rows = match console.api.queue_rows(&caller, request_id, &request, false).await {
        Ok(rows) => rows,
        Err(failure) => return failure_page(&console, &session, &caller, failure).await,
    };
    let page_count = (rows.total + QUEUE_PAGE - 1) / QUEUE_PAGE;
    page.total = rows.total;
    page.lines = rows
        .rows
        .iter()
        .map(|row| QueueLine {
            href: format!("/console/dossiers/{}?motif={purpose}", row.person_id),
            name: format!(
                "{} {}",
                row.nom.as_deref().unwrap_or("(nom illisible)"),
                row.prenoms.as_deref().unwrap_or("")
            ),
            commune: row.commune.as_deref().map(views::commune_label).unwrap_or_else(|| "—".into()),
            since: row.since.map(|at| views::date(&at.to_rfc3339())).unwrap_or_else(|| "—".into()),
        })
        .collect();
    page.pages = (1..=page_count.max(1))
        .map(|n| super::reads::PageLink {
            number: n as usize,
            href: queue_href(&path, &purpose, &query, Some(n)),
            current: n == number,
        })
        .collect();
    if page_count <= 1 {
        page.pages.clear();
    }
    page.previous = (number > 1).then(|| queue_href(&path, &purpose, &query, Some(number - 1)));
    page.next = (number < page_count).then(|| queue_href(&path, &purpose, &query, Some(number + 1)));
    render(&page)
}

/// The CSV of exactly the rows the filters keep (UTF-8 with BOM, `;`, as French spreadsheets
/// expect), journaled as one export naming the persons in it.
pub(super) async fn export(
    State(console): State<Arc<Console>>,
    session: Session,
    headers: axum::http::HeaderMap,
    Path(file): Path<String>,
    Query(query): Query<QueueQuery>,
) -> Response {
    if super::cross_site(&headers) {
        return super::cross_site_refused(&console, &session).await;
    }
    let (caller, _, request_id) = match agent_page(&console, &session, "export", "Export", "territoire").await {
        Ok(page) => page,
        Err(answer) => return answer,
    };
    let Some(queue) = Queue::from_name(&file) else {
        return super::info::unknown_page(State(console.clone()), session).await;
    };
    let (filter, _) = match filters(&query) {
        Ok(parsed) => parsed,
        Err(message) => {
            return failure_page(
                &console,
                &session,
                &caller,
                Failure::BadRequest { parameter: "filtres", reason: message },
            )
            .await;
        }
    };
    let purpose = query.motif.clone().unwrap_or_else(|| Purpose::Orientation.code().to_owned());
    let territory = caller.agent.organisation.territory.clone().unwrap_or_default();
    let request =
        QueueRequest { code: &territory, queue, purpose: Some(&purpose), filter, page: 1, size: EXPORT_MAX_ROWS };
    let rows = match console.api.queue_rows(&caller, request_id, &request, true).await {
        Ok(rows) => rows,
        Err(failure) => return failure_page(&console, &session, &caller, failure).await,
    };
    let filename = format!("file-{}-{territory}-{}.csv", queue.name(), chrono::Utc::now().date_naive());
    let header = ["reference_dossier", "nom", "prenoms", "commune_insee", "en_file_depuis"].map(str::to_owned).to_vec();
    let records = std::iter::once(header).chain(rows.rows.iter().map(|row| {
        vec![
            row.person_id.to_string(),
            super::spreadsheet_safe(row.nom.as_deref().unwrap_or_default()),
            super::spreadsheet_safe(row.prenoms.as_deref().unwrap_or_default()),
            super::spreadsheet_safe(row.commune.as_deref().unwrap_or_default()),
            row.since.map(|at| at.date_naive().to_string()).unwrap_or_default(),
        ]
    }));
    super::csv_file(&console, &session, &filename, records).await
}
