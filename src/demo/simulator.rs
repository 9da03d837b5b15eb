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

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, status};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::breaker::{Breaker, BreakerConfig};
use super::scenario::{Conditions, Scenario};
use super::truth::{CallType, EdgeKey, NodeKind, Summary, Truth};

const MS: u64 = 1_000_000;
/// How often notification-service takes the messages waiting in its queue.
const BATCH_INTERVAL_NS: u64 = 2_000 * MS;
/// user-service calls that time out on the first attempt (and are retried).
const USER_TIMEOUT_SHARE: f64 = 0.04;
const USER_CLIENT_TIMEOUT_NS: u64 = 200 * MS;

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
        version: "3.1.0",
        language: "nodejs",
        scope: "@opentelemetry/instrumentation-http",
        weights: &[0.5, 0.5],
    },
    Service {
        name: "api-gateway",
        version: "1.8.2",
        language: "java",
        scope: "io.opentelemetry.spring-cloud-gateway-2.2",
        weights: &[0.5, 0.5],
    },
    Service {
        name: "user-service",
        version: "2.4.0",
        language: "python",
        scope: "opentelemetry.instrumentation.flask",
        weights: &[0.5, 0.5],
    },
    Service {
        name: "order-service",
        version: "5.0.1",
        language: "java",
        scope: "io.opentelemetry.spring-webmvc-6.0",
        weights: &[0.5, 0.3, 0.2],
    },
    Service {
        name: "payment-service",
        version: "1.12.0",
        language: "go",
        scope: "go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc",
        weights: &[0.5, 0.5],
    },
    Service {
        name: "inventory-service",
        version: "0.9.4",
        language: "java",
        scope: "io.opentelemetry.kafka-clients-2.6",
        weights: &[0.5, 0.5],
    },
    Service {
        name: "notification-service",
        version: "2.0.0",
        language: "dotnet",
        scope: "OpenTelemetry.Instrumentation.RabbitMQ",
        weights: &[1.0],
    },
];

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..KeyValue::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..KeyValue::default()
    }
}

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
                            text("service.namespace", "shop"),
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

    fn checkout(&mut self, t0: u64) {
        let conditions = self.conditions(t0);
        let trace = self.trace_id();
        self.truth.traces += 1;
        let (root, web_client, gateway_server) = (self.span_id(), self.span_id(), self.span_id());
        let (web, gateway) = (self.instance(WEB), self.instance(GATEWAY));
        let user_id = self.rng.random_range(1..100_000);

        // The gateway asks for the user and places the order at once.
        let fan_out = t0 + 3 * MS / 2;
        let user_end = self.user_lookup(trace, gateway_server, gateway, fan_out, user_id);
        let (order_end, status) =
            self.place_order(trace, gateway_server, gateway, fan_out, &conditions);
        let failed = status >= 500;
        let gateway_end = user_end.max(order_end) + 300_000;
        let error = |what: &str| failed.then(|| format!("{what} answered {status}"));

        self.emit(
            trace,
            gateway_server,
            Some(web_client),
            SpanSpec {
                service: GATEWAY,
                instance: gateway,
                kind: SpanKind::Server,
                name: "POST /api/checkout".into(),
                start: t0 + MS,
                end: gateway_end,
                attributes: http_server("POST", "/api/checkout", status),
                error: error("order-service"),
                events: Vec::new(),
                links: Vec::new(),
            },
        );
        self.emit(
            trace,
            web_client,
            Some(root),
            SpanSpec {
                service: WEB,
                instance: web,
                kind: SpanKind::Client,
                name: "POST".into(),
                start: t0 + MS / 2,
                end: gateway_end + 400_000,
                attributes: http_client("POST", "api-gateway", "/api/checkout", Some(status), 0),
                error: error("api-gateway"),
                events: Vec::new(),
                links: Vec::new(),
            },
        );
        self.truth.call(
            edge("web-frontend", "api-gateway"),
            NodeKind::Service,
            failed,
        );
        let mut attributes = http_server("POST", "/checkout", status);
        attributes.push(text("enduser.id", &format!("user-{user_id}")));
        self.emit(
            trace,
            root,
            None,
            SpanSpec {
                service: WEB,
                instance: web,
                kind: SpanKind::Server,
                name: "POST /checkout".into(),
                start: t0,
                end: gateway_end + 800_000,
                attributes,
                error: error("api-gateway"),
                events: Vec::new(),
                links: Vec::new(),
            },
        );
        self.truth
            .call(edge("user", "web-frontend"), NodeKind::Service, failed);
    }

    /// `GET /v1/users/{id}` from the gateway, with a retry after a client timeout now and
    /// then. Returns when the gateway has its answer.
    fn user_lookup(
        &mut self,
        trace: [u8; 16],
        parent: [u8; 8],
        gateway: usize,
        start: u64,
        user_id: u32,
    ) -> u64 {
        let path = format!("/v1/users/{user_id}");
        let times_out = self.rng.random_bool(USER_TIMEOUT_SHARE);
        let mut attempt_start = start;
        for attempt in 0..=u32::from(times_out) {
            let timed_out = times_out && attempt == 0;
            let (client, server) = (self.span_id(), self.span_id());
            let instance = self.instance(USERS);
            let server_start = attempt_start + 400_000;
            // A timed-out attempt: the client gives up, the server runs on and answers late.
            let server_time = if timed_out {
                350 * MS
            } else {
                self.latency(4.0)
            };
            let server_end = server_start + server_time;
            let cache_start = server_start + 300_000;
            let cache = self.span_id();
            let cache_end = cache_start + self.latency(0.4);
            let hit = self.rng.random_bool(0.8);
            self.emit(
                trace,
                cache,
                Some(server),
                SpanSpec {
                    service: USERS,
                    instance,
                    kind: SpanKind::Client,
                    name: "GET".into(),
                    start: cache_start,
                    end: cache_end.min(server_end),
                    attributes: vec![
                        text("db.system.name", "redis"),
                        text("db.operation.name", "GET"),
                        text("db.query.text", "GET user:?"),
                        text("server.address", "user-cache"),
                        int("server.port", 6379),
                        text("app.cache.result", if hit { "hit" } else { "miss" }),
                    ],
                    error: None,
                    events: Vec::new(),
                    links: Vec::new(),
                },
            );
            self.truth.call(
                edge("user-service", "user-cache"),
                NodeKind::Database,
                false,
            );
            self.emit(
                trace,
                server,
                Some(client),
                SpanSpec {
                    service: USERS,
                    instance,
                    kind: SpanKind::Server,
                    name: "GET /v1/users/{id}".into(),
                    start: server_start,
                    end: server_end,
                    attributes: http_server("GET", "/v1/users/{id}", 200),
                    error: None,
                    events: Vec::new(),
                    links: Vec::new(),
                },
            );
            let (client_end, status, error) = if timed_out {
                (
                    attempt_start + USER_CLIENT_TIMEOUT_NS,
                    None,
                    Some("timeout after 200 ms".to_string()),
                )
            } else {
                (server_end + 500_000, Some(200), None)
            };
            let mut attributes = http_client("GET", "user-service", &path, status, attempt);
            if timed_out {
                attributes.push(text("error.type", "timeout"));
            }
            self.emit(
                trace,
                client,
                Some(parent),
                SpanSpec {
                    service: GATEWAY,
                    instance: gateway,
                    kind: SpanKind::Client,
                    name: "GET".into(),
                    start: attempt_start,
                    end: client_end,
                    attributes,
                    error,
                    events: Vec::new(),
                    links: Vec::new(),
                },
            );
            self.truth.call(
                edge("api-gateway", "user-service"),
                NodeKind::Service,
                timed_out,
            );
            if !timed_out {
                return client_end;
            }
            attempt_start = client_end + MS;
        }
        unreachable!("the last attempt succeeds")
    }

    /// `POST /v1|v2/orders` from the gateway and all that order-service does for it.
    /// Returns when the gateway has its answer, and the HTTP status.
    fn place_order(
        &mut self,
        trace: [u8; 16],
        parent: [u8; 8],
        gateway: usize,
        start: u64,
        conditions: &Conditions,
    ) -> (u64, i64) {
        let version = if self.rng.random_bool(conditions.v2_share) {
            "v2"
        } else {
            "v1"
        };
        let route = format!("/{version}/orders");
        let (client, server) = (self.span_id(), self.span_id());
        let instance = self.instance(ORDERS);
        let degraded = conditions.degraded_order_instance == Some(instance);
        let slowdown = if degraded { 5.0 } else { 1.0 };
        let server_start = start + MS / 2;

        // The fraud check and the charge go out together.
        let fraud = self.span_id();
        let fraud_start = server_start + 200_000;
        let fraud_end = fraud_start + self.latency(8.0);
        self.emit(
            trace,
            fraud,
            Some(server),
            SpanSpec {
                service: ORDERS,
                instance,
                kind: SpanKind::Client,
                name: "POST".into(),
                start: fraud_start,
                end: fraud_end,
                attributes: vec![
                    text("http.request.method", "POST"),
                    text("url.full", "https://api.fraudcheck.example/v1/score"),
                    text("server.address", "api.fraudcheck.example"),
                    int("server.port", 443),
                    text("peer.service", "fraud-check"),
                    int("http.response.status_code", 200),
                ],
                error: None,
                events: Vec::new(),
                links: Vec::new(),
            },
        );
        self.truth.call(
            edge("order-service", "fraud-check"),
            NodeKind::External,
            false,
        );
        // Every charge starts at the same offset into its trace, so charges reach the
        // breaker in the order traces start.
        let (charge_end, charge_failed) =
            self.charge(trace, server, instance, server_start + MS, conditions);

        let internal_failure = degraded && self.rng.random_bool(0.2);
        let ok = !charge_failed && !internal_failure;
        let mut cursor = fraud_end.max(charge_end) + 200_000;
        if ok {
            cursor =
                self.persist_and_publish(trace, server, instance, cursor, slowdown, conditions);
        }
        let server_end = cursor + (500_000.0 * slowdown) as u64 + self.latency(1.0);
        let status = match (charge_failed, internal_failure) {
            (true, _) => 503,
            (false, true) => 500,
            (false, false) => 201,
        };
        let error = (!ok).then(|| match status {
            503 => "payment declined: payment-service unavailable".to_string(),
            _ => "order-service-2: connection pool exhausted".to_string(),
        });
        let events = if internal_failure {
            vec![Event {
                time_unix_nano: server_end - 100_000,
                name: "exception".into(),
                attributes: vec![
                    text(
                        "exception.type",
                        "org.springframework.dao.DataAccessResourceFailureException",
                    ),
                    text("exception.message", "connection pool exhausted"),
                ],
                dropped_attributes_count: 0,
            }]
        } else {
            Vec::new()
        };
        self.emit(
            trace,
            server,
            Some(client),
            SpanSpec {
                service: ORDERS,
                instance,
                kind: SpanKind::Server,
                name: format!("POST {route}"),
                start: server_start,
                end: server_end,
                attributes: http_server("POST", &route, status),
                error: error.clone(),
                events,
                links: Vec::new(),
            },
        );
        let client_end = server_end + 400_000;
        self.emit(
            trace,
            client,
            Some(parent),
            SpanSpec {
                service: GATEWAY,
                instance: gateway,
                kind: SpanKind::Client,
                name: "POST".into(),
                start,
                end: client_end,
                attributes: http_client("POST", "order-service", &route, Some(status), 0),
                error,
                events: Vec::new(),
                links: Vec::new(),
            },
        );
        self.truth
            .call(edge("api-gateway", "order-service"), NodeKind::Service, !ok);
        (client_end, status)
    }

    /// `payments.v1.PaymentService/Charge` through the client's circuit breaker.
    /// Returns when the client has its answer and whether the charge failed.
    fn charge(
        &mut self,
        trace: [u8; 16],
        parent: [u8; 8],
        instance: usize,
        start: u64,
        conditions: &Conditions,
    ) -> (u64, bool) {
        let client = self.span_id();
        let (permitted, state) = self.breaker.try_acquire(start);
        let mut attributes = vec![
            text("rpc.system", "grpc"),
            text("rpc.service", "payments.v1.PaymentService"),
            text("rpc.method", "Charge"),
            text("server.address", "payment-service"),
            int("server.port", 50051),
            text("circuit_breaker.name", "payment"),
            text("circuit_breaker.state", state.as_str()),
        ];
        if !permitted {
            // Rejected by the open breaker: fails at once, no server span.
            attributes.push(text("error.type", "CallNotPermittedException"));
            let end = start + 40_000;
            self.emit(
                trace,
                client,
                Some(parent),
                SpanSpec {
                    service: ORDERS,
                    instance,
                    kind: SpanKind::Client,
                    name: "payments.v1.PaymentService/Charge".into(),
                    start,
                    end,
                    attributes,
                    error: Some(
                        "CircuitBreaker 'payment' is OPEN and does not permit further calls".into(),
                    ),
                    events: Vec::new(),
                    links: Vec::new(),
                },
            );
            self.truth.call(
                edge("order-service", "payment-service"),
                NodeKind::Service,
                true,
            );
            return (end, true);
        }
        let server = self.span_id();
        let payment = self.instance(PAYMENTS);
        let server_start = start + 600_000;
        let server_time = (self.latency(18.0) as f64 * conditions.payment_slowdown) as u64;
        let server_end = server_start + server_time;
        let failed = self.rng.random_bool(conditions.payment_error_rate);
        let code = if failed { 14 } else { 0 };
        let error = failed.then(|| "card processor unavailable".to_string());
        self.emit(
            trace,
            server,
            Some(client),
            SpanSpec {
                service: PAYMENTS,
                instance: payment,
                kind: SpanKind::Server,
                name: "payments.v1.PaymentService/Charge".into(),
                start: server_start,
                end: server_end,
                attributes: vec![
                    text("rpc.system", "grpc"),
                    text("rpc.service", "payments.v1.PaymentService"),
                    text("rpc.method", "Charge"),
                    int("rpc.grpc.status_code", code),
                ],
                error: error.clone(),
                events: Vec::new(),
                links: Vec::new(),
            },
        );
        attributes.push(int("rpc.grpc.status_code", code));
        let end = server_end + 500_000;
        self.emit(
            trace,
            client,
            Some(parent),
            SpanSpec {
                service: ORDERS,
                instance,
                kind: SpanKind::Client,
                name: "payments.v1.PaymentService/Charge".into(),
                start,
                end,
                attributes,
                error,
                events: Vec::new(),
                links: Vec::new(),
            },
        );
        self.breaker.record(start, failed, end - start);
        self.truth.call(
            edge("order-service", "payment-service"),
            NodeKind::Service,
            failed,
        );
        (end, failed)
    }

    /// Writes the order to PostgreSQL and publishes it to Kafka (inventory-service consumes
    /// it in this trace) and RabbitMQ (notification-service consumes it later, in a batch).
    /// Returns when order-service is done.
    fn persist_and_publish(
        &mut self,
        trace: [u8; 16],
        parent: [u8; 8],
        instance: usize,
        start: u64,
        slowdown: f64,
        conditions: &Conditions,
    ) -> u64 {
        let insert = self.span_id();
        let insert_end = start + (self.latency(3.0) as f64 * slowdown) as u64;
        self.emit(
            trace,
            insert,
            Some(parent),
            SpanSpec {
                service: ORDERS,
                instance,
                kind: SpanKind::Client,
                name: "INSERT orders".into(),
                start,
                end: insert_end,
                attributes: vec![
                    text("db.system.name", "postgresql"),
                    text("db.namespace", "orders"),
                    text("db.operation.name", "INSERT"),
                    text("db.collection.name", "orders"),
                    text(
                        "db.query.text",
                        "INSERT INTO orders (id, user_id, total, currency) VALUES ($1, $2, $3, $4)",
                    ),
                    text("peer.service", "orders"),
                    text("server.address", "orders-db"),
                    int("server.port", 5432),
                ],
                error: None,
                events: Vec::new(),
                links: Vec::new(),
            },
        );
        self.truth
            .call(edge("order-service", "orders"), NodeKind::Database, false);

        let (publish, consume) = (self.span_id(), self.span_id());
        let publish_start = insert_end + 200_000;
        let publish_end = publish_start + self.latency(1.0);
        self.emit(
            trace,
            publish,
            Some(parent),
            SpanSpec {
                service: ORDERS,
                instance,
                kind: SpanKind::Producer,
                name: "publish order-events".into(),
                start: publish_start,
                end: publish_end,
                attributes: vec![
                    text("messaging.system", "kafka"),
                    text("messaging.destination.name", "order-events"),
                    text("messaging.operation.type", "send"),
                    text("server.address", "kafka"),
                ],
                error: None,
                events: Vec::new(),
                links: Vec::new(),
            },
        );
        let consume_start = publish_end + conditions.inventory_lag_ns + self.latency(5.0);
        let inventory = self.instance(INVENTORY);
        let consume_end = consume_start + self.latency(6.0);
        self.emit(
            trace,
            consume,
            Some(publish),
            SpanSpec {
                service: INVENTORY,
                instance: inventory,
                kind: SpanKind::Consumer,
                name: "process order-events".into(),
                start: consume_start,
                end: consume_end,
                attributes: vec![
                    text("messaging.system", "kafka"),
                    text("messaging.destination.name", "order-events"),
                    text("messaging.operation.type", "process"),
                    text("messaging.consumer.group.name", "inventory"),
                    int("messaging.kafka.message.offset", self.truth.traces as i64),
                ],
                error: None,
                events: Vec::new(),
                links: Vec::new(),
            },
        );
        self.truth.call(
            EdgeKey {
                source: "order-service",
                target: "inventory-service",
                call_type: CallType::Async,
                destination: Some("order-events"),
            },
            NodeKind::Service,
            false,
        );

        let notify = self.span_id();
        let notify_start = publish_end + 100_000;
        let notify_end = notify_start + self.latency(0.8);
        self.emit(
            trace,
            notify,
            Some(parent),
            SpanSpec {
                service: ORDERS,
                instance,
                kind: SpanKind::Producer,
                name: "publish notifications".into(),
                start: notify_start,
                end: notify_end,
                attributes: vec![
                    text("messaging.system", "rabbitmq"),
                    text("messaging.destination.name", "notifications"),
                    text("messaging.operation.type", "send"),
                    text(
                        "messaging.rabbitmq.destination.routing_key",
                        "order.created",
                    ),
                ],
                error: None,
                events: Vec::new(),
                links: Vec::new(),
            },
        );
        self.queued_notifications.push(Message {
            trace_id: trace,
            span_id: notify,
            published_ns: notify_end,
        });
        notify_end
    }

    /// notification-service takes every message published by now, in one trace of its own
    /// that links to each message.
    fn notification_batch(&mut self, at: u64) {
        let (ready, waiting): (Vec<Message>, Vec<Message>) =
            std::mem::take(&mut self.queued_notifications)
                .into_iter()
                .partition(|m| m.published_ns <= at);
        self.queued_notifications = waiting;
        if ready.is_empty() {
            return;
        }
        let trace = self.trace_id();
        self.truth.traces += 1;
        let span = self.span_id();
        let links = ready
            .iter()
            .map(|m| Link {
                trace_id: m.trace_id.to_vec(),
                span_id: m.span_id.to_vec(),
                attributes: vec![text("messaging.operation.type", "process")],
                ..Link::default()
            })
            .collect();
        let count = ready.len();
        self.emit(
            trace,
            span,
            None,
            SpanSpec {
                service: NOTIFICATIONS,
                instance: 0,
                kind: SpanKind::Consumer,
                name: "process notifications".into(),
                start: at,
                end: at + 2 * MS + count as u64 * MS,
                attributes: vec![
                    text("messaging.system", "rabbitmq"),
                    text("messaging.destination.name", "notifications"),
                    text("messaging.operation.type", "process"),
                    int("messaging.batch.message_count", count as i64),
                ],
                error: None,
                events: Vec::new(),
                links,
            },
        );
        let edge = EdgeKey {
            source: "order-service",
            target: "notification-service",
            call_type: CallType::Async,
            destination: Some("notifications"),
        };
        for _ in 0..count {
            self.truth.call(edge.clone(), NodeKind::Service, false);
        }
    }
}

fn http_server(method: &str, route: &str, status: i64) -> Vec<KeyValue> {
    vec![
        text("http.request.method", method),
        text("http.route", route),
        text("url.scheme", "http"),
        int("http.response.status_code", status),
        text("network.protocol.version", "1.1"),
    ]
}

fn http_client(
    method: &str,
    host: &str,
    path: &str,
    status: Option<i64>,
    resend_count: u32,
) -> Vec<KeyValue> {
    let mut attributes = vec![
        text("http.request.method", method),
        text("url.full", &format!("http://{host}:8080{path}")),
        text("server.address", host),
        int("server.port", 8080),
    ];
    if let Some(status) = status {
        attributes.push(int("http.response.status_code", status));
    }
    if resend_count > 0 {
        attributes.push(int("http.request.resend_count", i64::from(resend_count)));
    }
    attributes
}
