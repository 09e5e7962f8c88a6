//! The `hush` command as a user runs it.

use std::process::{Command, Stdio};

fn hush() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hush"))
}

/// A server with its SFU on loopback, and a config directory for `hush call`.
/// A real server run through its own binary is heavier; the demo's
/// in-process server is the same code, so start one here.
fn local_server() -> (
    tokio::runtime::Runtime,
    hush::local::LocalServer,
    tempfile::TempDir,
) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = rt
        .block_on(hush::local::LocalServer::start(None))
        .expect("server");
    (rt, server, tempfile::tempdir().expect("tempdir"))
}

/// `hush call` as ann in "room" for up to a minute, its output piped.
fn spawn_call(server: &hush::local::LocalServer, dir: &std::path::Path) -> std::process::Child {
    spawn_call_as(server, dir, "ann")
}

/// `hush call` as `name` in "room" for up to a minute, its output piped;
/// each name keeps its identity in its own folder under `dir`.
fn spawn_call_as(
    server: &hush::local::LocalServer,
    dir: &std::path::Path,
    name: &str,
) -> std::process::Child {
    let token = server.token("room", name).expect("token");
    hush()
        .args(["call", "--server", &server.url(), "--room", "room"])
        .args(["--name", name, "--token", &token, "--seconds", "60"])
        .arg("--config-dir")
        .arg(dir.join(name))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hush call")
}

#[test]
fn hush_demo_runs_a_real_call_and_exits_zero() {
    let out = hush()
        // Long enough that the participant who rejoins midway is heard
        // for more than the 20 frames the demo asks for, after its key
        // wait and the jitter buffer's delay.
        .args(["demo", "--seconds", "6"])
        .output()
        .expect("run hush demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "hush demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("0 of "), "{stdout}");
    assert!(
        stdout.contains("plaintext frames visible to the SFU"),
        "{stdout}"
    );
    assert!(stdout.contains("the call worked"), "{stdout}");
}

#[test]
fn wrong_token_is_refused() {
    let (rt, server, dir) = local_server();
    let good = server.token("room", "ann").expect("token");
    for (token, code) in [
        ("not-a-token", "token_malformed"),
        (good.as_str(), "token_wrong_room"),
    ] {
        let room = if token == good { "other" } else { "room" };
        let out = hush()
            .args([
                "call",
                "--server",
                &server.url(),
                "--room",
                room,
                "--name",
                "ann",
                "--token",
                token,
                "--seconds",
                "10",
            ])
            .arg("--config-dir")
            .arg(dir.path())
            .output()
            .expect("run hush call");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "not joined is 3:\n{stderr}");
        assert!(stderr.contains(code), "expected {code} in:\n{stderr}");
    }
    // No server at all: not joined either.
    let gone = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("port");
    let url = format!("ws://{}", gone.local_addr().expect("addr"));
    drop(gone);
    let out = hush()
        .args(["call", "--server", &url, "--room", "room", "--name", "ann"])
        .args(["--token", &good, "--seconds", "10"])
        .arg("--config-dir")
        .arg(dir.path())
        .output()
        .expect("run hush call");
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rt.block_on(server.stop());
}

#[test]
fn a_call_whose_server_goes_away_exits_non_zero() {
    use std::time::Duration;

    let (rt, server, dir) = local_server();
    // Told not to join again (by default it tries for a minute).
    let token = server.token("room", "ann").expect("token");
    let mut child = hush()
        .args(["call", "--server", &server.url(), "--room", "room"])
        .args(["--name", "ann", "--token", &token, "--seconds", "60"])
        .args(["--rejoin-for", "0", "--config-dir"])
        .arg(dir.path().join("ann"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hush call");
    let lines = stdout_lines(&mut child);
    wait_for_line(&lines, &mut String::new(), Duration::from_secs(30), |l| {
        l.starts_with("joined ")
    });
    rt.block_on(server.stop());
    // Hang guard only: the call ends as soon as it sees the server go.
    let mut waited = Duration::ZERO;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(waited < Duration::from_secs(30), "hush call kept running");
        std::thread::sleep(Duration::from_millis(50));
        waited += Duration::from_millis(50);
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    assert_eq!(
        status.code(),
        Some(4),
        "after the server went away:\n{stderr}"
    );
    assert!(stderr.contains("server closed the connection"), "{stderr}");
}

#[test]
fn a_call_whose_media_fails_exits_five_after_leaving() {
    // The SFU announces an address nothing listens on (loopback only):
    // signaling works, ICE over UDP and TCP cannot.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = rt
        .block_on(hush::local::LocalServer::start_with(hush_sfu::SfuConfig {
            public_ips: vec![std::net::IpAddr::from([127, 0, 0, 2])],
            ..Default::default()
        }))
        .expect("server");
    let dir = tempfile::tempdir().expect("tempdir");
    let token = server.token("room", "ann").expect("token");
    let out = hush()
        .args(["call", "--server", &server.url(), "--room", "room"])
        .args(["--name", "ann", "--token", &token, "--seconds", "12"])
        .arg("--config-dir")
        .arg(dir.path())
        .output()
        .expect("run hush call");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("media connection failed"), "{stderr}");
    // It still left properly: the summary was printed.
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("left room"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    rt.block_on(server.stop());
}

#[test]
fn identity_new_and_show() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("id.pem");
    let out = hush()
        .args(["identity", "new", "--identity"])
        .arg(&path)
        .output()
        .expect("new");
    assert!(out.status.success());
    let created = String::from_utf8_lossy(&out.stdout).to_string();
    let out = hush()
        .args(["identity", "show", "--identity"])
        .arg(&path)
        .output()
        .expect("show");
    let shown = String::from_utf8_lossy(&out.stdout).to_string();
    let fp = shown
        .split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_owned();
    assert!(created.contains(&fp), "{created} / {shown}");
    // Refuses to overwrite.
    assert!(
        !hush()
            .args(["identity", "new", "--identity"])
            .arg(&path)
            .output()
            .expect("new")
            .status
            .success()
    );
}

/// A CA, and a certificate for 127.0.0.1 it signed, as PEM files in `dir`:
/// (ca.pem, cert.pem, key.pem).
fn private_ca(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key")).expect("CA");
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("sign");
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).expect("write");
        path
    };
    (
        write("ca.pem", ca.pem()),
        write("cert.pem", cert.pem()),
        write("key.pem", key.serialize_pem()),
    )
}

#[test]
fn two_hush_calls_talk_over_wss_with_a_private_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = private_ca(dir.path());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let tls = hush_signaling::ServerTls::from_pem_files(&cert, &key).expect("TLS pair");
    let server = rt
        .block_on(hush::local::LocalServer::start_tls(tls))
        .expect("server");
    let url = server.url();
    assert!(url.starts_with("wss://127.0.0.1:"), "{url}");
    let call = |name: &str, config: &std::path::Path, ca: Option<&std::path::Path>| {
        let token = server.token("room", name).expect("token");
        let mut c = hush();
        c.args(["call", "--server", &url, "--room", "room", "--name", name])
            .args(["--token", &token, "--seconds", "6"])
            .arg("--config-dir")
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(ca) = ca {
            c.arg("--ca-file").arg(ca);
        }
        c.spawn().expect("run hush call")
    };
    let (ann_dir, bob_dir) = (dir.path().join("ann"), dir.path().join("bob"));
    let ann = call("ann", &ann_dir, Some(&ca));
    let bob = call("bob", &bob_dir, Some(&ca));
    for (who, other, child) in [("ann", "bob", ann), ("bob", "ann", bob)] {
        let out = child.wait_with_output().expect("hush call ends");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{who}:\n{stdout}\n{stderr}");
        let heard = stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("from {other}: ")))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        assert!(
            heard >= 100,
            "{who} decrypted {heard} frames of {other}:\n{stdout}"
        );
        // Each saw the other listed as unconfirmed, then confirmed.
        let unconfirmed = stdout.find(&format!("{other} is unconfirmed"));
        let confirmed = stdout.find(&format!("{other} confirmed"));
        assert!(
            matches!((unconfirmed, confirmed), (Some(u), Some(c)) if u < c),
            "{who}:\n{stdout}"
        );
    }
    // Without the CA the server's certificate is refused, clearly.
    let out = call("cy", &dir.path().join("cy"), None)
        .wait_with_output()
        .expect("hush call ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    rt.block_on(server.stop());
}

#[test]
fn ctrl_c_ends_the_call_cleanly_whenever_it_arrives() {
    use std::io::{BufRead, BufReader, Read};
    use std::time::{Duration, Instant};
    let (rt, server, dir) = local_server();
    // At once, and at moments the loop body is likely busy (the stats line
    // runs every second).
    for delay_ms in [0u64, 480, 1000] {
        let mut child = spawn_call(&server, dir.path());
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            let n = stdout.read_line(&mut line).expect("read stdout");
            assert!(n > 0, "hush call ended before joining:\n{seen}");
            seen.push_str(&line);
            if line.starts_with("joined ") {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        let killed = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "hush call ignored Ctrl-C ({delay_ms} ms after joining)"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        stdout.read_to_string(&mut seen).expect("stdout");
        assert_eq!(status.code(), Some(0), "{delay_ms} ms:\n{seen}");
        assert!(seen.contains("left room"), "{delay_ms} ms:\n{seen}");
    }
    rt.block_on(server.stop());
}

/// Reads `child`'s stdout on a thread, sending each line with the moment
/// it arrived.
fn stdout_lines(
    child: &mut std::process::Child,
) -> std::sync::mpsc::Receiver<(std::time::Instant, String)> {
    use std::io::BufRead;
    let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines() {
            let Ok(line) = line else { break };
            if tx.send((std::time::Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits until a line of `lines` satisfies `want`; panics with everything
/// read after `within`.
fn wait_for_line(
    lines: &std::sync::mpsc::Receiver<(std::time::Instant, String)>,
    seen: &mut String,
    within: std::time::Duration,
    want: impl Fn(&str) -> bool,
) -> std::time::Instant {
    let deadline = std::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok((at, line)) => {
                seen.push_str(&line);
                seen.push('\n');
                if want(&line) {
                    return at;
                }
            }
            Err(e) => panic!("no such line ({e}):\n{seen}"),
        }
    }
}

#[test]
fn a_vanished_participant_is_announced_as_left_within_ten_seconds() {
    use std::time::Duration;
    let (rt, server, dir) = local_server();
    let mut ann = spawn_call_as(&server, dir.path(), "ann");
    let ann_lines = stdout_lines(&mut ann);
    let mut ann_seen = String::new();
    wait_for_line(&ann_lines, &mut ann_seen, Duration::from_secs(30), |l| {
        l.starts_with("joined ")
    });
    let mut bob = spawn_call_as(&server, dir.path(), "bob");
    let bob_lines = stdout_lines(&mut bob);
    let mut bob_seen = String::new();
    // Both ends hear each other before bob vanishes.
    for (lines, seen, other) in [
        (&ann_lines, &mut ann_seen, "bob"),
        (&bob_lines, &mut bob_seen, "ann"),
    ] {
        wait_for_line(lines, seen, Duration::from_secs(30), |l| {
            l.contains(&format!("{other} confirmed"))
        });
    }
    std::thread::sleep(Duration::from_secs(1));
    // bob's process freezes: its sockets stay open (the kernel still
    // acknowledges its TCP), but it sends nothing at all.
    let stopped = Command::new("kill")
        .args(["-STOP", &bob.id().to_string()])
        .status()
        .expect("kill");
    assert!(stopped.success());
    let frozen = std::time::Instant::now();
    let left = wait_for_line(&ann_lines, &mut ann_seen, Duration::from_secs(30), |l| {
        l.trim() == "bob left"
    });
    let after = left.duration_since(frozen);
    eprintln!("MEASURE vanished: bob announced as left {after:?} after SIGSTOP");
    // Without the SFU's report it would take the signaling idle timeout
    // (30 s); the SFU gives up on media silent for 6 s and the server then
    // gives bob 2 s to answer a WebSocket ping.
    assert!(
        after < Duration::from_secs(10),
        "bob announced as left only {after:?} after he vanished:\n{ann_seen}"
    );
    for child in [&mut bob, &mut ann] {
        let _ = Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }
    rt.block_on(server.stop());
}

/// A `hush call` in "room" through cluster nodes, and what it printed.
struct Caller {
    name: &'static str,
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<(std::time::Instant, String)>,
    seen: String,
}

impl Caller {
    /// `hush call` as `name` through the nodes at `urls` (tried in order),
    /// for up to a minute; waits until it has joined.
    fn join(
        urls: &[String],
        secret: &hush_proto::ServerSecret,
        dir: &std::path::Path,
        name: &'static str,
        hz: u32,
    ) -> Self {
        let token = hush::local::mint_token(secret, "room", name).expect("token");
        let mut child = hush()
            .args(["call", "--server", &urls.join(","), "--room", "room"])
            .args(["--name", name, "--token", &token, "--seconds", "60"])
            .args(["--audio", &format!("sine:{hz}"), "--config-dir"])
            .arg(dir.join(name))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run hush call");
        let lines = stdout_lines(&mut child);
        let mut caller = Self {
            name,
            child,
            lines,
            seen: String::new(),
        };
        caller.wait(|l| l.starts_with("joined "));
        caller
    }

    /// Waits (40 s at most) for a line that satisfies `want`; when it came.
    fn wait(&mut self, want: impl Fn(&str) -> bool) -> std::time::Instant {
        wait_for_line(
            &self.lines,
            &mut self.seen,
            std::time::Duration::from_secs(40),
            want,
        )
    }

    /// Waits until `other` is confirmed (again); when it was.
    fn hears(&mut self, other: &str) -> std::time::Instant {
        let line = format!("{other} confirmed: their device answered, keys exchanged");
        self.wait(|l| l == line)
    }

    /// After a lost node: joined again, and `other` confirmed again;
    /// prints how long after `since`.
    fn back_with(&mut self, other: &str, since: std::time::Instant, what: &str) {
        self.wait(|l| l.starts_with("joined room again"));
        let heard = self.hears(other);
        println!(
            "{}: {other} confirmed again {:.1} s after {what}",
            self.name,
            (heard - since).as_secs_f64()
        );
    }

    /// Leaves as a user would (Ctrl-C); checks the exit status and that the
    /// last stay decrypted at least 100 audio frames of `other`.
    fn leave_having_heard(mut self, other: &str) {
        let killed = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        let status = self.child.wait().expect("wait");
        while let Ok((_, line)) = self.lines.recv_timeout(std::time::Duration::from_secs(5)) {
            self.seen.push_str(&line);
            self.seen.push('\n');
        }
        assert_eq!(status.code(), Some(0), "{}", self.seen);
        let heard = self
            .seen
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix(&format!("  from {other}: ")))
            .and_then(|l| l.split(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        assert!(
            heard >= 100,
            "{heard} audio frames from {other}:\n{}",
            self.seen
        );
    }
}

#[test]
fn when_the_node_holding_a_call_goes_away_its_callers_join_again_through_another() {
    use std::time::{Duration, Instant};
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let redis = hush::local::RedisServer::start().expect("redis-server");
    let (secret, _) = hush_proto::ServerSecret::generate_development().expect("secret");
    let start = |id: &str| {
        rt.block_on(hush::local::LocalServer::start_node(
            secret.clone(),
            &redis.url(),
            id,
        ))
        .expect("node")
    };
    let (a, b) = (start("node-a"), start("node-b"));
    let dir = tempfile::tempdir().expect("tempdir");
    // ann comes through a (so the room lives there), bob through b.
    let mut ann = Caller::join(&[a.url(), b.url()], &secret, dir.path(), "ann", 440);
    let mut bob = Caller::join(&[b.url(), a.url()], &secret, dir.path(), "bob", 660);
    ann.hears("bob");
    bob.hears("ann");

    // The node holding the room (its signaling and its SFU) shuts down.
    let stopped = Instant::now();
    rt.block_on(a.stop());
    ann.back_with("bob", stopped, "its node shut down");
    bob.back_with("ann", stopped, "the room's node shut down");
    // Both talk through node b for a while, then leave.
    std::thread::sleep(Duration::from_secs(3));
    ann.leave_having_heard("bob");
    bob.leave_having_heard("ann");
    let status = rt
        .block_on(hush_signaling::cluster::status(&redis.url()))
        .expect("status");
    assert!(!status.nodes.contains_key("node-a"), "{status:?}");
    rt.block_on(b.stop());
}

/// A server process of a cluster (`hush-server --redis` or `hush-sfu
/// --redis`, built beside `hush`) and the URL it announced; killed on drop.
struct ServerProcess {
    child: std::process::Child,
    url: String,
}

impl ServerProcess {
    /// Runs `name` (a binary beside `hush`) with `args` until a line of its
    /// standard output gives `url_of` its URL.
    fn spawn(
        name: &str,
        args: &[&std::ffi::OsStr],
        url_of: impl Fn(&str) -> Option<String>,
    ) -> Self {
        use std::io::BufRead;
        let bin = std::path::Path::new(env!("CARGO_BIN_EXE_hush")).with_file_name(name);
        assert!(
            bin.exists(),
            "{} is missing: build it first (cargo build --workspace --bins)",
            bin.display()
        );
        let mut child = Command::new(bin)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("run {name}: {e}"));
        let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        let url = loop {
            line.clear();
            assert!(
                out.read_line(&mut line).expect("stdout") > 0,
                "{name} exited"
            );
            if let Some(url) = url_of(&line) {
                break url;
            }
        };
        std::thread::spawn(move || for _ in out.lines() {});
        Self { child, url }
    }

    /// A `hush-server --redis` node with id `id` (and `extra` arguments).
    fn node(cluster: &ClusterFiles, id: &str, extra: &[&std::ffi::OsStr]) -> Self {
        let redis = cluster.redis.url();
        let mut args: Vec<&std::ffi::OsStr> = ["--listen", "127.0.0.1:0", "--rtc-port", "0"]
            .iter()
            .map(|a| a.as_ref())
            .collect();
        args.extend([
            "--redis".as_ref(),
            redis.as_ref(),
            "--node-id".as_ref(),
            id.as_ref(),
            "--secret-file".as_ref(),
            cluster.secret_file.as_os_str(),
        ]);
        args.extend(extra);
        // "hush-server listening on http://127.0.0.1:PORT (...": the first line.
        Self::spawn("hush-server", &args, |line| {
            let addr = line.split("listening on http://").nth(1)?;
            Some(format!("ws://{}", addr.split_whitespace().next()?))
        })
    }

    /// A `hush-sfu --redis` media node with id `id`.
    fn media_node(cluster: &ClusterFiles, id: &str) -> Self {
        let redis = cluster.redis.url();
        let flags = [
            "--listen",
            "127.0.0.1:0",
            "--rtc-port",
            "0",
            "--no-rtc-tcp",
            "--redis",
            redis.as_str(),
            "--node-id",
            id,
            "--control-secret-file",
        ];
        let args: Vec<&std::ffi::OsStr> = flags
            .iter()
            .map(|a| a.as_ref())
            .chain([cluster.control_file.as_os_str()])
            .collect();
        // "media node ID at URL (Redis ...)": registered.
        Self::spawn("hush-sfu", &args, |line| {
            let rest = line.strip_prefix("media node ")?;
            Some(
                rest.split(" at ")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .to_owned(),
            )
        })
    }

    /// A signaling node without an SFU whose rooms' media go to the media nodes.
    fn signaling_node(cluster: &ClusterFiles, id: &str) -> Self {
        Self::node(
            cluster,
            id,
            &[
                "--no-media".as_ref(),
                "--sfu-control-secret-file".as_ref(),
                cluster.control_file.as_os_str(),
            ],
        )
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What every cluster test starts from: a Redis, a directory, the join
/// token secret and the media nodes' control secret, each also in a file.
struct ClusterFiles {
    redis: hush::local::RedisServer,
    dir: tempfile::TempDir,
    secret: hush_proto::ServerSecret,
    secret_file: std::path::PathBuf,
    control: hush_proto::ServerSecret,
    control_file: std::path::PathBuf,
}

impl ClusterFiles {
    fn new() -> Self {
        let redis = hush::local::RedisServer::start().expect("redis-server");
        let dir = tempfile::tempdir().expect("tempdir");
        let (secret, text) = hush_proto::ServerSecret::generate_development().expect("secret");
        let secret_file = dir.path().join("secret");
        std::fs::write(&secret_file, text.as_bytes()).expect("secret file");
        let (control, text) =
            hush_proto::ServerSecret::generate_development().expect("control secret");
        let control_file = dir.path().join("control");
        std::fs::write(&control_file, text.as_bytes()).expect("control file");
        Self {
            redis,
            dir,
            secret,
            secret_file,
            control,
            control_file,
        }
    }
}

#[test]
fn a_killed_node_costs_its_callers_a_rejoin_and_no_more() {
    use std::time::{Duration, Instant};
    let c = ClusterFiles::new();
    let mut nodes: Vec<ServerProcess> = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|id| ServerProcess::node(&c, id, &[]))
        .collect();
    let url = |i: usize| nodes[i].url.clone();
    // The room lives on a (ann's node); bob is relayed through b.
    let mut ann = Caller::join(&[url(0), url(2)], &c.secret, c.dir.path(), "ann", 440);
    let mut bob = Caller::join(
        &[url(1), url(0), url(2)],
        &c.secret,
        c.dir.path(),
        "bob",
        660,
    );
    ann.hears("bob");
    bob.hears("ann");

    // kill -9 of the node that only relays bob: bob joins again (through a).
    let killed = Instant::now();
    nodes[1].kill();
    bob.back_with("ann", killed, "its relaying node was killed");
    ann.hears("bob");

    // kill -9 of the node holding the room: its entry expires (5 s), the
    // room is placed on c, and both join again there.
    let killed = Instant::now();
    nodes[0].kill();
    ann.back_with("bob", killed, "the room's node was killed");
    bob.back_with("ann", killed, "the room's node was killed");
    std::thread::sleep(Duration::from_secs(3));
    ann.leave_having_heard("bob");
    bob.leave_having_heard("ann");
}

/// `hush loadtest --server A,B` against two `hush-server --redis`
/// processes: participants join through both, the two rooms are placed one
/// on each node, and the report gives each node's forwarded packets and
/// its own process's CPU, which add up to the step's totals.
#[test]
fn a_load_test_of_a_cluster_reports_each_nodes_share() {
    let c = ClusterFiles::new();
    let nodes: Vec<ServerProcess> = ["node-a", "node-b"]
        .iter()
        .map(|id| ServerProcess::node(&c, id, &[]))
        .collect();
    let servers = format!("{},{}", nodes[0].url, nodes[1].url);
    let json = c.dir.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_hush"))
        .args(["loadtest", "--server", &servers, "--secret-file"])
        .arg(&c.secret_file)
        .args(["--rooms", "2", "--publishers", "1", "--subscribers", "2"])
        .args(["--seconds", "3", "--baseline", "none", "--json"])
        .arg(&json)
        .output()
        .expect("run hush loadtest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "hush loadtest failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("report")).expect("JSON");
    let step = &report["steps"][0];
    assert_eq!(step["decryption_failures"], 0, "{step:#}");
    assert!(step["delivery"]["received"].as_u64() > Some(0), "{step:#}");
    let shares = step["nodes"].as_array().expect("per-node shares");
    assert_eq!(shares.len(), 2, "{step:#}");
    let mut forwarded = 0;
    for (share, node) in shares.iter().zip(&nodes) {
        assert_eq!(share["url"], node.url.as_str());
        let packets = share["forwarded_packets"].as_u64().expect("packets");
        assert!(packets > 0, "each node carries one room's media: {step:#}");
        let cpu = share["sfu_cpu_seconds"].as_f64().expect("each node's CPU");
        assert!(cpu > 0.0, "{step:#}");
        forwarded += packets;
    }
    assert_eq!(step["forwarded_packets"].as_u64(), Some(forwarded));
    let cpu: f64 = shares
        .iter()
        .filter_map(|s| s["sfu_cpu_seconds"].as_f64())
        .sum();
    let total = step["sfu_cpu_seconds"].as_f64().expect("total CPU");
    assert!((total - cpu).abs() < 1e-6, "{total} vs {cpu}");
    assert!(stdout.contains("per node:"), "{stdout}");
}

/// `kill -9` of the `hush-sfu` node carrying a call: the room's node moves
/// the room's media to the other media node and tells both callers
/// `media_moved`; each makes a new media connection there, without
/// leaving the call, and they hear each other through it.
#[test]
fn a_killed_media_node_moves_the_call_to_another() {
    use std::time::{Duration, Instant};
    let c = ClusterFiles::new();
    let ids = ["sfu-1", "sfu-2", "sfu-3"];
    let mut sfus: Vec<ServerProcess> = ids
        .iter()
        .map(|id| ServerProcess::media_node(&c, id))
        .collect();
    let node = ServerProcess::signaling_node(&c, "node-a");
    let urls = [node.url.clone()];
    let mut ann = Caller::join(&urls, &c.secret, c.dir.path(), "ann", 440);
    let mut bob = Caller::join(&urls, &c.secret, c.dir.path(), "bob", 660);
    ann.hears("bob");
    bob.hears("ann");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let status = || {
        rt.block_on(hush_signaling::cluster::status(&c.redis.url()))
            .expect("cluster status")
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let carrying = loop {
        if let Some(m) = status().media.get("room").cloned() {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "hang guard: the room's media was never placed"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let index = |id: &str| ids.iter().position(|i| *i == id).expect("a media node");
    std::thread::sleep(Duration::from_secs(2));
    let killed = Instant::now();
    sfus[index(&carrying)].kill();
    for c in [&mut ann, &mut bob] {
        c.wait(|l| l.starts_with("the room's media moved to another server"));
        let back = c.wait(|l| l == "media connection restored");
        println!(
            "{}: media connection restored {:.1} s after media node {carrying} was killed",
            c.name,
            (back - killed).as_secs_f64()
        );
    }
    std::thread::sleep(Duration::from_secs(3));
    let s = status();
    let now = s.media.get("room").cloned();
    assert!(
        now.is_some() && now != Some(carrying.clone()),
        "the room's media moved from {carrying}: {now:?}"
    );
    // The surviving node forwards both callers' audio now.
    let url = s.media_nodes[now.as_deref().unwrap_or_default()]
        .url
        .clone();
    let token = hush_proto::ControlToken::mint(&c.control, u64::MAX / 2);
    let metrics = rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = url.trim_start_matches("http://");
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("the survivor's control API");
        let request = format!(
            "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.expect("request");
        let mut body = String::new();
        tcp.read_to_string(&mut body).await.expect("reply");
        body
    });
    let audio_out: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hush_sfu_packets_out_total{kind=\"audio\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_default();
    println!("the surviving media node forwarded {audio_out} audio packets");
    assert!(
        audio_out > 200,
        "both callers' audio goes through the other node: {metrics}"
    );

    // The new node shuts down gracefully (SIGTERM): it leaves the cluster,
    // its SFU ends every member's events with a shutdown, and the members
    // move to the third node the same way.
    let second = now.unwrap_or_default();
    let stopped = Instant::now();
    let term = Command::new("kill")
        .args(["-TERM", &sfus[index(&second)].child.id().to_string()])
        .status()
        .expect("kill");
    assert!(term.success());
    for c in [&mut ann, &mut bob] {
        c.wait(|l| l.starts_with("the room's media moved to another server"));
        let back = c.wait(|l| l == "media connection restored");
        println!(
            "{}: media connection restored {:.1} s after media node {second} was stopped (SIGTERM)",
            c.name,
            (back - stopped).as_secs_f64()
        );
    }
    std::thread::sleep(Duration::from_secs(3));
    let third = status().media.get("room").cloned();
    assert!(
        third
            .as_deref()
            .is_some_and(|t| t != carrying && t != second),
        "the room's media moved on from {second}: {third:?}"
    );
    // No rejoin: one stay each, and each heard the other.
    assert!(!ann.seen.contains("joined room again"), "{}", ann.seen);
    ann.leave_having_heard("bob");
    bob.leave_having_heard("ann");
}

/// `hush loadtest` against a signaling node without an SFU and two
/// `hush-sfu` media nodes: each media node carries one of the two rooms,
/// and the report gives each its forwarded packets and its own CPU.
#[test]
fn a_load_test_reports_each_media_nodes_share() {
    let c = ClusterFiles::new();
    let sfus: Vec<ServerProcess> = ["sfu-1", "sfu-2"]
        .iter()
        .map(|id| ServerProcess::media_node(&c, id))
        .collect();
    let node = ServerProcess::signaling_node(&c, "node-a");
    let media = format!("{},{}", sfus[0].url, sfus[1].url);
    let json = c.dir.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_hush"))
        .args(["loadtest", "--server", &node.url, "--secret-file"])
        .arg(&c.secret_file)
        .args(["--media-node", &media, "--sfu-control-secret-file"])
        .arg(&c.control_file)
        .args(["--rooms", "2", "--publishers", "1", "--subscribers", "2"])
        .args(["--seconds", "3", "--baseline", "none", "--json"])
        .arg(&json)
        .output()
        .expect("run hush loadtest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "hush loadtest failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("report")).expect("JSON");
    let step = &report["steps"][0];
    assert_eq!(step["decryption_failures"], 0, "{step:#}");
    let shares = step["nodes"].as_array().expect("per-node shares");
    assert_eq!(
        shares.len(),
        3,
        "the signaling node and two media nodes: {step:#}"
    );
    assert_eq!(
        shares[0]["forwarded_packets"], 0,
        "the signaling node has no SFU"
    );
    for (share, sfu) in shares[1..].iter().zip(&sfus) {
        assert_eq!(share["url"], sfu.url.as_str());
        assert!(
            share["forwarded_packets"].as_u64() > Some(0),
            "each media node carries a room: {step:#}"
        );
        assert!(share["sfu_cpu_seconds"].as_f64() > Some(0.0), "{step:#}");
    }
}
