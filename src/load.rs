//! `callwatch load`: a load generator that sends realistic OTLP/gRPC traffic.
//!
//! Requests are generated and encoded once. Each send copies one and patches it in place:
//! every trace id and span id is XORed with a per-send salt (parent and link references get
//! the same salt, so trees stay intact) and every timestamp is moved to now. The collector
//! thus receives unique, current spans at the cost of a memcpy, not of protobuf encoding.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::{BufMut, Bytes};
use callwatch_collector::EXPORT_PATH;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, status};
use prost::Message;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Endpoint;

use crate::config::LoadArgs;

/// Distinct pre-encoded requests to cycle through.
const TEMPLATES: usize = 16;
/// Most request latencies kept for percentiles.
const MAX_SAMPLES: usize = 1_000_000;

pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    anyhow::ensure!(args.batch > 0, "--batch must be at least 1");
    let base_ns = now_ns();
    let templates: Arc<Vec<Template>> = Arc::new(
        (0..TEMPLATES as u64)
            .map(|i| Template::new(args.batch, args.seed.wrapping_add(i), base_ns))
            .collect(),
    );
    let endpoint = Endpoint::from_shared(args.send_to.clone())
        .with_context(|| format!("{:?} is not a gRPC endpoint URL", args.send_to))?
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30));
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut workers = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let channel = endpoint
            .connect()
            .await
            .with_context(|| format!("connecting to {}", args.send_to))?;
        let (templates, counters) = (templates.clone(), counters.clone());
        // Each connection paces its share of --rate, or sends back to back.
        let pace = args.rate.map(|rate| {
            let per_connection = (rate as f64 / args.connections as f64).max(1.0);
            Duration::from_secs_f64(args.batch as f64 / per_connection)
        });
        workers.push(tokio::spawn(send_until(
            channel, templates, counters, deadline, base_ns, pace,
        )));
    }

    let mut last = (started, 0);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1).min(deadline - Instant::now())).await;
        let accepted = counters.accepted.load(Ordering::Relaxed);
        let now = Instant::now();
        let rate = (accepted - last.1) as f64 / (now - last.0).as_secs_f64();
        println!(
            "t={:>5.1}s accepted={accepted} rejected={} errors={} rate={rate:.0} spans/s",
            (now - started).as_secs_f64(),
            counters.rejected.load(Ordering::Relaxed),
            counters.errors.load(Ordering::Relaxed),
        );
        last = (now, accepted);
    }
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let accepted = counters.accepted.load(Ordering::Relaxed);
    let summary = serde_json::json!({
        "spans_per_sec": (accepted as f64 / elapsed).round(),
        "accepted": accepted,
        "rejected": counters.rejected.load(Ordering::Relaxed),
        "p50_ms": percentile_ms(&latencies, 0.50),
        "p99_ms": percentile_ms(&latencies, 0.99),
        "requests": latencies.len(),
        "errors": counters.errors.load(Ordering::Relaxed),
        "seconds": (elapsed * 1000.0).round() / 1000.0,
    });
    println!("{summary}");
    Ok(())
}

#[derive(Default)]
struct Counters {
    next: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    errors: AtomicU64,
}

/// Sends requests back to back until `deadline`; returns request latencies in microseconds.
async fn send_until(
    channel: tonic::transport::Channel,
    templates: Arc<Vec<Template>>,
    counters: Arc<Counters>,
    deadline: Instant,
    base_ns: u64,
    pace: Option<Duration>,
) -> Vec<u32> {
    let mut client = tonic::client::Grpc::new(channel);
    let mut ticks = pace.map(|period| {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    });
    let mut latencies = Vec::new();
    let path = http::uri::PathAndQuery::from_static(EXPORT_PATH);
    while Instant::now() < deadline {
        if let Some(ticks) = &mut ticks {
            ticks.tick().await;
        }
        let n = counters.next.fetch_add(1, Ordering::Relaxed);
        let template = &templates[(n % templates.len() as u64) as usize];
        // Salt 0 would resend the template's own ids.
        let body = template.instantiate(splitmix(n + 1), now_ns().saturating_sub(base_ns));
        let sent = Instant::now();
        let result = match client.ready().await {
            Ok(()) => {
                client
                    .unary(tonic::Request::new(body), path.clone(), RawCodec)
                    .await
            }
            Err(error) => Err(tonic::Status::unavailable(error.to_string())),
        };
        let elapsed = sent.elapsed();
        match result {
            Ok(response) => {
                let rejected = response
                    .into_inner()
                    .partial_success
                    .map_or(0, |p| p.rejected_spans.max(0) as u64);
                let spans = template.spans as u64;
                counters
                    .accepted
                    .fetch_add(spans.saturating_sub(rejected), Ordering::Relaxed);
                counters.rejected.fetch_add(rejected, Ordering::Relaxed);
                if latencies.len() < MAX_SAMPLES {
                    latencies.push(elapsed.as_micros().min(u128::from(u32::MAX)) as u32);
                }
            }
            Err(status) => {
                counters
                    .rejected
                    .fetch_add(template.spans as u64, Ordering::Relaxed);
                let errors = counters.errors.fetch_add(1, Ordering::Relaxed);
                if errors < 5 {
                    eprintln!("export failed: {} {}", status.code(), status.message());
                }
                // Back off a little when the collector pushes back.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    latencies
}

fn percentile_ms(sorted_micros: &[u32], q: f64) -> f64 {
    if sorted_micros.is_empty() {
        return 0.0;
    }
    let index = ((sorted_micros.len() as f64 * q).ceil() as usize).clamp(1, sorted_micros.len());
    (f64::from(sorted_micros[index - 1]) / 10.0).round() / 100.0
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// One encoded request and where its ids and timestamps sit in the bytes.
struct Template {
    bytes: Vec<u8>,
    spans: usize,
    /// Offsets of the first 8 bytes of every trace id (span and link).
    trace_ids: Vec<usize>,
    /// Offsets of every span id (span, parent and link).
    span_ids: Vec<usize>,
    /// Offsets of every timestamp (span start and end, event time).
    times: Vec<usize>,
}

#[derive(Clone, Copy)]
enum Field {
    TraceId,
    SpanId,
    Time,
}

impl Template {
    fn new(batch: usize, seed: u64, base_ns: u64) -> Self {
        let request = Platform::new(seed, base_ns).request(batch);
        let spans = callwatch_collector::count_spans(&request);
        let mut fields: HashMap<[u8; 8], Field> = HashMap::new();
        let eight = |bytes: &[u8]| -> [u8; 8] { bytes[..8].try_into().expect("8 bytes") };
        for span in request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
        {
            fields.insert(eight(&span.trace_id), Field::TraceId);
            fields.insert(eight(&span.span_id), Field::SpanId);
            fields.insert(span.start_time_unix_nano.to_le_bytes(), Field::Time);
            fields.insert(span.end_time_unix_nano.to_le_bytes(), Field::Time);
            for event in &span.events {
                fields.insert(event.time_unix_nano.to_le_bytes(), Field::Time);
            }
        }
        let bytes = request.encode_to_vec();
        let mut template = Self {
            spans,
            trace_ids: Vec::new(),
            span_ids: Vec::new(),
            times: Vec::new(),
            bytes,
        };
        // One pass over the bytes: random ids and nanosecond times do not occur by chance.
        let mut at = 0;
        while at + 8 <= template.bytes.len() {
            let window: [u8; 8] = template.bytes[at..at + 8].try_into().expect("8 bytes");
            match fields.get(&window) {
                Some(Field::TraceId) => template.trace_ids.push(at),
                Some(Field::SpanId) => template.span_ids.push(at),
                Some(Field::Time) => template.times.push(at),
                None => {
                    at += 1;
                    continue;
                }
            }
            at += 8;
        }
        template
    }

    fn instantiate(&self, salt: u64, shift_ns: u64) -> Bytes {
        let mut bytes = self.bytes.clone();
        let patch = |bytes: &mut [u8], at: usize, f: &dyn Fn(u64) -> u64| {
            let value = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
            bytes[at..at + 8].copy_from_slice(&f(value).to_le_bytes());
        };
        for &at in &self.trace_ids {
            patch(&mut bytes, at, &|v| v ^ salt);
        }
        let span_salt = splitmix(salt);
        for &at in &self.span_ids {
            patch(&mut bytes, at, &|v| v ^ span_salt);
        }
        for &at in &self.times {
            patch(&mut bytes, at, &|v| v.saturating_add(shift_ns));
        }
        Bytes::from(bytes)
    }
}

/// Sends pre-encoded request bytes; reads the response with prost.
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

struct ResponseDecoder;

impl Decoder for ResponseDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, tonic::Status> {
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|error| tonic::Status::internal(error.to_string()))
    }
}

/// The e-commerce platform the traffic imitates: services, their instances, and one
/// checkout trace shape with semantic-convention attributes.
struct Platform {
    rng: SmallRng,
    base_ns: u64,
    /// Spans per service instance (index into `INSTANCES`).
    spans: Vec<Vec<Span>>,
}

/// (service, instance count, version, instrumentation scope)
const SERVICES: &[(&str, usize, &str, &str)] = &[
    (
        "web-frontend",
        2,
        "3.1.0",
        "@opentelemetry/instrumentation-http",
    ),
    ("api-gateway", 2, "1.8.2", "io.opentelemetry.netty-4.1"),
    (
        "user-service",
        2,
        "2.4.0",
        "opentelemetry-instrumentation-flask",
    ),
    (
        "order-service",
        3,
        "5.0.1",
        "io.opentelemetry.spring-webmvc-6.0",
    ),
    (
        "payment-service",
        2,
        "1.12.0",
        "go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc",
    ),
    (
        "inventory-service",
        2,
        "0.9.4",
        "io.opentelemetry.kafka-clients-2.6",
    ),
];

const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
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

struct Call<'a> {
    service: usize,
    parent: Option<[u8; 8]>,
    kind: SpanKind,
    name: &'a str,
    start_ns: u64,
    duration_ns: u64,
    attributes: Vec<KeyValue>,
    error: bool,
}

impl Platform {
    fn new(seed: u64, base_ns: u64) -> Self {
        let instances = SERVICES.iter().map(|s| s.1).sum();
        Self {
            rng: SmallRng::seed_from_u64(seed),
            base_ns,
            spans: vec![Vec::new(); instances],
        }
    }

    fn request(mut self, batch: usize) -> ExportTraceServiceRequest {
        let mut total = 0;
        while total < batch {
            total += self.checkout_trace();
        }
        let mut resource_spans = Vec::new();
        let mut index = 0;
        for (service, count, version, scope) in SERVICES {
            for instance in 0..*count {
                let spans = std::mem::take(&mut self.spans[index]);
                index += 1;
                if spans.is_empty() {
                    continue;
                }
                let resource = Resource {
                    attributes: vec![
                        text("service.name", service),
                        text("service.instance.id", &format!("{service}-{instance}")),
                        text("service.version", version),
                        text("service.namespace", "shop"),
                        text("deployment.environment.name", "production"),
                        text("host.name", &format!("node-{}", (index * 7) % 5)),
                        text("telemetry.sdk.name", "opentelemetry"),
                        text("telemetry.sdk.version", "1.30.0"),
                    ],
                    ..Resource::default()
                };
                resource_spans.push(ResourceSpans {
                    resource: Some(resource),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: (*scope).into(),
                            version: "1.0.0".into(),
                            ..InstrumentationScope::default()
                        }),
                        spans,
                        schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
                    }],
                    schema_url: String::new(),
                });
            }
        }
        ExportTraceServiceRequest { resource_spans }
    }

    /// Adds one checkout trace; returns how many spans it has.
    fn checkout_trace(&mut self) -> usize {
        let mut trace_id = [0u8; 16];
        self.rng.fill(&mut trace_id);
        let t0 = self.base_ns + self.rng.random_range(0..1_000_000_000);
        let user = self.rng.random_range(1..50_000);
        let payment_fails = self.rng.random_bool(0.02);
        let status_code = if payment_fails { 502 } else { 201 };
        let mut count = 0;
        let mut add = |p: &mut Self, call: Call<'_>| {
            count += 1;
            p.span(&trace_id, call)
        };

        let agent = USER_AGENTS[self.rng.random_range(0..USER_AGENTS.len())];
        let root = add(
            self,
            Call {
                service: 0,
                parent: None,
                kind: SpanKind::Server,
                name: "POST /checkout",
                start_ns: t0,
                duration_ns: 48_000_000,
                attributes: vec![
                    text("http.request.method", "POST"),
                    text("http.route", "/checkout"),
                    text("url.path", "/checkout"),
                    text("url.scheme", "https"),
                    int("http.response.status_code", status_code),
                    text("user_agent.original", agent),
                    text("enduser.id", &format!("user-{user}")),
                ],
                error: payment_fails,
            },
        );
        let to_gateway = add(
            self,
            Call {
                service: 0,
                parent: Some(root),
                kind: SpanKind::Client,
                name: "POST",
                start_ns: t0 + 1_000_000,
                duration_ns: 45_000_000,
                attributes: http_client("POST", "api-gateway", "/api/orders", status_code),
                error: payment_fails,
            },
        );
        let gateway = add(
            self,
            Call {
                service: 1,
                parent: Some(to_gateway),
                kind: SpanKind::Server,
                name: "POST /api/orders",
                start_ns: t0 + 1_500_000,
                duration_ns: 44_000_000,
                attributes: http_server("POST", "/api/orders", status_code),
                error: payment_fails,
            },
        );
        if self.rng.random_bool(0.7) {
            let to_user = add(
                self,
                Call {
                    service: 1,
                    parent: Some(gateway),
                    kind: SpanKind::Client,
                    name: "GET",
                    start_ns: t0 + 2_000_000,
                    duration_ns: 6_000_000,
                    attributes: http_client(
                        "GET",
                        "user-service",
                        &format!("/v1/users/{user}"),
                        200,
                    ),
                    error: false,
                },
            );
            let user_server = add(
                self,
                Call {
                    service: 2,
                    parent: Some(to_user),
                    kind: SpanKind::Server,
                    name: "GET /v1/users/{id}",
                    start_ns: t0 + 2_400_000,
                    duration_ns: 5_000_000,
                    attributes: http_server("GET", "/v1/users/{id}", 200),
                    error: false,
                },
            );
            add(
                self,
                Call {
                    service: 2,
                    parent: Some(user_server),
                    kind: SpanKind::Client,
                    name: "GET",
                    start_ns: t0 + 2_600_000,
                    duration_ns: 400_000,
                    attributes: vec![
                        text("db.system.name", "redis"),
                        text("db.operation.name", "GET"),
                        text("server.address", "user-cache"),
                        int("server.port", 6379),
                    ],
                    error: false,
                },
            );
        }
        let version = if self.rng.random_bool(0.6) {
            "/v2/orders"
        } else {
            "/v1/orders"
        };
        let to_order = add(
            self,
            Call {
                service: 1,
                parent: Some(gateway),
                kind: SpanKind::Client,
                name: "POST",
                start_ns: t0 + 9_000_000,
                duration_ns: 36_000_000,
                attributes: http_client("POST", "order-service", version, status_code),
                error: payment_fails,
            },
        );
        let order = add(
            self,
            Call {
                service: 3,
                parent: Some(to_order),
                kind: SpanKind::Server,
                name: if version == "/v2/orders" {
                    "POST /v2/orders"
                } else {
                    "POST /v1/orders"
                },
                start_ns: t0 + 9_500_000,
                duration_ns: 35_000_000,
                attributes: http_server("POST", version, status_code),
                error: payment_fails,
            },
        );
        add(
            self,
            Call {
                service: 3,
                parent: Some(order),
                kind: SpanKind::Client,
                name: "INSERT orders",
                start_ns: t0 + 10_000_000,
                duration_ns: 3_000_000,
                attributes: vec![
                    text("db.system.name", "postgresql"),
                    text("db.namespace", "orders"),
                    text("db.operation.name", "INSERT"),
                    text("db.collection.name", "orders"),
                    text(
                        "db.query.text",
                        "INSERT INTO orders (id, user_id, total, currency) VALUES ($1, $2, $3, $4)",
                    ),
                    text("server.address", "orders-db"),
                    int("server.port", 5432),
                ],
                error: false,
            },
        );
        let grpc_code = if payment_fails { 14 } else { 0 };
        let to_payment = add(
            self,
            Call {
                service: 3,
                parent: Some(order),
                kind: SpanKind::Client,
                name: "payments.v1.PaymentService/Charge",
                start_ns: t0 + 14_000_000,
                duration_ns: 20_000_000,
                attributes: vec![
                    text("rpc.system", "grpc"),
                    text("rpc.service", "payments.v1.PaymentService"),
                    text("rpc.method", "Charge"),
                    int("rpc.grpc.status_code", grpc_code),
                    text("server.address", "payment-service"),
                    int("server.port", 50051),
                    text("circuit_breaker.name", "payment"),
                    text("circuit_breaker.state", "closed"),
                ],
                error: payment_fails,
            },
        );
        add(
            self,
            Call {
                service: 4,
                parent: Some(to_payment),
                kind: SpanKind::Server,
                name: "payments.v1.PaymentService/Charge",
                start_ns: t0 + 14_800_000,
                duration_ns: 18_500_000,
                attributes: vec![
                    text("rpc.system", "grpc"),
                    text("rpc.service", "payments.v1.PaymentService"),
                    text("rpc.method", "Charge"),
                    int("rpc.grpc.status_code", grpc_code),
                ],
                error: payment_fails,
            },
        );
        if !payment_fails {
            let publish = add(
                self,
                Call {
                    service: 3,
                    parent: Some(order),
                    kind: SpanKind::Producer,
                    name: "order-events publish",
                    start_ns: t0 + 35_000_000,
                    duration_ns: 1_200_000,
                    attributes: vec![
                        text("messaging.system", "kafka"),
                        text("messaging.destination.name", "order-events"),
                        text("messaging.operation.type", "send"),
                    ],
                    error: false,
                },
            );
            add(
                self,
                Call {
                    service: 5,
                    parent: Some(publish),
                    kind: SpanKind::Consumer,
                    name: "order-events process",
                    start_ns: t0 + 60_000_000,
                    duration_ns: 8_000_000,
                    attributes: vec![
                        text("messaging.system", "kafka"),
                        text("messaging.destination.name", "order-events"),
                        text("messaging.operation.type", "process"),
                        text("messaging.consumer.group.name", "inventory"),
                    ],
                    error: false,
                },
            );
        }
        count
    }

    /// Adds a span to a random instance of `call.service`; returns its id.
    fn span(&mut self, trace_id: &[u8; 16], call: Call<'_>) -> [u8; 8] {
        let mut span_id = [0u8; 8];
        self.rng.fill(&mut span_id);
        // Latency varies around the nominal duration, with a long tail.
        let jitter =
            self.rng.random_range(0.6..1.4) * if self.rng.random_bool(0.01) { 8.0 } else { 1.0 };
        let duration = (call.duration_ns as f64 * jitter) as u64;
        let mut span = Span {
            trace_id: trace_id.to_vec(),
            span_id: span_id.to_vec(),
            parent_span_id: call.parent.map(|p| p.to_vec()).unwrap_or_default(),
            flags: 0x101,
            name: call.name.into(),
            kind: call.kind as i32,
            start_time_unix_nano: call.start_ns,
            end_time_unix_nano: call.start_ns + duration,
            attributes: call.attributes,
            ..Span::default()
        };
        if call.error {
            span.status = Some(Status {
                message: "payment provider unavailable".into(),
                code: status::StatusCode::Error as i32,
            });
            span.events.push(Event {
                time_unix_nano: call.start_ns + duration - 1,
                name: "exception".into(),
                attributes: vec![
                    text("exception.type", "UnavailableError"),
                    text(
                        "exception.message",
                        "upstream connect error or disconnect/reset before headers",
                    ),
                ],
                dropped_attributes_count: 0,
            });
        }
        let first_instance: usize = SERVICES[..call.service].iter().map(|s| s.1).sum();
        // Uneven load: the first instance of a service takes half of its traffic.
        let count = SERVICES[call.service].1;
        let instance = if self.rng.random_bool(0.5) {
            0
        } else {
            self.rng.random_range(0..count)
        };
        let _ = self.base_ns;
        self.spans[first_instance + instance].push(span);
        span_id
    }
}

fn http_client(method: &str, host: &str, path: &str, status: i64) -> Vec<KeyValue> {
    vec![
        text("http.request.method", method),
        text("url.full", &format!("http://{host}:8080{path}")),
        text("server.address", host),
        int("server.port", 8080),
        int("http.response.status_code", status),
    ]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_have_unique_ids_and_intact_trees() {
        let template = Template::new(200, 7, 1_795_000_000_000_000_000);
        assert!(template.spans >= 200);
        let decode =
            |salt| ExportTraceServiceRequest::decode(template.instantiate(salt, 1_000)).unwrap();
        let spans = |request: &ExportTraceServiceRequest| -> Vec<Span> {
            request
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| s.spans.clone())
                .collect()
        };
        let (a, b) = (spans(&decode(1)), spans(&decode(2)));
        assert_eq!(a.len(), template.spans);
        let ids_a: std::collections::HashSet<_> = a.iter().map(|s| s.span_id.clone()).collect();
        assert_eq!(ids_a.len(), a.len(), "span ids unique within a request");
        assert!(
            b.iter().all(|s| !ids_a.contains(&s.span_id)),
            "and across sends"
        );
        for span in a.iter().filter(|s| !s.parent_span_id.is_empty()) {
            let parent = a.iter().find(|p| p.span_id == span.parent_span_id);
            assert!(parent.is_some(), "every parent is in the request");
            assert_eq!(parent.unwrap().trace_id, span.trace_id);
        }
        let original = Template::new(200, 7, 1_795_000_000_000_000_000);
        let first = spans(&ExportTraceServiceRequest::decode(&original.bytes[..]).unwrap());
        assert_eq!(
            a[0].start_time_unix_nano,
            first[0].start_time_unix_nano + 1_000
        );
    }
}
