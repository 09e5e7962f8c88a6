//! The client's WebRTC layer on its own: two real webrtc-rs peers on
//! loopback, connected directly (standing in for the SFU), carry Opus-sized
//! and VP8 frames byte-identical and in order, VP8 frames reassembled from
//! several RTP packets each.

use std::time::Duration;

use hush_client::frame::Codec;
use hush_client::transport::{Transport, TransportEvent};
use hush_client::video::Clip;
use tokio::sync::mpsc::Receiver;

const GUARD: Duration = Duration::from_secs(20);

/// Collects frames until `audio` Opus and `video` VP8 frames arrived.
async fn frames(
    events: &mut Receiver<TransportEvent>,
    audio: usize,
    video: usize,
) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let (mut a, mut v) = (Vec::new(), Vec::new());
    tokio::time::timeout(GUARD, async {
        while a.len() < audio || v.len() < video {
            match events.recv().await {
                Some(TransportEvent::Frame {
                    codec: Codec::Opus,
                    data,
                    ..
                }) => a.push(data),
                Some(TransportEvent::Frame {
                    codec: Codec::Vp8,
                    data,
                    ..
                }) => v.push(data),
                Some(_) => {}
                None => break,
            }
        }
    })
    .await
    .expect("hang guard: frames did not arrive");
    (a, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_and_video_frames_cross_a_real_peer_connection_intact() {
    let (a, _a_events) = Transport::new(true).await.expect("a");
    let (b, mut b_events) = Transport::new(false).await.expect("b");
    let offer = a.offer().await.expect("offer");
    let answer = b.answer(offer).await.expect("answer");
    a.apply_answer(answer).await.expect("apply");
    tokio::time::timeout(GUARD, async {
        loop {
            if let Some(TransportEvent::Connected) = b_events.recv().await {
                break;
            }
        }
    })
    .await
    .expect("connected");

    // Audio: 60 numbered frames at the media rate.
    let sent_audio: Vec<Vec<u8>> = (0..60u32)
        .map(|i| [b"audio-frame-".as_slice(), &i.to_be_bytes(), &[0xa5; 60]].concat())
        .collect();
    let clip = Clip::test_pattern().expect("clip");
    let sender = tokio::spawn({
        let sent_audio = sent_audio.clone();
        let video: Vec<Vec<u8>> = clip
            .frames
            .iter()
            .take(30)
            .map(|f| f.data.clone())
            .collect();
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            for (i, frame) in sent_audio.into_iter().enumerate() {
                tick.tick().await;
                a.send_audio(frame, 30).await.expect("send audio");
                if i % 2 == 0 {
                    if let Some(v) = video.get(i / 2) {
                        a.send_video(v.clone(), Duration::from_millis(40))
                            .await
                            .expect("send video");
                    }
                }
            }
            a
        }
    });
    // The first packets can race the track's setup on the receiver; compare
    // the longest run that arrived, which must be an exact, ordered suffix.
    let (got_audio, got_video) = frames(&mut b_events, 50, 20).await;
    let first = sent_audio
        .iter()
        .position(|f| *f == got_audio[0])
        .expect("first received frame was sent");
    assert!(first <= 10, "lost the first {first} audio frames");
    assert_eq!(&sent_audio[first..first + got_audio.len()], &got_audio[..]);
    let sent_video: Vec<&Vec<u8>> = clip.frames.iter().take(30).map(|f| &f.data).collect();
    let vfirst = sent_video
        .iter()
        .position(|f| **f == got_video[0])
        .expect("first received video frame was sent");
    for (k, got) in got_video.iter().enumerate() {
        assert_eq!(got, sent_video[vfirst + k], "video frame {}", vfirst + k);
    }
    assert!(
        got_video.iter().any(|f| f.len() > 1200),
        "some frames spanned several packets"
    );
    let a = sender.await.expect("sender");
    a.close().await;
    b.close().await;
}
