//! The REST/JSON face of the API under `/api/v1`, described by `openapi.json` (served at
//! `/api/v1/openapi.json`). A NIR never travels in a URL: search is a POST with a JSON body.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json, Router,
    extract::{Path, Query, State, rejection::JsonRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::{Value, json};
use tracing::Instrument as _;
use uuid::Uuid;

use crate::service::{Api, Caller, Failure, JournalQuery, PageQuery, QueueQuery, SearchRequest};

/// The OpenAPI 3 description of this API.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// The purpose header of GET requests.
pub const PURPOSE_HEADER: &str = "x-motif-acces";

pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/api/v1/openapi.json", get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }))
        .route("/api/v1/personnes/recherche", post(search))
        .route("/api/v1/dossiers/{person_id}", get(dossier))
        .route("/api/v1/dossiers/{person_id}/historique", get(timeline))
        .route("/api/v1/territoires/{code}/indicateurs", get(indicators))
        .route("/api/v1/territoires/{code}/files/{file}", get(queue))
        .route("/api/v1/journal", get(journal))
        .route_layer(axum::middleware::from_fn(observe))
        .with_state(api)
}

/// The caller's network address, when the server records it (`ConnectInfo`): the per-address
/// limit of calls without a valid token keys on it.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddress(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PeerAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(PeerAddress(
            parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|info| info.0.ip()),
        ))
    }
}

/// Counts and times each request by route template (never the concrete path: it holds ids).
async fn observe(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let metrics = crate::metrics::metrics();
    metrics.request_seconds.with_label_values(&[route.as_str()]).observe(started.elapsed().as_secs_f64());
    metrics.requests.with_label_values(&[route.as_str(), response.status().as_str()]).inc();
    response
}

/// The page a query asks for (`limite`, `curseur`).
fn page_of(query: &HashMap<String, String>) -> PageQuery {
    PageQuery { limite: query.get("limite").cloned(), curseur: query.get("curseur").cloned() }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// Authenticates, runs `operation`, and shapes the answer (with the request id).
async fn answer(
    api: &Api,
    headers: &HeaderMap,
    peer: PeerAddress,
    action: &'static str,
    operation: impl AsyncFnOnce(&Caller, Uuid) -> Result<Value, Failure>,
) -> Response {
    let request_id = Uuid::now_v7();
    // Nothing personal in the span: the action and the request id (the journal holds the rest).
    let span = tracing::info_span!("api.request", action, request_id = %request_id, trace_id = tracing::field::Empty);
    if let Some(traceparent) = header_str(headers, "traceparent") {
        passerelle_telemetry::follow(&span, traceparent);
    }
    passerelle_telemetry::record_trace_id(&span);
    let result = async {
        match api
            .authenticate(
                request_id,
                action,
                crate::journal::Channel::Rest,
                header_str(headers, header::AUTHORIZATION.as_str()),
                peer.0,
            )
            .await
        {
            Ok(caller) => operation(&caller, request_id).await,
            Err(failure) => Err(failure),
        }
    }
    .instrument(span)
    .await;
    let mut response = match result {
        Ok(body) => (StatusCode::OK, Json(body)).into_response(),
        Err(failure) => failure_response(failure),
    };
    if let Ok(value) = HeaderValue::from_str(&request_id.to_string()) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

fn failure_response(failure: Failure) -> Response {
    let (status, code, parameter) = match &failure {
        Failure::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "non_authentifie", None),
        Failure::NotHabilitated(_) => (StatusCode::FORBIDDEN, "non_habilite", None),
        Failure::BadRequest { parameter, .. } => (StatusCode::BAD_REQUEST, "requete_invalide", Some(*parameter)),
        Failure::NotFound => (StatusCode::NOT_FOUND, "introuvable", None),
        Failure::Forbidden(_) => (StatusCode::FORBIDDEN, "refuse", None),
        Failure::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "trop_de_requetes", None),
        Failure::Unavailable(detail) => {
            tracing::warn!(error = %detail, "API request not served: the database is unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, "indisponible", None)
        }
        Failure::Internal(detail) => {
            tracing::error!(error = %detail, "API request failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "erreur_interne", None)
        }
    };
    let message = match &failure {
        Failure::Internal(_) => "internal error; the request id identifies it in the hub's logs".to_owned(),
        other => other.to_string(),
    };
    let mut body = json!({"erreur": code, "message": message});
    if let Some(parameter) = parameter {
        body["parametre"] = json!(parameter);
    }
    let mut response = (status, Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if let Failure::RateLimited(exceeded) = &failure
        && let Ok(value) = HeaderValue::from_str(&exceeded.retry_after_seconds().to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    if matches!(failure, Failure::Unavailable(_)) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(crate::service::RETRY_UNAVAILABLE_SECONDS));
    }
    response
}

async fn search(
    State(api): State<Arc<Api>>,
    peer: PeerAddress,
    headers: HeaderMap,
    body: Result<Json<SearchRequest>, JsonRejection>,
) -> Response {
    // A body over `api.limits.body_bytes` is refused before anything else (nothing is read).
    if let Err(rejection) = &body
        && rejection.status() == StatusCode::PAYLOAD_TOO_LARGE
    {
        let message = "the request body is larger than this API accepts (api.limits.body_bytes)";
        return (StatusCode::PAYLOAD_TOO_LARGE, Json(json!({"erreur": "requete_trop_grande", "message": message})))
            .into_response();
    }
    answer(&api, &headers, peer, "recherche", async |caller, request_id| {
        let Json(request) =
            body.map_err(|rejection| Failure::BadRequest { parameter: "body", reason: rejection.body_text() })?;
        api.search(caller, request_id, &request).await
    })
    .await
}

async fn dossier(
    State(api): State<Arc<Api>>,
    peer: PeerAddress,
    headers: HeaderMap,
    Path(person_id): Path<String>,
) -> Response {
    let purpose = header_str(&headers, PURPOSE_HEADER).map(str::to_owned);
    answer(&api, &headers, peer, "dossier", async |caller, request_id| {
        api.dossier(caller, request_id, &person_id, purpose.as_deref()).await
    })
    .await
}

async fn timeline(
    State(api): State<Arc<Api>>,
    peer: PeerAddress,
    headers: HeaderMap,
    Path(person_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let purpose = header_str(&headers, PURPOSE_HEADER).map(str::to_owned);
    let page = page_of(&query);
    answer(&api, &headers, peer, "historique", async |caller, request_id| {
        api.timeline(caller, request_id, &person_id, purpose.as_deref(), &page).await
    })
    .await
}

async fn indicators(
    State(api): State<Arc<Api>>,
    peer: PeerAddress,
    headers: HeaderMap,
    Path(code): Path<String>,
) -> Response {
    let purpose = header_str(&headers, PURPOSE_HEADER).map(str::to_owned);
    answer(&api, &headers, peer, "territoire", async |caller, request_id| {
        api.indicators(caller, request_id, &code, purpose.as_deref()).await
    })
    .await
}

async fn queue(
    State(api): State<Arc<Api>>,
    peer: PeerAddress,
    headers: HeaderMap,
    Path((code, file)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let purpose = header_str(&headers, PURPOSE_HEADER).map(str::to_owned);
    answer(&api, &headers, peer, "territoire", async |caller, request_id| {
        let page = QueueQuery {
            code: &code,
            file: &file,
            page: query.get("page").map(String::as_str),
            size: query.get("taille").map(String::as_str),
            purpose: purpose.as_deref(),
        };
        api.queue(caller, request_id, &page).await
    })
    .await
}

async fn journal(
    State(api): State<Arc<Api>>,
    peer: PeerAddress,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let query = JournalQuery {
        person_id: query.get("person_id").cloned(),
        agent: query.get("agent").cloned(),
        depuis: query.get("depuis").cloned(),
        jusqu_a: query.get("jusqu_a").cloned(),
        motif: query.get("motif").cloned(),
        resultat: query.get("resultat").cloned(),
        page: page_of(&query),
    };
    answer(&api, &headers, peer, "journal", async |caller, request_id| {
        api.journal_read(caller, request_id, &query).await
    })
    .await
}
