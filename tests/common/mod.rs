//! Runs the real `callwatch` binary for integration tests.
#![allow(dead_code)]

pub mod browser;
pub mod requests;
pub mod samples;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use callwatch_storage::{SpanRecord, Store, StoreConfig};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// A `callwatch serve` process on free loopback ports.
pub struct Server {
    child: Option<Child>,
    pub grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    pub http: SocketAddr,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// Lines the server printed after the three it always prints.
    lines: mpsc::Receiver<String>,
}

impl Server {
    pub fn start(data_dir: &Path, extra: &[&str]) -> Self {
        Self::start_command("serve", data_dir, extra)
    }

    /// Runs `callwatch COMMAND` with the server flags (`serve`, or `demo` which embeds it).
    pub fn start_command(command: &str, data_dir: &Path, extra: &[&str]) -> Self {
        install_crypto_provider();
        let log = data_dir.with_extension("log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_callwatch"))
            .arg(command)
            .arg("--data-dir")
            .arg(data_dir)
            .args([
                "--otlp-grpc",
                "127.0.0.1:0",
                "--otlp-http",
                "127.0.0.1:0",
                "--http",
                "127.0.0.1:0",
            ])
            .args(extra)
            .env("CALLWATCH_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("starting callwatch");
        let stdout = child.stdout.take().unwrap();
        let (lines_tx, lines_rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep reading after the listening lines, so the process never writes to a
            // closed pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        let addr = |name: &str| listening(&lines_rx, name, &log);
        // A query node has no OTLP listeners: their addresses stay unspecified.
        let query_node = extra.windows(2).any(|flag| flag == ["--role", "query"]);
        let (grpc, otlp_http) = match query_node {
            true => (
                SocketAddr::from(([0, 0, 0, 0], 0)),
                SocketAddr::from(([0, 0, 0, 0], 0)),
            ),
            false => (addr("otlp-grpc"), addr("otlp-http")),
        };
        let http = addr("http");
        Self {
            child: Some(child),
            grpc,
            otlp_http,
            http,
            data_dir: data_dir.to_path_buf(),
            log,
            lines: lines_rx,
        }
    }

    /// The address of a further listener the server announced, e.g. `postgres`.
    pub fn announced(&self, name: &str) -> SocketAddr {
        listening(&self.lines, name, &self.log)
    }

    /// The server process's id, to read its `/proc` files.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn traces_url(&self) -> String {
        format!("http://{}/v1/traces", self.otlp_http)
    }

    /// Sends spans of one service over OTLP/HTTP protobuf; they must be accepted.
    pub async fn post_spans(&self, service: &str, spans: Vec<Span>) {
        self.post_request(&requests::request(service, spans)).await;
    }

    /// Sends a request over OTLP/HTTP protobuf; it must be accepted.
    pub async fn post_request(&self, request: &ExportTraceServiceRequest) {
        let response = reqwest::Client::new()
            .post(self.traces_url())
            .header("content-type", "application/x-protobuf")
            .body(request.encode_to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }

    /// Sends a recording to this server with `callwatch replay`; its output.
    pub fn replay(&self, file: &Path) -> String {
        callwatch(&[
            "replay",
            file.to_str().unwrap(),
            "--send-to",
            &self.grpc_url(),
        ])
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// SIGTERM, then wait for the graceful exit (which flushes to Parquet).
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let exit = wait_timeout(&mut child, Duration::from_secs(120));
        assert!(
            exit.success(),
            "callwatch exited with {exit}; log:\n{}",
            read(&self.log)
        );
        exit
    }

    /// SIGKILL: no flush, no goodbye.
    pub fn kill(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn log(&self) -> String {
        read(&self.log)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reads the next `listening NAME ADDR` line.
fn listening(lines: &mpsc::Receiver<String>, name: &str, log: &Path) -> SocketAddr {
    let line = lines
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("no '{name}' line; log:\n{}", read(log)));
    let rest = line
        .strip_prefix(&format!("listening {name} "))
        .unwrap_or_else(|| panic!("unexpected line {line:?}"));
    rest.parse().unwrap()
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "callwatch did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Every span in a (stopped) server's data directory, as `Store::open` finds it after replay:
/// (spans, how many were still only in the WAL).
pub async fn stored_spans(data_dir: &Path) -> (Vec<SpanRecord>, usize) {
    stored_spans_at(data_dir, None).await
}

/// [`stored_spans`] of a server whose segments are at `segments` (`None`: the data directory).
pub async fn stored_spans_at(
    data_dir: &Path,
    segments: Option<callwatch_storage::SegmentLocation>,
) -> (Vec<SpanRecord>, usize) {
    let config = StoreConfig {
        segments,
        ..StoreConfig::new(data_dir)
    };
    let store = Store::open(config).await.unwrap();
    let snapshot = store.snapshot();
    let hot_rows = snapshot.hot.iter().map(|b| b.num_rows()).sum();
    let spans = callwatch_query::all_spans(&store).await.unwrap();
    (spans, hot_rows)
}

/// The value of one Prometheus sample on the server's `/metrics`, by its full name with
/// labels, e.g. `callwatch_spans_accepted_total` or `x_total{reason="queue_full"}`.
pub async fn metric(server: &Server, sample: &str) -> f64 {
    metric_with_token(server, None, sample).await
}

/// [`metric`], asked for with a token.
pub async fn metric_with_token(server: &Server, token: Option<&str>, sample: &str) -> f64 {
    let mut request = reqwest::Client::new().get(format!("http://{}/metrics", server.http));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let text = request.send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{sample} ")))
        .unwrap_or_else(|| panic!("no {sample} in:\n{text}"))
        .parse()
        .unwrap()
}

/// A Postgres client of the server's `--pg` listener (as user `grafana`, no password), and
/// the task that drives its connection.
pub async fn pg_client(addr: SocketAddr) -> (tokio_postgres::Client, tokio::task::JoinHandle<()>) {
    let (client, connection) = tokio_postgres::connect(
        &format!("host={} port={} user=grafana", addr.ip(), addr.port()),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    let connection = tokio::spawn(async move {
        let _ = connection.await;
    });
    (client, connection)
}

/// `POST /api/v1/sql` with the query as JSON, asking for `accept`.
pub async fn sql(server: &Server, accept: &str, query: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("http://{}/api/v1/sql", server.http))
        .header("accept", accept)
        .json(&serde_json::json!({ "sql": query }))
        .send()
        .await
        .unwrap()
}

/// Runs `python3 SCRIPT ARGS...` (a reader in `tests/`) to completion; returns the JSON it
/// prints, failing on a non-zero exit.
pub fn python_json(script: &Path, args: &[&str]) -> serde_json::Value {
    let output = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Runs `callwatch ARGS...` to completion; returns its stdout, failing on a non-zero exit.
pub fn callwatch(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_callwatch"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "callwatch {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Sends `body` as a raw gRPC Export call: also bytes no SDK would send.
pub async fn grpc_export(
    url: &str,
    body: Bytes,
) -> Result<
    opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
    tonic::Status,
> {
    let mut client = callwatch_collector::OtlpClient::connect(url).await.unwrap();
    client.export_bytes(body).await
}

/// The TLS crypto provider of the test's clients (reqwest's TLS is built without one).
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
