//! The end-to-end harness: spawns a real hub (real broker, real PostgreSQL) on port 0 with its
//! own database and topic prefix, and talks to it as an institution would.
//!
//! Environment (set by infra/test.sh): PASSERELLE_TEST_BOOTSTRAP (broker), PASSERELLE_TEST_PG
//! (PostgreSQL URL without database), PASSERELLE_TEST_PYTHON (a Python with confluent-kafka),
//! PASSERELLE_TANSU_BIN (the broker binary, for tests that run their own broker).

pub mod broker;
pub mod campaign;
pub mod logs;
pub mod postgres;
pub mod process;
pub mod topics;
pub mod workload;

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use passerelle::{Running, config::Config};
use passerelle_eventlog::{secrets::SecretKey, shredding::KeyStore, subject::SubjectKeys};
use passerelle_ingest::{
    client::{Credentials, connect},
    institutions::Institutions,
};
use tonic::transport::Channel;

pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `check`'s first `Some`, polled every 100 ms for up to 30 s.
pub async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> anyhow::Result<Option<T>>) -> anyhow::Result<T> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A hub started for one test.
pub struct TestHub {
    pub running: Running,
    pub config: Config,
    pub pepper: SecretKey,
    /// The hub's root keys directory (an erasure rotates the files in it).
    pub root_keys_dir: PathBuf,
    /// Development credentials of every institution of `infra/dev/institutions.toml`, plus
    /// `caf-999`, a certificate of the right CA for an institution the hub does not list.
    pub credentials_dir: PathBuf,
}

impl TestHub {
    /// A hub on the shared test broker.
    pub async fn spawn() -> anyhow::Result<Self> {
        Self::spawn_on(&env_or("PASSERELLE_TEST_BOOTSTRAP", "127.0.0.1:9092")).await
    }

    /// A hub on the given broker, with a fresh database and topic prefix.
    pub async fn spawn_on(bootstrap: &str) -> anyhow::Result<Self> {
        Self::spawn_with(bootstrap, passerelle::Services::ALL).await
    }

    /// A hub whose projector runs elsewhere (another process of the test).
    pub async fn spawn_without_projector() -> anyhow::Result<Self> {
        Self::spawn_with(
            &env_or("PASSERELLE_TEST_BOOTSTRAP", "127.0.0.1:9092"),
            passerelle::Services { projector: false },
        )
        .await
    }

    /// A hub without projector whose configuration `adjust` changes before it starts.
    pub async fn spawn_without_projector_configured(adjust: impl FnOnce(&mut Config)) -> anyhow::Result<Self> {
        Self::spawn_adjusted(
            &env_or("PASSERELLE_TEST_BOOTSTRAP", "127.0.0.1:9092"),
            passerelle::Services { projector: false },
            adjust,
        )
        .await
    }

    /// A hub on the shared test broker whose configuration `adjust` changes before it starts.
    pub async fn spawn_configured(adjust: impl FnOnce(&mut Config)) -> anyhow::Result<Self> {
        Self::spawn_adjusted(&env_or("PASSERELLE_TEST_BOOTSTRAP", "127.0.0.1:9092"), passerelle::Services::ALL, adjust)
            .await
    }

    async fn spawn_with(bootstrap: &str, services: passerelle::Services) -> anyhow::Result<Self> {
        Self::spawn_adjusted(bootstrap, services, |_| {}).await
    }

    async fn spawn_adjusted(
        bootstrap: &str,
        services: passerelle::Services,
        adjust: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Self> {
        let base = env_or("PASSERELLE_TEST_PG", "postgres://postgres@127.0.0.1:5432");
        Self::spawn_at(bootstrap, &base, services, adjust).await
    }

    /// A hub on the given broker and PostgreSQL (`base`: a URL without database, as the
    /// superuser), with a fresh database and topic prefix.
    pub async fn spawn_at(
        bootstrap: &str,
        base: &str,
        services: passerelle::Services,
        adjust: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Self> {
        logs::capture();
        let unique = uuid::Uuid::new_v4().simple().to_string();
        let database = format!("passerelle_test_{}", &unique[..16]);
        let admin = sqlx::PgPool::connect(&format!("{base}/postgres")).await.context("connecting to PostgreSQL")?;
        // The name is ours (hex digits only), not input.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{database}\""))).execute(&admin).await?;
        admin.close().await;

        let credentials_dir = std::env::temp_dir().join(format!("passerelle-pki-{unique}"));
        let institutions_file = repo_root().join("infra/dev/institutions.toml");
        let listed = std::fs::read_to_string(&institutions_file)?;
        let with_unlisted =
            format!("{listed}\n[[institution]]\nid = \"caf-999\"\nkind = \"CAF\"\norganisme = \"999\"\n");
        let institutions = Institutions::from_toml(&with_unlisted).map_err(anyhow::Error::msg)?;
        passerelle::pki::issue_dev_pki(&credentials_dir, &institutions)?;

        let pepper = SecretKey::generate();
        let root_keys_dir = credentials_dir.join("root-keys");
        let mut config = Config {
            database_url: format!("{}/{database}", base.replacen("//postgres@", "//passerelle_app@", 1)),
            database_owner_url: Some(format!("{base}/{database}")),
            grpc_listen: "127.0.0.1:0".parse()?,
            http_listen: "127.0.0.1:0".parse()?,
            ops_listen: "127.0.0.1:0".parse()?,
            api_grpc_listen: "127.0.0.1:0".parse()?,
            registry_listen: "127.0.0.1:0".parse()?,
            institutions_file,
            ..Config::default()
        };
        config.tls.cert_file = credentials_dir.join("server.pem");
        config.tls.key_file = credentials_dir.join("server.key");
        config.tls.client_ca_file = credentials_dir.join("ca.pem");
        config.api.jwks_file = credentials_dir.join("oidc-dev-jwks.json");
        config.api.habilitations_file = repo_root().join("infra/dev/habilitations.toml");
        config.web.assets_dir = repo_root().join("services/web/node_modules/@gouvfr/dsfr/dist");
        config.web.dev_signing_key_file = Some(credentials_dir.join("oidc-dev-key.der"));
        config.web.dev_jwks_file = Some(credentials_dir.join("oidc-dev-jwks.json"));
        config.web.dev_persons_file = Some(repo_root().join("infra/dev/persons.toml"));
        config.kafka.bootstrap_servers = bootstrap.to_owned();
        config.kafka.topic_prefix = format!("t{}.", &unique[..12]);
        config.kafka.partitions = 3;
        config.secrets.pepper_hex = Some(pepper.to_hex());
        config.secrets.root_keys_dir = Some(root_keys_dir.clone());
        adjust(&mut config);
        let running = passerelle::start_services(&config, services).await?;
        Ok(Self { running, config, pepper, root_keys_dir, credentials_dir })
    }

    /// The hub's gRPC endpoint, as institutions reach it.
    pub fn endpoint(&self) -> String {
        format!("https://localhost:{}", self.running.grpc_addr.port())
    }

    pub fn credentials(&self, institution: &str) -> anyhow::Result<Credentials> {
        Credentials::from_dir(&self.credentials_dir, institution).map_err(anyhow::Error::msg)
    }

    /// A mutual-TLS channel to the hub, as `institution`.
    pub async fn channel_as(&self, institution: &str) -> anyhow::Result<Channel> {
        Ok(connect(&self.endpoint(), &self.credentials(institution)?).await?)
    }

    /// A TLS channel that trusts the hub but presents no client certificate.
    pub async fn anonymous_channel(&self) -> anyhow::Result<Channel> {
        let ca = std::fs::read(self.credentials_dir.join("ca.pem"))?;
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca))
            .domain_name("localhost");
        Ok(tonic::transport::Endpoint::from_shared(self.endpoint())?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy())
    }

    /// A TLS channel to the API's gRPC face (agents present a token, no client certificate).
    pub fn api_channel(&self) -> anyhow::Result<Channel> {
        let ca = std::fs::read(self.credentials_dir.join("ca.pem"))?;
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca))
            .domain_name("localhost");
        Ok(tonic::transport::Endpoint::from_shared(format!("https://{}", self.running.api_grpc_addr))?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy())
    }

    /// Writes a record no decoder can read straight on a family's topic (a poison record, for
    /// the dead-letter paths), keyed by `key`.
    pub async fn publish_poison(&self, family: passerelle_domain::event::Family, key: &str) -> anyhow::Result<()> {
        let producer: rdkafka::producer::FutureProducer =
            rdkafka::ClientConfig::new().set("bootstrap.servers", &self.config.kafka.bootstrap_servers).create()?;
        producer
            .send(
                rdkafka::producer::FutureRecord::to(&self.topic(family)).key(key).payload(&b"not avro"[..]),
                Duration::from_secs(5),
            )
            .await
            .map_err(|(e, _)| e)?;
        Ok(())
    }

    /// This hub's configuration as a file another `passerelle` process can run with (ports 0).
    pub fn config_file(&self) -> anyhow::Result<PathBuf> {
        let path = self.credentials_dir.join("passerelle.toml");
        std::fs::write(&path, toml::to_string(&self.config)?)?;
        Ok(path)
    }

    pub fn subject_keys(&self) -> SubjectKeys {
        SubjectKeys::new(self.pepper.clone())
    }

    pub fn key_store(&self) -> KeyStore {
        KeyStore::new(
            self.running.pool.clone(),
            std::sync::Arc::new(
                passerelle_eventlog::shredding::RootKeys::open(&self.root_keys_dir).expect("the test hub's root keys"),
            ),
        )
    }

    /// Opens a record of a family's topic as a consumer holding the hub's key store would: the
    /// writer schema by the id in its framing, the record opened with its subject's data key,
    /// its content decoded with the version it names.
    pub async fn open_record(
        &self,
        family: passerelle_domain::event::Family,
        value: &[u8],
    ) -> anyhow::Result<passerelle_eventlog::codec::LoggedEvent> {
        use passerelle_eventlog::{framing, registry::Registry, schemas, sealed};
        let (id, datum) = framing::unframe(value)?;
        let topics = schemas::Topics::new(self.config.kafka.topic_prefix.clone());
        let writer = Registry::new(self.running.pool.clone(), topics).schema_by_id(id).await?;
        anyhow::ensure!(sealed::is_sealed(&writer), "the hub writes sealed records");
        let record = sealed::read(datum, &writer)?;
        let key = self.key_store().key_by_id(record.sealed.key_id).await?;
        let (content, schema) = sealed::open(schemas::Stream::Facts(family), &record, &key)?;
        Ok(passerelle_eventlog::codec::decode(family, &content, &schema)?)
    }

    /// The key of the fact ids of an institution's files (development credentials).
    pub fn id_key(&self, institution: &str) -> anyhow::Result<passerelle_importers::IdKey> {
        passerelle_importers::IdKey::from_file(&self.credentials_dir.join(format!("{institution}.idkey")))
    }

    /// The event id of a record of a family's topic (opened with its subject's key).
    pub async fn event_id_of(&self, family: passerelle_domain::event::Family, value: &[u8]) -> Option<String> {
        self.open_record(family, value).await.ok().map(|event| event.envelope.event_id.to_string())
    }

    /// The event ids on a family's topic, in partition and offset order.
    pub async fn event_ids_on(&self, family: passerelle_domain::event::Family) -> anyhow::Result<Vec<String>> {
        let records = tokio::task::block_in_place(|| {
            topics::read_all(&self.config.kafka.bootstrap_servers, &self.topic(family))
        })?;
        let mut ids = Vec::with_capacity(records.len());
        for record in records {
            ids.push(self.event_id_of(family, &record.value).await.unwrap_or_default());
        }
        Ok(ids)
    }

    /// The personal data sealed in an event, opened with its subject's data key.
    pub async fn open_personal(
        &self,
        event: &passerelle_eventlog::codec::LoggedEvent,
    ) -> anyhow::Result<passerelle_domain::event::PersonalData> {
        let Some(sealed) = &event.personal else { return Ok(Default::default()) };
        let associated = passerelle_eventlog::shredding::associated_data(
            "personal",
            event.family.label(),
            &event.envelope.source.institution,
            sealed.key_id,
            event.envelope.event_id.as_str(),
        );
        Ok(serde_json::from_slice(&self.key_store().key_by_id(sealed.key_id).await?.open(sealed, &associated)?)?)
    }

    pub fn registry_url(&self) -> String {
        format!("http://{}", self.running.registry_addr)
    }

    pub fn topic(&self, family: passerelle_domain::event::Family) -> String {
        self.running.topics.topic(family)
    }
}
