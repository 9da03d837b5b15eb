//! The service dependency graph of a window: calls read from the `calls` table, grouped per
//! edge, node, operation, instance and API version, and the questions asked of it (upstream,
//! downstream, blast radius, cycles) answered with petgraph.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use callwatch_storage::{CallRow, CallType, Interner, NodeKind, call_rows, schema};
use datafusion::common::ScalarValue;
use datafusion::prelude::{col, lit};
use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Bfs, Reversed};
use serde::Serialize;

use crate::breaker::BreakerState;
use crate::breakers::{BreakerTracker, BreakerView};
use crate::engine::QueryEngine;
use crate::error::QueryError;
use crate::rollup::Rollup;
use crate::stats::{Accumulator, Health, HealthThresholds, Summary};

/// [from, to) in nanoseconds since the epoch.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub from_ns: i64,
    pub to_ns: i64,
}

impl Window {
    pub fn seconds(&self) -> f64 {
        (self.to_ns - self.from_ns).max(0) as f64 / 1e9
    }
}

/// Every call whose client started in the window. Only the columns the statistics need are
/// read, so ids are not decoded.
pub async fn calls_in(engine: &QueryEngine, window: Window) -> Result<Vec<CallRow>, QueryError> {
    calls_where(engine, window, None).await
}

/// Which calls a page breaks down: those into a service, or those of one edge.
#[derive(Debug, Clone)]
pub enum CallsOf {
    Service(String),
    Edge { source: String, target: String },
}

impl CallsOf {
    fn predicate(&self) -> datafusion::prelude::Expr {
        match self {
            Self::Service(name) => col(schema::SERVER).eq(lit(name.as_str())),
            Self::Edge { source, target } => col(schema::CLIENT)
                .eq(lit(source.as_str()))
                .and(col(schema::SERVER).eq(lit(target.as_str()))),
        }
    }
}

/// The calls of the window that `predicate` (if any) keeps, filtered where they are read.
async fn calls_where(
    engine: &QueryEngine,
    window: Window,
    predicate: Option<datafusion::prelude::Expr>,
) -> Result<Vec<CallRow>, QueryError> {
    let context = engine.context()?;
    let time = |ns: i64| {
        lit(ScalarValue::TimestampNanosecond(
            Some(ns),
            Some("UTC".into()),
        ))
    };
    let frame = context
        .table(schema::CALLS_TABLE)
        .await?
        .filter({
            let within = col(schema::START_TIME)
                .gt_eq(time(window.from_ns))
                .and(col(schema::START_TIME).lt(time(window.to_ns)));
            match predicate {
                Some(predicate) => within.and(predicate),
                None => within,
            }
        })?
        .select_columns(&[
            schema::START_TIME,
            schema::CLIENT,
            schema::SERVER,
            schema::CALL_TYPE,
            schema::SERVER_KIND,
            schema::OPERATION,
            schema::DESTINATION,
            schema::CLIENT_INSTANCE,
            schema::SERVER_INSTANCE,
            schema::API_VERSION,
            schema::CLIENT_DURATION_NS,
            schema::SERVER_DURATION_NS,
            schema::QUEUE_NS,
            schema::FAILED,
            schema::STATUS,
            schema::RETRY,
            schema::TIMEOUT,
            schema::BREAKER_STATE,
        ])?;
    let mut names = Interner::default();
    let mut calls = Vec::new();
    engine
        .fold_batches(frame, |batch| {
            calls.extend(
                call_rows(batch, &mut names).map_err(|e| QueryError::Execution(e.to_string()))?,
            );
            Ok(())
        })
        .await?;
    Ok(calls)
}

#[derive(Debug, Clone, Serialize)]
pub struct Node {
    pub id: String,
    pub kind: &'static str,
    /// Calls into this node (for `user`, calls out of it).
    #[serde(flatten)]
    pub summary: Summary,
    /// Instances seen serving or making calls.
    pub instances: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Edge {
    pub source: String,
    pub target: String,
    pub call_type: &'static str,
    pub destination: Option<String>,
    pub server_kind: &'static str,
    #[serde(flatten)]
    pub summary: Summary,
    /// The client's circuit breaker on a sync edge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerView>,
}

/// A share of the calls of an edge or service.
#[derive(Debug, Clone, Serialize)]
pub struct Share {
    pub name: Option<String>,
    pub share: f64,
    #[serde(flatten)]
    pub summary: Summary,
}

/// Shares and how uneven they are: the largest share over the even share (1.0 = even).
#[derive(Debug, Clone, Serialize)]
pub struct Breakdown {
    pub skew: f64,
    pub items: Vec<Share>,
}

/// The graph of a window.
pub struct Graph {
    pub window: Window,
    pub thresholds: HealthThresholds,
    calls: Vec<CallRow>,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    graph: DiGraph<String, ()>,
    index: HashMap<String, NodeIndex>,
}

/// The statistics of the window's last minute, for the rate "now" beside the window's.
pub struct Recent {
    /// Where the last minute starts: a whole 10 s piece, so that stored pieces cover all of
    /// it but the seconds after the latest piece, which the window reads anyway.
    pub from_ns: i64,
    pub rollup: Rollup,
}

/// The width of the pieces the last minute is made of.
const RECENT_STEP_NS: i64 = 10_000_000_000;

impl Recent {
    /// Where the last minute of `window` starts: 50 to 60 s before its end.
    pub fn start(window: Window) -> i64 {
        let minute_ago = window.to_ns.saturating_sub(60_000_000_000);
        let aligned = minute_ago.div_euclid(RECENT_STEP_NS) * RECENT_STEP_NS;
        let aligned = if aligned < minute_ago {
            aligned.saturating_add(RECENT_STEP_NS)
        } else {
            aligned
        };
        aligned.clamp(window.from_ns, window.to_ns)
    }
}

/// The graph of a window from the rollup cache: whole pieces where they cover the window,
/// calls read one by one where they do not. Without calls of its own: for the graph's
/// nodes and edges, not for breakdowns.
pub async fn graph_of(
    engine: &QueryEngine,
    window: Window,
    thresholds: HealthThresholds,
) -> Result<Graph, QueryError> {
    let recent_from = Recent::start(window);
    let [(mut rollup, uncovered), (mut recent, recent_uncovered)] = engine
        .rollups()
        .rollups(
            engine.store(),
            [(window.from_ns, window.to_ns), (recent_from, window.to_ns)],
        )
        .await?;
    let mut read: Vec<(i64, i64)> = Vec::new();
    for (from_ns, to_ns) in uncovered {
        for call in calls_in(engine, Window { from_ns, to_ns }).await? {
            rollup.add(&call);
            if recent_uncovered
                .iter()
                .any(|(a, b)| (*a..*b).contains(&call.start_ns))
            {
                recent.add(&call);
            }
        }
        read.push((from_ns, to_ns));
    }
    // What the window did not read for itself (a window shorter than a piece).
    for (from_ns, to_ns) in recent_uncovered {
        if !read.iter().any(|(a, b)| *a <= from_ns && to_ns <= *b) {
            for call in calls_in(engine, Window { from_ns, to_ns }).await? {
                recent.add(&call);
            }
        }
    }
    let recent = Recent {
        from_ns: recent_from,
        rollup: recent,
    };
    let mut graph = Graph::build(rollup, recent, Vec::new(), window, thresholds);
    graph.attach_breakers(engine.breakers());
    Ok(graph)
}

/// The graph of a window from stored pieces, with the calls of one service or edge kept
/// for breakdowns (by operation, instance, version, status) and series. Only those calls
/// are read: the filter runs where the calls are stored.
pub async fn graph_with_calls(
    engine: &QueryEngine,
    window: Window,
    thresholds: HealthThresholds,
    of: &CallsOf,
) -> Result<Graph, QueryError> {
    let mut graph = graph_of(engine, window, thresholds).await?;
    graph.calls = calls_where(engine, window, Some(of.predicate())).await?;
    Ok(graph)
}

impl Graph {
    /// The graph of `rollup`, with `recent` its last minute; `calls` are kept for
    /// breakdowns and series.
    pub fn build(
        rollup: Rollup,
        recent: Recent,
        calls: Vec<CallRow>,
        window: Window,
        thresholds: HealthThresholds,
    ) -> Self {
        let mut recent_into: HashMap<&str, u64> = HashMap::new();
        for (key, stats) in &recent.rollup.edges {
            *recent_into.entry(&*key.target).or_default() += stats.calls.calls;
        }
        // The last minute's rate, counted from the first call if it is later.
        let recent_rate = |calls: u64, first_ns: Option<i64>| {
            calls as f64 / crate::stats::observed_seconds(first_ns, recent.from_ns, window.to_ns)
        };
        let mut inbound: BTreeMap<String, (NodeKind, Accumulator)> = BTreeMap::new();
        let mut instances: BTreeMap<String, BTreeSet<Arc<str>>> = BTreeMap::new();
        let mut edges: Vec<_> = rollup.edges.into_iter().collect();
        edges.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, stats) in &edges {
            inbound
                .entry(key.target.to_string())
                .or_insert_with(|| (stats.server_kind, Accumulator::default()))
                .1
                .merge(&stats.calls);
            let client_kind = if &*key.source == schema::USER_NODE {
                NodeKind::User
            } else {
                NodeKind::Service
            };
            inbound
                .entry(key.source.to_string())
                .or_insert_with(|| (client_kind, Accumulator::default()));
            instances
                .entry(key.source.to_string())
                .or_default()
                .extend(stats.client_instances.iter().cloned());
            instances
                .entry(key.target.to_string())
                .or_default()
                .extend(stats.server_instances.iter().cloned());
        }
        let mut graph = DiGraph::new();
        let mut index = HashMap::new();
        let nodes: Vec<Node> = inbound
            .into_iter()
            .map(|(id, (kind, accumulator))| {
                index.insert(id.clone(), graph.add_node(id.clone()));
                let seconds = accumulator.observed_seconds(window.from_ns, window.to_ns);
                let first_ns = accumulator.first_ns();
                let mut summary = accumulator.summary(seconds, &thresholds);
                summary.rate_last_minute_per_s = Some(recent_rate(
                    recent_into.get(id.as_str()).copied().unwrap_or(0),
                    first_ns,
                ));
                // A node nobody calls in the window (a client only, or `user`) is healthy
                // while it makes calls: idle is for nodes without traffic.
                if summary.calls == 0 {
                    summary.health = crate::stats::Health::Healthy;
                }
                Node {
                    instances: instances.get(&id).map_or(0, BTreeSet::len),
                    id,
                    kind: kind.as_str(),
                    summary,
                }
            })
            .collect();
        let edges: Vec<Edge> = edges
            .into_iter()
            .map(|(key, stats)| {
                graph.update_edge(index[&*key.source], index[&*key.target], ());
                Edge {
                    call_type: key.call_type.as_str(),
                    server_kind: stats.server_kind.as_str(),
                    summary: {
                        let seconds = stats.calls.observed_seconds(window.from_ns, window.to_ns);
                        let recent_calls =
                            recent.rollup.edges.get(&key).map_or(0, |r| r.calls.calls);
                        let first_ns = stats.calls.first_ns();
                        let mut summary = stats.calls.summary(seconds, &thresholds);
                        summary.rate_last_minute_per_s = Some(recent_rate(recent_calls, first_ns));
                        summary
                    },
                    source: key.source.to_string(),
                    target: key.target.to_string(),
                    destination: key.destination.as_deref().map(str::to_string),
                    breaker: None,
                }
            })
            .collect();
        Self {
            window,
            thresholds,
            calls,
            nodes,
            edges,
            graph,
            index,
        }
    }

    /// Puts each sync edge's breaker on it: an open breaker fails the edge, a half-open one
    /// degrades it.
    pub fn attach_breakers(&mut self, breakers: &BreakerTracker) {
        for edge in &mut self.edges {
            if edge.call_type != CallType::Sync.as_str() {
                continue;
            }
            edge.breaker = breakers.breaker(
                &edge.source,
                &edge.target,
                self.window.from_ns,
                self.window.to_ns,
            );
            let least = match edge.breaker.as_ref().map(|b| b.state) {
                Some(BreakerState::Open) => Health::Failing,
                Some(BreakerState::HalfOpen) => Health::Degraded,
                _ => continue,
            };
            edge.summary.health = edge.summary.health.max(least);
        }
    }

    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// Nodes that call `id` directly (`Incoming`) or that `id` calls (`Outgoing`).
    pub fn neighbours(&self, id: &str, direction: Direction) -> Vec<String> {
        let Some(&node) = self.index.get(id) else {
            return Vec::new();
        };
        let mut names: Vec<String> = self
            .graph
            .neighbors_directed(node, direction)
            .map(|n| self.graph[n].clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Every node `id` depends on, directly or not.
    pub fn downstream(&self, id: &str) -> Vec<String> {
        let Some(&start) = self.index.get(id) else {
            return Vec::new();
        };
        let mut bfs = Bfs::new(&self.graph, start);
        let mut found = BTreeSet::new();
        while let Some(node) = bfs.next(&self.graph) {
            if node != start {
                found.insert(self.graph[node].clone());
            }
        }
        found.into_iter().collect()
    }

    /// Every node that depends on `id`, directly or not: what fails when `id` fails unless
    /// a breaker or a fallback stops it (the blast radius).
    pub fn upstream(&self, id: &str) -> Vec<String> {
        let Some(&start) = self.index.get(id) else {
            return Vec::new();
        };
        let reversed = Reversed(&self.graph);
        let mut bfs = Bfs::new(reversed, start);
        let mut found = BTreeSet::new();
        while let Some(node) = bfs.next(reversed) {
            if node != start {
                found.insert(self.graph[node].clone());
            }
        }
        found.into_iter().collect()
    }

    /// Groups of nodes that call each other round in a circle (each sorted), and nodes that
    /// call themselves.
    pub fn cycles(&self) -> Vec<Vec<String>> {
        let mut cycles: Vec<Vec<String>> = petgraph::algo::tarjan_scc(&self.graph)
            .into_iter()
            .filter(|component| {
                component.len() > 1 || self.graph.find_edge(component[0], component[0]).is_some()
            })
            .map(|component| {
                let mut names: Vec<String> =
                    component.iter().map(|n| self.graph[*n].clone()).collect();
                names.sort();
                names
            })
            .collect();
        cycles.sort();
        cycles
    }

    /// Calls into `service`.
    pub fn inbound(&self, service: &str) -> impl Iterator<Item = &CallRow> {
        self.calls.iter().filter(move |c| &*c.server == service)
    }

    /// The calls of one edge.
    pub fn calls_of<'a>(&'a self, edge: &'a Edge) -> impl Iterator<Item = &'a CallRow> {
        self.calls.iter().filter(move |c| {
            *c.client == *edge.source
                && *c.server == *edge.target
                && c.call_type.as_str() == edge.call_type
                && (c.call_type == CallType::Sync
                    || c.destination.as_deref() == edge.destination.as_deref())
        })
    }

    /// Calls grouped by `key`, largest share first.
    pub fn breakdown<'a>(
        &self,
        calls: impl Iterator<Item = &'a CallRow>,
        key: impl Fn(&CallRow) -> Option<String>,
    ) -> Breakdown {
        let mut groups: BTreeMap<Option<String>, Accumulator> = BTreeMap::new();
        let mut total = 0;
        for call in calls {
            groups.entry(key(call)).or_default().add(call);
            total += 1;
        }
        let count = groups.len();
        let mut items: Vec<Share> = groups
            .into_iter()
            .map(|(name, accumulator)| {
                let share = if total == 0 {
                    0.0
                } else {
                    accumulator.calls as f64 / total as f64
                };
                Share {
                    name,
                    share,
                    summary: {
                        let seconds =
                            accumulator.observed_seconds(self.window.from_ns, self.window.to_ns);
                        accumulator.summary(seconds, &self.thresholds)
                    },
                }
            })
            .collect();
        items.sort_by(|a, b| b.share.total_cmp(&a.share).then(a.name.cmp(&b.name)));
        let skew = items.first().map_or(1.0, |top| top.share * count as f64);
        Breakdown { skew, items }
    }

    /// `calls` in consecutive intervals of `step_ns` from the window's start.
    pub fn series<'a>(
        &self,
        calls: impl Iterator<Item = &'a CallRow>,
        step_ns: i64,
    ) -> Vec<Interval> {
        let step_ns = step_ns.max(1);
        let buckets = ((self.window.to_ns - self.window.from_ns) + step_ns - 1) / step_ns;
        let mut accumulators = vec![Accumulator::default(); buckets.max(0) as usize];
        for call in calls {
            let index = (call.start_ns - self.window.from_ns) / step_ns;
            if let Some(accumulator) = usize::try_from(index)
                .ok()
                .and_then(|i| accumulators.get_mut(i))
            {
                accumulator.add(call);
            }
        }
        accumulators
            .into_iter()
            .enumerate()
            .map(|(i, accumulator)| Interval {
                start_ns: self.window.from_ns + i as i64 * step_ns,
                summary: accumulator.summary(step_ns as f64 / 1e9, &self.thresholds),
            })
            .collect()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Interval {
    #[serde(skip)]
    pub start_ns: i64,
    #[serde(flatten)]
    pub summary: Summary,
}
