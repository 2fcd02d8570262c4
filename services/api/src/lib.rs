//! The API feuille de route: what département staff, France Travail conseillers, CAF agents,
//! référents and DPOs read, under the access policy, with every read journaled.

pub mod policy;
pub mod habilitations;
pub mod auth;
