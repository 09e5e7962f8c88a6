//! Arbitrary bytes into every parser that reads the network: typed errors,
//! never a panic, nothing accepted.

mod common;

use common::{Room, T0};
use hush_e2ee::{EnvelopeHeader, KeyPackage, RoomId};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_key_packages_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        prop_assert!(KeyPackage::verify(&bytes, &RoomId("r".into()), T0, Default::default()).is_err());
    }

    #[test]
    fn random_envelopes_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..200), version_one in any::<bool>()) {
        let mut room = Room::new("r");
        let a = room.join();
        let b = room.join();
        room.deliver_all();
        let mut bytes = bytes;
        if version_one && !bytes.is_empty() {
            bytes[0] = 1;
        }
        // Also aim some at real participant ids, so the channel path runs.
        if bytes.len() >= 33 {
            bytes[1..17].copy_from_slice(&a.0);
            bytes[17..33].copy_from_slice(&b.0);
        }
        let _ = EnvelopeHeader::parse(&bytes);
        let now = room.now;
        prop_assert!(room.clients.get_mut(&b).expect("b").group.receive_envelope(&bytes, now).is_err());
    }
}
