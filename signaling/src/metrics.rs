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
        out.push_str(&hush_sfu::metrics::process_metrics());
        out
    }
}
