//! Kafka plumbing: the producer that acknowledges only what the broker acknowledged, and topic
//! creation.

pub use rdkafka::message::OwnedHeaders as Headers;
use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    error::{KafkaError, RDKafkaErrorCode},
    message::OwnedHeaders,
    producer::{FutureProducer, FutureRecord, Producer},
};

use crate::Error;

/// How the hub talks to the broker.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(default)]
pub struct KafkaSettings {
    /// `host:port[,host:port…]`
    pub bootstrap_servers: String,
    /// Partitions of the topics the hub creates (existing topics are left as they are).
    pub partitions: i32,
    pub replication_factor: i32,
    /// How long a publish may wait for the broker's acknowledgement before the caller gets
    /// UNAVAILABLE. Below 5 s by design: a caller must know quickly.
    pub delivery_timeout_ms: u64,
    /// Prefix of every topic name (side-by-side deployments and tests on one broker).
    pub topic_prefix: String,
    /// librdkafka's idempotent producer (`enable.idempotence`). Off by default: the projectors
    /// remove duplicates by event id and fold facts in their own order, so idempotence buys
    /// nothing here, and tansu 0.6's checks of it stop the broker's storage task after a
    /// broker restart (docs/decisions/0008-no-idempotent-producer-on-tansu.md). On a Kafka
    /// cluster it may be turned on.
    pub idempotence: bool,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            partitions: 6,
            replication_factor: 1,
            delivery_timeout_ms: 4000,
            topic_prefix: String::new(),
            idempotence: false,
        }
    }
}

impl KafkaSettings {
    /// The producer configuration: `acks=all`, idempotent if configured, murmur2 partitioning
    /// (the Java client's, so every client puts one subject on the same partition).
    pub fn producer_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap_servers)
            .set("client.id", "passerelle-ingest")
            .set("acks", "all")
            .set("enable.idempotence", if self.idempotence { "true" } else { "false" })
            .set("max.in.flight.requests.per.connection", "5")
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5")
            .set("message.timeout.ms", self.delivery_timeout_ms.to_string())
            .set("reconnect.backoff.ms", "100")
            .set("reconnect.backoff.max.ms", "1000")
            .set("socket.connection.setup.timeout.ms", "3000")
            .set("topic.metadata.refresh.interval.ms", "10000");
        config
    }
}

/// Where an acknowledged record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// Why a record was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The broker did not acknowledge in time, or is unreachable: retrying later is right.
    #[error("the broker did not acknowledge the event in time ({0})")]
    Unavailable(String),
    /// The broker refused the record for a reason retrying will not fix.
    #[error("the broker refused the event: {0}")]
    Refused(String),
}

/// The hub's producer. A producer that hit a fatal error (possible with idempotence after long
/// outages) is replaced by a fresh one, so the hub recovers without a restart.
pub struct Publisher {
    settings: KafkaSettings,
    producer: RwLock<Arc<FutureProducer>>,
}

impl Publisher {
    pub fn new(settings: KafkaSettings) -> Result<Self, Error> {
        let producer: FutureProducer = settings.producer_config().create()?;
        Ok(Self { settings, producer: RwLock::new(Arc::new(producer)) })
    }

    fn current(&self) -> Arc<FutureProducer> {
        match self.producer.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces a producer that failed to deliver a record (timeout, broker refusal, fatal
    /// error) with a fresh one, unless another caller already did.
    ///
    /// Why: records that time out during an outage leave a gap in the idempotent producer's
    /// sequence numbers. A Kafka broker answers that gap with an epoch bump (KIP-360); tansu 0.6
    /// answers OutOfOrderSequenceNumber and its storage task stops serving, so the broker
    /// would stay unusable after it came back (measured, see docs/decisions/0002-producer-replacement.md).
    /// A fresh producer gets a new producer id and starts its sequences at zero; dropping the
    /// old one purges what it still queued, and those callers were (or will be) answered
    /// UNAVAILABLE, never OK.
    fn replace(&self, failed: &Arc<FutureProducer>) {
        let Ok(mut guard) = self.producer.write() else { return };
        if !Arc::ptr_eq(&guard, failed) {
            return;
        }
        match self.settings.producer_config().create::<FutureProducer>() {
            Ok(fresh) => {
                tracing::warn!("kafka producer replaced after a failed delivery");
                let old = std::mem::replace(&mut *guard, Arc::new(fresh));
                drop(guard);
                // Nothing of the old producer may reach the broker after the gap.
                old.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
            }
            Err(error) => tracing::error!(error = %error, "kafka producer could not be recreated"),
        }
    }

    /// Hands one record to the producer without waiting. Records enqueued one after the other
    /// keep their order within a partition unless a retry reorders them (without idempotence),
    /// which the projectors do not need; callers enqueue in order and wait for
    /// acknowledgements concurrently.
    pub fn enqueue(
        self: &Arc<Self>,
        topic: &str,
        key: &str,
        value: &[u8],
        headers: OwnedHeaders,
    ) -> Result<Pending, PublishError> {
        let producer = self.current();
        let record = FutureRecord::to(topic).key(key).payload(value).headers(headers);
        match producer.send_result(record) {
            Ok(delivery) => Ok(Pending { publisher: self.clone(), producer, delivery }),
            Err((error, _)) => Err(classify(&error)),
        }
    }

    /// Publishes one record and waits for the broker's acknowledgement, at most the delivery
    /// timeout.
    pub async fn publish(
        self: &Arc<Self>,
        topic: &str,
        key: &str,
        value: &[u8],
        headers: OwnedHeaders,
    ) -> Result<Delivered, PublishError> {
        self.enqueue(topic, key, value, headers)?.wait().await
    }

    /// Whether the broker answers a metadata request (readiness). Blocking: call it off the
    /// async runtime.
    pub fn broker_reachable(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.current().client().fetch_metadata(None, timeout).map(|_| ())
    }

    /// Flushes what is in flight (graceful shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(error) = self.current().flush(timeout) {
            tracing::warn!(error = %error, "kafka flush incomplete at shutdown");
        }
    }
}

/// A record handed to the producer, not yet acknowledged.
pub struct Pending {
    publisher: Arc<Publisher>,
    producer: Arc<FutureProducer>,
    delivery: rdkafka::producer::DeliveryFuture,
}

impl Pending {
    /// Waits for the broker's acknowledgement, at most the delivery timeout (plus a margin for
    /// librdkafka's own timer): never a false OK, never an endless wait.
    pub async fn wait(self) -> Result<Delivered, PublishError> {
        let deadline = Duration::from_millis(self.publisher.settings.delivery_timeout_ms + 500);
        match tokio::time::timeout(deadline, self.delivery).await {
            Err(_) => {
                self.publisher.replace(&self.producer);
                Err(PublishError::Unavailable("no acknowledgement before the deadline".into()))
            }
            Ok(Err(_cancelled)) => {
                self.publisher.replace(&self.producer);
                Err(PublishError::Unavailable("the producer dropped the event".into()))
            }
            Ok(Ok(Ok(delivery))) => Ok(Delivered { partition: delivery.partition, offset: delivery.offset }),
            Ok(Ok(Err((error, _)))) => {
                self.publisher.replace(&self.producer);
                Err(classify(&error))
            }
        }
    }
}

fn classify(error: &KafkaError) -> PublishError {
    match error.rdkafka_error_code() {
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::InvalidMessage
            | RDKafkaErrorCode::TopicAuthorizationFailed
            | RDKafkaErrorCode::InvalidRecord,
        ) => PublishError::Refused(error.to_string()),
        _ => PublishError::Unavailable(error.to_string()),
    }
}

/// Creates the topics that do not exist yet.
pub async fn ensure_topics(settings: &KafkaSettings, topics: &[String]) -> Result<(), Error> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &settings.bootstrap_servers)
        .set("socket.connection.setup.timeout.ms", "5000")
        .create()?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|name| NewTopic::new(name, settings.partitions, TopicReplication::Fixed(settings.replication_factor)))
        .collect();
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics(&new_topics, &options).await?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(Error::Kafka(KafkaError::AdminOp(code))).inspect_err(|_| {
                    tracing::error!(topic, code = %code, "topic could not be created");
                });
            }
        }
    }
    Ok(())
}
