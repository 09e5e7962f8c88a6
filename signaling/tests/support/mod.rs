//! Shared harness: an in-process server on an ephemeral loopback port and
//! real WebSocket clients (tokio-tungstenite). Timeouts here are hang
//! guards only; no test depends on how fast the machine is.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt as _, StreamExt as _};
use hush_signaling::{
    ClientMessage, CloseReason, DisplayName, JoinToken, Limits, MediaRouter, Member, NoMedia,
    Opaque, PROTOCOL_VERSION, ParticipantId, RoomId, Server, ServerConfig, ServerHandle,
    ServerMessage, ServerSecret,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// Generous bound on any single wait; reaching it means a hang, not slowness.
pub const HANG_GUARD: Duration = Duration::from_secs(20);

/// The `hush-server` binary as a test starts it: no `HUSH_*` setting of the
/// surrounding environment leaks in, `RUST_LOG=warn`, killed when dropped.
pub fn hush_server_command() -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_hush-server"));
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("HUSH_") {
            c.env_remove(var);
        }
    }
    c.env("RUST_LOG", "warn").kill_on_drop(true);
    c
}

/// Reads a starting `hush-server`'s stdout up to the line saying where it
/// listens with `scheme` (`http` or `https`); returns that line's address,
/// the rest of that line, and every line before it.
pub async fn listening_on(
    stdout: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    scheme: &str,
) -> (SocketAddr, String, Vec<String>) {
    let prefix = format!("hush-server listening on {scheme}://");
    let mut before = Vec::new();
    tokio::time::timeout(HANG_GUARD, async {
        loop {
            let line = stdout
                .next_line()
                .await
                .expect("read")
                .expect("server exited early");
            if let Some(rest) = line.strip_prefix(&prefix) {
                let addr = rest.split_whitespace().next().expect("address");
                let addr = addr.parse::<SocketAddr>().expect("socket address");
                return (addr, rest.to_owned(), before);
            }
            before.push(line);
        }
    })
    .await
    .expect("hang guard: the server never said where it listens")
}

/// A server running in this process.
pub struct TestServer {
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    pub secret: ServerSecret,
    task: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    /// Starts a server with `limits` on 127.0.0.1, port chosen by the OS.
    pub async fn start(limits: Limits) -> Self {
        Self::start_with_router(limits, Arc::new(NoMedia)).await
    }

    /// Starts a server whose SFU seam is `router`.
    pub async fn start_with_router(limits: Limits, router: Arc<dyn MediaRouter>) -> Self {
        let secret = ServerSecret::new(b"test-secret-0123456789abcdef".to_vec()).expect("secret");
        let config = ServerConfig {
            limits,
            secret: secret.clone(),
            tls: None,
        };
        let server = Server::bind("127.0.0.1:0".parse().expect("addr"), config, router)
            .await
            .expect("bind");
        let addr = server.local_addr().expect("local addr");
        let handle = server.handle();
        let task = tokio::spawn(server.run());
        Self {
            addr,
            handle,
            secret,
            task,
        }
    }

    /// A token for `name` in `room`, valid for an hour.
    pub fn token(&self, room: &str, name: &str) -> String {
        mint(&self.secret, room, name, now() + 3600)
    }

    /// Connects a client that has not joined yet.
    pub async fn connect(&self) -> Client {
        Client::connect(self.addr).await
    }

    /// Connects and joins `room` as `name`; the key package is the name's bytes.
    pub async fn join(&self, room: &str, name: &str) -> Joined {
        let mut client = self.connect().await;
        client.send(&self.join_message(room, name)).await;
        match client.recv().await {
            ServerMessage::Joined { you, members, .. } => Joined {
                client,
                id: you,
                members,
            },
            other => panic!("{name} did not join {room}: {other:?}"),
        }
    }

    /// A valid join message for `name` in `room`.
    pub fn join_message(&self, room: &str, name: &str) -> ClientMessage {
        ClientMessage::Join {
            protocol: PROTOCOL_VERSION,
            room: room.parse().expect("room"),
            name: name.parse().expect("name"),
            token: self.token(room, name).into(),
            key_package: Opaque(name.as_bytes().to_vec()),
        }
    }

    /// `/metrics`, fetched over HTTP.
    pub async fn metrics(&self) -> String {
        http_get(self.addr, "/metrics").await.1
    }

    /// One sample from `/metrics`, e.g. `hush_signaling_rooms` or
    /// `hush_signaling_messages_rejected_total{reason="unknown_type"}`.
    pub async fn metric(&self, sample: &str) -> u64 {
        let text = self.metrics().await;
        parse_metric(&text, sample)
    }

    /// Waits until `/metrics` shows `sample` at `value`.
    pub async fn wait_for_metric(&self, sample: &str, value: u64) {
        let wait = async {
            loop {
                if self.metric(sample).await == value {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        if tokio::time::timeout(HANG_GUARD, wait).await.is_err() {
            panic!(
                "{sample} never reached {value}; metrics:\n{}",
                self.metrics().await
            );
        }
    }

    /// Shuts the server down and waits for it to finish.
    pub async fn stop(self) {
        self.handle.shutdown();
        let result = tokio::time::timeout(HANG_GUARD, self.task)
            .await
            .expect("server stops in time")
            .expect("server task does not panic");
        result.expect("server ran without error");
    }
}

/// Finds `sample`'s value in a Prometheus text page.
pub fn parse_metric(text: &str, sample: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {sample} in:\n{text}"))
}

/// Mints a token with `secret`.
pub fn mint(secret: &ServerSecret, room: &str, name: &str, expiry: u64) -> String {
    let room: RoomId = room.parse().expect("room");
    let name: DisplayName = name.parse().expect("name");
    JoinToken::mint(secret, &room, &name, expiry)
        .as_str()
        .to_owned()
}

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// A plain HTTP/1.1 GET; returns (status line, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await.expect("read");
        let text = String::from_utf8(raw).expect("utf-8 response");
        let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
        let status = head.lines().next().unwrap_or_default().to_owned();
        (status, body.to_owned())
    };
    tokio::time::timeout(HANG_GUARD, exchange)
        .await
        .expect("HTTP GET hangs")
}

/// A joined client with what `joined` said.
pub struct Joined {
    pub client: Client,
    pub id: ParticipantId,
    pub members: Vec<Member>,
}

/// How a connection ended, as the client saw it.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// A close frame with this code.
    Closed(u16),
    /// The TCP connection ended without a close frame.
    Dropped,
}

/// A real WebSocket client.
pub struct Client {
    ws: WebSocketStream<TcpStream>,
}

impl Client {
    /// Connects to `/v1/ws`.
    pub async fn connect(addr: SocketAddr) -> Self {
        let connect = async {
            let tcp = TcpStream::connect(addr).await.expect("tcp connect");
            tcp.set_nodelay(true).expect("nodelay");
            let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/v1/ws"), tcp)
                .await
                .expect("websocket handshake");
            ws
        };
        let ws = tokio::time::timeout(HANG_GUARD, connect)
            .await
            .expect("connect hangs");
        Self { ws }
    }

    /// Sends a protocol message.
    pub async fn send(&mut self, message: &ClientMessage) {
        let text = serde_json::to_string(message).expect("serialize");
        self.send_text(&text).await;
    }

    /// Sends a raw text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text))
            .await
            .expect("send text frame");
    }

    /// Sends a raw frame, ignoring errors (the server may have closed).
    pub async fn try_send_raw(&mut self, message: Message) -> bool {
        self.ws.send(message).await.is_ok()
    }

    /// Next protocol message; panics on close, error or hang.
    pub async fn recv(&mut self) -> ServerMessage {
        match self.next().await {
            Ok(message) => message,
            Err(end) => panic!("connection ended while a message was expected: {end:?}"),
        }
    }

    /// Next protocol message, or how the connection ended.
    pub async fn next(&mut self) -> Result<ServerMessage, End> {
        let next = async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(text))) => {
                        return Ok(serde_json::from_str(&text).unwrap_or_else(|e| {
                            panic!("server sent an unparsable message {text}: {e}")
                        }));
                    }
                    Some(Ok(Message::Close(frame))) => {
                        return Err(End::Closed(frame.map_or(1005, |f| u16::from(f.code))));
                    }
                    Some(Ok(Message::Binary(_))) => panic!("server sent a binary frame"),
                    Some(Ok(_)) => continue,
                    Some(Err(_)) | None => return Err(End::Dropped),
                }
            }
        };
        tokio::time::timeout(HANG_GUARD, next)
            .await
            .expect("no message from the server in time")
    }

    /// Reads until the server closes; returns the `closing` reason (if one
    /// came) and how the connection ended. Other messages are discarded.
    pub async fn until_closed(&mut self) -> (Option<CloseReason>, End) {
        let mut reason = None;
        loop {
            match self.next().await {
                Ok(ServerMessage::Closing { reason: r }) => reason = Some(r),
                Ok(_) => {}
                Err(end) => return (reason, end),
            }
        }
    }

    /// Sends an envelope with `payload` to `to`.
    pub async fn envelope(&mut self, to: ParticipantId, payload: &[u8]) {
        self.send(&ClientMessage::Envelope {
            to,
            payload: Opaque(payload.to_vec()),
        })
        .await;
    }

    /// Drops the TCP connection with a reset (SO_LINGER 0), no close handshake.
    pub fn reset(self) {
        self.ws.get_ref().set_zero_linger().expect("linger");
        drop(self);
    }

    /// Drops the TCP connection with a FIN, no close handshake.
    pub fn drop_tcp(self) {
        drop(self);
    }
}
