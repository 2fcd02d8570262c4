//! The projector: consumes the topics and maintains the read models in PostgreSQL,
//! effectively-once (offsets and applied event ids stored with the effects, in one
//! transaction), with identity resolution and dead letters.

pub mod apply;
pub mod consumer;
pub mod dlq;
pub mod erase;
pub mod fold;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("internal: {0}")]
    Internal(String),
}
