//! The sans-IO transport: str0m peers on one UDP port per worker.
//!
//! Each worker is one task that owns a UDP socket, the [`Router`] for its
//! rooms, and every peer (`str0m::Rtc`) of those rooms. Nothing is shared
//! and nothing waits: a datagram is demultiplexed to its peer (by source
//! address, or on first contact by the STUN username's local ufrag), fed
//! in, and the peer drained; a forwarded RTP packet is written to each
//! subscriber's outgoing stream and sent out at once with
//! `Rtc::poll_written` (the vendored str0m's patch, vendor/str0m/HUSH.md),
//! or, where that cannot take it, that subscriber fed a timeout and
//! drained; every datagram the iteration produced is sent before the next
//! wake-up. A
//! worker's ICE-TCP connections (`tcp.rs`) feed the same loop, packet by
//! packet, and what str0m sends on a TCP pair goes to that connection's
//! writer; UDP's path is the same with or without them. str0m
//! does ICE-lite, DTLS, SRTP, RTCP, NACK/RTX and keeps its own timers; the
//! worker feeds each peer its due timeout from a deadline heap.
//!
//! Negotiation is as the crate documents it ("Renegotiation and glare"):
//! the client offers first; the SFU then offers every change, one offer at
//! a time, and wins glare. Every forwarded track has its own send-only
//! m-line whose MSID stream id names the publisher.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hush_proto::MediaKind;
use hush_proto::capture::CaptureRecord;
use rustc_hash::FxHashMap;
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::config::DtlsCert;
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, Mid, Pt};
use str0m::net::{Protocol, Receive, TcpType, Transmit};
use str0m::rtp::{Extension, ExtensionValues, RtpPacket, RtpWrite, SeqNo, Ssrc};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::capture::CaptureWriter;
use crate::error::Error;
use crate::ids::{TrackId, TrackKey};
use crate::metrics::{DropReason, Metrics, TcpRefusal};
use crate::pump::{self, Deadlines};
use crate::routing::{AudioLevel, Decision, Router};
#[cfg(feature = "test-hooks")]
use crate::sfu::TamperHook;
use crate::sfu::{CloseReason, Command, ParticipantEvents, SfuConfig, SfuEvent, Who, unknown};
use crate::tcp::{self, ConnId, Conns, TcpInput};

/// How often connected peers are checked for silence.
const LIVENESS_TICK: Duration = Duration::from_millis(500);
/// How often str0m reports per-peer statistics.
const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// Datagrams read in one go before the resulting datagrams are sent.
const READ_BATCH: usize = 64;
/// Socket buffers asked for: one worker's socket takes every client's
/// datagrams, and a burst that overflows the kernel's default (about
/// 200 KiB) is lost, DTLS handshakes included. The kernel caps it at
/// `net.core.rmem_max` / `wmem_max`; the effective sizes are logged.
const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;
/// Datagrams handed to the kernel per system call (`sendmmsg`).
const SEND_BATCH: usize = 64;
/// The largest datagram read.
const RECV_BUF: usize = 2048;
/// Video packets kept per subscriber leg for resending on NACK (str0m's
/// default size and age).
const VIDEO_RESEND_PACKETS: usize = 1024;
/// How old a video packet may be and still be resent.
const VIDEO_RESEND_AGE: Duration = Duration::from_secs(3);
/// Resent bytes, as a share of all bytes sent on a leg over the last
/// second, above which str0m drops queued resends. Its default (0.15)
/// tripped at 10 % loss: a client may NACK a packet twice before the
/// first resend lands (the hush client caps it at two), so resends can
/// reach twice the loss rate, and a packet whose resends were dropped is
/// lost for good. 0.4 covers two NACKs each at up to 25 % loss and still
/// stops a resend storm from taking most of the leg.
const VIDEO_RESEND_RATIO_CAP: f32 = 0.4;

/// What [`start`] started: each worker's control channel and addresses.
/// Commands a worker's queue holds before callers wait: each caller (a
/// participant's task) waits for its reply anyway, so this only absorbs
/// bursts across participants.
const CONTROL_QUEUE: usize = 1024;

pub(crate) struct Bound {
    pub(crate) ctls: Vec<mpsc::Sender<Command>>,
    pub(crate) udp: Vec<SocketAddr>,
    /// Empty when ICE-TCP is off.
    pub(crate) tcp: Vec<SocketAddr>,
}

/// Binds every worker's socket (and TCP listener) and starts the workers.
pub(crate) fn start(
    config: SfuConfig,
    metrics: Arc<Metrics>,
    capture: Option<Arc<CaptureWriter>>,
) -> Result<Bound, Error> {
    // Idempotent: the first call in the process wins, later ones are no-ops.
    str0m::crypto::from_feature_flags().install_process_default();
    config.validate()?;
    let base = *config
        .udp_addrs
        .first()
        .ok_or_else(|| Error::Config("no UDP address to bind".into()))?;
    let workers = config.workers.max(1);
    let mut bound = Bound {
        ctls: Vec::with_capacity(workers),
        udp: Vec::with_capacity(workers),
        tcp: Vec::new(),
    };
    for i in 0..workers {
        let mut addr = base;
        if base.port() != 0 {
            let port = u16::try_from(usize::from(base.port()) + i)
                .map_err(|_| Error::Transport(format!("no port {}+{i}", base.port())))?;
            addr.set_port(port);
        }
        let tcp_addr = match config.tcp_port {
            None => None,
            Some(0) => Some(SocketAddr::new(addr.ip(), 0)),
            Some(p) => Some(SocketAddr::new(
                addr.ip(),
                u16::try_from(usize::from(p) + i)
                    .map_err(|_| Error::Transport(format!("no TCP port {p}+{i}")))?,
            )),
        };
        let (std_socket, listener) = bind(addr, tcp_addr)?;
        std_socket.set_nonblocking(true).map_err(Error::transport)?;
        let (rcvbuf, sndbuf) = socket_buffers(&std_socket, SOCKET_BUFFER_BYTES);
        let socket = UdpSocket::from_std(std_socket).map_err(Error::transport)?;
        let local = socket.local_addr().map_err(Error::transport)?;
        // What clients are told: the public addresses, else the bound one.
        let mut announced: Vec<SocketAddr> = if config.public_ips.is_empty() {
            vec![local]
        } else {
            (config.public_ips.iter())
                .map(|ip| SocketAddr::new(*ip, local.port()))
                .collect()
        };
        announced.dedup();
        for a in &announced {
            Candidate::host(*a, "udp").map_err(|e| {
                Error::Transport(format!("{a} cannot be announced as a candidate: {e}"))
            })?;
        }
        let tcp = match listener {
            Some(listener) => {
                listener.set_nonblocking(true).map_err(Error::transport)?;
                let listener =
                    tokio::net::TcpListener::from_std(listener).map_err(Error::transport)?;
                let at = listener.local_addr().map_err(Error::transport)?;
                // The same addresses as for UDP, with the TCP port.
                let tcp_announced: Vec<SocketAddr> = (announced.iter())
                    .map(|a| SocketAddr::new(a.ip(), at.port()))
                    .collect();
                for a in &tcp_announced {
                    passive_tcp_candidate(*a).map_err(|e| {
                        Error::Transport(format!("{a} cannot be announced as a TCP candidate: {e}"))
                    })?;
                }
                let (tx, rx) = mpsc::channel(tcp::INPUT_QUEUE);
                tokio::spawn(tcp::accept(listener, tx, Arc::clone(&metrics)));
                tracing::info!(%at, worker = i, "SFU worker listening (ICE-TCP)");
                bound.tcp.push(at);
                Some(TcpPort {
                    rx,
                    announced: tcp_announced,
                })
            }
            None => None,
        };
        let cert = dtls_cert().ok_or_else(|| Error::Transport("no DTLS certificate".into()))?;
        let (tx, rx) = mpsc::channel(CONTROL_QUEUE);
        let port = Port {
            socket,
            local,
            announced,
            tcp,
        };
        let worker = Worker::new(
            i,
            config.clone(),
            port,
            cert,
            Arc::clone(&metrics),
            capture.clone(),
        );
        tokio::spawn(worker.run(rx));
        tracing::info!(%local, worker = i, rcvbuf, sndbuf, "SFU worker listening (UDP)");
        bound.ctls.push(tx);
        bound.udp.push(local);
    }
    Ok(bound)
}

/// A fresh DTLS certificate for a worker's peers, from str0m's crypto
/// provider (installed as the process default first, if none is).
pub(crate) fn dtls_cert() -> Option<DtlsCert> {
    str0m::crypto::from_feature_flags().install_process_default();
    str0m::crypto::from_feature_flags()
        .dtls_provider
        .generate_certificate()
}

/// Binds a worker's UDP socket at `udp` and, if asked, its ICE-TCP
/// listener at `tcp`. Their port numbers must differ (see
/// [`SfuConfig::tcp_port`]); where the kernel picks one, a few tries find
/// a pair that does.
fn bind(
    udp: SocketAddr,
    tcp: Option<SocketAddr>,
) -> Result<(std::net::UdpSocket, Option<std::net::TcpListener>), Error> {
    for _ in 0..8 {
        let socket = std::net::UdpSocket::bind(udp).map_err(Error::transport)?;
        let Some(tcp) = tcp else {
            return Ok((socket, None));
        };
        let listener = std::net::TcpListener::bind(tcp)
            .map_err(|e| Error::Transport(format!("binding TCP {tcp} for ICE-TCP: {e}")))?;
        let udp_port = socket.local_addr().map_err(Error::transport)?.port();
        let tcp_port = listener.local_addr().map_err(Error::transport)?.port();
        if udp_port != tcp_port {
            return Ok((socket, Some(listener)));
        }
    }
    Err(Error::Transport(format!(
        "found no ICE-TCP port other than the UDP port's number ({udp})"
    )))
}

/// The passive ICE-TCP host candidate (RFC 6544 §4.5) at `addr`.
fn passive_tcp_candidate(addr: SocketAddr) -> Result<Candidate, str0m::error::IceError> {
    Candidate::builder()
        .tcp()
        .host(addr)
        .tcptype(TcpType::Passive)
        .build()
}

/// A worker's UDP socket, where it is bound and what clients are told.
struct Port {
    socket: UdpSocket,
    local: SocketAddr,
    /// Never empty: the public addresses, else `local`.
    announced: Vec<SocketAddr>,
    /// Its ICE-TCP listener's side; `None` when ICE-TCP is off.
    tcp: Option<TcpPort>,
}

/// What a worker needs of its ICE-TCP listener.
struct TcpPort {
    /// What its TCP tasks tell it.
    rx: mpsc::Receiver<TcpInput>,
    /// Never empty: `announced`'s addresses with the TCP port.
    announced: Vec<SocketAddr>,
}

/// One published track: its kind and who receives it.
struct Published {
    key: TrackKey,
    kind: MediaKind,
    /// The router refused it (too many tracks): its packets are dropped.
    refused: bool,
    /// Open subscriptions: the subscriber's serial and its m-line.
    /// Copy-on-write, so the hot path takes it with a reference count.
    outlets: Arc<Vec<(u64, Mid)>>,
    /// The publisher's RFC 2198 RED payload type and its primary (Opus)
    /// payload type, for audio where RED was negotiated. str0m fixes RED
    /// at the first negotiation, before any packet, so it is read once.
    red: Option<(Pt, Pt)>,
}

/// Where one subscription stands in negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubState {
    /// Decided; not yet in an offer.
    Pending,
    /// In the outstanding offer.
    InFlight,
    /// Negotiated: packets flow.
    Open,
}

/// One track forwarded to a participant.
struct Subscription {
    kind: MediaKind,
    track_id: String,
    mid: Option<Mid>,
    state: SubState,
}

/// A subscription that has an m-line, by that m-line: what the forwarding
/// path reads and writes per packet, one hashed lookup away.
struct Leg {
    /// The track it carries (the subscription in [`Peer::subs`]).
    key: TrackKey,
    /// The payload type negotiated with this subscriber for the codec
    /// (`None` until its answer came).
    pt: Option<Pt>,
    /// The RFC 2198 RED payload type negotiated with this subscriber
    /// (audio only); `None`: it gets the primary block of RED packets.
    red_pt: Option<Pt>,
    /// Publisher sequence number that maps to this leg's first (1).
    seq_base: Option<u64>,
    /// The SSRC of its send stream, once found: str0m finds a stream by
    /// SSRC with a hashed lookup, by mid with a scan. The SFU never
    /// changes a leg's SSRC (a new m-line is a new leg).
    ssrc: Option<Ssrc>,
    /// Packets sent on this leg: with a tamper hook, an audio leg numbers
    /// its packets by this counter (`Tampering` in sfu.rs).
    #[cfg(feature = "test-hooks")]
    written: u64,
}

impl Leg {
    fn new(key: TrackKey) -> Self {
        Self {
            key,
            pt: None,
            red_pt: None,
            seq_base: None,
            ssrc: None,
            #[cfg(feature = "test-hooks")]
            written: 0,
        }
    }
}

#[derive(Default)]
struct Negotiation {
    /// The client's first offer has been answered.
    answered: bool,
    /// The SFU's outstanding offer.
    pending: Option<SdpPendingOffer>,
    /// Something changed since the last SFU offer.
    dirty: bool,
    /// m-lines to stop in the next offer.
    to_stop: Vec<Mid>,
    /// Subscriptions decided before the first answer (added after it).
    deferred: Vec<(TrackKey, MediaKind)>,
}

struct Peer {
    who: Who,
    rtc: Rtc,
    events: mpsc::Sender<Box<SfuEvent>>,
    ufrag: String,
    /// The UDP address it was last heard from.
    udp_addr: Option<SocketAddr>,
    /// Its ICE-TCP connection, if it made one.
    tcp: Option<ConnId>,
    published: HashMap<Mid, Published>,
    subs: BTreeMap<TrackKey, Subscription>,
    /// The subscriptions that have an m-line, by it.
    legs: FxHashMap<Mid, Leg>,
    neg: Negotiation,
    /// The deadline a heap entry exists for.
    scheduled: Option<Instant>,
    created: Instant,
    connected: bool,
    last_heard: Instant,
    next_track: u32,
    /// Being removed: no more events or offers to it.
    closing: bool,
    /// NACK totals str0m last reported per m-line (received, sent).
    nacks: HashMap<Mid, (u64, u64)>,
}

struct Worker {
    /// Which worker this is (for the per-room metrics).
    index: usize,
    /// Membership changed since the rooms gauge was last set.
    rooms_changed: bool,
    config: SfuConfig,
    socket: UdpSocket,
    /// The candidates announced to every peer; the first is what str0m is
    /// told each datagram arrived on (it must name a local candidate).
    announced: Vec<SocketAddr>,
    destination: SocketAddr,
    /// The passive TCP candidates announced to every peer; empty when
    /// ICE-TCP is off.
    tcp_announced: Vec<SocketAddr>,
    /// What str0m is told each TCP packet arrived on (the first of
    /// `tcp_announced`); `None` when ICE-TCP is off.
    tcp_destination: Option<SocketAddr>,
    /// Taken by `run`.
    tcp_rx: Option<mpsc::Receiver<TcpInput>>,
    /// Open ICE-TCP connections.
    tcp: Conns,
    rtc_config: RtcConfig,
    router: Router,
    /// Boxed: a `Peer` (its `Rtc` inline) is ~10 KiB, and the table keeps
    /// spare slots and, while it grows, two copies of itself.
    peers: FxHashMap<u64, Box<Peer>>,
    by_who: HashMap<Who, u64>,
    by_addr: HashMap<SocketAddr, u64>,
    by_ufrag: HashMap<String, u64>,
    next_serial: u64,
    timers: Deadlines,
    metrics: Arc<Metrics>,
    capture: Option<Arc<CaptureWriter>>,
    #[cfg(feature = "test-hooks")]
    tamper: Option<TamperHook>,
    /// Datagrams to send before the next wake-up.
    out: Vec<(SocketAddr, Vec<u8>)>,
    /// Peer events waiting to be handled (a drain cannot borrow other peers).
    pending: Vec<(u64, Event)>,
    /// Peers to remove after the current step, and why.
    evict: Vec<(u64, CloseReason)>,
    next_liveness: Instant,
}

impl Worker {
    fn new(
        index: usize,
        config: SfuConfig,
        port: Port,
        cert: DtlsCert,
        metrics: Arc<Metrics>,
        capture: Option<Arc<CaptureWriter>>,
    ) -> Self {
        let rtc_config = peer_config(cert);
        Self {
            index,
            rooms_changed: true,
            router: Router::new(config.routing.clone()),
            #[cfg(feature = "test-hooks")]
            tamper: config.tamper.clone(),
            config,
            socket: port.socket,
            destination: port.announced.first().copied().unwrap_or(port.local),
            tcp_destination: (port.tcp.as_ref()).and_then(|t| t.announced.first().copied()),
            tcp_announced: (port.tcp.as_ref()).map_or_else(Vec::new, |t| t.announced.clone()),
            tcp_rx: port.tcp.map(|t| t.rx),
            tcp: Conns::default(),
            announced: port.announced,
            rtc_config,
            peers: FxHashMap::default(),
            by_who: HashMap::new(),
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
            next_serial: 1,
            timers: Deadlines::new(),
            metrics,
            capture,
            out: Vec::new(),
            pending: Vec::new(),
            evict: Vec::new(),
            next_liveness: Instant::now() + LIVENESS_TICK,
        }
    }

    async fn run(mut self, mut ctl: mpsc::Receiver<Command>) {
        let mut buf = vec![0u8; RECV_BUF];
        let mut tcp_rx = self.tcp_rx.take();
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                biased;
                cmd = ctl.recv() => match cmd {
                    Some(Command::Shutdown { reply }) => {
                        self.shutdown().await;
                        let _ = reply.send(());
                        return;
                    }
                    Some(cmd) => self.handle_command(cmd),
                    None => {
                        self.shutdown().await;
                        return;
                    }
                },
                ready = self.socket.readable() => {
                    if ready.is_ok() {
                        self.read_all(&mut buf);
                    }
                }
                input = next_tcp_input(&mut tcp_rx) => match input {
                    Some(input) => self.tcp_input(input),
                    None => tcp_rx = None,
                },
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {}
            }
            // Whatever woke the loop: a UDP socket that is never quiet must
            // starve neither the TCP connections (the select is biased)
            // nor the timers (RTCP, retransmissions, liveness).
            self.read_tcp(&mut tcp_rx);
            let now = Instant::now();
            if self.next_deadline() <= now {
                self.handle_timeouts(now);
            }
            self.settle();
            self.flush().await;
        }
    }

    /// Handles what the last step left behind: peer events, evictions,
    /// renegotiations, the rooms gauge.
    fn settle(&mut self) {
        loop {
            self.handle_events();
            let evict = std::mem::take(&mut self.evict);
            if evict.is_empty() && self.pending.is_empty() {
                break;
            }
            for (serial, reason) in evict {
                self.remove(serial, Some(reason));
            }
        }
        self.publish_rooms();
    }

    /// Sets the rooms gauge if membership changed since it was last set.
    fn publish_rooms(&mut self) {
        if std::mem::take(&mut self.rooms_changed) {
            let rooms = self.router.rooms().map(|(id, n)| (id.clone(), n)).collect();
            self.metrics.set_rooms(self.index, rooms);
        }
    }

    fn next_deadline(&self) -> Instant {
        let mut next = self.next_liveness;
        if let Some(t) = self.timers.next() {
            next = next.min(t);
        }
        if let Some(t) = self.router.poll_timeout() {
            next = next.min(t);
        }
        next
    }

    /// Reads the datagrams waiting on the socket, at most [`READ_BATCH`]
    /// before what they caused is sent.
    fn read_all(&mut self, buf: &mut [u8]) {
        for _ in 0..READ_BATCH {
            match self.socket.try_recv_from(buf) {
                Ok((n, from)) => {
                    let now = Instant::now();
                    self.datagram(from, &buf[..n], now);
                    // Events are handled per datagram: in RTP mode a
                    // packet must be forwarded before the next arrives.
                    self.handle_events();
                    if self.out.len() >= SEND_BATCH {
                        self.send_ready();
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!(error = %e, "UDP receive failed");
                    return;
                }
            }
        }
    }

    fn datagram(&mut self, from: SocketAddr, data: &[u8], now: Instant) {
        let Ok(receive) = Receive::new(Protocol::Udp, from, self.destination, data) else {
            return; // not STUN, DTLS, RTP or RTCP
        };
        let input = Input::Receive(now, receive);
        let serial = match self.by_addr.get(&from) {
            Some(&s) => s,
            None => {
                let Some(serial) = self.first_contact(data, &input) else {
                    return;
                };
                let Some(peer) = self.peers.get_mut(&serial) else {
                    return;
                };
                if let Some(old) = peer.udp_addr.replace(from) {
                    self.by_addr.remove(&old);
                }
                self.by_addr.insert(from, serial);
                serial
            }
        };
        self.deliver(serial, input, now);
    }

    /// The peer a packet from an address (or TCP connection) not yet
    /// known may claim: see [`claimant`].
    fn first_contact(&self, data: &[u8], input: &Input) -> Option<u64> {
        claimant(data, input, |ufrag| {
            let serial = *self.by_ufrag.get(ufrag)?;
            Some((serial, &self.peers.get(&serial)?.rtc))
        })
    }

    /// Feeds one received packet to its peer and drains the peer.
    fn deliver(&mut self, serial: u64, input: Input, now: Instant) {
        let Some(peer) = self.peers.get_mut(&serial) else {
            return;
        };
        peer.last_heard = now;
        if let Err(e) = peer.rtc.handle_input(input) {
            tracing::debug!(participant = %peer.who.1, error = %e, "input refused");
        }
        self.drain(serial);
    }

    /// Takes what else the TCP tasks have queued, at most [`READ_BATCH`]
    /// inputs before what they caused is sent.
    fn read_tcp(&mut self, rx: &mut Option<mpsc::Receiver<TcpInput>>) {
        let Some(rx) = rx else {
            return;
        };
        for _ in 0..READ_BATCH {
            match rx.try_recv() {
                Ok(input) => self.tcp_input(input),
                Err(_) => return,
            }
        }
    }

    fn tcp_input(&mut self, input: TcpInput) {
        match input {
            TcpInput::Opened { conn, peer, link } => {
                self.tcp.open(conn, peer, link, Instant::now());
            }
            TcpInput::Packet { conn, data } => {
                self.tcp_packet(conn, &data, Instant::now());
                self.handle_events();
                if self.out.len() >= SEND_BATCH {
                    self.send_ready();
                }
            }
            TcpInput::Closed { conn, broke } => {
                if broke.is_some() {
                    self.metrics.tcp_refused(TcpRefusal::Framing);
                }
                self.close_tcp(conn);
            }
        }
    }

    /// One packet from an ICE-TCP connection: as a datagram from its
    /// client address, except that a connection no peer has claimed is
    /// closed unless this packet claims it.
    fn tcp_packet(&mut self, conn: ConnId, data: &[u8], now: Instant) {
        let (Some(destination), Some((from, owner))) =
            (self.tcp_destination, self.tcp.lookup(conn))
        else {
            return;
        };
        let receive = Receive::new(Protocol::Tcp, from, destination, data).ok();
        let Some(input) = receive.map(|r| Input::Receive(now, r)) else {
            if owner.is_none() {
                self.refuse_tcp(conn, TcpRefusal::FirstContact);
            }
            return; // not STUN, DTLS, RTP or RTCP
        };
        let serial = match owner {
            Some(s) => s,
            None => {
                let Some(serial) = self.first_contact(data, &input) else {
                    self.refuse_tcp(conn, TcpRefusal::FirstContact);
                    return;
                };
                let old = self
                    .peers
                    .get_mut(&serial)
                    .and_then(|peer| peer.tcp.replace(conn));
                if let Some(old) = old {
                    // A peer has one TCP connection: a new one replaces it.
                    self.tcp.close(old);
                }
                self.tcp.claim(conn, serial);
                serial
            }
        };
        self.deliver(serial, input, now);
    }

    fn refuse_tcp(&mut self, conn: ConnId, why: TcpRefusal) {
        tracing::debug!(?conn, ?why, "ICE-TCP connection refused");
        self.metrics.tcp_refused(why);
        self.close_tcp(conn);
    }

    /// Closes an ICE-TCP connection and forgets it on its peer.
    fn close_tcp(&mut self, conn: ConnId) {
        if let Some(peer) = self.tcp.close(conn).and_then(|s| self.peers.get_mut(&s))
            && peer.tcp == Some(conn)
        {
            peer.tcp = None;
        }
    }

    /// Drains one peer's output: datagrams to send, events to handle, and
    /// its next deadline.
    fn drain(&mut self, serial: u64) {
        self.drain_at(serial, Instant::now(), false);
    }

    /// [`Worker::drain`] at `now`, first feeding str0m a timeout if `kick`
    /// (something was just written to the peer).
    fn drain_at(&mut self, serial: u64, now: Instant, kick: bool) {
        let Some(peer) = self.peers.get_mut(&serial) else {
            return;
        };
        if kick && let Err(e) = peer.rtc.handle_input(Input::Timeout(now)) {
            tracing::debug!(error = %e, "timeout refused");
        }
        let (out, pending, tcp, metrics) =
            (&mut self.out, &mut self.pending, &self.tcp, &self.metrics);
        let drained = pump::drain(&mut peer.rtc, now, |output| match output {
            Output::Transmit(t) => route(t, out, tcp, metrics),
            Output::Event(e) => pending.push((serial, e)),
            Output::Timeout(_) => {}
        });
        match drained {
            Ok(t) => self.timers.schedule(serial, t, &mut peer.scheduled),
            Err(e) => {
                tracing::info!(participant = %peer.who.1, error = %e, "peer failed");
                peer.rtc.disconnect();
                self.evict.push((serial, CloseReason::ConnectionFailed));
            }
        }
    }

    fn handle_timeouts(&mut self, now: Instant) {
        while let Some((serial, t)) = self.timers.pop_due(now) {
            let Some(peer) = self.peers.get_mut(&serial) else {
                continue;
            };
            if peer.scheduled != Some(t) {
                continue; // superseded by an earlier deadline already handled
            }
            peer.scheduled = None;
            if let Err(e) = peer.rtc.handle_input(Input::Timeout(now)) {
                tracing::debug!(error = %e, "timeout refused");
            }
            self.drain(serial);
        }
        if self.router.poll_timeout().is_some_and(|t| t <= now) {
            let decisions = self.router.handle_timeout(now);
            self.execute(decisions);
        }
        if now >= self.next_liveness {
            self.next_liveness = now + LIVENESS_TICK;
            self.check_liveness(now);
        }
    }

    /// Removes peers that went silent after connecting, or never connected.
    fn check_liveness(&mut self, now: Instant) {
        for (&serial, peer) in &self.peers {
            let dead = if peer.connected {
                now.duration_since(peer.last_heard) > self.config.ice_failed_timeout
            } else {
                now.duration_since(peer.created) > self.config.connect_timeout
            };
            if dead {
                tracing::info!(room = %peer.who.0, participant = %peer.who.1, connected = peer.connected, "media connection timed out");
                self.evict.push((serial, CloseReason::ConnectionFailed));
            }
        }
        for conn in self.tcp.silent(now) {
            self.refuse_tcp(conn, TcpRefusal::Silent);
        }
    }

    fn handle_events(&mut self) {
        while !self.pending.is_empty() {
            let batch = std::mem::take(&mut self.pending);
            for (serial, event) in batch {
                self.handle_event(serial, event);
            }
        }
    }

    fn handle_event(&mut self, serial: u64, event: Event) {
        match event {
            Event::RtpPacket(packet) => self.forward(serial, packet),
            Event::Connected => {
                if let Some(peer) = self.peers.get_mut(&serial) {
                    peer.connected = true;
                    tracing::info!(room = %peer.who.0, participant = %peer.who.1, "media connected");
                }
            }
            Event::MediaEgressStats(stats) => {
                if let Some(peer) = self.peers.get_mut(&serial) {
                    let seen = peer.nacks.entry(stats.mid).or_default();
                    self.metrics
                        .nacks_received_add(stats.nacks.saturating_sub(seen.0));
                    seen.0 = seen.0.max(stats.nacks);
                }
            }
            Event::MediaIngressStats(stats) => {
                if let Some(peer) = self.peers.get_mut(&serial) {
                    let seen = peer.nacks.entry(stats.mid).or_default();
                    self.metrics
                        .nacks_sent_add(stats.nacks.saturating_sub(seen.1));
                    seen.1 = seen.1.max(stats.nacks);
                }
            }
            Event::Closed => self.evict.push((serial, CloseReason::ConnectionClosed)),
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                // ICE-lite prunes a pair after 15 s without a binding
                // request; a new pair needs a fresh nomination, which a
                // client's keepalives may not carry, so media to the peer
                // may have stopped for good: remove it, and the client
                // hears why.
                self.evict.push((serial, CloseReason::ConnectionFailed));
            }
            Event::KeyframeRequest(req) => {
                let Some(key) = self
                    .peers
                    .get(&serial)
                    .and_then(|p| p.legs.get(&req.mid))
                    .map(|leg| leg.key.clone())
                else {
                    return;
                };
                self.metrics.pli_received();
                let decisions = self.router.key_frame_requested(&key, Instant::now());
                self.execute(decisions);
            }
            Event::MediaChanged(change) if !change.direction.is_receiving() => {
                // The publisher stopped sending on this m-line.
                let Some(published) = self
                    .peers
                    .get_mut(&serial)
                    .and_then(|p| p.published.remove(&change.mid))
                else {
                    return;
                };
                if !published.refused
                    && let Ok(decisions) = self.router.unpublish(&published.key)
                {
                    self.execute(decisions);
                }
            }
            _ => {}
        }
    }

    /// The hot path: one packet from a publisher to each subscriber.
    fn forward(&mut self, serial: u64, packet: RtpPacket) {
        let Some(publisher) = self.peers.get_mut(&serial) else {
            return;
        };
        let Some(mid) = publisher
            .rtc
            .direct_api()
            .stream_rx(&packet.header.ssrc)
            .map(|s| s.mid())
        else {
            return;
        };
        let now = Instant::now();
        if !publisher.published.contains_key(&mid) {
            self.publish(serial, mid);
        }
        let Some(publisher) = self.peers.get(&serial) else {
            return;
        };
        let Some(published) = publisher.published.get(&mid) else {
            return;
        };
        if published.refused {
            return;
        }
        let kind = published.kind;
        let outlets = Arc::clone(&published.outlets);
        // An RFC 2198 RED packet arrives on the publisher's RED payload
        // type, which str0m folds onto its Opus params (and, in RTP mode,
        // hands over as it came). `red` is then the publisher's Opus PT.
        let red = published
            .red
            .filter(|(red, _)| *red == packet.header.payload_type)
            .map(|(_, primary)| primary);
        let ext = &packet.header.ext_vals;
        let decisions = match (ext.audio_level, ext.voice_activity) {
            (Some(level), Some(voice)) => {
                let level = AudioLevel {
                    level: level.unsigned_abs().min(127),
                    voice,
                };
                // Borrows the publisher's ids in place: no per-packet clone.
                let (room, participant) = &publisher.who;
                self.router.audio_level(room, participant, level, now)
            }
            _ => Vec::new(),
        };
        if !decisions.is_empty() {
            self.execute(decisions);
        }
        #[cfg(feature = "test-hooks")]
        let (packet, injected) = self.tampered(kind, packet);
        // Injected packets need sequence numbers of their own: audio legs
        // count instead of mapping the publisher's (audio has no NACKs).
        #[cfg(feature = "test-hooks")]
        let renumber = kind == MediaKind::Audio && self.tamper.is_some();
        self.metrics.packet_in(kind, packet.payload.len());
        if outlets.is_empty() {
            return;
        }
        let ext_vals = ExtensionValues {
            audio_level: packet.header.ext_vals.audio_level,
            voice_activity: packet.header.ext_vals.voice_activity,
            ..Default::default()
        };
        let in_seq = *packet.seq_no;
        let mut written = 0usize;
        let mut tally = self.metrics.tally(kind);
        // The primary block of a RED packet, for subscribers without RED:
        // cut out at most once per packet, on the first that needs it
        // (`None` inside: it does not parse).
        let mut primary: Option<Option<Arc<[u8]>>> = None;
        for &(sub_serial, sub_mid) in outlets.iter() {
            let Some(sub_peer) = self.peers.get_mut(&sub_serial) else {
                continue;
            };
            if !sub_peer.connected {
                // Not up yet (ICE or DTLS still under way): str0m would
                // queue the packet until it is, and old audio is no use.
                self.metrics.dropped(DropReason::NotNegotiated);
                continue;
            }
            let Some(leg) = sub_peer.legs.get_mut(&sub_mid) else {
                continue;
            };
            let Some(main_pt) = leg.pt else {
                self.metrics.dropped(DropReason::NotNegotiated);
                continue;
            };
            let (pt, payload) = match (red, leg.red_pt) {
                (None, _) => (main_pt, &packet.payload),
                // The subscriber checks the RED header itself.
                (Some(_), Some(red_pt)) => (red_pt, &packet.payload),
                (Some(primary_pt), None) => {
                    let cut =
                        primary.get_or_insert_with(|| red_primary(&packet.payload, primary_pt));
                    match cut {
                        Some(cut) => (main_pt, &*cut),
                        None => {
                            self.metrics.dropped(DropReason::MalformedRed);
                            continue;
                        }
                    }
                }
            };
            // Each leg numbers its packets from 1 (str0m cannot start a
            // stream past the first roll-over), keeping gaps so the
            // subscriber's NACKs name the right packets.
            let base = leg.seq_base.unwrap_or(in_seq);
            let Some(out_seq) = in_seq.checked_sub(base).map(|d| d + 1) else {
                continue; // reordered from before this leg began
            };
            #[cfg(feature = "test-hooks")]
            let out_seq = if renumber { leg.written + 1 } else { out_seq };
            let mut api = sub_peer.rtc.direct_api();
            let tx = match leg.ssrc {
                Some(ssrc) => api.stream_tx(&ssrc),
                None => api.stream_tx_by_mid(sub_mid, None),
            };
            let Some(tx) = tx else {
                self.metrics.dropped(DropReason::NotNegotiated);
                continue;
            };
            leg.ssrc = Some(tx.ssrc());
            if leg.seq_base.is_none() {
                leg.seq_base = Some(in_seq);
                if kind == MediaKind::Audio {
                    // Audio is never resent (no NACK for Opus): no resend
                    // cache and no resend-ratio history, which str0m keeps
                    // per stream by default (~10 KiB of every audio leg).
                    tx.set_rtx_cache(1, Duration::ZERO, None);
                } else {
                    tx.set_rtx_cache(
                        VIDEO_RESEND_PACKETS,
                        VIDEO_RESEND_AGE,
                        Some(VIDEO_RESEND_RATIO_CAP),
                    );
                }
            }
            let write = RtpWrite::new(
                pt,
                SeqNo::from(out_seq),
                packet.header.timestamp,
                packet.timestamp,
                Arc::clone(payload),
            )
            .marker(packet.header.marker)
            .ext_vals(ext_vals.clone())
            .nackable(kind == MediaKind::Video);
            tx.write_rtp(write);
            written += 1;
            tally.packet(payload.len(), now.elapsed());
            #[cfg(feature = "test-hooks")]
            if renumber {
                leg.written += 1;
                for payload in &injected {
                    leg.written += 1;
                    let write = RtpWrite::new(
                        pt,
                        SeqNo::from(leg.written),
                        packet.header.timestamp,
                        packet.timestamp,
                        Arc::clone(payload),
                    )
                    .marker(packet.header.marker)
                    .ext_vals(ext_vals.clone());
                    tx.write_rtp(write);
                    tally.packet(payload.len(), now.elapsed());
                }
            }
            // Out at once, without the timeout round a write otherwise
            // waits for (vendor/str0m/HUSH.md). The peer keeps the deadline
            // it has: sending moves none earlier. Where that path cannot
            // take the packet (a stream before its first timeout, say),
            // the timeout it waits for is fed here and the peer drained.
            let (out, tcp, metrics) = (&mut self.out, &self.tcp, &self.metrics);
            let at = Instant::now();
            if !(sub_peer.rtc).poll_written(at, |t| route(t, out, tcp, metrics)) {
                self.drain_at(sub_serial, at, true);
            }
        }
        self.metrics.add_tally(&tally);
        // The audit holds what was forwarded: once per packet that went to
        // at least one subscriber.
        if written > 0 {
            if let Some(capture) = &self.capture {
                let record = CaptureRecord {
                    kind,
                    ssrc: *packet.header.ssrc,
                    seq: packet.header.sequence_number,
                    payload: bytes::Bytes::copy_from_slice(&packet.payload),
                };
                if !capture.record(record) {
                    self.metrics.dropped(DropReason::CaptureOverflow);
                }
                #[cfg(feature = "test-hooks")]
                for payload in &injected {
                    let record = CaptureRecord {
                        kind,
                        ssrc: *packet.header.ssrc,
                        seq: packet.header.sequence_number,
                        payload: bytes::Bytes::copy_from_slice(payload),
                    };
                    if !capture.record(record) {
                        self.metrics.dropped(DropReason::CaptureOverflow);
                    }
                }
            }
        }
    }

    /// The packet as the test hook wants it forwarded, and the payloads to
    /// inject after it (audio only: video legs keep the publisher's
    /// numbering, which leaves no sequence numbers to give them).
    #[cfg(feature = "test-hooks")]
    fn tampered(&self, kind: MediaKind, mut packet: RtpPacket) -> (RtpPacket, Vec<Arc<[u8]>>) {
        let Some(hook) = &self.tamper else {
            return (packet, Vec::new());
        };
        let tampering = (hook.0)(kind, &packet.payload);
        if let Some(replaced) = tampering.replace {
            packet.payload = replaced.into();
        }
        let injected = if kind == MediaKind::Audio {
            tampering.inject.into_iter().map(Arc::from).collect()
        } else {
            Vec::new()
        };
        (packet, injected)
    }

    /// A publisher's first packet on `mid`: the track is published.
    fn publish(&mut self, serial: u64, mid: Mid) {
        let Some(peer) = self.peers.get_mut(&serial) else {
            return;
        };
        let Some(kind) = peer.rtc.media(mid).map(|m| match m.kind() {
            str0m::media::MediaKind::Audio => MediaKind::Audio,
            str0m::media::MediaKind::Video => MediaKind::Video,
        }) else {
            return;
        };
        let key = TrackKey {
            room: peer.who.0.clone(),
            publisher: peer.who.1,
            track: TrackId(mid.to_string()),
        };
        let red = match kind {
            MediaKind::Audio => red_pts(&peer.rtc),
            MediaKind::Video => None,
        };
        let decisions = match self.router.publish(&key, kind) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "publish refused");
                peer.published.insert(
                    mid,
                    Published {
                        key,
                        kind,
                        refused: true,
                        outlets: Arc::default(),
                        red,
                    },
                );
                return;
            }
        };
        tracing::info!(room = %key.room, publisher = %key.publisher, track = %key.track, %kind, "track published");
        peer.published.insert(
            mid,
            Published {
                key,
                kind,
                refused: false,
                outlets: Arc::default(),
                red,
            },
        );
        self.execute(decisions);
    }

    fn handle_command(&mut self, cmd: Command) {
        match cmd {
            Command::Add { who, reply } => {
                let result = self.add(who);
                // Whoever is told of the join sees it in the metrics too.
                self.publish_rooms();
                let _ = reply.send(result);
            }
            Command::Offer { who, sdp, reply } => {
                let result = self.offer(&who, &sdp);
                let ok = result.is_ok();
                let _ = reply.send(result);
                if ok && let Some(&serial) = self.by_who.get(&who) {
                    self.renegotiate(serial);
                }
            }
            Command::Answer { who, sdp, reply } => {
                let _ = reply.send(self.answer(&who, &sdp));
            }
            Command::Candidate {
                who,
                candidate,
                reply,
            } => {
                let result = match self.by_who.get(&who).and_then(|s| self.peers.get_mut(s)) {
                    None => Err(unknown(&who)),
                    Some(peer) => {
                        let line = candidate.candidate.trim();
                        let line = line.strip_prefix("a=").unwrap_or(line);
                        if line.is_empty() {
                            Ok(()) // end of candidates
                        } else {
                            Candidate::from_sdp_string(line)
                                .map(|c| peer.rtc.add_remote_candidate(c))
                                .map_err(|e| Error::rejected("candidate", e))
                        }
                    }
                };
                if let Some(&serial) = self.by_who.get(&who) {
                    self.drain(serial);
                }
                let _ = reply.send(result);
            }
            Command::Remove { who, reply } => {
                let result = match self.by_who.get(&who) {
                    Some(&serial) => {
                        self.remove(serial, None);
                        Ok(())
                    }
                    None => Err(unknown(&who)),
                };
                self.publish_rooms();
                let _ = reply.send(result);
            }
            // Answered by `run`, which stops the loop.
            Command::Shutdown { .. } => {}
        }
    }

    fn add(&mut self, who: Who) -> Result<ParticipantEvents, Error> {
        if self.by_who.contains_key(&who) {
            return Err(Error::AlreadyJoined {
                room: who.0,
                participant: who.1,
            });
        }
        let now = Instant::now();
        let mut rtc = self.rtc_config.clone().build(now);
        for addr in &self.announced {
            let candidate = Candidate::host(*addr, "udp").map_err(Error::transport)?;
            rtc.add_local_candidate(candidate);
        }
        for addr in &self.tcp_announced {
            let candidate = passive_tcp_candidate(*addr).map_err(Error::transport)?;
            rtc.add_local_candidate(candidate);
        }
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        let decisions = self.router.join(&who.0, &who.1)?;
        self.rooms_changed = true;
        let serial = self.next_serial;
        self.next_serial += 1;
        let (events_tx, events_rx) = mpsc::channel(self.config.event_queue);
        self.by_ufrag.insert(ufrag.clone(), serial);
        self.by_who.insert(who.clone(), serial);
        self.peers.insert(
            serial,
            Box::new(Peer {
                who: who.clone(),
                rtc,
                events: events_tx,
                ufrag,
                udp_addr: None,
                tcp: None,
                published: HashMap::new(),
                subs: BTreeMap::new(),
                legs: FxHashMap::default(),
                neg: Negotiation::default(),
                scheduled: None,
                created: now,
                connected: false,
                last_heard: now,
                next_track: 0,
                closing: false,
                nacks: HashMap::new(),
            }),
        );
        self.metrics.peer_connections_add(1);
        tracing::info!(room = %who.0, participant = %who.1, "participant added");
        self.execute(decisions);
        Ok(ParticipantEvents::new(events_rx))
    }

    fn offer(&mut self, who: &Who, sdp: &str) -> Result<String, Error> {
        let serial = *self.by_who.get(who).ok_or_else(|| unknown(who))?;
        let peer = self.peers.get_mut(&serial).ok_or_else(|| unknown(who))?;
        if peer.neg.pending.is_some() {
            return Err(Error::Glare);
        }
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| Error::rejected("offer", e))?;
        let answer = peer
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| Error::rejected("offer", e))?;
        // An ICE restart makes new local credentials: follow them.
        let ufrag = peer.rtc.direct_api().local_ice_credentials().ufrag;
        if ufrag != peer.ufrag {
            self.by_ufrag.remove(&peer.ufrag);
            self.by_ufrag.insert(ufrag.clone(), serial);
            peer.ufrag = ufrag;
        }
        let first = !peer.neg.answered;
        peer.neg.answered = true;
        let answer = answer.to_sdp_string();
        self.drain(serial);
        if first {
            let deferred = self
                .peers
                .get_mut(&serial)
                .map(|p| std::mem::take(&mut p.neg.deferred))
                .unwrap_or_default();
            for (key, kind) in deferred {
                if self.router.subscribers(&key).contains(&who.1) {
                    self.subscribe(serial, &key, kind);
                }
            }
        }
        Ok(answer)
    }

    fn answer(&mut self, who: &Who, sdp: &str) -> Result<(), Error> {
        let serial = *self.by_who.get(who).ok_or_else(|| unknown(who))?;
        let peer = self.peers.get_mut(&serial).ok_or_else(|| unknown(who))?;
        let pending = peer.neg.pending.take().ok_or(Error::NoOfferOutstanding)?;
        let result = SdpAnswer::from_sdp_string(sdp)
            .map_err(|e| Error::rejected("answer", e))
            .and_then(|answer| {
                peer.rtc
                    .sdp_api()
                    .accept_answer(pending, answer)
                    .map_err(|e| Error::rejected("answer", e))
            });
        if let Err(e) = result {
            // The offer is spent: what it carried goes into the next one.
            for sub in peer.subs.values_mut() {
                if sub.state == SubState::InFlight {
                    sub.state = SubState::Pending;
                    if let Some(mid) = sub.mid.take() {
                        peer.legs.remove(&mid);
                    }
                }
            }
            peer.neg.dirty = true;
            self.drain(serial);
            return Err(e);
        }
        let mut opened = Vec::new();
        for (key, sub) in peer.subs.iter_mut() {
            if sub.state != SubState::InFlight {
                continue;
            }
            sub.state = SubState::Open;
            let codec = match sub.kind {
                MediaKind::Audio => Codec::Opus,
                MediaKind::Video => Codec::Vp8,
            };
            let params = peer.rtc.codec_config().find(|p| p.spec().codec == codec);
            if let Some(mid) = sub.mid {
                if let Some(leg) = peer.legs.get_mut(&mid) {
                    leg.pt = params.map(|p| p.pt());
                    // str0m folds RED onto the primary codec's params (audio only).
                    leg.red_pt = params.and_then(|p| p.red());
                }
                opened.push((key.clone(), mid));
            }
        }
        self.drain(serial);
        let now = Instant::now();
        for (key, mid) in opened {
            let pub_serial = self.by_who.get(&(key.room.clone(), key.publisher)).copied();
            if let Some(published) = pub_serial
                .and_then(|s| self.peers.get_mut(&s))
                .and_then(|p| p.published.get_mut(&Mid::from(key.track.0.as_str())))
                && !published.outlets.iter().any(|(s, _)| *s == serial)
            {
                Arc::make_mut(&mut published.outlets).push((serial, mid));
            }
            let decisions = self.router.subscription_ready(&who.1, &key, now);
            self.execute(decisions);
        }
        self.renegotiate(serial);
        Ok(())
    }

    /// Sends the SFU's offer if something changed and no offer is
    /// outstanding (the glare rule in the crate docs).
    fn renegotiate(&mut self, serial: u64) {
        let Some(peer) = self.peers.get_mut(&serial) else {
            return;
        };
        if peer.closing || !peer.neg.answered || peer.neg.pending.is_some() || !peer.neg.dirty {
            return;
        }
        let mut api = peer.rtc.sdp_api();
        let mut added = Vec::new();
        for (key, sub) in peer.subs.iter_mut() {
            if sub.state != SubState::Pending {
                continue;
            }
            let kind = match sub.kind {
                MediaKind::Audio => str0m::media::MediaKind::Audio,
                MediaKind::Video => str0m::media::MediaKind::Video,
            };
            let mid = api.add_media(
                kind,
                Direction::SendOnly,
                Some(hush_proto::stream_id(key.publisher)),
                Some(sub.track_id.clone()),
                None,
            );
            sub.mid = Some(mid);
            sub.state = SubState::InFlight;
            added.push((key.clone(), mid));
        }
        for mid in std::mem::take(&mut peer.neg.to_stop) {
            api.stop_media(mid);
        }
        peer.neg.dirty = false;
        let Some((offer, pending)) = api.apply() else {
            return;
        };
        peer.neg.pending = Some(pending);
        let sdp = offer.to_sdp_string();
        let mut events = Vec::new();
        for (key, mid) in added {
            peer.legs.insert(mid, Leg::new(key.clone()));
            let Some(sub) = peer.subs.get(&key) else {
                continue;
            };
            events.push(SfuEvent::TrackAdded {
                publisher: key.publisher,
                track: key.track.clone(),
                kind: sub.kind,
                stream_id: hush_proto::stream_id(key.publisher),
                track_id: sub.track_id.clone(),
                ssrc: offered_ssrc(&sdp, &mid.to_string()).unwrap_or(0),
            });
        }
        events.push(SfuEvent::Offer { sdp });
        self.drain(serial);
        for event in events {
            self.send_event(serial, event);
        }
    }

    fn execute(&mut self, decisions: Vec<Decision>) {
        let mut touched = Vec::new();
        for decision in decisions {
            match decision {
                Decision::Subscribe {
                    subscriber,
                    key,
                    kind,
                } => {
                    let Some(&serial) = self.by_who.get(&(key.room.clone(), subscriber)) else {
                        continue;
                    };
                    if let Some(peer) = self.peers.get_mut(&serial)
                        && !peer.neg.answered
                    {
                        peer.neg.deferred.push((key, kind));
                        continue;
                    }
                    self.subscribe(serial, &key, kind);
                    touched.push(serial);
                }
                Decision::Unsubscribe { subscriber, key } => {
                    if let Some(&serial) = self.by_who.get(&(key.room.clone(), subscriber)) {
                        self.unsubscribe(serial, &key);
                        touched.push(serial);
                    }
                }
                Decision::TrackUnpublished { key, .. } => {
                    if let Some(peer) = self
                        .by_who
                        .get(&(key.room.clone(), key.publisher))
                        .and_then(|s| self.peers.get_mut(s))
                    {
                        peer.published.remove(&Mid::from(key.track.0.as_str()));
                    }
                }
                Decision::RequestKeyFrame(key) => {
                    let Some(&serial) = self.by_who.get(&(key.room.clone(), key.publisher)) else {
                        continue;
                    };
                    let Some(peer) = self.peers.get_mut(&serial) else {
                        continue;
                    };
                    let mid = Mid::from(key.track.0.as_str());
                    if let Some(rx) = peer.rtc.direct_api().stream_rx_by_mid(mid, None) {
                        rx.request_keyframe(KeyframeRequestKind::Pli);
                        self.metrics.pli_sent();
                    }
                    self.drain(serial);
                }
                Decision::ActiveSpeaker { room, speaker } => {
                    for member in self.router.participants(&room) {
                        if let Some(&serial) = self.by_who.get(&(room.clone(), member)) {
                            self.send_event(
                                serial,
                                SfuEvent::ActiveSpeaker {
                                    participant: speaker,
                                },
                            );
                        }
                    }
                }
                Decision::RoomOpened(room) => tracing::info!(%room, "room opened"),
                Decision::RoomClosed(room) => tracing::info!(%room, "room closed"),
                Decision::TrackPublished { .. } => {}
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for serial in touched {
            self.renegotiate(serial);
        }
    }

    fn subscribe(&mut self, serial: u64, key: &TrackKey, kind: MediaKind) {
        if !self.by_who.contains_key(&(key.room.clone(), key.publisher)) {
            return;
        }
        let Some(peer) = self.peers.get_mut(&serial) else {
            return;
        };
        if peer.subs.contains_key(key) {
            return;
        }
        // Named by the publisher (PROTOCOL.md §11); the counter keeps track
        // ids apart across the subscriber's renegotiations.
        peer.next_track += 1;
        let track_id = format!(
            "{}-{}-{}",
            hush_proto::stream_id(key.publisher),
            kind.as_str(),
            peer.next_track
        );
        peer.subs.insert(
            key.clone(),
            Subscription {
                kind,
                track_id,
                mid: None,
                state: SubState::Pending,
            },
        );
        peer.neg.dirty = true;
        self.metrics.subscriptions_add(1);
    }

    fn unsubscribe(&mut self, serial: u64, key: &TrackKey) {
        let Some(peer) = self.peers.get_mut(&serial) else {
            return;
        };
        peer.neg.deferred.retain(|(k, _)| k != key);
        let Some(sub) = peer.subs.remove(key) else {
            return;
        };
        self.metrics.subscriptions_add(-1);
        let mut event = None;
        if let Some(mid) = sub.mid {
            peer.legs.remove(&mid);
            peer.neg.to_stop.push(mid);
            peer.neg.dirty = true;
            event = Some(SfuEvent::TrackRemoved {
                publisher: key.publisher,
                track: key.track.clone(),
                stream_id: hush_proto::stream_id(key.publisher),
                track_id: sub.track_id,
            });
        }
        if let Some(published) = self
            .by_who
            .get(&(key.room.clone(), key.publisher))
            .and_then(|s| self.peers.get_mut(s))
            .and_then(|p| p.published.get_mut(&Mid::from(key.track.0.as_str())))
        {
            Arc::make_mut(&mut published.outlets).retain(|(s, _)| *s != serial);
        }
        if let Some(event) = event {
            self.send_event(serial, event);
        }
    }

    fn remove(&mut self, serial: u64, reason: Option<CloseReason>) {
        let Some(peer) = self.peers.get_mut(&serial) else {
            return;
        };
        peer.closing = true;
        let who = peer.who.clone();
        // Leave the room first (others unsubscribe), then forget the peer.
        self.rooms_changed = true;
        match self.router.leave(&who.0, &who.1, Instant::now()) {
            Ok(decisions) => self.execute(decisions),
            Err(e) => tracing::warn!(error = %e, "leave refused"),
        }
        let Some(mut peer) = self.peers.remove(&serial) else {
            return;
        };
        self.by_who.remove(&who);
        self.by_ufrag.remove(&peer.ufrag);
        if let Some(addr) = peer.udp_addr {
            self.by_addr.remove(&addr);
        }
        for other in self.peers.values_mut() {
            for published in other.published.values_mut() {
                if published.outlets.iter().any(|(s, _)| *s == serial) {
                    Arc::make_mut(&mut published.outlets).retain(|(s, _)| *s != serial);
                }
            }
        }
        self.metrics.subscriptions_add(-(peer.subs.len() as i64));
        self.metrics.peer_connections_add(-1);
        // Say goodbye (RTCP BYE, DTLS close_notify) if the peer is up.
        if peer.rtc.close().is_ok() {
            while let Ok(output) = peer.rtc.poll_output() {
                match output {
                    Output::Transmit(t) => route(t, &mut self.out, &self.tcp, &self.metrics),
                    Output::Timeout(_) => break,
                    Output::Event(_) => {}
                }
            }
        }
        // After the goodbye: its writer sends what is queued, then closes.
        if let Some(conn) = peer.tcp {
            self.tcp.close(conn);
        }
        if let Some(reason) = reason {
            let _ = peer.events.try_send(Box::new(SfuEvent::Closed { reason }));
        }
        tracing::info!(room = %who.0, participant = %who.1, ?reason, "participant removed");
    }

    async fn shutdown(&mut self) {
        let all: Vec<u64> = self.peers.keys().copied().collect();
        for serial in all {
            self.remove(serial, Some(CloseReason::Shutdown));
        }
        self.flush().await;
        self.capture = None;
    }

    fn send_event(&mut self, serial: u64, event: SfuEvent) {
        let Some(peer) = self.peers.get(&serial) else {
            return;
        };
        if peer.closing {
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = peer.events.try_send(Box::new(event)) {
            tracing::warn!(participant = %peer.who.1, "event queue full; removing participant");
            self.evict.push((serial, CloseReason::EventsOverflowed));
        }
    }

    /// Sends what the last step produced, [`SEND_BATCH`] datagrams per
    /// system call, waiting while the socket's send buffer is full.
    async fn flush(&mut self) {
        while !self.out.is_empty() {
            if self.send_ready() {
                continue;
            }
            if self.socket.writable().await.is_err() {
                self.out.clear();
                return;
            }
        }
    }

    /// Sends queued datagrams until none are left or the socket would
    /// block (then returns `false`). Called during a step too, once a batch
    /// is ready: a fan-out to hundreds of subscribers then never holds
    /// more than about a batch of datagrams in memory.
    fn send_ready(&mut self) -> bool {
        let mut sent = 0;
        let mut blocked = false;
        while sent < self.out.len() {
            let batch = &self.out[sent..self.out.len().min(sent + SEND_BATCH)];
            match self
                .socket
                .try_io(Interest::WRITABLE, || send_batch(&self.socket, batch))
            {
                Ok(n) => sent += n.max(1),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    blocked = true;
                    break;
                }
                Err(e) => {
                    // The first datagram of the batch was refused (the
                    // kernel reports an error only for the first): skip it.
                    let to = batch[0].0;
                    tracing::debug!(error = %e, %to, "UDP send failed");
                    self.metrics.dropped(DropReason::WriteError);
                    sent += 1;
                }
            }
        }
        // Keeps the allocation for the next step.
        self.out.drain(..sent);
        !blocked
    }
}

/// Queues one of str0m's transmits: a UDP one for the next batch send, a
/// TCP one to its connection's writer (dropped and counted if the writer
/// is behind, as UDP would lose it).
fn route(t: Transmit, out: &mut Vec<(SocketAddr, Vec<u8>)>, tcp: &Conns, metrics: &Metrics) {
    if t.proto == Protocol::Udp {
        out.push((t.destination, t.contents.into()));
    } else if let Err(e) = tcp.send(t.destination, &t.contents) {
        tracing::trace!(to = %t.destination, ?e, "TCP packet dropped");
        metrics.dropped(DropReason::TcpBacklog);
    }
}

/// A peer's RFC 2198 RED payload type and the primary (Opus) payload type
/// it is folded onto, if RED was negotiated (str0m keeps RED on the
/// primary codec's params).
fn red_pts(rtc: &Rtc) -> Option<(Pt, Pt)> {
    rtc.codec_config()
        .iter()
        .find_map(|p| p.red().map(|red| (red, p.pt())))
}

/// How the SFU builds every peer: ICE-lite, RTP mode, Opus (with RED)
/// and VP8, audio level and mid only, with the worker's DTLS certificate.
pub(crate) fn peer_config(cert: DtlsCert) -> RtcConfig {
    Rtc::builder()
        .set_ice_lite(true)
        .set_rtp_mode(true)
        .clear_codecs()
        // Opus with RFC 2198 RED folded onto it (audio/red, `111/111`,
        // payload type 63 by default): str0m keeps RED only where the
        // client offers it too, so an Opus-only offer still gets Opus.
        .enable_opus(true, true)
        .enable_vp8(true)
        // Only what the forwarding path uses: audio level (active
        // speaker, forwarded) and mid. No transport-wide congestion
        // control or abs-send-time (no bandwidth estimation yet), whose
        // per-peer send history is most of an idle subscriber's memory.
        .clear_extension_map()
        .set_extension(1, Extension::AudioLevel)
        .set_extension(4, Extension::RtpMid)
        // For the NACK counters; str0m answers NACKs by itself.
        .set_stats_interval(Some(STATS_INTERVAL))
        .set_dtls_cert(cert)
}

/// The primary block of a RED payload (RFC 2198 §3), if the payload parses
/// and the block is of the publisher's primary payload type: what a
/// subscriber without RED gets. The block is SFrame ciphertext like the
/// rest; only the RED header is read.
pub(crate) fn red_primary(payload: &[u8], primary_pt: Pt) -> Option<Arc<[u8]>> {
    let red = hush_proto::red::parse(payload).ok()?;
    (red.primary.payload_type == *primary_pt).then(|| Arc::from(red.primary.data))
}

/// The next input from the worker's TCP tasks; never, without ICE-TCP.
async fn next_tcp_input(rx: &mut Option<mpsc::Receiver<TcpInput>>) -> Option<TcpInput> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Whom a packet from an address (or TCP connection) not yet known may
/// claim: only a STUN request naming a peer's local ufrag (`peer_of` finds
/// the peer) that the peer accepts, which checks its integrity with the
/// peer's ICE password. Anything else claims nobody.
fn claimant<'a>(
    data: &[u8],
    input: &Input,
    peer_of: impl FnOnce(&str) -> Option<(u64, &'a Rtc)>,
) -> Option<u64> {
    let ufrag = stun_local_ufrag(data)?;
    let (serial, rtc) = peer_of(&ufrag)?;
    rtc.accepts(input).then_some(serial)
}

/// Asks for `bytes` of receive and send buffer; returns what the kernel
/// granted (0 where it could not be read).
fn socket_buffers(socket: &std::net::UdpSocket, bytes: usize) -> (usize, usize) {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt};
    let _ = setsockopt(socket, sockopt::RcvBuf, &bytes);
    let _ = setsockopt(socket, sockopt::SndBuf, &bytes);
    (
        getsockopt(socket, sockopt::RcvBuf).unwrap_or(0),
        getsockopt(socket, sockopt::SndBuf).unwrap_or(0),
    )
}

/// Hands `batch` to the kernel in one `sendmmsg`; returns how many went.
fn send_batch(socket: &UdpSocket, batch: &[(SocketAddr, Vec<u8>)]) -> std::io::Result<usize> {
    use nix::sys::socket::{ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};
    use std::io::IoSlice;
    use std::os::fd::AsRawFd;
    let slices: Vec<[IoSlice<'_>; 1]> = batch.iter().map(|(_, d)| [IoSlice::new(d)]).collect();
    let addrs: Vec<Option<SockaddrStorage>> = batch
        .iter()
        .map(|(a, _)| Some(SockaddrStorage::from(*a)))
        .collect();
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(batch.len(), None);
    let cmsgs: [ControlMessage<'_>; 0] = [];
    let results = sendmmsg(
        socket.as_raw_fd(),
        &mut headers,
        &slices,
        &addrs,
        cmsgs,
        MsgFlags::empty(),
    )
    .map_err(std::io::Error::from)?;
    Ok(results.count())
}

/// The local ufrag a STUN binding request names (`USERNAME` is
/// "local:remote" from the receiver's view), if `data` is one.
pub(crate) fn stun_local_ufrag(data: &[u8]) -> Option<String> {
    let message = str0m::ice::StunMessage::parse(data).ok()?;
    let (local, _) = message.split_username()?;
    Some(local.to_owned())
}

/// The first SSRC the SDP `sdp` announces in the m-section of `mid`.
pub(crate) fn offered_ssrc(sdp: &str, mid: &str) -> Option<u32> {
    let mut in_section = false;
    let mut ssrc = None;
    for line in sdp.lines() {
        if line.starts_with("m=") {
            if in_section {
                break;
            }
            ssrc = None;
        } else if let Some(m) = line.strip_prefix("a=mid:") {
            in_section = m.trim() == mid;
        } else if ssrc.is_none()
            && let Some(rest) = line.strip_prefix("a=ssrc:")
        {
            ssrc = rest.split_whitespace().next().and_then(|s| s.parse().ok());
        }
        if in_section && ssrc.is_some() {
            return ssrc;
        }
    }
    if in_section { ssrc } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offered_ssrc_reads_the_right_section() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=ssrc:11 cname:x\r\n\
                   m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=ssrc:22 cname:y\r\na=mid:1\r\n\
                   m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:2\r\n";
        assert_eq!(offered_ssrc(sdp, "0"), Some(11));
        assert_eq!(offered_ssrc(sdp, "1"), Some(22));
        assert_eq!(offered_ssrc(sdp, "2"), None);
        assert_eq!(offered_ssrc(sdp, "9"), None);
    }

    #[test]
    fn a_red_payload_gives_its_primary_only_if_it_parses_as_opus() {
        use hush_proto::red::{Block, write};
        let opus = Pt::new_with_value(111);
        let earlier = [Block {
            timestamp_offset: 960,
            payload_type: 111,
            data: b"earlier",
        }];
        let payload = write(&earlier, 111, b"primary");
        assert_eq!(
            red_primary(&payload, opus).as_deref(),
            Some(&b"primary"[..])
        );
        assert_eq!(
            red_primary(&payload, Pt::new_with_value(100)),
            None,
            "a primary of another payload type is not Opus"
        );
        assert_eq!(red_primary(&payload[..5], opus), None, "truncated");
        assert_eq!(red_primary(&[], opus), None);
    }

    #[test]
    fn only_stun_names_a_ufrag() {
        assert_eq!(stun_local_ufrag(b"\x80\x60\x00\x01"), None);
        assert_eq!(stun_local_ufrag(&[]), None);
    }

    /// A STUN binding request from a client, as its ICE agent sends one:
    /// USERNAME "`ufrag`:client", MESSAGE-INTEGRITY keyed with `password`.
    fn binding_request(ufrag: &str, password: &str) -> Vec<u8> {
        use str0m::ice::{StunMessage, TransId};
        let provider = str0m::crypto::from_feature_flags();
        let username = format!("{ufrag}:client");
        let message = StunMessage::binding_request(&username, TransId::new(), true, 1, 100, true);
        let mut buf = vec![0u8; 1500];
        let n = message
            .to_bytes(Some(password.as_bytes()), &mut buf, |key, payloads| {
                provider.sha1_hmac_provider.sha1_hmac(key, payloads)
            })
            .expect("a binding request fits");
        buf.truncate(n);
        buf
    }

    #[test]
    fn first_contact_needs_a_stun_request_the_named_peer_accepts() {
        str0m::crypto::from_feature_flags().install_process_default();
        let now = Instant::now();
        let sfu = SocketAddr::from(([192, 0, 2, 1], 7882));
        let client = SocketAddr::from(([198, 51, 100, 7], 50_000));
        let mut rtc = Rtc::builder().set_ice_lite(true).build(now);
        rtc.add_local_candidate(passive_tcp_candidate(sfu).expect("a TCP candidate"));
        let creds = rtc.direct_api().local_ice_credentials();
        let claim = |data: &[u8]| {
            let receive = Receive::new(Protocol::Tcp, client, sfu, data).ok()?;
            let input = Input::Receive(now, receive);
            claimant(data, &input, |ufrag| {
                (ufrag == creds.ufrag).then_some((7, &rtc))
            })
        };
        assert_eq!(claim(&binding_request(&creds.ufrag, &creds.pass)), Some(7));
        assert_eq!(
            claim(&binding_request(&creds.ufrag, "not the password")),
            None,
            "integrity is checked"
        );
        assert_eq!(
            claim(&binding_request("someone-else", &creds.pass)),
            None,
            "the ufrag must name a peer"
        );
        // A DTLS ClientHello's record header, and an RTP header: not STUN.
        assert_eq!(claim(&[22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]), None);
        assert_eq!(claim(&[0x80, 111, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2]), None);
    }
}
