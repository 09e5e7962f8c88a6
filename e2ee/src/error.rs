//! The one error type of this crate.

use std::path::PathBuf;

use crate::ids::{Generation, ParticipantId};
use hush_sframe::KeyId;

/// Everything that can go wrong. Variants caused by what a peer or a
/// server sent are distinct from misuse and from local file problems.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bytes from the network ended early or had an impossible length.
    #[error("malformed {what}: {why}")]
    Malformed {
        /// What was being decoded ("key package", "envelope", ...).
        what: &'static str,
        /// What was wrong with it.
        why: &'static str,
    },
    /// A version byte this implementation does not speak.
    #[error("unsupported {what} version {version}")]
    UnsupportedVersion {
        /// What carried the version.
        what: &'static str,
        /// The version found.
        version: u8,
    },
    /// A key package's signature does not verify under its identity key.
    #[error("key package signature does not verify")]
    BadSignature,
    /// A key package made for another room.
    #[error("key package is for another room")]
    WrongRoom,
    /// A key package older than the configured maximum age.
    #[error("key package is stale: created {age_ms} ms ago")]
    StaleKeyPackage {
        /// How old it is.
        age_ms: u64,
    },
    /// A key package dated in the future beyond the allowed clock skew.
    #[error("key package is dated {ahead_ms} ms in the future")]
    KeyPackageFromTheFuture {
        /// How far ahead.
        ahead_ms: u64,
    },
    /// The X25519 exchange gave an all-zero secret (a low-order point).
    #[error("key agreement with {0} is not contributory")]
    WeakKeyAgreement(ParticipantId),
    /// A member with this participant id is already in the group.
    #[error("participant {0} is already a member")]
    DuplicateMember(ParticipantId),
    /// The key package of a member who left this room, shown again: a
    /// member that rejoins makes a new package with a new participant id.
    #[error("participant {0} left this room; its key package cannot be used again")]
    Departed(ParticipantId),
    /// The named participant is not a member of the group.
    #[error("participant {0} is not a member")]
    UnknownMember(ParticipantId),
    /// A key package or envelope claims to be from ourselves.
    #[error("message claims to come from this participant")]
    FromSelf,
    /// An envelope addressed to another participant.
    #[error("envelope addressed to {0}, not to this participant")]
    NotForMe(ParticipantId),
    /// An envelope failed authentication: tampered, or wrong key.
    #[error("envelope from {0} failed authentication")]
    EnvelopeAuthentication(ParticipantId),
    /// An envelope counter already seen on this channel.
    #[error("replayed envelope from {from}, counter {counter}")]
    ReplayedEnvelope {
        /// Sender.
        from: ParticipantId,
        /// Its counter.
        counter: u64,
    },
    /// An envelope too old for the channel's replay window.
    #[error("envelope from {from} too old for the replay window, counter {counter}")]
    EnvelopeOutsideWindow {
        /// Sender.
        from: ParticipantId,
        /// Its counter.
        counter: u64,
    },
    /// This channel's envelope counter is used up.
    #[error("envelope counter exhausted towards {0}")]
    ChannelExhausted(ParticipantId),
    /// A sender key whose KID does not carry the sender's slot.
    #[error("sender key from {from} has KID {kid} outside its slot")]
    ForeignKeyId {
        /// Claimed sender.
        from: ParticipantId,
        /// The KID.
        kid: KeyId,
    },
    /// No key for this sender and KID, and none can be derived.
    #[error("no key for {sender} KID {kid} and none derivable")]
    UnknownKey {
        /// Sender.
        sender: ParticipantId,
        /// The KID.
        kid: KeyId,
    },
    /// The key asked for is installed already; there is nothing to derive.
    #[error("that key is installed already")]
    KeyHeld,
    /// The generation counter of our own sender key ran out.
    #[error("sender key generation exhausted at {0:?}")]
    GenerationExhausted(Generation),
    /// A key file readable by group or others.
    #[error(
        "refusing to load {path}: mode {mode:o} lets other users read the key; run `chmod 600 {path}`"
    )]
    InsecureKeyFile {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A key file that is not a valid PKCS#8 Ed25519 PEM.
    #[error("{path} is not a PKCS#8 Ed25519 private key in PEM form")]
    BadKeyFile {
        /// The file.
        path: PathBuf,
    },
    /// The known-peers file cannot be parsed; it is left untouched.
    #[error("known-peers file {path} is corrupt ({why}); it was not modified")]
    CorruptPeerFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}
