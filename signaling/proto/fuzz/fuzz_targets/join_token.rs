//! Any token text into `JoinToken::verify`: nothing panics, and nothing
//! the fuzzer writes verifies under a secret it does not know (the one
//! exception, a token minted here and then echoed, is checked to verify).
#![no_main]

use std::sync::OnceLock;

use hush_proto::{DisplayName, JoinToken, RoomId, ServerSecret};
use libfuzzer_sys::fuzz_target;

fn fixture() -> &'static (ServerSecret, RoomId, DisplayName, JoinToken) {
    static F: OnceLock<(ServerSecret, RoomId, DisplayName, JoinToken)> = OnceLock::new();
    F.get_or_init(|| {
        let secret =
            ServerSecret::new(b"fuzzing secret, 32 bytes long..".to_vec()).expect("secret");
        let room: RoomId = "room".parse().expect("room");
        let name: DisplayName = "Ann".parse().expect("name");
        let token = JoinToken::mint(&secret, &room, &name, u64::MAX);
        (secret, room, name, token)
    })
}

fuzz_target!(|data: &[u8]| {
    let (secret, room, name, minted) = fixture();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let verdict = JoinToken::verify(secret, text, room, name, 1_000);
    if text == minted.as_str() {
        assert_eq!(verdict, Ok(()));
    } else {
        assert!(
            verdict.is_err(),
            "a token the fuzzer wrote verified: {text:?}"
        );
    }
});
