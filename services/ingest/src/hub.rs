//! Publishing canonical events: seal the personal fields with the subject's data key, encode to
//! Avro with the family's registered schema, frame, and hand to the producer.

use std::{collections::HashMap, sync::Arc};

use passerelle_domain::event::{CanonicalEvent, Family};
use passerelle_eventlog::{
    codec::{self, LoggedEvent},
    framing,
    kafka::{Delivered, Pending, PublishError, Publisher},
    registry::{Registry, WriterSchema},
    schemas::Topics,
    shredding::KeyStore,
    subject::SubjectKeys,
};
use rdkafka::message::OwnedHeaders;

use crate::{Error, institutions::Institutions};

/// Everything the ingestion services share.
pub struct IngestHub {
    pub keys: SubjectKeys,
    pub institutions: Institutions,
    store: KeyStore,
    writers: HashMap<Family, WriterSchema>,
    publisher: Arc<Publisher>,
    topics: Topics,
}

/// An event ready for the producer.
pub struct Prepared {
    pub family: Family,
    pub event_id: String,
    pub subject_key: String,
    pub topic: String,
    pub value: Vec<u8>,
    /// The W3C trace context of the call, carried in the `traceparent` header.
    pub traceparent: Option<String>,
}

impl IngestHub {
    pub async fn new(
        keys: SubjectKeys,
        institutions: Institutions,
        store: KeyStore,
        registry: &Registry,
        publisher: Arc<Publisher>,
        topics: Topics,
    ) -> Result<Self, Error> {
        let mut writers = HashMap::new();
        for family in Family::ALL {
            writers.insert(family, registry.writer(family).await?);
        }
        Ok(Self { keys, institutions, store, writers, publisher, topics })
    }

    /// Seals, encodes and frames an event.
    pub async fn prepare(&self, event: CanonicalEvent) -> Result<Prepared, Error> {
        let writer = self.writers.get(&event.family).ok_or(Error::Internal("no writer schema for a family"))?;
        let personal = if event.personal.is_empty() {
            None
        } else {
            let key = self.store.key_for_subject(&event.envelope.subject).await?;
            let plaintext =
                serde_json::to_vec(&event.personal).map_err(|_| Error::Internal("personal data serialisation"))?;
            Some(key.seal(&plaintext, event.envelope.event_id.as_str().as_bytes())?)
        };
        // The blind index of the name and birth date, for the API's search (hub state, not on
        // the log: see the migration 0002_search_index.sql).
        if let (Some(nom), Some(date)) = (&event.personal.nom, event.personal.date_naissance) {
            let search_key = self.keys.name_and_birth_date(nom, date);
            self.store.index_for_search(search_key.as_str(), &event.envelope.subject).await?;
        }
        let logged = LoggedEvent { family: event.family, envelope: event.envelope, payload: event.payload, personal };
        let datum = codec::encode(&logged, &writer.schema)?;
        Ok(Prepared {
            family: logged.family,
            event_id: logged.envelope.event_id.as_str().to_owned(),
            subject_key: logged.envelope.subject.as_str().to_owned(),
            topic: self.topics.topic(logged.family),
            value: framing::frame(writer.id, &datum),
            traceparent: passerelle_telemetry::traceparent(),
        })
    }

    /// Hands a prepared event to the producer, keyed by its subject.
    pub fn enqueue(&self, prepared: &Prepared) -> Result<Pending, PublishError> {
        let mut headers = OwnedHeaders::new();
        if let Some(traceparent) = &prepared.traceparent {
            headers = headers.insert(rdkafka::message::Header { key: "traceparent", value: Some(traceparent) });
        }
        self.publisher.enqueue(&prepared.topic, &prepared.subject_key, &prepared.value, headers)
    }

    pub async fn publish(&self, prepared: &Prepared) -> Result<Delivered, PublishError> {
        self.enqueue(prepared)?.wait().await
    }
}
