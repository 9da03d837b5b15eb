//! `callwatch replay FILE --send-to URL`: sends a recording (OTLP/JSON, one export request
//! per line) to a collector, moving its timestamps so that its earliest span starts now.

use anyhow::Context;
use callwatch_collector::{count_spans, decode_json_request};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::config::ReplayArgs;
use crate::split::Collectors;

pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let mut requests = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let request = decode_json_request(line.as_bytes())
            .map_err(|error| anyhow::anyhow!("{}:{}: {error}", args.file.display(), index + 1))?;
        requests.push(request);
    }
    let earliest = requests
        .iter()
        .flat_map(spans)
        .map(|s| s.start_time_unix_nano)
        .min();
    let Some(earliest) = earliest else {
        println!("{} holds no spans", args.file.display());
        return Ok(());
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64;
    let shift = now.saturating_sub(earliest);

    let mut collectors = Collectors::connect(&args.send_to, &args.token).await?;
    let (mut sent, mut rejected) = (0, 0);
    for (index, mut request) in requests.into_iter().enumerate() {
        rebase(&mut request, shift);
        sent += count_spans(&request);
        rejected += collectors.export(&request).await.map_err(|status| {
            anyhow::anyhow!(
                "request {} refused: {} {}",
                index + 1,
                status.code(),
                status.message()
            )
        })?;
    }
    println!(
        "replayed {sent} spans from {} to {}: {} accepted, {rejected} rejected",
        args.file.display(),
        args.send_to.join(", "),
        sent as i64 - rejected
    );
    Ok(())
}

fn spans(request: &ExportTraceServiceRequest) -> impl Iterator<Item = &Span> {
    request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
}

/// Moves every time in `request` later by `shift_ns`.
fn rebase(request: &mut ExportTraceServiceRequest, shift_ns: u64) {
    for span in request
        .resource_spans
        .iter_mut()
        .flat_map(|r| &mut r.scope_spans)
        .flat_map(|s| &mut s.spans)
    {
        span.start_time_unix_nano = span.start_time_unix_nano.saturating_add(shift_ns);
        span.end_time_unix_nano = span.end_time_unix_nano.saturating_add(shift_ns);
        for event in &mut span.events {
            event.time_unix_nano = event.time_unix_nano.saturating_add(shift_ns);
        }
    }
}
