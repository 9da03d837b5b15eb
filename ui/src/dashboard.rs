//! What every dashboard page shares: the time range and refresh picked in the header,
//! links that keep them, numbers written for people, and pages as HTML responses.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use callwatch_query::graph::Window as GraphWindow;
use callwatch_query::stats::{Health, Percentiles, Summary};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::params::{Window, now_ns, rfc3339};

/// The ranges the header offers, ending now.
const RANGES: [(&str, i64); 5] = [
    ("5m", 5 * MINUTE_NS),
    ("15m", 15 * MINUTE_NS),
    ("1h", 60 * MINUTE_NS),
    ("6h", 360 * MINUTE_NS),
    ("24h", 1440 * MINUTE_NS),
];
const MINUTE_NS: i64 = 60_000_000_000;
const DEFAULT_RANGE: &str = "15m";
/// Auto-refresh choices, in seconds (0: off).
const REFRESHES: [(&str, u32); 4] = [("off", 0), ("10s", 10), ("30s", 30), ("1m", 60)];

/// The parameters the header owns; a page's own parameters are everything else.
const FRAME_PARAMS: [&str; 4] = ["range", "from", "to", "refresh"];

/// Everything a URL component may not hold as is.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

pub fn encode(text: &str) -> String {
    utf8_percent_encode(text, COMPONENT).to_string()
}

/// A link of the header: a range, a refresh or a page.
pub struct Choice {
    pub label: &'static str,
    pub href: String,
    pub current: bool,
}

/// The page's frame: title, navigation, the window and how often the page refreshes.
pub struct Frame {
    pub title: String,
    pub window: Window,
    pub refresh_s: u32,
    /// Path and query of this page, fetched again on refresh.
    pub here: String,
    pub path: String,
    /// The page's own parameters, kept by the range form.
    pub page_params: Vec<(String, String)>,
    /// `range=…&refresh=…` (or `from=…&to=…&refresh=…`), added to every link.
    keep: String,
    pub nav: Vec<Choice>,
    pub ranges: Vec<Choice>,
    pub refreshes: Vec<Choice>,
    pub custom: bool,
    pub from_text: String,
    pub to_text: String,
    pub range_text: String,
    /// Show the log out button: the page was shown to a logged-in reader.
    pub logout: bool,
}

const NAV: [(&str, &str); 5] = [
    ("Overview", "/"),
    ("Service map", "/graph"),
    ("Breakers", "/breakers"),
    ("Traces", "/traces"),
    ("SQL", "/sql"),
];

impl Frame {
    /// The frame of the page at `path` with query `params`. `default_refresh` is the
    /// refresh when the query names none (pages that look at one thing do not refresh).
    pub fn new(
        title: impl Into<String>,
        path: &str,
        params: &[(String, String)],
        default_refresh: &str,
    ) -> Result<Self, String> {
        let param = |name: &str| param(params, name);
        let now = now_ns();
        let (window, range, custom) = match (param("from"), param("to")) {
            (None, None) => {
                let name = param("range").unwrap_or(DEFAULT_RANGE);
                let Some((name, span)) = RANGES.iter().find(|(n, _)| *n == name) else {
                    return Err(format!("range={name}: use 5m, 15m, 1h, 6h or 24h"));
                };
                let window = Window {
                    from_ns: now - span,
                    to_ns: now,
                };
                (window, format!("range={name}"), false)
            }
            (from, to) => {
                let window = Window::parse(from, to, now)?;
                let range = format!(
                    "from={}&to={}",
                    encode(&rfc3339(window.from_ns)),
                    encode(&rfc3339(window.to_ns))
                );
                (window, range, true)
            }
        };
        let refresh_name = param("refresh").unwrap_or(default_refresh);
        let Some(&(refresh_name, refresh_s)) = REFRESHES.iter().find(|(n, _)| *n == refresh_name)
        else {
            return Err(format!("refresh={refresh_name}: use off, 10s, 30s or 1m"));
        };
        let page_params: Vec<(String, String)> = params
            .iter()
            .filter(|(key, _)| !FRAME_PARAMS.contains(&key.as_str()))
            .cloned()
            .collect();
        let own = query_of(&page_params);
        let with = |extra: &str| {
            let mut query = own.clone();
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str(extra);
            format!("{path}?{query}")
        };
        let keep = format!("{range}&refresh={refresh_name}");
        let ranges = RANGES
            .iter()
            .map(|(name, _)| Choice {
                label: name,
                href: with(&format!("range={name}&refresh={refresh_name}")),
                current: !custom && range == format!("range={name}"),
            })
            .collect();
        let refreshes = REFRESHES
            .iter()
            .map(|(name, _)| Choice {
                label: name,
                href: with(&format!("{range}&refresh={name}")),
                current: *name == refresh_name,
            })
            .collect();
        let nav = NAV
            .iter()
            .map(|(label, target)| Choice {
                label,
                href: format!("{target}?{keep}"),
                current: *target == path || (*target != "/" && path.starts_with(target)),
            })
            .collect();
        Ok(Self {
            title: title.into(),
            window,
            refresh_s,
            here: with(&keep),
            path: path.to_string(),
            page_params,
            nav,
            ranges,
            refreshes,
            custom,
            from_text: rfc3339(window.from_ns),
            to_text: rfc3339(window.to_ns),
            range_text: format!(
                "{} – {} UTC",
                clock(window.from_ns, window.to_ns - window.from_ns),
                clock(window.to_ns, window.to_ns - window.from_ns)
            ),
            keep,
            logout: false,
        })
    }

    /// With the log out button when `auth` asks for logging in.
    pub fn with_logout(mut self, auth: &crate::WebAuth) -> Self {
        self.logout = auth.enabled();
        self
    }

    /// A link to `path` that keeps the range and refresh.
    pub fn link(&self, path: &str) -> String {
        self.link_with(path, &[])
    }

    /// A link to `path` with `params`, keeping the range and refresh.
    pub fn link_with(&self, path: &str, params: &[(&str, &str)]) -> String {
        let mut query: String = params
            .iter()
            .map(|(key, value)| format!("{key}={}&", encode(value)))
            .collect();
        query.push_str(&self.keep);
        format!("{path}?{query}")
    }

    pub fn service_link(&self, name: &str) -> String {
        self.link(&format!("/services/{}", encode(name)))
    }

    pub fn edge_link(&self, source: &str, target: &str) -> String {
        self.link_with("/edges", &[("source", source), ("target", target)])
    }

    pub fn trace_link(&self, trace_id: &str) -> String {
        format!("/traces/{}", encode(trace_id))
    }

    pub fn graph_window(&self) -> GraphWindow {
        GraphWindow {
            from_ns: self.window.from_ns,
            to_ns: self.window.to_ns,
        }
    }
}

/// The last value of query parameter `name`.
pub fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn query_of(params: &[(String, String)]) -> String {
    params
        .iter()
        .map(|(key, value)| format!("{}={}", encode(key), encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A time of day for axis labels and the header: seconds only when the span is short.
pub fn clock(ns: i64, span_ns: i64) -> String {
    let time = chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(ns);
    if span_ns > 2 * 86_400_000_000_000 {
        time.format("%m-%d %H:%M").to_string()
    } else if span_ns > 30 * MINUTE_NS {
        time.format("%H:%M").to_string()
    } else {
        time.format("%H:%M:%S").to_string()
    }
}

/// A date and time to the millisecond, in UTC.
pub fn datetime(ns: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_nanos(ns)
        .format("%Y-%m-%d %H:%M:%S%.3f")
        .to_string()
}

/// Milliseconds as people read them: `0.42 ms`, `12.3 ms`, `1.25 s`.
pub fn ms(value: Option<f64>) -> String {
    match value {
        None => "–".into(),
        Some(ms) if ms >= 1000.0 => format!("{} s", significant(ms / 1000.0)),
        Some(ms) => format!("{} ms", significant(ms)),
    }
}

pub fn nanos_as_ms(ns: i64) -> String {
    ms(Some(ns as f64 / 1e6))
}

/// Three significant digits, without a trailing `.0`.
pub fn significant(value: f64) -> String {
    if value == 0.0 || !value.is_finite() {
        return "0".into();
    }
    let digits = (2 - value.abs().log10().floor() as i32).clamp(0, 6) as usize;
    let text = format!("{value:.digits$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

pub fn rate(per_s: f64) -> String {
    if per_s > 0.0 && per_s < 0.01 {
        "<0.01/s".into()
    } else {
        format!("{}/s", significant(per_s))
    }
}

pub fn percent(ratio: f64) -> String {
    if ratio > 0.0 && ratio < 0.0001 {
        "<0.01 %".into()
    } else {
        format!("{} %", significant(ratio * 100.0))
    }
}

pub fn health_name(health: Health) -> &'static str {
    match health {
        Health::Idle => "idle",
        Health::Healthy => "healthy",
        Health::Degraded => "degraded",
        Health::Failing => "failing",
    }
}

/// A [`Summary`] written for a table row.
pub struct Stats {
    pub calls: u64,
    pub rate: String,
    /// The last minute's rate, where the graph computed it.
    pub rate_now: String,
    pub errors: u64,
    pub error_pct: String,
    pub p50: String,
    pub p95: String,
    pub p99: String,
    pub server_p50: String,
    pub server_p95: String,
    pub server_p99: String,
    pub queue_p99: String,
    pub retries: u64,
    pub retry_amplification: String,
    pub timeouts: u64,
    pub health: &'static str,
}

impl Stats {
    pub fn of(summary: &Summary) -> Self {
        let p = |p: Option<Percentiles>, pick: fn(&Percentiles) -> f64| ms(p.as_ref().map(pick));
        Self {
            calls: summary.calls,
            rate: rate(summary.rate_per_s),
            rate_now: summary.rate_last_minute_per_s.map(rate).unwrap_or_default(),
            errors: summary.errors,
            error_pct: percent(summary.error_rate),
            p50: p(summary.latency_ms, |p| p.p50),
            p95: p(summary.latency_ms, |p| p.p95),
            p99: p(summary.latency_ms, |p| p.p99),
            server_p50: p(summary.server_latency_ms, |p| p.p50),
            server_p95: p(summary.server_latency_ms, |p| p.p95),
            server_p99: p(summary.server_latency_ms, |p| p.p99),
            queue_p99: p(summary.queue_ms, |p| p.p99),
            retries: summary.retries,
            retry_amplification: significant(summary.retry_amplification),
            timeouts: summary.timeouts,
            health: health_name(summary.health),
        }
    }
}

/// A rendered page, or the error of rendering it.
pub fn html(page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => Html(body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the page could not be rendered: {e}"),
        )
            .into_response(),
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    frame: Frame,
    message: &'a str,
}

/// A page that says what went wrong, in the dashboard's frame.
pub fn error_page(status: StatusCode, path: &str, message: &str) -> Response {
    let frame = Frame::new("Error", path, &[], "off").expect("the default frame is valid");
    let mut response = html(&ErrorPage { frame, message });
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::pairs as params;

    #[test]
    fn links_keep_the_range_and_refresh() {
        let frame = Frame::new(
            "Edge",
            "/edges",
            &params(&[("source", "a b"), ("target", "<x>"), ("range", "1h")]),
            "30s",
        )
        .unwrap();
        assert_eq!(frame.window.to_ns - frame.window.from_ns, 60 * MINUTE_NS);
        assert_eq!(frame.link("/graph"), "/graph?range=1h&refresh=30s");
        assert_eq!(
            frame.here,
            "/edges?source=a%20b&target=%3Cx%3E&range=1h&refresh=30s"
        );
        assert_eq!(
            frame.service_link("a/b?"),
            "/services/a%2Fb%3F?range=1h&refresh=30s"
        );
        assert!(frame.ranges.iter().any(|r| r.current && r.label == "1h"));
        assert!(
            !frame
                .nav
                .iter()
                .any(|n| n.current && n.label == "Service map")
        );
    }

    #[test]
    fn a_custom_range_and_bad_values() {
        let frame = Frame::new(
            "Overview",
            "/",
            &params(&[
                ("from", "2026-11-21T08:00:00Z"),
                ("to", "2026-11-21T09:00:00Z"),
                ("refresh", "off"),
            ]),
            "30s",
        )
        .unwrap();
        assert!(frame.custom);
        assert_eq!(frame.refresh_s, 0);
        assert_eq!(
            frame.link("/breakers"),
            "/breakers?from=2026-11-21T08%3A00%3A00Z&to=2026-11-21T09%3A00%3A00Z&refresh=off"
        );
        assert!(Frame::new("x", "/", &params(&[("range", "2y")]), "off").is_err());
        assert!(Frame::new("x", "/", &params(&[("refresh", "1ms")]), "off").is_err());
        assert!(Frame::new("x", "/", &params(&[("from", "soon")]), "off").is_err());
    }

    #[test]
    fn numbers_for_people() {
        assert_eq!(ms(Some(0.4213)), "0.421 ms");
        assert_eq!(ms(Some(12.34)), "12.3 ms");
        assert_eq!(ms(Some(1250.0)), "1.25 s");
        assert_eq!(ms(None), "–");
        assert_eq!(rate(0.001), "<0.01/s");
        assert_eq!(rate(120.0), "120/s");
        assert_eq!(percent(0.005), "0.5 %");
        assert_eq!(percent(0.0), "0 %");
    }
}
