//! `coffer bench`: a load generator like vault-benchmark. It seeds its own
//! tenant, then drives one scenario for a duration with N concurrent callers
//! spread over M HTTP/2 connections (made by the client's own connection
//! code, so mTLS works as for every other command), and reports throughput,
//! latency percentiles and errors by gRPC code. `--compare health` alternates
//! the scenario with the health-check baseline in one run.

mod report;
mod scenario;
mod stats;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use coffer_core::validate::MAX_BATCH_RESOLVE;
use rand::Rng;
use tonic::transport::Channel;

use self::report::Report;
pub(crate) use self::scenario::Scenario;
use self::scenario::{Clients, Sizes, Workload};
use self::stats::Samples;
use crate::client::conn::ClientOpts;

/// Slices per side when `--compare` alternates the scenario and the baseline.
const COMPARE_SLICES: u32 = 4;
/// How long a replica-lag round waits for the replica before it counts as
/// DEADLINE_EXCEEDED.
const REPLICA_LAG_LIMIT: Duration = Duration::from_secs(5);
/// Most seeding calls in flight at once.
const SEED_PARALLELISM: usize = 32;

/// `coffer bench SCENARIO`: the connection options of `coffer health` plus
/// the load's shape. --tenant defaults to a fresh `bench-<random>` tenant.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    /// What to drive.
    #[arg(value_enum)]
    scenario: Scenario,
    /// How long to measure (e.g. 10s, 500ms, 2m); with --compare, per side.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured load before measuring (per side with --compare).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Concurrent callers.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: u32,
    /// Separate HTTP/2 connections the callers are spread over.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    connections: u32,
    /// Secrets seeded for resolve-many, batch-resolve and mixed.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    secrets: u32,
    /// Secrets per BatchResolveSecrets call.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    batch: u32,
    /// Bindings of the consumer that resolve-bindings resolves.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    bindings: u32,
    /// The tenant to seed and load [default: a fresh bench-<random>].
    #[arg(long)]
    tenant: Option<String>,
    /// Also run this baseline, alternating with the scenario, and print the ratio.
    #[arg(long, value_enum)]
    compare: Option<Baseline>,
    /// table (default) or json.
    #[arg(long, value_enum, default_value_t = report::Format::Table)]
    output: report::Format,
    /// The Coffer server's URL (https:// when TLS options are given).
    #[arg(long, env = "COFFER_SERVER", default_value = "http://127.0.0.1:50051")]
    server: String,
    /// replica-lag: a second server on the same database, resolved after each
    /// rotation made through --server (same TLS options).
    #[arg(long, value_name = "URL")]
    replica: Option<String>,
    /// PEM file of the CA that signed the server's certificate.
    #[arg(long, env = "COFFER_CA", value_name = "FILE")]
    ca: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (needs --key).
    #[arg(long, env = "COFFER_CERT", value_name = "FILE")]
    cert: Option<PathBuf>,
    /// PEM private key of the client certificate (needs --cert).
    #[arg(long, env = "COFFER_KEY", value_name = "FILE")]
    key: Option<PathBuf>,
    /// Seconds to wait for each connection and each call.
    #[arg(
        long,
        env = "COFFER_TIMEOUT",
        default_value_t = 30,
        value_name = "SECONDS"
    )]
    timeout: u64,
}

/// The baselines `--compare` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Baseline {
    Health,
}

pub(crate) async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.batch as usize > MAX_BATCH_RESOLVE {
        bail!("--batch must be at most {MAX_BATCH_RESOLVE}");
    }
    if args.duration.is_zero() {
        bail!("--duration must be more than zero");
    }
    let tenant = match &args.tenant {
        Some(tenant) => tenant.clone(),
        None => format!("bench-{:08x}", rand::rng().random::<u32>()),
    };
    let opts = ClientOpts {
        server: args.server.clone(),
        tenant: tenant.clone(),
        output: None,
        ca: args.ca.clone(),
        cert: args.cert.clone(),
        key: args.key.clone(),
        timeout: args.timeout,
    };
    // Endpoint::connect opens a connection of its own each time.
    let mut channels = Vec::new();
    for _ in 0..args.connections {
        channels.push(opts.connect().await?);
    }
    let sizes = Sizes {
        secrets: args.secrets as usize,
        batch: args.batch as usize,
        bindings: args.bindings as usize,
        callers: args.concurrency as usize,
    };
    let seed_start = Instant::now();
    let workload = Workload::seed(
        args.scenario,
        tenant.clone(),
        sizes,
        &channels,
        SEED_PARALLELISM,
    )
    .await?;
    let seed_time = seed_start.elapsed();
    let driver = Driver {
        workload,
        channels,
        callers: args.concurrency as usize,
    };

    let (measured, baseline) = match args.compare {
        None if args.scenario == Scenario::ReplicaLag => {
            let replica = replica_channel(&opts, args.replica.as_deref()).await?;
            driver.replica_lag(&replica, args.warmup).await?;
            (driver.replica_lag(&replica, args.duration).await?, None)
        }
        Some(_) if args.scenario == Scenario::ReplicaLag => {
            bail!("replica-lag measures propagation, not throughput: drop --compare")
        }
        None => {
            driver.drive(args.scenario, args.warmup).await?;
            (driver.drive(args.scenario, args.duration).await?, None)
        }
        Some(Baseline::Health) => {
            driver.drive(args.scenario, args.warmup).await?;
            driver.drive(Scenario::Health, args.warmup).await?;
            let slice = args.duration / COMPARE_SLICES;
            let (mut measured, mut baseline) = (Samples::default(), Samples::default());
            for _ in 0..COMPARE_SLICES {
                baseline.merge(driver.drive(Scenario::Health, slice).await?);
                measured.merge(driver.drive(args.scenario, slice).await?);
            }
            (measured, Some(baseline))
        }
    };
    // replica-lag runs one caller over one connection to each server.
    let (callers, connections) = match args.scenario {
        Scenario::ReplicaLag => (1, 1),
        _ => (args.concurrency, args.connections),
    };
    let report = Report::new(
        &tenant,
        callers,
        connections,
        seed_time,
        measured.summarize(args.scenario.name()),
        baseline.map(|b| b.summarize(Scenario::Health.name())),
    );
    report.print(args.output)
}

/// The connection to `--replica`, with the TLS options of `--server`.
async fn replica_channel(opts: &ClientOpts, replica: Option<&str>) -> anyhow::Result<Channel> {
    let replica = replica.context("replica-lag needs --replica URL (a second server)")?;
    let opts = ClientOpts {
        server: replica.to_owned(),
        ..opts.clone()
    };
    opts.connect().await
}

/// Runs the callers of one scenario over the shared channels.
#[derive(Debug)]
struct Driver {
    workload: Arc<Workload>,
    channels: Vec<Channel>,
    callers: usize,
}

impl Driver {
    /// Every caller calls back to back until `length` has passed; the slice
    /// lasts until the last call in flight returns.
    async fn drive(&self, scenario: Scenario, length: Duration) -> anyhow::Result<Samples> {
        let start = Instant::now();
        let deadline = start + length;
        let mut tasks = tokio::task::JoinSet::new();
        for caller in 0..self.callers {
            let mut clients = Clients::new(self.channels[caller % self.channels.len()].clone());
            let workload = Arc::clone(&self.workload);
            tasks.spawn(async move {
                let mut samples = Samples::default();
                while Instant::now() < deadline {
                    let call_start = Instant::now();
                    match workload.call(&mut clients, caller, scenario).await {
                        Ok(()) => samples.ok(call_start.elapsed()),
                        Err(code) => samples.error(code),
                    }
                }
                samples
            });
        }
        let mut merged = Samples::default();
        while let Some(samples) = tasks.join_next().await {
            merged.merge(samples.context("a bench caller panicked")?);
        }
        merged.add_elapsed(start.elapsed());
        Ok(merged)
    }
}

impl Driver {
    /// `replica-lag` rounds back to back for `length`: one caller, since
    /// concurrent rotations of one secret would blur whose version shows.
    async fn replica_lag(&self, replica: &Channel, length: Duration) -> anyhow::Result<Samples> {
        let start = Instant::now();
        let mut primary = Clients::new(self.channels[0].clone());
        let mut replica = Clients::new(replica.clone());
        let mut samples = Samples::default();
        while start.elapsed() < length {
            match self
                .workload
                .replica_lag(&mut primary, &mut replica, REPLICA_LAG_LIMIT)
                .await
            {
                Ok(lag) => samples.ok(lag),
                Err(code) => samples.error(code),
            }
        }
        samples.add_elapsed(start.elapsed());
        Ok(samples)
    }
}

/// `10s`, `500ms`, `2m`, or plain seconds.
fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let (number, unit) = raw
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((raw, "s"), |at| raw.split_at(at));
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {raw:?}: use e.g. 10s, 500ms or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("invalid duration unit {unit:?}: use ms, s or m")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("invalid duration {raw:?}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("1h").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn defaults_follow_the_issue() {
        let args = Cli::try_parse_from(["bench", "resolve-many"]).unwrap().args;
        assert_eq!(args.scenario, Scenario::ResolveMany);
        assert_eq!(args.duration, Duration::from_secs(10));
        assert_eq!((args.concurrency, args.connections), (16, 2));
        assert_eq!((args.secrets, args.batch, args.bindings), (10_000, 50, 20));
        assert_eq!(args.tenant, None);
        assert!(Cli::try_parse_from(["bench", "resolve", "--concurrency", "0"]).is_err());
        let args = Cli::try_parse_from(["bench", "write", "--compare", "health"])
            .unwrap()
            .args;
        assert_eq!(args.compare, Some(Baseline::Health));
    }
}
