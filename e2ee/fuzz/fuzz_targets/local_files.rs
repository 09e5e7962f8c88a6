//! The files a client reads from its own disk, which another local program
//! (or a corrupted disk) may have written: the identity key (PKCS#8 PEM)
//! and the known-peers list (JSON). Nothing may panic; a known-peers list
//! that opens answers every name, and what it saves opens again to the
//! same answers.
#![no_main]

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;

use hush_e2ee::store::{KnownPeers, PeerStatus, PeerStore};
use hush_e2ee::{Error, Identity};
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

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Identity::from_pkcs8_pem(text);
    let disk = Memory(Rc::new(RefCell::new(Some(text.to_owned()))));
    let Ok(mut peers) = KnownPeers::open(disk.clone()) else {
        return;
    };
    let someone = Identity::from_seed(&[7; 32]).public();
    let first = peers.check("ann", &someone).expect("memory store");
    // Saved (pinning a new name persists), reopened: the same answer.
    peers.mark_verified("bob", &someone).expect("memory store");
    drop(peers);
    let mut again = KnownPeers::open(disk).expect("what we saved opens");
    let second = again.check("ann", &someone).expect("memory store");
    match first {
        PeerStatus::New => assert_eq!(second, PeerStatus::Known),
        other => assert_eq!(second, other),
    }
    assert_eq!(again.check("bob", &someone).expect("memory store"), PeerStatus::Verified);
});
