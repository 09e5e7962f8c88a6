//! str0m's own parser entry points (feature `_internal_test_exports`, on
//! only in this crate) on the same bytes: RTCP compound packets and their
//! feedback (the NACK, PLI and FIR the SFU acts on from subscribers, the
//! reports from publishers), RTP headers with a fuzzed extension map,
//! STUN, and SDP offers and answers (a client's first offer, its answers
//! to the SFU's renegotiations). Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use str0m::_internal_test_exports::fuzz;

fuzz_target!(|data: &[u8]| {
    let _ = fuzz::rtcp(data);
    let _ = fuzz::rtp_packet(data);
    let _ = fuzz::stun(data);
    let _ = fuzz::sdp_offer(data);
    let _ = fuzz::sdp_answer(data);
});
