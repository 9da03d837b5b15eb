//! Distributed SQL on Apache DataFusion Ballista. Its scheduler and two executors run in this
//! process, as the `ballista-scheduler` and `ballista-executor` binaries run them, and read
//! the S3 bucket (moto's server) that a collector flushed the full demo recording into. A query node with `--ballista` answers a
//! fixed list of queries, over HTTP, Postgres and `callwatch sql`, and the long-window graph
//! exactly as a query node without it; statements it refuses never reach the scheduler; a
//! query over its time limit is cancelled on the cluster.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ballista_core::config::TaskSchedulingPolicy;
use ballista_core::extension::SessionConfigExt;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_core::serde::protobuf::{GetJobStatusParams, job_status};
use ballista_executor::executor_process::{self, ExecutorProcessConfig};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::SessionConfig;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use object_store::aws::AmazonS3Builder;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};

use crate::common::{Server, metric, pg_client, sql};
use crate::graph::get;
use crate::object_storage::S3;

/// The fixed list: counts by service, exact and approximate percentiles per edge, calls
/// joined with spans, map access to attributes, a window function, breaker transitions,
/// and a time filter that prunes segments.
const QUERIES: &str = include_str!("sql/distributed.sql");

fn queries() -> Vec<String> {
    let text: Vec<&str> = QUERIES
        .lines()
        .filter(|line| !line.trim_start().starts_with("--"))
        .collect();
    let list: Vec<String> = text
        .join("\n")
        .split(';')
        .map(str::trim)
        .filter(|query| !query.is_empty())
        .map(String::from)
        .collect();
    assert_eq!(list.len(), 8, "{list:#?}");
    list
}

/// Ballista's scheduler and executors in this process, reading the S3 bucket. They run
/// as the `ballista-scheduler` and `ballista-executor` binaries do by default, with tasks
/// pushed to the executors' gRPC services: that is the path on which a cancelled job's
/// running tasks are stopped (executors that poll for work are never told).
struct Cluster {
    scheduler: SocketAddr,
    _work: tempfile::TempDir,
}

/// `count` distinct ports free on the loopback interface, for the servers whose port
/// Ballista takes as a number rather than as a bound listener. All are held at once, so no
/// two are the same.
fn free_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().unwrap().port())
        .collect()
}

impl Cluster {
    async fn start(s3: &S3, bucket: &str, executors: usize) -> Self {
        let store = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_endpoint(format!("http://127.0.0.1:{}", s3.port()))
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .build()
            .unwrap();
        let runtime = RuntimeEnvBuilder::new().build_arc().unwrap();
        let url = ObjectStoreUrl::parse(format!("s3://{bucket}")).unwrap();
        runtime.register_object_store(url.as_ref(), Arc::new(store));
        let config = SessionConfig::new_with_ballista();
        let state = SessionStateBuilder::new()
            .with_config(config.clone())
            .with_runtime_env(runtime.clone())
            .with_default_features()
            .build();

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scheduler = listener.local_addr().unwrap();
        let scheduler_config = SchedulerConfig::default()
            .with_hostname("127.0.0.1")
            .with_port(scheduler.port())
            .with_scheduler_policy(TaskSchedulingPolicy::PushStaged);
        let session_config = config.clone();
        let cluster = BallistaCluster::new_memory(
            scheduler.to_string(),
            Arc::new(move |_| Ok(state.clone())),
            Arc::new(move || session_config.clone()),
        );
        let server = scheduler_process::create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(
            cluster,
            Arc::new(scheduler_config),
        )
        .await
        .unwrap();
        let state = server.state.clone();
        tokio::spawn(scheduler_process::start_grpc_service_with_listener(
            listener, server,
        ));

        let work = tempfile::tempdir().unwrap();
        let ports = free_ports(2 * executors);
        for n in 0..executors {
            let work_dir = work.path().join(format!("executor-{n}"));
            std::fs::create_dir_all(&work_dir).unwrap();
            let runtime = runtime.clone();
            let config = config.clone();
            let process = ExecutorProcessConfig {
                bind_host: "127.0.0.1".into(),
                external_host: Some("127.0.0.1".into()),
                port: ports[2 * n],
                grpc_port: ports[2 * n + 1],
                scheduler_host: "127.0.0.1".into(),
                scheduler_port: scheduler.port(),
                scheduler_connect_timeout_seconds: 30,
                vcores: 2,
                task_scheduling_policy: TaskSchedulingPolicy::PushStaged,
                work_dir: Some(work_dir.to_str().unwrap().to_string()),
                memory_pool_size: Some(1 << 30),
                override_runtime_producer: Some(Arc::new(move |_| Ok(runtime.clone()))),
                override_config_producer: Some(Arc::new(move || config.clone())),
                ..Default::default()
            };
            tokio::spawn(executor_process::start_executor_process(Arc::new(process)));
        }
        // Until every executor has registered with the scheduler.
        let deadline = Instant::now() + Duration::from_secs(60);
        while state
            .executor_manager
            .get_executors_state()
            .await
            .unwrap()
            .len()
            < executors
        {
            assert!(Instant::now() < deadline, "the executors did not register");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self {
            scheduler,
            _work: work,
        }
    }

    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.scheduler.port())
    }

    async fn job_status(&self, job: &str) -> Option<job_status::Status> {
        let mut client = SchedulerGrpcClient::connect(self.client_url())
            .await
            .unwrap();
        let result = client
            .get_job_status(GetJobStatusParams {
                job_id: job.to_string(),
            })
            .await
            .unwrap()
            .into_inner();
        result.status.and_then(|status| status.status)
    }
}

/// A TCP relay in front of the scheduler that counts the connections made through it:
/// every job a client submits opens one.
struct Relay {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        let target = SocketAddr::from(([127, 0, 0, 1], target.port()));
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self { addr, connections }
    }

    fn url(&self) -> String {
        format!("df://{}", self.addr)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// How far an approximate percentile may be from one node's: a t-digest depends on how the
/// rows were split into partial aggregates, and the cluster splits them over more
/// partitions than one node does.
const APPROXIMATE: f64 = 0.02;

/// Whether `answer` is `expected`, row for row: every value equal, except that a fraction
/// (an approximate percentile) of a query of `approx_percentile_cont` may be within
/// [`APPROXIMATE`] of it. Counts, `approx_distinct` among them, stay exact.
fn same_answer(query: &str, answer: &Value, expected: &Value) -> bool {
    if !query.contains("approx_percentile_cont") {
        return answer == expected;
    }
    // Only fractions: counts and texts are never approximate.
    let same_value = |a: &Value, e: &Value| match (a.is_f64(), e.is_f64()) {
        (true, true) => {
            let (a, e) = (a.as_f64().unwrap(), e.as_f64().unwrap());
            (a - e).abs() <= APPROXIMATE * e.abs()
        }
        _ => a == e,
    };
    let same_row = |a: &Value, e: &Value| match (a.as_array(), e.as_array()) {
        (Some(a), Some(e)) => a.len() == e.len() && a.iter().zip(e).all(|(a, e)| same_value(a, e)),
        _ => false,
    };
    match (answer.as_array(), expected.as_array()) {
        (Some(a), Some(e)) => a.len() == e.len() && a.iter().zip(e).all(|(a, e)| same_row(a, e)),
        _ => false,
    }
}

#[test]
fn approximate_percentiles_may_differ_a_little_and_counts_not_at_all() {
    let query = "SELECT approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY x), count(*)";
    let expected = serde_json::json!([["a", 100.0, 244]]);
    assert!(same_answer(query, &expected, &expected));
    assert!(same_answer(
        query,
        &serde_json::json!([["a", 101.5, 244]]),
        &expected
    ));
    assert!(!same_answer(
        query,
        &serde_json::json!([["a", 103.0, 244]]),
        &expected
    ));
    assert!(!same_answer(
        query,
        &serde_json::json!([["a", 100.0, 243]]),
        &expected
    ));
    assert!(!same_answer(query, &serde_json::json!([]), &expected));
    let exact = "SELECT median(x), count(*)";
    assert!(!same_answer(
        exact,
        &serde_json::json!([["a", 100.5, 244]]),
        &expected
    ));
}

async fn rows(server: &Server, query: &str) -> Value {
    let response = sql(server, "application/json", query).await;
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{query}: {body}");
    body["rows"].clone()
}

/// The number of spans the node reads, once it reads `spans` of them.
async fn wait_for_spans(server: &Server, spans: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stored = rows(server, "SELECT count(*) FROM spans").await[0][0]
            .as_u64()
            .unwrap_or(0);
        if stored == spans {
            return;
        }
        assert!(Instant::now() < deadline, "{stored} of {spans} spans");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ballista_answers_as_the_local_engine() {
    // Ballista's own log (jobs, tasks, cancellations), shown when the test fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("ballista_executor=info,ballista_scheduler=info,ballista_core=warn")
        .with_test_writer()
        .try_init();
    let Some(s3) = S3::start(&["ballista"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let demo = s3.demo_config(dir.path(), "ballista/callwatch");
    let (file, spans) = (&demo.file, demo.spans);
    let config = demo.config.to_str().unwrap();
    // A query node over the bucket, with further flags.
    let query_node = |name: &str, extra: &[&str]| {
        let mut flags = vec!["--config", config, "--role", "query"];
        flags.extend(extra);
        Server::start(&dir.path().join(name), &flags)
    };

    // One collector takes the recording; stopping it flushes every span into the bucket.
    let collector = Server::start(
        &dir.path().join("collector"),
        &["--config", config, "--pairing-wait", "1s"],
    );
    collector.replay(file);
    wait_for_spans(&collector, spans).await;
    assert!(collector.stop().success());

    let cluster = Cluster::start(&s3, "ballista", 2).await;
    let relay = Relay::start(cluster.scheduler).await;
    let local = query_node("local", &[]);
    let distributed = query_node(
        "distributed",
        &[
            "--ballista",
            &relay.url(),
            "--ballista-over",
            "30m",
            "--pg",
            "127.0.0.1:0",
        ],
    );
    wait_for_spans(&local, spans).await;
    wait_for_spans(&distributed, spans).await;
    let submitted = relay.connections();
    assert!(submitted > 0, "the count ran on the cluster");

    // Every query of the list answers the same, row for row. Each node replays the
    // breakers from the stored calls when it starts: both are given time to finish.
    for query in &queries() {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let expected = rows(&local, query).await;
            assert!(
                !expected.as_array().unwrap().is_empty(),
                "{query} has rows to compare"
            );
            let before = relay.connections();
            let answer = rows(&distributed, query).await;
            assert!(relay.connections() > before, "{query} ran on the cluster");
            if same_answer(query, &answer, &expected) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{query}\n{answer}\nis not\n{expected}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    // Statements about the tables are answered too.
    assert_eq!(
        rows(&distributed, "DESCRIBE calls").await,
        rows(&local, "DESCRIBE calls").await
    );
    let tables = |rows: Value| {
        let mut rows = rows.as_array().unwrap().clone();
        rows.sort_by_key(|row| row.to_string());
        rows
    };
    assert_eq!(
        tables(rows(&distributed, "SHOW TABLES").await),
        tables(rows(&local, "SHOW TABLES").await)
    );
    let plan = rows(&distributed, "EXPLAIN SELECT count(*) FROM calls").await;
    assert!(!plan.as_array().unwrap().is_empty());
    // Also over Postgres and `callwatch sql --ballista`.
    let (client, _connection) = pg_client(distributed.announced("postgres")).await;
    let pg_rows = client
        .query(
            "SELECT service_name, count(*) FROM spans WHERE service_name = $1 GROUP BY 1",
            &[&"order-service"],
        )
        .await
        .unwrap();
    let local_count = rows(
        &local,
        "SELECT count(*) FROM spans WHERE service_name = 'order-service'",
    )
    .await[0][0]
        .as_i64()
        .unwrap();
    assert_eq!(pg_rows[0].get::<_, i64>(1), local_count);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_callwatch"))
        .args([
            "sql",
            "--ballista",
            &relay.url(),
            "--storage",
            "s3://ballista/callwatch",
            "SELECT count(*) AS every_span FROM spans",
        ])
        .envs(s3.environment())
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(printed.contains(&format!("| {spans}")), "{printed}");

    // The graph of a window: the same edges, calls, errors and percentiles. An hour is
    // over --ballista-over, so the map asks the cluster without being told.
    let now = chrono::Utc::now();
    let window = format!(
        "from={}&to={}",
        (now - chrono::Duration::hours(1)).to_rfc3339(),
        now.to_rfc3339()
    )
    .replace('+', "%2B");
    let local_graph = get(&local, &format!("/api/v1/graph?{window}")).await;
    let before = relay.connections();
    let auto_graph = get(&distributed, &format!("/api/v1/graph?{window}")).await;
    assert!(
        relay.connections() > before,
        "an hour's graph ran on the cluster"
    );
    let forced = get(
        &distributed,
        &format!("/api/v1/graph?{window}&engine=ballista"),
    )
    .await;
    assert!(!local_graph["edges"].as_array().unwrap().is_empty());
    for graph in [&auto_graph, &forced] {
        assert_eq!(graph["edges"], local_graph["edges"]);
        assert_eq!(graph["nodes"], local_graph["nodes"]);
    }
    let refused = reqwest::get(format!(
        "http://{}/api/v1/graph?{window}&engine=ballista",
        local.http
    ))
    .await
    .unwrap();
    assert_eq!(refused.status(), 400);
    assert!(refused.text().await.unwrap().contains("--ballista"));

    // Refused statements never reach the scheduler.
    let before = relay.connections();
    for refused in [
        "DROP TABLE spans",
        "INSERT INTO spans (trace_id) VALUES ('x')",
        "COPY (SELECT * FROM spans) TO '/tmp/spans.parquet'",
        "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 's3://ballista/'",
        "SELECT * FROM 's3://ballista/callwatch/segments'",
        "SET datafusion.execution.target_partitions = 1",
    ] {
        let response = sql(&distributed, "application/json", refused).await;
        assert_eq!(response.status(), 403, "{refused}");
    }
    assert_eq!(
        relay.connections(),
        before,
        "nothing refused reached the scheduler"
    );
    assert!(
        metric(
            &distributed,
            r#"callwatch_ballista_jobs_total{outcome="submitted"}"#
        )
        .await
            > 0.0
    );

    // A query over its time limit is cancelled on the cluster, which then answers again.
    let limited = query_node(
        "limited",
        &["--ballista", &relay.url(), "--query-timeout", "2s"],
    );
    let started = Instant::now();
    let response = sql(
        &limited,
        "application/json",
        "SELECT count(*) FROM spans a, spans b, spans c \
         WHERE a.duration_ns + b.duration_ns + c.duration_ns < 0",
    )
    .await;
    let body: Value = response.json().await.unwrap();
    let message = body["error"].as_str().unwrap_or_default().to_string();
    assert!(message.contains("time limit of 2s"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let job = message
        .split("Ballista job ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no job id in {message}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match cluster.job_status(job).await {
            Some(job_status::Status::Failed(_)) => break,
            status => {
                assert!(Instant::now() < deadline, "job {job} is still {status:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    // The cluster answers again (through a node without the 2 s limit, which a loaded
    // machine can pass on any query).
    assert_eq!(
        rows(&distributed, "SELECT count(*) FROM calls").await,
        rows(&local, "SELECT count(*) FROM calls").await
    );
}
