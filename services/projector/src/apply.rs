//! Applying a batch of records to the read models in one PostgreSQL transaction, with the
//! Kafka offsets it reaches and the (source, event_id) pairs it applies. A crash anywhere
//! replays the batch; records below the stored offsets are skipped, and a pair already applied
//! is skipped again, so nothing is applied twice.

use std::collections::{BTreeMap, HashMap, HashSet};

use passerelle_domain::event::{Family, Payload, SubjectKey};
use passerelle_eventlog::{
    affectation::{self, TerritoryAssignment},
    codec::LoggedEvent,
    framing,
    identity::{self, Decision, IdentityDecision},
    registry::Registry,
    schemas::Stream,
    sealed,
    shredding::{DataKey, KeyStore},
};
use sha2::{Digest, Sha256};
use sqlx::{Postgres, Row, Transaction};
use tracing::Instrument as _;
use uuid::Uuid;

use crate::{Error, batch, fold::Fact, refold};

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
    registry: Registry,
    /// The data keys that open sealed records.
    keys: KeyStore,
    families: HashMap<String, Family>,
    identity_topic: Option<String>,
    affectation_topic: Option<String>,
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
            registry,
            keys,
            families,
            identity_topic: None,
            affectation_topic: None,
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
        self.identity_topic = Some(topic.into());
        self
    }

    /// Also applies ops' decisions on the authority of foyers waiting "à affecter", published
    /// on `topic`.
    pub fn with_affectation_topic(mut self, topic: impl Into<String>) -> Self {
        self.affectation_topic = Some(topic.into());
        self
    }

    /// A record's value, unframed once: in clear (version 1 of its schema, written before
    /// sealing), sealed (its data key named), or unreadable (dead-lettered when decoded). A
    /// database that cannot be reached fails the batch, which is applied again: a record is
    /// never taken for an erased person's for want of its schema or key.
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
    fn content(framed: Framed, stream: Stream, keys: &BatchKeys) -> Opened {
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

    /// The subject key of a record: from its data key when sealed, else its Kafka key.
    async fn subject_of(&self, record: &Record) -> Result<Option<String>, Error> {
        match self.read(record).await? {
            Framed::Sealed(sealed_record) => Ok(self.keys.subject_of(sealed_record.sealed.key_id).await?),
            _ => Ok(record.key.as_deref().map(|key| String::from_utf8_lossy(key).into_owned())),
        }
    }

    async fn decode_decision(&self, framed: Framed, keys: &BatchKeys) -> Result<Item, Error> {
        let mut decision = match Self::content(framed, Stream::Identity, keys) {
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
        }
        Ok(Item::Decision(Ok(decision)))
    }

    /// Records (source, event_id) as applied by this projection; false when it already was.
    async fn record_applied(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        source: &str,
        event_id: &str,
        fingerprint: &[u8],
        record: &Record,
    ) -> Result<bool, Error> {
        let inserted = sqlx::query(
            "INSERT INTO applied_events (projection, source, event_id, fingerprint, topic, partition, \"offset\")
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(&self.projection)
        .bind(source)
        .bind(event_id)
        .bind(fingerprint)
        .bind(&record.topic)
        .bind(record.partition)
        .bind(record.offset)
        .execute(&mut **tx)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    /// An identity decision: applied once (deduplicated like any event, by its decision id).
    async fn apply_identity(
        &self,
        tx: &mut Transaction<'_, Postgres>,
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
        if !self.record_applied(tx, "passerelle.identite", &decision_id, &fingerprint, record).await? {
            return Ok(Applied::Duplicate);
        }
        let persons = apply_decision(tx, decision).await?;
        touched.rewritten_persons(persons);
        Ok(Applied::New)
    }

    /// Ops' decision on a foyer waiting "à affecter": applied once; the latest decision on a
    /// foyer holds. Its waiting facts (and those placed by an earlier decision) take the
    /// authority, and its members' dossiers and its right state fold again in full.
    async fn apply_assignment(
        &self,
        tx: &mut Transaction<'_, Postgres>,
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
        if !self.record_applied(tx, "passerelle.affectation", &decision_id, &fingerprint, record).await? {
            return Ok(Applied::Duplicate);
        }
        // Before the decision is recorded, so that a worker storing a waiting fact of the foyer
        // at the same time either is seen here or sees the decision under the lock (refold::lock).
        refold::lock_household(tx, &assignment.household_key).await?;
        let persons = passerelle_readmodel::territory::assign(
            tx,
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

    fn decode(&self, record: &Record, framed: Framed, keys: &BatchKeys) -> Item {
        let Some(family) = self.families.get(&record.topic).copied() else {
            return Item::Event(Err(format!("no family for topic {}", record.topic)));
        };
        match Self::content(framed, Stream::Facts(family), keys) {
            Opened::Content(datum, schema) => Item::Event(
                passerelle_eventlog::codec::decode(family, &datum, &schema).map(Box::new).map_err(|e| e.to_string()),
            ),
            Opened::Shredded => Item::Shredded,
            Opened::Undecodable(reason) => Item::Event(Err(reason)),
        }
    }

    /// Applies `records` (in offset order per partition) in one transaction.
    pub async fn apply(&self, pool: &sqlx::PgPool, records: &[Record]) -> Result<Outcome, Error> {
        self.apply_in(pool, records, Mode::Stream).await
    }

    /// Applies dead-lettered records again (after a fix), outside the stream's offsets.
    pub async fn replay(&self, pool: &sqlx::PgPool, records: &[Record]) -> Result<Outcome, Error> {
        self.apply_in(pool, records, Mode::Replay).await
    }

    async fn apply_in(&self, pool: &sqlx::PgPool, records: &[Record], mode: Mode) -> Result<Outcome, Error> {
        let mut outcome = Outcome::default();
        let mut tx = pool.begin().await?;
        let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for record in records.iter().filter(|_| mode == Mode::Stream) {
            let slot = (record.topic.clone(), record.partition);
            if next.contains_key(&slot) {
                continue;
            }
            sqlx::query(
                "INSERT INTO projector_offsets (projection, topic, partition, next_offset) VALUES ($1, $2, $3, 0)
                 ON CONFLICT DO NOTHING",
            )
            .bind(&self.projection)
            .bind(&record.topic)
            .bind(record.partition)
            .execute(&mut *tx)
            .await?;
            // FOR UPDATE: a worker that lost this partition in a rebalance waits here, then
            // finds the offset moved and applies nothing twice.
            let (stored,): (i64,) = sqlx::query_as(
                "SELECT next_offset FROM projector_offsets WHERE projection = $1 AND topic = $2 AND partition = $3 FOR UPDATE",
            )
            .bind(&self.projection)
            .bind(&record.topic)
            .bind(record.partition)
            .fetch_one(&mut *tx)
            .await?;
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
        // Decode first (no I/O once the schemas are cached), then read what the batch needs
        // to know and record its (source, event_id) pairs, each in one statement.
        let mut fresh = Vec::with_capacity(records.len());
        for record in records {
            if mode == Mode::Stream {
                let slot = (record.topic.clone(), record.partition);
                let position = next.get(&slot).copied().unwrap_or_default();
                if record.offset < position {
                    outcome.already_past += 1;
                    continue;
                }
                next.insert(slot, record.offset + 1);
            }
            fresh.push(record);
        }
        // Each record read once; the data keys of the sealed ones in one read, with those an
        // erasure destroyed.
        let mut framed = Vec::with_capacity(fresh.len());
        for record in fresh {
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
        let data_keys = if key_ids.is_empty() {
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
                self.decode_decision(read, &data_keys).await?
            } else if self.affectation_topic.as_deref() == Some(record.topic.as_str()) {
                Item::Assignment(match read {
                    Framed::Clear(datum, schema) => affectation::decode(&datum, &schema).map_err(|e| e.to_string()),
                    Framed::Sealed(_) => Err("a territory assignment is never sealed".into()),
                    Framed::Unreadable(reason) => Err(reason),
                })
            } else {
                self.decode(record, read, &data_keys)
            };
            items.push((record, item));
        }
        let mut keys: Vec<String> = Vec::new();
        let mut candidates: Vec<Uuid> = Vec::new();
        let mut pairs: Vec<batch::Applying> = Vec::new();
        let mut first_seen: HashMap<(String, String), Vec<u8>> = HashMap::new();
        for (record, item) in &items {
            let Item::Event(Ok(event)) = item else { continue };
            let envelope = &event.envelope;
            let names = identity_names(&envelope.linked_keys, &envelope.subject);
            keys.extend(names.iter().map(|k| (*k).to_owned()));
            keys.push(envelope.subject.as_str().to_owned());
            candidates.push(passerelle_readmodel::person_id_for(names[0]));
            let pair = (envelope.source.institution.clone(), envelope.event_id.as_str().to_owned());
            if !first_seen.contains_key(&pair) {
                let fingerprint = fingerprint(event);
                first_seen.insert(pair.clone(), fingerprint.clone());
                pairs.push((pair.0, pair.1, fingerprint, record.topic.clone(), record.partition, record.offset));
            }
        }
        keys.sort_unstable();
        keys.dedup();
        let dedupe = batch::record_applied(&mut tx, &self.projection, pairs).await?;
        let mut known = batch::Known::read(&mut tx, keys, candidates).await?;
        let mut pending = batch::Pending::default();
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
                    let person_id = match self.subject_of(record).await? {
                        Some(subject) => person_of(&mut tx, &subject).await?,
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
            sqlx::query(
                "INSERT INTO dead_letters (projection, topic, partition, \"offset\", person_id, reason, subject_key)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (projection, topic, partition, \"offset\") DO UPDATE SET reason = EXCLUDED.reason",
            )
            .bind(&self.projection)
            .bind(&letter.record.topic)
            .bind(letter.record.partition)
            .bind(letter.record.offset)
            .bind(letter.person_id)
            .bind(&letter.reason)
            .bind(self.subject_of(&letter.record).await?)
            .execute(&mut *tx)
            .await?;
            if let Some(person_id) = letter.person_id {
                sqlx::query(INCOMPLETE).bind(person_id).execute(&mut *tx).await?;
            }
        }
        outcome.folds = refold::refold(&mut tx, &touched, self.check_folds).await?;
        for ((topic, partition), offset) in &next {
            sqlx::query(
                "UPDATE projector_offsets SET next_offset = $4, updated_at = now()
                 WHERE projection = $1 AND topic = $2 AND partition = $3",
            )
            .bind(&self.projection)
            .bind(topic)
            .bind(partition)
            .bind(offset)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(hold) = &self.hold_before_commit {
            hold().await;
        }
        // The keys that opened this batch must still exist when it commits: an erasure waits
        // for this transaction (the rows are held), or this batch sees the key destroyed and is
        // applied again, without the erased person's records.
        if !self.keys.hold_keys(&mut tx, &data_keys.live.keys().copied().collect::<Vec<_>>()).await? {
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
        tx: &mut Transaction<'_, Postgres>,
        known: &mut batch::Known,
        pending: &mut batch::Pending,
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
                pending.flush(tx).await?;
                let person_id = person_of(tx, envelope.subject.as_str()).await?;
                return Ok(Applied::Conflict { person_id });
            }
        }
        let (person_id, moved) = match fast_identity(known, pending, envelope, source, event_id) {
            Some(person) => (person, Vec::new()),
            None => {
                pending.flush(tx).await?;
                let resolved = resolve_identity(tx, &envelope.linked_keys, &envelope.subject, source, event_id).await?;
                known.refresh(tx).await?;
                resolved
            }
        };
        let (target, is_retraction) = match &event.payload {
            Payload::Retraction { retracted_event_id } => (Some(retracted_event_id.as_str().to_owned()), true),
            _ => (envelope.corrects_event_id.as_ref().map(|e| e.as_str().to_owned()), false),
        };
        let household = envelope.household.as_ref();
        let fact_json = serde_json::to_string(&event.payload).map_err(|e| Error::Internal(e.to_string()))?;
        let row = batch::EventRow {
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
        pending.flush(tx).await?;
        let column = if is_retraction { "retracted_by" } else { "superseded_by" };
        let marked = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE person_events SET {column} = $3 WHERE source = $1 AND event_id = $2 AND subject_key = ANY($4)
             RETURNING person_id, household_key"
        )))
        .bind(source)
        .bind(&target)
        .bind(event_id)
        // Only an event of the same source about the same subject (one the correction names
        // among its identifiers): a source cannot rewrite its facts about someone else.
        .bind(
            std::iter::once(&envelope.subject)
                .chain(&envelope.linked_keys)
                .map(|key| key.as_str().to_owned())
                .collect::<Vec<_>>(),
        )
        .fetch_all(&mut **tx)
        .await?;
        // The histories of the correction's person and of the corrected fact's changed before
        // their watermarks (a fact left out), and so did their households'.
        touched.rewritten_persons([person_id]);
        touched.rewritten_households(household_key);
        for row in marked {
            touched.rewritten_persons([row.try_get::<Uuid, _>("person_id")?]);
            touched.rewritten_households(row.try_get::<Option<String>, _>("household_key")?);
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

/// A decoded record of a batch.
enum Item {
    Decision(Result<IdentityDecision, String>),
    Assignment(Result<TerritoryAssignment, String>),
    Event(Result<Box<LoggedEvent>, String>),
    /// A sealed record whose subject's key was destroyed: an erased person's, skipped.
    Shredded,
}

/// The data keys of a batch's sealed records: live ones, and those an erasure destroyed (a key
/// in neither is unknown to this hub).
#[derive(Default)]
struct BatchKeys {
    live: HashMap<Uuid, DataKey>,
    destroyed: HashSet<Uuid>,
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

/// The keys identity resolution considers, strongest first (the subject when none is linked).
fn identity_names<'a>(keys: &'a [SubjectKey], subject: &'a SubjectKey) -> Vec<&'a str> {
    let mut names: Vec<&str> = keys.iter().map(SubjectKey::as_str).collect();
    if names.is_empty() {
        names.push(subject.as_str());
    }
    names.sort_by(|a, b| passerelle_readmodel::key_strength(a).cmp(&passerelle_readmodel::key_strength(b)));
    names.dedup();
    names
}

/// Identity resolution without a round trip, when the batch's knowledge decides it as
/// `resolve_identity` would: no key pinned, and either every linked key already belongs to the
/// person of the strongest key (the others are linked to them), or no key is linked and the
/// strongest key mints a person that does not exist yet. `None`: take the per-event path.
fn fast_identity(
    known: &mut batch::Known,
    pending: &mut batch::Pending,
    envelope: &passerelle_domain::event::Envelope,
    source: &str,
    event_id: &str,
) -> Option<Uuid> {
    let names = identity_names(&envelope.linked_keys, &envelope.subject);
    if names.iter().any(|key| known.pinned.contains(*key)) {
        return None;
    }
    let head = names[0];
    let person = match known.links.get(head) {
        Some(person) => {
            if names.iter().any(|key| known.links.get(*key).is_some_and(|other| other != person)) {
                return None;
            }
            *person
        }
        None => {
            if names.iter().any(|key| known.links.contains_key(*key)) {
                return None;
            }
            let minted = passerelle_readmodel::person_id_for(head);
            if known.existing.contains(&minted) {
                return None;
            }
            known.existing.insert(minted);
            pending.persons.push((minted, head.to_owned()));
            minted
        }
    };
    let via = format!("{source}/{event_id}");
    for key in &names {
        if !known.links.contains_key(*key) {
            known.links.insert((*key).to_owned(), person);
            pending.links.push(((*key).to_owned(), person, via.clone()));
        }
    }
    // The event's own person: that of its subject key.
    match known.links.get(envelope.subject.as_str()) {
        Some(own) => Some(*own),
        None => Some(person),
    }
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

async fn person_of(tx: &mut Transaction<'_, Postgres>, subject_key: &str) -> Result<Option<Uuid>, Error> {
    let row: Option<(Uuid,)> = sqlx::query_as(
        "SELECT COALESCE(p.merged_into, p.person_id) FROM subject_links l JOIN persons p USING (person_id) WHERE l.subject_key = $1",
    )
    .bind(subject_key)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(|(id,)| id))
}

/// Persons whose dossier must be folded again after identity resolution moved events.
type Moved = Vec<Uuid>;

/// Identity resolution (docs/projector.md, "Identity"): the person of the event's strongest
/// linked key, or the person minted from that key (a deterministic id). Unlinked keys are linked
/// to them. A key linked to another person either reveals that the two are one (no exclusive key
/// of theirs differs: merged into the one with the stronger identity key, the other redirecting)
/// or contests a link (two NIRs claim one France Travail id): recorded for a human, never merged;
/// meanwhile the key stays with the smaller person id, a rule that does not depend on arrival
/// order. A human decision (identity pin) overrides both rules.
async fn resolve_identity(
    tx: &mut Transaction<'_, Postgres>,
    keys: &[SubjectKey],
    subject: &SubjectKey,
    source: &str,
    event_id: &str,
) -> Result<(Uuid, Moved), Error> {
    let mut names: Vec<&str> = keys.iter().map(SubjectKey::as_str).collect();
    if names.is_empty() {
        names.push(subject.as_str());
    }
    names.sort_by(|a, b| passerelle_readmodel::key_strength(a).cmp(&passerelle_readmodel::key_strength(b)));
    names.dedup();
    let mut links = links_of(tx, &names).await?;
    let mut pins: HashMap<String, Uuid> = HashMap::new();
    for (key, owner_key) in sqlx::query_as::<_, (String, String)>(
        "SELECT subject_key, owner_key FROM identity_pins WHERE subject_key = ANY($1)",
    )
    .bind(&names)
    .fetch_all(&mut **tx)
    .await?
    {
        pins.insert(key, ensure_person(tx, &owner_key).await?);
    }
    let head = names[0];
    let mut target = match (links.get(head), pins.get(head)) {
        (Some(person), _) | (None, Some(person)) => *person,
        (None, None) => ensure_person(tx, head).await?,
    };
    let via = format!("{source}/{event_id}");
    for key in &names {
        if !links.contains_key(*key) {
            let owner = pins.get(*key).copied().unwrap_or(target);
            let inserted: Option<String> = sqlx::query_scalar(
                "INSERT INTO subject_links (subject_key, person_id, via_event) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING RETURNING subject_key",
            )
            .bind(key)
            .bind(owner)
            .bind(&via)
            .fetch_optional(&mut **tx)
            .await?;
            if inserted.is_none() {
                // Another worker linked the key meanwhile (its event sits in another partition):
                // its link counts as one read before, and becomes a merge or a contest below,
                // never a silent split of one person in two.
                let holder: Uuid = sqlx::query_scalar("SELECT person_id FROM subject_links WHERE subject_key = $1")
                    .bind(key)
                    .fetch_one(&mut **tx)
                    .await?;
                links.insert((*key).to_owned(), holder);
            }
        }
    }
    let mut touched = Vec::new();
    for key in &names {
        let Some(holder) = links.get(*key) else { continue };
        let holder = canonical(tx, *holder).await?;
        target = canonical(tx, target).await?;
        if holder == target {
            continue;
        }
        if let Some(owner) = pins.get(*key) {
            // Decided by a human: the key is the owner's, whoever claims it.
            let owner = canonical(tx, *owner).await?;
            if owner != holder {
                relink(tx, key, holder, owner).await?;
                touched.extend([holder, owner]);
            }
            continue;
        }
        if compatible(tx, target, holder).await? {
            let (from, into) = by_strength(tx, target, holder).await?;
            merge(tx, from, into).await?;
            touched.push(into);
            target = into;
        } else {
            tracing::warn!(subject = key, "identity conflict recorded for review");
            let (keeper, other) = if target < holder { (target, holder) } else { (holder, target) };
            if keeper != holder {
                relink(tx, key, holder, keeper).await?;
                touched.extend([holder, keeper]);
            }
            sqlx::query(
                "INSERT INTO identity_conflicts (subject_key, linked_to, claimed_for, source, event_id)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(key)
            .bind(keeper)
            .bind(other)
            .bind(source)
            .bind(event_id)
            .execute(&mut **tx)
            .await?;
        }
    }
    // The event's own person: that of its subject key (a contested key's events follow the key).
    let person = match links_of(tx, &[subject.as_str()]).await?.get(subject.as_str()) {
        Some(person) => *person,
        None => canonical(tx, target).await?,
    };
    Ok((person, touched))
}

/// The canonical person each of `keys` is linked to.
pub(crate) async fn links_of(
    tx: &mut Transaction<'_, Postgres>,
    keys: &[&str],
) -> Result<HashMap<String, Uuid>, Error> {
    let rows = sqlx::query(
        "SELECT l.subject_key, COALESCE(p.merged_into, p.person_id) AS person_id
         FROM subject_links l JOIN persons p USING (person_id) WHERE l.subject_key = ANY($1)",
    )
    .bind(keys)
    .fetch_all(&mut **tx)
    .await?;
    let mut linked = HashMap::new();
    for row in rows {
        linked.insert(row.try_get("subject_key")?, row.try_get("person_id")?);
    }
    Ok(linked)
}

/// The person minted from an identity key (created if new), followed to where it was merged.
async fn ensure_person(tx: &mut Transaction<'_, Postgres>, identity_key: &str) -> Result<Uuid, Error> {
    let id = passerelle_readmodel::person_id_for(identity_key);
    sqlx::query("INSERT INTO persons (person_id, id_key) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(id)
        .bind(identity_key)
        .execute(&mut **tx)
        .await?;
    canonical(tx, id).await
}

async fn canonical(tx: &mut Transaction<'_, Postgres>, person_id: Uuid) -> Result<Uuid, Error> {
    let row: Option<(Uuid,)> =
        sqlx::query_as("SELECT COALESCE(merged_into, person_id) FROM persons WHERE person_id = $1")
            .bind(person_id)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(row.map_or(person_id, |(id,)| id))
}

/// Whether two persons may be one: no exclusive kind of key (NIR, France Travail id) differs.
async fn compatible(tx: &mut Transaction<'_, Postgres>, a: Uuid, b: Uuid) -> Result<bool, Error> {
    let (clash,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM subject_links x JOIN subject_links y
                          ON split_part(x.subject_key, ':', 1) = split_part(y.subject_key, ':', 1)
                        WHERE x.person_id = $1 AND y.person_id = $2 AND x.subject_key <> y.subject_key
                          AND split_part(x.subject_key, ':', 1) = ANY($3))",
    )
    .bind(a)
    .bind(b)
    .bind(passerelle_readmodel::exclusive_prefixes())
    .fetch_one(&mut **tx)
    .await?;
    Ok(!clash)
}

/// (weaker, stronger) of two persons, by their identity keys.
async fn by_strength(tx: &mut Transaction<'_, Postgres>, a: Uuid, b: Uuid) -> Result<(Uuid, Uuid), Error> {
    let rows: Vec<(Uuid, Option<String>)> =
        sqlx::query_as("SELECT person_id, id_key FROM persons WHERE person_id = ANY($1)")
            .bind([a, b])
            .fetch_all(&mut **tx)
            .await?;
    let key_of = |id: Uuid| rows.iter().find(|(p, _)| *p == id).and_then(|(_, key)| key.clone());
    // A person without identity key (minted before ids were derived) is the weaker.
    let rank = |id: Uuid| key_of(id).map(|key| (0, passerelle_readmodel::key_strength(&key).0, key, id));
    let (ra, rb) = (rank(a), rank(b));
    let a_stronger = match (&ra, &rb) {
        (Some(x), Some(y)) => x < y,
        (Some(_), None) => true,
        (None, Some(_)) => false,
        (None, None) => a < b,
    };
    Ok(if a_stronger { (b, a) } else { (a, b) })
}

/// Merges person `from` into `into`: keys, events and dead letters move; `from` redirects.
async fn merge(tx: &mut Transaction<'_, Postgres>, from: Uuid, into: Uuid) -> Result<(), Error> {
    for statement in [
        "UPDATE subject_links SET person_id = $2 WHERE person_id = $1",
        "UPDATE persons SET merged_into = $2 WHERE person_id = $1 OR merged_into = $1",
        "UPDATE person_events SET person_id = $2 WHERE person_id = $1",
        "UPDATE dead_letters SET person_id = $2 WHERE person_id = $1",
    ] {
        sqlx::query(statement).bind(from).bind(into).execute(&mut **tx).await?;
    }
    sqlx::query("DELETE FROM dossiers WHERE person_id = $1").bind(from).execute(&mut **tx).await?;
    Ok(())
}

/// Moves a subject key, and the events whose subject it is, from one person to another.
async fn relink(tx: &mut Transaction<'_, Postgres>, key: &str, from: Uuid, to: Uuid) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO subject_links (subject_key, person_id, via_event) VALUES ($1, $2, 'identity')
         ON CONFLICT (subject_key) DO UPDATE SET person_id = EXCLUDED.person_id",
    )
    .bind(key)
    .bind(to)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE person_events SET person_id = $3 WHERE person_id = $2 AND subject_key = $1")
        .bind(key)
        .bind(from)
        .bind(to)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Applies a human identity decision; returns the persons to fold again.
async fn apply_decision(tx: &mut Transaction<'_, Postgres>, decision: &IdentityDecision) -> Result<Moved, Error> {
    let holder = ensure_person(tx, &decision.holder_key).await?;
    let claimant = ensure_person(tx, &decision.claimant_key).await?;
    sqlx::query(
        "INSERT INTO identity_decisions (decision_id, decided_at, decided_by, subject_key, holder_key, claimant_key, decision)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    )
    .bind(decision.decision_id)
    .bind(decision.decided_at)
    .bind(&decision.decided_by)
    .bind(&decision.subject_key)
    .bind(&decision.holder_key)
    .bind(&decision.claimant_key)
    .bind(decision.decision.code())
    .execute(&mut **tx)
    .await?;
    let current = links_of(tx, &[decision.subject_key.as_str()]).await?.get(&decision.subject_key).copied();
    let owner = match decision.decision {
        Decision::Confirm => Some((decision.claimant_key.as_str(), claimant)),
        Decision::Reject => Some((decision.holder_key.as_str(), holder)),
        Decision::Merge => None,
    };
    let mut touched = vec![holder, claimant];
    match owner {
        Some((owner_key, owner)) => {
            sqlx::query(
                "INSERT INTO identity_pins (subject_key, owner_key, decision_id) VALUES ($1, $2, $3)
                 ON CONFLICT (subject_key) DO UPDATE SET owner_key = EXCLUDED.owner_key, decision_id = EXCLUDED.decision_id",
            )
            .bind(&decision.subject_key)
            .bind(owner_key)
            .bind(decision.decision_id)
            .execute(&mut **tx)
            .await?;
            match current {
                Some(current) if current != owner => relink(tx, &decision.subject_key, current, owner).await?,
                Some(_) => {}
                None => {
                    sqlx::query(
                        "INSERT INTO subject_links (subject_key, person_id, via_event) VALUES ($1, $2, 'identity')",
                    )
                    .bind(&decision.subject_key)
                    .bind(owner)
                    .execute(&mut **tx)
                    .await?;
                }
            }
        }
        None => {
            sqlx::query("DELETE FROM identity_pins WHERE subject_key = $1")
                .bind(&decision.subject_key)
                .execute(&mut **tx)
                .await?;
            if holder != claimant {
                let (from, into) = by_strength(tx, holder, claimant).await?;
                merge(tx, from, into).await?;
                touched = vec![into];
            }
        }
    }
    sqlx::query(
        "UPDATE identity_conflicts SET resolution = $2
         WHERE subject_key = $1 AND resolution IS NULL AND (linked_to = ANY($3) OR claimed_for = ANY($3))",
    )
    .bind(&decision.subject_key)
    .bind(decision.decision.code().to_ascii_lowercase())
    .bind([holder, claimant])
    .execute(&mut **tx)
    .await?;
    // A rebuild may read the decision before the events that raised the conflict (another
    // topic); the pin then keeps the conflict from arising, so the decision records it.
    sqlx::query(
        "INSERT INTO identity_conflicts (subject_key, linked_to, claimed_for, source, event_id, resolution)
         VALUES ($1, $2, $3, 'passerelle.identite', $4, $5) ON CONFLICT DO NOTHING",
    )
    .bind(&decision.subject_key)
    .bind(holder)
    .bind(claimant)
    .bind(decision.decision_id.to_string())
    .bind(decision.decision.code().to_ascii_lowercase())
    .execute(&mut **tx)
    .await?;
    Ok(touched)
}

pub(crate) fn facts_of(rows: Vec<sqlx::postgres::PgRow>) -> Result<Vec<Fact>, Error> {
    rows.into_iter()
        .map(|row| {
            let text: &str = row.try_get("fact")?;
            let payload: Payload = serde_json::from_str(text).map_err(|e| Error::Internal(e.to_string()))?;
            let superseded: Option<String> = row.try_get("superseded_by")?;
            let retracted: Option<String> = row.try_get("retracted_by")?;
            let role: Option<String> = row.try_get("role")?;
            let source: String = row.try_get("source")?;
            Ok(Fact {
                by_person: source == passerelle_domain::event::PERSON_SOURCE,
                source,
                event_id: row.try_get("event_id")?,
                family: row.try_get("family")?,
                occurred_at: row.try_get("occurred_at")?,
                recorded_at: row.try_get("recorded_at")?,
                territory: row.try_get("territory")?,
                household_key: row.try_get("household_key")?,
                role,
                active: superseded.is_none() && retracted.is_none() && !matches!(payload, Payload::Retraction { .. }),
                payload,
            })
        })
        .collect()
}

/// Recomputes a dossier's `incomplete` flag ($1: person_id).
pub(crate) const INCOMPLETE: &str = "UPDATE dossiers SET incomplete = EXISTS (
        SELECT 1 FROM dead_letters d WHERE d.replayed_at IS NULL AND (d.person_id = $1 OR d.subject_key IN (
            SELECT subject_key FROM subject_links WHERE person_id = $1)))
    WHERE person_id = $1";

pub(crate) const FACT_COLUMNS: &str = "source, event_id, family, occurred_at, recorded_at, territory, household_key, role, fact::text AS fact, superseded_by, retracted_by";
