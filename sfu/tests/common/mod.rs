//! Shared harness: real webrtc-rs client peers on 127.0.0.1 talking to a
//! real in-process SFU, a lossy UDP shim, and payload helpers.
#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

mod setup;

pub use setup::AudioCodecs;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hush_proto::media::{OPUS_PAYLOAD_TYPE, VP8_PAYLOAD_TYPE};
use hush_sfu::{MediaKind, ParticipantId, RoomId, Sfu, SfuEvent};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCIceGatheringState;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp;
use rtc::rtp::extension::HeaderExtension;
use rtc::rtp::extension::audio_level_extension::AudioLevelExtension;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler};

/// Generous hang guard; never a pass/fail criterion for speed.
pub const HANG: Duration = Duration::from_secs(30);

pub type SdpFilter = Arc<dyn Fn(String) -> String + Send + Sync>;

/// What a test payload says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tag {
    pub room: u8,
    pub publisher: u8,
    pub kind: u8,
    pub n: u32,
}

/// A numbered, self-describing payload: "HUSH", room, publisher, kind,
/// number, then bytes derived from all of them.
pub fn payload(tag: Tag) -> Bytes {
    let mut v = b"HUSH".to_vec();
    v.extend([tag.room, tag.publisher, tag.kind]);
    v.extend(tag.n.to_be_bytes());
    let len = 40 + (tag.n as usize * 7) % 160;
    v.extend((0..len).map(|i| (i as u32 ^ tag.n ^ u32::from(tag.publisher) << 3) as u8));
    Bytes::from(v)
}

pub fn parse_tag(p: &[u8]) -> Option<Tag> {
    if p.len() < 11 || &p[..4] != b"HUSH" {
        return None;
    }
    Some(Tag {
        room: p[4],
        publisher: p[5],
        kind: p[6],
        n: u32::from_be_bytes([p[7], p[8], p[9], p[10]]),
    })
}

/// One packet a client received on a forwarded track.
#[derive(Debug, Clone)]
pub struct Received {
    pub track_id: String,
    pub ssrc: u32,
    pub payload_type: u8,
    pub marker: bool,
    pub payload: Bytes,
    pub at: Instant,
}

struct ClientHandler {
    gathered: watch::Sender<bool>,
    received: Arc<Mutex<Vec<Received>>>,
    remotes: Arc<Mutex<Vec<Arc<dyn TrackRemote>>>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for ClientHandler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        self.remotes.lock().unwrap().push(Arc::clone(&track));
        let received = Arc::clone(&self.received);
        tokio::spawn(async move {
            let track_id = track.track_id().await;
            while let Some(ev) = track.poll().await {
                match ev {
                    TrackRemoteEvent::OnRtpPacket(p) => received.lock().unwrap().push(Received {
                        track_id: track_id.clone(),
                        ssrc: p.header.ssrc,
                        payload_type: p.header.payload_type,
                        marker: p.header.marker,
                        payload: p.payload,
                        at: Instant::now(),
                    }),
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        });
    }
}

/// What a test client publishes.
#[derive(Debug, Clone, Copy)]
pub struct Publish {
    pub audio: bool,
    pub video: bool,
}

pub const AV: Publish = Publish {
    audio: true,
    video: true,
};
pub const VIDEO: Publish = Publish {
    audio: false,
    video: true,
};
pub const NOTHING: Publish = Publish {
    audio: false,
    video: false,
};

/// A client peer connected to the SFU, answering its renegotiations.
pub struct Client {
    pub room: RoomId,
    pub id: ParticipantId,
    pub pc: Arc<dyn PeerConnection>,
    pub audio: Option<(Arc<TrackLocalStaticRTP>, u32)>,
    pub video: Option<(Arc<TrackLocalStaticRTP>, u32)>,
    pub received: Arc<Mutex<Vec<Received>>>,
    pub events: Arc<Mutex<Vec<SfuEvent>>>,
    pub remotes: Arc<Mutex<Vec<Arc<dyn TrackRemote>>>>,
    /// PLI/FIR received about this client's video.
    pub plis: Arc<AtomicUsize>,
    /// When the client created its offer.
    pub offered_at: Instant,
    /// The SFU's answer to the client's first offer.
    pub answer: String,
}

fn local_track(kind: MediaKind, name: &str) -> (Arc<TrackLocalStaticRTP>, u32) {
    let ssrc: u32 = rand::random();
    let track = MediaStreamTrack::new(
        format!("{name}-stream"),
        format!("{name}-{}", kind.as_str()),
        format!("{name}-{}", kind.as_str()),
        match kind {
            MediaKind::Audio => RtpCodecKind::Audio,
            MediaKind::Video => RtpCodecKind::Video,
        },
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: setup::codec(kind),
            ..Default::default()
        }],
    );
    (Arc::new(TrackLocalStaticRTP::new(track)), ssrc)
}

impl Client {
    /// Joins `room` as participant `id`, publishing `publish`, and completes
    /// the first offer/answer. `filter` rewrites every SDP in both directions.
    pub async fn join(
        sfu: &Sfu,
        room: &str,
        id: u64,
        publish: Publish,
        filter: Option<SdpFilter>,
    ) -> Client {
        Self::join_with(sfu, room, id, publish, filter, AudioCodecs::AsClient).await
    }

    /// [`Client::join`], registering the audio codecs `audio`.
    pub async fn join_with(
        sfu: &Sfu,
        room: &str,
        id: u64,
        publish: Publish,
        filter: Option<SdpFilter>,
        audio: AudioCodecs,
    ) -> Client {
        let room: RoomId = room.parse().unwrap();
        let id = ParticipantId(id);
        let mut events_rx = sfu.add_participant(&room, &id).await.unwrap();
        let (gathered_tx, mut gathered) = watch::channel(false);
        let received = Arc::new(Mutex::new(Vec::new()));
        let remotes = Arc::new(Mutex::new(Vec::new()));
        let (engine, registry) = setup::peer_media(audio);
        let pc = PeerConnectionBuilder::new()
            .with_media_engine(engine)
            .with_interceptor_registry(registry)
            .with_setting_engine(setup::setting_engine(
                Duration::from_secs(2),
                Duration::from_secs(5),
            ))
            .with_handler(Arc::new(ClientHandler {
                gathered: gathered_tx,
                received: Arc::clone(&received),
                remotes: Arc::clone(&remotes),
            }))
            .with_udp_addrs(vec![SocketAddr::from(([127, 0, 0, 1], 0))])
            .build()
            .await
            .unwrap();
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        let plis = Arc::new(AtomicUsize::new(0));
        let mut audio = None;
        let mut video = None;
        if publish.audio {
            let (t, ssrc) = local_track(MediaKind::Audio, &id.to_string());
            pc.add_track(Arc::clone(&t) as Arc<dyn TrackLocal>)
                .await
                .unwrap();
            audio = Some((t, ssrc));
        }
        if publish.video {
            let (t, ssrc) = local_track(MediaKind::Video, &id.to_string());
            pc.add_track(Arc::clone(&t) as Arc<dyn TrackLocal>)
                .await
                .unwrap();
            let plis = Arc::clone(&plis);
            let poll = Arc::clone(&t);
            tokio::spawn(async move {
                loop {
                    match poll.poll().await {
                        Some(TrackLocalEvent::OnRtcpPacket(pkts)) => {
                            let n = pkts
                                .iter()
                                .filter(|p| p.as_any().is::<PictureLossIndication>())
                                .count();
                            plis.fetch_add(n, Ordering::SeqCst);
                        }
                        Some(_) => {}
                        None => break,
                    }
                }
            });
            video = Some((t, ssrc));
        }
        if !publish.audio && !publish.video {
            pc.add_transceiver_from_kind(
                RtpCodecKind::Video,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    ..Default::default()
                }),
            )
            .await
            .unwrap();
        }
        let filter: SdpFilter = filter.unwrap_or_else(|| Arc::new(|s| s));
        let offered_at = Instant::now();
        let offer = pc.create_offer(None).await.unwrap();
        pc.set_local_description(offer).await.unwrap();
        tokio::time::timeout(HANG, gathered.wait_for(|d| *d))
            .await
            .unwrap()
            .unwrap();
        let offer = pc.local_description().await.unwrap().sdp;
        let first_answer = sfu.handle_offer(&room, &id, filter(offer)).await.unwrap();
        let answer = first_answer.clone();
        pc.set_remote_description(RTCSessionDescription::answer(filter(answer)).unwrap())
            .await
            .unwrap();

        // Signaling loop: answer every SFU offer, log every event.
        let events = Arc::new(Mutex::new(Vec::new()));
        {
            let events = Arc::clone(&events);
            let pc = Arc::clone(&pc);
            let sfu = sfu.clone();
            let room = room.clone();
            tokio::spawn(async move {
                while let Some(ev) = events_rx.recv().await {
                    events.lock().unwrap().push(ev.clone());
                    if let SfuEvent::Offer { sdp } = ev {
                        let offer = RTCSessionDescription::offer(filter(sdp)).unwrap();
                        if pc.set_remote_description(offer).await.is_err() {
                            break;
                        }
                        let Ok(answer) = pc.create_answer(None).await else {
                            break;
                        };
                        if pc.set_local_description(answer).await.is_err() {
                            break;
                        }
                        let Some(answer) = pc.local_description().await else {
                            break;
                        };
                        if sfu
                            .handle_answer(&room, &id, filter(answer.sdp))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            });
        }
        Client {
            room,
            id,
            pc,
            audio,
            video,
            received,
            events,
            remotes,
            plis,
            offered_at,
            answer: first_answer,
        }
    }

    /// Sends packet number `n` of `kind`, tagged with `room` and `me`.
    pub async fn send(&self, kind: MediaKind, room: u8, me: u8, n: u32) {
        let (track, ssrc) = match kind {
            MediaKind::Audio => self.audio.as_ref(),
            MediaKind::Video => self.video.as_ref(),
        }
        .unwrap();
        let tag = Tag {
            room,
            publisher: me,
            kind: kind as u8,
            n,
        };
        let packet = rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                marker: n % 10 == 9,
                payload_type: match kind {
                    MediaKind::Audio => OPUS_PAYLOAD_TYPE,
                    MediaKind::Video => VP8_PAYLOAD_TYPE,
                },
                sequence_number: n as u16,
                timestamp: n.wrapping_mul(960),
                ssrc: *ssrc,
                ..Default::default()
            },
            payload: payload(tag),
        };
        let _ = match kind {
            MediaKind::Audio => {
                let level = AudioLevelExtension {
                    level: 30,
                    voice: true,
                };
                track
                    .write_rtp_with_extensions(packet, &[HeaderExtension::AudioLevel(level)])
                    .await
            }
            MediaKind::Video => track.write_rtp(packet).await,
        };
    }

    /// Sends one audio packet with `payload_type` and `payload` as given;
    /// number `n` sets its sequence number, timestamp and marker as
    /// [`Client::send`] does.
    pub async fn send_audio_as(&self, payload_type: u8, n: u32, payload: Bytes) {
        let (track, ssrc) = self.audio.as_ref().unwrap();
        let packet = rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                marker: n % 10 == 9,
                payload_type,
                sequence_number: n as u16,
                timestamp: n.wrapping_mul(960),
                ssrc: *ssrc,
                ..Default::default()
            },
            payload,
        };
        let level = AudioLevelExtension {
            level: 30,
            voice: true,
        };
        let _ = track
            .write_rtp_with_extensions(packet, &[HeaderExtension::AudioLevel(level)])
            .await;
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn events(&self) -> Vec<SfuEvent> {
        self.events.lock().unwrap().clone()
    }

    /// Forwarded track id -> (publisher, kind), from the SFU's announcements.
    pub fn announced(&self) -> HashMap<String, (ParticipantId, MediaKind)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                SfuEvent::TrackAdded {
                    publisher,
                    kind,
                    track_id,
                    ..
                } => Some((track_id, (publisher, kind))),
                _ => None,
            })
            .collect()
    }

    /// Sends a PLI for every forwarded video track this client receives.
    pub async fn send_pli(&self) -> usize {
        let remotes: Vec<_> = self.remotes.lock().unwrap().clone();
        let mut sent = 0;
        for r in remotes {
            if r.kind().await != RtpCodecKind::Video {
                continue;
            }
            let Some(ssrc) = r.ssrcs().await.first().copied() else {
                continue;
            };
            let pli = PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc: ssrc,
            };
            if r.write_rtcp(vec![Box::new(pli)]).await.is_ok() {
                sent += 1;
            }
        }
        sent
    }
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after [`HANG`].
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < HANG, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends rounds from every client (audio and video each) until each has
/// been announced both tracks of the two others and received more than
/// 20 packets; returns the next round number.
pub async fn until_av_flows(clients: &[(&Client, u8, u8)]) -> u32 {
    let mut n = 0;
    while !clients
        .iter()
        .all(|(x, _, _)| x.announced().len() == 4 && x.received().len() > 20)
    {
        assert!(n < 1500, "forwarding never started");
        send_rounds(clients, n, 5, Duration::from_millis(20)).await;
        n += 5;
    }
    n
}

/// Sends `count` packets of each published kind from each client, one
/// round every `period`, concurrently for all clients.
pub async fn send_rounds(clients: &[(&Client, u8, u8)], start: u32, count: u32, period: Duration) {
    let mut tick = tokio::time::interval(period);
    for n in start..start + count {
        tick.tick().await;
        for (c, room, me) in clients {
            if c.audio.is_some() {
                c.send(MediaKind::Audio, *room, *me, n).await;
            }
            if c.video.is_some() {
                c.send(MediaKind::Video, *room, *me, n).await;
            }
        }
    }
}

/// Asserts that `rx` received, on each track from `(room, publisher, kind)`,
/// a byte-identical, gap-free, in-order run of numbered payloads ending at
/// `last`, and returns how many.
pub fn assert_in_order(
    rx: &[Received],
    room: u8,
    publisher: u8,
    kind: MediaKind,
    last: u32,
) -> usize {
    let got: Vec<&Received> = rx
        .iter()
        .filter(|r| {
            parse_tag(&r.payload)
                .is_some_and(|t| t.room == room && t.publisher == publisher && t.kind == kind as u8)
        })
        .collect();
    assert!(
        !got.is_empty(),
        "nothing from publisher {publisher} ({kind})"
    );
    let first = parse_tag(&got[0].payload).unwrap().n;
    for (i, r) in got.iter().enumerate() {
        let tag = parse_tag(&r.payload).unwrap();
        assert_eq!(
            tag.n,
            first + i as u32,
            "gap or reorder from {publisher} ({kind})"
        );
        assert_eq!(r.payload, payload(tag), "payload bytes changed");
        assert_eq!(r.marker, tag.n % 10 == 9, "marker bit changed");
    }
    assert_eq!(
        first + got.len() as u32 - 1,
        last,
        "tail missing from {publisher} ({kind})"
    );
    got.len()
}

/// A UDP relay between one client and the SFU that drops chosen RTP
/// packets going to the client. Hook it in with [`LossyShim::filter`].
pub struct LossyShim {
    /// Faces the client (the client thinks this is the SFU).
    to_client: Arc<UdpSocket>,
    /// Faces the SFU (the SFU thinks this is the client).
    to_sfu: Arc<UdpSocket>,
    real_client: Arc<Mutex<Option<SocketAddr>>>,
    real_sfu: Arc<Mutex<Option<SocketAddr>>>,
    /// Video packets dropped on the way to the client.
    pub dropped: Arc<AtomicU64>,
}

impl LossyShim {
    /// Starts a shim that drops, once each, video RTP packets whose
    /// sequence number is 3 mod 10.
    pub async fn start() -> Arc<LossyShim> {
        let to_client = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let to_sfu = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let shim = Arc::new(LossyShim {
            to_client,
            to_sfu,
            real_client: Arc::new(Mutex::new(None)),
            real_sfu: Arc::new(Mutex::new(None)),
            dropped: Arc::new(AtomicU64::new(0)),
        });
        // Client -> SFU: pass everything.
        {
            let s = Arc::clone(&shim);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                while let Ok((n, from)) = s.to_client.recv_from(&mut buf).await {
                    *s.real_client.lock().unwrap() = Some(from);
                    let dst = *s.real_sfu.lock().unwrap();
                    if let Some(dst) = dst {
                        let _ = s.to_sfu.send_to(&buf[..n], dst).await;
                    }
                }
            });
        }
        // SFU -> client: drop chosen video RTP packets once.
        {
            let s = Arc::clone(&shim);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 2048];
                let mut seen = HashSet::new();
                while let Ok((n, _from)) = s.to_sfu.recv_from(&mut buf).await {
                    let p = &buf[..n];
                    // RFC 7983: RTP/RTCP start with 128..=191; RTCP packet
                    // types 192..=223 sit in the second byte.
                    let is_rtp =
                        n >= 12 && (128..=191).contains(&p[0]) && !(192..=223).contains(&p[1]);
                    if is_rtp && p[1] & 0x7f == VP8_PAYLOAD_TYPE {
                        let seq = u16::from_be_bytes([p[2], p[3]]);
                        let ssrc = u32::from_be_bytes([p[8], p[9], p[10], p[11]]);
                        if seq % 10 == 3 && seen.insert((ssrc, seq)) {
                            s.dropped.fetch_add(1, Ordering::SeqCst);
                            continue;
                        }
                    }
                    let dst = *s.real_client.lock().unwrap();
                    if let Some(dst) = dst {
                        let _ = s.to_client.send_to(p, dst).await;
                    }
                }
            });
        }
        shim
    }

    /// An SDP filter that points each side's loopback UDP host candidate
    /// at the shim instead, remembering the real addresses (the SFU's
    /// ICE-TCP candidate is left alone: these clients have no TCP).
    pub fn filter(self: &Arc<Self>) -> SdpFilter {
        let shim = Arc::clone(self);
        Arc::new(move |sdp: String| {
            let to_client = shim.to_client.local_addr().unwrap().port();
            let to_sfu = shim.to_sfu.local_addr().unwrap().port();
            sdp.split("\r\n")
                .map(|line| {
                    let mut f: Vec<String> = line.split(' ').map(str::to_owned).collect();
                    if !line.starts_with("a=candidate:")
                        || f.len() < 8
                        || f[4] != "127.0.0.1"
                        || !f[2].eq_ignore_ascii_case("udp")
                    {
                        return line.to_owned();
                    }
                    let Ok(port) = f[5].parse::<u16>() else {
                        return line.to_owned();
                    };
                    if port == to_client || port == to_sfu {
                        return line.to_owned();
                    }
                    let addr = SocketAddr::from(([127, 0, 0, 1], port));
                    // Which side wrote it: the first SDP through is the
                    // client's offer; afterwards, a port we already know.
                    let mut client = shim.real_client.lock().unwrap();
                    let mut sfu = shim.real_sfu.lock().unwrap();
                    let replacement = if *client == Some(addr) || client.is_none() {
                        *client = Some(addr);
                        to_sfu
                    } else {
                        *sfu = Some(addr);
                        to_client
                    };
                    f[5] = replacement.to_string();
                    f.join(" ")
                })
                .collect::<Vec<_>>()
                .join("\r\n")
        })
    }
}
