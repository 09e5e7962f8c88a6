//! The only IO of this crate: the identity key file and the known-peers
//! (trust on first use) file. Storage of known peers sits behind
//! [`PeerStore`] so callers and tests can keep it elsewhere.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::identity::{Identity, PublicIdentity};

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `contents` to `path` atomically (temporary file, then rename)
/// with mode 0600.
fn write_private(path: &Path, contents: &[u8]) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    // The mode above only applies to new files.
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io(&tmp))?;
    f.write_all(contents).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))
}

/// Saves an identity as a PKCS#8 PEM file with mode 0600.
pub fn save_identity(path: &Path, identity: &Identity) -> Result<(), Error> {
    let pem = identity.to_pkcs8_pem().ok_or_else(|| Error::BadKeyFile {
        path: path.to_owned(),
    })?;
    write_private(path, pem.as_bytes())
}

/// Loads an identity, refusing a file that group or others can read.
pub fn load_identity(path: &Path) -> Result<Identity, Error> {
    let meta = fs::metadata(path).map_err(io(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::InsecureKeyFile {
            path: path.to_owned(),
            mode,
        });
    }
    let pem = zeroize::Zeroizing::new(fs::read_to_string(path).map_err(io(path))?);
    Identity::from_pkcs8_pem(&pem).ok_or_else(|| Error::BadKeyFile {
        path: path.to_owned(),
    })
}

/// Where the known-peers list lives.
pub trait PeerStore {
    /// The stored text, or `None` if nothing was stored yet.
    fn load(&self) -> Result<Option<String>, Error>;
    /// Replaces the stored text.
    fn save(&self, contents: &str) -> Result<(), Error>;
    /// A name for error messages.
    fn location(&self) -> PathBuf;
}

/// A [`PeerStore`] in a file (written atomically, mode 0600).
#[derive(Debug, Clone)]
pub struct FilePeerStore(pub PathBuf);

impl PeerStore for FilePeerStore {
    fn load(&self) -> Result<Option<String>, Error> {
        match fs::read_to_string(&self.0) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&self.0)(e)),
        }
    }

    fn save(&self, contents: &str) -> Result<(), Error> {
        write_private(&self.0, contents.as_bytes())
    }

    fn location(&self) -> PathBuf {
        self.0.clone()
    }
}

/// What the known-peers list says about a peer's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerStatus {
    /// First time seen: now pinned.
    New,
    /// Same identity as pinned, not yet verified by safety number.
    Known,
    /// Same identity as pinned, and the user verified the safety number.
    Verified,
    /// A different identity than pinned: show this loudly. The pin is
    /// not replaced until the user accepts the new identity.
    IdentityChanged {
        /// The pinned identity's fingerprint.
        pinned: String,
        /// The identity now presented.
        presented: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerFile {
    version: u32,
    peers: BTreeMap<String, PinnedPeer>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PinnedPeer {
    /// Hex of the 32-byte Ed25519 identity key.
    identity: String,
    verified: bool,
}

/// Pins each peer's identity key on first use (format: JSON, version 1,
/// `{"version":1,"peers":{NAME:{"identity":HEX,"verified":BOOL}}}`).
pub struct KnownPeers<S: PeerStore> {
    store: S,
    file: PeerFile,
}

impl<S: PeerStore> KnownPeers<S> {
    /// Loads the list; a corrupt file is an error and is left as it is.
    pub fn open(store: S) -> Result<Self, Error> {
        let file = match store.load()? {
            None => PeerFile {
                version: 1,
                peers: BTreeMap::new(),
            },
            Some(text) => {
                let corrupt = |why: String| Error::CorruptPeerFile {
                    path: store.location(),
                    why,
                };
                let file: PeerFile =
                    serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
                if file.version != 1 {
                    return Err(corrupt(format!("unknown version {}", file.version)));
                }
                for (name, peer) in &file.peers {
                    if decode_identity(&peer.identity).is_none() {
                        return Err(corrupt(format!("bad identity key for {name:?}")));
                    }
                }
                file
            }
        };
        Ok(Self { store, file })
    }

    /// Checks `identity` against the pin for `name`, pinning it if new.
    pub fn check(&mut self, name: &str, identity: &PublicIdentity) -> Result<PeerStatus, Error> {
        let presented = hex::encode(identity.to_bytes());
        let status = match self.file.peers.get(name) {
            None => {
                self.file.peers.insert(
                    name.to_owned(),
                    PinnedPeer {
                        identity: presented,
                        verified: false,
                    },
                );
                self.persist()?;
                PeerStatus::New
            }
            Some(p) if p.identity == presented => {
                if p.verified {
                    PeerStatus::Verified
                } else {
                    PeerStatus::Known
                }
            }
            Some(p) => PeerStatus::IdentityChanged {
                pinned: decode_identity(&p.identity)
                    .map_or_else(|| p.identity.clone(), |i| i.fingerprint()),
                presented: identity.fingerprint(),
            },
        };
        Ok(status)
    }

    /// Pins `identity` for `name` as verified (the user compared safety
    /// numbers); replaces a changed identity only through this call.
    pub fn mark_verified(&mut self, name: &str, identity: &PublicIdentity) -> Result<(), Error> {
        self.file.peers.insert(
            name.to_owned(),
            PinnedPeer {
                identity: hex::encode(identity.to_bytes()),
                verified: true,
            },
        );
        self.persist()
    }

    fn persist(&self) -> Result<(), Error> {
        let text =
            serde_json::to_string_pretty(&self.file).map_err(|e| Error::CorruptPeerFile {
                path: self.store.location(),
                why: e.to_string(),
            })?;
        self.store.save(&text)
    }
}

fn decode_identity(hex_key: &str) -> Option<PublicIdentity> {
    let bytes: [u8; 32] = hex::decode(hex_key).ok()?.try_into().ok()?;
    PublicIdentity::from_bytes(&bytes)
}
