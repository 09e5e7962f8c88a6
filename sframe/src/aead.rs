//! The AEAD of each suite, keyed once and reused for every frame.
//!
//! Building the AES key schedule (and the HMAC pads) is a large part of the
//! cost of a small frame, so a [`FrameAead`] is made once per KID and kept.

use aes::Aes128;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes128Gcm, Aes256Gcm};
use ctr::cipher::{InnerIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::Error;
use crate::suite::{Backend, CipherSuite, NONCE_LEN};

/// Stack space for header || metadata before falling back to the heap.
const AAD_STACK: usize = 128;

/// Additional authenticated data in its two parts: header, then metadata.
#[derive(Debug, Clone, Copy)]
pub struct Aad<'a> {
    /// The encoded SFrame header (or, for a raw AEAD call, the whole AAD).
    pub header: &'a [u8],
    /// Application metadata, appended to the header.
    pub metadata: &'a [u8],
}

impl<'a> Aad<'a> {
    /// One contiguous AAD string.
    pub fn whole(aad: &'a [u8]) -> Self {
        Self {
            header: aad,
            metadata: &[],
        }
    }

    fn len(&self) -> usize {
        self.header.len() + self.metadata.len()
    }

    /// Runs `f` on the concatenated AAD, on the stack when it is small.
    fn with_contiguous<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        if self.metadata.is_empty() {
            return f(self.header);
        }
        let len = self.len();
        if len <= AAD_STACK {
            let mut buf = [0u8; AAD_STACK];
            buf[..self.header.len()].copy_from_slice(self.header);
            buf[self.header.len()..len].copy_from_slice(self.metadata);
            f(&buf[..len])
        } else {
            let mut v = Vec::with_capacity(len);
            v.extend_from_slice(self.header);
            v.extend_from_slice(self.metadata);
            f(&v)
        }
    }
}

/// A keyed AEAD for one suite: AEAD.Encrypt / AEAD.Decrypt of RFC 9605.
pub struct FrameAead {
    suite: CipherSuite,
    inner: Inner,
}

enum Inner {
    CtrHmac {
        aes: Box<Aes128>,
        mac: CtrMac,
    },
    Gcm128(Box<Aes128Gcm>),
    Gcm256(Box<Aes256Gcm>),
    #[cfg(feature = "ring")]
    Ring(Box<ring::aead::LessSafeKey>),
}

impl core::fmt::Debug for FrameAead {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "FrameAead({:?}, [redacted])", self.suite)
    }
}

impl FrameAead {
    /// Keys the suite's AEAD with `key` (Nk bytes).
    pub fn new(suite: CipherSuite, backend: Backend, key: &[u8]) -> Result<Self, Error> {
        if key.len() != suite.key_len() {
            return Err(Error::InvalidKeyLength {
                expected: suite.key_len(),
                got: key.len(),
            });
        }
        let bad_len = || Error::InvalidKeyLength {
            expected: suite.key_len(),
            got: key.len(),
        };
        let inner = match (suite, backend) {
            (s, _) if s.is_ctr_hmac() => {
                // §4.5.1: enc_key = key[..Nka], auth_key = key[Nka..].
                let (enc_key, auth_key) = key.split_at(16);
                Inner::CtrHmac {
                    aes: Box::new(Aes128::new_from_slice(enc_key).map_err(|_| bad_len())?),
                    mac: CtrMac::new(auth_key)?,
                }
            }
            #[cfg(feature = "ring")]
            (s, Backend::Ring) => {
                let alg = if s == CipherSuite::AesGcm128Sha256 {
                    &ring::aead::AES_128_GCM
                } else {
                    &ring::aead::AES_256_GCM
                };
                let unbound = ring::aead::UnboundKey::new(alg, key).map_err(|_| bad_len())?;
                Inner::Ring(Box::new(ring::aead::LessSafeKey::new(unbound)))
            }
            (CipherSuite::AesGcm128Sha256, _) => Inner::Gcm128(Box::new(
                Aes128Gcm::new_from_slice(key).map_err(|_| bad_len())?,
            )),
            _ => Inner::Gcm256(Box::new(
                Aes256Gcm::new_from_slice(key).map_err(|_| bad_len())?,
            )),
        };
        Ok(Self { suite, inner })
    }

    /// The suite this AEAD implements.
    pub fn suite(&self) -> CipherSuite {
        self.suite
    }

    /// Encrypts `buf` in place and writes the Nt-byte tag to `tag`.
    pub fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: Aad<'_>,
        buf: &mut [u8],
        tag: &mut [u8],
    ) -> Result<(), Error> {
        debug_assert_eq!(tag.len(), self.suite.tag_len());
        match &self.inner {
            Inner::CtrHmac { aes, mac } => {
                ctr_apply(aes, nonce, buf)?;
                let full = hmac_tag(mac, self.suite.tag_len(), nonce, aad, buf);
                tag.copy_from_slice(&full[..tag.len()]);
                Ok(())
            }
            Inner::Gcm128(c) => {
                let t = aad
                    .with_contiguous(|a| c.encrypt_inout_detached(nonce.into(), a, buf.into()))
                    .map_err(|_| Error::PayloadTooLong)?;
                tag.copy_from_slice(&t);
                Ok(())
            }
            Inner::Gcm256(c) => {
                let t = aad
                    .with_contiguous(|a| c.encrypt_inout_detached(nonce.into(), a, buf.into()))
                    .map_err(|_| Error::PayloadTooLong)?;
                tag.copy_from_slice(&t);
                Ok(())
            }
            #[cfg(feature = "ring")]
            Inner::Ring(k) => {
                let n = ring::aead::Nonce::assume_unique_for_key(*nonce);
                let t = aad
                    .with_contiguous(|a| {
                        k.seal_in_place_separate_tag(n, ring::aead::Aad::from(a), buf)
                    })
                    .map_err(|_| Error::PayloadTooLong)?;
                tag.copy_from_slice(t.as_ref());
                Ok(())
            }
        }
    }

    /// Verifies `tag` and decrypts `buf` in place. On failure `buf` is left
    /// as ciphertext or zeroed, never as unauthenticated plaintext.
    pub fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: Aad<'_>,
        buf: &mut [u8],
        tag: &[u8],
    ) -> Result<(), AuthFailed> {
        if tag.len() != self.suite.tag_len() {
            return Err(AuthFailed);
        }
        let ok = match &self.inner {
            Inner::CtrHmac { aes, mac } => {
                // Encrypt-then-MAC: check the tag before touching the ciphertext.
                let full = hmac_tag(mac, tag.len(), nonce, aad, buf);
                if bool::from(full[..tag.len()].ct_eq(tag)) {
                    ctr_apply(aes, nonce, buf).is_ok()
                } else {
                    false
                }
            }
            Inner::Gcm128(c) => aad
                .with_contiguous(|a| {
                    let t = aes_gcm::Tag::try_from(tag).map_err(|_| aes_gcm::Error)?;
                    c.decrypt_inout_detached(nonce.into(), a, (&mut *buf).into(), &t)
                })
                .is_ok(),
            Inner::Gcm256(c) => aad
                .with_contiguous(|a| {
                    let t = aes_gcm::Tag::try_from(tag).map_err(|_| aes_gcm::Error)?;
                    c.decrypt_inout_detached(nonce.into(), a, (&mut *buf).into(), &t)
                })
                .is_ok(),
            #[cfg(feature = "ring")]
            Inner::Ring(k) => {
                let n = ring::aead::Nonce::assume_unique_for_key(*nonce);
                match ring::aead::Tag::try_from(tag) {
                    Ok(t) => aad
                        .with_contiguous(|a| {
                            k.open_in_place_separate_tag(
                                n,
                                ring::aead::Aad::from(a),
                                t,
                                &mut *buf,
                                0..,
                            )
                            .map(|_| ())
                        })
                        .is_ok(),
                    Err(_) => false,
                }
            }
        };
        if ok {
            Ok(())
        } else {
            buf.fill(0);
            Err(AuthFailed)
        }
    }

    /// AEAD.Encrypt returning ct || tag (convenience for tests and tools).
    pub fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], pt: &[u8]) -> Result<Vec<u8>, Error> {
        let mut out = vec![0u8; pt.len() + self.suite.tag_len()];
        let (body, tag) = out.split_at_mut(pt.len());
        body.copy_from_slice(pt);
        self.seal_in_place(nonce, Aad::whole(aad), body, tag)?;
        Ok(out)
    }

    /// AEAD.Decrypt of ct || tag (convenience for tests and tools).
    pub fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        ct: &[u8],
    ) -> Result<Vec<u8>, AuthFailed> {
        let body_len = ct
            .len()
            .checked_sub(self.suite.tag_len())
            .ok_or(AuthFailed)?;
        let (body, tag) = ct.split_at(body_len);
        let mut out = body.to_vec();
        self.open_in_place(nonce, Aad::whole(aad), &mut out, tag)?;
        Ok(out)
    }
}

/// HMAC-SHA256 of the CTR suites, keyed once. Always RustCrypto's: with
/// SHA-NI it measured faster than `ring`'s (BENCHMARKS.md).
struct CtrMac(Box<Hmac<Sha256>>);

impl CtrMac {
    fn new(auth_key: &[u8]) -> Result<Self, Error> {
        <Hmac<Sha256> as KeyInit>::new_from_slice(auth_key)
            .map(|m| Self(Box::new(m)))
            .map_err(|_| Error::InvalidKeyLength {
                expected: 32,
                got: auth_key.len(),
            })
    }

    /// HMAC over the concatenation of `parts`.
    fn tag(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut m = (*self.0).clone();
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }
}

/// The tag did not verify; deliberately carries no detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthFailed;

/// AES-CTR with the initial counter block nonce || 0x00000000 (§4.5.1).
fn ctr_apply(aes: &Aes128, nonce: &[u8; NONCE_LEN], buf: &mut [u8]) -> Result<(), Error> {
    let mut iv = [0u8; 16];
    iv[..NONCE_LEN].copy_from_slice(nonce);
    let core =
        ctr::CtrCore::<Aes128, ctr::flavors::Ctr32BE>::inner_iv_init(aes.clone(), &iv.into());
    let mut cipher = ctr::cipher::StreamCipherCoreWrapper::from_core(core);
    // Fails only past 2^32 blocks (64 GiB) of keystream under one nonce.
    cipher
        .try_apply_keystream(buf)
        .map_err(|_| Error::PayloadTooLong)
}

/// HMAC over len(aad) || len(ct) || Nt || nonce || aad || ct (§4.5.1).
fn hmac_tag(
    mac: &CtrMac,
    tag_len: usize,
    nonce: &[u8; NONCE_LEN],
    aad: Aad<'_>,
    ct: &[u8],
) -> [u8; 32] {
    let mut lengths = [0u8; 24];
    lengths[..8].copy_from_slice(&(aad.len() as u64).to_be_bytes());
    lengths[8..16].copy_from_slice(&(ct.len() as u64).to_be_bytes());
    lengths[16..].copy_from_slice(&(tag_len as u64).to_be_bytes());
    mac.tag(&[&lengths, nonce, aad.header, aad.metadata, ct])
}
