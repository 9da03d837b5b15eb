//! The dashboard's trace pages: `/traces` (a search form and the traces it finds) and
//! `/traces/{id}` (one trace as a waterfall, with every span's details).

use std::collections::HashMap;

use askama::Template;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use callwatch_storage::{Attribute, SpanRecord};

use crate::AppState;
use crate::charts::{Chart, ScatterPoint};
use crate::dashboard::{Frame, datetime, error_page, html, nanos_as_ms, param};
use crate::params::{now_ns, rfc3339};
use crate::traces::{
    Search, TraceSummary, find_traces, normalize_trace_id, operation_names, trace_spans,
};

/// The search form's fields, as sent.
#[derive(Default)]
struct Form {
    service: String,
    operation: String,
    min_duration: String,
    max_duration: String,
    errors: String,
    attribute: String,
    trace_id: String,
}

/// Traces the page lists and plots unless `limit` says otherwise.
const PAGE_LIMIT: &str = "100";
/// Operations the form offers, at most.
const MAX_OPERATIONS: usize = 500;

struct TraceRow {
    trace_id: String,
    href: String,
    root: String,
    operation: String,
    start: String,
    duration: String,
    spans: i64,
    errors: i64,
}

#[derive(Template)]
#[template(path = "traces.html")]
struct TracesPage {
    frame: Frame,
    form: Form,
    searched: bool,
    traces: Vec<TraceRow>,
    /// Duration over time of the traces found, as SVG.
    scatter: String,
    services: Vec<String>,
    operations: Vec<String>,
    message: String,
}

pub async fn traces(
    State(state): State<AppState>,
    uri: OriginalUri,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let frame = match Frame::new("Traces", uri.path(), &params, "off")
        .map(|frame| frame.with_logout(&state.auth))
    {
        Ok(frame) => frame,
        Err(message) => return error_page(StatusCode::BAD_REQUEST, uri.path(), &message),
    };
    let field = |name: &str| param(&params, name).unwrap_or_default().trim().to_string();
    let form = Form {
        service: field("service"),
        operation: field("operation"),
        min_duration: field("min_duration"),
        max_duration: field("max_duration"),
        errors: field("errors"),
        attribute: field("attr"),
        trace_id: field("trace_id"),
    };
    // A trace id goes straight to its trace.
    if !form.trace_id.is_empty() {
        return match normalize_trace_id(&form.trace_id) {
            Some(id) => Redirect::to(&frame.trace_link(&id)).into_response(),
            None => error_page(
                StatusCode::BAD_REQUEST,
                uri.path(),
                &format!("{:?} is not a trace id: up to 32 hex digits", form.trace_id),
            ),
        };
    }
    let mut pairs: Vec<(String, String)> = vec![
        ("from".into(), frame.from_text.clone()),
        ("to".into(), frame.to_text.clone()),
    ];
    for (key, value) in [
        ("service", &form.service),
        ("operation", &form.operation),
        ("min_duration", &form.min_duration),
        ("max_duration", &form.max_duration),
        ("attr", &form.attribute),
    ] {
        if !value.is_empty() {
            pairs.push((key.into(), value.clone()));
        }
    }
    match form.errors.as_str() {
        "only" => pairs.push(("error".into(), "true".into())),
        "none" => pairs.push(("error".into(), "false".into())),
        _ => {}
    }
    pairs.push((
        "limit".into(),
        param(&params, "limit").unwrap_or(PAGE_LIMIT).to_string(),
    ));
    let mut services = service_names(&state).await;
    keep_chosen(&mut services, &form.service);
    let service = (!form.service.is_empty()).then_some(form.service.as_str());
    let mut operations = operation_names(&state.query, frame.window, service, MAX_OPERATIONS)
        .await
        .unwrap_or_default();
    keep_chosen(&mut operations, &form.operation);
    // Without a search the page shows the window's latest traces, as Jaeger's does.
    let searched = params.iter().any(|(k, _)| k == "search");
    let (found, message) = match Search::parse(&pairs, now_ns()) {
        Err(message) => (Vec::new(), message),
        Ok(search) => match find_traces(&state.query, &search).await {
            Ok(found) => (found, String::new()),
            Err(e) => (Vec::new(), e.to_string()),
        },
    };
    let scatter = Chart::scatter(
        "trace duration over time",
        frame.window.from_ns,
        frame.window.to_ns,
        found
            .iter()
            .map(|t| ScatterPoint {
                start_ns: t.start_ns,
                duration_ms: t.duration_ns as f64 / 1e6,
                failed: t.error_count > 0,
                href: frame.trace_link(&t.trace_id),
                title: format!(
                    "{} {} · {} · {} spans{}",
                    t.root_service,
                    t.root_operation,
                    nanos_as_ms(t.duration_ns),
                    t.span_count,
                    if t.error_count > 0 { " · failed" } else { "" }
                ),
            })
            .collect(),
    )
    .svg();
    let traces = found.iter().map(|t| trace_row(t, &frame)).collect();
    let status = if message.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let mut response = html(&TracesPage {
        frame,
        form,
        searched,
        traces,
        scatter,
        services,
        operations,
        message,
    });
    *response.status_mut() = status;
    response
}

/// Services of the window's graph, for the form's suggestions.
async fn service_names(state: &AppState) -> Vec<String> {
    let to_ns = now_ns();
    let window = callwatch_query::graph::Window {
        from_ns: to_ns - 24 * 3_600_000_000_000,
        to_ns,
    };
    match callwatch_query::graph::graph_of(&state.query, window, state.health).await {
        Ok(graph) => graph
            .nodes
            .into_iter()
            .filter(|n| n.kind == "service")
            .map(|n| n.id)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A choice the form was sent stays on its list, known or not.
fn keep_chosen(names: &mut Vec<String>, chosen: &str) {
    if !chosen.is_empty() && !names.iter().any(|n| n == chosen) {
        names.push(chosen.to_string());
        names.sort();
    }
}

fn trace_row(trace: &TraceSummary, frame: &Frame) -> TraceRow {
    TraceRow {
        href: frame.trace_link(&trace.trace_id),
        trace_id: trace.trace_id.clone(),
        root: trace.root_service.clone(),
        operation: trace.root_operation.clone(),
        start: rfc3339(trace.start_ns),
        duration: nanos_as_ms(trace.duration_ns),
        spans: trace.span_count,
        errors: trace.error_count,
    }
}

/// A span as its waterfall row shows it.
struct SpanRow {
    span_id: String,
    depth: usize,
    indent: usize,
    service: String,
    name: String,
    kind: String,
    error: bool,
    status_message: String,
    offset: String,
    duration: String,
    /// The span's time not spent in its children.
    self_time: String,
    /// The span's service, as an index into the legend's colours.
    colour: usize,
    /// Left edge and width of the bar, in percent of the trace.
    left: f64,
    width: f64,
    attributes: Vec<(String, String)>,
    resource: Vec<(String, String)>,
    events: Vec<EventRow>,
    links: Vec<LinkRow>,
}

struct EventRow {
    offset: String,
    name: String,
    attributes: Vec<(String, String)>,
}

struct LinkRow {
    trace_id: String,
    span_id: String,
    href: String,
}

#[derive(Template)]
#[template(path = "trace.html")]
struct TracePage {
    frame: Frame,
    trace_id: String,
    started: String,
    duration: String,
    services: usize,
    errors: usize,
    spans: Vec<SpanRow>,
    /// Services in order of their first span, each with its colour's index.
    legend: Vec<(String, usize)>,
    /// The time axis: (percent of the trace, label).
    ticks: Vec<(f64, String)>,
}

/// Colours the waterfall has for services; more services than this share them.
const SERVICE_COLOURS: usize = 12;

/// Each span's own time: its duration less the part of it its children cover, counted
/// once where children overlap.
fn self_times(spans: &[SpanRecord]) -> HashMap<&str, i64> {
    let mut children: HashMap<&str, Vec<(i64, i64)>> = HashMap::new();
    for span in spans {
        if let Some(parent) = span.parent_span_id.as_deref() {
            children
                .entry(parent)
                .or_default()
                .push((span.start_ns, span.end_ns));
        }
    }
    spans
        .iter()
        .map(|span| {
            let mut covered = 0i64;
            let mut reached = span.start_ns;
            let mut kids = children
                .get(span.span_id.as_str())
                .cloned()
                .unwrap_or_default();
            kids.sort_unstable();
            for (start, end) in kids {
                let (start, end) = (start.max(reached), end.min(span.end_ns));
                if end > start {
                    covered += end - start;
                    reached = end;
                }
            }
            let own = (span.end_ns - span.start_ns).max(0) - covered;
            (span.span_id.as_str(), own.max(0))
        })
        .collect()
}

/// Five ticks from the trace's start to its end, labelled in its own unit.
fn time_ticks(total_ns: i64) -> Vec<(f64, String)> {
    (0..=4)
        .map(|i| (25.0 * i as f64, nanos_as_ms(total_ns.max(0) / 4 * i)))
        .collect()
}

fn pairs_of(attributes: &[Attribute]) -> Vec<(String, String)> {
    attributes
        .iter()
        .map(|a| (a.key.clone(), a.value.clone().unwrap_or_default()))
        .collect()
}

/// Spans in tree order (each parent before its children, siblings by start), with depth.
/// Spans whose parent is missing are roots.
fn tree_order(spans: &[SpanRecord]) -> Vec<(usize, &SpanRecord)> {
    let ids: HashMap<&str, usize> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.span_id.as_str(), i))
        .collect();
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, span) in spans.iter().enumerate() {
        match span.parent_span_id.as_deref().and_then(|p| ids.get(p)) {
            Some(&parent) if parent != i => children.entry(parent).or_default().push(i),
            _ => roots.push(i),
        }
    }
    let mut ordered = Vec::with_capacity(spans.len());
    let mut seen = vec![false; spans.len()];
    let mut stack: Vec<(usize, usize)> = roots.into_iter().rev().map(|i| (0, i)).collect();
    while let Some((depth, i)) = stack.pop() {
        // A cycle of parent ids must not loop.
        if std::mem::replace(&mut seen[i], true) {
            continue;
        }
        ordered.push((depth, &spans[i]));
        if let Some(kids) = children.get(&i) {
            stack.extend(kids.iter().rev().map(|&k| (depth + 1, k)));
        }
    }
    // Spans caught in a parent cycle are shown at the top level.
    for (i, span) in spans.iter().enumerate() {
        if !seen[i] {
            ordered.push((0, span));
        }
    }
    ordered
}

pub async fn trace(
    State(state): State<AppState>,
    uri: OriginalUri,
    Path(trace_id): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let frame = match Frame::new("Trace", uri.path(), &params, "off")
        .map(|frame| frame.with_logout(&state.auth))
    {
        Ok(frame) => frame,
        Err(message) => return error_page(StatusCode::BAD_REQUEST, uri.path(), &message),
    };
    let Some(id) = normalize_trace_id(&trace_id) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            uri.path(),
            &format!("{trace_id:?} is not a trace id: up to 32 hex digits"),
        );
    };
    let spans = match trace_spans(&state.query, &id).await {
        Ok(spans) => spans,
        Err(e) => return error_page(StatusCode::SERVICE_UNAVAILABLE, uri.path(), &e.to_string()),
    };
    if spans.is_empty() {
        return error_page(
            StatusCode::NOT_FOUND,
            uri.path(),
            &format!("no spans of trace {id} are stored"),
        );
    }
    let start = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
    let end = spans.iter().map(|s| s.end_ns).max().unwrap_or(start);
    let total = (end - start).max(1) as f64;
    let own = self_times(&spans);
    let ordered = tree_order(&spans);
    let mut legend: Vec<(String, usize)> = Vec::new();
    for (_, span) in &ordered {
        if !legend.iter().any(|(name, _)| *name == span.service_name) {
            legend.push((span.service_name.clone(), legend.len() % SERVICE_COLOURS));
        }
    }
    let colour_of = |service: &str| {
        legend
            .iter()
            .find(|(name, _)| name == service)
            .map_or(0, |(_, colour)| *colour)
    };
    let rows = ordered
        .into_iter()
        .map(|(depth, span)| {
            let left = 100.0 * (span.start_ns - start) as f64 / total;
            SpanRow {
                span_id: span.span_id.clone(),
                depth,
                indent: depth.min(20) * 14,
                service: span.service_name.clone(),
                name: span.span_name.clone(),
                kind: span.span_kind.clone(),
                error: span.status_code == "ERROR",
                status_message: span.status_message.clone().unwrap_or_default(),
                offset: nanos_as_ms(span.start_ns - start),
                duration: nanos_as_ms(span.duration_ns),
                self_time: nanos_as_ms(own.get(span.span_id.as_str()).copied().unwrap_or(0)),
                colour: colour_of(&span.service_name),
                left: left.clamp(0.0, 100.0),
                width: (100.0 * span.duration_ns.max(0) as f64 / total)
                    .clamp(0.2, 100.0 - left.clamp(0.0, 99.8)),
                attributes: pairs_of(&span.attributes),
                resource: pairs_of(&span.resource_attributes),
                events: span
                    .events
                    .iter()
                    .map(|e| EventRow {
                        offset: nanos_as_ms(e.time_ns - start),
                        name: e.name.clone(),
                        attributes: pairs_of(&e.attributes),
                    })
                    .collect(),
                links: span
                    .links
                    .iter()
                    .map(|l| LinkRow {
                        href: frame.trace_link(&l.trace_id),
                        trace_id: l.trace_id.clone(),
                        span_id: l.span_id.clone(),
                    })
                    .collect(),
            }
        })
        .collect();
    let page = TracePage {
        trace_id: id,
        started: datetime(start),
        duration: nanos_as_ms(end - start),
        services: legend.len(),
        ticks: time_ticks(end - start),
        legend,
        errors: spans.iter().filter(|s| s.status_code == "ERROR").count(),
        spans: rows,
        frame,
    };
    html(&page)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, parent: Option<&str>, start_ns: i64) -> SpanRecord {
        SpanRecord {
            span_id: id.into(),
            parent_span_id: parent.map(str::to_string),
            start_ns,
            ..SpanRecord::default()
        }
    }

    #[test]
    fn self_time_leaves_out_children_once_even_where_they_overlap() {
        let timed = |id: &str, parent: Option<&str>, start_ns: i64, end_ns: i64| SpanRecord {
            end_ns,
            ..span(id, parent, start_ns)
        };
        let spans = [
            timed("root", None, 0, 100),
            timed("a", Some("root"), 10, 50),
            timed("b", Some("root"), 30, 70),
            timed("late", Some("root"), 90, 130),
            timed("leaf", Some("a"), 20, 30),
        ];
        let own = self_times(&spans);
        // Children cover 10..70 and 90..100 of the root's 100.
        assert_eq!(own["root"], 30);
        assert_eq!(own["a"], 30);
        assert_eq!(own["b"], 40);
        assert_eq!(own["leaf"], 10);
    }

    #[test]
    fn spans_come_in_tree_order_and_cycles_do_not_loop() {
        let spans = [
            span("c", Some("b"), 3),
            span("a", None, 1),
            span("b", Some("a"), 2),
            span("d", Some("a"), 4),
            span("x", Some("y"), 5),
            span("y", Some("x"), 6),
            span("o", Some("missing"), 7),
        ];
        let order: Vec<(usize, &str)> = tree_order(&spans)
            .into_iter()
            .map(|(depth, s)| (depth, s.span_id.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                (0, "a"),
                (1, "b"),
                (2, "c"),
                (1, "d"),
                (0, "o"),
                (0, "x"),
                (0, "y")
            ]
        );
    }
}
