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
        Err(failure) => return Err(internal_error(console, session, &failure).await),
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
        Failure::Internal(detail) => internal_error(console, session, &detail).await,
    }
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

// ---- sign-in and logout -------------------------------------------------------------------

#[derive(Template)]
#[template(path = "connexion.html")]
struct SignInPage {
    layout: Layout,
    notice: Option<(&'static str, &'static str)>,
}

#[derive(Deserialize)]
struct SignInQuery {
    raison: Option<String>,
}

async fn sign_in_page(
    State(console): State<Arc<Console>>,
    session: Session,
    Query(query): Query<SignInQuery>,
) -> Response {
    if signed_in(&session).await.is_some() {
        return Redirect::to("/console").into_response();
    }
    let notice = match query.raison.as_deref() {
        Some("expiree") => Some(("info", "Votre session a expiré : connectez-vous à nouveau.")),
        Some("deconnecte") => Some(("success", "Vous êtes déconnecté(e).")),
        _ => None,
    };
    let layout = anonymous_layout(&console, &session, "Connexion").await;
    render(&SignInPage { layout, notice })
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

async fn sign_in_start(State(console): State<Arc<Console>>, session: Session, Form(form): Form<CsrfForm>) -> Response {
    if let Err(refused) = check_csrf(&console, &session, form.csrf.as_deref()).await {
        return refused;
    }
    match console.relying_party.start().await {
        Ok((url, in_progress)) => match session::start_sign_in(&session, &in_progress).await {
            Ok(()) => Redirect::to(url.as_str()).into_response(),
            Err(error) => internal_error(&console, &session, &error).await,
        },
        Err(error) => {
            tracing::warn!(error = %error, "sign-in could not start");
            error_page(
                &console,
                &session,
                StatusCode::SERVICE_UNAVAILABLE,
                "ProConnect ne répond pas",
                "Le service d’identification n’a pas pu être joint. Réessayez dans quelques minutes.".into(),
                Some(("/console/connexion", "Retour à la connexion")),
            )
            .await
        }
    }
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

async fn sign_in_return(
    State(console): State<Arc<Console>>,
    session: Session,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let in_progress = match session::take_sign_in(&session).await {
        Ok(in_progress) => in_progress,
        Err(error) => return internal_error(&console, &session, &error).await,
    };
    let failed = |message: String| {
        let console = console.clone();
        let session = session.clone();
        async move {
            error_page(
                &console,
                &session,
                StatusCode::BAD_REQUEST,
                "La connexion n’a pas abouti",
                message,
                Some(("/console/connexion", "Recommencer la connexion")),
            )
            .await
        }
    };
    let (Some(in_progress), Some(code), Some(state)) = (in_progress, query.code, query.state) else {
        if let Some(error) = query.error {
            tracing::info!(error = %error, "the identity provider ended the sign-in");
            return failed("La connexion a été interrompue ou refusée par le service d’identification.".into()).await;
        }
        return failed("Cette connexion n’a pas été commencée ici, ou elle a expiré. Recommencez.".into()).await;
    };
    let verified = match console.relying_party.finish(&in_progress, &code, &state).await {
        Ok(verified) => verified,
        Err(error) => {
            tracing::warn!(error = %error, "sign-in refused");
            return failed("La réponse du service d’identification n’a pas pu être vérifiée. Recommencez.".into())
                .await;
        }
    };
    let signed = SignedIn {
        agent: SignedInAgent {
            issuer: verified.issuer,
            subject: verified.subject,
            uid: verified.claims.uid,
            siret: verified.claims.siret,
            email: verified.email,
            idp_id: verified.claims.idp_id,
        },
        given_name: verified.given_name,
        usual_name: verified.claims.usual_name.unwrap_or_default(),
        at: chrono::Utc::now(),
        id_token: verified.id_token,
    };
    // Habilitated now, or no session at all (the refusal is journaled).
    match console.api.console_caller(Uuid::now_v7(), "connexion", &signed.agent).await {
        Ok(_) => {}
        Err(Failure::NotHabilitated(_)) => {
            return error_page(
                &console,
                &session,
                StatusCode::FORBIDDEN,
                "Habilitation manquante",
                format!(
                    "Votre identité est vérifiée, mais votre compte ({}) n’est habilité, pour l’organisation de SIRET {}, \
                     dans aucun rôle de ce service. Demandez votre habilitation au référent habilitations de votre organisation.",
                    signed.agent.uid, signed.agent.siret
                ),
                None,
            )
            .await;
        }
        Err(failure) => return internal_error(&console, &session, &failure).await,
    }
    match session::sign_in(&session, &signed).await {
        Ok(()) => Redirect::to("/console").into_response(),
        Err(error) => internal_error(&console, &session, &error).await,
    }
}

async fn logout(State(console): State<Arc<Console>>, session: Session, Form(form): Form<CsrfForm>) -> Response {
    if let Err(refused) = check_csrf(&console, &session, form.csrf.as_deref()).await {
        return refused;
    }
    let Some(signed) = signed_in(&session).await else {
        return Redirect::to("/console/connexion").into_response();
    };
    let state = session::random_token();
    if let Err(error) = session::start_logout(&session, &state).await {
        return internal_error(&console, &session, &error).await;
    }
    match console.relying_party.logout_url(&signed.id_token, &state).await {
        Ok(Some(url)) => Redirect::to(url.as_str()).into_response(),
        Ok(None) => {
            drop(session.flush().await);
            Redirect::to("/console/connexion?raison=deconnecte").into_response()
        }
        Err(error) => {
            // Signed out here already; the provider's session ends on its own (12 h at most).
            tracing::warn!(error = %error, "logout at the identity provider not reached");
            drop(session.flush().await);
            Redirect::to("/console/connexion?raison=deconnecte").into_response()
        }
    }
}

#[derive(Deserialize)]
struct LogoutQuery {
    state: Option<String>,
}

async fn logout_return(
    State(console): State<Arc<Console>>,
    session: Session,
    Query(query): Query<LogoutQuery>,
) -> Response {
    let expected = session::take_logout(&session).await.ok().flatten();
    let matches = match (&expected, &query.state) {
        (Some(expected), Some(state)) => session::constant_time_eq(expected.as_bytes(), state.as_bytes()),
        _ => false,
    };
    if let Err(error) = session.flush().await {
        return internal_error(&console, &session, &error).await;
    }
    if !matches {
        tracing::info!("a logout return without the state of a logout started here");
    }
    Redirect::to("/console/connexion?raison=deconnecte").into_response()
}

// ---- home -----------------------------------------------------------------------------------

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

// ---- search ---------------------------------------------------------------------------------

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

async fn search_page(State(console): State<Arc<Console>>, session: Session) -> Response {
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
struct SearchForm {
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

async fn search(State(console): State<Arc<Console>>, session: Session, Form(form): Form<SearchForm>) -> Response {
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
struct PurposeQuery {
    motif: Option<String>,
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

/// The purpose of a read, or the page that asks for it.
fn chosen_purpose(raw: Option<&str>) -> Option<Purpose> {
    raw.and_then(Purpose::parse)
}

async fn dossier(
    State(console): State<Arc<Console>>,
    session: Session,
    Path(person_id): Path<String>,
    Query(query): Query<PurposeQuery>,
) -> Response {
    let (caller, layout, request_id) = match agent_page(&console, &session, "dossier", "Dossier", "recherche").await {
        Ok(page) => page,
        Err(answer) => return answer,
    };
    let Some(purpose) = chosen_purpose(query.motif.as_deref()) else {
        let layout = layout.crumbs(&[("Motif de la consultation", None)]);
        return render(&PurposePage {
            layout,
            action: format!(
                "/console/dossiers/{}",
                person_id.parse::<Uuid>().map(|id| id.to_string()).unwrap_or_default()
            ),
            purposes: purpose_choices(caller.agent.role, None),
        });
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
struct TimelineQuery {
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

struct PageLink {
    number: usize,
    href: String,
    current: bool,
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

async fn timeline(
    State(console): State<Arc<Console>>,
    session: Session,
    Path(person_id): Path<String>,
    Query(query): Query<TimelineQuery>,
) -> Response {
    let (caller, layout, request_id) =
        match agent_page(&console, &session, "historique", "Historique du dossier", "recherche").await {
            Ok(page) => page,
            Err(answer) => return answer,
        };
    let Some(purpose) = chosen_purpose(query.motif.as_deref()) else {
        let layout = layout.crumbs(&[("Motif de la consultation", None)]);
        return render(&PurposePage {
            layout,
            action: format!(
                "/console/dossiers/{}/historique",
                person_id.parse::<Uuid>().map(|id| id.to_string()).unwrap_or_default()
            ),
            purposes: purpose_choices(caller.agent.role, None),
        });
    };
    let answer = match console.api.timeline(&caller, request_id, &person_id, Some(purpose.code())).await {
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
                source: views::family_label(family_of(item)),
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

// ---- static pages ---------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "statique.html")]
struct StaticPage {
    layout: Layout,
    which: &'static str,
}

async fn static_page(console: &Console, session: &Session, title: &str, which: &'static str) -> Response {
    let layout = anonymous_layout(console, session, title).await;
    let layout = with_agent(console, session, layout).await.crumbs(&[(title, None)]);
    render(&StaticPage { layout, which })
}

async fn accessibility(State(console): State<Arc<Console>>, session: Session) -> Response {
    static_page(&console, &session, "Accessibilité", "accessibilite").await
}

async fn legal_notice(State(console): State<Arc<Console>>, session: Session) -> Response {
    static_page(&console, &session, "Mentions légales", "mentions").await
}

async fn privacy(State(console): State<Arc<Console>>, session: Session) -> Response {
    static_page(&console, &session, "Données personnelles", "donnees").await
}

async fn unknown_page(State(console): State<Arc<Console>>, session: Session) -> Response {
    error_page(
        &console,
        &session,
        StatusCode::NOT_FOUND,
        "Page introuvable",
        "Cette page n’existe pas. Vérifiez l’adresse, ou repartez de l’accueil.".into(),
        Some(("/console", "Retour à l’accueil")),
    )
    .await
}
