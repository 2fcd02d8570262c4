//! The CNAF flux reader, then the events each foyer becomes: any bytes end in foyers or in an
//! error naming a line, never in a panic, a hang or unbounded memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passerelle_importers::cnaf;

fuzz_target!(|data: &[u8]| {
    let _ = cnaf::read_flux("fuzz.xml", data, |_| {}, |_| {}, |header, foyer| {
        let _ = cnaf::events_of(&passerelle_importers::IdKey::from_bytes([7; 32]), header, &foyer);
        Ok(())
    });
});
