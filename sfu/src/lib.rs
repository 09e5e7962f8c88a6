//! hush-sfu: a forwarding-only selective forwarding unit for hush calls.
//!
//! Every participant holds one WebRTC connection (ICE + DTLS-SRTP) to the
//! SFU, publishes Opus audio and VP8 video, and receives every other
//! participant's tracks in its room. The SFU forwards RTP without reading
//! payloads: they are SFrame ciphertext.
//!
//! # Layers
//!
//! - [`routing`]: the routing core, without IO. Rooms, publishers, tracks,
//!   subscriptions, rate-limited key-frame requests and the active speaker,
//!   as [`Router`] methods that take events and `now` and return
//!   [`Decision`]s.
//! - [`Sfu`]: the API, and behind it the transport on str0m (sans-IO).
//!   The SFU is ICE-lite and runs str0m in RTP mode; each worker is one
//!   loop with one UDP socket that owns the router of its rooms and every
//!   peer of those rooms, feeds the router and carries out its decisions.
//!   A room lives on one worker ([`SfuConfig::workers`]). For clients
//!   whose UDP is blocked, each worker also takes ICE-TCP connections
//!   (RFC 6544, RFC 4571 framing) on a port of its own
//!   ([`SfuConfig::tcp_port`]); their packets enter the same loop.
//! - [`http`]: the control API of the standalone `hush-sfu` node.
//! - [`pump`]: draining str0m peers and their deadline heap, shared with
//!   the load generator's sans-IO client hub.
//!
//! # Driving it (what the signaling server does)
//!
//! ```no_run
//! # async fn demo(client_offer: String) -> Result<(), hush_sfu::Error> {
//! use hush_sfu::{ParticipantId, RoomId, Sfu, SfuConfig, SfuEvent};
//!
//! let sfu = Sfu::new(SfuConfig::default())?;
//! // The ids the signaling server gave (see `hush_proto::ids`).
//! let room: RoomId = "standup".parse().expect("a valid room id");
//! let alice = ParticipantId(7);
//! let mut events = sfu.add_participant(&room, &alice).await?;
//! let answer = sfu.handle_offer(&room, &alice, client_offer).await?;
//! // ... send `answer` to the client, then relay events both ways:
//! while let Some(event) = events.recv().await {
//!     match event {
//!         SfuEvent::Offer { sdp } => { /* to client; its answer to sfu.handle_answer */ }
//!         SfuEvent::IceCandidate { candidate } => { /* to client */ }
//!         SfuEvent::TrackAdded { .. } | SfuEvent::TrackRemoved { .. } => { /* announce */ }
//!         SfuEvent::ActiveSpeaker { participant } => { /* announce */ }
//!         SfuEvent::Closed { .. } => break,
//!         _ => {}
//!     }
//! }
//! sfu.remove_participant(&room, &alice).await.ok();
//! # let _ = answer; Ok(()) }
//! ```
//!
//! # Renegotiation and glare
//!
//! The client makes the first offer (its published tracks); the SFU
//! answers. When tracks to forward come or go, the SFU sends
//! [`SfuEvent::Offer`] and the client answers through
//! [`Sfu::handle_answer`]. The SFU has at most one offer outstanding and
//! **wins glare**: a client offer that arrives while an SFU offer awaits
//! its answer is refused with [`Error::Glare`]; the client answers the
//! SFU's offer (rolling its own back) and offers again afterwards. The SFU
//! never offers before it has answered the client's first offer, and sends
//! its offer only after the reply to a client offer, so a client that
//! applies each answer before handling the next event never sees glare
//! from the SFU's side.
//!
//! # RTCP
//!
//! - A subscriber's PLI or FIR becomes a PLI to the publisher, at most one
//!   per video track per [`RoutingConfig::key_frame_min_interval`] (500 ms
//!   by default; requests inside the interval are coalesced into one at
//!   its end). A new video subscription triggers one when its negotiation
//!   completes.
//! - NACK and retransmission: str0m's, for VP8 only (`nack`, `nack pli`;
//!   RTX on payload type 97, `apt=96`). A subscriber's NACKs are answered
//!   from str0m's send buffer on the RTX payload type (a subscriber that
//!   did not negotiate RTX gets no retransmissions); str0m also NACKs the
//!   publisher for the SFU's own losses. Opus is never retransmitted.
//!   Sender and receiver reports are str0m's too.
//! - Header extensions: only the audio level (RFC 6464) and the mid are
//!   negotiated, so there is no TWCC feedback or bandwidth estimation.
//!
//! # Audio redundancy
//!
//! The SFU offers and accepts RFC 2198 RED for audio (`audio/red`,
//! `111/111`, payload type 63 beside Opus 111) and keeps it only where the
//! client offers or answers it too. An audio packet that arrives on the
//! publisher's RED payload type goes to a subscriber that negotiated RED
//! as it came, on that subscriber's RED payload type; a subscriber without
//! RED gets the primary block alone (every block is SFrame ciphertext;
//! only the RED header is read) on its Opus payload type, and nothing
//! when the RED header does not parse or its primary is not Opus
//! (counted as `malformed_red` drops). Plain Opus packets go out as Opus
//! to everyone. RED packets are never retransmitted either.
//!
//! # Active speaker
//!
//! From the RFC 6464 audio-level header extension (the only signal when
//! payloads are encrypted): an exponential moving average per participant,
//! a threshold, a margin a challenger must exceed, and a minimum hold; see
//! [`SpeakerConfig`]. Changes go to every participant of the room as
//! [`SfuEvent::ActiveSpeaker`].
//!
//! # Capture
//!
//! With [`SfuConfig::capture`] set, every forwarded payload is written to
//! a file in the format documented in [`hush_proto::capture`] (which also
//! reads it back).
//!
//! # Vocabulary
//!
//! Rooms, participants, media kinds and ICE candidates are the protocol's
//! types ([`hush_proto`]), re-exported here: the SFU routes by the ids the
//! signaling server gave, so there is nothing to convert.
//!
//! # Features
//!
//! - `test-hooks`: `SfuConfig::tamper` and `TamperHook`, a tampering SFU
//!   for tests that check clients detect it: it may replace any forwarded
//!   payload and inject audio packets after one (`Tampering`). With a hook
//!   set, audio legs number their packets by a running counter, so that
//!   injected packets have sequence numbers of their own; video legs keep
//!   the publisher's numbering for NACKs, and get no injected packets. Off
//!   by default; production builds never enable it, and without it the
//!   forwarding path has no branch for it.
#![forbid(unsafe_code)]

mod capture;
mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
mod ids;
pub mod metrics;
pub mod pump;
pub mod register;
pub mod routing;
mod sfu;
mod tcp;
mod udp;
#[cfg(test)]
mod written_tests;

pub use error::Error;
pub use hush_proto::{IceCandidate, MediaKind, ParticipantId, RoomId};
pub use ids::{TrackId, TrackKey};
pub use metrics::Metrics;
pub use routing::{Decision, Router, RoutingConfig, SpeakerConfig};
pub use sfu::{CloseReason, ParticipantEvents, Sfu, SfuConfig, SfuEvent, workers_or_cores};
#[cfg(feature = "test-hooks")]
pub use sfu::{TamperFn, TamperHook, Tampering};
