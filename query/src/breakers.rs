//! The circuit breaker of every client → server edge, over time: the state clients report on
//! their spans, and the state inferred by replaying each edge's calls in start order through
//! resilience4j's rules ([`crate::breaker`]). Calls come from the store as the pairer
//! derives them (after those already stored), wait a little for earlier calls of their edge
//! that are still on their way, and are then replayed once.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{RecordBatch, StringBuilder, TimestampNanosecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use callwatch_storage::{
    CallColumns, CallRow, CallType, CallsUpdate, Interner, NodeKind, Store, escape_label, schema,
};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize, Serializer};

use crate::breaker::{Breaker, BreakerSettings, BreakerState, SlidingWindowType, Transition};
use crate::error::QueryError;

/// Transitions kept per edge and source; the oldest go first.
const MAX_TRANSITIONS: usize = 10_000;
/// Seconds with rejected calls kept per edge.
const MAX_REJECTED_SECONDS: usize = 100_000;
/// Edges followed; calls of further edges are counted, not replayed.
const MAX_EDGES: usize = 10_000;
/// A call is emitted when its last span arrives, so an edge's calls wait as long as its
/// longest call took, up to this.
const MAX_HELD_DURATION: Duration = Duration::from_secs(60);

/// Where a breaker's state comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Reported,
    Inferred,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reported => "reported",
            Self::Inferred => "inferred",
        }
    }
}

/// A transition as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TransitionView {
    #[serde(serialize_with = "rfc3339")]
    pub at: i64,
    pub from: BreakerState,
    pub to: BreakerState,
}

impl From<Transition> for TransitionView {
    fn from(t: Transition) -> Self {
        Self {
            at: t.at_ns,
            from: t.from,
            to: t.to,
        }
    }
}

/// One edge's breaker over a window, as `/api/v1/breakers` and the graph's edges show it.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerView {
    pub client: String,
    pub server: String,
    /// The name the client gives its breaker (`circuit_breaker.name`), latest by call start.
    pub name: Option<String>,
    /// The reported state when the client reports one, else the inferred state.
    pub state: BreakerState,
    /// When the breaker entered `state` (or was first seen in it).
    #[serde(serialize_with = "rfc3339")]
    pub since: i64,
    pub source: Source,
    pub reported_state: Option<BreakerState>,
    pub inferred_state: BreakerState,
    /// The client reports a state and it is not the inferred one.
    pub disagreement: bool,
    /// Transitions of `source` in the window.
    pub transitions: Vec<TransitionView>,
    pub reported_transitions: Vec<TransitionView>,
    pub inferred_transitions: Vec<TransitionView>,
    /// Calls the client's breaker turned away in the window (counted per second of start).
    pub rejected_calls: u64,
    /// The start of the edge's first call seen: nothing is known of the breaker before it.
    #[serde(serialize_with = "rfc3339")]
    pub first_call: i64,
    /// When the client first reported a state, if it has.
    #[serde(skip)]
    pub first_report: Option<i64>,
}

fn rfc3339<S: Serializer>(ns: &i64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_rfc3339(*ns))
}

pub fn format_rfc3339(ns: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(ns).to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// A transition as it happens, for the webhook.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerEvent {
    pub client: String,
    pub server: String,
    pub name: Option<String>,
    pub source: Source,
    #[serde(serialize_with = "rfc3339")]
    pub at: i64,
    pub from: BreakerState,
    pub to: BreakerState,
    pub reported_state: Option<BreakerState>,
    pub inferred_state: BreakerState,
}

/// A breaker setting file section: every field optional, named as resilience4j names them
/// (snake case, or resilience4j's camel case).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerOverrides {
    /// Only in `[[breakers.edge]]`: the edge the settings are for.
    pub client: Option<String>,
    pub server: Option<String>,
    #[serde(alias = "slidingWindowType")]
    pub sliding_window_type: Option<SlidingWindowType>,
    #[serde(alias = "slidingWindowSize")]
    pub sliding_window_size: Option<u32>,
    #[serde(alias = "minimumNumberOfCalls")]
    pub minimum_number_of_calls: Option<u32>,
    #[serde(alias = "failureRateThreshold")]
    pub failure_rate_threshold: Option<f64>,
    #[serde(alias = "slowCallRateThreshold")]
    pub slow_call_rate_threshold: Option<f64>,
    #[serde(alias = "slowCallDurationThreshold")]
    pub slow_call_duration_threshold: Option<String>,
    #[serde(alias = "waitDurationInOpenState")]
    pub wait_duration_in_open_state: Option<String>,
    #[serde(alias = "permittedNumberOfCallsInHalfOpenState")]
    pub permitted_number_of_calls_in_half_open_state: Option<u32>,
}

fn parse_duration(name: &str, text: &Option<String>) -> Result<Option<Duration>, String> {
    text.as_deref()
        .map(|text| {
            humantime::parse_duration(text)
                .map_err(|e| format!("{name} = {text:?}: {e} (write e.g. \"60s\" or \"500ms\")"))
        })
        .transpose()
}

impl BreakerOverrides {
    fn apply(&self, base: BreakerSettings) -> Result<BreakerSettings, String> {
        let settings = BreakerSettings {
            sliding_window_type: self.sliding_window_type.unwrap_or(base.sliding_window_type),
            sliding_window_size: self.sliding_window_size.unwrap_or(base.sliding_window_size),
            minimum_number_of_calls: self
                .minimum_number_of_calls
                .unwrap_or(base.minimum_number_of_calls),
            failure_rate_threshold: self
                .failure_rate_threshold
                .unwrap_or(base.failure_rate_threshold),
            slow_call_rate_threshold: self
                .slow_call_rate_threshold
                .unwrap_or(base.slow_call_rate_threshold),
            slow_call_duration_threshold: parse_duration(
                "slow_call_duration_threshold",
                &self.slow_call_duration_threshold,
            )?
            .unwrap_or(base.slow_call_duration_threshold),
            wait_duration_in_open_state: parse_duration(
                "wait_duration_in_open_state",
                &self.wait_duration_in_open_state,
            )?
            .unwrap_or(base.wait_duration_in_open_state),
            permitted_number_of_calls_in_half_open_state: self
                .permitted_number_of_calls_in_half_open_state
                .unwrap_or(base.permitted_number_of_calls_in_half_open_state),
        };
        settings.validate()?;
        Ok(settings)
    }
}

/// The `[breakers]` section of the config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakersSection {
    /// Settings for every edge, over resilience4j's defaults.
    #[serde(default)]
    pub default: BreakerOverrides,
    /// Settings of one edge, over `default`.
    #[serde(default)]
    pub edge: Vec<BreakerOverrides>,
    /// A client failure at most this long with no server span is a call its breaker
    /// rejected (default 2ms).
    pub short_circuit_max_duration: Option<String>,
    /// On a node that pairs spans: how long a client's call waits for earlier-starting
    /// calls of its edge still on their way, beyond what its edge's longest call takes
    /// (default 1s).
    pub reorder_hold: Option<String>,
    /// On a query node, which gets calls as other nodes flush them: how long a call waits
    /// for earlier calls of its edge, beyond the pairing wait (default 5s).
    pub reorder_slack: Option<String>,
}

/// Breaker settings per edge, and how calls are read.
#[derive(Debug, Clone)]
pub struct BreakerOptions {
    default: BreakerSettings,
    edges: HashMap<(String, String), BreakerSettings>,
    short_circuit: Duration,
    /// How long a call is held before it is replayed (beyond its edge's longest call).
    hold: Duration,
    /// The hold of calls that come as other nodes flush them.
    following_hold: Duration,
    /// How long after its unpaired call a client's derived call may come.
    pairing_wait: Duration,
    /// Live calls are held for the whole hold after they arrive, however far behind the
    /// newest call they start: on a query node calls come a segment at a time, and one
    /// collector's segment of earlier calls may come after another's of later ones.
    hold_by_arrival: bool,
}

impl Default for BreakerOptions {
    fn default() -> Self {
        Self::new(&BreakersSection::default(), Duration::from_secs(10)).expect("defaults are valid")
    }
}

impl BreakerOptions {
    /// Options from the config file; `pairing_wait` is how late the pairer may emit a call.
    pub fn new(section: &BreakersSection, pairing_wait: Duration) -> Result<Self, String> {
        if section.default.client.is_some() || section.default.server.is_some() {
            return Err(
                "[breakers.default] is for every edge: it takes no client or server".into(),
            );
        }
        let default = section
            .default
            .apply(BreakerSettings::default())
            .map_err(|e| format!("[breakers.default]: {e}"))?;
        let mut edges = HashMap::new();
        for (index, rule) in section.edge.iter().enumerate() {
            let (Some(client), Some(server)) = (&rule.client, &rule.server) else {
                return Err(format!(
                    "[[breakers.edge]] number {} needs both client and server",
                    index + 1
                ));
            };
            let settings = rule
                .apply(default)
                .map_err(|e| format!("[[breakers.edge]] {client} -> {server}: {e}"))?;
            edges.insert((client.clone(), server.clone()), settings);
        }
        let short_circuit = parse_duration(
            "short_circuit_max_duration",
            &section.short_circuit_max_duration,
        )?
        .unwrap_or(Duration::from_millis(2));
        let slack = parse_duration("reorder_slack", &section.reorder_slack)?
            .unwrap_or(Duration::from_secs(5));
        let hold = parse_duration("reorder_hold", &section.reorder_hold)?
            .unwrap_or(Duration::from_secs(1));
        Ok(Self {
            default,
            edges,
            short_circuit,
            hold,
            following_hold: pairing_wait + slack,
            pairing_wait,
            hold_by_arrival: false,
        })
    }

    /// These options for calls that come as other nodes flush them: each live call is held
    /// for the whole pairing wait and `reorder_slack` after it arrives (see
    /// `hold_by_arrival`).
    pub fn held_by_arrival(mut self) -> Self {
        self.hold = self.following_hold;
        self.hold_by_arrival = true;
        self
    }

    pub fn settings_for(&self, client: &str, server: &str) -> BreakerSettings {
        self.edges
            .get(&(client.to_string(), server.to_string()))
            .copied()
            .unwrap_or(self.default)
    }
}

/// A call of an edge waiting to be replayed.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    start_ns: i64,
    duration: Duration,
    failed: bool,
    rejected: bool,
    received: Instant,
}

/// A state a call reported, waiting to be taken in start order.
#[derive(Debug, Clone, Copy)]
struct WaitingReport {
    start_ns: i64,
    state: BreakerState,
    received: Instant,
}

/// A reported state, from the first call that reported it.
#[derive(Debug, Clone, Copy)]
struct Report {
    at_ns: i64,
    from: Option<BreakerState>,
    to: BreakerState,
}

#[derive(Debug)]
struct EdgeTrack {
    breaker: Breaker,
    waiting: Vec<Waiting>,
    /// Reported states wait apart: they need not wait for the edge's longest call.
    waiting_reports: Vec<WaitingReport>,
    /// Start of the latest call replayed, and of the latest call seen.
    replayed_ns: i64,
    newest_ns: i64,
    /// Start of the latest report taken, and of the latest report seen.
    reports_taken_ns: i64,
    newest_report_ns: i64,
    /// The longest call seen, up to [`MAX_HELD_DURATION`].
    longest: Duration,
    first_ns: i64,
    last_ns: i64,
    inferred: Vec<Transition>,
    reported: Vec<Report>,
    rejected: BTreeMap<i64, u64>,
    /// The breaker's name from the latest-starting call that named it, and that start.
    name: Option<(i64, Arc<str>)>,
}

impl EdgeTrack {
    /// About how much memory the edge's breaker holds, with its key and map slot.
    fn memory_bytes(&self) -> usize {
        use std::mem::size_of;
        size_of::<Self>()
            + size_of::<EdgeName>()
            + 2 * EDGE_NAME_BYTES
            + self.breaker.window_bytes()
            + self.waiting.capacity() * size_of::<Waiting>()
            + self.waiting_reports.capacity() * size_of::<WaitingReport>()
            + self.inferred.capacity() * size_of::<Transition>()
            + self.reported.capacity() * size_of::<Report>()
            + self.rejected.len() * (2 * size_of::<i64>() + BTREE_ENTRY_OVERHEAD)
    }

    fn new(settings: BreakerSettings, start_ns: i64) -> Self {
        Self {
            breaker: Breaker::new(settings),
            waiting: Vec::new(),
            waiting_reports: Vec::new(),
            replayed_ns: i64::MIN,
            newest_ns: start_ns,
            reports_taken_ns: i64::MIN,
            newest_report_ns: start_ns,
            longest: Duration::ZERO,
            first_ns: start_ns,
            last_ns: start_ns,
            inferred: Vec::new(),
            reported: Vec::new(),
            rejected: BTreeMap::new(),
            name: None,
        }
    }

    fn name(&self) -> Option<String> {
        self.name.as_ref().map(|(_, name)| name.to_string())
    }

    fn reported_now(&self) -> Option<BreakerState> {
        self.reported.last().map(|r| r.to)
    }

    /// The inferred state at `at_ns` and since when.
    fn inferred_at(&self, at_ns: i64) -> (BreakerState, i64) {
        let before = self.inferred.partition_point(|t| t.at_ns < at_ns);
        match before.checked_sub(1).map(|i| self.inferred[i]) {
            Some(t) => (t.to, t.at_ns),
            None => (BreakerState::Closed, self.first_ns),
        }
    }

    fn reported_at(&self, at_ns: i64) -> Option<(BreakerState, i64)> {
        let before = self.reported.partition_point(|r| r.at_ns < at_ns);
        let report = self.reported[..before].last()?;
        // Since the first report of this state in a row.
        let since = self.reported[..before]
            .iter()
            .rev()
            .take_while(|r| r.to == report.to)
            .last()
            .map_or(report.at_ns, |r| r.at_ns);
        Some((report.to, since))
    }

    fn view(&self, client: &str, server: &str, from_ns: i64, to_ns: i64) -> BreakerView {
        let (inferred_state, inferred_since) = self.inferred_at(to_ns);
        let reported = self.reported_at(to_ns);
        let in_window = |at: i64| at >= from_ns && at < to_ns;
        let inferred_transitions: Vec<TransitionView> = self
            .inferred
            .iter()
            .filter(|t| in_window(t.at_ns))
            .map(|&t| t.into())
            .collect();
        let reported_transitions: Vec<TransitionView> = self
            .reported
            .iter()
            .filter(|r| in_window(r.at_ns))
            .filter_map(|r| {
                Some(TransitionView {
                    at: r.at_ns,
                    from: r.from?,
                    to: r.to,
                })
            })
            .collect();
        let first_second = from_ns.div_euclid(1_000_000_000);
        let last_second = (to_ns - 1).div_euclid(1_000_000_000);
        let rejected_calls = if first_second <= last_second {
            self.rejected
                .range(first_second..=last_second)
                .map(|(_, n)| n)
                .sum()
        } else {
            0
        };
        let (state, since, source, transitions) = match reported {
            Some((state, since)) => (state, since, Source::Reported, reported_transitions.clone()),
            None => (
                inferred_state,
                inferred_since,
                Source::Inferred,
                inferred_transitions.clone(),
            ),
        };
        BreakerView {
            client: client.to_string(),
            server: server.to_string(),
            name: self.name(),
            state,
            since,
            source,
            reported_state: reported.map(|(state, _)| state),
            inferred_state,
            disagreement: reported.is_some_and(|(state, _)| state != inferred_state),
            transitions,
            reported_transitions,
            inferred_transitions,
            rejected_calls,
            first_call: self.first_ns,
            first_report: self.reported.first().map(|r| r.at_ns),
        }
    }
}

type EdgeName = (Arc<str>, Arc<str>);

/// An [`EdgeName`] borrowed from a call, to find its edge without cloning the names, whose
/// counts the deriver and every reader of calls share. Hashes as the tuple does.
struct EdgeNameOf<'a>(&'a str, &'a str);

impl std::hash::Hash for EdgeNameOf<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
        self.1.hash(state);
    }
}

impl hashbrown::Equivalent<EdgeName> for EdgeNameOf<'_> {
    fn equivalent(&self, (client, server): &EdgeName) -> bool {
        self.0 == &**client && self.1 == &**server
    }
}

/// A call's client span: (trace id, span id).
type ClientSpan = (u128, u64);

#[derive(Debug, Default)]
struct TrackerState {
    /// Hashed with foldhash, as `told`: each call looks both up.
    edges: hashbrown::HashMap<EdgeName, EdgeTrack, foldhash::fast::RandomState>,
    calls: Option<Receiver<CallsUpdate>>,
    /// Client spans whose unpaired call was taken, with its edge: their derived call, when
    /// it comes, is the same call and is not taken again.
    told: foldhash::HashMap<ClientSpan, EdgeName>,
    /// The same spans in the order they were told, to forget those never derived.
    told_order: VecDeque<(Instant, ClientSpan)>,
    /// Transitions are announced once the stored calls have been replayed.
    live: bool,
    /// Transitions per (client, server, source, to), for Prometheus.
    transitions_total: BTreeMap<(EdgeName, Source, BreakerState), u64>,
    late_calls: u64,
    untracked_calls: u64,
    events_dropped: u64,
}

/// A service name's typical cost: its text and the `Arc`'s counts.
const EDGE_NAME_BYTES: usize = 48;

/// Client spans remembered as told; past it, calls are taken as they are derived.
const MAX_TOLD: usize = 2_000_000;

/// How long past the pairing wait a told span's derived call may still come.
const TOLD_SLACK: Duration = Duration::from_secs(30);

/// What a B-tree spends on an entry beyond the entry itself, about.
const BTREE_ENTRY_OVERHEAD: usize = 16;

/// Every edge's breaker. Shared by the API, the SQL table and the metrics.
#[derive(Debug)]
pub struct BreakerTracker {
    options: BreakerOptions,
    state: Mutex<TrackerState>,
    events: Option<tokio::sync::mpsc::Sender<BreakerEvent>>,
    /// Where the memory the breakers hold is reported, for the store's memory budget.
    memory: Option<Arc<AtomicUsize>>,
}

impl Default for BreakerTracker {
    fn default() -> Self {
        Self::new(BreakerOptions::default(), None)
    }
}

impl BreakerTracker {
    /// A tracker; transitions found live go to `events` (never blocking: a full channel
    /// drops them, counted).
    pub fn new(
        options: BreakerOptions,
        events: Option<tokio::sync::mpsc::Sender<BreakerEvent>>,
    ) -> Self {
        Self {
            options,
            state: Mutex::new(TrackerState::default()),
            events,
            memory: None,
        }
    }

    /// The tracker, reporting the memory its breakers hold to `account` after each poll.
    pub fn with_memory_account(mut self, account: Arc<AtomicUsize>) -> Self {
        self.memory = Some(account);
        self
    }

    pub fn options(&self) -> &BreakerOptions {
        &self.options
    }

    /// Replays the stored calls (segments in start order, then hot batches) and subscribes to
    /// the calls derived from now on.
    pub async fn start(&self, store: &Store) -> Result<(), QueryError> {
        let (snapshot, receiver) = store.subscribe_calls();
        self.state.lock().expect("not poisoned").calls = Some(receiver);
        let mut segments = snapshot.call_segments.clone();
        segments.sort_by_key(|s| s.min_start_ns);
        // Segments whose times overlap (those of several collectors flushed side by side)
        // are taken together before any of their calls is replayed, so that the replay
        // goes in start order across them; up to a bound, past which calls may come late.
        let (mut held_until_ns, mut held_rows) = (i64::MIN, 0);
        for segment in &segments {
            if segment.min_start_ns > held_until_ns || held_rows >= MOST_HELD_AT_START {
                self.observe(&[], Instant::now())?;
                held_rows = 0;
            }
            let batches = store
                .read_segment_columns(segment, &BREAKER_COLUMNS[2..])
                .await
                .map_err(|e| QueryError::Execution(e.to_string()))?;
            let updates: Vec<CallsUpdate> = batches
                .into_iter()
                .map(|batch| CallsUpdate::Derived(batch, None))
                .collect();
            self.take(&updates, Instant::now())?;
            held_until_ns = held_until_ns.max(segment.max_start_ns);
            held_rows += segment.rows;
        }
        let hot: Vec<CallsUpdate> = snapshot
            .hot_calls
            .iter()
            .map(|batch| CallsUpdate::Derived(batch.clone(), None))
            .collect();
        self.observe(&hot, Instant::now())?;
        self.state.lock().expect("not poisoned").live = true;
        Ok(())
    }

    /// Takes the calls derived since the last poll and replays those whose wait is over.
    pub fn poll(&self) -> Result<(), QueryError> {
        let batches: Vec<CallsUpdate> = {
            let state = self.state.lock().expect("not poisoned");
            match &state.calls {
                Some(receiver) => receiver.try_iter().collect(),
                None => Vec::new(),
            }
        };
        self.observe(&batches, Instant::now())
    }

    /// Takes the calls of `updates` and replays those whose wait is over.
    fn observe(&self, updates: &[CallsUpdate], now: Instant) -> Result<(), QueryError> {
        self.take(updates, now)?;
        let mut state = self.state.lock().expect("not poisoned");
        self.forget_told(&mut state, now);
        self.replay(&mut state, now);
        if let Some(account) = &self.memory {
            let told = state.told.capacity() * TOLD_ENTRY_BYTES
                + state.told_order.capacity() * std::mem::size_of::<(Instant, ClientSpan)>();
            let bytes = state
                .edges
                .values()
                .map(EdgeTrack::memory_bytes)
                .sum::<usize>()
                + told;
            account.store(bytes, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Puts the calls of `updates` in their edges' queues: a client's unpaired call at
    /// once, and a derived call unless it is one already taken unpaired.
    fn take(&self, updates: &[CallsUpdate], now: Instant) -> Result<(), QueryError> {
        // Names live on in the edges they key; the rest go with the batch.
        let mut names = Interner::default();
        for update in updates {
            // A batch at a time, a call at a time: the API and /metrics wait one batch at
            // most.
            let (calls, unpaired) = match update {
                CallsUpdate::Derived(_, Some(calls)) => (calls, false),
                CallsUpdate::Unpaired(calls) => (calls, true),
                // Read back from the batch, a call at a time: no vector of every call (a
                // segment's calls are tens of megabytes of rows).
                CallsUpdate::Derived(batch, None) => {
                    let batch = breaker_columns(batch)?;
                    let calls = CallColumns::new(&batch)
                        .map_err(|e| QueryError::Execution(e.to_string()))?;
                    let mut state = self.state.lock().expect("not poisoned");
                    for row in 0..calls.len() {
                        self.take_derived(&mut state, &calls.row(row, &mut names), now);
                    }
                    continue;
                }
            };
            let mut state = self.state.lock().expect("not poisoned");
            for call in calls.iter() {
                match unpaired {
                    true => self.take_unpaired(&mut state, call, now),
                    false => self.take_derived(&mut state, call, now),
                }
            }
        }
        Ok(())
    }

    /// A derived call, unless it is one already taken unpaired.
    fn take_derived(&self, state: &mut TrackerState, call: &CallRow, now: Instant) {
        if !was_told(state, call) {
            self.wait(state, call, now);
        }
    }

    /// A client's call still waiting for its server half: taken now, and remembered so
    /// that its derived call is not taken again.
    fn take_unpaired(&self, state: &mut TrackerState, call: &CallRow, now: Instant) {
        let Some(span) = call.client_span_id else {
            return;
        };
        if state.told.len() >= MAX_TOLD || !self.wait(state, call, now) {
            return;
        }
        let span = (call.trace_id, span);
        state
            .told
            .insert(span, (call.client.clone(), call.server.clone()));
        state.told_order.push_back((now, span));
    }

    /// Forgets told spans whose derived call can no longer come (no server answered and
    /// their client named no server).
    fn forget_told(&self, state: &mut TrackerState, now: Instant) {
        let kept = self.options.pairing_wait + TOLD_SLACK;
        while let Some(&(at, span)) = state.told_order.front() {
            if now.duration_since(at) < kept {
                break;
            }
            state.told_order.pop_front();
            state.told.remove(&span);
        }
    }

    /// Puts a client's sync call in its edge's queue; false if it is not followed.
    fn wait(&self, state: &mut TrackerState, call: &CallRow, now: Instant) -> bool {
        if call.call_type != CallType::Sync || &*call.client == schema::USER_NODE {
            return false;
        }
        let edge_count = state.edges.len();
        let key = EdgeNameOf(&call.client, &call.server);
        let track = match state.edges.get_mut(&key) {
            Some(track) => track,
            None if edge_count >= MAX_EDGES => {
                state.untracked_calls += 1;
                return false;
            }
            None => state
                .edges
                .entry((call.client.clone(), call.server.clone()))
                .or_insert_with(|| {
                    EdgeTrack::new(
                        self.options.settings_for(&call.client, &call.server),
                        call.start_ns,
                    )
                }),
        };
        let duration = Duration::from_nanos(call.client_duration_ns.unwrap_or(0).max(0) as u64);
        let reported = call.breaker_state.as_deref().and_then(BreakerState::parse);
        let no_server_span = call.server_span_id.is_none();
        let rejected = call.failed
            && no_server_span
            && ((call.server_kind == NodeKind::Service && duration <= self.options.short_circuit)
                || reported == Some(BreakerState::Open));
        if let Some(name) = &call.breaker_name
            && track
                .name
                .as_ref()
                .is_none_or(|(at_ns, _)| *at_ns <= call.start_ns)
        {
            track.name = Some((call.start_ns, name.clone()));
        }
        track.newest_ns = track.newest_ns.max(call.start_ns);
        track.longest = track.longest.max(duration.min(MAX_HELD_DURATION));
        track.waiting.push(Waiting {
            start_ns: call.start_ns,
            duration,
            failed: call.failed,
            rejected,
            received: now,
        });
        if let Some(state) = reported {
            track.newest_report_ns = track.newest_report_ns.max(call.start_ns);
            track.waiting_reports.push(WaitingReport {
                start_ns: call.start_ns,
                state,
                received: now,
            });
        }
        true
    }

    /// Replays, edge by edge in start order, the calls that have waited long enough, and
    /// takes the reported states likewise.
    fn replay(&self, state: &mut TrackerState, now: Instant) {
        let mut events = Vec::new();
        let by_arrival = self.options.hold_by_arrival && state.live;
        for (key, track) in &mut state.edges {
            let mut found: Vec<(Source, Transition)> = Vec::new();
            take_reports(track, self.options.hold, by_arrival, now, &mut found);
            state.late_calls += replay_calls(track, self.options.hold, by_arrival, now, &mut found);
            for (source, transition) in found {
                if source == Source::Inferred {
                    track.inferred.push(transition);
                }
                *state
                    .transitions_total
                    .entry((key.clone(), source, transition.to))
                    .or_default() += 1;
                if state.live {
                    events.push(BreakerEvent {
                        client: key.0.to_string(),
                        server: key.1.to_string(),
                        name: track.name(),
                        source,
                        at: transition.at_ns,
                        from: transition.from,
                        to: transition.to,
                        reported_state: track.reported_now(),
                        inferred_state: track.breaker.state(),
                    });
                }
            }
            trim(&mut track.inferred, MAX_TRANSITIONS);
            trim(&mut track.reported, MAX_TRANSITIONS);
            while track.rejected.len() > MAX_REJECTED_SECONDS {
                track.rejected.pop_first();
            }
        }
        if let Some(sender) = &self.events {
            for event in events {
                if sender.try_send(event).is_err() {
                    state.events_dropped += 1;
                }
            }
        }
    }

    /// The breakers of every edge seen before `to_ns` that had calls in the window or was
    /// not closed at its end, ordered by client and server.
    pub fn breakers(&self, from_ns: i64, to_ns: i64) -> Vec<BreakerView> {
        let state = self.state.lock().expect("not poisoned");
        let mut views: Vec<BreakerView> = state
            .edges
            .iter()
            .filter(|(_, track)| track.first_ns < to_ns)
            .filter_map(|((client, server), track)| {
                let view = track.view(client, server, from_ns, to_ns);
                let shown = track.last_ns >= from_ns
                    || view.state != BreakerState::Closed
                    || !view.inferred_transitions.is_empty()
                    || !view.reported_transitions.is_empty();
                shown.then_some(view)
            })
            .collect();
        views.sort_by(|a, b| (&a.client, &a.server).cmp(&(&b.client, &b.server)));
        views
    }

    /// One edge's breaker over a window.
    pub fn breaker(
        &self,
        client: &str,
        server: &str,
        from_ns: i64,
        to_ns: i64,
    ) -> Option<BreakerView> {
        let state = self.state.lock().expect("not poisoned");
        let track = state.edges.get(&EdgeNameOf(client, server))?;
        (track.first_ns < to_ns).then(|| track.view(client, server, from_ns, to_ns))
    }

    /// Every transition, for the `breaker_transitions` table.
    pub fn transitions_batch(&self) -> RecordBatch {
        let state = self.state.lock().expect("not poisoned");
        let mut rows: Vec<(&EdgeName, Source, i64, BreakerState, BreakerState)> = Vec::new();
        for (key, track) in &state.edges {
            rows.extend(
                track
                    .inferred
                    .iter()
                    .map(|t| (key, Source::Inferred, t.at_ns, t.from, t.to)),
            );
            rows.extend(
                track
                    .reported
                    .iter()
                    .filter_map(|r| Some((key, Source::Reported, r.at_ns, r.from?, r.to))),
            );
        }
        rows.sort_by(|a, b| (a.2, &a.0.0, &a.0.1).cmp(&(b.2, &b.0.0, &b.0.1)));
        let mut at = TimestampNanosecondBuilder::new().with_timezone("UTC");
        let [mut client, mut server, mut source, mut from, mut to] =
            std::array::from_fn(|_| StringBuilder::new());
        for ((c, s), src, at_ns, f, t) in rows {
            at.append_value(at_ns);
            client.append_value(c);
            server.append_value(s);
            source.append_value(src.as_str());
            from.append_value(f.as_str());
            to.append_value(t.as_str());
        }
        RecordBatch::try_new(
            transitions_schema(),
            vec![
                Arc::new(at.finish()),
                Arc::new(client.finish()),
                Arc::new(server.finish()),
                Arc::new(source.finish()),
                Arc::new(from.finish()),
                Arc::new(to.finish()),
            ],
        )
        .expect("columns match the schema")
    }

    /// `callwatch_breaker_state`, the transitions counter and the tracker's own counters.
    pub fn render(&self, out: &mut String) {
        let state = self.state.lock().expect("not poisoned");
        let mut edges: Vec<_> = state.edges.iter().collect();
        edges.sort_by(|a, b| a.0.cmp(b.0));
        out.push_str(
            "# HELP callwatch_breaker_state Circuit breaker of a client -> server edge: 0 closed, 1 open, 2 half-open (reported, else inferred).\n\
             # TYPE callwatch_breaker_state gauge\n",
        );
        for ((client, server), track) in &edges {
            let state = track.reported_now().unwrap_or(track.breaker.state());
            let _ = writeln!(
                out,
                "callwatch_breaker_state{{client=\"{}\",server=\"{}\"}} {}",
                escape_label(client),
                escape_label(server),
                state.gauge()
            );
        }
        out.push_str(
            "# HELP callwatch_breaker_transitions_total Breaker transitions by edge, source and new state.\n\
             # TYPE callwatch_breaker_transitions_total counter\n",
        );
        for (((client, server), source, to), count) in &state.transitions_total {
            let _ = writeln!(
                out,
                "callwatch_breaker_transitions_total{{client=\"{}\",server=\"{}\",source=\"{}\",to=\"{}\"}} {count}",
                escape_label(client),
                escape_label(server),
                source.as_str(),
                to.as_str()
            );
        }
        let waiting: usize = state
            .edges
            .values()
            .map(|track| track.waiting.len() + track.waiting_reports.len())
            .sum();
        callwatch_storage::write_metric(
            out,
            "callwatch_breaker_waiting_calls",
            "gauge",
            "Calls and reported states held for earlier ones of their edge before they are replayed.",
            waiting as f64,
        );
        for (name, help, value) in [
            (
                "callwatch_breaker_late_calls_total",
                "Calls replayed after later calls of their edge (they arrived past the hold).",
                state.late_calls,
            ),
            (
                "callwatch_breaker_untracked_calls_total",
                "Calls of edges beyond the number of breakers followed.",
                state.untracked_calls,
            ),
            (
                "callwatch_breaker_events_dropped_total",
                "Breaker transitions not sent to the webhook because its queue was full.",
                state.events_dropped,
            ),
        ] {
            callwatch_storage::write_metric(out, name, "counter", help, value as f64);
        }
    }
}

/// Only the columns a breaker reads, so the rest are not decoded for every call.
/// Most calls of overlapping segments held together when the stored calls are replayed.
const MOST_HELD_AT_START: u64 = 2_000_000;

/// The ids first: only live calls need them, to know a derived call taken unpaired.
const BREAKER_COLUMNS: [&str; 12] = [
    schema::TRACE_ID,
    schema::CLIENT_SPAN_ID,
    schema::START_TIME,
    schema::CLIENT,
    schema::SERVER,
    schema::CALL_TYPE,
    schema::SERVER_KIND,
    schema::CLIENT_DURATION_NS,
    schema::FAILED,
    schema::BREAKER_STATE,
    schema::SERVER_SPAN_ID,
    schema::BREAKER_NAME,
];

fn breaker_columns(batch: &RecordBatch) -> Result<RecordBatch, QueryError> {
    callwatch_storage::project(batch, &BREAKER_COLUMNS)
        .map_err(|e| QueryError::Execution(e.to_string()))
}

/// The edge's calls that have waited long enough, replayed in start order; returns how
/// many came late (after a later-starting call was replayed).
///
/// A call arrives when it ends, so an earlier-starting one may still come for as long as
/// the edge's longest call takes, plus `hold` for the way here: a call is replayed when it
/// has waited that long after it arrived, or when it starts that long before the newest
/// call seen (only the first on a node that pairs spans, whose calls come as they arrive).
fn replay_calls(
    track: &mut EdgeTrack,
    hold: Duration,
    by_arrival: bool,
    now: Instant,
    found: &mut Vec<(Source, Transition)>,
) -> u64 {
    if track.waiting.is_empty() {
        return 0;
    }
    let hold = hold + track.longest;
    let ready = ready(
        &mut track.waiting,
        |w| (w.start_ns, w.received),
        track.newest_ns,
        hold,
        by_arrival,
        now,
    );
    let mut late_calls = 0;
    for call in track.waiting.drain(..ready) {
        let late = call.start_ns < track.replayed_ns;
        late_calls += u64::from(late);
        // A late call counts where the replay is, so transitions stay in order.
        let at_ns = call.start_ns.max(track.replayed_ns);
        track.replayed_ns = at_ns;
        track.first_ns = track.first_ns.min(call.start_ns);
        track.last_ns = track.last_ns.max(call.start_ns);
        if call.rejected {
            *track
                .rejected
                .entry(call.start_ns.div_euclid(1_000_000_000))
                .or_default() += 1;
            if !late && let Some(t) = track.breaker.rejected(at_ns) {
                found.push((Source::Inferred, t));
            }
        } else {
            let transitions = track.breaker.call(at_ns, call.failed, call.duration);
            found.extend(transitions.into_iter().map(|t| (Source::Inferred, t)));
        }
    }
    late_calls
}

/// The edge's reported states that have waited `hold`, taken in start order: a report
/// says the state at once, so it does not wait for the edge's longest call. One that
/// starts before a report already taken is too late to say anything.
fn take_reports(
    track: &mut EdgeTrack,
    hold: Duration,
    by_arrival: bool,
    now: Instant,
    found: &mut Vec<(Source, Transition)>,
) {
    if track.waiting_reports.is_empty() {
        return;
    }
    // Reports that come with other nodes' flushes wait as those calls do.
    let hold = match by_arrival {
        true => hold + track.longest,
        false => hold,
    };
    let newest_ns = track.newest_report_ns;
    let ready = ready(
        &mut track.waiting_reports,
        |r| (r.start_ns, r.received),
        newest_ns,
        hold,
        by_arrival,
        now,
    );
    for report in track.waiting_reports.drain(..ready) {
        if report.start_ns < track.reports_taken_ns {
            continue;
        }
        track.reports_taken_ns = report.start_ns;
        let to = report.state;
        let from = track.reported.last().map(|r| r.to);
        if from == Some(to) {
            continue;
        }
        let at_ns = report.start_ns;
        track.reported.push(Report { at_ns, from, to });
        if let Some(from) = from {
            found.push((Source::Reported, Transition { at_ns, from, to }));
        }
    }
}

/// How many of `waiting` (sorted here by start; `times` gives an item's start and arrival)
/// are ready to be taken, in order: those that waited `hold` since they arrived, or (unless
/// they come as other nodes flush them) start `hold` before the newest start seen.
fn ready<T>(
    waiting: &mut [T],
    times: impl Fn(&T) -> (i64, Instant),
    newest_ns: i64,
    hold: Duration,
    by_arrival: bool,
    now: Instant,
) -> usize {
    waiting.sort_by_key(|item| times(item).0);
    let cutoff_ns = match by_arrival {
        true => i64::MIN,
        false => newest_ns.saturating_sub(nanos(hold)),
    };
    waiting
        .iter()
        .map(times)
        .take_while(|&(start_ns, received)| {
            start_ns <= cutoff_ns || now.duration_since(received) >= hold
        })
        .count()
}

/// Whether `call` is the derived call of a client span taken before as unpaired (and
/// forgets the span): if it turned out to be of another edge, it is taken as well.
fn was_told(state: &mut TrackerState, call: &CallRow) -> bool {
    if state.told.is_empty() {
        return false;
    }
    let Some(span) = call.client_span_id else {
        return false;
    };
    match state.told.remove(&(call.trace_id, span)) {
        Some((client, server)) => client == call.client && server == call.server,
        None => false,
    }
}

fn nanos(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

/// What a told span costs in its map: the key, the edge's two names and a control byte.
const TOLD_ENTRY_BYTES: usize = 24 + 2 * 16 + 1;

fn trim<T>(log: &mut Vec<T>, max: usize) {
    if log.len() > max {
        log.drain(..log.len() - max);
    }
}

pub const BREAKER_TRANSITIONS_TABLE: &str = "breaker_transitions";

pub fn transitions_schema() -> SchemaRef {
    let text = |name: &str| Field::new(name, DataType::Utf8, false);
    Arc::new(Schema::new(vec![
        Field::new("at", schema::timestamp_type(), false),
        text("client"),
        text("server"),
        text("source"),
        text("from_state"),
        text("to_state"),
    ]))
}
