//! The axum shell around [`Rooms`]: `/v1/ws`, `/healthz` and `/metrics`,
//! over plain TCP or, with [`ServerConfig::tls`], over TLS on the same port.
//!
//! One task per WebSocket reads the client's frames, its own outbound queue
//! (messages from other members), its media events, timers and the shutdown
//! signal. Every decision is made by [`Rooms`], [`authorize`] and
//! [`RateLimiter`]; this module only moves messages.
//!
//! Queue policy: each connection has a bounded queue of
//! [`Limits::send_queue`] messages. A message for a client whose queue is
//! full is dropped and that client is disconnected as too slow, so one slow
//! reader never holds up a room.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::Extension;
use axum::extract::State;
use axum::extract::ws::close_code;
use axum::http::Request;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{SinkExt as _, StreamExt as _};
use hush_proto::{
    ClientMessage, CloseReason, ErrorCode, ParticipantId, RoomId, ServerMessage, ServerSecret,
};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};
use tracing::{Instrument as _, debug, info, info_span, warn};

use crate::admission::{ConnectionCaps, ConnectionSlot};
use crate::cluster::{Cluster, ClusterError, Placement};
use crate::error::Error;
use crate::limits::{Limits, RateLimiter, RateVerdict};
use crate::media::{MediaRouter, MediaSink};
use crate::metrics::{Metrics, Relayed};
use crate::room::{Delivery, JoinRequest, Rooms, authorize};
use crate::tls::ServerTls;
use crate::ws::{self, Socket};
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, WebSocketConfig};

/// How long a closing connection waits for the client's close reply.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// How long shutdown waits for connections to say goodbye.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The WebSocket read buffer of each connection (see `upgrade`).
const WS_READ_BUFFER_BYTES: usize = 4 * 1024;

/// Outgoing bytes tungstenite gathers before writing: none, since every
/// `send` flushes anyway. Its buffer keeps the capacity of the largest
/// frame written (a `joined` list); with batching it kept that plus 8 KiB.
const WS_WRITE_BUFFER_BYTES: usize = 0;

/// Largest request head (request line and headers) a connection may send.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// What a server needs besides its listening socket.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The limits to enforce.
    pub limits: Limits,
    /// The join token secret.
    pub secret: ServerSecret,
    /// TLS for every connection (`wss://`, `https://`), or `None` for plain
    /// TCP, which only a loopback address or a TLS proxy in front should use.
    pub tls: Option<ServerTls>,
}

/// A bound, not yet running signaling server.
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

/// A handle to a running server: counters and shutdown.
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
}

struct Shared {
    admission: Arc<ConnectionCaps>,
    limits: Limits,
    secret: ServerSecret,
    router: Arc<dyn MediaRouter>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    hub: Mutex<Hub>,
    metrics: Metrics,
    shutdown: watch::Sender<bool>,
    /// Set when this server is a node of a cluster (`--redis`).
    cluster: OnceLock<Arc<Cluster>>,
}

struct Hub {
    rooms: Rooms,
    peers: HashMap<ParticipantId, Peer>,
}

struct Peer {
    /// Boxed messages: a channel allocates its slots 32 at a time.
    tx: mpsc::Sender<Box<ServerMessage>>,
    /// Told when a newer connection under the same name takes its place.
    replaced: Arc<Notify>,
    kick: Arc<Notify>,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port; see [`Server::local_addr`]).
    pub async fn bind(
        addr: SocketAddr,
        config: ServerConfig,
        router: Arc<dyn MediaRouter>,
    ) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let (shutdown, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            admission: ConnectionCaps::new(
                config.limits.max_connections.max(1),
                config.limits.max_connections_per_address.max(1),
            ),
            hub: Mutex::new(Hub {
                rooms: Rooms::new(&config.limits),
                peers: HashMap::new(),
            }),
            limits: config.limits,
            secret: config.secret,
            router,
            tls: config.tls.as_ref().map(ServerTls::acceptor),
            metrics: Metrics::default(),
            cluster: OnceLock::new(),
            shutdown,
        });
        Ok(Self { listener, shared })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Makes this server a node of a cluster: a `join` for a room placed
    /// on another node is relayed there, and a heartbeat keeps this node's
    /// entry and its rooms' placement alive until shutdown.
    pub fn join_cluster(&self, cluster: Arc<Cluster>) {
        if self.shared.cluster.set(Arc::clone(&cluster)).is_ok() {
            tokio::spawn(heartbeat(Arc::downgrade(&self.shared), cluster));
        }
    }

    /// A handle for counters and shutdown, usable while the server runs.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Serves until [`ServerHandle::shutdown`], then tells every member it is
    /// closing and waits (a few seconds at most) for their connections to end.
    pub async fn run(self) -> io::Result<()> {
        let shared = self.shared;
        let app = Router::new()
            .route("/v1/ws", get(upgrade))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/metrics", get(metrics))
            .route("/", get(crate::web::index))
            .route("/{*path}", get(crate::web::asset))
            .with_state(Arc::clone(&shared));
        let mut stop = shared.shutdown.subscribe();
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((tcp, from)) => accept(&shared, &app, tcp, from),
                    Err(e) => {
                        // Out of file descriptors, most likely: wait for some to close.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                () = async { let _ = stop.wait_for(|stopping| *stopping).await; } => break,
            }
        }
        // Out of the cluster at once: the members being closed now will
        // join again through other nodes, and their rooms must be placed
        // anew, not wait for this node's entry to expire.
        if let Some(cluster) = shared.cluster.get()
            && let Err(e) = cluster.leave().await
        {
            warn!(error = %e, "leaving the cluster");
        }
        // Upgraded WebSockets outlive the accept loop; wait for them.
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while shared.metrics.connections() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

impl ServerHandle {
    /// Starts a graceful shutdown.
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }

    /// Rooms with at least one member.
    pub fn room_count(&self) -> usize {
        self.shared.hub().rooms.room_count()
    }

    /// Participants in all rooms.
    pub fn participant_count(&self) -> usize {
        self.shared.hub().rooms.participant_count()
    }

    /// What `/metrics` shows now (the server's own counters and the media router's).
    pub fn metrics_text(&self) -> String {
        let (rooms, participants) = {
            let hub = self.shared.hub();
            (hub.rooms.room_count(), hub.rooms.participant_count())
        };
        self.shared.metrics.render(rooms, participants)
            + &self.shared.router.metrics_text()
            + &self.shared.cluster_metrics()
    }

    /// Open WebSocket connections, joined or not.
    pub fn connection_count(&self) -> u64 {
        self.shared.metrics.connections()
    }
}

impl Shared {
    fn hub(&self) -> MutexGuard<'_, Hub> {
        // No code panics while holding the lock; if one did, the room table
        // is still consistent (every method updates it before returning).
        self.hub.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cluster's gauges for `/metrics`, when this server is a node.
    fn cluster_metrics(&self) -> String {
        self.cluster
            .get()
            .map_or_else(String::new, |c| c.metrics_text())
    }
}

impl Hub {
    /// Queues a member's envelope for its addressee, but only into the
    /// free half of the addressee's queue: envelopes are the one thing a
    /// member can send another at will, so a flood is refused to its
    /// sender (`recipient_busy`) and never disconnects the addressee as
    /// too slow, and the other half stays for the server's own messages.
    fn deliver_envelope(&self, delivery: Delivery) -> Result<(), Error> {
        let Some(peer) = self.peers.get(&delivery.to) else {
            return Ok(());
        };
        if peer.tx.capacity() * 2 < peer.tx.max_capacity() {
            return Err(Error::RecipientBusy(delivery.to));
        }
        peer.tx
            .try_send(Box::new(delivery.message))
            .map_err(|_| Error::RecipientBusy(delivery.to))
    }

    fn deliver(&self, delivery: Delivery) {
        if let Some(peer) = self.peers.get(&delivery.to) {
            if peer.tx.try_send(Box::new(delivery.message)).is_err() {
                // Full (too slow) or already closing: disconnect it.
                peer.kick.notify_one();
            }
        }
    }
}

/// Admits one TCP connection (or refuses it at once, counted) and serves
/// its TLS handshake, if any, and its HTTP phase within the handshake
/// timeout. The admission slot travels with the request into the WebSocket,
/// so an upgraded connection keeps its place until it closes.
fn accept(shared: &Arc<Shared>, app: &Router, tcp: TcpStream, from: SocketAddr) {
    // Another node relays many clients over its connections.
    let node = shared
        .cluster
        .get()
        .is_some_and(|c| c.is_node_ip(from.ip()));
    let admitted = if node {
        shared.admission.admit_node(from.ip())
    } else {
        shared.admission.admit(from.ip())
    };
    let slot = match admitted {
        Ok(slot) => slot,
        Err(refusal) => {
            shared.metrics.refused(refusal);
            debug!(%from, reason = refusal.as_str(), "connection refused");
            return;
        }
    };
    let handshake = shared.limits.handshake_timeout;
    let shared = Arc::clone(shared);
    let app = app.clone();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + handshake;
        let timed_out = match shared.tls.clone() {
            None => serve_http(tcp, from, slot, app, handshake, deadline).await,
            Some(tls) => match tokio::time::timeout_at(deadline, tls.accept(tcp)).await {
                Ok(Ok(stream)) => serve_http(stream, from, slot, app, handshake, deadline).await,
                Ok(Err(e)) => {
                    // Plain HTTP to the TLS port, a client that refuses our
                    // certificate, a scanner: not the server's problem.
                    shared.metrics.tls_handshake_failed();
                    if refused_our_certificate(&e) {
                        info!(%from, error = %e, "TLS handshake failed: the client refused our certificate");
                    } else {
                        debug!(%from, error = %e, "TLS handshake failed");
                    }
                    false
                }
                Err(_) => true,
            },
        };
        if timed_out {
            shared.metrics.handshake_timed_out();
            debug!(%from, "handshake timed out");
        }
    });
}

/// Serves one connection's HTTP phase until `deadline`; whether it ran out
/// of time. The admission slot goes with every request into `upgrade`.
async fn serve_http<I>(
    io: I,
    from: SocketAddr,
    slot: ConnectionSlot,
    app: Router,
    header_timeout: Duration,
    deadline: tokio::time::Instant,
) -> bool
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(slot.clone());
        let mut app = app.clone();
        async move { tower_service::Service::call(&mut app, request).await }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEADER_BYTES)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    // hyper's header timeout catches a slow request head; the outer one
    // a head that came in time but a body or upgrade that did not.
    match tokio::time::timeout_at(deadline, connection).await {
        Ok(Ok(())) => false,
        Ok(Err(e)) => {
            debug!(%from, error = %e, "http connection ended");
            e.is_timeout()
        }
        Err(_) => true,
    }
}

/// Whether a failed TLS handshake is the client's alert about our
/// certificate (worth an operator's attention), not noise.
fn refused_our_certificate(error: &io::Error) -> bool {
    use rustls::AlertDescription as Alert;
    matches!(
        error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::AlertReceived(
            Alert::BadCertificate
                | Alert::UnknownCA
                | Alert::CertificateExpired
                | Alert::CertificateUnknown
                | Alert::CertificateRevoked
                | Alert::UnsupportedCertificate
        ))
    )
}

async fn upgrade(
    State(shared): State<Arc<Shared>>,
    slot: Option<Extension<ConnectionSlot>>,
    mut request: Request<axum::body::Body>,
) -> Response {
    let accepted = match ws::accept(&mut request) {
        Ok(accepted) => accepted,
        Err(refused) => return refused.into_response(),
    };
    let max = shared.limits.max_message_bytes;
    // tungstenite's own limit is a memory guard well above ours, so a frame
    // just over the limit is read whole and refused with a clean 1009 close.
    let guard = max.saturating_mul(4).max(max);
    let config = WebSocketConfig::default()
        .max_message_size(Some(guard))
        .max_frame_size(Some(guard))
        // tungstenite's default read buffer is 128 KiB, allocated up front:
        // with it, an idle connection cost ~142 KiB. Messages are small;
        // larger ones still arrive whole (the buffer grows while one is read).
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        .write_buffer_size(WS_WRITE_BUFFER_BYTES);
    tokio::spawn(async move {
        // Holds the connection's place under the caps until it closes.
        let _slot = slot;
        let upgraded = match accepted.upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let socket = ws::socket(upgraded, config).await;
        shared.metrics.connection_opened();
        let conn = Connection::new(Arc::clone(&shared));
        let span = info_span!("conn", participant = tracing::field::Empty);
        conn.run(socket).instrument(span).await;
        shared.metrics.connection_closed();
    });
    accepted.response
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let (rooms, participants) = {
        let hub = shared.hub();
        (hub.rooms.room_count(), hub.rooms.participant_count())
    };
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared.metrics.render(rooms, participants)
            + &shared.router.metrics_text()
            + &shared.cluster_metrics(),
    )
}

/// What the connection loop does after a frame.
enum Flow {
    Continue,
    /// Say why, then close with this WebSocket close code.
    Close {
        reason: CloseReason,
        code: u16,
    },
    /// The client is gone; nothing more can be sent.
    Gone,
    /// The client's room lives on another node: relay the connection there,
    /// starting with its `join`.
    Relay {
        /// The node's URL.
        url: String,
        /// The `join` as the client sent it.
        join: String,
    },
}

struct Connection {
    shared: Arc<Shared>,
    joined: Option<(ParticipantId, RoomId)>,
    rate: RateLimiter,
    out_tx: mpsc::Sender<Box<ServerMessage>>,
    out_rx: mpsc::Receiver<Box<ServerMessage>>,
    media_sink: MediaSink,
    media_rx: mpsc::Receiver<ServerMessage>,
    kick: Arc<Notify>,
    probe: Arc<Notify>,
    replaced: Arc<Notify>,
    moved: Arc<Notify>,
}

impl Connection {
    fn new(shared: Arc<Shared>) -> Self {
        let queue = shared.limits.send_queue.max(1);
        let (out_tx, out_rx) = mpsc::channel(queue);
        let kick = Arc::new(Notify::new());
        let probe = Arc::new(Notify::new());
        let moved = Arc::new(Notify::new());
        let (media_sink, media_rx) =
            MediaSink::for_connection(queue, Arc::clone(&kick), Arc::clone(&probe));
        let media_sink = media_sink.with_moved(Arc::clone(&moved));
        Self {
            rate: RateLimiter::new(&shared.limits, Instant::now()),
            shared,
            joined: None,
            out_tx,
            out_rx,
            media_sink,
            media_rx,
            kick,
            probe,
            replaced: Arc::new(Notify::new()),
            moved,
        }
    }

    async fn run(mut self, mut socket: Socket) {
        let limits = self.shared.limits.clone();
        let mut stop = self.shared.shutdown.subscribe();
        let join_deadline = tokio::time::sleep(limits.join_timeout);
        tokio::pin!(join_deadline);
        let ping_every = (limits.idle_timeout / 3).max(Duration::from_millis(10));
        let mut pinger =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        let mut last_heard = Instant::now();
        let kick = Arc::clone(&self.kick);
        let probe = Arc::clone(&self.probe);
        let replaced = Arc::clone(&self.replaced);
        let moved = Arc::clone(&self.moved);
        // A liveness check under way: when its ping went out.
        let mut probing: Option<Instant> = None;
        let probe_deadline = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(probe_deadline);

        let flow = loop {
            if *stop.borrow_and_update() {
                break Flow::Close {
                    reason: CloseReason::ServerShutdown,
                    code: close_code::AWAY,
                };
            }
            let step = tokio::select! {
                frame = socket.next() => match frame {
                    None | Some(Ok(Message::Close(_))) => Flow::Gone,
                    Some(Err(e)) => {
                        if is_too_big(e) {
                            // Beyond tungstenite's guard: the frame was not read, best effort.
                            self.reject(ErrorCode::MessageTooBig);
                            close(&mut socket, close_code::SIZE, "message too big").await;
                        }
                        Flow::Gone
                    }
                    Some(Ok(frame)) => {
                        last_heard = Instant::now();
                        self.on_frame(&mut socket, frame).await
                    }
                },
                Some(message) = self.out_rx.recv() => {
                    send(&mut socket, limits.idle_timeout, &message).await
                }
                Some(message) = self.media_rx.recv() => {
                    self.shared.metrics.relayed(Relayed::FromSfu);
                    send(&mut socket, limits.idle_timeout, &message).await
                }
                () = kick.notified() => Flow::Close {
                    reason: CloseReason::TooSlow,
                    code: close_code::POLICY,
                },
                () = moved.notified() => {
                    info!("the room's media node is gone; the client joins again");
                    Flow::Close {
                        reason: CloseReason::MediaMoved,
                        code: close_code::AWAY,
                    }
                }
                () = replaced.notified() => {
                    info!("replaced by a newer connection under the same name");
                    Flow::Close {
                        reason: CloseReason::Replaced,
                        code: close_code::POLICY,
                    }
                }
                () = probe.notified(), if probing.is_none() => {
                    probing = Some(Instant::now());
                    probe_deadline
                        .as_mut()
                        .reset(tokio::time::Instant::now() + limits.liveness_timeout);
                    match tokio::time::timeout(limits.liveness_timeout, socket.send(Message::Ping(Bytes::new()))).await {
                        Ok(Ok(())) => Flow::Continue,
                        _ => Flow::Gone,
                    }
                }
                () = &mut probe_deadline, if probing.is_some() => {
                    // Anything heard since the ping (its pong included) means still here.
                    if probing.is_some_and(|sent| last_heard >= sent) {
                        probing = None;
                        Flow::Continue
                    } else {
                        info!("no answer after the media connection died; removing");
                        Flow::Close { reason: CloseReason::IdleTimeout, code: close_code::AWAY }
                    }
                }
                () = &mut join_deadline, if self.joined.is_none() => {
                    self.reject(ErrorCode::JoinTimeout);
                    let err = ServerMessage::error(ErrorCode::JoinTimeout, "no join in time");
                    let _ = send(&mut socket, limits.idle_timeout, &err).await;
                    Flow::Close { reason: CloseReason::JoinFailed, code: close_code::POLICY }
                }
                _ = pinger.tick() => {
                    if last_heard.elapsed() >= limits.idle_timeout {
                        Flow::Close { reason: CloseReason::IdleTimeout, code: close_code::AWAY }
                    } else if !matches!(
                        tokio::time::timeout(limits.idle_timeout, socket.send(Message::Ping(Bytes::new()))).await,
                        Ok(Ok(()))
                    ) {
                        Flow::Gone
                    } else {
                        Flow::Continue
                    }
                }
                // The flag is read at the top of the loop; the sender lives
                // as long as `Shared`, which this connection holds.
                changed = stop.changed() => match changed {
                    Ok(()) => Flow::Continue,
                    Err(_) => Flow::Gone,
                },
            };
            if !matches!(step, Flow::Continue) {
                break step;
            }
        };

        if let Flow::Relay { url, join } = flow {
            self.shared.metrics.relayed_connection();
            // Boxed: the relay's state (a second WebSocket, ~9.5 KiB)
            // would otherwise be part of every connection's task, relayed
            // or not, for its whole life.
            Box::pin(relay(&mut socket, &url, join, &self.shared)).await;
            return;
        }
        // Leave the room before the goodbye, so nobody relays to us meanwhile.
        self.leave();
        if let Flow::Close { reason, code } = flow {
            debug!(?reason, "closing connection");
            let _ = send(
                &mut socket,
                limits.idle_timeout,
                &ServerMessage::Closing { reason },
            )
            .await;
            close(&mut socket, code, "").await;
        }
    }

    async fn on_frame(&mut self, socket: &mut Socket, frame: Message) -> Flow {
        let text = match frame {
            Message::Text(text) => Some(text),
            Message::Binary(_) => None,
            // tungstenite answers pings itself; either one proves liveness.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => {
                return Flow::Continue;
            }
        };
        let size = text.as_ref().map_or(0, |t| t.len());
        if size > self.shared.limits.max_message_bytes {
            self.reject(ErrorCode::MessageTooBig);
            return Flow::Close {
                reason: CloseReason::MessageTooBig,
                code: close_code::SIZE,
            };
        }
        match self.rate.check(Instant::now()) {
            RateVerdict::Allow => {}
            RateVerdict::Refuse { first } => {
                self.reject(ErrorCode::RateLimited);
                if first {
                    let err = ServerMessage::error(ErrorCode::RateLimited, "slow down");
                    return send(socket, self.shared.limits.idle_timeout, &err).await;
                }
                return Flow::Continue;
            }
            RateVerdict::Disconnect => {
                self.reject(ErrorCode::RateLimited);
                return Flow::Close {
                    reason: CloseReason::RateLimited,
                    code: close_code::POLICY,
                };
            }
        }
        let Some(text) = text else {
            return self
                .refuse(
                    socket,
                    ErrorCode::BinaryFrame,
                    "binary frames are not supported".into(),
                )
                .await;
        };
        let message = match ClientMessage::parse(&text) {
            Ok(message) => message,
            Err(code) => {
                return self
                    .refuse(socket, code, format!("bad message: {code}"))
                    .await;
            }
        };
        if let (ClientMessage::Join { room, .. }, None, Some(cluster)) =
            (&message, &self.joined, self.shared.cluster.get())
        {
            match cluster.place(room.as_str()).await {
                Ok(Placement::Local) => {}
                Ok(Placement::Remote { node, url }) => {
                    debug!(%node, room = room.as_str(), "relaying to the room's node");
                    return Flow::Relay {
                        url,
                        join: text.to_string(),
                    };
                }
                Err(e) => {
                    let code = match e {
                        ClusterError::Full => ErrorCode::ServerFull,
                        _ => ErrorCode::ClusterUnavailable,
                    };
                    warn!(error = %e, "cannot place a room");
                    let _ = self.refuse(socket, code, e.to_string()).await;
                    return Flow::Close {
                        reason: CloseReason::JoinFailed,
                        code: close_code::POLICY,
                    };
                }
            }
        }
        match self.on_message(message) {
            Ok(Reply::None) => Flow::Continue,
            Ok(Reply::Send(message)) => {
                send(socket, self.shared.limits.idle_timeout, &message).await
            }
            Ok(Reply::Leave) => Flow::Close {
                reason: CloseReason::Left,
                code: close_code::NORMAL,
            },
            Err(error) => {
                let code = error.code().unwrap_or(ErrorCode::InvalidField);
                self.refuse(socket, code, error.to_string()).await
            }
        }
    }

    fn on_message(&mut self, message: ClientMessage) -> Result<Reply, Error> {
        let joined = self.joined.as_ref().map(|(id, _)| *id);
        match (message, joined) {
            (ClientMessage::Ping { nonce }, _) => Ok(Reply::Send(ServerMessage::Pong { nonce })),
            (
                ClientMessage::Join {
                    protocol,
                    room,
                    name,
                    token,
                    key_package,
                },
                None,
            ) => {
                let request = JoinRequest {
                    protocol,
                    room,
                    name,
                    token,
                    key_package,
                };
                self.join(request).map(Reply::Send)
            }
            (ClientMessage::Join { .. }, Some(_)) => Err(Error::AlreadyJoined),
            (_, None) => Err(Error::JoinFirst),
            (ClientMessage::Leave, Some(_)) => Ok(Reply::Leave),
            (ClientMessage::Envelope { to, payload }, Some(from)) => {
                let hub = self.shared.hub();
                let delivery = hub.rooms.relay_envelope(from, to, payload)?;
                let queued = hub.deliver_envelope(delivery);
                drop(hub);
                queued?;
                self.shared.metrics.relayed(Relayed::Envelope);
                Ok(Reply::None)
            }
            (ClientMessage::SdpOffer { sdp }, Some(id)) => {
                self.shared.router.handle_offer(id, sdp)?;
                self.shared.metrics.relayed(Relayed::ToSfu);
                Ok(Reply::None)
            }
            (ClientMessage::SdpAnswer { sdp }, Some(id)) => {
                self.shared.router.handle_answer(id, sdp)?;
                self.shared.metrics.relayed(Relayed::ToSfu);
                Ok(Reply::None)
            }
            (ClientMessage::IceCandidate { candidate }, Some(id)) => {
                self.shared.router.add_ice_candidate(id, candidate)?;
                self.shared.metrics.relayed(Relayed::ToSfu);
                Ok(Reply::None)
            }
            // `ClientMessage` is non-exhaustive: a message type added to the
            // protocol crate that this server does not handle yet.
            (_, Some(_)) => Err(Error::UnsupportedMessage),
        }
    }

    fn join(&mut self, request: JoinRequest) -> Result<ServerMessage, Error> {
        authorize(&self.shared.secret, &request, unix_now())?;
        let room = request.room.clone();
        let mut hub = self.shared.hub();
        let admission = hub
            .rooms
            .join(request.room, request.name, request.key_package)?;
        // One live connection per room and name: a newer one (the same
        // token holder, say after a network change left the old one
        // half-open) takes the older one's place; the old connection is
        // told and closed.
        let old = admission.replaced;
        if let Some(peer) = old.and_then(|old| hub.peers.remove(&old)) {
            peer.replaced.notify_one();
        }
        hub.peers.insert(
            admission.id,
            Peer {
                tx: self.out_tx.clone(),
                kick: Arc::clone(&self.kick),
                replaced: Arc::clone(&self.replaced),
            },
        );
        for delivery in admission.announcements {
            hub.deliver(delivery);
        }
        drop(hub);
        if let Some(old) = old {
            self.shared.router.remove_participant(old);
            self.shared.metrics.replaced();
            info!(%room, %old, "took the place of the member with the same name");
        }
        let id = admission.id;
        self.joined = Some((id, room.clone()));
        self.shared.metrics.joined();
        tracing::Span::current().record("participant", tracing::field::display(id));
        info!(%room, "joined");
        if let Err(error) = self
            .shared
            .router
            .add_participant(&room, id, self.media_sink.clone())
        {
            // The room works without media; SDP requests will be refused.
            warn!(%error, "media router refused the participant");
        }
        Ok(admission.joined)
    }

    fn leave(&mut self) {
        let Some((id, room)) = self.joined.take() else {
            return;
        };
        let mut hub = self.shared.hub();
        hub.peers.remove(&id);
        for delivery in hub.rooms.leave(id) {
            hub.deliver(delivery);
        }
        drop(hub);
        self.shared.router.remove_participant(id);
        info!(%room, "left");
    }

    fn reject(&self, code: ErrorCode) {
        self.shared.metrics.rejected(code);
    }

    async fn refuse(&self, socket: &mut Socket, code: ErrorCode, message: String) -> Flow {
        self.reject(code);
        debug!(%code, "refused a message");
        send(
            socket,
            self.shared.limits.idle_timeout,
            &ServerMessage::error(code, message),
        )
        .await
    }
}

/// What to answer the sender of a well-formed message.
enum Reply {
    None,
    Send(ServerMessage),
    Leave,
}

/// Sends one message. A client that cannot take it within `timeout` (its
/// TCP window stays full) is treated as gone, so a client that stops reading
/// cannot pin its connection task and its room membership forever.
async fn send(socket: &mut Socket, timeout: Duration, message: &ServerMessage) -> Flow {
    match tokio::time::timeout(timeout, ws::send_text(socket, message.to_json())).await {
        Ok(Ok(())) => Flow::Continue,
        Ok(Err(_)) | Err(_) => Flow::Gone,
    }
}

/// Relays a client's connection to the node its room lives on, frame for
/// frame both ways, starting with its `join`, until either end closes.
/// The room's node applies every check and limit; if it cannot be reached
/// or goes away, the client is told and closed (it may join again, and
/// the room is placed anew once that node's entry expires).
async fn relay(socket: &mut Socket, url: &str, join: String, shared: &Shared) {
    let timeout = shared.limits.idle_timeout;
    let connected =
        tokio::time::timeout(shared.limits.handshake_timeout, connect_node(url, shared)).await;
    match connected {
        Ok(Ok(Upstream::Plain(ws))) => relay_over(socket, *ws, join, shared).await,
        Ok(Ok(Upstream::Tls(ws))) => relay_over(socket, *ws, join, shared).await,
        Ok(Err(e)) => {
            warn!(%url, error = %e, "the room's node is unreachable");
            node_lost(socket, timeout).await;
        }
        Err(_) => {
            warn!(%url, "the room's node did not answer in time");
            node_lost(socket, timeout).await;
        }
    }
}

/// A WebSocket to another node: `ws://`, or `wss://` checked against the
/// cluster's trust ([`Cluster::node_tls`]).
enum Upstream {
    Plain(Box<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>>),
    Tls(
        Box<
            tokio_tungstenite::WebSocketStream<
                tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
            >,
        >,
    ),
}

/// Opens a WebSocket to the node at `url` (`ws://` or `wss://HOST:PORT`).
async fn connect_node(url: &str, shared: &Shared) -> Result<Upstream, String> {
    let target = format!("{}/v1/ws", url.trim_end_matches('/'));
    let uri: hyper::Uri = url.parse().map_err(|_| format!("not a node URL: {url}"))?;
    let tls = match uri.scheme_str() {
        Some("wss") => true,
        Some("ws") => false,
        _ => return Err(format!("not a ws:// or wss:// node URL: {url}")),
    };
    let host = uri.host().ok_or_else(|| format!("no host in {url}"))?;
    // An IPv6 address is bracketed in a URL, bare for TCP and TLS.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((bare, port))
        .await
        .map_err(|e| e.to_string())?;
    if !tls {
        let (ws, _) = tokio_tungstenite::client_async(target.as_str(), tcp)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(Upstream::Plain(Box::new(ws)));
    }
    let config = match shared.cluster.get() {
        Some(cluster) => cluster.node_tls().map_err(|e| e.to_string())?,
        None => crate::tls::node_client_config(None).map_err(|e| e.to_string())?,
    };
    let name = rustls::pki_types::ServerName::try_from(bare.to_owned())
        .map_err(|_| format!("not a valid TLS server name: {host}"))?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with the room's node: {e}"))?;
    let (ws, _) = tokio_tungstenite::client_async(target.as_str(), stream)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Upstream::Tls(Box::new(ws)))
}

/// The relay itself, over either kind of upstream.
async fn relay_over<S>(
    socket: &mut Socket,
    mut upstream: tokio_tungstenite::WebSocketStream<S>,
    join: String,
    shared: &Shared,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let timeout = shared.limits.idle_timeout;
    if upstream.send(Message::text(join)).await.is_err() {
        return node_lost(socket, timeout).await;
    }
    let mut stop = shared.shutdown.subscribe();
    loop {
        tokio::select! {
            frame = socket.next() => match frame {
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                    if upstream.send(m).await.is_err() {
                        return node_lost(socket, timeout).await;
                    }
                }
                Some(Ok(Message::Close(c))) => {
                    let _ = upstream.send(Message::Close(c)).await;
                    return;
                }
                // tungstenite answers pings by itself.
                Some(Ok(_)) => {}
                None | Some(Err(_)) => {
                    let _ = upstream.close(None).await;
                    return;
                }
            },
            frame = upstream.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    let sent = tokio::time::timeout(timeout, ws::send_text(socket, text.to_string())).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        let _ = upstream.close(None).await;
                        return;
                    }
                }
                Some(Ok(Message::Close(c))) => {
                    let _ = socket.send(Message::Close(c)).await;
                    return;
                }
                Some(Ok(_)) => {}
                None | Some(Err(_)) => return node_lost(socket, timeout).await,
            },
            _ = stop.changed() => {
                let _ = upstream.close(None).await;
                let _ = send(socket, timeout, &ServerMessage::Closing { reason: CloseReason::ServerShutdown }).await;
                close(socket, close_code::AWAY, "server shutdown").await;
                return;
            }
        }
    }
}

/// The room's node cannot be reached (or went away): say so, and close.
async fn node_lost(socket: &mut Socket, timeout: Duration) {
    let err = ServerMessage::error(
        ErrorCode::ClusterUnavailable,
        "the node that holds this room is unreachable; join again",
    );
    let _ = send(socket, timeout, &err).await;
    let _ = send(
        socket,
        timeout,
        &ServerMessage::Closing {
            reason: CloseReason::ServerShutdown,
        },
    )
    .await;
    close(socket, close_code::AWAY, "room's node unreachable").await;
}

/// Keeps this node's cluster entry and its rooms' placement fresh; leaves
/// the cluster at shutdown.
async fn heartbeat(shared: Weak<Shared>, cluster: Arc<Cluster>) {
    let mut tick = tokio::time::interval(cluster.heartbeat_every());
    let mut failing = false;
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            break;
        };
        if *shared.shutdown.borrow() {
            if let Err(e) = cluster.leave().await {
                warn!(error = %e, "leaving the cluster");
            }
            break;
        }
        let rooms = shared.hub().rooms.counts();
        drop(shared);
        match cluster.heartbeat(&rooms).await {
            Ok(()) if failing => {
                info!("cluster state (Redis) reachable again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) => {
                if !failing {
                    warn!(error = %e, "cluster heartbeat failed; calls go on, new rooms cannot be placed");
                }
                failing = true;
            }
        }
    }
}

/// Sends a close frame and waits briefly for the client's, so the close
/// frame is not lost to a TCP reset caused by unread data.
async fn close(socket: &mut Socket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    match tokio::time::timeout(CLOSE_LINGER, socket.send(Message::Close(Some(frame)))).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) | Err(_) => return,
    }
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while let Some(Ok(frame)) = socket.next().await {
            if let Message::Close(_) = frame {
                break;
            }
        }
    })
    .await;
}

fn is_too_big(error: tungstenite::Error) -> bool {
    matches!(error, tungstenite::Error::Capacity(_))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs `server` until `signal` completes, then shuts it down gracefully.
pub async fn run_until(
    server: Server,
    signal: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let handle = server.handle();
    tokio::spawn(async move {
        signal.await;
        handle.shutdown();
    });
    server.run().await
}
