//! Two real clients through a real hush-server with its embedded SFU on
//! loopback: each decodes the other's Opus tone.

use std::time::Duration;

use hush_client::audio::{AudioSource, FRAME_SAMPLES, tone_snr_db};
use hush_client::call::JoinSpec;
use hush_client::local::LocalServer;
use hush_client::participant::{Participant, ParticipantSpec};
use hush_e2ee::Identity;

fn spec(server: &LocalServer, name: &str, hz: f64) -> ParticipantSpec {
    ParticipantSpec {
        join: JoinSpec {
            server: server.url(),
            room: "duo".into(),
            name: name.into(),
            token: server.token("duo", name).expect("token"),
        },
        audio: AudioSource::sine(hz),
        video: None,
        record: None,
        e2ee: hush_e2ee::Config::default(),
        keep_plaintext: false,
        keep_keys: false,
        observer: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_hear_each_other_through_the_sfu() {
    let server = LocalServer::start(None).await.expect("server");
    let a = Participant::start(spec(&server, "ann", 440.0), Identity::generate())
        .await
        .expect("ann");
    let b = Participant::start(spec(&server, "bob", 660.0), Identity::generate())
        .await
        .expect("bob");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let ra = a.stop().await.expect("ann report");
    let rb = b.stop().await.expect("bob report");
    for (me, other_hz, r) in [("ann", 660.0, &ra), ("bob", 440.0, &rb)] {
        eprintln!(
            "{me}: sent {} stats {:?} warnings {:?} first {:?}",
            r.audio_sent, r.stats, r.warnings, r.join_to_first_frame
        );
        let remote = r
            .remotes
            .values()
            .next()
            .unwrap_or_else(|| panic!("{me} saw nobody"));
        assert!(
            remote.audio_frames > 100,
            "{me} decoded only {} frames",
            remote.audio_frames
        );
        let pcm = &remote.pcm[FRAME_SAMPLES * 10..];
        let snr = tone_snr_db(pcm, other_hz);
        assert!(snr > 10.0, "{me} hears {other_hz} Hz at {snr:.1} dB");
        assert_eq!(
            r.stats.failed.values().sum::<u64>(),
            0,
            "{me}: {:?}",
            r.stats.failed
        );
    }
    server.stop().await;
}
