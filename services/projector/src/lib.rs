//! The projector: consumes the topics and maintains the read models in PostgreSQL,
//! effectively-once (offsets and applied event ids stored with the effects, in one
//! transaction), with identity resolution and dead letters.

pub mod apply;
pub mod consumer;
pub mod decode;
pub mod dlq;
pub mod erase;
pub mod failpoint;
pub mod identite;
mod identity;
pub mod metrics;
pub mod rebuild;
pub mod refold;
mod store;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("internal: {0}")]
    Internal(String),
    #[error("key store: {0}")]
    Keys(#[from] passerelle_eventlog::Error),
    /// The batch starts beyond the offsets stored with the read models: nothing was applied;
    /// the consumer must seek back to these (topic, partition, next offset) positions.
    #[error("records between the stored offsets and the batch are missing from the read models")]
    Gap(Vec<(String, i32, i64)>),
    /// Another worker linked a key this batch was linking, between the batch's read and its
    /// insert: nothing was applied; applied again, the batch sees that link and resolves the
    /// identity in full (a merge or a contest, never a silent split).
    #[error("a subject key was linked by another worker meanwhile; the batch is applied again")]
    LinkedMeanwhile,
    /// A data key that opened records of the batch was destroyed (an erasure) before it
    /// committed: the batch is applied again, without them.
    #[error("an erasure destroyed a key the batch opened; the batch is applied again")]
    KeysDestroyedMeanwhile,
    /// A fold that went on from the stored state differs from the fold of the whole history
    /// (only checked with `PASSERELLE_FOLD_CHECK=1`): a bug; the worker stops.
    #[error("incremental fold differs from the full fold: {0}")]
    FoldMismatch(String),
}
