//! The connection of a sightline MQTT client to its broker: `[mqtt]`'s `username`,
//! `password_file` (or `password`) and `[mqtt.tls]`, shared by the edge agent and the aggregator
//! (cargo feature `mqtt`).
//!
//! [`SecurityKeys`] are those keys, declared once: each binary embeds them in its own `[mqtt]`
//! table (a [`KeyGroup`]: an unknown or misspelt key is still rejected with its line), checks them
//! with [`SecurityKeys::validate`] and makes their paths relative to the config file with
//! [`SecurityKeys::rebase`].
//!
//! [`BrokerSecurity`] turns those keys into the client's transport (plain TCP, or TLS with rustls
//! and the *ring* provider, verified against `ca_file` only, with an optional client certificate)
//! and credentials, applied to a `rumqttc::MqttOptions` with [`BrokerSecurity::apply`]. Every
//! error names the config key at fault (`mqtt.tls.ca_file`) and the file. [`explain`] turns a
//! failed connection attempt into a log line naming the cause (a refusal, a TLS failure). The
//! password is never logged: [`Secret`]'s `Debug` prints `***`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rumqttc::{ConnectReturnCode, ConnectionError, MqttOptions, TlsConfiguration, Transport};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Deserialize;
use serde::de::MapAccess;

use crate::config::{KeyGroup, rebase};

/// `[mqtt.tls]`: TLS to the broker, verified against a private CA, optionally with a client
/// certificate. PEM files (relative to the config file: the binaries rebase them).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MqttTlsConfig {
    /// CA certificate(s) the broker's certificate must chain to (the system roots are not used).
    pub ca_file: PathBuf,
    /// Client certificate (chain) presented to the broker; needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// Private key of `client_cert` (PKCS#8, PKCS#1 or SEC1), unencrypted.
    pub client_key: Option<PathBuf>,
    /// Name the broker's certificate must be valid for, instead of `mqtt.host` (e.g. when the
    /// broker is reached by IP address but its certificate names a host).
    pub server_name: Option<String>,
}

/// A secret string: `Debug` prints `***`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The `[mqtt]` keys of a client's broker security, embedded in each binary's `[mqtt]` table
/// (see [`KeyGroup`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecurityKeys {
    /// `mqtt.username`: user name sent in the MQTT CONNECT (broker authentication).
    pub username: Option<String>,
    /// `mqtt.password_file`: file whose first line is the password of `username`, so the secret
    /// stays out of the config. Relative to the config file. Read again on every connection
    /// attempt.
    pub password_file: Option<PathBuf>,
    /// `mqtt.password`: the password inline (discouraged: prefer `password_file`). Never logged.
    pub password: Option<Secret>,
    /// `[mqtt.tls]`: connect over TLS (absent: plain TCP).
    pub tls: Option<MqttTlsConfig>,
}

impl KeyGroup for SecurityKeys {
    const KEYS: &'static [&'static str] = &["username", "password_file", "password", "tls"];

    fn read_value<'de, A: MapAccess<'de>>(&mut self, key: &'static str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "username" => self.username = map.next_value()?,
            "password_file" => self.password_file = map.next_value()?,
            "password" => self.password = map.next_value()?,
            "tls" => self.tls = map.next_value()?,
            key => return Err(serde::de::Error::unknown_field(key, Self::KEYS)),
        }
        Ok(())
    }
}

impl AsRef<SecurityKeys> for SecurityKeys {
    fn as_ref(&self) -> &SecurityKeys {
        self
    }
}

impl SecurityKeys {
    /// Makes the files the keys name (`password_file`, `ca_file`, `client_cert`, `client_key`)
    /// relative to `dir`, the config file's directory, when they are relative.
    pub fn rebase(&mut self, dir: &Path) {
        let tls = self.tls.as_mut().map(|t| [Some(&mut t.ca_file), t.client_cert.as_mut(), t.client_key.as_mut()]);
        for p in [self.password_file.as_mut()].into_iter().chain(tls.into_iter().flatten()).flatten() {
            rebase(dir, p);
        }
    }

    /// Checks the keys without touching files; `host` is the broker's host name (it must be a DNS
    /// name or an IP address for TLS).
    pub fn validate(&self, host: &str) -> Result<(), SecurityError> {
        let err = |key: &'static str, message: &str| Err(SecurityError { key, message: message.into() });
        if self.username.as_deref().is_some_and(str::is_empty) {
            return err("mqtt.username", "must not be empty (remove it for no authentication)");
        }
        if self.password.is_some() && self.password_file.is_some() {
            return err("mqtt.password", "set either `password` or `password_file`, not both");
        }
        if self.username.is_none() {
            if self.password_file.is_some() {
                return err("mqtt.password_file", "needs `mqtt.username`");
            }
            if self.password.is_some() {
                return err("mqtt.password", "needs `mqtt.username`");
            }
        }
        if self.password_file.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return err("mqtt.password_file", "must be a file path");
        }
        let Some(tls) = &self.tls else { return Ok(()) };
        if tls.ca_file.as_os_str().is_empty() {
            return err("mqtt.tls.ca_file", "must be a file path (PEM)");
        }
        match (&tls.client_cert, &tls.client_key) {
            (Some(_), None) => {
                return err("mqtt.tls.client_key", "`client_cert` is set without `client_key`: set both or neither");
            }
            (None, Some(_)) => {
                return err("mqtt.tls.client_cert", "`client_key` is set without `client_cert`: set both or neither");
            }
            _ => {}
        }
        if let Some(name) = &tls.server_name
            && ServerName::try_from(name.as_str()).is_err()
        {
            return err("mqtt.tls.server_name", &format!("{name:?} is not a DNS name or an IP address"));
        }
        if ServerName::try_from(host).is_err() {
            return err("mqtt.host", &format!("{host:?} is not a DNS name or an IP address (needed for TLS)"));
        }
        Ok(())
    }
}

/// A problem with the files or values `[mqtt]` names for authentication or TLS.
#[derive(Debug, thiserror::Error)]
#[error("`{key}`: {message}")]
pub struct SecurityError {
    /// The config key at fault (`mqtt.tls.ca_file`).
    pub key: &'static str,
    /// What is wrong, naming the file.
    pub message: String,
}

/// The connection's credentials and TLS configuration, loaded from the files `[mqtt]` names.
#[derive(Clone)]
pub struct BrokerSecurity {
    credentials: Option<(String, Secret)>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for BrokerSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerSecurity")
            .field("username", &self.credentials.as_ref().map(|(u, _)| u))
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl BrokerSecurity {
    /// Reads the password file and the PEM files the keys name and builds the TLS client
    /// configuration; `keys` is a binary's `[mqtt]` table (or the [`SecurityKeys`] themselves).
    pub fn load(keys: impl AsRef<SecurityKeys>) -> Result<BrokerSecurity, SecurityError> {
        let keys = keys.as_ref();
        let credentials = match &keys.username {
            None => None,
            Some(user) => {
                let password = match (&keys.password, &keys.password_file) {
                    (Some(p), _) => p.clone(),
                    (None, Some(file)) => read_password(file)?,
                    // a user name alone (brokers that identify clients by it, e.g. with certificates)
                    (None, None) => Secret(String::new()),
                };
                Some((user.clone(), password))
            }
        };
        let tls = keys.tls.as_ref().map(tls_client_config).transpose()?.map(Arc::new);
        Ok(BrokerSecurity { credentials, tls })
    }

    pub fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The user name sent in the CONNECT, if any.
    pub fn username(&self) -> Option<&str> {
        self.credentials.as_ref().map(|(u, _)| u.as_str())
    }

    /// The password sent with [`Self::username`] (empty when only a user name is configured).
    pub fn password(&self) -> Option<&Secret> {
        self.credentials.as_ref().map(|(_, p)| p)
    }

    /// Sets the transport (TCP or TLS) and the credentials of `opts`.
    pub fn apply(&self, opts: &mut MqttOptions) {
        match &self.tls {
            Some(tls) => opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls.clone()))),
            None => opts.set_transport(Transport::Tcp),
        };
        if let Some((user, password)) = &self.credentials {
            opts.set_credentials(user.clone(), password.0.clone());
        }
    }
}

/// The first line of a password file.
fn read_password(file: &Path) -> Result<Secret, SecurityError> {
    let key = "mqtt.password_file";
    let text = std::fs::read_to_string(file)
        .map_err(|e| SecurityError { key, message: format!("cannot read {}: {e}", file.display()) })?;
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(SecurityError {
            key,
            message: format!("{} is empty (the password is its first line)", file.display()),
        });
    }
    Ok(Secret(line.to_owned()))
}

/// The certificates of a PEM file (at least one).
fn read_certs(key: &'static str, file: &Path) -> Result<Vec<CertificateDer<'static>>, SecurityError> {
    let pem = std::fs::read(file)
        .map_err(|e| SecurityError { key, message: format!("cannot read {}: {e}", file.display()) })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SecurityError { key, message: format!("{}: bad PEM: {e}", file.display()) })?;
    if certs.is_empty() {
        return Err(SecurityError {
            key,
            message: format!("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", file.display()),
        });
    }
    Ok(certs)
}

/// rustls with the *ring* provider: TLS 1.2 and 1.3, the server verified against `ca_file` only.
fn tls_client_config(t: &MqttTlsConfig) -> Result<rustls::ClientConfig, SecurityError> {
    let ca_key = "mqtt.tls.ca_file";
    let mut roots = rustls::RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(read_certs(ca_key, &t.ca_file)?);
    if added == 0 {
        return Err(SecurityError {
            key: ca_key,
            message: format!(
                "{}: none of its {ignored} certificate(s) is a usable CA certificate",
                t.ca_file.display()
            ),
        });
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| SecurityError { key: "mqtt.tls", message: e.to_string() })?;
    let builder = match &t.server_name {
        None => builder.with_root_certificates(roots),
        Some(name) => {
            let name = ServerName::try_from(name.clone()).map_err(|_| SecurityError {
                key: "mqtt.tls.server_name",
                message: format!("{name:?} is not a DNS name or an IP address"),
            })?;
            let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| SecurityError { key: ca_key, message: format!("{}: {e}", t.ca_file.display()) })?;
            builder.dangerous().with_custom_certificate_verifier(Arc::new(NameOverride { verifier, name }))
        }
    };
    let (cert_file, key_file) = match (&t.client_cert, &t.client_key) {
        (Some(c), Some(k)) => (c, k),
        (None, None) => return Ok(builder.with_no_client_auth()),
        (Some(_), None) => {
            return Err(SecurityError {
                key: "mqtt.tls.client_key",
                message: "set both client_cert and client_key".into(),
            });
        }
        (None, Some(_)) => {
            return Err(SecurityError {
                key: "mqtt.tls.client_cert",
                message: "set both client_cert and client_key".into(),
            });
        }
    };
    let certs = read_certs("mqtt.tls.client_cert", cert_file)?;
    let key = "mqtt.tls.client_key";
    let pem = std::fs::read(key_file)
        .map_err(|e| SecurityError { key, message: format!("cannot read {}: {e}", key_file.display()) })?;
    let private = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| SecurityError {
        key,
        message: match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                format!("{} holds no unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1)", key_file.display())
            }
            e => format!("{}: bad PEM: {e}", key_file.display()),
        },
    })?;
    builder.with_client_auth_cert(certs, private).map_err(|e| SecurityError {
        key,
        message: format!("{} does not fit the certificate in {}: {e}", key_file.display(), cert_file.display()),
    })
}

/// Verifies the broker's certificate for `[mqtt.tls] server_name` instead of `mqtt.host`
/// (rumqttc names the server after the host it connects to); everything else is webpki's.
#[derive(Debug)]
struct NameOverride {
    verifier: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for NameOverride {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _host: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier.verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.verifier.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.verifier.requires_raw_public_keys()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.verifier.root_hint_subjects()
    }
}

/// Why a connection attempt failed, for the log; `true` when retrying soon will not help
/// (a refusal or a TLS failure: the configuration, the certificates or the broker must change).
pub fn explain(e: &ConnectionError) -> (String, bool) {
    if let ConnectionError::ConnectionRefused(code) = e {
        let why = match code {
            ConnectReturnCode::BadUserNamePassword => {
                "bad user name or password (check mqtt.username and mqtt.password_file)"
            }
            ConnectReturnCode::NotAuthorized => {
                "not authorised (check mqtt.username, the password and the broker's access rules)"
            }
            ConnectReturnCode::BadClientId => "client id rejected (check mqtt.client_id)",
            ConnectReturnCode::ServiceUnavailable => "service unavailable",
            ConnectReturnCode::RefusedProtocolVersion => "MQTT 3.1.1 not supported",
            ConnectReturnCode::Success => "unexpected return code",
        };
        return (format!("MQTT broker refused the connection: {why}"), true);
    }
    // the handshake failed, or the broker sent an alert after it (TLS 1.3: our client
    // certificate refused), which surfaces while reading the CONNACK
    if let Some(tls) = tls_cause(e) {
        return (format!("MQTT TLS error: {tls}"), true);
    }
    match e {
        ConnectionError::Tls(e) => (format!("MQTT TLS error: {e}"), true),
        e => (e.to_string(), false),
    }
}

/// The rustls error somewhere in `e`'s chain of sources (or wrapped in an `io::Error` of it).
fn tls_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) =
            e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()?.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_and_tls_failures_are_explained() {
        let (why, severe) = explain(&ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized));
        assert!(why.starts_with("MQTT broker refused the connection: not authorised"), "{why}");
        assert!(severe);
        let (why, _) = explain(&ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword));
        assert!(why.contains("mqtt.password_file"), "{why}");
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, alert);
        let (why, severe) = explain(&ConnectionError::MqttState(rumqttc::StateError::Io(io)));
        assert_eq!(why, "MQTT TLS error: received fatal alert: CertificateRequired");
        assert!(severe);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let (_, severe) = explain(&ConnectionError::Io(refused));
        assert!(!severe, "a broker that is down is retried soon");
    }

    #[test]
    fn keys_are_checked_and_named() {
        let secret = Secret("hunter2".into());
        let tls = MqttTlsConfig {
            ca_file: "ca.pem".into(),
            client_cert: Some("c.pem".into()),
            client_key: None,
            server_name: None,
        };
        let key = |k: &SecurityKeys, host: &str| k.validate(host).err().map(|e| e.key);
        let user = SecurityKeys { username: Some("u".into()), ..Default::default() };
        assert_eq!(key(&user, "h"), None);
        let password = SecurityKeys { password: Some(secret.clone()), ..Default::default() };
        assert_eq!(key(&password, "h"), Some("mqtt.password"));
        assert_eq!(
            key(&SecurityKeys { password_file: Some("pw".into()), ..Default::default() }, "h"),
            Some("mqtt.password_file")
        );
        assert_eq!(key(&SecurityKeys { username: Some("".into()), ..user.clone() }, "h"), Some("mqtt.username"));
        assert_eq!(key(&SecurityKeys { tls: Some(tls.clone()), ..user.clone() }, "h"), Some("mqtt.tls.client_key"));
        let tls = MqttTlsConfig { client_cert: None, ..tls };
        assert_eq!(key(&SecurityKeys { tls: Some(tls), ..user.clone() }, "not a host"), Some("mqtt.host"));
        assert!(!format!("{:?}", SecurityKeys { password: Some(secret), ..user }).contains("hunter2"));
    }

    #[test]
    fn relative_files_are_rebased_on_the_config_directory() {
        let tls = MqttTlsConfig {
            ca_file: "certs/ca.pem".into(),
            client_cert: Some("/etc/ssl/client.pem".into()),
            client_key: Some("client.key".into()),
            server_name: None,
        };
        let mut keys = SecurityKeys {
            username: Some("u".into()),
            password_file: Some("pw".into()),
            password: None,
            tls: Some(tls),
        };
        keys.rebase(Path::new("/etc/sightline"));
        assert_eq!(keys.password_file.as_deref(), Some(Path::new("/etc/sightline/pw")));
        let tls = keys.tls.unwrap();
        assert_eq!(tls.ca_file, Path::new("/etc/sightline/certs/ca.pem"));
        assert_eq!(tls.client_cert.as_deref(), Some(Path::new("/etc/ssl/client.pem")));
        assert_eq!(tls.client_key.as_deref(), Some(Path::new("/etc/sightline/client.key")));
    }

    #[test]
    fn file_errors_name_the_key_and_the_file() {
        let dir = std::env::temp_dir().join(format!("sightline-base-mqtt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let tls = MqttTlsConfig { ca_file: missing.clone(), client_cert: None, client_key: None, server_name: None };
        let e = BrokerSecurity::load(SecurityKeys { tls: Some(tls), ..Default::default() }).unwrap_err();
        assert_eq!(e.key, "mqtt.tls.ca_file");
        assert!(e.to_string().contains(&missing.display().to_string()), "{e}");
        let pw = dir.join("pw");
        std::fs::write(&pw, "s3cret\nignored\n").unwrap();
        let keys = SecurityKeys { username: Some("u".into()), password_file: Some(pw), ..Default::default() };
        let s = BrokerSecurity::load(&keys).unwrap();
        assert_eq!(s.username(), Some("u"));
        assert!(!s.tls());
        assert!(!format!("{s:?}").contains("s3cret"));
        let mut opts = MqttOptions::new("c", "127.0.0.1", 1883);
        s.apply(&mut opts);
        let login = opts.credentials().unwrap();
        assert_eq!((login.username.as_str(), login.password.as_str()), ("u", "s3cret"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
