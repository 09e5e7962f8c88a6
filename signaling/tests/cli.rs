//! The `hush-server` binary as an operator runs it: `--help`, `token`, the
//! development secret, and graceful shutdown on SIGTERM.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;

use hush_signaling::{
    ClientMessage, CloseReason, ErrorCode, Opaque, PROTOCOL_VERSION, ServerMessage,
};
use support::{Client, End, HANG_GUARD};
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

const BIN: &str = env!("CARGO_BIN_EXE_hush-server");

fn command() -> Command {
    let mut c = Command::new(BIN);
    for var in [
        "HUSH_LISTEN",
        "HUSH_SECRET",
        "HUSH_SECRET_FILE",
        "HUSH_TLS_CERT",
        "HUSH_TLS_KEY",
        "HUSH_JOIN_TIMEOUT",
        "HUSH_IDLE_TIMEOUT",
        "HUSH_RTC_PORT",
        "HUSH_PUBLIC_IP",
        "HUSH_SFU_WORKERS",
    ] {
        c.env_remove(var);
    }
    c.env("RUST_LOG", "warn").kill_on_drop(true);
    c
}

/// A secret file unique to this test process and `tag`.
fn secret_file(tag: &str, contents: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("hush-cli-{}-{tag}.secret", std::process::id()));
    std::fs::write(&path, contents).expect("write secret file");
    path
}

struct Running {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    addr: SocketAddr,
    /// Lines printed before the listening line.
    banner: Vec<String>,
}

/// Starts the binary on an ephemeral port and waits for its listening line.
async fn start(args: &[&str]) -> Running {
    let mut child = command()
        .args(["--listen", "127.0.0.1:0", "--rtc-port", "0"])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn hush-server");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut banner = Vec::new();
    let addr = tokio::time::timeout(HANG_GUARD, async {
        loop {
            let line = stdout
                .next_line()
                .await
                .expect("read")
                .expect("server exited early");
            if let Some(rest) = line.strip_prefix("hush-server listening on http://") {
                let addr = rest.split_whitespace().next().expect("address");
                return addr.parse::<SocketAddr>().expect("socket address");
            }
            banner.push(line);
        }
    })
    .await
    .expect("server prints its address");
    Running {
        child,
        stdout,
        addr,
        banner,
    }
}

impl Running {
    /// SIGTERM, then the exit status and the rest of stdout.
    async fn terminate(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let pid = self.child.id().expect("running").to_string();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("kill");
        assert!(killed.success());
        let status = tokio::time::timeout(HANG_GUARD, self.child.wait())
            .await
            .expect("server exits after SIGTERM")
            .expect("wait");
        let mut rest = Vec::new();
        while let Ok(Some(line)) = self.stdout.next_line().await {
            rest.push(line);
        }
        (status, rest)
    }
}

async fn mint(args: &[&str]) -> std::process::Output {
    let out = command().arg("token").args(args).output();
    tokio::time::timeout(HANG_GUARD, out)
        .await
        .expect("token hangs")
        .expect("run token")
}

fn last_line(output: &std::process::Output) -> String {
    let stdout = String::from_utf8(output.stdout.clone()).expect("utf-8");
    stdout.lines().last().expect("a line").to_owned()
}

async fn join(addr: SocketAddr, room: &str, name: &str, token: String) -> (Client, ServerMessage) {
    let mut c = Client::connect(addr).await;
    c.send(&ClientMessage::Join {
        protocol: PROTOCOL_VERSION,
        room: room.parse().expect("room"),
        name: name.parse().expect("name"),
        token: token.into(),
        key_package: Opaque(vec![7]),
    })
    .await;
    let reply = c.recv().await;
    (c, reply)
}

#[tokio::test]
async fn a_minted_token_admits_to_a_server_with_the_same_secret_file() {
    let file = secret_file("same", "correct horse battery staple\n");
    let other = secret_file("other", "a different secret, also long");
    let file_arg = file.to_str().expect("path");
    let server = start(&["--secret-file", file_arg]).await;
    assert!(server.banner.iter().all(|l| !l.contains("DEVELOPMENT")));

    let out = mint(&[
        "--secret-file",
        file_arg,
        "--room",
        "standup",
        "--name",
        "Ann",
        "--ttl",
        "1h",
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    let (mut ann, reply) = join(server.addr, "standup", "Ann", last_line(&out)).await;
    assert!(matches!(reply, ServerMessage::Joined { .. }), "{reply:?}");

    let forged = mint(&[
        "--secret-file",
        other.to_str().expect("path"),
        "--room",
        "standup",
        "--name",
        "Bob",
    ])
    .await;
    let (_bob, reply) = join(server.addr, "standup", "Bob", last_line(&forged)).await;
    assert!(
        matches!(
            reply,
            ServerMessage::Error {
                code: ErrorCode::TokenForged,
                ..
            }
        ),
        "{reply:?}"
    );

    // SIGTERM: the member is told, the process exits cleanly.
    let (status, rest) = server.terminate().await;
    assert_eq!(
        ann.until_closed().await,
        (Some(CloseReason::ServerShutdown), End::Closed(1001))
    );
    assert!(status.success(), "{status:?}");
    assert_eq!(rest.last().map(String::as_str), Some("hush-server stopped"));
    for f in [file, other] {
        let _ = std::fs::remove_file(f);
    }
}

#[tokio::test]
async fn without_a_secret_the_server_prints_a_labelled_development_secret() {
    let server = start(&[]).await;
    let line = server
        .banner
        .iter()
        .find(|l| l.starts_with("DEVELOPMENT SECRET"))
        .unwrap_or_else(|| panic!("no development secret in {:?}", server.banner));
    let secret = line.rsplit(": ").next().expect("secret").to_owned();
    assert_eq!(secret.len(), 64);
    let out = mint(&["--secret", &secret, "--room", "r", "--name", "Dev"]).await;
    let (_c, reply) = join(server.addr, "r", "Dev", last_line(&out)).await;
    assert!(matches!(reply, ServerMessage::Joined { .. }), "{reply:?}");
    let (status, _) = server.terminate().await;
    assert!(status.success());
}

#[tokio::test]
async fn token_without_a_secret_fails() {
    let out = mint(&["--room", "r", "--name", "Ann"]).await;
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn help_documents_every_flag() {
    let help = command().arg("--help").output().await.expect("help");
    let text = String::from_utf8(help.stdout).expect("utf-8");
    for flag in [
        "--listen",
        "--secret ",
        "--secret-file",
        "--tls-cert",
        "--tls-key",
        "--max-message-bytes",
        "--messages-per-sec",
        "--message-burst",
        "--rate-strikes",
        "--max-room-participants",
        "--max-rooms",
        "--join-timeout",
        "--idle-timeout",
        "--send-queue",
        "--capture",
        "--rtc-ip",
        "--rtc-port",
        "--public-ip",
        "--sfu-workers",
        "--no-media",
        "token",
        "embedded sfu",
    ] {
        assert!(
            text.to_lowercase().contains(&flag.to_lowercase()),
            "--help lacks {flag}:\n{text}"
        );
    }
    let help = command()
        .args(["token", "--help"])
        .output()
        .await
        .expect("help");
    let text = String::from_utf8(help.stdout).expect("utf-8");
    for flag in ["--secret-file", "--room", "--name", "--ttl"] {
        assert!(text.contains(flag), "token --help lacks {flag}:\n{text}");
    }
}
