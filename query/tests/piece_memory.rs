//! The memory the pieces count themselves to hold, against what the allocator says they
//! hold: their budgets bound the server's memory only if that count is right. Alone in its
//! test binary, so that no other test allocates meanwhile.

use std::alloc::System;
use std::sync::Arc;

use arrow::array::RecordBatch;
use callwatch_query::pieces::{DetailCaches, RollupCache};
use callwatch_storage::{CallDeriver, CallRow, CallType, NodeKind, Store, StoreConfig};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// What glibc's malloc adds to each allocation, about: a header, and rounding up to 16.
const PER_ALLOCATION: isize = 16;

const S: i64 = 1_000_000_000;
/// An hour long past.
const HOUR: i64 = 1_700_002_800 * S;
const EDGES: i64 = 60;

/// A call of one of 60 edges for each span, its fields varied as a platform's are: a few
/// operations, instances, versions and failing statuses per edge.
#[derive(Default)]
struct VariedCalls {
    calls: Vec<CallRow>,
}

fn varied_call(start_ns: i64) -> CallRow {
    let n = start_ns / 1_000_000;
    let edge = n % EDGES;
    let pick = |options: &[&str], salt: i64| -> Arc<str> {
        options[((n / EDGES + salt) % options.len() as i64) as usize].into()
    };
    let failed = n % 23 == 0;
    CallRow {
        start_ns,
        trace_id: n as u128,
        client: format!("svc-{}", edge / 3).into(),
        server: format!("svc-{edge}").into(),
        call_type: CallType::Sync,
        server_kind: NodeKind::Service,
        operation: Some(pick(&["GET /a", "POST /b", "GET /c/{id}"], 0)),
        destination: None,
        client_instance: Some(format!("c-{}-{}", edge / 3, n % 3).into()),
        server_instance: Some(format!("s-{edge}-{}", n % 4).into()),
        api_version: Some(pick(&["v1", "v2"], 1)),
        client_duration_ns: Some((n * 7919 % 400_000 + 500) * 1_000),
        server_duration_ns: Some((n * 7919 % 400_000 + 100) * 1_000),
        queue_ns: None,
        failed,
        status: failed.then(|| pick(&["500", "503", "429"], 2)),
        retry: n % 31 == 0,
        timeout: false,
        breaker_state: None,
        breaker_name: None,
        client_span_id: None,
        server_span_id: None,
    }
}

impl CallDeriver for VariedCalls {
    fn restore(&mut self, _: &[u8], _: &[(u64, Vec<u8>)]) -> Result<(), String> {
        Ok(())
    }

    fn spans(&mut self, batch: &RecordBatch, _: std::time::Instant) {
        for span in callwatch_storage::span_records(batch).unwrap() {
            self.calls.push(varied_call(span.start_ns));
        }
    }

    fn expire(&mut self, _: std::time::Instant) {}

    fn take_calls(&mut self) -> Vec<CallRow> {
        std::mem::take(&mut self.calls)
    }

    fn pending(&mut self) -> callwatch_storage::PendingState {
        callwatch_storage::PendingState::default()
    }
}

/// `count` spans `every_ns` apart from `start_ns`.
fn spans(start_ns: i64, count: i64, every_ns: i64) -> RecordBatch {
    let mut builder = callwatch_storage::SpansBuilder::with_capacity(count as usize);
    for n in 0..count {
        let start_ns = start_ns + n * every_ns;
        let id = format!("{start_ns:016x}");
        builder
            .append(&callwatch_storage::SpanRow {
                trace_id: &format!("{id:0>32}"),
                span_id: &id,
                service_name: "a",
                span_name: "GET /",
                span_kind: "CLIENT",
                start_ns,
                end_ns: start_ns + 1_000,
                status_code: "UNSET",
                ..Default::default()
            })
            .unwrap();
    }
    builder.finish().unwrap()
}

/// Live heap allocated in `region` since it began, with malloc's overhead.
fn held(region: &Region<System>) -> isize {
    let change = region.change();
    // A reallocation's growth counts in `bytes_allocated` (and its shrinking in
    // `bytes_deallocated`) already.
    let bytes = change.bytes_allocated as isize - change.bytes_deallocated as isize;
    let allocations = change.allocations as isize - change.deallocations as isize;
    bytes + allocations * PER_ALLOCATION
}

#[tokio::test]
async fn the_memory_pieces_count_is_what_they_hold() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        flush_interval: std::time::Duration::from_secs(3600),
        ..StoreConfig::new(dir.path())
    };
    let store = Store::open_with(config, Some(Box::new(VariedCalls::default())))
        .await
        .unwrap();
    // Two hours of calls, 20 a second, 49 ms apart: their milliseconds go round every edge.
    store
        .append(spans(HOUR + 1_000_000, 147_000, 49_000_000))
        .await
        .unwrap();
    store.calls_caught_up().await;

    let region = Region::new(GLOBAL);
    let graph = RollupCache::default();
    graph.warm(&store).await.unwrap();
    let graph_share = graph.bytes() as f64 / held(&region) as f64;

    let region = Region::new(GLOBAL);
    let details = DetailCaches::default();
    details.warm(&store).await.unwrap();
    let details_share = details.bytes() as f64 / held(&region) as f64;
    // Checked once both are measured: a failed assertion allocates.
    assert!(
        (0.8..1.25).contains(&graph_share),
        "the graph's pieces count {graph_share} of what they hold"
    );
    assert!(
        (0.8..1.25).contains(&details_share),
        "breakdown pieces count {details_share} of what they hold"
    );
}
