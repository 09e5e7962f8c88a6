//! Behaviour of the sending and receiving contexts beyond round trips.

use hush_sframe::{
    ALL_SUITES, Backend, CipherSuite, Counter, DerivedKey, Error, FrameAead, Header, KeyId,
    Receiver, Secret, Sender,
};

const KEY: &[u8] = b"0123456789abcdef";
const SUITE: CipherSuite = CipherSuite::AesGcm128Sha256;

fn pair(kid: u64) -> (Sender, Receiver) {
    let mut tx = Sender::new(SUITE);
    tx.add_key(KeyId(kid), KEY).expect("add");
    let mut rx = Receiver::new(SUITE);
    rx.add_key(KeyId(kid), KEY).expect("add");
    (tx, rx)
}

#[test]
fn counter_exhaustion_is_an_error_never_a_wrap() {
    for suite in ALL_SUITES {
        let mut tx = Sender::new(suite);
        tx.add_key_at(KeyId(1), KEY, Counter(u64::MAX - 1))
            .expect("add");
        let mut rx = Receiver::new(suite);
        rx.add_key(KeyId(1), KEY).expect("add");
        for ctr in [u64::MAX - 1, u64::MAX] {
            let frame = tx.encrypt(b"", b"x").expect("last counters are usable");
            assert_eq!(Header::parse(&frame).expect("parse").0.ctr, Counter(ctr));
            assert_eq!(rx.decrypt(b"", &frame).expect("decrypt"), b"x");
        }
        assert_eq!(
            tx.encrypt(b"", b"x"),
            Err(Error::CounterExhausted(KeyId(1)))
        );
        assert_eq!(
            tx.next_counter(KeyId(1)),
            Err(Error::CounterExhausted(KeyId(1)))
        );
    }
}

#[test]
fn a_kid_cannot_be_installed_twice() {
    // Re-adding would restart the counter at 0 and reuse nonces.
    let (mut tx, mut rx) = pair(9);
    assert_eq!(
        tx.add_key(KeyId(9), KEY),
        Err(Error::DuplicateKeyId(KeyId(9)))
    );
    assert_eq!(
        rx.add_key(KeyId(9), KEY),
        Err(Error::DuplicateKeyId(KeyId(9)))
    );
}

#[test]
fn a_failed_encrypt_into_consumes_no_counter() {
    let (mut tx, _) = pair(1);
    let mut small = [0u8; 8];
    assert!(matches!(
        tx.encrypt_into(b"", &[0u8; 100], &mut small),
        Err(Error::BufferTooSmall { .. })
    ));
    assert_eq!(tx.next_counter(KeyId(1)), Ok(Counter(0)));
}

#[test]
fn receiver_holds_many_kids_and_forgets_removed_ones() {
    let mut rx = Receiver::new(SUITE);
    let mut senders: Vec<Sender> = (0..50u64)
        .map(|kid| {
            let key = [kid as u8; 16];
            rx.add_key(KeyId(kid << 8), &key).expect("add");
            let mut tx = Sender::new(SUITE);
            tx.add_key(KeyId(kid << 8), &key).expect("add");
            tx
        })
        .collect();
    for (i, tx) in senders.iter_mut().enumerate() {
        let frame = tx.encrypt(b"", &[i as u8]).expect("encrypt");
        assert_eq!(rx.decrypt(b"", &frame).expect("decrypt"), [i as u8]);
    }
    assert!(rx.remove_key(KeyId(7 << 8)));
    assert!(!rx.has_key(KeyId(7 << 8)));
    let frame = senders[7].encrypt(b"", b"after removal").expect("encrypt");
    assert_eq!(
        rx.decrypt(b"", &frame),
        Err(Error::UnknownKeyId(KeyId(7 << 8)))
    );
    assert!(!rx.remove_key(KeyId(7 << 8)));
}

#[test]
fn frames_older_than_the_window_are_rejected() {
    let (mut tx, _) = pair(2);
    let mut rx = Receiver::new(SUITE).with_replay_window(16).expect("window");
    rx.add_key(KeyId(2), KEY).expect("add");
    let frames: Vec<Vec<u8>> = (0..40)
        .map(|_| tx.encrypt(b"", b"f").expect("enc"))
        .collect();
    rx.decrypt(b"", &frames[39]).expect("newest");
    assert_eq!(
        rx.decrypt(b"", &frames[23]),
        Err(Error::OutsideReplayWindow {
            kid: KeyId(2),
            ctr: Counter(23)
        })
    );
    rx.decrypt(b"", &frames[24])
        .expect("oldest inside the window");
    assert!(Receiver::new(SUITE).with_replay_window(0).is_err());
}

#[test]
fn the_default_window_is_1024_frames() {
    let (mut tx, mut rx) = pair(2);
    let frames: Vec<Vec<u8>> = (0..1100)
        .map(|_| tx.encrypt(b"", b"f").expect("enc"))
        .collect();
    rx.decrypt(b"", &frames[1099]).expect("newest");
    assert!(matches!(
        rx.decrypt(b"", &frames[75]),
        Err(Error::OutsideReplayWindow { .. })
    ));
    rx.decrypt(b"", &frames[76])
        .expect("1,023 behind the newest");
}

#[test]
fn sender_switches_keys_and_each_key_keeps_its_counter() {
    let mut tx = Sender::new(SUITE);
    tx.add_key(KeyId(0x10), KEY).expect("add");
    tx.add_key(KeyId(0x11), b"another base key").expect("add");
    assert_eq!(
        tx.active_key(),
        Some(KeyId(0x10)),
        "the first key becomes active"
    );
    tx.encrypt(b"", b"a").expect("enc");
    tx.set_active_key(KeyId(0x11)).expect("switch");
    let f = tx.encrypt(b"", b"b").expect("enc");
    assert_eq!(
        Header::parse(&f).expect("parse").0,
        Header::new(KeyId(0x11), Counter(0))
    );
    tx.set_active_key(KeyId(0x10)).expect("switch back");
    let f = tx.encrypt(b"", b"c").expect("enc");
    assert_eq!(
        Header::parse(&f).expect("parse").0,
        Header::new(KeyId(0x10), Counter(1))
    );
    assert_eq!(
        tx.set_active_key(KeyId(5)),
        Err(Error::UnknownKeyId(KeyId(5)))
    );
    assert!(tx.remove_key(KeyId(0x10)));
    assert_eq!(tx.encrypt(b"", b"d"), Err(Error::NoActiveKey));
}

#[test]
fn truncated_frames_are_typed_errors() {
    let (mut tx, mut rx) = pair(1);
    let frame = tx.encrypt(b"", b"").expect("enc");
    for len in 0..frame.len() {
        let err = rx.decrypt(b"", &frame[..len]).expect_err("truncated");
        assert!(
            matches!(
                err,
                Error::HeaderTruncated { .. } | Error::FrameTooShort { .. }
            ),
            "len {len}: {err:?}"
        );
    }
    rx.decrypt(b"", &frame).expect("whole frame");
}

#[test]
fn wrong_metadata_fails_authentication() {
    let (mut tx, mut rx) = pair(1);
    let frame = tx.encrypt(b"prefix", b"payload").expect("enc");
    assert!(matches!(
        rx.decrypt(b"prefiy", &frame),
        Err(Error::AuthenticationFailed { .. })
    ));
    assert!(matches!(
        rx.decrypt(b"", &frame),
        Err(Error::AuthenticationFailed { .. })
    ));
    rx.decrypt(b"prefix", &frame).expect("right metadata");
}

#[test]
fn wrong_key_fails_authentication_for_every_suite() {
    for suite in ALL_SUITES {
        let mut tx = Sender::new(suite);
        tx.add_key(KeyId(4), KEY).expect("add");
        let mut rx = Receiver::new(suite);
        rx.add_key(KeyId(4), b"0123456789abcdeX").expect("add");
        let frame = tx.encrypt(b"", b"payload").expect("enc");
        assert_eq!(
            rx.decrypt(b"", &frame),
            Err(Error::AuthenticationFailed {
                kid: KeyId(4),
                ctr: Counter(0)
            }),
            "{suite:?}"
        );
    }
}

#[test]
fn failed_in_place_decryption_leaves_no_plaintext() {
    for suite in ALL_SUITES {
        for &backend in Backend::AVAILABLE {
            let mut tx = Sender::with_backend(suite, backend);
            tx.add_key(KeyId(4), KEY).expect("add");
            let mut rx = Receiver::with_backend(suite, backend);
            rx.add_key(KeyId(4), KEY).expect("add");
            let secret = b"attack at dawn, bring the whole sentence along";
            let mut frame = tx.encrypt(b"", secret).expect("enc");
            let last = frame.len() - 1;
            frame[last] ^= 0x80;
            assert!(rx.decrypt_in_place(b"", &mut frame).is_err());
            assert!(
                !frame.windows(6).any(|w| w == b"attack"),
                "{suite:?}/{backend:?} left plaintext behind"
            );
        }
    }
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let key = b"\x42\x42\x42\x42super-secret-key";
    let mut tx = Sender::new(SUITE);
    tx.add_key(KeyId(1), key).expect("add");
    let derived = DerivedKey::derive(SUITE, KeyId(1), key);
    let aead =
        FrameAead::new(SUITE, Backend::default(), derived.sframe_key().expose()).expect("aead");
    let key_hex: String = derived
        .sframe_key()
        .expose()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    for text in [
        format!("{tx:?}"),
        format!("{derived:?}"),
        format!("{aead:?}"),
        format!("{:?}", Secret::new(key)),
    ] {
        assert!(!text.contains("super-secret"), "{text}");
        assert!(!text.contains(&key_hex), "{text}");
        assert!(!text.contains("66, 66"), "{text}");
    }
}

#[test]
fn secrets_compare_by_value() {
    assert_eq!(Secret::new(b"abc"), Secret::new(b"abc"));
    assert_ne!(Secret::new(b"abc"), Secret::new(b"abd"));
    assert_ne!(Secret::new(b"abc"), Secret::new(b"abcd"));
}

#[test]
fn suite_ids_round_trip_and_unknown_ids_are_errors() {
    for suite in ALL_SUITES {
        assert_eq!(CipherSuite::from_id(suite.id()), Ok(suite));
    }
    assert_eq!(CipherSuite::from_id(0), Err(Error::UnknownCipherSuite(0)));
    assert_eq!(CipherSuite::from_id(6), Err(Error::UnknownCipherSuite(6)));
}

#[test]
fn raw_aead_rejects_wrong_key_lengths() {
    for suite in ALL_SUITES {
        for &backend in Backend::AVAILABLE {
            let err = FrameAead::new(suite, backend, &[0u8; 15]).expect_err("short key");
            assert_eq!(
                err,
                Error::InvalidKeyLength {
                    expected: suite.key_len(),
                    got: 15
                }
            );
        }
    }
}
