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
    // b's hello reaches a, who answers with its key.
    room.deliver_to(a);
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
    let a = room.join();
    let b = room.join();
    room.deliver_to(a);
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

/// A malicious server lists a departed member in a newcomer's `joined`
/// (with its real, still fresh key package): the newcomer never sends it a
/// key, and it stays unconfirmed, while every member who is really there
/// is confirmed and gets the newcomer's key.
#[test]
fn a_departed_member_replayed_to_a_newcomer_gets_no_key_and_stays_unconfirmed() {
    let mut room = Room::new("r");
    let ann = room.join();
    let bob = room.join();
    room.deliver_all();
    let bob_package = room.clients[&bob].package.clone();
    room.leave(bob);
    room.deliver_all();
    room.advance(60_000);
    // Carol joins; the server adds bob's package to what it tells her.
    let local = LocalMember::new(Identity::generate(), room.room.clone(), room.now).expect("local");
    let carol_package = local.key_package().to_bytes();
    let packages = vec![room.clients[&ann].package.clone(), bob_package];
    let joined = Group::join(local, &packages, room.now, room.config);
    assert_eq!(joined.accepted.len(), 2, "bob's package itself verifies");
    let carol_id = joined.group.me();
    // Only hellos go out at the join: keys wait for each member's
    // envelope. A hello envelope is the 41-byte header, the 1-byte message
    // and the tag; a sender key could not fit in it.
    const HELLO_LEN: usize = 41 + 1 + 16;
    let (mut to_bob, mut to_ann) = (Vec::new(), Vec::new());
    for o in &joined.outputs {
        if let hush_e2ee::Output::Send { to, envelope } = o {
            assert_eq!(envelope.len(), HELLO_LEN, "only a hello to {to}");
            if *to == bob {
                to_bob.push(envelope.clone());
            } else if *to == ann {
                to_ann.push(envelope.clone());
            }
        }
    }
    assert_eq!(to_bob.len(), 1, "bob is greeted, no more");
    assert_eq!(to_ann.len(), 1, "ann is greeted");
    let mut carol = joined.group;
    let ann_group = &mut room.clients.get_mut(&ann).expect("ann").group;
    // Carol's package is newer than ann's: ann sends her key at once.
    let mut ann_out = ann_group
        .member_joined(&carol_package, room.now)
        .expect("ann admits carol");
    let hello_out = ann_group
        .receive_envelope(&to_ann[0], room.now)
        .expect("carol's hello");
    assert!(ann_group.is_confirmed(carol_id));
    assert!(
        !hello_out
            .iter()
            .any(|o| matches!(o, hush_e2ee::Output::Send { .. })),
        "the hello asks for nothing ann has not sent"
    );
    ann_out.extend(hello_out);
    let mut to_carol: Vec<Vec<u8>> = ann_out
        .into_iter()
        .filter_map(|o| match o {
            hush_e2ee::Output::Send { to, envelope } if to == carol_id => Some(envelope),
            _ => None,
        })
        .collect();
    assert_eq!(to_carol.len(), 1, "ann's key for carol");
    let out = carol
        .receive_envelope(&to_carol.remove(0), room.now)
        .expect("ann's key");
    let mut sent_to = Vec::new();
    let mut confirmed = Vec::new();
    for o in out {
        match o {
            hush_e2ee::Output::Send { to, .. } => sent_to.push(to),
            hush_e2ee::Output::Confirmed(who) => confirmed.push(who),
            _ => {}
        }
    }
    // Carol's key (and the ack) go to ann; nothing ever goes to bob.
    assert!(sent_to.iter().all(|&to| to == ann), "{sent_to:?}");
    assert_eq!(sent_to.len(), 2, "carol's key and her ack");
    assert_eq!(confirmed, vec![ann]);
    assert!(carol.is_confirmed(ann));
    assert!(
        !carol.is_confirmed(bob),
        "a replayed package proves nothing"
    );
    // Time passes, a departure rekeys: still nothing for bob.
    let out = carol.handle_timeout(room.now.plus(10_000));
    assert!(
        !out.iter()
            .any(|o| matches!(o, hush_e2ee::Output::Send { to, .. } if *to == bob))
    );
}

/// A newcomer's key package must be fresh by the shorter bound: one made
/// more than `newcomer_max_age_ms` ago is refused in `member_joined`,
/// while the same package in a `joined` list (a member present for a
/// while) is accepted but unconfirmed until its member speaks.
#[test]
fn a_newcomers_package_must_be_minutes_fresh() {
    let config = Config::default();
    let old = config.freshness.newcomer_max_age_ms;
    let (_, dave) = package("r", T0);
    let later = T0.plus(old + 1);
    let mut group = lone_member("r");
    assert!(matches!(
        group.member_joined(&dave, later),
        Err(Error::StaleKeyPackage { .. })
    ));
    assert_eq!(group.members().count(), 0, "nothing changed");
    let (me, _) = package("r", later);
    let joined = Group::join(me, &[dave], later, config);
    assert_eq!(joined.accepted.len(), 1);
    let (id, _) = joined.group.members().next().expect("dave");
    assert!(!joined.group.is_confirmed(id));
}

/// A newcomer the group refuses (forged, stale, replayed or duplicate
/// package) changes nothing for the member who refuses it: same keys,
/// same members, same deadlines, nothing sent.
#[test]
fn a_refused_newcomer_changes_nothing() {
    let mut room = Room::new("r");
    let ann = room.join();
    let bob = room.join();
    room.deliver_all();
    let bob_package = room.clients[&bob].package.clone();
    let (_, fresh) = package("r", room.now);
    let mut forged = fresh.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let (_, stale) = package("r", T0);
    room.advance(Config::default().freshness.newcomer_max_age_ms + 1);
    let ann_group = &mut room.clients.get_mut(&ann).expect("ann").group;
    let before = (
        ann_group.active_kid(),
        ann_group.members().map(|(id, _)| id).collect::<Vec<_>>(),
        ann_group.next_timeout(),
    );
    for bad in [&forged, &stale, &bob_package] {
        assert!(ann_group.member_joined(bad, room.now).is_err());
        let after = (
            ann_group.active_kid(),
            ann_group.members().map(|(id, _)| id).collect::<Vec<_>>(),
            ann_group.next_timeout(),
        );
        assert_eq!(after, before);
    }
    // Ann and bob still read each other under the same keys.
    let frame = room.seal(bob, b"still here");
    assert_eq!(
        room.open(ann, bob, &frame).as_deref(),
        Ok(&b"still here"[..])
    );
    let frame = room.seal(ann, b"me too");
    assert_eq!(room.open(bob, ann, &frame).as_deref(), Ok(&b"me too"[..]));
}

/// Members who are really there confirm each other as keys go round; a
/// member is confirmed once.
#[test]
fn members_confirm_each_other_once() {
    let mut room = Room::new("r");
    let ids: Vec<ParticipantId> = (0..4).map(|_| room.join()).collect();
    room.deliver_all();
    let leaver = ids[3];
    room.leave(leaver);
    room.deliver_all();
    for &a in &ids[..3] {
        for &b in &ids[..3] {
            if a != b {
                assert!(room.confirmed(a, b), "{a} has not confirmed {b}");
            }
        }
        let seen = &room.clients[&a].confirmed;
        assert!(seen.len() >= 2, "{seen:?}");
    }
}

/// A frame no key opens: a KID its sender could not have sent is never
/// worth holding; one below the keys we hold is lost; one ahead may open
/// once keys arrive, and `changed_since` later tells a key that came too
/// late (membership was changing) from one that was never coming.
#[test]
fn what_a_frame_no_key_opens_is() {
    use hush_e2ee::{Generation, KeyOutlook, kid, split_kid};
    let mut room = Room::new("r");
    let a = room.join();
    let b = room.join();
    room.deliver_all();
    let (slot, g) = split_kid(room.clients[&a].group.active_kid()).expect("a's KID");
    let at = |rekey: u16, ratchet: u16| kid(slot, Generation { rekey, ratchet });
    let outlook = |room: &Room, k| room.clients[&b].group.key_outlook(a, k);
    let max = room.config.max_ratchet_ahead;
    assert_eq!(
        outlook(&room, at(g.rekey, g.ratchet + max + 1)),
        KeyOutlook::MayCome
    );
    assert_eq!(outlook(&room, at(g.rekey + 1, 0)), KeyOutlook::MayCome);
    assert_eq!(outlook(&room, kid(slot ^ 1, g)), KeyOutlook::Never);
    assert_eq!(
        outlook(&room, hush_sframe::KeyId(u64::MAX)),
        KeyOutlook::Never
    );
    assert_eq!(
        room.clients[&b]
            .group
            .key_outlook(ParticipantId([7; 16]), at(0, 0)),
        KeyOutlook::Never,
        "not a member"
    );
    // Below the key b was given when it joined: sealed before a saw b's
    // join, never b's to read.
    assert!(
        g > Generation {
            rekey: 0,
            ratchet: 0
        },
        "{g:?}"
    );
    assert_eq!(outlook(&room, at(0, 0)), KeyOutlook::BeforeUs);

    // Changes: b's own join, then quiet, then a join and a departure.
    fn group(room: &Room, b: ParticipantId) -> &Group {
        &room.clients[&b].group
    }
    let joined_at = room.now;
    assert!(group(&room, b).changed_since(joined_at));
    room.advance(10_000);
    let quiet = room.now;
    assert!(!group(&room, b).changed_since(quiet));
    let c = room.join();
    assert!(group(&room, b).changed_since(quiet));
    room.deliver_all();
    room.advance(10_000);
    let quiet = room.now;
    room.leave(c);
    assert!(group(&room, b).changed_since(quiet));
    assert!(!group(&room, b).changed_since(quiet.plus(1)));
    // After that departure, a's first rekey is behind: a frame under it
    // (a's key before the departure) is gone, not pending.
    room.deliver_all();
    room.advance(10_000);
    let (_, now_g) = split_kid(room.clients[&a].group.active_kid()).expect("a's KID");
    assert!(now_g.rekey > g.rekey);
    assert_eq!(outlook(&room, at(g.rekey, g.ratchet)), KeyOutlook::Gone);
    // A newcomer whose key has not come yet: any KID of its slot may.
    let d = room.join();
    let d_slot = d.slot();
    let any = kid(
        d_slot,
        Generation {
            rekey: 3,
            ratchet: 7,
        },
    );
    let d_outlook = |k| room.clients[&b].group.key_outlook(d, k);
    assert_eq!(d_outlook(any), KeyOutlook::MayCome);
    assert_eq!(d_outlook(kid(d_slot ^ 1, g)), KeyOutlook::Never);
}
