//! SFrame (RFC 9605): end-to-end encryption of media frames for hush.
//!
//! Every audio and video frame a hush client sends passes through a
//! [`Sender`]; every frame it receives through a [`Receiver`]. The crate is
//! pure: no IO, no clocks, no threads. Keys go in by KID, frames go in and
//! out as bytes.
//!
//! ```
//! use hush_sframe::{CipherSuite, KeyId, Receiver, Sender};
//!
//! let base_key = [7u8; 16];
//! let mut tx = Sender::new(CipherSuite::AesGcm128Sha256);
//! let mut rx = Receiver::new(CipherSuite::AesGcm128Sha256);
//! tx.add_key(KeyId(42), &base_key)?;
//! rx.add_key(KeyId(42), &base_key)?;
//!
//! // The metadata (hush: the clear codec prefix) is authenticated, not encrypted.
//! let frame = tx.encrypt(b"vp8-prefix", b"hello")?;
//! assert_eq!(rx.decrypt(b"vp8-prefix", &frame)?, b"hello");
//! // The same frame again is a replay.
//! assert!(rx.decrypt(b"vp8-prefix", &frame).is_err());
//! # Ok::<(), hush_sframe::Error>(())
//! ```
//!
//! Frame layout (§4.2): `header || ciphertext || tag`, with AAD = header ||
//! metadata (§4.4.3). Keys are derived per KID with HKDF (§4.4.2) and the
//! keyed cipher is kept, so a frame costs one AEAD call and no key schedule.

#![forbid(unsafe_code)]

mod aead;
mod context;
mod error;
mod header;
mod key;
mod replay;
mod suite;

pub use aead::{Aad, AuthFailed, FrameAead};
pub use context::{Receiver, Sender};
pub use error::Error;
pub use header::{Counter, EncodedHeader, Header, KeyId, MAX_HEADER_LEN};
pub use key::{DerivedKey, Secret, key_label, salt_label};
pub use replay::{DEFAULT_REPLAY_WINDOW, MAX_REPLAY_WINDOW, ReplayWindow, Verdict};
pub use suite::{ALL_SUITES, Backend, CipherSuite, MAX_TAG_LEN, NONCE_LEN};
