//! Key packages past their signature: the input chooses the fields (room,
//! participant id, identity, ephemeral key, creation time relative to a
//! fixed `NOW`), the harness signs them with a real identity (feature
//! `fuzzing`), so every package passes the signature check and meets the
//! admission logic behind it: room, future skew, freshness, ourselves,
//! duplicates, departed members, weak key agreement.
//!
//! Input: `[choices][room length][join order]`, then an `i64` creation
//! offset in ms, 16 bytes of participant id, 32 of ephemeral key, 32 of
//! identity seed, then the room bytes (missing bytes read as zero).
//! `choices`: bit 0 joins a room with the package (`Group::join`, beside a
//! genuine member's package) instead of `Group::admit_newcomer` on a group
//! whose member B is present, D1 left long ago and D2 just left; bits 1-2
//! pick the identity (a newcomer's, B's, ours, or one from the seed); bits
//! 3-5 the participant id (from the input, ours, B's, D1's, D2's); bits 6-7
//! the ephemeral key (from the input, a valid one, B's, ours). A room
//! length of 0 means the group's room.
//!
//! Nothing may panic, and:
//!
//! - `KeyPackage::verify` accepts the bytes exactly when the room is ours,
//!   the time is not beyond the skew and the age within 24 h, and then
//!   gives back the fields signed, which encode to the same bytes;
//! - a package is admitted exactly when, in addition, it is fresh for its
//!   path (10 min for a newcomer, 24 h at a join), names neither us (id or
//!   ephemeral key) nor a present, departing or departed member, and its
//!   key agreement is contributory (only a key from the input may fail
//!   that); every refusal names one of the conditions that failed, and
//!   changes no member, no key and no deadline;
//! - an admitted newcomer is a member with exactly the signed fields; we
//!   switch to a new send key, and send it our key at once exactly when its
//!   package is not older than ours (beyond the skew);
//! - at a join, every package is accepted or refused once, and the genuine
//!   member's is refused only if the fuzzed one came first with its id.
//!
//! Every input starts from the same group (it is forked).
#![no_main]

use std::sync::{Mutex, OnceLock};

use hush_e2ee::{
    Config, Error, Group, Identity, KeyEvent, KeyPackage, LocalMember, Millis, Output,
    ParticipantId, RoomId,
};
use libfuzzer_sys::fuzz_target;

const NOW: Millis = Millis(1_800_000_000_000);
/// When our own package was made (one minute before `NOW`).
const ME_CREATED: Millis = Millis(NOW.0 - 60_000);
const ME_SEED: [u8; 32] = [1; 32];
const ME_EPHEMERAL_SECRET: [u8; 32] = [0x41; 32];

/// The state every input starts from.
struct Base {
    group: Group,
    room: RoomId,
    me: ParticipantId,
    me_ephemeral: [u8; 32],
    b: KeyPackage,
    b_bytes: Vec<u8>,
    d1: ParticipantId,
    d2: ParticipantId,
    newcomer: Identity,
    newcomer_ephemeral: [u8; 32],
    b_identity: Identity,
    me_identity: Identity,
}

fn participant(i: u8) -> ParticipantId {
    let mut id = [i; 16];
    id[0] = 0xa0 + i;
    ParticipantId(id)
}

fn local(i: u8, room: &RoomId, created: Millis) -> LocalMember {
    LocalMember::with_ephemeral(
        Identity::from_seed(&[i; 32]),
        room.clone(),
        created,
        participant(i),
        [0x40 + i; 32],
    )
    .expect("a member")
}

/// Us, as the base group was made (for the join path).
fn me_local(room: &RoomId) -> LocalMember {
    LocalMember::with_ephemeral(
        Identity::from_seed(&ME_SEED),
        room.clone(),
        ME_CREATED,
        participant(1),
        ME_EPHEMERAL_SECRET,
    )
    .expect("us")
}

fn build() -> Base {
    let room = RoomId("room".into());
    let config = Config::default();
    let me = me_local(&room);
    let me_ephemeral = me.key_package().ephemeral;
    let mut group = Group::join(me, &[], ME_CREATED, config).group;
    let b = local(
        2,
        &room,
        NOW.0.checked_sub(50_000).map(Millis).expect("time"),
    );
    group
        .member_joined(&b.key_package().to_bytes(), b.key_package().created)
        .expect("B joins");
    // D1 joins and leaves long ago (its keys are gone, its departure is
    // remembered); D2 leaves just now (its keys are in their grace period).
    let d1 = local(3, &room, Millis(NOW.0 - 45_000));
    let d2 = local(4, &room, Millis(NOW.0 - 30_000));
    for d in [&d1, &d2] {
        let kp = d.key_package();
        group
            .member_joined(&kp.to_bytes(), kp.created)
            .expect("joins");
    }
    group
        .member_left(d1.participant(), Millis(NOW.0 - 40_000))
        .expect("D1 leaves");
    drop(group.handle_timeout(Millis(NOW.0 - 40_000 + config.grace_ms + 1)));
    group
        .member_left(d2.participant(), Millis(NOW.0 - 1_000))
        .expect("D2 leaves");
    let newcomer = local(5, &room, NOW);
    Base {
        me: group.me(),
        room: room.clone(),
        me_ephemeral,
        b: b.key_package().clone(),
        b_bytes: b.key_package().to_bytes(),
        d1: d1.participant(),
        d2: d2.participant(),
        newcomer: Identity::from_seed(&[5; 32]),
        newcomer_ephemeral: newcomer.key_package().ephemeral,
        b_identity: Identity::from_seed(&[2; 32]),
        me_identity: Identity::from_seed(&ME_SEED),
        group,
    }
}

fn base() -> &'static Mutex<Base> {
    static BASE: OnceLock<Mutex<Base>> = OnceLock::new();
    BASE.get_or_init(|| Mutex::new(build()))
}

/// Reads the input front to back; past its end, zeros.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }

    fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }
}

/// Which admission checks a package fails, as the harness sees them.
#[derive(Debug, Default)]
struct Verdict {
    wrong_room: bool,
    future: bool,
    stale_for_verify: bool,
    stale: bool,
    ourselves: bool,
    present: bool,
    departed: bool,
    /// Its ephemeral key came from the input (so it may be a low-order point).
    raw_ephemeral: bool,
}

impl Verdict {
    fn verifies(&self) -> bool {
        !(self.wrong_room || self.future || self.stale_for_verify)
    }

    fn admissible(&self) -> bool {
        self.verifies() && !(self.stale || self.ourselves || self.present || self.departed)
    }

    /// Whether refusing the package with `e` names a check it fails.
    fn explains(&self, e: &Error) -> bool {
        match e {
            Error::WrongRoom => self.wrong_room,
            Error::KeyPackageFromTheFuture { .. } => self.future,
            Error::StaleKeyPackage { .. } => self.stale || self.stale_for_verify,
            Error::FromSelf => self.ourselves,
            Error::DuplicateMember(_) => self.present,
            Error::Departed(_) => self.departed,
            Error::WeakKeyAgreement(_) => self.raw_ephemeral,
            _ => false,
        }
    }
}

/// What must not change when a package is refused.
fn snapshot(g: &Group) -> (Vec<ParticipantId>, hush_sframe::KeyId, Option<Millis>) {
    (
        g.members().map(|(id, _)| id).collect(),
        g.active_kid(),
        g.next_timeout(),
    )
}

fuzz_target!(|data: &[u8]| {
    let base = base().lock().unwrap_or_else(|p| p.into_inner());
    let config = Config::default();
    let mut input = Input(data);
    let choices = input.u8();
    let room_len = usize::from(input.u8());
    let b_first = input.u8() & 1 == 1;
    let offset = i64::from_be_bytes(input.array());
    let raw_participant = ParticipantId(input.array());
    let raw_ephemeral: [u8; 32] = input.array();
    let seed: [u8; 32] = input.array();
    let room = if room_len == 0 {
        base.room.clone()
    } else {
        let bytes = input.0.get(..room_len).unwrap_or(input.0);
        RoomId(String::from_utf8_lossy(bytes).into_owned())
    };
    let join = choices & 1 == 1;
    let seeded;
    let identity = match (choices >> 1) & 3 {
        0 => &base.newcomer,
        1 => &base.b_identity,
        2 => &base.me_identity,
        _ => {
            seeded = Identity::from_seed(&seed);
            &seeded
        }
    };
    let participant = match (choices >> 3) & 7 {
        3 => base.me,
        4 => base.b.participant,
        5 => base.d1,
        6 => base.d2,
        _ => raw_participant,
    };
    let ephemeral = match choices >> 6 {
        0 => raw_ephemeral,
        1 => base.newcomer_ephemeral,
        2 => base.b.ephemeral,
        _ => base.me_ephemeral,
    };
    let created = Millis(NOW.0.saturating_add_signed(offset));
    let package = KeyPackage::sign_fields_for_fuzzing(
        identity,
        room.clone(),
        participant,
        ephemeral,
        created,
    )
    .expect("rooms here are short");
    let bytes = package.to_bytes();

    let freshness = config.freshness;
    let age = NOW.0.saturating_sub(created.0);
    let mut verdict = Verdict {
        wrong_room: room != base.room,
        future: created.0 > NOW.0.saturating_add(freshness.max_skew_ms),
        stale_for_verify: age > freshness.max_age_ms,
        stale: age
            > if join {
                freshness.max_age_ms
            } else {
                freshness.newcomer_max_age_ms
            },
        ourselves: participant == base.me || ephemeral == base.me_ephemeral,
        present: false,
        departed: false,
        raw_ephemeral: choices >> 6 == 0,
    };

    // The signature holds; the rest decides.
    match KeyPackage::verify(&bytes, &base.room, NOW, freshness) {
        Ok(kp) => {
            assert!(verdict.verifies(), "verified: {verdict:?}");
            assert!(kp == package, "verify changed the fields");
            assert_eq!(kp.to_bytes(), bytes);
        }
        Err(e) => assert!(
            !verdict.verifies() && verdict.explains(&e),
            "refused with {e:?}: {verdict:?}"
        ),
    }

    if join {
        // Join a room with B's package and the fuzzed one, in either order.
        let packages = if b_first {
            vec![base.b_bytes.clone(), bytes]
        } else {
            vec![bytes, base.b_bytes.clone()]
        };
        let (b_at, fuzzed_at) = if b_first { (0, 1) } else { (1, 0) };
        verdict.present = b_first && participant == base.b.participant;
        let joined = Group::join(me_local(&base.room), &packages, NOW, config);
        let mut seen: Vec<usize> = joined.accepted.iter().map(|&(i, _)| i).collect();
        seen.extend(joined.rejected.iter().map(|(i, _)| *i));
        seen.sort_unstable();
        assert_eq!(seen, [0, 1], "each package accepted or refused once");
        let accepted = joined.accepted.iter().any(|&(i, _)| i == fuzzed_at);
        match joined.rejected.iter().find(|(i, _)| *i == fuzzed_at) {
            None => {
                assert!(verdict.admissible(), "joined with it: {verdict:?}");
                assert!(joined.group.member(participant) == Some(&package));
                assert!(
                    joined
                        .outputs
                        .iter()
                        .any(|o| matches!(o, Output::Send { to, .. } if *to == participant))
                );
            }
            Some((_, e)) => assert!(
                verdict.explains(e) && (!verdict.admissible() || verdict.raw_ephemeral),
                "refused at the join with {e:?}: {verdict:?}"
            ),
        }
        let b_refused = joined.rejected.iter().any(|(i, _)| *i == b_at);
        assert_eq!(
            b_refused,
            !b_first && accepted && participant == base.b.participant,
            "B's genuine package at the join"
        );
        return;
    }

    // A newcomer, on the group with B present and D1, D2 gone.
    verdict.present = participant == base.b.participant || participant == base.d2;
    verdict.departed = participant == base.d1;
    let mut group = base.group.fork_for_fuzzing();
    let before = snapshot(&group);
    match group.admit_newcomer(&bytes, NOW) {
        Ok((kp, outputs)) => {
            assert!(verdict.admissible(), "admitted: {verdict:?}");
            assert!(kp == package && group.member(participant) == Some(&package));
            let mut members = before.0.clone();
            members.push(participant);
            members.sort_unstable();
            assert_eq!(snapshot(&group).0, members);
            let new_key = outputs.iter().filter(|o| {
                matches!(o, Output::Key(KeyEvent::UseSendKey { kid, .. }) if *kid == group.active_kid())
            });
            assert_eq!(new_key.count(), 1, "one new send key");
            assert_ne!(group.active_kid(), before.1);
            let sent: Vec<ParticipantId> = outputs
                .iter()
                .filter_map(|o| match o {
                    Output::Send { to, .. } => Some(*to),
                    _ => None,
                })
                .collect();
            let after_us = created.0.saturating_add(freshness.max_skew_ms) >= ME_CREATED.0;
            let expected: &[ParticipantId] = if after_us { &[participant] } else { &[] };
            assert_eq!(
                sent, expected,
                "our key goes at once only to a later newcomer"
            );
        }
        Err(e) => {
            assert!(
                verdict.explains(&e) && (!verdict.admissible() || verdict.raw_ephemeral),
                "refused with {e:?}: {verdict:?}"
            );
            assert_eq!(snapshot(&group), before, "a refusal changed the group");
        }
    }
});
