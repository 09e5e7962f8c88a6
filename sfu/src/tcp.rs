//! ICE-TCP (RFC 6544) for clients whose UDP is blocked: each worker also
//! listens on TCP (on a port number other than its UDP port's: see
//! `SfuConfig::tcp_port`), and every peer's SDP carries a passive TCP host
//! candidate there. A client's ICE agent dials it (its
//! candidate is active) and both sides frame every packet as RFC 4571 §2
//! says: a 2-byte big-endian length, then the STUN, DTLS, RTP or RTCP
//! packet. Its pairs have lower priority than UDP's (type preference 90
//! against 126), so a client uses it only when UDP fails.
//!
//! Sockets live in small tasks; the worker owns the connection table
//! ([`Conns`]) and decides everything else. One acceptor per worker
//! refuses connections over [`MAX_CONNECTIONS`]; per connection, a reader
//! deframes ([`FrameDecoder`]) and hands each packet to the worker, and a
//! writer writes whole frames from a bounded queue. The worker gives a
//! connection to a peer by the same first-contact rule as a UDP address,
//! and closes it (by dropping its [`Link`]) when the first frame breaks
//! that rule, when nothing valid came for [`FIRST_CONTACT_TIMEOUT`], or
//! when its peer is removed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::metrics::{Metrics, TcpRefusal};

/// The length prefix (RFC 4571 §2).
const HEADER: usize = 2;
/// The largest packet a client may send in one frame: the largest
/// datagram the UDP path reads. ICE, DTLS and RTP packets stay under the
/// path MTU; a longer frame closes the connection.
pub(crate) const MAX_FRAME: usize = 2048;
/// Open TCP connections per worker; the acceptor closes any beyond it.
pub(crate) const MAX_CONNECTIONS: usize = 4096;
/// A connection whose first frame has not given it to a peer this long
/// after it was accepted is closed.
pub(crate) const FIRST_CONTACT_TIMEOUT: Duration = Duration::from_secs(5);
/// What the acceptor and the readers may queue for their worker; a full
/// queue holds the readers back (TCP flow control does the rest).
pub(crate) const INPUT_QUEUE: usize = 1024;
/// Frames waiting for one connection's writer (about half a second of a
/// video subscription). Beyond it a packet is dropped, as a congested UDP
/// path would lose it: late media is no use, and memory stays bounded.
const WRITE_QUEUE: usize = 128;
/// Bytes asked for per read.
const READ_BUF: usize = 4096;
/// Queued frames coalesced into one write, at most this many bytes.
const WRITE_COALESCE: usize = 16 * 1024;

/// Why a byte stream is not framing this SFU accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// A frame of length 0: RFC 4571 allows it, but no ICE packet is empty.
    Empty,
    /// A frame longer than [`MAX_FRAME`] (its length).
    Oversize(usize),
}

/// Splits a TCP byte stream into RFC 4571 frames. It holds at most one
/// unfinished frame, so never more than `2 + MAX_FRAME` bytes.
#[derive(Debug, Default)]
pub(crate) struct FrameDecoder {
    partial: Vec<u8>,
}

impl FrameDecoder {
    /// Takes the bytes one read returned and hands each frame they
    /// complete to `frame`, in order. After an error the stream is
    /// unusable: the caller closes the connection.
    pub(crate) fn feed(
        &mut self,
        mut input: &[u8],
        mut frame: impl FnMut(&[u8]),
    ) -> Result<(), FrameError> {
        while !input.is_empty() {
            if self.partial.is_empty() {
                // Whole frames straight from the input, without a copy.
                if let [hi, lo, rest @ ..] = input {
                    let len = frame_len(*hi, *lo)?;
                    if let Some(body) = rest.get(..len) {
                        frame(body);
                        input = &rest[len..];
                        continue;
                    }
                }
                // Less than one frame (its length already checked).
                self.partial.extend_from_slice(input);
                return Ok(());
            }
            let len = match self.partial[..] {
                [hi] => {
                    let len = frame_len(hi, input[0])?;
                    self.partial.push(input[0]);
                    input = &input[1..];
                    len
                }
                [hi, lo, ..] => frame_len(hi, lo)?,
                [] => continue, // not reached: checked above
            };
            let take = (HEADER + len - self.partial.len()).min(input.len());
            self.partial.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.partial.len() == HEADER + len {
                frame(&self.partial[HEADER..]);
                self.partial.clear();
            }
        }
        Ok(())
    }
}

/// The length a frame header announces, if this SFU accepts it.
fn frame_len(hi: u8, lo: u8) -> Result<usize, FrameError> {
    match usize::from(u16::from_be_bytes([hi, lo])) {
        0 => Err(FrameError::Empty),
        n if n > MAX_FRAME => Err(FrameError::Oversize(n)),
        n => Ok(n),
    }
}

/// `packet` framed for the stream (RFC 4571 §2); `None` if it is too long
/// for a 2-byte length.
pub(crate) fn framed(packet: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(packet.len()).ok()?;
    let mut frame = Vec::with_capacity(HEADER + packet.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(packet);
    Some(frame)
}

/// One accepted connection, unique within its worker (a closed
/// connection's late packets never reach a new one from the same address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ConnId(u64);

/// The worker's hold on one connection's tasks. Dropping it closes the
/// connection: the reader stops at once, the writer once it has written
/// what was queued (a DTLS close_notify, say).
#[derive(Debug)]
pub(crate) struct Link {
    writer: mpsc::Sender<Vec<u8>>,
    _stop_reading: oneshot::Sender<()>,
}

/// What a worker's TCP tasks tell it, in order per connection.
#[derive(Debug)]
pub(crate) enum TcpInput {
    /// A connection was accepted; nothing was read from it yet.
    Opened {
        /// Its id.
        conn: ConnId,
        /// The client's address as this host sees it.
        peer: SocketAddr,
        /// The worker's hold on it.
        link: Link,
    },
    /// A packet arrived on a connection.
    Packet {
        /// The connection.
        conn: ConnId,
        /// The packet, without its frame header.
        data: Vec<u8>,
    },
    /// The client closed the connection, it failed, or it broke framing.
    Closed {
        /// The connection.
        conn: ConnId,
        /// The framing rule it broke, if that is why.
        broke: Option<FrameError>,
    },
}

/// Accepts connections on one worker's listener until the worker is gone.
pub(crate) async fn accept(
    listener: TcpListener,
    worker: mpsc::Sender<TcpInput>,
    metrics: Arc<Metrics>,
) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut next = 0u64;
    loop {
        let accepted = tokio::select! {
            () = worker.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::debug!(error = %e, "TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            metrics.tcp_refused(TcpRefusal::OverCap);
            continue; // dropping the stream closes it
        };
        // Media: every packet goes out at once, never held for coalescing.
        let _ = stream.set_nodelay(true);
        next += 1;
        let conn = ConnId(next);
        let open = Arc::new(Open::new(permit, Arc::clone(&metrics)));
        let (writer, queue) = mpsc::channel(WRITE_QUEUE);
        let (stop_reading, stopped) = oneshot::channel();
        let link = Link {
            writer,
            _stop_reading: stop_reading,
        };
        // The worker hears of the connection before any of its packets.
        if worker
            .send(TcpInput::Opened { conn, peer, link })
            .await
            .is_err()
        {
            return;
        }
        let (read_half, write_half) = stream.into_split();
        tokio::spawn(read(
            conn,
            read_half,
            worker.clone(),
            stopped,
            Arc::clone(&open),
        ));
        tokio::spawn(write(write_half, queue, open));
    }
}

/// Counts an open connection and holds its place under the cap, until
/// both of its tasks have ended.
struct Open {
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl Open {
    fn new(permit: OwnedSemaphorePermit, metrics: Arc<Metrics>) -> Self {
        metrics.tcp_connections_add(1);
        Self {
            _permit: permit,
            metrics,
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.metrics.tcp_connections_add(-1);
    }
}

/// Reads one connection, handing each packet to the worker, until the
/// client closes it, it fails or breaks framing, or the worker drops it.
async fn read(
    conn: ConnId,
    mut half: OwnedReadHalf,
    worker: mpsc::Sender<TcpInput>,
    stopped: oneshot::Receiver<()>,
    _open: Arc<Open>,
) {
    let reading = async {
        let mut decoder = FrameDecoder::default();
        let mut buf = vec![0u8; READ_BUF];
        let mut packets = Vec::new();
        loop {
            let n = match half.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => n,
            };
            let fed = decoder.feed(&buf[..n], |p| packets.push(p.to_vec()));
            for data in packets.drain(..) {
                if worker.send(TcpInput::Packet { conn, data }).await.is_err() {
                    return None;
                }
            }
            if let Err(e) = fed {
                return Some(e);
            }
        }
    };
    let broke = tokio::select! {
        _ = stopped => return, // the worker closed it
        broke = reading => broke,
    };
    let _ = worker.send(TcpInput::Closed { conn, broke }).await;
}

/// Writes the frames queued for one connection, whole, until the worker
/// drops its sender or a write fails.
async fn write(mut half: OwnedWriteHalf, mut queue: mpsc::Receiver<Vec<u8>>, _open: Arc<Open>) {
    // Grows to what bursts need (at most about WRITE_COALESCE + a frame).
    let mut batch = Vec::new();
    while let Some(frame) = queue.recv().await {
        batch.clear();
        batch.extend_from_slice(&frame);
        while batch.len() < WRITE_COALESCE {
            match queue.try_recv() {
                Ok(frame) => batch.extend_from_slice(&frame),
                Err(_) => break,
            }
        }
        if half.write_all(&batch).await.is_err() {
            return;
        }
    }
    let _ = half.shutdown().await;
}

/// One connection as its worker sees it.
#[derive(Debug)]
struct Conn {
    peer: SocketAddr,
    link: Link,
    opened: Instant,
    /// The peer (its serial) the connection was given to on first contact.
    owner: Option<u64>,
}

/// A worker's open TCP connections, by id and by client address.
#[derive(Debug, Default)]
pub(crate) struct Conns {
    by_id: HashMap<ConnId, Conn>,
    by_addr: HashMap<SocketAddr, ConnId>,
}

/// Why a packet for a TCP connection was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendError {
    /// No open connection has that address.
    NoConnection,
    /// The connection's writer is behind (or has stopped).
    Backlog,
    /// The packet is too long to frame.
    TooLong,
}

impl Conns {
    /// Records a connection just accepted.
    pub(crate) fn open(&mut self, conn: ConnId, peer: SocketAddr, link: Link, now: Instant) {
        if let Some(old) = self.by_addr.insert(peer, conn) {
            // The address came back: the old connection is dead.
            self.by_id.remove(&old);
        }
        self.by_id.insert(
            conn,
            Conn {
                peer,
                link,
                opened: now,
                owner: None,
            },
        );
    }

    /// The client address and owner of an open connection.
    pub(crate) fn lookup(&self, conn: ConnId) -> Option<(SocketAddr, Option<u64>)> {
        self.by_id.get(&conn).map(|c| (c.peer, c.owner))
    }

    /// Gives an open connection to peer `serial`.
    pub(crate) fn claim(&mut self, conn: ConnId, serial: u64) {
        if let Some(c) = self.by_id.get_mut(&conn) {
            c.owner = Some(serial);
        }
    }

    /// Closes a connection (if still open); returns its owner.
    pub(crate) fn close(&mut self, conn: ConnId) -> Option<u64> {
        let c = self.by_id.remove(&conn)?;
        if self.by_addr.get(&c.peer) == Some(&conn) {
            self.by_addr.remove(&c.peer);
        }
        c.owner
    }

    /// Queues `packet`, framed, for the connection from `to`; never blocks
    /// and never queues part of a frame.
    pub(crate) fn send(&self, to: SocketAddr, packet: &[u8]) -> Result<(), SendError> {
        let conn = self
            .by_addr
            .get(&to)
            .and_then(|id| self.by_id.get(id))
            .ok_or(SendError::NoConnection)?;
        let frame = framed(packet).ok_or(SendError::TooLong)?;
        conn.link
            .writer
            .try_send(frame)
            .map_err(|_| SendError::Backlog)
    }

    /// Connections still unclaimed [`FIRST_CONTACT_TIMEOUT`] after they
    /// were accepted.
    pub(crate) fn silent(&self, now: Instant) -> Vec<ConnId> {
        self.by_id
            .iter()
            .filter(|(_, c)| {
                c.owner.is_none() && now.duration_since(c.opened) > FIRST_CONTACT_TIMEOUT
            })
            .map(|(id, _)| *id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(decoder: &mut FrameDecoder, input: &[u8]) -> Result<Vec<Vec<u8>>, FrameError> {
        let mut frames = Vec::new();
        decoder.feed(input, |f| frames.push(f.to_vec()))?;
        Ok(frames)
    }

    fn stream(packets: &[&[u8]]) -> Vec<u8> {
        packets
            .iter()
            .flat_map(|p| framed(p).expect("short enough"))
            .collect()
    }

    #[test]
    fn several_frames_in_one_read_come_out_in_order() {
        let mut d = FrameDecoder::default();
        let bytes = stream(&[b"stun", b"dtls!", &[7u8; MAX_FRAME]]);
        let frames = decode(&mut d, &bytes).expect("valid");
        assert_eq!(
            frames,
            vec![b"stun".to_vec(), b"dtls!".to_vec(), vec![7u8; MAX_FRAME]]
        );
        assert!(d.partial.is_empty());
    }

    #[test]
    fn frames_split_across_reads_at_every_byte_are_reassembled() {
        let packets: [&[u8]; 3] = [b"a", b"second packet", &[9u8; 300]];
        let bytes = stream(&packets);
        for cut in 0..=bytes.len() {
            for second in cut..=bytes.len() {
                let mut d = FrameDecoder::default();
                let mut frames = Vec::new();
                for part in [&bytes[..cut], &bytes[cut..second], &bytes[second..]] {
                    frames.extend(decode(&mut d, part).expect("valid"));
                }
                assert_eq!(frames, packets.map(<[u8]>::to_vec), "cuts {cut}, {second}");
            }
        }
    }

    #[test]
    fn a_byte_at_a_time_works_and_holds_at_most_one_frame() {
        let mut d = FrameDecoder::default();
        let bytes = stream(&[&[1u8; MAX_FRAME], &[2u8; MAX_FRAME]]);
        let mut frames = Vec::new();
        for b in &bytes {
            frames.extend(decode(&mut d, std::slice::from_ref(b)).expect("valid"));
            assert!(d.partial.len() <= HEADER + MAX_FRAME);
        }
        assert_eq!(frames, vec![vec![1u8; MAX_FRAME], vec![2u8; MAX_FRAME]]);
    }

    #[test]
    fn a_zero_length_frame_is_refused() {
        let mut d = FrameDecoder::default();
        assert_eq!(decode(&mut d, &[0, 0, 1, 2]), Err(FrameError::Empty));
        // Also when the header arrives in two reads, after a good frame.
        let mut d = FrameDecoder::default();
        let mut bytes = stream(&[b"ok"]);
        bytes.push(0);
        assert_eq!(decode(&mut d, &bytes), Ok(vec![b"ok".to_vec()]));
        assert_eq!(decode(&mut d, &[0]), Err(FrameError::Empty));
    }

    #[test]
    fn an_oversize_frame_is_refused_as_soon_as_its_header_arrives() {
        let too_long = u16::try_from(MAX_FRAME + 1).expect("fits");
        let mut d = FrameDecoder::default();
        assert_eq!(
            decode(&mut d, &too_long.to_be_bytes()),
            Err(FrameError::Oversize(MAX_FRAME + 1))
        );
        let mut d = FrameDecoder::default();
        assert_eq!(decode(&mut d, &[0xff]), Ok(vec![]));
        assert_eq!(decode(&mut d, &[0xff]), Err(FrameError::Oversize(0xffff)));
        assert!(d.partial.len() < HEADER, "no body was buffered");
    }

    #[test]
    fn framing_prefixes_the_big_endian_length() {
        assert_eq!(framed(b"abc"), Some(vec![0, 3, b'a', b'b', b'c']));
        assert_eq!(
            framed(&[0u8; 0x1234]).map(|f| f[..2].to_vec()),
            Some(vec![0x12, 0x34])
        );
        assert_eq!(framed(&vec![0u8; 65_536]), None);
    }
}
