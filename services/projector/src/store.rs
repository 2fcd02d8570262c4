//! What a batch writes in bulk, so that applying an event costs no round trip to PostgreSQL in
//! the common cases (docs/projector.md, "Batching"): new persons, new links and the projected
//! events are queued and written as one multi-row statement each, at the end of the batch or
//! before any statement that must see them. Dossiers and households are folded at the end
//! (`refold.rs`). The statements are `passerelle_readmodel::store`'s.

use passerelle_readmodel::store::{
    events::{self, EventRow},
    identity::{self, NewLink},
};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::Error;

/// Writes queued by the fast path.
#[derive(Debug, Default)]
pub struct Pending {
    pub persons: Vec<(Uuid, String)>,
    pub links: Vec<NewLink>,
    pub events: Vec<EventRow>,
}

impl Pending {
    /// Writes what is queued: persons, then links, then events.
    pub async fn flush(&mut self, conn: &mut PgConnection) -> Result<(), Error> {
        identity::insert_persons(conn, std::mem::take(&mut self.persons)).await?;
        let links = std::mem::take(&mut self.links);
        let wanted = links.len();
        if identity::insert_links(conn, links).await? != wanted {
            // A key this batch saw unlinked was linked by another worker meanwhile.
            return Err(Error::LinkedMeanwhile);
        }
        events::insert(conn, std::mem::take(&mut self.events)).await?;
        Ok(())
    }
}
