//! The one error type of this crate.

use crate::header::{Counter, KeyId};

/// Everything that can go wrong while encoding, encrypting or decrypting an
/// SFrame. Variants caused by a peer's (or an attacker's) bytes are distinct
/// from variants caused by misuse of the API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The header ends before the lengths its config byte announces.
    #[error("SFrame header truncated: needs {needed} bytes, {available} available")]
    HeaderTruncated {
        /// Bytes the config byte announces.
        needed: usize,
        /// Bytes that were there.
        available: usize,
    },
    /// A KID or CTR is not in its shortest form (RFC 9605 §4.3 "MUST").
    #[error("SFrame header is not minimally encoded")]
    NonMinimalHeader,
    /// The frame is too short to hold its header and authentication tag.
    #[error("SFrame ciphertext too short: {len} bytes, at least {min} needed")]
    FrameTooShort {
        /// Length of the frame.
        len: usize,
        /// Header plus tag length.
        min: usize,
    },
    /// No key is installed for the KID named in the header.
    #[error("unknown SFrame key id {0}")]
    UnknownKeyId(KeyId),
    /// A key with this KID is already installed; remove it first.
    #[error("SFrame key id {0} is already installed")]
    DuplicateKeyId(KeyId),
    /// The sender has no active key to encrypt with.
    #[error("no active SFrame key selected for sending")]
    NoActiveKey,
    /// This (KID, CTR) was already accepted once.
    #[error("replayed SFrame: kid {kid}, ctr {ctr}")]
    Replayed {
        /// Key id of the frame.
        kid: KeyId,
        /// Counter of the frame.
        ctr: Counter,
    },
    /// The counter is older than the replay window can judge.
    #[error("SFrame too old for the replay window: kid {kid}, ctr {ctr}")]
    OutsideReplayWindow {
        /// Key id of the frame.
        kid: KeyId,
        /// Counter of the frame.
        ctr: Counter,
    },
    /// The tag did not verify: tampered, truncated, or wrong key or metadata.
    #[error("SFrame authentication failed: kid {kid}, ctr {ctr}")]
    AuthenticationFailed {
        /// Key id of the frame.
        kid: KeyId,
        /// Counter of the frame.
        ctr: Counter,
    },
    /// Every counter value of this key has been used; install a new key.
    #[error("SFrame counter exhausted for key id {0}")]
    CounterExhausted(KeyId),
    /// The caller's output buffer is too small.
    #[error("buffer too small: {needed} bytes needed, {available} available")]
    BufferTooSmall {
        /// Bytes required.
        needed: usize,
        /// Bytes provided.
        available: usize,
    },
    /// The numeric cipher suite is not one of RFC 9605's five.
    #[error("unknown SFrame cipher suite 0x{0:04x}")]
    UnknownCipherSuite(u16),
    /// A raw AEAD key had the wrong length for its cipher suite.
    #[error("invalid key length: {expected} bytes expected, got {got}")]
    InvalidKeyLength {
        /// Length the suite requires.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// The replay window size is outside 1..=MAX_REPLAY_WINDOW.
    #[error("invalid replay window size {0}")]
    InvalidReplayWindow(u64),
    /// The payload is longer than the AEAD can process under one nonce.
    #[error("payload too long for the cipher")]
    PayloadTooLong,
}
