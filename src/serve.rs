//! `callwatch serve`: open the store, start the listeners, and on SIGINT/SIGTERM stop
//! accepting, let in-flight requests finish, flush to Parquet and exit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use callwatch_collector::{AuthListener, Denied, Scope, TokenSpec, Tokens};
use callwatch_collector::{GraphMetrics, Pairer, PairingConfig};
use callwatch_collector::{Ingest, Limits, TraceService, http_router};
use callwatch_query::breakers::{BreakerOptions, BreakerTracker};
use callwatch_query::stats::HealthThresholds;
use callwatch_query::{ReadSettings, Reads};
use callwatch_storage::{CallDeriver, FsyncPolicy, SegmentLocation, Store, StoreConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Fsync, Listener as TlsListener, Role, ServeArgs, TlsArgs};
use crate::config_file::ConfigFile;
use crate::listener::{self, ConnectionLimits};
use crate::tls::Tls;

/// How long in-flight requests get to finish once shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    start(&args).await?.run_until_signal().await
}

/// Reads the config file the flags name.
pub fn config_file(args: &ServeArgs) -> anyhow::Result<ConfigFile> {
    ConfigFile::load(args.config.as_deref())
}

/// A started server: listeners bound and serving, maintenance running.
pub struct Running {
    /// The OTLP/gRPC listener; `None` on a query node.
    pub grpc: Option<SocketAddr>,
    pub http: SocketAddr,
    store: Store,
    ready: Arc<AtomicBool>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    signals: ShutdownSignals,
}

/// Opens the store and starts the listeners (OTLP gRPC and HTTP, HTTP, Postgres if asked).
pub async fn start(args: &ServeArgs) -> anyhow::Result<Running> {
    start_with(args, config_file(args)?).await
}

/// [`start`] with the config file already read.
pub async fn start_with(args: &ServeArgs, config: ConfigFile) -> anyhow::Result<Running> {
    // First of all, so that a signal during start-up is a graceful stop, not a kill.
    let signals = ShutdownSignals::install()?;
    let role = args.role;
    let (ingests, queries) = (role != Role::Query, role != Role::Ingest);
    anyhow::ensure!(
        queries || args.pg.is_none(),
        "--pg serves queries: not with --role ingest"
    );
    anyhow::ensure!(
        queries || args.ballista.url.is_none(),
        "--ballista runs queries: not with --role ingest"
    );
    let tls = ListenerTls::load(&args.tls)?;
    let tokens = Arc::new(tokens(args, &config)?);
    let exposed = tls.exposed(args);
    if !exposed.is_empty() {
        if tokens.enabled() {
            tracing::warn!(
                "{} listen beyond this machine without TLS: tokens and traces cross the \
                 network in clear text (see README, \"Security\")",
                exposed.join(", ")
            );
        } else {
            tracing::warn!(
                "{} listen beyond this machine without TLS or tokens: anyone who reaches them \
                 can send spans and read every trace (see README, \"Security\")",
                exposed.join(", ")
            );
        }
    }
    let cors = callwatch_collector::CorsOrigins::parse(&args.otlp_http_cors_origins)
        .map_err(|e| anyhow::anyhow!("--otlp-http-cors-origins: {e}"))?;
    // A query node gets calls a segment at a time, from each collector at its own flush:
    // an earlier-starting call may come a flush and a refresh after a later one.
    let calls_late_by = match role {
        Role::Query => args.pairing_wait + args.flush_interval + args.refresh_interval,
        _ => args.pairing_wait,
    };
    let mut breaker_options = BreakerOptions::new(&config.breakers, calls_late_by)
        .map_err(|e| anyhow::anyhow!("in the config file: {e}"))?;
    if role == Role::Query {
        breaker_options = breaker_options.held_by_arrival();
    }
    let webhook = config.webhook()?;
    let graph_metrics = Arc::new(GraphMetrics::default());
    let segments = config
        .storage
        .location(args.storage.as_deref())
        .context("--storage")?;
    // In a bucket other collectors may share, a producer waits for their consumers' orphans:
    // their wait and flush, and this node's refresh (the same settings on every collector),
    // and the time flushes and reads take.
    let remote_wait = segments.is_some().then(|| {
        args.pairing_wait + args.flush_interval + args.refresh_interval + Duration::from_secs(2)
    });
    let pairer: Option<Box<dyn CallDeriver>> = (ingests && !args.no_pairing).then(|| {
        let config = PairingConfig {
            wait: args.pairing_wait,
            max_pending: args.pairing_max_pending,
            remote_wait,
        };
        Box::new(Pairer::new(config, graph_metrics.clone())) as Box<dyn CallDeriver>
    });
    let segments_at = segments.as_ref().map_or_else(
        || args.data_dir.display().to_string(),
        |location| location.url().to_string(),
    );
    let config = store_config(args, segments);
    let store = if ingests {
        Store::open_with(config, pairer).await
    } else {
        Store::open_reader(config).await
    };
    let store = store.with_context(|| {
        format!(
            "opening the data directory {} (segments at {segments_at})",
            args.data_dir.display()
        )
    })?;
    // By default a quarter of the memory budget, and never less than one largest request
    // with what it decodes to (two to three times its size for spans as exporters send them).
    let inflight_bytes = args
        .ingest_inflight_bytes
        .unwrap_or((args.memory_limit / 4).max(4 * args.max_message_size));
    let ingest = ingests.then(|| {
        Arc::new(Ingest::new(
            store.clone(),
            Limits::default(),
            inflight_bytes,
            graph_metrics.clone(),
        ))
    });
    let connections = ConnectionLimits {
        header_timeout: args.header_timeout,
        max_header_bytes: args.max_header_size,
        idle_timeout: args.idle_timeout,
        max_streams: args.max_concurrent_streams,
    };
    let reads = Reads::new(read_settings(args)).context("starting the query runtime")?;
    let ready = Arc::new(AtomicBool::new(false));
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    store.spawn_maintenance(cancel.clone(), &tracker);

    crate::tls::spawn_reloader(tls.all(), &tracker, cancel.clone())?;
    let mut grpc_addr = None;
    if let Some(ingest) = &ingest {
        let grpc = bind(args.otlp_grpc, "OTLP/gRPC").await?;
        let otlp_http = bind(args.otlp_http, "OTLP/HTTP").await?;
        grpc_addr = Some(grpc.local_addr()?);
        // Tests and scripts read these lines to learn the ports (the flags may say port 0).
        announce(&format!("listening otlp-grpc {}", grpc.local_addr()?));
        announce(&format!("listening otlp-http {}", otlp_http.local_addr()?));
        listener::serve(
            &tracker,
            &cancel,
            grpc,
            tls.otlp_grpc.clone(),
            TraceService::new(ingest.clone(), args.max_message_size, tokens.clone()),
            connections,
            "OTLP/gRPC",
        );
        listener::serve(
            &tracker,
            &cancel,
            otlp_http,
            tls.otlp_http.clone(),
            http_router(ingest.clone(), args.max_message_size, cors, tokens.clone()),
            connections,
            "OTLP/HTTP",
        );
    }
    let http = bind(args.http, "HTTP").await?;
    let http_addr = http.local_addr()?;
    announce(&format!("listening http {http_addr}"));
    let events = match webhook.filter(|_| queries) {
        Some(webhook) => Some(crate::webhook::spawn(webhook, &tracker, cancel.clone())?),
        None => None,
    };
    let query = callwatch_query::QueryEngine::with_reads(
        store.clone(),
        callwatch_query::QueryLimits {
            memory_bytes: args.query_memory,
            timeout: args.query_timeout,
            max_rows: args.query_max_rows,
        },
        reads,
    )
    .with_breakers(
        BreakerTracker::new(breaker_options, events)
            .with_memory_account(store.memory_account("breakers")),
    );
    let query = match args.ballista.cluster()? {
        Some(cluster) => {
            tracing::info!(scheduler = cluster.url(), "queries run on Ballista");
            query.with_cluster(cluster)
        }
        None => query,
    };
    if queries {
        spawn_followers(&query, &tracker, &cancel);
    }
    if !ingests {
        // No pairer makes the service-graph series here: they come from the stored calls.
        let (metrics, store, cancel) = (graph_metrics.clone(), store.clone(), cancel.clone());
        tracker.spawn(async move {
            if let Err(error) = metrics
                .follow_stored_calls(&store, cancel.cancelled())
                .await
            {
                tracing::error!(%error, "following the stored calls for /metrics failed");
            }
        });
    }
    if let Some(addr) = args.pg {
        let listener = bind(addr, "Postgres").await?;
        announce(&format!("listening postgres {}", listener.local_addr()?));
        let passwords = tokens.clone();
        let failures = tokens.clone();
        let auth = callwatch_query::PgAuth {
            user: args.pg_user.clone(),
            password: args.pg_password.clone(),
            // A read token given in a file is the password of its name.
            passwords: tokens.enabled().then(|| {
                Arc::new(move |user: &str| passwords.read_secret(user).map(str::to_string))
                    as callwatch_query::PasswordOf
            }),
            on_failure: Some(Arc::new(move || {
                failures.count_failure(AuthListener::Postgres, Denied::Unauthenticated)
            })),
            tls: tls
                .postgres
                .clone()
                .map(|tls| Arc::new(move || tls.acceptor()) as Arc<dyn Fn() -> _ + Send + Sync>),
        };
        let (query, cancel) = (query.clone(), cancel.clone());
        tracker.spawn(async move {
            if let Err(error) = callwatch_query::serve_postgres(listener, query, auth, cancel).await
            {
                tracing::error!(%error, "Postgres server failed");
            }
        });
    }
    let app = callwatch_ui::router(callwatch_ui::AppState {
        ingest: ingest.clone(),
        serves_queries: queries,
        query,
        ready: ready.clone(),
        graph_metrics,
        health: HealthThresholds {
            degraded_error_rate: args.health.health_degraded_error_rate,
            failing_error_rate: args.health.health_failing_error_rate,
            p99_budget: args.health.health_p99_budget,
        },
        layouts: Default::default(),
        auth: Arc::new(callwatch_ui::WebAuth::new(
            tokens.clone(),
            args.session_lifetime,
            tls.http.is_some(),
        )),
    });
    listener::serve(
        &tracker,
        &cancel,
        http,
        tls.http.clone(),
        app,
        connections,
        "HTTP",
    );
    ready.store(true, Ordering::Relaxed);
    tracing::info!(
        data_dir = %args.data_dir.display(),
        segments = %segments_at,
        node = store.node_id(),
        ?role,
        "callwatch is serving"
    );
    Ok(Running {
        grpc: grpc_addr,
        http: http_addr,
        store,
        ready,
        cancel,
        tracker,
        signals,
    })
}

/// The breakers replay the stored calls, then follow new ones as they are derived (or as
/// other nodes' segments bring them); the graph's pieces are computed as calls appear.
fn spawn_followers(
    query: &callwatch_query::QueryEngine,
    tracker: &TaskTracker,
    cancel: &CancellationToken,
) {
    let (breakers, breakers_cancel) = (query.clone(), cancel.clone());
    tracker.spawn(async move {
        if let Err(error) = breakers.breakers().start(breakers.store()).await {
            tracing::error!(%error, "replaying the stored calls through the breakers failed");
        }
        // Often, so that a reported state is shown within about a second of its span.
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = breakers_cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            let poll = breakers.clone();
            match tokio::task::spawn_blocking(move || poll.breakers().poll()).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "following the breakers failed"),
                Err(error) => tracing::error!(%error, "the breaker task failed"),
            }
        }
    });
    // The graph's pieces of each new hot batch and segment are computed as it appears, not
    // by the first graph query after it; often enough that a batch has its pieces before a
    // flush writes it, so that its segment's are added up from them, not read back. The
    // pages' breakdown pieces likewise, in a task of their own: making a day of them after
    // a restart must not hold up the graph's.
    for breakdowns in [false, true] {
        let (warm, warm_cancel) = (query.clone(), cancel.clone());
        tracker.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = warm_cancel.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let warmed = if breakdowns {
                    warm.details().warm(warm.store()).await
                } else {
                    warm.rollups().warm(warm.store()).await
                };
                if let Err(error) = warmed {
                    tracing::warn!(%error, breakdowns, "computing the pieces of new calls failed");
                }
            }
        });
    }
}

impl Running {
    /// Cancelled when shutdown begins.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Serves until SIGINT or SIGTERM, then stops accepting, lets requests in flight
    /// finish, flushes everything to Parquet and returns.
    pub async fn run_until_signal(mut self) -> anyhow::Result<()> {
        self.signals.wait().await;
        tracing::info!("shutting down: no new requests, finishing those in flight");
        self.ready.store(false, Ordering::Relaxed);
        self.cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("requests still open after {DRAIN_TIMEOUT:?}; flushing anyway");
        }
        let report = self.store.close().await.context("final flush")?;
        tracing::info!(spans = report.rows, "flushed; bye");
        Ok(())
    }
}

/// Writes a line to stdout for whoever reads it. A server must not die because nobody does
/// (stdout closed, or a reader gone): `println!` would panic.
pub fn announce(line: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
}

fn store_config(args: &ServeArgs, segments: Option<SegmentLocation>) -> StoreConfig {
    StoreConfig {
        segments,
        node_id: args.node_id.clone(),
        refresh_interval: args.refresh_interval,
        fsync: match args.wal_fsync {
            Fsync::Always => FsyncPolicy::Always,
            Fsync::Never => FsyncPolicy::Never,
        },
        queue_depth: args.ingest_queue,
        memory_limit: args.memory_limit,
        flush_interval: args.flush_interval,
        flush_rows: args.flush_spans,
        retention: args.retention,
        // Longer than any query runs, so no query loses a file it listed.
        delete_grace: (args.query_timeout * 2).max(Duration::from_secs(60)),
        ..StoreConfig::new(&args.data_dir)
    }
}

/// The TLS of each listener that serves it.
struct ListenerTls {
    otlp_grpc: Option<Arc<Tls>>,
    otlp_http: Option<Arc<Tls>>,
    http: Option<Arc<Tls>>,
    postgres: Option<Arc<Tls>>,
}

impl ListenerTls {
    fn load(args: &TlsArgs) -> anyhow::Result<Self> {
        // HTTP/2 first: gRPC needs it.
        const HTTP: &[&[u8]] = &[b"h2", b"http/1.1"];
        let load = |listener: TlsListener, alpn: &[&[u8]]| {
            args.files(listener)
                .map(|files| Tls::load(files, alpn))
                .transpose()
        };
        let tls = Self {
            otlp_grpc: load(TlsListener::OtlpGrpc, HTTP)?,
            otlp_http: load(TlsListener::OtlpHttp, HTTP)?,
            http: load(TlsListener::Http, HTTP)?,
            postgres: load(TlsListener::Postgres, &[b"postgresql"])?,
        };
        anyhow::ensure!(
            args.tls_client_ca.is_none() || !tls.all().is_empty(),
            "--tls-client-ca needs a certificate: --tls-cert and --tls-key, or a listener's own"
        );
        Ok(tls)
    }

    /// The listeners on an address other machines can reach that do not serve TLS.
    fn exposed(&self, args: &ServeArgs) -> Vec<&'static str> {
        let listeners = [
            ("OTLP/gRPC", Some(args.otlp_grpc), &self.otlp_grpc),
            ("OTLP/HTTP", Some(args.otlp_http), &self.otlp_http),
            ("HTTP", Some(args.http), &self.http),
            ("Postgres", args.pg, &self.postgres),
        ];
        listeners
            .into_iter()
            .filter(|(_, addr, tls)| addr.is_some_and(|a| !a.ip().is_loopback()) && tls.is_none())
            .map(|(name, _, _)| name)
            .collect()
    }

    fn all(&self) -> Vec<Arc<Tls>> {
        [&self.otlp_grpc, &self.otlp_http, &self.http, &self.postgres]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }
}

/// The tokens of the config file and of the token files.
fn tokens(args: &ServeArgs, config: &ConfigFile) -> anyhow::Result<Tokens> {
    let mut specs = Vec::new();
    for entry in &config.auth.tokens {
        let scopes = entry
            .scopes
            .iter()
            .map(|scope| Scope::parse(scope))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("[[auth.tokens]] {:?}: {e}", entry.name))?;
        specs.push(
            TokenSpec::from_hash(&entry.name, &entry.sha256, scopes)
                .map_err(|e| anyhow::anyhow!("[[auth.tokens]]: {e}"))?,
        );
    }
    let files = [
        (
            &args.ingest_token_file,
            "ingest",
            Scope::Ingest,
            "--ingest-token-file",
        ),
        (
            &args.read_token_file,
            "read",
            Scope::Read,
            "--read-token-file",
        ),
    ];
    for (file, name, scope, flag) in files {
        let Some(file) = file else { continue };
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("{flag}: reading {}", file.display()))?;
        let secret = text.lines().next().unwrap_or("").trim();
        specs.push(
            TokenSpec::from_secret(name, secret, vec![scope])
                .map_err(|e| anyhow::anyhow!("{flag} {}: {e}", file.display()))?,
        );
    }
    Tokens::new(specs).map_err(|e| anyhow::anyhow!("tokens: {e}"))
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {what} listener to {addr}"))
}

/// The read runtime's share of the machine, from the flags or the machine's cores.
fn read_settings(args: &ServeArgs) -> ReadSettings {
    let mut settings = match args.query_threads {
        Some(threads) => ReadSettings::with_threads(threads),
        None => ReadSettings::for_this_machine(),
    };
    if let Some(concurrency) = args.query_concurrency {
        settings.concurrency = concurrency.max(1);
        settings.queue = settings.concurrency;
    }
    settings
}

/// SIGINT and SIGTERM, caught from the moment they are installed.
struct ShutdownSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::config::{Cli, Command};

    fn serve_args(flags: &[&str]) -> ServeArgs {
        let cli = Cli::try_parse_from(["callwatch", "serve"].iter().chain(flags)).unwrap();
        match cli.command {
            Command::Serve(args) => args,
            _ => unreachable!(),
        }
    }

    #[test]
    fn listeners_other_machines_reach_without_tls_are_named() {
        let none = ListenerTls {
            otlp_grpc: None,
            otlp_http: None,
            http: None,
            postgres: None,
        };
        // The OTLP listeners default to every address.
        let args = serve_args(&["--http", "127.0.0.1:8080"]);
        assert_eq!(none.exposed(&args), ["OTLP/gRPC", "OTLP/HTTP"]);
        let args = serve_args(&[
            "--otlp-grpc",
            "127.0.0.1:4317",
            "--otlp-http",
            "[::1]:4318",
            "--http",
            "127.0.0.1:8080",
            "--pg",
            "10.0.0.5:5432",
        ]);
        assert_eq!(none.exposed(&args), ["Postgres"]);
        let args = serve_args(&[
            "--otlp-grpc",
            "127.0.0.1:4317",
            "--otlp-http",
            "127.0.0.1:4318",
            "--http",
            "127.0.0.1:8080",
        ]);
        assert!(none.exposed(&args).is_empty());
    }
}
