//! Limits of the ingestion API, per institution, so that one information system (or one
//! compromised certificate) cannot starve the others: the size of one message, the events of
//! one batch stream, the batch streams open at once, and the events per second. Over a limit a
//! call gets RESOURCE_EXHAUSTED naming the limit (and, for the rate, when to retry); a batch
//! stream is paced to the rate instead of refused, so an import goes on at the rate it is
//! allowed. Each refusal is counted in `passerelle_ingest_limited_total{limit}`.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, Mutex},
};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock as _};
use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

/// `ingest.limits` in the configuration.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct IngestLimitsConfig {
    /// Largest message accepted (bytes): one event, or one event of a batch stream.
    pub message_bytes: usize,
    /// Events one batch stream may carry; an import above it opens another stream.
    pub events_per_stream: u64,
    /// Batch streams one institution may have open at once.
    pub streams_per_institution: u32,
    /// Events per second one institution may sustain, and the burst above it.
    pub events_per_second: u32,
    pub events_burst: u32,
}

impl Default for IngestLimitsConfig {
    fn default() -> Self {
        Self {
            message_bytes: 64 * 1024,
            events_per_stream: 2_000_000,
            streams_per_institution: 8,
            events_per_second: 5_000,
            events_burst: 50_000,
        }
    }
}

/// The events a batch stream prepares together, at most: the burst is never below it (a chunk
/// waits for its whole share of the rate at once).
pub const CHUNK: u32 = 64;

pub struct IngestLimits {
    pub config: IngestLimitsConfig,
    rate: DefaultKeyedRateLimiter<String>,
    streams: Mutex<HashMap<String, Arc<Semaphore>>>,
}

fn exhausted(limit: &str, message: String) -> Status {
    crate::metrics::metrics().limited.with_label_values(&[limit]).inc();
    Status::resource_exhausted(format!("limit {limit}: {message}"))
}

impl IngestLimits {
    pub fn new(config: IngestLimitsConfig) -> Self {
        let per_second = NonZeroU32::new(config.events_per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(config.events_burst.max(CHUNK)).unwrap_or(NonZeroU32::MIN);
        Self {
            config,
            rate: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
            streams: Mutex::default(),
        }
    }

    /// One event of a unary call: within the institution's rate, or RESOURCE_EXHAUSTED with
    /// when to retry.
    pub fn event(&self, institution: &str) -> Result<(), Status> {
        self.rate.check_key(&institution.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            exhausted(
                "events_per_second",
                format!(
                    "institution {institution} may publish {} events per second (burst {}); retry in {} ms with the same event_id",
                    self.config.events_per_second,
                    self.config.events_burst.max(CHUNK),
                    wait.as_millis().max(1)
                ),
            )
        })
    }

    /// Waits until `events` more events of a batch stream fit the institution's rate.
    pub async fn pace(&self, institution: &str, events: usize) {
        let Some(events) = NonZeroU32::new(u32::try_from(events).unwrap_or(CHUNK).min(CHUNK)) else { return };
        // `events` ≤ CHUNK ≤ burst: the capacity is always sufficient.
        if self.rate.until_key_n_ready(&institution.to_owned(), events).await.is_err() {
            tracing::error!(institution, "a batch stream's chunk exceeds the burst; not paced");
        }
    }

    /// A place for one more batch stream of the institution, held until the stream ends; or
    /// RESOURCE_EXHAUSTED when all its places are taken.
    pub fn open_stream(&self, institution: &str) -> Result<OwnedSemaphorePermit, Status> {
        let semaphore = {
            let mut streams = self.streams.lock().map_err(|_| Status::internal("stream limits unavailable"))?;
            streams
                .entry(institution.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.config.streams_per_institution.max(1) as usize)))
                .clone()
        };
        semaphore.try_acquire_owned().map_err(|_| {
            exhausted(
                "streams_per_institution",
                format!(
                    "institution {institution} already has {} batch streams open; wait for one to end",
                    self.config.streams_per_institution.max(1)
                ),
            )
        })
    }

    /// The refusal of the event past the end of a stream's allowance.
    pub fn stream_full(&self) -> Status {
        exhausted(
            "events_per_stream",
            format!(
                "a batch stream carries at most {} events; the events before were answered, send the rest in another stream",
                self.config.events_per_stream
            ),
        )
    }

    /// Forgets the rate buckets that are full again (called periodically).
    pub fn forget_idle(&self) {
        self.rate.retain_recent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_institution_over_its_rate_is_refused_and_another_is_not() {
        let limits = IngestLimits::new(IngestLimitsConfig {
            events_per_second: 1,
            events_burst: 1,
            ..IngestLimitsConfig::default()
        });
        // The burst is never below a chunk.
        for _ in 0..CHUNK {
            assert!(limits.event("caf-521").is_ok());
        }
        let refused = limits.event("caf-521").expect_err("over the burst");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("limit events_per_second"), "{}", refused.message());
        assert!(limits.event("cd-52").is_ok(), "another institution has its own bucket");
    }

    #[test]
    fn an_institution_has_so_many_streams_at_once() {
        let limits =
            IngestLimits::new(IngestLimitsConfig { streams_per_institution: 2, ..IngestLimitsConfig::default() });
        let first = limits.open_stream("caf-521").expect("first");
        let _second = limits.open_stream("caf-521").expect("second");
        let refused = limits.open_stream("caf-521").expect_err("third");
        assert!(refused.message().contains("limit streams_per_institution"), "{}", refused.message());
        assert!(limits.open_stream("cd-52").is_ok(), "another institution's streams are its own");
        drop(first);
        assert!(limits.open_stream("caf-521").is_ok(), "a stream that ends gives its place back");
    }
}
