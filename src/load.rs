//! `callwatch load`: a load generator that sends the demo platform's steady traffic (or that
//! of a generated platform of `--services` services) over OTLP/gRPC as fast as the
//! collector takes it (or at `--rate`).
//!
//! Requests are generated and encoded once. Each send copies one and patches it in place:
//! every trace id and span id is XORed with a per-send salt (parent and link references get
//! the same salt, so trees stay intact) and every timestamp is moved to now. The collector
//! thus receives unique, current spans at the cost of a memcpy, not of protobuf encoding.
//! Over OTLP/HTTP (`--protocol`) the same requests go as protobuf or as JSON text, patched
//! alike.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::transport::Endpoint;

use crate::config::{LoadArgs, LoadProtocol};
use crate::demo::{BreakerConfig, Scenario, Simulator, SimulatorConfig};
use crate::split::Collectors;
use callwatch_collector::OtlpClient;

/// Distinct pre-encoded requests to cycle through.
const TEMPLATES: usize = 16;
/// Most request latencies kept for percentiles.
const MAX_SAMPLES: usize = 1_000_000;

pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    anyhow::ensure!(args.batch > 0, "--batch must be at least 1");
    if let Some(log) = &args.resend {
        anyhow::ensure!(
            args.protocol == LoadProtocol::Grpc,
            "--resend sends over gRPC only"
        );
        return resend(&args, log).await;
    }
    anyhow::ensure!(
        args.protocol == LoadProtocol::Grpc || args.send_to.len() == 1,
        "--protocol {:?} sends to one collector: give one --send-to",
        args.protocol
    );
    let backdate = u64::try_from(args.backdate.as_nanos()).unwrap_or(u64::MAX);
    // Templates start early enough that moving a request back by up to `backdate` never
    // needs a negative shift.
    let base_ns = now_ns().saturating_sub(backdate);
    let traffic = Traffic {
        base_ns,
        seed: args.seed,
        batch: args.batch,
        services: args.services.unwrap_or(0),
    };
    let templates = Arc::new(traffic.templates());
    let mut endpoints = Vec::with_capacity(args.send_to.len());
    for url in &args.send_to {
        let endpoint = Endpoint::from_shared(url.clone())
            .with_context(|| format!("{url:?} is not a gRPC endpoint URL"))?
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(30));
        endpoints.push((url, endpoint));
    }
    let token = args.token.read()?;
    let logs = Logs {
        acked_ids: args.acked_ids.as_deref().map(Log::create).transpose()?,
        sent: args.sent_log.as_deref().map(Log::create).transpose()?,
    };
    if let Some(sent) = &logs.sent {
        sent.line(&traffic.header());
    }
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut workers = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let client = match args.protocol {
            LoadProtocol::Grpc => {
                let mut clients = Vec::with_capacity(endpoints.len());
                for (url, endpoint) in &endpoints {
                    let channel = endpoint
                        .connect()
                        .await
                        .with_context(|| format!("connecting to {url}"))?;
                    let mut client = OtlpClient::new(channel);
                    if let Some(token) = &token {
                        client = client.with_token(token).map_err(anyhow::Error::msg)?;
                    }
                    clients.push(client);
                }
                Sender::Grpc(Collectors::new(clients))
            }
            protocol => Sender::Http {
                // Each connection its own client, so each has its own connection.
                client: reqwest::Client::builder()
                    .timeout(Duration::from_secs(30))
                    .tcp_nodelay(true)
                    .build()?,
                url: format!("{}/v1/traces", args.send_to[0].trim_end_matches('/')),
                json: protocol == LoadProtocol::HttpJson,
                token: token.clone(),
            },
        };
        let (templates, counters, logs) = (templates.clone(), counters.clone(), logs.clone());
        // Each connection sends its share of --rate spans per second, or sends back to back.
        let pace = args
            .rate
            .map(|rate| (rate as f64 / args.connections as f64).max(1.0));
        workers.push(tokio::spawn(send_until(
            client, templates, counters, deadline, base_ns, pace, backdate, logs,
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
    for log in [&logs.acked_ids, &logs.sent].into_iter().flatten() {
        log.flush()?;
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

/// What regenerates the requests of a run: its templates' start, seed, size and platform
/// (0: the demo's).
struct Traffic {
    base_ns: u64,
    seed: u64,
    batch: usize,
    services: usize,
}

impl Traffic {
    fn templates(&self) -> Vec<Template> {
        (0..TEMPLATES as u64)
            .map(|i| {
                let seed = self.seed.wrapping_add(i);
                let request = match self.services {
                    0 => demo_traffic(self.batch, seed, self.base_ns),
                    services => crate::platform::traffic(services, self.batch, seed, self.base_ns),
                };
                Template::new(request)
            })
            .collect()
    }

    /// The first line of a --sent-log.
    fn header(&self) -> String {
        format!(
            "base_ns={} seed={} batch={} services={}",
            self.base_ns, self.seed, self.batch, self.services
        )
    }

    fn parse_header(line: &str) -> anyhow::Result<Self> {
        let field = |name: &str| -> anyhow::Result<u64> {
            line.split_whitespace()
                .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
                .and_then(|value| value.parse().ok())
                .with_context(|| format!("the sent log's first line has no {name}: {line:?}"))
        };
        Ok(Self {
            base_ns: field("base_ns")?,
            seed: field("seed")?,
            batch: field("batch")? as usize,
            services: field("services")? as usize,
        })
    }
}

/// A file of lines that every connection writes to.
#[derive(Clone)]
struct Log(Arc<Mutex<std::io::BufWriter<std::fs::File>>>);

impl Log {
    fn create(path: &std::path::Path) -> anyhow::Result<Self> {
        let file =
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(Arc::new(Mutex::new(std::io::BufWriter::new(file)))))
    }

    fn lines(&self, lines: impl Iterator<Item = String>) {
        let mut file = self.0.lock().expect("not poisoned");
        for line in lines {
            if let Err(error) = writeln!(file, "{line}") {
                eprintln!("writing a log of the load failed: {error}");
                return;
            }
        }
    }

    fn line(&self, line: &str) {
        self.lines(std::iter::once(line.to_string()));
    }

    fn flush(&self) -> anyhow::Result<()> {
        self.0
            .lock()
            .expect("not poisoned")
            .flush()
            .context("writing a log of the load")
    }
}

/// The logs a run writes, if asked.
#[derive(Clone, Default)]
struct Logs {
    acked_ids: Option<Log>,
    sent: Option<Log>,
}

/// Sends the requests of a --sent-log again, one at a time, with their ids and timestamps.
async fn resend(args: &LoadArgs, path: &std::path::Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines();
    let traffic = Traffic::parse_header(lines.next().unwrap_or(""))?;
    let templates = traffic.templates();
    let mut client = Collectors::connect(&args.send_to, &args.token).await?;
    let (mut requests, mut spans) = (0u64, 0u64);
    for line in lines {
        let mut fields = line.split_whitespace();
        let (Some(n), Some(shift)) = (fields.next(), fields.next()) else {
            continue;
        };
        let n: u64 = n.parse().with_context(|| format!("line {line:?}"))?;
        let shift: u64 = shift.parse().with_context(|| format!("line {line:?}"))?;
        let template = &templates[(n % templates.len() as u64) as usize];
        client
            .export_bytes(template.instantiate(splitmix(n + 1), shift))
            .await
            .map_err(|status| {
                anyhow::anyhow!("request {n}: {} {}", status.code(), status.message())
            })?;
        requests += 1;
        spans += template.spans as u64;
    }
    println!(
        "{}",
        serde_json::json!({ "requests": requests, "spans": spans })
    );
    Ok(())
}

/// Sends requests back to back until `deadline`; returns request latencies in microseconds.
#[allow(clippy::too_many_arguments)]
async fn send_until(
    mut client: Sender,
    templates: Arc<Vec<Template>>,
    counters: Arc<Counters>,
    deadline: Instant,
    base_ns: u64,
    spans_per_sec: Option<f64>,
    backdate_ns: u64,
    logs: Logs,
) -> Vec<u32> {
    let mut next_send = tokio::time::Instant::now();
    let mut latencies = Vec::new();
    while Instant::now() < deadline {
        let n = counters.next.fetch_add(1, Ordering::Relaxed);
        let template = &templates[(n % templates.len() as u64) as usize];
        if let Some(rate) = spans_per_sec {
            // Requests differ in size: pace by spans, not by requests.
            tokio::time::sleep_until(next_send).await;
            next_send += Duration::from_secs_f64(template.spans as f64 / rate);
        }
        // Salt 0 would resend the template's own ids.
        let backdate_ns = match backdate_ns {
            0 => 0,
            spread => splitmix(n) % spread,
        };
        let shift_ns = now_ns().saturating_sub(base_ns).saturating_sub(backdate_ns);
        let salt = splitmix(n + 1);
        let sent = Instant::now();
        let result = client.send(template, salt, shift_ns).await;
        let elapsed = sent.elapsed();
        match result {
            Ok(rejected) => {
                let rejected = rejected.max(0) as u64;
                let spans = template.spans as u64;
                if let (Some(log), 0) = (&logs.acked_ids, rejected) {
                    log.lines(template.span_ids(salt));
                }
                if let Some(log) = &logs.sent {
                    let outcome = if rejected == 0 { "acked" } else { "partial" };
                    log.line(&format!("{n} {shift_ns} {outcome}"));
                }
                counters
                    .accepted
                    .fetch_add(spans.saturating_sub(rejected), Ordering::Relaxed);
                counters.rejected.fetch_add(rejected, Ordering::Relaxed);
                if latencies.len() < MAX_SAMPLES {
                    latencies.push(elapsed.as_micros().min(u128::from(u32::MAX)) as u32);
                }
            }
            Err(error) => {
                if let Some(log) = &logs.sent {
                    // The first span id tells whether the server stored it all the same.
                    let first = template.span_ids(salt).next().unwrap_or_default();
                    log.line(&format!("{n} {shift_ns} failed {first}"));
                }
                counters
                    .rejected
                    .fetch_add(template.spans as u64, Ordering::Relaxed);
                let errors = counters.errors.fetch_add(1, Ordering::Relaxed);
                if errors < 5 {
                    eprintln!("export failed: {error}");
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

/// Where a connection sends.
enum Sender {
    Grpc(Collectors),
    Http {
        client: reqwest::Client,
        url: String,
        json: bool,
        token: Option<String>,
    },
}

impl Sender {
    /// Sends `template` made unique with `salt` and moved by `shift_ns`; how many of its
    /// spans the collector rejected.
    async fn send(&mut self, template: &Template, salt: u64, shift_ns: u64) -> Result<i64, String> {
        let (client, url, json, token) = match self {
            Self::Grpc(collectors) => {
                return collectors
                    .export_bytes(template.instantiate(salt, shift_ns))
                    .await
                    .map_err(|status| format!("{} {}", status.code(), status.message()));
            }
            Self::Http {
                client,
                url,
                json,
                token,
            } => (client, url, *json, token),
        };
        let (body, content_type) = match json {
            true => (
                template.json.instantiate(salt, shift_ns),
                "application/json",
            ),
            false => (
                template.instantiate(salt, shift_ns),
                "application/x-protobuf",
            ),
        };
        let mut request = client
            .post(url.as_str())
            .header("content-type", content_type)
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status} {}", String::from_utf8_lossy(&body)));
        }
        let rejected = match json {
            true => serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|reply| {
                    let rejected = &reply["partialSuccess"]["rejectedSpans"];
                    rejected
                        .as_i64()
                        .or_else(|| rejected.as_str()?.parse().ok())
                }),
            false => ExportTraceServiceResponse::decode(body)
                .ok()
                .and_then(|reply| reply.partial_success)
                .map(|partial| partial.rejected_spans),
        };
        Ok(rejected.unwrap_or(0))
    }
}

/// One encoded request and where its ids and timestamps sit in the bytes.
struct Template {
    bytes: Vec<u8>,
    /// The same request as OTLP/JSON.
    json: JsonTemplate,
    spans: usize,
    /// Offsets of the first 8 bytes of every trace id (span and link).
    trace_ids: Vec<usize>,
    /// Offsets of every span id (span, parent and link).
    span_ids: Vec<usize>,
    /// Offsets of every timestamp (span start and end, event time).
    times: Vec<usize>,
    /// Each span's own id, as the little-endian number patched in place.
    own_span_ids: Vec<u64>,
}

#[derive(Clone, Copy, PartialEq)]
enum Field {
    TraceId,
    SpanId,
    Time,
}

impl Template {
    fn new(request: ExportTraceServiceRequest) -> Self {
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
        let own_span_ids = request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|span| u64::from_le_bytes(eight(&span.span_id)))
            .collect();
        let bytes = request.encode_to_vec();
        let mut template = Self {
            json: JsonTemplate::new(&request, &fields),
            own_span_ids,
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

    /// The span ids of the request [`Template::instantiate`] makes with `salt`, in hex.
    fn span_ids(&self, salt: u64) -> impl Iterator<Item = String> + '_ {
        let span_salt = splitmix(salt);
        self.own_span_ids.iter().map(move |id| {
            (id ^ span_salt)
                .to_le_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        })
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

/// A request as OTLP/JSON text, and where the ids and times that its protobuf template
/// patches sit in it, so that both send the same spans.
struct JsonTemplate {
    text: Vec<u8>,
    /// Where each value's first character is, in text order.
    values: Vec<(usize, Field)>,
}

impl JsonTemplate {
    fn new(request: &ExportTraceServiceRequest, fields: &HashMap<[u8; 8], Field>) -> Self {
        let text = callwatch_collector::encode_json_request(request).into_bytes();
        // Keys are written without spaces, and a string value cannot hold them unescaped.
        let keys = [
            ("\"traceId\":\"", Field::TraceId),
            ("\"spanId\":\"", Field::SpanId),
            ("\"parentSpanId\":\"", Field::SpanId),
            ("\"startTimeUnixNano\":\"", Field::Time),
            ("\"endTimeUnixNano\":\"", Field::Time),
            ("\"timeUnixNano\":\"", Field::Time),
        ];
        let mut values = Vec::new();
        for (key, field) in keys {
            let key = key.as_bytes();
            for at in (0..text.len()).filter(|&at| text[at..].starts_with(key)) {
                let value = at + key.len();
                // Ids as the protobuf template finds them: the first 8 bytes of the id of a
                // span of the request.
                let known = match field {
                    Field::Time => true,
                    _ => {
                        eight_hex(&text[value..]).is_some_and(|id| fields.get(&id) == Some(&field))
                    }
                };
                if known {
                    values.push((value, field));
                }
            }
        }
        values.sort_unstable_by_key(|(at, _)| *at);
        Self { text, values }
    }

    fn instantiate(&self, salt: u64, shift_ns: u64) -> Bytes {
        let span_salt = splitmix(salt);
        let mut out = Vec::with_capacity(self.text.len() + 64);
        let mut copied = 0;
        for &(at, field) in &self.values {
            out.extend_from_slice(&self.text[copied..at]);
            match field {
                Field::Time => {
                    let digits = self.text[at..]
                        .iter()
                        .take_while(|b| b.is_ascii_digit())
                        .count();
                    let time: u64 = std::str::from_utf8(&self.text[at..at + digits])
                        .ok()
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(0);
                    let _ = write!(out, "{}", time.saturating_add(shift_ns));
                    copied = at + digits;
                }
                id => {
                    let salt = if id == Field::TraceId {
                        salt
                    } else {
                        span_salt
                    };
                    let bytes = eight_hex(&self.text[at..]).unwrap_or_default();
                    let patched = (u64::from_le_bytes(bytes) ^ salt).to_le_bytes();
                    for byte in patched {
                        let _ = write!(out, "{byte:02x}");
                    }
                    copied = at + 16;
                }
            }
        }
        out.extend_from_slice(&self.text[copied..]);
        Bytes::from(out)
    }
}

/// The 8 bytes the first 16 hex digits of `text` spell.
fn eight_hex(text: &[u8]) -> Option<[u8; 8]> {
    let digits = text.get(..16)?;
    let mut bytes = [0; 8];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(bytes)
}

/// At least `batch` spans of the demo platform's steady traffic, in one request.
fn demo_traffic(batch: usize, seed: u64, base_ns: u64) -> ExportTraceServiceRequest {
    const CHECKOUTS_PER_SEC: f64 = 1000.0;
    let mut simulator = Simulator::new(SimulatorConfig {
        seed,
        start_ns: base_ns,
        scenario: Scenario::Steady,
        scenario_ns: 600_000_000_000,
        checkouts_per_sec: CHECKOUTS_PER_SEC,
        breaker: BreakerConfig::DEMO,
    });
    // A checkout is about fifteen spans.
    let step = (batch as f64 / 15.0 / CHECKOUTS_PER_SEC * 1e9) as u64 + 1;
    let mut request = ExportTraceServiceRequest::default();
    let mut until = base_ns;
    while callwatch_collector::count_spans(&request) < batch {
        until += step;
        if let Some(more) = simulator.advance(until) {
            request.resource_spans.extend(more.resource_spans);
        }
    }
    request
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::trace::v1::Span;

    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn instances_have_unique_ids_and_intact_trees() {
        let template = Template::new(demo_traffic(200, 7, 1_795_000_000_000_000_000));
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
        let ids: Vec<String> = a.iter().map(|s| hex(&s.span_id)).collect();
        assert_eq!(template.span_ids(1).collect::<Vec<_>>(), ids);
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
        let original = Template::new(demo_traffic(200, 7, 1_795_000_000_000_000_000));
        let first = spans(&ExportTraceServiceRequest::decode(&original.bytes[..]).unwrap());
        assert_eq!(
            a[0].start_time_unix_nano,
            first[0].start_time_unix_nano + 1_000
        );
    }
}
