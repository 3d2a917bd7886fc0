//! The connection's TLS stream, shared between `h2` and the connection task.
//!
//! `h2` owns its I/O object and offers no way to write a frame of our own (see
//! [`crate::protocol::http2`] for why we need to). [`SharedIo`] is that I/O object: a handle to the
//! stream behind a `std::sync::Mutex`, locked only for the duration of one `poll_*` call
//! (never across an `.await`). The connection task keeps a second handle and, once it has
//! stopped polling `h2`, writes the closing GOAWAY through it, provided [`SharedIo::quiet`]
//! says `h2` left the stream between two frames with everything flushed.
//!
//! The handle also follows the client's frames (`InboundFrames`): when the last one was
//! complete, which is what the idle timeout measures (PINGs count: `h2` answers them without
//! telling us), and since when an incomplete one is under way, which the frame deadline
//! measures. A byte on its own proves nothing: a client dripping one every few seconds
//! moves neither clock.
//!
//! # SETTINGS of our own on a live connection
//!
//! [`SharedIo::inject_settings`] queues a SETTINGS frame (Apple's stream limit on token
//! connections, which `h2` cannot change after the handshake). It is written before the
//! next bytes `h2` writes at a frame boundary, never inside one of `h2`'s frames. The
//! client's ACK of it is removed from what `h2` reads ([`InboundFilter`]): `h2` counts the
//! ACKs of its own SETTINGS and treats any other as a protocol error.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::protocol::http2::{self as frames, FrameBoundary, InboundFilter, FRAME_HEADER_LEN};

/// Bytes read from the socket per call while an injected frame's ACK is awaited (the reads
/// then go through the filter's own buffer): one TLS record's worth.
const FILTERED_READ: usize = 16 * 1024;

/// Most injected frames queued at once: the simulator injects at most two per connection.
pub const MAX_QUEUED_FRAMES: usize = 4;

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
    /// The client's frames as they arrive.
    inbound: InboundFrames,
    /// Frames of our own waiting for a frame boundary, the first possibly half written.
    queued: std::collections::VecDeque<Bytes>,
    /// Bytes of the first queued frame already written.
    queued_sent: usize,
    /// Follows what the client sends and removes the ACKs of our SETTINGS frames.
    filter: InboundFilter,
    /// Filtered bytes not yet handed to the reader.
    ready: Vec<u8>,
    /// An incomplete frame header held back by the filter (at most 8 bytes).
    held: Vec<u8>,
}

impl<S: AsyncWrite + Unpin> Inner<S> {
    /// Writes queued frames of our own while the stream stands between two frames. `Ready`
    /// means the writer may go on (everything queued is written, or `h2` is inside a frame
    /// and must finish it first).
    fn poll_queued(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(frame) = self.queued.front().cloned() {
            if self.queued_sent == 0 {
                if !self.written.at_boundary() {
                    return Poll::Ready(Ok(()));
                }
                // The client answers the n-th SETTINGS frame with the n-th ACK.
                self.filter.drop_ack(self.written.settings_frames() + 1);
            }
            match Pin::new(&mut self.stream).poll_write(cx, &frame[self.queued_sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    let n = n.min(frame.len() - self.queued_sent);
                    self.written
                        .feed(&frame[self.queued_sent..self.queued_sent + n]);
                    self.unflushed = true;
                    self.queued_sent += n;
                    if self.queued_sent == frame.len() {
                        self.queued.pop_front();
                        self.queued_sent = 0;
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S> SharedIo<S> {
    /// Wraps a stream.
    pub fn new(stream: S) -> Self {
        SharedIo {
            inner: Arc::new(Mutex::new(Inner {
                stream,
                written: FrameBoundary::default(),
                unflushed: false,
                inbound: InboundFrames::new(Instant::now()),
                queued: std::collections::VecDeque::new(),
                queued_sent: 0,
                filter: InboundFilter::server(),
                ready: Vec::new(),
                held: Vec::new(),
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

    /// Queues a SETTINGS frame with `values`, written at the next frame boundary before
    /// anything else (the first frame of the connection, if `h2` has written nothing yet).
    /// Its ACK never reaches `h2`. Beyond [`MAX_QUEUED_FRAMES`] it is dropped and `false`
    /// returned.
    pub fn inject_settings(&self, values: &[(u16, u32)]) -> bool {
        let mut inner = self.lock();
        if inner.queued.len() >= MAX_QUEUED_FRAMES {
            return false;
        }
        inner.queued.push_back(frames::settings(values));
        true
    }

    /// True while an injected frame waits to be written.
    pub fn has_queued(&self) -> bool {
        !self.lock().queued.is_empty()
    }

    /// Writes the queued frames (at a frame boundary) and flushes, without waiting for `h2` to
    /// write something: `Ready` once they are written. `Pending` while `h2` stands inside a
    /// frame (its own next write carries them, so no wake-up is needed) or the socket is full.
    /// The connection task polls this so that an injected frame goes out even on a
    /// connection where `h2` has nothing to say.
    pub fn poll_write_queued(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>
    where
        S: AsyncWrite + Unpin,
    {
        let mut inner = self.lock();
        match inner.poll_queued(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        if !inner.queued.is_empty() {
            return Poll::Pending;
        }
        let polled = Pin::new(&mut inner.stream).poll_flush(cx);
        if matches!(polled, Poll::Ready(Ok(()))) {
            inner.unflushed = false;
        }
        polled
    }

    /// When the client's last complete frame arrived (the connection's start before any).
    pub fn last_frame(&self) -> Instant {
        self.lock().inbound.last_complete
    }

    /// Since when an incomplete frame of the client's is under way (`None`: it stands
    /// between frames).
    pub fn partial_since(&self) -> Option<Instant> {
        self.lock().inbound.partial_since
    }

    /// Runs `f` on the stream (e.g. to read TLS session details).
    pub fn with_stream<T>(&self, f: impl FnOnce(&S) -> T) -> T {
        f(&self.lock().stream)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SharedIo<S> {
    /// Reads what the client sent, minus the ACKs of injected SETTINGS. Directly into `buf`
    /// normally; through the filter's buffer while such an ACK is awaited (the filter may
    /// then hold back an incomplete frame header until the rest arrives).
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        loop {
            if !inner.ready.is_empty() {
                let n = inner.ready.len().min(buf.remaining());
                buf.put_slice(&inner.ready[..n]);
                inner.ready.drain(..n);
                return Poll::Ready(Ok(()));
            }
            if !inner.filter.active() && inner.held.is_empty() {
                let before = buf.filled().len();
                let polled = Pin::new(&mut inner.stream).poll_read(cx, buf);
                if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
                    inner.inbound.feed(&buf.filled()[before..], Instant::now());
                    // Nothing is pending, so this only follows the frames.
                    let (kept, _) = inner.filter.filter(&mut buf.filled_mut()[before..]);
                    buf.set_filled(before + kept);
                }
                return polled;
            }
            let mut chunk = vec![0u8; FILTERED_READ];
            let mut into = ReadBuf::new(&mut chunk);
            match Pin::new(&mut inner.stream).poll_read(cx, &mut into) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if into.filled().is_empty() => {
                    // End of stream: what was held is all there is (a truncated frame,
                    // which `h2` reports), then the end.
                    let held = std::mem::take(&mut inner.held);
                    buf.put_slice(&held[..held.len().min(buf.remaining())]);
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Ok(())) => {
                    inner.inbound.feed(into.filled(), Instant::now());
                    let mut data = std::mem::take(&mut inner.held);
                    data.extend_from_slice(into.filled());
                    let (kept, held) = inner.filter.filter(&mut data);
                    debug_assert!(held < FRAME_HEADER_LEN);
                    inner.held = data[kept..kept + held].to_vec();
                    data.truncate(kept);
                    inner.ready = data;
                }
            }
        }
    }
}

/// The client connection preface ("PRI * HTTP/2.0…"), which comes before its frames.
const CLIENT_PREFACE_LEN: usize = 24;

/// Follows the frame boundaries of what the client sends (the preface, then 9-byte headers
/// and their payloads), for the idle and frame deadlines.
#[derive(Debug)]
struct InboundFrames {
    /// Preface bytes still to come.
    preface_left: usize,
    /// Header bytes of the current frame seen so far (0: between frames, or in a payload).
    header_seen: usize,
    /// The length field of the current header, as far as seen.
    length: usize,
    /// Payload bytes of the current frame still to come.
    payload_left: usize,
    /// When the last complete frame arrived.
    last_complete: Instant,
    /// When the incomplete frame under way began, if one is.
    partial_since: Option<Instant>,
}

impl InboundFrames {
    fn new(now: Instant) -> Self {
        InboundFrames {
            preface_left: CLIENT_PREFACE_LEN,
            header_seen: 0,
            length: 0,
            payload_left: 0,
            last_complete: now,
            partial_since: None,
        }
    }

    /// Takes bytes the client sent, read at `now`.
    fn feed(&mut self, mut bytes: &[u8], now: Instant) {
        let preface = self.preface_left.min(bytes.len());
        self.preface_left -= preface;
        bytes = &bytes[preface..];
        let mut completed = false;
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len());
                self.payload_left -= n;
                bytes = &bytes[n..];
                completed |= self.payload_left == 0;
                continue;
            }
            // A header byte: the first three are the payload length, big-endian.
            if self.header_seen < 3 {
                self.length = (self.length << 8) | usize::from(bytes[0]);
            }
            self.header_seen += 1;
            bytes = &bytes[1..];
            if self.header_seen == FRAME_HEADER_LEN {
                self.payload_left = self.length;
                self.header_seen = 0;
                self.length = 0;
                completed |= self.payload_left == 0;
            }
        }
        if completed {
            self.last_complete = now;
        }
        let preface_begun = self.preface_left > 0 && self.preface_left < CLIENT_PREFACE_LEN;
        let inside = self.header_seen > 0 || self.payload_left > 0 || preface_begun;
        self.partial_since = match (inside, self.partial_since) {
            (false, _) => None,
            // A frame completed in this read, and the next one began in it.
            (true, _) if completed => Some(now),
            (true, since) => since.or(Some(now)),
        };
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SharedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut inner = self.lock();
        match inner.poll_queued(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other.map_ok(|()| 0),
        }
        let polled = Pin::new(&mut inner.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            inner.written.feed(&buf[..n.min(buf.len())]);
            inner.unflushed = true;
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut inner = self.lock();
        match inner.poll_queued(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
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
    async fn injected_settings_go_between_frames_and_their_ack_is_kept_from_the_reader() {
        let (a, mut b) = tokio::io::duplex(4096);
        let mut io = SharedIo::new(a);
        let other = io.handle();
        // Queued before anything is written: it becomes the first frame.
        assert!(other.inject_settings(&[(frames::SETTINGS_MAX_CONCURRENT_STREAMS, 1)]));
        let theirs = frames::settings(&[(frames::SETTINGS_HEADER_TABLE_SIZE, 4096)]);
        io.write_all(&theirs[..5]).await.unwrap();
        // Queued while `h2` is inside a frame: it waits for the boundary.
        assert!(other.inject_settings(&[(frames::SETTINGS_MAX_CONCURRENT_STREAMS, 1000)]));
        io.write_all(&theirs[5..]).await.unwrap();
        assert!(other.has_queued());
        std::future::poll_fn(|cx| other.poll_write_queued(cx))
            .await
            .unwrap();
        assert!(!other.has_queued());
        let mut expected =
            frames::settings(&[(frames::SETTINGS_MAX_CONCURRENT_STREAMS, 1)]).to_vec();
        expected.extend_from_slice(&theirs);
        expected.extend_from_slice(&frames::settings(&[(
            frames::SETTINGS_MAX_CONCURRENT_STREAMS,
            1000,
        )]));
        let mut got = vec![0u8; expected.len()];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(got, expected);

        // The client acknowledges all three in order; the reader sees only the ACK of its own
        // (the second), in whatever pieces the bytes come.
        let ack = [0u8, 0, 0, 0x4, 0x1, 0, 0, 0, 0];
        let ping = [&[0u8, 0, 8, 0x6, 0, 0, 0, 0, 0][..], &[7; 8]].concat();
        let mut sent = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        let preface_len = sent.len();
        for frame in [&ack[..], &ping, &ack, &ping, &ack, &ping] {
            sent.extend_from_slice(frame);
        }
        for piece in sent.chunks(4) {
            b.write_all(piece).await.unwrap();
        }
        drop(b);
        let mut read = Vec::new();
        io.read_to_end(&mut read).await.unwrap();
        let mut want = sent[..preface_len].to_vec();
        for frame in [&ping[..], &ack, &ping, &ping] {
            want.extend_from_slice(frame);
        }
        assert_eq!(read, want);
    }

    #[test]
    fn only_complete_frames_move_the_idle_clock() {
        let start = Instant::now();
        let at = |ms| start + std::time::Duration::from_millis(ms);
        let mut frames = InboundFrames::new(start);
        // The preface, in two pieces: under way, then done (no frame yet).
        frames.feed(&b"PRI * HTTP/2.0\r\n"[..], at(1));
        assert_eq!(frames.partial_since, Some(at(1)));
        frames.feed(&b"\r\nSM\r\n\r\n"[..], at(2));
        assert_eq!((frames.partial_since, frames.last_complete), (None, start));
        // An empty SETTINGS frame: complete.
        frames.feed(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0], at(3));
        assert_eq!((frames.partial_since, frames.last_complete), (None, at(3)));
        // A PING dripped a byte at a time: the partial clock starts with its first byte
        // and no later byte moves either clock.
        let ping = [&[0u8, 0, 8, 0x6, 0, 0, 0, 0, 0][..], &[7; 8]].concat();
        for (i, byte) in ping[..16].iter().enumerate() {
            frames.feed(&[*byte], at(10 + i as u64));
            assert_eq!(
                (frames.partial_since, frames.last_complete),
                (Some(at(10)), at(3))
            );
        }
        // Its last byte and the first of another frame in one read.
        frames.feed(&[7, 0], at(40));
        assert_eq!(
            (frames.partial_since, frames.last_complete),
            (Some(at(40)), at(40))
        );
    }
}
