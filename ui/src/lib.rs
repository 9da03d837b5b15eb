//! HTTP routes of callwatch on the `--http` port: the dashboard, liveness, readiness,
//! Prometheus metrics, the SQL API, trace look-ups, the dependency graph, and the Jaeger and
//! Tempo query APIs that Grafana's data sources read.

mod assets;
mod auth;
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

pub use auth::WebAuth;
use axum::Router;
use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use callwatch_collector::{GraphMetrics, Ingest};
use callwatch_query::stats::HealthThresholds;
use callwatch_query::{Priority, QueryEngine, QueryError};
pub use map::Layouts;

/// What the routes read.
#[derive(Debug, Clone)]
pub struct AppState {
    /// `None` on a query node, which ingests nothing.
    pub ingest: Option<Arc<Ingest>>,
    /// False on an ingest node: only liveness, readiness and `/metrics` are served.
    pub serves_queries: bool,
    pub query: QueryEngine,
    /// False once shutdown has begun, so load balancers stop sending.
    pub ready: Arc<AtomicBool>,
    /// The call pairer's Prometheus series.
    pub graph_metrics: Arc<GraphMetrics>,
    pub health: HealthThresholds,
    /// Service map layouts by graph shape.
    pub layouts: Arc<Layouts>,
    /// Tokens and sessions; open when no token is configured.
    pub auth: Arc<WebAuth>,
}

/// Who may use a route, and where it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone: liveness, readiness, static assets, login and logout.
    Open,
    /// A token with the `read` scope (or a session), answered at once: `/metrics`.
    Read,
    /// A token with the `read` scope (or a session), run on the read runtime once admitted
    /// there ([`callwatch_query::Reads`]): every page and API.
    Query,
}

/// One route of [`router`].
pub struct Route {
    pub path: &'static str,
    pub method: Method,
    pub access: Access,
    handler: MethodRouter<AppState>,
}

fn route<H, T>(method: Method, path: &'static str, access: Access, handler: H) -> Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("a method routes filter");
    Route {
        path,
        method,
        access,
        handler: on(filter, handler),
    }
}

/// Every route of the `--http` port, with who may use it. The router is built from this
/// list alone, so the test that walks it walks every route.
pub fn routes() -> Vec<Route> {
    use Access::{Open, Query, Read};
    use Method as M;
    vec![
        route(M::GET, "/", Query, pages::overview),
        route(M::GET, "/graph", Query, pages::graph_page),
        route(M::GET, "/services/{name}", Query, pages::service),
        route(M::GET, "/edges", Query, pages::edge),
        route(M::GET, "/breakers", Query, pages::breakers),
        route(M::GET, "/traces", Query, trace_pages::traces),
        route(M::GET, "/traces/{trace_id}", Query, trace_pages::trace),
        route(M::GET, "/sql", Query, sql_page::sql_page),
        route(M::GET, "/sql.csv", Query, sql_page::sql_csv),
        route(M::POST, "/api/v1/sql", Query, sql::sql),
        route(M::GET, "/api/v1/traces", Query, traces::search),
        route(M::GET, "/api/v1/traces/{trace_id}", Query, traces::trace),
        route(M::GET, "/api/v1/graph", Query, graph::graph),
        route(M::GET, "/api/v1/services", Query, graph::services),
        route(M::GET, "/api/v1/services/{name}", Query, graph::service),
        route(M::GET, "/api/v1/edges", Query, graph::edges),
        route(M::GET, "/api/v1/breakers", Query, graph::breakers),
        // Jaeger's query API.
        route(M::GET, "/api/services", Query, jaeger::services),
        route(
            M::GET,
            "/api/services/{service}/operations",
            Query,
            jaeger::service_operations,
        ),
        route(M::GET, "/api/operations", Query, jaeger::operations),
        route(M::GET, "/api/traces", Query, jaeger::traces),
        route(M::GET, "/api/traces/{trace_id}", Query, jaeger::trace),
        route(M::GET, "/api/dependencies", Query, jaeger::dependencies),
        // Tempo's trace API (its trace by id is the Jaeger route above).
        route(M::GET, "/api/echo", Query, tempo::echo),
        route(M::GET, "/api/v2/traces/{trace_id}", Query, tempo::trace_v2),
        route(M::GET, "/api/search", Query, tempo::search),
        route(M::GET, "/api/search/tags", Query, tempo::tags),
        route(M::GET, "/api/v2/search/tags", Query, tempo::tags_v2),
        route(
            M::GET,
            "/api/search/tag/{tag}/values",
            Query,
            tempo::tag_values,
        ),
        route(
            M::GET,
            "/api/v2/search/tag/{tag}/values",
            Query,
            tempo::tag_values_v2,
        ),
        route(M::GET, "/metrics", Read, metrics),
        route(M::GET, "/assets/{name}", Open, assets::asset),
        route(M::GET, "/favicon.ico", Open, assets::favicon),
        route(M::GET, "/healthz", Open, healthz),
        route(M::GET, "/readyz", Open, readyz),
        route(M::GET, "/login", Open, auth::login_form),
        route(M::POST, "/login", Open, auth::login),
        route(M::POST, "/logout", Open, auth::logout),
    ]
}

/// Every route of [`routes`]. Once tokens exist, a route that reads needs one with the
/// `read` scope (or a session), checked before it is admitted to the read runtime; liveness,
/// readiness, metrics and static assets answer here, whatever the readers are doing.
pub fn router(state: AppState) -> Router {
    let mut open = Router::new();
    let mut read = Router::new();
    let mut query = Router::new();
    let ingest_node = ["/healthz", "/readyz", "/metrics"];
    for route in routes() {
        if !state.serves_queries && !ingest_node.contains(&route.path) {
            continue;
        }
        let group = match route.access {
            Access::Open => &mut open,
            Access::Read => &mut read,
            Access::Query => &mut query,
        };
        *group = std::mem::take(group).route(route.path, route.handler);
    }
    if !state.serves_queries {
        // An ingest node: liveness, readiness and /metrics only.
        let read = read.route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_read,
        ));
        return open.merge(read).with_state(state);
    }
    // The last layer added runs first: the token is checked before admission.
    let query = query
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            on_read_runtime,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_read,
        ));
    let read = read.route_layer(middleware::from_fn_with_state(
        state.clone(),
        auth::require_read,
    ));
    open.merge(read).merge(query).with_state(state)
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
    let store = state.query.store();
    match &state.ingest {
        Some(ingest) => {
            ingest.render_metrics(&mut out);
            store.metrics().render(&store.gauges(), &mut out);
        }
        None => store.metrics().render_refresh(&store.gauges(), &mut out),
    }
    state.graph_metrics.render(&mut out);
    if state.serves_queries {
        state.query.breakers().render(&mut out);
        state.query.reads().render(&mut out);
        state.query.render_pieces(&mut out);
        if let Some(cluster) = state.query.cluster() {
            cluster.render(&mut out);
        }
    }
    state.auth.tokens().render(&mut out);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}
