//! The API feuille de route: what département staff, France Travail conseillers, CAF agents,
//! référents and DPOs read, under the access policy, with every read journaled.

pub mod auth;
pub mod habilitations;
pub mod journal;
pub mod limits;
pub mod policy;

/// Migrations of the journal and the application's role. Versions from 2001, after the read
/// models' (their tables get the grants); each migrator ignores the others'.
pub fn migrator() -> sqlx::migrate::Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator
}
pub mod grpc;
pub mod metrics;
pub mod rest;
pub mod service;
