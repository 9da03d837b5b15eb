use std::time::Duration;

use arrow::array::AsArray;
use chrono::{TimeZone, Utc};

use super::*;
use crate::builder::{SpanRow, SpansBuilder};
use crate::records::span_records;
use crate::schema::{self, AttributeType};

const HOUR_NS: i64 = 3_600_000_000_000;

/// `count` spans of one trace each, starting at `start_ns`, ids numbered from `first`.
fn spans(first: u64, count: u64, start_ns: i64) -> RecordBatch {
    let mut builder = SpansBuilder::with_capacity(count as usize);
    for n in first..first + count {
        let trace_id = format!("{n:032x}");
        let span_id = format!("{n:016x}");
        builder
            .attributes()
            .push("http.route", "/v1/orders", AttributeType::String);
        builder
            .resource_attributes()
            .push("service.name", "order-service", AttributeType::String);
        builder
            .append(&SpanRow {
                trace_id: &trace_id,
                span_id: &span_id,
                service_name: "order-service",
                span_name: "POST /v1/orders",
                span_kind: "SERVER",
                start_ns: start_ns + n as i64,
                end_ns: start_ns + n as i64 + 1_000,
                status_code: "UNSET",
                ..SpanRow::default()
            })
            .unwrap();
    }
    builder.finish().unwrap()
}

fn config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig {
        flush_interval: Duration::from_secs(3600),
        compaction_min_age: Duration::ZERO,
        ..StoreConfig::new(dir)
    }
}

/// Every span id in the store, hot and in segments, sorted.
async fn stored_ids(store: &Store) -> Vec<String> {
    let snapshot = store.snapshot();
    let mut batches = snapshot.hot;
    for meta in &snapshot.segments {
        batches.extend(store.read_segment(meta).await.unwrap());
    }
    let mut ids: Vec<String> = batches
        .iter()
        .flat_map(|b| span_records(b).unwrap())
        .map(|s| s.span_id)
        .collect();
    ids.sort();
    ids
}

fn expected_ids(range: std::ops::Range<u64>) -> Vec<String> {
    range.map(|n| format!("{n:016x}")).collect()
}

fn now_ns() -> i64 {
    Utc::now().timestamp_nanos_opt().unwrap()
}

#[tokio::test]
async fn acknowledged_batches_survive_reopen_without_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    store.append(spans(0, 10, now_ns())).await.unwrap();
    store.append(spans(10, 5, now_ns())).await.unwrap();
    // Dropping without close is what a crash leaves: the WAL, no segments.
    drop(store);

    let store = Store::open(config(dir.path())).await.unwrap();
    assert_eq!(store.snapshot().segments.len(), 0);
    assert_eq!(stored_ids(&store).await, expected_ids(0..15));
}

#[tokio::test]
async fn flush_moves_hot_spans_into_segments_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    let now = now_ns();
    store.append(spans(0, 100, now)).await.unwrap();
    // One span an hour earlier: it belongs in another partition.
    store.append(spans(100, 1, now - HOUR_NS)).await.unwrap();
    let report = store.flush().await.unwrap();
    assert_eq!(report.rows, 101);
    assert_eq!(report.segments.len(), 2);
    assert!(store.snapshot().hot.is_empty());
    assert!(
        report
            .segments
            .iter()
            .all(|s| s.path.starts_with("spans/dt="))
    );
    store.append(spans(101, 9, now)).await.unwrap();
    assert_eq!(stored_ids(&store).await, expected_ids(0..110));
    drop(store);

    // Reopen: segments hold 0..101, the WAL only 101..110.
    let store = Store::open(config(dir.path())).await.unwrap();
    assert_eq!(stored_ids(&store).await, expected_ids(0..110));
    store.close().await.unwrap();
    drop(store);
    let store = Store::open(config(dir.path())).await.unwrap();
    assert!(store.snapshot().hot.is_empty());
    assert_eq!(stored_ids(&store).await, expected_ids(0..110));
}

#[tokio::test]
async fn a_crash_between_segment_write_and_wal_truncation_stores_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    store.append(spans(0, 20, now_ns())).await.unwrap();
    let wal_copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(dir.path().join("wal")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, wal_copy.path().join(path.file_name().unwrap())).unwrap();
    }
    store.flush().await.unwrap();
    drop(store);
    // Put the WAL back as if the process died right after committing the manifest.
    for entry in std::fs::read_dir(wal_copy.path()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(
            &path,
            dir.path().join("wal").join(path.file_name().unwrap()),
        )
        .unwrap();
    }
    let store = Store::open(config(dir.path())).await.unwrap();
    assert_eq!(stored_ids(&store).await, expected_ids(0..20));
}

#[tokio::test]
async fn uncommitted_segment_files_are_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    store.append(spans(0, 5, now_ns())).await.unwrap();
    let report = store.flush().await.unwrap();
    drop(store);
    let committed = dir.path().join(&report.segments[0].path);
    let orphan = committed.with_file_name("orphan.parquet");
    std::fs::copy(&committed, &orphan).unwrap();

    let store = Store::open(config(dir.path())).await.unwrap();
    assert!(!orphan.exists());
    assert_eq!(stored_ids(&store).await, expected_ids(0..5));
}

#[tokio::test]
async fn refuses_appends_over_the_memory_budget_until_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig {
        memory_limit: 1,
        ..config(dir.path())
    })
    .await
    .unwrap();
    store.append(spans(0, 5, now_ns())).await.unwrap();
    let refused = store.append(spans(5, 5, now_ns())).await.unwrap_err();
    assert!(
        matches!(refused, StoreError::MemoryFull { .. }),
        "{refused}"
    );
    assert!(refused.retry_after().is_some());
    store.flush().await.unwrap();
    store.append(spans(5, 5, now_ns())).await.unwrap();
    assert_eq!(stored_ids(&store).await, expected_ids(0..10));
}

#[tokio::test]
async fn memory_held_by_other_parts_counts_against_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig {
        memory_limit: 1 << 20,
        ..config(dir.path())
    })
    .await
    .unwrap();
    let breakers = store.memory_account("breakers");
    breakers.store(2 << 20, Ordering::Relaxed);
    let refused = store.append(spans(0, 5, now_ns())).await.unwrap_err();
    assert!(
        matches!(refused, StoreError::MemoryFull { .. }),
        "{refused}"
    );
    assert!(store.memory_parts().contains(&("breakers", 2 << 20)));
    breakers.store(0, Ordering::Relaxed);
    store.append(spans(0, 5, now_ns())).await.unwrap();
    assert_eq!(store.gauges().memory_limit, 1 << 20);
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn past_the_limit_the_resident_size_refuses_appends_while_a_quarter_is_unflushed() {
    let dir = tempfile::tempdir().unwrap();
    let limit = 4 << 20;
    let store = Store::open(StoreConfig {
        memory_limit: limit,
        ..config(dir.path())
    })
    .await
    .unwrap();
    // A test process holds more than 4 MiB: the resident size is past the limit throughout.
    assert!(store.resident_bytes().unwrap() >= limit);
    let unflushed = |store: &Store| {
        let parts = store.memory_parts();
        parts
            .iter()
            .find(|(part, _)| *part == "unflushed")
            .unwrap()
            .1
    };
    let mut appended = 0;
    let refused = loop {
        match store.append(spans(appended, 100, now_ns())).await {
            Ok(_) => appended += 100,
            Err(error) => break error,
        }
        assert!(appended < 100_000, "never refused");
    };
    assert!(
        matches!(refused, StoreError::ResidentFull { limit_bytes, .. } if limit_bytes == limit),
        "{refused}"
    );
    assert_eq!(refused.retry_after(), Some(Duration::from_secs(1)));
    // Refused at a quarter of the limit unflushed, long before the budget itself is used up.
    let held = unflushed(&store);
    assert!((limit / 4..limit / 2).contains(&held), "{held}");
    assert!(store.gauges().resident.is_some());
    // Flushing frees what waited: appends go on although the resident size has not fallen.
    store.flush().await.unwrap();
    assert_eq!(unflushed(&store), 0);
    store.append(spans(appended, 100, now_ns())).await.unwrap();
    assert_eq!(stored_ids(&store).await, expected_ids(0..appended + 100));
}

/// Waits (bounded) until `condition` holds.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    for _ in 0..5000 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn refuses_appends_when_the_queue_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig {
        queue_depth: 1,
        ..config(dir.path())
    })
    .await
    .unwrap();
    // Another thread holds the WAL, so the writer blocks on the first batch it takes.
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn({
        let store = store.clone();
        move || {
            let _wal = store.shared.wal.as_ref().unwrap().lock().unwrap();
            locked_tx.send(()).unwrap();
            let _ = release_rx.recv();
        }
    });
    locked_rx.recv().unwrap();
    let append = |first| {
        let store = store.clone();
        tokio::spawn(async move { store.append(spans(first, 1, now_ns())).await })
    };
    let first = append(0);
    eventually("the writer to take the first batch", || {
        store.shared.unflushed_bytes.load(Ordering::Relaxed) > 0 && store.gauges().queue_depth == 0
    })
    .await;
    let second = append(1);
    eventually("the second batch to wait in the queue", || {
        store.gauges().queue_depth == 1
    })
    .await;

    let refused = store.append(spans(2, 1, now_ns())).await.unwrap_err();
    assert!(
        matches!(refused, StoreError::QueueFull { depth: 1, .. }),
        "{refused}"
    );
    assert!(matches!(store.admit(), Err(StoreError::QueueFull { .. })));

    release_tx.send(()).unwrap();
    holder.join().unwrap();
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
    assert_eq!(stored_ids(&store).await, expected_ids(0..2));
    store.admit().unwrap();
}

#[tokio::test]
async fn small_segments_of_an_hour_are_compacted_into_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    let now = now_ns();
    for round in 0..4 {
        store.append(spans(round * 10, 10, now)).await.unwrap();
        store.flush().await.unwrap();
    }
    assert_eq!(store.snapshot().segments.len(), 4);
    assert_eq!(store.compact().await.unwrap(), 1);
    let segments = store.snapshot().segments;
    assert_eq!(segments.len(), 1);
    assert_eq!(segments[0].rows, 40);
    assert_eq!(stored_ids(&store).await, expected_ids(0..40));
    // The merged sources stay on disk for queries that listed them just before...
    let files = walk_parquet(&dir.path().join("spans"));
    assert_eq!(files.len(), 5, "{files:?}");
    assert_eq!(
        store
            .delete_retired(std::time::Instant::now())
            .await
            .unwrap(),
        0
    );
    // ...and go once the grace period is over.
    let later = std::time::Instant::now() + store.config().delete_grace;
    assert_eq!(store.delete_retired(later).await.unwrap(), 4);
    let files = walk_parquet(&dir.path().join("spans"));
    assert_eq!(files.len(), 1, "merged sources are deleted: {files:?}");
    drop(store);
    let store = Store::open(config(dir.path())).await.unwrap();
    assert_eq!(stored_ids(&store).await, expected_ids(0..40));
}

#[tokio::test]
async fn retention_deletes_segments_of_hours_that_ended_long_enough_ago() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig {
        retention: Duration::from_secs(24 * 3600),
        ..config(dir.path())
    })
    .await
    .unwrap();
    let now = Utc.with_ymd_and_hms(2026, 11, 21, 12, 30, 0).unwrap();
    let now_ns = now.timestamp_nanos_opt().unwrap();
    store
        .append(spans(0, 3, now_ns - 26 * HOUR_NS))
        .await
        .unwrap();
    store
        .append(spans(3, 3, now_ns - 23 * HOUR_NS))
        .await
        .unwrap();
    store.flush().await.unwrap();
    assert_eq!(store.expire(now).await.unwrap(), 1);
    assert_eq!(stored_ids(&store).await, expected_ids(3..6));
    let later = std::time::Instant::now() + store.config().delete_grace;
    assert_eq!(store.delete_retired(later).await.unwrap(), 1);
    assert_eq!(walk_parquet(&dir.path().join("spans")).len(), 1);
}

#[tokio::test]
async fn segments_are_plain_parquet_with_the_spans_schema() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    store.append(spans(0, 3, now_ns())).await.unwrap();
    let report = store.flush().await.unwrap();
    let file = std::fs::File::open(dir.path().join(&report.segments[0].path)).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    assert_eq!(batches[0].schema(), spans_schema());
    let records = span_records(&batches[0]).unwrap();
    assert_eq!(
        records[0].attributes[0].value.as_deref(),
        Some("/v1/orders")
    );
}

#[tokio::test]
async fn a_second_process_cannot_open_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _store = Store::open(config(dir.path())).await.unwrap();
    let error = Store::open(config(dir.path())).await.unwrap_err();
    assert!(error.to_string().contains("in use"), "{error}");
}

fn walk_parquet(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test]
async fn a_segment_is_read_by_the_columns_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    store.append(spans(0, 3, now_ns())).await.unwrap();
    let report = store.flush().await.unwrap();
    let segment = &report.segments[0];
    // Asked in another order than the schema's, with a name the table does not have.
    let columns = [schema::SPAN_ID, schema::TRACE_ID, "no_such_column"];
    let batches = store.read_segment_columns(segment, &columns).await.unwrap();
    let whole = store.read_segment(segment).await.unwrap();
    let read = &batches[0];
    let names: Vec<String> = read
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    // Parquet reads the projected columns in the file's order.
    assert_eq!(names, [schema::TRACE_ID, schema::SPAN_ID]);
    for name in [schema::TRACE_ID, schema::SPAN_ID] {
        assert_eq!(
            read.column_by_name(name).unwrap(),
            whole[0].column_by_name(name).unwrap()
        );
    }
    // The projection a reader applies to a hot batch gives the same columns.
    let projected = crate::calls::project(&whole[0], &columns).unwrap();
    assert_eq!(projected.num_columns(), 2);
    assert_eq!(
        projected.column_by_name(schema::SPAN_ID).unwrap(),
        read.column_by_name(schema::SPAN_ID).unwrap()
    );
}

/// A deriver that takes `delay` per batch and counts the spans it was given.
struct SlowDeriver {
    delay: Duration,
    spans: Arc<AtomicUsize>,
}

impl CallDeriver for SlowDeriver {
    fn restore(
        &mut self,
        _index: &[u8],
        _parts: &[(u64, Vec<u8>)],
    ) -> std::result::Result<(), String> {
        Ok(())
    }
    fn spans(&mut self, batch: &RecordBatch, _now: Instant) {
        std::thread::sleep(self.delay);
        self.spans.fetch_add(batch.num_rows(), Ordering::Relaxed);
    }
    fn expire(&mut self, _now: Instant) {}
    fn take_calls(&mut self) -> Vec<crate::CallRow> {
        Vec::new()
    }
    fn pending(&mut self) -> crate::PendingState {
        crate::PendingState::default()
    }
}

#[tokio::test]
async fn a_flush_writes_what_a_deriver_far_behind_has_taken_and_the_rest_is_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let taken = Arc::new(AtomicUsize::new(0));
    let slow = SlowDeriver {
        delay: Duration::from_millis(50),
        spans: taken.clone(),
    };
    let store = Store::open_with(config(dir.path()), Some(Box::new(slow)))
        .await
        .unwrap();
    // 60 batches take the deriver 3 s, longer than a flush waits for it.
    for batch in 0..60 {
        store.append(spans(batch * 10, 10, now_ns())).await.unwrap();
    }
    let report = store.flush().await.unwrap();
    assert!(
        report.rows > 0,
        "the flush wrote what the deriver had taken"
    );
    assert!(
        report.rows < 600,
        "the flush did not wait for the whole backlog"
    );
    assert!(taken.load(Ordering::Relaxed) >= report.rows as usize);
    // A crash: the spans flushed are not replayed, the others are, to a new deriver.
    drop(store);
    let replayed = Arc::new(AtomicUsize::new(0));
    let fast = SlowDeriver {
        delay: Duration::ZERO,
        spans: replayed.clone(),
    };
    let store = Store::open_with(config(dir.path()), Some(Box::new(fast)))
        .await
        .unwrap();
    store.calls_caught_up().await;
    assert_eq!(replayed.load(Ordering::Relaxed), 600 - report.rows as usize);
    assert_eq!(stored_ids(&store).await, expected_ids(0..600));
    store.close().await.unwrap();
}

fn on_bucket(data: &std::path::Path, bucket: &std::path::Path, node: &str) -> StoreConfig {
    StoreConfig {
        segments: Some(SegmentLocation::local(bucket).unwrap()),
        node_id: Some(node.into()),
        ..config(data)
    }
}

/// A file in `bucket` named as `node` names its segments, listed in no manifest.
fn leftover(bucket: &std::path::Path, node: &str) -> std::path::PathBuf {
    let dir = bucket.join("spans/dt=2026-01-01/hr=00");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!(
        "20260101T000000.000000-{node}-00000001-000001.parquet"
    ));
    std::fs::write(&path, b"left by a crash").unwrap();
    path
}

/// Span ids `a..b` and `c..d`, sorted.
fn ids_of(first: std::ops::Range<u64>, second: std::ops::Range<u64>) -> Vec<String> {
    let mut ids = expected_ids(first);
    ids.extend(expected_ids(second));
    ids.sort();
    ids
}

#[tokio::test]
async fn nodes_sharing_a_bucket_read_each_others_segments_and_never_touch_their_files() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let a = Store::open(on_bucket(&dir.path().join("a"), &bucket, "a"))
        .await
        .unwrap();
    a.append(spans(0, 10, now_ns())).await.unwrap();
    a.flush().await.unwrap();
    let left_by_a = leftover(&bucket, "a");
    let left_by_b = leftover(&bucket, "node-b");

    // b starts on the same bucket: it removes its own leftover only.
    let b = Store::open(on_bucket(&dir.path().join("b"), &bucket, "node-b"))
        .await
        .unwrap();
    assert!(!left_by_b.exists());
    assert!(left_by_a.exists());
    b.append(spans(100, 5, now_ns())).await.unwrap();
    b.flush().await.unwrap();
    // b read a's manifest when it started; a reads b's when it reads the others again.
    assert_eq!(stored_ids(&b).await, ids_of(0..10, 100..105));
    assert_eq!(stored_ids(&a).await, expected_ids(0..10));
    a.read_other_nodes().await.unwrap();
    assert_eq!(stored_ids(&a).await, ids_of(0..10, 100..105));
    for node in ["a", "node-b"] {
        assert!(
            bucket
                .join(format!("_callwatch/nodes/{node}/manifest.json"))
                .exists()
        );
    }

    // a starts again: its leftover goes, b's segments stay.
    drop(a);
    let a = Store::open(on_bucket(&dir.path().join("a"), &bucket, "a"))
        .await
        .unwrap();
    assert!(!left_by_a.exists());
    assert_eq!(stored_ids(&a).await, ids_of(0..10, 100..105));
    assert_eq!(stored_ids(&b).await, ids_of(0..10, 100..105));
    // Each manifest lists its own node's segments only.
    let manifest = |node: &str| {
        std::fs::read_to_string(bucket.join(format!("_callwatch/nodes/{node}/manifest.json")))
            .unwrap()
    };
    assert!(manifest("a").contains("-a-") && !manifest("a").contains("-node-b-"));
    assert!(manifest("node-b").contains("-node-b-") && !manifest("node-b").contains("-a-"));
}

#[tokio::test]
async fn a_bucket_from_before_node_ids_is_taken_over_by_the_first_node() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let old = Store::open(on_bucket(&dir.path().join("old"), &bucket, "old"))
        .await
        .unwrap();
    old.append(spans(0, 10, now_ns())).await.unwrap();
    old.close().await.unwrap();
    drop(old);
    // What an older version left: one manifest for the bucket.
    std::fs::rename(
        bucket.join("_callwatch/nodes/old/manifest.json"),
        bucket.join("_callwatch/manifest.json"),
    )
    .unwrap();

    let new = Store::open(on_bucket(&dir.path().join("new"), &bucket, "new"))
        .await
        .unwrap();
    assert_eq!(stored_ids(&new).await, expected_ids(0..10));
    assert!(!bucket.join("_callwatch/manifest.json").exists());
    assert!(bucket.join("_callwatch/nodes/new/manifest.json").exists());
}

#[tokio::test]
async fn a_data_directory_keeps_its_node_id() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(config(dir.path())).await.unwrap();
    let made_up = store.node_id().to_string();
    assert!(made_up.starts_with("node-"), "{made_up}");
    drop(store);
    let again = Store::open(config(dir.path())).await.unwrap();
    assert_eq!(again.node_id(), made_up);
    drop(again);
    let same = StoreConfig {
        node_id: Some(made_up.clone()),
        ..config(dir.path())
    };
    drop(Store::open(same).await.unwrap());
    for other in ["other", "no/slash", ""] {
        let config = StoreConfig {
            node_id: Some(other.into()),
            ..config(dir.path())
        };
        let error = Store::open(config).await.unwrap_err().to_string();
        assert!(error.contains("node"), "{other:?}: {error}");
    }
}

/// A deriver that makes one call, `a` to `b`, of each span, at its start.
#[derive(Default)]
struct CallPerSpan {
    calls: Vec<crate::CallRow>,
}

impl CallDeriver for CallPerSpan {
    fn restore(
        &mut self,
        _index: &[u8],
        _parts: &[(u64, Vec<u8>)],
    ) -> std::result::Result<(), String> {
        Ok(())
    }
    fn spans(&mut self, batch: &RecordBatch, _now: Instant) {
        let starts = batch
            .column_by_name(schema::START_TIME)
            .unwrap()
            .as_primitive::<arrow::datatypes::TimestampNanosecondType>()
            .clone();
        for start in starts.values() {
            self.calls.push(crate::CallRow {
                trace_id: 1,
                client_duration_ns: Some(1),
                ..crate::CallRow::between(*start, "a", "b")
            });
        }
    }
    fn expire(&mut self, _now: Instant) {}
    fn take_calls(&mut self) -> Vec<crate::CallRow> {
        std::mem::take(&mut self.calls)
    }
    fn pending(&mut self) -> crate::PendingState {
        crate::PendingState::default()
    }
}

#[tokio::test]
async fn a_reader_sees_every_node_and_follows_each_new_call_once() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let open = |node: &'static str| {
        let config = on_bucket(&dir.path().join(node), &bucket, node);
        Store::open_with(config, Some(Box::new(CallPerSpan::default())))
    };
    let (a, b) = (open("a").await.unwrap(), open("b").await.unwrap());
    let now = now_ns();
    a.append(spans(0, 10, now)).await.unwrap();
    a.calls_caught_up().await;
    a.flush().await.unwrap();
    a.catalog().learn_namespaces([("order", "shop")]);
    a.close().await.unwrap();

    // The reader writes nothing: no data directory, no node of its own.
    let reader_dir = dir.path().join("reader");
    let reader = Store::open_reader(StoreConfig {
        segments: Some(SegmentLocation::local(&bucket).unwrap()),
        ..config(&reader_dir)
    })
    .await
    .unwrap();
    assert!(reader.is_reader() && !reader_dir.exists());
    assert_eq!(stored_ids(&reader).await, expected_ids(0..10));
    assert_eq!(reader.catalog().known().namespaces["order"], "shop");
    assert!(reader.append(spans(50, 1, now)).await.is_err());
    let (snapshot, calls) = reader.subscribe_calls();
    assert_eq!(snapshot.call_segments.len(), 1);

    // b flushes four times, then compacts its segments (merged, so not followed again).
    for round in 0..4 {
        b.append(spans(100 + round * 5, 5, now)).await.unwrap();
        b.calls_caught_up().await;
        b.flush().await.unwrap();
    }
    reader.read_other_nodes().await.unwrap();
    reader.read_other_nodes().await.unwrap();
    assert_eq!(stored_ids(&reader).await, ids_of(0..10, 100..120));
    let followed: usize = calls
        .try_iter()
        .filter_map(CallsUpdate::derived)
        .map(|batch| batch.num_rows())
        .sum();
    assert_eq!(followed, 20, "b's new calls, each once");
    assert_eq!(b.compact().await.unwrap(), 2, "its spans and its calls");
    reader.read_other_nodes().await.unwrap();
    assert_eq!(stored_ids(&reader).await, ids_of(0..10, 100..120));
    assert_eq!(
        calls.try_iter().count(),
        0,
        "a merged segment brings no new calls"
    );
    b.close().await.unwrap();
}

#[tokio::test]
async fn compaction_leaves_segments_readers_may_not_have_seen_yet() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig {
        compaction_min_age: Duration::from_secs(3600),
        ..config(dir.path())
    })
    .await
    .unwrap();
    for round in 0..4 {
        store.append(spans(round * 10, 10, now_ns())).await.unwrap();
        store.flush().await.unwrap();
    }
    assert_eq!(store.compact().await.unwrap(), 0);
    assert_eq!(store.snapshot().segments.len(), 4);
}

#[tokio::test]
async fn a_node_gone_for_good_is_adopted_once_and_cannot_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let gone = Store::open(on_bucket(&dir.path().join("gone"), &bucket, "gone"))
        .await
        .unwrap();
    gone.append(spans(0, 10, now_ns())).await.unwrap();
    gone.close().await.unwrap();
    drop(gone);
    let keeper = on_bucket(&dir.path().join("keeper"), &bucket, "keeper");
    // Its own node, or one that never wrote here, cannot be adopted.
    assert!(crate::adopt_node(&keeper, "keeper").await.is_err());
    assert!(crate::adopt_node(&keeper, "nobody").await.is_err());
    assert_eq!(crate::adopt_node(&keeper, "gone").await.unwrap(), 1);
    assert!(
        crate::adopt_node(&keeper, "gone").await.is_err(),
        "done once"
    );
    let store = Store::open(keeper).await.unwrap();
    assert_eq!(store.gauges().segments, 1);
    assert_eq!(store.gauges().other_segments, 0);
    assert_eq!(stored_ids(&store).await, expected_ids(0..10));
    // Retention of the adopted segment is the keeper's now.
    assert_eq!(
        store
            .expire(Utc::now() + chrono::Duration::days(30))
            .await
            .unwrap(),
        1
    );
    let error = Store::open(on_bucket(&dir.path().join("gone"), &bucket, "gone"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("was adopted"), "{error}");
}

/// A deriver that leaves one orphan per batch of spans and keeps the orphans it is offered.
struct Orphaning {
    left: Vec<u8>,
    offered: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl CallDeriver for Orphaning {
    fn restore(
        &mut self,
        _index: &[u8],
        _parts: &[(u64, Vec<u8>)],
    ) -> std::result::Result<(), String> {
        Ok(())
    }
    fn spans(&mut self, batch: &RecordBatch, _now: Instant) {
        self.left = format!("{} spans", batch.num_rows()).into_bytes();
    }
    fn expire(&mut self, _now: Instant) {}
    fn take_calls(&mut self) -> Vec<crate::CallRow> {
        Vec::new()
    }
    fn pending(&mut self) -> crate::PendingState {
        crate::PendingState::default()
    }
    fn take_orphans(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.left)
    }
    fn remote_answers(&mut self, orphans: &[u8], _now: Instant) -> std::result::Result<(), String> {
        self.offered.lock().unwrap().push(orphans.to_vec());
        Ok(())
    }
}

#[tokio::test]
async fn orphans_reach_the_other_nodes_once_their_calls_are_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let open = |node: &'static str, offered: &Arc<Mutex<Vec<Vec<u8>>>>| {
        let deriver = Orphaning {
            left: Vec::new(),
            offered: offered.clone(),
        };
        Store::open_with(
            on_bucket(&dir.path().join(node), &bucket, node),
            Some(Box::new(deriver)),
        )
    };
    let ignored = Arc::default();
    let a = open("a", &ignored).await.unwrap();
    a.append(spans(0, 3, now_ns())).await.unwrap();
    a.calls_caught_up().await;
    a.flush().await.unwrap();

    // b is offered a's orphans; a crash before b flushes offers them again after it.
    let offered = Arc::new(Mutex::new(Vec::new()));
    let b = open("b", &offered).await.unwrap();
    b.read_other_nodes().await.unwrap();
    b.calls_caught_up().await;
    assert_eq!(*offered.lock().unwrap(), vec![b"3 spans".to_vec()]);
    b.read_other_nodes().await.unwrap();
    b.calls_caught_up().await;
    assert_eq!(offered.lock().unwrap().len(), 1, "each file once");
    drop(b);
    let b = open("b", &offered).await.unwrap();
    b.read_other_nodes().await.unwrap();
    b.calls_caught_up().await;
    assert_eq!(offered.lock().unwrap().len(), 2, "again after a crash");
    // Flushed: the manifest says how far b has taken a's orphans.
    b.flush().await.unwrap();
    drop(b);
    let b = open("b", &offered).await.unwrap();
    b.read_other_nodes().await.unwrap();
    b.calls_caught_up().await;
    assert_eq!(offered.lock().unwrap().len(), 2, "not after a flush");

    // a's next orphans come after; an orphan file no manifest lists is removed on start.
    a.append(spans(10, 4, now_ns())).await.unwrap();
    a.calls_caught_up().await;
    a.flush().await.unwrap();
    b.read_other_nodes().await.unwrap();
    b.calls_caught_up().await;
    assert_eq!(offered.lock().unwrap()[2], b"4 spans".to_vec());
    a.close().await.unwrap();
    drop(a);
    let stray =
        bucket.join("_callwatch/nodes/a/orphans/20260101T000000.000000-a-00000001-000001.bin");
    std::fs::write(&stray, b"left by a crash").unwrap();
    let _a = open("a", &ignored).await.unwrap();
    assert!(!stray.exists());
    b.close().await.unwrap();
}

/// An index and the parts it names, as a deriver is restored from them.
type RestoredFrom = Option<(Vec<u8>, Vec<(u64, Vec<u8>)>)>;

/// A deriver whose waiting halves are one part per checkpoint with spans, of which the two
/// latest still wait; it records what it is restored from.
#[derive(Default)]
struct Parting {
    new: Vec<u8>,
    next: u64,
    waiting: Vec<u64>,
    restored: Arc<Mutex<RestoredFrom>>,
}

impl CallDeriver for Parting {
    fn restore(
        &mut self,
        index: &[u8],
        parts: &[(u64, Vec<u8>)],
    ) -> std::result::Result<(), String> {
        *self.restored.lock().unwrap() = Some((index.to_vec(), parts.to_vec()));
        Ok(())
    }
    fn spans(&mut self, batch: &RecordBatch, _now: Instant) {
        self.new = format!("{} spans", batch.num_rows()).into_bytes();
    }
    fn expire(&mut self, _now: Instant) {}
    fn take_calls(&mut self) -> Vec<crate::CallRow> {
        Vec::new()
    }
    fn pending(&mut self) -> crate::PendingState {
        let new_part = (!self.new.is_empty()).then(|| {
            let id = self.next;
            self.next += 1;
            self.waiting.push(id);
            if self.waiting.len() > 2 {
                self.waiting.remove(0);
            }
            (id, std::mem::take(&mut self.new))
        });
        crate::PendingState {
            new_part,
            index: format!("{:?}", self.waiting).into_bytes(),
            parts: self.waiting.clone(),
        }
    }
}

fn files_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| entries.count())
}

#[tokio::test]
async fn each_part_of_waiting_halves_is_written_once_and_removed_when_none_of_it_waits() {
    let dir = tempfile::tempdir().unwrap();
    let pending_dir = dir.path().join("_callwatch/pending");
    let store = Store::open_with(config(dir.path()), Some(Box::new(Parting::default())))
        .await
        .unwrap();
    for (batch, rows) in [3, 4, 5].into_iter().enumerate() {
        store
            .append(spans(batch as u64 * 10, rows, now_ns()))
            .await
            .unwrap();
        store.calls_caught_up().await;
        store.flush().await.unwrap();
    }
    // The index and the two parts still waiting; the first part is gone.
    assert_eq!(files_under(&pending_dir), 3);
    let manifest = store.shared.manifest.lock().await.clone();
    assert_eq!(
        manifest.pending_parts.keys().copied().collect::<Vec<_>>(),
        vec![1, 2]
    );
    // Killed: the next start restores from the index and exactly the parts it names.
    drop(store);
    let restored = Arc::default();
    let deriver = Parting {
        restored: Arc::clone(&restored),
        ..Parting::default()
    };
    let _store = Store::open_with(config(dir.path()), Some(Box::new(deriver)))
        .await
        .unwrap();
    let (index, parts) = restored.lock().unwrap().clone().expect("restored");
    assert_eq!(index, b"[1, 2]");
    assert_eq!(
        parts,
        vec![(1, b"4 spans".to_vec()), (2, b"5 spans".to_vec())]
    );
}

#[tokio::test]
async fn a_part_whose_flush_wrote_nothing_is_written_by_the_next_flush() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(config(dir.path()), Some(Box::new(Parting::default())))
        .await
        .unwrap();
    store.append(spans(0, 3, now_ns())).await.unwrap();
    store.calls_caught_up().await;
    // The deriver's checkpoint holds the new part; the flush that takes it fails.
    let pending_dir = dir.path().join("_callwatch/pending");
    std::fs::create_dir_all(pending_dir.parent().unwrap()).unwrap();
    std::fs::write(&pending_dir, b"a file where a directory must be").unwrap();
    assert!(store.flush().await.is_err());
    std::fs::remove_file(&pending_dir).unwrap();
    store.append(spans(10, 4, now_ns())).await.unwrap();
    store.calls_caught_up().await;
    store.flush().await.unwrap();
    let manifest = store.shared.manifest.lock().await.clone();
    assert_eq!(
        manifest.pending_parts.keys().copied().collect::<Vec<_>>(),
        vec![0, 1],
        "the part of the failed flush too"
    );
    for path in manifest.pending_parts.values() {
        assert!(dir.path().join(path).exists(), "{path}");
    }
    assert!(
        store.shared.parts_unwritten.lock().unwrap().is_empty(),
        "listed parts are not kept in memory too"
    );
    // A third part, and the first no longer waits: once committed, it is deleted.
    store.append(spans(20, 5, now_ns())).await.unwrap();
    store.calls_caught_up().await;
    store.flush().await.unwrap();
    let first = &manifest.pending_parts[&0];
    assert!(!dir.path().join(first).exists(), "{first}");
    assert!(store.shared.parts_unwritten.lock().unwrap().is_empty());
}
