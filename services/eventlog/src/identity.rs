//! Identity decisions: what a human decided about an identity conflict, published on the
//! identity topic so that every projection (and every rebuild) applies the same decision.

use apache_avro::{Schema, types::Value};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{Error, codec::Fields};

/// What was decided about a subject key claimed by two persons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The claim is right: the key moves to the claimant.
    Confirm,
    /// The claim is wrong: the key stays with its holder.
    Reject,
    /// Holder and claimant are one person: merged, the weaker id redirecting to the stronger.
    Merge,
}

impl Decision {
    pub fn code(self) -> &'static str {
        match self {
            Decision::Confirm => "CONFIRM",
            Decision::Reject => "REJECT",
            Decision::Merge => "MERGE",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_uppercase().as_str() {
            "CONFIRM" => Some(Decision::Confirm),
            "REJECT" => Some(Decision::Reject),
            "MERGE" => Some(Decision::Merge),
            _ => None,
        }
    }

    const SYMBOLS: [Decision; 3] = [Decision::Confirm, Decision::Reject, Decision::Merge];
}

/// One decision, as published. Persons are named by their identity key (the subject key their
/// id derives from), never by a database id, so a rebuild finds the same persons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityDecision {
    pub decision_id: Uuid,
    pub decided_at: DateTime<Utc>,
    pub decided_by: String,
    pub subject_key: String,
    pub holder_key: String,
    pub claimant_key: String,
    pub decision: Decision,
}

pub fn encode(decision: &IdentityDecision, schema: &Schema) -> Result<Vec<u8>, Error> {
    let index = Decision::SYMBOLS.iter().position(|d| *d == decision.decision).unwrap_or_default();
    let value = Value::Record(vec![
        ("decision_id".into(), Value::String(decision.decision_id.to_string())),
        ("decided_at".into(), Value::TimestampMillis(decision.decided_at.timestamp_millis())),
        ("decided_by".into(), Value::String(decision.decided_by.clone())),
        ("subject_key".into(), Value::String(decision.subject_key.clone())),
        ("holder_key".into(), Value::String(decision.holder_key.clone())),
        ("claimant_key".into(), Value::String(decision.claimant_key.clone())),
        ("decision".into(), Value::Enum(u32::try_from(index).unwrap_or_default(), decision.decision.code().into())),
    ]);
    let writer = apache_avro::writer::datum::GenericDatumWriter::builder(schema).build()?;
    Ok(writer.write_value_to_vec(value)?)
}

pub fn decode(datum: &[u8], writer: &Schema) -> Result<IdentityDecision, Error> {
    let fields = Fields::read(datum, writer, "an identity decision")?;
    let decision = match fields.get("decision")? {
        Value::Enum(_, symbol) => {
            Decision::parse(&symbol).ok_or_else(|| Error::Decode(format!("unknown decision {symbol:?}")))?
        }
        other => return Err(Error::Decode(format!("decision: expected an enum, found {other:?}"))),
    };
    Ok(IdentityDecision {
        decision_id: fields.string("decision_id")?.parse().map_err(|e| Error::Decode(format!("decision_id: {e}")))?,
        decided_at: fields.instant("decided_at")?,
        decided_by: fields.string("decided_by")?,
        subject_key: fields.string("subject_key")?,
        holder_key: fields.string("holder_key")?,
        claimant_key: fields.string("claimant_key")?,
        decision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schemas::{self, Stream};

    #[test]
    fn a_decision_round_trips_through_the_committed_schema() {
        let schema = schemas::committed(Stream::Identity, schemas::CONTENT_VERSION).expect("schema");
        for decision in Decision::SYMBOLS {
            let original = IdentityDecision {
                decision_id: Uuid::now_v7(),
                decided_at: DateTime::from_timestamp_millis(1_790_000_000_123).expect("instant"),
                decided_by: "operateur.dupont".into(),
                subject_key: "ft:0011".into(),
                holder_key: "nir:aa".into(),
                claimant_key: "nir:bb".into(),
                decision,
            };
            let datum = encode(&original, &schema).expect("encode");
            assert_eq!(decode(&datum, &schema).expect("decode"), original);
        }
    }
}
