//! The fault campaign: the hub, its projector workers, the broker and PostgreSQL are killed and
//! restarted on a random schedule while institutions push and agents read; at the end every
//! acknowledged event must be in the read models exactly once (the projection equals the
//! oracle of [`crate::workload`]) and no answer may have been a server error other than the
//! documented "unavailable, retry" (gRPC UNAVAILABLE, HTTP 503).
//!
//! Everything runs on private parts so that the faults touch nothing else: a PostgreSQL cluster
//! of its own ([`PrivatePostgres`], restarted with `pg_ctl`), a tansu broker of its own
//! ([`PrivateBroker`], SIGKILLed and restarted on the same storage), the hub as a
//! `passerelle serve ingest` process on fixed ports (SIGKILLed and restarted), and projector
//! workers as `passerelle up` processes in one consumer group (SIGKILLed one at a time; the
//! survivors must take over its partitions, which tansu 0.6 does only when the workers' group
//! watchdog rejoins).
//!
//! `fault-campaign` (this crate's binary, `infra/fault-campaign.sh`) runs the full campaign;
//! `tests/fault_campaign.rs` a short one in CI.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use futures::StreamExt as _;
use passerelle_importers::generate::Sequence as Random;
use passerelle_ingest::{
    client::{Credentials, connect},
    proto::{
        AllocataireEvent, BatchReply, DemandeurEmploiEvent, OrientationEvent, ParcoursEvent,
        allocataire_ingest_client::AllocataireIngestClient, batch_reply,
        demandeur_emploi_ingest_client::DemandeurEmploiIngestClient,
        orientation_ingest_client::OrientationIngestClient, parcours_ingest_client::ParcoursIngestClient,
    },
};
use tonic::{Code, Status, transport::Channel};

use crate::{
    TestHub,
    broker::PrivateBroker,
    postgres::{PrivatePostgres, Stop},
    process::Worker,
    workload::{Workload, applied, compare_with_oracle, workload},
};

/// What a campaign runs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub seed: u64,
    /// Persons of the generated workload (about 7 facts each, retractions and retries included).
    pub persons: usize,
    /// Faults injected.
    pub faults: usize,
    /// Projector workers in the consumer group.
    pub workers: usize,
    /// Pause between two faults, drawn in this range.
    pub gap: (Duration, Duration),
    /// How long a killed part stays down, drawn in this range. A killed worker is sometimes
    /// replaced only after `3 × rejoin_after`, so that the survivors alone must take over.
    pub down: (Duration, Duration),
    /// The workers' group watchdog (`projector_rejoin_after_seconds`).
    pub rejoin_after: Duration,
    /// How long the end may take: the pushes finishing, then the projection catching up.
    pub settle: Duration,
    /// Where the stack's logs are written (kept); a temporary directory otherwise.
    pub logs: Option<PathBuf>,
}

impl Settings {
    /// The short campaign CI runs: every kind of fault twice, a small workload.
    pub fn short(seed: u64) -> Self {
        Self {
            seed,
            persons: 60,
            faults: 10,
            workers: 2,
            gap: (Duration::from_millis(500), Duration::from_secs(3)),
            down: (Duration::from_millis(300), Duration::from_secs(3)),
            rejoin_after: Duration::from_secs(8),
            settle: Duration::from_secs(240),
            logs: None,
        }
    }
}

/// The kinds of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// SIGKILL of the hub's ingestion and API process; restarted on the same ports.
    HubKilled,
    /// SIGKILL of one projector worker; another started after a while.
    WorkerKilled,
    /// SIGKILL of the broker; restarted on the same storage.
    BrokerKilled,
    /// PostgreSQL stopped cleanly (`pg_ctl -m fast`), clients cut off, then started.
    PostgresRestarted,
    /// PostgreSQL crashed (`pg_ctl -m immediate`): the next start replays the WAL.
    PostgresCrashed,
}

const KINDS: [Fault; 5] =
    [Fault::HubKilled, Fault::WorkerKilled, Fault::BrokerKilled, Fault::PostgresRestarted, Fault::PostgresCrashed];

/// What the campaign saw.
#[derive(Debug, Default)]
pub struct Report {
    pub faults: BTreeMap<String, usize>,
    /// Requests of the workload (each acknowledged once in the end).
    pub requests: usize,
    /// Sends in all, retries included.
    pub sends: usize,
    /// Answers UNAVAILABLE (the call's status or an event's reply): retried.
    pub unavailable: usize,
    /// Calls refused or cut by a dead peer (no answer from the hub): retried.
    pub connection_lost: usize,
    /// Département facts refused as `territory.held` (the CAF fact not projected yet): retried.
    pub held: usize,
    /// Agents' reads by HTTP status.
    pub reads: BTreeMap<u16, usize>,
    /// Reads refused or cut by a dead hub (no answer).
    pub reads_without_answer: usize,
    /// Records on the projected topics at the end (duplicates from retries included).
    pub records: i64,
    /// Group rejoins by the workers' watchdog (from their logs).
    pub rejoins: usize,
    /// Processes that exited without being killed.
    pub exited_unbidden: usize,
    /// Anything that breaks the campaign's promise.
    pub violations: Vec<String>,
    pub elapsed: Duration,
}

impl Report {
    pub fn print(&self) {
        println!("fault campaign: {} s", self.elapsed.as_secs());
        println!("  faults injected and survived: {}", self.faults.values().sum::<usize>());
        for (kind, count) in &self.faults {
            println!("    {kind:<20} {count}");
        }
        println!(
            "  requests acknowledged: {} (sends {}, retried after: unavailable {}, connection lost {}, territory held {})",
            self.requests, self.sends, self.unavailable, self.connection_lost, self.held
        );
        println!("  records on the log: {} (the projection applied each acknowledged event once)", self.records);
        println!(
            "  agents' reads by status: {:?}; without answer (hub down): {}",
            self.reads, self.reads_without_answer
        );
        println!("  watchdog rejoins: {}; processes that exited unbidden: {}", self.rejoins, self.exited_unbidden);
        if self.violations.is_empty() {
            println!("  violations: none");
        } else {
            println!("  violations: {}", self.violations.len());
            for violation in self.violations.iter().take(20) {
                println!("    {violation}");
            }
        }
    }
}

/// Counters the pushers and readers share with the campaign.
#[derive(Default)]
struct Seen {
    sends: usize,
    acknowledged: usize,
    unavailable: usize,
    connection_lost: usize,
    held: usize,
    reads: BTreeMap<u16, usize>,
    reads_without_answer: usize,
    violations: Vec<String>,
}

type Shared = Arc<Mutex<Seen>>;

fn note(seen: &Shared, change: impl FnOnce(&mut Seen)) {
    if let Ok(mut seen) = seen.lock() {
        change(&mut seen);
    }
}

/// One institution's pushes.
#[derive(Clone)]
enum Pushed {
    Caf(AllocataireEvent),
    Ft(DemandeurEmploiEvent),
    Cd(OrientationEvent),
    Parcours(ParcoursEvent),
}

/// Logs of this process (the pushers' and readers' clients) at `RUST_LOG`, warnings by default,
/// on stderr; the hub's processes write theirs next to their configuration.
pub fn quiet_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sqlx=error"));
    drop(tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init());
}

/// Runs a campaign and reports; `Err` only when the campaign itself could not run.
pub async fn run(settings: &Settings) -> anyhow::Result<Report> {
    let started = Instant::now();
    let work = workload(settings.seed, settings.persons);
    let mut random = Random(settings.seed ^ 0xfa017);
    let postgres = PrivatePostgres::start().context("starting a private PostgreSQL (initdb, pg_ctl)")?;
    let mut broker = PrivateBroker::start()?;
    eprintln!("campaign: PostgreSQL on {}, broker on {}", postgres.port, broker.bootstrap());

    // The database, topics and credentials are prepared by an in-process hub, then the hub runs
    // as its own processes.
    let rejoin_after = settings.rejoin_after.as_secs();
    let hub = TestHub::spawn_at(&broker.bootstrap(), &postgres.url(), passerelle::Services { projector: false }, |c| {
        c.projector_max_batch = 20;
        c.projector_rejoin_after_seconds = rejoin_after;
        c.lag_probe_seconds = 5;
    })
    .await?;
    let TestHub { running, config, pepper, credentials_dir, .. } = hub;
    let topics = passerelle::projected_topics(&running.topics);
    running.shutdown().await?;
    let dir = settings.logs.clone().unwrap_or_else(|| credentials_dir.join("campaign"));
    std::fs::create_dir_all(&dir)?;
    let mut hub_config = config.clone();
    hub_config.grpc_listen = free_address()?;
    hub_config.http_listen = free_address()?;
    hub_config.ops_listen = free_address()?;
    hub_config.api_grpc_listen = free_address()?;
    hub_config.registry_listen = free_address()?;
    let hub_file = dir.join("hub.toml");
    std::fs::write(&hub_file, toml::to_string(&hub_config)?)?;
    let worker_file = dir.join("worker.toml");
    std::fs::write(&worker_file, toml::to_string(&config)?)?;

    let mut hub = Worker::start_hub(&hub_file, "hub")?;
    ready(&hub_config, Duration::from_secs(60)).await.context("the hub did not become ready")?;
    let mut workers = Vec::new();
    let mut started_workers = 0;
    for _ in 0..settings.workers.max(1) {
        started_workers += 1;
        workers.push(Worker::start(&worker_file, &format!("worker-{started_workers}"))?);
    }
    // As the hub reads: the app role, the read models' schema first. PostgreSQL is up here.
    let pool = passerelle::sized_pool(&config.database_url, passerelle_readmodel::SCHEMA, 4).await?;

    // Institutions push, paced to last about as long as the schedule; agents read meanwhile.
    let seen: Shared = Arc::default();
    let mean = |(low, high): (Duration, Duration)| (low + high) / 2;
    let planned = (mean(settings.gap) + mean(settings.down) + Duration::from_secs(2)) * settings.faults as u32;
    let endpoint = format!("https://localhost:{}", hub_config.grpc_listen.port());
    let mut pushers = tokio::task::JoinSet::new();
    for (institution, events) in pushes(&work) {
        let credentials = Credentials::from_dir(&credentials_dir, institution).map_err(anyhow::Error::msg)?;
        let pace = planned.mul_f64(0.8) / (events.len() as u32 / CHUNK as u32 + 1);
        pushers.spawn(push(endpoint.clone(), credentials, events, pace, seen.clone()));
    }
    let (stop_readers, readers_stop) = tokio::sync::watch::channel(false);
    let mut readers = tokio::task::JoinSet::new();
    for (agent, purpose) in [("cd52.orientation", "orientation"), ("caf521.agent", "instruction_rsa")] {
        let token = passerelle::dev_token(&config, agent, &credentials_dir.join("oidc-dev-key.der"), 24 * 3600)?;
        let base = format!("http://{}", hub_config.http_listen);
        readers.spawn(read(base, token, purpose, pool.clone(), readers_stop.clone(), seen.clone()));
    }

    let mut report = Report::default();
    for number in 1..=settings.faults {
        let fault = if number <= 2 * KINDS.len() {
            KINDS[(number - 1) % KINDS.len()]
        } else {
            KINDS[random.below(KINDS.len() as u64) as usize]
        };
        tokio::time::sleep(draw(&mut random, settings.gap)).await;
        let mut down = draw(&mut random, settings.down);
        match fault {
            Fault::HubKilled => {
                hub.kill();
                tokio::time::sleep(down).await;
                hub = Worker::start_hub(&hub_file, &format!("hub-{number}"))?;
                ready(&hub_config, Duration::from_secs(60)).await.context("the hub did not come back")?;
            }
            Fault::WorkerKilled => {
                let victim = random.below(workers.len() as u64) as usize;
                workers.swap_remove(victim).kill();
                if random.chance(50) {
                    // The survivors alone: the killed member's partitions must reach them.
                    down = settings.rejoin_after * 3;
                }
                tokio::time::sleep(down).await;
                started_workers += 1;
                workers.push(Worker::start(&worker_file, &format!("worker-{started_workers}"))?);
            }
            Fault::BrokerKilled => {
                broker.kill();
                tokio::time::sleep(down).await;
                broker.resume()?;
            }
            Fault::PostgresRestarted | Fault::PostgresCrashed => {
                let how = if fault == Fault::PostgresCrashed { Stop::Immediate } else { Stop::Fast };
                postgres.down(how)?;
                tokio::time::sleep(down).await;
                postgres.up()?;
            }
        }
        *report.faults.entry(format!("{fault:?}")).or_default() += 1;
        // A process that exited by itself is a finding: it is counted, and replaced.
        if !hub.alive() {
            report.exited_unbidden += 1;
            report.violations.push(format!("after fault {number} ({fault:?}): the hub exited by itself"));
            hub = Worker::start_hub(&hub_file, &format!("hub-restarted-{number}"))?;
        }
        for worker in &mut workers {
            if !worker.alive() {
                report.exited_unbidden += 1;
                report.violations.push(format!("after fault {number} ({fault:?}): a worker exited by itself"));
                started_workers += 1;
                *worker = Worker::start(&worker_file, &format!("worker-{started_workers}"))?;
            }
        }
        let (acknowledged, projected) = (
            seen.lock().map(|s| s.acknowledged).unwrap_or_default(),
            applied(&pool).await.map_or_else(|_| "?".to_owned(), |n| n.to_string()),
        );
        eprintln!(
            "campaign: fault {number}/{} {fault:?} (down {} ms) survived at {} s; acknowledged {acknowledged}/{}, applied {projected}/{}",
            settings.faults,
            down.as_millis(),
            started.elapsed().as_secs(),
            work.caf.len() + work.ft.len() + work.cd.len() + work.parcours.len(),
            work.expected_pairs(),
        );
    }

    // The end: every push acknowledged, the projection caught up with the log, then the oracle.
    let deadline = Instant::now() + settings.settle;
    while let Some(pushed) = tokio::time::timeout_at(deadline.into(), pushers.join_next()).await.ok().flatten() {
        pushed.context("a pusher panicked")?;
    }
    if !pushers.is_empty() {
        report.violations.push(format!("{} institutions still had unacknowledged events at the end", pushers.len()));
        pushers.abort_all();
    }
    stop_readers.send_replace(true);
    while readers.join_next().await.is_some() {}
    let partitions = topics.len() * usize::try_from(config.kafka.partitions)?;
    match caught_up(&pool, &broker.bootstrap(), &topics, partitions, &work, deadline).await {
        Ok(records) => report.records = records,
        Err(error) => report.violations.push(format!("the projection did not catch up: {error:#}")),
    }
    let keys = passerelle_eventlog::subject::SubjectKeys::new(pepper);
    if let Err(error) = compare_with_oracle(&pool, &keys, &work).await {
        report.violations.push(format!("the read models differ from the oracle: {error:#}"));
    }
    hub.stop().ok();
    for worker in workers {
        worker.stop().ok();
    }
    report.rejoins = count_in_logs(&dir, "leaving and rejoining the consumer group");
    let seen = std::mem::take(&mut *seen.lock().map_err(|_| anyhow::anyhow!("counters poisoned"))?);
    report.requests = work.caf.len() + work.ft.len() + work.cd.len() + work.parcours.len();
    report.sends = seen.sends;
    report.unavailable = seen.unavailable;
    report.connection_lost = seen.connection_lost;
    report.held = seen.held;
    report.reads = seen.reads;
    report.reads_without_answer = seen.reads_without_answer;
    report.violations.extend(seen.violations);
    if report.reads.get(&200).copied().unwrap_or_default() == 0 {
        report.violations.push("no agent's read was answered 200: the readers tested nothing".into());
    }
    if seen.acknowledged != report.requests {
        report.violations.push(format!("{} of {} requests acknowledged", seen.acknowledged, report.requests));
    }
    report.elapsed = started.elapsed();
    pool.close().await;
    eprintln!("campaign: logs in {}", dir.display());
    Ok(report)
}

/// Events per publish call.
const CHUNK: usize = 8;

/// The workload, per institution.
fn pushes(work: &Workload) -> Vec<(&'static str, Vec<Pushed>)> {
    let mut by: HashMap<&'static str, Vec<Pushed>> = HashMap::new();
    by.insert("caf-521", work.caf.iter().cloned().map(Pushed::Caf).collect());
    by.insert("france-travail", work.ft.iter().cloned().map(Pushed::Ft).collect());
    for (authority, event) in &work.cd {
        let institution = if *authority == "51" { "cd-51" } else { "cd-52" };
        by.entry(institution).or_default().push(Pushed::Cd(event.clone()));
    }
    // A pusher sends one family per call: an authority's parcours facts go by a pusher of their own.
    let mut parcours: HashMap<&'static str, Vec<Pushed>> = HashMap::new();
    for (authority, event) in &work.parcours {
        let institution = if *authority == "51" { "cd-51" } else { "cd-52" };
        parcours.entry(institution).or_default().push(Pushed::Parcours(event.clone()));
    }
    let mut all: Vec<_> = by.into_iter().chain(parcours).collect();
    all.sort_by_key(|(institution, _)| *institution);
    all
}

/// Pushes `events` as one institution would: in small batches, each event retried with the
/// same id until the hub acknowledges it (after UNAVAILABLE, a lost connection, or
/// `territory.held` while the CAF fact that moves the person is not projected yet).
async fn push(endpoint: String, credentials: Credentials, events: Vec<Pushed>, pace: Duration, seen: Shared) {
    let mut queue: VecDeque<Pushed> = events.into();
    let mut channel: Option<Channel> = None;
    while !queue.is_empty() {
        let chunk: Vec<Pushed> = queue.drain(..CHUNK.min(queue.len())).collect();
        let connected = match &channel {
            Some(channel) => channel.clone(),
            None => match connect(&endpoint, &credentials).await {
                Ok(connected) => {
                    channel = Some(connected.clone());
                    connected
                }
                Err(_) => {
                    note(&seen, |s| s.connection_lost += 1);
                    queue.extend(chunk);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            },
        };
        note(&seen, |s| s.sends += chunk.len());
        let mut answered = vec![false; chunk.len()];
        match publish(connected, &chunk).await {
            Ok(mut replies) => loop {
                match replies.next().await {
                    None => break,
                    Some(Ok(reply)) => {
                        let Some(slot) = answered.get_mut(reply.index as usize) else { continue };
                        *slot = true;
                        match settle_reply(&reply, &seen) {
                            Settled::Acknowledged => {}
                            Settled::Again => queue.push_back(chunk[reply.index as usize].clone()),
                        }
                    }
                    Some(Err(status)) => {
                        failed_call(&status, &seen);
                        channel = None;
                        break;
                    }
                }
            },
            Err(status) => {
                failed_call(&status, &seen);
                channel = None;
            }
        }
        let unanswered: Vec<Pushed> =
            chunk.into_iter().zip(answered).filter(|(_, answered)| !answered).map(|(event, _)| event).collect();
        if !unanswered.is_empty() {
            queue.extend(unanswered);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        tokio::time::sleep(pace).await;
    }
}

async fn publish(channel: Channel, chunk: &[Pushed]) -> Result<tonic::Streaming<BatchReply>, Status> {
    Ok(match &chunk[0] {
        Pushed::Caf(_) => {
            let events: Vec<AllocataireEvent> =
                chunk.iter().filter_map(|p| if let Pushed::Caf(e) = p { Some(e.clone()) } else { None }).collect();
            AllocataireIngestClient::new(channel).publish_batch(tokio_stream::iter(events)).await?.into_inner()
        }
        Pushed::Ft(_) => {
            let events: Vec<DemandeurEmploiEvent> =
                chunk.iter().filter_map(|p| if let Pushed::Ft(e) = p { Some(e.clone()) } else { None }).collect();
            DemandeurEmploiIngestClient::new(channel).publish_batch(tokio_stream::iter(events)).await?.into_inner()
        }
        Pushed::Cd(_) => {
            let events: Vec<OrientationEvent> =
                chunk.iter().filter_map(|p| if let Pushed::Cd(e) = p { Some(e.clone()) } else { None }).collect();
            OrientationIngestClient::new(channel).publish_batch(tokio_stream::iter(events)).await?.into_inner()
        }
        Pushed::Parcours(_) => {
            let events: Vec<ParcoursEvent> =
                chunk.iter().filter_map(|p| if let Pushed::Parcours(e) = p { Some(e.clone()) } else { None }).collect();
            ParcoursIngestClient::new(channel).publish_batch(tokio_stream::iter(events)).await?.into_inner()
        }
    })
}

enum Settled {
    Acknowledged,
    Again,
}

fn settle_reply(reply: &BatchReply, seen: &Shared) -> Settled {
    let status = batch_reply::Status::try_from(reply.status).unwrap_or(batch_reply::Status::Unspecified);
    match status {
        batch_reply::Status::Accepted => {
            note(seen, |s| s.acknowledged += 1);
            Settled::Acknowledged
        }
        batch_reply::Status::Unavailable => {
            note(seen, |s| s.unavailable += 1);
            Settled::Again
        }
        batch_reply::Status::Denied if reply.message.contains("territory.held") => {
            note(seen, |s| s.held += 1);
            Settled::Again
        }
        _ => {
            let message = format!("event {} refused ({status:?}): {}", reply.event_id, reply.message);
            note(seen, |s| s.violations.push(message));
            Settled::Acknowledged
        }
    }
}

/// A call that failed as a whole: UNAVAILABLE from the hub, or no answer at all (the hub or
/// its connection died: the client's own error, with the transport's error as its source).
/// Anything else the hub answered is a violation.
fn failed_call(status: &Status, seen: &Shared) {
    use std::error::Error as _;
    match status.code() {
        Code::Unavailable => note(seen, |s| s.unavailable += 1),
        _ if status.source().is_some() => note(seen, |s| s.connection_lost += 1),
        code => {
            let message = format!("a publish call answered {code:?}: {}", status.message());
            note(seen, |s| s.violations.push(message));
        }
    }
}

/// An agent reading dossiers of persons the hub holds, a few times a second.
async fn read(
    base: String,
    token: String,
    purpose: &'static str,
    pool: sqlx::PgPool,
    mut stop: tokio::sync::watch::Receiver<bool>,
    seen: Shared,
) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("an HTTP client");
    let mut persons: Vec<uuid::Uuid> = Vec::new();
    let mut random = Random(purpose.len() as u64);
    let mut refreshed = Instant::now() - Duration::from_secs(60);
    while !*stop.borrow() {
        if refreshed.elapsed() > Duration::from_secs(5) {
            if let Ok(ids) = sqlx::query_scalar::<_, uuid::Uuid>(
                "SELECT person_id FROM persons WHERE merged_into IS NULL ORDER BY person_id LIMIT 1000",
            )
            .fetch_all(&pool)
            .await
            {
                persons = ids;
            }
            refreshed = Instant::now();
        }
        if let Some(person) = persons.get(random.below(persons.len().max(1) as u64) as usize) {
            let answer = http
                .get(format!("{base}/api/v1/dossiers/{person}"))
                .bearer_auth(&token)
                .header("X-Motif-Acces", purpose)
                .send()
                .await;
            match answer {
                Ok(response) => {
                    let status = response.status().as_u16();
                    note(&seen, |s| *s.reads.entry(status).or_default() += 1);
                    if status >= 500 && status != 503 {
                        let body = response.text().await.unwrap_or_default();
                        note(&seen, |s| s.violations.push(format!("a dossier read answered {status}: {body}")));
                    }
                }
                Err(_) => note(&seen, |s| s.reads_without_answer += 1),
            }
        }
        tokio::select! {
            _ = stop.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// Waits until the hub answers `/readyz` (database and broker reachable).
async fn ready(config: &passerelle::config::Config, within: Duration) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let url = format!("http://{}/readyz", config.ops_listen);
    let deadline = Instant::now() + within;
    loop {
        if http.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{url} did not answer 200 within {} s", within.as_secs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until PostgreSQL's stored offsets reach the end of every projected partition (the
/// projector's own lag reading, every one of the `partitions` answered) and every acknowledged
/// fact is applied; returns the records on the log.
async fn caught_up(
    pool: &sqlx::PgPool,
    bootstrap: &str,
    topics: &[String],
    partitions: usize,
    work: &Workload,
    deadline: Instant,
) -> anyhow::Result<i64> {
    let client: Arc<rdkafka::consumer::BaseConsumer> =
        Arc::new(rdkafka::ClientConfig::new().set("bootstrap.servers", bootstrap).create()?);
    loop {
        let lags = passerelle_projector::metrics::partition_lags(pool, client.clone(), "dossier", topics)
            .await
            .unwrap_or_default();
        let waiting: i64 = lags.iter().map(|lag| lag.waiting).sum();
        let stored: i64 = sqlx::query_scalar("SELECT COALESCE(sum(next_offset), 0)::bigint FROM projector_offsets")
            .fetch_one(pool)
            .await
            .unwrap_or(-1);
        let done = applied(pool).await.unwrap_or_default();
        if lags.len() == partitions && waiting == 0 && done == work.expected_pairs() {
            return Ok(stored);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{waiting} records waiting on {} of {partitions} partitions answered, {done} of {} facts applied",
            lags.len(),
            work.expected_pairs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn draw(random: &mut Random, (low, high): (Duration, Duration)) -> Duration {
    let span = high.saturating_sub(low).as_millis() as u64;
    low + Duration::from_millis(random.below(span.max(1)))
}

fn free_address() -> anyhow::Result<std::net::SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Lines containing `needle` in the `.log` and `.err` files of `dir`.
fn count_in_logs(dir: &Path, needle: &str) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
        .map(|text| text.lines().filter(|line| line.contains(needle)).count())
        .sum()
}
