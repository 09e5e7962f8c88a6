//! Sending and receiving contexts: keys by KID, counters, replay windows.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use crate::Error;
use crate::aead::{Aad, FrameAead};
use crate::header::{Counter, Header, KeyId, MAX_HEADER_LEN};
use crate::key::{DerivedKey, nonce};
use crate::replay::{DEFAULT_REPLAY_WINDOW, MAX_REPLAY_WINDOW, ReplayWindow, Verdict};
use crate::suite::{Backend, CipherSuite, NONCE_LEN};
use zeroize::Zeroizing;

/// A KID's keyed AEAD and salt, ready for frames.
struct KeyState {
    aead: FrameAead,
    salt: Zeroizing<[u8; NONCE_LEN]>,
}

impl KeyState {
    fn new(
        suite: CipherSuite,
        backend: Backend,
        kid: KeyId,
        base_key: &[u8],
    ) -> Result<Self, Error> {
        let derived = DerivedKey::derive(suite, kid, base_key);
        Ok(Self {
            aead: FrameAead::new(suite, backend, derived.key.expose())?,
            salt: derived.salt.clone(),
        })
    }
}

struct SendKey {
    state: KeyState,
    /// Next counter to use; `None` once `u64::MAX` has been used.
    next_ctr: Option<u64>,
}

/// Encrypts outgoing frames: holds this sender's keys by KID, each with its
/// own counter, and the KID currently used for new frames.
///
/// Keys here are encryption-only (RFC 9605 §4.4.1); a KID is never reused
/// with a reset counter, because [`Sender::add_key`] refuses a KID that is
/// already installed.
pub struct Sender {
    suite: CipherSuite,
    backend: Backend,
    keys: KidMap<SendKey>,
    active: Option<KeyId>,
}

impl core::fmt::Debug for Sender {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Sender")
            .field("suite", &self.suite)
            .field("backend", &self.backend)
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .field("active", &self.active)
            .finish()
    }
}

impl Sender {
    /// A sender for `suite` on the default (fastest) backend.
    pub fn new(suite: CipherSuite) -> Self {
        Self::with_backend(suite, Backend::default())
    }

    /// A sender for `suite` on a chosen AEAD backend.
    pub fn with_backend(suite: CipherSuite, backend: Backend) -> Self {
        Self {
            suite,
            backend,
            keys: KidMap::default(),
            active: None,
        }
    }

    /// The suite every frame of this sender uses.
    pub fn suite(&self) -> CipherSuite {
        self.suite
    }

    /// Installs `base_key` under `kid` with its counter at 0.
    pub fn add_key(&mut self, kid: KeyId, base_key: &[u8]) -> Result<(), Error> {
        self.add_key_at(kid, base_key, Counter(0))
    }

    /// Installs `base_key` under `kid`, resuming at counter `first` (for a
    /// context restored from storage, RFC 9605 §9.1).
    pub fn add_key_at(&mut self, kid: KeyId, base_key: &[u8], first: Counter) -> Result<(), Error> {
        if self.keys.contains_key(&kid) {
            return Err(Error::DuplicateKeyId(kid));
        }
        let state = KeyState::new(self.suite, self.backend, kid, base_key)?;
        self.keys.insert(
            kid,
            SendKey {
                state,
                next_ctr: Some(first.0),
            },
        );
        if self.active.is_none() {
            self.active = Some(kid);
        }
        Ok(())
    }

    /// Makes `kid` the key used for new frames.
    pub fn set_active_key(&mut self, kid: KeyId) -> Result<(), Error> {
        if !self.keys.contains_key(&kid) {
            return Err(Error::UnknownKeyId(kid));
        }
        self.active = Some(kid);
        Ok(())
    }

    /// The KID used for new frames, if any.
    pub fn active_key(&self) -> Option<KeyId> {
        self.active
    }

    /// Erases the key for `kid`; returns whether it was installed.
    pub fn remove_key(&mut self, kid: KeyId) -> bool {
        if self.active == Some(kid) {
            self.active = None;
        }
        self.keys.remove(&kid).is_some()
    }

    /// The counter the next frame under `kid` will carry.
    pub fn next_counter(&self, kid: KeyId) -> Result<Counter, Error> {
        let key = self.keys.get(&kid).ok_or(Error::UnknownKeyId(kid))?;
        key.next_ctr
            .map(Counter)
            .ok_or(Error::CounterExhausted(kid))
    }

    /// Most bytes a frame can add to its plaintext (largest header plus tag).
    pub fn max_overhead(&self) -> usize {
        MAX_HEADER_LEN + self.suite.tag_len()
    }

    /// Encrypts a frame with the active key into `out`, returning the length
    /// written (header || ciphertext || tag). Allocation-free for metadata
    /// up to 111 bytes; `out` needs `plaintext.len() + max_overhead()` bytes
    /// to be always enough.
    pub fn encrypt_into(
        &mut self,
        metadata: &[u8],
        plaintext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, Error> {
        let kid = self.active.ok_or(Error::NoActiveKey)?;
        let tag_len = self.suite.tag_len();
        let key = self.keys.get_mut(&kid).ok_or(Error::UnknownKeyId(kid))?;
        let ctr = key.next_ctr.ok_or(Error::CounterExhausted(kid))?;
        let header = Header::new(kid, Counter(ctr)).encode();
        let hlen = header.as_bytes().len();
        let total = hlen + plaintext.len() + tag_len;
        if out.len() < total {
            return Err(Error::BufferTooSmall {
                needed: total,
                available: out.len(),
            });
        }
        // Reserve the counter before sealing: a (KID, CTR) pair is never
        // used twice, even if sealing fails part way (RFC 9605 §9.1).
        key.next_ctr = ctr.checked_add(1);
        let (hdr, rest) = out[..total].split_at_mut(hlen);
        hdr.copy_from_slice(header.as_bytes());
        let (body, tag) = rest.split_at_mut(plaintext.len());
        body.copy_from_slice(plaintext);
        let aad = Aad {
            header: header.as_bytes(),
            metadata,
        };
        key.state
            .aead
            .seal_in_place(&nonce(&key.state.salt, Counter(ctr)), aad, body, tag)?;
        Ok(total)
    }

    /// Encrypts a frame with the active key, returning header || ciphertext || tag.
    pub fn encrypt(&mut self, metadata: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        let mut out = vec![0u8; plaintext.len() + self.max_overhead()];
        let n = self.encrypt_into(metadata, plaintext, &mut out)?;
        out.truncate(n);
        Ok(out)
    }
}

struct RecvKey {
    state: KeyState,
    window: ReplayWindow,
}

/// Decrypts incoming frames: holds many KIDs at once (one per sender and
/// generation), each with its own replay window.
pub struct Receiver {
    suite: CipherSuite,
    backend: Backend,
    window: u64,
    keys: KidMap<RecvKey>,
}

impl core::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Receiver")
            .field("suite", &self.suite)
            .field("backend", &self.backend)
            .field("replay_window", &self.window)
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Receiver {
    /// A receiver for `suite` on the default backend with a 1,024-frame window.
    pub fn new(suite: CipherSuite) -> Self {
        Self::with_backend(suite, Backend::default())
    }

    /// A receiver for `suite` on a chosen AEAD backend.
    pub fn with_backend(suite: CipherSuite, backend: Backend) -> Self {
        Self {
            suite,
            backend,
            window: DEFAULT_REPLAY_WINDOW,
            keys: KidMap::default(),
        }
    }

    /// Sets the replay window (1..=65536 frames) for keys added afterwards.
    pub fn with_replay_window(mut self, frames: u64) -> Result<Self, Error> {
        if !(1..=MAX_REPLAY_WINDOW).contains(&frames) {
            return Err(Error::InvalidReplayWindow(frames));
        }
        self.window = frames;
        Ok(self)
    }

    /// The suite every frame to this receiver must use.
    pub fn suite(&self) -> CipherSuite {
        self.suite
    }

    /// Installs `base_key` for frames under `kid`.
    pub fn add_key(&mut self, kid: KeyId, base_key: &[u8]) -> Result<(), Error> {
        if self.keys.contains_key(&kid) {
            return Err(Error::DuplicateKeyId(kid));
        }
        let state = KeyState::new(self.suite, self.backend, kid, base_key)?;
        self.keys.insert(
            kid,
            RecvKey {
                state,
                window: ReplayWindow::new(self.window),
            },
        );
        Ok(())
    }

    /// Erases the key for `kid`; returns whether it was installed.
    pub fn remove_key(&mut self, kid: KeyId) -> bool {
        self.keys.remove(&kid).is_some()
    }

    /// Whether a key for `kid` is installed.
    pub fn has_key(&self, kid: KeyId) -> bool {
        self.keys.contains_key(&kid)
    }

    /// Decrypts `frame` in place; returns its header and the plaintext, a
    /// sub-slice of `frame`. Never allocates for metadata up to 111 bytes.
    pub fn decrypt_in_place<'f>(
        &mut self,
        metadata: &[u8],
        frame: &'f mut [u8],
    ) -> Result<(Header, &'f mut [u8]), Error> {
        let (header, hlen) = Header::parse(frame)?;
        let key = self
            .keys
            .get_mut(&header.kid)
            .ok_or(Error::UnknownKeyId(header.kid))?;
        let tag_len = self.suite.tag_len();
        let min = hlen + tag_len;
        if frame.len() < min {
            return Err(Error::FrameTooShort {
                len: frame.len(),
                min,
            });
        }
        let (kid, ctr) = (header.kid, header.ctr);
        // Judge the counter before spending work on it; record it only
        // after the frame authenticates, so forgeries cannot burn counters.
        match key.window.check(ctr.0) {
            Verdict::Fresh => {}
            Verdict::Replayed => return Err(Error::Replayed { kid, ctr }),
            Verdict::TooOld => return Err(Error::OutsideReplayWindow { kid, ctr }),
        }
        let (hdr, rest) = frame.split_at_mut(hlen);
        let body_len = rest.len() - tag_len;
        let (body, tag) = rest.split_at_mut(body_len);
        let aad = Aad {
            header: hdr,
            metadata,
        };
        key.state
            .aead
            .open_in_place(&nonce(&key.state.salt, ctr), aad, body, tag)
            .map_err(|_| Error::AuthenticationFailed { kid, ctr })?;
        key.window.accept(ctr.0);
        Ok((header, body))
    }

    /// Decrypts `frame` into `out`, returning the header and plaintext length.
    pub fn decrypt_into(
        &mut self,
        metadata: &[u8],
        frame: &[u8],
        out: &mut [u8],
    ) -> Result<(Header, usize), Error> {
        let (needed, available) = (frame.len(), out.len());
        let buf = out
            .get_mut(..needed)
            .ok_or(Error::BufferTooSmall { needed, available })?;
        buf.copy_from_slice(frame);
        let (header, pt) = self.decrypt_in_place(metadata, buf)?;
        let (start, len) = (needed - pt.len() - self.suite.tag_len(), pt.len());
        out.copy_within(start..start + len, 0);
        Ok((header, len))
    }

    /// Decrypts `frame`, returning the plaintext.
    pub fn decrypt(&mut self, metadata: &[u8], frame: &[u8]) -> Result<Vec<u8>, Error> {
        let mut buf = frame.to_vec();
        let (_, pt) = self.decrypt_in_place(metadata, &mut buf)?;
        Ok(pt.to_vec())
    }
}

/// KID-keyed map with a cheap seeded hash: a frame costs one lookup, and
/// SipHash would be a visible share of a small frame's cost.
type KidMap<V> = HashMap<KeyId, V, KidHashBuilder>;

/// Builds [`KidHasher`]s with a per-map random seed, so an attacker who
/// picks KIDs cannot predict bucket collisions (lookups only: KIDs are
/// inserted by the application, never by the network).
#[derive(Clone)]
struct KidHashBuilder {
    seed: u64,
}

impl Default for KidHashBuilder {
    fn default() -> Self {
        // RandomState is seeded from the OS once per process and varied per instance.
        let seed = std::collections::hash_map::RandomState::new().hash_one(0x5f_7261_6d65u64);
        Self { seed }
    }
}

impl BuildHasher for KidHashBuilder {
    type Hasher = KidHasher;
    fn build_hasher(&self) -> KidHasher {
        KidHasher { state: self.seed }
    }
}

/// Folded-multiply hash of one u64 (the construction of foldhash/wyhash).
struct KidHasher {
    state: u64,
}

impl Hasher for KidHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, x: u64) {
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let m = u128::from(self.state ^ x) * u128::from(K);
        self.state = (m as u64) ^ ((m >> 64) as u64);
    }

    fn finish(&self) -> u64 {
        self.state
    }
}
