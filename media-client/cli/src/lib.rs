//! The `hush` command's own crate: what needs a server in the same process.
//!
//! - [`local`]: `hush-server` with its embedded SFU on an ephemeral
//!   loopback port (the demo, the load test's embedded server, the
//!   end-to-end tests).
//! - [`demo`]: `hush demo`, a real encrypted group call with a report.
//! - [`loadtest`]: `hush loadtest`, simulated participants on the client
//!   driver against a real server, beside a raw UDP relay baseline.
//! - [`progress`]: the one progress bar (indicatif), hidden off a terminal.
//!
//! The client library (`hush_client`) knows nothing of servers; this crate
//! is where the two meet.

#![forbid(unsafe_code)]

pub mod demo;
pub mod loadtest;
pub mod local;
pub mod progress;

/// Errors of the `hush` command's library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client library failed.
    #[error(transparent)]
    Client(#[from] hush_client::Error),
    /// The in-process signaling server refused to start.
    #[error("server: {0}")]
    Server(#[from] hush_signaling::Error),
    /// The in-process SFU refused to start.
    #[error("sfu: {0}")]
    Sfu(#[from] hush_sfu::Error),
    /// A room id, display name or secret is not valid.
    #[error(transparent)]
    Protocol(#[from] hush_proto::Error),
    /// A file, socket or child process failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// What went wrong.
        source: std::io::Error,
    },
    /// An argument is not valid.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// The load test could not run or measure; the text carries the figures.
    #[error("load test: {0}")]
    LoadTest(String),
}

impl Error {
    /// An IO error while doing `what`.
    pub fn io(what: &'static str) -> impl Fn(std::io::Error) -> Self {
        move |source| Self::Io { what, source }
    }
}
