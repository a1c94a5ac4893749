//! The connection options every client subcommand shares (server URL, tenant,
//! output format, TLS files, timeout) and the helper that turns them into a
//! gRPC channel.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::output::OutputFormat;

/// Options of every client subcommand; they may be given before or after it.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Client options")]
pub(crate) struct ClientOpts {
    /// The Coffer server's URL (https:// when TLS options are given).
    #[arg(
        long,
        global = true,
        env = "COFFER_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub(crate) server: String,
    /// The tenant that plain secret keys belong to.
    #[arg(long, global = true, env = "COFFER_TENANT", default_value = "default")]
    pub(crate) tenant: String,
    /// Output format [default: table; raw for `resolve`].
    #[arg(long, global = true, value_enum)]
    pub(crate) output: Option<OutputFormat>,
    /// PEM file of the CA that signed the server's certificate.
    #[arg(long, global = true, env = "COFFER_CA", value_name = "FILE")]
    pub(crate) ca: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (needs --key).
    #[arg(long, global = true, env = "COFFER_CERT", value_name = "FILE")]
    pub(crate) cert: Option<PathBuf>,
    /// PEM private key of the client certificate (needs --cert).
    // The id differs from the name: every subcommand has a positional `key`.
    #[arg(
        id = "tls_key",
        long = "key",
        global = true,
        env = "COFFER_KEY",
        value_name = "FILE"
    )]
    pub(crate) key: Option<PathBuf>,
    /// Seconds to wait for the connection and for each call.
    #[arg(
        long,
        global = true,
        env = "COFFER_TIMEOUT",
        default_value_t = 30,
        value_name = "SECONDS"
    )]
    pub(crate) timeout: u64,
}

impl ClientOpts {
    /// Connects to the server; TLS is used for https URLs and whenever a TLS
    /// file is given.
    pub(crate) async fn connect(&self) -> anyhow::Result<Channel> {
        let endpoint = self.endpoint()?;
        endpoint
            .connect()
            .await
            .with_context(|| format!("cannot connect to {}", self.server))
    }

    fn endpoint(&self) -> anyhow::Result<Endpoint> {
        if self.timeout == 0 {
            bail!("--timeout must be at least 1 second");
        }
        let timeout = Duration::from_secs(self.timeout);
        let endpoint = Endpoint::from_shared(self.server.clone())
            .with_context(|| format!("invalid --server url {}", self.server))?
            .connect_timeout(timeout)
            .timeout(timeout);
        match self.tls_config()? {
            Some(tls) => endpoint
                .tls_config(tls)
                .context("cannot set up tls for the connection"),
            None => Ok(endpoint),
        }
    }

    /// The TLS settings, or `None` for plaintext `http://`.
    fn tls_config(&self) -> anyhow::Result<Option<ClientTlsConfig>> {
        let https = self.server.starts_with("https://");
        let any_file = self.ca.is_some() || self.cert.is_some() || self.key.is_some();
        if !https {
            if any_file {
                bail!("--ca, --cert and --key need an https:// --server url");
            }
            return Ok(None);
        }
        // No system roots are built in: a private CA is the expected setup.
        let Some(ca) = &self.ca else {
            bail!("an https:// server needs --ca FILE, the CA that signed its certificate");
        };
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read_pem(ca)?));
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(read_pem(cert)?, read_pem(key)?));
            }
            (None, None) => {}
            _ => bail!("--cert and --key must be given together"),
        }
        Ok(Some(tls))
    }
}

fn read_pem(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn opts(server: &str) -> ClientOpts {
        ClientOpts {
            server: server.to_owned(),
            tenant: "default".to_owned(),
            output: None,
            ca: None,
            cert: None,
            key: None,
            timeout: 30,
        }
    }

    #[test]
    fn plain_http_needs_no_tls() {
        assert!(opts("http://127.0.0.1:1").tls_config().unwrap().is_none());
        assert!(opts("http://127.0.0.1:1").endpoint().is_ok());
    }

    #[test]
    fn tls_files_need_https_and_come_in_pairs() {
        let mut o = opts("http://127.0.0.1:1");
        o.ca = Some("ca.pem".into());
        let err = o.tls_config().unwrap_err().to_string();
        assert!(err.contains("https://"), "{err}");

        let err = opts("https://127.0.0.1:1").tls_config().unwrap_err();
        assert!(err.to_string().contains("--ca"));

        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "pem").unwrap();
        let mut o = opts("https://127.0.0.1:1");
        o.ca = Some(ca.clone());
        assert!(o.tls_config().unwrap().is_some());
        o.cert = Some(ca);
        let err = o.tls_config().unwrap_err();
        assert_eq!(err.to_string(), "--cert and --key must be given together");
    }

    #[test]
    fn bad_urls_and_zero_timeouts_are_rejected() {
        assert!(opts("not a url").endpoint().is_err());
        let mut o = opts("http://127.0.0.1:1");
        o.timeout = 0;
        assert!(o.endpoint().is_err());
    }
}
