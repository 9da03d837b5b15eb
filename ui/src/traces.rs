//! Trace look-ups: `GET /api/v1/traces/{trace_id}` (every span of one trace) and
//! `GET /api/v1/traces?...` (traces with a span that matches, newest first).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use callwatch_query::{QueryEngine, QueryError};
use callwatch_storage::schema::{
    ATTRIBUTES, AttributeType, DURATION_NS, END_TIME, PARENT_SPAN_ID, RESOURCE_ATTRIBUTES,
    SERVICE_NAME, SPAN_NAME, START_TIME, STATUS_CODE, TRACE_ID,
};
use callwatch_storage::{Attribute, SpanRecord, span_records};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Int64Type, TimestampNanosecondType};
use datafusion::common::ScalarValue;
use datafusion::functions::core::expr_fn::{coalesce, get_field};
use datafusion::functions_aggregate::expr_fn::{count, first_value, max, min, sum};
use datafusion::logical_expr::{Expr, JoinType, SortExpr, col, lit, when};
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::params::{Window, now_ns, parse_duration, rfc3339};
use crate::sql::error;

/// Traces a search returns unless `limit` says otherwise, and the most it may ask for.
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 1000;

pub async fn trace(State(state): State<AppState>, Path(trace_id): Path<String>) -> Response {
    let Some(trace_id) = normalize_trace_id(&trace_id) else {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("{trace_id:?} is not a trace id: up to 32 hex digits"),
        );
    };
    match trace_spans(&state.query, &trace_id).await {
        Ok(spans) if spans.is_empty() => error(
            StatusCode::NOT_FOUND,
            &format!("no spans of trace {trace_id} are stored"),
        ),
        Ok(spans) => axum::Json(json!({
            "trace_id": trace_id,
            "spans": spans.iter().map(span_json).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => query_error(e),
    }
}

pub async fn search(
    State(state): State<AppState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let search = match Search::parse(&pairs, now_ns()) {
        Ok(search) => search,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    match find_traces(&state.query, &search).await {
        Ok(traces) => axum::Json(json!({
            "from": rfc3339(search.window.from_ns),
            "to": rfc3339(search.window.to_ns),
            "traces": traces.iter().map(TraceSummary::json).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => query_error(e),
    }
}

/// Lowercase, left-padded to 32 digits as Jaeger does; `None` unless it is 1 to 32 hex
/// digits and not all zero.
pub(crate) fn normalize_trace_id(text: &str) -> Option<String> {
    let valid = (1..=32).contains(&text.len()) && text.chars().all(|c| c.is_ascii_hexdigit());
    let id = format!("{:0>32}", text.to_ascii_lowercase());
    (valid && id.chars().any(|c| c != '0')).then_some(id)
}

pub(crate) async fn trace_spans(
    engine: &QueryEngine,
    trace_id: &str,
) -> Result<Vec<SpanRecord>, QueryError> {
    spans_of_traces(engine, &[trace_id.to_owned()]).await
}

/// Every span of the traces, oldest first.
pub(crate) async fn spans_of_traces(
    engine: &QueryEngine,
    trace_ids: &[String],
) -> Result<Vec<SpanRecord>, QueryError> {
    if trace_ids.is_empty() {
        return Ok(Vec::new());
    }
    let frame = engine
        .context()?
        .table("spans")
        .await?
        .filter(in_traces(trace_ids))?
        .sort(vec![col(START_TIME).sort(true, false)])?;
    let output = engine.collect(frame).await?;
    let mut spans = Vec::new();
    for batch in &output.batches {
        spans.extend(span_records(batch).map_err(|e| QueryError::Execution(e.to_string()))?);
    }
    Ok(spans)
}

/// What a span must have for its trace to be found.
#[derive(Debug, Default)]
pub(crate) struct Search {
    pub(crate) window: Window,
    pub(crate) service: Option<String>,
    pub(crate) operation: Option<String>,
    /// Bounds of the matching span's duration.
    pub(crate) min_duration_ns: Option<i64>,
    pub(crate) max_duration_ns: Option<i64>,
    /// Bounds of the whole trace's duration (first start to last end within the window).
    pub(crate) min_trace_duration_ns: Option<i64>,
    pub(crate) max_trace_duration_ns: Option<i64>,
    pub(crate) error: Option<bool>,
    /// `key:value` pairs that a span or its resource must have.
    pub(crate) attributes: Vec<(String, String)>,
    /// More conditions on the same span, from the APIs that speak other query languages.
    pub(crate) conditions: Vec<Expr>,
    pub(crate) limit: usize,
}

impl Search {
    pub(crate) fn parse(pairs: &[(String, String)], now_ns: i64) -> Result<Self, String> {
        let mut search = Search {
            limit: DEFAULT_LIMIT,
            ..Search::default()
        };
        let (mut from, mut to) = (None, None);
        for (key, value) in pairs {
            let value = value.as_str();
            match key.as_str() {
                "service" => search.service = Some(value.to_owned()),
                "operation" => search.operation = Some(value.to_owned()),
                "min_duration" => search.min_duration_ns = Some(parse_duration(key, value)?),
                "max_duration" => search.max_duration_ns = Some(parse_duration(key, value)?),
                "error" => {
                    search.error = Some(match value {
                        "true" => true,
                        "false" => false,
                        _ => return Err(format!("error={value}: use true or false")),
                    })
                }
                "attr" => {
                    let Some((name, wanted)) = value.split_once(':') else {
                        return Err(format!("attr={value}: use key:value"));
                    };
                    search.attributes.push((name.to_owned(), wanted.to_owned()));
                }
                "from" => from = Some(value),
                "to" => to = Some(value),
                "limit" => {
                    search.limit = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| format!("limit={value}: use 1 to {MAX_LIMIT}"))?;
                }
                _ => {
                    return Err(format!(
                        "unknown parameter {key:?}: use service, operation, min_duration, \
                         max_duration, error, attr, from, to or limit"
                    ));
                }
            }
        }
        search.window = Window::parse(from, to, now_ns)?;
        Ok(search)
    }

    /// The condition on one span.
    pub(crate) fn predicate(&self) -> Expr {
        let mut predicate = started_within(self.window.from_ns, self.window.to_ns);
        if let Some(service) = &self.service {
            predicate = predicate.and(col(SERVICE_NAME).eq(lit(service.as_str())));
        }
        if let Some(operation) = &self.operation {
            predicate = predicate.and(col(SPAN_NAME).eq(lit(operation.as_str())));
        }
        if let Some(ns) = self.min_duration_ns {
            predicate = predicate.and(col(DURATION_NS).gt_eq(lit(ns)));
        }
        if let Some(ns) = self.max_duration_ns {
            predicate = predicate.and(col(DURATION_NS).lt_eq(lit(ns)));
        }
        match self.error {
            Some(true) => predicate = predicate.and(col(STATUS_CODE).eq(lit("ERROR"))),
            Some(false) => predicate = predicate.and(col(STATUS_CODE).not_eq(lit("ERROR"))),
            None => {}
        }
        for (name, wanted) in &self.attributes {
            predicate = predicate.and(attribute_equals(name, wanted));
        }
        for condition in &self.conditions {
            predicate = predicate.and(condition.clone());
        }
        predicate
    }
}

/// The span's attribute `key`, or else its resource's.
pub(crate) fn attribute(key: &str) -> Expr {
    coalesce(vec![
        get_field(col(ATTRIBUTES), key),
        get_field(col(RESOURCE_ATTRIBUTES), key),
    ])
}

/// The span or its resource has attribute `key` with exactly this value.
pub(crate) fn attribute_equals(key: &str, value: &str) -> Expr {
    get_field(col(ATTRIBUTES), key)
        .eq(lit(value))
        .or(get_field(col(RESOURCE_ATTRIBUTES), key).eq(lit(value)))
}

/// The row (a span or a call) started in [from, to).
pub(crate) fn started_within(from_ns: i64, to_ns: i64) -> Expr {
    col(START_TIME)
        .gt_eq(timestamp(from_ns))
        .and(col(START_TIME).lt(timestamp(to_ns)))
}

/// The row belongs to one of these traces.
pub(crate) fn in_traces(trace_ids: &[String]) -> Expr {
    let ids = trace_ids.iter().map(|id| lit(id.as_str())).collect();
    col(TRACE_ID).in_list(ids, false)
}

pub(crate) fn timestamp(ns: i64) -> Expr {
    lit(ScalarValue::TimestampNanosecond(
        Some(ns),
        Some(Arc::from("UTC")),
    ))
}

pub(crate) async fn find_traces(
    engine: &QueryEngine,
    search: &Search,
) -> Result<Vec<TraceSummary>, QueryError> {
    let ids = matching_trace_ids(engine, search).await?;
    trace_summaries(engine, &ids).await
}

/// The newest traces (by their latest matching span) with a span that matches.
pub(crate) async fn matching_trace_ids(
    engine: &QueryEngine,
    search: &Search,
) -> Result<Vec<String>, QueryError> {
    let context = engine.context()?;
    let mut matching = context
        .table("spans")
        .await?
        .filter(search.predicate())?
        .aggregate(
            vec![col(TRACE_ID)],
            vec![max(col(START_TIME)).alias("newest")],
        )?;
    if search.min_trace_duration_ns.is_some() || search.max_trace_duration_ns.is_some() {
        // Only traces whose spans in the window last long enough (or short enough).
        let window = started_within(search.window.from_ns, search.window.to_ns);
        let mut durations = context.table("spans").await?.filter(window)?.aggregate(
            vec![col(TRACE_ID).alias("whole_trace")],
            vec![
                min(col(START_TIME)).alias("first_start"),
                max(col(END_TIME)).alias("last_end"),
            ],
        )?;
        let duration = || col("last_end") - col("first_start");
        if let Some(ns) = search.min_trace_duration_ns {
            durations = durations.filter(duration().gt_eq(interval(ns)))?;
        }
        if let Some(ns) = search.max_trace_duration_ns {
            durations = durations.filter(duration().lt_eq(interval(ns)))?;
        }
        matching = matching.join(
            durations,
            JoinType::LeftSemi,
            &[TRACE_ID],
            &["whole_trace"],
            None,
        )?;
    }
    let newest_first = matching
        .sort(vec![col("newest").sort(false, false)])?
        .limit(0, Some(search.limit))?;
    Ok(string_column(
        &engine.collect(newest_first).await?.batches,
        0,
    ))
}

/// Span names started in the window (of `service`, if given), sorted, at most `limit`.
pub(crate) async fn operation_names(
    engine: &QueryEngine,
    window: Window,
    service: Option<&str>,
    limit: usize,
) -> Result<Vec<String>, QueryError> {
    let mut predicate = started_within(window.from_ns, window.to_ns);
    if let Some(service) = service {
        predicate = predicate.and(col(SERVICE_NAME).eq(lit(service)));
    }
    let names = engine
        .context()?
        .table("spans")
        .await?
        .filter(predicate)?
        .aggregate(vec![col(SPAN_NAME)], vec![])?
        .sort(vec![col(SPAN_NAME).sort(true, false)])?
        .limit(0, Some(limit))?;
    Ok(string_column(&engine.collect(names).await?.batches, 0))
}

/// A duration literal to compare with the difference of two timestamps.
fn interval(ns: i64) -> Expr {
    lit(ScalarValue::DurationNanosecond(Some(ns)))
}

/// Each trace summed up over all its spans, also those outside the window; newest first.
pub(crate) async fn trace_summaries(
    engine: &QueryEngine,
    trace_ids: &[String],
) -> Result<Vec<TraceSummary>, QueryError> {
    if trace_ids.is_empty() {
        return Ok(Vec::new());
    }
    let root_first = || -> Vec<SortExpr> {
        vec![
            col(PARENT_SPAN_ID).is_not_null().sort(true, false),
            col(START_TIME).sort(true, false),
        ]
    };
    let failed = when(col(STATUS_CODE).eq(lit("ERROR")), lit(1i64))
        .otherwise(lit(0i64))
        .map_err(QueryError::from)?;
    let summary = engine
        .context()?
        .table("spans")
        .await?
        .filter(in_traces(trace_ids))?
        .aggregate(
            vec![col(TRACE_ID)],
            vec![
                first_value(col(SERVICE_NAME), root_first()).alias("root_service"),
                first_value(col(SPAN_NAME), root_first()).alias("root_operation"),
                min(col(START_TIME)).alias("start"),
                max(col(END_TIME)).alias("end"),
                count(lit(1i64)).alias("spans"),
                sum(failed).alias("errors"),
            ],
        )?
        .sort(vec![col("start").sort(false, false)])?;
    let output = engine.collect(summary).await?;
    let mut traces = Vec::new();
    for batch in &output.batches {
        traces.extend(summaries(batch)?);
    }
    Ok(traces)
}

pub(crate) fn string_column(batches: &[RecordBatch], index: usize) -> Vec<String> {
    batches
        .iter()
        .flat_map(|batch| {
            let column = batch.column(index).as_string::<i32>();
            (0..column.len())
                .filter(|&i| column.is_valid(i))
                .map(|i| column.value(i).to_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A trace found by a search, summed up over all its spans.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TraceSummary {
    pub(crate) trace_id: String,
    /// Of the root span, or of the earliest span when the root has not arrived.
    pub(crate) root_service: String,
    pub(crate) root_operation: String,
    pub(crate) start_ns: i64,
    pub(crate) duration_ns: i64,
    pub(crate) span_count: i64,
    pub(crate) error_count: i64,
}

impl TraceSummary {
    fn json(&self) -> Value {
        json!({
            "trace_id": self.trace_id,
            "root_service": self.root_service,
            "root_operation": self.root_operation,
            "start": rfc3339(self.start_ns),
            "duration_ns": self.duration_ns,
            "duration_ms": self.duration_ns as f64 / 1e6,
            "span_count": self.span_count,
            "error_count": self.error_count,
        })
    }
}

fn summaries(batch: &RecordBatch) -> Result<Vec<TraceSummary>, QueryError> {
    let wrong = || QueryError::Execution("the trace summary has unexpected column types".into());
    let text = |i: usize| batch.column(i).as_string_opt::<i32>().ok_or_else(wrong);
    let (ids, services, operations) = (text(0)?, text(1)?, text(2)?);
    let time = |i: usize| {
        batch
            .column(i)
            .as_primitive_opt::<TimestampNanosecondType>()
            .ok_or_else(wrong)
    };
    let (starts, ends) = (time(3)?, time(4)?);
    let spans = batch
        .column(5)
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(wrong)?;
    let errors = batch
        .column(6)
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(wrong)?;
    Ok((0..batch.num_rows())
        .map(|row| TraceSummary {
            trace_id: ids.value(row).to_owned(),
            root_service: services.value(row).to_owned(),
            root_operation: operations.value(row).to_owned(),
            start_ns: starts.value(row),
            duration_ns: ends.value(row) - starts.value(row),
            span_count: spans.value(row),
            error_count: errors.value(row),
        })
        .collect())
}

fn span_json(span: &SpanRecord) -> Value {
    json!({
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "trace_state": span.trace_state,
        "flags": span.flags,
        "service_name": span.service_name,
        "service_instance_id": span.service_instance_id,
        "service_version": span.service_version,
        "span_name": span.span_name,
        "span_kind": span.span_kind,
        "start_time": rfc3339(span.start_ns),
        "end_time": rfc3339(span.end_ns),
        "duration_ns": span.duration_ns,
        "status_code": span.status_code,
        "status_message": span.status_message,
        "attributes": attributes_json(&span.attributes),
        "dropped_attributes_count": span.dropped_attributes_count,
        "events": span.events.iter().map(|event| json!({
            "time": rfc3339(event.time_ns),
            "name": event.name,
            "attributes": attributes_json(&event.attributes),
            "dropped_attributes_count": event.dropped_attributes_count,
        })).collect::<Vec<_>>(),
        "dropped_events_count": span.dropped_events_count,
        "links": span.links.iter().map(|link| json!({
            "trace_id": link.trace_id,
            "span_id": link.span_id,
            "trace_state": link.trace_state,
            "flags": link.flags,
            "attributes": attributes_json(&link.attributes),
            "dropped_attributes_count": link.dropped_attributes_count,
        })).collect::<Vec<_>>(),
        "dropped_links_count": span.dropped_links_count,
        "resource_attributes": attributes_json(&span.resource_attributes),
        "scope_name": span.scope_name,
        "scope_version": span.scope_version,
        "scope_attributes": attributes_json(&span.scope_attributes),
    })
}

/// Attributes as a JSON object with their OTLP types: numbers as numbers, arrays and
/// kvlists as JSON, bytes as base64 text.
fn attributes_json(attributes: &[Attribute]) -> Value {
    let mut object = Map::new();
    for attribute in attributes {
        let Some(text) = &attribute.value else {
            object.insert(attribute.key.clone(), Value::Null);
            continue;
        };
        let typed = match attribute.kind {
            AttributeType::Bool => text.parse().ok().map(Value::Bool),
            AttributeType::Int => text.parse::<i64>().ok().map(Value::from),
            AttributeType::Double => text
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number),
            AttributeType::Array | AttributeType::KeyValueList => serde_json::from_str(text).ok(),
            AttributeType::String | AttributeType::Bytes | AttributeType::Empty => None,
        };
        // Text that is not what its type says (NaN, say) stays text.
        object.insert(
            attribute.key.clone(),
            typed.unwrap_or_else(|| Value::String(text.clone())),
        );
    }
    Value::Object(object)
}

fn query_error(query_error: QueryError) -> Response {
    error(StatusCode::BAD_REQUEST, &query_error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::pairs;

    #[test]
    fn trace_ids_are_padded_hex() {
        assert_eq!(
            normalize_trace_id("ABC").as_deref(),
            Some("00000000000000000000000000000abc")
        );
        assert_eq!(normalize_trace_id("0"), None);
        assert_eq!(normalize_trace_id("xyz"), None);
        assert_eq!(normalize_trace_id(&"a".repeat(33)), None);
    }

    #[test]
    fn search_parameters_are_checked() {
        let search = Search::parse(
            &pairs(&[
                ("service", "order-service"),
                ("min_duration", "1.5s"),
                ("error", "true"),
                ("attr", "order.id:o-1:2"),
                ("attr", "http.route:/v1/orders"),
                ("limit", "5"),
            ]),
            1_000_000_000_000,
        )
        .unwrap();
        assert_eq!(search.min_duration_ns, Some(1_500_000_000));
        assert_eq!(search.error, Some(true));
        assert_eq!(search.limit, 5);
        assert_eq!(
            search.attributes,
            vec![
                ("order.id".to_string(), "o-1:2".to_string()),
                ("http.route".to_string(), "/v1/orders".to_string()),
            ]
        );
        for bad in [
            ("limit", "0"),
            ("limit", "5000"),
            ("error", "yes"),
            ("attr", "novalue"),
            ("from", "later"),
            ("sevrice", "x"),
        ] {
            assert!(Search::parse(&pairs(&[bad]), 0).is_err(), "{bad:?}");
        }
    }
}
