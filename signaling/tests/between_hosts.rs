//! Calls between machines, as one machine can play them with network
//! namespaces the test creates (and removes):
//!
//! ```text
//!  c1 192.168.1.2 ── r1 (NAT) 100.64.1.2 ─┐
//!                                          net ── 100.64.0.2 srv: hush-server + SFU
//!  c2 192.168.1.2 ── r2 (NAT) 100.64.2.2 ─┘
//! ```
//!
//! `hush-server` runs in `srv`, bound to 100.64.0.2 only; each client is a
//! process of its own in `c1` or `c2`, behind its own iptables MASQUERADE
//! router, both with the same private address. Media must leave loopback,
//! cross both NATs and reach the SFU on the address it announces; a client
//! that binds only 127.0.0.1 joins signaling but never gets a frame through.
//!
//! A second run blocks UDP for one client (its router drops every UDP
//! packet from its network, as some corporate firewalls do): its media
//! must then go over ICE-TCP (RFC 6544) to the SFU's passive TCP candidate.
//!
//! The client processes are this test binary run again (`client_process`),
//! so they run exactly the code `hush call` runs, built in this same build.
//! Network namespaces need root and `ip`; the NATs need `iptables`
//! (`scripts/setup` installs both). Without them the test prints why and
//! checks nothing; CI runs as root.

use std::net::SocketAddr;
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hush_client::audio::{AudioSource, FRAME_SAMPLES, dominant_frequency};
use hush_client::call::JoinSpec;
use hush_client::participant::{Participant, ParticipantSpec};
use hush_e2ee::Identity;
use hush_proto::{DisplayName, JoinToken, RoomId, ServerSecret};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_hush-server");
const HANG_GUARD: Duration = Duration::from_secs(60);
/// Where the measured window starts, after the clients are told to join:
/// room for both to join and connect media.
const LEAD: Duration = Duration::from_secs(8);
/// The measured window.
const WINDOW: Duration = Duration::from_secs(5);
const SERVER_IP: &str = "100.64.0.2";
const ROOM: &str = "hosts";

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = StdCommand::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args)
}

/// How one run of the picture above goes.
#[derive(Debug, Clone, Copy)]
struct Scenario {
    /// In every namespace, interface and file name the run makes, so that
    /// tests running at once in one process never share one. One byte:
    /// interface names hold at most 15 ("h" + tag + pid + two roles).
    tag: char,
    /// `r1` drops every UDP packet from `c1`'s network (`ann`'s media can
    /// only go over TCP).
    block_udp_of_c1: bool,
}

/// The namespaces of the picture above, removed (with their links) on drop.
struct World {
    /// Which run they belong to.
    tag: char,
    /// Namespace names: net, srv, r1, r2, c1, c2.
    names: Vec<String>,
}

impl World {
    fn ns(&self, role: &str) -> &str {
        let i = ["net", "srv", "r1", "r2", "c1", "c2"]
            .iter()
            .position(|r| *r == role)
            .expect("a role of the picture");
        &self.names[i]
    }

    /// A veth pair between namespaces `a` and `b`, addressed `a_addr` and `b_addr` (CIDR).
    fn link(&self, a: &str, a_addr: &str, b: &str, b_addr: &str) -> Result<(), String> {
        let tag = format!("{}{}{a}{b}", self.tag, std::process::id());
        let (ea, eb) = (format!("h{tag}"), format!("g{tag}"));
        ip(&["link", "add", &ea, "type", "veth", "peer", "name", &eb])?;
        for (role, dev, addr) in [(a, &ea, a_addr), (b, &eb, b_addr)] {
            let ns = self.ns(role);
            ip(&["link", "set", dev, "netns", ns])?;
            ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(())
    }

    fn build(scenario: Scenario) -> Result<Self, String> {
        let pid = std::process::id();
        let tag = scenario.tag;
        let mut world = World {
            tag,
            names: Vec::new(),
        };
        for role in ["net", "srv", "r1", "r2", "c1", "c2"] {
            let name = format!("hush-{pid}{tag}-{role}");
            ip(&["netns", "add", &name])?;
            world.names.push(name);
        }
        // Interface names: at most 15 bytes ("h" + tag + pid + two roles).
        world.link("net", "100.64.0.1/24", "srv", "100.64.0.2/24")?;
        world.link("net", "100.64.1.1/24", "r1", "100.64.1.2/24")?;
        world.link("net", "100.64.2.1/24", "r2", "100.64.2.2/24")?;
        world.link("r1", "192.168.1.1/24", "c1", "192.168.1.2/24")?;
        world.link("r2", "192.168.1.1/24", "c2", "192.168.1.2/24")?;
        for role in ["net", "srv", "r1", "r2", "c1", "c2"] {
            // Loopback up, as on any machine (a client binds it too).
            ip(&["-n", world.ns(role), "link", "set", "lo", "up"])?;
        }
        for role in ["net", "r1", "r2"] {
            let ns = world.ns(role);
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    ns,
                    "sysctl",
                    "-qw",
                    "net.ipv4.ip_forward=1",
                ],
            )?;
        }
        ip(&[
            "-n",
            world.ns("srv"),
            "route",
            "add",
            "default",
            "via",
            "100.64.0.1",
        ])?;
        for (router, up) in [("r1", "100.64.1.1"), ("r2", "100.64.2.1")] {
            let ns = world.ns(router).to_owned();
            ip(&["-n", &ns, "route", "add", "default", "via", up])?;
            // Everything from inside leaves with the router's address.
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    &ns,
                    "iptables",
                    "-t",
                    "nat",
                    "-A",
                    "POSTROUTING",
                    "-s",
                    "192.168.1.0/24",
                    "-j",
                    "MASQUERADE",
                ],
            )?;
        }
        for client in ["c1", "c2"] {
            ip(&[
                "-n",
                world.ns(client),
                "route",
                "add",
                "default",
                "via",
                "192.168.1.1",
            ])?;
        }
        if scenario.block_udp_of_c1 {
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    world.ns("r1"),
                    "iptables",
                    "-A",
                    "FORWARD",
                    "-s",
                    "192.168.1.0/24",
                    "-p",
                    "udp",
                    "-j",
                    "DROP",
                ],
            )?;
        }
        Ok(world)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Deleting a namespace deletes its ends of the veth pairs, and so the pairs.
        for name in &self.names {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// Why this machine cannot run the test, if it cannot.
fn missing() -> Option<String> {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false);
    if !root {
        return Some("network namespaces need root".into());
    }
    for tool in ["ip", "iptables"] {
        let found = StdCommand::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Some(format!(
                "`{tool}` is not installed (scripts/setup installs it)"
            ));
        }
    }
    None
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// What a client process measured, from its `HOSTS-RESULT` line.
#[derive(Debug)]
struct Measured {
    name: String,
    sent: u64,
    decrypted: u64,
    failed: u64,
    heard_hz: f64,
    first_frame_ms: u64,
}

fn parse(line: &str) -> Option<Measured> {
    let v: serde_json::Value = serde_json::from_str(line.strip_prefix("HOSTS-RESULT ")?).ok()?;
    Some(Measured {
        name: v["name"].as_str()?.to_owned(),
        sent: v["sent"].as_u64()?,
        decrypted: v["decrypted"].as_u64()?,
        failed: v["failed"].as_u64()?,
        heard_hz: v["heard_hz"].as_f64()?,
        first_frame_ms: v["first_frame_ms"].as_u64()?,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_between_two_nats_carries_media_both_ways() {
    call_between_hosts(Scenario {
        tag: 'n',
        block_udp_of_c1: false,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_udp_is_blocked_calls_over_ice_tcp() {
    call_between_hosts(Scenario {
        tag: 't',
        block_udp_of_c1: true,
    })
    .await;
}

/// Runs the call of `scenario` and checks that media crossed both ways:
/// each side decrypts at least 95 % of the frames the other sent in the
/// measured window, hears the other's tone, and has no decryption
/// failures.
async fn call_between_hosts(scenario: Scenario) {
    if let Some(why) = missing() {
        eprintln!("skipped: {why}");
        return;
    }
    let world = World::build(scenario).unwrap_or_else(|e| panic!("building the networks: {e}"));
    let (secret, text) = ServerSecret::generate_development().expect("secret");
    let secret_file = std::env::temp_dir().join(format!(
        "hush-hosts-{}{}.secret",
        std::process::id(),
        scenario.tag
    ));
    std::fs::write(&secret_file, text.as_bytes()).expect("write secret file");
    let listen = format!("{SERVER_IP}:0");
    let mut server = Command::new("ip")
        .args(["netns", "exec", world.ns("srv"), BIN, "--listen", &listen])
        .args([
            "--rtc-ip",
            SERVER_IP,
            "--rtc-port",
            "0",
            "--sfu-workers",
            "1",
        ])
        .arg("--secret-file")
        .arg(&secret_file)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn hush-server in its namespace");
    let mut lines = BufReader::new(server.stdout.take().expect("stdout")).lines();
    let addr = tokio::time::timeout(HANG_GUARD, async {
        loop {
            let line = lines
                .next_line()
                .await
                .expect("read")
                .expect("server exited early");
            if let Some(rest) = line.split_once("listening on ").map(|(_, r)| r) {
                let addr = rest
                    .split_whitespace()
                    .next()
                    .and_then(|a| a.split_once("://"))
                    .map(|(_, a)| a)
                    .expect("address");
                return addr.parse::<SocketAddr>().expect("socket address");
            }
        }
    })
    .await
    .expect("hang guard: the server never said where it listens");
    assert_eq!(addr.ip().to_string(), SERVER_IP);
    let url = format!("ws://{addr}");
    let window_start = now_ms() + LEAD.as_millis() as u64;

    let exe = std::env::current_exe().expect("this test binary");
    let mut clients = Vec::new();
    // c1 takes the default (every interface); c2 names its one address.
    for (ns, name, hz, bind) in [
        ("c1", "ann", 440.0, ""),
        ("c2", "bob", 660.0, "192.168.1.2"),
    ] {
        let child = Command::new("ip")
            .args(["netns", "exec", world.ns(ns)])
            .arg(&exe)
            .args(["--exact", "client_process", "--ignored", "--nocapture"])
            .env("HUSH_HOSTS_URL", &url)
            .env("HUSH_HOSTS_TOKEN", token(&secret, name))
            .env("HUSH_HOSTS_NAME", name)
            .env("HUSH_HOSTS_HZ", hz.to_string())
            .env("HUSH_HOSTS_BIND", bind)
            .env("HUSH_HOSTS_START_MS", window_start.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn a client process");
        clients.push(child);
    }
    // The SFU's view in the middle of the window: how many ICE-TCP
    // connections it holds, refused, and TCP packets it dropped.
    let metrics_url = format!("http://{addr}/metrics");
    let srv = world.ns("srv").to_owned();
    let sfu_tcp = tokio::spawn(async move {
        let mid_window = window_start + WINDOW.as_millis() as u64 / 2;
        tokio::time::sleep(Duration::from_millis(mid_window.saturating_sub(now_ms()))).await;
        let out = Command::new("ip")
            .args(["netns", "exec", &srv, "curl", "-s", &metrics_url])
            .output()
            .await
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        out.lines()
            .filter(|l| l.starts_with("hush_sfu_tcp") || l.contains("tcp_backlog"))
            .collect::<Vec<_>>()
            .join(", ")
    });
    let mut measured = Vec::new();
    for mut child in clients {
        let mut out = String::new();
        let mut stdout = child.stdout.take().expect("stdout");
        tokio::time::timeout(HANG_GUARD, stdout.read_to_string(&mut out))
            .await
            .expect("hang guard: a client process did not finish")
            .expect("read a client's output");
        let status = child.wait().await.expect("client exit status");
        let result = out.lines().find_map(parse);
        assert!(
            status.success() && result.is_some(),
            "client process failed ({status}):\n{out}"
        );
        measured.extend(result);
    }
    let sfu_tcp = sfu_tcp.await.unwrap_or_default();
    eprintln!("[{scenario:?}] SFU mid-window: {sfu_tcp}");
    let _ = server.kill().await;
    let _ = std::fs::remove_file(&secret_file);
    drop(world);

    let by = |n: &str| measured.iter().find(|m| m.name == n).expect("a result");
    let (ann, bob) = (by("ann"), by("bob"));
    for (me, other, hz) in [(ann, bob, 660.0), (bob, ann, 440.0)] {
        eprintln!(
            "[{scenario:?}] {} decrypted {} of the {} frames {} sent in the window ({:.1} %), first frame {} ms after joining, hears {:.1} Hz",
            me.name,
            me.decrypted,
            other.sent,
            other.name,
            100.0 * me.decrypted as f64 / other.sent.max(1) as f64,
            me.first_frame_ms,
            me.heard_hz
        );
        assert!(other.sent >= 200, "{} sent only {}", other.name, other.sent);
        assert!(
            me.decrypted as f64 >= 0.95 * other.sent as f64,
            "{} decrypted {} of {} frames from {}",
            me.name,
            me.decrypted,
            other.sent,
            other.name
        );
        assert!(
            (me.heard_hz - hz).abs() <= 5.0,
            "{} hears {} at {} Hz, not {hz}",
            me.name,
            other.name,
            me.heard_hz
        );
        assert_eq!(me.failed, 0, "{}: decryption failures", me.name);
    }
    if scenario.block_udp_of_c1 {
        // Ann's media has no way but her ICE-TCP connection, which the SFU
        // holds. (Bob's, unused since his UDP works, was closed as silent.)
        let open = sfu_tcp
            .split(", ")
            .find_map(|m| m.strip_prefix("hush_sfu_tcp_connections "))
            .and_then(|v| v.parse::<i64>().ok());
        assert!(
            open.is_some_and(|n| n >= 1),
            "the SFU holds no ICE-TCP connection: {sfu_tcp}"
        );
    }
}

fn token(secret: &ServerSecret, name: &str) -> String {
    let room: RoomId = ROOM.parse().expect("room id");
    let name: DisplayName = name.parse().expect("display name");
    JoinToken::mint(secret, &room, &name, now_ms() / 1000 + 3600)
        .as_str()
        .to_owned()
}

/// One client of [`call_between_hosts`], run by it in a client namespace; does nothing when run any other way. Joins,
/// measures the frames sent and decrypted in the window the parent named,
/// leaves, and prints a `HOSTS-RESULT` line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a client process of call_between_hosts"]
async fn client_process() {
    let Ok(url) = std::env::var("HUSH_HOSTS_URL") else {
        return;
    };
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    let name = var("HUSH_HOSTS_NAME");
    let hz: f64 = var("HUSH_HOSTS_HZ").parse().expect("HUSH_HOSTS_HZ");
    let start_ms: u64 = var("HUSH_HOSTS_START_MS").parse().expect("start");
    let bind = match var("HUSH_HOSTS_BIND").as_str() {
        "" => None,
        ip => Some(ip.parse().expect("HUSH_HOSTS_BIND")),
    };
    let spec = ParticipantSpec {
        join: JoinSpec {
            server: url,
            room: ROOM.into(),
            name: name.clone(),
            token: var("HUSH_HOSTS_TOKEN"),
            ca_file: None,
            // Plain ws:// between the test's own namespaces.
            insecure: true,
        },
        audio: AudioSource::sine(hz),
        video: None,
        record: None,
        e2ee: hush_e2ee::Config::default(),
        keep_plaintext: false,
        keep_keys: false,
        observer: None,
        bind,
        audio_redundancy: hush_proto::red::MAX_REDUNDANT,
    };
    let p = Participant::start(spec, Identity::generate())
        .await
        .expect("join");
    let wait_until =
        |ms: u64| tokio::time::sleep(Duration::from_millis(ms.saturating_sub(now_ms())));
    wait_until(start_ms).await;
    let s0 = p.stats().await.expect("running");
    assert!(
        s0.decrypted > 0,
        "{name}: no frame decrypted {} s after joining",
        LEAD.as_secs()
    );
    wait_until(start_ms + WINDOW.as_millis() as u64).await;
    let s1 = p.stats().await.expect("running");
    // Frames still in flight at the window's end arrive within a few ms.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = p.stop().await.expect("leave");
    let heard = report
        .remotes
        .values()
        .find(|r| r.audio_frames > 0)
        .and_then(|r| r.pcm.get(FRAME_SAMPLES * 10..).and_then(dominant_frequency))
        .unwrap_or(0.0);
    let result = serde_json::json!({
        "name": name,
        "sent": s1.sent - s0.sent,
        "decrypted": s1.decrypted - s0.decrypted,
        "failed": report.stats.failed.values().sum::<u64>(),
        "heard_hz": heard,
        "first_frame_ms": report.join_to_first_frame.map_or(0, |d| d.as_millis() as u64),
    });
    println!("HOSTS-RESULT {result}");
}
