//! A seeded userspace link impairment relay for UDP, standing in for netem
//! (this kernel has no `sch_netem`).
//!
//! The relay listens on a front address that clients are told about (the
//! SFU announces it as its public IP) and forwards to the real server
//! address behind it, dropping and delaying datagrams in each direction.
//! Every client source address gets its own upstream socket, so the server
//! sees one distinct peer per client. Loss and jitter come from seeded
//! generators, one pair per direction, drawn once per datagram in arrival
//! order: the same seed and the same sequence of datagrams give the same
//! drops, whatever the timing.
//!
//! Everything stays on loopback. Caps on clients and queued datagrams keep
//! a misbehaving test from running away; what they reject is counted in
//! [`DirectionStats::discarded`].

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, sleep_until};

/// How one direction of the link misbehaves; the default is a perfect link.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Impairment {
    /// Probability in `0.0..=1.0` that a datagram is dropped (below 0 or NaN: never, above 1: always).
    pub loss: f64,
    /// One-way delay added to every delivered datagram.
    pub delay: Duration,
    /// Uniform jitter: each datagram waits `delay ± jitter`, never less than zero.
    pub jitter: Duration,
    /// Whether jitter may reorder datagrams; if `false`, none is delivered before one that arrived earlier.
    pub reorder: bool,
    /// Drop every DTLS record (first byte 20 to 63, RFC 7983), whatever
    /// `loss` says: a handshake that cannot complete while STUN and, once
    /// keyed, SRTP get through.
    pub drop_dtls: bool,
}

/// Whether a datagram is DTLS by its first byte (RFC 7983 §7).
fn is_dtls(data: &[u8]) -> bool {
    data.first().is_some_and(|b| (20..=63).contains(b))
}

/// Counters of one direction: `seen = dropped + discarded + delivered + still queued`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Datagrams received by the relay.
    pub seen: u64,
    /// Datagrams dropped by the loss model.
    pub dropped: u64,
    /// Datagrams dropped for lack of room (queue or client cap) or a failed send.
    pub discarded: u64,
    /// Datagrams handed to the outgoing socket.
    pub delivered: u64,
    /// Bytes of the datagrams the loss model saw (UDP payloads: RTP or
    /// RTCP with SRTP, STUN, DTLS).
    pub bytes: u64,
}

/// Counters of both directions of a [`Relay`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Client to server.
    pub up: DirectionStats,
    /// Server to client.
    pub down: DirectionStats,
}

/// A running impairment relay; dropping it (or [`Relay::stop`]) ends it.
#[derive(Debug)]
pub struct Relay {
    front: SocketAddr,
    settings: watch::Sender<Settings>,
    counters: Arc<Counters>,
    tasks: Vec<JoinHandle<()>>,
}

/// Most client addresses one relay serves; datagrams from more are discarded.
pub const MAX_CLIENTS: usize = 256;
/// Most datagrams queued per direction; beyond, arrivals are discarded.
pub const MAX_QUEUED: usize = 10_000;

impl Relay {
    /// Binds `front` and starts relaying to `back`, impairing `up` (client to server) and `down` (server to client).
    pub async fn start(
        front: SocketAddr,
        back: SocketAddr,
        up: Impairment,
        down: Impairment,
        seed: u64,
    ) -> io::Result<Relay> {
        let socket = Arc::new(UdpSocket::bind(front).await?);
        let front = socket.local_addr()?;
        let (settings, settings_rx) = watch::channel(Settings { up, down });
        let counters = Arc::new(Counters::default());
        let mut seeds = SplitMix64(seed);
        let up_lane = Lane::new(seeds.next_u64(), seeds.next_u64());
        let down_lane = Lane::new(seeds.next_u64(), seeds.next_u64());
        let (down_tx, down_rx) = mpsc::channel(DOWN_CHANNEL);
        let upstream_ip = match back.ip() {
            ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            ip => ip,
        };
        let up_task = Up {
            front: Arc::clone(&socket),
            back,
            upstream_ip,
            lane: up_lane,
            settings: settings_rx.clone(),
            counters: Arc::clone(&counters),
            down_tx,
            clients: HashMap::new(),
            readers: JoinSet::new(),
        };
        let down_task = Down {
            front: socket,
            lane: down_lane,
            settings: settings_rx,
            counters: Arc::clone(&counters),
            rx: down_rx,
        };
        let tasks = vec![tokio::spawn(up_task.run()), tokio::spawn(down_task.run())];
        Ok(Relay {
            front,
            settings,
            counters,
            tasks,
        })
    }

    /// The address the relay listens on (the bound port if `front` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.front
    }

    /// The counters so far.
    pub fn stats(&self) -> RelayStats {
        RelayStats {
            up: self.counters.up.snapshot(),
            down: self.counters.down.snapshot(),
        }
    }

    /// Changes the impairment of datagrams arriving from now on; queued ones keep their fate.
    pub fn set(&self, up: Impairment, down: Impairment) {
        self.settings.send_replace(Settings { up, down });
    }

    /// Stops the relay; on return its sockets are closed and the front port is free.
    pub async fn stop(mut self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks.drain(..) {
            // A cancelled task has dropped its future, sockets included.
            let _ = task.await;
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;
/// Datagrams from the server waiting for the down task; beyond, discarded.
const DOWN_CHANNEL: usize = 1024;

#[derive(Clone, Copy, Debug)]
struct Settings {
    up: Impairment,
    down: Impairment,
}

#[derive(Debug, Default)]
struct Counters {
    up: DirectionCounters,
    down: DirectionCounters,
}

#[derive(Debug, Default)]
struct DirectionCounters {
    seen: AtomicU64,
    dropped: AtomicU64,
    discarded: AtomicU64,
    delivered: AtomicU64,
    bytes: AtomicU64,
}

impl DirectionCounters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> DirectionStats {
        DirectionStats {
            seen: self.seen.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            discarded: self.discarded.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}

/// The client-to-server task: owns the front socket's receive side, the
/// upstream sockets and the up lane.
struct Up {
    front: Arc<UdpSocket>,
    back: SocketAddr,
    upstream_ip: IpAddr,
    lane: Lane<(Arc<UdpSocket>, Vec<u8>)>,
    settings: watch::Receiver<Settings>,
    counters: Arc<Counters>,
    down_tx: mpsc::Sender<FromServer>,
    clients: HashMap<SocketAddr, Arc<UdpSocket>>,
    /// One reader per upstream socket; aborted when this task ends.
    readers: JoinSet<()>,
}

impl Up {
    async fn run(mut self) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let next = self.lane.next_due();
            tokio::select! {
                received = self.front.recv_from(&mut buf) => match received {
                    Ok((n, from)) => self.offer(from, &buf[..n], Instant::now()).await,
                    Err(e) if transient(&e) => {}
                    Err(_) => return,
                },
                () = sleep_until_some(next) => {}
            }
            let now = Instant::now();
            while let Some((upstream, data)) = self.lane.pop_due(now) {
                let sent = upstream.send_to(&data, self.back).await;
                self.counters.up.count_send(&sent);
            }
        }
    }

    async fn offer(&mut self, from: SocketAddr, data: &[u8], at: Instant) {
        let counters = &self.counters.up;
        DirectionCounters::bump(&counters.seen);
        counters
            .bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        let impairment = self.settings.borrow().up;
        if impairment.drop_dtls && is_dtls(data) {
            DirectionCounters::bump(&counters.dropped);
            return;
        }
        let Some(due) = self.lane.decide(&impairment, at) else {
            DirectionCounters::bump(&counters.dropped);
            return;
        };
        let Some(upstream) = self.upstream(from).await else {
            DirectionCounters::bump(&self.counters.up.discarded);
            return;
        };
        if self.lane.enqueue(due, (upstream, data.to_vec())).is_err() {
            DirectionCounters::bump(&self.counters.up.discarded);
        }
    }

    /// The upstream socket of client `from`, opened on first use; `None`
    /// past [`MAX_CLIENTS`] or if it cannot be bound.
    async fn upstream(&mut self, from: SocketAddr) -> Option<Arc<UdpSocket>> {
        if let Some(socket) = self.clients.get(&from) {
            return Some(Arc::clone(socket));
        }
        if self.clients.len() >= MAX_CLIENTS {
            return None;
        }
        let socket = Arc::new(UdpSocket::bind((self.upstream_ip, 0)).await.ok()?);
        self.readers.spawn(read_upstream(
            Arc::clone(&socket),
            self.back,
            from,
            self.down_tx.clone(),
            Arc::clone(&self.counters),
        ));
        self.clients.insert(from, Arc::clone(&socket));
        Some(socket)
    }
}

/// A datagram from the server, on its way to `client`.
struct FromServer {
    client: SocketAddr,
    data: Vec<u8>,
    at: Instant,
}

/// Passes what the server sends to `client`'s upstream socket to the down task.
async fn read_upstream(
    socket: Arc<UdpSocket>,
    back: SocketAddr,
    client: SocketAddr,
    tx: mpsc::Sender<FromServer>,
    counters: Arc<Counters>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) if transient(&e) => continue,
            Err(_) => return,
        };
        // Only the server may talk to a client through the relay.
        if from != back {
            continue;
        }
        let datagram = FromServer {
            client,
            data: buf[..n].to_vec(),
            at: Instant::now(),
        };
        match tx.try_send(datagram) {
            Ok(()) => {}
            // Overload only: this datagram never reaches the loss model.
            Err(mpsc::error::TrySendError::Full(_)) => {
                DirectionCounters::bump(&counters.down.seen);
                DirectionCounters::bump(&counters.down.discarded);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}

/// The server-to-client task: owns the down lane and sends from the front socket.
struct Down {
    front: Arc<UdpSocket>,
    lane: Lane<(SocketAddr, Vec<u8>)>,
    settings: watch::Receiver<Settings>,
    counters: Arc<Counters>,
    rx: mpsc::Receiver<FromServer>,
}

impl Down {
    async fn run(mut self) {
        loop {
            let next = self.lane.next_due();
            tokio::select! {
                received = self.rx.recv() => match received {
                    Some(datagram) => self.offer(datagram),
                    None => return,
                },
                () = sleep_until_some(next) => {}
            }
            let now = Instant::now();
            while let Some((client, data)) = self.lane.pop_due(now) {
                let sent = self.front.send_to(&data, client).await;
                self.counters.down.count_send(&sent);
            }
        }
    }

    fn offer(&mut self, datagram: FromServer) {
        let counters = &self.counters.down;
        DirectionCounters::bump(&counters.seen);
        counters
            .bytes
            .fetch_add(datagram.data.len() as u64, Ordering::Relaxed);
        let impairment = self.settings.borrow().down;
        if impairment.drop_dtls && is_dtls(&datagram.data) {
            DirectionCounters::bump(&counters.dropped);
            return;
        }
        let Some(due) = self.lane.decide(&impairment, datagram.at) else {
            DirectionCounters::bump(&counters.dropped);
            return;
        };
        if (self.lane)
            .enqueue(due, (datagram.client, datagram.data))
            .is_err()
        {
            DirectionCounters::bump(&counters.discarded);
        }
    }
}

impl DirectionCounters {
    fn count_send(&self, sent: &io::Result<usize>) {
        match sent {
            Ok(_) => Self::bump(&self.delivered),
            Err(_) => Self::bump(&self.discarded),
        }
    }
}

/// Errors a UDP socket reports for one datagram (an ICMP error from an
/// earlier send, an interrupted call) rather than for the socket.
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// One direction's impairment without IO: decides each datagram's fate
/// from its arrival time and holds it until it is due.
#[derive(Debug)]
struct Lane<T> {
    loss: SplitMix64,
    jitter: SplitMix64,
    /// The latest due time handed out, for in-order delivery.
    last_due: Option<Instant>,
    /// Arrival order among equal due times.
    seq: u64,
    queue: BTreeMap<(Instant, u64), T>,
}

impl<T> Lane<T> {
    fn new(loss_seed: u64, jitter_seed: u64) -> Self {
        Lane {
            loss: SplitMix64(loss_seed),
            jitter: SplitMix64(jitter_seed),
            last_due: None,
            seq: 0,
            queue: BTreeMap::new(),
        }
    }

    /// When a datagram that arrived `at` is due, or `None` if it is lost.
    fn decide(&mut self, impairment: &Impairment, at: Instant) -> Option<Instant> {
        // Both draws happen for every datagram, so the loss pattern does not
        // depend on the delay settings nor on earlier outcomes.
        let lost = self.loss.next_unit() < impairment.loss;
        let offset = (self.jitter.next_unit() * 2.0 - 1.0) * impairment.jitter.as_secs_f64();
        if lost {
            return None;
        }
        // A delay past the end of time is a datagram that never arrives.
        let base = at.checked_add(impairment.delay)?;
        let shift = Duration::try_from_secs_f64(offset.abs()).unwrap_or(Duration::ZERO);
        let mut due = if offset >= 0.0 {
            base.checked_add(shift)?
        } else {
            base.checked_sub(shift).map_or(at, |t| t.max(at))
        };
        if !impairment.reorder {
            due = self.last_due.map_or(due, |last| due.max(last));
        }
        self.last_due = Some(self.last_due.map_or(due, |last| due.max(last)));
        Some(due)
    }

    /// Queues `payload` until `due`; gives it back if the queue is full.
    fn enqueue(&mut self, due: Instant, payload: T) -> Result<(), T> {
        if self.queue.len() >= MAX_QUEUED {
            return Err(payload);
        }
        self.seq += 1;
        self.queue.insert((due, self.seq), payload);
        Ok(())
    }

    fn next_due(&self) -> Option<Instant> {
        self.queue.first_key_value().map(|((due, _), _)| *due)
    }

    /// The earliest queued payload if it is due at `now`.
    fn pop_due(&mut self, now: Instant) -> Option<T> {
        if self.next_due()? > now {
            return None;
        }
        self.queue.pop_first().map(|(_, payload)| payload)
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, seedable, and stable across
/// dependency versions, unlike `rand`'s `StdRng`.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ops::Range;
    use std::sync::Mutex;
    use tokio::time::sleep;

    const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    /// A hang guard only: generous, never a measurement.
    const HANG_GUARD: Duration = Duration::from_secs(30);
    /// Datagrams sent between pauses, well inside a socket buffer.
    const BURST: u32 = 16;

    /// A socket that logs the index of every datagram it receives, with
    /// the arrival time, and optionally echoes it back.
    struct Peer {
        socket: Arc<UdpSocket>,
        log: Arc<Mutex<Vec<(u32, Instant)>>>,
        task: JoinHandle<()>,
    }

    impl Peer {
        async fn bind(echo: bool) -> Peer {
            let socket = Arc::new(UdpSocket::bind((LOCAL, 0)).await.expect("bind peer"));
            let log = Arc::new(Mutex::new(Vec::new()));
            let task = tokio::spawn(record(Arc::clone(&socket), Arc::clone(&log), echo));
            Peer { socket, log, task }
        }

        fn addr(&self) -> SocketAddr {
            self.socket.local_addr().expect("peer address")
        }

        fn received(&self) -> Vec<u32> {
            let log = self.log.lock().expect("log lock");
            log.iter().map(|(index, _)| *index).collect()
        }

        fn arrivals(&self) -> Vec<(u32, Instant)> {
            self.log.lock().expect("log lock").clone()
        }

        /// Sends one datagram per index, pausing every [`BURST`] so the
        /// kernel never drops for want of buffer; returns the send times.
        async fn send_paced(&self, to: SocketAddr, indices: Range<u32>) -> Vec<Instant> {
            let mut sent = Vec::new();
            for index in indices {
                sent.push(Instant::now());
                (self.socket.send_to(&index.to_be_bytes(), to).await).expect("send");
                if index % BURST == BURST - 1 {
                    sleep(Duration::from_millis(1)).await;
                }
            }
            sent
        }
    }

    impl Drop for Peer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn record(socket: Arc<UdpSocket>, log: Arc<Mutex<Vec<(u32, Instant)>>>, echo: bool) {
        let mut buf = [0u8; 64];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            let at = Instant::now();
            let Some(index) = buf.get(..n).and_then(|b| <[u8; 4]>::try_from(b).ok()) else {
                continue;
            };
            log.lock()
                .expect("log lock")
                .push((u32::from_be_bytes(index), at));
            if echo {
                let _ = socket.send_to(&buf[..n], from).await;
            }
        }
    }

    async fn relay(server: &Peer, up: Impairment, down: Impairment, seed: u64) -> Relay {
        Relay::start((LOCAL, 0).into(), server.addr(), up, down, seed)
            .await
            .expect("relay starts")
    }

    async fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + HANG_GUARD;
        while !done() {
            assert!(Instant::now() < deadline, "hang guard: {what}");
            sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits until the relay has settled `n` datagrams in `direction` and
    /// `peer` has received every delivered one.
    async fn settle(
        relay: &Relay,
        peer: &Peer,
        n: u64,
        direction: fn(RelayStats) -> DirectionStats,
    ) -> DirectionStats {
        wait_until("relay settles", || {
            let s = direction(relay.stats());
            s.seen == n && s.dropped + s.discarded + s.delivered == n
        })
        .await;
        let stats = direction(relay.stats());
        wait_until("peer receives", || {
            peer.received().len() as u64 == stats.delivered
        })
        .await;
        stats
    }

    fn up(stats: RelayStats) -> DirectionStats {
        stats.up
    }

    fn down(stats: RelayStats) -> DirectionStats {
        stats.down
    }

    fn lossy(loss: f64) -> Impairment {
        Impairment {
            loss,
            ..Impairment::default()
        }
    }

    #[tokio::test]
    async fn perfect_link_relays_both_ways() {
        let server = Peer::bind(true).await;
        let client = Peer::bind(false).await;
        let relay = relay(&server, Impairment::default(), Impairment::default(), 1).await;
        client.send_paced(relay.local_addr(), 0..200).await;
        settle(&relay, &server, 200, up).await;
        let down_stats = settle(&relay, &client, 200, down).await;
        let all: Vec<u32> = (0..200).collect();
        assert_eq!(server.received(), all);
        assert_eq!(client.received(), all);
        assert_eq!(relay.stats().up.delivered, 200);
        assert_eq!(down_stats.delivered, 200);
    }

    #[tokio::test]
    async fn seeded_loss_is_plausible_and_reproducible() {
        async fn dropped_indices(seed: u64) -> (Vec<u32>, DirectionStats) {
            let server = Peer::bind(false).await;
            let client = Peer::bind(false).await;
            let relay = relay(&server, lossy(0.2), Impairment::default(), seed).await;
            client.send_paced(relay.local_addr(), 0..2000).await;
            let stats = settle(&relay, &server, 2000, up).await;
            let received = server.received();
            let lost = (0..2000).filter(|i| !received.contains(i)).collect();
            (lost, stats)
        }
        let (first, stats) = dropped_indices(7).await;
        assert_eq!(stats.discarded, 0, "{stats:?}");
        assert_eq!(first.len() as u64, stats.dropped);
        assert!((300..500).contains(&first.len()), "{} dropped", first.len());
        let (again, _) = dropped_indices(7).await;
        assert_eq!(first, again, "same seed, same drops");
        let (other, _) = dropped_indices(8).await;
        assert_ne!(first, other, "another seed, other drops");
    }

    #[tokio::test]
    async fn delay_is_a_lower_bound_each_way() {
        let delay_up = Duration::from_millis(50);
        let delay_down = Duration::from_millis(30);
        let server = Peer::bind(true).await;
        let client = Peer::bind(false).await;
        let impair = |delay| Impairment {
            delay,
            ..Impairment::default()
        };
        let relay = relay(&server, impair(delay_up), impair(delay_down), 3).await;
        let sent = client.send_paced(relay.local_addr(), 0..20).await;
        settle(&relay, &client, 20, down).await;
        let at_server = server.arrivals();
        let at_client = client.arrivals();
        assert_eq!(at_server.len(), 20);
        assert_eq!(at_client.len(), 20);
        for ((index, there), (echoed, back)) in at_server.into_iter().zip(at_client) {
            assert_eq!(index, echoed);
            let sent = sent[index as usize];
            assert!(there - sent >= delay_up, "{index}: {:?}", there - sent);
            assert!(
                back - sent >= delay_up + delay_down,
                "{index}: {:?}",
                back - sent
            );
        }
    }

    fn jittery(reorder: bool) -> Impairment {
        Impairment {
            delay: Duration::from_millis(20),
            jitter: Duration::from_millis(20),
            reorder,
            ..Impairment::default()
        }
    }

    #[tokio::test]
    async fn jitter_without_reorder_keeps_order() {
        let server = Peer::bind(false).await;
        let client = Peer::bind(false).await;
        let relay = relay(&server, jittery(false), Impairment::default(), 4).await;
        client.send_paced(relay.local_addr(), 0..500).await;
        settle(&relay, &server, 500, up).await;
        assert_eq!(server.received(), (0..500).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn jitter_with_reorder_reorders() {
        let server = Peer::bind(false).await;
        let client = Peer::bind(false).await;
        let relay = relay(&server, jittery(true), Impairment::default(), 4).await;
        client.send_paced(relay.local_addr(), 0..500).await;
        settle(&relay, &server, 500, up).await;
        let mut received = server.received();
        let inversions = received.windows(2).filter(|w| w[1] < w[0]).count();
        assert!(inversions > 0, "no datagram overtook another");
        received.sort_unstable();
        assert_eq!(received, (0..500).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn set_total_loss_drops_everything_until_restored() {
        let server = Peer::bind(false).await;
        let client = Peer::bind(false).await;
        let relay = relay(&server, Impairment::default(), Impairment::default(), 5).await;
        client.send_paced(relay.local_addr(), 0..100).await;
        settle(&relay, &server, 100, up).await;

        relay.set(lossy(1.0), lossy(1.0));
        client.send_paced(relay.local_addr(), 100..200).await;
        let stats = settle(&relay, &server, 200, up).await;
        assert_eq!(stats.dropped, 100, "{stats:?}");
        assert_eq!(server.received(), (0..100).collect::<Vec<_>>());

        relay.set(Impairment::default(), Impairment::default());
        client.send_paced(relay.local_addr(), 200..300).await;
        settle(&relay, &server, 300, up).await;
        let expected: Vec<u32> = (0..100).chain(200..300).collect();
        assert_eq!(server.received(), expected);
    }

    #[tokio::test]
    async fn stop_frees_the_front_port() {
        let server = Peer::bind(false).await;
        let relay = relay(&server, Impairment::default(), Impairment::default(), 6).await;
        let front = relay.local_addr();
        relay.stop().await;
        UdpSocket::bind(front)
            .await
            .expect("front port is free again");
    }

    #[test]
    fn lane_decisions_depend_only_on_seed_and_sequence() {
        let start = Instant::now();
        let impairment = Impairment {
            loss: 0.3,
            delay: Duration::from_millis(10),
            jitter: Duration::from_millis(30),
            reorder: false,
            ..Impairment::default()
        };
        let run = |spacing: Duration| {
            let mut lane: Lane<()> = Lane::new(11, 12);
            let mut dues = Vec::new();
            let lost: Vec<bool> = (0..1000u32)
                .map(|i| {
                    let due = lane.decide(&impairment, start + spacing * i);
                    dues.extend(due);
                    due.is_none()
                })
                .collect();
            (lost, dues)
        };
        let (lost_fast, dues) = run(Duration::from_micros(10));
        let (lost_slow, _) = run(Duration::from_millis(5));
        assert_eq!(lost_fast, lost_slow, "loss must not depend on timing");
        assert!(
            dues.windows(2).all(|w| w[0] <= w[1]),
            "in order without reorder"
        );
    }
}
