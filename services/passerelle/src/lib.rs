//! The Passerelle hub as a library: start any or all services from a configuration. The binary
//! (`main.rs`) only parses the command line; tests start the same services on port 0.

pub mod config;
pub mod demo;
pub mod pki;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{Router, http::StatusCode, routing::get};
use passerelle_domain::event::Family;
use passerelle_eventlog::{
    kafka::{self, Publisher},
    registry::Registry,
    schemas::Topics,
    shredding::KeyStore,
    subject::SubjectKeys,
};
use passerelle_ingest::{
    hub::IngestHub,
    institutions::Institutions,
    proto::{
        allocataire_ingest_server::AllocataireIngestServer,
        demandeur_emploi_ingest_server::DemandeurEmploiIngestServer,
        orientation_ingest_server::OrientationIngestServer, parcours_ingest_server::ParcoursIngestServer,
    },
    service::{AllocataireService, DemandeurEmploiService, OrientationService, ParcoursService},
};
use sqlx::{PgPool, postgres::PgPoolOptions};
use tokio::{net::TcpListener, sync::watch, task::JoinSet};
use tokio_stream::wrappers::TcpListenerStream;

use crate::config::Config;

/// A running hub: the addresses it serves, and a handle to stop it.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub api_grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    /// The operators' listener: `/metrics`, `/readyz`, `/healthz`.
    pub ops_addr: SocketAddr,
    /// Where agents open the web console.
    pub console_url: String,
    pub registry_addr: SocketAddr,
    pub pool: PgPool,
    pub topics: Topics,
    publisher: Arc<Publisher>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<anyhow::Result<()>>,
}

impl Running {
    /// Stops accepting calls, lets in-flight ones finish, flushes the producer.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.shutdown.send_replace(true);
        while let Some(joined) = self.tasks.join_next().await {
            joined.context("a service task panicked")??;
        }
        let publisher = self.publisher.clone();
        tokio::task::spawn_blocking(move || publisher.flush(Duration::from_secs(5))).await?;
        Ok(())
    }

    /// Waits until a service stops on its own (an error) or the shutdown is requested.
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        if let Some(joined) = self.tasks.join_next().await {
            joined.context("a service task panicked")??;
        }
        Ok(())
    }

    /// The lines a user needs: where each service listens.
    pub fn addresses(&self) -> String {
        format!(
            "gRPC ingestion  https://{}  (mutual TLS; reflection and grpc.health.v1 enabled)\n\
             API (REST)      http://{}/api/v1  (OpenAPI: /api/v1/openapi.json; tokens: passerelle dev token --agent UID)\n\
             API (gRPC)      https://{}  (passerelle.dossier.v1.DossierService; reflection enabled)\n\
             console         {}  (web console for agents: sign in with ProConnect; persons: /mon-espace)\n\
             ops             http://{}  (/metrics, /readyz, /healthz: keep it off the public network)\n\
             schema registry http://{}  (Confluent read API: /subjects, /schemas/ids/{{id}})\n\
             projector       dossier read models in PostgreSQL (consumer group passerelle-projector-dossier)",
            self.grpc_addr, self.http_addr, self.api_grpc_addr, self.console_url, self.ops_addr, self.registry_addr
        )
    }
}

/// Connects to PostgreSQL, applies the migrations, and returns the application's pool, whose
/// connections read the read models from their schema (`search_path readmodel, public`).
pub async fn connect_database(url: &str) -> anyhow::Result<PgPool> {
    connect_as(url, url).await
}

/// Migrations as the owner role, then the application's pool as the application's role.
pub async fn connect(config: &Config) -> anyhow::Result<PgPool> {
    connect_as(config.owner_url(), &config.database_url).await
}

async fn connect_as(owner_url: &str, url: &str) -> anyhow::Result<PgPool> {
    let unreachable = "cannot reach PostgreSQL with database_owner_url (is the server running, and the database created? infra/db-setup.sh creates it)";
    // Migrations on a connection with the default search_path, so that sqlx's bookkeeping
    // table stays in public.
    let migrations = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect(owner_url)
        .await
        .context(unreachable)?;
    passerelle_eventlog::migrator().run(&migrations).await.context("event log migrations failed")?;
    passerelle_readmodel::migrator().run(&migrations).await.context("read model migrations failed")?;
    passerelle_api::migrator().run(&migrations).await.context("journal migrations failed")?;
    passerelle_web::migrator().run(&migrations).await.context("console migrations failed")?;
    migrations.close().await;
    connect_with_search_path(url, passerelle_readmodel::SCHEMA).await
}

/// The connections of a hub process's pool (API, ingestion and projector workers share them).
pub const POOL_CONNECTIONS: u32 = 16;

/// A pool whose connections see the read models of `schema` first.
pub async fn connect_with_search_path(url: &str, schema: &'static str) -> anyhow::Result<PgPool> {
    sized_pool(url, schema, POOL_CONNECTIONS).await
}

/// The same, with `size` connections at most.
pub async fn sized_pool(url: &str, schema: &'static str, size: u32) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(size.max(1))
        .acquire_timeout(Duration::from_secs(5))
        .after_connect(move |connection, _| {
            Box::pin(async move {
                sqlx::Executor::execute(
                    &mut *connection,
                    sqlx::AssertSqlSafe(format!("SET search_path TO {schema}, public")),
                )
                .await?;
                Ok(())
            })
        })
        .connect(url)
        .await
        .context("cannot reach PostgreSQL with database_url")
}

/// Which services a process runs besides ingestion, the registry and the HTTP endpoints.
#[derive(Debug, Clone, Copy)]
pub struct Services {
    pub projector: bool,
}

impl Services {
    pub const ALL: Services = Services { projector: true };
}

/// Starts the whole hub: ingestion, schema registry, HTTP endpoints and the projector.
pub async fn start(config: &Config) -> anyhow::Result<Running> {
    start_services(config, Services::ALL).await
}

/// Starts ingestion, the schema registry and the HTTP endpoints, and the projector if asked.
pub async fn start_services(config: &Config, services: Services) -> anyhow::Result<Running> {
    let pepper = config.secrets.pepper()?;
    let roots = config.secrets.root_keys()?;
    let institutions = Institutions::load(&config.institutions_file).map_err(anyhow::Error::msg)?;
    let pool = connect(config).await?;
    let topics = Topics::new(config.kafka.topic_prefix.clone());
    let registry = Registry::new(pool.clone(), topics.clone());
    registry.register_committed().await.context("registering the committed schemas")?;
    let key_store = KeyStore::new(pool.clone(), roots.clone());
    key_store.prepare().await.context("preparing the key hierarchy")?;

    let mut all_topics: Vec<String> = Family::ALL.iter().map(|family| topics.topic(*family)).collect();
    all_topics.push(topics.identity());
    all_topics.push(topics.affectation());
    all_topics.push(topics.dead_letters());
    kafka::ensure_topics(&config.kafka, &all_topics).await.with_context(|| {
        format!(
            "cannot create the topics on the Kafka broker at {} (is it running? infra/broker.sh starts one)",
            config.kafka.bootstrap_servers
        )
    })?;

    let publisher = Arc::new(Publisher::new(config.kafka.clone())?);
    let hub = Arc::new(
        IngestHub::new(
            SubjectKeys::new(pepper),
            institutions,
            key_store.clone(),
            &registry,
            publisher.clone(),
            topics.clone(),
            pool.clone(),
        )
        .await?
        .with_limits(config.ingest.limits),
    );

    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();

    let grpc_listener = TcpListener::bind(config.grpc_listen)
        .await
        .with_context(|| format!("cannot listen on {} for gRPC (grpc_listen)", config.grpc_listen))?;
    let grpc_addr = grpc_listener.local_addr()?;
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<AllocataireIngestServer<AllocataireService>>().await;
    health_reporter.set_serving::<DemandeurEmploiIngestServer<DemandeurEmploiService>>().await;
    health_reporter.set_serving::<OrientationIngestServer<OrientationService>>().await;
    health_reporter.set_serving::<ParcoursIngestServer<ParcoursService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(passerelle_ingest::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path).with_context(|| {
            format!(
                "cannot read the {what} {} (tls.* in the configuration; infra/dev-pki.sh issues development ones)",
                path.display()
            )
        })
    };
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(
            read(&config.tls.cert_file, "server certificate")?,
            read(&config.tls.key_file, "server key")?,
        ))
        .client_ca_root(tonic::transport::Certificate::from_pem(read(&config.tls.client_ca_file, "institutions' CA")?));
    // One event per message: a larger one is refused before it is read (OUT_OF_RANGE, naming
    // the size and the limit).
    let message_bytes = config.ingest.limits.message_bytes;
    let grpc = tonic::transport::Server::builder()
        .tls_config(tls)
        .context("TLS configuration of the gRPC server")?
        .add_service(health_service)
        .add_service(reflection)
        .add_service(
            AllocataireIngestServer::new(AllocataireService::new(hub.clone())).max_decoding_message_size(message_bytes),
        )
        .add_service(
            DemandeurEmploiIngestServer::new(DemandeurEmploiService::new(hub.clone()))
                .max_decoding_message_size(message_bytes),
        )
        .add_service(
            OrientationIngestServer::new(OrientationService::new(hub.clone())).max_decoding_message_size(message_bytes),
        )
        .add_service(
            ParcoursIngestServer::new(ParcoursService::new(hub.clone())).max_decoding_message_size(message_bytes),
        );
    let mut grpc_shutdown = shutdown_rx.clone();
    tasks.spawn(async move {
        grpc.serve_with_incoming_shutdown(TcpListenerStream::new(grpc_listener), async move {
            drop(grpc_shutdown.wait_for(|stop| *stop).await);
        })
        .await
        .context("gRPC server")
    });

    let http_listener = TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("cannot listen on {} for HTTP (http_listen)", config.http_listen))?;
    let http_addr = http_listener.local_addr()?;
    let ready_pool = pool.clone();
    let ready_publisher = publisher.clone();
    // The API and the console read through a pool of their own: a flood of reads waits for
    // these connections, never for ingestion's or the projector's.
    let api_pool = sized_pool(&config.database_url, passerelle_readmodel::SCHEMA, config.api.pool_size).await?;
    let api = passerelle_api::service::Api::new(
        api_pool.clone(),
        passerelle_api::habilitations::Habilitations::load(&config.api.habilitations_file)
            .map_err(anyhow::Error::msg)?,
        passerelle_api::auth::Verifier::from_file(&config.api.jwks_file, &config.api.issuer, &config.api.audience)
            .map_err(|e| anyhow::anyhow!("{e} (api.jwks_file; infra/dev-pki.sh writes a development key set)"))?,
        SubjectKeys::new(config.secrets.pepper()?),
        KeyStore::new(api_pool.clone(), roots.clone()),
    )
    .with_limits(&config.api.limits);
    let api = Arc::new(api);
    // The API's and ingestion's series exist from the start (at zero), before their first call.
    passerelle_api::metrics::metrics();
    passerelle_ingest::metrics::metrics();
    let forgetting = api.clone();
    let forgetting_ingest = hub.clone();
    let mut forget_shutdown = shutdown_rx.clone();
    tasks.spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = forget_shutdown.wait_for(|stop| *stop) => return Ok(()),
                _ = every.tick() => {
                    forgetting.forget_idle_limits();
                    forgetting_ingest.limits.forget_idle();
                }
            }
        }
    });
    let api_grpc_listener = TcpListener::bind(config.api_grpc_listen).await.with_context(|| {
        format!("cannot listen on {} for the API's gRPC face (api_grpc_listen)", config.api_grpc_listen)
    })?;
    let api_grpc_addr = api_grpc_listener.local_addr()?;
    let (api_health, api_health_service) = tonic_health::server::health_reporter();
    api_health
        .set_serving::<passerelle_api::grpc::proto::dossier_service_server::DossierServiceServer<passerelle_api::grpc::DossierGrpc>>()
        .await;
    let api_reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(passerelle_api::grpc::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let api_tls = tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(
        read(&config.tls.cert_file, "server certificate")?,
        read(&config.tls.key_file, "server key")?,
    ));
    let api_grpc = tonic::transport::Server::builder()
        .tls_config(api_tls)
        .context("TLS configuration of the API's gRPC server")?
        .add_service(api_health_service)
        .add_service(api_reflection)
        .add_service(passerelle_api::grpc::proto::dossier_service_server::DossierServiceServer::new(
            passerelle_api::grpc::DossierGrpc::new(api.clone()),
        ));
    let mut api_grpc_shutdown = shutdown_rx.clone();
    tasks.spawn(async move {
        api_grpc
            .serve_with_incoming_shutdown(TcpListenerStream::new(api_grpc_listener), async move {
                drop(api_grpc_shutdown.wait_for(|stop| *stop).await);
            })
            .await
            .context("API gRPC server")
    });
    // Served over TLS, the console's own address is https (redirect URIs, Secure cookies, HSTS).
    let mut web = config.web.clone();
    if config.http_tls.is_some() && web.public_url.is_none() {
        web.public_url = Some(format!("https://{http_addr}"));
    }
    let console = passerelle_web::router(&web, http_addr, api.clone(), api_pool.clone(), Some(hub.clone()))
        .map_err(|e| anyhow::anyhow!("web console: {e}"))?;
    let http = passerelle_api::rest::router(api)
        .merge(console)
        .route("/healthz", get(|| async { "ok" }))
        .layer(axum::middleware::from_fn_with_state(
            Arc::<[std::net::IpAddr]>::from(config.api.trusted_proxies.as_slice()),
            passerelle_api::limits::behind_proxies,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(config.api.limits.body_bytes))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(config.api.limits.request_seconds.max(1)),
        ));
    match &config.http_tls {
        None => tasks.spawn(serve_http(http_listener, http, shutdown_rx.clone(), "HTTP server")),
        Some(tls) => tasks.spawn(serve_https(http_listener, http, https_config(tls)?, shutdown_rx.clone())),
    };

    // The operators' listener, apart from the public one: metrics and readiness.
    let ops_listener = TcpListener::bind(config.ops_listen)
        .await
        .with_context(|| format!("cannot listen on {} for the operators' endpoints (ops_listen)", config.ops_listen))?;
    let ops_addr = ops_listener.local_addr()?;
    let ops = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let pool = ready_pool.clone();
                let publisher = ready_publisher.clone();
                async move { readiness(&pool, &publisher).await }
            }),
        )
        .route("/metrics", get(|| async { passerelle_telemetry::render() }));
    tasks.spawn(serve_http(ops_listener, ops, shutdown_rx.clone(), "operators' listener"));

    let registry_listener = TcpListener::bind(config.registry_listen).await.with_context(|| {
        format!("cannot listen on {} for the schema registry (registry_listen)", config.registry_listen)
    })?;
    let registry_addr = registry_listener.local_addr()?;
    let shutdown_rx_projector = shutdown_rx.clone();
    tasks.spawn(serve_http(registry_listener, registry.router(), shutdown_rx, "schema registry"));

    if services.projector {
        let applier = Arc::new(dossier_applier(registry.clone(), key_store.clone(), &topics));
        let settings = passerelle_projector::consumer::WorkerSettings {
            bootstrap_servers: config.kafka.bootstrap_servers.clone(),
            group_id: format!("{}{}", config.kafka.topic_prefix, config.projector_group),
            topics: projected_topics(&topics),
            dead_letter_topic: topics.dead_letters(),
            max_batch: config.projector_max_batch.max(1),
            max_wait: Duration::from_millis(50),
            rejoin_after: Duration::from_secs(config.projector_rejoin_after_seconds.max(5)),
        };
        for _ in 0..config.projector_workers.max(1) {
            let (settings, applier) = (settings.clone(), applier.clone());
            let worker_pool = pool.clone();
            let worker_shutdown = shutdown_rx_projector.clone();
            tasks.spawn(async move {
                let outcome =
                    passerelle_projector::consumer::run(settings, applier, worker_pool, worker_shutdown).await;
                if let Err(error) = &outcome {
                    tracing::error!(error = %error, "the projector stopped; the hub stops with it");
                }
                outcome.context("projector")
            });
        }
    }

    // Every process measures the projection's lag (from the broker and the database only), so a
    // projector that stopped shows in the others' /metrics.
    {
        let gauge_pool = pool.clone();
        let mut gauge_shutdown = shutdown_rx_projector.clone();
        let lag_client: Arc<rdkafka::consumer::BaseConsumer> = Arc::new(
            rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &config.kafka.bootstrap_servers)
                .set("group.id", format!("{}passerelle-lag-probe", config.kafka.topic_prefix))
                .create()?,
        );
        let lag_topics = projected_topics(&topics);
        let probe = Duration::from_secs(config.lag_probe_seconds.max(1));
        let unlinked_every = (60 / probe.as_secs()).max(1);
        tasks.spawn(async move {
            // Lag every probe (15 s by default), the unlinked persons every minute; off the
            // projector's loop.
            let mut every = tokio::time::interval(probe);
            let mut ticks = 0u64;
            loop {
                tokio::select! {
                    _ = gauge_shutdown.wait_for(|stop| *stop) => return Ok(()),
                    _ = every.tick() => {}
                }
                if let Err(error) =
                    passerelle_projector::metrics::refresh_lag(&gauge_pool, lag_client.clone(), "dossier", &lag_topics)
                        .await
                {
                    tracing::warn!(error = %error, "projector lag not measured");
                }
                if ticks.is_multiple_of(unlinked_every)
                    && let Err(error) = passerelle_projector::metrics::refresh_unlinked(&gauge_pool).await
                {
                    tracing::warn!(error = %error, "unlinked persons gauge not refreshed");
                }
                ticks += 1;
            }
        });
    }
    // Planner statistics of the tables a catch-up, a rebuild or a first ingest grows faster
    // than autovacuum looks (readmodel::statistics); ANALYZE is the tables' owner's to run.
    let owner = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy(config.owner_url())?;
    tasks.spawn(keep_statistics(owner, shutdown_rx_projector.clone()));
    if services.projector {
        tasks.spawn(retention_schedule(pool.clone(), key_store.clone(), config.retention_days, shutdown_rx_projector));
    }

    let console_url = format!(
        "{}/console",
        config
            .web
            .public_url
            .clone()
            .unwrap_or_else(|| format!("{}://{http_addr}", if config.http_tls.is_some() { "https" } else { "http" }))
            .trim_end_matches('/')
    );
    Ok(Running {
        grpc_addr,
        api_grpc_addr,
        http_addr,
        ops_addr,
        console_url,
        registry_addr,
        pool,
        topics,
        publisher,
        shutdown,
        tasks,
    })
}

/// The applier of the dossier projection.
pub fn dossier_applier(registry: Registry, keys: KeyStore, topics: &Topics) -> passerelle_projector::apply::Applier {
    let families = Family::ALL.iter().map(|family| (topics.topic(*family), *family)).collect();
    passerelle_projector::apply::Applier::new("dossier", registry, keys, families)
        .with_identity_topic(topics.identity())
        .with_affectation_topic(topics.affectation())
}

/// The topics the dossier projection consumes: every family's facts, the identity decisions and
/// ops' decisions on foyers waiting "à affecter".
pub fn projected_topics(topics: &Topics) -> Vec<String> {
    let mut all: Vec<String> = Family::ALL.iter().map(|family| topics.topic(*family)).collect();
    all.push(topics.identity());
    all.push(topics.affectation());
    all
}

/// A development access token for `agent` (`passerelle dev token`): its siret from the
/// habilitations file, the configured issuer and audience, signed with the development key.
pub fn dev_token(config: &Config, agent: &str, key: &std::path::Path, ttl_seconds: i64) -> anyhow::Result<String> {
    let habilitations = passerelle_api::habilitations::Habilitations::load(&config.api.habilitations_file)
        .map_err(anyhow::Error::msg)?;
    let listed = habilitations
        .agent(None, agent)
        .ok_or_else(|| anyhow::anyhow!("no agent {agent:?} in {}", config.api.habilitations_file.display()))?;
    let der = std::fs::read(key).with_context(|| {
        format!("cannot read the development signing key {} (infra/dev-pki.sh writes it)", key.display())
    })?;
    let now = chrono::Utc::now().timestamp();
    let claims = passerelle_api::auth::Claims {
        iss: config.api.issuer.clone(),
        aud: config.api.audience.clone(),
        sub: agent.to_owned(),
        exp: now + ttl_seconds,
        iat: now,
        uid: agent.to_owned(),
        email: format!("{agent}@agents.invalid"),
        siret: listed.organisation.siret.clone(),
        idp_id: listed.idp_id.clone(),
    };
    passerelle_api::auth::mint(&der, &claims).map_err(anyhow::Error::msg)
}

/// The projections `passerelle projections rebuild` knows.
pub const PROJECTIONS: &[&str] = &["dossier"];

/// Rebuilds a projection from the beginning of the topics into fresh tables, swapped in
/// atomically while the current ones keep serving (`passerelle projections rebuild`).
pub async fn rebuild_projection(
    config: &Config,
    name: &str,
    progress: impl FnMut(passerelle_projector::rebuild::Progress),
) -> anyhow::Result<passerelle_projector::rebuild::Rebuilt> {
    if !PROJECTIONS.contains(&name) {
        anyhow::bail!("unknown projection {name:?}; the projections are: {}", PROJECTIONS.join(", "));
    }
    let live = connect(config).await?;
    let owner_url = config.owner_url();
    let admin = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(5))
        .connect(owner_url)
        .await
        .context("cannot reach PostgreSQL with database_url")?;
    passerelle_projector::rebuild::prepare(&admin).await?;
    let pool = connect_with_search_path(owner_url, passerelle_projector::rebuild::REBUILD_SCHEMA).await?;
    let topics = Topics::new(config.kafka.topic_prefix.clone());
    let registry = Registry::new(live.clone(), topics.clone());
    registry.register_committed().await?;
    let applier = dossier_applier(registry, key_store(config, &live).await?, &topics);
    let rebuilt = passerelle_projector::rebuild::run(
        &admin,
        &pool,
        &applier,
        &config.kafka.bootstrap_servers,
        &projected_topics(&topics),
        passerelle_readmodel::SCHEMA,
        progress,
    )
    .await
    .context("rebuild failed; the current read models are untouched")?;
    pool.close().await;
    Ok(rebuilt)
}

/// Publishes a human identity decision on the identity topic (`passerelle identite resolve`);
/// the projection applies it, as every rebuild will.
pub async fn publish_identity_decision(
    config: &Config,
    decision: &passerelle_eventlog::identity::IdentityDecision,
) -> anyhow::Result<()> {
    let pool = connect(config).await?;
    let topics = Topics::new(config.kafka.topic_prefix.clone());
    let registry = Registry::new(pool.clone(), topics.clone());
    registry.register_committed().await?;
    // Sealed whole under the data key of the subject it decides, like any fact about them.
    let stream = passerelle_eventlog::schemas::Stream::Identity;
    let writer = registry.writer_of(stream).await?;
    let keys = key_store(config, &pool).await?;
    let key = keys.key_for_subject(&passerelle_domain::event::SubjectKey(decision.subject_key.clone())).await?;
    // The holder and the claimant are named under their own keys: erasing either leaves the
    // decision unable to say who they were.
    let holder = keys.key_for_subject(&passerelle_domain::event::SubjectKey(decision.holder_key.clone())).await?;
    let claimant = keys.key_for_subject(&passerelle_domain::event::SubjectKey(decision.claimant_key.clone())).await?;
    let mut named = decision.clone();
    named.holder_key = passerelle_eventlog::sealed::seal_name(stream, &holder, &decision.holder_key)?;
    named.claimant_key = passerelle_eventlog::sealed::seal_name(stream, &claimant, &decision.claimant_key)?;
    let content = passerelle_eventlog::identity::encode(
        &named,
        &*passerelle_eventlog::schemas::committed(stream, passerelle_eventlog::schemas::CONTENT_VERSION)?,
    )?;
    let datum = passerelle_eventlog::sealed::seal(stream, &key, &content, &writer.schema)?;
    let value = passerelle_eventlog::framing::frame(writer.id, &datum);
    publish_decision(config, &topics.identity(), &key.key_id.to_string(), &value).await
}

/// Publishes a human decision's framed `value`, acknowledged by the broker or an error saying
/// nothing changed.
async fn publish_decision(config: &Config, topic: &str, key: &str, value: &[u8]) -> anyhow::Result<()> {
    let publisher = Arc::new(Publisher::new(config.kafka.clone())?);
    publisher.publish(topic, key, value, passerelle_eventlog::kafka::Headers::new()).await.map_err(|error| {
        anyhow::anyhow!(
            "the decision was not published ({error}); nothing changed. Is the broker at {} running?",
            config.kafka.bootstrap_servers
        )
    })?;
    Ok(())
}

/// Publishes ops' decision on the authority of a foyer waiting "à affecter"
/// (`passerelle territoires affecter`); the projection applies it, as every rebuild will. The
/// decision names the foyer by its keyed hash and the agent by their uid: not sealed.
pub async fn publish_territory_assignment(
    config: &Config,
    decision: &passerelle_eventlog::affectation::TerritoryAssignment,
) -> anyhow::Result<()> {
    let pool = connect(config).await?;
    let topics = Topics::new(config.kafka.topic_prefix.clone());
    let registry = Registry::new(pool.clone(), topics.clone());
    registry.register_committed().await?;
    let writer = registry.writer_of(passerelle_eventlog::schemas::Stream::Affectation).await?;
    let datum = passerelle_eventlog::affectation::encode(decision, &writer.schema)?;
    let value = passerelle_eventlog::framing::frame(writer.id, &datum);
    publish_decision(config, &topics.affectation(), &decision.household_key, &value).await
}

/// The key store of the hub's database, its hierarchy prepared.
pub async fn key_store(config: &Config, pool: &PgPool) -> anyhow::Result<KeyStore> {
    let keys = KeyStore::new(pool.clone(), config.secrets.root_keys()?);
    keys.prepare().await.context("preparing the key hierarchy")?;
    Ok(keys)
}

/// Replays a dead letter of the dossier projection (`passerelle dlq replay`).
pub async fn replay_dead_letter(
    config: &Config,
    dead_letter_id: i64,
) -> anyhow::Result<passerelle_projector::dlq::Replayed> {
    let pool = connect(config).await?;
    let topics = Topics::new(config.kafka.topic_prefix.clone());
    let applier =
        dossier_applier(Registry::new(pool.clone(), topics.clone()), key_store(config, &pool).await?, &topics);
    Ok(passerelle_projector::dlq::replay(&pool, &applier, &config.kafka.bootstrap_servers, dead_letter_id).await?)
}

/// Every two seconds, analyzes the tables that grew by half since their last analyze.
async fn keep_statistics(owner: PgPool, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let mut every = tokio::time::interval(Duration::from_secs(2));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
            _ = every.tick() => {}
        }
        match passerelle_readmodel::statistics::analyze_grown(&owner).await {
            Ok(analyzed) => {
                failing = false;
                if !analyzed.is_empty() {
                    tracing::debug!(tables = ?analyzed, "planner statistics refreshed");
                }
            }
            // The database restarting, or the owner's role unusable: the planner keeps older
            // statistics and autovacuum still refreshes them; said once, not a stop.
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(
                    error = %error,
                    "planner statistics of fast-growing tables not refreshed (database_owner_url); autovacuum still refreshes them, more slowly"
                );
            }
            Err(error) => tracing::debug!(error = %error, "planner statistics not refreshed"),
        }
    }
}

/// Runs the retention job every day: persons without contact for `days` are erased, and access
/// journal entries older than one year are purged.
async fn retention_schedule(
    pool: PgPool,
    keys: KeyStore,
    days: i64,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut daily = tokio::time::interval(Duration::from_secs(24 * 3600));
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
            _ = daily.tick() => {}
        }
        let cutoff = chrono::Utc::now() - chrono::Duration::days(days);
        match passerelle_projector::erase::retention(&pool, &keys, cutoff).await {
            Ok(erased) => tracing::info!(erased, days, "retention job done"),
            Err(error) => tracing::error!(error = %error, "retention job failed; it runs again tomorrow"),
        }
        // The access journal is kept one year; this purge is its only deletion.
        match passerelle_api::journal::purge_expired(&pool).await {
            Ok(purged) => tracing::info!(purged, "access journal purge done (entries older than one year)"),
            Err(error) => tracing::error!(error = %error, "access journal purge failed; it runs again tomorrow"),
        }
    }
}

async fn serve_http(
    listener: TcpListener,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
    name: &'static str,
) -> anyhow::Result<()> {
    // The peer's address reaches the handlers (per-address limits of anonymous calls).
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move {
            drop(shutdown.wait_for(|stop| *stop).await);
        })
        .await
        .context(name)
}

/// The HTTPS listener's TLS: the certificate chain and key of `http_tls`, TLS 1.2 and 1.3 with
/// rustls' safe defaults (ring), HTTP/2 and HTTP/1.1 by ALPN.
fn https_config(tls: &config::HttpTlsConfig) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certificates = CertificateDer::pem_file_iter(&tls.cert_file)
        .and_then(|certificates| certificates.collect::<Result<Vec<_>, _>>())
        .with_context(|| {
            format!("cannot read the HTTPS certificate chain {} (http_tls.cert_file)", tls.cert_file.display())
        })?;
    anyhow::ensure!(!certificates.is_empty(), "no certificate in {} (http_tls.cert_file)", tls.cert_file.display());
    let key = PrivateKeyDer::from_pem_file(&tls.key_file)
        .with_context(|| format!("cannot read the HTTPS key {} (http_tls.key_file)", tls.key_file.display()))?;
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("TLS versions of the HTTPS listener")?
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .context("the HTTPS certificate and key do not go together (http_tls)")?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}

/// Serves `router` over TLS on `listener` until the shutdown, then lets requests in flight end
/// (10 s at most).
async fn serve_https(
    listener: TcpListener,
    router: Router,
    tls: Arc<rustls::ServerConfig>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let handle = axum_server::Handle::new();
    let stopping = handle.clone();
    tokio::spawn(async move {
        drop(shutdown.wait_for(|stop| *stop).await);
        stopping.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    axum_server::from_tcp_rustls(listener.into_std()?, axum_server::tls_rustls::RustlsConfig::from_config(tls))?
        .handle(handle)
        .serve(router.into_make_service_with_connect_info::<SocketAddr>())
        .await
        .context("HTTPS server")
}

/// Ready when the database answers and the broker's metadata can be fetched.
/// Ready: the database answers with every migration of this build applied, and the broker
/// answers a metadata request.
async fn readiness(pool: &PgPool, publisher: &Arc<Publisher>) -> (StatusCode, &'static str) {
    // The answer names the part that is not ready, never an error's text (which may carry a
    // host, a user or a query); the log line has the detail.
    let not_ready = |part: &'static str, detail: String| {
        tracing::warn!(part, detail = %detail, "not ready");
        (StatusCode::SERVICE_UNAVAILABLE, part)
    };
    let applied: Vec<(i64,)> =
        match sqlx::query_as("SELECT version FROM public._sqlx_migrations WHERE success").fetch_all(pool).await {
            Ok(applied) => applied,
            Err(error) => return not_ready("not ready: database unreachable", error.to_string()),
        };
    // The versions this build expects, computed once (readiness is polled).
    static EXPECTED: std::sync::OnceLock<Vec<i64>> = std::sync::OnceLock::new();
    let expected = EXPECTED.get_or_init(|| {
        [
            passerelle_eventlog::migrator(),
            passerelle_readmodel::migrator(),
            passerelle_api::migrator(),
            passerelle_web::migrator(),
        ]
        .iter()
        .flat_map(|migrator| migrator.iter().map(|m| m.version).collect::<Vec<_>>())
        .collect()
    });
    let missing: Vec<i64> =
        expected.iter().copied().filter(|version| !applied.iter().any(|(v,)| v == version)).collect();
    if !missing.is_empty() {
        return not_ready("not ready: migrations not applied", format!("{missing:?}"));
    }
    let publisher = publisher.clone();
    let broker = tokio::task::spawn_blocking(move || publisher.broker_reachable(Duration::from_secs(2))).await;
    match broker {
        Ok(Ok(())) => (StatusCode::OK, "ready"),
        Ok(Err(error)) => not_ready("not ready: broker unreachable", error.to_string()),
        Err(error) => not_ready("not ready: broker check failed", error.to_string()),
    }
}
