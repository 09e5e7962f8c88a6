//! An SFU that injects forged frames under made-up KIDs, ten after every
//! genuine audio packet for 5 s: KIDs one to sixteen ratchet steps ahead of
//! the sender's (which a receiver derives a candidate key for and tries),
//! far-future generations and other rekeys of the sender, KIDs of other
//! slots, and random KIDs, each with random ciphertext as long as the
//! genuine frame's. Receivers lose no genuine frame, lose nothing to a key
//! change, count every forgery as failed, never decrypt one, and the call
//! goes on. What the forgeries cost in CPU is printed, against a window of
//! the same length without them.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hush::local::LocalServer;
use hush_e2ee::{Generation, kid, split_kid};
use hush_sframe::{Counter, Header, KeyId};
use hush_sfu::{MediaKind, SfuConfig, TamperHook, Tampering};
use hush_tests::{Witness, spec, until_quiet};

/// Forged frames injected after each genuine audio packet.
const FORGED_PER_PACKET: usize = 10;
/// How long each measured window sends.
const WINDOW: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_kids_from_the_sfu_cost_no_genuine_frame() {
    let forger = Arc::new(Forger::default());
    let hook = {
        let forger = Arc::clone(&forger);
        TamperHook(Arc::new(move |kind, payload: &[u8]| {
            forger.tamper(kind, payload)
        }))
    };
    let server = LocalServer::start_with(SfuConfig {
        tamper: Some(hook),
        ..Default::default()
    })
    .await
    .expect("server");
    let ann = Witness::start(spec(&server, "f", "ann", 440.0)).await;
    let bob = Witness::start(spec(&server, "f", "bob", 660.0)).await;
    // Keys settle: both hear each other well past the hook's first 100 packets.
    ann.until_decrypted(50).await;
    bob.until_decrypted(50).await;
    let ann_slot = slot_of(&bob, "ann").await;
    let bob_slot = slot_of(&ann, "bob").await;
    assert_ne!(
        ann_slot, bob_slot,
        "the two slots collide (1 in 65,536): run again"
    );

    let baseline = window(&forger, &ann, &bob, [ann_slot, bob_slot], false).await;
    let attack = window(&forger, &ann, &bob, [ann_slot, bob_slot], true).await;

    for (name, w) in [("baseline", &baseline), ("attack", &attack)] {
        for d in &w.legs {
            eprintln!("{name}: {d:?}");
        }
        eprintln!("{name}: process CPU {:?} over {WINDOW:?}", w.cpu);
    }
    let injected: u64 = attack.legs.iter().map(|d| d.injected.total()).sum();
    if let (Some(base), Some(cpu)) = (baseline.cpu, attack.cpu) {
        let extra = cpu.saturating_sub(base);
        eprintln!(
            "forged frames: {injected} injected; CPU {cpu:?} vs {base:?} without: {:.1} µs per forged frame \
             (SFU, both clients and the server together)",
            extra.as_secs_f64() * 1e6 / injected.max(1) as f64
        );
    }

    for d in baseline.legs.iter() {
        // The control: without forgeries every genuine frame decrypts.
        assert_eq!(d.decrypted, d.sent, "baseline: {d:?}");
        assert_eq!(d.lost_to_key_change, 0, "baseline: {d:?}");
    }
    for d in attack.legs.iter() {
        let arrived_forged = d.received.saturating_sub(d.decrypted);
        let failed: u64 = d.failed.values().sum();
        let auth = d.failed.get("authentication").copied().unwrap_or(0);
        // Every genuine frame sent in the window decrypted, and nothing
        // else did. The window starts and ends with both senders stopped
        // and every frame in flight landed, so there is no allowance.
        assert_eq!(
            d.decrypted,
            d.sent,
            "{}: genuine frames lost ({} of them before the SFU) or forgeries accepted: {d:?}",
            d.receiver,
            d.sent.saturating_sub(d.forwarded)
        );
        assert_eq!(
            d.lost_to_key_change, 0,
            "frames lost to a key change: {d:?}"
        );
        // Every frame that arrived and did not decrypt ended as a failure
        // (one held for a key first included, once given up): none is
        // unaccounted for or passed off as lost to a key change.
        assert_eq!(
            failed, arrived_forged,
            "forged frames not counted as failed: {d:?}"
        );
        // The forgeries arrived (the test tested something), and those
        // under a derivable KID were tried and failed authentication.
        assert!(
            d.injected.derivable >= 500,
            "the forger recognised too few genuine packets: {d:?}"
        );
        assert!(
            failed >= d.injected.total() * 9 / 10,
            "{failed} failures for {} injected: {d:?}",
            d.injected.total()
        );
        assert!(
            auth >= d.injected.derivable * 9 / 10,
            "{auth} authentication failures for {} forgeries under derivable KIDs: {d:?}",
            d.injected.derivable
        );
    }

    // The call goes on after the attack (the hang guard fails otherwise).
    ann.send(true);
    bob.send(true);
    let (da, db) = (ann.stats().await.decrypted, bob.stats().await.decrypted);
    ann.until_decrypted(da + 50).await;
    bob.until_decrypted(db + 50).await;
    let (log_ann, _) = ann.stop().await;
    let (log_bob, _) = bob.stop().await;
    server.stop().await;

    // Nothing forged ever decrypted: every frame that did is one its sender sent.
    for (log, sender) in [(&log_ann, &log_bob), (&log_bob, &log_ann)] {
        assert_eq!(
            log.not_sent_by(sender),
            0,
            "{} decrypted forgeries",
            log.name
        );
    }
}

/// What one receiver saw of one sender during a window.
#[derive(Debug)]
struct Leg {
    receiver: &'static str,
    /// Genuine frames the sender sent.
    sent: u64,
    /// Genuine packets of the sender the SFU forwarded (as the hook saw them).
    forwarded: u64,
    /// Forged packets the SFU injected after them.
    injected: Injected,
    /// The receiver's counters (received, decrypted, failed by reason, lost).
    received: u64,
    decrypted: u64,
    failed: BTreeMap<&'static str, u64>,
    lost_to_key_change: u64,
}

struct Window {
    /// ann from bob, bob from ann.
    legs: [Leg; 2],
    /// Process CPU time from the start of sending to the end of the window.
    cpu: Option<Duration>,
}

/// Both stop sending and everything in flight lands; then both send for
/// [`WINDOW`] (with forgeries if `inject`), stop, and everything lands again.
async fn window(
    forger: &Forger,
    ann: &Witness,
    bob: &Witness,
    [ann_slot, bob_slot]: [u16; 2],
    inject: bool,
) -> Window {
    ann.send(false);
    bob.send(false);
    until_quiet(&[ann, bob]).await;
    let before = (ann.stats().await, bob.stats().await, ann.sent(), bob.sent());
    let counts_before = forger.counts();
    forger.inject.store(inject, Ordering::SeqCst);
    let cpu_before = cpu_time();
    ann.send(true);
    bob.send(true);
    tokio::time::sleep(WINDOW).await;
    ann.send(false);
    bob.send(false);
    until_quiet(&[ann, bob]).await;
    let cpu = cpu_time().zip(cpu_before).map(|(a, b)| a.saturating_sub(b));
    forger.inject.store(false, Ordering::SeqCst);
    let (sa, sb) = (ann.stats().await, bob.stats().await);
    let counts = forger.counts();
    let of = |slot: u16| {
        let now = counts.get(&slot).copied().unwrap_or_default();
        let then = counts_before.get(&slot).copied().unwrap_or_default();
        now.minus(then)
    };
    let leg = |receiver,
               stats: &hush_client::session::Stats,
               then: &hush_client::session::Stats,
               sent,
               from: Count| Leg {
        receiver,
        sent,
        forwarded: from.genuine,
        injected: from.injected,
        received: stats.received - then.received,
        decrypted: stats.decrypted - then.decrypted,
        failed: stats
            .failed
            .iter()
            .map(|(k, v)| (*k, v - then.failed.get(k).copied().unwrap_or(0)))
            .filter(|(_, v)| *v > 0)
            .collect(),
        lost_to_key_change: stats.lost_to_key_change - then.lost_to_key_change,
    };
    Window {
        legs: [
            leg("ann", &sa, &before.0, bob.sent() - before.3, of(bob_slot)),
            leg("bob", &sb, &before.1, ann.sent() - before.2, of(ann_slot)),
        ],
        cpu,
    }
}

/// The slot of the member `name`, as `w` knows it.
async fn slot_of(w: &Witness, name: &'static str) -> u16 {
    w.with_session(move |s| s.peers().find(|p| p.name == name).map(|p| p.e2ee.slot()))
        .await
        .expect("a member of the call")
}

/// The forging SFU: passes packets through, or injects forgeries after
/// each genuine audio packet while `inject` is set.
#[derive(Default)]
struct Forger {
    inject: AtomicBool,
    state: Mutex<ForgerState>,
}

#[derive(Default)]
struct ForgerState {
    rng: Rng,
    /// Per sender slot (from the genuine frames' KIDs).
    counts: HashMap<u16, Count>,
}

/// Genuine audio packets of one sender, and the forgeries after them.
#[derive(Debug, Default, Clone, Copy)]
struct Count {
    genuine: u64,
    injected: Injected,
}

/// Forged frames by kind of KID.
#[derive(Debug, Default, Clone, Copy)]
struct Injected {
    /// The sender's slot, 1 to 16 ratchet steps ahead: derivable.
    derivable: u64,
    /// The sender's slot, 17 or more steps ahead, or another rekey.
    far: u64,
    /// Another member's slot, or a slot nobody has.
    other_slot: u64,
    /// Random 48-bit and 64-bit KIDs.
    random: u64,
}

impl Injected {
    fn total(&self) -> u64 {
        self.derivable + self.far + self.other_slot + self.random
    }
}

impl Count {
    fn minus(self, then: Count) -> Count {
        let (a, b) = (self.injected, then.injected);
        Count {
            genuine: self.genuine - then.genuine,
            injected: Injected {
                derivable: a.derivable - b.derivable,
                far: a.far - b.far,
                other_slot: a.other_slot - b.other_slot,
                random: a.random - b.random,
            },
        }
    }
}

impl Forger {
    fn counts(&self) -> HashMap<u16, Count> {
        self.state.lock().expect("forger").counts.clone()
    }

    fn tamper(&self, kind: MediaKind, payload: &[u8]) -> Tampering {
        if kind != MediaKind::Audio {
            return Tampering::default();
        }
        // Audio packets are RED (PROTOCOL.md §11): the packet's own frame
        // is the primary block; forgeries go out as RED packets too.
        let Ok(red) = hush_proto::red::parse(payload) else {
            return Tampering::default();
        };
        let genuine = red.primary.data;
        let Ok((header, hlen)) = Header::parse(genuine) else {
            return Tampering::default();
        };
        let Some((slot, generation)) = split_kid(header.kid) else {
            return Tampering::default();
        };
        let mut state = self.state.lock().expect("forger");
        let ForgerState { rng, counts } = &mut *state;
        let others: Vec<u16> = counts.keys().copied().filter(|s| *s != slot).collect();
        let count = counts.entry(slot).or_default();
        count.genuine += 1;
        if !self.inject.load(Ordering::SeqCst) {
            return Tampering::default();
        }
        let Generation { rekey, ratchet } = generation;
        let mut forged = Vec::with_capacity(FORGED_PER_PACKET);
        for i in 0..FORGED_PER_PACKET {
            let r = rng.next();
            let (kid_, tally) = match i {
                // Within the acceptance window: a candidate key is derived and tried.
                0..=3 => {
                    let ahead = 1 + (r % 16) as u16;
                    let g = Generation {
                        rekey,
                        ratchet: ratchet.wrapping_add(ahead),
                    };
                    (kid(slot, g), &mut count.injected.derivable)
                }
                // Far-future ratchet steps of the sender's key.
                4 => {
                    let ahead = 17 + (r % 60_000) as u16;
                    let g = Generation {
                        rekey,
                        ratchet: ratchet.wrapping_add(ahead),
                    };
                    (kid(slot, g), &mut count.injected.far)
                }
                // Another rekey: a newer one (a key "on its way"), or an older one.
                5 => {
                    let other = if r % 2 == 0 || rekey == 0 {
                        rekey.wrapping_add(1 + (r >> 8) as u16 % 4)
                    } else {
                        rekey - 1
                    };
                    let g = Generation {
                        rekey: other,
                        ratchet: (r >> 16) as u16 % 32,
                    };
                    (kid(slot, g), &mut count.injected.far)
                }
                // The other member's slot, at this generation or a little ahead.
                6 => {
                    let other = others.first().copied().unwrap_or(slot ^ 0x8000);
                    let g = Generation {
                        rekey,
                        ratchet: ratchet.wrapping_add((r % 4) as u16),
                    };
                    (kid(other, g), &mut count.injected.other_slot)
                }
                // A slot nobody has.
                7 => {
                    let mut other = r as u16;
                    while other == slot || others.contains(&other) {
                        other = other.wrapping_add(1);
                    }
                    (kid(other, generation), &mut count.injected.other_slot)
                }
                // Random KIDs: below 2^48 (hush's layout), and any 64 bits.
                8 => (KeyId(r >> 16), &mut count.injected.random),
                _ => (KeyId(r), &mut count.injected.random),
            };
            *tally += 1;
            let mut frame = Header::new(kid_, Counter(rng.next() >> 24))
                .encode()
                .as_bytes()
                .to_vec();
            let body = genuine.len().saturating_sub(hlen).max(17);
            frame.extend((0..body).map(|_| rng.next() as u8));
            forged.push(hush_proto::red::write(
                &[],
                red.primary.payload_type,
                &frame,
            ));
        }
        Tampering::inject(forged)
    }
}

/// xorshift64*: random enough for forgeries, and needs no dependency.
struct Rng(u64);

impl Default for Rng {
    fn default() -> Self {
        Self(0x9e37_79b9_7f4a_7c15)
    }
}

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// This process's CPU time (user and system, every thread: the SFU, the
/// server and both clients), from /proc/self/stat in clock ticks of 10 ms
/// (USER_HZ is 100 on Linux); `None` elsewhere.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces): state is the
    // first, utime the 12th and stime the 13th.
    let rest = stat.rsplit_once(") ")?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}
