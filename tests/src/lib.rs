//! Shared harness of the end-to-end tests: participants of a call on a
//! [`LocalServer`] (hush-server with its embedded SFU, in process, on an
//! ephemeral loopback port). Timeouts are hang guards only.

#![forbid(unsafe_code)]

use std::time::Duration;

use hush::local::LocalServer;
use hush_client::audio::{AudioSource, FRAME_SAMPLES, dominant_frequency};
use hush_client::call::JoinSpec;
use hush_client::participant::{Participant, ParticipantReport, ParticipantSpec, RemoteReport};
use hush_e2ee::Identity;

/// The spec of a participant `name` in `room` sending a sine at `hz`.
pub fn spec(server: &LocalServer, room: &str, name: &str, hz: f64) -> ParticipantSpec {
    ParticipantSpec {
        join: JoinSpec {
            server: server.url(),
            room: room.into(),
            name: name.into(),
            token: server.token(room, name).expect("token"),
            ca_file: None,
            insecure: false,
        },
        audio: AudioSource::sine(hz),
        video: None,
        record: None,
        e2ee: hush_e2ee::Config::default(),
        keep_plaintext: false,
        keep_keys: false,
        observer: None,
        bind: None,
    }
}

/// Starts a participant with a fresh identity.
pub async fn join(spec: ParticipantSpec) -> Participant {
    Participant::start(spec, Identity::generate())
        .await
        .expect("participant starts")
}

/// The frame counters of a running participant.
pub async fn stats(p: &Participant) -> hush_client::session::Stats {
    p.stats().await.expect("participant running")
}

/// Waits until `p` has decrypted at least `n` frames.
pub async fn until_decrypted(p: &Participant, n: u64) {
    tokio::time::timeout(Duration::from_secs(20), async {
        while stats(p).await.decrypted < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("hang guard: frames never decrypted");
}

/// What `report` heard from the member called `name` (its latest stay).
pub fn heard<'a>(report: &'a ParticipantReport, name: &str) -> Option<&'a RemoteReport> {
    report
        .remotes
        .values()
        .rev()
        .find(|r| r.name == name && r.audio_frames > 0)
}

/// The dominant frequency of what was decoded, after the codec's start-up.
pub fn heard_hz(remote: &RemoteReport) -> Option<f64> {
    dominant_frequency(remote.pcm.get(FRAME_SAMPLES * 10..)?)
}
