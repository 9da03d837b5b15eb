//! The dashboard's pages about the graph: the overview, the service map, a service, an
//! edge ("call health") and the breakers.

use askama::Template;
use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use callwatch_query::QueryError;
use callwatch_query::breaker::BreakerState;
use callwatch_query::breakers::BreakerView;
use callwatch_query::graph::{self, Breakdown, Edge, Focus, Graph, Interval, graph_of};
use callwatch_query::rollup::{Details, Dimension};
use petgraph::Direction;

use crate::AppState;
use crate::charts::{Chart, Timeline, TimelineSource, bucket_counts, latency_buckets};
use crate::dashboard::{Frame, Stats, datetime, error_page, html, nanos_as_ms, param, percent};
use crate::map::{Grouping, Map};

type Params = Query<Vec<(String, String)>>;

/// The frame of a page, or the error page that says what is wrong with its query.
fn frame_of(
    state: &AppState,
    title: impl Into<String>,
    uri: &OriginalUri,
    params: &[(String, String)],
    default_refresh: &str,
) -> Result<Frame, Box<Response>> {
    Frame::new(title, uri.path(), params, default_refresh)
        .map(|frame| frame.with_logout(&state.auth))
        .map_err(|message| Box::new(error_page(StatusCode::BAD_REQUEST, uri.path(), &message)))
}

fn unavailable(path: &str, e: QueryError) -> Response {
    error_page(StatusCode::SERVICE_UNAVAILABLE, path, &e.to_string())
}

/// The graph of the frame's window, from the stored pieces.
async fn graph(state: &AppState, frame: &Frame) -> Result<Graph, Response> {
    graph_of(&state.query, frame.graph_window(), state.health)
        .await
        .map_err(|e| unavailable(&frame.path, e))
}

/// The graph of the frame's window, and the breakdowns and series of a service's or an
/// edge's calls.
async fn graph_and_focus(
    state: &AppState,
    frame: &Frame,
    of: &graph::CallsOf,
) -> Result<(Graph, Focus), Response> {
    let window = frame.graph_window();
    let intervals = graph::intervals(window, graph::round_step(window), true);
    graph::graph_and_focus(&state.query, window, state.health, of, intervals)
        .await
        .map_err(|e| unavailable(&frame.path, e))
}

/// A node or edge row of a table.
pub struct Row {
    pub name: String,
    pub href: String,
    pub kind: &'static str,
    pub instances: usize,
    pub stats: Stats,
}

pub struct EdgeRow {
    pub source: String,
    pub target: String,
    pub source_href: String,
    pub target_href: String,
    pub href: String,
    pub call_type: &'static str,
    pub destination: String,
    pub breaker: &'static str,
    pub stats: Stats,
}

impl EdgeRow {
    fn of(edge: &Edge, frame: &Frame) -> Self {
        Self {
            source: edge.source.clone(),
            target: edge.target.clone(),
            source_href: frame.service_link(&edge.source),
            target_href: frame.service_link(&edge.target),
            href: frame.edge_link(&edge.source, &edge.target),
            call_type: edge.call_type,
            destination: edge.destination.clone().unwrap_or_default(),
            breaker: edge.breaker.as_ref().map_or("", |b| b.state.as_str()),
            stats: Stats::of(&edge.summary),
        }
    }
}

/// A breaker as its row shows it.
pub struct BreakerRow {
    pub client: String,
    pub server: String,
    pub href: String,
    pub name: String,
    pub state: &'static str,
    pub since: String,
    pub source: &'static str,
    pub reported: &'static str,
    pub inferred: &'static str,
    pub disagreement: bool,
    pub rejected: u64,
    pub transitions: Vec<(String, &'static str, &'static str)>,
    pub timeline: String,
}

impl BreakerRow {
    fn of(breaker: &BreakerView, frame: &Frame) -> Self {
        let window = frame.window;
        let row = |label,
                   list: &[callwatch_query::breakers::TransitionView],
                   now: &'static str,
                   first_seen_ns| TimelineSource {
            label,
            initial: list.first().map_or(now, |t| t.from.as_str()),
            changes: list.iter().map(|t| (t.at, t.to.as_str())).collect(),
            first_seen_ns,
        };
        let mut sources = Vec::new();
        if let Some(reported) = breaker.reported_state {
            sources.push(row(
                "reported",
                &breaker.reported_transitions,
                reported.as_str(),
                breaker.first_report.unwrap_or(breaker.first_call),
            ));
        }
        sources.push(row(
            "inferred",
            &breaker.inferred_transitions,
            breaker.inferred_state.as_str(),
            breaker.first_call,
        ));
        Self {
            client: breaker.client.clone(),
            server: breaker.server.clone(),
            href: frame.edge_link(&breaker.client, &breaker.server),
            name: breaker.name.clone().unwrap_or_default(),
            state: breaker.state.as_str(),
            since: datetime(breaker.since),
            source: match breaker.source {
                callwatch_query::breakers::Source::Reported => "reported",
                callwatch_query::breakers::Source::Inferred => "inferred",
            },
            reported: breaker.reported_state.map_or("–", |s| s.as_str()),
            inferred: breaker.inferred_state.as_str(),
            disagreement: breaker.disagreement,
            rejected: breaker.rejected_calls,
            transitions: breaker
                .transitions
                .iter()
                .map(|t| (datetime(t.at), t.from.as_str(), t.to.as_str()))
                .collect(),
            timeline: Timeline::new(window.from_ns, window.to_ns, sources).svg(),
        }
    }
}

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    frame: Frame,
    breakers: Vec<BreakerRow>,
    troubled: Vec<EdgeRow>,
    services: Vec<Row>,
    others: Vec<Row>,
}

fn node_rows(graph: &Graph, frame: &Frame, services: bool) -> Vec<Row> {
    graph
        .nodes
        .iter()
        .filter(|node| (node.kind == "service") == services)
        .map(|node| Row {
            name: node.id.clone(),
            href: frame.service_link(&node.id),
            kind: node.kind,
            instances: node.instances,
            stats: Stats::of(&node.summary),
        })
        .collect()
}

pub async fn overview(
    State(state): State<AppState>,
    uri: OriginalUri,
    Query(params): Params,
) -> Response {
    let frame = match frame_of(&state, "Overview", &uri, &params, "30s") {
        Ok(frame) => frame,
        Err(response) => return *response,
    };
    let graph = match graph(&state, &frame).await {
        Ok(graph) => graph,
        Err(response) => return response,
    };
    let window = frame.window;
    let breakers = state
        .query
        .breakers()
        .breakers(window.from_ns, window.to_ns)
        .iter()
        .filter(|b| b.state.as_str() != "closed" || b.disagreement)
        .map(|b| BreakerRow::of(b, &frame))
        .collect();
    let mut troubled: Vec<&Edge> = graph
        .edges
        .iter()
        .filter(|e| {
            matches!(
                e.summary.health,
                callwatch_query::stats::Health::Failing | callwatch_query::stats::Health::Degraded
            )
        })
        .collect();
    troubled.sort_by(|a, b| {
        b.summary
            .health
            .cmp(&a.summary.health)
            .then(b.summary.error_rate.total_cmp(&a.summary.error_rate))
    });
    let troubled = troubled
        .into_iter()
        .map(|e| EdgeRow::of(e, &frame))
        .collect();
    let page = Overview {
        services: node_rows(&graph, &frame, true),
        others: node_rows(&graph, &frame, false),
        breakers,
        troubled,
        frame,
    };
    html(&page)
}

#[derive(Template)]
#[template(path = "graph.html")]
struct GraphPage {
    frame: Frame,
    map: String,
    map_error: String,
    /// A link to the map grouped by namespace, or ungrouped if it is; empty when no
    /// service reports a namespace.
    group_link: String,
    grouped: bool,
    /// Node names, for the map's search box.
    names: Vec<String>,
    edges: Vec<EdgeRow>,
    cycles: Vec<String>,
}

pub async fn graph_page(
    State(state): State<AppState>,
    uri: OriginalUri,
    Query(params): Params,
) -> Response {
    let frame = match frame_of(&state, "Service map", &uri, &params, "30s") {
        Ok(frame) => frame,
        Err(response) => return *response,
    };
    let graph = match graph(&state, &frame).await {
        Ok(graph) => graph,
        Err(response) => return response,
    };
    let mut grouping = Grouping::of(&frame);
    let has_namespaces = graph.nodes.iter().any(|n| n.namespace.is_some());
    let (map, map_error) = match Map::of(&graph, &frame, &state.layouts, &grouping) {
        Ok(map) => (map.render().unwrap_or_default(), String::new()),
        // Too large to draw service by service: one box per namespace still is not.
        Err(message) if has_namespaces && grouping != Grouping::folded() => {
            grouping = Grouping::folded();
            match Map::of(&graph, &frame, &state.layouts, &grouping) {
                Ok(map) => (
                    map.render().unwrap_or_default(),
                    format!(
                        "{} services are too many to draw one by one, so each namespace is \
                         one box: double-click one to open it. The table below holds every edge.",
                        graph.nodes.len()
                    ),
                ),
                Err(_) => (String::new(), message),
            }
        }
        Err(message) => (String::new(), message),
    };
    let group_link = match (has_namespaces, grouping.by_namespace) {
        (false, _) => String::new(),
        (true, true) => frame.link("/graph"),
        (true, false) => frame.link_with("/graph", &[("group", "namespace")]),
    };
    let page = GraphPage {
        map,
        map_error,
        group_link,
        grouped: grouping.by_namespace,
        names: graph.nodes.iter().map(|n| n.id.clone()).collect(),
        edges: graph.edges.iter().map(|e| EdgeRow::of(e, &frame)).collect(),
        cycles: graph.cycles().into_iter().map(|c| c.join(" → ")).collect(),
        frame,
    };
    html(&page)
}

/// One share of a breakdown, as a row.
pub struct ShareRow {
    pub name: String,
    pub share: String,
    pub stats: Stats,
}

fn share_rows(breakdown: &Breakdown) -> Vec<ShareRow> {
    breakdown
        .items
        .iter()
        .map(|item| ShareRow {
            name: item.name.clone().unwrap_or_else(|| "(none)".into()),
            share: percent(item.share),
            stats: Stats::of(&item.summary),
        })
        .collect()
}

pub struct Neighbour {
    pub name: String,
    pub href: String,
    pub edge_href: String,
}

#[derive(Template)]
#[template(path = "service.html")]
struct ServicePage {
    frame: Frame,
    name: String,
    kind: &'static str,
    stats: Stats,
    charts: Vec<String>,
    operations: Vec<ShareRow>,
    instances: Vec<ShareRow>,
    instance_skew: String,
    versions: Vec<ShareRow>,
    upstream: Vec<Neighbour>,
    downstream: Vec<Neighbour>,
    blast_radius: Vec<String>,
}

/// Rate, errors and latency over the window, from a series of intervals.
fn charts_of(series: &[Interval], frame: &Frame) -> Vec<String> {
    let step_ns = graph::round_step(frame.graph_window());
    let starts: Vec<i64> = series.iter().map(|i| i.start_ns).collect();
    let values =
        |pick: &dyn Fn(&callwatch_query::stats::Summary) -> Option<f64>| -> Vec<Option<f64>> {
            series.iter().map(|i| pick(&i.summary)).collect()
        };
    let latency = |pick: fn(&callwatch_query::stats::Percentiles) -> f64| {
        values(&|s| s.latency_ms.or(s.server_latency_ms).as_ref().map(pick))
    };
    vec![
        Chart::lines(
            "Calls per second",
            "",
            &starts,
            step_ns,
            vec![
                ("calls/s", "calls", values(&|s| Some(s.rate_per_s))),
                (
                    "errors/s",
                    "errors",
                    values(&|s| Some(s.rate_per_s * s.error_rate)),
                ),
            ],
        )
        .svg(),
        Chart::lines(
            "Latency",
            " ms",
            &starts,
            step_ns,
            vec![
                ("p50", "p50", latency(|p| p.p50)),
                ("p95", "p95", latency(|p| p.p95)),
                ("p99", "p99", latency(|p| p.p99)),
            ],
        )
        .svg(),
    ]
}

pub async fn service(
    State(state): State<AppState>,
    uri: OriginalUri,
    Path(name): Path<String>,
    Query(params): Params,
) -> Response {
    let frame = match frame_of(&state, name.clone(), &uri, &params, "30s") {
        Ok(frame) => frame,
        Err(response) => return *response,
    };
    let (graph, focus) =
        match graph_and_focus(&state, &frame, &graph::CallsOf::Service(name.clone())).await {
            Ok(found) => found,
            Err(response) => return response,
        };
    let Some(node) = graph.node(&name) else {
        return error_page(
            StatusCode::NOT_FOUND,
            uri.path(),
            &format!("no calls from or to {name:?} in this window; try a longer range"),
        );
    };
    let neighbours = |direction| -> Vec<Neighbour> {
        graph
            .neighbours(&name, direction)
            .into_iter()
            .map(|other| Neighbour {
                href: frame.service_link(&other),
                edge_href: match direction {
                    Direction::Incoming => frame.edge_link(&other, &name),
                    Direction::Outgoing => frame.edge_link(&name, &other),
                },
                name: other,
            })
            .collect()
    };
    let details = focus.all();
    let instances = focus.breakdown(&details, Dimension::ServerInstance);
    let page = ServicePage {
        kind: node.kind,
        stats: Stats::of(&node.summary),
        charts: charts_of(&focus.series(None), &frame),
        operations: share_rows(&focus.breakdown(&details, Dimension::Operation)),
        instance_skew: crate::dashboard::significant(instances.skew),
        instances: share_rows(&instances),
        versions: share_rows(&focus.breakdown(&details, Dimension::ApiVersion)),
        upstream: neighbours(Direction::Incoming),
        downstream: neighbours(Direction::Outgoing),
        blast_radius: graph.upstream(&name),
        name,
        frame,
    };
    html(&page)
}

/// A call worth opening: the slowest and the latest failed.
pub struct Example {
    pub trace_id: String,
    pub href: String,
    pub started: String,
    pub duration: String,
    pub failed: bool,
}

pub struct EdgeView {
    pub row: EdgeRow,
    pub client_p: [String; 3],
    pub server_p: [String; 3],
    pub queue_p99: String,
    pub charts: Vec<String>,
    pub histogram: String,
    pub statuses: Vec<ShareRow>,
    pub server_instances: Vec<ShareRow>,
    pub server_skew: String,
    pub client_instances: Vec<ShareRow>,
    pub versions: Vec<ShareRow>,
    pub operations: Vec<ShareRow>,
    pub breaker: Option<BreakerRow>,
}

#[derive(Template)]
#[template(path = "edge.html")]
struct EdgePage {
    frame: Frame,
    source: String,
    target: String,
    source_href: String,
    target_href: String,
    edges: Vec<EdgeView>,
    examples: Vec<Example>,
}

fn edge_view(focus: &Focus, edge: &Edge, frame: &Frame) -> EdgeView {
    let details = focus.edge(edge);
    let client = || details.all.client().buckets_ms();
    let server = || details.all.server().buckets_ms();
    let all: Vec<f64> = client().chain(server()).map(|(ms, _)| ms).collect();
    let bounds = latency_buckets(&all);
    let histogram = Chart::histogram(
        "Latency histogram (calls per bucket, ms)",
        &bounds,
        &[
            ("client", "p95", bucket_counts(&bounds, client())),
            ("server", "p50", bucket_counts(&bounds, server())),
        ],
    )
    .svg();
    let stats = Stats::of(&edge.summary);
    let breakdown = |dimension| share_rows(&focus.breakdown(&details, dimension));
    let server_instances = focus.breakdown(&details, Dimension::ServerInstance);
    EdgeView {
        client_p: [stats.p50.clone(), stats.p95.clone(), stats.p99.clone()],
        server_p: [
            stats.server_p50.clone(),
            stats.server_p95.clone(),
            stats.server_p99.clone(),
        ],
        queue_p99: stats.queue_p99.clone(),
        row: EdgeRow::of(edge, frame),
        charts: charts_of(&focus.series(Some(edge)), frame),
        histogram,
        statuses: breakdown(Dimension::FailedStatus),
        server_skew: crate::dashboard::significant(server_instances.skew),
        server_instances: share_rows(&server_instances),
        client_instances: breakdown(Dimension::ClientInstance),
        versions: breakdown(Dimension::ApiVersion),
        operations: breakdown(Dimension::Operation),
        breaker: edge.breaker.as_ref().map(|b| BreakerRow::of(b, frame)),
    }
}

/// The slowest calls of the edge and its latest failed ones, with their traces (each
/// trace once), as kept with its breakdowns.
fn examples(details: &Details, frame: &Frame) -> Vec<Example> {
    let mut examples: Vec<Example> = Vec::new();
    for exemplar in details.slowest().iter().chain(details.latest_failed()) {
        let trace_id = format!("{:032x}", exemplar.trace_id);
        if examples.iter().any(|e| e.trace_id == trace_id) {
            continue;
        }
        examples.push(Example {
            href: frame.trace_link(&trace_id),
            started: datetime(exemplar.start_ns),
            duration: exemplar.duration_ns.map_or("–".into(), nanos_as_ms),
            failed: exemplar.failed,
            trace_id,
        });
    }
    examples
}

pub async fn edge(
    State(state): State<AppState>,
    uri: OriginalUri,
    Query(params): Params,
) -> Response {
    let (Some(source), Some(target)) = (
        param(&params, "source").map(str::to_string),
        param(&params, "target").map(str::to_string),
    ) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            uri.path(),
            "source and target are required, e.g. /edges?source=order-service&target=payment-service",
        );
    };
    let frame = match frame_of(&state, format!("{source} → {target}"), &uri, &params, "30s") {
        Ok(frame) => frame,
        Err(response) => return *response,
    };
    let of = graph::CallsOf::Edge {
        source: source.clone(),
        target: target.clone(),
    };
    let (graph, focus) = match graph_and_focus(&state, &frame, &of).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let edges: Vec<EdgeView> = graph
        .edges
        .iter()
        .filter(|e| e.source == source && e.target == target)
        .map(|e| edge_view(&focus, e, &frame))
        .collect();
    if edges.is_empty() {
        return error_page(
            StatusCode::NOT_FOUND,
            uri.path(),
            &format!("no calls from {source:?} to {target:?} in this window; try a longer range"),
        );
    }
    let examples = examples(&focus.all(), &frame);
    let page = EdgePage {
        source_href: frame.service_link(&source),
        target_href: frame.service_link(&target),
        source,
        target,
        edges,
        examples,
        frame,
    };
    html(&page)
}

#[derive(Template)]
#[template(path = "breakers.html")]
struct BreakersPage {
    frame: Frame,
    breakers: Vec<BreakerRow>,
}

pub async fn breakers(
    State(state): State<AppState>,
    uri: OriginalUri,
    Query(params): Params,
) -> Response {
    let frame = match frame_of(&state, "Breakers", &uri, &params, "30s") {
        Ok(frame) => frame,
        Err(response) => return *response,
    };
    let mut views = state
        .query
        .breakers()
        .breakers(frame.window.from_ns, frame.window.to_ns);
    // Open first, then half-open, then those whose sources disagree.
    let rank = |b: &BreakerView| match b.state {
        BreakerState::Open => 0,
        BreakerState::HalfOpen => 1,
        BreakerState::Closed if b.disagreement => 2,
        BreakerState::Closed => 3,
    };
    views.sort_by(|a, b| (rank(a), &a.client, &a.server).cmp(&(rank(b), &b.client, &b.server)));
    let page = BreakersPage {
        breakers: views.iter().map(|b| BreakerRow::of(b, &frame)).collect(),
        frame,
    };
    html(&page)
}
