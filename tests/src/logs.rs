//! Captures every log line the hub writes in this test process, so tests can search them for
//! personal data.

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

/// Installs a JSON subscriber at debug level that records into the buffer (once per process).
pub fn capture() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug,h2=info,hyper=info,tower=info,sqlx=info"))
            .with_writer(|| Capture)
            .finish();
        drop(tracing::subscriber::set_global_default(subscriber));
    });
}

/// Everything logged so far.
pub fn captured() -> String {
    buffer().lock().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
}
