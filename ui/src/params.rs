//! Query parameters the JSON APIs share: time windows and durations.

use chrono::{DateTime, SecondsFormat, Utc};

/// The window an API looks at when the request names none: the last 15 minutes.
pub const DEFAULT_WINDOW_NS: i64 = 15 * 60 * 1_000_000_000;

/// A half-open time window [from, to) in nanoseconds since the epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub from_ns: i64,
    pub to_ns: i64,
}

impl Window {
    /// `from` and `to` as RFC 3339 or unix milliseconds; `to` defaults to now and `from` to
    /// 15 minutes before `to`.
    pub fn parse(from: Option<&str>, to: Option<&str>, now_ns: i64) -> Result<Self, String> {
        let to_ns = match to {
            Some(text) => parse_time("to", text)?,
            None => now_ns,
        };
        let from_ns = match from {
            Some(text) => parse_time("from", text)?,
            None => to_ns.saturating_sub(DEFAULT_WINDOW_NS),
        };
        if from_ns >= to_ns {
            return Err(format!(
                "from ({}) must be before to ({})",
                rfc3339(from_ns),
                rfc3339(to_ns)
            ));
        }
        Ok(Self { from_ns, to_ns })
    }
}

/// RFC 3339 (`2026-11-21T13:05:00Z`, any offset, fractions to the nanosecond) or unix
/// milliseconds (`1795000000000`).
pub fn parse_time(name: &str, text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(millis) = text.parse::<i64>() {
        return millis
            .checked_mul(1_000_000)
            .ok_or_else(|| format!("{name}={text} is out of range"));
    }
    let time = DateTime::parse_from_rfc3339(text).map_err(|_| {
        format!("{name}={text} is neither RFC 3339 (2026-11-21T13:05:00Z) nor unix milliseconds")
    })?;
    time.timestamp_nanos_opt()
        .ok_or_else(|| format!("{name}={text} is out of range"))
}

/// A duration such as `250ms`, `1.5s`, `2m`, `1h`, `300us` or `40ns`, as Go and Jaeger write
/// them; a bare number is milliseconds.
pub fn parse_duration(name: &str, text: &str) -> Result<i64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit {
        "" | "ms" => 1e6,
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => {
            return Err(format!(
                "{name}={text} has an unknown unit: use ns, us, ms, s, m or h"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{name}={text} is not a duration such as 250ms or 1.5s"))?;
    let ns = value * scale;
    if !ns.is_finite() || ns >= i64::MAX as f64 {
        return Err(format!("{name}={text} is out of range"));
    }
    Ok(ns.round() as i64)
}

/// Nanoseconds since the epoch as RFC 3339 in UTC, with as many fraction digits as needed.
pub fn rfc3339(ns: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(ns).to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

pub fn now_ns() -> i64 {
    Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// Query parameters as axum hands them to a handler, for tests.
#[cfg(test)]
pub(crate) fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_000_000_000_000_000;

    #[test]
    fn times_are_rfc3339_or_unix_millis() {
        assert_eq!(parse_time("from", "1795000000000"), Ok(NOW));
        assert_eq!(parse_time("from", "2026-11-18T11:06:40Z"), Ok(NOW));
        assert_eq!(
            parse_time("from", "2026-11-18T12:06:40.000000001+01:00"),
            Ok(NOW + 1)
        );
        assert!(
            parse_time("from", "yesterday")
                .unwrap_err()
                .contains("RFC 3339")
        );
        assert!(parse_time("from", "99999999999999999").is_err());
    }

    #[test]
    fn the_default_window_is_the_last_15_minutes() {
        let window = Window::parse(None, None, NOW).unwrap();
        assert_eq!(window.to_ns, NOW);
        assert_eq!(window.to_ns - window.from_ns, DEFAULT_WINDOW_NS);
        let window = Window::parse(None, Some("1795000000000"), NOW + 5).unwrap();
        assert_eq!(window.to_ns, NOW);
        assert!(
            Window::parse(Some("1795000000000"), Some("1795000000000"), NOW)
                .unwrap_err()
                .contains("must be before")
        );
    }

    #[test]
    fn durations_take_go_units_and_bare_milliseconds() {
        assert_eq!(parse_duration("d", "250ms"), Ok(250_000_000));
        assert_eq!(parse_duration("d", "1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_duration("d", "2m"), Ok(120_000_000_000));
        assert_eq!(parse_duration("d", "300us"), Ok(300_000));
        assert_eq!(parse_duration("d", "40ns"), Ok(40));
        assert_eq!(parse_duration("d", "12"), Ok(12_000_000));
        assert!(parse_duration("d", "5 parsecs").is_err());
        assert!(parse_duration("d", "ms").is_err());
        assert!(parse_duration("d", "1e300h").is_err());
    }

    #[test]
    fn rfc3339_keeps_nanoseconds() {
        assert_eq!(rfc3339(NOW + 1), "2026-11-18T11:06:40.000000001Z");
        assert_eq!(rfc3339(NOW), "2026-11-18T11:06:40Z");
    }
}
