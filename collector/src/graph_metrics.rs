//! Prometheus series of the call pairer: the service-graph and span-metrics series named as
//! Tempo's metrics-generator names them (so Grafana's service graph reads them), and the
//! pairer's own counters.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use callwatch_storage::{
    CallColumns, CallRow, CallType, CallsUpdate, Counter, Interner, NodeKind, Store, escape_label,
    schema,
};

use crate::halves::SpanColumns;

/// Bucket bounds in seconds: Tempo's span-metrics defaults, fine enough for millisecond calls.
pub const BUCKETS: &[f64] = &[
    0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192,
];

/// Labelled series beyond this many per family are not created (counted instead), so span
/// names with ids in them cannot grow memory without bound.
pub const MAX_SERIES: usize = 10_000;

#[derive(Debug, Clone, Default)]
struct Buckets {
    counts: Vec<u64>,
    sum_seconds: f64,
    count: u64,
}

impl Buckets {
    fn observe(&mut self, seconds: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        if let Some(index) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.counts[index] += 1;
        }
        self.sum_seconds += seconds;
        self.count += 1;
    }

    fn merge(&mut self, other: &Buckets) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.sum_seconds += other.sum_seconds;
        self.count += other.count;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (index, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.counts.get(index).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum_seconds);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Debug, Default)]
struct EdgeSeries {
    total: u64,
    failed: u64,
    server: Buckets,
    client: Buckets,
}

#[derive(Debug, Default)]
struct SpanSeries {
    calls: u64,
    latency: Buckets,
}

/// (client, server, connection_type)
type EdgeLabels = (String, String, &'static str);
/// (service, span_name, span_kind, status_code)
type SpanLabels = (String, String, &'static str, &'static str);

/// Span counts of one batch, keyed by borrowed names, merged into the series at once.
#[derive(Debug, Default)]
struct SpanTally<'a> {
    series: foldhash::HashMap<(&'a str, &'a str, &'static str, &'static str), Buckets>,
}

impl<'a> SpanTally<'a> {
    fn observe(
        &mut self,
        service: &'a str,
        span_name: &'a str,
        span_kind: &str,
        status_code: &str,
        seconds: f64,
    ) {
        let kind = match span_kind {
            "SERVER" => "SPAN_KIND_SERVER",
            "CLIENT" => "SPAN_KIND_CLIENT",
            "PRODUCER" => "SPAN_KIND_PRODUCER",
            "CONSUMER" => "SPAN_KIND_CONSUMER",
            "INTERNAL" => "SPAN_KIND_INTERNAL",
            _ => "SPAN_KIND_UNSPECIFIED",
        };
        let status = match status_code {
            "OK" => "STATUS_CODE_OK",
            "ERROR" => "STATUS_CODE_ERROR",
            _ => "STATUS_CODE_UNSET",
        };
        self.series
            .entry((service, span_name, kind, status))
            .or_default()
            .observe(seconds);
    }
}

#[derive(Debug, Default)]
pub struct GraphMetrics {
    edges: Mutex<BTreeMap<EdgeLabels, EdgeSeries>>,
    spans: Mutex<BTreeMap<SpanLabels, SpanSeries>>,
    pub spans_seen: Counter,
    pub calls_paired: Counter,
    pub calls_virtual: Counter,
    pub calls_database: Counter,
    pub unpaired_client: Counter,
    pub unpaired_server: Counter,
    pub dropped: Counter,
    pub unconsumed: Counter,
    pub series_dropped: Counter,
    /// Calls read from segments, on a node that follows stored calls.
    pub calls_stored: Counter,
    /// Consumer halves left alone here, written to the bucket for the other collectors.
    pub orphans_written: Counter,
    /// Calls of a producer here and another collector's orphan consumer half.
    pub calls_paired_remote: Counter,
    pending: AtomicU64,
}

/// Service-graph observations of the calls derived from one batch, merged into the series
/// at once. Keyed by the addresses of the calls' shared names ([`Interner::address`]), so
/// that a call costs no hashing of text and no reference counting; two copies of one name
/// are two entries here and one series after the merge.
#[derive(Debug, Default)]
pub struct EdgeTally {
    series: foldhash::HashMap<(usize, usize, usize), TalliedEdge>,
}

/// (client, server, connection type, what was observed)
type TalliedEdge = (Arc<str>, Arc<str>, &'static str, EdgeSeries);

impl EdgeTally {
    pub fn observe(&mut self, call: &CallRow, connection_type: &'static str) {
        let (_, _, _, series) = self
            .series
            .entry((
                Interner::address(&call.client),
                Interner::address(&call.server),
                // By address too: the connection types are a few literals.
                connection_type.as_ptr() as usize,
            ))
            .or_insert_with(|| {
                (
                    call.client.clone(),
                    call.server.clone(),
                    connection_type,
                    EdgeSeries::default(),
                )
            });
        series.total += 1;
        series.failed += u64::from(call.failed);
        if let Some(ns) = call.client_duration_ns {
            series.client.observe(ns as f64 / 1e9);
        }
        if let Some(ns) = call.server_duration_ns {
            series.server.observe(ns as f64 / 1e9);
        }
    }
}

/// Tempo's `connection_type` label of a call.
pub fn connection_type(call: &CallRow) -> &'static str {
    let from_user = &*call.client == schema::USER_NODE;
    match (call.server_kind, call.call_type) {
        (NodeKind::Database, _) => "database",
        (NodeKind::User | NodeKind::External | NodeKind::Messaging, _) => "virtual_node",
        _ if from_user => "virtual_node",
        (_, CallType::Async) => "messaging_system",
        (_, CallType::Sync) => "",
    }
}

/// The columns of `calls` the service-graph series are made of.
const EDGE_COLUMNS: [&str; 7] = [
    schema::CLIENT,
    schema::SERVER,
    schema::CALL_TYPE,
    schema::SERVER_KIND,
    schema::CLIENT_DURATION_NS,
    schema::SERVER_DURATION_NS,
    schema::FAILED,
];

impl GraphMetrics {
    /// Makes the service-graph series of the calls stored in `store`'s segments, then of
    /// every call it gets after: what a node that derives no calls itself (a query node)
    /// shows, equal to the series of one collector that derived them all. Runs until `stop`
    /// ends, taking new calls every second.
    pub async fn follow_stored_calls(
        &self,
        store: &Store,
        stop: impl std::future::Future<Output = ()>,
    ) -> callwatch_storage::Result<()> {
        let (snapshot, receiver) = store.subscribe_calls();
        for segment in &snapshot.call_segments {
            let batches = store.read_segment_columns(segment, &EDGE_COLUMNS).await?;
            self.merge_calls(&batches)?;
        }
        self.merge_calls(&snapshot.hot_calls)?;
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return Ok(()),
                _ = tick.tick() => {}
            }
            let batches: Vec<RecordBatch> = receiver
                .try_iter()
                .filter_map(CallsUpdate::derived)
                .collect();
            self.merge_calls(&batches)?;
        }
    }

    /// Adds the calls of stored `calls` batches.
    fn merge_calls(&self, batches: &[RecordBatch]) -> callwatch_storage::Result<()> {
        let mut names = Interner::default();
        for batch in batches {
            let calls = CallColumns::new(batch)?;
            let mut tally = EdgeTally::default();
            for row in 0..calls.len() {
                let call = calls.row(row, &mut names);
                tally.observe(&call, connection_type(&call));
            }
            self.calls_stored.add(calls.len() as u64);
            self.merge_edges(tally);
        }
        Ok(())
    }

    /// Adds the calls of one batch.
    pub fn merge_edges(&self, tally: EdgeTally) {
        if tally.series.is_empty() {
            return;
        }
        let mut edges = self.edges.lock().expect("not poisoned");
        for (client, server, connection_type, observed) in tally.series.into_values() {
            let key = (client.to_string(), server.to_string(), connection_type);
            if !edges.contains_key(&key) && edges.len() >= MAX_SERIES {
                self.series_dropped.add(observed.total);
                continue;
            }
            let series = edges.entry(key).or_default();
            series.total += observed.total;
            series.failed += observed.failed;
            series.client.merge(&observed.client);
            series.server.merge(&observed.server);
        }
    }

    /// Counts the spans of a stored `spans` batch in the span-metrics series.
    pub fn observe_spans(&self, batch: &RecordBatch) {
        let Some(columns) = SpanColumns::new(batch) else {
            tracing::error!("span metrics were given a batch without the spans columns");
            return;
        };
        let mut tally = SpanTally::default();
        for row in 0..columns.len() {
            tally.observe(
                columns.service(row),
                columns.name(row),
                columns.kind(row),
                columns.status(row),
                columns.duration_ns(row) as f64 / 1e9,
            );
        }
        self.merge_spans(tally);
    }

    /// Adds the span counts of one batch.
    fn merge_spans(&self, tally: SpanTally) {
        let mut spans = self.spans.lock().expect("not poisoned");
        for ((service, span_name, kind, status), buckets) in tally.series {
            let key = (service.to_string(), span_name.to_string(), kind, status);
            if !spans.contains_key(&key) && spans.len() >= MAX_SERIES {
                self.series_dropped.add(buckets.count);
                continue;
            }
            let series = spans.entry(key).or_default();
            series.calls += buckets.count;
            series.latency.merge(&buckets);
        }
    }

    pub fn set_pending(&self, halves: usize) {
        self.pending.store(halves as u64, Ordering::Relaxed);
    }

    pub fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    pub fn render(&self, out: &mut String) {
        self.render_edges(out);
        self.render_spans(out);
        let counters: [(&str, &str, u64); 12] = [
            (
                "callwatch_pairer_orphans_written_total",
                "Consumer halves no producer answered here, written to the bucket for the other collectors.",
                self.orphans_written.get(),
            ),
            (
                "callwatch_calls_paired_remote_total",
                "Calls of a producer here and a consumer half another collector wrote to the bucket.",
                self.calls_paired_remote.get(),
            ),
            (
                "callwatch_calls_stored_total",
                "Calls read from the segments of the nodes that derived them (on a query node).",
                self.calls_stored.get(),
            ),
            (
                "callwatch_pairer_spans_total",
                "Spans the call pairer read.",
                self.spans_seen.get(),
            ),
            (
                "callwatch_calls_paired_total",
                "Calls derived from a client and a server half (or producer and consumer).",
                self.calls_paired.get(),
            ),
            (
                "callwatch_calls_virtual_total",
                "Calls from `user` or to a node that sends no spans, derived after the wait.",
                self.calls_virtual.get(),
            ),
            (
                "callwatch_calls_database_total",
                "Calls to databases, derived from the client span alone.",
                self.calls_database.get(),
            ),
            (
                "traces_service_graph_unpaired_spans_total",
                "Client halves that found no partner and name no server (client side).",
                self.unpaired_client.get(),
            ),
            (
                "callwatch_pairer_unpaired_server_total",
                "Server and consumer halves whose client or producer never arrived.",
                self.unpaired_server.get(),
            ),
            (
                "traces_service_graph_dropped_spans_total",
                "Halves settled before their wait was over, to make room at the pairer's bound (--pairing-max-pending).",
                self.dropped.get(),
            ),
            (
                "callwatch_pairer_unconsumed_messages_total",
                "Messages no consumer read within the wait, to destinations that have consumers.",
                self.unconsumed.get(),
            ),
            (
                "callwatch_metrics_series_dropped_total",
                "Observations not recorded because a metric family reached its series bound.",
                self.series_dropped.get(),
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {value}");
        }
        let name = "callwatch_pairer_pending_halves";
        let _ = writeln!(out, "# HELP {name} Halves waiting for their partner.");
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(out, "{name} {}", self.pending());
    }

    fn render_edges(&self, out: &mut String) {
        let edges = self.edges.lock().expect("not poisoned");
        let labels = |(client, server, connection_type): &EdgeLabels| {
            format!(
                "client=\"{}\",server=\"{}\",connection_type=\"{connection_type}\"",
                escape_label(client),
                escape_label(server)
            )
        };
        let family = |out: &mut String, name: &str, help: &str, kind: &str| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
        };
        let name = "traces_service_graph_request_total";
        family(out, name, "Calls between two nodes.", "counter");
        for (key, series) in edges.iter() {
            let _ = writeln!(out, "{name}{{{}}} {}", labels(key), series.total);
        }
        let name = "traces_service_graph_request_failed_total";
        family(out, name, "Failed calls between two nodes.", "counter");
        for (key, series) in edges.iter() {
            let _ = writeln!(out, "{name}{{{}}} {}", labels(key), series.failed);
        }
        for (name, help, server_side) in [
            (
                "traces_service_graph_request_server_seconds",
                "Call latency seen by the server.",
                true,
            ),
            (
                "traces_service_graph_request_client_seconds",
                "Call latency seen by the client.",
                false,
            ),
        ] {
            family(out, name, help, "histogram");
            for (key, series) in edges.iter() {
                let buckets = if server_side {
                    &series.server
                } else {
                    &series.client
                };
                if buckets.count > 0 {
                    buckets.render(out, name, &labels(key));
                }
            }
        }
    }

    fn render_spans(&self, out: &mut String) {
        let spans = self.spans.lock().expect("not poisoned");
        let labels = |(service, span_name, kind, status): &SpanLabels| {
            format!(
                "service=\"{}\",span_name=\"{}\",span_kind=\"{kind}\",status_code=\"{status}\"",
                escape_label(service),
                escape_label(span_name)
            )
        };
        let name = "traces_spanmetrics_calls_total";
        let _ = writeln!(
            out,
            "# HELP {name} Spans, by service, name, kind and status."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        for (key, series) in spans.iter() {
            let _ = writeln!(out, "{name}{{{}}} {}", labels(key), series.calls);
        }
        let name = "traces_spanmetrics_latency";
        let _ = writeln!(out, "# HELP {name} Span durations in seconds.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (key, series) in spans.iter() {
            series.latency.render(out, name, &labels(key));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(client: &str, seconds: f64) -> CallRow {
        CallRow {
            trace_id: 1,
            client_duration_ns: Some((seconds * 1e9) as i64),
            failed: seconds > 1.0,
            ..CallRow::between(0, client, "c")
        }
    }

    #[test]
    fn series_render_with_escaped_labels_and_cumulative_buckets() {
        let metrics = GraphMetrics::default();
        // Two batches, merged one after the other.
        for batch in [[0.001, 0.003], [0.003, 10.0]] {
            let mut tally = EdgeTally::default();
            for seconds in batch {
                tally.observe(&call("a\"b", seconds), "");
            }
            metrics.merge_edges(tally);
        }
        let mut out = String::new();
        metrics.render(&mut out);
        let labels = "client=\"a\\\"b\",server=\"c\",connection_type=\"\"";
        assert!(out.contains(&format!(
            "traces_service_graph_request_total{{{labels}}} 4\n"
        )));
        assert!(out.contains(&format!(
            "traces_service_graph_request_failed_total{{{labels}}} 1\n"
        )));
        assert!(out.contains(&format!(
            "traces_service_graph_request_client_seconds_bucket{{{labels},le=\"0.004\"}} 3\n"
        )));
        assert!(out.contains(&format!(
            "traces_service_graph_request_client_seconds_bucket{{{labels},le=\"8.192\"}} 3\n"
        )));
        assert!(out.contains(&format!(
            "traces_service_graph_request_client_seconds_count{{{labels}}} 4\n"
        )));
        assert!(!out.contains("traces_service_graph_request_server_seconds_count"));
    }
}
