//! The ";"-separated files institutions send with a header (France Travail's extract, a
//! structure's parcours export): read row by row, columns by name (case and accents of the header
//! do not matter), UTF-8 or windows-1252, each line bounded, every refusal naming its line.

use std::{collections::HashMap, io::Read};

use crate::{InvalidFile, dates::present};

/// One row, by column name.
pub struct Row {
    pub line: u64,
    values: HashMap<String, String>,
}

impl Row {
    /// The column's value, None when empty or `NULL`.
    pub fn get(&self, column: &str) -> Option<String> {
        self.values.get(column).and_then(|raw| present(raw))
    }

    /// The column's value, empty when not given.
    pub fn text(&self, column: &str) -> String {
        self.get(column).unwrap_or_default()
    }
}

fn column_name(raw: &str) -> String {
    raw.trim()
        .trim_matches('"')
        .trim_start_matches('\u{feff}')
        .to_lowercase()
        .replace(['é', 'è', 'ê'], "e")
        .replace(['à', 'â'], "a")
        .replace([' ', '-'], "_")
}

/// The longest line of a file, in bytes: a row is a few hundred; one far longer (a field whose
/// quote never closes, a file that is not CSV) is refused at this size, naming its line, instead
/// of filling memory.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Refuses a line longer than [`MAX_LINE_BYTES`] as the bytes stream in.
struct BoundedLines<R> {
    inner: R,
    /// Bytes since the last newline, and the lines seen.
    run: usize,
    line: u64,
    /// What the file should be, for the refusal ("a France Travail extract").
    what: &'static str,
}

impl<R: Read> Read for BoundedLines<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        for byte in &buf[..read] {
            if *byte == b'\n' {
                self.run = 0;
                self.line += 1;
            } else {
                self.run += 1;
                if self.run > MAX_LINE_BYTES {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "line {} runs over {MAX_LINE_BYTES} bytes: not {} (or a quote never closes)",
                            self.line + 1,
                            self.what
                        ),
                    ));
                }
            }
        }
        Ok(read)
    }
}

/// Reads the file row by row, calling `on_row`; returns the rows read. Fails on a file that is
/// not `what` (no `required` column; `hint` says what that column holds), saying where.
pub fn read_rows<R: Read>(
    file_name: &str,
    input: R,
    what: &'static str,
    required: &str,
    hint: &str,
    mut on_row: impl FnMut(Row) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b';')
        .flexible(true)
        .quoting(true)
        .double_quote(true)
        .trim(csv::Trim::All)
        .from_reader(BoundedLines { inner: input, run: 0, line: 0, what });
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| InvalidFile { file: file_name.into(), line: 1, reason: format!("no header: {e}") })?
        .iter()
        .map(column_name)
        .collect();
    if !headers.iter().any(|h| h == required) {
        return Err(InvalidFile {
            file: file_name.into(),
            line: 1,
            reason: format!("not {what}: no {required} column{hint} (columns: {})", headers.join(", ")),
        }
        .into());
    }
    let mut rows = 0;
    let mut record = csv::ByteRecord::new();
    loop {
        let line = reader.position().line();
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(error) => {
                return Err(
                    InvalidFile { file: file_name.into(), line, reason: format!("unreadable row: {error}") }.into()
                );
            }
        }
        let values = headers.iter().zip(record.iter()).map(|(name, value)| (name.clone(), decode(value))).collect();
        rows += 1;
        on_row(Row { line: record.position().map(|p| p.line()).unwrap_or(line), values })?;
    }
    Ok(rows)
}

/// Files are UTF-8, or windows-1252 when produced by older tools.
fn decode(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => encoding_rs::WINDOWS_1252.decode(bytes).0.into_owned(),
    }
}
