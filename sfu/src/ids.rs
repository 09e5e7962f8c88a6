//! Identifiers the SFU routes by. Rooms and participants are the protocol's
//! ([`hush_proto::RoomId`], [`hush_proto::ParticipantId`]): the SFU routes
//! by the ids the signaling server gave, so no mapping exists (see
//! [`hush_proto::ids`]). Track ids are chosen by the publishing client.

use core::fmt;

use serde::{Deserialize, Serialize};

use hush_proto::{ParticipantId, RoomId};

/// A published track, as named by its publisher (the MSID track id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TrackId(pub String);

impl fmt::Display for TrackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for TrackId {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<String> for TrackId {
    fn from(s: String) -> Self {
        Self(s)
    }
}

/// One published track in one room: who publishes it, and its id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackKey {
    /// The room the track is published in.
    pub room: RoomId,
    /// The participant publishing it.
    pub publisher: ParticipantId,
    /// The publisher's id for the track.
    pub track: TrackId,
}
