//! What the runtime tells `tracing`: one span per tenant or admin transaction, and the
//! events of pooled connections it discards. The pools and the extension traits open,
//! record and end their spans only here, so a transaction carries the same fields however
//! it was begun.
//!
//! The span is `transaction` (target `tenants::transaction`, level INFO). It lives from the
//! checkout (from the begin, on a connection of your own) to the commit, the rollback or
//! the drop, and its fields are:
//!
//! - `scope`: `tenant` or `admin`;
//! - `tenant`: the tenant id; absent for an admin transaction, and when
//!   [`Config::with_trace_tenant`] is off;
//! - `checkout_wait_ms`: how long the pool took to hand out the connection (pool
//!   transactions only);
//! - `outcome`: `commit`, `rollback`, or `discarded`: dropped without commit or rollback,
//!   closed because the connection broke, or never begun;
//! - `duration_ms`: from the start of the checkout (or the begin) to the end;
//! - `error`: why the checkout, begin, commit or rollback failed, when one did.
//!
//! Without a subscriber interested in the span, creating it is a check of a cached flag:
//! no clock is read and no field is formatted.

use std::fmt::Display;
use std::time::{Duration, Instant};

use tracing::Span;
use tracing::field::{Empty, display};

use crate::config::Config;
use crate::scope::Scope;
use crate::transaction::Ended;

/// The target of the transaction span and of the events inside it.
pub(crate) const TRANSACTION_TARGET: &str = "tenants::transaction";

/// The target of a plain checkout's events.
#[cfg(any(feature = "async", feature = "sync"))]
pub(crate) const CHECKOUT_TARGET: &str = "tenants::checkout";

/// How a transaction ended: its span's `outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// `COMMIT` succeeded.
    Commit,
    /// Rolled back, and the connection is back outside any transaction.
    Rollback,
    /// Dropped without commit or rollback, closed because the connection broke, or never
    /// begun.
    Discarded,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Commit => "commit",
            Outcome::Rollback => "rollback",
            Outcome::Discarded => "discarded",
        }
    }
}

/// The span of one tenant or admin transaction; see the module documentation. Dropped
/// before [`TransactionSpan::ended`], it ends as `discarded`.
pub(crate) struct TransactionSpan {
    span: Span,
    /// When the span began; `None` when no subscriber records it (no clock read).
    started: Option<Instant>,
    ended: bool,
}

impl TransactionSpan {
    /// Opens the span of a transaction in `scope`, as a child of the current span.
    pub(crate) fn begin(config: &Config, scope: &Scope) -> Self {
        let (kind, tenant) = match scope {
            Scope::Tenant(tenant) => ("tenant", config.trace_tenant().then(|| tenant.as_str())),
            Scope::Admin => ("admin", None),
        };
        let span = tracing::info_span!(
            target: TRANSACTION_TARGET,
            "transaction",
            scope = kind,
            tenant,
            checkout_wait_ms = Empty,
            outcome = Empty,
            duration_ms = Empty,
            error = Empty,
        );
        let started = (!span.is_disabled()).then(Instant::now);
        Self {
            span,
            started,
            ended: false,
        }
    }

    /// The span, to enter or to instrument a future with.
    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// Records the time since the span began as the checkout's wait.
    #[cfg(any(feature = "async", feature = "sync"))]
    pub(crate) fn checked_out(&self) {
        if let Some(started) = self.started {
            self.span
                .record("checkout_wait_ms", millis(started.elapsed()));
        }
    }

    /// Records why the checkout or the begin failed.
    pub(crate) fn failed(&self, error: &dyn Display) {
        self.span.record("error", display(error));
    }

    /// Ends the span as `ended` says: committed, rolled back (the connection kept), or
    /// discarded; with the error, when there is one. Warns when the connection is
    /// discarded for session state the transaction left.
    pub(crate) fn ended(&mut self, ended: &Ended) {
        if let Err(error) = &ended.result {
            self.failed(error);
        }
        if let Some(error) = &ended.state_left {
            let _inside = self.span.enter();
            tracing::warn!(
                target: TRANSACTION_TARGET,
                %error,
                "discarding the connection: the transaction left an SQL prepared statement (PREPARE) on the session"
            );
        }
        let outcome = if ended.committed {
            Outcome::Commit
        } else if ended.discard {
            Outcome::Discarded
        } else {
            Outcome::Rollback
        };
        self.end(outcome);
    }

    /// Ends the span as `discarded`: the transaction was dropped without commit or
    /// rollback. The span stays open as long as a clone of it lives (the rollback that
    /// follows a drop runs inside it).
    #[cfg(any(feature = "async", feature = "sync"))]
    pub(crate) fn discarded(&mut self) {
        self.end(Outcome::Discarded);
    }

    fn end(&mut self, outcome: Outcome) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.span.record("outcome", outcome.as_str());
        if let Some(started) = self.started {
            self.span.record("duration_ms", millis(started.elapsed()));
        }
    }
}

/// `elapsed` in milliseconds, to the microsecond (so that logs show `0.192`, not
/// `0.19240500000000002`).
fn millis(elapsed: Duration) -> f64 {
    elapsed.as_micros() as f64 / 1e3
}

impl Drop for TransactionSpan {
    fn drop(&mut self) {
        self.end(Outcome::Discarded);
    }
}

/// A plain checkout found a connection that earlier code left with a role switched, a
/// tenant set or a transaction open, and the pool closes it. Inside the current span, such
/// as the request's.
#[cfg(any(feature = "async", feature = "sync"))]
pub(crate) fn dirty_connection_discarded(error: &dyn Display) {
    tracing::warn!(
        target: CHECKOUT_TARGET,
        outcome = Outcome::Discarded.as_str(),
        %error,
        "discarding a pooled connection that is not clean"
    );
}

/// A connection did not answer the `ROLLBACK` after a failed begin: it is closed and the
/// begin retried on another. Inside the transaction's span.
#[cfg(any(feature = "async", feature = "sync"))]
pub(crate) fn lost_connection_discarded(error: &dyn Display) {
    tracing::warn!(
        target: TRANSACTION_TARGET,
        %error,
        "discarded a lost pooled connection; beginning on another"
    );
}

/// What the rollback of a transaction dropped without commit or rollback found: a warning
/// when it had written, or when the rollback failed. Inside the transaction's span.
#[cfg(any(feature = "async", feature = "sync"))]
pub(crate) fn dropped(ended: &Ended) {
    if ended.dropped_after_write {
        dropped_after_write();
    }
    if let Err(error) = &ended.result {
        dropped_rollback_failed(error);
    }
}

/// A transaction dropped without commit or rollback had written: its writes are rolled
/// back. Inside the transaction's span.
#[cfg(any(feature = "async", feature = "sync"))]
fn dropped_after_write() {
    tracing::warn!(
        target: TRANSACTION_TARGET,
        "a tenant transaction that wrote was dropped without commit(): its writes are rolled back (call commit(), or use the pool's transaction(..) closure form, which commits on Ok)"
    );
}

/// The rollback of a transaction dropped without commit failed: the pool closes the
/// connection. Inside the transaction's span.
#[cfg(any(feature = "async", feature = "sync"))]
fn dropped_rollback_failed(error: &dyn Display) {
    tracing::warn!(
        target: TRANSACTION_TARGET,
        %error,
        "rollback of a dropped tenant transaction failed; the connection is discarded"
    );
}
