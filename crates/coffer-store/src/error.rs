//! Maps database failures into Coffer's [`Error`], by kind and never by message
//! text: unique violations become `AlreadyExists` with the caller's reason,
//! connection and pool failures, and the database's own "cannot write now"
//! codes (full disk, read-only file, I/O error, shutdown; see
//! [`is_unavailable_code`]) become `Unavailable`, everything else is
//! `Internal`. Two kinds of `Unavailable` say more in their message: a
//! statement the database cancelled for taking too long (PostgreSQL's
//! statement or lock timeout), and a database that cannot be written (full
//! disk, read-only file or filesystem); the latter is also what
//! [`is_cannot_write`] tells the store, which then has health probe with a
//! write. The database's own text only ever reaches the internal cause
//! (server logs), never the client message.

use std::ops::Deref;

use coffer_core::{Error, ErrorCode, Reason};
use sea_orm::{DbErr, RuntimeErr, SqlErr};

/// Maps a database error that has no expected constraint violation.
pub(crate) fn db_err(err: DbErr) -> Error {
    let code = sql_code(&err);
    if is_timeout_code(code.as_deref()) {
        Error::new(
            ErrorCode::Unavailable,
            Reason::DatabaseUnavailable,
            "the database did not finish the statement in time (a lock held too long or an \
             overloaded database); retry with backoff",
        )
        .with_internal(err)
    } else if is_cannot_write_code(code.as_deref()) {
        Error::new(
            ErrorCode::Unavailable,
            Reason::DatabaseUnavailable,
            "the database cannot be written now (full disk or read-only storage); \
             retry once an operator has fixed it",
        )
        .with_internal(err)
    } else if is_unavailable(&err) {
        Error::database_unavailable(err)
    } else {
        Error::internal(err)
    }
}

/// A sqlx error from a connection used directly (not through SeaORM), as
/// SeaORM would have reported it, for [`db_err`].
pub(crate) fn sqlx_err(err: sea_orm::sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(std::sync::Arc::new(err)))
}

/// Whether `err` says the database cannot take writes at all right now (as
/// opposed to one statement failing): a full disk, a read-only database
/// file or filesystem, an I/O error. Health then probes with a write.
pub(crate) fn is_cannot_write(err: &DbErr) -> bool {
    let code = sql_code(err);
    is_cannot_write_code(code.as_deref())
        || is_sqlite_io_code(code.as_deref())
        || matches!(
            err,
            DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))
                if matches!(e.deref(), sea_orm::sqlx::Error::Io(_))
        )
}

/// The database's own error code (SQLSTATE on PostgreSQL, extended result
/// code on SQLite), if the error carries one.
fn sql_code(err: &DbErr) -> Option<String> {
    match err {
        DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e))
        | DbErr::Conn(RuntimeErr::SqlxError(e)) => match e.deref() {
            sea_orm::sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
            _ => None,
        },
        _ => None,
    }
}

/// PostgreSQL cancelled the statement: 57014 query_canceled (our
/// `statement_timeout`, or an operator's `pg_cancel_backend`) or 55P03
/// lock_not_available (`lock_timeout`, `NOWAIT`). The database is alive but
/// did not serve this statement in time; the transaction rolled back whole.
fn is_timeout_code(code: Option<&str>) -> bool {
    matches!(code, Some("57014" | "55P03"))
}

/// A database that cannot be written: SQLite's READONLY family (primary
/// code 8: 8, 264 RECOVERY, 520 CANTLOCK, 776 ROLLBACK, 1032 DBMOVED, 1288
/// CANTINIT, 1544 DIRECTORY) and FULL (13); PostgreSQL's 53100 disk_full
/// and 25006 read_only_sql_transaction (a standby or demoted primary).
fn is_cannot_write_code(code: Option<&str>) -> bool {
    match code {
        Some("53100" | "25006") => true,
        Some(code) if code.len() < 5 => {
            matches!(code.parse::<u32>().map(|c| c & 0xff), Ok(8 | 13))
        }
        _ => false,
    }
}

/// SQLite's IOERR family (primary code 10): the disk failed a read or a
/// write. Mapped to the generic unavailable message (a read may fail with
/// it too), but it makes health probe with a write.
fn is_sqlite_io_code(code: Option<&str>) -> bool {
    match code {
        Some(code) if code.len() < 5 => {
            matches!(code.parse::<u32>().map(|c| c & 0xff), Ok(10))
        }
        _ => false,
    }
}

/// Maps a database error where a unique violation means "already exists".
pub(crate) fn on_unique(err: DbErr, reason: Reason, message: &str) -> Error {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => {
            Error::new(ErrorCode::AlreadyExists, reason, message)
        }
        _ => db_err(err),
    }
}

/// A unique violation on a secret's key or display name.
pub(crate) fn secret_exists(err: DbErr) -> Error {
    on_unique(
        err,
        Reason::SecretAlreadyExists,
        "a secret with this key or display name already exists",
    )
}

/// Writing a binding: a unique violation means the consumer already has a
/// binding at this config path; a foreign-key violation, that the secret uid
/// names no secret.
pub(crate) fn binding_write_err(err: DbErr) -> Error {
    match err.sql_err() {
        Some(SqlErr::ForeignKeyConstraintViolation(_)) => Error::new(
            ErrorCode::NotFound,
            Reason::SecretNotFound,
            "the bound secret does not exist",
        ),
        _ => on_unique(
            err,
            Reason::BindingAlreadyExists,
            "a binding for this consumer and config path already exists",
        ),
    }
}

/// A stored value that does not parse back into its domain type: the row was
/// written by something other than this code. The column is named, the value is not.
pub(crate) fn corrupt(table: &str, column: &str) -> Error {
    Error::internal(format!("unreadable {column} in table {table}"))
}

/// Whether [`db_err`] maps `err` to `Unavailable`.
pub(crate) fn is_unavailable(err: &DbErr) -> bool {
    match err {
        DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            matches!(
                e.deref(),
                sea_orm::sqlx::Error::Io(_)
                    | sea_orm::sqlx::Error::Tls(_)
                    | sea_orm::sqlx::Error::PoolTimedOut
                    | sea_orm::sqlx::Error::PoolClosed
                    | sea_orm::sqlx::Error::WorkerCrashed
            ) || matches!(
                e.deref(),
                sea_orm::sqlx::Error::Database(db) if is_unavailable_code(db.code().as_deref())
            )
        }
        _ => false,
    }
}

/// Whether a database error code says the database cannot serve the
/// statement right now for a reason outside the request: an operator fixes
/// it (space, permissions, failover) and a retry then succeeds.
///
/// PostgreSQL codes are five-character SQLSTATEs: class 08 (connection
/// exception), class 53 (insufficient resources: disk full, out of memory,
/// too many connections), 57P01-57P03 (shutdown, cannot connect now) and
/// 25006 (read-only transaction, e.g. a demoted primary). SQLite codes are
/// (extended) result codes of at most four digits, whose low byte is the
/// primary code: BUSY 5, LOCKED 6, NOMEM 7, READONLY 8, IOERR 10, FULL 13,
/// CANTOPEN 14. CORRUPT and every constraint failure stay `Internal` or
/// their caller's mapping. Cancelled statements (57014, 55P03) are
/// unavailable too, with their own message (see [`db_err`]).
fn is_unavailable_code(code: Option<&str>) -> bool {
    let Some(code) = code else {
        return false;
    };
    if code.len() == 5 {
        return code.starts_with("08")
            || code.starts_with("53")
            || is_timeout_code(Some(code))
            || matches!(code, "57P01" | "57P02" | "57P03" | "25006");
    }
    match code.parse::<u32>() {
        Ok(extended) => matches!(extended & 0xff, 5..=8 | 10 | 13 | 14),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sea_orm::ConnAcquireErr;

    use super::*;

    #[test]
    fn connection_failures_are_unavailable() {
        for err in [
            DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
            DbErr::Conn(RuntimeErr::Internal("refused".into())),
            DbErr::Query(RuntimeErr::SqlxError(Arc::new(
                sea_orm::sqlx::Error::PoolClosed,
            ))),
        ] {
            let mapped = db_err(err);
            assert_eq!(mapped.code(), ErrorCode::Unavailable);
            assert_eq!(mapped.reason(), Reason::DatabaseUnavailable);
        }
    }

    #[test]
    fn cannot_write_now_codes_are_unavailable() {
        for code in [
            "13", "8", "1032", "10", "778", "14", "5", "53100", "57P01", "57P03", "08006", "25006",
        ] {
            assert!(is_unavailable_code(Some(code)), "{code}");
        }
        for code in [
            "11", "19", "2067", "1555", "23505", "23503", "40001", "42P01", "x",
        ] {
            assert!(!is_unavailable_code(Some(code)), "{code}");
        }
        assert!(!is_unavailable_code(None));
    }

    /// A database error as sqlx reports it, with `code` as its SQLSTATE or
    /// SQLite result code.
    #[derive(Debug)]
    struct Coded(&'static str);

    impl std::fmt::Display for Coded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "database error {}", self.0)
        }
    }

    impl std::error::Error for Coded {}

    impl sea_orm::sqlx::error::DatabaseError for Coded {
        fn message(&self) -> &str {
            "database error"
        }
        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            Some(self.0.into())
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sea_orm::sqlx::error::ErrorKind {
            sea_orm::sqlx::error::ErrorKind::Other
        }
    }

    fn coded(code: &'static str) -> DbErr {
        DbErr::Exec(RuntimeErr::SqlxError(Arc::new(
            sea_orm::sqlx::Error::Database(Box::new(Coded(code))),
        )))
    }

    #[test]
    fn cancelled_statements_are_unavailable_and_say_so() {
        for code in ["57014", "55P03"] {
            let mapped = db_err(coded(code));
            assert_eq!(mapped.code(), ErrorCode::Unavailable, "{code}");
            assert_eq!(mapped.reason(), Reason::DatabaseUnavailable, "{code}");
            assert!(mapped.message().contains("in time"), "{code}: {mapped:?}");
            assert!(mapped.internal_cause().unwrap().contains(code), "{code}");
            assert!(!is_cannot_write(&coded(code)), "{code}");
        }
    }

    #[test]
    fn a_database_that_cannot_be_written_is_unavailable_and_says_so() {
        // SQLite's READONLY family and FULL; PostgreSQL's disk_full and
        // read-only transaction.
        for code in [
            "8", "264", "520", "776", "1032", "1288", "13", "53100", "25006",
        ] {
            let mapped = db_err(coded(code));
            assert_eq!(mapped.code(), ErrorCode::Unavailable, "{code}");
            assert!(
                mapped.message().contains("cannot be written"),
                "{code}: {mapped:?}"
            );
            assert!(is_cannot_write(&coded(code)), "{code}");
        }
        // An I/O error makes health probe with a write but keeps the
        // generic message; a busy database or a lost connection does not.
        assert!(is_cannot_write(&coded("266")));
        assert_eq!(db_err(coded("266")).code(), ErrorCode::Unavailable);
        for code in ["5", "6", "14", "08006", "57P01", "23505"] {
            assert!(!is_cannot_write(&coded(code)), "{code}");
        }
    }

    #[test]
    fn other_failures_are_internal_and_keep_the_cause_private() {
        let mapped = db_err(DbErr::Custom("syntax error near secret".into()));
        assert_eq!(mapped.code(), ErrorCode::Internal);
        assert_eq!(mapped.message(), "internal error");
        assert!(mapped.internal_cause().is_some());
        let mapped = secret_exists(DbErr::RecordNotUpdated);
        assert_eq!(mapped.code(), ErrorCode::Internal);
    }
}
