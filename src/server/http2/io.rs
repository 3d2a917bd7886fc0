//! The connection's TLS stream, shared between `h2` and the connection task.
//!
//! `h2` owns its I/O object and offers no way to write a frame of our own (see
//! [`crate::protocol::http2`] for why we need to). [`SharedIo`] is that I/O object: a handle to the
//! stream behind a `std::sync::Mutex`, locked only for the duration of one `poll_*` call
//! (never across an `.await`). The connection task keeps a second handle and, once it has
//! stopped polling `h2`, writes the closing GOAWAY through it, provided [`SharedIo::quiet`]
//! says `h2` left the stream between two frames with everything flushed.
//!
//! The handle also records when the client last sent anything, which is what the idle
//! timeout measures (PINGs count: `h2` answers them without telling us).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::protocol::http2::FrameBoundary;

/// A cloneable handle to one stream.
#[derive(Debug)]
pub struct SharedIo<S> {
    inner: Arc<Mutex<Inner<S>>>,
}

#[derive(Debug)]
struct Inner<S> {
    stream: S,
    /// Where the bytes written so far stand relative to frame boundaries.
    written: FrameBoundary,
    /// Bytes were written since the last successful flush.
    unflushed: bool,
    /// When the peer last sent bytes.
    last_read: Instant,
}

impl<S> SharedIo<S> {
    /// Wraps a stream.
    pub fn new(stream: S) -> Self {
        SharedIo {
            inner: Arc::new(Mutex::new(Inner {
                stream,
                written: FrameBoundary::default(),
                unflushed: false,
                last_read: Instant::now(),
            })),
        }
    }

    /// Another handle to the same stream.
    pub fn handle(&self) -> Self {
        SharedIo {
            inner: self.inner.clone(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<S>> {
        // A panic inside a poll call cannot leave the stream half-updated in a way that
        // matters more than dropping the connection would; keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True when everything written so far is whole frames and has been flushed: a frame
    /// written now cannot interleave with one of `h2`'s.
    pub fn quiet(&self) -> bool {
        let inner = self.lock();
        inner.written.at_boundary() && !inner.unflushed
    }

    /// When the peer last sent any bytes.
    pub fn last_read(&self) -> Instant {
        self.lock().last_read
    }

    /// Runs `f` on the stream (e.g. to read TLS session details).
    pub fn with_stream<T>(&self, f: impl FnOnce(&S) -> T) -> T {
        f(&self.lock().stream)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SharedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut inner = self.lock();
        let before = buf.filled().len();
        let polled = Pin::new(&mut inner.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            inner.last_read = Instant::now();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SharedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut inner = self.lock();
        let polled = Pin::new(&mut inner.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            inner.written.feed(&buf[..n.min(buf.len())]);
            inner.unflushed = true;
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut inner = self.lock();
        let polled = Pin::new(&mut inner.stream).poll_flush(cx);
        if matches!(polled, Poll::Ready(Ok(()))) {
            inner.unflushed = false;
        }
        polled
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut inner = self.lock();
        Pin::new(&mut inner.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::http2 as frames;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn quiet_only_between_flushed_whole_frames() {
        let (a, mut b) = tokio::io::duplex(4096);
        let mut io = SharedIo::new(a);
        let other = io.handle();
        assert!(other.quiet());
        let frame = frames::goaway(0, frames::NO_ERROR, b"{}");
        io.write_all(&frame[..5]).await.unwrap();
        assert!(!other.quiet(), "half a frame written");
        io.write_all(&frame[5..]).await.unwrap();
        assert!(!other.quiet(), "whole frame, not flushed");
        io.flush().await.unwrap();
        assert!(other.quiet());
        let mut got = vec![0u8; frame.len()];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(got, frame.to_vec());
    }

    #[tokio::test]
    async fn reads_move_last_read() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut io = SharedIo::new(a);
        let before = io.last_read();
        b.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        io.read_exact(&mut buf).await.unwrap();
        assert!(io.last_read() >= before);
        assert_eq!(&buf, b"ping");
    }
}
