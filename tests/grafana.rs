//! Grafana's Jaeger and Tempo data sources read callwatch unchanged: every endpoint they
//! call answers in Jaeger's or Tempo's documented shape, field by field, and says exactly
//! what the replayed `full` recording holds.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use callwatch_collector::decode_json_request;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span, TracesData};
use prost::Message;
use serde_json::{Value, json};

use crate::common::Server;
use crate::common::requests::{hex, url_component};
use crate::common::samples::{recorded_requests, recorded_spans, sample};

const SPAN_KINDS: [&str; 6] = ["", "internal", "server", "client", "producer", "consumer"];
const ERROR: i32 = 2;

async fn get(server: &Server, path: &str, accept: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("http://{}{path}", server.http))
        .header("accept", accept)
        .send()
        .await
        .unwrap()
}

async fn get_json(server: &Server, path: &str) -> (u16, Value) {
    let response = get(server, path, "application/json").await;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    let json = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path}: {body}"));
    (status, json)
}

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    keys
}

/// Jaeger's envelope: exactly its five fields, no errors; the data.
fn data(body: &Value) -> &Value {
    assert_eq!(
        keys(body),
        ["data", "errors", "limit", "offset", "total"],
        "{body}"
    );
    assert_eq!(body["errors"], Value::Null, "{body}");
    &body["data"]
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// Unix time `seconds` from now in the unit given (1 = seconds, 1e6 = microseconds...).
fn from_now(seconds: i64, per_second: i64) -> i64 {
    (chrono::Utc::now().timestamp() + seconds) * per_second
}

async fn replayed_server(dir: &std::path::Path) -> Server {
    let server = Server::start(&dir.join("data"), &["--pairing-wait", "1s"]);
    let out = server.replay(&sample("full"));
    assert!(out.contains(" 0 rejected"), "{out}");
    server
}

/// The recorded spans of each trace, by trace id.
fn recorded_traces() -> BTreeMap<String, Vec<(String, Span)>> {
    let mut traces: BTreeMap<String, Vec<(String, Span)>> = BTreeMap::new();
    for (service, span) in recorded_spans(&sample("full")) {
        traces
            .entry(hex(&span.trace_id))
            .or_default()
            .push((service, span));
    }
    traces
}

/// The trace whose consumer links to producers of other traces, for references.
fn linked_trace(traces: &BTreeMap<String, Vec<(String, Span)>>) -> String {
    traces
        .iter()
        .find(|(_, spans)| spans.iter().any(|(_, s)| !s.links.is_empty()))
        .map(|(id, _)| id.clone())
        .expect("the full scenario has a batch consumer")
}

#[tokio::test]
async fn grafana_s_jaeger_data_source_reads_callwatch() {
    let dir = tempfile::tempdir().unwrap();
    let server = replayed_server(dir.path()).await;
    let recorded = recorded_spans(&sample("full"));

    // Services: every service that sent spans.
    let (status, body) = get_json(&server, "/api/services").await;
    assert_eq!(status, 200);
    let services: BTreeSet<String> = recorded.iter().map(|(s, _)| s.clone()).collect();
    assert_eq!(
        strings(data(&body)),
        Vec::from_iter(services.iter().cloned())
    );
    assert_eq!(body["total"], services.len());

    // The operations of order-service, by name and with their kinds.
    let of_orders = || recorded.iter().filter(|(s, _)| s == "order-service");
    let names: BTreeSet<String> = of_orders().map(|(_, span)| span.name.clone()).collect();
    let (_, body) = get_json(&server, "/api/services/order-service/operations").await;
    assert_eq!(strings(data(&body)), Vec::from_iter(names));
    let operations: BTreeSet<(String, String)> = of_orders()
        .map(|(_, span)| (span.name.clone(), SPAN_KINDS[span.kind as usize].to_owned()))
        .collect();
    let (_, body) = get_json(&server, "/api/operations?service=order-service").await;
    let listed: Vec<(String, String)> = data(&body)
        .as_array()
        .unwrap()
        .iter()
        .map(|op| {
            assert_eq!(keys(op), ["name", "spanKind"]);
            (
                op["name"].as_str().unwrap().to_owned(),
                op["spanKind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(listed, Vec::from_iter(operations.iter().cloned()));
    let (_, body) = get_json(
        &server,
        "/api/operations?service=order-service&spanKind=client",
    )
    .await;
    let clients = operations
        .iter()
        .filter(|(_, kind)| kind == "client")
        .count();
    assert_eq!(data(&body).as_array().unwrap().len(), clients);
    assert!(clients > 0);
    let (status, body) = get_json(&server, "/api/operations").await;
    assert_eq!(status, 400);
    assert_eq!(body["errors"][0]["code"], 400, "{body}");

    // A trace by id: every span, its references, its process, its tags and logs.
    let traces = recorded_traces();
    let trace_id = linked_trace(&traces);
    let (status, body) = get_json(&server, &format!("/api/traces/{trace_id}")).await;
    assert_eq!(status, 200, "{body}");
    // Jaeger's envelope, with Tempo's OTLP `batches` beside it on this shared path.
    assert_eq!(
        keys(&body),
        ["batches", "data", "errors", "limit", "offset", "total"]
    );
    assert_eq!(body["errors"], Value::Null);
    check_jaeger_trace(&body["data"][0], &traces[&trace_id]);

    // A search: whole traces, each with a span of the service and operation searched.
    let (start, end) = (from_now(-3600, 1_000_000), from_now(3600, 1_000_000));
    let payment_calls: BTreeSet<&String> = traces
        .iter()
        .filter(|(_, spans)| {
            spans.iter().any(|(service, span)| {
                service == "payment-service"
                    && span.status.as_ref().is_some_and(|s| s.code == ERROR)
            })
        })
        .map(|(id, _)| id)
        .collect();
    let (status, body) = get_json(
        &server,
        &format!(
            "/api/traces?service=payment-service&tags=%7B%22error%22%3A%22true%22%7D\
             &start={start}&end={end}&limit=1000&lookback=custom"
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let found: BTreeSet<&str> = data(&body)
        .as_array()
        .unwrap()
        .iter()
        .map(|trace| {
            let id = trace["traceID"].as_str().unwrap();
            check_jaeger_trace(trace, &traces[id]);
            id
        })
        .collect();
    assert_eq!(found, payment_calls.iter().map(|s| s.as_str()).collect());
    assert!(!found.is_empty());
    let (status, body) = get_json(&server, "/api/traces?operation=x").await;
    assert_eq!((status, &body["errors"][0]["code"]), (400, &json!(400)));

    // Dependencies: the ground truth's edges, a sync and an async edge between the same
    // services being one.
    let truth: Value = serde_json::from_str(
        &std::fs::read_to_string(sample("full").with_extension("truth.json")).unwrap(),
    )
    .unwrap();
    let mut expected: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for edge in truth["edges"].as_array().unwrap() {
        let counts = expected
            .entry((
                edge["source"].as_str().unwrap().into(),
                edge["target"].as_str().unwrap().into(),
            ))
            .or_default();
        counts.0 += edge["calls"].as_u64().unwrap();
        counts.1 += edge["errors"].as_u64().unwrap();
    }
    let path = format!(
        "/api/dependencies?endTs={}&lookback=7200000",
        from_now(3600, 1000)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = get_json(&server, &path).await;
        let links: BTreeMap<(String, String), (u64, u64)> = data(&body)
            .as_array()
            .unwrap()
            .iter()
            .map(|link| {
                assert_eq!(keys(link), ["callCount", "child", "errorCount", "parent"]);
                let text = |k: &str| link[k].as_str().unwrap().to_owned();
                let count = |k: &str| link[k].as_u64().unwrap();
                (
                    (text("parent"), text("child")),
                    (count("callCount"), count("errorCount")),
                )
            })
            .collect();
        if links == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dependencies {links:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.stop();
}

/// A trace in Jaeger's shape holds exactly the recorded spans, each as Jaeger shows it.
fn check_jaeger_trace(trace: &Value, recorded: &[(String, Span)]) {
    assert_eq!(
        keys(trace),
        ["processes", "spans", "traceID", "warnings"],
        "{trace}"
    );
    let spans = trace["spans"].as_array().unwrap();
    assert_eq!(spans.len(), recorded.len());
    let by_id: BTreeMap<String, &(String, Span)> = recorded
        .iter()
        .map(|entry| (hex(&entry.1.span_id), entry))
        .collect();
    let first_start = recorded.iter().map(|(_, s)| s.start_time_unix_nano).min();
    let first_shown = spans.iter().map(|s| s["startTime"].as_i64().unwrap()).min();
    for shown in spans {
        assert_eq!(
            keys(shown),
            [
                "duration",
                "flags",
                "logs",
                "operationName",
                "processID",
                "references",
                "spanID",
                "startTime",
                "tags",
                "traceID",
                "warnings"
            ]
        );
        let (service, span) = by_id[shown["spanID"].as_str().unwrap()];
        assert_eq!(shown["traceID"], trace["traceID"]);
        assert_eq!(shown["operationName"], span.name.as_str());
        let duration_ns = span.end_time_unix_nano - span.start_time_unix_nano;
        assert_eq!(shown["duration"], duration_ns / 1000);
        // Microseconds since the trace began; the replay moved the whole trace in time.
        let offset = shown["startTime"].as_i64().unwrap() - first_shown.unwrap();
        let recorded_offset = (span.start_time_unix_nano - first_start.unwrap()) as i64 / 1000;
        assert!(
            (offset - recorded_offset).abs() <= 1,
            "{offset} {recorded_offset}"
        );

        let mut references = Vec::new();
        if !span.parent_span_id.is_empty() {
            references.push(json!({
                "refType": "CHILD_OF",
                "traceID": trace["traceID"],
                "spanID": hex(&span.parent_span_id),
            }));
        }
        for link in &span.links {
            references.push(json!({
                "refType": "FOLLOWS_FROM",
                "traceID": hex(&link.trace_id),
                "spanID": hex(&link.span_id),
            }));
        }
        assert_eq!(shown["references"], json!(references));

        let process = &trace["processes"][shown["processID"].as_str().unwrap()];
        assert_eq!(keys(process), ["serviceName", "tags"]);
        assert_eq!(process["serviceName"], service.as_str());

        let tags = shown["tags"].as_array().unwrap();
        let tag = |key: &str| tags.iter().find(|t| t["key"] == key);
        for t in tags {
            assert_eq!(keys(t), ["key", "type", "value"]);
            let kind = t["type"].as_str().unwrap();
            assert!(
                ["string", "bool", "int64", "float64", "binary"].contains(&kind),
                "{t}"
            );
        }
        assert_eq!(
            tag("span.kind").map(|t| t["value"].clone()),
            Some(json!(SPAN_KINDS[span.kind as usize]))
        );
        let failed = span.status.as_ref().is_some_and(|s| s.code == ERROR);
        assert_eq!(
            tag("error").map(|t| t["value"].clone()),
            failed.then_some(json!(true))
        );
        for attribute in &span.attributes {
            let shown = tag(&attribute.key).unwrap_or_else(|| panic!("{}", attribute.key));
            assert_eq!(shown["value"], jaeger_value(attribute), "{}", attribute.key);
        }
        let logs = shown["logs"].as_array().unwrap();
        assert_eq!(logs.len(), span.events.len());
        for (log, event) in logs.iter().zip(&span.events) {
            assert_eq!(keys(log), ["fields", "timestamp"]);
            assert_eq!(log["fields"][0]["key"], "event");
            assert_eq!(log["fields"][0]["value"], event.name.as_str());
        }
    }
}

fn jaeger_value(attribute: &KeyValue) -> Value {
    match attribute.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => json!(s),
        Some(any_value::Value::IntValue(i)) => json!(i),
        Some(any_value::Value::BoolValue(b)) => json!(b),
        Some(any_value::Value::DoubleValue(d)) => json!(d),
        other => panic!("the recording has no {other:?} attributes"),
    }
}

/// First start to last end, in nanoseconds.
fn trace_duration(spans: &[(String, Span)]) -> u64 {
    let first = spans.iter().map(|(_, s)| s.start_time_unix_nano).min();
    let last = spans.iter().map(|(_, s)| s.end_time_unix_nano).max();
    last.unwrap() - first.unwrap()
}

fn trace_ids(search: &Value) -> BTreeSet<&str> {
    search["traces"]
        .as_array()
        .unwrap_or_else(|| panic!("{search}"))
        .iter()
        .map(|t| t["traceID"].as_str().unwrap())
        .collect()
}

/// The spans of OTLP resource spans, times cleared: the replay moved them.
fn timeless_spans(resource_spans: &[ResourceSpans]) -> Vec<Span> {
    let mut spans: Vec<Span> = resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| ss.spans.iter().cloned())
        .map(|mut span| {
            span.start_time_unix_nano = 0;
            span.end_time_unix_nano = 0;
            for event in &mut span.events {
                event.time_unix_nano = 0;
            }
            span
        })
        .collect();
    spans.sort_by(|a, b| a.span_id.cmp(&b.span_id));
    spans
}

fn decode_resource_spans(json: &Value) -> Vec<ResourceSpans> {
    let request = json!({ "resourceSpans": json });
    decode_json_request(request.to_string().as_bytes())
        .unwrap()
        .resource_spans
}

/// Tempo's `TraceByIDResponse { Trace trace = 1; }`.
#[derive(Clone, PartialEq, Message)]
struct TraceByIdResponse {
    #[prost(message, optional, tag = "1")]
    trace: Option<TracesData>,
}

#[tokio::test]
async fn grafana_s_tempo_data_source_reads_callwatch() {
    let dir = tempfile::tempdir().unwrap();
    let server = replayed_server(dir.path()).await;
    let traces = recorded_traces();
    let requests: Vec<ExportTraceServiceRequest> = recorded_requests(&sample("full"));

    let echo = get(&server, "/api/echo", "*/*").await;
    assert_eq!(echo.status(), 200);
    assert_eq!(echo.text().await.unwrap(), "echo");

    // Trace by id, v1 and v2, protobuf and JSON: the recorded spans, all alike.
    let trace_id = linked_trace(&traces);
    let recorded: Vec<ResourceSpans> = {
        let mut spans = Vec::new();
        for request in &requests {
            for rs in &request.resource_spans {
                let mut rs = rs.clone();
                for scope in &mut rs.scope_spans {
                    scope.spans.retain(|s| hex(&s.trace_id) == trace_id);
                }
                spans.push(rs);
            }
        }
        spans
    };
    let expected = timeless_spans(&recorded);
    assert_eq!(expected.len(), traces[&trace_id].len());
    let protobuf = "application/protobuf";
    let v1 = get(&server, &format!("/api/traces/{trace_id}"), protobuf).await;
    assert_eq!(v1.status(), 200);
    assert_eq!(v1.headers()["content-type"], protobuf);
    let v1 = TracesData::decode(v1.bytes().await.unwrap()).unwrap();
    assert_eq!(timeless_spans(&v1.resource_spans), expected);
    // Each resource once, carrying the service name.
    for rs in &v1.resource_spans {
        let resource = rs.resource.as_ref().unwrap();
        assert!(
            resource
                .attributes
                .iter()
                .any(|kv| kv.key == "service.name")
        );
    }
    let v2 = get(&server, &format!("/api/v2/traces/{trace_id}"), protobuf).await;
    let v2 = TraceByIdResponse::decode(v2.bytes().await.unwrap()).unwrap();
    assert_eq!(v2.trace.as_ref(), Some(&v1));
    let (status, v2_json) = get_json(&server, &format!("/api/v2/traces/{trace_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(keys(&v2_json), ["trace"]);
    assert_eq!(keys(&v2_json["trace"]), ["resourceSpans"]);
    assert_eq!(
        decode_resource_spans(&v2_json["trace"]["resourceSpans"]),
        v1.resource_spans
    );
    let (_, v1_json) = get_json(&server, &format!("/api/traces/{trace_id}")).await;
    assert_eq!(
        decode_resource_spans(&v1_json["batches"]),
        v1.resource_spans
    );
    let missing = get(
        &server,
        &format!("/api/v2/traces/{}", "ab".repeat(16)),
        "*/*",
    )
    .await;
    assert_eq!(missing.status(), 404);

    // Tag search: values are case-insensitive substrings, the status exact.
    let (start, end) = (from_now(-3600, 1), from_now(3600, 1));
    let span = format!("start={start}&end={end}");
    let window = format!("{span}&limit=1000");
    let (status, body) = get_json(
        &server,
        &format!("/api/search?tags=service.name%3DPAYMENT%20status%3Derror&{window}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(keys(&body), ["metrics", "traces"]);
    let failed_payments = |spans: &[(String, Span)]| {
        spans
            .iter()
            .filter(|(service, span)| {
                service.contains("payment") && span.status.as_ref().is_some_and(|s| s.code == ERROR)
            })
            .count()
    };
    let expected: BTreeSet<&str> = traces
        .iter()
        .filter(|(_, spans)| failed_payments(spans) > 0)
        .map(|(id, _)| id.as_str())
        .collect();
    let found = body["traces"].as_array().unwrap();
    assert!(!found.is_empty());
    assert_eq!(
        found
            .iter()
            .map(|t| t["traceID"].as_str().unwrap())
            .collect::<BTreeSet<_>>(),
        expected
    );
    for trace in found {
        assert_eq!(
            keys(trace),
            [
                "durationMs",
                "rootServiceName",
                "rootTraceName",
                "spanSet",
                "spanSets",
                "startTimeUnixNano",
                "traceID"
            ]
        );
        let spans = &traces[trace["traceID"].as_str().unwrap()];
        let (root_service, root) = spans
            .iter()
            .find(|(_, s)| s.parent_span_id.is_empty())
            .unwrap();
        assert_eq!(trace["rootServiceName"], root_service.as_str());
        assert_eq!(trace["rootTraceName"], root.name.as_str());
        assert_eq!(trace["durationMs"], trace_duration(spans) / 1_000_000);
        assert!(
            trace["startTimeUnixNano"]
                .as_str()
                .unwrap()
                .parse::<u64>()
                .is_ok()
        );
        let set = &trace["spanSets"][0];
        assert_eq!(set["matched"], failed_payments(spans));
        assert_eq!(set, &trace["spanSet"]);
        let shown = set["spans"].as_array().unwrap();
        assert_eq!(shown.len(), failed_payments(spans).min(3));
        for span in shown {
            assert_eq!(
                keys(span),
                [
                    "attributes",
                    "durationNanos",
                    "name",
                    "spanID",
                    "startTimeUnixNano"
                ]
            );
            assert_eq!(
                span["attributes"],
                json!([
                    { "key": "service.name", "value": { "stringValue": "payment-service" } },
                    { "key": "status", "value": { "stringValue": "error" } },
                ])
            );
        }
    }

    // The TraceQL that Grafana's search builder writes finds the same traces.
    let (status, body) = get_json(
        &server,
        &format!(
            "/api/search?q={}&{window}",
            url_component(r#"{resource.service.name="payment-service" && status=error}"#)
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(trace_ids(&body), expected);
    let server_errors: BTreeSet<&str> = traces
        .iter()
        .filter(|(_, spans)| {
            spans.iter().any(|(_, span)| {
                span.attributes.iter().any(|kv| {
                    kv.key == "http.response.status_code"
                        && matches!(
                            kv.value.as_ref().and_then(|v| v.value.as_ref()),
                            Some(any_value::Value::IntValue(code)) if *code >= 500
                        )
                })
            })
        })
        .map(|(id, _)| id.as_str())
        .collect();
    assert!(!server_errors.is_empty());
    let (_, body) = get_json(
        &server,
        &format!(
            "/api/search?q={}&{window}",
            url_component("{ .http.response.status_code >= 500 }")
        ),
    )
    .await;
    assert_eq!(trace_ids(&body), server_errors);

    // Durations bound whole traces.
    let mut durations: Vec<(u64, &str)> = traces
        .iter()
        .map(|(id, spans)| (trace_duration(spans), id.as_str()))
        .collect();
    durations.sort();
    let median = durations[durations.len() / 2].0;
    let (_, body) = get_json(
        &server,
        &format!("/api/search?minDuration={median}ns&{window}"),
    )
    .await;
    let long: BTreeSet<&str> = durations
        .iter()
        .filter(|(d, _)| *d >= median)
        .map(|(_, id)| *id)
        .collect();
    assert_eq!(trace_ids(&body), long);
    let (_, body) = get_json(
        &server,
        &format!(
            "/api/search?q={}&{window}",
            url_component(&format!("{{ traceDuration >= {median}ns }}"))
        ),
    )
    .await;
    assert_eq!(trace_ids(&body), long);
    let (_, body) = get_json(&server, &format!("/api/search?limit=7&{span}")).await;
    assert_eq!(body["traces"].as_array().unwrap().len(), 7);
    let bad = get(&server, "/api/search?tags=status%3Dbroken", "*/*").await;
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("status=broken"));

    // Tag names: every attribute key of spans and of resources.
    let (mut span_keys, mut resource_keys) = (BTreeSet::new(), BTreeSet::new());
    for rs in requests.iter().flat_map(|r| &r.resource_spans) {
        resource_keys.extend(
            rs.resource
                .iter()
                .flat_map(|r| &r.attributes)
                .map(|kv| kv.key.as_str()),
        );
        for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
            span_keys.extend(span.attributes.iter().map(|kv| kv.key.as_str()));
        }
    }
    let (_, body) = get_json(&server, &format!("/api/search/tags?{span}")).await;
    let all: BTreeSet<&str> = span_keys.union(&resource_keys).copied().collect();
    assert_eq!(keys(&body), ["tagNames"]);
    assert_eq!(
        strings(&body["tagNames"]),
        Vec::from_iter(all.iter().map(|s| s.to_string()))
    );
    let (_, body) = get_json(&server, &format!("/api/v2/search/tags?{span}")).await;
    assert_eq!(
        body,
        json!({ "scopes": [
            { "name": "resource", "tags": resource_keys },
            { "name": "span", "tags": span_keys },
            { "name": "intrinsic", "tags": ["duration", "kind", "name", "status", "statusMessage"] },
        ]})
    );

    // Tag values, plain and typed.
    let services: BTreeSet<String> = traces
        .values()
        .flatten()
        .map(|(service, _)| service.clone())
        .collect();
    let (_, body) = get_json(
        &server,
        &format!("/api/search/tag/service.name/values?{span}"),
    )
    .await;
    assert_eq!(body, json!({ "tagValues": services }));
    let codes: BTreeSet<String> = traces
        .values()
        .flatten()
        .flat_map(|(_, span)| &span.attributes)
        .filter(|kv| kv.key == "http.response.status_code")
        .map(
            |kv| match kv.value.as_ref().unwrap().value.as_ref().unwrap() {
                any_value::Value::IntValue(code) => code.to_string(),
                other => panic!("{other:?}"),
            },
        )
        .collect();
    assert!(codes.len() > 1);
    let (_, body) = get_json(
        &server,
        &format!("/api/v2/search/tag/.http.response.status_code/values?{span}"),
    )
    .await;
    let typed: Vec<Value> = codes
        .iter()
        .map(|code| json!({ "type": "int", "value": code }))
        .collect();
    assert_eq!(body, json!({ "tagValues": typed }));
    let statuses: BTreeSet<&str> = traces
        .values()
        .flatten()
        .map(
            |(_, span)| match span.status.as_ref().map_or(0, |s| s.code) {
                0 => "unset",
                1 => "ok",
                _ => "error",
            },
        )
        .collect();
    let (_, body) = get_json(&server, &format!("/api/v2/search/tag/status/values?{span}")).await;
    let typed: Vec<Value> = statuses
        .iter()
        .map(|status| json!({ "type": "keyword", "value": status }))
        .collect();
    assert_eq!(body, json!({ "tagValues": typed }));
    let bad = get(&server, "/api/v2/search/tag/http.route/values", "*/*").await;
    assert_eq!(bad.status(), 400);
    server.stop();
}

#[tokio::test]
async fn bad_parameters_get_a_clear_error_and_hostile_ones_match_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    for (path, says) in [
        ("/api/traces/not-a-trace", "not a trace id"),
        ("/api/traces?service=a&tags=%7B", "JSON object"),
        ("/api/traces?service=a&start=soon", "microseconds"),
        ("/api/traces?service=a&limit=100000", "limit"),
        ("/api/operations?service=a&spanKind=sideways", "spanKind"),
        ("/api/dependencies?endTs=tomorrow", "endTs"),
        ("/api/dependencies?lookback=0", "lookback"),
        ("/api/search?q=%7B%20.a%20%3D~%20%22(%22%20%7D", "regex"),
        ("/api/search?q=%7B%7D%20%7C%20count()", "spanset"),
        ("/api/search?start=99999999999999999999", "unix seconds"),
        ("/api/search?tags=kind%3Dsideways", "kind=sideways"),
        ("/api/search/tags?scope=everything", "scope"),
        ("/api/v2/search/tag/.x/values?limit=0", "limit"),
        ("/api/v2/traces/xyz", "not a trace id"),
    ] {
        let response = get(&server, path, "*/*").await;
        assert_eq!(response.status(), 400, "{path}");
        let body = response.text().await.unwrap();
        assert!(body.contains(says), "{path}: {body}");
    }
    // Names are data, never query text.
    let hostile = url_component(r#"{"a') OR 1=1 --":"x","b\" || true":"y"}"#);
    let (status, body) = get_json(&server, &format!("/api/traces?service=x&tags={hostile}")).await;
    assert_eq!((status, data(&body)), (200, &json!([])));
    let hostile = url_component(r#"{ .a = "x\") || true" || name =~ ".*' OR '1'='1" }"#);
    let (status, body) = get_json(&server, &format!("/api/search?q={hostile}")).await;
    assert_eq!((status, &body["traces"]), (200, &json!([])), "{body}");
    server.stop();
}
