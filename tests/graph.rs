//! Calls and the dependency graph: traces with known answers go in over OTLP, and the graph,
//! services, edges and Prometheus series must say exactly what the traces say.

use std::time::{Duration, Instant};

use callwatch_collector::{int_attribute as int, text_attribute as text};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::Link;
use opentelemetry_proto::tonic::trace::v1::{Span, Status};
use serde_json::Value;

use crate::common::requests::now_ns;
use crate::common::samples::samples;
use crate::common::{Server, metric};

pub(crate) const SERVER: i32 = 2;
pub(crate) const CLIENT: i32 = 3;
const PRODUCER: i32 = 4;
const CONSUMER: i32 = 5;
pub(crate) const MS: u64 = 1_000_000;

/// A span of trace `trace` (its first byte says which test scenario it belongs to).
pub(crate) fn span(
    trace: u128,
    id: u64,
    parent: Option<u64>,
    kind: i32,
    start_ns: u64,
    duration_ns: u64,
    attributes: Vec<KeyValue>,
) -> Span {
    Span {
        trace_id: trace.to_be_bytes().to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: parent.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default(),
        name: "op".into(),
        kind,
        start_time_unix_nano: start_ns,
        end_time_unix_nano: start_ns + duration_ns,
        attributes,
        ..Span::default()
    }
}

pub(crate) fn failed(mut span: Span) -> Span {
    span.status = Some(Status {
        code: 2,
        message: "failed".into(),
    });
    span
}

pub(crate) fn window() -> String {
    let now_ms = now_ns() / MS;
    format!("from={}&to={}", now_ms - 3_600_000, now_ms + 3_600_000)
}

pub(crate) async fn get(server: &Server, path: &str) -> Value {
    let response = reqwest::get(format!("http://{}{path}", server.http))
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.unwrap()
}

/// The graph once it holds `calls` calls in all (pairing runs beside ingest).
pub(crate) async fn graph_with(server: &Server, calls: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let graph = get(server, &format!("/api/v1/graph?{}", window())).await;
        let total: u64 = graph["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["calls"].as_u64().unwrap())
            .sum();
        if total == calls {
            return graph;
        }
        assert!(
            total < calls && Instant::now() < deadline,
            "expected {calls} calls, the graph has {total}: {graph:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn edge<'a>(graph: &'a Value, source: &str, target: &str) -> &'a Value {
    graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["source"] == source && e["target"] == target)
        .unwrap_or_else(|| panic!("no edge {source} -> {target} in {graph:#}"))
}

fn has_edge(graph: &Value, source: &str, target: &str) -> bool {
    graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["source"] == source && e["target"] == target)
}

fn node_kind<'a>(graph: &'a Value, id: &str) -> &'a str {
    graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == id)
        .unwrap_or_else(|| panic!("no node {id} in {graph:#}"))["kind"]
        .as_str()
        .unwrap()
}

fn percentiles(value: &Value) -> (f64, f64, f64) {
    (
        value["p50"].as_f64().unwrap(),
        value["p95"].as_f64().unwrap(),
        value["p99"].as_f64().unwrap(),
    )
}

#[tokio::test]
async fn every_kind_of_call_is_derived_with_exact_counts_and_percentiles() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--pairing-wait", "1s"]);
    let t0 = now_ns() - 60_000 * MS;
    let mut expected_calls = 0;

    // A client/server pair, 100 times: client k ms, server k ms − 0.2 ms, 3 server instances.
    for k in 1..=100u64 {
        let trace = 0xa0 << 120 | u128::from(k);
        let client = span(
            trace,
            1,
            None,
            CLIENT,
            t0 + k * 1000 * MS,
            k * MS,
            vec![
                text("http.request.method", "GET"),
                int("http.response.status_code", 200),
            ],
        );
        let server_span = span(
            trace,
            2,
            Some(1),
            SERVER,
            t0 + k * 1000 * MS + 100_000,
            k * MS - 200_000,
            vec![
                text("http.request.method", "GET"),
                text("http.route", "/v1/items/{id}"),
                int(
                    "http.response.status_code",
                    if k % 50 == 0 { 503 } else { 200 },
                ),
            ],
        );
        server.post_spans("a-client", vec![client]).await;
        let instance = ["a-server-1", "a-server-1", "a-server-2", "a-server-3"][k as usize % 4];
        post_instance(&server, "a-server", instance, vec![server_span]).await;
    }
    expected_calls += 100;

    // A database call named by server.address: a call at once.
    let db = span(
        0xb0 << 120,
        1,
        Some(9),
        CLIENT,
        t0,
        3 * MS,
        vec![
            text("db.system.name", "postgresql"),
            text("db.operation.name", "SELECT"),
            text("server.address", "b-db"),
        ],
    );
    server.post_spans("b-app", vec![db]).await;
    expected_calls += 1;

    // A producer and its consumer in one trace, 5 ms in the queue.
    let trace = 0xc0 << 120;
    let producer = span(
        trace,
        1,
        Some(9),
        PRODUCER,
        t0,
        MS,
        vec![text("messaging.destination.name", "c-topic")],
    );
    let consumer = span(
        trace,
        2,
        Some(1),
        CONSUMER,
        t0 + 6 * MS,
        2 * MS,
        vec![text("messaging.destination.name", "c-topic")],
    );
    server.post_spans("c-consumer", vec![consumer]).await;
    server.post_spans("c-producer", vec![producer]).await;
    expected_calls += 1;

    // A batch consumer in a trace of its own, linked to producers in three other traces.
    let mut links = Vec::new();
    for i in 1..=3u128 {
        let trace = 0xd0 << 120 | i;
        let producer = span(
            trace,
            1,
            Some(9),
            PRODUCER,
            t0,
            MS,
            vec![text("messaging.destination.name", "d-queue")],
        );
        links.push(Link {
            trace_id: trace.to_be_bytes().to_vec(),
            span_id: 1u64.to_be_bytes().to_vec(),
            ..Link::default()
        });
        server.post_spans("d-producer", vec![producer]).await;
    }
    let mut batch = span(
        0xd0 << 120 | 0xff,
        1,
        None,
        CONSUMER,
        t0 + 20 * MS,
        4 * MS,
        vec![text("messaging.destination.name", "d-queue")],
    );
    batch.links = links;
    server.post_spans("d-consumer", vec![batch]).await;
    expected_calls += 3;

    // A root server span: called by `user`.
    let root = span(
        0xe0 << 120,
        1,
        None,
        SERVER,
        t0,
        7 * MS,
        vec![text("http.route", "/")],
    );
    server.post_spans("e-front", vec![root]).await;
    expected_calls += 1;

    // A client naming peer.service whose server never sends a span: external after the wait.
    let external = span(
        0xf0 << 120,
        1,
        Some(9),
        CLIENT,
        t0,
        4 * MS,
        vec![text("peer.service", "f-ext")],
    );
    server.post_spans("f-app", vec![external]).await;
    expected_calls += 1;

    // Retries: a timed-out attempt and one resent (http.request.resend_count), both answered.
    let trace = 0x10 << 120;
    let first = failed(span(
        trace,
        1,
        Some(9),
        CLIENT,
        t0,
        200 * MS,
        vec![
            text("error.type", "timeout"),
            text("server.address", "h-server"),
        ],
    ));
    let second = span(
        trace,
        2,
        Some(9),
        CLIENT,
        t0 + 201 * MS,
        10 * MS,
        vec![
            int("http.request.resend_count", 1),
            text("server.address", "h-server"),
        ],
    );
    let slow = span(
        trace,
        3,
        Some(1),
        SERVER,
        t0 + MS,
        350 * MS,
        vec![text("http.route", "/h")],
    );
    let fast = span(
        trace,
        4,
        Some(2),
        SERVER,
        t0 + 202 * MS,
        8 * MS,
        vec![text("http.route", "/h")],
    );
    server.post_spans("h-client", vec![first, second]).await;
    server.post_spans("h-server", vec![slow, fast]).await;
    expected_calls += 2;

    // Retries seen only as two sibling client spans to the same server and operation.
    let trace = 0x11 << 120;
    let siblings = vec![
        span(
            trace,
            1,
            Some(9),
            CLIENT,
            t0,
            5 * MS,
            vec![text("server.address", "i-server")],
        ),
        span(
            trace,
            2,
            Some(9),
            CLIENT,
            t0 + 6 * MS,
            5 * MS,
            vec![text("server.address", "i-server")],
        ),
    ];
    let answers = vec![
        span(trace, 3, Some(1), SERVER, t0 + MS, 3 * MS, vec![]),
        span(trace, 4, Some(2), SERVER, t0 + 7 * MS, 3 * MS, vec![]),
    ];
    server.post_spans("i-client", siblings).await;
    server.post_spans("i-server", answers).await;
    expected_calls += 2;

    let unpaired_before = metric(&server, "traces_service_graph_unpaired_spans_total").await;
    let unpaired_servers_before = metric(&server, "callwatch_pairer_unpaired_server_total").await;
    // A client span whose server arrives after the wait: not a call, both halves unpaired.
    let trace = 0x12 << 120;
    server
        .post_spans(
            "g-client",
            vec![span(trace, 1, Some(9), CLIENT, t0, 5 * MS, vec![])],
        )
        .await;
    let graph = graph_with(&server, expected_calls).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server
        .post_spans(
            "g-server",
            vec![span(trace, 2, Some(1), SERVER, t0 + MS, 3 * MS, vec![])],
        )
        .await;

    // The pair: counts, instances and exact nearest-rank percentiles on both sides.
    let a = edge(&graph, "a-client", "a-server");
    assert_eq!(a["call_type"], "sync");
    assert_eq!(a["calls"], 100);
    assert_eq!(a["errors"], 2, "HTTP 503 on the server fails the call");
    assert_eq!(percentiles(&a["latency_ms"]), (50.0, 95.0, 99.0));
    assert_eq!(percentiles(&a["server_latency_ms"]), (49.8, 94.8, 98.8));
    assert_eq!(a["health"], "degraded", "2 % errors: degraded, not failing");
    let b = edge(&graph, "b-app", "b-db");
    assert_eq!(
        (b["calls"].as_u64(), b["server_kind"].as_str()),
        (Some(1), Some("database"))
    );
    assert_eq!(node_kind(&graph, "b-db"), "database");
    let c = edge(&graph, "c-producer", "c-consumer");
    assert_eq!(
        (c["call_type"].as_str(), c["destination"].as_str()),
        (Some("async"), Some("c-topic"))
    );
    assert_eq!(percentiles(&c["queue_ms"]), (5.0, 5.0, 5.0));
    let d = edge(&graph, "d-producer", "d-consumer");
    assert_eq!(
        (d["calls"].as_u64(), d["destination"].as_str()),
        (Some(3), Some("d-queue"))
    );
    assert!(
        !has_edge(&graph, "user", "d-consumer"),
        "a linked consumer is not a user call"
    );
    let e = edge(&graph, "user", "e-front");
    assert_eq!(e["calls"], 1);
    assert_eq!(node_kind(&graph, "user"), "user");
    let f = edge(&graph, "f-app", "f-ext");
    assert_eq!(node_kind(&graph, "f-ext"), "external");
    assert_eq!(f["calls"], 1);
    let h = edge(&graph, "h-client", "h-server");
    assert_eq!(
        (
            h["calls"].as_u64(),
            h["errors"].as_u64(),
            h["retries"].as_u64(),
            h["timeouts"].as_u64()
        ),
        (Some(2), Some(1), Some(1), Some(1))
    );
    assert_eq!(h["retry_amplification"], 2.0);
    let i = edge(&graph, "i-client", "i-server");
    assert_eq!(
        (i["calls"].as_u64(), i["retries"].as_u64()),
        (Some(2), Some(1))
    );

    // The late server half: still no call, and both halves counted as unpaired.
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric(&server, "callwatch_pairer_unpaired_server_total").await
        < unpaired_servers_before + 1.0
    {
        assert!(
            Instant::now() < deadline,
            "the late server half was never settled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        metric(&server, "traces_service_graph_unpaired_spans_total").await,
        unpaired_before + 1.0
    );
    let graph = graph_with(&server, expected_calls).await;
    assert!(!has_edge(&graph, "g-client", "g-server"));

    // The service and edge views of the pair.
    let service = get(&server, &format!("/api/v1/services/a-server?{}", window())).await;
    assert_eq!(service["calls"], 100);
    assert_eq!(service["upstream"], serde_json::json!(["a-client"]));
    assert_eq!(service["api_versions"][0]["name"], "v1");
    let instances: Vec<(String, f64)> = service["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_string(),
                i["share"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        instances,
        [
            ("a-server-1".to_string(), 0.5),
            ("a-server-2".to_string(), 0.25),
            ("a-server-3".to_string(), 0.25)
        ]
    );
    assert_eq!(service["instance_skew"], 1.5);
    assert_eq!(service["operations"][0]["name"], "GET /v1/items/{id}");
    let edges = get(
        &server,
        &format!(
            "/api/v1/edges?source=a-client&target=a-server&step=1m&{}",
            window()
        ),
    )
    .await;
    let series = edges["edges"][0]["series"].as_array().unwrap();
    assert_eq!(series.len(), 120);
    assert_eq!(
        series
            .iter()
            .map(|s| s["calls"].as_u64().unwrap())
            .sum::<u64>(),
        100
    );
    assert_eq!(edges["edges"][0]["errors_by_status"][0]["name"], "503");

    // Prometheus, named as Tempo names it.
    let labels = "client=\"a-client\",server=\"a-server\",connection_type=\"\"";
    assert_eq!(
        metric(
            &server,
            &format!("traces_service_graph_request_total{{{labels}}}")
        )
        .await,
        100.0
    );
    assert_eq!(
        metric(
            &server,
            &format!("traces_service_graph_request_failed_total{{{labels}}}")
        )
        .await,
        2.0
    );
    assert_eq!(
        metric(
            &server,
            &format!("traces_service_graph_request_client_seconds_count{{{labels}}}")
        )
        .await,
        100.0
    );
    assert_eq!(
        metric(
            &server,
            &format!("traces_service_graph_request_server_seconds_bucket{{{labels},le=\"0.016\"}}")
        )
        .await,
        16.0
    );
    let db_labels = "client=\"b-app\",server=\"b-db\",connection_type=\"database\"";
    assert_eq!(
        metric(
            &server,
            &format!("traces_service_graph_request_total{{{db_labels}}}")
        )
        .await,
        1.0
    );
    let span_labels = "service=\"e-front\",span_name=\"op\",span_kind=\"SPAN_KIND_SERVER\",status_code=\"STATUS_CODE_UNSET\"";
    assert_eq!(
        metric(
            &server,
            &format!("traces_spanmetrics_calls_total{{{span_labels}}}")
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &server,
            &format!("traces_spanmetrics_latency_count{{{span_labels}}}")
        )
        .await,
        1.0
    );

    // The calls table answers SQL like spans does.
    let response = reqwest::Client::new()
        .post(format!("http://{}/api/v1/sql", server.http))
        .json(&serde_json::json!({ "sql": "SELECT count(*) AS n FROM calls WHERE client = 'h-client' AND retry" }))
        .send()
        .await
        .unwrap();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["rows"][0][0], 1, "{answer}");
    server.stop();
}

async fn post_instance(server: &Server, service: &str, instance: &str, spans: Vec<Span>) {
    let mut request = crate::common::requests::request(service, spans);
    let resource = request.resource_spans[0].resource.as_mut().unwrap();
    resource
        .attributes
        .push(text("service.instance.id", instance));
    server.post_request(&request).await;
}

/// (source, target, call type, destination, calls, errors) of each edge, sorted; the graph
/// and the ground truth files spell edges alike.
pub(crate) fn edge_rows(graph: &Value) -> Vec<(String, String, String, Option<String>, u64, u64)> {
    let text = |v: &Value| v.as_str().unwrap().to_string();
    let mut rows: Vec<_> = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                text(&e["source"]),
                text(&e["target"]),
                text(&e["call_type"]),
                e["destination"].as_str().map(str::to_string),
                e["calls"].as_u64().unwrap(),
                e["errors"].as_u64().unwrap(),
            )
        })
        .collect();
    rows.sort();
    rows
}

fn node_rows(graph: &Value) -> Vec<(String, String)> {
    let text = |v: &Value| v.as_str().unwrap().to_string();
    let mut rows: Vec<_> = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (text(&n["id"]), text(&n["kind"])))
        .collect();
    rows.sort();
    rows
}

#[tokio::test]
async fn span_metrics_count_each_stored_span_also_without_pairing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--no-pairing"]);
    let start = now_ns();
    let spans: Vec<Span> = (0..3u64)
        .map(|i| {
            span(
                0x77 << 120 | u128::from(i),
                i + 1,
                None,
                SERVER,
                start,
                5 * MS,
                vec![],
            )
        })
        .collect();
    server.post_spans("lone-front", spans).await;
    let mut failed = span(0x78 << 120, 9, None, CLIENT, start, 2 * MS, vec![]);
    failed.status = Some(Status {
        code: 2,
        ..Default::default()
    });
    server.post_spans("lone-front", vec![failed]).await;
    // Counted when acknowledged: no deriver runs to count them later.
    let series = |kind: &str, status: &str| {
        format!(
            "service=\"lone-front\",span_name=\"op\",span_kind=\"SPAN_KIND_{kind}\",status_code=\"STATUS_CODE_{status}\""
        )
    };
    let ok = series("SERVER", "UNSET");
    let error = series("CLIENT", "ERROR");
    assert_eq!(
        metric(&server, &format!("traces_spanmetrics_calls_total{{{ok}}}")).await,
        3.0
    );
    assert_eq!(
        metric(
            &server,
            &format!("traces_spanmetrics_latency_bucket{{{ok},le=\"0.008\"}}")
        )
        .await,
        3.0
    );
    assert_eq!(
        metric(
            &server,
            &format!("traces_spanmetrics_calls_total{{{error}}}")
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn the_demo_recordings_give_their_ground_truth_graph() {
    for file in samples() {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(&dir.path().join("data"), &["--pairing-wait", "1s"]);
        server.replay(&file);
        let truth: Value = serde_json::from_str(
            &std::fs::read_to_string(file.with_extension("truth.json")).unwrap(),
        )
        .unwrap();
        let expected: u64 = truth["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["calls"].as_u64().unwrap())
            .sum();
        let graph = graph_with(&server, expected).await;
        assert_eq!(edge_rows(&graph), edge_rows(&truth), "{}", file.display());
        assert_eq!(node_rows(&graph), node_rows(&truth), "{}", file.display());
        let payment = get(
            &server,
            &format!("/api/v1/services/payment-service?{}", window()),
        )
        .await;
        assert_eq!(
            payment["blast_radius"],
            serde_json::json!(["api-gateway", "order-service", "user", "web-frontend"])
        );
        assert_eq!(payment["transitive_downstream"], serde_json::json!([]));
        // The background task keeps every edge's breakdown pieces, as the graph's.
        let deadline = Instant::now() + Duration::from_secs(30);
        for cache in ["graph", "breakdowns"] {
            let sample = format!("callwatch_pieces_hours{{cache=\"{cache}\"}}");
            while metric(&server, &sample).await < 1.0 {
                assert!(Instant::now() < deadline, "no hour in {sample}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        server.stop();
    }
}

#[tokio::test]
async fn waiting_halves_survive_a_restart_and_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let t0 = now_ns() - 60_000 * MS;
    let client = |trace: u128| span(trace, 1, Some(9), CLIENT, t0, 10 * MS, vec![]);
    let server_half = |trace: u128| span(trace, 2, Some(1), SERVER, t0 + MS, 8 * MS, vec![]);

    // Graceful: the client half is saved with the flush at shutdown.
    let server = Server::start(&data, &["--pairing-wait", "60s"]);
    server
        .post_spans("r-client", vec![client(0x20 << 120)])
        .await;
    assert!(server.stop().success());
    // Killed: the client half is only in the WAL.
    let server = Server::start(&data, &["--pairing-wait", "60s"]);
    server
        .post_spans("k-client", vec![client(0x21 << 120)])
        .await;
    server.kill();

    let server = Server::start(&data, &["--pairing-wait", "60s"]);
    server
        .post_spans("r-server", vec![server_half(0x20 << 120)])
        .await;
    server
        .post_spans("k-server", vec![server_half(0x21 << 120)])
        .await;
    let graph = graph_with(&server, 2).await;
    for (client, server_name) in [("r-client", "r-server"), ("k-client", "k-server")] {
        let pair = edge(&graph, client, server_name);
        assert_eq!(percentiles(&pair["latency_ms"]), (10.0, 10.0, 10.0));
        assert_eq!(percentiles(&pair["server_latency_ms"]), (8.0, 8.0, 8.0));
    }
    // And the calls are stored once: after a graceful stop they are in segments.
    assert!(server.stop().success());
    let server = Server::start(&data, &["--pairing-wait", "60s"]);
    graph_with(&server, 2).await;
    server.stop();
}

/// A platform started two minutes ago sending 19 calls a second shows 19/s on the 15-minute
/// view, in the API and on the pages, and the same over the last minute.
#[tokio::test]
async fn a_rate_counts_from_the_first_call_not_from_the_window_start() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[]);
    const PER_SECOND: u64 = 19;
    let calls = 120 * PER_SECOND;
    let first = now_ns() - 120_000 * MS;
    let spans: Vec<Span> = (0..calls)
        .map(|n| {
            span(
                0xe0 << 120 | u128::from(n),
                1,
                Some(9),
                CLIENT,
                first + n * 1000 * MS / PER_SECOND,
                2 * MS,
                vec![
                    text("db.system.name", "postgresql"),
                    text("server.address", "rates-db"),
                ],
            )
        })
        .collect();
    for chunk in spans.chunks(500) {
        server.post_spans("rates-app", chunk.to_vec()).await;
    }
    let range = "range=15m&refresh=off";
    let deadline = Instant::now() + Duration::from_secs(30);
    let graph = loop {
        let graph = get(&server, &format!("/api/v1/graph?{range}")).await;
        let seen = graph["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["target"] == "rates-db")
            .map_or(0, |e| e["calls"].as_u64().unwrap());
        if seen == calls {
            break graph;
        }
        assert!(Instant::now() < deadline, "{seen} of {calls} calls");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let edge = edge(&graph, "rates-app", "rates-db");
    let near = |rate: f64| (rate / PER_SECOND as f64 - 1.0).abs() < 0.10;
    let rate = edge["rate_per_s"].as_f64().unwrap();
    assert!(near(rate), "{rate}/s over the window");
    let recent = edge["rate_last_minute_per_s"].as_f64().unwrap();
    assert!(near(recent), "{recent}/s over the last minute");
    // The map page's edge table says the same.
    let page = reqwest::get(format!("http://{}/graph?{range}", server.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let row = page
        .lines()
        .find(|l| l.contains("<tr data-edge=\"rates-app → rates-db\""))
        .unwrap_or_else(|| panic!("no rates row in {page}"));
    let shown: Vec<f64> = row
        .split("<td class=\"num")
        .filter_map(|cell| cell.split('>').nth(1)?.strip_suffix("/s</td")?.parse().ok())
        .collect();
    assert_eq!(shown.len(), 2, "{row}");
    assert!(shown.iter().all(|r| near(*r)), "{row}");
}
