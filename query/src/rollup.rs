//! What is kept of calls per edge: the graph's statistics ([`Rollup`]) and, for the
//! service and edge pages, breakdowns by operation, instance, version and status
//! ([`Details`]). Both add up call by call and merge, so that stored pieces of a window
//! (see [`crate::pieces`]) make the window's.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{Array, BooleanArray, RecordBatch, StringArray};
use callwatch_storage::{CallRow, CallType, NodeKind, schema};

use crate::error::QueryError;
use crate::stats::Accumulator;

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

/// The edge of a call, borrowed from it: looks an edge up without cloning its names, whose
/// counts the deriver and every reader of calls share. Hashes as [`EdgeKey`] does (a
/// `&str` as the `Arc<str>` of the same text).
#[derive(Hash)]
struct EdgeOf<'a> {
    source: &'a str,
    target: &'a str,
    call_type: CallType,
    destination: Option<&'a str>,
}

impl<'a> EdgeOf<'a> {
    fn of(call: &'a CallRow) -> Self {
        Self {
            source: &call.client,
            target: &call.server,
            call_type: call.call_type,
            destination: match call.call_type {
                CallType::Async => call.destination.as_deref(),
                CallType::Sync => None,
            },
        }
    }
}

impl hashbrown::Equivalent<EdgeKey> for EdgeOf<'_> {
    fn equivalent(&self, key: &EdgeKey) -> bool {
        self.source == &*key.source
            && self.target == &*key.target
            && self.call_type == key.call_type
            && self.destination == key.destination.as_deref()
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
    pub(crate) fn mask(&self, batch: &RecordBatch) -> Result<BooleanArray, QueryError> {
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

/// What malloc adds to each allocation, about: a header, and rounding up to 16 bytes.
const PER_ALLOCATION: usize = 16;

/// What a vector holds on the heap.
pub(crate) fn vec_heap_bytes<T>(vec: &Vec<T>) -> usize {
    match vec.capacity() * std::mem::size_of::<T>() {
        0 => 0,
        bytes => bytes + PER_ALLOCATION,
    }
}

/// What a B-tree set of names holds on the heap: nodes of eleven slots, about two thirds
/// full.
fn name_set_heap_bytes(set: &BTreeSet<Arc<str>>) -> usize {
    const NODE: usize = 11 * std::mem::size_of::<Arc<str>>() + 16 + PER_ALLOCATION;
    set.len().div_ceil(7) * NODE
}

/// What is kept of the calls of one edge in a piece.
pub trait CallStats: Clone + Send + Sync + 'static {
    /// Nothing yet, for the edge of `call`.
    fn empty(call: &CallRow) -> Self;
    fn add(&mut self, call: &CallRow);
    fn merge(&mut self, other: &Self);
    /// Done adding, to be kept: what waits to be counted is counted, and its room let go.
    fn settle(&mut self);
    /// About how much memory it holds on the heap, beyond its own size.
    fn heap_bytes(&self) -> usize;
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

    fn settle(&mut self) {
        self.calls.settle();
    }

    fn heap_bytes(&self) -> usize {
        self.calls.heap_bytes()
            + name_set_heap_bytes(&self.client_instances)
            + name_set_heap_bytes(&self.server_instances)
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

/// Calls of each value of a dimension (`None`: calls without one), in the order of the
/// values. A sorted vector: most dimensions have a handful of values, and a map's node
/// would hold room for eleven.
#[derive(Debug, Clone, Default)]
pub struct Groups(Vec<(Option<Arc<str>>, Accumulator)>);

impl Groups {
    /// The calls of `value`, added if new.
    fn of(&mut self, value: Option<&Arc<str>>) -> &mut Accumulator {
        let at = match self
            .0
            .binary_search_by(|(mine, _)| mine.as_deref().cmp(&value.map(|v| &**v)))
        {
            Ok(at) => at,
            Err(at) => {
                self.0.insert(at, (value.cloned(), Accumulator::default()));
                at
            }
        };
        &mut self.0[at].1
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Option<Arc<str>>, &Accumulator)> {
        self.0.iter().map(|(value, calls)| (value, calls))
    }

    pub fn values(&self) -> impl Iterator<Item = &Accumulator> {
        self.0.iter().map(|(_, calls)| calls)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn heap_bytes(&self) -> usize {
        vec_heap_bytes(&self.0) + self.values().map(Accumulator::heap_bytes).sum::<usize>()
    }
}

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
/// Among equal keys the latest call goes first, so that the same calls are kept whatever
/// order pieces merge in.
fn keep_best(best: &mut Vec<Exemplar>, candidate: Exemplar, key: impl Fn(&Exemplar) -> i64) {
    if best.contains(&candidate) {
        return;
    }
    let rank = |e: &Exemplar| (key(e), e.start_ns, e.trace_id);
    let at = best.partition_point(|e| rank(e) >= rank(&candidate));
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
                self.by[dimension as usize].of(value).add(call);
            }
        }
    }

    fn merge(&mut self, other: &Self) {
        self.all.merge(&other.all);
        self.keep_exemplars(other.slowest.iter().chain(&other.latest_failed).cloned());
        for (mine, theirs) in self.by.iter_mut().zip(&other.by) {
            for (value, group) in theirs.iter() {
                mine.of(value.as_ref()).merge(group);
            }
        }
    }

    fn settle(&mut self) {
        self.all.settle();
        for groups in &mut self.by {
            for (_, calls) in &mut groups.0 {
                calls.settle();
            }
        }
    }

    fn heap_bytes(&self) -> usize {
        self.all.heap_bytes()
            + self.by.iter().map(Groups::heap_bytes).sum::<usize>()
            + vec_heap_bytes(&self.slowest)
            + vec_heap_bytes(&self.latest_failed)
    }
}

/// Statistics of a set of calls, per edge.
#[derive(Debug, Clone)]
pub struct ByEdge<S> {
    /// Hashed with foldhash: every call of every batch is looked up here.
    pub edges: hashbrown::HashMap<EdgeKey, S, foldhash::fast::RandomState>,
}

impl<S> Default for ByEdge<S> {
    fn default() -> Self {
        Self {
            edges: hashbrown::HashMap::default(),
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
        match self.edges.get_mut(&EdgeOf::of(call)) {
            Some(stats) => stats.add(call),
            None => self
                .edges
                .entry(EdgeKey::of(call))
                .or_insert_with(|| S::empty(call))
                .add(call),
        }
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

    /// About how much memory it holds: the table's slots (a key, the statistics and a
    /// control byte each), and what the statistics hold on the heap.
    pub(crate) fn bytes(&self) -> usize {
        let slot = std::mem::size_of::<(EdgeKey, S)>() + 1;
        let slots = match self.edges.capacity() {
            0 => 0,
            // Hash tables keep one slot in eight free.
            capacity => (capacity * 8 / 7 + 1) * slot + PER_ALLOCATION,
        };
        slots + self.edges.values().map(S::heap_bytes).sum::<usize>()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A call of edge a → b, its fields varied by its start and duration.
    pub(crate) fn call(start_ns: i64, client_ms: i64) -> CallRow {
        let failed = client_ms % 10 == 0;
        CallRow {
            trace_id: start_ns as u128,
            operation: Some(["GET /a", "POST /b"][(start_ns % 2) as usize].into()),
            client_instance: Some(format!("a-{}", start_ns % 3).into()),
            server_instance: (start_ns % 5 != 0).then(|| format!("b-{}", start_ns % 4).into()),
            api_version: Some(["v1", "v2"][(client_ms % 2) as usize].into()),
            client_duration_ns: Some(client_ms * 1_000_000),
            server_duration_ns: Some(client_ms * 900_000),
            failed,
            status: failed.then(|| ["500", "503"][(start_ns % 2) as usize].into()),
            ..CallRow::between(start_ns, "a", "b")
        }
    }

    #[test]
    fn calls_find_their_edge_by_a_borrowed_key() {
        use std::hash::BuildHasher;
        let hasher = foldhash::fast::RandomState::default();
        let sync = CallRow {
            destination: Some("orders".into()),
            ..call(1, 7)
        };
        let async_call = CallRow {
            call_type: CallType::Async,
            destination: Some("orders".into()),
            ..call(2, 7)
        };
        let no_destination = CallRow {
            call_type: CallType::Async,
            ..call(3, 7)
        };
        for call in [&sync, &async_call, &no_destination] {
            let (borrowed, owned) = (EdgeOf::of(call), EdgeKey::of(call));
            assert_eq!(hasher.hash_one(&borrowed), hasher.hash_one(&owned));
            assert!(hashbrown::Equivalent::equivalent(&borrowed, &owned));
        }
        // A sync call's destination is no part of its edge; an async call's is.
        let rollup = Rollup::of([&sync, &sync, &async_call, &no_destination, &async_call]);
        let calls = |call: &CallRow| rollup.edges[&EdgeKey::of(call)].calls.calls;
        assert_eq!(rollup.edges.len(), 3);
        assert_eq!(
            (calls(&sync), calls(&async_call), calls(&no_destination)),
            (2, 2, 1)
        );
    }
}
