//! The identity file and the known-peers (TOFU) file.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use hush_e2ee::store::{FilePeerStore, KnownPeers, PeerStatus, load_identity, save_identity};
use hush_e2ee::{Error, Identity};

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

#[test]
fn known_peers_pin_on_first_use_and_report_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FilePeerStore(dir.path().join("known_peers.json"));
    let alice = Identity::generate().public();
    let mallory = Identity::generate().public();
    let mut peers = KnownPeers::open(store.clone()).expect("open");
    assert_eq!(
        peers.check("alice", &alice).expect("check"),
        PeerStatus::New
    );
    assert_eq!(
        peers.check("alice", &alice).expect("check"),
        PeerStatus::Known
    );
    // Reopened from disk: the pin persisted.
    let mut peers = KnownPeers::open(store.clone()).expect("reopen");
    let status = peers.check("alice", &mallory).expect("check");
    assert_eq!(
        status,
        PeerStatus::IdentityChanged {
            pinned: alice.fingerprint(),
            presented: mallory.fingerprint()
        }
    );
    // A change never replaces the pin by itself.
    assert!(matches!(
        peers.check("alice", &mallory).expect("check"),
        PeerStatus::IdentityChanged { .. }
    ));
    peers.mark_verified("alice", &alice).expect("verify");
    assert_eq!(
        KnownPeers::open(store)
            .expect("reopen")
            .check("alice", &alice)
            .expect("check"),
        PeerStatus::Verified
    );
}

#[test]
fn corrupt_peer_file_is_an_error_and_left_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("known_peers.json");
    for garbage in [
        "{not json",
        r#"{"version": 2, "peers": {}}"#,
        r#"{"version": 1, "peers": {"bob": {"identity": "zz", "verified": false}}}"#,
    ] {
        fs::write(&path, garbage).expect("write");
        let err = KnownPeers::open(FilePeerStore(path.clone()))
            .err()
            .expect("corrupt accepted");
        assert!(matches!(err, Error::CorruptPeerFile { .. }), "{err:?}");
        assert_eq!(
            fs::read_to_string(&path).expect("read"),
            garbage,
            "file modified"
        );
    }
}
