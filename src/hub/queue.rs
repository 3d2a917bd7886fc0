//! A device session's queue: one sender (the hub's record of the live session), one
//! receiver (the session's task), bounded, sent to with `try_send` only.
//!
//! It replaces tokio's `mpsc` channel for this one use because of what an idle session
//! costs: tokio's channel allocates its shared state padded to cache lines (512 bytes) and
//! a first block of 32 slots (288 bytes) when it is made, so 800 bytes per connected device
//! before anything is sent. This one is a `VecDeque` and the receiver's waker under one
//! mutex (about 80 bytes), whose slots are allocated when notifications come and handed
//! back when a burst has drained; waiting in [`Receiver::recv`] holds no more than a
//! reference (a `Notify`'s waiter would add a hundred bytes to every session's task).
//!
//! The semantics are the subset of `mpsc` the hub and the session use: `try_send` fails
//! when the queue is full or the receiver is gone; `recv` returns `None` once the sender is
//! gone and the queue is empty (a replaced session, [`super::State::connect_device`]);
//! `capacity` is the room left. `recv` is cancel-safe: what was sent stays in the queue
//! until a `recv` returns it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// Slots a drained queue may keep: more than this (left by a burst) are handed back when
/// the queue empties, so an idle session holds a few pointers' worth, not a burst's.
const IDLE_SLOTS: usize = 8;

/// Why [`Sender::try_send`] refused a value (the value is handed back).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum TrySendError<T> {
    /// The queue holds its bound.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

/// Why [`Receiver::try_recv`] returned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing queued; the sender may still send.
    Empty,
    /// Nothing queued, and the sender is gone: nothing will come.
    Disconnected,
}

/// What both ends share.
#[derive(Debug)]
struct Shared<T> {
    state: Mutex<State<T>>,
    /// At most this many values queued.
    bound: usize,
}

#[derive(Debug)]
struct State<T> {
    items: VecDeque<T>,
    sender_alive: bool,
    receiver_alive: bool,
    /// The receiver waiting in `recv`, woken by the next send or the sender's drop. Set and
    /// taken under the lock, with the check for a value, so no wake-up is lost.
    waiting: Option<Waker>,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Nothing here panics while holding the lock; a poisoned one still holds valid data.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A queue of at most `bound` values (at least 1).
pub(super) fn channel<T>(bound: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            sender_alive: true,
            receiver_alive: true,
            waiting: None,
        }),
        bound: bound.max(1),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

/// The sending end; dropping it ends the queue for the receiver once it is drained.
#[derive(Debug)]
pub(super) struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Sender<T> {
    /// Queues `value` unless the queue is full or the receiver is gone. Never waits.
    pub(super) fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        let waiting = {
            let mut state = self.shared.lock();
            if !state.receiver_alive {
                return Err(TrySendError::Closed(value));
            }
            if state.items.len() >= self.shared.bound {
                return Err(TrySendError::Full(value));
            }
            state.items.push_back(value);
            state.waiting.take()
        };
        if let Some(waker) = waiting {
            waker.wake();
        }
        Ok(())
    }

    /// How many more values the queue takes now.
    pub(super) fn capacity(&self) -> usize {
        let state = self.shared.lock();
        self.shared.bound.saturating_sub(state.items.len())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waiting = {
            let mut state = self.shared.lock();
            state.sender_alive = false;
            state.waiting.take()
        };
        if let Some(waker) = waiting {
            waker.wake();
        }
    }
}

/// The receiving end; dropping it makes every later `try_send` fail.
#[derive(Debug)]
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Receiver<T> {
    /// The next value, waiting for one; `None` once the sender is gone and nothing is left.
    /// Cancel-safe: a value is taken out of the queue only when it is returned.
    pub async fn recv(&mut self) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`Receiver::recv`] as a poll: `Pending` leaves the task's waker to the next send.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = self.shared.lock();
        match self.take(&mut state) {
            Ok(value) => Poll::Ready(Some(value)),
            Err(TryRecvError::Disconnected) => Poll::Ready(None),
            Err(TryRecvError::Empty) => {
                match &mut state.waiting {
                    Some(waker) => waker.clone_from(cx.waker()),
                    none => *none = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }

    /// The next value if one is queued, without waiting.
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let mut state = self.shared.lock();
        self.take(&mut state)
    }

    /// The next value, from the state locked.
    fn take(&self, state: &mut State<T>) -> Result<T, TryRecvError> {
        match state.items.pop_front() {
            Some(value) => {
                if state.items.is_empty() && state.items.capacity() > IDLE_SLOTS {
                    state.items = VecDeque::new();
                }
                Ok(value)
            }
            None if state.sender_alive => Err(TryRecvError::Empty),
            None => Err(TryRecvError::Disconnected),
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.receiver_alive = false;
        state.waiting = None;
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    #[test]
    fn bounded_in_order_and_closed_by_either_end() {
        let (tx, mut rx) = channel(2);
        assert_eq!(tx.capacity(), 2);
        assert_eq!(tx.try_send(1), Ok(()));
        assert_eq!(tx.try_send(2), Ok(()));
        assert_eq!(tx.capacity(), 0);
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(tx.capacity(), 1);
        drop(tx);
        // What was sent before the sender left is still received, then the end.
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));

        let (tx, rx) = channel(2);
        drop(rx);
        assert_eq!(tx.try_send(1), Err(TrySendError::Closed(1)));
    }

    #[test]
    fn a_drained_burst_hands_its_slots_back() {
        let (tx, mut rx) = channel(256);
        for i in 0..100 {
            tx.try_send(i).unwrap();
        }
        while rx.try_recv().is_ok() {}
        assert!(rx.shared.lock().items.capacity() <= IDLE_SLOTS);
    }

    #[tokio::test]
    async fn recv_waits_for_a_send_and_sees_the_sender_leave() {
        let (tx, mut rx) = channel(4);
        let sender = tokio::spawn(async move {
            tx.try_send(7).unwrap();
            tokio::task::yield_now().await;
            tx.try_send(8).unwrap();
        });
        assert_eq!(rx.recv().await, Some(7));
        assert_eq!(rx.recv().await, Some(8));
        sender.await.unwrap();
        assert_eq!(rx.recv().await, None);
    }

    /// A `recv` dropped before it returned (another `select!` branch won) takes nothing:
    /// the value sent meanwhile comes with the next `recv`.
    #[tokio::test]
    async fn a_cancelled_recv_loses_nothing() {
        let (tx, mut rx) = channel(4);
        {
            let waiting = rx.recv();
            tokio::pin!(waiting);
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(waiting.as_mut().poll(&mut cx).is_pending());
            tx.try_send(1).unwrap();
        }
        assert_eq!(rx.recv().await, Some(1));
    }
}
