//! Ops' decisions on the authority of a foyer whose CAF/MSA facts wait "à affecter" (received by
//! the split département 69 with a commune that does not say whether they are the Métropole de
//! Lyon's or the Rhône's, docs/territories.md). Published on their own topic so that every
//! projection, and every rebuild, applies the same decision. Nothing about the person in clear:
//! the foyer is named by its keyed hash (the deciding agent by their uid); not sealed.

use apache_avro::{Schema, types::Value};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{Error, codec::Fields};

/// One decision, as published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerritoryAssignment {
    pub decision_id: Uuid,
    pub decided_at: DateTime<Utc>,
    /// The uid of the agent who decided.
    pub decided_by: String,
    /// The foyer (`foyer:` keyed hash).
    pub household_key: String,
    /// `69M` or `69D`.
    pub authority: String,
}

pub fn encode(decision: &TerritoryAssignment, schema: &Schema) -> Result<Vec<u8>, Error> {
    let value = Value::Record(vec![
        ("decision_id".into(), Value::String(decision.decision_id.to_string())),
        ("decided_at".into(), Value::TimestampMillis(decision.decided_at.timestamp_millis())),
        ("decided_by".into(), Value::String(decision.decided_by.clone())),
        ("household_key".into(), Value::String(decision.household_key.clone())),
        ("authority".into(), Value::String(decision.authority.clone())),
    ]);
    let writer = apache_avro::writer::datum::GenericDatumWriter::builder(schema).build()?;
    Ok(writer.write_value_to_vec(value)?)
}

pub fn decode(datum: &[u8], writer: &Schema) -> Result<TerritoryAssignment, Error> {
    let fields = Fields::read(datum, writer, "a territory assignment")?;
    let authority = fields.string("authority")?;
    if !matches!(authority.as_str(), "69M" | "69D") {
        return Err(Error::Decode(format!("authority {authority:?}: a foyer waits between 69M and 69D only")));
    }
    Ok(TerritoryAssignment {
        decision_id: fields.string("decision_id")?.parse().map_err(|e| Error::Decode(format!("decision_id: {e}")))?,
        decided_at: fields.instant("decided_at")?,
        decided_by: fields.string("decided_by")?,
        household_key: fields.string("household_key")?,
        authority,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schemas::{self, Stream};

    #[test]
    fn a_decision_round_trips_through_the_committed_schema() {
        let schema = schemas::committed(Stream::Affectation, 1).expect("schema");
        let original = TerritoryAssignment {
            decision_id: Uuid::now_v7(),
            decided_at: DateTime::from_timestamp_millis(1_790_000_000_123).expect("instant"),
            decided_by: "operateur.dupont".into(),
            household_key: "foyer:0a1b".into(),
            authority: "69D".into(),
        };
        let datum = encode(&original, &schema).expect("encode");
        assert_eq!(decode(&datum, &schema).expect("decode"), original);
        let elsewhere = TerritoryAssignment { authority: "52".into(), ..original };
        let datum = encode(&elsewhere, &schema).expect("encode");
        assert!(decode(&datum, &schema).is_err(), "only 69M or 69D");
    }
}
