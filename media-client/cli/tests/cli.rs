//! The `hush` command as a user runs it.

use std::process::Command;

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

#[test]
fn hush_demo_runs_a_real_call_and_exits_zero() {
    let out = hush()
        .args(["demo", "--seconds", "4"])
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
    use std::io::{BufRead as _, BufReader};
    use std::process::Stdio;
    use std::time::Duration;

    let (rt, server, dir) = local_server();
    let token = server.token("room", "ann").expect("token");
    let mut child = hush()
        .args(["call", "--server", &server.url(), "--room", "room"])
        .args(["--name", "ann", "--token", &token, "--seconds", "60"])
        .arg("--config-dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hush call");
    let stdout = child.stdout.take().expect("stdout");
    let (joined_tx, joined_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("joined ") {
                let _ = joined_tx.send(());
            }
        }
    });
    joined_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("hang guard: the call never joined");
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
