//! Per-territory read models: the indicators of an RSA authority and the work queues its agents
//! act on, computed from the dossiers (which the projector keeps current), so they are current
//! as soon as an event is projected.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// The indicators of one territory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Indicators {
    pub territory: String,
    /// Households by RSA right state (`ETATDOSRSA` code → households).
    pub households_by_right_state: Vec<(String, i64)>,
    pub persons_sdd: i64,
    pub sdd_oriented: i64,
    pub sdd_not_oriented: i64,
    /// Days from becoming SDD to the orientation decision, over oriented SDD persons.
    pub orientation_delay_median_days: Option<f64>,
    pub orientation_delay_p90_days: Option<f64>,
    pub sdd_registered_france_travail: i64,
    pub orientations_by_type: Vec<(String, i64)>,
    pub sdd_without_referent: i64,
    pub parcours: ParcoursIndicators,
}

/// The parcours indicators of a territory (issue 13, DOMAIN.md §8), from the parcours facts in
/// force of the persons the territory holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ParcoursIndicators {
    /// Persons oriented at least two months ago: the base of the next figure.
    pub oriented_two_months_ago: i64,
    /// Of those, the persons whose plan (contrat d'engagement) was signed within two months of
    /// the orientation.
    pub plan_within_two_months: i64,
    /// Days from the orientation decision to the plan's signature, over persons with a signed plan.
    pub plan_delay_median_days: Option<f64>,
    /// Rendez-vous outcomes recorded: honoured, missed (excused or not).
    pub rendez_vous_honoured: i64,
    pub rendez_vous_missed: i64,
    /// Persons with a suspension-remobilisation in force today.
    pub sanctions_in_force: i64,
}

/// A parcours fact of the person in force (`{event}`: its event type), for the queries below.
fn parcours_fact(event: &str) -> String {
    format!(
        "SELECT 1 FROM person_events e WHERE e.person_id = dossiers.person_id AND e.event_type = '{event}'
           AND e.superseded_by IS NULL AND e.retracted_by IS NULL"
    )
}

/// The instant of the person's latest missed rendez-vous that nothing followed: no convocation,
/// no outcome recorded after it.
const MISSED_NOT_FOLLOWED: &str = "(SELECT max(m.occurred_at) FROM person_events m
      WHERE m.person_id = dossiers.person_id AND m.event_type = 'parcours.rendez_vous_missed'
        AND m.superseded_by IS NULL AND m.retracted_by IS NULL
        AND NOT EXISTS (SELECT 1 FROM person_events f WHERE f.person_id = m.person_id
              AND f.event_type IN ('parcours.rendez_vous_convoked', 'parcours.rendez_vous_honoured')
              AND f.superseded_by IS NULL AND f.retracted_by IS NULL AND f.occurred_at > m.occurred_at))";

async fn parcours_indicators(pool: &PgPool, territory: &str) -> Result<ParcoursIndicators, sqlx::Error> {
    let (oriented_two_months_ago, plan_within_two_months, plan_delay_median_days): (i64, i64, Option<f64>) =
        sqlx::query_as(
            "WITH oriented AS (
                 SELECT d.person_id, d.oriented_at,
                        (SELECT min((e.fact->>'signed_on')::date) FROM person_events e
                         WHERE e.person_id = d.person_id AND e.event_type = 'parcours.plan_set'
                           AND e.superseded_by IS NULL AND e.retracted_by IS NULL
                           AND e.fact->>'signed_on' IS NOT NULL) AS signed_on
                 FROM dossiers d
                 WHERE d.territory = $1 AND d.orientation_status = 'DECIDEE' AND d.oriented_at IS NOT NULL)
             SELECT count(*) FILTER (WHERE oriented_at <= now() - interval '2 months'),
                    count(*) FILTER (WHERE oriented_at <= now() - interval '2 months'
                                       AND signed_on <= (oriented_at + interval '2 months')::date),
                    percentile_cont(0.5) WITHIN GROUP (ORDER BY GREATEST(signed_on - oriented_at::date, 0)::float8)
                        FILTER (WHERE signed_on IS NOT NULL)
             FROM oriented",
        )
        .bind(territory)
        .fetch_one(pool)
        .await?;
    let (rendez_vous_honoured, rendez_vous_missed): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE e.event_type = 'parcours.rendez_vous_honoured'),
                count(*) FILTER (WHERE e.event_type = 'parcours.rendez_vous_missed')
         FROM person_events e JOIN dossiers d USING (person_id)
         WHERE d.territory = $1 AND e.family = 'parcours'
           AND e.event_type IN ('parcours.rendez_vous_honoured', 'parcours.rendez_vous_missed')
           AND e.superseded_by IS NULL AND e.retracted_by IS NULL",
    )
    .bind(territory)
    .fetch_one(pool)
    .await?;
    // A sanction in force: decided, started, within its months, and not lifted (a lifting of the
    // same sanction id, in force).
    let (sanctions_in_force,): (i64,) = sqlx::query_as(
        "SELECT count(DISTINCT e.person_id)
         FROM person_events e JOIN dossiers d USING (person_id)
         WHERE d.territory = $1 AND e.event_type = 'parcours.sanction_decided'
           AND e.superseded_by IS NULL AND e.retracted_by IS NULL
           AND (e.fact->>'start')::date <= current_date
           AND current_date < (e.fact->>'start')::date + make_interval(months => (e.fact->>'duration_months')::int)
           AND NOT EXISTS (SELECT 1 FROM person_events l
                WHERE l.person_id = e.person_id AND l.event_type = 'parcours.sanction_lifted'
                  AND l.superseded_by IS NULL AND l.retracted_by IS NULL
                  AND l.fact->>'sanction_id' = e.fact->>'sanction_id'
                  AND (l.fact->>'lifted_on')::date <= current_date)",
    )
    .bind(territory)
    .fetch_one(pool)
    .await?;
    Ok(ParcoursIndicators {
        oriented_two_months_ago,
        plan_within_two_months,
        plan_delay_median_days,
        rendez_vous_honoured,
        rendez_vous_missed,
        sanctions_in_force,
    })
}

pub async fn indicators(pool: &PgPool, territory: &str) -> Result<Indicators, sqlx::Error> {
    let households_by_right_state: Vec<(String, i64)> = sqlx::query_as(
        "SELECT right_state, count(DISTINCT household_key) FROM dossiers
         WHERE territory = $1 AND household_key IS NOT NULL AND right_state IS NOT NULL
         GROUP BY right_state ORDER BY right_state",
    )
    .bind(territory)
    .fetch_all(pool)
    .await?;
    let (persons_sdd, sdd_oriented, sdd_registered_france_travail, sdd_without_referent): (i64, i64, i64, i64) =
        sqlx::query_as(
            "SELECT count(*),
                    count(*) FILTER (WHERE orientation_status = 'DECIDEE'),
                    count(*) FILTER (WHERE ft_status = 'INSCRIT'),
                    count(*) FILTER (WHERE referent_uid IS NULL)
             FROM dossiers WHERE territory = $1 AND sdd",
        )
        .bind(territory)
        .fetch_one(pool)
        .await?;
    let (median, p90): (Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY delay), percentile_cont(0.9) WITHIN GROUP (ORDER BY delay)
         FROM (SELECT GREATEST(EXTRACT(EPOCH FROM (oriented_at - sdd_since)) / 86400.0, 0)::float8 AS delay
               FROM dossiers WHERE territory = $1 AND sdd AND orientation_status = 'DECIDEE'
                 AND oriented_at IS NOT NULL AND sdd_since IS NOT NULL) delays",
    )
    .bind(territory)
    .fetch_one(pool)
    .await?;
    let orientations_by_type: Vec<(String, i64)> = sqlx::query_as(
        "SELECT orientation_type, count(*) FROM dossiers
         WHERE territory = $1 AND orientation_status = 'DECIDEE' AND orientation_type IS NOT NULL
         GROUP BY orientation_type ORDER BY orientation_type",
    )
    .bind(territory)
    .fetch_all(pool)
    .await?;
    Ok(Indicators {
        territory: territory.to_owned(),
        households_by_right_state,
        persons_sdd,
        sdd_oriented,
        sdd_not_oriented: persons_sdd - sdd_oriented,
        orientation_delay_median_days: median,
        orientation_delay_p90_days: p90,
        sdd_registered_france_travail,
        orientations_by_type,
        sdd_without_referent,
        parcours: parcours_indicators(pool, territory).await?,
    })
}

/// The work queues of a territory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    /// SDD for more than 30 days and not oriented.
    SddNotOriented,
    /// Oriented, with no active référent.
    OrientedWithoutReferent,
    /// Radiated by France Travail while the RSA right is open (states 2, 3, 4).
    RadiationWithOpenRight,
    /// Arrived from another authority (a move or a mutation) in the last 90 days.
    RecentArrivals,
    /// Oriented more than two months ago, and no plan d'action (contrat d'engagement) received.
    OrientedWithoutPlan,
    /// Oriented, and no diagnostic received.
    WithoutDiagnostic,
    /// A rendez-vous missed (excused or not) that nothing followed: no new convocation, no
    /// rendez-vous honoured since.
    MissedRendezVous,
}

impl Queue {
    pub const ALL: [Queue; 7] = [
        Queue::SddNotOriented,
        Queue::OrientedWithoutReferent,
        Queue::RadiationWithOpenRight,
        Queue::RecentArrivals,
        Queue::OrientedWithoutPlan,
        Queue::WithoutDiagnostic,
        Queue::MissedRendezVous,
    ];

    /// The queue's name in the API (`/territoires/{code}/files/{name}`).
    pub fn name(self) -> &'static str {
        match self {
            Queue::SddNotOriented => "sdd-non-orientes",
            Queue::OrientedWithoutReferent => "orientes-sans-referent",
            Queue::RadiationWithOpenRight => "radiations-droit-ouvert",
            Queue::RecentArrivals => "arrivees-recentes",
            Queue::OrientedWithoutPlan => "orientes-sans-plan",
            Queue::WithoutDiagnostic => "sans-diagnostic",
            Queue::MissedRendezVous => "rendez-vous-manques",
        }
    }

    pub fn from_name(name: &str) -> Option<Queue> {
        Queue::ALL.into_iter().find(|queue| queue.name() == name)
    }

    fn condition(self) -> String {
        match self {
            Queue::SddNotOriented => {
                "sdd AND COALESCE(orientation_status, '') <> 'DECIDEE' AND sdd_since < $2 - interval '30 days'".into()
            }
            Queue::OrientedWithoutReferent => "orientation_status = 'DECIDEE' AND referent_uid IS NULL".into(),
            Queue::RadiationWithOpenRight => "ft_status = 'RADIATION' AND right_state IN ('2', '3', '4')".into(),
            Queue::RecentArrivals => {
                "previous_territory IS NOT NULL AND previous_territory <> territory AND territory_since >= $2 - interval '90 days'"
                    .into()
            }
            Queue::OrientedWithoutPlan => format!(
                "orientation_status = 'DECIDEE' AND oriented_at < $2 - interval '2 months' AND NOT EXISTS ({})",
                parcours_fact("parcours.plan_set")
            ),
            Queue::WithoutDiagnostic => format!(
                "orientation_status = 'DECIDEE' AND NOT EXISTS ({})",
                parcours_fact("parcours.diagnostic_recorded")
            ),
            Queue::MissedRendezVous => format!("{MISSED_NOT_FOLLOWED} IS NOT NULL"),
        }
    }

    /// Since when a person waits in the queue: a column of the dossier, or what the parcours
    /// facts say.
    fn since_column(self) -> &'static str {
        match self {
            Queue::SddNotOriented => "sdd_since",
            Queue::OrientedWithoutReferent | Queue::OrientedWithoutPlan | Queue::WithoutDiagnostic => "oriented_at",
            Queue::RadiationWithOpenRight => "ft_status_at",
            Queue::RecentArrivals => "territory_since",
            Queue::MissedRendezVous => MISSED_NOT_FOLLOWED,
        }
    }
}

/// One person waiting in a queue, and since when.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct QueueEntry {
    pub person_id: Uuid,
    pub since: Option<DateTime<Utc>>,
}

/// What narrows a queue (the console's filters): the commune of residence (INSEE code, the
/// latest the person's facts gave), the droits-et-devoirs flag, waiting since at most a date;
/// and the order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueFilter {
    pub commune: Option<String>,
    pub sdd: Option<bool>,
    pub since_until: Option<DateTime<Utc>>,
    pub newest_first: bool,
}

/// One person of a filtered queue, with the commune the filter reads.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct FilteredEntry {
    pub person_id: Uuid,
    pub since: Option<DateTime<Utc>>,
    pub commune: Option<String>,
}

/// The latest commune of residence a person's facts gave.
const LATEST_COMMUNE: &str =
    "(SELECT e.commune FROM person_events e WHERE e.person_id = d.person_id AND e.commune IS NOT NULL
      ORDER BY e.occurred_at DESC, e.recorded_at DESC LIMIT 1)";

fn filtered_sql(queue: Queue, select: &str, order_and_page: &str) -> String {
    format!(
        "SELECT {select} FROM (SELECT d.*, {LATEST_COMMUNE} AS commune FROM dossiers d WHERE d.territory = $1) dossiers
         WHERE {condition}
           AND ($3::text IS NULL OR commune = $3)
           AND ($4::boolean IS NULL OR sdd = $4)
           AND ($5::timestamptz IS NULL OR {since} <= $5)
         {order_and_page}",
        condition = queue.condition(),
        since = queue.since_column(),
    )
}

/// A page of a filtered queue, and how many persons the filters keep in all.
pub async fn filtered_queue(
    pool: &PgPool,
    territory: &str,
    queue: Queue,
    now: DateTime<Utc>,
    filter: &QueueFilter,
    limit: i64,
    offset: i64,
) -> Result<(Vec<FilteredEntry>, i64), sqlx::Error> {
    let direction = if filter.newest_first { "DESC" } else { "ASC" };
    let rows_sql = filtered_sql(
        queue,
        &format!("person_id, {} AS since, commune", queue.since_column()),
        &format!("ORDER BY {} {direction} NULLS LAST, person_id LIMIT $6 OFFSET $7", queue.since_column()),
    );
    let rows: Vec<FilteredEntry> = sqlx::query_as(sqlx::AssertSqlSafe(rows_sql))
        .bind(territory)
        .bind(now)
        .bind(&filter.commune)
        .bind(filter.sdd)
        .bind(filter.since_until)
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await?;
    let count_sql = filtered_sql(queue, "count(*)", "");
    let (total,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(count_sql))
        .bind(territory)
        .bind(now)
        .bind(&filter.commune)
        .bind(filter.sdd)
        .bind(filter.since_until)
        .fetch_one(pool)
        .await?;
    Ok((rows, total))
}

/// The orientation delay (days from becoming SDD to the decision) by month of decision: the
/// month (`YYYY-MM`), how many decisions, the median and the 90th percentile.
pub async fn orientation_delay_by_month(
    pool: &PgPool,
    territory: &str,
) -> Result<Vec<(String, i64, f64, f64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT to_char(date_trunc('month', oriented_at), 'YYYY-MM') AS month, count(*),
                percentile_cont(0.5) WITHIN GROUP (ORDER BY delay), percentile_cont(0.9) WITHIN GROUP (ORDER BY delay)
         FROM (SELECT oriented_at, GREATEST(EXTRACT(EPOCH FROM (oriented_at - sdd_since)) / 86400.0, 0)::float8 AS delay
               FROM dossiers WHERE territory = $1 AND sdd AND orientation_status = 'DECIDEE'
                 AND oriented_at IS NOT NULL AND sdd_since IS NOT NULL) delays
         GROUP BY 1 ORDER BY 1",
    )
    .bind(territory)
    .fetch_all(pool)
    .await
}

/// The size of each queue of a territory (the dashboard's counters).
pub async fn queue_sizes(pool: &PgPool, territory: &str, now: DateTime<Utc>) -> Result<Vec<(Queue, i64)>, sqlx::Error> {
    let mut sizes = Vec::new();
    for queue in Queue::ALL {
        let (_, total) = filtered_queue(pool, territory, queue, now, &QueueFilter::default(), 0, 0).await?;
        sizes.push((queue, total));
    }
    Ok(sizes)
}

/// A page of a queue, oldest first (who has waited longest comes first).
pub async fn queue(
    pool: &PgPool,
    territory: &str,
    queue: Queue,
    now: DateTime<Utc>,
    limit: i64,
    offset: i64,
) -> Result<Vec<QueueEntry>, sqlx::Error> {
    let sql = format!(
        "SELECT person_id, {since} AS since FROM dossiers WHERE territory = $1 AND {condition}
         ORDER BY {since} NULLS LAST, person_id LIMIT $3 OFFSET $4",
        since = queue.since_column(),
        condition = queue.condition()
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(territory).bind(now).bind(limit).bind(offset).fetch_all(pool).await
}

/// A CAF/MSA fact waiting for its authority ("à affecter", docs/territories.md): what the caisse
/// and ops need to settle it, nothing personal (the household's key is a keyed hash).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct FactToAssign {
    /// The caisse's institution id and its event id: the correction names them.
    pub source: String,
    pub event_id: String,
    pub event_type: String,
    pub organisme: Option<String>,
    pub household_key: Option<String>,
    /// The residence commune the fact gave (outside the Rhône), if any.
    pub commune: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    /// The persons the fact is about (a household's fact names several).
    pub persons: i64,
}

/// The "à affecter" queue, oldest first: facts received by département 69 that no commune of the
/// Rhône places, neither corrected nor retracted since. Only a caisse's (`organisme`) when given.
pub async fn to_assign(pool: &PgPool, organisme: Option<&str>) -> Result<Vec<FactToAssign>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT source, event_id, event_type, organisme, household_key, commune,
                min(occurred_at) AS occurred_at, min(recorded_at) AS recorded_at, count(*) AS persons
         FROM person_events
         WHERE {WAITING} AND ($2::text IS NULL OR organisme = $2)
         GROUP BY source, event_id, event_type, organisme, household_key, commune
         ORDER BY min(recorded_at), source, event_id"
    )))
    .bind(passerelle_domain::territory::TO_ASSIGN)
    .bind(organisme)
    .fetch_all(pool)
    .await
}

/// A fact in the "à affecter" queue (`$1`: [`passerelle_domain::territory::TO_ASSIGN`]).
const WAITING: &str = "territory = $1 AND family = 'allocataire' AND event_type <> 'retraction'
     AND superseded_by IS NULL AND retracted_by IS NULL";

/// Whether a fact of `household_key` is in the "à affecter" queue.
pub async fn waits(pool: &PgPool, household_key: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT EXISTS (SELECT 1 FROM person_events WHERE {WAITING} AND household_key = $2)"
    )))
    .bind(passerelle_domain::territory::TO_ASSIGN)
    .bind(household_key)
    .fetch_one(pool)
    .await
}

/// Places the waiting facts of `households` by the decisions recorded for them (a decision
/// recorded while the facts were being stored, by another worker).
pub async fn place_waiting(conn: &mut sqlx::PgConnection, households: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE person_events e SET territory = a.authority, assigned_by = a.decision_id
         FROM territory_assignments a
         WHERE a.household_key = ANY($1) AND e.household_key = a.household_key
           AND e.family = 'allocataire' AND e.territory = $2",
    )
    .bind(households)
    .bind(passerelle_domain::territory::TO_ASSIGN)
    .execute(conn)
    .await?;
    Ok(())
}

/// Ops' decision on the authority of a foyer waiting "à affecter".
#[derive(Debug, Clone, Copy)]
pub struct Assignment<'a> {
    pub household_key: &'a str,
    /// `69M` or `69D`.
    pub authority: &'a str,
    pub decided_at: DateTime<Utc>,
    pub decided_by: &'a str,
    pub decision_id: &'a str,
}

/// Records `decision` unless a later one on the foyer is already recorded, and gives the foyer's
/// waiting facts (and those an earlier decision placed) its authority. Facts of the foyer that
/// arrive waiting afterwards take it when stored. Returns the persons whose facts changed.
pub async fn assign(conn: &mut sqlx::PgConnection, decision: Assignment<'_>) -> Result<Vec<Uuid>, sqlx::Error> {
    let recorded: Option<(String,)> = sqlx::query_as(
        "INSERT INTO territory_assignments (household_key, authority, decided_at, decided_by, decision_id)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (household_key) DO UPDATE
            SET authority = EXCLUDED.authority, decided_at = EXCLUDED.decided_at,
                decided_by = EXCLUDED.decided_by, decision_id = EXCLUDED.decision_id
            WHERE territory_assignments.decided_at <= EXCLUDED.decided_at
         RETURNING authority",
    )
    .bind(decision.household_key)
    .bind(decision.authority)
    .bind(decision.decided_at)
    .bind(decision.decided_by)
    .bind(decision.decision_id)
    .fetch_optional(&mut *conn)
    .await?;
    if recorded.is_none() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar(
        "UPDATE person_events SET territory = $2, assigned_by = $3
         WHERE household_key = $1 AND family = 'allocataire'
           AND (territory = $4 OR assigned_by IS NOT NULL) AND territory IS DISTINCT FROM $2
         RETURNING person_id",
    )
    .bind(decision.household_key)
    .bind(decision.authority)
    .bind(decision.decision_id)
    .bind(passerelle_domain::territory::TO_ASSIGN)
    .fetch_all(&mut *conn)
    .await
}

/// The authority ops gave a foyer, if they did.
pub async fn assignment_of(pool: &PgPool, household_key: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT authority FROM territory_assignments WHERE household_key = $1")
        .bind(household_key)
        .fetch_optional(pool)
        .await
}
