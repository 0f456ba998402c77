//! The one mapping from database failures to ordo's error model.

use ordo_domain::{Error, ErrorKind};

/// Converts a sqlx error: an unreachable or overloaded database is `unavailable` (retry later,
/// 503); a constraint the caller ran into is `conflict`; anything else is `internal`. Values are
/// never put in the message (they may be personal data); constraint names are.
pub(crate) fn db_error(error: sqlx::Error) -> Error {
    match &error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => {
            tracing::warn!(error = %error, "database unavailable");
            Error::unavailable("the database is unavailable")
        }
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default().into_owned();
            // PostgreSQL class 08 (connection), 57P0x (shutdown) and 53 (resources); SQLite
            // BUSY (5) and LOCKED (6).
            let transient = code.starts_with("08")
                || code.starts_with("57P0")
                || code.starts_with("53")
                || code == "5"
                || code == "6";
            if transient {
                tracing::warn!(code = %code, "database unavailable");
                return Error::unavailable("the database is unavailable");
            }
            if db.is_unique_violation() || db.is_check_violation() || db.is_foreign_key_violation()
            {
                let constraint = db.constraint().unwrap_or("a constraint");
                tracing::info!(code = %code, constraint, "database constraint refused a write");
                return Error::new(
                    ErrorKind::Conflict,
                    format!("the change conflicts with {constraint}"),
                );
            }
            tracing::error!(code = %code, message = %db.message(), "database error");
            Error::internal("database error")
        }
        _ => {
            tracing::error!(error = %error, "database error");
            Error::internal("database error")
        }
    }
}
