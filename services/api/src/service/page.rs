//! Pages of the long answers (a dossier's timeline, the journal): at most `limite` items, then a
//! `suivant` cursor to ask for the next ones. A cursor is a position (instants in microseconds,
//! and a journal row's number or a short digest of a timeline event), never an event id or a
//! personal datum; callers pass it back as it came. Its form is a pattern of the OpenAPI
//! document, and any value of that form is a position (a page that starts there); anything else
//! is a 400 naming `curseur`. Positions are keys, not offsets: an item arriving between two
//! pages shifts nothing.

use chrono::{DateTime, Utc};
use sha2::Digest as _;

use super::Failure;

/// What a caller asks of a long answer.
#[derive(Debug, Clone, Default)]
pub struct PageQuery {
    /// Items per page (`limite`), as the caller wrote it.
    pub limite: Option<String>,
    /// Where the previous page ended (`curseur`, its `suivant`).
    pub curseur: Option<String>,
}

/// A checked page request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Page<K> {
    pub limit: usize,
    pub after: Option<K>,
}

impl PageQuery {
    /// The page asked for, `limite` between 1 and `max` (default `default`).
    pub(crate) fn checked<K: Position>(&self, default: usize, max: usize) -> Result<Page<K>, Failure> {
        let limit = match self.limite.as_deref() {
            None => default,
            Some(raw) => match raw.parse::<usize>() {
                Ok(limit) if (1..=max).contains(&limit) => limit,
                _ => {
                    return Err(Failure::BadRequest {
                        parameter: "limite",
                        reason: format!("{raw:?} is not a number of items from 1 to {max}"),
                    });
                }
            },
        };
        let after = match self.curseur.as_deref() {
            None => None,
            Some(raw) => Some(K::decode(raw).ok_or_else(|| Failure::BadRequest {
                parameter: "curseur",
                reason: "not a cursor this API gave (pass the `suivant` of the previous page as it came)".into(),
            })?),
        };
        Ok(Page { limit, after })
    }
}

/// A position in an ordered answer, as a cursor.
pub(crate) trait Position: Sized + Ord {
    fn encode(&self) -> String;
    fn decode(raw: &str) -> Option<Self>;
}

/// Microseconds since 1970 (negative before), at most 17 digits (some 3,000 years): within
/// chrono's range.
fn instant(micros: &str) -> Option<DateTime<Utc>> {
    let digits = micros.strip_prefix('-').unwrap_or(micros);
    if digits.is_empty() || digits.len() > 17 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    DateTime::from_timestamp_micros(micros.parse().ok()?)
}

/// A journal row's position: when, then its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct JournalPosition {
    pub at: DateTime<Utc>,
    pub entry_id: i64,
}

impl Position for JournalPosition {
    /// `j<at>.<entry_id>` (OpenAPI: `^j-?[0-9]{1,17}\.[0-9]{1,18}$`).
    fn encode(&self) -> String {
        format!("j{}.{}", self.at.timestamp_micros(), self.entry_id)
    }

    fn decode(raw: &str) -> Option<Self> {
        let (at, entry_id) = raw.strip_prefix('j')?.split_once('.')?;
        if entry_id.is_empty() || entry_id.len() > 18 || !entry_id.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Self { at: instant(at)?, entry_id: entry_id.parse().ok()? })
    }
}

/// A timeline item's position: when it happened, when the hub recorded it, then a digest of its
/// source and event id (a total order that carries no event id).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TimelinePosition {
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub digest: String,
}

impl TimelinePosition {
    pub fn of(item: &passerelle_readmodel::TimelineEntry) -> Self {
        let digest = sha2::Sha256::new()
            .chain_update(item.source.as_bytes())
            .chain_update([0])
            .chain_update(item.event_id.as_bytes())
            .finalize();
        Self {
            occurred_at: item.occurred_at,
            recorded_at: item.recorded_at,
            digest: digest[..8].iter().map(|byte| format!("{byte:02x}")).collect(),
        }
    }
}

impl Position for TimelinePosition {
    /// `h<occurred>.<recorded>.<digest>` (OpenAPI: `^h-?[0-9]{1,17}\.-?[0-9]{1,17}\.[0-9a-f]{16}$`).
    fn encode(&self) -> String {
        format!("h{}.{}.{}", self.occurred_at.timestamp_micros(), self.recorded_at.timestamp_micros(), self.digest)
    }

    fn decode(raw: &str) -> Option<Self> {
        let mut parts = raw.strip_prefix('h')?.split('.');
        let occurred_at = instant(parts.next()?)?;
        let recorded_at = instant(parts.next()?)?;
        let digest = parts.next()?.to_owned();
        let valid = digest.len() == 16 && digest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        (valid && parts.next().is_none()).then_some(Self { occurred_at, recorded_at, digest })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_anything_else_is_refused_naming_the_parameter() {
        let position = JournalPosition {
            at: DateTime::from_timestamp_micros(1_780_000_000_123_456).expect("instant"),
            entry_id: 42,
        };
        let query = PageQuery { limite: Some("10".into()), curseur: Some(position.encode()) };
        assert_eq!(query.checked::<JournalPosition>(100, 500).ok(), Some(Page { limit: 10, after: Some(position) }));
        for bad in ["", "x", "bm90IGEgY3Vyc29y", "j1.2.3", "j1", "j123456789012345678.1", "jx.1"] {
            let query = PageQuery { limite: None, curseur: Some(bad.into()) };
            assert!(
                matches!(
                    query.checked::<JournalPosition>(100, 500),
                    Err(Failure::BadRequest { parameter: "curseur", .. })
                ),
                "{bad:?}"
            );
        }
        // A timeline cursor is not a journal cursor, and the other way round.
        let timeline =
            TimelinePosition { occurred_at: position.at, recorded_at: position.at, digest: "0011223344556677".into() };
        assert_eq!(TimelinePosition::decode(&timeline.encode()), Some(timeline.clone()));
        assert_eq!(JournalPosition::decode(&timeline.encode()), None);
        for limite in ["0", "501", "-1", "dix"] {
            let query = PageQuery { limite: Some(limite.into()), curseur: None };
            assert!(matches!(
                query.checked::<JournalPosition>(100, 500),
                Err(Failure::BadRequest { parameter: "limite", .. })
            ));
        }
    }
}
