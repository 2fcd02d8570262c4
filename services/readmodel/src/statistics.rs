//! Planner statistics of tables that grow fast. PostgreSQL's autovacuum analyzes a table once
//! it changed by a tenth, but looks at most once a minute (`autovacuum_naptime`): a projection
//! catching up, a rebuild filling fresh tables or a first ingest grow tables from nothing to
//! hundreds of thousands of rows within that minute, planned all along with the statistics of
//! an empty table. The planner then scans whole tables for a batch's few hundred keys (a
//! prepared statement's generic plan, chosen on a small table, compares every row with the
//! whole array of keys), and each batch gets slower as the tables grow: the benchmark's
//! catch-up fell from 7,700 to 5,200 events/s over 124,000 events, its statement profile
//! dominated by index lookups that were sequential scans (docs/benchmarks.md).
//!
//! [`analyze_grown`] analyzes the tables that grew by half since they were last analyzed (and
//! by at least [`MIN_CHANGES`] rows): a table growing from nothing is analyzed about once per
//! doubling, a table in steady use is left to autovacuum. ANALYZE needs the table's owner.

use sqlx::PgPool;

/// Changes below which a table is left to autovacuum.
pub const MIN_CHANGES: i64 = 1_000;

/// Analyzes every table of the database that grew by half since its last analyze; returns the
/// tables analyzed (`schema.table`). A table whose lock is not granted within a second (a
/// rebuild swapping schemas) is skipped until the next call.
pub async fn analyze_grown(owner: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    let grown: Vec<(String, String)> = sqlx::query_as(
        "SELECT schemaname::text, relname::text FROM pg_stat_user_tables
         WHERE n_mod_since_analyze >= $1 AND n_mod_since_analyze * 2 >= n_live_tup
         ORDER BY n_mod_since_analyze DESC",
    )
    .bind(MIN_CHANGES)
    .fetch_all(owner)
    .await?;
    let mut analyzed = Vec::with_capacity(grown.len());
    let mut connection = owner.acquire().await?;
    sqlx::query("SET lock_timeout = '1s'").execute(&mut *connection).await?;
    for (schema, table) in grown {
        let statement = format!("ANALYZE {}.{}", quoted(&schema), quoted(&table));
        match sqlx::query(sqlx::AssertSqlSafe(statement)).execute(&mut *connection).await {
            Ok(_) => analyzed.push(format!("{schema}.{table}")),
            // Dropped meanwhile, or locked by a swap: the next call sees it again.
            Err(sqlx::Error::Database(error))
                if matches!(error.code().as_deref(), Some("42P01" | "55P03" | "3F000")) => {}
            Err(error) => {
                sqlx::query("RESET lock_timeout").execute(&mut *connection).await?;
                return Err(error);
            }
        }
    }
    sqlx::query("RESET lock_timeout").execute(&mut *connection).await?;
    Ok(analyzed)
}

/// An identifier quoted for SQL.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
