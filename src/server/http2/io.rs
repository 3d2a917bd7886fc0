//! The connection's TLS stream, owned by `h2`, with a lock-free side channel to the
//! connection task.
//!
//! `h2` owns its I/O object and offers no way to write a frame of our own (see
//! [`crate::protocol::http2`] for why we need to). [`FrameIo`] is that I/O object: it owns
//! the stream while `h2` runs, and [`Control`] is the connection task's side of it. Nothing
//! on the I/O path takes a lock: what the connection task reads (the client's frame clocks,
//! whether the stream stands quiet) is published in atomics after each read and write, and
//! the frames it injects come through a lock-free channel that the I/O path looks at only
//! when a counter says one is waiting. When `h2` drops the I/O object (the connection task
//! drops `h2` once it has stopped polling it), the stream is handed back to the [`Control`]
//! ([`Control::take_stream`]), which then writes the closing GOAWAY, provided
//! [`Control::quiet`] said `h2` left the stream between two frames with everything flushed.
//!
//! The I/O object also follows the client's frames (`InboundFrames`): when the last one was
//! complete, which is what the idle timeout measures (PINGs count: `h2` answers them without
//! telling us), and since when an incomplete one is under way, which the frame deadline
//! measures. A byte on its own proves nothing: a client dripping one every few seconds
//! moves neither clock.
//!
//! # SETTINGS of our own on a live connection
//!
//! [`Control::inject_settings`] queues a SETTINGS frame (Apple's stream limit on token
//! connections, which `h2` cannot change after the handshake). It is written at the next
//! frame boundary, never inside one of `h2`'s frames: before `h2`'s next write, or on `h2`'s
//! next read (which every turn of the connection task makes) when `h2` has nothing to say.
//! The client's ACK of it is removed from what `h2` reads ([`InboundFilter`]): `h2` counts
//! the ACKs of its own SETTINGS and treats any other as a protocol error.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::protocol::http2::{self as frames, FrameBoundary, InboundFilter, FRAME_HEADER_LEN};

/// Bytes read from the socket per call while an injected frame's ACK is awaited (the reads
/// then go through the filter's own buffer): one TLS record's worth.
const FILTERED_READ: usize = 16 * 1024;

/// Most injected frames queued at once: the simulator injects at most two per connection.
pub const MAX_QUEUED_FRAMES: usize = 4;

/// What the I/O object and the connection task share. Written only by the I/O object
/// (apart from the frame queue), read by the connection task.
#[derive(Debug)]
struct Shared<S> {
    /// The clocks below count nanoseconds from here.
    base: Instant,
    /// When the client's last complete frame arrived.
    last_frame: AtomicU64,
    /// Since when an incomplete frame of the client's is under way, plus one; 0: none.
    partial_since: AtomicU64,
    /// Everything written so far is whole frames and flushed.
    quiet: AtomicBool,
    /// Injected frames not yet completely written.
    queued: AtomicUsize,
    /// The stream, handed back when `h2` drops the I/O object; locked once each way.
    returned: Mutex<Option<Returned<S>>>,
}

/// The stream as `h2` left it, and the injected bytes it had not written yet.
#[derive(Debug)]
pub struct Returned<S> {
    /// The TLS stream.
    pub stream: S,
    /// Injected frames (or what remains of one) that never went out; they precede anything
    /// written after `h2`.
    pub unwritten: Vec<u8>,
}

impl<S> Shared<S> {
    fn since_base(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    fn at(&self, nanos: u64) -> Instant {
        self.base + Duration::from_nanos(nanos)
    }
}

/// The I/O object `h2` runs on: the stream, the frame trackers, and the injected frames.
#[derive(Debug)]
pub struct FrameIo<S> {
    /// `None` only once dropped (handed back).
    stream: Option<S>,
    /// Where the bytes written so far stand relative to frame boundaries.
    written: FrameBoundary,
    /// Bytes were written since the last successful flush.
    unflushed: bool,
    /// Bytes of our own were written since the last successful flush (they must go out even
    /// if `h2` writes nothing more).
    own_unflushed: bool,
    /// The client's frames as they arrive.
    inbound: InboundFrames,
    /// The injected frame being written, if any.
    current: Option<Bytes>,
    /// Bytes of `current` already written.
    current_sent: usize,
    /// Injected frames from the [`Control`].
    frames: Receiver<Bytes>,
    /// Follows what the client sends and removes the ACKs of our SETTINGS frames.
    filter: InboundFilter,
    /// Filtered bytes not yet handed to the reader.
    ready: Vec<u8>,
    /// An incomplete frame header held back by the filter (at most 8 bytes).
    held: Vec<u8>,
    shared: Arc<Shared<S>>,
}

/// The connection task's side of a [`FrameIo`].
#[derive(Debug)]
pub struct Control<S> {
    shared: Arc<Shared<S>>,
    frames: SyncSender<Bytes>,
}

impl<S> FrameIo<S> {
    /// Wraps a stream: the I/O object for `h2`, and the connection task's control of it.
    pub fn new(stream: S) -> (Self, Control<S>) {
        let base = Instant::now();
        let shared = Arc::new(Shared {
            base,
            last_frame: AtomicU64::new(0),
            partial_since: AtomicU64::new(0),
            quiet: AtomicBool::new(true),
            queued: AtomicUsize::new(0),
            returned: Mutex::new(None),
        });
        let (tx, rx) = std::sync::mpsc::sync_channel(MAX_QUEUED_FRAMES);
        let io = FrameIo {
            stream: Some(stream),
            written: FrameBoundary::default(),
            unflushed: false,
            own_unflushed: false,
            inbound: InboundFrames::new(base),
            current: None,
            current_sent: 0,
            frames: rx,
            filter: InboundFilter::server(),
            ready: Vec::new(),
            held: Vec::new(),
            shared: shared.clone(),
        };
        (io, Control { shared, frames: tx })
    }

    /// Publishes whether the stream stands quiet.
    fn publish_quiet(&self) {
        let quiet = self.written.at_boundary() && !self.unflushed;
        self.shared.quiet.store(quiet, Ordering::Release);
    }

    /// Publishes the client's frame clocks.
    fn publish_inbound(&self) {
        let shared = &self.shared;
        shared.last_frame.store(
            shared.since_base(self.inbound.last_complete),
            Ordering::Release,
        );
        let partial = self
            .inbound
            .partial_since
            .map_or(0, |at| shared.since_base(at).saturating_add(1));
        shared.partial_since.store(partial, Ordering::Release);
    }

    /// The next injected frame to write, if one waits (a counter load when none does).
    fn next_frame(&mut self) -> Option<Bytes> {
        if self.current.is_none() && self.shared.queued.load(Ordering::Acquire) > 0 {
            self.current = self.frames.try_recv().ok();
            self.current_sent = 0;
        }
        self.current.clone()
    }
}

impl<S: AsyncWrite + Unpin> FrameIo<S> {
    /// Writes queued frames of our own while the stream stands between two frames. `Ready`
    /// means the writer may go on (everything queued is written, or `h2` is inside a frame
    /// and must finish it first).
    fn poll_queued(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(frame) = self.next_frame() {
            if self.current_sent == 0 {
                if !self.written.at_boundary() {
                    return Poll::Ready(Ok(()));
                }
                // The client answers the n-th SETTINGS frame with the n-th ACK.
                self.filter.drop_ack(self.written.settings_frames() + 1);
            }
            let Some(stream) = self.stream.as_mut() else {
                return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
            };
            match Pin::new(stream).poll_write(cx, &frame[self.current_sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    let n = n.min(frame.len() - self.current_sent);
                    self.written
                        .feed(&frame[self.current_sent..self.current_sent + n]);
                    self.unflushed = true;
                    self.own_unflushed = true;
                    self.current_sent += n;
                    if self.current_sent == frame.len() {
                        self.current = None;
                        self.current_sent = 0;
                        self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                    }
                    self.publish_quiet();
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Flushes the stream, noting it.
    fn poll_flush_stream(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(stream) = self.stream.as_mut() else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        let polled = Pin::new(stream).poll_flush(cx);
        if matches!(polled, Poll::Ready(Ok(()))) {
            self.unflushed = false;
            self.own_unflushed = false;
            self.publish_quiet();
        }
        polled
    }

    /// On `h2`'s read: writes the injected frames `h2` has not carried out with a write of
    /// its own (it may have nothing to say), and flushes them. Errors are left for `h2`'s
    /// own reads and writes to meet; the frames are then dropped.
    fn push_own_frames(&mut self, cx: &mut Context<'_>) {
        if self.current.is_none()
            && !self.own_unflushed
            && self.shared.queued.load(Ordering::Acquire) == 0
        {
            return;
        }
        match self.poll_queued(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Pending => return,
            Poll::Ready(Err(_)) => {
                self.drop_queued();
                return;
            }
        }
        if self.own_unflushed && self.current.is_none() {
            let _ = self.poll_flush_stream(cx);
        }
    }

    /// Forgets the injected frames (the stream failed).
    fn drop_queued(&mut self) {
        let mut dropped = usize::from(self.current.take().is_some());
        while self.frames.try_recv().is_ok() {
            dropped += 1;
        }
        self.current_sent = 0;
        self.own_unflushed = false;
        self.shared.queued.fetch_sub(dropped, Ordering::AcqRel);
    }
}

impl<S> Drop for FrameIo<S> {
    /// Hands the stream (and any injected bytes not yet written) back to the [`Control`].
    fn drop(&mut self) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        let mut unwritten = Vec::new();
        if let Some(frame) = self.current.take() {
            unwritten.extend_from_slice(&frame[self.current_sent..]);
        }
        while let Ok(frame) = self.frames.try_recv() {
            unwritten.extend_from_slice(&frame);
        }
        *self
            .shared
            .returned
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Returned { stream, unwritten });
    }
}

impl<S> Control<S> {
    /// True when everything written so far is whole frames and has been flushed: a frame
    /// written now cannot interleave with one of `h2`'s.
    pub fn quiet(&self) -> bool {
        self.shared.quiet.load(Ordering::Acquire)
    }

    /// Queues a SETTINGS frame with `values`, written at the next frame boundary before
    /// anything else (the first frame of the connection, if `h2` has written nothing yet).
    /// Its ACK never reaches `h2`. Beyond [`MAX_QUEUED_FRAMES`] it is dropped and `false`
    /// returned.
    pub fn inject_settings(&self, values: &[(u16, u32)]) -> bool {
        if self.shared.queued.load(Ordering::Acquire) >= MAX_QUEUED_FRAMES {
            return false;
        }
        match self.frames.try_send(frames::settings(values)) {
            Ok(()) => {
                self.shared.queued.fetch_add(1, Ordering::AcqRel);
                true
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    /// True while an injected frame waits to be written.
    pub fn has_queued(&self) -> bool {
        self.shared.queued.load(Ordering::Acquire) > 0
    }

    /// When the client's last complete frame arrived (the connection's start before any).
    pub fn last_frame(&self) -> Instant {
        self.shared
            .at(self.shared.last_frame.load(Ordering::Acquire))
    }

    /// Since when an incomplete frame of the client's is under way (`None`: it stands
    /// between frames).
    pub fn partial_since(&self) -> Option<Instant> {
        match self.shared.partial_since.load(Ordering::Acquire) {
            0 => None,
            plus_one => Some(self.shared.at(plus_one - 1)),
        }
    }

    /// The stream, once `h2` dropped the I/O object (`None` before, or if taken already).
    pub fn take_stream(&self) -> Option<Returned<S>> {
        self.shared
            .returned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for FrameIo<S> {
    /// Reads what the client sent, minus the ACKs of injected SETTINGS. Directly into `buf`
    /// normally; through the filter's buffer while such an ACK is awaited (the filter may
    /// then hold back an incomplete frame header until the rest arrives). Injected frames
    /// that wait are written first.
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.push_own_frames(cx);
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.drain(..n);
                return Poll::Ready(Ok(()));
            }
            let Some(stream) = this.stream.as_mut() else {
                return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
            };
            if !this.filter.active() && this.held.is_empty() {
                let before = buf.filled().len();
                let polled = Pin::new(stream).poll_read(cx, buf);
                if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
                    this.inbound.feed(&buf.filled()[before..], Instant::now());
                    this.publish_inbound();
                    // Nothing is pending, so this only follows the frames.
                    let (kept, _) = this.filter.filter(&mut buf.filled_mut()[before..]);
                    buf.set_filled(before + kept);
                }
                return polled;
            }
            let mut chunk = vec![0u8; FILTERED_READ];
            let mut into = ReadBuf::new(&mut chunk);
            match Pin::new(stream).poll_read(cx, &mut into) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if into.filled().is_empty() => {
                    // End of stream: what was held is all there is (a truncated frame,
                    // which `h2` reports), then the end.
                    let held = std::mem::take(&mut this.held);
                    buf.put_slice(&held[..held.len().min(buf.remaining())]);
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Ok(())) => {
                    this.inbound.feed(into.filled(), Instant::now());
                    this.publish_inbound();
                    let mut data = std::mem::take(&mut this.held);
                    data.extend_from_slice(into.filled());
                    let (kept, held) = this.filter.filter(&mut data);
                    debug_assert!(held < FRAME_HEADER_LEN);
                    this.held = data[kept..kept + held].to_vec();
                    data.truncate(kept);
                    this.ready = data;
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

impl<S: AsyncWrite + Unpin> AsyncWrite for FrameIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.poll_queued(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other.map_ok(|()| 0),
        }
        let Some(stream) = this.stream.as_mut() else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        let polled = Pin::new(stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            this.written.feed(&buf[..n.min(buf.len())]);
            this.unflushed = true;
            this.publish_quiet();
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.poll_queued(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        this.poll_flush_stream(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(stream) = this.stream.as_mut() else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        Pin::new(stream).poll_shutdown(cx)
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
        let (mut io, other) = FrameIo::new(a);
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
        let (mut io, other) = FrameIo::new(a);
        // Queued before anything is written: it becomes the first frame.
        assert!(other.inject_settings(&[(frames::SETTINGS_MAX_CONCURRENT_STREAMS, 1)]));
        let theirs = frames::settings(&[(frames::SETTINGS_HEADER_TABLE_SIZE, 4096)]);
        io.write_all(&theirs[..5]).await.unwrap();
        // Queued while `h2` is inside a frame: it waits for the boundary.
        assert!(other.inject_settings(&[(frames::SETTINGS_MAX_CONCURRENT_STREAMS, 1000)]));
        io.write_all(&theirs[5..]).await.unwrap();
        assert!(other.has_queued());
        // `h2` writes nothing more: its next read (one poll, nothing to read yet) writes and
        // flushes the frame.
        std::future::poll_fn(|cx| {
            let mut byte = [0u8; 1];
            let mut into = ReadBuf::new(&mut byte);
            assert!(Pin::new(&mut io).poll_read(cx, &mut into).is_pending());
            Poll::Ready(())
        })
        .await;
        assert!(!other.has_queued());
        assert!(other.quiet());
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

    #[tokio::test]
    async fn the_stream_comes_back_when_h2_drops_it_with_what_was_not_written() {
        let (a, _b) = tokio::io::duplex(4096);
        let (mut io, control) = FrameIo::new(a);
        let theirs = frames::settings(&[(frames::SETTINGS_HEADER_TABLE_SIZE, 4096)]);
        io.write_all(&theirs[..5]).await.unwrap();
        assert!(control.inject_settings(&[(frames::SETTINGS_MAX_CONCURRENT_STREAMS, 1000)]));
        assert!(control.take_stream().is_none(), "h2 still owns it");
        drop(io);
        let returned = control.take_stream().expect("handed back");
        assert_eq!(
            returned.unwritten,
            frames::settings(&[(frames::SETTINGS_MAX_CONCURRENT_STREAMS, 1000)]).to_vec()
        );
        assert!(control.take_stream().is_none(), "taken once");
    }

    #[tokio::test]
    async fn the_clocks_reach_the_control_and_a_lone_byte_moves_neither() {
        let (a, mut b) = tokio::io::duplex(4096);
        let (mut io, control) = FrameIo::new(a);
        let start = control.last_frame();
        assert_eq!(control.partial_since(), None);
        let mut sent = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        sent.extend_from_slice(&frames::settings(&[]));
        sent.push(0);
        b.write_all(&sent).await.unwrap();
        let mut got = vec![0u8; sent.len()];
        io.read_exact(&mut got).await.unwrap();
        let settled = control.last_frame();
        assert!(settled > start, "the SETTINGS frame completed");
        let began = control.partial_since().expect("a frame begun");
        // One more byte of the same frame header: neither clock moves.
        b.write_all(&[0]).await.unwrap();
        io.read_exact(&mut got[..1]).await.unwrap();
        assert_eq!(control.last_frame(), settled);
        assert_eq!(control.partial_since(), Some(began));
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
