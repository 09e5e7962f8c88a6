//! Media frames on the wire: the codec-aware clear prefix and SFrame
//! (docs/PROTOCOL.md §6), with one SFrame context for our own frames and
//! one per remote sender.

use std::collections::HashMap;

use hush_e2ee::{CandidateKey, KeyEvent, ParticipantId};
use hush_sframe::{CipherSuite, KeyId, Receiver, Sender};

use crate::Error;

/// The SFrame cipher suite of every hush media frame.
pub const MEDIA_SUITE: CipherSuite = CipherSuite::AesGcm128Sha256;

/// A codec whose frames hush carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// Opus audio: no clear prefix.
    Opus,
    /// VP8 video: the payload header stays clear (10 bytes on a key frame, 3 otherwise).
    Vp8,
}

/// Bytes at the start of `frame` that stay in clear (and are authenticated
/// as SFrame metadata) so the SFU and depacketizer can read them; at most
/// the frame's length (a shorter frame is refused by [`FrameCrypto::seal`]
/// and fails to open).
pub fn clear_prefix_len(codec: Codec, frame: &[u8]) -> usize {
    wanted_prefix_len(codec, frame).min(frame.len())
}

/// The clear prefix `frame`'s codec and first byte call for.
fn wanted_prefix_len(codec: Codec, frame: &[u8]) -> usize {
    match codec {
        Codec::Opus => 0,
        Codec::Vp8 if is_vp8_key_frame(frame) => 10,
        Codec::Vp8 => 3,
    }
}

/// Whether a VP8 frame is a key frame (bit 0 of the frame tag is 0, RFC 6386 §9.1).
pub fn is_vp8_key_frame(frame: &[u8]) -> bool {
    frame.first().is_some_and(|b| b & 0x01 == 0)
}

/// Seals our frames and opens everyone else's, following the key events
/// of the e2ee layer.
pub struct FrameCrypto {
    tx: Sender,
    rx: HashMap<ParticipantId, Receiver>,
}

impl core::fmt::Debug for FrameCrypto {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FrameCrypto")
            .field("send_kid", &self.tx.active_key())
            .field("senders", &self.rx.len())
            .finish()
    }
}

impl Default for FrameCrypto {
    fn default() -> Self {
        Self::new()
    }
}

/// A frame that arrived before its key: the caller may keep it briefly
/// and retry after the next key event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingKey {
    /// Whose frame.
    pub sender: ParticipantId,
    /// The KID it names.
    pub kid: KeyId,
}

impl FrameCrypto {
    /// No keys yet.
    pub fn new() -> Self {
        Self {
            tx: Sender::new(MEDIA_SUITE),
            rx: HashMap::new(),
        }
    }

    /// Applies a key event from `hush_e2ee::Group`.
    pub fn apply(&mut self, event: &KeyEvent) -> Result<(), Error> {
        match event {
            KeyEvent::UseSendKey { kid, base_key } => {
                let old = self.tx.active_key();
                self.tx.add_key(*kid, base_key.expose())?;
                self.tx.set_active_key(*kid)?;
                if let Some(old) = old.filter(|o| o != kid) {
                    self.tx.remove_key(old);
                }
            }
            KeyEvent::InstallReceiveKey {
                sender,
                kid,
                base_key,
            } => {
                let rx = self
                    .rx
                    .entry(*sender)
                    .or_insert_with(|| Receiver::new(MEDIA_SUITE));
                // A KID names one key of one sender: a second install of a
                // live one (a repeated or replayed key message, a key
                // derived again) changes nothing, and above all keeps the
                // key's replay window, which a fresh install would reset
                // (then every frame already seen under it would open again).
                // A key re-derived after its erasure is installed anew.
                if !rx.has_key(*kid) {
                    rx.add_key(*kid, base_key.expose())?;
                }
            }
            KeyEvent::RemoveReceiveKey { sender, kid } => {
                if let Some(rx) = self.rx.get_mut(sender) {
                    rx.remove_key(*kid);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Forgets a departed sender entirely.
    pub fn forget(&mut self, sender: ParticipantId) {
        self.rx.remove(&sender);
    }

    /// The KID our frames carry now, if we have a key.
    pub fn send_kid(&self) -> Option<KeyId> {
        self.tx.active_key()
    }

    /// Encrypts one encoded frame: clear prefix || SFrame(header || ct || tag).
    /// A VP8 frame shorter than its clear prefix is refused
    /// ([`Error::ShortFrame`]): its receiver would split it differently.
    pub fn seal(&mut self, codec: Codec, frame: &[u8]) -> Result<Vec<u8>, Error> {
        let clear = wanted_prefix_len(codec, frame);
        if frame.len() < clear {
            return Err(Error::ShortFrame {
                len: frame.len(),
                prefix: clear,
            });
        }
        let (prefix, payload) = frame.split_at(clear);
        let mut out = vec![0u8; frame.len() + self.tx.max_overhead()];
        out[..clear].copy_from_slice(prefix);
        let n = self.tx.encrypt_into(prefix, payload, &mut out[clear..])?;
        out.truncate(clear + n);
        Ok(out)
    }

    /// Checks that `data` from `candidate.sender` authenticates under the
    /// candidate key (a key derived for its KID and not installed). The
    /// trial uses a context of its own: nothing here changes, so a forged
    /// frame leaves every installed key and replay window as it was.
    pub fn check_candidate(
        &self,
        candidate: &CandidateKey,
        codec: Codec,
        data: &[u8],
    ) -> Result<(), hush_sframe::Error> {
        let clear = clear_prefix_len(codec, data);
        let (prefix, sealed) = data.split_at(clear);
        let mut trial = Receiver::new(MEDIA_SUITE);
        trial.add_key(candidate.kid, candidate.base.expose())?;
        let mut buf = sealed.to_vec();
        trial.decrypt_in_place(prefix, &mut buf).map(|_| ())
    }

    /// Decrypts one frame from `sender`. An unknown KID comes back as
    /// `Err(Error::MissingKey)` so the caller can ask the e2ee layer to
    /// derive it, or hold the frame until the key arrives.
    pub fn open(
        &mut self,
        sender: ParticipantId,
        codec: Codec,
        data: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let clear = clear_prefix_len(codec, data);
        let (prefix, sealed) = data.split_at(clear);
        let rx = self
            .rx
            .get_mut(&sender)
            .ok_or(Error::UnknownSender(sender))?;
        let mut buf = sealed.to_vec();
        match rx.decrypt_in_place(prefix, &mut buf) {
            Ok((_, plaintext)) => {
                let mut frame = Vec::with_capacity(clear + plaintext.len());
                frame.extend_from_slice(prefix);
                frame.extend_from_slice(plaintext);
                Ok(frame)
            }
            Err(hush_sframe::Error::UnknownKeyId(kid)) => {
                Err(Error::MissingKey(MissingKey { sender, kid }))
            }
            Err(e) => Err(Error::Frame(e)),
        }
    }
}

/// The KID of an encrypted frame (after its clear prefix), if its SFrame
/// header parses.
pub fn kid_of(codec: Codec, data: &[u8]) -> Option<KeyId> {
    let clear = clear_prefix_len(codec, data);
    let (header, _) = hush_sframe::Header::parse(data.get(clear..)?).ok()?;
    Some(header.kid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hush_sframe::Secret;

    fn pid(b: u8) -> ParticipantId {
        ParticipantId([b; 16])
    }

    #[test]
    fn clear_prefix_follows_the_codec() {
        assert_eq!(clear_prefix_len(Codec::Opus, b"\x00\x01\x02"), 0);
        assert_eq!(clear_prefix_len(Codec::Vp8, &[0x50; 40]), 10);
        assert_eq!(clear_prefix_len(Codec::Vp8, &[0x31; 40]), 3);
        assert_eq!(clear_prefix_len(Codec::Vp8, &[0x50; 4]), 4);
        assert_eq!(clear_prefix_len(Codec::Vp8, &[]), 0);
    }

    /// Alice sending under `key` as `kid`, and the event that gives it to
    /// a receiver as sender `pid(1)`.
    fn sender_and_install(key: [u8; 32], kid: KeyId) -> (FrameCrypto, KeyEvent) {
        let key = Secret::new(&key);
        let mut alice = FrameCrypto::new();
        alice
            .apply(&KeyEvent::UseSendKey {
                kid,
                base_key: key.clone(),
            })
            .expect("send key");
        let install = KeyEvent::InstallReceiveKey {
            sender: pid(1),
            kid,
            base_key: key,
        };
        (alice, install)
    }

    #[test]
    fn frames_round_trip_and_the_prefix_stays_clear_but_authenticated() {
        let (mut alice, install) = sender_and_install([7u8; 32], KeyId(0x0101_0000_0000));
        let mut bob = FrameCrypto::new();
        bob.apply(&install).expect("recv key");
        let frame = [
            b"\x50\x2c\x00\x9d\x01\x2a\x40\x01\xf0\x00".as_slice(),
            b"secret pixels",
        ]
        .concat();
        let sealed = alice.seal(Codec::Vp8, &frame).expect("seal");
        assert_eq!(&sealed[..10], &frame[..10]);
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(bob.open(pid(1), Codec::Vp8, &sealed).expect("open"), frame);
        let mut tampered = alice.seal(Codec::Vp8, &frame).expect("seal");
        tampered[5] ^= 1; // inside the clear prefix
        assert!(matches!(
            bob.open(pid(1), Codec::Vp8, &tampered),
            Err(Error::Frame(_))
        ));
        assert!(matches!(
            bob.open(pid(2), Codec::Vp8, &sealed),
            Err(Error::UnknownSender(_))
        ));
    }

    #[test]
    fn a_vp8_frame_shorter_than_its_clear_prefix_is_not_sealed() {
        let (mut alice, install) = sender_and_install([7u8; 32], KeyId(0x0101_0000_0000));
        let mut bob = FrameCrypto::new();
        bob.apply(&install).expect("recv key");
        // A key frame needs 10 clear bytes, a delta frame 3, any frame 1.
        for frame in [&[0x50u8; 9][..], &[0x31; 2], &[]] {
            assert!(
                matches!(alice.seal(Codec::Vp8, frame), Err(Error::ShortFrame { len, .. }) if len == frame.len()),
                "{frame:?}"
            );
        }
        // Exactly the prefix is fine: an empty payload, still authenticated.
        for frame in [&[0x50u8; 10][..], &[0x31; 3]] {
            let sealed = alice.seal(Codec::Vp8, frame).expect("seal");
            assert_eq!(bob.open(pid(1), Codec::Vp8, &sealed).expect("open"), frame);
        }
        assert!(alice.seal(Codec::Opus, &[]).is_ok(), "Opus has no prefix");
    }

    #[test]
    fn installing_a_live_key_again_keeps_its_replay_window() {
        let (mut alice, install) = sender_and_install([9u8; 32], KeyId(0x0102_0000_0000));
        let mut bob = FrameCrypto::new();
        bob.apply(&install).expect("recv key");
        let sealed = alice.seal(Codec::Opus, b"hello").expect("seal");
        assert_eq!(
            bob.open(pid(1), Codec::Opus, &sealed).expect("open"),
            b"hello"
        );
        // The attacker replays the key message, then the frame.
        bob.apply(&install).expect("the same key again");
        assert!(
            matches!(
                bob.open(pid(1), Codec::Opus, &sealed),
                Err(Error::Frame(hush_sframe::Error::Replayed { .. }))
            ),
            "a frame opened twice"
        );
        // Frames after it still open.
        let next = alice.seal(Codec::Opus, b"again").expect("seal");
        assert_eq!(
            bob.open(pid(1), Codec::Opus, &next).expect("open"),
            b"again"
        );
    }

    #[test]
    fn unknown_kids_are_reported_for_derivation() {
        let mut alice = FrameCrypto::new();
        alice
            .apply(&KeyEvent::UseSendKey {
                kid: KeyId(5),
                base_key: Secret::new(&[1; 32]),
            })
            .expect("send key");
        let mut bob = FrameCrypto::new();
        bob.apply(&KeyEvent::InstallReceiveKey {
            sender: pid(1),
            kid: KeyId(4),
            base_key: Secret::new(&[1; 32]),
        })
        .expect("recv key");
        let sealed = alice.seal(Codec::Opus, b"audio").expect("seal");
        assert!(matches!(
            bob.open(pid(1), Codec::Opus, &sealed),
            Err(Error::MissingKey(m)) if m == MissingKey { sender: pid(1), kid: KeyId(5) }
        ));
    }
}
