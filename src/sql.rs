//! `callwatch sql "SELECT ..."`: one query against a running server (its SQL API, answered
//! as Arrow) or straight against a data directory, printed as an aligned table.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use callwatch_collector::{GraphMetrics, Pairer, PairingConfig};
use callwatch_query::{Cluster, QueryEngine, QueryLimits};
use callwatch_storage::{SegmentLocation, Store, StoreConfig};

use crate::config::SqlArgs;

const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

pub async fn run(args: SqlArgs) -> anyhow::Result<()> {
    let (schema, batches) = match (args.ballista.cluster()?, &args.data_dir) {
        (Some(cluster), dir) => {
            on_cluster(cluster, dir.as_deref(), args.storage.as_deref(), &args.sql).await?
        }
        (None, Some(dir)) => from_data_dir(dir, args.storage.as_deref(), &args.sql).await?,
        (None, None) => {
            if args.storage.is_some() {
                bail!("--storage needs --data-dir or --ballista");
            }
            from_server(&args.server, &args.sql, args.token.read()?).await?
        }
    };
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let table = arrow::util::pretty::pretty_format_batches_with_schema(schema, &batches)?;
    println!("{table}");
    println!("({rows} {})", if rows == 1 { "row" } else { "rows" });
    Ok(())
}

async fn from_server(
    server: &str,
    sql: &str,
    token: Option<String>,
) -> anyhow::Result<(SchemaRef, Vec<RecordBatch>)> {
    let url = format!("{}/api/v1/sql", server.trim_end_matches('/'));
    let mut request = reqwest::Client::new().post(&url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(reqwest::header::ACCEPT, ARROW_STREAM)
        .body(sql.to_owned())
        .send()
        .await
        .with_context(|| format!("sending the query to {url}"))?;
    let status = response.status();
    let body = response.bytes().await.context("reading the answer")?;
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        bail!("{status}: {message}");
    }
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)
        .context("reading the Arrow answer")?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .context("reading the Arrow answer")?;
    Ok((schema, batches))
}

async fn from_data_dir(
    dir: &Path,
    storage: Option<&str>,
    sql: &str,
) -> anyhow::Result<(SchemaRef, Vec<RecordBatch>)> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let segments = storage
        .map(|url| SegmentLocation::parse(url, &[]))
        .transpose()
        .context("--storage")?;
    // Opening replays the WAL into memory; the store is dropped, not closed, so the
    // directory is left as it was found (no flush).
    // The pairer derives the calls of spans that are only in the WAL.
    let pairer = Pairer::new(PairingConfig::default(), Arc::new(GraphMetrics::default()));
    let config = StoreConfig {
        segments,
        ..StoreConfig::new(dir)
    };
    let store = Store::open_with(config, Some(Box::new(pairer)))
        .await
        .with_context(|| {
            format!(
                "opening {} (if a server runs on it, query the server with --server)",
                dir.display()
            )
        })?;
    store.calls_caught_up().await;
    let output = QueryEngine::new(store, QueryLimits::default())
        .sql(sql)
        .await?;
    Ok((output.schema, output.batches))
}

/// Runs the query on a Ballista cluster over the segments at `--storage` (or in the data
/// directory), as a query node would: read-only, nothing written.
async fn on_cluster(
    cluster: Cluster,
    dir: Option<&Path>,
    storage: Option<&str>,
    sql: &str,
) -> anyhow::Result<(SchemaRef, Vec<RecordBatch>)> {
    let segments = storage
        .map(|url| SegmentLocation::parse(url, &[]))
        .transpose()
        .context("--storage")?;
    let data_dir = match (dir, &segments) {
        (Some(dir), _) => dir.to_path_buf(),
        // A reader of a bucket keeps nothing in its data directory.
        (None, Some(_)) => std::env::temp_dir(),
        (None, None) => bail!("--ballista needs --storage (or --data-dir) to list the segments"),
    };
    let config = StoreConfig {
        segments,
        ..StoreConfig::new(data_dir)
    };
    let store = Store::open_reader(config)
        .await
        .context("reading the manifests")?;
    let engine = QueryEngine::new(store.clone(), QueryLimits::default()).with_cluster(cluster);
    if callwatch_query::reads_table(sql, callwatch_query::breakers::BREAKER_TRANSITIONS_TABLE) {
        // The transitions come from replaying the stored calls, as on a query node.
        engine.breakers().start(&store).await?;
    }
    let output = engine.sql(sql).await?;
    Ok((output.schema, output.batches))
}
