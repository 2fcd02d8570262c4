//! Telemetry shared by every service: structured logs and the Prometheus registry.
//!
//! Log lines never carry personal data: identifiers are logged as subject keys or event ids.

use std::sync::OnceLock;

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
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn,sqlx=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    let outcome = match format {
        LogFormat::Json => registry.with(fmt::layer().json().flatten_event(true).with_current_span(true)).try_init(),
        LogFormat::Pretty => registry.with(fmt::layer().compact()).try_init(),
    };
    drop(outcome);
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
