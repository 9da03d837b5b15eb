//! Statistics of calls in pieces of time, merged per clock hour, so that a window of any
//! length is put together from a few hundred pieces instead of millions of calls.
//!
//! Each clock hour keeps, over every segment and hot batch holding calls of it, the calls
//! per edge in pieces of several widths: the whole hour (for long windows), 10 minutes
//! (for their series), minutes and 10 seconds (for a window's ends). Only the seconds at a
//! window's ends that no whole piece covers are read call by call.
//!
//! An hour is kept up to date as calls arrive: a new hot batch's pieces are added to it,
//! and a segment flushed from hot batches, or compacted from segments, takes their place
//! without being read. Warming takes every batch as it is published, so that one flushed
//! before warming came to it is still added from memory, not read back with its segment.
//! To make room, the narrow widths of the hours looked at longest ago go first; an hour is
//! read again only when a window needs a width it no longer has.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, BooleanArray, RecordBatch, TimestampNanosecondArray};
use callwatch_storage::{
    CallColumns, CallRow, Interner, Origin, PublishedCalls, SegmentMeta, Snapshot, Store, project,
    schema,
};
use futures::StreamExt;

use crate::error::QueryError;
use crate::rollup::{ByEdge, CallStats, CallsOf, Details, EdgeKey, EdgeStats};

const TEN_SECONDS_NS: i64 = 10_000_000_000;
const MINUTE_NS: i64 = 60_000_000_000;
const TEN_MINUTES_NS: i64 = 600_000_000_000;
const HOUR_NS: i64 = 3_600_000_000_000;

/// The widths of the graph's pieces, widest first (each divides the one before).
const GRAPH_WIDTHS_NS: &[i64] = &[HOUR_NS, TEN_MINUTES_NS, MINUTE_NS, TEN_SECONDS_NS];

/// The widths of breakdown pieces. They hold more per edge than the graph's, so the
/// seconds at a window's ends are read call by call instead of kept in 10 s pieces; the
/// pages' series come from the graph's pieces.
const DETAIL_WIDTHS_NS: &[i64] = &[HOUR_NS, MINUTE_NS];

/// How many hours a window brings up to date at once: reading is CPU work, shared with
/// ingest and the other readers.
const PARALLEL_HOURS: usize = 2;

/// Most memory the published batches kept after their flush may hold: what calls of a
/// few seconds at full speed take.
const MOST_PUBLISHED_BYTES: usize = 128 << 20;

/// How many hours back warming keeps up to date in advance: older hours are made when a
/// window first needs them.
const WARM_HOURS: i64 = 25;

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

/// Most memory the graph's pieces may hold.
const MAX_GRAPH_BYTES: usize = 512 << 20;

/// Most memory every edge's breakdown pieces may hold.
const MAX_ALL_DETAILS_BYTES: usize = 384 << 20;

/// Most memory the breakdown pieces of one service or edge may hold.
const MAX_DETAIL_BYTES: usize = 96 << 20;

/// How many services and edges keep breakdown pieces: those looked at last.
const MAX_DETAIL_CACHES: usize = 4;

/// Pieces of one width by their start.
type ByStart<S> = BTreeMap<i64, ByEdge<S>>;

/// Held while an hour is brought up to date.
type HourLock = Arc<tokio::sync::Mutex<()>>;

/// The pieces of one width of an hour a window uses, with the width in ns.
type UsedWidth<S> = (i64, Arc<ByStart<S>>);

fn piece_start(ns: i64, width: i64) -> i64 {
    ns.div_euclid(width) * width
}

/// About how much memory pieces of one width hold: each piece's, and its entry in a
/// B-tree node (eleven slots of a start and a table header, about two thirds full).
fn bytes_of<S: CallStats>(pieces: &ByStart<S>) -> usize {
    pieces.values().map(|p| p.bytes() + PIECE_ENTRY).sum()
}

const PIECE_ENTRY: usize = 3 * std::mem::size_of::<(i64, ByEdge<EdgeStats>)>() / 2;

/// Adds calls up into the narrowest pieces, batch after batch (so that no more than one
/// segment's calls are in memory at once); the wider pieces are merged from them at the end.
struct Builder<S> {
    narrowest: ByStart<S>,
    names: Interner,
}

impl<S: CallStats> Builder<S> {
    fn new() -> Self {
        Self {
            narrowest: BTreeMap::new(),
            names: Interner::default(),
        }
    }

    /// Adds the calls of `batches` that `only` keeps (all if `None`), of the hour starting
    /// at `hour` if given: a batch of late calls may hold calls of many hours, and each
    /// hour takes only its own.
    fn add(
        &mut self,
        batches: &[RecordBatch],
        widths: &[i64],
        columns: &[&str],
        only: Option<&CallsOf>,
        hour: Option<i64>,
    ) -> Result<(), QueryError> {
        let narrow = widths[widths.len() - 1];
        let error = |e: callwatch_storage::StoreError| QueryError::Execution(e.to_string());
        let arrow_error = |e: arrow::error::ArrowError| QueryError::Execution(e.to_string());
        for batch in batches {
            let mut mask = match only {
                Some(only) => Some(only.mask(batch)?),
                None => None,
            };
            if let Some(hour) = hour
                && let Some(in_hour) = in_hour(batch, hour).map_err(arrow_error)?
            {
                mask = Some(match mask {
                    Some(mask) => arrow::compute::and(&mask, &in_hour).map_err(arrow_error)?,
                    None => in_hour,
                });
            }
            let batch = match mask {
                Some(mask) => {
                    arrow::compute::filter_record_batch(batch, &mask).map_err(arrow_error)?
                }
                None => batch.clone(),
            };
            let batch = project(&batch, columns).map_err(error)?;
            let calls = CallColumns::new(&batch).map_err(error)?;
            for row in 0..calls.len() {
                let call = calls.row(row, &mut self.names);
                self.add_call(&call, narrow);
            }
        }
        Ok(())
    }

    /// Adds the calls of `rows` that `only` keeps (all if `None`) and that start in the hour
    /// starting at `hour`, as [`Builder::add`] adds those of their batch.
    fn add_rows(&mut self, rows: &[CallRow], widths: &[i64], only: Option<&CallsOf>, hour: i64) {
        let narrow = widths[widths.len() - 1];
        let hour = hour..hour + HOUR_NS;
        for call in rows {
            if hour.contains(&call.start_ns)
                && only.is_none_or(|only| only.keeps(&call.client, &call.server))
            {
                self.add_call(call, narrow);
            }
        }
    }

    /// Adds one call to the narrowest piece (`narrow` ns wide) it starts in.
    fn add_call(&mut self, call: &CallRow, narrow: i64) {
        self.narrowest
            .entry(piece_start(call.start_ns, narrow))
            .or_default()
            .add(call);
    }

    /// The pieces at every width, widest first: each merged from the next narrower.
    fn finish(mut self, widths: &[i64]) -> Vec<ByStart<S>> {
        for stats in self
            .narrowest
            .values_mut()
            .flat_map(|p| p.edges.values_mut())
        {
            stats.settle();
        }
        let mut by_width = vec![self.narrowest];
        for width in widths[..widths.len() - 1].iter().rev() {
            let mut wide: ByStart<S> = BTreeMap::new();
            for (start, stats) in &by_width[0] {
                wide.entry(piece_start(*start, *width))
                    .or_default()
                    .merge(stats);
            }
            by_width.insert(0, wide);
        }
        by_width
    }
}

/// Which calls of `batch` start in the hour starting at `hour`; `None` if all do.
fn in_hour(
    batch: &RecordBatch,
    hour: i64,
) -> Result<Option<BooleanArray>, arrow::error::ArrowError> {
    let Some(starts) = batch
        .column_by_name(schema::START_TIME)
        .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
    else {
        return Ok(None);
    };
    let (Some(first), Some(last)) = (arrow::compute::min(starts), arrow::compute::max(starts))
    else {
        return Ok(None);
    };
    if hour <= first && last < hour + HOUR_NS {
        return Ok(None);
    }
    let bound = |ns: i64| {
        TimestampNanosecondArray::new_scalar(ns)
            .into_inner()
            .with_timezone_opt(starts.timezone())
    };
    let (from, to) = (bound(hour), bound(hour + HOUR_NS));
    use arrow::compute::kernels::cmp::{gt_eq, lt};
    arrow::compute::and(
        &gt_eq(starts, &arrow::array::Scalar::new(from))?,
        &lt(starts, &arrow::array::Scalar::new(to))?,
    )
    .map(Some)
}

/// Which stored thing calls were read from.
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

/// The pieces of one width of an hour.
struct Width<S> {
    pieces: Arc<ByStart<S>>,
    bytes: usize,
    /// When a window last used it, on the cache's clock: the least used go first.
    used: u64,
}

/// One clock hour's calls, over every source holding calls of it.
struct Hour<S> {
    /// The sources whose calls of this hour the pieces hold.
    sources: HashSet<Source>,
    /// By width, widest first; `None` where dropped for room.
    widths: Vec<Option<Width<S>>>,
}

impl<S: CallStats> Hour<S> {
    fn bytes(&self) -> usize {
        self.widths.iter().flatten().map(|w| w.bytes).sum()
    }

    /// Adds the calls of this hour that `pieces` (a source's, at every width) hold, to
    /// every width it still has.
    fn add(&mut self, start: i64, pieces: &[ByStart<S>]) {
        for (width, theirs) in self.widths.iter_mut().zip(pieces) {
            let Some(width) = width else { continue };
            let mine = Arc::make_mut(&mut width.pieces);
            for (at, stats) in theirs.range(start..start + HOUR_NS) {
                let piece = mine.entry(*at).or_default();
                let before = piece.bytes() + PIECE_ENTRY;
                piece.merge(stats);
                width.bytes = width.bytes + piece.bytes() + PIECE_ENTRY - before.min(width.bytes);
            }
        }
    }
}

/// What bringing an hour up to date with a snapshot takes.
enum Update {
    Current,
    /// Adding the calls of the sources `read`; then each segment of `replacing` takes the
    /// place of the sources it was made of (those it held, and those read now).
    Add {
        read: Vec<Source>,
        replacing: Vec<(Source, Vec<Source>)>,
    },
    /// Reading all its sources again.
    Make,
}

struct CacheState<S> {
    hours: BTreeMap<i64, Hour<S>>,
    /// Hours dropped whole for room: warming leaves them be; a window that needs one makes
    /// it again.
    dropped: BTreeSet<i64>,
    /// The first and last hour each hot batch seen holds calls of: a segment flushed from
    /// batches takes the place of those that hold calls of its hour.
    hot_hours: HashMap<u64, (i64, i64)>,
    /// Hot batches as published, by the store's number, kept while an hour may still need
    /// one after it was flushed ([`PieceCache::follow`]).
    published: HashMap<u64, Published>,
    clock: u64,
}

impl<S> Default for CacheState<S> {
    fn default() -> Self {
        Self {
            hours: BTreeMap::new(),
            dropped: BTreeSet::new(),
            hot_hours: HashMap::new(),
            published: HashMap::new(),
            clock: 0,
        }
    }
}

/// A hot batch as published, with the rows it was made of until the pieces are made of them
/// (or the warming after it ends): as they are, every column (`columns` are those the
/// statistics read); the batch is decoded only when an hour is read again.
struct Published {
    batch: RecordBatch,
    rows: Option<Arc<Vec<CallRow>>>,
}

/// The calls of one source as read.
enum Calls {
    Batches(Vec<RecordBatch>),
    Rows(Arc<Vec<CallRow>>),
}

/// Pieces of the calls of the store (or of those `only` keeps), per clock hour.
pub struct PieceCache<S> {
    state: Mutex<CacheState<S>>,
    /// A lock per hour, held while it is brought up to date: its new calls are added once,
    /// and windows over other hours need not wait.
    updating: Mutex<HashMap<i64, HourLock>>,
    max_bytes: usize,
    widths: &'static [i64],
    columns: &'static [&'static str],
    only: Option<CallsOf>,
    /// Hours made again from all their calls, having had pieces: what a window may wait for.
    remade: AtomicU64,
    /// Every hot batch the store publishes, once warming went over every hour once.
    published: Mutex<Option<Receiver<PublishedCalls>>>,
}

/// The graph's pieces: every edge.
pub type RollupCache = PieceCache<EdgeStats>;

impl Default for RollupCache {
    fn default() -> Self {
        Self::new(MAX_GRAPH_BYTES, GRAPH_WIDTHS_NS, GRAPH_COLUMNS, None)
    }
}

impl<S> std::fmt::Debug for PieceCache<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hours = self.state.lock().map_or(0, |s| s.hours.len());
        f.debug_struct("PieceCache")
            .field("only", &self.only)
            .field("hours", &hours)
            .finish()
    }
}

/// Statistics of each of a list of windows, and what no whole piece covers of each.
pub type Windows<S> = Vec<(ByEdge<S>, Vec<(i64, i64)>)>;

/// The parts of [from_ns, to_ns) in each clock hour.
fn hour_parts(from_ns: i64, to_ns: i64) -> impl Iterator<Item = (i64, (i64, i64))> {
    let first = piece_start(from_ns, HOUR_NS);
    (0..)
        .map(move |n| first + n * HOUR_NS)
        .take_while(move |hour| *hour < to_ns)
        .map(move |hour| (hour, (from_ns.max(hour), to_ns.min(hour + HOUR_NS))))
        .filter(|(_, (from, to))| from < to)
}

/// Forgets the oldest published batches no longer hot until the others hold at most
/// `most` bytes: an hour that needs one is made again instead.
fn keep_published_within(published: &mut HashMap<u64, Published>, hot: &[u64], most: usize) {
    let hot: HashSet<&u64> = hot.iter().collect();
    let mut flushed: Vec<(u64, usize)> = published
        .iter()
        .filter(|(id, _)| !hot.contains(id))
        .map(|(id, published)| (*id, published.batch.get_array_memory_size()))
        .collect();
    flushed.sort_unstable();
    let mut bytes: usize = flushed.iter().map(|(_, b)| b).sum();
    for (id, size) in flushed {
        if bytes <= most {
            break;
        }
        published.remove(&id);
        bytes -= size;
    }
}

/// The hot batches a snapshot's segments were flushed from.
fn hot_origins(snapshot: &Snapshot) -> impl Iterator<Item = u64> + '_ {
    snapshot
        .call_origins
        .values()
        .flatten()
        .filter_map(|origin| match origin {
            Origin::HotCalls(id) => Some(*id),
            Origin::Segment(_) => None,
        })
}

/// The first and last hour a calls batch holds calls of.
fn hours_of(batch: &RecordBatch) -> Option<(i64, i64)> {
    let starts = batch
        .column_by_name(schema::START_TIME)?
        .as_any()
        .downcast_ref::<TimestampNanosecondArray>()?;
    let first = arrow::compute::min(starts)?;
    let last = arrow::compute::max(starts)?;
    Some((piece_start(first, HOUR_NS), piece_start(last, HOUR_NS)))
}

impl<S: CallStats> PieceCache<S> {
    fn new(
        max_bytes: usize,
        widths: &'static [i64],
        columns: &'static [&'static str],
        only: Option<CallsOf>,
    ) -> Self {
        Self {
            state: Mutex::default(),
            updating: Mutex::default(),
            max_bytes,
            widths,
            columns,
            only,
            remade: AtomicU64::new(0),
            published: Mutex::default(),
        }
    }

    /// How many times an hour that had pieces was made again from all its calls.
    pub fn remade(&self) -> u64 {
        self.remade.load(Ordering::Relaxed)
    }

    /// About how much memory the pieces hold.
    pub fn bytes(&self) -> usize {
        let state = self.state.lock().expect("not poisoned");
        state.hours.values().map(Hour::bytes).sum()
    }

    /// How many hours have pieces.
    pub fn hours(&self) -> usize {
        self.state.lock().expect("not poisoned").hours.len()
    }

    /// Adds the calls new since the last call to the hours of the last day, so that
    /// windows find them.
    pub async fn warm(&self, store: &Store) -> Result<(), QueryError> {
        let first = store.snapshot();
        let hours: Vec<i64> = {
            let by_hour = self.sources_by_hour(&first);
            let newest = by_hour.keys().next_back().copied().unwrap_or(0);
            let state = self.state.lock().expect("not poisoned");
            by_hour
                .into_keys()
                .filter(|h| *h > newest - WARM_HOURS * HOUR_NS && !state.dropped.contains(h))
                .collect()
        };
        // An hour at a time, the newest first: windows asked meanwhile wait only for an
        // hour they need, and the recent hours dashboards look at are ready first.
        for hour in hours.into_iter().rev() {
            let _updating = self.lock(&[hour]).await;
            let snapshot = store.snapshot();
            let by_hour = self.sources_by_hour(&snapshot);
            self.update(store, &snapshot, &by_hour, hour, &[]).await?;
            self.make_room();
        }
        self.forget_published(&first);
        self.follow(store);
        Ok(())
    }

    /// Takes every hot batch the store publishes from now on. Warming runs every few
    /// hundred milliseconds, and under load a batch may be flushed before it comes: its
    /// segment would then be made partly of calls the hour never had, and the hour would be
    /// made again from all its calls while windows over it wait. Not before a first
    /// warming is done: making a day of hours after a start takes long, and what is
    /// published meanwhile would wait in memory.
    fn follow(&self, store: &Store) {
        let mut published = self.published.lock().expect("not poisoned");
        if published.is_none() {
            *published = Some(store.subscribe_hot_calls());
        }
    }

    /// Forgets the published batches no hour needs any more, once every warmed hour was
    /// brought up to date after `snapshot`: those its segments took, and any older one no
    /// longer hot (its segment already compacted). Those still hot are kept, in case they
    /// are flushed before the next warming.
    fn forget_published(&self, snapshot: &Snapshot) {
        let flushed: HashSet<u64> = hot_origins(snapshot).collect();
        let hot: HashSet<u64> = snapshot.hot_call_ids.iter().copied().collect();
        let newest = flushed.iter().chain(&hot).max().copied();
        let mut state = self.state.lock().expect("not poisoned");
        state.published.retain(|id, _| {
            hot.contains(id) || !(flushed.contains(id) || newest.is_some_and(|n| *id < n))
        });
        // Rows an update did not take (a batch published during this warming, for an hour
        // updated before it came) are not kept past it: the batch holds the same calls.
        for published in state.published.values_mut() {
            published.rows = None;
        }
    }

    /// The statistics of each of `windows` ([from_ns, to_ns) each) of the edges `keep`
    /// keeps, from whole pieces, with the ranges no whole piece covers (for the caller to
    /// read call by call), from one look at the pieces.
    pub async fn windows(
        &self,
        store: &Store,
        windows: &[(i64, i64)],
        keep: impl Fn(&EdgeKey) -> bool,
    ) -> Result<Windows<S>, QueryError> {
        Ok(self.windows_reading(store, windows, keep, true).await?.0)
    }

    /// Like [`Self::windows`] for one window, but reading no segment: the parts of the
    /// window in hours that would need one (or a width they no longer have) are left out of
    /// its statistics and handed back, in order, for the caller to cover another way. Hot
    /// batches are added as usual. Gives the statistics, what no whole piece covers, and
    /// what was left out.
    pub async fn window_kept(
        &self,
        store: &Store,
        window: (i64, i64),
        keep: impl Fn(&EdgeKey) -> bool,
    ) -> Result<(ByEdge<S>, Vec<(i64, i64)>, Vec<(i64, i64)>), QueryError> {
        let (mut found, left_out) = self.windows_reading(store, &[window], keep, false).await?;
        let (stats, uncovered) = found.pop().expect("one window asked");
        Ok((stats, uncovered, left_out))
    }

    async fn windows_reading(
        &self,
        store: &Store,
        windows: &[(i64, i64)],
        keep: impl Fn(&EdgeKey) -> bool,
        read_segments: bool,
    ) -> Result<(Windows<S>, Vec<(i64, i64)>), QueryError> {
        let mut parts: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
        for (from_ns, to_ns) in windows {
            for (hour, part) in hour_parts(*from_ns, *to_ns) {
                parts.entry(hour).or_default().push(part);
            }
        }
        let (widths, empty, lacking) = {
            let hours: Vec<i64> = parts.keys().copied().collect();
            let _updating = self.lock(&hours).await;
            let snapshot = store.snapshot();
            let by_hour = self.sources_by_hour(&snapshot);
            // Hours nothing holds calls of: no piece, and nothing to read either.
            let empty: HashSet<i64> = hours
                .iter()
                .filter(|hour| !by_hour.contains_key(hour))
                .copied()
                .collect();
            let mut lacking: HashSet<i64> = HashSet::new();
            if !read_segments {
                for (hour, hour_parts) in &parts {
                    let Some(present) = by_hour.get(hour) else {
                        continue;
                    };
                    let hot_only = match self.plan(&snapshot, *hour, present, hour_parts) {
                        Update::Current => true,
                        Update::Add { read, .. } => {
                            read.iter().all(|s| matches!(s, Source::Hot(_)))
                        }
                        Update::Make => false,
                    };
                    if !hot_only {
                        lacking.insert(*hour);
                    }
                }
                parts.retain(|hour, _| !lacking.contains(hour));
            }
            // Hours that must be read are read a few at a time: a day's first view reads
            // two dozen.
            let (snapshot, by_hour) = (&snapshot, &by_hour);
            let jobs: Vec<(i64, Vec<(i64, i64)>)> =
                parts.iter().map(|(hour, p)| (*hour, p.clone())).collect();
            let mut updates = futures::stream::iter(jobs)
                .map(|(hour, parts)| async move {
                    self.update(store, snapshot, by_hour, hour, &parts).await
                })
                .buffer_unordered(PARALLEL_HOURS);
            while let Some(updated) = updates.next().await {
                updated?;
                self.make_room();
            }
            drop(updates);
            (self.use_widths(&parts), empty, lacking)
        };
        let mut left_out: Vec<(i64, i64)> = Vec::new();
        let found = windows
            .iter()
            .map(|(from_ns, to_ns)| {
                let mut stats = ByEdge::default();
                let mut uncovered: Vec<(i64, i64)> = Vec::new();
                for (hour, (from, to)) in hour_parts(*from_ns, *to_ns) {
                    if empty.contains(&hour) {
                        continue;
                    }
                    if lacking.contains(&hour) {
                        left_out.push((from, to));
                        continue;
                    }
                    let present = widths.get(&hour).map_or(&[][..], Vec::as_slice);
                    let ns: Vec<i64> = present.iter().map(|(ns, _)| *ns).collect();
                    let (ranges, left) = cover(&ns, from, to);
                    for (index, first, last) in ranges {
                        for (_, piece) in present[index].1.range(first..last) {
                            stats.merge_where(piece, &keep);
                        }
                    }
                    for (from, to) in left {
                        match uncovered.last_mut() {
                            Some(last) if last.1 == from => last.1 = to,
                            _ => uncovered.push((from, to)),
                        }
                    }
                }
                (stats, uncovered)
            })
            .collect();
        Ok((found, left_out))
    }

    /// Waits until `hours` (in ascending order) are no longer being brought up to date,
    /// and holds them.
    async fn lock(&self, hours: &[i64]) -> Vec<tokio::sync::OwnedMutexGuard<()>> {
        let locks: Vec<HourLock> = {
            let mut all = self.updating.lock().expect("not poisoned");
            hours
                .iter()
                .map(|hour| all.entry(*hour).or_default().clone())
                .collect()
        };
        let mut held = Vec::with_capacity(locks.len());
        for lock in locks {
            held.push(lock.lock_owned().await);
        }
        held
    }

    /// The sources of a snapshot by the hours they hold calls of (hot batches by the hours
    /// between their first and last call).
    fn sources_by_hour(&self, snapshot: &Snapshot) -> BTreeMap<i64, Vec<Source>> {
        let mut by_hour: BTreeMap<i64, Vec<Source>> = BTreeMap::new();
        for segment in &snapshot.call_segments {
            by_hour
                .entry(segment.start_ns())
                .or_default()
                .push(Source::Segment(segment.path.clone()));
        }
        // After the snapshot: every batch a segment of it was made of has been published.
        let published: Vec<PublishedCalls> = match &*self.published.lock().expect("not poisoned") {
            Some(receiver) => receiver.try_iter().collect(),
            None => Vec::new(),
        };
        let mut guard = self.state.lock().expect("not poisoned");
        let state = &mut *guard;
        for PublishedCalls { id, batch, rows } in published {
            state
                .hot_hours
                .insert(id, hours_of(&batch).unwrap_or((1, 0)));
            let rows = Some(rows);
            state.published.insert(id, Published { batch, rows });
        }
        keep_published_within(
            &mut state.published,
            &snapshot.hot_call_ids,
            MOST_PUBLISHED_BYTES,
        );
        for (batch, id) in snapshot.hot_calls.iter().zip(&snapshot.hot_call_ids) {
            // An empty batch holds calls of no hour: (1, 0).
            let (first, last) = *state
                .hot_hours
                .entry(*id)
                .or_insert_with(|| hours_of(batch).unwrap_or((1, 0)));
            for hour in (first..=last).step_by(HOUR_NS as usize) {
                by_hour.entry(hour).or_default().push(Source::Hot(*id));
            }
        }
        // Batches are remembered while a segment may name them as its origin.
        let named: HashSet<u64> = hot_origins(snapshot)
            .chain(snapshot.hot_call_ids.iter().copied())
            .collect();
        let published = &state.published;
        state
            .hot_hours
            .retain(|id, _| named.contains(id) || published.contains_key(id));
        // Hours with nothing left (expired) are forgotten.
        state.hours.retain(|hour, _| by_hour.contains_key(hour));
        state.dropped.retain(|hour| by_hour.contains_key(hour));
        drop(guard);
        self.updating
            .lock()
            .expect("not poisoned")
            .retain(|hour, lock| by_hour.contains_key(hour) || Arc::strong_count(lock) > 1);
        by_hour
    }

    /// Brings `hour` up to date with `snapshot`, so that its widths cover `parts` of it as
    /// well as its widths can. Called with the hour locked.
    async fn update(
        &self,
        store: &Store,
        snapshot: &Snapshot,
        by_hour: &BTreeMap<i64, Vec<Source>>,
        hour: i64,
        parts: &[(i64, i64)],
    ) -> Result<(), QueryError> {
        let Some(present) = by_hour.get(&hour) else {
            return Ok(());
        };
        let (sources, replacing, make) = match self.plan(snapshot, hour, present, parts) {
            Update::Current => return Ok(()),
            Update::Add { read, replacing } => (read, replacing, false),
            Update::Make => (present.to_vec(), Vec::new(), true),
        };
        let pieces = match self.pieces_of(store, snapshot, hour, &sources).await {
            Ok(pieces) => pieces,
            Err(error) => {
                // Its sources may have changed places already: made again when next needed.
                if !replacing.is_empty() {
                    self.state.lock().expect("not poisoned").hours.remove(&hour);
                }
                return Err(error);
            }
        };
        let mut state = self.state.lock().expect("not poisoned");
        if !make {
            if let Some(kept) = state.hours.get_mut(&hour) {
                kept.add(hour, &pieces);
                // A batch read as published is gone already: its segment takes its place.
                kept.sources
                    .extend(sources.into_iter().filter(|s| present.contains(s)));
                for (segment, origins) in replacing {
                    for origin in &origins {
                        kept.sources.remove(origin);
                    }
                    kept.sources.insert(segment);
                }
            }
            return Ok(());
        }
        // The widths `parts` need count as used now; the others are the first to make room.
        state.clock += 1;
        let now = state.clock;
        let mut needed: HashSet<usize> = HashSet::new();
        for (from, to) in parts {
            needed.extend(cover(self.widths, *from, *to).0.iter().map(|r| r.0));
        }
        let widths = pieces
            .into_iter()
            .enumerate()
            .map(|(index, mut pieces)| {
                // A hot batch may hold calls of other hours too.
                pieces.retain(|start, _| (hour..hour + HOUR_NS).contains(start));
                // Made by warming, never used: the oldest hour's go first.
                Some(Width {
                    bytes: bytes_of(&pieces),
                    pieces: Arc::new(pieces),
                    used: if needed.contains(&index) { now } else { 0 },
                })
            })
            .collect();
        state.hours.insert(
            hour,
            Hour {
                sources: sources.into_iter().collect(),
                widths,
            },
        );
        state.dropped.remove(&hour);
        Ok(())
    }

    /// The pieces of the calls of `hour` in `sources`, at every width.
    async fn pieces_of(
        &self,
        store: &Store,
        snapshot: &Snapshot,
        hour: i64,
        sources: &[Source],
    ) -> Result<Vec<ByStart<S>>, QueryError> {
        let mut builder = Builder::new();
        for source in sources {
            let calls = self.read(store, snapshot, source).await?;
            let (widths, columns, only) = (self.widths, self.columns, self.only.clone());
            // Seconds of work for a large segment: off the async workers.
            builder = tokio::task::spawn_blocking(move || {
                match calls {
                    Calls::Batches(batches) => {
                        builder.add(&batches, widths, columns, only.as_ref(), Some(hour))?
                    }
                    Calls::Rows(rows) => builder.add_rows(&rows, widths, only.as_ref(), hour),
                }
                Ok::<_, QueryError>(builder)
            })
            .await
            .map_err(|e| QueryError::Execution(e.to_string()))??;
        }
        Ok(builder.finish(self.widths))
    }

    /// What bringing `hour` up to date takes. A segment made of sources the hour already
    /// holds takes their place, and so does one made partly of batches it never had but
    /// that were taken as published (those are read first); a width missing where `parts`
    /// need it (a whole minute no wider piece covers) makes the hour again.
    fn plan(
        &self,
        snapshot: &Snapshot,
        hour: i64,
        present: &[Source],
        parts: &[(i64, i64)],
    ) -> Update {
        let mut state = self.state.lock().expect("not poisoned");
        let state = &mut *state;
        let Some(kept) = state.hours.get_mut(&hour) else {
            return Update::Make;
        };
        let widths: Vec<i64> = self
            .widths
            .iter()
            .zip(&kept.widths)
            .filter(|(_, w)| w.is_some())
            .map(|(ns, _)| *ns)
            .collect();
        let minute_left = |(from, to): &(i64, i64)| !cover(&[MINUTE_NS], *from, *to).0.is_empty();
        if parts
            .iter()
            .any(|(from, to)| cover(&widths, *from, *to).1.iter().any(minute_left))
        {
            return self.remake();
        }
        let mut new = Vec::new();
        let mut replacing = Vec::new();
        for source in present {
            if kept.sources.contains(source) {
                continue;
            }
            let origins = match source {
                Source::Segment(path) => snapshot.call_origins.get(path),
                Source::Hot(_) => None,
            };
            // The origins holding calls of this hour (a batch never seen may).
            let holding: Vec<Source> = origins
                .into_iter()
                .flatten()
                .filter(|origin| match origin {
                    Origin::HotCalls(id) => state
                        .hot_hours
                        .get(id)
                        .is_none_or(|(first, last)| (*first..=*last).contains(&hour)),
                    Origin::Segment(_) => true,
                })
                .map(Source::from)
                .collect();
            let (held, unseen): (Vec<Source>, Vec<Source>) =
                holding.into_iter().partition(|s| kept.sources.contains(s));
            let published =
                |s: &Source| matches!(s, Source::Hot(id) if state.published.contains_key(id));
            if held.is_empty() {
                new.push(source.clone());
            } else if unseen.is_empty() {
                for origin in &held {
                    kept.sources.remove(origin);
                }
                kept.sources.insert(source.clone());
            } else if unseen.iter().all(published) {
                new.extend(unseen);
                replacing.push((source.clone(), held));
            } else {
                return self.remake();
            }
        }
        // A source gone without a segment taking its place: the hour lost calls.
        let present: HashSet<&Source> = present.iter().collect();
        let replaced: HashSet<&Source> = replacing.iter().flat_map(|(_, held)| held).collect();
        if kept
            .sources
            .iter()
            .any(|s| !present.contains(s) && !new.contains(s) && !replaced.contains(s))
        {
            return self.remake();
        }
        if new.is_empty() {
            Update::Current
        } else {
            Update::Add {
                read: new,
                replacing,
            }
        }
    }

    /// An hour that had pieces is made again: counted, since windows over it wait.
    fn remake(&self) -> Update {
        self.remade.fetch_add(1, Ordering::Relaxed);
        Update::Make
    }

    /// The calls of a source (of `only`'s edges, if set): a batch's rows as published, the
    /// first time; other edges' rows of a segment are not decoded past their names.
    async fn read(
        &self,
        store: &Store,
        snapshot: &Snapshot,
        source: &Source,
    ) -> Result<Calls, QueryError> {
        match source {
            Source::Hot(id) => {
                let mut state = self.state.lock().expect("not poisoned");
                // Taken by the one hour the batch holds; one of two hours leaves them to the
                // other, and warming's end lets them go.
                let one_hour = state
                    .hot_hours
                    .get(id)
                    .is_some_and(|(first, last)| first == last);
                if let Some(published) = state.published.get_mut(id) {
                    let rows = match one_hour {
                        true => published.rows.take(),
                        false => published.rows.clone(),
                    };
                    if let Some(rows) = rows {
                        return Ok(Calls::Rows(rows));
                    }
                }
                let published = state.published.get(id);
                Ok(Calls::Batches(
                    snapshot
                        .hot_call_ids
                        .iter()
                        .position(|hot| hot == id)
                        .map(|at| snapshot.hot_calls[at].clone())
                        .or_else(|| published.map(|p| p.batch.clone()))
                        .into_iter()
                        .collect(),
                ))
            }
            Source::Segment(path) => {
                let Some(segment) = snapshot.call_segments.iter().find(|s| &s.path == path) else {
                    return Ok(Calls::Batches(Vec::new()));
                };
                self.read_segment(store, segment)
                    .await
                    .map(Calls::Batches)
                    .map_err(|e| QueryError::Execution(format!("reading {path}: {e}")))
            }
        }
    }

    async fn read_segment(
        &self,
        store: &Store,
        segment: &SegmentMeta,
    ) -> callwatch_storage::Result<Vec<RecordBatch>> {
        match &self.only {
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
    }

    /// The widths of each hour that cover its `parts` (by width in ns), marked as used
    /// now. Covering with just these gives what covering with all the hour has would.
    fn use_widths(
        &self,
        parts: &BTreeMap<i64, Vec<(i64, i64)>>,
    ) -> HashMap<i64, Vec<UsedWidth<S>>> {
        let mut state = self.state.lock().expect("not poisoned");
        state.clock += 1;
        let now = state.clock;
        let mut found = HashMap::new();
        for (hour, parts) in parts {
            let Some(kept) = state.hours.get_mut(hour) else {
                continue;
            };
            let present: Vec<(i64, &mut Width<S>)> = self
                .widths
                .iter()
                .zip(kept.widths.iter_mut())
                .filter_map(|(ns, width)| Some((*ns, width.as_mut()?)))
                .collect();
            let ns: Vec<i64> = present.iter().map(|(ns, _)| *ns).collect();
            let used: BTreeSet<usize> = parts
                .iter()
                .flat_map(|(from, to)| cover(&ns, *from, *to).0)
                .map(|range| range.0)
                .collect();
            let widths = present
                .into_iter()
                .enumerate()
                .filter(|(index, _)| used.contains(index))
                .map(|(_, (ns, width))| {
                    width.used = now;
                    (ns, width.pieces.clone())
                })
                .collect();
            found.insert(*hour, widths);
        }
        found
    }

    /// Drops widths until the pieces fit: narrow widths before whole hours, those used
    /// longest ago first; among equals the narrowest (the largest), then the oldest hour's.
    fn make_room(&self) {
        let mut state = self.state.lock().expect("not poisoned");
        let mut total: usize = state.hours.values().map(Hour::bytes).sum();
        while total > self.max_bytes {
            let victim = state
                .hours
                .iter()
                .flat_map(|(hour, kept)| {
                    kept.widths
                        .iter()
                        .enumerate()
                        .filter_map(move |(index, w)| {
                            let w = w.as_ref()?;
                            let key = (index == 0, w.used, std::cmp::Reverse(index), *hour);
                            Some((key, index))
                        })
                })
                .min_by_key(|(key, _)| *key);
            let Some(((_, _, _, hour), index)) = victim else {
                break;
            };
            let kept = state.hours.get_mut(&hour).expect("just found");
            if index == 0 {
                total -= kept.bytes();
                state.hours.remove(&hour);
                state.dropped.insert(hour);
            } else if let Some(width) = kept.widths[index].take() {
                total -= width.bytes;
            }
        }
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
    uncovered.sort_unstable();
    (ranges, uncovered)
}

/// Breakdown pieces: every edge's, kept up to date in the background as the graph's are,
/// and, for what those no longer hold (room made, or hours past warming), those of the
/// services and edges looked at last, each kept apart so that a page's refresh reads only
/// the calls that arrived since.
#[derive(Debug)]
pub struct DetailCaches {
    all: PieceCache<Details>,
    /// Most recently used last.
    caches: Mutex<Vec<Arc<PieceCache<Details>>>>,
}

impl Default for DetailCaches {
    fn default() -> Self {
        Self {
            all: PieceCache::new(
                MAX_ALL_DETAILS_BYTES,
                DETAIL_WIDTHS_NS,
                DETAIL_COLUMNS,
                None,
            ),
            caches: Mutex::default(),
        }
    }
}

impl DetailCaches {
    /// Adds the calls new since the last call to every edge's pieces of the last day.
    pub async fn warm(&self, store: &Store) -> Result<(), QueryError> {
        self.all.warm(store).await
    }

    /// About how much memory the pieces hold, every edge's and the pages' own.
    pub fn bytes(&self) -> usize {
        let caches = self.caches.lock().expect("not poisoned");
        self.all.bytes() + caches.iter().map(|c| c.bytes()).sum::<usize>()
    }

    /// How many hours every edge's pieces cover.
    pub fn hours(&self) -> usize {
        self.all.hours()
    }

    /// How many times an hour of every edge's pieces was made again.
    pub fn remade(&self) -> u64 {
        self.all.remade()
    }

    /// The breakdowns of the calls `of` keeps over [from_ns, to_ns), from whole pieces,
    /// with the ranges no whole piece covers (for the caller to read call by call). Every
    /// edge's pieces are used where they cover the window without reading a segment; only
    /// the rest is read, for the service or edge alone.
    pub async fn window(
        &self,
        store: &Store,
        of: &CallsOf,
        from_ns: i64,
        to_ns: i64,
    ) -> Result<(ByEdge<Details>, Vec<(i64, i64)>), QueryError> {
        let keep = |key: &EdgeKey| of.keeps(&key.source, &key.target);
        let (mut stats, mut uncovered, left_out) =
            self.all.window_kept(store, (from_ns, to_ns), keep).await?;
        if !left_out.is_empty() {
            for (more, left) in self.of(of).windows(store, &left_out, keep).await? {
                stats.merge(&more);
                uncovered.extend(left);
            }
            uncovered.sort_unstable();
        }
        Ok((stats, uncovered))
    }

    /// The cache of the calls `of` keeps, made if new (forgetting the one used longest ago).
    fn of(&self, of: &CallsOf) -> Arc<PieceCache<Details>> {
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
    use crate::rollup::tests::call;
    use crate::rollup::{Dimension, Rollup};
    use callwatch_storage::CallRow;

    pub(crate) const S: i64 = 1_000_000_000;
    /// An hour long gone: compaction takes its segments at once.
    pub(crate) const HOUR: i64 = 1_700_002_800 * S;

    #[test]
    fn whole_pieces_cover_the_middle_of_a_window_and_calls_its_ends() {
        // 12:00:05 to 12:03:17 (seconds of an hour on the hour).
        let (ranges, uncovered) = cover(GRAPH_WIDTHS_NS, HOUR + 5 * S, HOUR + 197 * S);
        assert_eq!(
            ranges,
            vec![
                (2, HOUR + 60 * S, HOUR + 180 * S),
                (3, HOUR + 10 * S, HOUR + 60 * S),
                (3, HOUR + 180 * S, HOUR + 190 * S),
            ]
        );
        assert_eq!(
            uncovered,
            vec![
                (HOUR + 5 * S, HOUR + 10 * S),
                (HOUR + 190 * S, HOUR + 197 * S)
            ]
        );
        // Aligned ends leave nothing to read call by call; a short window is all calls.
        assert_eq!(
            cover(GRAPH_WIDTHS_NS, HOUR, HOUR + 3720 * S),
            (
                vec![
                    (0, HOUR, HOUR + 3600 * S),
                    (2, HOUR + 3600 * S, HOUR + 3720 * S)
                ],
                vec![]
            )
        );
        assert_eq!(
            cover(GRAPH_WIDTHS_NS, HOUR + S, HOUR + 9 * S),
            (vec![], vec![(HOUR + S, HOUR + 9 * S)])
        );
        // Before 1970 too.
        let (ranges, uncovered) = cover(GRAPH_WIDTHS_NS, -125 * S, -5 * S);
        assert_eq!(ranges, vec![(2, -120 * S, -60 * S), (3, -60 * S, -10 * S)]);
        assert_eq!(uncovered, vec![(-125 * S, -120 * S), (-10 * S, -5 * S)]);
    }

    #[test]
    fn pieces_add_up_to_the_calls_they_hold() {
        // One call every 7 s for 70 minutes, starting off a minute boundary.
        let base = HOUR + 13 * S;
        let calls: Vec<CallRow> = (0..600).map(|i| call(base + i * 7 * S, i % 97)).collect();
        let mut builder = Builder::<EdgeStats>::new();
        let batch = callwatch_storage::calls_batch(&calls);
        builder
            .add(&[batch], GRAPH_WIDTHS_NS, GRAPH_COLUMNS, None, None)
            .unwrap();
        let by_width = builder.finish(GRAPH_WIDTHS_NS);
        for (pieces, width) in by_width.iter().zip(GRAPH_WIDTHS_NS) {
            let total: u64 = pieces
                .values()
                .map(|r| r.edges.values().map(|e| e.calls.calls).sum::<u64>())
                .sum();
            assert_eq!(total, 600);
            assert!(pieces.keys().all(|k| k % width == 0));
        }
        // A merged piece equals the rollup of its calls.
        let thresholds = crate::stats::HealthThresholds::default();
        let key = EdgeKey::of(&calls[0]);
        for (pieces, width) in by_width.iter().zip(GRAPH_WIDTHS_NS).take(3) {
            let start = *pieces.keys().next().unwrap();
            let direct = Rollup::of(
                calls
                    .iter()
                    .filter(|c| (start..start + width).contains(&c.start_ns)),
            );
            let (a, b) = (&direct.edges[&key], &pieces[&start].edges[&key]);
            assert_eq!(a.calls.calls, b.calls.calls);
            assert_eq!(a.calls.errors, b.calls.errors);
            assert_eq!(a.client_instances, b.client_instances);
            assert_eq!(
                a.calls.clone().summary(60.0, &thresholds).latency_ms,
                b.calls.clone().summary(60.0, &thresholds).latency_ms
            );
        }
    }

    #[test]
    fn pieces_of_published_rows_are_those_of_their_batch() {
        // Calls on both sides of an hour, into two services: each hour, and each service
        // or edge, takes only its own.
        let calls: Vec<CallRow> = (0..400)
            .map(|i| {
                let mut call = call(HOUR + HOUR_NS - 200 * S + i * S, i % 97);
                if i % 3 == 0 {
                    call.server = "c".into();
                }
                call
            })
            .collect();
        let batch = callwatch_storage::calls_batch(&calls);
        let digest = |builder: Builder<Details>| {
            let mut lines = Vec::new();
            for (pieces, width) in builder
                .finish(DETAIL_WIDTHS_NS)
                .iter()
                .zip(DETAIL_WIDTHS_NS)
            {
                for (start, by_edge) in pieces {
                    for (key, details) in &by_edge.edges {
                        lines.push(format!("{width} {start} {key:?} {details:?}"));
                    }
                }
            }
            lines.sort_unstable();
            lines
        };
        let to_c = CallsOf::Edge {
            source: "a".into(),
            target: "c".into(),
        };
        for only in [None, Some(CallsOf::Service("b".into())), Some(to_c)] {
            for hour in [HOUR, HOUR + HOUR_NS] {
                let mut from_batch = Builder::<Details>::new();
                let (batches, only) = ([batch.clone()], only.as_ref());
                from_batch
                    .add(&batches, DETAIL_WIDTHS_NS, DETAIL_COLUMNS, only, Some(hour))
                    .unwrap();
                let mut from_rows = Builder::<Details>::new();
                from_rows.add_rows(&calls, DETAIL_WIDTHS_NS, only, hour);
                let held: u64 = from_rows
                    .narrowest
                    .values()
                    .flat_map(|p| p.edges.values())
                    .map(|d| d.all.calls)
                    .sum();
                let expected = calls
                    .iter()
                    .filter(|c| (hour..hour + HOUR_NS).contains(&c.start_ns))
                    .filter(|c| only.is_none_or(|o| o.keeps(&c.client, &c.server)))
                    .count();
                assert_eq!(held, expected as u64);
                assert!(0 < expected && expected < 400);
                assert_eq!(digest(from_rows), digest(from_batch));
            }
        }
    }

    /// Each span is a call that starts when the span does: a test controls exactly which
    /// calls the store holds.
    #[derive(Default)]
    pub(crate) struct CallPerSpan {
        calls: Vec<CallRow>,
    }

    impl callwatch_storage::CallDeriver for CallPerSpan {
        fn restore(&mut self, _: &[u8], _: &[(u64, Vec<u8>)]) -> Result<(), String> {
            Ok(())
        }

        fn spans(&mut self, batch: &RecordBatch, _: std::time::Instant) {
            for span in callwatch_storage::span_records(batch).unwrap() {
                self.calls.push(call(span.start_ns, span.start_ns % 97));
            }
        }

        fn expire(&mut self, _: std::time::Instant) {}

        fn take_calls(&mut self) -> Vec<CallRow> {
            std::mem::take(&mut self.calls)
        }

        fn pending(&mut self) -> callwatch_storage::PendingState {
            callwatch_storage::PendingState::default()
        }
    }

    /// `count` spans 1 ms apart from `start_ns`.
    pub(crate) fn spans_from(start_ns: i64, count: i64) -> RecordBatch {
        spans_every(start_ns, count, 1_000_000)
    }

    fn spans_every(start_ns: i64, count: i64, every_ns: i64) -> RecordBatch {
        let mut builder = callwatch_storage::SpansBuilder::with_capacity(count as usize);
        for n in 0..count {
            let start_ns = start_ns + n * every_ns;
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

    pub(crate) async fn store_with_a_call_per_span(dir: &std::path::Path) -> Store {
        let config = callwatch_storage::StoreConfig {
            flush_interval: std::time::Duration::from_secs(3600),
            compaction_min_age: std::time::Duration::ZERO,
            ..callwatch_storage::StoreConfig::new(dir)
        };
        Store::open_with(config, Some(Box::new(CallPerSpan::default())))
            .await
            .unwrap()
    }

    /// What a cache's hours hold, in a form to compare.
    fn digest(cache: &RollupCache) -> Vec<String> {
        let thresholds = crate::stats::HealthThresholds::default();
        let state = cache.state.lock().unwrap();
        let mut lines = Vec::new();
        for (hour, kept) in &state.hours {
            for (index, width) in kept.widths.iter().enumerate() {
                let Some(width) = width else { continue };
                for (start, rollup) in width.pieces.iter() {
                    for (key, edge) in &rollup.edges {
                        lines.push(format!(
                            "{hour} {index} {start} {key:?} {:?} {:?} {:?}",
                            edge.calls.clone().summary(1.0, &thresholds),
                            edge.client_instances,
                            edge.server_instances
                        ));
                    }
                }
            }
        }
        lines
    }

    /// Checks that `cache` holds what a new cache reads from the files, without reading
    /// them itself: they are deleted first.
    async fn cache_matches_the_files(dir: &std::path::Path, store: &Store, cache: &RollupCache) {
        let fresh = RollupCache::default();
        fresh.warm(store).await.unwrap();
        for segment in store.snapshot().call_segments {
            std::fs::remove_file(dir.join(&segment.path)).unwrap();
        }
        cache.warm(store).await.unwrap();
        assert_eq!(digest(cache), digest(&fresh));
    }

    #[tokio::test]
    async fn a_flushed_segment_takes_the_place_of_the_hot_batches_it_was_made_of() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_a_call_per_span(dir.path()).await;
        // Calls on both sides of an hour, each batch published on its own: one flush writes
        // two segments, each with some of the calls of several batches.
        let cache = RollupCache::default();
        for start in [HOUR - 90 * S, HOUR - 5 * S, HOUR + 7 * S, HOUR + 65 * S] {
            store.append(spans_from(start, 300)).await.unwrap();
            store.calls_caught_up().await;
            cache.warm(&store).await.unwrap();
        }
        store.flush().await.unwrap();
        assert_eq!(store.snapshot().call_segments.len(), 2);
        cache_matches_the_files(dir.path(), &store, &cache).await;
        assert_eq!(cache.remade(), 0);
    }

    #[tokio::test]
    async fn a_segment_made_partly_of_batches_published_between_warms_takes_their_place() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_a_call_per_span(dir.path()).await;
        let cache = RollupCache::default();
        store.append(spans_from(HOUR - 5 * S, 300)).await.unwrap();
        store.append(spans_from(HOUR + 5 * S, 300)).await.unwrap();
        store.calls_caught_up().await;
        cache.warm(&store).await.unwrap();
        // Published and flushed between two warms, with calls of both hours: each hour
        // adds the batch as it was published, and the segments take the place of both.
        store
            .append(spans_every(HOUR - S, 300, 10_000_000))
            .await
            .unwrap();
        store.calls_caught_up().await;
        store.flush().await.unwrap();
        assert_eq!(store.snapshot().call_segments.len(), 2);
        cache.warm(&store).await.unwrap();
        assert_eq!(cache.remade(), 0);
        // Nothing published is kept once its segments took it.
        assert!(cache.state.lock().unwrap().published.is_empty());
        store.append(spans_from(HOUR + 65 * S, 300)).await.unwrap();
        store.calls_caught_up().await;
        store.flush().await.unwrap();
        cache.warm(&store).await.unwrap();
        assert_eq!(cache.remade(), 0);
        cache_matches_the_files(dir.path(), &store, &cache).await;
    }

    #[test]
    fn published_batches_past_their_bound_go_oldest_first_and_hot_ones_stay() {
        let batch = spans_from(HOUR, 1000);
        let size = batch.get_array_memory_size();
        let mut published: HashMap<u64, Published> = (1..=5)
            .map(|id| {
                let (batch, rows) = (batch.clone(), None);
                (id, Published { batch, rows })
            })
            .collect();
        // 4 and 5 are still hot: only 1, 2 and 3 count, and two of them fit.
        keep_published_within(&mut published, &[4, 5], 2 * size);
        let mut kept: Vec<u64> = published.keys().copied().collect();
        kept.sort_unstable();
        assert_eq!(kept, [2, 3, 4, 5]);
        keep_published_within(&mut published, &[], 0);
        assert!(published.is_empty());
    }

    #[tokio::test]
    async fn a_segment_made_partly_of_batches_a_window_never_saw_makes_its_hour_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_a_call_per_span(dir.path()).await;
        // Never warmed, so not following what is published: only what windows saw.
        let cache = RollupCache::default();
        store.append(spans_from(HOUR + 5 * S, 300)).await.unwrap();
        store.calls_caught_up().await;
        cache
            .windows(&store, &[(HOUR, HOUR + 3600 * S)], |_| true)
            .await
            .unwrap();
        // Published and flushed between two windows: the segment cannot take the place of
        // batches the hour held, so the hour is made again from all its calls.
        store.append(spans_from(HOUR + 65 * S, 300)).await.unwrap();
        store.calls_caught_up().await;
        store.flush().await.unwrap();
        cache
            .windows(&store, &[(HOUR, HOUR + 3600 * S)], |_| true)
            .await
            .unwrap();
        assert_eq!(cache.remade(), 1);
        cache_matches_the_files(dir.path(), &store, &cache).await;
    }

    #[tokio::test]
    async fn a_compacted_segment_takes_the_place_of_the_segments_it_merged() {
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
        cache_matches_the_files(dir.path(), &store, &cache).await;
    }

    /// Every call the store holds.
    async fn stored_calls(store: &Store) -> Vec<CallRow> {
        let mut names = Interner::default();
        let mut calls = Vec::new();
        let snapshot = store.snapshot();
        let mut batches = snapshot.hot_calls.clone();
        for segment in &snapshot.call_segments {
            batches.extend(store.read_segment(segment).await.unwrap());
        }
        for batch in &batches {
            let columns = CallColumns::new(batch).unwrap();
            calls.extend((0..columns.len()).map(|row| columns.row(row, &mut names)));
        }
        calls
    }

    /// The calls of the store from `windows`, read one by one where pieces do not cover.
    async fn from_pieces(cache: &RollupCache, store: &Store, windows: &[(i64, i64)]) -> Vec<u64> {
        let calls = stored_calls(store).await;
        let found = cache.windows(store, windows, |_| true).await.unwrap();
        found
            .into_iter()
            .map(|(stats, uncovered)| {
                let read = calls
                    .iter()
                    .filter(|c| {
                        uncovered
                            .iter()
                            .any(|(a, b)| (*a..*b).contains(&c.start_ns))
                    })
                    .count() as u64;
                stats.edges.values().map(|e| e.calls.calls).sum::<u64>() + read
            })
            .collect()
    }

    /// A store with a call a second over three hours, two of them flushed, the last hot;
    /// and where they start.
    async fn three_hours_of_calls(dir: &std::path::Path) -> (Store, i64) {
        let store = store_with_a_call_per_span(dir).await;
        let start = HOUR - 3600 * S;
        for hour in 0..3 {
            store
                .append(spans_every(start + hour * 3600 * S, 3600, S))
                .await
                .unwrap();
            store.calls_caught_up().await;
            if hour < 2 {
                store.flush().await.unwrap();
            }
        }
        (store, start)
    }

    #[tokio::test]
    async fn windows_add_up_as_hours_fill_lose_widths_and_are_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let (store, start) = three_hours_of_calls(dir.path()).await;
        // Room for about one hour's pieces at every width.
        let one_hour = {
            let cache = RollupCache::default();
            cache.warm(&store).await.unwrap();
            cache.bytes() / 3
        };
        let cache = RollupCache::new(one_hour * 3 / 2, GRAPH_WIDTHS_NS, GRAPH_COLUMNS, None);
        cache.warm(&store).await.unwrap();
        assert!(cache.bytes() <= one_hour * 3 / 2);
        let windows = [
            (start + 17 * S, start + 3 * 3600 * S - 3 * S),
            (start + 1234 * S, start + 2 * 3600 * S + 1234 * S),
            (start + 3600 * S, start + 2 * 3600 * S),
            (start + 600 * S, start + 1800 * S),
            (start + 5 * S, start + 9 * S),
            (start + 7000 * S, start + 7000 * S),
        ];
        let expected: Vec<u64> = windows
            .iter()
            .map(|(from, to)| (to - from).div_euclid(S) as u64)
            .collect();
        // Each window alone, then all at once: the hours it needs are made again as the
        // others push them out.
        for window in windows {
            let counted = from_pieces(&cache, &store, &[window]).await;
            assert_eq!(counted[0], ((window.1 - window.0) / S) as u64, "{window:?}");
        }
        assert_eq!(from_pieces(&cache, &store, &windows).await, expected);
        assert!(cache.bytes() <= one_hour * 3 / 2);
        // An hour nothing holds calls of is neither a piece nor read call by call.
        let reaching_back = [(start - 3500 * S, start + 100 * S)];
        assert_eq!(from_pieces(&cache, &store, &reaching_back).await, vec![100]);
        let (_, uncovered) = cache
            .windows(&store, &reaching_back, |_| true)
            .await
            .unwrap()
            .remove(0);
        assert!(
            uncovered.iter().all(|(from, _)| *from >= start),
            "{uncovered:?}"
        );
        // Late calls of an hour already made, then its segments compacted.
        store
            .append(spans_every(start + 100 * S + S / 2, 100, S))
            .await
            .unwrap();
        store.calls_caught_up().await;
        let late = [(start, start + 3600 * S)];
        assert_eq!(from_pieces(&cache, &store, &late).await, vec![3700]);
        store.flush().await.unwrap();
        assert_eq!(from_pieces(&cache, &store, &late).await, vec![3700]);
        store.compact().await.unwrap();
        assert_eq!(from_pieces(&cache, &store, &late).await, vec![3700]);
    }

    #[tokio::test]
    async fn the_narrow_widths_of_hours_used_longest_ago_make_room_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_a_call_per_span(dir.path()).await;
        let start = HOUR - 3600 * S;
        for hour in 0..3 {
            store
                .append(spans_every(start + hour * 3600 * S, 360, 10 * S))
                .await
                .unwrap();
        }
        store.calls_caught_up().await;
        store.flush().await.unwrap();
        let cache = RollupCache::default();
        cache.warm(&store).await.unwrap();
        let all = cache.bytes();
        let narrow = {
            let state = cache.state.lock().unwrap();
            let kept = &state.hours[&start];
            kept.widths[3].as_ref().unwrap().bytes
        };
        // Looked at in turn: the first hour in its minutes, the last whole, the middle one
        // at its start, so that it needs its 10 s pieces.
        let hours = [start, start + 3600 * S, start + 7200 * S];
        let cache = RollupCache::new(all - narrow, GRAPH_WIDTHS_NS, GRAPH_COLUMNS, None);
        for window in [
            (hours[0] + 60 * S, hours[0] + 120 * S),
            (hours[2], hours[2] + 3600 * S),
            (hours[1] + 5 * S, hours[1] + 65 * S),
        ] {
            let (stats, _) = cache
                .windows(&store, &[window], |_| true)
                .await
                .unwrap()
                .remove(0);
            let calls: u64 = stats.edges.values().map(|e| e.calls.calls).sum();
            assert!(calls > 0, "{window:?}");
        }
        assert!(cache.bytes() <= all - narrow);
        let state = cache.state.lock().unwrap();
        let present = |hour: i64| -> Vec<usize> {
            state.hours[&hour]
                .widths
                .iter()
                .enumerate()
                .filter(|(_, w)| w.is_some())
                .map(|(i, _)| i)
                .collect()
        };
        // Of the 10 s pieces no window used, the oldest hour's went.
        assert_eq!(present(hours[0]), vec![0, 1, 2]);
        assert_eq!(present(hours[1]), vec![0, 1, 2, 3]);
        assert_eq!(present(hours[2]), vec![0, 1, 2, 3]);
    }

    /// Calls per value of each dimension, and the slowest calls' starts.
    fn breakdown(details: &Details) -> Vec<String> {
        let mut lines: Vec<String> = Dimension::ALL
            .iter()
            .flat_map(|dimension| {
                details
                    .groups(*dimension)
                    .iter()
                    .map(move |(value, group)| format!("{dimension:?} {value:?} {}", group.calls))
            })
            .collect();
        lines.extend(
            details
                .slowest()
                .iter()
                .map(|e| format!("slow {}", e.start_ns)),
        );
        lines
    }

    #[tokio::test]
    async fn breakdowns_use_every_edges_pieces_where_kept_and_read_the_rest_for_the_page() {
        let dir = tempfile::tempdir().unwrap();
        let (store, start) = three_hours_of_calls(dir.path()).await;
        let caches = DetailCaches::default();
        caches.warm(&store).await.unwrap();
        let of = CallsOf::Service("b".into());
        let window = (start + 17 * S, start + 3 * 3600 * S - 3 * S);
        let calls = stored_calls(&store).await;
        let expected = {
            let mut details = Details::default();
            for call in calls
                .iter()
                .filter(|c| (window.0..window.1).contains(&c.start_ns))
            {
                details.add(call);
            }
            breakdown(&details)
        };
        let from_caches = |stats: ByEdge<Details>, uncovered: Vec<(i64, i64)>| {
            let mut details = Details::default();
            for edge in stats.edges.values() {
                details.merge(edge);
            }
            for call in &calls {
                if uncovered
                    .iter()
                    .any(|(a, b)| (*a..*b).contains(&call.start_ns))
                {
                    details.add(call);
                }
            }
            breakdown(&details)
        };
        // Every edge's pieces cover it all: no cache of the service's own is made.
        let (stats, uncovered) = caches
            .window(&store, &of, window.0, window.1)
            .await
            .unwrap();
        assert_eq!(from_caches(stats, uncovered), expected);
        assert!(caches.caches.lock().unwrap().is_empty());
        // The first hour's minutes make room: the service's own pieces cover that hour.
        caches
            .all
            .state
            .lock()
            .unwrap()
            .hours
            .get_mut(&start)
            .unwrap()
            .widths[1] = None;
        let (stats, uncovered) = caches
            .window(&store, &of, window.0, window.1)
            .await
            .unwrap();
        assert_eq!(from_caches(stats, uncovered), expected);
        let own = caches.caches.lock().unwrap()[0].clone();
        let own_hours: Vec<i64> = own.state.lock().unwrap().hours.keys().copied().collect();
        assert_eq!(own_hours, vec![start]);
        // Another service's calls are none of these.
        let other = CallsOf::Service("a".into());
        let (stats, uncovered) = caches
            .window(&store, &other, window.0, window.1)
            .await
            .unwrap();
        assert!(stats.edges.is_empty());
        assert!(
            calls
                .iter()
                .filter(|c| uncovered
                    .iter()
                    .any(|(a, b)| (*a..*b).contains(&c.start_ns)))
                .all(|c| !other.keeps(&c.client, &c.server))
        );
    }
}
