//! Random joins and leaves among up to 8 members, with the relay delivering
//! envelopes in any order it likes, forging frames under made-up KIDs and
//! replaying envelopes and departed members' key packages: at every
//! settled step every member reads every other member, no forged frame
//! opens, no replay is accepted, and no former member reads anything
//! sealed after it left.

mod common;

use common::{Room, any_held_key_opens};
use hush_e2ee::{Generation, kid, split_kid};
use hush_sframe::{Counter, Header};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Join,
    Leave(prop::sample::Index),
    /// Deliver this many queued envelopes, picked at these positions.
    Deliver(Vec<prop::sample::Index>),
    Advance(u64),
    /// The SFU forges a frame of this member under a made-up KID, sent to
    /// every other member.
    Forge(prop::sample::Index, Forgery, u64),
    /// The relay delivers an envelope it already delivered.
    ReplayEnvelope(prop::sample::Index),
    /// The server shows a departed member as joining again.
    ReplayDeparted(prop::sample::Index),
}

/// Which KID a forged frame names.
#[derive(Debug, Clone, Copy)]
enum Forgery {
    /// The sender's current generation plus this many ratchet steps
    /// (inside the window a receiver derives for).
    Ahead(u16),
    /// Far beyond the window.
    FarAhead(u16),
    /// A newer `rekey` than the sender ever made.
    NextRekey,
    /// Another slot than the sender's.
    OtherSlot(u16),
    /// Any 48-bit KID.
    Random(u64),
}

fn forgery() -> impl Strategy<Value = Forgery> {
    prop_oneof![
        (0u16..=17).prop_map(Forgery::Ahead),
        (18u16..2_000).prop_map(Forgery::FarAhead),
        Just(Forgery::NextRekey),
        any::<u16>().prop_map(Forgery::OtherSlot),
        (0u64..1 << 48).prop_map(Forgery::Random),
    ]
}

/// The KID a forgery of `sender`'s frame names, from the KID of its
/// current frames.
fn forged_kid(current: hush_sframe::KeyId, forgery: Forgery) -> hush_sframe::KeyId {
    let (slot, g) = split_kid(current).expect("our own KIDs split");
    let step = |n: u16| Generation {
        rekey: g.rekey,
        ratchet: g.ratchet.saturating_add(n),
    };
    match forgery {
        Forgery::Ahead(n) | Forgery::FarAhead(n) => kid(slot, step(n)),
        Forgery::NextRekey => kid(
            slot,
            Generation {
                rekey: g.rekey.saturating_add(1),
                ratchet: 0,
            },
        ),
        Forgery::OtherSlot(s) => kid(if s == slot { s ^ 1 } else { s }, g),
        Forgery::Random(k) => hush_sframe::KeyId(k),
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Join),
        2 => any::<prop::sample::Index>().prop_map(Op::Leave),
        3 => prop::collection::vec(any::<prop::sample::Index>(), 0..12).prop_map(Op::Deliver),
        1 => (0u64..3_000).prop_map(Op::Advance),
        2 => (any::<prop::sample::Index>(), forgery(), any::<u64>())
            .prop_map(|(i, f, seed)| Op::Forge(i, f, seed)),
        1 => any::<prop::sample::Index>().prop_map(Op::ReplayEnvelope),
        1 => any::<prop::sample::Index>().prop_map(Op::ReplayDeparted),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn keys_follow_membership(ops in prop::collection::vec(op(), 1..16)) {
        let mut room = Room::new("property");
        room.join();
        room.join();
        room.deliver_all();
        for op in ops {
            match op {
                Op::Join if room.clients.len() < 8 => { room.join(); }
                Op::Join => {}
                Op::Leave(i) if room.clients.len() > 1 => {
                    let ids = room.ids();
                    room.leave(ids[i.index(ids.len())]);
                }
                Op::Leave(_) => {}
                Op::Deliver(picks) => {
                    for p in picks {
                        if room.queue.is_empty() { break; }
                        let i = p.index(room.queue.len());
                        room.deliver_one(i);
                    }
                }
                Op::Advance(ms) => room.advance(ms),
                Op::Forge(i, forgery, seed) => {
                    let ids = room.ids();
                    let from = ids[i.index(ids.len())];
                    let current = room.clients[&from].group.active_kid();
                    let kid = forged_kid(current, forgery);
                    let mut frame = Header::new(kid, Counter(seed % 1_000_000))
                        .encode()
                        .as_bytes()
                        .to_vec();
                    // Ciphertext and tag of a small audio frame, made up.
                    frame.extend((0..40u64).map(|n| (seed.rotate_left(n as u32) ^ n) as u8));
                    for &to in &ids {
                        if to != from {
                            prop_assert!(room.open(to, from, &frame).is_err(), "{} opened a forged frame of {} under {:?}", to, from, kid);
                        }
                    }
                }
                Op::ReplayEnvelope(i) if !room.delivered.is_empty() => {
                    let q = room.delivered[i.index(room.delivered.len())].clone();
                    let now = room.now;
                    if let Some(c) = room.clients.get_mut(&q.to) {
                        prop_assert!(c.group.receive_envelope(&q.envelope, now).is_err(), "a replayed envelope {} -> {} was accepted", q.from, q.to);
                    }
                }
                Op::ReplayEnvelope(_) => {}
                Op::ReplayDeparted(i) if !room.former.is_empty() => {
                    let gone: Vec<_> = room.former.keys().copied().collect();
                    let departed = &room.former[&gone[i.index(gone.len())]];
                    let (package, left_at, ghost, made) = (departed.package.clone(), departed.left_at, departed.group.me(), departed.created);
                    let skew = room.config.freshness.max_skew_ms;
                    let now = room.now;
                    for (id, c) in room.clients.iter_mut() {
                        match c.group.member_joined(&package, now) {
                            // Whoever saw it leave refuses it.
                            Ok(_) if left_at.is_some_and(|l| c.joined_at < l) => {
                                prop_assert!(false, "{} took a departed member back", id);
                            }
                            // One who never saw it may list it, but never
                            // confirms it, and sends it nothing unless its
                            // package is not older than ours (within the
                            // clock skew; its key goes to an ephemeral key
                            // the departed member's client erased).
                            Ok(out) => {
                                let older = made.0.saturating_add(skew) < c.created.0;
                                let sent = out.iter().any(|o| matches!(o, hush_e2ee::Output::Send { .. }));
                                prop_assert!(!(older && sent), "{} sent a departed member something", id);
                                prop_assert!(!c.group.is_confirmed(ghost));
                            }
                            Err(_) => {}
                        }
                    }
                }
                Op::ReplayDeparted(_) => {}
            }
            // Settle a copy-free way: deliver what is queued (in a shuffled
            // order chosen above for part of it), then check.
            room.deliver_all();
            let ids = room.ids();
            for &from in &ids {
                let frame = room.seal(from, b"media");
                for &to in &ids {
                    if to != from {
                        let opened = room.open(to, from, &frame);
                        prop_assert_eq!(opened.as_deref(), Ok(&b"media"[..]), "{} reading {}", to, from);
                    }
                }
                for former in room.former.values() {
                    prop_assert!(
                        !any_held_key_opens(former, from, &frame, 4),
                        "a former member read {}'s frame", from
                    );
                }
            }
        }
    }
}
