//! What each simulated participant counts, and the figures a measurement
//! window adds up to. Pure: no IO, no clock of its own.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::loadtest::stamp::Stamp;
use hush_client::frame::Codec;

/// Most latency samples one participant keeps per window (a bound on memory).
pub const MAX_LATENCIES: usize = 200_000;

/// A measurement window, in microseconds since the Unix epoch: frames
/// *sent* inside it count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Window {
    /// First microsecond of the window.
    pub start_us: u64,
    /// First microsecond after it.
    pub end_us: u64,
}

impl Window {
    /// Whether a frame sent at `t` belongs to the window.
    pub fn contains(&self, t: u64) -> bool {
        self.start_us <= t && t < self.end_us
    }
}

/// One participant's counts in the current window (and what it has seen so far).
#[derive(Debug, Default)]
pub struct Tally {
    /// The window being counted (empty: nothing counts).
    pub window: Window,
    /// Units (frames, or packets for the raw relay) sent in the window, per codec.
    pub sent: BTreeMap<&'static str, u64>,
    /// Units received that were sent in the window, per (publisher, codec).
    pub received: BTreeMap<(u32, &'static str), u64>,
    /// Of those, frames opened from a redundant copy in a later packet
    /// (RED), per (publisher, codec).
    pub recovered: BTreeMap<(u32, &'static str), u64>,
    /// One-way latencies of those units, in microseconds.
    pub latencies_us: Vec<u32>,
    /// (publisher, codec) pairs ever heard from, window or not (readiness).
    pub heard: BTreeSet<(u32, &'static str)>,
    /// When the first frame of each publisher was decrypted (any codec).
    pub first_frame: BTreeMap<u32, Instant>,
    /// Frames that decrypted but carried no valid stamp.
    pub unstamped: u64,
}

/// The label of a codec in reports.
pub fn codec_label(codec: Codec) -> &'static str {
    match codec {
        Codec::Opus => "audio",
        Codec::Vp8 => "video",
    }
}

impl Tally {
    /// Starts counting a new window, forgetting the last one.
    pub fn open(&mut self, window: Window) {
        self.window = window;
        self.sent.clear();
        self.received.clear();
        self.recovered.clear();
        self.latencies_us.clear();
    }

    /// Counts a unit we sent at `sent_us`.
    pub fn on_sent(&mut self, codec: Codec, sent_us: u64) {
        if self.window.contains(sent_us) {
            *self.sent.entry(codec_label(codec)).or_default() += 1;
        }
    }

    /// Counts a received unit with its stamp, at `now_us` (wall clock, for
    /// one-way latency against the sender's stamp) and `now` (monotonic, for
    /// the time from joining to the first frame); `recovered`: it was
    /// opened from a redundant copy, its own packet lost.
    pub fn on_received(&mut self, s: Stamp, recovered: bool, now_us: u64, now: Instant) {
        let codec = codec_label(s.codec);
        self.heard.insert((s.publisher, codec));
        self.first_frame.entry(s.publisher).or_insert(now);
        if self.window.contains(s.sent_us) {
            *self.received.entry((s.publisher, codec)).or_default() += 1;
            if recovered {
                *self.recovered.entry((s.publisher, codec)).or_default() += 1;
            }
            if self.latencies_us.len() < MAX_LATENCIES {
                let us = now_us.saturating_sub(s.sent_us);
                self.latencies_us
                    .push(u32::try_from(us).unwrap_or(u32::MAX));
            }
        }
    }

    /// When the last of `publishers` was first heard, if all of them were
    /// (never, for an empty list: there is nothing to hear).
    pub fn heard_all_at(&self, publishers: &[u32]) -> Option<Instant> {
        let mut latest = None;
        for p in publishers {
            latest = latest.max(Some(*self.first_frame.get(p)?));
        }
        latest
    }

    /// Takes this window's counts, leaving the tally counting nothing.
    pub fn close(&mut self) -> WindowCounts {
        self.window = Window::default();
        WindowCounts {
            sent: std::mem::take(&mut self.sent),
            received: std::mem::take(&mut self.received),
            recovered: std::mem::take(&mut self.recovered),
            latencies_us: std::mem::take(&mut self.latencies_us),
        }
    }
}

/// One participant's counts for a closed window.
#[derive(Debug, Default, Clone)]
pub struct WindowCounts {
    /// Units sent in the window, per codec.
    pub sent: BTreeMap<&'static str, u64>,
    /// Units received, per (publisher, codec).
    pub received: BTreeMap<(u32, &'static str), u64>,
    /// Of those, frames recovered from a redundant copy.
    pub recovered: BTreeMap<(u32, &'static str), u64>,
    /// Latencies in microseconds.
    pub latencies_us: Vec<u32>,
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Samples behind the figures.
    pub samples: u64,
}

impl Latency {
    /// Nearest-rank percentiles of microsecond samples (sorted in place).
    pub fn of(samples: &mut [u32]) -> Self {
        samples.sort_unstable();
        let pick = |q: f64| nearest_rank(samples, q).map_or(0.0, |us| f64::from(us) / 1000.0);
        Self {
            p50_ms: pick(0.50),
            p95_ms: pick(0.95),
            p99_ms: pick(0.99),
            max_ms: pick(1.0),
            samples: samples.len() as u64,
        }
    }
}

/// The `q` quantile (0 < q <= 1) of sorted samples by nearest rank.
fn nearest_rank<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied()
}

/// How long the subscribers that joined in one step took from the start of
/// their join to their first decrypted frame from every publisher of their
/// room, in milliseconds (nearest rank; `None` when no subscriber got there).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct JoinToFirstFrame {
    /// Subscribers that heard every publisher of their room.
    pub count: u64,
    /// Subscribers that joined in the step but had not heard every publisher by its end.
    pub missing: u64,
    /// Median.
    pub p50: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
}

impl JoinToFirstFrame {
    /// The figures of these times (sorted in place) and `missing` subscribers.
    pub fn of(times: &mut [Duration], missing: u64) -> Self {
        times.sort_unstable();
        let pick = |q: f64| nearest_rank(times, q).map(|d| d.as_secs_f64() * 1000.0);
        Self {
            count: times.len() as u64,
            missing,
            p50: pick(0.50),
            p99: pick(0.99),
            max: pick(1.0),
        }
    }
}

/// Who receives whom: the members of one room, by publisher index.
#[derive(Debug, Clone)]
pub struct RoomShape {
    /// Publisher indices in the room.
    pub publishers: Vec<u32>,
    /// Members of the room (publishers included) that should receive each publisher.
    pub members: usize,
}

/// Units expected, received and lost over a window.
///
/// A frame whose own packet was lost but which a later packet's redundant
/// copy (RED) brought is received *and* recovered: `loss_percent` counts
/// the frames a listener never got, after recovery, and
/// `loss_before_recovery_percent` the frames whose own packet never came.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Delivery {
    /// Units that should have arrived (each unit sent × its receivers).
    pub expected: u64,
    /// Units that did arrive, from their own packet or a redundant copy.
    pub received: u64,
    /// Of those, frames opened from a redundant copy in a later packet.
    pub recovered: u64,
    /// Units that never arrived: `expected - received`.
    pub lost: u64,
    /// Share never received (after recovery), in percent.
    pub loss_percent: f64,
    /// Share recovered from a copy, in percent of `expected`.
    pub recovered_percent: f64,
    /// Share whose own packet never came: lost plus recovered, in percent.
    pub loss_before_recovery_percent: f64,
}

/// Adds up what publishers sent and receivers got: every unit a publisher
/// sent in the window should reach every other member of its room.
/// `sent_by` maps a publisher index to its counts; `received` is every
/// receiver's counts (all received, then the recovered among them).
/// `only` restricts it to one codec label.
pub fn delivery(
    rooms: &[RoomShape],
    sent_by: &BTreeMap<u32, BTreeMap<&'static str, u64>>,
    received: &[Received<'_>],
    only: Option<&str>,
) -> Delivery {
    let counts = |codec: &str| only.is_none_or(|o| o == codec);
    let mut expected = 0u64;
    for room in rooms {
        let receivers = room.members.saturating_sub(1) as u64;
        for p in &room.publishers {
            let sent: u64 = sent_by.get(p).map_or(0, |m| {
                m.iter()
                    .filter(|(codec, _)| counts(codec))
                    .map(|(_, n)| n)
                    .sum()
            });
            expected += sent * receivers;
        }
    }
    let sent_of = |p: &u32, codec: &str| {
        sent_by
            .get(p)
            .and_then(|m| m.get(codec))
            .copied()
            .unwrap_or(0)
    };
    // A receiver can get no more of a publisher's units than it sent: a
    // duplicate must not hide a loss elsewhere.
    let (mut got, mut recovered) = (0u64, 0u64);
    for (all, copies) in received {
        for (&(p, codec), &n) in all.iter().filter(|((_, c), _)| counts(c)) {
            let n = n.min(sent_of(&p, codec));
            got += n;
            recovered += copies.get(&(p, codec)).map_or(0, |&r| r.min(n));
        }
    }
    let lost = expected.saturating_sub(got);
    let percent = |n: u64| {
        if expected == 0 {
            0.0
        } else {
            100.0 * n as f64 / expected as f64
        }
    };
    Delivery {
        expected,
        received: got,
        recovered,
        lost,
        loss_percent: percent(lost),
        recovered_percent: percent(recovered),
        loss_before_recovery_percent: percent(lost + recovered),
    }
}

/// One receiver's counts for [`delivery`]: every unit received, and the
/// recovered among them, per (publisher, codec).
pub type Received<'a> = (
    &'a BTreeMap<(u32, &'static str), u64>,
    &'a BTreeMap<(u32, &'static str), u64>,
);

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(publisher: u32, seq: u64, sent_us: u64) -> Stamp {
        Stamp {
            publisher,
            codec: Codec::Opus,
            seq,
            sent_us,
        }
    }

    #[test]
    fn only_units_sent_inside_the_window_count() {
        let now = Instant::now();
        let mut t = Tally::default();
        t.on_received(stamp(1, 0, 50), false, 60, now);
        assert!(t.received.is_empty(), "no window yet");
        assert!(t.heard.contains(&(1, "audio")), "but it was heard");
        t.open(Window {
            start_us: 100,
            end_us: 200,
        });
        t.on_sent(Codec::Opus, 99);
        t.on_sent(Codec::Opus, 100);
        t.on_sent(Codec::Opus, 199);
        t.on_sent(Codec::Vp8, 200);
        t.on_received(stamp(1, 1, 150), false, 1_150, now);
        t.on_received(stamp(1, 2, 99), true, 1_150, now);
        t.on_received(stamp(2, 2, 199), true, 5_199, now);
        let c = t.close();
        assert_eq!(c.sent.get("audio"), Some(&2));
        assert_eq!(c.sent.get("video"), None);
        assert_eq!(c.received.get(&(1, "audio")), Some(&1));
        assert_eq!(c.received.get(&(2, "audio")), Some(&1));
        assert_eq!(
            c.recovered.get(&(1, "audio")),
            None,
            "recovered outside the window"
        );
        assert_eq!(c.recovered.get(&(2, "audio")), Some(&1));
        assert_eq!(c.latencies_us, vec![1_000, 5_000]);
        t.on_sent(Codec::Opus, 150);
        assert!(t.sent.is_empty(), "closed windows count nothing");
    }

    #[test]
    fn the_first_frame_of_each_publisher_is_kept_and_the_last_one_heard_counts() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut t = Tally::default();
        assert_eq!(t.heard_all_at(&[1]), None);
        t.on_received(stamp(1, 0, 0), false, 0, at(30));
        t.on_received(stamp(1, 1, 0), true, 0, at(40));
        assert_eq!(t.heard_all_at(&[1]), Some(at(30)), "the first frame counts");
        assert_eq!(t.heard_all_at(&[1, 2]), None, "publisher 2 not heard yet");
        t.on_received(stamp(2, 0, 0), false, 0, at(70));
        assert_eq!(t.heard_all_at(&[1, 2]), Some(at(70)));
        assert_eq!(t.heard_all_at(&[]), None, "nothing to hear");
    }

    #[test]
    fn join_times_use_nearest_rank_and_count_the_missing() {
        let mut v: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let j = JoinToFirstFrame::of(&mut v, 3);
        assert_eq!(
            (j.count, j.missing, j.p50, j.p99, j.max),
            (100, 3, Some(50.0), Some(99.0), Some(100.0))
        );
        let none = JoinToFirstFrame::of(&mut [], 2);
        assert_eq!(
            (none.count, none.missing, none.p50, none.max),
            (0, 2, None, None)
        );
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut v: Vec<u32> = (1..=100).rev().map(|ms| ms * 1000).collect();
        let l = Latency::of(&mut v);
        assert_eq!(
            (l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms),
            (50.0, 95.0, 99.0, 100.0)
        );
        assert_eq!(l.samples, 100);
        assert_eq!(Latency::of(&mut []), Latency::default());
        let one = Latency::of(&mut [2_500]);
        assert_eq!((one.p50_ms, one.p99_ms), (2.5, 2.5));
    }

    /// Receivers' counts with nothing recovered.
    fn plain<'a>(
        all: &[&'a BTreeMap<(u32, &'static str), u64>],
        none: &'a BTreeMap<(u32, &'static str), u64>,
    ) -> Vec<Received<'a>> {
        all.iter().map(|r| (*r, none)).collect()
    }

    #[test]
    fn loss_counts_every_receiver_of_every_publisher() {
        // Room A: publishers 0 and 1 among 4 members; room B: publisher 2 among 3.
        let rooms = [
            RoomShape {
                publishers: vec![0, 1],
                members: 4,
            },
            RoomShape {
                publishers: vec![2],
                members: 3,
            },
        ];
        let mut sent = BTreeMap::new();
        sent.insert(0, BTreeMap::from([("audio", 10u64)]));
        sent.insert(1, BTreeMap::from([("audio", 10u64), ("video", 5)]));
        sent.insert(2, BTreeMap::from([("audio", 20u64)]));
        // Expected: (10 + 15) * 3 + 20 * 2 = 115.
        let r1 = BTreeMap::from([((0, "audio"), 10u64), ((1, "audio"), 10), ((1, "video"), 5)]);
        let r2 = BTreeMap::from([((0, "audio"), 10u64), ((1, "audio"), 10), ((1, "video"), 5)]);
        let r3 = BTreeMap::from([((0, "audio"), 10u64), ((1, "audio"), 10), ((1, "video"), 4)]);
        let r4 = BTreeMap::from([((2, "audio"), 20u64)]);
        let r5 = BTreeMap::from([((2, "audio"), 20u64)]);
        let no = BTreeMap::new();
        let d = delivery(&rooms, &sent, &plain(&[&r1, &r2, &r3, &r4, &r5], &no), None);
        assert_eq!(
            (d.expected, d.received, d.lost, d.recovered),
            (115, 114, 1, 0)
        );
        assert!((d.loss_percent - 100.0 / 115.0).abs() < 1e-9);
        assert_eq!(d.loss_before_recovery_percent, d.loss_percent);
        // Duplicates at one receiver do not hide a loss at another.
        let dup = BTreeMap::from([((0, "audio"), 11u64), ((1, "audio"), 10), ((1, "video"), 5)]);
        let d = delivery(
            &rooms,
            &sent,
            &plain(&[&dup, &r2, &r3, &r4, &r5], &no),
            None,
        );
        assert_eq!(d.received, 114);
        // Audio alone: (10 + 10) * 3 + 20 * 2 = 100 expected, all received.
        let a = delivery(
            &rooms,
            &sent,
            &plain(&[&r1, &r2, &r3, &r4, &r5], &no),
            Some("audio"),
        );
        assert_eq!((a.expected, a.received, a.lost), (100, 100, 0));
        let none = delivery(&rooms, &BTreeMap::new(), &[], None);
        assert_eq!(none.loss_percent, 0.0);
    }

    #[test]
    fn recovered_frames_are_received_and_counted_apart() {
        let rooms = [RoomShape {
            publishers: vec![0],
            members: 3,
        }];
        let sent = BTreeMap::from([(0, BTreeMap::from([("audio", 100u64)]))]);
        // Two receivers: 95 and 90 frames, of which 5 and 8 from copies.
        let (a, b) = (
            BTreeMap::from([((0, "audio"), 95u64)]),
            BTreeMap::from([((0, "audio"), 90u64)]),
        );
        let (ra, rb) = (
            BTreeMap::from([((0, "audio"), 5u64)]),
            BTreeMap::from([((0, "audio"), 8u64)]),
        );
        let d = delivery(&rooms, &sent, &[(&a, &ra), (&b, &rb)], None);
        assert_eq!(
            (d.expected, d.received, d.recovered, d.lost),
            (200, 185, 13, 15)
        );
        assert!((d.loss_percent - 7.5).abs() < 1e-9);
        assert!((d.recovered_percent - 6.5).abs() < 1e-9);
        assert!((d.loss_before_recovery_percent - 14.0).abs() < 1e-9);
    }
}
