//! Tests that play the attacker: a forging or replaying relay, a newcomer
//! reading back, a removed member reading on.

mod common;

use common::{Room, T0, any_held_key_opens};
use hush_e2ee::{
    Config, Error, Group, Identity, KeyPackage, LocalMember, Millis, ParticipantId, RoomId,
    SafetyNumber,
};

fn package(room: &str, now: Millis) -> (LocalMember, Vec<u8>) {
    let local = LocalMember::new(Identity::generate(), RoomId(room.into()), now).expect("local");
    let bytes = local.key_package().to_bytes();
    (local, bytes)
}

fn lone_member(room: &str) -> Group {
    let (local, _) = package(room, T0);
    Group::join(local, &[], T0, Config::default()).group
}

#[test]
fn forged_key_package_is_rejected() {
    let mut group = lone_member("r");
    let (_, good) = package("r", T0);
    // Flip each byte of the signed part and of the signature: all refused.
    for i in 0..good.len() {
        let mut forged = good.clone();
        forged[i] ^= 0x01;
        let err = group
            .member_joined(&forged, T0)
            .expect_err("forged package accepted");
        assert!(
            matches!(
                err,
                Error::BadSignature | Error::Malformed { .. } | Error::UnsupportedVersion { .. }
            ),
            "byte {i}: {err:?}"
        );
    }
    // A package re-signed by another identity but claiming the first's key.
    let other = Identity::generate();
    let mut swapped = good.clone();
    let id_at = 1 + 2 + 1 + 16;
    swapped[id_at..id_at + 32].copy_from_slice(&other.public().to_bytes());
    assert!(matches!(
        group.member_joined(&swapped, T0),
        Err(Error::BadSignature)
    ));
    assert_eq!(group.members().count(), 0, "nothing changed");
    // The genuine one is still accepted afterwards.
    group.member_joined(&good, T0).expect("genuine package");
}

#[test]
fn key_package_for_other_room_is_rejected() {
    let mut group = lone_member("room-a");
    let (_, other_room) = package("room-b", T0);
    assert!(matches!(
        group.member_joined(&other_room, T0),
        Err(Error::WrongRoom)
    ));
    assert_eq!(group.members().count(), 0);
}

#[test]
fn stale_future_and_unknown_version_packages_are_rejected() {
    let mut group = lone_member("r");
    let day = 24 * 3600 * 1000;
    let (_, old) = package("r", Millis(T0.0 - day - 1));
    assert!(matches!(
        group.member_joined(&old, T0),
        Err(Error::StaleKeyPackage { .. })
    ));
    let (_, future) = package("r", Millis(T0.0 + 10 * 60 * 1000));
    assert!(matches!(
        group.member_joined(&future, T0),
        Err(Error::KeyPackageFromTheFuture { .. })
    ));
    let (_, mut v2) = package("r", T0);
    v2[0] = 2;
    assert!(matches!(
        group.member_joined(&v2, T0),
        Err(Error::UnsupportedVersion { version: 2, .. })
    ));
    for len in 0..v2.len() {
        assert!(
            group.member_joined(&v2[..len], T0).is_err(),
            "truncated to {len}"
        );
    }
    assert_eq!(group.members().count(), 0);
}

#[test]
fn a_member_cannot_be_added_twice_or_as_ourselves() {
    let (local, own) = package("r", T0);
    let mut group = Group::join(local, &[], T0, Config::default()).group;
    assert!(matches!(
        group.member_joined(&own, T0),
        Err(Error::FromSelf)
    ));
    let (_, other) = package("r", T0);
    group.member_joined(&other, T0).expect("first time");
    assert!(matches!(
        group.member_joined(&other, T0),
        Err(Error::DuplicateMember(_))
    ));
}

#[test]
fn verified_packages_round_trip() {
    let (local, bytes) = package("r", T0);
    let kp =
        KeyPackage::verify(&bytes, &RoomId("r".into()), T0, Default::default()).expect("valid");
    assert_eq!(&kp, local.key_package());
    assert_eq!(kp.to_bytes(), bytes);
}

#[test]
fn tampered_envelope_is_rejected() {
    let mut room = Room::new("r");
    let a = room.join();
    let b = room.join();
    let q = room
        .queue
        .iter()
        .position(|q| q.to == b)
        .expect("a key for b");
    let genuine = room.queue[q].envelope.clone();
    for i in 0..genuine.len() {
        let mut t = genuine.clone();
        t[i] ^= 0x20;
        let err = room
            .clients
            .get_mut(&b)
            .expect("b")
            .group
            .receive_envelope(&t, room.now)
            .expect_err("tampered accepted");
        assert!(
            matches!(
                err,
                Error::EnvelopeAuthentication(_)
                    | Error::UnsupportedVersion { .. }
                    | Error::NotForMe(_)
                    | Error::UnknownMember(_)
                    | Error::FromSelf
            ),
            "byte {i}: {err:?}"
        );
    }
    // Truncations too.
    for len in 0..genuine.len() {
        assert!(
            room.clients
                .get_mut(&b)
                .expect("b")
                .group
                .receive_envelope(&genuine[..len], room.now)
                .is_err()
        );
    }
    // The genuine envelope still works after all that: nothing was burned.
    room.deliver_all();
    let frame = room.seal(a, b"hello");
    assert_eq!(room.open(b, a, &frame).expect("b reads a"), b"hello");
}

#[test]
fn replayed_envelope_is_rejected() {
    let mut room = Room::new("r");
    let _a = room.join();
    let b = room.join();
    let q = room
        .queue
        .iter()
        .position(|q| q.to == b)
        .expect("a key for b");
    let envelope = room.queue[q].envelope.clone();
    let now = room.now;
    let g = &mut room.clients.get_mut(&b).expect("b").group;
    g.receive_envelope(&envelope, now).expect("first delivery");
    assert!(matches!(
        g.receive_envelope(&envelope, now),
        Err(Error::ReplayedEnvelope { counter: 0, .. })
    ));
}

#[test]
fn envelopes_for_someone_else_are_refused() {
    let mut room = Room::new("r");
    let _a = room.join();
    let b = room.join();
    let c = room.join();
    room.deliver_all();
    let a_to_b = room.queue.len();
    assert_eq!(a_to_b, 0);
    // Trigger a fresh key: a leaves, b and c exchange keys.
    let a = room
        .ids()
        .into_iter()
        .find(|&x| x != b && x != c)
        .expect("a");
    room.leave(a);
    let q = room
        .queue
        .iter()
        .find(|q| q.to == b)
        .expect("c -> b")
        .envelope
        .clone();
    let now = room.now;
    let cg = &mut room.clients.get_mut(&c).expect("c").group;
    assert!(matches!(cg.receive_envelope(&q, now), Err(Error::NotForMe(x)) if x == b));
}

#[test]
fn newcomer_cannot_decrypt_earlier_frames() {
    let mut room = Room::new("r");
    let a = room.join();
    let b = room.join();
    room.deliver_all();
    let before_a = room.seal(a, b"said before c joined (a)");
    let before_b = room.seal(b, b"said before c joined (b)");
    // Both members can read each other.
    assert!(room.open(b, a, &before_a).is_ok());
    let c = room.join();
    room.deliver_all();
    let after = room.seal(a, b"said after c joined");
    assert_eq!(
        room.open(c, a, &after).expect("c reads new frames"),
        b"said after c joined"
    );
    assert_eq!(
        room.open(b, a, &after).expect("b ratcheted too"),
        b"said after c joined"
    );
    // c fails on the earlier frames, with its installed keys and with every
    // key it ever held ratcheted any number of steps.
    assert!(room.open(c, a, &before_a).is_err());
    assert!(room.open(c, b, &before_b).is_err());
    let cc = &room.clients[&c];
    assert!(!any_held_key_opens(cc, a, &before_a, 50));
    assert!(!any_held_key_opens(cc, b, &before_b, 50));
}

#[test]
fn removed_member_cannot_decrypt_later_frames() {
    let mut room = Room::new("r");
    let a = room.join();
    let b = room.join();
    let c = room.join();
    room.deliver_all();
    let before = room.seal(a, b"c may read this");
    assert!(room.open(c, a, &before).is_ok());
    room.leave(c);
    room.deliver_all(); // fresh keys and acknowledgements
    room.advance(room.config.grace_ms + 1);
    let after_a = room.seal(a, b"c must not read this");
    let after_b = room.seal(b, b"nor this");
    assert_eq!(
        room.open(b, a, &after_a).expect("b reads a"),
        b"c must not read this"
    );
    assert_eq!(room.open(a, b, &after_b).expect("a reads b"), b"nor this");
    let former = &room.former[&c];
    assert!(!any_held_key_opens(former, a, &after_a, 50));
    assert!(!any_held_key_opens(former, b, &after_b, 50));
}

#[test]
fn senders_switch_after_the_wait_even_without_acknowledgements() {
    let mut room = Room::new("r");
    let a = room.join();
    let b = room.join();
    let c = room.join();
    room.deliver_all();
    room.leave(c);
    // Keys and acks stay in the relay; only time passes.
    room.advance(room.config.rekey_wait_ms);
    let frame = room.seal(a, b"after the wait");
    assert!(!any_held_key_opens(&room.former[&c], a, &frame, 50));
    room.deliver_all();
    assert_eq!(
        room.open(b, a, &frame).expect("b got the key later"),
        b"after the wait"
    );
}

#[test]
fn frames_in_flight_survive_a_key_change_within_the_grace_period() {
    let mut room = Room::new("r");
    let a = room.join();
    let b = room.join();
    let c = room.join();
    room.deliver_all();
    let in_flight = room.seal(a, b"sent just before c left");
    let in_flight_2 = room.seal(a, b"also in flight");
    room.leave(c);
    room.deliver_all();
    room.advance(room.config.grace_ms - 1);
    assert!(
        room.open(b, a, &in_flight_2).is_ok(),
        "old key kept for the grace period"
    );
    room.advance(2);
    assert!(
        room.open(b, a, &in_flight).is_err(),
        "old key erased after the grace period"
    );
}

#[test]
fn safety_numbers_match_and_detect_substitution() {
    let mut room = Room::new("r");
    let a = room.join();
    let b = room.join();
    let ab = room.clients[&a].group.safety_number(b).expect("member");
    let ba = room.clients[&b].group.safety_number(a).expect("member");
    assert_eq!(ab, ba);
    let shown = ab.to_string();
    assert_eq!(shown.len(), 60 + 11);
    assert_eq!(shown.split(' ').count(), 12);
    assert!(
        shown
            .split(' ')
            .all(|g| g.len() == 5 && g.bytes().all(|d| d.is_ascii_digit()))
    );
    // A relay that substitutes either identity changes the number.
    let ia = room.clients[&a]
        .group
        .members()
        .find(|(id, _)| *id == b)
        .expect("b")
        .1
        .identity;
    let ib = room.clients[&b]
        .group
        .members()
        .find(|(id, _)| *id == a)
        .expect("a")
        .1
        .identity;
    let mallory = Identity::generate().public();
    assert_ne!(SafetyNumber::new(&ia, &mallory), ab);
    assert_ne!(SafetyNumber::new(&mallory, &ib), ab);
    // The full attack: the relay gives b a package of mallory's posing as a.
    let (mallory_local, mallory_kp) = package("r", room.now);
    let mut b_view = lone_member("r");
    b_view
        .member_joined(&mallory_kp, room.now)
        .expect("mallory's package is validly signed");
    let mid: ParticipantId = mallory_local.participant();
    assert_ne!(b_view.safety_number(mid).expect("member"), ab);
}

#[test]
fn a_departed_members_key_package_cannot_be_replayed() {
    let mut group = lone_member("r");
    let (_, bob) = package("r", T0);
    group.member_joined(&bob, T0).expect("bob joins");
    let bob_id = group.members().map(|(id, _)| id).next().expect("bob");
    group.member_left(bob_id, T0).expect("bob leaves");
    // Long after bob's keys are gone, a malicious server shows him present
    // again with his real (still fresh) key package: refused.
    let later = T0.plus(60_000);
    group.handle_timeout(later);
    assert!(matches!(
        group.member_joined(&bob, later),
        Err(Error::Departed(id)) if id == bob_id
    ));
    assert_eq!(group.members().count(), 0);
    // Bob rejoining for real brings a new package, which is accepted.
    let (_, bob_again) = package("r", later);
    group.member_joined(&bob_again, later).expect("bob rejoins");
}
