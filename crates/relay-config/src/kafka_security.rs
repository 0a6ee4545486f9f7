//! How the Kafka clients encrypt and authenticate: TLS and SASL from dedicated variables.
//!
//! A bank's cluster normally wants `sasl_ssl` with SCRAM, sometimes client certificates. These
//! settings get their own variables rather than `KAFKA_PROPERTY_*` so that they are checked as a
//! whole (a SASL protocol without a password, a client key without its certificate, a CA file
//! that is not a certificate) and reported with every other problem in one run. Verification is
//! not optional: the broker's certificate chain and host name are always checked, so the
//! properties that would turn that off are locked in [`crate::KafkaProperties`].
//! PLAIN over an unencrypted connection is refused: it would send the password in the clear.
use std::{fmt, str::FromStr};

use secrecy::SecretString;

use crate::Reader;

/// The variables read here.
pub mod names {
    pub const KAFKA_SECURITY_PROTOCOL: &str = "KAFKA_SECURITY_PROTOCOL";
    pub const KAFKA_SASL_MECHANISM: &str = "KAFKA_SASL_MECHANISM";
    pub const KAFKA_SASL_USERNAME: &str = "KAFKA_SASL_USERNAME";
    /// Secret; or `KAFKA_SASL_PASSWORD_FILE`.
    pub const KAFKA_SASL_PASSWORD: &str = "KAFKA_SASL_PASSWORD";
    pub const KAFKA_SASL_PASSWORD_FILE: &str = "KAFKA_SASL_PASSWORD_FILE";
    /// A PEM file of the CAs that may sign the brokers' certificates; the system's otherwise.
    pub const KAFKA_SSL_CA_LOCATION: &str = "KAFKA_SSL_CA_LOCATION";
    /// The client certificate (PEM) for brokers that require mutual TLS.
    pub const KAFKA_SSL_CERTIFICATE_LOCATION: &str = "KAFKA_SSL_CERTIFICATE_LOCATION";
    /// Its private key (PEM).
    pub const KAFKA_SSL_KEY_LOCATION: &str = "KAFKA_SSL_KEY_LOCATION";
    /// Secret; or `KAFKA_SSL_KEY_PASSWORD_FILE`: when the private key is encrypted.
    pub const KAFKA_SSL_KEY_PASSWORD: &str = "KAFKA_SSL_KEY_PASSWORD";
    pub const KAFKA_SSL_KEY_PASSWORD_FILE: &str = "KAFKA_SSL_KEY_PASSWORD_FILE";
    pub const SASL_ALL: &[&str] =
        &[KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD, KAFKA_SASL_PASSWORD_FILE];
    pub const SSL_ALL: &[&str] = &[
        KAFKA_SSL_CA_LOCATION,
        KAFKA_SSL_CERTIFICATE_LOCATION,
        KAFKA_SSL_KEY_LOCATION,
        KAFKA_SSL_KEY_PASSWORD,
        KAFKA_SSL_KEY_PASSWORD_FILE,
    ];
}

/// Kafka's `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }
    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }
    pub fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

impl FromStr for SecurityProtocol {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_lowercase().as_str() {
            "plaintext" => Ok(Self::Plaintext),
            "ssl" => Ok(Self::Ssl),
            "sasl_plaintext" => Ok(Self::SaslPlaintext),
            "sasl_ssl" => Ok(Self::SaslSsl),
            _ => Err(()),
        }
    }
}

/// The SASL mechanisms this build supports (GSSAPI and OAUTHBEARER are not built in).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl SaslMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl FromStr for SaslMechanism {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.to_ascii_uppercase().as_str() {
            "PLAIN" => Ok(Self::Plain),
            "SCRAM-SHA-256" => Ok(Self::ScramSha256),
            "SCRAM-SHA-512" => Ok(Self::ScramSha512),
            _ => Err(()),
        }
    }
}

/// SASL credentials. The password never appears in Debug output.
#[derive(Clone)]
pub struct SaslCredentials {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: SecretString,
}

impl fmt::Debug for SaslCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslCredentials")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .finish()
    }
}

/// TLS files, by path; each was read and checked at start-up.
#[derive(Clone, Default)]
pub struct TlsFiles {
    pub ca_location: Option<String>,
    pub certificate_location: Option<String>,
    pub key_location: Option<String>,
    pub key_password: Option<SecretString>,
}

impl fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsFiles")
            .field("ca_location", &self.ca_location)
            .field("certificate_location", &self.certificate_location)
            .field("key_location", &self.key_location)
            .field("key_password", &self.key_password.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// The clients' transport security, validated as a whole.
#[derive(Debug, Clone, Default)]
pub struct KafkaSecurity {
    pub protocol: SecurityProtocol,
    pub sasl: Option<SaslCredentials>,
    pub tls: TlsFiles,
}

/// One librdkafka property this module sets, with the variable it came from (for messages).
pub(crate) struct SecurityProperty {
    pub variable: &'static str,
    pub key: &'static str,
    pub value: SecretString,
}

impl KafkaSecurity {
    /// Reads and cross-checks every security variable; problems are recorded in `reader`.
    pub fn read(reader: &mut Reader<'_>) -> Self {
        use names::*;
        let protocol = match reader.optional(KAFKA_SECURITY_PROTOCOL) {
            None => Some(SecurityProtocol::Plaintext),
            Some(raw) => raw.parse().ok().or_else(|| {
                let message = format!("{raw:?} is not plaintext, ssl, sasl_plaintext or sasl_ssl");
                reader.problem(KAFKA_SECURITY_PROTOCOL, message);
                None
            }),
        };
        // With an unreadable protocol the other settings cannot be judged against it.
        let sasl = protocol.and_then(|protocol| read_sasl(reader, protocol));
        let tls = protocol.map(|protocol| read_tls(reader, protocol)).unwrap_or_default();
        reader.reject_unknown("KAFKA_SASL_", SASL_ALL, |_| false);
        reader.reject_unknown("KAFKA_SSL_", SSL_ALL, |_| false);
        reader.reject_unknown("KAFKA_SECURITY_", &[KAFKA_SECURITY_PROTOCOL], |_| false);
        Self { protocol: protocol.unwrap_or_default(), sasl, tls }
    }

    /// The librdkafka properties for these settings.
    pub(crate) fn properties(&self) -> Vec<SecurityProperty> {
        use names::*;
        let set = |variable, key, value: &str| SecurityProperty {
            variable,
            key,
            value: SecretString::from(value.to_string()),
        };
        let mut out = vec![set(KAFKA_SECURITY_PROTOCOL, "security.protocol", self.protocol.as_str())];
        if let Some(sasl) = &self.sasl {
            out.push(set(KAFKA_SASL_MECHANISM, "sasl.mechanism", sasl.mechanism.as_str()));
            out.push(set(KAFKA_SASL_USERNAME, "sasl.username", &sasl.username));
            let password = sasl.password.clone();
            out.push(SecurityProperty {
                variable: KAFKA_SASL_PASSWORD,
                key: "sasl.password",
                value: password,
            });
        }
        if self.protocol.uses_tls() {
            let tls = &self.tls;
            // Without a CA file, the system's trust store (found by librdkafka's probe).
            out.push(set(
                KAFKA_SSL_CA_LOCATION,
                "ssl.ca.location",
                tls.ca_location.as_deref().unwrap_or("probe"),
            ));
            out.push(set(KAFKA_SECURITY_PROTOCOL, "enable.ssl.certificate.verification", "true"));
            out.push(set(KAFKA_SECURITY_PROTOCOL, "ssl.endpoint.identification.algorithm", "https"));
            if let Some(path) = &tls.certificate_location {
                out.push(set(KAFKA_SSL_CERTIFICATE_LOCATION, "ssl.certificate.location", path));
            }
            if let Some(path) = &tls.key_location {
                out.push(set(KAFKA_SSL_KEY_LOCATION, "ssl.key.location", path));
            }
            if let Some(password) = &tls.key_password {
                let value = password.clone();
                out.push(SecurityProperty {
                    variable: KAFKA_SSL_KEY_PASSWORD,
                    key: "ssl.key.password",
                    value,
                });
            }
        }
        out
    }
}

fn read_sasl(reader: &mut Reader<'_>, protocol: SecurityProtocol) -> Option<SaslCredentials> {
    use names::*;
    let mechanism = reader.optional(KAFKA_SASL_MECHANISM);
    let username = reader.optional(KAFKA_SASL_USERNAME);
    let password = reader.secret(KAFKA_SASL_PASSWORD);
    let password_named = password.is_some() || reader.optional(KAFKA_SASL_PASSWORD_FILE).is_some();
    if !protocol.uses_sasl() {
        let set = [
            (KAFKA_SASL_MECHANISM, mechanism.is_some()),
            (KAFKA_SASL_USERNAME, username.is_some()),
            (set_as(reader, KAFKA_SASL_PASSWORD, KAFKA_SASL_PASSWORD_FILE), password_named),
        ];
        unused(reader, protocol, &set, "SASL (use sasl_ssl)");
        return None;
    }
    let mechanism = match mechanism {
        None => {
            reader.problem(
                KAFKA_SASL_MECHANISM,
                "is required with SASL: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
            );
            None
        }
        Some(raw) => match raw.parse::<SaslMechanism>() {
            Ok(m) => Some(m),
            Err(()) => {
                let message = format!("{raw:?} is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512");
                reader.problem(KAFKA_SASL_MECHANISM, message);
                None
            }
        },
    };
    if mechanism == Some(SaslMechanism::Plain) && !protocol.uses_tls() {
        reader.problem(
            KAFKA_SASL_MECHANISM,
            "PLAIN over sasl_plaintext would send the password in the clear: use sasl_ssl",
        );
    }
    if username.is_none() {
        reader.problem(KAFKA_SASL_USERNAME, "is required with SASL");
    }
    if !password_named {
        reader.problem(KAFKA_SASL_PASSWORD, "is required with SASL (or KAFKA_SASL_PASSWORD_FILE)");
    }
    Some(SaslCredentials { mechanism: mechanism?, username: username?, password: password? })
}

fn read_tls(reader: &mut Reader<'_>, protocol: SecurityProtocol) -> TlsFiles {
    use names::*;
    let ca_location = reader.optional(KAFKA_SSL_CA_LOCATION);
    let certificate_location = reader.optional(KAFKA_SSL_CERTIFICATE_LOCATION);
    let key_location = reader.optional(KAFKA_SSL_KEY_LOCATION);
    let key_password = reader.secret(KAFKA_SSL_KEY_PASSWORD);
    let key_password_named = key_password.is_some() || reader.optional(KAFKA_SSL_KEY_PASSWORD_FILE).is_some();
    if !protocol.uses_tls() {
        let set = [
            (KAFKA_SSL_CA_LOCATION, ca_location.is_some()),
            (KAFKA_SSL_CERTIFICATE_LOCATION, certificate_location.is_some()),
            (KAFKA_SSL_KEY_LOCATION, key_location.is_some()),
            (set_as(reader, KAFKA_SSL_KEY_PASSWORD, KAFKA_SSL_KEY_PASSWORD_FILE), key_password_named),
        ];
        unused(reader, protocol, &set, "TLS (use ssl or sasl_ssl)");
        return TlsFiles::default();
    }
    if let Some(path) = &ca_location {
        check_pem(reader, KAFKA_SSL_CA_LOCATION, path, "CERTIFICATE");
    }
    if let Some(path) = &certificate_location {
        check_pem(reader, KAFKA_SSL_CERTIFICATE_LOCATION, path, "CERTIFICATE");
    }
    if let Some(path) = &key_location {
        check_pem(reader, KAFKA_SSL_KEY_LOCATION, path, "PRIVATE KEY");
    }
    match (&certificate_location, &key_location) {
        (Some(_), None) => {
            reader.problem(KAFKA_SSL_KEY_LOCATION, "is required with KAFKA_SSL_CERTIFICATE_LOCATION")
        }
        (None, Some(_)) => {
            reader.problem(KAFKA_SSL_CERTIFICATE_LOCATION, "is required with KAFKA_SSL_KEY_LOCATION")
        }
        _ => {}
    }
    if key_password_named && key_location.is_none() {
        let variable = set_as(reader, KAFKA_SSL_KEY_PASSWORD, KAFKA_SSL_KEY_PASSWORD_FILE);
        reader.problem(variable, "is set but there is no KAFKA_SSL_KEY_LOCATION");
    }
    TlsFiles { ca_location, certificate_location, key_location, key_password }
}

/// Reports each variable of `set` that was given although `protocol` does not use `what`.
fn unused(reader: &mut Reader<'_>, protocol: SecurityProtocol, set: &[(&str, bool)], what: &str) {
    for (name, _) in set.iter().filter(|(_, is_set)| *is_set) {
        let message = format!("is set but KAFKA_SECURITY_PROTOCOL={} uses no {what}", protocol.as_str());
        reader.problem(name, message);
    }
}

/// Which of a secret's two variables the operator set, for messages about it.
fn set_as(reader: &mut Reader<'_>, name: &'static str, file_name: &'static str) -> &'static str {
    if reader.optional(name).is_some() {
        name
    } else {
        file_name
    }
}

/// The file must be readable and hold a PEM block of `kind`; its content is never reported.
fn check_pem(reader: &mut Reader<'_>, variable: &str, path: &str, kind: &str) {
    match reader.env().read_file(path) {
        Err(e) => reader.problem(variable, format!("cannot read {path:?}: {e}")),
        Ok(text) => {
            let has_block = text
                .lines()
                .any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with(&format!("{kind}-----")));
            if !has_block {
                reader.problem(variable, format!("{path:?} holds no PEM {kind}"));
            }
        }
    }
}
