//! The dependency graph over HTTP: `/api/v1/graph`, `/api/v1/services`,
//! `/api/v1/services/{name}`, `/api/v1/edges` and `/api/v1/breakers`.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use callwatch_query::QueryError;
use callwatch_query::graph::{
    self as graph_query, CallsOf, Focus, Graph, GraphEngine, Window as GraphWindow,
};
use callwatch_query::rollup::Dimension;
use petgraph::Direction;
use serde_json::{Value, json};

use crate::AppState;
use crate::params::{Window, now_ns, parse_duration, rfc3339};
use crate::sql::error;

type Params = Query<HashMap<String, String>>;

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

/// The graph of the window, from stored pieces or on the cluster (`engine=ballista`,
/// `engine=local`; long windows go to the cluster by default): nodes and edges, no
/// breakdowns.
async fn load(state: &AppState, params: &HashMap<String, String>) -> Result<Graph, Response> {
    let window = window_of(params).map_err(bad_request)?;
    let on = match params.get("engine").map(String::as_str) {
        None | Some("") => GraphEngine::Auto,
        Some("local") => GraphEngine::Local,
        Some("ballista") => GraphEngine::Cluster,
        Some(other) => {
            return Err(bad_request(format!(
                "engine={other:?}: use engine=local or engine=ballista"
            )));
        }
    };
    graph_query::graph_on(&state.query, window, state.health, on)
        .await
        .map_err(|e| match e {
            QueryError::Invalid(message) => bad_request(message),
            e => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        })
}

/// The graph of the window, and the breakdowns of a service's or an edge's calls by
/// operation, instance, version and status, with their series over `intervals` (of the
/// window).
async fn load_with_focus(
    state: &AppState,
    window: GraphWindow,
    of: &CallsOf,
    intervals: Vec<(i64, i64)>,
) -> Result<(Graph, Focus), Response> {
    graph_query::graph_and_focus(&state.query, window, state.health, of, intervals)
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
    let window = match window_of(&params) {
        Ok(window) => window,
        Err(message) => return bad_request(message),
    };
    let of = CallsOf::Service(name.clone());
    // Breakdowns only: no series.
    let (graph, focus) = match load_with_focus(&state, window, &of, Vec::new()).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let Some(node) = graph.node(&name) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no calls from or to {name:?} in the window"),
        );
    };
    let details = focus.all();
    let operations = focus.breakdown(&details, Dimension::Operation);
    let instances = focus.breakdown(&details, Dimension::ServerInstance);
    let versions = focus.breakdown(&details, Dimension::ApiVersion);
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
    let window = match window_of(&params) {
        Ok(window) => window,
        Err(message) => return bad_request(message),
    };
    let window_ns = window.to_ns - window.from_ns;
    // A step asked for counts from the window's start; the default is a round one that
    // stored pieces cover, counted from its multiples.
    let (step_ns, aligned) = match params.get("step") {
        Some(text) => match parse_duration("step", text) {
            Ok(ns) if ns > 0 => (ns, false),
            Ok(_) => return error(StatusCode::BAD_REQUEST, "step must be positive"),
            Err(message) => return error(StatusCode::BAD_REQUEST, &message),
        },
        None => (graph_query::round_step(window), true),
    };
    if window_ns / step_ns > 10_000 {
        return error(
            StatusCode::BAD_REQUEST,
            "step is too small for the window: at most 10000 intervals",
        );
    }
    let intervals = graph_query::intervals(window, step_ns, aligned);
    let (graph, focus) = match load_with_focus(&state, window, &of, intervals).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let edges: Vec<Value> = graph
        .edges
        .iter()
        .filter(|edge| &edge.source == source && &edge.target == target)
        .map(|edge| {
            let series: Vec<Value> = focus
                .series(Some(edge))
                .into_iter()
                .map(|interval| {
                    let mut value = serde_json::to_value(&interval).unwrap_or(Value::Null);
                    value["start"] = json!(rfc3339(interval.start_ns));
                    value
                })
                .collect();
            let details = focus.edge(edge);
            let breakdown = |dimension| focus.breakdown(&details, dimension);
            let server_instances = breakdown(Dimension::ServerInstance);
            let client_instances = breakdown(Dimension::ClientInstance);
            let versions = breakdown(Dimension::ApiVersion);
            let operations = breakdown(Dimension::Operation);
            let statuses = breakdown(Dimension::FailedStatus);
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
