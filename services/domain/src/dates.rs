//! Dates and instants as the API receives them.

use chrono::{DateTime, NaiveDate, Utc};

use crate::Invalid;

/// Parses a calendar date `YYYY-MM-DD`, between 1900 and the year 2100. The error does not repeat
/// the value: it may be a birth date (the field it names is enough to find it).
pub fn parse_date(raw: &str) -> Result<NaiveDate, Invalid> {
    let date = NaiveDate::parse_from_str(raw.trim(), "%Y-%m-%d")
        .map_err(|_| Invalid::new("date.format", "not a date of the form YYYY-MM-DD"))?;
    check_plausible(date)?;
    Ok(date)
}

/// Parses an instant in RFC 3339 (`2026-03-01T09:30:00+01:00`), not more than one day in the
/// future (clocks drift; facts from tomorrow do not exist).
pub fn parse_instant(raw: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, Invalid> {
    let instant = DateTime::parse_from_rfc3339(raw.trim())
        .map_err(|_| {
            Invalid::new(
                "instant.format",
                format!("{raw:?} is not an RFC 3339 instant such as 2026-03-01T09:30:00+01:00"),
            )
        })?
        .with_timezone(&Utc);
    if instant > now + chrono::Duration::days(1) {
        return Err(Invalid::new("instant.future", "this instant is in the future"));
    }
    check_plausible(instant.date_naive())?;
    Ok(instant)
}

fn check_plausible(date: NaiveDate) -> Result<(), Invalid> {
    let earliest = NaiveDate::from_ymd_opt(1900, 1, 1).unwrap_or_default();
    let latest = NaiveDate::from_ymd_opt(2100, 12, 31).unwrap_or_default();
    if date < earliest || date > latest {
        return Err(Invalid::new("date.range", "dates must lie between 1900 and 2100"));
    }
    Ok(())
}

/// Days since the Unix epoch, the Avro `date` logical type.
pub fn days_since_epoch(date: NaiveDate) -> i32 {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    i32::try_from((date - epoch).num_days()).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_instants_are_strict() {
        assert!(parse_date("2022-02-28").is_ok());
        assert_eq!(parse_date("28/02/2022").expect_err("format").rule, "date.format");
        assert_eq!(parse_date("1850-01-01").expect_err("range").rule, "date.range");
        let now = Utc::now();
        assert!(parse_instant("2022-02-28T10:00:00+01:00", now).is_ok());
        assert_eq!(parse_instant("2022-02-28", now).expect_err("format").rule, "instant.format");
        assert_eq!(parse_instant("2999-01-01T00:00:00Z", now).expect_err("future").rule, "instant.future");
    }
}
