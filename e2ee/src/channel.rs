//! Pairwise channels between two members, and the envelopes they carry.
//!
//! Key derivation (both ends compute the same thing):
//!
//! ```text
//! shared = X25519(my ephemeral secret, peer's ephemeral public)      (32 bytes)
//! lo, hi = the two members ordered by ephemeral public key, bytewise
//! info   = "hush/v1 pairwise" || identity_lo || identity_hi || ephemeral_lo || ephemeral_hi
//! okm    = HKDF-SHA256(salt = room id as UTF-8, ikm = shared, info, L = 64)
//! key lo->hi = okm[0..32], key hi->lo = okm[32..64]                  (AES-256-GCM)
//! ```
//!
//! Envelope layout (big-endian):
//!
//! ```text
//! u8    version (1)
//! [16]  sender participant id
//! [16]  recipient participant id
//! u64   counter (starts at 0 per direction, +1 per envelope)
//! ...   AES-256-GCM ciphertext || 16-byte tag
//! nonce = 0x00000000 || counter (8 bytes)       aad = the 41 bytes above
//! ```

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInOut, KeyInit};
use hkdf::Hkdf;
use hush_sframe::{ReplayWindow, Verdict};
use sha2::Sha256;
use x25519_dalek::PublicKey;
use zeroize::Zeroizing;

use crate::Error;
use crate::ids::{ParticipantId, RoomId};
use crate::keypackage::{KeyPackage, LocalMember};
use crate::wire::Reader;

/// Envelope format version.
pub const ENVELOPE_VERSION: u8 = 1;

/// HKDF info label of the pairwise channel.
pub const PAIRWISE_LABEL: &[u8] = b"hush/v1 pairwise";

/// Bytes before the ciphertext: version, sender, recipient, counter.
pub const ENVELOPE_HEADER_LEN: usize = 1 + 16 + 16 + 8;

const TAG_LEN: usize = 16;

/// Envelopes a receiver accepts out of order.
pub const ENVELOPE_REPLAY_WINDOW: u64 = 256;

/// The two directional keys of a pairwise channel, before keying AES.
#[cfg_attr(feature = "fuzzing", derive(Clone))]
pub(crate) struct ChannelKeys {
    pub(crate) send: Zeroizing<[u8; 32]>,
    pub(crate) recv: Zeroizing<[u8; 32]>,
}

/// Derives the channel keys between `me` and `peer` (see module docs).
pub(crate) fn derive_keys(
    me: &LocalMember,
    peer: &KeyPackage,
    room: &RoomId,
) -> Result<ChannelKeys, Error> {
    let shared = me
        .ephemeral
        .diffie_hellman(&PublicKey::from(peer.ephemeral));
    if !shared.was_contributory() {
        return Err(Error::WeakKeyAgreement(peer.participant));
    }
    let mine = &me.package;
    let i_am_lo = mine.ephemeral < peer.ephemeral;
    let (lo, hi) = if i_am_lo { (mine, peer) } else { (peer, mine) };
    let mut info = Vec::with_capacity(PAIRWISE_LABEL.len() + 128);
    info.extend_from_slice(PAIRWISE_LABEL);
    info.extend_from_slice(&lo.identity.to_bytes());
    info.extend_from_slice(&hi.identity.to_bytes());
    info.extend_from_slice(&lo.ephemeral);
    info.extend_from_slice(&hi.ephemeral);
    let hk = Hkdf::<Sha256>::new(Some(room.0.as_bytes()), shared.as_bytes());
    let mut okm = Zeroizing::new([0u8; 64]);
    hk.expand(&info, okm.as_mut_slice())
        .map_err(|_| Error::WeakKeyAgreement(peer.participant))?;
    let mut lo_to_hi = Zeroizing::new([0u8; 32]);
    let mut hi_to_lo = Zeroizing::new([0u8; 32]);
    lo_to_hi.copy_from_slice(&okm[..32]);
    hi_to_lo.copy_from_slice(&okm[32..]);
    Ok(if i_am_lo {
        ChannelKeys {
            send: lo_to_hi,
            recv: hi_to_lo,
        }
    } else {
        ChannelKeys {
            send: hi_to_lo,
            recv: lo_to_hi,
        }
    })
}

/// One end of a pairwise channel.
#[cfg_attr(feature = "fuzzing", derive(Clone))]
pub(crate) struct Channel {
    me: ParticipantId,
    peer: ParticipantId,
    send: Box<Aes256Gcm>,
    recv: Box<Aes256Gcm>,
    next_counter: Option<u64>,
    window: ReplayWindow,
    #[cfg(test)]
    pub(crate) keys_for_tests: ChannelKeys,
}

impl Channel {
    pub(crate) fn new(me: &LocalMember, peer: &KeyPackage, room: &RoomId) -> Result<Self, Error> {
        let keys = derive_keys(me, peer, room)?;
        // 32-byte keys always fit AES-256.
        let bad = |_| Error::WeakKeyAgreement(peer.participant);
        Ok(Self {
            me: me.participant(),
            peer: peer.participant,
            send: Box::new(Aes256Gcm::new_from_slice(keys.send.as_slice()).map_err(bad)?),
            recv: Box::new(Aes256Gcm::new_from_slice(keys.recv.as_slice()).map_err(bad)?),
            next_counter: Some(0),
            window: ReplayWindow::new(ENVELOPE_REPLAY_WINDOW),
            #[cfg(test)]
            keys_for_tests: keys,
        })
    }

    /// Seals `plaintext` into an envelope for the peer.
    pub(crate) fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        let counter = self
            .next_counter
            .ok_or(Error::ChannelExhausted(self.peer))?;
        self.next_counter = counter.checked_add(1);
        let mut out = Vec::with_capacity(ENVELOPE_HEADER_LEN + plaintext.len() + TAG_LEN);
        out.push(ENVELOPE_VERSION);
        out.extend_from_slice(&self.me.0);
        out.extend_from_slice(&self.peer.0);
        out.extend_from_slice(&counter.to_be_bytes());
        out.extend_from_slice(plaintext);
        let (aad, body) = out.split_at_mut(ENVELOPE_HEADER_LEN);
        let tag = self
            .send
            .encrypt_inout_detached(&nonce(counter).into(), aad, body.into())
            .map_err(|_| Error::ChannelExhausted(self.peer))?;
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Opens an envelope from the peer (whose header was already parsed),
    /// checking its counter against the replay window without moving it
    /// (see [`Channel::accept`]).
    pub(crate) fn open(
        &mut self,
        envelope: &[u8],
        header: &EnvelopeHeader,
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        let from = self.peer;
        let counter = header.counter;
        match self.window.check(counter) {
            Verdict::Fresh => {}
            Verdict::Replayed => return Err(Error::ReplayedEnvelope { from, counter }),
            Verdict::TooOld => return Err(Error::EnvelopeOutsideWindow { from, counter }),
        }
        let body_and_tag = &envelope[ENVELOPE_HEADER_LEN..];
        let body_len = body_and_tag
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(Error::Malformed {
                what: "envelope",
                why: "shorter than its tag",
            })?;
        let mut body = Zeroizing::new(body_and_tag[..body_len].to_vec());
        let tag = aes_gcm::Tag::try_from(&body_and_tag[body_len..])
            .map_err(|_| Error::EnvelopeAuthentication(from))?;
        self.recv
            .decrypt_inout_detached(
                &nonce(counter).into(),
                &envelope[..ENVELOPE_HEADER_LEN],
                body.as_mut_slice().into(),
                &tag,
            )
            .map_err(|_| Error::EnvelopeAuthentication(from))?;
        Ok(body)
    }

    /// Marks `counter` as received: call it once the envelope that
    /// [`Channel::open`] opened has been accepted whole (its message too),
    /// so a rejected envelope does not move the replay window.
    pub(crate) fn accept(&mut self, counter: u64) {
        self.window.accept(counter);
    }
}

fn nonce(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n
}

/// The clear part of an envelope, enough to route it to its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvelopeHeader {
    /// Claimed sender (authenticated only once the envelope opens).
    pub from: ParticipantId,
    /// Recipient.
    pub to: ParticipantId,
    /// Per-direction counter.
    pub counter: u64,
}

impl EnvelopeHeader {
    /// Parses the clear header of an envelope.
    pub fn parse(envelope: &[u8]) -> Result<Self, Error> {
        const WHAT: &str = "envelope";
        let mut r = Reader::new(WHAT, envelope);
        let version = r.u8()?;
        if version != ENVELOPE_VERSION {
            return Err(Error::UnsupportedVersion {
                what: WHAT,
                version,
            });
        }
        let header = Self {
            from: ParticipantId(r.array()?),
            to: ParticipantId(r.array()?),
            counter: r.u64()?,
        };
        if r.remaining().len() < TAG_LEN {
            return Err(Error::Malformed {
                what: WHAT,
                why: "shorter than its tag",
            });
        }
        Ok(header)
    }
}

/// What travels inside an envelope.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Message {
    /// The sender's media key for `kid`.
    SenderKey {
        kid: u64,
        base_key: Zeroizing<Vec<u8>>,
    },
    /// The receiver installed the sender key `kid`.
    KeyAck { kid: u64 },
    /// A newcomer's first word to each member it was told of: it proves
    /// the newcomer is live (only it holds its ephemeral key), and asks for
    /// that member's key. Carries nothing.
    Hello,
}

const MSG_SENDER_KEY: u8 = 1;
const MSG_KEY_ACK: u8 = 2;
const MSG_HELLO: u8 = 3;

impl Message {
    /// Encodes: `u8 type`, then for a sender key `u64 kid || u8 len || key`,
    /// for an ack `u64 kid`, for a hello nothing.
    pub(crate) fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(1 + 8 + 1 + 32));
        match self {
            Message::SenderKey { kid, base_key } => {
                out.push(MSG_SENDER_KEY);
                out.extend_from_slice(&kid.to_be_bytes());
                // Base keys are 32 bytes; the length byte keeps the format open.
                out.push(base_key.len() as u8);
                out.extend_from_slice(base_key);
            }
            Message::KeyAck { kid } => {
                out.push(MSG_KEY_ACK);
                out.extend_from_slice(&kid.to_be_bytes());
            }
            Message::Hello => out.push(MSG_HELLO),
        }
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, Error> {
        const WHAT: &str = "envelope message";
        let mut r = Reader::new(WHAT, bytes);
        let msg = match r.u8()? {
            MSG_SENDER_KEY => {
                let kid = r.u64()?;
                let len = usize::from(r.u8()?);
                if !(16..=64).contains(&len) {
                    return Err(Error::Malformed {
                        what: WHAT,
                        why: "sender key length out of range",
                    });
                }
                Message::SenderKey {
                    kid,
                    base_key: Zeroizing::new(r.bytes(len)?.to_vec()),
                }
            }
            MSG_KEY_ACK => Message::KeyAck { kid: r.u64()? },
            MSG_HELLO => Message::Hello,
            _ => {
                return Err(Error::Malformed {
                    what: WHAT,
                    why: "unknown message type",
                });
            }
        };
        r.finish()?;
        Ok(msg)
    }
}
