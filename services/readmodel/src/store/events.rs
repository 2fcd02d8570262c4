//! The projected events (`person_events`) and the projector's own bookkeeping kept with them in
//! one transaction: the (source, event_id) pairs each projection applied, its offsets per
//! partition, its dead letters.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// A projected event, as stored.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub person_id: Uuid,
    pub source: String,
    pub event_id: String,
    pub family: &'static str,
    pub event_type: &'static str,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub relayed_by: Option<String>,
    pub household_key: Option<String>,
    pub territory: Option<String>,
    /// The payload, as JSON.
    pub fact: String,
    /// The event this one corrects or retracts.
    pub corrects: Option<String>,
    pub role: Option<&'static str>,
    pub subject_key: String,
    pub sealed_key_id: Option<Uuid>,
    pub sealed_nonce: Option<Vec<u8>>,
    pub sealed_data: Option<Vec<u8>>,
    pub commune: Option<String>,
    pub organisme: Option<String>,
}

/// Stores projected events in one multi-row insert (an event already stored is left as it
/// is). A fact waiting "à affecter" whose foyer ops already placed takes that authority; a
/// waiting correction, the place of the fact it corrects. An event corrected or retracted by
/// one already stored (a correction that arrived first) is marked as such.
pub async fn insert(conn: &mut PgConnection, rows: Vec<EventRow>) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    macro_rules! column {
        ($field:ident) => {
            rows.iter().map(|row| row.$field.clone()).collect::<Vec<_>>()
        };
    }
    sqlx::query(
        "INSERT INTO person_events (person_id, source, event_id, family, event_type, occurred_at, recorded_at, relayed_by,
                                    household_key, territory, fact, corrects, role, subject_key,
                                    sealed_key_id, sealed_nonce, sealed_data, commune, organisme, assigned_by,
                                    superseded_by, retracted_by)
         SELECT u.person_id, u.source, u.event_id, u.family, u.event_type, u.occurred_at, u.recorded_at, u.relayed_by,
                u.household_key,
                COALESCE(a.authority,
                         CASE WHEN u.territory = $20 AND u.corrects IS NOT NULL THEN
                              (SELECT c.territory FROM person_events c
                               WHERE c.source = u.source AND c.event_id = u.corrects AND c.territory <> $20 LIMIT 1)
                         END,
                         u.territory),
                u.fact::jsonb, u.corrects, u.role, u.subject_key,
                u.sealed_key_id, u.sealed_nonce, u.sealed_data, u.commune, u.organisme, a.decision_id,
                (SELECT event_id FROM person_events c WHERE c.source = u.source AND c.corrects = u.event_id AND c.event_type <> 'retraction' AND (c.subject_key = u.subject_key OR u.subject_key IN (SELECT l.subject_key FROM subject_links l WHERE l.person_id = c.person_id)) LIMIT 1),
                (SELECT event_id FROM person_events c WHERE c.source = u.source AND c.corrects = u.event_id AND c.event_type = 'retraction' AND (c.subject_key = u.subject_key OR u.subject_key IN (SELECT l.subject_key FROM subject_links l WHERE l.person_id = c.person_id)) LIMIT 1)
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::timestamptz[],
                     $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::uuid[],
                     $16::bytea[], $17::bytea[], $18::text[], $19::text[])
           AS u(person_id, source, event_id, family, event_type, occurred_at, recorded_at, relayed_by, household_key,
                territory, fact, corrects, role, subject_key, sealed_key_id, sealed_nonce, sealed_data, commune, organisme)
         LEFT JOIN territory_assignments a
                ON u.territory = $20 AND u.family = 'allocataire' AND a.household_key = u.household_key
         ON CONFLICT DO NOTHING",
    )
    .bind(column!(person_id))
    .bind(column!(source))
    .bind(column!(event_id))
    .bind(rows.iter().map(|row| row.family).collect::<Vec<_>>())
    .bind(rows.iter().map(|row| row.event_type).collect::<Vec<_>>())
    .bind(column!(occurred_at))
    .bind(column!(recorded_at))
    .bind(column!(relayed_by))
    .bind(column!(household_key))
    .bind(column!(territory))
    .bind(column!(fact))
    .bind(column!(corrects))
    .bind(rows.iter().map(|row| row.role).collect::<Vec<_>>())
    .bind(column!(subject_key))
    .bind(column!(sealed_key_id))
    .bind(column!(sealed_nonce))
    .bind(column!(sealed_data))
    .bind(column!(commune))
    .bind(column!(organisme))
    .bind(passerelle_domain::territory::TO_ASSIGN)
    .execute(conn)
    .await?;
    Ok(())
}

/// How a stored event was left out of its person's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// A correction replaced it.
    Superseded,
    Retracted,
}

/// Marks `source`'s event `target` as superseded or retracted by `by`, when its subject is one
/// of `subject_keys` (a source cannot rewrite its facts about someone else); returns the person
/// and foyer of each event marked.
pub async fn mark(
    conn: &mut PgConnection,
    mark: Mark,
    source: &str,
    target: &str,
    by: &str,
    subject_keys: &[String],
) -> Result<Vec<(Uuid, Option<String>)>, sqlx::Error> {
    let statement = match mark {
        Mark::Superseded => {
            "UPDATE person_events SET superseded_by = $3 WHERE source = $1 AND event_id = $2 AND subject_key = ANY($4)
             RETURNING person_id, household_key"
        }
        Mark::Retracted => {
            "UPDATE person_events SET retracted_by = $3 WHERE source = $1 AND event_id = $2 AND subject_key = ANY($4)
             RETURNING person_id, household_key"
        }
    };
    sqlx::query_as(statement).bind(source).bind(target).bind(by).bind(subject_keys).fetch_all(conn).await
}

/// Moves `source`'s event `event_id` from person `from` to person `to`; false when it is not
/// with `from` (any more).
pub async fn move_event(
    conn: &mut PgConnection,
    source: &str,
    event_id: &str,
    from: Uuid,
    to: Uuid,
) -> Result<bool, sqlx::Error> {
    let moved =
        sqlx::query("UPDATE person_events SET person_id = $4 WHERE source = $1 AND event_id = $2 AND person_id = $3")
            .bind(source)
            .bind(event_id)
            .bind(from)
            .bind(to)
            .execute(conn)
            .await?;
    Ok(moved.rows_affected() > 0)
}

/// Recomputes a dossier's `incomplete` flag: a dead letter of the person (or of one of their
/// keys) not yet replayed.
pub async fn recompute_incomplete(conn: &mut PgConnection, person_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE dossiers SET incomplete = EXISTS (
                SELECT 1 FROM dead_letters d WHERE d.replayed_at IS NULL AND (d.person_id = $1 OR d.subject_key IN (
                    SELECT subject_key FROM subject_links WHERE person_id = $1)))
         WHERE person_id = $1",
    )
    .bind(person_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// A (source, event_id) pair a projection applies, with what identifies its content and where
/// it was read.
#[derive(Debug, Clone)]
pub struct Applying {
    pub source: String,
    pub event_id: String,
    pub fingerprint: Vec<u8>,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// What recording a batch's pairs found.
#[derive(Debug, Default)]
pub struct Dedupe {
    /// Pairs recorded now (first publication seen by this projection).
    pub new: HashSet<(String, String)>,
    /// Fingerprints of pairs applied by an earlier batch.
    pub seen: HashMap<(String, String), Vec<u8>>,
}

/// Records a batch's pairs as applied by `projection`, in one statement; reads the fingerprints
/// of those applied before.
pub async fn record_applied(
    conn: &mut PgConnection,
    projection: &str,
    pairs: Vec<Applying>,
) -> Result<Dedupe, sqlx::Error> {
    let mut dedupe = Dedupe::default();
    if pairs.is_empty() {
        return Ok(dedupe);
    }
    let mut sources = Vec::with_capacity(pairs.len());
    let mut ids = Vec::with_capacity(pairs.len());
    let mut fingerprints = Vec::with_capacity(pairs.len());
    let mut topics = Vec::with_capacity(pairs.len());
    let mut partitions = Vec::with_capacity(pairs.len());
    let mut offsets = Vec::with_capacity(pairs.len());
    for pair in pairs {
        sources.push(pair.source);
        ids.push(pair.event_id);
        fingerprints.push(pair.fingerprint);
        topics.push(pair.topic);
        partitions.push(pair.partition);
        offsets.push(pair.offset);
    }
    let inserted: Vec<(String, String)> = sqlx::query_as(
        "INSERT INTO applied_events (projection, source, event_id, fingerprint, topic, partition, \"offset\")
         SELECT $1, * FROM unnest($2::text[], $3::text[], $4::bytea[], $5::text[], $6::int[], $7::bigint[])
         ON CONFLICT DO NOTHING RETURNING source, event_id",
    )
    .bind(projection)
    .bind(&sources)
    .bind(&ids)
    .bind(&fingerprints)
    .bind(&topics)
    .bind(&partitions)
    .bind(&offsets)
    .fetch_all(&mut *conn)
    .await?;
    dedupe.new = inserted.into_iter().collect();
    if dedupe.new.len() < sources.len() {
        let seen: Vec<(String, String, Vec<u8>)> = sqlx::query_as(
            "SELECT a.source, a.event_id, a.fingerprint FROM applied_events a
             JOIN unnest($2::text[], $3::text[]) AS u(source, event_id) USING (source, event_id)
             WHERE a.projection = $1",
        )
        .bind(projection)
        .bind(&sources)
        .bind(&ids)
        .fetch_all(conn)
        .await?;
        for (source, id, fingerprint) in seen {
            let pair = (source, id);
            if !dedupe.new.contains(&pair) {
                dedupe.seen.insert(pair, fingerprint);
            }
        }
    }
    Ok(dedupe)
}

/// Records one pair as applied; false when it already was.
pub async fn record_applied_one(
    conn: &mut PgConnection,
    projection: &str,
    pair: &Applying,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO applied_events (projection, source, event_id, fingerprint, topic, partition, \"offset\")
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    )
    .bind(projection)
    .bind(&pair.source)
    .bind(&pair.event_id)
    .bind(&pair.fingerprint)
    .bind(&pair.topic)
    .bind(pair.partition)
    .bind(pair.offset)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The next offset `projection` applies of a partition (0 the first time), the row locked until
/// the transaction ends: a worker that lost the partition in a rebalance waits here, then finds
/// the offset moved and applies nothing twice.
pub async fn claim_offset(
    conn: &mut PgConnection,
    projection: &str,
    topic: &str,
    partition: i32,
) -> Result<i64, sqlx::Error> {
    sqlx::query(
        "INSERT INTO projector_offsets (projection, topic, partition, next_offset) VALUES ($1, $2, $3, 0)
         ON CONFLICT DO NOTHING",
    )
    .bind(projection)
    .bind(topic)
    .bind(partition)
    .execute(&mut *conn)
    .await?;
    sqlx::query_scalar(
        "SELECT next_offset FROM projector_offsets WHERE projection = $1 AND topic = $2 AND partition = $3 FOR UPDATE",
    )
    .bind(projection)
    .bind(topic)
    .bind(partition)
    .fetch_one(conn)
    .await
}

/// Moves a claimed partition's next offset.
pub async fn set_offset(
    conn: &mut PgConnection,
    projection: &str,
    topic: &str,
    partition: i32,
    next_offset: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE projector_offsets SET next_offset = $4, updated_at = now()
         WHERE projection = $1 AND topic = $2 AND partition = $3",
    )
    .bind(projection)
    .bind(topic)
    .bind(partition)
    .bind(next_offset)
    .execute(conn)
    .await?;
    Ok(())
}

/// A record the projection could not decode or apply, kept for ops (one row per record; a
/// second failure of the same record replaces the reason).
pub struct DeadLetter<'a> {
    pub projection: &'a str,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub person_id: Option<Uuid>,
    pub reason: &'a str,
    pub subject_key: Option<&'a str>,
}

pub async fn record_dead_letter(conn: &mut PgConnection, letter: &DeadLetter<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO dead_letters (projection, topic, partition, \"offset\", person_id, reason, subject_key)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (projection, topic, partition, \"offset\") DO UPDATE SET reason = EXCLUDED.reason",
    )
    .bind(letter.projection)
    .bind(letter.topic)
    .bind(letter.partition)
    .bind(letter.offset)
    .bind(letter.person_id)
    .bind(letter.reason)
    .bind(letter.subject_key)
    .execute(conn)
    .await?;
    Ok(())
}
