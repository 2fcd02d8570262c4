//! The normalisers, from arbitrary protobuf messages of each family as a caller could send them:
//! every message ends in a canonical event or in field violations, never in a panic.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use passerelle_domain::event::{InstitutionKind, Source};
use passerelle_eventlog::{secrets::SecretKey, subject::SubjectKeys};
use passerelle_ingest::{
    normalise::{self, Context},
    proto::{AllocataireEvent, DemandeurEmploiEvent, OrientationEvent},
};
use prost::Message as _;

static KEYS: LazyLock<SubjectKeys> = LazyLock::new(|| SubjectKeys::new(SecretKey::generate()));

fuzz_target!(|data: &[u8]| {
    let Some((family, message)) = data.split_first() else { return };
    let context = |kind| Context {
        keys: &KEYS,
        source: Source { institution: "fuzz".into(), kind, relayed_by: None, relay_file: None },
        now: chrono::Utc::now(),
    };
    match family % 3 {
        0 => {
            if let Ok(event) = AllocataireEvent::decode(message) {
                let _ = normalise::allocataire(&context(InstitutionKind::Caf), &event);
            }
        }
        1 => {
            if let Ok(event) = DemandeurEmploiEvent::decode(message) {
                let _ = normalise::demandeur_emploi(&context(InstitutionKind::FranceTravail), &event);
            }
        }
        _ => {
            if let Ok(event) = OrientationEvent::decode(message) {
                let _ = normalise::orientation(&context(InstitutionKind::Departement), &event);
            }
        }
    }
});
