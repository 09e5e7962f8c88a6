//! A `hush-server` with its embedded SFU running inside this process on an
//! ephemeral loopback port: what `hush demo` and the end-to-end tests call.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use hush_proto::{DisplayName, JoinToken, RoomId, ServerSecret};
use hush_signaling::{EmbeddedSfu, Limits, Server, ServerConfig, ServerHandle};

use crate::Error;

/// A running local server.
pub struct LocalServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its handle (room counts, shutdown).
    pub handle: ServerHandle,
    secret: ServerSecret,
    /// The embedded SFU; `None` when a standalone node carries the media.
    sfu: Option<hush_sfu::Sfu>,
    tls: bool,
}

impl core::fmt::Debug for LocalServer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "LocalServer({})", self.addr)
    }
}

impl LocalServer {
    /// Starts the server on 127.0.0.1 with a random secret; with `capture`,
    /// the SFU writes every forwarded payload there.
    pub async fn start(capture: Option<PathBuf>) -> Result<Self, Error> {
        Self::start_with(hush_sfu::SfuConfig {
            capture,
            ..Default::default()
        })
        .await
    }

    /// Starts the server with this SFU configuration (tests use its hooks).
    pub async fn start_with(sfu_config: hush_sfu::SfuConfig) -> Result<Self, Error> {
        let (secret, _) = ServerSecret::generate_development()?;
        Self::start_custom(secret, Limits::default(), sfu_config).await
    }

    /// Starts the server with this token secret, these limits and this SFU
    /// configuration (the load test's server raises the limits).
    pub async fn start_custom(
        secret: ServerSecret,
        limits: Limits,
        sfu_config: hush_sfu::SfuConfig,
    ) -> Result<Self, Error> {
        // Loopback only: nothing to protect on the wire.
        Self::start_full(secret, limits, sfu_config, None).await
    }

    /// Starts the server serving `wss://` with this certificate (tests of
    /// `hush call` over TLS).
    pub async fn start_tls(tls: hush_signaling::ServerTls) -> Result<Self, Error> {
        let (secret, _) = ServerSecret::generate_development()?;
        Self::start_full(
            secret,
            Limits::default(),
            hush_sfu::SfuConfig::default(),
            Some(tls),
        )
        .await
    }

    /// A node of a cluster sharing the Redis at `redis_url` (tests of
    /// `--redis`): every node of one cluster must share `secret`.
    pub async fn start_node(
        secret: ServerSecret,
        redis_url: &str,
        node_id: &str,
    ) -> Result<Self, Error> {
        let media = NodeMedia {
            embedded: true,
            control_secret: None,
        };
        Self::start_cluster_node(secret, redis_url, node_id, media).await
    }

    /// A node of a cluster whose media is `media`: its embedded SFU, the
    /// cluster's `hush-sfu` media nodes, or both (tests of media nodes).
    pub async fn start_cluster_node(
        secret: ServerSecret,
        redis_url: &str,
        node_id: &str,
        media: NodeMedia,
    ) -> Result<Self, Error> {
        Self::start_inner(
            secret,
            Limits::default(),
            hush_sfu::SfuConfig::default(),
            None,
            Some((redis_url, node_id, media)),
        )
        .await
    }

    async fn start_full(
        secret: ServerSecret,
        limits: Limits,
        sfu_config: hush_sfu::SfuConfig,
        tls: Option<hush_signaling::ServerTls>,
    ) -> Result<Self, Error> {
        Self::start_inner(secret, limits, sfu_config, tls, None).await
    }

    async fn start_inner(
        secret: ServerSecret,
        limits: Limits,
        sfu_config: hush_sfu::SfuConfig,
        tls: Option<hush_signaling::ServerTls>,
        cluster: Option<(&str, &str, NodeMedia)>,
    ) -> Result<Self, Error> {
        let with_tls = tls.is_some();
        let embedded = match &cluster {
            Some((_, _, media)) if !media.embedded => None,
            _ => Some(hush_sfu::Sfu::new(sfu_config)?),
        };
        let (router, cluster_media): (Arc<dyn hush_signaling::MediaRouter>, _) =
            match (&cluster, &embedded) {
                (Some((_, _, media)), _) => {
                    let router = hush_signaling::ClusterMedia::new(
                        embedded.clone(),
                        media.control_secret.clone(),
                    );
                    (
                        Arc::clone(&router) as Arc<dyn hush_signaling::MediaRouter>,
                        Some(router),
                    )
                }
                (None, Some(sfu)) => (Arc::new(EmbeddedSfu::new(sfu.clone())) as _, None),
                (None, None) => (Arc::new(hush_signaling::NoMedia) as _, None),
            };
        let config = ServerConfig {
            limits,
            secret: secret.clone(),
            tls,
        };
        let (server, addr) = bind(config, router).await?;
        if let Some((redis_url, node_id, media)) = cluster {
            let mut config = hush_signaling::cluster::ClusterConfig::new(
                redis_url,
                node_id,
                &format!("ws://{addr}"),
            );
            if !media.embedded {
                config.embedded_media_capacity = 0;
            }
            config.remote_media = media.control_secret.is_some();
            let cluster = hush_signaling::cluster::Cluster::connect(config)
                .await
                .map_err(|e| Error::io("joining the cluster")(std::io::Error::other(e)))?;
            if let Some(router) = &cluster_media {
                router.attach(Arc::clone(&cluster));
            }
            server.join_cluster(cluster);
        }
        let handle = server.handle();
        tokio::spawn(server.run());
        Ok(Self {
            addr,
            handle,
            secret,
            sfu: embedded,
            tls: with_tls,
        })
    }

    /// The WebSocket URL clients join at (`wss://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}", self.addr)
    }

    /// A token for `name` in `room`, valid for an hour.
    pub fn token(&self, room: &str, name: &str) -> Result<String, Error> {
        mint_token(&self.secret, room, name)
    }

    /// The local UDP addresses the embedded SFU's workers bound (one per
    /// worker; none when a standalone node carries the media).
    pub fn sfu_udp_addrs(&self) -> &[SocketAddr] {
        self.sfu.as_ref().map_or(&[], |s| s.udp_addrs())
    }

    /// The embedded SFU's metrics in Prometheus text (empty without one).
    pub fn sfu_metrics(&self) -> String {
        self.sfu
            .as_ref()
            .map_or_else(String::new, |s| s.metrics().render())
    }

    /// A server whose media goes to the standalone node at `sfu_url`
    /// (`http://host:port`, its control API), whose control secret is
    /// `control_secret` (`hush-server --sfu-url`).
    pub async fn start_with_sfu_node(
        sfu_url: &str,
        control_secret: ServerSecret,
    ) -> Result<Self, Error> {
        let (secret, _) = ServerSecret::generate_development()?;
        let node = hush_signaling::RemoteNode::new(sfu_url, control_secret)
            .map_err(|e| Error::io("the hush-sfu node's URL")(std::io::Error::other(e)))?;
        let router = Arc::new(hush_signaling::RemoteSfu::new(node));
        let config = ServerConfig {
            limits: Limits::default(),
            secret: secret.clone(),
            tls: None,
        };
        let (server, addr) = bind(config, router).await?;
        let handle = server.handle();
        tokio::spawn(server.run());
        Ok(Self {
            addr,
            handle,
            secret,
            sfu: None,
            tls: false,
        })
    }

    /// Stops the server and the embedded SFU.
    pub async fn stop(self) {
        self.handle.shutdown();
        if let Some(sfu) = self.sfu {
            sfu.shutdown().await;
        }
    }
}

/// A server on an ephemeral loopback port, and that port's address.
async fn bind(
    config: ServerConfig,
    router: Arc<dyn hush_signaling::MediaRouter>,
) -> Result<(Server, SocketAddr), Error> {
    let server = Server::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config, router)
        .await
        .map_err(Error::io("binding the local server"))?;
    let addr = server
        .local_addr()
        .map_err(Error::io("reading the local server's address"))?;
    Ok((server, addr))
}

/// A join token for `name` in `room` signed with `secret`, valid for an hour.
pub fn mint_token(secret: &ServerSecret, room: &str, name: &str) -> Result<String, Error> {
    let room: RoomId = room.parse()?;
    let name: DisplayName = name.parse()?;
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
        + 3600;
    Ok(JoinToken::mint(secret, &room, &name, expiry)
        .as_str()
        .to_owned())
}

/// A `redis-server` of our own on a free loopback port, for the cluster's
/// tests and demos (the Debian `redis-server` package); stopped on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: std::process::Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl RedisServer {
    /// Starts one on a free port and waits until it takes connections.
    pub fn start() -> Result<Self, Error> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(Error::io("finding a free port for redis-server"))?
            .port();
        Self::start_on(port)
    }

    /// Starts one on `port` (again, after [`RedisServer::stop`]), without
    /// persistence, and waits until it takes connections.
    pub fn start_on(port: u16) -> Result<Self, Error> {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(Error::io(
                "starting redis-server (scripts/setup installs the redis-server package)",
            ))?;
        let mut redis = Self { child, port };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if std::time::Instant::now() > deadline {
                redis.stop();
                return Err(Error::io("waiting for redis-server")(
                    std::io::Error::other("it did not take connections within 10 s"),
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Ok(redis)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (an outage, for tests).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What carries a cluster node's media ([`LocalServer::start_cluster_node`]).
#[derive(Clone)]
pub struct NodeMedia {
    /// Whether the node has an embedded SFU.
    pub embedded: bool,
    /// The media nodes' control secret: with it, rooms' media may go to
    /// the cluster's `hush-sfu` nodes.
    pub control_secret: Option<ServerSecret>,
}

/// A standalone `hush-sfu` node (the SFU and its control API) inside this
/// process on loopback: what `hush-server --sfu-url` drives, for tests.
pub struct SfuNode {
    /// Where its control API listens.
    pub addr: SocketAddr,
    sfu: hush_sfu::Sfu,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    registration: Option<tokio::task::JoinHandle<()>>,
}

impl SfuNode {
    /// Starts a node whose control tokens are minted under `control_secret`.
    pub async fn start(control_secret: ServerSecret) -> Result<Self, Error> {
        let sfu = hush_sfu::Sfu::new(hush_sfu::SfuConfig::default())?;
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .map_err(Error::io("binding the SFU node's control API"))?;
        let addr = listener
            .local_addr()
            .map_err(Error::io("reading the SFU node's address"))?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(hush_sfu::http::serve(
            listener,
            sfu.clone(),
            control_secret,
            async move {
                let _ = stopped.await;
            },
        ));
        Ok(Self {
            addr,
            sfu,
            stop: Some(stop),
            registration: None,
        })
    }

    /// Starts a node that registers as media node `id` of the cluster
    /// sharing the Redis at `redis_url` (`hush-sfu --redis`).
    pub async fn start_registered(
        control_secret: ServerSecret,
        redis_url: &str,
        id: &str,
    ) -> Result<Self, Error> {
        let mut node = Self::start(control_secret).await?;
        let lost = |e: hush_sfu::register::RegisterError| {
            Error::io("registering the SFU node")(std::io::Error::other(e))
        };
        let mut redis = hush_sfu::register::connect(redis_url).await.map_err(lost)?;
        let entry = hush_sfu::register::MediaNodeEntry {
            id: id.to_owned(),
            url: node.url(),
            capacity: 1_000,
        };
        hush_sfu::register::beat(&mut redis, &entry, 0)
            .await
            .map_err(lost)?;
        node.registration = Some(tokio::spawn(hush_sfu::register::keep_registered(
            redis,
            entry,
            Arc::clone(node.sfu.metrics()),
        )));
        Ok(node)
    }

    /// Its control API's URL, for `hush-server --sfu-url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its metrics in Prometheus text.
    pub fn metrics(&self) -> String {
        self.sfu.metrics().render()
    }

    /// Shuts the SFU down (every participant's events end with a
    /// shutdown), then the control API; a registered node stops refreshing
    /// its entry, which expires as a dead node's does.
    pub async fn stop(mut self) {
        if let Some(task) = self.registration.take() {
            task.abort();
        }
        self.sfu.shutdown().await;
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
