//! The files a client reads from its own disk, which another local program
//! (or a corrupted disk) may have written: the identity key (PKCS#8 PEM)
//! and the known-peers list (JSON). Nothing may panic; a known-peers list
//! that opens holds at most one pin per name, answers every question as
//! its pins say, and what it saves opens again to the same pins.
#![no_main]

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;

use hush_e2ee::store::{KnownPeers, PeerStatus, PeerStore, PinnedPeer};
use hush_e2ee::{Error, Identity, PublicIdentity};
use libfuzzer_sys::fuzz_target;

/// A peer store in memory, shared with the test.
#[derive(Clone)]
struct Memory(Rc<RefCell<Option<String>>>);

impl PeerStore for Memory {
    fn load(&self) -> Result<Option<String>, Error> {
        Ok(self.0.borrow().clone())
    }
    fn save(&self, contents: &str) -> Result<(), Error> {
        *self.0.borrow_mut() = Some(contents.to_owned());
        Ok(())
    }
    fn location(&self) -> PathBuf {
        PathBuf::from("memory")
    }
}

fn pins(peers: &KnownPeers<Memory>) -> Vec<PinnedPeer> {
    peers.pins().cloned().collect()
}

/// What `check(name, identity)` must answer, given the pins.
fn expected(pins: &[PinnedPeer], name: &str, identity: &PublicIdentity) -> PeerStatus {
    if let Some(p) = pins.iter().find(|p| p.identity == *identity) {
        if p.name != name {
            PeerStatus::NameChanged {
                pinned_name: p.name.clone(),
            }
        } else if p.verified {
            PeerStatus::Verified
        } else {
            PeerStatus::Known
        }
    } else if let Some(p) = pins.iter().find(|p| p.name == name) {
        PeerStatus::IdentityChanged {
            pinned: p.identity.fingerprint(),
            presented: identity.fingerprint(),
        }
    } else {
        PeerStatus::New
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Identity::from_pkcs8_pem(text);
    let disk = Memory(Rc::new(RefCell::new(Some(text.to_owned()))));
    let Ok(mut peers) = KnownPeers::open(disk.clone()) else {
        return;
    };
    // Opening alone writes nothing.
    assert_eq!(disk.0.borrow().as_deref(), Some(text));
    let before = pins(&peers);
    for (i, p) in before.iter().enumerate() {
        assert!(
            before[..i].iter().all(|q| q.name != p.name),
            "two pins named {:?}",
            p.name
        );
    }
    // Every question about pinned names and identities (which change
    // nothing) is answered as the pins say.
    for p in before.iter().take(8) {
        for q in before.iter().take(8) {
            let status = peers.check(&q.name, &p.identity).expect("memory store");
            assert_eq!(status, expected(&before, &q.name, &p.identity));
        }
    }
    assert_eq!(pins(&peers), before);

    // A save (a new peer under a free name), then a reopen: the same pins
    // plus the new one, written as version 2.
    let fresh_name = (0..)
        .map(|i| format!("fresh-{i}"))
        .find(|n| before.iter().all(|p| p.name != *n))
        .expect("some name is free");
    let fresh = (0..=255u8)
        .map(|i| Identity::from_seed(&[i; 32]).public())
        .find(|f| before.iter().all(|p| p.identity != *f))
        .expect("some identity is free");
    assert_eq!(
        peers.check(&fresh_name, &fresh).expect("memory store"),
        PeerStatus::New
    );
    let saved = disk.0.borrow().clone().expect("saved");
    assert!(saved.contains("\"version\": 2"), "{saved}");
    let again = KnownPeers::open(disk.clone()).expect("what we saved opens");
    assert_eq!(pins(&again), pins(&peers));
    assert_eq!(pins(&peers).len(), before.len() + 1);

    // A check and a verification, then a reopen: the same pins and answers.
    let someone = Identity::from_seed(&[7; 32]).public();
    let now = pins(&peers);
    let first = peers.check("ann", &someone).expect("memory store");
    assert_eq!(first, expected(&now, "ann", &someone));
    peers.mark_verified("bob", &someone).expect("memory store");
    let mut again = KnownPeers::open(disk).expect("what we saved opens");
    assert_eq!(pins(&again), pins(&peers));
    assert_eq!(
        again.check("bob", &someone).expect("memory store"),
        PeerStatus::Verified
    );
    assert_eq!(
        again.check("ann", &someone).expect("memory store"),
        PeerStatus::NameChanged {
            pinned_name: "bob".into()
        }
    );
});
