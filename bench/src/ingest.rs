//! Ingest: the population pushed through the gRPC batch API and acknowledged, then the same
//! events (sealed, encoded and keyed exactly as the hub does) produced straight to the broker by
//! the hub's own producer, with the same settings, keys and partition count: the baseline.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use futures::{StreamExt as _, stream};
use passerelle_eventlog::{
    kafka::{self, Publisher},
    registry::Registry,
    schemas::Topics,
    subject::SubjectKeys,
};
use passerelle_ingest::{
    client::{Credentials, connect},
    hub::{IngestHub, Prepared},
    institutions::Institutions,
    normalise::{self, Context},
    proto::{
        allocataire_ingest_client::AllocataireIngestClient, batch_reply::Status as BatchStatus,
        demandeur_emploi_ingest_client::DemandeurEmploiIngestClient,
        orientation_ingest_client::OrientationIngestClient, parcours_ingest_client::ParcoursIngestClient,
    },
    scope,
};
use tonic::transport::Channel;

use crate::{
    population::{Push, Timed},
    stack::Stack,
};

/// Events per PublishBatch call, and calls in flight.
pub const BATCH: usize = 500;
pub const IN_FLIGHT: usize = 8;

/// Channels to the hub, one per institution (mutual TLS with its certificate).
pub struct Channels {
    endpoint: String,
    credentials: std::path::PathBuf,
    open: tokio::sync::Mutex<HashMap<String, Channel>>,
}

impl Channels {
    pub fn new(stack: &Stack) -> Self {
        Self { endpoint: stack.grpc.clone(), credentials: stack.dir.join("pki"), open: Default::default() }
    }

    pub async fn of(&self, institution: &str) -> anyhow::Result<Channel> {
        let mut open = self.open.lock().await;
        if let Some(channel) = open.get(institution) {
            return Ok(channel.clone());
        }
        let credentials = Credentials::from_dir(&self.credentials, institution).map_err(anyhow::Error::msg)?;
        let channel = connect(&self.endpoint, &credentials)
            .await
            .with_context(|| format!("connecting to {} as {institution}", self.endpoint))?;
        open.insert(institution.to_owned(), channel.clone());
        Ok(channel)
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub accepted: u64,
    pub refused: u64,
}

/// Pushes one institution's chunk in one PublishBatch stream; counts the replies.
async fn push_chunk(channels: &Channels, institution: &str, chunk: &[&Timed]) -> anyhow::Result<Counts> {
    let channel = channels.of(institution).await?;
    let mut counts = Counts::default();
    let replies: Vec<passerelle_ingest::proto::BatchReply> = match &chunk[0].push {
        Push::Caf(_) => {
            let events: Vec<_> =
                chunk.iter().filter_map(|t| if let Push::Caf(e) = &t.push { Some(e.clone()) } else { None }).collect();
            all_replies(AllocataireIngestClient::new(channel).publish_batch(stream::iter(events)).await?).await?
        }
        Push::Ft(_) => {
            let events: Vec<_> =
                chunk.iter().filter_map(|t| if let Push::Ft(e) = &t.push { Some(e.clone()) } else { None }).collect();
            all_replies(DemandeurEmploiIngestClient::new(channel).publish_batch(stream::iter(events)).await?).await?
        }
        Push::Cd(_) => {
            let events: Vec<_> =
                chunk.iter().filter_map(|t| if let Push::Cd(e) = &t.push { Some(e.clone()) } else { None }).collect();
            all_replies(OrientationIngestClient::new(channel).publish_batch(stream::iter(events)).await?).await?
        }
        Push::Parcours(_) => {
            let events: Vec<_> = chunk
                .iter()
                .filter_map(|t| if let Push::Parcours(e) = &t.push { Some(e.clone()) } else { None })
                .collect();
            all_replies(ParcoursIngestClient::new(channel).publish_batch(stream::iter(events)).await?).await?
        }
    };
    for reply in replies {
        if reply.status == BatchStatus::Accepted as i32 {
            counts.accepted += 1;
        } else {
            if counts.refused == 0 {
                eprintln!(
                    "  refused ({institution}): {} {:?}",
                    reply.message,
                    reply.violations.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>()
                );
            }
            counts.refused += 1;
        }
    }
    Ok(counts)
}

/// Cuts the pushes (in time order) into per-institution, per-family chunks of at most `BATCH`.
pub fn chunks(pushes: &[Timed]) -> Vec<(String, Vec<&Timed>)> {
    let mut open: HashMap<(String, u8), Vec<&Timed>> = HashMap::new();
    let mut out = Vec::new();
    for timed in pushes {
        let family = match timed.push {
            Push::Caf(_) => 0,
            Push::Ft(_) => 1,
            Push::Cd(_) => 2,
            Push::Parcours(_) => 3,
        };
        let key = (timed.institution.clone(), family);
        let chunk = open.entry(key.clone()).or_default();
        chunk.push(timed);
        if chunk.len() == BATCH {
            out.push((key.0, std::mem::take(chunk)));
        }
    }
    for ((institution, _), chunk) in open {
        if !chunk.is_empty() {
            out.push((institution, chunk));
        }
    }
    out
}

/// The gRPC ingest run: every push acknowledged (or refused) by the hub.
pub async fn through_grpc(stack: &Stack, pushes: &[Timed]) -> anyhow::Result<(Counts, Duration)> {
    let channels = Channels::new(stack);
    // Connections are opened before the clock starts (an institution keeps its channel open).
    let mut institutions: Vec<&str> = pushes.iter().map(|t| t.institution.as_str()).collect();
    institutions.sort_unstable();
    institutions.dedup();
    for institution in institutions {
        channels.of(institution).await?;
    }
    let work = chunks(pushes);
    let done = Arc::new(AtomicU64::new(0));
    let total = pushes.len() as u64;
    let progress = {
        let done = done.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let n = done.load(Ordering::Relaxed);
                eprintln!(
                    "  ingest: {n}/{total} acknowledged ({:.0} events/s)",
                    n as f64 / started.elapsed().as_secs_f64()
                );
            }
        })
    };
    let started = Instant::now();
    let results: Vec<anyhow::Result<Counts>> = stream::iter(work)
        .map(|(institution, chunk)| {
            let channels = &channels;
            let done = done.clone();
            async move {
                let counts = push_chunk(channels, &institution, &chunk).await?;
                done.fetch_add(counts.accepted + counts.refused, Ordering::Relaxed);
                Ok(counts)
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let took = started.elapsed();
    progress.abort();
    let mut total_counts = Counts::default();
    for result in results {
        let counts = result?;
        total_counts.accepted += counts.accepted;
        total_counts.refused += counts.refused;
    }
    Ok((total_counts, took))
}

/// The baseline: the hub's own preparation (normalise, authorise, seal, encode, frame) done
/// beforehand, untimed; then the prepared records produced straight to fresh topics with the
/// hub's producer (same settings, keys, sizes, partition count), all acknowledged.
pub async fn baseline(stack: &Stack, pushes: &[Timed]) -> anyhow::Result<BaselineFigures> {
    let config = &stack.config;
    let pool = passerelle::connect(config).await?;
    let topics = Topics::new(config.kafka.topic_prefix.clone());
    let registry = Registry::new(pool.clone(), topics.clone());
    let institutions = Institutions::load(&config.institutions_file).map_err(anyhow::Error::msg)?;
    let mut settings = config.kafka.clone();
    settings.topic_prefix = "baseline.".into();
    let baseline_topics = Topics::new(settings.topic_prefix.clone());
    let families = passerelle_domain::event::Family::ALL;
    let names: Vec<String> = families.iter().map(|f| baseline_topics.topic(*f)).collect();
    kafka::ensure_topics(&settings, &names).await?;
    let publisher = Arc::new(Publisher::new(settings.clone())?);
    let hub = IngestHub::new(
        SubjectKeys::new(config.secrets.pepper()?),
        institutions,
        passerelle::key_store(config, &pool).await?,
        &registry,
        publisher.clone(),
        baseline_topics,
        pool.clone(),
    )
    .await?;
    let hub = Arc::new(hub);
    eprintln!("  baseline: preparing {} records as the hub does (untimed)", pushes.len());
    let prepared: Vec<anyhow::Result<Prepared>> = stream::iter(pushes)
        .map(|timed| {
            let hub = hub.clone();
            async move { prepare(&hub, timed).await }
        })
        .buffered(16)
        .collect()
        .await;
    let prepared: Vec<Prepared> = prepared.into_iter().collect::<anyhow::Result<_>>()?;
    let bytes: usize = prepared.iter().map(|p| p.value.len() + p.log_key.len()).sum();
    eprintln!("  baseline: producing {} records straight to the broker", prepared.len());
    let cpu_before = crate::stack::Cpu::read(None);
    let started = Instant::now();
    // At most as many records in flight as the hub allows itself (8 streams × 2,048), the
    // oldest awaited first: all at once, the tail would wait longer than the delivery timeout.
    let mut pending = std::collections::VecDeque::with_capacity(IN_FLIGHT * 2048);
    for record in &prepared {
        if pending.len() >= IN_FLIGHT * 2048
            && let Some(oldest) = pending.pop_front()
        {
            let oldest: passerelle_eventlog::kafka::Pending = oldest;
            oldest.wait().await.map_err(|e| anyhow::anyhow!("baseline delivery failed: {e:?}"))?;
        }
        pending.push_back(hub.enqueue(record).map_err(|e| anyhow::anyhow!("baseline enqueue failed: {e:?}"))?);
    }
    for delivery in pending {
        delivery.wait().await.map_err(|e| anyhow::anyhow!("baseline delivery failed: {e:?}"))?;
    }
    let took = started.elapsed();
    let cpu = crate::stack::Cpu::read(None).since(&cpu_before);
    pool.close().await;
    Ok(BaselineFigures {
        cpu,
        records: prepared.len() as u64,
        took,
        mean_bytes: bytes as f64 / prepared.len().max(1) as f64,
    })
}

pub struct BaselineFigures {
    pub records: u64,
    pub took: Duration,
    pub mean_bytes: f64,
    /// CPU seconds of the production (the producer is in the bench process).
    pub cpu: serde_json::Value,
}

async fn prepare(hub: &IngestHub, timed: &Timed) -> anyhow::Result<Prepared> {
    let institution = hub
        .institutions
        .get(&timed.institution)
        .ok_or_else(|| anyhow::anyhow!("no institution {}", timed.institution))?;
    let context = Context {
        keys: &hub.keys,
        source: passerelle_domain::event::Source {
            institution: institution.id.clone(),
            kind: institution.kind,
            relayed_by: None,
            relay_file: None,
        },
        now: chrono::Utc::now(),
    };
    let canonical = match &timed.push {
        Push::Caf(event) => normalise::allocataire(&context, event),
        Push::Ft(event) => normalise::demandeur_emploi(&context, event),
        Push::Cd(event) => normalise::orientation(&context, event),
        Push::Parcours(event) => normalise::parcours(&context, event),
    };
    let mut canonical = canonical.map_err(|v| anyhow::anyhow!("refused: {:?}", v.into_vec()))?;
    scope::authorise(institution, None, &hub.institutions, &mut canonical)
        .map_err(|d| anyhow::anyhow!("denied: {}", d.message))?;
    Ok(hub.prepare(canonical).await?)
}

/// Every reply of a `PublishBatch` call, in order.
async fn all_replies(
    response: tonic::Response<tonic::Streaming<passerelle_ingest::proto::BatchReply>>,
) -> anyhow::Result<Vec<passerelle_ingest::proto::BatchReply>> {
    let mut replies = response.into_inner();
    let mut out = Vec::new();
    while let Some(reply) = replies.message().await? {
        out.push(reply);
    }
    Ok(out)
}
