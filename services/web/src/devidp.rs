//! The development identity provider: served by the hub only when it runs with the development
//! signing key, under `/dev-oidc`, with ProConnect's endpoints and claims. It lists the agents of
//! the habilitations file; choosing one completes an ordinary authorization code flow, so the
//! console signs in by the same code as in production (discovery, code, token, signed id_token,
//! nonce, PKCE, claims from a signed userinfo answer, logout with `id_token_hint`). Never configure it in production: anyone reaching
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

/// Where the development ProConnect is served.
pub const PATH: &str = "/dev-oidc";
/// Where the development FranceConnect is served.
pub const PERSONS_PATH: &str = "/dev-franceconnect";

/// Who may sign in at a development provider.
pub enum Directory {
    /// ProConnect's: the agents of the habilitations file.
    Agents(Habilitations),
    /// FranceConnect's: identités pivots of a development file (the demo's and the tests').
    Persons(Vec<DevPerson>),
}

/// A person of the development FranceConnect (`infra/dev/persons.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevPerson {
    pub given_name: String,
    pub family_name: String,
    pub birthdate: String,
    pub gender: String,
    #[serde(default)]
    pub birthplace: Option<String>,
    pub birthcountry: String,
    #[serde(default)]
    pub preferred_username: Option<String>,
    pub email: String,
}

impl DevPerson {
    /// The persons of a development file.
    pub fn load(path: &std::path::Path) -> Result<Vec<DevPerson>, String> {
        #[derive(Deserialize)]
        struct File {
            persons: Vec<DevPerson>,
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        toml::from_str::<File>(&text).map(|file| file.persons).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn key(&self) -> String {
        format!("{}|{}|{}", self.family_name, self.given_name, self.birthdate)
    }
}

/// The one client the development provider knows: the console of this hub.
#[derive(Clone)]
pub struct RegisteredClient {
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
    pub post_logout_redirect_uri: String,
}

pub struct DevProvider {
    path: &'static str,
    issuer: String,
    signing_key: EncodingKey,
    jwks: JwkSet,
    client: RegisteredClient,
    directory: Directory,
    theme: Theme,
    grants: Mutex<HashMap<String, Grant>>,
    /// Access tokens given out, for the userinfo endpoint: who was chosen, and when (60 s).
    access: Mutex<HashMap<String, (String, Instant)>>,
}

/// A code given out, waiting for the token request (30 s, once).
struct Grant {
    /// Who was chosen: `idp|uid` of an agent, or a person's key.
    chosen: String,
    nonce: String,
    code_challenge: Option<String>,
    issued: Instant,
}

const CODE_LIFETIME: Duration = Duration::from_secs(30);
const ACCESS_LIFETIME: Duration = Duration::from_secs(60);

impl DevProvider {
    pub fn new(
        path: &'static str,
        issuer: String,
        pkcs8_der: &[u8],
        jwks: JwkSet,
        client: RegisteredClient,
        directory: Directory,
        theme: Theme,
    ) -> Self {
        Self {
            path,
            issuer,
            signing_key: EncodingKey::from_ec_der(pkcs8_der),
            jwks,
            client,
            directory,
            theme,
            grants: Mutex::default(),
            access: Mutex::default(),
        }
    }

    pub fn router(self: Arc<Self>) -> Router {
        let path = self.path;
        Router::new()
            .route(&format!("{path}/.well-known/openid-configuration"), get(discovery))
            .route(&format!("{path}/authorize"), get(authorize_page).post(authorize))
            .route(&format!("{path}/token"), axum::routing::post(token))
            .route(&format!("{path}/jwks"), get(jwks))
            .route(&format!("{path}/userinfo"), get(userinfo))
            .route(&format!("{path}/session/end"), get(end_session))
            .with_state(self)
    }

    /// Who can be chosen, for the page.
    fn choices(&self) -> Vec<Choice> {
        match &self.directory {
            Directory::Agents(habilitations) => habilitations
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
                .collect(),
            Directory::Persons(persons) => persons
                .iter()
                .map(|person| Choice {
                    value: person.key(),
                    label: format!("{} {}", person.given_name, person.family_name),
                    detail: format!(
                        "né(e) le {} · {} · lieu de naissance {} ({})",
                        person.birthdate,
                        person.gender,
                        person.birthplace.as_deref().unwrap_or("—"),
                        person.birthcountry
                    ),
                })
                .collect(),
        }
    }

    /// The claims of the id_token for the one chosen, or None if nobody has that key (any more).
    fn claims_of(&self, chosen: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
        let mut claims = serde_json::Map::new();
        match &self.directory {
            Directory::Agents(habilitations) => {
                let (idp, uid) = chosen.split_once('|').unwrap_or(("", chosen));
                let idp_id = (!idp.is_empty()).then(|| idp.to_owned());
                let agent = habilitations.agent(idp_id.as_deref(), uid)?;
                let (given, usual) = agent.dev_names.clone().unwrap_or_else(|| ("Agent".into(), agent.uid.clone()));
                claims.insert("given_name".into(), given.into());
                claims.insert("usual_name".into(), usual.into());
                claims.insert("email".into(), format!("{uid}@agents.invalid").into());
                claims.insert("uid".into(), uid.into());
                claims.insert("siret".into(), agent.organisation.siret.clone().into());
                if let Some(idp_id) = idp_id {
                    claims.insert("idp_id".into(), idp_id.into());
                }
            }
            Directory::Persons(persons) => {
                let person = persons.iter().find(|person| person.key() == chosen)?;
                claims.insert("given_name".into(), person.given_name.clone().into());
                claims.insert("family_name".into(), person.family_name.clone().into());
                claims.insert("birthdate".into(), person.birthdate.clone().into());
                claims.insert("gender".into(), person.gender.clone().into());
                if let Some(place) = &person.birthplace {
                    claims.insert("birthplace".into(), place.clone().into());
                }
                claims.insert("birthcountry".into(), person.birthcountry.clone().into());
                if let Some(usual) = &person.preferred_username {
                    claims.insert("preferred_username".into(), usual.clone().into());
                }
                claims.insert("email".into(), person.email.clone().into());
            }
        }
        // `sub` differs per (service, identity provider) at ProConnect and FranceConnect; here
        // derived from the one chosen.
        claims.insert("sub".into(), hex_digest(chosen).into());
        Some(claims)
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
        "userinfo_endpoint": format!("{issuer}/userinfo"),
        "userinfo_signing_alg_values_supported": ["ES256"],
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": match provider.directory {
            Directory::Agents(_) => vec!["openid", "given_name", "usual_name", "email", "uid", "siret", "idp_id"],
            Directory::Persons(_) => vec!["openid", "given_name", "family_name", "birthdate", "gender", "birthplace", "birthcountry", "preferred_username", "email"],
        },
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
    action: String,
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
    let choices = provider.choices();
    let action = format!("{}/authorize", provider.path);
    render(&AuthorizePage { theme: provider.theme, action, params, choices }).into_response()
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
    if provider.claims_of(&chosen.agent).is_none() {
        return provider_error(provider.theme, StatusCode::BAD_REQUEST, "inconnu de ce fournisseur".into());
    }
    let code = random_token();
    if let Ok(mut grants) = provider.grants.lock() {
        grants.retain(|_, grant| grant.issued.elapsed() < CODE_LIFETIME);
        grants.insert(
            code.clone(),
            Grant {
                chosen: chosen.agent.clone(),
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
    let Some(claims) = provider.claims_of(&grant.chosen) else {
        return token_error(StatusCode::BAD_REQUEST, "invalid_grant", "no longer listed by this provider");
    };
    // As ProConnect and FranceConnect do, the id_token says who (sub) and for whom; the claims
    // (uid, siret, the identité pivot) are at the userinfo endpoint.
    let now = chrono::Utc::now().timestamp();
    let mut id_claims = serde_json::Map::new();
    id_claims.insert("sub".into(), claims["sub"].clone());
    id_claims.insert("iss".into(), provider.issuer.clone().into());
    id_claims.insert("aud".into(), client.client_id.clone().into());
    id_claims.insert("exp".into(), (now + 60).into());
    id_claims.insert("iat".into(), now.into());
    id_claims.insert("auth_time".into(), now.into());
    id_claims.insert("nonce".into(), grant.nonce.clone().into());
    let Some(id_token) = provider.sign(&id_claims) else {
        return token_error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "signing failed");
    };
    let access_token = random_token();
    if let Ok(mut access) = provider.access.lock() {
        access.retain(|_, (_, issued)| issued.elapsed() < ACCESS_LIFETIME);
        access.insert(access_token.clone(), (grant.chosen.clone(), Instant::now()));
    }
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": 60,
            "id_token": id_token,
        })),
    )
        .into_response()
}

impl DevProvider {
    fn sign(&self, claims: &serde_json::Map<String, serde_json::Value>) -> Option<String> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(passerelle_api::auth::DEV_KEY_ID.into());
        jsonwebtoken::encode(&header, claims, &self.signing_key)
            .inspect_err(|error| tracing::error!(error = %error, "development provider could not sign a token"))
            .ok()
    }
}

/// The claims of the access token's holder, as a signed JWT (`application/jwt`), as ProConnect
/// and FranceConnect answer.
async fn userinfo(State(provider): State<Arc<DevProvider>>, headers: HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default();
    let chosen = provider
        .access
        .lock()
        .ok()
        .and_then(|access| access.get(token).filter(|(_, issued)| issued.elapsed() < ACCESS_LIFETIME).cloned());
    let Some(mut claims) = chosen.and_then(|(chosen, _)| provider.claims_of(&chosen)) else {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\"")],
            "unknown or expired access token",
        )
            .into_response();
    };
    claims.insert("iss".into(), provider.issuer.clone().into());
    claims.insert("aud".into(), provider.client.client_id.clone().into());
    claims.insert("iat".into(), chrono::Utc::now().timestamp().into());
    match provider.sign(&claims) {
        Some(jwt) => {
            ([(header::CONTENT_TYPE, "application/jwt"), (header::CACHE_CONTROL, "no-store")], jwt).into_response()
        }
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
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
