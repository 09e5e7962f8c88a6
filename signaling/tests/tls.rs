//! `hush-server --tls-cert --tls-key` as an operator runs it, with
//! certificates this test makes (a CA of its own, `rcgen`), against the
//! real client (`hush_client`): `wss://` and `https://` on one port, every
//! kind of certificate the client must refuse refused with a clear error,
//! `ws://` off this machine refused, and SIGHUP reloading the certificate
//! without dropping a connection.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hush_client::call::{Call, CallOptions, ChannelMedia, JoinSpec};
use hush_client::session::CallEvent;
use hush_client::signal::{ConnectOptions, Signaling};
use hush_client::{CertificateProblem, SignalingError};
use hush_signaling::{
    ClientMessage, DisplayName, JoinToken, Opaque, PROTOCOL_VERSION, RoomId, ServerMessage,
    ServerSecret,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// Bound on any single wait; reaching it means a hang, not slowness.
const HANG_GUARD: Duration = Duration::from_secs(20);

const SECRET: &str = "tls-test-secret-0123456789abcdef";

#[tokio::test]
async fn a_client_trusting_the_ca_joins_over_wss_and_https_serves_health_and_metrics() {
    let dir = TempDir::new("join");
    let pki = Pki::new();
    let (cert, key) = dir.server_files(&pki.issue(&["localhost", "127.0.0.1"], Validity::Now));
    let server = Running::start(&cert, &key, &dir).await;

    // The library's call driver, as `hush call --ca-file` runs it.
    let spec = JoinSpec {
        server: format!("wss://localhost:{}", server.addr.port()),
        room: "tls".into(),
        name: "ann".into(),
        token: token("tls", "ann"),
        ca_file: Some(dir.ca_file(&pki)),
        insecure: false,
    };
    let (media, mut events) = ChannelMedia::new();
    let options = CallOptions {
        media: None,
        ..CallOptions::default()
    };
    let identity = hush_e2ee::Identity::generate();
    let call = guard(Call::start(&spec, identity, options, media))
        .await
        .expect("joins over wss://");
    loop {
        let event = guard(events.recv()).await.expect("joined, not refused");
        if matches!(event, CallEvent::Joined { .. }) {
            break;
        }
    }

    // The same port answers https:// (an IP address as the name, this time).
    let roots = [pki.ca_der()];
    let (status, body) = https_get(server.addr, "/healthz", &roots).await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "ok\n");
    let (status, body) = https_get(server.addr, "/metrics", &roots).await;
    assert!(status.contains("200"), "{status}");
    assert!(
        body.contains("hush_signaling_participants 1"),
        "the wss:// member is counted:\n{body}"
    );
    drop(call);
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_is_refused_with_a_clear_error() {
    let dir = TempDir::new("unknown-ca");
    let pki = Pki::new();
    let (cert, key) = dir.server_files(&pki.issue(&["localhost"], Validity::Now));
    let server = Running::start(&cert, &key, &dir).await;

    // Through the call driver, as `hush call` without --ca-file.
    let spec = JoinSpec {
        server: format!("wss://localhost:{}", server.addr.port()),
        room: "tls".into(),
        name: "ann".into(),
        token: token("tls", "ann"),
        ca_file: None,
        insecure: false,
    };
    let options = CallOptions {
        media: None,
        ..CallOptions::default()
    };
    let refused = guard(Call::start(
        &spec,
        hush_e2ee::Identity::generate(),
        options,
        ChannelMedia::new().0,
    ))
    .await;
    let Err(error) = refused else {
        panic!("a certificate from an unknown CA was accepted");
    };
    let message = error.to_string();
    assert!(
        message.contains("certificate authority") && message.contains("--ca-file"),
        "{message}"
    );

    // A CA file with another CA does not help.
    let other = Pki::named("another test CA");
    let refused = connect(server.addr, "localhost", Some(dir.ca_file(&other))).await;
    assert_certificate_problem(refused, CertificateProblem::UnknownIssuer);
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused_with_a_clear_error() {
    let dir = TempDir::new("name");
    let pki = Pki::new();
    let (cert, key) = dir.server_files(&pki.issue(&["hush.example.org"], Validity::Now));
    let server = Running::start(&cert, &key, &dir).await;
    let refused = connect(server.addr, "localhost", Some(dir.ca_file(&pki))).await;
    let message = assert_certificate_problem(refused, CertificateProblem::WrongName);
    assert!(message.contains("another name"), "{message}");
    assert!(message.contains("hush.example.org"), "{message}");
}

#[tokio::test]
async fn an_expired_certificate_is_refused_with_a_clear_error() {
    let dir = TempDir::new("expired");
    let pki = Pki::new();
    let (cert, key) = dir.server_files(&pki.issue(&["localhost"], Validity::Expired));
    let server = Running::start(&cert, &key, &dir).await;
    let refused = connect(server.addr, "localhost", Some(dir.ca_file(&pki))).await;
    let message = assert_certificate_problem(refused, CertificateProblem::Expired);
    assert!(message.contains("expired"), "{message}");
}

#[tokio::test]
async fn ws_to_a_host_off_this_machine_is_refused_unless_insecure() {
    // 192.0.2.1 (TEST-NET-1) answers nothing: the refusal must come first.
    let started = Instant::now();
    let refused = Signaling::connect("ws://192.0.2.1:7880", &ConnectOptions::default()).await;
    match refused {
        Err(SignalingError::Insecure { host }) => assert_eq!(host, "192.0.2.1"),
        other => panic!("expected the insecure refusal, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    let message = SignalingError::Insecure {
        host: "192.0.2.1".into(),
    }
    .to_string();
    assert!(
        message.contains("clear text") && message.contains("--insecure"),
        "{message}"
    );

    // With insecure allowed, the client tries (and cannot reach it).
    let insecure = ConnectOptions {
        ca_file: None,
        insecure: true,
    };
    let attempt = tokio::time::timeout(
        Duration::from_millis(300),
        Signaling::connect("ws://192.0.2.1:7880", &insecure),
    )
    .await;
    assert!(
        !matches!(attempt, Ok(Err(SignalingError::Insecure { .. }))),
        "{attempt:?}"
    );
}

#[tokio::test]
async fn plain_ws_to_the_tls_port_fails_cleanly_and_the_server_serves_the_next_client() {
    let dir = TempDir::new("plain");
    let pki = Pki::new();
    let (cert, key) = dir.server_files(&pki.issue(&["localhost", "127.0.0.1"], Validity::Now));
    let mut server = Running::start(&cert, &key, &dir).await;

    let plain = guard(Signaling::connect(
        &format!("ws://127.0.0.1:{}", server.addr.port()),
        &ConnectOptions::default(),
    ))
    .await;
    assert!(
        matches!(plain, Err(SignalingError::Connect { .. })),
        "{plain:?}"
    );
    // Garbage instead of a ClientHello.
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    tcp.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0, 1, 2, 3])
        .await
        .expect("write");
    let mut rest = Vec::new();
    let _ = guard(tcp.read_to_end(&mut rest)).await;

    let (mut ws, reply) = join(server.addr, "localhost", &dir.ca_file(&pki), "bob").await;
    assert!(matches!(reply, ServerMessage::Joined { .. }), "{reply:?}");
    ping(&mut ws, 1).await;
    assert!(server.child.try_wait().expect("status").is_none());
    let (_, metrics) = https_get(server.addr, "/metrics", &[pki.ca_der()]).await;
    assert!(
        metrics.contains("hush_signaling_tls_handshake_failures_total 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_client_that_never_finishes_the_tls_handshake_is_closed_at_the_handshake_timeout() {
    let dir = TempDir::new("slow");
    let pki = Pki::new();
    let (cert, key) = dir.server_files(&pki.issue(&["localhost", "127.0.0.1"], Validity::Now));
    let server = Running::start_with(&cert, &key, &dir, &["--handshake-timeout", "300ms"]).await;
    let started = Instant::now();
    let mut silent = TcpStream::connect(server.addr).await.expect("connect");
    let mut rest = Vec::new();
    let read = guard(silent.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "{read:?}");
    assert!(started.elapsed() >= Duration::from_millis(250));
    let (_, metrics) = https_get(server.addr, "/metrics", &[pki.ca_der()]).await;
    assert!(
        metrics.contains("hush_signaling_handshake_timeouts_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn sighup_reloads_the_certificate_and_open_websockets_stay_usable() {
    let dir = TempDir::new("reload");
    let pki = Pki::new();
    let first = pki.issue(&["localhost", "127.0.0.1"], Validity::Now);
    let (cert, key) = dir.server_files(&first);
    let mut server = Running::start(&cert, &key, &dir).await;
    let ca = dir.ca_file(&pki);
    let roots = [pki.ca_der()];
    let (mut ws, reply) = join(server.addr, "localhost", &ca, "ann").await;
    assert!(matches!(reply, ServerMessage::Joined { .. }), "{reply:?}");
    assert_eq!(leaf(server.addr, &roots).await, first.der);

    // A key that is not the certificate's: the reload fails, the old pair stays.
    let second = pki.issue(&["localhost", "127.0.0.1"], Validity::Now);
    std::fs::write(&cert, &second.cert_pem).expect("write cert");
    server.hangup().await;
    let warning = guard(async {
        loop {
            let line = server.stderr.recv().await.expect("server stderr open");
            if line.contains("TLS reload failed") {
                return line;
            }
        }
    })
    .await;
    assert!(warning.contains("does not match"), "{warning}");
    assert_eq!(leaf(server.addr, &roots).await, first.der);

    // The matching key: new connections get the new certificate.
    std::fs::write(&key, &second.key_pem).expect("write key");
    server.hangup().await;
    guard(async {
        while leaf(server.addr, &roots).await != second.der {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    // The WebSocket opened under the first certificate still works both ways.
    ping(&mut ws, 7).await;
    let (mut bob, reply) = join(server.addr, "localhost", &ca, "bob").await;
    assert!(matches!(reply, ServerMessage::Joined { .. }), "{reply:?}");
    let joined = guard(ws.recv()).await.expect("open").expect("message");
    assert!(
        matches!(joined, ServerMessage::MemberJoined { .. }),
        "{joined:?}"
    );
    ping(&mut bob, 8).await;
}

#[tokio::test]
async fn without_tls_a_listen_address_off_loopback_prints_a_warning() {
    let mut child = command()
        .args(["--listen", "0.0.0.0:0", "--no-media", "--secret", SECRET])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hush-server");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let warning = guard(async {
        loop {
            let line = stderr
                .next_line()
                .await
                .expect("read")
                .expect("server exited early");
            if line.contains("without TLS") {
                return line;
            }
        }
    })
    .await;
    assert!(
        warning.contains("clear text") && warning.contains("--tls-cert"),
        "{warning}"
    );
}

#[tokio::test]
async fn tls_flags_come_in_pairs() {
    let out = command()
        .args(["--tls-cert", "/nonexistent/cert.pem"])
        .output()
        .await
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--tls-key"), "{stderr}");
}

// ---- harness ----

fn command() -> Command {
    support::hush_server_command()
}

async fn guard<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(HANG_GUARD, f)
        .await
        .expect("hang guard")
}

/// A running `hush-server` with TLS.
struct Running {
    child: Child,
    addr: SocketAddr,
    /// Its standard error, line by line (read all along, so it never blocks).
    stderr: mpsc::UnboundedReceiver<String>,
}

impl Running {
    /// Starts the binary with `--tls-cert cert --tls-key key` on an ephemeral
    /// loopback port and waits for its `https://` listening line.
    async fn start(cert: &Path, key: &Path, dir: &TempDir) -> Self {
        Self::start_with(cert, key, dir, &[]).await
    }

    /// [`Running::start`] with more flags.
    async fn start_with(cert: &Path, key: &Path, dir: &TempDir, flags: &[&str]) -> Self {
        let secret = dir.write("secret", SECRET);
        let mut child = command()
            .args(["--listen", "127.0.0.1:0", "--no-media", "--secret-file"])
            .arg(&secret)
            .args(flags)
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hush-server");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let (tx, stderr) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send(line);
            }
        });
        let (addr, rest, _) = support::listening_on(&mut stdout, "https").await;
        assert!(rest.contains("wss://"), "{rest}");
        Self {
            child,
            addr,
            stderr,
        }
    }

    async fn hangup(&self) {
        let pid = self.child.id().expect("running").to_string();
        let status = Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .await
            .expect("kill");
        assert!(status.success());
    }
}

/// A join token for the test's secret.
fn token(room: &str, name: &str) -> String {
    let secret = ServerSecret::new(SECRET.as_bytes().to_vec()).expect("secret");
    let room: RoomId = room.parse().expect("room");
    let name: DisplayName = name.parse().expect("name");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    JoinToken::mint(&secret, &room, &name, now + 3600)
        .as_str()
        .to_owned()
}

/// Connects over `wss://host:port` with `ca_file` trusted.
async fn connect(
    addr: SocketAddr,
    host: &str,
    ca_file: Option<PathBuf>,
) -> Result<Signaling, SignalingError> {
    let options = ConnectOptions {
        ca_file,
        insecure: false,
    };
    guard(Signaling::connect(
        &format!("wss://{host}:{}", addr.port()),
        &options,
    ))
    .await
}

/// Connects over `wss://` and joins room `tls` as `name`; the server's reply.
async fn join(
    addr: SocketAddr,
    host: &str,
    ca_file: &Path,
    name: &str,
) -> (Signaling, ServerMessage) {
    let mut ws = connect(addr, host, Some(ca_file.to_owned()))
        .await
        .expect("connects over wss://");
    ws.send(&ClientMessage::Join {
        protocol: PROTOCOL_VERSION,
        room: "tls".parse().expect("room"),
        name: name.parse().expect("name"),
        token: token("tls", name).into(),
        key_package: Opaque(name.as_bytes().to_vec()),
    })
    .await
    .expect("send join");
    let reply = guard(ws.recv()).await.expect("open").expect("message");
    (ws, reply)
}

/// A ping answered by the server's pong: the connection works both ways.
async fn ping(ws: &mut Signaling, nonce: u64) {
    ws.send(&ClientMessage::Ping { nonce })
        .await
        .expect("send ping");
    loop {
        match guard(ws.recv()).await.expect("open").expect("message") {
            ServerMessage::Pong { nonce: n } if n == nonce => return,
            _ => continue,
        }
    }
}

/// That the connection was refused for `problem`; the error's message.
fn assert_certificate_problem(
    result: Result<Signaling, SignalingError>,
    problem: CertificateProblem,
) -> String {
    match result {
        Err(error @ SignalingError::Certificate { problem: got, .. }) if got == problem => {
            error.to_string()
        }
        other => panic!("expected a {problem:?} certificate error, got {other:?}"),
    }
}

/// A TLS client trusting `roots` only.
fn tls_client(roots: &[CertificateDer<'static>]) -> tokio_rustls::TlsConnector {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).expect("root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// A TLS connection to `addr`, verified as `127.0.0.1`.
async fn tls_connect(
    addr: SocketAddr,
    roots: &[CertificateDer<'static>],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::IpAddress(addr.ip().into());
    guard(tls_client(roots).connect(name, tcp))
        .await
        .expect("TLS handshake")
}

/// The leaf certificate a new connection is offered.
async fn leaf(addr: SocketAddr, roots: &[CertificateDer<'static>]) -> CertificateDer<'static> {
    let tls = tls_connect(addr, roots).await;
    let certs = tls.get_ref().1.peer_certificates().expect("certificates");
    certs.first().expect("a leaf").clone().into_owned()
}

/// An HTTP/1.1 GET over TLS; (status line, body).
async fn https_get(
    addr: SocketAddr,
    path: &str,
    roots: &[CertificateDer<'static>],
) -> (String, String) {
    let mut tls = tls_connect(addr, roots).await;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    // The server may close without close_notify; what came before counts.
    let _ = guard(tls.read_to_end(&mut raw)).await;
    let text = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

/// A CA of the test's own.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate and its key.
struct Issued {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

#[derive(Clone, Copy)]
enum Validity {
    Now,
    Expired,
}

impl Pki {
    fn new() -> Self {
        Self::named("hush test CA")
    }

    fn named(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let ca = CertifiedIssuer::self_signed(params, key).expect("CA");
        Self { ca }
    }

    fn ca_der(&self) -> CertificateDer<'static> {
        self.ca.der().clone()
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    fn issue(&self, names: &[&str], validity: Validity) -> Issued {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "hush test server");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        if let Validity::Expired = validity {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.ca).expect("sign");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

/// A directory for one test's files, removed at the end.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!("hush-tls-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&path).expect("temp dir");
        Self(path)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write");
        path
    }

    /// `cert.pem` and `key.pem` holding `issued`.
    fn server_files(&self, issued: &Issued) -> (PathBuf, PathBuf) {
        (
            self.write("cert.pem", &issued.cert_pem),
            self.write("key.pem", &issued.key_pem),
        )
    }

    /// A CA file holding `pki`'s certificate.
    fn ca_file(&self, pki: &Pki) -> PathBuf {
        self.write("ca.pem", &pki.ca.pem())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `redis-server` on a free loopback port, for the cluster test; killed on drop.
struct Redis {
    _child: Child,
    port: u16,
}

impl Redis {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server (scripts/setup installs it)");
        guard(async {
            while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        Self {
            _child: child,
            port,
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// Three TLS nodes of one cluster: a member who joins through a node that
/// does not hold the room is relayed over `wss://`, checked against the
/// cluster's CA (`--node-ca-file`); a node that does not trust that CA
/// relays nothing, and its member gets `cluster_unavailable`.
#[tokio::test]
async fn cluster_nodes_relay_over_wss_only_to_nodes_they_trust() {
    let dir = TempDir::new("cluster");
    let pki = Pki::new();
    let (cert, key) = dir.server_files(&pki.issue(&["localhost", "127.0.0.1"], Validity::Now));
    let ca = dir.ca_file(&pki);
    let redis = Redis::start().await;
    let url = redis.url();
    let ca_flag = ca.display().to_string();
    let node = |id: &'static str, trust: bool| {
        let mut flags = vec!["--redis", url.as_str(), "--node-id", id];
        if trust {
            flags.extend(["--node-ca-file", ca_flag.as_str()]);
        }
        flags
    };
    let a = Running::start_with(&cert, &key, &dir, &node("a", true)).await;
    let b = Running::start_with(&cert, &key, &dir, &node("b", true)).await;
    let c = Running::start_with(&cert, &key, &dir, &node("c", false)).await;
    // ann opens the room on a (the first node, by id, with the fewest rooms).
    let (_ann, reply) = join(a.addr, "localhost", &ca, "ann").await;
    assert!(matches!(reply, ServerMessage::Joined { .. }), "{reply:?}");
    // bob comes through b, relayed to a over wss://: he finds ann there.
    let (_bob, reply) = join(b.addr, "localhost", &ca, "bob").await;
    match reply {
        ServerMessage::Joined { members, .. } => {
            let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
            assert_eq!(names, ["ann"], "bob joined the room on node a");
        }
        other => panic!("bob was not relayed: {other:?}"),
    }
    // c does not trust the cluster's CA: it cannot reach a, and says so.
    let (_cat, reply) = join(c.addr, "localhost", &ca, "cat").await;
    assert!(
        matches!(
            reply,
            ServerMessage::Error {
                code: hush_signaling::ErrorCode::ClusterUnavailable,
                ..
            }
        ),
        "{reply:?}"
    );
}
