//! Peer mTLS: TLS 1.3 only, both sides present a certificate signed by the
//! cluster's CA and verify the other's (ARCHITECTURE §4).
//!
//! - The **listener** accepts TCP connections, runs the handshake on a task
//!   of its own per connection (bounded by [`HANDSHAKE_TIMEOUT`], so a
//!   client that stalls mid-handshake holds nothing but its socket), and
//!   hands tonic only connections that completed it. A client without a
//!   certificate, with one the CA did not sign, or offering TLS 1.2 fails
//!   the handshake and never reaches the peer service.
//! - The **outbox** connects through [`Connector`]: TCP, then the handshake,
//!   verifying that the listener's certificate is the CA's and names the
//!   host of the member's peer address (a DNS name or an IP address SAN).
//!
//! ALPN is `h2` on both sides (gRPC runs over HTTP/2). The crypto provider
//! is `ring`, the one the S3 client already uses, named explicitly rather
//! than relying on a process-wide default.
//!
//! The member id inside each frame is not tied to the certificate: mTLS
//! keeps out whoever the CA did not sign; which member a signed peer is,
//! the frame says (a CA per cluster keeps clusters apart).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tonic::codegen::http::Uri;

use crate::config::PeerTls;

/// Longest a handshake may take, on either side.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshakes in progress on a listener at most; connections beyond it
/// wait in the accept queue.
pub const HANDSHAKES_MAX: usize = 64;
/// Largest PEM file read (certificates and keys are a few KiB).
const PEM_BYTES_MAX: u64 = 1 << 20;

/// Why the peer TLS files cannot be used. Each names the file and what to
/// fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Which file (`--peer-tls-ca` …).
        what: &'static str,
        /// Its path.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file holds no usable PEM item of the kind needed.
    #[error("{what} {path}: {why}")]
    Pem {
        /// Which file.
        what: &'static str,
        /// Its path.
        path: std::path::PathBuf,
        /// What is wrong.
        why: String,
    },
    /// rustls refused the combination (a key that does not match the
    /// certificate, a CA certificate it cannot use …).
    #[error("peer TLS configuration: {0}")]
    Config(String),
}

/// Both sides' TLS configuration of one member. Cheap to clone.
#[derive(Clone)]
pub struct PeerTlsConfig {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl std::fmt::Debug for PeerTlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerTlsConfig { TLS 1.3, mutual }")
    }
}

impl PeerTlsConfig {
    /// Loads the CA bundle, this member's certificate chain and its key.
    ///
    /// # Errors
    /// A file is missing, unreadable, not PEM of the right kind, or the
    /// key does not match the certificate.
    pub fn load(files: &PeerTls) -> Result<PeerTlsConfig, TlsError> {
        let ca = read_pem("CA certificate (--peer-tls-ca)", &files.ca)?;
        let chain = read_pem("certificate (--peer-tls-cert)", &files.cert)?;
        let key = read_pem("private key (--peer-tls-key)", &files.key)?;

        let mut roots = rustls::RootCertStore::empty();
        let mut cas = 0;
        for cert in CertificateDer::pem_slice_iter(&ca.1) {
            let cert = cert.map_err(|e| ca.error(format!("not a PEM certificate: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| ca.error(format!("unusable CA certificate: {e}")))?;
            cas += 1;
        }
        if cas == 0 {
            return Err(ca.error("holds no certificate".into()));
        }
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain.1)
            .collect::<Result<_, _>>()
            .map_err(|e| chain.error(format!("not a PEM certificate: {e}")))?;
        if chain.is_empty() {
            return Err(TlsError::Pem {
                what: "certificate (--peer-tls-cert)",
                path: files.cert.clone(),
                why: "holds no certificate".into(),
            });
        }
        let key_der = PrivateKeyDer::from_pem_slice(&key.1)
            .map_err(|e| key.error(format!("holds no usable private key: {e}")))?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(roots);
        let tls13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
        let config_error = |e: rustls::Error| TlsError::Config(e.to_string());

        let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::clone(&roots),
            Arc::clone(&provider),
        )
        .build()
        .map_err(|e| TlsError::Config(format!("client verifier: {e}")))?;
        let mut server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(tls13)
            .map_err(config_error)?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key_der.clone_key())
            .map_err(|e| {
                TlsError::Config(format!(
                    "{} and {} do not make a usable identity: {e}",
                    files.cert.display(),
                    files.key.display()
                ))
            })?;
        server.alpn_protocols = vec![b"h2".to_vec()];

        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(tls13)
            .map_err(config_error)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key_der)
            .map_err(config_error)?;
        client.alpn_protocols = vec![b"h2".to_vec()];

        Ok(PeerTlsConfig {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }

    /// The connector the outbox's channels use.
    pub(crate) fn connector(&self) -> Connector {
        Connector {
            tls: self.connector.clone(),
        }
    }

    /// Turns accepted TCP connections into completed TLS connections:
    /// a stream for tonic's `serve_with_incoming`. Ends when `listener`'s
    /// task is dropped with the server.
    pub(crate) fn incoming(
        &self,
        listener: tokio::net::TcpListener,
    ) -> tokio_stream::wrappers::ReceiverStream<
        Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>,
    > {
        let (tx, rx) = tokio::sync::mpsc::channel(HANDSHAKES_MAX);
        let acceptor = self.acceptor.clone();
        let slots = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_MAX));
        tokio::spawn(async move {
            loop {
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                    return;
                };
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    () = tx.closed() => return,
                };
                let (tcp, remote) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "peer listener: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send(Ok(tls)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(%remote, error = %e, "peer TLS handshake refused");
                        }
                        Err(_) => {
                            tracing::warn!(%remote, "peer TLS handshake timed out");
                        }
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

/// A PEM file's path, contents and what it is for.
struct PemFile(&'static str, Vec<u8>, std::path::PathBuf);

impl PemFile {
    fn error(&self, why: String) -> TlsError {
        TlsError::Pem {
            what: self.0,
            path: self.2.clone(),
            why,
        }
    }
}

fn read_pem(what: &'static str, path: &Path) -> Result<PemFile, TlsError> {
    let read_error = |source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(read_error)?.len();
    if len > PEM_BYTES_MAX {
        return Err(TlsError::Pem {
            what,
            path: path.to_path_buf(),
            why: format!("{len} bytes is too large for a PEM file (bound {PEM_BYTES_MAX})"),
        });
    }
    let bytes = std::fs::read(path).map_err(read_error)?;
    Ok(PemFile(what, bytes, path.to_path_buf()))
}

/// tonic's channel connector for TLS peers: TCP, then a TLS 1.3
/// handshake checking the server's certificate against the URI's host.
#[derive(Clone)]
pub(crate) struct Connector {
    tls: TlsConnector,
}

impl tonic::codegen::Service<Uri> for Connector {
    type Response = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let invalid = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, why);
            let host = uri
                .host()
                .ok_or_else(|| invalid(format!("peer URI {uri} has no host")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri
                .port_u16()
                .ok_or_else(|| invalid(format!("peer URI {uri} has no port")))?;
            let name = ServerName::try_from(host.clone()).map_err(|e| {
                invalid(format!("peer host {host:?} is not a TLS server name: {e}"))
            })?;
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.connect(name, tcp))
                .await
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "peer TLS handshake timed out",
                    )
                })??;
            Ok(TokioIo::new(stream))
        })
    }
}
