//! The load test's frame payloads: what a simulated publisher sends and a
//! subscriber checks. Each frame carries, inside the part SFrame encrypts,
//! who sent it, its sequence number and its send time, so receivers measure
//! loss and one-way latency exactly. Payloads are built once and stamped
//! per frame: no codec runs in the load generator.

use std::time::{SystemTime, UNIX_EPOCH};

use hush_client::frame::{Codec, clear_prefix_len};

/// Marks a load-test frame.
pub const MAGIC: [u8; 4] = *b"HLT1";

/// Bytes of the stamp: magic, publisher, kind, sequence, send time.
pub const STAMP_LEN: usize = 4 + 4 + 1 + 8 + 8;

/// What a received frame says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Index of the publisher in the load test.
    pub publisher: u32,
    /// Audio or video.
    pub codec: Codec,
    /// Frame sequence number, per publisher and codec, from 0.
    pub seq: u64,
    /// Send time, microseconds since the Unix epoch.
    pub sent_us: u64,
}

/// Microseconds since the Unix epoch: the clock both ends of a loopback load test share.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

/// A reusable frame of `size` bytes for `codec`: an Opus TOC byte, or a
/// real VP8 key or delta frame header (the part that stays in the clear),
/// then room for the stamp, then filler.
pub fn template(codec: Codec, size: usize, key_frame: bool) -> Vec<u8> {
    let header: &[u8] = match (codec, key_frame) {
        // TOC: SILK-only wideband 20 ms, mono, one frame (RFC 6716 §3.1).
        (Codec::Opus, _) => &[0x48],
        // Frame tag with the key-frame bit clear, start code, 320x240 (RFC 6386 §9.1).
        (Codec::Vp8, true) => &[0x50, 0x42, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00],
        (Codec::Vp8, false) => &[0x31, 0x12, 0x00],
    };
    let size = size.max(header.len() + STAMP_LEN);
    let mut frame = Vec::with_capacity(size);
    frame.extend_from_slice(header);
    frame.resize(size, 0);
    // Filler that does not compress away to nothing if anything tries.
    for (i, b) in frame.iter_mut().enumerate().skip(header.len() + STAMP_LEN) {
        *b = (i as u8).wrapping_mul(151).wrapping_add(7);
    }
    frame
}

/// Writes the stamp into a frame made by [`template`], after its clear prefix.
pub fn stamp(frame: &mut [u8], s: Stamp) {
    let at = clear_prefix_len(s.codec, frame);
    if let Some(out) = frame.get_mut(at..) {
        write_at(out, s);
    }
}

/// Reads the stamp of a decrypted frame; `None` if it is not a load-test frame
/// of this codec.
pub fn read(codec: Codec, frame: &[u8]) -> Option<Stamp> {
    let s = read_at(frame.get(clear_prefix_len(codec, frame)..)?)?;
    (s.codec == codec).then_some(s)
}

/// Writes the stamp at the start of `out` (if it fits).
pub fn write_at(out: &mut [u8], s: Stamp) {
    let Some(out) = out.get_mut(..STAMP_LEN) else {
        return;
    };
    out[..4].copy_from_slice(&MAGIC);
    out[4..8].copy_from_slice(&s.publisher.to_be_bytes());
    out[8] = match s.codec {
        Codec::Opus => 0,
        Codec::Vp8 => 1,
    };
    out[9..17].copy_from_slice(&s.seq.to_be_bytes());
    out[17..25].copy_from_slice(&s.sent_us.to_be_bytes());
}

/// Reads a stamp at the start of `data`.
pub fn read_at(data: &[u8]) -> Option<Stamp> {
    let s = data.get(..STAMP_LEN)?;
    if s[..4] != MAGIC {
        return None;
    }
    let codec = match s[8] {
        0 => Codec::Opus,
        1 => Codec::Vp8,
        _ => return None,
    };
    Some(Stamp {
        publisher: u32::from_be_bytes(s[4..8].try_into().ok()?),
        codec,
        seq: u64::from_be_bytes(s[9..17].try_into().ok()?),
        sent_us: u64::from_be_bytes(s[17..25].try_into().ok()?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_behind_the_clear_prefix() {
        for (codec, key) in [
            (Codec::Opus, false),
            (Codec::Vp8, true),
            (Codec::Vp8, false),
        ] {
            let mut f = template(codec, 200, key);
            assert_eq!(f.len(), 200);
            assert_eq!(
                hush_client::frame::is_vp8_key_frame(&f),
                key || codec == Codec::Opus
            );
            let s = Stamp {
                publisher: 7,
                codec,
                seq: 123_456,
                sent_us: now_us(),
            };
            stamp(&mut f, s);
            assert_eq!(read(codec, &f), Some(s));
            // The stamp sits in the encrypted part, after the clear prefix.
            assert!(clear_prefix_len(codec, &f) + STAMP_LEN <= f.len());
        }
    }

    #[test]
    fn foreign_or_short_frames_are_not_stamps() {
        let mut f = template(Codec::Opus, 80, false);
        assert_eq!(read(Codec::Opus, &f), None, "unstamped");
        stamp(
            &mut f,
            Stamp {
                publisher: 1,
                codec: Codec::Opus,
                seq: 1,
                sent_us: 1,
            },
        );
        assert_eq!(read(Codec::Vp8, &f), None, "wrong codec");
        assert_eq!(read(Codec::Opus, &f[..10]), None, "truncated");
        assert_eq!(read(Codec::Opus, &[]), None);
        // A tiny size still leaves room for the stamp.
        assert!(template(Codec::Vp8, 1, true).len() >= 10 + STAMP_LEN);
    }
}
