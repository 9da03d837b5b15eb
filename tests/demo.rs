//! The demo platform: recordings are reproducible to the byte, replays store exactly what a
//! recording holds, the breaker's ground truth follows the breaker's rules, and the demo
//! feeds a collector live, embedded or over the network.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::requests::hex;
use crate::common::samples::{attribute, recorded_spans, samples};
use crate::common::{Server, callwatch};
use opentelemetry_proto::tonic::trace::v1::Span;

fn truth(file: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(file.with_extension("truth.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn recordings_are_byte_identical_to_the_committed_samples() {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/sample-data/record.sh"
        ))
        .arg(dir.path())
        .env("CALLWATCH", env!("CARGO_BIN_EXE_callwatch"))
        .status()
        .unwrap();
    assert!(status.success());
    for sample in samples() {
        for file in [sample.clone(), sample.with_extension("truth.json")] {
            let name = file.file_name().unwrap();
            let again = std::fs::read(dir.path().join(name)).unwrap();
            assert!(
                std::fs::read(&file).unwrap() == again,
                "{name:?} differs when recorded again"
            );
        }
    }
    // Another seed is another day in the shop.
    let other = dir.path().join("other.jsonl");
    callwatch(&[
        "demo",
        "--record",
        other.to_str().unwrap(),
        "--scenario",
        "steady",
        "--duration",
        "20s",
        "--rate",
        "3",
        "--seed",
        "9",
    ]);
    assert!(
        std::fs::read(&other).unwrap() != std::fs::read(dir.path().join("steady.jsonl")).unwrap()
    );
}

#[test]
fn the_ground_truth_counts_what_the_recording_holds() {
    for sample in samples() {
        let spans = recorded_spans(&sample);
        let truth = truth(&sample);
        assert_eq!(truth["spans"], spans.len(), "{sample:?}");
        let traces: HashSet<&Vec<u8>> = spans.iter().map(|(_, s)| &s.trace_id).collect();
        assert_eq!(truth["traces"], traces.len());
        // Spot checks of edges against the spans themselves.
        let edge = |source: &str, target: &str| {
            truth["edges"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["source"] == source && e["target"] == target)
                .unwrap_or_else(|| panic!("no edge {source} -> {target}"))
                .clone()
        };
        let roots = spans
            .iter()
            .filter(|(svc, s)| svc == "web-frontend" && s.parent_span_id.is_empty())
            .count();
        assert_eq!(edge("user", "web-frontend")["calls"], roots);
        let charges = spans
            .iter()
            .filter(|(svc, s)| {
                svc == "order-service" && s.name == "payments.v1.PaymentService/Charge"
            })
            .count();
        assert_eq!(edge("order-service", "payment-service")["calls"], charges);
        let linked: usize = spans
            .iter()
            .filter(|(svc, _)| svc == "notification-service")
            .map(|(_, s)| s.links.len())
            .sum();
        assert_eq!(
            edge("order-service", "notification-service")["calls"],
            linked
        );
        assert_eq!(
            edge("order-service", "notification-service")["destination"],
            "notifications"
        );
        let fraud = edge("order-service", "fraud-check");
        assert_eq!(fraud["calls"], charges, "one fraud check per order");
        let kinds: HashMap<String, String> = truth["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["id"].as_str().unwrap().into(),
                    n["kind"].as_str().unwrap().into(),
                )
            })
            .collect();
        assert_eq!(kinds["fraud-check"], "external");
        assert_eq!(kinds["orders"], "database");
        assert_eq!(kinds["user-cache"], "database");
        assert_eq!(kinds["user"], "user");
    }
}

/// resilience4j's count-based rules, written again from its documentation: the transitions
/// that the charges recorded in a file must produce.
fn breaker_transitions(charges: &[&Span], config: &serde_json::Value) -> Vec<(u64, String)> {
    let window_size = config["sliding_window_size"].as_u64().unwrap() as usize;
    let minimum = config["minimum_number_of_calls"].as_u64().unwrap() as usize;
    let failure_threshold = config["failure_rate_threshold"].as_f64().unwrap();
    let slow_threshold = config["slow_call_rate_threshold"].as_f64().unwrap();
    let slow_ns = config["slow_call_duration_threshold_ms"].as_u64().unwrap() * 1_000_000;
    let wait_ns = config["wait_duration_in_open_state_ms"].as_u64().unwrap() * 1_000_000;
    let trials = config["permitted_number_of_calls_in_half_open_state"]
        .as_u64()
        .unwrap() as usize;
    let over = |outcomes: &[(bool, bool)]| {
        let n = outcomes.len() as f64;
        let failed = outcomes.iter().filter(|o| o.0).count() as f64;
        let slow = outcomes.iter().filter(|o| o.1).count() as f64;
        failed * 100.0 / n >= failure_threshold || slow * 100.0 / n >= slow_threshold
    };
    let (mut state, mut opened_at) = ("closed", 0);
    let mut window: VecDeque<(bool, bool)> = VecDeque::new();
    let mut trial_outcomes = Vec::new();
    let mut transitions = Vec::new();
    for charge in charges {
        let at = charge.start_time_unix_nano;
        if state == "open" && at >= opened_at + wait_ns {
            state = "half_open";
            trial_outcomes.clear();
            transitions.push((at, state.to_string()));
        }
        let rejected = attribute(charge, "error.type") == Some("CallNotPermittedException");
        assert_eq!(
            attribute(charge, "circuit_breaker.state"),
            Some(state),
            "reported state at {at}"
        );
        let permitted =
            state == "closed" || (state == "half_open" && trial_outcomes.len() < trials);
        assert_eq!(rejected, !permitted, "rejection at {at}");
        if !permitted {
            continue;
        }
        let failed = charge.status.as_ref().is_some_and(|s| s.code == 2);
        let slow = charge.end_time_unix_nano - charge.start_time_unix_nano >= slow_ns;
        if state == "closed" {
            if window.len() == window_size {
                window.pop_front();
            }
            window.push_back((failed, slow));
            if window.len() >= minimum.min(window_size) && over(window.make_contiguous()) {
                (state, opened_at) = ("open", at);
                window.clear();
                transitions.push((at, state.to_string()));
            }
        } else {
            trial_outcomes.push((failed, slow));
            if trial_outcomes.len() == trials {
                state = if over(&trial_outcomes) {
                    "open"
                } else {
                    "closed"
                };
                opened_at = at;
                window.clear();
                transitions.push((at, state.to_string()));
            }
        }
    }
    transitions
}

fn ns(rfc3339: &str) -> u64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_nanos_opt()
        .unwrap() as u64
}

#[test]
fn the_breaker_ground_truth_follows_the_breaker_rules() {
    let mut opened_somewhere = false;
    for sample in samples() {
        let spans = recorded_spans(&sample);
        let mut charges: Vec<&Span> = spans
            .iter()
            .filter(|(svc, s)| {
                svc == "order-service"
                    && s.name == "payments.v1.PaymentService/Charge"
                    && s.kind == 3
            })
            .map(|(_, s)| s)
            .collect();
        charges.sort_by_key(|s| s.start_time_unix_nano);
        let truth = truth(&sample);
        let breaker = &truth["breakers"][0];
        let expected: Vec<(u64, String)> = breaker["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    ns(t["at"].as_str().unwrap()),
                    t["to"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            breaker_transitions(&charges, &breaker["config"]),
            expected,
            "{sample:?}"
        );
        let rejected = charges
            .iter()
            .filter(|s| attribute(s, "error.type") == Some("CallNotPermittedException"))
            .count();
        assert_eq!(breaker["rejected_calls"], rejected);
        if let Some((first_open, _)) = expected.first() {
            opened_somewhere = true;
            let failing = truth["incidents"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| i["name"] == "payment-service failing")
                .unwrap();
            assert!(
                *first_open >= ns(failing["from"].as_str().unwrap()),
                "opens during the outage"
            );
            assert_eq!(expected.last().unwrap().1, "closed", "and closes after it");
        }
    }
    assert!(opened_somewhere, "some sample shows the breaker incident");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_each_sample_stores_exactly_its_spans() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let mut sent: HashMap<String, (PathBuf, u64)> = HashMap::new();
    for sample in samples() {
        let out = server.replay(&sample);
        assert!(out.contains(" 0 rejected"), "{out}");
        for (_, span) in recorded_spans(&sample) {
            let previous = sent.insert(
                hex(&span.span_id),
                (sample.clone(), span.start_time_unix_nano),
            );
            assert!(previous.is_none(), "span ids are unique across samples");
        }
    }
    server.stop();
    let (stored, _) = crate::common::stored_spans(&data).await;
    assert_eq!(stored.len(), sent.len(), "every span once, nothing else");
    let mut shifts: HashMap<PathBuf, i64> = HashMap::new();
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap();
    for span in &stored {
        let (file, recorded_start) = &sent[&span.span_id];
        let shift = span.start_ns - *recorded_start as i64;
        // One shift per file: the recording moved as a whole, its first span to about now.
        assert_eq!(
            *shifts.entry(file.clone()).or_insert(shift),
            shift,
            "{file:?}"
        );
    }
    for (file, shift) in shifts {
        let first = recorded_spans(&file)
            .iter()
            .map(|(_, s)| s.start_time_unix_nano)
            .min()
            .unwrap();
        let moved_to = first as i64 + shift;
        assert!(
            (now - moved_to).abs() < 120_000_000_000,
            "{file:?} starts near now"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_feeds_a_collector_live_with_timestamps_at_now() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let truth = dir.path().join("live.truth.json");
    let before = chrono::Utc::now().timestamp_nanos_opt().unwrap();
    let out = callwatch(&[
        "demo",
        "--send-to",
        &server.grpc_url(),
        "--duration",
        "3s",
        "--rate",
        "20",
        "--truth",
        truth.to_str().unwrap(),
    ]);
    assert!(out.contains("(0 failed requests)"), "{out}");
    server.stop();
    let (stored, _) = crate::common::stored_spans(&data).await;
    let truth: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(truth).unwrap()).unwrap();
    assert_eq!(truth["spans"], stored.len());
    assert!(stored.len() > 100, "about sixty checkouts of fifteen spans");
    assert!(stored.iter().all(|s| s.start_ns >= before - 1_000_000_000));
    let services: HashSet<&str> = stored.iter().map(|s| s.service_name.as_str()).collect();
    assert_eq!(services.len(), 7, "{services:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_demo_serves_its_own_traffic_and_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let demo = Server::start_command("demo", &data, &["--rate", "30"]);
    let mut accepted = 0.0;
    for _ in 0..100 {
        accepted = crate::common::metric(&demo, "callwatch_spans_accepted_total").await;
        if accepted > 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(accepted > 0.0, "the demo's traffic reaches its own server");
    demo.stop();
    let (stored, hot) = crate::common::stored_spans(&data).await;
    assert_eq!(hot, 0);
    assert!(stored.len() as f64 >= accepted);
}
