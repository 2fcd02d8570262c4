//! The read models: their tables (migrations next to this crate) and the typed queries the API
//! reads them with. The projector writes them; nothing else does.

pub mod fold;
pub mod parcours;
pub mod statistics;
pub mod store;
pub mod territory;

use chrono::{DateTime, NaiveDate, Utc};
use passerelle_domain::event::SubjectKind;
use sqlx::PgPool;
use uuid::Uuid;

/// Migrations of the read-model tables. Versions start at 1001 so they never collide with the
/// event log's (one `_sqlx_migrations` table per database); each migrator ignores the other's.
pub fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator
}

/// Whether a database error means PostgreSQL is unreachable, restarting or shutting down (the
/// caller answers "unavailable, retry": nothing was done), rather than a fault of the request.
pub fn database_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Tls(_) => true,
        // admin_shutdown, crash_shutdown, cannot_connect_now, and the connection exceptions (08…).
        sqlx::Error::Database(database) => database
            .code()
            .is_some_and(|code| matches!(code.as_ref(), "57P01" | "57P02" | "57P03") || code.starts_with("08")),
        _ => false,
    }
}

/// The schema the read models are served from.
pub const SCHEMA: &str = "readmodel";

/// The migration that moved the read models into [`SCHEMA`]: a rebuild creates its tables
/// directly in its own schema.
const SCHEMA_MOVE: i64 = 1004;

/// What a rebuild runs in its fresh schema (first on `search_path`) to create the read-model
/// tables: the migration files themselves, but the one that moved the tables into [`SCHEMA`],
/// with their `readmodel.` qualifiers dropped (migrations after 1004 name their tables so; the
/// rebuild test compares the rebuilt tables, columns and indexes with the live ones). One
/// source, no hand-kept copy.
pub fn rebuild_ddl() -> Vec<String> {
    let qualifier = format!("{SCHEMA}.");
    migrator()
        .iter()
        .filter(|migration| migration.version != SCHEMA_MOVE)
        .map(|migration| migration.sql.as_str().replace(&qualifier, ""))
        .collect()
}

/// A person's id, derived from their identity key (the strongest subject key they were minted
/// from): the same keys give the same ids in every rebuild. The key is itself an HMAC, so the id
/// reveals nothing without the pepper.
pub fn person_id_for(identity_key: &str) -> Uuid {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("passerelle.person/{identity_key}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::new_v8(bytes)
}

/// How strongly a subject key identifies a person (DOMAIN.md §2): NIR, then France Travail id,
/// then département id, then civil identity; ties by the key itself, so the order is total.
pub fn key_strength(key: &str) -> (u8, &str) {
    let rank = SubjectKind::of(key).map_or(u8::MAX, SubjectKind::strength);
    (rank, key)
}

/// The prefixes of the kinds of key a person has at most one of ([`SubjectKind::exclusive`]),
/// for the SQL that compares them.
pub fn exclusive_prefixes() -> Vec<&'static str> {
    SubjectKind::PERSONS.into_iter().filter(|kind| kind.exclusive()).map(SubjectKind::prefix).collect()
}

/// The current state of one dossier.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Dossier {
    pub person_id: Uuid,
    pub territory: Option<String>,
    pub territory_since: Option<DateTime<Utc>>,
    pub previous_territory: Option<String>,
    pub household_key: Option<String>,
    pub role: Option<String>,
    pub right_state: Option<String>,
    pub right_state_at: Option<DateTime<Utc>>,
    pub right_motif: Option<String>,
    pub sdd: bool,
    pub sdd_since: Option<DateTime<Utc>>,
    pub ft_status: Option<String>,
    pub ft_status_at: Option<DateTime<Utc>>,
    pub ft_categorie: Option<String>,
    pub ft_accompagnement: Option<String>,
    pub orientation_status: Option<String>,
    pub orientation_type: Option<String>,
    pub oriented_at: Option<DateTime<Utc>>,
    pub structure_siret: Option<String>,
    pub referent_uid: Option<String>,
    pub referent_siret: Option<String>,
    pub referent_since: Option<DateTime<Utc>>,
    pub contract_kind: Option<String>,
    pub contract_start: Option<NaiveDate>,
    pub contract_end: Option<NaiveDate>,
    pub opposition: bool,
    pub consent_diagnostic: bool,
    pub last_contact_at: Option<DateTime<Utc>>,
    pub incomplete: bool,
}

/// One entry of a dossier's timeline.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TimelineEntry {
    pub source: String,
    pub event_id: String,
    pub family: String,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub relayed_by: Option<String>,
    pub superseded_by: Option<String>,
    pub retracted_by: Option<String>,
}

/// The person a subject key belongs to, following merges.
pub async fn person_of_subject(pool: &PgPool, subject_key: &str) -> Result<Option<Uuid>, sqlx::Error> {
    store::identity::person_of(&mut *pool.acquire().await?, subject_key).await
}

/// The persons any of `subject_keys` is linked to (following merges).
pub async fn persons_of_subjects(pool: &PgPool, subject_keys: &[String]) -> Result<Vec<Uuid>, sqlx::Error> {
    let rows: Vec<(Uuid,)> = sqlx::query_as(
        "SELECT DISTINCT COALESCE(p.merged_into, p.person_id) FROM subject_links l JOIN persons p USING (person_id)
         WHERE l.subject_key = ANY($1)",
    )
    .bind(subject_keys)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Where a person id leads now: itself, the person it was merged into, or nobody (unknown or
/// erased).
pub async fn current_person(pool: &PgPool, person_id: Uuid) -> Result<Option<Uuid>, sqlx::Error> {
    let row: Option<(Uuid,)> =
        sqlx::query_as("SELECT COALESCE(merged_into, person_id) FROM persons WHERE person_id = $1")
            .bind(person_id)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(id,)| id))
}

/// The dossier a person id leads to now (its own, or that of the person it was merged into), in
/// one round trip; None for an unknown or erased id, or a person without dossier.
pub async fn current_dossier(pool: &PgPool, person_id: Uuid) -> Result<Option<Dossier>, sqlx::Error> {
    sqlx::query_as(
        "SELECT d.* FROM persons p JOIN dossiers d ON d.person_id = COALESCE(p.merged_into, p.person_id)
         WHERE p.person_id = $1",
    )
    .bind(person_id)
    .fetch_optional(pool)
    .await
}

pub async fn dossier(pool: &PgPool, person_id: Uuid) -> Result<Option<Dossier>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM dossiers WHERE person_id = $1").bind(person_id).fetch_optional(pool).await
}

/// The timeline of a dossier, oldest first.
pub async fn timeline(pool: &PgPool, person_id: Uuid) -> Result<Vec<TimelineEntry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT source, event_id, family, event_type, occurred_at, recorded_at, relayed_by, superseded_by, retracted_by
         FROM person_events WHERE person_id = $1 ORDER BY occurred_at, recorded_at, event_id",
    )
    .bind(person_id)
    .fetch_all(pool)
    .await
}

/// The persons (following merges) whose subjects the search index holds under `search_key`
/// (the blind index of a birth name and date): the API's search by name and the person's
/// identification from FranceConnect.
pub async fn persons_by_search_key(pool: &PgPool, search_key: &str) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT COALESCE(p.merged_into, p.person_id)
         FROM public.search_index s JOIN subject_links l ON l.subject_key = s.subject_key JOIN persons p USING (person_id)
         WHERE s.search_key = $1",
    )
    .bind(search_key)
    .fetch_all(pool)
    .await
}

/// The subject key under which a person's own choices go on the log: the strongest of the keys
/// linked to them (NIR, then France Travail, then département id), the oldest link first.
pub async fn strongest_subject_key(pool: &PgPool, person_id: Uuid) -> Result<Option<String>, sqlx::Error> {
    let keys: Vec<(String, DateTime<Utc>)> =
        sqlx::query_as("SELECT subject_key, linked_at FROM subject_links WHERE person_id = $1")
            .bind(person_id)
            .fetch_all(pool)
            .await?;
    Ok(keys
        .into_iter()
        .filter(|(key, _)| SubjectKind::of(key).is_some_and(|kind| kind != SubjectKind::Household))
        .min_by(|(a, a_at), (b, b_at)| (key_strength(a).0, a_at, a).cmp(&(key_strength(b).0, b_at, b)))
        .map(|(key, _)| key))
}

/// Whether the projection has folded one event (`source`, `event_id`) into a person's dossier.
pub async fn event_projected(pool: &PgPool, source: &str, event_id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM person_events WHERE source = $1 AND event_id = $2)")
        .bind(source)
        .bind(event_id)
        .fetch_one(pool)
        .await
}

/// When the hub last received a fact of each family about a person (how fresh each source is).
pub async fn last_received_by_family(
    pool: &PgPool,
    person_id: Uuid,
) -> Result<Vec<(String, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT family, max(recorded_at) FROM person_events WHERE person_id = $1 GROUP BY family ORDER BY family",
    )
    .bind(person_id)
    .fetch_all(pool)
    .await
}

/// The authority the hub holds for a person, from their CAF/MSA dossier (the projected
/// dossier's territory and the move that led there).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct HeldAuthority {
    /// The subject key asked about.
    pub subject_key: String,
    pub territory: Option<String>,
    pub previous_territory: Option<String>,
    pub territory_since: Option<DateTime<Utc>>,
    /// The person's CAF/MSA dossier (household key), its caisse and its right state.
    pub household_key: Option<String>,
    pub household_organisme: Option<String>,
    pub right_state: Option<String>,
    /// Every CAF/MSA dossier the person's facts were about (household keys).
    pub known_households: Vec<String>,
    /// Who accompanies the person: the SIRET of their active référent's structure, the structure
    /// an orientation decision sent them to, their France Travail status.
    pub referent_siret: Option<String>,
    pub structure_siret: Option<String>,
    pub ft_status: Option<String>,
}

/// For each of `subject_keys` linked to a person, the authority the hub holds for that person
/// (following merges). Keys of no known person are absent from the answer.
pub async fn held_authorities<'e, E>(executor: E, subject_keys: &[String]) -> Result<Vec<HeldAuthority>, sqlx::Error>
where
    E: sqlx::PgExecutor<'e>,
{
    sqlx::query_as(
        "SELECT l.subject_key, d.territory, d.previous_territory, d.territory_since, d.household_key,
                (SELECT e.organisme FROM person_events e
                 WHERE e.household_key = d.household_key AND e.organisme IS NOT NULL LIMIT 1) AS household_organisme,
                d.right_state,
                ARRAY(SELECT DISTINCT e.household_key FROM person_events e
                      WHERE e.person_id = d.person_id AND e.household_key IS NOT NULL) AS known_households,
                d.referent_siret, d.structure_siret, d.ft_status
         FROM subject_links l JOIN persons p USING (person_id)
         JOIN dossiers d ON d.person_id = COALESCE(p.merged_into, p.person_id)
         WHERE l.subject_key = ANY($1)",
    )
    .bind(subject_keys)
    .fetch_all(executor)
    .await
}

/// The organisme (CAF or MSA) whose facts last named the person in `household_key`.
pub async fn latest_organisme(
    pool: &PgPool,
    person_id: Uuid,
    household_key: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT organisme FROM person_events WHERE person_id = $1 AND household_key = $2 AND organisme IS NOT NULL
         ORDER BY occurred_at DESC LIMIT 1",
    )
    .bind(person_id)
    .bind(household_key)
    .fetch_optional(pool)
    .await
}

/// One orientation fact in force, as the parcours section lists them.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrientationStep {
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub fact: serde_json::Value,
}

/// The person's orientation facts in force, oldest first.
pub async fn orientation_history(pool: &PgPool, person_id: Uuid) -> Result<Vec<OrientationStep>, sqlx::Error> {
    sqlx::query_as(
        "SELECT event_type, occurred_at, fact FROM person_events
         WHERE person_id = $1 AND event_type LIKE 'orientation.%' AND superseded_by IS NULL AND retracted_by IS NULL
         ORDER BY occurred_at",
    )
    .bind(person_id)
    .fetch_all(pool)
    .await
}

/// An event's sealed personal data (under its subject's data key) and commune, as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SealedFields {
    pub source: String,
    pub family: String,
    pub event_id: String,
    pub sealed_key_id: Option<Uuid>,
    pub sealed_nonce: Option<Vec<u8>>,
    pub sealed_data: Option<Vec<u8>>,
    pub commune: Option<String>,
}

/// The sealed fields of the person's most recent `limit` events that carry any, newest first,
/// the parcours' left out: they hold labels, not the identity the institutions' facts give.
pub async fn identity_fields(pool: &PgPool, person_id: Uuid, limit: i64) -> Result<Vec<SealedFields>, sqlx::Error> {
    sqlx::query_as(
        "SELECT source, family, event_id, sealed_key_id, sealed_nonce, sealed_data, commune FROM person_events
         WHERE person_id = $1 AND (sealed_data IS NOT NULL OR commune IS NOT NULL) AND family <> $3
         ORDER BY occurred_at DESC, recorded_at DESC LIMIT $2",
    )
    .bind(person_id)
    .bind(limit)
    .bind(passerelle_domain::event::Family::Parcours.label())
    .fetch_all(pool)
    .await
}

/// The persons whose dossier is in `household_key`.
pub async fn persons_of_household(pool: &PgPool, household_key: &str) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT person_id FROM dossiers WHERE household_key = $1")
        .bind(household_key)
        .fetch_all(pool)
        .await
}
