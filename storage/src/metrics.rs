//! Counters of the storage side, rendered in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_duration(&self, elapsed: Duration) {
        self.add(elapsed.as_nanos().min(u128::from(u64::MAX)) as u64);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A latency histogram with fixed buckets, in seconds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    sum_nanos: Counter,
    count: Counter,
}

/// Bucket bounds for request latencies: 1 ms to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: Counter::default(),
            count: Counter::default(),
        }
    }

    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(index) = self.bounds.iter().position(|bound| seconds <= *bound) {
            self.buckets[index].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_nanos.add_duration(elapsed);
        self.count.add(1);
    }

    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.get();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_nanos.get() as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Writes one Prometheus sample with its HELP and TYPE lines.
pub fn write_metric(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let _ = writeln!(out, "{name} {value}");
}

#[derive(Debug, Default)]
pub struct StoreMetrics {
    pub wal_records: Counter,
    pub wal_bytes: Counter,
    pub wal_syncs: Counter,
    pub wal_write_nanos: Counter,
    pub wal_sync_nanos: Counter,
    pub flushes: Counter,
    pub flush_errors: Counter,
    pub flushed_rows: Counter,
    pub flush_nanos: Counter,
    pub segments_written: Counter,
    pub segment_bytes_written: Counter,
    pub compactions: Counter,
    pub segments_expired: Counter,
    pub refreshes: Counter,
    pub refresh_errors: Counter,
}

/// Gauges read at render time.
#[derive(Debug, Clone, Default)]
pub struct StoreGauges {
    pub hot_rows: usize,
    pub hot_bytes: usize,
    pub queue_depth: usize,
    pub queue_capacity: usize,
    pub segments: usize,
    pub segment_rows: u64,
    pub segment_bytes: u64,
    /// Segments of the other nodes sharing the bucket, as last read.
    pub other_segments: usize,
    /// What the memory budget counts, by part, and the budget.
    pub memory: Vec<(&'static str, usize)>,
    pub memory_limit: usize,
    /// The process's resident bytes; `None` where the kernel does not say.
    pub resident: Option<usize>,
}

impl StoreMetrics {
    pub fn render(&self, gauges: &StoreGauges, out: &mut String) {
        self.render_refresh(gauges, out);
        let (memory, memory_limit, resident) =
            (&gauges.memory, gauges.memory_limit, gauges.resident);
        let seconds = |c: &Counter| c.get() as f64 / 1e9;
        let counters = [
            (
                "callwatch_wal_records_total",
                "Batches appended to the write-ahead log.",
                self.wal_records.get() as f64,
            ),
            (
                "callwatch_wal_bytes_total",
                "Bytes appended to the write-ahead log.",
                self.wal_bytes.get() as f64,
            ),
            (
                "callwatch_wal_syncs_total",
                "fsync calls on the write-ahead log (one per group commit).",
                self.wal_syncs.get() as f64,
            ),
            (
                "callwatch_wal_write_seconds_total",
                "Time spent writing the write-ahead log.",
                seconds(&self.wal_write_nanos),
            ),
            (
                "callwatch_wal_sync_seconds_total",
                "Time spent in fsync of the write-ahead log.",
                seconds(&self.wal_sync_nanos),
            ),
            (
                "callwatch_flushes_total",
                "Flushes of hot spans into Parquet segments.",
                self.flushes.get() as f64,
            ),
            (
                "callwatch_flush_errors_total",
                "Flushes that failed and will be retried.",
                self.flush_errors.get() as f64,
            ),
            (
                "callwatch_flushed_spans_total",
                "Spans written into Parquet segments by flushes.",
                self.flushed_rows.get() as f64,
            ),
            (
                "callwatch_flush_seconds_total",
                "Time spent flushing, sorting and encoding included.",
                seconds(&self.flush_nanos),
            ),
            (
                "callwatch_segments_written_total",
                "Parquet segments written, by flushes and compactions.",
                self.segments_written.get() as f64,
            ),
            (
                "callwatch_segment_bytes_written_total",
                "Bytes of Parquet segments written.",
                self.segment_bytes_written.get() as f64,
            ),
            (
                "callwatch_compactions_total",
                "Merges of small segments into one.",
                self.compactions.get() as f64,
            ),
            (
                "callwatch_segments_expired_total",
                "Segments deleted by retention.",
                self.segments_expired.get() as f64,
            ),
        ];
        for (name, help, value) in counters {
            write_metric(out, name, "counter", help, value);
        }
        let gauges = [
            (
                "callwatch_hot_spans",
                "Spans in memory not yet in segments.",
                gauges.hot_rows as f64,
            ),
            (
                "callwatch_hot_bytes",
                "Memory held by spans not yet in segments.",
                gauges.hot_bytes as f64,
            ),
            (
                "callwatch_ingest_queue_depth",
                "Requests waiting for the write-ahead log.",
                gauges.queue_depth as f64,
            ),
            (
                "callwatch_ingest_queue_capacity",
                "Requests the ingest queue holds before refusing more.",
                gauges.queue_capacity as f64,
            ),
            (
                "callwatch_segments",
                "Committed Parquet segments.",
                gauges.segments as f64,
            ),
            (
                "callwatch_segment_spans",
                "Spans in committed Parquet segments.",
                gauges.segment_rows as f64,
            ),
            (
                "callwatch_segment_bytes",
                "Bytes of committed Parquet segments.",
                gauges.segment_bytes as f64,
            ),
        ];
        for (name, help, value) in gauges {
            write_metric(out, name, "gauge", help, value);
        }
        let name = "callwatch_memory_bytes";
        let _ = writeln!(
            out,
            "# HELP {name} Memory counted by the memory budget (--memory-limit), by part."
        );
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (part, bytes) in memory {
            let _ = writeln!(out, "{name}{{part=\"{part}\"}} {bytes}");
        }
        write_metric(
            out,
            "callwatch_memory_limit_bytes",
            "gauge",
            "The memory budget: past it, export requests get 503 / UNAVAILABLE.",
            memory_limit as f64,
        );
        if let Some(resident) = resident {
            write_metric(
                out,
                "callwatch_memory_resident_bytes",
                "gauge",
                "The process's resident memory: at the memory limit, export requests get 503 / UNAVAILABLE while spans wait to be flushed.",
                resident as f64,
            );
        }
    }

    /// The series of reading the other nodes' manifests: all a reader has.
    pub fn render_refresh(&self, gauges: &StoreGauges, out: &mut String) {
        write_metric(
            out,
            "callwatch_refreshes_total",
            "counter",
            "Readings of the other nodes' manifests and catalogs (every --refresh-interval).",
            self.refreshes.get() as f64,
        );
        write_metric(
            out,
            "callwatch_refresh_errors_total",
            "counter",
            "Readings of the other nodes' manifests that failed and will be tried again.",
            self.refresh_errors.get() as f64,
        );
        write_metric(
            out,
            "callwatch_other_nodes_segments",
            "gauge",
            "Segments of the other nodes sharing the bucket, as last read.",
            gauges.other_segments as f64,
        );
    }
}

/// A label value in the Prometheus text format.
pub fn escape_label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}
