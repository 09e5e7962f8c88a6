//! VP8 video passed through from IVF files, and IVF recording.
//!
//! IVF layout (little-endian): a 32-byte file header (`DKIF`, version 0,
//! header size 32, FourCC `VP80`, width, height, timebase denominator and
//! numerator, frame count, 4 unused bytes), then per frame a 12-byte header
//! (u32 size, u64 timestamp) and the frame.
//!
//! Why not the `rtc` crate's `media::io` IVF reader and writer: its writer
//! takes RTP packets and depacketizes them itself, while we record whole
//! frames that were reassembled and decrypted first; its reader allocates
//! whatever frame size a file claims before checking the file holds it,
//! and ignores a header size over 32. This reader checks every length
//! against the bytes it has.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;

use crate::error::{Error, IvfError};

/// The VP8 clip shipped with hush (320x240, 15 fps, 4 s, key frame every second).
pub const TEST_CLIP: &[u8] = include_bytes!("../assets/test-pattern.ivf");

/// One encoded frame of a clip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoFrame {
    /// Presentation timestamp in timebase units.
    pub pts: u64,
    /// The encoded VP8 frame.
    pub data: Vec<u8>,
}

/// A parsed IVF clip.
#[derive(Debug, Clone)]
pub struct Clip {
    /// Width in pixels.
    pub width: u16,
    /// Height in pixels.
    pub height: u16,
    /// Frames per second (timebase denominator / numerator).
    pub fps: f64,
    /// The frames, in order.
    pub frames: Vec<VideoFrame>,
}

fn bad(why: &'static str) -> Error {
    Error::Ivf(IvfError::Malformed(why))
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| {
        Error::Ivf(IvfError::Io {
            path: path.to_owned(),
            source,
        })
    }
}

impl Clip {
    /// Parses an IVF file's bytes; truncated or non-VP8 input is an error.
    pub fn parse(bytes: &[u8]) -> Result<Self, Error> {
        let header = bytes
            .get(..32)
            .ok_or_else(|| bad("shorter than the 32-byte header"))?;
        if &header[..4] != b"DKIF" {
            return Err(bad("not an IVF file (no DKIF signature)"));
        }
        if &header[8..12] != b"VP80" {
            return Err(bad("not VP8 (FourCC is not VP80)"));
        }
        let u16_at = |i: usize| u16::from_le_bytes([header[i], header[i + 1]]);
        let u32_at =
            |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let header_len = usize::from(u16_at(6)).max(32);
        let (den, num) = (u32_at(16), u32_at(20));
        let fps = if num == 0 {
            30.0
        } else {
            f64::from(den) / f64::from(num)
        };
        let mut rest = bytes
            .get(header_len..)
            .ok_or_else(|| bad("header size beyond the file"))?;
        let mut frames = Vec::new();
        while !rest.is_empty() {
            let fh = rest
                .get(..12)
                .ok_or_else(|| bad("truncated frame header"))?;
            let size = u32::from_le_bytes([fh[0], fh[1], fh[2], fh[3]]) as usize;
            let mut pts = [0u8; 8];
            pts.copy_from_slice(&fh[4..12]);
            let data = rest
                .get(12..12 + size)
                .ok_or_else(|| bad("truncated frame"))?;
            frames.push(VideoFrame {
                pts: u64::from_le_bytes(pts),
                data: data.to_vec(),
            });
            rest = &rest[12 + size..];
        }
        if frames.is_empty() {
            return Err(bad("no frames"));
        }
        Ok(Self {
            width: u16_at(12),
            height: u16_at(14),
            fps,
            frames,
        })
    }

    /// Reads and parses an IVF file.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let bytes = std::fs::read(path).map_err(io(path))?;
        Self::parse(&bytes)
    }

    /// The clip shipped with hush.
    pub fn test_pattern() -> Result<Self, Error> {
        Self::parse(TEST_CLIP)
    }
}

/// Writes received VP8 frames as an IVF file any player can open.
pub struct IvfWriter {
    file: BufWriter<File>,
    frames: u32,
    path: std::path::PathBuf,
}

impl core::fmt::Debug for IvfWriter {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "IvfWriter({} frames)", self.frames)
    }
}

impl IvfWriter {
    /// Creates the file with a header for `width` x `height` at `fps` (integer).
    pub fn create(path: &Path, width: u16, height: u16, fps: u32) -> Result<Self, Error> {
        let io = io(path);
        let mut file = BufWriter::new(File::create(path).map_err(&io)?);
        let mut h = Vec::with_capacity(32);
        h.extend_from_slice(b"DKIF");
        h.extend_from_slice(&0u16.to_le_bytes());
        h.extend_from_slice(&32u16.to_le_bytes());
        h.extend_from_slice(b"VP80");
        h.extend_from_slice(&width.to_le_bytes());
        h.extend_from_slice(&height.to_le_bytes());
        h.extend_from_slice(&fps.max(1).to_le_bytes());
        h.extend_from_slice(&1u32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        file.write_all(&h).map_err(io)?;
        Ok(Self {
            file,
            frames: 0,
            path: path.to_owned(),
        })
    }

    /// Appends a frame.
    pub fn write(&mut self, pts: u64, frame: &[u8]) -> Result<(), Error> {
        let io = io(&self.path);
        let size = u32::try_from(frame.len()).map_err(|_| bad("frame over 4 GiB"))?;
        self.file.write_all(&size.to_le_bytes()).map_err(&io)?;
        self.file.write_all(&pts.to_le_bytes()).map_err(&io)?;
        self.file.write_all(frame).map_err(&io)?;
        self.frames += 1;
        Ok(())
    }

    /// Writes the frame count into the header and flushes.
    pub fn finish(mut self) -> Result<(), Error> {
        let io = io(&self.path);
        self.file.flush().map_err(&io)?;
        let mut f = self.file.into_inner().map_err(|e| io(e.into_error()))?;
        f.seek(SeekFrom::Start(24)).map_err(&io)?;
        f.write_all(&self.frames.to_le_bytes()).map_err(&io)?;
        f.sync_all().map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::is_vp8_key_frame;

    #[test]
    fn the_shipped_clip_parses_with_regular_key_frames() {
        let clip = Clip::test_pattern().expect("clip");
        assert_eq!((clip.width, clip.height), (320, 240));
        assert_eq!(clip.frames.len(), 60);
        assert!((clip.fps - 15.0).abs() < 0.01);
        let keys: Vec<usize> = clip
            .frames
            .iter()
            .enumerate()
            .filter(|(_, f)| is_vp8_key_frame(&f.data))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(keys, [0, 15, 30, 45]);
    }

    #[test]
    fn written_files_read_back_identically() {
        let clip = Clip::test_pattern().expect("clip");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.ivf");
        let mut w = IvfWriter::create(&path, clip.width, clip.height, 15).expect("create");
        for f in &clip.frames {
            w.write(f.pts, &f.data).expect("write");
        }
        w.finish().expect("finish");
        let back = Clip::open(&path).expect("read back");
        assert_eq!(back.frames, clip.frames);
        let bytes = std::fs::read(&path).expect("bytes");
        assert_eq!(
            u32::from_le_bytes([bytes[24], bytes[25], bytes[26], bytes[27]]),
            60
        );
    }

    #[test]
    fn broken_files_are_errors() {
        assert!(Clip::parse(b"").is_err());
        assert!(Clip::parse(&[0u8; 40]).is_err());
        let mut truncated = TEST_CLIP.to_vec();
        truncated.truncate(TEST_CLIP.len() - 5);
        assert!(Clip::parse(&truncated).is_err());
        let mut vp9 = TEST_CLIP.to_vec();
        vp9[8..12].copy_from_slice(b"VP90");
        assert!(Clip::parse(&vp9).is_err());
    }
}
