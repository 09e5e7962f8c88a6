//! Generates the protocol test vectors of `docs/vectors/` from fixed
//! inputs and checks that the committed files still match. Run with
//! `HUSH_WRITE_VECTORS=1 cargo test -p hush-e2ee vectors` to rewrite them.

use hush_sframe::{CipherSuite, KeyId, Sender};
use serde_json::{Value, json};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::channel::{Channel, Message, PAIRWISE_LABEL, derive_keys};
use crate::ids::{Generation, Millis, ParticipantId, RoomId, kid};
use crate::keypackage::LocalMember;
use crate::{Identity, SafetyNumber, ratchet};

fn h(b: &[u8]) -> String {
    hex::encode(b)
}

fn member(seed: u8, eph: u8, pid: u8, room: &RoomId) -> LocalMember {
    LocalMember::with_ephemeral(
        Identity::from_seed(&[seed; 32]),
        room.clone(),
        Millis(1_800_000_000_000),
        ParticipantId([pid; 16]),
        [eph; 32],
    )
    .expect("fixed member")
}

fn e2ee_vectors() -> Value {
    let room = RoomId("vector-room".into());
    let a = member(0x11, 0x21, 0xa1, &room);
    let b = member(0x12, 0x22, 0xb2, &room);
    let kp = a.key_package();

    let keys_ab = derive_keys(&a, b.key_package(), &room).expect("keys");
    let shared =
        StaticSecret::from([0x21; 32]).diffie_hellman(&PublicKey::from(b.key_package().ephemeral));
    let a_is_lo = a.key_package().ephemeral < b.key_package().ephemeral;
    let (lo, hi) = if a_is_lo { (&a, &b) } else { (&b, &a) };
    let mut info = PAIRWISE_LABEL.to_vec();
    info.extend_from_slice(&lo.key_package().identity.to_bytes());
    info.extend_from_slice(&hi.key_package().identity.to_bytes());
    info.extend_from_slice(&lo.key_package().ephemeral);
    info.extend_from_slice(&hi.key_package().ephemeral);

    // Envelopes a -> b with counters 0 (an ack) and 1 (a sender key).
    let mut channel = Channel::new(&a, b.key_package(), &room).expect("channel");
    // a acknowledges b's key (0, 1): the KID carries b's slot.
    let ack_kid = kid(
        ParticipantId([0xb2; 16]).slot(),
        Generation {
            rekey: 0,
            ratchet: 1,
        },
    );
    let ack = Message::KeyAck { kid: ack_kid.0 }.encode();
    let env0 = channel.seal(&ack).expect("seal");
    let base_key = [0x5a_u8; 32];
    let sender_kid = kid(
        ParticipantId([0xa1; 16]).slot(),
        Generation {
            rekey: 0,
            ratchet: 1,
        },
    );
    let sk = Message::SenderKey {
        kid: sender_kid.0,
        base_key: zeroize::Zeroizing::new(base_key.to_vec()),
    }
    .encode();
    let env1 = channel.seal(&sk).expect("seal");
    let hello = Message::Hello.encode();
    let env2 = channel.seal(&hello).expect("seal");

    let mut ratchet_steps = vec![json!({"rekey": 0, "ratchet": 0, "base_key": h(&[0x5a; 32])})];
    let mut key = hush_sframe::Secret::new(&[0x5a; 32]);
    for step in 1..=3u16 {
        let g = Generation {
            rekey: 0,
            ratchet: step,
        };
        key = ratchet(&key, g);
        ratchet_steps.push(json!({"rekey": 0, "ratchet": step, "base_key": h(key.expose())}));
    }
    let kids: Vec<Value> = [(0u16, 0u16, 0u16), (0xa1a1, 0, 1), (0xb2b2, 3, 0), (0xffff, 0xffff, 0xffff)]
        .into_iter()
        .map(|(slot, rekey, r)| json!({"slot": slot, "rekey": rekey, "ratchet": r, "kid": kid(slot, Generation { rekey, ratchet: r }).0}))
        .collect();
    let ia = Identity::from_seed(&[0x11; 32]).public();
    let ib = Identity::from_seed(&[0x12; 32]).public();
    let safety = SafetyNumber::new(&ia, &ib);

    json!({
        "description": "hush e2ee protocol v1 test vectors; byte strings are lowercase hex, see docs/PROTOCOL.md",
        "key_package": {
            "identity_seed": h(&[0x11; 32]),
            "identity_public": h(&kp.identity.to_bytes()),
            "room": room.0,
            "participant_id": h(&kp.participant.0),
            "ephemeral_secret": h(&[0x21; 32]),
            "ephemeral_public": h(&kp.ephemeral),
            "created_ms": kp.created.0,
            "signing_input": h(&kp.signing_input()),
            "encoded": h(&kp.to_bytes()),
        },
        "pairwise": {
            "room": room.0,
            "a": {"identity_public": h(&a.key_package().identity.to_bytes()), "ephemeral_secret": h(&[0x21; 32]), "ephemeral_public": h(&a.key_package().ephemeral), "participant_id": h(&a.participant().0)},
            "b": {"identity_public": h(&b.key_package().identity.to_bytes()), "ephemeral_secret": h(&[0x22; 32]), "ephemeral_public": h(&b.key_package().ephemeral), "participant_id": h(&b.participant().0)},
            "shared_secret": h(shared.as_bytes()),
            "lo": if a_is_lo { "a" } else { "b" },
            "info": h(&info),
            "key_a_to_b": h(keys_ab.send.as_slice()),
            "key_b_to_a": h(keys_ab.recv.as_slice()),
        },
        "envelopes": [
            {"from": "a", "to": "b", "counter": 0, "plaintext": h(&ack), "message": "key_ack", "kid": ack_kid.0, "envelope": h(&env0)},
            {"from": "a", "to": "b", "counter": 1, "plaintext": h(&sk), "message": "sender_key", "kid": sender_kid.0, "base_key": h(&base_key), "envelope": h(&env1)},
            {"from": "a", "to": "b", "counter": 2, "plaintext": h(&hello), "message": "hello", "envelope": h(&env2)},
        ],
        "ratchet": ratchet_steps,
        "kid_layout": kids,
        "safety_number": {
            "identity_a": h(&ia.to_bytes()),
            "identity_b": h(&ib.to_bytes()),
            "digits": safety.digits(),
            "display": safety.to_string(),
        },
    })
}

fn media_vectors() -> Value {
    let base_key = [0x5a_u8; 32];
    let sender_kid: KeyId = kid(
        0xa1a1,
        Generation {
            rekey: 0,
            ratchet: 1,
        },
    );
    let frames: [(&str, Vec<u8>, usize); 3] = [
        ("opus", b"\xfc\xff\xfe opus frame bytes".to_vec(), 0),
        (
            "vp8_key",
            [
                b"\x50\x2c\x00\x9d\x01\x2a\x40\x01\xf0\x00".as_slice(),
                b"vp8 key frame data",
            ]
            .concat(),
            10,
        ),
        ("vp8_delta", b"\x31\x05\x00vp8 delta frame data".to_vec(), 3),
    ];
    let mut tx = Sender::new(CipherSuite::AesGcm128Sha256);
    tx.add_key_at(sender_kid, &base_key, hush_sframe::Counter(7))
        .expect("key");
    let entries: Vec<Value> = frames
        .iter()
        .map(|(codec, frame, clear)| {
            let (prefix, payload) = frame.split_at(*clear);
            let ctr = tx.next_counter(sender_kid).expect("ctr").0;
            let sealed = tx.encrypt(prefix, payload).expect("seal");
            json!({
                "codec": codec,
                "cipher_suite": 4,
                "kid": sender_kid.0,
                "ctr": ctr,
                "base_key": h(&base_key),
                "frame": h(frame),
                "clear_prefix_len": clear,
                "encrypted_frame": h(&[prefix, &sealed].concat()),
            })
        })
        .collect();
    json!({
        "description": "hush media frames v1: encrypted_frame = clear prefix || SFrame(header || ciphertext || tag), metadata = clear prefix",
        "frames": entries,
    })
}

fn check_or_write(name: &str, value: &Value) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/vectors")
        .join(name);
    let text = serde_json::to_string_pretty(value).expect("json") + "\n";
    if std::env::var_os("HUSH_WRITE_VECTORS").is_some() {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        std::fs::write(&path, &text).expect("write vectors");
    }
    let committed = std::fs::read_to_string(&path).expect("committed vectors exist");
    assert_eq!(
        committed, text,
        "{name} is out of date: rerun with HUSH_WRITE_VECTORS=1"
    );
}

#[test]
fn e2ee_vectors_match_docs() {
    check_or_write("e2ee.json", &e2ee_vectors());
}

#[test]
fn media_vectors_match_docs() {
    check_or_write("media.json", &media_vectors());
}
