//! The identity file and the known-peers (TOFU) file.

use std::cell::{Cell, RefCell};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::rc::Rc;

use hush_e2ee::store::{
    FilePeerStore, KnownPeers, PeerStatus, PeerStore, load_identity, save_identity,
};
use hush_e2ee::{Error, Identity, PublicIdentity};

#[test]
fn identity_file_is_private_and_round_trips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sub/identity.pem");
    let id = Identity::generate();
    save_identity(&path, &id).expect("save");
    let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(load_identity(&path).expect("load").public(), id.public());
}

#[test]
fn world_readable_identity_file_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("identity.pem");
    save_identity(&path, &Identity::generate()).expect("save");
    for mode in [0o644, 0o640, 0o604] {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        let err = load_identity(&path).expect_err("insecure file loaded");
        assert!(matches!(err, Error::InsecureKeyFile { mode: m, .. } if m == mode));
        let msg = err.to_string();
        assert!(msg.contains("chmod 600"), "{msg}");
    }
}

#[test]
fn garbage_identity_file_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("identity.pem");
    fs::write(&path, "not a key").expect("write");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    assert!(matches!(
        load_identity(&path),
        Err(Error::BadKeyFile { .. })
    ));
    assert!(matches!(
        load_identity(&dir.path().join("missing.pem")),
        Err(Error::Io { .. })
    ));
}

/// A known-peers file in a fresh directory (dropped with the directory).
fn fresh_store() -> (tempfile::TempDir, FilePeerStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FilePeerStore(dir.path().join("known_peers.json"));
    (dir, store)
}

fn check(peers: &mut KnownPeers<FilePeerStore>, name: &str, id: &PublicIdentity) -> PeerStatus {
    peers.check(name, id).expect("check")
}

fn on_disk(store: &FilePeerStore) -> serde_json::Value {
    let text = fs::read_to_string(&store.0).expect("read");
    serde_json::from_str(&text).expect("json")
}

/// The pins as (name, identity, verified), by name.
fn listed<S: PeerStore>(peers: &KnownPeers<S>) -> Vec<(String, PublicIdentity, bool)> {
    let mut pins: Vec<_> = peers
        .pins()
        .map(|p| (p.name.clone(), p.identity, p.verified))
        .collect();
    pins.sort_by(|a, b| a.0.cmp(&b.0));
    pins
}

#[test]
fn known_peers_pin_on_first_use_and_report_changes() {
    let (_dir, store) = fresh_store();
    let alice = Identity::generate().public();
    let mallory = Identity::generate().public();
    let mut peers = KnownPeers::open(store.clone()).expect("open");
    assert_eq!(check(&mut peers, "alice", &alice), PeerStatus::New);
    assert_eq!(check(&mut peers, "alice", &alice), PeerStatus::Known);
    // Reopened from disk: the pin persisted.
    let mut peers = KnownPeers::open(store.clone()).expect("reopen");
    assert_eq!(check(&mut peers, "alice", &alice), PeerStatus::Known);
    assert_eq!(
        check(&mut peers, "alice", &mallory),
        PeerStatus::IdentityChanged {
            pinned: alice.fingerprint(),
            presented: mallory.fingerprint()
        }
    );
    // A change never replaces the pin by itself.
    assert!(matches!(
        check(&mut peers, "alice", &mallory),
        PeerStatus::IdentityChanged { .. }
    ));
    assert_eq!(check(&mut peers, "alice", &alice), PeerStatus::Known);
    peers.mark_verified("alice", &alice).expect("verify");
    assert_eq!(
        check(
            &mut KnownPeers::open(store).expect("reopen"),
            "alice",
            &alice
        ),
        PeerStatus::Verified
    );
}

#[test]
fn pins_are_written_as_version_2_keyed_by_identity() {
    let (_dir, store) = fresh_store();
    let alice = Identity::generate().public();
    let bob = Identity::generate().public();
    let mut peers = KnownPeers::open(store.clone()).expect("open");
    check(&mut peers, "alice", &alice);
    peers.mark_verified("bob", &bob).expect("verify");
    assert_eq!(
        on_disk(&store),
        serde_json::json!({
            "version": 2,
            "peers": {
                hex::encode(alice.to_bytes()): {"name": "alice", "verified": false},
                hex::encode(bob.to_bytes()): {"name": "bob", "verified": true},
            }
        })
    );
}

#[test]
fn identity_changed_does_not_pin_the_presented_identity() {
    let (_dir, store) = fresh_store();
    let alice = Identity::generate().public();
    let mallory = Identity::generate().public();
    let mut peers = KnownPeers::open(store.clone()).expect("open");
    check(&mut peers, "alice", &alice);
    let before = on_disk(&store);
    assert!(matches!(
        check(&mut peers, "alice", &mallory),
        PeerStatus::IdentityChanged { .. }
    ));
    assert_eq!(on_disk(&store), before, "the change was saved");
    // Had mallory's key been pinned (as "alice"), this would be NameChanged.
    assert_eq!(check(&mut peers, "mallory", &mallory), PeerStatus::New);
}

#[test]
fn known_identity_under_another_name_is_a_name_change_and_keeps_its_pin() {
    let (_dir, store) = fresh_store();
    let alice = Identity::generate().public();
    let bob = Identity::generate().public();
    let mut peers = KnownPeers::open(store.clone()).expect("open");
    check(&mut peers, "alice", &alice);
    let before = on_disk(&store);
    let renamed = PeerStatus::NameChanged {
        pinned_name: "alice".into(),
    };
    assert_eq!(check(&mut peers, "ally", &alice), renamed);
    assert_eq!(check(&mut peers, "ally", &alice), renamed);
    assert_eq!(on_disk(&store), before, "the rename was saved");
    let mut peers = KnownPeers::open(store.clone()).expect("reopen");
    assert_eq!(check(&mut peers, "ally", &alice), renamed);
    assert_eq!(check(&mut peers, "alice", &alice), PeerStatus::Known);
    // "ally" was not taken by alice's key: another key is new under it.
    assert_eq!(check(&mut peers, "ally", &bob), PeerStatus::New);
    // A verified identity under another name is a name change too.
    peers.mark_verified("alice", &alice).expect("verify");
    assert_eq!(check(&mut peers, "someone", &alice), renamed);
    assert_eq!(check(&mut peers, "alice", &alice), PeerStatus::Verified);
}

#[test]
fn server_presenting_alice_as_bob_is_loud_and_moves_no_pin() {
    let (_dir, store) = fresh_store();
    let alice = Identity::generate().public();
    let bob = Identity::generate().public();
    let mallory = Identity::generate().public();
    let mut peers = KnownPeers::open(store.clone()).expect("open");
    check(&mut peers, "alice", &alice);
    check(&mut peers, "bob", &bob);
    // The server calls Alice's identity "bob".
    assert_eq!(
        check(&mut peers, "bob", &alice),
        PeerStatus::NameChanged {
            pinned_name: "alice".into()
        }
    );
    // Bob's own later appearance is unaffected, and so is Alice's.
    assert_eq!(check(&mut peers, "bob", &bob), PeerStatus::Known);
    assert_eq!(check(&mut peers, "alice", &alice), PeerStatus::Known);
    // A new key under the name "alice" is an identity change.
    assert_eq!(
        check(&mut peers, "alice", &mallory),
        PeerStatus::IdentityChanged {
            pinned: alice.fingerprint(),
            presented: mallory.fingerprint()
        }
    );
    let mut peers = KnownPeers::open(store).expect("reopen");
    assert_eq!(check(&mut peers, "bob", &bob), PeerStatus::Known);
    assert_eq!(check(&mut peers, "alice", &alice), PeerStatus::Known);
}

#[test]
fn verifying_a_new_identity_for_a_name_removes_the_old_pin() {
    let (_dir, store) = fresh_store();
    let old = Identity::generate().public();
    let new = Identity::generate().public();
    let mut peers = KnownPeers::open(store.clone()).expect("open");
    check(&mut peers, "alice", &old);
    assert!(matches!(
        check(&mut peers, "alice", &new),
        PeerStatus::IdentityChanged { .. }
    ));
    peers.mark_verified("alice", &new).expect("verify");
    let mut peers = KnownPeers::open(store.clone()).expect("reopen");
    assert_eq!(check(&mut peers, "alice", &new), PeerStatus::Verified);
    assert_eq!(
        check(&mut peers, "alice", &old),
        PeerStatus::IdentityChanged {
            pinned: new.fingerprint(),
            presented: old.fingerprint()
        }
    );
    // The old key is pinned nowhere: under another name it is new.
    assert_eq!(check(&mut peers, "old-alice", &old), PeerStatus::New);
}

#[test]
fn verifying_a_pinned_identity_under_another_name_renames_its_pin() {
    let (_dir, store) = fresh_store();
    let alice = Identity::generate().public();
    let mut peers = KnownPeers::open(store.clone()).expect("open");
    check(&mut peers, "alice", &alice);
    peers.mark_verified("alicia", &alice).expect("verify");
    let mut peers = KnownPeers::open(store).expect("reopen");
    assert_eq!(check(&mut peers, "alicia", &alice), PeerStatus::Verified);
    assert_eq!(
        check(&mut peers, "alice", &alice),
        PeerStatus::NameChanged {
            pinned_name: "alicia".into()
        }
    );
}

#[test]
fn version_1_file_is_migrated_and_saved_as_version_2() {
    let (_dir, store) = fresh_store();
    let alice = Identity::generate().public();
    let bob = Identity::generate().public();
    let carol = Identity::generate().public();
    let mallory = Identity::generate().public();
    let v1 = serde_json::json!({
        "version": 1,
        "peers": {
            "alice": {"identity": hex::encode(alice.to_bytes()), "verified": true},
            "bob": {"identity": hex::encode(bob.to_bytes()), "verified": false},
        }
    })
    .to_string();
    fs::write(&store.0, &v1).expect("write");
    let answers = |peers: &mut KnownPeers<FilePeerStore>| {
        assert_eq!(check(peers, "alice", &alice), PeerStatus::Verified);
        assert_eq!(check(peers, "bob", &bob), PeerStatus::Known);
        assert_eq!(
            check(peers, "bob", &alice),
            PeerStatus::NameChanged {
                pinned_name: "alice".into()
            }
        );
        assert_eq!(
            check(peers, "bob", &mallory),
            PeerStatus::IdentityChanged {
                pinned: bob.fingerprint(),
                presented: mallory.fingerprint()
            }
        );
    };
    let mut peers = KnownPeers::open(store.clone()).expect("open v1");
    assert_eq!(
        listed(&peers),
        [
            ("alice".to_owned(), alice, true),
            ("bob".to_owned(), bob, false)
        ]
    );
    answers(&mut peers);
    // Opening and checking known peers writes nothing.
    assert_eq!(fs::read_to_string(&store.0).expect("read"), v1);
    // The next save writes version 2.
    assert_eq!(check(&mut peers, "carol", &carol), PeerStatus::New);
    assert_eq!(
        on_disk(&store),
        serde_json::json!({
            "version": 2,
            "peers": {
                hex::encode(alice.to_bytes()): {"name": "alice", "verified": true},
                hex::encode(bob.to_bytes()): {"name": "bob", "verified": false},
                hex::encode(carol.to_bytes()): {"name": "carol", "verified": false},
            }
        })
    );
    let mut peers = KnownPeers::open(store).expect("reopen v2");
    answers(&mut peers);
    assert_eq!(check(&mut peers, "carol", &carol), PeerStatus::Known);
}

#[test]
fn version_1_identity_under_two_names_keeps_the_first_name() {
    let (_dir, store) = fresh_store();
    let alice = Identity::generate().public();
    let key = hex::encode(alice.to_bytes());
    // Written out of order: the first name in sorted order wins, not the
    // first in the text.
    fs::write(
        &store.0,
        format!(
            r#"{{"version":1,"peers":{{"bob":{{"identity":"{key}","verified":true}},"ann":{{"identity":"{key}","verified":false}}}}}}"#
        ),
    )
    .expect("write");
    let mut peers = KnownPeers::open(store).expect("open");
    // The first name keeps its own `verified`, not the dropped name's.
    assert_eq!(listed(&peers), [("ann".to_owned(), alice, false)]);
    assert_eq!(check(&mut peers, "ann", &alice), PeerStatus::Known);
    assert_eq!(
        check(&mut peers, "bob", &alice),
        PeerStatus::NameChanged {
            pinned_name: "ann".into()
        }
    );
}

#[test]
fn hand_written_version_2_file_is_read() {
    let (_dir, store) = fresh_store();
    let alice = Identity::generate().public();
    let bob = Identity::generate().public();
    fs::write(
        &store.0,
        serde_json::json!({
            "version": 2,
            "peers": {
                hex::encode(alice.to_bytes()): {"name": "alice", "verified": true},
                // Upper-case hex is the same key.
                hex::encode_upper(bob.to_bytes()): {"name": "bob", "verified": false},
            }
        })
        .to_string(),
    )
    .expect("write");
    let mut peers = KnownPeers::open(store).expect("open");
    assert_eq!(check(&mut peers, "alice", &alice), PeerStatus::Verified);
    assert_eq!(check(&mut peers, "bob", &bob), PeerStatus::Known);
}

/// 32 bytes of valid hex that are not an Ed25519 point.
fn not_a_point() -> String {
    (0u8..=255)
        .map(|b| [b; 32])
        .find(|bytes| PublicIdentity::from_bytes(bytes).is_none())
        .map(hex::encode)
        .expect("some byte pattern is not a point")
}

#[test]
fn corrupt_peer_file_is_an_error_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("known_peers.json");
    let a = hex::encode(Identity::generate().public().to_bytes());
    let b = hex::encode(Identity::generate().public().to_bytes());
    let not_a_point = not_a_point();
    let cases = [
        "{not json".to_owned(),
        r#"{"version": 3, "peers": {}}"#.to_owned(),
        r#"{"version": 0, "peers": {}}"#.to_owned(),
        r#"{"peers": {}}"#.to_owned(),
        r#"{"version": 2, "peers": {}, "extra": 1}"#.to_owned(),
        // Version 1.
        r#"{"version": 1, "peers": {"bob": {"identity": "zz", "verified": false}}}"#.to_owned(),
        format!(
            r#"{{"version": 1, "peers": {{"bob": {{"identity": "{not_a_point}", "verified": false}}}}}}"#
        ),
        format!(r#"{{"version": 1, "peers": {{"bob": {{"identity": "{a}"}}}}}}"#),
        // Version 2.
        r#"{"version": 2, "peers": {"zz": {"name": "bob", "verified": false}}}"#.to_owned(),
        format!(
            r#"{{"version": 2, "peers": {{"{}": {{"name": "bob", "verified": false}}}}}}"#,
            &a[..62]
        ),
        format!(
            r#"{{"version": 2, "peers": {{"{not_a_point}": {{"name": "bob", "verified": false}}}}}}"#
        ),
        format!(r#"{{"version": 2, "peers": {{"{a}": {{"name": "bob"}}}}}}"#),
        format!(
            r#"{{"version": 2, "peers": {{"{a}": {{"name": "bob", "verified": false, "x": 1}}}}}}"#
        ),
        // A version 1 body under version 2, and the other way round.
        format!(
            r#"{{"version": 2, "peers": {{"bob": {{"identity": "{a}", "verified": false}}}}}}"#
        ),
        format!(r#"{{"version": 1, "peers": {{"{a}": {{"name": "bob", "verified": false}}}}}}"#),
        // Two identities under one name; one identity twice.
        format!(
            r#"{{"version": 2, "peers": {{"{a}": {{"name": "bob", "verified": false}}, "{b}": {{"name": "bob", "verified": true}}}}}}"#
        ),
        format!(
            r#"{{"version": 2, "peers": {{"{a}": {{"name": "ann", "verified": false}}, "{}": {{"name": "bob", "verified": true}}}}}}"#,
            a.to_uppercase()
        ),
    ];
    for garbage in cases {
        fs::write(&path, &garbage).expect("write");
        let err = KnownPeers::open(FilePeerStore(path.clone()))
            .err()
            .unwrap_or_else(|| panic!("corrupt accepted: {garbage}"));
        assert!(matches!(err, Error::CorruptPeerFile { .. }), "{err:?}");
        assert_eq!(
            fs::read_to_string(&path).expect("read"),
            garbage,
            "file modified"
        );
    }
}

/// A store whose saves fail once `failing` is set.
#[derive(Clone, Default)]
struct FlakyStore {
    text: Rc<RefCell<Option<String>>>,
    failing: Rc<Cell<bool>>,
}

impl PeerStore for FlakyStore {
    fn load(&self) -> Result<Option<String>, Error> {
        Ok(self.text.borrow().clone())
    }
    fn save(&self, contents: &str) -> Result<(), Error> {
        if self.failing.get() {
            return Err(Error::Io {
                path: self.location(),
                source: std::io::Error::other("disk full"),
            });
        }
        *self.text.borrow_mut() = Some(contents.to_owned());
        Ok(())
    }
    fn location(&self) -> PathBuf {
        PathBuf::from("flaky")
    }
}

#[test]
fn a_pin_that_cannot_be_saved_is_not_made() {
    let store = FlakyStore::default();
    let old = Identity::generate().public();
    let new = Identity::generate().public();
    let mut peers = KnownPeers::open(store.clone()).expect("open");
    assert_eq!(peers.check("alice", &old).expect("check"), PeerStatus::New);
    store.failing.set(true);
    assert!(peers.check("bob", &new).is_err());
    assert!(peers.mark_verified("alice", &new).is_err());
    store.failing.set(false);
    // Neither failed change took effect in memory.
    assert_eq!(
        peers.check("alice", &old).expect("check"),
        PeerStatus::Known
    );
    assert_eq!(peers.check("bob", &new).expect("check"), PeerStatus::New);
}
