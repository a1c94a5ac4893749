//! Opening the database: the [`Store`] handle with its read and write pools,
//! the connection settings per backend, migrations and the health probe.
//!
//! SQLite gets two pools on one file: a write pool of exactly one connection
//! and a read pool of several connections that WAL lets run beside the
//! writer; the audit writer has one more connection of its own. Every
//! write takes the store's write turn first (see [`crate::sqlite_writer`]),
//! so our own writers queue in arrival order instead of meeting
//! `SQLITE_BUSY` and SQLite's sleeping busy handler. PostgreSQL uses one
//! pool for both, and a one-connection pool for the audit writer.
//!
//! SQLite's WAL is checkpointed into the database file by a background task
//! on a read connection ([`spawn_checkpointer`]), not by the writer: a
//! checkpoint waits for two fsyncs, and run by the writer at the end of a
//! commit it stalled every queued write, the resolves' audit batches
//! included, for 10–25 ms about once a second under load.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use coffer_core::{Error, Result};
use migration::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend,
    SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
};

use crate::change_marks::ChangeMarks;
use crate::error::{db_err, is_cannot_write};
use crate::notify::{CommitNotice, RemoteCommits};
use crate::sqlite_writer::{SqliteWriter, WriteTurn};
use crate::tx::WriteTx;
use tokio::sync::broadcast;

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Pool and timeout settings.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Size of the read pool on SQLite, of the one pool on PostgreSQL. The
    /// SQLite write pool always has exactly one connection.
    pub max_connections: u32,
    /// How long opening one connection may take.
    pub connect_timeout: Duration,
    /// How long a caller may wait for a pooled connection.
    pub acquire_timeout: Duration,
    /// How long SQLite waits on a lock held by another process (e.g. the
    /// migration CLI) before answering busy. SQLite has no statement
    /// timeout: this bounds its lock waits, the only waits it has.
    pub sqlite_busy_timeout: Duration,
    /// PostgreSQL only: the server cancels any statement of the pool's
    /// connections that runs longer (a lock wait included), and the call
    /// answers `Unavailable`. `Duration::ZERO` turns it off. Migrations run
    /// on a connection of their own without it.
    pub statement_timeout: Duration,
    /// Log every statement through `tracing` (noisy; for debugging).
    pub log_statements: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_connections: 10,
            connect_timeout: Duration::from_secs(5),
            // Short enough that a database that is down answers UNAVAILABLE
            // well inside a client's deadline instead of hanging the call.
            acquire_timeout: Duration::from_secs(1),
            sqlite_busy_timeout: Duration::from_secs(5),
            // Longer than any statement Coffer issues takes on a healthy
            // database, shorter than a client's usual deadline.
            statement_timeout: Duration::from_secs(5),
            log_statements: false,
        }
    }
}

/// How one connection pool is used right now (for metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUsage {
    /// `read` and `write` on SQLite; `shared` and `audit` (the audit
    /// writer's own) on PostgreSQL.
    pub pool: &'static str,
    /// Open connections waiting in the pool.
    pub idle: u32,
    /// Open connections lent out to a query or transaction.
    pub in_use: u32,
    /// The most connections the pool opens.
    pub max: u32,
}

/// Whether one migration has been applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    pub name: String,
    pub applied: bool,
}

/// The persistence handle. Cheap to clone: the pools are shared.
#[derive(Clone)]
pub struct Store {
    pub(crate) read: DatabaseConnection,
    pub(crate) write: DatabaseConnection,
    /// The audit writer's group commits ([`Store::append_audit_batch`]).
    /// On PostgreSQL a connection of its own: every resolve waits for the
    /// writer, so the writer must not queue for a connection behind the
    /// resolves' own cold reads (docs/PERFORMANCE.md, fifth run). On SQLite
    /// the one write connection, unused: the audit writer has a connection
    /// of its own there, in `sqlite_writer`.
    pub(crate) audit: DatabaseConnection,
    /// SQLite only: the write turn every writer takes first, and the audit
    /// writer's own connection (see [`crate::sqlite_writer`]).
    pub(crate) sqlite_writer: Option<SqliteWriter>,
    backend: Backend,
    /// Tenants changed by a committed transaction (see
    /// [`Store::subscribe_commits`]).
    pub(crate) commits: broadcast::Sender<CommitNotice>,
    /// This handle's id in PostgreSQL commit notices, so that the listener
    /// skips the notices this process already sent locally.
    pub(crate) instance: Arc<str>,
    /// PostgreSQL only: the LISTEN side of cross-replica notices.
    pub(crate) remote: Option<RemoteCommits>,
    /// SQLite on a file only: the change marks that tell other processes on
    /// the file what this one changed, and it what they did.
    pub(crate) marks: Option<Arc<ChangeMarks>>,
    /// Set when a write transaction failed because the database cannot be
    /// written (full disk, read-only file, I/O error: at BEGIN or COMMIT),
    /// or any of its statements failed with an `Unavailable` error;
    /// cleared by a successful [`Store::probe_write`]. Reads may still work
    /// then, so a read ping alone would report a server that refuses every
    /// audited call as healthy.
    pub(crate) write_blocked: Arc<AtomicBool>,
}

/// Connections of the audit writer's own pool on PostgreSQL: it runs one
/// batch at a time.
const AUDIT_CONNECTIONS: u32 = 1;

/// How many commit notices a slow subscriber may lag behind before it is
/// told it missed some (and re-reads).
const COMMIT_NOTICES: usize = 1024;

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password, so only the backend is shown.
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens `sqlite://path?mode=rwc`, `sqlite:path` (a file, created if
    /// missing) or `postgres://…`. Does not migrate.
    pub async fn connect(url: &str, options: StoreOptions) -> Result<Store> {
        if url.starts_with("sqlite:") {
            Self::connect_sqlite(url, &options).await
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let mut opts = pool_options(url, &options, options.max_connections);
            let timeout = options.statement_timeout;
            opts.map_sqlx_postgres_opts(move |pg| with_statement_timeout(pg, timeout));
            let pool = Database::connect(opts).await.map_err(db_err)?;
            let mut audit_opts = pool_options(url, &options, AUDIT_CONNECTIONS);
            audit_opts.map_sqlx_postgres_opts(move |pg| with_statement_timeout(pg, timeout));
            let audit = Database::connect(audit_opts).await.map_err(db_err)?;
            let remote = RemoteCommits::new(pool.get_postgres_connection_pool());
            Ok(Store::assemble(
                pool.clone(),
                pool,
                audit,
                None,
                Some(remote),
            ))
        } else {
            Err(Error::invalid_field(
                "database.url",
                "database url must start with sqlite: or postgres://",
            ))
        }
    }

    async fn connect_sqlite(url: &str, options: &StoreOptions) -> Result<Store> {
        let busy = options.sqlite_busy_timeout;
        let tune = move |opts: SqliteConnectOptions| {
            opts.create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(busy)
        };
        // Writers queue for SQLite's one write connection, which a rotation
        // into a remote vault holds for the length of its provider call: they
        // wait as long as SQLite would wait on another process's lock.
        let writer = StoreOptions {
            acquire_timeout: options.acquire_timeout.max(options.sqlite_busy_timeout),
            ..options.clone()
        };
        let mut write_opts = pool_options(url, &writer, 1);
        write_opts
            .min_connections(1)
            .map_sqlx_sqlite_opts(move |opts| {
                tune(opts).pragma("wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES)
            });
        // Opened first: it creates the file and switches it to WAL.
        let write = Database::connect(write_opts).await.map_err(db_err)?;
        if is_sqlite_memory(url) {
            // Every connection to an in-memory database is a database of its
            // own, so reads and audit batches must share the one write
            // connection.
            let writer = SqliteWriter::new(None, writer.acquire_timeout);
            return Ok(Store::assemble(
                write.clone(),
                write.clone(),
                write,
                Some(writer),
                None,
            ));
        }
        // The audit writer's own connection is set up like the write pool's.
        let audit_options = write.get_sqlite_connection_pool().connect_options();
        let sqlite_writer = SqliteWriter::new(Some(audit_options), writer.acquire_timeout);
        let mut read_opts = pool_options(url, options, options.max_connections.max(1));
        read_opts.map_sqlx_sqlite_opts(tune);
        let read = Database::connect(read_opts).await.map_err(db_err)?;
        let mut store = Store::assemble(read, write.clone(), write, Some(sqlite_writer), None);
        store.marks = Some(Arc::default());
        spawn_checkpointer(store.read.clone(), Arc::downgrade(&store.write_blocked));
        Ok(store)
    }

    /// A SQLite store has a `sqlite_writer`, a PostgreSQL one has none.
    fn assemble(
        read: DatabaseConnection,
        write: DatabaseConnection,
        audit: DatabaseConnection,
        sqlite_writer: Option<SqliteWriter>,
        remote: Option<RemoteCommits>,
    ) -> Store {
        Store {
            read,
            write,
            audit,
            backend: if sqlite_writer.is_some() {
                Backend::Sqlite
            } else {
                Backend::Postgres
            },
            sqlite_writer,
            commits: broadcast::channel(COMMIT_NOTICES).0,
            instance: uuid::Uuid::new_v4().simple().to_string().into(),
            remote,
            marks: None,
            write_blocked: Arc::default(),
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies every pending migration (a no-op when none is pending).
    pub async fn migrate_up(&self) -> Result<()> {
        let Some(untimed) = self.untimed_postgres().await? else {
            return Migrator::up(&self.write, None).await.map_err(db_err);
        };
        let result = Migrator::up(&untimed, None).await.map_err(db_err);
        let _ = untimed.close().await;
        result
    }

    /// Reverts the last `steps` applied migrations (all of them with `None`).
    /// For operators and tests; the server never migrates down.
    pub async fn migrate_down(&self, steps: Option<u32>) -> Result<()> {
        let Some(untimed) = self.untimed_postgres().await? else {
            return Migrator::down(&self.write, steps).await.map_err(db_err);
        };
        let result = Migrator::down(&untimed, steps).await.map_err(db_err);
        let _ = untimed.close().await;
        result
    }

    /// PostgreSQL: a one-connection pool like the shared one but without a
    /// statement timeout, for migrations. A schema change on a big table or
    /// one that waits for a lock may take longer than any request should,
    /// and a migration cut in the middle fails the start. `None` on SQLite,
    /// which has no statement timeout to lift.
    async fn untimed_postgres(&self) -> Result<Option<DatabaseConnection>> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let shared = self.write.get_postgres_connection_pool();
        // Later `-c` settings win over the pool's own.
        let options = with_statement_timeout((*shared.connect_options()).clone(), Duration::ZERO);
        let pool = sea_orm::sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(shared.options().get_acquire_timeout())
            .connect_with(options)
            .await
            .map_err(|e| {
                db_err(sea_orm::DbErr::Conn(sea_orm::RuntimeErr::SqlxError(
                    e.into(),
                )))
            })?;
        Ok(Some(
            sea_orm::SqlxPostgresConnector::from_sqlx_postgres_pool(pool),
        ))
    }

    /// Every known migration, oldest first, and whether it has been applied.
    pub async fn migration_status(&self) -> Result<Vec<MigrationStatus>> {
        let all = Migrator::get_migration_with_status_read_only(&self.read)
            .await
            .map_err(db_err)?;
        Ok(all
            .iter()
            .map(|m| MigrationStatus {
                name: m.name().to_owned(),
                applied: m.status() == migration::MigrationStatus::Applied,
            })
            .collect())
    }

    /// `SELECT 1` on the read pool: the health checker's probe.
    pub async fn ping(&self) -> Result<()> {
        let backend = self.read.get_database_backend();
        self.read
            .query_one_raw(Statement::from_string(backend, "SELECT 1"))
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Whether a write failed because the database cannot be written and
    /// no write has succeeded since (see [`Store::probe_write`]).
    pub fn write_blocked(&self) -> bool {
        self.write_blocked.load(Ordering::Relaxed)
    }

    /// A small real write, for health while [`Store::write_blocked`]: one
    /// write transaction that changes a row of the migration bookkeeping
    /// table and changes it back. The data ends as it was, but the page is
    /// written (the WAL on SQLite, a new row version on PostgreSQL): an
    /// UPDATE that changes nothing would be skipped by SQLite and prove
    /// nothing. Clears the flag when it commits, sets it when the database
    /// cannot be written.
    pub async fn probe_write(&self) -> Result<()> {
        const TOUCH: &str = "UPDATE seaql_migrations SET applied_at = -applied_at - 1 \
             WHERE version = (SELECT MAX(version) FROM seaql_migrations)";
        let tx = self.begin().await?;
        for _ in 0..2 {
            tx.txn
                .execute_raw(Statement::from_string(
                    self.write.get_database_backend(),
                    TOUCH,
                ))
                .await
                .map_err(|err| {
                    if is_cannot_write(&err) {
                        self.write_blocked.store(true, Ordering::Relaxed);
                    }
                    tx.failed(db_err(err))
                })?;
        }
        tx.commit().await?;
        self.write_blocked.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// SQLite: what `PRAGMA integrity_check` finds wrong in the database
    /// file, empty when it is sound. PostgreSQL has no equivalent and
    /// answers empty. For operators and fault tests.
    pub async fn integrity_check(&self) -> Result<Vec<String>> {
        if self.backend != Backend::Sqlite {
            return Ok(Vec::new());
        }
        let rows = self
            .read
            .query_all_raw(Statement::from_string(
                DbBackend::Sqlite,
                "PRAGMA integrity_check",
            ))
            .await
            .map_err(db_err)?;
        let mut problems = Vec::new();
        for row in rows {
            let line: String = row.try_get_by_index(0).map_err(db_err)?;
            if line != "ok" {
                problems.push(line);
            }
        }
        Ok(problems)
    }

    /// A snapshot of every pool's connections: SQLite's read and write
    /// pools (the same pool twice for an in-memory database), or
    /// PostgreSQL's one pool. Reads counters only; never waits.
    pub fn pool_usage(&self) -> Vec<PoolUsage> {
        match self.backend {
            Backend::Sqlite => vec![
                usage("read", self.read.get_sqlite_connection_pool()),
                usage("write", self.write.get_sqlite_connection_pool()),
            ],
            Backend::Postgres => vec![
                usage("shared", self.write.get_postgres_connection_pool()),
                usage("audit", self.audit.get_postgres_connection_pool()),
            ],
        }
    }

    /// Starts a transaction on the write pool (on SQLite, once it is this
    /// writer's turn; the transaction holds the turn until it ends).
    pub async fn begin(&self) -> Result<WriteTx> {
        let turn = self.write_turn().await?;
        if self.backend == Backend::Sqlite {
            self.discard_stuck_sqlite_writer().await?;
        }
        // SQLite: IMMEDIATE takes the write lock at BEGIN, waiting out its
        // busy timeout. A deferred transaction that read first and then
        // writes fails at once (SQLITE_BUSY, no wait) when another process
        // on the same file committed in between: two replicas on one SQLite
        // file turned that into UNAVAILABLE for a rotation. Within one
        // process the single write connection serializes writers anyway.
        let options = TransactionOptions {
            sqlite_transaction_mode: (self.backend == Backend::Sqlite)
                .then_some(SqliteTransactionMode::Immediate),
            ..TransactionOptions::default()
        };
        let txn = self
            .write
            .begin_with_options(options)
            .await
            .map_err(|err| {
                if is_cannot_write(&err) {
                    self.write_blocked.store(true, Ordering::Relaxed);
                }
                db_err(err)
            })?;
        Ok(WriteTx::new(
            txn,
            self.backend,
            self.commits.clone(),
            self.instance.clone(),
            self.marks.clone(),
            self.write_blocked.clone(),
            turn,
        ))
    }

    /// SQLite: waits for this writer's turn (see [`crate::sqlite_writer`]);
    /// every write outside a [`WriteTx`] holds it too. `None` on
    /// PostgreSQL, whose own locks order writers.
    pub(crate) async fn write_turn(&self) -> Result<Option<WriteTurn>> {
        match &self.sqlite_writer {
            Some(writer) => writer.turn().await.map(Some),
            None => Ok(None),
        }
    }

    /// Closes SQLite's one write connection if an earlier transaction left
    /// it inside a transaction. When a statement or COMMIT fails with a full
    /// disk or an I/O error, SQLite may roll the transaction back itself;
    /// the ROLLBACK that follows then fails, sqlx's transaction depth stays
    /// above zero, and every later "transaction" on that connection would
    /// nest as a savepoint that never commits — acknowledged writes lost
    /// (found by tests/tests/faults_sqlite.rs). A fresh connection starts
    /// clean. The ping runs after any rollback a dropped transaction queued.
    ///
    /// While the store cannot write ([`Store::write_blocked`]) the
    /// connection is reopened before every transaction too: SQLite opens a
    /// file it may not write read-only and stays so, and only a new
    /// connection notices that the file or filesystem is writable again.
    async fn discard_stuck_sqlite_writer(&self) -> Result<()> {
        use sea_orm::sqlx::Connection;
        let mut conn = self
            .write
            .get_sqlite_connection_pool()
            .acquire()
            .await
            .map_err(|e| {
                db_err(sea_orm::DbErr::Conn(sea_orm::RuntimeErr::SqlxError(
                    e.into(),
                )))
            })?;
        let stuck = conn.ping().await.is_err() || conn.is_in_transaction();
        if stuck || self.write_blocked() {
            if stuck {
                tracing::warn!(
                    "the SQLite write connection was left inside a failed transaction; reopening it"
                );
            }
            // Closing a broken connection may fail; it is gone either way.
            let _ = conn.close().await;
        }
        Ok(())
    }

    /// Notices of committed changes: after a transaction that audited a
    /// successful mutation commits, each tenant it changed is sent once,
    /// before `commit()` returns. Every mutation audits itself in its own
    /// transaction, so this is "something changed in this tenant". On
    /// PostgreSQL, other replicas' commits arrive too once
    /// [`Store::spawn_commit_listener`] runs (see [`crate::notify`]).
    /// Resolves and refusals send nothing.
    pub fn subscribe_commits(&self) -> broadcast::Receiver<CommitNotice> {
        self.commits.subscribe()
    }

    /// Closes the pools; later calls answer `Unavailable`.
    pub async fn close(&self) -> Result<()> {
        if let Some(remote) = &self.remote {
            remote.pool.close().await;
        }
        if let Some(writer) = &self.sqlite_writer {
            writer.close().await;
        }
        self.write.close_by_ref().await.map_err(db_err)?;
        match self.backend {
            Backend::Sqlite => self.read.close_by_ref().await.map_err(db_err)?,
            Backend::Postgres => self.audit.close_by_ref().await.map_err(db_err)?,
        }
        Ok(())
    }
}

/// How often the SQLite checkpointer copies the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// WAL pages at which SQLite's write connection checkpoints by itself: only
/// a safety net for a checkpointer that fell behind (SQLite's default, 1000
/// pages, is about a second of audit batches under load).
const WRITER_AUTOCHECKPOINT_PAGES: &str = "16384";

/// Runs `PRAGMA wal_checkpoint(PASSIVE)` every [`CHECKPOINT_EVERY`] on a
/// read connection: it copies what it can without waiting for readers or
/// the writer, which goes on appending meanwhile, and once everything is
/// copied the next write starts the WAL over. Stops once `alive` (a part of
/// every clone of the [`Store`]) is gone, and so lets go of the pool.
fn spawn_checkpointer<T: Send + Sync + 'static>(read: DatabaseConnection, alive: Weak<T>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if alive.strong_count() == 0 {
                break;
            }
            if let Err(err) = read
                .execute_unprepared("PRAGMA wal_checkpoint(PASSIVE)")
                .await
            {
                // A read-only or full disk: writes fail and say so; the
                // checkpoint tries again next time.
                tracing::debug!(error = %err, "SQLite checkpoint failed");
            }
        }
    });
}

/// PostgreSQL connections idle at least this long are pinged before they are
/// lent out: a server restart or a proxy may have dropped them. One used more
/// recently is lent out as it is; sqlx already pinged it when it came back.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(5);

fn pool_options(url: &str, options: &StoreOptions, max_connections: u32) -> ConnectOptions {
    let mut opts = ConnectOptions::new(url.to_owned());
    opts.max_connections(max_connections)
        .connect_timeout(options.connect_timeout)
        .acquire_timeout(options.acquire_timeout)
        .sqlx_logging(options.log_statements);
    // sqlx pings a connection when it returns to the pool; by default it
    // pings again on every acquire, one more round trip (to the server, or
    // to SQLite's worker thread) on every query and transaction.
    if url.starts_with("sqlite:") {
        // A file the process holds open does not go away between uses.
        opts.test_before_acquire(false);
    } else {
        opts.test_before_acquire_if_idle_for(PING_IF_IDLE_FOR);
    }
    opts
}

/// Sets PostgreSQL's `statement_timeout` for every connection at its start
/// (a startup option, so no extra round trip and no pooled connection
/// without it); zero turns it off.
fn with_statement_timeout(
    options: sea_orm::sqlx::postgres::PgConnectOptions,
    timeout: Duration,
) -> sea_orm::sqlx::postgres::PgConnectOptions {
    options.options([("statement_timeout", format!("{}ms", timeout.as_millis()))])
}

fn usage<DB: sea_orm::sqlx::Database>(
    pool: &'static str,
    of: &sea_orm::sqlx::Pool<DB>,
) -> PoolUsage {
    let size = of.size();
    let idle = u32::try_from(of.num_idle()).unwrap_or(u32::MAX).min(size);
    PoolUsage {
        pool,
        idle,
        in_use: size - idle,
        max: of.options().get_max_connections(),
    }
}

fn is_sqlite_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

/// The backend a connection speaks, for queries that differ per backend.
pub(crate) fn is_postgres(conn: &impl ConnectionTrait) -> bool {
    conn.get_database_backend() == DbBackend::Postgres
}
