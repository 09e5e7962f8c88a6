//! One member cannot disconnect another by flooding it with envelopes:
//! envelopes fill at most half of the addressee's send queue, the rest is
//! refused to the sender (`recipient_busy`), and the addressee, however
//! slowly it reads, stays in the room and gets what was relayed.

mod support;

use std::time::Duration;

use hush_proto::{ErrorCode, ServerMessage};
use hush_signaling::Limits;
use support::TestServer;

#[tokio::test]
async fn a_flood_of_envelopes_is_refused_to_its_sender_not_paid_for_by_the_addressee() {
    let limits = Limits {
        send_queue: 16,
        max_envelope_bytes: 45_000,
        // Only the queue rule is under test, not the message rate.
        messages_per_sec: 1_000_000,
        message_burst: 1_000_000,
        rate_strikes: 1_000_000,
        idle_timeout: Duration::from_secs(60),
        ..Limits::default()
    };
    let server = TestServer::start(limits).await;
    let mut bob = server.join("r", "Bob").await;
    let mut ann = server.join("r", "Ann").await;
    // Bob reads nothing while ann sends 36 MB at him (45 kB envelopes, 60 kB as JSON): far more than the
    // kernel's socket buffers and his queue hold.
    let payload = vec![7u8; 45_000];
    for _ in 0..800 {
        ann.client.envelope(bob.id, &payload).await;
    }
    ann.client.envelope(bob.id, b"last").await;
    let mut busy = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(2), ann.client.next()).await {
            Ok(Ok(ServerMessage::Error { code, .. })) => {
                assert_eq!(code, ErrorCode::RecipientBusy);
                busy += 1;
            }
            Ok(Ok(_)) => {}
            Ok(Err(end)) => panic!("ann's connection ended: {end:?}"),
            // Quiet for 2 s: every refusal has arrived.
            Err(_) => break,
        }
    }
    assert!(busy > 0, "the flood was never refused");
    assert!(busy < 801, "nothing was relayed");
    // Bob reads now: he is still in the room, never told to go, and gets
    // the envelopes that were relayed; then a new one gets through again.
    let mut relayed = 0;
    let drained = async {
        loop {
            match bob.client.next().await {
                Ok(ServerMessage::Envelope { .. }) => relayed += 1,
                Ok(ServerMessage::Closing { reason }) => panic!("bob was closed: {reason:?}"),
                Ok(_) => {}
                Err(end) => panic!("bob's connection ended: {end:?}"),
            }
            if relayed + busy == 801 {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), drained)
        .await
        .expect("bob got every envelope that was not refused");
    ann.client.envelope(bob.id, b"after").await;
    loop {
        if let ServerMessage::Envelope { payload, .. } = bob.client.recv().await {
            assert_eq!(payload.0, b"after");
            break;
        }
    }
    eprintln!("{relayed} envelopes relayed, {busy} refused as recipient_busy");
    server.stop().await;
}
