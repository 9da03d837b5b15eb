//! Jaeger's query API, so that Grafana's Jaeger data source and Jaeger's own UI read
//! callwatch unchanged: `GET /api/services`, `/api/services/{service}/operations`,
//! `/api/operations`, `/api/traces`, `/api/traces/{id}` and `/api/dependencies`.
//!
//! Answers come in Jaeger's envelope `{"data","total","limit","offset","errors"}`, with
//! times and durations in microseconds. Spans take the shape Jaeger gives OTLP spans: the
//! parent is a CHILD_OF reference and links are FOLLOWS_FROM references; kind, status and
//! scope become the tags `span.kind`, `otel.status_code`, `error`, `otel.scope.name`; events
//! become logs; each distinct resource is a process.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use callwatch_query::graph::{Window as GraphWindow, graph_of};
use callwatch_query::{QueryEngine, QueryError};
use callwatch_storage::schema::{
    AttributeType, SERVICE_NAME, SPAN_KIND, SPAN_KINDS, SPAN_NAME, STATUS_CODE,
};
use callwatch_storage::{Attribute, SpanRecord};
use datafusion::arrow::array::AsArray;
use datafusion::logical_expr::{Expr, col, lit};
use serde_json::{Value, json};

use crate::AppState;
use crate::params::{Window, now_ns, parse_duration};
use crate::tempo;
use crate::traces::{
    Search, attribute_equals, matching_trace_ids, normalize_trace_id, spans_of_traces, trace_spans,
};

/// Traces a search returns unless `limit` says otherwise (Jaeger's default), and the most.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;
/// How far back a search looks when it names no start: Jaeger's hour.
const DEFAULT_LOOKBACK_NS: i64 = 3_600_000_000_000;
/// How far back `/api/dependencies` looks by default: Jaeger's day.
const DEFAULT_DEPENDENCY_LOOKBACK_MS: i64 = 24 * 3_600_000;

/// Jaeger's envelope around an answer.
fn answer(data: Value, total: usize) -> Response {
    axum::Json(json!({
        "data": data,
        "total": total,
        "limit": 0,
        "offset": 0,
        "errors": null,
    }))
    .into_response()
}

/// Jaeger's envelope around a failure.
fn failure(status: StatusCode, message: &str) -> Response {
    let body = json!({
        "data": null,
        "total": 0,
        "limit": 0,
        "offset": 0,
        "errors": [{ "code": status.as_u16(), "msg": message }],
    });
    (status, axum::Json(body)).into_response()
}

fn query_failure(error: QueryError) -> Response {
    failure(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string())
}

/// `GET /api/services`: every service that sent spans, sorted.
pub async fn services(State(state): State<AppState>) -> Response {
    names(&state.query, None, SERVICE_NAME).await
}

/// `GET /api/services/{service}/operations`: the service's span names, sorted.
pub async fn service_operations(
    State(state): State<AppState>,
    Path(service): Path<String>,
) -> Response {
    let filter = col(SERVICE_NAME).eq(lit(service.as_str()));
    names(&state.query, Some(filter), SPAN_NAME).await
}

/// The distinct values of one column as Jaeger's list of names.
async fn names(engine: &QueryEngine, filter: Option<Expr>, column: &str) -> Response {
    match distinct_strings(engine, filter, &[column]).await {
        Ok(rows) => {
            let names: Vec<String> = rows.into_iter().map(|mut row| row.remove(0)).collect();
            let total = names.len();
            answer(json!(names), total)
        }
        Err(e) => query_failure(e),
    }
}

/// `GET /api/operations?service=&spanKind=`: the service's operations with their kinds.
pub async fn operations(
    State(state): State<AppState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let value = |name: &str| {
        pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let Some(service) = value("service").filter(|s| !s.is_empty()) else {
        return failure(StatusCode::BAD_REQUEST, "parameter 'service' is required");
    };
    let mut filter = col(SERVICE_NAME).eq(lit(service));
    match value("spanKind").filter(|k| !k.is_empty()) {
        None => {}
        Some(kind) => match stored_kind(kind) {
            Some(stored) => filter = filter.and(col(SPAN_KIND).eq(lit(stored))),
            None => {
                return failure(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "spanKind={kind}: use server, client, producer, consumer, internal \
                         or unspecified"
                    ),
                );
            }
        },
    }
    match distinct_strings(&state.query, Some(filter), &[SPAN_NAME, SPAN_KIND]).await {
        Ok(rows) => {
            let operations: Vec<Value> = rows
                .iter()
                .map(|row| json!({ "name": row[0], "spanKind": jaeger_kind(&row[1]) }))
                .collect();
            let total = operations.len();
            answer(json!(operations), total)
        }
        Err(e) => query_failure(e),
    }
}

/// Jaeger's lowercase span kind as callwatch stores it.
fn stored_kind(kind: &str) -> Option<&'static str> {
    let upper = kind.to_ascii_uppercase();
    SPAN_KINDS.iter().copied().find(|&k| k == upper)
}

/// The stored kind as Jaeger names it: lowercase, and empty when unspecified.
fn jaeger_kind(kind: &str) -> String {
    if kind == "UNSPECIFIED" {
        String::new()
    } else {
        kind.to_ascii_lowercase()
    }
}

/// Distinct values of `columns` over all stored spans (that pass `filter`), sorted.
async fn distinct_strings(
    engine: &QueryEngine,
    filter: Option<Expr>,
    columns: &[&str],
) -> Result<Vec<Vec<String>>, QueryError> {
    let mut frame = engine.context()?.table("spans").await?;
    if let Some(filter) = filter {
        frame = frame.filter(filter)?;
    }
    let keys: Vec<Expr> = columns.iter().map(|&c| col(c)).collect();
    let sorted = frame
        .aggregate(keys.clone(), vec![])?
        .sort(keys.into_iter().map(|k| k.sort(true, false)).collect())?;
    let output = engine.collect(sorted).await?;
    let mut rows = Vec::new();
    for batch in &output.batches {
        let texts: Vec<_> = (0..columns.len())
            .map(|i| batch.column(i).as_string::<i32>())
            .collect();
        for row in 0..batch.num_rows() {
            rows.push(texts.iter().map(|t| t.value(row).to_owned()).collect());
        }
    }
    Ok(rows)
}

/// `GET /api/traces?service=&operation=&tags=&start=&end=&minDuration=&maxDuration=&limit=
/// &lookback=` (or `traceID=` one or more times): whole traces with a matching span.
pub async fn traces(
    State(state): State<AppState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let request = match TracesRequest::parse(&pairs, now_ns()) {
        Ok(request) => request,
        Err(message) => return failure(StatusCode::BAD_REQUEST, &message),
    };
    let ids = if request.trace_ids.is_empty() {
        match matching_trace_ids(&state.query, &request.search).await {
            Ok(ids) => ids,
            Err(e) => return query_failure(e),
        }
    } else {
        request.trace_ids
    };
    let spans = match spans_of_traces(&state.query, &ids).await {
        Ok(spans) => spans,
        Err(e) => return query_failure(e),
    };
    let mut by_trace: BTreeMap<&str, Vec<&SpanRecord>> = BTreeMap::new();
    for span in &spans {
        by_trace
            .entry(span.trace_id.as_str())
            .or_default()
            .push(span);
    }
    // In the order found: newest first.
    let traces: Vec<Value> = ids
        .iter()
        .filter_map(|id| by_trace.get(id.as_str()))
        .map(|spans| jaeger_trace(spans))
        .collect();
    answer(json!(traces), 0)
}

/// A Jaeger trace search, read as Jaeger's query service reads it; parameters it does not
/// know are ignored, as Jaeger ignores them.
#[derive(Debug)]
struct TracesRequest {
    search: Search,
    trace_ids: Vec<String>,
}

impl TracesRequest {
    fn parse(pairs: &[(String, String)], now_ns: i64) -> Result<Self, String> {
        let mut search = Search {
            limit: DEFAULT_LIMIT,
            ..Search::default()
        };
        let mut trace_ids = Vec::new();
        let (mut start, mut end, mut lookback) = (None, None, None);
        for (key, value) in pairs {
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            match key.as_str() {
                "service" => search.service = Some(value.to_owned()),
                "operation" => search.operation = Some(value.to_owned()),
                "start" => start = Some(micros_as_ns(key, value)?),
                "end" => end = Some(micros_as_ns(key, value)?),
                // Jaeger's UI sends `lookback=custom` beside a `start`.
                "lookback" if value != "custom" => lookback = Some(value),
                "minDuration" => search.min_duration_ns = Some(parse_duration(key, value)?),
                "maxDuration" => search.max_duration_ns = Some(parse_duration(key, value)?),
                "limit" => {
                    let limit: usize = value
                        .parse()
                        .map_err(|_| format!("limit={value}: use a number up to {MAX_LIMIT}"))?;
                    if limit > MAX_LIMIT {
                        return Err(format!("limit={value}: use a number up to {MAX_LIMIT}"));
                    }
                    // Jaeger reads 0 as "the default".
                    search.limit = if limit == 0 { DEFAULT_LIMIT } else { limit };
                }
                "tags" => {
                    let tags: serde_json::Map<String, Value> = serde_json::from_str(value)
                        .map_err(|_| {
                            format!(
                                "tags={value}: use a JSON object such as {{\"http.status_code\":\"500\"}}"
                            )
                        })?;
                    for (tag, wanted) in tags {
                        let wanted = match wanted {
                            Value::String(text) => text,
                            other => other.to_string(),
                        };
                        add_tag(&mut search, &tag, &wanted)?;
                    }
                }
                "tag" => {
                    let Some((tag, wanted)) = value.split_once(':') else {
                        return Err(format!("tag={value}: use key:value"));
                    };
                    add_tag(&mut search, tag, wanted)?;
                }
                "traceID" => trace_ids.push(
                    normalize_trace_id(value)
                        .ok_or_else(|| format!("traceID={value}: use up to 32 hex digits"))?,
                ),
                _ => {}
            }
        }
        if trace_ids.is_empty() && search.service.is_none() {
            return Err("parameter 'service' is required".into());
        }
        if let (Some(min), Some(max)) = (search.min_duration_ns, search.max_duration_ns)
            && max < min
        {
            return Err("'maxDuration' should be greater than 'minDuration'".into());
        }
        let to_ns = end.unwrap_or(now_ns);
        let from_ns = match (start, lookback) {
            (Some(start), _) => start,
            (None, Some(lookback)) => to_ns.saturating_sub(lookback_ns(lookback)?),
            (None, None) => to_ns.saturating_sub(DEFAULT_LOOKBACK_NS),
        };
        if from_ns >= to_ns {
            return Err("'start' must be before 'end'".into());
        }
        search.window = Window { from_ns, to_ns };
        Ok(Self { search, trace_ids })
    }
}

/// Unix microseconds, as Jaeger's `start` and `end` are given.
fn micros_as_ns(name: &str, value: &str) -> Result<i64, String> {
    value
        .parse::<i64>()
        .ok()
        .and_then(|micros| micros.checked_mul(1000))
        .ok_or_else(|| format!("{name}={value}: use unix microseconds"))
}

/// Jaeger UI's lookbacks: `1h`, `2d`, `7d` and the other Go durations.
fn lookback_ns(value: &str) -> Result<i64, String> {
    match value.strip_suffix('d').map(str::parse::<i64>) {
        Some(Ok(days)) => days
            .checked_mul(86_400_000_000_000)
            .ok_or_else(|| format!("lookback={value} is out of range")),
        _ => parse_duration("lookback", value),
    }
}

/// A tag as Jaeger matches it: the tags Jaeger makes of kind and status, or else an
/// attribute of the span or of its process (resource).
fn add_tag(search: &mut Search, tag: &str, wanted: &str) -> Result<(), String> {
    match tag {
        "error" => match wanted {
            "true" => search.error = Some(true),
            "false" => search.error = Some(false),
            _ => return Err(format!("tag error={wanted}: use true or false")),
        },
        "span.kind" => {
            let kind = stored_kind(wanted)
                .ok_or_else(|| format!("tag span.kind={wanted}: not a span kind"))?;
            search.conditions.push(col(SPAN_KIND).eq(lit(kind)));
        }
        "otel.status_code" => search
            .conditions
            .push(col(STATUS_CODE).eq(lit(wanted.to_ascii_uppercase()))),
        _ => search.conditions.push(attribute_equals(tag, wanted)),
    }
    Ok(())
}

/// `GET /api/traces/{id}`: Jaeger's and Tempo's trace by id share this path. Protobuf
/// (`Accept: application/protobuf`) is Tempo's answer; JSON is Jaeger's envelope with
/// Tempo's OTLP `batches` beside it, so both data sources read it unchanged.
pub async fn trace(
    State(state): State<AppState>,
    Path(trace_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let protobuf = tempo::wants_protobuf(&headers);
    let Some(trace_id) = normalize_trace_id(&trace_id) else {
        return failure(
            StatusCode::BAD_REQUEST,
            &format!("{trace_id:?} is not a trace id: up to 32 hex digits"),
        );
    };
    let spans = match trace_spans(&state.query, &trace_id).await {
        Ok(spans) if spans.is_empty() => {
            return failure(StatusCode::NOT_FOUND, "trace not found");
        }
        Ok(spans) => spans,
        Err(e) => return query_failure(e),
    };
    if protobuf {
        return tempo::protobuf_trace(&spans);
    }
    let refs: Vec<&SpanRecord> = spans.iter().collect();
    axum::Json(json!({
        "data": [jaeger_trace(&refs)],
        "total": 0,
        "limit": 0,
        "offset": 0,
        "errors": null,
        "batches": tempo::batches(&spans),
    }))
    .into_response()
}

/// `GET /api/dependencies?endTs=&lookback=` (unix milliseconds, default now and a day):
/// every caller → callee pair of callwatch's graph, with calls and errors.
pub async fn dependencies(
    State(state): State<AppState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let millis = |name: &str, default: i64| -> Result<i64, String> {
        match pairs.iter().rev().find(|(k, v)| k == name && !v.is_empty()) {
            None => Ok(default),
            Some((_, value)) => value
                .parse::<i64>()
                .ok()
                .filter(|&ms| ms >= 0)
                .ok_or_else(|| format!("{name}={value}: use milliseconds")),
        }
    };
    let window = millis("endTs", now_ns() / 1_000_000).and_then(|end_ms| {
        let lookback_ms = millis("lookback", DEFAULT_DEPENDENCY_LOOKBACK_MS)?;
        let to_ns = end_ms
            .checked_mul(1_000_000)
            .ok_or_else(|| format!("endTs={end_ms} is out of range"))?;
        let from_ns = to_ns.saturating_sub(lookback_ms.saturating_mul(1_000_000));
        if from_ns >= to_ns {
            return Err("lookback must be more than 0".to_string());
        }
        Ok(GraphWindow { from_ns, to_ns })
    });
    let window = match window {
        Ok(window) => window,
        Err(message) => return failure(StatusCode::BAD_REQUEST, &message),
    };
    let graph = match graph_of(&state.query, window, state.health).await {
        Ok(graph) => graph,
        Err(e) => return query_failure(e),
    };
    // A sync and an async edge between the same two services are one dependency to Jaeger.
    let mut links: BTreeMap<(&str, &str), (u64, u64)> = BTreeMap::new();
    for edge in &graph.edges {
        let link = links
            .entry((edge.source.as_str(), edge.target.as_str()))
            .or_default();
        link.0 += edge.summary.calls;
        link.1 += edge.summary.errors;
    }
    let data: Vec<Value> = links
        .into_iter()
        .map(|((parent, child), (calls, errors))| {
            json!({ "parent": parent, "child": child, "callCount": calls, "errorCount": errors })
        })
        .collect();
    let total = data.len();
    answer(json!(data), total)
}

/// Jaeger prints a 128-bit id whose high half is zero as 16 digits.
fn jaeger_trace_id(hex: &str) -> &str {
    match hex.strip_prefix("0000000000000000") {
        Some(low) if hex.len() == 32 => low,
        _ => hex,
    }
}

/// One trace in Jaeger's shape; each distinct resource is one process.
fn jaeger_trace(spans: &[&SpanRecord]) -> Value {
    let mut processes: Vec<&SpanRecord> = Vec::new();
    let mut json_spans = Vec::with_capacity(spans.len());
    for span in spans {
        let index = processes
            .iter()
            .position(|p| {
                p.service_name == span.service_name
                    && p.resource_attributes == span.resource_attributes
            })
            .unwrap_or_else(|| {
                processes.push(span);
                processes.len() - 1
            });
        json_spans.push(jaeger_span(span, &format!("p{}", index + 1)));
    }
    let processes: serde_json::Map<String, Value> = processes
        .iter()
        .enumerate()
        .map(|(i, span)| {
            let tags: Vec<Value> = span
                .resource_attributes
                .iter()
                .filter(|a| a.key != "service.name")
                .map(tag)
                .collect();
            (
                format!("p{}", i + 1),
                json!({ "serviceName": span.service_name, "tags": tags }),
            )
        })
        .collect();
    json!({
        "traceID": spans.first().map_or("", |s| jaeger_trace_id(&s.trace_id)),
        "spans": json_spans,
        "processes": processes,
        "warnings": null,
    })
}

fn jaeger_span(span: &SpanRecord, process_id: &str) -> Value {
    let mut references = Vec::new();
    if let Some(parent) = &span.parent_span_id {
        references.push(json!({
            "refType": "CHILD_OF",
            "traceID": jaeger_trace_id(&span.trace_id),
            "spanID": parent,
        }));
    }
    for link in &span.links {
        references.push(json!({
            "refType": "FOLLOWS_FROM",
            "traceID": jaeger_trace_id(&link.trace_id),
            "spanID": link.span_id,
        }));
    }
    let mut tags: Vec<Value> = span.attributes.iter().map(tag).collect();
    let mut text_tag = |key: &str, value: &str| {
        tags.push(json!({ "key": key, "type": "string", "value": value }));
    };
    if span.span_kind != "UNSPECIFIED" {
        text_tag("span.kind", &jaeger_kind(&span.span_kind));
    }
    if span.status_code != "UNSET" {
        text_tag("otel.status_code", &span.status_code);
    }
    if let Some(message) = &span.status_message {
        text_tag("otel.status_description", message);
    }
    if let Some(name) = &span.scope_name {
        text_tag("otel.scope.name", name);
    }
    if let Some(version) = &span.scope_version {
        text_tag("otel.scope.version", version);
    }
    if let Some(state) = &span.trace_state {
        text_tag("w3c.tracestate", state);
    }
    if span.status_code == "ERROR" {
        tags.push(json!({ "key": "error", "type": "bool", "value": true }));
    }
    let logs: Vec<Value> = span
        .events
        .iter()
        .map(|event| {
            let mut fields = vec![json!({ "key": "event", "type": "string", "value": event.name })];
            fields.extend(event.attributes.iter().map(tag));
            json!({ "timestamp": event.time_ns / 1000, "fields": fields })
        })
        .collect();
    let dropped = [
        (span.dropped_attributes_count, "attributes"),
        (span.dropped_events_count, "events"),
        (span.dropped_links_count, "links"),
    ];
    let warnings: Vec<String> = dropped
        .iter()
        .filter(|(count, _)| *count > 0)
        .map(|(count, what)| format!("{count} {what} dropped before storage"))
        .collect();
    json!({
        "traceID": jaeger_trace_id(&span.trace_id),
        "spanID": span.span_id,
        "flags": span.flags & 0xff,
        "operationName": span.span_name,
        "references": references,
        "startTime": span.start_ns / 1000,
        "duration": span.duration_ns / 1000,
        "tags": tags,
        "logs": logs,
        "processID": process_id,
        "warnings": if warnings.is_empty() { Value::Null } else { json!(warnings) },
    })
}

/// An attribute as a Jaeger tag: strings, bools, int64s and float64s keep their type,
/// bytes are base64 `binary`, arrays and kvlists are JSON text.
fn tag(attribute: &Attribute) -> Value {
    let text = attribute.value.as_deref().unwrap_or_default();
    let typed = match attribute.kind {
        AttributeType::Bool => text.parse::<bool>().ok().map(|b| ("bool", json!(b))),
        AttributeType::Int => text.parse::<i64>().ok().map(|i| ("int64", json!(i))),
        AttributeType::Double => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(|n| ("float64", Value::Number(n))),
        AttributeType::Bytes => Some(("binary", json!(text))),
        AttributeType::String
        | AttributeType::Array
        | AttributeType::KeyValueList
        | AttributeType::Empty => None,
    };
    let (kind, value) = typed.unwrap_or(("string", json!(text)));
    json!({ "key": attribute.key, "type": kind, "value": value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::pairs;

    const NOW: i64 = 1_795_000_000_000_000_000;

    #[test]
    fn a_search_reads_jaeger_parameters() {
        let request = TracesRequest::parse(
            &pairs(&[
                ("service", "order-service"),
                ("start", "1794999000000000"),
                ("end", "1795000000000000"),
                ("minDuration", "1.5ms"),
                ("limit", "0"),
                (
                    "tags",
                    r#"{"error":"true","http.response.status_code":500}"#,
                ),
                ("lookback", "custom"),
                ("prettyPrint", "true"),
            ]),
            NOW,
        )
        .unwrap();
        let search = request.search;
        assert_eq!(search.window.from_ns, 1_794_999_000_000_000_000);
        assert_eq!(search.window.to_ns, NOW);
        assert_eq!(search.min_duration_ns, Some(1_500_000));
        assert_eq!(search.limit, DEFAULT_LIMIT);
        assert_eq!(search.error, Some(true));
        assert_eq!(search.conditions.len(), 1);

        let request =
            TracesRequest::parse(&pairs(&[("service", "a"), ("lookback", "2d")]), NOW).unwrap();
        assert_eq!(request.search.window.from_ns, NOW - 2 * 86_400_000_000_000);
        let request =
            TracesRequest::parse(&pairs(&[("service", "a"), ("lookback", "custom")]), NOW).unwrap();
        assert_eq!(request.search.window.from_ns, NOW - DEFAULT_LOOKBACK_NS);
        let request = TracesRequest::parse(&pairs(&[("traceID", "ABC")]), NOW).unwrap();
        assert_eq!(request.trace_ids, vec![format!("{:0>32}", "abc")]);

        for bad in [
            vec![("operation", "x")],
            vec![("service", "a"), ("start", "soon")],
            vec![("service", "a"), ("limit", "5000")],
            vec![("service", "a"), ("tags", "http=500")],
            vec![
                ("service", "a"),
                ("minDuration", "2s"),
                ("maxDuration", "1s"),
            ],
            vec![("service", "a"), ("tag", "error:maybe")],
            vec![("traceID", "not-hex")],
        ] {
            assert!(TracesRequest::parse(&pairs(&bad), NOW).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn jaeger_prints_short_trace_ids_short() {
        assert_eq!(
            jaeger_trace_id("0000000000000000abcdef0123456789"),
            "abcdef0123456789"
        );
        assert_eq!(
            jaeger_trace_id("10000000000000000bcdef0123456789"),
            "10000000000000000bcdef0123456789"
        );
    }
}
