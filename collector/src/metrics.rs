//! Counters of the receivers, rendered in the Prometheus text format.

use std::fmt::Write;

use callwatch_storage::{Counter, Histogram, LATENCY_BUCKETS, write_metric};

use crate::inflight::InflightBudget;

#[derive(Debug)]
pub struct IngestMetrics {
    pub grpc_requests: Counter,
    pub http_requests: Counter,
    pub bytes_received: Counter,
    pub spans_received: Counter,
    pub spans_accepted: Counter,
    pub spans_rejected: Counter,
    pub requests_invalid: Counter,
    pub requests_refused_queue: Counter,
    pub requests_refused_memory: Counter,
    pub requests_failed: Counter,
    pub values_truncated: Counter,
    pub export_seconds: Histogram,
}

impl Default for IngestMetrics {
    fn default() -> Self {
        Self {
            grpc_requests: Counter::default(),
            http_requests: Counter::default(),
            bytes_received: Counter::default(),
            spans_received: Counter::default(),
            spans_accepted: Counter::default(),
            spans_rejected: Counter::default(),
            requests_invalid: Counter::default(),
            requests_refused_queue: Counter::default(),
            requests_refused_memory: Counter::default(),
            requests_failed: Counter::default(),
            values_truncated: Counter::default(),
            export_seconds: Histogram::new(LATENCY_BUCKETS),
        }
    }
}

impl IngestMetrics {
    pub fn render(&self, inflight: &InflightBudget, out: &mut String) {
        let name = "callwatch_ingest_requests_total";
        let _ = writeln!(
            out,
            "# HELP {name} OTLP export requests received, by transport."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(
            out,
            "{name}{{transport=\"grpc\"}} {}",
            self.grpc_requests.get()
        );
        let _ = writeln!(
            out,
            "{name}{{transport=\"http\"}} {}",
            self.http_requests.get()
        );
        let name = "callwatch_ingest_requests_refused_total";
        let _ = writeln!(
            out,
            "# HELP {name} Export requests refused for load, by reason."
        );
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(
            out,
            "{name}{{reason=\"queue_full\"}} {}",
            self.requests_refused_queue.get()
        );
        let _ = writeln!(
            out,
            "{name}{{reason=\"memory_full\"}} {}",
            self.requests_refused_memory.get()
        );
        let _ = writeln!(
            out,
            "{name}{{reason=\"inflight_full\"}} {}",
            inflight.refused()
        );
        write_metric(
            out,
            "callwatch_ingest_inflight_bytes",
            "gauge",
            "Bytes of export request bodies being read, decompressed and decoded now.",
            inflight.used() as f64,
        );
        write_metric(
            out,
            "callwatch_ingest_inflight_limit_bytes",
            "gauge",
            "The in-flight byte budget (--ingest-inflight-bytes).",
            inflight.limit() as f64,
        );
        let counters = [
            (
                "callwatch_ingest_bytes_total",
                "Bytes of export request bodies received (after decompression for gRPC, before for HTTP).",
                &self.bytes_received,
            ),
            (
                "callwatch_spans_received_total",
                "Spans in export requests that decoded.",
                &self.spans_received,
            ),
            (
                "callwatch_spans_accepted_total",
                "Spans acknowledged: in the write-ahead log.",
                &self.spans_accepted,
            ),
            (
                "callwatch_spans_rejected_total",
                "Invalid spans reported back as partial success.",
                &self.spans_rejected,
            ),
            (
                "callwatch_ingest_requests_invalid_total",
                "Export requests that did not decode or had an unsupported format.",
                &self.requests_invalid,
            ),
            (
                "callwatch_ingest_requests_failed_total",
                "Export requests that failed inside callwatch.",
                &self.requests_failed,
            ),
            (
                "callwatch_attribute_values_truncated_total",
                "String values cut to the length limit.",
                &self.values_truncated,
            ),
        ];
        for (name, help, counter) in counters {
            write_metric(out, name, "counter", help, counter.get() as f64);
        }
        self.export_seconds.render(
            out,
            "callwatch_ingest_request_seconds",
            "Time from a decoded export request to its acknowledgement.",
        );
    }
}
