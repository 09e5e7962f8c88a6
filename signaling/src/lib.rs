//! hush signaling: the WebSocket wire protocol and the `hush-server` core.
//!
//! Clients connect to `/v1/ws` and speak JSON messages ([`ClientMessage`],
//! [`ServerMessage`], see [`protocol`]). The first message is `join`, with a
//! join token minted under the server's secret ([`JoinToken`]). Members of a
//! room then exchange end-to-end envelopes through the server, which sets
//! `from` itself and cannot read them, and negotiate media with the SFU
//! behind the [`MediaRouter`] seam.
//!
//! The decisions are plain data, testable without a socket: [`Rooms`]
//! (membership and relay), [`authorize`] (version and token) and
//! [`RateLimiter`]. [`Server`] is the thin axum shell around them.
//!
//! ```
//! use hush_signaling::{ClientMessage, JoinToken, ServerSecret, PROTOCOL_VERSION};
//!
//! let secret = ServerSecret::new(b"0123456789abcdef0123456789abcdef".to_vec())?;
//! let room = "standup".parse()?;
//! let name = "Ann".parse()?;
//! let token = JoinToken::mint(&secret, &room, &name, u64::MAX);
//! let join = ClientMessage::Join {
//!     protocol: PROTOCOL_VERSION,
//!     room,
//!     name,
//!     token,
//!     key_package: hush_signaling::Opaque(vec![1, 2, 3]),
//! };
//! let text = serde_json::to_string(&join)?;
//! assert!(text.starts_with(r#"{"type":"join","protocol":1,"room":"standup""#));
//! assert_eq!(ClientMessage::parse(&text), Ok(join));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

mod embedded;
mod error;
mod limits;
pub mod media;
mod metrics;
pub mod protocol;
mod room;
mod server;
mod token;

pub use embedded::EmbeddedSfu;
pub use error::Error;
pub use limits::{Limits, RateLimiter, RateVerdict};
pub use media::{MediaEvent, MediaRouter, MediaSink, NoMedia, SinkClosed};
pub use metrics::{process_cpu_seconds, thread_cpu_seconds};
pub use protocol::{
    ClientMessage, CloseReason, DisplayName, ErrorCode, IceCandidate, MediaKind, Member, Opaque,
    PROTOCOL_VERSION, ParticipantId, RoomId, ServerMessage,
};
pub use room::{Admission, Delivery, JoinRequest, Rooms, authorize};
pub use server::{Server, ServerConfig, ServerHandle, run_until};
pub use token::{JoinToken, MIN_SECRET_LEN, ServerSecret, parse_duration};
