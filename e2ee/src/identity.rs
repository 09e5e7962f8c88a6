//! Device identities: Ed25519 key pairs and their public halves.

use core::fmt;

use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// A device's identity key pair. The private half is zeroized on drop and
/// never printed.
pub struct Identity {
    key: SigningKey,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({}, [redacted])", self.public().fingerprint())
    }
}

impl Identity {
    /// A new random identity.
    pub fn generate() -> Self {
        Self {
            key: SigningKey::generate(&mut rand::rng()),
        }
    }

    /// The identity from its 32-byte secret seed (tests and vectors).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(seed),
        }
    }

    /// The public identity other participants see and pin.
    pub fn public(&self) -> PublicIdentity {
        PublicIdentity(self.key.verifying_key())
    }

    /// Signs `message` (Ed25519, RFC 8032).
    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// The PKCS#8 PEM encoding of the private key (secret!).
    pub fn to_pkcs8_pem(&self) -> Option<Zeroizing<String>> {
        self.key.to_pkcs8_pem(LineEnding::LF).ok()
    }

    /// Parses a PKCS#8 PEM Ed25519 private key.
    pub fn from_pkcs8_pem(pem: &str) -> Option<Self> {
        SigningKey::from_pkcs8_pem(pem).ok().map(|key| Self { key })
    }
}

/// A public identity key: what a safety number is made of.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicIdentity(VerifyingKey);

impl PublicIdentity {
    /// The identity from its 32-byte encoding; `None` if not a valid point.
    pub fn from_bytes(bytes: &[u8; 32]) -> Option<Self> {
        VerifyingKey::from_bytes(bytes).ok().map(Self)
    }

    /// The 32-byte encoding.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// A short printable fingerprint: the first 8 bytes of SHA-256 of the
    /// key, as four groups of four hex digits.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        digest[..8]
            .chunks(2)
            .map(|c| format!("{:02x}{:02x}", c[0], c[1]))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// Verifies an Ed25519 signature strictly (no malleable encodings).
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let sig = Signature::from_bytes(signature);
        self.0.verify_strict(message, &sig).is_ok()
    }
}

impl fmt::Debug for PublicIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicIdentity({})", self.fingerprint())
    }
}

impl fmt::Display for PublicIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fingerprint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trips_and_debug_hides_the_key() {
        let id = Identity::from_seed(&[9u8; 32]);
        let pem = id.to_pkcs8_pem().expect("encodes");
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let back = Identity::from_pkcs8_pem(&pem).expect("parses");
        assert_eq!(back.public(), id.public());
        let dbg = format!("{id:?}");
        assert!(dbg.contains("redacted") && !dbg.contains("0909"), "{dbg}");
        assert!(
            Identity::from_pkcs8_pem(
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
            )
            .is_none()
        );
    }

    #[test]
    fn signatures_verify_only_for_their_message_and_key() {
        let id = Identity::from_seed(&[1u8; 32]);
        let other = Identity::from_seed(&[2u8; 32]);
        let sig = id.sign(b"hello");
        assert!(id.public().verify(b"hello", &sig));
        assert!(!id.public().verify(b"hellp", &sig));
        assert!(!other.public().verify(b"hello", &sig));
    }
}
