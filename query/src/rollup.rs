//! The graph's statistics in pieces: per edge, per 10 seconds and per minute of call start
//! time, for each calls segment and hot batch. A segment's pieces are computed once (its
//! file never changes), so the graph of a long window merges a few hundred pieces instead of
//! reading millions of calls; only the seconds at the window's ends that no whole piece
//! covers are read call by call. A segment this process wrote gets its pieces by adding up
//! those of the hot batches (or segments) it was made of, without reading the file.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use callwatch_storage::{
    CallColumns, CallRow, CallType, Interner, NodeKind, Origin, Store, project, schema,
};

use crate::error::QueryError;
use crate::stats::Accumulator;

/// The widths of the pieces, widest first.
const PIECE_WIDTHS_NS: [i64; 2] = [60_000_000_000, 10_000_000_000];

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

/// What the graph keeps of an edge's calls.
#[derive(Debug, Clone)]
pub struct EdgeStats {
    pub server_kind: NodeKind,
    pub calls: Accumulator,
    pub client_instances: BTreeSet<Arc<str>>,
    pub server_instances: BTreeSet<Arc<str>>,
}

/// Edge statistics of a set of calls.
#[derive(Debug, Default, Clone)]
pub struct Rollup {
    /// Hashed with foldhash: every call of every batch is looked up here.
    pub edges: foldhash::HashMap<EdgeKey, EdgeStats>,
}

impl Rollup {
    pub fn of<'a>(calls: impl IntoIterator<Item = &'a CallRow>) -> Self {
        let mut rollup = Self::default();
        for call in calls {
            rollup.add(call);
        }
        rollup
    }

    pub fn add(&mut self, call: &CallRow) {
        let edge = self
            .edges
            .entry(EdgeKey::of(call))
            .or_insert_with(|| EdgeStats {
                server_kind: call.server_kind,
                calls: Accumulator::default(),
                client_instances: BTreeSet::new(),
                server_instances: BTreeSet::new(),
            });
        edge.calls.add(call);
        if let Some(instance) = &call.client_instance
            && !edge.client_instances.contains(instance)
        {
            edge.client_instances.insert(instance.clone());
        }
        if let Some(instance) = &call.server_instance
            && !edge.server_instances.contains(instance)
        {
            edge.server_instances.insert(instance.clone());
        }
    }

    pub fn merge(&mut self, other: &Rollup) {
        for (key, theirs) in &other.edges {
            match self.edges.get_mut(key) {
                Some(mine) => {
                    mine.calls.merge(&theirs.calls);
                    mine.client_instances
                        .extend(theirs.client_instances.iter().cloned());
                    mine.server_instances
                        .extend(theirs.server_instances.iter().cloned());
                }
                None => {
                    self.edges.insert(key.clone(), theirs.clone());
                }
            }
        }
    }
}

/// The pieces of one segment or hot batch: for each width, rollups by piece start.
#[derive(Debug, Default)]
struct Pieces {
    by_width: [BTreeMap<i64, Rollup>; PIECE_WIDTHS_NS.len()],
    /// Start of the latest narrow piece.
    newest_ns: i64,
}

impl Pieces {
    fn bytes(&self) -> usize {
        let edge = |stats: &EdgeStats| {
            stats.calls.bytes()
                + 64 * (stats.client_instances.len() + stats.server_instances.len())
                + 128
        };
        self.by_width
            .iter()
            .flat_map(|pieces| pieces.values())
            .flat_map(|rollup| rollup.edges.values())
            .map(edge)
            .sum()
    }
}

/// The columns pieces are made of: the others (ids, operations, versions) are not read.
const ROLLUP_COLUMNS: [&str; 15] = [
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

/// Most memory the cached pieces may hold. Beyond it the pieces of the oldest calls are
/// dropped first (dashboards look at recent windows); a query that needs them again
/// computes them again.
const MAX_CACHED_BYTES: usize = 512 << 20;

impl Pieces {
    fn of(batches: &[RecordBatch]) -> Result<Self, QueryError> {
        let mut names = Interner::default();
        let mut narrowest: BTreeMap<i64, Rollup> = BTreeMap::new();
        let narrow = PIECE_WIDTHS_NS[PIECE_WIDTHS_NS.len() - 1];
        let error = |e: callwatch_storage::StoreError| QueryError::Execution(e.to_string());
        for batch in batches {
            let batch = project(batch, &ROLLUP_COLUMNS).map_err(error)?;
            let calls = CallColumns::new(&batch).map_err(error)?;
            for row in 0..calls.len() {
                let call = calls.row(row, &mut names);
                narrowest
                    .entry(piece_start(call.start_ns, narrow))
                    .or_default()
                    .add(&call);
            }
        }
        let mut pieces = Self {
            newest_ns: narrowest.keys().next_back().copied().unwrap_or(i64::MIN),
            ..Self::default()
        };
        // Wider pieces are merged from the narrowest: each width divides the one before.
        for (index, width) in PIECE_WIDTHS_NS.iter().enumerate() {
            let mut wide: BTreeMap<i64, Rollup> = BTreeMap::new();
            for (start, rollup) in &narrowest {
                wide.entry(piece_start(*start, *width))
                    .or_default()
                    .merge(rollup);
            }
            pieces.by_width[index] = wide;
        }
        Ok(pieces)
    }

    /// The pieces of `parts` that start in [from_ns, to_ns), merged: a segment's, from those
    /// of the batches or segments it was made of. Both bounds are whole hours, and pieces
    /// never cross an hour.
    fn within(parts: &[Arc<Pieces>], from_ns: i64, to_ns: i64) -> Self {
        let mut pieces = Self {
            newest_ns: i64::MIN,
            ..Self::default()
        };
        for part in parts {
            for (index, wide) in pieces.by_width.iter_mut().enumerate() {
                for (start, rollup) in part.by_width[index].range(from_ns..to_ns) {
                    wide.entry(*start).or_default().merge(rollup);
                }
            }
        }
        let narrowest = &pieces.by_width[PIECE_WIDTHS_NS.len() - 1];
        if let Some(newest) = narrowest.keys().next_back() {
            pieces.newest_ns = *newest;
        }
        pieces
    }
}

/// Pieces of one width (its index) whose starts are in [first, last).
type PieceRange = (usize, i64, i64);

/// How whole pieces cover [from_ns, to_ns): ranges of piece starts (index of the width,
/// first, last exclusive), widest first, and what no whole piece covers.
fn cover(from_ns: i64, to_ns: i64) -> (Vec<PieceRange>, Vec<(i64, i64)>) {
    let mut ranges = Vec::new();
    let mut uncovered = vec![(from_ns, to_ns)];
    for (index, width) in PIECE_WIDTHS_NS.iter().enumerate() {
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

struct Cached {
    pieces: Arc<Pieces>,
    bytes: usize,
}

/// Pieces of every calls segment and hot batch of the store, computed when first asked for
/// and forgotten when their source is gone (flushed, compacted or expired).
pub struct RollupCache {
    state: Mutex<CacheState>,
    max_bytes: usize,
}

impl Default for RollupCache {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            max_bytes: MAX_CACHED_BYTES,
        }
    }
}

#[derive(Default)]
struct CacheState {
    entries: HashMap<Source, Cached>,
    /// Sources dropped for room: computed again when a query needs them, never in advance.
    evicted: HashSet<Source>,
}

impl std::fmt::Debug for RollupCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries = self.state.lock().map_or(0, |s| s.entries.len());
        f.debug_struct("RollupCache")
            .field("entries", &entries)
            .finish()
    }
}

impl RollupCache {
    /// The pieces of every source of the store's current snapshot (with `in_advance`, only
    /// of those that were never dropped for room, and nothing is returned).
    async fn pieces(
        &self,
        store: &Store,
        in_advance: bool,
    ) -> Result<Vec<Arc<Pieces>>, QueryError> {
        let snapshot = store.snapshot();
        let wanted: Vec<Source> = snapshot
            .call_segments
            .iter()
            .map(|s| Source::Segment(s.path.clone()))
            .chain(snapshot.hot_call_ids.iter().map(|id| Source::Hot(*id)))
            .collect();
        let mut found: HashMap<Source, Arc<Pieces>> = {
            let present: HashSet<&Source> = wanted.iter().collect();
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
                let parts: Option<Vec<Arc<Pieces>>> = origins
                    .iter()
                    .map(|origin| {
                        let cached = state.entries.get(&Source::from(origin))?;
                        Some(cached.pieces.clone())
                    })
                    .collect();
                if let Some(parts) = parts {
                    let pieces = Pieces::within(&parts, segment.start_ns(), segment.end_ns());
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
        let skip = |source: &Source, found: &HashMap<Source, Arc<Pieces>>| {
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
            let batches = store
                .read_segment_columns(segment, &ROLLUP_COLUMNS)
                .await
                .map_err(|e| QueryError::Execution(format!("reading {}: {e}", segment.path)))?;
            // Seconds of work for a large segment: off the async workers.
            let pieces = tokio::task::spawn_blocking(move || Pieces::of(&batches))
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
            let pieces = Arc::new(Pieces::of(std::slice::from_ref(batch))?);
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

    fn insert(&self, source: Source, pieces: Arc<Pieces>) {
        let mut state = self.state.lock().expect("not poisoned");
        self.insert_into(&mut state, source, pieces);
    }

    fn insert_into(&self, state: &mut CacheState, source: Source, pieces: Arc<Pieces>) {
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

    /// Computes the pieces of sources new since the last call, so that queries find them.
    pub async fn warm(&self, store: &Store) -> Result<(), QueryError> {
        self.pieces(store, true).await.map(drop)
    }

    /// The statistics of every call that started in [from_ns, to_ns), from whole pieces,
    /// and the sub-windows (at most one at each end) that no whole piece covers, for the
    /// caller to read call by call.
    /// The rollup of each of `windows` ([from_ns, to_ns) each), with the ranges no whole
    /// piece covers, from one look at the stored pieces.
    pub async fn rollups<const N: usize>(
        &self,
        store: &Store,
        windows: [(i64, i64); N],
    ) -> Result<[(Rollup, Vec<(i64, i64)>); N], QueryError> {
        let sources = self.pieces(store, false).await?;
        Ok(windows.map(|(from_ns, to_ns)| {
            let (ranges, uncovered) = cover(from_ns, to_ns);
            let mut rollup = Rollup::default();
            for (width, first, last) in ranges {
                for pieces in &sources {
                    for (_, piece) in pieces.by_width[width].range(first..last) {
                        rollup.merge(piece);
                    }
                }
            }
            (rollup, uncovered)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(start_ns: i64, client_ms: i64) -> CallRow {
        CallRow {
            start_ns,
            trace_id: 1,
            client: "a".into(),
            server: "b".into(),
            call_type: CallType::Sync,
            server_kind: NodeKind::Service,
            operation: None,
            destination: None,
            client_instance: Some(format!("a-{}", start_ns % 3).into()),
            server_instance: None,
            api_version: None,
            client_duration_ns: Some(client_ms * 1_000_000),
            server_duration_ns: None,
            queue_ns: None,
            failed: client_ms % 10 == 0,
            status: None,
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
        let (ranges, uncovered) = cover(hour + 5 * S, hour + 197 * S);
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
            cover(hour, hour + 120 * S),
            (vec![(0, hour, hour + 120 * S)], vec![])
        );
        assert_eq!(
            cover(hour + S, hour + 9 * S),
            (vec![], vec![(hour + S, hour + 9 * S)])
        );
        // Before 1970 too.
        let (ranges, uncovered) = cover(-125 * S, -5 * S);
        assert_eq!(ranges, vec![(0, -120 * S, -60 * S), (1, -60 * S, -10 * S)]);
        assert_eq!(uncovered, vec![(-125 * S, -120 * S), (-10 * S, -5 * S)]);
    }

    /// Each span is a call that starts when the span does: a test controls exactly which
    /// calls the store holds.
    #[derive(Default)]
    struct CallPerSpan {
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

    fn spans_from(start_ns: i64, count: i64) -> RecordBatch {
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
    fn digest(pieces: &Pieces) -> Vec<String> {
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

    const S: i64 = 1_000_000_000;
    /// An hour long gone: compaction takes its segments at once.
    const HOUR: i64 = 1_700_002_800 * S;

    async fn store_with_a_call_per_span(dir: &std::path::Path) -> Store {
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
                .read_segment_columns(segment, &ROLLUP_COLUMNS)
                .await
                .unwrap();
            from_files.push(digest(&Pieces::of(&batches).unwrap()));
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
            Arc::new(Pieces::of(&[callwatch_storage::calls_batch(&calls)]).unwrap())
        };
        let one = pieces_at(1).bytes();
        let cache = RollupCache {
            max_bytes: one * 2,
            ..RollupCache::default()
        };
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
        let pieces = Pieces::of(&[batch]).unwrap();
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
