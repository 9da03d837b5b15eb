//! Security of the listeners.
//! - TLS on every listener, with a CA made here: the real OpenTelemetry exporter sends over
//!   gRPC and HTTP, mutual TLS refuses a client without a certificate, `psql` verifies the
//!   server, and a rotated certificate reaches new connections while an open one goes on.
//! - CORS on OTLP/HTTP: a browser of an allowed origin may send, others may not.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig, Identity};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::trace::InMemorySpanExporter;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::Server;
use crate::otlp_exporters::{provider, record_spans};
use crate::postgres::require_psql;

/// A CA, a server certificate for localhost and 127.0.0.1, and a client certificate, as
/// PEM files in a directory.
struct Pki {
    ca_key: KeyPair,
    ca_params: CertificateParams,
    ca_pem: String,
    dir: PathBuf,
    client_pem: String,
    client_key_pem: String,
}

impl Pki {
    fn new(dir: &Path) -> Self {
        crate::common::install_crypto_provider();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "callwatch test CA");
        let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
        std::fs::write(dir.join("ca.pem"), &ca_pem).unwrap();
        let mut pki = Self {
            ca_key,
            ca_params,
            ca_pem,
            dir: dir.to_path_buf(),
            client_pem: String::new(),
            client_key_pem: String::new(),
        };
        pki.write_server_cert("first");
        let (client_pem, client_key_pem) = pki.signed(&["client.test"], "a client");
        pki.client_pem = client_pem;
        pki.client_key_pem = client_key_pem;
        pki
    }

    /// A new key and certificate signed by the CA: PEM of both.
    fn signed(&self, names: &[&str], common_name: &str) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// (Re)writes the server's certificate and key, named `common_name`.
    fn write_server_cert(&self, common_name: &str) {
        let (cert, key) = self.signed(&["localhost", "127.0.0.1"], common_name);
        // Key first: a reload between the two writes sees a mismatch and keeps the old pair.
        std::fs::write(self.key(), key).unwrap();
        std::fs::write(self.cert(), cert).unwrap();
    }

    fn cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.join("server-key.pem")
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn flags(&self, mutual: bool) -> Vec<String> {
        let mut flags = vec![
            "--tls-cert".to_string(),
            self.cert().display().to_string(),
            "--tls-key".to_string(),
            self.key().display().to_string(),
        ];
        if mutual {
            flags.extend([
                "--tls-client-ca".to_string(),
                self.ca().display().to_string(),
            ]);
        }
        flags
    }

    /// A rustls client trusting the CA, showing the client certificate if `identify`.
    fn client_config(&self, identify: bool) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(ca.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        if identify {
            let chain = CertificateDer::pem_slice_iter(self.client_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(self.client_key_pem.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        } else {
            builder.with_no_client_auth()
        }
    }

    fn https_client(&self, identify: bool) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_backend_preconfigured(self.client_config(identify))
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }
}

fn args(flags: &[String]) -> Vec<&str> {
    flags.iter().map(String::as_str).collect()
}

/// Rows of a query over HTTPS.
async fn sql(client: &reqwest::Client, server: &Server, query: &str) -> serde_json::Value {
    let response = client
        .post(format!("https://{}/api/v1/sql", server.http))
        .body(query.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json::<serde_json::Value>().await.unwrap()["rows"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_otlp_exporter_sends_over_tls_and_mutual_tls_refuses_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let server = Server::start(&dir.path().join("data"), &args(&pki.flags(true)));
    let memory = InMemorySpanExporter::default();

    let grpc_tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca_pem))
        .identity(Identity::from_pem(&pki.client_pem, &pki.client_key_pem))
        .domain_name("localhost");
    let grpc = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("https://{}", server.grpc))
        .with_tls_config(grpc_tls)
        .build()
        .unwrap();
    let http = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(pki.https_client(true))
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("https://{}/v1/traces", server.otlp_http))
        .build()
        .unwrap();
    for (service, exporter) in [("checkout-grpc-tls", grpc), ("checkout-http-tls", http)] {
        let provider = provider(exporter, &memory, service);
        record_spans(&provider, service);
        provider.shutdown().unwrap();
    }

    // Stored, and read back over HTTPS.
    let client = pki.https_client(true);
    let query = "SELECT service_name, count(*) FROM spans GROUP BY 1 ORDER BY 1";
    let expected = serde_json::json!([["checkout-grpc-tls", 3], ["checkout-http-tls", 3]]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = sql(&client, &server, query).await;
        if rows == expected {
            break;
        }
        assert!(Instant::now() < deadline, "stored: {rows}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Without a client certificate, or without TLS, every listener refuses.
    let stranger = pki.https_client(false);
    for addr in [server.grpc, server.otlp_http, server.http] {
        let refused = stranger.get(format!("https://{addr}/healthz")).send().await;
        assert!(refused.is_err(), "{addr}: {refused:?}");
        let plain = reqwest::Client::new()
            .get(format!("http://{addr}/healthz"))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        assert!(plain.is_err(), "{addr}: {plain:?}");
    }
    server.stop();
}

/// The certificate a new TLS connection to `addr` is shown, and the connection.
async fn connect(
    config: &rustls::ClientConfig,
    addr: std::net::SocketAddr,
) -> (
    Vec<u8>,
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config.clone()));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    let cert = stream.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    (cert, stream)
}

/// Sends `GET /healthz` on an open HTTP/1.1 connection and reads the answer's status line.
async fn healthz_on(stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = vec![0; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&answer[..read])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_verifies_the_server_and_a_rotated_certificate_reaches_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let mut flags = pki.flags(false);
    flags.extend(["--pg".to_string(), "127.0.0.1:0".to_string()]);
    let server = Server::start(&dir.path().join("data"), &args(&flags));

    if require_psql() {
        let pg = server.announced("postgres");
        let connection = format!(
            "host=127.0.0.1 port={} user=postgres dbname=callwatch sslmode=verify-full sslrootcert={}",
            pg.port(),
            pki.ca().display()
        );
        let output = Command::new("psql")
            .args([connection.as_str(), "-w", "-At", "-c", "SELECT 40 + 2"])
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "42");
        // A client that trusts another CA does not get through.
        let other = tempfile::tempdir().unwrap();
        let stranger = Pki::new(other.path());
        let connection = connection.replace(
            &pki.ca().display().to_string(),
            &stranger.ca().display().to_string(),
        );
        let output = Command::new("psql")
            .args([connection.as_str(), "-w", "-At", "-c", "SELECT 1"])
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .unwrap();
        assert!(!output.status.success());
    }

    let config = pki.client_config(false);
    let (first, mut open) = connect(&config, server.http).await;
    assert_eq!(healthz_on(&mut open).await, "HTTP/1.1 200 OK");
    pki.write_server_cert("second");
    // Read again when the files change (or at once on SIGHUP).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (shown, _) = connect(&config, server.http).await;
        if shown != first {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    // The connection opened before goes on with its certificate.
    assert_eq!(healthz_on(&mut open).await, "HTTP/1.1 200 OK");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_of_allowed_origins_may_send_spans_and_others_may_not() {
    use prost::Message;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("data"),
        &[
            "--otlp-http-cors-origins",
            "https://shop.test,http://localhost:3000",
        ],
    );
    let client = reqwest::Client::new();
    let url = server.traces_url();
    let preflight = |origin: &str| {
        client
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let allowed = preflight("https://shop.test").await.unwrap();
    assert_eq!(allowed.status(), 204);
    let headers = allowed.headers();
    assert_eq!(headers["access-control-allow-origin"], "https://shop.test");
    let allowed_headers = headers["access-control-allow-headers"].to_str().unwrap();
    assert!(
        allowed_headers.contains("authorization"),
        "{allowed_headers}"
    );
    assert!(
        allowed_headers.contains("content-type"),
        "{allowed_headers}"
    );
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let refused = preflight("https://shop.test.evil").await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );

    let body =
        opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::default()
            .encode_to_vec();
    let export = |origin: &'static str| {
        client
            .post(&url)
            .header("origin", origin)
            .header("content-type", "application/x-protobuf")
            .body(body.clone())
            .send()
    };
    let sent = export("http://localhost:3000").await.unwrap();
    assert_eq!(sent.status(), 200);
    assert_eq!(
        sent.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    assert_eq!(export("https://evil.test").await.unwrap().status(), 403);
    // Without an Origin (not a browser), nothing changes.
    let plain = client
        .post(&url)
        .header("content-type", "application/x-protobuf")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 200);
    assert!(plain.headers().get("access-control-allow-origin").is_none());
    server.stop();

    // Off by default: no preflight is answered.
    let server = Server::start(&dir.path().join("data2"), &[]);
    let response = client
        .request(reqwest::Method::OPTIONS, server.traces_url())
        .header("origin", "https://shop.test")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_ne!(response.status(), 204);
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    server.stop();
}
