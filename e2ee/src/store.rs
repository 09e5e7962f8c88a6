//! The only IO of this crate: the identity key file and the known-peers
//! (trust on first use) file. Storage of known peers sits behind
//! [`PeerStore`] so callers and tests can keep it elsewhere.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::de::IgnoredAny;
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

/// What the known-peers list says about a peer's identity. The identity
/// key is what is pinned; the display name comes from the signaling server,
/// which nothing signs, so a name is only ever a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerStatus {
    /// First time seen: now pinned under the name given.
    New,
    /// Same identity as pinned under this name, not yet verified by
    /// safety number.
    Known,
    /// Same identity as pinned under this name, and the user verified the
    /// safety number.
    Verified,
    /// This name is pinned to a different identity: show this loudly.
    /// The presented identity is not pinned until the user verifies it.
    IdentityChanged {
        /// The pinned identity's fingerprint.
        pinned: String,
        /// The identity now presented.
        presented: String,
    },
    /// This identity is pinned under another name: the server calls a
    /// known peer by a different name. Show this loudly, with the name as
    /// the server's claim; the pin is not changed.
    NameChanged {
        /// The name this identity was pinned under.
        pinned_name: String,
    },
}

/// The file, in either version: `P` is the pin of that version, or
/// `IgnoredAny` to read the version first.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerFile<P> {
    version: u32,
    peers: BTreeMap<String, P>,
}

/// A version 1 pin, keyed by display name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PinV1 {
    /// Hex of the 32-byte Ed25519 identity key.
    identity: String,
    verified: bool,
}

/// A version 2 pin, keyed by hex of the 32-byte Ed25519 identity key.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PinV2 {
    /// The name the identity was first seen (or verified) under.
    name: String,
    verified: bool,
}

/// One entry of the known-peers list.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PinnedPeer {
    /// The pinned identity key.
    pub identity: PublicIdentity,
    /// The name it was first seen, or last verified, under.
    pub name: String,
    /// Whether the user verified the safety number.
    pub verified: bool,
}

/// Pins each peer's identity key on first use, with the name it was first
/// seen under. Format: JSON, version 2,
/// `{"version":2,"peers":{IDENTITY_HEX:{"name":NAME,"verified":BOOL}}}`;
/// a version 1 file (`{"version":1,"peers":{NAME:{"identity":HEX,
/// "verified":BOOL}}}`) is migrated in memory and written as version 2 on
/// the next save.
pub struct KnownPeers<S: PeerStore> {
    store: S,
    /// Keyed by the identity's 32-byte encoding. At most one pin per name:
    /// `check` pins a new identity only under a free name, and
    /// `mark_verified` removes the old pin of the name it takes.
    pins: BTreeMap<[u8; 32], PinnedPeer>,
}

impl<S: PeerStore> KnownPeers<S> {
    /// Loads the list; a corrupt file is an error and is left as it is.
    pub fn open(store: S) -> Result<Self, Error> {
        let pins = match store.load()? {
            None => BTreeMap::new(),
            Some(text) => parse(&text).map_err(|why| Error::CorruptPeerFile {
                path: store.location(),
                why,
            })?,
        };
        Ok(Self { store, pins })
    }

    /// Checks `identity`, presented under the server's `name`, against the
    /// pins, pinning it under `name` if both are new.
    pub fn check(&mut self, name: &str, identity: &PublicIdentity) -> Result<PeerStatus, Error> {
        let key = identity.to_bytes();
        if let Some(pin) = self.pins.get(&key) {
            return Ok(if pin.name != name {
                PeerStatus::NameChanged {
                    pinned_name: pin.name.clone(),
                }
            } else if pin.verified {
                PeerStatus::Verified
            } else {
                PeerStatus::Known
            });
        }
        if let Some(pin) = self.pinned_under(name) {
            return Ok(PeerStatus::IdentityChanged {
                pinned: pin.identity.fingerprint(),
                presented: identity.fingerprint(),
            });
        }
        let mut next = self.pins.clone();
        next.insert(
            key,
            PinnedPeer {
                identity: *identity,
                name: name.to_owned(),
                verified: false,
            },
        );
        self.commit(next)?;
        Ok(PeerStatus::New)
    }

    /// Pins `identity` as verified under `name` (the user compared safety
    /// numbers). This is the only way a pin changes: another identity
    /// pinned under `name` is removed (the user accepted the new identity
    /// for this name), and an `identity` pinned under another name is
    /// renamed to `name`.
    pub fn mark_verified(&mut self, name: &str, identity: &PublicIdentity) -> Result<(), Error> {
        let key = identity.to_bytes();
        let mut next = self.pins.clone();
        next.retain(|k, pin| *k == key || pin.name != name);
        next.insert(
            key,
            PinnedPeer {
                identity: *identity,
                name: name.to_owned(),
                verified: true,
            },
        );
        self.commit(next)
    }

    /// The pinned identities, in the order of their encoding.
    pub fn pins(&self) -> impl Iterator<Item = &PinnedPeer> {
        self.pins.values()
    }

    /// The pin held under `name`, if any. A linear scan: a personal list
    /// holds tens of peers, and a second index would be one more thing to
    /// keep in step with the first.
    fn pinned_under(&self, name: &str) -> Option<&PinnedPeer> {
        self.pins.values().find(|pin| pin.name == name)
    }

    /// Saves `pins`, then (only if that worked) makes them the current list.
    fn commit(&mut self, pins: BTreeMap<[u8; 32], PinnedPeer>) -> Result<(), Error> {
        let file = PeerFile {
            version: 2,
            peers: pins
                .iter()
                .map(|(key, pin)| {
                    (
                        hex::encode(key),
                        PinV2 {
                            name: pin.name.clone(),
                            verified: pin.verified,
                        },
                    )
                })
                .collect(),
        };
        let text = serde_json::to_string_pretty(&file).map_err(|e| Error::CorruptPeerFile {
            path: self.store.location(),
            why: e.to_string(),
        })?;
        self.store.save(&text)?;
        self.pins = pins;
        Ok(())
    }
}

/// Parses a known-peers file of either version into pins by identity.
fn parse(text: &str) -> Result<BTreeMap<[u8; 32], PinnedPeer>, String> {
    let header: PeerFile<IgnoredAny> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut pins = BTreeMap::new();
    match header.version {
        1 => {
            let file: PeerFile<PinV1> = serde_json::from_str(text).map_err(|e| e.to_string())?;
            // Version 1 may pin one identity under two names. Iterating the
            // BTreeMap in name order, the first name keeps the identity (with
            // its `verified`); the later names are dropped, so the identity
            // will be reported as `NameChanged` under them.
            for (name, v1) in file.peers {
                let identity = decode_identity(&v1.identity)
                    .ok_or_else(|| format!("bad identity key for {name:?}"))?;
                pins.entry(identity.to_bytes()).or_insert(PinnedPeer {
                    identity,
                    name,
                    verified: v1.verified,
                });
            }
        }
        2 => {
            let file: PeerFile<PinV2> = serde_json::from_str(text).map_err(|e| e.to_string())?;
            let mut names = BTreeSet::new();
            for (hex_key, v2) in file.peers {
                let identity = decode_identity(&hex_key)
                    .ok_or_else(|| format!("bad identity key {hex_key:?}"))?;
                if !names.insert(v2.name.clone()) {
                    return Err(format!("two identities pinned as {:?}", v2.name));
                }
                // Hex in upper and lower case decodes to the same key.
                if pins
                    .insert(
                        identity.to_bytes(),
                        PinnedPeer {
                            identity,
                            name: v2.name,
                            verified: v2.verified,
                        },
                    )
                    .is_some()
                {
                    return Err(format!("identity {hex_key:?} pinned twice"));
                }
            }
        }
        other => return Err(format!("unknown version {other}")),
    }
    Ok(pins)
}

fn decode_identity(hex_key: &str) -> Option<PublicIdentity> {
    let bytes: [u8; 32] = hex::decode(hex_key).ok()?.try_into().ok()?;
    PublicIdentity::from_bytes(&bytes)
}
