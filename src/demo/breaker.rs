//! The client-side circuit breaker of the simulated order-service, with the rules of
//! resilience4j's count-based CircuitBreaker. Each call asks for permission at its start and
//! its outcome is recorded at once (the simulator knows it), so replaying the recorded calls
//! in start order through these rules gives the same transitions.

use std::collections::VecDeque;

pub use callwatch_query::breaker::BreakerState;
use callwatch_query::breaker::SlidingWindowType;
use callwatch_query::breakers::BreakerOverrides;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BreakerConfig {
    pub sliding_window_size: usize,
    pub minimum_number_of_calls: usize,
    /// Percent of failed calls in the window at which the breaker opens.
    pub failure_rate_threshold: f64,
    /// Percent of slow calls in the window at which the breaker opens.
    pub slow_call_rate_threshold: f64,
    pub slow_call_duration_threshold_ms: u64,
    pub wait_duration_in_open_state_ms: u64,
    pub permitted_number_of_calls_in_half_open_state: usize,
}

impl BreakerConfig {
    /// The demo's breaker: resilience4j's rules with a window small enough to act within
    /// seconds at demo traffic rates.
    pub const DEMO: Self = Self {
        sliding_window_size: 20,
        minimum_number_of_calls: 10,
        failure_rate_threshold: 50.0,
        slow_call_rate_threshold: 100.0,
        slow_call_duration_threshold_ms: 1_000,
        wait_duration_in_open_state_ms: 10_000,
        permitted_number_of_calls_in_half_open_state: 5,
    };

    /// These settings as a breaker rule of callwatch's config file.
    pub fn overrides(&self, client: &str, server: &str) -> BreakerOverrides {
        let ms = |ms: u64| Some(format!("{ms}ms"));
        BreakerOverrides {
            client: Some(client.to_string()),
            server: Some(server.to_string()),
            sliding_window_type: Some(SlidingWindowType::CountBased),
            sliding_window_size: Some(self.sliding_window_size as u32),
            minimum_number_of_calls: Some(self.minimum_number_of_calls as u32),
            failure_rate_threshold: Some(self.failure_rate_threshold),
            slow_call_rate_threshold: Some(self.slow_call_rate_threshold),
            slow_call_duration_threshold: ms(self.slow_call_duration_threshold_ms),
            wait_duration_in_open_state: ms(self.wait_duration_in_open_state_ms),
            permitted_number_of_calls_in_half_open_state: Some(
                self.permitted_number_of_calls_in_half_open_state as u32,
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition {
    pub at_ns: u64,
    pub from: BreakerState,
    pub to: BreakerState,
}

#[derive(Debug, Clone, Copy)]
struct Outcome {
    failed: bool,
    slow: bool,
}

#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
    window: VecDeque<Outcome>,
    opened_at_ns: u64,
    half_open_permits: usize,
    half_open_outcomes: Vec<Outcome>,
    pub transitions: Vec<Transition>,
    pub rejected_calls: u64,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: BreakerState::Closed,
            window: VecDeque::with_capacity(config.sliding_window_size),
            opened_at_ns: 0,
            half_open_permits: 0,
            half_open_outcomes: Vec::new(),
            transitions: Vec::new(),
            rejected_calls: 0,
        }
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// Asks to make a call at `now_ns`. Returns whether it may go out and the state the
    /// client reports on its span. As in resilience4j (without automatic transition), an
    /// open breaker turns half-open at the first call after the wait.
    pub fn try_acquire(&mut self, now_ns: u64) -> (bool, BreakerState) {
        let wait_ns = self.config.wait_duration_in_open_state_ms * 1_000_000;
        if self.state == BreakerState::Open && now_ns >= self.opened_at_ns + wait_ns {
            self.transition(now_ns, BreakerState::HalfOpen);
        }
        let permitted = match self.state {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => {
                let free = self.half_open_permits
                    < self.config.permitted_number_of_calls_in_half_open_state;
                self.half_open_permits += usize::from(free);
                free
            }
        };
        if !permitted {
            self.rejected_calls += 1;
        }
        (permitted, self.state)
    }

    /// Records the outcome of a permitted call that started at `now_ns`.
    pub fn record(&mut self, now_ns: u64, failed: bool, duration_ns: u64) {
        // resilience4j: slow is longer than the threshold.
        let slow = duration_ns > self.config.slow_call_duration_threshold_ms * 1_000_000;
        let outcome = Outcome { failed, slow };
        match self.state {
            BreakerState::Closed => {
                if self.window.len() == self.config.sliding_window_size {
                    self.window.pop_front();
                }
                self.window.push_back(outcome);
                let minimum = self
                    .config
                    .minimum_number_of_calls
                    .min(self.config.sliding_window_size);
                if self.window.len() >= minimum && self.over_threshold(self.window.iter()) {
                    self.open(now_ns);
                }
            }
            BreakerState::HalfOpen => {
                self.half_open_outcomes.push(outcome);
                if self.half_open_outcomes.len()
                    == self.config.permitted_number_of_calls_in_half_open_state
                {
                    if self.over_threshold(self.half_open_outcomes.iter()) {
                        self.open(now_ns);
                    } else {
                        self.window.clear();
                        self.transition(now_ns, BreakerState::Closed);
                    }
                }
            }
            // A call permitted before the breaker opened finishes while it is open: not counted.
            BreakerState::Open => {}
        }
    }

    fn over_threshold<'a>(&self, outcomes: impl Iterator<Item = &'a Outcome>) -> bool {
        let (mut total, mut failed, mut slow) = (0.0, 0.0, 0.0);
        for outcome in outcomes {
            total += 1.0;
            failed += f64::from(u8::from(outcome.failed));
            slow += f64::from(u8::from(outcome.slow));
        }
        total > 0.0
            && (failed * 100.0 / total >= self.config.failure_rate_threshold
                || slow * 100.0 / total >= self.config.slow_call_rate_threshold)
    }

    fn open(&mut self, now_ns: u64) {
        self.opened_at_ns = now_ns;
        self.window.clear();
        self.transition(now_ns, BreakerState::Open);
    }

    fn transition(&mut self, now_ns: u64, to: BreakerState) {
        self.half_open_permits = 0;
        self.half_open_outcomes.clear();
        self.transitions.push(Transition {
            at_ns: now_ns,
            from: self.state,
            to,
        });
        self.state = to;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BreakerState::*;

    const MS: u64 = 1_000_000;

    fn call(breaker: &mut Breaker, at_ms: u64, failed: bool) -> bool {
        let (permitted, _) = breaker.try_acquire(at_ms * MS);
        if permitted {
            breaker.record(at_ms * MS, failed, 5 * MS);
        }
        permitted
    }

    fn states(breaker: &Breaker) -> Vec<(u64, BreakerState)> {
        breaker
            .transitions
            .iter()
            .map(|t| (t.at_ns / MS, t.to))
            .collect()
    }

    #[test]
    fn opens_at_the_call_that_reaches_the_threshold_once_the_minimum_is_met() {
        let mut breaker = Breaker::new(BreakerConfig::DEMO);
        // Nine failures: under the minimum of ten calls, still closed.
        for at in 0..9 {
            assert!(call(&mut breaker, at, true));
        }
        assert!(breaker.transitions.is_empty());
        assert!(call(&mut breaker, 9, true));
        assert_eq!(states(&breaker), vec![(9, Open)]);
        assert!(!call(&mut breaker, 10, false), "open rejects");
        assert_eq!(breaker.rejected_calls, 1);
    }

    #[test]
    fn half_opens_after_the_wait_and_closes_or_reopens_on_the_trial_calls() {
        let mut breaker = Breaker::new(BreakerConfig::DEMO);
        for at in 0..10 {
            call(&mut breaker, at, true);
        }
        assert!(
            !call(&mut breaker, 10_008, false),
            "still open 1 ms before the wait ends"
        );
        // Five trial calls, three failing: 60 % >= 50 %, open again.
        for (i, failed) in [true, false, true, false, true].into_iter().enumerate() {
            assert!(call(&mut breaker, 10_009 + i as u64, failed));
        }
        assert!(
            !call(&mut breaker, 10_014, false),
            "the sixth is not permitted"
        );
        assert_eq!(
            states(&breaker),
            vec![(9, Open), (10_009, HalfOpen), (10_013, Open)]
        );
        // Next trial: one failure in five is 20 %: closed.
        for (i, failed) in [false, true, false, false, false].into_iter().enumerate() {
            assert!(call(&mut breaker, 20_013 + i as u64, failed));
        }
        assert_eq!(
            states(&breaker)[3..],
            [(20_013, HalfOpen), (20_017, Closed)]
        );
    }

    #[test]
    fn slow_calls_open_only_when_all_of_the_window_is_slow() {
        let mut breaker = Breaker::new(BreakerConfig::DEMO);
        for at in 0..10 {
            breaker.try_acquire(at * MS);
            breaker.record(at * MS, false, if at == 3 { MS } else { 2_000 * MS });
        }
        assert!(breaker.transitions.is_empty(), "90 % slow is under 100 %");
        for at in 10..30 {
            breaker.try_acquire(at * MS);
            breaker.record(at * MS, false, 2_000 * MS);
        }
        assert_eq!(
            states(&breaker),
            vec![(23, Open)],
            "the fast call 3 left the window at call 23"
        );
    }
}
