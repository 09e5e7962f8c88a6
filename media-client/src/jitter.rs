//! Receive-side playout of one sender's audio: a jitter buffer that puts
//! frames back in RTP-timestamp order, waits long enough for late and
//! redundant (RED) copies, and says when a slot must be concealed. Pure
//! logic with no IO or clock: the caller passes the time and calls
//! [`JitterBuffer::pop`] once per 20 ms frame time.
//!
//! The delay adapts: it starts at [`JitterConfig::min_delay_ms`] plus
//! three times the RFC 3550 inter-arrival jitter, grows by a frame (up to
//! [`JitterConfig::max_delay_ms`]) when a frame arrives after its slot was
//! played, and frames beyond the delay are skipped when a burst would
//! otherwise keep the latency high. When a sender stops (nothing arrives
//! for [`JitterConfig::pause_after`] slots) playout pauses until it resumes,
//! and that tail counts as stalled, not concealed.

use std::collections::BTreeMap;

/// RTP clock ticks per 20 ms Opus frame at 48 kHz.
pub const FRAME_TICKS: i64 = 960;

/// RTP clock ticks per millisecond.
const TICKS_PER_MS: f64 = 48.0;

/// Most frames buffered per sender (2 s); older ones go first.
const MAX_BUFFERED: usize = 100;

/// How a jitter buffer behaves.
#[derive(Debug, Clone, Copy)]
pub struct JitterConfig {
    /// The least delay before a frame plays: room for two redundant copies
    /// (40 ms) and two frames of slack for a busy machine.
    pub min_delay_ms: u32,
    /// The most delay the buffer grows to.
    pub max_delay_ms: u32,
    /// Missing slots in a row, with nothing newer buffered, after which
    /// the sender counts as stopped and playout pauses.
    pub pause_after: u32,
}

impl Default for JitterConfig {
    fn default() -> Self {
        Self {
            min_delay_ms: 80,
            max_delay_ms: 300,
            pause_after: 5,
        }
    }
}

/// What plays in one 20 ms slot.
#[derive(Debug, PartialEq, Eq)]
pub enum Slot<T> {
    /// Nothing is playing (no frame yet, or the sender stopped).
    Idle,
    /// The frame for this slot.
    Frame(T),
    /// This slot's frame is missing: conceal it.
    Missing,
}

/// What a jitter buffer saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JitterStats {
    /// Slots that played a frame.
    pub played: u64,
    /// Slots that had to be concealed.
    pub concealed: u64,
    /// Missing slots at the end of a stream (its sender stopped): played
    /// as concealment, but not a loss.
    pub stalled: u64,
    /// Frames that arrived after their slot had played.
    pub late: u64,
    /// Frames that arrived twice.
    pub duplicate: u64,
    /// Frames skipped to bring the delay back down after a burst.
    pub skipped: u64,
    /// Frames that never arrived while playout was paused, found when the
    /// stream resumed later in its timeline: an outage, not a stop. (The
    /// stalled slots before such a pause count as concealed again.)
    pub unplayed: u64,
}

/// One sender's jitter buffer.
#[derive(Debug)]
pub struct JitterBuffer<T> {
    config: JitterConfig,
    frames: BTreeMap<i64, T>,
    /// The highest timestamp seen, unwrapped: the reference for unwrapping.
    highest: Option<i64>,
    /// The next slot to play, when playing.
    next: Option<i64>,
    /// When the first frame of a (re)start arrived.
    first_arrival: Option<u64>,
    /// The previous in-order arrival's transit time (ms), for the jitter estimate.
    transit: Option<f64>,
    /// RFC 3550 inter-arrival jitter, in ms.
    jitter_ms: f64,
    /// Extra delay earned by late frames, in ms.
    extra_ms: u32,
    /// Slots to hold (conceal without advancing) to grow the delay.
    hold: u32,
    missing_run: u32,
    /// Where a paused stream stopped (the slot after its last frame) and
    /// how many slots were counted stalled since.
    paused: Option<(i64, u64)>,
    stats: JitterStats,
}

impl<T> JitterBuffer<T> {
    /// An empty buffer.
    pub fn new(config: JitterConfig) -> Self {
        Self {
            config,
            frames: BTreeMap::new(),
            highest: None,
            next: None,
            first_arrival: None,
            transit: None,
            jitter_ms: 0.0,
            extra_ms: 0,
            hold: 0,
            missing_run: 0,
            paused: None,
            stats: JitterStats::default(),
        }
    }

    /// What the buffer saw so far.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// The current inter-arrival jitter estimate, in ms.
    pub fn jitter_ms(&self) -> f64 {
        self.jitter_ms
    }

    /// The delay the buffer aims for now, in ms.
    pub fn target_delay_ms(&self) -> u32 {
        let adaptive = self.config.min_delay_ms as f64 + 3.0 * self.jitter_ms;
        (adaptive as u32 + self.extra_ms).clamp(self.config.min_delay_ms, self.config.max_delay_ms)
    }

    /// Frames waiting to play.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether no frame waits.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    fn unwrap(&mut self, ts: u32) -> i64 {
        match self.highest {
            None => i64::from(ts),
            Some(h) => {
                let diff = ts.wrapping_sub(h as u32) as i32;
                h + i64::from(diff)
            }
        }
    }

    /// A frame with RTP timestamp `ts` arrived at `now_ms`. `in_order`
    /// says it came as a packet's own frame (not a redundant copy, which
    /// arrives late by design), so it feeds the jitter estimate.
    pub fn push(&mut self, ts: u32, now_ms: u64, in_order: bool, frame: T) {
        let at = self.unwrap(ts);
        if in_order {
            let transit = now_ms as f64 - at as f64 / TICKS_PER_MS;
            if let Some(prev) = self.transit {
                let d = (transit - prev).abs();
                self.jitter_ms += (d - self.jitter_ms) / 16.0;
            }
            self.transit = Some(transit);
        }
        if self.highest.is_none_or(|h| at > h) {
            self.highest = Some(at);
        }
        if self.next.is_some_and(|n| at < n) {
            self.stats.late += 1;
            // Waiting one frame longer would have played it.
            if self.target_delay_ms() < self.config.max_delay_ms {
                self.extra_ms += FRAME_TICKS as u32 / TICKS_PER_MS as u32;
                self.hold += 1;
            }
            return;
        }
        if self.frames.contains_key(&at) {
            self.stats.duplicate += 1;
            return;
        }
        self.frames.insert(at, frame);
        if self.frames.len() > MAX_BUFFERED {
            self.frames.pop_first();
            self.stats.skipped += 1;
        }
        if self.next.is_none() && self.first_arrival.is_none() {
            self.first_arrival = Some(now_ms);
        }
    }

    /// The next 20 ms slot, at `now_ms`.
    pub fn pop(&mut self, now_ms: u64) -> Slot<T> {
        let next = match self.next {
            Some(n) => n,
            None => {
                let (Some(first), Some((&oldest, _))) =
                    (self.first_arrival, self.frames.first_key_value())
                else {
                    return Slot::Idle;
                };
                if now_ms < first + u64::from(self.target_delay_ms()) {
                    return Slot::Idle;
                }
                self.first_arrival = None;
                self.missing_run = 0;
                if let Some((stopped_at, stalled)) = self.paused.take() {
                    // The stream goes on where it left off: it was an outage.
                    let missing = ((oldest - stopped_at) / FRAME_TICKS).max(0) as u64;
                    let reclassified = stalled.min(missing);
                    self.stats.stalled -= reclassified;
                    self.stats.concealed += reclassified;
                    self.stats.unplayed += missing - reclassified;
                }
                oldest
            }
        };
        if self.hold > 0 {
            self.hold -= 1;
            self.next = Some(next);
            self.stats.concealed += 1;
            return Slot::Missing;
        }
        let next = self.trim(next);
        self.next = Some(next + FRAME_TICKS);
        if let Some(frame) = self.frames.remove(&next) {
            self.missing_run = 0;
            self.stats.played += 1;
            return Slot::Frame(frame);
        }
        self.missing_run += 1;
        self.stats.concealed += 1;
        if self.missing_run >= self.config.pause_after && self.frames.is_empty() {
            // The sender stopped: what was concealed since its last frame
            // was the end of a stream, not a loss.
            let run = u64::from(self.missing_run);
            self.stats.concealed -= run;
            self.stats.stalled += run;
            self.paused = Some((next + FRAME_TICKS - run as i64 * FRAME_TICKS, run));
            self.missing_run = 0;
            self.next = None;
            self.extra_ms = 0;
        }
        Slot::Missing
    }

    /// Everything still buffered, in order, when the call ends: each
    /// waiting frame, and a missing slot for each gap between them (what
    /// a recording keeps of the last moments).
    pub fn drain(&mut self) -> Vec<Slot<T>> {
        let mut out = Vec::new();
        let mut next = self.next;
        while let Some((ts, frame)) = self.frames.pop_first() {
            if let Some(n) = next {
                let gap = ((ts - n) / FRAME_TICKS).clamp(0, MAX_BUFFERED as i64);
                for _ in 0..gap {
                    self.stats.concealed += 1;
                    out.push(Slot::Missing);
                }
            }
            self.stats.played += 1;
            out.push(Slot::Frame(frame));
            next = Some(ts + FRAME_TICKS);
        }
        self.next = next;
        out
    }

    /// Skips frames beyond the target delay (with three frames of slack),
    /// returning the slot to play.
    fn trim(&mut self, next: i64) -> i64 {
        let Some(&newest) = self.frames.keys().next_back() else {
            return next;
        };
        let target = i64::from(self.target_delay_ms()) * TICKS_PER_MS as i64;
        if newest - next <= target + 3 * FRAME_TICKS {
            return next;
        }
        let keep_from = newest - target;
        while let Some((&ts, _)) = self.frames.first_key_value() {
            if ts >= keep_from {
                break;
            }
            self.frames.pop_first();
            self.stats.skipped += 1;
        }
        self.frames
            .first_key_value()
            .map_or(keep_from, |(&ts, _)| ts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a stream: frame `i` is sent at 20·i ms and arrives at
    /// `arrival(i)` (or never); the playout ticks every 20 ms. Returns the
    /// played sequence (frame index or None for concealed).
    fn run(
        frames: u32,
        arrival: impl Fn(u32) -> Option<u64>,
        ticks: u32,
    ) -> (Vec<Option<u32>>, JitterStats) {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        let mut events: Vec<(u64, u32)> = (0..frames)
            .filter_map(|i| arrival(i).map(|t| (t, i)))
            .collect();
        events.sort();
        let mut out = Vec::new();
        let mut e = 0;
        for tick in 0..ticks {
            let now = u64::from(tick) * 20 + 7;
            while e < events.len() && events[e].0 <= now {
                let (t, i) = events[e];
                jb.push(i.wrapping_mul(960).wrapping_add(4_000_000_000), t, true, i);
                e += 1;
            }
            match jb.pop(now) {
                Slot::Idle => {}
                Slot::Frame(i) => out.push(Some(i)),
                Slot::Missing => out.push(None),
            }
        }
        (out, jb.stats())
    }

    #[test]
    fn a_clean_stream_plays_every_frame_in_order_across_the_timestamp_wrap() {
        let (out, stats) = run(200, |i| Some(u64::from(i) * 20 + 1), 230);
        let played: Vec<u32> = out.iter().flatten().copied().collect();
        assert_eq!(played, (0..200).collect::<Vec<_>>());
        assert_eq!(stats.concealed, 0);
        assert_eq!(stats.played, 200);
        // The sender stopped: the tail is stalled, not concealed.
        assert!(stats.stalled > 0);
    }

    #[test]
    fn reordered_frames_within_the_delay_play_in_order() {
        // Odd frames arrive 25 ms late, after the next even one.
        let (out, stats) = run(
            100,
            |i| Some(u64::from(i) * 20 + if i % 2 == 1 { 25 } else { 0 }),
            130,
        );
        let played: Vec<u32> = out.iter().flatten().copied().collect();
        assert_eq!(played, (0..100).collect::<Vec<_>>());
        assert_eq!(stats.concealed, 0);
        assert_eq!(stats.late, 0);
    }

    #[test]
    fn lost_frames_are_concealed_in_their_slot() {
        let (out, stats) = run(100, |i| (i % 10 != 3).then_some(u64::from(i) * 20), 130);
        assert_eq!(stats.concealed, 10);
        assert_eq!(stats.played, 90);
        for (slot, played) in out.iter().take(100).enumerate() {
            match played {
                Some(i) => assert_eq!(*i as usize, slot),
                None => assert_eq!(slot % 10, 3),
            }
        }
    }

    #[test]
    fn a_frame_later_than_the_delay_grows_it() {
        // Frame 50 arrives 200 ms late: too late for its slot.
        let (_, stats) = run(
            150,
            |i| Some(u64::from(i) * 20 + if i == 50 { 200 } else { 0 }),
            200,
        );
        assert_eq!(stats.late, 1);
        let mut jb: JitterBuffer<u32> = JitterBuffer::new(JitterConfig::default());
        jb.push(0, 0, true, 0);
        assert_eq!(jb.pop(100), Slot::Frame(0));
        jb.push(1920, 120, true, 2);
        assert_eq!(jb.pop(120), Slot::Missing);
        jb.push(960, 130, true, 1); // after its slot
        assert_eq!(jb.extra_ms, 20);
        assert!(jb.target_delay_ms() >= 100);
        // The extra delay is a held slot: frame 2 still plays, one slot later.
        assert_eq!(jb.pop(140), Slot::Missing);
        assert_eq!(jb.pop(160), Slot::Frame(2));
    }

    #[test]
    fn jitter_raises_the_target_delay() {
        let mut steady: JitterBuffer<()> = JitterBuffer::new(JitterConfig::default());
        let mut shaky: JitterBuffer<()> = JitterBuffer::new(JitterConfig::default());
        for i in 0..200u32 {
            steady.push(i * 960, u64::from(i) * 20, true, ());
            let wobble = if i % 2 == 0 { 0 } else { 30 };
            shaky.push(i * 960, u64::from(i) * 20 + wobble, true, ());
        }
        assert_eq!(steady.target_delay_ms(), 80);
        assert!(
            shaky.target_delay_ms() >= 100,
            "{}",
            shaky.target_delay_ms()
        );
        assert!(shaky.target_delay_ms() <= JitterConfig::default().max_delay_ms);
    }

    #[test]
    fn a_burst_after_a_stall_is_trimmed_back_to_the_target() {
        // Frames 20..60 arrive all at once, 800 ms late (a stalled link).
        let (out, stats) = run(
            100,
            |i| {
                Some(if (20..60).contains(&i) {
                    1_200
                } else {
                    u64::from(i) * 20
                })
            },
            140,
        );
        assert!(stats.skipped > 0, "{stats:?}");
        let played: Vec<u32> = out.iter().flatten().copied().collect();
        assert!(played.windows(2).all(|w| w[0] < w[1]), "{played:?}");
        assert!(played.contains(&99));
    }

    #[test]
    fn what_is_buffered_at_the_end_is_drained_in_order_with_its_gaps() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        for i in [0u32, 1, 2, 4, 5] {
            jb.push(i * 960, u64::from(i) * 20, true, i);
        }
        assert_eq!(jb.pop(200), Slot::Frame(0));
        let rest = jb.drain();
        assert_eq!(
            rest,
            [
                Slot::Frame(1),
                Slot::Frame(2),
                Slot::Missing,
                Slot::Frame(4),
                Slot::Frame(5)
            ]
        );
        assert!(jb.is_empty());
        assert_eq!(jb.stats().played, 5);
        assert_eq!(jb.stats().concealed, 1);
    }

    #[test]
    fn duplicates_and_floods_are_bounded() {
        let mut jb = JitterBuffer::new(JitterConfig::default());
        jb.push(0, 0, true, 0u32);
        jb.push(0, 1, true, 0u32);
        assert_eq!(jb.stats().duplicate, 1);
        for i in 1..1_000u32 {
            jb.push(i * 960, 2, true, i);
        }
        assert!(jb.len() <= MAX_BUFFERED);
    }

    #[test]
    fn a_stream_that_resumes_after_a_pause_plays_again() {
        let (out, stats) = run(
            200,
            |i| (!(50..120).contains(&i)).then_some(u64::from(i) * 20),
            240,
        );
        let played: Vec<u32> = out.iter().flatten().copied().collect();
        assert_eq!(played.len(), 130);
        assert!(played.contains(&120) && played.contains(&199));
        // The gap was an outage: every one of its 70 frames is either
        // concealed (before the pause) or counted as never played.
        assert_eq!(stats.concealed + stats.unplayed, 70, "{stats:?}");
        assert_eq!(stats.stalled, 5, "only the end of the stream: {stats:?}");
    }
}
