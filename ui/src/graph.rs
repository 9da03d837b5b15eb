//! The dependency graph over HTTP: `/api/v1/graph`, `/api/v1/services`,
//! `/api/v1/services/{name}`, `/api/v1/edges` and `/api/v1/breakers`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use callwatch_query::graph::{CallsOf, Graph, Window as GraphWindow, graph_of, graph_with_calls};
use petgraph::Direction;
use serde_json::{Value, json};

use crate::AppState;
use crate::params::{Window, now_ns, parse_duration, rfc3339};
use crate::sql::error;

type Params = Query<HashMap<String, String>>;

/// A breakdown key: a call's name for something, if it has one.
fn key_of(value: Option<&Arc<str>>) -> Option<String> {
    value.map(|v| v.to_string())
}

/// The window the request names (default: the last 15 minutes).
fn window_of(params: &HashMap<String, String>) -> Result<GraphWindow, String> {
    let window = Window::parse(
        params.get("from").map(String::as_str),
        params.get("to").map(String::as_str),
        now_ns(),
    )?;
    Ok(GraphWindow {
        from_ns: window.from_ns,
        to_ns: window.to_ns,
    })
}

fn bad_request(message: String) -> Response {
    error(StatusCode::BAD_REQUEST, &message)
}

/// The graph of the window, from stored pieces: nodes and edges, no breakdowns.
async fn load(state: &AppState, params: &HashMap<String, String>) -> Result<Graph, Response> {
    let window = window_of(params).map_err(bad_request)?;
    graph_of(&state.query, window, state.health)
        .await
        .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()))
}

/// The graph of the window with the calls of a service or an edge, for breakdowns by
/// operation, instance, version and status.
async fn load_with_calls(
    state: &AppState,
    params: &HashMap<String, String>,
    of: &CallsOf,
) -> Result<Graph, Response> {
    let window = window_of(params).map_err(bad_request)?;
    graph_with_calls(&state.query, window, state.health, of)
        .await
        .map_err(|e| error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()))
}

/// `GET /api/v1/breakers?from=&to=`: every client → server breaker of the window.
pub async fn breakers(State(state): State<AppState>, Query(params): Params) -> Response {
    let window = match window_of(&params) {
        Ok(window) => window,
        Err(message) => return bad_request(message),
    };
    let breakers = state
        .query
        .breakers()
        .breakers(window.from_ns, window.to_ns);
    axum::Json(json!({
        "from": rfc3339(window.from_ns),
        "to": rfc3339(window.to_ns),
        "breakers": breakers,
    }))
    .into_response()
}

fn window_json(graph: &Graph) -> (String, String) {
    (rfc3339(graph.window.from_ns), rfc3339(graph.window.to_ns))
}

pub async fn graph(State(state): State<AppState>, Query(params): Params) -> Response {
    let graph = match load(&state, &params).await {
        Ok(graph) => graph,
        Err(response) => return response,
    };
    let (from, to) = window_json(&graph);
    axum::Json(json!({
        "from": from,
        "to": to,
        "nodes": graph.nodes,
        "edges": graph.edges,
        "cycles": graph.cycles(),
    }))
    .into_response()
}

pub async fn services(State(state): State<AppState>, Query(params): Params) -> Response {
    let graph = match load(&state, &params).await {
        Ok(graph) => graph,
        Err(response) => return response,
    };
    let services: Vec<Value> = graph
        .nodes
        .iter()
        .filter(|node| node.kind == "service")
        .map(|node| {
            let mut value = serde_json::to_value(node).unwrap_or(Value::Null);
            value["name"] = json!(node.id);
            value["upstream"] = json!(graph.neighbours(&node.id, Direction::Incoming));
            value["downstream"] = json!(graph.neighbours(&node.id, Direction::Outgoing));
            value
        })
        .collect();
    let (from, to) = window_json(&graph);
    axum::Json(json!({ "from": from, "to": to, "services": services })).into_response()
}

pub async fn service(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(params): Params,
) -> Response {
    let graph = match load_with_calls(&state, &params, &CallsOf::Service(name.clone())).await {
        Ok(graph) => graph,
        Err(response) => return response,
    };
    let Some(node) = graph.node(&name) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no calls from or to {name:?} in the window"),
        );
    };
    let operations = graph.breakdown(graph.inbound(&name), |c| key_of(c.operation.as_ref()));
    let instances = graph.breakdown(graph.inbound(&name), |c| key_of(c.server_instance.as_ref()));
    let versions = graph.breakdown(graph.inbound(&name), |c| key_of(c.api_version.as_ref()));
    let (from, to) = window_json(&graph);
    let mut value = serde_json::to_value(node).unwrap_or(Value::Null);
    let extra = json!({
        "from": from,
        "to": to,
        "name": name,
        "operations": operations.items,
        "instances": instances.items,
        "instance_skew": instances.skew,
        "api_versions": versions.items,
        "upstream": graph.neighbours(&name, Direction::Incoming),
        "downstream": graph.neighbours(&name, Direction::Outgoing),
        "transitive_upstream": graph.upstream(&name),
        "transitive_downstream": graph.downstream(&name),
        "blast_radius": graph.upstream(&name),
    });
    if let (Value::Object(object), Value::Object(extra)) = (&mut value, extra) {
        object.extend(extra);
    }
    axum::Json(value).into_response()
}

/// The edges from `source` to `target` (one per call type and destination), each with its
/// statistics in `step` intervals (default: 60 intervals over the window, at least 1 s).
pub async fn edges(State(state): State<AppState>, Query(params): Params) -> Response {
    let (Some(source), Some(target)) = (params.get("source"), params.get("target")) else {
        return error(
            StatusCode::BAD_REQUEST,
            "source and target are required, e.g. ?source=order-service&target=payment-service",
        );
    };
    let of = CallsOf::Edge {
        source: source.clone(),
        target: target.clone(),
    };
    let graph = match load_with_calls(&state, &params, &of).await {
        Ok(graph) => graph,
        Err(response) => return response,
    };
    let window_ns = graph.window.to_ns - graph.window.from_ns;
    let step_ns = match params.get("step") {
        Some(text) => match parse_duration("step", text) {
            Ok(ns) if ns > 0 => ns,
            Ok(_) => return error(StatusCode::BAD_REQUEST, "step must be positive"),
            Err(message) => return error(StatusCode::BAD_REQUEST, &message),
        },
        None => (window_ns / 60).max(1_000_000_000),
    };
    if window_ns / step_ns > 10_000 {
        return error(
            StatusCode::BAD_REQUEST,
            "step is too small for the window: at most 10000 intervals",
        );
    }
    let edges: Vec<Value> = graph
        .edges
        .iter()
        .filter(|edge| &edge.source == source && &edge.target == target)
        .map(|edge| {
            let calls = || graph.calls_of(edge);
            let series: Vec<Value> = graph
                .series(calls(), step_ns)
                .into_iter()
                .map(|interval| {
                    let mut value = serde_json::to_value(&interval).unwrap_or(Value::Null);
                    value["start"] = json!(rfc3339(interval.start_ns));
                    value
                })
                .collect();
            let server_instances = graph.breakdown(calls(), |c| key_of(c.server_instance.as_ref()));
            let client_instances = graph.breakdown(calls(), |c| key_of(c.client_instance.as_ref()));
            let versions = graph.breakdown(calls(), |c| key_of(c.api_version.as_ref()));
            let operations = graph.breakdown(calls(), |c| key_of(c.operation.as_ref()));
            let statuses =
                graph.breakdown(calls().filter(|c| c.failed), |c| key_of(c.status.as_ref()));
            let mut value = serde_json::to_value(edge).unwrap_or(Value::Null);
            let extra = json!({
                "step_ms": step_ns as f64 / 1e6,
                "series": series,
                "server_instances": server_instances.items,
                "server_instance_skew": server_instances.skew,
                "client_instances": client_instances.items,
                "client_instance_skew": client_instances.skew,
                "api_versions": versions.items,
                "operations": operations.items,
                "errors_by_status": statuses.items,
            });
            if let (Value::Object(object), Value::Object(extra)) = (&mut value, extra) {
                object.extend(extra);
            }
            value
        })
        .collect();
    let (from, to) = window_json(&graph);
    axum::Json(json!({
        "from": from,
        "to": to,
        "source": source,
        "target": target,
        "edges": edges,
    }))
    .into_response()
}
