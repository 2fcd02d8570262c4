//! The identity tables: persons (with where each was merged), the subject keys linked to them,
//! the keys a human decision pinned, the conflicts recorded for review and the decisions taken.
//! How a person is resolved from these is the projector's (`identity.rs`); what is stored and
//! how is here.

use std::collections::{HashMap, HashSet};

use sqlx::PgConnection;
use uuid::Uuid;

/// The canonical person (followed to where it was merged) each of `keys` is linked to.
pub async fn links_of(conn: &mut PgConnection, keys: &[&str]) -> Result<HashMap<String, Uuid>, sqlx::Error> {
    let rows: Vec<(String, Uuid)> = sqlx::query_as(
        "SELECT l.subject_key, COALESCE(p.merged_into, p.person_id)
         FROM subject_links l JOIN persons p USING (person_id) WHERE l.subject_key = ANY($1)",
    )
    .bind(keys)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// The canonical person of one subject key, when linked.
pub async fn person_of(conn: &mut PgConnection, subject_key: &str) -> Result<Option<Uuid>, sqlx::Error> {
    Ok(links_of(conn, &[subject_key]).await?.remove(subject_key))
}

/// Which of `keys` a human decision pinned.
pub async fn pinned_among(conn: &mut PgConnection, keys: &[String]) -> Result<HashSet<String>, sqlx::Error> {
    let pinned: Vec<String> = sqlx::query_scalar("SELECT subject_key FROM identity_pins WHERE subject_key = ANY($1)")
        .bind(keys)
        .fetch_all(conn)
        .await?;
    Ok(pinned.into_iter().collect())
}

/// The owner's identity key of each of `keys` a human decision pinned.
pub async fn pins_of(conn: &mut PgConnection, keys: &[&str]) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as("SELECT subject_key, owner_key FROM identity_pins WHERE subject_key = ANY($1)")
        .bind(keys)
        .fetch_all(conn)
        .await
}

/// Which of `persons` exist (merged or not).
pub async fn existing_among(conn: &mut PgConnection, persons: &[Uuid]) -> Result<HashSet<Uuid>, sqlx::Error> {
    let existing: Vec<Uuid> = sqlx::query_scalar("SELECT person_id FROM persons WHERE person_id = ANY($1)")
        .bind(persons)
        .fetch_all(conn)
        .await?;
    Ok(existing.into_iter().collect())
}

/// The person minted from an identity key (created if new), followed to where it was merged.
pub async fn ensure_person(conn: &mut PgConnection, identity_key: &str) -> Result<Uuid, sqlx::Error> {
    let id = crate::person_id_for(identity_key);
    sqlx::query("INSERT INTO persons (person_id, id_key) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(id)
        .bind(identity_key)
        .execute(&mut *conn)
        .await?;
    canonical(conn, id).await
}

/// Creates the persons `(id, identity key)` that do not exist yet, in one statement. The rows
/// are written in id order (concurrent multi-row inserts of overlapping keys in different
/// orders deadlock).
pub async fn insert_persons(conn: &mut PgConnection, mut persons: Vec<(Uuid, String)>) -> Result<(), sqlx::Error> {
    if persons.is_empty() {
        return Ok(());
    }
    persons.sort_unstable();
    let (ids, keys): (Vec<Uuid>, Vec<String>) = persons.into_iter().unzip();
    sqlx::query(
        "INSERT INTO persons (person_id, id_key) SELECT * FROM unnest($1::uuid[], $2::text[]) ON CONFLICT DO NOTHING",
    )
    .bind(ids)
    .bind(keys)
    .execute(conn)
    .await?;
    Ok(())
}

/// A key to link to a person, and the event that linked it (`source/event_id`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NewLink {
    pub subject_key: String,
    pub person_id: Uuid,
    pub via: String,
}

/// Links keys that no one linked yet, in one statement (in key order, as
/// [`insert_persons`]); returns how many were linked: fewer than asked when another
/// transaction linked some meanwhile.
pub async fn insert_links(conn: &mut PgConnection, mut links: Vec<NewLink>) -> Result<usize, sqlx::Error> {
    if links.is_empty() {
        return Ok(0);
    }
    links.sort_unstable();
    let mut keys = Vec::with_capacity(links.len());
    let mut persons = Vec::with_capacity(links.len());
    let mut vias = Vec::with_capacity(links.len());
    for link in links {
        keys.push(link.subject_key);
        persons.push(link.person_id);
        vias.push(link.via);
    }
    let inserted: Vec<String> = sqlx::query_scalar(
        "INSERT INTO subject_links (subject_key, person_id, via_event)
         SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[]) ON CONFLICT DO NOTHING RETURNING subject_key",
    )
    .bind(keys)
    .bind(persons)
    .bind(vias)
    .fetch_all(conn)
    .await?;
    Ok(inserted.len())
}

/// Links `key` to `person_id` unless it is linked already; returns the person it is linked to
/// now (`person_id`, or the one another transaction linked it to first).
pub async fn link_unless_linked(
    conn: &mut PgConnection,
    key: &str,
    person_id: Uuid,
    via: &str,
) -> Result<Uuid, sqlx::Error> {
    let inserted: Option<String> = sqlx::query_scalar(
        "INSERT INTO subject_links (subject_key, person_id, via_event) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING RETURNING subject_key",
    )
    .bind(key)
    .bind(person_id)
    .bind(via)
    .fetch_optional(&mut *conn)
    .await?;
    if inserted.is_some() {
        return Ok(person_id);
    }
    sqlx::query_scalar("SELECT person_id FROM subject_links WHERE subject_key = $1").bind(key).fetch_one(conn).await
}

/// Where a person was merged, or itself (also for an id no row holds).
pub async fn canonical(conn: &mut PgConnection, person_id: Uuid) -> Result<Uuid, sqlx::Error> {
    let row: Option<(Uuid,)> =
        sqlx::query_as("SELECT COALESCE(merged_into, person_id) FROM persons WHERE person_id = $1")
            .bind(person_id)
            .fetch_optional(conn)
            .await?;
    Ok(row.map_or(person_id, |(id,)| id))
}

/// Whether two persons may be one: no exclusive kind of key (NIR, France Travail id) differs.
pub async fn compatible(conn: &mut PgConnection, a: Uuid, b: Uuid) -> Result<bool, sqlx::Error> {
    let (clash,): (bool,) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM subject_links x JOIN subject_links y
                          ON split_part(x.subject_key, ':', 1) = split_part(y.subject_key, ':', 1)
                        WHERE x.person_id = $1 AND y.person_id = $2 AND x.subject_key <> y.subject_key
                          AND split_part(x.subject_key, ':', 1) = ANY($3))",
    )
    .bind(a)
    .bind(b)
    .bind(crate::exclusive_prefixes())
    .fetch_one(conn)
    .await?;
    Ok(!clash)
}

/// (weaker, stronger) of two persons, by their identity keys; a person without identity key
/// (minted before ids were derived) is the weaker.
pub async fn by_strength(conn: &mut PgConnection, a: Uuid, b: Uuid) -> Result<(Uuid, Uuid), sqlx::Error> {
    let rows: Vec<(Uuid, Option<String>)> =
        sqlx::query_as("SELECT person_id, id_key FROM persons WHERE person_id = ANY($1)")
            .bind([a, b])
            .fetch_all(conn)
            .await?;
    let key_of = |id: Uuid| rows.iter().find(|(p, _)| *p == id).and_then(|(_, key)| key.clone());
    let rank = |id: Uuid| key_of(id).map(|key| (crate::key_strength(&key).0, key, id));
    let a_stronger = match (rank(a), rank(b)) {
        (Some(x), Some(y)) => x < y,
        (Some(_), None) => true,
        (None, Some(_)) => false,
        (None, None) => a < b,
    };
    Ok(if a_stronger { (b, a) } else { (a, b) })
}

/// Merges person `from` into `into`: keys, events and dead letters move; `from` redirects and
/// its dossier goes (the caller folds `into` again).
///
/// The lock of `from` first (the refold's, `dossiers::lock`): a batch of another worker that
/// stored facts with `from` holds it until it commits, and its facts then move too; one that
/// stores facts with `from` after this takes the lock later and finds `from` merged.
pub async fn merge(conn: &mut PgConnection, from: Uuid, into: Uuid) -> Result<(), sqlx::Error> {
    crate::store::dossiers::lock(&mut *conn, &[from], &[]).await?;
    for statement in [
        "UPDATE subject_links SET person_id = $2 WHERE person_id = $1",
        "UPDATE persons SET merged_into = $2 WHERE person_id = $1 OR merged_into = $1",
        "UPDATE person_events SET person_id = $2 WHERE person_id = $1",
        "UPDATE dead_letters SET person_id = $2 WHERE person_id = $1",
    ] {
        sqlx::query(statement).bind(from).bind(into).execute(&mut *conn).await?;
    }
    sqlx::query("DELETE FROM dossiers WHERE person_id = $1").bind(from).execute(conn).await?;
    Ok(())
}

/// Moves a subject key, and the events whose subject it is, from one person to another (under
/// the lock of `from`, as [`merge`]).
pub async fn relink(conn: &mut PgConnection, key: &str, from: Uuid, to: Uuid) -> Result<(), sqlx::Error> {
    crate::store::dossiers::lock(&mut *conn, &[from], &[]).await?;
    sqlx::query(
        "INSERT INTO subject_links (subject_key, person_id, via_event) VALUES ($1, $2, 'identity')
         ON CONFLICT (subject_key) DO UPDATE SET person_id = EXCLUDED.person_id",
    )
    .bind(key)
    .bind(to)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE person_events SET person_id = $3 WHERE person_id = $2 AND subject_key = $1")
        .bind(key)
        .bind(from)
        .bind(to)
        .execute(conn)
        .await?;
    Ok(())
}

/// A contested link, recorded for a human: `subject_key` stays with `linked_to` while
/// `claimed_for` claims it (the event that raised it named). Recorded once.
pub struct Conflict<'a> {
    pub subject_key: &'a str,
    pub linked_to: Uuid,
    pub claimed_for: Uuid,
    pub source: &'a str,
    pub event_id: &'a str,
    /// Set when a decision records a conflict it resolves (`confirm`, `reject`, `merge`).
    pub resolution: Option<&'a str>,
}

pub async fn record_conflict(conn: &mut PgConnection, conflict: &Conflict<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO identity_conflicts (subject_key, linked_to, claimed_for, source, event_id, resolution)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(conflict.subject_key)
    .bind(conflict.linked_to)
    .bind(conflict.claimed_for)
    .bind(conflict.source)
    .bind(conflict.event_id)
    .bind(conflict.resolution)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks the open conflicts on `subject_key` between any of `persons` as resolved.
pub async fn resolve_conflicts(
    conn: &mut PgConnection,
    subject_key: &str,
    persons: &[Uuid],
    resolution: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE identity_conflicts SET resolution = $2
         WHERE subject_key = $1 AND resolution IS NULL AND (linked_to = ANY($3) OR claimed_for = ANY($3))",
    )
    .bind(subject_key)
    .bind(resolution)
    .bind(persons)
    .execute(conn)
    .await?;
    Ok(())
}

/// A human decision on a contested key, as recorded.
pub struct Decided<'a> {
    pub decision_id: Uuid,
    pub decided_at: chrono::DateTime<chrono::Utc>,
    pub decided_by: &'a str,
    pub subject_key: &'a str,
    pub holder_key: &'a str,
    pub claimant_key: &'a str,
    /// `CONFIRM`, `REJECT` or `MERGE`.
    pub decision: &'a str,
}

pub async fn record_decision(conn: &mut PgConnection, decided: &Decided<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO identity_decisions (decision_id, decided_at, decided_by, subject_key, holder_key, claimant_key, decision)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    )
    .bind(decided.decision_id)
    .bind(decided.decided_at)
    .bind(decided.decided_by)
    .bind(decided.subject_key)
    .bind(decided.holder_key)
    .bind(decided.claimant_key)
    .bind(decided.decision)
    .execute(conn)
    .await?;
    Ok(())
}

/// Pins `subject_key` to the person of `owner_key` (a human decided; the latest decision holds).
pub async fn pin(
    conn: &mut PgConnection,
    subject_key: &str,
    owner_key: &str,
    decision_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO identity_pins (subject_key, owner_key, decision_id) VALUES ($1, $2, $3)
         ON CONFLICT (subject_key) DO UPDATE SET owner_key = EXCLUDED.owner_key, decision_id = EXCLUDED.decision_id",
    )
    .bind(subject_key)
    .bind(owner_key)
    .bind(decision_id)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn unpin(conn: &mut PgConnection, subject_key: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM identity_pins WHERE subject_key = $1").bind(subject_key).execute(conn).await?;
    Ok(())
}

/// Links a key no one holds to a person, by a human decision.
pub async fn link_by_decision(conn: &mut PgConnection, subject_key: &str, person_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO subject_links (subject_key, person_id, via_event) VALUES ($1, $2, 'identity')")
        .bind(subject_key)
        .bind(person_id)
        .execute(conn)
        .await?;
    Ok(())
}
