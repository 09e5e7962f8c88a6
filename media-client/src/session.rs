//! One participant's call, without sockets: signaling messages, e2ee key
//! agreement and frame encryption driven by events and the time. The async
//! driver (WebSocket, WebRTC) feeds it and carries out what it returns.
//!
//! Two kinds of participant id meet here: the signaling server's numeric
//! id (who a message or an RTP stream is from, as the server says; the SFU
//! uses the same id) and the e2ee participant id inside each member's
//! signed key package (who holds which key). The private `Roster` keeps the mapping,
//! learned from the key package each member joined with; it is the only
//! place the two meet (see `hush_proto::ids`).

use std::collections::{BTreeMap, HashMap, VecDeque};

use hush_e2ee::{
    Config, EnvelopeHeader, Group, Identity, KeyOutlook, KeyPackage, LocalMember, Millis, Output,
    PublicIdentity, RoomId, SafetyNumber,
};
use hush_proto::{
    ClientMessage, CloseReason, DisplayName, ErrorCode, IceCandidate, JoinToken, MediaKind, Member,
    Opaque, PROTOCOL_VERSION, ParticipantId as SigId, ServerMessage,
};

use crate::Error;
use crate::frame::{Codec, FrameCrypto};

/// How long a frame whose key has not arrived yet is kept (ms).
pub const HOLD_MS: u64 = 1_000;

/// How many such frames are kept at most (four senders' worth).
pub const HOLD_MAX: usize = 512;

/// How many of them may come from one sender: a second of audio and
/// video (50 + 30 frames/s) with room to spare, and frames forged on one
/// member's stream cannot push out another member's held frames.
pub const HOLD_PER_SENDER: usize = 128;

/// A held frame that never opened counts as lost to a key change if its
/// sender's first key has not reached us yet, or if the membership changed
/// within this long (ms) before it arrived or while it was held: keys were
/// on the move, and its key came too late. Otherwise
/// nothing was changing, its key was never coming, and it counts as a
/// failure (`unknown_key`): a forged KID cannot pass for a lost frame.
pub const CHANGE_WINDOW_MS: u64 = 5_000;

/// How many recent audio timestamps are remembered per sender, so a
/// redundant copy (RED) of a frame already opened is not opened again.
const RECENT_AUDIO: usize = 64;

/// Where a media payload sat in its RTP packet, as the transport saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rtp {
    /// The packet's RTP timestamp.
    pub timestamp: u32,
    /// The payload is RFC 2198 RED: the frame and the ones before it.
    pub red: bool,
}

/// What the call knows of a decrypted frame besides its bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameInfo {
    /// Its RTP timestamp, when it came over RTP.
    pub timestamp: Option<u32>,
    /// It was opened from a redundant copy in a later packet (RED): its
    /// own packet had not arrived.
    pub recovered: bool,
}

/// A remote member as this client knows it.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Signaling id.
    pub id: SigId,
    /// Display name.
    pub name: String,
    /// e2ee participant id from its key package.
    pub e2ee: hush_e2ee::ParticipantId,
    /// Its identity key.
    pub identity: PublicIdentity,
}

/// What the driver must do, or may show.
#[derive(Debug)]
#[non_exhaustive]
pub enum CallEvent {
    /// Send this to the signaling server.
    Send(ClientMessage),
    /// A decrypted frame from a member.
    Frame {
        /// Signaling id of the sender.
        from: SigId,
        /// Codec of the frame.
        codec: Codec,
        /// The decrypted encoded frame (clear prefix included).
        frame: Vec<u8>,
        /// Its timestamp, and whether it was recovered from redundancy.
        info: FrameInfo,
    },
    /// We are in the room.
    Joined {
        /// Our signaling id.
        you: SigId,
    },
    /// A member arrived (or was there when we joined). It is
    /// *unconfirmed* until [`CallEvent::PeerConfirmed`]: its key package
    /// alone, which a server can replay, does not show it is there.
    PeerJoined(Peer),
    /// A member proved it is live: the first envelope from it
    /// authenticated (PROTOCOL.md §5.3). Only now does it get our key.
    PeerConfirmed(Peer),
    /// A member left.
    PeerLeft(Peer),
    /// Something the user should know; the call goes on.
    Warning(Warning),
    /// The server refused a request.
    ServerError {
        /// The server's error code.
        code: ErrorCode,
        /// Its explanation.
        message: String,
    },
    /// The server is closing the connection.
    Closing(CloseReason),
    /// The room's media moved to another SFU: make a new media
    /// connection and offer it (PROTOCOL.md §11).
    MediaMoved,
    /// The SFU's answer to our offer.
    SdpAnswer(String),
    /// An SFU-initiated offer to answer.
    SdpOffer(String),
    /// An ICE candidate from the SFU.
    IceCandidate(IceCandidate),
    /// Frames on the track with this MSID stream id come from `publisher`.
    TrackAdded {
        /// Signaling id of the publisher.
        publisher: SigId,
        /// Audio or video.
        kind: MediaKind,
        /// MSID stream id.
        stream_id: String,
    },
    /// That track is gone.
    TrackRemoved {
        /// Signaling id of the publisher.
        publisher: SigId,
        /// MSID stream id.
        stream_id: String,
    },
    /// The room's active speaker.
    ActiveSpeaker(Option<SigId>),
}

/// Something that went wrong without ending the call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Warning {
    /// The server sent a second `joined`; it was ignored.
    #[error("a second `joined` was ignored")]
    SecondJoined,
    /// A member's key package did not verify, or the group refused it
    /// (at our join or later).
    #[error("member {id} refused: {error}")]
    MemberRefused {
        /// The member's signaling id.
        id: SigId,
        /// Why.
        error: Error,
    },
    /// Rekeying after a departure failed.
    #[error("rekey after a departure failed: {0}")]
    Rekey(hush_e2ee::Error),
    /// An envelope did not open or was refused.
    #[error("envelope from {from} refused: {error}")]
    EnvelopeRefused {
        /// The sender, as the server says.
        from: SigId,
        /// Why.
        error: hush_e2ee::Error,
    },
    /// An envelope's claimed sender is not the member the server says sent it.
    #[error("envelope from {from} does not match its sender")]
    EnvelopeSenderMismatch {
        /// The sender, as the server says.
        from: SigId,
    },
    /// The e2ee layer addressed a member we have no signaling id for.
    #[error("no signaling id for e2ee member {0}")]
    NoSignalingId(hush_e2ee::ParticipantId),
    /// A key could not be installed in the frame layer.
    #[error("key event failed: {0}")]
    KeyEvent(Error),
    /// The server refused a request after we joined.
    #[error("server: {code}: {message}")]
    Server {
        /// The server's error code.
        code: ErrorCode,
        /// Its explanation.
        message: String,
    },
    /// The signaling connection sent something unreadable.
    #[error("signaling: {0}")]
    Signaling(crate::SignalingError),
    /// The media connection refused an SDP or candidate.
    #[error("media: {0}")]
    Media(crate::TransportError),
    /// The media connection failed (ICE or DTLS) and could not be brought
    /// back: no frames flow any more.
    #[error("media connection failed")]
    MediaFailed,
    /// The media connection was lost; ICE restarts are under way.
    #[error("media connection lost; restarting ICE")]
    MediaInterrupted,
    /// The media connection is back after being lost.
    #[error("media connection restored")]
    MediaRestored,
    /// The server moved the room's media to another SFU; a new media
    /// connection is being set up (keys and membership unchanged).
    #[error("the room's media moved to another server; reconnecting media")]
    MediaMoved,
}

/// Counters a call keeps.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Frames sealed.
    pub sent: u64,
    /// Frames of ours not sent: a VP8 frame shorter than its clear prefix
    /// (a broken source), which no receiver could open.
    pub unsendable: u64,
    /// Frames that arrived.
    pub received: u64,
    /// Frames that decrypted.
    pub decrypted: u64,
    /// Frames dropped, by reason.
    pub failed: BTreeMap<&'static str, u64>,
    /// Frames that waited for their key and then decrypted.
    pub held_then_decrypted: u64,
    /// Frames dropped because their key never came in time (lost to key changes).
    pub lost_to_key_change: u64,
    /// Frames a member sealed before it saw our join, under a key a
    /// newcomer is never given (PROTOCOL.md §5.3): in flight when we
    /// joined. Dropped unopened; neither a failure nor a loss.
    pub before_join: u64,
    /// Frames that arrived on a stream no `track_added` named.
    pub unattributed: u64,
    /// Frames from a member that had already left: media still in flight
    /// when `member_left` arrived (media and signaling take different
    /// paths). Dropped unopened; not a failure.
    pub after_leave: u64,
    /// Audio frames opened from a redundant copy (RED) because their own
    /// packet had not arrived (counted in `decrypted` too).
    pub recovered: u64,
    /// Audio frames whose own packet arrived after a redundant copy had
    /// already been opened: skipped unopened.
    pub duplicate: u64,
}

struct Held {
    from: SigId,
    codec: Codec,
    data: Vec<u8>,
    info: FrameInfo,
    since: Millis,
}

/// The call state of one participant.
pub struct Session {
    local: Option<LocalMember>,
    public: PublicIdentity,
    room: RoomId,
    config: Config,
    group: Option<Group>,
    crypto: FrameCrypto,
    you: Option<SigId>,
    roster: Roster,
    /// Which member each forwarded stream (MSID stream id) comes from, as `track_added` said.
    streams: HashMap<String, SigId>,
    held: VecDeque<Held>,
    /// Per sender, the timestamps of audio frames opened lately, and
    /// whether each was opened from a redundant copy.
    recent_audio: HashMap<SigId, VecDeque<(u32, bool)>>,
    /// Per sender, the RTP timestamp of the first audio packet heard: the
    /// copies that packet carries are of frames sent before this member's
    /// stream began, not lost ones, and are not opened.
    first_audio: HashMap<SigId, u32>,
    stats: Stats,
    key_log: Option<Vec<hush_e2ee::KeyEvent>>,
}

impl core::fmt::Debug for Session {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Session")
            .field("room", &self.room)
            .field("you", &self.you)
            .field("peers", &self.roster.by_sig.len())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Prepares to join `room`: makes the key package and the `join` message.
    pub fn new(
        identity: Identity,
        room: &str,
        name: &str,
        token: &str,
        now: Millis,
        config: Config,
    ) -> Result<(Self, ClientMessage), Error> {
        let room_id = RoomId(room.to_owned());
        let public = identity.public();
        let local = LocalMember::new(identity, room_id.clone(), now)?;
        let join = ClientMessage::Join {
            protocol: PROTOCOL_VERSION,
            room: room.parse()?,
            name: name.parse::<DisplayName>()?,
            token: JoinToken::from(token.to_owned()),
            key_package: Opaque(local.key_package().to_bytes()),
        };
        let session = Self {
            local: Some(local),
            public,
            room: room_id,
            config,
            group: None,
            crypto: FrameCrypto::new(),
            you: None,
            roster: Roster::default(),
            streams: HashMap::new(),
            held: VecDeque::new(),
            recent_audio: HashMap::new(),
            first_audio: HashMap::new(),
            stats: Stats::default(),
            key_log: None,
        };
        Ok((session, join))
    }

    /// Starts keeping every key event (for tests that play a removed
    /// member trying every key it ever held). Off by default: keys are
    /// otherwise only in the SFrame contexts.
    pub fn keep_key_log(&mut self) {
        self.key_log.get_or_insert_with(Vec::new);
    }

    /// The key events kept since [`Session::keep_key_log`].
    pub fn key_log(&self) -> &[hush_e2ee::KeyEvent] {
        self.key_log.as_deref().unwrap_or(&[])
    }

    /// Our signaling id, once joined.
    pub fn you(&self) -> Option<SigId> {
        self.you
    }

    /// The members we share the room with.
    pub fn peers(&self) -> impl Iterator<Item = &Peer> {
        self.roster.by_sig.values()
    }

    /// Our identity.
    pub fn identity(&self) -> &PublicIdentity {
        &self.public
    }

    /// Counters so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Whether a member is confirmed (see [`CallEvent::PeerConfirmed`]).
    pub fn is_confirmed(&self, peer: SigId) -> bool {
        let e2ee = self.roster.by_sig.get(&peer).map(|p| p.e2ee);
        match (self.group.as_ref(), e2ee) {
            (Some(g), Some(e2ee)) => g.is_confirmed(e2ee),
            _ => false,
        }
    }

    /// The safety number with a member.
    pub fn safety_number(&self, peer: SigId) -> Option<SafetyNumber> {
        Some(SafetyNumber::new(
            &self.public,
            &self.roster.by_sig.get(&peer)?.identity,
        ))
    }

    /// Whether we hold a send key (frames can be sealed).
    pub fn can_send(&self) -> bool {
        self.crypto.send_kid().is_some()
    }

    /// A message from the signaling server.
    pub fn handle_server(&mut self, msg: ServerMessage, now: Millis) -> Vec<CallEvent> {
        let mut events = Vec::new();
        match msg {
            ServerMessage::Joined { you, members, .. } => {
                let Some(local) = self.local.take() else {
                    events.push(CallEvent::Warning(Warning::SecondJoined));
                    return events;
                };
                self.you = Some(you);
                events.push(CallEvent::Joined { you });
                // The group verifies every package (once) and says, by
                // index, which it accepted and which it refused.
                let packages: Vec<Vec<u8>> = members
                    .iter()
                    .map(|m| m.key_package.as_bytes().to_vec())
                    .collect();
                let joined = Group::join(local, &packages, now, self.config);
                for (index, error) in joined.rejected {
                    if let Some(m) = members.get(index) {
                        events.push(CallEvent::Warning(Warning::MemberRefused {
                            id: m.id,
                            error: error.into(),
                        }));
                    }
                }
                // Decide before committing state: only the members the group
                // accepted are recorded and shown, with what it verified.
                for (index, e2ee) in joined.accepted {
                    let (Some(m), Some(kp)) = (members.get(index), joined.group.member(e2ee))
                    else {
                        continue;
                    };
                    // The group took one package per e2ee id: the first.
                    if self.roster.by_e2ee.contains_key(&e2ee) {
                        continue;
                    }
                    let peer = Peer {
                        id: m.id,
                        name: m.name.to_string(),
                        e2ee,
                        identity: kp.identity,
                    };
                    self.roster.insert(peer.clone());
                    events.push(CallEvent::PeerJoined(peer));
                }
                self.group = Some(joined.group);
                self.carry_out(joined.outputs, now, &mut events);
            }
            ServerMessage::MemberJoined { member } => {
                // Decide before committing state: the peer is recorded only
                // once its key package verifies and the group accepts it.
                // The group verifies the package (once: it hands back what
                // it verified, for the roster).
                let result = match self.group.as_mut() {
                    Some(group) => group
                        .admit_newcomer(member.key_package.as_bytes(), now)
                        .map(|(kp, outputs)| {
                            let peer = Peer {
                                id: member.id,
                                name: member.name.to_string(),
                                e2ee: kp.participant,
                                identity: kp.identity,
                            };
                            (peer, outputs)
                        })
                        .map_err(Error::from),
                    None => self
                        .verify_peer(&member, now)
                        .and_then(|peer| Err(hush_e2ee::Error::UnknownMember(peer.e2ee).into())),
                };
                match result {
                    Ok((peer, outputs)) => {
                        self.roster.insert(peer.clone());
                        events.push(CallEvent::PeerJoined(peer));
                        let installed = self.carry_out_keys(outputs, &mut events);
                        // Keys of others are derived from their frames
                        // (PROTOCOL.md §5.3), so a frame held as too far
                        // ahead may be in reach after this join.
                        if installed || !self.held.is_empty() {
                            self.retry_held(now, &mut events);
                        }
                    }
                    Err(error) => events.push(CallEvent::Warning(Warning::MemberRefused {
                        id: member.id,
                        error,
                    })),
                }
            }
            ServerMessage::MemberLeft { id } => {
                if let Some(peer) = self.forget_peer(id) {
                    if let Some(g) = self.group.as_mut() {
                        match g.member_left(peer.e2ee, now) {
                            Ok(outputs) => self.carry_out(outputs, now, &mut events),
                            Err(e) => events.push(CallEvent::Warning(Warning::Rekey(e))),
                        }
                    }
                    events.push(CallEvent::PeerLeft(peer));
                } else if let Some(g) = self.group.as_mut() {
                    // One we refused: the others rekey all the same.
                    g.departure_seen(now);
                }
            }
            ServerMessage::Envelope { from, payload, .. } => {
                let claimed = EnvelopeHeader::parse(payload.as_bytes()).map(|h| h.from);
                let expected = self.roster.by_sig.get(&from).map(|p| p.e2ee);
                match (claimed, expected, self.group.as_mut()) {
                    (Ok(c), Some(e), Some(g)) if c == e => {
                        match g.receive_envelope(payload.as_bytes(), now) {
                            Ok(outputs) => self.carry_out(outputs, now, &mut events),
                            Err(error) => events
                                .push(CallEvent::Warning(Warning::EnvelopeRefused { from, error })),
                        }
                    }
                    _ => events.push(CallEvent::Warning(Warning::EnvelopeSenderMismatch { from })),
                }
            }
            ServerMessage::Error { code, message } => {
                events.push(CallEvent::ServerError { code, message });
            }
            ServerMessage::Closing { reason } => events.push(CallEvent::Closing(reason)),
            ServerMessage::SdpAnswer { sdp } => events.push(CallEvent::SdpAnswer(sdp)),
            ServerMessage::SdpOffer { sdp } => events.push(CallEvent::SdpOffer(sdp)),
            ServerMessage::IceCandidate { candidate } => {
                events.push(CallEvent::IceCandidate(candidate))
            }
            ServerMessage::TrackAdded {
                publisher,
                kind,
                stream_id,
            } => {
                self.streams.insert(stream_id.clone(), publisher);
                events.push(CallEvent::TrackAdded {
                    publisher,
                    kind,
                    stream_id,
                });
            }
            ServerMessage::TrackRemoved {
                publisher,
                stream_id,
            } => {
                self.streams.remove(&stream_id);
                events.push(CallEvent::TrackRemoved {
                    publisher,
                    stream_id,
                });
            }
            ServerMessage::ActiveSpeaker { participant } => {
                events.push(CallEvent::ActiveSpeaker(participant));
            }
            ServerMessage::MediaMoved => {
                // The old SFU's streams are gone; the new one names its own.
                self.streams.clear();
                events.push(CallEvent::MediaMoved);
            }
            _ => {}
        }
        events
    }

    /// Deadlines of the e2ee layer and of held frames.
    pub fn handle_timeout(&mut self, now: Millis) -> Vec<CallEvent> {
        let mut events = Vec::new();
        if let Some(g) = self.group.as_mut() {
            let outputs = g.handle_timeout(now);
            self.carry_out(outputs, now, &mut events);
        }
        while self
            .held
            .front()
            .is_some_and(|h| h.since.plus(HOLD_MS) <= now)
        {
            if let Some(h) = self.held.pop_front() {
                self.give_up(&h);
            }
        }
        events
    }

    /// Counts a held frame that never opened (see [`CHANGE_WINDOW_MS`]): a
    /// frame of a member whose first key is still on its way (however late,
    /// under load) is lost, as is one held while the membership changed.
    fn give_up(&mut self, held: &Held) {
        let since = Millis(held.since.0.saturating_sub(CHANGE_WINDOW_MS));
        let e2ee = self.roster.by_sig.get(&held.from).map(|p| p.e2ee);
        let lost = match (self.group.as_ref(), e2ee) {
            (Some(g), Some(e2ee)) => g.awaits_first_key(e2ee) || g.changed_since(since),
            (Some(g), None) => g.changed_since(since),
            (None, _) => true,
        };
        if lost {
            self.stats.lost_to_key_change += 1;
        } else {
            *self.stats.failed.entry("unknown_key").or_default() += 1;
        }
    }

    /// When [`Session::handle_timeout`] next has work.
    pub fn next_timeout(&self) -> Option<Millis> {
        let g = self.group.as_ref().and_then(Group::next_timeout);
        let h = self.held.front().map(|h| h.since.plus(HOLD_MS));
        g.into_iter().chain(h).min()
    }

    /// Encrypts one of our encoded frames. A frame no receiver could open
    /// ([`Error::ShortFrame`]) is counted in [`Stats::unsendable`].
    pub fn seal(&mut self, codec: Codec, frame: &[u8]) -> Result<Vec<u8>, Error> {
        match self.crypto.seal(codec, frame) {
            Ok(sealed) => {
                self.stats.sent += 1;
                Ok(sealed)
            }
            Err(e) => {
                if matches!(e, Error::ShortFrame { .. }) {
                    self.stats.unsendable += 1;
                }
                Err(e)
            }
        }
    }

    /// A media frame that arrived from `from` (as the SFU says).
    pub fn receive_frame(
        &mut self,
        from: SigId,
        codec: Codec,
        data: &[u8],
        now: Millis,
    ) -> Vec<CallEvent> {
        self.stats.received += 1;
        let mut events = Vec::new();
        self.open(
            from,
            codec,
            data.to_vec(),
            FrameInfo::default(),
            now,
            None,
            &mut events,
        );
        events
    }

    /// A media payload that arrived on the stream `stream_id`: from the
    /// member `track_added` named for it, or counted as unattributed. An
    /// audio payload in RED form (PROTOCOL.md §11) carries the frame and
    /// up to two before it: a copy is opened only if that frame has not
    /// been, so a frame whose own packet was lost is recovered from a
    /// later one.
    pub fn receive_media(
        &mut self,
        stream_id: &str,
        codec: Codec,
        data: &[u8],
        rtp: Option<Rtp>,
        now: Millis,
    ) -> Vec<CallEvent> {
        let Some(&from) = self.streams.get(stream_id) else {
            self.stats.unattributed += 1;
            return Vec::new();
        };
        let Some(rtp) = rtp.filter(|_| codec == Codec::Opus) else {
            return self.receive_frame(from, codec, data, now);
        };
        self.stats.received += 1;
        let mut events = Vec::new();
        let first = *self.first_audio.entry(from).or_insert(rtp.timestamp);
        if !rtp.red {
            self.receive_audio(from, data, rtp.timestamp, false, now, &mut events);
            return events;
        }
        let red = match hush_proto::red::parse(data) {
            Ok(red) => red,
            Err(_) => {
                *self.stats.failed.entry("malformed").or_default() += 1;
                return events;
            }
        };
        for block in &red.redundant {
            let ts = rtp.timestamp.wrapping_sub(block.timestamp_offset);
            // Before the first packet heard (modulo 2^32, RFC 3550).
            if (ts.wrapping_sub(first) as i32) < 0 {
                continue;
            }
            self.receive_audio(from, block.data, ts, true, now, &mut events);
        }
        self.receive_audio(
            from,
            red.primary.data,
            rtp.timestamp,
            false,
            now,
            &mut events,
        );
        events
    }

    /// One audio frame with its timestamp; `copy` says it is a redundant
    /// copy from a later packet.
    fn receive_audio(
        &mut self,
        from: SigId,
        data: &[u8],
        timestamp: u32,
        copy: bool,
        now: Millis,
        events: &mut Vec<CallEvent>,
    ) {
        let seen = self
            .recent_audio
            .get(&from)
            .and_then(|r| r.iter().find(|(ts, _)| *ts == timestamp))
            .map(|&(_, recovered)| recovered);
        match (seen, copy) {
            // A copy of a frame already opened.
            (Some(_), true) => return,
            // Its own packet, late, after a copy of it opened.
            (Some(true), false) => {
                self.stats.duplicate += 1;
                return;
            }
            // A frame not seen yet, or a packet seen before (a replay,
            // which the SFrame replay window refuses and counts).
            _ => {}
        }
        let info = FrameInfo {
            timestamp: Some(timestamp),
            recovered: copy,
        };
        if self.open(from, Codec::Opus, data.to_vec(), info, now, None, events) {
            self.opened_audio(from, info);
        }
    }

    /// Remembers an audio frame that opened, by its timestamp.
    fn opened_audio(&mut self, from: SigId, info: FrameInfo) {
        let Some(ts) = info.timestamp else { return };
        if info.recovered {
            self.stats.recovered += 1;
        }
        let recent = self.recent_audio.entry(from).or_default();
        if recent.len() == RECENT_AUDIO {
            recent.pop_front();
        }
        recent.push_back((ts, info.recovered));
    }

    /// Opens a frame, or holds it until its key may come; returns whether
    /// it opened now. A redundant copy (`info.recovered`) is never held:
    /// its frame's own packet, or a later copy, may still come.
    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        from: SigId,
        codec: Codec,
        data: Vec<u8>,
        info: FrameInfo,
        now: Millis,
        held_since: Option<Millis>,
        events: &mut Vec<CallEvent>,
    ) -> bool {
        let Some(peer) = self.roster.by_sig.get(&from) else {
            if info.recovered {
                return false;
            }
            if self.roster.has_left(from) {
                self.stats.after_leave += 1;
            } else {
                *self.stats.failed.entry("unknown_sender").or_default() += 1;
            }
            return false;
        };
        let e2ee = peer.e2ee;
        let mut result = self.crypto.open(e2ee, codec, &data);
        if let Err(Error::MissingKey(m)) = &result {
            // A later ratchet step of a key we hold: derive it, and install
            // it only if this frame authenticates under it. A forged KID
            // installs nothing, so it cannot start the grace period that
            // would erase the sender's real key (PROTOCOL.md §5.3).
            if let Some(g) = self.group.as_mut() {
                if let Ok(candidate) = g.candidate_receive_key(m.sender, m.kid) {
                    match self.crypto.check_candidate(&candidate, codec, &data) {
                        Ok(()) => {
                            if let Ok(outputs) = g.derive_receive_key(m.sender, m.kid, now) {
                                let mut sends = Vec::new();
                                self.carry_out_keys(outputs, &mut sends);
                                events.extend(sends);
                                result = self.crypto.open(e2ee, codec, &data);
                            }
                        }
                        // Derivable but not authentic: a forgery, not a frame to hold.
                        Err(e) => result = Err(Error::Frame(e)),
                    }
                }
            }
        }
        match result {
            Ok(frame) => {
                self.stats.decrypted += 1;
                if held_since.is_some() {
                    self.stats.held_then_decrypted += 1;
                }
                events.push(CallEvent::Frame {
                    from,
                    codec,
                    frame,
                    info,
                });
                return true;
            }
            // A copy waits for nothing: see above.
            Err(Error::MissingKey(_) | Error::UnknownSender(_)) if info.recovered => {}
            Err(missing @ (Error::MissingKey(_) | Error::UnknownSender(_))) => {
                // No key opens it: hold it only if its key may still come
                // (PROTOCOL.md §5.3); a KID that cannot, such as one forged
                // by the SFU, is a failure now, not a loss.
                let kid = match missing {
                    Error::MissingKey(m) => Some(m.kid),
                    _ => crate::frame::kid_of(codec, &data),
                };
                let outlook = match (kid, self.group.as_ref()) {
                    (Some(kid), Some(g)) => g.key_outlook(e2ee, kid),
                    // Not joined yet: every key is still to come.
                    (Some(_), None) => KeyOutlook::MayCome,
                    (None, _) => {
                        *self.stats.failed.entry("malformed").or_default() += 1;
                        return false;
                    }
                };
                match outlook {
                    KeyOutlook::MayCome => {}
                    KeyOutlook::BeforeUs => {
                        self.stats.before_join += 1;
                        return false;
                    }
                    // Sealed under a key we have erased: lost, not forged.
                    KeyOutlook::Gone => {
                        self.stats.lost_to_key_change += 1;
                        return false;
                    }
                    KeyOutlook::Never => {
                        *self.stats.failed.entry("unknown_key").or_default() += 1;
                        return false;
                    }
                }
                let mine = self.held.iter().filter(|h| h.from == from).count();
                let evicted = if mine >= HOLD_PER_SENDER {
                    self.held
                        .iter()
                        .position(|h| h.from == from)
                        .and_then(|i| self.held.remove(i))
                } else if self.held.len() >= HOLD_MAX {
                    self.held.pop_front()
                } else {
                    None
                };
                if let Some(h) = evicted {
                    self.give_up(&h);
                }
                self.held.push_back(Held {
                    from,
                    codec,
                    data,
                    info,
                    since: held_since.unwrap_or(now),
                });
            }
            Err(Error::Frame(e)) => {
                let reason = match e {
                    hush_sframe::Error::AuthenticationFailed { .. } => "authentication",
                    hush_sframe::Error::Replayed { .. } => "replay",
                    // Older than the replay window: late, or an old replay.
                    hush_sframe::Error::OutsideReplayWindow { .. } => "too_old",
                    _ => "malformed",
                };
                *self.stats.failed.entry(reason).or_default() += 1;
            }
            Err(_) => *self.stats.failed.entry("other").or_default() += 1,
        }
        false
    }

    /// Carries out e2ee outputs: envelopes become signaling messages, key
    /// events go to the frame layer, and held frames are retried.
    fn carry_out(&mut self, outputs: Vec<Output>, now: Millis, events: &mut Vec<CallEvent>) {
        let installed = self.carry_out_keys(outputs, events);
        if installed {
            self.retry_held(now, events);
        }
    }

    /// Tries every held frame again (a key arrived, or a join moved a
    /// member's generation into the range we derive from frames).
    fn retry_held(&mut self, now: Millis, events: &mut Vec<CallEvent>) {
        let held: Vec<Held> = self.held.drain(..).collect();
        for h in held {
            if self.open(h.from, h.codec, h.data, h.info, now, Some(h.since), events) {
                self.opened_audio(h.from, h.info);
            }
        }
    }

    /// Returns whether a receive key was installed.
    fn carry_out_keys(&mut self, outputs: Vec<Output>, events: &mut Vec<CallEvent>) -> bool {
        let mut installed = false;
        for o in outputs {
            match o {
                Output::Send { to, envelope } => match self.roster.by_e2ee.get(&to) {
                    Some(&sig) => events.push(CallEvent::Send(ClientMessage::Envelope {
                        to: sig,
                        payload: Opaque(envelope),
                    })),
                    None => events.push(CallEvent::Warning(Warning::NoSignalingId(to))),
                },
                Output::Confirmed(e2ee) => {
                    let peer = self
                        .roster
                        .by_e2ee
                        .get(&e2ee)
                        .and_then(|sig| self.roster.by_sig.get(sig));
                    match peer {
                        Some(peer) => events.push(CallEvent::PeerConfirmed(peer.clone())),
                        None => events.push(CallEvent::Warning(Warning::NoSignalingId(e2ee))),
                    }
                }
                Output::Key(k) => {
                    installed |= matches!(k, hush_e2ee::KeyEvent::InstallReceiveKey { .. });
                    if let Some(log) = self.key_log.as_mut() {
                        log.push(k.clone());
                    }
                    if let Err(e) = self.crypto.apply(&k) {
                        events.push(CallEvent::Warning(Warning::KeyEvent(e)));
                    }
                }
                _ => {}
            }
        }
        installed
    }

    fn verify_peer(&self, m: &Member, now: Millis) -> Result<Peer, Error> {
        let kp = KeyPackage::verify(
            m.key_package.as_bytes(),
            &self.room,
            now,
            self.config.freshness,
        )?;
        Ok(Peer {
            id: m.id,
            name: m.name.to_string(),
            e2ee: kp.participant,
            identity: kp.identity,
        })
    }

    fn forget_peer(&mut self, id: SigId) -> Option<Peer> {
        let peer = self.roster.remove(id)?;
        self.held.retain(|h| h.from != id);
        self.recent_audio.remove(&id);
        self.first_audio.remove(&id);
        Some(peer)
    }
}

/// The members we know, by signaling id and by e2ee id: the one place where
/// the two id spaces meet on the client. An e2ee id already taken by another
/// member is not re-pointed (the group refuses such a newcomer anyway), so a
/// refused or forged newcomer can never take an existing member's entry.
#[derive(Debug, Default)]
struct Roster {
    by_sig: BTreeMap<SigId, Peer>,
    by_e2ee: HashMap<hush_e2ee::ParticipantId, SigId>,
    /// The last members that left, so their late frames are told apart
    /// from frames of senders we never knew (bounded: [`DEPARTED_MAX`]).
    departed: VecDeque<SigId>,
}

/// How many departed members the roster remembers.
const DEPARTED_MAX: usize = 256;

impl Roster {
    fn insert(&mut self, peer: Peer) {
        self.by_e2ee.entry(peer.e2ee).or_insert(peer.id);
        self.by_sig.insert(peer.id, peer);
    }

    fn remove(&mut self, id: SigId) -> Option<Peer> {
        let peer = self.by_sig.remove(&id)?;
        if self.by_e2ee.get(&peer.e2ee) == Some(&id) {
            self.by_e2ee.remove(&peer.e2ee);
        }
        if self.departed.len() >= DEPARTED_MAX {
            self.departed.pop_front();
        }
        self.departed.push_back(id);
        Some(peer)
    }

    fn has_left(&self, id: SigId) -> bool {
        self.departed.contains(&id)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use hush_e2ee::Identity;

    use super::*;

    const ROOM: &str = "r";

    fn package(now: Millis) -> Opaque {
        let local = LocalMember::new(Identity::generate(), RoomId(ROOM.into()), now).unwrap();
        Opaque(local.key_package().to_bytes())
    }

    fn member(id: u64, name: &str, key_package: Opaque) -> Member {
        Member {
            id: SigId(id),
            name: name.parse().unwrap(),
            key_package,
        }
    }

    fn new_session(name: &str, now: Millis) -> (Session, ClientMessage) {
        Session::new(
            Identity::generate(),
            ROOM,
            name,
            "t",
            now,
            Config::default(),
        )
        .unwrap()
    }

    fn joined(you: SigId, members: Vec<Member>) -> ServerMessage {
        ServerMessage::Joined {
            protocol: PROTOCOL_VERSION,
            room: ROOM.parse().unwrap(),
            you,
            members,
        }
    }

    fn envelopes_to(events: &[CallEvent]) -> Vec<SigId> {
        events
            .iter()
            .filter_map(|e| match e {
                CallEvent::Send(ClientMessage::Envelope { to, .. }) => Some(*to),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_replayed_key_package_cannot_take_an_existing_members_place() {
        let now = Millis(1_000_000);
        let (me_id, ann_id) = (SigId(1), SigId(2));
        let (mut me, me_join) = new_session("me", now);
        let (mut ann, ann_join) = new_session("ann", now);
        let ann_package = key_package_of(&ann_join);
        ann.handle_server(joined(ann_id, vec![]), now);
        let members = vec![
            member(2, "ann", ann_package.clone()),
            member(3, "cy", package(now)),
        ];
        let hellos = me.handle_server(joined(me_id, members), now);
        assert_eq!(envelopes_to(&hellos), [ann_id, SigId(3)]);
        // Ann is really there: she answers our hello with her key, and is
        // confirmed; cy never answers.
        let from_ann = ann.handle_server(
            ServerMessage::MemberJoined {
                member: member(1, "me", key_package_of(&me_join)),
            },
            now,
        );
        let to_ann: Vec<CallEvent> = hellos
            .into_iter()
            .filter(|e| matches!(e, CallEvent::Send(ClientMessage::Envelope { to, .. }) if *to == ann_id))
            .collect();
        relay((&mut me, me_id), (&mut ann, ann_id), to_ann, now);
        relay((&mut ann, ann_id), (&mut me, me_id), from_ann, now);
        assert!(me.is_confirmed(ann_id));
        assert!(!me.is_confirmed(SigId(3)));

        // The server (or anyone on the path) shows ann's key package again
        // under a new signaling id: refused, and ann keeps her entry.
        let replay = ServerMessage::MemberJoined {
            member: member(9, "mallory", ann_package),
        };
        let events = me.handle_server(replay, now);
        assert!(
            events.iter().any(|e| matches!(
                e,
                CallEvent::Warning(Warning::MemberRefused { id: SigId(9), .. })
            )),
            "{events:?}"
        );
        assert_eq!(
            me.peers().map(|p| p.id).collect::<Vec<_>>(),
            [ann_id, SigId(3)]
        );

        // cy leaves: the fresh key still reaches ann, under her own signaling id.
        let events = me.handle_server(ServerMessage::MemberLeft { id: SigId(3) }, now);
        assert_eq!(envelopes_to(&events), [ann_id], "{events:?}");
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, CallEvent::Warning(Warning::NoSignalingId(_)))),
            "{events:?}"
        );
    }

    /// A frame under a KID whose key may still come is held; one sender's
    /// frames cannot take more than [`HOLD_PER_SENDER`] places, so they
    /// never push out another sender's; a KID that cannot come is a
    /// failure at once, never held.
    #[test]
    fn held_frames_are_bounded_per_sender_and_only_kids_that_may_come() {
        let now = Millis(1_000_000);
        let (mut me, _) = new_session("me", now);
        let members = vec![
            member(2, "ann", package(now)),
            member(3, "bob", package(now)),
        ];
        drop(me.handle_server(joined(SigId(1), members), now));
        let slot = |id: u64| me.peers().find(|p| p.id == SigId(id)).unwrap().e2ee.slot();
        let (ann, bob) = (slot(2), slot(3));
        let frame = |slot: u16, ctr: u64| {
            let kid = hush_e2ee::kid(
                slot,
                hush_e2ee::Generation {
                    rekey: 0,
                    ratchet: 0,
                },
            );
            let mut f = hush_sframe::Header::new(kid, hush_sframe::Counter(ctr))
                .encode()
                .as_bytes()
                .to_vec();
            f.extend_from_slice(&[0x42; 40]);
            f
        };
        for ctr in 0..10 {
            assert!(
                me.receive_frame(SigId(3), Codec::Opus, &frame(bob, ctr), now)
                    .is_empty()
            );
        }
        // More of ann's frames than may wait.
        const ANN: u64 = HOLD_PER_SENDER as u64 + 36;
        for ctr in 0..ANN {
            assert!(
                me.receive_frame(SigId(2), Codec::Opus, &frame(ann, ctr), now)
                    .is_empty()
            );
        }
        // Ann's keys have not come: her frames wait, but only HOLD_PER_SENDER of them.
        assert_eq!(me.stats().lost_to_key_change, ANN - HOLD_PER_SENDER as u64);
        // A KID of another slot on ann's stream can never be hers.
        assert!(
            me.receive_frame(SigId(2), Codec::Opus, &frame(ann ^ 1, 0), now)
                .is_empty()
        );
        assert_eq!(me.stats().failed.get("unknown_key"), Some(&1));
        // When the hold ends, bob's 10 were still there to give up: lost,
        // since keys were on the move (we had just joined).
        drop(me.handle_timeout(now.plus(HOLD_MS)));
        assert_eq!(me.stats().lost_to_key_change, ANN + 10);
        // Long after any change, a frame of bob, whose first key has still
        // not come, is lost all the same (that key is on its way, however
        // late); a sender whose keys we hold is judged by changes around it
        // (the forging-SFU test in tests/ shows that case).
        let later = now.plus(CHANGE_WINDOW_MS + HOLD_MS + 1);
        assert!(
            me.receive_frame(SigId(3), Codec::Opus, &frame(bob, 99), later)
                .is_empty()
        );
        drop(me.handle_timeout(later.plus(HOLD_MS)));
        assert_eq!(me.stats().lost_to_key_change, ANN + 11);
        assert_eq!(me.stats().failed.get("unknown_key"), Some(&1));
        assert_eq!(me.stats().received, ANN + 12);
    }

    #[test]
    fn members_the_group_refuses_at_our_join_are_not_listed() {
        let now = Millis(1_000_000);
        let (mut me, _) = new_session("me", now);
        let ann = package(now);
        // The server lists ann twice, the second time under another id.
        let twice = vec![member(2, "ann", ann.clone()), member(9, "ghost", ann)];
        let events = me.handle_server(joined(SigId(1), twice), now);
        assert_eq!(me.peers().map(|p| p.id).collect::<Vec<_>>(), [SigId(2)]);
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, CallEvent::PeerJoined(p) if p.id == SigId(9))),
            "{events:?}"
        );
        assert!(me.safety_number(SigId(9)).is_none());
    }

    #[test]
    fn a_forged_key_package_at_our_join_refuses_only_that_member() {
        let now = Millis(1_000_000);
        let (mut me, _) = new_session("me", now);
        let mut forged = package(now).as_bytes().to_vec();
        *forged.last_mut().unwrap() ^= 1; // the signature's last byte
        let members = vec![
            member(2, "ann", package(now)),
            member(3, "mallory", Opaque(forged)),
            member(4, "cy", package(now)),
        ];
        let events = me.handle_server(joined(SigId(1), members), now);
        let refused: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                CallEvent::Warning(Warning::MemberRefused { id, error }) => Some((*id, error)),
                _ => None,
            })
            .collect();
        assert!(
            matches!(
                refused.as_slice(),
                [(SigId(3), Error::E2ee(hush_e2ee::Error::BadSignature))]
            ),
            "{events:?}"
        );
        let shown: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                CallEvent::PeerJoined(p) => Some(p.id),
                _ => None,
            })
            .collect();
        assert_eq!(shown, [SigId(2), SigId(4)]);
        assert_eq!(
            me.peers().map(|p| p.id).collect::<Vec<_>>(),
            [SigId(2), SigId(4)]
        );
        assert_eq!(envelopes_to(&events), [SigId(2), SigId(4)]);
        assert!(me.safety_number(SigId(3)).is_none());
        assert!(me.safety_number(SigId(4)).is_some());
    }

    #[test]
    fn frames_on_an_unannounced_stream_are_counted_not_opened() {
        let now = Millis(1_000_000);
        let (mut me, _) = new_session("me", now);
        assert!(
            me.receive_media("p7", Codec::Opus, b"x", None, now)
                .is_empty()
        );
        assert_eq!(me.stats().unattributed, 1);
        let added = ServerMessage::TrackAdded {
            publisher: SigId(7),
            kind: MediaKind::Audio,
            stream_id: "p7".into(),
        };
        me.handle_server(added, now);
        me.receive_media("p7", Codec::Opus, b"x", None, now);
        // Attributed now: it counts as received (from a sender we hold no keys for).
        assert_eq!(me.stats().received, 1);
        assert_eq!(me.stats().unattributed, 1);
    }

    #[test]
    fn frames_still_in_flight_from_a_member_who_left_are_not_failures() {
        let now = Millis(1_000_000);
        let (mut me, _) = new_session("me", now);
        me.handle_server(joined(SigId(1), vec![member(2, "ann", package(now))]), now);
        let added = ServerMessage::TrackAdded {
            publisher: SigId(2),
            kind: MediaKind::Audio,
            stream_id: "p2".into(),
        };
        me.handle_server(added, now);
        me.handle_server(ServerMessage::MemberLeft { id: SigId(2) }, now);
        // ann's last frame arrives after her departure (before track_removed).
        me.receive_media("p2", Codec::Opus, b"late", None, now);
        assert_eq!(me.stats().after_leave, 1);
        assert!(me.stats().failed.is_empty(), "{:?}", me.stats().failed);
        // A sender nobody ever announced is still a failure.
        let ghost = ServerMessage::TrackAdded {
            publisher: SigId(9),
            kind: MediaKind::Audio,
            stream_id: "p9".into(),
        };
        me.handle_server(ghost, now);
        me.receive_media("p9", Codec::Opus, b"x", None, now);
        assert_eq!(me.stats().failed.get("unknown_sender"), Some(&1));
    }

    /// Delivers every envelope in `events` from `from` to `to`, and what
    /// that makes `to` send back, until nothing more is said.
    fn relay(
        from: (&mut Session, SigId),
        to: (&mut Session, SigId),
        events: Vec<CallEvent>,
        now: Millis,
    ) {
        let (mut a, mut b) = (from, to);
        let mut pending = events;
        while !pending.is_empty() {
            let mut replies = Vec::new();
            for e in pending {
                if let CallEvent::Send(ClientMessage::Envelope { to, payload }) = e {
                    assert_eq!(to, b.1);
                    let msg = ServerMessage::Envelope {
                        from: a.1,
                        to,
                        payload,
                    };
                    replies.extend(b.0.handle_server(msg, now));
                }
            }
            pending = replies;
            std::mem::swap(&mut a, &mut b);
        }
    }

    fn key_package_of(join: &ClientMessage) -> Opaque {
        match join {
            ClientMessage::Join { key_package, .. } => key_package.clone(),
            _ => unreachable!("Session::new returns a join"),
        }
    }

    /// ann (id 1) and bob (id 2) in one room, keys exchanged; bob knows
    /// ann's audio stream as "p1".
    fn ann_and_bob(now: Millis) -> (Session, Session, SigId, SigId) {
        let (ann_id, bob_id) = (SigId(1), SigId(2));
        let (mut ann, ann_join) = new_session("ann", now);
        let (mut bob, bob_join) = new_session("bob", now);
        ann.handle_server(joined(ann_id, vec![]), now);
        let from_bob = bob.handle_server(
            joined(bob_id, vec![member(1, "ann", key_package_of(&ann_join))]),
            now,
        );
        let from_ann = ann.handle_server(
            ServerMessage::MemberJoined {
                member: member(2, "bob", key_package_of(&bob_join)),
            },
            now,
        );
        relay((&mut bob, bob_id), (&mut ann, ann_id), from_bob, now);
        relay((&mut ann, ann_id), (&mut bob, bob_id), from_ann, now);
        bob.handle_server(
            ServerMessage::TrackAdded {
                publisher: ann_id,
                kind: MediaKind::Audio,
                stream_id: "p1".into(),
            },
            now,
        );
        (ann, bob, ann_id, bob_id)
    }

    #[test]
    fn a_frame_no_receiver_could_open_is_not_sent_and_is_counted() {
        let now = Millis(1_000_000);
        let (mut ann, _, _, _) = ann_and_bob(now);
        let sent = ann.stats().sent;
        assert!(matches!(
            ann.seal(Codec::Vp8, &[0x50; 4]),
            Err(Error::ShortFrame { len: 4, prefix: 10 })
        ));
        assert_eq!(ann.stats().unsendable, 1);
        assert_eq!(ann.stats().sent, sent);
        assert!(ann.seal(Codec::Vp8, &[0x50; 40]).is_ok());
        assert_eq!(ann.stats().sent, sent + 1);
    }

    #[test]
    fn frames_sealed_before_the_sender_saw_our_join_are_not_losses() {
        let now = Millis(1_000_000);
        let (ann_id, bob_id) = (SigId(1), SigId(2));
        let (mut ann, ann_join) = new_session("ann", now);
        let (mut bob, bob_join) = new_session("bob", now);
        ann.handle_server(joined(ann_id, vec![]), now);
        // Ann speaks while bob joins; she has not heard of him yet.
        let early = ann.seal(Codec::Opus, b"before bob").unwrap();
        let from_bob = bob.handle_server(
            joined(bob_id, vec![member(1, "ann", key_package_of(&ann_join))]),
            now,
        );
        bob.handle_server(
            ServerMessage::TrackAdded {
                publisher: ann_id,
                kind: MediaKind::Audio,
                stream_id: "p1".into(),
            },
            now,
        );
        // Her key has not come: the frame waits for it.
        assert!(frames(&bob.receive_media("p1", Codec::Opus, &early, None, now)).is_empty());
        let from_ann = ann.handle_server(
            ServerMessage::MemberJoined {
                member: member(2, "bob", key_package_of(&bob_join)),
            },
            now,
        );
        relay((&mut bob, bob_id), (&mut ann, ann_id), from_bob, now);
        relay((&mut ann, ann_id), (&mut bob, bob_id), from_ann, now);
        // The key she gave bob is the one after his join: the early frame
        // was never his to read, and is not counted as lost.
        let stats = bob.stats();
        assert_eq!(stats.before_join, 1, "{stats:?}");
        assert_eq!(stats.lost_to_key_change, 0, "{stats:?}");
        assert!(stats.failed.is_empty(), "{stats:?}");
        let after = ann.seal(Codec::Opus, b"after bob").unwrap();
        let got = frames(&bob.receive_media("p1", Codec::Opus, &after, None, now));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, b"after bob");
    }

    /// The frames `events` delivered, with their info.
    fn frames(events: &[CallEvent]) -> Vec<(Vec<u8>, FrameInfo)> {
        events
            .iter()
            .filter_map(|e| match e {
                CallEvent::Frame { frame, info, .. } => Some((frame.clone(), *info)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn red_recovers_a_lost_packets_frame_once_and_replays_still_fail() {
        use hush_proto::red::{Block, write};
        let now = Millis(1_000_000);
        let (mut ann, mut bob, _, _) = ann_and_bob(now);
        let sealed: Vec<Vec<u8>> = (0..4u8)
            .map(|i| ann.seal(Codec::Opus, &[i; 30]).unwrap())
            .collect();
        // Packet i carries frame i and, as RED, frames i-2 and i-1.
        let packet = |i: usize| {
            let blocks: Vec<Block<'_>> = (i.saturating_sub(2)..i)
                .map(|j| Block {
                    timestamp_offset: ((i - j) * 960) as u32,
                    payload_type: 111,
                    data: &sealed[j],
                })
                .collect();
            let rtp = Rtp {
                timestamp: 5_000 + (i * 960) as u32,
                red: true,
            };
            (write(&blocks, 111, &sealed[i]), rtp)
        };
        let (p0, r0) = packet(0);
        let got = frames(&bob.receive_media("p1", Codec::Opus, &p0, Some(r0), now));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, vec![0u8; 30]);
        assert_eq!(
            got[0].1,
            FrameInfo {
                timestamp: Some(5_000),
                recovered: false
            }
        );
        // Packets 1 and 2 are lost; packet 3 brings frames 1 and 2 back.
        let (p3, r3) = packet(3);
        let got = frames(&bob.receive_media("p1", Codec::Opus, &p3, Some(r3), now));
        let got: Vec<(u8, Option<u32>, bool)> = got
            .iter()
            .map(|(f, i)| (f[0], i.timestamp, i.recovered))
            .collect();
        assert_eq!(
            got,
            [
                (1, Some(5_960), true),
                (2, Some(6_920), true),
                (3, Some(7_880), false)
            ]
        );
        assert_eq!(bob.stats().recovered, 2);
        // Packet 2 arrives late after all: its frame was already played
        // from a copy, so it is skipped, and so are its copies.
        let (p2, r2) = packet(2);
        assert!(frames(&bob.receive_media("p1", Codec::Opus, &p2, Some(r2), now)).is_empty());
        assert_eq!(bob.stats().duplicate, 1);
        assert!(bob.stats().failed.is_empty(), "{:?}", bob.stats().failed);
        // The SFU replays packet 3: its primary was opened as a primary,
        // so the replay window refuses it and counts it.
        assert!(frames(&bob.receive_media("p1", Codec::Opus, &p3, Some(r3), now)).is_empty());
        assert_eq!(bob.stats().failed.get("replay"), Some(&1));
        assert_eq!(bob.stats().decrypted, 4);
    }

    #[test]
    fn copies_of_frames_from_before_a_members_stream_began_are_not_recovered() {
        use hush_proto::red::{Block, write};
        // Also across the RTP timestamp's wrap-around.
        for base in [5_000u32, u32::MAX - 2_000] {
            let now = Millis(1_000_000);
            let (mut ann, mut bob, _, _) = ann_and_bob(now);
            let sealed: Vec<Vec<u8>> = (0..5u8)
                .map(|i| ann.seal(Codec::Opus, &[i; 30]).unwrap())
                .collect();
            let packet = |i: usize| {
                let blocks: Vec<Block<'_>> = (i - 2..i)
                    .map(|j| Block {
                        timestamp_offset: ((i - j) * 960) as u32,
                        payload_type: 111,
                        data: &sealed[j],
                    })
                    .collect();
                let rtp = Rtp {
                    timestamp: base.wrapping_add((i * 960) as u32),
                    red: true,
                };
                (write(&blocks, 111, &sealed[i]), rtp)
            };
            // Bob joined as ann sent frame 2: its packet also carries
            // frames 0 and 1, which were never bob's to lose.
            let mut played = Vec::new();
            for i in [2, 4] {
                let (p, r) = packet(i);
                let got = frames(&bob.receive_media("p1", Codec::Opus, &p, Some(r), now));
                played.extend(got.iter().map(|(f, info)| (f[0], info.recovered)));
            }
            // Packet 3 was lost: frame 3 comes back from packet 4's copy,
            // frame 2's copy is skipped (opened already).
            assert_eq!(played, [(2, false), (3, true), (4, false)], "base {base}");
            assert_eq!(bob.stats().recovered, 1, "base {base}");
            assert_eq!(bob.stats().decrypted, 3, "base {base}");
        }
    }

    #[test]
    fn a_tampered_copy_or_a_malformed_red_header_is_counted_as_a_failure() {
        use hush_proto::red::{Block, write};
        let now = Millis(1_000_000);
        let (mut ann, mut bob, _, _) = ann_and_bob(now);
        let zeroth = ann.seal(Codec::Opus, b"zeroth").unwrap();
        let first = ann.seal(Codec::Opus, b"first").unwrap();
        let second = ann.seal(Codec::Opus, b"second").unwrap();
        // Bob's stream begins with frame 0, on its own.
        let rtp = Rtp {
            timestamp: 40,
            red: false,
        };
        let got = frames(&bob.receive_media("p1", Codec::Opus, &zeroth, Some(rtp), now));
        assert_eq!(got.len(), 1);
        // The SFU alters the redundant copy of frame 1 (its own packet was lost).
        let mut altered = first.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        let block = [Block {
            timestamp_offset: 960,
            payload_type: 111,
            data: &altered,
        }];
        let rtp = Rtp {
            timestamp: 1_960,
            red: true,
        };
        let got = frames(&bob.receive_media(
            "p1",
            Codec::Opus,
            &write(&block, 111, &second),
            Some(rtp),
            now,
        ));
        assert_eq!(got.len(), 1, "only the genuine primary opens");
        assert_eq!(got[0].0, b"second");
        assert_eq!(bob.stats().failed.get("authentication"), Some(&1));
        assert_eq!(bob.stats().recovered, 0);
        // A RED header that lies about its lengths.
        let mut broken = write(&block, 111, &second);
        broken[3] = 0xff;
        let rtp = Rtp {
            timestamp: 2_920,
            red: true,
        };
        assert!(frames(&bob.receive_media("p1", Codec::Opus, &broken, Some(rtp), now)).is_empty());
        assert_eq!(bob.stats().failed.get("malformed"), Some(&1));
    }

    #[test]
    fn a_forged_kid_from_the_sfu_cannot_erase_a_senders_real_key() {
        let now = Millis(1_000_000);
        let (mut ann, mut bob, ann_id, _) = ann_and_bob(now);

        let genuine = ann.seal(Codec::Opus, b"hello").unwrap();
        let opened = bob.receive_frame(ann_id, Codec::Opus, &genuine, now);
        assert!(
            matches!(&opened[..], [CallEvent::Frame { .. }]),
            "{opened:?}"
        );

        // The SFU forges a frame under ann's *next* generation: derivable,
        // but it does not authenticate, so nothing may be installed.
        let (header, _) = hush_sframe::Header::parse(&genuine).unwrap();
        let next = hush_sframe::KeyId(header.kid.0 + 1);
        let mut forged = hush_sframe::Header::new(next, hush_sframe::Counter(header.ctr.0 + 1000))
            .encode()
            .as_bytes()
            .to_vec();
        forged.extend_from_slice(&[0x42; 40]);
        let out = bob.receive_frame(ann_id, Codec::Opus, &forged, now);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(bob.stats().failed.get("authentication"), Some(&1));

        // Long after the grace period, ann's real key still opens her frames.
        let later = now.plus(10_000);
        bob.handle_timeout(later);
        let genuine = ann.seal(Codec::Opus, b"still me").unwrap();
        let opened = bob.receive_frame(ann_id, Codec::Opus, &genuine, later);
        assert!(
            matches!(&opened[..], [CallEvent::Frame { frame, .. }] if frame == b"still me"),
            "{opened:?}"
        );
        assert_eq!(bob.stats().lost_to_key_change, 0);
    }
}
