//! `hush loadtest`: how much media one SFU carries. Simulated participants
//! really join through signaling, agree keys, negotiate WebRTC with the SFU
//! and send SFrame-encrypted, stamped payloads at call rates; receivers
//! decrypt and check every frame. The same fan-out then runs through a raw
//! UDP relay ([`relay`]) in the same run, and the report gives the ratio of
//! the SFU's packets per CPU-second to the relay's.
//!
//! Audio goes out with RFC 2198 redundancy as the real client sends it
//! (`audio_redundancy`), and the sans-IO peers can lose a share of what
//! they receive (`loss`, [`sansio::DownlinkLoss`]): each step then reports
//! the frames recovered from redundant copies beside those never received.

pub mod peer;
pub mod plot;
pub mod relay;
pub mod sansio;
pub mod server;
pub mod stamp;
pub mod tally;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use hush_client::call::JoinSpec;
use hush_client::frame::Codec;
use hush_client::transport::{Connector, WebRtcConnector};

use crate::Error;
use crate::progress;
use peer::{Peer, Publish, SharedTally, VideoLoad, lock};
use sansio::{DownlinkLoss, PeerOptions};
use server::{Samples, Target};
use stamp::Stamp;
use tally::{Delivery, JoinToFirstFrame, Latency, RoomShape, Tally, Window, WindowCounts};

/// A step of `--ramp` holds its load if loss stays at or under this (percent).
pub const HELD_MAX_LOSS_PERCENT: f64 = 1.0;
/// ... and p99 latency at or under this (milliseconds).
pub const HELD_MAX_P99_MS: f64 = 50.0;
/// Frames sent just before a window closes may still be in flight this long.
const DRAIN: Duration = Duration::from_millis(500);
/// ICE timeouts of the load test's clients and server: the clients share
/// the machine's cores with the SFU, and at the top of a ramp their answers
/// to ICE consent checks can be seconds late without the SFU being at fault.
pub const ICE_DISCONNECTED: Duration = Duration::from_secs(10);
/// ... after which a connection counts as failed.
pub const ICE_FAILED: Duration = Duration::from_secs(30);
/// What SFrame and RTP add to an audio frame on the wire to the SFU's count.
const AUDIO_OVERHEAD_BYTES: usize = 24;
/// Participants joining at once.
const JOIN_CONCURRENCY: usize = 8;
/// How long a participant may take to join, and a joining subscriber to
/// hear every publisher of its room, before the step gives up on it.
const JOIN_SETTLE: Duration = Duration::from_secs(60);

/// Most downlink loss `loss` may simulate, percent.
pub const MAX_LOSS_PERCENT: f64 = 50.0;

/// What to load the server with.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Rooms.
    pub rooms: usize,
    /// Publishers per room (they send; everyone receives).
    pub publishers: usize,
    /// Subscribers per room (they only receive); the first step of a ramp.
    pub subscribers: usize,
    /// Length of each measurement window.
    pub seconds: u64,
    /// Bytes of each 20 ms audio frame.
    pub audio_bytes: usize,
    /// Video bitrate per publisher in kbit/s, if publishers send video.
    pub video_kbps: Option<u32>,
    /// Video frames per second.
    pub video_fps: u32,
    /// Measure the raw UDP relay baseline too.
    pub baseline: bool,
    /// Grow subscribers until the load is not held.
    pub ramp: Option<Ramp>,
    /// A join storm: the first step's subscribers join unpaced, concurrently,
    /// their joins started evenly over this long (at least 1 s).
    pub storm: Option<Duration>,
    /// Draw a progress bar on standard error.
    pub progress: bool,
    /// What the simulated participants' media connections run on.
    pub clients: Clients,
    /// Earlier audio frames each audio packet repeats (RFC 2198 RED, at
    /// most [`hush_proto::red::MAX_REDUNDANT`]; 0: plain Opus).
    pub audio_redundancy: usize,
    /// Loss simulated at every receiving participant (sans-IO clients only).
    pub loss: DownlinkLoss,
}

/// What the simulated participants' media connections run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Clients {
    /// Sans-IO peers (str0m), many per task and socket ([`sansio`]): the
    /// generator's cheap clients, which reach only a server on this machine.
    SansIo {
        /// Hubs (a thread and a socket each).
        hubs: usize,
    },
    /// A webrtc-rs peer connection per participant, as `hush call` uses.
    #[serde(rename = "webrtc")]
    WebRtc,
}

impl Clients {
    fn connector(self, spec: &LoadSpec) -> Result<Arc<dyn Connector>, Error> {
        Ok(match self {
            Clients::SansIo { hubs } => {
                let options = PeerOptions {
                    audio_redundancy: spec.audio_redundancy,
                    loss: spec.loss,
                };
                Arc::new(
                    sansio::SansIoConnector::start(hubs, options)
                        .map_err(|e| Error::LoadTest(format!("load generator: {e}")))?,
                )
            }
            Clients::WebRtc => Arc::new(WebRtcConnector {
                audio_redundancy: spec.audio_redundancy,
                ..WebRtcConnector::default()
            }),
        })
    }
}

/// How `--ramp` grows the load.
#[derive(Debug, Clone, Copy)]
pub struct Ramp {
    /// Subscribers added per room at each step.
    pub step: usize,
    /// Subscribers per room at which the ramp stops in any case.
    pub max_subscribers: usize,
}

/// The test as configured, in the report.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigReport {
    /// `embedded` or the server URL.
    pub server: String,
    /// Rooms.
    pub rooms: usize,
    /// Publishers per room.
    pub publishers: usize,
    /// Subscribers per room (first step).
    pub subscribers: usize,
    /// Seconds per measurement window.
    pub seconds: u64,
    /// Audio frame bytes (before SFrame).
    pub audio_frame_bytes: usize,
    /// Video kbit/s per publisher, if any.
    pub video_kbps: Option<u32>,
    /// Whether the run ramped.
    pub ramp: bool,
    /// With `--storm-seconds`: the seconds over which the first step's joins started.
    pub storm_seconds: Option<f64>,
    /// What the simulated participants' media connections ran on.
    pub clients: Clients,
    /// Earlier audio frames each audio packet repeated (RED; 0: none).
    pub audio_redundancy: usize,
    /// Media packets each receiving participant dropped on receipt, percent
    /// (simulated downlink loss, between the SFU and the subscriber).
    pub downlink_loss_percent: f64,
    /// Seed of the simulated loss.
    pub loss_seed: u64,
}

/// The raw UDP relay at the same fan-out, measured in the same run.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineReport {
    /// What the baseline is.
    pub kind: &'static str,
    /// Bytes per relayed audio packet (the SFU's audio packet size).
    pub packet_bytes: usize,
    /// Packets the relay sent on in the window.
    pub forwarded_packets: u64,
    /// ... per second.
    pub forwarded_packets_per_sec: f64,
    /// CPU seconds of the relay thread in the window.
    pub cpu_seconds: f64,
    /// Forwarded packets per CPU-second.
    pub forwarded_packets_per_cpu_second: Option<f64>,
    /// Packets expected and received (units are packets here, not frames).
    pub delivery: Delivery,
    /// Loss in percent.
    pub loss_percent: f64,
    /// One-way latency through the relay.
    pub latency: Latency,
}

/// One server node's share of a step's window.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStep {
    /// The node's WebSocket URL.
    pub url: String,
    /// RTP packets this node's SFU forwarded in the window.
    pub forwarded_packets: u64,
    /// CPU seconds this node's process used in the window.
    pub sfu_cpu_seconds: Option<f64>,
    /// ... as a share of one core, percent.
    pub sfu_cpu_percent_of_one_core: Option<f64>,
    /// Peak resident memory of this node's process so far.
    pub sfu_peak_memory_bytes: Option<u64>,
}

/// Each node's share of a window, from its `/metrics` at both ends.
fn node_steps(target: &Target, m0: &Samples, m1: &Samples, secs: f64) -> Vec<NodeStep> {
    target
        .node_urls()
        .into_iter()
        .zip(m0.nodes.iter().zip(&m1.nodes))
        .map(|(url, (a, b))| {
            let cpu = match (a.cpu_seconds, b.cpu_seconds) {
                (Some(a), Some(b)) => Some(b - a),
                _ => None,
            };
            NodeStep {
                url,
                forwarded_packets: b.packets_out.saturating_sub(a.packets_out),
                sfu_cpu_seconds: cpu,
                sfu_cpu_percent_of_one_core: cpu.map(|c| 100.0 * c / secs),
                sfu_peak_memory_bytes: b.peak_rss_bytes,
            }
        })
        .collect()
}

/// One measured load.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// Subscribers per room.
    pub subscribers_per_room: usize,
    /// Participants in all rooms.
    pub participants: usize,
    /// Length of the window, seconds.
    pub seconds: f64,
    /// RTP packets the SFU forwarded in the window (its own count).
    pub forwarded_packets: u64,
    /// ... per second.
    pub forwarded_packets_per_sec: f64,
    /// Forwarded bits per second (RTP payload bytes as the SFU counts them).
    pub forwarded_bits_per_sec: f64,
    /// Packets the SFU dropped in the window (queues full and the like).
    pub sfu_dropped_packets: u64,
    /// Frames expected (each frame sent × its receivers) and decrypted,
    /// recovered from redundant copies, and never received.
    pub delivery: Delivery,
    /// Frames never received (after recovery from redundant copies), percent.
    pub loss_percent: f64,
    /// The same for audio frames alone (where RED applies).
    pub audio_delivery: Delivery,
    /// Audio bits per second the SFU forwarded (RTP payload, RED blocks included).
    pub forwarded_audio_bits_per_sec: f64,
    /// Bytes of the average audio packet the SFU forwarded (RTP payload):
    /// one sealed frame, or with RED the frame and the earlier ones.
    pub forwarded_audio_bytes_per_packet: Option<f64>,
    /// One-way latency, publisher's seal to subscriber's decrypt.
    pub latency: Latency,
    /// Frames that failed decryption during the window (must be 0).
    pub decryption_failures: u64,
    /// CPU seconds the server process used in the window.
    pub sfu_cpu_seconds: Option<f64>,
    /// ... as a share of one core, percent.
    pub sfu_cpu_percent_of_one_core: Option<f64>,
    /// The load generator's own process (every simulated participant) in
    /// the window, percent of one core: on one machine, the server's
    /// share of the cores is what this leaves.
    pub generator_cpu_percent_of_one_core: Option<f64>,
    /// Forwarded packets per server CPU-second.
    pub forwarded_packets_per_cpu_second: Option<f64>,
    /// Peak resident memory of the server process so far.
    pub sfu_peak_memory_bytes: Option<u64>,
    /// Peak memory growth since before the first join, per receiving participant.
    pub sfu_memory_per_subscriber_bytes: Option<f64>,
    /// Each server node's own share of the window: one entry per node (a
    /// cluster's nodes in `--server` order).
    pub nodes: Vec<NodeStep>,
    /// Whether the step held its load (loss ≤ 1 %, p99 ≤ 50 ms).
    pub held: bool,
    /// The raw relay at the same fan-out.
    pub baseline: Option<BaselineReport>,
    /// SFU packets per CPU-second ÷ relay packets per CPU-second: the headline.
    pub ratio_to_udp_relay: Option<f64>,
    /// Why the baseline of this step could not be measured, if it could not.
    pub baseline_error: Option<String>,
    /// Subscribers that joined in this step: from the start of each join to
    /// its first decrypted frame from every publisher of its room.
    pub join_to_first_frame_ms: JoinToFirstFrame,
    /// Frames lost to key changes, summed over every participant, from the
    /// end of the previous step's window (the first step: from the start)
    /// to the end of this step's ramp-up, before its window opened.
    pub lost_to_key_change_during_ramp: u64,
    /// Over the same span: frames a member sealed before it saw a
    /// newcomer's join that reached the newcomer, under a key it is never
    /// given (in flight at its join; neither lost nor failed).
    pub before_join_during_ramp: u64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// What ran.
    pub config: ConfigReport,
    /// The headline step: the only one, or with `--ramp` the largest load held
    /// (the first step if none held).
    pub result: StepReport,
    /// Every step, in order.
    pub steps: Vec<StepReport>,
    /// With `--ramp`: the most subscribers per room held.
    pub largest_held_subscribers_per_room: Option<usize>,
    /// With `--ramp`: why the ramp stopped before `--ramp-max` without a
    /// measurement (participants that could not join or connect at that load).
    pub ramp_stopped_by: Option<String>,
    /// Frames that failed decryption over the whole run, by reason.
    pub decryption_failures_by_reason: BTreeMap<String, u64>,
    /// Frames that failed decryption over the whole run (must be 0).
    pub decryption_failures: u64,
    /// Frames whose key never arrived in time over the whole run.
    pub lost_to_key_change: u64,
    /// Frames sealed before their sender saw the receiver's join, over the
    /// whole run (see [`StepReport::before_join_during_ramp`]).
    pub before_join: u64,
    /// Frames that decrypted but carried no valid stamp (must be 0).
    pub unstamped_frames: u64,
    /// Seconds from the first join until every participant heard every publisher.
    pub ramp_up_seconds: f64,
    /// Whether the run is clean: no decryption failure, no unstamped frame.
    pub ok: bool,
}

struct Slot {
    peer: Peer,
    room: usize,
    /// Just before its `Peer::start`.
    joined_at: Instant,
    /// The step a subscriber joined in (`None`: a publisher).
    step: Option<usize>,
}

struct World {
    connector: Arc<dyn Connector>,
    slots: Vec<Slot>,
    rooms: Vec<Vec<u32>>,
    members: Vec<usize>,
    next_index: u32,
}

impl World {
    fn shapes(&self) -> Vec<RoomShape> {
        self.rooms
            .iter()
            .zip(&self.members)
            .map(|(p, m)| RoomShape {
                publishers: p.clone(),
                members: *m,
            })
            .collect()
    }

    /// Adds a participant that finished joining. Slots are kept in stamp
    /// index order: the window's sums and readiness checks rely on it.
    fn admit(&mut self, index: u32, publishes: bool, slot: Slot) {
        debug_assert_eq!(index as usize, self.slots.len(), "slots out of join order");
        if publishes {
            self.rooms[slot.room].push(index);
        }
        self.members[slot.room] += 1;
        self.slots.push(slot);
    }

    /// The next stamp index and its join to `room`.
    fn next_join(
        &mut self,
        target: &Target,
        room: usize,
        publishes: bool,
    ) -> Result<(u32, JoinSpec), Error> {
        let index = self.next_index;
        self.next_index += 1;
        let name = format!("{}{index}", if publishes { "p" } else { "s" });
        let join = JoinSpec {
            server: target.join_url(index).to_owned(),
            room: room_name(room),
            token: target.token(&room_name(room), &name)?,
            name,
            ca_file: None,
            // `--server` is the operator's own server, whose secret the
            // load tester holds; ws:// to it is their choice.
            insecure: true,
        };
        Ok((index, join))
    }

    fn tallies(&self) -> Vec<SharedTally> {
        self.slots
            .iter()
            .map(|s| Arc::clone(&s.peer.tally))
            .collect()
    }
}

fn room_name(r: usize) -> String {
    format!("load-{r}")
}

/// Runs the load test against `target` and reports. The target is stopped at the end.
pub async fn run(spec: &LoadSpec, target: Target) -> Result<LoadReport, Error> {
    let result = run_on(spec, &target).await;
    target.stop().await;
    result
}

async fn run_on(spec: &LoadSpec, target: &Target) -> Result<LoadReport, Error> {
    if spec.rooms == 0 || spec.publishers == 0 || spec.seconds == 0 {
        return Err(Error::Invalid(
            "load: rooms, publishers and seconds must be at least 1",
        ));
    }
    if !(0.0..=MAX_LOSS_PERCENT).contains(&spec.loss.percent) {
        return Err(Error::Invalid("load: simulated loss is 0 to 50 %"));
    }
    if spec.loss.percent > 0.0 && spec.clients == Clients::WebRtc {
        return Err(Error::Invalid(
            "load: loss is simulated by the sans-io clients only",
        ));
    }
    if let Some(storm) = spec.storm {
        if storm < Duration::from_secs(1) {
            return Err(Error::Invalid("load: a join storm lasts at least 1 s"));
        }
        if spec.subscribers == 0 {
            return Err(Error::Invalid(
                "load: a join storm needs subscribers in the first step",
            ));
        }
    }
    let media = Publish {
        audio_bytes: spec.audio_bytes,
        video: spec.video_kbps.map(|k| VideoLoad::at(k, spec.video_fps)),
    };
    let before = target.sample().await?;
    let mut world = World {
        connector: spec.clients.connector(spec)?,
        slots: Vec::new(),
        rooms: vec![Vec::new(); spec.rooms],
        members: vec![0; spec.rooms],
        next_index: 0,
    };
    let started = Instant::now();
    let mut ramp_up_seconds = 0.0;
    let mut steps: Vec<StepReport> = Vec::new();
    let mut shapes: Vec<Vec<RoomShape>> = Vec::new();
    let mut ramp_stopped_by = None;
    let mut targets: Vec<usize> = vec![spec.subscribers];
    if let Some(r) = spec.ramp {
        let step = r.step.max(1);
        let mut s = spec.subscribers + step;
        while s <= r.max_subscribers {
            targets.push(s);
            s += step;
        }
    }
    // Frames lost to key changes when the last step's window closed.
    let mut before_ramp = KeyCounts::default();
    let outcome: Result<(), Error> = async {
        join_publishers(spec, target, &mut world, media).await?;
        for (i, &subs) in targets.iter().enumerate() {
            let storm = spec.storm.filter(|_| i == 0);
            let ready = match join_subscribers(spec, target, &mut world, subs, i, storm).await {
                Ok(()) => wait_ready(spec, &world).await,
                Err(e) => Err(e),
            };
            if let Err(e) = ready {
                if i == 0 {
                    return Err(e);
                }
                // A later ramp step that cannot even connect is a load not held.
                ramp_stopped_by = Some(format!("{subs} subscribers per room: {e}"));
                break;
            }
            if i == 0 {
                ramp_up_seconds = started.elapsed().as_secs_f64();
            }
            let at_ramp_up = key_counts(&world).await;
            let mut step = match measure_sfu(spec, target, &world, subs, &before).await {
                Ok(step) => step,
                Err(e) if i > 0 => {
                    // Steps measured so far stand; this load was not held.
                    ramp_stopped_by = Some(format!("{subs} subscribers per room: {e}"));
                    break;
                }
                Err(e) => return Err(e),
            };
            step.lost_to_key_change_during_ramp = at_ramp_up.lost.saturating_sub(before_ramp.lost);
            step.before_join_during_ramp = at_ramp_up
                .before_join
                .saturating_sub(before_ramp.before_join);
            step.join_to_first_frame_ms = join_to_first_frame(&world, i);
            before_ramp = key_counts(&world).await;
            let held = step.held;
            steps.push(step);
            shapes.push(world.shapes());
            if spec.ramp.is_some() && !held {
                break;
            }
        }
        Ok(())
    }
    .await;
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut lost_to_key_change = 0;
    let mut before_join = 0;
    let mut unstamped = 0;
    for s in &world.slots {
        let st = s.peer.stats().await;
        for (reason, n) in st.failed {
            *failures.entry(reason.to_owned()).or_default() += n;
        }
        lost_to_key_change += st.lost_to_key_change;
        before_join += st.before_join;
        unstamped += lock(&s.peer.tally).unstamped;
    }
    // Ending a peer can fail (its connection already down); the report is complete by now.
    futures_util::future::join_all(world.slots.drain(..).map(|s| s.peer.stop())).await;
    outcome?;
    if spec.baseline {
        // Let the ended connections' last work drain before timing the relay.
        tokio::time::sleep(Duration::from_secs(2)).await;
        for (step, shape) in steps.iter_mut().zip(&shapes) {
            // An audio packet as the SFU forwards it: the frame, SFrame's
            // header and tag, the RTP header (104 bytes for 80-byte frames,
            // as the SFU's byte counter shows), with RED each earlier frame
            // again and a 4-byte block header, plus 1 byte for the
            // primary's (PROTOCOL.md §11); video packets are 1,200 bytes.
            let frame = spec.audio_bytes + AUDIO_OVERHEAD_BYTES;
            let red = spec.audio_redundancy.min(hush_proto::red::MAX_REDUNDANT);
            let packet_bytes = if red == 0 {
                frame
            } else {
                frame + red * (frame + 4) + 1
            };
            let b = match measure_relay(
                spec,
                shape,
                packet_bytes.clamp(relay::HEADER_LEN + stamp::STAMP_LEN, 1200),
            )
            .await
            {
                Ok(b) => b,
                Err(e) => {
                    // The SFU's figures stand without their baseline.
                    step.baseline_error = Some(e.to_string());
                    continue;
                }
            };
            step.ratio_to_udp_relay = match (
                step.forwarded_packets_per_cpu_second,
                b.forwarded_packets_per_cpu_second,
            ) {
                (Some(s), Some(r)) if r > 0.0 => Some(s / r),
                _ => None,
            };
            step.baseline = Some(b);
        }
    }
    let decryption_failures: u64 = failures.values().sum();
    let largest_held = spec.ramp.and_then(|_| {
        steps
            .iter()
            .filter(|s| s.held)
            .map(|s| s.subscribers_per_room)
            .max()
    });
    let result = largest_held
        .and_then(|n| steps.iter().find(|s| s.subscribers_per_room == n))
        .or_else(|| steps.first())
        .cloned()
        .ok_or_else(|| Error::LoadTest("no load step was measured".into()))?;
    Ok(LoadReport {
        config: ConfigReport {
            server: if target.is_embedded() {
                "embedded".into()
            } else {
                target.url.clone()
            },
            rooms: spec.rooms,
            publishers: spec.publishers,
            subscribers: spec.subscribers,
            seconds: spec.seconds,
            audio_frame_bytes: spec.audio_bytes,
            video_kbps: spec.video_kbps,
            ramp: spec.ramp.is_some(),
            storm_seconds: spec.storm.map(|d| d.as_secs_f64()),
            clients: spec.clients,
            audio_redundancy: spec.audio_redundancy,
            downlink_loss_percent: spec.loss.percent,
            loss_seed: spec.loss.seed,
        },
        result,
        steps,
        largest_held_subscribers_per_room: largest_held,
        ramp_stopped_by,
        decryption_failures_by_reason: failures,
        decryption_failures,
        lost_to_key_change,
        before_join,
        unstamped_frames: unstamped,
        ramp_up_seconds,
        ok: decryption_failures == 0 && unstamped == 0,
    })
}

/// Joins `who` (room, publishes), [`JOIN_CONCURRENCY`] at a time. With
/// `paced`, each group of subscribers must hear every publisher of its room
/// before the next joins: every join costs every member e2ee work (a key
/// package to verify, an envelope to seal), and joining faster than the
/// machine does that work only builds a queue in which the newcomers'
/// handshakes time out. `step` is the step subscribers join in (`None`
/// for publishers).
async fn join_many(
    spec: &LoadSpec,
    target: &Target,
    world: &mut World,
    who: Vec<(usize, bool)>,
    media: Publish,
    paced: bool,
    step: Option<usize>,
) -> Result<(), Error> {
    let (video, progress) = (spec.video_kbps.is_some(), spec.progress);
    let total = who.len();
    let bar = progress::bar("joining", total as u64, "participants", progress);
    for chunk in who.chunks(JOIN_CONCURRENCY) {
        let mut joins = Vec::new();
        for &(room, publishes) in chunk {
            let (index, join) = world.next_join(target, room, publishes)?;
            let connector = Arc::clone(&world.connector);
            let publish = publishes.then_some(media);
            joins.push(async move {
                let peer = start_peer(join, index, publish, video, connector).await;
                (room, index, publishes, peer)
            });
        }
        let first = world.slots.len();
        for (room, index, publishes, peer) in futures_util::future::join_all(joins).await {
            let (peer, joined_at) = peer?;
            let slot = Slot {
                peer,
                room,
                joined_at,
                step,
            };
            world.admit(index, publishes, slot);
        }
        if paced {
            settle(world, first, video).await?;
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(())
}

async fn join_publishers(
    spec: &LoadSpec,
    target: &Target,
    world: &mut World,
    media: Publish,
) -> Result<(), Error> {
    let who = (0..spec.rooms)
        .flat_map(|r| (0..spec.publishers).map(move |_| (r, true)))
        .collect();
    join_many(spec, target, world, who, media, false, None).await
}

/// Starts a participant, bounded by [`JOIN_SETTLE`]; returns it with the
/// instant its join started.
async fn start_peer(
    join: JoinSpec,
    index: u32,
    publish: Option<Publish>,
    video: bool,
    connector: Arc<dyn Connector>,
) -> Result<(Peer, Instant), Error> {
    let joined_at = Instant::now();
    // Bounded: a machine too loaded to finish a join stops the step with a
    // reason rather than hanging the load test.
    let start = Peer::start(&join, index, publish, video, connector);
    match tokio::time::timeout(JOIN_SETTLE, start).await {
        Ok(peer) => peer.map(|p| (p, joined_at)),
        Err(_) => Err(Error::LoadTest(format!(
            "participant {index} did not finish joining within {} s",
            JOIN_SETTLE.as_secs()
        ))),
    }
}

/// Joins the subscribers that bring every room to `per_room` in step
/// `step`: paced, or with `storm` as a join storm over that long.
async fn join_subscribers(
    spec: &LoadSpec,
    target: &Target,
    world: &mut World,
    per_room: usize,
    step: usize,
    storm: Option<Duration>,
) -> Result<(), Error> {
    let mut who = Vec::new();
    for r in 0..spec.rooms {
        let have = world.members[r] - world.rooms[r].len();
        who.extend((have..per_room).map(|_| (r, false)));
    }
    let media = Publish {
        audio_bytes: spec.audio_bytes,
        video: None,
    };
    match storm {
        Some(over) => join_storm(spec, target, world, who, media, step, over).await,
        None => join_many(spec, target, world, who, media, true, Some(step)).await,
    }
}

/// Joins `who` as a storm, the way a meeting starts: unpaced, each join
/// started at its share of `over` (200 over 10 s: one every 50 ms) and
/// running concurrently with the others, then waits until every one hears
/// every publisher of its room. Rooms take turns, so each fills over the
/// whole storm.
async fn join_storm(
    spec: &LoadSpec,
    target: &Target,
    world: &mut World,
    who: Vec<(usize, bool)>,
    media: Publish,
    step: usize,
    over: Duration,
) -> Result<(), Error> {
    let video = spec.video_kbps.is_some();
    // `who` is grouped by room: order it by place within its room (the sort is stable).
    let mut place = vec![0usize; world.rooms.len()];
    let mut who: Vec<(usize, (usize, bool))> = who
        .into_iter()
        .map(|(room, publishes)| {
            let k = place[room];
            place[room] += 1;
            (k, (room, publishes))
        })
        .collect();
    who.sort_by_key(|&(k, _)| k);
    let total = who.len();
    let bar = progress::bar(
        "joining (storm)",
        total as u64,
        "participants",
        spec.progress,
    );
    let first = world.slots.len();
    let mut joins = tokio::task::JoinSet::new();
    // Each join's result, by its place in the storm: slots are admitted in
    // stamp index order once all are in, whatever order they finish in.
    let mut joined: Vec<Option<(u32, Peer, Instant)>> =
        std::iter::repeat_with(|| None).take(total).collect();
    let t0 = tokio::time::Instant::now();
    let mut next = 0;
    while next < total || !joins.is_empty() {
        let due = t0 + over.mul_f64(next as f64 / total as f64);
        tokio::select! {
            () = tokio::time::sleep_until(due), if next < total => {
                let (_, (room, publishes)) = who[next];
                let (index, join) = world.next_join(target, room, publishes)?;
                let connector = Arc::clone(&world.connector);
                let publish = publishes.then_some(media);
                let k = next;
                joins.spawn(async move {
                    (k, index, start_peer(join, index, publish, video, connector).await)
                });
                next += 1;
            }
            Some(done) = joins.join_next(), if !joins.is_empty() => {
                let (k, index, peer) = done
                    .map_err(|e| Error::LoadTest(format!("a join of the storm failed: {e}")))?;
                // An error ends the storm; dropping `joins` aborts the joins still running.
                let (peer, joined_at) = peer?;
                joined[k] = Some((index, peer, joined_at));
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();
    for ((_, (room, publishes)), peer) in who.into_iter().zip(joined) {
        let (index, peer, joined_at) =
            peer.ok_or_else(|| Error::LoadTest("a join of the storm never finished".into()))?;
        let slot = Slot {
            peer,
            room,
            joined_at,
            step: Some(step),
        };
        world.admit(index, publishes, slot);
    }
    settle(world, first, video).await
}

/// The step's join-to-first-frame figures, over the subscribers that joined in it.
fn join_to_first_frame(world: &World, step: usize) -> JoinToFirstFrame {
    let mut times = Vec::new();
    let mut missing = 0;
    for s in world.slots.iter().filter(|s| s.step == Some(step)) {
        let heard_all = lock(&s.peer.tally).heard_all_at(&world.rooms[s.room]);
        match heard_all {
            Some(at) => times.push(at.saturating_duration_since(s.joined_at)),
            None => missing += 1,
        }
    }
    JoinToFirstFrame::of(&mut times, missing)
}

/// Frames that did not open for want of a key, so far, summed over every
/// participant.
#[derive(Debug, Default, Clone, Copy)]
struct KeyCounts {
    /// Lost to key changes.
    lost: u64,
    /// Sealed before their sender saw the receiver's join.
    before_join: u64,
}

/// [`KeyCounts`] of every participant so far.
async fn key_counts(world: &World) -> KeyCounts {
    let mut total = KeyCounts::default();
    for s in &world.slots {
        let st = s.peer.stats().await;
        total.lost += st.lost_to_key_change;
        total.before_join += st.before_join;
    }
    total
}

/// Waits until the participants from slot `first` on hear every publisher
/// of their rooms (their media is up and they hold the publishers' keys).
async fn settle(world: &World, first: usize, video: bool) -> Result<(), Error> {
    let deadline = Instant::now() + JOIN_SETTLE;
    loop {
        let mut waiting = None;
        for (i, s) in world.slots.iter().enumerate().skip(first) {
            if s.peer.finished() {
                let why = s.peer.failure().unwrap_or_else(|| "it stopped".into());
                return Err(Error::LoadTest(format!(
                    "participant {i} ended while joining: {why}"
                )));
            }
            if missing_publishers(world, i, video).is_some() {
                waiting = Some(i);
                break;
            }
        }
        let Some(i) = waiting else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            // Which stage it stopped at: no frames at all (media never
            // connected or the SFU never forwarded), frames but no key,
            // or frames refused.
            let st = session_of(&world.slots[i].peer).await;
            return Err(Error::LoadTest(format!(
                "participant {i} did not hear every publisher within {} s of joining; its session: {st}",
                JOIN_SETTLE.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A participant's frame counters for an error message, or why there are
/// none: a call driver stuck in a join does not answer, and the message
/// must not wait for it.
async fn session_of(peer: &Peer) -> String {
    match tokio::time::timeout(Duration::from_secs(5), peer.stats()).await {
        Ok(st) => format!("{st:?}"),
        Err(_) => "its call driver did not answer within 5 s".to_owned(),
    }
}

/// What slot `i` has heard, if that is not yet every publisher of its room.
fn missing_publishers(
    world: &World,
    i: usize,
    video: bool,
) -> Option<BTreeSet<(u32, &'static str)>> {
    let s = world.slots.get(i)?;
    // Stamp indices are handed out in join order, one per slot. The
    // tally's lock is held only here, never across an await: the peer's
    // driver takes it for every frame it receives.
    let t = lock(&s.peer.tally);
    let all = expected_heard(world, s.room, i as u32, video)
        .iter()
        .all(|k| t.heard.contains(k));
    (!all).then(|| t.heard.clone())
}

/// Who a member of `room` must hear: every other publisher, audio (and video).
fn expected_heard(world: &World, room: usize, me: u32, video: bool) -> Vec<(u32, &'static str)> {
    let mut out = Vec::new();
    for &p in world.rooms[room].iter().filter(|&&p| p != me) {
        out.push((p, "audio"));
        if video {
            out.push((p, "video"));
        }
    }
    out
}

async fn wait_ready(spec: &LoadSpec, world: &World) -> Result<(), Error> {
    let bound = Duration::from_secs(30) + Duration::from_millis(250) * world.slots.len() as u32;
    let deadline = Instant::now() + bound;
    let video = spec.video_kbps.is_some();
    let bar = progress::bar(
        "waiting for media",
        world.slots.len() as u64,
        "participants",
        spec.progress,
    );
    loop {
        let mut waiting = 0;
        let mut example = String::new();
        for (i, s) in world.slots.iter().enumerate() {
            if s.peer.finished() {
                let why = s.peer.failure().unwrap_or_else(|| "it stopped".into());
                return Err(Error::LoadTest(format!(
                    "participant {i} ended during ramp-up: {why}"
                )));
            }
            if let Some(heard) = missing_publishers(world, i, video) {
                waiting += 1;
                if example.is_empty() {
                    let st = session_of(&s.peer).await;
                    example = format!("; e.g. participant {i} heard {heard:?}, its session: {st}");
                }
            }
        }
        if waiting == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::LoadTest(format!(
                "{waiting} of {} participants did not hear every publisher within {} s{example}",
                world.slots.len(),
                bound.as_secs()
            )));
        }
        bar.set_position((world.slots.len() - waiting) as u64);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Opens a window on every tally, waits it out with a progress bar, and
/// closes it after the drain.
async fn window(
    tallies: &[SharedTally],
    seconds: u64,
    label: &str,
    progress: bool,
) -> (Window, Vec<WindowCounts>) {
    // Every tally is open before the window starts, so no frame counts on one side only.
    let lead = Duration::from_millis(100);
    let start_us = stamp::now_us() + lead.as_micros() as u64;
    let w = Window {
        start_us,
        end_us: start_us + seconds * 1_000_000,
    };
    for t in tallies {
        lock(t).open(w);
    }
    tokio::time::sleep(Duration::from_micros(
        start_us.saturating_sub(stamp::now_us()),
    ))
    .await;
    let t0 = Instant::now();
    let total = Duration::from_secs(seconds);
    let bar = progress::bar(label, seconds, "s", progress);
    while t0.elapsed() < total {
        if progress {
            let received: u64 = tallies
                .iter()
                .map(|t| lock(t).received.values().sum::<u64>())
                .sum();
            let secs = t0.elapsed().as_secs_f64().max(1e-3);
            bar.set_position(t0.elapsed().as_secs().min(seconds));
            bar.set_message(format!("{:.0} frames/s received", received as f64 / secs));
        }
        tokio::time::sleep((total.saturating_sub(t0.elapsed())).min(Duration::from_millis(250)))
            .await;
    }
    bar.finish_and_clear();
    tokio::time::sleep(DRAIN).await;
    let counts = tallies.iter().map(|t| lock(t).close()).collect();
    (w, counts)
}

/// A window's delivery of all frames, of audio frames alone, and latency.
fn add_up(shapes: &[RoomShape], counts: &mut [WindowCounts]) -> (Delivery, Delivery, Latency) {
    let mut sent_by: BTreeMap<u32, BTreeMap<&'static str, u64>> = BTreeMap::new();
    for (i, c) in counts.iter().enumerate() {
        if !c.sent.is_empty() {
            sent_by.insert(i as u32, c.sent.clone());
        }
    }
    let received: Vec<tally::Received<'_>> =
        counts.iter().map(|c| (&c.received, &c.recovered)).collect();
    let delivery = tally::delivery(shapes, &sent_by, &received, None);
    let audio = tally::delivery(
        shapes,
        &sent_by,
        &received,
        Some(tally::codec_label(Codec::Opus)),
    );
    let mut all: Vec<u32> = counts
        .iter_mut()
        .flat_map(|c| std::mem::take(&mut c.latencies_us))
        .collect();
    (delivery, audio, Latency::of(&mut all))
}

async fn measure_sfu(
    spec: &LoadSpec,
    target: &Target,
    world: &World,
    subscribers: usize,
    before: &Samples,
) -> Result<StepReport, Error> {
    let failures_before = failures(world).await;
    let all0 = target.sample().await?;
    let t0 = Instant::now();
    let generator0 = hush_sfu::metrics::process_cpu_seconds();
    let label = format!("sfu  {subscribers:>4} subs/room");
    let (_, mut counts) = window(&world.tallies(), spec.seconds, &label, spec.progress).await;
    // The server's counters over the window and its drain: rates use that span.
    let all1 = target.sample().await?;
    let generator1 = hush_sfu::metrics::process_cpu_seconds();
    let secs = t0.elapsed().as_secs_f64();
    let nodes = node_steps(target, &all0, &all1, secs);
    let (m0, m1) = (all0.total, all1.total);
    let (delivery, audio_delivery, latency) = add_up(&world.shapes(), &mut counts);
    let forwarded = m1.packets_out.saturating_sub(m0.packets_out);
    let audio_packets = m1.audio_packets_out.saturating_sub(m0.audio_packets_out);
    let audio_bytes = m1.audio_bytes_out.saturating_sub(m0.audio_bytes_out);
    let cpu = match (m0.cpu_seconds, m1.cpu_seconds) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let receivers: usize = world
        .rooms
        .iter()
        .zip(&world.members)
        .map(|(p, m)| if p.len() > 1 { *m } else { m - p.len() })
        .sum();
    let memory_per_subscriber = match (m1.peak_rss_bytes, before.total.rss_bytes) {
        (Some(peak), Some(base)) if receivers > 0 => {
            Some(peak.saturating_sub(base) as f64 / receivers as f64)
        }
        _ => None,
    };
    let held = delivery.loss_percent <= HELD_MAX_LOSS_PERCENT && latency.p99_ms <= HELD_MAX_P99_MS;
    Ok(StepReport {
        subscribers_per_room: subscribers,
        participants: world.slots.len(),
        seconds: secs,
        forwarded_packets: forwarded,
        forwarded_packets_per_sec: forwarded as f64 / secs,
        forwarded_bits_per_sec: m1.bytes_out.saturating_sub(m0.bytes_out) as f64 * 8.0 / secs,
        sfu_dropped_packets: m1.dropped.saturating_sub(m0.dropped),
        delivery,
        loss_percent: delivery.loss_percent,
        audio_delivery,
        forwarded_audio_bits_per_sec: audio_bytes as f64 * 8.0 / secs,
        forwarded_audio_bytes_per_packet: (audio_packets > 0)
            .then(|| audio_bytes as f64 / audio_packets as f64),
        latency,
        decryption_failures: failures(world).await.saturating_sub(failures_before),
        sfu_cpu_seconds: cpu,
        sfu_cpu_percent_of_one_core: cpu.map(|c| 100.0 * c / secs),
        generator_cpu_percent_of_one_core: generator0
            .zip(generator1)
            .map(|(a, b)| 100.0 * (b - a) / secs),
        forwarded_packets_per_cpu_second: cpu.filter(|c| *c > 0.0).map(|c| forwarded as f64 / c),
        sfu_peak_memory_bytes: m1.peak_rss_bytes,
        sfu_memory_per_subscriber_bytes: memory_per_subscriber,
        held,
        baseline: None,
        ratio_to_udp_relay: None,
        baseline_error: None,
        join_to_first_frame_ms: JoinToFirstFrame::default(),
        nodes,
        lost_to_key_change_during_ramp: 0,
        before_join_during_ramp: 0,
    })
}

async fn failures(world: &World) -> u64 {
    let mut total = 0;
    for s in &world.slots {
        total += s.peer.stats().await.failed.values().sum::<u64>();
    }
    total
}

/// What a publishing member of the relay baseline sends.
#[derive(Debug, Clone, Copy)]
struct RelayPublish {
    /// Its stamp index.
    index: u32,
    /// Bytes of each audio packet.
    audio_bytes: usize,
    /// Video frames, split into 1,200-byte packets.
    video: Option<VideoLoad>,
}

/// One member of the relay baseline: a UDP socket that joins its room,
/// sends stamped packets if it publishes, and counts what arrives.
async fn relay_member(
    socket: tokio::net::UdpSocket,
    relay_addr: std::net::SocketAddr,
    room: u32,
    publish: Option<RelayPublish>,
    tally: SharedTally,
) {
    let mut buf = vec![0u8; relay::MAX_PACKET];
    let mut audio_tick = tokio::time::interval(Duration::from_millis(20));
    let fps = publish.and_then(|p| p.video).map_or(15, |v| v.fps);
    let mut video_tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(fps)));
    let (mut audio_seq, mut video_seq, mut frames) = (0u64, 0u64, 0u64);
    let packet = |codec: Codec, index: u32, seq: u64, bytes: usize| -> (Vec<u8>, u64) {
        let mut p = relay::header(relay::MEDIA, room).to_vec();
        p.resize(bytes.max(relay::HEADER_LEN + stamp::STAMP_LEN), 0xa5);
        let sent_us = stamp::now_us();
        stamp::write_at(
            &mut p[relay::HEADER_LEN..],
            Stamp {
                publisher: index,
                codec,
                seq,
                sent_us,
            },
        );
        (p, sent_us)
    };
    // Joins are datagrams too: repeat them (the relay ignores repeats) until
    // something arrives, a bounded number of times.
    let mut join_tick = tokio::time::interval(Duration::from_millis(250));
    let mut joins_left = 240u32;
    loop {
        tokio::select! {
            r = socket.recv(&mut buf) => {
                let Ok(n) = r else { continue };
                joins_left = 0;
                if let Some(s) = buf.get(relay::HEADER_LEN..n).and_then(stamp::read_at) {
                    lock(&tally).on_received(s, false, stamp::now_us(), Instant::now());
                }
            }
            _ = join_tick.tick(), if joins_left > 0 => {
                joins_left -= 1;
                let _ = socket.send_to(&relay::header(relay::JOIN, room), relay_addr).await;
            }
            _ = audio_tick.tick(), if publish.is_some() => {
                if let Some(RelayPublish { index, audio_bytes, .. }) = publish {
                    let (p, at) = packet(Codec::Opus, index, audio_seq, audio_bytes);
                    audio_seq += 1;
                    if socket.send_to(&p, relay_addr).await.is_ok() {
                        lock(&tally).on_sent(Codec::Opus, at);
                    }
                }
            }
            _ = video_tick.tick(), if publish.and_then(|p| p.video).is_some() => {
                if let Some(RelayPublish { index, video: Some(v), .. }) = publish {
                    let key = frames % u64::from(v.key_every.max(1)) == 0;
                    let bytes = if key { v.frame_bytes * 4 } else { v.frame_bytes };
                    frames += 1;
                    // The SFU's packets are at most about 1,200 bytes: split frames alike.
                    for _ in 0..bytes.div_ceil(1200).max(1) {
                        let (p, at) = packet(Codec::Vp8, index, video_seq, 1200);
                        video_seq += 1;
                        if socket.send_to(&p, relay_addr).await.is_ok() {
                            lock(&tally).on_sent(Codec::Vp8, at);
                        }
                    }
                }
            }
        }
    }
}

async fn measure_relay(
    spec: &LoadSpec,
    shapes: &[RoomShape],
    packet_bytes: usize,
) -> Result<BaselineReport, Error> {
    let io = Error::io("udp relay");
    let relay = relay::UdpRelay::start(Duration::from_secs(spec.seconds + 60)).map_err(&io)?;
    let video = spec.video_kbps.map(|k| VideoLoad::at(k, spec.video_fps));
    let mut tasks = Vec::new();
    let mut tallies = Vec::new();
    let mut relay_shapes = Vec::new();
    let mut index = 0u32;
    for (r, shape) in shapes.iter().enumerate() {
        let mut publishers = Vec::new();
        for m in 0..shape.members {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .map_err(&io)?;
            let publish = (m < shape.publishers.len()).then_some(RelayPublish {
                index,
                audio_bytes: packet_bytes,
                video,
            });
            if publish.is_some() {
                publishers.push(index);
            }
            let tally = SharedTally::default();
            tallies.push(Arc::clone(&tally));
            tasks.push(tokio::spawn(relay_member(
                socket, relay.addr, r as u32, publish, tally,
            )));
            index += 1;
        }
        relay_shapes.push(RoomShape {
            publishers,
            members: shape.members,
        });
    }
    // Every member hears every publisher of its room before the window opens.
    let bound = Duration::from_secs(20) + Duration::from_millis(50) * tasks.len() as u32;
    let deadline = Instant::now() + bound;
    let mut base = 0usize;
    let mut expected: Vec<Vec<(u32, &'static str)>> = Vec::new();
    for shape in &relay_shapes {
        for i in 0..shape.members {
            let me = (base + i) as u32;
            expected.push(
                shape
                    .publishers
                    .iter()
                    .filter(|&&p| p != me)
                    .flat_map(|&p| {
                        let mut v = vec![(p, "audio")];
                        if video.is_some() {
                            v.push((p, "video"));
                        }
                        v
                    })
                    .collect(),
            );
        }
        base += shape.members;
    }
    loop {
        let ready = tallies.iter().zip(&expected).all(|(t, e)| {
            let t: std::sync::MutexGuard<'_, Tally> = lock(t);
            e.iter().all(|k| t.heard.contains(k))
        });
        if ready {
            break;
        }
        if Instant::now() >= deadline {
            for t in &tasks {
                t.abort();
            }
            let waiting = tallies
                .iter()
                .zip(&expected)
                .filter(|(t, e)| {
                    let t = lock(t);
                    !e.iter().all(|k| t.heard.contains(k))
                })
                .count();
            return Err(Error::LoadTest(format!(
                "udp relay: {waiting} of {} members did not hear every publisher in {} s",
                tallies.len(),
                bound.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let subs = relay_shapes
        .first()
        .map_or(0, |s| s.members - s.publishers.len());
    let (cpu0, fwd0, t0) = (relay.cpu_seconds(), relay.forwarded(), Instant::now());
    let label = format!("relay {subs:>4} subs/room");
    let (_, mut counts) = window(&tallies, spec.seconds, &label, spec.progress).await;
    // Counters over the window and its drain, as for the SFU.
    let (cpu1, fwd1, secs) = (
        relay.cpu_seconds(),
        relay.forwarded(),
        t0.elapsed().as_secs_f64(),
    );
    for t in &tasks {
        t.abort();
    }
    relay.stop().map_err(&io)?;
    let (delivery, _, latency) = add_up(&relay_shapes, &mut counts);
    let forwarded = fwd1.saturating_sub(fwd0);
    let cpu = match (cpu0, cpu1) {
        (Some(a), Some(b)) => b - a,
        _ => 0.0,
    };
    Ok(BaselineReport {
        kind: "udp-relay",
        packet_bytes,
        forwarded_packets: forwarded,
        forwarded_packets_per_sec: forwarded as f64 / secs,
        cpu_seconds: cpu,
        forwarded_packets_per_cpu_second: (cpu > 0.0).then(|| forwarded as f64 / cpu),
        delivery,
        loss_percent: delivery.loss_percent,
        latency,
    })
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{v:.digits$}"))
}

fn mib(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |b| format!("{:.1} MiB", b / 1048576.0))
}

/// The report as a table for the terminal.
pub fn table(r: &LoadReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let c = &r.config;
    let _ = writeln!(
        out,
        "hush loadtest: server {}, {} room(s) x ({} publisher(s) + {} subscriber(s)), {} s per step{}, {} clients, {}{}{}",
        c.server,
        c.rooms,
        c.publishers,
        c.subscribers,
        c.seconds,
        c.video_kbps
            .map_or_else(String::new, |k| format!(", video {k} kbit/s")),
        match c.clients {
            Clients::SansIo { hubs } => format!("sans-IO ({hubs} hubs)"),
            Clients::WebRtc => "webrtc-rs".into(),
        },
        match c.audio_redundancy {
            0 => "audio without redundancy".to_owned(),
            n => format!("audio with RED ({n} earlier frames)"),
        },
        if c.downlink_loss_percent > 0.0 {
            format!(
                ", {} % downlink loss simulated at every receiver (seed {})",
                c.downlink_loss_percent, c.loss_seed
            )
        } else {
            String::new()
        },
        c.storm_seconds.map_or_else(String::new, |s| format!(
            ", join storm: the first step's joins started over {s} s"
        ))
    );
    let _ = writeln!(
        out,
        "\n{:>9} {:>12} {:>11} {:>7} {:>8} {:>7} {:>7} {:>7} {:>9} {:>12} {:>12} {:>8}",
        "subs/room",
        "fwd pkt/s",
        "fwd Mbit/s",
        "loss %",
        "recov %",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "SFU CPU %",
        "pkt/CPU-s",
        "relay pkt/CPU-s",
        "ratio"
    );
    for s in &r.steps {
        let _ = writeln!(
            out,
            "{:>9} {:>12.0} {:>11.2} {:>7.2} {:>8.2} {:>7.1} {:>7.1} {:>7.1} {:>9} {:>12} {:>15} {:>8}{}",
            s.subscribers_per_room,
            s.forwarded_packets_per_sec,
            s.forwarded_bits_per_sec / 1e6,
            s.loss_percent,
            s.delivery.recovered_percent,
            s.latency.p50_ms,
            s.latency.p95_ms,
            s.latency.p99_ms,
            opt(s.sfu_cpu_percent_of_one_core, 1),
            opt(s.forwarded_packets_per_cpu_second, 0),
            opt(
                s.baseline
                    .as_ref()
                    .and_then(|b| b.forwarded_packets_per_cpu_second),
                0
            ),
            opt(s.ratio_to_udp_relay, 3),
            if s.held { "" } else { "  (not held)" }
        );
    }
    let _ = writeln!(
        out,
        "(loss %: frames never received, after recovery; recov %: frames recovered from redundant copies)"
    );
    let _ = writeln!(out);
    for s in r.steps.iter().filter(|s| s.nodes.len() > 1) {
        let shares: Vec<String> = s
            .nodes
            .iter()
            .map(|n| {
                format!(
                    "{} {:.0} pkt/s, CPU {} %",
                    n.url,
                    n.forwarded_packets as f64 / s.seconds.max(1e-9),
                    opt(n.sfu_cpu_percent_of_one_core, 1)
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "{:>9} subs/room, per node: {}",
            s.subscribers_per_room,
            shares.join("; ")
        );
    }
    for s in &r.steps {
        let a = &s.audio_delivery;
        let _ = writeln!(
            out,
            "{:>9} subs/room: audio frames {} expected, {} from their own packet, {} recovered ({:.2} %), {} lost ({:.2} %; {:.2} % before recovery); {} bytes per forwarded audio packet, {:.1} kbit/s of audio forwarded",
            s.subscribers_per_room,
            a.expected,
            a.received.saturating_sub(a.recovered),
            a.recovered,
            a.recovered_percent,
            a.lost,
            a.loss_percent,
            a.loss_before_recovery_percent,
            opt(s.forwarded_audio_bytes_per_packet, 1),
            s.forwarded_audio_bits_per_sec / 1e3
        );
    }
    for s in &r.steps {
        let j = &s.join_to_first_frame_ms;
        let _ = writeln!(
            out,
            "{:>9} subs/room: load generator (this process, every simulated participant) {} % of a core in the window",
            s.subscribers_per_room,
            opt(s.generator_cpu_percent_of_one_core, 1),
        );
        let _ = writeln!(
            out,
            "{:>9} subs/room: join to first frame p50 {} ms, p99 {} ms, max {} ms ({} joined, {} missing); lost to key changes during ramp-up {} (sealed before the sender saw the join: {})",
            s.subscribers_per_room,
            opt(j.p50, 0),
            opt(j.p99, 0),
            opt(j.max, 0),
            j.count,
            j.missing,
            s.lost_to_key_change_during_ramp,
            s.before_join_during_ramp
        );
    }
    let s = &r.result;
    let _ = writeln!(
        out,
        "SFU memory: peak {}, {} per subscriber; SFU dropped {} packets",
        mib(s.sfu_peak_memory_bytes.map(|b| b as f64)),
        s.sfu_memory_per_subscriber_bytes
            .map_or_else(|| "n/a".into(), |b| format!("{:.0} KiB", b / 1024.0)),
        s.sfu_dropped_packets
    );
    if let Some(b) = &s.baseline {
        let _ = writeln!(
            out,
            "UDP relay at the same fan-out: {:.0} pkt/s, {:.3} CPU-s, loss {:.2} %, p99 {:.1} ms ({}-byte packets)",
            b.forwarded_packets_per_sec,
            b.cpu_seconds,
            b.loss_percent,
            b.latency.p99_ms,
            b.packet_bytes
        );
    }
    for st in r.steps.iter().filter(|st| st.baseline_error.is_some()) {
        let _ = writeln!(
            out,
            "UDP relay baseline at {} subscribers per room failed: {}",
            st.subscribers_per_room,
            st.baseline_error.as_deref().unwrap_or_default()
        );
    }
    if let Some(n) = r.largest_held_subscribers_per_room {
        let _ = writeln!(
            out,
            "largest load held (loss <= {HELD_MAX_LOSS_PERCENT} %, p99 <= {HELD_MAX_P99_MS} ms): {n} subscribers per room"
        );
    } else if r.config.ramp {
        let _ = writeln!(out, "no step held its load");
    }
    if let Some(why) = &r.ramp_stopped_by {
        let _ = writeln!(out, "the ramp stopped at {why}");
    }
    let _ = writeln!(
        out,
        "frames: {} decrypted of {} expected ({} of them recovered from redundant copies); decryption failures {}; unstamped {}; lost to key changes {}; sealed before the sender saw the join {}; ramp-up {:.1} s",
        s.delivery.received,
        s.delivery.expected,
        s.delivery.recovered,
        r.decryption_failures,
        r.unstamped_frames,
        r.lost_to_key_change,
        r.before_join,
        r.ramp_up_seconds
    );
    if let Some(ratio) = s.ratio_to_udp_relay {
        let _ = writeln!(
            out,
            "headline: the SFU forwards {:.0} packets per CPU-second, {:.1} % of the raw UDP relay's {:.0}",
            s.forwarded_packets_per_cpu_second.unwrap_or_default(),
            100.0 * ratio,
            s.baseline
                .as_ref()
                .and_then(|b| b.forwarded_packets_per_cpu_second)
                .unwrap_or_default()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_relay_baseline_reaches_every_member_of_a_large_room() {
        let spec = LoadSpec {
            rooms: 1,
            publishers: 1,
            subscribers: 400,
            seconds: 1,
            audio_bytes: 80,
            video_kbps: None,
            video_fps: 15,
            baseline: true,
            ramp: None,
            storm: None,
            progress: false,
            clients: Clients::WebRtc,
            audio_redundancy: 0,
            loss: DownlinkLoss::default(),
        };
        let shape = [RoomShape {
            publishers: vec![0],
            members: 401,
        }];
        let b = measure_relay(&spec, &shape, 104)
            .await
            .expect("relay baseline");
        assert!(b.delivery.expected > 0 && b.delivery.received > 0, "{b:?}");
        assert!(b.forwarded_packets > 0);
    }
}
