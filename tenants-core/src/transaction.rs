//! The life of a tenant or admin transaction, decided once and free of I/O: what the begin
//! and end batches hold, how each failure is classified, and when a connection is kept,
//! retried, or discarded. [`crate::TenantPool`], [`crate::SyncTenantPool`] and both
//! extension traits only send what this module says and report back what the server
//! answered (the drivers are a few lines each, async or blocking).
//!
//! A transaction is two round trips of ours around the caller's statements:
//!
//! - begin: `BEGIN; SET LOCAL ROLE ..; SET LOCAL <setting> = ..` ([`Scope::begin_sql`]);
//! - commit: `<guard>; COMMIT; <reset>`, one simple-query message. The guard is a
//!   `SELECT` that fails when the transaction is aborted (PostgreSQL refuses every
//!   statement then, so the rest of the message, `COMMIT` included, is skipped; a bare
//!   `COMMIT` would be answered with a `ROLLBACK` tag and no error) and when the scope was
//!   ended by a raw `COMMIT` or `ROLLBACK` (role, tenant setting or transaction start no
//!   longer ours: [`Scope::commit_guard_sql`]). The reset runs after `COMMIT`, in the
//!   same message, in an implicit transaction of its own;
//! - rollback: `ROLLBACK; <reset>`; a transaction dropped without either first asks, in
//!   the same message, whether it wrote (a warning when it did).
//!
//! A pooled transaction whose statements [`crate::footprint`] read as leaving nothing on
//! the session (reads and writes that call no function keeping session state, none failed)
//! ends with `COMMIT` or `ROLLBACK` alone, followed by `DISCARD SEQUENCES` when it wrote:
//! the guard has no failure and no raw `COMMIT` to find, the reset nothing to undo.
//!
//! The reset puts back what a transaction may leave on the session: it closes held
//! cursors, stops listening, drops temporary tables, forgets sequence values, resets
//! every session-level setting (then re-applies the two that diesel and diesel-async set
//! on every new connection: time zone UTC, client encoding UTF8), resets the session
//! authorization and role, and releases session advisory locks. SQL `PREPARE`d statements
//! cannot be dropped without dropping diesel's own statement cache: when one exists the
//! reset fails and the connection is discarded.

use diesel::connection::TransactionManagerStatus;

use crate::config::Config;
use crate::error::Error;
use crate::footprint::Footprint;
use crate::scope::{SCOPE_ENDED_MARK, Scope};

/// The setting the reset names when an SQL prepared statement is left on the session.
const PREPARED_LEFT_MARK: &str = "tenants.prepared_statement_left";

/// The setting a dropped transaction's batch names when the transaction wrote.
const WROTE_MARK: &str = "tenants.dropped_after_write";

/// The message PostgreSQL gives every statement of an aborted transaction (SQLSTATE
/// 25P02, in the server's default English messages). Only refines the error's variant:
/// whatever the server's language, a commit that did not happen is an error.
const ABORTED_MESSAGE: &str = "current transaction is aborted";

/// What every tenant and admin transaction runs after it ended, in the same message as its
/// `COMMIT` or `ROLLBACK` (see the module documentation). A macro, so that `concat!` can
/// put it after the `ROLLBACK` of the static batches.
macro_rules! reset {
    () => {
        "CLOSE ALL; UNLISTEN *; DISCARD TEMP; DISCARD SEQUENCES; RESET ALL; \
         SET SESSION AUTHORIZATION DEFAULT; RESET ROLE; SET TIME ZONE 'UTC'; \
         SET CLIENT_ENCODING TO 'UTF8'; SELECT pg_advisory_unlock_all(), CASE WHEN EXISTS \
         (SELECT FROM pg_catalog.pg_prepared_statement() WHERE from_sql) THEN \
         current_setting('tenants.prepared_statement_left') END"
    };
}

/// The reset, for the commit batch rendered per transaction.
const RESET: &str = reset!();

/// `ROLLBACK` and the reset.
const ROLLBACK: &str = concat!("ROLLBACK; ", reset!());

/// Whether the dropped transaction wrote (an error naming [`WROTE_MARK`] when it did,
/// which skips the rest of the message), then `ROLLBACK` and the reset.
const DROP: &str = concat!(
    "SELECT CASE WHEN pg_current_xact_id_if_assigned() IS NOT NULL THEN \
     current_setting('tenants.dropped_after_write') END; ROLLBACK; ",
    reset!()
);

/// The batches of one transaction, rendered once when it begins. (`Default`, empty, only
/// to be moved out of a dropped connection, whose end sends static batches.)
#[derive(Debug, Default)]
pub(crate) struct Batches {
    begin: String,
    commit: String,
}

/// How a transaction ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// `commit()`, or a closure that returned `Ok`.
    Commit,
    /// `rollback()`, or a closure that returned `Err`.
    Rollback,
    /// Dropped without `commit()` or `rollback()`: rolled back, with a warning when it
    /// wrote.
    Drop,
}

/// Which batch to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Batch {
    /// The commit batch: guard, `COMMIT`, reset; for a transaction that left nothing on
    /// the session, `COMMIT` alone (and `DISCARD SEQUENCES` after writes).
    Commit(Footprint),
    /// `ROLLBACK` and the reset, or as little of it as the footprint needs.
    Rollback(Footprint),
    /// The dropped transaction's: did it write, `ROLLBACK`, reset.
    Drop,
    /// A bare `ROLLBACK`, after a failed begin.
    EndBlock,
}

impl Batches {
    /// The batches of a transaction in `scope` with `config`'s names.
    pub(crate) fn new(config: &Config, scope: &Scope) -> Self {
        Self {
            begin: scope.begin_sql(config),
            commit: format!("{}; COMMIT; {RESET}", scope.commit_guard_sql(config)),
        }
    }

    /// The begin batch, for `AnsiTransactionManager::begin_transaction_sql`.
    pub(crate) fn begin(&self) -> &str {
        &self.begin
    }

    /// The SQL of `batch`.
    pub(crate) fn sql(&self, batch: Batch) -> &str {
        match batch {
            Batch::Commit(Footprint::None) => "COMMIT",
            Batch::Commit(Footprint::Sequences) => "COMMIT; DISCARD SEQUENCES",
            Batch::Commit(Footprint::Unknown) => &self.commit,
            Batch::Rollback(Footprint::None) => "ROLLBACK",
            Batch::Rollback(Footprint::Sequences) => "ROLLBACK; DISCARD SEQUENCES",
            Batch::Rollback(Footprint::Unknown) => ROLLBACK,
            Batch::Drop => DROP,
            Batch::EndBlock => "ROLLBACK",
        }
    }
}

/// The begin: tried on a checked-out connection, ended with a `ROLLBACK` when it fails,
/// retried once on the same connection (a block left open or aborted by raw SQL was the
/// cause) and on another one when the connection is lost, as often as the pool allows.
#[derive(Debug)]
pub(crate) struct Begin {
    rolled_back: bool,
    replacements_left: u32,
}

/// Why a begin stopped trying on a connection.
#[derive(Debug)]
pub(crate) struct BeginStopped {
    /// The begin's error.
    error: diesel::result::Error,
    /// Whether the connection is lost: discard it.
    pub(crate) discard: bool,
    /// Whether to begin again on another connection.
    replace: bool,
}

impl BeginStopped {
    /// For the driver: `Ok(Some(error))` to begin again on another connection (this one
    /// is lost), `Err` to give up.
    pub(crate) fn outcome(self) -> Result<Option<diesel::result::Error>, Error> {
        if self.replace {
            Ok(Some(self.error))
        } else {
            Err(self.error.into())
        }
    }
}

impl Begin {
    /// A begin that may replace a lost connection `replacements` times (0 on a connection
    /// of the caller's own).
    pub(crate) fn new(replacements: u32) -> Self {
        Self {
            rolled_back: false,
            replacements_left: replacements,
        }
    }

    /// The begin batch failed with `error` and the `ROLLBACK` sent after it returned
    /// `rollback`: `None` to send the begin again on the same connection (which answered
    /// the `ROLLBACK`, so it is outside any transaction again), else why it stopped.
    pub(crate) fn failed<T>(
        &mut self,
        error: diesel::result::Error,
        rollback: &diesel::QueryResult<T>,
    ) -> Option<BeginStopped> {
        let stopped = |discard, replace| {
            Some(BeginStopped {
                error,
                discard,
                replace,
            })
        };
        if rollback.is_ok() {
            if self.rolled_back {
                return stopped(false, false);
            }
            self.rolled_back = true;
            return None;
        }
        if self.replacements_left == 0 {
            return stopped(true, false);
        }
        self.replacements_left -= 1;
        self.rolled_back = false;
        stopped(true, true)
    }
}

/// The clean-up after a failed first batch: whatever the transaction did, it is reset.
const FULL_ROLLBACK: Batch = Batch::Rollback(Footprint::Unknown);

/// How a transaction's end went, and what becomes of its connection.
#[derive(Debug)]
pub(crate) struct Ended {
    /// `Ok` when the transaction ended as asked (for [`Ending::Commit`]: it committed).
    pub(crate) result: Result<(), Error>,
    /// Whether it committed.
    pub(crate) committed: bool,
    /// Whether the connection must be closed instead of going back to the pool.
    pub(crate) discard: bool,
    /// A dropped transaction had written: its writes are rolled back.
    pub(crate) dropped_after_write: bool,
    /// The connection was discarded for session state its transaction left (an SQL
    /// prepared statement), after a commit or rollback that itself succeeded.
    pub(crate) state_left: Option<diesel::result::Error>,
}

impl Ended {
    /// Tells the connection's transaction manager the outcome: outside any transaction
    /// again, or broken, so that the pool closes the connection (bb8 and r2d2 ask it when
    /// the connection comes back) and a connection of the caller's own refuses further
    /// transactions.
    pub(crate) fn settle(&self, status: &mut TransactionManagerStatus) {
        if self.discard {
            status.set_in_error();
        } else {
            *status = TransactionManagerStatus::Valid(Default::default());
        }
    }
}

/// The end of a transaction: which batch to send first, and what its answer means.
#[derive(Debug)]
pub(crate) struct End {
    ending: Ending,
    /// The error to report once the clean-up rollback is done.
    pending: Option<Pending>,
    dropped_after_write: bool,
}

/// Why a first batch failed, remembered while the clean-up `ROLLBACK` runs.
#[derive(Debug)]
enum Pending {
    /// The scope was ended by raw SQL: error, and the connection is discarded.
    ScopeEnded,
    /// The commit did not happen: this error.
    NotCommitted(Error),
    /// A dropped transaction is being rolled back after its probe failed.
    Dropped,
}

/// What a driver does next about an end.
#[derive(Debug)]
pub(crate) enum EndStep {
    /// Send this batch and report its answer to [`End::answered`].
    Send(Batch),
    /// Done: apply it (manager status, pool, trace).
    Done(Ended),
}

impl End {
    /// Ends a transaction as `ending`, on a connection whose transaction manager says
    /// `depth` (diesel's sync connection notices a raw `COMMIT` or `ROLLBACK`: no
    /// transaction any more) and whose statements left `footprint` (always
    /// [`Footprint::Unknown`] on a connection of the caller's own, which no watch reads).
    pub(crate) fn start(
        ending: Ending,
        depth: diesel::QueryResult<Option<std::num::NonZeroU32>>,
        footprint: Footprint,
    ) -> (Self, EndStep) {
        let mut end = Self {
            ending,
            pending: None,
            dropped_after_write: false,
        };
        let step = match depth {
            Err(broken) => EndStep::Done(Ended {
                result: Err(broken.into()),
                committed: false,
                discard: true,
                dropped_after_write: false,
                state_left: None,
            }),
            Ok(None) => {
                end.pending = Some(Pending::ScopeEnded);
                EndStep::Send(FULL_ROLLBACK)
            }
            Ok(Some(_)) => EndStep::Send(match ending {
                Ending::Commit => Batch::Commit(footprint),
                Ending::Rollback => Batch::Rollback(footprint),
                Ending::Drop => Batch::Drop,
            }),
        };
        (end, step)
    }

    /// The batch last sent answered `answer`.
    pub(crate) fn answered(&mut self, answer: diesel::QueryResult<()>) -> EndStep {
        match self.pending.take() {
            None => self.first_answer(answer),
            Some(pending) => EndStep::Done(self.after_cleanup(pending, answer)),
        }
    }

    fn first_answer(&mut self, answer: diesel::QueryResult<()>) -> EndStep {
        let committing = self.ending == Ending::Commit;
        let error = match answer {
            Ok(()) => return EndStep::Done(self.done(Ok(()), committing, false, None)),
            Err(error) => error,
        };
        match classify(&error) {
            // The transaction ended as asked; the reset found state it cannot undo.
            Failure::PreparedLeft => {
                EndStep::Done(self.done(Ok(()), committing, true, Some(error)))
            }
            Failure::ScopeEnded => {
                self.pending = Some(Pending::ScopeEnded);
                EndStep::Send(FULL_ROLLBACK)
            }
            Failure::Wrote => {
                self.dropped_after_write = true;
                self.pending = Some(Pending::Dropped);
                EndStep::Send(FULL_ROLLBACK)
            }
            Failure::Aborted if self.ending == Ending::Commit => {
                self.pending = Some(Pending::NotCommitted(Error::RolledBack));
                EndStep::Send(FULL_ROLLBACK)
            }
            Failure::Aborted if self.ending == Ending::Drop => {
                self.pending = Some(Pending::Dropped);
                EndStep::Send(FULL_ROLLBACK)
            }
            Failure::Lost | Failure::Aborted => {
                EndStep::Done(self.done(Err(error.into()), false, true, None))
            }
            // `COMMIT` itself refused (a deferred constraint, a serialization failure):
            // the server ended the transaction; the reset did not run.
            Failure::Other if self.ending == Ending::Commit => {
                self.pending = Some(Pending::NotCommitted(error.into()));
                EndStep::Send(FULL_ROLLBACK)
            }
            Failure::Other => EndStep::Done(self.done(Err(error.into()), false, true, None)),
        }
    }

    fn after_cleanup(&mut self, pending: Pending, answer: diesel::QueryResult<()>) -> Ended {
        let (result, discard) = match pending {
            Pending::ScopeEnded => (Err(Error::ScopeEnded), true),
            Pending::NotCommitted(error) => (Err(error), false),
            Pending::Dropped => (Ok(()), false),
        };
        match answer {
            Ok(()) => self.done(result, false, discard, None),
            Err(error) => match classify(&error) {
                Failure::PreparedLeft => self.done(result, false, true, Some(error)),
                _ => self.done(result.and(Err(error.into())), false, true, None),
            },
        }
    }

    fn done(
        &self,
        result: Result<(), Error>,
        committed: bool,
        discard: bool,
        state_left: Option<diesel::result::Error>,
    ) -> Ended {
        Ended {
            result,
            committed,
            discard,
            dropped_after_write: self.dropped_after_write,
            state_left,
        }
    }
}

/// What a failed batch says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The commit guard: not our scope's transaction any more.
    ScopeEnded,
    /// The reset: an SQL prepared statement is left.
    PreparedLeft,
    /// The dropped transaction's probe: it wrote.
    Wrote,
    /// The transaction was aborted by an earlier failed statement.
    Aborted,
    /// The connection did not answer.
    Lost,
    /// Any other error of the server's.
    Other,
}

fn classify(error: &diesel::result::Error) -> Failure {
    use diesel::result::{DatabaseErrorKind, Error as DieselError};
    match error {
        DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _) => Failure::Lost,
        DieselError::DatabaseError(_, info) => {
            let message = info.message();
            let names = |mark: &str| message.contains(&format!("\"{mark}\""));
            if names(SCOPE_ENDED_MARK) {
                Failure::ScopeEnded
            } else if names(PREPARED_LEFT_MARK) {
                Failure::PreparedLeft
            } else if names(WROTE_MARK) {
                Failure::Wrote
            } else if message.starts_with(ABORTED_MESSAGE) {
                Failure::Aborted
            } else {
                Failure::Other
            }
        }
        _ => Failure::Lost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::result::{DatabaseErrorKind, Error as DieselError};

    const FULL_COMMIT: Batch = Batch::Commit(Footprint::Unknown);

    fn server_error(message: &str) -> DieselError {
        DieselError::DatabaseError(DatabaseErrorKind::Unknown, Box::new(message.to_string()))
    }

    fn one() -> diesel::QueryResult<Option<std::num::NonZeroU32>> {
        Ok(std::num::NonZeroU32::new(1))
    }

    #[test]
    fn the_marks_in_the_batches_are_the_ones_classified() {
        let config = Config::default();
        let batches = Batches::new(&config, &Scope::Admin);
        assert!(batches.sql(FULL_COMMIT).contains(SCOPE_ENDED_MARK));
        for batch in [FULL_COMMIT, FULL_ROLLBACK, Batch::Drop] {
            assert!(batches.sql(batch).contains(PREPARED_LEFT_MARK), "{batch:?}");
            assert!(batches.sql(batch).ends_with(RESET), "{batch:?}");
        }
        assert!(batches.sql(Batch::Drop).contains(WROTE_MARK));
        assert!(batches.sql(FULL_COMMIT).contains("; COMMIT; "));
        assert!(batches.sql(FULL_ROLLBACK).starts_with("ROLLBACK; "));
    }

    #[test]
    fn a_transaction_that_left_nothing_ends_with_commit_or_rollback_alone() {
        let batches = Batches::new(&Config::default(), &Scope::Admin);
        for (footprint, commit, rollback) in [
            (Footprint::None, "COMMIT", "ROLLBACK"),
            (
                Footprint::Sequences,
                "COMMIT; DISCARD SEQUENCES",
                "ROLLBACK; DISCARD SEQUENCES",
            ),
        ] {
            assert_eq!(batches.sql(Batch::Commit(footprint)), commit);
            assert_eq!(batches.sql(Batch::Rollback(footprint)), rollback);
            let (sent, ended) = finish_after(footprint, Ending::Commit, vec![Ok(())]);
            assert_eq!(sent, [Batch::Commit(footprint)]);
            assert!(ended.result.is_ok() && ended.committed && !ended.discard);
            // A dropped transaction always asks whether it wrote, and is reset.
            let (sent, _) = finish_after(footprint, Ending::Drop, vec![Ok(())]);
            assert_eq!(sent, [Batch::Drop]);
        }
        // `COMMIT` refused (a deferred constraint): the clean-up is the full rollback.
        let refused = Err(DieselError::DatabaseError(
            DatabaseErrorKind::ForeignKeyViolation,
            Box::new("deferred".to_string()),
        ));
        let (sent, ended) = finish_after(Footprint::None, Ending::Commit, vec![refused, Ok(())]);
        assert_eq!(sent, [Batch::Commit(Footprint::None), FULL_ROLLBACK]);
        assert!(ended.result.is_err() && !ended.committed);
    }

    #[test]
    fn a_begin_is_retried_once_after_a_rollback_and_replaced_while_connections_last() {
        let ok: diesel::QueryResult<()> = Ok(());
        let lost: diesel::QueryResult<()> = Err(DieselError::BrokenTransactionManager);
        let failed = || DieselError::NotInTransaction;
        let stop = |stopped: Option<BeginStopped>| {
            let stopped = stopped.expect("stopped");
            (stopped.discard, stopped.outcome().map(|e| e.is_some()).ok())
        };
        let mut begin = Begin::new(1);
        assert!(begin.failed(failed(), &ok).is_none(), "retried");
        assert_eq!(stop(begin.failed(failed(), &ok)), (false, None), "given up");
        let mut begin = Begin::new(1);
        assert_eq!(
            stop(begin.failed(failed(), &lost)),
            (true, Some(true)),
            "replaced"
        );
        assert!(begin.failed(failed(), &ok).is_none(), "retried");
        assert_eq!(stop(begin.failed(failed(), &lost)), (true, None), "no more");
    }

    fn finish(ending: Ending, answers: Vec<diesel::QueryResult<()>>) -> (Vec<Batch>, Ended) {
        finish_after(Footprint::Unknown, ending, answers)
    }

    fn finish_after(
        footprint: Footprint,
        ending: Ending,
        answers: Vec<diesel::QueryResult<()>>,
    ) -> (Vec<Batch>, Ended) {
        let (mut end, mut step) = End::start(ending, one(), footprint);
        let mut sent = Vec::new();
        let mut answers = answers.into_iter();
        loop {
            match step {
                EndStep::Send(batch) => {
                    sent.push(batch);
                    step = end.answered(answers.next().expect("an answer per batch"));
                }
                EndStep::Done(ended) => return (sent, ended),
            }
        }
    }

    #[test]
    fn a_commit_of_an_aborted_transaction_is_rolled_back_and_an_error() {
        let (sent, ended) = finish(
            Ending::Commit,
            vec![
                Err(server_error(
                    "current transaction is aborted, commands ignored until end of transaction block",
                )),
                Ok(()),
            ],
        );
        assert_eq!(sent, [FULL_COMMIT, FULL_ROLLBACK]);
        assert!(matches!(ended.result, Err(Error::RolledBack)), "{ended:?}");
        assert!(!ended.committed && !ended.discard);
    }

    #[test]
    fn a_scope_ended_by_raw_sql_is_an_error_and_discarded() {
        let guard = format!("unrecognized configuration parameter \"{SCOPE_ENDED_MARK}\"");
        let (sent, ended) = finish(Ending::Commit, vec![Err(server_error(&guard)), Ok(())]);
        assert_eq!(sent, [FULL_COMMIT, FULL_ROLLBACK]);
        assert!(matches!(ended.result, Err(Error::ScopeEnded)), "{ended:?}");
        assert!(ended.discard);
        // Noticed by diesel's sync connection before anything is sent.
        let (mut end, step) = End::start(Ending::Commit, Ok(None), Footprint::None);
        assert!(matches!(step, EndStep::Send(FULL_ROLLBACK)));
        let EndStep::Done(ended) = end.answered(Ok(())) else {
            panic!("one batch")
        };
        assert!(matches!(ended.result, Err(Error::ScopeEnded)) && ended.discard);
    }

    #[test]
    fn a_prepared_statement_left_discards_a_committed_connection() {
        let left = format!("unrecognized configuration parameter \"{PREPARED_LEFT_MARK}\"");
        let (sent, ended) = finish(Ending::Commit, vec![Err(server_error(&left))]);
        assert_eq!(sent, [FULL_COMMIT]);
        assert!(ended.result.is_ok() && ended.committed && ended.discard);
        assert!(ended.state_left.is_some());
    }

    #[test]
    fn a_refused_commit_is_its_error_and_the_connection_is_kept() {
        let (sent, ended) = finish(
            Ending::Commit,
            vec![
                Err(DieselError::DatabaseError(
                    DatabaseErrorKind::UniqueViolation,
                    Box::new("duplicate key".to_string()),
                )),
                Ok(()),
            ],
        );
        assert_eq!(sent, [FULL_COMMIT, FULL_ROLLBACK]);
        assert!(matches!(ended.result, Err(Error::Database(_))), "{ended:?}");
        assert!(!ended.discard);
    }

    #[test]
    fn a_dropped_transaction_that_wrote_is_reported_and_rolled_back() {
        let wrote = format!("unrecognized configuration parameter \"{WROTE_MARK}\"");
        let (sent, ended) = finish(Ending::Drop, vec![Err(server_error(&wrote)), Ok(())]);
        assert_eq!(sent, [Batch::Drop, FULL_ROLLBACK]);
        assert!(ended.dropped_after_write && ended.result.is_ok() && !ended.discard);
        let (sent, ended) = finish(Ending::Drop, vec![Ok(())]);
        assert_eq!(sent, [Batch::Drop]);
        assert!(!ended.dropped_after_write && !ended.discard);
    }

    #[test]
    fn a_lost_connection_is_discarded() {
        let lost = || {
            Err(DieselError::DatabaseError(
                DatabaseErrorKind::ClosedConnection,
                Box::new("closed".to_string()),
            ))
        };
        for ending in [Ending::Commit, Ending::Rollback, Ending::Drop] {
            let (_, ended) = finish(ending, vec![lost()]);
            assert!(ended.result.is_err() && ended.discard, "{ending:?}");
        }
    }
}
