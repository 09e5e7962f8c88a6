//! hush-e2ee: who holds which media key, and when keys change.
//!
//! A pure state machine ([`Group`]): inputs are "I joined with these
//! members", "this member joined with this key package", "this member
//! left", "this envelope arrived", and the time; outputs are envelopes for
//! named members (relayed by the signaling server, which cannot read them)
//! and [`KeyEvent`]s for the SFrame layer. The only IO is the identity file
//! and the known-peers file, in [`store`].
//!
//! # Guarantees
//!
//! - **Servers read no media.** Media keys travel only inside pairwise
//!   envelopes (X25519 + HKDF-SHA256 + AES-256-GCM) between members' fresh
//!   ephemeral keys; the relay sees ciphertext.
//! - **Members are who their identity key says.** Every key package is
//!   signed with the member's Ed25519 identity key and bound to the room
//!   and a time; forged, other-room, stale or unknown-version packages are
//!   refused and change nothing.
//! - **A newcomer cannot read what was said before it joined.** Every
//!   member ratchets its sender key one HKDF step forward before giving it
//!   to the newcomer; the step cannot be undone.
//! - **A removed member cannot read what is said after it left**, once
//!   every remaining member has switched to a fresh random key sent only to
//!   the remaining members (at most `rekey_wait_ms`, default 1 s, later).
//! - **Envelopes cannot be tampered with or replayed**: AEAD with the
//!   header as associated data, per-direction counters and a replay window.
//! - **A replayed key package shows nobody present.** A member is shown
//!   as unconfirmed until an envelope from it authenticates
//!   ([`Output::Confirmed`]). A departed member's package is refused by
//!   everyone who saw it leave; a newcomer's package must be minutes
//!   fresh; a member that could be a replay (listed at our join, or with a
//!   package older than ours) gets our key only once confirmed, and no
//!   unconfirmed member ever gets the fresh key of a departure.
//! - **Safety numbers** let two users check, out of band, that no one
//!   substituted an identity; the known-peers file pins identities on first
//!   use and reports a change.
//!
//! # Known limits
//!
//! - Metadata (who is in a room, when, how long, message sizes) is visible
//!   to the servers.
//! - A malicious signaling server can add a ghost participant with its own
//!   identity; members then share keys with it. Users detect it by the
//!   participant list and by comparing safety numbers. Display names come
//!   from the server and are not signed: the known-peers file pins by
//!   identity key and warns when a known identity comes under another name.
//! - During the grace period after a departure (until the fresh key is in
//!   use) the departed member can still decrypt; receivers keep replaced
//!   keys for `grace_ms` (default 2 s) for frames in flight.
//!
//! # Driving it
//!
//! ```
//! use hush_e2ee::{Config, Group, Identity, LocalMember, Millis, Output, RoomId};
//!
//! let room = RoomId("standup".into());
//! let now = Millis(1_700_000_000_000);
//! let alice = LocalMember::new(Identity::generate(), room.clone(), now)?;
//! let alice_kp = alice.key_package().to_bytes();
//! let mut alice = Group::join(alice, &[], now, Config::default()).group;
//!
//! // Bob joins: the server gives him Alice's key package, and Alice his.
//! let bob = LocalMember::new(Identity::generate(), room, now)?;
//! let bob_kp = bob.key_package().to_bytes();
//! let bob = Group::join(bob, &[alice_kp], now, Config::default());
//! // Alice sends Bob her key; Bob greets Alice with a hello, and sends
//! // his key once hers arrives (keys go only to members shown to be live).
//! let from_alice = alice.member_joined(&bob_kp, now)?;
//! assert!(from_alice.iter().any(|o| matches!(o, Output::Send { .. })));
//! let hello = bob.outputs.iter().find_map(|o| match o {
//!     Output::Send { envelope, .. } => Some(envelope.clone()),
//!     _ => None,
//! });
//! let confirmed = alice.receive_envelope(&hello.expect("a hello"), now)?;
//! assert!(confirmed.iter().any(|o| matches!(o, Output::Confirmed(_))));
//! # let _ = bob;
//! # Ok::<(), hush_e2ee::Error>(())
//! ```

#![forbid(unsafe_code)]

mod channel;
mod error;
mod group;
mod identity;
mod ids;
mod keypackage;
mod safety;
pub mod store;
#[cfg(test)]
mod vectors;
mod wire;

pub use channel::{
    ENVELOPE_HEADER_LEN, ENVELOPE_REPLAY_WINDOW, ENVELOPE_VERSION, EnvelopeHeader, PAIRWISE_LABEL,
};
pub use error::Error;
pub use group::{
    CandidateKey, Config, Group, Joined, KeyEvent, KeyOutlook, Output, RATCHET_LABEL,
    SENDER_KEY_LEN, ratchet,
};
pub use identity::{Identity, PublicIdentity};
pub use ids::{Generation, Millis, ParticipantId, RoomId, kid, split_kid};
pub use keypackage::{Freshness, KEY_PACKAGE_LABEL, KEY_PACKAGE_VERSION, KeyPackage, LocalMember};
pub use safety::{SAFETY_NUMBER_ITERATIONS, SAFETY_NUMBER_LABEL, SafetyNumber};

/// Random bytes from the operating system's generator (via `rand`).
pub(crate) fn random_array<const N: usize>() -> [u8; N] {
    use rand::Rng;
    let mut a = [0u8; N];
    rand::rng().fill_bytes(&mut a);
    a
}
