//! Where the server keeps its state, shared by `serve`, `keys` and `migrate`:
//! the database URL (a secret: it may carry a password) and the keyring (a
//! file, or an env var, `COFFER_KEYRING` unless the config names another,
//! holding the same JSON). Defaults put both under `./.coffer/`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use coffer_crypto::Keyring;
use coffer_store::{Store, StoreOptions};
use secrecy::{ExposeSecret, SecretString};

/// The env var that may carry the whole keyring (its JSON) instead of a file.
pub(crate) const KEYRING_ENV: &str = crate::config::DEFAULT_KEYRING_ENV;

/// Database and keyring locations.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StorageArgs {
    /// Directory for the embedded defaults (SQLite file and keyring).
    #[arg(long, env = "COFFER_DATA_DIR", default_value = ".coffer")]
    pub(crate) data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://…`; default: SQLite in the data directory.
    // Hidden from --help's env display: the URL may hold a password.
    #[arg(long, env = "COFFER_DATABASE_URL", hide_env_values = true)]
    pub(crate) database_url: Option<SecretString>,
    /// Keyring file; default: `master.key` in the data directory. Ignored when
    /// the keyring env var (COFFER_KEYRING unless the config's `[keys]
    /// keyring_env` names another) holds a keyring.
    #[arg(long, env = "COFFER_KEYRING_FILE")]
    pub(crate) keyring: Option<PathBuf>,
    /// The env var that may hold the keyring JSON: `[keys] keyring_env` of
    /// the config, else COFFER_KEYRING.
    #[arg(skip = KEYRING_ENV.to_owned())]
    pub(crate) keyring_env: String,
}

impl StorageArgs {
    fn database_url(&self) -> SecretString {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("coffer.db").display()
            )
            .into(),
        }
    }

    pub(crate) fn keyring_path(&self) -> PathBuf {
        self.keyring
            .clone()
            .unwrap_or_else(|| self.data_dir.join("master.key"))
    }

    /// Connects to the database with default pool settings, creating the
    /// data directory for SQLite.
    pub(crate) async fn connect(&self) -> anyhow::Result<Store> {
        self.connect_with(StoreOptions::default()).await
    }

    /// Connects with explicit pool settings (the server's `[database]`).
    pub(crate) async fn connect_with(&self, options: StoreOptions) -> anyhow::Result<Store> {
        let url = self.database_url();
        let url = url.expose_secret();
        if url.starts_with("sqlite:") && self.database_url.is_none() {
            std::fs::create_dir_all(&self.data_dir)
                .with_context(|| format!("creating data directory {}", self.data_dir.display()))?;
        }
        Store::connect(url, options).await.map_err(|err| {
            anyhow::anyhow!(
                "connecting to the database failed: {err} ({})",
                err.internal_cause().unwrap_or("no detail")
            )
        })
    }

    /// Loads the keyring from the env var, else from (or creating) the file.
    pub(crate) fn load_or_create_keyring(&self) -> anyhow::Result<Arc<Keyring>> {
        let var = &self.keyring_env;
        if let Ok(text) = std::env::var(var) {
            let keyring = Keyring::from_json(&text)
                .with_context(|| format!("the {var} env var does not hold a valid keyring"))?;
            return Ok(Arc::new(keyring));
        }
        let path = self.keyring_path();
        let keyring = Keyring::load_or_create(&path)
            .with_context(|| format!("loading keyring {}", path.display()))?;
        Ok(Arc::new(keyring))
    }
}
