//! The WebSocket connection to `hush-server` (`/v1/ws`, JSON text frames).

use futures_util::{SinkExt as _, StreamExt as _};
use hush_proto::{ClientMessage, ServerMessage};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::error::SignalingError as Error;

/// Bytes tungstenite reads at once. Each poll of the socket zeroes that
/// much spare buffer before reading (its default is 128 KiB), and the call
/// driver polls signaling on every turn, media packets included: with the
/// default, a load generator of 700 clients spent a third of its time in
/// `memset`. Larger messages still arrive whole (the buffer grows).
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// The client's WebSocket settings.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        // Every send is flushed at once; nothing to gather.
        .write_buffer_size(0)
}

/// A connected signaling client.
pub struct Signaling {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl core::fmt::Debug for Signaling {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Signaling")
    }
}

impl Signaling {
    /// Connects to `url` (e.g. `ws://127.0.0.1:7880`; `/v1/ws` is appended
    /// when the URL has no path).
    pub async fn connect(url: &str) -> Result<Self, Error> {
        let url = if url.trim_end_matches('/').matches('/').count() <= 2 {
            format!("{}/v1/ws", url.trim_end_matches('/'))
        } else {
            url.to_owned()
        };
        let (ws, _) =
            tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config()), false)
                .await
                .map_err(|e| Error::Connect {
                    url: url.clone(),
                    source: Box::new(e),
                })?;
        Ok(Self { ws })
    }

    /// Sends one message.
    pub async fn send(&mut self, msg: &ClientMessage) -> Result<(), Error> {
        let text = serde_json::to_string(msg).map_err(Error::Encode)?;
        self.ws
            .send(Message::text(text))
            .await
            .map_err(|e| Error::Connection(Box::new(e)))
    }

    /// The next server message; `None` when the connection closed.
    pub async fn recv(&mut self) -> Option<Result<ServerMessage, Error>> {
        loop {
            match self.ws.next().await? {
                Ok(Message::Text(text)) => {
                    return Some(serde_json::from_str(text.as_str()).map_err(Error::BadMessage));
                }
                Ok(Message::Close(_)) => return None,
                Ok(_) => continue,
                Err(e) => return Some(Err(Error::Connection(Box::new(e)))),
            }
        }
    }

    /// Closes the connection politely.
    pub async fn close(&mut self) {
        let _ = self.ws.close(None).await;
    }
}
