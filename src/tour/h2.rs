//! The tour's HTTP/2 provider: an `h2` client whose TLS stream is wrapped in a recorder, so
//! the tour can show the HTTP/2 bytes it wrote and read (the plaintext inside TLS, as the
//! provider's HTTP/2 library sees them), frame by frame, with `protocol::h2wire`'s labels.
//!
//! `client::http2::Http2Client` opens its own stream and keeps it; the tour needs the stream
//! in its hands, so it runs the same handshake here over the recorder and reads the answer
//! with the same `client::http2::read_response`. Nothing is re-encoded: the bytes shown are
//! those that went through the stream.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::task::JoinHandle;

use super::TourError;
use crate::client;
use crate::client::http2::{read_response, Http2Request, Http2Response};

/// Most bytes the recorder keeps of one connection, both directions together: the tour's
/// exchange is about a kilobyte; past this, chunks are counted, not kept.
const MAX_RECORDED: usize = 256 * 1024;
/// How long the tour waits for its request's answer, and for the connection to close.
const H2_TIMEOUT: Duration = Duration::from_secs(10);

/// Which way a recorded chunk went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dir {
    /// Written by the provider.
    Sent,
    /// Read by the provider.
    Received,
}

/// What the recorder saw, in the order it happened.
#[derive(Debug, Default)]
struct Transcript {
    /// Chunks as each read or write moved them.
    chunks: Vec<(Dir, Vec<u8>)>,
    /// Bytes kept in `chunks`.
    kept: usize,
    /// Bytes that went by after [`MAX_RECORDED`] was reached.
    dropped: usize,
}

impl Transcript {
    fn record(&mut self, dir: Dir, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.kept + bytes.len() > MAX_RECORDED {
            self.dropped += bytes.len();
            return;
        }
        self.kept += bytes.len();
        self.chunks.push((dir, bytes.to_vec()));
    }
}

/// A stream that records what goes through it.
struct Recorder<S> {
    inner: S,
    log: Arc<Mutex<Transcript>>,
}

impl<S> Recorder<S> {
    fn record(&self, dir: Dir, bytes: &[u8]) {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(dir, bytes);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Recorder<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) {
            self.record(
                Dir::Received,
                buf.filled().get(before..).unwrap_or_default(),
            );
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recorder<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            // Only what the stream took was written; the rest is offered again.
            self.record(Dir::Sent, buf.get(..n).unwrap_or_default());
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One recorded HTTP/2 connection to the provider API.
pub(super) struct TourH2 {
    send: SendRequest<Bytes>,
    connection: JoinHandle<Result<(), h2::Error>>,
    log: Arc<Mutex<Transcript>>,
    /// Chunks already handed out by [`TourH2::take`].
    taken: usize,
    authority: String,
}

impl TourH2 {
    /// Connects with TLS (`tls` offers ALPN h2 and carries the provider certificate) and
    /// runs the HTTP/2 handshake over the recorder.
    pub(super) async fn connect(
        addr: &str,
        server_name: &str,
        tls: Arc<ClientConfig>,
    ) -> Result<Self, TourError> {
        let failed = |e: String| TourError::Failed(format!("the HTTP/2 connection failed: {e}"));
        let stream = client::connect_tls(addr, server_name, tls)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let log = Arc::new(Mutex::new(Transcript::default()));
        let io = Recorder {
            inner: stream,
            log: log.clone(),
        };
        let (send, connection) = h2::client::handshake(io)
            .await
            .map_err(|e| failed(e.to_string()))?;
        Ok(TourH2 {
            send,
            connection: tokio::spawn(connection),
            log,
            taken: 0,
            authority: server_name.to_owned(),
        })
    }

    /// Sends `request` (its body in one DATA frame) and reads the whole answer.
    pub(super) async fn send(
        &mut self,
        request: &Http2Request,
    ) -> Result<Http2Response, TourError> {
        let failed = |e: String| TourError::Failed(format!("the HTTP/2 push failed: {e}"));
        let head = request
            .build(&self.authority)
            .map_err(|e| failed(e.to_string()))?;
        let work = async {
            let mut ready = self.send.clone().ready().await?;
            let (response, mut body) = ready.send_request(head, request.body.is_empty())?;
            if !request.body.is_empty() {
                body.send_data(request.body.clone(), true)?;
            }
            Ok::<_, h2::Error>(response)
        };
        let response = work.await.map_err(|e| failed(e.to_string()))?;
        tokio::time::timeout(H2_TIMEOUT, read_response(response))
            .await
            .map_err(|_| failed(format!("no answer within {H2_TIMEOUT:?}")))?
            .map_err(|e| failed(e.to_string()))
    }

    /// The chunks recorded since the last call, in order.
    pub(super) fn take(&mut self) -> Vec<(Dir, Vec<u8>)> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        let new = log.chunks.get(self.taken..).unwrap_or_default().to_vec();
        self.taken = log.chunks.len();
        new
    }

    /// Bytes that went by unrecorded, past [`MAX_RECORDED`].
    pub(super) fn unrecorded(&self) -> usize {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).dropped
    }

    /// Lets go of the connection and waits for it to end: with no request handle and no
    /// stream left, `h2` says GOAWAY (NO_ERROR) and closes it. Returns the chunks recorded
    /// since the last [`TourH2::take`], the closing ones among them.
    pub(super) async fn close(self) -> Result<Vec<(Dir, Vec<u8>)>, TourError> {
        let TourH2 {
            send,
            mut connection,
            log,
            taken,
            ..
        } = self;
        drop(send);
        if tokio::time::timeout(H2_TIMEOUT, &mut connection)
            .await
            .is_err()
        {
            connection.abort();
            return Err(TourError::Failed(format!(
                "the HTTP/2 connection did not close within {H2_TIMEOUT:?}"
            )));
        }
        // How the connection task ended (a reset after the close, say) changes nothing the
        // tour shows: the bytes are what it reports.
        let log = log.lock().unwrap_or_else(|p| p.into_inner());
        Ok(log.chunks.get(taken..).unwrap_or_default().to_vec())
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Through a pipe of 8 bytes, writes are taken in part: only what the stream took is
    /// recorded, and reads are recorded as they arrive, in order.
    #[tokio::test]
    async fn the_recorder_keeps_exactly_what_went_through_in_order() {
        let (near, mut far) = tokio::io::duplex(8);
        let log = Arc::new(Mutex::new(Transcript::default()));
        let mut io = Recorder {
            inner: near,
            log: log.clone(),
        };
        let sent: Vec<u8> = (0..20).collect();
        let writer = async {
            io.write_all(&sent).await.unwrap();
            let mut answer = [0u8; 3];
            io.read_exact(&mut answer).await.unwrap();
            answer
        };
        let peer = async {
            let mut got = vec![0u8; 20];
            far.read_exact(&mut got).await.unwrap();
            far.write_all(b"abc").await.unwrap();
            got
        };
        let (answer, got) = tokio::join!(writer, peer);
        assert_eq!(got, sent);
        assert_eq!(&answer, b"abc");
        let log = log.lock().unwrap();
        let written: Vec<u8> = log
            .chunks
            .iter()
            .filter(|(d, _)| *d == Dir::Sent)
            .flat_map(|(_, b)| b.clone())
            .collect();
        assert_eq!(written, sent);
        assert!(
            log.chunks.iter().all(|(_, b)| b.len() <= 8),
            "{:?}",
            log.chunks
        );
        assert_eq!(
            log.chunks.last().unwrap(),
            &(Dir::Received, b"abc".to_vec())
        );
        assert_eq!((log.kept, log.dropped), (23, 0));
    }

    #[test]
    fn past_the_bound_chunks_are_counted_not_kept() {
        let mut t = Transcript::default();
        t.record(Dir::Sent, &vec![0; MAX_RECORDED]);
        t.record(Dir::Received, b"one more");
        t.record(Dir::Received, b"");
        assert_eq!(t.chunks.len(), 1);
        assert_eq!((t.kept, t.dropped), (MAX_RECORDED, 8));
    }
}
