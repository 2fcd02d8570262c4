//! Importers for the files institutions send today: the CNAF RSA flux (XML, windows-1252) and
//! the France Travail CSV extract. They read the file as a stream, turn each record into the
//! facts it implies, and publish them **through the gRPC ingestion API with the credentials
//! they are given**, exactly as an institution's system would.
//!
//! Event ids are derived from the content of each fact (source, household, person, fact,
//! values), never from the file: importing a month twice, or the next month's unchanged facts,
//! yields the same ids. Ids are keyed hashes (HMAC-SHA-256 under the id key of the source, an
//! [`IdKey`]): they carry no personal data, and nobody without that key (the hub's operators
//! included) can recompute one from a NIR and a matricule.

pub mod cnaf;
pub mod csv_rows;
pub mod dates;
pub mod driver;
pub mod ft_csv;
pub mod generate;
pub mod structure_csv;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Where a file is wrong: line and reason.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub struct InvalidFile {
    pub file: String,
    pub line: u64,
    pub reason: String,
}

/// The key of a source's fact ids: 32 bytes, held by the institution that owns the facts (a
/// caisse, France Travail) and by whoever imports its files for it (a relaying département gets
/// the caisse's). The same key gives the same ids, so a re-import is recognised.
#[derive(Clone)]
pub struct IdKey([u8; 32]);

impl std::fmt::Debug for IdKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdKey(<redacted>)")
    }
}

impl IdKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Reads a key file of 64 hexadecimal characters.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            anyhow::anyhow!(
                "cannot read the id key {}: {e} (the source's key of fact ids; create one with: openssl rand -hex 32 > {}, and keep it: another key gives other ids)",
                path.display(),
                path.display()
            )
        })?;
        let bytes = hex::decode(text.trim())
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| anyhow::anyhow!("{}: an id key is 64 hexadecimal characters", path.display()))?;
        Ok(Self(bytes))
    }
}

/// A fact id: a readable prefix (`cnaf.sdd`), then 32 hex characters of HMAC-SHA-256 over the
/// parts, under the source's id key.
pub fn fact_id(key: &IdKey, prefix: &str, parts: &[&str]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key.0).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part.as_bytes());
        mac.update(&[0x1f]);
    }
    format!("{prefix}.{}", &hex::encode(mac.finalize().into_bytes())[..32])
}

use std::{path::Path, sync::Arc, sync::atomic::Ordering};

use passerelle_ingest::{
    auth::RELAY_FILE_HEADER,
    proto::{
        allocataire_ingest_client::AllocataireIngestClient,
        demandeur_emploi_ingest_client::DemandeurEmploiIngestClient, parcours_ingest_client::ParcoursIngestClient,
    },
};
use tonic::transport::Channel;

use crate::driver::{Item, Progress, Summary};

/// The file to import, and its name for the summary and the refusals.
fn open_file(path: &Path) -> anyhow::Result<(String, std::fs::File)> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string());
    let file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    Ok((name, file))
}

/// Sends the events a record of the file implies to the hub's stream, or the importer's refusal
/// of the record.
fn send<T>(
    sender: &tokio::sync::mpsc::Sender<Item<T>>,
    line: u64,
    events: Result<Vec<T>, String>,
) -> anyhow::Result<()> {
    let items: Vec<Item<T>> = match events {
        Ok(events) => events.into_iter().map(|event| Item::Event { line, event }).collect(),
        Err(reason) => vec![Item::Refused { line, reason }],
    };
    for item in items {
        sender.blocking_send(item).map_err(|_| anyhow::anyhow!("the hub stream closed"))?;
    }
    Ok(())
}

/// Imports a CNAF RSA flux through the hub at `channel` (opened with the caller's
/// credentials). With `relay`, the call says the flux is relayed from this file, as a
/// département does for its territory.
pub async fn import_cnaf_flux(
    path: &Path,
    channel: Channel,
    id_key: &IdKey,
    relay: bool,
    quiet: bool,
) -> anyhow::Result<Summary> {
    let id_key = id_key.clone();
    let (name, file) = open_file(path)?;
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
                let (events, refusals) = cnaf::events_of(&id_key, header, &foyer);
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
pub async fn import_ft_csv(path: &Path, channel: Channel, id_key: &IdKey, quiet: bool) -> anyhow::Result<Summary> {
    let id_key = id_key.clone();
    let (name, file) = open_file(path)?;
    let progress = Arc::new(Progress::default());
    let parse_progress = progress.clone();
    let parse = move |sender: tokio::sync::mpsc::Sender<Item<passerelle_ingest::proto::DemandeurEmploiEvent>>| {
        ft_csv::read_extract(&name, std::io::BufReader::new(file), |row| {
            parse_progress.records.fetch_add(1, Ordering::Relaxed);
            parse_progress.persons.fetch_add(1, Ordering::Relaxed);
            send(&sender, row.line, ft_csv::events_of(&id_key, &row))
        })
        .map(|_| ())
    };
    let mut client = DemandeurEmploiIngestClient::new(channel);
    driver::run("ft-csv", parse, move |request| async move { client.publish_batch(request).await }, progress, quiet)
        .await
}

/// Imports a structure's parcours export (CSV separated by ";", [`structure_csv`]) through the
/// hub at `channel`, opened with the structure's credentials: the hub accepts the facts of the
/// persons it accompanies and refuses the others, row by row.
pub async fn import_structure_csv(
    path: &Path,
    channel: Channel,
    id_key: &IdKey,
    quiet: bool,
) -> anyhow::Result<Summary> {
    let id_key = id_key.clone();
    let (name, file) = open_file(path)?;
    let progress = Arc::new(Progress::default());
    let parse_progress = progress.clone();
    let parse = move |sender: tokio::sync::mpsc::Sender<Item<passerelle_ingest::proto::ParcoursEvent>>| {
        let refusals = sender.clone();
        structure_csv::read_export(
            &name,
            std::io::BufReader::new(file),
            |person| {
                parse_progress.records.fetch_add(person.rows.len() as u64, Ordering::Relaxed);
                parse_progress.persons.fetch_add(1, Ordering::Relaxed);
                send(&sender, person.first_line, structure_csv::events_of(&id_key, &person))
            },
            |line, reason| {
                refusals
                    .blocking_send(Item::Refused { line, reason })
                    .map_err(|_| anyhow::anyhow!("the hub stream closed"))
            },
        )
        .map(|_| ())
    };
    let mut client = ParcoursIngestClient::new(channel);
    driver::run(
        "structure-csv",
        parse,
        move |request| async move { client.publish_batch(request).await },
        progress,
        quiet,
    )
    .await
}
