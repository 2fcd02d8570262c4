//! Applying a batch of records to the read models in one PostgreSQL transaction, with the
//! Kafka offsets it reaches and the (source, event_id) pairs it applies. A crash anywhere
//! replays the batch; records below the stored offsets are skipped, and a pair already applied
//! is skipped again, so nothing is applied twice.

use std::collections::{BTreeMap, HashMap, HashSet};

use passerelle_domain::event::{Family, Payload, SubjectKey};
use passerelle_eventlog::{
    affectation::TerritoryAssignment, codec::LoggedEvent, identity::IdentityDecision, registry::Registry,
    shredding::KeyStore,
};
use passerelle_readmodel::store::events::{self, Applying, EventRow, Mark};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::{
    Error,
    decode::{Decoded, Decoder, Item},
    identity::{self, Known},
    refold,
    store::Pending,
};

/// A record as read from the broker.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// When the record reached the log (Kafka timestamp, milliseconds).
    pub timestamp_ms: Option<i64>,
    /// The W3C trace context of the ingestion call (header `traceparent`).
    pub traceparent: Option<String>,
}

impl Record {
    pub fn from_message(message: &impl rdkafka::Message) -> Self {
        use rdkafka::message::Headers as _;
        let header = |name: &str| {
            message.headers().and_then(|headers| {
                headers
                    .iter()
                    .find(|header| header.key == name)
                    .and_then(|header| header.value)
                    .map(|value| String::from_utf8_lossy(value).into_owned())
            })
        };
        Self {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            timestamp_ms: message.timestamp().to_millis(),
            traceparent: header("traceparent"),
        }
    }
}

/// A record that could not be decoded or applied.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub record: Record,
    pub reason: String,
    pub person_id: Option<Uuid>,
}

/// What a batch did.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub applied: u64,
    pub duplicates: u64,
    pub already_past: u64,
    /// Records of erased persons (their subject's key destroyed), skipped.
    pub erased: u64,
    pub dead_letters: Vec<DeadLetter>,
    /// Next offset per (topic, partition) after the batch.
    pub offsets: BTreeMap<(String, i32), i64>,
    /// Per territory, the log time (ms) of the latest event applied for it.
    pub territories: BTreeMap<String, i64>,
    /// Per (topic, partition), the log time (ms) of the last record of the batch.
    pub last_timestamps: BTreeMap<(String, i32), i64>,
    /// How the touched dossiers and households were folded.
    pub folds: refold::Folds,
}

/// What a test runs right before a batch commits (to hold a transaction open).
pub type Hold =
    std::sync::Arc<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync>;

/// Applies batches for one projection.
pub struct Applier {
    pub projection: String,
    decoder: Decoder,
    hold_before_commit: Option<Hold>,
    /// Every fold from the stored state checked against the full fold ([`refold::CHECK_VARIABLE`]).
    check_folds: bool,
}

impl Applier {
    pub fn new(
        projection: impl Into<String>,
        registry: Registry,
        keys: KeyStore,
        families: HashMap<String, Family>,
    ) -> Self {
        Self {
            projection: projection.into(),
            decoder: Decoder::new(registry, keys, families),
            hold_before_commit: None,
            check_folds: std::env::var(refold::CHECK_VARIABLE).is_ok_and(|value| value == "1"),
        }
    }

    /// For the concurrency tests only: runs `hold` with each batch's transaction open, its
    /// refolds done, right before it commits.
    #[doc(hidden)]
    pub fn holding_before_commit(mut self, hold: Hold) -> Self {
        self.hold_before_commit = Some(hold);
        self
    }

    /// Checks every incremental fold against the full fold, or not, whatever
    /// [`refold::CHECK_VARIABLE`] says.
    pub fn checking_folds(mut self, check: bool) -> Self {
        self.check_folds = check;
        self
    }

    /// Also applies the human identity decisions published on `topic`.
    pub fn with_identity_topic(mut self, topic: impl Into<String>) -> Self {
        self.decoder.identity_topic = Some(topic.into());
        self
    }

    /// Also applies ops' decisions on the authority of foyers waiting "à affecter", published
    /// on `topic`.
    pub fn with_affectation_topic(mut self, topic: impl Into<String>) -> Self {
        self.decoder.affectation_topic = Some(topic.into());
        self
    }

    /// Records (source, event_id) as applied by this projection; false when it already was.
    async fn record_applied(
        &self,
        conn: &mut PgConnection,
        source: &str,
        event_id: String,
        fingerprint: Vec<u8>,
        record: &Record,
    ) -> Result<bool, Error> {
        let pair = Applying {
            source: source.to_owned(),
            event_id,
            fingerprint,
            topic: record.topic.clone(),
            partition: record.partition,
            offset: record.offset,
        };
        Ok(events::record_applied_one(conn, &self.projection, &pair).await?)
    }

    /// An identity decision: applied once (deduplicated like any event, by its decision id).
    async fn apply_identity(
        &self,
        conn: &mut PgConnection,
        record: &Record,
        decision: &IdentityDecision,
        touched: &mut refold::Touched,
    ) -> Result<Applied, Error> {
        let fingerprint = Sha256::digest(
            format!(
                "{}|{}|{}|{}",
                decision.subject_key,
                decision.holder_key,
                decision.claimant_key,
                decision.decision.code()
            )
            .as_bytes(),
        )
        .to_vec();
        let decision_id = decision.decision_id.to_string();
        if !self.record_applied(conn, "passerelle.identite", decision_id, fingerprint, record).await? {
            return Ok(Applied::Duplicate);
        }
        let persons = identity::apply_decision(conn, decision).await?;
        touched.rewritten_persons(persons);
        Ok(Applied::New)
    }

    /// Ops' decision on a foyer waiting "à affecter": applied once; the latest decision on a
    /// foyer holds. Its waiting facts (and those placed by an earlier decision) take the
    /// authority, and its members' dossiers and its right state fold again in full.
    async fn apply_assignment(
        &self,
        conn: &mut PgConnection,
        record: &Record,
        assignment: &TerritoryAssignment,
        touched: &mut refold::Touched,
    ) -> Result<Applied, Error> {
        let fingerprint = Sha256::digest(
            format!(
                "{}|{}|{}",
                assignment.household_key,
                assignment.authority,
                assignment.decided_at.timestamp_millis()
            )
            .as_bytes(),
        )
        .to_vec();
        let decision_id = assignment.decision_id.to_string();
        if !self.record_applied(conn, "passerelle.affectation", decision_id.clone(), fingerprint, record).await? {
            return Ok(Applied::Duplicate);
        }
        // Before the decision is recorded, so that a worker storing a waiting fact of the foyer
        // at the same time either is seen here or sees the decision under the lock (`store::dossiers::lock`).
        passerelle_readmodel::store::dossiers::lock_household(conn, &assignment.household_key).await?;
        let persons = passerelle_readmodel::territory::assign(
            conn,
            passerelle_readmodel::territory::Assignment {
                household_key: &assignment.household_key,
                authority: &assignment.authority,
                decided_at: assignment.decided_at,
                decided_by: &assignment.decided_by,
                decision_id: &decision_id,
            },
        )
        .await?;
        if !persons.is_empty() {
            touched.rewritten_persons(persons);
            touched.rewritten_households([assignment.household_key.clone()]);
        }
        Ok(Applied::New)
    }

    /// Decodes `records` ahead of their transaction (no read-model table touched), so that a
    /// worker decodes its next batch while PostgreSQL applies the current one.
    pub async fn decode(&self, records: &[Record]) -> Result<Decoded, Error> {
        self.decoder.decode(records).await
    }

    /// Applies `records` (in offset order per partition) in one transaction.
    pub async fn apply(&self, pool: &sqlx::PgPool, records: &[Record]) -> Result<Outcome, Error> {
        let decoded = self.decode(records).await?;
        self.apply_in(pool, records, decoded, Mode::Stream).await
    }

    /// Applies `records`, decoded by [`Applier::decode`], in one transaction. A data key that
    /// opened them and was destroyed since (an erasure) fails the batch with
    /// [`Error::KeysDestroyedMeanwhile`]: decode it again.
    pub async fn apply_decoded(
        &self,
        pool: &sqlx::PgPool,
        records: &[Record],
        decoded: Decoded,
    ) -> Result<Outcome, Error> {
        self.apply_in(pool, records, decoded, Mode::Stream).await
    }

    /// Applies dead-lettered records again (after a fix), outside the stream's offsets.
    pub async fn replay(&self, pool: &sqlx::PgPool, records: &[Record]) -> Result<Outcome, Error> {
        let decoded = self.decode(records).await?;
        self.apply_in(pool, records, decoded, Mode::Replay).await
    }

    async fn apply_in(
        &self,
        pool: &sqlx::PgPool,
        records: &[Record],
        decoded: Decoded,
        mode: Mode,
    ) -> Result<Outcome, Error> {
        let Decoded { items: decoded_items, keys: data_keys } = decoded;
        if decoded_items.len() != records.len() {
            return Err(Error::Internal("a batch applied with the items of another".into()));
        }
        let mut outcome = Outcome::default();
        let mut tx = pool.begin().await?;
        let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for record in records.iter().filter(|_| mode == Mode::Stream) {
            let slot = (record.topic.clone(), record.partition);
            if next.contains_key(&slot) {
                continue;
            }
            // Locked: a worker that lost this partition in a rebalance waits here, then finds
            // the offset moved and applies nothing twice.
            let stored = events::claim_offset(&mut tx, &self.projection, &record.topic, record.partition).await?;
            next.insert(slot, stored);
        }
        // A partition whose first record lies beyond the stored offset: records in between were
        // consumed but their effects are not here (a batch committed into tables a rebuild has
        // since replaced, a database restored from a backup). Nothing is applied; the worker
        // seeks back to the stored offsets.
        let mut gaps = Vec::new();
        for ((topic, partition), stored) in &next {
            let first = records.iter().find(|r| &r.topic == topic && r.partition == *partition).map(|r| r.offset);
            if first.is_some_and(|first| first > *stored) {
                gaps.push((topic.clone(), *partition, *stored));
            }
        }
        if !gaps.is_empty() {
            return Err(Error::Gap(next.iter().map(|((t, p), o)| (t.clone(), *p, *o)).collect()));
        }
        // Decoded ahead; the records below the stored offsets (applied by an earlier batch or
        // another worker) are left out. Then what the batch needs to know is read, and its
        // (source, event_id) pairs recorded, each in one statement.
        let mut items = Vec::with_capacity(records.len());
        for (record, item) in records.iter().zip(decoded_items) {
            if mode == Mode::Stream {
                let slot = (record.topic.clone(), record.partition);
                let position = next.get(&slot).copied().unwrap_or_default();
                if record.offset < position {
                    outcome.already_past += 1;
                    continue;
                }
                next.insert(slot, record.offset + 1);
            }
            items.push((record, item));
        }
        let mut keys: Vec<String> = Vec::new();
        let mut candidates: Vec<Uuid> = Vec::new();
        let mut pairs: Vec<Applying> = Vec::new();
        let mut first_seen: HashMap<(String, String), Vec<u8>> = HashMap::new();
        for (record, item) in &items {
            let Item::Event(Ok(event)) = item else { continue };
            let envelope = &event.envelope;
            let names = identity::identity_names(&envelope.linked_keys, &envelope.subject);
            keys.extend(names.iter().map(|k| (*k).to_owned()));
            keys.push(envelope.subject.as_str().to_owned());
            candidates.push(passerelle_readmodel::person_id_for(names[0]));
            let pair = (envelope.source.institution.clone(), envelope.event_id.as_str().to_owned());
            if !first_seen.contains_key(&pair) {
                let fingerprint = fingerprint(event);
                first_seen.insert(pair.clone(), fingerprint.clone());
                pairs.push(Applying {
                    source: pair.0,
                    event_id: pair.1,
                    fingerprint,
                    topic: record.topic.clone(),
                    partition: record.partition,
                    offset: record.offset,
                });
            }
        }
        keys.sort_unstable();
        keys.dedup();
        let dedupe = events::record_applied(&mut tx, &self.projection, pairs).await?;
        let mut known = Known::read(&mut tx, keys, candidates).await?;
        let mut pending = Pending::default();
        // Pairs this batch has applied (a second publication in the same batch is a duplicate).
        let mut applied_here: HashSet<(String, String)> = HashSet::new();
        let mut touched = refold::Touched::default();
        for (index, (record, item)) in items.iter().enumerate() {
            if index == items.len() / 2 && mode == Mode::Stream {
                crate::failpoint::hit("mid-batch");
            }
            match item {
                Item::Decision(Ok(decision)) => {
                    pending.flush(&mut tx).await?;
                    match self.apply_identity(&mut tx, record, decision, &mut touched).await? {
                        Applied::New => outcome.applied += 1,
                        _ => outcome.duplicates += 1,
                    }
                    known.refresh(&mut tx).await?;
                }
                Item::Assignment(Ok(assignment)) => {
                    pending.flush(&mut tx).await?;
                    match self.apply_assignment(&mut tx, record, assignment, &mut touched).await? {
                        Applied::New => outcome.applied += 1,
                        _ => outcome.duplicates += 1,
                    }
                }
                Item::Assignment(Err(reason)) => outcome.dead_letters.push(DeadLetter {
                    record: (*record).clone(),
                    reason: format!("undecodable territory assignment: {reason}"),
                    person_id: None,
                }),
                Item::Shredded => outcome.erased += 1,
                Item::Decision(Err(reason)) => outcome.dead_letters.push(DeadLetter {
                    record: (*record).clone(),
                    reason: format!("undecodable identity decision: {reason}"),
                    person_id: None,
                }),
                Item::Event(Err(reason)) => {
                    pending.flush(&mut tx).await?;
                    let person_id = match self.decoder.subject_of(record).await? {
                        Some(subject) => passerelle_readmodel::store::identity::person_of(&mut tx, &subject).await?,
                        None => None,
                    };
                    outcome.dead_letters.push(DeadLetter {
                        record: (*record).clone(),
                        reason: format!("undecodable: {reason}"),
                        person_id,
                    });
                }
                Item::Event(Ok(event)) => {
                    // One span per event, in the trace of the call that published it.
                    let span = tracing::info_span!(
                        "projector.apply",
                        projection = self.projection.as_str(),
                        topic = record.topic.as_str(),
                        partition = record.partition,
                        offset = record.offset,
                        event_type = event.payload.event_type(),
                        trace_id = tracing::field::Empty
                    );
                    if let Some(traceparent) = &record.traceparent {
                        passerelle_telemetry::follow(&span, traceparent);
                    }
                    passerelle_telemetry::record_trace_id(&span);
                    let pair = (event.envelope.source.institution.clone(), event.envelope.event_id.as_str().to_owned());
                    let status = if dedupe.new.contains(&pair) && applied_here.insert(pair.clone()) {
                        Status::New
                    } else {
                        let seen = dedupe.seen.get(&pair).or_else(|| first_seen.get(&pair));
                        if seen.is_some_and(|seen| *seen == fingerprint(event)) {
                            Status::Duplicate
                        } else {
                            Status::Conflict
                        }
                    };
                    let applied = self
                        .apply_event(&mut tx, &mut known, &mut pending, &mut touched, status, event)
                        .instrument(span)
                        .await?;
                    match applied {
                        Applied::New => {
                            outcome.applied += 1;
                            if let (Some(territory), Some(at)) = (&event.envelope.territory, record.timestamp_ms) {
                                let latest = outcome.territories.entry(territory.clone()).or_insert(at);
                                *latest = (*latest).max(at);
                            }
                        }
                        Applied::Duplicate => outcome.duplicates += 1,
                        Applied::Conflict { person_id } => outcome.dead_letters.push(DeadLetter {
                            record: (*record).clone(),
                            reason: format!(
                                "conflict: event {} of {} was already applied with a different content",
                                event.envelope.event_id, event.envelope.source.institution
                            ),
                            person_id,
                        }),
                    }
                }
            }
        }
        pending.flush(&mut tx).await?;
        // Dead letters first: the dossiers refolded below see them (a poison record may come
        // before the first event of its person, on another partition or earlier in this batch).
        for letter in &outcome.dead_letters {
            let subject_key = self.decoder.subject_of(&letter.record).await?;
            let stored = events::DeadLetter {
                projection: &self.projection,
                topic: &letter.record.topic,
                partition: letter.record.partition,
                offset: letter.record.offset,
                person_id: letter.person_id,
                reason: &letter.reason,
                subject_key: subject_key.as_deref(),
            };
            events::record_dead_letter(&mut tx, &stored).await?;
            if let Some(person_id) = letter.person_id {
                events::recompute_incomplete(&mut tx, person_id).await?;
            }
        }
        outcome.folds = refold::refold(&mut tx, &mut touched, self.check_folds).await?;
        for ((topic, partition), offset) in &next {
            events::set_offset(&mut tx, &self.projection, topic, *partition, *offset).await?;
        }
        if let Some(hold) = &self.hold_before_commit {
            hold().await;
        }
        // The keys that opened this batch must still exist when it commits: an erasure waits
        // for this transaction (the rows are held), or this batch sees the key destroyed and is
        // applied again, without the erased person's records.
        if !self.decoder.keys.hold_keys(&mut tx, &data_keys.live.keys().copied().collect::<Vec<_>>()).await? {
            return Err(Error::KeysDestroyedMeanwhile);
        }
        tx.commit().await?;
        for record in records {
            if let Some(at) = record.timestamp_ms {
                outcome.last_timestamps.insert((record.topic.clone(), record.partition), at);
            }
        }
        outcome.offsets = next;
        Ok(outcome)
    }

    /// One event, its (source, event_id) already recorded or found (`status`). The common
    /// cases queue their writes in `pending`; the others flush it and take the per-event path.
    async fn apply_event(
        &self,
        conn: &mut PgConnection,
        known: &mut Known,
        pending: &mut Pending,
        touched: &mut refold::Touched,
        status: Status,
        event: &LoggedEvent,
    ) -> Result<Applied, Error> {
        let envelope = &event.envelope;
        let source = envelope.source.institution.as_str();
        let event_id = envelope.event_id.as_str();
        match status {
            Status::New => {}
            Status::Duplicate => return Ok(Applied::Duplicate),
            Status::Conflict => {
                pending.flush(conn).await?;
                let person_id =
                    passerelle_readmodel::store::identity::person_of(conn, envelope.subject.as_str()).await?;
                return Ok(Applied::Conflict { person_id });
            }
        }
        let via = format!("{source}/{event_id}");
        let (person_id, moved) =
            match identity::fast_identity(known, pending, &envelope.linked_keys, &envelope.subject, &via) {
                Some(person) => (person, Vec::new()),
                None => {
                    pending.flush(conn).await?;
                    let resolved =
                        identity::resolve_identity(conn, &envelope.linked_keys, &envelope.subject, source, event_id)
                            .await?;
                    known.refresh(conn).await?;
                    resolved
                }
            };
        let (target, is_retraction) = match &event.payload {
            Payload::Retraction { retracted_event_id } => (Some(retracted_event_id.as_str().to_owned()), true),
            _ => (envelope.corrects_event_id.as_ref().map(|e| e.as_str().to_owned()), false),
        };
        let household = envelope.household.as_ref();
        let fact_json = serde_json::to_string(&event.payload).map_err(|e| Error::Internal(e.to_string()))?;
        let row = EventRow {
            person_id,
            source: source.to_owned(),
            event_id: event_id.to_owned(),
            family: event.family.label(),
            event_type: event.payload.event_type(),
            occurred_at: envelope.occurred_at,
            recorded_at: envelope.recorded_at,
            relayed_by: envelope.source.relayed_by.clone(),
            household_key: household.map(|h| h.key.as_str().to_owned()),
            territory: envelope.territory.clone(),
            fact: fact_json,
            corrects: target.clone(),
            role: household.and_then(|h| h.role).map(|r| r.code()),
            subject_key: envelope.subject.as_str().to_owned(),
            sealed_key_id: event.personal.as_ref().map(|sealed| sealed.key_id),
            sealed_nonce: event.personal.as_ref().map(|sealed| sealed.nonce.to_vec()),
            sealed_data: event.personal.as_ref().map(|sealed| sealed.ciphertext.clone()),
            commune: envelope.commune.clone(),
            organisme: household.map(|h| h.organisme.as_str().to_owned()),
        };
        let household_key = household.map(|h| h.key.as_str().to_owned());
        touched.appended(refold::NewFact {
            person: person_id,
            source,
            event_id,
            subject: envelope.subject.as_str(),
            occurred_at: envelope.occurred_at,
            recorded_at: envelope.recorded_at,
            household: household_key.as_deref(),
            right: event.payload.right_state().is_some(),
            decides_territory: event.family == Family::Allocataire && envelope.territory.is_some(),
            waiting: event.family == Family::Allocataire
                && envelope.territory.as_deref() == Some(passerelle_domain::territory::TO_ASSIGN),
        });
        if !moved.is_empty() {
            // Events moved between persons: both histories changed before their watermarks.
            touched.rewritten_persons(moved.into_iter().chain([person_id]));
        }
        let Some(target) = target else {
            pending.events.push(row);
            return Ok(Applied::New);
        };
        // A correction or retraction: the event it targets must be in the table to be marked.
        pending.events.push(row);
        pending.flush(conn).await?;
        let mark = if is_retraction { Mark::Retracted } else { Mark::Superseded };
        // Only an event of the same source about the same subject (one the correction names
        // among its identifiers): a source cannot rewrite its facts about someone else.
        let subjects: Vec<String> = std::iter::once(&envelope.subject)
            .chain(&envelope.linked_keys)
            .map(|key| key.as_str().to_owned())
            .collect();
        let marked = events::mark(conn, mark, source, &target, event_id, &subjects).await?;
        // The histories of the correction's person and of the corrected fact's changed before
        // their watermarks (a fact left out), and so did their households'.
        touched.rewritten_persons([person_id]);
        touched.rewritten_households(household_key);
        for (person, household) in marked {
            touched.rewritten_persons([person]);
            touched.rewritten_households(household);
        }
        Ok(Applied::New)
    }
}

/// What the batch's dedupe said of an event's (source, event_id).
#[derive(Debug, Clone, Copy)]
enum Status {
    New,
    Duplicate,
    Conflict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The consuming loop: offsets decide what was already applied, and advance.
    Stream,
    /// A dead letter applied again: offsets are left alone.
    Replay,
}

enum Applied {
    /// Applied (what it changed is recorded in the batch's [`refold::Touched`]).
    New,
    Duplicate,
    Conflict {
        person_id: Option<Uuid>,
    },
}

/// What makes two publications of one (source, event_id) the same fact: everything but the
/// timestamps (a retry is recorded again; a monthly flux re-states a fact with a later DTREF,
/// see docs/decisions/0003) and the sealed personal data (sealed again with a fresh nonce).
fn fingerprint(event: &LoggedEvent) -> Vec<u8> {
    let envelope = &event.envelope;
    let canonical = serde_json::json!({
        "payload": serde_json::to_value(&event.payload).unwrap_or_default(),
        "subject": envelope.subject.as_str(),
        "linked": envelope.linked_keys.iter().map(SubjectKey::as_str).collect::<Vec<_>>(),
        "household": envelope.household.as_ref().map(|h| (h.key.as_str(), h.organisme.as_str(), h.role.map(|r| r.code()))),
        "territory": envelope.territory,
        "commune": envelope.commune,
        "corrects": envelope.corrects_event_id.as_ref().map(|e| e.as_str()),
    });
    Sha256::digest(canonical.to_string().as_bytes()).to_vec()
}
