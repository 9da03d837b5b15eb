//! Statistics of calls in pieces: per edge, per 10 seconds and per minute of call start
//! time, for each calls segment and hot batch. A segment's pieces are computed once (its
//! file never changes), so a long window merges a few hundred pieces instead of reading
//! millions of calls; only the seconds at the window's ends that no whole piece covers are
//! read call by call. A segment this process wrote gets its pieces by adding up those of the
//! hot batches (or segments) it was made of, without reading the file.
//!
//! The graph keeps per edge what its nodes and edges show ([`Rollup`]); the service and
//! edge pages keep, for the calls they look at, breakdowns by operation, instance, version
//! and status ([`Details`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, BooleanArray, RecordBatch, StringArray};
use callwatch_storage::{
    CallColumns, CallRow, CallType, Interner, NodeKind, Origin, Store, project, schema,
};

use crate::error::QueryError;
use crate::stats::Accumulator;

const MINUTE_NS: i64 = 60_000_000_000;
const TEN_SECONDS_NS: i64 = 10_000_000_000;

/// The widths of the graph's pieces, widest first: each divides the one before.
const GRAPH_WIDTHS_NS: &[i64] = &[MINUTE_NS, TEN_SECONDS_NS];

/// The widths of breakdown pieces: a minute. They hold more per edge than the graph's,
/// so the seconds at a window's ends are read call by call instead of kept in 10 s pieces.
const DETAIL_WIDTHS_NS: &[i64] = &[MINUTE_NS];

/// An edge: calls of one type from one node to another (through one destination, if async).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EdgeKey {
    pub source: Arc<str>,
    pub target: Arc<str>,
    pub call_type: CallType,
    pub destination: Option<Arc<str>>,
}

impl EdgeKey {
    pub fn of(call: &CallRow) -> Self {
        Self {
            source: call.client.clone(),
            target: call.server.clone(),
            call_type: call.call_type,
            destination: match call.call_type {
                CallType::Async => call.destination.clone(),
                CallType::Sync => None,
            },
        }
    }
}

/// Which calls a page breaks down: those into a service, or those of one edge.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CallsOf {
    Service(String),
    Edge { source: String, target: String },
}

impl CallsOf {
    pub fn keeps(&self, client: &str, server: &str) -> bool {
        match self {
            Self::Service(name) => server == name,
            Self::Edge { source, target } => client == source && server == target,
        }
    }

    /// Which rows of a calls batch it keeps, compared column-wise.
    fn mask(&self, batch: &RecordBatch) -> Result<BooleanArray, QueryError> {
        let strings = |name: &str| -> Result<&StringArray, QueryError> {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
                .ok_or_else(|| QueryError::Execution(format!("calls without a {name} column")))
        };
        let equal = |name: &str, value: &str| -> Result<BooleanArray, QueryError> {
            let column = strings(name)?;
            arrow::compute::kernels::cmp::eq(column, &StringArray::new_scalar(value))
                .map_err(|e| QueryError::Execution(e.to_string()))
        };
        match self {
            Self::Service(name) => equal(schema::SERVER, name),
            Self::Edge { source, target } => arrow::compute::and(
                &equal(schema::CLIENT, source)?,
                &equal(schema::SERVER, target)?,
            )
            .map_err(|e| QueryError::Execution(e.to_string())),
        }
    }
}

/// What is kept of the calls of one edge in a piece.
pub trait CallStats: Clone + Send + Sync + 'static {
    /// Nothing yet, for the edge of `call`.
    fn empty(call: &CallRow) -> Self;
    fn add(&mut self, call: &CallRow);
    fn merge(&mut self, other: &Self);
    /// About how much memory it holds.
    fn bytes(&self) -> usize;
}

/// What the graph keeps of an edge's calls.
#[derive(Debug, Clone)]
pub struct EdgeStats {
    pub server_kind: NodeKind,
    pub calls: Accumulator,
    pub client_instances: BTreeSet<Arc<str>>,
    pub server_instances: BTreeSet<Arc<str>>,
}

impl CallStats for EdgeStats {
    fn empty(call: &CallRow) -> Self {
        Self {
            server_kind: call.server_kind,
            calls: Accumulator::default(),
            client_instances: BTreeSet::new(),
            server_instances: BTreeSet::new(),
        }
    }

    fn add(&mut self, call: &CallRow) {
        self.calls.add(call);
        if let Some(instance) = &call.client_instance
            && !self.client_instances.contains(instance)
        {
            self.client_instances.insert(instance.clone());
        }
        if let Some(instance) = &call.server_instance
            && !self.server_instances.contains(instance)
        {
            self.server_instances.insert(instance.clone());
        }
    }

    fn merge(&mut self, other: &Self) {
        self.calls.merge(&other.calls);
        self.client_instances
            .extend(other.client_instances.iter().cloned());
        self.server_instances
            .extend(other.server_instances.iter().cloned());
    }

    fn bytes(&self) -> usize {
        self.calls.bytes() + 64 * (self.client_instances.len() + self.server_instances.len()) + 128
    }
}

/// What a breakdown groups calls by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    Operation,
    ServerInstance,
    ClientInstance,
    ApiVersion,
    /// The status of failed calls (the others are not counted).
    FailedStatus,
}

impl Dimension {
    pub const ALL: [Dimension; 5] = [
        Self::Operation,
        Self::ServerInstance,
        Self::ClientInstance,
        Self::ApiVersion,
        Self::FailedStatus,
    ];

    /// The call's value for this dimension, or `None` if the call is not counted in it.
    fn of(self, call: &CallRow) -> Option<Option<&Arc<str>>> {
        match self {
            Self::Operation => Some(call.operation.as_ref()),
            Self::ServerInstance => Some(call.server_instance.as_ref()),
            Self::ClientInstance => Some(call.client_instance.as_ref()),
            Self::ApiVersion => Some(call.api_version.as_ref()),
            Self::FailedStatus => call.failed.then_some(call.status.as_ref()),
        }
    }
}

/// Calls of a value of each dimension (`None`: calls without one).
pub type Groups = BTreeMap<Option<Arc<str>>, Accumulator>;

/// A call worth opening from an edge's page.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    pub trace_id: u128,
    pub start_ns: i64,
    /// The client's duration, or the server's without one.
    pub duration_ns: Option<i64>,
    pub failed: bool,
}

impl Exemplar {
    fn of(call: &CallRow) -> Self {
        Self {
            trace_id: call.trace_id,
            start_ns: call.start_ns,
            duration_ns: call.client_duration_ns.or(call.server_duration_ns),
            failed: call.failed,
        }
    }
}

/// How many of the slowest and of the latest failed calls are kept.
pub const EXEMPLARS: usize = 5;

/// What the service and edge pages keep of an edge's calls: all of them (for latency
/// histograms), each dimension's groups, and exemplars: the slowest and the latest failed
/// calls, so that a page names example traces without looking for them.
#[derive(Debug, Clone, Default)]
pub struct Details {
    pub all: Accumulator,
    by: [Groups; Dimension::ALL.len()],
    /// Longest first.
    slowest: Vec<Exemplar>,
    /// Latest first.
    latest_failed: Vec<Exemplar>,
}

impl Details {
    pub fn groups(&self, dimension: Dimension) -> &Groups {
        &self.by[dimension as usize]
    }

    /// The slowest calls, longest first.
    pub fn slowest(&self) -> &[Exemplar] {
        &self.slowest
    }

    /// The latest failed calls, latest first.
    pub fn latest_failed(&self) -> &[Exemplar] {
        &self.latest_failed
    }

    fn keep_exemplars(&mut self, candidates: impl IntoIterator<Item = Exemplar>) {
        for exemplar in candidates {
            if exemplar.failed {
                keep_best(&mut self.latest_failed, exemplar.clone(), |e| e.start_ns);
            }
            keep_best(&mut self.slowest, exemplar, |e| {
                e.duration_ns.unwrap_or(i64::MIN)
            });
        }
    }
}

/// Puts `candidate` into `best` (highest `key` first, at most [`EXEMPLARS`]) if it belongs.
fn keep_best(best: &mut Vec<Exemplar>, candidate: Exemplar, key: impl Fn(&Exemplar) -> i64) {
    if best.contains(&candidate) {
        return;
    }
    let at = best.partition_point(|e| key(e) >= key(&candidate));
    if at < EXEMPLARS {
        best.insert(at, candidate);
        best.truncate(EXEMPLARS);
    }
}

impl CallStats for Details {
    fn empty(_: &CallRow) -> Self {
        Self::default()
    }

    fn add(&mut self, call: &CallRow) {
        self.all.add(call);
        self.keep_exemplars([Exemplar::of(call)]);
        for dimension in Dimension::ALL {
            if let Some(value) = dimension.of(call) {
                self.by[dimension as usize]
                    .entry(value.cloned())
                    .or_default()
                    .add(call);
            }
        }
    }

    fn merge(&mut self, other: &Self) {
        self.all.merge(&other.all);
        self.keep_exemplars(other.slowest.iter().chain(&other.latest_failed).cloned());
        for (mine, theirs) in self.by.iter_mut().zip(&other.by) {
            for (value, group) in theirs {
                match mine.get_mut(value) {
                    Some(existing) => existing.merge(group),
                    None => {
                        mine.insert(value.clone(), group.clone());
                    }
                }
            }
        }
    }

    fn bytes(&self) -> usize {
        self.all.bytes()
            + self
                .by
                .iter()
                .flat_map(|groups| groups.values())
                .map(|group| group.bytes() + 64)
                .sum::<usize>()
    }
}

/// Statistics of a set of calls, per edge.
#[derive(Debug, Clone)]
pub struct ByEdge<S> {
    /// Hashed with foldhash: every call of every batch is looked up here.
    pub edges: foldhash::HashMap<EdgeKey, S>,
}

impl<S> Default for ByEdge<S> {
    fn default() -> Self {
        Self {
            edges: foldhash::HashMap::default(),
        }
    }
}

/// The graph's statistics of a set of calls.
pub type Rollup = ByEdge<EdgeStats>;

impl<S: CallStats> ByEdge<S> {
    pub fn of<'a>(calls: impl IntoIterator<Item = &'a CallRow>) -> Self {
        let mut stats = Self::default();
        for call in calls {
            stats.add(call);
        }
        stats
    }

    pub fn add(&mut self, call: &CallRow) {
        self.edges
            .entry(EdgeKey::of(call))
            .or_insert_with(|| S::empty(call))
            .add(call);
    }

    pub fn merge(&mut self, other: &Self) {
        self.merge_where(other, |_| true);
    }

    /// Merges the edges of `other` that `keep` keeps.
    pub fn merge_where(&mut self, other: &Self, keep: impl Fn(&EdgeKey) -> bool) {
        for (key, theirs) in &other.edges {
            if !keep(key) {
                continue;
            }
            match self.edges.get_mut(key) {
                Some(mine) => mine.merge(theirs),
                None => {
                    self.edges.insert(key.clone(), theirs.clone());
                }
            }
        }
    }

    fn bytes(&self) -> usize {
        self.edges.values().map(|s| s.bytes() + 96).sum()
    }
}

/// The pieces of one segment or hot batch: for each width, statistics by piece start.
#[derive(Debug)]
struct Pieces<S> {
    by_width: Vec<BTreeMap<i64, ByEdge<S>>>,
    /// Start of the latest narrow piece.
    newest_ns: i64,
}

impl<S: CallStats> Pieces<S> {
    fn empty(widths: usize) -> Self {
        Self {
            by_width: (0..widths).map(|_| BTreeMap::new()).collect(),
            newest_ns: i64::MIN,
        }
    }

    fn bytes(&self) -> usize {
        self.by_width
            .iter()
            .flat_map(|pieces| pieces.values())
            .map(ByEdge::bytes)
            .sum()
    }

    /// The pieces of the calls of `batches` that `only` keeps (all if `None`).
    fn of(
        batches: &[RecordBatch],
        widths: &[i64],
        columns: &[&str],
        only: Option<&CallsOf>,
    ) -> Result<Self, QueryError> {
        let mut names = Interner::default();
        let mut narrowest: BTreeMap<i64, ByEdge<S>> = BTreeMap::new();
        let narrow = widths[widths.len() - 1];
        let error = |e: callwatch_storage::StoreError| QueryError::Execution(e.to_string());
        for batch in batches {
            let batch = match only {
                Some(only) => arrow::compute::filter_record_batch(batch, &only.mask(batch)?)
                    .map_err(|e| QueryError::Execution(e.to_string()))?,
                None => batch.clone(),
            };
            let batch = project(&batch, columns).map_err(error)?;
            let calls = CallColumns::new(&batch).map_err(error)?;
            for row in 0..calls.len() {
                let call = calls.row(row, &mut names);
                narrowest
                    .entry(piece_start(call.start_ns, narrow))
                    .or_default()
                    .add(&call);
            }
        }
        let mut pieces = Self::empty(widths.len());
        pieces.newest_ns = narrowest.keys().next_back().copied().unwrap_or(i64::MIN);
        // Wider pieces are merged from the narrowest.
        for (index, width) in widths.iter().enumerate() {
            if index == widths.len() - 1 {
                pieces.by_width[index] = std::mem::take(&mut narrowest);
                break;
            }
            let mut wide: BTreeMap<i64, ByEdge<S>> = BTreeMap::new();
            for (start, stats) in &narrowest {
                wide.entry(piece_start(*start, *width))
                    .or_default()
                    .merge(stats);
            }
            pieces.by_width[index] = wide;
        }
        Ok(pieces)
    }

    /// The pieces of `parts` that start in [from_ns, to_ns), merged: a segment's, from those
    /// of the batches or segments it was made of. Both bounds are whole hours, and pieces
    /// never cross an hour.
    fn within(parts: &[Arc<Pieces<S>>], widths: usize, from_ns: i64, to_ns: i64) -> Self {
        let mut pieces = Self::empty(widths);
        for part in parts {
            for (index, wide) in pieces.by_width.iter_mut().enumerate() {
                for (start, stats) in part.by_width[index].range(from_ns..to_ns) {
                    wide.entry(*start).or_default().merge(stats);
                }
            }
        }
        if let Some(newest) = pieces.by_width[widths - 1].keys().next_back() {
            pieces.newest_ns = *newest;
        }
        pieces
    }
}

/// Pieces of one width (its index) whose starts are in [first, last).
type PieceRange = (usize, i64, i64);

/// How whole pieces of `widths` (widest first, each dividing the one before) cover
/// [from_ns, to_ns): ranges of piece starts (index of the width, first, last exclusive),
/// widest first, and what no whole piece covers.
fn cover(widths: &[i64], from_ns: i64, to_ns: i64) -> (Vec<PieceRange>, Vec<(i64, i64)>) {
    let mut ranges = Vec::new();
    let mut uncovered = vec![(from_ns, to_ns)];
    for (index, width) in widths.iter().enumerate() {
        let mut still_uncovered = Vec::new();
        for (from, to) in uncovered {
            let first = piece_start(from, *width)
                + if from.rem_euclid(*width) == 0 {
                    0
                } else {
                    *width
                };
            let last = piece_start(to, *width);
            if first >= last {
                still_uncovered.push((from, to));
                continue;
            }
            ranges.push((index, first, last));
            still_uncovered.extend(
                [(from, first), (last, to)]
                    .into_iter()
                    .filter(|(a, b)| a < b),
            );
        }
        uncovered = still_uncovered;
    }
    (ranges, uncovered)
}

fn piece_start(ns: i64, width: i64) -> i64 {
    ns.div_euclid(width) * width
}

/// Which stored thing pieces were computed from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Source {
    /// A segment's object path.
    Segment(String),
    /// A hot calls batch, by the store's number for it.
    Hot(u64),
}

impl From<&Origin> for Source {
    fn from(origin: &Origin) -> Self {
        match origin {
            Origin::HotCalls(id) => Self::Hot(*id),
            Origin::Segment(path) => Self::Segment(path.clone()),
        }
    }
}

struct Cached<S> {
    pieces: Arc<Pieces<S>>,
    bytes: usize,
}

/// The columns the graph's pieces are made of: the others (ids, operations, versions) are
/// not read.
const GRAPH_COLUMNS: &[&str] = &[
    schema::START_TIME,
    schema::CLIENT,
    schema::SERVER,
    schema::CALL_TYPE,
    schema::SERVER_KIND,
    schema::DESTINATION,
    schema::CLIENT_INSTANCE,
    schema::SERVER_INSTANCE,
    schema::CLIENT_DURATION_NS,
    schema::SERVER_DURATION_NS,
    schema::QUEUE_NS,
    schema::FAILED,
    schema::RETRY,
    schema::TIMEOUT,
    schema::BREAKER_STATE,
];

/// The columns breakdown pieces are made of, and those of calls read one by one.
pub(crate) const DETAIL_COLUMNS: &[&str] = &[
    schema::START_TIME,
    schema::TRACE_ID,
    schema::CLIENT,
    schema::SERVER,
    schema::CALL_TYPE,
    schema::SERVER_KIND,
    schema::OPERATION,
    schema::DESTINATION,
    schema::CLIENT_INSTANCE,
    schema::SERVER_INSTANCE,
    schema::API_VERSION,
    schema::CLIENT_DURATION_NS,
    schema::SERVER_DURATION_NS,
    schema::QUEUE_NS,
    schema::FAILED,
    schema::STATUS,
    schema::RETRY,
    schema::TIMEOUT,
    schema::BREAKER_STATE,
];

/// Most memory the graph's cached pieces may hold. Beyond it the pieces of the oldest calls
/// are dropped first (dashboards look at recent windows); a query that needs them again
/// computes them again.
const MAX_GRAPH_BYTES: usize = 512 << 20;

/// Most memory the breakdown pieces of one service or edge may hold.
const MAX_DETAIL_BYTES: usize = 96 << 20;

/// How many services and edges keep breakdown pieces: those looked at last.
const MAX_DETAIL_CACHES: usize = 4;

/// Pieces of every calls segment and hot batch of the store (or of the calls of it that
/// `only` keeps), computed when first asked for and forgotten when their source is gone
/// (flushed, compacted or expired).
pub struct PieceCache<S> {
    state: Mutex<CacheState<S>>,
    max_bytes: usize,
    widths: &'static [i64],
    columns: &'static [&'static str],
    only: Option<CallsOf>,
}

/// The graph's pieces: every edge.
pub type RollupCache = PieceCache<EdgeStats>;

impl Default for RollupCache {
    fn default() -> Self {
        Self::new(MAX_GRAPH_BYTES, GRAPH_WIDTHS_NS, GRAPH_COLUMNS, None)
    }
}

struct CacheState<S> {
    entries: HashMap<Source, Cached<S>>,
    /// Sources dropped for room: computed again when a query needs them, never in advance.
    evicted: HashSet<Source>,
}

impl<S> Default for CacheState<S> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            evicted: HashSet::new(),
        }
    }
}

impl<S> std::fmt::Debug for PieceCache<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries = self.state.lock().map_or(0, |s| s.entries.len());
        f.debug_struct("PieceCache")
            .field("only", &self.only)
            .field("entries", &entries)
            .finish()
    }
}

/// Statistics of each of a list of windows, and what no whole piece covers of each.
pub type Windows<S> = Vec<(ByEdge<S>, Vec<(i64, i64)>)>;

impl<S: CallStats> PieceCache<S> {
    fn new(
        max_bytes: usize,
        widths: &'static [i64],
        columns: &'static [&'static str],
        only: Option<CallsOf>,
    ) -> Self {
        Self {
            state: Mutex::default(),
            max_bytes,
            widths,
            columns,
            only,
        }
    }

    /// The pieces of every source of the store's current snapshot that may hold calls of
    /// [from_ns, to_ns) (with `in_advance`, of every source never dropped for room, and
    /// nothing is returned).
    async fn pieces(
        &self,
        store: &Store,
        in_advance: bool,
        (from_ns, to_ns): (i64, i64),
    ) -> Result<Vec<Arc<Pieces<S>>>, QueryError> {
        let sources_of = |snapshot: &callwatch_storage::Snapshot| -> Vec<Source> {
            snapshot
                .call_segments
                .iter()
                .map(|s| Source::Segment(s.path.clone()))
                .chain(snapshot.hot_call_ids.iter().map(|id| Source::Hot(*id)))
                .collect()
        };
        let mut snapshot = store.snapshot();
        let present: HashSet<Source> = sources_of(&snapshot).into_iter().collect();
        // Segments are partitioned by hour: those of other hours are not even looked at.
        snapshot
            .call_segments
            .retain(|s| s.end_ns() > from_ns && s.start_ns() < to_ns);
        let wanted = sources_of(&snapshot);
        let mut found: HashMap<Source, Arc<Pieces<S>>> = {
            let mut state = self.state.lock().expect("not poisoned");
            // A new segment made of sources still cached is put together from their pieces
            // before they leave the cache: no reading back the calls just written.
            for segment in &snapshot.call_segments {
                let source = Source::Segment(segment.path.clone());
                let Some(origins) = snapshot.call_origins.get(&segment.path) else {
                    continue;
                };
                if state.entries.contains_key(&source) {
                    continue;
                }
                let parts: Option<Vec<Arc<Pieces<S>>>> = origins
                    .iter()
                    .map(|origin| {
                        let cached = state.entries.get(&Source::from(origin))?;
                        Some(cached.pieces.clone())
                    })
                    .collect();
                if let Some(parts) = parts {
                    let pieces = Pieces::within(
                        &parts,
                        self.widths.len(),
                        segment.start_ns(),
                        segment.end_ns(),
                    );
                    self.insert_into(&mut state, source, Arc::new(pieces));
                }
            }
            state.entries.retain(|source, _| present.contains(source));
            state.evicted.retain(|source| present.contains(source));
            let state = &*state;
            wanted
                .iter()
                .filter_map(|s| state.entries.get(s).map(|c| (s.clone(), c.pieces.clone())))
                .collect()
        };
        let skip = |source: &Source, found: &HashMap<Source, Arc<Pieces<S>>>| {
            found.contains_key(source)
                || (in_advance
                    && self
                        .state
                        .lock()
                        .expect("not poisoned")
                        .evicted
                        .contains(source))
        };
        for segment in &snapshot.call_segments {
            let source = Source::Segment(segment.path.clone());
            if skip(&source, &found) {
                continue;
            }
            // Calls of other edges are not even decoded past their names.
            let batches = match &self.only {
                Some(only) => {
                    let only = only.clone();
                    let keep = callwatch_storage::RowKeep {
                        columns: vec![schema::CLIENT.into(), schema::SERVER.into()],
                        keep: Box::new(move |batch| {
                            only.mask(&batch)
                                .map_err(|e| arrow::error::ArrowError::ComputeError(e.to_string()))
                        }),
                    };
                    store.read_segment_rows(segment, self.columns, keep).await
                }
                None => store.read_segment_columns(segment, self.columns).await,
            }
            .map_err(|e| QueryError::Execution(format!("reading {}: {e}", segment.path)))?;
            // Seconds of work for a large segment: off the async workers.
            let (widths, columns) = (self.widths, self.columns);
            let pieces =
                tokio::task::spawn_blocking(move || Pieces::of(&batches, widths, columns, None))
                    .await
                    .map_err(|e| QueryError::Execution(e.to_string()))??;
            let pieces = Arc::new(pieces);
            self.insert(source.clone(), pieces.clone());
            found.insert(source, pieces);
        }
        for (batch, id) in snapshot.hot_calls.iter().zip(&snapshot.hot_call_ids) {
            let source = Source::Hot(*id);
            if skip(&source, &found) {
                continue;
            }
            let pieces = Arc::new(Pieces::of(
                std::slice::from_ref(batch),
                self.widths,
                self.columns,
                self.only.as_ref(),
            )?);
            self.insert(source.clone(), pieces.clone());
            found.insert(source, pieces);
        }
        if in_advance {
            return Ok(Vec::new());
        }
        Ok(wanted
            .iter()
            .filter_map(|s| found.get(s).cloned())
            .collect())
    }

    fn insert(&self, source: Source, pieces: Arc<Pieces<S>>) {
        let mut state = self.state.lock().expect("not poisoned");
        self.insert_into(&mut state, source, pieces);
    }

    fn insert_into(&self, state: &mut CacheState<S>, source: Source, pieces: Arc<Pieces<S>>) {
        let bytes = pieces.bytes();
        state.evicted.remove(&source);
        state
            .entries
            .insert(source.clone(), Cached { pieces, bytes });
        while state.entries.values().map(|c| c.bytes).sum::<usize>() > self.max_bytes {
            let oldest = state
                .entries
                .iter()
                .filter(|(s, _)| **s != source)
                .min_by_key(|(_, c)| c.pieces.newest_ns)
                .map(|(s, _)| s.clone());
            let Some(oldest) = oldest else { break };
            state.entries.remove(&oldest);
            state.evicted.insert(oldest);
        }
    }

    /// About how much memory the cached pieces hold.
    pub fn bytes(&self) -> usize {
        let state = self.state.lock().expect("not poisoned");
        state.entries.values().map(|c| c.bytes).sum()
    }

    /// Computes the pieces of sources new since the last call, so that queries find them.
    pub async fn warm(&self, store: &Store) -> Result<(), QueryError> {
        self.pieces(store, true, (i64::MIN, i64::MAX))
            .await
            .map(drop)
    }

    /// The statistics of each of `windows` ([from_ns, to_ns) each) of the edges `keep`
    /// keeps, from whole pieces, with the ranges no whole piece covers (for the caller to
    /// read call by call), from one look at the stored pieces.
    pub async fn windows(
        &self,
        store: &Store,
        windows: &[(i64, i64)],
        keep: impl Fn(&EdgeKey) -> bool,
    ) -> Result<Windows<S>, QueryError> {
        let from_ns = windows.iter().map(|w| w.0).min().unwrap_or(0);
        let to_ns = windows.iter().map(|w| w.1).max().unwrap_or(0);
        let sources = self.pieces(store, false, (from_ns, to_ns)).await?;
        Ok(windows
            .iter()
            .map(|(from_ns, to_ns)| {
                let (ranges, uncovered) = cover(self.widths, *from_ns, *to_ns);
                let mut stats = ByEdge::default();
                for (width, first, last) in ranges {
                    for pieces in &sources {
                        for (_, piece) in pieces.by_width[width].range(first..last) {
                            stats.merge_where(piece, &keep);
                        }
                    }
                }
                (stats, uncovered)
            })
            .collect())
    }
}

/// Breakdown pieces of the services and edges looked at last, each kept apart so that a
/// page's refresh reads only the calls that arrived since.
#[derive(Debug, Default)]
pub struct DetailCaches {
    /// Most recently used last.
    caches: Mutex<Vec<Arc<PieceCache<Details>>>>,
}

impl DetailCaches {
    /// The cache of the calls `of` keeps, made if new (forgetting the one used longest ago).
    pub fn of(&self, of: &CallsOf) -> Arc<PieceCache<Details>> {
        let mut caches = self.caches.lock().expect("not poisoned");
        let cache = match caches.iter().position(|c| c.only.as_ref() == Some(of)) {
            Some(at) => caches.remove(at),
            None => Arc::new(PieceCache::new(
                MAX_DETAIL_BYTES,
                DETAIL_WIDTHS_NS,
                DETAIL_COLUMNS,
                Some(of.clone()),
            )),
        };
        caches.push(cache.clone());
        if caches.len() > MAX_DETAIL_CACHES {
            caches.remove(0);
        }
        cache
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn graph_pieces(batches: &[RecordBatch]) -> Pieces<EdgeStats> {
        Pieces::of(batches, GRAPH_WIDTHS_NS, GRAPH_COLUMNS, None).unwrap()
    }

    /// A call of edge a → b, its fields varied by its start and duration.
    pub(crate) fn call(start_ns: i64, client_ms: i64) -> CallRow {
        let failed = client_ms % 10 == 0;
        CallRow {
            start_ns,
            trace_id: start_ns as u128,
            client: "a".into(),
            server: "b".into(),
            call_type: CallType::Sync,
            server_kind: NodeKind::Service,
            operation: Some(["GET /a", "POST /b"][(start_ns % 2) as usize].into()),
            destination: None,
            client_instance: Some(format!("a-{}", start_ns % 3).into()),
            server_instance: (start_ns % 5 != 0).then(|| format!("b-{}", start_ns % 4).into()),
            api_version: Some(["v1", "v2"][(client_ms % 2) as usize].into()),
            client_duration_ns: Some(client_ms * 1_000_000),
            server_duration_ns: Some(client_ms * 900_000),
            queue_ns: None,
            failed,
            status: failed.then(|| ["500", "503"][(start_ns % 2) as usize].into()),
            retry: false,
            timeout: false,
            breaker_state: None,
            breaker_name: None,
            client_span_id: None,
            server_span_id: None,
        }
    }

    #[test]
    fn whole_pieces_cover_the_middle_of_a_window_and_calls_its_ends() {
        const S: i64 = 1_000_000_000;
        // 12:00:05 to 12:03:17 (seconds of an hour on the minute).
        let hour = 1_700_002_800 * S;
        let (ranges, uncovered) = cover(GRAPH_WIDTHS_NS, hour + 5 * S, hour + 197 * S);
        assert_eq!(
            ranges,
            vec![
                (0, hour + 60 * S, hour + 180 * S),
                (1, hour + 10 * S, hour + 60 * S),
                (1, hour + 180 * S, hour + 190 * S),
            ]
        );
        assert_eq!(
            uncovered,
            vec![
                (hour + 5 * S, hour + 10 * S),
                (hour + 190 * S, hour + 197 * S)
            ]
        );
        // Aligned ends leave nothing to read call by call; a short window is all calls.
        assert_eq!(
            cover(GRAPH_WIDTHS_NS, hour, hour + 120 * S),
            (vec![(0, hour, hour + 120 * S)], vec![])
        );
        assert_eq!(
            cover(GRAPH_WIDTHS_NS, hour + S, hour + 9 * S),
            (vec![], vec![(hour + S, hour + 9 * S)])
        );
        // Before 1970 too.
        let (ranges, uncovered) = cover(GRAPH_WIDTHS_NS, -125 * S, -5 * S);
        assert_eq!(ranges, vec![(0, -120 * S, -60 * S), (1, -60 * S, -10 * S)]);
        assert_eq!(uncovered, vec![(-125 * S, -120 * S), (-10 * S, -5 * S)]);
    }

    /// Each span is a call that starts when the span does: a test controls exactly which
    /// calls the store holds.
    #[derive(Default)]
    pub(crate) struct CallPerSpan {
        calls: Vec<CallRow>,
    }

    impl callwatch_storage::CallDeriver for CallPerSpan {
        fn restore(&mut self, _: &[u8]) -> Result<(), String> {
            Ok(())
        }

        fn spans(&mut self, batch: &RecordBatch, _: std::time::Instant) {
            for span in callwatch_storage::span_records(batch).unwrap() {
                self.calls.push(call(span.start_ns, span.start_ns % 97));
            }
        }

        fn expire(&mut self, _: std::time::Instant) {}

        fn take_calls(&mut self) -> Option<RecordBatch> {
            let calls = std::mem::take(&mut self.calls);
            (!calls.is_empty()).then(|| callwatch_storage::calls_batch(&calls))
        }

        fn pending(&self) -> Vec<u8> {
            Vec::new()
        }
    }

    pub(crate) fn spans_from(start_ns: i64, count: i64) -> RecordBatch {
        let mut builder = callwatch_storage::SpansBuilder::with_capacity(count as usize);
        for n in 0..count {
            let start_ns = start_ns + n * 1_000_000;
            let id = format!("{:016x}", start_ns);
            builder
                .append(&callwatch_storage::SpanRow {
                    trace_id: &format!("{id:0>32}"),
                    span_id: &id,
                    service_name: "a",
                    span_name: "GET /",
                    span_kind: "CLIENT",
                    start_ns,
                    end_ns: start_ns + 1_000,
                    status_code: "UNSET",
                    ..Default::default()
                })
                .unwrap();
        }
        builder.finish().unwrap()
    }

    /// What pieces hold, in a form to compare.
    fn digest(pieces: &Pieces<EdgeStats>) -> Vec<String> {
        let thresholds = crate::stats::HealthThresholds::default();
        let mut lines = vec![format!("newest {}", pieces.newest_ns)];
        for (width, by_start) in pieces.by_width.iter().enumerate() {
            for (start, rollup) in by_start {
                let mut edges: Vec<String> = rollup
                    .edges
                    .iter()
                    .map(|(key, edge)| {
                        format!(
                            "{width} {start} {key:?} {:?} {:?} {:?}",
                            edge.calls.clone().summary(1.0, &thresholds),
                            edge.client_instances,
                            edge.server_instances
                        )
                    })
                    .collect();
                edges.sort();
                lines.extend(edges);
            }
        }
        lines
    }

    pub(crate) const S: i64 = 1_000_000_000;
    /// An hour long gone: compaction takes its segments at once.
    pub(crate) const HOUR: i64 = 1_700_002_800 * S;

    pub(crate) async fn store_with_a_call_per_span(dir: &std::path::Path) -> Store {
        let config = callwatch_storage::StoreConfig {
            flush_interval: std::time::Duration::from_secs(3600),
            ..callwatch_storage::StoreConfig::new(dir)
        };
        Store::open_with(config, Some(Box::new(CallPerSpan::default())))
            .await
            .unwrap()
    }

    /// Checks that the cache holds for each segment the pieces its file gives, without
    /// reading the file: it is deleted first.
    async fn cached_pieces_match_the_files(
        dir: &std::path::Path,
        store: &Store,
        cache: &RollupCache,
        segments: &[callwatch_storage::SegmentMeta],
    ) {
        let mut from_files = Vec::new();
        for segment in segments {
            let batches = store
                .read_segment_columns(segment, GRAPH_COLUMNS)
                .await
                .unwrap();
            from_files.push(digest(&graph_pieces(&batches)));
            std::fs::remove_file(dir.join(&segment.path)).unwrap();
        }
        cache.warm(store).await.unwrap();
        let state = cache.state.lock().unwrap();
        for (segment, expected) in segments.iter().zip(from_files) {
            let cached = &state.entries[&Source::Segment(segment.path.clone())];
            assert_eq!(digest(&cached.pieces), expected);
        }
    }

    #[tokio::test]
    async fn a_flushed_segment_gets_its_pieces_from_the_hot_batches_it_was_made_of() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_a_call_per_span(dir.path()).await;
        // Calls on both sides of an hour, each batch published on its own: one flush writes
        // two segments, each with some of the calls of several batches.
        for start in [HOUR - 90 * S, HOUR - 5 * S, HOUR + 7 * S, HOUR + 65 * S] {
            store.append(spans_from(start, 300)).await.unwrap();
            store.calls_caught_up().await;
        }
        let cache = RollupCache::default();
        cache.warm(&store).await.unwrap();
        store.flush().await.unwrap();
        let segments = store.snapshot().call_segments;
        assert_eq!(segments.len(), 2);
        cached_pieces_match_the_files(dir.path(), &store, &cache, &segments).await;
    }

    #[tokio::test]
    async fn a_compacted_segment_gets_its_pieces_from_the_segments_it_merged() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_a_call_per_span(dir.path()).await;
        let cache = RollupCache::default();
        for start in [HOUR + 5 * S, HOUR + 700 * S, HOUR + 1400 * S] {
            store.append(spans_from(start, 300)).await.unwrap();
            store.calls_caught_up().await;
            cache.warm(&store).await.unwrap();
            store.flush().await.unwrap();
        }
        cache.warm(&store).await.unwrap();
        assert_eq!(store.snapshot().call_segments.len(), 3);
        store.compact().await.unwrap();
        let segments = store.snapshot().call_segments;
        assert_eq!(segments.len(), 1);
        assert_eq!(segments[0].rows, 900);
        cached_pieces_match_the_files(dir.path(), &store, &cache, &segments).await;
    }

    #[test]
    fn the_pieces_of_the_oldest_calls_make_room_first() {
        let minute = 60_000_000_000;
        let pieces_at = |minutes: i64| {
            let calls: Vec<CallRow> = (0..10).map(|i| call(minutes * minute + i, i)).collect();
            Arc::new(graph_pieces(&[callwatch_storage::calls_batch(&calls)]))
        };
        let one = pieces_at(1).bytes();
        let cache = RollupCache::new(one * 2, GRAPH_WIDTHS_NS, GRAPH_COLUMNS, None);
        let source = |n: i64| Source::Segment(format!("calls/{n}.parquet"));
        cache.insert(source(2), pieces_at(2));
        cache.insert(source(1), pieces_at(1));
        cache.insert(source(3), pieces_at(3));
        let state = cache.state.lock().unwrap();
        let mut kept: Vec<_> = state.entries.keys().cloned().collect();
        kept.sort_by_key(|s| format!("{s:?}"));
        assert_eq!(kept, vec![source(2), source(3)]);
        assert!(state.evicted.contains(&source(1)));
    }

    #[test]
    fn pieces_add_up_to_the_calls_they_hold() {
        // One call every 700 ms for 5 minutes, starting off a minute boundary.
        let base = 1_700_000_013_000_000_000;
        let calls: Vec<CallRow> = (0..430)
            .map(|i| call(base + i * 700_000_000, i % 97))
            .collect();
        let batch = callwatch_storage::calls_batch(&calls);
        assert_eq!(batch.num_rows(), 430);
        let pieces = graph_pieces(&[batch]);
        let total: u64 = pieces.by_width[0]
            .values()
            .map(|r| r.edges.values().map(|e| e.calls.calls).sum::<u64>())
            .sum();
        assert_eq!(total, 430);
        let narrow: u64 = pieces.by_width[1]
            .values()
            .map(|r| r.edges.values().map(|e| e.calls.calls).sum::<u64>())
            .sum();
        assert_eq!(narrow, 430);
        // Wide pieces start on their width.
        assert!(pieces.by_width[0].keys().all(|k| k % 60_000_000_000 == 0));
        // A merged piece equals the rollup of its calls.
        let minute = *pieces.by_width[0].keys().nth(1).unwrap();
        let direct = Rollup::of(
            calls
                .iter()
                .filter(|c| c.start_ns >= minute && c.start_ns < minute + 60_000_000_000),
        );
        let merged = &pieces.by_width[0][&minute];
        let key = EdgeKey::of(&calls[0]);
        let (a, b) = (&direct.edges[&key], &merged.edges[&key]);
        assert_eq!(a.calls.calls, b.calls.calls);
        assert_eq!(a.calls.errors, b.calls.errors);
        assert_eq!(a.client_instances, b.client_instances);
        let thresholds = crate::stats::HealthThresholds::default();
        assert_eq!(
            a.calls.clone().summary(60.0, &thresholds).latency_ms,
            b.calls.clone().summary(60.0, &thresholds).latency_ms
        );
    }
}
