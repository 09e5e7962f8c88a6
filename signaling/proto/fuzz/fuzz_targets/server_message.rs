//! What a client reads from a server (which may be hostile): any text into
//! `ServerMessage`'s deserializer. Nothing may panic; a message that parses
//! round-trips.
#![no_main]

use hush_proto::ServerMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = serde_json::from_slice::<ServerMessage>(data) {
        let again = message.to_json();
        let back: ServerMessage = serde_json::from_str(&again).expect("round trip");
        assert_eq!(back, message);
    }
});
