//! Property tests over what arrives in query strings: TraceQL, times, durations and trace
//! ids. Each gets a value or an error, never a panic. `PROPTEST_CASES` sets how many cases
//! each runs (256 by default); `benches/fuzz.sh` runs each for minutes.

use proptest::prelude::*;

use crate::params::{Window, parse_duration, parse_time};

/// TraceQL-like text: its words and signs in any order, plus anything at all.
fn traceql() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        Just("{".to_string()),
        Just("}".to_string()),
        Just("(".to_string()),
        Just(")".to_string()),
        Just("&&".to_string()),
        Just("||".to_string()),
        Just("=".to_string()),
        Just("!=".to_string()),
        Just("=~".to_string()),
        Just(">=".to_string()),
        Just("<".to_string()),
        Just("\"".to_string()),
        Just("resource.service.name".to_string()),
        Just("span.http.status_code".to_string()),
        Just(".retry".to_string()),
        Just("name".to_string()),
        Just("status".to_string()),
        Just("error".to_string()),
        Just("duration".to_string()),
        Just("kind".to_string()),
        Just("server".to_string()),
        Just("traceDuration".to_string()),
        Just("nil".to_string()),
        Just("true".to_string()),
        "[0-9]{1,25}(\\.[0-9]{1,5})?(ns|us|ms|s|m|h)?",
        "\"[^\"]{0,8}\"",
        "[a-z._]{1,10}",
    ];
    prop_oneof![
        proptest::collection::vec(word, 0..16).prop_map(|words| words.join(" ")),
        any::<String>(),
    ]
}

proptest! {
    #[test]
    fn traceql_parses_or_is_refused(query in traceql()) {
        let _ = crate::traceql::parse(&query);
    }

    #[test]
    fn times_parse_or_are_refused(text in prop_oneof![
        "-?[0-9]{1,22}",
        "[0-9]{1,6}-[0-9]{1,3}-[0-9]{1,3}T[0-9]{1,3}:[0-9]{1,3}:[0-9]{1,3}(\\.[0-9]{1,12})?(Z|[+-][0-9]{2}:[0-9]{2})",
        any::<String>(),
    ], other in any::<Option<String>>(), now in any::<i64>()) {
        let _ = parse_time("from", &text);
        if let Ok(window) = Window::parse(Some(&text), other.as_deref(), now) {
            prop_assert!(window.from_ns < window.to_ns);
        }
        let _ = Window::parse(other.as_deref(), Some(&text), now);
    }

    #[test]
    fn durations_parse_or_are_refused(text in prop_oneof![
        "[0-9.]{0,30}(ns|us|µs|ms|s|m|h|d)?",
        any::<String>(),
    ]) {
        if let Ok(ns) = parse_duration("minDuration", &text) {
            prop_assert!(ns >= 0);
        }
    }

    #[test]
    fn trace_ids_are_normalized_or_refused(text in prop_oneof![
        "[0-9a-fA-F]{0,40}",
        any::<String>(),
    ]) {
        if let Some(id) = crate::traces::normalize_trace_id(&text) {
            prop_assert_eq!(id.len(), 32);
            prop_assert!(id.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        }
    }
}
