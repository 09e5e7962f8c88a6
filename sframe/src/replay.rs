//! Anti-replay: a sliding window over counters (RFC 9605 §9.3, adapted
//! from the SRTP replay list of RFC 3711 §3.3.2). Used per KID here and
//! per pairwise channel by hush-e2ee.

/// Default window: the newest counter and the 1,023 before it. One counter
/// runs across all of a sender's tracks, and a receiver may hand us one
/// track's frames seconds behind another's (PROTOCOL.md §6).
pub const DEFAULT_REPLAY_WINDOW: u64 = 1024;

/// Largest window a receiver may ask for.
pub const MAX_REPLAY_WINDOW: u64 = 1 << 16;

/// What the window says about a counter before decryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not seen and recent enough: may be accepted once authenticated.
    Fresh,
    /// Already accepted.
    Replayed,
    /// Older than the window can remember.
    TooOld,
}

/// Remembers which of the last `size` counters were accepted.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    size: u64,
    /// Highest accepted counter, if any.
    newest: Option<u64>,
    /// Bit `c % bits` is set when counter `c` (within the window) was accepted.
    bits: Box<[u64]>,
}

impl ReplayWindow {
    /// A window judging the newest counter and the `size - 1` before it.
    ///
    /// `size` is clamped to 1..=[`MAX_REPLAY_WINDOW`].
    pub fn new(size: u64) -> Self {
        let size = size.clamp(1, MAX_REPLAY_WINDOW);
        let words = size.div_ceil(64) as usize;
        Self {
            size,
            newest: None,
            bits: vec![0u64; words].into_boxed_slice(),
        }
    }

    fn capacity(&self) -> u64 {
        self.bits.len() as u64 * 64
    }

    fn bit(&self, ctr: u64) -> (usize, u64) {
        let i = ctr % self.capacity();
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    /// Judges `ctr` without changing anything.
    pub fn check(&self, ctr: u64) -> Verdict {
        let Some(newest) = self.newest else {
            return Verdict::Fresh;
        };
        if ctr > newest {
            return Verdict::Fresh;
        }
        if newest - ctr >= self.size {
            return Verdict::TooOld;
        }
        let (w, m) = self.bit(ctr);
        if self.bits[w] & m != 0 {
            Verdict::Replayed
        } else {
            Verdict::Fresh
        }
    }

    /// Records `ctr` as accepted; call only after [`Self::check`] said
    /// `Fresh` and the frame authenticated.
    pub fn accept(&mut self, ctr: u64) {
        match self.newest {
            Some(newest) if ctr <= newest => {}
            Some(newest) => {
                // Forget the counters the window slides past.
                let advance = ctr - newest;
                if advance >= self.capacity() {
                    self.bits.fill(0);
                } else {
                    for c in newest + 1..=ctr {
                        let (w, m) = self.bit(c);
                        self.bits[w] &= !m;
                    }
                }
                self.newest = Some(ctr);
            }
            None => self.newest = Some(ctr),
        }
        let (w, m) = self.bit(ctr);
        self.bits[w] |= m;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_each_counter_once_in_any_order() {
        let mut w = ReplayWindow::new(128);
        for c in [5u64, 3, 9, 4, 200, 150] {
            assert_eq!(w.check(c), Verdict::Fresh, "ctr {c}");
            w.accept(c);
            assert_eq!(w.check(c), Verdict::Replayed, "ctr {c}");
        }
        // 200 - 128 = 72: 73 is the oldest still judged.
        assert_eq!(w.check(72), Verdict::TooOld);
        assert_eq!(w.check(73), Verdict::Fresh);
        assert_eq!(w.check(150), Verdict::Replayed);
        assert_eq!(w.check(9), Verdict::TooOld);
    }

    #[test]
    fn bits_of_slid_out_counters_do_not_alias() {
        let mut w = ReplayWindow::new(128);
        w.accept(1);
        // 1 + 128 maps to the same bit as 1; it must be fresh.
        assert_eq!(w.check(129), Verdict::Fresh);
        w.accept(129);
        assert_eq!(w.check(129), Verdict::Replayed);
        assert_eq!(w.check(1), Verdict::TooOld);
        assert_eq!(w.check(128), Verdict::Fresh);
    }

    #[test]
    fn large_jumps_clear_the_window() {
        let mut w = ReplayWindow::new(64);
        for c in 0..64 {
            w.accept(c);
        }
        w.accept(1_000_000);
        for c in 1_000_000 - 63..1_000_000 {
            assert_eq!(w.check(c), Verdict::Fresh, "ctr {c}");
        }
        assert_eq!(w.check(u64::MAX), Verdict::Fresh);
    }

    #[test]
    fn window_of_one_accepts_only_increasing() {
        let mut w = ReplayWindow::new(1);
        w.accept(10);
        assert_eq!(w.check(10), Verdict::Replayed);
        assert_eq!(w.check(9), Verdict::TooOld);
        assert_eq!(w.check(11), Verdict::Fresh);
    }

    #[test]
    fn matches_a_naive_model() {
        // Deterministic pseudo-random walk compared against a set.
        let mut w = ReplayWindow::new(100);
        let mut seen = std::collections::BTreeSet::new();
        let mut newest: Option<u64> = None;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let base = newest.unwrap_or(0);
            let c = (base + (x % 140)).saturating_sub(110);
            let expect = match newest {
                Some(n) if c <= n && n - c >= 100 => Verdict::TooOld,
                _ if seen.contains(&c) => Verdict::Replayed,
                _ => Verdict::Fresh,
            };
            assert_eq!(w.check(c), expect, "ctr {c} newest {newest:?}");
            if expect == Verdict::Fresh {
                w.accept(c);
                seen.insert(c);
                newest = Some(newest.map_or(c, |n| n.max(c)));
            }
        }
    }
}
