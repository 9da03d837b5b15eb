//! Segments in an S3 bucket, served by a real S3-API server (moto's server mode, from PyPI),
//! used as AWS S3 is: path-style, with credentials and an endpoint URL. What a user reads
//! from the bucket with pyarrow equals what was sent; a kill -9 while flushing keeps every
//! acknowledged span once; a bucket that goes away for 30 s loses nothing.
//! Needs python3 with `moto[server]` and `pyarrow` (installed by `.ci/run`); under CI=true a
//! missing one fails the test instead of skipping it.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use callwatch_storage::SegmentLocation;
use prost::Message;
use serde_json::Value;

use crate::breakers::write_config;
use crate::common::requests::{hex, numbered_span, request};
use crate::common::samples::{recorded_spans, sample};
use crate::common::{Server, metric, python_json, sql};
use crate::graph::{CLIENT, MS, SERVER, edge, graph_with, span};

const SCRIPTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/s3");

/// moto's S3 server in a python process of its own, with its buckets made.
pub(crate) struct S3 {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    port: u16,
}

impl S3 {
    /// `None` (a failure when CI=true) when python3 lacks moto or pyarrow.
    pub(crate) fn start(buckets: &[&str]) -> Option<Self> {
        crate::common::install_crypto_provider();
        let present = Command::new("python3")
            .args(["-c", "import moto.server, pyarrow.fs"])
            .status()
            .is_ok_and(|status| status.success());
        if !present {
            assert!(
                std::env::var("CI").is_err(),
                "CI=true but python3 with moto[server] and pyarrow is missing: .ci/run installs them"
            );
            eprintln!("skipped: python3 with moto[server] and pyarrow is not installed");
            return None;
        }
        let mut child = Command::new("python3")
            .arg(format!("{SCRIPTS}/server.py"))
            .args(buckets)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the S3 server");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the S3 server said {line:?}"));
        Some(Self {
            child,
            stdin,
            stdout,
            port,
        })
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The environment that gives a process this server's endpoint and credentials.
    pub(crate) fn environment(&self) -> Vec<(String, String)> {
        self.options()
            .into_iter()
            .map(|(key, value)| (key.to_ascii_uppercase(), value))
            .collect()
    }

    /// `down` or `up`, once the server has done it.
    fn command(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ok");
    }

    /// The object_store options of this server, as a user gives them.
    fn options(&self) -> Vec<(String, String)> {
        [
            (
                "aws_endpoint_url",
                format!("http://127.0.0.1:{}", self.port),
            ),
            ("aws_allow_http", "true".into()),
            ("aws_access_key_id", "test".into()),
            ("aws_secret_access_key", "test".into()),
            ("aws_region", "us-east-1".into()),
        ]
        .map(|(key, value)| (key.to_string(), value))
        .to_vec()
    }

    /// A `--config` file whose `[storage]` puts segments at `s3://ROOT`.
    pub(crate) fn config(&self, dir: &Path, root: &str) -> PathBuf {
        let mut text = format!("[storage]\nurl = \"s3://{root}\"\n");
        for (key, value) in self.options() {
            text.push_str(&format!("{key} = \"{value}\"\n"));
        }
        let path = dir.join(format!("{}.toml", root.replace('/', "-")));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The full demo recording with its truth, and a `--config` file that puts segments at
    /// `s3://ROOT` with the truth's breaker settings.
    pub(crate) fn demo_config(&self, dir: &Path, root: &str) -> DemoInBucket {
        let file = sample("full");
        let truth: Value = serde_json::from_str(
            &std::fs::read_to_string(file.with_extension("truth.json")).unwrap(),
        )
        .unwrap();
        let breakers = write_config(dir, &truth["breakers"][0]["config"], None);
        let bucket = self.config(dir, root);
        let config = dir.join(format!("{}-demo.toml", root.replace('/', "-")));
        std::fs::write(
            &config,
            std::fs::read_to_string(&bucket).unwrap()
                + &std::fs::read_to_string(&breakers).unwrap(),
        )
        .unwrap();
        DemoInBucket {
            spans: truth["spans"].as_u64().unwrap(),
            file,
            truth,
            breakers,
            config,
        }
    }

    fn location(&self, root: &str) -> SegmentLocation {
        SegmentLocation::parse(&format!("s3://{root}"), &self.options()).unwrap()
    }

    /// Span ids, partitions and calls under `s3://ROOT`, as pyarrow reads them.
    fn read(&self, root: &str) -> Value {
        let script = Path::new(SCRIPTS).join("read_bucket.py");
        python_json(&script, &[&self.port.to_string(), root])
    }
}

/// What [`S3::demo_config`] made.
pub(crate) struct DemoInBucket {
    pub file: PathBuf,
    pub truth: Value,
    pub spans: u64,
    /// The truth's breaker settings alone (a server without the bucket).
    pub breakers: PathBuf,
    /// The bucket and the breaker settings.
    pub config: PathBuf,
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn sql_rows(server: &Server, query: &str) -> Vec<Value> {
    let body: Value = sql(server, "application/json", query)
        .await
        .json()
        .await
        .unwrap();
    body["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("{query}: {body}"))
        .clone()
}

const CALL_KEYS: &str = "SELECT trace_id, coalesce(client_span_id, ''), \
    coalesce(server_span_id, ''), client, server FROM calls ORDER BY 1, 2, 3, 4, 5";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_on_s3_keeps_what_was_sent_where_pyarrow_reads_it() {
    let Some(s3) = S3::start(&["traces"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let recording = sample("steady");
    let config = s3.config(dir.path(), "traces/callwatch");
    let data = dir.path().join("data");
    let on_s3 = Server::start(&data, &["--config", config.to_str().unwrap()]);
    let on_disk = Server::start(&dir.path().join("disk"), &[]);
    on_s3.replay(&recording);
    on_disk.replay(&recording);
    // Calls with a missing half wait for their partner: these are the paired ones. Both
    // servers derive them as the spans arrive, so each is asked again until they agree.
    let paired = "SELECT count(*) AS calls FROM calls WHERE client_span_id IS NOT NULL \
        AND server_span_id IS NOT NULL";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let want = sql_rows(&on_disk, paired).await;
        let got = sql_rows(&on_s3, paired).await;
        if want == got && want[0][0].as_u64().is_some_and(|calls| calls > 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the S3 server's calls never matched: {got:?} against {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(on_s3.stop().success());
    assert!(on_disk.stop().success());

    // The bucket holds every span sent, once, in its hour's partition.
    let bucket = s3.read("traces/callwatch");
    let sent: Vec<String> = {
        let mut ids: Vec<String> = recorded_spans(&recording)
            .iter()
            .map(|(_, span)| hex(&span.span_id))
            .collect();
        ids.sort();
        ids
    };
    let stored: Vec<String> = bucket["span_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_string())
        .collect();
    assert_eq!(stored, sent);
    assert!(!bucket["partitions"].as_array().unwrap().is_empty());
    // Nothing but the WAL and the waiting halves went to the local disk.
    assert!(!data.join("spans").exists() && !data.join("calls").exists());
    assert!(data.join("wal").is_dir());

    // The calls in the bucket are those a server on a local disk derived, and a server
    // started again on the bucket answers from it alike.
    let again = Server::start(&data, &["--config", config.to_str().unwrap()]);
    let on_disk = Server::start(&dir.path().join("disk"), &[]);
    let from_disk = sql_rows(&on_disk, CALL_KEYS).await;
    assert!(!from_disk.is_empty());
    assert_eq!(sql_rows(&again, CALL_KEYS).await, from_disk);
    let from_bucket: Vec<Value> = bucket["calls"].as_array().unwrap().clone();
    assert_eq!(from_bucket, from_disk);
    again.stop();
    on_disk.stop();

    // `callwatch sql --data-dir --storage` reads the same bucket, options from the
    // environment as the AWS SDKs take them.
    let output = Command::new(env!("CARGO_BIN_EXE_callwatch"))
        .args(["sql", "SELECT count(*) AS spans FROM spans", "--data-dir"])
        .arg(&data)
        .args(["--storage", "s3://traces/callwatch"])
        .envs(s3.environment())
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(printed.contains(&sent.len().to_string()), "{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_on_s3_killed_while_flushing_keeps_every_acknowledged_span_once() {
    let Some(s3) = S3::start(&["crash"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = s3.config(dir.path(), "crash/callwatch");
    crate::crash_recovery::kill_while_flushing_and_count(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
        Some(s3.location("crash/callwatch")),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_away_for_30_s_loses_nothing() {
    let Some(mut s3) = S3::start(&["away"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = s3.config(dir.path(), "away/callwatch");
    let data = dir.path().join("data");
    let server = Server::start(
        &data,
        &[
            "--config",
            config.to_str().unwrap(),
            "--flush-interval",
            "1s",
        ],
    );
    let client = reqwest::Client::new();
    let mut acked = HashSet::new();
    let mut send = async |request_no: u32| {
        let spans: Vec<_> = (0..50).map(|i| numbered_span(7, request_no, i)).collect();
        let ids: Vec<String> = spans.iter().map(|s| hex(&s.span_id)).collect();
        let response = client
            .post(server.traces_url())
            .header("content-type", "application/x-protobuf")
            .body(request("order-service", spans).encode_to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "acknowledged, bucket or not");
        acked.extend(ids);
    };
    for request_no in 0..10 {
        send(request_no).await;
    }
    s3.command("down");
    // 30 s without the bucket, sending all along: the WAL takes it, flushes fail and wait.
    let away = Instant::now();
    let mut request_no = 10;
    while away.elapsed() < Duration::from_secs(30) {
        send(request_no).await;
        request_no += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let health = reqwest::get(format!("http://{}/healthz", server.http))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert!(metric(&server, "callwatch_flush_errors_total").await >= 1.0);
    assert!(metric(&server, "callwatch_hot_spans").await > 0.0);
    s3.command("up");
    // Everything reaches the bucket: nothing stays hot.
    let deadline = Instant::now() + Duration::from_secs(120);
    while metric(&server, "callwatch_hot_spans").await > 0.0 {
        assert!(
            Instant::now() < deadline,
            "the spans never reached the bucket"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Killed, so nothing but what reached the bucket counts.
    server.kill();
    let bucket = s3.read("away/callwatch");
    let stored: Vec<&str> = bucket["span_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap())
        .collect();
    assert_eq!(stored.len(), acked.len(), "each span once");
    assert_eq!(
        stored.into_iter().map(String::from).collect::<HashSet<_>>(),
        acked
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collectors_on_one_bucket_each_answer_for_both() {
    let Some(s3) = S3::start(&["shared"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = s3.config(dir.path(), "shared/callwatch");
    let start = |data: &str, node: &str| {
        Server::start(
            &dir.path().join(data),
            &[
                "--config",
                config.to_str().unwrap(),
                "--flush-interval",
                "1s",
                "--refresh-interval",
                "1s",
                "--node-id",
                node,
            ],
        )
    };
    let first = start("one", "collector-1");
    let second = start("two", "collector-2");
    let spans_of = |sender: u32| (0..100).map(move |i| numbered_span(sender, 0, i)).collect();
    first.post_spans("order-service", spans_of(1)).await;
    second.post_spans("payment-service", spans_of(2)).await;
    // And one call each, both of its halves sent to one collector.
    let t0 = crate::common::requests::now_ns() - 60_000 * MS;
    for (server, n, client, callee) in [
        (&first, 1_u64, "frontend", "orders"),
        (&second, 2, "billing", "ledger"),
    ] {
        let trace = u128::from(0x30 + n) << 120;
        let client_half = span(trace, 10 * n + 1, Some(9), CLIENT, t0, 10 * MS, vec![]);
        let server_half = span(
            trace,
            10 * n + 2,
            Some(10 * n + 1),
            SERVER,
            t0 + MS,
            8 * MS,
            vec![],
        );
        server.post_spans(client, vec![client_half]).await;
        server.post_spans(callee, vec![server_half]).await;
    }
    // Each flushes its own and reads the other's manifest every flush interval.
    for server in [&first, &second] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let rows = sql_rows(
                server,
                "SELECT service_name, count(*) FROM spans WHERE service_name LIKE '%-service' GROUP BY 1 ORDER BY 1",
            )
            .await;
            if rows
                == serde_json::json!([["order-service", 100], ["payment-service", 100]])
                    .as_array()
                    .unwrap()
                    .clone()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "one collector never saw the other's spans: {rows:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        // The root spans are calls from `user`: 100 + 100, and the two calls.
        let graph = graph_with(server, 202).await;
        assert_eq!(edge(&graph, "user", "order-service")["calls"], 100);
        assert_eq!(edge(&graph, "user", "payment-service")["calls"], 100);
        assert_eq!(edge(&graph, "frontend", "orders")["calls"], 1);
        assert_eq!(edge(&graph, "billing", "ledger")["calls"], 1);
    }
    assert!(first.stop().success());
    assert!(second.stop().success());
    let bucket = s3.read("shared/callwatch");
    let stored = bucket["span_ids"].as_array().unwrap();
    let distinct: HashSet<&str> = stored.iter().map(|id| id.as_str().unwrap()).collect();
    assert_eq!((stored.len(), distinct.len()), (204, 204));
}
