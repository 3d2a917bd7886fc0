//! A stream wrapper that gives every write a deadline: a peer that takes no byte for
//! [`crate::settings::Settings::write_timeout`] gets `TimedOut` errors from then on.
//!
//! The accept loop wraps each TCP stream in it under TLS, so every write of every endpoint
//! is covered (device notifications, error responses, `h2`'s frames, close_notify, the
//! handshake itself) without each call site remembering a timeout. Reads pass through.
//!
//! How it works: when the inner stream answers a write (or flush, or shutdown) with
//! `Pending`, a timer is armed and polled with the same waker, so the task wakes when the
//! deadline passes even if the socket never becomes writable. Any progress disarms it. Once
//! the deadline has passed the stream is dead: later writes fail at once, so a task's
//! best-effort goodbye after the failure cannot wait a second deadline.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// `S` with a deadline on every write.
#[derive(Debug)]
pub struct WriteDeadline<S> {
    inner: S,
    limit: Duration,
    /// Armed while a write is pending.
    timer: Option<Pin<Box<Sleep>>>,
    /// The deadline passed once: every later write fails.
    dead: bool,
}

impl<S> WriteDeadline<S> {
    /// Wraps `inner`; a write that makes no progress for `limit` fails with `TimedOut`.
    pub fn new(inner: S, limit: Duration) -> Self {
        WriteDeadline {
            inner,
            limit,
            timer: None,
            dead: false,
        }
    }

    /// The wrapped stream (for its addresses).
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn timed_out(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the peer took no byte for {:?}", self.limit),
        )
    }

    /// What to answer for a write that `inner` answered with `poll`: progress disarms the
    /// timer, `Pending` arms it (and fails once it fires).
    fn guard<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(result) => {
                self.timer = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let limit = self.limit;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        self.timer = None;
                        self.dead = true;
                        Poll::Ready(Err(self.timed_out()))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.dead {
            return Poll::Ready(Err(self.timed_out()));
        }
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.guard(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.dead {
            return Poll::Ready(Err(self.timed_out()));
        }
        let poll = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.guard(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.dead {
            return Poll::Ready(Err(self.timed_out()));
        }
        let poll = Pin::new(&mut self.inner).poll_flush(cx);
        self.guard(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.dead {
            return Poll::Ready(Err(self.timed_out()));
        }
        let poll = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.guard(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_peer_that_stops_reading_fails_the_write_and_every_later_one() {
        // A 16-byte pipe the other end never reads: the second write cannot progress.
        let (mut peer, ours) = tokio::io::duplex(16);
        let mut ours = WriteDeadline::new(ours, Duration::from_millis(20));
        ours.write_all(&[1; 16]).await.unwrap();
        let err = ours.write_all(&[2; 16]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("20ms"), "{err}");
        // Even after the peer drains the pipe, the stream stays dead.
        let mut drained = [0u8; 16];
        peer.read_exact(&mut drained).await.unwrap();
        assert_eq!(
            ours.write_all(&[3]).await.unwrap_err().kind(),
            io::ErrorKind::TimedOut
        );
    }

    #[tokio::test]
    async fn a_peer_that_reads_slowly_is_not_cut_off() {
        let (mut peer, ours) = tokio::io::duplex(16);
        let mut ours = WriteDeadline::new(ours, Duration::from_secs(30));
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            peer.read_to_end(&mut got).await.unwrap();
            got
        });
        ours.write_all(&[7; 1000]).await.unwrap();
        ours.shutdown().await.unwrap();
        drop(ours);
        assert_eq!(reader.await.unwrap(), vec![7; 1000]);
    }
}
