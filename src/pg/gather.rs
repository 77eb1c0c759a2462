//! Reading a connection's socket on a thread of its own, gathering messages
//! that arrive close together into one read.
//!
//! Under a commit-heavy load the walsender sends a small XLogData message for
//! every WAL flush, thousands a second. On tokio's reactor each one wakes the
//! runtime (the socket is registered edge-triggered for its lifetime, so even
//! a task that deliberately waits before reading is woken per message), and
//! those wake-ups, not the work, were the largest part of `walship stream`'s
//! CPU. A thread blocked in `recv` can instead sleep a few milliseconds after
//! a small read and let the kernel queue what follows: one wake-up and one
//! read per gathering interval, as many messages as arrived.
//!
//! [`GatheringSocket`] is the connection's transport once streaming starts:
//! reads come from the thread through a bounded channel (memory stays bounded:
//! a full channel stops the thread reading, the socket's buffer fills and the
//! server waits), writes (standby status updates, CopyDone) go straight to the
//! socket, which PostgreSQL reads promptly even while it waits to send. Over
//! TLS the thread also decrypts; the session is shared by both directions
//! under a lock, never held while waiting for the network, and every write
//! to the socket is made under it so that records never interleave.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use socket2::Socket;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;

/// A read that finds at least this much waiting means the server is sending
/// fast: read on at once (waiting could let the socket's buffer, ~200 KiB on
/// a Unix socket, fill and hold the server back).
pub const GATHER_BELOW: usize = 64 * 1024;
/// Room for each read.
const READ_ROOM: usize = 256 * 1024;
/// The most one hand-over carries (5 ms of WAL at 100 MB/s).
const CHUNK_MAX: usize = 512 * 1024;
/// Hand-overs in flight between the thread and the connection (memory bound:
/// about this many times [`CHUNK_MAX`], plus the one being read).
const IN_FLIGHT: usize = 2;
/// A status update that cannot be written for this long means the server is
/// gone: the write fails instead of holding up the runtime.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// What the connection runs on, taken off the reactor: a socket, with the
/// TLS session over it when there is one.
#[derive(Debug)]
pub struct Taken {
    /// The socket (TCP or Unix-domain).
    pub socket: Socket,
    /// The TLS session (its buffered records and plaintext included).
    pub tls: Option<rustls::ClientConnection>,
}

type Session = Arc<Mutex<rustls::ClientConnection>>;

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"))
}

fn lock(session: &Session) -> io::Result<std::sync::MutexGuard<'_, rustls::ClientConnection>> {
    session
        .lock()
        .map_err(|_| io::Error::other("the TLS session was poisoned by a panic"))
}

/// Sends what the session has to send (under its lock).
fn write_tls(conn: &mut rustls::ClientConnection, mut socket: &Socket) -> io::Result<()> {
    while conn.wants_write() {
        conn.write_tls(&mut socket)?;
    }
    Ok(())
}

/// Decrypts the records in `records` into `plain`; true when the server
/// closed the session (close_notify).
fn decrypt(
    session: &Session,
    socket: &Socket,
    mut records: &[u8],
    plain: &mut BytesMut,
) -> io::Result<bool> {
    let mut conn = lock(session)?;
    let mut closed = false;
    loop {
        if !records.is_empty() {
            conn.read_tls(&mut records)?;
        }
        let state = conn.process_new_packets().map_err(tls_error)?;
        let mut want = state.plaintext_bytes_to_read();
        while want > 0 {
            let at = plain.len();
            plain.resize(at + want, 0);
            let n = conn.reader().read(&mut plain[at..])?;
            plain.truncate(at + n);
            if n == 0 {
                break;
            }
            want -= n;
        }
        closed |= state.peer_has_closed();
        if records.is_empty() {
            break;
        }
    }
    // Key updates and alerts the session answers by itself.
    write_tls(&mut conn, socket)?;
    Ok(closed)
}

/// `recv` into `buf`'s spare room; `wait` false returns `WouldBlock` rather
/// than waiting for data. Ok(0) is the end of the stream.
fn recv(socket: &Socket, buf: &mut BytesMut, wait: bool) -> io::Result<usize> {
    buf.reserve(READ_ROOM);
    let flags = if wait { 0 } else { libc::MSG_DONTWAIT };
    loop {
        // SAFETY: the spare room is only written by `recv`, never read.
        let spare = unsafe { buf.chunk_mut().as_uninit_slice_mut() };
        match socket.recv_with_flags(spare, flags) {
            Ok(n) => {
                // SAFETY: the kernel initialised the first `n` bytes of the spare room.
                unsafe { buf.advance_mut(n) };
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The reading thread: a blocking read; after a small one, `wait` for more
/// to queue up; then whatever is there without blocking, handed over at once
/// (decrypted first over TLS).
fn read_loop(
    socket: Arc<Socket>,
    tls: Option<Session>,
    tx: mpsc::Sender<io::Result<Bytes>>,
    wait: Duration,
) {
    let mut buf = BytesMut::new();
    let mut plain = BytesMut::new();
    loop {
        let first = match recv(&socket, &mut buf, true) {
            Ok(0) => return, // the end: dropping `tx` tells the reader
            Ok(n) => n,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        if first < GATHER_BELOW && !wait.is_zero() {
            std::thread::sleep(wait);
        }
        let mut end = None;
        while buf.len() < CHUNK_MAX {
            match recv(&socket, &mut buf, false) {
                Ok(0) => {
                    end = Some(Ok(()));
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    end = Some(Err(e));
                    break;
                }
            }
        }
        let chunk = match &tls {
            None => buf.split().freeze(),
            Some(session) => {
                let closed = decrypt(session, &socket, &buf, &mut plain);
                buf.clear();
                match closed {
                    Ok(closed) => {
                        if closed {
                            end.get_or_insert(Ok(()));
                        }
                        plain.split().freeze()
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
        };
        // (TLS records that carried no data, such as a session ticket, give none.)
        if !chunk.is_empty() && tx.blocking_send(Ok(chunk)).is_err() {
            return; // the connection is gone
        }
        match end {
            None => {}
            Some(Ok(())) => return,
            Some(Err(e)) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
    }
}

/// A connection's transport whose reads a thread of its own does (see the
/// module documentation). Dropping it shuts the socket down, which ends the
/// thread.
#[derive(Debug)]
pub struct GatheringSocket {
    socket: Arc<Socket>,
    tls: Option<Session>,
    rx: mpsc::Receiver<io::Result<Bytes>>,
    /// What the last hand-over holds that was not read yet.
    pending: Bytes,
}

impl GatheringSocket {
    /// Starts the reading thread on `taken` (its socket made blocking here),
    /// which waits `wait` after every read that found less than
    /// [`GATHER_BELOW`].
    pub fn start(taken: Taken, wait: Duration) -> io::Result<GatheringSocket> {
        taken.socket.set_nonblocking(false)?;
        taken.socket.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let socket = Arc::new(taken.socket);
        let tls = taken.tls.map(|c| Arc::new(Mutex::new(c)));
        let (tx, rx) = mpsc::channel(IN_FLIGHT);
        let (reader, reader_tls) = (socket.clone(), tls.clone());
        std::thread::Builder::new()
            .name("walship-recv".into())
            .spawn(move || read_loop(reader, reader_tls, tx, wait))?;
        Ok(GatheringSocket {
            socket,
            tls,
            rx,
            pending: Bytes::new(),
        })
    }

    /// Encrypts `buf` when the connection has TLS, and sends it.
    fn send(&self, buf: &[u8]) -> io::Result<usize> {
        let Some(session) = &self.tls else {
            return self.socket.send(buf);
        };
        let mut conn = lock(session)?;
        conn.writer().write_all(buf)?;
        write_tls(&mut conn, &self.socket)?;
        Ok(buf.len())
    }

    fn close(&self) {
        if let Some(session) = &self.tls {
            if let Ok(mut conn) = lock(session) {
                conn.send_close_notify();
                let _ = write_tls(&mut conn, &self.socket);
            }
        }
        shut_down(&self.socket);
    }
}

/// Unblocks the reading thread; an already closed socket is fine.
fn shut_down(socket: &Socket) {
    let _ = socket.shutdown(Shutdown::Both);
}

impl Drop for GatheringSocket {
    fn drop(&mut self) {
        shut_down(&self.socket);
    }
}

impl AsyncRead for GatheringSocket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.pending.is_empty() {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(chunk))) => self.pending = chunk,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(None) => return Poll::Ready(Ok(())), // end of stream
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = self.pending.len().min(out.remaining());
        out.put_slice(&self.pending[..n]);
        self.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for GatheringSocket {
    /// Writes at once: what the connection sends while streaming is a few
    /// dozen bytes now and then, and the server keeps reading them.
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(self.send(buf))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.close();
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn pair() -> (GatheringSocket, std::os::unix::net::UnixStream) {
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let g = GatheringSocket::start(
            Taken {
                socket: std::os::fd::OwnedFd::from(a).into(),
                tls: None,
            },
            Duration::from_millis(5),
        )
        .expect("start the reading thread");
        (g, b)
    }

    #[tokio::test]
    async fn delivers_every_byte_in_order_then_the_end() {
        let (mut g, mut peer) = pair();
        let sender = std::thread::spawn(move || {
            // Small messages with pauses (gathered) and a large burst (not).
            let mut sent = Vec::new();
            for i in 0..200u32 {
                let piece: Vec<u8> = (0..(i % 7 + 1) * 100).map(|j| (i + j) as u8).collect();
                peer.write_all(&piece).expect("write");
                sent.extend_from_slice(&piece);
                if i % 50 == 0 {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            let big: Vec<u8> = (0..3_000_000u32).map(|j| (j % 251) as u8).collect();
            peer.write_all(&big).expect("write");
            sent.extend_from_slice(&big);
            sent // dropping `peer` ends the stream
        });
        let mut got = Vec::new();
        g.read_to_end(&mut got).await.expect("read to the end");
        let sent = sender.join().expect("sender");
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "the bytes differ from what was sent");
    }

    #[tokio::test]
    async fn writes_reach_the_peer_and_drop_ends_the_thread() {
        let (mut g, mut peer) = pair();
        g.write_all(b"status").await.expect("write");
        let mut buf = [0u8; 6];
        std::io::Read::read_exact(&mut peer, &mut buf).expect("peer reads");
        assert_eq!(&buf, b"status");
        drop(g);
        // The socket is shut down: the peer sees the end, not a hang.
        let mut rest = Vec::new();
        std::io::Read::read_to_end(&mut peer, &mut rest).expect("peer reads the end");
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn a_reset_connection_is_an_error_not_an_end() {
        let (a, b) = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| {
                let c = std::net::TcpStream::connect(l.local_addr()?)?;
                let (s, _) = l.accept()?;
                Ok((c, s))
            })
            .expect("a TCP pair");
        let mut g = GatheringSocket::start(
            Taken {
                socket: std::os::fd::OwnedFd::from(a).into(),
                tls: None,
            },
            Duration::from_millis(5),
        )
        .expect("start the reading thread");
        // Unread data at close makes the kernel send a reset.
        let s2 = socket_with_linger_zero(b);
        drop(s2);
        let mut buf = Vec::new();
        let r = g.read_to_end(&mut buf).await;
        assert!(r.is_err(), "a reset must be reported, got {r:?}");
    }

    fn socket_with_linger_zero(s: std::net::TcpStream) -> std::net::TcpStream {
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .expect("SO_LINGER");
        s
    }
}
