//! The person's own space (`/mon-espace`): sign-in with FranceConnect, found from the identité
//! pivot; my dossier in plain words; who read it and why; my data as a file. Every page takes the
//! person from the session, never from a URL or a form: there is no person id to change.

use passerelle_api::service::{Identification, OwnData, Pivot};
use passerelle_domain::event::{Payload, SubjectKey};

use super::*;
use crate::session::PersonSignedIn;

pub(super) fn router() -> Router<Arc<Console>> {
    Router::new()
        .route("/mon-espace", get(own_dossier))
        .route("/mon-espace/connexion", get(sign_in_page).post(sign_in_start))
        .route("/mon-espace/connexion/retour", get(sign_in_return))
        .route("/mon-espace/non-identifie", get(not_identified))
        .route("/mon-espace/deconnexion", axum::routing::post(logout))
        .route("/mon-espace/deconnexion/retour", get(logout_return))
        .route("/mon-espace/consultations", get(reads))
        .route("/mon-espace/mes-choix", get(choices_page).post(record_choice))
        .route("/mon-espace/mes-donnees.json", get(download))
}

fn person_layout(
    console: &Console,
    title: &str,
    csrf: String,
    person: Option<&PersonSignedIn>,
    current: &'static str,
) -> Layout {
    Layout {
        theme: console.theme,
        title: title.to_owned(),
        agent: None,
        csrf,
        breadcrumb: Vec::new(),
        current,
        person: person.map(|p| p.given_name.clone()),
    }
}

/// The signed-in person of a page, or the sign-in page.
async fn person_page(console: &Console, session: &Session) -> Result<PersonSignedIn, Response> {
    let person = session::person(session).await.ok().flatten();
    match person {
        Some(person) if chrono::Utc::now() - person.at <= console.session_absolute => Ok(person),
        Some(_) => {
            drop(session.flush().await);
            Err(Redirect::to("/mon-espace/connexion?raison=expiree").into_response())
        }
        None => Err(Redirect::to("/mon-espace/connexion").into_response()),
    }
}

#[derive(Template)]
#[template(path = "espace_connexion.html")]
struct SignInPage {
    layout: Layout,
    notice: Option<(&'static str, &'static str)>,
}

pub(super) async fn sign_in_page(
    State(console): State<Arc<Console>>,
    session: Session,
    Query(query): Query<super::sign_in::SignInQuery>,
) -> Response {
    if console.person_party.is_none() {
        return super::info::unknown_page(State(console.clone()), session).await;
    }
    if session::person(&session).await.ok().flatten().is_some() {
        return Redirect::to("/mon-espace").into_response();
    }
    let notice = match query.raison.as_deref() {
        Some("expiree") => Some(("info", "Votre session a expiré : connectez-vous à nouveau.")),
        Some("deconnecte") => Some(("success", "Vous êtes déconnecté(e).")),
        _ => None,
    };
    let csrf = session::csrf_token(&session).await.unwrap_or_default();
    render(&SignInPage { layout: person_layout(&console, "Mon espace", csrf, None, ""), notice })
}

pub(super) async fn sign_in_start(
    State(console): State<Arc<Console>>,
    session: Session,
    Form(form): Form<super::sign_in::CsrfForm>,
) -> Response {
    if let Err(refused) = check_csrf(&console, &session, form.csrf.as_deref()).await {
        return refused;
    }
    let Some(party) = &console.person_party else {
        return super::info::unknown_page(State(console.clone()), session).await;
    };
    match party.start().await {
        Ok((url, in_progress)) => match session::start_person_sign_in(&session, &in_progress).await {
            Ok(()) => Redirect::to(url.as_str()).into_response(),
            Err(error) => internal_error(&console, &session, &error).await,
        },
        Err(error) => {
            tracing::warn!(error = %error, "a person's sign-in could not start");
            error_page(
                &console,
                &session,
                StatusCode::SERVICE_UNAVAILABLE,
                "FranceConnect ne répond pas",
                "Le service d’identification n’a pas pu être joint. Réessayez dans quelques minutes.".into(),
                Some(("/mon-espace/connexion", "Retour à la connexion")),
            )
            .await
        }
    }
}

/// The identité pivot of a verified FranceConnect sign-in, or None when a part is missing.
fn pivot(verified: &crate::oidc::Verified<crate::oidc::PersonClaims>) -> Option<Pivot> {
    Some(Pivot {
        given_name: Some(verified.text("given_name")).filter(|name| !name.is_empty())?,
        family_name: Some(verified.text("family_name")).filter(|name| !name.is_empty())?,
        birthdate: chrono::NaiveDate::parse_from_str(&verified.text("birthdate"), "%Y-%m-%d").ok()?,
        gender: verified.text("gender"),
        birthplace: verified.claims.birthplace.clone().filter(|place| !place.is_empty()),
        birthcountry: verified.claims.birthcountry.clone()?,
    })
}

pub(super) async fn sign_in_return(
    State(console): State<Arc<Console>>,
    session: Session,
    Query(query): Query<super::sign_in::CallbackQuery>,
) -> Response {
    let Some(party) = &console.person_party else {
        return super::info::unknown_page(State(console.clone()), session).await;
    };
    let in_progress = session::take_person_sign_in(&session).await.ok().flatten();
    let (Some(in_progress), Some(code), Some(state)) = (in_progress, query.code, query.state) else {
        return error_page(
            &console,
            &session,
            StatusCode::BAD_REQUEST,
            "La connexion n’a pas abouti",
            "Cette connexion n’a pas été commencée ici, ou elle a expiré. Recommencez.".into(),
            Some(("/mon-espace/connexion", "Recommencer la connexion")),
        )
        .await;
    };
    let verified = match party.finish::<crate::oidc::PersonClaims>(&in_progress, &code, &state).await {
        Ok(verified) => verified,
        Err(error) => {
            tracing::warn!(error = %error, "a person's sign-in refused");
            return error_page(
                &console,
                &session,
                StatusCode::BAD_REQUEST,
                "La connexion n’a pas abouti",
                "La réponse de FranceConnect n’a pas pu être vérifiée. Recommencez.".into(),
                Some(("/mon-espace/connexion", "Recommencer la connexion")),
            )
            .await;
        }
    };
    let identification = match pivot(&verified) {
        Some(pivot) => match console.api.identify_person(Uuid::now_v7(), &pivot).await {
            Ok(identification) => identification,
            Err(failure) => return failed(&console, &session, failure).await,
        },
        None => Identification::NotIdentified,
    };
    let Identification::Matched(person_id) = identification else {
        return Redirect::to("/mon-espace/non-identifie").into_response();
    };
    let person = PersonSignedIn {
        person_id,
        given_name: verified.text("given_name"),
        at: chrono::Utc::now(),
        id_token: verified.id_token.clone(),
    };
    match session::sign_in_person(&session, &person).await {
        Ok(()) => Redirect::to("/mon-espace").into_response(),
        Err(error) => internal_error(&console, &session, &error).await,
    }
}

#[derive(Template)]
#[template(path = "espace_non_identifie.html")]
struct NotIdentifiedPage {
    layout: Layout,
}

/// No match, or several: one page, which says what to do and nothing of who exists.
pub(super) async fn not_identified(State(console): State<Arc<Console>>, session: Session) -> Response {
    let csrf = session::csrf_token(&session).await.unwrap_or_default();
    render(&NotIdentifiedPage { layout: person_layout(&console, "Dossier non retrouvé", csrf, None, "") })
}

pub(super) async fn logout(
    State(console): State<Arc<Console>>,
    session: Session,
    Form(form): Form<super::sign_in::CsrfForm>,
) -> Response {
    if let Err(refused) = check_csrf(&console, &session, form.csrf.as_deref()).await {
        return refused;
    }
    let (Some(person), Some(party)) = (session::person(&session).await.ok().flatten(), &console.person_party) else {
        return Redirect::to("/mon-espace/connexion").into_response();
    };
    let state = session::random_token();
    if let Err(error) = session::start_person_logout(&session, &state).await {
        return internal_error(&console, &session, &error).await;
    }
    match party.logout_url(&person.id_token, &state).await {
        Ok(Some(url)) => Redirect::to(url.as_str()).into_response(),
        outcome => {
            if let Err(error) = outcome {
                tracing::warn!(error = %error, "logout at FranceConnect not reached");
            }
            drop(session.flush().await);
            Redirect::to("/mon-espace/connexion?raison=deconnecte").into_response()
        }
    }
}

pub(super) async fn logout_return(
    State(console): State<Arc<Console>>,
    session: Session,
    Query(query): Query<super::sign_in::LogoutQuery>,
) -> Response {
    let matches = session::logout_started_here(&session, query.state.as_deref()).await;
    // Only the return of a logout started here ends the session: a link from elsewhere does not.
    if !matches {
        return Redirect::to("/mon-espace").into_response();
    }
    if let Err(error) = session.flush().await {
        return internal_error(&console, &session, &error).await;
    }
    Redirect::to("/mon-espace/connexion?raison=deconnecte").into_response()
}

/// One fact of the person's dossier, in plain words.
struct FactLine {
    date: String,
    what: String,
    from: String,
}

/// One read of the person's dossier by an agent.
struct ReadLine {
    date: String,
    organisation: String,
    role: &'static str,
    purpose: &'static str,
    sections: String,
}

#[derive(Template)]
#[template(path = "espace_dossier.html")]
struct OwnDossierPage {
    layout: Layout,
    sections: Vec<OwnSection>,
    facts: Vec<FactLine>,
}

/// One part of the person's dossier, in plain words.
struct OwnSection {
    id: &'static str,
    title: &'static str,
    lines: Vec<views::Line>,
}

#[derive(Template)]
#[template(path = "espace_consultations.html")]
struct ReadsPage {
    layout: Layout,
    reads: Vec<ReadLine>,
}

fn line(label: &'static str, value: Option<String>) -> views::Line {
    views::Line { label, value: value.unwrap_or_else(|| "Aucune information".into()) }
}

fn day(at: Option<chrono::DateTime<chrono::Utc>>) -> Option<String> {
    at.map(|at| views::date(&at.to_rfc3339()))
}

fn organisation_name(console: &Console, siret: &str) -> String {
    console
        .api
        .habilitations()
        .organisation(siret)
        .map(|organisation| organisation.nom.clone())
        .unwrap_or_else(|| format!("organisation de SIRET {siret}"))
}

fn source_label(source: &str) -> String {
    match source {
        passerelle_domain::event::PERSON_SOURCE => "vous-même, depuis votre espace".into(),
        s if s.starts_with("caf") => "la CAF".into(),
        s if s.starts_with("msa") => "la MSA".into(),
        "france-travail" => "France Travail".into(),
        s if s.starts_with("cd-") || s.starts_with("metropole") => "le département".into(),
        other => other.to_owned(),
    }
}

/// What a journaled read showed of the dossier, in the person's words.
fn what_was_read(read: &passerelle_api::journal::Row) -> String {
    if read.outcome == "not_found" || read.outcome.starts_with("refused") || read.outcome == "invalid" {
        return "tentative refusée : rien ne lui a été montré".into();
    }
    match read.action.as_str() {
        "recherche" => "recherche : votre dossier figurait dans les résultats".into(),
        "territoire" => "liste de travail du territoire : votre nom y figurait".into(),
        "export" => "export d’une liste de travail : votre nom y figurait".into(),
        "journal" => "contrôle du journal des accès par le délégué à la protection des données".into(),
        _ if read.outcome == "moved_out" => "votre départ du territoire, sans autre information".into(),
        _ => {
            let labels: Vec<&str> = read
                .sections_shown
                .iter()
                .map(|code| match code.as_str() {
                    "identite" => "identité",
                    "droits_rsa" => "droits RSA",
                    "emploi" => "emploi",
                    "parcours" => "parcours",
                    "diagnostic" => "diagnostic",
                    _ => "autre rubrique",
                })
                .collect();
            format!("{} : {}", if read.action == "historique" { "historique" } else { "dossier" }, labels.join(", "))
        }
    }
}

fn read_lines(console: &Console, data: &OwnData) -> Vec<ReadLine> {
    data.reads
        .iter()
        .map(|read| ReadLine {
            date: views::date_time(&read.at.to_rfc3339()),
            organisation: read
                .agent_siret
                .as_deref()
                .map(|siret| organisation_name(console, siret))
                .unwrap_or_default(),
            role: read.agent_role.as_deref().and_then(Role::parse).map(views::role_label).unwrap_or("—"),
            purpose: read.purpose.as_deref().and_then(Purpose::parse).map(views::purpose_label).unwrap_or("—"),
            sections: what_was_read(read),
        })
        .collect()
}

async fn own_data(
    console: &Console,
    session: &Session,
    action: &'static str,
) -> Result<(PersonSignedIn, OwnData), Response> {
    let person = person_page(console, session).await?;
    match console.api.own_data(Uuid::now_v7(), person.person_id, action).await {
        Ok(data) => Ok((person, data)),
        Err(Failure::NotFound) => {
            drop(session.flush().await);
            Err(Redirect::to("/mon-espace/non-identifie").into_response())
        }
        Err(failure) => Err(failed(console, session, failure).await),
    }
}

pub(super) async fn own_dossier(State(console): State<Arc<Console>>, session: Session) -> Response {
    let (person, data) = match own_data(&console, &session, "dossier_personne").await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let dossier = &data.dossier;
    let identity = &data.identity;
    let page = OwnDossierPage {
        layout: person_layout(
            &console,
            "Mon dossier",
            session::csrf_token(&session).await.unwrap_or_default(),
            Some(&person),
            "dossier",
        ),
        sections: vec![
            OwnSection {
                id: "identite",
                title: "Mon identité",
                lines: vec![
                    line("Nom", identity.nom.clone()),
                    line("Prénoms", identity.prenoms.clone()),
                    line("Date de naissance", identity.date_naissance.as_deref().map(views::date)),
                    line("Numéro de sécurité sociale (masqué)", identity.nir_masque.clone()),
                    line("Commune de résidence (code INSEE)", identity.commune.clone()),
                ],
            },
            OwnSection {
                id: "droit",
                title: "Mon droit au RSA (transmis par la CAF ou la MSA)",
                lines: vec![
                    line("Mon droit au RSA", dossier.right_state.as_deref().map(views::right_state_label)),
                    line("Depuis le", day(dossier.right_state_at)),
                    line("Motif", dossier.right_motif.clone()),
                    line(
                        "Soumis(e) aux droits et devoirs",
                        Some(if dossier.sdd { "Oui : je dois être orienté(e) et accompagné(e)" } else { "Non" }.into()),
                    ),
                ],
            },
            OwnSection {
                id: "emploi",
                title: "Mon inscription à France Travail",
                lines: vec![
                    line("Mon inscription à France Travail", dossier.ft_status.as_deref().map(views::ft_label)),
                    line("Depuis le", day(dossier.ft_status_at)),
                    line("Catégorie", dossier.ft_categorie.clone()),
                ],
            },
            OwnSection {
                id: "parcours",
                title: "Mon accompagnement (transmis par le département)",
                lines: vec![
                    line("Mon orientation", dossier.orientation_type.as_deref().map(views::orientation_label)),
                    line("Décidée le", day(dossier.oriented_at)),
                    line(
                        "Structure qui m’accompagne",
                        dossier.structure_siret.as_deref().map(|siret| organisation_name(&console, siret)),
                    ),
                    line(
                        "Mon référent",
                        dossier
                            .referent_siret
                            .as_deref()
                            .map(|siret| format!("un agent de {}", organisation_name(&console, siret))),
                    ),
                    line("Depuis le", day(dossier.referent_since)),
                    line("Mon contrat", dossier.contract_kind.clone()),
                ],
            },
            OwnSection {
                id: "engagements",
                title: "Mon contrat d’engagement : plan d’action, rendez-vous, sanctions",
                lines: views::engagement_lines(&data.engagements),
            },
            OwnSection {
                id: "diagnostic",
                title: "Mon diagnostic (établi avec mon référent)",
                lines: {
                    // The consent line is in "Mes choix" below.
                    let mut lines =
                        views::diagnostic_lines(&serde_json::json!({"diagnostic": data.diagnostic["diagnostic"]}));
                    lines.remove(0);
                    lines
                },
            },
            OwnSection {
                id: "choix",
                title: "Mes choix",
                lines: vec![
                    line(
                        "Opposition au partage de mon parcours",
                        Some(if dossier.opposition { "Oui, enregistrée" } else { "Non" }.into()),
                    ),
                    line(
                        "Consentement au partage de mon diagnostic",
                        Some(if dossier.consent_diagnostic { "Oui, donné" } else { "Non" }.into()),
                    ),
                ],
            },
        ],
        facts: data
            .events
            .iter()
            .rev()
            .map(|event| FactLine {
                date: views::date(&event.occurred_at.to_rfc3339()),
                what: views::event_label(&event.event_type),
                from: source_label(&event.source),
            })
            .collect(),
    };
    render(&page)
}

pub(super) async fn reads(State(console): State<Arc<Console>>, session: Session) -> Response {
    let (person, data) = match own_data(&console, &session, "consultations_personne").await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let layout = person_layout(
        &console,
        "Qui a consulté mon dossier",
        session::csrf_token(&session).await.unwrap_or_default(),
        Some(&person),
        "consultations",
    );
    render(&ReadsPage { layout, reads: read_lines(&console, &data) })
}

/// Everything the hub holds about the person (RGPD articles 15 and 20), as a JSON file with a
/// readable summary; journaled.
pub(super) async fn download(
    State(console): State<Arc<Console>>,
    session: Session,
    headers: axum::http::HeaderMap,
) -> Response {
    if super::cross_site(&headers) {
        return super::cross_site_refused(&console, &session).await;
    }
    let (_, data) = match own_data(&console, &session, "export_personne").await {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    let dossier = &data.dossier;
    let reads = read_lines(&console, &data);
    let summary = format!(
        "Ce fichier contient tout ce que Passerelle conserve à votre sujet : votre identité telle que les organismes l’ont transmise, \
         l’état de votre dossier ({}), votre diagnostic et votre contrat d’engagement (plan d’action, rendez-vous, sanctions) tels que vos accompagnants les ont transmis, les {} faits reçus à votre sujet (avec leur date et l’organisme qui les a envoyés), et les {} \
         consultations de votre dossier par des agents (organisation, rôle, motif, date).",
        dossier.right_state.as_deref().map(views::right_state_label).unwrap_or_else(|| "sans droit RSA connu".into()),
        data.events.len(),
        reads.len()
    );
    let body = serde_json::json!({
        "genere_le": chrono::Utc::now(),
        "resume": summary,
        "identite": data.identity,
        "dossier": {
            "droit_rsa": {"etat": dossier.right_state, "depuis": dossier.right_state_at, "motif": dossier.right_motif,
                          "soumis_droits_devoirs": dossier.sdd, "depuis_droits_devoirs": dossier.sdd_since, "role_foyer": dossier.role},
            "france_travail": {"statut": dossier.ft_status, "depuis": dossier.ft_status_at, "categorie": dossier.ft_categorie,
                               "accompagnement": dossier.ft_accompagnement},
            "parcours": {"orientation": dossier.orientation_status, "type": dossier.orientation_type, "decidee_le": dossier.oriented_at,
                         "structure_siret": dossier.structure_siret, "referent_structure_siret": dossier.referent_siret,
                         "referent_depuis": dossier.referent_since, "contrat": dossier.contract_kind,
                         "contrat_debut": dossier.contract_start, "contrat_fin": dossier.contract_end},
            "diagnostic": data.diagnostic["diagnostic"],
            "engagements": data.engagements,
            "mes_choix": {"opposition": dossier.opposition, "consentement_diagnostic": dossier.consent_diagnostic},
            "territoire": dossier.territory,
        },
        "evenements": data.events.iter().map(|event| serde_json::json!({
            "date": event.occurred_at, "recu_le": event.recorded_at, "source": event.source,
            "famille": event.family, "evenement": event.event_type, "libelle": views::event_label(&event.event_type),
        })).collect::<Vec<_>>(),
        "consultations": reads.iter().map(|read| serde_json::json!({
            "date": read.date, "organisation": read.organisation, "role": read.role, "motif": read.purpose, "rubriques": read.sections,
        })).collect::<Vec<_>>(),
    });
    (
        [
            (axum::http::header::CONTENT_TYPE, "application/json; charset=utf-8".to_owned()),
            (
                axum::http::header::CONTENT_DISPOSITION,
                "attachment; filename=\"mes-donnees-passerelle.json\"".to_owned(),
            ),
        ],
        serde_json::to_string_pretty(&body).unwrap_or_default(),
    )
        .into_response()
}

#[derive(Template)]
#[template(path = "espace_choix.html")]
struct ChoicesPage {
    layout: Layout,
    opposition: bool,
    consent: bool,
    /// Whether choices can be recorded here (the space is connected to the log).
    open: bool,
    notice: Option<(&'static str, &'static str)>,
}

#[derive(Deserialize)]
pub(super) struct ChoicesQuery {
    enregistre: Option<String>,
}

pub(super) async fn choices_page(
    State(console): State<Arc<Console>>,
    session: Session,
    Query(query): Query<ChoicesQuery>,
) -> Response {
    let person = match person_page(&console, &session).await {
        Ok(person) => person,
        Err(answer) => return answer,
    };
    let dossier = match console.api.own_dossier(Uuid::now_v7(), person.person_id, "choix_personne").await {
        Ok(dossier) => dossier,
        Err(Failure::NotFound) => {
            drop(session.flush().await);
            return Redirect::to("/mon-espace/non-identifie").into_response();
        }
        Err(failure) => return failed(&console, &session, failure).await,
    };
    let notice = match query.enregistre.as_deref() {
        Some("applique") => Some((
            "success",
            "Votre choix est enregistré. Il s’applique dès maintenant à toute consultation de votre dossier.",
        )),
        Some("en-cours") => Some((
            "info",
            "Votre choix est enregistré. Il sera pris en compte dans quelques instants : rechargez cette page pour le voir.",
        )),
        _ => None,
    };
    let layout = person_layout(
        &console,
        "Mes choix",
        session::csrf_token(&session).await.unwrap_or_default(),
        Some(&person),
        "choix",
    );
    render(&ChoicesPage {
        layout,
        opposition: dossier.opposition,
        consent: dossier.consent_diagnostic,
        open: console.choices.is_some(),
        notice,
    })
}

#[derive(Deserialize)]
pub(super) struct ChoiceForm {
    csrf: Option<String>,
    /// `opposition` or `consentement`.
    choix: Option<String>,
    /// `oui` or `non`.
    valeur: Option<String>,
}

/// How long a choice's page waits for the projection to fold it in, so that the answer can say
/// it already applies.
const CHOICE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Records the person's choice as a fact on the log (its source is the person), then waits a
/// little for the projection so the next read by any agent follows it. The person is the one
/// of the session: the form names a choice, never a person.
pub(super) async fn record_choice(
    State(console): State<Arc<Console>>,
    session: Session,
    Form(form): Form<ChoiceForm>,
) -> Response {
    if let Err(refused) = check_csrf(&console, &session, form.csrf.as_deref()).await {
        return refused;
    }
    let person = match person_page(&console, &session).await {
        Ok(person) => person,
        Err(answer) => return answer,
    };
    let choice = match (form.choix.as_deref(), form.valeur.as_deref()) {
        (Some("opposition"), Some("oui")) => Payload::OppositionRecorded,
        (Some("opposition"), Some("non")) => Payload::OppositionWithdrawn,
        (Some("consentement"), Some("oui")) => Payload::ConsentGiven,
        (Some("consentement"), Some("non")) => Payload::ConsentWithdrawn,
        _ => {
            return error_page(
                &console,
                &session,
                StatusCode::BAD_REQUEST,
                "Choix non reconnu",
                "Le formulaire envoyé ne correspond à aucun choix de cette page. Revenez à « Mes choix » et utilisez l’un de ses boutons."
                    .into(),
                Some(("/mon-espace/mes-choix", "Retour à mes choix")),
            )
            .await;
        }
    };
    let Some(hub) = &console.choices else {
        return error_page(
            &console,
            &session,
            StatusCode::SERVICE_UNAVAILABLE,
            "Vos choix ne peuvent pas être enregistrés ici",
            "Ce service n’enregistre pas de choix pour le moment. Adressez-vous à votre département.".into(),
            Some(("/mon-espace/mes-choix", "Retour à mes choix")),
        )
        .await;
    };
    let subject = match console.api.own_subject_key(person.person_id).await {
        Ok(Some(subject)) => subject,
        Ok(None) => {
            drop(session.flush().await);
            return Redirect::to("/mon-espace/non-identifie").into_response();
        }
        Err(failure) => return failed(&console, &session, failure).await,
    };
    let event_id = match hub.record_person_choice(SubjectKey(subject), choice).await {
        Ok(event_id) => event_id,
        Err(error) => {
            tracing::warn!(error = %error, "a person's choice was not recorded");
            return error_page(
                &console,
                &session,
                StatusCode::SERVICE_UNAVAILABLE,
                "Votre choix n’a pas pu être enregistré",
                "Rien n’a été modifié. Réessayez dans quelques minutes.".into(),
                Some(("/mon-espace/mes-choix", "Retour à mes choix")),
            )
            .await;
        }
    };
    let started = tokio::time::Instant::now();
    loop {
        match console.api.own_choice_applied(event_id.as_str()).await {
            Ok(true) => return Redirect::to("/mon-espace/mes-choix?enregistre=applique").into_response(),
            Ok(false) if started.elapsed() < CHOICE_WAIT => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Ok(false) => return Redirect::to("/mon-espace/mes-choix?enregistre=en-cours").into_response(),
            Err(failure) => return failed(&console, &session, failure).await,
        }
    }
}
