//! The SFU's own small parsers of network bytes: the STUN ufrag that
//! claims a first contact, the RED primary handed to subscribers without
//! RED, the SSRC read from a client's SDP, and the ICE-TCP (RFC 4571)
//! deframer.
//!
//! Input: `[cuts][payload type][mid]`, then `cuts % 8` big-endian `u16`
//! cut points, then the bytes. Nothing may panic, and:
//!
//! - a ufrag is a colon-free piece of the bytes;
//! - a RED primary is the tail of the payload, shorter than it, exactly
//!   the primary `hush_proto::red::parse` reads, and given exactly when
//!   that parses with the payload type asked for;
//! - an SSRC comes from an `a=ssrc:` line, in a section whose `a=mid:` is
//!   the mid asked for;
//! - every frame the deframer hands out is 1..=`MAX_FRAME` bytes, the
//!   frames re-framed are the start of the stream, and feeding the bytes
//!   whole or cut at the chosen points gives the same frames and the same
//!   error.
#![no_main]

use hush_sfu::fuzzing::{
    FrameDecoder, FrameError, MAX_FRAME, offered_ssrc, red_primary, stun_local_ufrag,
};
use libfuzzer_sys::fuzz_target;
use str0m::media::Pt;

const MIDS: [&str; 4] = ["0", "1", "2", "audio"];

/// The frames `chunks`, fed in order, give, and the first error.
fn deframe<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> (Vec<Vec<u8>>, Option<FrameError>) {
    let mut decoder = FrameDecoder::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        if let Err(e) = decoder.feed(chunk, |f| frames.push(f.to_vec())) {
            return (frames, Some(e));
        }
    }
    (frames, None)
}

fuzz_target!(|data: &[u8]| {
    let [cuts, pt, mid, rest @ ..] = data else {
        return;
    };
    let n = usize::from(cuts % 8);
    let (cut_bytes, bytes) = rest.split_at((2 * n).min(rest.len()));
    let mid = MIDS[usize::from(*mid) % MIDS.len()];

    if let Some(ufrag) = stun_local_ufrag(bytes) {
        assert!(!ufrag.contains(':'));
        assert!(ufrag.is_empty() || bytes.windows(ufrag.len()).any(|w| w == ufrag.as_bytes()));
    }

    let pt = pt & 0x7f;
    let primary = red_primary(bytes, Pt::new_with_value(pt));
    match hush_proto::red::parse(bytes) {
        Ok(red) if red.primary.payload_type == pt => {
            let primary = primary.expect("a parsed primary of the asked type");
            assert_eq!(&primary[..], red.primary.data);
            assert!(primary.len() < bytes.len() && bytes.ends_with(&primary));
        }
        _ => assert!(primary.is_none()),
    }

    if let Ok(sdp) = std::str::from_utf8(bytes)
        && let Some(ssrc) = offered_ssrc(sdp, mid)
    {
        let from_a_line = sdp.lines().any(|l| {
            l.strip_prefix("a=ssrc:")
                .and_then(|r| r.split_whitespace().next())
                .and_then(|s| s.parse::<u32>().ok())
                == Some(ssrc)
        });
        let in_mid = sdp
            .lines()
            .any(|l| l.strip_prefix("a=mid:").is_some_and(|m| m.trim() == mid));
        assert!(from_a_line && in_mid, "SSRC {ssrc} for mid {mid}");
    }

    let mut points: Vec<usize> = cut_bytes
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_be_bytes([c[0], c[1]])) % (bytes.len() + 1))
        .collect();
    points.sort_unstable();
    let mut chunks = Vec::with_capacity(points.len() + 1);
    let mut at = 0;
    for p in points.into_iter().chain([bytes.len()]) {
        chunks.push(&bytes[at..p]);
        at = p;
    }
    let whole = deframe(std::iter::once(bytes));
    let cut = deframe(chunks.into_iter());
    assert_eq!(whole, cut, "cutting the stream changed what it says");
    let mut reframed = Vec::new();
    for f in &whole.0 {
        assert!(
            (1..=MAX_FRAME).contains(&f.len()),
            "a frame of {} bytes",
            f.len()
        );
        reframed.extend_from_slice(&(f.len() as u16).to_be_bytes());
        reframed.extend_from_slice(f);
    }
    assert!(bytes.starts_with(&reframed));
});
