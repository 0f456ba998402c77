//! The one mapping from database failures to ordo's error model: an unreachable or overloaded
//! database is `unavailable` (retry later, 503); a constraint the caller ran into is `conflict`;
//! anything else is `internal`. Values are never put in the message (they may be personal
//! data); constraint names are.

use ordo_domain::{Error, ErrorKind};

fn unavailable(detail: &dyn std::fmt::Display) -> Error {
    tracing::warn!(error = %detail, "database unavailable");
    Error::unavailable("the database is unavailable")
}

fn constraint(code: &str, name: &str) -> Error {
    tracing::info!(
        code,
        constraint = name,
        "database constraint refused a write"
    );
    Error::new(
        ErrorKind::Conflict,
        format!("the change conflicts with {name}"),
    )
}

pub(crate) fn pg_error(error: tokio_postgres::Error) -> Error {
    let Some(db) = error.as_db_error() else {
        // No server answer: the connection is closed, broken, or a value did not convert.
        if error.is_closed() || std::error::Error::source(&error).is_some_and(is_io) {
            return unavailable(&error);
        }
        tracing::error!(error = %error, "database error");
        return Error::internal("database error");
    };
    let code = db.code().code();
    // Class 08 (connection), 57P0x (shutdown), 57014 (cancelled: the statement time-out), 53
    // (resources), 40001/40P01 (serialization, deadlock: the caller may retry).
    if code.starts_with("08")
        || code.starts_with("57P0")
        || code == "57014"
        || code.starts_with("53")
        || code == "40001"
        || code == "40P01"
    {
        return unavailable(&error);
    }
    // Class 23: integrity constraint violations.
    if code.starts_with("23") {
        return constraint(code, db.constraint().unwrap_or("a constraint"));
    }
    tracing::error!(code, message = %db.message(), "database error");
    Error::internal("database error")
}

fn is_io(source: &(dyn std::error::Error + 'static)) -> bool {
    source.is::<std::io::Error>()
}

/// A connection the pool could not hand out. Whatever the server answered while a connection
/// was being opened (refused, not accepting connections, shutting down, too many clients) or
/// if it answered nothing, no statement of the caller ran: the database is unavailable to it
/// (503, retry later), never an internal fault of the request.
pub(crate) fn pool_error(error: deadpool_postgres::PoolError) -> Error {
    unavailable(&error)
}

pub(crate) fn sqlite_error(error: rusqlite::Error) -> Error {
    use rusqlite::ffi::ErrorCode;
    match &error {
        rusqlite::Error::SqliteFailure(failure, message) => match failure.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => unavailable(&error),
            ErrorCode::ConstraintViolation => {
                // "UNIQUE constraint failed: table.column": names only, never values.
                let name = message.as_deref().unwrap_or("a constraint");
                constraint(&failure.extended_code.to_string(), name)
            }
            ErrorCode::CannotOpen | ErrorCode::DiskFull | ErrorCode::SystemIoFailure => {
                unavailable(&error)
            }
            _ => {
                tracing::error!(error = %error, "database error");
                Error::internal("database error")
            }
        },
        _ => {
            tracing::error!(error = %error, "database error");
            Error::internal("database error")
        }
    }
}
