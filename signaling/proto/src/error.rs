//! The one error type of this crate.

use crate::wire::ErrorCode;

/// What the protocol refuses: ids and names outside their alphabet, join
/// tokens that do not verify, secrets and durations that are not valid.
/// Token variants are what a client's join gets wrong; the others come from
/// configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A room id outside the allowed length or alphabet.
    #[error("invalid room id: 1 to 64 ASCII letters, digits, '-', '_' or '.'")]
    InvalidRoomId,
    /// A display name that is empty, too long or has control characters.
    #[error("invalid display name: 1 to 64 bytes, no control characters")]
    InvalidDisplayName,
    /// The join carried no token.
    #[error("join token missing")]
    TokenMissing,
    /// The token is not in the token format.
    #[error("join token malformed")]
    TokenMalformed,
    /// The token's MAC does not verify under this server's secret.
    #[error("join token forged or minted with another secret")]
    TokenForged,
    /// The token expired at the given Unix time.
    #[error("join token expired at {expired_at} (Unix seconds)")]
    TokenExpired {
        /// Expiry written in the token.
        expired_at: u64,
    },
    /// The token is for another room.
    #[error("join token is for another room")]
    TokenWrongRoom,
    /// The token is for another display name.
    #[error("join token is for another display name")]
    TokenWrongName,
    /// The server secret is shorter than [`crate::MIN_SECRET_LEN`].
    #[error("server secret too short: {len} bytes, at least {min} needed")]
    SecretTooShort {
        /// Length given.
        len: usize,
        /// Minimum length.
        min: usize,
    },
    /// The operating system's random number generator failed.
    #[error("system random number generator failed")]
    Random,
    /// A duration flag that is not `<number><unit>` with unit ms, s, m, h or d.
    #[error("invalid duration {0:?}: use e.g. 500ms, 30s, 10m, 1h, 7d")]
    InvalidDuration(String),
}

impl Error {
    /// The wire error code a client sees for this error, if it is one of its.
    pub fn code(&self) -> Option<ErrorCode> {
        Some(match self {
            Self::InvalidRoomId | Self::InvalidDisplayName => ErrorCode::InvalidField,
            Self::TokenMissing => ErrorCode::TokenMissing,
            Self::TokenMalformed => ErrorCode::TokenMalformed,
            Self::TokenForged => ErrorCode::TokenForged,
            Self::TokenExpired { .. } => ErrorCode::TokenExpired,
            Self::TokenWrongRoom => ErrorCode::TokenWrongRoom,
            Self::TokenWrongName => ErrorCode::TokenWrongName,
            Self::SecretTooShort { .. } | Self::Random | Self::InvalidDuration(_) => return None,
        })
    }
}
