//! Join tokens: HMAC-SHA256 over (room, name, expiry) under the server secret.
//!
//! Format: `v1.<room>.<name>.<expiry>.<mac>` where room, name and mac are
//! unpadded base64url and expiry is Unix seconds in decimal. The MAC input
//! is length-prefixed so no two (room, name, expiry) triples share it:
//! `"hush-join-token-v1" || u32be(len room) || room || u32be(len name) ||
//! name || u64be(expiry)`.

use core::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::error::Error;
use crate::ids::{DisplayName, RoomId};

/// Shortest server secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

const LABEL: &[u8] = b"hush-join-token-v1";
const PREFIX: &str = "v1";

/// The server's token secret: zeroized on drop, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ServerSecret(Vec<u8>);

impl ServerSecret {
    /// Wraps secret bytes, refusing fewer than [`MIN_SECRET_LEN`].
    pub fn new(bytes: Vec<u8>) -> Result<Self, Error> {
        if bytes.len() < MIN_SECRET_LEN {
            return Err(Error::SecretTooShort {
                len: bytes.len(),
                min: MIN_SECRET_LEN,
            });
        }
        Ok(Self(bytes))
    }

    /// Reads a secret file's contents: surrounding whitespace is not part of it.
    pub fn from_file_contents(contents: &[u8]) -> Result<Self, Error> {
        let start = contents
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(contents.len());
        let end = contents
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(start, |i| i + 1);
        Self::new(contents[start..end].to_vec())
    }

    /// A fresh random secret for local development, with its text form
    /// (64 hex digits, usable as `--secret`). The secret is that text.
    pub fn generate_development() -> Result<(Self, Zeroizing<String>), Error> {
        let mut raw = Zeroizing::new([0u8; 32]);
        getrandom::fill(raw.as_mut()).map_err(|_| Error::Random)?;
        let mut text = Zeroizing::new(String::with_capacity(64));
        for b in raw.iter() {
            text.push(char::from(HEX[usize::from(b >> 4)]));
            text.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        let secret = Self::new(text.as_bytes().to_vec())?;
        Ok((secret, text))
    }

    fn mac(&self, room: &RoomId, name: &DisplayName, expiry: u64) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(LABEL);
        for part in [room.as_str().as_bytes(), name.as_str().as_bytes()] {
            // Room and name are at most 64 bytes, so the length fits in u32.
            mac.update(&(part.len() as u32).to_be_bytes());
            mac.update(part);
        }
        mac.update(&expiry.to_be_bytes());
        mac
    }

    fn control_mac(&self, expiry: u64) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(CONTROL_LABEL);
        mac.update(&expiry.to_be_bytes());
        mac
    }
}

const CONTROL_LABEL: &[u8] = b"hush-sfu-control-v1";
const CONTROL_PREFIX: &str = "v1c";

/// Bearer tokens of a standalone SFU node's control API: HMAC-SHA256 under
/// a secret the node shares with the signaling servers that drive it.
/// Format `v1c.<expiry>.<mac>` (expiry in Unix seconds, mac unpadded
/// base64url over `"hush-sfu-control-v1" || u64be(expiry)`), sent as
/// `Authorization: Bearer <token>`. A join token never passes for one:
/// the labels and the formats differ.
pub struct ControlToken;

impl ControlToken {
    /// Mints a control token valid until `expiry` (Unix seconds).
    pub fn mint(secret: &ServerSecret, expiry: u64) -> String {
        let tag = secret.control_mac(expiry).finalize().into_bytes();
        format!("{CONTROL_PREFIX}.{expiry}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// Checks a control token at Unix time `now`: the MAC first (in
    /// constant time), then the expiry.
    pub fn verify(secret: &ServerSecret, token: &str, now: u64) -> Result<(), Error> {
        if token.is_empty() {
            return Err(Error::TokenMissing);
        }
        let mut parts = token.split('.');
        let (Some(CONTROL_PREFIX), Some(expiry), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::TokenMalformed);
        };
        let expiry: u64 = expiry.parse().map_err(|_| Error::TokenMalformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| Error::TokenMalformed)?;
        secret
            .control_mac(expiry)
            .verify_slice(&tag)
            .map_err(|_| Error::TokenForged)?;
        if now >= expiry {
            return Err(Error::TokenExpired { expired_at: expiry });
        }
        Ok(())
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl fmt::Debug for ServerSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerSecret([redacted])")
    }
}

/// A join token's text (minted or as a client sent it); a bearer
/// credential, so its Debug is redacted. On the wire it is a plain string.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JoinToken(String);

impl From<String> for JoinToken {
    fn from(text: String) -> Self {
        Self(text)
    }
}

impl JoinToken {
    /// Mints a token for `name` in `room`, valid until `expiry` (Unix seconds).
    pub fn mint(secret: &ServerSecret, room: &RoomId, name: &DisplayName, expiry: u64) -> Self {
        let tag = secret.mac(room, name, expiry).finalize().into_bytes();
        Self(format!(
            "{PREFIX}.{}.{}.{expiry}.{}",
            URL_SAFE_NO_PAD.encode(room.as_str()),
            URL_SAFE_NO_PAD.encode(name.as_str()),
            URL_SAFE_NO_PAD.encode(tag),
        ))
    }

    /// The token text, to hand to the participant.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks `token` for a join of `name` to `room` at Unix time `now`.
    ///
    /// The MAC is checked first (in constant time), so every other verdict
    /// is about a token this server really minted.
    pub fn verify(
        secret: &ServerSecret,
        token: &str,
        room: &RoomId,
        name: &DisplayName,
        now: u64,
    ) -> Result<(), Error> {
        if token.is_empty() {
            return Err(Error::TokenMissing);
        }
        let parsed = ParsedToken::parse(token).ok_or(Error::TokenMalformed)?;
        secret
            .mac(&parsed.room, &parsed.name, parsed.expiry)
            .verify_slice(&parsed.tag)
            .map_err(|_| Error::TokenForged)?;
        if parsed.room != *room {
            return Err(Error::TokenWrongRoom);
        }
        if parsed.name != *name {
            return Err(Error::TokenWrongName);
        }
        if now >= parsed.expiry {
            return Err(Error::TokenExpired {
                expired_at: parsed.expiry,
            });
        }
        Ok(())
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JoinToken([redacted])")
    }
}

struct ParsedToken {
    room: RoomId,
    name: DisplayName,
    expiry: u64,
    tag: Vec<u8>,
}

impl ParsedToken {
    fn parse(token: &str) -> Option<Self> {
        let mut parts = token.split('.');
        let (prefix, room, name, expiry, tag) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        if prefix != PREFIX || parts.next().is_some() {
            return None;
        }
        let text = |part: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
        };
        Some(Self {
            room: text(room)?.parse().ok()?,
            name: text(name)?.parse().ok()?,
            expiry: expiry.parse().ok()?,
            tag: URL_SAFE_NO_PAD.decode(tag).ok()?,
        })
    }
}

/// Parses a duration such as `500ms`, `30s`, `10m`, `1h` or `7d`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, Error> {
    let bad = || Error::InvalidDuration(text.to_owned());
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let secs = |mul: u64| n.checked_mul(mul).ok_or_else(bad);
    Ok(match unit {
        "ms" => std::time::Duration::from_millis(n),
        "s" => std::time::Duration::from_secs(n),
        "m" => std::time::Duration::from_secs(secs(60)?),
        "h" => std::time::Duration::from_secs(secs(3600)?),
        "d" => std::time::Duration::from_secs(secs(86_400)?),
        _ => return Err(bad()),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn control_tokens_verify_only_under_their_secret_and_until_expiry() {
        use super::*;
        let secret = ServerSecret::new(b"a control secret of some length".to_vec()).unwrap();
        let other = ServerSecret::new(b"another secret, also long enough".to_vec()).unwrap();
        let token = ControlToken::mint(&secret, 1000);
        assert_eq!(ControlToken::verify(&secret, &token, 999), Ok(()));
        assert_eq!(
            ControlToken::verify(&secret, &token, 1000),
            Err(Error::TokenExpired { expired_at: 1000 })
        );
        assert_eq!(
            ControlToken::verify(&other, &token, 999),
            Err(Error::TokenForged)
        );
        // A later expiry with the old MAC is a forgery, not an extension.
        let stretched = token.replacen("1000", "9000", 1);
        assert_eq!(
            ControlToken::verify(&secret, &stretched, 999),
            Err(Error::TokenForged)
        );
        for bad in [
            "",
            "v1c",
            "v1c.1000",
            "v1c.x.AAAA",
            "v1c.1000.!!",
            "v2c.1000.AAAA",
            "v1c.1.A.B",
        ] {
            assert!(ControlToken::verify(&secret, bad, 0).is_err(), "{bad}");
        }
        // A join token is never a control token.
        let room: RoomId = "r".parse().unwrap();
        let name: DisplayName = "n".parse().unwrap();
        let join = JoinToken::mint(&secret, &room, &name, 1000);
        assert_eq!(
            ControlToken::verify(&secret, join.as_str(), 999),
            Err(Error::TokenMalformed)
        );
    }

    use super::*;

    fn secret(b: u8) -> ServerSecret {
        ServerSecret::new(vec![b; 32]).unwrap()
    }

    fn room(s: &str) -> RoomId {
        s.parse().unwrap()
    }

    fn name(s: &str) -> DisplayName {
        s.parse().unwrap()
    }

    #[test]
    fn minted_token_verifies_until_expiry() {
        let t = JoinToken::mint(&secret(1), &room("r"), &name("Ann"), 100);
        assert_eq!(
            JoinToken::verify(&secret(1), t.as_str(), &room("r"), &name("Ann"), 99),
            Ok(())
        );
        assert_eq!(
            JoinToken::verify(&secret(1), t.as_str(), &room("r"), &name("Ann"), 100),
            Err(Error::TokenExpired { expired_at: 100 })
        );
    }

    #[test]
    fn each_refusal_has_its_own_error() {
        let s = secret(1);
        let t = JoinToken::mint(&s, &room("r"), &name("Ann"), 100);
        let v = |tok: &str, r: &str, n: &str| JoinToken::verify(&s, tok, &room(r), &name(n), 5);
        assert_eq!(v("", "r", "Ann"), Err(Error::TokenMissing));
        assert_eq!(v("garbage", "r", "Ann"), Err(Error::TokenMalformed));
        assert_eq!(v(t.as_str(), "other", "Ann"), Err(Error::TokenWrongRoom));
        assert_eq!(v(t.as_str(), "r", "Bob"), Err(Error::TokenWrongName));
        let other = JoinToken::mint(&secret(2), &room("r"), &name("Ann"), 100);
        assert_eq!(v(other.as_str(), "r", "Ann"), Err(Error::TokenForged));
        // Editing the room inside a token breaks its MAC.
        let mut parts: Vec<&str> = t.as_str().split('.').collect();
        let enc = URL_SAFE_NO_PAD.encode("other");
        parts[1] = &enc;
        assert_eq!(v(&parts.join("."), "other", "Ann"), Err(Error::TokenForged));
        // So does extending the expiry.
        let longer = t.as_str().replace(".100.", ".999.");
        assert_eq!(v(&longer, "r", "Ann"), Err(Error::TokenForged));
    }

    #[test]
    fn secrets_and_tokens_are_redacted() {
        let s = secret(0x41);
        assert!(!format!("{s:?}").contains("AAAA"));
        let t = JoinToken::mint(&s, &room("r"), &name("Ann"), 1);
        assert_eq!(format!("{t:?}"), "JoinToken([redacted])");
    }

    #[test]
    fn secret_rules() {
        assert!(ServerSecret::new(vec![1; 15]).is_err());
        let s = ServerSecret::from_file_contents(b"  0123456789abcdef\n").unwrap();
        assert_eq!(s.0, b"0123456789abcdef");
        let (dev, text) = ServerSecret::generate_development().unwrap();
        assert_eq!(text.len(), 64);
        assert_eq!(dev.0, text.as_bytes());
    }

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("10x").is_err());
    }
}
