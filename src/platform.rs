//! A generated platform of many services, for load at a real platform's size: services
//! `svc-000`, `svc-001`, … where each calls up to three services after it over HTTP, so N
//! services have about 3N edges and no cycles. Each trace starts at a random service (a
//! call from `user`) and follows calls a few levels down; a few calls fail. Every ten
//! services make a namespace (`team-00`, `team-01`, …).

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use callwatch_collector::{int_attribute, text_attribute};

/// Calls each service makes, at most.
const CALLEES: usize = 3;
/// Levels a trace goes down, at most.
const DEPTH: usize = 4;

struct Platform {
    callees: Vec<Vec<usize>>,
}

impl Platform {
    fn new(services: usize, seed: u64) -> Self {
        // The topology depends on the seed's platform, not on each request's seed.
        let mut rng = SmallRng::seed_from_u64(seed);
        let callees = (0..services)
            .map(|from| {
                let later = services - from - 1;
                let mut callees: Vec<usize> = Vec::new();
                while callees.len() < CALLEES.min(later) {
                    let to = rng.random_range(from + 1..services);
                    if !callees.contains(&to) {
                        callees.push(to);
                    }
                }
                callees
            })
            .collect();
        Self { callees }
    }
}

fn name(service: usize) -> String {
    format!("svc-{service:03}")
}

/// Teams of ten services each, as namespaces.
fn namespace(service: usize) -> String {
    format!("team-{:02}", service / 10)
}

/// At least `batch` spans of a platform of `services` services, in one request.
pub fn traffic(
    services: usize,
    batch: usize,
    seed: u64,
    base_ns: u64,
) -> ExportTraceServiceRequest {
    let platform = Platform::new(services.max(2), 1);
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut spans: Vec<(usize, Span)> = Vec::with_capacity(batch + 64);
    let mut start_ns = base_ns;
    let mut traces = 0usize;
    while spans.len() < batch {
        let trace_id: [u8; 16] = rng.random();
        // Roots take turns, so that every service starts traces even when a few
        // requests are sent over and over.
        let root = (seed as usize).wrapping_mul(31).wrapping_add(traces) % platform.callees.len();
        traces += 1;
        start_ns += 1_000_000;
        let server = server_span(&mut rng, trace_id, None, root, start_ns, 40_000_000);
        let parent = server.span_id.clone();
        spans.push((root, server));
        visit(
            &platform, &mut rng, &mut spans, trace_id, root, parent, start_ns, 1,
        );
    }
    let resource_spans = spans
        .into_iter()
        .map(|(service, span)| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    text_attribute("service.name", &name(service)),
                    text_attribute("service.instance.id", &format!("{}-1", name(service))),
                    text_attribute("service.namespace", &namespace(service)),
                ],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![span],
                ..ScopeSpans::default()
            }],
            schema_url: String::new(),
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

/// The calls `service` makes under its server span `parent`, and theirs, down to [`DEPTH`].
#[allow(clippy::too_many_arguments)]
fn visit(
    platform: &Platform,
    rng: &mut SmallRng,
    spans: &mut Vec<(usize, Span)>,
    trace_id: [u8; 16],
    service: usize,
    parent: Vec<u8>,
    start_ns: u64,
    depth: usize,
) {
    if depth > DEPTH {
        return;
    }
    for &callee in &platform.callees[service] {
        if !rng.random_bool(0.5) {
            continue;
        }
        let started = start_ns + rng.random_range(100_000..2_000_000);
        let duration = rng.random_range(1_000_000..20_000_000);
        let failed = rng.random_bool(0.02);
        let route = format!("/v1/{}", name(callee));
        let client_id: [u8; 8] = rng.random();
        let client = Span {
            trace_id: trace_id.to_vec(),
            span_id: client_id.to_vec(),
            parent_span_id: parent.clone(),
            name: format!("GET {route}"),
            kind: span::SpanKind::Client as i32,
            start_time_unix_nano: started,
            end_time_unix_nano: started + duration + 500_000,
            attributes: vec![
                text_attribute("peer.service", &name(callee)),
                text_attribute("http.request.method", "GET"),
                int_attribute("http.response.status_code", if failed { 500 } else { 200 }),
            ],
            status: failed.then(error),
            ..Span::default()
        };
        let mut server = server_span(
            rng,
            trace_id,
            Some(client_id),
            callee,
            started + 200_000,
            duration,
        );
        server.attributes.push(text_attribute("http.route", &route));
        if failed {
            server.status = Some(error());
        }
        let server_id = server.span_id.clone();
        spans.push((service, client));
        spans.push((callee, server));
        visit(
            platform,
            rng,
            spans,
            trace_id,
            callee,
            server_id,
            started,
            depth + 1,
        );
    }
}

fn server_span(
    rng: &mut SmallRng,
    trace_id: [u8; 16],
    parent: Option<[u8; 8]>,
    service: usize,
    start_ns: u64,
    duration_ns: u64,
) -> Span {
    let span_id: [u8; 8] = rng.random();
    Span {
        trace_id: trace_id.to_vec(),
        span_id: span_id.to_vec(),
        parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
        name: format!("GET /v1/{}", name(service)),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: start_ns,
        end_time_unix_nano: start_ns + duration_ns,
        attributes: vec![text_attribute("http.request.method", "GET")],
        ..Span::default()
    }
}

fn error() -> Status {
    Status {
        code: 2,
        message: "internal error".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_platform_of_two_hundred_services_has_about_three_edges_each_and_no_cycles() {
        let platform = Platform::new(200, 1);
        let edges: usize = platform.callees.iter().map(Vec::len).sum();
        assert_eq!(edges, 200 * 3 - 3 - 2 - 1);
        for (from, callees) in platform.callees.iter().enumerate() {
            assert!(callees.iter().all(|&to| to > from));
        }
        let request = traffic(200, 1000, 7, 1_795_000_000_000_000_000);
        let spans = callwatch_collector::count_spans(&request);
        assert!(spans >= 1000);
        let services: std::collections::HashSet<_> = request
            .resource_spans
            .iter()
            .map(|r| format!("{:?}", r.resource.as_ref().unwrap().attributes[0]))
            .collect();
        assert!(services.len() > 100, "{} services", services.len());
    }
}
