//! hush-client: the client side of a hush call, without any server code.
//!
//! - [`call`]: the client driver. One task owns the call's [`session`],
//!   its signaling connection ([`signal`]) and its WebRTC connection to the
//!   SFU ([`transport`]); the application says what media it sends and what
//!   it does with what it receives through the [`call::Media`] trait.
//! - [`session`]: one participant's call without sockets: signaling
//!   messages, e2ee key agreement (`hush_e2ee`), frame encryption
//!   ([`frame`]: the codec-aware clear prefix and SFrame contexts).
//! - [`participant`]: a full participant on the driver: Opus audio
//!   ([`audio`]), VP8 passed through from IVF ([`video`]), decoding and
//!   recording. `hush call`, `hush demo` and the end-to-end tests run it.
//! - [`jitter`]: the receive-side playout buffer (reordering, delay that
//!   adapts to jitter, which slots to conceal).
//!
//! Depends on the protocol crate (`hush_proto`), `hush_e2ee`,
//! `hush_sframe` and webrtc-rs; never on the server or the SFU.

#![forbid(unsafe_code)]

pub mod audio;
pub mod call;
mod error;
pub mod frame;
pub mod jitter;
pub mod participant;
pub mod session;
pub mod setup;
pub mod signal;
pub mod transport;
pub mod video;

pub use error::{CertificateProblem, Error, IvfError, SignalingError, TransportError};
