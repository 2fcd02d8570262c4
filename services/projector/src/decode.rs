//! The first phase of a batch: each record unframed, read with its writer schema, opened with
//! its subject's data key when sealed, and decoded into an event, an identity decision or a
//! territory assignment. No read-model table is touched; the schemas come from the registry
//! (cached) and the data keys from the key store, the batch's keys in one read.

use std::collections::{HashMap, HashSet};

use passerelle_domain::event::Family;
use passerelle_eventlog::{
    affectation::{self, TerritoryAssignment},
    codec::LoggedEvent,
    framing,
    identity::{self, IdentityDecision},
    registry::Registry,
    schemas::Stream,
    sealed,
    shredding::{DataKey, KeyStore},
};
use uuid::Uuid;

use crate::{Error, apply::Record};

/// A decoded record of a batch.
pub enum Item {
    Decision(Result<IdentityDecision, String>),
    Assignment(Result<TerritoryAssignment, String>),
    Event(Result<Box<LoggedEvent>, String>),
    /// A sealed record whose subject's key was destroyed: an erased person's, skipped.
    Shredded,
}

/// A batch decoded ahead of its transaction: each record's item, in the batch's order, and the
/// data keys that opened them (held when the batch commits).
pub struct Decoded {
    pub items: Vec<Item>,
    pub keys: BatchKeys,
}

/// The data keys of a batch's sealed records: live ones, and those an erasure destroyed (a key
/// in neither is unknown to this hub).
#[derive(Default)]
pub struct BatchKeys {
    pub live: HashMap<Uuid, DataKey>,
    pub destroyed: HashSet<Uuid>,
}

/// A record's value, unframed and read with its writer schema.
enum Framed {
    Clear(Vec<u8>, std::sync::Arc<passerelle_eventlog::Schema>),
    Sealed(sealed::SealedRecord),
    Unreadable(String),
}

/// A record's content, opened.
enum Opened {
    Content(Vec<u8>, std::sync::Arc<passerelle_eventlog::Schema>),
    Shredded,
    Undecodable(String),
}

/// Decodes the records of one projection's topics.
pub struct Decoder {
    registry: Registry,
    /// The data keys that open sealed records.
    pub(crate) keys: KeyStore,
    families: HashMap<String, Family>,
    pub(crate) identity_topic: Option<String>,
    pub(crate) affectation_topic: Option<String>,
}

impl Decoder {
    pub fn new(registry: Registry, keys: KeyStore, families: HashMap<String, Family>) -> Self {
        Self { registry, keys, families, identity_topic: None, affectation_topic: None }
    }

    /// Decodes `records` (each read once; the data keys of the sealed ones in one read, with
    /// those an erasure destroyed). A database that cannot be reached fails the batch, which is
    /// decoded again: a record is never taken for an erased person's for want of its schema or
    /// key.
    pub async fn decode(&self, records: &[Record]) -> Result<Decoded, Error> {
        let mut framed = Vec::with_capacity(records.len());
        for record in records {
            framed.push((record, self.read(record).await?));
        }
        let mut key_ids: Vec<Uuid> = framed
            .iter()
            .filter_map(|(_, read)| match read {
                Framed::Sealed(sealed_record) => Some(sealed_record.sealed.key_id),
                _ => None,
            })
            .collect();
        key_ids.sort_unstable();
        key_ids.dedup();
        let mut keys = if key_ids.is_empty() {
            BatchKeys::default()
        } else {
            let live = self.keys.keys_by_id(&key_ids).await?;
            let missing: Vec<Uuid> = key_ids.iter().copied().filter(|id| !live.contains_key(id)).collect();
            let destroyed = self.keys.destroyed_among(&missing).await?;
            BatchKeys { live, destroyed }
        };
        let mut items = Vec::with_capacity(framed.len());
        for (record, read) in framed {
            let item = if self.identity_topic.as_deref() == Some(record.topic.as_str()) {
                self.decision(read, &mut keys).await?
            } else if self.affectation_topic.as_deref() == Some(record.topic.as_str()) {
                Item::Assignment(match read {
                    Framed::Clear(datum, schema) => affectation::decode(&datum, &schema).map_err(|e| e.to_string()),
                    Framed::Sealed(_) => Err("a territory assignment is never sealed".into()),
                    Framed::Unreadable(reason) => Err(reason),
                })
            } else {
                self.event(record, read, &keys)
            };
            items.push(item);
        }
        Ok(Decoded { items, keys })
    }

    /// The subject key of a record: from its data key when sealed, else its Kafka key.
    pub async fn subject_of(&self, record: &Record) -> Result<Option<String>, Error> {
        match self.read(record).await? {
            Framed::Sealed(sealed_record) => Ok(self.keys.subject_of(sealed_record.sealed.key_id).await?),
            _ => Ok(record.key.as_deref().map(|key| String::from_utf8_lossy(key).into_owned())),
        }
    }

    /// A record's value, unframed once: in clear (version 1 of its schema, written before
    /// sealing), sealed (its data key named), or unreadable (dead-lettered when decoded).
    async fn read(&self, record: &Record) -> Result<Framed, Error> {
        let Some(value) = record.value.as_deref() else {
            return Ok(Framed::Unreadable("a record without value".into()));
        };
        let (schema_id, datum) = match framing::unframe(value) {
            Ok(unframed) => unframed,
            Err(error) => return Ok(Framed::Unreadable(error.to_string())),
        };
        let schema = match self.registry.schema_by_id(schema_id).await {
            Ok(schema) => schema,
            Err(passerelle_eventlog::Error::Database(error)) => return Err(Error::Database(error)),
            Err(error) => return Ok(Framed::Unreadable(error.to_string())),
        };
        if !sealed::is_sealed(&schema) {
            return Ok(Framed::Clear(datum.to_vec(), schema));
        }
        Ok(match sealed::read(datum, &schema) {
            Ok(sealed_record) => Framed::Sealed(sealed_record),
            Err(error) => Framed::Unreadable(error.to_string()),
        })
    }

    /// The content of a record and the schema it follows: opened with its subject's key when
    /// sealed. `Opened::Shredded` when that key was destroyed (an erased person).
    fn open(framed: Framed, stream: Stream, keys: &BatchKeys) -> Opened {
        let sealed_record = match framed {
            Framed::Clear(datum, schema) => return Opened::Content(datum, schema),
            Framed::Unreadable(reason) => return Opened::Undecodable(reason),
            Framed::Sealed(sealed_record) => sealed_record,
        };
        let key_id = sealed_record.sealed.key_id;
        let Some(key) = keys.live.get(&key_id) else {
            if keys.destroyed.contains(&key_id) {
                return Opened::Shredded;
            }
            return Opened::Undecodable(format!(
                "its data key {key_id} is unknown to this hub (a database restored from a backup older than the record?)"
            ));
        };
        match sealed::open(stream, &sealed_record, key) {
            Ok((content, schema)) => Opened::Content(content, schema),
            Err(error) => Opened::Undecodable(error.to_string()),
        }
    }

    async fn decision(&self, framed: Framed, keys: &mut BatchKeys) -> Result<Item, Error> {
        let mut decision = match Self::open(framed, Stream::Identity, &*keys) {
            Opened::Content(datum, schema) => match identity::decode(&datum, &schema) {
                Ok(decision) => decision,
                Err(error) => return Ok(Item::Decision(Err(error.to_string()))),
            },
            Opened::Shredded => return Ok(Item::Shredded),
            Opened::Undecodable(reason) => return Ok(Item::Decision(Err(reason))),
        };
        // The holder and the claimant, each named under their own key: an erased one's name no
        // longer opens, and the decision is theirs to forget.
        for name in [&mut decision.holder_key, &mut decision.claimant_key] {
            let Some(key_id) = sealed::sealed_name_key(name) else { continue };
            let key = match self.keys.key_by_id(key_id).await {
                Ok(key) => key,
                Err(passerelle_eventlog::Error::Shredded) => return Ok(Item::Shredded),
                Err(error) => return Err(error.into()),
            };
            match sealed::open_name(Stream::Identity, name, &key) {
                Ok(opened) => *name = opened,
                Err(error) => return Ok(Item::Decision(Err(error.to_string()))),
            }
            // Held until the batch commits, as the records' keys: an erasure of the holder or
            // the claimant meanwhile fails the batch, which is decoded again without it.
            keys.live.insert(key_id, key);
        }
        Ok(Item::Decision(Ok(decision)))
    }

    fn event(&self, record: &Record, framed: Framed, keys: &BatchKeys) -> Item {
        let Some(family) = self.families.get(&record.topic).copied() else {
            return Item::Event(Err(format!("no family for topic {}", record.topic)));
        };
        match Self::open(framed, Stream::Facts(family), keys) {
            Opened::Content(datum, schema) => Item::Event(
                passerelle_eventlog::codec::decode(family, &datum, &schema).map(Box::new).map_err(|e| e.to_string()),
            ),
            Opened::Shredded => Item::Shredded,
            Opened::Undecodable(reason) => Item::Event(Err(reason)),
        }
    }
}
