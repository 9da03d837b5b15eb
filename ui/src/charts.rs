//! Charts as SVG, drawn by templates: lines over time, latency histograms and a breaker's
//! state over the window.

use askama::Template;

use crate::dashboard::{clock, significant};

const WIDTH: f64 = 560.0;
const HEIGHT: f64 = 150.0;
/// Room for the axis labels.
const LEFT: f64 = 56.0;
const BOTTOM: f64 = 20.0;
const TOP: f64 = 8.0;

pub struct Tick {
    pub at: f64,
    pub label: String,
}

pub struct Line {
    pub name: &'static str,
    pub class: &'static str,
    pub points: String,
}

/// A point of a scatter plot, a link to what it stands for.
pub struct Dot {
    pub x: f64,
    pub y: f64,
    pub class: &'static str,
    pub href: String,
    pub title: String,
}

/// One thing a scatter plot shows: when it started, how long it took, whether it failed,
/// its link and its tooltip.
pub struct ScatterPoint {
    pub start_ns: i64,
    pub duration_ms: f64,
    pub failed: bool,
    pub href: String,
    pub title: String,
}

pub struct Bar {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
    pub class: &'static str,
    pub title: String,
}

#[derive(Template)]
#[template(path = "chart.html")]
pub struct Chart {
    pub title: String,
    pub width: f64,
    pub height: f64,
    pub left: f64,
    pub plot_bottom: f64,
    pub lines: Vec<Line>,
    pub bars: Vec<Bar>,
    pub y_ticks: Vec<Tick>,
    pub x_ticks: Vec<Tick>,
    pub dots: Vec<Dot>,
}

/// Round steps for an axis up to `max`: 1, 2 or 5 times a power of ten.
fn steps(max: f64) -> (f64, f64) {
    if max <= 0.0 || !max.is_finite() {
        return (1.0, 1.0);
    }
    let rough = max / 4.0;
    let power = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|s| *s >= rough)
        .unwrap_or(10.0 * power);
    (step, (max / step).ceil() * step)
}

impl Chart {
    fn frame(title: String, y_max: f64, unit: &str) -> (Self, f64) {
        let (step, top) = steps(y_max);
        let plot_bottom = HEIGHT - BOTTOM;
        let mut chart = Self {
            title,
            width: WIDTH,
            height: HEIGHT,
            left: LEFT,
            plot_bottom,
            lines: Vec::new(),
            bars: Vec::new(),
            y_ticks: Vec::new(),
            x_ticks: Vec::new(),
            dots: Vec::new(),
        };
        let mut value = 0.0;
        while value <= top + step / 2.0 {
            chart.y_ticks.push(Tick {
                at: plot_bottom - (plot_bottom - TOP) * value / top,
                label: format!("{}{unit}", significant(value)),
            });
            value += step;
        }
        (chart, top)
    }

    /// Lines over time: `starts` are the intervals' starts, each series a value per
    /// interval (none where the interval had no calls).
    pub fn lines(
        title: impl Into<String>,
        unit: &str,
        starts_ns: &[i64],
        step_ns: i64,
        series: Vec<(&'static str, &'static str, Vec<Option<f64>>)>,
    ) -> Self {
        let y_max = series
            .iter()
            .flat_map(|(_, _, values)| values.iter().flatten())
            .fold(0.0f64, |a, b| a.max(*b));
        let (mut chart, top) = Self::frame(title.into(), y_max, unit);
        let count = starts_ns.len().max(1) as f64;
        let x = |i: usize| LEFT + (WIDTH - LEFT - 8.0) * (i as f64 + 0.5) / count;
        for (name, class, values) in series {
            let points = values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| {
                    v.map(|v| {
                        let y = chart.plot_bottom - (chart.plot_bottom - TOP) * v / top;
                        format!("{:.1},{:.1}", x(i), y)
                    })
                })
                .collect::<Vec<_>>()
                .join(" ");
            chart.lines.push(Line {
                name,
                class,
                points,
            });
        }
        let span_ns = step_ns.saturating_mul(starts_ns.len() as i64);
        let every = (starts_ns.len() / 5).max(1);
        for (i, start) in starts_ns.iter().enumerate().step_by(every) {
            chart.x_ticks.push(Tick {
                at: x(i),
                label: clock(*start, span_ns),
            });
        }
        chart
    }

    /// A histogram: per bucket (its upper bound in ms), a count for each of `series`,
    /// drawn side by side.
    pub fn histogram(
        title: impl Into<String>,
        bounds_ms: &[f64],
        series: &[(&'static str, &'static str, Vec<u64>)],
    ) -> Self {
        let y_max = series
            .iter()
            .flat_map(|(_, _, counts)| counts.iter())
            .fold(0u64, |a, b| a.max(*b)) as f64;
        let (mut chart, top) = Self::frame(title.into(), y_max, "");
        let slot = (WIDTH - LEFT - 8.0) / bounds_ms.len().max(1) as f64;
        let bar = slot * 0.8 / series.len().max(1) as f64;
        for (s, (name, class, counts)) in series.iter().enumerate() {
            for (i, count) in counts.iter().enumerate() {
                let height = (chart.plot_bottom - TOP) * *count as f64 / top;
                chart.bars.push(Bar {
                    x: LEFT + slot * i as f64 + slot * 0.1 + bar * s as f64,
                    y: chart.plot_bottom - height,
                    width: bar,
                    height,
                    class,
                    title: format!(
                        "{name}: {count} calls ≤ {} ms",
                        significant(bounds_ms.get(i).copied().unwrap_or(0.0))
                    ),
                });
            }
            chart.lines.push(Line {
                name,
                class,
                points: String::new(),
            });
        }
        let every = (bounds_ms.len() / 8).max(1);
        for (i, bound) in bounds_ms.iter().enumerate().step_by(every) {
            chart.x_ticks.push(Tick {
                at: LEFT + slot * (i as f64 + 0.5),
                label: format!("≤{}", significant(*bound)),
            });
        }
        chart
    }

    /// Duration over start time across [from_ns, to_ns): a dot per point, red where it
    /// failed, each a link.
    pub fn scatter(
        title: impl Into<String>,
        from_ns: i64,
        to_ns: i64,
        points: Vec<ScatterPoint>,
    ) -> Self {
        let y_max = points.iter().map(|p| p.duration_ms).fold(0.0, f64::max);
        let (mut chart, top) = Self::frame(title.into(), y_max, " ms");
        let span = (to_ns - from_ns).max(1) as f64;
        let x = |ns: i64| {
            LEFT + (WIDTH - LEFT - 14.0) * ((ns - from_ns) as f64 / span).clamp(0.0, 1.0) + 3.0
        };
        chart.dots = points
            .into_iter()
            .map(|p| Dot {
                x: x(p.start_ns),
                y: chart.plot_bottom
                    - (chart.plot_bottom - TOP) * (p.duration_ms / top).clamp(0.0, 1.0),
                class: if p.failed { "failed" } else { "ok" },
                href: p.href,
                title: p.title,
            })
            .collect();
        for i in 0..=4 {
            let ns = from_ns + (to_ns - from_ns) / 4 * i;
            chart.x_ticks.push(Tick {
                at: x(ns),
                label: clock(ns, to_ns - from_ns),
            });
        }
        chart
    }

    pub fn svg(&self) -> String {
        self.render().unwrap_or_default()
    }
}

/// Latency buckets: 1-2-5 steps from the smallest to the largest duration, at most 24.
pub fn latency_buckets(durations_ms: &[f64]) -> Vec<f64> {
    let max = durations_ms.iter().copied().fold(0.0f64, f64::max);
    let min = durations_ms
        .iter()
        .copied()
        .filter(|d| *d > 0.0)
        .fold(f64::INFINITY, f64::min);
    if !min.is_finite() {
        return vec![1.0];
    }
    let mut bound = 10f64.powf(min.log10().floor());
    let mut bounds = Vec::new();
    while bounds.len() < 24 {
        for m in [1.0, 2.0, 5.0] {
            if bounds.last().is_none_or(|last| *last < max) {
                bounds.push(bound * m);
            }
        }
        if bounds.last().is_some_and(|last| *last >= max) {
            break;
        }
        bound *= 10.0;
    }
    bounds
}

/// How many of the durations fall into each bucket (at most its bound, above the last),
/// given as durations in ms with how many calls took each.
pub fn bucket_counts(
    bounds: &[f64],
    durations_ms: impl IntoIterator<Item = (f64, u64)>,
) -> Vec<u64> {
    let mut counts = vec![0u64; bounds.len()];
    for (duration, calls) in durations_ms {
        let i = bounds.partition_point(|b| *b < duration);
        if let Some(count) = counts.get_mut(i.min(bounds.len().saturating_sub(1))) {
            *count += calls;
        }
    }
    counts
}

/// A stretch of a breaker's state.
pub struct Stretch {
    pub x: f64,
    pub width: f64,
    pub state: &'static str,
    pub title: String,
}

/// One row of a breaker timeline: the states of one source across the window.
pub struct TimelineRow {
    pub label: &'static str,
    pub y: f64,
    pub stretches: Vec<Stretch>,
}

/// A source's transitions in a window: (at, state entered).
pub type StateChanges = Vec<(i64, &'static str)>;

/// One source of a timeline: its label, its state at the window's start, its changes in
/// the window, and when it was first seen (before that there is no data).
pub struct TimelineSource {
    pub label: &'static str,
    pub initial: &'static str,
    pub changes: StateChanges,
    pub first_seen_ns: i64,
}

/// The stretch of a timeline before a source was first seen.
pub const NO_DATA: &str = "no_data";

#[derive(Template)]
#[template(path = "timeline.html")]
pub struct Timeline {
    pub width: f64,
    pub height: f64,
    pub left: f64,
    pub rows: Vec<TimelineRow>,
    pub x_ticks: Vec<Tick>,
}

impl Timeline {
    /// A row per source, grey and hatched before the source was first seen.
    pub fn new(from_ns: i64, to_ns: i64, sources: Vec<TimelineSource>) -> Self {
        let left = 80.0;
        let span = (to_ns - from_ns).max(1) as f64;
        let x =
            |ns: i64| left + (WIDTH - left - 8.0) * ((ns - from_ns) as f64 / span).clamp(0.0, 1.0);
        let rows = sources
            .into_iter()
            .enumerate()
            .map(|(i, source)| {
                let mut stretches = Vec::new();
                let seen = source.first_seen_ns.clamp(from_ns, to_ns);
                if seen > from_ns {
                    stretches.push(Stretch {
                        x: x(from_ns),
                        width: x(seen) - x(from_ns),
                        state: NO_DATA,
                        title: format!("no data before {}", clock(seen, to_ns - from_ns)),
                    });
                }
                let (mut state, mut since) = (source.initial, seen);
                for (at, to) in source.changes.into_iter().chain([(to_ns, "")]) {
                    if at > since {
                        stretches.push(Stretch {
                            x: x(since),
                            width: x(at) - x(since),
                            state,
                            title: format!("{state} from {}", clock(since, to_ns - from_ns)),
                        });
                    }
                    (state, since) = (to, at.max(since));
                }
                TimelineRow {
                    label: source.label,
                    y: 4.0 + 26.0 * i as f64,
                    stretches,
                }
            })
            .collect::<Vec<_>>();
        let height = 4.0 + 26.0 * rows.len() as f64 + BOTTOM;
        let x_ticks = (0..=4)
            .map(|i| {
                let ns = from_ns + (to_ns - from_ns) / 4 * i;
                Tick {
                    at: x(ns),
                    label: clock(ns, to_ns - from_ns),
                }
            })
            .collect();
        Self {
            width: WIDTH,
            height,
            left,
            rows,
            x_ticks,
        }
    }

    pub fn svg(&self) -> String {
        self.render().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_take_round_steps() {
        assert_eq!(steps(9.0), (5.0, 10.0));
        let (step, top) = steps(0.3);
        assert!((step - 0.1).abs() < 1e-12 && (top - 0.3).abs() < 1e-12);
        assert_eq!(steps(0.0), (1.0, 1.0));
        assert_eq!(steps(1234.0), (500.0, 1500.0));
    }

    #[test]
    fn latencies_fall_into_1_2_5_buckets() {
        let durations = [0.3, 0.9, 1.5, 40.0, 250.0];
        let bounds = latency_buckets(&durations);
        assert_eq!(
            bounds,
            vec![
                0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0
            ]
        );
        let counts = bucket_counts(&bounds, durations.iter().map(|d| (*d, 1)));
        assert_eq!(counts.iter().sum::<u64>(), 5);
        assert_eq!(counts[2], 1, "0.3 ≤ 0.5");
        assert_eq!(counts[3], 1, "0.9 ≤ 1");
        assert_eq!(counts[11], 1, "250 ≤ 500");
    }

    #[test]
    fn a_timeline_covers_the_window() {
        let source = |first_seen_ns| TimelineSource {
            label: "inferred",
            initial: "closed",
            changes: vec![(40, "open"), (70, "half_open")],
            first_seen_ns,
        };
        let timeline = Timeline::new(0, 100, vec![source(-5), source(20)]);
        let states = |row: &TimelineRow| row.stretches.iter().map(|s| s.state).collect::<Vec<_>>();
        assert_eq!(states(&timeline.rows[0]), ["closed", "open", "half_open"]);
        assert_eq!(
            states(&timeline.rows[1]),
            [NO_DATA, "closed", "open", "half_open"]
        );
        for row in &timeline.rows {
            let total: f64 = row.stretches.iter().map(|s| s.width).sum();
            assert!((total - (WIDTH - 80.0 - 8.0)).abs() < 1e-6);
        }
        // The first call at 20: a fifth of the row has no data.
        let blank = &timeline.rows[1].stretches[0];
        assert!((blank.width - (WIDTH - 88.0) / 5.0).abs() < 1e-6);
    }
}
