//! The PostgreSQL connection string: validated at start-up, kept secret, and read for TLS.
//!
//! TLS follows libpq's parameters so a DBA's usual URL works: `sslmode`, `sslrootcert`, and for
//! client certificate authentication `sslcert` and `sslkey` (PEM files, both or neither).
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
    /// `client` is the certificate chain and private key (PEM files) the client presents, for
    /// servers that authenticate clients by certificate (`clientcert=verify-full`, `cert`).
    Verified { root_cert: Option<PathBuf>, required: bool, client: Option<ClientCert> },
}

/// A client certificate chain and its private key, both PEM files (libpq's `sslcert`, `sslkey`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
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
        let TlsParameters { rest, sslmode, root_cert, cert, key } = split_tls_parameters(raw);
        // The parser's message can quote the input, so report only its kind.
        let mut config = tokio_postgres::Config::from_str(&rest)
            .map_err(|_| "is not a valid PostgreSQL connection string".to_string())?;
        if config.get_hosts().is_empty() {
            return Err("names no host".into());
        }
        let client = match (cert, key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(ClientCert { cert, key }),
            (Some(_), None) => return Err("has sslcert but no sslkey: give both or neither".into()),
            (None, Some(_)) => return Err("has sslkey but no sslcert: give both or neither".into()),
        };
        let tls = match sslmode.as_deref() {
            None | Some("disable") => DatabaseTls::Disabled,
            Some("prefer") | Some("allow") => DatabaseTls::Verified {
                root_cert: root_cert.clone(),
                required: false,
                client: client.clone(),
            },
            Some("require") | Some("verify-ca") | Some("verify-full") => {
                DatabaseTls::Verified { root_cert: root_cert.clone(), required: true, client: client.clone() }
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
        if let Some(client) = &client {
            if tls == DatabaseTls::Disabled {
                return Err("has sslcert and sslkey but no sslmode: add sslmode=verify-full".into());
            }
            for (name, path) in [("sslcert", &client.cert), ("sslkey", &client.key)] {
                if !path.is_file() {
                    return Err(format!("has {name}={}, which is not a readable file", path.display()));
                }
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

/// The TLS parameters of a connection string and the rest of it.
struct TlsParameters {
    rest: String,
    sslmode: Option<String>,
    root_cert: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

/// Takes `sslmode`, `sslrootcert`, `sslcert` and `sslkey` out of a URL's query or a key=value
/// string, since the driver's parser knows none but `sslmode` (and not `verify-full`); returns
/// the rest unchanged.
fn split_tls_parameters(raw: &str) -> TlsParameters {
    let (mut sslmode, mut root_cert, mut cert, mut key) = (None, None, None, None);
    let mut take = |name: &str, value: &str| match name {
        "sslmode" => {
            sslmode = Some(value.to_ascii_lowercase());
            true
        }
        "sslrootcert" => {
            root_cert = Some(PathBuf::from(value));
            true
        }
        "sslcert" => {
            cert = Some(PathBuf::from(value));
            true
        }
        "sslkey" => {
            key = Some(PathBuf::from(value));
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
    TlsParameters { rest, sslmode, root_cert, cert, key }
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
        assert_eq!(
            verified.tls(),
            &DatabaseTls::Verified { root_cert: Some(root.into()), required: true, client: None }
        );
        assert_eq!(verified.config().get_application_name(), Some("a"));
        assert_eq!(verified.config().get_ssl_mode(), SslMode::Require);
        let kv = parse("host=db dbname=x sslmode=require").expect("key=value");
        assert_eq!(kv.tls(), &DatabaseTls::Verified { root_cert: None, required: true, client: None });
        assert!(parse("postgres://db/x?sslmode=sometimes").expect_err("bad mode").contains("sslmode"));
        let missing = parse("postgres://db/x?sslmode=require&sslrootcert=/nonexistent/ca.pem");
        assert!(missing.expect_err("missing file").contains("not a readable file"));
        assert!(parse("postgres://db/x?sslrootcert=/etc/hosts").expect_err("no mode").contains("sslmode"));
    }

    #[test]
    fn reads_client_certificates_both_or_neither_from_urls_and_key_value_strings() {
        let (cert, key) = ("/etc/ssl/certs/ssl-cert-snakeoil.pem", "/etc/hosts");
        let client = Some(ClientCert { cert: cert.into(), key: key.into() });
        let url = parse(&format!(
            "postgres://u@db/x?sslmode=verify-full&sslcert={cert}&sslkey={key}&application_name=a"
        ))
        .expect("url");
        assert_eq!(
            url.tls(),
            &DatabaseTls::Verified { root_cert: None, required: true, client: client.clone() }
        );
        assert_eq!(url.config().get_application_name(), Some("a"), "the other parameters stay");
        let kv = parse(&format!("host=db dbname=x sslmode=require sslcert={cert} sslkey={key}")).expect("kv");
        assert_eq!(kv.tls(), &DatabaseTls::Verified { root_cert: None, required: true, client });
        for (url, expected) in [
            (format!("postgres://db/x?sslmode=require&sslcert={cert}"), "has sslcert but no sslkey"),
            (format!("postgres://db/x?sslmode=require&sslkey={key}"), "has sslkey but no sslcert"),
            (format!("postgres://db/x?sslcert={cert}&sslkey={key}"), "no sslmode"),
            (
                format!("postgres://db/x?sslmode=require&sslcert=/nonexistent.pem&sslkey={key}"),
                "sslcert=/nonexistent.pem, which is not a readable file",
            ),
            (
                format!("postgres://db/x?sslmode=require&sslcert={cert}&sslkey=/nonexistent.key"),
                "sslkey=/nonexistent.key, which is not a readable file",
            ),
        ] {
            let why = parse(&url).expect_err(&url);
            assert!(why.contains(expected), "{why} lacks {expected}");
        }
    }
}
