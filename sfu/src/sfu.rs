//! The SFU's public API: [`Sfu`], its configuration, and what it tells the
//! signaling layer ([`SfuEvent`]).
//!
//! The transport that carries the API out is in `udp.rs`: str0m peers
//! (sans-IO) on one UDP socket per worker (and, for clients whose UDP is
//! blocked, one TCP listener per worker: `tcp.rs`), each worker
//! one task that owns its rooms' [`Router`](crate::Router) and peers. A call here becomes a
//! [`Command`] to the worker its room lives on ([`worker_of`]) and waits
//! for the reply; the worker answers commands in order, between datagrams.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hush_proto::{IceCandidate, MediaKind, ParticipantId, RoomId};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::capture::CaptureWriter;
use crate::error::Error;
use crate::ids::TrackId;
use crate::metrics::Metrics;
use crate::routing::RoutingConfig;

/// A test hook that sees every forwarded payload before it reaches any
/// subscriber and may replace it or inject packets after it: a tampering
/// (or forging) SFU, for tests that check clients detect it. Exists only
/// with the `test-hooks` feature, which no production build enables.
#[cfg(feature = "test-hooks")]
#[derive(Clone)]
pub struct TamperHook(pub Arc<TamperFn>);

/// The function a [`TamperHook`] wraps: a publisher's payload in, what the
/// SFU forwards for it out.
#[cfg(feature = "test-hooks")]
pub type TamperFn = dyn Fn(MediaKind, &[u8]) -> Tampering + Send + Sync;

#[cfg(feature = "test-hooks")]
impl std::fmt::Debug for TamperHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TamperHook")
    }
}

/// What a [`TamperHook`] does with one packet: [`Tampering::default`]
/// forwards it as it came.
///
/// Injection is for audio only: while a hook is set, every audio leg
/// numbers the packets it sends by a running counter of its own, so
/// injected packets get sequence numbers of their own (the receiver's SRTP
/// drops a repeated one as a replay); audio is never retransmitted, so no
/// NACK needs mapping back. Video legs keep the publisher's numbering (their
/// NACKs name the publisher's packets), and `inject` is ignored for video.
#[cfg(feature = "test-hooks")]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tampering {
    /// Forward these bytes instead of the genuine payload; `None` forwards
    /// the genuine one.
    pub replace: Option<Vec<u8>>,
    /// Audio only: payloads to send after it, in order, on every
    /// subscriber's leg, as packets of the same stream (same RTP timestamp,
    /// marker and audio level).
    pub inject: Vec<Vec<u8>>,
}

#[cfg(feature = "test-hooks")]
impl Tampering {
    /// Forward `payload` instead of the genuine one.
    pub fn replace(payload: Vec<u8>) -> Self {
        Self {
            replace: Some(payload),
            inject: Vec::new(),
        }
    }

    /// Forward the genuine payload, then `payloads` (audio only).
    pub fn inject(payloads: Vec<Vec<u8>>) -> Self {
        Self {
            replace: None,
            inject: payloads,
        }
    }
}

/// How the SFU runs.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// Local UDP addresses: the first is where worker 0 binds (worker i at
    /// port + i; port 0 picks free ports).
    pub udp_addrs: Vec<SocketAddr>,
    /// Routing decisions: key-frame rate limit, active speaker.
    pub routing: RoutingConfig,
    /// Events that may wait for the signaling layer per participant; a
    /// participant whose events are not consumed beyond this is removed.
    pub event_queue: usize,
    /// Write every forwarded payload to this file (format: [`hush_proto::capture`]).
    pub capture: Option<PathBuf>,
    /// Test hook: a tampering SFU (see [`TamperHook`]); only with the
    /// `test-hooks` feature.
    #[cfg(feature = "test-hooks")]
    pub tamper: Option<TamperHook>,
    /// A connected participant not heard from for this long is removed as
    /// failed (a peer that closes its connection goes at once). An ICE-lite
    /// SFU sends no checks of its own: it hears a receive-only client only
    /// through its ICE checks (webrtc-rs every 2 s, Chrome every 2.5 s,
    /// RFC 7675 consent every 4-6 s) and RTCP, so keep this above two of
    /// those gaps. Default 6 s: with the signaling server's 2 s WebSocket
    /// liveness check after it, a vanished member is announced as left
    /// within 10 s; an outage longer than this ends that member's media.
    pub ice_failed_timeout: Duration,
    /// A participant whose media connection (ICE and DTLS) is not up this
    /// long after it was added is removed as failed.
    pub connect_timeout: Duration,
    /// Addresses announced to clients as the SFU's ICE candidates, with
    /// each worker's port, instead of the bound address: the public IPs of
    /// a host behind 1:1 NAT (a cloud VM). Empty: the bound address, which
    /// must then be a specific one.
    pub public_ips: Vec<IpAddr>,
    /// Forwarding loops, each with its own UDP port (the first `udp_addrs`
    /// entry, port + i when it is not 0); a room lives on one of them.
    pub workers: usize,
    /// ICE-TCP (RFC 6544, framing RFC 4571) for clients whose UDP is
    /// blocked: worker i also listens on TCP at the UDP IP, this port + i
    /// (0 picks free ports), and every peer's SDP carries a passive TCP
    /// host candidate there on each announced address; clients prefer UDP
    /// pairs. It must not be the UDP port's number: webrtc-rs 0.21 clients
    /// (hush's own) find a remote candidate by address alone, so a TCP and
    /// a UDP candidate on one address break each other. `None`: off.
    pub tcp_port: Option<u16>,
}

impl SfuConfig {
    /// Checks what must hold for the SFU to start, short of binding its
    /// ports: an address to bind, one clients can be told (a specific bind
    /// address or a public IP), and an ICE-TCP port apart from the UDP one.
    pub fn validate(&self) -> Result<(), Error> {
        let Some(base) = self.udp_addrs.first() else {
            return Err(Error::Config("no UDP address to bind".into()));
        };
        if base.ip().is_unspecified() && self.public_ips.is_empty() {
            return Err(Error::Config(format!(
                "the SFU is bound to {base}, an unspecified address, and needs a public IP \
                 (--public-ip) to announce to clients, or a specific address to bind \
                 (--rtc-ip), which is then announced"
            )));
        }
        if let Some(tcp) = self.tcp_port
            && tcp != 0
            && tcp == base.port()
        {
            return Err(Error::Config(format!(
                "the ICE-TCP port {tcp} is the UDP port: webrtc-rs clients find a remote \
                 candidate by address alone, so a TCP and a UDP candidate on one address \
                 break each other; give ICE-TCP another port"
            )));
        }
        Ok(())
    }
}

impl Default for SfuConfig {
    fn default() -> Self {
        Self {
            udp_addrs: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            routing: RoutingConfig::default(),
            event_queue: 1024,
            capture: None,
            #[cfg(feature = "test-hooks")]
            tamper: None,
            ice_failed_timeout: Duration::from_secs(6),
            connect_timeout: Duration::from_secs(15),
            public_ips: Vec::new(),
            workers: 1,
            tcp_port: Some(0),
        }
    }
}

/// Why the SFU dropped a participant on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer connection failed (ICE failure: the peer vanished).
    ConnectionFailed,
    /// The peer closed its connection.
    ConnectionClosed,
    /// Its events were not consumed (a stuck signaling session).
    EventsOverflowed,
    /// The SFU is shutting down.
    Shutdown,
}

/// What the SFU tells one participant, through signaling (and, as JSON,
/// what a standalone node's control API returns from `.../events`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum SfuEvent {
    /// An SFU-initiated renegotiation: pass to the client, and its answer
    /// to [`Sfu::handle_answer`].
    Offer {
        /// The offer SDP.
        sdp: String,
    },
    /// A local ICE candidate of the SFU (trickle ICE).
    IceCandidate {
        /// The candidate.
        candidate: IceCandidate,
    },
    /// A track now forwarded to this participant. Sent before the offer
    /// that carries it.
    TrackAdded {
        /// Who publishes it.
        publisher: ParticipantId,
        /// The publisher's id for it.
        track: TrackId,
        /// Audio or video.
        kind: MediaKind,
        /// The MSID stream id it has on this participant's connection:
        /// [`hush_proto::stream_id`] of the publisher.
        stream_id: String,
        /// The MSID track id it has on this participant's connection.
        track_id: String,
        /// The SSRC it has on this participant's connection.
        ssrc: u32,
    },
    /// A track no longer forwarded (its publisher stopped or left). The
    /// WebRTC stack raises no end event for it on the receiver: this is
    /// the signal.
    TrackRemoved {
        /// Who published it.
        publisher: ParticipantId,
        /// The publisher's id for it.
        track: TrackId,
        /// The MSID stream id it had on this participant's connection.
        stream_id: String,
        /// The MSID track id it had on this participant's connection.
        track_id: String,
    },
    /// The room's active speaker changed.
    ActiveSpeaker {
        /// The new speaker, if anyone holds the floor.
        participant: Option<ParticipantId>,
    },
    /// The SFU removed this participant; no more events follow.
    Closed {
        /// Why.
        reason: CloseReason,
    },
}

/// The events for one participant, in order. Ends after
/// [`SfuEvent::Closed`] or when the participant is removed.
#[derive(Debug)]
pub struct ParticipantEvents {
    /// Boxed: a channel allocates its slots 32 at a time, and a boxed
    /// event takes 8 bytes of each instead of ~90.
    rx: mpsc::Receiver<Box<SfuEvent>>,
}

impl ParticipantEvents {
    /// The stream of events a transport feeds through `rx`.
    pub(crate) fn new(rx: mpsc::Receiver<Box<SfuEvent>>) -> Self {
        Self { rx }
    }

    /// The next event; `None` once the participant is gone.
    pub async fn recv(&mut self) -> Option<SfuEvent> {
        self.rx.recv().await.map(|event| *event)
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<SfuEvent> {
        self.rx.try_recv().ok().map(|event| *event)
    }
}

/// A running SFU. Cheap to clone; all clones drive the same SFU.
#[derive(Clone, Debug)]
pub struct Sfu {
    /// One control channel per worker; a room goes to one of them.
    ctl: Arc<[mpsc::Sender<Command>]>,
    metrics: Arc<Metrics>,
    /// The UDP addresses media arrives on, one per worker.
    udp: Arc<[SocketAddr]>,
    /// The TCP addresses (ICE-TCP) media may arrive on, one per worker.
    tcp: Arc<[SocketAddr]>,
}

impl Sfu {
    /// Starts an SFU on the current Tokio runtime (opening the capture
    /// file, if configured).
    pub fn new(config: SfuConfig) -> Result<Self, Error> {
        let metrics = Arc::new(Metrics::default());
        let capture = match &config.capture {
            Some(path) => Some(Arc::new(CaptureWriter::create(path)?)),
            None => None,
        };
        let bound = crate::udp::start(config, Arc::clone(&metrics), capture)?;
        Ok(Self {
            ctl: bound.ctls.into(),
            metrics,
            udp: bound.udp.into(),
            tcp: bound.tcp.into(),
        })
    }

    /// The UDP addresses the SFU receives media on, one per worker.
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp
    }

    /// The TCP addresses the SFU listens on for ICE-TCP, one per worker;
    /// empty when [`SfuConfig::tcp_port`] is `None`.
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp
    }

    /// Adds `participant` to `room` (created on first use). Its connection
    /// is waiting for the client's offer ([`handle_offer`](Self::handle_offer));
    /// everything the SFU has to tell it arrives on the returned stream.
    pub async fn add_participant(
        &self,
        room: &RoomId,
        participant: &ParticipantId,
    ) -> Result<ParticipantEvents, Error> {
        self.call(|reply| Command::Add {
            who: who(room, participant),
            reply,
        })
        .await
    }

    /// Applies the client's offer and returns the SFU's answer SDP. Refused
    /// with [`Error::Glare`] while an SFU offer awaits its answer.
    pub async fn handle_offer(
        &self,
        room: &RoomId,
        participant: &ParticipantId,
        sdp: String,
    ) -> Result<String, Error> {
        self.call(|reply| Command::Offer {
            who: who(room, participant),
            sdp,
            reply,
        })
        .await
    }

    /// Applies the client's answer to the SFU's last [`SfuEvent::Offer`].
    pub async fn handle_answer(
        &self,
        room: &RoomId,
        participant: &ParticipantId,
        sdp: String,
    ) -> Result<(), Error> {
        self.call(|reply| Command::Answer {
            who: who(room, participant),
            sdp,
            reply,
        })
        .await
    }

    /// Adds a trickled ICE candidate of the client.
    pub async fn add_ice_candidate(
        &self,
        room: &RoomId,
        participant: &ParticipantId,
        candidate: IceCandidate,
    ) -> Result<(), Error> {
        self.call(|reply| Command::Candidate {
            who: who(room, participant),
            candidate,
            reply,
        })
        .await
    }

    /// Removes `participant`: its tracks leave every subscriber, its
    /// connection closes, and its room is freed if it was the last one.
    pub async fn remove_participant(
        &self,
        room: &RoomId,
        participant: &ParticipantId,
    ) -> Result<(), Error> {
        self.call(|reply| Command::Remove {
            who: who(room, participant),
            reply,
        })
        .await
    }

    /// The SFU's metrics (rendered for `/metrics` by [`Metrics::render`]).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Closes every connection, finishes the capture file and stops.
    pub async fn shutdown(&self) {
        for ctl in self.ctl.iter() {
            let (reply, rx) = oneshot::channel();
            if ctl.send(Command::Shutdown { reply }).await.is_ok() {
                let _ = rx.await;
            }
        }
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, Error>>) -> Command,
    ) -> Result<T, Error> {
        let (reply, rx) = oneshot::channel();
        let cmd = make(reply);
        let ctl = match cmd.room() {
            Some(room) if self.ctl.len() > 1 => &self.ctl[worker_of(room, self.ctl.len())],
            _ => &self.ctl[0],
        };
        // Bounded: a caller waits for room (and then for its reply), so a
        // burst of signaling cannot grow the worker's queue without end.
        ctl.send(cmd).await.map_err(|_| Error::Shutdown)?;
        rx.await.map_err(|_| Error::Shutdown)?
    }
}

/// `n` workers, or one per core when `n` is 0 (the command-line default).
pub fn workers_or_cores(n: usize) -> usize {
    if n > 0 {
        return n;
    }
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// The worker a room lives on: a stable hash of its name.
fn worker_of(room: &RoomId, workers: usize) -> usize {
    // FNV-1a: stable across processes and releases, unlike `DefaultHasher`.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in room.as_str().bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    usize::try_from(h % workers as u64).unwrap_or(0)
}

/// A participant, as the workers key it.
pub(crate) type Who = (RoomId, ParticipantId);

fn who(room: &RoomId, participant: &ParticipantId) -> Who {
    (room.clone(), *participant)
}

/// The reply channel of one API call.
pub(crate) type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// What the API asks of a worker's control loop.
pub(crate) enum Command {
    Add {
        who: Who,
        reply: Reply<ParticipantEvents>,
    },
    Offer {
        who: Who,
        sdp: String,
        reply: Reply<String>,
    },
    Answer {
        who: Who,
        sdp: String,
        reply: Reply<()>,
    },
    Candidate {
        who: Who,
        candidate: IceCandidate,
        reply: Reply<()>,
    },
    Remove {
        who: Who,
        reply: Reply<()>,
    },
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

impl Command {
    /// The room a participant command is about.
    fn room(&self) -> Option<&RoomId> {
        match self {
            Command::Add { who, .. }
            | Command::Offer { who, .. }
            | Command::Answer { who, .. }
            | Command::Candidate { who, .. }
            | Command::Remove { who, .. } => Some(&who.0),
            Command::Shutdown { .. } => None,
        }
    }
}

/// The error for a participant the SFU does not know.
pub(crate) fn unknown(who: &Who) -> Error {
    Error::UnknownParticipant {
        room: who.0.clone(),
        participant: who.1,
    }
}

#[cfg(test)]
mod worker_tests {
    use super::*;

    #[test]
    fn rooms_spread_over_workers_and_stay_put() {
        let rooms: Vec<RoomId> = (0..10)
            .map(|i| format!("room-{i}").parse().expect("a room id"))
            .collect();
        let on: Vec<usize> = rooms.iter().map(|r| worker_of(r, 2)).collect();
        assert!(on.contains(&0) && on.contains(&1), "{on:?}");
        assert_eq!(
            on,
            rooms.iter().map(|r| worker_of(r, 2)).collect::<Vec<_>>()
        );
        assert!(rooms.iter().all(|r| worker_of(r, 1) == 0));
    }

    #[test]
    fn validate_refuses_what_cannot_work_and_accepts_the_rest() {
        let at = |ip: [u8; 4], port| vec![SocketAddr::from((ip, port))];
        let ok = SfuConfig {
            udp_addrs: at([127, 0, 0, 1], 7882),
            tcp_port: Some(7881),
            ..SfuConfig::default()
        };
        assert!(ok.validate().is_ok());
        let public = SfuConfig {
            udp_addrs: at([0, 0, 0, 0], 7882),
            public_ips: vec![IpAddr::from([203, 0, 113, 7])],
            ..ok.clone()
        };
        assert!(public.validate().is_ok());
        // Port 0 for both picks two free ports: no clash.
        let any = SfuConfig {
            udp_addrs: at([127, 0, 0, 1], 0),
            tcp_port: Some(0),
            ..ok.clone()
        };
        assert!(any.validate().is_ok());
        for (bad, why) in [
            (
                SfuConfig {
                    udp_addrs: Vec::new(),
                    ..ok.clone()
                },
                "no UDP address",
            ),
            (
                SfuConfig {
                    udp_addrs: at([0, 0, 0, 0], 7882),
                    ..ok.clone()
                },
                "public IP",
            ),
            (
                SfuConfig {
                    tcp_port: Some(7882),
                    ..ok.clone()
                },
                "ICE-TCP port 7882 is the UDP port",
            ),
        ] {
            let err = bad.validate().expect_err(why);
            assert!(matches!(err, Error::Config(_)), "{err:?}");
            assert!(err.to_string().contains(why), "{err}");
        }
    }
}
