//! `coffer health`: one `grpc.health.v1.Health/Check` call, exit 0 only on
//! SERVING. The container HEALTHCHECK and scripts use it; plaintext against
//! `[server] health_listen`, or mTLS with `--ca/--cert/--key` against the API.

use std::path::PathBuf;

use anyhow::bail;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::client::conn::ClientOpts;

/// The connection options of the other client commands, without tenant and
/// output format, which a health check has no use for.
#[derive(Debug, clap::Args)]
pub(crate) struct HealthArgs {
    /// The server's URL: http:// for `[server] health_listen`, https:// with
    /// --ca (and --cert/--key) for the mTLS API.
    #[arg(long, env = "COFFER_SERVER", default_value = "http://127.0.0.1:50051")]
    server: String,
    /// PEM file of the CA that signed the server's certificate.
    #[arg(long, env = "COFFER_CA", value_name = "FILE")]
    ca: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (needs --key).
    #[arg(long, env = "COFFER_CERT", value_name = "FILE")]
    cert: Option<PathBuf>,
    /// PEM private key of the client certificate (needs --cert).
    #[arg(long, env = "COFFER_KEY", value_name = "FILE")]
    key: Option<PathBuf>,
    /// Seconds to wait for the connection and for the answer.
    #[arg(long, default_value_t = 5, value_name = "SECONDS")]
    timeout: u64,
    /// The service to ask about, e.g. coffer.v1.SecretsService; empty (the
    /// default) means the server as a whole.
    #[arg(long, default_value = "")]
    service: String,
}

/// Prints the status (SERVING, NOT_SERVING, …) and fails unless SERVING.
pub(crate) async fn run(args: HealthArgs) -> anyhow::Result<()> {
    let opts = ClientOpts {
        server: args.server,
        tenant: String::new(),
        output: None,
        ca: args.ca,
        cert: args.cert,
        key: args.key,
        timeout: args.timeout,
    };
    let channel = opts.connect().await?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: args.service,
        })
        .await?
        .into_inner();
    let status = ServingStatus::try_from(response.status).unwrap_or(ServingStatus::Unknown);
    println!("{}", status.as_str_name());
    if status != ServingStatus::Serving {
        bail!(
            "the server is not serving (status {})",
            status.as_str_name()
        );
    }
    Ok(())
}
