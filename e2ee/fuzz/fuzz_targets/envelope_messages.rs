//! What a member may put *inside* a genuine envelope: any message body,
//! sealed by member A on its real pairwise channel to member B (feature
//! `fuzzing`), then `Group::receive_envelope` at B. A, B and C hold each
//! other's keys; D joined and left, so A has switched to a fresh key and B
//! still waits for A's and C's acknowledgements of its own.
//!
//! Each input is a sequence of up to 16 messages `[flags][len][len bytes]`:
//! flags bit 0 writes A's slot into a sender key's KID (so that the fuzzer
//! reaches the key logic at once), bits 1..7 advance the clock by that many
//! 32 ms steps before the message (B's timers run). A control copy of B
//! sees the same clock but no messages. Nothing may panic, and:
//!
//! - B accepts a message exactly when it is well formed (sender key:
//!   KID below 2^48 in A's slot, 16..=64 key bytes; ack: a KID; hello);
//! - B's key events that do not name A are exactly the control's: nothing
//!   A says installs, removes or changes a key of C, or B's own send key
//!   (its fresh key still waits for C's acknowledgement);
//! - every key B installs is in its sender's slot and not installed
//!   already; every key it removes was installed;
//! - B sends only to A, and A opens every envelope B sends; nobody is
//!   newly confirmed;
//! - afterwards B still opens a genuine envelope from A, judges C's KIDs
//!   as the control does, and, unless B installed a key of A, derives A's
//!   next key as the control does.
//!
//! Every input starts from the same state (the groups are forked).
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, OnceLock};

use hush_e2ee::{
    Config, Generation, Group, Identity, KeyEvent, LocalMember, Millis, Output, ParticipantId,
    RoomId, kid, split_kid,
};
use hush_sframe::KeyId;
use libfuzzer_sys::fuzz_target;

const NOW: Millis = Millis(1_800_000_000_000);
const MAX_MESSAGES: usize = 16;
const STEP_MS: u64 = 32;

/// The state every input starts from.
struct Base {
    a: Group,
    b: Group,
    c_id: ParticipantId,
    /// What B's SFrame layer holds: every (sender, KID) installed and not removed.
    b_installed: BTreeSet<(ParticipantId, KeyId)>,
    /// When D left.
    left_at: Millis,
}

/// A member with fixed ids and keys (so that inputs reproduce across runs).
fn member(i: u8, room: &RoomId) -> (LocalMember, Vec<u8>) {
    let mut id = [i; 16];
    id[0] = 0xa0 + i;
    let local = LocalMember::with_ephemeral(
        Identity::from_seed(&[i + 1; 32]),
        room.clone(),
        NOW,
        ParticipantId(id),
        [0x40 + i; 32],
    )
    .expect("a member");
    let package = local.key_package().to_bytes();
    (local, package)
}

/// Applies B's key events to what its SFrame layer holds.
fn track(installed: &mut BTreeSet<(ParticipantId, KeyId)>, outputs: &[Output]) {
    for o in outputs {
        match o {
            Output::Key(KeyEvent::InstallReceiveKey { sender, kid, .. }) => {
                assert!(installed.insert((*sender, *kid)), "installed twice");
            }
            Output::Key(KeyEvent::RemoveReceiveKey { sender, kid }) => {
                assert!(installed.remove(&(*sender, *kid)), "removed unheld key");
            }
            _ => {}
        }
    }
}

/// Delivers every queued envelope (and what it causes) at `now`.
fn settle(
    groups: &mut BTreeMap<ParticipantId, Group>,
    mut queue: Vec<(ParticipantId, Vec<u8>)>,
    b: ParticipantId,
    installed: &mut BTreeSet<(ParticipantId, KeyId)>,
    now: Millis,
) {
    while let Some((to, envelope)) = queue.pop() {
        let Some(g) = groups.get_mut(&to) else {
            continue;
        };
        let outputs = g
            .receive_envelope(&envelope, now)
            .expect("a genuine envelope");
        if to == b {
            track(installed, &outputs);
        }
        queue.extend(sends(outputs));
    }
}

fn sends(outputs: Vec<Output>) -> Vec<(ParticipantId, Vec<u8>)> {
    outputs
        .into_iter()
        .filter_map(|o| match o {
            Output::Send { to, envelope } => Some((to, envelope)),
            _ => None,
        })
        .collect()
}

fn build() -> Base {
    let room = RoomId("room".into());
    let mut groups = BTreeMap::new();
    let mut packages: Vec<Vec<u8>> = Vec::new();
    let mut ids = Vec::new();
    let mut installed = BTreeSet::new();
    let b_id = member(1, &room).0.participant();
    for i in 0..4 {
        let (local, package) = member(i, &room);
        let joined = Group::join(local, &packages, NOW, Config::default());
        assert_eq!(joined.accepted.len(), packages.len(), "all admitted");
        let me = joined.group.me();
        if me == b_id {
            track(&mut installed, &joined.outputs);
        }
        let mut queue = sends(joined.outputs);
        for (&id, g) in groups.iter_mut() {
            let g: &mut Group = g;
            let outputs = g.member_joined(&package, NOW).expect("joined");
            if id == b_id {
                track(&mut installed, &outputs);
            }
            queue.extend(sends(outputs));
        }
        groups.insert(me, joined.group);
        ids.push(me);
        packages.push(package);
        settle(&mut groups, queue, b_id, &mut installed, NOW);
    }
    // D leaves. A's and C's fresh keys go round; B's never leaves B, so B
    // keeps waiting for A's and C's acknowledgements.
    let left_at = NOW.plus(10);
    let d = ids[3];
    groups.remove(&d);
    let mut queue = Vec::new();
    for (&id, g) in groups.iter_mut() {
        let g: &mut Group = g;
        let outputs = g.member_left(d, left_at).expect("left");
        if id == b_id {
            track(&mut installed, &outputs);
        } else {
            queue.extend(sends(outputs));
        }
    }
    settle(&mut groups, queue, b_id, &mut installed, left_at);
    let mut take = |i: usize| groups.remove(&ids[i]).expect("a member");
    let (a, b) = (take(0), take(1));
    assert_eq!(split_kid(a.active_kid()).map(|(_, g)| g.rekey), Some(1));
    assert_eq!(split_kid(b.active_kid()).map(|(_, g)| g.rekey), Some(0));
    Base {
        a,
        b,
        c_id: ids[2],
        b_installed: installed,
        left_at,
    }
}

fn base() -> &'static Mutex<Base> {
    static BASE: OnceLock<Mutex<Base>> = OnceLock::new();
    BASE.get_or_init(|| Mutex::new(build()))
}

/// Whether B must accept `plaintext` from A (the message format of
/// `e2ee/src/channel.rs`, and a sender key only in A's slot).
fn well_formed(plaintext: &[u8], a: ParticipantId) -> bool {
    match plaintext {
        [1, rest @ ..] if rest.len() >= 9 => {
            let mut k = [0u8; 8];
            k.copy_from_slice(&rest[..8]);
            let kid = KeyId(u64::from_be_bytes(k));
            let len = usize::from(rest[8]);
            (16..=64).contains(&len)
                && rest.len() == 9 + len
                && split_kid(kid).is_some_and(|(slot, _)| slot == a.slot())
        }
        [2, rest @ ..] => rest.len() == 8,
        [3] => true,
        _ => false,
    }
}

/// The key events of `outputs` that do not concern `a`.
fn not_about(a: ParticipantId, outputs: &[Output]) -> Vec<KeyEvent> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Key(KeyEvent::InstallReceiveKey { sender, .. })
            | Output::Key(KeyEvent::RemoveReceiveKey { sender, .. })
                if *sender == a =>
            {
                None
            }
            Output::Key(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// A candidate key, comparable (its bytes, or the error).
fn candidate(g: &mut Group, sender: ParticipantId, k: KeyId) -> Result<Vec<u8>, String> {
    g.candidate_receive_key(sender, k)
        .map(|c| c.base.expose().to_vec())
        .map_err(|e| format!("{e:?}"))
}

fuzz_target!(|data: &[u8]| {
    let base = base().lock().unwrap_or_else(|p| p.into_inner());
    let mut a = base.a.fork_for_fuzzing();
    let mut b = base.b.fork_for_fuzzing();
    let mut control = base.b.fork_for_fuzzing();
    let mut installed = base.b_installed.clone();
    let (a_id, b_id, c_id) = (a.me(), b.me(), base.c_id);
    let mut now = base.left_at;
    let mut installed_for_a = false;
    let mut rest = data;
    for _ in 0..MAX_MESSAGES {
        let [flags, len, tail @ ..] = rest else {
            break;
        };
        let len = usize::from(*len).min(tail.len());
        let mut plaintext = tail[..len].to_vec();
        rest = &tail[len..];
        if flags & 1 == 1 && plaintext.len() >= 9 && plaintext[0] == 1 {
            let slot = a_id.slot().to_be_bytes();
            plaintext[1..5].copy_from_slice(&[0, 0, slot[0], slot[1]]);
        }
        now = now.plus(u64::from(flags >> 1) * STEP_MS);

        let envelope = a
            .seal_raw_for_fuzzing(b_id, &plaintext)
            .expect("A seals to its member B");
        let result = b.receive_envelope(&envelope, now);
        assert_eq!(
            result.is_ok(),
            well_formed(&plaintext, a_id),
            "B's verdict on {plaintext:02x?}: {result:?}"
        );
        let mut outputs = result.unwrap_or_default();
        outputs.extend(b.handle_timeout(now));
        let expected = control.handle_timeout(now);

        track(&mut installed, &outputs);
        for o in &outputs {
            match o {
                Output::Key(KeyEvent::InstallReceiveKey { sender, kid, .. }) => {
                    assert!(
                        split_kid(*kid).is_some_and(|(slot, _)| slot == sender.slot()),
                        "a key outside its sender's slot"
                    );
                    installed_for_a |= *sender == a_id;
                }
                Output::Send { to, envelope } => {
                    assert_eq!(*to, a_id, "B answers only the sender");
                    a.receive_envelope(envelope, now)
                        .expect("A opens what B sends");
                }
                Output::Confirmed(who) => panic!("{who} confirmed again"),
                _ => {}
            }
        }
        assert_eq!(
            not_about(a_id, &outputs),
            not_about(a_id, &expected),
            "A's message changed keys that are not A's"
        );
        assert_eq!(b.active_kid(), control.active_kid());
    }

    // The channel still works: a genuine hello from A opens at B.
    let hello = a.seal_raw_for_fuzzing(b_id, &[3]).expect("A seals to B");
    b.receive_envelope(&hello, now)
        .expect("B still opens A's envelopes");

    // What B thinks of C's KIDs is untouched by A.
    let c_slot = c_id.slot();
    for (rekey, ratchet) in [(0, 0), (0, 3), (1, 0), (1, 1), (1, 5), (2, 0)] {
        let k = kid(c_slot, Generation { rekey, ratchet });
        assert_eq!(b.key_outlook(c_id, k), control.key_outlook(c_id, k));
    }
    assert_eq!(b.awaits_first_key(c_id), control.awaits_first_key(c_id));
    // Unless A gave B a new key, B derives A's keys as before.
    if !installed_for_a {
        let next = split_kid(a.active_kid()).map(|(_, g)| Generation {
            rekey: g.rekey,
            ratchet: g.ratchet + 1,
        });
        if let Some(next) = next {
            let k = kid(a_id.slot(), next);
            assert_eq!(candidate(&mut b, a_id, k), candidate(&mut control, a_id, k));
        }
    }
});
