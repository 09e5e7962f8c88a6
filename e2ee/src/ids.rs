//! Identifiers, time, and the layout of hush's SFrame key ids.

use core::fmt;

use hush_sframe::KeyId;

/// A room's name, as agreed through signaling. Salts the pairwise keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(pub String);

/// A participant's id: 16 random bytes chosen by the participant for one
/// stay in one room, carried in its signed key package.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(pub [u8; 16]);

impl ParticipantId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(crate::random_array())
    }

    /// The 16-bit sender slot carried in the high bits of this
    /// participant's KIDs: the id's first two bytes.
    pub fn slot(&self) -> u16 {
        u16::from_be_bytes([self.0[0], self.0[1]])
    }
}

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Eight hex digits identify a participant in logs well enough.
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ParticipantId({self})")
    }
}

/// Milliseconds on the caller's clock (Unix time in production). The
/// state machine never reads a clock itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub u64);

impl Millis {
    /// This time plus `ms` milliseconds (saturating).
    pub fn plus(self, ms: u64) -> Self {
        Self(self.0.saturating_add(ms))
    }

    /// The current Unix time, for callers that want the system clock.
    pub fn now_unix() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// Which key of a sender: `rekey` counts fresh random keys (one per
/// departure), `ratchet` counts HKDF steps since that fresh key (one per
/// arrival).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Generation {
    /// Fresh keys since the sender joined.
    pub rekey: u16,
    /// Ratchet steps since the last fresh key.
    pub ratchet: u16,
}

/// hush's KID layout (64-bit SFrame KID, big-endian bit order):
///
/// ```text
///   bits 63..48  zero
///   bits 47..32  sender slot   (first two bytes of the participant id)
///   bits 31..16  rekey count   (fresh random key after each departure)
///   bits 15..0   ratchet count (HKDF step after each arrival)
/// ```
///
/// KIDs stay below 2^48, so the SFrame header spends at most 6 bytes on
/// them. Receivers pick keys by (sender, KID), so two senders whose slots
/// collide do not confuse anyone.
pub fn kid(slot: u16, generation: Generation) -> KeyId {
    KeyId(
        (u64::from(slot) << 32)
            | (u64::from(generation.rekey) << 16)
            | u64::from(generation.ratchet),
    )
}

/// Splits a KID into slot and generation; `None` if bits 63..48 are set.
pub fn split_kid(kid: KeyId) -> Option<(u16, Generation)> {
    if kid.0 >> 48 != 0 {
        return None;
    }
    Some((
        (kid.0 >> 32) as u16,
        Generation {
            rekey: (kid.0 >> 16) as u16,
            ratchet: kid.0 as u16,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kid_layout_round_trips() {
        for (slot, rekey, ratchet) in [(0, 0, 0), (0xabcd, 1, 2), (0xffff, 0xffff, 0xffff)] {
            let g = Generation { rekey, ratchet };
            assert_eq!(split_kid(kid(slot, g)), Some((slot, g)));
        }
        assert_eq!(
            kid(
                0x0102,
                Generation {
                    rekey: 3,
                    ratchet: 4
                }
            ),
            KeyId(0x0102_0003_0004)
        );
        assert_eq!(split_kid(KeyId(1 << 48)), None);
    }
}
