//! `hush-server`: the hush signaling server, and `hush-server token` to mint join tokens.

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use hush_signaling::cluster::{Cluster, ClusterConfig};
use hush_signaling::config_file::{self, FlagSpec};
use hush_signaling::{
    DisplayName, JoinToken, Limits, NoMedia, RoomId, Server, ServerConfig, ServerSecret, ServerTls,
    parse_duration, run_until,
};
use tracing_subscriber::EnvFilter;

/// The hush signaling server: rooms, join tokens and end-to-end envelope relay
/// over WebSocket (`/v1/ws`), with `/healthz` and `/metrics`.
///
/// Media goes through the embedded SFU (forwarding-only: it sees SFrame
/// ciphertext, never media); `--no-media` runs without it, refusing SDP
/// offers with `media_unavailable`. With --tls-cert and --tls-key the same
/// port serves `wss://` and `https://`; SIGHUP reloads both files.
/// Logging: RUST_LOG (default `info`).
#[derive(Debug, Parser)]
#[command(name = "hush-server", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Mint a join token for a server started with the same secret; the token
    /// is the last line of output (the invite link's, with --link-base).
    Token(TokenArgs),
    /// The cluster of nodes sharing a Redis: nodes, their load, room placement.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// List the live nodes (URL, rooms, participants, capacity) and which
    /// node each room is on.
    Status {
        /// The cluster's Redis (redis://HOST:PORT).
        #[arg(long, env = "HUSH_REDIS", value_name = "URL")]
        redis: String,
    },
}

#[derive(Debug, Args)]
struct SecretArgs {
    /// Join token secret (at least 16 bytes). Visible to other local users
    /// in the process list: prefer --secret-file or the environment.
    #[arg(
        long,
        env = "HUSH_SECRET",
        hide_env_values = true,
        conflicts_with = "secret_file"
    )]
    secret: Option<String>,
    /// File holding the join token secret (surrounding whitespace ignored).
    #[arg(long, env = "HUSH_SECRET_FILE", value_name = "FILE")]
    secret_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "HUSH_LISTEN", default_value = "127.0.0.1:7880")]
    listen: SocketAddr,
    #[command(flatten)]
    secret: SecretArgs,
    /// TLS certificate chain (PEM, leaf first): the port then serves
    /// wss:// and https:// only. Reloaded with --tls-key on SIGHUP.
    #[arg(long, env = "HUSH_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert (PEM: PKCS#8, RSA or SEC1).
    #[arg(long, env = "HUSH_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Largest WebSocket message in bytes; larger ones close the socket with code 1009.
    #[arg(long, env = "HUSH_MAX_MESSAGE_BYTES", default_value_t = Limits::default().max_message_bytes)]
    max_message_bytes: usize,
    /// Sustained messages per second per connection (token bucket refill rate).
    #[arg(long, env = "HUSH_MESSAGES_PER_SEC", default_value_t = Limits::default().messages_per_sec)]
    messages_per_sec: u32,
    /// Messages per connection allowed in a burst (token bucket size).
    #[arg(long, env = "HUSH_MESSAGE_BURST", default_value_t = Limits::default().message_burst)]
    message_burst: u32,
    /// Over-rate messages (no second-long pause between them) before a disconnect.
    #[arg(long, env = "HUSH_RATE_STRIKES", default_value_t = Limits::default().rate_strikes)]
    rate_strikes: u32,
    /// Participants per room.
    #[arg(long, env = "HUSH_MAX_ROOM_PARTICIPANTS", default_value_t = Limits::default().max_room_participants)]
    max_room_participants: usize,
    /// Rooms per server.
    #[arg(long, env = "HUSH_MAX_ROOMS", default_value_t = Limits::default().max_rooms)]
    max_rooms: usize,
    /// Time a new connection has to send `join` (e.g. 500ms, 10s, 1m).
    #[arg(long, env = "HUSH_JOIN_TIMEOUT", default_value = "10s", value_parser = duration)]
    join_timeout: Duration,
    /// Close a connection that sends nothing, not even a pong, for this long;
    /// the server pings every third of it.
    #[arg(long, env = "HUSH_IDLE_TIMEOUT", default_value = "30s", value_parser = duration)]
    idle_timeout: Duration,
    /// Messages queued for one client before it is disconnected as too slow.
    #[arg(long, env = "HUSH_SEND_QUEUE", default_value_t = Limits::default().send_queue)]
    send_queue: usize,
    /// Time from TCP accept until the request is answered or the WebSocket
    /// upgrade completes; slower connections are closed (e.g. 5s).
    #[arg(long, env = "HUSH_HANDSHAKE_TIMEOUT", default_value = "5s", value_parser = duration)]
    handshake_timeout: Duration,
    /// Open connections in all; more are closed at accept.
    #[arg(long, env = "HUSH_MAX_CONNECTIONS", default_value_t = Limits::default().max_connections)]
    max_connections: usize,
    /// Open connections from one source address; more are closed at accept.
    #[arg(long, env = "HUSH_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = Limits::default().max_connections_per_address)]
    max_connections_per_address: usize,
    /// After a participant's media connection dies, the time it has to answer
    /// a WebSocket ping before it is removed as gone (e.g. 2s).
    #[arg(long, env = "HUSH_LIVENESS_TIMEOUT", default_value = "2s", value_parser = duration)]
    liveness_timeout: Duration,
    /// Largest e2ee key package a join may carry, in bytes.
    #[arg(long, env = "HUSH_MAX_KEY_PACKAGE_BYTES", default_value_t = Limits::default().max_key_package_bytes)]
    max_key_package_bytes: usize,
    /// Largest e2ee envelope payload, in bytes (larger ones are refused, not relayed).
    #[arg(long, env = "HUSH_MAX_ENVELOPE_BYTES", default_value_t = Limits::default().max_envelope_bytes)]
    max_envelope_bytes: usize,
    /// Write every RTP payload the embedded SFU forwards to FILE (ciphertext audit; format in hush-sfu's docs).
    #[arg(long, env = "HUSH_CAPTURE", value_name = "FILE")]
    capture: Option<std::path::PathBuf>,
    /// IP address the embedded SFU binds its media (UDP) sockets to, and
    /// announces to clients unless --public-ip is given.
    #[arg(long, env = "HUSH_RTC_IP", default_value = "127.0.0.1")]
    rtc_ip: std::net::IpAddr,
    /// First UDP port of the embedded SFU: every participant's media
    /// arrives on it (worker i listens on PORT+i). 0 picks free ports.
    #[arg(long, env = "HUSH_RTC_PORT", default_value_t = 7882)]
    rtc_port: u16,
    /// Address announced to clients as the SFU's candidate instead of
    /// --rtc-ip (repeatable): the public IP of a host behind 1:1 NAT, as on
    /// cloud VMs. Needed when --rtc-ip is 0.0.0.0.
    #[arg(long = "public-ip", env = "HUSH_PUBLIC_IP", value_delimiter = ',')]
    public_ips: Vec<std::net::IpAddr>,
    /// First TCP port of the embedded SFU's ICE-TCP candidate (RFC 6544),
    /// for clients whose UDP is blocked: worker i listens on PORT+i, on
    /// --rtc-ip. Must differ from --rtc-port. Default 7881, or free ports
    /// when --rtc-port is 0.
    #[arg(long, env = "HUSH_RTC_TCP_PORT")]
    rtc_tcp_port: Option<u16>,
    /// Do not offer ICE-TCP (clients whose UDP is blocked then get no media).
    #[arg(long, env = "HUSH_NO_RTC_TCP")]
    no_rtc_tcp: bool,
    /// Forwarding loops of the embedded SFU, each with its own UDP port; a
    /// room lives on one. 0: one per core.
    #[arg(long, env = "HUSH_SFU_WORKERS", default_value_t = 0)]
    sfu_workers: usize,
    /// Run without the embedded SFU: rooms and e2ee envelopes only, no media.
    #[arg(long, conflicts_with = "sfu_url")]
    no_media: bool,
    /// Carry media on a standalone `hush-sfu` node instead of the embedded
    /// SFU: its control API, http://HOST:PORT (its --listen).
    #[arg(
        long,
        env = "HUSH_SFU_URL",
        value_name = "URL",
        requires = "sfu_control_secret_file",
        conflicts_with = "redis"
    )]
    sfu_url: Option<String>,
    /// The control secret shared with the --sfu-url node (its
    /// --control-secret-file); with --redis, with the cluster's `hush-sfu
    /// --redis` media nodes, whose rooms' media this node may then place
    /// there.
    #[arg(long, env = "HUSH_SFU_CONTROL_SECRET_FILE", value_name = "FILE")]
    sfu_control_secret_file: Option<PathBuf>,
    /// Configuration file (TOML): keys are these long flags without the
    /// dashes, e.g. `max-rooms = 200`. The command line and the
    /// environment override it.
    #[arg(long, env = "HUSH_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check the configuration (file, flags, environment, secret and TLS
    /// files), print what would run, and exit without serving.
    #[arg(long)]
    check_config: bool,
    /// Join a cluster of hush-server nodes sharing this Redis
    /// (redis://HOST:PORT): a room lives on one node, any node serves any
    /// participant (joins are relayed to the room's node).
    #[arg(long, env = "HUSH_REDIS", value_name = "URL")]
    redis: Option<String>,
    /// Where the other nodes reach this one: ws://HOST:PORT, or with TLS
    /// wss://NAME:PORT (a name its certificate holds). Default: ws:// (or
    /// wss://) and the address listened on, which must then be a specific
    /// one (not 0.0.0.0).
    #[arg(long, env = "HUSH_NODE_URL", value_name = "URL", requires = "redis")]
    node_url: Option<String>,
    /// CA certificates (PEM) trusted for the other nodes' wss:// URLs,
    /// besides Mozilla's roots (a cluster with its own CA).
    #[arg(
        long,
        env = "HUSH_NODE_CA_FILE",
        value_name = "FILE",
        requires = "redis"
    )]
    node_ca_file: Option<PathBuf>,
    /// This node's id in the cluster (default: node-PORT-PID, unique on one host).
    #[arg(long, env = "HUSH_NODE_ID", requires = "redis")]
    node_id: Option<String>,
    /// Most rooms placed on this node (default: --max-rooms).
    #[arg(long, env = "HUSH_NODE_CAPACITY", requires = "redis")]
    node_capacity: Option<usize>,
}

#[derive(Debug, Args)]
struct TokenArgs {
    #[command(flatten)]
    secret: SecretArgs,
    /// Room the token admits to.
    #[arg(long)]
    room: RoomId,
    /// Display name the token admits.
    #[arg(long)]
    name: DisplayName,
    /// How long the token is valid (e.g. 30m, 1h, 7d).
    #[arg(long, default_value = "1h", value_parser = duration)]
    ttl: Duration,
    /// Also print an invite link for the browser client under this base URL
    /// (the server's own, with https and its port): BASE/#room=R&name=N&token=T.
    /// The token rides in the fragment, which browsers never send.
    #[arg(long, value_name = "URL")]
    link_base: Option<String>,
}

fn duration(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| e.to_string())
}

impl SecretArgs {
    /// The configured secret, if any.
    fn load(&self) -> anyhow::Result<Option<ServerSecret>> {
        if let Some(text) = &self.secret {
            return Ok(Some(ServerSecret::new(text.as_bytes().to_vec())?));
        }
        if let Some(path) = &self.secret_file {
            let bytes = zeroize::Zeroizing::new(
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
            );
            return Ok(Some(ServerSecret::from_file_contents(&bytes)?));
        }
        Ok(None)
    }
}

impl ServeArgs {
    /// The ICE-TCP port of the SFU's first worker, or `None` for none.
    fn tcp_port(&self) -> Option<u16> {
        if self.no_rtc_tcp {
            return None;
        }
        Some(match (self.rtc_tcp_port, self.rtc_port) {
            (Some(port), _) => port,
            (None, 0) => 0,
            (None, _) => DEFAULT_RTC_TCP_PORT,
        })
    }

    /// The embedded SFU's configuration.
    fn sfu_config(&self) -> hush_sfu::SfuConfig {
        hush_sfu::SfuConfig {
            udp_addrs: vec![std::net::SocketAddr::new(self.rtc_ip, self.rtc_port)],
            capture: self.capture.clone(),
            workers: hush_sfu::workers_or_cores(self.sfu_workers),
            public_ips: self.public_ips.clone(),
            tcp_port: self.tcp_port(),
            ..Default::default()
        }
    }

    fn limits(&self) -> Limits {
        Limits {
            max_message_bytes: self.max_message_bytes,
            messages_per_sec: self.messages_per_sec,
            message_burst: self.message_burst,
            rate_strikes: self.rate_strikes,
            max_room_participants: self.max_room_participants,
            max_rooms: self.max_rooms,
            join_timeout: self.join_timeout,
            idle_timeout: self.idle_timeout,
            send_queue: self.send_queue,
            handshake_timeout: self.handshake_timeout,
            max_connections: self.max_connections,
            max_connections_per_address: self.max_connections_per_address,
            liveness_timeout: self.liveness_timeout,
            max_key_package_bytes: self.max_key_package_bytes,
            max_envelope_bytes: self.max_envelope_bytes,
        }
    }
}

/// A control secret is for a `--sfu-url` node or a cluster's media nodes:
/// given without either, it would be ignored.
fn media_flags_fit(args: &ServeArgs) -> anyhow::Result<()> {
    if args.sfu_control_secret_file.is_some() && args.sfu_url.is_none() && args.redis.is_none() {
        anyhow::bail!(
            "--sfu-control-secret-file is for a hush-sfu node: add --sfu-url, or --redis for the cluster's media nodes"
        );
    }
    Ok(())
}

/// The secret shared with the `--sfu-url` node (`--sfu-control-secret-file`).
fn control_secret(args: &ServeArgs) -> anyhow::Result<ServerSecret> {
    let file = args
        .sfu_control_secret_file
        .as_deref()
        .context("--sfu-url needs --sfu-control-secret-file")?;
    let bytes = zeroize::Zeroizing::new(
        std::fs::read(file).with_context(|| format!("reading {}", file.display()))?,
    );
    ServerSecret::from_file_contents(&bytes)
        .with_context(|| format!("the control secret in {}", file.display()))
}

/// The embedded SFU's first ICE-TCP port when neither --rtc-tcp-port nor
/// --rtc-port 0 is given (LiveKit's choice too).
const DEFAULT_RTC_TCP_PORT: u16 = 7881;

/// `--check-config`: what must hold for the server to start, short of
/// binding its ports, and what it would run with.
fn check_config(args: &ServeArgs, secret: bool, tls: bool) -> anyhow::Result<()> {
    media_flags_fit(args)?;
    if let Some(url) = &args.sfu_url {
        hush_signaling::RemoteNode::new(url, control_secret(args)?)?;
    } else if !args.no_media {
        args.sfu_config()
            .validate()
            .context("the embedded SFU's settings")?;
    }
    let limits = args.limits();
    println!("configuration OK");
    if let Some(c) = &args.config {
        println!("  file: {}", c.display());
    }
    let scheme = if tls {
        "https/wss (TLS)"
    } else {
        "http/ws (no TLS)"
    };
    println!("  listen: {} {scheme}", args.listen);
    if !secret {
        println!("  secret: none given (a DEVELOPMENT secret would be made: not for real use)");
    }
    if args.no_media {
        println!("  media: none (--no-media)");
    } else if let Some(url) = &args.sfu_url {
        println!("  media: the hush-sfu node at {url}");
    } else {
        let announced = if args.public_ips.is_empty() {
            args.rtc_ip.to_string()
        } else {
            args.public_ips
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let tcp = match args.tcp_port() {
            Some(port) => format!(", ice-tcp {}:{port}", args.rtc_ip),
            None => String::new(),
        };
        println!(
            "  media: udp {}:{}{tcp} (workers: {}), announced as {announced}",
            args.rtc_ip,
            args.rtc_port,
            hush_sfu::workers_or_cores(args.sfu_workers)
        );
    }
    println!(
        "  limits: max-rooms {}, max-room-participants {}, max-connections {}, max-connections-per-address {}",
        limits.max_rooms,
        limits.max_room_participants,
        limits.max_connections,
        limits.max_connections_per_address
    );
    Ok(())
}

/// `argv` with the arguments of the configuration file (`--config FILE` or
/// `HUSH_CONFIG`) inserted before the user's own, leaving out every flag
/// the command line gives or the environment sets (see
/// [`hush_signaling::config_file`]). `token` takes no configuration file.
fn with_config_file(argv: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    let user: Vec<String> = argv
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if user.first().is_some_and(|a| a == "token") {
        return Ok(argv);
    }
    let from_args = user.iter().enumerate().find_map(|(i, a)| {
        if a == "--config" {
            user.get(i + 1).map(PathBuf::from)
        } else {
            a.strip_prefix("--config=").map(PathBuf::from)
        }
    });
    let Some(path) = from_args.or_else(|| std::env::var_os("HUSH_CONFIG").map(PathBuf::from))
    else {
        return Ok(argv);
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the configuration file {}", path.display()))?;
    let command = <Cli as clap::CommandFactory>::command();
    let flags: Vec<FlagSpec> = command
        .get_arguments()
        .filter_map(|a| {
            Some(FlagSpec {
                long: a.get_long()?.to_owned(),
                env: a.get_env().map(|e| e.to_string_lossy().into_owned()),
                switch: matches!(a.get_action(), clap::ArgAction::SetTrue),
                delimiter: a.get_value_delimiter(),
            })
        })
        .collect();
    let given = |long: &str| {
        let flag = format!("--{long}");
        let joined = format!("--{long}=");
        user.iter().any(|a| *a == flag || a.starts_with(&joined))
    };
    let env_set = |var: &str| std::env::var_os(var).is_some();
    let from_file = config_file::args_from_toml(&text, &flags, &given, &env_set)
        .with_context(|| format!("in the configuration file {}", path.display()))?;
    let mut out = Vec::with_capacity(argv.len() + from_file.len());
    out.extend(argv.first().cloned());
    out.extend(from_file.into_iter().map(OsString::from));
    out.extend(argv.into_iter().skip(1));
    Ok(out)
}

/// Raises the open-file limit to its hard limit (every connection and every
/// media socket is a file descriptor) and says what it is.
fn raise_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard {
                if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                    tracing::warn!(error = %e, soft, hard, "could not raise the open-file limit");
                }
            }
            let now = getrlimit(Resource::RLIMIT_NOFILE).map_or(soft, |(s, _)| s);
            tracing::info!(open_files = now, "open-file limit");
        }
        Err(e) => tracing::warn!(error = %e, "could not read the open-file limit"),
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse_from(with_config_file(std::env::args_os().collect())?);
    match cli.command {
        Some(Command::Token(args)) => mint(&args),
        Some(Command::Cluster {
            command: ClusterCommand::Status { redis },
        }) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(cluster_status(&redis)),
        None => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
                )
                .with_writer(std::io::stderr)
                .init();
            raise_file_limit();
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(serve(cli.serve))
        }
    }
}

fn mint(args: &TokenArgs) -> anyhow::Result<()> {
    let Some(secret) = args.secret.load()? else {
        bail!("hush-server token needs --secret-file or --secret (the server's secret)");
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let expiry = now.saturating_add(args.ttl.as_secs());
    let token = JoinToken::mint(&secret, &args.room, &args.name, expiry);
    eprintln!(
        "join token for {:?} in room {:?}, valid for {}s:",
        args.name.as_str(),
        args.room.as_str(),
        args.ttl.as_secs()
    );
    println!("{}", token.as_str());
    if let Some(base) = &args.link_base {
        println!(
            "{}",
            invite_link(base, &args.room, &args.name, token.as_str())?
        );
    }
    Ok(())
}

/// `base/#room=R&name=N&token=T` (PROTOCOL.md §10): each value
/// percent-encoded, all of it in the fragment, which a browser never sends.
fn invite_link(
    base: &str,
    room: &RoomId,
    name: &DisplayName,
    token: &str,
) -> anyhow::Result<String> {
    let lower = base.to_ascii_lowercase();
    if !(lower.starts_with("https://") || lower.starts_with("http://")) {
        bail!("--link-base {base:?} must be an http:// or https:// URL");
    }
    if base.contains(['#', '?']) {
        bail!("--link-base {base:?} must not have a query or a fragment");
    }
    let slash = if base.ends_with('/') { "" } else { "/" };
    Ok(format!(
        "{base}{slash}#room={}&name={}&token={}",
        percent_encode(room.as_str()),
        percent_encode(name.as_str()),
        percent_encode(token)
    ))
}

/// RFC 3986 percent-encoding of every byte but the unreserved ones.
fn percent_encode(text: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let secret = args.secret.load()?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(ServerTls::from_pem_files(cert, key)?),
        // clap makes each flag require the other.
        _ => None,
    };
    if args.check_config {
        return check_config(&args, secret.is_some(), tls.is_some());
    }
    media_flags_fit(&args)?;
    let secret = match secret {
        Some(secret) => secret,
        None => {
            let (secret, text) = ServerSecret::generate_development()?;
            println!(
                "No --secret or --secret-file given: using a DEVELOPMENT secret, for local use only."
            );
            println!(
                "DEVELOPMENT SECRET (mint tokens with `hush-server token --secret <it>`): {}",
                text.as_str()
            );
            secret
        }
    };
    if tls.is_none() && !args.listen.ip().is_loopback() {
        eprintln!(
            "WARNING: listening on {} without TLS: join tokens, key packages and SDP \
             travel in clear text, and anyone on the path can read and change them. \
             Use --tls-cert/--tls-key, or a TLS reverse proxy in front of a loopback address.",
            args.listen
        );
    }
    let config = ServerConfig {
        limits: args.limits(),
        secret,
        tls: tls.clone(),
    };
    // A cluster node's media follows the cluster's placement: its embedded
    // SFU, or the media nodes when it holds their control secret.
    let mut cluster_media = None;
    let (router, media): (Arc<dyn hush_signaling::MediaRouter>, String) =
        if args.redis.is_some() && (!args.no_media || args.sfu_control_secret_file.is_some()) {
            let embedded = if args.no_media {
                None
            } else {
                Some(hush_sfu::Sfu::new(args.sfu_config()).context("starting the embedded SFU")?)
            };
            let secret = match &args.sfu_control_secret_file {
                Some(_) => Some(control_secret(&args)?),
                None => None,
            };
            let mut what = match &embedded {
                Some(sfu) => format!(
                    "embedded SFU on {}",
                    (sfu.udp_addrs().iter().map(|a| format!("udp {a}")))
                        .chain(sfu.tcp_addrs().iter().map(|a| format!("tcp {a}")))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => "no embedded SFU".to_owned(),
            };
            if secret.is_some() {
                what.push_str(", and the cluster's hush-sfu nodes");
            }
            let router = hush_signaling::ClusterMedia::new(embedded, secret);
            cluster_media = Some(Arc::clone(&router));
            (router, what)
        } else if args.no_media {
            (Arc::new(NoMedia), "not available (--no-media)".into())
        } else if let Some(url) = &args.sfu_url {
            let node = hush_signaling::RemoteNode::new(url, control_secret(&args)?)?;
            let what = format!("hush-sfu node at {url}");
            (Arc::new(hush_signaling::RemoteSfu::new(node)), what)
        } else {
            let sfu = hush_sfu::Sfu::new(args.sfu_config()).context("starting the embedded SFU")?;
            let on = (sfu.udp_addrs().iter().map(|a| format!("udp {a}")))
                .chain(sfu.tcp_addrs().iter().map(|a| format!("tcp {a}")))
                .collect::<Vec<_>>()
                .join(", ");
            let what = match &args.capture {
                Some(f) => format!("embedded SFU on {on}, capturing to {}", f.display()),
                None => format!("embedded SFU on {on}"),
            };
            (Arc::new(hush_signaling::EmbeddedSfu::new(sfu)), what)
        };
    let server = Server::bind(args.listen, config, router)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = server.local_addr()?;
    if let Some(redis) = &args.redis {
        // Nodes reach each other as clients do: wss:// when this port has TLS.
        let scheme = if tls.is_some() { "wss" } else { "ws" };
        let node_url = match &args.node_url {
            Some(url) => url.clone(),
            None if addr.ip().is_unspecified() => {
                anyhow::bail!(
                    "--redis with --listen {addr} needs --node-url {scheme}://ADDRESS:{}",
                    addr.port()
                )
            }
            None => format!("{scheme}://{addr}"),
        };
        if !node_url.starts_with(&format!("{scheme}://")) {
            anyhow::bail!(
                "--node-url must be {scheme}://HOST:PORT: this port {} TLS",
                if tls.is_some() {
                    "serves"
                } else {
                    "does not serve"
                }
            );
        }
        let node_id = args
            .node_id
            .clone()
            .unwrap_or_else(|| format!("node-{}-{}", addr.port(), std::process::id()));
        let mut cluster = ClusterConfig::new(redis, &node_id, &node_url);
        cluster.capacity = args.node_capacity.unwrap_or(args.max_rooms);
        cluster.embedded_media_capacity = if args.no_media { 0 } else { cluster.capacity };
        cluster.remote_media = args.sfu_control_secret_file.is_some();
        cluster.node_tls = Some(
            hush_signaling::node_client_config(args.node_ca_file.as_deref())
                .context("the TLS trust for other nodes (--node-ca-file)")?,
        );
        let cluster = Cluster::connect(cluster)
            .await
            .with_context(|| format!("joining the cluster at {redis}"))?;
        if let Some(media) = &cluster_media {
            media.attach(Arc::clone(&cluster));
        }
        server.join_cluster(cluster);
        println!("cluster node {node_id} at {node_url} (Redis {redis})");
    }
    match tls {
        Some(tls) => {
            reload_on_sighup(tls)?;
            println!(
                "hush-server listening on https://{addr} (WebSocket wss://{addr}/v1/ws); media: {media}"
            );
        }
        None => println!(
            "hush-server listening on http://{addr} (WebSocket ws://{addr}/v1/ws); media: {media}"
        ),
    }
    run_until(server, shutdown_signal()).await?;
    println!("hush-server stopped");
    Ok(())
}

/// Reads the certificate and key again on every SIGHUP; a reload that fails
/// keeps the current pair. The listener is made once, before the server
/// says it listens, so no SIGHUP after that is missed.
#[cfg(unix)]
fn reload_on_sighup(tls: ServerTls) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let reloading = tls.clone();
            // File reads: off the runtime's worker threads.
            match tokio::task::spawn_blocking(move || reloading.reload()).await {
                Ok(Ok(())) => tracing::info!(
                    cert = %tls.cert_path().display(),
                    key = %tls.key_path().display(),
                    "TLS certificate reloaded"
                ),
                Ok(Err(e)) => tracing::warn!(
                    error = %e,
                    "TLS reload failed; keeping the current certificate"
                ),
                Err(e) => tracing::warn!(error = %e, "TLS reload did not finish"),
            }
        }
    });
    Ok(())
}

/// Without SIGHUP there is nothing to reload on.
#[cfg(not(unix))]
fn reload_on_sighup(_tls: ServerTls) -> anyhow::Result<()> {
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

/// `hush-server cluster status`: what Redis says of the cluster.
async fn cluster_status(redis: &str) -> anyhow::Result<()> {
    let status = hush_signaling::cluster::status(redis)
        .await
        .with_context(|| format!("reading the cluster at {redis}"))?;
    println!("{} node(s):", status.nodes.len());
    for (id, n) in &status.nodes {
        println!(
            "  {id}  {}  rooms {}/{}  participants {}",
            n.url, n.rooms, n.capacity, n.participants
        );
    }
    println!("{} media node(s):", status.media_nodes.len());
    for (id, n) in &status.media_nodes {
        println!("  {id}  {}  rooms {}/{}", n.url, n.rooms, n.capacity);
    }
    println!("{} room(s):", status.placements.len());
    for (room, node) in &status.placements {
        match status.media.get(room) {
            Some(media) => println!("  {room}  on {node}, media on {media}"),
            None => println!("  {room}  on {node}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_defaults_are_the_library_defaults() {
        let cli = Cli::try_parse_from(["hush-server"]).map_err(|e| e.to_string());
        let Ok(cli) = cli else {
            panic!("{cli:?}");
        };
        assert_eq!(cli.serve.limits(), Limits::default());
        assert_eq!(cli.serve.listen.to_string(), "127.0.0.1:7880");
        assert!(cli.command.is_none());
    }

    #[test]
    fn invite_links_carry_everything_in_the_fragment_percent_encoded() {
        let room: RoomId = "standup".parse().expect("room");
        let name: DisplayName = "Zoë & co".parse().expect("name");
        for base in [
            "https://call.example.com:7880",
            "https://call.example.com:7880/",
        ] {
            assert_eq!(
                invite_link(base, &room, &name, "v1.abc.def").expect("link"),
                "https://call.example.com:7880/#room=standup&name=Zo%C3%AB%20%26%20co&token=v1.abc.def"
            );
        }
        for bad in [
            "call.example.com",
            "ftp://x",
            "https://x/?a=1",
            "https://x/#y",
        ] {
            assert!(invite_link(bad, &room, &name, "t").is_err(), "{bad}");
        }
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
