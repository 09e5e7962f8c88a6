//! The server side of `/v1/ws`: the WebSocket handshake (RFC 6455 §4.2) on
//! hyper's upgrade, and sending that keeps per-connection memory flat.
//!
//! Why not axum's `WebSocket`: tungstenite keeps its output buffer at the
//! capacity of the largest frame it ever wrote, and a `joined` message
//! lists every member with its key package, so each connection of a large
//! room kept a buffer the size of the room (~25 KiB at 200 members, ~250 KiB
//! at 1,000). Here a long message goes out as fragments of at most
//! [`FRAGMENT_BYTES`] (RFC 6455 §5.4: the receiver sees one message), which
//! axum's message type cannot express.

use axum::body::Body;
use axum::http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt as _;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tungstenite::Message;
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::{Role, WebSocketConfig};

/// An upgraded connection.
pub(crate) type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// Largest frame the server writes; longer messages are fragmented.
pub(crate) const FRAGMENT_BYTES: usize = 4 * 1024;

/// A valid upgrade request, accepted: the `101` response to return and the
/// connection to take over once hyper has sent it.
pub(crate) struct Accepted {
    /// The `101 Switching Protocols` response.
    pub(crate) response: Response,
    /// Resolves to the raw connection after the response is written.
    pub(crate) upgrade: OnUpgrade,
}

/// Why a request to `/v1/ws` is not a WebSocket upgrade we take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refused {
    /// 400, or 426 for a WebSocket version other than 13.
    status: StatusCode,
    /// Said in the response body.
    reason: &'static str,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.reason).into_response();
        if self.status == StatusCode::UPGRADE_REQUIRED {
            response
                .headers_mut()
                .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        }
        response
    }
}

/// Checks a WebSocket upgrade request and answers it, or says why it is
/// not one.
pub(crate) fn accept(request: &mut Request<Body>) -> Result<Accepted, Refused> {
    let accept_key = accept_key(request.headers())?;
    let upgrade = request
        .extensions_mut()
        .remove::<OnUpgrade>()
        .ok_or(refused("connection cannot be upgraded"))?;
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept_key).map_err(|_| refused("bad key"))?,
    );
    Ok(Accepted { response, upgrade })
}

fn refused(reason: &'static str) -> Refused {
    Refused {
        status: StatusCode::BAD_REQUEST,
        reason,
    }
}

/// The `Sec-WebSocket-Accept` value for a valid upgrade request's headers.
fn accept_key(headers: &HeaderMap) -> Result<String, Refused> {
    let has_token = |name, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has_token(CONNECTION, "upgrade") {
        return Err(refused(
            "not a WebSocket upgrade (Connection: upgrade missing)",
        ));
    }
    if !has_token(UPGRADE, "websocket") {
        return Err(refused(
            "not a WebSocket upgrade (Upgrade: websocket missing)",
        ));
    }
    if headers
        .get(SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err(Refused {
            status: StatusCode::UPGRADE_REQUIRED,
            reason: "WebSocket version 13 only",
        });
    }
    let key = headers
        .get(SEC_WEBSOCKET_KEY)
        .ok_or(refused("Sec-WebSocket-Key missing"))?;
    Ok(tungstenite::handshake::derive_accept_key(key.as_bytes()))
}

/// Takes over an upgraded connection as the server end of a WebSocket.
pub(crate) async fn socket(upgraded: Upgraded, config: WebSocketConfig) -> Socket {
    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await
}

/// Sends `text` as one text message, fragmented when it is longer than
/// [`FRAGMENT_BYTES`], and flushes.
pub(crate) async fn send_text(socket: &mut Socket, text: String) -> Result<(), tungstenite::Error> {
    if text.len() <= FRAGMENT_BYTES {
        return socket.send(Message::text(text)).await;
    }
    for frame in fragments(text.into_bytes(), FRAGMENT_BYTES) {
        socket.feed(Message::Frame(frame)).await?;
    }
    socket.flush().await
}

/// The frames of one text message of `bytes`, each payload at most `size`
/// bytes: a text frame, then continuations, the last one final. A split
/// may fall inside a UTF-8 sequence; only the whole message must be valid.
fn fragments(bytes: Vec<u8>, size: usize) -> Vec<Frame> {
    let bytes = axum::body::Bytes::from(bytes);
    let size = size.max(1);
    let count = bytes.len().div_ceil(size).max(1);
    (0..count)
        .map(|i| {
            let start = i * size;
            let end = (start + size).min(bytes.len());
            let opcode = if i == 0 {
                OpCode::Data(Data::Text)
            } else {
                OpCode::Data(Data::Continue)
            };
            Frame::message(bytes.slice(start..end), opcode, i + 1 == count)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_cover_the_message_in_order_and_only_the_last_is_final() {
        let text = "é".repeat(5000); // 10,000 bytes, two-byte characters
        let frames = fragments(text.clone().into_bytes(), 4096);
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0].header().opcode, OpCode::Data(Data::Text));
        for f in &frames[1..] {
            assert_eq!(f.header().opcode, OpCode::Data(Data::Continue));
        }
        let finals: Vec<bool> = frames.iter().map(|f| f.header().is_final).collect();
        assert_eq!(finals, [false, false, true]);
        assert!(frames.iter().all(|f| f.payload().len() <= 4096));
        let joined: Vec<u8> = frames.iter().flat_map(|f| f.payload().to_vec()).collect();
        assert_eq!(joined, text.as_bytes());
    }

    #[test]
    fn a_message_of_exactly_one_fragment_is_one_final_text_frame() {
        let frames = fragments(vec![b'x'; 4096], 4096);
        assert_eq!(frames.len(), 1);
        assert!(frames[0].header().is_final);
        assert_eq!(frames[0].header().opcode, OpCode::Data(Data::Text));
    }

    #[test]
    fn upgrade_headers_are_checked() {
        let mut h = HeaderMap::new();
        assert_eq!(
            accept_key(&h).map_err(|e| e.status),
            Err(StatusCode::BAD_REQUEST)
        );
        h.insert(CONNECTION, "keep-alive, Upgrade".parse().expect("value"));
        h.insert(UPGRADE, "WebSocket".parse().expect("value"));
        h.insert(SEC_WEBSOCKET_VERSION, "8".parse().expect("value"));
        assert_eq!(
            accept_key(&h).map_err(|e| e.status),
            Err(StatusCode::UPGRADE_REQUIRED)
        );
        h.insert(SEC_WEBSOCKET_VERSION, "13".parse().expect("value"));
        assert_eq!(
            accept_key(&h).map_err(|e| e.status),
            Err(StatusCode::BAD_REQUEST)
        );
        // RFC 6455 §1.3's example key and answer.
        h.insert(
            SEC_WEBSOCKET_KEY,
            "dGhlIHNhbXBsZSBub25jZQ==".parse().expect("value"),
        );
        assert_eq!(
            accept_key(&h).map_err(|e| e.status),
            Ok("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".to_owned())
        );
    }
}
