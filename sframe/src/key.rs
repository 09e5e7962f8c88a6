//! Secret byte strings and SFrame key derivation (RFC 9605 §4.4.2).

use core::fmt;

use hkdf::Hkdf;
use sha2::{Sha256, Sha512};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::suite::{CipherSuite, HashAlg, NONCE_LEN};
use crate::{Counter, KeyId};

/// Secret bytes: zeroized on drop, compared in constant time, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps secret bytes (the caller's copy is theirs to zeroize).
    pub fn new(bytes: &[u8]) -> Self {
        Self(bytes.to_vec())
    }

    /// The secret bytes. Handle with care: never log them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for Secret {
    fn from(v: Vec<u8>) -> Self {
        Self(v)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret([redacted; {} bytes])", self.0.len())
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for Secret {}

/// The per-KID key and salt derived from a base key.
#[derive(Clone, PartialEq, Eq)]
pub struct DerivedKey {
    /// HKDF-Extract("", base_key).
    pub(crate) secret: Secret,
    /// sframe_key, Nk bytes.
    pub(crate) key: Secret,
    /// sframe_salt, Nn bytes.
    pub(crate) salt: Zeroizing<[u8; NONCE_LEN]>,
}

impl fmt::Debug for DerivedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DerivedKey([redacted])")
    }
}

impl DerivedKey {
    /// Derives sframe_key and sframe_salt for `kid` from `base_key`.
    pub fn derive(suite: CipherSuite, kid: KeyId, base_key: &[u8]) -> Self {
        let key_label = key_label(suite, kid);
        let salt_label = salt_label(suite, kid);
        let mut key = vec![0u8; suite.key_len()];
        let mut salt = Zeroizing::new([0u8; NONCE_LEN]);
        // HKDF-Extract with an empty salt, then two expands (§4.4.2).
        let secret = match suite.hash() {
            HashAlg::Sha256 => {
                let (prk, hk) = Hkdf::<Sha256>::extract(None, base_key);
                expand_ok(hk.expand(&key_label, &mut key));
                expand_ok(hk.expand(&salt_label, salt.as_mut_slice()));
                prk.to_vec()
            }
            HashAlg::Sha512 => {
                let (prk, hk) = Hkdf::<Sha512>::extract(None, base_key);
                expand_ok(hk.expand(&key_label, &mut key));
                expand_ok(hk.expand(&salt_label, salt.as_mut_slice()));
                prk.to_vec()
            }
        };
        Self {
            secret: Secret::from(secret),
            key: Secret::from(key),
            salt,
        }
    }

    /// sframe_secret, the HKDF pseudorandom key. Never log it.
    pub fn sframe_secret(&self) -> &Secret {
        &self.secret
    }

    /// sframe_key, the AEAD key. Never log it.
    pub fn sframe_key(&self) -> &Secret {
        &self.key
    }

    /// sframe_salt, XORed with the counter to form nonces.
    pub fn sframe_salt(&self) -> &[u8; NONCE_LEN] {
        &self.salt
    }

    /// The nonce for `ctr`: sframe_salt XOR CTR as a big-endian Nn-byte integer (§4.4.3).
    pub fn nonce(&self, ctr: Counter) -> [u8; NONCE_LEN] {
        nonce(&self.salt, ctr)
    }
}

/// sframe_salt XOR CTR, big-endian over Nn bytes (§4.4.3).
pub(crate) fn nonce(salt: &[u8; NONCE_LEN], ctr: Counter) -> [u8; NONCE_LEN] {
    let mut n = *salt;
    for (dst, src) in n[NONCE_LEN - 8..].iter_mut().zip(ctr.0.to_be_bytes()) {
        *dst ^= src;
    }
    n
}

/// "SFrame 1.0 Secret key " + KID (8 bytes BE) + cipher suite (2 bytes BE).
pub fn key_label(suite: CipherSuite, kid: KeyId) -> Vec<u8> {
    label(b"SFrame 1.0 Secret key ", suite, kid)
}

/// "SFrame 1.0 Secret salt " + KID (8 bytes BE) + cipher suite (2 bytes BE).
pub fn salt_label(suite: CipherSuite, kid: KeyId) -> Vec<u8> {
    label(b"SFrame 1.0 Secret salt ", suite, kid)
}

fn label(prefix: &[u8], suite: CipherSuite, kid: KeyId) -> Vec<u8> {
    let mut l = Vec::with_capacity(prefix.len() + 10);
    l.extend_from_slice(prefix);
    l.extend_from_slice(&kid.0.to_be_bytes());
    l.extend_from_slice(&suite.id().to_be_bytes());
    l
}

/// HKDF-Expand only fails for outputs over 255 * Nh bytes; ours are at most 48.
fn expand_ok(r: Result<(), hkdf::InvalidLength>) {
    #[allow(clippy::expect_used)]
    r.expect("HKDF output of at most 48 bytes is within 255 * Nh");
}
