//! Captures every log line the hub writes in this test process, and every span it ends
//! (OpenTelemetry, in memory), so tests can follow traces and search both for personal data.

use std::{
    io::Write,
    sync::{Mutex, OnceLock},
};

fn buffer() -> &'static Mutex<Vec<u8>> {
    static BUFFER: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    BUFFER.get_or_init(|| Mutex::new(Vec::new()))
}

struct Capture;

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut buffer) = buffer().lock() {
            buffer.extend_from_slice(bytes);
        }
        std::io::stderr().write_all(bytes)?;
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn exporter() -> &'static opentelemetry_sdk::trace::InMemorySpanExporter {
    static EXPORTER: OnceLock<opentelemetry_sdk::trace::InMemorySpanExporter> = OnceLock::new();
    EXPORTER.get_or_init(opentelemetry_sdk::trace::InMemorySpanExporter::default)
}

/// Installs a JSON subscriber at debug level that records into the buffer, with an
/// OpenTelemetry layer exporting to memory (once per process).
pub fn capture() {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::prelude::*;
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let provider =
            opentelemetry_sdk::trace::SdkTracerProvider::builder().with_simple_exporter(exporter().clone()).build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new("debug,h2=info,hyper=info,tower=info,sqlx=info"))
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("passerelle-tests")))
            .with(tracing_subscriber::fmt::layer().json().with_writer(|| Capture));
        drop(tracing::subscriber::set_global_default(subscriber));
    });
}

/// Every span ended so far in this process.
pub fn spans() -> Vec<opentelemetry_sdk::trace::SpanData> {
    exporter().get_finished_spans().unwrap_or_default()
}

/// Everything logged so far.
pub fn captured() -> String {
    buffer().lock().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}
