//! The RSA data-sharing domain: identifiers that validate on construction, closed and open code
//! lists, RSA authorities (territories) and the few date rules every entry point shares.
//!
//! Nothing here does I/O. A value of one of these types is valid by construction, so the rest of
//! the hub never re-checks it. Types that hold personal identifiers (`Nir`, `FranceTravailId`,
//! `DepartementInternalId`, `Matricule`) redact themselves in `Debug` and have no `Display`: the
//! clear value is only reachable through an explicit accessor, never by accident in a log line.

pub mod codes;
pub mod dates;
pub mod event;
pub mod ids;
pub mod nir;
pub mod parcours;
pub mod territory;

pub use codes::*;
pub use ids::*;
pub use nir::Nir;
pub use territory::{Authority, CommuneCode, DepartementCode, Placement};

/// Why a value was refused. `rule` is a short stable identifier (for metrics and for callers that
/// branch on it), `message` explains the problem to a human in terms of the value's domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Invalid {
    pub rule: &'static str,
    pub message: String,
}

impl Invalid {
    pub fn new(rule: &'static str, message: impl Into<String>) -> Self {
        Self { rule, message: message.into() }
    }
}
