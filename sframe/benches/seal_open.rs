//! Seal + open of one frame: hush-sframe beside the crates.io `sframe`
//! crate (default `ring` backend) and the bare AEADs, on the same inputs.
//!
//! `cargo bench -p hush-sframe --bench seal_open && python3 scripts/bench_ratios.py`

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes128Gcm, Aes256Gcm};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hush_sframe::{Backend, CipherSuite, KeyId, Receiver, Sender};

/// Audio (Opus 20 ms), a typical video packet payload, a large video frame.
const SIZES: [usize; 3] = [60, 1_200, 12_000];
const SUITES: [CipherSuite; 3] = [
    CipherSuite::AesGcm128Sha256,
    CipherSuite::AesGcm256Sha512,
    CipherSuite::AesCtr128HmacSha256_80,
];
const BASE_KEY: &[u8] = b"hush benchmark base key material";

fn hush(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    suite: CipherSuite,
    backend: Backend,
    name: &str,
    size: usize,
) {
    let payload = vec![0xa5u8; size];
    let mut tx = Sender::with_backend(suite, backend);
    tx.add_key(KeyId(1), BASE_KEY).unwrap();
    // A wide window: the benchmark sends millions of frames, all in order.
    let mut rx = Receiver::with_backend(suite, backend);
    rx.add_key(KeyId(1), BASE_KEY).unwrap();
    let mut buf = vec![0u8; size + tx.max_overhead()];
    c.bench_with_input(BenchmarkId::new(name, size), &size, |b, _| {
        b.iter(|| {
            let n = tx.encrypt_into(b"", black_box(&payload), &mut buf).unwrap();
            let (_, pt) = rx.decrypt_in_place(b"", &mut buf[..n]).unwrap();
            black_box(pt.len());
        })
    });
}

fn sframe_crate(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    suite: CipherSuite,
    size: usize,
) {
    use sframe::frame::{MediaFrameView, PanickingMonotonicCounter};
    use sframe::key::{DecryptionKey, EncryptionKey};
    let theirs = match suite {
        CipherSuite::AesGcm128Sha256 => sframe::CipherSuite::AesGcm128Sha256,
        CipherSuite::AesGcm256Sha512 => sframe::CipherSuite::AesGcm256Sha512,
        // The crate's default (ring) backend has no AES-CTR suites.
        _ => return,
    };
    let payload = vec![0xa5u8; size];
    let enc_key = EncryptionKey::derive_from(theirs, 1u64, BASE_KEY).unwrap();
    let dec_key = DecryptionKey::derive_from(theirs, 1u64, BASE_KEY).unwrap();
    let mut counter = PanickingMonotonicCounter::new(u64::MAX);
    let mut enc_buf = Vec::with_capacity(size + 64);
    let mut dec_buf = Vec::with_capacity(size + 64);
    c.bench_with_input(BenchmarkId::new("sframe-crate", size), &size, |b, _| {
        b.iter(|| {
            let frame = MediaFrameView::new(&mut counter, black_box(&payload));
            let enc = frame.encrypt_into(&enc_key, &mut enc_buf).unwrap();
            let dec = enc.decrypt_into(&dec_key, &mut dec_buf).unwrap();
            black_box(dec.payload().len());
        })
    });
}

fn bare_aes_gcm<A: AeadInOut + KeyInit>(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    size: usize,
) {
    let key = vec![7u8; A::key_size()];
    let aead = A::new_from_slice(&key).unwrap();
    let mut buf = vec![0xa5u8; size];
    let nonce = aes_gcm::aead::Nonce::<A>::default();
    c.bench_with_input(BenchmarkId::new("bare-aes-gcm", size), &size, |b, _| {
        b.iter(|| {
            // The same work as a frame: seal, then open, with a short AAD.
            let tag = aead
                .encrypt_inout_detached(&nonce, b"\x91\x01", (&mut buf[..]).into())
                .unwrap();
            aead.decrypt_inout_detached(&nonce, b"\x91\x01", (&mut buf[..]).into(), &tag)
                .unwrap();
            black_box(buf.len());
        })
    });
}

fn bare_ring(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    alg: &'static ring::aead::Algorithm,
    size: usize,
) {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey};
    let key = LessSafeKey::new(UnboundKey::new(alg, &vec![7u8; alg.key_len()]).unwrap());
    let mut buf = vec![0xa5u8; size];
    c.bench_with_input(BenchmarkId::new("bare-ring", size), &size, |b, _| {
        b.iter(|| {
            let tag = key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key([0; 12]),
                    Aad::from(b"\x91\x01"),
                    &mut buf,
                )
                .unwrap();
            key.open_in_place_separate_tag(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::from(b"\x91\x01"),
                tag,
                &mut buf,
                0..,
            )
            .unwrap();
            black_box(buf.len());
        })
    });
}

fn seal_open(c: &mut Criterion) {
    for suite in SUITES {
        let mut g = c.benchmark_group(format!("seal_open/{:04x}", suite.id()));
        for size in SIZES {
            g.throughput(Throughput::Bytes(size as u64));
            for &backend in Backend::AVAILABLE {
                // The CTR suites have one implementation whatever the backend.
                if suite.is_ctr_hmac() && backend != Backend::RustCrypto {
                    continue;
                }
                let name = match backend {
                    Backend::RustCrypto => "hush-rustcrypto",
                    #[allow(unreachable_patterns)]
                    _ => "hush-ring",
                };
                hush(&mut g, suite, backend, name, size);
            }
            sframe_crate(&mut g, suite, size);
            match suite {
                CipherSuite::AesGcm256Sha512 => {
                    bare_aes_gcm::<Aes256Gcm>(&mut g, size);
                    bare_ring(&mut g, &ring::aead::AES_256_GCM, size);
                }
                _ => {
                    bare_aes_gcm::<Aes128Gcm>(&mut g, size);
                    bare_ring(&mut g, &ring::aead::AES_128_GCM, size);
                }
            }
        }
        g.finish();
    }
}

/// The receive path's replay window at its old (128) and current (1024)
/// default width: one seal + open of a 60-byte frame, in order, so each
/// open slides the window by one.
fn replay_window(c: &mut Criterion) {
    let mut g = c.benchmark_group("replay_window");
    let suite = CipherSuite::AesGcm128Sha256;
    let payload = [0xa5u8; 60];
    for window in [128u64, 1024] {
        let mut tx = Sender::new(suite);
        tx.add_key(KeyId(1), BASE_KEY).unwrap();
        let mut rx = Receiver::new(suite).with_replay_window(window).unwrap();
        rx.add_key(KeyId(1), BASE_KEY).unwrap();
        let mut buf = vec![0u8; payload.len() + tx.max_overhead()];
        g.bench_with_input(BenchmarkId::new("seal_open_60", window), &window, |b, _| {
            b.iter(|| {
                let n = tx.encrypt_into(b"", black_box(&payload), &mut buf).unwrap();
                let (_, pt) = rx.decrypt_in_place(b"", &mut buf[..n]).unwrap();
                black_box(pt.len());
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(40);
    targets = seal_open, replay_window
}
criterion_main!(benches);
