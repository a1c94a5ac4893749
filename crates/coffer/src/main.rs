//! The `coffer` binary: parses the command line and dispatches to the server
//! (`serve`), the config, key and migration tools, or the gRPC client
//! (`secrets`, `bindings`, `vaults`, `import`, `health`, …).
//! Every failure is printed as `error: …` on stderr with exit code 1.

mod bench;
mod client;
mod config;
mod config_cmd;
mod dev_certs;
mod input;
mod keys;
mod migrate;
mod output;
mod serve;
mod storage;

use std::process::ExitCode;

use clap::Parser;

/// Coffer: a multi-tenant secrets service.
#[derive(Debug, Parser)]
#[command(name = "coffer", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run the Coffer gRPC server.
    Serve(serve::ServeArgs),
    /// Manage and resolve secrets on a running server.
    Secrets(Box<client::SecretsArgs>),
    /// Bind secrets to their consumers (agents, projects, runs, ...).
    Bindings(Box<client::bindings::BindingsArgs>),
    /// Resolve every binding of one consumer in one call (an agent run's environment).
    ResolveBindings(Box<client::resolve_bindings::ResolveBindingsArgs>),
    /// List, verify and export the tenant's audit trail.
    Audit(Box<client::audit::AuditArgs>),
    /// Manage vaults: configured provider instances (AWS Secrets Manager, the built-in store).
    Vaults(Box<client::vaults::VaultsArgs>),
    /// Import secrets that already live in a remote vault, by reference.
    Import(Box<client::import::ImportArgs>),
    /// Print changes to secrets and bindings as they happen (never values).
    Watch(Box<client::watch::WatchArgs>),
    /// Drive a load scenario against a server and print throughput and latency.
    Bench(Box<bench::BenchArgs>),
    /// Ask a server's grpc.health.v1 whether it is serving (exit 0 only if so).
    Health(Box<client::health::HealthArgs>),
    /// Check a config file (`check FILE`) or print a commented example (`example`).
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
    /// Development helpers (`coffer dev certs`).
    #[command(subcommand)]
    Dev(dev_certs::DevCommand),
    /// Manage the key-encryption keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Apply or inspect database migrations.
    #[command(subcommand)]
    Migrate(migrate::MigrateCommand),
}

/// mimalloc instead of the system allocator: the resolve path allocates
/// many small, short-lived buffers across threads, where glibc malloc spent
/// about a fifth of the server's CPU (docs/PERFORMANCE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Secrets(args) => client::run(*args).await,
        Command::Bindings(args) => client::bindings::run(*args).await,
        Command::ResolveBindings(args) => client::resolve_bindings::run(*args).await,
        Command::Audit(args) => client::audit::run(*args).await,
        Command::Vaults(args) => client::vaults::run(*args).await,
        Command::Import(args) => client::import::run(*args).await,
        Command::Watch(args) => client::watch::run(*args).await,
        Command::Bench(args) => bench::run(*args).await,
        Command::Health(args) => client::health::run(*args).await,
        Command::Config(cmd) => config_cmd::run(cmd).await,
        Command::Dev(cmd) => dev_certs::run(cmd).await,
        Command::Keys(cmd) => keys::run(cmd).await,
        Command::Migrate(cmd) => migrate::run(cmd).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{}", client::status::report(&err));
            ExitCode::FAILURE
        }
    }
}
