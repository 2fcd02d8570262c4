//! What the projector writes, and erasure deletes, as typed statements taking the caller's
//! connection (they run inside its transaction, with the offsets and applied pairs that make
//! the projection effectively-once). The projector decides; these say how it is stored.

pub mod dossiers;
pub mod erasure;
pub mod events;
pub mod identity;
pub mod ops;
pub mod schema;
