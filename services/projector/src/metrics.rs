//! Metrics of the projection workers, declared once (documented in docs/metrics.md).

use std::sync::OnceLock;

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts};

pub struct ProjectorMetrics {
    /// `passerelle_projector_events_applied_total{projection}`
    pub applied: IntCounterVec,
    /// `passerelle_projector_erased_records_skipped_total{projection}`: sealed records whose
    /// subject's key was destroyed (an erased person's), skipped.
    pub erased_skipped: IntCounterVec,
    /// `passerelle_projector_dead_letters_total{projection, reason}`: undecodable, conflict.
    pub dead_letters: IntCounterVec,
    /// `passerelle_projector_batch_size`: records per transaction.
    pub batch_size: Histogram,
    /// `passerelle_projector_apply_seconds`: one batch's transaction.
    pub apply_seconds: Histogram,
    /// `passerelle_projector_lag_messages{projection, topic, partition}`
    pub lag_messages: IntGaugeVec,
    /// `passerelle_projector_lag_seconds{projection, topic, partition}`: how old the last
    /// applied record is while records wait behind it (0 when caught up).
    pub lag_seconds: IntGaugeVec,
    /// `passerelle_projector_territory_last_event_timestamp_seconds{territory}`: when the
    /// latest event applied for a territory reached the log.
    pub territory_last_event: IntGaugeVec,
    /// `passerelle_readmodel_unlinked_persons`: persons known by a secondary id only.
    pub unlinked_persons: IntGauge,
    /// `passerelle_projector_group_rejoins_total{projection}`: times a worker left and rejoined
    /// its consumer group because a partition with records waiting made no progress (the
    /// watchdog, `consumer::Watchdog`).
    pub group_rejoins: IntCounterVec,
    /// `passerelle_projector_folds_total{projection, subject, fold}`: dossiers and households
    /// folded at the end of a batch, `incremental` (on from the stored state) or `full` (the
    /// whole history read again: a first fact, a late fact, a correction, a merge).
    pub folds: IntCounterVec,
}

pub fn metrics() -> &'static ProjectorMetrics {
    static METRICS: OnceLock<ProjectorMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let metrics = ProjectorMetrics {
            applied: counter("projector_events_applied_total", "events applied to the read models", &["projection"]),
            erased_skipped: counter(
                "projector_erased_records_skipped_total",
                "records of erased persons (their data key destroyed), skipped",
                &["projection"],
            ),
            dead_letters: counter(
                "projector_dead_letters_total",
                "records dead-lettered (undecodable, conflict)",
                &["projection", "reason"],
            ),
            batch_size: Histogram::with_opts(
                HistogramOpts::new("projector_batch_size", "records per projection transaction")
                    .buckets(vec![1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0]),
            )
            .expect("valid metric"),
            apply_seconds: Histogram::with_opts(
                HistogramOpts::new("projector_apply_seconds", "duration of one projection transaction")
                    .buckets(vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            )
            .expect("valid metric"),
            lag_messages: gauge(
                "projector_lag_messages",
                "records on the log not yet applied",
                &["projection", "topic", "partition"],
            ),
            lag_seconds: gauge(
                "projector_lag_seconds",
                "age of the last applied record while records wait behind it",
                &["projection", "topic", "partition"],
            ),
            territory_last_event: gauge(
                "projector_territory_last_event_timestamp_seconds",
                "when the latest event applied for the territory reached the log (Unix time)",
                &["territory"],
            ),
            unlinked_persons: IntGauge::new(
                "readmodel_unlinked_persons",
                "persons known by a secondary identifier only, waiting for a NIR link",
            )
            .expect("valid metric"),
            group_rejoins: counter(
                "projector_group_rejoins_total",
                "times a worker rejoined its consumer group because a partition with records waiting made no progress",
                &["projection"],
            ),
            folds: counter(
                "projector_folds_total",
                "dossiers and households folded, incrementally from the stored state or over the whole history",
                &["projection", "subject", "fold"],
            ),
        };
        let registry = passerelle_telemetry::registry();
        for collector in [
            Box::new(metrics.applied.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.dead_letters.clone()),
            Box::new(metrics.erased_skipped.clone()),
            Box::new(metrics.batch_size.clone()),
            Box::new(metrics.apply_seconds.clone()),
            Box::new(metrics.lag_messages.clone()),
            Box::new(metrics.lag_seconds.clone()),
            Box::new(metrics.territory_last_event.clone()),
            Box::new(metrics.unlinked_persons.clone()),
            Box::new(metrics.group_rejoins.clone()),
            Box::new(metrics.folds.clone()),
        ] {
            drop(registry.register(collector));
        }
        metrics
    })
}

/// The (`subject`, `fold`) labels of `passerelle_projector_folds_total`.
pub const FOLD_LABELS: [(&str, &str); 4] =
    [("dossier", "incremental"), ("dossier", "full"), ("household", "incremental"), ("household", "full")];

/// Counts a batch's folds.
pub fn record_folds(projection: &str, folds: &crate::refold::Folds) {
    let counts = [folds.dossiers_on, folds.dossiers_full, folds.households_on, folds.households_full];
    for ((subject, fold), count) in FOLD_LABELS.into_iter().zip(counts) {
        metrics().folds.with_label_values(&[projection, subject, fold]).inc_by(count);
    }
}

/// Counts the persons known by a secondary identifier only (no NIR linked): FT-only or
/// département-only persons whose link may still come.
pub async fn refresh_unlinked(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    let count = passerelle_readmodel::store::ops::unlinked_persons(&mut *pool.acquire().await?).await?;
    metrics().unlinked_persons.set(count);
    Ok(())
}

fn last_applied() -> &'static std::sync::Mutex<std::collections::HashMap<(String, i32), i64>> {
    static LAST: OnceLock<std::sync::Mutex<std::collections::HashMap<(String, i32), i64>>> = OnceLock::new();
    LAST.get_or_init(Default::default)
}

/// Remembers the log time (ms) of the last record applied per partition.
pub fn note_applied(timestamps: &std::collections::BTreeMap<(String, i32), i64>) {
    if let Ok(mut last) = last_applied().lock() {
        for (slot, at) in timestamps {
            last.insert(slot.clone(), *at);
        }
    }
}

/// One partition of a projected topic, as the broker and PostgreSQL see it.
#[derive(Debug, Clone)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// Records on the log not yet applied.
    pub waiting: i64,
    /// Since when the projection's stored offset last moved (ms since the Unix epoch), if it
    /// ever did.
    pub advanced_at_ms: Option<i64>,
}

/// The brokers' high watermarks (a blocking client, called off the async runtime) against the
/// next offsets PostgreSQL holds, per partition of `topics`. A partition the broker does not
/// answer for is left out.
pub async fn partition_lags(
    pool: &sqlx::PgPool,
    client: std::sync::Arc<rdkafka::consumer::BaseConsumer>,
    projection: &str,
    topics: &[String],
) -> Result<Vec<PartitionLag>, crate::Error> {
    use rdkafka::consumer::Consumer as _;
    let stored = passerelle_readmodel::store::ops::stored_offsets(&mut *pool.acquire().await?, projection).await?;
    let wanted = topics.to_vec();
    let watermarks = tokio::task::spawn_blocking(move || {
        let mut highs = Vec::new();
        for topic in &wanted {
            let Ok(metadata) = client.fetch_metadata(Some(topic), std::time::Duration::from_secs(5)) else { continue };
            for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
                if let Ok((_, high)) = client.fetch_watermarks(topic, partition.id(), std::time::Duration::from_secs(5))
                {
                    highs.push((topic.clone(), partition.id(), high));
                }
            }
        }
        highs
    })
    .await
    .map_err(|e| crate::Error::Internal(e.to_string()))?;
    Ok(watermarks
        .into_iter()
        .map(|(topic, partition, high)| {
            let row = stored.iter().find(|stored| stored.topic == topic && stored.partition == partition);
            PartitionLag {
                waiting: (high - row.map_or(0, |stored| stored.next_offset)).max(0),
                advanced_at_ms: row.map(|stored| stored.updated_at_ms),
                topic,
                partition,
            }
        })
        .collect())
}

/// Measures the lag of `projection` on `topics` ([`partition_lags`]) into the lag gauges: the
/// records waiting and, where records wait, the age of the last one applied (its log time in
/// the process that applied it; elsewhere, since the projection last advanced on that
/// partition). It reads only the broker and the database, so any hub process measures it: a
/// projector that stopped, or died, shows as lag in the processes still running.
pub async fn refresh_lag(
    pool: &sqlx::PgPool,
    client: std::sync::Arc<rdkafka::consumer::BaseConsumer>,
    projection: &str,
    topics: &[String],
) -> Result<(), crate::Error> {
    let lags = partition_lags(pool, client, projection, topics).await?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let last = last_applied().lock().map(|l| l.clone()).unwrap_or_default();
    let metrics = metrics();
    for lag in lags {
        let partition_label = lag.partition.to_string();
        let labels = [projection, lag.topic.as_str(), partition_label.as_str()];
        metrics.lag_messages.with_label_values(&labels).set(lag.waiting);
        let since = last.get(&(lag.topic.clone(), lag.partition)).copied().or(lag.advanced_at_ms);
        let age = match since {
            Some(at) if lag.waiting > 0 => ((now_ms - at) / 1000).max(0),
            // Records wait and this partition was never applied: since the first one waits is
            // unknown here; the message lag says it.
            _ => 0,
        };
        metrics.lag_seconds.with_label_values(&labels).set(age);
    }
    Ok(())
}
