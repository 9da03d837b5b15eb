//! Command-line flags. Every flag is also an environment variable `CALLWATCH_*`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::demo::Scenario;

pub const DEFAULT_DATA_DIR: &str = "./callwatch-data";
pub const DEFAULT_OTLP_GRPC: &str = "0.0.0.0:4317";
pub const DEFAULT_OTLP_HTTP: &str = "0.0.0.0:4318";
pub const DEFAULT_HTTP: &str = "0.0.0.0:8080";

/// callwatch: distributed tracing and service dependencies, from OTLP to one binary.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Receive OTLP traces and store them (WAL, memory, Parquet).
    Serve(ServeArgs),
    /// Send generated OTLP/gRPC traffic to a collector and report throughput and latency.
    Load(LoadArgs),
    /// Receive OTLP/gRPC, decode it and keep nothing: the baseline of ingest benchmarks.
    Sink(SinkArgs),
    /// Run the simulated e-commerce platform: with an embedded server, against another
    /// collector (--send-to), or recorded to a file (--record).
    Demo(DemoArgs),
    /// Send a recording (OTLP/JSON lines) to a collector, its timestamps moved to now.
    Replay(ReplayArgs),
    /// Run one SQL query against a running server or a data directory; print a table.
    Sql(SqlArgs),
    /// Manage the segments several collectors keep in one bucket.
    #[command(subcommand)]
    Storage(StorageCommand),
}

#[derive(Debug, Subcommand)]
pub enum StorageCommand {
    /// Make the segments of a node that is gone for good this data directory's node's: its
    /// compaction and retention take care of them from then on. The collector of this data
    /// directory must be stopped; one still running as NODE refuses to start afterwards.
    Adopt(AdoptArgs),
}

#[derive(Debug, Args)]
pub struct AdoptArgs {
    /// The node whose segments to take.
    pub node: String,
    /// The data directory of the node that takes them.
    #[arg(long, env = "CALLWATCH_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Where the segments are, as `serve --storage`.
    #[arg(long, env = "CALLWATCH_STORAGE")]
    pub storage: Option<String>,
    /// The config file whose [storage] section gives the bucket and its options.
    #[arg(long, env = "CALLWATCH_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The query, e.g. "SELECT service_name, count(*) FROM spans GROUP BY 1".
    pub sql: String,
    /// The running server's HTTP address.
    #[arg(
        long,
        env = "CALLWATCH_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// Query the data stored in this directory instead of a server. No server may be
    /// running on it.
    #[arg(long, conflicts_with = "server")]
    pub data_dir: Option<PathBuf>,
    /// With --data-dir: the segments are at this URL (as `serve --storage`; options from the
    /// environment).
    #[arg(long, env = "CALLWATCH_STORAGE")]
    pub storage: Option<String>,
    #[command(flatten)]
    pub ballista: BallistaArgs,
    #[command(flatten)]
    pub token: TokenFile,
}

/// Where SQL runs distributed: an Apache DataFusion Ballista cluster reading --storage.
#[derive(Debug, Clone, Args)]
pub struct BallistaArgs {
    /// The Ballista scheduler, df://HOST:PORT: SQL (HTTP, --pg, `callwatch sql`) and graph
    /// windows of at least --ballista-over run there, over the flushed segments.
    #[arg(long = "ballista", env = "CALLWATCH_BALLISTA")]
    pub url: Option<String>,
    /// With --ballista: graph windows at least this long are aggregated on the cluster.
    #[arg(long = "ballista-over", env = "CALLWATCH_BALLISTA_OVER", default_value = "24h", value_parser = humantime::parse_duration)]
    pub over: Duration,
    /// With --ballista: the tasks each stage of a query is cut into (files are grouped
    /// into this many scans).
    #[arg(
        long = "ballista-partitions",
        env = "CALLWATCH_BALLISTA_PARTITIONS",
        default_value_t = 8
    )]
    pub partitions: usize,
}

impl BallistaArgs {
    pub fn cluster(&self) -> anyhow::Result<Option<callwatch_query::Cluster>> {
        self.url
            .as_deref()
            .map(|url| callwatch_query::Cluster::new(url, self.over, self.partitions))
            .transpose()
            .map_err(anyhow::Error::msg)
    }
}

/// The token a client command sends, when the server asks for one.
#[derive(Debug, Clone, Default, Args)]
pub struct TokenFile {
    /// A file whose first line is the token to send (`Authorization: Bearer`).
    #[arg(long, env = "CALLWATCH_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

impl TokenFile {
    /// The token, if a file was given: its first line.
    pub fn read(&self) -> anyhow::Result<Option<String>> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--token-file {}: {e}", path.display()))?;
        let token = text.lines().next().unwrap_or("").trim();
        anyhow::ensure!(
            !token.is_empty(),
            "--token-file {}: the first line is empty",
            path.display()
        );
        Ok(Some(token.to_string()))
    }
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Send to this OTLP/gRPC endpoint (e.g. http://127.0.0.1:4317) instead of starting an
    /// embedded server. Several (repeated or comma-separated): each span goes to the one its
    /// trace id picks, as the OpenTelemetry Collector's loadbalancing exporter routes.
    #[arg(long, env = "CALLWATCH_SEND_TO", value_delimiter = ',')]
    pub send_to: Vec<String>,
    /// Stop after this long (default: run until stopped). With --record: the length of the
    /// recording (default 60s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Seed of the simulation: the same seed, scenario and start give the same traffic.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Which incidents happen.
    #[arg(long, value_enum, default_value_t = Scenario::Full)]
    pub scenario: Scenario,
    /// Length of the incident timeline, which then starts over (default: 10m live, the
    /// whole recording with --record).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub scenario_length: Option<Duration>,
    /// Checkouts per second (each is a trace of about fifteen spans).
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Write the traffic to FILE as OTLP/JSON lines, in virtual time, and send nothing.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// With --record: the virtual time of the first checkout (RFC 3339).
    #[arg(long, default_value = "2026-01-01T00:00:00Z")]
    pub start: String,
    /// Where to write the ground truth (default with --record: FILE with `.truth.json`).
    #[arg(long, value_name = "FILE")]
    pub truth: Option<PathBuf>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// A recording: one OTLP/JSON ExportTraceServiceRequest per line.
    pub file: PathBuf,
    /// OTLP/gRPC endpoint of the collector, e.g. http://127.0.0.1:4317. Several (repeated or
    /// comma-separated): each span goes to the one its trace id picks.
    #[arg(
        long,
        env = "CALLWATCH_SEND_TO",
        value_delimiter = ',',
        required = true
    )]
    pub send_to: Vec<String>,
    #[command(flatten)]
    pub token: TokenFile,
}

#[derive(Debug, Args)]
pub struct SinkArgs {
    /// OTLP/gRPC listen address.
    #[arg(long, env = "CALLWATCH_OTLP_GRPC", default_value = DEFAULT_OTLP_GRPC)]
    pub otlp_grpc: SocketAddr,
}

/// What a `serve` process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Everything: OTLP ingest, the WAL, pairing and flushes, the dashboard and every API.
    All,
    /// OTLP ingest, the WAL, pairing and flushes; on --http only /healthz, /readyz and
    /// /metrics.
    Ingest,
    /// The dashboard, every HTTP API, /metrics, --pg and `callwatch sql --server` over
    /// what the bucket holds; no OTLP listeners and no WAL.
    Query,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Fsync {
    /// fsync the WAL before every acknowledgement (group commit): survives power loss.
    Always,
    /// Leave flushing to the OS: survives a crash of callwatch, not of the machine.
    Never,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where the WAL and Parquet segments live.
    #[arg(long, env = "CALLWATCH_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Where Parquet segments and their manifest go instead of --data-dir: s3://bucket/prefix,
    /// gs://bucket/prefix, az://container/prefix or file:///path. Credentials and endpoint
    /// come from the environment (AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, …) or [storage] in
    /// --config. The WAL and the halves waiting to be paired stay in --data-dir.
    #[arg(long, env = "CALLWATCH_STORAGE")]
    pub storage: Option<String>,
    /// This collector's name among those writing one bucket (letters, digits, '_' and '-').
    /// Default: the name kept in --data-dir, made up the first time.
    #[arg(long, env = "CALLWATCH_NODE_ID")]
    pub node_id: Option<String>,
    /// What this process does: all (one binary), ingest (collector only) or query
    /// (dashboard and APIs over --storage, stateless).
    #[arg(long, env = "CALLWATCH_ROLE", value_enum, default_value_t = Role::All)]
    pub role: Role,
    /// How often the other nodes' manifests in --storage are read again (at most 60s).
    #[arg(long, env = "CALLWATCH_REFRESH_INTERVAL", default_value = "10s", value_parser = parse_refresh_interval)]
    pub refresh_interval: Duration,
    /// OTLP/gRPC listen address.
    #[arg(long, env = "CALLWATCH_OTLP_GRPC", default_value = DEFAULT_OTLP_GRPC)]
    pub otlp_grpc: SocketAddr,
    /// OTLP/HTTP listen address (POST /v1/traces).
    #[arg(long, env = "CALLWATCH_OTLP_HTTP", default_value = DEFAULT_OTLP_HTTP)]
    pub otlp_http: SocketAddr,
    /// Browser origins that may send to OTLP/HTTP (CORS), comma-separated, or `*`; e.g.
    /// https://shop.example.com. Default: none.
    #[arg(long, env = "CALLWATCH_OTLP_HTTP_CORS_ORIGINS", value_delimiter = ',')]
    pub otlp_http_cors_origins: Vec<String>,
    /// HTTP listen address for the dashboard, the JSON and SQL APIs, /healthz, /readyz and /metrics.
    #[arg(long, env = "CALLWATCH_HTTP", default_value = DEFAULT_HTTP)]
    pub http: SocketAddr,
    /// When the WAL reaches the disk.
    #[arg(long, env = "CALLWATCH_WAL_FSYNC", value_enum, default_value_t = Fsync::Always)]
    pub wal_fsync: Fsync,
    /// Export requests that may wait for the WAL before new ones get 429 / RESOURCE_EXHAUSTED.
    #[arg(long, env = "CALLWATCH_INGEST_QUEUE", default_value_t = 256)]
    pub ingest_queue: usize,
    /// Memory for spans not yet in Parquet, halves waiting to be paired and breakers, before
    /// new requests get 503 / UNAVAILABLE (e.g. 2GiB). The process's resident size is held to
    /// it too: once it reaches it, requests get 503 while a quarter of it waits to be flushed.
    #[arg(long, env = "CALLWATCH_MEMORY_LIMIT", default_value = "2GiB", value_parser = parse_bytes)]
    pub memory_limit: usize,
    /// Largest export request body, after decompression (e.g. 16MiB).
    #[arg(long, env = "CALLWATCH_MAX_MESSAGE_SIZE", default_value = "16MiB", value_parser = parse_bytes)]
    pub max_message_size: usize,
    /// Write hot spans to Parquet at least this often. On a query node: the collectors'
    /// interval, which its breakers wait out (calls come a segment at a time).
    #[arg(long, env = "CALLWATCH_FLUSH_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub flush_interval: Duration,
    /// ...and as soon as this many spans are in memory.
    #[arg(long, env = "CALLWATCH_FLUSH_SPANS", default_value_t = 500_000)]
    pub flush_spans: usize,
    /// Delete Parquet segments older than this.
    #[arg(long, env = "CALLWATCH_RETENTION", default_value = "7d", value_parser = humantime::parse_duration)]
    pub retention: Duration,
    /// A SQL query running longer than this is stopped.
    #[arg(long, env = "CALLWATCH_QUERY_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub query_timeout: Duration,
    /// Memory one SQL query may use (e.g. 1GiB).
    #[arg(long, env = "CALLWATCH_QUERY_MEMORY", default_value = "1GiB", value_parser = parse_bytes)]
    pub query_memory: usize,
    /// Rows one SQL query may return.
    #[arg(long, env = "CALLWATCH_QUERY_MAX_ROWS", default_value_t = 100_000)]
    pub query_max_rows: usize,
    /// Threads that run queries, pages and read APIs, apart from those that take spans in
    /// (default: one less than the cores, at least 1).
    #[arg(long, env = "CALLWATCH_QUERY_THREADS")]
    pub query_threads: Option<usize>,
    /// Queries, pages and read API requests running at once (default: 2 × query threads);
    /// as many more wait up to 2 s, and the rest get 429 / SQLSTATE 53300.
    #[arg(long, env = "CALLWATCH_QUERY_CONCURRENCY")]
    pub query_concurrency: Option<usize>,
    /// Bytes of export request bodies (compressed and decompressed) and of what they decode
    /// to, held at once over both OTLP transports, before new ones get 429 /
    /// RESOURCE_EXHAUSTED (default: a quarter of --memory-limit, at least 4 ×
    /// --max-message-size).
    #[arg(long, env = "CALLWATCH_INGEST_INFLIGHT_BYTES", value_parser = parse_bytes)]
    pub ingest_inflight_bytes: Option<usize>,
    /// A client must send a request's headers within this long, or the connection is closed.
    #[arg(long, env = "CALLWATCH_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,
    /// Largest request head (request line and headers; the HTTP/2 header list), e.g. 64KiB.
    #[arg(long, env = "CALLWATCH_MAX_HEADER_SIZE", default_value = "64KiB", value_parser = parse_bytes)]
    pub max_header_size: usize,
    /// A connection with no request in flight for this long is closed.
    #[arg(long, env = "CALLWATCH_IDLE_TIMEOUT", default_value = "2m", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,
    /// Streams one HTTP/2 connection may have open at once, on the OTLP and HTTP listeners.
    #[arg(long, env = "CALLWATCH_MAX_CONCURRENT_STREAMS", default_value_t = 100)]
    pub max_concurrent_streams: u32,
    #[command(flatten)]
    pub ballista: BallistaArgs,
    /// Postgres wire protocol listen address, e.g. 127.0.0.1:5432 (off unless given).
    #[arg(long, env = "CALLWATCH_PG")]
    pub pg: Option<SocketAddr>,
    /// With --pg: the only user name accepted (default: any).
    #[arg(long, env = "CALLWATCH_PG_USER")]
    pub pg_user: Option<String>,
    /// With --pg: the password clients must give (default: none is asked).
    #[arg(long, env = "CALLWATCH_PG_PASSWORD", hide_env_values = true)]
    pub pg_password: Option<String>,
    /// How long half of a call (a client span without its server span, or the reverse)
    /// waits for the other half before it becomes a call to a virtual node or is counted
    /// as unpaired.
    #[arg(long, env = "CALLWATCH_PAIRING_WAIT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub pairing_wait: Duration,
    /// Most halves waiting at once; more are dropped and counted.
    #[arg(
        long,
        env = "CALLWATCH_PAIRING_MAX_PENDING",
        default_value_t = 1_000_000
    )]
    pub pairing_max_pending: usize,
    /// Derive no calls (the calls table, graph and service-graph metrics stay empty): only
    /// for measuring what pairing costs.
    #[arg(long, env = "CALLWATCH_NO_PAIRING")]
    pub no_pairing: bool,
    /// Health thresholds of edges and services (see README, "Health").
    #[command(flatten)]
    pub health: HealthArgs,
    /// TLS of the listeners (see README, "Security").
    #[command(flatten)]
    pub tls: TlsArgs,
    /// A file whose first line is a token that may send spans (scope `ingest`, name
    /// `ingest`). Once any token exists, every request needs one (see README, "Security").
    #[arg(long, env = "CALLWATCH_INGEST_TOKEN_FILE")]
    pub ingest_token_file: Option<PathBuf>,
    /// A file whose first line is a token that may read: dashboard, APIs, /metrics and
    /// Postgres, as user `read` (scope `read`, name `read`).
    #[arg(long, env = "CALLWATCH_READ_TOKEN_FILE")]
    pub read_token_file: Option<PathBuf>,
    /// How long a dashboard login lasts.
    #[arg(long, env = "CALLWATCH_SESSION_LIFETIME", default_value = "12h", value_parser = humantime::parse_duration)]
    pub session_lifetime: Duration,
    /// A TOML file with circuit breaker settings per edge and the breaker webhook (see
    /// README, "Circuit breakers").
    #[arg(long, env = "CALLWATCH_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Certificates and keys (PEM) of the listeners: one pair for all, or a pair for one
/// listener, which wins over the pair for all.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// Certificate (and chain) of every listener: OTLP/gRPC, OTLP/HTTP, HTTP and Postgres.
    #[arg(long, env = "CALLWATCH_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert.
    #[arg(long, env = "CALLWATCH_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates a client's certificate must be signed by, on every TLS listener
    /// (mutual TLS).
    #[arg(long, env = "CALLWATCH_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Certificate of the OTLP/gRPC listener alone.
    #[arg(
        long,
        env = "CALLWATCH_OTLP_GRPC_TLS_CERT",
        requires = "otlp_grpc_tls_key"
    )]
    pub otlp_grpc_tls_cert: Option<PathBuf>,
    #[arg(
        long,
        env = "CALLWATCH_OTLP_GRPC_TLS_KEY",
        requires = "otlp_grpc_tls_cert"
    )]
    pub otlp_grpc_tls_key: Option<PathBuf>,
    /// Certificate of the OTLP/HTTP listener alone.
    #[arg(
        long,
        env = "CALLWATCH_OTLP_HTTP_TLS_CERT",
        requires = "otlp_http_tls_key"
    )]
    pub otlp_http_tls_cert: Option<PathBuf>,
    #[arg(
        long,
        env = "CALLWATCH_OTLP_HTTP_TLS_KEY",
        requires = "otlp_http_tls_cert"
    )]
    pub otlp_http_tls_key: Option<PathBuf>,
    /// Certificate of the HTTP listener (dashboard and APIs) alone.
    #[arg(long, env = "CALLWATCH_HTTP_TLS_CERT", requires = "http_tls_key")]
    pub http_tls_cert: Option<PathBuf>,
    #[arg(long, env = "CALLWATCH_HTTP_TLS_KEY", requires = "http_tls_cert")]
    pub http_tls_key: Option<PathBuf>,
    /// Certificate of the Postgres listener alone.
    #[arg(long, env = "CALLWATCH_PG_TLS_CERT", requires = "pg_tls_key")]
    pub pg_tls_cert: Option<PathBuf>,
    #[arg(long, env = "CALLWATCH_PG_TLS_KEY", requires = "pg_tls_cert")]
    pub pg_tls_key: Option<PathBuf>,
}

/// The listeners TLS may be set for.
#[derive(Debug, Clone, Copy)]
pub enum Listener {
    OtlpGrpc,
    OtlpHttp,
    Http,
    Postgres,
}

impl TlsArgs {
    /// The TLS files of `listener`, if it serves TLS.
    pub fn files(&self, listener: Listener) -> Option<crate::tls::TlsFiles> {
        let own = match listener {
            Listener::OtlpGrpc => (&self.otlp_grpc_tls_cert, &self.otlp_grpc_tls_key),
            Listener::OtlpHttp => (&self.otlp_http_tls_cert, &self.otlp_http_tls_key),
            Listener::Http => (&self.http_tls_cert, &self.http_tls_key),
            Listener::Postgres => (&self.pg_tls_cert, &self.pg_tls_key),
        };
        let (cert, key) = match own {
            (Some(cert), Some(key)) => (cert, key),
            _ => (self.tls_cert.as_ref()?, self.tls_key.as_ref()?),
        };
        Some(crate::tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: self.tls_client_ca.clone(),
        })
    }
}

#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// Error rate (0..1) from which an edge or service is degraded.
    #[arg(
        long,
        env = "CALLWATCH_HEALTH_DEGRADED_ERROR_RATE",
        default_value_t = 0.001
    )]
    pub health_degraded_error_rate: f64,
    /// Error rate (0..1) from which an edge or service is failing.
    #[arg(
        long,
        env = "CALLWATCH_HEALTH_FAILING_ERROR_RATE",
        default_value_t = 0.10
    )]
    pub health_failing_error_rate: f64,
    /// Client-side p99 latency above which an edge (server-side for a service) is degraded.
    #[arg(long, env = "CALLWATCH_HEALTH_P99_BUDGET", default_value = "1s", value_parser = humantime::parse_duration)]
    pub health_p99_budget: Duration,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// OTLP/gRPC endpoint of the collector, e.g. http://127.0.0.1:4317. Several (repeated or
    /// comma-separated): each request is split by trace id over them, as the OpenTelemetry
    /// Collector's loadbalancing exporter routes (which costs the generator a decode and
    /// encode per request). With `--protocol http/…`, one OTLP/HTTP address, e.g.
    /// http://127.0.0.1:4318 (requests go to its /v1/traces).
    #[arg(
        long,
        env = "CALLWATCH_SEND_TO",
        value_delimiter = ',',
        required = true
    )]
    pub send_to: Vec<String>,
    /// How long to send.
    #[arg(long, env = "CALLWATCH_LOAD_DURATION", default_value = "20s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Concurrent requests, each on its own connection.
    #[arg(long, env = "CALLWATCH_LOAD_CONNECTIONS", default_value_t = 4)]
    pub connections: usize,
    /// Spans per export request.
    #[arg(long, env = "CALLWATCH_LOAD_BATCH", default_value_t = 1000)]
    pub batch: usize,
    /// Target spans per second over all connections; unlimited when not given.
    #[arg(long, env = "CALLWATCH_LOAD_RATE")]
    pub rate: Option<u64>,
    /// Seed of the generated traffic.
    #[arg(long, env = "CALLWATCH_LOAD_SEED", default_value_t = 1)]
    pub seed: u64,
    /// Send the traffic of a generated platform of this many services (each calling up to
    /// three others, about 3 edges per service) instead of the demo's.
    #[arg(long, env = "CALLWATCH_LOAD_SERVICES")]
    pub services: Option<usize>,
    /// How requests are sent, as OTEL_EXPORTER_OTLP_PROTOCOL names it: `grpc`, or OTLP/HTTP
    /// with `http/protobuf` or `http/json` bodies. The same spans whichever it is.
    #[arg(
        long,
        env = "CALLWATCH_LOAD_PROTOCOL",
        value_enum,
        default_value = "grpc"
    )]
    pub protocol: LoadProtocol,
    /// Spread the requests' timestamps evenly over this much of the past (e.g. `50m`), so
    /// that a short run fills a long window; 0 puts every span at the moment it is sent.
    #[arg(long, env = "CALLWATCH_LOAD_BACKDATE", default_value = "0s", value_parser = humantime::parse_duration)]
    pub backdate: Duration,
    /// Write the span id (16 hex digits) of every span the collector acknowledged to FILE,
    /// one per line, to check later that each was stored exactly once.
    #[arg(long, value_name = "FILE")]
    pub acked_ids: Option<PathBuf>,
    /// Write every request sent to FILE: what regenerates it, and whether it was
    /// acknowledged (see --resend).
    #[arg(long, value_name = "FILE")]
    pub sent_log: Option<PathBuf>,
    /// Send again, in order and one at a time, the requests a --sent-log FILE lists (the
    /// same ids and timestamps), instead of new traffic.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["sent_log", "acked_ids"])]
    pub resend: Option<PathBuf>,
    #[command(flatten)]
    pub token: TokenFile,
}

/// How `callwatch load` sends its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadProtocol {
    #[value(name = "grpc")]
    Grpc,
    #[value(name = "http/protobuf")]
    HttpProtobuf,
    #[value(name = "http/json")]
    HttpJson,
}

/// `512`, `64KiB`, `16MiB`, `2GiB` (also KB/MB/GB as powers of 1000).
/// A refresh interval: readers must see every flushed segment before compaction merges it.
fn parse_refresh_interval(text: &str) -> Result<Duration, String> {
    let interval = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    let most = callwatch_storage::MOST_REFRESH_INTERVAL;
    if interval.is_zero() || interval > most {
        return Err(format!(
            "between 1ms and {}",
            humantime::format_duration(most)
        ));
    }
    Ok(interval)
}

pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as 512MiB"))?;
    let factor: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit {other:?}: use B, KiB, MiB or GiB"
            ));
        }
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("512"), Ok(512));
        assert_eq!(parse_bytes("16MiB"), Ok(16 << 20));
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("10 kb"), Ok(10_000));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("1XB").is_err());
    }
}
