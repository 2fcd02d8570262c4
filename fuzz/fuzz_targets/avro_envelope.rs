//! The log's decoder: a Confluent-framed Avro record of any family, as the projector reads it
//! from the broker. Any bytes end in an event or an error (a dead letter), never in a panic.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use passerelle_domain::event::Family;
use passerelle_eventlog::{codec, framing, schemas};

static WRITERS: LazyLock<Vec<(Family, apache_avro::Schema)>> = LazyLock::new(|| {
    Family::ALL
        .iter()
        .map(|family| (*family, schemas::parse(&schemas::latest(*family)).expect("the committed schema parses")))
        .collect()
});

fuzz_target!(|data: &[u8]| {
    let Some((which, value)) = data.split_first() else { return };
    let (family, writer) = &WRITERS[usize::from(*which) % WRITERS.len()];
    if let Ok((_, datum)) = framing::unframe(value) {
        let _ = codec::decode(*family, datum, writer);
    }
    let _ = codec::decode(*family, value, writer);
});
