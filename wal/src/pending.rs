//! [`Pending`]: what an append (or a truncate, or a purge) returns, to wait on from a thread or a task.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use crate::error::WalError;

/// The outcome of a queued log operation, delivered once the operation is durable (or has failed).
///
/// Wait for it with [`Pending::wait`] from a thread, or `.await` it from async code. Dropping it does not cancel
/// the operation.
#[derive(Debug)]
#[must_use = "an append is durable only once its Pending completes"]
pub struct Pending<T> {
    rx: oneshot::Receiver<Result<T, WalError>>,
}

pub(crate) type Completion<T> = oneshot::Sender<Result<T, WalError>>;

impl<T> Pending<T> {
    pub(crate) fn new() -> (Completion<T>, Pending<T>) {
        let (tx, rx) = oneshot::channel();
        (tx, Pending { rx })
    }

    /// Whether the outcome is in (a [`Pending::wait`] would not block).
    pub(crate) fn is_done(&mut self) -> bool {
        !self.rx.is_empty() || self.rx.is_terminated()
    }

    /// Blocks the thread until the operation is durable or has failed.
    ///
    /// # Panics
    /// When called from inside an async runtime: `.await` the `Pending` there instead.
    pub fn wait(self) -> Result<T, WalError> {
        self.rx.blocking_recv().unwrap_or(Err(WalError::Closed))
    }
}

impl<T> Future for Pending<T> {
    type Output = Result<T, WalError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|r| r.unwrap_or(Err(WalError::Closed)))
    }
}
