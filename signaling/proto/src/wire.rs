//! The wire protocol: JSON text frames over a WebSocket at `/v1/ws`.
//!
//! Every frame is one JSON object with a `type` field naming the message
//! (`snake_case`). [`ClientMessage`] is what a client sends, [`ServerMessage`]
//! what the server sends. Opaque bytes (e2ee key packages and envelopes)
//! travel as standard base64 strings with padding ([`Opaque`]). The checked-in
//! examples in `signaling/proto/tests/wire/` are the documented wire format.

use core::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::{DisplayName, ParticipantId, RoomId};
use crate::token::JoinToken;

/// The protocol version this crate speaks; a `join` with another is refused.
pub const PROTOCOL_VERSION: u32 = 1;

/// A message from a client to the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ClientMessage {
    /// Asks to join a room; must be the first message on a connection.
    Join {
        /// Protocol version the client speaks ([`PROTOCOL_VERSION`]).
        protocol: u32,
        /// Room to join.
        room: RoomId,
        /// Display name shown to the other members.
        name: DisplayName,
        /// Join token minted for this room and name.
        token: JoinToken,
        /// The client's e2ee key package, relayed unread to the other members.
        key_package: Opaque,
    },
    /// Leaves the room; the server closes the connection afterwards.
    Leave,
    /// An SDP offer from the client to the SFU.
    SdpOffer {
        /// The session description.
        sdp: String,
    },
    /// An SDP answer from the client to an SFU-initiated offer (renegotiation).
    SdpAnswer {
        /// The session description.
        sdp: String,
    },
    /// A trickled ICE candidate from the client to the SFU.
    IceCandidate {
        /// The candidate.
        candidate: IceCandidate,
    },
    /// An end-to-end envelope for one other member; the server adds `from`.
    Envelope {
        /// The addressee.
        to: ParticipantId,
        /// Ciphertext the server cannot read.
        payload: Opaque,
    },
    /// Application-level keepalive; answered with [`ServerMessage::Pong`].
    Ping {
        /// Echoed back in the pong.
        #[serde(default)]
        nonce: u64,
    },
}

/// A message from the server to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerMessage {
    /// The join succeeded.
    Joined {
        /// Protocol version of the server.
        protocol: u32,
        /// The room joined.
        room: RoomId,
        /// The participant id the server gave this connection.
        you: ParticipantId,
        /// The other members already in the room, oldest first.
        members: Vec<Member>,
    },
    /// Someone joined the room.
    MemberJoined {
        /// The newcomer.
        member: Member,
    },
    /// Someone left the room (leave, disconnect or removal).
    MemberLeft {
        /// Who left.
        id: ParticipantId,
    },
    /// An SDP offer from the SFU (SFU-initiated renegotiation).
    SdpOffer {
        /// The session description.
        sdp: String,
    },
    /// The SFU's SDP answer to the client's offer.
    SdpAnswer {
        /// The session description.
        sdp: String,
    },
    /// A trickled ICE candidate from the SFU.
    IceCandidate {
        /// The candidate.
        candidate: IceCandidate,
    },
    /// An end-to-end envelope from another member.
    Envelope {
        /// The sender, as the server knows it (never the client's claim).
        from: ParticipantId,
        /// The addressee (the receiving client).
        to: ParticipantId,
        /// Ciphertext the server cannot read.
        payload: Opaque,
    },
    /// A request was refused; the connection stays open unless a
    /// [`ServerMessage::Closing`] follows.
    Error {
        /// Stable, machine-readable code.
        code: ErrorCode,
        /// Human-readable explanation; not stable.
        message: String,
    },
    /// Answer to [`ClientMessage::Ping`].
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// The server is about to close this connection.
    Closing {
        /// Why.
        reason: CloseReason,
    },
    /// The SFU now forwards a member's track to this client (sent before
    /// the `sdp_offer` that carries it): frames on the track whose MSID
    /// stream id is `stream_id` come from `publisher`.
    TrackAdded {
        /// Who publishes the track.
        publisher: ParticipantId,
        /// Audio or video.
        kind: MediaKind,
        /// The MSID stream id of the track on this client's connection.
        stream_id: String,
    },
    /// The SFU stopped forwarding that track (its publisher stopped or left).
    TrackRemoved {
        /// Who published it.
        publisher: ParticipantId,
        /// The MSID stream id it had.
        stream_id: String,
    },
    /// The room's active speaker changed (from RFC 6464 audio levels).
    ActiveSpeaker {
        /// The speaker, if anyone holds the floor.
        participant: Option<ParticipantId>,
    },
    /// The SFU that carried this client's media is gone and the room's
    /// media now goes to another: the client closes its media connection
    /// and offers a new one (`sdp_offer`). Membership and keys are
    /// unchanged.
    MediaMoved,
}

/// The kind of a media track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    /// Opus audio.
    Audio,
    /// VP8 video.
    Video,
}

impl MediaKind {
    /// The wire spelling (`audio`, `video`), also used in metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Audio => "audio",
            Self::Video => "video",
        }
    }
}

impl fmt::Display for MediaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A room member as the other members see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Server-assigned participant id.
    pub id: ParticipantId,
    /// Display name from the join token.
    pub name: DisplayName,
    /// The member's e2ee key package, as it sent it.
    pub key_package: Opaque,
}

/// An ICE candidate as WebRTC's `RTCIceCandidateInit` carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceCandidate {
    /// The `candidate:` attribute line (empty for end of candidates).
    pub candidate: String,
    /// The media stream identification tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    /// Index of the m-line the candidate belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_m_line_index: Option<u16>,
}

/// Stable error codes of [`ServerMessage::Error`] (and `/metrics` reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The frame is not JSON.
    MalformedJson,
    /// The JSON is not an object with a string `type`.
    MissingType,
    /// The `type` names no known message.
    UnknownType,
    /// A field is missing or has the wrong type or value.
    InvalidField,
    /// A binary frame; the protocol is text only.
    BinaryFrame,
    /// The `join` names another protocol version.
    UnsupportedProtocol,
    /// The `join` carries no token.
    TokenMissing,
    /// The token is not in the token format.
    TokenMalformed,
    /// The token's MAC does not verify under the server secret.
    TokenForged,
    /// The token is past its expiry.
    TokenExpired,
    /// The token was minted for another room.
    TokenWrongRoom,
    /// The token was minted for another display name.
    TokenWrongName,
    /// A message that needs a joined connection came first.
    NotJoined,
    /// A second `join` on a connection that already joined.
    AlreadyJoined,
    /// The envelope's addressee is not a member of the room.
    UnknownRecipient,
    /// The envelope's addressee has too much waiting (a flood of
    /// envelopes to it): this one was not relayed.
    RecipientBusy,
    /// The room has its maximum number of participants.
    RoomFull,
    /// The server has its maximum number of rooms.
    ServerFull,
    /// Too many messages per second.
    RateLimited,
    /// No `join` arrived in time.
    JoinTimeout,
    /// No SFU is available for media on this server.
    MediaUnavailable,
    /// The SFU refused the request.
    MediaFailed,
    /// The SFU closed this participant's media connection (it never came
    /// up, or it failed): no media flows on it any more. Sent unasked.
    MediaClosed,
    /// The server is one node of a cluster and could not reach the
    /// cluster's shared state (Redis) to find the room's node: try again.
    ClusterUnavailable,
    /// A message over the size limit (only a metrics reason: the socket is
    /// closed with code 1009 instead of getting an error message).
    MessageTooBig,
}

impl ErrorCode {
    /// Every code, in declaration order (for metrics).
    pub const ALL: [ErrorCode; 25] = [
        Self::MalformedJson,
        Self::MissingType,
        Self::UnknownType,
        Self::InvalidField,
        Self::BinaryFrame,
        Self::UnsupportedProtocol,
        Self::TokenMissing,
        Self::TokenMalformed,
        Self::TokenForged,
        Self::TokenExpired,
        Self::TokenWrongRoom,
        Self::TokenWrongName,
        Self::NotJoined,
        Self::AlreadyJoined,
        Self::UnknownRecipient,
        Self::RecipientBusy,
        Self::RoomFull,
        Self::ServerFull,
        Self::RateLimited,
        Self::JoinTimeout,
        Self::MediaUnavailable,
        Self::MediaFailed,
        Self::MediaClosed,
        Self::ClusterUnavailable,
        Self::MessageTooBig,
    ];

    /// The wire spelling, e.g. `"token_expired"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedJson => "malformed_json",
            Self::MissingType => "missing_type",
            Self::UnknownType => "unknown_type",
            Self::InvalidField => "invalid_field",
            Self::BinaryFrame => "binary_frame",
            Self::UnsupportedProtocol => "unsupported_protocol",
            Self::TokenMissing => "token_missing",
            Self::TokenMalformed => "token_malformed",
            Self::TokenForged => "token_forged",
            Self::TokenExpired => "token_expired",
            Self::TokenWrongRoom => "token_wrong_room",
            Self::TokenWrongName => "token_wrong_name",
            Self::NotJoined => "not_joined",
            Self::AlreadyJoined => "already_joined",
            Self::UnknownRecipient => "unknown_recipient",
            Self::RecipientBusy => "recipient_busy",
            Self::RoomFull => "room_full",
            Self::ServerFull => "server_full",
            Self::RateLimited => "rate_limited",
            Self::JoinTimeout => "join_timeout",
            Self::MediaUnavailable => "media_unavailable",
            Self::MediaFailed => "media_failed",
            Self::MediaClosed => "media_closed",
            Self::ClusterUnavailable => "cluster_unavailable",
            Self::MessageTooBig => "message_too_big",
        }
    }

    /// Position in [`ErrorCode::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the server closes a connection ([`ServerMessage::Closing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CloseReason {
    /// The server is shutting down.
    ServerShutdown,
    /// The client sent `leave`.
    Left,
    /// The join failed or did not arrive in time.
    JoinFailed,
    /// Nothing was received for the idle timeout.
    IdleTimeout,
    /// The client kept exceeding the message rate.
    RateLimited,
    /// The client did not read its messages fast enough.
    TooSlow,
    /// The client sent a message over the size limit (WebSocket close code 1009 follows).
    MessageTooBig,
    /// Another connection joined the same room under the same name (the
    /// same token holder, e.g. after a network change): it takes this
    /// member's place.
    Replaced,
    /// The node carrying the room's media is gone; the room's media is
    /// placed anew. The client joins again (as after `server_shutdown`).
    MediaMoved,
}

/// Opaque bytes the server relays without reading; base64 on the wire.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Opaque(pub Vec<u8>);

impl Opaque {
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Opaque {
    // Length only: the content is someone else's ciphertext.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Opaque({} bytes)", self.0.len())
    }
}

impl Serialize for Opaque {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Opaque {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        STANDARD
            .decode(s.as_bytes())
            .map(Opaque)
            .map_err(|_| serde::de::Error::custom("invalid base64"))
    }
}

/// The `type` names of [`ClientMessage`], to tell "unknown type" from "bad fields".
const CLIENT_TYPES: [&str; 7] = [
    "join",
    "leave",
    "sdp_offer",
    "sdp_answer",
    "ice_candidate",
    "envelope",
    "ping",
];

impl ClientMessage {
    /// Parses one text frame, classifying what is wrong with a bad one.
    pub fn parse(text: &str) -> Result<Self, ErrorCode> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|_| ErrorCode::MalformedJson)?;
        let Some(kind) = value.get("type").and_then(serde_json::Value::as_str) else {
            return Err(ErrorCode::MissingType);
        };
        if !CLIENT_TYPES.contains(&kind) {
            return Err(ErrorCode::UnknownType);
        }
        serde_json::from_value(value).map_err(|_| ErrorCode::InvalidField)
    }
}

impl ServerMessage {
    /// The error message for `code` with a human explanation.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            code,
            message: message.into(),
        }
    }

    /// Serializes to a JSON text frame.
    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: no maps with non-string keys,
        // no custom serializers that error.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_classifies_bad_input() {
        assert_eq!(ClientMessage::parse("{"), Err(ErrorCode::MalformedJson));
        assert_eq!(ClientMessage::parse("[1]"), Err(ErrorCode::MissingType));
        assert_eq!(
            ClientMessage::parse(r#"{"type":"nope"}"#),
            Err(ErrorCode::UnknownType)
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"envelope","to":"x","payload":""}"#),
            Err(ErrorCode::InvalidField)
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"leave"}"#),
            Ok(ClientMessage::Leave)
        );
    }

    #[test]
    fn every_client_type_is_known() {
        for t in CLIENT_TYPES {
            let r = ClientMessage::parse(&format!(r#"{{"type":"{t}"}}"#));
            assert_ne!(r, Err(ErrorCode::UnknownType), "{t}");
        }
    }

    #[test]
    fn error_codes_index_matches_all() {
        for (i, c) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
            let json = serde_json::to_string(c).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
        }
    }

    #[test]
    fn room_and_name_validation() {
        assert!("team-1.a_b".parse::<RoomId>().is_ok());
        assert!("".parse::<RoomId>().is_err());
        assert!("a b".parse::<RoomId>().is_err());
        assert!("x".repeat(65).parse::<RoomId>().is_err());
        assert!("Zoë K.".parse::<DisplayName>().is_ok());
        assert!("a\nb".parse::<DisplayName>().is_err());
    }
}
