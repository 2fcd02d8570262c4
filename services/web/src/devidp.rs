//! The development identity provider: served by the hub only when it runs with the development
//! signing key, under `/dev-oidc`, with ProConnect's endpoints and claims. It lists the agents of
//! the habilitations file; choosing one completes an ordinary authorization code flow, so the
//! console signs in by the same code as in production (discovery, code, token, signed id_token,
//! nonce, PKCE, logout with `id_token_hint`). Never configure it in production: anyone reaching
//! it signs in as any agent.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use askama::Template;
use axum::{
    Form, Json, Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::get,
};
use base64::{Engine as _, engine::general_purpose::STANDARD, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::JwkSet};
use passerelle_api::habilitations::Habilitations;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::{pages::render, session::random_token, theme::Theme};

pub const PATH: &str = "/dev-oidc";

/// The one client the development provider knows: the console of this hub.
#[derive(Clone)]
pub struct RegisteredClient {
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
    pub post_logout_redirect_uri: String,
}

pub struct DevProvider {
    issuer: String,
    signing_key: EncodingKey,
    jwks: JwkSet,
    client: RegisteredClient,
    habilitations: Habilitations,
    theme: Theme,
    grants: Mutex<HashMap<String, Grant>>,
}

/// A code given out, waiting for the token request (30 s, once).
struct Grant {
    uid: String,
    idp_id: Option<String>,
    nonce: String,
    code_challenge: Option<String>,
    issued: Instant,
}

const CODE_LIFETIME: Duration = Duration::from_secs(30);

impl DevProvider {
    pub fn new(
        issuer: String,
        pkcs8_der: &[u8],
        jwks: JwkSet,
        client: RegisteredClient,
        habilitations: Habilitations,
        theme: Theme,
    ) -> Self {
        Self {
            issuer,
            signing_key: EncodingKey::from_ec_der(pkcs8_der),
            jwks,
            client,
            habilitations,
            theme,
            grants: Mutex::default(),
        }
    }

    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route(&format!("{PATH}/.well-known/openid-configuration"), get(discovery))
            .route(&format!("{PATH}/authorize"), get(authorize_page).post(authorize))
            .route(&format!("{PATH}/token"), axum::routing::post(token))
            .route(&format!("{PATH}/jwks"), get(jwks))
            .route(&format!("{PATH}/session/end"), get(end_session))
            .with_state(self)
    }
}

async fn discovery(State(provider): State<Arc<DevProvider>>) -> Response {
    let issuer = &provider.issuer;
    Json(serde_json::json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "end_session_endpoint": format!("{issuer}/session/end"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["openid", "given_name", "usual_name", "email", "uid", "siret", "idp_id"],
        "claims_supported": ["sub", "given_name", "usual_name", "email", "uid", "siret", "idp_id"],
    }))
    .into_response()
}

async fn jwks(State(provider): State<Arc<DevProvider>>) -> Response {
    Json(provider.jwks.clone()).into_response()
}

/// The parameters of an authorization request.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AuthorizeParams {
    #[serde(default)]
    response_type: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    redirect_uri: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    nonce: String,
    #[serde(default)]
    code_challenge: Option<String>,
    #[serde(default)]
    code_challenge_method: Option<String>,
}

impl AuthorizeParams {
    /// What ProConnect checks before showing anything.
    fn check(&self, client: &RegisteredClient) -> Result<(), String> {
        if self.client_id != client.client_id {
            return Err("client_id inconnu".into());
        }
        if self.redirect_uri != client.redirect_uri {
            return Err("redirect_uri différente de celle enregistrée pour ce client".into());
        }
        if self.response_type != "code" {
            return Err("response_type doit valoir code".into());
        }
        if !self.scope.split(' ').any(|scope| scope == "openid") {
            return Err("le scope openid est requis".into());
        }
        if self.state.len() < 32 || self.nonce.len() < 32 {
            return Err("state et nonce doivent compter au moins 32 caractères".into());
        }
        if self.code_challenge.is_some() && self.code_challenge_method.as_deref() != Some("S256") {
            return Err("code_challenge_method doit valoir S256".into());
        }
        Ok(())
    }
}

/// One agent on the chooser page.
struct Choice {
    value: String,
    label: String,
    detail: String,
}

#[derive(Template)]
#[template(path = "devidp_authorize.html")]
struct AuthorizePage {
    theme: Theme,
    params: AuthorizeParams,
    choices: Vec<Choice>,
}

#[derive(Template)]
#[template(path = "devidp_error.html")]
struct ProviderError {
    theme: Theme,
    message: String,
}

fn provider_error(theme: Theme, status: StatusCode, message: String) -> Response {
    (status, render(&ProviderError { theme, message })).into_response()
}

async fn authorize_page(State(provider): State<Arc<DevProvider>>, Query(params): Query<AuthorizeParams>) -> Response {
    if let Err(message) = params.check(&provider.client) {
        return provider_error(provider.theme, StatusCode::BAD_REQUEST, message);
    }
    let choices = provider
        .habilitations
        .agents()
        .into_iter()
        .map(|agent| {
            let (given, usual) = agent.dev_names.clone().unwrap_or_else(|| ("Agent".into(), agent.uid.clone()));
            Choice {
                value: format!("{}|{}", agent.idp_id.as_deref().unwrap_or(""), agent.uid),
                label: format!("{given} {usual}"),
                detail: format!(
                    "{} · {} · {}{}",
                    agent.uid,
                    agent.role.code(),
                    agent.organisation.nom,
                    agent.idp_id.as_deref().map(|idp| format!(" · fournisseur {idp}")).unwrap_or_default()
                ),
            }
        })
        .collect();
    render(&AuthorizePage { theme: provider.theme, params, choices }).into_response()
}

#[derive(Deserialize)]
struct Chosen {
    agent: String,
    #[serde(flatten)]
    params: AuthorizeParams,
}

async fn authorize(State(provider): State<Arc<DevProvider>>, Form(chosen): Form<Chosen>) -> Response {
    let params = chosen.params;
    if let Err(message) = params.check(&provider.client) {
        return provider_error(provider.theme, StatusCode::BAD_REQUEST, message);
    }
    let (idp, uid) = chosen.agent.split_once('|').unwrap_or(("", chosen.agent.as_str()));
    let idp_id = (!idp.is_empty()).then(|| idp.to_owned());
    if provider.habilitations.agent(idp_id.as_deref(), uid).is_none() {
        return provider_error(provider.theme, StatusCode::BAD_REQUEST, "agent inconnu".into());
    }
    let code = random_token();
    if let Ok(mut grants) = provider.grants.lock() {
        grants.retain(|_, grant| grant.issued.elapsed() < CODE_LIFETIME);
        grants.insert(
            code.clone(),
            Grant {
                uid: uid.to_owned(),
                idp_id,
                nonce: params.nonce.clone(),
                code_challenge: params.code_challenge.clone(),
                issued: Instant::now(),
            },
        );
    }
    let mut target = match url::Url::parse(&params.redirect_uri) {
        Ok(url) => url,
        Err(_) => return provider_error(provider.theme, StatusCode::BAD_REQUEST, "redirect_uri invalide".into()),
    };
    target.query_pairs_mut().append_pair("code", &code).append_pair("state", &params.state);
    Redirect::to(target.as_str()).into_response()
}

#[derive(Deserialize)]
struct TokenRequest {
    #[serde(default)]
    grant_type: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    redirect_uri: String,
    #[serde(default)]
    code_verifier: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
}

fn token_error(status: StatusCode, error: &str, description: &str) -> Response {
    (status, Json(serde_json::json!({"error": error, "error_description": description}))).into_response()
}

/// The client's credentials, from HTTP Basic (client_secret_basic) or the form (client_secret_post).
fn client_credentials(headers: &HeaderMap, request: &TokenRequest) -> Option<(String, String)> {
    if let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "))
    {
        let decoded = String::from_utf8(STANDARD.decode(basic.trim()).ok()?).ok()?;
        let (id, secret) = decoded.split_once(':')?;
        let unescape = |text: &str| {
            url::form_urlencoded::parse(format!("x={text}").as_bytes()).next().map(|(_, v)| v.into_owned())
        };
        return Some((unescape(id)?, unescape(secret)?));
    }
    Some((request.client_id.clone()?, request.client_secret.clone()?))
}

#[derive(Serialize)]
struct IdTokenClaims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: String,
    exp: i64,
    iat: i64,
    auth_time: i64,
    nonce: &'a str,
    given_name: String,
    usual_name: String,
    email: String,
    uid: &'a str,
    siret: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    idp_id: Option<&'a str>,
}

async fn token(
    State(provider): State<Arc<DevProvider>>,
    headers: HeaderMap,
    Form(request): Form<TokenRequest>,
) -> Response {
    let client = &provider.client;
    match client_credentials(&headers, &request) {
        Some((id, secret))
            if id == client.client_id
                && crate::session::constant_time_eq(secret.as_bytes(), client.client_secret.as_bytes()) => {}
        _ => return token_error(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client or wrong secret"),
    }
    if request.grant_type != "authorization_code" {
        return token_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "authorization_code only");
    }
    if request.redirect_uri != client.redirect_uri {
        return token_error(StatusCode::BAD_REQUEST, "invalid_grant", "redirect_uri differs from the authorization's");
    }
    let grant = provider.grants.lock().ok().and_then(|mut grants| grants.remove(&request.code));
    let Some(grant) = grant.filter(|grant| grant.issued.elapsed() < CODE_LIFETIME) else {
        return token_error(StatusCode::BAD_REQUEST, "invalid_grant", "unknown, used or expired code");
    };
    if let Some(challenge) = &grant.code_challenge {
        let verifier = request.code_verifier.as_deref().unwrap_or_default();
        let computed = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
        if &computed != challenge {
            return token_error(StatusCode::BAD_REQUEST, "invalid_grant", "code_verifier does not match");
        }
    }
    let Some(agent) = provider.habilitations.agent(grant.idp_id.as_deref(), &grant.uid) else {
        return token_error(StatusCode::BAD_REQUEST, "invalid_grant", "the agent is no longer listed");
    };
    let now = chrono::Utc::now().timestamp();
    let (given_name, usual_name) = agent.dev_names.clone().unwrap_or_else(|| ("Agent".into(), agent.uid.clone()));
    // `sub` differs per (service, identity provider) at ProConnect; here derived from both.
    let sub = hex_digest(&format!("{}|{}", grant.idp_id.as_deref().unwrap_or(""), grant.uid));
    let claims = IdTokenClaims {
        iss: &provider.issuer,
        aud: &client.client_id,
        sub,
        exp: now + 60,
        iat: now,
        auth_time: now,
        nonce: &grant.nonce,
        given_name,
        usual_name,
        email: format!("{}@agents.invalid", grant.uid),
        uid: &grant.uid,
        siret: &agent.organisation.siret,
        idp_id: grant.idp_id.as_deref(),
    };
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(passerelle_api::auth::DEV_KEY_ID.into());
    let id_token = match jsonwebtoken::encode(&header, &claims, &provider.signing_key) {
        Ok(token) => token,
        Err(error) => {
            tracing::error!(error = %error, "development provider could not sign an id_token");
            return token_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "signing failed");
        }
    };
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({
            "access_token": random_token(),
            "token_type": "Bearer",
            "expires_in": 60,
            "id_token": id_token,
        })),
    )
        .into_response()
}

fn hex_digest(text: &str) -> String {
    sha2::Sha256::digest(text.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect()
}

#[derive(Deserialize)]
struct EndSession {
    #[serde(default)]
    id_token_hint: String,
    #[serde(default)]
    post_logout_redirect_uri: String,
    #[serde(default)]
    state: String,
}

async fn end_session(State(provider): State<Arc<DevProvider>>, Query(request): Query<EndSession>) -> Response {
    if request.post_logout_redirect_uri != provider.client.post_logout_redirect_uri {
        return provider_error(
            provider.theme,
            StatusCode::BAD_REQUEST,
            "post_logout_redirect_uri différente de celle enregistrée".into(),
        );
    }
    // The hint must be an id_token this provider signed (its signature; it may have expired).
    let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
    validation.validate_exp = false;
    validation.set_audience(&[&provider.client.client_id]);
    validation.set_issuer(&[&provider.issuer]);
    let known = provider
        .jwks
        .keys
        .iter()
        .filter_map(|jwk| jsonwebtoken::DecodingKey::from_jwk(jwk).ok())
        .any(|key| jsonwebtoken::decode::<serde_json::Value>(&request.id_token_hint, &key, &validation).is_ok());
    if !known {
        return provider_error(provider.theme, StatusCode::BAD_REQUEST, "id_token_hint invalide".into());
    }
    let Ok(mut target) = url::Url::parse(&request.post_logout_redirect_uri) else {
        return provider_error(provider.theme, StatusCode::BAD_REQUEST, "post_logout_redirect_uri invalide".into());
    };
    target.query_pairs_mut().append_pair("state", &request.state);
    Redirect::to(target.as_str()).into_response()
}
