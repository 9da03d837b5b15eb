//! Segments are plain Parquet: pyarrow and DuckDB read the data directory as one table.
//! Needs python3 with `pyarrow` and `duckdb` (installed by `.ci/run`); under CI=true a missing
//! one fails the test instead of skipping it.

use std::path::Path;
use std::process::Command;

use crate::common::requests::numbered_span;
use crate::common::{Server, python_json};

fn python_has_readers() -> bool {
    Command::new("python3")
        .args(["-c", "import pyarrow, duckdb"])
        .status()
        .is_ok_and(|status| status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyarrow_and_duckdb_read_the_segments() {
    if !python_has_readers() {
        assert!(
            std::env::var("CI").is_err(),
            "CI=true but python3 with pyarrow and duckdb is missing: .ci/run installs them"
        );
        eprintln!("skipped: python3 with pyarrow and duckdb is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let day_before = chrono::Utc::now().format("%Y-%m-%d").to_string();
    for request_no in 0..3 {
        let spans = (0..100).map(|i| numbered_span(1, request_no, i)).collect();
        server.post_spans("order-service", spans).await;
    }
    let day_after = chrono::Utc::now().format("%Y-%m-%d").to_string();
    server.stop();

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/readers/read_segments.py"
    );
    let seen = python_json(Path::new(script), &[data.to_str().unwrap()]);
    assert_eq!(seen["pyarrow_rows"], 300);
    assert_eq!(seen["duckdb_rows"], 300);
    assert_eq!(seen["duckdb_distinct_span_ids"], 300);
    assert_eq!(seen["duckdb_service"], "order-service");
    assert_eq!(seen["duckdb_route"], "/v1/users/{id}");
    let dt = seen["duckdb_dt"].as_str().unwrap();
    assert!(
        dt == day_before || dt == day_after,
        "partition column dt = {dt}"
    );
    let columns = seen["pyarrow_columns"].as_array().unwrap();
    for column in [
        "trace_id",
        "span_id",
        "attributes",
        "events",
        "links",
        "dt",
        "hr",
    ] {
        assert!(
            columns.iter().any(|c| c == column),
            "{column} missing from {columns:?}"
        );
    }
}
