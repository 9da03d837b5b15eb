//! `POST /api/v1/sql`: what was sent comes back, from memory and from segments alike, in
//! JSON, CSV and Arrow; anything but a query is refused with 403 and leaves no trace; a
//! runaway query is stopped while other queries still answer.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::requests::{hex, numbered_span};
use crate::common::{Server, callwatch, metric, sql};

async fn send(server: &Server, sender: u32, spans: u32) -> Vec<String> {
    let spans: Vec<_> = (0..spans).map(|i| numbered_span(sender, 0, i)).collect();
    let ids = spans.iter().map(|s| hex(&s.span_id)).collect();
    server.post_spans("user-service", spans).await;
    ids
}

/// The answer is an error with this status whose message says `says`.
async fn expect_error(response: reqwest::Response, status: u16, says: &str) {
    assert_eq!(response.status(), status);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains(says), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_over_memory_and_segments_returns_exactly_what_was_sent() {
    let dir = tempfile::tempdir().unwrap();
    // Flushes by count only: a timed one could take the spans meant to stay in memory.
    let server = Server::start(
        &dir.path().join("data"),
        &["--flush-spans", "50", "--flush-interval", "1h"],
    );
    let mut sent = BTreeSet::new();
    for sender in 0..3 {
        sent.extend(send(&server, sender, 60).await);
    }
    // Each request passes the flush threshold: wait until they are all in segments, then
    // send some more that stay in memory.
    // On a busy machine the flushes may take seconds: a flush still running when the last
    // spans are sent would take them along.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while metric(&server, "callwatch_segment_spans").await < 180.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the sent spans never reached segments"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(metric(&server, "callwatch_segments").await >= 1.0);
    sent.extend(send(&server, 9, 7).await);
    assert!(metric(&server, "callwatch_hot_spans").await >= 7.0);

    let query = "SELECT span_id, service_name, span_kind, duration_ns, attributes['http.route'] AS route \
                 FROM spans ORDER BY span_id";
    let response = sql(&server, "application/json", query).await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    let names: Vec<&str> = body["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "span_id",
            "service_name",
            "span_kind",
            "duration_ns",
            "route"
        ]
    );
    assert_eq!(body["columns"][3]["type"], "Int64");
    let rows = body["rows"].as_array().unwrap();
    let ids: Vec<String> = rows
        .iter()
        .map(|r| r[0].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids,
        sent.iter().cloned().collect::<Vec<_>>(),
        "every span once, in order"
    );
    assert_eq!(rows[0][1], "user-service");
    assert_eq!(rows[0][2], "SERVER");
    assert_eq!(rows[0][3], 2_000_000);
    assert_eq!(rows[0][4], "/v1/users/{id}");

    let response = sql(
        &server,
        "text/csv",
        "SELECT span_id, duration_ns FROM spans ORDER BY span_id",
    )
    .await;
    assert_eq!(response.status(), 200);
    let csv = response.text().await.unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("span_id,duration_ns"));
    let csv_ids: Vec<&str> = lines.map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(csv_ids, ids);

    let response = sql(
        &server,
        "application/vnd.apache.arrow.stream",
        "SELECT span_id FROM spans",
    )
    .await;
    assert_eq!(response.status(), 200);
    let bytes = response.bytes().await.unwrap();
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
    let mut arrow_ids = BTreeSet::new();
    for batch in reader {
        let batch = batch.unwrap();
        let column = batch
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        arrow_ids.extend(column.iter().map(|v| v.unwrap().to_string()));
    }
    assert_eq!(arrow_ids, sent);

    // A trace-id look-up and a time window find what they should.
    let trace = hex(&numbered_span(1, 0, 0).trace_id);
    let response = sql(
        &server,
        "application/json",
        &format!("SELECT count(*) FROM spans WHERE trace_id = '{trace}'"),
    )
    .await;
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["rows"][0][0], 60);
    let response = sql(
        &server,
        "application/json",
        "SELECT count(*) FROM spans WHERE start_time > now() - interval '1 hour'",
    )
    .await;
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["rows"][0][0], sent.len());
    let response = sql(
        &server,
        "application/json",
        "SELECT count(*) FROM spans WHERE start_time < now() - interval '1 day'",
    )
    .await;
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["rows"][0][0], 0);

    let response = sql(&server, "application/json", "SELECT nope FROM spans").await;
    expect_error(response, 400, "nope").await;
}

fn files_below(dir: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.insert(path.display().to_string());
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_but_queries_is_refused_with_403_and_leaves_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    send(&server, 1, 5).await;
    let out = dir.path().join("copy.parquet");
    let before = files_below(dir.path());
    let statements = [
        "CREATE TABLE t (a INT)".to_string(),
        "CREATE TABLE t AS SELECT * FROM spans".to_string(),
        "CREATE VIEW v AS SELECT 1".to_string(),
        "INSERT INTO spans (span_id) VALUES ('x')".to_string(),
        "DELETE FROM spans".to_string(),
        "UPDATE spans SET span_name = 'x'".to_string(),
        "DROP TABLE spans".to_string(),
        format!("COPY (SELECT * FROM spans) TO '{}'", out.display()),
        format!(
            "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '{}'",
            data.display()
        ),
        format!("SELECT * FROM '{}/spans'", data.display()),
        "SELECT * FROM 'https://example.com/x.parquet'".to_string(),
        "SET datafusion.execution.batch_size = 1".to_string(),
    ];
    for statement in &statements {
        let response = sql(&server, "application/json", statement).await;
        assert_eq!(response.status(), 403, "{statement}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("not allowed"),
            "{statement}: {body}"
        );
    }
    assert_eq!(
        files_below(dir.path()),
        before,
        "refused statements wrote nothing"
    );
    let response = sql(&server, "application/json", "SELECT count(*) FROM spans").await;
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["rows"][0][0], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_queries_are_stopped_while_others_answer() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--query-timeout",
            "5s",
            "--query-max-rows",
            "100",
            "--query-memory",
            "32MiB",
        ],
    );
    send(&server, 1, 5).await;
    let runaway = async {
        let response = sql(
            &server,
            "application/json",
            "SELECT count(*) FROM generate_series(1, 1000000000000)",
        )
        .await;
        (response, Instant::now())
    };
    let other = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let response = sql(&server, "application/json", "SELECT count(*) FROM spans").await;
        (response, Instant::now())
    };
    let ((runaway, runaway_done), (other, other_done)) = tokio::join!(runaway, other);
    expect_error(runaway, 400, "time limit").await;
    assert_eq!(other.status(), 200);
    let body: serde_json::Value = other.json().await.unwrap();
    assert_eq!(body["rows"][0][0], 5);
    assert!(other_done < runaway_done, "answered while the runaway ran");

    let response = sql(
        &server,
        "application/json",
        "SELECT * FROM generate_series(1, 1000)",
    )
    .await;
    expect_error(response, 400, "more than the limit of 100 rows").await;

    // A query that needs more memory than its limit (an exact percentile holds every value;
    // what can spill to disk does) is stopped; the server goes on.
    let response = sql(
        &server,
        "application/json",
        "SELECT percentile_cont(value, 0.5) FROM generate_series(1, 20000000)",
    )
    .await;
    expect_error(response, 400, "more memory than its limit").await;
    let response = sql(&server, "application/json", "SELECT count(*) FROM spans").await;
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sql_command_prints_a_table_from_a_server_or_a_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    send(&server, 1, 3).await;
    let query = "SELECT service_name, count(*) AS spans FROM spans GROUP BY service_name";
    let expected = "\
+--------------+-------+
| service_name | spans |
+--------------+-------+
| user-service | 3     |
+--------------+-------+
(1 row)
";
    let url = format!("http://{}", server.http);
    assert_eq!(callwatch(&["sql", "--server", &url, query]), expected);
    // Errors say what is wrong and exit non-zero.
    let failed = Command::new(env!("CARGO_BIN_EXE_callwatch"))
        .args(["sql", "--server", &url, "DROP TABLE spans"])
        .output()
        .unwrap();
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("not allowed"));
    // The data directory belongs to the running server...
    let busy = Command::new(env!("CARGO_BIN_EXE_callwatch"))
        .args(["sql", "--data-dir", data.to_str().unwrap(), query])
        .output()
        .unwrap();
    assert!(!busy.status.success());
    assert!(String::from_utf8_lossy(&busy.stderr).contains("--server"));
    // ...and once it stopped, the same answer comes straight from the files.
    server.stop();
    assert_eq!(
        callwatch(&["sql", "--data-dir", data.to_str().unwrap(), query]),
        expected
    );
    let empty = callwatch(&[
        "sql",
        "--data-dir",
        data.to_str().unwrap(),
        "SELECT span_id FROM spans WHERE false",
    ]);
    assert_eq!(
        empty,
        "+---------+\n| span_id |\n+---------+\n+---------+\n(0 rows)\n"
    );
}
