//! TLS for database connections: rustls, with the server's certificate chain and host name
//! always verified, against the URL's `sslrootcert` bundle or the system's trusted roots; with
//! `sslcert` and `sslkey`, the client presents that certificate, for servers that authenticate
//! clients by certificate (`pg_hba.conf` `cert`, or `clientcert=verify-ca|verify-full`).
use std::sync::Arc;

use relay_config::{DatabaseTls, DatabaseUrl};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::DbError;

/// The TLS connector for `url`, or None for plain connections.
pub(crate) fn connector(url: &DatabaseUrl) -> Result<Option<MakeRustlsConnect>, DbError> {
    let DatabaseTls::Verified { root_cert, client, .. } = url.tls() else { return Ok(None) };
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
        .with_root_certificates(roots);
    let config = match client {
        None => config.with_no_client_auth(),
        Some(client) => {
            let (chain, key) = client_identity(client)?;
            config
                .with_client_auth_cert(chain, key)
                .map_err(|e| DbError::Tls(format!("sslcert and sslkey do not make a client identity: {e}")))?
        }
    };
    Ok(Some(MakeRustlsConnect::new(config)))
}

/// The client's certificate chain and private key (PKCS#8, PKCS#1 or SEC1 PEM). The error names
/// the file and the problem, never the key's content.
fn client_identity(
    client: &relay_config::ClientCert,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), DbError> {
    let chain = CertificateDer::pem_file_iter(&client.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| DbError::Tls(format!("cannot read sslcert {}: {e}", client.cert.display())))?;
    if chain.is_empty() {
        return Err(DbError::Tls(format!("sslcert {} holds no certificate", client.cert.display())));
    }
    let key = PrivateKeyDer::from_pem_file(&client.key).map_err(|e| {
        DbError::Tls(format!("cannot read a private key from sslkey {}: {e}", client.key.display()))
    })?;
    Ok((chain, key))
}
