//! The writer of the ciphertext audit file (`--capture FILE`): every RTP
//! payload the SFU forwards, after SRTP decryption, so anyone can check
//! that what the SFU handles is SFrame ciphertext.
//!
//! The file format, its reader ([`hush_proto::capture::read_capture`]) and
//! what exactly is recorded are documented in [`hush_proto::capture`]; this
//! module only writes it. Records are written by a dedicated thread fed by
//! a bounded queue; if the disk cannot keep up, a record is dropped and
//! counted as `capture_overflow` in the metrics, so a complete audit is one
//! where that counter is zero.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::mpsc;
use std::thread::JoinHandle;

use hush_proto::capture::{CaptureRecord, MAGIC, write_record};

/// How many records may wait for the writer thread before new ones are dropped.
const QUEUE: usize = 8192;

/// Appends records to a capture file from a background thread.
#[derive(Debug)]
pub(crate) struct CaptureWriter {
    tx: Option<mpsc::SyncSender<CaptureRecord>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl CaptureWriter {
    /// Creates (truncates) `path` and starts the writer thread.
    pub(crate) fn create(path: &Path) -> io::Result<Self> {
        let mut out = BufWriter::new(File::create(path)?);
        out.write_all(MAGIC)?;
        out.flush()?;
        let (tx, rx) = mpsc::sync_channel::<CaptureRecord>(QUEUE);
        let thread = std::thread::Builder::new()
            .name("hush-sfu-capture".into())
            .spawn(move || {
                while let Ok(record) = rx.recv() {
                    write_record(&mut out, &record)?;
                    // Flush whenever the queue runs dry, so the file is
                    // current within moments without a syscall per packet.
                    let mut more = rx.try_recv();
                    while let Ok(record) = more {
                        write_record(&mut out, &record)?;
                        more = rx.try_recv();
                    }
                    out.flush()?;
                }
                out.flush()
            })?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues a record; `false` if the queue is full and it was dropped.
    pub(crate) fn record(&self, record: CaptureRecord) -> bool {
        match &self.tx {
            Some(tx) => tx.try_send(record).is_ok(),
            None => false,
        }
    }

    /// Writes everything queued and closes the file.
    pub(crate) fn finish(&mut self) -> io::Result<()> {
        self.tx = None;
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| io::Error::other("capture thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for CaptureWriter {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use bytes::Bytes;
    use hush_proto::MediaKind;
    use hush_proto::capture::read_capture;

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
        let path = std::env::temp_dir().join(format!("hush-sfu-cap-{}", std::process::id()));
        let records = vec![
            rec(MediaKind::Audio, 1, b"abc"),
            rec(MediaKind::Video, 65535, b""),
            rec(MediaKind::Video, 0, &[0xff; 300]),
        ];
        let mut w = CaptureWriter::create(&path).unwrap();
        for r in &records {
            assert!(w.record(r.clone()));
        }
        w.finish().unwrap();
        assert_eq!(read_capture(&path).unwrap(), records);
        std::fs::remove_file(&path).unwrap();
    }
}
