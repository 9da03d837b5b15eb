//! Tempo's trace API, so that Grafana's Tempo data source reads callwatch unchanged:
//! `GET /api/echo`, trace by id (`/api/traces/{id}`, shared with Jaeger, and
//! `/api/v2/traces/{id}`) in OTLP JSON or protobuf, tag-based search (`/api/search`) and
//! the tag names and values search offers (`/api/search/tags`,
//! `/api/search/tag/{tag}/values` and their v2 forms).
//!
//! Times in parameters are unix seconds. Without `start` and `end` a search looks at the
//! last hour. Failures are plain text, as Tempo sends them.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use callwatch_collector::{encode_json_resource_spans, otlp_json_attribute, traces_data};
use callwatch_query::{QueryEngine, QueryError};
use callwatch_storage::schema::{
    ATTRIBUTE_TYPES, ATTRIBUTES, AttributeType, RESOURCE_ATTRIBUTE_TYPES, RESOURCE_ATTRIBUTES,
    SERVICE_NAME, SPAN_KIND, SPAN_KINDS, SPAN_NAME, START_TIME, STATUS_CODE, STATUS_CODES,
    STATUS_MESSAGE, TRACE_ID,
};
use callwatch_storage::{SpanRecord, span_records};
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::functions::core::expr_fn::get_field;
use datafusion::functions::expr_fn::{lower, substring};
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::functions_nested::expr_fn::{array_position, map_keys};
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::expr::{Like, WindowFunction};
use datafusion::logical_expr::{Expr, ExprFunctionExt, cast, col, lit};
use opentelemetry_proto::tonic::trace::v1::TracesData;
use prost::Message;
use serde_json::{Value, json};

use crate::AppState;
use crate::params::{Window, now_ns, parse_duration};
use crate::traceql;
use crate::traces::{
    Search, attribute, in_traces, matching_trace_ids, normalize_trace_id, started_within,
    string_column, trace_spans, trace_summaries,
};

/// Traces a search returns unless `limit` says otherwise (Tempo's default), and the most.
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 1000;
/// Matching spans shown per trace unless `spss` says otherwise (Tempo's default).
const DEFAULT_SPANS_PER_SET: usize = 3;
/// Tag names or values returned unless `limit` says otherwise, and the most.
const DEFAULT_TAG_LIMIT: usize = 1000;
const MAX_TAG_LIMIT: usize = 10_000;
/// The window a request without `start` and `end` looks at.
const DEFAULT_WINDOW_NS: i64 = 3_600_000_000_000;

/// Intrinsics: what every span has besides its attributes.
const INTRINSICS: [&str; 5] = ["duration", "kind", "name", "status", "statusMessage"];

fn failure(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

fn bad_request(message: &str) -> Response {
    failure(StatusCode::BAD_REQUEST, message)
}

fn query_failure(error: QueryError) -> Response {
    failure(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string())
}

/// `GET /api/echo`: Grafana's "test" of a Tempo data source.
pub async fn echo() -> &'static str {
    "echo"
}

pub(crate) fn wants_protobuf(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/protobuf") || v.contains("application/x-protobuf"))
}

/// Tempo's v1 body: `tempopb.Trace`, whose one field (repeated resource spans, number 1)
/// is that of OTLP `TracesData`.
pub(crate) fn protobuf_trace(spans: &[SpanRecord]) -> Response {
    protobuf(traces_data(spans).encode_to_vec())
}

/// The resource spans as Tempo's v1 JSON calls them: `batches`.
pub(crate) fn batches(spans: &[SpanRecord]) -> Value {
    encode_json_resource_spans(&traces_data(spans).resource_spans)
}

fn protobuf(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/protobuf")], body).into_response()
}

/// Tempo's `TraceByIDResponse { Trace trace = 1; ... }`, the v2 trace by id.
#[derive(Clone, PartialEq, Message)]
struct TraceByIdResponse {
    #[prost(message, optional, tag = "1")]
    trace: Option<TracesData>,
}

/// `GET /api/v2/traces/{id}`: `{"trace": {"resourceSpans": [...]}}`, or Tempo's
/// `TraceByIDResponse` in protobuf for `Accept: application/protobuf`.
pub async fn trace_v2(
    State(state): State<AppState>,
    Path(trace_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(trace_id) = normalize_trace_id(&trace_id) else {
        return bad_request(&format!(
            "{trace_id:?} is not a trace id: up to 32 hex digits"
        ));
    };
    let spans = match trace_spans(&state.query, &trace_id).await {
        Ok(spans) if spans.is_empty() => {
            return failure(StatusCode::NOT_FOUND, "trace not found");
        }
        Ok(spans) => spans,
        Err(e) => return query_failure(e),
    };
    let data = traces_data(&spans);
    if wants_protobuf(&headers) {
        let response = TraceByIdResponse { trace: Some(data) };
        return protobuf(response.encode_to_vec());
    }
    axum::Json(json!({
        "trace": { "resourceSpans": encode_json_resource_spans(&data.resource_spans) },
    }))
    .into_response()
}

/// The last value of a query parameter, if it is not empty.
fn param<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, v)| k == name && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

/// `start` and `end` in unix seconds; without them, the last hour.
fn window_of(pairs: &[(String, String)], now_ns: i64) -> Result<Window, String> {
    let seconds = |name: &str| -> Result<Option<i64>, String> {
        param(pairs, name)
            .map(|value| {
                value
                    .parse::<i64>()
                    .ok()
                    .and_then(|s| s.checked_mul(1_000_000_000))
                    .ok_or_else(|| format!("{name}={value}: use unix seconds"))
            })
            .transpose()
    };
    let to_ns = seconds("end")?.unwrap_or(now_ns);
    let from_ns = seconds("start")?.unwrap_or(to_ns.saturating_sub(DEFAULT_WINDOW_NS));
    if from_ns >= to_ns {
        return Err("start must be before end".into());
    }
    Ok(Window { from_ns, to_ns })
}

fn limit_of(
    pairs: &[(String, String)],
    name: &str,
    default: usize,
    most: usize,
) -> Result<usize, String> {
    match param(pairs, name) {
        None => Ok(default),
        Some(value) => value
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=most).contains(n))
            .ok_or_else(|| format!("{name}={value}: use 1 to {most}")),
    }
}

/// `GET /api/search?tags=&minDuration=&maxDuration=&limit=&start=&end=&spss=` (or `q=` a
/// TraceQL spanset filter): the newest traces with a span that has every tag. Tag values
/// match as case-insensitive substrings, as in Tempo; `status` and `kind` match exactly;
/// durations bound the whole trace.
pub async fn search(
    State(state): State<AppState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let (search, tag_keys, spans_per_set) = match parse_search(&pairs, now_ns()) {
        Ok(parsed) => parsed,
        Err(message) => return bad_request(&message),
    };
    let found = async {
        let ids = matching_trace_ids(&state.query, &search).await?;
        let summaries = trace_summaries(&state.query, &ids).await?;
        let sets = span_sets(&state.query, &search, &ids, spans_per_set).await?;
        Ok::<_, QueryError>((summaries, sets))
    };
    let (summaries, (matched, shown)) = match found.await {
        Ok(found) => found,
        Err(e) => return query_failure(e),
    };
    let mut shown_by_trace: HashMap<&str, Vec<Value>> = HashMap::new();
    for span in &shown {
        shown_by_trace
            .entry(span.trace_id.as_str())
            .or_default()
            .push(span_json(span, &tag_keys));
    }
    let traces: Vec<Value> = summaries
        .iter()
        .map(|summary| {
            let id = summary.trace_id.as_str();
            let span_set = json!({
                "spans": shown_by_trace.remove(id).unwrap_or_default(),
                "matched": matched.get(id).copied().unwrap_or(0),
            });
            json!({
                "traceID": summary.trace_id,
                "rootServiceName": summary.root_service,
                "rootTraceName": summary.root_operation,
                "startTimeUnixNano": summary.start_ns.to_string(),
                "durationMs": summary.duration_ns / 1_000_000,
                "spanSet": span_set,
                "spanSets": [span_set],
            })
        })
        .collect();
    // Tempo's metrics count blocks and bytes read, which callwatch does not track.
    axum::Json(json!({ "traces": traces, "metrics": {} })).into_response()
}

/// How many spans of each trace match the search, and the first `shown` of them: what a
/// span set holds, read in one pass without loading every matching span.
async fn span_sets(
    engine: &QueryEngine,
    search: &Search,
    trace_ids: &[String],
    shown: usize,
) -> Result<(HashMap<String, i64>, Vec<SpanRecord>), QueryError> {
    if trace_ids.is_empty() {
        return Ok((HashMap::new(), Vec::new()));
    }
    let per_trace = || vec![col(TRACE_ID)];
    let rank = row_number()
        .partition_by(per_trace())
        .order_by(vec![col(START_TIME).sort(true, false)])
        .build()?
        .alias("rank");
    let matched = Expr::from(WindowFunction::new(count_udaf(), vec![lit(1i64)]))
        .partition_by(per_trace())
        .build()?
        .alias("matched");
    let first = engine
        .context()?
        .table("spans")
        .await?
        .filter(in_traces(trace_ids).and(search.predicate()))?
        // Window expressions sorted differently each need a window of their own.
        .window(vec![matched])?
        .window(vec![rank])?
        .filter(col("rank").lt_eq(lit(shown as u64)))?
        .sort(vec![col(START_TIME).sort(true, false)])?;
    let (mut counts, mut spans) = (HashMap::new(), Vec::new());
    for batch in &engine.collect(first).await?.batches {
        let records = span_records(batch).map_err(|e| QueryError::Execution(e.to_string()))?;
        let matched = batch
            .column_by_name("matched")
            .and_then(|c| c.as_primitive_opt::<Int64Type>())
            .ok_or_else(|| QueryError::Execution("span sets lack their counts".into()))?;
        for (row, record) in records.into_iter().enumerate() {
            counts.insert(record.trace_id.clone(), matched.value(row));
            spans.push(record);
        }
    }
    Ok((counts, spans))
}

/// The search, the tag keys it names (shown on matching spans) and spans per set.
fn parse_search(
    pairs: &[(String, String)],
    now_ns: i64,
) -> Result<(Search, Vec<String>, usize), String> {
    let mut search = Search {
        window: window_of(pairs, now_ns)?,
        limit: limit_of(pairs, "limit", DEFAULT_LIMIT, MAX_LIMIT)?,
        ..Search::default()
    };
    if let Some(value) = param(pairs, "minDuration") {
        search.min_trace_duration_ns = Some(parse_duration("minDuration", value)?);
    }
    if let Some(value) = param(pairs, "maxDuration") {
        search.max_trace_duration_ns = Some(parse_duration("maxDuration", value)?);
    }
    let mut keys = Vec::new();
    if let Some(query) = param(pairs, "q") {
        let filter = traceql::parse(query).map_err(|e| format!("q: {e}"))?;
        search.conditions.extend(filter.condition);
        tighten(
            &mut search.min_trace_duration_ns,
            filter.min_trace_duration_ns,
            i64::max,
        );
        tighten(
            &mut search.max_trace_duration_ns,
            filter.max_trace_duration_ns,
            i64::min,
        );
        keys = filter.fields;
    }
    if let Some(tags) = param(pairs, "tags") {
        for (key, value) in logfmt(tags)? {
            search.conditions.push(tag_condition(&key, &value)?);
            keys.push(key);
        }
    }
    let spans_per_set = limit_of(pairs, "spss", DEFAULT_SPANS_PER_SET, MAX_LIMIT)?;
    Ok((search, keys, spans_per_set))
}

/// Keeps the stricter of two bounds.
fn tighten(bound: &mut Option<i64>, other: Option<i64>, stricter: fn(i64, i64) -> i64) {
    *bound = match (*bound, other) {
        (Some(a), Some(b)) => Some(stricter(a, b)),
        (a, b) => a.or(b),
    };
}

/// `key=value key="value with spaces"` pairs, as Tempo's `tags` parameter is written.
fn logfmt(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        if chars.next() != Some('=') {
            return Err(format!(
                "tags={text}: write key=value pairs split by spaces"
            ));
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => return Err(format!("tags={text}: a quoted value is not closed")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                value.push(c);
            }
        }
        pairs.push((key, value));
    }
}

/// One tag of a Tempo search as a condition on a span.
fn tag_condition(key: &str, value: &str) -> Result<Expr, String> {
    let exact = |column: &str, names: &[&str]| {
        let upper = value.to_ascii_uppercase();
        let upper = upper.strip_prefix("STATUS_CODE_").unwrap_or(&upper);
        let upper = upper.strip_prefix("SPAN_KIND_").unwrap_or(upper);
        names
            .iter()
            .find(|&&name| name == upper)
            .map(|&name| col(column).eq(lit(name)))
            .ok_or_else(|| {
                let lower: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
                format!("{key}={value}: use one of {}", lower.join(", "))
            })
    };
    Ok(match key {
        "service.name" => contains(col(SERVICE_NAME), value),
        "name" => contains(col(SPAN_NAME), value),
        "status" | "status.code" => exact(STATUS_CODE, &STATUS_CODES)?,
        "kind" | "span.kind" => exact(SPAN_KIND, &SPAN_KINDS)?,
        "statusMessage" => contains(col(STATUS_MESSAGE), value),
        "error" => match value {
            "true" => col(STATUS_CODE).eq(lit("ERROR")),
            "false" => col(STATUS_CODE).not_eq(lit("ERROR")),
            _ => return Err(format!("error={value}: use true or false")),
        },
        _ => contains(attribute(key), value),
    })
}

/// `value` appears in `text`, ignoring case; `%`, `_` and `\` in it are literal.
fn contains(text: Expr, value: &str) -> Expr {
    let mut pattern = String::from("%");
    for c in value.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    Expr::Like(Like::new(
        false,
        Box::new(text),
        Box::new(lit(pattern)),
        Some('\\'),
        true,
    ))
}

/// A matching span as Tempo lists it in a span set, with the searched tags it carries.
fn span_json(span: &SpanRecord, tag_keys: &[String]) -> Value {
    let mut attributes = Vec::new();
    for key in tag_keys {
        let value = match key.as_str() {
            "service.name" => json!({ "stringValue": span.service_name }),
            "name" => json!({ "stringValue": span.span_name }),
            "status" | "status.code" | "error" => {
                json!({ "stringValue": span.status_code.to_ascii_lowercase() })
            }
            "kind" | "span.kind" => json!({ "stringValue": span.span_kind.to_ascii_lowercase() }),
            _ => match span
                .attributes
                .iter()
                .chain(&span.resource_attributes)
                .find(|a| &a.key == key)
            {
                Some(found) => otlp_json_attribute(found),
                None => continue,
            },
        };
        attributes.push(json!({ "key": key, "value": value }));
    }
    json!({
        "spanID": span.span_id,
        "name": span.span_name,
        "startTimeUnixNano": span.start_ns.to_string(),
        "durationNanos": span.duration_ns.to_string(),
        "attributes": attributes,
    })
}

/// Where tags live: span attributes, resource attributes, or the span's own fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Resource,
    Span,
    Intrinsic,
}

impl Scope {
    fn name(self) -> &'static str {
        match self {
            Scope::Resource => "resource",
            Scope::Span => "span",
            Scope::Intrinsic => "intrinsic",
        }
    }

    /// The scopes a `scope` parameter asks for; by default resource and span, as Tempo.
    fn parse(value: Option<&str>, default: &[Scope]) -> Result<Vec<Scope>, String> {
        Ok(match value {
            None | Some("all") => default.to_vec(),
            Some("resource") => vec![Scope::Resource],
            Some("span") => vec![Scope::Span],
            Some("intrinsic") => vec![Scope::Intrinsic],
            Some(other) => {
                return Err(format!(
                    "scope={other}: use resource, span, intrinsic or all"
                ));
            }
        })
    }

    fn columns(self) -> Option<(&'static str, &'static str)> {
        match self {
            Scope::Resource => Some((RESOURCE_ATTRIBUTES, RESOURCE_ATTRIBUTE_TYPES)),
            Scope::Span => Some((ATTRIBUTES, ATTRIBUTE_TYPES)),
            Scope::Intrinsic => None,
        }
    }
}

/// Attribute keys of one scope, or the intrinsics; sorted.
async fn tag_names(
    engine: &QueryEngine,
    scope: Scope,
    window: Window,
    limit: usize,
) -> Result<Vec<String>, QueryError> {
    let Some((map, _)) = scope.columns() else {
        return Ok(INTRINSICS.iter().map(|s| s.to_string()).collect());
    };
    let frame = engine
        .context()?
        .table("spans")
        .await?
        .filter(started_within(window.from_ns, window.to_ns))?
        .select(vec![map_keys(col(map)).alias("key")])?
        .unnest_columns(&["key"])?
        .aggregate(vec![col("key")], vec![])?
        .sort(vec![col("key").sort(true, false)])?
        .limit(0, Some(limit))?;
    Ok(string_column(&engine.collect(frame).await?.batches, 0))
}

/// `GET /api/search/tags?scope=&start=&end=&limit=`: `{"tagNames": [...]}`.
pub async fn tags(
    State(state): State<AppState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let (scopes, window, limit) = match tag_names_request(&pairs, &[Scope::Resource, Scope::Span]) {
        Ok(request) => request,
        Err(message) => return bad_request(&message),
    };
    let mut names = Vec::new();
    for scope in scopes {
        match tag_names(&state.query, scope, window, limit).await {
            Ok(found) => names.extend(found),
            Err(e) => return query_failure(e),
        }
    }
    names.sort();
    names.dedup();
    names.truncate(limit);
    axum::Json(json!({ "tagNames": names })).into_response()
}

/// `GET /api/v2/search/tags?scope=&start=&end=&limit=`: tag names by scope.
pub async fn tags_v2(
    State(state): State<AppState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let all = [Scope::Resource, Scope::Span, Scope::Intrinsic];
    let (scopes, window, limit) = match tag_names_request(&pairs, &all) {
        Ok(request) => request,
        Err(message) => return bad_request(&message),
    };
    let mut out = Vec::new();
    for scope in scopes {
        match tag_names(&state.query, scope, window, limit).await {
            Ok(names) => out.push(json!({ "name": scope.name(), "tags": names })),
            Err(e) => return query_failure(e),
        }
    }
    axum::Json(json!({ "scopes": out })).into_response()
}

/// The scopes (by default `all`), window and limit of a request for tag names.
fn tag_names_request(
    pairs: &[(String, String)],
    all: &[Scope],
) -> Result<(Vec<Scope>, Window, usize), String> {
    let scopes = Scope::parse(param(pairs, "scope"), all)?;
    let (window, limit) = tag_request(pairs)?;
    Ok((scopes, window, limit))
}

/// The window and limit of a request for tag names or values.
fn tag_request(pairs: &[(String, String)]) -> Result<(Window, usize), String> {
    Ok((
        window_of(pairs, now_ns())?,
        limit_of(pairs, "limit", DEFAULT_TAG_LIMIT, MAX_TAG_LIMIT)?,
    ))
}

/// A value of a tag and its type as Tempo names types.
type TypedValue = (String, &'static str);

/// `GET /api/search/tag/{tag}/values?start=&end=&limit=`: `{"tagValues": [...]}`, where
/// `tag` is an attribute of spans or resources, or `service.name`, `name`, `status`, `kind`.
pub async fn tag_values(
    State(state): State<AppState>,
    Path(tag): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let (window, limit) = match tag_request(&pairs) {
        Ok(request) => request,
        Err(message) => return bad_request(&message),
    };
    let scopes = match tag.as_str() {
        "service.name" | "name" | "status" | "kind" | "statusMessage" => vec![Scope::Intrinsic],
        _ => vec![Scope::Span, Scope::Resource],
    };
    match values_of(&state.query, &tag, &scopes, window, None, limit).await {
        Ok(values) => {
            let values: Vec<String> = values.into_iter().map(|(value, _)| value).collect();
            axum::Json(json!({ "tagValues": values })).into_response()
        }
        Err(e) => query_failure(e),
    }
}

/// `GET /api/v2/search/tag/{tag}/values`: `tag` is a TraceQL name (`resource.service.name`,
/// `span.http.route`, `.http.route` for either, or `name`, `status`, `kind`,
/// `statusMessage`); values come with their types.
pub async fn tag_values_v2(
    State(state): State<AppState>,
    Path(tag): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let (window, limit) = match tag_request(&pairs) {
        Ok(request) => request,
        Err(message) => return bad_request(&message),
    };
    let (key, scopes) = match traceql_name(&tag) {
        Ok(parsed) => parsed,
        Err(message) => return bad_request(&message),
    };
    // Values seen on spans that match `q`; as in Tempo, a `q` that does not parse (Grafana
    // sends half-typed ones) filters nothing.
    let filter = param(&pairs, "q")
        .and_then(|q| traceql::parse(q).ok())
        .and_then(|filter| filter.condition);
    match values_of(&state.query, key, &scopes, window, filter, limit).await {
        Ok(values) => {
            let values: Vec<Value> = values
                .into_iter()
                .map(|(value, kind)| json!({ "type": kind, "value": value }))
                .collect();
            axum::Json(json!({ "tagValues": values })).into_response()
        }
        Err(e) => query_failure(e),
    }
}

/// A TraceQL attribute name as the key and the scopes to look in.
fn traceql_name(tag: &str) -> Result<(&str, Vec<Scope>), String> {
    let tag = tag.strip_prefix("span:").unwrap_or(tag);
    let scoped = |key: &'static str| -> Result<(&'static str, Vec<Scope>), String> {
        Ok((key, vec![Scope::Intrinsic]))
    };
    match tag {
        "name" => scoped("name"),
        "status" => scoped("status"),
        "kind" => scoped("kind"),
        "statusMessage" => scoped("statusMessage"),
        "resource.service.name" | ".service.name" => scoped("service.name"),
        _ => {
            let (key, scopes) = if let Some(key) = tag.strip_prefix("resource.") {
                (key, vec![Scope::Resource])
            } else if let Some(key) = tag.strip_prefix("span.") {
                (key, vec![Scope::Span])
            } else if let Some(key) = tag.strip_prefix('.') {
                (key, vec![Scope::Span, Scope::Resource])
            } else {
                return Err(format!(
                    "{tag:?}: name an attribute as resource.key, span.key or .key, or one of \
                     name, status, kind, statusMessage"
                ));
            };
            if key.is_empty() {
                return Err(format!("{tag:?}: the attribute name is empty"));
            }
            Ok((key, scopes))
        }
    }
}

/// Distinct values of `key` in the scopes, sorted, with their types.
async fn values_of(
    engine: &QueryEngine,
    key: &str,
    scopes: &[Scope],
    window: Window,
    filter: Option<Expr>,
    limit: usize,
) -> Result<Vec<TypedValue>, QueryError> {
    let mut spans = started_within(window.from_ns, window.to_ns);
    if let Some(filter) = filter {
        spans = spans.and(filter);
    }
    let mut values: Vec<TypedValue> = Vec::new();
    for &scope in scopes {
        let (value, kind) = match scope.columns() {
            Some((map, types)) => {
                // The type letter sits at the key's position in the map.
                let position = cast(
                    array_position(map_keys(col(map)), lit(key), lit(1i64)),
                    DataType::Int64,
                );
                (
                    get_field(col(map), key),
                    substring(col(types), position, lit(1i64)),
                )
            }
            None => match key {
                "service.name" => (col(SERVICE_NAME), lit("s")),
                "name" => (col(SPAN_NAME), lit("s")),
                "statusMessage" => (col(STATUS_MESSAGE), lit("s")),
                "status" => (lower(col(STATUS_CODE)), lit("k")),
                "kind" => (lower(col(SPAN_KIND)), lit("k")),
                _ => continue,
            },
        };
        let frame = engine
            .context()?
            .table("spans")
            .await?
            .filter(spans.clone())?
            .select(vec![value.alias("value"), kind.alias("kind")])?
            .filter(col("value").is_not_null())?
            .aggregate(vec![col("value"), col("kind")], vec![])?
            .sort(vec![col("value").sort(true, false)])?
            .limit(0, Some(limit))?;
        let output = engine.collect(frame).await?;
        for batch in &output.batches {
            let texts = batch.column(0).as_string::<i32>();
            let kinds = batch.column(1).as_string::<i32>();
            for row in 0..batch.num_rows() {
                let kind = match kinds.value(row) {
                    "k" => "keyword",
                    letter => match letter.chars().next().and_then(AttributeType::from_letter) {
                        Some(AttributeType::Int) => "int",
                        Some(AttributeType::Double) => "float",
                        Some(AttributeType::Bool) => "bool",
                        _ => "string",
                    },
                };
                values.push((texts.value(row).to_owned(), kind));
            }
        }
    }
    values.sort();
    values.dedup();
    values.truncate(limit);
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::pairs;

    #[test]
    fn logfmt_reads_plain_and_quoted_values() {
        assert_eq!(
            logfmt(r#" service.name=cart  http.url="/api/my api" q="a \"b\"""#).unwrap(),
            vec![
                ("service.name".into(), "cart".into()),
                ("http.url".into(), "/api/my api".into()),
                ("q".into(), "a \"b\"".into()),
            ]
        );
        assert!(logfmt("").unwrap().is_empty());
        assert!(logfmt("novalue").is_err());
        assert!(logfmt("k=\"open").is_err());
    }

    #[test]
    fn traceql_names_say_where_to_look() {
        assert_eq!(
            traceql_name(".http.route").unwrap(),
            ("http.route", vec![Scope::Span, Scope::Resource])
        );
        assert_eq!(
            traceql_name("resource.service.name").unwrap(),
            ("service.name", vec![Scope::Intrinsic])
        );
        assert_eq!(
            traceql_name("resource.host.name").unwrap(),
            ("host.name", vec![Scope::Resource])
        );
        assert_eq!(traceql_name("status").unwrap().0, "status");
        assert!(traceql_name("http.route").is_err());
        assert!(traceql_name("span.").is_err());
    }

    #[test]
    fn search_parameters_are_checked() {
        let (search, keys, spss) = parse_search(
            &pairs(&[
                ("tags", "service.name=order status=error"),
                ("minDuration", "100ms"),
                ("start", "1795000000"),
                ("end", "1795003600"),
            ]),
            0,
        )
        .unwrap();
        assert_eq!(search.window.from_ns, 1_795_000_000_000_000_000);
        assert_eq!(search.min_trace_duration_ns, Some(100_000_000));
        assert_eq!(search.conditions.len(), 2);
        assert_eq!(search.limit, DEFAULT_LIMIT);
        assert_eq!(keys, vec!["service.name", "status"]);
        assert_eq!(spss, DEFAULT_SPANS_PER_SET);
        for bad in [
            vec![("tags", "status=broken")],
            vec![("tags", "kind=sideways")],
            vec![("limit", "0")],
            vec![("start", "5"), ("end", "4")],
            vec![("start", "yesterday")],
            vec![("q", "{ status = error } | count() > 1")],
        ] {
            assert!(
                parse_search(&pairs(&bad), 1_000_000_000_000).is_err(),
                "{bad:?}"
            );
        }
    }
}
