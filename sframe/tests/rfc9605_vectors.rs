//! Every published RFC 9605 test vector, in every section, on every backend.

mod support;

use support::vectors::{VectorFile, check_json};

const VECTORS: &str = include_str!("vectors/rfc9605-test-vectors.json");

#[test]
fn every_published_vector_passes() {
    let report = check_json(VECTORS).expect("the published file parses");
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
    // 289 headers, 3 AES-CTR-HMAC AEAD entries, 5 full SFrame encryptions.
    assert_eq!(report.passed, 289 + 3 + 5);
}

#[test]
fn every_section_is_present_and_covers_all_suites() {
    let file: VectorFile = serde_json::from_str(VECTORS).expect("parses");
    assert_eq!(file.header.len(), 289);
    let mut aead: Vec<u16> = file.aes_ctr_hmac.iter().map(|v| v.cipher_suite).collect();
    aead.sort_unstable();
    assert_eq!(aead, [1, 2, 3]);
    let mut full: Vec<u16> = file.sframe.iter().map(|v| v.cipher_suite).collect();
    full.sort_unstable();
    assert_eq!(full, [1, 2, 3, 4, 5]);
}

fn corrupt(section: &str, field: &str) -> String {
    let mut v: serde_json::Value = serde_json::from_str(VECTORS).expect("parses");
    let s = v[section][0][field].as_str().expect("hex field").to_owned();
    // Flip the lowest bit of the last hex digit.
    let mut bytes = hex::decode(&s).expect("hex");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    v[section][0][field] = serde_json::Value::String(hex::encode(bytes));
    v.to_string()
}

#[test]
fn a_corrupted_ciphertext_is_one_failure() {
    for section in ["sframe", "aes_ctr_hmac"] {
        let report = check_json(&corrupt(section, "ct")).expect("still well formed");
        assert_eq!(report.failures.len(), 1, "{section}: {:?}", report.failures);
        assert_eq!(report.passed, 289 + 3 + 5 - 1);
    }
}

#[test]
fn a_corrupted_header_encoding_is_one_failure() {
    let report = check_json(&corrupt("header", "encoded")).expect("still well formed");
    assert_eq!(report.failures.len(), 1, "{:?}", report.failures);
}

#[test]
fn a_corrupted_derived_key_is_one_failure() {
    for field in ["sframe_key", "sframe_salt", "sframe_secret", "nonce"] {
        let report = check_json(&corrupt("sframe", field)).expect("still well formed");
        assert_eq!(report.failures.len(), 1, "{field}: {:?}", report.failures);
    }
}

#[test]
fn malformed_files_are_reported_not_panicked() {
    assert!(check_json("{").is_err());
    assert!(check_json(r#"{"header": [{"kid": "x"}]}"#).is_err());
    assert!(check_json(r#"{"bogus": []}"#).is_err());
    // A file with only some sections is fine.
    let r = check_json(r#"{"header": [{"kid": 8, "ctr": 0, "encoded": "8008"}]}"#).expect("ok");
    assert_eq!((r.passed, r.failures.len()), (1, 0));
}
