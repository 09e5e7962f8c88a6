//! The wire format: the checked-in examples in `tests/wire/` parse and
//! re-serialize byte for byte, and every message round-trips through JSON.

use std::collections::BTreeSet;
use std::path::Path;

use hush_proto::{
    ClientMessage, CloseReason, ErrorCode, IceCandidate, MediaKind, Member, Opaque, ParticipantId,
    ServerMessage,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

const CLIENT_TYPES: [&str; 7] = [
    "join",
    "leave",
    "sdp_offer",
    "sdp_answer",
    "ice_candidate",
    "envelope",
    "ping",
];

const SERVER_TYPES: [&str; 14] = [
    "joined",
    "member_joined",
    "member_left",
    "sdp_offer",
    "sdp_answer",
    "ice_candidate",
    "envelope",
    "error",
    "pong",
    "closing",
    "track_added",
    "track_removed",
    "active_speaker",
    "media_moved",
];

/// Parses each example in `dir` as `T`, re-serializes it pretty-printed and
/// compares with the file; returns the `type` of each.
fn check_examples<T: DeserializeOwned + Serialize + std::fmt::Debug>(
    dir: &str,
) -> BTreeSet<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/wire")
        .join(dir);
    let mut types = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("wire examples directory") {
        let path = entry.expect("directory entry").path();
        let text = std::fs::read_to_string(&path).expect("example file");
        let message: T = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
        let again = serde_json::to_string_pretty(&message).expect("serializes") + "\n";
        assert_eq!(
            again,
            text,
            "{} does not re-serialize identically",
            path.display()
        );
        let value: serde_json::Value = serde_json::from_str(&text).expect("json");
        let kind = value["type"].as_str().expect("type").to_owned();
        assert_eq!(
            path.file_stem().and_then(|s| s.to_str()),
            Some(kind.as_str()),
            "file named after its type"
        );
        types.insert(kind);
    }
    types
}

#[test]
fn client_examples_are_the_wire_format() {
    let types = check_examples::<ClientMessage>("client");
    assert_eq!(types, CLIENT_TYPES.iter().map(|s| s.to_string()).collect());
}

#[test]
fn server_examples_are_the_wire_format() {
    let types = check_examples::<ServerMessage>("server");
    assert_eq!(types, SERVER_TYPES.iter().map(|s| s.to_string()).collect());
}

#[test]
fn client_examples_pass_the_server_parser() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/wire/client");
    for entry in std::fs::read_dir(dir).expect("dir") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("file");
        assert!(ClientMessage::parse(&text).is_ok(), "{text}");
    }
}

fn round_trip<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(message: &T) {
    let text = serde_json::to_string(message).expect("serializes");
    let back: T = serde_json::from_str(&text).expect("parses");
    assert_eq!(&back, message, "{text}");
}

fn candidate() -> IceCandidate {
    IceCandidate {
        candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host".into(),
        sdp_mid: None,
        sdp_m_line_index: Some(1),
    }
}

#[test]
fn every_message_round_trips() {
    let pid = ParticipantId(u64::MAX);
    let bytes = Opaque((0..=255).collect());
    let client = [
        ClientMessage::Join {
            protocol: 1,
            room: "r-1_x.y".parse().expect("room"),
            name: "Zoë \"the\" 🦀".parse().expect("name"),
            token: String::from("t").into(),
            key_package: bytes.clone(),
        },
        ClientMessage::Leave,
        ClientMessage::SdpOffer {
            sdp: "o\r\n".into(),
        },
        ClientMessage::SdpAnswer {
            sdp: "a\r\n".into(),
        },
        ClientMessage::IceCandidate {
            candidate: candidate(),
        },
        ClientMessage::Envelope {
            to: pid,
            payload: Opaque(vec![]),
        },
        ClientMessage::Ping { nonce: 0 },
    ];
    for message in &client {
        round_trip(message);
        let text = serde_json::to_string(message).expect("serializes");
        assert_eq!(ClientMessage::parse(&text).as_ref(), Ok(message));
    }
    let member = Member {
        id: pid,
        name: "n".parse().expect("name"),
        key_package: bytes.clone(),
    };
    let mut server = vec![
        ServerMessage::Joined {
            protocol: 1,
            room: "r".parse().expect("room"),
            you: ParticipantId(0),
            members: vec![member.clone(), member.clone()],
        },
        ServerMessage::MemberJoined { member },
        ServerMessage::MemberLeft { id: pid },
        ServerMessage::SdpOffer { sdp: String::new() },
        ServerMessage::SdpAnswer { sdp: "x".into() },
        ServerMessage::IceCandidate {
            candidate: candidate(),
        },
        ServerMessage::Envelope {
            from: ParticipantId(1),
            to: pid,
            payload: bytes,
        },
        ServerMessage::Pong { nonce: u64::MAX },
        ServerMessage::TrackAdded {
            publisher: pid,
            kind: MediaKind::Video,
            stream_id: "p9".into(),
        },
        ServerMessage::TrackRemoved {
            publisher: pid,
            stream_id: "p9".into(),
        },
        ServerMessage::ActiveSpeaker { participant: None },
        ServerMessage::ActiveSpeaker {
            participant: Some(pid),
        },
        ServerMessage::MediaMoved,
    ];
    server.extend(ErrorCode::ALL.map(|code| ServerMessage::error(code, "m")));
    for reason in [
        CloseReason::ServerShutdown,
        CloseReason::Left,
        CloseReason::JoinFailed,
        CloseReason::IdleTimeout,
        CloseReason::RateLimited,
        CloseReason::TooSlow,
        CloseReason::MessageTooBig,
        CloseReason::Replaced,
        CloseReason::MediaMoved,
    ] {
        server.push(ServerMessage::Closing { reason });
    }
    for message in &server {
        round_trip(message);
    }
}

#[test]
fn opaque_bytes_are_standard_base64() {
    let text = serde_json::to_string(&Opaque(vec![0xfb, 0xff])).expect("serializes");
    assert_eq!(text, "\"+/8=\"");
    assert!(serde_json::from_str::<Opaque>("\"not base64!\"").is_err());
}

#[test]
fn a_client_cannot_claim_a_sender() {
    // `from` is not a field of the client's envelope: it is ignored, and the
    // server sets it (checked end to end in tests/server.rs).
    let parsed = ClientMessage::parse(r#"{"type":"envelope","to":2,"from":99,"payload":""}"#);
    assert_eq!(
        parsed,
        Ok(ClientMessage::Envelope {
            to: ParticipantId(2),
            payload: Opaque(vec![])
        })
    );
}

#[test]
fn debug_output_never_shows_a_token_or_opaque_bytes() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/wire/client/join.json"),
    )
    .expect("example");
    let join = ClientMessage::parse(&text).expect("parses");
    let debug = format!("{join:?}");
    assert!(debug.contains("JoinToken([redacted])"), "{debug}");
    assert!(!debug.contains("v1."), "{debug}");
    assert!(!debug.contains("aHVza"), "{debug}");
}

#[test]
fn every_message_type_is_specified_in_the_protocol_document() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/PROTOCOL.md"),
    )
    .expect("docs/PROTOCOL.md");
    for t in CLIENT_TYPES.iter().chain(SERVER_TYPES.iter()) {
        assert!(
            doc.contains(&format!("| `{t}` |")),
            "docs/PROTOCOL.md has no table row for `{t}`"
        );
    }
    assert!(
        doc.contains("signaling/proto/tests/wire/"),
        "the document links to the wire examples"
    );
}
