//! The Postgres wire (`--pg`): the real `psql` client and a driver using prepared statements
//! (as Grafana's PostgreSQL data source does) run the same read-only SQL as the HTTP API;
//! with a password configured, it is required. Needs `psql` (installed by `.ci/run`); under
//! CI=true a missing one fails the test instead of skipping it.

use std::net::SocketAddr;
use std::process::{Command, Output};

use crate::common::Server;
use crate::common::requests::numbered_span;

fn psql_installed() -> bool {
    Command::new("psql")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success())
}

/// `psql -At -c SQL` as user `postgres`, never prompting for a password.
fn psql(addr: SocketAddr, password: Option<&str>, sql: &str) -> Output {
    let mut command = Command::new("psql");
    command
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(["-U", "postgres", "-w", "-At", "-c", sql])
        .env_remove("PGPASSWORD")
        .env("PGCONNECT_TIMEOUT", "10");
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    command.output().unwrap()
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

async fn send_spans(server: &Server, count: u32) {
    let spans = (0..count).map(|i| numbered_span(1, 0, i)).collect();
    server.post_spans("order-service", spans).await;
}

pub(crate) fn require_psql() -> bool {
    if psql_installed() {
        return true;
    }
    assert!(
        std::env::var("CI").is_err(),
        "CI=true but psql is missing: .ci/run installs postgresql-client"
    );
    eprintln!("skipped: psql is not installed");
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_runs_queries_and_is_refused_everything_else() {
    if !require_psql() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--pg", "127.0.0.1:0"]);
    let pg = server.announced("postgres");
    send_spans(&server, 7).await;

    let output = psql(pg, None, "SELECT count(*) FROM spans");
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(stdout, "7");

    let output = psql(
        pg,
        None,
        "SELECT service_name, span_kind, attributes['http.route'] FROM spans LIMIT 1",
    );
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(stdout, "order-service|SERVER|/v1/users/{id}");

    for statement in [
        "DROP TABLE spans",
        "CREATE TABLE t AS SELECT * FROM spans",
        "DELETE FROM spans",
        "COPY (SELECT 1) TO '/tmp/callwatch-pg-copy.csv'",
    ] {
        let output = psql(pg, None, statement);
        let (_, stderr) = text(&output);
        assert!(!output.status.success(), "{statement} ran");
        assert!(stderr.contains("not allowed"), "{statement}: {stderr}");
    }
    // The session statements clients send on their own are answered.
    let output = psql(pg, None, "SET statement_timeout = 5000; SELECT 1 + 1");
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.ends_with('2'), "{stdout}");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_take_parameters_and_stay_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &["--pg", "127.0.0.1:0"]);
    let pg = server.announced("postgres");
    send_spans(&server, 4).await;

    let (client, _connection) = crate::common::pg_client(pg).await;
    let rows = client
        .query(
            "SELECT span_name, duration_ns FROM spans WHERE service_name = $1 ORDER BY span_id",
            &[&"order-service"],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 4);
    let name: &str = rows[0].get(0);
    let duration: i64 = rows[0].get(1);
    assert_eq!((name, duration), ("GET /v1/users/{id}", 2_000_000));
    let rows = client
        .query(
            "SELECT count(*) FROM spans WHERE service_name = $1",
            &[&"nobody"],
        )
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 0);

    let refused = client.query("DROP TABLE spans", &[]).await.unwrap_err();
    let message = refused.as_db_error().unwrap().message().to_string();
    assert!(message.contains("not allowed"), "{message}");
    let rows = client
        .query("SELECT count(*) FROM spans", &[])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, i64>(0), 4);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_password_is_required() {
    if !require_psql() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &["--pg", "127.0.0.1:0", "--pg-password", "s3cret"],
    );
    let pg = server.announced("postgres");
    send_spans(&server, 3).await;

    let output = psql(pg, None, "SELECT count(*) FROM spans");
    let (stdout, stderr) = text(&output);
    assert!(!output.status.success(), "no password, yet: {stdout}");
    assert!(stderr.contains("password"), "{stderr}");

    let output = psql(pg, Some("wrong"), "SELECT count(*) FROM spans");
    assert!(!output.status.success());

    let output = psql(pg, Some("s3cret"), "SELECT count(*) FROM spans");
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(stdout, "3");
    server.stop();
}
