//! Server-side mutual TLS with rustls: the server certificate, the client CA
//! that every caller's certificate must chain to, and the accept loop that
//! turns TCP connections into verified TLS streams for tonic.
//!
//! tonic's own `ServerTlsConfig` cannot change certificates while serving, so
//! the rustls `ServerConfig` is built here and kept behind an [`ArcSwap`]:
//! each new connection is accepted with the config in force when it arrives,
//! and a reload swaps the whole config (certificate, key and client CA
//! together, with a fresh session cache) without touching open connections.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig, crypto};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The PEM files the server's TLS is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server certificate chain (leaf first).
    pub cert_file: PathBuf,
    /// The server certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// The CA (one or more certificates) client certificates must chain to.
    pub client_ca_file: PathBuf,
}

/// Why TLS settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {message}")]
    File {
        what: &'static str,
        path: String,
        message: String,
    },
    #[error("{what} {path} holds no certificate")]
    Empty { what: &'static str, path: String },
    #[error("the client ca in {path} is not usable: {message}")]
    ClientCa { path: String, message: String },
    #[error("the server certificate and key do not form a usable pair: {0}")]
    ServerCert(String),
}

/// The server's TLS configuration, replaceable while serving. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ReloadableTls {
    files: TlsFiles,
    config: Arc<ArcSwap<ServerConfig>>,
}

impl ReloadableTls {
    /// Loads the files and builds the first configuration.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let config = build_config(&files)?;
        Ok(ReloadableTls {
            files,
            config: Arc::new(ArcSwap::from_pointee(config)),
        })
    }

    /// Builds a new configuration from the same files and, only if that
    /// succeeds, puts it in force for new connections.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = self.prepare()?;
        self.install(config);
        Ok(())
    }

    /// Builds a configuration from the files without putting it in force, so
    /// a caller can reload several things all-or-nothing.
    pub fn prepare(&self) -> Result<PreparedTls, TlsError> {
        build_config(&self.files).map(PreparedTls)
    }

    /// Puts a prepared configuration in force.
    pub fn install(&self, prepared: PreparedTls) {
        self.config.store(Arc::new(prepared.0));
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.load_full())
    }
}

/// A configuration that was built and not yet installed.
#[derive(Debug)]
pub struct PreparedTls(ServerConfig);

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |message: String| TlsError::File {
        what,
        path: path.display().to_string(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.display().to_string(),
        });
    }
    Ok(certs)
}

fn build_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(crypto::ring::default_provider());
    let chain = read_certs("server certificate", &files.cert_file)?;
    // The key's bytes stay inside rustls types (which zeroize) and never reach a message.
    let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|e| TlsError::File {
        what: "server key",
        path: files.key_file.display().to_string(),
        message: e.to_string(),
    })?;
    let ca_path = files.client_ca_file.display().to_string();
    let mut roots = RootCertStore::empty();
    for cert in read_certs("client ca", &files.client_ca_file)? {
        roots.add(cert).map_err(|e| TlsError::ClientCa {
            path: ca_path.clone(),
            message: e.to_string(),
        })?;
    }
    // Client authentication is mandatory: the builder's default refuses
    // anonymous clients, and there are no CRLs or fallbacks to configure away.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| TlsError::ClientCa {
            path: ca_path,
            message: e.to_string(),
        })?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::ServerCert(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::ServerCert(e.to_string()))?;
    // gRPC is HTTP/2; clients such as grpcurl insist on negotiating it.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The accepted, verified TLS connections of `listener`, for
/// `serve_with_incoming_shutdown`. Handshakes run concurrently so a slow or
/// hostile client cannot hold up others; a failed one is logged and dropped.
/// The task ends when the stream is dropped.
pub(crate) fn incoming(
    listener: TcpListener,
    tls: ReloadableTls,
) -> (
    ReceiverStream<Result<TlsStream<TcpStream>, io::Error>>,
    JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel(64);
    let task = tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = tls.acceptor();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(err)) => {
                        tracing::info!(peer = %peer, error = %err, "tls handshake refused");
                    }
                    Err(_) => {
                        tracing::info!(peer = %peer, "tls handshake timed out");
                    }
                }
            });
        }
    });
    (ReceiverStream::new(rx), task)
}
