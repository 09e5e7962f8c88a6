//! A standalone `hush-sfu` node behind the [`MediaRouter`] seam, driven
//! through its control API (`hush_sfu::http`): `hush-server --sfu-url`.
//!
//! As with [`EmbeddedSfu`](crate::EmbeddedSfu), each participant gets one
//! task that carries out its requests in the order they came (add, offer,
//! answer, candidates, remove); a second task long-polls the node for the
//! participant's events, which become the same wire messages. Every
//! request carries a control token minted under the secret the node and
//! this server share. A node that stops answering ends the participant's
//! media with `media_closed`, as a dead peer connection does; in a
//! cluster ([`RemoteSfu::with_on_lost`]) it is reported for each member,
//! whose media the cluster then moves to another node.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

use hush_proto::{
    ControlToken, ErrorCode, IceCandidate, ParticipantId, RoomId, ServerMessage, ServerSecret,
};
use hush_sfu::SfuEvent;

use crate::embedded::deliver;
use crate::error::Error;
use crate::media::{MediaRouter, MediaSink, REQUEST_QUEUE, Request, RequestQueues};

/// How long a control request other than the event poll may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The node holds an event poll up to 20 s; this bounds a silent node.
const POLL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long each control token is valid.
const TOKEN_SECONDS: u64 = 300;
/// Event polls that fail in a row before the participant's media is lost.
const POLL_FAILURES: u32 = 3;
/// The largest control reply read (an SDP, or a batch of 256 events).
const MAX_REPLY: usize = 4 << 20;

/// A `--sfu-url` that is not `http://host:port`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the hush-sfu control URL must be http://HOST:PORT, not {0:?}")]
pub struct BadControlUrl(pub String);

/// A control request that failed: the node refused it or did not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum CallError {
    /// The node answered with this status and error text.
    #[error("hush-sfu answered {0}: {1}")]
    Status(StatusCode, String),
    /// No answer (connection refused, reset or timed out).
    #[error("hush-sfu did not answer: {0}")]
    Unreachable(String),
}

/// A standalone node's control API: its address and the shared secret.
#[derive(Clone)]
pub struct RemoteNode {
    /// `host:port` of the control API.
    addr: String,
    secret: Arc<ServerSecret>,
}

impl core::fmt::Debug for RemoteNode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // The secret stays out of logs.
        write!(f, "RemoteNode({})", self.addr)
    }
}

impl RemoteNode {
    /// The node whose control API is at `url` (`http://host:port`, its
    /// `--listen`), minting tokens with `secret`.
    pub fn new(url: &str, secret: ServerSecret) -> Result<Self, BadControlUrl> {
        let bad = || BadControlUrl(url.to_owned());
        let uri: hyper::Uri = url.parse().map_err(|_| bad())?;
        let plain_root = uri.scheme_str() == Some("http")
            && matches!(uri.path(), "" | "/")
            && uri.query().is_none();
        let (Some(host), Some(port), true) = (uri.host(), uri.port_u16(), plain_root) else {
            return Err(bad());
        };
        // `host` keeps an IPv6 address's brackets, as `host:port` needs.
        Ok(Self {
            addr: format!("{host}:{port}"),
            secret: Arc::new(secret),
        })
    }

    /// The control API's `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn token(&self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        ControlToken::mint(&self.secret, now + TOKEN_SECONDS)
    }

    /// One request on its own connection; the reply's status and body.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Bytes, CallError> {
        let unreachable = |e: &dyn core::fmt::Display| CallError::Unreachable(e.to_string());
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect(&self.addr)
                .await
                .map_err(|e| unreachable(&e))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(|e| unreachable(&e))?;
            tokio::spawn(conn);
            let mut request = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, &self.addr)
                .header(
                    hyper::header::AUTHORIZATION,
                    format!("Bearer {}", self.token()),
                );
            if body.is_some() {
                request = request.header(hyper::header::CONTENT_TYPE, "application/json");
            }
            let request = request
                .body(Full::new(Bytes::from(body.unwrap_or_default())))
                .map_err(|e| unreachable(&e))?;
            let reply = sender
                .send_request(request)
                .await
                .map_err(|e| unreachable(&e))?;
            let status = reply.status();
            let bytes = http_body_util::Limited::new(reply.into_body(), MAX_REPLY)
                .collect()
                .await
                .map_err(|e| unreachable(&e))?
                .to_bytes();
            if status.is_success() {
                Ok(bytes)
            } else {
                Err(CallError::Status(
                    status,
                    String::from_utf8_lossy(&bytes).into_owned(),
                ))
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(CallError::Unreachable(format!("no reply in {timeout:?}"))))
    }
}

/// The control API's path of one participant.
fn participant_path(room: &RoomId, id: ParticipantId) -> String {
    format!("/v1/rooms/{}/participants/{}", room.as_str(), id.0)
}

/// What to do with a member whose node stopped answering or shut down (a
/// cluster moves its media to another node).
pub type OnLost = Arc<dyn Fn(ParticipantId) + Send + Sync>;

/// [`MediaRouter`] backed by a standalone `hush-sfu` node.
pub struct RemoteSfu {
    node: RemoteNode,
    queues: RequestQueues,
    on_lost: Option<OnLost>,
}

impl core::fmt::Debug for RemoteSfu {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "RemoteSfu({})", self.node.addr)
    }
}

impl RemoteSfu {
    /// Routes every participant's media through `node`.
    pub fn new(node: RemoteNode) -> Self {
        Self {
            node,
            queues: RequestQueues::default(),
            on_lost: None,
        }
    }

    /// As [`RemoteSfu::new`]; when the node stops answering a member's
    /// event polls or shuts down, `on_lost` runs for that member instead
    /// of it getting `media_closed`.
    pub fn with_on_lost(node: RemoteNode, on_lost: OnLost) -> Self {
        Self {
            on_lost: Some(on_lost),
            ..Self::new(node)
        }
    }
}

fn failed(message: impl Into<String>) -> ServerMessage {
    ServerMessage::error(ErrorCode::MediaFailed, message)
}

/// What the event poll delivers.
enum Polled {
    /// An event of the participant's.
    Event(SfuEvent),
    /// The node stopped answering.
    Lost,
}

/// Long-polls a participant's events into `tx` until the receiver is
/// dropped, or the node stops answering or no longer knows the participant
/// (`404`, `410`: a node restarted, or one that shut down): then
/// [`Polled::Lost`]. A participant the SFU itself closed ends with its
/// `Closed` event, before any such answer.
async fn poll_events(node: RemoteNode, path: String, tx: mpsc::Sender<Polled>) {
    let mut failures = 0;
    loop {
        let reply = tokio::select! {
            r = node.call(Method::GET, &path, None, POLL_TIMEOUT) => r,
            () = tx.closed() => return,
        };
        match reply {
            Ok(body) => {
                failures = 0;
                // Each event on its own: one this server cannot read (a newer
                // node's) is skipped, not the batch.
                let events: Vec<serde_json::Value> = match serde_json::from_slice(&body) {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(node = %node.addr, error = %e, "hush-sfu sent a reply that is not a list of events");
                        Vec::new()
                    }
                };
                for value in events {
                    let event = match serde_json::from_value::<SfuEvent>(value) {
                        Ok(event) => event,
                        Err(e) => {
                            tracing::warn!(node = %node.addr, error = %e, "hush-sfu sent an event this server cannot read; skipped");
                            continue;
                        }
                    };
                    if tx.send(Polled::Event(event)).await.is_err() {
                        return;
                    }
                }
            }
            Err(CallError::Status(StatusCode::GONE | StatusCode::NOT_FOUND, _)) => {
                let _ = tx.send(Polled::Lost).await;
                return;
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(node = %node.addr, error = %e, failures, "hush-sfu event poll failed");
                if failures >= POLL_FAILURES {
                    let _ = tx.send(Polled::Lost).await;
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

impl MediaRouter for RemoteSfu {
    fn add_participant(
        &self,
        room: &RoomId,
        id: ParticipantId,
        sink: MediaSink,
    ) -> Result<(), Error> {
        let mut requests = self.queues.open(id);
        let node = self.node.clone();
        let path = participant_path(room, id);
        let on_lost = self.on_lost.clone();
        tokio::spawn(async move {
            if let Err(e) = node.call(Method::POST, &path, None, CALL_TIMEOUT).await {
                tracing::warn!(participant = %id, error = %e, "hush-sfu refused a participant");
                let _ = sink.send(failed(e.to_string()));
                return;
            }
            let (events_tx, mut events) = mpsc::channel(REQUEST_QUEUE);
            let poller = tokio::spawn(poll_events(
                node.clone(),
                format!("{path}/events"),
                events_tx,
            ));
            loop {
                tokio::select! {
                    r = requests.recv() => {
                        let result = match r {
                            Some(Request::Offer(sdp)) => {
                                let body = serde_json::json!({ "sdp": sdp }).to_string().into_bytes();
                                node.call(Method::POST, &format!("{path}/offer"), Some(body), CALL_TIMEOUT)
                                    .await
                                    .and_then(|reply| {
                                        let answer: hush_sfu::http::Sdp = serde_json::from_slice(&reply)
                                            .map_err(|e| CallError::Unreachable(format!("unreadable answer: {e}")))?;
                                        let _ = sink.send(ServerMessage::SdpAnswer { sdp: answer.sdp });
                                        Ok(())
                                    })
                            }
                            Some(Request::Answer(sdp)) => {
                                let body = serde_json::json!({ "sdp": sdp }).to_string().into_bytes();
                                node.call(Method::POST, &format!("{path}/answer"), Some(body), CALL_TIMEOUT).await.map(drop)
                            }
                            Some(Request::Candidate(c)) => match serde_json::to_vec(&c) {
                                Ok(body) => node.call(Method::POST, &format!("{path}/candidates"), Some(body), CALL_TIMEOUT).await.map(drop),
                                Err(e) => Err(CallError::Unreachable(e.to_string())),
                            },
                            // The participant was removed: the sender is gone.
                            None => break,
                        };
                        if let Err(e) = result {
                            let _ = sink.send(failed(e.to_string()));
                        }
                    }
                    ev = events.recv() => match ev {
                        Some(Polled::Lost) => {
                            tracing::warn!(participant = %id, node = %node.addr, "hush-sfu node stopped answering");
                            match &on_lost {
                                Some(lost) => lost(id),
                                None => {
                                    sink.check_liveness();
                                    let _ = sink.send(ServerMessage::error(
                                        ErrorCode::MediaClosed,
                                        format!("media connection closed: the hush-sfu node at {} stopped answering", node.addr),
                                    ));
                                }
                            }
                            break;
                        }
                        Some(Polled::Event(SfuEvent::Closed { reason: hush_sfu::CloseReason::Shutdown }))
                            if on_lost.is_some() =>
                        {
                            // The node is shutting down: in a cluster, the
                            // room's media goes elsewhere.
                            tracing::info!(participant = %id, node = %node.addr, "hush-sfu node shutting down");
                            if let Some(lost) = &on_lost {
                                lost(id);
                            }
                            break;
                        }
                        Some(Polled::Event(ev)) => {
                            // Nothing follows a `Closed`: the node removed it.
                            let closed = matches!(ev, SfuEvent::Closed { .. });
                            if deliver(ev, &sink, id).is_break() || closed {
                                break;
                            }
                        }
                        None => break,
                    },
                }
            }
            poller.abort();
            if let Err(e) = node.call(Method::DELETE, &path, None, CALL_TIMEOUT).await {
                tracing::debug!(participant = %id, error = %e, "removing a participant from hush-sfu");
            }
        });
        Ok(())
    }

    fn handle_offer(&self, id: ParticipantId, sdp: String) -> Result<(), Error> {
        self.queues.send(id, Request::Offer(sdp))
    }

    fn handle_answer(&self, id: ParticipantId, sdp: String) -> Result<(), Error> {
        self.queues.send(id, Request::Answer(sdp))
    }

    fn add_ice_candidate(&self, id: ParticipantId, candidate: IceCandidate) -> Result<(), Error> {
        self.queues.send(id, Request::Candidate(candidate))
    }

    fn remove_participant(&self, id: ParticipantId) {
        // Closing the queue ends the participant's task, which removes it from the node.
        self.queues.close(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> ServerSecret {
        ServerSecret::new(vec![9; 32]).expect("secret")
    }

    #[test]
    fn control_urls_are_http_host_and_port() {
        let node = RemoteNode::new("http://127.0.0.1:7890/", secret()).expect("url");
        assert_eq!(node.addr(), "127.0.0.1:7890");
        let v6 = RemoteNode::new("http://[::1]:7890", secret()).expect("IPv6");
        assert_eq!(v6.addr(), "[::1]:7890");
        for bad in [
            "https://127.0.0.1:7890",
            "ws://127.0.0.1:7890",
            "http://",
            "http://host-without-port",
            "http://127.0.0.1:7890/v1",
            "http://[::1]",
        ] {
            assert_eq!(
                RemoteNode::new(bad, secret()).map(|_| ()),
                Err(BadControlUrl(bad.to_owned()))
            );
        }
        assert!(!format!("{node:?}").contains("9, 9"), "no secret in Debug");
    }

    #[test]
    fn participants_are_addressed_by_room_and_decimal_id() {
        let room: RoomId = "r-1".parse().expect("room");
        assert_eq!(
            participant_path(&room, ParticipantId(42)),
            "/v1/rooms/r-1/participants/42"
        );
    }

    #[tokio::test]
    async fn a_node_that_is_not_there_ends_the_participants_media_with_an_error() {
        // A port nothing listens on: bind one and drop it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let router = RemoteSfu::new(
            RemoteNode::new(&format!("http://127.0.0.1:{port}"), secret()).expect("url"),
        );
        let (sink, mut rx) = MediaSink::channel(8);
        router
            .add_participant(&"r".parse().expect("room"), ParticipantId(1), sink)
            .expect("added");
        let told = tokio::time::timeout(Duration::from_secs(15), rx.recv())
            .await
            .expect("told in time")
            .expect("a message");
        assert!(
            matches!(
                &told,
                ServerMessage::Error {
                    code: ErrorCode::MediaFailed,
                    ..
                }
            ),
            "{told:?}"
        );
    }
}
