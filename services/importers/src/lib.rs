//! Importers for the files institutions send today: the CNAF RSA flux (XML, windows-1252) and
//! the France Travail CSV extract. They read the file as a stream, turn each record into the
//! facts it implies, and publish them **through the gRPC ingestion API with the credentials
//! they are given**, exactly as an institution's system would.
//!
//! Event ids are derived from the content of each fact (source, household, person, fact,
//! values), never from the file: importing a month twice, or the next month's unchanged facts,
//! yields the same ids. Ids are hashes, so they carry no personal data.

pub mod cnaf;
pub mod dates;
pub mod driver;
pub mod ft_csv;
pub mod generate;

use sha2::{Digest, Sha256};

/// Where a file is wrong: line and reason.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub struct InvalidFile {
    pub file: String,
    pub line: u64,
    pub reason: String,
}

/// A fact id: a readable prefix (`cnaf.sdd`), then 32 hex characters of SHA-256 over the parts.
pub fn fact_id(prefix: &str, parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0x1f]);
    }
    format!("{prefix}.{}", &hex::encode(hasher.finalize())[..32])
}

use std::{path::Path, sync::Arc, sync::atomic::Ordering};

use passerelle_ingest::{
    auth::RELAY_FILE_HEADER,
    proto::{
        allocataire_ingest_client::AllocataireIngestClient, demandeur_emploi_ingest_client::DemandeurEmploiIngestClient,
    },
};
use tonic::transport::Channel;

use crate::driver::{Item, Progress, Summary};

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

/// Imports a CNAF RSA flux through the hub at `channel` (opened with the caller's
/// credentials). With `relay`, the call says the flux is relayed from this file, as a
/// département does for its territory.
pub async fn import_cnaf_flux(path: &Path, channel: Channel, relay: bool, quiet: bool) -> anyhow::Result<Summary> {
    let name = file_name(path);
    let file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    let progress = Arc::new(Progress::default());
    let parse_progress = progress.clone();
    let parse_name = name.clone();
    let parse = move |sender: tokio::sync::mpsc::Sender<Item<passerelle_ingest::proto::AllocataireEvent>>| {
        let warnings = sender.clone();
        cnaf::read_flux(
            &parse_name,
            file,
            |_| {},
            move |warning| drop(warnings.blocking_send(Item::Warning(warning))),
            |header, foyer| {
                parse_progress.records.fetch_add(1, Ordering::Relaxed);
                parse_progress.persons.fetch_add(foyer.persons.len() as u64, Ordering::Relaxed);
                let (events, refusals) = cnaf::events_of(header, &foyer);
                for refusal in refusals {
                    sender
                        .blocking_send(Item::Refused { line: refusal.line, reason: refusal.reason })
                        .map_err(|_| anyhow::anyhow!("the hub stream closed"))?;
                }
                for event in events {
                    sender
                        .blocking_send(Item::Event { line: foyer.line, event })
                        .map_err(|_| anyhow::anyhow!("the hub stream closed"))?;
                }
                Ok(())
            },
        )
        .map(|_| ())
    };
    let mut client = AllocataireIngestClient::new(channel).max_decoding_message_size(16 * 1024 * 1024);
    driver::run(
        "cnaf-flux",
        parse,
        move |mut request| async move {
            if relay {
                let value = name.parse().map_err(|_| tonic::Status::invalid_argument("the file name is not ASCII"))?;
                request.metadata_mut().insert(RELAY_FILE_HEADER, value);
            }
            client.publish_batch(request).await
        },
        progress,
        quiet,
    )
    .await
}

/// Imports a France Travail CSV extract through the hub at `channel`.
pub async fn import_ft_csv(path: &Path, channel: Channel, quiet: bool) -> anyhow::Result<Summary> {
    let name = file_name(path);
    let file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    let progress = Arc::new(Progress::default());
    let parse_progress = progress.clone();
    let parse = move |sender: tokio::sync::mpsc::Sender<Item<passerelle_ingest::proto::DemandeurEmploiEvent>>| {
        ft_csv::read_extract(&name, std::io::BufReader::new(file), |row| {
            parse_progress.records.fetch_add(1, Ordering::Relaxed);
            parse_progress.persons.fetch_add(1, Ordering::Relaxed);
            let items: Vec<_> = match ft_csv::events_of(&row) {
                Ok(events) => events.into_iter().map(|event| Item::Event { line: row.line, event }).collect(),
                Err(reason) => vec![Item::Refused { line: row.line, reason }],
            };
            for item in items {
                sender.blocking_send(item).map_err(|_| anyhow::anyhow!("the hub stream closed"))?;
            }
            Ok(())
        })
        .map(|_| ())
    };
    let mut client = DemandeurEmploiIngestClient::new(channel);
    driver::run("ft-csv", parse, move |request| async move { client.publish_batch(request).await }, progress, quiet)
        .await
}
