//! The PostgreSQL connection string: validated at start-up, kept secret, and read for TLS.
//!
//! TLS follows libpq's parameters so a DBA's usual URL works: `sslmode` and `sslrootcert`.
//! Relay always verifies the server when TLS is on: `sslmode=require`, `verify-ca` and
//! `verify-full` all check the certificate chain against `sslrootcert` (or the system's roots)
//! and the host name, which for a bank's network is the only sensible reading of "require".
//! Without `sslmode`, or with `sslmode=disable`, connections are plain.
use std::{fmt, path::PathBuf, str::FromStr};

use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::config::SslMode;

/// How a connection is protected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseTls {
    /// Plain TCP.
    Disabled,
    /// TLS with the server's certificate and host name verified; `root_cert` is a PEM bundle of
    /// trusted CAs, or the system's roots when none is given. `required` is false for
    /// `sslmode=prefer`, which uses TLS only when the server offers it.
    Verified { root_cert: Option<PathBuf>, required: bool },
}

/// A PostgreSQL connection string, validated at start-up and kept secret (it may hold a password).
#[derive(Clone)]
pub struct DatabaseUrl {
    url: SecretString,
    config: tokio_postgres::Config,
    tls: DatabaseTls,
}

impl DatabaseUrl {
    /// Parses a `postgres://` URL or a `key=value` connection string.
    pub fn parse(url: SecretString) -> Result<Self, String> {
        let raw = url.expose_secret();
        if !(raw.starts_with("postgres://") || raw.starts_with("postgresql://") || raw.contains('=')) {
            return Err("must be a postgres:// URL or a key=value connection string".into());
        }
        let (rest, sslmode, root_cert) = split_tls_parameters(raw);
        // The parser's message can quote the input, so report only its kind.
        let mut config = tokio_postgres::Config::from_str(&rest)
            .map_err(|_| "is not a valid PostgreSQL connection string".to_string())?;
        if config.get_hosts().is_empty() {
            return Err("names no host".into());
        }
        let tls = match sslmode.as_deref() {
            None | Some("disable") => DatabaseTls::Disabled,
            Some("prefer") | Some("allow") => {
                DatabaseTls::Verified { root_cert: root_cert.clone(), required: false }
            }
            Some("require") | Some("verify-ca") | Some("verify-full") => {
                DatabaseTls::Verified { root_cert: root_cert.clone(), required: true }
            }
            Some(other) => {
                return Err(format!("has sslmode={other:?}: use disable, prefer, require or verify-full"))
            }
        };
        if let Some(path) = &root_cert {
            if tls == DatabaseTls::Disabled {
                return Err("has sslrootcert but no sslmode: add sslmode=verify-full".into());
            }
            if !path.is_file() {
                return Err(format!("has sslrootcert={}, which is not a readable file", path.display()));
            }
        }
        config.ssl_mode(match &tls {
            DatabaseTls::Disabled => SslMode::Disable,
            DatabaseTls::Verified { required: false, .. } => SslMode::Prefer,
            DatabaseTls::Verified { required: true, .. } => SslMode::Require,
        });
        Ok(Self { url, config, tls })
    }

    /// The parsed connection settings (the password stays inside).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// Whether and how connections use TLS.
    pub fn tls(&self) -> &DatabaseTls {
        &self.tls
    }

    /// The database name, for logs.
    pub fn database_name(&self) -> &str {
        self.config.get_dbname().unwrap_or("(default)")
    }

    /// The URL itself, for tools that need to hand it on. Treat the result as a secret.
    pub fn expose(&self) -> &str {
        self.url.expose_secret()
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl(database={}, tls={:?}, [redacted])", self.database_name(), self.tls)
    }
}

/// Takes `sslmode` and `sslrootcert` out of a URL's query or a key=value string, since the
/// driver's parser knows neither `verify-full` nor `sslrootcert`; returns the rest unchanged.
fn split_tls_parameters(raw: &str) -> (String, Option<String>, Option<PathBuf>) {
    let (mut sslmode, mut root_cert) = (None, None);
    let mut take = |key: &str, value: &str| match key {
        "sslmode" => {
            sslmode = Some(value.to_ascii_lowercase());
            true
        }
        "sslrootcert" => {
            root_cert = Some(PathBuf::from(value));
            true
        }
        _ => false,
    };
    let rest = if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
        match raw.split_once('?') {
            Some((base, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| !pair.split_once('=').is_some_and(|(k, v)| take(k, v)))
                    .collect();
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
            None => raw.to_string(),
        }
    } else {
        raw.split_whitespace()
            .filter(|pair| !pair.split_once('=').is_some_and(|(k, v)| take(k, v)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    (rest, sslmode, root_cert)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> Result<DatabaseUrl, String> {
        DatabaseUrl::parse(url.to_string().into())
    }

    #[test]
    fn reads_libpq_tls_parameters_from_urls_and_key_value_strings() {
        let plain = parse("postgres://u:p@db/x").expect("plain");
        assert_eq!(plain.tls(), &DatabaseTls::Disabled);
        let root = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
        let url = format!("postgres://u:p@db/x?application_name=a&sslmode=verify-full&sslrootcert={root}");
        let verified = parse(&url).expect("verify-full");
        assert_eq!(verified.tls(), &DatabaseTls::Verified { root_cert: Some(root.into()), required: true });
        assert_eq!(verified.config().get_application_name(), Some("a"));
        assert_eq!(verified.config().get_ssl_mode(), SslMode::Require);
        let kv = parse("host=db dbname=x sslmode=require").expect("key=value");
        assert_eq!(kv.tls(), &DatabaseTls::Verified { root_cert: None, required: true });
        assert!(parse("postgres://db/x?sslmode=sometimes").expect_err("bad mode").contains("sslmode"));
        let missing = parse("postgres://db/x?sslmode=require&sslrootcert=/nonexistent/ca.pem");
        assert!(missing.expect_err("missing file").contains("not a readable file"));
        assert!(parse("postgres://db/x?sslrootcert=/etc/hosts").expect_err("no mode").contains("sslmode"));
    }
}
