//! Configuration, in layers. Precedence, lowest to highest:
//!   1. built-in defaults (a single-machine development hub);
//!   2. the TOML file given with `--config` (or `PASSERELLE_CONFIG`);
//!   3. environment variables prefixed `PASSERELLE__`, nested keys separated by `__`
//!      (`PASSERELLE__KAFKA__BOOTSTRAP_SERVERS=broker:9092`);
//!   4. command-line flags.
//!
//! Secrets (pepper, root keys) are read from files or the environment and never printed.

use std::{net::SocketAddr, path::PathBuf};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use passerelle_eventlog::{kafka::KafkaSettings, secrets::SecretKey};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// PostgreSQL as the application's role (`passerelle_app`): read models, data keys, schema
    /// registry, and the access journal, which this role may only insert into and read.
    pub database_url: String,
    /// PostgreSQL as the role that owns the schemas: migrations and projection rebuilds. Unset,
    /// `database_url` is used for both, and the journal is only as append-only as that role.
    pub database_owner_url: Option<String>,
    pub kafka: KafkaSettings,
    /// gRPC ingestion API.
    pub grpc_listen: SocketAddr,
    /// HTTP: the API feuille de route (`/api/v1`), the console, the person's space, `/healthz`.
    pub http_listen: SocketAddr,
    /// TLS of `http_listen` (HTTPS for the API, the console and the person's space). Unset:
    /// plain HTTP, for a hub behind a reverse proxy that terminates TLS (docs/console.md).
    pub http_tls: Option<HttpTlsConfig>,
    /// The operators' listener: `/metrics`, `/readyz`, `/healthz`. Keep it off the public
    /// network (it answers anyone who reaches it; it shows no personal data nor error text).
    pub ops_listen: SocketAddr,
    /// gRPC face of the API feuille de route (TLS with the hub's server certificate; agents
    /// authenticate with their access token, not a client certificate).
    pub api_grpc_listen: SocketAddr,
    /// Confluent-compatible schema registry (read API).
    pub registry_listen: SocketAddr,
    /// Institutions allowed to push, with their kind and scope.
    pub institutions_file: PathBuf,
    pub secrets: SecretsConfig,
    /// Mutual TLS of the gRPC ingestion API: institutions present client certificates issued by
    /// `client_ca_file`; the certificate's common name is the institution's id.
    pub tls: TlsConfig,
    /// `json` (one object per line) or `pretty`.
    pub log_format: String,
    /// OpenTelemetry traces: the OTLP/HTTP endpoint spans are exported to, e.g.
    /// `http://127.0.0.1:4318/v1/traces`. Unset (the default): no traces.
    pub otlp_endpoint: Option<String>,
    /// Kafka consumer group of the dossier projection's workers (the topic prefix is added).
    pub projector_group: String,
    /// Records applied per projector transaction, at most.
    pub projector_max_batch: usize,
    /// Projector workers this process runs, each a member of the consumer group with partitions
    /// of its own (docs/projector.md, "What runs"); 1 by default, at most
    /// [`MAX_PROJECTOR_WORKERS`].
    pub projector_workers: usize,
    /// The projector's group watchdog (seconds): a partition with records waiting that made no
    /// progress for this long while it is not this worker's (or this worker receives nothing)
    /// makes the worker leave and rejoin its consumer group. Longer than a rebalance.
    pub projector_rejoin_after_seconds: u64,
    /// How often every hub process measures the projection's lag (seconds; broker and database
    /// only, so it is seen even when the projector itself is down).
    pub lag_probe_seconds: u64,
    /// Persons without contact for this many days are erased by the daily retention job
    /// (accompaniment data is kept 2 years after the last contact).
    pub retention_days: i64,
    /// The gRPC ingestion API's limits per institution.
    pub ingest: IngestConfig,
    /// The API feuille de route.
    pub api: ApiConfig,
    /// The web console (served on `http_listen`).
    pub web: passerelle_web::WebConfig,
}

/// The certificate (PEM, the chain from the leaf) and key (PEM, PKCS#8, SEC1 or PKCS#1) of the
/// HTTPS listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpTlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// The gRPC ingestion API.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct IngestConfig {
    /// Message size, events per stream, streams at once and events per second, per institution.
    pub limits: passerelle_ingest::limits::IngestLimitsConfig,
}

/// Who may call the API feuille de route, and how their tokens are checked.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiConfig {
    /// Organisations and agents (uid → organisation and role).
    pub habilitations_file: PathBuf,
    /// The identity provider's public keys (JWKS), e.g. ProConnect's.
    pub jwks_file: PathBuf,
    pub issuer: String,
    pub audience: String,
    /// Rate limits per agent and per address, body size and request time.
    pub limits: passerelle_api::limits::LimitsConfig,
    /// Reverse proxies in front of `http_listen` (their addresses): from them only, the client's
    /// address is read from `X-Forwarded-For` for the per-address limit of anonymous calls.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Connections of the API's and the console's own pool (separate from ingestion's and the
    /// projector's, so that reads cannot starve the writes).
    pub pool_size: u32,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            habilitations_file: PathBuf::from("infra/dev/habilitations.toml"),
            jwks_file: PathBuf::from("var/pki/oidc-dev-jwks.json"),
            issuer: DEV_ISSUER.into(),
            audience: "passerelle".into(),
            limits: passerelle_api::limits::LimitsConfig::default(),
            trusted_proxies: Vec::new(),
            pool_size: 8,
        }
    }
}

/// The issuer of the development tokens (`passerelle dev token`).
pub const DEV_ISSUER: &str = "https://passerelle.invalid/dev-oidc";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: PathBuf,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: PathBuf::from("var/pki/server.pem"),
            key_file: PathBuf::from("var/pki/server.key"),
            client_ca_file: PathBuf::from("var/pki/ca.pem"),
        }
    }
}

/// Where the secrets are. Each is 64 hex characters, from the environment (`*_hex`, e.g.
/// `PASSERELLE__SECRETS__PEPPER_HEX`) or a file.
#[derive(Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct SecretsConfig {
    pub pepper_file: Option<PathBuf>,
    pub pepper_hex: Option<String>,
    /// The directory of the root keys (one file per generation; docs/decisions/0007): outside
    /// the database and its backups, shared by every hub process, writable (an erasure writes
    /// the next generation and deletes the older ones).
    pub root_keys_dir: Option<PathBuf>,
}

impl std::fmt::Debug for SecretsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsConfig")
            .field("pepper_file", &self.pepper_file)
            .field("pepper_hex", &self.pepper_hex.as_ref().map(|_| "<redacted>"))
            .field("root_keys_dir", &self.root_keys_dir)
            .finish()
    }
}

impl SecretsConfig {
    fn load(name: &'static str, hex: Option<&String>, file: Option<&PathBuf>) -> anyhow::Result<SecretKey> {
        match (hex, file) {
            (Some(hex), _) => Ok(SecretKey::from_hex(name, hex)?),
            (None, Some(path)) => Ok(SecretKey::from_file(name, path)?),
            (None, None) => anyhow::bail!(
                "the {name} is not configured: set secrets.{name}_file in the configuration (or PASSERELLE__SECRETS__{}_HEX); for development run infra/dev-secrets.sh",
                name.to_ascii_uppercase()
            ),
        }
    }

    pub fn pepper(&self) -> anyhow::Result<SecretKey> {
        Self::load("pepper", self.pepper_hex.as_ref(), self.pepper_file.as_ref())
    }

    /// The root keys of the key hierarchy.
    pub fn root_keys(&self) -> anyhow::Result<std::sync::Arc<passerelle_eventlog::shredding::RootKeys>> {
        let dir = self.root_keys_dir.as_ref().ok_or_else(|| {
            anyhow::anyhow!(
                "the root keys are not configured: set secrets.root_keys_dir in the configuration (or PASSERELLE__SECRETS__ROOT_KEYS_DIR); for development run infra/dev-secrets.sh"
            )
        })?;
        Ok(std::sync::Arc::new(passerelle_eventlog::shredding::RootKeys::open(dir)?))
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            database_url: "postgres://passerelle_app@127.0.0.1:5432/passerelle".into(),
            database_owner_url: Some("postgres://postgres@127.0.0.1:5432/passerelle".into()),
            kafka: KafkaSettings::default(),
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            http_tls: None,
            ops_listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            api_grpc_listen: SocketAddr::from(([127, 0, 0, 1], 50052)),
            registry_listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            institutions_file: PathBuf::from("infra/dev/institutions.toml"),
            secrets: SecretsConfig::default(),
            tls: TlsConfig::default(),
            log_format: "pretty".into(),
            otlp_endpoint: None,
            projector_group: "passerelle-projector-dossier".into(),
            retention_days: 730,
            projector_max_batch: 500,
            projector_workers: 1,
            projector_rejoin_after_seconds: 30,
            lag_probe_seconds: 15,
            ingest: IngestConfig::default(),
            api: ApiConfig::default(),
            web: passerelle_web::WebConfig::default(),
        }
    }
}

/// Projector workers one process may run (a worker uses up to 2 of its pool's
/// [`crate::POOL_CONNECTIONS`]).
pub const MAX_PROJECTOR_WORKERS: usize = 4;

impl Config {
    /// Defaults, then the file (if any), then `PASSERELLE__` variables.
    pub fn figment(file: Option<&std::path::Path>) -> Figment {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            figment = figment.merge(Toml::file_exact(path));
        }
        figment.merge(Env::prefixed("PASSERELLE__").split("__"))
    }

    /// The role that owns the tables: `database_owner_url`, else the application's own.
    pub fn owner_url(&self) -> &str {
        self.database_owner_url.as_deref().unwrap_or(&self.database_url)
    }

    pub fn load(file: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let config: Self = Self::figment(file).extract()?;
        anyhow::ensure!(
            (1..=MAX_PROJECTOR_WORKERS).contains(&config.projector_workers),
            "projector_workers is {}: it must be between 1 and {MAX_PROJECTOR_WORKERS} (each worker holds up to two of the \
             process's {} database connections, which the API and ingestion share); for more workers, run more \
             `passerelle up` processes",
            config.projector_workers,
            crate::POOL_CONNECTIONS
        );
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err, reason = "figment::Jail dictates the closure type")]
    fn more_projector_workers_than_the_pool_serves_are_refused_with_the_limit() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("hub.toml", "projector_workers = 9")?;
            let error = Config::load(Some(std::path::Path::new("hub.toml"))).err().map(|e| e.to_string());
            let error = error.unwrap_or_default();
            assert!(error.contains("projector_workers is 9") && error.contains("between 1 and 4"), "{error:?}");
            jail.create_file("hub.toml", "projector_workers = 2")?;
            let config = Config::load(Some(std::path::Path::new("hub.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(config.projector_workers, 2);
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err, reason = "figment::Jail dictates the closure type")]
    fn the_environment_overrides_the_file_which_overrides_the_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "hub.toml",
                r#"
                    database_url = "postgres://file@db/passerelle"
                    grpc_listen = "0.0.0.0:6000"
                    [kafka]
                    bootstrap_servers = "file-broker:9092"
                "#,
            )?;
            jail.set_env("PASSERELLE__KAFKA__BOOTSTRAP_SERVERS", "env-broker:9092");
            let config = Config::load(Some(std::path::Path::new("hub.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(config.kafka.bootstrap_servers, "env-broker:9092");
            assert_eq!(config.database_url, "postgres://file@db/passerelle");
            assert_eq!(config.grpc_listen.port(), 6000);
            assert_eq!(config.http_listen.port(), 8080);
            assert_eq!(config.kafka.delivery_timeout_ms, 4000);
            Ok(())
        });
    }

    #[test]
    fn secrets_are_never_printed() {
        let secrets = SecretsConfig { pepper_hex: Some("ab".repeat(32)), ..SecretsConfig::default() };
        assert!(!format!("{secrets:?}").contains("abab"));
        let missing = SecretsConfig::default().root_keys().expect_err("not configured").to_string();
        assert!(missing.contains("infra/dev-secrets.sh"), "{missing}");
    }
}
