//! Confluent wire format: magic byte 0, the 4-byte big-endian schema id, then the Avro datum.

use crate::Error;

pub fn frame(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(5 + datum.len());
    framed.push(0);
    framed.extend_from_slice(&schema_id.to_be_bytes());
    framed.extend_from_slice(datum);
    framed
}

/// Splits a framed value into its schema id and Avro datum.
pub fn unframe(value: &[u8]) -> Result<(u32, &[u8]), Error> {
    if value.len() < 5 {
        return Err(Error::Framing(format!("a framed value has at least 5 bytes, got {}", value.len())));
    }
    if value[0] != 0 {
        return Err(Error::Framing(format!("unknown magic byte {}", value[0])));
    }
    let id = u32::from_be_bytes([value[1], value[2], value[3], value[4]]);
    Ok((id, &value[5..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_round_trips_and_refuses_foreign_bytes() {
        let framed = frame(42, b"datum");
        assert_eq!(unframe(&framed).expect("framed"), (42, &b"datum"[..]));
        assert!(unframe(b"\x01\0\0\0\x2adatum").is_err());
        assert!(unframe(b"\0\0").is_err());
    }
}
