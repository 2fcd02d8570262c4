//! The event log: canonical Avro events with Confluent framing, the schema registry that lets
//! standard clients decode them, crypto-shredding of personal fields, and Kafka plumbing.

pub use apache_avro::Schema;

pub mod affectation;
pub mod codec;
pub mod framing;
pub mod identity;
pub mod kafka;
pub mod registry;
pub mod schemas;
pub mod sealed;
pub mod secrets;
pub mod shredding;
pub mod subject;

/// Migrations of the tables this crate owns (data keys, schema registry). Versions below 1000;
/// the read models' start at 1001 and each migrator ignores the other's.
pub fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("avro: {0}")]
    Avro(String),
    #[error("framing: {0}")]
    Framing(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("the data key of this subject was destroyed (erased person): its personal fields are unreadable")]
    Shredded,
    #[error("crypto: {0}")]
    Crypto(&'static str),
    #[error("secret {name}: {reason}")]
    Secret { name: &'static str, reason: String },
    #[error("schema registry: {0}")]
    Registry(String),
    #[error("decode: {0}")]
    Decode(String),
}

impl From<apache_avro::Error> for Error {
    fn from(error: apache_avro::Error) -> Self {
        Error::Avro(error.to_string())
    }
}
