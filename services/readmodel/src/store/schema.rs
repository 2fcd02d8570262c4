//! The read models' schemas during a rebuild: the fresh schema created from the migration
//! files ([`crate::rebuild_ddl`]), the live offsets locked for the swap, the swap itself.

use sqlx::PgConnection;

/// The schema a rebuild fills before it is swapped in.
pub const REBUILD_SCHEMA: &str = "readmodel_rebuild";

/// The name the replaced schema takes during the swap (dropped right after).
pub const RETIRED_SCHEMA: &str = "readmodel_retired";

/// Creates the empty rebuild schema with the read-model tables (dropping one a failed rebuild
/// left), and grants the application's role what it has on the live ones.
pub async fn create_rebuild(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    drop_schema(conn, REBUILD_SCHEMA).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {REBUILD_SCHEMA}"))).execute(&mut *conn).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("SET LOCAL search_path TO {REBUILD_SCHEMA}"))).execute(&mut *conn).await?;
    for ddl in crate::rebuild_ddl() {
        sqlx::raw_sql(sqlx::AssertSqlSafe(ddl)).execute(&mut *conn).await?;
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DO $$ BEGIN
           IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'passerelle_app') THEN
             GRANT USAGE ON SCHEMA {REBUILD_SCHEMA} TO passerelle_app;
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {REBUILD_SCHEMA} TO passerelle_app;
             GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {REBUILD_SCHEMA} TO passerelle_app;
             ALTER DEFAULT PRIVILEGES IN SCHEMA {REBUILD_SCHEMA} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO passerelle_app;
             ALTER DEFAULT PRIVILEGES IN SCHEMA {REBUILD_SCHEMA} GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO passerelle_app;
           END IF;
         END $$"
    )))
    .execute(conn)
    .await?;
    Ok(())
}

/// Locks the live projection's offsets (no live batch commits until the transaction ends) and
/// reads them: (topic, partition, next offset) of `projection`.
pub async fn lock_live_offsets(
    conn: &mut PgConnection,
    live_schema: &str,
    projection: &str,
) -> Result<Vec<(String, i32, i64)>, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!("LOCK TABLE {live_schema}.projector_offsets IN EXCLUSIVE MODE")))
        .execute(&mut *conn)
        .await?;
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT topic, partition, next_offset FROM {live_schema}.projector_offsets WHERE projection = $1"
    )))
    .bind(projection)
    .fetch_all(conn)
    .await
}

/// The rebuild schema takes the live one's name; the live one is renamed [`RETIRED_SCHEMA`]
/// (drop it once the transaction committed).
pub async fn swap(conn: &mut PgConnection, live_schema: &str) -> Result<(), sqlx::Error> {
    drop_schema(conn, RETIRED_SCHEMA).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("ALTER SCHEMA {live_schema} RENAME TO {RETIRED_SCHEMA}")))
        .execute(&mut *conn)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("ALTER SCHEMA {REBUILD_SCHEMA} RENAME TO {live_schema}")))
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn drop_schema(conn: &mut PgConnection, schema: &str) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))).execute(conn).await?;
    Ok(())
}

/// How many dossiers `schema` holds.
pub async fn dossiers_in(conn: &mut PgConnection, schema: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {schema}.dossiers"))).fetch_one(conn).await
}
