//! The publisher's datagrams: one UDP socket, sent to without the runtime watching it, and
//! batches handed to the kernel with `sendmmsg`.

use std::net::SocketAddr;

use bytes::BytesMut;

use super::Publisher;
use crate::error::DatagramError;
use crate::event::Message;

#[derive(Default)]
pub(super) struct DatagramScratch {
    buf: BytesMut,
    /// The frame of a datagram being sealed.
    frame: BytesMut,
    targets: Vec<(SocketAddr, u64)>,
}

/// The publisher's UDP socket: non-blocking, and not watched by the runtime. A socket registered
/// with the runtime's epoll gets a write-space event each time the kernel frees the buffer of a
/// sent datagram, which on loopback happens inside every send: each datagram would wake the
/// runtime's thread for nothing. Sends go straight to the kernel; only when its send buffer is
/// full is the socket registered, for as long as it takes to become writable again.
pub(super) struct DatagramSocket {
    socket: std::net::UdpSocket,
    /// One registration at a time: the same descriptor cannot be added to epoll twice.
    wait: tokio::sync::Mutex<()>,
}

impl DatagramSocket {
    pub(super) fn bind() -> std::io::Result<DatagramSocket> {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
        socket.set_nonblocking(true)?;
        let _ = socket2::SockRef::from(&socket).set_send_buffer_size(4 * 1024 * 1024);
        Ok(DatagramSocket {
            socket,
            wait: tokio::sync::Mutex::new(()),
        })
    }

    /// Sends one datagram, waiting for room in the send buffer if it is full.
    async fn send_to(&self, buf: &[u8], addr: SocketAddr) -> std::io::Result<usize> {
        loop {
            match self.socket.send_to(buf, addr) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => self.writable().await?,
                done => return done,
            }
        }
    }

    /// Waits until the socket can take a datagram again.
    async fn writable(&self) -> std::io::Result<()> {
        use std::os::fd::AsFd;
        let _turn = self.wait.lock().await;
        // Registered edge-triggered; epoll reports a socket that is writable already at once, so
        // room freed between the failed send and this registration is not missed.
        // SAFETY: the descriptor is `self.socket`'s, which the borrow keeps open and unchanged
        // until `fd` is dropped at the end of this function, and a BorrowedFd returns that same
        // descriptor on every call.
        let fd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(
                self.socket.as_fd(),
                tokio::io::Interest::WRITABLE,
            )
        }?;
        let _ready = fd.writable().await?;
        Ok(())
    }
}

impl Publisher {
    /// Sends one datagram to one member of every group serving the topic; returns how many
    /// datagrams left (one per group). Loss is counted by the receivers, not reported here.
    pub async fn send_datagram(&self, message: Message) -> Result<usize, DatagramError> {
        let shared = self.shared();
        let mut event = shared.datagram_event(message)?;
        let mut scratch = std::mem::take(&mut *shared.datagram_scratch.lock());
        scratch.targets.clear();
        shared.datagram_targets(&event.topic, &mut scratch.targets);
        if scratch.targets.is_empty() {
            return Err(DatagramError::NoLiveMember {
                topic: event.topic.clone(),
            });
        }
        let mut sent = 0;
        for &(addr, seq) in &scratch.targets {
            event.seq = seq;
            if let Some(n) = shared.config.drop_every_nth_datagram
                && n > 0
                && seq % n == 0
            {
                continue;
            }
            scratch.buf.clear();
            shared.encode_datagram(&event, &mut scratch.frame, &mut scratch.buf);
            shared.udp.send_to(&scratch.buf, addr).await?;
            sent += 1;
        }
        *shared.datagram_scratch.lock() = scratch;
        Ok(sent)
    }

    /// Sends a batch of datagrams, each to one member of every group serving its topic, handing
    /// up to [`DATAGRAM_BATCH_MAX`] of them to the kernel per system call (`sendmmsg`); returns
    /// how many datagrams left. A producer with many events at hand pays one system call per
    /// batch instead of one per datagram.
    ///
    /// Every message is checked before any is sent: an invalid or oversized one fails the whole
    /// call with nothing sent. A send error after part of the batch left returns the error;
    /// the sequence numbers of the datagrams that did not leave are used up, so the receivers
    /// count them as lost.
    pub async fn send_datagrams(
        &self,
        messages: impl IntoIterator<Item = Message>,
    ) -> Result<usize, DatagramError> {
        let shared = self.shared();
        let mut events = Vec::new();
        for message in messages {
            events.push(shared.datagram_event(message)?);
        }
        let mut batch = DatagramBatch::default();
        let mut frame_scratch = BytesMut::new();
        let mut targets = Vec::new();
        let mut sent = 0;
        for mut event in events {
            targets.clear();
            shared.datagram_targets(&event.topic, &mut targets);
            if targets.is_empty() {
                return Err(DatagramError::NoLiveMember {
                    topic: event.topic.clone(),
                });
            }
            for &(addr, seq) in &targets {
                event.seq = seq;
                if let Some(n) = shared.config.drop_every_nth_datagram
                    && n > 0
                    && seq % n == 0
                {
                    continue;
                }
                let start = batch.buf.len();
                shared.encode_datagram(&event, &mut frame_scratch, &mut batch.buf);
                batch.datagrams.push((start, batch.buf.len(), addr));
                if batch.datagrams.len() == DATAGRAM_BATCH_MAX {
                    sent += batch.flush(&shared.udp).await?;
                }
            }
        }
        sent += batch.flush(&shared.udp).await?;
        Ok(sent)
    }
}

/// Datagrams handed to the kernel in one `sendmmsg` call at most.
pub const DATAGRAM_BATCH_MAX: usize = 64;

/// Encoded datagrams waiting for one `sendmmsg`: one buffer, and each datagram's byte range
/// and destination. Holds at most [`DATAGRAM_BATCH_MAX`] datagrams.
#[derive(Default)]
struct DatagramBatch {
    buf: BytesMut,
    datagrams: Vec<(usize, usize, SocketAddr)>,
}

impl DatagramBatch {
    /// Sends every datagram in the batch (several calls if the kernel takes part of it) and
    /// empties it; returns how many were sent.
    async fn flush(&mut self, udp: &DatagramSocket) -> std::io::Result<usize> {
        let mut done = 0;
        while done < self.datagrams.len() {
            match sendmmsg(&udp.socket, &self.buf, &self.datagrams[done..]) {
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => udp.writable().await?,
                Err(e) => return Err(e),
            }
        }
        self.buf.clear();
        self.datagrams.clear();
        Ok(done)
    }
}

/// One non-blocking `sendmmsg` of `datagrams` (ranges of `buf`); returns how many the kernel
/// took (at least one) or the error (`WouldBlock` when the send buffer is full).
fn sendmmsg(
    udp: &std::net::UdpSocket,
    buf: &[u8],
    datagrams: &[(usize, usize, SocketAddr)],
) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let addrs: Vec<socket2::SockAddr> = datagrams
        .iter()
        .map(|&(_, _, addr)| socket2::SockAddr::from(addr))
        .collect();
    let mut iovs: Vec<libc::iovec> = datagrams
        .iter()
        .map(|&(start, end, _)| libc::iovec {
            // The kernel only reads through this pointer (sendmmsg does not write to iov_base).
            iov_base: buf[start..end].as_ptr() as *mut libc::c_void,
            iov_len: end - start,
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .zip(&addrs)
        .map(|(iov, addr)| {
            // SAFETY: msghdr is a plain C struct for which all-zero bytes are a valid value
            // (null pointers, zero lengths); the fields used are set below.
            let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
            hdr.msg_name = addr.as_ptr() as *mut libc::c_void;
            hdr.msg_namelen = addr.len();
            hdr.msg_iov = iov as *mut libc::iovec;
            hdr.msg_iovlen = 1;
            libc::mmsghdr {
                msg_hdr: hdr,
                msg_len: 0,
            }
        })
        .collect();
    let count = libc::c_uint::try_from(msgs.len()).unwrap_or(libc::c_uint::MAX);
    // SAFETY: `msgs` holds `count` initialised headers whose name, iovec and data pointers
    // point into `addrs`, `iovs` and `buf`, all alive and unmoved until the call returns.
    let n = unsafe {
        libc::sendmmsg(
            udp.as_raw_fd(),
            msgs.as_mut_ptr(),
            count,
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if n == 0 {
        // sendmmsg reports an error rather than 0 when nothing was sent; should it ever return
        // 0, wait for writability again instead of counting a datagram that did not leave.
        return Err(std::io::ErrorKind::WouldBlock.into());
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::DatagramSocket;

    #[tokio::test]
    async fn waiting_for_room_registers_one_waiter_at_a_time_and_sends_after() {
        let socket = DatagramSocket::bind().unwrap();
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = receiver.local_addr().unwrap();
        // Two waits at once: the second must not try to add the same descriptor to epoll while
        // the first holds it (that would fail with EEXIST); both see the idle socket writable.
        let (a, b) = tokio::join!(socket.writable(), socket.writable());
        a.unwrap();
        b.unwrap();
        // The registration is gone again, so sends still go straight out.
        assert_eq!(socket.send_to(b"after", addr).await.unwrap(), 5);
        let mut buf = [0u8; 16];
        let (n, _) = receiver.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"after");
    }
}
