//! Deterministic crash points for the crash tests: `PASSERELLE_FAILPOINT=NAME=N` makes the
//! process abort (as a crash would: no cleanup, no commit) the Nth time it reaches the point
//! NAME. Points: `mid-batch` (half of a batch applied, its transaction open),
//! `after-db-commit` (a batch committed to PostgreSQL, its offsets not yet committed to the
//! broker), `rebalance` (inside the consumer's rebalance callback). Unset, a point costs one
//! atomic load. Never set it in production: the hub warns at start when it is set.

use std::sync::{
    OnceLock,
    atomic::{AtomicU64, Ordering},
};

struct Armed {
    name: String,
    at: u64,
    hits: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let spec = std::env::var("PASSERELLE_FAILPOINT").ok()?;
            let (name, at) = spec.split_once('=').unwrap_or((spec.as_str(), "1"));
            let at = at.parse().ok()?;
            tracing::warn!(failpoint = name, at, "PASSERELLE_FAILPOINT is set: this process will abort on purpose");
            Some(Armed { name: name.to_owned(), at, hits: AtomicU64::new(0) })
        })
        .as_ref()
}

/// Aborts the process if `name` is armed and reached for the Nth time.
pub fn hit(name: &str) {
    let Some(armed) = armed() else { return };
    if armed.name == name && armed.hits.fetch_add(1, Ordering::SeqCst) + 1 == armed.at {
        eprintln!("failpoint {name} reached: aborting");
        std::process::abort();
    }
}

/// Arms the failpoint from the environment now (so the warning shows at start).
pub fn init() {
    armed();
}
