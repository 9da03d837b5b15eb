//! The one ingest core behind both transports.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use callwatch_storage::{Store, StoreError};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use bumpalo::Bump;
use bytes::Bytes;
use prost::Message;

use crate::convert::{Limits, convert_views, reported_consumer_groups, reported_namespaces};
use crate::error::IngestError;
use crate::graph_metrics::GraphMetrics;
use crate::inflight::{InflightBudget, Room};
use crate::json::decode_views_within;
use crate::metrics::IngestMetrics;
use crate::wire;

/// Validates, converts and stores export requests. Transports only decode and encode.
#[derive(Debug)]
pub struct Ingest {
    store: Store,
    limits: Limits,
    metrics: IngestMetrics,
    inflight: Arc<InflightBudget>,
    /// Where the stored spans are counted as span metrics, with or without pairing.
    span_metrics: Arc<GraphMetrics>,
}

impl Ingest {
    /// An ingest core that decodes at most `inflight_bytes` of request bodies at once and
    /// counts the spans it stores in `span_metrics`.
    pub fn new(
        store: Store,
        limits: Limits,
        inflight_bytes: usize,
        span_metrics: Arc<GraphMetrics>,
    ) -> Self {
        Self {
            store,
            limits,
            metrics: IngestMetrics::default(),
            inflight: InflightBudget::new(inflight_bytes),
            span_metrics,
        }
    }

    /// The in-flight byte budget both transports charge.
    pub fn inflight(&self) -> &Arc<InflightBudget> {
        &self.inflight
    }

    /// The receivers' Prometheus series.
    pub fn render_metrics(&self, out: &mut String) {
        self.metrics.render(&self.inflight, out);
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn metrics(&self) -> &IngestMetrics {
        &self.metrics
    }

    /// Stores the valid spans of `request` and answers once they are in the WAL. Invalid
    /// spans are left out and reported as a partial success.
    pub async fn export(
        &self,
        request: ExportTraceServiceRequest,
    ) -> Result<ExportTraceServiceResponse, IngestError> {
        self.export_views(wire::Request::of(&request)).await
    }

    /// [`Self::export`] of a protobuf body, read in place. A body that does not decode is
    /// counted as invalid and refused with `invalid`'s text for prost's error.
    pub async fn export_protobuf(
        &self,
        body: Bytes,
        invalid: impl FnOnce(prost::DecodeError) -> String,
    ) -> Result<ExportTraceServiceResponse, IngestError> {
        let decoded;
        let room = Room::charged(self.inflight.charge(), body.len());
        let request = match wire::read_within(&body, room)? {
            Some(request) => request,
            None => {
                // What prost and the views will take, charged before they take it.
                let mut room = Room::charged(self.inflight.charge(), body.len());
                if !room.take(wire::decoded_bound(&body)) {
                    return Err(room.refused().expect("a refused charge is kept"));
                }
                decoded = ExportTraceServiceRequest::decode(&body[..]).map_err(|error| {
                    self.metrics.requests_invalid.add(1);
                    IngestError::InvalidRequest(invalid(error))
                })?;
                let mut request = wire::Request::of(&decoded);
                request.room = room;
                request
            }
        };
        self.export_views(request).await
    }

    /// [`Self::export`] of an OTLP/JSON body, decoded into views of it. A body that does
    /// not decode is counted as invalid and refused with the decoder's error.
    pub async fn export_json(
        &self,
        body: Bytes,
    ) -> Result<ExportTraceServiceResponse, IngestError> {
        let arena = Bump::new();
        let room = Room::charged(self.inflight.charge(), body.len());
        let request = decode_views_within(&body, &arena, room).inspect_err(|error| {
            if matches!(error, IngestError::InvalidRequest(_)) {
                self.metrics.requests_invalid.add(1);
            }
        })?;
        self.export_views(request).await
    }

    #[tracing::instrument(skip_all, fields(spans))]
    async fn export_views(
        &self,
        request: wire::Request<'_>,
    ) -> Result<ExportTraceServiceResponse, IngestError> {
        let started = Instant::now();
        let total = request.span_count();
        tracing::Span::current().record("spans", total);
        self.metrics.spans_received.add(total as u64);
        if total == 0 {
            return Ok(ExportTraceServiceResponse::default());
        }
        if let Err(error) = self.store.admit() {
            return Err(self.refused(error));
        }
        let now_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        let converted = convert_views(&request, now_ns, &self.limits).inspect_err(|_| {
            self.metrics.requests_failed.add(1);
        })?;
        if let Some(batch) = converted.batch {
            let catalog = self.store.catalog();
            catalog.learn_namespaces(reported_namespaces(&request));
            catalog.learn_consumer_groups(reported_consumer_groups(&request));
            drop(request);
            // A clone shares the columns: counted once stored, so a refused request is not.
            let stored = batch.clone();
            self.store
                .append(batch)
                .await
                .map_err(|error| self.refused(error))?;
            self.span_metrics.observe_spans(&stored);
        }
        self.metrics.spans_accepted.add(converted.accepted as u64);
        self.metrics.spans_rejected.add(converted.rejected as u64);
        self.metrics
            .values_truncated
            .add(converted.truncated_values as u64);
        self.metrics.export_seconds.observe(started.elapsed());

        let partial_success = (converted.rejected > 0).then(|| {
            tracing::warn!(
                rejected = converted.rejected,
                first = converted.reasons.first().map(String::as_str),
                "rejected invalid spans"
            );
            ExportTracePartialSuccess {
                rejected_spans: converted.rejected as i64,
                error_message: format!(
                    "{} of {total} spans rejected: {}",
                    converted.rejected,
                    converted.reasons.join("; ")
                ),
            }
        });
        Ok(ExportTraceServiceResponse { partial_success })
    }

    /// Counts a refusal by storage and turns it into the error the client sees.
    fn refused(&self, error: StoreError) -> IngestError {
        match &error {
            StoreError::QueueFull { .. } => self.metrics.requests_refused_queue.add(1),
            StoreError::MemoryFull { .. } | StoreError::ResidentFull { .. } => {
                self.metrics.requests_refused_memory.add(1)
            }
            _ => self.metrics.requests_failed.add(1),
        }
        IngestError::Store(error)
    }
}
