//! Counters and gauges, rendered in the Prometheus text format at
//! `/metrics`. Lock-free atomics on the forwarding path; the per-room
//! gauge takes a lock only when membership changes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use hush_proto::{MediaKind, RoomId};

/// Why a packet was not forwarded to a subscriber, or not sent at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DropReason {
    /// The subscriber's outgoing track is not negotiated yet.
    NotNegotiated,
    /// Writing to the subscriber's connection failed.
    WriteError,
    /// The capture writer could not keep up (the packet was still forwarded).
    CaptureOverflow,
    /// The subscriber's TCP connection was behind (its write queue full)
    /// or gone: dropped, as a congested UDP path would lose it.
    TcpBacklog,
    /// An RFC 2198 RED audio packet whose header does not parse (or whose
    /// primary block is not Opus), for a subscriber that did not negotiate
    /// RED and gets the primary alone. RED subscribers still get it.
    MalformedRed,
}

impl DropReason {
    const ALL: [DropReason; 5] = [
        DropReason::NotNegotiated,
        DropReason::WriteError,
        DropReason::CaptureOverflow,
        DropReason::TcpBacklog,
        DropReason::MalformedRed,
    ];

    fn label(self) -> &'static str {
        match self {
            DropReason::NotNegotiated => "not_negotiated",
            DropReason::WriteError => "write_error",
            DropReason::CaptureOverflow => "capture_overflow",
            DropReason::TcpBacklog => "tcp_backlog",
            DropReason::MalformedRed => "malformed_red",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why an ICE-TCP connection was closed before it carried media (or, for
/// [`TcpRefusal::Framing`], whenever it broke framing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TcpRefusal {
    /// The worker already had its maximum of open connections.
    OverCap,
    /// Its first packet was not a STUN request a peer of the worker accepts.
    FirstContact,
    /// Nothing arrived within the first-contact timeout. Also how a client
    /// whose UDP works ends: it dials the TCP candidate too, then leaves
    /// that connection unused.
    Silent,
    /// A zero-length or oversize frame.
    Framing,
}

impl TcpRefusal {
    const ALL: [TcpRefusal; 4] = [
        TcpRefusal::OverCap,
        TcpRefusal::FirstContact,
        TcpRefusal::Silent,
        TcpRefusal::Framing,
    ];

    fn label(self) -> &'static str {
        match self {
            TcpRefusal::OverCap => "over_cap",
            TcpRefusal::FirstContact => "first_contact",
            TcpRefusal::Silent => "silent",
            TcpRefusal::Framing => "framing",
        }
    }
}

/// Upper bounds (seconds) of the forwarding-time histogram buckets.
const BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
];

#[derive(Debug, Default)]
struct PerKind {
    packets_in: AtomicU64,
    bytes_in: AtomicU64,
    packets_out: AtomicU64,
    bytes_out: AtomicU64,
}

/// Packets forwarded in one fan-out, counted locally and added to
/// [`Metrics`] once ([`Metrics::add_tally`]): a fan-out to hundreds of
/// subscribers then touches the shared counters a handful of times.
#[derive(Debug)]
pub(crate) struct Tally {
    kind: MediaKind,
    packets: u64,
    bytes: u64,
    hist: [u64; BUCKETS.len()],
    sum_ns: u64,
}

impl Tally {
    /// One packet of `bytes` handed to a subscriber's connection `took`
    /// after it arrived.
    pub(crate) fn packet(&mut self, bytes: usize, took: Duration) {
        self.packets += 1;
        self.bytes += bytes as u64;
        let secs = took.as_secs_f64();
        // Past the last bound: counted in `+Inf` only, as before.
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.hist[i] += 1;
        }
        self.sum_ns =
            (self.sum_ns).saturating_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
    }
}

/// All of the SFU's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    audio: PerKind,
    video: PerKind,
    drops: [AtomicU64; DropReason::ALL.len()],
    nacks_received: AtomicU64,
    nacks_sent: AtomicU64,
    plis_received: AtomicU64,
    plis_sent: AtomicU64,
    subscriptions: AtomicI64,
    peer_connections: AtomicI64,
    tcp_connections: AtomicI64,
    tcp_refused: [AtomicU64; TcpRefusal::ALL.len()],
    hist: [AtomicU64; BUCKETS.len()],
    hist_count: AtomicU64,
    hist_sum_ns: AtomicU64,
    /// Participants per room, per worker (each worker reports its own rooms).
    rooms: Mutex<BTreeMap<usize, BTreeMap<RoomId, usize>>>,
}

impl Metrics {
    fn kind(&self, kind: MediaKind) -> &PerKind {
        match kind {
            MediaKind::Audio => &self.audio,
            MediaKind::Video => &self.video,
        }
    }

    pub(crate) fn packet_in(&self, kind: MediaKind, bytes: usize) {
        let k = self.kind(kind);
        k.packets_in.fetch_add(1, Relaxed);
        k.bytes_in.fetch_add(bytes as u64, Relaxed);
    }

    /// An empty [`Tally`] of forwarded `kind` packets.
    pub(crate) fn tally(&self, kind: MediaKind) -> Tally {
        Tally {
            kind,
            packets: 0,
            bytes: 0,
            hist: [0; BUCKETS.len()],
            sum_ns: 0,
        }
    }

    /// Adds what `tally` counted to the shared counters.
    pub(crate) fn add_tally(&self, tally: &Tally) {
        if tally.packets == 0 {
            return;
        }
        let k = self.kind(tally.kind);
        k.packets_out.fetch_add(tally.packets, Relaxed);
        k.bytes_out.fetch_add(tally.bytes, Relaxed);
        for (shared, n) in self.hist.iter().zip(tally.hist) {
            if n > 0 {
                shared.fetch_add(n, Relaxed);
            }
        }
        self.hist_count.fetch_add(tally.packets, Relaxed);
        self.hist_sum_ns.fetch_add(tally.sum_ns, Relaxed);
    }

    pub(crate) fn dropped(&self, reason: DropReason) {
        self.drops[reason.index()].fetch_add(1, Relaxed);
    }

    pub(crate) fn nacks_received_add(&self, n: u64) {
        self.nacks_received.fetch_add(n, Relaxed);
    }

    pub(crate) fn nacks_sent_add(&self, n: u64) {
        self.nacks_sent.fetch_add(n, Relaxed);
    }

    pub(crate) fn pli_received(&self) {
        self.plis_received.fetch_add(1, Relaxed);
    }

    pub(crate) fn pli_sent(&self) {
        self.plis_sent.fetch_add(1, Relaxed);
    }

    pub(crate) fn subscriptions_add(&self, delta: i64) {
        self.subscriptions.fetch_add(delta, Relaxed);
    }

    pub(crate) fn peer_connections_add(&self, delta: i64) {
        self.peer_connections.fetch_add(delta, Relaxed);
    }

    pub(crate) fn tcp_connections_add(&self, delta: i64) {
        self.tcp_connections.fetch_add(delta, Relaxed);
    }

    pub(crate) fn tcp_refused(&self, reason: TcpRefusal) {
        self.tcp_refused[reason as usize].fetch_add(1, Relaxed);
    }

    pub(crate) fn set_rooms(&self, worker: usize, rooms: BTreeMap<RoomId, usize>) {
        if let Ok(mut r) = self.rooms.lock() {
            r.insert(worker, rooms);
        }
    }

    /// Rooms with at least one participant, over every worker.
    pub fn room_count(&self) -> usize {
        self.rooms
            .lock()
            .map(|r| r.values().map(BTreeMap::len).sum())
            .unwrap_or_default()
    }

    /// Packets forwarded out to subscribers, all kinds.
    pub fn packets_out(&self) -> u64 {
        self.audio.packets_out.load(Relaxed) + self.video.packets_out.load(Relaxed)
    }

    /// Packets dropped for `reason`.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()].load(Relaxed)
    }

    /// NACK packets received from subscribers.
    pub fn nacks_received(&self) -> u64 {
        self.nacks_received.load(Relaxed)
    }

    /// PLI/FIR key-frame requests sent to publishers.
    pub fn plis_sent(&self) -> u64 {
        self.plis_sent.load(Relaxed)
    }

    /// Live peer connections.
    pub fn peer_connections(&self) -> i64 {
        self.peer_connections.load(Relaxed)
    }

    /// Open ICE-TCP connections, all workers.
    pub fn tcp_connections(&self) -> i64 {
        self.tcp_connections.load(Relaxed)
    }

    /// ICE-TCP connections closed for `reason`.
    pub fn tcp_refusals(&self, reason: TcpRefusal) -> u64 {
        self.tcp_refused[reason as usize].load(Relaxed)
    }

    /// Live subscriptions (forwarded tracks).
    pub fn subscriptions(&self) -> i64 {
        self.subscriptions.load(Relaxed)
    }

    /// The whole set in the Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(4096);
        let mut counter = |name: &str, help: &str, rows: &[(String, u64)]| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, v) in rows {
                let _ = writeln!(s, "{name}{labels} {v}");
            }
        };
        let per_kind = |f: fn(&PerKind) -> &AtomicU64| {
            [MediaKind::Audio, MediaKind::Video]
                .iter()
                .map(|k| {
                    (
                        format!("{{kind=\"{}\"}}", k.as_str()),
                        f(self.kind(*k)).load(Relaxed),
                    )
                })
                .collect::<Vec<_>>()
        };
        counter(
            "hush_sfu_packets_in_total",
            "RTP packets received from publishers.",
            &per_kind(|k| &k.packets_in),
        );
        counter(
            "hush_sfu_bytes_in_total",
            "RTP payload bytes received from publishers.",
            &per_kind(|k| &k.bytes_in),
        );
        counter(
            "hush_sfu_packets_out_total",
            "RTP packets forwarded to subscribers.",
            &per_kind(|k| &k.packets_out),
        );
        counter(
            "hush_sfu_bytes_out_total",
            "RTP payload bytes forwarded to subscribers.",
            &per_kind(|k| &k.bytes_out),
        );
        let drops: Vec<_> = DropReason::ALL
            .iter()
            .map(|r| (format!("{{reason=\"{}\"}}", r.label()), self.drops(*r)))
            .collect();
        counter(
            "hush_sfu_dropped_packets_total",
            "Packets not forwarded (or not captured), by reason.",
            &drops,
        );
        let refused: Vec<_> = TcpRefusal::ALL
            .iter()
            .map(|r| {
                (
                    format!("{{reason=\"{}\"}}", r.label()),
                    self.tcp_refusals(*r),
                )
            })
            .collect();
        counter(
            "hush_sfu_tcp_connections_refused_total",
            "ICE-TCP connections closed unclaimed (first packet not a STUN request a peer accepts; silent for 5 s, as are the unused ones of clients whose UDP works; over the cap), or for breaking RFC 4571 framing, by reason.",
            &refused,
        );
        counter(
            "hush_sfu_nacks_received_total",
            "RTCP NACK packets received from subscribers (answered from the retransmission buffer).",
            &[(String::new(), self.nacks_received.load(Relaxed))],
        );
        counter(
            "hush_sfu_nacks_sent_total",
            "RTCP NACK packets sent to publishers for the SFU's own losses.",
            &[(String::new(), self.nacks_sent.load(Relaxed))],
        );
        counter(
            "hush_sfu_plis_received_total",
            "PLI/FIR key-frame requests received from subscribers.",
            &[(String::new(), self.plis_received.load(Relaxed))],
        );
        counter(
            "hush_sfu_plis_sent_total",
            "PLI key-frame requests sent to publishers (after rate limiting).",
            &[(String::new(), self.plis_sent.load(Relaxed))],
        );
        let gauge = |s: &mut String, name: &str, help: &str, v: i64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let rooms: BTreeMap<RoomId, usize> = self
            .rooms
            .lock()
            .map(|r| r.values().flatten().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default();
        gauge(
            &mut s,
            "hush_sfu_rooms",
            "Rooms with at least one participant.",
            rooms.len() as i64,
        );
        gauge(
            &mut s,
            "hush_sfu_subscribers",
            "Forwarded tracks (one per subscriber per published track).",
            self.subscriptions.load(Relaxed),
        );
        gauge(
            &mut s,
            "hush_sfu_peer_connections",
            "Open peer connections.",
            self.peer_connections.load(Relaxed),
        );
        gauge(
            &mut s,
            "hush_sfu_tcp_connections",
            "Open ICE-TCP connections (clients whose UDP is blocked; others may hold one unused).",
            self.tcp_connections.load(Relaxed),
        );
        let _ = writeln!(
            s,
            "# HELP hush_sfu_room_participants Participants per room.\n# TYPE hush_sfu_room_participants gauge"
        );
        for (room, n) in &rooms {
            let _ = writeln!(
                s,
                "hush_sfu_room_participants{{room=\"{}\"}} {n}",
                escape_label(room.as_str())
            );
        }
        let name = "hush_sfu_forwarding_seconds";
        let _ = writeln!(
            s,
            "# HELP {name} Time from a packet's arrival from the publisher to its hand-off to a subscriber's connection.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (b, c) in BUCKETS.iter().zip(&self.hist) {
            cumulative += c.load(Relaxed);
            let _ = writeln!(s, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.hist_count.load(Relaxed);
        let _ = writeln!(s, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.hist_sum_ns.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(s, "{name}_sum {sum}\n{name}_count {count}");
        s
    }
}

/// Prometheus label values escape backslash, double quote and newline.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The standard Prometheus process metrics (CPU seconds, resident and peak
/// resident memory), read from `/proc/self`; empty where there is no `/proc`.
/// Load tests read a server's or a media node's cost from them.
pub fn process_metrics() -> String {
    let mut out = String::new();
    if let Some(cpu) = process_cpu_seconds() {
        let _ = write!(
            out,
            "# HELP process_cpu_seconds_total User and system CPU time of the process.\n\
             # TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {cpu:.6}\n"
        );
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for (field, name, help) in [
        (
            "VmRSS:",
            "process_resident_memory_bytes",
            "Resident memory of the process.",
        ),
        (
            "VmHWM:",
            "process_resident_memory_peak_bytes",
            "Peak resident memory of the process.",
        ),
    ] {
        if let Some(kib) = status_kib(&status, field) {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}\n",
                kib * 1024
            );
        }
    }
    out
}

/// User+system CPU seconds of this process, every thread (alive or ended)
/// included, to the microsecond.
pub fn process_cpu_seconds() -> Option<f64> {
    rusage_seconds(nix::sys::resource::UsageWho::RUSAGE_SELF)
}

/// User+system CPU seconds of the calling thread (Linux), to the microsecond.
pub fn thread_cpu_seconds() -> Option<f64> {
    #[cfg(target_os = "linux")]
    {
        rusage_seconds(nix::sys::resource::UsageWho::RUSAGE_THREAD)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

fn rusage_seconds(who: nix::sys::resource::UsageWho) -> Option<f64> {
    let u = nix::sys::resource::getrusage(who).ok()?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Some(secs(u.user_time()) + secs(u.system_time()))
}

/// A `kB` figure from `/proc/<pid>/status`.
fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_lists_every_family_and_rooms_by_label() {
        let m = Metrics::default();
        m.packet_in(MediaKind::Video, 100);
        let mut tally = m.tally(MediaKind::Video);
        tally.packet(100, Duration::from_micros(300));
        m.add_tally(&tally);
        m.dropped(DropReason::NotNegotiated);
        m.tcp_refused(TcpRefusal::FirstContact);
        m.tcp_connections_add(1);
        m.set_rooms(
            0,
            BTreeMap::from([("a.b".parse().expect("valid room id"), 2)]),
        );
        let text = m.render();
        for needle in [
            "hush_sfu_packets_in_total{kind=\"video\"} 1",
            "hush_sfu_bytes_out_total{kind=\"video\"} 100",
            "hush_sfu_packets_out_total{kind=\"audio\"} 0",
            "hush_sfu_dropped_packets_total{reason=\"not_negotiated\"} 1",
            "hush_sfu_rooms 1",
            "hush_sfu_room_participants{room=\"a.b\"} 2",
            "hush_sfu_forwarding_seconds_bucket{le=\"0.00025\"} 0",
            "hush_sfu_forwarding_seconds_bucket{le=\"0.0005\"} 1",
            "hush_sfu_forwarding_seconds_count 1",
            "hush_sfu_nacks_received_total 0",
            "hush_sfu_plis_sent_total 0",
            "hush_sfu_dropped_packets_total{reason=\"tcp_backlog\"} 0",
            "hush_sfu_dropped_packets_total{reason=\"malformed_red\"} 0",
            "hush_sfu_tcp_connections_refused_total{reason=\"first_contact\"} 1",
            "hush_sfu_tcp_connections 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        m.set_rooms(0, BTreeMap::new());
        assert!(!m.render().contains("room=\""));
    }

    #[test]
    fn label_values_are_escaped() {
        // Room ids cannot hold these characters (hush_proto::RoomId), but
        // the renderer does not rely on it.
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn cpu_time_is_measured_to_the_microsecond() {
        let (p0, t0) = (process_cpu_seconds(), thread_cpu_seconds());
        // Burn a little CPU on this thread; both clocks must move, finer than a 10 ms tick.
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(3) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(1));
        }
        let (p1, t1) = (process_cpu_seconds(), thread_cpu_seconds());
        let (p0, p1) = (p0.expect("rusage"), p1.expect("rusage"));
        assert!(p1 > p0, "process CPU moved: {p0} -> {p1}");
        if let (Some(t0), Some(t1)) = (t0, t1) {
            assert!(t1 > t0 && t1 - t0 < 1.0, "thread CPU moved: {t0} -> {t1}");
        }
    }

    #[test]
    fn process_metrics_are_rendered_on_linux() {
        let text = process_metrics();
        if std::path::Path::new("/proc/self/stat").exists() {
            for name in [
                "process_cpu_seconds_total ",
                "process_resident_memory_bytes ",
                "process_resident_memory_peak_bytes ",
            ] {
                assert!(text.contains(name), "{name} missing from {text}");
            }
        }
        assert_eq!(status_kib("VmHWM:\t  2048 kB\n", "VmHWM:"), Some(2048));
        assert_eq!(status_kib("VmRSS: lots\n", "VmRSS:"), None);
    }
}
