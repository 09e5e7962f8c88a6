//! The routing core: rooms, publishers, tracks, subscriptions, key-frame
//! requests and the active speaker, as plain data driven by events.
//!
//! [`Router`] does no IO and reads no clock: every method takes `now`, and
//! returns [`Decision`]s for the transport to carry out. The transport asks
//! [`Router::poll_timeout`] when to call [`Router::handle_timeout`] next.
//!
//! Policy: every participant receives every track published in its room by
//! someone else, and never its own (an SFU for small group calls, no
//! simulcast or selective subscription yet).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use hush_proto::{MediaKind, ParticipantId, RoomId};

use crate::ids::{TrackId, TrackKey};

/// Tuning of the routing decisions.
#[derive(Debug, Clone)]
pub struct RoutingConfig {
    /// At most one key-frame request per video track per this interval;
    /// requests inside it are coalesced into one sent when it ends.
    pub key_frame_min_interval: Duration,
    /// Active-speaker detection.
    pub speaker: SpeakerConfig,
    /// Tracks one participant may publish at once. Every track costs every
    /// other member a subscription and a renegotiation, so a member cannot
    /// be allowed to add them without bound.
    pub max_tracks_per_publisher: usize,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            key_frame_min_interval: Duration::from_millis(500),
            speaker: SpeakerConfig::default(),
            // Audio and video today; room for a screen share and one more.
            max_tracks_per_publisher: 4,
        }
    }
}

/// Active-speaker tuning. Loudness is `127 - level`, where `level` is the
/// RFC 6464 value in -dBov (0 loudest, 127 silence), so louder is larger.
#[derive(Debug, Clone)]
pub struct SpeakerConfig {
    /// Weight of each new sample in the exponential moving average (0..=1).
    pub smoothing: f32,
    /// Smoothed loudness below which a participant is not speaking.
    pub threshold: f32,
    /// How much louder (smoothed) a challenger must be than the current
    /// speaker to take the floor.
    pub margin: f32,
    /// The current speaker keeps the floor at least this long.
    pub min_hold: Duration,
    /// A participant whose audio stopped arriving this long ago counts as
    /// silent (muted, left, or using DTX).
    pub silence_after: Duration,
}

impl Default for SpeakerConfig {
    fn default() -> Self {
        Self {
            smoothing: 0.2,
            threshold: 40.0,
            margin: 10.0,
            min_hold: Duration::from_millis(500),
            silence_after: Duration::from_millis(400),
        }
    }
}

/// An RFC 6464 audio level: the level in -dBov (0..=127) and the
/// voice-activity flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioLevel {
    /// Level in -dBov: 0 is the loudest, 127 silence.
    pub level: u8,
    /// Whether the sender's VAD detected voice.
    pub voice: bool,
}

impl AudioLevel {
    /// Parses the one-byte extension body (RFC 6464 §3); `None` when empty.
    pub fn parse(body: &[u8]) -> Option<Self> {
        let byte = *body.first()?;
        Some(Self {
            level: byte & 0x7f,
            voice: byte & 0x80 != 0,
        })
    }

    /// Loudness on a 0 (silence) ..= 127 (loudest) scale.
    pub fn loudness(self) -> f32 {
        f32::from(127 - self.level)
    }
}

/// What the transport must do. Decisions are returned in the order they
/// must be carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// A room has its first participant.
    RoomOpened(RoomId),
    /// A room has no participant left; forget it everywhere.
    RoomClosed(RoomId),
    /// A track is now published; announce it to the room.
    TrackPublished {
        /// The track.
        key: TrackKey,
        /// What it carries.
        kind: MediaKind,
    },
    /// A track is gone; announce it to the room.
    TrackUnpublished {
        /// The track.
        key: TrackKey,
        /// What it carried.
        kind: MediaKind,
    },
    /// Start forwarding `key` to `subscriber`.
    Subscribe {
        /// Who receives it.
        subscriber: ParticipantId,
        /// The track.
        key: TrackKey,
        /// What it carries.
        kind: MediaKind,
    },
    /// Stop forwarding `key` to `subscriber`.
    Unsubscribe {
        /// Who received it.
        subscriber: ParticipantId,
        /// The track.
        key: TrackKey,
    },
    /// Ask the publisher of `key` for a key frame (RTCP PLI).
    RequestKeyFrame(TrackKey),
    /// The room's active speaker changed (`None`: nobody holds the floor).
    ActiveSpeaker {
        /// The room.
        room: RoomId,
        /// The new speaker.
        speaker: Option<ParticipantId>,
    },
}

/// Calls the routing core refuses; the router is unchanged after each.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoutingError {
    /// The participant is already in that room.
    #[error("participant {participant} is already in room {room}")]
    AlreadyJoined {
        /// The room.
        room: RoomId,
        /// The participant.
        participant: ParticipantId,
    },
    /// No such participant in that room.
    #[error("participant {participant} is not in room {room}")]
    NotJoined {
        /// The room.
        room: RoomId,
        /// The participant.
        participant: ParticipantId,
    },
    /// The publisher already publishes a track with this id.
    #[error("track {0:?} is already published")]
    AlreadyPublished(TrackKey),
    /// No such published track.
    #[error("track {0:?} is not published")]
    NotPublished(TrackKey),
    /// The publisher already publishes as many tracks as it may.
    #[error("participant {publisher} already publishes {max} tracks")]
    TooManyTracks {
        /// The publisher.
        publisher: ParticipantId,
        /// The limit.
        max: usize,
    },
}

/// All rooms on this SFU and the decisions about them.
#[derive(Debug)]
pub struct Router {
    config: RoutingConfig,
    rooms: BTreeMap<RoomId, Room>,
}

#[derive(Debug, Default)]
struct Room {
    participants: BTreeSet<ParticipantId>,
    tracks: BTreeMap<(ParticipantId, TrackId), Published>,
    speaker: ActiveSpeaker,
}

#[derive(Debug)]
struct Published {
    kind: MediaKind,
    key_frames: KeyFrameLimiter,
}

impl Router {
    /// An empty router.
    pub fn new(config: RoutingConfig) -> Self {
        Self {
            config,
            rooms: BTreeMap::new(),
        }
    }

    /// `participant` joins `room` (created if new) and is subscribed to
    /// every track already published there.
    pub fn join(
        &mut self,
        room: &RoomId,
        participant: &ParticipantId,
    ) -> Result<Vec<Decision>, RoutingError> {
        let mut out = Vec::new();
        if !self.rooms.contains_key(room) {
            out.push(Decision::RoomOpened(room.clone()));
        }
        let r = self.rooms.entry(room.clone()).or_default();
        if !r.participants.insert(*participant) {
            if r.participants.len() == 1 && out.len() == 1 {
                // Unreachable in practice (a new room is empty); keep the map clean anyway.
                self.rooms.remove(room);
            }
            return Err(RoutingError::AlreadyJoined {
                room: room.clone(),
                participant: *participant,
            });
        }
        for ((publisher, track), published) in &r.tracks {
            out.push(Decision::Subscribe {
                subscriber: *participant,
                key: TrackKey {
                    room: room.clone(),
                    publisher: *publisher,
                    track: track.clone(),
                },
                kind: published.kind,
            });
        }
        Ok(out)
    }

    /// `participant` leaves `room`: its tracks are unpublished (everyone
    /// else unsubscribed), its own subscriptions end, and the room closes
    /// if it was the last one.
    pub fn leave(
        &mut self,
        room: &RoomId,
        participant: &ParticipantId,
        now: Instant,
    ) -> Result<Vec<Decision>, RoutingError> {
        let not_joined = || RoutingError::NotJoined {
            room: room.clone(),
            participant: *participant,
        };
        let r = self.rooms.get_mut(room).ok_or_else(not_joined)?;
        if !r.participants.contains(participant) {
            return Err(not_joined());
        }
        let mut out = Vec::new();
        let own: Vec<TrackId> = r
            .tracks
            .keys()
            .filter(|(p, _)| p == participant)
            .map(|(_, t)| t.clone())
            .collect();
        for track in own {
            let key = TrackKey {
                room: room.clone(),
                publisher: *participant,
                track,
            };
            out.extend(self.unpublish(&key)?);
        }
        let Some(r) = self.rooms.get_mut(room) else {
            return Err(not_joined());
        };
        for ((publisher, track), _) in r.tracks.iter() {
            out.push(Decision::Unsubscribe {
                subscriber: *participant,
                key: TrackKey {
                    room: room.clone(),
                    publisher: *publisher,
                    track: track.clone(),
                },
            });
        }
        r.participants.remove(participant);
        if let Some(change) =
            r.speaker
                .remove(participant, &r.participants, now, &self.config.speaker)
        {
            out.push(Decision::ActiveSpeaker {
                room: room.clone(),
                speaker: change,
            });
        }
        if r.participants.is_empty() {
            self.rooms.remove(room);
            // Nobody is left to hear about a speaker change in a closed room.
            out.retain(|d| !matches!(d, Decision::ActiveSpeaker { .. }));
            out.push(Decision::RoomClosed(room.clone()));
        }
        Ok(out)
    }

    /// The publisher of `key` started sending a track: every other
    /// participant in the room is subscribed to it.
    pub fn publish(
        &mut self,
        key: &TrackKey,
        kind: MediaKind,
    ) -> Result<Vec<Decision>, RoutingError> {
        let max = self.config.max_tracks_per_publisher;
        let r = self.joined_room(&key.room, &key.publisher)?;
        let id = (key.publisher, key.track.clone());
        if r.tracks.contains_key(&id) {
            return Err(RoutingError::AlreadyPublished(key.clone()));
        }
        let published = r.tracks.keys().filter(|(p, _)| *p == key.publisher).count();
        if published >= max {
            return Err(RoutingError::TooManyTracks {
                publisher: key.publisher,
                max,
            });
        }
        r.tracks.insert(
            id,
            Published {
                kind,
                key_frames: KeyFrameLimiter::default(),
            },
        );
        let mut out = vec![Decision::TrackPublished {
            key: key.clone(),
            kind,
        }];
        out.extend(
            r.participants
                .iter()
                .filter(|p| **p != key.publisher)
                .map(|p| Decision::Subscribe {
                    subscriber: *p,
                    key: key.clone(),
                    kind,
                }),
        );
        Ok(out)
    }

    /// The track `key` ended: everyone subscribed to it is unsubscribed.
    pub fn unpublish(&mut self, key: &TrackKey) -> Result<Vec<Decision>, RoutingError> {
        let r = self
            .rooms
            .get_mut(&key.room)
            .ok_or_else(|| RoutingError::NotPublished(key.clone()))?;
        let published = r
            .tracks
            .remove(&(key.publisher, key.track.clone()))
            .ok_or_else(|| RoutingError::NotPublished(key.clone()))?;
        let mut out: Vec<Decision> = r
            .participants
            .iter()
            .filter(|p| **p != key.publisher)
            .map(|p| Decision::Unsubscribe {
                subscriber: *p,
                key: key.clone(),
            })
            .collect();
        out.push(Decision::TrackUnpublished {
            key: key.clone(),
            kind: published.kind,
        });
        Ok(out)
    }

    /// The transport finished negotiating `subscriber`'s copy of `key`: a
    /// new video subscriber needs a key frame to start decoding.
    pub fn subscription_ready(
        &mut self,
        subscriber: &ParticipantId,
        key: &TrackKey,
        now: Instant,
    ) -> Vec<Decision> {
        if subscriber == &key.publisher {
            return Vec::new();
        }
        self.key_frame_requested(key, now)
    }

    /// A subscriber asked for a key frame of `key` (PLI or FIR). Audio
    /// tracks and unknown tracks are ignored; video requests are rate
    /// limited per track.
    pub fn key_frame_requested(&mut self, key: &TrackKey, now: Instant) -> Vec<Decision> {
        let interval = self.config.key_frame_min_interval;
        let Some(published) = self.published_mut(key) else {
            return Vec::new();
        };
        if published.kind != MediaKind::Video {
            return Vec::new();
        }
        if published.key_frames.request(now, interval) {
            vec![Decision::RequestKeyFrame(key.clone())]
        } else {
            Vec::new()
        }
    }

    /// An audio packet from `participant` carried `level`.
    pub fn audio_level(
        &mut self,
        room: &RoomId,
        participant: &ParticipantId,
        level: AudioLevel,
        now: Instant,
    ) -> Vec<Decision> {
        let config = &self.config.speaker;
        let Some(r) = self.rooms.get_mut(room) else {
            return Vec::new();
        };
        if !r.participants.contains(participant) {
            return Vec::new();
        }
        r.speaker.sample(participant, level, now, config);
        r.speaker
            .decide(now, config)
            .map(|speaker| Decision::ActiveSpeaker {
                room: room.clone(),
                speaker,
            })
            .into_iter()
            .collect()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called,
    /// if anything is pending.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let interval = self.config.key_frame_min_interval;
        let silence = self.config.speaker.silence_after;
        self.rooms
            .values()
            .flat_map(|r| {
                r.tracks
                    .values()
                    .filter_map(move |t| t.key_frames.deadline(interval))
                    .chain(r.speaker.deadline(silence))
            })
            .min()
    }

    /// Sends coalesced key-frame requests whose interval has passed, and
    /// lets silent participants lose the floor.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Decision> {
        let interval = self.config.key_frame_min_interval;
        let config = &self.config.speaker;
        let mut out = Vec::new();
        for (room, r) in &mut self.rooms {
            for ((publisher, track), t) in &mut r.tracks {
                if t.key_frames.release(now, interval) {
                    out.push(Decision::RequestKeyFrame(TrackKey {
                        room: room.clone(),
                        publisher: *publisher,
                        track: track.clone(),
                    }));
                }
            }
            r.speaker.expire(now, config);
            if let Some(speaker) = r.speaker.decide(now, config) {
                out.push(Decision::ActiveSpeaker {
                    room: room.clone(),
                    speaker,
                });
            }
        }
        out
    }

    /// Who receives `key` (everyone in its room but the publisher).
    pub fn subscribers(&self, key: &TrackKey) -> Vec<ParticipantId> {
        match self.rooms.get(&key.room) {
            Some(r) if r.tracks.contains_key(&(key.publisher, key.track.clone())) => r
                .participants
                .iter()
                .filter(|p| **p != key.publisher)
                .cloned()
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The rooms with at least one participant, and how many each has.
    pub fn rooms(&self) -> impl Iterator<Item = (&RoomId, usize)> {
        self.rooms.iter().map(|(id, r)| (id, r.participants.len()))
    }

    /// The participants of `room`, sorted.
    pub fn participants(&self, room: &RoomId) -> Vec<ParticipantId> {
        self.rooms
            .get(room)
            .map(|r| r.participants.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The tracks published in `room`, sorted, with their kinds.
    pub fn tracks(&self, room: &RoomId) -> Vec<(TrackKey, MediaKind)> {
        self.rooms
            .get(room)
            .map(|r| {
                r.tracks
                    .iter()
                    .map(|((p, t), pub_)| {
                        (
                            TrackKey {
                                room: room.clone(),
                                publisher: *p,
                                track: t.clone(),
                            },
                            pub_.kind,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The room's current active speaker.
    pub fn active_speaker(&self, room: &RoomId) -> Option<&ParticipantId> {
        self.rooms.get(room)?.speaker.current.as_ref()
    }

    fn joined_room(
        &mut self,
        room: &RoomId,
        participant: &ParticipantId,
    ) -> Result<&mut Room, RoutingError> {
        match self.rooms.get_mut(room) {
            Some(r) if r.participants.contains(participant) => Ok(r),
            _ => Err(RoutingError::NotJoined {
                room: room.clone(),
                participant: *participant,
            }),
        }
    }

    fn published_mut(&mut self, key: &TrackKey) -> Option<&mut Published> {
        self.rooms
            .get_mut(&key.room)?
            .tracks
            .get_mut(&(key.publisher, key.track.clone()))
    }
}

/// One key-frame request per interval; requests inside the interval are
/// remembered and released together when it ends.
#[derive(Debug, Default)]
struct KeyFrameLimiter {
    last_sent: Option<Instant>,
    pending: bool,
}

impl KeyFrameLimiter {
    /// Whether to send a request now; otherwise it is held.
    fn request(&mut self, now: Instant, interval: Duration) -> bool {
        match self.last_sent {
            Some(last) if now.saturating_duration_since(last) < interval => {
                self.pending = true;
                false
            }
            _ => {
                self.last_sent = Some(now);
                self.pending = false;
                true
            }
        }
    }

    fn deadline(&self, interval: Duration) -> Option<Instant> {
        match (self.pending, self.last_sent) {
            (true, Some(last)) => Some(last + interval),
            _ => None,
        }
    }

    /// Whether a held request is due now.
    fn release(&mut self, now: Instant, interval: Duration) -> bool {
        match self.deadline(interval) {
            Some(due) if now >= due => {
                self.pending = false;
                self.last_sent = Some(now);
                true
            }
            _ => false,
        }
    }
}

/// Smoothed loudness per participant, and who holds the floor.
#[derive(Debug, Default)]
struct ActiveSpeaker {
    levels: BTreeMap<ParticipantId, Loudness>,
    current: Option<ParticipantId>,
    since: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Loudness {
    smoothed: f32,
    last_sample: Instant,
}

impl ActiveSpeaker {
    fn sample(
        &mut self,
        participant: &ParticipantId,
        level: AudioLevel,
        now: Instant,
        config: &SpeakerConfig,
    ) {
        let x = level.loudness();
        let entry = self.levels.entry(*participant).or_insert(Loudness {
            smoothed: 0.0,
            last_sample: now,
        });
        entry.smoothed += config.smoothing * (x - entry.smoothed);
        entry.last_sample = now;
    }

    /// Participants whose audio stopped arriving fall silent.
    fn expire(&mut self, now: Instant, config: &SpeakerConfig) {
        for l in self.levels.values_mut() {
            if now.saturating_duration_since(l.last_sample) >= config.silence_after {
                l.smoothed = 0.0;
            }
        }
    }

    fn deadline(&self, silence_after: Duration) -> Option<Instant> {
        self.levels
            .values()
            .filter(|l| l.smoothed > 0.0)
            .map(|l| l.last_sample + silence_after)
            .min()
    }

    fn loudness(&self, p: &ParticipantId, now: Instant, config: &SpeakerConfig) -> f32 {
        match self.levels.get(p) {
            Some(l) if now.saturating_duration_since(l.last_sample) < config.silence_after => {
                l.smoothed
            }
            _ => 0.0,
        }
    }

    /// `Some(new)` when the floor changes hands. The current speaker keeps
    /// it while nobody is louder by `margin`, for at least `min_hold`; it is
    /// never taken away just because everyone went quiet.
    fn decide(&mut self, now: Instant, config: &SpeakerConfig) -> Option<Option<ParticipantId>> {
        let (best, best_level) = self
            .levels
            .keys()
            .map(|p| (p, self.loudness(p, now, config)))
            .filter(|(_, l)| *l >= config.threshold)
            // Ties go to the smallest id, deterministically.
            .fold(None::<(&ParticipantId, f32)>, |acc, (p, l)| match acc {
                Some((_, al)) if al >= l => acc,
                _ => Some((p, l)),
            })?;
        match &self.current {
            Some(cur) if cur == best => None,
            Some(cur) => {
                let held = self
                    .since
                    .is_some_and(|s| now.saturating_duration_since(s) >= config.min_hold);
                let cur_level = self.loudness(cur, now, config);
                if held && best_level >= cur_level + config.margin {
                    let best = *best;
                    self.set(Some(best), now);
                    Some(Some(best))
                } else {
                    None
                }
            }
            None => {
                let best = *best;
                self.set(Some(best), now);
                Some(Some(best))
            }
        }
    }

    /// A participant left; if it held the floor, the loudest remaining
    /// speaker (or nobody) takes it at once.
    fn remove(
        &mut self,
        participant: &ParticipantId,
        remaining: &BTreeSet<ParticipantId>,
        now: Instant,
        config: &SpeakerConfig,
    ) -> Option<Option<ParticipantId>> {
        self.levels.remove(participant);
        if self.current.as_ref() != Some(participant) {
            return None;
        }
        self.set(None, now);
        match self.decide(now, config) {
            Some(next) => Some(next),
            None if remaining.is_empty() => None,
            None => Some(None),
        }
    }

    fn set(&mut self, speaker: Option<ParticipantId>, now: Instant) {
        self.current = speaker;
        self.since = Some(now);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn room() -> RoomId {
        "room".parse().unwrap()
    }
    fn p(n: u64) -> ParticipantId {
        ParticipantId(n)
    }
    fn key(publisher: u64, track: &str) -> TrackKey {
        TrackKey {
            room: room(),
            publisher: p(publisher),
            track: track.into(),
        }
    }
    fn router() -> Router {
        Router::new(RoutingConfig::default())
    }
    fn t0() -> Instant {
        Instant::now()
    }
    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn first_join_opens_room_and_second_join_does_not() {
        let mut r = router();
        assert_eq!(
            r.join(&room(), &p(1)).unwrap(),
            vec![Decision::RoomOpened(room())]
        );
        assert_eq!(r.join(&room(), &p(2)).unwrap(), vec![]);
        assert_eq!(r.participants(&room()), vec![p(1), p(2)]);
    }

    #[test]
    fn joining_twice_is_refused_and_changes_nothing() {
        let mut r = router();
        r.join(&room(), &p(1)).unwrap();
        assert!(matches!(
            r.join(&room(), &p(1)),
            Err(RoutingError::AlreadyJoined { .. })
        ));
        assert_eq!(r.participants(&room()), vec![p(1)]);
    }

    #[test]
    fn published_track_goes_to_everyone_but_its_publisher() {
        let mut r = router();
        for x in [1, 2, 3] {
            r.join(&room(), &p(x)).unwrap();
        }
        let d = r.publish(&key(1, "v"), MediaKind::Video).unwrap();
        assert_eq!(
            d,
            vec![
                Decision::TrackPublished {
                    key: key(1, "v"),
                    kind: MediaKind::Video
                },
                Decision::Subscribe {
                    subscriber: p(2),
                    key: key(1, "v"),
                    kind: MediaKind::Video
                },
                Decision::Subscribe {
                    subscriber: p(3),
                    key: key(1, "v"),
                    kind: MediaKind::Video
                },
            ]
        );
        assert_eq!(r.subscribers(&key(1, "v")), vec![p(2), p(3)]);
    }

    #[test]
    fn late_joiner_subscribes_to_existing_tracks_except_nothing_of_its_own() {
        let mut r = router();
        r.join(&room(), &p(1)).unwrap();
        r.publish(&key(1, "v"), MediaKind::Video).unwrap();
        r.publish(&key(1, "m"), MediaKind::Audio).unwrap();
        let d = r.join(&room(), &p(2)).unwrap();
        assert_eq!(
            d,
            vec![
                Decision::Subscribe {
                    subscriber: p(2),
                    key: key(1, "m"),
                    kind: MediaKind::Audio
                },
                Decision::Subscribe {
                    subscriber: p(2),
                    key: key(1, "v"),
                    kind: MediaKind::Video
                },
            ]
        );
    }

    #[test]
    fn rooms_are_isolated() {
        let mut r = router();
        let other: RoomId = "other".parse().unwrap();
        r.join(&room(), &p(1)).unwrap();
        r.join(&other, &p(2)).unwrap();
        let d = r.publish(&key(1, "v"), MediaKind::Video).unwrap();
        assert!(
            !d.iter().any(
                |d| matches!(d, Decision::Subscribe { subscriber, .. } if *subscriber == p(2))
            )
        );
        assert!(r.subscribers(&key(1, "v")).is_empty());
    }

    #[test]
    fn publishing_needs_membership_and_a_fresh_track_id() {
        let mut r = router();
        assert!(matches!(
            r.publish(&key(1, "v"), MediaKind::Video),
            Err(RoutingError::NotJoined { .. })
        ));
        r.join(&room(), &p(1)).unwrap();
        r.publish(&key(1, "v"), MediaKind::Video).unwrap();
        assert!(matches!(
            r.publish(&key(1, "v"), MediaKind::Video),
            Err(RoutingError::AlreadyPublished(_))
        ));
        assert!(matches!(
            r.unpublish(&key(1, "x")),
            Err(RoutingError::NotPublished(_))
        ));
    }

    #[test]
    fn a_publisher_cannot_add_tracks_without_bound() {
        let mut r = Router::new(RoutingConfig {
            max_tracks_per_publisher: 2,
            ..RoutingConfig::default()
        });
        r.join(&room(), &p(1)).unwrap();
        r.join(&room(), &p(2)).unwrap();
        r.publish(&key(1, "a"), MediaKind::Audio).unwrap();
        r.publish(&key(1, "v"), MediaKind::Video).unwrap();
        assert!(matches!(
            r.publish(&key(1, "x"), MediaKind::Video),
            Err(RoutingError::TooManyTracks { max: 2, .. })
        ));
        assert!(r.subscribers(&key(1, "x")).is_empty());
        // Another member's allowance is its own; an unpublished track frees a place.
        r.publish(&key(2, "a"), MediaKind::Audio).unwrap();
        r.unpublish(&key(1, "v")).unwrap();
        r.publish(&key(1, "x"), MediaKind::Video).unwrap();
    }

    #[test]
    fn leaving_unpublishes_unsubscribes_and_closes_the_empty_room() {
        let mut r = router();
        r.join(&room(), &p(1)).unwrap();
        r.join(&room(), &p(2)).unwrap();
        r.publish(&key(1, "v"), MediaKind::Video).unwrap();
        r.publish(&key(2, "m"), MediaKind::Audio).unwrap();
        let d = r.leave(&room(), &p(1), t0()).unwrap();
        assert_eq!(
            d,
            vec![
                Decision::Unsubscribe {
                    subscriber: p(2),
                    key: key(1, "v")
                },
                Decision::TrackUnpublished {
                    key: key(1, "v"),
                    kind: MediaKind::Video
                },
                Decision::Unsubscribe {
                    subscriber: p(1),
                    key: key(2, "m")
                },
            ]
        );
        assert_eq!(r.rooms().count(), 1);
        let d = r.leave(&room(), &p(2), t0()).unwrap();
        assert_eq!(d.last(), Some(&Decision::RoomClosed(room())));
        assert_eq!(r.rooms().count(), 0);
        assert!(matches!(
            r.leave(&room(), &p(2), t0()),
            Err(RoutingError::NotJoined { .. })
        ));
    }

    #[test]
    fn key_frame_requests_are_rate_limited_and_coalesced() {
        let mut r = router();
        r.join(&room(), &p(1)).unwrap();
        r.join(&room(), &p(2)).unwrap();
        r.publish(&key(1, "v"), MediaKind::Video).unwrap();
        let t = t0();
        let want = vec![Decision::RequestKeyFrame(key(1, "v"))];
        assert_eq!(r.key_frame_requested(&key(1, "v"), t), want);
        assert_eq!(r.poll_timeout(), None);
        // Two more within the interval: held, one deadline.
        assert!(r.key_frame_requested(&key(1, "v"), t + ms(100)).is_empty());
        assert!(r.key_frame_requested(&key(1, "v"), t + ms(200)).is_empty());
        assert_eq!(r.poll_timeout(), Some(t + ms(500)));
        assert!(r.handle_timeout(t + ms(499)).is_empty());
        assert_eq!(r.handle_timeout(t + ms(500)), want);
        assert_eq!(r.poll_timeout(), None);
        assert!(r.handle_timeout(t + ms(2000)).is_empty());
        // After a quiet interval, a request goes out at once.
        assert_eq!(r.key_frame_requested(&key(1, "v"), t + ms(1001)), want);
    }

    #[test]
    fn key_frames_are_never_requested_for_audio_or_unknown_tracks() {
        let mut r = router();
        r.join(&room(), &p(1)).unwrap();
        r.publish(&key(1, "m"), MediaKind::Audio).unwrap();
        assert!(r.key_frame_requested(&key(1, "m"), t0()).is_empty());
        assert!(r.key_frame_requested(&key(1, "zz"), t0()).is_empty());
    }

    #[test]
    fn new_video_subscriber_triggers_a_key_frame_request() {
        let mut r = router();
        r.join(&room(), &p(1)).unwrap();
        r.publish(&key(1, "v"), MediaKind::Video).unwrap();
        r.join(&room(), &p(2)).unwrap();
        assert_eq!(
            r.subscription_ready(&p(2), &key(1, "v"), t0()),
            vec![Decision::RequestKeyFrame(key(1, "v"))]
        );
        assert!(r.subscription_ready(&p(1), &key(1, "v"), t0()).is_empty());
    }

    #[test]
    fn audio_level_parses_rfc6464() {
        assert_eq!(
            AudioLevel::parse(&[0x80 | 30]),
            Some(AudioLevel {
                level: 30,
                voice: true
            })
        );
        assert_eq!(
            AudioLevel::parse(&[127]),
            Some(AudioLevel {
                level: 127,
                voice: false
            })
        );
        assert_eq!(AudioLevel::parse(&[]), None);
    }

    fn speak(r: &mut Router, who: u64, level: u8, at: Instant) -> Vec<Decision> {
        r.audio_level(&room(), &p(who), AudioLevel { level, voice: true }, at)
    }

    fn speaker_room() -> Router {
        let mut r = router();
        for x in [1, 2, 3] {
            r.join(&room(), &p(x)).unwrap();
        }
        r
    }

    fn changed_to(d: &[Decision]) -> Option<Option<ParticipantId>> {
        d.iter().find_map(|d| match d {
            Decision::ActiveSpeaker { speaker, .. } => Some(*speaker),
            _ => None,
        })
    }

    #[test]
    fn a_loud_participant_becomes_the_active_speaker_after_smoothing() {
        let mut r = speaker_room();
        let t = t0();
        // Loudness 97 (-30 dBov), smoothing 0.2: 19.4, 34.9, 47.3 >= 40 on the 3rd packet.
        assert!(speak(&mut r, 1, 30, t).is_empty());
        assert!(speak(&mut r, 1, 30, t + ms(20)).is_empty());
        assert_eq!(
            changed_to(&speak(&mut r, 1, 30, t + ms(40))),
            Some(Some(p(1)))
        );
        assert_eq!(r.active_speaker(&room()), Some(&p(1)));
        // No repeated announcement while a keeps talking.
        assert!(speak(&mut r, 1, 30, t + ms(60)).is_empty());
    }

    #[test]
    fn background_noise_never_takes_the_floor() {
        let mut r = speaker_room();
        let t = t0();
        for i in 0..100 {
            // -100 dBov: loudness 27 < threshold 40.
            assert!(speak(&mut r, 2, 100, t + ms(20 * i)).is_empty());
        }
        assert_eq!(r.active_speaker(&room()), None);
    }

    #[test]
    fn a_challenger_needs_the_margin_and_the_hold_time() {
        let mut r = speaker_room();
        let t = t0();
        for i in 0..20 {
            speak(&mut r, 1, 40, t + ms(20 * i)); // loudness 87
        }
        assert_eq!(r.active_speaker(&room()), Some(&p(1)));
        // b slightly louder (loudness 92 < 87 + 10): a keeps the floor.
        for i in 20..60 {
            speak(&mut r, 1, 40, t + ms(20 * i));
            assert!(speak(&mut r, 2, 35, t + ms(20 * i)).is_empty());
        }
        assert_eq!(r.active_speaker(&room()), Some(&p(1)));
        // b much louder and a quieter: b takes over.
        let mut got = None;
        for i in 60..120 {
            let mut d = speak(&mut r, 1, 90, t + ms(20 * i));
            d.extend(speak(&mut r, 2, 10, t + ms(20 * i)));
            if let Some(c) = changed_to(&d) {
                got = Some((c, i));
                break;
            }
        }
        let (who, _) = got.unwrap();
        assert_eq!(who, Some(p(2)));
    }

    #[test]
    fn the_floor_is_held_for_min_hold_even_against_a_louder_challenger() {
        let mut r = speaker_room();
        let t = t0();
        for i in 0..3 {
            speak(&mut r, 1, 30, t + ms(20 * i));
        }
        assert_eq!(r.active_speaker(&room()), Some(&p(1)));
        // c is far louder right away, but a took the floor at t+40 ms.
        for i in 3..20 {
            speak(&mut r, 1, 120, t + ms(20 * i));
            let d = speak(&mut r, 3, 0, t + ms(20 * i));
            if 20 * i < 540 {
                assert!(d.is_empty(), "switched at {} ms", 20 * i);
            }
        }
        for i in 20..40 {
            speak(&mut r, 3, 0, t + ms(20 * i));
        }
        assert_eq!(r.active_speaker(&room()), Some(&p(3)));
    }

    #[test]
    fn silence_expires_by_timeout_and_lets_another_speaker_take_over() {
        let mut r = speaker_room();
        let t = t0();
        for i in 0..30 {
            speak(&mut r, 1, 20, t + ms(20 * i));
        }
        assert_eq!(r.active_speaker(&room()), Some(&p(1)));
        // a stops sending (muted); the router wants a timeout.
        let last = t + ms(20 * 29);
        assert_eq!(r.poll_timeout(), Some(last + ms(400)));
        assert!(r.handle_timeout(last + ms(400)).is_empty());
        // a stays the last speaker while nobody talks...
        assert_eq!(r.active_speaker(&room()), Some(&p(1)));
        // ...until b speaks at all above the threshold.
        let mut changed = None;
        for i in 0..10 {
            if let Some(c) = changed_to(&speak(&mut r, 2, 50, last + ms(500 + 20 * i))) {
                changed = Some(c);
                break;
            }
        }
        assert_eq!(changed, Some(Some(p(2))));
    }

    #[test]
    fn speaker_leaving_hands_the_floor_on() {
        let mut r = speaker_room();
        let t = t0();
        for i in 0..30 {
            speak(&mut r, 1, 20, t + ms(20 * i));
            speak(&mut r, 2, 45, t + ms(20 * i));
        }
        assert_eq!(r.active_speaker(&room()), Some(&p(1)));
        let d = r.leave(&room(), &p(1), t + ms(600)).unwrap();
        assert_eq!(changed_to(&d), Some(Some(p(2))));
        let d = r.leave(&room(), &p(2), t + ms(700)).unwrap();
        assert_eq!(changed_to(&d), Some(None));
    }

    #[test]
    fn audio_from_strangers_is_ignored() {
        let mut r = speaker_room();
        for i in 0..10 {
            assert!(speak(&mut r, 26, 0, t0() + ms(20 * i)).is_empty());
        }
        assert_eq!(r.active_speaker(&room()), None);
    }
}
