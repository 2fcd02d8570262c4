//! The tonic services, one per source family. Errors map to a deliberately small set of codes:
//! INVALID_ARGUMENT (with google.rpc.BadRequest), UNAUTHENTICATED, PERMISSION_DENIED,
//! UNAVAILABLE (retry with the same event_id), INTERNAL.

use std::{pin::Pin, sync::Arc, time::Instant};

use futures::{Stream, StreamExt, future::Either};
use passerelle_domain::event::{CanonicalEvent, Family, Source};
use passerelle_eventlog::kafka::PublishError;
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};
use tracing::Instrument as _;

use crate::{
    auth,
    hub::IngestHub,
    institutions::Institution,
    metrics::metrics,
    normalise::{self, Context},
    proto::{self, BatchReply, PublishReply, batch_reply},
    scope::{self, Denied},
    violations::Violation,
};

/// How many events of one batch stream are sealed or awaiting acknowledgement at once.
/// Events prepared together (at most), and chunks prepared at once, per batch stream.
const PREPARE_CHUNK: usize = crate::limits::CHUNK as usize;
const BATCH_PREPARE_CONCURRENCY: usize = 4;
const BATCH_IN_FLIGHT: usize = 2048;

type Normaliser<T> = fn(&Context<'_>, &T) -> Result<CanonicalEvent, crate::violations::Violations>;

/// Why one event was not published.
#[derive(Clone)]
enum Refusal {
    Invalid(Vec<Violation>),
    Denied(Denied),
    Unavailable(String),
    Internal(String),
}

fn reason_code(rule: &str) -> String {
    rule.replace(['.', '-'], "_").to_ascii_uppercase()
}

fn invalid_status(violations: &[Violation]) -> Status {
    let summary = violations.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; ");
    let details = ErrorDetails::with_bad_request(
        violations
            .iter()
            .map(|v| {
                let mut field = FieldViolation::new(&v.field, &v.description);
                field.reason = reason_code(&v.rule);
                field
            })
            .collect::<Vec<_>>(),
    );
    Status::with_error_details(Code::InvalidArgument, format!("the event is invalid: {summary}"), details)
}

fn unavailable_status(reason: &str) -> Status {
    Status::unavailable(format!(
        "the event was not acknowledged by the broker ({reason}); nothing is lost: retry with the same event_id"
    ))
}

/// The authenticated caller of one call.
#[derive(Clone)]
struct Caller {
    institution: Institution,
    relay_file: Option<String>,
}

/// Authenticates the caller and checks it may call this family's service at all.
fn authenticate<T>(hub: &IngestHub, request: &Request<T>, family: Family) -> Result<Caller, Status> {
    let institution = auth::institution(&hub.institutions, request).inspect_err(|_| {
        metrics().refused.with_label_values(&[family.label(), "unauthenticated"]).inc();
    })?;
    let relay_file = auth::relay_file(request)?;
    if let Err(denial) = scope::may_call(institution, family, relay_file.as_deref()) {
        metrics().refused.with_label_values(&[family.label(), "denied"]).inc();
        tracing::warn!(institution = %institution.id, family = family.label(), rule = denial.rule, "publish denied");
        return Err(denied_status(&denial));
    }
    Ok(Caller { institution: institution.clone(), relay_file })
}

/// The span of one ingestion call, a child of the caller's trace when it sent a `traceparent`.
/// Nothing personal: the family and the calling institution.
fn call_span<T>(family: Family, request: &Request<T>) -> tracing::Span {
    let span = tracing::info_span!(
        "ingest.call",
        family = family.label(),
        institution = tracing::field::Empty,
        trace_id = tracing::field::Empty
    );
    if let Some(traceparent) = request.metadata().get("traceparent").and_then(|v| v.to_str().ok()) {
        passerelle_telemetry::follow(&span, traceparent);
    }
    passerelle_telemetry::record_trace_id(&span);
    span
}

fn source_of(institution: &Institution) -> Source {
    Source { institution: institution.id.clone(), kind: institution.kind, relayed_by: None, relay_file: None }
}

fn denied_status(denial: &Denied) -> Status {
    Status::permission_denied(format!("rule {}: {}", denial.rule, denial.message))
}

async fn prepare_one<T>(
    hub: &IngestHub,
    caller: &Caller,
    family: Family,
    normaliser: Normaliser<T>,
    event: &T,
) -> Result<crate::hub::Prepared, Refusal> {
    let canonical = canonical_of(hub, caller, family, normaliser, event)?;
    let verdict = hub.check_reach(&caller.institution, [&canonical]).await.map_err(state_unreadable)?;
    if let Some(Err(denial)) = verdict.into_iter().next() {
        return Err(denied(caller, family, &canonical, denial));
    }
    hub.prepare(canonical).await.map_err(not_prepared)
}

/// Why events could not be sealed and encoded: the key store's database unreachable or
/// restarting is UNAVAILABLE (retry with the same event id); anything else is internal.
fn not_prepared(error: crate::Error) -> Refusal {
    if let crate::Error::EventLog(passerelle_eventlog::Error::Database(database)) = &error
        && passerelle_readmodel::database_unavailable(database)
    {
        tracing::warn!(error = %error, "events not prepared: the database is unavailable");
        return Refusal::Unavailable("the hub's database is unavailable".into());
    }
    tracing::error!(error = %error, "event could not be sealed or encoded");
    Refusal::Internal("the event could not be prepared; retry later".into())
}

/// Validates, normalises and authorises one event (no I/O).
fn canonical_of<T>(
    hub: &IngestHub,
    caller: &Caller,
    family: Family,
    normaliser: Normaliser<T>,
    event: &T,
) -> Result<CanonicalEvent, Refusal> {
    let context = Context { keys: &hub.keys, source: source_of(&caller.institution), now: chrono::Utc::now() };
    let mut canonical = normaliser(&context, event).map_err(|v| Refusal::Invalid(v.into_vec()))?;
    if let Err(denial) =
        scope::authorise(&caller.institution, caller.relay_file.as_deref(), &hub.institutions, &mut canonical)
    {
        return Err(denied(caller, family, &canonical, denial));
    }
    Ok(canonical)
}

const STATE_UNREADABLE: &str = "the hub's state could not be read to decide the caller's reach";

fn state_unreadable(error: crate::Error) -> Refusal {
    tracing::error!(error = %error, "{STATE_UNREADABLE}");
    Refusal::Unavailable(STATE_UNREADABLE.into())
}

/// A refusal by the scope rules or by the hub's state, logged without personal data.
fn denied(caller: &Caller, family: Family, canonical: &CanonicalEvent, denial: Denied) -> Refusal {
    tracing::warn!(
        institution = %caller.institution.id,
        family = family.label(),
        rule = denial.rule,
        event_id = %canonical.envelope.event_id,
        "publish denied"
    );
    Refusal::Denied(denial)
}

fn publish_error(error: PublishError) -> Refusal {
    match error {
        PublishError::Unavailable(reason) => Refusal::Unavailable(reason),
        PublishError::Refused(reason) => Refusal::Internal(reason),
    }
}

fn count_refusal(family: Family, refusal: &Refusal) {
    let reason = match refusal {
        Refusal::Invalid(_) => "invalid",
        Refusal::Denied(_) => "denied",
        Refusal::Unavailable(_) => "unavailable",
        Refusal::Internal(_) => "internal",
    };
    metrics().refused.with_label_values(&[family.label(), reason]).inc();
}

async fn publish_unary<T>(
    hub: Arc<IngestHub>,
    family: Family,
    request: Request<T>,
    normaliser: Normaliser<T>,
) -> Result<Response<PublishReply>, Status> {
    let started = Instant::now();
    let span = call_span(family, &request);
    let caller = authenticate(&hub, &request, family)?;
    span.record("institution", caller.institution.id.as_str());
    hub.limits.event(&caller.institution.id).inspect_err(|_| {
        metrics().refused.with_label_values(&[family.label(), "limited"]).inc();
    })?;
    let event = request.into_inner();
    let outcome = async {
        let prepared = prepare_one(&hub, &caller, family, normaliser, &event).await?;
        let delivered = hub.publish(&prepared).await.map_err(publish_error)?;
        Ok::<_, Refusal>((prepared, delivered))
    }
    .instrument(span.clone())
    .await;
    // The outcome is logged inside the call's span: the JSON line carries its trace id.
    let _in_call = span.enter();
    match outcome {
        Ok((prepared, delivered)) => {
            metrics().accepted.with_label_values(&[family.label()]).inc();
            metrics().publish_seconds.with_label_values(&[family.label()]).observe(started.elapsed().as_secs_f64());
            tracing::debug!(event_id = %prepared.event_id, log_key = %prepared.log_key, "event published");
            Ok(Response::new(PublishReply {
                event_id: prepared.event_id,
                subject_key: prepared.log_key,
                topic: prepared.topic,
                partition: delivered.partition,
                offset: delivered.offset,
                territory: prepared.territory,
            }))
        }
        Err(refusal) => {
            count_refusal(family, &refusal);
            Err(match refusal {
                Refusal::Invalid(violations) => invalid_status(&violations),
                Refusal::Denied(denial) => denied_status(&denial),
                Refusal::Unavailable(reason) => unavailable_status(&reason),
                Refusal::Internal(reason) => Status::internal(reason),
            })
        }
    }
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<BatchReply, Status>> + Send>>;

fn refusal_reply(index: u64, event_id: String, refusal: Refusal) -> BatchReply {
    let (status, violations, message) = match refusal {
        Refusal::Invalid(violations) => (batch_reply::Status::Invalid, violations, "the event is invalid".to_owned()),
        Refusal::Denied(denial) => {
            (batch_reply::Status::Denied, Vec::new(), format!("rule {}: {}", denial.rule, denial.message))
        }
        Refusal::Unavailable(reason) => (
            batch_reply::Status::Unavailable,
            Vec::new(),
            format!("not acknowledged ({reason}): retry with the same event_id"),
        ),
        Refusal::Internal(reason) => (batch_reply::Status::Unavailable, Vec::new(), reason),
    };
    BatchReply {
        index,
        event_id,
        status: status as i32,
        published: None,
        violations: violations
            .into_iter()
            .map(|v| proto::FieldViolation { field: v.field, rule: v.rule, description: v.description })
            .collect(),
        message,
    }
}

/// A batch stream: events are validated and sealed a few at a time, handed to the producer in
/// the order they came (so one subject's events stay in order), and acknowledged concurrently.
/// Each event gets one reply, in order; a refused event does not stop the others.
fn publish_stream<T: Send + Sync + 'static>(
    hub: Arc<IngestHub>,
    family: Family,
    batch_span: tracing::Span,
    caller: Caller,
    input: Streaming<T>,
    normaliser: Normaliser<T>,
    event_id_of: fn(&T) -> String,
) -> ReplyStream {
    let prepare_hub = hub.clone();
    let capped_hub = hub.clone();
    let allowance = hub.limits.config.events_per_stream;
    // Events are taken as they arrive, up to PREPARE_CHUNK at a time, paced to the institution's
    // rate, and prepared together (one read of the data keys, one write of the search index per
    // chunk). The event past the stream's allowance ends the stream with RESOURCE_EXHAUSTED.
    let prepared = input
        .enumerate()
        .scan(false, move |ended, (index, message)| {
            if *ended {
                return futures::future::ready(None);
            }
            if index as u64 >= allowance {
                *ended = true;
                return futures::future::ready(Some((index, Err(capped_hub.limits.stream_full()))));
            }
            futures::future::ready(Some((index, message)))
        })
        .ready_chunks(PREPARE_CHUNK)
        .map(move |chunk| {
            let hub = prepare_hub.clone();
            let caller = caller.clone();
            let span = tracing::info_span!(
                parent: &batch_span,
                "ingest.publish",
                family = family.label(),
                institution = caller.institution.id.as_str(),
                events = chunk.len()
            );
            async move {
                hub.limits.pace(&caller.institution.id, chunk.len()).await;
                let mut items = Vec::with_capacity(chunk.len());
                let mut valid = Vec::new();
                for (index, message) in chunk {
                    match message {
                        Err(status) => items.push(Err(status)),
                        Ok(event) => {
                            let event_id = event_id_of(&event);
                            match canonical_of(&hub, &caller, family, normaliser, &event) {
                                Ok(canonical) => {
                                    valid.push((items.len(), canonical));
                                    items.push(Ok((
                                        index as u64,
                                        event_id,
                                        Err(Refusal::Internal(String::new())),
                                        Instant::now(),
                                    )));
                                }
                                Err(refusal) => items.push(Ok((index as u64, event_id, Err(refusal), Instant::now()))),
                            }
                        }
                    }
                }
                let verdicts = hub.check_reach(&caller.institution, valid.iter().map(|(_, e)| e)).await;
                let valid: Vec<(usize, CanonicalEvent)> = match verdicts {
                    Ok(verdicts) => valid
                        .into_iter()
                        .zip(verdicts)
                        .filter_map(|((position, canonical), verdict)| match verdict {
                            Ok(()) => Some((position, canonical)),
                            Err(denial) => {
                                if let Some(Ok((_, _, slot, _))) = items.get_mut(position) {
                                    *slot = Err(denied(&caller, family, &canonical, denial));
                                }
                                None
                            }
                        })
                        .collect(),
                    Err(error) => {
                        drop(state_unreadable(error));
                        for (position, _) in &valid {
                            if let Some(Ok((_, _, slot, _))) = items.get_mut(*position) {
                                *slot = Err(Refusal::Unavailable(STATE_UNREADABLE.into()));
                            }
                        }
                        Vec::new()
                    }
                };
                let (positions, canonical): (Vec<usize>, Vec<CanonicalEvent>) = valid.into_iter().unzip();
                let outcomes: Vec<Result<crate::hub::Prepared, Refusal>> = match hub.prepare_many(canonical).await {
                    Ok(prepared) => prepared.into_iter().map(Ok).collect(),
                    Err(error) => {
                        let refusal = not_prepared(error);
                        positions.iter().map(|_| Err(refusal.clone())).collect()
                    }
                };
                for (position, outcome) in positions.into_iter().zip(outcomes) {
                    if let Some(Ok((_, _, slot, _))) = items.get_mut(position) {
                        *slot = outcome;
                    }
                }
                futures::stream::iter(items)
            }
            .instrument(span)
        })
        .buffered(BATCH_PREPARE_CONCURRENCY)
        .flatten();
    let replies = prepared
        .map(move |item| {
            let hub = hub.clone();
            match item {
                Err(status) => Either::Left(futures::future::ready(Err(status))),
                Ok((index, event_id, Err(refusal), _)) => {
                    count_refusal(family, &refusal);
                    Either::Left(futures::future::ready(Ok(refusal_reply(index, event_id, refusal))))
                }
                Ok((index, event_id, Ok(prepared), started)) => match hub.enqueue(&prepared) {
                    Err(error) => {
                        let refusal = publish_error(error);
                        count_refusal(family, &refusal);
                        Either::Left(futures::future::ready(Ok(refusal_reply(index, event_id, refusal))))
                    }
                    Ok(pending) => Either::Right(async move {
                        match pending.wait().await {
                            Ok(delivered) => {
                                metrics().accepted.with_label_values(&[family.label()]).inc();
                                metrics()
                                    .publish_seconds
                                    .with_label_values(&[family.label()])
                                    .observe(started.elapsed().as_secs_f64());
                                Ok(BatchReply {
                                    index,
                                    event_id: prepared.event_id,
                                    status: batch_reply::Status::Accepted as i32,
                                    published: Some(PublishReply {
                                        event_id: String::new(),
                                        subject_key: prepared.log_key,
                                        topic: prepared.topic,
                                        partition: delivered.partition,
                                        offset: delivered.offset,
                                        territory: prepared.territory,
                                    }),
                                    violations: Vec::new(),
                                    message: String::new(),
                                })
                            }
                            Err(error) => {
                                let refusal = publish_error(error);
                                count_refusal(family, &refusal);
                                Ok(refusal_reply(index, event_id, refusal))
                            }
                        }
                    }),
                },
            }
        })
        .buffered(BATCH_IN_FLIGHT);
    Box::pin(replies)
}

macro_rules! ingest_service {
    ($service:ident, $trait_path:path, $event:ty, $family:expr, $normaliser:path) => {
        /// gRPC service of one source family.
        #[derive(Clone)]
        pub struct $service {
            hub: Arc<IngestHub>,
        }

        impl $service {
            pub fn new(hub: Arc<IngestHub>) -> Self {
                Self { hub }
            }
        }

        #[tonic::async_trait]
        impl $trait_path for $service {
            async fn publish(&self, request: Request<$event>) -> Result<Response<PublishReply>, Status> {
                publish_unary(self.hub.clone(), $family, request, $normaliser).await
            }

            type PublishBatchStream = ReplyStream;

            async fn publish_batch(
                &self,
                request: Request<Streaming<$event>>,
            ) -> Result<Response<Self::PublishBatchStream>, Status> {
                let span = call_span($family, &request);
                let caller = authenticate(&self.hub, &request, $family)?;
                span.record("institution", caller.institution.id.as_str());
                let place = self.hub.limits.open_stream(&caller.institution.id).inspect_err(|_| {
                    metrics().refused.with_label_values(&[$family.label(), "limited"]).inc();
                })?;
                let stream = publish_stream(
                    self.hub.clone(),
                    $family,
                    span,
                    caller,
                    request.into_inner(),
                    $normaliser,
                    |event: &$event| event.event_id.clone(),
                );
                // The place is given back when the stream ends (or the caller goes away).
                let stream: ReplyStream = Box::pin(stream.map(move |reply| {
                    let _held = &place;
                    reply
                }));
                Ok(Response::new(stream))
            }
        }
    };
}

ingest_service!(
    AllocataireService,
    proto::allocataire_ingest_server::AllocataireIngest,
    proto::AllocataireEvent,
    Family::Allocataire,
    normalise::allocataire
);
ingest_service!(
    DemandeurEmploiService,
    proto::demandeur_emploi_ingest_server::DemandeurEmploiIngest,
    proto::DemandeurEmploiEvent,
    Family::DemandeurEmploi,
    normalise::demandeur_emploi
);
ingest_service!(
    OrientationService,
    proto::orientation_ingest_server::OrientationIngest,
    proto::OrientationEvent,
    Family::Orientation,
    normalise::orientation
);
ingest_service!(
    ParcoursService,
    proto::parcours_ingest_server::ParcoursIngest,
    proto::ParcoursEvent,
    Family::Parcours,
    normalise::parcours
);
