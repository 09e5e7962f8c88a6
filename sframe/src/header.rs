//! The SFrame header: KID and CTR in their compact encoding (RFC 9605 §4.3).

use core::fmt;

use crate::Error;

/// Largest possible encoded header: config byte, 8-byte KID, 8-byte CTR.
pub const MAX_HEADER_LEN: usize = 17;

/// Key identifier carried in every SFrame header; selects the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub u64);

/// Per-key frame counter carried in every SFrame header; forms the nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Counter(pub u64);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A decoded SFrame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// Key id.
    pub kid: KeyId,
    /// Frame counter.
    pub ctr: Counter,
}

/// An encoded header held on the stack, so encoding never allocates.
#[derive(Clone, Copy)]
pub struct EncodedHeader {
    bytes: [u8; MAX_HEADER_LEN],
    len: u8,
}

impl EncodedHeader {
    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Debug for EncodedHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncodedHeader(")?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

impl Header {
    /// A header for this KID and CTR.
    pub fn new(kid: KeyId, ctr: Counter) -> Self {
        Self { kid, ctr }
    }

    /// Length of the minimal encoding of this header.
    pub fn encoded_len(&self) -> usize {
        1 + extended_len(self.kid.0) + extended_len(self.ctr.0)
    }

    /// Encodes the header in its minimal form (RFC 9605 §4.3).
    pub fn encode(&self) -> EncodedHeader {
        let mut bytes = [0u8; MAX_HEADER_LEN];
        let klen = extended_len(self.kid.0);
        let clen = extended_len(self.ctr.0);
        // X|KKK|Y|CCC: short values live in the config byte, long ones
        // follow it as big-endian bytes, KID first.
        let k_bits = if klen == 0 {
            self.kid.0 as u8
        } else {
            0x08 | (klen as u8 - 1)
        };
        let c_bits = if clen == 0 {
            self.ctr.0 as u8
        } else {
            0x08 | (clen as u8 - 1)
        };
        bytes[0] = (k_bits << 4) | c_bits;
        bytes[1..1 + klen].copy_from_slice(&self.kid.0.to_be_bytes()[8 - klen..]);
        bytes[1 + klen..1 + klen + clen].copy_from_slice(&self.ctr.0.to_be_bytes()[8 - clen..]);
        EncodedHeader {
            bytes,
            len: (1 + klen + clen) as u8,
        }
    }

    /// Writes the encoded header to the front of `out`, returning its length.
    pub fn encode_into(&self, out: &mut [u8]) -> Result<usize, Error> {
        let enc = self.encode();
        let bytes = enc.as_bytes();
        let available = out.len();
        let dst = out.get_mut(..bytes.len()).ok_or(Error::BufferTooSmall {
            needed: bytes.len(),
            available,
        })?;
        dst.copy_from_slice(bytes);
        Ok(bytes.len())
    }

    /// Parses a header from the front of `buf`, returning it and its length.
    ///
    /// Truncated headers and non-minimal encodings are errors.
    pub fn parse(buf: &[u8]) -> Result<(Header, usize), Error> {
        let config = *buf.first().ok_or(Error::HeaderTruncated {
            needed: 1,
            available: 0,
        })?;
        let (k_field, c_field) = (config >> 4, config & 0x0f);
        let klen = field_len(k_field);
        let clen = field_len(c_field);
        let needed = 1 + klen + clen;
        if buf.len() < needed {
            return Err(Error::HeaderTruncated {
                needed,
                available: buf.len(),
            });
        }
        let kid = field_value(k_field, &buf[1..1 + klen])?;
        let ctr = field_value(c_field, &buf[1 + klen..needed])?;
        Ok((Header::new(KeyId(kid), Counter(ctr)), needed))
    }
}

/// Bytes after the config byte needed for `v` (0 when it fits in 3 bits).
fn extended_len(v: u64) -> usize {
    if v < 8 {
        0
    } else {
        (64 - v.leading_zeros() as usize).div_ceil(8)
    }
}

/// Extra bytes announced by a 4-bit X|KKK (or Y|CCC) field.
fn field_len(field: u8) -> usize {
    if field & 0x08 == 0 {
        0
    } else {
        usize::from(field & 0x07) + 1
    }
}

/// The value of a 4-bit field and its extra bytes, rejecting non-minimal forms.
fn field_value(field: u8, extra: &[u8]) -> Result<u64, Error> {
    if field & 0x08 == 0 {
        return Ok(u64::from(field & 0x07));
    }
    let value = extra.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    if extended_len(value) != extra.len() {
        return Err(Error::NonMinimalHeader);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_forms_fit_in_config_byte() {
        let h = Header::new(KeyId(7), Counter(5));
        assert_eq!(h.encode().as_bytes(), &[0x75]);
        assert_eq!(Header::parse(&[0x75]), Ok((h, 1)));
    }

    #[test]
    fn extended_forms_use_minimal_lengths() {
        let h = Header::new(KeyId(8), Counter(0x1_0000));
        assert_eq!(h.encode().as_bytes(), &[0x8a, 0x08, 0x01, 0x00, 0x00]);
        let max = Header::new(KeyId(u64::MAX), Counter(u64::MAX));
        assert_eq!(max.encoded_len(), MAX_HEADER_LEN);
        assert_eq!(Header::parse(max.encode().as_bytes()), Ok((max, 17)));
    }

    #[test]
    fn non_minimal_forms_are_rejected() {
        // KID 5 in the extended form.
        assert_eq!(Header::parse(&[0x80, 0x05]), Err(Error::NonMinimalHeader));
        // CTR 0x0100 with a leading zero byte.
        assert_eq!(
            Header::parse(&[0x0a, 0x00, 0x01, 0x00]),
            Err(Error::NonMinimalHeader)
        );
    }

    #[test]
    fn truncated_headers_are_rejected() {
        assert_eq!(
            Header::parse(&[]),
            Err(Error::HeaderTruncated {
                needed: 1,
                available: 0
            })
        );
        assert_eq!(
            Header::parse(&[0xff, 1, 2, 3]),
            Err(Error::HeaderTruncated {
                needed: 17,
                available: 4
            })
        );
    }

    #[test]
    fn encode_into_checks_space() {
        let h = Header::new(KeyId(300), Counter(1));
        let mut small = [0u8; 2];
        assert_eq!(
            h.encode_into(&mut small),
            Err(Error::BufferTooSmall {
                needed: 3,
                available: 2
            })
        );
    }
}
