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
//! doubling, a table in steady use is left to autovacuum. ANALYZE needs the table's owner: only
//! the tables the role owns (or is a member of the owner of) are considered, temporary ones
//! left out.

use sqlx::PgPool;

/// Changes below which a table is left to autovacuum.
pub const MIN_CHANGES: i64 = 1_000;

/// Analyzes every table of the database this role owns that grew by half since its last
/// analyze; returns the tables analyzed (`schema.table`). A table locked by someone else (a
/// rebuild swapping schemas, an erasure) is skipped, not waited for: the next call sees it
/// again.
pub async fn analyze_grown(owner: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    let grown: Vec<(String, String)> = sqlx::query_as(
        "SELECT s.schemaname::text, s.relname::text FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
         WHERE s.n_mod_since_analyze >= $1 AND s.n_mod_since_analyze * 2 >= s.n_live_tup
           AND c.relpersistence <> 't' AND pg_has_role(c.relowner, 'USAGE')
         ORDER BY s.n_mod_since_analyze DESC",
    )
    .bind(MIN_CHANGES)
    .fetch_all(owner)
    .await?;
    let mut analyzed = Vec::with_capacity(grown.len());
    for (schema, table) in grown {
        let statement = format!("ANALYZE (SKIP_LOCKED) {}.{}", quoted(&schema), quoted(&table));
        match sqlx::query(sqlx::AssertSqlSafe(statement)).execute(owner).await {
            Ok(_) => analyzed.push(format!("{schema}.{table}")),
            // Dropped meanwhile (a rebuild's swap): the next call sees what is there then.
            Err(sqlx::Error::Database(error)) if matches!(error.code().as_deref(), Some("42P01" | "3F000")) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(analyzed)
}

/// An identifier quoted for SQL.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
