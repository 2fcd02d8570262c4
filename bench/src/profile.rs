//! Where PostgreSQL spends its time: the statements of a stage, from `pg_stat_statements`, and
//! the server settings the figures were taken with.
//!
//! `pg_stat_statements` must be preloaded by the server (`shared_preload_libraries`, which
//! needs a restart); when it is not, the record says so and how to enable it, and the run goes
//! on without the profile.

use serde_json::{Value, json};
use sqlx::{PgPool, Row as _};

/// The settings that move the projection's figures, recorded with every run.
const SETTINGS: &[&str] = &[
    "server_version",
    "shared_buffers",
    "work_mem",
    "maintenance_work_mem",
    "synchronous_commit",
    "fsync",
    "wal_level",
    "max_wal_size",
    "checkpoint_timeout",
    "effective_io_concurrency",
    "random_page_cost",
    "jit",
    "shared_preload_libraries",
];

pub async fn settings(pool: &PgPool) -> anyhow::Result<Value> {
    let rows = sqlx::query("SELECT name, setting, unit FROM pg_settings WHERE name = ANY($1) ORDER BY name")
        .bind(SETTINGS)
        .fetch_all(pool)
        .await?;
    let mut settings = serde_json::Map::new();
    for row in rows {
        let (name, setting, unit): (String, String, Option<String>) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        let value = match unit {
            Some(unit) if !unit.is_empty() => format!("{setting} ({unit})"),
            _ => setting,
        };
        settings.insert(name, json!(value));
    }
    Ok(Value::Object(settings))
}

/// A statement profile being taken in one database.
pub struct Profile {
    available: Result<(), String>,
}

const HOW_TO_ENABLE: &str = "pg_stat_statements is not preloaded: ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements', restart PostgreSQL (pg_ctlcluster 15 main restart), run again";

impl Profile {
    /// Clears the statistics of the database `pool` connects to (as its owner) and starts
    /// counting; a server without the extension preloaded gives an unavailable profile.
    pub async fn start(pool: &PgPool) -> anyhow::Result<Self> {
        let preloaded: String =
            sqlx::query_scalar("SELECT current_setting('shared_preload_libraries')").fetch_one(pool).await?;
        if !preloaded.split(',').any(|library| library.trim() == "pg_stat_statements") {
            return Ok(Self { available: Err(HOW_TO_ENABLE.to_owned()) });
        }
        sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements").execute(pool).await?;
        sqlx::query(
            "SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database WHERE datname = current_database()), 0)",
        )
        .execute(pool)
        .await?;
        Ok(Self { available: Ok(()) })
    }

    /// The statements of the database since `start`, the costliest first (`top` of them), each
    /// with its share of the total execution time; prints the table to stderr.
    pub async fn finish(self, pool: &PgPool, stage: &str, top: i64) -> anyhow::Result<Value> {
        if let Err(reason) = self.available {
            eprintln!("  statement profile: {reason}");
            return Ok(json!({ "available": false, "why": reason }));
        }
        let this_database = "dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND query NOT LIKE '%pg_stat_statements%'";
        let (total_ms, calls): (f64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT coalesce(sum(total_exec_time), 0)::float8, coalesce(sum(calls), 0)::int8 \
             FROM pg_stat_statements WHERE {this_database}"
        )))
        .fetch_one(pool)
        .await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT regexp_replace(query, '\\s+', ' ', 'g'), calls, rows, total_exec_time::float8, \
                    mean_exec_time::float8, shared_blks_hit + shared_blks_read, shared_blks_dirtied, wal_bytes::int8 \
             FROM pg_stat_statements WHERE {this_database} ORDER BY total_exec_time DESC LIMIT $1"
        )))
        .bind(top)
        .fetch_all(pool)
        .await?;
        eprintln!("  statement profile ({stage}): {calls} calls, {:.1} s of execution", total_ms / 1000.0);
        let mut statements = Vec::new();
        for row in rows {
            let query: String = row.try_get(0)?;
            let (calls, rows_out, total, mean): (i64, i64, f64, f64) =
                (row.try_get(1)?, row.try_get(2)?, row.try_get(3)?, row.try_get(4)?);
            let (blocks, dirtied, wal): (i64, i64, i64) = (row.try_get(5)?, row.try_get(6)?, row.try_get(7)?);
            let share = if total_ms > 0.0 { total / total_ms } else { 0.0 };
            let short: String = query.chars().take(110).collect();
            eprintln!("    {:>5.1} % {:>8.0} ms {calls:>7} calls {mean:>7.2} ms/call  {short}", share * 100.0, total);
            statements.push(json!({
                "query": query.chars().take(400).collect::<String>(), "calls": calls, "rows": rows_out,
                "total_ms": total, "mean_ms": mean, "share": share,
                "blocks_touched": blocks, "blocks_dirtied": dirtied, "wal_bytes": wal
            }));
        }
        Ok(json!({
            "available": true,
            "what": "pg_stat_statements of the bench database over the stage: execution time (planning and commit flush waits outside it), the costliest first",
            "calls": calls, "total_exec_seconds": total_ms / 1000.0, "statements": statements
        }))
    }
}
