//! Records sealed whole (version 2 of every stream's schema): on the log, a record is the id of
//! its subject's data key, the version of its content and an AES-256-GCM ciphertext. Decrypted,
//! the ciphertext is the Avro datum of the content version (version 1, the event in clear):
//! event id, source, subject keys, territory, commune, payload. Once the subject's key is
//! destroyed, nothing of the record can be read, nor linked to a NIR: its Kafka key is the
//! data key's random id, not a keyed hash of an identifier.

use apache_avro::{Schema, types::Value};
use uuid::Uuid;

use crate::{
    Error,
    schemas::{self, CONTENT_VERSION, Stream},
    shredding::{DataKey, Sealed, associated_data},
};

/// A sealed record, as read from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedRecord {
    pub content_version: i32,
    pub sealed: Sealed,
}

/// The additional data of a record: the stream (family or identity) and its key; the content
/// carries the source and the event id, authenticated with it.
fn record_aad(stream: Stream, key_id: Uuid) -> Vec<u8> {
    associated_data("record", stream.topic(), "", key_id, "")
}

/// Seals a content datum (the version-1 encoding of an event) under `key` and encodes the
/// sealed record with `writer` (the stream's latest schema).
pub fn seal(stream: Stream, key: &DataKey, content: &[u8], writer: &Schema) -> Result<Vec<u8>, Error> {
    let sealed = key.seal(content, &record_aad(stream, key.key_id))?;
    let value = Value::Record(vec![
        ("key_id".into(), Value::String(sealed.key_id.to_string())),
        ("content_version".into(), Value::Int(CONTENT_VERSION)),
        ("nonce".into(), Value::Bytes(sealed.nonce)),
        ("ciphertext".into(), Value::Bytes(sealed.ciphertext)),
    ]);
    let datum = apache_avro::writer::datum::GenericDatumWriter::builder(writer).build()?;
    Ok(datum.write_value_to_vec(value)?)
}

/// Whether records written with `writer` are sealed (version 2 and later) or clear (version 1).
pub fn is_sealed(writer: &Schema) -> bool {
    match writer {
        Schema::Record(record) => record.lookup.contains_key("ciphertext") && record.lookup.contains_key("key_id"),
        _ => false,
    }
}

/// Reads a sealed record's clear part (no key needed).
pub fn read(datum: &[u8], writer: &Schema) -> Result<SealedRecord, Error> {
    let mut bytes = datum;
    let value = apache_avro::reader::datum::GenericDatumReader::builder(writer).build()?.read_value(&mut bytes)?;
    let Value::Record(fields) = value else {
        return Err(Error::Decode("a sealed record is a record".into()));
    };
    let (mut key_id, mut content_version, mut nonce, mut ciphertext) = (None, None, None, None);
    for (name, value) in fields {
        match (name.as_str(), value) {
            ("key_id", Value::String(text)) => {
                key_id = Some(Uuid::parse_str(&text).map_err(|e| Error::Decode(format!("key_id: {e}")))?);
            }
            ("content_version", Value::Int(version)) => content_version = Some(version),
            ("nonce", Value::Bytes(bytes)) => nonce = Some(bytes),
            ("ciphertext", Value::Bytes(bytes)) => ciphertext = Some(bytes),
            _ => {}
        }
    }
    match (key_id, content_version, nonce, ciphertext) {
        (Some(key_id), Some(content_version), Some(nonce), Some(ciphertext)) => {
            Ok(SealedRecord { content_version, sealed: Sealed { key_id, nonce, ciphertext } })
        }
        _ => Err(Error::Decode("a sealed record lacks key_id, content_version, nonce or ciphertext".into())),
    }
}

/// Opens a sealed record with its subject's key: the content datum and the schema it follows.
pub fn open(stream: Stream, record: &SealedRecord, key: &DataKey) -> Result<(Vec<u8>, std::sync::Arc<Schema>), Error> {
    if key.key_id != record.sealed.key_id {
        return Err(Error::Crypto("a sealed record is opened with another subject's key"));
    }
    let content = key.open(&record.sealed, &record_aad(stream, key.key_id))?;
    Ok((content, schemas::committed(stream, record.content_version)?))
}

/// A subject key named inside another subject's record (an identity decision names the holder
/// and the claimant of a key), sealed under the named subject's own data key: once that subject
/// is erased, the record no longer says who it was. `sealed:<key id>:<nonce>:<ciphertext>`.
pub fn seal_name(stream: Stream, key: &DataKey, name: &str) -> Result<String, Error> {
    let sealed = key.seal(name.as_bytes(), &associated_data("name", stream.topic(), "", key.key_id, ""))?;
    Ok(format!("sealed:{}:{}:{}", sealed.key_id, hex::encode(&sealed.nonce), hex::encode(&sealed.ciphertext)))
}

/// The data key a sealed name needs (`None`: a name in clear, written before names were sealed).
pub fn sealed_name_key(text: &str) -> Option<Uuid> {
    text.strip_prefix("sealed:")?.split(':').next()?.parse().ok()
}

/// Opens a sealed name with its subject's key.
pub fn open_name(stream: Stream, text: &str, key: &DataKey) -> Result<String, Error> {
    let malformed = || Error::Decode("a sealed name is sealed:<key id>:<nonce>:<ciphertext>".into());
    let mut parts = text.strip_prefix("sealed:").ok_or_else(malformed)?.split(':');
    let (Some(key_id), Some(nonce), Some(ciphertext), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    let sealed = Sealed {
        key_id: key_id.parse().map_err(|_| malformed())?,
        nonce: hex::decode(nonce).map_err(|_| malformed())?,
        ciphertext: hex::decode(ciphertext).map_err(|_| malformed())?,
    };
    if sealed.key_id != key.key_id {
        return Err(Error::Crypto("a sealed name is opened with another subject's key"));
    }
    let plain = key.open(&sealed, &associated_data("name", stream.topic(), "", key.key_id, ""))?;
    String::from_utf8(plain).map_err(|_| malformed())
}

#[cfg(test)]
mod tests {
    use passerelle_domain::event::Family;

    use super::*;
    use crate::shredding::tests_support::key;

    #[test]
    fn a_sealed_record_opens_only_with_its_key_on_its_stream() {
        let stream = Stream::Facts(Family::Allocataire);
        let writer = schemas::committed(stream, 2).expect("v2");
        assert!(is_sealed(&writer));
        assert!(!is_sealed(&schemas::committed(stream, 1).expect("v1")));
        let (mine, other) = (key(1), key(2));
        let datum = seal(stream, &mine, b"content", &writer).expect("seal");
        let record = read(&datum, &writer).expect("read");
        assert_eq!(record.sealed.key_id, mine.key_id);
        assert_eq!(open(stream, &record, &mine).expect("open").0, b"content");
        assert!(open(stream, &record, &other).is_err());
        assert!(open(Stream::Facts(Family::Orientation), &record, &mine).is_err());
        assert!(!datum.windows(7).any(|w| w == b"content"));
    }

    #[test]
    fn a_sealed_name_opens_only_with_its_subjects_key() {
        let (mine, other) = (key(1), key(2));
        let sealed = seal_name(Stream::Identity, &mine, "nir:0123").expect("seal");
        assert!(!sealed.contains("nir:0123"));
        assert_eq!(sealed_name_key(&sealed), Some(mine.key_id));
        assert_eq!(sealed_name_key("nir:0123"), None);
        assert_eq!(open_name(Stream::Identity, &sealed, &mine).expect("open"), "nir:0123");
        assert!(open_name(Stream::Identity, &sealed, &other).is_err());
    }
}
