//! What the simulator knows it sent: the right answer for graphs, counts and breakers.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::breaker::{BreakerConfig, BreakerState, Transition};
use super::scenario::Scenario;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    Service,
    Database,
    External,
    User,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallType {
    Sync,
    Async,
}

/// One edge of the graph: calls from `source` to `target`; an async edge names its topic
/// or queue.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EdgeKey {
    pub source: &'static str,
    pub target: &'static str,
    pub call_type: CallType,
    pub destination: Option<&'static str>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    calls: u64,
    errors: u64,
}

/// The ground truth, filled in as the simulation runs.
#[derive(Debug)]
pub struct Truth {
    nodes: BTreeMap<&'static str, NodeKind>,
    edges: BTreeMap<EdgeKey, Counts>,
    pub spans: u64,
    pub traces: u64,
}

impl Truth {
    pub fn new() -> Self {
        Self {
            nodes: BTreeMap::new(),
            edges: BTreeMap::new(),
            spans: 0,
            traces: 0,
        }
    }

    /// Counts one call on an edge whose server is a node of `target_kind`.
    pub fn call(&mut self, edge: EdgeKey, target_kind: NodeKind, failed: bool) {
        let source_kind = if edge.source == "user" {
            NodeKind::User
        } else {
            NodeKind::Service
        };
        self.nodes.insert(edge.source, source_kind);
        self.nodes.insert(edge.target, target_kind);
        let counts = self.edges.entry(edge).or_default();
        counts.calls += 1;
        counts.errors += u64::from(failed);
    }
}

pub struct Summary<'a> {
    pub seed: u64,
    pub scenario: Scenario,
    pub start_ns: u64,
    pub end_ns: u64,
    pub checkouts_per_sec: f64,
    pub truth: &'a Truth,
    pub breaker_config: &'a BreakerConfig,
    pub transitions: &'a [Transition],
    pub rejected_calls: u64,
}

fn rfc3339(ns: u64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(ns as i64).to_rfc3339_opts(SecondsFormat::Nanos, true)
}

#[derive(Serialize)]
struct NodeOut {
    id: &'static str,
    kind: NodeKind,
}

#[derive(Serialize)]
struct EdgeOut {
    source: &'static str,
    target: &'static str,
    call_type: CallType,
    #[serde(skip_serializing_if = "Option::is_none")]
    destination: Option<&'static str>,
    calls: u64,
    errors: u64,
}

#[derive(Serialize)]
struct TransitionOut {
    at: String,
    from: BreakerState,
    to: BreakerState,
}

#[derive(Serialize)]
struct BreakerOut<'a> {
    client: &'static str,
    server: &'static str,
    config: &'a BreakerConfig,
    transitions: Vec<TransitionOut>,
    rejected_calls: u64,
}

#[derive(Serialize)]
struct IncidentOut {
    name: &'static str,
    from: String,
    to: String,
}

#[derive(Serialize)]
struct TruthOut<'a> {
    seed: u64,
    scenario: Scenario,
    start: String,
    end: String,
    checkouts_per_sec: f64,
    traces: u64,
    spans: u64,
    nodes: Vec<NodeOut>,
    edges: Vec<EdgeOut>,
    breakers: Vec<BreakerOut<'a>>,
    incidents: Vec<IncidentOut>,
}

impl Summary<'_> {
    /// The ground truth as pretty JSON, the same bytes for the same run.
    pub fn to_json(&self) -> String {
        let length = (self.end_ns - self.start_ns) as f64;
        let at = |fraction: f64| rfc3339(self.start_ns + (length * fraction) as u64);
        let out = TruthOut {
            seed: self.seed,
            scenario: self.scenario,
            start: rfc3339(self.start_ns),
            end: rfc3339(self.end_ns),
            checkouts_per_sec: self.checkouts_per_sec,
            traces: self.truth.traces,
            spans: self.truth.spans,
            nodes: self
                .truth
                .nodes
                .iter()
                .map(|(id, kind)| NodeOut { id, kind: *kind })
                .collect(),
            edges: self
                .truth
                .edges
                .iter()
                .map(|(key, counts)| EdgeOut {
                    source: key.source,
                    target: key.target,
                    call_type: key.call_type,
                    destination: key.destination,
                    calls: counts.calls,
                    errors: counts.errors,
                })
                .collect(),
            breakers: vec![BreakerOut {
                client: "order-service",
                server: "payment-service",
                config: self.breaker_config,
                transitions: self
                    .transitions
                    .iter()
                    .map(|t| TransitionOut {
                        at: rfc3339(t.at_ns),
                        from: t.from,
                        to: t.to,
                    })
                    .collect(),
                rejected_calls: self.rejected_calls,
            }],
            incidents: self
                .scenario
                .incidents()
                .iter()
                .map(|i| IncidentOut {
                    name: i.name,
                    from: at(i.from),
                    to: at(i.to),
                })
                .collect(),
        };
        let mut json = serde_json::to_string_pretty(&out).expect("truth serializes");
        json.push('\n');
        json
    }
}
