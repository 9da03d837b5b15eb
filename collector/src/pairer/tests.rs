use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use super::*;
use crate::convert::{Limits, convert};

const NOW: i64 = 1_795_000_000_000_000_000;

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..KeyValue::default()
    }
}

fn span(
    trace: u8,
    id: u8,
    parent: Option<u8>,
    kind: SpanKind,
    attributes: &[(&str, &str)],
) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: format!("span {id}"),
        kind: kind as i32,
        start_time_unix_nano: NOW as u64 + u64::from(id) * 1_000,
        end_time_unix_nano: NOW as u64 + 5_000_000 - u64::from(id) * 1_000,
        attributes: attributes.iter().map(|(k, v)| string(k, v)).collect(),
        ..Span::default()
    }
}

/// One checkout: a user calls the frontend, which calls orders twice (the second a retry);
/// orders writes to postgres and publishes an event that inventory and billing read;
/// shipping answers a message nobody sent.
fn checkout(trace: u8) -> Vec<(&'static str, Span)> {
    use SpanKind::{Client, Consumer, Producer, Server};
    let route = [
        ("http.request.method", "POST"),
        ("http.route", "/v1/orders"),
    ];
    let client = [("peer.service", "orders")];
    // A retry is the same call again: same name, same parent.
    let mut retry = span(trace, 3, Some(1), Client, &client);
    retry.name = "span 2".into();
    vec![
        ("frontend", span(trace, 1, None, Server, &[])),
        ("frontend", span(trace, 2, Some(1), Client, &client)),
        ("frontend", retry),
        ("orders", span(trace, 4, Some(2), Server, &route)),
        ("orders", span(trace, 5, Some(3), Server, &route)),
        (
            "orders",
            span(trace, 6, Some(4), Client, &[("db.system", "postgresql")]),
        ),
        (
            "orders",
            span(
                trace,
                7,
                Some(4),
                Producer,
                &[("messaging.destination.name", "order-events")],
            ),
        ),
        ("inventory", span(trace, 8, Some(7), Consumer, &[])),
        ("billing", span(trace, 9, Some(7), Consumer, &[])),
        ("shipping", span(trace, 10, Some(99), Consumer, &[])),
    ]
}

fn batch(spans: &[(&str, Span)]) -> RecordBatch {
    let request = ExportTraceServiceRequest {
        resource_spans: spans
            .iter()
            .map(|(service, span)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![string("service.name", service)],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![span.clone()],
                    ..ScopeSpans::default()
                }],
                schema_url: String::new(),
            })
            .collect(),
    };
    let converted = convert(&request, NOW, &Limits::default()).expect("converts");
    converted.batch.expect("spans were accepted")
}

/// The calls the pairer derives from `batches`, after every half has waited its time, one
/// line per call, sorted; then what it counted.
fn derived(batches: &[RecordBatch]) -> Vec<String> {
    let config = PairingConfig::default();
    let wait = config.wait;
    let metrics = Arc::new(GraphMetrics::default());
    let mut pairer = Pairer::new(config, metrics.clone());
    let start = Instant::now();
    let mut calls = Vec::new();
    for batch in batches {
        pairer.spans(batch, start);
        calls.extend(pairer.take_calls());
    }
    pairer.expire(start + wait + Duration::from_secs(1));
    calls.extend(pairer.take_calls());
    call_lines(&calls, &metrics)
}

/// One line per call, sorted; then what `metrics` counted.
fn call_lines(calls: &[CallRow], metrics: &GraphMetrics) -> Vec<String> {
    let mut lines: Vec<String> = calls
        .iter()
        .map(|call| {
            format!(
                "{} -> {} ({}, {}) {} retry={} spans={:?}/{:?}",
                call.client,
                call.server,
                call.call_type.as_str(),
                call.server_kind.as_str(),
                call.operation.as_deref().unwrap_or("-"),
                call.retry,
                call.client_span_id,
                call.server_span_id,
            )
        })
        .collect();
    lines.sort();
    lines.push(format!(
        "paired={} virtual={} database={} unpaired client={} server={} unconsumed={}",
        metrics.calls_paired.get(),
        metrics.calls_virtual.get(),
        metrics.calls_database.get(),
        metrics.unpaired_client.get(),
        metrics.unpaired_server.get(),
        metrics.unconsumed.get(),
    ));
    lines
}

#[test]
fn halves_pair_alike_in_one_batch_and_across_batches() {
    let spans = checkout(1);
    let together = derived(&[batch(&spans)]);
    let one_by_one: Vec<RecordBatch> = spans
        .iter()
        .map(|s| batch(std::slice::from_ref(s)))
        .collect();
    // Servers and consumers wait for their clients and producers.
    let (starters, answers): (Vec<_>, Vec<_>) = spans
        .iter()
        .partition(|(_, span)| [SpanKind::Client, SpanKind::Producer].contains(&span.kind()));
    let answers_first: Vec<RecordBatch> = answers
        .into_iter()
        .chain(starters)
        .map(|s| batch(std::slice::from_ref(s)))
        .collect();
    let mut reversed = spans.clone();
    reversed.reverse();

    let id = |n: u64| n * 0x0101_0101_0101_0101;
    let expected = vec![
        format!(
            "frontend -> orders (sync, service) POST /v1/orders retry=false spans=Some({})/Some({})",
            id(2),
            id(4)
        ),
        format!(
            "frontend -> orders (sync, service) POST /v1/orders retry=true spans=Some({})/Some({})",
            id(3),
            id(5)
        ),
        format!(
            "orders -> billing (async, service) order-events retry=false spans=Some({})/Some({})",
            id(7),
            id(9)
        ),
        format!(
            "orders -> inventory (async, service) order-events retry=false spans=Some({})/Some({})",
            id(7),
            id(8)
        ),
        format!(
            "orders -> postgresql (sync, database) span 6 retry=false spans=Some({})/None",
            id(6)
        ),
        format!(
            "user -> frontend (sync, service) span 1 retry=false spans=None/Some({})",
            id(1)
        ),
        // Shipping's parent never came.
        "paired=4 virtual=1 database=1 unpaired client=0 server=1 unconsumed=0".to_string(),
    ];
    assert_eq!(together, expected);
    assert_eq!(derived(&one_by_one), expected);
    assert_eq!(derived(&answers_first), expected);
    // Answers before their starters within one batch; the clients come in the other order
    // too, so the retry is the other one.
    assert_eq!(derived(&[batch(&reversed)]), {
        let mut swapped = expected.clone();
        swapped[0] = swapped[0].replace("retry=false", "retry=true");
        swapped[1] = swapped[1].replace("retry=true", "retry=false");
        swapped[..2].sort();
        swapped
    });
}

#[test]
fn waiting_halves_keep_their_names_when_the_names_are_renumbered() {
    let spans = checkout(1);
    let (starters, answers): (Vec<_>, Vec<_>) = (spans.iter().cloned())
        .partition(|(_, span)| [SpanKind::Client, SpanKind::Producer].contains(&span.kind()));
    let config = PairingConfig::default();
    let wait = config.wait;
    let metrics = Arc::new(GraphMetrics::default());
    let mut pairer = Pairer::new(config, metrics.clone());
    let (start, second) = (Instant::now(), Duration::from_secs(1));
    pairer.spans(&batch(&answers), start + second);
    let mut calls = pairer.take_calls();
    let held = pairer.names.len();
    // Names no waiting half holds any more fill the table.
    for n in 0..200_000 {
        pairer.names.get(&format!("gone-{n}"));
    }
    assert!(pairer.names.is_full());
    // Nothing has waited its time yet: expiry only renumbers.
    pairer.expire_before(start, start + second);
    assert!(
        pairer.names.len() <= held,
        "{} names kept",
        pairer.names.len()
    );
    assert!(!pairer.names.is_full());
    pairer.spans(&batch(&starters), start + second);
    pairer.expire(start + 2 * second + wait);
    calls.extend(pairer.take_calls());
    assert_eq!(call_lines(&calls, &metrics), derived(&[batch(&spans)]));
}

#[test]
fn waiting_halves_are_counted_in_the_memory_the_pairer_reports() {
    let metrics = Arc::new(GraphMetrics::default());
    let config = PairingConfig::default();
    let wait = config.wait;
    let mut pairer = Pairer::new(config, metrics);
    let start = Instant::now();
    let empty = pairer.memory_bytes();
    // Client halves whose servers never answer: each waits.
    let clients: Vec<(&str, Span)> = (1..=200u8)
        .map(|id| {
            let client = span(id, 1, None, SpanKind::Client, &[("peer.service", "orders")]);
            ("frontend", client)
        })
        .collect();
    pairer.spans(&batch(&clients), start);
    let waiting = pairer.memory_bytes();
    assert!(
        waiting >= empty + 200 * std::mem::size_of::<Half>(),
        "{empty} → {waiting}"
    );
    // Server halves whose clients have not come: each waits under its client's key, in a
    // list that holds it and no spare room (a list grown by a push would hold four).
    let servers: Vec<(&str, Span)> = (1..=200u8)
        .map(|trace| ("orders", span(trace, 2, Some(9), SpanKind::Server, &[])))
        .collect();
    pairer.spans(&batch(&servers), start);
    assert_eq!(pairer.answer_count, 200);
    assert!(pairer.answers.values().all(|a| a.capacity() == 1));
    let answering = pairer.memory_bytes();
    assert!(
        answering >= waiting + 200 * std::mem::size_of::<Half>(),
        "{waiting} → {answering}"
    );
    let waiting = answering;
    pairer.expire(start + wait + Duration::from_secs(1));
    assert!(pairer.memory_bytes() < waiting, "expired halves are let go");
}

/// The client span ids of the calls `pairer` derived since it was last asked.
fn called_from(pairer: &mut Pairer) -> Vec<u64> {
    let mut ids: Vec<u64> = pairer
        .take_calls()
        .iter()
        .filter_map(|call| call.client_span_id)
        .collect();
    ids.sort_unstable();
    ids
}

/// A client of `orders` whose server never answers, in trace `trace`.
fn lone_client(trace: u8) -> RecordBatch {
    let client = span(
        trace,
        1,
        None,
        SpanKind::Client,
        &[("peer.service", "orders")],
    );
    batch(&[("frontend", client)])
}

const SPAN_1: u64 = 0x0101_0101_0101_0101;

#[test]
fn at_the_bound_the_longest_waiting_halves_are_settled_early() {
    let metrics = Arc::new(GraphMetrics::default());
    let config = PairingConfig {
        max_pending: 3,
        ..PairingConfig::default()
    };
    let wait = config.wait;
    let mut pairer = Pairer::new(config, metrics.clone());
    let start = Instant::now();
    for trace in 1..=5u8 {
        pairer.spans(
            &lone_client(trace),
            start + Duration::from_secs(trace.into()),
        );
    }
    // The first two made room for the last two: they are calls now, not lost.
    assert_eq!(called_from(&mut pairer), vec![SPAN_1, SPAN_1]);
    assert_eq!(metrics.dropped.get(), 2);
    assert_eq!(metrics.pending(), 3);
    pairer.expire(start + Duration::from_secs(5) + wait);
    assert_eq!(called_from(&mut pairer).len(), 3);
    assert_eq!(metrics.calls_virtual.get(), 5);
}

#[test]
fn restored_halves_wait_what_they_had_left_but_at_least_half_a_wait() {
    let config = PairingConfig::default();
    let wait = config.wait;
    let mut before_crash = Pairer::new(config.clone(), Arc::new(GraphMetrics::default()));
    let now = Instant::now();
    let long_ago = now
        .checked_sub(6 * wait)
        .expect("the machine is up for a minute");
    before_crash.spans(&lone_client(1), long_ago);
    before_crash.spans(&lone_client(2), now);
    let mut saved = Saved::default();
    saved.take(before_crash.pending());

    let metrics = Arc::new(GraphMetrics::default());
    let mut restarted = Pairer::new(config, metrics.clone());
    saved.restore(&mut restarted);
    let restored = Instant::now();
    // The half that had waited long enough gets half a wait more; the other its whole wait.
    restarted.expire(restored + wait / 2 + Duration::from_millis(100));
    assert_eq!(metrics.calls_virtual.get(), 1);
    restarted.expire(restored + wait + Duration::from_millis(100));
    assert_eq!(metrics.calls_virtual.get(), 2);
    assert_eq!(metrics.pending(), 0);
}

/// What the store keeps of the waiting halves: every part written, and the last index.
#[derive(Default)]
struct Saved {
    parts: std::collections::BTreeMap<u64, Vec<u8>>,
    index: Vec<u8>,
    named: Vec<u64>,
    /// The halves of each part taken.
    halves_written: Vec<usize>,
}

impl Saved {
    fn take(&mut self, state: PendingState) {
        if let Some((id, bytes)) = state.new_part {
            let mut names = crate::halves::Names::default();
            let part = crate::pending::decode(&bytes, &mut names).unwrap();
            self.halves_written
                .push(part.starters.len() + part.answers.len());
            assert!(self.parts.insert(id, bytes).is_none(), "part {id} twice");
        }
        self.index = state.index;
        self.named = state.parts;
    }

    fn restore(&self, pairer: &mut Pairer) {
        let parts: Vec<(u64, Vec<u8>)> = (self.named.iter())
            .map(|id| (*id, self.parts[id].clone()))
            .collect();
        pairer.restore(&self.index, &parts).unwrap();
    }
}

/// A server of `orders` answering the lone client of trace `trace`.
fn its_server(trace: u8) -> RecordBatch {
    batch(&[("orders", span(trace, 2, Some(1), SpanKind::Server, &[]))])
}

#[test]
fn each_waiting_half_is_written_once_and_a_restart_finds_those_still_waiting() {
    let config = PairingConfig::default();
    let wait = config.wait;
    let mut pairer = Pairer::new(config.clone(), Arc::new(GraphMetrics::default()));
    let mut saved = Saved::default();
    let now = Instant::now();
    pairer.spans(&lone_client(1), now);
    pairer.spans(&lone_client(2), now);
    saved.take(pairer.pending());
    // Nothing new: no part, the same index.
    saved.take(pairer.pending());
    assert_eq!(saved.halves_written, vec![2]);
    // One of them pairs, a third client comes, and a server waits for a client to come.
    pairer.spans(&its_server(1), now);
    pairer.spans(&lone_client(3), now);
    pairer.spans(&its_server(4), now);
    saved.take(pairer.pending());
    assert_eq!(saved.halves_written, vec![2, 2], "each half once");
    assert_eq!(saved.named.len(), 2);

    let metrics = Arc::new(GraphMetrics::default());
    let mut restarted = Pairer::new(config.clone(), metrics.clone());
    saved.restore(&mut restarted);
    assert_eq!(
        metrics.pending(),
        3,
        "clients 2 and 3 and the server of trace 4"
    );
    restarted.expire(Instant::now() + wait + Duration::from_millis(100));
    assert_eq!(
        metrics.calls_virtual.get(),
        2,
        "the paired client is not back"
    );
    assert_eq!(metrics.unpaired_server.get(), 1);

    // Once every half is gone, the index names no part.
    pairer.expire(now + wait + Duration::from_millis(100));
    saved.take(pairer.pending());
    assert!(saved.named.is_empty());
    let mut empty = Pairer::new(config, metrics.clone());
    saved.restore(&mut empty);
    assert_eq!(metrics.pending(), 0);
}

#[test]
fn a_saved_producer_that_meets_a_consumer_is_saved_again_as_read() {
    let config = PairingConfig::default();
    let wait = config.wait;
    let mut pairer = Pairer::new(config.clone(), Arc::new(GraphMetrics::default()));
    let mut saved = Saved::default();
    let now = Instant::now();
    pairer.spans(&batch(&[message(1, "order-events")]), now);
    saved.take(pairer.pending());
    let consumer = span(1, 8, Some(7), SpanKind::Consumer, &[]);
    pairer.spans(&batch(&[("inventory", consumer)]), now);
    saved.take(pairer.pending());
    assert_eq!(saved.halves_written, vec![1, 1]);
    assert_eq!(
        saved.named,
        vec![1],
        "the first part holds nothing still waiting"
    );

    let metrics = Arc::new(GraphMetrics::default());
    let mut restarted = Pairer::new(config, metrics.clone());
    saved.restore(&mut restarted);
    assert_eq!(metrics.pending(), 1, "it may have other groups to come");
    restarted.expire(Instant::now() + wait + Duration::from_millis(100));
    // Read once: not a message to a broker nobody read.
    assert_eq!(metrics.calls_virtual.get(), 0);
    assert_eq!(metrics.pending(), 0);
}

#[test]
fn a_whole_file_of_halves_from_before_parts_is_restored_and_saved_anew() {
    let config = PairingConfig::default();
    let wait = config.wait;
    let mut pairer = Pairer::new(config.clone(), Arc::new(GraphMetrics::default()));
    let now = Instant::now();
    pairer.spans(&lone_client(1), now);
    pairer.spans(&its_server(2), now);
    // A part is written as whole files were.
    let (_, whole) = pairer.pending().new_part.unwrap();

    let metrics = Arc::new(GraphMetrics::default());
    let mut restarted = Pairer::new(config, metrics.clone());
    restarted.restore(&whole, &[]).unwrap();
    assert_eq!(metrics.pending(), 2);
    let mut saved = Saved::default();
    saved.take(restarted.pending());
    assert_eq!(saved.halves_written, vec![2], "saved in the next part");
    restarted.expire(Instant::now() + wait + Duration::from_millis(100));
    assert_eq!(metrics.calls_virtual.get(), 1);
    assert_eq!(metrics.unpaired_server.get(), 1);
}

#[test]
fn an_index_naming_a_part_not_given_is_an_error() {
    let mut pairer = Pairer::new(PairingConfig::default(), Arc::new(GraphMetrics::default()));
    pairer.spans(&lone_client(1), Instant::now());
    let state = pairer.pending();
    let mut restarted = Pairer::new(PairingConfig::default(), Arc::new(GraphMetrics::default()));
    let error = restarted.restore(&state.index, &[]).unwrap_err();
    assert!(error.contains("part 0"), "{error}");
}

/// A batch consumer of `notifications`, in trace `trace`, reading the messages of `messages`.
fn batch_consumer(trace: u8, messages: &[u8]) -> (&'static str, Span) {
    use opentelemetry_proto::tonic::trace::v1::span::Link;
    let attributes = [("messaging.destination.name", "notifications")];
    let mut consumer = span(trace, 20, None, SpanKind::Consumer, &attributes);
    consumer.links = messages
        .iter()
        .map(|message| Link {
            trace_id: vec![*message; 16],
            span_id: vec![7; 8],
            ..Link::default()
        })
        .collect();
    ("mailer", consumer)
}

/// A message of trace `trace` to `destination`.
fn message(trace: u8, destination: &str) -> (&'static str, Span) {
    let attributes = [("messaging.destination.name", destination)];
    (
        "orders",
        span(trace, 7, None, SpanKind::Producer, &attributes),
    )
}

/// The calls, one line each, sorted.
fn lines(calls: &[CallRow]) -> Vec<String> {
    let mut lines: Vec<String> = calls.iter().map(|call| format!("{call:?}")).collect();
    lines.sort();
    lines
}

#[test]
fn a_batch_consumers_halves_left_alone_are_paired_by_the_collector_holding_the_message() {
    let wait = Duration::from_secs(10);
    let shared = PairingConfig {
        remote_wait: Some(wait),
        ..PairingConfig::default()
    };
    let start = Instant::now();
    // Routed by trace id: trace 2's message went to the second collector, with a batch
    // consumer of its own; the first also has a message nobody reads in batches.
    let first_spans = [
        message(1, "notifications"),
        batch_consumer(3, &[1, 2]),
        message(5, "order-events"),
    ];
    let second_spans = [message(2, "notifications"), batch_consumer(4, &[2])];
    let (first_metrics, second_metrics) = (Arc::default(), Arc::default());
    let mut first = Pairer::new(shared.clone(), Arc::clone(&first_metrics));
    let mut second = Pairer::new(shared, Arc::clone(&second_metrics));
    first.spans(&batch(&first_spans), start);
    second.spans(&batch(&second_spans), start);
    let mut calls: Vec<CallRow> = Vec::new();
    first.expire(start + wait + Duration::from_secs(1));
    second.expire(start + wait + Duration::from_secs(1));
    calls.extend(first.take_calls());
    calls.extend(second.take_calls());
    // A producer no batch consumer reads is settled at its wait, not held.
    assert!(
        lines(&calls)
            .iter()
            .any(|call| call.contains("order-events"))
    );
    // A consumer of message 2 past its wait is no call, as with one collector.
    let late = [("mailer", span(2, 30, Some(7), SpanKind::Consumer, &[]))];
    let late_at = start + wait + Duration::from_secs(2);
    second.spans(&batch(&late), late_at);
    let orphans = first.take_orphans();
    assert!(!orphans.is_empty());
    assert!(first.take_orphans().is_empty(), "taken once");
    // Every collector is offered them; only the one holding the message pairs.
    first.remote_answers(&orphans, start).unwrap();
    second.remote_answers(&orphans, start).unwrap();
    let after_all = start + 2 * wait + Duration::from_secs(2);
    first.expire(after_all);
    second.expire(after_all);
    calls.extend(first.take_calls());
    calls.extend(second.take_calls());

    // One collector that received everything derives the same calls.
    let mut alone = Pairer::new(PairingConfig::default(), Arc::default());
    let all: Vec<_> = first_spans.iter().chain(&second_spans).cloned().collect();
    alone.spans(&batch(&all), start);
    alone.expire(start + wait + Duration::from_secs(1));
    alone.spans(&batch(&late), late_at);
    alone.expire(after_all);
    let expected = alone.take_calls();
    assert_eq!(lines(&calls), lines(&expected));
    assert_eq!(lines(&calls).len(), 4);
    let metrics: [&GraphMetrics; 2] = [&first_metrics, &second_metrics];
    assert_eq!(metrics.map(|m| m.orphans_written.get()), [1, 0]);
    assert_eq!(metrics.map(|m| m.calls_paired_remote.get()), [0, 1]);
    assert_eq!(
        metrics.map(|m| m.unconsumed.get() + m.unpaired_server.get()),
        [0, 1],
        "the late consumer"
    );
}

/// A message of trace `trace` to `order-events` and the consumers of `groups` reading it.
fn read_message(trace: u8, groups: &[&'static str]) -> RecordBatch {
    let mut spans = vec![message(trace, "order-events")];
    for (index, group) in groups.iter().enumerate() {
        let consumer = span(trace, 30 + index as u8, Some(7), SpanKind::Consumer, &[]);
        spans.push((group, consumer));
    }
    batch(&spans)
}

#[test]
fn a_message_every_known_group_read_stops_waiting_once_the_groups_are_settled() {
    let metrics = Arc::new(GraphMetrics::default());
    let config = PairingConfig::default();
    let wait = config.wait;
    let mut pairer = Pairer::new(config, metrics.clone());
    let start = Instant::now();
    // While the groups are new, a message read by both waits for a third.
    pairer.spans(&read_message(1, &["inventory", "billing"]), start);
    assert_eq!(metrics.pending(), 1);
    // A whole wait later with no new group: one read by both is done at once; one read by
    // one of them waits for the other.
    let later = start + wait + Duration::from_secs(1);
    pairer.spans(&read_message(2, &["inventory", "billing"]), later);
    pairer.spans(&read_message(3, &["billing"]), later);
    assert_eq!(metrics.pending(), 2, "the first message and the third");
    // The other group reads the third: it is done too.
    let inventory = span(3, 40, Some(7), SpanKind::Consumer, &[]);
    pairer.spans(&batch(&[("inventory", inventory)]), later);
    assert_eq!(metrics.pending(), 1);
    // A new group: messages wait again for a whole wait.
    pairer.spans(&read_message(4, &["inventory", "billing", "audit"]), later);
    assert_eq!(metrics.pending(), 2);
    pairer.expire(later + wait + Duration::from_secs(1));
    assert_eq!(metrics.pending(), 0);
    // Every read is a call, and no message was taken for unread.
    assert_eq!(metrics.calls_paired.get(), 2 + 2 + 2 + 3);
    assert_eq!(metrics.calls_virtual.get(), 0);
    assert_eq!(metrics.unpaired_server.get(), 0);
}

#[test]
fn without_checkpoints_the_keys_of_halves_to_save_do_not_outgrow_the_halves_waiting() {
    let config = PairingConfig::default();
    let wait = config.wait;
    let metrics = Arc::new(GraphMetrics::default());
    let mut pairer = Pairer::new(config, metrics.clone());
    let start = Instant::now();
    for round in 0..40u32 {
        let now = start + wait * round;
        for trace in 1..=255u8 {
            pairer.spans(&lone_client(trace), now);
        }
        pairer.expire(now);
    }
    assert_eq!(metrics.pending(), 255);
    assert!(
        pairer.unsaved.len() <= 2 * 255 + 4096,
        "{}",
        pairer.unsaved.len()
    );
    // What is kept is still saved by the next checkpoint.
    let (_, part) = pairer.pending().new_part.expect("a part");
    let part = crate::pending::decode(&part, &mut crate::halves::Names::default()).unwrap();
    assert_eq!(part.starters.len(), 255);
}

#[test]
fn a_calls_status_is_its_http_status_else_its_grpc_code_else_its_error_type() {
    use SpanKind::{Client, Server};
    // (the client's attributes, the server's, the status expected), each twice: the
    // second call finds the text made for the first.
    type Attributes<'a> = &'a [(&'a str, &'a str)];
    let cases: [(Attributes, Attributes, Option<&str>); 7] = [
        (&[("http.response.status_code", "200")], &[], Some("200")),
        (
            &[("http.response.status_code", "502")],
            &[("http.response.status_code", "503")],
            Some("503"),
        ),
        (&[("http.status_code", "70000")], &[], Some("70000")),
        (&[("rpc.grpc.status_code", "14")], &[], Some("UNAVAILABLE")),
        (&[], &[("rpc.grpc.status_code", "0")], Some("OK")),
        (&[("rpc.grpc.status_code", "99")], &[], Some("UNKNOWN")),
        (
            &[("error.type", "java.net.SocketTimeoutException")],
            &[],
            None,
        ),
    ];
    let mut pairer = Pairer::new(PairingConfig::default(), Arc::new(GraphMetrics::default()));
    let now = Instant::now();
    let mut trace = 0;
    for (client, server, expected) in cases {
        for _ in 0..2 {
            trace += 1;
            pairer.spans(
                &batch(&[
                    ("a", span(trace, 1, None, Client, client)),
                    ("b", span(trace, 2, Some(1), Server, server)),
                ]),
                now,
            );
            let calls = pairer.take_calls();
            assert_eq!(calls.len(), 1);
            let expected = expected.or(client.first().map(|(_, value)| *value));
            assert_eq!(
                calls[0].status.as_deref(),
                expected,
                "{client:?} {server:?}"
            );
        }
    }
}
