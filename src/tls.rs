//! TLS for the listeners, with rustls. Certificates and keys are read again when their
//! files change, or on SIGHUP: a new connection gets the new certificate while open ones
//! go on with theirs, as cert-manager rotates them.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How often the files are looked at for a change.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// The files one listener's TLS is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the certificate, then its chain.
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM: the CAs a client's certificate must be signed by (mutual TLS), if any.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        [&self.cert, &self.key].into_iter().chain(&self.client_ca)
    }

    /// When each file was last changed, and its length: a rewritten file differs in one.
    fn stamp(&self) -> Vec<Option<(SystemTime, u64)>> {
        self.paths()
            .map(|path| {
                let meta = std::fs::metadata(path).ok()?;
                Some((meta.modified().ok()?, meta.len()))
            })
            .collect()
    }
}

/// A listener's TLS: the configuration new connections get.
#[derive(Debug)]
pub struct Tls {
    files: TlsFiles,
    /// ALPN protocols offered, most wanted first.
    alpn: Vec<Vec<u8>>,
    current: RwLock<Arc<ServerConfig>>,
    stamp: Mutex<Vec<Option<(SystemTime, u64)>>>,
}

impl Tls {
    /// Reads the files; an error names the file and what is wrong with it.
    pub fn load(files: TlsFiles, alpn: &[&[u8]]) -> anyhow::Result<Arc<Self>> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let stamp = files.stamp();
        let config = server_config(&files, &alpn)?;
        Ok(Arc::new(Self {
            files,
            alpn,
            current: RwLock::new(Arc::new(config)),
            stamp: Mutex::new(stamp),
        }))
    }

    /// What accepts a new connection now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().expect("not poisoned").clone())
    }

    /// Reads the files again if `forced` or if one changed. A file that does not read
    /// (half written, or a wrong key) leaves the configuration as it was, with a warning;
    /// the next change tries again.
    fn reload(&self, forced: bool) {
        let stamp = self.files.stamp();
        {
            let mut last = self.stamp.lock().expect("not poisoned");
            if !forced && *last == stamp {
                return;
            }
            *last = stamp;
        }
        match server_config(&self.files, &self.alpn) {
            Ok(config) => {
                *self.current.write().expect("not poisoned") = Arc::new(config);
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate read again");
            }
            Err(error) => {
                tracing::warn!(%error, "TLS files changed but do not read; still serving the previous ones");
            }
        }
    }
}

/// Reads `tls` again whenever their files change, and all of them on SIGHUP.
pub fn spawn_reloader(
    tls: Vec<Arc<Tls>>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    if tls.is_empty() {
        return Ok(());
    }
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("listening for SIGHUP")?;
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(CHECK_EVERY);
        loop {
            let forced = tokio::select! {
                () = cancel.cancelled() => break,
                _ = tick.tick() => false,
                _ = hangup.recv() => true,
            };
            for tls in &tls {
                tls.reload(forced);
            }
        }
    });
    Ok(())
}

fn server_config(files: &TlsFiles, alpn: &[Vec<u8>]) -> anyhow::Result<ServerConfig> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading the certificate {}", files.cert.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "no certificate in {}",
        files.cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("reading the private key {}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &files.client_ca {
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            let cas = CertificateDer::pem_file_iter(path)
                .and_then(|cas| cas.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("reading the client CA {}", path.display()))?;
            for ca in cas {
                roots
                    .add(ca)
                    .with_context(|| format!("a CA certificate of {}", path.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .with_context(|| format!("the client CA {}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).with_context(|| {
        format!(
            "the key {} does not go with the certificate {}",
            files.key.display(),
            files.cert.display()
        )
    })?;
    config.alpn_protocols = alpn.to_vec();
    Ok(config)
}
