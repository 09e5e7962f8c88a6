//! A receiver whose media plays nothing on the 20 ms clock
//! (`Media::plays() == false`, as the load generator's subscribers) is not
//! woken to tick, and still gets every frame as it arrives; one that plays
//! is ticked as before.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hush::local::LocalServer;
use hush_client::Error;
use hush_client::call::Media;
use hush_client::frame::Codec;
use hush_client::session::{FrameInfo, Session};
use hush_proto::ParticipantId as SigId;
use hush_tests::{call_with, join, spec};

/// Receives only, counting frames and ticks.
struct Listener {
    plays: bool,
    frames: Arc<AtomicU64>,
    ticks: Arc<AtomicU64>,
}

impl Media for Listener {
    fn sends_audio(&self) -> bool {
        false
    }

    fn plays(&self) -> bool {
        self.plays
    }

    fn received(
        &mut self,
        _: SigId,
        codec: Codec,
        _: Vec<u8>,
        _: FrameInfo,
        _: &Session,
    ) -> Result<(), Error> {
        if codec == Codec::Opus {
            self.frames.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn tick(&mut self, _: &Session) -> Result<(), Error> {
        self.ticks.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_plays_nothing_is_not_ticked_and_hears_everything() {
    let server = LocalServer::start(None).await.expect("server");
    let ann = join(spec(&server, "quiet", "ann", 440.0)).await;
    let listen = |name: &str, plays: bool| {
        let spec = spec(&server, "quiet", name, 0.0);
        let (frames, ticks) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let media = Listener {
            plays,
            frames: Arc::clone(&frames),
            ticks: Arc::clone(&ticks),
        };
        async move {
            let call = call_with(&spec.join, media).await;
            (call, frames, ticks)
        }
    };
    let (quiet, quiet_frames, quiet_ticks) = listen("quiet", false).await;
    let (player, player_frames, player_ticks) = listen("player", true).await;
    // Until both have heard 100 of ann's frames (2 s of audio).
    let deadline = Instant::now() + Duration::from_secs(30);
    while quiet_frames.load(Ordering::Relaxed) < 100 || player_frames.load(Ordering::Relaxed) < 100
    {
        assert!(
            Instant::now() < deadline,
            "frames heard: quiet {}, player {}",
            quiet_frames.load(Ordering::Relaxed),
            player_frames.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (quiet_ticked, player_ticked) = (
        quiet_ticks.load(Ordering::Relaxed),
        player_ticks.load(Ordering::Relaxed),
    );
    quiet.leave().await.expect("quiet leaves");
    player.leave().await.expect("player leaves");
    ann.stop().await.expect("ann's call went on");
    server.stop().await;
    assert_eq!(quiet_ticked, 0, "a receiver that plays nothing was ticked");
    // 100 frames are 2 s of audio: a player is ticked every 20 ms meanwhile.
    assert!(
        player_ticked >= 50,
        "the player was ticked {player_ticked} times"
    );
}
