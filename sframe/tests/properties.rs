//! Property tests over every suite and backend: round trips, any bit flip
//! rejected, replays rejected, unknown KIDs named.

use hush_sframe::{ALL_SUITES, Backend, CipherSuite, Counter, Error, KeyId, Receiver, Sender};
use proptest::prelude::*;

fn pair(
    suite: CipherSuite,
    backend: Backend,
    kid: KeyId,
    key: &[u8],
    first: u64,
) -> (Sender, Receiver) {
    let mut tx = Sender::with_backend(suite, backend);
    tx.add_key_at(kid, key, Counter(first))
        .expect("fresh sender");
    let mut rx = Receiver::with_backend(suite, backend);
    rx.add_key(kid, key).expect("fresh receiver");
    (tx, rx)
}

fn every_suite_and_backend() -> impl Iterator<Item = (CipherSuite, Backend)> {
    ALL_SUITES
        .into_iter()
        .flat_map(|s| Backend::AVAILABLE.iter().map(move |&b| (s, b)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn frames_round_trip(
        key in prop::collection::vec(any::<u8>(), 1..64),
        kid in any::<u64>(),
        first in 0u64..u64::MAX - 2,
        metadata in prop::collection::vec(any::<u8>(), 0..300),
        payload in prop::collection::vec(any::<u8>(), 0..3000),
    ) {
        for (suite, backend) in every_suite_and_backend() {
            let (mut tx, mut rx) = pair(suite, backend, KeyId(kid), &key, first);
            // Vec API.
            let frame = tx.encrypt(&metadata, &payload).expect("encrypt");
            prop_assert_eq!(frame.len(), hush_sframe::Header::new(KeyId(kid), Counter(first)).encoded_len() + payload.len() + suite.tag_len());
            prop_assert_eq!(&rx.decrypt(&metadata, &frame).expect("decrypt"), &payload);
            // Caller-buffer and in-place APIs.
            let mut out = vec![0u8; payload.len() + tx.max_overhead()];
            let n = tx.encrypt_into(&metadata, &payload, &mut out).expect("encrypt_into");
            let mut pt = vec![0u8; n];
            let (h, len) = rx.decrypt_into(&metadata, &out[..n], &mut pt).expect("decrypt_into");
            prop_assert_eq!((h.kid, h.ctr), (KeyId(kid), Counter(first + 1)));
            prop_assert_eq!(&pt[..len], &payload[..]);
            let n = tx.encrypt_into(&metadata, &payload, &mut out).expect("encrypt_into");
            let (h, opened) = rx.decrypt_in_place(&metadata, &mut out[..n]).expect("in place");
            prop_assert_eq!(h.ctr, Counter(first + 2));
            prop_assert_eq!(&opened[..], &payload[..]);
        }
    }

    #[test]
    fn backends_interoperate(
        key in prop::collection::vec(any::<u8>(), 16..33),
        payload in prop::collection::vec(any::<u8>(), 0..2000),
        metadata in prop::collection::vec(any::<u8>(), 0..20),
    ) {
        for suite in ALL_SUITES {
            for &a in Backend::AVAILABLE {
                for &b in Backend::AVAILABLE {
                    let mut tx = Sender::with_backend(suite, a);
                    tx.add_key(KeyId(3), &key).expect("add");
                    let mut rx = Receiver::with_backend(suite, b);
                    rx.add_key(KeyId(3), &key).expect("add");
                    let frame = tx.encrypt(&metadata, &payload).expect("encrypt");
                    prop_assert_eq!(&rx.decrypt(&metadata, &frame).expect("decrypt"), &payload);
                }
            }
        }
    }

    #[test]
    fn any_single_bit_flip_is_rejected(
        key in prop::collection::vec(any::<u8>(), 16..17),
        kid in any::<u64>(),
        first in 0u64..1 << 40,
        metadata in prop::collection::vec(any::<u8>(), 0..40),
        payload in prop::collection::vec(any::<u8>(), 0..200),
        position in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        for (suite, backend) in every_suite_and_backend() {
            let (mut tx, mut rx) = pair(suite, backend, KeyId(kid), &key, first);
            let frame = tx.encrypt(&metadata, &payload).expect("encrypt");
            // Flip one bit anywhere in metadata || header || ciphertext || tag.
            let i = position.index(metadata.len() + frame.len());
            let (mut md, mut fr) = (metadata.clone(), frame.clone());
            if i < md.len() { md[i] ^= 1 << bit } else { fr[i - md.len()] ^= 1 << bit }
            let result = rx.decrypt(&md, &fr);
            prop_assert!(
                matches!(
                    result,
                    Err(Error::AuthenticationFailed { .. }
                        | Error::UnknownKeyId(_)
                        | Error::NonMinimalHeader
                        | Error::HeaderTruncated { .. }
                        | Error::FrameTooShort { .. })
                ),
                "{suite:?}/{backend:?}: flip at {i} gave {result:?}"
            );
            // The untouched frame still decrypts: the forgery burned nothing.
            prop_assert_eq!(&rx.decrypt(&metadata, &frame).expect("genuine"), &payload);
        }
    }

    #[test]
    fn replayed_frames_are_rejected(
        key in prop::collection::vec(any::<u8>(), 16..17),
        kid in any::<u64>(),
        order in Just((0u64..20).collect::<Vec<_>>()).prop_shuffle(),
    ) {
        for (suite, backend) in every_suite_and_backend() {
            let (mut tx, mut rx) = pair(suite, backend, KeyId(kid), &key, 0);
            let frames: Vec<Vec<u8>> = (0..20).map(|i| tx.encrypt(b"", &[i as u8; 30]).expect("encrypt")).collect();
            // Any arrival order inside the window is accepted once...
            for &i in &order {
                prop_assert_eq!(rx.decrypt(b"", &frames[i as usize]).expect("first time"), vec![i as u8; 30]);
            }
            // ...and never twice.
            for &i in &order {
                prop_assert_eq!(
                    rx.decrypt(b"", &frames[i as usize]),
                    Err(Error::Replayed { kid: KeyId(kid), ctr: Counter(i) })
                );
            }
        }
    }

    #[test]
    fn unknown_kid_is_named_in_the_error(
        key in prop::collection::vec(any::<u8>(), 16..17),
        known in any::<u64>(),
        other in any::<u64>(),
    ) {
        prop_assume!(known != other);
        for (suite, backend) in every_suite_and_backend() {
            let mut tx = Sender::with_backend(suite, backend);
            tx.add_key(KeyId(other), &key).expect("add");
            let mut rx = Receiver::with_backend(suite, backend);
            rx.add_key(KeyId(known), &key).expect("add");
            let frame = tx.encrypt(b"", b"frame").expect("encrypt");
            prop_assert_eq!(rx.decrypt(b"", &frame), Err(Error::UnknownKeyId(KeyId(other))));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_receiver(
        bytes in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        for (suite, backend) in every_suite_and_backend() {
            let mut rx = Receiver::with_backend(suite, backend);
            for kid in 0..10 {
                rx.add_key(KeyId(kid), b"0123456789abcdef").expect("add");
            }
            prop_assert!(rx.decrypt(b"", &bytes).is_err());
        }
    }
}
