//! The server a load test drives: an embedded one in a child process (so
//! its CPU and memory are its own, read from its `/metrics`), or a running
//! `hush-server` given by URL and token secret.

use std::process::Stdio;
use std::time::Duration;

use hush_proto::ServerSecret;
use hush_signaling::Limits;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::Error;
use crate::local::LocalServer;

/// The environment variable that hands the child server its token secret.
pub const SECRET_ENV: &str = "HUSH_LOADTEST_SECRET";

/// The limits of the load test's embedded server: the defaults protect a
/// public server from abuse; the load test is its only client.
pub fn load_limits() -> Limits {
    Limits {
        messages_per_sec: 10_000,
        message_burst: 10_000,
        rate_strikes: 10_000,
        max_room_participants: 10_000,
        max_rooms: 10_000,
        join_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(120),
        send_queue: 65_536,
        // Every simulated participant connects from 127.0.0.1.
        max_connections: 100_000,
        max_connections_per_address: 100_000,
        handshake_timeout: Duration::from_secs(60),
        ..Limits::default()
    }
}

/// Runs the child side of `--embedded`: a server and SFU on loopback that
/// prints `LISTEN <url>` and serves until its standard input closes (the
/// load test ended or died) or `max_run` passes.
pub async fn serve_child(max_run: Duration) -> Result<(), Error> {
    let text = std::env::var(SECRET_ENV)
        .map_err(|_| Error::LoadTest(format!("{SECRET_ENV} is not set")))?;
    let secret = ServerSecret::new(text.into_bytes())?;
    let sfu = hush_sfu::SfuConfig {
        ice_failed_timeout: super::ICE_FAILED,
        // Hundreds of simulated clients joining on two shared cores can
        // take far longer than a real one to finish ICE and DTLS.
        connect_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let server = LocalServer::start_custom(secret, load_limits(), sfu).await?;
    println!("LISTEN {}", server.url());
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    let until_closed = async {
        while let Ok(n) = stdin.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::select! {
        () = until_closed => {}
        () = tokio::time::sleep(max_run) => eprintln!("loadtest-server: stopping after {max_run:?}"),
    }
    server.stop().await;
    Ok(())
}

/// What the server's `/metrics` says at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerSample {
    /// `process_cpu_seconds_total`.
    pub cpu_seconds: Option<f64>,
    /// `process_resident_memory_bytes`.
    pub rss_bytes: Option<u64>,
    /// `process_resident_memory_peak_bytes`.
    pub peak_rss_bytes: Option<u64>,
    /// `hush_sfu_packets_out_total`, all kinds.
    pub packets_out: u64,
    /// `hush_sfu_bytes_out_total`, all kinds.
    pub bytes_out: u64,
    /// `hush_sfu_dropped_packets_total`, all reasons.
    pub dropped: u64,
    /// `hush_sfu_packets_out_total{kind="audio"}`.
    pub audio_packets_out: u64,
    /// `hush_sfu_bytes_out_total{kind="audio"}`: RTP payload bytes, RED
    /// blocks included.
    pub audio_bytes_out: u64,
}

/// Sums a metric family's samples (every label set) in Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = match rest.as_bytes().first() {
            Some(b' ') => rest.trim(),
            Some(b'{') => rest.rsplit_once(' ').map_or("", |(_, v)| v),
            _ => continue,
        };
        if let Ok(v) = value.parse::<f64>() {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

impl ServerSample {
    /// Reads a sample from `/metrics` text.
    pub fn parse(text: &str) -> Self {
        let int = |name| metric(text, name).map_or(0, |v| v as u64);
        Self {
            cpu_seconds: metric(text, "process_cpu_seconds_total"),
            rss_bytes: metric(text, "process_resident_memory_bytes").map(|v| v as u64),
            peak_rss_bytes: metric(text, "process_resident_memory_peak_bytes").map(|v| v as u64),
            packets_out: int("hush_sfu_packets_out_total"),
            bytes_out: int("hush_sfu_bytes_out_total"),
            dropped: int("hush_sfu_dropped_packets_total"),
            audio_packets_out: int("hush_sfu_packets_out_total{kind=\"audio\"}"),
            audio_bytes_out: int("hush_sfu_bytes_out_total{kind=\"audio\"}"),
        }
    }
}

/// One node of the server under test.
#[derive(Clone)]
struct Node {
    /// WebSocket URL clients join at (a media node: its control API URL).
    url: String,
    /// `host:port` serving `/metrics`.
    http: String,
    /// A media node's control token for its `/metrics`.
    bearer: Option<String>,
}

/// Every node's `/metrics` at one moment, and their sum.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    /// The nodes' counters added up (CPU only when every node reports it).
    pub total: ServerSample,
    /// Each node's own, in the order of [`Target::node_urls`].
    pub nodes: Vec<ServerSample>,
}

impl Samples {
    fn of(nodes: Vec<ServerSample>) -> Self {
        let mut total = ServerSample {
            cpu_seconds: Some(0.0),
            rss_bytes: Some(0),
            peak_rss_bytes: Some(0),
            ..ServerSample::default()
        };
        for n in &nodes {
            let add_f = |a: Option<f64>, b: Option<f64>| Some(a? + b?);
            let add_u = |a: Option<u64>, b: Option<u64>| Some(a? + b?);
            total.cpu_seconds = add_f(total.cpu_seconds, n.cpu_seconds);
            total.rss_bytes = add_u(total.rss_bytes, n.rss_bytes);
            total.peak_rss_bytes = add_u(total.peak_rss_bytes, n.peak_rss_bytes);
            total.packets_out += n.packets_out;
            total.bytes_out += n.bytes_out;
            total.dropped += n.dropped;
            total.audio_packets_out += n.audio_packets_out;
            total.audio_bytes_out += n.audio_bytes_out;
        }
        Self { total, nodes }
    }
}

/// The server under test: one node, or the nodes of a cluster (issue 20),
/// whose participants join through each node in turn, and the cluster's
/// media nodes (`hush-sfu --redis`), whose `/metrics` are sampled too.
pub struct Target {
    /// The URL (or comma-separated URLs) clients join at, for reports.
    pub url: String,
    /// The nodes participants join through, then the media nodes.
    nodes: Vec<Node>,
    /// How many of `nodes` take joins.
    joins: usize,
    secret: ServerSecret,
    child: Option<tokio::process::Child>,
}

impl core::fmt::Debug for Target {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Target({})", self.url)
    }
}

impl Target {
    /// Starts `hush loadtest-server` (this same program) as a child on loopback.
    pub async fn embedded(max_run: Duration) -> Result<Self, Error> {
        let (secret, text) = ServerSecret::generate_development()?;
        let exe = std::env::current_exe().map_err(Error::io("finding this program"))?;
        let mut child = tokio::process::Command::new(exe)
            .arg("loadtest-server")
            .arg("--max-seconds")
            .arg(max_run.as_secs().max(1).to_string())
            .env(SECRET_ENV, text.as_str())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(Error::io("starting the embedded server"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::LoadTest("embedded server has no stdout".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .map_err(|_| Error::LoadTest("embedded server did not start in 30 s".into()))?
            .map_err(Error::io("reading the embedded server's output"))?
            .ok_or_else(|| Error::LoadTest("embedded server exited".into()))?;
        let url = line
            .strip_prefix("LISTEN ")
            .ok_or_else(|| Error::LoadTest(format!("embedded server said {line:?}")))?
            .to_owned();
        Self::with(&[url], secret, Some(child))
    }

    /// Servers already running at `urls` (one, or the nodes of one
    /// cluster) that mint tokens with `secret`.
    pub fn external(urls: &[String], secret: ServerSecret) -> Result<Self, Error> {
        Self::with(urls, secret, None)
    }

    fn with(
        urls: &[String],
        secret: ServerSecret,
        child: Option<tokio::process::Child>,
    ) -> Result<Self, Error> {
        if urls.is_empty() {
            return Err(Error::Invalid("server URL (none given)"));
        }
        let nodes = urls
            .iter()
            .map(|url| {
                let http = url
                    .strip_prefix("ws://")
                    .ok_or(Error::Invalid(
                        "server URL (the load test needs ws://host:port)",
                    ))?
                    .split('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                Ok(Node {
                    url: url.clone(),
                    http,
                    bearer: None,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Self {
            url: urls.join(","),
            joins: nodes.len(),
            nodes,
            secret,
            child,
        })
    }

    /// Also samples the media nodes whose control APIs are at `urls`
    /// (`http://host:port`), with tokens minted under their `control` secret.
    pub fn with_media_nodes(
        mut self,
        urls: &[String],
        control: &ServerSecret,
    ) -> Result<Self, Error> {
        let expiry = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + 24 * 3600;
        for url in urls {
            let http = url
                .strip_prefix("http://")
                .map(|a| a.trim_end_matches('/'))
                .filter(|a| !a.is_empty() && !a.contains('/'))
                .ok_or(Error::Invalid("media node URL (http://host:port)"))?;
            self.nodes.push(Node {
                url: url.clone(),
                http: http.to_owned(),
                bearer: Some(hush_proto::ControlToken::mint(control, expiry)),
            });
        }
        Ok(self)
    }

    /// The URL participant `index` joins through: the nodes in turn.
    pub fn join_url(&self, index: u32) -> &str {
        let i = index as usize % self.joins.max(1);
        self.nodes.get(i).map_or("", |n| n.url.as_str())
    }

    /// Each node's URL, in the order of [`Samples::nodes`].
    pub fn node_urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url.clone()).collect()
    }

    /// Whether the server runs as our child process.
    pub fn is_embedded(&self) -> bool {
        self.child.is_some()
    }

    /// A join token for `name` in `room`, valid for an hour.
    pub fn token(&self, room: &str, name: &str) -> Result<String, Error> {
        crate::local::mint_token(&self.secret, room, name)
    }

    /// Reads every node's `/metrics`.
    pub async fn sample(&self) -> Result<Samples, Error> {
        let mut nodes = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            nodes.push(Self::sample_node(node).await?);
        }
        Ok(Samples::of(nodes))
    }

    async fn sample_node(node: &Node) -> Result<ServerSample, Error> {
        let http = node.http.as_str();
        let fetch = async {
            let mut stream = tokio::net::TcpStream::connect(http).await?;
            let auth = node
                .bearer
                .as_ref()
                .map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
            let request =
                format!("GET /metrics HTTP/1.1\r\nHost: {http}\r\n{auth}Connection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await?;
            let mut body = Vec::new();
            stream.take(16 << 20).read_to_end(&mut body).await?;
            Ok::<_, std::io::Error>(body)
        };
        let body = tokio::time::timeout(Duration::from_secs(10), fetch)
            .await
            .map_err(|_| Error::LoadTest("/metrics did not answer in 10 s".into()))?
            .map_err(|e| Error::LoadTest(format!("/metrics of {http}: {e}")))?;
        let text = String::from_utf8_lossy(&body);
        if !text.starts_with("HTTP/1.1 200") && !text.starts_with("HTTP/1.0 200") {
            let status = text.lines().next().unwrap_or_default();
            return Err(Error::LoadTest(format!("/metrics answered {status:?}")));
        }
        Ok(ServerSample::parse(&text))
    }

    /// Stops the child server (if ours): closes its input, waits, kills it if it lingers.
    pub async fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take());
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_families_are_summed_over_labels() {
        let text = "# HELP x\n# TYPE hush_sfu_packets_out_total counter\n\
                    hush_sfu_packets_out_total{kind=\"audio\"} 10\n\
                    hush_sfu_packets_out_total{kind=\"video\"} 5\n\
                    hush_sfu_packets_out_total_extra 99\n\
                    process_cpu_seconds_total 1.25\n";
        assert_eq!(metric(text, "hush_sfu_packets_out_total"), Some(15.0));
        assert_eq!(metric(text, "process_cpu_seconds_total"), Some(1.25));
        assert_eq!(metric(text, "missing"), None);
        let s = ServerSample::parse(text);
        assert_eq!(
            (s.packets_out, s.cpu_seconds, s.rss_bytes),
            (15, Some(1.25), None)
        );
        assert_eq!(s.audio_packets_out, 10, "one label set alone");
    }

    #[test]
    fn only_plain_websocket_urls_are_accepted() {
        let secret = ServerSecret::new(vec![7; 32]).expect("secret");
        let t = Target::external(&["ws://127.0.0.1:7880".into()], secret.clone()).expect("ws");
        assert_eq!(t.nodes[0].http, "127.0.0.1:7880");
        assert!(!t.is_embedded());
        assert!(Target::external(&["wss://example.invalid".into()], secret.clone()).is_err());
        assert!(Target::external(&[], secret).is_err());
    }

    #[test]
    fn participants_join_through_each_node_in_turn() {
        let secret = ServerSecret::new(vec![7; 32]).expect("secret");
        let urls = ["ws://127.0.0.1:1".to_owned(), "ws://127.0.0.1:2".to_owned()];
        let t = Target::external(&urls, secret).expect("two nodes");
        assert_eq!(t.url, "ws://127.0.0.1:1,ws://127.0.0.1:2");
        let joined: Vec<&str> = (0..4).map(|i| t.join_url(i)).collect();
        assert_eq!(joined, [&urls[0], &urls[1], &urls[0], &urls[1]]);
        // Media nodes are sampled, never joined through.
        let control = ServerSecret::new(vec![8; 32]).expect("control secret");
        let t = t
            .with_media_nodes(&["http://127.0.0.1:3".to_owned()], &control)
            .expect("a media node");
        let joined: Vec<&str> = (0..3).map(|i| t.join_url(i)).collect();
        assert_eq!(joined, [&urls[0], &urls[1], &urls[0]]);
        assert_eq!(t.node_urls().len(), 3);
        assert!(t.nodes[2].bearer.is_some() && t.nodes[0].bearer.is_none());
        assert!(
            t.with_media_nodes(&["ws://127.0.0.1:3".to_owned()], &control)
                .is_err()
        );
    }

    #[test]
    fn a_clusters_counters_add_up_and_its_cpu_only_when_every_node_has_it() {
        let node = |cpu: Option<f64>, packets: u64| ServerSample {
            cpu_seconds: cpu,
            rss_bytes: Some(10),
            peak_rss_bytes: Some(20),
            packets_out: packets,
            ..ServerSample::default()
        };
        let s = Samples::of(vec![node(Some(1.5), 7), node(Some(2.0), 5)]);
        assert_eq!(s.total.cpu_seconds, Some(3.5));
        assert_eq!(
            (s.total.packets_out, s.total.peak_rss_bytes),
            (12, Some(40))
        );
        assert_eq!(s.nodes.len(), 2);
        let s = Samples::of(vec![node(Some(1.5), 7), node(None, 5)]);
        assert_eq!(s.total.cpu_seconds, None);
    }
}
