//! The France Travail extract reader, then the events each row becomes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use passerelle_importers::ft_csv;

fuzz_target!(|data: &[u8]| {
    let _ = ft_csv::read_extract("fuzz.csv", data, |row| {
        let _ = ft_csv::events_of(&passerelle_importers::IdKey::from_bytes([7; 32]), &row);
        Ok(())
    });
});
