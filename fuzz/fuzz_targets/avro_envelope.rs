//! The log's decoder: a Confluent-framed Avro record of any family, as the projector reads it
//! from the broker: the sealed record (version 2) and the event it holds (version 1, the content
//! once opened). Any bytes end in an event or an error (a dead letter), never in a panic.
#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use passerelle_domain::event::Family;
use passerelle_eventlog::{
    codec, framing,
    schemas::{self, Stream},
    sealed,
};

type Writers = (Family, Arc<apache_avro::Schema>, Arc<apache_avro::Schema>);

static WRITERS: LazyLock<Vec<Writers>> = LazyLock::new(|| {
    Family::ALL
        .iter()
        .map(|family| {
            let stream = Stream::Facts(*family);
            let content = schemas::committed(stream, schemas::CONTENT_VERSION).expect("the content schema parses");
            let record = schemas::latest(*family);
            let record = schemas::committed(stream, record.version).expect("the record schema parses");
            (*family, content, record)
        })
        .collect()
});

fuzz_target!(|data: &[u8]| {
    let Some((which, value)) = data.split_first() else { return };
    let (family, content, record) = &WRITERS[usize::from(*which) % WRITERS.len()];
    if let Ok((_, datum)) = framing::unframe(value) {
        let _ = sealed::read(datum, record);
        let _ = codec::decode(*family, datum, content);
    }
    let _ = codec::decode(*family, value, content);
});
