//! Signed key packages: who joins, with which fresh X25519 key, when.
//!
//! Wire layout (all integers big-endian):
//!
//! ```text
//! u8        version (1)
//! u16       room id length R, then R bytes of UTF-8 room id
//! [16]      participant id
//! [32]      Ed25519 identity public key
//! [32]      X25519 ephemeral public key
//! u64       creation time, Unix milliseconds
//! [64]      Ed25519 signature over  "hush/v1 key package" || every byte above
//! ```

use x25519_dalek::{PublicKey, StaticSecret};

use crate::Error;
use crate::identity::{Identity, PublicIdentity};
use crate::ids::{Millis, ParticipantId, RoomId};
use crate::wire::Reader;

/// Key package format version this implementation speaks.
pub const KEY_PACKAGE_VERSION: u8 = 1;

/// Domain-separation label prefixed to the signed bytes.
pub const KEY_PACKAGE_LABEL: &[u8] = b"hush/v1 key package";

/// A verified key package of some member.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPackage {
    /// Room it was made for.
    pub room: RoomId,
    /// The member's id for this stay.
    pub participant: ParticipantId,
    /// The member's identity key.
    pub identity: PublicIdentity,
    /// The member's ephemeral X25519 public key.
    pub ephemeral: [u8; 32],
    /// When it was made.
    pub created: Millis,
    signature: [u8; 64],
}

impl core::fmt::Debug for KeyPackage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("KeyPackage")
            .field("room", &self.room)
            .field("participant", &self.participant)
            .field("identity", &self.identity)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// How key packages are judged on receipt.
#[derive(Debug, Clone, Copy)]
pub struct Freshness {
    /// Oldest acceptable age. Members' packages are relayed to later
    /// newcomers, so this spans a long call (default 24 h).
    pub max_age_ms: u64,
    /// Oldest acceptable age of a *newcomer's* package (`member_joined`),
    /// made for that very join (default 10 min, twice the skew allowed):
    /// how long after a departure a member who never saw it can be shown
    /// the departed member's package again.
    pub newcomer_max_age_ms: u64,
    /// Clock skew tolerated for packages dated in the future (default 5 min).
    pub max_skew_ms: u64,
}

impl Default for Freshness {
    fn default() -> Self {
        Self {
            max_age_ms: 24 * 3600 * 1000,
            newcomer_max_age_ms: 10 * 60 * 1000,
            max_skew_ms: 5 * 60 * 1000,
        }
    }
}

impl KeyPackage {
    /// Encodes to the wire layout.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.signed_bytes();
        out.extend_from_slice(&self.signature);
        out
    }

    /// The bytes the signature covers, without the label.
    fn signed_bytes(&self) -> Vec<u8> {
        let room = self.room.0.as_bytes();
        let mut out = Vec::with_capacity(1 + 2 + room.len() + 16 + 32 + 32 + 8 + 64);
        out.push(KEY_PACKAGE_VERSION);
        // Room ids are at most u16::MAX bytes: `LocalMember::new` checks.
        out.extend_from_slice(&(room.len() as u16).to_be_bytes());
        out.extend_from_slice(room);
        out.extend_from_slice(&self.participant.0);
        out.extend_from_slice(&self.identity.to_bytes());
        out.extend_from_slice(&self.ephemeral);
        out.extend_from_slice(&self.created.0.to_be_bytes());
        out
    }

    /// The exact signing input: label || signed bytes.
    pub fn signing_input(&self) -> Vec<u8> {
        [KEY_PACKAGE_LABEL, &self.signed_bytes()].concat()
    }

    /// Parses and verifies a key package for `room` at time `now`. Any
    /// failure is an error and the caller changes nothing.
    pub fn verify(
        bytes: &[u8],
        room: &RoomId,
        now: Millis,
        freshness: Freshness,
    ) -> Result<Self, Error> {
        const WHAT: &str = "key package";
        let mut r = Reader::new(WHAT, bytes);
        let version = r.u8()?;
        if version != KEY_PACKAGE_VERSION {
            return Err(Error::UnsupportedVersion {
                what: WHAT,
                version,
            });
        }
        let room_len = usize::from(r.u16()?);
        let room_bytes = r.bytes(room_len)?;
        let room_str = std::str::from_utf8(room_bytes).map_err(|_| Error::Malformed {
            what: WHAT,
            why: "room id is not UTF-8",
        })?;
        let participant = ParticipantId(r.array()?);
        let identity = PublicIdentity::from_bytes(&r.array()?).ok_or(Error::Malformed {
            what: WHAT,
            why: "identity key is not a valid Ed25519 point",
        })?;
        let ephemeral: [u8; 32] = r.array()?;
        let created = Millis(r.u64()?);
        let signature: [u8; 64] = r.array()?;
        r.finish()?;
        let kp = KeyPackage {
            room: RoomId(room_str.to_owned()),
            participant,
            identity,
            ephemeral,
            created,
            signature,
        };
        // Signature first: nothing unauthenticated is judged further.
        if !identity.verify(&kp.signing_input(), &signature) {
            return Err(Error::BadSignature);
        }
        if &kp.room != room {
            return Err(Error::WrongRoom);
        }
        if created.0 > now.0.saturating_add(freshness.max_skew_ms) {
            return Err(Error::KeyPackageFromTheFuture {
                ahead_ms: created.0 - now.0,
            });
        }
        let age = now.0.saturating_sub(created.0);
        if age > freshness.max_age_ms {
            return Err(Error::StaleKeyPackage { age_ms: age });
        }
        Ok(kp)
    }
}

/// Hooks for `e2ee/fuzz` only (feature `fuzzing`, never enabled in the
/// workspace).
#[cfg(feature = "fuzzing")]
impl KeyPackage {
    /// A key package with any fields, signed by `identity`: it passes the
    /// signature check, so a fuzzer reaches the checks after it. The
    /// ephemeral key is taken as given (it may be a low-order point).
    /// Only for `e2ee/fuzz`.
    #[doc(hidden)]
    pub fn sign_fields_for_fuzzing(
        identity: &Identity,
        room: RoomId,
        participant: ParticipantId,
        ephemeral: [u8; 32],
        created: Millis,
    ) -> Result<Self, Error> {
        if room.0.len() > usize::from(u16::MAX) {
            return Err(Error::Malformed {
                what: "room id",
                why: "longer than 65535 bytes",
            });
        }
        let mut package = KeyPackage {
            room,
            participant,
            identity: identity.public(),
            ephemeral,
            created,
            signature: [0; 64],
        };
        package.signature = identity.sign(&package.signing_input());
        Ok(package)
    }
}

/// This device's membership in one room: its identity, a fresh participant
/// id and ephemeral X25519 secret, and the signed key package announcing them.
pub struct LocalMember {
    pub(crate) ephemeral: StaticSecret,
    pub(crate) package: KeyPackage,
}

impl core::fmt::Debug for LocalMember {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LocalMember")
            .field("package", &self.package)
            .finish_non_exhaustive()
    }
}

impl LocalMember {
    /// Makes a fresh participant id, ephemeral key and signed key package
    /// for joining `room` at `now`.
    pub fn new(identity: Identity, room: RoomId, now: Millis) -> Result<Self, Error> {
        Self::with_ephemeral(
            identity,
            room,
            now,
            ParticipantId::random(),
            crate::random_array(),
        )
    }

    /// As [`LocalMember::new`] with a chosen id and ephemeral secret (test vectors).
    pub fn with_ephemeral(
        identity: Identity,
        room: RoomId,
        now: Millis,
        participant: ParticipantId,
        ephemeral_secret: [u8; 32],
    ) -> Result<Self, Error> {
        if room.0.len() > usize::from(u16::MAX) {
            return Err(Error::Malformed {
                what: "room id",
                why: "longer than 65535 bytes",
            });
        }
        let ephemeral = StaticSecret::from(ephemeral_secret);
        let mut package = KeyPackage {
            room,
            participant,
            identity: identity.public(),
            ephemeral: PublicKey::from(&ephemeral).to_bytes(),
            created: now,
            signature: [0; 64],
        };
        package.signature = identity.sign(&package.signing_input());
        // The identity key is only needed to sign; it is not kept here.
        Ok(Self { ephemeral, package })
    }

    /// The signed key package to send with the join.
    pub fn key_package(&self) -> &KeyPackage {
        &self.package
    }

    /// This member's participant id.
    pub fn participant(&self) -> ParticipantId {
        self.package.participant
    }
}
