//! The simulated e-commerce platform. It emits OTLP spans exactly as instrumented services
//! would (semantic-convention attributes, one resource per service instance) and counts, as
//! it goes, every call it makes: the ground truth.
//!
//! A checkout: `web-frontend` → `api-gateway`, which asks `user-service` (REST, Redis cache
//! `user-cache`, timeouts and retries) and `order-service` (REST `/v1/orders` or
//! `/v2/orders`, three instances with uneven load) at once. `order-service` checks
//! `fraud-check` (an external API: client span only), charges `payment-service` (gRPC,
//! behind a client-side circuit breaker), writes PostgreSQL `orders`, publishes to Kafka
//! `order-events` (consumed by `inventory-service` in the same trace) and to RabbitMQ
//! `notifications` (consumed in batches by `notification-service` in traces of its own,
//! linked to the messages).

use callwatch_collector::{int_attribute as int, text_attribute as text};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, status};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::breaker::{Breaker, BreakerConfig};
use super::scenario::{Conditions, Scenario};
use super::truth::{CallType, EdgeKey, NodeKind, Summary, Truth};

mod checkout;

const MS: u64 = 1_000_000;
/// How often notification-service takes the messages waiting in its queue.
const BATCH_INTERVAL_NS: u64 = 2_000 * MS;

#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    pub seed: u64,
    /// Virtual time of the first checkout, nanoseconds since the epoch.
    pub start_ns: u64,
    pub scenario: Scenario,
    /// Length of the scenario's timeline; it starts over after that.
    pub scenario_ns: u64,
    pub checkouts_per_sec: f64,
    pub breaker: BreakerConfig,
}

struct Service {
    name: &'static str,
    /// Its `service.namespace`: the team that runs it.
    namespace: &'static str,
    version: &'static str,
    language: &'static str,
    scope: &'static str,
    /// Share of the service's traffic each instance takes.
    weights: &'static [f64],
}

const WEB: usize = 0;
const GATEWAY: usize = 1;
const USERS: usize = 2;
const ORDERS: usize = 3;
const PAYMENTS: usize = 4;
const INVENTORY: usize = 5;
const NOTIFICATIONS: usize = 6;

const SERVICES: [Service; 7] = [
    Service {
        name: "web-frontend",
        namespace: "edge",
        version: "3.1.0",
        language: "nodejs",
        scope: "@opentelemetry/instrumentation-http",
        weights: &[0.5, 0.5],
    },
    Service {
        name: "api-gateway",
        namespace: "edge",
        version: "1.8.2",
        language: "java",
        scope: "io.opentelemetry.spring-cloud-gateway-2.2",
        weights: &[0.5, 0.5],
    },
    Service {
        name: "user-service",
        namespace: "shop",
        version: "2.4.0",
        language: "python",
        scope: "opentelemetry.instrumentation.flask",
        weights: &[0.5, 0.5],
    },
    Service {
        name: "order-service",
        namespace: "shop",
        version: "5.0.1",
        language: "java",
        scope: "io.opentelemetry.spring-webmvc-6.0",
        weights: &[0.5, 0.3, 0.2],
    },
    Service {
        name: "payment-service",
        namespace: "payments",
        version: "1.12.0",
        language: "go",
        scope: "go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc",
        weights: &[0.5, 0.5],
    },
    Service {
        name: "inventory-service",
        namespace: "fulfilment",
        version: "0.9.4",
        language: "java",
        scope: "io.opentelemetry.kafka-clients-2.6",
        weights: &[0.5, 0.5],
    },
    Service {
        name: "notification-service",
        namespace: "fulfilment",
        version: "2.0.0",
        language: "dotnet",
        scope: "OpenTelemetry.Instrumentation.RabbitMQ",
        weights: &[1.0],
    },
];

fn edge(source: &'static str, target: &'static str) -> EdgeKey {
    EdgeKey {
        source,
        target,
        call_type: CallType::Sync,
        destination: None,
    }
}

/// Everything about one span but its ids, which the caller chooses.
struct SpanSpec {
    service: usize,
    instance: usize,
    kind: SpanKind,
    name: String,
    start: u64,
    end: u64,
    attributes: Vec<KeyValue>,
    /// The status message of a failed span.
    error: Option<String>,
    events: Vec<Event>,
    links: Vec<Link>,
}

impl SpanSpec {
    fn new(
        service: usize,
        instance: usize,
        kind: SpanKind,
        name: impl Into<String>,
        start: u64,
        end: u64,
        attributes: Vec<KeyValue>,
    ) -> Self {
        Self {
            service,
            instance,
            kind,
            name: name.into(),
            start,
            end,
            attributes,
            error: None,
            events: Vec::new(),
            links: Vec::new(),
        }
    }

    /// Marks the span failed (status ERROR with this message) when `error` is given.
    fn failed(mut self, error: Option<String>) -> Self {
        self.error = error;
        self
    }

    fn with_events(mut self, events: Vec<Event>) -> Self {
        self.events = events;
        self
    }

    fn with_links(mut self, links: Vec<Link>) -> Self {
        self.links = links;
        self
    }
}

/// A published RabbitMQ message waiting for the batch consumer.
struct Message {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    published_ns: u64,
}

pub struct Simulator {
    config: SimulatorConfig,
    rng: SmallRng,
    next_checkout_ns: u64,
    next_batch_ns: u64,
    breaker: Breaker,
    truth: Truth,
    queued_notifications: Vec<Message>,
    /// Spans emitted since the last `advance`, per service instance.
    spans: Vec<Vec<Span>>,
}

impl Simulator {
    pub fn new(config: SimulatorConfig) -> Self {
        let instances = SERVICES.iter().map(|s| s.weights.len()).sum();
        Self {
            rng: SmallRng::seed_from_u64(config.seed),
            next_checkout_ns: config.start_ns,
            next_batch_ns: config.start_ns + BATCH_INTERVAL_NS,
            breaker: Breaker::new(config.breaker),
            truth: Truth::new(),
            queued_notifications: Vec::new(),
            spans: vec![Vec::new(); instances],
            config,
        }
    }

    /// Runs the platform up to `until_ns`: every trace that starts before then is emitted.
    /// Returns them as one export request, one resource per service instance.
    pub fn advance(&mut self, until_ns: u64) -> Option<ExportTraceServiceRequest> {
        loop {
            let next = self.next_checkout_ns.min(self.next_batch_ns);
            if next >= until_ns {
                break;
            }
            if self.next_batch_ns <= self.next_checkout_ns {
                self.notification_batch(self.next_batch_ns);
                self.next_batch_ns += BATCH_INTERVAL_NS;
            } else {
                self.checkout(self.next_checkout_ns);
                // Poisson arrivals.
                let gap = -(1.0 - self.rng.random::<f64>()).ln() / self.config.checkouts_per_sec;
                self.next_checkout_ns += ((gap * 1e9) as u64).max(1);
            }
        }
        self.take_request()
    }

    /// The ground truth of everything emitted so far, as JSON.
    pub fn truth_json(&self, end_ns: u64) -> String {
        Summary {
            seed: self.config.seed,
            scenario: self.config.scenario,
            start_ns: self.config.start_ns,
            end_ns,
            checkouts_per_sec: self.config.checkouts_per_sec,
            truth: &self.truth,
            breaker_config: self.breaker.config(),
            transitions: &self.breaker.transitions,
            rejected_calls: self.breaker.rejected_calls,
        }
        .to_json()
    }

    fn take_request(&mut self) -> Option<ExportTraceServiceRequest> {
        let mut resource_spans = Vec::new();
        let mut index = 0;
        for service in &SERVICES {
            for instance in 0..service.weights.len() {
                let spans = std::mem::take(&mut self.spans[index]);
                index += 1;
                if spans.is_empty() {
                    continue;
                }
                resource_spans.push(ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![
                            text("service.name", service.name),
                            text(
                                "service.instance.id",
                                &format!("{}-{instance}", service.name),
                            ),
                            text("service.version", service.version),
                            text("service.namespace", service.namespace),
                            text("deployment.environment.name", "demo"),
                            text("telemetry.sdk.name", "opentelemetry"),
                            text("telemetry.sdk.language", service.language),
                        ],
                        ..Resource::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: service.scope.into(),
                            version: "2.10.0".into(),
                            ..InstrumentationScope::default()
                        }),
                        spans,
                        schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
                    }],
                    schema_url: String::new(),
                });
            }
        }
        (!resource_spans.is_empty()).then_some(ExportTraceServiceRequest { resource_spans })
    }

    fn conditions(&self, at_ns: u64) -> Conditions {
        let elapsed = at_ns.saturating_sub(self.config.start_ns) % self.config.scenario_ns.max(1);
        self.config
            .scenario
            .conditions(elapsed as f64 / self.config.scenario_ns.max(1) as f64)
    }

    fn trace_id(&mut self) -> [u8; 16] {
        let mut id = [0u8; 16];
        self.rng.fill(&mut id);
        id
    }

    fn span_id(&mut self) -> [u8; 8] {
        let mut id = [0u8; 8];
        self.rng.fill(&mut id);
        id
    }

    fn instance(&mut self, service: usize) -> usize {
        let mut pick = self.rng.random::<f64>();
        let weights = SERVICES[service].weights;
        for (instance, weight) in weights.iter().enumerate() {
            if pick < *weight {
                return instance;
            }
            pick -= weight;
        }
        weights.len() - 1
    }

    /// `typical_ms` with jitter and, once in a hundred, a long tail.
    fn latency(&mut self, typical_ms: f64) -> u64 {
        let jitter = 0.7 + 0.6 * self.rng.random::<f64>();
        let tail = if self.rng.random_bool(0.01) { 4.0 } else { 1.0 };
        (typical_ms * jitter * tail * MS as f64) as u64
    }

    fn emit(
        &mut self,
        trace_id: [u8; 16],
        span_id: [u8; 8],
        parent: Option<[u8; 8]>,
        spec: SpanSpec,
    ) {
        let offset: usize = SERVICES[..spec.service]
            .iter()
            .map(|s| s.weights.len())
            .sum();
        let status = spec.error.map(|message| Status {
            message,
            code: status::StatusCode::Error as i32,
        });
        self.spans[offset + spec.instance].push(Span {
            trace_id: trace_id.to_vec(),
            span_id: span_id.to_vec(),
            parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
            flags: 0x301,
            name: spec.name,
            kind: spec.kind as i32,
            start_time_unix_nano: spec.start,
            end_time_unix_nano: spec.end,
            attributes: spec.attributes,
            events: spec.events,
            links: spec.links,
            status,
            ..Span::default()
        });
        self.truth.spans += 1;
    }
}
