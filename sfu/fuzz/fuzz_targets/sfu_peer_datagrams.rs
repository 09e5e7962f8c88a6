//! One SFU peer as a worker builds it (`peer_config`: ICE-lite, RTP mode,
//! Opus with RED, VP8, audio level and mid), after it answered a client's
//! offer (audio and video, send and receive, from a str0m client), fed
//! datagrams from the client's address and timeouts, modelled on str0m's
//! own `receive` fuzz function, draining its output after each.
//!
//! The peer has fixed SRTP keys (str0m's `_set_srtp_keys`, feature
//! `_internal_test_exports`, on only in this crate), so that besides raw
//! datagrams the input can send authenticated RTP with fuzzed header
//! fields and payload into the RTP-mode receive path, and STUN binding
//! requests with the peer's real ICE credentials (which nominate the
//! client's address and start DTLS, whose replies are raw datagrams).
//!
//! Input: steps `[op][time step]` and then by `op % 4`: 0, a raw datagram
//! (`u16` length, bytes); 1, an RTP packet (`[stream][flags][payload type]
//! [level]`, `u16` sequence number, `u32` timestamp, `u32` SSRC, `u16`
//! length, payload); 2, a STUN binding request (`[flags]`, `u32` priority,
//! `u64` tie breaker); 3, nothing (a timeout). Each step moves time on by
//! `4 ms * time step`. Nothing may panic, and:
//!
//! - the peer sends only from the SFU's address to the client's, by UDP;
//! - every RTP packet it hands out is one that was sent authenticated
//!   (its payload ends one of theirs), at most one per packet sent;
//! - a RED packet handed out gives a primary (`red_primary`, as the
//!   worker does for subscribers without RED) that ends its payload.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use hush_sfu::fuzzing::{offered_ssrc, peer_config, red_primary};
use libfuzzer_sys::fuzz_target;
use str0m::_internal_test_exports::TestSrtp;
use str0m::change::SdpOffer;
use str0m::config::KeyingMaterial;
use str0m::crypto::dtls::SrtpProfile;
use str0m::ice::{StunMessage, TransId};
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpHeader};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

const SFU: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 7882);
const CLIENT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), 50_000);
const PROFILE: SrtpProfile = SrtpProfile::AEAD_AES_128_GCM;
/// SRTP master keys and salts for AEAD_AES_128_GCM: 2 * (16 + 12) bytes.
const MATERIAL: [u8; 56] = [42; 56];
const MAX_STEPS: usize = 64;
const MAX_OUTPUTS: usize = 1000;

/// What every input starts from: the SFU's peer configuration and the
/// client's offer.
struct Setup {
    config: RtcConfig,
    offer: String,
    client_ufrag: String,
    audio: (Mid, u32),
    video: (Mid, u32),
}

fn setup() -> &'static Mutex<Setup> {
    static SETUP: OnceLock<Mutex<Setup>> = OnceLock::new();
    SETUP.get_or_init(|| {
        // As the SFU does before it builds any peer.
        str0m::crypto::from_feature_flags().install_process_default();
        let cert = str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
            .expect("a DTLS certificate");
        let now = Instant::now();
        let mut client = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, true)
            .enable_vp8(true)
            .build(now);
        client.add_local_candidate(Candidate::host(CLIENT, "udp").expect("a host candidate"));
        let client_ufrag = client.direct_api().local_ice_credentials().ufrag;
        let mut api = client.sdp_api();
        let audio = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let video = api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
        let (offer, _pending) = api.apply().expect("an offer");
        let offer = offer.to_sdp_string();
        let ssrc = |mid: Mid| offered_ssrc(&offer, &mid.to_string()).expect("an offered SSRC");
        let setup = Setup {
            config: peer_config(cert),
            audio: (audio, ssrc(audio)),
            video: (video, ssrc(video)),
            offer,
            client_ufrag,
        };
        // The harness reaches the RTP path: a genuine packet comes out.
        let mut rtc = peer(&setup, now);
        let exts = rtc._exts().clone();
        let mut srtp = TestSrtp::new(
            &str0m::crypto::from_feature_flags(),
            PROFILE,
            &KeyingMaterial::new(&MATERIAL),
        );
        let header = RtpHeader {
            has_extension: true,
            payload_type: Pt::new_with_value(111),
            sequence_number: 1,
            ssrc: setup.audio.1.into(),
            ext_vals: ExtensionValues {
                mid: Some(setup.audio.0),
                ..Default::default()
            },
            ..Default::default()
        };
        let packet = srtp.protect(header, 1, b"sealed opus", &exts);
        let receive = Receive::new(Protocol::Udp, CLIENT, SFU, &packet).expect("RTP");
        rtc.handle_input(Input::Receive(now, receive))
            .expect("taken");
        let mut got = false;
        for _ in 0..MAX_OUTPUTS {
            match rtc.poll_output() {
                Ok(Output::Event(Event::RtpPacket(p))) => got |= &p.payload[..] == b"sealed opus",
                Ok(Output::Timeout(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        assert!(got, "a genuine RTP packet reaches the peer's RTP path");
        Mutex::new(setup)
    })
}

/// A peer as the worker makes one, that answered the client's offer.
fn peer(setup: &Setup, now: Instant) -> Rtc {
    let mut rtc = setup.config.clone().build(now);
    rtc.add_local_candidate(Candidate::host(SFU, "udp").expect("a host candidate"));
    let offer = SdpOffer::from_sdp_string(&setup.offer).expect("the client's offer");
    rtc.sdp_api().accept_offer(offer).expect("an answer");
    rtc.add_remote_candidate(Candidate::host(CLIENT, "udp").expect("a host candidate"));
    rtc._set_srtp_keys(KeyingMaterial::new(&MATERIAL), PROFILE, false);
    rtc
}

/// Reads the input front to back; `None` once it ends.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn slice(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.slice(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.array()?))
    }
}

/// The state of one run.
struct Run {
    rtc: Rtc,
    srtp: TestSrtp,
    exts: str0m::rtp::ExtensionMap,
    pts: Vec<Pt>,
    /// RED's payload type and the Opus one it is folded onto.
    red: Option<(Pt, Pt)>,
    sent: Vec<Vec<u8>>,
    handed_out: usize,
}

impl Run {
    /// An RTP packet with fields from the input, authenticated.
    fn rtp(&mut self, s: &Setup, r: &mut Bytes<'_>) -> Option<Vec<u8>> {
        let [stream, flags, pt, level] = r.array()?;
        let (seq, timestamp, ssrc) = (r.u16()?, r.u32()?, r.u32()?);
        let len = usize::from(r.u16()? % 1201);
        let payload = r.slice(len)?;
        let ssrc = match stream % 4 {
            0 => s.audio.1,
            1 => s.video.1,
            _ => ssrc,
        };
        let mid = match (stream / 4) % 3 {
            0 => Some(s.audio.0),
            1 => Some(s.video.0),
            _ => None,
        };
        let payload_type = match self.pts.get(usize::from(pt)) {
            Some(&p) => p,
            None => Pt::new_with_value(pt & 0x7f),
        };
        let header = RtpHeader {
            has_extension: flags & 1 == 1,
            marker: flags & 2 == 2,
            payload_type,
            sequence_number: seq,
            timestamp,
            ssrc: ssrc.into(),
            ext_vals: ExtensionValues {
                mid,
                audio_level: (flags & 4 == 4).then_some(-((level & 0x7f) as i8)),
                voice_activity: (flags & 8 == 8).then_some(level & 0x80 == 0x80),
                ..Default::default()
            },
            ..Default::default()
        };
        // The extended sequence number: the rollover count from the flags.
        let index = (u64::from(flags >> 4) << 16) | u64::from(seq);
        self.sent.push(payload.to_vec());
        Some(self.srtp.protect(header, index, payload, &self.exts))
    }

    /// A STUN binding request from the client with the peer's credentials
    /// (or a wrong password), as a client's ICE agent sends one.
    fn stun(&mut self, s: &Setup, r: &mut Bytes<'_>) -> Option<Vec<u8>> {
        let flags = r.u8()?;
        let (prio, tie_breaker) = (r.u32()?, r.u64()?);
        let creds = self.rtc.direct_api().local_ice_credentials();
        let username = format!("{}:{}", creds.ufrag, s.client_ufrag);
        let password = if flags & 4 == 4 { "wrong" } else { &creds.pass };
        let message = StunMessage::binding_request(
            &username,
            TransId::new(),
            flags & 1 == 1,
            tie_breaker,
            prio,
            flags & 2 == 2,
        );
        let provider = str0m::crypto::from_feature_flags();
        let mut buf = vec![0u8; 1500];
        let n = message
            .to_bytes(Some(password.as_bytes()), &mut buf, |key, payloads| {
                provider.sha1_hmac_provider.sha1_hmac(key, payloads)
            })
            .ok()?;
        buf.truncate(n);
        Some(buf)
    }

    /// Drains the peer's output (bounded, like str0m's fuzz function).
    fn drain(&mut self) {
        for _ in 0..MAX_OUTPUTS {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(_)) | Err(_) => break,
                Ok(Output::Transmit(t)) => {
                    assert_eq!(
                        (t.proto, t.source, t.destination),
                        (Protocol::Udp, SFU, CLIENT),
                        "the peer talks only to its client"
                    );
                }
                Ok(Output::Event(Event::RtpPacket(p))) => {
                    self.handed_out += 1;
                    assert!(
                        self.handed_out <= self.sent.len(),
                        "more RTP packets out than were sent authenticated"
                    );
                    assert!(
                        self.sent.iter().any(|s| s.ends_with(&p.payload[..])),
                        "an RTP payload nobody sent"
                    );
                    if let Some((red, opus)) = self.red
                        && p.header.payload_type == red
                        && let Some(primary) = red_primary(&p.payload, opus)
                    {
                        assert!(p.payload.ends_with(&primary));
                    }
                }
                Ok(Output::Event(_)) => {}
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let setup = setup().lock().unwrap_or_else(|p| p.into_inner());
    let start = Instant::now();
    let rtc = peer(&setup, start);
    let pts: Vec<Pt> = rtc
        .codec_config()
        .iter()
        .flat_map(|p| [Some(p.pt()), p.resend(), p.red()])
        .flatten()
        .collect();
    let red = rtc
        .codec_config()
        .iter()
        .find_map(|p| p.red().map(|red| (red, p.pt())));
    let mut run = Run {
        exts: rtc._exts().clone(),
        rtc,
        srtp: TestSrtp::new(
            &str0m::crypto::from_feature_flags(),
            PROFILE,
            &KeyingMaterial::new(&MATERIAL),
        ),
        pts,
        red,
        sent: Vec::new(),
        handed_out: 0,
    };
    let mut r = Bytes(data);
    let mut now = start;
    for _ in 0..MAX_STEPS {
        let (Some(op), Some(step)) = (r.u8(), r.u8()) else {
            break;
        };
        now += Duration::from_millis(4 * u64::from(step));
        let datagram = match op % 4 {
            0 => r
                .u16()
                .and_then(|n| r.slice(usize::from(n % 2049)))
                .map(<[u8]>::to_vec),
            1 => run.rtp(&setup, &mut r),
            2 => run.stun(&setup, &mut r),
            _ => None,
        };
        let input = match &datagram {
            Some(d) => match Receive::new(Protocol::Udp, CLIENT, SFU, d) {
                Ok(receive) => Input::Receive(now, receive),
                Err(_) => Input::Timeout(now),
            },
            None => Input::Timeout(now),
        };
        let _ = run.rtc.handle_input(input);
        run.drain();
        if !run.rtc.is_alive() {
            break;
        }
    }
});
