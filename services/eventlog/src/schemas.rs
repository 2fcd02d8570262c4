//! The committed Avro schemas of `schemas/`, one subject per topic. Every version ever committed
//! is listed here and registered, because a rebuild reads events of every version.

use apache_avro::Schema;
use passerelle_domain::event::Family;

use crate::Error;

/// What a topic carries: the facts of one family, or the identity decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Facts(Family),
    Identity,
    /// Ops' decisions on the authority of foyers waiting "à affecter" (crate::affectation).
    Affectation,
}

impl Stream {
    /// The topic's name, without prefix.
    pub fn topic(self) -> &'static str {
        match self {
            Stream::Facts(family) => family.topic(),
            Stream::Identity => IDENTITY_TOPIC,
            Stream::Affectation => AFFECTATION_TOPIC,
        }
    }
}

const IDENTITY_TOPIC: &str = "passerelle.identite.v1";
const AFFECTATION_TOPIC: &str = "passerelle.affectation.v1";

/// The latest committed version of a stream's schema.
pub fn latest_of(stream: Stream) -> SchemaVersion {
    COMMITTED
        .iter()
        .filter(|version| version.stream == stream)
        .max_by_key(|version| version.version)
        .copied()
        .expect("every stream has a committed schema")
}

/// One committed version of a topic's value schema.
#[derive(Debug, Clone, Copy)]
pub struct SchemaVersion {
    pub stream: Stream,
    pub version: i32,
    pub text: &'static str,
}

/// Every committed version, oldest first. Never edit a version once committed: add `vN+1.avsc`
/// (the compatibility test checks it reads every earlier one) and list it here.
pub const COMMITTED: &[SchemaVersion] = &[
    SchemaVersion {
        stream: Stream::Facts(Family::Allocataire),
        version: 1,
        text: include_str!("../../../schemas/passerelle.allocataire.v1/v1.avsc"),
    },
    SchemaVersion {
        stream: Stream::Facts(Family::DemandeurEmploi),
        version: 1,
        text: include_str!("../../../schemas/passerelle.demandeur-emploi.v1/v1.avsc"),
    },
    SchemaVersion {
        stream: Stream::Facts(Family::Orientation),
        version: 1,
        text: include_str!("../../../schemas/passerelle.orientation.v1/v1.avsc"),
    },
    SchemaVersion {
        stream: Stream::Identity,
        version: 1,
        text: include_str!("../../../schemas/passerelle.identite.v1/v1.avsc"),
    },
    // Version 2 of every stream: the record sealed whole (crate::sealed); version 1 is its content.
    SchemaVersion {
        stream: Stream::Facts(Family::Allocataire),
        version: 2,
        text: include_str!("../../../schemas/passerelle.allocataire.v1/v2.avsc"),
    },
    SchemaVersion {
        stream: Stream::Facts(Family::DemandeurEmploi),
        version: 2,
        text: include_str!("../../../schemas/passerelle.demandeur-emploi.v1/v2.avsc"),
    },
    SchemaVersion {
        stream: Stream::Facts(Family::Orientation),
        version: 2,
        text: include_str!("../../../schemas/passerelle.orientation.v1/v2.avsc"),
    },
    SchemaVersion {
        stream: Stream::Identity,
        version: 2,
        text: include_str!("../../../schemas/passerelle.identite.v1/v2.avsc"),
    },
    // The parcours family: born sealed (version 2), version 1 is its content and never travels.
    SchemaVersion {
        stream: Stream::Facts(Family::Parcours),
        version: 1,
        text: include_str!("../../../schemas/passerelle.parcours.v1/v1.avsc"),
    },
    SchemaVersion {
        stream: Stream::Facts(Family::Parcours),
        version: 2,
        text: include_str!("../../../schemas/passerelle.parcours.v1/v2.avsc"),
    },
    // Nothing personal in it (the foyer is named by its keyed hash): not sealed.
    SchemaVersion {
        stream: Stream::Affectation,
        version: 1,
        text: include_str!("../../../schemas/passerelle.affectation.v1/v1.avsc"),
    },
];

/// The latest committed version of a family's schema: the one the hub writes with.
pub fn latest(family: Family) -> SchemaVersion {
    latest_of(Stream::Facts(family))
}

pub fn parse(version: &SchemaVersion) -> Result<Schema, Error> {
    Ok(Schema::parse_str(version.text)?)
}

/// A committed version of a stream's schema, parsed once per process.
pub fn committed(stream: Stream, version: i32) -> Result<std::sync::Arc<Schema>, Error> {
    use std::{
        collections::HashMap,
        sync::{Arc, Mutex, OnceLock},
    };
    type Parsed = Mutex<HashMap<(&'static str, i32), Arc<Schema>>>;
    static PARSED: OnceLock<Parsed> = OnceLock::new();
    let parsed = PARSED.get_or_init(Mutex::default);
    if let Some(schema) = parsed.lock().expect("schemas lock").get(&(stream.topic(), version)) {
        return Ok(schema.clone());
    }
    let text = COMMITTED
        .iter()
        .find(|v| v.stream == stream && v.version == version)
        .ok_or_else(|| Error::Registry(format!("{} has no committed version {version}", stream.topic())))?;
    let schema = Arc::new(parse(text)?);
    parsed.lock().expect("schemas lock").insert((stream.topic(), version), schema.clone());
    Ok(schema)
}

/// The version whose schema a sealed record's content follows (version 1: the clear event).
pub const CONTENT_VERSION: i32 = 1;

/// Topic names, with an optional prefix (tests and side-by-side deployments share a broker).
#[derive(Debug, Clone, Default)]
pub struct Topics {
    pub prefix: String,
}

impl Topics {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    pub fn topic(&self, family: Family) -> String {
        format!("{}{}", self.prefix, family.topic())
    }

    /// The Confluent subject of a topic's values (TopicNameStrategy).
    pub fn subject(&self, family: Family) -> String {
        self.subject_of(Stream::Facts(family))
    }

    /// The Confluent subject of any stream's values.
    pub fn subject_of(&self, stream: Stream) -> String {
        format!("{}{}-value", self.prefix, stream.topic())
    }

    pub fn dead_letters(&self) -> String {
        format!("{}passerelle.dlq.v1", self.prefix)
    }

    pub fn identity(&self) -> String {
        format!("{}{IDENTITY_TOPIC}", self.prefix)
    }

    pub fn affectation(&self) -> String {
        format!("{}{AFFECTATION_TOPIC}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use apache_avro::schema_compatibility::SchemaCompatibility;

    use super::*;

    fn schemas_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
    }

    /// Every `vN.avsc` on disk, per subject directory, oldest first.
    fn versions_on_disk() -> Vec<(String, Vec<(i32, String)>)> {
        let mut subjects = Vec::new();
        for entry in std::fs::read_dir(schemas_dir()).expect("schemas/") {
            let entry = entry.expect("entry");
            if !entry.file_type().expect("type").is_dir() {
                continue;
            }
            let mut versions = Vec::new();
            for file in std::fs::read_dir(entry.path()).expect("subject dir") {
                let path = file.expect("file").path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
                let Some(number) = name.strip_prefix('v').and_then(|n| n.strip_suffix(".avsc")) else {
                    continue;
                };
                let number: i32 = number.parse().expect("vN.avsc");
                versions.push((number, std::fs::read_to_string(&path).expect("read")));
            }
            versions.sort_by_key(|(number, _)| *number);
            subjects.push((entry.file_name().to_string_lossy().into_owned(), versions));
        }
        subjects
    }

    #[test]
    fn every_schema_version_reads_every_earlier_one_backward_transitive() {
        for (subject, versions) in versions_on_disk() {
            for (index, (reader_version, reader_text)) in versions.iter().enumerate() {
                let reader =
                    Schema::parse_str(reader_text).unwrap_or_else(|e| panic!("{subject} v{reader_version}: {e}"));
                for (writer_version, writer_text) in &versions[..index] {
                    let writer = Schema::parse_str(writer_text).expect("committed schema parses");
                    if let Err(error) = SchemaCompatibility::can_read(&writer, &reader) {
                        panic!(
                            "{subject}: v{reader_version} cannot read events written with v{writer_version}: {error}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn every_committed_file_is_registered_and_versions_are_contiguous() {
        for (subject, versions) in versions_on_disk() {
            for (position, (number, text)) in versions.iter().enumerate() {
                assert_eq!(*number as usize, position + 1, "{subject}: versions must be v1, v2, ... without gaps");
                let listed = COMMITTED
                    .iter()
                    .find(|v| v.stream.topic() == subject && v.version == *number)
                    .unwrap_or_else(|| panic!("{subject} v{number} is on disk but not listed in schemas::COMMITTED"));
                assert_eq!(listed.text, text);
            }
        }
    }

    #[test]
    fn committed_versions_are_never_edited() {
        // schemas/fingerprints.sha256 pins every committed version; a change to one fails here.
        // To evolve a schema, add the next version instead and pin it with:
        //   sha256sum schemas/*/v*.avsc > schemas/fingerprints.sha256 (from the repository root)
        let pins = std::fs::read_to_string(schemas_dir().join("fingerprints.sha256")).expect("fingerprints.sha256");
        let mut pinned = 0;
        for line in pins.lines().filter(|l| !l.trim().is_empty()) {
            let (digest, path) = line.split_once("  ").expect("sha256sum format");
            let relative = path.trim().trim_start_matches("schemas/");
            let text = std::fs::read(schemas_dir().join(relative))
                .unwrap_or_else(|_| panic!("{path} was committed and must stay"));
            use sha2::Digest;
            let actual = hex::encode(sha2::Sha256::digest(&text));
            assert_eq!(actual, digest, "{path} was edited after being committed: add a new version instead");
            pinned += 1;
        }
        let on_disk: usize = versions_on_disk().iter().map(|(_, v)| v.len()).sum();
        assert_eq!(pinned, on_disk, "every schema version must be pinned in schemas/fingerprints.sha256");
    }
}
