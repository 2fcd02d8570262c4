//! The web console of département staff, CAF agents, France Travail conseillers, référents and
//! DPOs: server-rendered pages (askama templates, checked at compile time) in the State's design
//! system (DSFR, served by the hub itself), over the API's service layer, so each page passes
//! the same policy and journal as the API, the journal naming the console as the channel.
//! Agents sign in with ProConnect (OpenID Connect, `oidc.rs`); in development, through the hub's
//! own provider (`devidp.rs`) by the same code path. Sessions are server-side (`session.rs`).

pub mod devidp;
pub mod oidc;
pub mod pages;
pub mod session;
pub mod theme;
mod views;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::Request,
    http::{HeaderName, HeaderValue, header},
    middleware::Next,
    response::Response,
};
use passerelle_api::service::Api;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tower_sessions::{Expiry, SessionManagerLayer, cookie::SameSite};

pub use theme::Theme;

/// Migrations of the console's tables (sessions). Versions from 3001.
pub fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator
}

/// The console's configuration (`[web]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct WebConfig {
    /// The address agents reach the hub at (`https://passerelle.departement.fr`), from which the
    /// sign-in redirect URIs are made. Unset: `http://` + the HTTP listener's address.
    pub public_url: Option<String>,
    /// `etat` (the State's team runs the hub) or `neutre` (a département-run deployment).
    pub theme: Theme,
    /// The DSFR's `dist` folder (`infra/web-assets.sh` installs the pinned npm package).
    pub assets_dir: PathBuf,
    /// A session unused this long ends.
    pub session_idle_minutes: u64,
    /// A session ends this long after sign-in, used or not (ProConnect's own session: 12 h).
    pub session_absolute_hours: u64,
    pub proconnect: ProviderConfig,
    /// The person's space: FranceConnect (`/mon-espace`).
    pub franceconnect: ProviderConfig,
    /// The persons the development FranceConnect lists (`infra/dev/persons.toml`).
    pub dev_persons_file: Option<PathBuf>,
    /// The development signing key (PKCS#8 DER, `passerelle dev pki` writes it). Set, the hub
    /// serves the development identity provider at `/dev-oidc`, and ProConnect defaults to it.
    /// Never in production.
    pub dev_signing_key_file: Option<PathBuf>,
    /// The public key set of the development key.
    pub dev_jwks_file: Option<PathBuf>,
}

/// The hub's registration at an identity provider (ProConnect for agents, FranceConnect for
/// persons).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ProviderConfig {
    /// The issuer (discovery at `<issuer>/.well-known/openid-configuration`), e.g.
    /// `https://auth.agentconnect.gouv.fr/api/v2`. Unset: the development provider.
    pub issuer: Option<String>,
    pub client_id: String,
    /// A file holding the client secret. Unset with the development provider: a secret drawn at
    /// start, shared with it.
    pub client_secret_file: Option<PathBuf>,
    pub scopes: Vec<String>,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self::proconnect()
    }
}

impl ProviderConfig {
    fn proconnect() -> Self {
        Self {
            issuer: None,
            client_id: "passerelle-console".into(),
            client_secret_file: None,
            scopes: ["openid", "given_name", "usual_name", "email", "uid", "siret", "idp_id"]
                .map(str::to_owned)
                .to_vec(),
        }
    }

    /// FranceConnect's identité pivot.
    fn franceconnect() -> Self {
        Self {
            issuer: None,
            client_id: "passerelle-espace".into(),
            client_secret_file: None,
            scopes: [
                "openid",
                "given_name",
                "family_name",
                "birthdate",
                "gender",
                "birthplace",
                "birthcountry",
                "preferred_username",
                "email",
            ]
            .map(str::to_owned)
            .to_vec(),
        }
    }
}

impl Default for WebConfig {
    fn default() -> Self {
        Self {
            public_url: None,
            theme: Theme::Etat,
            assets_dir: PathBuf::from("services/web/node_modules/@gouvfr/dsfr/dist"),
            session_idle_minutes: 30,
            session_absolute_hours: 12,
            proconnect: ProviderConfig::proconnect(),
            franceconnect: ProviderConfig::franceconnect(),
            dev_persons_file: None,
            dev_signing_key_file: None,
            dev_jwks_file: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Configuration(String),
    #[error(transparent)]
    Oidc(#[from] oidc::OidcError),
}

/// What the console's handlers share.
pub struct Console {
    pub(crate) api: Arc<Api>,
    pub(crate) relying_party: oidc::RelyingParty,
    /// FranceConnect, for the person's space (None: the space is off).
    pub(crate) person_party: Option<oidc::RelyingParty>,
    /// Where the person's choices go on the log (None: the space shows them, cannot change them).
    pub(crate) choices: Option<Arc<passerelle_ingest::hub::IngestHub>>,
    pub(crate) theme: Theme,
    pub(crate) session_absolute: chrono::Duration,
}

/// The console's routes (`/console`, `/dsfr`, and `/dev-oidc` with the development key), with
/// their sessions and security headers. `http_addr`: where the hub's HTTP listener is bound;
/// `choices`: the ingestion hub, through which persons record their choices on the log.
pub fn router(
    config: &WebConfig,
    http_addr: SocketAddr,
    api: Arc<Api>,
    pool: PgPool,
    choices: Option<Arc<passerelle_ingest::hub::IngestHub>>,
) -> Result<Router, Error> {
    let public_url =
        config.public_url.clone().unwrap_or_else(|| format!("http://{http_addr}")).trim_end_matches('/').to_owned();
    let secure = public_url.starts_with("https://");
    let dev_key = match &config.dev_signing_key_file {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            Error::Configuration(format!(
                "cannot read the development signing key {} (web.dev_signing_key_file; infra/dev-pki.sh writes it): {e}",
                path.display()
            ))
        })?),
        None => None,
    };
    let Some(agents) =
        Registration::of(&config.proconnect, "proconnect", &public_url, "/console", devidp::PATH, dev_key.is_some())?
    else {
        tracing::warn!(
            "the web console is off: web.proconnect.issuer is not set (name ProConnect's issuer, or for development set web.dev_signing_key_file)"
        );
        return Ok(Router::new());
    };
    let persons = Registration::of(
        &config.franceconnect,
        "franceconnect",
        &public_url,
        "/mon-espace",
        devidp::PERSONS_PATH,
        dev_key.is_some(),
    )?;
    if persons.is_none() {
        tracing::info!("the person's space is off: web.franceconnect.issuer is not set");
    }
    let form_action = [Some(&agents), persons.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|registration| url::Url::parse(&registration.issuer).ok())
        .map(|url| url.origin().ascii_serialization())
        .collect::<Vec<_>>()
        .join(" ");
    if !config.assets_dir.join("dsfr.min.css").exists() {
        tracing::warn!(
            assets_dir = %config.assets_dir.display(),
            "the DSFR assets are missing: pages will be unstyled (infra/web-assets.sh installs them)"
        );
    }
    let store = session::PgStore::new(pool);
    spawn_session_cleanup(store.clone());
    let sessions = SessionManagerLayer::new(store)
        .with_name("passerelle_console")
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_secure(secure)
        .with_path("/")
        // Saved on every request, so the idle timeout counts from the last page, not sign-in.
        .with_always_save(true)
        .with_expiry(Expiry::OnInactivity(time::Duration::minutes(config.session_idle_minutes.max(1) as i64)));
    let console = Arc::new(Console {
        api: api.clone(),
        relying_party: agents.relying_party(&config.proconnect)?,
        person_party: persons
            .as_ref()
            .map(|registration| registration.relying_party(&config.franceconnect))
            .transpose()?,
        choices,
        theme: config.theme,
        session_absolute: chrono::Duration::hours(config.session_absolute_hours.max(1) as i64),
    });
    let mut router = pages::router(console).layer(sessions).merge(assets(&config.assets_dir));
    if let Some(der) = dev_key {
        let jwks_path = config.dev_jwks_file.clone().unwrap_or_else(|| PathBuf::from("var/pki/oidc-dev-jwks.json"));
        let jwks: jsonwebtoken::jwk::JwkSet = std::fs::read_to_string(&jwks_path)
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))
            .map_err(|e| {
                Error::Configuration(format!(
                    "the development key set {} (web.dev_jwks_file): {e}",
                    jwks_path.display()
                ))
            })?;
        if agents.development {
            tracing::warn!(issuer = %agents.issuer, "serving the development ProConnect: anyone reaching it signs in as any listed agent; never in production");
            let provider = devidp::DevProvider::new(
                devidp::PATH,
                agents.issuer.clone(),
                &der,
                jwks.clone(),
                agents.client(&config.proconnect),
                devidp::Directory::Agents(api.habilitations().clone()),
                config.theme,
            );
            router = router.merge(Arc::new(provider).router());
        }
        if let Some(persons) = persons.as_ref().filter(|registration| registration.development) {
            let file = config.dev_persons_file.clone().unwrap_or_else(|| PathBuf::from("infra/dev/persons.toml"));
            let listed = devidp::DevPerson::load(&file)
                .map_err(|e| Error::Configuration(format!("the development persons (web.dev_persons_file): {e}")))?;
            tracing::warn!(issuer = %persons.issuer, "serving the development FranceConnect: anyone reaching it signs in as any listed person; never in production");
            let provider = devidp::DevProvider::new(
                devidp::PERSONS_PATH,
                persons.issuer.clone(),
                &der,
                jwks,
                persons.client(&config.franceconnect),
                devidp::Directory::Persons(listed),
                config.theme,
            );
            router = router.merge(Arc::new(provider).router());
        }
    }
    let csp = format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; \
         connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'; form-action 'self' {form_action}"
    );
    let csp = HeaderValue::from_str(csp.trim()).map_err(|e| Error::Configuration(e.to_string()))?;
    Ok(router.layer(axum::middleware::from_fn(move |request: Request, next: Next| {
        let csp = csp.clone();
        async move { security_headers(request, next, csp, secure).await }
    })))
}

/// The hub's registration at one provider, resolved: its issuer (the configured one, or the
/// hub's development provider), its client secret, its redirect URIs.
struct Registration {
    issuer: String,
    development: bool,
    client_secret: String,
    redirect_uri: String,
    post_logout_redirect_uri: String,
}

impl Registration {
    /// None when the provider is not configured and there is no development key.
    fn of(
        config: &ProviderConfig,
        name: &str,
        public_url: &str,
        space: &str,
        dev_path: &str,
        dev_key: bool,
    ) -> Result<Option<Self>, Error> {
        let (issuer, development) = match (&config.issuer, dev_key) {
            (Some(issuer), _) => (issuer.clone(), false),
            (None, true) => (format!("{public_url}{dev_path}"), true),
            (None, false) => return Ok(None),
        };
        let client_secret = match &config.client_secret_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| {
                    Error::Configuration(format!(
                        "cannot read the {name} client secret {} (web.{name}.client_secret_file): {e}",
                        path.display()
                    ))
                })?
                .trim()
                .to_owned(),
            // The development provider and the hub share a secret drawn at start.
            None if development => session::random_token(),
            None => {
                return Err(Error::Configuration(format!(
                    "web.{name}.client_secret_file is not set: the hub is a confidential client of {name}"
                )));
            }
        };
        Ok(Some(Self {
            issuer,
            development,
            client_secret,
            redirect_uri: format!("{public_url}{space}/connexion/retour"),
            post_logout_redirect_uri: format!("{public_url}{space}/deconnexion/retour"),
        }))
    }

    fn relying_party(&self, config: &ProviderConfig) -> Result<oidc::RelyingParty, Error> {
        Ok(oidc::RelyingParty::new(
            &self.issuer,
            &config.client_id,
            self.client_secret.clone(),
            &self.redirect_uri,
            &self.post_logout_redirect_uri,
            config.scopes.clone(),
        )?)
    }

    fn client(&self, config: &ProviderConfig) -> devidp::RegisteredClient {
        devidp::RegisteredClient {
            client_id: config.client_id.clone(),
            client_secret: self.client_secret.clone(),
            redirect_uri: self.redirect_uri.clone(),
            post_logout_redirect_uri: self.post_logout_redirect_uri.clone(),
        }
    }
}

/// The DSFR's files, from the installed package (no CDN, no font or script from elsewhere).
fn assets(dir: &std::path::Path) -> Router {
    Router::new()
        .nest_service("/dsfr", tower_http::services::ServeDir::new(dir))
        .route(
            "/console/static/console.css",
            axum::routing::get(|| async { css(include_str!("../static/console.css")) }),
        )
        .route("/console/static/neutre.css", axum::routing::get(|| async { css(include_str!("../static/neutre.css")) }))
}

fn css(body: &'static str) -> Response {
    axum::response::IntoResponse::into_response(([(header::CONTENT_TYPE, "text/css; charset=utf-8")], body))
}

/// Headers of every page and asset: a CSP without inline script, no framing, no sniffing, no
/// referrer outside the hub; pages are never stored (they hold personal data), assets may be.
async fn security_headers(request: Request, next: Next, csp: HeaderValue, secure: bool) -> Response {
    let asset = request.uri().path().starts_with("/dsfr/") || request.uri().path().starts_with("/console/static/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(
        HeaderName::from_static("permissions-policy"),
        HeaderValue::from_static("camera=(), microphone=(), geolocation=()"),
    );
    if !asset {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    } else {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    }
    if secure {
        headers.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
    }
    response
}

fn spawn_session_cleanup(store: session::PgStore) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(600));
        loop {
            every.tick().await;
            match store.delete_expired().await {
                Ok(_) => {}
                // The hub stopped (its pool closed): so does the cleanup.
                Err(sqlx::Error::PoolClosed) => return,
                Err(error) => {
                    tracing::warn!(error = %error, "expired console sessions not deleted; retried in 10 minutes")
                }
            }
        }
    });
}
