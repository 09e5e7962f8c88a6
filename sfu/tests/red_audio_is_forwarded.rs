//! RFC 2198 audio redundancy through the SFU: a publisher's RED packets
//! reach a subscriber that negotiated RED byte for byte on the RED payload
//! type, and a subscriber without RED as their primary block alone on the
//! Opus payload type. A RED payload that does not parse still reaches the
//! RED subscriber (it checks the header itself), never the Opus-only one,
//! and forwarding goes on after it. Plain Opus stays plain Opus.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use hush_proto::media::{OPUS_PAYLOAD_TYPE, RED_PAYLOAD_TYPE};
use hush_proto::red::{self, Block};
use hush_sfu::metrics::DropReason;
use hush_sfu::{MediaKind, ParticipantId, Sfu, SfuConfig, SfuEvent};

const AUDIO: Publish = Publish {
    audio: true,
    video: false,
};

/// Opus frame length in RTP ticks (20 ms at 48 kHz), as `Client::send`.
const FRAME: u32 = 960;

/// Publisher 0's primary block for packet `n`: a tagged payload.
fn primary(n: u32) -> Bytes {
    payload(Tag {
        room: 0,
        publisher: 0,
        kind: MediaKind::Audio as u8,
        n,
    })
}

/// Packet `n`'s RED payload: the primaries of `n - 2` and `n - 1` (those
/// that exist) as redundant blocks, then its own.
fn red_payload(n: u32) -> Bytes {
    let earlier: Vec<(u32, Bytes)> = (n.saturating_sub(2)..n).map(|k| (k, primary(k))).collect();
    let blocks: Vec<Block<'_>> = earlier
        .iter()
        .map(|(k, data)| Block {
            timestamp_offset: (n - k) * FRAME,
            payload_type: OPUS_PAYLOAD_TYPE,
            data,
        })
        .collect();
    Bytes::from(red::write(&blocks, OPUS_PAYLOAD_TYPE, &primary(n)))
}

/// A RED payload whose one redundant block claims 1000 bytes that are not
/// there.
fn malformed_red() -> Bytes {
    let header: u32 = (u32::from(0x80 | OPUS_PAYLOAD_TYPE) << 24) | (FRAME << 10) | 1000;
    let mut p = header.to_be_bytes().to_vec();
    p.push(OPUS_PAYLOAD_TYPE);
    p.extend_from_slice(b"HUSH-malformed-red");
    assert!(red::parse(&p).is_err(), "the test payload must not parse");
    Bytes::from(p)
}

/// What `rx` received on the track the SFU announced for `publisher`'s audio.
fn from(rx: &Client, publisher: ParticipantId) -> Vec<Received> {
    let announced = rx.announced();
    rx.received()
        .into_iter()
        .filter(|r| announced.get(&r.track_id) == Some(&(publisher, MediaKind::Audio)))
        .collect()
}

/// Asserts that the packets `got` end with exactly `expected` (payload
/// bytes, in order, nothing missing, nothing after), each on payload type
/// `pt`.
fn assert_ends_with(who: &str, got: &[Received], expected: &[Bytes], pt: u8) {
    let start = got
        .iter()
        .position(|r| r.payload == expected[0])
        .unwrap_or_else(|| panic!("{who}: the first packet of the run never arrived"));
    let tail: Vec<&Bytes> = got[start..].iter().map(|r| &r.payload).collect();
    let expected: Vec<&Bytes> = expected.iter().collect();
    assert_eq!(
        tail, expected,
        "{who}: payloads differ from what was expected"
    );
    for r in &got[start..] {
        assert_eq!(r.payload_type, pt, "{who}: payload type");
    }
}

fn has_red(sdp: &str) -> bool {
    sdp.contains(&format!("a=rtpmap:{RED_PAYLOAD_TYPE} red/48000/2"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_reaches_red_subscribers_whole_and_others_as_the_primary() {
    let sfu = Sfu::new(SfuConfig::default()).unwrap();
    // P publishes RED; R takes RED; O knows Opus only (and publishes it).
    let p = Client::join_with(&sfu, "room", 1, AUDIO, None, AudioCodecs::OpusAndRed).await;
    let r = Client::join_with(&sfu, "room", 2, AUDIO, None, AudioCodecs::OpusAndRed).await;
    let o = Client::join_with(&sfu, "room", 3, AUDIO, None, AudioCodecs::OpusOnly).await;

    // The SFU accepts RED where it is offered, and answers Opus alone
    // where it is not.
    assert!(
        has_red(&p.answer),
        "no RED in the answer to P:\n{}",
        p.answer
    );
    assert!(
        p.answer.contains(&format!(
            "a=fmtp:{RED_PAYLOAD_TYPE} {OPUS_PAYLOAD_TYPE}/{OPUS_PAYLOAD_TYPE}"
        )),
        "RED's fmtp in the answer to P:\n{}",
        p.answer
    );
    assert!(
        has_red(&r.answer),
        "no RED in the answer to R:\n{}",
        r.answer
    );
    assert!(
        !o.answer.contains("red/"),
        "RED answered to O:\n{}",
        o.answer
    );
    assert!(
        o.answer
            .contains(&format!("a=rtpmap:{OPUS_PAYLOAD_TYPE} opus/48000/2")),
        "no Opus in the answer to O:\n{}",
        o.answer
    );

    // Warm up until both subscribers hear P and R hears O.
    let mut n = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while from(&r, p.id).is_empty() || from(&o, p.id).is_empty() || from(&r, o.id).is_empty() {
        assert!(n < 1500, "forwarding never started");
        tick.tick().await;
        p.send_audio_as(RED_PAYLOAD_TYPE, n, red_payload(n)).await;
        o.send(MediaKind::Audio, 0, 2, n).await;
        n += 1;
    }

    // The run: 60 RED packets with one malformed in the middle, beside O's
    // plain Opus.
    let first = n;
    let last = first + 59;
    let bad = first + 20;
    let (mut sent_red, mut sent_primary) = (Vec::new(), Vec::new());
    for n in first..=last {
        tick.tick().await;
        if n == bad {
            let bytes = malformed_red();
            sent_red.push(bytes.clone());
            p.send_audio_as(RED_PAYLOAD_TYPE, n, bytes).await;
        } else {
            sent_red.push(red_payload(n));
            sent_primary.push(primary(n));
            p.send_audio_as(RED_PAYLOAD_TYPE, n, red_payload(n)).await;
        }
        o.send(MediaKind::Audio, 0, 2, n).await;
    }
    wait_until("the run's last packet at both subscribers", || {
        from(&r, p.id)
            .iter()
            .any(|x| x.payload == red_payload(last))
            && from(&o, p.id).iter().any(|x| x.payload == primary(last))
            && from(&r, o.id)
                .iter()
                .any(|x| parse_tag(&x.payload).is_some_and(|t| t.n == last))
    })
    .await;

    // (a) R gets P's RED packets as sent, the malformed one included.
    assert_ends_with("R from P", &from(&r, p.id), &sent_red, RED_PAYLOAD_TYPE);
    // (b) O gets each primary alone on Opus, never a RED payload, and
    // nothing for the malformed one.
    let at_o = from(&o, p.id);
    assert_ends_with("O from P", &at_o, &sent_primary, OPUS_PAYLOAD_TYPE);
    for x in &at_o {
        let tag = parse_tag(&x.payload).expect("O got something other than a primary");
        assert_eq!(x.payload, primary(tag.n), "O got a changed primary");
        assert_ne!(tag.n, bad, "O got the malformed packet");
    }
    assert_eq!(
        sfu.metrics().drops(DropReason::MalformedRed),
        1,
        "the malformed packet is dropped once, for O"
    );
    // Plain Opus reaches a RED subscriber as plain Opus.
    let count = assert_in_order(&from(&r, o.id), 0, 2, MediaKind::Audio, last);
    assert!(count >= 60, "{count} Opus packets from O at R");
    assert!(
        from(&r, o.id)
            .iter()
            .all(|x| x.payload_type == OPUS_PAYLOAD_TYPE),
        "O's Opus reached R on another payload type"
    );

    // The SFU's own offers follow what each client negotiated.
    let offers = |c: &Client| -> Vec<String> {
        c.events()
            .into_iter()
            .filter_map(|e| match e {
                SfuEvent::Offer { sdp } => Some(sdp),
                _ => None,
            })
            .collect()
    };
    assert!(!offers(&r).is_empty() && !offers(&o).is_empty());
    assert!(
        offers(&r).iter().all(|s| has_red(s)),
        "an offer to R without RED"
    );
    assert!(
        offers(&o).iter().all(|s| !s.contains("red/")),
        "RED offered to O"
    );

    sfu.shutdown().await;
}
