//! Identity conflicts for a human to decide (`passerelle identite conflicts|resolve`). The
//! decision is not written here: it is published on the identity topic, and the projection
//! applies it like any event, so a rebuild reproduces it.

use chrono::Utc;
use passerelle_eventlog::identity::{Decision, IdentityDecision};
use passerelle_readmodel::store::ops;
use sqlx::PgPool;
use uuid::Uuid;

use crate::Error;

pub use passerelle_readmodel::store::ops::Conflict;

/// The conflicts awaiting a decision (every conflict with `all`), oldest first.
pub async fn list(pool: &PgPool, all: bool) -> Result<Vec<Conflict>, Error> {
    let conflicts = ops::conflicts(&mut *pool.acquire().await?, all).await?;
    Ok(conflicts
        .into_iter()
        // Two persons merged since: nothing left to decide.
        .filter(|conflict| all || conflict.holder != conflict.claimant)
        .collect())
}

/// Why a decision cannot be taken.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("no identity conflict #{0} (passerelle identite conflicts lists them)")]
    Unknown(i64),
    #[error("identity conflict #{0} was already decided ({1}); a new decision needs a new conflict")]
    AlreadyDecided(i64, String),
    #[error(
        "person {0} has no identity key (minted before ids were derived): run `passerelle projections rebuild dossier` first"
    )]
    NoIdentityKey(Uuid),
    #[error("{0}")]
    Database(#[from] Error),
}

/// The decision to publish for conflict `conflict_id`, naming persons by their identity keys.
pub async fn decision_for(
    pool: &PgPool,
    conflict_id: i64,
    decision: Decision,
    decided_by: &str,
) -> Result<IdentityDecision, Refused> {
    let conflict = list(pool, true)
        .await?
        .into_iter()
        .find(|conflict| conflict.conflict_id == conflict_id)
        .ok_or(Refused::Unknown(conflict_id))?;
    if let Some(resolution) = conflict.resolution {
        return Err(Refused::AlreadyDecided(conflict_id, resolution));
    }
    let key_of = |person: Uuid| async move {
        let mut conn = pool.acquire().await.map_err(Error::from)?;
        let key = ops::identity_key_of(&mut conn, person).await.map_err(Error::from)?;
        key.ok_or(Refused::NoIdentityKey(person))
    };
    Ok(IdentityDecision {
        decision_id: Uuid::now_v7(),
        decided_at: Utc::now(),
        decided_by: decided_by.to_owned(),
        subject_key: conflict.subject_key,
        holder_key: key_of(conflict.holder).await?,
        claimant_key: key_of(conflict.claimant).await?,
        decision,
    })
}
