//! A layered (Sugiyama) layout, left to right, of our own: it is linear in the size of the
//! graph apart from a few bounded sweeps, so a platform of 500 services lays out in
//! milliseconds where a general-purpose engine took minutes.
//!
//! 1. Cycles are broken by turning back the edges a depth-first search finds going back.
//! 2. Nodes go in columns by longest path; a source is pulled right next to its first callee.
//! 3. An edge that spans columns gets a virtual point in each column it crosses.
//! 4. Crossings are reduced by barycentre sweeps, keeping the order that crossed least.
//! 5. Rows: each column is placed where its neighbours pull it, without overlaps
//!    (least squares under order constraints, solved by pooling adjacent violators).

use std::time::{Duration, Instant};

/// Horizontal room between columns: edge labels sit there.
const COLUMN_GAP: f64 = 210.0;
/// Vertical room between two nodes of a column.
const ROW_GAP: f64 = 22.0;
/// The room an edge passing through a column takes.
const VIRTUAL_HEIGHT: f64 = 14.0;
const MARGIN: f64 = 24.0;
/// Most points (nodes and virtual points) a layout may have; a larger graph is drawn
/// coarser instead (see `map.rs`).
pub const MAX_POINTS: usize = 60_000;
/// Crossing reduction stops sweeping after this long, keeping the best order so far.
const SWEEP_BUDGET: Duration = Duration::from_millis(120);
const MAX_SWEEPS: usize = 12;
const PLACEMENT_PASSES: usize = 8;

/// A node's top-left corner and an edge's points, from its source's right side to its
/// target's left side (reversed for edges that go back).
#[derive(Debug, Clone)]
pub struct Layout {
    pub nodes: Vec<(f64, f64)>,
    pub edges: Vec<Vec<(f64, f64)>>,
    pub width: f64,
    pub height: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LayoutError {
    /// More points than [`MAX_POINTS`].
    TooLarge { points: usize },
}

/// Lays out nodes of `sizes` (width, height) joined by `edges` (source, target indices).
pub fn layout(sizes: &[(f64, f64)], edges: &[(usize, usize)]) -> Result<Layout, LayoutError> {
    let n = sizes.len();
    let dag = break_cycles(n, edges);
    let rank = rank(n, &dag);
    // Points: the nodes, then the virtual points of each long edge.
    let mut heights: Vec<f64> = sizes.iter().map(|s| s.1).collect();
    let mut point_rank = rank.clone();
    let mut chains: Vec<Vec<usize>> = Vec::with_capacity(edges.len());
    let mut links: Vec<(usize, usize)> = Vec::new();
    let total: usize = n + dag
        .iter()
        .map(|e| (rank[e.to] - rank[e.from]).saturating_sub(1))
        .sum::<usize>();
    if total > MAX_POINTS {
        return Err(LayoutError::TooLarge { points: total });
    }
    for edge in &dag {
        let mut chain = vec![edge.from];
        for r in rank[edge.from] + 1..rank[edge.to] {
            heights.push(VIRTUAL_HEIGHT);
            point_rank.push(r);
            chain.push(heights.len() - 1);
        }
        chain.push(edge.to);
        links.extend(chain.windows(2).map(|w| (w[0], w[1])));
        chains.push(chain);
    }
    let columns = rank.iter().copied().max().map_or(0, |r| r + 1);
    let mut up: Vec<Vec<usize>> = vec![Vec::new(); heights.len()];
    let mut down: Vec<Vec<usize>> = vec![Vec::new(); heights.len()];
    for &(a, b) in &links {
        down[a].push(b);
        up[b].push(a);
    }
    let order = order(columns, &point_rank, &up, &down, links.len());
    let ys = place(&order, &heights, &up, &down);

    // Columns are as wide as their widest node.
    let mut column_width = vec![0.0f64; columns];
    for (i, size) in sizes.iter().enumerate() {
        column_width[rank[i]] = column_width[rank[i]].max(size.0);
    }
    let mut column_x = Vec::with_capacity(columns);
    let mut x = MARGIN;
    for width in &column_width {
        column_x.push(x);
        x += width + COLUMN_GAP;
    }
    let width = (x - COLUMN_GAP + MARGIN).max(2.0 * MARGIN);
    let top = ys
        .iter()
        .zip(&heights)
        .map(|(y, h)| y - h / 2.0)
        .fold(f64::INFINITY, f64::min);
    let shift = if top.is_finite() { MARGIN - top } else { 0.0 };
    let bottom = ys
        .iter()
        .zip(&heights)
        .map(|(y, h)| y + h / 2.0 + shift)
        .fold(0.0, f64::max);
    // A node is centred in its column.
    let node_x = |i: usize| column_x[rank[i]] + (column_width[rank[i]] - sizes[i].0) / 2.0;
    let nodes = (0..n)
        .map(|i| (node_x(i), ys[i] + shift - sizes[i].1 / 2.0))
        .collect();
    let mut drawn = Vec::with_capacity(edges.len());
    let mut chain_of = dag.iter().zip(&chains);
    for &(from, to) in edges {
        if from >= n || to >= n {
            drawn.push(Vec::new());
            continue;
        }
        if from == to {
            drawn.push(self_loop(node_x(from), ys[from] + shift, sizes[from]));
            continue;
        }
        let Some((edge, chain)) = chain_of.next() else {
            break;
        };
        let mut points: Vec<(f64, f64)> = chain
            .iter()
            .map(|&p| {
                if p < n {
                    (node_x(p), ys[p] + shift)
                } else {
                    let r = point_rank[p];
                    (column_x[r] + column_width[r] / 2.0, ys[p] + shift)
                }
            })
            .collect();
        // Leave from the right side, arrive at the left side.
        if let Some(first) = points.first_mut() {
            first.0 += sizes[edge.from].0;
        }
        if edge.reversed {
            points.reverse();
        }
        drawn.push(points);
    }
    Ok(Layout {
        nodes,
        edges: drawn,
        width,
        height: bottom + MARGIN,
    })
}

/// A loop over the top of a node that calls itself.
fn self_loop(x: f64, center_y: f64, (width, height): (f64, f64)) -> Vec<(f64, f64)> {
    let top = center_y - height / 2.0;
    vec![
        (x + width * 0.65, top),
        (x + width * 0.5, top - 26.0),
        (x + width * 0.35, top),
    ]
}

/// An edge of the acyclic graph: `from` is in an earlier column than `to`.
#[derive(Debug, Clone, Copy)]
struct DagEdge {
    from: usize,
    to: usize,
    reversed: bool,
}

/// The edges (without self-loops), those a depth-first search finds going back reversed.
fn break_cycles(n: usize, edges: &[(usize, usize)]) -> Vec<DagEdge> {
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(a, b) in edges {
        if a != b && a < n && b < n {
            out[a].push(b);
        }
    }
    // 0: not seen, 1: on the search's path, 2: done.
    let mut state = vec![0u8; n];
    let mut back = std::collections::HashSet::new();
    for start in 0..n {
        if state[start] != 0 {
            continue;
        }
        let mut stack = vec![(start, 0usize)];
        state[start] = 1;
        while let Some((node, next)) = stack.last_mut() {
            let node = *node;
            if let Some(&child) = out[node].get(*next) {
                *next += 1;
                match state[child] {
                    0 => {
                        state[child] = 1;
                        stack.push((child, 0));
                    }
                    1 => {
                        back.insert((node, child));
                    }
                    _ => {}
                }
            } else {
                state[node] = 2;
                stack.pop();
            }
        }
    }
    edges
        .iter()
        .filter(|(a, b)| a != b && *a < n && *b < n)
        .map(|&(a, b)| {
            if back.contains(&(a, b)) {
                DagEdge {
                    from: b,
                    to: a,
                    reversed: true,
                }
            } else {
                DagEdge {
                    from: a,
                    to: b,
                    reversed: false,
                }
            }
        })
        .collect()
}

/// Each node's column: the longest path from a source to it; then each source moves right
/// to just before its nearest callee, so an entry point sits beside what it calls.
fn rank(n: usize, dag: &[DagEdge]) -> Vec<usize> {
    let mut out: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut indegree = vec![0usize; n];
    for edge in dag {
        out[edge.from].push(edge.to);
        indegree[edge.to] += 1;
    }
    let sources: Vec<bool> = indegree.iter().map(|d| *d == 0).collect();
    let mut ready: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut topological = Vec::with_capacity(n);
    let mut rank = vec![0usize; n];
    while let Some(node) = ready.pop() {
        topological.push(node);
        for &child in &out[node] {
            rank[child] = rank[child].max(rank[node] + 1);
            indegree[child] -= 1;
            if indegree[child] == 0 {
                ready.push(child);
            }
        }
    }
    for &node in topological.iter().rev() {
        if sources[node]
            && let Some(nearest) = out[node].iter().map(|&c| rank[c]).min()
        {
            rank[node] = nearest.saturating_sub(1);
        }
    }
    rank
}

/// The order of the points in each column, with few crossings.
fn order(
    columns: usize,
    rank: &[usize],
    up: &[Vec<usize>],
    down: &[Vec<usize>],
    links: usize,
) -> Vec<Vec<usize>> {
    let mut order: Vec<Vec<usize>> = vec![Vec::new(); columns];
    for (point, &r) in rank.iter().enumerate() {
        order[r].push(point);
    }
    let mut position = vec![0usize; rank.len()];
    let index = |order: &[Vec<usize>], position: &mut [usize]| {
        for column in order {
            for (i, &p) in column.iter().enumerate() {
                position[p] = i;
            }
        }
    };
    index(&order, &mut position);
    let started = Instant::now();
    let mut best = order.clone();
    let mut fewest = crossings(&order, &position, down, links);
    for sweep in 0..MAX_SWEEPS {
        if fewest == 0 || started.elapsed() > SWEEP_BUDGET {
            break;
        }
        let downward = sweep % 2 == 0;
        let columns_in_turn: Vec<usize> = if downward {
            (1..columns).collect()
        } else {
            (0..columns.saturating_sub(1)).rev().collect()
        };
        for c in columns_in_turn {
            let neighbours = if downward { up } else { down };
            let mut keyed: Vec<(f64, usize)> = order[c]
                .iter()
                .map(|&p| {
                    let near = &neighbours[p];
                    let key = if near.is_empty() {
                        position[p] as f64
                    } else {
                        near.iter().map(|&q| position[q] as f64).sum::<f64>() / near.len() as f64
                    };
                    (key, p)
                })
                .collect();
            keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
            order[c] = keyed.into_iter().map(|(_, p)| p).collect();
            for (i, &p) in order[c].iter().enumerate() {
                position[p] = i;
            }
        }
        let now = crossings(&order, &position, down, links);
        if now < fewest {
            fewest = now;
            best = order.clone();
        }
    }
    best
}

/// Crossings between each pair of neighbouring columns: inversions of the targets'
/// positions when links are sorted by their sources' positions, counted with a Fenwick tree.
fn crossings(order: &[Vec<usize>], position: &[usize], down: &[Vec<usize>], links: usize) -> u64 {
    let mut total = 0u64;
    let mut targets: Vec<usize> = Vec::with_capacity(links);
    for (c, column) in order.iter().enumerate() {
        let Some(next) = order.get(c + 1) else { break };
        targets.clear();
        for &p in column {
            let start = targets.len();
            targets.extend(down[p].iter().map(|&q| position[q]));
            targets[start..].sort_unstable();
        }
        let mut tree = vec![0u64; next.len() + 1];
        for (seen, &t) in targets.iter().enumerate() {
            // Links seen so far that end below this one cross it.
            let mut at_or_before = 0;
            let mut i = t + 1;
            while i > 0 {
                at_or_before += tree[i];
                i -= i & i.wrapping_neg();
            }
            total += seen as u64 - at_or_before;
            let mut i = t + 1;
            while i < tree.len() {
                tree[i] += 1;
                i += i & i.wrapping_neg();
            }
        }
    }
    total
}

/// The centre row of every point: packed first, then pulled toward its neighbours
/// column by column, alternating directions, never overlapping within a column.
fn place(
    order: &[Vec<usize>],
    heights: &[f64],
    up: &[Vec<usize>],
    down: &[Vec<usize>],
) -> Vec<f64> {
    let mut y = vec![0.0; heights.len()];
    for column in order {
        let mut at = 0.0;
        for &p in column {
            y[p] = at + heights[p] / 2.0;
            at += heights[p] + ROW_GAP;
        }
    }
    for pass in 0..PLACEMENT_PASSES {
        let columns: Vec<usize> = if pass % 2 == 0 {
            (0..order.len()).collect()
        } else {
            (0..order.len()).rev().collect()
        };
        for c in columns {
            let column = &order[c];
            let wanted: Vec<f64> = column
                .iter()
                .map(|&p| {
                    let (above, below): (&[usize], &[usize]) = match pass % 3 {
                        0 => (&up[p], &[]),
                        1 => (&[], &down[p]),
                        _ => (&up[p], &down[p]),
                    };
                    let count = above.len() + below.len();
                    if count == 0 {
                        y[p]
                    } else {
                        above.iter().chain(below).map(|&q| y[q]).sum::<f64>() / count as f64
                    }
                })
                .collect();
            let gaps: Vec<f64> = column
                .windows(2)
                .map(|w| (heights[w[0]] + heights[w[1]]) / 2.0 + ROW_GAP)
                .collect();
            for (&p, placed) in column.iter().zip(spaced_nearest(&wanted, &gaps)) {
                y[p] = placed;
            }
        }
    }
    y
}

/// The rows closest to `wanted` (least squares) with row i+1 at least `gaps[i]` below row
/// i. Subtracting the running gap turns it into a monotone regression: pool adjacent
/// violators.
fn spaced_nearest(wanted: &[f64], gaps: &[f64]) -> Vec<f64> {
    let mut offset = Vec::with_capacity(wanted.len());
    let mut running = 0.0;
    for i in 0..wanted.len() {
        offset.push(running);
        if let Some(gap) = gaps.get(i) {
            running += gap;
        }
    }
    // Blocks of (mean, count).
    let mut blocks: Vec<(f64, usize)> = Vec::with_capacity(wanted.len());
    for (w, o) in wanted.iter().zip(&offset) {
        blocks.push((w - o, 1));
        while blocks.len() > 1 {
            let (last, before) = (blocks[blocks.len() - 1], blocks[blocks.len() - 2]);
            if before.0 <= last.0 {
                break;
            }
            let count = before.1 + last.1;
            let mean = (before.0 * before.1 as f64 + last.0 * last.1 as f64) / count as f64;
            blocks.pop();
            *blocks.last_mut().expect("two blocks") = (mean, count);
        }
    }
    blocks
        .iter()
        .flat_map(|(mean, count)| std::iter::repeat_n(*mean, *count))
        .zip(&offset)
        .map(|(z, o)| z + o)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxes(n: usize) -> Vec<(f64, f64)> {
        vec![(120.0, 44.0); n]
    }

    fn overlaps(layout: &Layout, sizes: &[(f64, f64)]) -> bool {
        let n = sizes.len();
        (0..n).any(|i| {
            (i + 1..n).any(|j| {
                let (a, b) = (layout.nodes[i], layout.nodes[j]);
                a.0 < b.0 + sizes[j].0
                    && b.0 < a.0 + sizes[i].0
                    && a.1 < b.1 + sizes[j].1
                    && b.1 < a.1 + sizes[i].1
            })
        })
    }

    #[test]
    fn callers_are_left_of_callees_and_nothing_overlaps() {
        // user → gateway → {orders, users}; orders → payments, orders → users.
        let edges = [(0, 1), (1, 2), (1, 3), (2, 4), (2, 3)];
        let sizes = boxes(5);
        let layout = layout(&sizes, &edges).unwrap();
        for &(a, b) in &edges {
            assert!(layout.nodes[a].0 < layout.nodes[b].0, "{a} → {b}");
        }
        assert!(!overlaps(&layout, &sizes));
        for (edge, points) in edges.iter().zip(&layout.edges) {
            let first = points[0];
            let last = points[points.len() - 1];
            assert_eq!(first.0, layout.nodes[edge.0].0 + 120.0);
            assert_eq!(last.0, layout.nodes[edge.1].0);
        }
        // gateway → users crosses the column of orders, so it has a point there too.
        let points: Vec<usize> = layout.edges.iter().map(Vec::len).collect();
        assert_eq!(points, vec![2, 2, 3, 2, 2]);
    }

    #[test]
    fn a_cycle_is_drawn_with_its_back_edge_reversed() {
        let edges = [(0, 1), (1, 2), (2, 0), (1, 1)];
        let sizes = boxes(3);
        let layout = layout(&sizes, &edges).unwrap();
        assert!(!overlaps(&layout, &sizes));
        // 2 → 0 goes back: it starts at 2's left side and ends at 0's right side.
        let back = &layout.edges[2];
        assert_eq!(back[0].0, layout.nodes[2].0);
        assert_eq!(back[back.len() - 1].0, layout.nodes[0].0 + 120.0);
        // The self-loop sits over its node.
        assert!(layout.edges[3].iter().all(|p| p.1 <= layout.nodes[1].1));
    }

    #[test]
    fn a_long_edge_gets_a_point_in_each_column_it_crosses() {
        let edges = [(0, 1), (1, 2), (2, 3), (0, 3)];
        let layout = layout(&boxes(4), &edges).unwrap();
        assert_eq!(layout.edges[3].len(), 4);
    }

    #[test]
    fn sweeps_remove_the_crossing_of_two_crossed_pairs() {
        // a → d and b → c, given in crossed order, come out uncrossed.
        let edges = [(0, 3), (1, 2)];
        let layout = layout(&boxes(4), &edges).unwrap();
        let (a, b, c, d) = (
            layout.nodes[0].1,
            layout.nodes[1].1,
            layout.nodes[2].1,
            layout.nodes[3].1,
        );
        assert_eq!(a < b, d < c);
    }

    #[test]
    fn rows_are_as_near_as_the_gaps_allow() {
        assert_eq!(spaced_nearest(&[0.0, 0.0], &[10.0]), vec![-5.0, 5.0]);
        assert_eq!(
            spaced_nearest(&[0.0, 50.0, 51.0], &[10.0, 10.0]),
            vec![0.0, 45.5, 55.5]
        );
    }

    #[test]
    fn too_many_points_is_an_error_not_a_minute_of_work() {
        // A chain of 3 000 nodes, and an edge from each to the last: ~4.5 M virtual points.
        let n = 3_000;
        let mut edges: Vec<(usize, usize)> = (0..n - 1).map(|i| (i, i + 1)).collect();
        edges.extend((0..n - 2).map(|i| (i, n - 1)));
        assert!(matches!(
            layout(&boxes(n), &edges),
            Err(LayoutError::TooLarge { .. })
        ));
    }
}
