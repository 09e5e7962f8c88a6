//! hush signaling: the `hush-server` core.
//!
//! Clients connect to `/v1/ws` and speak the JSON messages of the protocol
//! crate (`hush_proto`: [`ClientMessage`], [`ServerMessage`], re-exported
//! here). The first message is `join`, with a join token minted under the
//! server's secret ([`JoinToken`]). Members of a room then exchange
//! end-to-end envelopes through the server, which sets `from` itself and
//! cannot read them, and negotiate media with the SFU behind the
//! [`MediaRouter`] seam ([`EmbeddedSfu`] by default).
//!
//! The decisions are plain data, testable without a socket: [`Rooms`]
//! (membership and relay), [`authorize`] (version and token) and
//! [`RateLimiter`]. [`Server`] is the thin axum shell around them; with a
//! [`ServerTls`] it serves `wss://` and `https://` on its one port.

#![forbid(unsafe_code)]

mod admission;
pub mod cluster;
mod cluster_media;
pub mod config_file;
mod embedded;
mod error;
mod limits;
pub mod media;
mod metrics;
pub mod remote;
mod room;
mod server;
mod tls;
mod web;
mod ws;

pub use admission::{ConnectionCaps, ConnectionRefusal, ConnectionSlot};
pub use cluster_media::ClusterMedia;
pub use embedded::EmbeddedSfu;
pub use error::Error;
pub use hush_sfu::metrics::{process_cpu_seconds, thread_cpu_seconds};
pub use limits::{Limits, RateLimiter, RateVerdict};
pub use media::{MediaRouter, MediaSink, NoMedia, SinkClosed};
pub use remote::{RemoteNode, RemoteSfu};
pub use room::{Admission, Delivery, JoinRequest, Rooms, authorize};
pub use server::{Server, ServerConfig, ServerHandle, run_until};
pub use tls::{ServerTls, TlsError, node_client_config};
// The protocol's vocabulary, re-exported so that server code and its tests
// name one set of types.
pub use hush_proto::{
    ClientMessage, CloseReason, DisplayName, ErrorCode, IceCandidate, JoinToken, MIN_SECRET_LEN,
    MediaKind, Member, Opaque, PROTOCOL_VERSION, ParticipantId, RoomId, ServerMessage,
    ServerSecret, parse_duration,
};
