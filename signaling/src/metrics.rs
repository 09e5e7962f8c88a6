//! Counters for `/metrics`, rendered in the Prometheus text format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use hush_proto::ErrorCode;

use crate::admission::ConnectionRefusal as Refusal;

/// Kinds of relayed messages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Relayed {
    /// An e2ee envelope between two members.
    Envelope,
    /// SDP or ICE from a client, accepted by the media router.
    ToSfu,
    /// SDP or ICE from the media router, sent to a client.
    FromSfu,
}

const RELAYED: [(Relayed, &str); 3] = [
    (Relayed::Envelope, "envelope"),
    (Relayed::ToSfu, "to_sfu"),
    (Relayed::FromSfu, "from_sfu"),
];

/// The server's counters; gauges for rooms and participants come from the room table.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    connections: AtomicU64,
    refused: [AtomicU64; 2],
    handshake_timeouts: AtomicU64,
    tls_failures: AtomicU64,
    joins: AtomicU64,
    replaced: AtomicU64,
    relayed_connections: AtomicU64,
    relayed: [AtomicU64; 3],
    rejected: [AtomicU64; ErrorCode::ALL.len()],
}

impl Metrics {
    pub(crate) fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn relayed_connection(&self) {
        self.relayed_connections.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    pub(crate) fn refused(&self, why: Refusal) {
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn handshake_timed_out(&self) {
        self.handshake_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn tls_handshake_failed(&self) {
        self.tls_failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn joined(&self) {
        self.joins.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn replaced(&self) {
        self.replaced.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn relayed(&self, kind: Relayed) {
        self.relayed[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn rejected(&self, code: ErrorCode) {
        self.rejected[code.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every counter.
    pub(crate) fn render(&self, rooms: usize, participants: usize) -> String {
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"
            );
        };
        gauge(
            &mut out,
            "hush_signaling_rooms",
            "Rooms with at least one member.",
            rooms as u64,
        );
        gauge(
            &mut out,
            "hush_signaling_participants",
            "Participants in all rooms.",
            participants as u64,
        );
        gauge(
            &mut out,
            "hush_signaling_connections",
            "Open WebSocket connections, joined or not.",
            self.connections(),
        );
        out.push_str(
            "# HELP hush_signaling_connections_refused_total Connections refused at accept, by reason.\n\
             # TYPE hush_signaling_connections_refused_total counter\n",
        );
        for why in [Refusal::ServerFull, Refusal::AddressFull] {
            let v = self.refused[why as usize].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "hush_signaling_connections_refused_total{{reason=\"{}\"}} {v}",
                why.as_str()
            );
        }
        let _ = write!(
            out,
            "# HELP hush_signaling_handshake_timeouts_total Connections closed before their request or upgrade completed.\n\
             # TYPE hush_signaling_handshake_timeouts_total counter\n\
             hush_signaling_handshake_timeouts_total {}\n",
            self.handshake_timeouts.load(Ordering::Relaxed)
        );
        let _ = write!(
            out,
            "# HELP hush_signaling_tls_handshake_failures_total Connections closed because their TLS handshake failed.\n\
             # TYPE hush_signaling_tls_handshake_failures_total counter\n\
             hush_signaling_tls_handshake_failures_total {}\n",
            self.tls_failures.load(Ordering::Relaxed)
        );
        let _ = write!(
            out,
            "# HELP hush_signaling_joins_total Successful joins.\n\
             # TYPE hush_signaling_joins_total counter\n\
             hush_signaling_joins_total {}\n",
            self.joins.load(Ordering::Relaxed)
        );
        let _ = write!(
            out,
            "# HELP hush_signaling_replaced_total Members whose place a newer connection under the same name took.\n\
             # TYPE hush_signaling_replaced_total counter\n\
             hush_signaling_replaced_total {}\n",
            self.replaced.load(Ordering::Relaxed)
        );
        let _ = write!(
            out,
            "# HELP hush_cluster_relayed_connections_total Connections relayed to the node their room lives on.\n\
             # TYPE hush_cluster_relayed_connections_total counter\n\
             hush_cluster_relayed_connections_total {}\n",
            self.relayed_connections.load(Ordering::Relaxed)
        );
        out.push_str(
            "# HELP hush_signaling_messages_relayed_total Messages relayed, by kind.\n\
             # TYPE hush_signaling_messages_relayed_total counter\n",
        );
        for (kind, label) in RELAYED {
            let v = self.relayed[kind as usize].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "hush_signaling_messages_relayed_total{{kind=\"{label}\"}} {v}"
            );
        }
        out.push_str(
            "# HELP hush_signaling_messages_rejected_total Messages refused, by reason.\n\
             # TYPE hush_signaling_messages_rejected_total counter\n",
        );
        for code in ErrorCode::ALL {
            let v = self.rejected[code.index()].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "hush_signaling_messages_rejected_total{{reason=\"{}\"}} {v}",
                code.as_str()
            );
        }
        out.push_str(&process_metrics());
        out
    }
}

/// The standard Prometheus process metrics (CPU seconds, resident and peak
/// resident memory), read from `/proc/self`; empty where there is no `/proc`.
/// Load tests read the server's cost from them.
pub(crate) fn process_metrics() -> String {
    let mut out = String::new();
    if let Some(cpu) = process_cpu_seconds() {
        let _ = write!(
            out,
            "# HELP process_cpu_seconds_total User and system CPU time of the server process.\n\
             # TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {cpu:.6}\n"
        );
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for (field, name, help) in [
        (
            "VmRSS:",
            "process_resident_memory_bytes",
            "Resident memory of the server process.",
        ),
        (
            "VmHWM:",
            "process_resident_memory_peak_bytes",
            "Peak resident memory of the server process.",
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
