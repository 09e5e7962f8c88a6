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
//! - [`Sfu`]: the transport on webrtc-rs 0.21, one peer connection per
//!   participant. It feeds the router and carries out its decisions; a
//!   different transport (str0m, or `rtc` driven directly) would replace
//!   this module only.
//! - [`http`]: the control API of the standalone `hush-sfu` node.
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
//! - NACK: webrtc-rs's default interceptors on every SFU connection. On
//!   the subscriber leg the NACK responder answers from a 1,024-packet
//!   buffer per stream; on the publisher leg the NACK generator asks the
//!   publisher for the SFU's own losses. Negotiated for VP8 (`nack`,
//!   `nack pli`), not for Opus. Sender and receiver reports, and TWCC
//!   feedback (receiver side), come from the same defaults.
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
//!   for tests that check clients detect it. Off by default; production
//!   builds never enable it, and without it the forwarding path has no
//!   branch for it.
#![forbid(unsafe_code)]

mod capture;
mod error;
pub mod http;
mod ids;
pub mod metrics;
pub mod routing;
pub mod setup;
mod sfu;
mod udp;

pub use error::Error;
pub use hush_proto::{IceCandidate, MediaKind, ParticipantId, RoomId};
pub use ids::{TrackId, TrackKey};
pub use metrics::Metrics;
pub use routing::{Decision, Router, RoutingConfig, SpeakerConfig};
pub use sfu::{
    CloseReason, ParticipantEvents, Sfu, SfuConfig, SfuEvent, Transport, workers_or_cores,
};
#[cfg(feature = "test-hooks")]
pub use sfu::{TamperFn, TamperHook};
