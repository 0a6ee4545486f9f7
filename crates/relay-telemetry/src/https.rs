//! The HTTP client of the OTLP span exporter, with TLS, so that an `https://` collector works.
//!
//! The exporter's own client is built without TLS, and it does not read the standard variables
//! for the collector's certificate authority or the client's certificate, so Relay builds the
//! client itself: rustls (ring) trusting the system's roots plus, when set, the PEM bundle named
//! by `OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE` or `OTEL_EXPORTER_OTLP_CERTIFICATE`; and presenting
//! the client certificate and key of `OTEL_EXPORTER_OTLP_[TRACES_]CLIENT_CERTIFICATE` and
//! `..._CLIENT_KEY` when both are set. Names and meaning per the OpenTelemetry specification,
//! "OTLP Exporter Configuration". The server's certificate and host name are always verified.
use std::{path::PathBuf, sync::Arc, time::Duration};

use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

/// The signal-specific variable first, then the general one.
fn setting(general: &str) -> Option<PathBuf> {
    let traces = general.replacen("OTEL_EXPORTER_OTLP_", "OTEL_EXPORTER_OTLP_TRACES_", 1);
    [traces.as_str(), general]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
        .map(PathBuf::from)
}

fn certificates(path: &PathBuf, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("the {what} {} holds no certificate", path.display()));
    }
    Ok(certs)
}

/// The rustls configuration from the environment; `Err` names the variable's file and problem.
pub(crate) fn tls_config() -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(path) = setting("OTEL_EXPORTER_OTLP_CERTIFICATE") {
        let (added, _) = roots.add_parsable_certificates(certificates(&path, "collector CA file")?);
        if added == 0 {
            return Err(format!("the collector CA file {} holds no usable certificate", path.display()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let cert = setting("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE");
    let key = setting("OTEL_EXPORTER_OTLP_CLIENT_KEY");
    match (cert, key) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let chain = certificates(&cert, "client certificate")?;
            let key = PrivateKeyDer::from_pem_file(&key)
                .map_err(|e| format!("cannot read the client key {}: {e}", key.display()))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| format!("client certificate and key: {e}"))
        }
        _ => {
            Err("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY go together".into())
        }
    }
}

/// The blocking client the exporter sends with, timing out after `timeout`. Built on a thread of
/// its own: the blocking client starts a runtime, which must not happen inside the caller's.
pub(crate) fn client(timeout: Duration) -> Result<reqwest::blocking::Client, String> {
    let tls = tls_config()?;
    std::thread::spawn(move || {
        reqwest::blocking::Client::builder().timeout(timeout).tls_backend_preconfigured(tls).build()
    })
    .join()
    .map_err(|_| "building the OTLP HTTP client panicked".to_string())?
    .map_err(|e| format!("cannot build the OTLP HTTP client: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_client_has_tls_and_builds_without_any_setting() {
        let config = super::tls_config().expect("system roots only");
        assert!(!config.client_auth_cert_resolver.has_certs());
        super::client(std::time::Duration::from_secs(1)).expect("client");
    }
}
