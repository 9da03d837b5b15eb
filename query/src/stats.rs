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

/// Calls counted while reading, summarized with [`Accumulator::summary`]. Accumulators
/// merge, so statistics of a window can be put together from stored pieces of it.
#[derive(Debug, Default, Clone)]
pub struct Accumulator {
    pub calls: u64,
    pub errors: u64,
    pub retries: u64,
    pub timeouts: u64,
    client: Histogram,
    server: Histogram,
    queue: Histogram,
    /// The breaker state of the latest call whose client reported one.
    breaker: Option<(i64, std::sync::Arc<str>)>,
    /// When the earliest call started: a rate counts from there, not from the window's
    /// start, so a platform started two minutes ago is not diluted over fifteen.
    first_ns: Option<i64>,
}

impl Accumulator {
    pub fn add(&mut self, call: &CallRow) {
        self.calls += 1;
        self.errors += u64::from(call.failed);
        self.retries += u64::from(call.retry);
        self.timeouts += u64::from(call.timeout);
        self.client.record(call.client_duration_ns);
        self.server.record(call.server_duration_ns);
        self.queue.record(call.queue_ns);
        if let Some(state) = &call.breaker_state {
            self.breaker_seen(call.start_ns, state);
        }
        self.first_seen(Some(call.start_ns));
    }

    /// Counts that an aggregation elsewhere (a cluster's) made of a set of calls: what
    /// [`Accumulator::add`] would have counted of them. Durations follow with
    /// [`Accumulator::durations_mut`].
    pub fn counted(counts: Counted) -> Self {
        Self {
            calls: counts.calls,
            errors: counts.errors,
            retries: counts.retries,
            timeouts: counts.timeouts,
            breaker: counts.breaker,
            first_ns: counts.first_ns,
            ..Self::default()
        }
    }

    /// The histogram of one kind of duration, to fill from buckets counted elsewhere.
    pub fn durations_mut(&mut self, kind: DurationKind) -> &mut Histogram {
        match kind {
            DurationKind::Client => &mut self.client,
            DurationKind::Server => &mut self.server,
            DurationKind::Queue => &mut self.queue,
        }
    }

    fn first_seen(&mut self, at_ns: Option<i64>) {
        self.first_ns = match (self.first_ns, at_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    /// Client-side durations (what the caller waited).
    pub fn client(&self) -> &Histogram {
        &self.client
    }

    /// Server-side durations (what the callee spent).
    pub fn server(&self) -> &Histogram {
        &self.server
    }

    /// When the earliest call started.
    pub fn first_ns(&self) -> Option<i64> {
        self.first_ns
    }

    /// Seconds of [from_ns, to_ns) during which these calls were observed: from the first
    /// call, or from the window's start if the first call is before it.
    pub fn observed_seconds(&self, from_ns: i64, to_ns: i64) -> f64 {
        observed_seconds(self.first_ns, from_ns, to_ns)
    }

    fn breaker_seen(&mut self, at_ns: i64, state: &std::sync::Arc<str>) {
        if self.breaker.as_ref().is_none_or(|(at, _)| *at <= at_ns) {
            self.breaker = Some((at_ns, state.clone()));
        }
    }

    /// About how much memory it holds on the heap, beyond its own size.
    pub fn heap_bytes(&self) -> usize {
        self.client.heap_bytes() + self.server.heap_bytes() + self.queue.heap_bytes()
    }

    /// Folds the durations recorded into their histograms: for an accumulator kept.
    pub fn settle(&mut self) {
        self.client.settle();
        self.server.settle();
        self.queue.settle();
    }

    pub fn merge(&mut self, other: &Accumulator) {
        self.calls += other.calls;
        self.errors += other.errors;
        self.retries += other.retries;
        self.timeouts += other.timeouts;
        self.client.merge(&other.client);
        self.server.merge(&other.server);
        self.queue.merge(&other.queue);
        if let Some((at, state)) = &other.breaker {
            self.breaker_seen(*at, state);
        }
        self.first_seen(other.first_ns);
    }

    pub fn summary(mut self, window_seconds: f64, thresholds: &HealthThresholds) -> Summary {
        self.settle();
        let client = self.client.percentiles();
        let server = self.server.percentiles();
        let queue = self.queue.percentiles();
        let error_rate = ratio(self.errors, self.calls);
        let rate_per_s = if window_seconds > 0.0 {
            self.calls as f64 / window_seconds
        } else {
            0.0
        };
        let queued_messages = self.queue.mean_ns().map(|mean| rate_per_s * mean / 1e9);
        let breaker_state = self.breaker.map(|(_, state)| state.to_string());
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
            rate_per_s,
            rate_last_minute_per_s: None,
            errors: self.errors,
            error_rate,
            latency_ms: client,
            server_latency_ms: server,
            queue_ms: queue,
            queued_messages,
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

/// What [`Accumulator::counted`] takes.
#[derive(Debug, Default)]
pub struct Counted {
    pub calls: u64,
    pub errors: u64,
    pub retries: u64,
    pub timeouts: u64,
    /// When the latest call that reported a breaker state started, and the state.
    pub breaker: Option<(i64, std::sync::Arc<str>)>,
    pub first_ns: Option<i64>,
}

/// The durations an accumulator keeps a histogram of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationKind {
    Client,
    Server,
    Queue,
}

impl DurationKind {
    pub const ALL: [DurationKind; 3] = [Self::Client, Self::Server, Self::Queue];

    /// The `calls` column it is read from.
    pub fn column(self) -> &'static str {
        match self {
            Self::Client => callwatch_storage::schema::CLIENT_DURATION_NS,
            Self::Server => callwatch_storage::schema::SERVER_DURATION_NS,
            Self::Queue => callwatch_storage::schema::QUEUE_NS,
        }
    }
}

/// Seconds of [from_ns, to_ns) from `first_ns` on (the whole window if it is earlier or
/// unknown).
pub fn observed_seconds(first_ns: Option<i64>, from_ns: i64, to_ns: i64) -> f64 {
    let start = first_ns.map_or(from_ns, |first| first.clamp(from_ns, to_ns));
    let whole = to_ns.saturating_sub(from_ns).max(0) as f64 / 1e9;
    // At least a second (or the whole window if shorter): one call just now is not a
    // thousand a second.
    (to_ns.saturating_sub(start).max(0) as f64 / 1e9).max(whole.min(1.0))
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Nearest-rank percentiles, in milliseconds, to three significant digits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

/// Durations counted in buckets three significant digits wide: exact below 1 µs, within
/// 1 % above. Unlike a list of durations, it is as small for a million calls as for a
/// thousand, and two of them add up. Buckets are kept sorted in two plain vectors: 12 bytes
/// a bucket, and merging is a walk along both.
///
/// A recorded value waits, as its bucket, in a short unsorted list, folded in once the list
/// is full or the histogram is settled: sorting a few hundred numbers and walking both lists
/// once costs less than a search and an insertion into the middle of each value. Every read
/// sees the values still waiting.
#[derive(Debug, Default, Clone)]
pub struct Histogram {
    buckets: Vec<u32>,
    counts: Vec<u64>,
    /// Values in `buckets`.
    total: u64,
    /// Buckets of the values recorded and not yet folded in.
    recorded: Vec<u32>,
}

/// Most recorded values waiting to be folded in.
const RECORDED: usize = 256;

impl Histogram {
    fn heap_bytes(&self) -> usize {
        crate::rollup::vec_heap_bytes(&self.buckets)
            + crate::rollup::vec_heap_bytes(&self.counts)
            + crate::rollup::vec_heap_bytes(&self.recorded)
    }

    pub fn record(&mut self, ns: Option<i64>) {
        if let Some(ns) = ns {
            self.recorded.push(bucket_of(ns));
            if self.recorded.len() >= RECORDED {
                self.fold();
            }
        }
    }

    /// Folds the recorded values in and lets go of their list: for a histogram kept.
    pub fn settle(&mut self) {
        self.fold();
        self.recorded = Vec::new();
    }

    /// Folds the recorded values into the buckets.
    fn fold(&mut self) {
        if self.recorded.is_empty() {
            return;
        }
        let mut recorded = std::mem::take(&mut self.recorded);
        recorded.sort_unstable();
        let mut sorted = Histogram {
            total: recorded.len() as u64,
            ..Histogram::default()
        };
        for run in recorded.chunk_by(|a, b| a == b) {
            sorted.buckets.push(run[0]);
            sorted.counts.push(run.len() as u64);
        }
        self.merge_folded(&sorted);
        recorded.clear();
        self.recorded = recorded;
    }

    /// Itself with every recorded value folded in: borrowed when none waits.
    fn folded(&self) -> std::borrow::Cow<'_, Histogram> {
        if self.recorded.is_empty() {
            std::borrow::Cow::Borrowed(self)
        } else {
            let mut folded = self.clone();
            folded.fold();
            std::borrow::Cow::Owned(folded)
        }
    }

    /// Adds `count` values to bucket `bucket` (as [`bucket_sql`] numbers it).
    pub fn add_bucket(&mut self, bucket: u32, count: u64) {
        if count == 0 {
            return;
        }
        match self.buckets.binary_search(&bucket) {
            Ok(at) => self.counts[at] += count,
            Err(at) => {
                self.buckets.insert(at, bucket);
                self.counts.insert(at, count);
            }
        }
        self.total += count;
    }

    pub fn merge(&mut self, other: &Histogram) {
        self.recorded.extend_from_slice(&other.recorded);
        self.merge_folded(other);
        if self.recorded.len() >= RECORDED {
            self.fold();
        }
    }

    /// Merges the buckets of `other`, not its recorded values.
    fn merge_folded(&mut self, other: &Histogram) {
        if other.total == 0 {
            return;
        }
        if self.total == 0 {
            self.buckets.clone_from(&other.buckets);
            self.counts.clone_from(&other.counts);
            self.total = other.total;
            return;
        }
        let capacity = self.buckets.len().max(other.buckets.len());
        let mut buckets = Vec::with_capacity(capacity);
        let mut counts = Vec::with_capacity(capacity);
        let (mut i, mut j) = (0, 0);
        while i < self.buckets.len() && j < other.buckets.len() {
            let (mine, theirs) = (self.buckets[i], other.buckets[j]);
            match mine.cmp(&theirs) {
                std::cmp::Ordering::Less => {
                    buckets.push(mine);
                    counts.push(self.counts[i]);
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    buckets.push(theirs);
                    counts.push(other.counts[j]);
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    buckets.push(mine);
                    counts.push(self.counts[i] + other.counts[j]);
                    i += 1;
                    j += 1;
                }
            }
        }
        buckets.extend_from_slice(&self.buckets[i..]);
        counts.extend_from_slice(&self.counts[i..]);
        buckets.extend_from_slice(&other.buckets[j..]);
        counts.extend_from_slice(&other.counts[j..]);
        self.buckets = buckets;
        self.counts = counts;
        self.total += other.total;
    }

    /// The mean, in ns, from each bucket's lower bound: within 1 % below the true mean.
    pub fn mean_ns(&self) -> Option<f64> {
        let this = self.folded();
        if this.total == 0 {
            return None;
        }
        let sum: f64 = this
            .buckets
            .iter()
            .zip(&this.counts)
            .map(|(bucket, count)| lower_bound(*bucket) as f64 * *count as f64)
            .sum();
        Some(sum / this.total as f64)
    }

    /// Buckets in use.
    pub fn len(&self) -> usize {
        self.folded().buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0 && self.recorded.is_empty()
    }

    /// Each bucket in use, by its lower bound in milliseconds, with its count, shortest first.
    pub fn buckets_ms(&self) -> impl Iterator<Item = (f64, u64)> + use<> {
        let this = self.folded();
        let buckets: Vec<(f64, u64)> = (this.buckets.iter().zip(&this.counts))
            .map(|(bucket, count)| (lower_bound(*bucket) as f64 / 1e6, *count))
            .collect();
        buckets.into_iter()
    }

    /// A duration (ns) that the `n` longest values reach: the lower bound of the bucket of
    /// the `n`-th longest. `None` if there are fewer than `n` values.
    pub fn reached_by_longest(&self, n: u64) -> Option<i64> {
        let this = self.folded();
        if n == 0 || this.total < n {
            return None;
        }
        let mut seen = 0;
        for (bucket, count) in this.buckets.iter().zip(&this.counts).rev() {
            seen += count;
            if seen >= n {
                return Some(lower_bound(*bucket));
            }
        }
        None
    }

    /// `None` without values. Each percentile is the lower bound of the bucket holding the
    /// value of that rank, so a duration with three significant digits comes out exact.
    pub fn percentiles(&self) -> Option<Percentiles> {
        let this = self.folded();
        if this.total == 0 {
            return None;
        }
        let at = |p: f64| {
            let rank = ((p * this.total as f64).ceil() as u64).clamp(1, this.total);
            let mut seen = 0;
            for (bucket, count) in this.buckets.iter().zip(&this.counts) {
                seen += count;
                if seen >= rank {
                    return lower_bound(*bucket) as f64 / 1e6;
                }
            }
            unreachable!("the counts add up to the total")
        };
        Some(Percentiles {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
        })
    }
}

/// Values below 1000 are their own bucket; above, a bucket is three leading digits and a
/// power of ten: 1000 + 900 buckets per power.
fn bucket_of(ns: i64) -> u32 {
    let value = ns.max(0) as u64;
    if value < 1000 {
        return value as u32;
    }
    // Durations below 4.3 s fit 32 bits, whose division is the faster one.
    let (power, leading) = match u32::try_from(value) {
        Ok(value) => {
            let power = value.ilog10() - 2;
            (power, value / TENS[power as usize] as u32)
        }
        Err(_) => {
            let power = value.ilog10() - 2;
            (power, (value / TENS[power as usize]) as u32)
        }
    };
    1000 + (power - 1) * 900 + (leading - 100)
}

/// 10^n for every n below 20 (`u64::MAX` is below 10^20).
const TENS: [u64; 20] = {
    let mut tens = [1u64; 20];
    let mut n = 1;
    while n < 20 {
        tens[n] = tens[n - 1] * 10;
        n += 1;
    }
    tens
};

/// [`bucket_of`] as a SQL expression over an integer column of nanoseconds, for
/// aggregations that run elsewhere: integer arithmetic only, so it numbers every value
/// exactly as `bucket_of` does.
pub fn bucket_sql(column: &str) -> String {
    let value = format!("greatest({column}, 0)");
    let mut sql = format!("CASE WHEN {value} < 1000 THEN {value}");
    // A value below 10^(power + 3) has `power` digits after its three leading ones.
    // The last, 16, is every value from 10^18 to i64::MAX (10^19 is no i64 literal).
    for power in 1..=15u32 {
        let below = 10u64.pow(power + 3);
        let divisor = 10u64.pow(power);
        let base = 1000 + (power - 1) * 900;
        sql.push_str(&format!(
            " WHEN {value} < {below} THEN {base} + {value} / {divisor} - 100"
        ));
    }
    sql.push_str(&format!(
        " ELSE {} + {value} / {} - 100 END",
        1000 + 15 * 900,
        10u64.pow(16)
    ));
    sql
}

fn lower_bound(bucket: u32) -> i64 {
    if bucket < 1000 {
        return i64::from(bucket);
    }
    let power = (bucket - 1000) / 900 + 1;
    let leading = u64::from((bucket - 1000) % 900 + 100);
    i64::try_from(leading.saturating_mul(10u64.pow(power))).unwrap_or(i64::MAX)
}

/// RED statistics of a set of calls over a window.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub calls: u64,
    /// Calls over the time they were observed in the window (from the first call on).
    pub rate_per_s: f64,
    /// Calls a second over the window's last minute, where the graph computed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_last_minute_per_s: Option<f64>,
    pub errors: u64,
    pub error_rate: f64,
    /// Client-side latency (what the caller waited).
    pub latency_ms: Option<Percentiles>,
    /// Server-side latency (what the callee spent).
    pub server_latency_ms: Option<Percentiles>,
    /// Consumer start − producer end, for async calls.
    pub queue_ms: Option<Percentiles>,
    /// Messages waiting for the consumer, on average over the window, for async calls:
    /// the rate times the mean queue time (Little's law). Spans carry no offsets, so this
    /// is the lag that can be known from them.
    pub queued_messages: Option<f64>,
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

    fn histogram(values_ns: impl IntoIterator<Item = i64>) -> Histogram {
        let mut histogram = Histogram::default();
        for ns in values_ns {
            histogram.record(Some(ns));
        }
        histogram
    }

    #[test]
    fn messages_waiting_are_the_rate_times_the_mean_queue_time() {
        // A message a second, three waiting 2 s and one 4 s: 2.5 s on average.
        let mut accumulator = Accumulator {
            calls: 4,
            queue: histogram([2, 2, 2, 4].map(|s| s * 1_000_000_000)),
            ..Accumulator::default()
        };
        assert_eq!(accumulator.queue.mean_ns(), Some(2.5e9));
        let summary = accumulator
            .clone()
            .summary(4.0, &HealthThresholds::default());
        assert_eq!(summary.queued_messages, Some(2.5));
        // Sync calls wait in no queue.
        accumulator.queue = Histogram::default();
        let summary = accumulator.summary(4.0, &HealthThresholds::default());
        assert_eq!(summary.queued_messages, None);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let p = histogram((1..=100).map(|ms| ms * 1_000_000))
            .percentiles()
            .unwrap();
        assert_eq!((p.p50, p.p95, p.p99), (50.0, 95.0, 99.0));
        let p = histogram([3_000_000]).percentiles().unwrap();
        assert_eq!((p.p50, p.p95, p.p99), (3.0, 3.0, 3.0));
        assert_eq!(Histogram::default().percentiles(), None);
        // Two halves merged give what the whole gives.
        let mut merged = histogram((1..=50).map(|ms| ms * 1_000_000));
        merged.merge(&histogram((51..=100).map(|ms| ms * 1_000_000)));
        assert_eq!(merged.percentiles(), Some(p_of(50.0, 95.0, 99.0)));
    }

    fn p_of(p50: f64, p95: f64, p99: f64) -> Percentiles {
        Percentiles { p50, p95, p99 }
    }

    #[test]
    fn the_longest_values_reach_the_bound_of_their_bucket() {
        let h = histogram((1..=100).map(|ms| ms * 1_000_000));
        assert_eq!(h.reached_by_longest(1), Some(100_000_000));
        assert_eq!(h.reached_by_longest(5), Some(96_000_000));
        assert_eq!(h.reached_by_longest(100), Some(1_000_000));
        assert_eq!(h.reached_by_longest(101), None);
        assert_eq!(h.reached_by_longest(0), None);
    }

    #[test]
    fn buckets_keep_three_significant_digits() {
        for ns in [
            0,
            1,
            999,
            1_000,
            1_009,
            123_456,
            49_800_000,
            98_765_432_100,
            i64::MAX,
        ] {
            let low = lower_bound(bucket_of(ns));
            assert!(low <= ns, "{ns}: {low}");
            assert!((ns - low) as f64 <= ns as f64 * 0.01, "{ns}: {low}");
            assert_eq!(bucket_of(low), bucket_of(ns), "{ns}");
        }
        assert_eq!(lower_bound(bucket_of(123_456)), 123_000);
        assert_eq!(lower_bound(bucket_of(49_800_000)), 49_800_000);
        assert_eq!(bucket_of(-5), 0);
    }

    #[test]
    fn buckets_are_three_leading_digits_and_a_power_of_ten() {
        // The definition, in 64 bits throughout.
        let defined = |value: i64| {
            let value = value as u64;
            if value < 1000 {
                return value as u32;
            }
            let power = value.ilog10() - 2;
            let leading = (value / 10u64.pow(power)) as u32;
            1000 + (power - 1) * 900 + (leading - 100)
        };
        let mut values = vec![i64::MAX, i64::MAX - 1];
        for power in 3..19 {
            let ten = 10i64.pow(power);
            values.extend([ten - 1, ten, ten + 1, 2 * ten - 1, 5 * ten + 7]);
        }
        let u32_max = i64::from(u32::MAX);
        values.extend(u32_max - 2..u32_max + 3);
        for value in values {
            assert_eq!(bucket_of(value), defined(value), "{value}");
        }
    }

    #[tokio::test]
    async fn the_sql_bucket_is_the_bucket() {
        let mut values: Vec<i64> = vec![-5, 0, 1, 999, 1_000, 1_009, 9_999, 10_000, i64::MAX];
        for power in 3..=18 {
            let at = 10i64.pow(power);
            values.extend([at - 1, at, at + 1, at / 1000 * 123 + 7]);
        }
        let list = values
            .iter()
            .map(|v| format!("(CAST({v} AS BIGINT))"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT v, {} AS bucket FROM (VALUES {list}) AS t(v)",
            bucket_sql("v")
        );
        let context = datafusion::prelude::SessionContext::new();
        let batches = context.sql(&sql).await.unwrap().collect().await.unwrap();
        let mut checked = 0;
        for batch in &batches {
            let value = arrow::array::cast::as_primitive_array::<arrow::datatypes::Int64Type>(
                batch.column(0),
            );
            let bucket =
                arrow::compute::cast(batch.column(1), &arrow::datatypes::DataType::Int64).unwrap();
            let bucket =
                arrow::array::cast::as_primitive_array::<arrow::datatypes::Int64Type>(&bucket);
            for row in 0..batch.num_rows() {
                assert_eq!(
                    bucket.value(row),
                    i64::from(bucket_of(value.value(row))),
                    "{}",
                    value.value(row)
                );
                checked += 1;
            }
        }
        assert_eq!(checked, values.len());
    }

    #[test]
    fn health_follows_the_thresholds() {
        let thresholds = HealthThresholds::default();
        let health = |calls: u64, errors: u64, ms: i64| {
            let mut acc = Accumulator::default();
            for i in 0..calls {
                acc.calls += 1;
                acc.errors += u64::from(i < errors);
                acc.client.record(Some(ms * 1_000_000));
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
