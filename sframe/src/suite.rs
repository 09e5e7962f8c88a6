//! The five RFC 9605 cipher suites (§4.5, §8.1) and the AEAD backends.

use crate::Error;

/// An SFrame cipher suite: the AEAD and the hash used for key derivation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CipherSuite {
    /// 0x0001: AES-128-CTR with HMAC-SHA256, 80-bit tag.
    AesCtr128HmacSha256_80,
    /// 0x0002: AES-128-CTR with HMAC-SHA256, 64-bit tag.
    AesCtr128HmacSha256_64,
    /// 0x0003: AES-128-CTR with HMAC-SHA256, 32-bit tag.
    AesCtr128HmacSha256_32,
    /// 0x0004: AES-128-GCM, HKDF-SHA256, 128-bit tag (hush's default).
    AesGcm128Sha256,
    /// 0x0005: AES-256-GCM, HKDF-SHA512, 128-bit tag.
    AesGcm256Sha512,
}

/// Every suite, in registry order.
pub const ALL_SUITES: [CipherSuite; 5] = [
    CipherSuite::AesCtr128HmacSha256_80,
    CipherSuite::AesCtr128HmacSha256_64,
    CipherSuite::AesCtr128HmacSha256_32,
    CipherSuite::AesGcm128Sha256,
    CipherSuite::AesGcm256Sha512,
];

/// Hash function used by HKDF (and HMAC for the CTR suites).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HashAlg {
    Sha256,
    Sha512,
}

impl CipherSuite {
    /// The IANA registry value (RFC 9605 §8.1).
    pub fn id(self) -> u16 {
        match self {
            Self::AesCtr128HmacSha256_80 => 1,
            Self::AesCtr128HmacSha256_64 => 2,
            Self::AesCtr128HmacSha256_32 => 3,
            Self::AesGcm128Sha256 => 4,
            Self::AesGcm256Sha512 => 5,
        }
    }

    /// The suite with this registry value.
    pub fn from_id(id: u16) -> Result<Self, Error> {
        ALL_SUITES
            .into_iter()
            .find(|s| s.id() == id)
            .ok_or(Error::UnknownCipherSuite(id))
    }

    /// Nh: hash output size in bytes.
    pub fn hash_len(self) -> usize {
        match self.hash() {
            HashAlg::Sha256 => 32,
            HashAlg::Sha512 => 64,
        }
    }

    /// Nk: AEAD key size in bytes (for CTR suites, Nka + Nh).
    pub fn key_len(self) -> usize {
        match self {
            Self::AesGcm128Sha256 => 16,
            Self::AesGcm256Sha512 => 32,
            _ => 16 + 32,
        }
    }

    /// Nn: nonce size in bytes.
    pub fn nonce_len(self) -> usize {
        NONCE_LEN
    }

    /// Nt: authentication tag size in bytes.
    pub fn tag_len(self) -> usize {
        match self {
            Self::AesCtr128HmacSha256_80 => 10,
            Self::AesCtr128HmacSha256_64 => 8,
            Self::AesCtr128HmacSha256_32 => 4,
            Self::AesGcm128Sha256 | Self::AesGcm256Sha512 => 16,
        }
    }

    /// Whether this is one of the AES-CTR + HMAC suites of §4.5.1.
    pub fn is_ctr_hmac(self) -> bool {
        matches!(
            self,
            Self::AesCtr128HmacSha256_80
                | Self::AesCtr128HmacSha256_64
                | Self::AesCtr128HmacSha256_32
        )
    }

    pub(crate) fn hash(self) -> HashAlg {
        match self {
            Self::AesGcm256Sha512 => HashAlg::Sha512,
            _ => HashAlg::Sha256,
        }
    }
}

/// Nn, the same for every RFC 9605 suite.
pub const NONCE_LEN: usize = 12;

/// Largest tag of any suite.
pub const MAX_TAG_LEN: usize = 16;

/// Which implementation performs AES-GCM. The CTR + HMAC suites always use
/// RustCrypto: `ring` has no AES-CTR, and its HMAC measured slower here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// RustCrypto `aes-gcm` (pure Rust with AES-NI/CLMUL intrinsics).
    RustCrypto,
    /// `ring`'s assembly AES-GCM (cargo feature `ring`, on by default).
    #[cfg(feature = "ring")]
    Ring,
}

impl Backend {
    /// Every backend compiled into this build.
    pub const AVAILABLE: &'static [Backend] = &[
        Backend::RustCrypto,
        #[cfg(feature = "ring")]
        Backend::Ring,
    ];
}

impl Default for Backend {
    /// The fastest backend compiled in (measured, see BENCHMARKS.md).
    fn default() -> Self {
        #[cfg(feature = "ring")]
        {
            Backend::Ring
        }
        #[cfg(not(feature = "ring"))]
        {
            Backend::RustCrypto
        }
    }
}
