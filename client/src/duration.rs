//! Human durations: "500ms", "10s", "1.5s", "2m", "1h", and sums like "1m30s".
//!
//! A dozen lines of parser instead of a dependency: the accepted syntax is
//! tiny, and owning it keeps the error messages in our words.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationParseError {
    #[error("empty duration")]
    Empty,
    #[error("duration {0:?}: expected a number followed by a unit (ms, s, m, h), e.g. 10s or 500ms")]
    Malformed(String),
    #[error("duration {0:?}: unknown unit {1:?} (use ms, s, m or h)")]
    UnknownUnit(String, String),
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

pub fn parse_duration(input: &str) -> Result<Duration, DurationParseError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationParseError::Empty);
    }
    let malformed = || DurationParseError::Malformed(input.to_string());
    let overflow = || DurationParseError::Overflow(input.to_string());
    let mut total_ms: u64 = 0;
    let mut rest = s;
    // Each pass consumes at least one digit, so the loop ends.
    while !rest.is_empty() {
        let (whole, frac, after) = split_number(rest).ok_or_else(malformed)?;
        let unit_len = after.find(|c: char| c.is_ascii_digit()).unwrap_or(after.len());
        let unit = &after[..unit_len];
        rest = &after[unit_len..];
        let per_unit_ms: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "" => return Err(malformed()),
            other => return Err(DurationParseError::UnknownUnit(input.to_string(), other.to_string())),
        };
        let whole: u64 = whole.parse().map_err(|_| overflow())?;
        let mut part = whole.checked_mul(per_unit_ms).ok_or_else(overflow)?;
        // Seven fraction digits resolve even an hour below a millisecond
        // and keep the product far from overflow.
        let frac = &frac[..frac.len().min(7)];
        if !frac.is_empty() {
            let digits: u64 = frac.parse().map_err(|_| malformed())?;
            part = part.saturating_add(digits * per_unit_ms / 10u64.pow(frac.len() as u32));
        }
        total_ms = total_ms.checked_add(part).ok_or_else(overflow)?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Splits a leading `123` or `1.25` into whole digits, fraction digits
/// and the rest; `None` without a leading digit or with a bare dot.
fn split_number(s: &str) -> Option<(&str, &str, &str)> {
    let whole_len = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if whole_len == 0 {
        return None;
    }
    let (whole, rest) = s.split_at(whole_len);
    let Some(after_dot) = rest.strip_prefix('.') else { return Some((whole, "", rest)) };
    let frac_len = after_dot.find(|c: char| !c.is_ascii_digit()).unwrap_or(after_dot.len());
    if frac_len == 0 {
        return None;
    }
    Some((whole, &after_dot[..frac_len], &after_dot[frac_len..]))
}

/// Compact rendering for messages: "500ms", "10s", "1.5s".
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1_000 {
        format!("{ms}ms")
    } else if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration(" 0s ").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("0.25m").unwrap(), Duration::from_secs(15));
        assert_eq!(parse_duration("2.0001s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.123456789123h").unwrap(), Duration::from_millis(4_044_444));
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(parse_duration("").unwrap_err(), DurationParseError::Empty);
        assert!(matches!(parse_duration("10").unwrap_err(), DurationParseError::Malformed(_)));
        assert!(matches!(parse_duration("s").unwrap_err(), DurationParseError::Malformed(_)));
        assert!(matches!(parse_duration("-1s").unwrap_err(), DurationParseError::Malformed(_)));
        assert!(matches!(parse_duration("1.s").unwrap_err(), DurationParseError::Malformed(_)));
        assert!(matches!(parse_duration(".5s").unwrap_err(), DurationParseError::Malformed(_)));
        assert!(matches!(parse_duration("3d").unwrap_err(), DurationParseError::UnknownUnit(_, u) if u == "d"));
        assert!(matches!(parse_duration("99999999999999999999s").unwrap_err(), DurationParseError::Overflow(_)));
        assert!(matches!(parse_duration("18446744073709552s").unwrap_err(), DurationParseError::Overflow(_)));
    }

    #[test]
    fn formats_compactly() {
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_secs(10)), "10s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.500s");
    }
}
