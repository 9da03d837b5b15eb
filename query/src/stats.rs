//! RED statistics of a set of calls, and health by configurable thresholds.

use std::time::Duration;

use callwatch_storage::CallRow;
use serde::Serialize;

/// When an edge or a service is degraded or failing (Kiali's idea, our numbers).
#[derive(Debug, Clone, Copy)]
pub struct HealthThresholds {
    /// Error rate (0..1) from which it is degraded.
    pub degraded_error_rate: f64,
    /// Error rate (0..1) from which it is failing.
    pub failing_error_rate: f64,
    /// p99 latency above which it is degraded.
    pub p99_budget: Duration,
}

impl Default for HealthThresholds {
    fn default() -> Self {
        Self {
            degraded_error_rate: 0.001,
            failing_error_rate: 0.10,
            p99_budget: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Idle,
    Healthy,
    Degraded,
    Failing,
}

/// Calls counted while reading, summarized with [`Accumulator::summary`].
#[derive(Debug, Default, Clone)]
pub struct Accumulator {
    pub calls: u64,
    pub errors: u64,
    pub retries: u64,
    pub timeouts: u64,
    client_ns: Vec<i64>,
    server_ns: Vec<i64>,
    queue_ns: Vec<i64>,
    /// The breaker state of the latest call whose client reported one.
    breaker: Option<(i64, String)>,
}

impl Accumulator {
    pub fn add(&mut self, call: &CallRow) {
        self.calls += 1;
        self.errors += u64::from(call.failed);
        self.retries += u64::from(call.retry);
        self.timeouts += u64::from(call.timeout);
        self.client_ns.extend(call.client_duration_ns);
        self.server_ns.extend(call.server_duration_ns);
        self.queue_ns.extend(call.queue_ns);
        if let Some(state) = &call.breaker_state
            && self
                .breaker
                .as_ref()
                .is_none_or(|(at, _)| *at <= call.start_ns)
        {
            self.breaker = Some((call.start_ns, state.to_string()));
        }
    }

    pub fn summary(mut self, window_seconds: f64, thresholds: &HealthThresholds) -> Summary {
        let client = Percentiles::of(&mut self.client_ns);
        let server = Percentiles::of(&mut self.server_ns);
        let queue = Percentiles::of(&mut self.queue_ns);
        let error_rate = ratio(self.errors, self.calls);
        let breaker_state = self.breaker.map(|(_, state)| state);
        let p99 = client.or(server).map(|p| p.p99);
        let health = if self.calls == 0 {
            Health::Idle
        } else if error_rate >= thresholds.failing_error_rate
            || breaker_state.as_deref() == Some("open")
        {
            Health::Failing
        } else if error_rate >= thresholds.degraded_error_rate
            || p99.is_some_and(|p99| p99 > thresholds.p99_budget.as_secs_f64() * 1000.0)
            || breaker_state.as_deref() == Some("half_open")
        {
            Health::Degraded
        } else {
            Health::Healthy
        };
        Summary {
            calls: self.calls,
            rate_per_s: if window_seconds > 0.0 {
                self.calls as f64 / window_seconds
            } else {
                0.0
            },
            errors: self.errors,
            error_rate,
            latency_ms: client,
            server_latency_ms: server,
            queue_ms: queue,
            retries: self.retries,
            // Attempts per first attempt: 1.0 when nothing is retried.
            retry_amplification: self.calls.max(1) as f64
                / (self.calls - self.retries).max(1) as f64,
            timeouts: self.timeouts,
            breaker_state,
            health,
        }
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Exact nearest-rank percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

impl Percentiles {
    /// `None` without values.
    pub fn of(values_ns: &mut [i64]) -> Option<Self> {
        if values_ns.is_empty() {
            return None;
        }
        values_ns.sort_unstable();
        let at = |p: f64| {
            let rank = (p * values_ns.len() as f64).ceil() as usize;
            values_ns[rank.clamp(1, values_ns.len()) - 1] as f64 / 1e6
        };
        Some(Self {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
        })
    }
}

/// RED statistics of a set of calls over a window.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub calls: u64,
    pub rate_per_s: f64,
    pub errors: u64,
    pub error_rate: f64,
    /// Client-side latency (what the caller waited).
    pub latency_ms: Option<Percentiles>,
    /// Server-side latency (what the callee spent).
    pub server_latency_ms: Option<Percentiles>,
    /// Consumer start − producer end, for async calls.
    pub queue_ms: Option<Percentiles>,
    pub retries: u64,
    pub retry_amplification: f64,
    pub timeouts: u64,
    /// The state the client's breaker reported on the latest call that carried one.
    pub breaker_state: Option<String>,
    pub health: Health,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut values: Vec<i64> = (1..=100).map(|ms| ms * 1_000_000).collect();
        let p = Percentiles::of(&mut values).unwrap();
        assert_eq!((p.p50, p.p95, p.p99), (50.0, 95.0, 99.0));
        let mut one = vec![3_000_000];
        let p = Percentiles::of(&mut one).unwrap();
        assert_eq!((p.p50, p.p95, p.p99), (3.0, 3.0, 3.0));
        assert_eq!(Percentiles::of(&mut []), None);
    }

    #[test]
    fn health_follows_the_thresholds() {
        let thresholds = HealthThresholds::default();
        let health = |calls: u64, errors: u64, ms: i64| {
            let mut acc = Accumulator::default();
            for i in 0..calls {
                acc.calls += 1;
                acc.errors += u64::from(i < errors);
                acc.client_ns.push(ms * 1_000_000);
            }
            acc.summary(60.0, &thresholds).health
        };
        assert_eq!(health(0, 0, 1), Health::Idle);
        assert_eq!(health(10_000, 0, 5), Health::Healthy);
        assert_eq!(health(10_000, 10, 5), Health::Degraded);
        assert_eq!(health(10_000, 9, 5), Health::Healthy);
        assert_eq!(health(100, 10, 5), Health::Failing);
        assert_eq!(health(100, 0, 1_500), Health::Degraded);
    }
}
