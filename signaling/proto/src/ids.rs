//! Identifiers, and how the three id spaces of a call map onto each other.
//!
//! - **Signaling id** ([`ParticipantId`], `p7` in logs, `7` on the wire):
//!   the server numbers every connection that joins, unique for the
//!   server's lifetime. Every message names members by it: `member_joined`,
//!   `envelope` `to`/`from`, `track_added` `publisher`, `active_speaker`.
//! - **SFU id**: the SFU routes by the same [`ParticipantId`] and
//!   [`RoomId`] the signaling server gave; the mapping is the identity, so
//!   no conversion exists. The SFU names the streams it forwards by the
//!   publisher ([`stream_id`]), and `track_added` tells each subscriber
//!   which publisher a stream id stands for.
//! - **e2ee id** (`hush_e2ee::ParticipantId`, 16 random bytes): chosen by
//!   each member and signed inside its key package; it names who holds
//!   which media key and sits in every SFrame KID. A client learns the
//!   pair (signaling id, e2ee id) from the key package a member joined
//!   with (`joined` / `member_joined`), and only then: the server never
//!   sees e2ee ids in clear text other than inside those packages.

use core::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::Error;

/// Longest room id, in bytes.
pub const MAX_ROOM_LEN: usize = 64;

/// Longest display name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// A server-assigned participant id, unique for the server's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ParticipantId(pub u64);

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// A room id: 1 to [`MAX_ROOM_LEN`] bytes of ASCII letters, digits, `-`, `_`, `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RoomId(String);

impl RoomId {
    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RoomId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let ok = !s.is_empty()
            && s.len() <= MAX_ROOM_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(Error::InvalidRoomId)
        }
    }
}

impl<'de> Deserialize<'de> for RoomId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A display name: 1 to [`MAX_NAME_LEN`] bytes of UTF-8 without control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct DisplayName(String);

impl DisplayName {
    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DisplayName {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let ok = !s.is_empty() && s.len() <= MAX_NAME_LEN && !s.chars().any(char::is_control);
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(Error::InvalidDisplayName)
        }
    }
}

impl<'de> Deserialize<'de> for DisplayName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl ParticipantId {
    /// Parses the wire/path form: the number in decimal, with or without the `p` of logs.
    pub fn parse(text: &str) -> Option<Self> {
        text.strip_prefix('p')
            .unwrap_or(text)
            .parse()
            .ok()
            .map(Self)
    }
}

/// The MSID stream id under which the SFU forwards `publisher`'s tracks
/// to every subscriber (`p7` for participant 7).
pub fn stream_id(publisher: ParticipantId) -> String {
    publisher.to_string()
}
