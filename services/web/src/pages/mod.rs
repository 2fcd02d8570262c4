//! The console's pages. Each one that shows a person goes through the API's service layer
//! (`Api::search`, `Api::dossier`, `Api::timeline`): the same policy decides, the same journal
//! records, with the console as the channel. Nothing personal travels in a URL or a title: a
//! search is a POST, and pages name persons by the hub's opaque id.

use std::sync::Arc;

use askama::Template;
use axum::{
    Form, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{Html, IntoResponse, Redirect, Response},
    routing::get,
};
use passerelle_api::{
    policy::{Purpose, Role},
    service::{Caller, Failure, SearchRequest, SignedInAgent},
};
use serde::Deserialize;
use tower_sessions::Session;
use uuid::Uuid;

use crate::{
    Console, Theme,
    session::{self, SignedIn},
    views::{self, DossierView},
};

mod info;
mod journal;
mod person;
mod reads;
mod sign_in;
mod territory;

use info::{accessibility, legal_notice, privacy, unknown_page};
use reads::{dossier, search, search_page, timeline};
use sign_in::{logout, logout_return, sign_in_page, sign_in_return, sign_in_start};

pub fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console") }))
        .route("/console", get(home))
        .route("/console/connexion", get(sign_in_page).post(sign_in_start))
        .route("/console/connexion/retour", get(sign_in_return))
        .route("/console/deconnexion", axum::routing::post(logout))
        .route("/console/deconnexion/retour", get(logout_return))
        .route("/console/recherche", get(search_page).post(search))
        .route("/console/dossiers/{person_id}", get(dossier))
        .route("/console/dossiers/{person_id}/historique", get(timeline))
        .route("/console/territoire", get(territory::dashboard))
        .route("/console/territoire/files/{file}", get(territory::queue))
        .route("/console/territoire/files/{file}/export.csv", get(territory::export))
        .route("/console/journal", get(journal::journal))
        .route("/console/journal/export.csv", get(journal::export))
        .merge(person::router())
        .route("/console/accessibilite", get(accessibility))
        .route("/console/mentions-legales", get(legal_notice))
        .route("/console/donnees-personnelles", get(privacy))
        .route("/console/{*unknown}", get(unknown_page))
        .with_state(console)
}

/// Renders a template; a template that fails to render is a bug, answered 500 without detail.
pub fn render(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => Html(html).into_response(),
        Err(error) => {
            tracing::error!(error = %error, "a console template failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "erreur interne").into_response()
        }
    }
}

/// One step of the breadcrumb; the last one is the current page.
pub struct Crumb {
    pub label: String,
    pub href: Option<String>,
}

/// The signed-in agent as the header shows them.
pub struct HeaderAgent {
    pub name: String,
    pub organisation: String,
    pub role: &'static str,
    pub territory_staff: bool,
    pub dpo: bool,
}

/// What every page's frame needs.
pub struct Layout {
    pub theme: Theme,
    pub title: String,
    pub agent: Option<HeaderAgent>,
    pub csrf: String,
    pub breadcrumb: Vec<Crumb>,
    /// The menu entry of this page (`accueil`, `recherche`…).
    pub current: &'static str,
    /// The person signed in to their space (their given name), on its pages.
    pub person: Option<String>,
}

impl Layout {
    fn crumbs(mut self, crumbs: &[(&str, Option<String>)]) -> Self {
        self.breadcrumb = std::iter::once(Crumb { label: "Accueil".into(), href: Some("/console".into()) })
            .chain(crumbs.iter().map(|(label, href)| Crumb { label: (*label).to_owned(), href: href.clone() }))
            .collect();
        self
    }
}

#[derive(Template)]
#[template(path = "erreur.html")]
struct ErrorPage {
    layout: Layout,
    heading: String,
    message: String,
    link: Option<(String, String)>,
}

/// A page that says what went wrong and what to do, in the frame of the agent's pages.
async fn error_page(
    console: &Console,
    session: &Session,
    status: StatusCode,
    heading: &str,
    message: String,
    link: Option<(&str, &str)>,
) -> Response {
    let layout = anonymous_layout(console, session, heading).await;
    let layout = match (signed_in(session).await, &layout) {
        (Some(_), _) => with_agent(console, session, layout).await,
        _ => layout,
    };
    let page = ErrorPage {
        layout,
        heading: heading.to_owned(),
        message,
        link: link.map(|(href, label)| (href.to_owned(), label.to_owned())),
    };
    (status, render(&page)).into_response()
}

/// The page of a failed read: the database unavailable (503, retry) or an internal error.
async fn failed(console: &Console, session: &Session, failure: Failure) -> Response {
    match failure {
        Failure::Unavailable(detail) => unavailable(console, session, &detail).await,
        other => internal_error(console, session, &other).await,
    }
}

/// The database is unreachable or restarting: nothing was read; the agent retries.
async fn unavailable(console: &Console, session: &Session, cause: &str) -> Response {
    tracing::warn!(error = %cause, "console request not served: the database is unavailable");
    let mut page = error_page(
        console,
        session,
        StatusCode::SERVICE_UNAVAILABLE,
        "Service momentanément indisponible",
        "La page n’a pas pu être affichée : la base de données du hub ne répond pas. Rien n’a été \
         consulté ni enregistré. Réessayez dans quelques secondes."
            .into(),
        None,
    )
    .await;
    page.headers_mut().insert(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from(passerelle_api::service::RETRY_UNAVAILABLE_SECONDS),
    );
    page
}

async fn internal_error(console: &Console, session: &Session, cause: &(dyn std::fmt::Display + Sync)) -> Response {
    let request_id = Uuid::now_v7();
    tracing::error!(error = %cause, request_id = %request_id, "console request failed");
    error_page(
        console,
        session,
        StatusCode::INTERNAL_SERVER_ERROR,
        "Une erreur est survenue",
        format!(
            "La page n’a pas pu être affichée. Réessayez dans un instant ; si l’erreur persiste, \
             transmettez cette référence à l’équipe d’exploitation : {request_id}."
        ),
        Some(("/console", "Retour à l’accueil")),
    )
    .await
}

async fn signed_in(session: &Session) -> Option<SignedIn> {
    session::signed_in(session).await.ok().flatten()
}

async fn anonymous_layout(console: &Console, session: &Session, title: &str) -> Layout {
    Layout {
        theme: console.theme,
        title: title.to_owned(),
        agent: None,
        csrf: session::csrf_token(session).await.unwrap_or_default(),
        breadcrumb: Vec::new(),
        current: "",
        person: None,
    }
}

/// Fills the header with the signed-in agent, if any and still habilitated (no journal entry:
/// the frame reads nothing about any person).
async fn with_agent(console: &Console, session: &Session, mut layout: Layout) -> Layout {
    if let Some(signed) = signed_in(session).await
        && let Some(agent) = console.api.habilitations().agent(signed.agent.idp_id.as_deref(), &signed.agent.uid)
        && agent.organisation.siret == signed.agent.siret
    {
        layout.agent = Some(header_agent(&signed, agent.role, &agent.organisation.nom));
    }
    layout
}

fn header_agent(signed: &SignedIn, role: Role, organisation: &str) -> HeaderAgent {
    HeaderAgent {
        name: format!("{} {}", signed.given_name, signed.usual_name).trim().to_owned(),
        organisation: organisation.to_owned(),
        role: views::role_label(role),
        territory_staff: matches!(role, Role::ChargeOrientation | Role::GestionnaireRsa),
        dpo: role == Role::Dpo,
    }
}

/// The signed-in, habilitated agent of a page, or the answer to give instead (the sign-in page,
/// or a 403 that says what is missing). A refused habilitation is journaled.
async fn agent_page(
    console: &Console,
    session: &Session,
    action: &'static str,
    title: &str,
    current: &'static str,
) -> Result<(Caller, Layout, Uuid), Response> {
    let Some(signed) = signed_in(session).await else {
        return Err(Redirect::to("/console/connexion").into_response());
    };
    if chrono::Utc::now() - signed.at > console.session_absolute {
        if let Err(error) = session.flush().await {
            tracing::warn!(error = %error, "an expired console session could not be deleted");
        }
        return Err(Redirect::to("/console/connexion?raison=expiree").into_response());
    }
    let request_id = Uuid::now_v7();
    let caller = match console.api.console_caller(request_id, action, &signed.agent).await {
        Ok(caller) => caller,
        Err(Failure::NotHabilitated(_)) => {
            return Err(error_page(
                console,
                session,
                StatusCode::FORBIDDEN,
                "Habilitation manquante",
                format!(
                    "Votre compte ({}) n’est habilité, pour l’organisation de SIRET {}, dans aucun rôle de ce service. \
                     Demandez votre habilitation au référent habilitations de votre organisation.",
                    signed.agent.uid, signed.agent.siret
                ),
                None,
            )
            .await);
        }
        Err(failure @ Failure::RateLimited(_)) => {
            return Err(failure_page_without_caller(console, session, failure).await);
        }
        Err(failure) => return Err(failed(console, session, failure).await),
    };
    let layout = Layout {
        theme: console.theme,
        title: title.to_owned(),
        agent: Some(header_agent(&signed, caller.agent.role, &caller.agent.organisation.nom)),
        csrf: match session::csrf_token(session).await {
            Ok(token) => token,
            Err(error) => return Err(internal_error(console, session, &error).await),
        },
        breadcrumb: Vec::new(),
        current,
        person: None,
    };
    Ok((caller, layout, request_id))
}

/// A refusal of the service layer as a page: what is missing, or the same "not found" whoever
/// the person is.
async fn failure_page(console: &Console, session: &Session, caller: &Caller, failure: Failure) -> Response {
    let role = caller.agent.role;
    match failure {
        Failure::NotFound => {
            error_page(
                console,
                session,
                StatusCode::NOT_FOUND,
                "Aucun dossier accessible",
                "Aucun dossier que vous pouvez consulter ne correspond à cette demande.".into(),
                Some(("/console/recherche", "Nouvelle recherche")),
            )
            .await
        }
        Failure::Forbidden(motif) => {
            let allowed: Vec<&str> = Purpose::ALL
                .into_iter()
                .filter(|purpose| passerelle_api::policy::purpose_allowed(role, *purpose))
                .map(views::purpose_label)
                .collect();
            let message = match motif {
                "role" => format!(
                    "Votre rôle ({}) ne donne pas accès aux dossiers des personnes : il sert à contrôler le journal des accès.",
                    views::role_label(role).to_lowercase()
                ),
                "motif_acces" => format!(
                    "Votre habilitation ({}) ne couvre pas ce motif d’accès. Motifs ouverts à votre rôle : {}.",
                    views::role_label(role).to_lowercase(),
                    if allowed.is_empty() { "aucun".to_owned() } else { allowed.join(", ").to_lowercase() }
                ),
                _ if motif.starts_with("territory views") => format!(
                    "Les vues du territoire sont réservées aux chargés d’orientation et gestionnaires RSA de l’autorité \
                     du territoire ; votre habilitation ({}) n’en fait pas partie.",
                    views::role_label(role).to_lowercase()
                ),
                _ if motif.starts_with("the journal") => {
                    "Le journal des accès est réservé au rôle de délégué(e) à la protection des données.".to_owned()
                }
                other => format!("Votre habilitation ne permet pas cette consultation ({other})."),
            };
            error_page(
                console,
                session,
                StatusCode::FORBIDDEN,
                "Accès refusé",
                message,
                Some(("/console", "Retour à l’accueil")),
            )
            .await
        }
        Failure::BadRequest { parameter, reason } => {
            error_page(
                console,
                session,
                StatusCode::BAD_REQUEST,
                "Demande incomplète",
                format!("La demande n’a pas pu être traitée ({parameter} : {reason})."),
                Some(("/console/recherche", "Nouvelle recherche")),
            )
            .await
        }
        Failure::Unauthenticated(_) | Failure::NotHabilitated(_) => Redirect::to("/console/connexion").into_response(),
        failure @ Failure::RateLimited(_) => failure_page_without_caller(console, session, failure).await,
        Failure::Unavailable(detail) => unavailable(console, session, &detail).await,
        Failure::Internal(detail) => internal_error(console, session, &detail).await,
    }
}

/// A refusal before the caller is known (over the agent's rate limit).
async fn failure_page_without_caller(console: &Console, session: &Session, failure: Failure) -> Response {
    match failure {
        Failure::RateLimited(exceeded) => {
            let mut page = error_page(
                console,
                session,
                StatusCode::TOO_MANY_REQUESTS,
                "Trop de demandes",
                format!(
                    "Vous avez fait beaucoup de demandes en peu de temps. Patientez {} seconde(s), puis recommencez.",
                    exceeded.retry_after_seconds()
                ),
                None,
            )
            .await;
            if let Ok(value) = axum::http::HeaderValue::from_str(&exceeded.retry_after_seconds().to_string()) {
                page.headers_mut().insert(axum::http::header::RETRY_AFTER, value);
            }
            page
        }
        other => internal_error(console, session, &other).await,
    }
}

/// A CSV cell a spreadsheet will not run as a formula (`=`, `+`, `-`, `@`, tab, carriage return
/// at the start get a leading apostrophe).
pub(crate) fn spreadsheet_safe(value: &str) -> String {
    match value.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{value}"),
        _ => value.to_owned(),
    }
}

/// A CSV file as French spreadsheets expect it (UTF-8 with BOM, `;`, CRLF), offered for download
/// as `filename`; a 500 page if it cannot be written.
async fn csv_file(
    console: &Console,
    session: &Session,
    filename: &str,
    records: impl IntoIterator<Item = Vec<String>>,
) -> Response {
    let mut writer =
        csv::WriterBuilder::new().delimiter(b';').terminator(csv::Terminator::CRLF).from_writer(Vec::new());
    let mut written = Ok(());
    for record in records {
        written = written.and(writer.write_record(&record));
    }
    let bytes = match (written, writer.into_inner()) {
        (Ok(()), Ok(bytes)) => bytes,
        _ => return internal_error(console, session, &"a CSV export could not be written").await,
    };
    let mut content = "\u{feff}".as_bytes().to_vec();
    content.extend(bytes);
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (axum::http::header::CONTENT_DISPOSITION, format!("attachment; filename=\"{filename}\"")),
        ],
        content,
    )
        .into_response()
}

/// Whether a GET that reads personal data was started from another site (a link or a form
/// elsewhere, which the SameSite=Lax cookie follows): such reads and exports are refused, as a
/// POST without the CSRF token is.
pub(crate) fn cross_site(headers: &axum::http::HeaderMap) -> bool {
    headers.get("sec-fetch-site").and_then(|value| value.to_str().ok()) == Some("cross-site")
}

/// The answer to a read started from another site.
async fn cross_site_refused(console: &Console, session: &Session) -> Response {
    error_page(
        console,
        session,
        StatusCode::FORBIDDEN,
        "Lien extérieur refusé",
        "Cette page montre des données personnelles : ouvrez-la depuis Passerelle, pas depuis un lien d’un autre site."
            .into(),
        Some(("/console", "Retour à l’accueil")),
    )
    .await
}

async fn csrf_refused(console: &Console, session: &Session) -> Response {
    error_page(
        console,
        session,
        StatusCode::FORBIDDEN,
        "Formulaire expiré",
        "Ce formulaire n’a pas été émis par cette session (jeton de sécurité absent ou invalide). \
         Rechargez la page et recommencez."
            .into(),
        Some(("/console", "Retour à l’accueil")),
    )
    .await
}

async fn check_csrf(console: &Console, session: &Session, token: Option<&str>) -> Result<(), Response> {
    match session::csrf_valid(session, token).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(csrf_refused(console, session).await),
        Err(error) => Err(internal_error(console, session, &error).await),
    }
}

#[derive(Template)]
#[template(path = "accueil.html")]
struct HomePage {
    layout: Layout,
    organisation: String,
    siret: String,
    role: &'static str,
    territory: Option<String>,
    purposes: Vec<&'static str>,
    reads_dossiers: bool,
}

async fn home(State(console): State<Arc<Console>>, session: Session) -> Response {
    let (caller, layout, _) = match agent_page(&console, &session, "accueil", "Accueil", "accueil").await {
        Ok(page) => page,
        Err(answer) => return answer,
    };
    let role = caller.agent.role;
    let purposes: Vec<&'static str> = Purpose::ALL
        .into_iter()
        .filter(|purpose| passerelle_api::policy::purpose_allowed(role, *purpose))
        .map(views::purpose_label)
        .collect();
    render(&HomePage {
        layout,
        organisation: caller.agent.organisation.nom.clone(),
        siret: caller.agent.organisation.siret.clone(),
        role: views::role_label(role),
        territory: caller.agent.organisation.territory.clone(),
        reads_dossiers: role != Role::Dpo,
        purposes,
    })
}
