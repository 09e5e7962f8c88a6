//! How the test clients' webrtc-rs 0.21 peers are built: as `hush call`
//! builds its own (`hush_client::setup`), plus an interceptor that hands
//! the test every key-frame request.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, Registry, Slot, StreamInfo, TaggedPacket};
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::sansio::Protocol;

pub use hush_client::setup::{codec, setting_engine};

/// Media engine and interceptors for a test client: the client's own
/// ([`hush_client::setup::media_engine`]: Opus, VP8 with RTX, the
/// audio-level extension, webrtc-rs's default interceptors), and a last
/// interceptor that hands PLI/FIR to the test
/// (`TrackLocalEvent::OnRtcpPacket` on the sending side).
pub fn peer_media() -> (MediaEngine, Registry) {
    let (engine, registry) = hush_client::setup::media_engine().unwrap();
    // Application-most, so every interceptor has seen the RTCP first.
    let registry = registry.with(
        Slot::from(14_000),
        KeyFrameRequestForwarder {
            read: VecDeque::new(),
            write: VecDeque::new(),
        },
    );
    (engine, registry)
}

/// Whether an RTCP packet asks for a key frame.
fn is_key_frame_request(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>() || any.is::<FullIntraRequest>()
}

/// Marks inbound PLI/FIR for delivery to the application and drops every
/// other inbound RTCP packet here (the interceptors below have acted on it).
struct KeyFrameRequestForwarder {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for KeyFrameRequestForwarder {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            let requests: Vec<Box<dyn rtc::rtcp::Packet>> = packets
                .iter()
                .filter(|p| is_key_frame_request(p.as_ref()))
                .cloned()
                .collect();
            if requests.is_empty() {
                return Ok(());
            }
            msg.message.packet = Packet::Rtcp(requests);
            msg.message.add(Attribute::DeliverToApplication);
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.write.pop_front()
    }
}

impl Interceptor for KeyFrameRequestForwarder {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
