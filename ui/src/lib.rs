//! HTTP routes of callwatch on the `--http` port: the dashboard, liveness, readiness,
//! Prometheus metrics, the SQL API, trace look-ups, the dependency graph, and the Jaeger and
//! Tempo query APIs that Grafana's data sources read.

mod assets;
mod charts;
mod dashboard;
#[cfg(test)]
mod fuzz;
mod graph;
mod jaeger;
mod layout;
mod map;
mod pages;
mod params;
mod sql;
mod sql_page;
mod tempo;
mod trace_pages;
mod traceql;
mod traces;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use callwatch_collector::{GraphMetrics, Ingest};
use callwatch_query::stats::HealthThresholds;
use callwatch_query::{Priority, QueryEngine, QueryError};
pub use map::Layouts;

/// What the routes read.
#[derive(Debug, Clone)]
pub struct AppState {
    pub ingest: Arc<Ingest>,
    pub query: QueryEngine,
    /// False once shutdown has begun, so load balancers stop sending.
    pub ready: Arc<AtomicBool>,
    /// The call pairer's Prometheus series.
    pub graph_metrics: Arc<GraphMetrics>,
    pub health: HealthThresholds,
    /// Service map layouts by graph shape.
    pub layouts: Arc<Layouts>,
}

/// Every route. Pages and APIs run on the query engine's read runtime, admitted there
/// ([`callwatch_query::Reads`]); liveness, readiness, metrics and static assets answer here,
/// whatever the readers are doing.
pub fn router(state: AppState) -> Router {
    let reads = Router::new()
        .route("/", get(pages::overview))
        .route("/graph", get(pages::graph_page))
        .route("/services/{name}", get(pages::service))
        .route("/edges", get(pages::edge))
        .route("/breakers", get(pages::breakers))
        .route("/traces", get(trace_pages::traces))
        .route("/traces/{trace_id}", get(trace_pages::trace))
        .route("/sql", get(sql_page::sql_page))
        .route("/sql.csv", get(sql_page::sql_csv))
        .route("/api/v1/sql", post(sql::sql))
        .route("/api/v1/traces", get(traces::search))
        .route("/api/v1/traces/{trace_id}", get(traces::trace))
        .route("/api/v1/graph", get(graph::graph))
        .route("/api/v1/services", get(graph::services))
        .route("/api/v1/services/{name}", get(graph::service))
        .route("/api/v1/edges", get(graph::edges))
        .route("/api/v1/breakers", get(graph::breakers))
        // Jaeger's query API.
        .route("/api/services", get(jaeger::services))
        .route(
            "/api/services/{service}/operations",
            get(jaeger::service_operations),
        )
        .route("/api/operations", get(jaeger::operations))
        .route("/api/traces", get(jaeger::traces))
        .route("/api/traces/{trace_id}", get(jaeger::trace))
        .route("/api/dependencies", get(jaeger::dependencies))
        // Tempo's trace API (its trace by id is the Jaeger route above).
        .route("/api/echo", get(tempo::echo))
        .route("/api/v2/traces/{trace_id}", get(tempo::trace_v2))
        .route("/api/search", get(tempo::search))
        .route("/api/search/tags", get(tempo::tags))
        .route("/api/v2/search/tags", get(tempo::tags_v2))
        .route("/api/search/tag/{tag}/values", get(tempo::tag_values))
        .route("/api/v2/search/tag/{tag}/values", get(tempo::tag_values_v2))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            on_read_runtime,
        ));
    Router::new()
        .route("/assets/{name}", get(assets::asset))
        .route("/favicon.ico", get(assets::favicon))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(reads)
        .with_state(state)
}

/// Runs the rest of the request on the read runtime once it is admitted; a client that
/// goes away takes its request, and the queries it started, with it.
async fn on_read_runtime(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let priority = if request.uri().path() == "/" {
        Priority::Overview
    } else {
        Priority::Normal
    };
    match state.query.reads().run(priority, next.run(request)).await {
        Ok(response) => response,
        Err(error @ QueryError::Busy { retry_after, .. }) => {
            let mut response = sql::error(StatusCode::TOO_MANY_REQUESTS, &error.to_string());
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after.as_secs().max(1)),
            );
            response
        }
        Err(error) => sql::error(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string()),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut out = String::with_capacity(8192);
    state.ingest.render_metrics(&mut out);
    let store = state.ingest.store();
    store.metrics().render(&store.gauges(), &mut out);
    state.graph_metrics.render(&mut out);
    state.query.breakers().render(&mut out);
    state.query.reads().render(&mut out);
    state.query.render_pieces(&mut out);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}
