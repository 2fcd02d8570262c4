//! The access journal: one row per search, dossier or timeline read, territory view and refused
//! attempt. Written in the same request, before the answer leaves (concurrent requests' rows
//! share one commit: [`Grouped`]); no NIR nor name, only the hub's person ids. The
//! application's role may insert and read it, never change it.

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

/// Writes `entries` in one statement (one commit for them all).
pub async fn write_many(pool: &PgPool, entries: &[Entry]) -> Result<(), sqlx::Error> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut insert = sqlx::QueryBuilder::new(
        "INSERT INTO journal.entries (request_id, action, agent_uid, agent_siret, agent_role, purpose, person_id,
                                      persons_found, sections_shown, sections_withheld, outcome, channel) ",
    );
    insert.push_values(entries, |mut row, entry| {
        row.push_bind(entry.request_id)
            .push_bind(entry.action)
            .push_bind(&entry.agent_uid)
            .push_bind(&entry.agent_siret)
            .push_bind(entry.agent_role)
            .push_bind(entry.purpose)
            .push_bind(entry.person_id)
            .push_bind(&entry.persons_found)
            .push_bind(&entry.sections_shown)
            .push_bind(withheld(entry))
            .push_bind(&entry.outcome)
            .push_bind(entry.channel.code());
    });
    insert.build().execute(pool).await?;
    entries.iter().for_each(count);
    Ok(())
}

fn withheld(entry: &Entry) -> serde_json::Value {
    serde_json::Value::Array(
        entry
            .sections_withheld
            .iter()
            .map(|(section, motif)| serde_json::json!({"section": section, "motif": motif}))
            .collect(),
    )
}

/// Group commit for the journal: concurrent requests hand their row to one writer, which
/// writes what has gathered in one statement and answers each once it is committed. Each
/// request still waits for its own row before its answer leaves; under load, many reads share
/// one commit instead of one each. A group that fails is written again row by row by the
/// requests themselves ([`write`]), so each gets its own error.
#[derive(Clone)]
pub struct Grouped {
    rows: tokio::sync::mpsc::UnboundedSender<(Entry, tokio::sync::oneshot::Sender<bool>)>,
}

/// The most rows one statement writes.
const GROUP: usize = 64;

impl Grouped {
    /// Starts the writer on the current runtime.
    pub fn start(pool: PgPool) -> Self {
        let (rows, mut waiting) = tokio::sync::mpsc::unbounded_channel::<(Entry, tokio::sync::oneshot::Sender<bool>)>();
        tokio::spawn(async move {
            while let Some(first) = waiting.recv().await {
                let mut group = vec![first];
                while group.len() < GROUP {
                    match waiting.try_recv() {
                        Ok(row) => group.push(row),
                        Err(_) => break,
                    }
                }
                let (entries, done): (Vec<Entry>, Vec<_>) = group.into_iter().unzip();
                let written = write_many(&pool, &entries).await.is_ok();
                for done in done {
                    done.send(written).ok();
                }
            }
        });
        Self { rows }
    }

    /// Writes `entry`, grouped with the rows of concurrent requests; returns once it is
    /// committed. A group that failed (nothing of it written: one statement) or a writer gone:
    /// this row alone, with its own error.
    pub async fn write(&self, pool: &PgPool, entry: &Entry) -> Result<(), sqlx::Error> {
        let (done, written) = tokio::sync::oneshot::channel();
        if self.rows.send((entry.clone(), done)).is_ok() && written.await == Ok(true) {
            return Ok(());
        }
        write(pool, entry).await
    }
}

/// Writes one row (its own commit).
pub async fn write(pool: &PgPool, entry: &Entry) -> Result<(), sqlx::Error> {
    write_many(pool, std::slice::from_ref(entry)).await
}

/// What a written row adds to the metrics: journal writes by action, refusals by reason,
/// sections withheld from dossier reads by section and motif.
fn count(entry: &Entry) {
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
