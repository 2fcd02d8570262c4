//! The gRPC ingestion services: institutions push facts, the hub validates and normalises them
//! into canonical events and publishes them on Kafka, answering OK only once the broker
//! acknowledged.

pub mod auth;
pub mod client;
pub mod hub;
pub mod institutions;
pub mod limits;
pub mod metrics;
pub mod normalise;
pub mod reach;
pub mod scope;
pub mod service;
pub mod violations;

pub mod proto {
    tonic::include_proto!("passerelle.ingest.v1");
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("passerelle_ingest_descriptor");
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    EventLog(#[from] passerelle_eventlog::Error),
    #[error("internal: {0}")]
    Internal(&'static str),
}
