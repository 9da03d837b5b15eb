//! `callwatch demo`: the simulated shop, sending to an embedded server, to another
//! collector (`--send-to`), or recorded to a file in virtual time (`--record`).

mod breaker;
mod scenario;
mod simulator;
mod truth;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use callwatch_collector::{count_spans, encode_json_request};
use tokio_util::sync::CancellationToken;

pub use breaker::BreakerConfig;
use callwatch_query::breakers::BreakerOverrides;
pub use scenario::Scenario;
pub use simulator::{Simulator, SimulatorConfig};

use crate::config::DemoArgs;
use crate::split::Collectors;
use callwatch_collector::OtlpClient;

/// Live traffic is emitted and sent once per this interval, as an SDK's batch exporter does.
const TICK: Duration = Duration::from_secs(1);
const DEFAULT_RECORDING: Duration = Duration::from_secs(60);
const DEFAULT_TIMELINE: Duration = Duration::from_secs(600);

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    if let Some(file) = &args.record {
        return record(&args, file);
    }
    if !args.send_to.is_empty() {
        let collectors = Collectors::connect(&args.send_to, &Default::default()).await?;
        println!(
            "callwatch demo: sending the simulated shop's traces to {}",
            args.send_to.join(", ")
        );
        return feed(collectors, &args, CancellationToken::new()).await;
    }
    anyhow::ensure!(
        args.serve.role == crate::config::Role::All,
        "the demo's embedded server does everything: --role all"
    );
    // The embedded server infers the order-service breaker with the settings it has.
    let mut config = crate::serve::config_file(&args.serve)?;
    let rule = BreakerConfig::DEMO.overrides("order-service", "payment-service");
    let configured =
        |edge: &BreakerOverrides| edge.client == rule.client && edge.server == rule.server;
    if !config.breakers.edge.iter().any(configured) {
        config.breakers.edge.push(rule);
    }
    let server = crate::serve::start_with(&args.serve, config).await?;
    // 0.0.0.0 is where we listen, not where a browser should go.
    let address = if server.http.ip().is_unspecified() {
        format!("localhost:{}", server.http.port())
    } else {
        server.http.to_string()
    };
    crate::serve::announce(&format!(
        "callwatch demo: the simulated shop sends its traces to the embedded server; \
         the dashboard (service map, breakers, traces, SQL) is at http://{address}/ and \
         Prometheus metrics at http://{address}/metrics. Stop with Ctrl-C."
    ));
    let grpc = server
        .grpc
        .context("the embedded server has no OTLP listener")?;
    let client = OtlpClient::connect(&format!("http://{grpc}"))
        .await
        .context("connecting to the embedded server")?;
    let client = Collectors::new(vec![client]);
    let stop = server.shutdown_token();
    let feeding = tokio::spawn({
        let stop = stop.clone();
        async move {
            if let Err(error) = feed(client, &args, stop).await {
                tracing::error!(%error, "the demo stopped sending");
            }
        }
    });
    server.run_until_signal().await?;
    feeding.await?;
    Ok(())
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn simulator(args: &DemoArgs, start_ns: u64, timeline: Duration) -> Simulator {
    Simulator::new(SimulatorConfig {
        seed: args.seed,
        start_ns,
        scenario: args.scenario,
        scenario_ns: timeline.as_nanos() as u64,
        checkouts_per_sec: args.rate,
        breaker: BreakerConfig::DEMO,
    })
}

/// Sends live traffic, timestamps at now, until `--duration` passes or `stop` fires.
async fn feed(
    mut client: Collectors,
    args: &DemoArgs,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let start_ns = now_ns();
    let mut simulator = simulator(
        args,
        start_ns,
        args.scenario_length.unwrap_or(DEFAULT_TIMELINE),
    );
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut ticks = tokio::time::interval(TICK);
    let (mut sent, mut failures) = (0usize, 0usize);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let done = deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
        if let Some(request) = simulator.advance(now_ns()) {
            let spans = count_spans(&request);
            match client.export(&request).await {
                Ok(rejected) => sent += spans - rejected.clamp(0, spans as i64) as usize,
                Err(status) => {
                    failures += 1;
                    tracing::warn!(code = ?status.code(), message = status.message(), "export failed");
                }
            }
        }
        if done {
            break;
        }
    }
    crate::serve::announce(&format!(
        "callwatch demo: sent {sent} spans ({failures} failed requests)"
    ));
    if let Some(path) = &args.truth {
        write_truth(path, &simulator.truth_json(now_ns()))?;
    }
    Ok(())
}

/// Writes the traffic of `--duration` in virtual time, starting at `--start`, as OTLP/JSON
/// lines (one export request per simulated second), and its ground truth beside it.
fn record(args: &DemoArgs, file: &Path) -> anyhow::Result<()> {
    let start = chrono::DateTime::parse_from_rfc3339(&args.start)
        .with_context(|| format!("--start {:?} is not an RFC 3339 time", args.start))?;
    let start_ns = start
        .timestamp_nanos_opt()
        .and_then(|ns| u64::try_from(ns).ok())
        .context("--start is out of range")?;
    let duration = args.duration.unwrap_or(DEFAULT_RECORDING);
    let end_ns = start_ns + duration.as_nanos() as u64;
    let mut simulator = simulator(args, start_ns, args.scenario_length.unwrap_or(duration));
    let out =
        std::fs::File::create(file).with_context(|| format!("creating {}", file.display()))?;
    let mut out = std::io::BufWriter::new(out);
    let (mut requests, mut spans) = (0, 0);
    let mut until = start_ns;
    while until < end_ns {
        until = (until + TICK.as_nanos() as u64).min(end_ns);
        if let Some(request) = simulator.advance(until) {
            writeln!(out, "{}", encode_json_request(&request))?;
            requests += 1;
            spans += count_spans(&request);
        }
    }
    out.flush()?;
    let truth = args.truth.clone().unwrap_or_else(|| truth_path(file));
    write_truth(&truth, &simulator.truth_json(end_ns))?;
    println!(
        "recorded {spans} spans in {requests} requests to {}; ground truth in {}",
        file.display(),
        truth.display()
    );
    Ok(())
}

/// `shop.jsonl` → `shop.truth.json`.
pub fn truth_path(file: &Path) -> PathBuf {
    file.with_extension("truth.json")
}

fn write_truth(path: &Path, json: &str) -> anyhow::Result<()> {
    std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
}
