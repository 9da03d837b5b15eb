//! The graph's statistics of a long window as a distributed aggregation over `calls`: per
//! edge, the counts and instance sets, and the durations counted in the same buckets as
//! [`crate::stats::Histogram`]. Put back together here, they are exactly the statistics
//! the local graph reads call by call, so both graphs show the same percentiles.

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};
use callwatch_storage::{CallType, Interner, NodeKind, call_rows, schema};
use datafusion::common::ScalarValue;
use datafusion::prelude::{col, lit};

use crate::cluster::Cluster;
use crate::engine::{QueryEngine, QueryOutput};
use crate::error::QueryError;
use crate::graph::Window;
use crate::rollup::{EdgeKey, EdgeStats, Rollup};
use crate::stats::{Accumulator, Counted, DurationKind, bucket_sql};

/// The calls of the window, as the aggregations below name them.
const WINDOW_CALLS: &str = "window_calls";

/// The edge's key columns, as [`EdgeKey::of`] keys a call.
const EDGE_COLUMNS: &str = "client, server, call_type, \
     CASE WHEN call_type = 'async' THEN destination END AS destination";

/// The statistics of every edge over `window`: segments aggregated on the cluster, and
/// calls not yet in segments (a `--role all` node's hot calls) added here.
pub(crate) async fn edge_stats(
    cluster: &Cluster,
    engine: &QueryEngine,
    window: Window,
) -> Result<Rollup, QueryError> {
    let snapshot = engine.store().snapshot();
    let edges = run(cluster, engine, &snapshot, window, &edges_sql()).await?;
    let mut rollup = Rollup::default();
    for batch in &edges.batches {
        add_edges(&mut rollup, batch)?;
    }
    // One job per kind, not one UNION ALL: Ballista 55's scheduler cannot take the task
    // statuses of a stage whose partitions run different plans (the union's inputs), and
    // such a job never ends.
    for (kind, duration) in DurationKind::ALL.iter().enumerate() {
        let buckets = run(
            cluster,
            engine,
            &snapshot,
            window,
            &buckets_sql(kind, *duration),
        )
        .await?;
        for batch in &buckets.batches {
            add_buckets(&mut rollup, batch)?;
        }
    }
    let mut names = Interner::default();
    for batch in &snapshot.hot_calls {
        let calls =
            call_rows(batch, &mut names).map_err(|e| QueryError::Execution(e.to_string()))?;
        for call in calls {
            if (window.from_ns..window.to_ns).contains(&call.start_ns) {
                rollup.add(&call);
            }
        }
    }
    Ok(rollup)
}

/// Runs `sql` over the calls of `window` on the cluster.
async fn run(
    cluster: &Cluster,
    engine: &QueryEngine,
    snapshot: &callwatch_storage::Snapshot,
    window: Window,
    sql: &str,
) -> Result<QueryOutput, QueryError> {
    let context = engine.planning_context()?;
    let time = |ns: i64| {
        lit(ScalarValue::TimestampNanosecond(
            Some(ns),
            Some("UTC".into()),
        ))
    };
    let calls = context.table(schema::CALLS_TABLE).await?.filter(
        col(schema::START_TIME)
            .gt_eq(time(window.from_ns))
            .and(col(schema::START_TIME).lt(time(window.to_ns))),
    )?;
    context.register_table(WINDOW_CALLS, calls.into_view())?;
    let plan = context.sql(sql).await?.into_unoptimized_plan();
    // Edges times buckets is bounded by the buckets (5,400 per histogram at most), not
    // by the calls: no row limit.
    cluster.run(engine, snapshot, plan, None).await
}

fn edges_sql() -> String {
    format!(
        "SELECT {EDGE_COLUMNS}, \
           max(server_kind) AS server_kind, \
           count(*) AS calls, \
           sum(CAST(failed AS BIGINT)) AS errors, \
           sum(CAST(retry AS BIGINT)) AS retries, \
           sum(CAST(timeout AS BIGINT)) AS timeouts, \
           CAST(min(start_time) AS BIGINT) AS first_ns, \
           array_agg(DISTINCT client_instance) FILTER (WHERE client_instance IS NOT NULL) AS client_instances, \
           array_agg(DISTINCT server_instance) FILTER (WHERE server_instance IS NOT NULL) AS server_instances, \
           CAST(max(start_time) FILTER (WHERE breaker_state IS NOT NULL) AS BIGINT) AS breaker_ns, \
           last_value(breaker_state ORDER BY start_time) FILTER (WHERE breaker_state IS NOT NULL) AS breaker_state \
         FROM {WINDOW_CALLS} GROUP BY 1, 2, 3, 4"
    )
}

/// The calls of each edge per bucket of the `duration` kind (number `kind`).
fn buckets_sql(kind: usize, duration: DurationKind) -> String {
    let column = duration.column();
    format!(
        "SELECT {EDGE_COLUMNS}, {kind} AS kind, CAST({} AS BIGINT) AS bucket, count(*) AS n \
         FROM {WINDOW_CALLS} WHERE {column} IS NOT NULL GROUP BY 1, 2, 3, 4, 5, 6",
        bucket_sql(column)
    )
}

/// A column of the cluster's answer, cast to `to` (strings may come back as views).
fn column(
    batch: &RecordBatch,
    name: &str,
    to: &DataType,
) -> Result<arrow::array::ArrayRef, QueryError> {
    let array = batch
        .column_by_name(name)
        .ok_or_else(|| QueryError::Execution(format!("the cluster's answer has no {name}")))?;
    arrow::compute::cast(array, to).map_err(|e| QueryError::Execution(e.to_string()))
}

fn text(batch: &RecordBatch, name: &str) -> Result<Vec<Option<Arc<str>>>, QueryError> {
    let array = column(batch, name, &DataType::Utf8)?;
    Ok(array
        .as_string::<i32>()
        .iter()
        .map(|v| v.map(Arc::from))
        .collect())
}

fn numbers(batch: &RecordBatch, name: &str) -> Result<Vec<Option<i64>>, QueryError> {
    let array = column(batch, name, &DataType::Int64)?;
    Ok(array.as_primitive::<Int64Type>().iter().collect())
}

fn name_lists(batch: &RecordBatch, name: &str) -> Result<Vec<Vec<Arc<str>>>, QueryError> {
    let to = DataType::List(Arc::new(arrow::datatypes::Field::new_list_field(
        DataType::Utf8,
        true,
    )));
    let array = column(batch, name, &to)?;
    let lists = array.as_list::<i32>();
    Ok((0..lists.len())
        .map(|row| {
            if lists.is_null(row) {
                return Vec::new();
            }
            let values = lists.value(row);
            values
                .as_string::<i32>()
                .iter()
                .flatten()
                .map(Arc::from)
                .collect()
        })
        .collect())
}

/// The edge keys of a batch's rows.
fn edge_keys(batch: &RecordBatch) -> Result<Vec<EdgeKey>, QueryError> {
    let clients = text(batch, schema::CLIENT)?;
    let servers = text(batch, schema::SERVER)?;
    let types = text(batch, schema::CALL_TYPE)?;
    let destinations = text(batch, schema::DESTINATION)?;
    (0..batch.num_rows())
        .map(|row| {
            let (Some(source), Some(target), Some(call_type)) =
                (&clients[row], &servers[row], &types[row])
            else {
                return Err(QueryError::Execution("a call without its edge".into()));
            };
            let call_type = CallType::parse(call_type)
                .ok_or_else(|| QueryError::Execution(format!("unknown call type {call_type:?}")))?;
            Ok(EdgeKey {
                source: source.clone(),
                target: target.clone(),
                call_type,
                destination: destinations[row].clone(),
            })
        })
        .collect()
}

fn add_edges(rollup: &mut Rollup, batch: &RecordBatch) -> Result<(), QueryError> {
    let keys = edge_keys(batch)?;
    let kinds = text(batch, schema::SERVER_KIND)?;
    let calls = numbers(batch, "calls")?;
    let errors = numbers(batch, "errors")?;
    let retries = numbers(batch, "retries")?;
    let timeouts = numbers(batch, "timeouts")?;
    let first = numbers(batch, "first_ns")?;
    let clients = name_lists(batch, "client_instances")?;
    let servers = name_lists(batch, "server_instances")?;
    let breaker_at = numbers(batch, "breaker_ns")?;
    let breaker = text(batch, "breaker_state")?;
    let count = |v: Option<i64>| u64::try_from(v.unwrap_or(0)).unwrap_or(0);
    for (row, key) in keys.into_iter().enumerate() {
        let server_kind = kinds[row]
            .as_deref()
            .and_then(NodeKind::parse)
            .ok_or_else(|| QueryError::Execution(format!("unknown node kind {:?}", kinds[row])))?;
        let counted = Counted {
            calls: count(calls[row]),
            errors: count(errors[row]),
            retries: count(retries[row]),
            timeouts: count(timeouts[row]),
            breaker: breaker_at[row].zip(breaker[row].clone()),
            first_ns: first[row],
        };
        rollup.edges.insert(
            key,
            EdgeStats {
                server_kind,
                calls: Accumulator::counted(counted),
                client_instances: clients[row].iter().cloned().collect(),
                server_instances: servers[row].iter().cloned().collect(),
            },
        );
    }
    Ok(())
}

fn add_buckets(rollup: &mut Rollup, batch: &RecordBatch) -> Result<(), QueryError> {
    let keys = edge_keys(batch)?;
    let kinds = numbers(batch, "kind")?;
    let buckets = numbers(batch, "bucket")?;
    let counts = numbers(batch, "n")?;
    for (row, key) in keys.into_iter().enumerate() {
        let kind = kinds[row]
            .and_then(|k| DurationKind::ALL.get(usize::try_from(k).ok()?).copied())
            .ok_or_else(|| QueryError::Execution("a bucket of no known duration".into()))?;
        let bucket = buckets[row]
            .and_then(|b| u32::try_from(b).ok())
            .ok_or_else(|| QueryError::Execution("a duration bucket out of range".into()))?;
        let Some(stats) = rollup.edges.get_mut(&key) else {
            return Err(QueryError::Execution(format!(
                "durations of an edge the cluster counted no calls of: {} → {}",
                key.source, key.target
            )));
        };
        stats
            .calls
            .durations_mut(kind)
            .add_bucket(bucket, u64::try_from(counts[row].unwrap_or(0)).unwrap_or(0));
    }
    Ok(())
}
