//! Parquet segments behind `object_store`, and the manifest that says which ones count.
//!
//! A segment holds the rows of one table for one UTC hour at
//! `<table>/dt=YYYY-MM-DD/hr=HH/<id>.parquet` (Hive-style, so DuckDB and pyarrow read the tree
//! as one table): spans in row groups each sorted by trace id then start time, the row groups
//! in the order the spans arrived; calls in runs sorted by start time, one per batch the
//! deriver made.
//!
//! Each node (a collector with its own data directory) writes files named with its node id
//! and its own manifest, `_callwatch/nodes/<node>/manifest.json`, so that several nodes can
//! share one bucket without two writers ever contending for one object. The manifest lists
//! the node's committed segments, the last WAL sequence number they contain and the call
//! pairer's state as of that number; a file of the node that it does not list is a leftover
//! of a crash and is deleted on start. A bucket written before node ids had one manifest,
//! `_callwatch/manifest.json`: the first node to start on it takes it over, with its files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{AsArray, RecordBatch, TimestampNanosecondArray};
use arrow::compute::interleave_record_batch;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::arrow_reader::{ArrowPredicateFn, ParquetRecordBatchReaderBuilder, RowFilter};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use crate::calls::parse_trace_id;
use crate::error::{Result, StoreError};
use crate::location::SegmentLocation;
use crate::schema;

const PENDING_PREFIX: &str = "_callwatch/pending";
const NODES_PREFIX: &str = "_callwatch/nodes";
/// Beside a node's manifest: what it learned of services (see `catalog`).
const CATALOG_FILE: &str = "catalog.json";
/// Beside the manifest of a node whose segments another took over.
const ADOPTED_FILE: &str = "adopted";
/// The one manifest of a bucket written before node ids.
const LEGACY_MANIFEST_PATH: &str = "_callwatch/manifest.json";
const NANOS_PER_HOUR: i64 = 3_600_000_000_000;
/// Rows per Parquet row group: small enough that a bloom filter and min/max on the sorted
/// `trace_id` pages prune well.
const ROW_GROUP_ROWS: usize = 64 * 1024;

/// The tables kept in segments.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    #[default]
    Spans,
    Calls,
}

impl Table {
    pub const ALL: [Table; 2] = [Table::Spans, Table::Calls];

    /// The table's name in SQL, and the top directory of its segments.
    pub fn name(self) -> &'static str {
        match self {
            Self::Spans => schema::SPANS_TABLE,
            Self::Calls => schema::CALLS_TABLE,
        }
    }

    pub fn schema(self) -> arrow::datatypes::SchemaRef {
        match self {
            Self::Spans => schema::spans_schema(),
            Self::Calls => schema::calls_schema(),
        }
    }
}

/// What the other nodes' manifests list.
#[derive(Debug, Default)]
pub struct OtherNodes {
    pub segments: Vec<SegmentMeta>,
    /// Their orphan files, by node, oldest first.
    pub orphans: BTreeMap<String, Vec<String>>,
    /// Their catalogs of services, as JSON.
    pub catalogs: Vec<Bytes>,
}

/// One committed Parquet file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentMeta {
    #[serde(default)]
    pub table: Table,
    /// Object path below the store root.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    /// The UTC hour (hours since the epoch) whose spans the file holds, by start time.
    pub hour: i64,
    pub min_start_ns: i64,
    pub max_start_ns: i64,
    /// Made by compaction from segments listed before: it holds no rows that were not
    /// already in the table. Readers that follow new rows skip it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub merged: bool,
}

impl SegmentMeta {
    /// Start of this segment's hour, in nanoseconds since the epoch.
    pub fn start_ns(&self) -> i64 {
        self.hour.saturating_mul(NANOS_PER_HOUR)
    }

    /// Start of the hour after this segment's, in nanoseconds since the epoch.
    pub fn end_ns(&self) -> i64 {
        (self.hour + 1).saturating_mul(NANOS_PER_HOUR)
    }
}

/// Which rows of a segment to read, decided from a few of its columns.
pub struct RowKeep {
    /// The columns `keep` is given.
    pub columns: Vec<String>,
    pub keep: Box<
        dyn FnMut(
                RecordBatch,
            )
                -> std::result::Result<arrow::array::BooleanArray, arrow::error::ArrowError>
            + Send,
    >,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Manifest {
    pub schema_version: u32,
    /// Every WAL record up to this sequence number is in `segments`.
    pub flushed_through_seq: u64,
    pub segments: Vec<SegmentMeta>,
    /// The call pairer's waiting halves as of `flushed_through_seq` (see `CallDeriver`): the
    /// index of which halves still wait...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<String>,
    /// ...and the file of each part it names, by part id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pending_parts: BTreeMap<u64, String>,
    /// Files of halves this node's pairer left alone for the other nodes sharing the bucket
    /// (`CallDeriver::take_orphans`), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orphans: Vec<String>,
    /// The last orphan file of each other node whose halves this node's calls include.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub remote_through: BTreeMap<String, String>,
}

/// Where segments and the manifest live (any `object_store`), and the pairer's waiting
/// halves (always the local data directory, beside the WAL they go with). Written files are
/// fsynced where the store is the local disk.
#[derive(Debug, Clone)]
pub struct SegmentStore {
    objects: Arc<dyn ObjectStore>,
    /// The directory behind `objects` when it is a local file system.
    local_root: Option<PathBuf>,
    local: Arc<dyn ObjectStore>,
    local_dir: PathBuf,
    node: String,
    manifest_path: String,
    /// Whether segments are in the data directory itself, where every file is this node's.
    in_data_dir: bool,
    zstd_level: i32,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// `<time>-<node>-<pid>-<counter>`: time first so names sort by age; the node tells whose
/// file it is; pid and counter keep names of one node's writers apart.
fn file_id(node: &str) -> String {
    let now = Utc::now();
    let counter = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    format!(
        "{}-{node}-{:08x}-{counter:06}",
        now.format("%Y%m%dT%H%M%S%.6f"),
        std::process::id()
    )
}

/// When the file at `path` was written, from its name; `None` for a name it cannot tell.
pub fn written_at(path: &str) -> Option<DateTime<Utc>> {
    let name = path.rsplit('/').next()?;
    let time = name.split('-').next()?;
    chrono::NaiveDateTime::parse_from_str(time, "%Y%m%dT%H%M%S%.6f")
        .ok()
        .map(|time| time.and_utc())
}

/// The node whose file `path` is, or `None` for a name from before node ids.
fn node_of(path: &str) -> Option<&str> {
    let name = path.rsplit('/').next()?;
    let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
    let mut parts = stem.rsplitn(3, '-');
    let (_counter, _pid, rest) = (parts.next()?, parts.next()?, parts.next()?);
    let (_time, node) = rest.split_once('-')?;
    Some(node)
}

/// Whether `node` can name a node: letters, digits, `_` and `-`, at most 64.
pub fn valid_node_id(node: &str) -> bool {
    !node.is_empty()
        && node.len() <= 64
        && node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl SegmentStore {
    /// The segments of `node` at `location`, its waiting halves in `data_dir`.
    pub fn new(location: SegmentLocation, data_dir: &Path, node: &str) -> Result<Self> {
        Ok(Self {
            in_data_dir: location.local_root.as_deref() == Some(data_dir),
            objects: location.objects,
            local_root: location.local_root,
            local: Arc::new(LocalFileSystem::new_with_prefix(data_dir)?),
            local_dir: data_dir.to_path_buf(),
            node: node.to_string(),
            manifest_path: format!("{NODES_PREFIX}/{node}/manifest.json"),
            zstd_level: 3,
        })
    }

    /// A reader of every node's segments at `location` that writes nothing: a query node's.
    pub fn reader(location: SegmentLocation) -> Self {
        Self {
            in_data_dir: false,
            local: location.objects.clone(),
            objects: location.objects,
            local_root: location.local_root,
            local_dir: PathBuf::new(),
            // No node is named "": every node's manifest is another's.
            node: String::new(),
            manifest_path: String::new(),
            zstd_level: 3,
        }
    }

    /// The object store segment paths are relative to.
    pub fn objects(&self) -> Arc<dyn ObjectStore> {
        self.objects.clone()
    }

    /// This node's manifest; on a bucket written before node ids, the one manifest there,
    /// which this node takes over (saved as its own, the old one deleted).
    pub async fn load_manifest(&self) -> Result<Manifest> {
        let adopted = format!("{NODES_PREFIX}/{}/{ADOPTED_FILE}", self.node);
        if let Some(adopted) = self.read_object(&adopted).await? {
            return Err(StoreError::Config(format!(
                "node {:?} was adopted ({}): its segments belong to another node now; start \
                 this collector with another --node-id and an empty data directory",
                self.node,
                String::from_utf8_lossy(&adopted).trim()
            )));
        }
        if let Some(manifest) = self.read_manifest(&self.manifest_path).await? {
            return Ok(manifest);
        }
        let Some(manifest) = self.read_manifest(LEGACY_MANIFEST_PATH).await? else {
            return Ok(Manifest {
                schema_version: schema::SCHEMA_VERSION,
                ..Manifest::default()
            });
        };
        tracing::info!(
            node = %self.node,
            segments = manifest.segments.len(),
            "taking over the manifest of a bucket written before node ids"
        );
        self.save_manifest(&manifest).await?;
        delete_quietly(&self.objects, LEGACY_MANIFEST_PATH).await?;
        Ok(manifest)
    }

    /// What the manifests of every other node writing this bucket list, each segment once
    /// (while a node is being adopted, two manifests list its segments), and their catalogs
    /// (see [`SegmentStore::save_catalog`]).
    pub async fn other_nodes(&self) -> Result<OtherNodes> {
        let mut others = OtherNodes::default();
        let mut seen = std::collections::HashSet::new();
        for node in self.other_node_names().await? {
            let catalog = format!("{NODES_PREFIX}/{node}/{CATALOG_FILE}");
            others.catalogs.extend(self.read_object(&catalog).await?);
            let path = format!("{NODES_PREFIX}/{node}/manifest.json");
            if let Some(manifest) = self.read_manifest(&path).await? {
                others.segments.extend(
                    manifest
                        .segments
                        .into_iter()
                        .filter(|s| seen.insert(s.path.clone())),
                );
                if !manifest.orphans.is_empty() {
                    others.orphans.insert(node, manifest.orphans);
                }
            }
        }
        Ok(others)
    }

    /// Writes halves this node's pairer left alone, for the other nodes; returns the path.
    pub async fn write_orphans(&self, bytes: Vec<u8>) -> Result<String> {
        let path = format!(
            "{NODES_PREFIX}/{}/orphans/{}.bin",
            self.node,
            file_id(&self.node)
        );
        put_durable(
            &self.objects,
            self.local_root.as_deref(),
            &path,
            Bytes::from(bytes),
        )
        .await?;
        Ok(path)
    }

    /// Another node's orphans, or `None` when they are gone (kept a while only).
    pub async fn read_orphans(&self, path: &str) -> Result<Option<Bytes>> {
        self.read_object(path).await
    }

    pub async fn delete_orphans(&self, path: &str) -> Result<()> {
        delete_quietly(&self.objects, path).await
    }

    /// The nodes other than this one that have written this bucket.
    async fn other_node_names(&self) -> Result<Vec<String>> {
        let listed = self
            .objects
            .list_with_delimiter(Some(&ObjectPath::from(NODES_PREFIX)))
            .await?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|dir| dir.filename())
            .filter(|node| *node != self.node)
            .map(str::to_string)
            .collect())
    }

    /// Keeps this node's catalog of services in the bucket, beside its manifest, for readers
    /// on other machines.
    pub async fn save_catalog(&self, json: Vec<u8>) -> Result<()> {
        let path = format!("{NODES_PREFIX}/{}/{CATALOG_FILE}", self.node);
        put_durable(
            &self.objects,
            self.local_root.as_deref(),
            &path,
            Bytes::from(json),
        )
        .await
    }

    /// Makes the segments of node `gone` this node's: its manifest lists them from now on
    /// (compaction and retention included), `gone`'s manifest is deleted, and `gone` is marked
    /// adopted so that a collector still using its name refuses to start rather than delete
    /// files it no longer lists. Safe to run again after a failure: a segment is taken once.
    /// Returns how many segments were taken.
    pub async fn adopt(&self, gone: &str, manifest: &mut Manifest) -> Result<usize> {
        if gone == self.node {
            return Err(StoreError::Config(format!(
                "node {gone:?} is this data directory's own node"
            )));
        }
        if !valid_node_id(gone) {
            return Err(StoreError::Config(format!("{gone:?} is not a node id")));
        }
        let path = format!("{NODES_PREFIX}/{gone}/manifest.json");
        let Some(theirs) = self.read_manifest(&path).await? else {
            return Err(StoreError::Config(format!(
                "no node {gone:?} writes this bucket (no {path})"
            )));
        };
        if theirs.pending.is_some() {
            tracing::warn!(
                node = gone,
                "the halves that node had waiting are in its data directory, not the bucket: \
                 calls they were part of are not derived"
            );
        }
        let marker = format!(
            "adopted by {} at {}\n",
            self.node,
            Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
        );
        put_durable(
            &self.objects,
            self.local_root.as_deref(),
            &format!("{NODES_PREFIX}/{gone}/{ADOPTED_FILE}"),
            Bytes::from(marker),
        )
        .await?;
        let mine: std::collections::HashSet<String> =
            manifest.segments.iter().map(|s| s.path.clone()).collect();
        let mut next = manifest.clone();
        next.segments.extend(
            theirs
                .segments
                .into_iter()
                .filter(|s| !mine.contains(&s.path)),
        );
        let taken = next.segments.len() - manifest.segments.len();
        self.save_manifest(&next).await?;
        *manifest = next;
        delete_quietly(&self.objects, &path).await?;
        delete_quietly(
            &self.objects,
            &format!("{NODES_PREFIX}/{gone}/{CATALOG_FILE}"),
        )
        .await?;
        Ok(taken)
    }

    async fn read_object(&self, path: &str) -> Result<Option<Bytes>> {
        match self.objects.get(&ObjectPath::from(path)).await {
            Ok(result) => Ok(Some(result.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    async fn read_manifest(&self, path: &str) -> Result<Option<Manifest>> {
        let Some(bytes) = self.read_object(path).await? else {
            return Ok(None);
        };
        let manifest: Manifest = serde_json::from_slice(&bytes)?;
        if manifest.schema_version != schema::SCHEMA_VERSION {
            return Err(StoreError::Corrupt(format!(
                "{path} has schema version {}, this build reads {}",
                manifest.schema_version,
                schema::SCHEMA_VERSION
            )));
        }
        Ok(Some(manifest))
    }

    /// Replaces the manifest atomically (object stores replace whole objects).
    pub async fn save_manifest(&self, manifest: &Manifest) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(manifest)?;
        put_durable(
            &self.objects,
            self.local_root.as_deref(),
            &self.manifest_path,
            Bytes::from(bytes),
        )
        .await
    }

    /// Deletes this node's segment files that its manifest does not list, and the
    /// pending-state files (all this node's: they are in its data directory) it does not
    /// name. In a bucket, a file not named by a node (from before node ids) is the node's
    /// only while its manifest lists such files (it took over the bucket's old manifest):
    /// other nodes never touch them.
    pub async fn remove_orphans(&self, manifest: &Manifest) -> Result<usize> {
        let mut listed: std::collections::HashSet<&str> =
            manifest.segments.iter().map(|s| s.path.as_str()).collect();
        listed.extend(manifest.pending.as_deref());
        listed.extend(manifest.pending_parts.values().map(String::as_str));
        let owns_unnamed = manifest.segments.iter().any(|s| node_of(&s.path).is_none());
        let mut removed = 0;
        listed.extend(manifest.orphans.iter().map(String::as_str));
        let orphans = format!("{NODES_PREFIX}/{}/orphans", self.node);
        let places = Table::ALL
            .map(|table| (&self.objects, table.name(), self.in_data_dir))
            .into_iter()
            .chain([
                (&self.local, PENDING_PREFIX, true),
                (&self.objects, orphans.as_str(), true),
            ]);
        for (objects, prefix, all_mine) in places {
            let prefix = ObjectPath::from(prefix);
            let found: Vec<_> = objects.list(Some(&prefix)).try_collect().await?;
            for object in found {
                let path = object.location.as_ref();
                let mine = all_mine || node_of(path).map_or(owns_unnamed, |node| node == self.node);
                if mine && !listed.contains(path) {
                    tracing::warn!(path = %object.location, "removing a file not in the manifest");
                    objects.delete(&object.location).await?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Writes the index of the call pairer's waiting halves into the data directory; returns
    /// its path for the manifest.
    pub async fn write_pending(&self, bytes: Vec<u8>) -> Result<String> {
        let path = format!("{PENDING_PREFIX}/{}.bin", file_id(&self.node));
        self.put_pending(path, bytes).await
    }

    /// Writes part `id` of the call pairer's waiting halves into the data directory; returns
    /// its path for the manifest.
    pub async fn write_pending_part(&self, id: u64, bytes: Vec<u8>) -> Result<String> {
        let path = format!("{PENDING_PREFIX}/{}-part{id}.bin", file_id(&self.node));
        self.put_pending(path, bytes).await
    }

    async fn put_pending(&self, path: String, bytes: Vec<u8>) -> Result<String> {
        put_durable(
            &self.local,
            Some(&self.local_dir),
            &path,
            Bytes::from(bytes),
        )
        .await?;
        Ok(path)
    }

    /// The call pairer's state the manifest names, or `None` when this data directory does
    /// not hold it (a new disk under a bucket that another one filled).
    pub async fn read_pending(&self, path: &str) -> Result<Option<Vec<u8>>> {
        match self.local.get(&ObjectPath::from(path)).await {
            Ok(result) => Ok(Some(result.bytes().await?.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    pub async fn delete_pending(&self, path: &str) -> Result<()> {
        delete_quietly(&self.local, path).await
    }

    /// Orders `batches` of `table` (see the module's note) and writes one segment per UTC hour
    /// of their start times.
    pub async fn write(&self, table: Table, batches: Vec<RecordBatch>) -> Result<Vec<SegmentMeta>> {
        let level = self.zstd_level;
        let node = self.node.clone();
        let encoded =
            tokio::task::spawn_blocking(move || encode_segments(table, &batches, level, &node))
                .await??;
        let mut metas = Vec::with_capacity(encoded.len());
        for (meta, bytes) in encoded {
            put_durable(&self.objects, self.local_root.as_deref(), &meta.path, bytes).await?;
            metas.push(meta);
        }
        Ok(metas)
    }

    pub async fn read(&self, meta: &SegmentMeta) -> Result<Vec<RecordBatch>> {
        self.read_columns(meta, None).await
    }

    /// Reads the named columns of a segment (those it has), or all of them with `None`:
    /// the others are not decoded.
    pub async fn read_columns(
        &self,
        meta: &SegmentMeta,
        columns: Option<&[&str]>,
    ) -> Result<Vec<RecordBatch>> {
        self.read_columns_where(meta, columns, None).await
    }

    /// The rows of a segment that `keep` keeps: it is given each batch of its own columns
    /// first, and the other columns are decoded only for the rows it keeps.
    pub async fn read_columns_where(
        &self,
        meta: &SegmentMeta,
        columns: Option<&[&str]>,
        keep: Option<RowKeep>,
    ) -> Result<Vec<RecordBatch>> {
        let bytes = self
            .objects
            .get(&ObjectPath::from(meta.path.as_str()))
            .await?
            .bytes()
            .await?;
        let columns: Option<Vec<String>> =
            columns.map(|names| names.iter().map(|name| name.to_string()).collect());
        tokio::task::spawn_blocking(move || {
            let mut builder =
                ParquetRecordBatchReaderBuilder::try_new(bytes)?.with_batch_size(8192);
            if let Some(columns) = columns {
                let schema = builder.schema().clone();
                let indices = columns.iter().filter_map(|name| schema.index_of(name).ok());
                let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
                builder = builder.with_projection(mask);
            }
            if let Some(RowKeep { columns, keep }) = keep {
                let schema = builder.schema().clone();
                let indices = columns.iter().filter_map(|name| schema.index_of(name).ok());
                let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
                let predicate = ArrowPredicateFn::new(mask, keep);
                builder = builder.with_row_filter(RowFilter::new(vec![Box::new(predicate)]));
            }
            builder
                .build()?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(StoreError::from)
        })
        .await?
    }

    pub async fn delete(&self, meta: &SegmentMeta) -> Result<()> {
        delete_quietly(&self.objects, &meta.path).await
    }
}

/// Deletes `path`; one already gone is not an error.
async fn delete_quietly(objects: &Arc<dyn ObjectStore>, path: &str) -> Result<()> {
    match objects.delete(&ObjectPath::from(path)).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Writes a whole object; on the local disk (`local_root`), also fsyncs it.
async fn put_durable(
    objects: &Arc<dyn ObjectStore>,
    local_root: Option<&Path>,
    path: &str,
    bytes: Bytes,
) -> Result<()> {
    objects
        .put(&ObjectPath::from(path), PutPayload::from(bytes))
        .await?;
    // object_store renames a finished temp file into place but does not fsync it.
    if let Some(root) = local_root {
        let file = root.join(path);
        tokio::task::spawn_blocking(move || -> Result<()> {
            std::fs::File::open(&file)?.sync_all()?;
            if let Some(dir) = file.parent() {
                crate::wal::sync_dir(dir)?;
            }
            Ok(())
        })
        .await??;
    }
    Ok(())
}

fn start_times(batch: &RecordBatch) -> Result<&TimestampNanosecondArray> {
    batch
        .column_by_name(schema::START_TIME)
        .and_then(|column| column.as_any().downcast_ref::<TimestampNanosecondArray>())
        .ok_or_else(|| StoreError::Schema(format!("no {} column", schema::START_TIME)))
}

/// Where a span goes: its hour, then trace id, then start time; and where it comes from.
#[derive(Clone, Copy)]
struct RowKey {
    hour: i64,
    trace: u128,
    start: i64,
    batch: u32,
    row: u32,
}

/// Pure CPU work of a flush or compaction: one Parquet file per UTC hour of the rows' start
/// times.
fn encode_segments(
    table: Table,
    batches: &[RecordBatch],
    zstd_level: i32,
    node: &str,
) -> Result<Vec<(SegmentMeta, Bytes)>> {
    match table {
        Table::Spans => encode_spans(batches, zstd_level, node),
        Table::Calls => encode_calls(batches, zstd_level, node),
    }
}

/// Spans by hour, each row group's by (trace id, start time). Rows are gathered one row
/// group at a time, so the extra memory is a row group, not a copy of everything.
fn encode_spans(
    batches: &[RecordBatch],
    zstd_level: i32,
    node: &str,
) -> Result<Vec<(SegmentMeta, Bytes)>> {
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut keys = Vec::with_capacity(total);
    for (batch_index, batch) in batches.iter().enumerate() {
        let starts = start_times(batch)?;
        let traces = batch
            .column_by_name(schema::TRACE_ID)
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| StoreError::Schema(format!("no {} column", schema::TRACE_ID)))?;
        for row in 0..batch.num_rows() {
            let start = starts.value(row);
            keys.push(RowKey {
                hour: start.div_euclid(NANOS_PER_HOUR),
                // Lowercase hex of equal length sorts like the number it spells.
                trace: parse_trace_id(traces.value(row)).unwrap_or(u128::MAX),
                start,
                batch: batch_index as u32,
                row: row as u32,
            });
        }
    }
    // Each row group in trace-id order, the row groups in the order spans arrived: a
    // look-up is pruned by each row group's bloom filter, then by its pages' min/max, and
    // gathering a row group reads from the few batches it came from, not from all.
    keys.sort_by_key(|k| k.hour);
    for hour in keys.chunk_by_mut(|a, b| a.hour == b.hour) {
        for group in hour.chunks_mut(ROW_GROUP_ROWS) {
            group.sort_unstable_by_key(|k| (k.trace, k.start));
        }
    }
    let sources: Vec<&RecordBatch> = batches.iter().collect();
    keys.chunk_by(|a, b| a.hour == b.hour)
        .map(|rows| {
            let mut indices = Vec::with_capacity(ROW_GROUP_ROWS.min(rows.len()));
            let groups = rows.chunks(ROW_GROUP_ROWS).map(|chunk| {
                indices.clear();
                indices.extend(chunk.iter().map(|k| (k.batch as usize, k.row as usize)));
                Ok(interleave_record_batch(&sources, &indices)?)
            });
            let starts = rows.iter().map(|k| k.start);
            let span = (
                starts.clone().min().unwrap_or_default(),
                starts.max().unwrap_or_default(),
            );
            encode_one(
                Table::Spans,
                rows[0].hour,
                rows.len(),
                span,
                groups,
                zstd_level,
                node,
            )
        })
        .collect()
}

/// Calls by hour, each batch's rows in start order. The deriver makes its batches so, and
/// the batches of a flush cover the same few seconds: the slices of each hour are written as
/// they are instead of being gathered into one order, which would copy every row again.
fn encode_calls(
    batches: &[RecordBatch],
    zstd_level: i32,
    node: &str,
) -> Result<Vec<(SegmentMeta, Bytes)>> {
    // Per hour: the slices, their rows, and the first and last start times.
    let mut hours: BTreeMap<i64, (Vec<RecordBatch>, usize, i64, i64)> = BTreeMap::new();
    for batch in batches {
        let batch = in_start_order(batch)?;
        let starts = start_times(&batch)?.values();
        let hour_of = |start: &i64| start.div_euclid(NANOS_PER_HOUR);
        let mut offset = 0;
        for run in starts.chunk_by(|a, b| hour_of(a) == hour_of(b)) {
            let (first, last) = (run[0], run[run.len() - 1]);
            let (slices, rows, min, max) =
                hours
                    .entry(hour_of(&first))
                    .or_insert((Vec::new(), 0, i64::MAX, i64::MIN));
            slices.push(batch.slice(offset, run.len()));
            *rows += run.len();
            (*min, *max) = ((*min).min(first), (*max).max(last));
            offset += run.len();
        }
    }
    hours
        .into_iter()
        .map(|(hour, (slices, rows, min, max))| {
            let parts = slices.into_iter().map(Ok);
            encode_one(
                Table::Calls,
                hour,
                rows,
                (min, max),
                parts,
                zstd_level,
                node,
            )
        })
        .collect()
}

/// `batch` with its rows in start order: itself when they are already (a batch the deriver
/// made), sorted otherwise (calls read back from segments written in another order).
fn in_start_order(batch: &RecordBatch) -> Result<RecordBatch> {
    let starts = start_times(batch)?;
    if starts.values().is_sorted() {
        return Ok(batch.clone());
    }
    let order = arrow::compute::sort_to_indices(starts, None, None)?;
    Ok(arrow::compute::take_record_batch(batch, &order)?)
}

fn writer_properties(table: Table, zstd_level: i32, rows: usize) -> Result<WriterProperties> {
    if table == Table::Calls {
        return calls_writer_properties(zstd_level);
    }
    let path = |name: &str| ColumnPath::from(name);
    let builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(zstd_level)?))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        // Statistics cost a comparison per value: keep them where queries prune (time,
        // service, names), page-level on the sorted trace id, and skip nested attributes.
        .set_statistics_enabled(EnabledStatistics::None)
        .set_column_statistics_enabled(path(schema::TRACE_ID), EnabledStatistics::Page)
        .set_key_value_metadata(Some(vec![KeyValue::new(
            "callwatch.schema_version".to_string(),
            schema::SCHEMA_VERSION.to_string(),
        )]))
        .set_column_bloom_filter_enabled(path(schema::TRACE_ID), true)
        .set_column_bloom_filter_fpp(path(schema::TRACE_ID), 0.01)
        .set_column_bloom_filter_max_ndv(path(schema::TRACE_ID), rows.min(ROW_GROUP_ROWS) as u64);
    let builder = [
        schema::START_TIME,
        schema::END_TIME,
        schema::DURATION_NS,
        schema::SERVICE_NAME,
        schema::SPAN_NAME,
        schema::SPAN_KIND,
        schema::STATUS_CODE,
    ]
    .into_iter()
    .fold(builder, |b, name| {
        b.set_column_statistics_enabled(path(name), EnabledStatistics::Chunk)
    });
    let builder = random_ids(builder, &[schema::SPAN_ID, schema::PARENT_SPAN_ID])?;
    // The trace id repeats within a trace, so it keeps its dictionary: of random hex too.
    let builder = builder.set_column_compression(path(schema::TRACE_ID), ids_compression()?);
    // Times grow within a trace.
    let builder = [schema::START_TIME, schema::END_TIME, schema::DURATION_NS]
        .into_iter()
        .fold(builder, |b, name| {
            b.set_column_dictionary_enabled(path(name), false)
                .set_column_encoding(path(name), Encoding::DELTA_BINARY_PACKED)
        });
    Ok(builder.build())
}

/// Calls are sorted by time and read by time window: statistics on the start time prune,
/// and on the other columns (each row group holds every edge) they would only cost a
/// comparison per value.
fn calls_writer_properties(zstd_level: i32) -> Result<WriterProperties> {
    let path = |name: &str| ColumnPath::from(name);
    let builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(zstd_level)?))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::None)
        .set_column_statistics_enabled(path(schema::START_TIME), EnabledStatistics::Page)
        .set_key_value_metadata(Some(vec![KeyValue::new(
            "callwatch.schema_version".to_string(),
            schema::SCHEMA_VERSION.to_string(),
        )]));
    let builder = random_ids(
        builder,
        &[
            schema::TRACE_ID,
            schema::CLIENT_SPAN_ID,
            schema::SERVER_SPAN_ID,
        ],
    )?;
    let builder = delta_encoded(builder, &[schema::START_TIME]);
    Ok(builder.build())
}

/// Random hex ids never repeat, so a dictionary only costs time; and zstd's level 1 packs
/// them as tightly as level 3 (about twice, what hex leaves to take) at two to four times
/// the speed.
fn random_ids(
    builder: parquet::file::properties::WriterPropertiesBuilder,
    names: &[&str],
) -> Result<parquet::file::properties::WriterPropertiesBuilder> {
    names.iter().try_fold(builder, |b, name| {
        Ok(
            b.set_column_dictionary_enabled(ColumnPath::from(*name), false)
                .set_column_compression(ColumnPath::from(*name), ids_compression()?),
        )
    })
}

fn ids_compression() -> Result<Compression> {
    Ok(Compression::ZSTD(ZstdLevel::try_new(1)?))
}

fn delta_encoded(
    builder: parquet::file::properties::WriterPropertiesBuilder,
    names: &[&str],
) -> parquet::file::properties::WriterPropertiesBuilder {
    names.iter().fold(builder, |b, name| {
        b.set_column_dictionary_enabled(ColumnPath::from(*name), false)
            .set_column_encoding(ColumnPath::from(*name), Encoding::DELTA_BINARY_PACKED)
    })
}

/// One segment of `table` for `hour`: `rows` rows with start times in `span` (min, max),
/// written as `parts` come.
fn encode_one(
    table: Table,
    hour: i64,
    rows: usize,
    span: (i64, i64),
    parts: impl Iterator<Item = Result<RecordBatch>>,
    zstd_level: i32,
    node: &str,
) -> Result<(SegmentMeta, Bytes)> {
    let props = writer_properties(table, zstd_level, rows)?;
    let mut buffer = Vec::with_capacity(rows * 48);
    let mut writer = ArrowWriter::try_new(&mut buffer, table.schema(), Some(props))?;
    for part in parts {
        writer.write(&part?)?;
    }
    writer.close()?;

    let hour_start = DateTime::<Utc>::from_timestamp_nanos(hour.saturating_mul(NANOS_PER_HOUR));
    let path = format!(
        "{}/dt={}/hr={}/{}.parquet",
        table.name(),
        hour_start.format("%Y-%m-%d"),
        hour_start.format("%H"),
        file_id(node)
    );
    let meta = SegmentMeta {
        table,
        path,
        rows: rows as u64,
        bytes: buffer.len() as u64,
        hour,
        min_start_ns: span.0,
        max_start_ns: span.1,
        merged: false,
    };
    Ok((meta, Bytes::from(buffer)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spans `first..first + count` of one hour, with trace ids in no order.
    fn spans(first: u64, count: u64) -> RecordBatch {
        let mut builder = crate::SpansBuilder::with_capacity(count as usize);
        for n in first..first + count {
            let trace_id = format!("{:032x}", u128::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            builder
                .append(&crate::SpanRow {
                    trace_id: &trace_id,
                    span_id: &format!("{:016x}", n + 1),
                    service_name: "a",
                    span_name: "GET /",
                    span_kind: "SERVER",
                    start_ns: 1_795_000_000_000_000_000 + n as i64,
                    end_ns: 1_795_000_000_000_000_000 + n as i64 + 1_000,
                    status_code: "UNSET",
                    ..crate::SpanRow::default()
                })
                .unwrap();
        }
        builder.finish().unwrap()
    }

    fn trace_ids(batches: &[RecordBatch]) -> Vec<String> {
        batches
            .iter()
            .flat_map(|b| {
                let ids = b
                    .column_by_name(schema::TRACE_ID)
                    .unwrap()
                    .as_string::<i32>();
                ids.iter()
                    .map(|id| id.unwrap().to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn each_row_group_of_spans_is_in_trace_id_order_and_holds_the_spans_that_came_together() {
        let per_batch = 1_000;
        let batches: Vec<RecordBatch> = (0..70).map(|b| spans(b * per_batch, per_batch)).collect();
        let written = encode_segments(Table::Spans, &batches, 1, "a").unwrap();
        assert_eq!(written.len(), 1, "one hour");
        let reader = |groups: Vec<usize>| {
            ParquetRecordBatchReaderBuilder::try_new(written[0].1.clone())
                .unwrap()
                .with_row_groups(groups)
                .build()
                .unwrap()
                .collect::<std::result::Result<Vec<_>, _>>()
                .unwrap()
        };
        let first = trace_ids(&reader(vec![0]));
        let second = trace_ids(&reader(vec![1]));
        assert_eq!(first.len(), ROW_GROUP_ROWS);
        assert_eq!(first.len() + second.len(), 70_000);
        assert!(first.is_sorted() && second.is_sorted());
        // The first row group holds exactly the first spans to arrive.
        let mut arrived = trace_ids(&batches);
        let later = arrived.split_off(ROW_GROUP_ROWS);
        arrived.sort();
        assert_eq!(first, arrived);
        assert!(later.iter().all(|id| second.contains(id)));
    }

    /// Calls starting at `starts`, told apart by their trace ids.
    fn calls(starts: &[i64]) -> RecordBatch {
        let rows: Vec<crate::CallRow> = starts
            .iter()
            .enumerate()
            .map(|(n, &start_ns)| crate::CallRow {
                trace_id: n as u128 + 1,
                client_duration_ns: Some(1),
                ..crate::CallRow::between(start_ns, "a", "a")
            })
            .collect();
        crate::calls_batch(&rows)
    }

    fn starts_of(segment: &Bytes) -> Vec<i64> {
        ParquetRecordBatchReaderBuilder::try_new(segment.clone())
            .unwrap()
            .build()
            .unwrap()
            .flat_map(|batch| start_times(&batch.unwrap()).unwrap().values().to_vec())
            .collect()
    }

    #[test]
    fn calls_are_written_in_runs_in_start_order_one_segment_per_hour() {
        let hour = 1_795_000_000_000_000_000 / NANOS_PER_HOUR * NANOS_PER_HOUR + NANOS_PER_HOUR;
        // As the deriver makes them, straddling an hour; then one in no order, as a
        // segment written in another order reads back.
        let in_order = calls(&[hour - 20, hour - 10, hour, hour + 30]);
        let out_of_order = calls(&[hour + 5, hour - 30, hour + 1, hour - 5]);
        let written = encode_segments(Table::Calls, &[in_order, out_of_order], 1, "a").unwrap();

        assert_eq!(written.len(), 2, "one segment per hour");
        let (before, after) = (&written[0], &written[1]);
        assert_eq!(
            starts_of(&before.1),
            vec![hour - 20, hour - 10, hour - 30, hour - 5]
        );
        assert_eq!(
            starts_of(&after.1),
            vec![hour, hour + 30, hour + 1, hour + 5]
        );
        assert_eq!((before.0.rows, after.0.rows), (4, 4));
        assert_eq!(
            (before.0.min_start_ns, before.0.max_start_ns),
            (hour - 30, hour - 5)
        );
        assert_eq!(
            (after.0.min_start_ns, after.0.max_start_ns),
            (hour, hour + 30)
        );
        assert_eq!(
            (before.0.hour, after.0.hour),
            (hour / NANOS_PER_HOUR - 1, hour / NANOS_PER_HOUR)
        );
        assert!(before.0.path.starts_with("calls/") && after.0.path.contains("/hr="));
    }

    #[test]
    fn a_file_name_tells_its_node() {
        let name = |node: &str| format!("spans/dt=2026-11-27/hr=08/{}.parquet", file_id(node));
        assert_eq!(node_of(&name("node-3f2a")), Some("node-3f2a"));
        assert_eq!(node_of(&name("a")), Some("a"));
        assert_eq!(
            node_of("_callwatch/pending/20261127T080000.123456-b-0000002a-000007.bin"),
            Some("b")
        );
        // Named before node ids.
        assert_eq!(
            node_of("spans/dt=2026-11-27/hr=08/20261127T080000.123456-0000046f-000005.parquet"),
            None
        );
        assert!(valid_node_id("collector-2_eu") && !valid_node_id("a/b"));
        assert!(!valid_node_id("") && !valid_node_id(&"x".repeat(65)));
    }
}
