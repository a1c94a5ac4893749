//! `coffer keys list|rotate|rewrap`: manage the key-encryption keys (KEKs) of
//! the built-in encrypted store. Rotation adds a KEK that new versions use;
//! rewrap re-wraps every stored DEK under the active KEK without decrypting
//! or changing any value, so old KEKs can be retired afterwards.

use std::sync::Arc;

use anyhow::{Context, bail};
use coffer_crypto::Keyring;
use coffer_providers::StoredVersion;
use coffer_providers::local_encrypted::LocalEncryptedProvider;

use crate::storage::{KEYRING_ENV, StorageArgs};

/// Versions re-wrapped per transaction.
const REWRAP_BATCH: usize = 200;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum KeysCommand {
    /// List KEK ids; the active one is marked.
    List {
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Add a new KEK and make it active (restart the server to use it).
    Rotate {
        #[command(flatten)]
        storage: StorageArgs,
    },
    /// Re-wrap every stored data key under the active KEK; values are untouched.
    Rewrap {
        #[command(flatten)]
        storage: StorageArgs,
    },
}

pub(crate) async fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::List { storage } => {
            let keyring = storage.load_or_create_keyring()?;
            for id in keyring.kek_ids() {
                let marker = if id == keyring.active_kek_id() {
                    "active"
                } else {
                    ""
                };
                println!("{id}\t{marker}");
            }
        }
        KeysCommand::Rotate { storage } => {
            if std::env::var_os(KEYRING_ENV).is_some() {
                bail!(
                    "the keyring comes from the {KEYRING_ENV} env var; rotate it where it is stored"
                );
            }
            let path = storage.keyring_path();
            let id = Keyring::rotate_file(&path)
                .with_context(|| format!("rotating keyring {}", path.display()))?;
            println!("added KEK {id} to {} and made it active", path.display());
            println!("restart coffer to seal new versions with it, then run `coffer keys rewrap`");
        }
        KeysCommand::Rewrap { storage } => {
            let report = rewrap(&storage).await?;
            println!(
                "rewrapped {} versions, {} already under the active KEK, {} kept by other providers, {} changed meanwhile",
                report.rewrapped, report.current, report.other, report.changed
            );
        }
    }
    Ok(())
}

/// Counts from one rewrap run.
#[derive(Debug, Default)]
struct RewrapReport {
    rewrapped: u64,
    current: u64,
    other: u64,
    changed: u64,
}

async fn rewrap(storage: &StorageArgs) -> anyhow::Result<RewrapReport> {
    let keyring = storage.load_or_create_keyring()?;
    let provider = LocalEncryptedProvider::new(Arc::clone(&keyring));
    let store = storage.connect().await?;
    let mut report = RewrapReport::default();
    let mut after: Option<(String, i64)> = None;
    loop {
        let page = store
            .versions_with_material(after.clone(), REWRAP_BATCH)
            .await
            .map_err(describe)?;
        let Some(last) = page.last() else { break };
        after = Some((last.secret_uid.clone(), last.version));
        let tx = store.begin().await.map_err(describe)?;
        for version in &page {
            let Some(material) = version.material.as_deref() else {
                continue;
            };
            if LocalEncryptedProvider::kek_id_of(material).is_none() {
                report.other += 1;
                continue;
            }
            let stored = StoredVersion {
                material: material.to_owned(),
                provider_version_ref: version.provider_version_ref.clone(),
            };
            match provider.rewrap(&stored).map_err(|err| {
                anyhow::anyhow!(
                    "re-wrapping version {} of secret {} failed: {}",
                    version.version,
                    version.secret_uid,
                    err.message
                )
            })? {
                Some(rewrapped) => {
                    let swapped = tx
                        .set_version_material(
                            &version.secret_uid,
                            version.version,
                            material,
                            &rewrapped.material,
                        )
                        .await
                        .map_err(describe)?;
                    // A version destroyed (or re-wrapped) since it was read is left alone.
                    if swapped {
                        report.rewrapped += 1;
                    } else {
                        report.changed += 1;
                    }
                }
                None => report.current += 1,
            }
        }
        tx.commit().await.map_err(describe)?;
    }
    Ok(report)
}

fn describe(err: coffer_core::Error) -> anyhow::Error {
    anyhow::anyhow!("{err} ({})", err.internal_cause().unwrap_or("no detail"))
}
