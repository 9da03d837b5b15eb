//! The service map: the graph laid out by [`crate::layout`], drawn as SVG by our own
//! template. Topics and queues become hexagons between producers and consumers; layouts are
//! cached by the graph's shape, so a refresh with the same nodes and edges lays out nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use askama::Template;
use callwatch_query::graph::{Edge, Graph};
use callwatch_query::stats::{Percentiles, Summary};

use crate::dashboard::{Frame, health_name, ms, percent, rate};
use crate::layout::{Layout, LayoutError, layout};

const NODE_HEIGHT: f64 = 48.0;
const TOPIC_HEIGHT: f64 = 40.0;
/// Layouts kept: a few graphs (windows, platforms) viewed at once.
const CACHED_LAYOUTS: usize = 16;

/// A node as drawn: its box, kind (which picks the shape), health (the colour) and link.
pub struct MapNode {
    pub index: usize,
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
    pub kind: &'static str,
    pub health: &'static str,
    pub label: String,
    /// Rate and error share, drawn under the name.
    pub stats: String,
    pub title: String,
    pub href: String,
    /// No calls in the window's last minute.
    pub idle: bool,
}

impl MapNode {
    pub fn center_x(&self) -> f64 {
        self.x + self.width / 2.0
    }

    pub fn center_y(&self) -> f64 {
        self.y + self.height / 2.0
    }

    pub fn right(&self) -> f64 {
        self.x + self.width
    }

    pub fn bottom(&self) -> f64 {
        self.y + self.height
    }
}

/// An edge as drawn: a path, dashed when async, as wide as its rate is high.
pub struct MapEdge {
    pub from: usize,
    pub to: usize,
    pub path: String,
    pub dashed: bool,
    pub width: f64,
    pub health: &'static str,
    pub label: String,
    pub label_x: f64,
    pub label_y: f64,
    pub href: String,
    /// The breaker's state when it is not closed.
    pub breaker: Option<&'static str>,
    pub title: String,
    pub idle: bool,
}

#[derive(Template)]
#[template(path = "map.html")]
pub struct Map {
    pub width: f64,
    pub height: f64,
    pub nodes: Vec<MapNode>,
    pub edges: Vec<MapEdge>,
    /// `?focus=` and `?depth=` of the page, applied by the page's script.
    pub focus: String,
    pub depth: String,
}

/// Layouts by the shape of the graph they were made for.
#[derive(Default)]
pub struct Layouts {
    cached: Mutex<VecDeque<(u64, Arc<Layout>)>>,
}

impl std::fmt::Debug for Layouts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layouts").finish_non_exhaustive()
    }
}

impl Layouts {
    /// The layout of this shape, computed at most once while it stays cached.
    fn get(
        &self,
        sizes: &[(f64, f64)],
        edges: &[(usize, usize)],
    ) -> Result<Arc<Layout>, LayoutError> {
        let mut hasher = DefaultHasher::new();
        for (w, h) in sizes {
            (w.to_bits(), h.to_bits()).hash(&mut hasher);
        }
        edges.hash(&mut hasher);
        let shape = hasher.finish();
        if let Some((_, found)) = self.lock().iter().find(|(s, _)| *s == shape) {
            return Ok(found.clone());
        }
        let started = Instant::now();
        let made = Arc::new(layout(sizes, edges)?);
        tracing::debug!(
            nodes = sizes.len(),
            edges = edges.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "laid out the service map"
        );
        let mut cached = self.lock();
        cached.push_front((shape, made.clone()));
        cached.truncate(CACHED_LAYOUTS);
        Ok(made)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(u64, Arc<Layout>)>> {
        self.cached
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What is drawn before it is laid out: nodes with their sizes, edges between them.
struct Plan {
    nodes: Vec<PlannedNode>,
    edges: Vec<PlannedEdge>,
}

struct PlannedNode {
    kind: &'static str,
    label: String,
    health: &'static str,
    stats: String,
    title: String,
    href: String,
    idle: bool,
}

struct PlannedEdge {
    from: usize,
    to: usize,
    /// The graph's edge whose numbers it shows.
    edge: usize,
    label: String,
    dashed: bool,
    idle: bool,
}

fn is_idle(summary: &Summary) -> bool {
    summary.rate_last_minute_per_s == Some(0.0)
}

impl Plan {
    /// The graph's nodes, a hexagon for each topic or queue an async edge goes through,
    /// and edges: sync edges as they are, async edges through their topic.
    fn of(graph: &Graph, frame: &Frame) -> Self {
        let mut plan = Self {
            nodes: Vec::with_capacity(graph.nodes.len()),
            edges: Vec::with_capacity(graph.edges.len()),
        };
        let mut index: HashMap<String, usize> = HashMap::new();
        for node in &graph.nodes {
            index.insert(node.id.clone(), plan.nodes.len());
            let idle = is_idle(&node.summary);
            plan.nodes.push(PlannedNode {
                kind: node.kind,
                label: node.id.clone(),
                health: health_name(node.summary.health),
                // A node nobody calls (`user`, a client only) has no numbers of its own.
                stats: if node.summary.calls == 0 {
                    String::new()
                } else {
                    format!(
                        "{} · {}",
                        rate(node.summary.rate_per_s),
                        percent(node.summary.error_rate)
                    )
                },
                title: format!(
                    "{} ({}, {}) · {} instance(s)",
                    node.id,
                    node.kind,
                    health_name(node.summary.health),
                    node.instances
                ),
                href: frame.service_link(&node.id),
                idle,
            });
        }
        // Topics: who publishes to each and who reads it.
        let mut topics: BTreeMap<&str, (BTreeSet<&str>, BTreeSet<&str>)> = BTreeMap::new();
        for edge in &graph.edges {
            if let Some(topic) = through_topic(edge, graph) {
                let entry = topics.entry(topic).or_default();
                entry.0.insert(&edge.source);
                entry.1.insert(&edge.target);
            }
        }
        let mut topic_index: HashMap<&str, usize> = HashMap::new();
        for (topic, (producers, consumers)) in &topics {
            topic_index.insert(topic, plan.nodes.len());
            let join =
                |names: &BTreeSet<&str>| names.iter().copied().collect::<Vec<_>>().join(", ");
            plan.nodes.push(PlannedNode {
                kind: "topic",
                label: topic.to_string(),
                health: "healthy",
                stats: String::new(),
                title: format!(
                    "{topic} (topic or queue) · published by {} · read by {}",
                    join(producers),
                    join(consumers)
                ),
                href: frame.link_with(
                    "/sql",
                    &[(
                        "q",
                        &format!(
                            "SELECT client, server, count(*) AS calls FROM calls \
                             WHERE destination = '{}' GROUP BY client, server",
                            topic.replace('\'', "''")
                        ),
                    )],
                ),
                idle: true,
            });
        }
        // A producer's edge into a topic shows its busiest consumer's numbers: each group
        // reads every message, so that is about what was published.
        let mut published: BTreeMap<(usize, usize), usize> = BTreeMap::new();
        for (i, edge) in graph.edges.iter().enumerate() {
            let (Some(&from), Some(&to)) = (index.get(&edge.source), index.get(&edge.target))
            else {
                continue;
            };
            let idle = is_idle(&edge.summary);
            match through_topic(edge, graph).and_then(|t| topic_index.get(t)) {
                Some(&topic) => {
                    let busiest = published.entry((from, topic)).or_insert(i);
                    if graph.edges[*busiest].summary.calls < edge.summary.calls {
                        *busiest = i;
                    }
                    if !idle {
                        plan.nodes[topic].idle = false;
                    }
                    plan.edges.push(PlannedEdge {
                        from: topic,
                        to,
                        edge: i,
                        label: consumer_label(&edge.summary),
                        dashed: true,
                        idle,
                    });
                }
                None => plan.edges.push(PlannedEdge {
                    from,
                    to,
                    edge: i,
                    label: edge_label(&edge.summary),
                    dashed: edge.call_type == "async",
                    idle,
                }),
            }
        }
        for ((from, topic), i) in published {
            let summary = &graph.edges[i].summary;
            plan.edges.push(PlannedEdge {
                from,
                to: topic,
                edge: i,
                label: format!("{} published", rate(summary.rate_per_s)),
                dashed: true,
                idle: is_idle(summary),
            });
        }
        // A node is idle when every edge it has is.
        let mut busy = vec![false; plan.nodes.len()];
        for edge in &plan.edges {
            if !edge.idle {
                busy[edge.from] = true;
                busy[edge.to] = true;
            }
        }
        for (node, busy) in plan.nodes.iter_mut().zip(busy) {
            node.idle = !busy;
        }
        plan
    }
}

/// The topic or queue an async edge goes through, unless its target is the broker itself.
fn through_topic<'a>(edge: &'a Edge, graph: &Graph) -> Option<&'a str> {
    if edge.call_type != "async" {
        return None;
    }
    let topic = edge.destination.as_deref()?;
    let broker_is_target = graph
        .node(&edge.target)
        .is_some_and(|n| n.kind == "messaging");
    (!broker_is_target).then_some(topic)
}

fn node_width(label: &str) -> f64 {
    36.0 + 8.2 * label.chars().count().min(48) as f64
}

impl Map {
    /// The map of `graph`, with links that keep `frame`'s range.
    pub fn of(graph: &Graph, frame: &Frame, layouts: &Layouts) -> Result<Self, String> {
        let focus = frame_param(frame, "focus");
        let depth = frame_param(frame, "depth");
        let plan = Plan::of(graph, frame);
        let sizes: Vec<(f64, f64)> = plan
            .nodes
            .iter()
            .map(|n| {
                let height = if n.kind == "topic" {
                    TOPIC_HEIGHT
                } else {
                    NODE_HEIGHT
                };
                (node_width(&n.label).max(96.0), height)
            })
            .collect();
        let pairs: Vec<(usize, usize)> = plan.edges.iter().map(|e| (e.from, e.to)).collect();
        let laid_out = layouts.get(&sizes, &pairs).map_err(|LayoutError::TooLarge { points }| {
            format!(
                "the map of {} nodes and {} edges needs {points} points, more than can be drawn at once; \
                 the table below holds the same graph",
                plan.nodes.len(),
                plan.edges.len()
            )
        })?;
        let max_rate = graph
            .edges
            .iter()
            .map(|e| e.summary.rate_per_s)
            .fold(0.0, f64::max);
        let nodes = plan
            .nodes
            .into_iter()
            .zip(&laid_out.nodes)
            .zip(&sizes)
            .enumerate()
            .map(|(index, ((node, &(x, y)), &(width, height)))| MapNode {
                index,
                x,
                y,
                width,
                height,
                kind: node.kind,
                health: node.health,
                label: node.label,
                stats: node.stats,
                title: node.title,
                href: node.href,
                idle: node.idle,
            })
            .collect();
        let edges = plan
            .edges
            .into_iter()
            .zip(&laid_out.edges)
            .filter(|(_, points)| points.len() >= 2)
            .map(|(planned, points)| {
                let edge = &graph.edges[planned.edge];
                let share = if max_rate > 0.0 {
                    edge.summary.rate_per_s / max_rate
                } else {
                    0.0
                };
                let breaker = edge
                    .breaker
                    .as_ref()
                    .map(|b| b.state.as_str())
                    .filter(|state| *state != "closed" && edge.call_type == "sync");
                let destination = edge
                    .destination
                    .as_deref()
                    .map(|d| format!(" via {d}"))
                    .unwrap_or_default();
                // The label sits on the edge's first stretch, between columns, past its
                // middle: edges fanning out of one node have spread apart there.
                let (label_x, label_y) = along(points[0], points[1], LABEL_AT);
                MapEdge {
                    from: planned.from,
                    to: planned.to,
                    path: smooth_path(points),
                    dashed: planned.dashed,
                    width: 1.5 + 4.5 * share.sqrt(),
                    health: health_name(edge.summary.health),
                    label: planned.label,
                    label_x,
                    label_y: label_y - 5.0,
                    href: frame.edge_link(&edge.source, &edge.target),
                    breaker,
                    title: format!(
                        "{} → {} ({}{destination})",
                        edge.source, edge.target, edge.call_type
                    ),
                    idle: planned.idle,
                }
            })
            .collect();
        Ok(Self {
            width: laid_out.width,
            height: laid_out.height,
            nodes,
            edges,
            focus,
            depth,
        })
    }
}

fn frame_param(frame: &Frame, name: &str) -> String {
    frame
        .page_params
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.clone())
        .unwrap_or_default()
}

/// Where on an edge's first stretch its label goes, as a share of the way: the curve of
/// [`smooth_path`] passes through every point at the same share of both coordinates.
const LABEL_AT: f64 = 0.58;

fn along(a: (f64, f64), b: (f64, f64), share: f64) -> (f64, f64) {
    (a.0 + (b.0 - a.0) * share, a.1 + (b.1 - a.1) * share)
}

/// A curve through `points` that leaves and enters each point level, as a layered drawing
/// of left-to-right calls reads best.
fn smooth_path(points: &[(f64, f64)]) -> String {
    let mut path = format!("M {:.1} {:.1}", points[0].0, points[0].1);
    for pair in points.windows(2) {
        let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
        let dx = (x1 - x0) / 2.0;
        path.push_str(&format!(
            " C {:.1} {:.1}, {:.1} {:.1}, {:.1} {:.1}",
            x0 + dx,
            y0,
            x1 - dx,
            y1,
            x1,
            y1
        ));
    }
    path
}

/// `rate · error % · p99`, the label of a call edge.
fn edge_label(summary: &Summary) -> String {
    label(summary, "p99", summary.latency_ms)
}

/// `rate · error % · queued p99`, the label of a consumer's edge out of a topic: how long
/// messages waited between the producer's send and the consumer's start.
fn consumer_label(summary: &Summary) -> String {
    label(summary, "queued p99", summary.queue_ms)
}

fn label(summary: &Summary, what: &str, latency: Option<Percentiles>) -> String {
    format!(
        "{} · {} · {what} {}",
        rate(summary.rate_per_s),
        percent(summary.error_rate),
        ms(latency.map(|p| p.p99))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_goes_through_every_point_and_leaves_each_level() {
        let path = smooth_path(&[(0.0, 0.0), (100.0, 50.0), (200.0, 50.0)]);
        assert_eq!(
            path,
            "M 0.0 0.0 C 50.0 0.0, 50.0 50.0, 100.0 50.0 C 150.0 50.0, 150.0 50.0, 200.0 50.0"
        );
    }
}
