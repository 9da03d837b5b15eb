//! The service map: the graph laid out left to right in layers by `layout-rs`, then drawn
//! as SVG by our own template, so nodes and edges are links with our shapes and colours.

use askama::Template;
use callwatch_query::graph::Graph;
use callwatch_query::stats::Percentiles;
use layout::core::base::Orientation;
use layout::core::color::Color;
use layout::core::format::{ClipHandle, RenderBackend};
use layout::core::geometry::Point;
use layout::core::style::{LineStyleKind, StyleAttr};
use layout::std_shapes::shapes::{Arrow, Element, LineEndKind, ShapeKind};
use layout::topo::layout::VisualGraph;

use crate::dashboard::{Frame, health_name, ms, percent, rate};

/// A node as drawn: its box, kind (which picks the shape), health (the colour) and link.
pub struct MapNode {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
    pub kind: &'static str,
    pub health: &'static str,
    pub label: String,
    pub href: String,
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
    pub id: usize,
    pub path: String,
    pub dashed: bool,
    pub width: f64,
    pub health: &'static str,
    pub label: String,
    pub href: String,
    /// The breaker's state when it is not closed.
    pub breaker: Option<&'static str>,
    pub title: String,
    pub head_start: bool,
    pub head_end: bool,
}

#[derive(Template)]
#[template(path = "map.html")]
pub struct Map {
    pub width: f64,
    pub height: f64,
    pub nodes: Vec<MapNode>,
    pub edges: Vec<MapEdge>,
}

impl Map {
    /// The map of `graph`, with links that keep `frame`'s range.
    pub fn of(graph: &Graph, frame: &Frame) -> Result<Self, String> {
        if graph.nodes.is_empty() {
            return Ok(Self {
                width: 0.0,
                height: 0.0,
                nodes: Vec::new(),
                edges: Vec::new(),
            });
        }
        let mut visual = VisualGraph::new(Orientation::LeftToRight);
        let look = StyleAttr::new(Color::fast("black"), 1, None, 0, 13);
        let handles: Vec<_> = graph
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let width = 40.0 + 9.0 * node.id.chars().count().min(40) as f64;
                visual.add_node(Element::create_with_properties(
                    ShapeKind::new_box(""),
                    look.clone(),
                    Orientation::LeftToRight,
                    Point::new(width, 44.0),
                    format!("n{i}"),
                ))
            })
            .collect();
        let index = |id: &str| graph.nodes.iter().position(|n| n.id == id);
        let max_rate = graph
            .edges
            .iter()
            .map(|e| e.summary.rate_per_s)
            .fold(0.0, f64::max);
        let mut labels = Vec::with_capacity(graph.edges.len());
        for (i, edge) in graph.edges.iter().enumerate() {
            let (Some(from), Some(to)) = (index(&edge.source), index(&edge.target)) else {
                continue;
            };
            let label = edge_label(
                edge.summary.rate_per_s,
                edge.summary.error_rate,
                edge.summary.latency_ms,
            );
            let style = if edge.call_type == "async" {
                LineStyleKind::Dashed
            } else {
                LineStyleKind::Normal
            };
            visual.add_edge(
                Arrow::with_properties(
                    LineEndKind::None,
                    LineEndKind::Arrow,
                    style,
                    &label,
                    &look,
                    format!("e{i}"),
                    &None,
                    &None,
                ),
                handles[from],
                handles[to],
            );
            labels.push(label);
        }
        let mut drawing = Drawing::default();
        // layout-rs asserts on graphs it cannot place; a page must say so, not fail.
        let laid_out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            visual.do_it(false, false, false, &mut drawing);
        }));
        if laid_out.is_err() {
            return Err(
                "the service map could not be laid out; the tables below hold the same graph"
                    .into(),
            );
        }
        let (min, max) = drawing.bounds();
        let margin = 16.0;
        let shift = |p: Point| Point::new(p.x - min.x + margin, p.y - min.y + margin);
        let nodes = drawing
            .boxes
            .iter()
            .filter_map(|(i, xy, size)| {
                let node = graph.nodes.get(*i)?;
                let at = shift(*xy);
                Some(MapNode {
                    x: at.x,
                    y: at.y,
                    width: size.x,
                    height: size.y,
                    kind: node.kind,
                    health: health_name(node.summary.health),
                    label: node.id.clone(),
                    href: frame.service_link(&node.id),
                })
            })
            .collect();
        let edges = drawing
            .arrows
            .iter()
            .filter_map(|arrow| {
                let edge = graph.edges.get(arrow.edge)?;
                let mut path = String::new();
                let points: Vec<(Point, Point)> = arrow
                    .path
                    .iter()
                    .map(|(a, b)| (shift(*a), shift(*b)))
                    .collect();
                if points.len() < 2 {
                    return None;
                }
                path.push_str(&format!(
                    "M {:.1} {:.1} C {:.1} {:.1}, {:.1} {:.1}, {:.1} {:.1}",
                    points[0].0.x,
                    points[0].0.y,
                    points[0].1.x,
                    points[0].1.y,
                    points[1].0.x,
                    points[1].0.y,
                    points[1].1.x,
                    points[1].1.y
                ));
                for (a, b) in &points[2..] {
                    path.push_str(&format!(" S {:.1} {:.1}, {:.1} {:.1}", a.x, a.y, b.x, b.y));
                }
                let share = if max_rate > 0.0 {
                    edge.summary.rate_per_s / max_rate
                } else {
                    0.0
                };
                let breaker = edge
                    .breaker
                    .as_ref()
                    .map(|b| b.state.as_str())
                    .filter(|state| *state != "closed");
                let destination = edge
                    .destination
                    .as_deref()
                    .map(|d| format!(" via {d}"))
                    .unwrap_or_default();
                Some(MapEdge {
                    id: arrow.edge,
                    path,
                    dashed: arrow.dashed,
                    width: 1.5 + 4.5 * share.sqrt(),
                    health: health_name(edge.summary.health),
                    label: labels.get(arrow.edge).cloned().unwrap_or_default(),
                    href: frame.edge_link(&edge.source, &edge.target),
                    breaker,
                    title: format!(
                        "{} → {} ({}{destination})",
                        edge.source, edge.target, edge.call_type
                    ),
                    head_start: arrow.heads.0,
                    head_end: arrow.heads.1,
                })
            })
            .collect();
        Ok(Self {
            width: max.x - min.x + 2.0 * margin,
            height: max.y - min.y + 2.0 * margin,
            nodes,
            edges,
        })
    }
}

/// `rate · error % · p99`, the label every edge carries.
fn edge_label(rate_per_s: f64, error_rate: f64, latency: Option<Percentiles>) -> String {
    format!(
        "{} · {} · p99 {}",
        rate(rate_per_s),
        percent(error_rate),
        ms(latency.map(|p| p.p99))
    )
}

struct DrawnArrow {
    edge: usize,
    path: Vec<(Point, Point)>,
    dashed: bool,
    heads: (bool, bool),
}

/// What layout-rs draws, kept as positions: nodes and edges are found again by the
/// `n{i}` and `e{i}` properties they were given.
#[derive(Default)]
struct Drawing {
    boxes: Vec<(usize, Point, Point)>,
    arrows: Vec<DrawnArrow>,
    min: Option<Point>,
    max: Option<Point>,
}

impl Drawing {
    fn grow(&mut self, at: Point, size: Point) {
        let (low, high) = (at, Point::new(at.x + size.x, at.y + size.y));
        self.min = Some(match self.min {
            Some(m) => Point::new(m.x.min(low.x), m.y.min(low.y)),
            None => low,
        });
        self.max = Some(match self.max {
            Some(m) => Point::new(m.x.max(high.x), m.y.max(high.y)),
            None => high,
        });
    }

    fn bounds(&self) -> (Point, Point) {
        (
            self.min.unwrap_or(Point::zero()),
            self.max.unwrap_or(Point::zero()),
        )
    }
}

fn numbered(properties: &Option<String>, prefix: char) -> Option<usize> {
    properties.as_deref()?.strip_prefix(prefix)?.parse().ok()
}

impl RenderBackend for Drawing {
    fn draw_rect(
        &mut self,
        xy: Point,
        size: Point,
        _look: &StyleAttr,
        properties: Option<String>,
        _clip: Option<ClipHandle>,
    ) {
        if let Some(node) = numbered(&properties, 'n') {
            self.grow(xy, size);
            self.boxes.push((node, xy, size));
        }
    }

    fn draw_line(&mut self, _: Point, _: Point, _: &StyleAttr, _: Option<String>) {}

    fn draw_circle(&mut self, _: Point, _: Point, _: &StyleAttr, _: Option<String>) {}

    fn draw_text(&mut self, _: Point, _: &str, _: &StyleAttr) {}

    fn draw_arrow(
        &mut self,
        path: &[(Point, Point)],
        dashed: bool,
        heads: (bool, bool),
        _look: &StyleAttr,
        properties: Option<String>,
        _text: &str,
    ) {
        let Some(edge) = numbered(&properties, 'e') else {
            return;
        };
        for (a, b) in path {
            self.grow(*a, Point::zero());
            self.grow(*b, Point::zero());
        }
        self.arrows.push(DrawnArrow {
            edge,
            path: path.to_vec(),
            dashed,
            heads,
        });
    }

    fn create_clip(&mut self, _: Point, _: Point, _: usize) -> ClipHandle {
        0
    }
}
