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

fn command() -> Command {
    support::hush_server_command()
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
    let (addr, _, banner) = support::listening_on(&mut stdout, "http").await;
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
        "--rtc-tcp-port",
        "--no-rtc-tcp",
        "--sfu-workers",
        "--no-media",
        "--sfu-url",
        "--sfu-control-secret-file",
        "--config",
        "--check-config",
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
    for flag in ["--secret-file", "--room", "--name", "--ttl", "--link-base"] {
        assert!(text.contains(flag), "token --help lacks {flag}:\n{text}");
    }
}

/// `deploy/hush-server.toml` with its `/etc/hush/` files made in a
/// directory of this test, and that directory.
fn deployed_example(tag: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("hush-cli-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("config dir");
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["hush.example.org".to_owned()]).expect("cert");
    std::fs::write(dir.join("fullchain.pem"), cert.pem()).expect("write cert");
    std::fs::write(dir.join("privkey.pem"), signing_key.serialize_pem()).expect("write key");
    std::fs::write(dir.join("secret"), "a secret of at least sixteen bytes\n").expect("secret");
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/hush-server.toml"),
    )
    .expect("deploy/hush-server.toml");
    let config = dir.join("hush-server.toml");
    let here = format!("{}/", dir.display());
    std::fs::write(&config, example.replace("/etc/hush/", &here)).expect("write config");
    (config, dir)
}

async fn check(config: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> (bool, String) {
    let mut with_config = vec![
        std::ffi::OsString::from("--config"),
        config.as_os_str().to_owned(),
    ];
    with_config.extend(args.iter().map(std::ffi::OsString::from));
    check_args(env, &with_config).await
}

/// `hush-server --check-config ARGS` with `env`: whether it passed, and what it printed.
async fn check_args(env: &[(&str, &str)], args: &[std::ffi::OsString]) -> (bool, String) {
    let mut c = command();
    c.arg("--check-config").args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = tokio::time::timeout(HANG_GUARD, c.output())
        .await
        .expect("--check-config hangs")
        .expect("run --check-config");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn the_deploy_example_configuration_checks_and_flags_and_environment_override_it() {
    let (config, dir) = deployed_example("deploy");
    let (ok, text) = check(&config, &[], &[]).await;
    assert!(ok, "{text}");
    for line in [
        "configuration OK",
        "listen: 0.0.0.0:443 https/wss (TLS)",
        "ice-tcp 0.0.0.0:7881",
        "announced as 203.0.113.7",
        "max-rooms 1000,",
    ] {
        assert!(text.contains(line), "no `{line}` in:\n{text}");
    }
    assert!(!text.contains("DEVELOPMENT"), "{text}");
    let (ok, text) = check(&config, &[("HUSH_MAX_ROOMS", "7")], &[]).await;
    assert!(
        ok && text.contains("max-rooms 7,"),
        "the environment beats the file:\n{text}"
    );
    let (ok, text) = check(&config, &[("HUSH_MAX_ROOMS", "7")], &["--max-rooms", "9"]).await;
    assert!(
        ok && text.contains("max-rooms 9,"),
        "the command line beats both:\n{text}"
    );
    // HUSH_CONFIG names the file as well as --config does.
    let mut c = command();
    c.env("HUSH_CONFIG", &config).arg("--check-config");
    let out = c.output().await.expect("run");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("max-rooms 1000,"),
        "{out:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_bad_configuration_is_refused_with_its_reason() {
    let (config, dir) = deployed_example("bad");
    let good = std::fs::read_to_string(&config).expect("read");
    for (change, reason) in [
        (
            good.replace("max-rooms", "max-room"),
            "unknown key `max-room`",
        ),
        (
            good.replace("rtc-port = 7882", "rtc-port = \"many\""),
            "rtc-port",
        ),
        (
            good.replace("public-ip = [\"203.0.113.7\"]", ""),
            "needs a public IP (--public-ip)",
        ),
        (good.replace("fullchain.pem", "missing.pem"), "missing.pem"),
        (format!("{good}\nlisten = "), "TOML"),
    ] {
        std::fs::write(&config, &change).expect("write");
        let (ok, text) = check(&config, &[], &[]).await;
        assert!(!ok, "accepted:\n{change}\n{text}");
        assert!(text.contains(reason), "no `{reason}` in:\n{text}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_standalone_sfu_node_is_checked_before_serving() {
    let dir = std::env::temp_dir().join(format!("hush-cli-{}-sfu-url", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let secret = dir.join("control-secret");
    std::fs::write(&secret, "a control secret of sixteen bytes or more\n").expect("secret");
    let run = |args: Vec<String>| async move {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        check_args(&[], &args).await
    };
    let with = |url: &str| {
        vec![
            "--sfu-url".to_owned(),
            url.to_owned(),
            "--sfu-control-secret-file".to_owned(),
            secret.display().to_string(),
        ]
    };
    let (ok, text) = run(with("http://10.0.0.5:7890")).await;
    assert!(ok, "{text}");
    assert!(
        text.contains("media: the hush-sfu node at http://10.0.0.5:7890"),
        "{text}"
    );
    let (ok, text) = run(with("https://10.0.0.5:7890")).await;
    assert!(!ok && text.contains("http://HOST:PORT"), "{text}");
    // A control secret with no node to use it for is a mistake, said so.
    let (ok, text) = run(with("http://10.0.0.5:7890")[2..].to_vec()).await;
    assert!(!ok && text.contains("add --sfu-url, or --redis"), "{text}");
    // The node's control secret is required, and must be one.
    let (ok, text) = run(vec!["--sfu-url".into(), "http://10.0.0.5:7890".into()]).await;
    assert!(!ok && text.contains("sfu-control-secret-file"), "{text}");
    std::fs::write(&secret, "short").expect("secret");
    let (ok, text) = run(with("http://10.0.0.5:7890")).await;
    assert!(!ok && text.contains("control secret"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
