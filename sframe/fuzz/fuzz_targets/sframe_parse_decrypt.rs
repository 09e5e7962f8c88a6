//! Arbitrary bytes into the header parser and into decryption, on every
//! suite and backend. Nothing may panic; a header that parses must
//! re-encode to the same bytes (minimal encoding is enforced); nothing an
//! attacker can write without the key may decrypt.
#![no_main]

use std::sync::{Mutex, OnceLock};

use hush_sframe::{ALL_SUITES, Backend, Header, KeyId, Receiver, Sender};
use libfuzzer_sys::fuzz_target;

const KEY: &[u8] = b"fuzzing base key";

/// Contexts built once: key derivation per input would dominate the run.
struct Contexts {
    receivers: Vec<Receiver>,
    tx: Sender,
    rx: Receiver,
}

fn contexts() -> &'static Mutex<Contexts> {
    static CONTEXTS: OnceLock<Mutex<Contexts>> = OnceLock::new();
    CONTEXTS.get_or_init(|| {
        let mut receivers = Vec::new();
        for suite in ALL_SUITES {
            for &backend in Backend::AVAILABLE {
                let mut rx = Receiver::with_backend(suite, backend);
                for kid in [0u64, 1, 7, 8, 255, 256, u64::MAX] {
                    rx.add_key(KeyId(kid), KEY).expect("fresh kid");
                }
                receivers.push(rx);
            }
        }
        let mut tx = Sender::new(ALL_SUITES[3]);
        tx.add_key(KeyId(9), KEY).expect("fresh kid");
        let mut rx = Receiver::new(ALL_SUITES[3]);
        rx.add_key(KeyId(9), KEY).expect("fresh kid");
        Mutex::new(Contexts { receivers, tx, rx })
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok((header, len)) = Header::parse(data) {
        assert_eq!(header.encode().as_bytes(), &data[..len]);
    }
    // The first byte splits metadata from frame, so both are fuzzed.
    let (split, rest) = match data.split_first() {
        Some((s, r)) => (usize::from(*s).min(r.len()), r),
        None => (0, data),
    };
    let (metadata, frame) = rest.split_at(split);
    let mut ctx = contexts().lock().expect("not poisoned");
    for rx in &mut ctx.receivers {
        // Forging a 32-bit tag by chance is possible in principle
        // (RFC 9605 §7.5); at fuzzing rates it would be a bug.
        assert!(rx.decrypt(metadata, frame).is_err(), "forged frame accepted");
        let mut buf = frame.to_vec();
        assert!(rx.decrypt_in_place(metadata, &mut buf).is_err());
    }
    // A genuine frame with fuzzed metadata and payload round-trips.
    let Contexts { tx, rx, .. } = &mut *ctx;
    let sealed = tx.encrypt(metadata, frame).expect("encrypt");
    assert_eq!(rx.decrypt(metadata, &sealed).expect("decrypt"), frame);
});
