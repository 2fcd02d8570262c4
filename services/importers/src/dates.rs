//! The date formats real files contain.

use chrono::NaiveDate;

/// Parses `2026-03-01`, `01/03/2026`, `20260301` or `2026-03-01T00:00:00` into `YYYY-MM-DD`.
/// Empty and `NULL` are absent values.
pub fn normalise(raw: &str) -> Result<Option<String>, String> {
    let trimmed = unquote(raw);
    if trimmed.is_empty() || trimmed.eq_ignore_ascii_case("null") {
        return Ok(None);
    }
    let head = trimmed.split(['T', ' ']).next().unwrap_or(trimmed);
    for format in ["%Y-%m-%d", "%d/%m/%Y", "%Y%m%d", "%d-%m-%Y", "%Y/%m/%d"] {
        if let Ok(date) = NaiveDate::parse_from_str(head, format) {
            return Ok(Some(date.format("%Y-%m-%d").to_string()));
        }
    }
    // The value is not repeated: it may be a birth date; the column and line name it.
    Err("not a date (YYYY-MM-DD, DD/MM/YYYY or YYYYMMDD)".into())
}

/// Removes quotes that wrap a whole value or stand alone at one end (a stray quote); quotes
/// inside a value (`DUPONT "Jean"`) are kept.
fn unquote(raw: &str) -> &str {
    let trimmed = raw.trim();
    let unwrapped = if trimmed.len() >= 2 && trimmed.starts_with('"') && trimmed.ends_with('"') {
        &trimmed[1..trimmed.len() - 1]
    } else if trimmed.matches('"').count() % 2 == 1 {
        trimmed.trim_start_matches('"').trim_end_matches('"')
    } else {
        trimmed
    };
    unwrapped.trim()
}

/// A value that may be empty or `NULL`.
pub fn present(raw: &str) -> Option<String> {
    let trimmed = unquote(raw);
    (!trimmed.is_empty() && !trimmed.eq_ignore_ascii_case("null")).then(|| trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_date_formats_of_real_files_are_read() {
        assert_eq!(normalise("2026-03-01").expect("ok").as_deref(), Some("2026-03-01"));
        assert_eq!(normalise("01/03/2026").expect("ok").as_deref(), Some("2026-03-01"));
        assert_eq!(normalise("20260301").expect("ok").as_deref(), Some("2026-03-01"));
        assert_eq!(normalise("2026-03-01T00:00:00").expect("ok").as_deref(), Some("2026-03-01"));
        assert_eq!(normalise(" NULL ").expect("ok"), None);
        assert_eq!(normalise("").expect("ok"), None);
        assert!(normalise("mars 2026").is_err());
        assert_eq!(present("\"MARTIN").as_deref(), Some("MARTIN"));
        assert_eq!(present("\"MARTIN\"").as_deref(), Some("MARTIN"));
        assert_eq!(present("DUPONT \"Jean\"").as_deref(), Some("DUPONT \"Jean\""));
    }
}
