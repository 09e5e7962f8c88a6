//! hush-proto: the hush wire protocol as plain data and pure functions.
//!
//! Everything two hush programs must agree on, and nothing that does IO:
//! the signaling messages of PROTOCOL.md §9 ([`ClientMessage`],
//! [`ServerMessage`]) with their error and close codes, join tokens (§10,
//! [`JoinToken`]), the ids and how they map onto each other ([`ids`]), the
//! media session's codec, payload-type and header-extension constants
//! (§11, [`media`]), and the SFU's ciphertext capture format ([`capture`]).
//! No tokio, no axum, no webrtc: the server (`hush-signaling`), the SFU
//! (`hush-sfu`) and the client (`hush-client`) all depend on this crate,
//! and it on none of them.
//!
//! ```
//! use hush_proto::{ClientMessage, JoinToken, ServerSecret, PROTOCOL_VERSION};
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
//!     key_package: hush_proto::Opaque(vec![1, 2, 3]),
//! };
//! let text = serde_json::to_string(&join)?;
//! assert!(text.starts_with(r#"{"type":"join","protocol":1,"room":"standup""#));
//! assert_eq!(ClientMessage::parse(&text), Ok(join));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

pub mod capture;
mod error;
pub mod ids;
pub mod media;
pub mod red;
mod token;
pub mod wire;

pub use error::Error;
pub use ids::{DisplayName, MAX_NAME_LEN, MAX_ROOM_LEN, ParticipantId, RoomId, stream_id};
pub use token::{ControlToken, JoinToken, MIN_SECRET_LEN, ServerSecret, parse_duration};
pub use wire::{
    ClientMessage, CloseReason, ErrorCode, IceCandidate, MediaKind, Member, Opaque,
    PROTOCOL_VERSION, ServerMessage,
};
