//! The ciphertext audit file (`hush-server --capture FILE`): every RTP
//! payload the SFU forwards, after SRTP decryption, so anyone can check that what the
//! SFU handles is SFrame ciphertext.
//!
//! # Format
//!
//! All integers are big-endian.
//!
//! ```text
//! file    = magic record*
//! magic   = "HUSHCAP1"                      ; 8 bytes
//! record  = kind:u8 ssrc:u32 seq:u16 len:u32 payload:len bytes
//! kind    = 0 (audio) / 1 (video)
//! ```
//!
//! One record per RTP packet received from a publisher and forwarded to at
//! least one subscriber, in arrival order, written once however many
//! subscribers receive it. `ssrc` and `seq` are the publisher's (before the
//! per-subscriber rewrite); `payload` is the RTP payload exactly as
//! forwarded (padding removed by the RTP parser). Retransmissions answered
//! from the NACK buffer are not recorded again. Records are written by a
//! dedicated thread fed by a bounded queue; if the disk cannot keep up, a
//! record is dropped and counted as `capture_overflow` in the metrics, so a
//! complete audit is one where that counter is zero.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use bytes::Bytes;

use crate::wire::MediaKind;

/// The first eight bytes of a capture file.
pub const MAGIC: &[u8; 8] = b"HUSHCAP1";

/// One forwarded payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureRecord {
    /// Audio or video.
    pub kind: MediaKind,
    /// The publisher's SSRC.
    pub ssrc: u32,
    /// The publisher's RTP sequence number.
    pub seq: u16,
    /// The RTP payload as forwarded.
    pub payload: Bytes,
}

/// Appends one record to a capture file's bytes.
pub fn write_record(out: &mut impl Write, r: &CaptureRecord) -> io::Result<()> {
    let kind: u8 = match r.kind {
        MediaKind::Audio => 0,
        MediaKind::Video => 1,
    };
    let len = u32::try_from(r.payload.len()).map_err(io::Error::other)?;
    out.write_all(&[kind])?;
    out.write_all(&r.ssrc.to_be_bytes())?;
    out.write_all(&r.seq.to_be_bytes())?;
    out.write_all(&len.to_be_bytes())?;
    out.write_all(&r.payload)
}

/// Errors reading a capture file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// The file could not be read.
    #[error("reading capture file: {0}")]
    Io(#[from] io::Error),
    /// The file does not start with [`MAGIC`].
    #[error("not a hush capture file")]
    BadMagic,
    /// A record has an unknown kind byte.
    #[error("record {index}: unknown kind {kind}")]
    BadKind {
        /// Zero-based record number.
        index: usize,
        /// The byte found.
        kind: u8,
    },
    /// The file ends inside a record.
    #[error("record {index} is truncated")]
    Truncated {
        /// Zero-based record number.
        index: usize,
    },
}

/// Reads a whole capture file.
pub fn read_capture(path: &Path) -> Result<Vec<CaptureRecord>, CaptureError> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    parse_capture(&data)
}

/// Parses the bytes of a capture file.
pub fn parse_capture(data: &[u8]) -> Result<Vec<CaptureRecord>, CaptureError> {
    let rest = data.strip_prefix(MAGIC).ok_or(CaptureError::BadMagic)?;
    let mut rest = rest;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let index = out.len();
        let truncated = CaptureError::Truncated { index };
        let (head, tail) = rest.split_at_checked(11).ok_or(truncated)?;
        let kind = match head[0] {
            0 => MediaKind::Audio,
            1 => MediaKind::Video,
            kind => return Err(CaptureError::BadKind { index, kind }),
        };
        let ssrc = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        let seq = u16::from_be_bytes([head[5], head[6]]);
        let len = u32::from_be_bytes([head[7], head[8], head[9], head[10]]) as usize;
        let (payload, tail) = tail
            .split_at_checked(len)
            .ok_or(CaptureError::Truncated { index })?;
        out.push(CaptureRecord {
            kind,
            ssrc,
            seq,
            payload: Bytes::copy_from_slice(payload),
        });
        rest = tail;
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rec(kind: MediaKind, seq: u16, payload: &'static [u8]) -> CaptureRecord {
        CaptureRecord {
            kind,
            ssrc: 0xdead_beef,
            seq,
            payload: Bytes::from_static(payload),
        }
    }

    #[test]
    fn written_records_read_back_identically() {
        let records = vec![
            rec(MediaKind::Audio, 1, b"abc"),
            rec(MediaKind::Video, 65535, b""),
            rec(MediaKind::Video, 0, &[0xff; 300]),
        ];
        let mut buf = MAGIC.to_vec();
        for r in &records {
            write_record(&mut buf, r).unwrap();
        }
        assert_eq!(parse_capture(&buf).unwrap(), records);
        let path = std::env::temp_dir().join(format!("hush-cap-{}", std::process::id()));
        std::fs::write(&path, &buf).unwrap();
        assert_eq!(read_capture(&path).unwrap(), records);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn layout_is_as_documented() {
        let mut buf = MAGIC.to_vec();
        write_record(&mut buf, &rec(MediaKind::Video, 0x0102, b"xy")).unwrap();
        assert_eq!(
            &buf[8..],
            &[
                1, 0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0, 0, 0, 2, b'x', b'y'
            ]
        );
    }

    #[test]
    fn malformed_files_are_rejected() {
        assert!(matches!(
            parse_capture(b"nope"),
            Err(CaptureError::BadMagic)
        ));
        let mut buf = MAGIC.to_vec();
        write_record(&mut buf, &rec(MediaKind::Audio, 1, b"abcd")).unwrap();
        assert!(matches!(
            parse_capture(&buf[..buf.len() - 1]),
            Err(CaptureError::Truncated { index: 0 })
        ));
        buf[8] = 7;
        assert!(matches!(
            parse_capture(&buf),
            Err(CaptureError::BadKind { index: 0, kind: 7 })
        ));
        assert_eq!(parse_capture(MAGIC).unwrap(), vec![]);
    }
}
