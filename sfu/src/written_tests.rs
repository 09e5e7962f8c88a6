//! `Rtc::poll_written`, the entry point the forwarding path uses in the
//! vendored str0m (vendor/str0m/HUSH.md), between an SFU peer as a worker
//! builds it and a str0m client, connected in memory: real ICE, DTLS and
//! SRTP, on a clock the test moves, without sockets.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive, Transmit};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc};

use crate::udp::{dtls_cert, peer_config};

const SFU: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 7882);
const CLIENT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)), 50_000);
/// Outputs one poll may produce before the test calls it a runaway.
const MAX_OUTPUTS: usize = 1000;

/// An SFU peer and its client, and what the client received.
struct Pair {
    sfu: Rtc,
    client: Rtc,
    now: Instant,
    /// The client's receive-only audio m-line, the SFU's send leg.
    mid: Mid,
    /// RTP payloads the client received, in order.
    received: Vec<Vec<u8>>,
    /// Datagrams the client sent that the SFU peer has yet to take.
    for_sfu: Vec<Transmit>,
    sfu_connected: bool,
    client_connected: bool,
}

impl Pair {
    /// Negotiated (the client offers, the SFU answers) but not connected.
    fn negotiated() -> Self {
        let now = Instant::now();
        let mut sfu = peer_config(dtls_cert().expect("a DTLS certificate")).build(now);
        sfu.add_local_candidate(Candidate::host(SFU, "udp").expect("a host candidate"));
        let mut client = Rtc::builder()
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .build(now);
        client.add_local_candidate(Candidate::host(CLIENT, "udp").expect("a host candidate"));
        let mut api = client.sdp_api();
        let mid = api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        let (offer, pending) = api.apply().expect("an offer");
        let answer = sfu.sdp_api().accept_offer(offer).expect("an answer");
        client
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("the answer accepted");
        client.add_remote_candidate(Candidate::host(SFU, "udp").expect("a host candidate"));
        Self {
            sfu,
            client,
            now,
            mid,
            received: Vec::new(),
            for_sfu: Vec::new(),
            sfu_connected: false,
            client_connected: false,
        }
    }

    /// Drains the SFU peer, then hands what it sent to the client. Returns
    /// its next deadline and how many datagrams it sent.
    fn drain_sfu(&mut self) -> (Instant, usize) {
        let mut sent = Vec::new();
        for _ in 0..MAX_OUTPUTS {
            match self.sfu.poll_output().expect("the SFU peer polls") {
                Output::Timeout(t) => {
                    let n = sent.len();
                    self.deliver_to_client(&sent);
                    return (t, n);
                }
                Output::Transmit(t) => sent.push(t),
                Output::Event(Event::Connected) => self.sfu_connected = true,
                Output::Event(_) => {}
            }
        }
        panic!("the SFU peer never asked for a timeout");
    }

    /// Drains the client, keeping what it sends for the SFU peer
    /// ([`Pair::deliver_to_sfu`]).
    fn drain_client(&mut self) {
        for _ in 0..MAX_OUTPUTS {
            match self.client.poll_output().expect("the client polls") {
                Output::Timeout(_) => return,
                Output::Transmit(t) => {
                    assert_eq!(t.destination, SFU);
                    self.for_sfu.push(t);
                }
                Output::Event(Event::Connected) => self.client_connected = true,
                Output::Event(Event::RtpPacket(p)) => self.received.push(p.payload.to_vec()),
                Output::Event(_) => {}
            }
        }
        panic!("the client never asked for a timeout");
    }

    /// Hands datagrams of the SFU peer to the client, draining it after
    /// each (str0m wants its output polled after every input).
    fn deliver_to_client(&mut self, sent: &[Transmit]) {
        for t in sent {
            assert_eq!((t.source, t.destination), (SFU, CLIENT), "SFU to client");
            let receive =
                Receive::new(Protocol::Udp, SFU, CLIENT, &t.contents).expect("a datagram for it");
            self.client
                .handle_input(Input::Receive(self.now, receive))
                .expect("the client takes it");
            self.drain_client();
        }
    }

    /// Hands what the client sent to the SFU peer, draining it after each.
    fn deliver_to_sfu(&mut self) {
        while !self.for_sfu.is_empty() {
            for t in std::mem::take(&mut self.for_sfu) {
                let receive = Receive::new(Protocol::Udp, CLIENT, SFU, &t.contents)
                    .expect("a datagram the SFU demultiplexes");
                self.sfu
                    .handle_input(Input::Receive(self.now, receive))
                    .expect("the SFU peer takes it");
                self.drain_sfu();
            }
        }
    }

    /// Moves the clock on 10 ms, feeding both their timeouts, until both
    /// are connected.
    fn connect(&mut self) {
        for _ in 0..500 {
            self.drain_client();
            self.deliver_to_sfu();
            self.drain_sfu();
            self.deliver_to_sfu();
            if self.sfu_connected && self.client_connected {
                return;
            }
            self.now += Duration::from_millis(10);
            for rtc in [&mut self.sfu, &mut self.client] {
                rtc.handle_input(Input::Timeout(self.now))
                    .expect("a timeout taken");
            }
        }
        panic!("the pair never connected");
    }

    /// The Opus payload type the SFU peer sends with.
    fn opus(&self) -> Pt {
        self.sfu
            .codec_config()
            .find(|p| p.spec().codec == Codec::Opus)
            .expect("Opus negotiated")
            .pt()
    }

    /// Writes packet `seq` (its payload names it) on the SFU's leg.
    fn write(&mut self, seq: u64) {
        let (mid, pt) = (self.mid, self.opus());
        self.write_on(mid, pt, seq);
    }

    /// Writes packet `seq` with payload type `pt` on the SFU's leg `mid`.
    fn write_on(&mut self, mid: Mid, pt: Pt, seq: u64) {
        let now = self.now;
        let mut api = self.sfu.direct_api();
        let tx = api
            .stream_tx_by_mid(mid, None)
            .expect("a send stream on the client's receive-only m-line");
        let payload: Arc<[u8]> = Arc::from(format!("sealed frame {seq}").into_bytes());
        tx.write_rtp(RtpWrite::new(
            pt,
            SeqNo::from(seq),
            u32::try_from(seq * 960).expect("small"),
            now,
            payload,
        ));
    }

    /// `poll_written` at the current time: whether it took everything,
    /// and what it handed out.
    fn poll_written(&mut self) -> (bool, Vec<Transmit>) {
        let mut out = Vec::new();
        let done = self.sfu.poll_written(self.now, |t| out.push(t));
        (done, out)
    }
}

#[test]
fn written_packets_go_out_at_once_and_the_client_decrypts_them() {
    let mut pair = Pair::negotiated();
    // Not connected: nowhere to send, so the caller drives it as usual.
    let (done, out) = pair.poll_written();
    assert!(!done, "taken before the peer has a nominated address");
    assert!(out.is_empty());

    pair.connect();
    // The leg's first packet: whichever path takes it, it arrives.
    pair.write(1);
    let (done, out) = pair.poll_written();
    pair.deliver_to_client(&out);
    if !done {
        pair.sfu
            .handle_input(Input::Timeout(pair.now))
            .expect("a timeout taken");
    }
    pair.drain_sfu();
    pair.deliver_to_sfu();
    assert_eq!(pair.received, vec![b"sealed frame 1".to_vec()]);

    for round in 0..20u64 {
        pair.now += Duration::from_millis(20);
        pair.sfu
            .handle_input(Input::Timeout(pair.now))
            .expect("a timeout taken");
        pair.drain_sfu();
        pair.deliver_to_sfu();
        let (deadline, sent) = pair.drain_sfu();
        assert_eq!(sent, 0, "round {round}: the SFU peer is drained");
        // One packet a round, three in the last.
        let seqs: Vec<u64> = if round == 19 {
            vec![21, 22, 23]
        } else {
            vec![round + 2]
        };
        for &seq in &seqs {
            pair.write(seq);
        }
        let (done, out) = pair.poll_written();
        assert!(
            done,
            "round {round}: a connected leg's packets all went out"
        );
        assert_eq!(
            out.len(),
            seqs.len(),
            "round {round}: one datagram a packet"
        );
        // Nothing of them is left to poll, and no deadline moved earlier:
        // the caller may keep the one it holds.
        let (after, sent) = pair.drain_sfu();
        assert_eq!(sent, 0, "round {round}: a datagram was left behind");
        assert!(
            after >= deadline,
            "round {round}: the next timeout moved earlier"
        );
        let before = pair.received.len();
        pair.deliver_to_client(&out);
        pair.deliver_to_sfu();
        let got: Vec<Vec<u8>> = pair.received[before..].to_vec();
        let want: Vec<Vec<u8>> = (seqs.iter())
            .map(|s| format!("sealed frame {s}").into_bytes())
            .collect();
        assert_eq!(
            got, want,
            "round {round}: the client decrypted them in order"
        );
    }

    // Time going backwards: not taken, and not touched either: the usual
    // timeout round sends the packet.
    let earlier = pair.now - Duration::from_millis(1);
    pair.write(200);
    assert!(!pair.sfu.poll_written(earlier, |_| {}), "taken in the past");
    pair.timeout_round();
    assert_eq!(pair.received.last(), Some(&b"sealed frame 200".to_vec()));

    // A closed peer: not taken.
    pair.sfu.disconnect();
    assert!(!pair.poll_written().0, "taken after disconnect");
}

impl Pair {
    /// A timeout at the current time and the SFU peer drained, as the
    /// worker does where `poll_written` declines; what it sent delivered.
    fn timeout_round(&mut self) {
        self.sfu
            .handle_input(Input::Timeout(self.now))
            .expect("a timeout taken");
        self.drain_sfu();
        self.deliver_to_sfu();
    }
}

#[test]
fn a_leg_before_its_first_timeout_is_left_to_the_timeout_round() {
    let mut pair = Pair::negotiated();
    pair.connect();
    // The client re-offers with a second receive-only m-line; the SFU
    // peer's new send stream has had no timeout when the packet comes.
    let mut api = pair.client.sdp_api();
    let second = api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api.apply().expect("a re-offer");
    let answer = pair.sfu.sdp_api().accept_offer(offer).expect("an answer");
    pair.client
        .sdp_api()
        .accept_answer(pending, answer)
        .expect("the answer accepted");
    let pt = pair.opus();
    pair.write_on(second, pt, 1);
    let (done, out) = pair.poll_written();
    assert!(!done, "a stream's first timeout is the caller's to feed");
    assert!(out.is_empty(), "sent before the stream was set up");
    pair.timeout_round();
    assert_eq!(pair.received, vec![b"sealed frame 1".to_vec()]);

    // From then on the leg's packets go out at once.
    pair.now += Duration::from_millis(20);
    pair.timeout_round();
    pair.write_on(second, pt, 2);
    let (done, out) = pair.poll_written();
    assert!(done, "a set-up leg's packet went out");
    pair.deliver_to_client(&out);
    assert_eq!(pair.received.last(), Some(&b"sealed frame 2".to_vec()));
}

#[test]
fn a_packet_the_stream_drops_leaves_the_pacer_to_the_timeout_round() {
    let mut pair = Pair::negotiated();
    pair.connect();
    pair.write(1);
    pair.timeout_round();
    assert_eq!(pair.received, vec![b"sealed frame 1".to_vec()]);
    // A payload type the m-line never negotiated: str0m drops the packet
    // when it polls it, and its pacer then wants a fresh snapshot, which
    // only a timeout takes.
    pair.now += Duration::from_millis(20);
    pair.timeout_round();
    let unknown = Pt::from(
        (96..=127u8)
            .find(|&pt| {
                let taken = |p: Option<Pt>| p.is_some_and(|p| *p == pt);
                (pair.sfu.codec_config().iter())
                    .all(|p| !taken(Some(p.pt())) && !taken(p.resend()) && !taken(p.red()))
            })
            .expect("an unused dynamic payload type"),
    );
    pair.write_on(pair.mid, unknown, 2);
    let (done, out) = pair.poll_written();
    assert!(!done, "the pacer's timeout left to nobody");
    assert!(out.is_empty(), "a packet of an unknown payload type sent");
    pair.timeout_round();
    // The leg goes on.
    pair.now += Duration::from_millis(20);
    pair.timeout_round();
    pair.write(3);
    let (done, out) = pair.poll_written();
    assert!(done);
    pair.deliver_to_client(&out);
    assert_eq!(
        pair.received,
        vec![b"sealed frame 1".to_vec(), b"sealed frame 3".to_vec()]
    );
}
