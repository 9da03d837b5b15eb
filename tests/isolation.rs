//! Readers cannot stop the server: runaway queries are stopped at their time limit on a
//! runtime of their own while `/healthz`, the dashboard and an OpenTelemetry exporter carry
//! on; a burst of queries gets answers or 429s; bodies past the in-flight budget get 429 and
//! memory stays bounded; a client that never finishes its headers is cut off.

use std::io::Write;
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::requests::{numbered_span, request};
use crate::common::{Server, metric, pg_client, sql};

/// Never yields: every batch of the cross join is ready at once.
const CROSS_JOIN: &str =
    "SELECT count(*) FROM generate_series(1, 100000000) a, generate_series(1, 100000000) b";

/// Generous for a loaded test machine, and far below "never answered".
const HEALTHZ_BOUND: Duration = Duration::from_millis(500);

/// CPU seconds the server process has used so far (user + system).
fn cpu_seconds(server: &Server) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", server.pid())).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// A line of the server's `/proc/PID/status`, in KiB (`VmRSS`, `VmHWM`).
fn status_kib(server: &Server, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with(&format!("{field}:")))
        .unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// CPU seconds the server uses in 2 s, after half a second for whatever was ending: about
/// nothing once its queries have stopped.
async fn cpu_used_in_two_seconds(server: &Server) -> f64 {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cpu_seconds(server);
    tokio::time::sleep(Duration::from_secs(2)).await;
    cpu_seconds(server) - before
}

/// Waits up to 10 s for a counter on `/metrics` to reach `at_least`.
async fn wait_for_metric(server: &Server, sample: &str, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(server, sample).await < at_least {
        assert!(
            Instant::now() < deadline,
            "{sample} stayed below {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runaway_queries_stop_at_their_limit_while_ingest_health_and_pages_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(
        &data,
        &[
            "--query-timeout",
            "2s",
            "--query-threads",
            "1",
            "--query-concurrency",
            "4",
            "--pg",
            "127.0.0.1:0",
        ],
    );
    let pg = server.announced("postgres");

    // /healthz every 100 ms for as long as the runaways run.
    let healthz_url = format!("http://{}/healthz", server.http);
    let (stop_health, health_stopped) = tokio::sync::watch::channel(false);
    let health = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut slowest = Duration::ZERO;
        let mut asked = 0;
        while !*health_stopped.borrow() {
            let started = Instant::now();
            let answer =
                tokio::time::timeout(Duration::from_secs(5), client.get(&healthz_url).send())
                    .await
                    .expect("/healthz answered")
                    .unwrap();
            assert_eq!(answer.status(), 200);
            slowest = slowest.max(started.elapsed());
            asked += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (asked, slowest)
    });

    let started = Instant::now();
    let runaways: Vec<_> = (0..4)
        .map(|_| {
            let http = server.http;
            tokio::spawn(async move {
                let response = reqwest::Client::new()
                    .post(format!("http://{http}/api/v1/sql"))
                    .json(&serde_json::json!({ "sql": CROSS_JOIN }))
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                let body: serde_json::Value = response.json().await.unwrap();
                (status, body, started.elapsed())
            })
        })
        .collect();

    // Meanwhile the real exporter sends spans one export at a time over gRPC.
    let memory = InMemorySpanExporter::default();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(server.grpc_url())
        .build()
        .unwrap();
    let provider = SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name("checkout").build())
        .with_simple_exporter(exporter)
        .with_simple_exporter(memory.clone())
        .build();
    let provider = tokio::task::spawn_blocking(move || {
        let tracer = provider.tracer("isolation");
        for i in 0..100 {
            let mut span = tracer.start(format!("POST /v1/orders/{i}"));
            span.set_attribute(KeyValue::new("http.route", "/v1/orders"));
            span.end();
            std::thread::sleep(Duration::from_millis(20));
        }
        provider.force_flush().unwrap();
        provider
    })
    .await
    .unwrap();
    let sent: Vec<String> = memory
        .get_finished_spans()
        .unwrap()
        .iter()
        .map(|span| span.span_context.span_id().to_string())
        .collect();
    assert_eq!(sent.len(), 100);

    // The dashboard's overview renders while they run.
    let overview = reqwest::get(format!("http://{}/", server.http))
        .await
        .unwrap();
    assert_eq!(overview.status(), 200);
    assert!(overview.text().await.unwrap().contains("<h1>Overview</h1>"));

    for runaway in runaways {
        let (status, body, took) = runaway.await.unwrap();
        assert_eq!(status, 400, "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains("time limit of 2s"), "{error}");
        assert!(took < Duration::from_secs(10), "answered after {took:?}");
    }

    // Stopped means stopped: the server's CPU goes quiet, not just the answers.
    let used = cpu_used_in_two_seconds(&server).await;
    assert!(
        used < 0.5,
        "the server used {used} s of CPU in 2 s after the queries stopped"
    );

    stop_health.send(true).unwrap();
    let (asked, slowest) = health.await.unwrap();
    assert!(asked >= 10, "/healthz asked {asked} times");
    assert!(slowest < HEALTHZ_BOUND, "/healthz once took {slowest:?}");
    println!("/healthz: {asked} answers, slowest {slowest:?}");

    // Over the Postgres wire the same query ends in SQLSTATE 57014.
    let (client, _connection) = pg_client(pg).await;
    let error = client.simple_query(CROSS_JOIN).await.unwrap_err();
    assert_eq!(
        error.as_db_error().unwrap().code(),
        &tokio_postgres::error::SqlState::QUERY_CANCELED,
        "{error}"
    );
    drop(client);

    tokio::task::spawn_blocking(move || provider.shutdown().unwrap())
        .await
        .unwrap();
    server.stop();
    let (stored, _) = crate::common::stored_spans(&data).await;
    for id in &sent {
        assert_eq!(
            stored.iter().filter(|s| &s.span_id == id).count(),
            1,
            "span {id} acknowledged and stored once"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_cancels_its_query() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--query-timeout",
            "10m",
            "--query-threads",
            "1",
            "--pg",
            "127.0.0.1:0",
        ],
    );
    let pg = server.announced("postgres");
    let client = reqwest::Client::new();
    let request = client
        .post(format!("http://{}/api/v1/sql", server.http))
        .json(&serde_json::json!({ "sql": CROSS_JOIN }))
        .send();
    // The client gives up after a second and closes its connection.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), request)
            .await
            .is_err()
    );
    drop(client);
    wait_for_metric(&server, "callwatch_read_requests_cancelled_total", 1.0).await;
    assert_eq!(
        metric(&server, "callwatch_read_requests_running").await,
        0.0
    );
    let used = cpu_used_in_two_seconds(&server).await;
    assert!(
        used < 0.5,
        "the cancelled query still ran: {used} s of CPU in 2 s"
    );

    // The same over the Postgres wire: the client closes its connection mid-query.
    let (client, connection) = pg_client(pg).await;
    let query = client.simple_query(CROSS_JOIN);
    assert!(
        tokio::time::timeout(Duration::from_secs(1), query)
            .await
            .is_err()
    );
    drop(client);
    connection.abort();
    wait_for_metric(&server, "callwatch_read_requests_cancelled_total", 2.0).await;
    let used = cpu_used_in_two_seconds(&server).await;
    assert!(
        used < 0.5,
        "the cancelled Postgres query still ran: {used} s of CPU in 2 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_queries_gets_answers_or_429s_and_then_the_server_answers_normally() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--query-timeout",
            "5s",
            "--query-threads",
            "1",
            "--query-concurrency",
            "2",
        ],
    );
    let burst: Vec<_> = (0..50)
        .map(|i| {
            let http = server.http;
            tokio::spawn(async move {
                let sql = format!("SELECT count(*) + {i} FROM generate_series(1, 30000000)");
                let answer = tokio::time::timeout(
                    Duration::from_secs(60),
                    reqwest::Client::new()
                        .post(format!("http://{http}/api/v1/sql"))
                        .json(&serde_json::json!({ "sql": sql }))
                        .send(),
                )
                .await
                .expect("an answer, not a hang")
                .unwrap();
                let retry_after = answer.headers().get("retry-after").cloned();
                (answer.status().as_u16(), retry_after)
            })
        })
        .collect();
    let (mut answered, mut refused) = (0, 0);
    for task in burst {
        match task.await.unwrap() {
            (200, _) => answered += 1,
            (429, Some(retry_after)) => {
                assert_eq!(retry_after, "1");
                refused += 1;
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(answered >= 2, "{answered} answered, {refused} refused");
    assert!(refused > 0, "{answered} answered, {refused} refused");
    assert_eq!(
        metric(&server, "callwatch_read_requests_refused_total").await,
        refused as f64
    );
    let response = sql(&server, "application/json", "SELECT 1 + 1").await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["rows"][0][0], 2);
}

/// One valid export request of about `bytes` bytes: gzip-compressed, and as it is.
fn big_gzip_request(bytes: usize) -> (Vec<u8>, Vec<u8>) {
    let mut spans = Vec::new();
    let mut size = 0;
    let mut index = 0;
    while size < bytes {
        let mut span = numbered_span(7, 0, index);
        span.name = format!("GET /v1/catalog/{index:0>300}");
        // A tag byte and a two-byte length before each span.
        size += span.encoded_len() + 3;
        spans.push(span);
        index += 1;
    }
    let body = request("catalog-service", spans).encode_to_vec();
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gzip.write_all(&body).unwrap();
    (gzip.finish().unwrap(), body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bodies_past_the_inflight_budget_get_429_and_memory_stays_bounded() {
    const BUDGET_MIB: u64 = 64;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(
        &data,
        &[
            "--ingest-inflight-bytes",
            "64MiB",
            "--max-message-size",
            "17MiB",
            "--no-pairing",
        ],
    );
    let (body, inflated) = big_gzip_request(16 << 20);
    assert!(inflated.len() >= 16 << 20);
    let rss_before = status_kib(&server, "VmRSS");
    let gzip_http = {
        let (client, url, body) = (
            reqwest::Client::new(),
            server.traces_url(),
            bytes::Bytes::from(body.clone()),
        );
        move || {
            let (client, url, body) = (client.clone(), url.clone(), body.clone());
            async move {
                let response = client
                    .post(url)
                    .header("content-type", "application/x-protobuf")
                    .header("content-encoding", "gzip")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let retry_after = response.headers().get("retry-after").cloned();
                (response.status().as_u16(), retry_after)
            }
        }
    };
    let burst: Vec<_> = (0..32).map(|_| tokio::spawn(gzip_http())).collect();
    let (mut taken, mut refused) = (0, 0);
    for task in burst {
        match task.await.unwrap() {
            (200, _) => taken += 1,
            (429, Some(retry_after)) => {
                assert_eq!(retry_after, "1");
                refused += 1;
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(
        taken >= 1 && refused >= 1,
        "{taken} taken, {refused} refused"
    );
    // The same over gRPC, compressed the same way.
    let grpc: Vec<_> = (0..8)
        .map(|_| {
            let (url, body) = (server.grpc_url(), inflated.clone());
            tokio::spawn(async move {
                let client = callwatch_collector::OtlpClient::connect(&url)
                    .await
                    .unwrap();
                client.gzip().export_bytes(bytes::Bytes::from(body)).await
            })
        })
        .collect();
    let mut grpc_refused = 0;
    for task in grpc {
        if let Err(status) = task.await.unwrap() {
            assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
            grpc_refused += 1;
        }
    }
    assert!(grpc_refused >= 1);
    assert_eq!(
        metric(
            &server,
            "callwatch_ingest_requests_refused_total{reason=\"inflight_full\"}"
        )
        .await,
        (refused + grpc_refused) as f64
    );
    assert_eq!(
        metric(&server, "callwatch_ingest_inflight_bytes").await,
        0.0
    );
    // The spans taken stay in memory until flushed (each request is ~16 MiB of spans): the
    // margin is for them and the allocator, not for bodies waiting to be decoded.
    let peak_mib = status_kib(&server, "VmHWM").saturating_sub(rss_before) / 1024;
    let stored_mib = (taken + 8 - grpc_refused) as u64 * 2 * 16;
    let bound = BUDGET_MIB + stored_mib + 256;
    assert!(
        peak_mib < bound,
        "peak RSS grew by {peak_mib} MiB; bound {bound} MiB ({taken} + {} taken)",
        8 - grpc_refused
    );
    println!(
        "peak RSS growth {peak_mib} MiB for {taken} + {} bodies taken",
        8 - grpc_refused
    );
}

/// A length-delimited protobuf field.
fn field(tag: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(tag << 3) | 2];
    prost::encoding::encode_varint(payload.len() as u64, &mut out);
    out.extend_from_slice(payload);
    out
}

/// Bodies whose elements are as small as their encoding allows decode to far more than
/// they weigh (an empty span is 2 bytes, and ~200 decoded): the decoded views and messages
/// are charged to the in-flight budget as they are made. One that alone would pass the
/// budget is refused for good (413 / `OUT_OF_RANGE`) before it takes the memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bodies_of_tiny_elements_are_charged_as_they_decode() {
    const BUDGET_MIB: u64 = 128;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--ingest-inflight-bytes",
            "128MiB",
            "--max-message-size",
            "16MiB",
        ],
    );
    let spans = 5_000_000;
    let json = format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{}]}}]}}]}}"#,
        vec!["{}"; spans].join(",")
    );
    let empty_spans = [0x12, 0x00].repeat(spans);
    let in_place = field(1, &field(2, &empty_spans));
    let in_place_copy = in_place.clone();
    // A status given twice is merged by prost: the in-place reader leaves the body to it.
    let mut merged_spans = field(2, &[0x7a, 0x00, 0x7a, 0x00]);
    merged_spans.extend_from_slice(&empty_spans);
    let for_prost = field(1, &merged_spans);
    let rss_before = status_kib(&server, "VmRSS");
    let client = reqwest::Client::new();
    for (content_type, body) in [
        ("application/json", json.into_bytes()),
        ("application/x-protobuf", in_place),
        ("application/x-protobuf", for_prost),
    ] {
        let response = client
            .post(server.traces_url())
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, 413, "{content_type}: {text}");
        assert!(text.contains("in-flight budget"), "{text}");
    }
    let mut grpc = callwatch_collector::OtlpClient::connect(&server.grpc_url())
        .await
        .unwrap();
    let refused = grpc
        .export_bytes(bytes::Bytes::from(in_place_copy))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::OutOfRange, "{refused:?}");
    // Nothing was charged for good, and nothing counted as refused for load.
    assert_eq!(
        metric(&server, "callwatch_ingest_inflight_bytes").await,
        0.0
    );
    assert_eq!(
        metric(
            &server,
            "callwatch_ingest_requests_refused_total{reason=\"inflight_full\"}"
        )
        .await,
        0.0
    );
    // Each body decoded whole would have taken about a gigabyte.
    let peak_mib = status_kib(&server, "VmHWM").saturating_sub(rss_before) / 1024;
    let bound = BUDGET_MIB + 2 * 16 + 128;
    assert!(
        peak_mib < bound,
        "peak RSS grew by {peak_mib} MiB; bound {bound} MiB"
    );
    println!("peak RSS growth {peak_mib} MiB");
}

/// Sends `head` a byte at a time, a byte a second; returns how long the server kept the
/// connection open.
async fn slowloris(addr: std::net::SocketAddr, head: &[u8]) -> Duration {
    let started = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    for byte in head {
        if stream.write_all(&[*byte]).await.is_err() {
            return started.elapsed();
        }
        let mut buffer = [0u8; 256];
        // Waits a second for the server to close (or answer 408), then sends the next byte.
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buffer)).await {
            Ok(_) => return started.elapsed(),
            Err(_) => continue,
        }
    }
    panic!("the server read the whole slow head");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--header-timeout", "2s"]);
    let head =
        b"GET /healthz HTTP/1.1\r\nHost: callwatch\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    for addr in [server.http, server.otlp_http, server.grpc] {
        let held = slowloris(addr, head).await;
        assert!(
            held < Duration::from_secs(5),
            "{addr} held a slow client for {held:?}"
        );
    }
    // A client that connects and says nothing is closed too.
    let started = Instant::now();
    let mut silent = tokio::net::TcpStream::connect(server.http).await.unwrap();
    let mut buffer = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buffer))
        .await
        .expect("closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Whoever sends a whole request is served, within the header size limit.
    let answer = reqwest::get(format!("http://{}/healthz", server.http))
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let oversized = reqwest::Client::new()
        .get(format!("http://{}/healthz", server.http))
        .header("x-large", "a".repeat(100 << 10))
        .send()
        .await;
    match oversized {
        Ok(answer) => assert_eq!(answer.status(), 431),
        Err(error) => assert!(error.is_request() || error.is_connect(), "{error}"),
    }
}
