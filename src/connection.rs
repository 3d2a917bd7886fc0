//! A framed connection over any `AsyncRead + AsyncWrite` stream.
//!
//! Production passes a TLS stream; unit tests pass `tokio::io::duplex` with a tiny buffer to
//! flush out partial-read bugs. The connection owns its read and write buffers and keeps all
//! partial state in them, so `read_frame` is cancel-safe and can sit in a `select!` beside
//! the shutdown signal: if the other branch wins, no bytes are lost.

use std::future::Future;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// Initial read buffer size; it grows only as far as the largest frame a decoder accepts
/// (each decoder rejects over-long length fields before asking for their bytes).
pub const READ_BUFFER: usize = 8 * 1024;

/// Least free room in the read buffer before a read (or half its initial capacity, for a
/// smaller one); below it the buffer grows (or reclaims consumed space) by its initial
/// capacity.
const MIN_READ_ROOM: usize = 512;

/// Why reading a frame stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError<E> {
    /// The decoder refused the bytes.
    #[error("{0}")]
    Decode(E),
    /// The peer closed the stream in the middle of a frame.
    #[error("connection closed in the middle of a frame ({0} bytes buffered)")]
    Truncated(usize),
    /// The stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Why [`Connection::read_frame_within`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum TimedReadError<E> {
    /// As for [`Connection::read_frame`].
    #[error(transparent)]
    Read(#[from] ReadError<E>),
    /// No frame began before the idle deadline.
    #[error("no frame before the idle deadline")]
    Idle,
    /// A frame began but was not complete within the frame deadline
    /// ([`Connection::read_frame_within`]): the bytes of it that had arrived.
    #[error("a frame begun was not complete within {after:?} ({buffered} bytes arrived)")]
    Stalled {
        /// Bytes of the incomplete frame that arrived.
        buffered: usize,
        /// The frame deadline.
        after: Duration,
    },
}

/// A stream with its buffers.
#[derive(Debug)]
pub struct Connection<S> {
    stream: S,
    read_buf: BytesMut,
    /// How much room to make in the read buffer when it runs low (its initial capacity).
    read_chunk: usize,
    /// Below this much free room the read buffer grows before a read ([`MIN_READ_ROOM`], or
    /// half the initial capacity when that is smaller, so a small buffer stays small).
    min_room: usize,
    write_buf: BytesMut,
    /// Hand both buffers back whenever they hold nothing ([`Connection::releasing_idle_buffers`]).
    release_idle: bool,
    /// When the first bytes of the incomplete frame at the front of the read buffer were
    /// seen (`None`: the buffer holds no partial frame), for the frame deadline.
    partial_since: Option<Instant>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Wraps a connected stream.
    pub fn new(stream: S) -> Self {
        Self::with_capacity(stream, READ_BUFFER)
    }

    /// Wraps a connected stream with a read buffer of `capacity` bytes to start with (it
    /// grows as frames need).
    pub fn with_capacity(stream: S, capacity: usize) -> Self {
        Connection {
            stream,
            read_buf: BytesMut::with_capacity(capacity),
            read_chunk: capacity.max(1),
            min_room: (capacity / 2).clamp(1, MIN_READ_ROOM),
            // Allocated lazily by `buffer`: an idle session should cost little memory.
            write_buf: BytesMut::new(),
            release_idle: false,
            partial_since: None,
        }
    }

    /// The same connection, holding no buffer while it has nothing to hold: a read that has
    /// to wait with nothing buffered frees the read buffer first (a new one is taken when
    /// bytes come), and a flush frees the write buffer. For connections that are idle most
    /// of their life and many at once (device sessions), where the buffers would be most of
    /// what an idle one costs besides TLS; a busy one pays an allocation per read and per
    /// write, beside a system call each.
    pub fn releasing_idle_buffers(mut self) -> Self {
        self.release_idle = true;
        self.read_buf = BytesMut::new();
        self
    }

    /// Decodes the next frame already in the read buffer, without reading the socket:
    /// `Ok(None)` when no whole frame is buffered. Lets a peer answer a burst of frames
    /// with one write.
    pub fn buffered_frame<T, E>(
        &mut self,
        decode: impl FnOnce(&mut BytesMut) -> Result<Option<T>, E>,
    ) -> Result<Option<T>, E> {
        decode(&mut self.read_buf)
    }

    /// Reads the next frame with `decode`. `Ok(None)` means the peer closed cleanly between
    /// frames. Frames already buffered are returned before the socket is read again.
    ///
    /// Cancel-safe: partial frames stay in the read buffer.
    pub async fn read_frame<T, E>(
        &mut self,
        mut decode: impl FnMut(&mut BytesMut) -> Result<Option<T>, E>,
    ) -> Result<Option<T>, ReadError<E>> {
        loop {
            if let Some(frame) = decode(&mut self.read_buf).map_err(ReadError::Decode)? {
                return Ok(Some(frame));
            }
            if self.read_buf.capacity() - self.read_buf.len() < self.min_room {
                self.read_buf.reserve(self.read_chunk);
            }
            if self.stream.read_buf(&mut self.read_buf).await? == 0 {
                return if self.read_buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Truncated(self.read_buf.len()))
                };
            }
        }
    }

    /// Like [`Connection::read_frame`], with two deadlines: if no frame has begun by
    /// `idle_deadline` it fails with [`TimedReadError::Idle`]; once one has begun it must be
    /// complete within `frame_timeout` of its first bytes, or it fails with
    /// [`TimedReadError::Stalled`]. So a peer's idle clock counts from its last *complete* frame
    /// (the caller moves `idle_deadline` after each one), and a peer dripping a frame a byte
    /// at a time is cut off.
    ///
    /// Cancel-safe: partial frames, and when they began, stay in the connection.
    pub async fn read_frame_within<T, E>(
        &mut self,
        decode: impl FnMut(&mut BytesMut) -> Result<Option<T>, E>,
        idle_deadline: Instant,
        frame_timeout: Duration,
    ) -> Result<Option<T>, TimedReadError<E>> {
        self.read_frame_until(decode, Some(idle_deadline), frame_timeout)
            .await
    }

    /// Like [`Connection::read_frame_within`] without the idle deadline, which the caller
    /// keeps (one timer for the whole session, moved on only when it fires, rather than one
    /// armed for every read): only a frame that has begun has a deadline here, so a read
    /// with nothing under way arms no timer. It never fails with [`TimedReadError::Idle`];
    /// when the caller's idle deadline passes, [`Connection::buffered`] tells an idle peer
    /// (nothing buffered) from a stalled frame.
    ///
    /// Cancel-safe, as [`Connection::read_frame_within`].
    pub async fn read_frame_begun_within<T, E>(
        &mut self,
        decode: impl FnMut(&mut BytesMut) -> Result<Option<T>, E>,
        frame_timeout: Duration,
    ) -> Result<Option<T>, TimedReadError<E>> {
        self.read_frame_until(decode, None, frame_timeout).await
    }

    /// The loop of both: reads until a frame decodes, the peer closes, or a deadline passes
    /// (`idle_deadline` while nothing is under way, if given; `frame_timeout` after a frame's
    /// first bytes). With no deadline running, the read arms no timer at all.
    async fn read_frame_until<T, E>(
        &mut self,
        mut decode: impl FnMut(&mut BytesMut) -> Result<Option<T>, E>,
        idle_deadline: Option<Instant>,
        frame_timeout: Duration,
    ) -> Result<Option<T>, TimedReadError<E>> {
        loop {
            if let Some(frame) = decode(&mut self.read_buf).map_err(ReadError::Decode)? {
                // What follows the frame, if anything, is the start of the next one.
                self.partial_since = (!self.read_buf.is_empty()).then(Instant::now);
                return Ok(Some(frame));
            }
            // Frames taken out through `buffered_frame` may have emptied the buffer since:
            // then no frame is under way, and only the idle deadline runs.
            if self.read_buf.is_empty() {
                self.partial_since = None;
            } else if self.partial_since.is_none() {
                self.partial_since = Some(Instant::now());
            }
            let frame_deadline = self.partial_since.map(|began| began + frame_timeout);
            let deadline = match (idle_deadline, frame_deadline) {
                (Some(idle), Some(frame)) => Some(idle.min(frame)),
                (idle, frame) => idle.or(frame),
            };
            let read = match deadline {
                None => self.read_some().await,
                // Boxed: a timeout holds a timer (over 100 bytes), and a device session's
                // task holds this future for as long as it is idle, when no deadline runs.
                // One allocation per read with a deadline, beside the system call.
                Some(deadline) => {
                    match Box::pin(tokio::time::timeout_at(deadline, self.read_some())).await {
                        Ok(read) => read,
                        Err(_) => {
                            return Err(match self.read_buf.len() {
                                0 => TimedReadError::Idle,
                                buffered => TimedReadError::Stalled {
                                    buffered,
                                    after: frame_timeout,
                                },
                            })
                        }
                    }
                }
            };
            if read.map_err(ReadError::Io)? == 0 {
                return if self.read_buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::Truncated(self.read_buf.len()).into())
                };
            }
        }
    }

    /// One read into the read buffer, grown first if its free room is short; with idle
    /// buffers released, a read that has to wait with nothing buffered frees the buffer
    /// while it waits (and takes one again when it is polled next).
    async fn read_some(&mut self) -> std::io::Result<usize> {
        std::future::poll_fn(|cx| {
            if self.read_buf.capacity() - self.read_buf.len() < self.min_room {
                self.read_buf.reserve(self.read_chunk);
            }
            // tokio's `read_buf` future holds nothing but its two borrows, so one made for
            // each poll is the same read.
            let polled = std::pin::pin!(self.stream.read_buf(&mut self.read_buf)).poll(cx);
            if polled.is_pending() && self.release_idle && self.read_buf.is_empty() {
                self.read_buf = BytesMut::new();
            }
            polled
        })
        .await
    }

    /// Bytes read but not yet taken as a frame: the start of a frame under way, if any.
    pub fn buffered(&self) -> usize {
        self.read_buf.len()
    }

    /// Appends bytes to the write buffer (nothing is sent until [`Connection::flush`]).
    pub fn buffer(&mut self, encode: impl FnOnce(&mut BytesMut)) {
        encode(&mut self.write_buf);
    }

    /// Writes everything buffered in one go and flushes the stream.
    pub async fn flush(&mut self) -> std::io::Result<()> {
        if !self.write_buf.is_empty() {
            self.stream.write_all(&self.write_buf).await?;
            self.write_buf.clear();
            if self.release_idle || self.write_buf.capacity() > 64 * 1024 {
                // Give back a buffer that a burst grew: idle sessions stay small.
                self.write_buf = BytesMut::new();
            }
        }
        self.stream.flush().await
    }

    /// Writes `bytes` immediately.
    pub async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Shuts down the write side (a TLS stream sends close_notify).
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        self.stream.shutdown().await
    }

    /// The underlying stream (to read TLS details).
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The underlying stream, to drain it after an error without framing.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy decoder: one byte length, then that many bytes.
    fn decode(buf: &mut BytesMut) -> Result<Option<Vec<u8>>, String> {
        let Some(&len) = buf.first() else {
            return Ok(None);
        };
        if len > 10 {
            return Err(format!("length {len} over 10"));
        }
        if buf.len() < 1 + len as usize {
            return Ok(None);
        }
        let frame = buf.split_to(1 + len as usize);
        Ok(Some(frame[1..].to_vec()))
    }

    #[tokio::test]
    async fn frames_across_tiny_writes() {
        let (client, server) = tokio::io::duplex(1);
        let mut conn = Connection::new(server);
        let writer = tokio::spawn(async move {
            let mut client = client;
            client
                .write_all(&[3, b'a', b'b', b'c', 0, 1, b'z'])
                .await
                .unwrap();
            client.shutdown().await.unwrap();
        });
        assert_eq!(
            conn.read_frame(decode).await.unwrap(),
            Some(b"abc".to_vec())
        );
        assert_eq!(conn.read_frame(decode).await.unwrap(), Some(vec![]));
        assert_eq!(conn.read_frame(decode).await.unwrap(), Some(b"z".to_vec()));
        assert!(conn.read_frame(decode).await.unwrap().is_none());
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_dripped_frame_is_cut_off_and_silence_is_idle() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut conn = Connection::new(server);
        let far = Instant::now() + Duration::from_secs(3600);
        let frame = Duration::from_millis(30);
        // A whole frame and the first byte of the next: the first is returned...
        client.write_all(&[1, b'a', 5]).await.unwrap();
        assert_eq!(
            conn.read_frame_within(decode, far, frame).await.unwrap(),
            Some(b"a".to_vec())
        );
        // ...and the rest of the second never comes, however long the idle deadline.
        assert!(matches!(
            conn.read_frame_within(decode, far, frame).await,
            Err(TimedReadError::Stalled { buffered: 1, .. })
        ));
        // Nothing at all: the idle deadline, not the frame one.
        let (_client, server) = tokio::io::duplex(64);
        let mut conn = Connection::new(server);
        let soon = Instant::now() + Duration::from_millis(10);
        assert!(matches!(
            conn.read_frame_within(decode, soon, Duration::from_secs(3600))
                .await,
            Err(TimedReadError::Idle)
        ));
    }

    /// Without an idle deadline of its own, a read with nothing under way waits for as
    /// long as the peer is silent (the caller's timer decides), while a frame begun and not
    /// finished is cut off at the frame deadline (paused time).
    #[tokio::test(start_paused = true)]
    async fn only_a_begun_frame_has_a_deadline_in_read_frame_begun_within() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut conn = Connection::new(server);
        let frame = Duration::from_millis(30);
        // Silence for an hour (of paused time): still waiting, no error.
        let waited = tokio::time::timeout(
            Duration::from_secs(3600),
            conn.read_frame_begun_within(decode, frame),
        )
        .await;
        assert!(waited.is_err(), "the read ended by itself: {waited:?}");
        assert_eq!(conn.buffered(), 0);
        // A whole frame and the first byte of the next: the first is returned...
        client.write_all(&[1, b'a', 5]).await.unwrap();
        assert_eq!(
            conn.read_frame_begun_within(decode, frame).await.unwrap(),
            Some(b"a".to_vec())
        );
        assert_eq!(conn.buffered(), 1);
        // ...and the rest of the second never comes: stalled at the frame deadline.
        assert!(matches!(
            conn.read_frame_begun_within(decode, frame).await,
            Err(TimedReadError::Stalled { buffered: 1, .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn frames_taken_from_the_buffer_leave_no_frame_under_way() {
        // Two whole frames in one read: the first is returned (the second, still buffered,
        // counts as begun), the second is taken with `buffered_frame`.
        let (mut client, server) = tokio::io::duplex(64);
        let mut conn = Connection::new(server);
        let far = Instant::now() + Duration::from_secs(3600);
        let frame = Duration::from_millis(30);
        client.write_all(&[1, b'a', 1, b'b']).await.unwrap();
        assert_eq!(
            conn.read_frame_within(decode, far, frame).await.unwrap(),
            Some(b"a".to_vec())
        );
        assert_eq!(conn.buffered_frame(decode).unwrap(), Some(b"b".to_vec()));
        // Silence well past the frame deadline is no stalled frame: the next frame, sent
        // later (in paused time), is read.
        let late = tokio::spawn(async move {
            tokio::time::sleep(frame * 10).await;
            client.write_all(&[1, b'c']).await.unwrap();
            client
        });
        assert_eq!(
            conn.read_frame_within(decode, far, frame).await.unwrap(),
            Some(b"c".to_vec())
        );
        drop(late.await.unwrap());
    }

    /// With idle buffers released, a read waiting with nothing buffered holds no read
    /// buffer and a flush leaves no write buffer, while a frame under way keeps its bytes;
    /// reads after a release work as before.
    #[tokio::test]
    async fn idle_buffers_are_released_and_partial_frames_kept() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut conn = Connection::with_capacity(server, 512).releasing_idle_buffers();
        let frame = Duration::from_secs(3600);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        client.write_all(&[1, b'a']).await.unwrap();
        assert_eq!(
            conn.read_frame_begun_within(decode, frame).await.unwrap(),
            Some(b"a".to_vec())
        );
        {
            let waiting = std::pin::pin!(conn.read_frame_begun_within(decode, frame));
            assert!(waiting.poll(&mut cx).is_pending());
        }
        assert_eq!(conn.read_buf.capacity(), 0, "an idle read holds no buffer");
        conn.buffer(|b| b.extend_from_slice(b"xy"));
        conn.flush().await.unwrap();
        assert_eq!(
            conn.write_buf.capacity(),
            0,
            "a flush hands its buffer back"
        );
        // The start of a frame: kept while the rest is awaited.
        client.write_all(&[3, b'b']).await.unwrap();
        {
            let waiting = std::pin::pin!(conn.read_frame_begun_within(decode, frame));
            assert!(waiting.poll(&mut cx).is_pending());
        }
        assert_eq!(conn.buffered(), 2);
        client.write_all(b"cd").await.unwrap();
        assert_eq!(
            conn.read_frame_begun_within(decode, frame).await.unwrap(),
            Some(b"bcd".to_vec())
        );
    }

    #[tokio::test]
    async fn truncated_and_rejected() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut conn = Connection::new(server);
        client.write_all(&[5, b'a']).await.unwrap();
        drop(client);
        assert!(matches!(
            conn.read_frame(decode).await,
            Err(ReadError::Truncated(2))
        ));

        let (mut client, server) = tokio::io::duplex(64);
        let mut conn = Connection::new(server);
        client.write_all(&[200]).await.unwrap();
        assert!(matches!(
            conn.read_frame(decode).await,
            Err(ReadError::Decode(e)) if e.contains("200")
        ));
    }
}
