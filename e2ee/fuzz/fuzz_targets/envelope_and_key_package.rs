//! What a hostile server can hand a member: any bytes as an envelope from a
//! real peer, and as a newcomer's key package. Nothing may panic; no
//! fuzzer-made envelope opens (it would need the pairwise key); no
//! fuzzer-made key package verifies (it would need an identity's signature).
#![no_main]

use std::sync::{Mutex, OnceLock};

use hush_e2ee::{
    Config, EnvelopeHeader, Freshness, Group, Identity, KeyPackage, LocalMember, Millis, RoomId,
};
use libfuzzer_sys::fuzz_target;

const NOW: Millis = Millis(1_800_000_000_000);

fn group() -> &'static Mutex<Group> {
    static GROUP: OnceLock<Mutex<Group>> = OnceLock::new();
    GROUP.get_or_init(|| {
        let room = RoomId("room".into());
        let peer = LocalMember::new(Identity::generate(), room.clone(), NOW).expect("peer");
        let me = LocalMember::new(Identity::generate(), room, NOW).expect("me");
        let package = peer.key_package().to_bytes();
        Mutex::new(Group::join(me, &[package], NOW, Config::default()).group)
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = EnvelopeHeader::parse(data);
    let room = RoomId("room".into());
    assert!(
        KeyPackage::verify(data, &room, NOW, Freshness::default()).is_err(),
        "a fuzzer-made key package verified"
    );
    let mut g = group().lock().unwrap_or_else(|p| p.into_inner());
    assert!(
        g.receive_envelope(data, NOW).is_err(),
        "a fuzzer-made envelope opened"
    );
    assert!(g.member_joined(data, NOW).is_err());
});
