//! `hush-sfu`: a standalone SFU node driven over a small HTTP control API.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hush_proto::{ControlToken, ServerSecret};
use hush_sfu::{RoutingConfig, Sfu, SfuConfig, register};

/// A forwarding-only SFU node for hush calls.
///
/// Participants connect with WebRTC (ICE + DTLS-SRTP) on UDP, or over
/// ICE-TCP when their UDP is blocked; a signaling
/// server creates them and relays SDP and ICE through the control API:
/// POST/DELETE /v1/rooms/{room}/participants/{id}, POST .../offer,
/// .../answer, .../candidates, GET .../events (long poll), GET /metrics,
/// GET /healthz. The SFU forwards encrypted payloads it cannot read.
#[derive(Debug, Parser)]
#[command(name = "hush-sfu", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: Args,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Mint a control-API token (the line printed) for a node started with
    /// the same --control-secret-file.
    Token {
        /// File holding the control secret (surrounding whitespace ignored).
        #[arg(long, env = "HUSH_SFU_CONTROL_SECRET_FILE", value_name = "FILE")]
        control_secret_file: PathBuf,
        /// How long the token is valid (e.g. 10m, 1h, 7d).
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
}

#[derive(Debug, clap::Args)]
struct Args {
    /// Address of the HTTP control API (keep it on loopback or a private
    /// network: it is plain HTTP).
    #[arg(long, default_value = "127.0.0.1:7880")]
    listen: SocketAddr,
    /// File holding the secret (at least 16 bytes) that control tokens are
    /// minted under, shared with the signaling servers that drive this
    /// node. Without it a DEVELOPMENT secret is made and printed.
    #[arg(long, env = "HUSH_SFU_CONTROL_SECRET_FILE", value_name = "FILE")]
    control_secret_file: Option<PathBuf>,
    /// IP address media (UDP) arrives on; announced to clients as the
    /// SFU's candidate, so it must be reachable by them.
    #[arg(long, default_value = "127.0.0.1")]
    rtc_ip: IpAddr,
    /// First UDP port for media (worker i listens on PORT+i); 0 picks free ports.
    #[arg(long, default_value_t = 7882)]
    rtc_port: u16,
    /// Address announced to clients instead of --rtc-ip (repeatable): the
    /// public IP of a host behind 1:1 NAT. Needed when --rtc-ip is 0.0.0.0.
    #[arg(long = "public-ip", value_delimiter = ',')]
    public_ips: Vec<IpAddr>,
    /// First TCP port for ICE-TCP (RFC 6544; worker i listens on PORT+i,
    /// on --rtc-ip): a passive TCP candidate that clients use only when
    /// their UDP is blocked. Must differ from --rtc-port. 0 picks free ports.
    #[arg(long, default_value_t = 7881)]
    rtc_tcp_port: u16,
    /// Do not offer ICE-TCP.
    #[arg(long)]
    no_rtc_tcp: bool,
    /// Forwarding loops, each with its own UDP port; a room lives on one. 0: one per core.
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Write every forwarded RTP payload (after SRTP decryption) to FILE,
    /// in the length-prefixed format documented in the crate (magic
    /// "HUSHCAP1", then kind:u8 ssrc:u32 seq:u16 len:u32 payload).
    #[arg(long, value_name = "FILE")]
    capture: Option<PathBuf>,
    /// Minimum interval between key-frame requests per video track, in ms.
    #[arg(long, default_value_t = 500)]
    key_frame_interval_ms: u64,
    /// Seconds without traffic before a connected participant is dropped
    /// (keep it above 5: receive-only clients are heard only through
    /// their ICE checks and RTCP).
    #[arg(long, default_value_t = 6)]
    ice_failed_secs: u64,
    /// Register as a media node of the cluster sharing this Redis
    /// (redis://HOST:PORT): the signaling nodes (`hush-server --redis`
    /// with `--sfu-control-secret-file`) then place rooms' media here.
    #[arg(long, env = "HUSH_REDIS", value_name = "URL")]
    redis: Option<String>,
    /// This node's id in the cluster (unique among its media nodes).
    #[arg(long, requires = "redis", value_name = "ID")]
    node_id: Option<String>,
    /// Where the signaling nodes reach the control API (http://HOST:PORT);
    /// the default is --listen, which must then not be 0.0.0.0.
    #[arg(long, requires = "redis", value_name = "URL")]
    control_url: Option<String>,
    /// The most rooms the cluster places here.
    #[arg(long, default_value_t = 1000)]
    capacity: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,str0m=warn".into()),
        )
        .init();
    let args = match Cli::parse() {
        Cli {
            command:
                Some(Command::Token {
                    control_secret_file,
                    ttl,
                }),
            ..
        } => {
            let secret = read_secret(&control_secret_file)?;
            let ttl = hush_proto::parse_duration(&ttl)?;
            let expiry = unix_now() + ttl.as_secs();
            println!("{}", ControlToken::mint(&secret, expiry));
            return Ok(());
        }
        Cli { serve, .. } => serve,
    };
    let secret = match &args.control_secret_file {
        Some(path) => read_secret(path)?,
        None => {
            let (secret, text) = ServerSecret::generate_development()?;
            println!("No --control-secret-file given: using a DEVELOPMENT control secret.");
            println!(
                "DEVELOPMENT CONTROL TOKEN (valid 24 h): {}",
                ControlToken::mint(&secret, unix_now() + 24 * 3600)
            );
            drop(text);
            secret
        }
    };
    let config = SfuConfig {
        udp_addrs: vec![SocketAddr::new(args.rtc_ip, args.rtc_port)],
        workers: hush_sfu::workers_or_cores(args.workers),
        public_ips: args.public_ips,
        routing: RoutingConfig {
            key_frame_min_interval: Duration::from_millis(args.key_frame_interval_ms),
            ..RoutingConfig::default()
        },
        capture: args.capture,
        ice_failed_timeout: Duration::from_secs(args.ice_failed_secs.max(1)),
        tcp_port: (!args.no_rtc_tcp).then_some(args.rtc_tcp_port),
        ..SfuConfig::default()
    };
    let sfu = Sfu::new(config).context("starting the SFU")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(listen = %args.listen, udp = ?sfu.udp_addrs(), tcp = ?sfu.tcp_addrs(), "hush-sfu ready");
    let registered = match &args.redis {
        Some(url) => {
            let control_url = match &args.control_url {
                Some(u) if u.starts_with("http://") => u.clone(),
                Some(u) => anyhow::bail!("--control-url must be http://HOST:PORT, not {u:?}"),
                None if args.listen.ip().is_unspecified() => anyhow::bail!(
                    "--redis with --listen {} needs --control-url http://ADDRESS:{}",
                    args.listen,
                    args.listen.port()
                ),
                // The bound address: --listen may name port 0.
                None => format!("http://{}", listener.local_addr()?),
            };
            let entry = register::MediaNodeEntry {
                id: args.node_id.clone().unwrap_or_else(|| {
                    format!("sfu-{}-{}", args.listen.port(), std::process::id())
                }),
                url: control_url,
                capacity: args.capacity,
            };
            let mut redis = register::connect(url)
                .await
                .with_context(|| format!("connecting to the cluster at {url}"))?;
            register::beat(&mut redis, &entry, 0)
                .await
                .with_context(|| format!("registering in the cluster at {url}"))?;
            println!("media node {} at {} (Redis {url})", entry.id, entry.url);
            let id = entry.id.clone();
            let task = tokio::spawn(register::keep_registered(
                redis.clone(),
                entry,
                Arc::clone(sfu.metrics()),
            ));
            Some((redis, id, task))
        }
        None => None,
    };
    // On Ctrl-C or SIGTERM: out of the cluster's placement at once, then
    // the SFU shuts down (each participant's events end with a shutdown,
    // which the signaling servers' event polls carry: in a cluster they move
    // those members elsewhere), and only then does the control API stop.
    let draining = sfu.clone();
    let drain = async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        if let Some((mut redis, id, task)) = registered {
            task.abort();
            if let Err(e) = register::leave(&mut redis, &id).await {
                tracing::warn!(error = %e, "leaving the cluster");
            }
        }
        draining.shutdown().await;
        tokio::time::sleep(SHUTDOWN_DRAIN).await;
    };
    hush_sfu::http::serve(listener, sfu, secret, drain)
        .await
        .context("serving the control API")?;
    Ok(())
}

/// How long the control API keeps answering after the SFU shut down, so
/// the event polls under way carry the shutdown to the signaling servers.
const SHUTDOWN_DRAIN: Duration = Duration::from_millis(500);

fn read_secret(path: &std::path::Path) -> anyhow::Result<ServerSecret> {
    let bytes = zeroize::Zeroizing::new(
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
    );
    ServerSecret::from_file_contents(&bytes).with_context(|| format!("in {}", path.display()))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
