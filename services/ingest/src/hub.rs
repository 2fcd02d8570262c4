//! Publishing canonical events: seal the personal fields with the subject's data key, encode the
//! event (version 1 of the family's schema), seal it whole under the same key (version 2, the
//! writer schema: docs/decisions/0007-erasure-that-forgets.md), frame, and hand to the producer
//! keyed by the data key's random id.

use std::{collections::HashMap, sync::Arc};

use passerelle_domain::{
    EventId,
    event::{
        CanonicalEvent, Envelope, Family, InstitutionKind, PERSON_SOURCE, Payload, PersonalData, Source, SubjectKey,
    },
};
use passerelle_eventlog::{
    codec::{self, LoggedEvent},
    framing,
    kafka::{Delivered, Pending, PublishError, Publisher},
    registry::{Registry, WriterSchema},
    schemas::{self, Stream, Topics},
    sealed,
    shredding::{self, KeyStore},
    subject::SubjectKeys,
};
use rdkafka::message::OwnedHeaders;

use crate::{Error, institutions::Institutions};

/// Everything the ingestion services share.
pub struct IngestHub {
    pub keys: SubjectKeys,
    pub institutions: Institutions,
    store: KeyStore,
    /// Per family: the sealed record's schema (and id), and the schema of its content.
    writers: HashMap<Family, (WriterSchema, Arc<passerelle_eventlog::Schema>)>,
    publisher: Arc<Publisher>,
    topics: Topics,
    /// The hub's state (read models) that decides a département's reach.
    state: sqlx::PgPool,
    /// Per-institution limits of the gRPC API.
    pub limits: crate::limits::IngestLimits,
}

/// An event ready for the producer.
pub struct Prepared {
    pub family: Family,
    pub event_id: String,
    /// The Kafka key: the random id of the subject's data key (its pseudonym on the log).
    pub log_key: String,
    pub topic: String,
    /// Where the hub placed the fact: its RSA authority, `69` while it waits "à affecter", empty
    /// when it says nothing of where it belongs (a retraction, a fact without location).
    pub territory: String,
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
        state: sqlx::PgPool,
    ) -> Result<Self, Error> {
        let mut writers = HashMap::new();
        for family in Family::ALL {
            let content = schemas::committed(Stream::Facts(family), schemas::CONTENT_VERSION)?;
            writers.insert(family, (registry.writer(family).await?, content));
        }
        Ok(Self {
            keys,
            institutions,
            store,
            writers,
            publisher,
            topics,
            state,
            limits: crate::limits::IngestLimits::new(Default::default()),
        })
    }

    /// The same hub with these limits instead of the defaults.
    pub fn with_limits(mut self, config: crate::limits::IngestLimitsConfig) -> Self {
        self.limits = crate::limits::IngestLimits::new(config);
        self
    }

    /// Decides each event against what the hub holds about its person ([`crate::reach`]): one
    /// query for all the events that need it.
    pub async fn check_reach<'a>(
        &self,
        institution: &crate::institutions::Institution,
        events: impl IntoIterator<Item = &'a CanonicalEvent>,
    ) -> Result<Vec<Result<(), crate::scope::Denied>>, Error> {
        let events: Vec<&CanonicalEvent> = events.into_iter().collect();
        let keys: Vec<String> = events
            .iter()
            .filter(|event| crate::reach::needs_hub_state(institution, event))
            .flat_map(|event| {
                std::iter::once(&event.envelope.subject)
                    .chain(&event.envelope.linked_keys)
                    .map(|k| k.as_str().to_owned())
            })
            .collect();
        let held = if keys.is_empty() {
            Vec::new()
        } else {
            passerelle_readmodel::held_authorities(&self.state, &keys)
                .await
                .map_err(passerelle_eventlog::Error::Database)?
        };
        Ok(events
            .into_iter()
            .map(|event| {
                if crate::reach::needs_hub_state(institution, event) {
                    crate::reach::check(institution, event, &held)
                } else {
                    Ok(())
                }
            })
            .collect())
    }

    /// Seals, encodes and frames an event.
    pub async fn prepare(&self, event: CanonicalEvent) -> Result<Prepared, Error> {
        self.prepare_many(vec![event]).await?.pop().ok_or(Error::Internal("nothing prepared"))
    }

    /// Seals, encodes and frames events, in order: the subjects' data keys are read (or
    /// created) and the search index written in one statement each, whatever their number.
    pub async fn prepare_many(&self, events: Vec<CanonicalEvent>) -> Result<Vec<Prepared>, Error> {
        let subjects: Vec<&passerelle_domain::event::SubjectKey> = events.iter().map(|e| &e.envelope.subject).collect();
        let keys = if subjects.is_empty() { Default::default() } else { self.keys_of(&subjects).await? };
        // The blind index of the name and birth date, for the API's search (hub state, not on
        // the log: see the migration 0002_search_index.sql).
        let search: Vec<(String, String)> = events
            .iter()
            .filter_map(|event| match (&event.personal.nom, event.personal.date_naissance) {
                (Some(nom), Some(date)) => Some((
                    self.keys.name_and_birth_date(nom, date).as_str().to_owned(),
                    event.envelope.subject.as_str().to_owned(),
                )),
                _ => None,
            })
            .collect();
        self.with_retry(|| self.store.index_many_for_search(&search)).await?;
        let mut prepared = Vec::with_capacity(events.len());
        for event in events {
            let (writer, content_schema) =
                self.writers.get(&event.family).ok_or(Error::Internal("no writer schema for a family"))?;
            let key = keys.get(event.envelope.subject.as_str()).ok_or(Error::Internal("no data key for a subject"))?;
            let personal = if event.personal.is_empty() {
                None
            } else {
                let plaintext =
                    serde_json::to_vec(&event.personal).map_err(|_| Error::Internal("personal data serialisation"))?;
                let associated = shredding::associated_data(
                    "personal",
                    event.family.label(),
                    &event.envelope.source.institution,
                    key.key_id,
                    event.envelope.event_id.as_str(),
                );
                Some(key.seal(&plaintext, &associated)?)
            };
            let stream = Stream::Facts(event.family);
            let logged =
                LoggedEvent { family: event.family, envelope: event.envelope, payload: event.payload, personal };
            let content = codec::encode(&logged, content_schema)?;
            let datum = sealed::seal(stream, key, &content, &writer.schema)?;
            prepared.push(Prepared {
                family: logged.family,
                event_id: logged.envelope.event_id.as_str().to_owned(),
                log_key: key.key_id.to_string(),
                topic: self.topics.topic(logged.family),
                territory: logged.envelope.territory.clone().unwrap_or_default(),
                value: framing::frame(writer.id, &datum),
                traceparent: passerelle_telemetry::traceparent(),
            });
        }
        Ok(prepared)
    }

    async fn keys_of(
        &self,
        subjects: &[&passerelle_domain::event::SubjectKey],
    ) -> Result<std::collections::HashMap<String, passerelle_eventlog::shredding::DataKey>, Error> {
        self.with_retry(|| self.store.keys_for_subjects(subjects)).await
    }

    /// Runs a key-store operation again after a deadlock or serialisation failure with a
    /// concurrent caller (it left nothing behind), a few times.
    async fn with_retry<T, F, Fut>(&self, operation: F) -> Result<T, Error>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, passerelle_eventlog::Error>>,
    {
        let mut attempt = 0;
        loop {
            match operation().await {
                Err(passerelle_eventlog::Error::Database(sqlx::Error::Database(error)))
                    if attempt < 5 && matches!(error.code().as_deref(), Some("40P01" | "40001")) =>
                {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(5 * attempt)).await;
                }
                other => return Ok(other?),
            }
        }
    }

    /// Hands a prepared event to the producer, keyed by its subject.
    pub fn enqueue(&self, prepared: &Prepared) -> Result<Pending, PublishError> {
        let mut headers = OwnedHeaders::new();
        if let Some(traceparent) = &prepared.traceparent {
            headers = headers.insert(rdkafka::message::Header { key: "traceparent", value: Some(traceparent) });
        }
        self.publisher.enqueue(&prepared.topic, &prepared.log_key, &prepared.value, headers)
    }

    pub async fn publish(&self, prepared: &Prepared) -> Result<Delivered, PublishError> {
        self.enqueue(prepared)?.wait().await
    }

    /// Records a choice the person made in their own space (opposition, consent) as a fact on
    /// the orientation topic, whose source is the person ([`PERSON_SOURCE`]), keyed by one of
    /// their subject keys (`subject`, which the hub's state holds for them: the caller takes it
    /// from the signed-in person, never from a request). Returns the event id once the broker
    /// acknowledged it.
    pub async fn record_person_choice(&self, subject: SubjectKey, choice: Payload) -> Result<EventId, ChoiceError> {
        if !choice.is_person_choice() {
            return Err(ChoiceError::NotAChoice);
        }
        let now = chrono::Utc::now();
        let event_id = EventId::parse(&format!("choix-{}", uuid::Uuid::now_v7()))
            .map_err(|_| ChoiceError::Prepare(Error::Internal("a choice's event id")))?;
        let event = CanonicalEvent {
            family: Family::Orientation,
            envelope: Envelope {
                event_id: event_id.clone(),
                occurred_at: now,
                recorded_at: now,
                source: Source {
                    institution: PERSON_SOURCE.to_owned(),
                    kind: InstitutionKind::Personne,
                    relayed_by: None,
                    relay_file: None,
                },
                linked_keys: vec![subject.clone()],
                subject,
                household: None,
                territory: None,
                commune: None,
                corrects_event_id: None,
            },
            payload: choice,
            personal: PersonalData::default(),
        };
        let prepared = self.prepare(event).await.map_err(ChoiceError::Prepare)?;
        self.publish(&prepared).await.map_err(ChoiceError::Publish)?;
        crate::metrics::metrics().person_choices.inc();
        Ok(event_id)
    }
}

/// Why a person's choice was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum ChoiceError {
    #[error("only opposition and consent are a person's own choices")]
    NotAChoice,
    #[error("the choice could not be prepared: {0}")]
    Prepare(Error),
    #[error("the broker did not acknowledge the choice: {0}")]
    Publish(PublishError),
}
