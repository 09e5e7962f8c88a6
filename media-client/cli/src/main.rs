//! `hush`: end-to-end encrypted calls from the command line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use hush_client::audio::AudioSource;
use hush_client::call::{EndReason, JoinSpec};
use hush_client::participant::{Observed, Participant, ParticipantSpec};
use hush_client::video::Clip;
use hush_e2ee::Identity;
use hush_e2ee::store::{FilePeerStore, KnownPeers, PeerStatus, load_identity, save_identity};

#[derive(Parser)]
#[command(
    name = "hush",
    version,
    about = "End-to-end encrypted voice and video calls"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A real encrypted group call on this machine, with a report (no setup needed).
    Demo {
        /// Participants (2 to 8).
        #[arg(long, default_value_t = 3)]
        participants: usize,
        /// Length of the call in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Send video (the built-in VP8 clip) as well as audio.
        #[arg(long)]
        video: bool,
    },
    /// Create or show this device's identity.
    Identity {
        #[command(subcommand)]
        action: IdentityAction,
        /// Identity file (default: ~/.config/hush/identity.pem).
        #[arg(long, global = true)]
        identity: Option<PathBuf>,
    },
    /// Join a call on a hush-server.
    ///
    /// Exit status: 0 after a normal leave (Ctrl-C or --seconds); 3 if the
    /// call could not be joined (server unreachable, TLS or token refused);
    /// 4 if the server ended the call or the connection to it was lost; 5
    /// if the media connection failed (ICE restarts, for up to 20 s, did
    /// not bring it back, or it was still down at the end: no frames could
    /// flow); 130 on a second Ctrl-C while leaving; 1 for anything else.
    #[command(alias = "join")]
    Call(CallArgs),
    /// Measure how much media one SFU carries: simulated participants send
    /// real SFrame-encrypted media through it, beside a raw UDP relay baseline.
    Loadtest(LoadtestArgs),
    /// The embedded server of `hush loadtest --embedded` (started by it).
    #[command(hide = true)]
    LoadtestServer {
        /// Stop after this many seconds in any case.
        #[arg(long, default_value_t = 600)]
        max_seconds: u64,
    },
    /// Show the safety numbers of the last call; mark a peer as verified.
    Verify {
        /// Mark this peer (by display name) as verified after comparing numbers.
        #[arg(long)]
        peer: Option<String>,
        /// Configuration directory (default: ~/.config/hush).
        #[arg(long)]
        config_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum IdentityAction {
    /// Create a new identity (refuses to overwrite an existing one).
    New,
    /// Show the identity's fingerprint.
    Show,
}

#[derive(clap::Args)]
struct CallArgs {
    /// Signaling server: wss://HOST[:PORT], or ws://127.0.0.1:7880 on this
    /// machine. Repeat it (or separate with commas) to name other nodes of
    /// the same cluster: if the server shuts down or the connection to it
    /// is lost, the call joins again through the next one (backoff 0.5 to 2 s,
    /// for up to a minute), with the same identity.
    #[arg(long, env = "HUSH_SERVER", required = true, value_delimiter = ',')]
    server: Vec<String>,
    /// How long to keep trying to join again after the server went away, in
    /// seconds (0: end the call at once, exit status 4).
    #[arg(long, default_value_t = 60)]
    rejoin_for: u64,
    /// Also trust the CA certificate(s) in this PEM file for wss:// (a
    /// private CA); the bundled Mozilla roots stay trusted.
    #[arg(long, env = "HUSH_CA_FILE", value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Allow ws:// (no TLS) to a host that is not this machine: the join
    /// token, key packages and SDP then cross the network in clear text,
    /// readable and changeable by anyone on the path. Certificates are
    /// checked as always.
    #[arg(long)]
    insecure: bool,
    /// Room to join.
    #[arg(long)]
    room: String,
    /// Join token (from `hush-server token`).
    #[arg(long, env = "HUSH_TOKEN")]
    token: String,
    /// Display name (must match the token).
    #[arg(long, default_value = "me")]
    name: String,
    /// Audio source: `sine:HZ`, `wav:FILE` (any rate and channels) or `silence`.
    #[arg(long, default_value = "sine:440")]
    audio: String,
    /// Video source: `ivf:FILE` (VP8), or `test` for the built-in clip.
    #[arg(long)]
    video: Option<String>,
    /// Write each remote member's audio (WAV) and video (IVF) here.
    #[arg(long)]
    record: Option<PathBuf>,
    /// Leave after this many seconds (default: until Ctrl-C).
    #[arg(long)]
    seconds: Option<u64>,
    /// Identity file (default: ~/.config/hush/identity.pem, created if missing).
    #[arg(long)]
    identity: Option<PathBuf>,
    /// Configuration directory (default: ~/.config/hush).
    #[arg(long)]
    config_dir: Option<PathBuf>,
    /// Local IP address for media (default: every interface, loopback included).
    #[arg(long, env = "HUSH_BIND")]
    bind: Option<std::net::IpAddr>,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("target").args(["server", "embedded"])))]
struct LoadtestArgs {
    /// A running hush-server (ws://host:port); needs its token secret.
    /// Several comma-separated are the nodes of one cluster: participants
    /// join through each in turn, and each node's share is reported.
    #[arg(long)]
    server: Option<String>,
    /// Start a server with its SFU in a child process on loopback (the default).
    #[arg(long)]
    embedded: bool,
    /// Token secret of --server. Prefer the environment or --secret-file.
    #[arg(
        long,
        env = "HUSH_SECRET",
        hide_env_values = true,
        conflicts_with = "secret_file"
    )]
    secret: Option<String>,
    /// File holding the token secret of --server.
    #[arg(long, env = "HUSH_SECRET_FILE")]
    secret_file: Option<PathBuf>,
    /// A media node of the --server cluster (`hush-sfu --redis`; its
    /// control API, http://HOST:PORT), whose CPU and forwarded packets
    /// are reported too. Repeatable or comma-separated.
    #[arg(long = "media-node", value_delimiter = ',', requires_all = ["server", "sfu_control_secret_file"])]
    media_nodes: Vec<String>,
    /// The media nodes' control secret (their --control-secret-file).
    #[arg(long, value_name = "FILE")]
    sfu_control_secret_file: Option<PathBuf>,
    /// Rooms.
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Publishers per room (they send; everyone receives everyone).
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Subscribers per room (they only receive); with --ramp, the first step.
    #[arg(long, default_value_t = 20)]
    subscribers: usize,
    /// Seconds measured (per step with --ramp).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Publishers send video too (VP8-sized frames at --video-kbps).
    #[arg(long)]
    video: bool,
    /// Video bitrate per publisher, kbit/s.
    #[arg(long, default_value_t = 500)]
    video_kbps: u32,
    /// Video frames per second.
    #[arg(long, default_value_t = 15)]
    video_fps: u32,
    /// Bytes of each 20 ms audio frame (Opus at 32 kbit/s: 80).
    #[arg(long, default_value_t = 80)]
    audio_bytes: usize,
    /// Baseline measured in the same run: `udp-relay` or `none`.
    #[arg(long, default_value = "udp-relay")]
    baseline: String,
    /// Add subscribers step by step until loss passes 1 % or p99 latency 50 ms.
    #[arg(long)]
    ramp: bool,
    /// Subscribers added per room at each ramp step (default: --subscribers).
    #[arg(long)]
    ramp_step: Option<usize>,
    /// Most subscribers per room the ramp tries.
    #[arg(long, default_value_t = 400)]
    ramp_max: usize,
    /// A join storm: the first step's subscribers join unpaced and
    /// concurrently, their joins started evenly over S seconds.
    #[arg(long, value_name = "S", value_parser = clap::value_parser!(u64).range(1..=600))]
    storm_seconds: Option<u64>,
    /// Simulated participants' media: `sans-io` (str0m peers sharing a few
    /// sockets on loopback addresses; cheap, reaches only a server on this
    /// machine) or `webrtc` (a webrtc-rs peer connection each, as `hush call`).
    #[arg(long, default_value = "sans-io")]
    clients: String,
    /// Threads (one socket each) driving the sans-io clients (0: one per core).
    #[arg(long, default_value_t = 0)]
    client_hubs: usize,
    /// Earlier audio frames each audio packet repeats (RFC 2198 RED), as
    /// `hush call` sends them; 0 sends plain Opus.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u8).range(..=2))]
    audio_redundancy: u8,
    /// No audio redundancy: the same as --audio-redundancy 0.
    #[arg(long, conflicts_with = "audio_redundancy")]
    no_red: bool,
    /// Downlink loss: every receiving participant drops PCT % (0-50) of
    /// the media packets it receives, as if lost between the SFU and it
    /// (sans-io clients only).
    #[arg(long, value_name = "PCT", default_value_t = 0.0)]
    loss: f64,
    /// Seed of the packets --loss drops.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Draw throughput and latency against subscribers (with --ramp) as SVG.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Write the report as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

async fn loadtest(args: LoadtestArgs) -> Result<()> {
    use hush::loadtest::{self, LoadSpec, Ramp, server::Target};
    let baseline = match args.baseline.as_str() {
        "udp-relay" => true,
        "none" => false,
        other => bail!("--baseline must be udp-relay or none, not {other:?}"),
    };
    let clients = match args.clients.as_str() {
        "sans-io" => loadtest::Clients::SansIo {
            hubs: if args.client_hubs == 0 {
                std::thread::available_parallelism().map_or(1, |n| n.get())
            } else {
                args.client_hubs.min(64)
            },
        },
        "webrtc" => loadtest::Clients::WebRtc,
        other => bail!("--clients must be sans-io or webrtc, not {other:?}"),
    };
    if args.plot.is_some() && !args.ramp {
        bail!("--plot draws the steps of --ramp; add --ramp");
    }
    if args.storm_seconds.is_some() && args.subscribers == 0 {
        bail!("--storm-seconds joins the subscribers of the first step; --subscribers is 0");
    }
    if args.rooms == 0 || args.publishers == 0 || args.seconds == 0 {
        bail!("--rooms, --publishers and --seconds must be at least 1");
    }
    if !(0.0..=loadtest::MAX_LOSS_PERCENT).contains(&args.loss) {
        bail!("--loss is a percentage from 0 to 50");
    }
    if args.loss > 0.0 && clients == loadtest::Clients::WebRtc {
        bail!("--loss is simulated by the sans-io clients only; drop --clients webrtc");
    }
    let per_room = args
        .publishers
        .saturating_add(
            args.subscribers
                .max(if args.ramp { args.ramp_max } else { 0 }),
        );
    let participants = args.rooms.saturating_mul(per_room);
    if participants > 5_000 || args.seconds > 600 {
        bail!("the load test is bounded: at most 5,000 participants and 600 s per step");
    }
    let spec = LoadSpec {
        rooms: args.rooms,
        publishers: args.publishers,
        subscribers: args.subscribers,
        seconds: args.seconds,
        audio_bytes: args.audio_bytes.clamp(8, 1000),
        video_kbps: args.video.then_some(args.video_kbps.clamp(50, 20_000)),
        video_fps: args.video_fps.clamp(1, 60),
        baseline,
        ramp: args.ramp.then(|| Ramp {
            step: args.ramp_step.unwrap_or(args.subscribers).max(1),
            max_subscribers: args.ramp_max,
        }),
        storm: args.storm_seconds.map(Duration::from_secs),
        progress: hush::progress::stderr_is_terminal(),
        clients,
        audio_redundancy: if args.no_red {
            0
        } else {
            usize::from(args.audio_redundancy)
        },
        loss: loadtest::sansio::DownlinkLoss {
            percent: args.loss,
            seed: args.seed,
        },
    };
    let target = match &args.server {
        Some(url) => {
            let secret = match (&args.secret, &args.secret_file) {
                (Some(text), _) => hush_proto::ServerSecret::new(text.as_bytes().to_vec())?,
                (None, Some(path)) => {
                    hush_proto::ServerSecret::from_file_contents(&zeroize::Zeroizing::new(
                        std::fs::read(path)
                            .with_context(|| format!("reading {}", path.display()))?,
                    ))?
                }
                (None, None) => {
                    bail!("--server needs the server's token secret: --secret-file or HUSH_SECRET")
                }
            };
            let urls: Vec<String> = url
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect();
            let target = Target::external(&urls, secret)?;
            match &args.sfu_control_secret_file {
                Some(file) if !args.media_nodes.is_empty() => {
                    let bytes = zeroize::Zeroizing::new(
                        std::fs::read(file)
                            .with_context(|| format!("reading {}", file.display()))?,
                    );
                    let control = hush_proto::ServerSecret::from_file_contents(&bytes)?;
                    target.with_media_nodes(&args.media_nodes, &control)?
                }
                _ => target,
            }
        }
        None => {
            // The child ends with our standard input; this bound is only a backstop.
            Target::embedded(Duration::from_secs(3600)).await?
        }
    };
    let report = loadtest::run(&spec, target).await?;
    print!("{}", loadtest::table(&report));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        println!("report written to {}", path.display());
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, loadtest::plot::svg(&report.steps))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("plot written to {}", path.display());
    }
    if !report.ok {
        bail!(
            "{} frames failed decryption and {} carried no valid stamp",
            report.decryption_failures,
            report.unstamped_frames
        );
    }
    Ok(())
}

fn config_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_owned();
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("hush")
}

fn load_or_create_identity(path: &Path) -> Result<Identity> {
    if path.exists() {
        return Ok(load_identity(path)?);
    }
    let id = Identity::generate();
    save_identity(path, &id)?;
    eprintln!(
        "created a new identity {} in {}",
        id.public().fingerprint(),
        path.display()
    );
    Ok(id)
}

fn parse_audio(spec: &str) -> Result<AudioSource> {
    if spec == "silence" {
        return Ok(AudioSource::Silence);
    }
    if let Some(hz) = spec.strip_prefix("sine:") {
        let hz: f64 = hz.parse().context("--audio sine:HZ needs a number")?;
        return Ok(AudioSource::sine(hz));
    }
    if let Some(file) = spec.strip_prefix("wav:") {
        return Ok(AudioSource::wav(Path::new(file))?);
    }
    bail!("--audio must be sine:HZ, wav:FILE or silence")
}

fn parse_video(spec: Option<&str>) -> Result<Option<Clip>> {
    match spec {
        None => Ok(None),
        Some("test") => Ok(Some(Clip::test_pattern()?)),
        Some(s) => match s.strip_prefix("ivf:") {
            Some(file) => Ok(Some(Clip::open(Path::new(file))?)),
            None => bail!("--video must be ivf:FILE or test"),
        },
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    // Diagnostics only when asked for (RUST_LOG=hush=debug and the like).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Loadtest(args) => loadtest(args).await,
        Command::LoadtestServer { max_seconds } => {
            hush::loadtest::server::serve_child(Duration::from_secs(max_seconds)).await?;
            Ok(())
        }
        Command::Identity { action, identity } => {
            let path = identity.unwrap_or_else(|| config_dir(None).join("identity.pem"));
            match action {
                IdentityAction::New => {
                    if path.exists() {
                        bail!(
                            "{} already exists; remove it first to replace this identity",
                            path.display()
                        );
                    }
                    let id = Identity::generate();
                    save_identity(&path, &id)?;
                    println!(
                        "created identity {} in {}",
                        id.public().fingerprint(),
                        path.display()
                    );
                }
                IdentityAction::Show => {
                    let id = load_identity(&path)?;
                    println!(
                        "identity {} ({})",
                        id.public().fingerprint(),
                        path.display()
                    );
                }
            }
            Ok(())
        }
        Command::Call(args) => match call(args).await {
            Err(e) => match e.downcast_ref::<CallExit>() {
                Some(exit) => {
                    eprintln!("hush call: {e:#}");
                    std::process::exit(exit.code());
                }
                None => Err(e),
            },
            ok => ok,
        },
        Command::Demo {
            participants,
            seconds,
            video,
        } => {
            let outcome = hush::demo::run_demo(hush::demo::DemoOptions {
                participants,
                seconds,
                video,
                progress: hush::progress::stderr_is_terminal(),
            })
            .await?;
            println!("{}", outcome.report);
            if !outcome.ok {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Verify {
            peer,
            config_dir: dir,
        } => verify(&config_dir(dir.as_deref()), peer.as_deref()),
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct LastCall {
    room: String,
    peers: Vec<LastPeer>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct LastPeer {
    name: String,
    identity: String,
    safety_number: String,
}

/// How `hush call` ended, when not by a normal leave: each has its own
/// exit status (see `hush call --help`).
#[derive(Debug, thiserror::Error)]
enum CallExit {
    /// The call could not be joined.
    #[error("could not join: {0}")]
    NotJoined(String),
    /// The server ended the call, or the connection to it was lost.
    #[error("the server closed the connection")]
    ServerClosed,
    /// The media connection failed (ICE restarts did not bring it back
    /// within 20 s, or it was still down when the call ended); the call
    /// had no media from then on.
    #[error(
        "the media connection failed: no frames could flow (UDP and TCP to the SFU blocked or lost?)"
    )]
    MediaFailed,
}

impl CallExit {
    fn code(&self) -> i32 {
        match self {
            CallExit::NotJoined(_) => 3,
            CallExit::ServerClosed => 4,
            CallExit::MediaFailed => 5,
        }
    }
}

async fn call(args: CallArgs) -> Result<()> {
    let dir = config_dir(args.config_dir.as_deref());
    let identity_file = args
        .identity
        .clone()
        .unwrap_or_else(|| dir.join("identity.pem"));
    let identity = load_or_create_identity(&identity_file)?;
    println!(
        "you are {} in room {}",
        identity.public().fingerprint(),
        args.room
    );
    if let Some(r) = &args.record {
        std::fs::create_dir_all(r).with_context(|| format!("cannot create {}", r.display()))?;
    }
    let mut call = CallState {
        known: KnownPeers::open(FilePeerStore(dir.join("known_peers.json")))?,
        last: LastCall {
            room: args.room.clone(),
            peers: Vec::new(),
        },
        dir,
        deadline: args
            .seconds
            .map(|s| tokio::time::Instant::now() + Duration::from_secs(s)),
    };
    // One listener for the whole call: a Ctrl-C that arrives while the loop
    // body runs is still seen on the next turn.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    // Tokio installs the handler at the first poll: do it now, before
    // joining, so a Ctrl-C right after "joined" is never the default
    // action (killing the process without a leave).
    let early =
        std::future::poll_fn(|cx| std::task::Poll::Ready(ctrl_c.as_mut().poll(cx).is_ready()))
            .await;
    if early {
        return Ok(());
    }
    let mut identity = Some(identity);
    let mut next_server = 0;
    // When the connection was lost, while joining again.
    let mut lost: Option<tokio::time::Instant> = None;
    let mut backoff = Duration::from_millis(500);
    loop {
        let server = &args.server[next_server % args.server.len()];
        let identity = match identity.take() {
            Some(i) => i,
            None => load_or_create_identity(&identity_file)?,
        };
        let ended = stay(&args, server, identity, &mut call, &mut ctrl_c, lost).await;
        let since = match ended {
            Ok(Stay::Done) => return Ok(()),
            Ok(Stay::Lost) => *lost.get_or_insert_with(tokio::time::Instant::now),
            // Joining again failed (the room's node may not be placed anew yet).
            Err(e) => match (lost, e.downcast_ref::<CallExit>()) {
                (Some(since), Some(CallExit::NotJoined(_))) => since,
                _ => return Err(e),
            },
        };
        let rejoin_for = Duration::from_secs(args.rejoin_for);
        if since.elapsed() >= rejoin_for {
            if !rejoin_for.is_zero() {
                eprintln!("\nhush call: could not join again for {rejoin_for:?}; giving up");
            }
            return Err(CallExit::ServerClosed.into());
        }
        // Another server (of the same cluster) if one was named, after a pause.
        next_server += 1;
        let wake = tokio::time::Instant::now() + backoff;
        backoff = (backoff * 2).min(Duration::from_secs(2));
        eprintln!(
            "\nhush call: connection lost; joining again through {} in {:?}",
            args.server[next_server % args.server.len()],
            wake - tokio::time::Instant::now()
        );
        let until_deadline = async {
            match call.deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut ctrl_c => return Err(CallExit::ServerClosed.into()),
            () = until_deadline => return Err(CallExit::ServerClosed.into()),
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}

/// What outlives one stay in the room (a call rejoined after a lost server is several stays).
struct CallState {
    known: KnownPeers<FilePeerStore>,
    last: LastCall,
    dir: PathBuf,
    deadline: Option<tokio::time::Instant>,
}

/// How a stay ended, when it did not fail.
enum Stay {
    /// The user left, or the time was up: the call is over.
    Done,
    /// The server went away (shut down, or the connection was lost): join again.
    Lost,
}

/// One stay in the room through `server`, from joining to leaving.
async fn stay(
    args: &CallArgs,
    server: &str,
    identity: Identity,
    call: &mut CallState,
    ctrl_c: &mut std::pin::Pin<&mut impl std::future::Future<Output = std::io::Result<()>>>,
    rejoining: Option<tokio::time::Instant>,
) -> Result<Stay> {
    let (observer, mut observed) = tokio::sync::mpsc::unbounded_channel();
    let spec = ParticipantSpec {
        join: JoinSpec {
            server: server.to_owned(),
            room: args.room.clone(),
            name: args.name.clone(),
            token: args.token.clone(),
            ca_file: args.ca_file.clone(),
            insecure: args.insecure,
        },
        audio: parse_audio(&args.audio)?,
        video: parse_video(args.video.as_deref())?,
        record: args.record.clone(),
        e2ee: hush_e2ee::Config::default(),
        keep_plaintext: false,
        keep_keys: false,
        observer: Some(observer),
        bind: args.bind,
        audio_redundancy: hush_proto::red::MAX_REDUNDANT,
    };
    let participant = Participant::start(spec, identity)
        .await
        .map_err(|e| CallExit::NotJoined(e.to_string()))?;
    let mut media_failed = false;
    // Lost and still being restarted when the call ends: no media either.
    let mut media_down = false;
    // The room's media moved and the new connection is not up yet.
    let mut moved = false;
    let mut joined = false;
    // Why the server said it closes the connection, if it did.
    let mut closing = None;
    let dir = call.dir.clone();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut user_ended = false;
    loop {
        let until_deadline = async {
            match call.deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut *ctrl_c => { user_ended = true; break }
            () = until_deadline => { user_ended = true; break }
            _ = tick.tick() => {
                let Ok(s) = participant.stats().await else { break };
                eprint!("\rsent {} | received {} | decrypted {} | failed {}   ", s.sent, s.received, s.decrypted, s.failed.values().sum::<u64>());
            }
            o = observed.recv() => match o {
                Some(Observed::Joined) => {
                    joined = true;
                    match rejoining {
                        Some(since) => println!("\njoined {} again, {:.1} s after the connection was lost", args.room, since.elapsed().as_secs_f64()),
                        None => println!("\njoined {}", args.room),
                    }
                }
                Some(Observed::PeerJoined { name, identity, safety_number }) => {
                    let status = call.known.check(&name, &identity)?;
                    match status {
                        PeerStatus::IdentityChanged { pinned, presented } => {
                            println!("\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
                            println!("WARNING: {name}'s identity CHANGED: pinned {pinned}, now {presented}.");
                            println!("Someone may be impersonating {name}. Compare safety numbers before trusting this call.");
                            println!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
                        }
                        // Pins are by identity; the name is only the server's claim.
                        PeerStatus::NameChanged { pinned_name } => {
                            println!("\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
                            println!("WARNING: the server calls {name:?}, but this identity ({}) was pinned as {pinned_name:?}.", identity.fingerprint());
                            println!("The name is only the server's claim: this is the key of {pinned_name:?}. Compare safety numbers before trusting this call.");
                            println!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
                        }
                        other => println!("\n{name} joined ({}, {})", identity.fingerprint(), match other { PeerStatus::New => "new peer, now pinned", PeerStatus::Verified => "verified", _ => "known" }),
                    }
                    println!("  safety number with {name}: {safety_number}");
                    println!("  {name} is unconfirmed until their device answers");
                    call.last.peers.push(LastPeer { name, identity: hex::encode(identity.to_bytes()), safety_number });
                    let _ = std::fs::write(dir.join("last-call.json"), serde_json::to_string_pretty(&call.last)?);
                }
                Some(Observed::PeerConfirmed { name }) => println!("\n{name} confirmed: their device answered, keys exchanged"),
                Some(Observed::PeerLeft { name }) => println!("\n{name} left"),
                Some(Observed::Warning(w)) => eprintln!("\nwarning: {w}"),
                Some(Observed::MediaFailed) => media_failed = true,
                Some(Observed::MediaInterrupted) => media_down = true,
                Some(Observed::MediaRestored) => {
                    if media_down || moved {
                        println!("\nmedia connection restored");
                    }
                    media_down = false;
                    moved = false;
                }
                Some(Observed::MediaMoved) => {
                    moved = true;
                    println!("\nthe room's media moved to another server; reconnecting media");
                }
                Some(Observed::Closing(reason)) => closing = Some(reason),
                Some(_) => {}
                None => break,
            }
        }
    }
    // The frame counters as the stay ends, for the summary.
    let totals = participant.stats().await.ok();
    // Leaving waits for the server and the media connection to close; a
    // second Ctrl-C does not wait.
    let report = tokio::select! {
        report = participant.stop() => match report {
            Ok(report) => report,
            // A join the server refused ends the call before `joined`.
            Err(e) if !joined => return Err(CallExit::NotJoined(e.to_string()).into()),
            Err(e) => return Err(e.into()),
        },
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\nhush call: interrupted again, exiting without a clean leave");
            std::process::exit(130);
        }
    };
    println!(
        "\nleft {}: sent {} audio and {} video frames",
        args.room, report.audio_sent, report.video_sent
    );
    if let Some(s) = totals {
        println!(
            "frames received {}, decrypted {}, failed {}, lost to key changes {}",
            s.received,
            s.decrypted,
            s.failed.values().sum::<u64>(),
            s.lost_to_key_change
        );
    }
    for r in report.remotes.values() {
        println!(
            "  from {}: {} audio, {} video frames decrypted; audio: {} recovered from later packets, {} concealed",
            r.name, r.audio_frames, r.video_frames, r.recovered, r.concealed
        );
        for (reason, n) in &r.decode_errors {
            println!("    {n} audio frames did not decode ({reason}) and were concealed");
        }
    }
    if let Some(dir) = &args.record {
        println!("recordings in {}", dir.display());
    }
    if report.ended_by == Some(EndReason::ServerClosed) && !user_ended {
        // The call did not end because the user asked. A server that shut
        // down or vanished (a node of a cluster, say), or whose media node
        // did (`media_moved`): join again. One that
        // ended the call on purpose (replaced, refused, too slow): fail.
        use hush_proto::CloseReason as Why;
        return match closing {
            None | Some(Why::ServerShutdown | Why::IdleTimeout | Why::MediaMoved) if joined => {
                Ok(Stay::Lost)
            }
            _ => Err(CallExit::ServerClosed.into()),
        };
    }
    if media_failed || media_down || moved {
        return Err(CallExit::MediaFailed.into());
    }
    Ok(Stay::Done)
}

fn verify(dir: &Path, peer: Option<&str>) -> Result<()> {
    let path = dir.join("last-call.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no call recorded yet ({})", path.display()))?;
    let last: LastCall =
        serde_json::from_str(&text).with_context(|| format!("{} is corrupt", path.display()))?;
    let mut known = KnownPeers::open(FilePeerStore(dir.join("known_peers.json")))?;
    match peer {
        None => {
            println!("safety numbers of the last call (room {}):", last.room);
            for p in &last.peers {
                println!("  {:<20} {}", p.name, p.safety_number);
            }
            println!("compare them with each peer out of band, then: hush verify --peer NAME");
        }
        Some(name) => {
            let p = last
                .peers
                .iter()
                .rev()
                .find(|p| p.name == name)
                .with_context(|| format!("{name} was not in the last call"))?;
            let bytes: [u8; 32] = hex::decode(&p.identity)?
                .try_into()
                .map_err(|_| anyhow::anyhow!("bad identity in {}", path.display()))?;
            let identity =
                hush_e2ee::PublicIdentity::from_bytes(&bytes).context("bad identity key")?;
            known.mark_verified(name, &identity)?;
            println!("{name} ({}) is now verified", identity.fingerprint());
        }
    }
    Ok(())
}
