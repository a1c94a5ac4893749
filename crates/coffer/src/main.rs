//! The `coffer` binary: parses the command line and dispatches to the server
//! (`serve`), the key and migration tools, or the gRPC client (`secrets`).
//! Every failure is printed as `error: …` on stderr with exit code 1.

mod client;
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
    /// Manage the key-encryption keys.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Apply or inspect database migrations.
    #[command(subcommand)]
    Migrate(migrate::MigrateCommand),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Secrets(args) => client::run(*args).await,
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
