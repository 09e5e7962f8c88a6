//! Random joins and leaves among up to 8 members, with the relay delivering
//! envelopes in any order it likes: at every settled step every member reads
//! every other member, and no former member reads anything sealed after it
//! left.

mod common;

use common::{Room, any_held_key_opens};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Join,
    Leave(prop::sample::Index),
    /// Deliver this many queued envelopes, picked at these positions.
    Deliver(Vec<prop::sample::Index>),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Join),
        2 => any::<prop::sample::Index>().prop_map(Op::Leave),
        3 => prop::collection::vec(any::<prop::sample::Index>(), 0..12).prop_map(Op::Deliver),
        1 => (0u64..3_000).prop_map(Op::Advance),
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
