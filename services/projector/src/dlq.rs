//! Dead letters, for operators: listed without personal data, replayed once the cause is fixed
//! (a schema or code fix, a conflict settled at the source).

use std::time::Duration;

use passerelle_readmodel::store::ops;
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    Error,
    apply::{Applier, Record},
};

pub use passerelle_readmodel::store::ops::DeadLetter;

pub async fn list(pool: &PgPool, include_replayed: bool) -> Result<Vec<DeadLetter>, Error> {
    Ok(ops::dead_letters(&mut *pool.acquire().await?, include_replayed).await?)
}

/// Reads the record a dead letter came from, back from the broker.
fn fetch(bootstrap: &str, topic: &str, partition: i32, offset: i64) -> Result<Record, Error> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("passerelle-dlq-{}", Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, Offset::Offset(offset))?;
    consumer.assign(&assignment)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(500)) else { continue };
        let message = message?;
        if message.offset() == offset {
            return Ok(Record::from_message(&message));
        }
    }
    Err(Error::Internal(format!("{topic}/{partition}@{offset} could not be read back (retention?)")))
}

/// The outcome of a replay: the dead letter is settled, or still failing with a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replayed {
    Settled,
    StillFailing(String),
}

/// Replays one dead letter: the record is read back from its topic and applied again. Once it
/// applies, the dossier it concerns is complete again unless other dead letters remain.
pub async fn replay(pool: &PgPool, applier: &Applier, bootstrap: &str, dead_letter_id: i64) -> Result<Replayed, Error> {
    let letter = ops::dead_letter(&mut *pool.acquire().await?, dead_letter_id)
        .await?
        .ok_or_else(|| Error::Internal(format!("no dead letter {dead_letter_id}")))?;
    let (bootstrap, topic) = (bootstrap.to_owned(), letter.topic.clone());
    let record = tokio::task::spawn_blocking(move || fetch(&bootstrap, &topic, letter.partition, letter.offset))
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
    let outcome = applier.replay(pool, &[record]).await?;
    if let Some(still) = outcome.dead_letters.first() {
        return Ok(Replayed::StillFailing(still.reason.clone()));
    }
    let subject = ops::mark_replayed(&mut *pool.acquire().await?, dead_letter_id).await?;
    let person_id = match (letter.person_id, subject) {
        (Some(person_id), _) => Some(person_id),
        (None, Some(key)) => passerelle_readmodel::person_of_subject(pool, &key).await?,
        (None, None) => None,
    };
    if let Some(person_id) = person_id {
        passerelle_readmodel::store::events::recompute_incomplete(&mut *pool.acquire().await?, person_id).await?;
    }
    Ok(Replayed::Settled)
}
