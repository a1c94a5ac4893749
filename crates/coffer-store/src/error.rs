//! Maps database failures into Coffer's [`Error`], by kind and never by message
//! text: unique violations become `AlreadyExists` with the caller's reason,
//! connection and pool failures, and the database's own "cannot write now"
//! codes (full disk, read-only file, I/O error, shutdown; see
//! [`is_unavailable_code`]) become `Unavailable`, everything else is
//! `Internal`. The database's own text only ever reaches the internal cause
//! (server logs), never the client message.

use std::ops::Deref;

use coffer_core::{Error, ErrorCode, Reason};
use sea_orm::{DbErr, RuntimeErr, SqlErr};

/// Maps a database error that has no expected constraint violation.
pub(crate) fn db_err(err: DbErr) -> Error {
    if is_unavailable(&err) {
        Error::database_unavailable(err)
    } else {
        Error::internal(err)
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

fn is_unavailable(err: &DbErr) -> bool {
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
/// their caller's mapping.
fn is_unavailable_code(code: Option<&str>) -> bool {
    let Some(code) = code else {
        return false;
    };
    if code.len() == 5 {
        return code.starts_with("08")
            || code.starts_with("53")
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
