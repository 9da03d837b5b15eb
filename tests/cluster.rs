//! Past one machine: two collectors (`--role ingest`) share an S3 bucket and two query nodes
//! (`--role query`) answer from it. The demo recording, split by trace id over the
//! collectors as the OpenTelemetry Collector's loadbalancing exporter splits it, gives on both
//! query nodes the graph, breakers, SQL counts and service-graph series of one server that
//! received it all: the recording's ground truth, the batch consumer's calls to messages of
//! traces another collector received included. A query node started after the collectors
//! stopped answers the same, and a collector gone for good is adopted by another.

use std::process::Command;
use std::time::{Duration, Instant};

use chrono::DateTime;
use serde_json::Value;

use crate::common::{Server, callwatch, metric, pg_client, sql};
use crate::graph::{edge_rows, get, window};
use crate::object_storage::{DemoInBucket, S3};

/// What a query node answers that must equal one server's: graph edges, spans and calls by
/// service, the order → payment breaker's inferred transitions (as offsets from its first
/// call, since each replay starts at its own now) and one service-graph series.
async fn answers(server: &Server) -> Value {
    let graph = get(server, &format!("/api/v1/graph?{}", window())).await;
    let breakers = get(server, &format!("/api/v1/breakers?{}", window())).await;
    let payment = breakers["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["client"] == "order-service" && b["server"] == "payment-service");
    let transitions: Vec<Value> = payment
        .map(|breaker| {
            let first = nanos(&breaker["first_call"]);
            breaker["inferred_transitions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| serde_json::json!([nanos(&t["at"]) - first, t["from"], t["to"]]))
                .collect()
        })
        .unwrap_or_default();
    let rows = |query: &'static str| async move {
        let body: Value = sql(server, "application/json", query)
            .await
            .json()
            .await
            .unwrap();
        body["rows"].clone()
    };
    serde_json::json!({
        "edges": edge_rows(&graph),
        "spans": rows("SELECT service_name, count(*) FROM spans GROUP BY 1 ORDER BY 1").await,
        "calls": rows("SELECT client, server, count(*), sum(CAST(failed AS INT)) FROM calls GROUP BY 1, 2 ORDER BY 1, 2").await,
        "transitions": transitions,
        "payment_series": metric(
            server,
            r#"traces_service_graph_request_total{client="order-service",server="payment-service",connection_type=""}"#,
        )
        .await,
    })
}

fn nanos(rfc3339: &Value) -> i64 {
    DateTime::parse_from_rfc3339(rfc3339.as_str().unwrap())
        .unwrap()
        .timestamp_nanos_opt()
        .unwrap()
}

/// `server`'s answers once they hold every span of the recording and stay the same over a
/// few refreshes (the collectors' last halves settle and flush).
async fn settled_answers(server: &Server, spans: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut last = Value::Null;
    let mut same = 0;
    loop {
        let body: Value = sql(server, "application/json", "SELECT count(*) FROM spans")
            .await
            .json()
            .await
            .unwrap();
        let stored = body["rows"][0][0].as_u64().unwrap_or(0);
        let answers = answers(server).await;
        // The breakers hold calls for earlier ones of their edge: settled once none wait.
        let held = metric(server, "callwatch_breaker_waiting_calls").await;
        same = if stored == spans && answers == last && held == 0.0 {
            same + 1
        } else {
            0
        };
        if same == 4 {
            return answers;
        }
        assert!(
            Instant::now() < deadline,
            "{stored} of {spans} spans; answers still moving: {answers:#}"
        );
        last = answers;
        tokio::time::sleep(Duration::from_millis(750)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collectors_and_two_query_nodes_answer_as_one_server() {
    let Some(s3) = S3::start(&["cluster"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let DemoInBucket {
        file,
        truth,
        spans,
        breakers,
        config,
    } = s3.demo_config(dir.path(), "cluster/callwatch");
    let quick = [
        "--pairing-wait",
        "1s",
        "--flush-interval",
        "1s",
        "--refresh-interval",
        "1s",
    ];
    let start = |data: &str, config: &std::path::Path, extra: &[&str]| {
        let mut flags = vec!["--config", config.to_str().unwrap()];
        flags.extend(quick);
        flags.extend(extra);
        Server::start(&dir.path().join(data), &flags)
    };

    let reference = start("reference", &breakers, &[]);
    let collectors = [
        start(
            "one",
            &config,
            &["--role", "ingest", "--node-id", "collector-1"],
        ),
        start(
            "two",
            &config,
            &["--role", "ingest", "--node-id", "collector-2"],
        ),
    ];
    let queries = [
        start("query-1", &config, &["--role", "query"]),
        start("query-2", &config, &["--role", "query"]),
    ];
    // An ingest node serves no pages; a query node takes no spans.
    let page = reqwest::get(format!("http://{}/api/v1/graph", collectors[0].http))
        .await
        .unwrap();
    assert_eq!(page.status(), 404);
    assert!(metric(&collectors[0], "callwatch_hot_spans").await >= 0.0);
    let metrics = reqwest::get(format!("http://{}/metrics", queries[0].http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !metrics.contains("callwatch_wal_records_total"),
        "{metrics}"
    );
    assert!(metrics.contains("callwatch_refreshes_total"), "{metrics}");

    reference.replay(&file);
    let urls = format!("{},{}", collectors[0].grpc_url(), collectors[1].grpc_url());
    let output = callwatch(&["replay", file.to_str().unwrap(), "--send-to", &urls]);
    assert!(output.contains(&format!("{spans} accepted")), "{output}");
    // Each collector got a share, every span of a trace in one.
    for collector in &collectors {
        let received = metric(collector, "callwatch_pairer_spans_total").await;
        assert!(
            received > spans as f64 / 4.0 && received < spans as f64 * 3.0 / 4.0,
            "{received} of {spans}"
        );
    }

    let expected = settled_answers(&reference, spans).await;
    assert_eq!(
        expected["edges"],
        serde_json::json!(edge_rows(&truth)),
        "one server gives the truth"
    );
    for query in &queries {
        let answers = settled_answers(query, spans).await;
        assert_eq!(answers["edges"], expected["edges"]);
        assert_eq!(answers["spans"], expected["spans"]);
        assert_eq!(answers["transitions"], expected["transitions"]);
        assert_eq!(answers["calls"], expected["calls"]);
        assert_eq!(answers["payment_series"], expected["payment_series"]);
        assert!(!answers["transitions"].as_array().unwrap().is_empty());
    }
    // Both query nodes answer alike, to the row.
    assert_eq!(
        answers(&queries[0]).await,
        answers(&queries[1]).await,
        "two query nodes behind one balancer"
    );

    // The collectors stop; a query node started now answers from the bucket alone.
    let [first, second] = collectors;
    assert!(first.stop().success());
    assert!(second.stop().success());
    let late = start(
        "query-3",
        &config,
        &["--role", "query", "--pg", "127.0.0.1:0"],
    );
    let before = settled_answers(&queries[0], spans).await;
    assert_eq!(settled_answers(&late, spans).await, before, "{before:#}");
    // Its Postgres listener and `callwatch sql --server` answer from the bucket too.
    let (client, _connection) = pg_client(late.announced("postgres")).await;
    let row = client
        .query_one("SELECT count(*) FROM spans", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), spans as i64);
    let url = format!("http://{}", late.http);
    let printed = callwatch(&["sql", "SELECT count(*) AS n FROM spans", "--server", &url]);
    assert!(printed.contains(&spans.to_string()), "{printed}");

    // collector-2 is gone for good: collector-1's node adopts its segments. Readers see each
    // segment once all along, and collector-2 can no longer start under its name.
    let adopted = callwatch(&[
        "storage",
        "adopt",
        "collector-2",
        "--data-dir",
        dir.path().join("one").to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(adopted.contains("belong to the node of"), "{adopted}");
    assert_eq!(settled_answers(&late, spans).await, before);
    let first = start(
        "one",
        &config,
        &["--role", "ingest", "--node-id", "collector-1"],
    );
    assert_eq!(settled_answers(&late, spans).await, before);
    let refused = Command::new(env!("CARGO_BIN_EXE_callwatch"))
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("two"))
        .args(["--config", config.to_str().unwrap(), "--role", "ingest"])
        .args(["--otlp-grpc", "127.0.0.1:0", "--otlp-http", "127.0.0.1:0"])
        .args(["--http", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("was adopted"), "{stderr}");
    assert!(first.stop().success());
}
