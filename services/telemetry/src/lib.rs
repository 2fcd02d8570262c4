//! Telemetry shared by every service: structured logs, OpenTelemetry traces (OTLP, off by
//! default) with the W3C trace context carried across Kafka, and the Prometheus registry.
//!
//! Log lines, span names and span attributes never carry personal data: identifiers appear as
//! subject keys, event ids or hub person ids.

use std::{collections::HashMap, sync::OnceLock};

use opentelemetry::{propagation::TextMapPropagator as _, trace::TracerProvider as _};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use prometheus::Registry;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (production: shipped to a log store).
    Json,
    /// Human-readable lines (a terminal).
    Pretty,
}

/// Installs the global log subscriber. `RUST_LOG` overrides the default filter. Safe to call
/// twice (tests): the second call does nothing.
pub fn init_logging(format: LogFormat) {
    init(format, None);
}

/// Installs logs, and traces exported by `tracer` when given (see [`otlp_provider`]).
pub fn init(format: LogFormat, tracer: Option<SdkTracerProvider>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn,sqlx=warn"));
    let otel = tracer.map(|provider| {
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("passerelle"));
        drop(PROVIDER.set(provider));
        layer
    });
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let outcome = match format {
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true).with_current_span(true).with_span_list(false))
            .try_init(),
        LogFormat::Pretty => registry.with(fmt::layer().compact()).try_init(),
    };
    drop(outcome);
}

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// A tracer provider exporting spans over OTLP/HTTP (protobuf) to `endpoint`, e.g.
/// `http://127.0.0.1:4318/v1/traces`.
pub fn otlp_provider(endpoint: &str) -> Result<SdkTracerProvider, String> {
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| format!("OTLP exporter to {endpoint}: {e}"))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("passerelle").build())
        .build())
}

/// Flushes the spans still buffered (at shutdown).
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        drop(provider.shutdown());
    }
}

/// The W3C `traceparent` of the current span, to carry in a Kafka header; none when traces
/// are off.
pub fn traceparent() -> Option<String> {
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&tracing::Span::current().context(), &mut carrier);
    carrier.remove("traceparent")
}

/// Records the span's OpenTelemetry trace id in its `trace_id` field (declared `Empty`), so JSON
/// log lines inside it carry it; nothing when traces are off.
pub fn record_trace_id(span: &tracing::Span) {
    use opentelemetry::trace::TraceContextExt as _;
    let context = span.context();
    let trace_id = context.span().span_context().trace_id();
    if trace_id != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace_id));
    }
}

/// Makes `span` a child of the remote span a `traceparent` names (from a Kafka header or a gRPC
/// call), so one trace follows an event from the call to its projection.
pub fn follow(span: &tracing::Span, traceparent: &str) {
    let carrier: HashMap<String, String> = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    drop(span.set_parent(parent));
}

/// The process-wide metrics registry, exposed on `/metrics`.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Registry::new_custom(Some("passerelle".into()), None).unwrap_or_default())
}

/// Renders every registered metric in the Prometheus text format.
pub fn render() -> String {
    use prometheus::Encoder;
    let mut buffer = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    if encoder.encode(&registry().gather(), &mut buffer).is_err() {
        return String::new();
    }
    String::from_utf8(buffer).unwrap_or_default()
}
