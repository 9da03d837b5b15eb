//! The service map: the graph laid out by [`crate::layout`], drawn as SVG by our own
//! template. Topics and queues become hexagons between producers and consumers; layouts are
//! cached by the graph's shape, so a refresh with the same nodes and edges lays out nothing.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use askama::Template;
use callwatch_query::graph::{Edge, Graph, Node};
use callwatch_query::stats::{Health, Percentiles, Summary};

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
    pub frames: Vec<NamespaceFrame>,
    pub nodes: Vec<MapNode>,
    pub edges: Vec<MapEdge>,
    /// `?focus=` and `?depth=` of the page, applied by the page's script.
    pub focus: String,
    pub depth: String,
}

/// The frame around the services of an expanded namespace, with a link that folds it.
pub struct NamespaceFrame {
    pub name: String,
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
    pub href: String,
}

/// Space between a namespace's frame and its services.
const FRAME_PAD: f64 = 10.0;

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

/// How the map groups services: with `?group=namespace`, each `service.namespace` is one
/// box, except those listed in `?expand=` (comma-separated), whose services are drawn one by
/// one inside a frame named after it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Grouping {
    pub by_namespace: bool,
    pub expanded: BTreeSet<String>,
}

impl Grouping {
    pub fn of(frame: &Frame) -> Self {
        Self {
            by_namespace: frame_param(frame, "group") == "namespace",
            expanded: frame_param(frame, "expand")
                .split(',')
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect(),
        }
    }

    /// Every namespace folded.
    pub fn folded() -> Self {
        Self {
            by_namespace: true,
            expanded: BTreeSet::new(),
        }
    }

    /// The namespace `node` is folded into, if it is.
    fn fold<'a>(&self, node: &'a Node) -> Option<&'a str> {
        let namespace = node.namespace.as_deref()?;
        (self.by_namespace && !self.expanded.contains(namespace)).then_some(namespace)
    }

    /// A link to the map with `namespace` expanded (or folded again, if it is).
    fn toggle_link(&self, frame: &Frame, namespace: &str) -> String {
        let mut expanded = self.expanded.clone();
        if !expanded.remove(namespace) {
            expanded.insert(namespace.to_string());
        }
        let expand = expanded.into_iter().collect::<Vec<_>>().join(",");
        frame.link_with("/graph", &[("group", "namespace"), ("expand", &expand)])
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
    /// The namespace whose frame it is drawn in (an expanded one).
    frame: Option<String>,
}

struct PlannedEdge {
    from: usize,
    to: usize,
    /// The graph's edges it stands for: one, or all those between two folded namespaces
    /// (or a namespace and a node).
    edges: Vec<usize>,
    label: String,
    dashed: bool,
    idle: bool,
}

fn is_idle(summary: &Summary) -> bool {
    summary.rate_last_minute_per_s == Some(0.0)
}

/// The calls of the services folded into one namespace's box.
#[derive(Default)]
struct Folded {
    services: Vec<String>,
    calls: u64,
    errors: u64,
    rate_per_s: f64,
    /// The worst of its services'.
    health: Option<Health>,
}

impl Plan {
    /// The graph's nodes (services of folded namespaces as one box each), a hexagon for
    /// each topic or queue an async edge goes through, and edges: sync edges as they are,
    /// async edges through their topic, edges of folded services merged.
    fn of(graph: &Graph, frame: &Frame, grouping: &Grouping) -> Self {
        let mut plan = Self {
            nodes: Vec::with_capacity(graph.nodes.len()),
            edges: Vec::with_capacity(graph.edges.len()),
        };
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut folded: BTreeMap<&str, (usize, Folded)> = BTreeMap::new();
        for node in &graph.nodes {
            if let Some(namespace) = grouping.fold(node) {
                let at = plan.nodes.len();
                let (at, sum) = folded.entry(namespace).or_insert_with(|| {
                    plan.nodes.push(PlannedNode {
                        kind: "namespace",
                        label: namespace.to_string(),
                        health: "",
                        stats: String::new(),
                        title: String::new(),
                        href: grouping.toggle_link(frame, namespace),
                        idle: true,
                        frame: None,
                    });
                    (at, Folded::default())
                });
                sum.services.push(node.id.clone());
                sum.calls += node.summary.calls;
                sum.errors += node.summary.errors;
                sum.rate_per_s += node.summary.rate_per_s;
                sum.health = sum.health.max(Some(node.summary.health));
                index.insert(&node.id, *at);
                continue;
            }
            index.insert(&node.id, plan.nodes.len());
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
                    "{} ({}, {}) · {} instance(s){}",
                    node.id,
                    node.kind,
                    health_name(node.summary.health),
                    node.instances,
                    node.namespace
                        .as_deref()
                        .map(|n| format!(" · namespace {n}"))
                        .unwrap_or_default()
                ),
                href: frame.service_link(&node.id),
                idle,
                frame: node.namespace.clone().filter(|_| grouping.by_namespace),
            });
        }
        for (namespace, (at, sum)) in &folded {
            let node = &mut plan.nodes[*at];
            let error_rate = if sum.calls == 0 {
                0.0
            } else {
                sum.errors as f64 / sum.calls as f64
            };
            node.health = health_name(sum.health.unwrap_or(Health::Idle));
            node.stats = format!(
                "{} services · {} · {}",
                sum.services.len(),
                rate(sum.rate_per_s),
                percent(error_rate)
            );
            let mut names = sum.services.iter().take(12).cloned().collect::<Vec<_>>();
            if sum.services.len() > names.len() {
                names.push(format!("{} more", sum.services.len() - names.len()));
            }
            node.title = format!(
                "namespace {namespace}: {} · double-click to expand",
                names.join(", ")
            );
        }
        // Topics: who publishes to each, and who reads it as which consumer groups.
        type Readers<'a> = BTreeMap<&'a str, &'a [String]>;
        let mut topics: BTreeMap<&str, (BTreeSet<&str>, Readers)> = BTreeMap::new();
        for edge in &graph.edges {
            if let Some(topic) = through_topic(edge, graph) {
                let entry = topics.entry(topic).or_default();
                entry.0.insert(&edge.source);
                entry.1.insert(&edge.target, &edge.consumer_groups);
            }
        }
        let mut topic_index: HashMap<&str, usize> = HashMap::new();
        for (topic, (producers, consumers)) in &topics {
            topic_index.insert(topic, plan.nodes.len());
            let producers = producers.iter().copied().collect::<Vec<_>>().join(", ");
            let consumers = consumers
                .iter()
                .map(|(consumer, groups)| match groups.len() {
                    0 => consumer.to_string(),
                    1 => format!("{consumer} (group {})", groups[0]),
                    _ => format!("{consumer} (groups {})", groups.join(", ")),
                })
                .collect::<Vec<_>>()
                .join(", ");
            plan.nodes.push(PlannedNode {
                kind: "topic",
                label: topic.to_string(),
                health: "healthy",
                stats: String::new(),
                title: format!(
                    "{topic} (topic or queue) · published by {producers} · read by {consumers}"
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
                frame: None,
            });
        }
        let folded_at: Vec<bool> = plan.nodes.iter().map(|n| n.kind == "namespace").collect();
        let is_folded = |at: usize| folded_at[at];
        // Edges touching a folded namespace are merged by their ends.
        let mut merged: BTreeMap<(usize, usize, bool), usize> = BTreeMap::new();
        let mut edges: Vec<PlannedEdge> = Vec::with_capacity(graph.edges.len());
        let mut add = |edges: &mut Vec<PlannedEdge>, edge: PlannedEdge, fold: bool| {
            if edge.from == edge.to && fold {
                // Calls inside one folded namespace are counted in its box.
                return;
            }
            if !fold {
                edges.push(edge);
                return;
            }
            match merged.get(&(edge.from, edge.to, edge.dashed)) {
                Some(&at) => {
                    let kept = &mut edges[at];
                    kept.edges.extend(edge.edges);
                    kept.idle &= edge.idle;
                }
                None => {
                    merged.insert((edge.from, edge.to, edge.dashed), edges.len());
                    edges.push(edge);
                }
            }
        };
        // A producer's edge into a topic shows its busiest consumer's numbers: each group
        // reads every message, so that is about what was published.
        let mut published: BTreeMap<(usize, usize), usize> = BTreeMap::new();
        for (i, edge) in graph.edges.iter().enumerate() {
            let (Some(&from), Some(&to)) = (
                index.get(edge.source.as_str()),
                index.get(edge.target.as_str()),
            ) else {
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
                    let planned = PlannedEdge {
                        from: topic,
                        to,
                        edges: vec![i],
                        label: consumer_label(&edge.summary),
                        dashed: true,
                        idle,
                    };
                    add(&mut edges, planned, is_folded(to));
                }
                None => {
                    let planned = PlannedEdge {
                        from,
                        to,
                        edges: vec![i],
                        label: edge_label(&edge.summary),
                        dashed: edge.call_type == "async",
                        idle,
                    };
                    add(&mut edges, planned, is_folded(from) || is_folded(to));
                }
            }
        }
        for ((from, topic), i) in published {
            let summary = &graph.edges[i].summary;
            let planned = PlannedEdge {
                from,
                to: topic,
                edges: vec![i],
                label: format!("{} published", rate(summary.rate_per_s)),
                dashed: true,
                idle: is_idle(summary),
            };
            add(&mut edges, planned, is_folded(from));
        }
        // A merged edge shows the sum of its edges.
        for edge in edges.iter_mut().filter(|e| e.edges.len() > 1) {
            let (calls, errors, rate_per_s) =
                edge.edges.iter().fold((0, 0, 0.0), |(c, e, r), i| {
                    let s = &graph.edges[*i].summary;
                    (c + s.calls, e + s.errors, r + s.rate_per_s)
                });
            let error_rate = if calls == 0 {
                0.0
            } else {
                errors as f64 / calls as f64
            };
            edge.label = format!(
                "{} · {} · {} edges",
                rate(rate_per_s),
                percent(error_rate),
                edge.edges.len()
            );
        }
        plan.edges = edges;
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
    pub fn of(
        graph: &Graph,
        frame: &Frame,
        layouts: &Layouts,
        grouping: &Grouping,
    ) -> Result<Self, String> {
        let focus = frame_param(frame, "focus");
        let depth = frame_param(frame, "depth");
        let plan = Plan::of(graph, frame, grouping);
        let sizes: Vec<(f64, f64)> = plan
            .nodes
            .iter()
            .map(|n| {
                let height = if n.kind == "topic" {
                    TOPIC_HEIGHT
                } else {
                    NODE_HEIGHT
                };
                // A namespace's box holds its numbers, longer than its name.
                let width = match n.kind {
                    "namespace" => node_width(&n.label).max(node_width(&n.stats) * 0.85),
                    _ => node_width(&n.label),
                };
                (width.max(96.0), height)
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
        let rate_of = |edges: &[usize]| -> f64 {
            edges
                .iter()
                .map(|i| graph.edges[*i].summary.rate_per_s)
                .sum()
        };
        let max_rate = plan
            .edges
            .iter()
            .map(|e| rate_of(&e.edges))
            .fold(0.0, f64::max);
        let mut frames: BTreeMap<String, (f64, f64, f64, f64)> = BTreeMap::new();
        for (node, (&(x, y), &(width, height))) in
            plan.nodes.iter().zip(laid_out.nodes.iter().zip(&sizes))
        {
            if let Some(namespace) = &node.frame {
                let bounds = frames.entry(namespace.clone()).or_insert((
                    f64::MAX,
                    f64::MAX,
                    f64::MIN,
                    f64::MIN,
                ));
                *bounds = (
                    bounds.0.min(x),
                    bounds.1.min(y),
                    bounds.2.max(x + width),
                    bounds.3.max(y + height),
                );
            }
        }
        let frames = frames
            .into_iter()
            .map(|(name, (left, top, right, bottom))| NamespaceFrame {
                href: grouping.toggle_link(frame, &name),
                name,
                x: left - FRAME_PAD,
                // Room above for the name.
                y: top - FRAME_PAD - 14.0,
                width: right - left + 2.0 * FRAME_PAD,
                height: bottom - top + 2.0 * FRAME_PAD + 14.0,
            })
            .collect();
        let plan_kinds: Vec<&str> = plan.nodes.iter().map(|n| n.kind).collect();
        let plan_labels: Vec<String> = plan.nodes.iter().map(|n| n.label.clone()).collect();
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
        let mut outgoing = vec![0usize; plan_kinds.len()];
        let mut incoming = vec![0usize; plan_kinds.len()];
        for edge in &plan.edges {
            outgoing[edge.from] += 1;
            incoming[edge.to] += 1;
        }
        let mut edges: Vec<MapEdge> = plan
            .edges
            .into_iter()
            .zip(&laid_out.edges)
            .filter(|(_, points)| points.len() >= 2)
            .map(|(planned, points)| {
                let edge = &graph.edges[planned.edges[0]];
                let single = planned.edges.len() == 1;
                let share = if max_rate > 0.0 {
                    rate_of(&planned.edges) / max_rate
                } else {
                    0.0
                };
                let health = planned
                    .edges
                    .iter()
                    .map(|i| graph.edges[*i].summary.health)
                    .max()
                    .unwrap_or(edge.summary.health);
                let breaker = edge
                    .breaker
                    .as_ref()
                    .map(|b| b.state.as_str())
                    .filter(|state| *state != "closed" && edge.call_type == "sync" && single);
                let destination = edge
                    .destination
                    .as_deref()
                    .map(|d| format!(" via {d}"))
                    .unwrap_or_default();
                let groups = match edge.consumer_groups.len() {
                    0 => String::new(),
                    _ => format!(" as {}", edge.consumer_groups.join(", ")),
                };
                let (href, title) = if single {
                    (
                        frame.edge_link(&edge.source, &edge.target),
                        format!(
                            "{} → {} ({}{destination}{groups})",
                            edge.source, edge.target, edge.call_type
                        ),
                    )
                } else {
                    // Expanding the folded ends shows the edges one by one.
                    let mut expanded = grouping.clone();
                    for end in [planned.from, planned.to] {
                        if plan_kinds[end] == "namespace" {
                            expanded.expanded.insert(plan_labels[end].clone());
                        }
                    }
                    let expand = expanded.expanded.into_iter().collect::<Vec<_>>().join(",");
                    (
                        frame.link_with("/graph", &[("group", "namespace"), ("expand", &expand)]),
                        format!(
                            "{} edges from {} to {}",
                            planned.edges.len(),
                            plan_labels[planned.from],
                            plan_labels[planned.to]
                        ),
                    )
                };
                // The label goes where the edge is furthest from its neighbours: near its
                // callee when it is one of many out of its caller, near its caller when it
                // is one of many into its callee, else just past the middle.
                let last = points.len() - 1;
                let half = label_half_width(&planned.label);
                let (label_x, label_y) = match outgoing[planned.from].cmp(&incoming[planned.to]) {
                    Ordering::Greater => {
                        label_at(points[last - 1], points[last], FANNED_LABEL_AT, half)
                    }
                    Ordering::Less => label_at(points[0], points[1], 1.0 - FANNED_LABEL_AT, half),
                    Ordering::Equal => label_at(points[0], points[1], LABEL_AT, half),
                };
                MapEdge {
                    from: planned.from,
                    to: planned.to,
                    path: smooth_path(points),
                    dashed: planned.dashed,
                    width: 1.5 + 4.5 * share.sqrt(),
                    health: health_name(health),
                    label: planned.label,
                    label_x,
                    label_y: label_y - 5.0,
                    href,
                    breaker,
                    title,
                    idle: planned.idle,
                }
            })
            .collect();
        spread_labels(&mut edges);
        Ok(Self {
            width: laid_out.width,
            height: laid_out.height,
            frames,
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
/// Where on its last stretch the label of an edge fanning out of its caller goes, where it
/// has spread apart from the others (and as far on its first stretch for a fan-in).
const FANNED_LABEL_AT: f64 = 0.8;
/// Height of an edge label's line, and the width of one of its characters, in px.
const LABEL_HEIGHT: f64 = 13.0;
const LABEL_CHAR_WIDTH: f64 = 6.2;
/// Times a label is moved down past one it covers, at most: further, it would leave its
/// edge.
const LABEL_MOVES: usize = 3;

/// Moves labels down, past those they would cover, top first, so that labels of nearby
/// edges do not print over each other.
fn spread_labels(edges: &mut [MapEdge]) {
    let mut order: Vec<usize> = (0..edges.len()).collect();
    order.sort_by(|a, b| edges[*a].label_y.total_cmp(&edges[*b].label_y));
    // Each placed label's left and right end and its baseline.
    let mut placed: Vec<(f64, f64, f64)> = Vec::with_capacity(edges.len());
    for at in order {
        let edge = &mut edges[at];
        let half = label_half_width(&edge.label);
        let (left, right) = (edge.label_x - half, edge.label_x + half);
        for _ in 0..LABEL_MOVES {
            let covered = placed
                .iter()
                .filter(|(l, r, y)| {
                    *l < right && left < *r && (edge.label_y - y).abs() < LABEL_HEIGHT
                })
                .map(|(_, _, y)| *y)
                .reduce(f64::max);
            match covered {
                Some(y) => edge.label_y = y + LABEL_HEIGHT,
                None => break,
            }
        }
        placed.push((left, right, edge.label_y));
    }
}

/// Where a label `half` wide each side goes on the stretch from `a` to `b`: `share` of the
/// way, moved along the stretch as needed to stay clear of the boxes at both ends.
fn label_at(a: (f64, f64), b: (f64, f64), share: f64, half: f64) -> (f64, f64) {
    let (left, right) = (a.0.min(b.0) + half + 6.0, a.0.max(b.0) - half - 6.0);
    let x = a.0 + (b.0 - a.0) * share;
    let x = if left <= right {
        x.clamp(left, right)
    } else {
        (a.0 + b.0) / 2.0
    };
    let share = if b.0 == a.0 {
        share
    } else {
        (x - a.0) / (b.0 - a.0)
    };
    (x, a.1 + (b.1 - a.1) * share)
}

/// Half the width a label takes, with a little room.
fn label_half_width(label: &str) -> f64 {
    LABEL_CHAR_WIDTH * label.chars().count() as f64 / 2.0 + 3.0
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
/// messages waited between the producer's send and the consumer's start; and how many wait
/// on average, when more than one does.
fn consumer_label(summary: &Summary) -> String {
    let label = label(summary, "queued p99", summary.queue_ms);
    match summary.queued_messages {
        // Worth saying once messages pile up, not for a consumer that keeps up.
        Some(waiting) if waiting >= 1.0 => format!("{label} · ≈{waiting:.0} waiting"),
        _ => label,
    }
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
    use callwatch_query::graph::{Recent, Window};
    use callwatch_query::rollup::Rollup;
    use callwatch_query::stats::HealthThresholds;
    use callwatch_storage::{CallRow, NodeKind};

    fn call(client: &str, server: &str, kind: NodeKind) -> CallRow {
        CallRow {
            trace_id: 1,
            server_kind: kind,
            client_duration_ns: Some(1_000_000),
            ..CallRow::between(1_000, client, server)
        }
    }

    /// a and b in namespace x, c in y; d a database, e without a namespace.
    fn graph() -> Graph {
        let service = NodeKind::Service;
        let calls = [
            call("a", "b", service),
            call("a", "c", service),
            call("b", "c", service),
            call("c", "d", NodeKind::Database),
            call("e", "a", service),
        ];
        let window = Window {
            from_ns: 0,
            to_ns: 60_000_000_000,
        };
        let recent = Recent {
            from_ns: 0,
            rollup: Rollup::default(),
        };
        let mut graph = Graph::build(
            Rollup::of(&calls),
            recent,
            window,
            HealthThresholds::default(),
        );
        graph.attach_namespaces(&BTreeMap::from([
            ("a".to_string(), "x".to_string()),
            ("b".to_string(), "x".to_string()),
            ("c".to_string(), "y".to_string()),
        ]));
        graph
    }

    /// The plan's edges as `from → to (edges)`, sorted.
    fn edges_of(plan: &Plan) -> Vec<String> {
        let mut edges: Vec<String> = plan
            .edges
            .iter()
            .map(|e| {
                let name = |i: usize| &plan.nodes[i].label;
                format!("{} → {} ({})", name(e.from), name(e.to), e.edges.len())
            })
            .collect();
        edges.sort();
        edges
    }

    #[test]
    fn namespaces_fold_into_boxes_and_their_edges_merge() {
        let graph = graph();
        let frame = Frame::new("map", "/graph", &[], "off").unwrap();
        let plan = Plan::of(&graph, &frame, &Grouping::folded());
        let mut nodes: Vec<(&str, &str)> = plan
            .nodes
            .iter()
            .map(|n| (n.label.as_str(), n.kind))
            .collect();
        nodes.sort();
        assert_eq!(
            nodes,
            vec![
                ("d", "database"),
                ("e", "service"),
                ("x", "namespace"),
                ("y", "namespace")
            ]
        );
        // a → b is inside x; a → c and b → c are one edge from x to y.
        assert_eq!(edges_of(&plan), vec!["e → x (1)", "x → y (2)", "y → d (1)"]);
        let x = plan.nodes.iter().find(|n| n.label == "x").unwrap();
        assert!(x.stats.starts_with("2 services"), "{}", x.stats);
        assert!(x.href.contains("expand=x"), "{}", x.href);
        let merged = plan.edges.iter().find(|e| e.edges.len() == 2).unwrap();
        assert!(merged.label.ends_with("2 edges"), "{}", merged.label);

        // x opened: its services drawn in its frame, y still one box.
        let grouping = Grouping {
            by_namespace: true,
            expanded: BTreeSet::from(["x".to_string()]),
        };
        let plan = Plan::of(&graph, &frame, &grouping);
        assert_eq!(
            edges_of(&plan),
            vec![
                "a → b (1)",
                "a → y (1)",
                "b → y (1)",
                "e → a (1)",
                "y → d (1)"
            ]
        );
        let framed: Vec<(&str, Option<&str>)> = plan
            .nodes
            .iter()
            .map(|n| (n.label.as_str(), n.frame.as_deref()))
            .filter(|(_, frame)| frame.is_some())
            .collect();
        assert_eq!(framed, vec![("a", Some("x")), ("b", Some("x"))]);

        // Not grouped: every service as itself.
        let plan = Plan::of(&graph, &frame, &Grouping::default());
        assert_eq!(plan.nodes.len(), 5);
        assert_eq!(plan.edges.len(), 5);
        assert!(plan.nodes.iter().all(|n| n.frame.is_none()));
    }

    #[test]
    fn labels_that_would_cover_each_other_are_moved_apart() {
        let label = |x: f64, y: f64| MapEdge {
            from: 0,
            to: 1,
            path: String::new(),
            dashed: false,
            width: 1.0,
            health: "healthy",
            label: "1.48/s · 0 % · p99 10.3 ms".into(),
            label_x: x,
            label_y: y,
            href: String::new(),
            breaker: None,
            title: String::new(),
            idle: false,
        };
        // Three on one spot, one close below them, one far to the right.
        let mut edges = vec![
            label(100.0, 50.0),
            label(100.0, 50.0),
            label(104.0, 52.0),
            label(100.0, 60.0),
            label(900.0, 50.0),
        ];
        spread_labels(&mut edges);
        let mut ys: Vec<f64> = edges[..4].iter().map(|e| e.label_y).collect();
        ys.sort_by(f64::total_cmp);
        for pair in ys.windows(2) {
            assert!(pair[1] - pair[0] >= LABEL_HEIGHT, "{ys:?}");
        }
        assert_eq!(ys[0], 50.0);
        assert_eq!(edges[4].label_y, 50.0);
    }

    #[test]
    fn a_label_stays_on_its_stretch_clear_of_the_boxes_at_its_ends() {
        // 80 px each side, 80 % of the way along 210 px: moved back to clear the callee.
        let (x, y) = label_at((0.0, 0.0), (210.0, 105.0), 0.8, 80.0);
        assert_eq!(x, 124.0);
        assert_eq!(y, 62.0);
        // Room to spare: where it was asked.
        assert_eq!(label_at((0.0, 0.0), (210.0, 0.0), 0.5, 40.0), (105.0, 0.0));
        // Wider than the stretch: in its middle.
        assert_eq!(label_at((0.0, 0.0), (100.0, 10.0), 0.8, 80.0), (50.0, 5.0));
    }

    #[test]
    fn a_path_goes_through_every_point_and_leaves_each_level() {
        let path = smooth_path(&[(0.0, 0.0), (100.0, 50.0), (200.0, 50.0)]);
        assert_eq!(
            path,
            "M 0.0 0.0 C 50.0 0.0, 50.0 50.0, 100.0 50.0 C 150.0 50.0, 150.0 50.0, 200.0 50.0"
        );
    }
}
