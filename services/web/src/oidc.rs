//! The console as an OpenID Connect relying party of ProConnect (authorization code flow,
//! confidential client), with the `openidconnect` crate: discovery, `state` and `nonce` of 43
//! characters kept in the server-side session, PKCE where the provider announces it, the
//! id_token's signature, issuer, audience and nonce checked, the claims read from the signed
//! userinfo answer (its signature, issuer, audience and subject checked), and logout at the provider with
//! `id_token_hint`. In development the provider is the hub's own (`devidp.rs`), reached by this
//! same code.

use std::time::{Duration, Instant};

use openidconnect::{
    AdditionalClaims, AdditionalProviderMetadata, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndSessionUrl,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IdToken, IssuerUrl, LogoutRequest, Nonce, OAuth2TokenResponse as _,
    PkceCodeChallenge, PkceCodeVerifier, PostLogoutRedirectUrl, ProviderMetadata, RedirectUrl, Scope,
    core::{
        CoreAuthDisplay, CoreAuthenticationFlow, CoreClaimName, CoreClaimType, CoreClient, CoreClientAuthMethod,
        CoreGenderClaim, CoreGrantType, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm,
        CoreJweKeyManagementAlgorithm, CoreJwsSigningAlgorithm, CoreResponseMode, CoreResponseType,
        CoreSubjectIdentifierType,
    },
};
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;

use crate::session::{SignInInProgress, random_token};

/// What a discovery document says beyond OpenID Connect Core: where to end a session, and
/// whether PKCE is accepted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExtraMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_session_endpoint: Option<EndSessionUrl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_challenge_methods_supported: Option<Vec<String>>,
}
impl AdditionalProviderMetadata for ExtraMetadata {}

pub type Metadata = ProviderMetadata<
    ExtraMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// Any claims beyond the standard ones, kept as they came (to parse an id_token whatever its
/// provider, for logout).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AnyClaims {
    #[serde(flatten)]
    pub claims: std::collections::HashMap<String, serde_json::Value>,
}
impl AdditionalClaims for AnyClaims {}

/// FranceConnect's claims of the identité pivot beyond the standard ones (`given_name`,
/// `family_name`, `birthdate`, `gender` are standard).
#[derive(Clone, Serialize, Deserialize)]
pub struct PersonClaims {
    #[serde(default)]
    pub birthplace: Option<String>,
    #[serde(default)]
    pub birthcountry: Option<String>,
    #[serde(default)]
    pub preferred_username: Option<String>,
}
impl AdditionalClaims for PersonClaims {}

/// Names the claims present, never their values (a place of birth is personal).
impl std::fmt::Debug for PersonClaims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersonClaims")
            .field("birthplace", &self.birthplace.is_some())
            .field("birthcountry", &self.birthcountry.is_some())
            .field("preferred_username", &self.preferred_username.is_some())
            .finish()
    }
}

/// ProConnect's claims beyond the standard ones (`given_name`, `email` are standard).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentClaims {
    pub uid: String,
    pub siret: String,
    #[serde(default)]
    pub usual_name: Option<String>,
    #[serde(default)]
    pub idp_id: Option<String>,
}
impl AdditionalClaims for AgentClaims {}

type Client =
    CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointMaybeSet>;

/// Why a sign-in or logout did not complete. The page says what to do; the log keeps the cause
/// (never a token or a personal claim).
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the identity provider's discovery document could not be read: {0}")]
    Discovery(String),
    #[error("the configuration is not usable: {0}")]
    Configuration(String),
    #[error("the sign-in answer does not match a sign-in started here (state)")]
    State,
    #[error("the identity provider refused the code: {0}")]
    Token(String),
    #[error("the id_token is not valid: {0}")]
    IdToken(String),
    #[error("the userinfo answer is not usable: {0}")]
    UserInfo(String),
}

/// The signature algorithms accepted from a provider (those ProConnect registers clients with,
/// but HS256, which would make the client secret a signing key).
const SIGNING_ALGORITHMS: [CoreJwsSigningAlgorithm; 2] =
    [CoreJwsSigningAlgorithm::EcdsaP256Sha256, CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256];

/// A verified sign-in: the standard claims (as JSON: `given_name`, `family_name`, `birthdate`,
/// `gender`, `email`…), the provider's own, and the id_token for logout.
#[derive(Clone)]
pub struct Verified<C> {
    pub issuer: String,
    pub subject: String,
    pub standard: serde_json::Value,
    pub claims: C,
    pub id_token: String,
}

/// The issuer and subject only: the claims are personal, the id_token a credential.
impl<C> std::fmt::Debug for Verified<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verified").field("issuer", &self.issuer).field("subject", &self.subject).finish_non_exhaustive()
    }
}

impl<C> Verified<C> {
    /// A standard claim as text (empty when absent).
    pub fn text(&self, claim: &str) -> String {
        self.standard[claim].as_str().unwrap_or_default().to_owned()
    }
}

/// The relying party: its registration at the provider and the provider's discovered metadata
/// (refreshed hourly, so rotated keys are picked up).
pub struct RelyingParty {
    issuer: IssuerUrl,
    client_id: ClientId,
    client_secret: ClientSecret,
    redirect_uri: RedirectUrl,
    post_logout_redirect_uri: PostLogoutRedirectUrl,
    scopes: Vec<String>,
    http: openidconnect::reqwest::Client,
    metadata: RwLock<Option<(Metadata, Instant)>>,
}

const METADATA_TTL: Duration = Duration::from_secs(3600);

impl RelyingParty {
    pub fn new(
        issuer: &str,
        client_id: &str,
        client_secret: String,
        redirect_uri: &str,
        post_logout_redirect_uri: &str,
        scopes: Vec<String>,
    ) -> Result<Self, OidcError> {
        let config = |what: &str, error: url::ParseError| OidcError::Configuration(format!("{what}: {error}"));
        let http = openidconnect::reqwest::ClientBuilder::new()
            // Following redirects would let a provider's answer send the hub elsewhere.
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| OidcError::Configuration(e.to_string()))?;
        Ok(Self {
            issuer: IssuerUrl::new(issuer.to_owned()).map_err(|e| config("issuer", e))?,
            client_id: ClientId::new(client_id.to_owned()),
            client_secret: ClientSecret::new(client_secret),
            redirect_uri: RedirectUrl::new(redirect_uri.to_owned()).map_err(|e| config("redirect uri", e))?,
            post_logout_redirect_uri: PostLogoutRedirectUrl::new(post_logout_redirect_uri.to_owned())
                .map_err(|e| config("post-logout redirect uri", e))?,
            scopes,
            http,
            metadata: RwLock::new(None),
        })
    }

    async fn metadata(&self) -> Result<Metadata, OidcError> {
        if let Some((metadata, at)) = self.metadata.read().await.as_ref()
            && at.elapsed() < METADATA_TTL
        {
            return Ok(metadata.clone());
        }
        let metadata = Metadata::discover_async(self.issuer.clone(), &self.http)
            .await
            .map_err(|e| OidcError::Discovery(error_chain(&e)))?;
        *self.metadata.write().await = Some((metadata.clone(), Instant::now()));
        Ok(metadata)
    }

    fn client(&self, metadata: Metadata) -> Client {
        CoreClient::from_provider_metadata(metadata, self.client_id.clone(), Some(self.client_secret.clone()))
            .set_redirect_uri(self.redirect_uri.clone())
    }

    /// The provider's authorization URL, and what the callback must find in the session.
    pub async fn start(&self) -> Result<(url::Url, SignInInProgress), OidcError> {
        let metadata = self.metadata().await?;
        let pkce = metadata
            .additional_metadata()
            .code_challenge_methods_supported
            .as_ref()
            .is_some_and(|methods| methods.iter().any(|m| m == "S256"));
        let client = self.client(metadata);
        let mut request = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            || CsrfToken::new(random_token()),
            || Nonce::new(random_token()),
        );
        for scope in &self.scopes {
            if scope != "openid" {
                request = request.add_scope(Scope::new(scope.clone()));
            }
        }
        let mut pkce_verifier = String::new();
        if pkce {
            let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
            request = request.set_pkce_challenge(challenge);
            pkce_verifier = verifier.into_secret();
        }
        let (url, state, nonce) = request.url();
        Ok((url, SignInInProgress { state: state.into_secret(), nonce: nonce.secret().clone(), pkce_verifier }))
    }

    /// The callback: `state` checked against the session, the code exchanged, the id_token
    /// verified (signature with the provider's keys, issuer, audience, expiry, nonce), then the
    /// claims fetched from the userinfo endpoint when the provider has one (ProConnect and
    /// FranceConnect put `uid`, `siret` and the identité pivot there, not in the id_token): a
    /// signed answer is verified like the id_token, and its `sub` must be the id_token's.
    pub async fn finish<C: AdditionalClaims + Clone>(
        &self,
        in_progress: &SignInInProgress,
        code: &str,
        state: &str,
    ) -> Result<Verified<C>, OidcError> {
        if !crate::session::constant_time_eq(in_progress.state.as_bytes(), state.as_bytes()) {
            return Err(OidcError::State);
        }
        let metadata = self.metadata().await?;
        let client = self.client(metadata.clone());
        let mut exchange = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| OidcError::Configuration(e.to_string()))?;
        if !in_progress.pkce_verifier.is_empty() {
            exchange = exchange.set_pkce_verifier(PkceCodeVerifier::new(in_progress.pkce_verifier.clone()));
        }
        let response = exchange.request_async(&self.http).await.map_err(|e| OidcError::Token(error_chain(&e)))?;
        let raw = response
            .extra_fields()
            .id_token()
            .ok_or_else(|| OidcError::IdToken("the token answer has no id_token".into()))?
            .to_string();
        let id_token: IdToken<AnyClaims, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm> =
            raw.parse().map_err(|e: serde_json::Error| OidcError::IdToken(e.to_string()))?;
        let verifier = client.id_token_verifier().set_allowed_algs(SIGNING_ALGORITHMS);
        let claims = id_token
            .claims(&verifier, &Nonce::new(in_progress.nonce.clone()))
            .map_err(|e| OidcError::IdToken(error_chain(&e)))?;
        let subject = claims.subject().as_str().to_owned();
        let mut merged = serde_json::to_value(claims).map_err(|e| OidcError::IdToken(e.to_string()))?;
        if let Some(url) = client.user_info_url() {
            let fetched = self.user_info(&metadata, url.url(), response.access_token().secret(), &subject).await?;
            if let (Some(merged), serde_json::Value::Object(fetched)) = (merged.as_object_mut(), fetched) {
                merged.extend(fetched);
            }
        }
        let provider_claims: C = serde_json::from_value(merged.clone())
            .map_err(|e| OidcError::UserInfo(format!("a claim the hub needs is missing or malformed: {e}")))?;
        Ok(Verified {
            issuer: claims.issuer().as_str().to_owned(),
            subject,
            standard: merged,
            claims: provider_claims,
            id_token: raw,
        })
    }

    /// The userinfo answer: a JWT (`application/jwt`) signed with one of the provider's keys,
    /// for this client, from this issuer, about `subject`; or plain JSON about `subject`.
    async fn user_info(
        &self,
        metadata: &Metadata,
        url: &url::Url,
        access_token: &str,
        subject: &str,
    ) -> Result<serde_json::Value, OidcError> {
        let answer = self
            .http
            .get(url.clone())
            .bearer_auth(access_token)
            .header(openidconnect::reqwest::header::ACCEPT, "application/jwt, application/json;q=0.9")
            .send()
            .await
            .map_err(|e| OidcError::UserInfo(error_chain(&e)))?;
        if !answer.status().is_success() {
            return Err(OidcError::UserInfo(format!("the userinfo endpoint answered {}", answer.status())));
        }
        let content_type = answer
            .headers()
            .get(openidconnect::reqwest::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let body = answer.text().await.map_err(|e| OidcError::UserInfo(error_chain(&e)))?;
        let claims: serde_json::Value = if content_type.starts_with("application/jwt") {
            let header = jsonwebtoken::decode_header(body.trim())
                .map_err(|e| OidcError::UserInfo(format!("the signed answer is not a JWT: {e}")))?;
            if !matches!(header.alg, jsonwebtoken::Algorithm::ES256 | jsonwebtoken::Algorithm::RS256) {
                return Err(OidcError::UserInfo(format!(
                    "the answer is signed with {:?}, not ES256 or RS256",
                    header.alg
                )));
            }
            let keys: jsonwebtoken::jwk::JwkSet = serde_json::to_value(metadata.jwks())
                .and_then(serde_json::from_value)
                .map_err(|e| OidcError::UserInfo(format!("the provider's keys: {e}")))?;
            let key = match &header.kid {
                Some(kid) => keys.find(kid),
                None if keys.keys.len() == 1 => keys.keys.first(),
                None => None,
            }
            .ok_or_else(|| OidcError::UserInfo("the answer names no key of the provider".into()))?;
            let key = jsonwebtoken::DecodingKey::from_jwk(key)
                .map_err(|e| OidcError::UserInfo(format!("the provider's key: {e}")))?;
            let mut validation = jsonwebtoken::Validation::new(header.alg);
            validation.set_issuer(&[self.issuer.as_str()]);
            validation.set_audience(&[self.client_id.as_str()]);
            validation.set_required_spec_claims(&["iss", "aud", "sub"]);
            jsonwebtoken::decode::<serde_json::Value>(body.trim(), &key, &validation)
                .map_err(|e| OidcError::UserInfo(format!("the signed answer is not valid: {e}")))?
                .claims
        } else if content_type.starts_with("application/json") {
            serde_json::from_str(&body).map_err(|e| OidcError::UserInfo(format!("the answer is not JSON: {e}")))?
        } else {
            return Err(OidcError::UserInfo(format!("unexpected content type {content_type:?}")));
        };
        if claims["sub"].as_str() != Some(subject) {
            // Another person's claims (a substituted token): never merged with this sign-in.
            return Err(OidcError::UserInfo("the answer is about another subject than the id_token".into()));
        }
        Ok(claims)
    }

    /// Where to send the browser to end the session at the provider too, with the `state` to
    /// check on return. None when the provider announces no end-session endpoint.
    pub async fn logout_url(&self, id_token: &str, state: &str) -> Result<Option<url::Url>, OidcError> {
        let metadata = self.metadata().await?;
        let Some(end_session) = metadata.additional_metadata().end_session_endpoint.clone() else {
            return Ok(None);
        };
        let id_token: IdToken<AnyClaims, CoreGenderClaim, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm> =
            id_token.parse().map_err(|e: serde_json::Error| OidcError::IdToken(e.to_string()))?;
        Ok(Some(
            LogoutRequest::from(end_session)
                .set_id_token_hint(&id_token)
                .set_post_logout_redirect_uri(self.post_logout_redirect_uri.clone())
                .set_state(CsrfToken::new(state.to_owned()))
                .http_get_url(),
        ))
    }
}

/// An error and its causes on one line (the OIDC crates nest the useful part).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}
