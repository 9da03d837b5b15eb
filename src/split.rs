//! Sending to several collectors as the OpenTelemetry Collector's `loadbalancing` exporter
//! does with `routing_key: traceID`: each span goes to the collector its trace id picks, so
//! every span of a trace, and so both halves of each of its calls, meet in one collector.

use anyhow::Context;
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use prost::Message;
use tonic::Status;

use crate::config::TokenFile;
use callwatch_collector::OtlpClient;

/// Which of `collectors` collectors the trace `trace_id` goes to: the same for every span of
/// a trace and for every sender with the same list.
pub fn collector_of(trace_id: &[u8], collectors: usize) -> usize {
    // FNV-1a: stable across processes and releases, unlike std's hasher.
    let hash = trace_id
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    (hash % collectors.max(1) as u64) as usize
}

/// `request` split into one request per collector (some may hold no spans), each span in its
/// trace's, with its resource and scope.
pub fn split_by_trace(
    request: ExportTraceServiceRequest,
    collectors: usize,
) -> Vec<ExportTraceServiceRequest> {
    let mut parts = vec![ExportTraceServiceRequest::default(); collectors.max(1)];
    for resource_spans in request.resource_spans {
        let mut resources: Vec<Option<ResourceSpans>> = vec![None; parts.len()];
        for scope_spans in resource_spans.scope_spans {
            let mut scopes: Vec<Option<ScopeSpans>> = vec![None; parts.len()];
            for span in scope_spans.spans {
                let to = collector_of(&span.trace_id, parts.len());
                scopes[to]
                    .get_or_insert_with(|| ScopeSpans {
                        scope: scope_spans.scope.clone(),
                        spans: Vec::new(),
                        schema_url: scope_spans.schema_url.clone(),
                    })
                    .spans
                    .push(span);
            }
            for (to, scope) in scopes.into_iter().enumerate() {
                let Some(scope) = scope else { continue };
                resources[to]
                    .get_or_insert_with(|| ResourceSpans {
                        resource: resource_spans.resource.clone(),
                        scope_spans: Vec::new(),
                        schema_url: resource_spans.schema_url.clone(),
                    })
                    .scope_spans
                    .push(scope);
            }
        }
        for (to, resource) in resources.into_iter().enumerate() {
            parts[to].resource_spans.extend(resource);
        }
    }
    parts
}

/// Clients of one or more collectors; a request to several is split by trace id.
pub struct Collectors {
    clients: Vec<OtlpClient>,
}

impl Collectors {
    /// Connects to each of `urls`, sending the token of `token` if one is given.
    pub async fn connect(urls: &[String], token: &TokenFile) -> anyhow::Result<Self> {
        anyhow::ensure!(!urls.is_empty(), "--send-to names no collector");
        let token = token.read()?;
        let mut clients = Vec::with_capacity(urls.len());
        for url in urls {
            let client = OtlpClient::connect(url)
                .await
                .with_context(|| format!("connecting to {url}"))?;
            clients.push(match &token {
                Some(token) => client.with_token(token).map_err(anyhow::Error::msg)?,
                None => client,
            });
        }
        Ok(Self { clients })
    }

    /// Collectors already connected, in the order of `--send-to`.
    pub fn new(clients: Vec<OtlpClient>) -> Self {
        Self { clients }
    }

    /// Sends `request`, split by trace id over the collectors; returns how many spans they
    /// rejected. The first refusal is the error.
    pub async fn export(&mut self, request: &ExportTraceServiceRequest) -> Result<i64, Status> {
        self.export_bytes(Bytes::from(request.encode_to_vec()))
            .await
    }

    /// [`Collectors::export`] of an encoded request: sent as it is to one collector.
    pub async fn export_bytes(&mut self, body: Bytes) -> Result<i64, Status> {
        if let [client] = self.clients.as_mut_slice() {
            let response = client.export_bytes(body).await?;
            return Ok(response.partial_success.map_or(0, |p| p.rejected_spans));
        }
        let request = ExportTraceServiceRequest::decode(body)
            .map_err(|error| Status::invalid_argument(error.to_string()))?;
        let parts = split_by_trace(request, self.clients.len());
        let sends = self
            .clients
            .iter_mut()
            .zip(&parts)
            .filter(|(_, part)| !part.resource_spans.is_empty())
            .map(|(client, part)| client.export(part));
        let mut rejected = 0;
        for response in futures::future::join_all(sends).await {
            rejected += response?.partial_success.map_or(0, |p| p.rejected_spans);
        }
        Ok(rejected)
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::trace::v1::Span;

    use super::*;

    fn span(trace: u8, id: u8) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            ..Default::default()
        }
    }

    #[test]
    fn every_span_of_a_trace_goes_to_one_collector_with_its_resource_and_scope() {
        let scope = |spans| ScopeSpans {
            spans,
            schema_url: "scope-url".into(),
            ..Default::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    scope_spans: vec![scope((0..40).map(|n| span(n % 20, n)).collect())],
                    schema_url: "a".into(),
                    ..Default::default()
                },
                ResourceSpans {
                    scope_spans: vec![scope((0..20).map(|n| span(n, 100 + n)).collect())],
                    schema_url: "b".into(),
                    ..Default::default()
                },
            ],
        };
        let parts = split_by_trace(request, 3);
        assert_eq!(parts.len(), 3);
        let mut seen = 0;
        for (to, part) in parts.iter().enumerate() {
            assert!(!part.resource_spans.is_empty(), "20 traces reach all 3");
            for resource in &part.resource_spans {
                assert!(["a", "b"].contains(&resource.schema_url.as_str()));
                for scope in &resource.scope_spans {
                    assert_eq!(scope.schema_url, "scope-url");
                    for span in &scope.spans {
                        assert_eq!(collector_of(&span.trace_id, 3), to);
                        seen += 1;
                    }
                }
            }
        }
        assert_eq!(seen, 60);
        // One collector takes the request whole.
        assert_eq!(collector_of(&[7; 16], 1), 0);
    }
}
