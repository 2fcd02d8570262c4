//! Sign-in with ProConnect and logout, ending the session at the provider too.

use super::*;

#[derive(Template)]
#[template(path = "connexion.html")]
struct SignInPage {
    layout: Layout,
    notice: Option<(&'static str, &'static str)>,
}

#[derive(Deserialize)]
pub(super) struct SignInQuery {
    pub(super) raison: Option<String>,
}

pub(super) async fn sign_in_page(
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
pub(super) struct CsrfForm {
    pub(super) csrf: Option<String>,
}

pub(super) async fn sign_in_start(
    State(console): State<Arc<Console>>,
    session: Session,
    Form(form): Form<CsrfForm>,
) -> Response {
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
pub(super) struct CallbackQuery {
    pub(super) code: Option<String>,
    pub(super) state: Option<String>,
    error: Option<String>,
}

pub(super) async fn sign_in_return(
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
    let verified = match console.relying_party.finish::<crate::oidc::AgentClaims>(&in_progress, &code, &state).await {
        Ok(verified) => verified,
        Err(error) => {
            tracing::warn!(error = %error, "sign-in refused");
            return failed("La réponse du service d’identification n’a pas pu être vérifiée. Recommencez.".into())
                .await;
        }
    };
    let (email, given_name) = (verified.text("email"), verified.text("given_name"));
    let signed = SignedIn {
        agent: SignedInAgent {
            issuer: verified.issuer,
            subject: verified.subject,
            uid: verified.claims.uid,
            siret: verified.claims.siret,
            email,
            idp_id: verified.claims.idp_id,
        },
        given_name,
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
        Err(failure) => return super::failed(&console, &session, failure).await,
    }
    match session::sign_in(&session, &signed).await {
        Ok(()) => Redirect::to("/console").into_response(),
        Err(error) => internal_error(&console, &session, &error).await,
    }
}

pub(super) async fn logout(
    State(console): State<Arc<Console>>,
    session: Session,
    Form(form): Form<CsrfForm>,
) -> Response {
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
pub(super) struct LogoutQuery {
    pub(super) state: Option<String>,
}

pub(super) async fn logout_return(
    State(console): State<Arc<Console>>,
    session: Session,
    Query(query): Query<LogoutQuery>,
) -> Response {
    let matches = session::logout_started_here(&session, query.state.as_deref()).await;
    // Only the return of a logout started here ends the session: a link from elsewhere does not.
    if !matches {
        tracing::info!("a logout return without the state of a logout started here");
        return Redirect::to("/console").into_response();
    }
    if let Err(error) = session.flush().await {
        return internal_error(&console, &session, &error).await;
    }
    Redirect::to("/console/connexion?raison=deconnecte").into_response()
}
