//! Group commit on SQLite: write transactions that queue for the one writer share one database
//! transaction, each inside a savepoint of its own, and one `COMMIT` makes them all durable.
//!
//! SQLite writes every page a transaction changed to the WAL at its commit; the saga's small
//! transactions change the same pages (outbox, processed events, order indexes) over and over,
//! so committing them together writes each page once per group instead of once per step.
//!
//! The writer's turn (an async mutex) still serialises the steps. A step that finishes
//! releases its savepoint; if nobody waits for the turn (or the group is full) it commits the
//! group at once, otherwise it hands the turn on and waits for the commit of its group, which
//! the last step of the group makes. A step whose wait outlasts [`FLUSH_AFTER`] (the step
//! behind it was cancelled) takes the turn and commits the group itself. A step answers only
//! after its group committed: durability is what it was with a transaction per step. A step
//! that fails rolls back to its savepoint: the others of its group are not touched.

use crate::error::sqlite_error;
use crate::sql::lock_any;
use ordo_domain::{Error, Result};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedMutexGuard, watch};

/// The most steps one group commits.
const MAX_GROUP: usize = 64;

/// How long a finished step waits for the next one to commit its group before doing it itself.
const FLUSH_AFTER: Duration = Duration::from_millis(2);

pub(crate) struct GroupCommit {
    write_lock: Arc<tokio::sync::Mutex<()>>,
    state: StdMutex<GroupState>,
    /// Tasks waiting for the writer's turn.
    waiting: AtomicUsize,
    committed: watch::Sender<Committed>,
}

#[derive(Default)]
struct GroupState {
    open: bool,
    epoch: u64,
    members: usize,
}

/// The last group that ended, and the recent groups that failed.
#[derive(Default)]
struct Committed {
    epoch: u64,
    failed: VecDeque<u64>,
}

struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl GroupCommit {
    pub(crate) fn new() -> GroupCommit {
        GroupCommit {
            write_lock: Arc::new(tokio::sync::Mutex::new(())),
            state: StdMutex::new(GroupState::default()),
            waiting: AtomicUsize::new(0),
            committed: watch::Sender::new(Committed::default()),
        }
    }

    /// Waits for the writer's turn, counted as waiting meanwhile.
    pub(crate) async fn turn(&self) -> OwnedMutexGuard<()> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        self.write_lock.clone().lock_owned().await
    }

    /// Joins the open group, or opens one, and starts the step's savepoint; returns the
    /// group's epoch. The caller holds the turn.
    pub(crate) fn join(&self, connection: &rusqlite::Connection) -> Result<u64> {
        let mut state = lock_any(&self.state);
        if state.open && connection.is_autocommit() {
            // SQLite rolled the group back by itself (an I/O error): its steps failed.
            state.open = false;
            self.publish(state.epoch, false);
        }
        if !state.open {
            connection
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(sqlite_error)?;
            state.open = true;
            state.epoch += 1;
            state.members = 0;
        }
        state.members += 1;
        connection
            .execute_batch("SAVEPOINT step")
            .map_err(sqlite_error)?;
        Ok(state.epoch)
    }

    /// Ends the step successfully (its savepoint released into the group).
    pub(crate) fn release(&self, connection: &rusqlite::Connection) -> Result<()> {
        connection
            .execute_batch("RELEASE step")
            .map_err(sqlite_error)
    }

    /// Undoes the step; the rest of its group stays.
    pub(crate) fn roll_back(&self, connection: &rusqlite::Connection) {
        if !connection.is_autocommit() {
            let _ = connection.execute_batch("ROLLBACK TO step; RELEASE step");
        }
    }

    /// Whether the holder of the turn should commit the group now rather than hand it on.
    pub(crate) fn should_commit(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) == 0 || lock_any(&self.state).members >= MAX_GROUP
    }

    /// Commits the open group, if any. The caller holds the turn.
    pub(crate) fn commit(&self, connection: &rusqlite::Connection) -> Result<()> {
        let mut state = lock_any(&self.state);
        if !state.open {
            return Ok(());
        }
        state.open = false;
        let result = if connection.is_autocommit() {
            Err(Error::unavailable(
                "the database rolled the transaction back",
            ))
        } else {
            connection.execute_batch("COMMIT").map_err(sqlite_error)
        };
        if result.is_err() && !connection.is_autocommit() {
            let _ = connection.execute_batch("ROLLBACK");
        }
        self.publish(state.epoch, result.is_ok());
        result
    }

    /// Waits until group `epoch` ended; commits it when nobody else does.
    pub(crate) async fn committed(
        &self,
        epoch: u64,
        writer: &StdMutex<rusqlite::Connection>,
    ) -> Result<()> {
        let mut changes = self.committed.subscribe();
        loop {
            if let Some(outcome) = self.outcome(epoch) {
                return outcome;
            }
            if tokio::time::timeout(FLUSH_AFTER, changes.changed())
                .await
                .is_err()
            {
                let _turn = self.turn().await;
                if self.outcome(epoch).is_none() && lock_any(&self.state).epoch == epoch {
                    let _ = self.commit(&lock_any(writer));
                }
            }
        }
    }

    fn outcome(&self, epoch: u64) -> Option<Result<()>> {
        let committed = self.committed.borrow();
        (committed.epoch >= epoch).then(|| {
            if committed.failed.contains(&epoch) {
                Err(Error::unavailable(
                    "the database could not commit the write",
                ))
            } else {
                Ok(())
            }
        })
    }

    fn publish(&self, epoch: u64, succeeded: bool) {
        self.committed.send_modify(|committed| {
            committed.epoch = committed.epoch.max(epoch);
            if !succeeded {
                committed.failed.push_back(epoch);
                if committed.failed.len() > 16 {
                    committed.failed.pop_front();
                }
            }
        });
    }
}
