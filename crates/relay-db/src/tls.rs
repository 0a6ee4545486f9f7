//! TLS for database connections: rustls, with the server's certificate chain and host name
//! always verified, against the URL's `sslrootcert` bundle or the system's trusted roots.
use std::sync::Arc;

use relay_config::{DatabaseTls, DatabaseUrl};
use rustls::pki_types::{pem::PemObject, CertificateDer};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::DbError;

/// The TLS connector for `url`, or None for plain connections.
pub(crate) fn connector(url: &DatabaseUrl) -> Result<Option<MakeRustlsConnect>, DbError> {
    let DatabaseTls::Verified { root_cert, .. } = url.tls() else { return Ok(None) };
    let mut roots = rustls::RootCertStore::empty();
    match root_cert {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| DbError::Tls(format!("cannot read sslrootcert {}: {e}", path.display())))?;
            let (added, _ignored) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(DbError::Tls(format!(
                    "sslrootcert {} holds no usable certificate",
                    path.display()
                )));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            if roots.is_empty() {
                return Err(DbError::Tls(
                    "no sslrootcert given and no system root certificates found".into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DbError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(MakeRustlsConnect::new(config)))
}
