//! Reading a topic back from the beginning with a plain Kafka consumer, up to its end.

use std::time::{Duration, Instant};

use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    message::Headers,
};

/// One record as it is on the broker.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Every record of `topic`, per partition in offset order, up to the high watermarks.
pub fn read_all(bootstrap: &str, topic: &str) -> anyhow::Result<Vec<Record>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("e2e-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = metadata.topics().iter().flat_map(|t| t.partitions().iter().map(|p| p.id())).collect();
    let mut assignment = TopicPartitionList::new();
    let mut ends = std::collections::HashMap::new();
    for partition in &partitions {
        let (_, high) = consumer.fetch_watermarks(topic, *partition, Duration::from_secs(10))?;
        ends.insert(*partition, high);
        assignment.add_partition_offset(topic, *partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let mut records = Vec::new();
    let mut done: std::collections::HashMap<i32, bool> = ends.iter().map(|(p, high)| (*p, *high == 0)).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.values().any(|finished| !finished) {
        anyhow::ensure!(Instant::now() < deadline, "timed out reading {topic}");
        let Some(message) = consumer.poll(Duration::from_millis(500)) else { continue };
        let message = message?;
        let headers = message
            .headers()
            .map(|h| {
                h.iter().map(|header| (header.key.to_owned(), header.value.unwrap_or_default().to_vec())).collect()
            })
            .unwrap_or_default();
        records.push(Record {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().unwrap_or_default().to_vec(),
            value: message.payload().unwrap_or_default().to_vec(),
            headers,
        });
        if message.offset() + 1 >= ends[&message.partition()] {
            done.insert(message.partition(), true);
        }
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    Ok(records)
}
