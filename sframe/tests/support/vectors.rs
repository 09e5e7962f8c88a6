//! Checks files in the layout of the RFC 9605 test vectors (sframe-wg
//! `test-vectors.json`): any subset of the sections `header`,
//! `aes_ctr_hmac` and `sframe`. Shared by the vector tests and the
//! `check_vectors` example.

use hush_sframe::{
    Backend, CipherSuite, Counter, DerivedKey, FrameAead, Header, KeyId, Receiver, Sender,
    key_label, salt_label,
};
use serde::Deserialize;

/// The whole file; absent sections are empty.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorFile {
    #[serde(default)]
    pub header: Vec<HeaderVector>,
    #[serde(default)]
    pub aes_ctr_hmac: Vec<AeadVector>,
    #[serde(default)]
    pub sframe: Vec<SframeVector>,
}

/// One header encoding.
#[derive(Debug, Deserialize)]
pub struct HeaderVector {
    pub kid: u64,
    pub ctr: u64,
    pub encoded: String,
}

/// One AES-CTR + HMAC AEAD operation (RFC 9605 §4.5.1).
#[derive(Debug, Deserialize)]
pub struct AeadVector {
    pub cipher_suite: u16,
    pub key: String,
    pub enc_key: String,
    pub auth_key: String,
    pub nonce: String,
    pub aad: String,
    pub pt: String,
    pub ct: String,
}

/// One full SFrame encryption, with every intermediate value.
#[derive(Debug, Deserialize)]
pub struct SframeVector {
    pub cipher_suite: u16,
    pub kid: u64,
    pub ctr: u64,
    pub base_key: String,
    pub sframe_key_label: String,
    pub sframe_salt_label: String,
    pub sframe_secret: String,
    pub sframe_key: String,
    pub sframe_salt: String,
    pub metadata: String,
    pub nonce: String,
    pub aad: String,
    pub pt: String,
    pub ct: String,
}

/// Outcome of checking a file: entries that passed and one line per failure.
#[derive(Debug, Default)]
pub struct Report {
    pub passed: usize,
    pub failures: Vec<String>,
}

impl Report {
    fn record(&mut self, what: String, result: Result<(), String>) {
        match result {
            Ok(()) => self.passed += 1,
            Err(why) => self.failures.push(format!("{what}: {why}")),
        }
    }
}

/// Parses and checks a vector file; `Err` means the file itself is malformed.
pub fn check_json(json: &str) -> Result<Report, String> {
    let file: VectorFile =
        serde_json::from_str(json).map_err(|e| format!("malformed vector file: {e}"))?;
    let mut report = Report::default();
    for (i, v) in file.header.iter().enumerate() {
        report.record(
            format!("header[{i}] kid={} ctr={}", v.kid, v.ctr),
            check_header(v),
        );
    }
    for (i, v) in file.aes_ctr_hmac.iter().enumerate() {
        report.record(
            format!("aes_ctr_hmac[{i}] suite={}", v.cipher_suite),
            check_aead(v),
        );
    }
    for (i, v) in file.sframe.iter().enumerate() {
        report.record(
            format!("sframe[{i}] suite={}", v.cipher_suite),
            check_sframe(v),
        );
    }
    Ok(report)
}

fn unhex(field: &str, s: &str) -> Result<Vec<u8>, String> {
    hex::decode(s).map_err(|e| format!("field {field} is not hex: {e}"))
}

fn expect_eq(what: &str, got: &[u8], want: &[u8]) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!(
            "{what} mismatch: got {}, want {}",
            hex::encode(got),
            hex::encode(want)
        ))
    }
}

fn check_header(v: &HeaderVector) -> Result<(), String> {
    let encoded = unhex("encoded", &v.encoded)?;
    let header = Header::new(KeyId(v.kid), Counter(v.ctr));
    expect_eq("encoding", header.encode().as_bytes(), &encoded)?;
    let (parsed, len) = Header::parse(&encoded).map_err(|e| format!("parse failed: {e}"))?;
    if parsed != header || len != encoded.len() {
        return Err(format!("parsed {parsed:?} ({len} bytes)"));
    }
    Ok(())
}

fn nonce_array(nonce: &[u8]) -> Result<[u8; 12], String> {
    nonce
        .try_into()
        .map_err(|_| format!("nonce must be 12 bytes, got {}", nonce.len()))
}

fn check_aead(v: &AeadVector) -> Result<(), String> {
    let suite = CipherSuite::from_id(v.cipher_suite).map_err(|e| e.to_string())?;
    let key = unhex("key", &v.key)?;
    let nonce = nonce_array(&unhex("nonce", &v.nonce)?)?;
    let (aad, pt, ct) = (
        unhex("aad", &v.aad)?,
        unhex("pt", &v.pt)?,
        unhex("ct", &v.ct)?,
    );
    if !suite.is_ctr_hmac() {
        return Err("aes_ctr_hmac entry with a GCM suite".into());
    }
    // §4.5.1: the AEAD key is enc_key || auth_key.
    let split = key.len().min(16);
    expect_eq("enc_key", &key[..split], &unhex("enc_key", &v.enc_key)?)?;
    expect_eq("auth_key", &key[split..], &unhex("auth_key", &v.auth_key)?)?;
    for &backend in Backend::AVAILABLE {
        let aead = FrameAead::new(suite, backend, &key).map_err(|e| e.to_string())?;
        let sealed = aead.seal(&nonce, &aad, &pt).map_err(|e| e.to_string())?;
        expect_eq(&format!("{backend:?} ct"), &sealed, &ct)?;
        let opened = aead
            .open(&nonce, &aad, &ct)
            .map_err(|_| format!("{backend:?}: published ct does not authenticate"))?;
        expect_eq(&format!("{backend:?} pt"), &opened, &pt)?;
    }
    Ok(())
}

fn check_sframe(v: &SframeVector) -> Result<(), String> {
    let suite = CipherSuite::from_id(v.cipher_suite).map_err(|e| e.to_string())?;
    let (kid, ctr) = (KeyId(v.kid), Counter(v.ctr));
    let base_key = unhex("base_key", &v.base_key)?;
    let metadata = unhex("metadata", &v.metadata)?;
    let (pt, ct) = (unhex("pt", &v.pt)?, unhex("ct", &v.ct)?);

    expect_eq(
        "sframe_key_label",
        &key_label(suite, kid),
        &unhex("sframe_key_label", &v.sframe_key_label)?,
    )?;
    expect_eq(
        "sframe_salt_label",
        &salt_label(suite, kid),
        &unhex("sframe_salt_label", &v.sframe_salt_label)?,
    )?;
    let derived = DerivedKey::derive(suite, kid, &base_key);
    expect_eq(
        "sframe_secret",
        derived.sframe_secret().expose(),
        &unhex("sframe_secret", &v.sframe_secret)?,
    )?;
    expect_eq(
        "sframe_key",
        derived.sframe_key().expose(),
        &unhex("sframe_key", &v.sframe_key)?,
    )?;
    expect_eq(
        "sframe_salt",
        derived.sframe_salt(),
        &unhex("sframe_salt", &v.sframe_salt)?,
    )?;
    expect_eq("nonce", &derived.nonce(ctr), &unhex("nonce", &v.nonce)?)?;
    let header = Header::new(kid, ctr).encode();
    let aad: Vec<u8> = [header.as_bytes(), &metadata].concat();
    expect_eq("aad", &aad, &unhex("aad", &v.aad)?)?;

    for &backend in Backend::AVAILABLE {
        let mut tx = Sender::with_backend(suite, backend);
        tx.add_key_at(kid, &base_key, ctr)
            .map_err(|e| e.to_string())?;
        let sealed = tx.encrypt(&metadata, &pt).map_err(|e| e.to_string())?;
        expect_eq(&format!("{backend:?} ct"), &sealed, &ct)?;
        let mut rx = Receiver::with_backend(suite, backend);
        rx.add_key(kid, &base_key).map_err(|e| e.to_string())?;
        let opened = rx
            .decrypt(&metadata, &ct)
            .map_err(|e| format!("{backend:?}: decrypting published ct: {e}"))?;
        expect_eq(&format!("{backend:?} pt"), &opened, &pt)?;
    }
    Ok(())
}
