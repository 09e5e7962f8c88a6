//! The WebSocket connection to `hush-server` (`/v1/ws`, JSON text frames).
//!
//! `wss://` runs over rustls (the *ring* provider, chosen here: str0m in a
//! process beside us may use aws-lc-rs, so no process-wide default is
//! assumed) and trusts the bundled Mozilla roots plus, if given, the
//! certificates of a CA file. `ws://` carries the join token, key packages
//! and SDP in clear text, so it is refused to anything but this machine
//! unless [`ConnectOptions::insecure`] says otherwise.

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use hush_proto::{ClientMessage, ServerMessage};
use rustls::pki_types::pem::{self, PemObject as _};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::error::{CertificateProblem, SignalingError as Error};

/// Bytes tungstenite reads at once. Each poll of the socket zeroes that
/// much spare buffer before reading (its default is 128 KiB), and the call
/// driver polls signaling on every turn, media packets included: with the
/// default, a load generator of 700 clients spent a third of its time in
/// `memset`. Larger messages still arrive whole (the buffer grows).
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// How long TCP connect, TLS handshake and WebSocket upgrade may take in
/// all, so that a server that never answers is an error, not a hang.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// How the connection to the server is secured.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Extra CA certificates (PEM) trusted for `wss://`, besides the
    /// bundled Mozilla roots: for a server with a private CA.
    pub ca_file: Option<PathBuf>,
    /// Allow `ws://` (no TLS) to a host that is not a loopback address.
    pub insecure: bool,
}

/// Whether `host` (from a URL: a name, an IPv4 address or a bracketed IPv6
/// address) is this machine: 127.0.0.0/8, `::1` or `localhost`.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match bare.parse::<IpAddr>() {
        Ok(ip) => ip.to_canonical().is_loopback(),
        Err(_) => {
            let name = bare.strip_suffix('.').unwrap_or(bare);
            name.eq_ignore_ascii_case("localhost")
        }
    }
}

/// The client's WebSocket settings.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        // Every send is flushed at once; nothing to gather.
        .write_buffer_size(0)
}

/// A connected signaling client.
pub struct Signaling {
    ws: WebSocketStream<Stream>,
}

impl core::fmt::Debug for Signaling {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Signaling")
    }
}

impl Signaling {
    /// Connects to `url` (`wss://host[:port]` or, to this machine,
    /// `ws://127.0.0.1:7880`; `/v1/ws` is appended when the URL has no
    /// path). Everything about the URL and the CA file is checked before
    /// any connection is made.
    pub async fn connect(url: &str, options: &ConnectOptions) -> Result<Self, Error> {
        let url = if url.trim_end_matches('/').matches('/').count() <= 2 {
            format!("{}/v1/ws", url.trim_end_matches('/'))
        } else {
            url.to_owned()
        };
        let target = Target::parse(&url)?;
        let tls = match target.tls {
            true => Some(client_config(options.ca_file.as_deref())?),
            false if options.insecure || is_loopback_host(&target.host) => None,
            false => return Err(Error::Insecure { host: target.host }),
        };
        let connecting = async {
            let tcp = TcpStream::connect((target.bare_host(), target.port))
                .await
                .map_err(|e| Error::Connect {
                    url: url.clone(),
                    source: Box::new(e.into()),
                })?;
            let stream = match tls {
                None => Stream::Plain(tcp),
                Some(tls) => {
                    let name =
                        ServerName::try_from(target.bare_host().to_owned()).map_err(|_| {
                            Error::BadUrl {
                                url: url.clone(),
                                reason: "the host is not a valid DNS name or IP address",
                            }
                        })?;
                    let stream = TlsConnector::from(tls)
                        .connect(name, tcp)
                        .await
                        .map_err(|e| tls_failure(&url, &target.host, e))?;
                    Stream::Tls(Box::new(stream))
                }
            };
            let (ws, _) =
                tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(config()))
                    .await
                    .map_err(|e| Error::Connect {
                        url: url.clone(),
                        source: Box::new(e),
                    })?;
            Ok(Self { ws })
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| Error::Timeout {
                url: url.clone(),
                after: CONNECT_TIMEOUT,
            })?
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

/// What a server URL names.
struct Target {
    /// `wss://`.
    tls: bool,
    /// As written in the URL (IPv6 in brackets).
    host: String,
    port: u16,
}

impl Target {
    fn parse(url: &str) -> Result<Self, Error> {
        let bad = |reason| Error::BadUrl {
            url: url.to_owned(),
            reason,
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let tls = match uri.scheme_str() {
            Some("wss") => true,
            Some("ws") => false,
            _ => return Err(bad("the scheme must be wss:// (or ws:// to this machine)")),
        };
        let host = uri.host().filter(|h| !h.is_empty()).ok_or(bad("no host"))?;
        Ok(Self {
            tls,
            host: host.to_owned(),
            port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
        })
    }

    /// The host without the brackets of an IPv6 address.
    fn bare_host(&self) -> &str {
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host)
    }
}

/// The TLS client settings: Mozilla's roots plus the CA file's certificates.
fn client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, Error> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        for cert in read_ca_file(path)? {
            roots.add(cert).map_err(|source| Error::CaCertificate {
                path: path.to_owned(),
                source,
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(Error::TlsConfig)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // The WebSocket upgrade is HTTP/1.1 (RFC 6455).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The certificates of a PEM file; at least one.
fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let pem_bytes = std::fs::read(path).map_err(|source| Error::CaFileRead {
        path: path.to_owned(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem_bytes)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|source| Error::CaFilePem {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(Error::CaFileEmpty {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// A failed TLS handshake as the caller needs it: a refused certificate
/// says why; anything else (not a TLS server, reset) keeps rustls' words.
fn tls_failure(url: &str, host: &str, error: io::Error) -> Error {
    let certificate = match error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(detail)) => detail.clone(),
        _ => {
            return Error::Tls {
                url: url.to_owned(),
                source: error,
            };
        }
    };
    use rustls::CertificateError as E;
    let problem = match &certificate {
        E::UnknownIssuer => CertificateProblem::UnknownIssuer,
        E::Expired | E::ExpiredContext { .. } => CertificateProblem::Expired,
        E::NotValidYet | E::NotValidYetContext { .. } => CertificateProblem::NotValidYet,
        E::NotValidForName | E::NotValidForNameContext { .. } => CertificateProblem::WrongName,
        E::Revoked => CertificateProblem::Revoked,
        _ => CertificateProblem::Invalid,
    };
    Error::Certificate {
        host: host.to_owned(),
        problem,
        detail: certificate,
    }
}

/// The connection under the WebSocket: TCP, or TLS over TCP.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_this_machine_and_others_are_not() {
        for host in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
            "[::ffff:127.0.0.1]",
            "localhost",
            "LOCALHOST",
            "localhost.",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "10.0.0.1",
            "192.0.2.1",
            "0.0.0.0",
            "[::]",
            "[2001:db8::1]",
            "example.com",
            "localhost.example.com",
            "mylocalhost",
            "",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[tokio::test]
    async fn ws_to_another_host_is_refused_before_connecting() {
        let refused = Signaling::connect("ws://192.0.2.1:7880", &ConnectOptions::default()).await;
        match refused {
            Err(Error::Insecure { host }) => assert_eq!(host, "192.0.2.1"),
            other => panic!("expected the insecure refusal, got {other:?}"),
        }
        let message = Error::Insecure {
            host: "example.com".into(),
        }
        .to_string();
        assert!(message.contains("clear text"), "{message}");
        assert!(message.contains("wss://"), "{message}");
    }

    #[tokio::test]
    async fn urls_that_cannot_be_used_say_why() {
        for url in ["http://127.0.0.1:7880", "127.0.0.1:7880", "wss://"] {
            let result = Signaling::connect(url, &ConnectOptions::default()).await;
            assert!(
                matches!(result, Err(Error::BadUrl { .. })),
                "{url}: {result:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_missing_or_empty_ca_file_is_refused_before_connecting() {
        let missing = ConnectOptions {
            ca_file: Some(PathBuf::from("/nonexistent/hush-ca.pem")),
            insecure: false,
        };
        let result = Signaling::connect("wss://192.0.2.1:7880", &missing).await;
        assert!(
            matches!(result, Err(Error::CaFileRead { .. })),
            "{result:?}"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let options = ConnectOptions {
            ca_file: Some(empty),
            insecure: false,
        };
        let result = Signaling::connect("wss://192.0.2.1:7880", &options).await;
        assert!(
            matches!(result, Err(Error::CaFileEmpty { .. })),
            "{result:?}"
        );
    }
}
