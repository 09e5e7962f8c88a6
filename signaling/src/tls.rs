//! TLS on the listening port: `wss://…/v1/ws`, `https://…/healthz` and
//! `https://…/metrics` (`hush-server --tls-cert FILE --tls-key FILE`).
//!
//! The certificate chain and its private key come from PEM files and can be
//! read again while the server runs ([`ServerTls::reload`]; `hush-server`
//! does it on SIGHUP). A reload changes what new handshakes are offered;
//! connections already open keep the session they negotiated. A reload that
//! fails changes nothing.
//!
//! rustls runs with the *ring* provider, chosen here for every config: str0m
//! in the same process uses aws-lc-rs for DTLS, so no process-wide default
//! provider is installed or assumed.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::pki_types::pem::{self, PemObject as _};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;
use zeroize::Zeroizing;

/// A server's TLS certificate and key, reloadable from their PEM files.
///
/// Clones share the certificate: a reload through one is seen by all.
#[derive(Clone)]
pub struct ServerTls {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: Arc<CurrentCert>,
    acceptor: TlsAcceptor,
}

/// Why a certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file is not valid PEM.
    #[error("{}: not valid PEM: {source}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        source: pem::Error,
    },
    /// The certificate file holds no `CERTIFICATE` block.
    #[error("{}: no certificate (PEM `CERTIFICATE` block) found", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no private key.
    #[error("{}: no private key (PEM PKCS#8, RSA or SEC1 block) found", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The leaf certificate cannot be parsed.
    #[error("{}: unusable certificate: {source}", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// The private key cannot be used (malformed, or an unsupported algorithm).
    #[error("{}: unusable private key: {source}", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
    /// The private key is not the leaf certificate's.
    #[error("the key in {} does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
}

impl ServerTls {
    /// Reads a certificate chain (PEM, leaf first) and its private key
    /// (PEM: PKCS#8, RSA or SEC1) and checks that they belong together.
    pub fn from_pem_files(
        cert_path: impl Into<PathBuf>,
        key_path: impl Into<PathBuf>,
    ) -> Result<Self, TlsError> {
        let (cert_path, key_path) = (cert_path.into(), key_path.into());
        let certified = load(&cert_path, &key_path)?;
        let current = Arc::new(CurrentCert(RwLock::new(Arc::new(certified))));
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&current) as Arc<dyn ResolvesServerCert>);
        // hyper serves HTTP/1.1 only; WebSocket upgrades need it.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            cert_path,
            key_path,
            current,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Reads both files again and, if they hold a valid pair, offers it to
    /// new connections; on error the current certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let certified = load(&self.cert_path, &self.key_path)?;
        self.current.replace(Arc::new(certified));
        Ok(())
    }

    /// The certificate chain file.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The private key file.
    pub fn key_path(&self) -> &Path {
        &self.key_path
    }

    /// What accepts TLS on a TCP connection.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }
}

#[cfg(test)]
impl ServerTls {
    /// The leaf certificate (DER) offered to new connections.
    fn leaf(&self) -> Option<CertificateDer<'static>> {
        self.current.get().cert.first().cloned()
    }
}

impl fmt::Debug for ServerTls {
    /// The file names only: never key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

/// The ring provider (see the module docs for why it is explicit).
/// The TLS client settings a node uses to reach the other nodes of its
/// cluster at their `wss://` URLs: Mozilla's roots plus the certificates of
/// `ca_file` (PEM), if given.
pub fn node_client_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let pem = std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| TlsError::Pem {
                path: path.to_owned(),
                source,
            })?;
        if certs.is_empty() {
            return Err(TlsError::NoCertificate {
                path: path.to_owned(),
            });
        }
        for cert in certs {
            roots.add(cert).map_err(|source| TlsError::BadCertificate {
                path: path.to_owned(),
                source,
            })?;
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // The WebSocket upgrade is HTTP/1.1 (RFC 6455).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks a certificate chain and its key.
fn load(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path)
            .map(Zeroizing::new)
            .map_err(|source| TlsError::Read {
                path: path.to_owned(),
                source,
            })
    };
    let cert_pem = read(cert_path)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            path: cert_path.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }
    let key_pem = read(key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|source| match source {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: key_path.to_owned(),
        },
        source => TlsError::Pem {
            path: key_path.to_owned(),
            source,
        },
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
        },
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
            TlsError::BadCertificate {
                path: cert_path.to_owned(),
                source: e,
            }
        }
        source => TlsError::BadKey {
            path: key_path.to_owned(),
            source,
        },
    })
}

/// The certificate offered to every new handshake, replaced by a reload.
struct CurrentCert(RwLock<Arc<CertifiedKey>>);

impl CurrentCert {
    fn get(&self) -> Arc<CertifiedKey> {
        // Nothing panics while holding the lock; a poisoned one still holds
        // a whole `Arc`.
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn replace(&self, certified: Arc<CertifiedKey>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = certified;
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

impl fmt::Debug for CurrentCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CurrentCert([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: PathBuf,
    }

    impl Files {
        fn new(tag: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("hush-tls-unit-{}-{tag}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            Self { dir }
        }

        fn write(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.dir.join(name);
            std::fs::write(&path, contents).expect("write");
            path
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A self-signed certificate for `localhost` and its key, in PEM.
    fn self_signed() -> (String, String) {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("rcgen");
        (cert.pem(), signing_key.serialize_pem())
    }

    #[test]
    fn a_matching_pair_loads_and_debug_shows_no_key() {
        let files = Files::new("ok");
        let (cert, key) = self_signed();
        let tls =
            ServerTls::from_pem_files(files.write("c.pem", &cert), files.write("k.pem", &key))
                .expect("loads");
        let debug = format!("{tls:?}");
        assert!(debug.contains("k.pem"), "{debug}");
        assert!(!debug.contains("PRIVATE"), "{debug}");
        let der = CertificateDer::from_pem_slice(cert.as_bytes()).expect("der");
        assert_eq!(tls.leaf(), Some(der));
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let files = Files::new("mismatch");
        let (cert, _) = self_signed();
        let (_, other_key) = self_signed();
        let err = ServerTls::from_pem_files(
            files.write("c.pem", &cert),
            files.write("k.pem", &other_key),
        )
        .map(|_| ())
        .expect_err("mismatch");
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
    }

    #[test]
    fn missing_and_empty_files_say_which() {
        let files = Files::new("missing");
        let (cert, key) = self_signed();
        let (c, k) = (files.write("c.pem", &cert), files.write("k.pem", &key));
        let err = ServerTls::from_pem_files(files.dir.join("nope.pem"), &k)
            .map(|_| ())
            .expect_err("missing");
        assert!(matches!(err, TlsError::Read { .. }), "{err:?}");
        let empty = files.write("empty.pem", "");
        let err = ServerTls::from_pem_files(&empty, &k)
            .map(|_| ())
            .expect_err("no cert");
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");
        // A certificate where the key should be.
        let err = ServerTls::from_pem_files(&c, &c)
            .map(|_| ())
            .expect_err("no key");
        assert!(matches!(err, TlsError::NoKey { .. }), "{err:?}");
    }

    #[test]
    fn a_failed_reload_keeps_the_current_certificate_and_a_good_one_replaces_it() {
        let files = Files::new("reload");
        let (cert, key) = self_signed();
        let (c, k) = (files.write("c.pem", &cert), files.write("k.pem", &key));
        let tls = ServerTls::from_pem_files(&c, &k).expect("loads");
        let before = tls.leaf();

        let (new_cert, new_key) = self_signed();
        files.write("c.pem", &new_cert);
        let err = tls.reload().expect_err("the old key does not match");
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
        assert_eq!(tls.leaf(), before);

        files.write("k.pem", &new_key);
        tls.reload().expect("reloads");
        let after = CertificateDer::from_pem_slice(new_cert.as_bytes()).expect("der");
        assert_eq!(tls.leaf(), Some(after));
        assert_ne!(tls.leaf(), before);
    }
}
