//! The span store: admission, the WAL writer, hot batches, and moving them into segments.
//!
//! `append` admits a batch (queue and memory budget), hands it to the WAL writer thread and
//! waits. The writer takes every batch waiting, writes them in one go, fsyncs once (group
//! commit), makes them visible as hot batches and only then acknowledges. Flushes write hot
//! batches to segments, commit the manifest with the last sequence number they hold, drop
//! those batches from memory and delete the WAL files they came from. Flush, compaction and
//! retention all change the manifest under one lock, so they never interleave.
//!
//! When a [`CallDeriver`] is given, a second thread feeds it every acknowledged batch in WAL
//! order and publishes the calls it derives as hot `calls` batches, tagged with the flush
//! epoch they belong to. A flush asks that thread for a checkpoint and writes the spans
//! through the last batch the deriver had taken, the calls of the closed epochs and the
//! deriver's waiting halves (a part with those new since the last checkpoint, and an index
//! of those still waiting), under one manifest commit.
//!
//! A flush does not wait for a deriver far behind, as after a crash, when it takes the whole
//! WAL again: it waits at most [`CHECKPOINT_PATIENCE`], and a checkpoint comes at the latest
//! every [`MOST_ROWS_PER_FLUSH`] rows (the deriver keeps one ready when no flush has asked).
//! So each flush commits a bounded part of the backlog quickly, and a server killed again
//! soon after a restart still makes progress.
//!
//! Readers also see the segments of the other nodes writing the same bucket, read again every
//! `refresh_interval`; the calls of their new segments go to the calls subscribers as this
//! node's own do. A reader store ([`Store::open_reader`]) has no WAL and no node of its own:
//! it shows every node's segments.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::buffer::Buffer;
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::calls::{CallRow, calls_batch};
use crate::catalog::Catalog;
use crate::derive::CallDeriver;
use crate::error::{Result, StoreError};
use crate::location::SegmentLocation;
use crate::metrics::{StoreGauges, StoreMetrics};
use crate::resident::Resident;
use crate::schema::spans_schema;
use crate::segments::{Manifest, RowKeep, SegmentMeta, SegmentStore, Table};
use crate::wal::{self, Wal};

/// When acknowledged batches reach the disk itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// fsync once per group commit, before acknowledging: survives power loss.
    #[default]
    Always,
    /// Acknowledge once written to the OS: survives a crash of callwatch, not of the machine.
    Never,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub data_dir: PathBuf,
    pub fsync: FsyncPolicy,
    /// Batches that may wait for the WAL writer before appends are refused.
    pub queue_depth: usize,
    /// Bytes of spans not yet in segments (queued and hot), with the other parts' accounts,
    /// before appends are refused; also the resident size past which appends are refused
    /// while a quarter of it is unflushed.
    pub memory_limit: usize,
    /// Hot batches are flushed at least this often...
    pub flush_interval: Duration,
    /// ...and as soon as this many spans are hot.
    pub flush_rows: usize,
    /// Segments whose hour ended longer ago than this are deleted.
    pub retention: Duration,
    /// Segments with fewer rows than this are small: compaction merges them.
    pub compaction_small_rows: u64,
    /// A merge of small segments stops at this many rows (it reads them all into memory).
    pub compaction_target_rows: u64,
    /// An hour needs at least this many small segments before they are merged.
    pub compaction_min_segments: usize,
    /// Files of segments that compaction or retention replaced are deleted only this long
    /// afterwards, so a query that listed them just before still reads them.
    pub delete_grace: Duration,
    /// How often the call deriver settles halves that waited long enough and publishes the
    /// calls it derived.
    pub derive_interval: Duration,
    /// Where segments and the manifest go; `None`: the data directory. The WAL and the
    /// waiting halves stay in the data directory.
    pub segments: Option<SegmentLocation>,
    /// This node's name among those writing one bucket; `None`: the one kept in the data
    /// directory, made up when it has none.
    pub node_id: Option<String>,
    /// How often the other nodes' manifests (and catalogs) are read again.
    pub refresh_interval: Duration,
    /// A segment is merged by compaction only once it is this old, so that readers
    /// refreshing more often than this see every flushed segment before it is merged away
    /// (they follow new calls by the flushed segments).
    pub compaction_min_age: Duration,
}

impl StoreConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            fsync: FsyncPolicy::Always,
            queue_depth: 256,
            memory_limit: 2 << 30,
            flush_interval: Duration::from_secs(30),
            flush_rows: 500_000,
            retention: Duration::from_secs(7 * 24 * 3600),
            compaction_small_rows: 100_000,
            compaction_target_rows: 500_000,
            compaction_min_segments: 4,
            delete_grace: Duration::from_secs(120),
            derive_interval: Duration::from_millis(250),
            segments: None,
            node_id: None,
            refresh_interval: Duration::from_secs(10),
            compaction_min_age: MOST_REFRESH_INTERVAL * 2,
        }
    }
}

/// What a flush wrote.
#[derive(Debug, Clone, Default)]
pub struct FlushReport {
    pub rows: u64,
    pub segments: Vec<SegmentMeta>,
}

/// What [`Store::subscribe_calls`] sends.
#[derive(Debug, Clone)]
pub enum CallsUpdate {
    /// Calls in the store: derived here, with the rows the batch was made of, or of another
    /// node's new segment, without them.
    Derived(RecordBatch, Option<Arc<Vec<CallRow>>>),
    /// Client calls still waiting for their server half, as the client tells them
    /// ([`CallDeriver::take_unpaired_calls`]): not in the store.
    Unpaired(Arc<Vec<CallRow>>),
}

impl CallsUpdate {
    /// The batch, if it holds stored calls.
    pub fn derived(self) -> Option<RecordBatch> {
        match self {
            Self::Derived(batch, _) => Some(batch),
            Self::Unpaired(_) => None,
        }
    }
}

/// A hot calls batch as [`Store::subscribe_hot_calls`] sends it, with the rows it was made
/// of: a reader that adds up calls takes them as they are rather than decode the batch.
#[derive(Debug, Clone)]
pub struct PublishedCalls {
    /// The store's number for the batch (as in [`Snapshot::hot_call_ids`]).
    pub id: u64,
    pub batch: RecordBatch,
    /// In the batch's order.
    pub rows: Arc<Vec<CallRow>>,
}

/// A consistent view for readers: hot batches and the segments committed with them.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Hot `spans` batches.
    pub hot: Vec<RecordBatch>,
    /// `spans` segments.
    pub segments: Vec<SegmentMeta>,
    pub hot_calls: Vec<RecordBatch>,
    /// The store's number for each hot calls batch, in the order of `hot_calls`.
    pub hot_call_ids: Vec<u64>,
    pub call_segments: Vec<SegmentMeta>,
    /// What the calls segments written since the store opened were made of, by path.
    pub call_origins: Arc<HashMap<String, Vec<Origin>>>,
}

/// What a calls segment was made of: the hot batches a flush wrote into it (it holds their
/// calls of its hour), or the segments a compaction merged. A reader that keeps a summary
/// per batch can add up a new segment's from its origins' rather than read the file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Origin {
    HotCalls(u64),
    Segment(String),
}

impl Snapshot {
    pub fn hot_of(&self, table: Table) -> &[RecordBatch] {
        match table {
            Table::Spans => &self.hot,
            Table::Calls => &self.hot_calls,
        }
    }

    pub fn segments_of(&self, table: Table) -> &[SegmentMeta] {
        match table {
            Table::Spans => &self.segments,
            Table::Calls => &self.call_segments,
        }
    }
}

struct HotBatch {
    seq: u64,
    bytes: usize,
    batch: RecordBatch,
}

/// Calls derived between two checkpoints of the deriver.
struct HotCalls {
    id: u64,
    epoch: u64,
    bytes: usize,
    batch: RecordBatch,
}

#[derive(Default)]
struct Tables {
    hot: Vec<HotBatch>,
    hot_rows: usize,
    hot_bytes: usize,
    hot_calls: Vec<HotCalls>,
    next_hot_calls_id: u64,
    /// Segments of every table, this node's (as its manifest lists them).
    segments: Vec<SegmentMeta>,
    /// Segments of the other nodes writing the same bucket, as their manifests listed them
    /// when last read: readers see them too.
    others: Vec<SegmentMeta>,
    call_origins: Arc<HashMap<String, Vec<Origin>>>,
    /// Readers of every calls batch the deriver publishes, and of those of the other nodes'
    /// new segments.
    calls_subscribers: Vec<std::sync::mpsc::Sender<CallsUpdate>>,
    /// Readers of every hot calls batch, with the store's number for it.
    hot_calls_subscribers: Vec<std::sync::mpsc::Sender<PublishedCalls>>,
    /// The other nodes' flushed calls segments whose calls readers already have.
    followed: HashSet<String>,
}

struct Append {
    batch: RecordBatch,
    payload: Buffer,
    bytes: usize,
    ack: oneshot::Sender<std::result::Result<u64, String>>,
}

struct Shared {
    config: StoreConfig,
    tables: Mutex<Tables>,
    /// Bytes queued for the WAL plus hot bytes: what the memory budget limits, with
    /// `derive_bytes` and the other parts' accounts.
    unflushed_bytes: AtomicUsize,
    /// What the call deriver holds: waiting halves and what it remembers.
    derive_bytes: AtomicUsize,
    /// The process's resident size, which the memory limit bounds too.
    resident: Resident,
    /// Memory of other parts that live as long as the store (e.g. breaker state).
    accounts: Mutex<Vec<(&'static str, Arc<AtomicUsize>)>>,
    /// `None` on a reader.
    wal: Option<Mutex<Wal>>,
    segments: SegmentStore,
    /// The committed manifest; holding this lock serializes flush, compaction and retention.
    manifest: tokio::sync::Mutex<Manifest>,
    flush_wanted: Notify,
    /// Segments no longer in the manifest, waiting out `delete_grace` before deletion.
    retired: Mutex<Vec<(SegmentMeta, Instant)>>,
    metrics: StoreMetrics,
    catalog: Catalog,
    node: String,
    /// Checkpoints between the deriver and the flushes. Taken after `tables` when both are
    /// held; the deriver never holds it while it takes another lock.
    checkpoints: Mutex<Checkpoints>,
    /// Held while the data directory is this process's; `None` on a reader.
    _dir_lock: Option<File>,
    /// The last orphan file of each other node sent to the deriver.
    remote_sent: Mutex<BTreeMap<String, String>>,
    /// Orphans of checkpoints whose flush failed, for the next flush to write...
    orphans_unwritten: Mutex<Vec<Vec<u8>>>,
    /// ...and files of them written but not yet listed by a manifest.
    orphans_unlisted: Mutex<Vec<String>>,
    /// Parts of waiting halves no manifest lists yet, by part id: kept from their checkpoint
    /// until a flush commits them, whether or not that checkpoint's flush succeeds.
    parts_unwritten: Mutex<BTreeMap<u64, Vec<u8>>>,
}

/// What the deriver thread is sent, in WAL order.
enum DeriveMessage {
    Spans {
        seq: u64,
        batch: RecordBatch,
    },
    /// A checkpoint is wanted (see `Shared::checkpoints`): every batch acknowledged before
    /// it was asked is ahead of this message.
    Checkpoint,
    /// Publish what has been derived so far, then answer.
    Publish(oneshot::Sender<()>),
    /// Orphans another node wrote to the bucket (`file`, of `node`).
    Remote {
        node: String,
        file: String,
        orphans: Vec<u8>,
    },
}

/// How long a flush waits for the deriver to take every batch acknowledged before it; then
/// it takes a checkpoint at the batch the deriver has reached.
const CHECKPOINT_PATIENCE: Duration = Duration::from_secs(1);

/// The columns of the calls of other nodes' new segments that subscribers get: those the
/// breakers and the service-graph series need, so a refresh decodes no more.
const FOLLOWED_COLUMNS: [&str; 11] = [
    crate::schema::START_TIME,
    crate::schema::CLIENT,
    crate::schema::SERVER,
    crate::schema::CALL_TYPE,
    crate::schema::SERVER_KIND,
    crate::schema::CLIENT_DURATION_NS,
    crate::schema::SERVER_DURATION_NS,
    crate::schema::FAILED,
    crate::schema::BREAKER_STATE,
    crate::schema::BREAKER_NAME,
    crate::schema::SERVER_SPAN_ID,
];

/// How long a node's orphans stay in the bucket for the other nodes to read: past it, a node
/// that was down misses them (it reads every `refresh_interval`).
const ORPHANS_KEPT: Duration = Duration::from_secs(600);

/// Readers may refresh at most this far apart: compaction leaves segments younger than twice
/// this alone (see `StoreConfig::compaction_min_age`).
pub const MOST_REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// With the process's resident size at the memory limit, appends are refused while this
/// share of the limit (a quarter) is unflushed: enough for ingest to go on while a flush
/// writes the rest.
const RESIDENT_UNFLUSHED_SHARE: usize = 4;

/// At most this many rows (or `flush_rows`, if more) between two checkpoints.
const MOST_ROWS_PER_FLUSH: usize = 500_000;

/// Checkpoints are taken, and flushed, in order: a flush takes the ready one if there is one.
#[derive(Default)]
struct Checkpoints {
    wanted: Option<CheckpointRequest>,
    ready: Option<Checkpoint>,
}

struct CheckpointRequest {
    /// The last batch acknowledged when the flush asked...
    last_seq: u64,
    /// ...or whatever the deriver has reached at this moment.
    deadline: Instant,
    reply: oneshot::Sender<Checkpoint>,
}

struct Checkpoint {
    /// Calls of this epoch and before belong to the flush that asked.
    epoch: u64,
    /// The last batch the deriver had taken: the flush writes the spans through it.
    through: u64,
    /// The index of the waiting halves and the parts it names (the new part is in
    /// `Shared::parts_unwritten`).
    pending_index: Vec<u8>,
    pending_parts: Vec<u64>,
    /// The parts no manifest listed when it was taken: those it does not name are done with
    /// once it is committed.
    parts_unlisted: Vec<u64>,
    /// Halves for the other nodes, settled here since the last checkpoint.
    orphans: Vec<u8>,
    /// The last orphan file of each other node the deriver had taken.
    remote_through: BTreeMap<String, String>,
}

/// The ways into the WAL writer and deriver threads. The threads hold `Shared` but not this,
/// so when the last `Store` goes, the channels close and the threads end (joined here).
struct Writer {
    sender: Mutex<Option<mpsc::Sender<Append>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    derive: Mutex<Option<std::sync::mpsc::Sender<DeriveMessage>>>,
    derive_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Writer {
    /// Closes the queue and waits for the writer to finish what it holds.
    fn stop(&self) -> std::thread::Result<()> {
        drop(self.sender.lock().expect("not poisoned").take());
        match self.thread.lock().expect("not poisoned").take() {
            Some(thread) => thread.join(),
            None => Ok(()),
        }
    }

    /// Stops the deriver once the writer has stopped (it sends the deriver spans too).
    fn stop_deriver(&self) -> std::thread::Result<()> {
        drop(self.derive.lock().expect("not poisoned").take());
        match self.derive_thread.lock().expect("not poisoned").take() {
            Some(thread) => thread.join(),
            None => Ok(()),
        }
    }

    fn publish(&self) -> Option<oneshot::Receiver<()>> {
        let derive = self.derive.lock().expect("not poisoned");
        let (reply, answer) = oneshot::channel();
        derive.as_ref()?.send(DeriveMessage::Publish(reply)).ok()?;
        Some(answer)
    }

    /// The checkpoint the deriver has ready, or one it takes once it has taken the batch
    /// `last_seq` (or [`MOST_ROWS_PER_FLUSH`] rows, or after [`CHECKPOINT_PATIENCE`]).
    fn checkpoint(&self, shared: &Shared, last_seq: u64) -> Option<oneshot::Receiver<Checkpoint>> {
        let derive = self.derive.lock().expect("not poisoned");
        let derive = derive.as_ref()?;
        let (reply, answer) = oneshot::channel();
        {
            let mut checkpoints = shared.checkpoints.lock().expect("not poisoned");
            if let Some(ready) = checkpoints.ready.take() {
                let _ = reply.send(ready);
                return Some(answer);
            }
            checkpoints.wanted = Some(CheckpointRequest {
                last_seq,
                deadline: Instant::now() + CHECKPOINT_PATIENCE,
                reply,
            });
        }
        if derive.send(DeriveMessage::Checkpoint).is_err() {
            shared.checkpoints.lock().expect("not poisoned").wanted = None;
            return None;
        }
        Some(answer)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = self.stop_deriver();
    }
}

/// The span store. Cheap to clone; all clones share one store.
#[derive(Clone)]
pub struct Store {
    // Dropped first: stops the writer thread before the shared state goes.
    writer: Arc<Writer>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("data_dir", &self.shared.config.data_dir)
            .finish_non_exhaustive()
    }
}

/// Most batches one group commit takes at once.
const MAX_GROUP: usize = 512;

/// The file in the data directory that names its node.
const NODE_ID_FILE: &str = "node-id";

/// The node this data directory belongs to: the one it names, made up (and kept) the first
/// time. A data directory stays one node's: its WAL follows that node's manifest, so another
/// `wanted` id is refused rather than flushing the WAL a second time under a new name.
fn node_id(data_dir: &std::path::Path, wanted: Option<&str>) -> Result<String> {
    if let Some(wanted) = wanted
        && !crate::segments::valid_node_id(wanted)
    {
        return Err(StoreError::Config(format!(
            "node id {wanted:?}: use letters, digits, '_' and '-', at most 64"
        )));
    }
    let path = data_dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let kept = text.trim();
            if !crate::segments::valid_node_id(kept) {
                return Err(StoreError::Corrupt(format!(
                    "{} does not hold a node id",
                    path.display()
                )));
            }
            match wanted {
                Some(wanted) if wanted != kept => Err(StoreError::Config(format!(
                    "{} belongs to node {kept:?}, not {wanted:?}",
                    data_dir.display()
                ))),
                _ => Ok(kept.to_string()),
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let node = match wanted {
                Some(wanted) => wanted.to_string(),
                None => {
                    use std::hash::BuildHasher;
                    let random = std::collections::hash_map::RandomState::new()
                        .hash_one((std::process::id(), Instant::now()));
                    format!("node-{:012x}", random & 0xffff_ffff_ffff)
                }
            };
            let temporary = path.with_extension("tmp");
            std::fs::write(&temporary, format!("{node}\n"))?;
            File::open(&temporary)?.sync_all()?;
            std::fs::rename(&temporary, &path)?;
            crate::wal::sync_dir(data_dir)?;
            Ok(node)
        }
        Err(error) => Err(error.into()),
    }
}

/// Takes the lock on a data directory, so that one process at a time uses it.
fn lock_data_dir(data_dir: &std::path::Path) -> Result<File> {
    std::fs::create_dir_all(data_dir)?;
    let lock = File::create(data_dir.join("LOCK"))?;
    if lock.try_lock().is_err() {
        return Err(StoreError::Io(std::io::Error::other(format!(
            "{} is in use by another callwatch process",
            data_dir.display()
        ))));
    }
    Ok(lock)
}

/// Makes the segments of node `gone`, a node that is gone for good, those of the node of
/// `config.data_dir` (which must not be running): from then on its compaction and retention
/// take care of them. Returns how many segments it took.
pub async fn adopt_node(config: &StoreConfig, gone: &str) -> Result<usize> {
    let _lock = lock_data_dir(&config.data_dir)?;
    let location = match &config.segments {
        Some(location) => location.clone(),
        None => SegmentLocation::local(&config.data_dir)?,
    };
    let node = node_id(&config.data_dir, config.node_id.as_deref())?;
    let segments = SegmentStore::new(location, &config.data_dir, &node)?;
    let mut manifest = segments.load_manifest().await?;
    segments.adopt(gone, &mut manifest).await
}

impl Store {
    /// Opens (or creates) the store in `config.data_dir` without a call deriver: the
    /// `calls` table stays as the last flush left it.
    pub async fn open(config: StoreConfig) -> Result<Self> {
        Self::open_with(config, None).await
    }

    /// Opens (or creates) the store in `config.data_dir`: loads the manifest, removes segment
    /// files a crash left uncommitted, restores the deriver, replays the WAL and starts the
    /// WAL writer.
    pub async fn open_with(
        config: StoreConfig,
        mut deriver: Option<Box<dyn CallDeriver>>,
    ) -> Result<Self> {
        let dir_lock = lock_data_dir(&config.data_dir)?;
        let location = match &config.segments {
            Some(location) => location.clone(),
            None => SegmentLocation::local(&config.data_dir)?,
        };
        let node = node_id(&config.data_dir, config.node_id.as_deref())?;
        let segments = SegmentStore::new(location, &config.data_dir, &node)?;
        let manifest = segments.load_manifest().await?;
        segments.remove_orphans(&manifest).await?;
        if let (Some(deriver), Some(path)) = (deriver.as_mut(), manifest.pending.as_deref()) {
            match read_pending(&segments, path, &manifest.pending_parts).await? {
                Some((index, parts)) => deriver
                    .restore(&index, &parts)
                    .map_err(|error| StoreError::Corrupt(format!("{path}: {error}")))?,
                None => tracing::warn!(
                    path,
                    "the halves waiting at the last flush are not in this data directory; \
                     calls they were part of are derived only when both halves come again"
                ),
            }
        }

        let wal_dir = config.data_dir.join("wal");
        let skip = manifest.flushed_through_seq;
        let (wal, replay) =
            tokio::task::spawn_blocking(move || Wal::open(&wal_dir, skip)).await??;

        let crate::segments::OtherNodes {
            segments: others,
            catalogs: others_catalogs,
            ..
        } = segments.other_nodes().await?;
        let mut tables = Tables {
            segments: manifest.segments.clone(),
            followed: followed(&others),
            others,
            ..Tables::default()
        };
        for wal::Replayed { seq, batch, bytes } in replay.batches {
            if batch.schema() != spans_schema() {
                return Err(StoreError::Schema(format!(
                    "WAL record {seq} was written with another schema version"
                )));
            }
            tables.hot_rows += batch.num_rows();
            tables.hot_bytes += bytes;
            tables.hot.push(HotBatch { seq, bytes, batch });
        }
        if !tables.hot.is_empty() {
            tracing::info!(
                batches = tables.hot.len(),
                spans = tables.hot_rows,
                "replayed the write-ahead log"
            );
        }

        // The replayed batches go to the deriver first, before anything new.
        let derive_channel = deriver.map(|deriver| {
            let (sender, receiver) = std::sync::mpsc::channel();
            for hot in &tables.hot {
                let _ = sender.send(DeriveMessage::Spans {
                    seq: hot.seq,
                    batch: hot.batch.clone(),
                });
            }
            (sender, receiver, deriver)
        });
        let replayed_flush_due = tables.hot_rows >= config.flush_rows;
        let flushed_through = manifest.flushed_through_seq;
        let remote_through = manifest.remote_through.clone();

        let (sender, receiver) = mpsc::channel(config.queue_depth.max(1));
        let unflushed = tables.hot_bytes;
        let catalog = Catalog::open(&config.data_dir);
        // Kept in the bucket too, for the readers of other machines.
        segments.save_catalog(catalog.own_json()).await?;
        catalog.set_others(&others_catalogs);
        let shared = Arc::new(Shared {
            config,
            catalog,
            tables: Mutex::new(tables),
            unflushed_bytes: AtomicUsize::new(unflushed),
            wal: Some(Mutex::new(wal)),
            segments,
            manifest: tokio::sync::Mutex::new(manifest),
            flush_wanted: Notify::new(),
            resident: Resident::new(),
            retired: Mutex::new(Vec::new()),
            metrics: StoreMetrics::default(),
            checkpoints: Mutex::new(Checkpoints::default()),
            node,
            derive_bytes: AtomicUsize::new(0),
            accounts: Mutex::new(Vec::new()),
            _dir_lock: Some(dir_lock),
            remote_sent: Mutex::new(remote_through.clone()),
            orphans_unwritten: Mutex::new(Vec::new()),
            orphans_unlisted: Mutex::new(Vec::new()),
            parts_unwritten: Mutex::default(),
        });
        let (derive, derive_thread) = match derive_channel {
            Some((derive, derive_receiver, deriver)) => {
                let thread_shared = shared.clone();
                let thread = std::thread::Builder::new()
                    .name("callwatch-calls".into())
                    .spawn(move || {
                        run_deriver(
                            &thread_shared,
                            deriver,
                            derive_receiver,
                            flushed_through,
                            remote_through,
                        )
                    })?;
                (Some(derive), Some(thread))
            }
            None => (None, None),
        };
        let thread_shared = shared.clone();
        let wal_derive = derive.clone();
        let thread = std::thread::Builder::new()
            .name("callwatch-wal".into())
            .spawn(move || run_wal_writer(&thread_shared, receiver, wal_derive))?;
        let writer = Arc::new(Writer {
            sender: Mutex::new(Some(sender)),
            thread: Mutex::new(Some(thread)),
            derive: Mutex::new(derive),
            derive_thread: Mutex::new(derive_thread),
        });
        if replayed_flush_due {
            // A long replay is flushed as the deriver goes, not only at the next tick.
            shared.flush_wanted.notify_one();
        }
        Ok(Self { writer, shared })
    }

    /// Opens every node's segments at `config.segments` (or in the data directory) for
    /// reading only: no WAL, no deriver, no node of its own; nothing is written. Appends
    /// are refused. [`Store::spawn_maintenance`] reads the manifests again every
    /// `refresh_interval`.
    pub async fn open_reader(config: StoreConfig) -> Result<Self> {
        let location = match &config.segments {
            Some(location) => location.clone(),
            None => SegmentLocation::local(&config.data_dir)?,
        };
        let segments = SegmentStore::reader(location);
        let crate::segments::OtherNodes {
            segments: others,
            catalogs,
            ..
        } = segments.other_nodes().await?;
        let catalog = Catalog::reader();
        catalog.set_others(&catalogs);
        let tables = Tables {
            followed: followed(&others),
            others,
            ..Tables::default()
        };
        let shared = Arc::new(Shared {
            config,
            catalog,
            tables: Mutex::new(tables),
            unflushed_bytes: AtomicUsize::new(0),
            wal: None,
            segments,
            manifest: tokio::sync::Mutex::new(Manifest::default()),
            flush_wanted: Notify::new(),
            resident: Resident::new(),
            retired: Mutex::new(Vec::new()),
            metrics: StoreMetrics::default(),
            checkpoints: Mutex::new(Checkpoints::default()),
            node: String::new(),
            derive_bytes: AtomicUsize::new(0),
            accounts: Mutex::new(Vec::new()),
            _dir_lock: None,
            remote_sent: Mutex::default(),
            orphans_unwritten: Mutex::default(),
            orphans_unlisted: Mutex::default(),
            parts_unwritten: Mutex::default(),
        });
        let writer = Arc::new(Writer {
            sender: Mutex::new(None),
            thread: Mutex::new(None),
            derive: Mutex::new(None),
            derive_thread: Mutex::new(None),
        });
        Ok(Self { writer, shared })
    }

    /// Whether this store only reads (see [`Store::open_reader`]).
    pub fn is_reader(&self) -> bool {
        self.shared.wal.is_none()
    }

    pub fn config(&self) -> &StoreConfig {
        &self.shared.config
    }

    /// The URL that segment paths ([`SegmentMeta::path`]) are relative to, as another
    /// process names it.
    pub fn segments_url(&self) -> Result<String> {
        match &self.shared.config.segments {
            Some(location) => location.absolute_url(),
            None => crate::location::directory_url(&self.shared.config.data_dir),
        }
    }

    /// This node's name among those writing one bucket.
    pub fn node_id(&self) -> &str {
        &self.shared.node
    }

    /// What services report of themselves (namespaces, consumer groups), learned at ingest.
    pub fn catalog(&self) -> &Catalog {
        &self.shared.catalog
    }

    pub fn metrics(&self) -> &StoreMetrics {
        &self.shared.metrics
    }

    /// An account of memory that `part` holds for as long as the store lives, counted by the
    /// memory budget: its owner keeps the number up to date.
    pub fn memory_account(&self, part: &'static str) -> Arc<AtomicUsize> {
        let account = Arc::new(AtomicUsize::new(0));
        self.shared
            .accounts
            .lock()
            .expect("not poisoned")
            .push((part, account.clone()));
        account
    }

    /// Memory the budget counts, by part: spans and calls not yet in segments, the call
    /// deriver's waiting halves, and each account.
    pub fn memory_parts(&self) -> Vec<(&'static str, usize)> {
        let shared = &self.shared;
        let mut parts = vec![
            ("unflushed", shared.unflushed_bytes.load(Ordering::Relaxed)),
            ("pairing", shared.derive_bytes.load(Ordering::Relaxed)),
        ];
        for (part, account) in shared.accounts.lock().expect("not poisoned").iter() {
            parts.push((part, account.load(Ordering::Relaxed)));
        }
        parts
    }

    /// What the memory budget counts, all parts together; asked for every export request, so
    /// it allocates nothing.
    fn memory_used(&self) -> usize {
        let shared = &self.shared;
        let accounts: usize = shared
            .accounts
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|(_, account)| account.load(Ordering::Relaxed))
            .sum();
        shared.unflushed_bytes.load(Ordering::Relaxed)
            + shared.derive_bytes.load(Ordering::Relaxed)
            + accounts
    }

    /// The process's resident bytes, at most 100 ms old; `None` where the kernel does not say.
    pub fn resident_bytes(&self) -> Option<usize> {
        self.shared.resident.bytes()
    }

    /// Refuses early, before the caller spends work on a batch that cannot be taken.
    pub fn admit(&self) -> Result<()> {
        let config = &self.shared.config;
        if self.memory_used() >= config.memory_limit {
            self.shared.flush_wanted.notify_one();
            return Err(StoreError::MemoryFull {
                limit_bytes: config.memory_limit,
                retry_after: Duration::from_secs(5),
            });
        }
        // Past the limit, the resident size refuses appends while flushing can bring it down;
        // with little unflushed, refusing would not (the allocator keeps what it was given,
        // and pairing and queries hold theirs), so appends go on.
        let unflushed = self.shared.unflushed_bytes.load(Ordering::Relaxed);
        if unflushed >= (config.memory_limit / RESIDENT_UNFLUSHED_SHARE).max(1)
            && let Some(resident) = self.resident_bytes()
            && resident >= config.memory_limit
        {
            self.shared.flush_wanted.notify_one();
            return Err(StoreError::ResidentFull {
                resident_bytes: resident,
                limit_bytes: config.memory_limit,
                retry_after: Duration::from_secs(1),
            });
        }
        let sender = self.sender()?;
        if sender.capacity() == 0 {
            return Err(StoreError::QueueFull {
                depth: sender.max_capacity(),
                retry_after: Duration::from_secs(1),
            });
        }
        Ok(())
    }

    /// Appends a batch of spans; returns its WAL sequence number once it is durable (per the
    /// fsync policy) and visible in [`Store::snapshot`].
    pub async fn append(&self, batch: RecordBatch) -> Result<u64> {
        if batch.schema() != spans_schema() {
            return Err(StoreError::Schema(
                "batch schema differs from the spans schema".into(),
            ));
        }
        self.admit()?;
        let sender = self.sender()?;
        let permit = sender.try_reserve().map_err(|error| match error {
            mpsc::error::TrySendError::Full(()) => StoreError::QueueFull {
                depth: sender.max_capacity(),
                retry_after: Duration::from_secs(1),
            },
            mpsc::error::TrySendError::Closed(()) => StoreError::ShuttingDown,
        })?;
        let payload = Buffer::from_vec(wal::encode_batch(&batch)?);
        // Keep the WAL record, decoded in place, rather than the builder's arrays: the same
        // data in one exact-size allocation, and its size is what the memory budget counts.
        let batch = wal::decode_batch(payload.clone())?;
        let bytes = payload.len();
        self.shared
            .unflushed_bytes
            .fetch_add(bytes, Ordering::Relaxed);
        let (ack, acked) = oneshot::channel();
        permit.send(Append {
            batch,
            payload,
            bytes,
            ack,
        });
        match acked.await {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(message)) => Err(StoreError::Io(std::io::Error::other(message))),
            Err(_) => Err(StoreError::ShuttingDown),
        }
    }

    /// Waits until the calls of every span acknowledged so far (and of the replayed WAL)
    /// are in [`Store::snapshot`]. Without a deriver there is nothing to wait for.
    pub async fn calls_caught_up(&self) {
        let answer = {
            // Under the lock the WAL writer publishes under, so every acknowledged batch
            // is ahead of this request.
            let _tables = self.shared.tables.lock().expect("not poisoned");
            self.writer.publish()
        };
        if let Some(answer) = answer {
            let _ = answer.await;
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        snapshot_of(&self.shared.tables.lock().expect("not poisoned"))
    }

    /// A snapshot and every calls batch published after it, each exactly once: the calls of
    /// the snapshot's segments and hot batches and those the receiver gets are all calls.
    /// Batches of other nodes' segments carry only `FOLLOWED_COLUMNS`.
    /// Unpaired calls come before the derived call of the same client span.
    pub fn subscribe_calls(&self) -> (Snapshot, std::sync::mpsc::Receiver<CallsUpdate>) {
        let mut tables = self.shared.tables.lock().expect("not poisoned");
        let (sender, receiver) = std::sync::mpsc::channel();
        tables.calls_subscribers.push(sender);
        (snapshot_of(&tables), receiver)
    }

    /// Every hot calls batch published from now on, with the store's number for it (as in
    /// [`Snapshot::hot_call_ids`] and [`Origin::HotCalls`]): a batch a snapshot's segment
    /// was flushed from was sent before that snapshot was taken.
    pub fn subscribe_hot_calls(&self) -> std::sync::mpsc::Receiver<PublishedCalls> {
        let mut tables = self.shared.tables.lock().expect("not poisoned");
        let (sender, receiver) = std::sync::mpsc::channel();
        tables.hot_calls_subscribers.push(sender);
        receiver
    }

    /// Where segments live; `SegmentMeta::path` is relative to it.
    pub fn object_store(&self) -> Arc<dyn object_store::ObjectStore> {
        self.shared.segments.objects()
    }

    pub async fn read_segment(&self, meta: &SegmentMeta) -> Result<Vec<RecordBatch>> {
        self.shared.segments.read(meta).await
    }

    /// The named columns of a segment (those it has); the others are not decoded.
    pub async fn read_segment_columns(
        &self,
        meta: &SegmentMeta,
        columns: &[&str],
    ) -> Result<Vec<RecordBatch>> {
        self.shared.segments.read_columns(meta, Some(columns)).await
    }

    /// The named columns of the rows of a segment that `keep` keeps, decoded only for them.
    pub async fn read_segment_rows(
        &self,
        meta: &SegmentMeta,
        columns: &[&str],
        keep: RowKeep,
    ) -> Result<Vec<RecordBatch>> {
        self.shared
            .segments
            .read_columns_where(meta, Some(columns), Some(keep))
            .await
    }

    pub fn gauges(&self) -> StoreGauges {
        let tables = self.shared.tables.lock().expect("not poisoned");
        let (queue_depth, queue_capacity) = match &*self.writer.sender.lock().expect("not poisoned")
        {
            Some(sender) => (
                sender.max_capacity() - sender.capacity(),
                sender.max_capacity(),
            ),
            None => (0, 0),
        };
        StoreGauges {
            hot_rows: tables.hot_rows,
            hot_bytes: tables.hot_bytes,
            queue_depth,
            queue_capacity,
            segments: tables.segments.len(),
            segment_rows: tables.segments.iter().map(|s| s.rows).sum(),
            segment_bytes: tables.segments.iter().map(|s| s.bytes).sum(),
            other_segments: tables.others.len(),
            memory: self.memory_parts(),
            memory_limit: self.shared.config.memory_limit,
            resident: self.resident_bytes(),
        }
    }

    /// Writes hot batches into segments and drops them from memory and the WAL: every one
    /// without a deriver; with one, those its checkpoint covers, with the calls derived from
    /// them and its waiting halves.
    pub async fn flush(&self) -> Result<FlushReport> {
        let shared = &self.shared;
        let mut manifest = shared.manifest.lock().await;
        let (last_seq, checkpoint) = {
            let tables = shared.tables.lock().expect("not poisoned");
            let last_seq = tables
                .hot
                .last()
                .map_or(manifest.flushed_through_seq, |last| last.seq);
            // Asked under the lock the WAL writer publishes under: every batch through
            // `last_seq` was sent to the deriver before the request.
            (last_seq, self.writer.checkpoint(shared, last_seq))
        };
        let mut checkpoint = match checkpoint {
            Some(answer) => Some(answer.await.map_err(|_| StoreError::ShuttingDown)?),
            None => None,
        };
        // Written first: a checkpoint's orphans are no longer among its waiting halves, so
        // they are kept in memory until a manifest lists them.
        let new_orphans = checkpoint.as_mut().map(|c| std::mem::take(&mut c.orphans));
        let orphans = self.write_orphans(new_orphans).await?;
        let remote_through = checkpoint.as_ref().map(|c| c.remote_through.clone());
        let result = self
            .flush_with(
                &mut manifest,
                checkpoint,
                last_seq,
                &orphans,
                remote_through,
            )
            .await;
        if result.is_err() {
            // Listed by the next flush that succeeds.
            self.shared
                .orphans_unlisted
                .lock()
                .expect("not poisoned")
                .extend(orphans);
        }
        result
    }

    /// Writes the orphans of earlier checkpoints whose flush failed and `new`; returns the
    /// files to list: those and the ones written before but not yet listed.
    async fn write_orphans(&self, new: Option<Vec<u8>>) -> Result<Vec<String>> {
        let shared = &self.shared;
        let mut unwritten =
            std::mem::take(&mut *shared.orphans_unwritten.lock().expect("not poisoned"));
        unwritten.extend(new.filter(|orphans| !orphans.is_empty()));
        let mut files = std::mem::take(&mut *shared.orphans_unlisted.lock().expect("not poisoned"));
        while let Some(orphans) = unwritten.first() {
            match shared.segments.write_orphans(orphans.clone()).await {
                Ok(path) => {
                    files.push(path);
                    unwritten.remove(0);
                }
                Err(error) => {
                    shared
                        .orphans_unwritten
                        .lock()
                        .expect("not poisoned")
                        .extend(unwritten);
                    shared
                        .orphans_unlisted
                        .lock()
                        .expect("not poisoned")
                        .extend(files);
                    return Err(error);
                }
            }
        }
        Ok(files)
    }

    /// Writes the index of `checkpoint`'s waiting halves, and each part it names that no
    /// manifest lists yet (`parts_written` gets them as they are written); returns the
    /// index's path and the file of every part it names.
    async fn write_pending(
        &self,
        checkpoint: &Checkpoint,
        listed: &BTreeMap<u64, String>,
        parts_written: &mut Vec<(u64, String)>,
    ) -> Result<(String, BTreeMap<u64, String>)> {
        let shared = &self.shared;
        let mut parts = BTreeMap::new();
        for &id in &checkpoint.pending_parts {
            let unwritten = shared
                .parts_unwritten
                .lock()
                .expect("not poisoned")
                .get(&id)
                .cloned();
            let path = match (unwritten, listed.get(&id)) {
                (Some(bytes), _) => {
                    let path = shared.segments.write_pending_part(id, bytes).await?;
                    parts_written.push((id, path.clone()));
                    path
                }
                (None, Some(path)) => path.clone(),
                (None, None) => {
                    return Err(StoreError::Corrupt(format!(
                        "the waiting halves name part {id}, which was never written"
                    )));
                }
            };
            parts.insert(id, path);
        }
        let index = shared
            .segments
            .write_pending(checkpoint.pending_index.clone())
            .await?;
        Ok((index, parts))
    }

    /// [`Store::flush`] once the checkpoint is taken and its orphans written.
    async fn flush_with(
        &self,
        manifest: &mut Manifest,
        checkpoint: Option<Checkpoint>,
        last_seq: u64,
        orphans: &[String],
        remote_through: Option<BTreeMap<String, String>>,
    ) -> Result<FlushReport> {
        let shared = &self.shared;
        // Without a deriver every hot batch is flushed; with one, those it has taken.
        let through = checkpoint.as_ref().map_or(last_seq, |c| c.through);
        debug_assert!(
            through >= manifest.flushed_through_seq,
            "checkpoints come in order"
        );
        let (batches, bytes) = {
            let tables = shared.tables.lock().expect("not poisoned");
            let flushed = tables.hot.iter().filter(|h| h.seq <= through);
            (
                flushed.clone().map(|h| h.batch.clone()).collect::<Vec<_>>(),
                flushed.map(|h| h.bytes).sum::<usize>(),
            )
        };
        let (calls, call_bytes, flushed_calls) = match &checkpoint {
            Some(checkpoint) => {
                let tables = shared.tables.lock().expect("not poisoned");
                let closed = tables
                    .hot_calls
                    .iter()
                    .filter(|h| h.epoch <= checkpoint.epoch);
                let bytes: usize = closed.clone().map(|h| h.bytes).sum();
                let origins: Vec<Origin> = closed.clone().map(|h| Origin::HotCalls(h.id)).collect();
                (
                    closed.map(|h| h.batch.clone()).collect::<Vec<_>>(),
                    bytes,
                    origins,
                )
            }
            None => (Vec::new(), 0, Vec::new()),
        };
        let remote_through = remote_through.unwrap_or_else(|| manifest.remote_through.clone());
        if batches.is_empty()
            && calls.is_empty()
            && orphans.is_empty()
            && remote_through == manifest.remote_through
        {
            return Ok(FlushReport::default());
        }
        let started = Instant::now();
        let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        // Encoded side by side: the flush is what keeps memory bounded, so it should end
        // as soon as it can.
        let (mut written, calls_written) = tokio::try_join!(
            shared.segments.write(Table::Spans, batches),
            shared.segments.write(Table::Calls, calls),
        )?;
        written.extend(calls_written);
        let mut next = manifest.clone();
        next.flushed_through_seq = through;
        next.segments.extend(written.iter().cloned());
        next.remote_through = remote_through;
        next.orphans.extend(orphans.iter().cloned());
        // Orphans the other nodes have had time to read leave the manifest, then the bucket.
        let read_before = Utc::now() - chrono::Duration::from_std(ORPHANS_KEPT).unwrap_or_default();
        let (old_orphans, kept): (Vec<String>, Vec<String>) = std::mem::take(&mut next.orphans)
            .into_iter()
            .partition(|path| crate::segments::written_at(path).is_some_and(|at| at < read_before));
        next.orphans = kept;
        let previous_pending = manifest.pending.clone();
        let previous_parts = manifest.pending_parts.clone();
        let mut parts_written = Vec::new();
        if let Some(checkpoint) = checkpoint.as_ref() {
            let pending = self
                .write_pending(checkpoint, &manifest.pending_parts, &mut parts_written)
                .await;
            match pending {
                Ok((path, parts)) => {
                    next.pending = Some(path);
                    next.pending_parts = parts;
                }
                Err(error) => {
                    for meta in &written {
                        let _ = shared.segments.delete(meta).await;
                    }
                    for (_, path) in &parts_written {
                        let _ = shared.segments.delete_pending(path).await;
                    }
                    return Err(error);
                }
            }
        }
        // The flushed hot batches leave readers' view as their segments enter it.
        let flushed = |tables: &mut Tables| {
            tables.hot.retain(|h| h.seq > through);
            tables.hot_rows = tables.hot.iter().map(|h| h.batch.num_rows()).sum();
            tables.hot_bytes = tables.hot.iter().map(|h| h.bytes).sum();
            if tables.hot_rows >= shared.config.flush_rows {
                // A backlog the checkpoint did not cover: the next flush follows at once.
                shared.flush_wanted.notify_one();
            }
            if let Some(checkpoint) = &checkpoint {
                tables.hot_calls.retain(|h| h.epoch > checkpoint.epoch);
            }
            let origins = Arc::make_mut(&mut tables.call_origins);
            for meta in written.iter().filter(|m| m.table == Table::Calls) {
                origins.insert(meta.path.clone(), flushed_calls.clone());
            }
        };
        if let Err(error) = self.commit(manifest, next.clone(), &written, flushed).await {
            if let Some(path) = &next.pending {
                let _ = shared.segments.delete_pending(path).await;
            }
            for (_, path) in &parts_written {
                let _ = shared.segments.delete_pending(path).await;
            }
            return Err(error);
        }
        if let Some(checkpoint) = &checkpoint {
            // Listed now, or no longer waited for.
            let mut unwritten = shared.parts_unwritten.lock().expect("not poisoned");
            for id in &checkpoint.parts_unlisted {
                unwritten.remove(id);
            }
        }
        for path in &old_orphans {
            shared.segments.delete_orphans(path).await?;
        }
        if next.pending != previous_pending
            && let Some(path) = previous_pending
        {
            shared.segments.delete_pending(&path).await?;
        }
        // Parts whose halves are all gone.
        for (id, path) in &previous_parts {
            if next.pending_parts.get(id) != Some(path) {
                shared.segments.delete_pending(path).await?;
            }
        }
        shared
            .unflushed_bytes
            .fetch_sub(bytes + call_bytes, Ordering::Relaxed);
        let remover = shared.clone();
        tokio::task::spawn_blocking(move || match &remover.wal {
            Some(wal) => wal.lock().expect("not poisoned").remove_through(through),
            None => Ok(()),
        })
        .await??;

        let metrics = &shared.metrics;
        metrics.flushes.add(1);
        metrics.flushed_rows.add(rows);
        metrics.flush_nanos.add_duration(started.elapsed());
        tracing::debug!(rows, segments = written.len(), elapsed = ?started.elapsed(), "flushed");
        Ok(FlushReport {
            rows,
            segments: written,
        })
    }

    /// Merges small segments of the same hour. Returns how many merges were done.
    pub async fn compact(&self) -> Result<usize> {
        let config = &self.shared.config;
        let mut manifest = self.shared.manifest.lock().await;
        let closed_before = Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
            - i64::try_from((config.flush_interval * 2).as_nanos()).unwrap_or(i64::MAX);
        // Only segments readers have had time to see (see `compaction_min_age`).
        let settled_before =
            Utc::now() - chrono::Duration::from_std(config.compaction_min_age).unwrap_or_default();
        let settled: Vec<SegmentMeta> = manifest
            .segments
            .iter()
            .filter(|s| crate::segments::written_at(&s.path).is_none_or(|at| at <= settled_before))
            .cloned()
            .collect();
        let plan = plan_compaction(
            &settled,
            config.compaction_small_rows,
            config.compaction_target_rows,
            config.compaction_min_segments,
            closed_before,
        );
        for group in &plan {
            let mut batches = Vec::new();
            for meta in group {
                batches.extend(self.shared.segments.read(meta).await?);
            }
            let mut written = self.shared.segments.write(group[0].table, batches).await?;
            for meta in &mut written {
                meta.merged = true;
            }
            let mut next = manifest.clone();
            next.segments.retain(|s| !group.contains(s));
            next.segments.extend(written.iter().cloned());
            let merged = |tables: &mut Tables| {
                let origins: Vec<Origin> = group
                    .iter()
                    .map(|meta| Origin::Segment(meta.path.clone()))
                    .collect();
                let known = Arc::make_mut(&mut tables.call_origins);
                for meta in written.iter().filter(|m| m.table == Table::Calls) {
                    known.insert(meta.path.clone(), origins.clone());
                }
            };
            self.commit(&mut manifest, next, &written, merged).await?;
            self.retire(group);
            self.shared.metrics.compactions.add(1);
            tracing::debug!(merged = group.len(), "compacted segments");
        }
        Ok(plan.len())
    }

    /// Deletes segments whose hour ended more than the retention period before `now`.
    pub async fn expire(&self, now: DateTime<Utc>) -> Result<usize> {
        let retention = chrono::Duration::from_std(self.shared.config.retention)
            .unwrap_or(chrono::Duration::MAX);
        let cutoff = now
            .checked_sub_signed(retention)
            .and_then(|t| t.timestamp_nanos_opt())
            .unwrap_or(i64::MIN);
        let mut manifest = self.shared.manifest.lock().await;
        let expired: Vec<SegmentMeta> = manifest
            .segments
            .iter()
            .filter(|s| s.end_ns() <= cutoff)
            .cloned()
            .collect();
        if expired.is_empty() {
            return Ok(0);
        }
        let mut next = manifest.clone();
        next.segments.retain(|s| !expired.contains(s));
        self.commit(&mut manifest, next, &[], |_| {}).await?;
        self.retire(&expired);
        self.shared
            .metrics
            .segments_expired
            .add(expired.len() as u64);
        Ok(expired.len())
    }

    /// Schedules the files of segments that left the manifest for deletion.
    fn retire(&self, segments: &[SegmentMeta]) {
        let now = Instant::now();
        let mut retired = self.shared.retired.lock().expect("not poisoned");
        retired.extend(segments.iter().map(|s| (s.clone(), now)));
    }

    /// Deletes retired segment files whose grace period is over at `now`; returns how many.
    /// Any still waiting at a crash are deleted on open, as the manifest no longer lists them.
    pub async fn delete_retired(&self, now: Instant) -> Result<usize> {
        let grace = self.shared.config.delete_grace;
        let due: Vec<SegmentMeta> = {
            let mut retired = self.shared.retired.lock().expect("not poisoned");
            let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut *retired)
                .into_iter()
                .partition(|(_, at)| now.saturating_duration_since(*at) >= grace);
            *retired = waiting;
            due.into_iter().map(|(meta, _)| meta).collect()
        };
        for meta in &due {
            self.shared.segments.delete(meta).await?;
        }
        Ok(due.len())
    }

    /// Runs flushes, compaction and retention in the background until `cancel`, and reads
    /// the other nodes' manifests every `refresh_interval`; a reader only does the latter.
    pub fn spawn_maintenance(&self, cancel: CancellationToken, tracker: &TaskTracker) {
        let (store, refresh_cancel) = (self.clone(), cancel.clone());
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(store.shared.config.refresh_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    () = refresh_cancel.cancelled() => break,
                    _ = tick.tick() => {}
                }
                if let Err(error) = store.read_other_nodes().await {
                    store.shared.metrics.refresh_errors.add(1);
                    tracing::warn!(%error, "reading the other nodes' manifests failed");
                }
            }
        });
        if self.is_reader() {
            return;
        }
        let store = self.clone();
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(store.shared.config.flush_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    () = cancel.cancelled() => break,
                    _ = tick.tick() => {}
                    () = store.shared.flush_wanted.notified() => {}
                }
                if let Err(error) = store.flush().await {
                    store.shared.metrics.flush_errors.add(1);
                    tracing::error!(%error, "flush failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                if let Err(error) = store.compact().await {
                    tracing::error!(%error, "compaction failed");
                }
                if let Err(error) = store.expire(Utc::now()).await {
                    tracing::error!(%error, "retention failed");
                }
                if let Err(error) = store.delete_retired(Instant::now()).await {
                    tracing::error!(%error, "deleting replaced segments failed");
                }
                if let Err(error) = store.persist_catalog().await {
                    tracing::warn!(%error, "writing the catalog of services failed");
                }
            }
        });
    }

    /// Gives the deriver the orphan files of other nodes it has not been given yet, oldest
    /// first (file names start with the time they were written).
    async fn send_remote_orphans(&self, orphans: BTreeMap<String, Vec<String>>) -> Result<()> {
        let shared = &self.shared;
        if self.writer.derive.lock().expect("not poisoned").is_none() {
            return Ok(());
        }
        for (node, mut files) in orphans {
            let name = |path: &str| path.rsplit('/').next().unwrap_or(path).to_string();
            let sent = shared
                .remote_sent
                .lock()
                .expect("not poisoned")
                .get(&node)
                .cloned();
            files.retain(|path| sent.as_ref().is_none_or(|sent| name(path) > *sent));
            files.sort_by_key(|path| name(path));
            for path in files {
                let Some(bytes) = shared.segments.read_orphans(&path).await? else {
                    continue;
                };
                let file = name(&path);
                let message = DeriveMessage::Remote {
                    node: node.clone(),
                    file: file.clone(),
                    orphans: bytes.to_vec(),
                };
                let derive = self.writer.derive.lock().expect("not poisoned");
                let Some(derive) = derive.as_ref() else {
                    return Ok(());
                };
                if derive.send(message).is_err() {
                    return Ok(());
                }
                shared
                    .remote_sent
                    .lock()
                    .expect("not poisoned")
                    .insert(node.clone(), file);
            }
        }
        Ok(())
    }

    /// Writes what was learned of services to the data directory and the bucket.
    async fn persist_catalog(&self) -> Result<()> {
        if let Some(json) = self.shared.catalog.persist()? {
            self.shared.segments.save_catalog(json).await?;
        }
        Ok(())
    }

    /// Reads the manifests and catalogs of the other nodes writing this bucket again: their
    /// segments are read with this node's, and the calls of their newly flushed segments go
    /// to the calls subscribers. Their files are deleted only after the grace period, so a
    /// query that listed one just before still reads it.
    pub async fn read_other_nodes(&self) -> Result<()> {
        let shared = &self.shared;
        let crate::segments::OtherNodes {
            segments: others,
            orphans,
            catalogs,
        } = shared.segments.other_nodes().await?;
        self.send_remote_orphans(orphans).await?;
        shared.catalog.set_others(&catalogs);
        let (own, new, subscribed) = {
            let tables = shared.tables.lock().expect("not poisoned");
            let own: HashSet<String> = tables.segments.iter().map(|s| s.path.clone()).collect();
            let new: Vec<SegmentMeta> = others
                .iter()
                .filter(|s| s.table == Table::Calls && !s.merged)
                .filter(|s| !tables.followed.contains(&s.path) && !own.contains(&s.path))
                .cloned()
                .collect();
            (own, new, !tables.calls_subscribers.is_empty())
        };
        let mut calls = Vec::new();
        let mut unread = HashSet::new();
        if subscribed {
            for meta in &new {
                let read = shared
                    .segments
                    .read_columns(meta, Some(&FOLLOWED_COLUMNS[..]))
                    .await;
                match read {
                    Ok(batches) => calls.extend(batches),
                    // Tried again at the next refresh, while it is listed.
                    Err(error) => {
                        tracing::warn!(%error, path = meta.path, "reading another node's new calls");
                        unread.insert(meta.path.clone());
                    }
                }
            }
        }
        let mut tables = shared.tables.lock().expect("not poisoned");
        // A segment this node adopted is its own now.
        tables.others = others
            .into_iter()
            .filter(|s| !own.contains(&s.path))
            .collect();
        tables.followed = followed(&tables.others);
        tables.followed.retain(|path| !unread.contains(path));
        shared.metrics.refreshes.add(1);
        tables.calls_subscribers.retain(|subscriber| {
            calls.iter().all(|batch| {
                subscriber
                    .send(CallsUpdate::Derived(batch.clone(), None))
                    .is_ok()
            })
        });
        Ok(())
    }

    /// Stops taking appends, lets the WAL writer finish what it has and the deriver take
    /// it all, and flushes.
    pub async fn close(&self) -> Result<FlushReport> {
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || writer.stop())
            .await?
            .map_err(|_| StoreError::Io(std::io::Error::other("WAL writer panicked")))?;
        self.calls_caught_up().await;
        // Checkpoints cover a bounded number of rows each: flush until none is hot.
        let mut report = FlushReport::default();
        loop {
            let flushed = self.flush().await?;
            report.rows += flushed.rows;
            report.segments.extend(flushed.segments);
            if flushed.rows == 0
                || self
                    .shared
                    .tables
                    .lock()
                    .expect("not poisoned")
                    .hot
                    .is_empty()
            {
                break;
            }
        }
        self.persist_catalog().await?;
        let writer = self.writer.clone();
        tokio::task::spawn_blocking(move || writer.stop_deriver())
            .await?
            .map_err(|_| StoreError::Io(std::io::Error::other("call deriver panicked")))?;
        Ok(report)
    }

    fn sender(&self) -> Result<mpsc::Sender<Append>> {
        self.writer
            .sender
            .lock()
            .expect("not poisoned")
            .clone()
            .ok_or(StoreError::ShuttingDown)
    }

    /// Saves `next` as the manifest and publishes its segments to readers, with what `change`
    /// does to the tables in the same step. On failure the files just written are removed,
    /// so nothing uncommitted stays visible.
    async fn commit(
        &self,
        manifest: &mut Manifest,
        next: Manifest,
        written: &[SegmentMeta],
        change: impl FnOnce(&mut Tables),
    ) -> Result<()> {
        if let Err(error) = self.shared.segments.save_manifest(&next).await {
            for meta in written {
                let _ = self.shared.segments.delete(meta).await;
            }
            return Err(error);
        }
        let metrics = &self.shared.metrics;
        metrics.segments_written.add(written.len() as u64);
        metrics
            .segment_bytes_written
            .add(written.iter().map(|s| s.bytes).sum());
        *manifest = next;
        let mut tables = self.shared.tables.lock().expect("not poisoned");
        tables.segments = manifest.segments.clone();
        change(&mut tables);
        let present: HashSet<&str> = tables.segments.iter().map(|s| s.path.as_str()).collect();
        if tables
            .call_origins
            .keys()
            .any(|path| !present.contains(path.as_str()))
        {
            let kept = tables
                .call_origins
                .iter()
                .filter(|(path, _)| present.contains(path.as_str()))
                .map(|(path, origins)| (path.clone(), origins.clone()))
                .collect();
            tables.call_origins = Arc::new(kept);
        }
        Ok(())
    }
}

/// Groups of small segments of one hour to merge: smallest first, up to `target_rows` each.
/// An hour qualifies with `min_segments` small segments, or with two once it has ended
/// (before `closed_before_ns`), since no more will come.
fn plan_compaction(
    segments: &[SegmentMeta],
    small_rows: u64,
    target_rows: u64,
    min_segments: usize,
    closed_before_ns: i64,
) -> Vec<Vec<SegmentMeta>> {
    let mut by_hour: BTreeMap<(Table, i64), Vec<&SegmentMeta>> = BTreeMap::new();
    for segment in segments.iter().filter(|s| s.rows < small_rows) {
        by_hour
            .entry((segment.table, segment.hour))
            .or_default()
            .push(segment);
    }
    let mut plan = Vec::new();
    for ((_, hour), mut small) in by_hour {
        small.sort_by_key(|s| s.rows);
        let mut group = Vec::new();
        let mut rows = 0;
        for segment in small {
            if rows + segment.rows > target_rows && group.len() >= 2 {
                break;
            }
            rows += segment.rows;
            group.push(segment.clone());
        }
        let ended = (hour + 1).saturating_mul(3_600_000_000_000) <= closed_before_ns;
        if group.len() >= min_segments || (ended && group.len() >= 2) {
            plan.push(group);
        }
    }
    plan
}

fn run_wal_writer(
    shared: &Shared,
    mut receiver: mpsc::Receiver<Append>,
    derive: Option<std::sync::mpsc::Sender<DeriveMessage>>,
) {
    let mut group: Vec<Append> = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = receiver.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match receiver.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        match write_group(shared, &group) {
            Ok(first_seq) => {
                let mut tables = shared.tables.lock().expect("not poisoned");
                let mut acks = Vec::with_capacity(group.len());
                for (offset, append) in group.drain(..).enumerate() {
                    let seq = first_seq + offset as u64;
                    tables.hot_rows += append.batch.num_rows();
                    tables.hot_bytes += append.bytes;
                    if let Some(derive) = &derive {
                        let _ = derive.send(DeriveMessage::Spans {
                            seq,
                            batch: append.batch.clone(),
                        });
                    }
                    tables.hot.push(HotBatch {
                        seq,
                        bytes: append.bytes,
                        batch: append.batch,
                    });
                    acks.push((append.ack, seq));
                }
                let flush_due = tables.hot_rows >= shared.config.flush_rows
                    || tables.hot_bytes >= shared.config.memory_limit / 2;
                drop(tables);
                if flush_due {
                    shared.flush_wanted.notify_one();
                }
                for (ack, seq) in acks {
                    let _ = ack.send(Ok(seq));
                }
            }
            Err(error) => {
                tracing::error!(%error, "write-ahead log write failed");
                for append in group.drain(..) {
                    shared
                        .unflushed_bytes
                        .fetch_sub(append.bytes, Ordering::Relaxed);
                    let _ = append.ack.send(Err(format!("write-ahead log: {error}")));
                }
            }
        }
    }
    // The channel is closed: every batch sent before has been written.
    if let Some(wal) = &shared.wal {
        let _ = wal.lock().expect("not poisoned").sync();
    }
}

/// How far the deriver has come, for its checkpoints.
struct DeriverPosition {
    /// Calls published now belong to this epoch.
    epoch: u64,
    /// The last batch whose halves the deriver holds (restored or taken).
    reached: u64,
    /// Rows taken since the last checkpoint.
    rows: usize,
    /// The last orphan file of each other node taken.
    remote_through: BTreeMap<String, String>,
}

/// Feeds the deriver in WAL order, settles waiting halves every `derive_interval`,
/// publishes the calls derived as hot batches of the current epoch and takes checkpoints.
/// `reached` is the batch the restored halves were saved at.
fn run_deriver(
    shared: &Shared,
    mut deriver: Box<dyn CallDeriver>,
    receiver: std::sync::mpsc::Receiver<DeriveMessage>,
    reached: u64,
    remote_through: BTreeMap<String, String>,
) {
    let interval = shared.config.derive_interval;
    let mut at = DeriverPosition {
        epoch: 0,
        reached,
        rows: 0,
        remote_through,
    };
    let mut last_expiry = Instant::now();
    loop {
        let message = match receiver.recv_timeout(interval) {
            Ok(message) => Some(message),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let now = Instant::now();
        match message {
            Some(DeriveMessage::Spans { seq, batch }) => {
                deriver.spans(&batch, now);
                at.reached = seq;
                at.rows += batch.num_rows();
                shared
                    .derive_bytes
                    .store(deriver.memory_bytes(), Ordering::Relaxed);
                checkpoint_if_due(shared, deriver.as_mut(), &mut at, now);
                // Publishing per batch would leave many tiny batches: wait for the interval.
                if now.duration_since(last_expiry) < interval {
                    continue;
                }
            }
            Some(DeriveMessage::Publish(reply)) => {
                publish_calls(shared, deriver.as_mut(), at.epoch);
                let _ = reply.send(());
                continue;
            }
            Some(DeriveMessage::Checkpoint) => {
                checkpoint_if_due(shared, deriver.as_mut(), &mut at, now);
                continue;
            }
            Some(DeriveMessage::Remote {
                node,
                file,
                orphans,
            }) => {
                if let Err(error) = deriver.remote_answers(&orphans, now) {
                    tracing::warn!(%error, node, file, "skipping another node's unreadable orphans");
                }
                at.remote_through.insert(node, file);
                if now.duration_since(last_expiry) < interval {
                    continue;
                }
            }
            None => {}
        }
        deriver.expire(now);
        shared
            .derive_bytes
            .store(deriver.memory_bytes(), Ordering::Relaxed);
        last_expiry = now;
        publish_calls(shared, deriver.as_mut(), at.epoch);
    }
    publish_calls(shared, deriver.as_mut(), at.epoch);
}

/// The index of the waiting halves at `path` and the parts it names, or `None` when this
/// data directory does not hold them all.
async fn read_pending(
    segments: &SegmentStore,
    path: &str,
    parts: &BTreeMap<u64, String>,
) -> Result<Option<(Vec<u8>, Vec<(u64, Vec<u8>)>)>> {
    let Some(index) = segments.read_pending(path).await? else {
        return Ok(None);
    };
    let mut read = Vec::with_capacity(parts.len());
    for (&id, part) in parts {
        match segments.read_pending(part).await? {
            Some(bytes) => read.push((id, bytes)),
            None => return Ok(None),
        }
    }
    Ok(Some((index, read)))
}

/// Takes a checkpoint when one is due: for the flush waiting, once the deriver has reached
/// the batch it asked for, or has taken [`MOST_ROWS_PER_FLUSH`] rows, or the flush has
/// waited long enough; for the next flush, when that many rows were taken and none is ready.
fn checkpoint_if_due(
    shared: &Shared,
    deriver: &mut dyn CallDeriver,
    at: &mut DeriverPosition,
    now: Instant,
) {
    let most_rows = shared.config.flush_rows.max(MOST_ROWS_PER_FLUSH);
    // Decided under the lock and taken without it: taking one publishes under `tables`.
    let reply = {
        let mut checkpoints = shared.checkpoints.lock().expect("not poisoned");
        match checkpoints.wanted.take() {
            Some(request)
                if at.reached >= request.last_seq
                    || at.rows >= most_rows
                    || now >= request.deadline =>
            {
                Some(request.reply)
            }
            Some(request) => {
                checkpoints.wanted = Some(request);
                return;
            }
            None if at.rows >= most_rows && checkpoints.ready.is_none() => None,
            None => return,
        }
    };
    publish_calls(shared, deriver, at.epoch);
    let pending = deriver.pending();
    // A part this checkpoint no longer names may still be named by one a flush is writing:
    // it leaves only when a later checkpoint is committed.
    let parts_unlisted = {
        let mut unwritten = shared.parts_unwritten.lock().expect("not poisoned");
        unwritten.extend(pending.new_part);
        unwritten.keys().copied().collect()
    };
    let checkpoint = Checkpoint {
        epoch: at.epoch,
        through: at.reached,
        pending_index: pending.index,
        pending_parts: pending.parts,
        parts_unlisted,
        orphans: deriver.take_orphans(),
        remote_through: at.remote_through.clone(),
    };
    at.epoch += 1;
    at.rows = 0;
    match reply {
        Some(reply) => {
            let _ = reply.send(checkpoint);
        }
        None => {
            // A flush that asked meanwhile found none ready: this one is its answer.
            let mut checkpoints = shared.checkpoints.lock().expect("not poisoned");
            match checkpoints.wanted.take() {
                Some(request) => {
                    let _ = request.reply.send(checkpoint);
                }
                None => checkpoints.ready = Some(checkpoint),
            }
        }
    }
}

fn publish_calls(shared: &Shared, deriver: &mut dyn CallDeriver, epoch: u64) {
    // First: the derived call of a client span comes after its unpaired call.
    let unpaired = deriver.take_unpaired_calls();
    if !unpaired.is_empty() {
        let unpaired = Arc::new(unpaired);
        let mut tables = shared.tables.lock().expect("not poisoned");
        tables.calls_subscribers.retain(|subscriber| {
            subscriber
                .send(CallsUpdate::Unpaired(unpaired.clone()))
                .is_ok()
        });
    }
    let mut rows = deriver.take_calls();
    if rows.is_empty() {
        return;
    }
    // In start order, so that a flush writes the batch as it is (see `segments`): sorted by
    // index, each row moved once.
    rows.sort_by_cached_key(|row| row.start_ns);
    let batch = calls_batch(&rows);
    let rows = Arc::new(rows);
    let bytes = batch.get_array_memory_size();
    shared.unflushed_bytes.fetch_add(bytes, Ordering::Relaxed);
    let mut tables = shared.tables.lock().expect("not poisoned");
    // Sent under the lock that snapshots take, so a subscriber gets each batch once.
    tables.calls_subscribers.retain(|subscriber| {
        subscriber
            .send(CallsUpdate::Derived(batch.clone(), Some(rows.clone())))
            .is_ok()
    });
    let id = tables.next_hot_calls_id;
    tables.next_hot_calls_id += 1;
    tables.hot_calls_subscribers.retain(|subscriber| {
        subscriber
            .send(PublishedCalls {
                id,
                batch: batch.clone(),
                rows: rows.clone(),
            })
            .is_ok()
    });
    tables.hot_calls.push(HotCalls {
        id,
        epoch,
        bytes,
        batch,
    });
}

/// The flushed calls segments among `segments`: those whose calls readers follow.
fn followed(segments: &[SegmentMeta]) -> HashSet<String> {
    segments
        .iter()
        .filter(|s| s.table == Table::Calls && !s.merged)
        .map(|s| s.path.clone())
        .collect()
}

fn snapshot_of(tables: &Tables) -> Snapshot {
    let of = |table: Table| -> Vec<SegmentMeta> {
        tables
            .segments
            .iter()
            .chain(&tables.others)
            .filter(|s| s.table == table)
            .cloned()
            .collect()
    };
    Snapshot {
        hot: tables.hot.iter().map(|h| h.batch.clone()).collect(),
        segments: of(Table::Spans),
        hot_calls: tables.hot_calls.iter().map(|h| h.batch.clone()).collect(),
        hot_call_ids: tables.hot_calls.iter().map(|h| h.id).collect(),
        call_segments: of(Table::Calls),
        call_origins: tables.call_origins.clone(),
    }
}

/// Writes a group to the WAL; returns the sequence number of its first batch.
fn write_group(shared: &Shared, group: &[Append]) -> Result<u64> {
    let Some(wal) = &shared.wal else {
        return Err(StoreError::Config("a reader has no write-ahead log".into()));
    };
    let mut wal = wal.lock().expect("not poisoned");
    let first_seq = wal.last_seq() + 1;
    let started = Instant::now();
    wal.append(
        group
            .iter()
            .enumerate()
            .map(|(offset, a)| (first_seq + offset as u64, a.payload.as_slice())),
    )?;
    let metrics = &shared.metrics;
    metrics.wal_write_nanos.add_duration(started.elapsed());
    metrics.wal_records.add(group.len() as u64);
    metrics
        .wal_bytes
        .add(group.iter().map(|a| a.payload.len() as u64).sum());
    if shared.config.fsync == FsyncPolicy::Always {
        let started = Instant::now();
        wal.sync()?;
        metrics.wal_syncs.add(1);
        metrics.wal_sync_nanos.add_duration(started.elapsed());
    }
    Ok(first_seq)
}

#[cfg(test)]
mod tests;
