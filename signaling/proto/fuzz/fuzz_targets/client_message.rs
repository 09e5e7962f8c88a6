//! What a client sends the server: any text into `ClientMessage::parse`.
//! Nothing may panic; a message that parses re-serializes and parses back
//! to the same message.
#![no_main]

use hush_proto::ClientMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(message) = ClientMessage::parse(text) {
        let again = serde_json::to_string(&message).expect("a parsed message serializes");
        assert_eq!(ClientMessage::parse(&again), Ok(message));
    }
});
