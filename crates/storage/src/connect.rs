//! Opening connections: a deadpool of tokio-postgres clients, or SQLite's writer and readers.

use crate::SqliteConnections;
use crate::error::sqlite_error;
use ordo_domain::{Error, Result};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a caller waits for a pooled connection (or for a new one to open) before the
/// database counts as unavailable: well inside the 2 s in which a call that needs a database
/// that is down must answer `503` (the contract), and a bound on the queue for connections
/// under load.
const ACQUIRE_TIMEOUT: Duration = Duration::from_millis(1500);

/// How long PostgreSQL lets one statement of ordo's run, lock waits included, before it cancels
/// it (`57014`, answered as `unavailable`): a statement stuck behind a lock frees its
/// connection instead of holding it, and its caller hears within the contract's 2 s.
pub(crate) const SERVER_STATEMENT_TIMEOUT: Duration = Duration::from_millis(1500);

pub(crate) fn postgres(url: &str, max_connections: u32) -> Result<deadpool_postgres::Pool> {
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|_| Error::invalid_field("database_url", "is not a valid PostgreSQL URL"))?;
    let mut config = config;
    config.connect_timeout(ACQUIRE_TIMEOUT);
    // No parallel query: ordo's statements are short, and a parallel plan starts worker
    // processes for each execution (a count over a table whose statistics are not yet
    // gathered took 13 ms of three processes instead of a fraction of one).
    let options = format!(
        "{} -c statement_timeout={} -c max_parallel_workers_per_gather=0",
        config.get_options().unwrap_or_default(),
        SERVER_STATEMENT_TIMEOUT.as_millis()
    );
    config.options(options.trim());
    let manager = deadpool_postgres::Manager::from_config(
        config,
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig {
            // A connection that broke is noticed by its next statement (`unavailable`) and
            // dropped by the pool; no round trip is spent checking each checkout.
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    let timeouts = deadpool_postgres::Timeouts {
        wait: Some(ACQUIRE_TIMEOUT),
        create: Some(ACQUIRE_TIMEOUT),
        recycle: Some(ACQUIRE_TIMEOUT),
    };
    deadpool_postgres::Pool::builder(manager)
        .max_size(max_connections.max(1) as usize)
        .timeouts(timeouts)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| Error::internal(format!("cannot build the PostgreSQL pool: {e}")))
}

/// How long SQLite's writer waits for a lock another process holds (an `ordo migrate`, a backup
/// tool, an operator's shell) before the write answers `unavailable`. ordo's own readers never
/// block its writer (WAL), so only another process can make it wait; the wait blocks the
/// thread that runs the statement (a deadline cannot cut it short), so it must stay short:
/// an order batch's deadline plus this wait stays inside the contract's 2 s.
const SQLITE_WRITER_BUSY_TIMEOUT: Duration = Duration::from_millis(400);

/// The same for a reader. In WAL mode only an exclusive lock of another process blocks a
/// reader, and a database held that way is down as far as ordo can tell: answer at once.
const SQLITE_READER_BUSY_TIMEOUT: Duration = Duration::from_millis(250);

pub(crate) fn sqlite(url: &str, max_connections: u32) -> Result<SqliteConnections> {
    let path = sqlite_path_creating_folder(url)?;
    let open_with = |busy_timeout: Duration| -> Result<rusqlite::Connection> {
        let connection = rusqlite::Connection::open(&path).map_err(|e| {
            tracing::warn!(error = %e, "cannot open the SQLite database");
            Error::unavailable(format!("cannot open the SQLite database {path}: {e}"))
        })?;
        // WAL lets readers run beside the writer; NORMAL sync keeps commits durable across a
        // process crash (not power loss). No connection checkpoints by itself: a checkpoint
        // copies the WAL into the database file and syncs it, milliseconds that must not be
        // spent inside a commit while every other write waits; the checkpointer thread does it.
        // `secure_delete` zeroes what a delete or an update frees, so an erased value leaves no
        // copy in free space.
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                 PRAGMA foreign_keys = ON; \
                 PRAGMA wal_autocheckpoint = 0; PRAGMA secure_delete = ON;",
            )
            .map_err(sqlite_error)?;
        connection
            .busy_timeout(busy_timeout)
            .map_err(sqlite_error)?;
        connection.set_prepared_statement_cache_capacity(128);
        Ok(connection)
    };
    let open = || open_with(SQLITE_READER_BUSY_TIMEOUT);
    let writer = open_with(SQLITE_WRITER_BUSY_TIMEOUT)?;
    // The file just opened: from now on, the path must keep naming it.
    let file = Arc::new(FileWatch::new(&path));
    // Readers are held for one statement and never across an `.await`, so one per thread
    // that may run a statement at once is enough.
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let reader_count = (max_connections as usize).clamp(1, threads * 2);
    let readers = (0..reader_count)
        .map(|_| open().map(Mutex::new))
        .collect::<Result<Vec<_>>>()?;
    Ok(SqliteConnections {
        group: Arc::new(crate::group_commit::GroupCommit::new()),
        writer: Arc::new(Mutex::new(writer)),
        readers,
        next_reader: AtomicUsize::new(0),
        _checkpointer: Checkpointer::start(open()?, Arc::clone(&file)),
        file,
    })
}

/// Whether the database file ordo has open is still the file at its path.
///
/// A SQLite file that is deleted, renamed or replaced while ordo has it open does not fail a
/// single statement: the open connections go on reading and writing the old file, and
/// whatever is written from then on is gone at the next start. So the checkpointer looks at
/// the path on every round; while it no longer names the open file, every use of the
/// database answers `unavailable` (and readiness fails) instead of writing into a ghost.
/// When the file is back under its path, service resumes by itself.
pub(crate) struct FileWatch {
    path: String,
    opened: Option<FileIdentity>,
    gone: std::sync::atomic::AtomicBool,
}

/// Device and inode: what stays the same for a file whatever its name.
type FileIdentity = (u64, u64);

impl FileWatch {
    fn new(path: &str) -> FileWatch {
        FileWatch {
            path: path.to_owned(),
            opened: identity(path),
            gone: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Looks at the path again; logs the moment the file goes and the moment it is back.
    fn check(&self) {
        let gone = self.opened.is_some() && identity(&self.path) != self.opened;
        let was_gone = self.gone.swap(gone, std::sync::atomic::Ordering::Relaxed);
        match (was_gone, gone) {
            (false, true) => tracing::error!(path = %self.path,
                "the SQLite database file is no longer at its path: every call answers \
                 unavailable until it is back"),
            (true, false) => tracing::warn!(path = %self.path, "the SQLite database file is back"),
            _ => {}
        }
    }

    /// `unavailable` while the file is not at its path.
    pub(crate) fn ensure_present(&self) -> Result<()> {
        if self.gone.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::unavailable(format!(
                "the SQLite database file {} is not at its path",
                self.path
            )));
        }
        Ok(())
    }
}

#[cfg(unix)]
fn identity(path: &str) -> Option<FileIdentity> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn identity(_: &str) -> Option<FileIdentity> {
    None
}

/// How often the checkpointer copies the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// A thread of its own that checkpoints the WAL (`PASSIVE`: never waits for the writer or the
/// readers, never makes them wait), so commits stay appends to the WAL and the WAL stays
/// small, and watches the file's path ([`FileWatch`]). Stops when dropped (with the
/// connections).
pub(crate) struct Checkpointer {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(connection: rusqlite::Connection, file: Arc<FileWatch>) -> Checkpointer {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("ordo-sqlite-checkpoint".to_owned())
            .spawn(move || {
                while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::park_timeout(CHECKPOINT_EVERY);
                    file.check();
                    if file.ensure_present().is_err() {
                        continue;
                    }
                    if let Err(error) = connection.execute_batch("PRAGMA wal_checkpoint(PASSIVE)") {
                        tracing::warn!(%error, "SQLite checkpoint failed");
                    }
                }
            })
            .ok();
        Checkpointer { stop, thread }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// `sqlite://PATH[?query]` → `PATH`, after creating its folder. The query is ignored: ordo
/// always opens the file read-write, creating it.
fn sqlite_path_creating_folder(url: &str) -> Result<String> {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = rest.split_once('?').map_or(rest, |(path, _)| path);
    if path.is_empty() || path == ":memory:" {
        return Err(Error::invalid_field(
            "database_url",
            "ordo needs a SQLite file, not an in-memory database",
        ));
    }
    if let Some(parent) = std::path::Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|e| {
            Error::unavailable(format!(
                "cannot create the folder of the SQLite database {}: {e}",
                parent.display()
            ))
        })?;
    }
    Ok(path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_a_file_whose_folder_exists() {
        let dir = std::env::temp_dir().join(format!("ordo-url-{}", std::process::id()));
        let url = format!("sqlite://{}/a.db?mode=rwc", dir.display());
        let path = sqlite_path_creating_folder(&url).unwrap();
        assert!(path.ends_with("/a.db"));
        assert!(dir.exists());
        assert!(sqlite_path_creating_folder("sqlite::memory:").is_err());
        assert!(sqlite_path_creating_folder("sqlite://").is_err());
    }
}
