//! The schema registry: committed schemas stored in PostgreSQL with Confluent ids, and the read
//! part of the Confluent Schema Registry REST API, so that standard clients (Confluent's
//! SchemaRegistryClient and AvroDeserializer, Kafka UIs) decode the topics with no code of ours.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use apache_avro::Schema;
use axum::{
    Json, Router,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use passerelle_domain::event::Family;
use serde_json::json;
use sha2::Digest;
use sqlx::PgPool;

use crate::{
    Error,
    schemas::{self, Topics},
};

/// The schema a family is written with, and its registry id.
#[derive(Clone, Debug)]
pub struct WriterSchema {
    pub id: u32,
    pub schema: Arc<Schema>,
}

#[derive(Clone)]
pub struct Registry {
    pool: PgPool,
    topics: Topics,
    by_id: Arc<RwLock<HashMap<u32, Arc<Schema>>>>,
}

impl Registry {
    pub fn new(pool: PgPool, topics: Topics) -> Self {
        Self { pool, topics, by_id: Arc::default() }
    }

    /// Registers every committed schema version (idempotent; several hubs may do it at once).
    pub async fn register_committed(&self) -> Result<(), Error> {
        for version in schemas::COMMITTED {
            schemas::parse(version)?;
            let fingerprint = hex::encode(sha2::Sha256::digest(version.text.as_bytes()));
            let subject = self.topics.subject_of(version.stream);
            let existing: Option<(String,)> =
                sqlx::query_as("SELECT fingerprint FROM schema_registry WHERE subject = $1 AND version = $2")
                    .bind(&subject)
                    .bind(version.version)
                    .fetch_optional(&self.pool)
                    .await?;
            match existing {
                Some((stored,)) if stored != fingerprint => {
                    return Err(Error::Registry(format!(
                        "{subject} version {} in the database differs from the committed schema: committed versions must never change",
                        version.version
                    )));
                }
                Some(_) => {}
                None => {
                    sqlx::query(
                        "INSERT INTO schema_registry (subject, version, schema, fingerprint) VALUES ($1, $2, $3, $4)
                         ON CONFLICT (subject, version) DO NOTHING",
                    )
                    .bind(&subject)
                    .bind(version.version)
                    .bind(version.text)
                    .bind(&fingerprint)
                    .execute(&self.pool)
                    .await?;
                }
            }
        }
        Ok(())
    }

    /// The schema and id events of this family are written with (its latest committed version).
    pub async fn writer(&self, family: Family) -> Result<WriterSchema, Error> {
        self.writer_of(schemas::Stream::Facts(family)).await
    }

    /// The schema and id a stream's values are written with (its latest committed version).
    pub async fn writer_of(&self, stream: schemas::Stream) -> Result<WriterSchema, Error> {
        let latest = schemas::latest_of(stream);
        let (id,): (i32,) = sqlx::query_as("SELECT id FROM schema_registry WHERE subject = $1 AND version = $2")
            .bind(self.topics.subject_of(stream))
            .bind(latest.version)
            .fetch_one(&self.pool)
            .await?;
        Ok(WriterSchema { id: u32::try_from(id).unwrap_or_default(), schema: Arc::new(schemas::parse(&latest)?) })
    }

    /// The schema registered under `id`, to decode a framed value written with it.
    pub async fn schema_by_id(&self, id: u32) -> Result<Arc<Schema>, Error> {
        if let Some(schema) = self.by_id.read().ok().and_then(|cache| cache.get(&id).cloned()) {
            return Ok(schema);
        }
        let row: Option<(String,)> = sqlx::query_as("SELECT schema FROM schema_registry WHERE id = $1")
            .bind(i32::try_from(id).unwrap_or(-1))
            .fetch_optional(&self.pool)
            .await?;
        let (text,) = row.ok_or_else(|| Error::Registry(format!("no schema with id {id}")))?;
        let schema = Arc::new(Schema::parse_str(&text)?);
        if let Ok(mut cache) = self.by_id.write() {
            cache.insert(id, schema.clone());
        }
        Ok(schema)
    }

    /// The read part of the Confluent Schema Registry REST API.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/subjects", get(list_subjects))
            .route("/subjects/{subject}/versions", get(list_versions))
            .route("/subjects/{subject}/versions/{version}", get(get_version))
            .route("/subjects/{subject}/versions/{version}/schema", get(get_version_schema))
            .route("/schemas/ids/{id}", get(get_by_id))
            .route("/schemas/ids/{id}/schema", get(get_raw_by_id))
            .route("/schemas/ids/{id}/versions", get(get_id_versions))
            .route("/config", get(get_config))
            .route("/config/{subject}", get(get_config))
            .with_state(self.clone())
    }
}

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

fn ok(body: serde_json::Value) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], Json(body)).into_response()
}

fn not_found(code: u32, message: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        Json(json!({"error_code": code, "message": message})),
    )
        .into_response()
}

fn unavailable(error: &Error) -> Response {
    tracing::error!(error = %error, "schema registry query failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        Json(json!({"error_code": 50001, "message": "registry storage unavailable"})),
    )
        .into_response()
}

async fn list_subjects(State(registry): State<Registry>) -> Response {
    match sqlx::query_as::<_, (String,)>("SELECT DISTINCT subject FROM schema_registry ORDER BY subject")
        .fetch_all(&registry.pool)
        .await
    {
        Ok(rows) => ok(json!(rows.into_iter().map(|(s,)| s).collect::<Vec<_>>())),
        Err(error) => unavailable(&error.into()),
    }
}

async fn list_versions(State(registry): State<Registry>, Path(subject): Path<String>) -> Response {
    match sqlx::query_as::<_, (i32,)>("SELECT version FROM schema_registry WHERE subject = $1 ORDER BY version")
        .bind(&subject)
        .fetch_all(&registry.pool)
        .await
    {
        Ok(rows) if rows.is_empty() => not_found(40401, "Subject not found"),
        Ok(rows) => ok(json!(rows.into_iter().map(|(v,)| v).collect::<Vec<_>>())),
        Err(error) => unavailable(&error.into()),
    }
}

async fn find_version(
    registry: &Registry,
    subject: &str,
    version: &str,
) -> Result<Option<(i32, i32, String)>, Response> {
    let query = if version == "latest" || version == "-1" {
        sqlx::query_as::<_, (i32, i32, String)>(
            "SELECT id, version, schema FROM schema_registry WHERE subject = $1 ORDER BY version DESC LIMIT 1",
        )
        .bind(subject)
    } else {
        let Ok(number) = version.parse::<i32>() else {
            return Err((
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"error_code": 42202, "message": "The specified version is not a valid version id"})),
            )
                .into_response());
        };
        sqlx::query_as::<_, (i32, i32, String)>(
            "SELECT id, version, schema FROM schema_registry WHERE subject = $1 AND version = $2",
        )
        .bind(subject)
        .bind(number)
    };
    query.fetch_optional(&registry.pool).await.map_err(|error| unavailable(&error.into()))
}

async fn get_version(State(registry): State<Registry>, Path((subject, version)): Path<(String, String)>) -> Response {
    match find_version(&registry, &subject, &version).await {
        Ok(Some((id, number, schema))) => {
            ok(json!({"subject": subject, "version": number, "id": id, "schema": schema}))
        }
        Ok(None) => not_found(40402, "Version not found"),
        Err(response) => response,
    }
}

async fn get_version_schema(
    State(registry): State<Registry>,
    Path((subject, version)): Path<(String, String)>,
) -> Response {
    match find_version(&registry, &subject, &version).await {
        Ok(Some((_, _, schema))) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], schema).into_response(),
        Ok(None) => not_found(40402, "Version not found"),
        Err(response) => response,
    }
}

async fn schema_text(registry: &Registry, id: i64) -> Result<Option<String>, Response> {
    let Ok(id) = i32::try_from(id) else { return Ok(None) };
    sqlx::query_as::<_, (String,)>("SELECT schema FROM schema_registry WHERE id = $1")
        .bind(id)
        .fetch_optional(&registry.pool)
        .await
        .map(|row| row.map(|(schema,)| schema))
        .map_err(|error| unavailable(&error.into()))
}

async fn get_by_id(State(registry): State<Registry>, Path(id): Path<i64>) -> Response {
    match schema_text(&registry, id).await {
        Ok(Some(schema)) => ok(json!({"schema": schema})),
        Ok(None) => not_found(40403, "Schema not found"),
        Err(response) => response,
    }
}

async fn get_raw_by_id(State(registry): State<Registry>, Path(id): Path<i64>) -> Response {
    match schema_text(&registry, id).await {
        Ok(Some(schema)) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], schema).into_response(),
        Ok(None) => not_found(40403, "Schema not found"),
        Err(response) => response,
    }
}

async fn get_id_versions(State(registry): State<Registry>, Path(id): Path<i64>) -> Response {
    let Ok(id) = i32::try_from(id) else { return not_found(40403, "Schema not found") };
    match sqlx::query_as::<_, (String, i32)>("SELECT subject, version FROM schema_registry WHERE id = $1")
        .bind(id)
        .fetch_all(&registry.pool)
        .await
    {
        Ok(rows) if rows.is_empty() => not_found(40403, "Schema not found"),
        Ok(rows) => ok(json!(rows.into_iter().map(|(s, v)| json!({"subject": s, "version": v})).collect::<Vec<_>>())),
        Err(error) => unavailable(&error.into()),
    }
}

async fn get_config() -> Response {
    ok(json!({"compatibilityLevel": "BACKWARD_TRANSITIVE"}))
}
