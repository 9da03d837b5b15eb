//! resilience4j's CircuitBreaker as a state machine over observed calls: its settings, with
//! resilience4j's defaults and names, and the transitions a sequence of calls causes.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// A state as clients report it (already normalized to lower case with `_`): resilience4j's
    /// `forced_open` counts as open, `disabled` and `metrics_only` as closed.
    pub fn parse(reported: &str) -> Option<Self> {
        match reported {
            "closed" | "disabled" | "metrics_only" => Some(Self::Closed),
            "open" | "forced_open" => Some(Self::Open),
            "half_open" => Some(Self::HalfOpen),
            _ => None,
        }
    }

    /// The value of the `callwatch_breaker_state` gauge.
    pub fn gauge(self) -> u8 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlidingWindowType {
    #[serde(alias = "COUNT_BASED")]
    CountBased,
    #[serde(alias = "TIME_BASED")]
    TimeBased,
}

/// A breaker's configuration, named as resilience4j names it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSettings {
    pub sliding_window_type: SlidingWindowType,
    /// Calls (count-based) or seconds (time-based).
    pub sliding_window_size: u32,
    pub minimum_number_of_calls: u32,
    /// Percent of failed calls at which the breaker opens.
    pub failure_rate_threshold: f64,
    /// Percent of slow calls at which the breaker opens.
    pub slow_call_rate_threshold: f64,
    pub slow_call_duration_threshold: Duration,
    pub wait_duration_in_open_state: Duration,
    pub permitted_number_of_calls_in_half_open_state: u32,
}

impl Default for BreakerSettings {
    /// resilience4j's defaults.
    fn default() -> Self {
        Self {
            sliding_window_type: SlidingWindowType::CountBased,
            sliding_window_size: 100,
            minimum_number_of_calls: 100,
            failure_rate_threshold: 50.0,
            slow_call_rate_threshold: 100.0,
            slow_call_duration_threshold: Duration::from_secs(60),
            wait_duration_in_open_state: Duration::from_secs(60),
            permitted_number_of_calls_in_half_open_state: 10,
        }
    }
}

impl BreakerSettings {
    /// Rejects what resilience4j's builder rejects.
    pub fn validate(&self) -> Result<(), String> {
        let percent = |name: &str, value: f64| {
            if value > 0.0 && value <= 100.0 {
                Ok(())
            } else {
                Err(format!(
                    "{name} must be above 0 and at most 100, not {value}"
                ))
            }
        };
        percent("failure_rate_threshold", self.failure_rate_threshold)?;
        percent("slow_call_rate_threshold", self.slow_call_rate_threshold)?;
        let positive = |name: &str, value: u32| {
            if value >= 1 {
                Ok(())
            } else {
                Err(format!("{name} must be at least 1"))
            }
        };
        positive("sliding_window_size", self.sliding_window_size)?;
        positive("minimum_number_of_calls", self.minimum_number_of_calls)?;
        positive(
            "permitted_number_of_calls_in_half_open_state",
            self.permitted_number_of_calls_in_half_open_state,
        )?;
        if self.wait_duration_in_open_state < Duration::from_millis(1) {
            return Err("wait_duration_in_open_state must be at least 1ms".into());
        }
        Ok(())
    }

    /// As resilience4j does, a count-based window never needs more calls than it holds.
    fn minimum_calls(&self) -> u32 {
        match self.sliding_window_type {
            SlidingWindowType::CountBased => {
                self.minimum_number_of_calls.min(self.sliding_window_size)
            }
            SlidingWindowType::TimeBased => self.minimum_number_of_calls,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub at_ns: i64,
    pub from: BreakerState,
    pub to: BreakerState,
}

/// Calls, failed calls and slow calls of a window or part of it.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    calls: u32,
    failed: u32,
    slow: u32,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.calls += other.calls;
        self.failed += other.failed;
        self.slow += other.slow;
    }

    fn remove(&mut self, other: Tally) {
        self.calls -= other.calls;
        self.failed -= other.failed;
        self.slow -= other.slow;
    }
}

/// The closed state's sliding window: the last N outcomes, or the outcomes of the last N
/// epoch seconds in per-second buckets (resilience4j's partial aggregations).
#[derive(Debug)]
enum Window {
    Count(VecDeque<Tally>),
    Time(VecDeque<(i64, Tally)>),
}

/// One breaker, fed the calls of its edge in the order they start.
#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    state: BreakerState,
    window: Window,
    total: Tally,
    opened_at_ns: i64,
    half_open_permits: u32,
    half_open: Tally,
}

impl Breaker {
    /// Memory the breaker's window holds beyond the breaker itself.
    pub fn window_bytes(&self) -> usize {
        match &self.window {
            Window::Count(window) => window.capacity() * std::mem::size_of::<Tally>(),
            Window::Time(window) => window.capacity() * std::mem::size_of::<(i64, Tally)>(),
        }
    }

    pub fn new(settings: BreakerSettings) -> Self {
        let window = match settings.sliding_window_type {
            SlidingWindowType::CountBased => Window::Count(VecDeque::new()),
            SlidingWindowType::TimeBased => Window::Time(VecDeque::new()),
        };
        Self {
            settings,
            state: BreakerState::Closed,
            window,
            total: Tally::default(),
            opened_at_ns: 0,
            half_open_permits: 0,
            half_open: Tally::default(),
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    pub fn settings(&self) -> &BreakerSettings {
        &self.settings
    }

    /// A call that went out at `at_ns`. As in resilience4j without automatic transition, an
    /// open breaker turns half-open at the first call after its wait; a call the breaker
    /// would not have permitted is not counted. The outcome counts at the call's start (the
    /// whole call is known by then). Returns the transitions it caused.
    pub fn call(&mut self, at_ns: i64, failed: bool, duration: Duration) -> Vec<Transition> {
        let mut transitions = Vec::new();
        let wait = duration_ns(self.settings.wait_duration_in_open_state);
        if self.state == BreakerState::Open && at_ns >= self.opened_at_ns.saturating_add(wait) {
            transitions.push(self.transition(at_ns, BreakerState::HalfOpen));
        }
        let outcome = Tally {
            calls: 1,
            failed: u32::from(failed),
            slow: u32::from(duration > self.settings.slow_call_duration_threshold),
        };
        match self.state {
            BreakerState::Closed => {
                self.record(at_ns, outcome);
                if self.total.calls >= self.settings.minimum_calls() && self.over(self.total) {
                    transitions.push(self.open(at_ns));
                }
            }
            BreakerState::HalfOpen => {
                let permitted = self.settings.permitted_number_of_calls_in_half_open_state;
                if self.half_open_permits < permitted {
                    self.half_open_permits += 1;
                    self.half_open.add(outcome);
                    if self.half_open.calls == permitted {
                        transitions.push(if self.over(self.half_open) {
                            self.open(at_ns)
                        } else {
                            self.transition(at_ns, BreakerState::Closed)
                        });
                    }
                }
            }
            BreakerState::Open => {}
        }
        transitions
    }

    /// A call the client's own breaker turned away at `at_ns`: evidence that it was open.
    /// A closed breaker here opens; half-open ones turn calls away beyond their permits.
    pub fn rejected(&mut self, at_ns: i64) -> Option<Transition> {
        (self.state == BreakerState::Closed).then(|| self.open(at_ns))
    }

    fn record(&mut self, at_ns: i64, outcome: Tally) {
        self.total.add(outcome);
        match &mut self.window {
            Window::Count(outcomes) => {
                outcomes.push_back(outcome);
                if outcomes.len() > self.settings.sliding_window_size as usize
                    && let Some(oldest) = outcomes.pop_front()
                {
                    self.total.remove(oldest);
                }
            }
            Window::Time(seconds) => {
                let second = at_ns.div_euclid(1_000_000_000);
                let oldest_kept = second - i64::from(self.settings.sliding_window_size) + 1;
                while let Some(&(bucket, tally)) = seconds.front()
                    && bucket < oldest_kept
                {
                    seconds.pop_front();
                    self.total.remove(tally);
                }
                match seconds.back_mut() {
                    Some((bucket, tally)) if *bucket >= second => tally.add(outcome),
                    _ => seconds.push_back((second, outcome)),
                }
            }
        }
    }

    fn over(&self, tally: Tally) -> bool {
        let rate = |count: u32| f64::from(count) * 100.0 / f64::from(tally.calls);
        tally.calls > 0
            && (rate(tally.failed) >= self.settings.failure_rate_threshold
                || rate(tally.slow) >= self.settings.slow_call_rate_threshold)
    }

    fn open(&mut self, at_ns: i64) -> Transition {
        self.opened_at_ns = at_ns;
        self.transition(at_ns, BreakerState::Open)
    }

    fn transition(&mut self, at_ns: i64, to: BreakerState) -> Transition {
        // Each state starts with empty metrics, as resilience4j's do.
        match &mut self.window {
            Window::Count(outcomes) => outcomes.clear(),
            Window::Time(seconds) => seconds.clear(),
        }
        self.total = Tally::default();
        self.half_open_permits = 0;
        self.half_open = Tally::default();
        let transition = Transition {
            at_ns,
            from: self.state,
            to,
        };
        self.state = to;
        transition
    }
}

fn duration_ns(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::BreakerState::*;
    use super::*;

    const MS: i64 = 1_000_000;
    const FAST: Duration = Duration::from_millis(5);

    /// Feeds calls one millisecond apart from `first_ms`, failing where `pattern` says `x`.
    fn feed(breaker: &mut Breaker, first_ms: i64, pattern: &str) -> Vec<(i64, BreakerState)> {
        pattern
            .chars()
            .filter(|c| !c.is_whitespace())
            .enumerate()
            .flat_map(|(i, c)| breaker.call((first_ms + i as i64) * MS, c == 'x', FAST))
            .map(|t| (t.at_ns / MS, t.to))
            .collect()
    }

    fn small() -> BreakerSettings {
        BreakerSettings {
            sliding_window_size: 10,
            minimum_number_of_calls: 5,
            permitted_number_of_calls_in_half_open_state: 4,
            wait_duration_in_open_state: Duration::from_secs(1),
            ..BreakerSettings::default()
        }
    }

    #[test]
    fn with_resilience4j_defaults_nothing_opens_before_a_hundred_calls() {
        let mut breaker = Breaker::new(BreakerSettings::default());
        // 99 failures: every one failed, but the minimum of 100 calls is not reached.
        assert!(feed(&mut breaker, 0, &"x".repeat(99)).is_empty());
        assert_eq!(breaker.state(), Closed);
        // The 100th call brings the failure rate over 50 % with the minimum met.
        assert_eq!(feed(&mut breaker, 99, "x"), [(99, Open)]);
    }

    #[test]
    fn opens_at_the_exact_call_that_reaches_the_failure_rate() {
        let mut breaker = Breaker::new(BreakerSettings::default());
        // 100 calls, 49 failed: 49 % stays closed; the window then slides.
        let calls = format!("{}{}", "x".repeat(49), ".".repeat(51));
        assert!(feed(&mut breaker, 0, &calls).is_empty());
        // The 101st call fails and the first (a failure) leaves: still 49 of 100.
        assert!(feed(&mut breaker, 100, "x").is_empty());
        // Calls 2..49 leave as failures come in; the first success leaves at call 150, when
        // the window holds 50 failures of 100: 50 % opens it at exactly that call.
        let transitions = feed(&mut breaker, 101, &"x".repeat(49));
        assert_eq!(transitions, [(149, Open)]);
    }

    #[test]
    fn open_turns_half_open_at_the_first_call_after_the_wait_then_closes_or_reopens() {
        let mut breaker = Breaker::new(small());
        assert_eq!(feed(&mut breaker, 0, "..xxx"), [(4, Open)], "3 of 5 ≥ 50 %");
        // Calls within the second of waiting are not permitted and change nothing.
        assert!(feed(&mut breaker, 5, ".....").is_empty());
        assert_eq!(breaker.state(), Open);
        // 1,004 ms is the first call at or after 4 + 1,000 ms: half-open, then four trial
        // calls with two failures (50 %): open again at the fourth.
        assert_eq!(
            feed(&mut breaker, 1_004, "x.x."),
            [(1_004, HalfOpen), (1_007, Open)]
        );
        // The fifth call in half-open would not have been permitted; once open it is ignored.
        assert!(feed(&mut breaker, 1_008, "x").is_empty());
        // After the next wait: one failure in four trials (25 %) closes it.
        assert_eq!(
            feed(&mut breaker, 2_007, ".x.."),
            [(2_007, HalfOpen), (2_010, Closed)]
        );
        // Closed again with a fresh window: four failures are under the minimum of five.
        assert!(feed(&mut breaker, 2_011, "xxxx").is_empty());
        assert_eq!(feed(&mut breaker, 2_015, "x"), [(2_015, Open)]);
    }

    #[test]
    fn half_open_permits_only_its_trial_calls() {
        let mut breaker = Breaker::new(small());
        feed(&mut breaker, 0, "xxxxx");
        // Three successful trials, then a fourth: closed after exactly four permitted calls.
        assert_eq!(feed(&mut breaker, 1_004, "..."), [(1_004, HalfOpen)]);
        assert_eq!(breaker.state(), HalfOpen);
        assert_eq!(feed(&mut breaker, 1_007, "."), [(1_007, Closed)]);
    }

    #[test]
    fn slow_calls_open_it_only_when_the_whole_window_is_slow_at_the_default_rate() {
        let settings = BreakerSettings {
            slow_call_duration_threshold: Duration::from_secs(1),
            ..small()
        };
        let mut breaker = Breaker::new(settings);
        let slow = Duration::from_millis(1_500);
        let mut opened = Vec::new();
        for at in 0..10 {
            // Call 2 takes exactly the threshold: not slow (resilience4j: longer than it).
            let duration = if at == 2 {
                Duration::from_secs(1)
            } else {
                slow
            };
            opened.extend(breaker.call(at * MS, false, duration));
        }
        assert!(opened.is_empty(), "9 of 10 slow is 90 %, under 100 %");
        for at in 10..13 {
            opened.extend(breaker.call(at * MS, false, slow));
        }
        assert_eq!(
            opened
                .iter()
                .map(|t| (t.at_ns / MS, t.to))
                .collect::<Vec<_>>(),
            [(12, Open)],
            "call 2 leaves the window of ten at call 12: then all ten are slow"
        );
    }

    #[test]
    fn a_time_based_window_forgets_calls_older_than_its_seconds() {
        let settings = BreakerSettings {
            sliding_window_type: SlidingWindowType::TimeBased,
            sliding_window_size: 2,
            minimum_number_of_calls: 4,
            ..BreakerSettings::default()
        };
        let mut breaker = Breaker::new(settings);
        let second = 1_000 * MS;
        // Three failures in second 0, then in second 2 they are out of the 2-second window:
        // one success and three failures (75 %) open it only at the fourth call of second 2.
        for i in 0..3 {
            assert!(breaker.call(i * MS, true, FAST).is_empty());
        }
        assert!(breaker.call(2 * second, false, FAST).is_empty());
        assert!(breaker.call(2 * second + MS, true, FAST).is_empty());
        assert!(breaker.call(2 * second + 2 * MS, true, FAST).is_empty());
        let opened = breaker.call(2 * second + 3 * MS, true, FAST);
        assert_eq!(opened.len(), 1);
        assert_eq!(opened[0].at_ns, 2 * second + 3 * MS);
        // Second 1 and second 2 together are the window: calls a second apart still count.
        let mut breaker = Breaker::new(settings);
        breaker.call(second, true, FAST);
        breaker.call(second + MS, true, FAST);
        breaker.call(2 * second, false, FAST);
        assert_eq!(breaker.call(2 * second + MS, false, FAST)[0].to, Open);
    }

    #[test]
    fn a_rejected_call_opens_a_closed_breaker_and_leaves_others_alone() {
        let mut breaker = Breaker::new(small());
        assert_eq!(breaker.rejected(7 * MS).map(|t| t.to), Some(Open));
        assert_eq!(breaker.rejected(8 * MS), None);
        // The wait runs from the rejection.
        assert_eq!(feed(&mut breaker, 1_007, "."), [(1_007, HalfOpen)]);
        assert_eq!(
            breaker.rejected(1_008 * MS),
            None,
            "half-open turns calls away too"
        );
    }

    #[test]
    fn settings_are_checked_as_resilience4j_checks_them() {
        assert!(BreakerSettings::default().validate().is_ok());
        let zero = BreakerSettings {
            sliding_window_size: 0,
            ..BreakerSettings::default()
        };
        assert!(zero.validate().unwrap_err().contains("sliding_window_size"));
        let over = BreakerSettings {
            failure_rate_threshold: 120.0,
            ..BreakerSettings::default()
        };
        assert!(over.validate().is_err());
    }
}
