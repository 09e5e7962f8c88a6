//! Server limits and the per-connection rate limiter.

use std::time::{Duration, Instant};

/// Every limit the server enforces; see `hush-server --help` for the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest WebSocket message, in bytes; larger ones close the socket (1009).
    pub max_message_bytes: usize,
    /// Sustained messages per second per connection (token bucket refill).
    pub messages_per_sec: u32,
    /// Messages a connection may send in a burst (token bucket size).
    pub message_burst: u32,
    /// Rate-limited messages, with no pause of a second between two of them,
    /// after which the connection is closed.
    pub rate_strikes: u32,
    /// Participants per room.
    pub max_room_participants: usize,
    /// Rooms per server.
    pub max_rooms: usize,
    /// Time a new connection has to send `join`.
    pub join_timeout: Duration,
    /// A connection that sends nothing (not even a pong) for this long is closed;
    /// the server pings at a third of it.
    pub idle_timeout: Duration,
    /// Messages queued for one client before it counts as too slow and is closed.
    pub send_queue: usize,
    /// Time from TCP accept until the HTTP request is answered or the
    /// WebSocket upgrade completes; a connection still short of that is closed.
    pub handshake_timeout: Duration,
    /// Open connections (HTTP and WebSocket, joined or not) in all.
    pub max_connections: usize,
    /// Open connections from one source address.
    pub max_connections_per_address: usize,
    /// After the media connection of a participant dies, the time it has to
    /// answer a WebSocket ping before it counts as gone.
    pub liveness_timeout: Duration,
    /// Largest e2ee key package a `join` may carry, in bytes.
    pub max_key_package_bytes: usize,
    /// Largest e2ee envelope payload, in bytes.
    pub max_envelope_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 * 1024,
            messages_per_sec: 50,
            message_burst: 100,
            rate_strikes: 50,
            max_room_participants: 50,
            max_rooms: 1000,
            join_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            send_queue: 256,
            handshake_timeout: Duration::from_secs(5),
            max_connections: 10_000,
            max_connections_per_address: 200,
            liveness_timeout: Duration::from_secs(2),
            // A key package is about 160 bytes, a sender-key envelope about 100.
            max_key_package_bytes: 1024,
            max_envelope_bytes: 4096,
        }
    }
}

/// What the rate limiter says about one incoming message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateVerdict {
    /// Within the rate: handle it.
    Allow,
    /// Over the rate: refuse it.
    Refuse {
        /// Whether this starts a streak (send the client one error per streak).
        first: bool,
    },
    /// Over the rate for [`Limits::rate_strikes`] messages of one streak: disconnect.
    Disconnect,
}

/// A token bucket per connection, fed the time of each message.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    strikes: u32,
    max_strikes: u32,
    last_refusal: Option<Instant>,
}

/// A streak of refusals ends after this long without one.
const STREAK_GAP: Duration = Duration::from_secs(1);

impl RateLimiter {
    /// A full bucket at `now`.
    pub fn new(limits: &Limits, now: Instant) -> Self {
        let burst = f64::from(limits.message_burst.max(1));
        Self {
            per_sec: f64::from(limits.messages_per_sec),
            burst,
            tokens: burst,
            last: now,
            strikes: 0,
            max_strikes: limits.rate_strikes.max(1),
            last_refusal: None,
        }
    }

    /// Takes one token for a message arriving at `now`.
    pub fn check(&mut self, now: Instant) -> RateVerdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return RateVerdict::Allow;
        }
        // A streak survives allowed messages in between, so a client
        // sending at twice the rate is still disconnected eventually.
        if self
            .last_refusal
            .is_none_or(|t| now.saturating_duration_since(t) >= STREAK_GAP)
        {
            self.strikes = 0;
        }
        self.last_refusal = Some(now);
        self.strikes += 1;
        if self.strikes >= self.max_strikes {
            RateVerdict::Disconnect
        } else {
            RateVerdict::Refuse {
                first: self.strikes == 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            messages_per_sec: 10,
            message_burst: 5,
            rate_strikes: 3,
            ..Limits::default()
        }
    }

    #[test]
    fn burst_then_refuse_then_disconnect() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(&limits(), t0);
        for _ in 0..5 {
            assert_eq!(r.check(t0), RateVerdict::Allow);
        }
        assert_eq!(r.check(t0), RateVerdict::Refuse { first: true });
        assert_eq!(r.check(t0), RateVerdict::Refuse { first: false });
        assert_eq!(r.check(t0), RateVerdict::Disconnect);
    }

    #[test]
    fn twice_the_rate_is_disconnected() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(&limits(), t0);
        let mut verdict = RateVerdict::Allow;
        for i in 0..100u64 {
            // 20 messages/s against 10/s.
            verdict = r.check(t0 + Duration::from_millis(50 * i));
            if verdict == RateVerdict::Disconnect {
                break;
            }
        }
        assert_eq!(verdict, RateVerdict::Disconnect);
    }

    #[test]
    fn refills_over_time_and_forgives() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(&limits(), t0);
        for _ in 0..5 {
            r.check(t0);
        }
        assert_eq!(r.check(t0), RateVerdict::Refuse { first: true });
        // 10/s: one token after 100 ms, but the streak goes on...
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(r.check(t1), RateVerdict::Allow);
        assert_eq!(r.check(t1), RateVerdict::Refuse { first: false });
        // ...until a second passes without a refusal.
        let t1 = t1 + Duration::from_secs(1);
        for _ in 0..5 {
            assert_eq!(r.check(t1), RateVerdict::Allow);
        }
        assert_eq!(r.check(t1), RateVerdict::Refuse { first: true });
        // Never more than the burst, however long the pause.
        let t2 = t1 + Duration::from_secs(3600);
        let allowed = (0..20)
            .filter(|_| r.check(t2) == RateVerdict::Allow)
            .count();
        assert_eq!(allowed, 5);
    }
}
