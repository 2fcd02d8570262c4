//! `passerelle projections rebuild`: replays the topics from the beginning into fresh tables (a
//! sibling schema) while the current ones keep serving, catches up with the live projection, and
//! swaps the schemas in one transaction. See docs/projector.md, "Rebuild".

use std::{collections::BTreeMap, time::Duration};

use passerelle_readmodel::store::schema;
use rdkafka::{
    ClientConfig, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
};
use sqlx::{Connection, PgPool};

use crate::{
    Error,
    apply::{Applier, Record},
};

pub use passerelle_readmodel::store::schema::{REBUILD_SCHEMA, RETIRED_SCHEMA};

/// What a rebuild did.
#[derive(Debug, Clone, Default)]
pub struct Rebuilt {
    pub records: u64,
    pub applied: u64,
    pub dead_letters: u64,
    pub persons: i64,
}

/// Progress, for the operator.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub records: u64,
    pub total: u64,
}

/// Creates the empty rebuild schema: the read-model tables. An erased person's records are
/// sealed under destroyed keys: the rebuild cannot read them.
pub async fn prepare(admin: &PgPool) -> Result<(), Error> {
    let mut tx = admin.begin().await?;
    schema::create_rebuild(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Replays every partition of `topics` from the beginning into the rebuild schema (through
/// `pool`, whose search_path puts it first), then swaps it in under the live offsets' lock.
pub async fn run(
    admin: &PgPool,
    pool: &PgPool,
    applier: &Applier,
    bootstrap_servers: &str,
    topics: &[String],
    live_schema: &str,
    mut progress: impl FnMut(Progress),
) -> Result<Rebuilt, Error> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap_servers)
        .set("group.id", format!("passerelle-rebuild-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    let mut total = 0u64;
    // The end of each partition when the replay starts: the replay runs until it reaches them.
    let mut ends: BTreeMap<(String, i32), (i64, i64)> = BTreeMap::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            assignment.add_partition_offset(topic, partition.id(), Offset::Beginning)?;
            let (low, high) = consumer.fetch_watermarks(topic, partition.id(), Duration::from_secs(10))?;
            total += u64::try_from(high - low).unwrap_or_default();
            ends.insert((topic.clone(), partition.id()), (low, high));
        }
    }
    consumer.assign(&assignment)?;

    let mut done = Rebuilt::default();
    let mut reached: BTreeMap<(String, i32), i64> = BTreeMap::new();
    // Catch up without blocking anyone, until every partition reaches its end as it was when
    // the replay started. An empty poll is not the end: a busy broker can pause for seconds
    // (breaking off there left the whole rest of the log to the 60 s under the lock below).
    let mut last_progress = tokio::time::Instant::now();
    loop {
        let batch = read_batch(&consumer, 500, Duration::from_millis(500))?;
        if batch.is_empty() {
            let at_end = ends.iter().all(|(slot, (low, high))| reached.get(slot).copied().unwrap_or(*low) >= *high);
            if at_end {
                break;
            }
            if last_progress.elapsed() > Duration::from_secs(120) {
                return Err(Error::Internal(
                    "the rebuild read nothing from the log for 120 s before reaching its end; nothing was swapped"
                        .into(),
                ));
            }
            continue;
        }
        last_progress = tokio::time::Instant::now();
        apply(pool, applier, &batch, &mut done, &mut reached).await?;
        progress(Progress { records: done.records, total: total.max(done.records) });
    }

    // Swap: the live projection cannot commit a batch while this lock is held; the rebuild
    // applies what it still misses of the live offsets, then the schemas trade names.
    let mut swap = admin.acquire().await?;
    let mut tx = swap.begin().await?;
    let live = schema::lock_live_offsets(&mut tx, live_schema, &applier.projection).await?;
    let behind = |reached: &BTreeMap<(String, i32), i64>| {
        live.iter().any(|(topic, partition, next)| {
            topics.contains(topic) && reached.get(&(topic.clone(), *partition)).copied().unwrap_or(0) < *next
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while behind(&reached) {
        if tokio::time::Instant::now() > deadline {
            return Err(Error::Internal(
                "the rebuild could not reach the live projection's offsets within 60 s; nothing was swapped".into(),
            ));
        }
        let batch = read_batch(&consumer, 500, Duration::from_millis(200))?;
        apply(pool, applier, &batch, &mut done, &mut reached).await?;
    }
    // Erasures made while the rebuild ran applied to its schema too (erase.rs).
    schema::swap(&mut tx, live_schema).await?;
    tx.commit().await?;
    // A live batch that waited on the lock commits into the retired tables; the worker then
    // finds a gap in the new ones and seeks back (apply.rs), so dropping them loses nothing.
    schema::drop_schema(&mut swap, RETIRED_SCHEMA).await?;
    done.persons = schema::dossiers_in(&mut swap, live_schema).await?;
    Ok(done)
}

fn read_batch(consumer: &BaseConsumer, max: usize, wait: Duration) -> Result<Vec<Record>, Error> {
    let mut batch = Vec::new();
    let deadline = std::time::Instant::now() + wait;
    while batch.len() < max {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        match consumer.poll(left) {
            None => break,
            Some(Ok(message)) => batch.push(Record::from_message(&message)),
            Some(Err(error)) => {
                tracing::warn!(error = %error, "rebuild consumer error, retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    Ok(batch)
}

async fn apply(
    pool: &PgPool,
    applier: &Applier,
    batch: &[Record],
    done: &mut Rebuilt,
    reached: &mut BTreeMap<(String, i32), i64>,
) -> Result<(), Error> {
    if batch.is_empty() {
        return Ok(());
    }
    let outcome = applier.apply(pool, batch).await?;
    done.records += batch.len() as u64;
    done.applied += outcome.applied;
    done.dead_letters += outcome.dead_letters.len() as u64;
    reached.extend(outcome.offsets);
    Ok(())
}
