//! The baseline: a minimal raw UDP relay with the same fan-out as the SFU
//! (every packet a member sends goes to every other member of its room) but
//! no ICE, no DTLS-SRTP, no RTP, no SFrame: batch syscalls (`recvmmsg`,
//! `sendmmsg`) on one socket in one thread. The load test measures it in
//! the same run as the SFU, and the ratio of the two is its headline.
//!
//! Wire format: `[kind u8][room u32 BE][payload]`; kind 1 joins the sender's
//! address to the room, kind 2 is media, forwarded as is.

use std::collections::{HashMap, HashSet};
use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg,
};

/// A join packet's kind byte.
pub const JOIN: u8 = 1;
/// A media packet's kind byte.
pub const MEDIA: u8 = 2;
/// Bytes before the payload: kind and room.
pub const HEADER_LEN: usize = 5;
/// Largest packet relayed.
pub const MAX_PACKET: usize = 2048;

/// Packets taken per `recvmmsg`.
const RECV_BATCH: usize = 64;
/// Packets handed over per `sendmmsg`.
const SEND_BATCH: usize = 256;
/// Members one room may have (the relay refuses more joins).
const MAX_MEMBERS: usize = 10_000;

/// A header for a packet of `kind` in `room`.
pub fn header(kind: u8, room: u32) -> [u8; HEADER_LEN] {
    let r = room.to_be_bytes();
    [kind, r[0], r[1], r[2], r[3]]
}

/// What the relay does with one packet: which room it names and whether it
/// joins or carries media; `None` for anything else (dropped).
pub fn classify(packet: &[u8]) -> Option<(u8, u32)> {
    let (&kind, rest) = packet.split_first()?;
    let room = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    matches!(kind, JOIN | MEDIA).then_some((kind, room))
}

/// A running relay thread.
pub struct UdpRelay {
    /// Where members send.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    forwarded: Arc<AtomicU64>,
    cpu_us: Arc<AtomicU64>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl core::fmt::Debug for UdpRelay {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "UdpRelay({})", self.addr)
    }
}

impl UdpRelay {
    /// Binds 127.0.0.1 on a free port and relays until stopped or for at most `max_run`.
    pub fn start(max_run: Duration) -> std::io::Result<Self> {
        let socket = UdpSocket::bind(("127.0.0.1", 0))?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let forwarded = Arc::new(AtomicU64::new(0));
        let cpu_us = Arc::new(AtomicU64::new(u64::MAX));
        let thread = {
            let (stop, forwarded, cpu_us) = (
                Arc::clone(&stop),
                Arc::clone(&forwarded),
                Arc::clone(&cpu_us),
            );
            std::thread::Builder::new()
                .name("hush-udp-relay".into())
                .spawn(move || {
                    let counters = Counters {
                        forwarded: &forwarded,
                        cpu_us: &cpu_us,
                    };
                    serve(&socket, &stop, &counters, Instant::now() + max_run)
                })?
        };
        Ok(Self {
            addr,
            stop,
            forwarded,
            cpu_us,
            thread: Some(thread),
        })
    }

    /// Packets sent on to members so far.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }

    /// CPU seconds (user + system) the relay thread had used at its last
    /// report (it reports every 5 ms of work or less, and when idle).
    pub fn cpu_seconds(&self) -> Option<f64> {
        let us = self.cpu_us.load(Ordering::Relaxed);
        (us != u64::MAX).then(|| us as f64 / 1e6)
    }

    /// Stops the thread and reports how it ended.
    pub fn stop(mut self) -> std::io::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(std::io::Error::other("relay thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What the relay thread publishes about itself.
struct Counters<'a> {
    forwarded: &'a AtomicU64,
    /// Its own CPU time in microseconds (only the thread itself can read it).
    cpu_us: &'a AtomicU64,
}

impl Counters<'_> {
    fn report_cpu(&self) {
        if let Some(s) = hush_signaling::thread_cpu_seconds() {
            self.cpu_us.store((s * 1e6) as u64, Ordering::Relaxed);
        }
    }
}

fn serve(
    socket: &UdpSocket,
    stop: &AtomicBool,
    counters: &Counters<'_>,
    deadline: Instant,
) -> std::io::Result<()> {
    let result = relay_loop(socket, stop, counters, deadline);
    counters.report_cpu();
    result
}

fn relay_loop(
    socket: &UdpSocket,
    stop: &AtomicBool,
    counters: &Counters<'_>,
    deadline: Instant,
) -> std::io::Result<()> {
    let forwarded = counters.forwarded;
    let mut reported = Instant::now();
    counters.report_cpu();
    let fd = socket.as_raw_fd();
    let mut bufs = vec![vec![0u8; MAX_PACKET]; RECV_BATCH];
    let mut recv_headers = MultiHeaders::<SockaddrStorage>::preallocate(RECV_BATCH, None);
    let mut send_headers = MultiHeaders::<SockaddrStorage>::preallocate(SEND_BATCH, None);
    let mut rooms: HashMap<u32, Vec<SockaddrStorage>> = HashMap::new();
    let mut known: HashSet<SocketAddr> = HashSet::new();
    let mut lens: Vec<(usize, Option<SockaddrStorage>)> = Vec::with_capacity(RECV_BATCH);
    let mut out: Vec<(usize, SockaddrStorage)> = Vec::with_capacity(SEND_BATCH * 4);
    let no_cmsgs: [ControlMessage<'_>; 0] = [];
    loop {
        let now = Instant::now();
        if stop.load(Ordering::Relaxed) || now >= deadline {
            return Ok(());
        }
        if now.duration_since(reported) >= Duration::from_millis(5) {
            counters.report_cpu();
            reported = now;
        }
        lens.clear();
        {
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> =
                bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
            match recvmmsg(
                fd,
                &mut recv_headers,
                iovs.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(got) => lens.extend(got.map(|m| (m.bytes, m.address))),
                Err(Errno::EAGAIN | Errno::EINTR) => {
                    // Idle: bring the CPU figure up to date.
                    counters.report_cpu();
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        out.clear();
        for (i, (len, from)) in lens.iter().enumerate() {
            let Some(from) = from else { continue };
            let Some(packet) = bufs[i].get(..*len) else {
                continue;
            };
            let Some((kind, room)) = classify(packet) else {
                continue;
            };
            let members = rooms.entry(room).or_default();
            if kind == JOIN {
                if let Some(a) = from.as_sockaddr_in() {
                    let std_addr = SocketAddr::from(*a);
                    if members.len() < MAX_MEMBERS && known.insert(std_addr) {
                        members.push(*from);
                    }
                }
                continue;
            }
            for m in members.iter().filter(|m| *m != from) {
                out.push((i, *m));
            }
        }
        // A short count or an error on the first message: that packet is
        // lost (as UDP packets are) and the batch goes on after it.
        let mut at = 0;
        while at < out.len() {
            let chunk = &out[at..(at + SEND_BATCH).min(out.len())];
            let slices: Vec<[IoSlice<'_>; 1]> = chunk
                .iter()
                .map(|(i, _)| [IoSlice::new(&bufs[*i][..lens[*i].0])])
                .collect();
            let addrs: Vec<Option<SockaddrStorage>> = chunk.iter().map(|(_, a)| Some(*a)).collect();
            match sendmmsg(
                fd,
                &mut send_headers,
                slices.iter(),
                &addrs,
                no_cmsgs,
                MsgFlags::empty(),
            ) {
                Ok(sent) => {
                    // Only the count is used: nix's result items describe
                    // received messages, not sent ones.
                    let n = sent.count();
                    forwarded.fetch_add(n as u64, Ordering::Relaxed);
                    at += if n < chunk.len() { n + 1 } else { n };
                }
                Err(Errno::EAGAIN | Errno::EINTR | Errno::ECONNREFUSED | Errno::ENOBUFS) => at += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_are_classified_by_kind_and_room() {
        let mut p = header(MEDIA, 7).to_vec();
        p.extend_from_slice(b"payload");
        assert_eq!(classify(&p), Some((MEDIA, 7)));
        assert_eq!(classify(&header(JOIN, u32::MAX)), Some((JOIN, u32::MAX)));
        assert_eq!(classify(&[MEDIA, 0, 0]), None, "short");
        assert_eq!(classify(&[9, 0, 0, 0, 1]), None, "unknown kind");
        assert_eq!(classify(&[]), None);
    }

    #[test]
    fn the_relay_fans_out_within_a_room_only() {
        let relay = UdpRelay::start(Duration::from_secs(20)).expect("relay");
        let sock = || {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
            s
        };
        let (a, b, c, other) = (sock(), sock(), sock(), sock());
        for (s, room) in [(&a, 1), (&b, 1), (&c, 1), (&other, 2)] {
            // Twice: the relay must not add a member twice.
            s.send_to(&header(JOIN, room), relay.addr).expect("join");
            s.send_to(&header(JOIN, room), relay.addr).expect("join");
        }
        // Joins and media share one socket, in order: a's media follows every join.
        std::thread::sleep(Duration::from_millis(100));
        let mut media = header(MEDIA, 1).to_vec();
        media.extend_from_slice(b"hello");
        a.send_to(&media, relay.addr).expect("send");
        let mut buf = [0u8; 64];
        for s in [&b, &c] {
            let n = s.recv(&mut buf).expect("fanned out");
            assert_eq!(&buf[..n], &media[..]);
            assert!(s.recv(&mut buf).is_err(), "exactly once");
        }
        assert!(a.recv(&mut buf).is_err(), "not back to the sender");
        assert!(other.recv(&mut buf).is_err(), "not to another room");
        assert_eq!(relay.forwarded(), 2);
        assert!(relay.cpu_seconds().is_some());
        relay.stop().expect("stops cleanly");
    }
}
