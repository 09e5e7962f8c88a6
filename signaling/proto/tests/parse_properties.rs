//! Property tests of the client-message parser, the part of the server that
//! reads the network: any text gives a message or a typed error, never a
//! panic; every valid message survives a JSON round trip.

use hush_proto::{ClientMessage, ErrorCode, IceCandidate, Opaque, ParticipantId};
use proptest::prelude::*;

fn client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        Just(ClientMessage::Leave),
        any::<u64>().prop_map(|nonce| ClientMessage::Ping { nonce }),
        ".{0,200}".prop_map(|sdp| ClientMessage::SdpOffer { sdp }),
        ".{0,200}".prop_map(|sdp| ClientMessage::SdpAnswer { sdp }),
        (
            ".{0,80}",
            proptest::option::of("[0-9a-z]{0,4}"),
            proptest::option::of(any::<u16>())
        )
            .prop_map(|(candidate, sdp_mid, sdp_m_line_index)| {
                ClientMessage::IceCandidate {
                    candidate: IceCandidate {
                        candidate,
                        sdp_mid,
                        sdp_m_line_index,
                    },
                }
            }),
        (any::<u64>(), prop::collection::vec(any::<u8>(), 0..300)).prop_map(|(to, payload)| {
            ClientMessage::Envelope {
                to: ParticipantId(to),
                payload: Opaque(payload),
            }
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,300}") {
        let _ = ClientMessage::parse(&text);
    }

    #[test]
    fn arbitrary_json_objects_get_typed_errors(
        kind in prop_oneof![Just("join".to_string()), Just("envelope".to_string()), "[a-z_]{0,12}"],
        field in "[a-z_]{1,10}",
        value in prop_oneof![Just("1".to_string()), Just("\"x\"".to_string()), Just("null".to_string()), Just("[]".to_string()), Just("{}".to_string())],
    ) {
        let text = format!(r#"{{"type":"{kind}","{field}":{value}}}"#);
        match ClientMessage::parse(&text) {
            Ok(_) => {}
            Err(code) => prop_assert!(matches!(code, ErrorCode::UnknownType | ErrorCode::InvalidField), "{code:?} for {text}"),
        }
    }

    #[test]
    fn valid_messages_round_trip(msg in client_message()) {
        let text = serde_json::to_string(&msg).expect("serializes");
        prop_assert_eq!(ClientMessage::parse(&text), Ok(msg));
    }
}
