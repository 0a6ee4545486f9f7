//! TLS in front of a broker that speaks only plain TCP, so the services' Kafka TLS settings can be
//! exercised for real: a throw-away certificate authority ([`Authority`]) issues the broker's and
//! the clients' certificates, and a [`TlsTerminator`] accepts TLS (optionally requiring a client
//! certificate from the authority) and forwards the plain bytes to the broker.
//!
//! Tansu 0.6 takes `--cert` and `--key` but serves plain TCP regardless, hence the terminator.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    server::WebPkiClientVerifier,
    RootCertStore, ServerConfig,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::{io_error, ChaosError};

fn tls_error(what: &str) -> impl FnOnce(rcgen::Error) -> ChaosError + '_ {
    move |e| ChaosError::Setup(format!("{what}: {e}"))
}

/// A certificate authority that lives as long as a test.
#[derive(Debug)]
pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its private key, issued by an [`Authority`].
#[derive(Debug)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Authority {
    /// A new self-signed CA called `name`.
    pub fn new(name: &str) -> Result<Self, ChaosError> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_error("CA parameters"))?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().map_err(tls_error("CA key"))?;
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(tls_error("CA certificate"))?;
        Ok(Self { issuer })
    }

    /// The CA certificate (PEM), what clients are told to trust.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn issue_server(&self, names: &[&str]) -> Result<Issued, ChaosError> {
        self.issue(
            names.iter().map(|n| n.to_string()).collect(),
            names[0],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate with common name `name`.
    pub fn issue_client(&self, name: &str) -> Result<Issued, ChaosError> {
        self.issue(Vec::new(), name, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(
        &self,
        names: Vec<String>,
        cn: &str,
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<Issued, ChaosError> {
        let mut params = CertificateParams::new(names).map_err(tls_error("certificate parameters"))?;
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().map_err(tls_error("key"))?;
        let cert = params.signed_by(&key, &self.issuer).map_err(tls_error("certificate"))?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        })
    }
}

impl Issued {
    /// Writes `<stem>.pem` and `<stem>.key` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf), ChaosError> {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &self.cert_pem).map_err(io_error(format!("write {}", cert.display())))?;
        std::fs::write(&key, &self.key_pem).map_err(io_error(format!("write {}", key.display())))?;
        Ok((cert, key))
    }
}

/// What a [`TlsTerminator`] saw.
#[derive(Debug, Default)]
struct Counts {
    handshakes: AtomicU64,
    refused: AtomicU64,
}

/// Accepts TLS on its port and forwards plain TCP to the target; stops when dropped.
#[derive(Debug)]
pub struct TlsTerminator {
    addr: SocketAddr,
    counts: Arc<Counts>,
    stop: CancellationToken,
}

impl TlsTerminator {
    /// Listens on 127.0.0.1:`port` with `server`'s certificate and forwards to `target`. With
    /// `client_ca`, a client must present a certificate that authority issued.
    pub async fn start(
        port: u16,
        target: SocketAddr,
        server: &Issued,
        client_ca: Option<&Authority>,
    ) -> Result<Self, ChaosError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| ChaosError::Setup(format!("TLS versions: {e}")))?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                roots
                    .add(ca.issuer.der().clone())
                    .map_err(|e| ChaosError::Setup(format!("client CA: {e}")))?;
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| ChaosError::Setup(format!("client verifier: {e}")))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server.key_der.clone()));
        let config = builder
            .with_single_cert(vec![server.cert_der.clone()], key)
            .map_err(|e| ChaosError::Setup(format!("server certificate: {e}")))?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener =
            TcpListener::bind(("127.0.0.1", port)).await.map_err(io_error("bind the TLS terminator"))?;
        let addr = listener.local_addr().map_err(io_error("TLS terminator address"))?;
        let counts = Arc::new(Counts::default());
        let stop = CancellationToken::new();
        tokio::spawn(accept(listener, acceptor, target, Arc::clone(&counts), stop.clone()));
        Ok(Self { addr, counts, stop })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections whose TLS handshake succeeded.
    pub fn handshakes(&self) -> u64 {
        self.counts.handshakes.load(Ordering::Relaxed)
    }

    /// Connections refused during the handshake (plain TCP, an untrusted client, a client that
    /// gave up on our certificate).
    pub fn refused(&self) -> u64 {
        self.counts.refused.load(Ordering::Relaxed)
    }
}

impl Drop for TlsTerminator {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn accept(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    target: SocketAddr,
    counts: Arc<Counts>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else { continue };
        let (acceptor, counts, stop) = (acceptor.clone(), Arc::clone(&counts), stop.clone());
        tokio::spawn(async move {
            let mut tls = match acceptor.accept(stream).await {
                Ok(tls) => tls,
                Err(e) => {
                    counts.refused.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, "TLS handshake refused");
                    return;
                }
            };
            counts.handshakes.fetch_add(1, Ordering::Relaxed);
            let Ok(mut plain) = TcpStream::connect(target).await else { return };
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::io::copy_bidirectional(&mut tls, &mut plain) => {}
            }
        });
    }
}
