//! Encrypts a few media-like frames with SFrame and decrypts them again,
//! showing what crosses the wire and what the receiver rejects.
//!
//! `cargo run --release -p hush-sframe --example roundtrip`

use hush_sframe::{ALL_SUITES, CipherSuite, Error, Header, KeyId, Receiver, Sender};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn short_hex(bytes: &[u8]) -> String {
    if bytes.len() <= 24 {
        hex(bytes)
    } else {
        format!("{}…({} bytes)", hex(&bytes[..24]), bytes.len())
    }
}

fn main() -> Result<(), Error> {
    // In hush the base keys come from the e2ee layer; here, fixed demo keys.
    let alice_kid = KeyId(0x0100); // sender slot 1, generation 0
    let alice_key = *b"alice demo key!!";
    let suite = CipherSuite::AesGcm128Sha256;

    let mut alice = Sender::new(suite);
    alice.add_key(alice_kid, &alice_key)?;
    let mut bob = Receiver::new(suite);
    bob.add_key(alice_kid, &alice_key)?;

    println!(
        "suite {suite:?} (0x{:04x}), backend {:?}",
        suite.id(),
        hush_sframe::Backend::default()
    );
    let frames: [(&str, &[u8], &[u8]); 3] = [
        (
            "opus audio",
            b"",
            b"opus frame: 20 ms of someone saying hello",
        ),
        (
            "vp8 key frame",
            b"\x10\x02\x00\x9d\x01\x2a\x40\x01\xf0\x00",
            b"vp8 key frame payload bytes ...",
        ),
        ("vp8 delta", b"\x31\x05\x00", b"vp8 delta frame payload"),
    ];
    for (name, clear_prefix, payload) in frames {
        let sealed = alice.encrypt(clear_prefix, payload)?;
        let (header, hlen) = Header::parse(&sealed)?;
        println!("\n{name}");
        println!("  plaintext   {:?}", String::from_utf8_lossy(payload));
        println!(
            "  clear prefix (authenticated metadata) {}",
            hex(clear_prefix)
        );
        println!(
            "  sframe header {} = kid {} ctr {}",
            hex(&sealed[..hlen]),
            header.kid,
            header.ctr
        );
        println!("  ciphertext||tag {}", short_hex(&sealed[hlen..]));
        let opened = bob.decrypt(clear_prefix, &sealed)?;
        println!("  decrypted   {:?}", String::from_utf8_lossy(&opened));
        assert_eq!(opened, payload);
    }

    println!("\nwhat the receiver refuses (a fresh vp8 key frame, not yet received):");
    let prefix: &[u8] = b"\x10\x02\x00\x9d\x01\x2a\x40\x01\xf0\x00";
    let sealed = alice.encrypt(prefix, b"another key frame")?;
    let mut tampered = sealed.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    println!(
        "  one flipped tag bit      -> {}",
        outcome(bob.decrypt(prefix, &tampered))
    );
    let mut other_prefix = prefix.to_vec();
    other_prefix[0] ^= 0x01;
    println!(
        "  changed clear prefix     -> {}",
        outcome(bob.decrypt(&other_prefix, &sealed))
    );
    println!(
        "  the genuine frame        -> {}",
        outcome(bob.decrypt(prefix, &sealed))
    );
    println!(
        "  the same frame again     -> {}",
        outcome(bob.decrypt(prefix, &sealed))
    );
    let mut eve = Sender::new(suite);
    eve.add_key(KeyId(0x0200), b"eve's guess key!")?;
    let forged = eve.encrypt(b"", b"injected")?;
    println!(
        "  frame under unknown KID  -> {}",
        outcome(bob.decrypt(b"", &forged))
    );

    println!("\nall five RFC 9605 suites, one frame each:");
    for suite in ALL_SUITES {
        let mut tx = Sender::new(suite);
        let mut rx = Receiver::new(suite);
        tx.add_key(KeyId(7), &alice_key)?;
        rx.add_key(KeyId(7), &alice_key)?;
        let sealed = tx.encrypt(b"", b"hello")?;
        let ok = rx.decrypt(b"", &sealed)? == b"hello";
        println!(
            "  0x{:04x} {:<24} {} bytes on the wire for 5 bytes of media: {}",
            suite.id(),
            format!("{suite:?}"),
            sealed.len(),
            if ok { "ok" } else { "MISMATCH" }
        );
    }
    Ok(())
}

fn outcome(r: Result<Vec<u8>, Error>) -> String {
    match r {
        Ok(pt) => format!(
            "ACCEPTED {:?} (this is a bug)",
            String::from_utf8_lossy(&pt)
        ),
        Err(e) => format!("rejected: {e}"),
    }
}
