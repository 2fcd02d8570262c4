//! Metrics of the ingestion services, declared once (documented in docs/metrics.md).

use std::sync::OnceLock;

use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};

pub struct IngestMetrics {
    /// `passerelle_ingest_events_accepted_total{family}`
    pub accepted: IntCounterVec,
    /// `passerelle_ingest_events_refused_total{family, reason}`; reason is the violated rule
    /// class: invalid, denied, unauthenticated, unavailable.
    pub refused: IntCounterVec,
    /// `passerelle_ingest_publish_seconds{family}`: from request to broker acknowledgement.
    pub publish_seconds: HistogramVec,
    /// `passerelle_ingest_person_choices_total`: choices persons recorded in their space
    /// (opposition, consent), acknowledged by the broker.
    pub person_choices: IntCounter,
    /// `passerelle_ingest_limited_total{limit}`: calls or events refused over a limit
    /// (`events_per_second`, `streams_per_institution`, `events_per_stream`).
    pub limited: IntCounterVec,
}

pub fn metrics() -> &'static IngestMetrics {
    static METRICS: OnceLock<IngestMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let accepted = IntCounterVec::new(
            Opts::new("ingest_events_accepted_total", "events published and acknowledged by the broker"),
            &["family"],
        )
        .expect("valid metric");
        let refused = IntCounterVec::new(
            Opts::new("ingest_events_refused_total", "events refused, by reason"),
            &["family", "reason"],
        )
        .expect("valid metric");
        let publish_seconds = HistogramVec::new(
            HistogramOpts::new("ingest_publish_seconds", "time from request to broker acknowledgement")
                .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]),
            &["family"],
        )
        .expect("valid metric");
        let person_choices = IntCounter::new(
            "ingest_person_choices_total",
            "choices persons recorded in their space (opposition, consent), acknowledged by the broker",
        )
        .expect("valid metric");
        let limited = IntCounterVec::new(
            Opts::new("ingest_limited_total", "calls or events refused over a per-institution limit"),
            &["limit"],
        )
        .expect("valid metric");
        for limit in ["events_per_second", "streams_per_institution", "events_per_stream"] {
            limited.with_label_values(&[limit]);
        }
        let registry = passerelle_telemetry::registry();
        for collector in [
            Box::new(person_choices.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(limited.clone()),
            Box::new(accepted.clone()),
            Box::new(refused.clone()),
            Box::new(publish_seconds.clone()),
        ] {
            drop(registry.register(collector));
        }
        // The series the alerts read exist from the start at zero (a rate or an increase() then
        // sees the first event, and "no event for 6 hours" fires on a hub that never got one).
        for family in passerelle_domain::event::Family::ALL {
            accepted.with_label_values(&[family.label()]);
            for reason in ["unavailable", "internal", "invalid", "denied", "limited"] {
                refused.with_label_values(&[family.label(), reason]);
            }
        }
        IngestMetrics { accepted, refused, publish_seconds, person_choices, limited }
    })
}
