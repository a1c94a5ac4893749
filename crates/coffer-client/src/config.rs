//! What a client connects with: the server URL, the tenant, mutual TLS (from
//! files or PEM strings) and timeouts, and how that becomes a tonic
//! [`Endpoint`]. Plaintext is refused except to a loopback dev server.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use zeroize::Zeroizing;

use crate::error::Error;
use crate::retry::RetryPolicy;

/// How to reach one Coffer server as one tenant.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `https://host:port`, or `http://127.0.0.1:port` / `http://localhost:port`
    /// for a dev server.
    pub endpoint: String,
    /// The tenant that plain secret keys belong to.
    pub tenant: String,
    /// Required for `https://`; forbidden for `http://`.
    pub tls: Option<TlsConfig>,
    pub connect_timeout: Duration,
    /// The time a call may take until its response headers arrive (a
    /// stream's messages are not limited).
    pub request_timeout: Duration,
    /// Retries of UNAVAILABLE for the convenience calls and the cache.
    pub retry: RetryPolicy,
}

/// The CA that signed the server's certificate, and the client's own
/// certificate and key for mutual TLS.
#[derive(Clone)]
pub struct TlsConfig {
    ca_pem: String,
    identity: Option<(String, Zeroizing<String>)>,
    domain_name: Option<String>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("client_identity", &self.identity.is_some())
            .field("domain_name", &self.domain_name)
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Verifies the server against `ca_pem` and presents no client certificate.
    pub fn server_only(ca_pem: impl Into<String>) -> Self {
        TlsConfig {
            ca_pem: ca_pem.into(),
            identity: None,
            domain_name: None,
        }
    }

    /// Mutual TLS from PEM strings.
    pub fn from_pem(
        ca_pem: impl Into<String>,
        cert_pem: impl Into<String>,
        key_pem: impl Into<String>,
    ) -> Self {
        TlsConfig {
            ca_pem: ca_pem.into(),
            identity: Some((cert_pem.into(), Zeroizing::new(key_pem.into()))),
            domain_name: None,
        }
    }

    /// Mutual TLS from PEM files.
    pub fn from_files(ca: &Path, cert: &Path, key: &Path) -> Result<Self, Error> {
        Ok(TlsConfig {
            ca_pem: read_pem(ca)?,
            identity: Some((read_pem(cert)?, Zeroizing::new(read_pem(key)?))),
            domain_name: None,
        })
    }

    /// Verifies the server certificate for `name` instead of the URL's host.
    pub fn with_domain_name(mut self, name: impl Into<String>) -> Self {
        self.domain_name = Some(name.into());
        self
    }

    fn client_tls(&self) -> ClientTlsConfig {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        if let Some((cert, key)) = &self.identity {
            tls = tls.identity(Identity::from_pem(cert, key.as_bytes()));
        }
        if let Some(name) = &self.domain_name {
            tls = tls.domain_name(name.clone());
        }
        tls
    }
}

fn read_pem(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path)
        .map_err(|err| Error::Config(format!("cannot read {}: {err}", path.display())))
}

impl ClientConfig {
    /// A plaintext connection to a dev server on this machine.
    pub fn plaintext(endpoint: impl Into<String>, tenant: impl Into<String>) -> Self {
        ClientConfig {
            endpoint: endpoint.into(),
            tenant: tenant.into(),
            tls: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
        }
    }

    /// Mutual TLS from PEM strings (CA, client certificate, client key).
    pub fn from_pem(
        endpoint: impl Into<String>,
        tenant: impl Into<String>,
        ca_pem: impl Into<String>,
        cert_pem: impl Into<String>,
        key_pem: impl Into<String>,
    ) -> Self {
        Self::plaintext(endpoint, tenant).with_tls(TlsConfig::from_pem(ca_pem, cert_pem, key_pem))
    }

    /// Mutual TLS from PEM files (CA, client certificate, client key).
    pub fn from_files(
        endpoint: impl Into<String>,
        tenant: impl Into<String>,
        ca: &Path,
        cert: &Path,
        key: &Path,
    ) -> Result<Self, Error> {
        Ok(Self::plaintext(endpoint, tenant).with_tls(TlsConfig::from_files(ca, cert, key)?))
    }

    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    pub fn with_timeouts(mut self, connect: Duration, request: Duration) -> Self {
        self.connect_timeout = connect;
        self.request_timeout = request;
        self
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The tonic endpoint, after checking that the settings make sense.
    pub(crate) fn endpoint(&self) -> Result<Endpoint, Error> {
        if self.tenant.is_empty() {
            return Err(Error::Config("the tenant is empty".into()));
        }
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return Err(Error::Config("timeouts must be positive".into()));
        }
        if self.retry.max_attempts == 0 {
            return Err(Error::Config(
                "retry.max_attempts must be at least 1".into(),
            ));
        }
        let endpoint = Endpoint::from_shared(self.endpoint.clone())
            .map_err(|_| Error::Config(format!("invalid endpoint url {}", self.endpoint)))?
            .connect_timeout(self.connect_timeout)
            .timeout(self.request_timeout);
        let uri = endpoint.uri();
        match (uri.scheme_str(), &self.tls) {
            (Some("https"), Some(tls)) => endpoint
                .tls_config(tls.client_tls())
                .map_err(|err| Error::Config(format!("cannot set up tls: {err}"))),
            (Some("https"), None) => Err(Error::Config(
                "an https:// endpoint needs a TlsConfig with the CA that signed the server's certificate"
                    .into(),
            )),
            (Some("http"), None) if is_loopback(uri.host().unwrap_or_default()) => Ok(endpoint),
            (Some("http"), None) => Err(Error::Config(format!(
                "plaintext is only allowed to a dev server on 127.0.0.1 or localhost, not {}; use https:// with TLS",
                self.endpoint
            ))),
            (Some("http"), Some(_)) => Err(Error::Config(
                "TLS settings need an https:// endpoint".into(),
            )),
            _ => Err(Error::Config(format!(
                "the endpoint must be an http:// or https:// url, not {}",
                self.endpoint
            ))),
        }
    }
}

fn is_loopback(host: &str) -> bool {
    matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(config: ClientConfig) -> String {
        config.endpoint().unwrap_err().to_string()
    }

    #[test]
    fn plaintext_only_to_loopback() {
        for ok in [
            "http://127.0.0.1:50051",
            "http://localhost:1",
            "http://[::1]:50051",
        ] {
            assert!(
                ClientConfig::plaintext(ok, "acme").endpoint().is_ok(),
                "{ok}"
            );
        }
        for remote in ["http://10.0.0.1:50051", "http://coffer.internal:443"] {
            let err = error(ClientConfig::plaintext(remote, "acme"));
            assert!(err.contains("only allowed to a dev server"), "{err}");
        }
    }

    #[test]
    fn https_needs_tls_and_tls_needs_https() {
        let err = error(ClientConfig::plaintext("https://coffer.internal", "acme"));
        assert!(err.contains("needs a TlsConfig"), "{err}");
        let err = error(ClientConfig::from_pem(
            "http://127.0.0.1:1",
            "acme",
            "ca",
            "cert",
            "key",
        ));
        assert!(err.contains("need an https://"), "{err}");
        let err = error(ClientConfig::plaintext("ftp://x", "acme"));
        assert!(err.contains("http:// or https://"), "{err}");
    }

    #[test]
    fn empty_tenant_and_zero_timeouts_are_rejected() {
        assert!(error(ClientConfig::plaintext("http://127.0.0.1:1", "")).contains("tenant"));
        let zero = ClientConfig::plaintext("http://127.0.0.1:1", "acme")
            .with_timeouts(Duration::ZERO, Duration::from_secs(1));
        assert!(error(zero).contains("timeouts"));
    }

    #[test]
    fn missing_files_are_named_and_keys_never_printed() {
        let err = ClientConfig::from_files(
            "https://x",
            "acme",
            Path::new("/nonexistent/ca.pem"),
            Path::new("c"),
            Path::new("k"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        let config =
            ClientConfig::from_pem("https://x", "acme", "ca", "cert", "PRIVATE-KEY-canary");
        assert!(!format!("{config:?}").contains("PRIVATE-KEY-canary"));
    }
}
