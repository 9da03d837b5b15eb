//! Tokens: once any exists, every route of `--http` and every OTLP export needs one with its
//! scope; the dashboard logs in with a token and a session cookie; Postgres proves a token
//! or password with SCRAM-SHA-256. Refusals are counted by listener.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use callwatch_collector::OtlpClient;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::InMemorySpanExporter;
use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::Server;
use crate::common::browser::{Tab, chromium, launch};
use crate::common::requests::{numbered_span, request};
use crate::otlp_exporters::{provider, record_spans};
use crate::postgres::require_psql;

const READ: &str = "r3ad-token-for-grafana";
const INGEST: &str = "1ngest-token-for-agents";
const ADMIN: &str = "adm1n-token-for-ops";
/// Only in the stored spans: an answer that holds it holds data.
const SECRET_SERVICE: &str = "ledger-secret-svc";

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A config file with a read and an admin token, and a file with the ingest token.
fn token_flags(dir: &Path) -> Vec<String> {
    let config = dir.join("callwatch.toml");
    std::fs::write(
        &config,
        format!(
            r#"
            [[auth.tokens]]
            name = "grafana"
            sha256 = "{}"
            scopes = ["read"]

            [[auth.tokens]]
            name = "ops"
            sha256 = "{}"
            scopes = ["admin"]
            "#,
            sha256_hex(READ),
            sha256_hex(ADMIN)
        ),
    )
    .unwrap();
    let ingest = dir.join("ingest.token");
    std::fs::write(&ingest, format!("{INGEST}\n")).unwrap();
    vec![
        "--config".into(),
        config.display().to_string(),
        "--ingest-token-file".into(),
        ingest.display().to_string(),
    ]
}

fn args(flags: &[String]) -> Vec<&str> {
    flags.iter().map(String::as_str).collect()
}

fn basic(user: &str, password: &str) -> String {
    let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {pair}")
}

/// A route's path with every `{parameter}` filled in with a value of no meaning.
fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').unwrap() + open;
        out.push_str(&rest[..open]);
        out.push_str("0af7651916cd43dd8448eb211c80319c");
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

async fn call(
    client: &reqwest::Client,
    server: &Server,
    route: &callwatch_ui::Route,
    headers: &[(&str, &str)],
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let url = format!("http://{}{}", server.http, concrete(route.path));
    let mut request = client.request(route.method.clone(), url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if route.method == reqwest::Method::POST {
        request = request
            .header("content-type", "application/json")
            .body(r#"{"sql": "SELECT service_name FROM spans"}"#);
    }
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    (status, headers, response.text().await.unwrap())
}

async fn metric_with(server: &Server, token: &str, sample: &str) -> f64 {
    crate::common::metric_with_token(server, Some(token), sample).await
}

/// A client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_and_rpc_needs_its_scope_once_tokens_exist() {
    let dir = tempfile::tempdir().unwrap();
    let flags = token_flags(dir.path());
    let server = Server::start(&dir.path().join("data"), &args(&flags));
    let client = no_redirects();
    let spans = request(
        SECRET_SERVICE,
        (0..5).map(|i| numbered_span(7, 0, i)).collect(),
    );

    // OTLP/gRPC: no token, a token that only reads, then the ingest token.
    let mut grpc = OtlpClient::connect(&server.grpc_url()).await.unwrap();
    let status = grpc.export(&spans).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    let mut reader = grpc.clone().with_token(READ).unwrap();
    let status = reader.export(&spans).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    let mut sender = grpc.clone().with_token(INGEST).unwrap();
    sender.export(&spans).await.unwrap();

    // OTLP/HTTP likewise, and the real exporter with the token in its headers.
    let post = |token: Option<&str>| {
        let mut request = client
            .post(server.traces_url())
            .header("content-type", "application/x-protobuf")
            .body(prost::Message::encode_to_vec(&spans));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let refused = post(None).await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(
        refused.headers()["www-authenticate"],
        "Bearer realm=\"callwatch\""
    );
    assert_eq!(post(Some(READ)).await.unwrap().status(), 403);
    assert_eq!(post(Some(ADMIN)).await.unwrap().status(), 200);
    let memory = InMemorySpanExporter::default();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(server.traces_url())
        .with_headers(HashMap::from([(
            "authorization".to_string(),
            format!("Bearer {INGEST}"),
        )]))
        .build()
        .unwrap();
    let sdk = provider(exporter, &memory, "checkout-with-token");
    record_spans(&sdk, "checkout-with-token");
    sdk.shutdown().unwrap();

    // Readable with the read token, Bearer or Basic.
    let query = "SELECT service_name, count(*) FROM spans GROUP BY 1 ORDER BY 1";
    let expected = serde_json::json!([["checkout-with-token", 3], [SECRET_SERVICE, 10]]);
    let deadline = Instant::now() + Duration::from_secs(30);
    for authorization in [format!("Bearer {READ}"), basic("grafana", READ)] {
        loop {
            let response = client
                .post(format!("http://{}/api/v1/sql", server.http))
                .header("authorization", &authorization)
                .body(query)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            let rows = response.json::<serde_json::Value>().await.unwrap()["rows"].clone();
            if rows == expected {
                break;
            }
            assert!(Instant::now() < deadline, "stored: {rows}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Every route, from the router's own list.
    let routes = callwatch_ui::routes();
    assert!(routes.len() > 30, "{} routes", routes.len());
    let mut refused = 0;
    for route in &routes {
        let what = format!("{} {}", route.method, route.path);
        if route.access == callwatch_ui::Access::Open {
            let (status, _, _) = call(&client, &server, route, &[]).await;
            assert!(status != 401 && status != 403, "{what}: {status}");
            continue;
        }
        for headers in [
            vec![],
            vec![("accept", "text/html")],
            vec![("authorization", "Bearer not-a-token")],
        ] {
            let (status, response_headers, body) = call(&client, &server, route, &headers).await;
            assert_eq!(status, 401, "{what} with {headers:?}: {body}");
            assert_eq!(
                response_headers["www-authenticate"],
                "Bearer realm=\"callwatch\""
            );
            assert!(!body.contains(SECRET_SERVICE), "{what} told: {body}");
            refused += 1;
        }
        for authorization in [format!("Bearer {INGEST}"), basic("agent", INGEST)] {
            let headers = [("authorization", authorization.as_str())];
            let (status, _, body) = call(&client, &server, route, &headers).await;
            assert_eq!(status, 403, "{what}: {body}");
            assert!(!body.contains(SECRET_SERVICE), "{what} told: {body}");
            refused += 1;
        }
        for token in [READ, ADMIN] {
            let authorization = format!("Bearer {token}");
            let headers = [("authorization", authorization.as_str())];
            let (status, _, body) = call(&client, &server, route, &headers).await;
            assert!(status != 401 && status != 403, "{what}: {status} {body}");
        }
    }
    // The data is there for a reader, so the refusals above held it back.
    let url = format!("http://{}/api/services", server.http);
    let services = client.get(&url).bearer_auth(READ).send().await.unwrap();
    assert!(services.text().await.unwrap().contains(SECRET_SERVICE));

    // Counted by listener, with no token in the text.
    let unauthenticated = |listener: &str| {
        format!(
            "callwatch_auth_failures_total{{listener=\"{listener}\",reason=\"unauthenticated\"}}"
        )
    };
    let forbidden = |listener: &str| {
        format!("callwatch_auth_failures_total{{listener=\"{listener}\",reason=\"forbidden\"}}")
    };
    assert_eq!(
        metric_with(&server, READ, &unauthenticated("otlp_grpc")).await,
        1.0
    );
    assert_eq!(
        metric_with(&server, READ, &forbidden("otlp_grpc")).await,
        1.0
    );
    assert_eq!(
        metric_with(&server, READ, &unauthenticated("otlp_http")).await,
        1.0
    );
    assert_eq!(
        metric_with(&server, READ, &forbidden("otlp_http")).await,
        1.0
    );
    let http_refusals = metric_with(&server, READ, &unauthenticated("http")).await
        + metric_with(&server, READ, &forbidden("http")).await;
    assert_eq!(http_refusals, refused as f64);
    let metrics = client
        .get(format!("http://{}/metrics", server.http))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let log = std::fs::read_to_string(&server.log).unwrap();
    for secret in [READ, INGEST, ADMIN, "not-a-token"] {
        assert!(
            !metrics.contains(secret) && !log.contains(secret),
            "{secret} leaked"
        );
        assert!(
            !log.contains(&sha256_hex(secret)),
            "the hash of {secret} leaked"
        );
    }

    // The command line sends a token from a file.
    let read_file = dir.path().join("read.token");
    std::fs::write(&read_file, format!("{READ}\n")).unwrap();
    let url = format!("http://{}", server.http);
    let count = "SELECT count(*) AS spans FROM spans";
    let read_file = read_file.to_str().unwrap();
    let output =
        crate::common::callwatch(&["sql", "--server", &url, "--token-file", read_file, count]);
    assert!(output.contains("| 13 "), "{output}");
    let refused = Command::new(env!("CARGO_BIN_EXE_callwatch"))
        .args(["sql", "--server", &url, count])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));

    // Liveness and readiness answer anyone.
    for path in ["/healthz", "/readyz"] {
        let response = client
            .get(format!("http://{}{path}", server.http))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    server.stop();
}

/// The value of the session cookie a response sets, after checking its attributes.
fn session_cookie(response: &reqwest::Response) -> String {
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=3600"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "no TLS here: {cookie}");
    cookie.split(';').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_session_starts_with_a_token_and_ends_with_logout() {
    let dir = tempfile::tempdir().unwrap();
    let mut flags = token_flags(dir.path());
    flags.extend(["--session-lifetime".into(), "1h".into()]);
    let server = Server::start(&dir.path().join("data"), &args(&flags));
    let client = no_redirects();
    let base = format!("http://{}", server.http);
    let login = |form: String, origin: Option<&str>| {
        let mut request = client
            .post(format!("{base}/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send()
    };

    let wrong = login("token=nope&next=%2Fbreakers".to_string(), None)
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.text().await.unwrap().contains("not known"));
    let ingest = login(format!("token={INGEST}"), None).await.unwrap();
    assert_eq!(ingest.status(), 403);
    // A login posted by another site's page.
    let forged = login(format!("token={READ}"), Some("https://evil.test"))
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    // Elsewhere after login is a path here, never another site.
    let away = login(format!("token={READ}&next=https%3A%2F%2Fevil.test"), None)
        .await
        .unwrap();
    assert_eq!(away.headers()["location"], "/");

    let own_origin = base.clone();
    let ok = login(format!("token={READ}&next=%2Fbreakers"), Some(&own_origin))
        .await
        .unwrap();
    assert_eq!(ok.status(), 303);
    assert_eq!(ok.headers()["location"], "/breakers");
    let cookie = session_cookie(&ok);

    let page = client
        .get(format!("{base}/graph"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("action=\"/logout\""));
    // A state change made with the cookie from another site's page is refused.
    let sql = |origin: &str| {
        client
            .post(format!("{base}/api/v1/sql"))
            .header("cookie", &cookie)
            .header("origin", origin)
            .body("SELECT 1")
            .send()
    };
    assert_eq!(sql("https://evil.test").await.unwrap().status(), 403);
    assert_eq!(sql(&own_origin).await.unwrap().status(), 200);

    let logout = client
        .post(format!("{base}/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 303);
    assert_eq!(logout.headers()["location"], "/login");
    assert!(
        logout.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    // The old cookie is worth nothing now.
    let after = client
        .get(format!("{base}/graph"))
        .header("cookie", &cookie)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
    let body = after.text().await.unwrap();
    assert!(
        body.contains("action=\"/login\"") && body.contains("value=\"/graph\""),
        "{body}"
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_logs_in_sees_the_map_and_logs_out() {
    let Some(chromium) = chromium() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let flags = token_flags(dir.path());
    let server = Server::start(&dir.path().join("data"), &args(&flags));
    let mut sender = OtlpClient::connect(&server.grpc_url())
        .await
        .unwrap()
        .with_token(INGEST)
        .unwrap();
    // One call: web-shop's client span, and the server span under it.
    let mut client_span = numbered_span(9, 0, 0);
    client_span.kind = 3;
    let mut server_span = numbered_span(9, 0, 1);
    server_span.parent_span_id = client_span.span_id.clone();
    sender
        .export(&request("web-shop", vec![client_span]))
        .await
        .unwrap();
    sender
        .export(&request(SECRET_SERVICE, vec![server_span]))
        .await
        .unwrap();

    let (browser, events) = launch(chromium, dir.path()).await;
    let tab = Tab::open(&browser, format!("http://{}", server.http)).await;
    tab.visit("/graph").await;
    assert_eq!(tab.texts("main.login h1").await, ["Log in"]);
    tab.eval(&format!(
        "document.querySelector('input[name=token]').value = '{READ}'; \
         document.querySelector('main.login form').submit(); true"
    ))
    .await;
    // The login form answers at /graph itself: wait for the page it leads to, or the next
    // visit would cancel the login's answer and its cookie.
    tab.wait_until_gone("main.login").await;
    assert_eq!(tab.path().await, "/graph");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Loaded anew each time: the map shows a call once its pieces are made.
        tab.visit("/graph").await;
        let nodes = tab.attributes("svg.map a.node", "data-node").await;
        if nodes.iter().any(|node| node == SECRET_SERVICE) {
            break;
        }
        if Instant::now() >= deadline {
            let page = tab.eval("document.body.innerText.slice(0, 600)").await;
            panic!("no map after login: {nodes:?}: {page}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The cookie is out of scripts' reach.
    assert_eq!(tab.eval("document.cookie").await, "");
    tab.eval("document.querySelector('form.logout').submit(); true")
        .await;
    tab.wait_for_path("/login").await;
    tab.visit("/graph").await;
    assert_eq!(tab.texts("main.login h1").await, ["Log in"]);
    let errors: Vec<String> = tab
        .errors()
        .into_iter()
        .filter(|e| !e.contains("401"))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    drop(browser);
    events.abort();
    server.stop();
}

/// The first authentication request the server sends after a startup message for `user`.
async fn authentication_asked(addr: std::net::SocketAddr, user: &str) -> (i32, String) {
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut body = Vec::new();
    body.extend(196_608_i32.to_be_bytes()); // protocol 3.0
    for part in ["user", user, "database", "callwatch", ""] {
        body.extend(part.as_bytes());
        body.push(0);
    }
    let mut message = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    message.extend(body);
    socket.write_all(&message).await.unwrap();
    let mut head = [0u8; 5];
    socket.read_exact(&mut head).await.unwrap();
    assert_eq!(head[0], b'R', "an authentication request");
    let length = i32::from_be_bytes(head[1..].try_into().unwrap()) as usize;
    let mut rest = vec![0u8; length - 4];
    socket.read_exact(&mut rest).await.unwrap();
    let code = i32::from_be_bytes(rest[..4].try_into().unwrap());
    (code, String::from_utf8_lossy(&rest[4..]).to_string())
}

fn psql(addr: std::net::SocketAddr, user: &str, password: &str) -> std::process::Output {
    Command::new("psql")
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(["-U", user, "-w", "-At", "-c", "SELECT count(*) FROM spans"])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_proves_a_read_token_with_scram() {
    let dir = tempfile::tempdir().unwrap();
    let mut flags = token_flags(dir.path());
    let read_file = dir.path().join("read.token");
    std::fs::write(
        &read_file,
        format!("{READ}\n# the first line is the token\n"),
    )
    .unwrap();
    flags.extend([
        "--read-token-file".into(),
        read_file.display().to_string(),
        "--pg".into(),
        "127.0.0.1:0".into(),
    ]);
    // Without the config file: it holds the same token, which may be configured once only.
    let data = dir.path().join("data");
    let server = Server::start(&data, &args(&flags[2..]));
    let pg = server.announced("postgres");

    // SASL with SCRAM-SHA-256 (code 10), whatever the user: no cleartext is asked for, and
    // whether a user exists is not told.
    for user in ["read", "nobody"] {
        let (code, mechanisms) = authentication_asked(pg, user).await;
        assert_eq!(code, 10, "SASL for {user}");
        assert!(mechanisms.starts_with("SCRAM-SHA-256\0"), "{mechanisms:?}");
    }
    if require_psql() {
        let mut sender = OtlpClient::connect(&server.grpc_url())
            .await
            .unwrap()
            .with_token(INGEST)
            .unwrap();
        let spans = request(
            SECRET_SERVICE,
            (0..4).map(|i| numbered_span(3, 0, i)).collect(),
        );
        sender.export(&spans).await.unwrap();
        let output = psql(pg, "read", READ);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "4");
        for (user, password) in [("read", "wrong"), ("read", INGEST), ("ingest", INGEST)] {
            let output = psql(pg, user, password);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(!output.status.success(), "{user} logged in");
            assert!(stderr.to_lowercase().contains("password"), "{stderr}");
        }
        let failures = metric_with(
            &server,
            READ,
            "callwatch_auth_failures_total{listener=\"postgres\",reason=\"unauthenticated\"}",
        )
        .await;
        assert!(failures >= 3.0, "{failures}");
    }
    server.stop();
}
