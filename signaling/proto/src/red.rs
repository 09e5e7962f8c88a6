//! RFC 2198 audio redundancy (RED) as hush carries it (PROTOCOL.md §11):
//! each audio packet holds the current sealed Opus frame (the primary) and
//! up to [`MAX_REDUNDANT`] earlier sealed frames, each still its own SFrame
//! ciphertext. The RED header is clear; the SFU reads it only to hand the
//! primary alone to a subscriber that did not negotiate RED.
//!
//! Layout: one 4-byte header per redundant block (`F=1`, 7-bit block
//! payload type, 14-bit timestamp offset back from the packet's RTP
//! timestamp, 10-bit length), then a 1-byte header for the primary (`F=0`,
//! payload type), then the redundant blocks oldest first, then the primary.

use std::collections::VecDeque;

use thiserror::Error;

/// Most redundant blocks hush puts in one packet (two earlier frames).
pub const MAX_REDUNDANT: usize = 2;

/// Most redundant blocks a receiver accepts in one packet; more is refused.
pub const MAX_BLOCKS_ACCEPTED: usize = 8;

/// Largest redundant block the format can describe (10-bit length).
pub const MAX_BLOCK_LEN: usize = 1023;

/// Largest timestamp offset the format can describe (14 bits).
pub const MAX_TIMESTAMP_OFFSET: u32 = (1 << 14) - 1;

/// One block of a RED payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block<'a> {
    /// How far before the packet's RTP timestamp this block's frame lies
    /// (0 for the primary).
    pub timestamp_offset: u32,
    /// Payload type of the block's data (Opus).
    pub payload_type: u8,
    /// The block's data: one sealed frame.
    pub data: &'a [u8],
}

/// Why a RED payload could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RedError {
    /// The payload ends inside a header or a block.
    #[error("RED payload truncated")]
    Truncated,
    /// More redundant blocks than [`MAX_BLOCKS_ACCEPTED`].
    #[error("RED payload has more than {MAX_BLOCKS_ACCEPTED} redundant blocks")]
    TooManyBlocks,
    /// A redundant block's timestamp offset is 0 or not larger than the next one's.
    #[error("RED block timestamp offsets out of order")]
    OffsetOrder,
}

/// A parsed RED payload: the redundant blocks (oldest first) and the primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedPayload<'a> {
    /// Earlier frames, oldest first.
    pub redundant: Vec<Block<'a>>,
    /// The packet's own frame.
    pub primary: Block<'a>,
}

/// Reads a RED payload. Redundant blocks must be in order, oldest first,
/// each strictly older than the next (offsets decreasing, never 0).
pub fn parse(payload: &[u8]) -> Result<RedPayload<'_>, RedError> {
    let mut headers = Vec::new();
    let mut at = 0usize;
    loop {
        let first = *payload.get(at).ok_or(RedError::Truncated)?;
        if first & 0x80 == 0 {
            at += 1;
            break;
        }
        if headers.len() == MAX_BLOCKS_ACCEPTED {
            return Err(RedError::TooManyBlocks);
        }
        let h = payload.get(at..at + 4).ok_or(RedError::Truncated)?;
        let word = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        let offset = (word >> 10) & 0x3fff;
        let len = (word & 0x3ff) as usize;
        if offset == 0 || headers.last().is_some_and(|&(o, _, _)| offset >= o) {
            return Err(RedError::OffsetOrder);
        }
        headers.push((offset, first & 0x7f, len));
        at += 4;
    }
    let primary_pt = payload[at - 1] & 0x7f;
    let mut redundant = Vec::with_capacity(headers.len());
    for (timestamp_offset, payload_type, len) in headers {
        let data = payload.get(at..at + len).ok_or(RedError::Truncated)?;
        redundant.push(Block {
            timestamp_offset,
            payload_type,
            data,
        });
        at += len;
    }
    Ok(RedPayload {
        redundant,
        primary: Block {
            timestamp_offset: 0,
            payload_type: primary_pt,
            data: &payload[at..],
        },
    })
}

/// Writes a RED payload: `redundant` (oldest first, offsets decreasing and
/// non-zero) then `primary`. A redundant block that the format cannot
/// describe (longer than [`MAX_BLOCK_LEN`], offset over
/// [`MAX_TIMESTAMP_OFFSET`] or out of order) is left out.
pub fn write(redundant: &[Block<'_>], primary_pt: u8, primary: &[u8]) -> Vec<u8> {
    let mut kept: Vec<&Block<'_>> = Vec::with_capacity(redundant.len());
    for b in redundant {
        let fits = b.data.len() <= MAX_BLOCK_LEN
            && (1..=MAX_TIMESTAMP_OFFSET).contains(&b.timestamp_offset)
            && kept
                .last()
                .is_none_or(|k| b.timestamp_offset < k.timestamp_offset);
        if fits {
            kept.push(b);
        }
    }
    let size = kept.iter().map(|b| 4 + b.data.len()).sum::<usize>() + 1 + primary.len();
    let mut out = Vec::with_capacity(size);
    for b in &kept {
        let word = (u32::from(0x80 | (b.payload_type & 0x7f)) << 24)
            | (b.timestamp_offset << 10)
            | b.data.len() as u32;
        out.extend_from_slice(&word.to_be_bytes());
    }
    out.push(primary_pt & 0x7f);
    for b in &kept {
        out.extend_from_slice(b.data);
    }
    out.extend_from_slice(primary);
    out
}

/// RTP clock ticks of one 20 ms Opus frame: the offset between blocks.
pub const FRAME_TICKS: u32 = 960;

/// The sending side: the last sealed frames, repeated in each packet
/// (oldest first, each [`FRAME_TICKS`] further back), as every hush sender
/// lays them out.
#[derive(Debug, Clone, Default)]
pub struct Repeater {
    depth: usize,
    history: VecDeque<Vec<u8>>,
}

impl Repeater {
    /// Repeats `depth` earlier frames (at most [`MAX_REDUNDANT`]; 0: none).
    pub fn new(depth: usize) -> Self {
        Self {
            depth: depth.min(MAX_REDUNDANT),
            history: VecDeque::new(),
        }
    }

    /// How many earlier frames each packet repeats.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// The payload for `sealed` (a RED payload with the frames before it
    /// when `red` and the depth is not 0, else `sealed` itself) and
    /// whether it is RED; `sealed` is remembered for the next packets.
    pub fn packet(&mut self, sealed: Vec<u8>, red: bool, primary_pt: u8) -> (Vec<u8>, bool) {
        let out = if red && self.depth > 0 {
            let n = self.history.len() as u32;
            let blocks: Vec<Block<'_>> = self
                .history
                .iter()
                .enumerate()
                .map(|(i, data)| Block {
                    timestamp_offset: (n - i as u32) * FRAME_TICKS,
                    payload_type: primary_pt,
                    data,
                })
                .collect();
            (write(&blocks, primary_pt, &sealed), true)
        } else {
            (sealed.clone(), false)
        };
        if self.depth > 0 {
            if self.history.len() == self.depth {
                self.history.pop_front();
            }
            self.history.push_back(sealed);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Blocks for the two frames before a packet's own, oldest first.
    fn two_earlier<'a>(older: &'a [u8], newer: &'a [u8]) -> [Block<'a>; 2] {
        [
            Block {
                timestamp_offset: 2 * FRAME_TICKS,
                payload_type: 111,
                data: older,
            },
            Block {
                timestamp_offset: FRAME_TICKS,
                payload_type: 111,
                data: newer,
            },
        ]
    }

    #[test]
    fn a_packet_with_two_earlier_frames_round_trips() {
        let (a, b, c) = (vec![1u8; 40], vec![2u8; 50], vec![3u8; 60]);
        let red = two_earlier(&a, &b);
        let bytes = write(&red, 111, &c);
        assert_eq!(bytes.len(), 4 + 4 + 1 + 40 + 50 + 60);
        let parsed = parse(&bytes).expect("parses");
        assert_eq!(parsed.redundant, red);
        assert_eq!(parsed.primary.data, &c[..]);
        assert_eq!(parsed.primary.payload_type, 111);
    }

    #[test]
    fn a_packet_of_only_a_primary_is_one_byte_longer() {
        let bytes = write(&[], 111, b"frame");
        assert_eq!(bytes, b"\x6fframe");
        let parsed = parse(&bytes).expect("parses");
        assert!(parsed.redundant.is_empty());
        assert_eq!(parsed.primary.data, b"frame");
    }

    #[test]
    fn blocks_the_format_cannot_describe_are_left_out() {
        let big = vec![0u8; MAX_BLOCK_LEN + 1];
        let ok = [7u8; 3];
        let red = [
            Block {
                timestamp_offset: 2880,
                payload_type: 111,
                data: &big,
            },
            Block {
                timestamp_offset: MAX_TIMESTAMP_OFFSET + 1,
                payload_type: 111,
                data: &ok,
            },
            Block {
                timestamp_offset: 960,
                payload_type: 111,
                data: &ok,
            },
            Block {
                timestamp_offset: 960,
                payload_type: 111,
                data: &ok,
            },
        ];
        let parsed_bytes = write(&red, 111, b"p");
        let parsed = parse(&parsed_bytes).expect("parses");
        assert_eq!(parsed.redundant.len(), 1);
        assert_eq!(parsed.redundant[0].timestamp_offset, 960);
    }

    #[test]
    fn a_repeater_carries_the_two_frames_before_each_one() {
        let mut r = Repeater::new(2);
        // Plain while RED is not accepted, but the history is kept.
        assert_eq!(
            r.packet(b"f0".to_vec(), false, 111),
            (b"f0".to_vec(), false)
        );
        let mut seen = Vec::new();
        for f in [b"f1", b"f2", b"f3"] {
            let (payload, red) = r.packet(f.to_vec(), true, 111);
            assert!(red);
            let p = parse(&payload).expect("RED");
            assert_eq!(p.primary.data, f);
            seen.push(
                p.redundant
                    .iter()
                    .map(|b| (b.timestamp_offset, b.data.to_vec()))
                    .collect::<Vec<_>>(),
            );
        }
        assert_eq!(seen[0], [(960, b"f0".to_vec())]);
        assert_eq!(seen[1], [(1920, b"f0".to_vec()), (960, b"f1".to_vec())]);
        assert_eq!(seen[2], [(1920, b"f1".to_vec()), (960, b"f2".to_vec())]);
        // Depth 0 sends plain Opus even when RED was accepted.
        let mut plain = Repeater::new(0);
        assert_eq!(
            plain.packet(b"x".to_vec(), true, 111),
            (b"x".to_vec(), false)
        );
        assert_eq!(Repeater::new(9).depth(), MAX_REDUNDANT);
    }

    #[test]
    fn malformed_payloads_are_refused() {
        assert_eq!(parse(&[]), Err(RedError::Truncated));
        // A redundant header cut short, and a block longer than what follows.
        assert_eq!(parse(&[0x80 | 111, 0x00]), Err(RedError::Truncated));
        let word: u32 = (0xef << 24) | (960 << 10) | 10;
        let mut p = word.to_be_bytes().to_vec();
        p.extend_from_slice(&[111, 1, 2, 3]);
        assert_eq!(parse(&p), Err(RedError::Truncated));
        // Offset zero, and offsets not decreasing.
        let zero: u32 = (0xef << 24) | 1;
        let mut p = zero.to_be_bytes().to_vec();
        p.extend_from_slice(&[111, 9, 9]);
        assert_eq!(parse(&p), Err(RedError::OffsetOrder));
        let mut p = Vec::new();
        for off in [960u32, 1920] {
            p.extend_from_slice(&((0xef << 24) | (off << 10) | 1).to_be_bytes());
        }
        p.extend_from_slice(&[111, 1, 2, 3]);
        assert_eq!(parse(&p), Err(RedError::OffsetOrder));
        // Endless headers stop at the cap.
        let mut p = Vec::new();
        for i in 0..=MAX_BLOCKS_ACCEPTED as u32 {
            let off = 16_000 - i * 960;
            p.extend_from_slice(&((0xef << 24) | (off << 10)).to_be_bytes());
        }
        p.push(111);
        assert_eq!(parse(&p), Err(RedError::TooManyBlocks));
    }

    /// `docs/vectors/red.json`: a RED payload with two earlier frames, as
    /// hush sends it (the blocks are opaque bytes here; on the wire each is
    /// an encrypted frame of PROTOCOL.md §6). `HUSH_WRITE_VECTORS=1`
    /// rewrites the file.
    #[test]
    fn red_vector_matches_docs() {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let (a, b, c) = (
            b"frame n-2".to_vec(),
            b"frame n-1".to_vec(),
            b"frame n".to_vec(),
        );
        let blocks = two_earlier(&a, &b);
        let payload = write(&blocks, 111, &c);
        let text = format!(
            "{{\n  \"description\": \"RFC 2198 audio redundancy as hush sends it (PROTOCOL.md section 11): one 4-byte header per earlier frame (F=1, PT, 14-bit timestamp offset, 10-bit length), a 1-byte primary header (F=0, PT), the earlier frames oldest first, then the primary\",\n  \"payload_type\": 111,\n  \"redundant\": [\n    {{ \"timestamp_offset\": 1920, \"data\": \"{}\" }},\n    {{ \"timestamp_offset\": 960, \"data\": \"{}\" }}\n  ],\n  \"primary\": \"{}\",\n  \"payload\": \"{}\"\n}}\n",
            hex(&a),
            hex(&b),
            hex(&c),
            hex(&payload)
        );
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/vectors/red.json");
        if std::env::var_os("HUSH_WRITE_VECTORS").is_some() {
            std::fs::write(&path, &text).expect("write vectors");
        }
        let committed = std::fs::read_to_string(&path).expect("committed vectors exist");
        assert_eq!(
            committed, text,
            "red.json is out of date: rerun with HUSH_WRITE_VECTORS=1"
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn what_is_written_parses_back(
            blocks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..3),
            primary in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let n = blocks.len() as u32;
            let red: Vec<Block<'_>> = blocks.iter().enumerate().map(|(i, d)| Block {
                timestamp_offset: (n - i as u32) * 960,
                payload_type: 111,
                data: d,
            }).collect();
            let bytes = write(&red, 111, &primary);
            let parsed = parse(&bytes).expect("what we write parses");
            prop_assert_eq!(parsed.redundant, red);
            prop_assert_eq!(parsed.primary.data, &primary[..]);
        }
    }
}
