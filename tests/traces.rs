//! Trace look-ups over a replayed recording: a trace by id has exactly its recorded spans,
//! and a search finds exactly the traces with a matching span, each summed up correctly.

use std::collections::BTreeMap;

use crate::common::Server;
use crate::common::requests::hex;
use crate::common::samples::{attribute, recorded_spans, sample};
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::Value;

const ERROR: i32 = 2;

/// Whether a span (of the named service) matches a search.
type SpanMatches = dyn Fn(&str, &Span) -> bool;

/// The recorded traces of the `full` scenario, by trace id: (service, span) pairs.
fn recorded_traces() -> BTreeMap<String, Vec<(String, Span)>> {
    let file = sample("full");
    let mut traces: BTreeMap<String, Vec<(String, Span)>> = BTreeMap::new();
    for (service, span) in recorded_spans(&file) {
        traces
            .entry(hex(&span.trace_id))
            .or_default()
            .push((service, span));
    }
    traces
}

async fn get(server: &Server, path_and_query: &str) -> (u16, Value) {
    let response = reqwest::get(format!("http://{}{path_and_query}", server.http))
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// A window of an hour either side of now, in unix milliseconds: the replay starts now.
fn around_now() -> String {
    let now = chrono::Utc::now().timestamp_millis();
    format!("from={}&to={}", now - 3_600_000, now + 3_600_000)
}

async fn replayed_server(dir: &std::path::Path) -> Server {
    let server = Server::start(&dir.join("data"), &[]);
    let file = sample("full");
    let out = server.replay(&file);
    assert!(out.contains(" 0 rejected"), "{out}");
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_by_id_has_exactly_its_spans() {
    let dir = tempfile::tempdir().unwrap();
    let server = replayed_server(dir.path()).await;
    let traces = recorded_traces();
    // The biggest trace, and one whose consumer links to messages of other traces.
    let (biggest, _) = traces.iter().max_by_key(|(_, spans)| spans.len()).unwrap();
    let (linked, _) = traces
        .iter()
        .find(|(_, spans)| spans.iter().any(|(_, s)| !s.links.is_empty()))
        .unwrap();
    for trace_id in [biggest, linked] {
        let (status, body) = get(&server, &format!("/api/v1/traces/{trace_id}")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["trace_id"], trace_id.as_str());
        let got: BTreeMap<String, &Value> = body["spans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["span_id"].as_str().unwrap().to_string(), s))
            .collect();
        let recorded = &traces[trace_id];
        assert_eq!(got.len(), recorded.len(), "every span once");
        for (service, span) in recorded {
            let stored = got[&hex(&span.span_id)];
            assert_eq!(stored["service_name"], service.as_str());
            assert_eq!(stored["span_name"], span.name.as_str());
            let parent = (!span.parent_span_id.is_empty()).then(|| hex(&span.parent_span_id));
            assert_eq!(stored["parent_span_id"].as_str(), parent.as_deref());
            assert_eq!(
                stored["duration_ns"].as_i64().unwrap() as u64,
                span.end_time_unix_nano - span.start_time_unix_nano
            );
            assert_eq!(
                stored["status_code"] == "ERROR",
                span.status.as_ref().is_some_and(|s| s.code == ERROR)
            );
            if let Some(route) = attribute(span, "http.route") {
                assert_eq!(stored["attributes"]["http.route"], route);
            }
            let links: Vec<(String, String)> = stored["links"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| {
                    let id = |k: &str| l[k].as_str().unwrap().to_string();
                    (id("trace_id"), id("span_id"))
                })
                .collect();
            let recorded_links: Vec<(String, String)> = span
                .links
                .iter()
                .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                .collect();
            assert_eq!(links, recorded_links);
        }
        // Typed attributes: a status code is a number, as the SDK sent it.
        let status_codes: Vec<&Value> = got
            .values()
            .filter_map(|s| s["attributes"].get("http.response.status_code"))
            .collect();
        assert!(status_codes.iter().all(|v| v.is_i64()), "{status_codes:?}");
    }

    let (status, body) = get(&server, &format!("/api/v1/traces/{}", "ab".repeat(16))).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = get(&server, "/api/v1/traces/not-a-trace").await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("hex"), "{body}");
}

/// What a search must answer, worked out from the recording: the traces with a span for
/// which `matches` holds, each with (root service, root operation, spans, errors, duration).
fn expected(
    traces: &BTreeMap<String, Vec<(String, Span)>>,
    matches: impl Fn(&str, &Span) -> bool,
) -> BTreeMap<String, (String, String, u64, u64, u64)> {
    traces
        .iter()
        .filter(|(_, spans)| spans.iter().any(|(service, span)| matches(service, span)))
        .map(|(id, spans)| {
            let (root_service, root) = spans
                .iter()
                .find(|(_, s)| s.parent_span_id.is_empty())
                .unwrap();
            let errors = spans
                .iter()
                .filter(|(_, s)| s.status.as_ref().is_some_and(|s| s.code == ERROR))
                .count() as u64;
            let start = spans
                .iter()
                .map(|(_, s)| s.start_time_unix_nano)
                .min()
                .unwrap();
            let end = spans
                .iter()
                .map(|(_, s)| s.end_time_unix_nano)
                .max()
                .unwrap();
            let summary = (
                root_service.clone(),
                root.name.clone(),
                spans.len() as u64,
                errors,
                end - start,
            );
            (id.clone(), summary)
        })
        .collect()
}

fn answered(body: &Value) -> BTreeMap<String, (String, String, u64, u64, u64)> {
    body["traces"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|t| {
            let text = |k: &str| t[k].as_str().unwrap().to_string();
            let number = |k: &str| t[k].as_u64().unwrap();
            (
                text("trace_id"),
                (
                    text("root_service"),
                    text("root_operation"),
                    number("span_count"),
                    number("error_count"),
                    number("duration_ns"),
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_finds_the_traces_with_a_matching_span() {
    let dir = tempfile::tempdir().unwrap();
    let server = replayed_server(dir.path()).await;
    let traces = recorded_traces();
    let window = around_now();
    let failed = |span: &Span| span.status.as_ref().is_some_and(|s| s.code == ERROR);
    let duration = |span: &Span| span.end_time_unix_nano - span.start_time_unix_nano;
    // A correlation id carried as an attribute: the user of some checkout.
    let user = traces
        .values()
        .flatten()
        .find_map(|(_, s)| attribute(s, "enduser.id"))
        .unwrap()
        .to_string();

    let searches: Vec<(String, Box<SpanMatches>)> = vec![
        (
            "service=order-service&operation=POST%20%2Fv2%2Forders".into(),
            Box::new(|service, span| service == "order-service" && span.name == "POST /v2/orders"),
        ),
        ("error=true".into(), Box::new(move |_, span| failed(span))),
        (
            "service=payment-service&min_duration=100ms".into(),
            Box::new(move |service, span| {
                service == "payment-service" && duration(span) >= 100_000_000
            }),
        ),
        (
            "service=user-service&max_duration=3ms&error=false".into(),
            Box::new(move |service, span| {
                service == "user-service" && duration(span) <= 3_000_000 && !failed(span)
            }),
        ),
        (
            format!("attr=enduser.id:{user}"),
            Box::new(move |_, span| attribute(span, "enduser.id") == Some(user.as_str())),
        ),
    ];
    for (query, matches) in &searches {
        let want = expected(&traces, matches);
        assert!(!want.is_empty(), "{query} should match something");
        let (status, body) = get(
            &server,
            &format!("/api/v1/traces?{query}&{window}&limit=1000"),
        )
        .await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(answered(&body), want, "{query}");
    }

    // The limit keeps the newest; RFC 3339 works as well as milliseconds.
    let now = chrono::Utc::now();
    let from = (now - chrono::Duration::hours(1)).to_rfc3339();
    let to = (now + chrono::Duration::hours(1)).to_rfc3339();
    let query = format!(
        "/api/v1/traces?error=true&limit=2&from={}&to={}",
        urlencode(&from),
        urlencode(&to)
    );
    let (status, body) = get(&server, &query).await;
    assert_eq!(status, 200, "{body}");
    let limited = answered(&body);
    let all = expected(&traces, |_, span| failed(span));
    assert!(limited.iter().all(|(id, summary)| all[id] == *summary));
    // The two traces whose latest failed span started last.
    let mut newest: Vec<(u64, &String)> = traces
        .iter()
        .filter_map(|(id, spans)| {
            let latest = spans
                .iter()
                .filter(|(_, s)| failed(s))
                .map(|(_, s)| s.start_time_unix_nano)
                .max()?;
            Some((latest, id))
        })
        .collect();
    newest.sort();
    let newest: Vec<&String> = newest.iter().rev().take(2).map(|(_, id)| *id).collect();
    assert_eq!(limited.keys().collect::<Vec<_>>().len(), 2);
    for id in newest {
        assert!(limited.contains_key(id), "{id} is among the newest");
    }

    // Outside the window: nothing. The default window is the last 15 minutes, and the
    // replay began at about now, so its first spans are in it.
    let (_, body) = get(&server, "/api/v1/traces?from=0&to=1000").await;
    assert_eq!(answered(&body).len(), 0);
    let (_, body) = get(&server, "/api/v1/traces?limit=1000").await;
    assert!(!answered(&body).is_empty(), "{body}");

    for bad in [
        "limit=0",
        "min_duration=fast",
        "attr=nocolon",
        "from=yesterday",
        "colour=red",
    ] {
        let (status, body) = get(&server, &format!("/api/v1/traces?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"].is_string(), "{bad}: {body}");
    }
}

fn urlencode(text: &str) -> String {
    text.replace('+', "%2B").replace(':', "%3A")
}
