//! `coffer migrate up|status`: apply or list database migrations.

use crate::storage::StorageArgs;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum MigrateCommand {
    /// Apply every pending migration.
    Up {
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// List migrations and whether each is applied.
    Status {
        #[command(flatten)]
        storage: StorageArgs,
    },
}

pub(crate) async fn run(cmd: MigrateCommand) -> anyhow::Result<()> {
    match cmd {
        MigrateCommand::Up { storage } => {
            let store = storage.connect().await?;
            store.migrate_up().await.map_err(describe)?;
            for migration in store.migration_status().await.map_err(describe)? {
                println!("applied  {}", migration.name);
            }
        }
        MigrateCommand::Status { storage } => {
            let store = storage.connect().await?;
            for migration in store.migration_status().await.map_err(describe)? {
                let state = if migration.applied {
                    "applied"
                } else {
                    "pending"
                };
                println!("{state:<8} {}", migration.name);
            }
        }
    }
    Ok(())
}

fn describe(err: coffer_core::Error) -> anyhow::Error {
    anyhow::anyhow!("{err} ({})", err.internal_cause().unwrap_or("no detail"))
}
