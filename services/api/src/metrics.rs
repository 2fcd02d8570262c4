//! Metrics of the API feuille de route, declared once (documented in docs/metrics.md). Labels
//! are closed lists (route templates, statuses, reasons, sections): never a person, never an agent.

use std::sync::OnceLock;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};

pub struct ApiMetrics {
    /// `passerelle_api_requests_total{route, status}`
    pub requests: IntCounterVec,
    /// `passerelle_api_request_seconds{route}`
    pub request_seconds: HistogramVec,
    /// `passerelle_api_policy_refusals_total{reason}`: not_found, refused:<motif>,
    /// unauthenticated, not_habilitated, invalid.
    pub refusals: IntCounterVec,
    /// `passerelle_api_sections_withheld_total{section, motif}`
    pub sections_withheld: IntCounterVec,
    /// `passerelle_api_journal_writes_total{action}`
    pub journal_writes: IntCounterVec,
    /// `passerelle_api_rate_limited_total{limit}`: per_agent, unauthenticated_per_address.
    pub rate_limited: IntCounterVec,
}

pub fn metrics() -> &'static ApiMetrics {
    static METRICS: OnceLock<ApiMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let metrics = ApiMetrics {
            requests: counter("api_requests_total", "API requests by route template and status", &["route", "status"]),
            request_seconds: HistogramVec::new(
                HistogramOpts::new("api_request_seconds", "API request duration, journal write included")
                    .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
                &["route"],
            )
            .expect("valid metric"),
            refusals: counter("api_policy_refusals_total", "reads answered without data, by reason", &["reason"]),
            sections_withheld: counter(
                "api_sections_withheld_total",
                "dossier sections withheld, by section and reason",
                &["section", "motif"],
            ),
            journal_writes: counter("api_journal_writes_total", "access journal entries written", &["action"]),
            rate_limited: counter(
                "api_rate_limited_total",
                "requests refused over a limit (429), neither read nor journaled",
                &["limit"],
            ),
        };
        // Every series exists from the start, at zero (an increase() alert sees the first one).
        for limit in ["per_agent", "unauthenticated_per_address"] {
            metrics.rate_limited.with_label_values(&[limit]);
        }
        let registry = passerelle_telemetry::registry();
        for collector in [
            Box::new(metrics.requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.request_seconds.clone()),
            Box::new(metrics.refusals.clone()),
            Box::new(metrics.sections_withheld.clone()),
            Box::new(metrics.journal_writes.clone()),
            Box::new(metrics.rate_limited.clone()),
        ] {
            drop(registry.register(collector));
        }
        metrics
    })
}
