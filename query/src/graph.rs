//! The service dependency graph of a window, put together from stored pieces of the
//! `calls` table, and the questions asked of it (upstream, downstream, blast radius, cycles)
//! answered with petgraph; and the breakdowns of one service's or edge's calls by
//! operation, instance, version and status, with their series.

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
use crate::pieces::Windows;
pub use crate::rollup::CallsOf;
use crate::rollup::{CallStats, Details, Dimension, EdgeKey, EdgeStats, Groups, Rollup};
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

/// Every call whose client started in the window. Only the columns the statistics and
/// example traces need are read, so span ids are not decoded.
pub async fn calls_in(engine: &QueryEngine, window: Window) -> Result<Vec<CallRow>, QueryError> {
    calls_where(engine, window, None).await
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
        .select_columns(crate::pieces::DETAIL_COLUMNS)?;
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
    /// The `service.namespace` the service reports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
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
    /// The consumer groups the consumer of an async edge reads its topic as.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub consumer_groups: Vec<String>,
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

/// Where a graph window's statistics are aggregated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphEngine {
    /// On the cluster for windows at least `--ballista-over` long, here otherwise.
    Auto,
    /// Here, from the rollup cache.
    Local,
    /// On the Ballista cluster.
    Cluster,
}

/// The graph of a window from the rollup cache: whole pieces where they cover the window,
/// calls read one by one where they do not; or, for a long window on a server with a
/// cluster, aggregated there. Without calls of its own: for the graph's nodes and edges,
/// not for breakdowns.
pub async fn graph_of(
    engine: &QueryEngine,
    window: Window,
    thresholds: HealthThresholds,
) -> Result<Graph, QueryError> {
    graph_on(engine, window, thresholds, GraphEngine::Auto).await
}

/// [`graph_of`], aggregated where `on` says.
pub async fn graph_on(
    engine: &QueryEngine,
    window: Window,
    thresholds: HealthThresholds,
    on: GraphEngine,
) -> Result<Graph, QueryError> {
    let cluster = match (on, engine.cluster()) {
        (GraphEngine::Local, _) => None,
        (GraphEngine::Cluster, None) => {
            return Err(QueryError::Invalid(
                "engine=ballista needs a server started with --ballista".into(),
            ));
        }
        (GraphEngine::Cluster, Some(cluster)) => Some(cluster),
        (GraphEngine::Auto, cluster) => {
            cluster.filter(|c| c.takes_window(window.to_ns.saturating_sub(window.from_ns)))
        }
    };
    let Some(cluster) = cluster else {
        let stats = engine
            .rollups()
            .windows(engine.store(), &graph_windows(window), |_| true)
            .await?;
        return graph_from(engine, window, thresholds, stats).await;
    };
    // The last minute, for the rate "now", is short: read here as the local graph does.
    let recent_from = Recent::start(window);
    let mut stats = engine
        .rollups()
        .windows(engine.store(), &[(recent_from, window.to_ns)], |_| true)
        .await?;
    let (mut recent, uncovered) = stats.pop().expect("one window asked");
    for (from_ns, to_ns) in uncovered {
        for call in calls_in(engine, Window { from_ns, to_ns }).await? {
            recent.add(&call);
        }
    }
    let rollup = crate::cluster_graph::edge_stats(cluster, engine, window).await?;
    Ok(finish(engine, window, thresholds, rollup, recent))
}

/// The graph of the window's and its last minute's statistics, with what is known beside
/// its calls: breakers, namespaces, consumer groups.
fn finish(
    engine: &QueryEngine,
    window: Window,
    thresholds: HealthThresholds,
    rollup: Rollup,
    recent: Rollup,
) -> Graph {
    let recent = Recent {
        from_ns: Recent::start(window),
        rollup: recent,
    };
    let mut graph = Graph::build(rollup, recent, window, thresholds);
    graph.attach_breakers(engine.breakers());
    let known = engine.store().catalog().known();
    graph.attach_namespaces(&known.namespaces);
    graph.attach_consumer_groups(&known.consumer_groups);
    graph
}

/// The graph of a window and the breakdowns and series of a service's or an edge's calls,
/// from one look at the graph's pieces.
pub async fn graph_and_focus(
    engine: &QueryEngine,
    window: Window,
    thresholds: HealthThresholds,
    of: &CallsOf,
    intervals: Vec<(i64, i64)>,
) -> Result<(Graph, Focus), QueryError> {
    let mut asked = graph_windows(window);
    asked.extend(&intervals);
    let mut stats = engine
        .rollups()
        .windows(engine.store(), &asked, |_| true)
        .await?;
    let series = stats.split_off(2);
    let graph = graph_from(engine, window, thresholds, stats).await?;
    let focus = focus(engine, window, thresholds, of, intervals, series).await?;
    Ok((graph, focus))
}

/// The windows the graph's statistics are merged over: the window, and its last minute.
fn graph_windows(window: Window) -> Vec<(i64, i64)> {
    vec![
        (window.from_ns, window.to_ns),
        (Recent::start(window), window.to_ns),
    ]
}

/// The graph from the pieces of [`graph_windows`], with the calls they do not cover read.
async fn graph_from(
    engine: &QueryEngine,
    window: Window,
    thresholds: HealthThresholds,
    mut stats: Windows<EdgeStats>,
) -> Result<Graph, QueryError> {
    let (mut recent, recent_uncovered) = stats.pop().expect("two windows asked");
    let (mut rollup, uncovered) = stats.pop().expect("two windows asked");
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
    Ok(finish(engine, window, thresholds, rollup, recent))
}

/// Intervals of `step_ns` covering `window`, in order. Aligned ones start on multiples of
/// the step (as Grafana asks), so that stored pieces cover them whole; the first and the
/// last are cut to the window. Otherwise they start at the window's start.
pub fn intervals(window: Window, step_ns: i64, aligned: bool) -> Vec<(i64, i64)> {
    let step_ns = step_ns.max(1);
    let mut start = if aligned {
        window.from_ns.div_euclid(step_ns) * step_ns
    } else {
        window.from_ns
    };
    let mut intervals = Vec::new();
    while start < window.to_ns {
        let end = start.saturating_add(step_ns);
        intervals.push((start.max(window.from_ns), end.min(window.to_ns)));
        start = end;
    }
    intervals
}

/// A round step giving at most about 60 intervals over the window, at least a second: one
/// that stored pieces (10 s, a minute) divide once it is 10 s or more.
pub fn round_step(window: Window) -> i64 {
    const STEPS_S: [i64; 19] = [
        1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 21600, 43200,
        86400,
    ];
    let wanted = (window.to_ns - window.from_ns) / 60;
    STEPS_S
        .iter()
        .map(|s| s * 1_000_000_000)
        .find(|step| *step >= wanted)
        .unwrap_or(wanted.max(1_000_000_000))
}

/// The breakdowns and series of the calls of a service or an edge over a window.
pub struct Focus {
    pub window: Window,
    pub thresholds: HealthThresholds,
    /// The intervals of the series.
    pub intervals: Vec<(i64, i64)>,
    /// Per edge: its calls by operation, instance, version and status over the window.
    details: BTreeMap<EdgeKey, Details>,
    /// Per edge: its calls in each interval.
    series: BTreeMap<EdgeKey, Vec<Accumulator>>,
}

/// The breakdowns of the calls `of` keeps over the window, from the breakdown pieces, and
/// their series over `intervals` from
/// the graph's `series`. Only the calls at the ends that no whole piece covers are read,
/// filtered where they are stored.
async fn focus(
    engine: &QueryEngine,
    window: Window,
    thresholds: HealthThresholds,
    of: &CallsOf,
    intervals: Vec<(i64, i64)>,
    mut series: Windows<EdgeStats>,
) -> Result<Focus, QueryError> {
    let keep = |key: &EdgeKey| of.keeps(&key.source, &key.target);
    let (mut details, details_uncovered) = engine
        .details()
        .window(engine.store(), of, window.from_ns, window.to_ns)
        .await?;
    let mut ranges: Vec<(i64, i64)> = details_uncovered
        .iter()
        .chain(series.iter().flat_map(|(_, uncovered)| uncovered))
        .copied()
        .collect();
    let within =
        |ranges: &[(i64, i64)], ns: i64| ranges.iter().any(|(a, b)| (*a..*b).contains(&ns));
    for range in reads_for(&mut ranges) {
        let calls = calls_where(
            engine,
            Window {
                from_ns: range.0,
                to_ns: range.1,
            },
            Some(of.predicate()),
        )
        .await?;
        for call in calls {
            if within(&details_uncovered, call.start_ns) {
                details.add(&call);
            }
            let at = intervals.partition_point(|(_, end)| *end <= call.start_ns);
            if let Some((stats, uncovered)) = series.get_mut(at)
                && within(uncovered, call.start_ns)
            {
                stats.add(&call);
            }
        }
    }
    let mut by_edge: BTreeMap<EdgeKey, Vec<Accumulator>> = BTreeMap::new();
    for (index, (stats, _)) in series.iter().enumerate() {
        for (key, edge) in stats.edges.iter().filter(|(key, _)| keep(key)) {
            by_edge
                .entry(key.clone())
                .or_insert_with(|| vec![Accumulator::default(); intervals.len()])[index]
                .merge(&edge.calls);
        }
    }
    Ok(Focus {
        window,
        thresholds,
        intervals,
        details: details.edges.into_iter().collect(),
        series: by_edge,
    })
}

/// The ranges to read for `ranges` (which may overlap): merged, and one range from the
/// first to the last when there are many (steps that pieces do not divide).
fn reads_for(ranges: &mut [(i64, i64)]) -> Vec<(i64, i64)> {
    ranges.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::new();
    for &(from, to) in ranges.iter() {
        match merged.last_mut() {
            Some(last) if from <= last.1 => last.1 = last.1.max(to),
            _ => merged.push((from, to)),
        }
    }
    if merged.len() > 8 {
        let (first, last) = (merged[0].0, merged[merged.len() - 1].1);
        merged = vec![(first, last)];
    }
    merged
}

/// Whether `key` is the key of `edge`.
fn is_key_of(key: &EdgeKey, edge: &Edge) -> bool {
    *key.source == *edge.source
        && *key.target == *edge.target
        && key.call_type.as_str() == edge.call_type
        && key.destination.as_deref() == edge.destination.as_deref()
}

impl Focus {
    /// The details of the edges `keep` keeps, merged.
    fn details_where(&self, keep: impl Fn(&EdgeKey) -> bool) -> Details {
        let mut merged = Details::default();
        for (key, details) in &self.details {
            if keep(key) {
                merged.merge(details);
            }
        }
        merged
    }

    /// The details of every call looked at (all calls into a service).
    pub fn all(&self) -> Details {
        self.details_where(|_| true)
    }

    /// The details of one edge's calls.
    pub fn edge(&self, edge: &Edge) -> Details {
        self.details_where(|key| is_key_of(key, edge))
    }

    /// The calls looked at (`None`) or one edge's, in each interval.
    pub fn series(&self, edge: Option<&Edge>) -> Vec<Interval> {
        let mut merged = vec![Accumulator::default(); self.intervals.len()];
        for (key, accumulators) in &self.series {
            if edge.is_none_or(|edge| is_key_of(key, edge)) {
                for (into, from) in merged.iter_mut().zip(accumulators) {
                    into.merge(from);
                }
            }
        }
        merged
            .into_iter()
            .zip(&self.intervals)
            .map(|(accumulator, (from_ns, to_ns))| Interval {
                start_ns: *from_ns,
                summary: accumulator.summary((to_ns - from_ns) as f64 / 1e9, &self.thresholds),
            })
            .collect()
    }

    /// The calls of `details` grouped by `dimension`, largest share first.
    pub fn breakdown(&self, details: &Details, dimension: Dimension) -> Breakdown {
        breakdown(details.groups(dimension), self.window, &self.thresholds)
    }
}

/// Groups as shares, largest first.
fn breakdown(groups: &Groups, window: Window, thresholds: &HealthThresholds) -> Breakdown {
    let total: u64 = groups.values().map(|g| g.calls).sum();
    let count = groups.len();
    let mut items: Vec<Share> = groups
        .iter()
        .map(|(name, accumulator)| Share {
            name: name.as_deref().map(str::to_string),
            share: if total == 0 {
                0.0
            } else {
                accumulator.calls as f64 / total as f64
            },
            summary: {
                let seconds = accumulator.observed_seconds(window.from_ns, window.to_ns);
                accumulator.clone().summary(seconds, thresholds)
            },
        })
        .collect();
    items.sort_by(|a, b| b.share.total_cmp(&a.share).then(a.name.cmp(&b.name)));
    let skew = items.first().map_or(1.0, |top| top.share * count as f64);
    Breakdown { skew, items }
}

impl Graph {
    /// The graph of `rollup`, with `recent` its last minute.
    pub fn build(
        rollup: Rollup,
        recent: Recent,
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
                    namespace: None,
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
                    consumer_groups: Vec::new(),
                }
            })
            .collect();
        Self {
            window,
            thresholds,
            nodes,
            edges,
            graph,
            index,
        }
    }

    /// Names each service's namespace, from what services report (by service name).
    pub fn attach_namespaces(&mut self, namespaces: &BTreeMap<String, String>) {
        for node in &mut self.nodes {
            node.namespace = namespaces.get(&node.id).cloned();
        }
    }

    /// Names the consumer groups each async edge's consumer reads its topic as.
    pub fn attach_consumer_groups(&mut self, groups: &callwatch_storage::ConsumerGroups) {
        for edge in &mut self.edges {
            let Some(topic) = &edge.destination else {
                continue;
            };
            if let Some(found) = groups.get(topic).and_then(|r| r.get(&edge.target)) {
                edge.consumer_groups = found.iter().cloned().collect();
            }
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
}

#[derive(Debug, Clone, Serialize)]
pub struct Interval {
    #[serde(skip)]
    pub start_ns: i64,
    #[serde(flatten)]
    pub summary: Summary,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pieces::tests::{HOUR, S, spans_from, store_with_a_call_per_span};
    use crate::rollup::tests::call;
    use crate::rollup::{ByEdge, Dimension};

    /// The calls the store derives from the spans of `spans_from(start, count)`.
    fn calls_from(start_ns: i64, count: i64) -> Vec<CallRow> {
        (0..count)
            .map(|n| {
                let start_ns = start_ns + n * 1_000_000;
                call(start_ns, start_ns % 97)
            })
            .collect()
    }

    #[tokio::test]
    async fn breakdowns_and_series_from_pieces_equal_those_of_the_calls() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_a_call_per_span(dir.path()).await;
        // Six minutes of calls in bursts 7.3 s apart; the first half flushed to a segment,
        // the rest hot.
        let mut calls = Vec::new();
        for burst in 0..50 {
            let start = HOUR + burst * 7_300_000_000;
            store.append(spans_from(start, 40)).await.unwrap();
            store.calls_caught_up().await;
            calls.extend(calls_from(start, 40));
            if burst == 25 {
                store.flush().await.unwrap();
            }
        }
        let engine = QueryEngine::new(store, crate::QueryLimits::default());
        let thresholds = HealthThresholds::default();
        // Ends inside pieces, so both the pieces and the calls at the ends count.
        let window = Window {
            from_ns: HOUR + 13_500_000_000,
            to_ns: HOUR + 250_200_000_000,
        };
        let of = CallsOf::Edge {
            source: "a".into(),
            target: "b".into(),
        };
        let in_window: Vec<&CallRow> = calls
            .iter()
            .filter(|c| (window.from_ns..window.to_ns).contains(&c.start_ns))
            .collect();
        let expected = ByEdge::<Details>::of(in_window.iter().copied());
        let expected = expected.edges.values().next().unwrap();
        for (step_ns, aligned) in [(20 * S, true), (7 * S, false)] {
            let intervals = intervals(window, step_ns, aligned);
            let (graph, focus) =
                graph_and_focus(&engine, window, thresholds, &of, intervals.clone())
                    .await
                    .unwrap();
            let edge = graph.edges.iter().find(|e| *e.source == *"a").unwrap();
            assert_eq!(edge.summary.calls, in_window.len() as u64);
            let found = focus.all();
            for dimension in Dimension::ALL {
                assert_eq!(
                    format!("{:?}", focus.breakdown(&found, dimension)),
                    format!("{:?}", focus.breakdown(expected, dimension)),
                    "{dimension:?}"
                );
            }
            let durations = |d: &Details| -> Vec<Option<i64>> {
                d.slowest().iter().map(|e| e.duration_ns).collect()
            };
            assert_eq!(durations(&found), durations(expected));
            let starts = |d: &Details| -> Vec<i64> {
                d.latest_failed().iter().map(|e| e.start_ns).collect()
            };
            assert_eq!(starts(&found), starts(expected));
            assert_eq!(starts(&found).len(), crate::rollup::EXEMPLARS);
            // Each example names its call's trace, also those read one by one at the ends.
            for exemplar in found.slowest().iter().chain(found.latest_failed()) {
                assert_eq!(exemplar.trace_id, exemplar.start_ns as u128);
            }
            let series = focus.series(None);
            assert_eq!(series.len(), intervals.len());
            for (interval, (from_ns, to_ns)) in series.iter().zip(&intervals) {
                let mut accumulator = Accumulator::default();
                for call in in_window
                    .iter()
                    .filter(|c| (*from_ns..*to_ns).contains(&c.start_ns))
                {
                    accumulator.add(call);
                }
                let seconds = (to_ns - from_ns) as f64 / 1e9;
                assert_eq!(
                    format!("{:?}", interval.summary),
                    format!("{:?}", accumulator.summary(seconds, &thresholds)),
                    "{step_ns} {aligned}"
                );
            }
        }
    }
}
