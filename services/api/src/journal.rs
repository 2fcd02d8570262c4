//! The access journal: one row per search, dossier or timeline read, territory view and refused
//! attempt. Written in the same request, before the answer leaves; no NIR nor name, only the
//! hub's person ids. The application's role may insert and read it, never change it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// Through which door a request came: the journal says it, so a DPO knows whether a read was
/// made by an information system (REST, gRPC) or by an agent in the web console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Channel {
    #[default]
    Rest,
    Grpc,
    Console,
    /// The person's own space (FranceConnect).
    Person,
}

impl Channel {
    pub fn code(self) -> &'static str {
        match self {
            Channel::Rest => "api",
            Channel::Grpc => "api_grpc",
            Channel::Console => "console",
            Channel::Person => "espace_personne",
        }
    }
}

/// A row to write.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    pub request_id: Uuid,
    pub channel: Channel,
    pub action: &'static str,
    pub agent_uid: Option<String>,
    pub agent_siret: Option<String>,
    pub agent_role: Option<&'static str>,
    pub purpose: Option<&'static str>,
    pub person_id: Option<Uuid>,
    pub persons_found: Vec<Uuid>,
    pub sections_shown: Vec<&'static str>,
    pub sections_withheld: Vec<(&'static str, &'static str)>,
    pub outcome: String,
}

pub async fn write(pool: &PgPool, entry: &Entry) -> Result<(), sqlx::Error> {
    let withheld: Vec<serde_json::Value> = entry
        .sections_withheld
        .iter()
        .map(|(section, motif)| serde_json::json!({"section": section, "motif": motif}))
        .collect();
    sqlx::query(
        "INSERT INTO journal.entries (request_id, action, agent_uid, agent_siret, agent_role, purpose, person_id,
                                      persons_found, sections_shown, sections_withheld, outcome, channel)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(entry.request_id)
    .bind(entry.action)
    .bind(&entry.agent_uid)
    .bind(&entry.agent_siret)
    .bind(entry.agent_role)
    .bind(entry.purpose)
    .bind(entry.person_id)
    .bind(&entry.persons_found)
    .bind(&entry.sections_shown)
    .bind(serde_json::Value::Array(withheld))
    .bind(&entry.outcome)
    .bind(entry.channel.code())
    .execute(pool)
    .await?;
    let metrics = crate::metrics::metrics();
    metrics.journal_writes.with_label_values(&[entry.action]).inc();
    if !matches!(entry.outcome.as_str(), "shown" | "found" | "none" | "moved_out") {
        let reason = if entry.outcome == "error" { "error" } else { entry.outcome.as_str() };
        metrics.refusals.with_label_values(&[reason]).inc();
    }
    for (section, motif) in &entry.sections_withheld {
        if entry.action == "dossier" {
            metrics.sections_withheld.with_label_values(&[section, motif]).inc();
        }
    }
    Ok(())
}

/// A row as the DPO reads it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Row {
    pub entry_id: i64,
    pub at: DateTime<Utc>,
    pub request_id: Uuid,
    pub channel: String,
    pub action: String,
    pub agent_uid: Option<String>,
    pub agent_siret: Option<String>,
    pub agent_role: Option<String>,
    pub purpose: Option<String>,
    pub person_id: Option<Uuid>,
    pub persons_found: Vec<Uuid>,
    pub sections_shown: Vec<String>,
    pub sections_withheld: serde_json::Value,
    pub outcome: String,
}

/// Whose reads a DPO may see: their own organisation's agents', and those of the persons of
/// their organisation's territory (as read or found), whoever read them.
#[derive(Debug, Clone)]
pub struct DpoScope {
    pub siret: String,
    pub territory: Option<String>,
}

/// What a DPO searches the journal for; every field narrows.
#[derive(Debug, Clone, Default)]
pub struct Search<'a> {
    /// Rows about the person, as read or found.
    pub person_id: Option<Uuid>,
    pub agent: Option<&'a str>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub purpose: Option<&'a str>,
    /// The outcome's start (`refused` matches every `refused:<motif>`).
    pub outcome: Option<&'a str>,
    /// Rows after this position (`at`, `entry_id`) only: the next page.
    pub after: Option<(DateTime<Utc>, i64)>,
}

/// Rows matching `search`, oldest first, within the DPO's scope.
pub async fn read(pool: &PgPool, scope: &DpoScope, search: &Search<'_>, limit: i64) -> Result<Vec<Row>, sqlx::Error> {
    let Search { person_id, agent, since, until, purpose, outcome, after } = *search;
    sqlx::query_as(
        "SELECT entry_id, at, request_id, channel, action, agent_uid, agent_siret, agent_role, purpose, person_id,
                persons_found, sections_shown, sections_withheld, outcome
         FROM journal.entries
         WHERE ($1::uuid IS NULL OR person_id = $1 OR $1 = ANY(persons_found))
           AND ($2::text IS NULL OR agent_uid = $2)
           AND ($3::timestamptz IS NULL OR at >= $3)
           AND ($4::timestamptz IS NULL OR at < $4)
           AND ($8::text IS NULL OR purpose = $8)
           AND ($9::text IS NULL OR outcome = $9 OR outcome LIKE $9 || ':%')
           AND ($10::timestamptz IS NULL OR (at, entry_id) > ($10, $11))
           AND (agent_siret = $6 OR ($7::text IS NOT NULL AND (
                person_id IN (SELECT d.person_id FROM dossiers d WHERE d.territory = $7)
                OR persons_found && ARRAY(SELECT d.person_id FROM dossiers d WHERE d.territory = $7))))
         ORDER BY at, entry_id
         LIMIT $5",
    )
    .bind(person_id)
    .bind(agent)
    .bind(since)
    .bind(until)
    .bind(limit)
    .bind(&scope.siret)
    .bind(&scope.territory)
    .bind(purpose)
    .bind(outcome)
    .bind(after.map(|(at, _)| at))
    .bind(after.map(|(_, id)| id).unwrap_or_default())
    .fetch_all(pool)
    .await
}

/// The reads of a person's dossier by agents (as read or found), most recent first: what the
/// person sees in their space. Their own reads are left out.
pub async fn reads_about(pool: &PgPool, person_id: Uuid, limit: i64) -> Result<Vec<Row>, sqlx::Error> {
    sqlx::query_as(
        "SELECT entry_id, at, request_id, channel, action, agent_uid, agent_siret, agent_role, purpose, person_id,
                persons_found, sections_shown, sections_withheld, outcome
         FROM journal.entries
         WHERE (person_id = $1 OR $1 = ANY(persons_found)) AND channel <> 'espace_personne' AND agent_siret IS NOT NULL
         ORDER BY at DESC, entry_id DESC
         LIMIT $2",
    )
    .bind(person_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Deletes the rows older than one year (the daily job); the only deletion.
pub async fn purge_expired(pool: &PgPool) -> Result<i64, sqlx::Error> {
    let (gone,): (i64,) = sqlx::query_as("SELECT journal.purge_expired()").fetch_one(pool).await?;
    Ok(gone)
}
