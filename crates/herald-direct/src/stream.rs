//! The byte stream under a direct connection, plain TCP or TLS over TCP, and its two halves:
//! the read side a connection's reader owns, the write side its writers share.
//!
//! A TCP write side is written without waiting (`try_write`) by whichever task has a frame
//! (`conn_writer.rs`); a TLS one cannot be, because rustls's state is shared between the halves
//! and a record must be written whole, so its writes go through an async lock and the
//! connection's writer task.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

type Tls = tokio_rustls::TlsStream<TcpStream>;

/// A connection's stream before it is split: what the handshakes run on.
pub(crate) enum Stream {
    Tcp(TcpStream),
    Tls(Box<Tls>),
}

impl Stream {
    pub(crate) fn split(self) -> (ReadSide, WriteSide) {
        match self {
            Stream::Tcp(tcp) => {
                let (r, w) = tcp.into_split();
                (ReadSide::Tcp(r), WriteSide::Tcp(w))
            }
            Stream::Tls(tls) => {
                let (r, w) = tokio::io::split(*tls);
                (ReadSide::Tls(r), WriteSide::Tls(tokio::sync::Mutex::new(w)))
            }
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The read half of a connection.
pub(crate) enum ReadSide {
    Tcp(OwnedReadHalf),
    Tls(ReadHalf<Tls>),
}

impl AsyncRead for ReadSide {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadSide::Tcp(r) => Pin::new(r).poll_read(cx, buf),
            ReadSide::Tls(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

/// The write half of a connection, shared by the tasks that write to it.
pub(crate) enum WriteSide {
    Tcp(OwnedWriteHalf),
    /// Held for a whole `write_all` and flush, so records of two frames never interleave.
    Tls(tokio::sync::Mutex<WriteHalf<Tls>>),
}

impl WriteSide {
    /// One write without waiting. A TLS side always answers `WouldBlock`: its frames go through
    /// [`WriteSide::write_all`].
    pub(crate) fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            WriteSide::Tcp(w) => w.try_write(bytes),
            WriteSide::Tls(_) => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Waits until a TCP side can take bytes; a TLS side is always ready for
    /// [`WriteSide::write_all`].
    pub(crate) async fn writable(&self) -> io::Result<()> {
        match self {
            WriteSide::Tcp(w) => w.writable().await,
            WriteSide::Tls(_) => Ok(()),
        }
    }

    pub(crate) fn is_tls(&self) -> bool {
        matches!(self, WriteSide::Tls(_))
    }

    /// Writes all of `bytes`, waiting for room, and flushes them to the socket. The writers of
    /// a TCP side call it only where no inline write can land in between.
    pub(crate) async fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        match self {
            WriteSide::Tcp(w) => {
                let mut written = 0;
                while written < bytes.len() {
                    w.writable().await?;
                    match w.try_write(&bytes[written..]) {
                        Ok(n) => written += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            WriteSide::Tls(w) => {
                let mut w = w.lock().await;
                w.write_all(bytes).await?;
                w.flush().await
            }
        }
    }
}
