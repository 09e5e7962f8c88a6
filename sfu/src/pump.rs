//! Driving many str0m peers from one loop: draining a peer's output, and a
//! deadline heap so that only peers that are due get a timeout.
//!
//! The SFU's workers use it, and so does the load generator's sans-IO
//! client hub (`hush loadtest`), which drives hundreds of client peers the
//! same way.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use str0m::{Input, Output, Rtc, RtcError};

/// Timeouts already due that one [`drain`] handles at once (more wait for
/// the deadline heap, so one peer cannot hold the loop).
pub const DUE_ROUNDS: usize = 4;

/// Polls `rtc` until it has nothing more to say, handing each datagram and
/// event to `out`, and returns when it next wants a timeout.
///
/// str0m holds a packet just written until its next timeout, and reports
/// that timeout as already due: such a timeout is fed at once (at most
/// [`DUE_ROUNDS`] times) rather than a loop turn later.
pub fn drain(
    rtc: &mut Rtc,
    now: Instant,
    mut out: impl FnMut(Output),
) -> Result<Instant, RtcError> {
    let mut rounds = 0;
    loop {
        match rtc.poll_output()? {
            Output::Timeout(t) if t <= now && rounds < DUE_ROUNDS => {
                rounds += 1;
                if let Err(e) = rtc.handle_input(Input::Timeout(now)) {
                    tracing::debug!(error = %e, "timeout refused");
                }
            }
            Output::Timeout(t) => return Ok(t),
            other => out(other),
        }
    }
}

/// Peers' next deadlines, earliest first, with lazy invalidation: a peer
/// keeps the deadline its entry was made for, and an entry that no longer
/// matches it is skipped when it comes up.
#[derive(Debug, Default)]
pub struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
}

impl Deadlines {
    /// An empty heap.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that peer `id` wants a timeout at `t`; `scheduled` is the
    /// deadline the peer already has an entry for (updated here). A later
    /// deadline than the one held adds nothing: the earlier entry fires
    /// first and the peer then says what it wants next.
    pub fn schedule(&mut self, id: u64, t: Instant, scheduled: &mut Option<Instant>) {
        if scheduled.is_none_or(|s| t < s) {
            *scheduled = Some(t);
            self.heap.push(Reverse((t, id)));
        }
    }

    /// The earliest deadline, if any peer has one.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    /// Takes the next entry due at or before `now`: the peer and the
    /// deadline the entry was made for. The caller skips it unless the
    /// peer's `scheduled` still equals that deadline (then clears it).
    pub fn pop_due(&mut self, now: Instant) -> Option<(u64, Instant)> {
        let Reverse((t, id)) = *self.heap.peek()?;
        if t > now {
            return None;
        }
        self.heap.pop();
        Some((id, t))
    }

    /// Entries held (superseded ones included).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn an_earlier_deadline_supersedes_and_a_later_one_waits() {
        let t0 = Instant::now();
        let mut d = Deadlines::new();
        let mut a = None;
        d.schedule(1, t0 + Duration::from_millis(50), &mut a);
        d.schedule(1, t0 + Duration::from_millis(80), &mut a); // later: nothing added
        assert_eq!(d.len(), 1);
        d.schedule(1, t0 + Duration::from_millis(10), &mut a); // earlier: supersedes
        assert_eq!(a, Some(t0 + Duration::from_millis(10)));
        assert_eq!(d.next(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(d.pop_due(t0), None, "nothing is due yet");
        let (id, t) = d.pop_due(t0 + Duration::from_millis(60)).expect("due");
        assert_eq!((id, Some(t)), (1, a), "the live entry");
        let (_, stale) = d.pop_due(t0 + Duration::from_millis(60)).expect("due");
        assert_ne!(
            Some(stale),
            a,
            "the superseded entry, for the caller to skip"
        );
        assert!(d.is_empty());
    }

    #[test]
    fn peers_come_up_in_deadline_order() {
        let t0 = Instant::now();
        let mut d = Deadlines::new();
        let mut s = [None; 3];
        for (id, ms) in [(0u64, 30u64), (1, 10), (2, 20)] {
            d.schedule(id, t0 + Duration::from_millis(ms), &mut s[id as usize]);
        }
        let order: Vec<u64> =
            std::iter::from_fn(|| d.pop_due(t0 + Duration::from_secs(1)).map(|(id, _)| id))
                .collect();
        assert_eq!(order, [1, 2, 0]);
    }
}
