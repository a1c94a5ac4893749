//! Maps database failures into Coffer's [`Error`], by kind and never by message
//! text: unique violations become `AlreadyExists` with the caller's reason,
//! connection and pool failures become `Unavailable`, everything else is
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
            )
        }
        _ => false,
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
    fn other_failures_are_internal_and_keep_the_cause_private() {
        let mapped = db_err(DbErr::Custom("syntax error near secret".into()));
        assert_eq!(mapped.code(), ErrorCode::Internal);
        assert_eq!(mapped.message(), "internal error");
        assert!(mapped.internal_cause().is_some());
        let mapped = secret_exists(DbErr::RecordNotUpdated);
        assert_eq!(mapped.code(), ErrorCode::Internal);
    }
}
