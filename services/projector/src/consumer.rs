//! The consuming loop of a projection: a Kafka consumer group (so several workers share the
//! partitions), batches applied in one transaction each, offsets committed to the broker only
//! after PostgreSQL committed (the broker's copy is progress reporting; PostgreSQL's decides).

use std::{sync::Arc, time::Duration};

use rdkafka::{
    ClientConfig, Offset, TopicPartitionList,
    consumer::{CommitMode, Consumer, StreamConsumer},
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};
use sqlx::PgPool;
use tokio::sync::watch;

use crate::{
    Error,
    apply::{Applier, Outcome, Record},
    decode::Decoded,
};

/// How a projection worker connects and batches.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub bootstrap_servers: String,
    pub group_id: String,
    pub topics: Vec<String>,
    pub dead_letter_topic: String,
    pub max_batch: usize,
    pub max_wait: Duration,
    /// The group watchdog's patience: a partition with records waiting whose stored offset has
    /// not moved for this long, while it is not this worker's or this worker receives nothing,
    /// makes the worker leave and rejoin its group ([`Watchdog`]).
    pub rejoin_after: Duration,
}

/// Runs a projection worker until `shutdown` turns true; the batch in flight finishes first.
pub async fn run(
    settings: WorkerSettings,
    applier: Arc<Applier>,
    pool: PgPool,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    crate::failpoint::init();
    // The dead-letter series exist from the start at zero: an increase() alert then sees the
    // first dead letter (0 → 1) instead of a series appearing at 1.
    for reason in DEAD_LETTER_REASONS {
        crate::metrics::metrics().dead_letters.with_label_values(&[applier.projection.as_str(), reason]);
    }
    crate::metrics::metrics().erased_skipped.with_label_values(&[applier.projection.as_str()]);
    crate::metrics::metrics().group_rejoins.with_label_values(&[applier.projection.as_str()]);
    for (subject, fold) in crate::metrics::FOLD_LABELS {
        crate::metrics::metrics().folds.with_label_values(&[applier.projection.as_str(), subject, fold]);
    }
    let mut consumer = join(&settings)?;
    let mut watchdog = Watchdog::new(&settings)?;
    let check_every = (settings.rejoin_after / 3).max(Duration::from_secs(1));
    let mut next_check = tokio::time::Instant::now() + check_every;
    let dead_letters: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &settings.bootstrap_servers)
        .set("acks", "all")
        .set("message.timeout.ms", "10000")
        .create()?;
    // The next batch, received and being decoded while the current one is applied.
    let mut ahead: Option<Ahead> = None;
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= next_check {
            next_check = tokio::time::Instant::now() + check_every;
            if let Some(stalled) = watchdog.stalled(&consumer, &pool, &applier.projection).await {
                tracing::warn!(
                    partitions = %stalled,
                    "projector watchdog: records wait on partitions that made no progress; leaving and rejoining the consumer group"
                );
                crate::metrics::metrics().group_rejoins.with_label_values(&[applier.projection.as_str()]).inc();
                // What was read ahead is read again from the stored offsets.
                ahead = None;
                let leaving = consumer;
                // Closing leaves the group: librdkafka blocks meanwhile, off the runtime.
                drop(tokio::task::spawn_blocking(move || drop(leaving)).await);
                consumer = join(&settings)?;
                watchdog.rejoined();
                continue;
            }
        }
        let (batch, decoded) = match ahead.take() {
            Some(ahead) => ahead.wait().await,
            None => {
                // Idle: wait for a record (consumer errors, a broker down or a partition moving,
                // are reported by librdkafka while it keeps reconnecting: logged, and on).
                let received = tokio::select! {
                    _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
                    _ = tokio::time::sleep_until(next_check) => continue,
                    message = consumer.recv() => message,
                };
                let first = match received {
                    Ok(message) => owned(&message),
                    Err(error) => {
                        tracing::warn!(error = %error, "projector consumer error, retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                watchdog.received();
                (fill(&consumer, &settings, vec![first]).await, None)
            }
        };
        // PostgreSQL applies this batch while the next one is received and decoded on another
        // task: the hub and the database work at the same time. What follows a commit (metrics,
        // dead letters to their topic, progress to the broker) does not wait for the next batch.
        let applying = async {
            let started = std::time::Instant::now();
            let outcome = apply_with_retry(&applier, &pool, &batch, decoded, &mut shutdown).await?;
            crate::failpoint::hit("after-db-commit");
            record_metrics(&applier.projection, &outcome, batch.len(), started.elapsed());
            publish_dead_letters(&dead_letters, &settings.dead_letter_topic, &outcome).await;
            let mut progress = TopicPartitionList::new();
            for ((topic, partition), offset) in &outcome.offsets {
                progress.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
            }
            if let Err(error) = consumer.commit(&progress, CommitMode::Async) {
                tracing::debug!(error = %error, "offset commit to the broker failed; PostgreSQL holds the progress");
            }
            tracing::debug!(
                applied = outcome.applied,
                duplicates = outcome.duplicates,
                dead_letters = outcome.dead_letters.len(),
                "batch applied"
            );
            Ok::<_, Error>(())
        };
        let (applied, next) = tokio::join!(applying, read_ahead(&consumer, &settings, &applier));
        if next.is_some() {
            watchdog.received();
        }
        match applied {
            Err(Error::Gap(mut stored)) => {
                // What was read ahead is read again: the batch's partitions from the offsets
                // PostgreSQL holds, the others only in the batch read ahead from its first
                // record of each.
                if let Some(next) = next {
                    let (dropped, _) = next.wait().await;
                    for record in dropped {
                        let known = stored
                            .iter()
                            .any(|(topic, partition, _)| *topic == record.topic && *partition == record.partition);
                        if !known {
                            stored.push((record.topic.clone(), record.partition, record.offset));
                        }
                    }
                }
                seek_back(&consumer, &pool, &applier.projection, &stored).await?;
            }
            other => {
                other?;
                ahead = next;
            }
        }
    }
}

/// Adds to `batch` what arrives within the batch window, up to the batch size.
async fn fill(
    consumer: &StreamConsumer<WorkerContext>,
    settings: &WorkerSettings,
    mut batch: Vec<Record>,
) -> Vec<Record> {
    let deadline = tokio::time::Instant::now() + settings.max_wait;
    while batch.len() < settings.max_batch {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(message)) => batch.push(owned(&message)),
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "projector consumer error, applying what was read");
                break;
            }
            Err(_) => break,
        }
    }
    batch
}

/// A batch read ahead, decoding on its own task.
struct Ahead(tokio::task::JoinHandle<(Vec<Record>, Option<Decoded>)>);

impl Ahead {
    /// The batch and, unless decoding failed (the batch's transaction then decodes it again,
    /// and retries what is transient), its items.
    async fn wait(self) -> (Vec<Record>, Option<Decoded>) {
        match self.0.await {
            Ok(ready) => ready,
            // Decoding panicked: as if it had run on this task (the task is never aborted).
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }
}

/// Receives the next batch (what arrives within the batch window) and starts decoding it.
async fn read_ahead(
    consumer: &StreamConsumer<WorkerContext>,
    settings: &WorkerSettings,
    applier: &Arc<Applier>,
) -> Option<Ahead> {
    let batch = fill(consumer, settings, Vec::new()).await;
    if batch.is_empty() {
        return None;
    }
    let applier = applier.clone();
    Some(Ahead(tokio::spawn(async move {
        let decoded = applier.decode(&batch).await.ok();
        (batch, decoded)
    })))
}

/// Creates the worker's consumer and joins its group.
fn join(settings: &WorkerSettings) -> Result<StreamConsumer<WorkerContext>, Error> {
    let consumer: StreamConsumer<WorkerContext> = ClientConfig::new()
        .set("bootstrap.servers", &settings.bootstrap_servers)
        .set("group.id", &settings.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        // The rebalance timeout: how long a rebalance waits for members to rejoin. Kept short so
        // a worker killed during a rebalance does not hold the partitions for 5 minutes.
        .set("max.poll.interval.ms", "30000")
        .set("topic.metadata.refresh.interval.ms", "5000")
        .create_with_context(WorkerContext)?;
    let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(consumer)
}

/// Watches for partitions nobody projects. With tansu 0.6, a member SIGKILLed while another
/// member stays can leave its partitions unassigned for good (docs/projector.md): the group
/// looks healthy and the projection silently stops on those partitions. The watchdog compares
/// the broker's high watermarks with the offsets PostgreSQL holds: a partition with records
/// waiting whose stored offset has not moved for `rejoin_after` is stalled when it is not
/// assigned to this worker, or when this worker has received nothing for as long. The worker
/// then leaves the group and joins it again, which makes the coordinator assign every
/// partition anew. A fresh join is given `rejoin_after` to settle; repeated rejoins back off
/// (doubling up to 16 times the patience) until a record arrives.
struct Watchdog {
    patience: Duration,
    topics: Vec<String>,
    probe: Arc<rdkafka::consumer::BaseConsumer>,
    joined_at: tokio::time::Instant,
    last_record: tokio::time::Instant,
    settle: Duration,
}

impl Watchdog {
    fn new(settings: &WorkerSettings) -> Result<Self, Error> {
        let probe: rdkafka::consumer::BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &settings.bootstrap_servers)
            .set("group.id", format!("{}-watchdog", settings.group_id))
            .create()?;
        let now = tokio::time::Instant::now();
        Ok(Self {
            patience: settings.rejoin_after,
            topics: settings.topics.clone(),
            probe: Arc::new(probe),
            joined_at: now,
            last_record: now,
            settle: settings.rejoin_after,
        })
    }

    fn received(&mut self) {
        self.last_record = tokio::time::Instant::now();
        self.settle = self.patience;
    }

    fn rejoined(&mut self) {
        self.joined_at = tokio::time::Instant::now();
        self.settle = (self.settle * 2).min(self.patience * 16);
    }

    /// The stalled partitions (`topic/partition`, comma-separated), if this worker should rejoin.
    async fn stalled(
        &self,
        consumer: &StreamConsumer<WorkerContext>,
        pool: &PgPool,
        projection: &str,
    ) -> Option<String> {
        if self.joined_at.elapsed() < self.settle {
            return None;
        }
        let lags = match crate::metrics::partition_lags(pool, self.probe.clone(), projection, &self.topics).await {
            Ok(lags) => lags,
            Err(error) => {
                tracing::debug!(error = %error, "projector watchdog: lag not measured");
                return None;
            }
        };
        let assigned = consumer.assignment().ok()?;
        let mine = |topic: &str, partition: i32| assigned.find_partition(topic, partition).is_some();
        let idle_here = self.last_record.elapsed() >= self.patience;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let patience_ms = i64::try_from(self.patience.as_millis()).unwrap_or(i64::MAX);
        let stalled: Vec<String> = lags
            .iter()
            .filter(|lag| lag.waiting > 0)
            // Never advanced: waiting at least since this worker joined.
            .filter(|lag| lag.advanced_at_ms.is_none_or(|at| now_ms - at >= patience_ms))
            .filter(|lag| idle_here || !mine(&lag.topic, lag.partition))
            .map(|lag| format!("{}/{}", lag.topic, lag.partition))
            .collect();
        (!stalled.is_empty()).then(|| stalled.join(", "))
    }
}

/// The `reason` label of `passerelle_projector_dead_letters_total` (a dead letter's reason up
/// to its first colon).
pub const DEAD_LETTER_REASONS: [&str; 4] =
    ["undecodable", "undecodable identity decision", "undecodable territory assignment", "conflict"];

/// Batch size and latency, applied events, dead letters, freshness per territory, and the log
/// time of the last record applied per partition (the lag task reads it). No I/O: the lag
/// itself costs broker round trips and is measured off this loop (`metrics::refresh_lag`).
fn record_metrics(projection: &str, outcome: &Outcome, records: usize, took: Duration) {
    let metrics = crate::metrics::metrics();
    metrics.batch_size.observe(records as f64);
    metrics.apply_seconds.observe(took.as_secs_f64());
    metrics.applied.with_label_values(&[projection]).inc_by(outcome.applied);
    metrics.erased_skipped.with_label_values(&[projection]).inc_by(outcome.erased);
    for letter in &outcome.dead_letters {
        let reason = letter.reason.split(':').next().unwrap_or("other");
        metrics.dead_letters.with_label_values(&[projection, reason]).inc();
    }
    crate::metrics::note_applied(&outcome.last_timestamps);
    crate::metrics::record_folds(projection, &outcome.folds);
    for (territory, at) in &outcome.territories {
        metrics.territory_last_event.with_label_values(&[territory]).set(at / 1000);
    }
}

/// The consumer's callbacks: a rebalance is a crash point for the tests.
struct WorkerContext;

impl rdkafka::ClientContext for WorkerContext {}

impl rdkafka::consumer::ConsumerContext for WorkerContext {
    fn pre_rebalance(
        &self,
        _consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        tracing::debug!(?rebalance, "rebalance");
        crate::failpoint::hit("rebalance");
    }
}

/// Moves the consumer back to the offsets PostgreSQL holds, so the records a gap skipped are
/// applied. Records that retention already deleted from the log cannot be: the stored offset
/// then moves to the log start, loudly.
async fn seek_back(
    consumer: &StreamConsumer<WorkerContext>,
    pool: &PgPool,
    projection: &str,
    stored: &[(String, i32, i64)],
) -> Result<(), Error> {
    for (topic, partition, offset) in stored {
        let (low, _) = consumer.fetch_watermarks(topic, *partition, Duration::from_secs(5))?;
        let position = if low > *offset {
            tracing::error!(
                topic,
                partition,
                from = offset,
                to = low,
                "records deleted from the log before they were projected; the read models miss them"
            );
            let mut conn = pool.acquire().await?;
            passerelle_readmodel::store::events::set_offset(&mut conn, projection, topic, *partition, low).await?;
            low
        } else {
            *offset
        };
        tracing::warn!(
            topic,
            partition,
            offset = position,
            "projector seeking back to the offset stored with the read models"
        );
        consumer.seek(topic, *partition, Offset::Offset(position), Duration::from_secs(5))?;
    }
    Ok(())
}

fn owned(message: &rdkafka::message::BorrowedMessage<'_>) -> Record {
    Record::from_message(message)
}

/// Whether a failed transaction is worth retrying: the database restarting or unreachable,
/// a serialisation failure or deadlock between two workers, two workers minting the same key.
/// Anything else is a bug and stops the worker loudly rather than looping.
fn transient(error: &sqlx::Error) -> bool {
    passerelle_readmodel::database_unavailable(error)
        || matches!(
            error,
            sqlx::Error::Database(database) if matches!(database.code().as_deref(), Some("40001" | "40P01" | "23505"))
        )
}

/// Transient database errors are retried: the transaction left nothing behind.
async fn apply_with_retry(
    applier: &Applier,
    pool: &PgPool,
    batch: &[Record],
    mut decoded: Option<Decoded>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Outcome, Error> {
    let mut delay = Duration::from_millis(100);
    loop {
        // Decoded ahead the first time; decoded again for a retry (a key may have been
        // destroyed meanwhile).
        let attempt = match decoded.take() {
            Some(decoded) => applier.apply_decoded(pool, batch, decoded).await,
            None => applier.apply(pool, batch).await,
        };
        match attempt {
            Ok(outcome) => return Ok(outcome),
            Err(Error::Database(error) | Error::Keys(passerelle_eventlog::Error::Database(error)))
                if transient(&error) =>
            {
                tracing::warn!(error = %error, "batch not applied, retrying");
                if *shutdown.borrow() {
                    return Err(Error::Database(error));
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(error @ (Error::LinkedMeanwhile | Error::KeysDestroyedMeanwhile)) => {
                tracing::info!("{error}");
                if *shutdown.borrow() {
                    return Err(error);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(other) => return Err(other),
        }
    }
}

/// Copies dead letters to the dead-letter topic for tooling, with the reason and where they
/// came from. PostgreSQL's `dead_letters` is the record `passerelle dlq` reads.
async fn publish_dead_letters(producer: &FutureProducer, topic: &str, outcome: &Outcome) {
    for letter in &outcome.dead_letters {
        let partition = letter.record.partition.to_string();
        let offset = letter.record.offset.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header { key: "passerelle-reason", value: Some(letter.reason.as_str()) })
            .insert(Header { key: "passerelle-source-topic", value: Some(letter.record.topic.as_str()) })
            .insert(Header { key: "passerelle-source-partition", value: Some(partition.as_str()) })
            .insert(Header { key: "passerelle-source-offset", value: Some(offset.as_str()) });
        let mut record = FutureRecord::to(topic).headers(headers);
        if let Some(key) = &letter.record.key {
            record = record.key(key.as_slice());
        }
        if let Some(value) = &letter.record.value {
            record = record.payload(value.as_slice());
        }
        if let Err((error, _)) = producer.send(record, Duration::from_secs(5)).await {
            tracing::warn!(error = %error, "dead letter not copied to the topic (kept in PostgreSQL)");
        }
    }
}
