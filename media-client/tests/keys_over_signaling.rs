//! Real clients against a real in-process hush-server (no SFU): key
//! packages and envelopes travel through signaling, and every member can
//! then read every other member's frames. Each call runs on the client
//! driver without a media connection; frames are handed to the receiving
//! driver directly ([`Call::deliver_frame`]), standing in for the SFU.

use std::sync::Arc;
use std::time::Duration;

use hush_client::call::{Call, CallOptions, ChannelMedia, JoinSpec};
use hush_client::frame::Codec;
use hush_client::session::CallEvent;
use hush_e2ee::Identity;
use hush_signaling::{
    DisplayName, JoinToken, Limits, NoMedia, ParticipantId, RoomId, Server, ServerConfig,
    ServerSecret,
};
use tokio::sync::mpsc::Receiver;

const GUARD: Duration = Duration::from_secs(20);

struct Member {
    call: Call<ChannelMedia>,
    events: Receiver<CallEvent>,
    id: ParticipantId,
}

impl Member {
    /// Seals a frame with this member's current send key.
    async fn seal(&self, payload: &[u8]) -> Vec<u8> {
        let payload = payload.to_vec();
        self.call
            .with_session(move |s| s.seal(Codec::Opus, &payload))
            .await
            .expect("driver running")
            .expect("seal")
    }

    /// Runs `f` on this member's session.
    async fn session<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut hush_client::session::Session) -> R + Send + 'static,
    ) -> R {
        self.call.with_session(f).await.expect("driver running")
    }
}

async fn server() -> (String, ServerSecret) {
    let secret = ServerSecret::new(b"client-test-secret-0123456789".to_vec()).expect("secret");
    let config = ServerConfig {
        limits: Limits::default(),
        secret: secret.clone(),
        tls: None,
    };
    let server = Server::bind(
        "127.0.0.1:0".parse().expect("addr"),
        config,
        Arc::new(NoMedia),
    )
    .await
    .expect("bind");
    let addr = server.local_addr().expect("addr");
    tokio::spawn(server.run());
    (format!("ws://{addr}"), secret)
}

fn token(secret: &ServerSecret, room: &str, name: &str) -> String {
    let room: RoomId = room.parse().expect("room");
    let name: DisplayName = name.parse().expect("name");
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs()
        + 3600;
    JoinToken::mint(secret, &room, &name, expiry)
        .as_str()
        .to_owned()
}

async fn join(url: &str, secret: &ServerSecret, room: &str, name: &str) -> Member {
    let spec = JoinSpec {
        server: url.into(),
        room: room.into(),
        name: name.into(),
        token: token(secret, room, name),
        ca_file: None,
        insecure: false,
    };
    let (media, mut events) = ChannelMedia::new();
    let options = CallOptions {
        media: None,
        ..CallOptions::default()
    };
    let call = Call::start(&spec, Identity::generate(), options, media)
        .await
        .expect("start");
    let id = loop {
        // The events end (and this fails) if the server refused the join.
        let event = tokio::time::timeout(GUARD, events.recv())
            .await
            .expect("hang guard")
            .expect("joined, not refused");
        if let CallEvent::Joined { you } = event {
            break you;
        }
    };
    Member { call, events, id }
}

/// Waits until `m` can seal and knows `n` peers.
async fn settle(m: &Member, n: usize) {
    tokio::time::timeout(GUARD, async {
        loop {
            if m.session(move |s| s.can_send() && s.peers().count() == n)
                .await
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("hang guard");
}

/// `from` seals a frame, `to` receives it; retries briefly while keys are in flight.
async fn deliver(from: &Member, to: &mut Member, payload: &[u8]) -> Result<Vec<u8>, String> {
    let sealed = from.seal(payload).await;
    to.call
        .deliver_frame(from.id, Codec::Opus, sealed)
        .await
        .map_err(|e| e.to_string())?;
    // At once, or held until its key arrives: it comes out of the driver's event stream.
    let wait = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match to.events.recv().await {
                Some(CallEvent::Frame { frame, .. }) => return Ok(frame),
                Some(_) => {}
                None => return Err("events closed".to_string()),
            }
        }
    });
    wait.await.unwrap_or_else(|_| Err("not decrypted".into()))
}

/// A shared reference to one member and a mutable one to another.
fn pair(ms: &mut [Member], from: usize, to: usize) -> (&Member, &mut Member) {
    assert_ne!(from, to);
    if from < to {
        let (l, r) = ms.split_at_mut(to);
        (&l[from], &mut r[0])
    } else {
        let (l, r) = ms.split_at_mut(from);
        (&r[0], &mut l[to])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_read_each_other_after_key_agreement_over_the_real_server() {
    let (url, secret) = server().await;
    let a = join(&url, &secret, "standup", "ann").await;
    let b = join(&url, &secret, "standup", "bob").await;
    let c = join(&url, &secret, "standup", "cy").await;
    for m in [&a, &b, &c] {
        settle(m, 2).await;
    }
    let mut members = vec![a, b, c];
    for (from, to) in [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)] {
        let (f, t) = pair(&mut members, from, to);
        let payload = format!("frame from {from} to {to}");
        assert_eq!(
            deliver(f, t, payload.as_bytes()).await.as_deref(),
            Ok(payload.as_bytes()),
            "{from}->{to}"
        );
    }
    let c = members.pop().expect("c");
    let mut b = members.pop().expect("b");
    let a = members.pop().expect("a");
    // A relay that flips a bit or forges a frame: counted, never decoded, and the call goes on.
    let mut tampered = a.seal(b"genuine").await;
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    // A forgery under ann's real (visible) KID and a fresh counter, with made-up ciphertext.
    let genuine = a.seal(b"template").await;
    let (header, _) = hush_sframe::Header::parse(&genuine).expect("header");
    let mut forged =
        hush_sframe::Header::new(header.kid, hush_sframe::Counter(header.ctr.0 + 1000))
            .encode()
            .as_bytes()
            .to_vec();
    forged.extend_from_slice(&[0x42; 40]);
    for bad in [tampered, forged] {
        let from = a.id;
        let out = b
            .session(move |s| s.receive_frame(from, Codec::Opus, &bad, hush_client::call::now()))
            .await;
        assert!(
            !out.iter().any(|e| matches!(e, CallEvent::Frame { .. })),
            "a bad frame was decoded"
        );
    }
    let failed = b.session(|s| s.stats().failed.clone()).await;
    assert_eq!(failed.get("authentication"), Some(&2), "{failed:?}");
    assert_eq!(
        deliver(&a, &mut b, b"still fine").await.as_deref(),
        Ok(&b"still fine"[..])
    );

    // Safety numbers agree on both ends.
    let (aid, bid) = (a.id, b.id);
    let ab = a
        .session(move |s| s.safety_number(bid))
        .await
        .expect("b known");
    let ba = b
        .session(move |s| s.safety_number(aid))
        .await
        .expect("a known");
    assert_eq!(ab, ba);

    // c leaves; a's frames after the rekey are unreadable with c's keys.
    c.call.leave().await.expect("leave");
    tokio::time::timeout(GUARD, async {
        loop {
            let a_peers = a.session(|s| s.peers().count()).await;
            let b_peers = b.session(|s| s.peers().count()).await;
            if a_peers == 1 && b_peers == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("hang guard");
    assert_eq!(
        deliver(&a, &mut b, b"after c left").await.as_deref(),
        Ok(&b"after c left"[..])
    );
    a.call.leave().await.expect("leave");
    b.call.leave().await.expect("leave");
}
