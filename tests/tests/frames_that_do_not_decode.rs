//! A member whose encoder is broken: some of its frames authenticate (they
//! are its own, sealed with its key) but are not Opus a decoder takes (an
//! invalid packet, a 40 ms frame). The listener conceals each of them in
//! its slot, counts them by reason, warns once per reason, and the call
//! goes on: its frames before and after still play.

use std::time::Duration;

use hush::local::LocalServer;
use hush_client::Error;
use hush_client::audio::{AudioSource, OpusEncoder, audio_level};
use hush_client::call::Media;
use hush_client::frame::Codec;
use hush_client::session::{FrameInfo, Session};
use hush_proto::ParticipantId as SigId;
use hush_tests::{call_with, heard, join, spec, until_decrypted};

/// Every 10th frame is not an Opus packet at all; every 25th (not a
/// multiple of 10) is a valid Opus packet of 40 ms, twice hush's frame.
struct BrokenEncoder {
    encoder: OpusEncoder,
    audio: AudioSource,
    n: u64,
}

impl Media for BrokenEncoder {
    fn audio_frame(&mut self) -> Result<Option<(Vec<u8>, u8)>, Error> {
        self.n += 1;
        let pcm = self.audio.next_frame();
        let level = audio_level(&pcm);
        if self.n % 10 == 0 {
            // TOC code 3 with 63 frames of 20 ms: more than Opus allows.
            return Ok(Some((vec![0xff, 0xff, 0xff, 0xff], level)));
        }
        if self.n % 25 == 0 {
            let forty = opus_40ms(&pcm);
            return Ok(Some((forty, level)));
        }
        Ok(Some((self.encoder.encode(&pcm)?, level)))
    }

    fn received(
        &mut self,
        _: SigId,
        _: Codec,
        _: Vec<u8>,
        _: FrameInfo,
        _: &Session,
    ) -> Result<(), Error> {
        Ok(())
    }
}

/// A real Opus packet of 40 ms (two 20 ms frames, TOC code 1).
fn opus_40ms(pcm: &hush_client::audio::Pcm) -> Vec<u8> {
    let mut enc = OpusEncoder::new().expect("encoder");
    let a = enc.encode(pcm).expect("opus");
    let b = enc.encode(pcm).expect("opus");
    if a.len() != b.len() {
        // Code 1 needs two frames of one size; fall back to the code-3
        // layout (CBR, 2 frames) which takes any equal-size pair too.
        let mut out = vec![(a[0] & 0xfc) | 3, 2];
        out.extend_from_slice(&a[1..]);
        out.extend_from_slice(&a[1..]);
        return out;
    }
    let mut out = vec![(a[0] & 0xfc) | 1];
    out.extend_from_slice(&a[1..]);
    out.extend_from_slice(&b[1..]);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_that_do_not_decode_are_concealed_and_the_call_goes_on() {
    let server = LocalServer::start(None).await.expect("server");
    let broken = spec(&server, "broken", "ann", 440.0);
    let media = BrokenEncoder {
        encoder: OpusEncoder::new().expect("encoder"),
        audio: AudioSource::sine(440.0),
        n: 0,
    };
    let ann = call_with(&broken.join, media).await;
    let bob = join(spec(&server, "broken", "bob", 660.0)).await;
    until_decrypted(&bob, 20).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = bob.stop().await.expect("bob's call went on");
    ann.leave().await.expect("ann");
    server.stop().await;
    let from_ann = heard(&report, "ann").expect("bob heard ann");
    eprintln!(
        "bob: {} played, {} concealed, decode errors {:?}, warnings {:?}",
        from_ann.audio_frames, from_ann.concealed, from_ann.decode_errors, report.warnings
    );
    assert_eq!(
        from_ann.decode_errors.len(),
        2,
        "both kinds of broken frame were told apart: {:?}",
        from_ann.decode_errors
    );
    let errors: u64 = from_ann.decode_errors.values().sum();
    assert!(errors >= 10, "{:?}", from_ann.decode_errors);
    assert!(from_ann.concealed >= errors, "each was concealed");
    // Good frames kept playing around the broken ones (about 6 good
    // frames for each broken one are sent).
    assert!(
        from_ann.audio_frames >= 4 * errors,
        "{} played, {errors} did not decode",
        from_ann.audio_frames
    );
    // One warning per reason, not one per frame.
    let warned = report
        .warnings
        .iter()
        .filter(|w| w.contains("does not decode"))
        .count();
    assert_eq!(warned, 2, "{:?}", report.warnings);
    assert_eq!(
        report.stats.failed.values().sum::<u64>(),
        0,
        "they all authenticated"
    );
}
