//! The end-to-end harness: spawns a real hub (real broker, real PostgreSQL) on port 0 with its
//! own database and topic prefix, and talks to it as an institution would.
//!
//! Environment (set by infra/test.sh): PASSERELLE_TEST_BOOTSTRAP (broker), PASSERELLE_TEST_PG
//! (PostgreSQL URL without database), PASSERELLE_TEST_PYTHON (a Python with confluent-kafka),
//! PASSERELLE_TANSU_BIN (the broker binary, for tests that run their own broker).

pub mod broker;
pub mod logs;
pub mod topics;

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use passerelle::{Running, config::Config};
use passerelle_eventlog::{secrets::SecretKey, shredding::KeyStore, subject::SubjectKeys};
use passerelle_ingest::service::INSTITUTION_HEADER;
use tonic::{Request, metadata::MetadataValue, transport::Channel};

pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A hub started for one test.
pub struct TestHub {
    pub running: Running,
    pub config: Config,
    pub pepper: SecretKey,
    pub master: SecretKey,
    pub channel: Channel,
}

impl TestHub {
    /// A hub on the shared test broker.
    pub async fn spawn() -> anyhow::Result<Self> {
        Self::spawn_on(&env_or("PASSERELLE_TEST_BOOTSTRAP", "127.0.0.1:9092")).await
    }

    /// A hub on the given broker, with a fresh database and topic prefix.
    pub async fn spawn_on(bootstrap: &str) -> anyhow::Result<Self> {
        logs::capture();
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let database = format!("passerelle_test_{}", &unique[..16]);
        let base = env_or("PASSERELLE_TEST_PG", "postgres://postgres@127.0.0.1:5432");
        let admin = sqlx::PgPool::connect(&format!("{base}/postgres")).await.context("connecting to PostgreSQL")?;
        // The name is ours (hex digits only), not input.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{database}\""))).execute(&admin).await?;
        admin.close().await;

        let pepper = SecretKey::generate();
        let master = SecretKey::generate();
        let mut config = Config {
            database_url: format!("{base}/{database}"),
            grpc_listen: "127.0.0.1:0".parse()?,
            http_listen: "127.0.0.1:0".parse()?,
            registry_listen: "127.0.0.1:0".parse()?,
            institutions_file: repo_root().join("infra/dev/institutions.toml"),
            ..Config::default()
        };
        config.kafka.bootstrap_servers = bootstrap.to_owned();
        config.kafka.topic_prefix = format!("t{}.", &unique[..12]);
        config.kafka.partitions = 3;
        config.secrets.pepper_hex = Some(pepper.to_hex());
        config.secrets.master_key_hex = Some(master.to_hex());
        let running = passerelle::start(&config).await?;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", running.grpc_addr))?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await?;
        Ok(Self { running, config, pepper, master, channel })
    }

    pub fn subject_keys(&self) -> SubjectKeys {
        SubjectKeys::new(self.pepper.clone())
    }

    pub fn key_store(&self) -> KeyStore {
        KeyStore::new(self.running.pool.clone(), self.master.clone())
    }

    pub fn registry_url(&self) -> String {
        format!("http://{}", self.running.registry_addr)
    }

    pub fn topic(&self, family: passerelle_domain::event::Family) -> String {
        self.running.topics.topic(family)
    }
}

/// A request sent as `institution`.
pub fn as_institution<T>(institution: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(INSTITUTION_HEADER, MetadataValue::try_from(institution).expect("ascii institution id"));
    request
}
