#!/usr/bin/env python3
"""An independent implementation of docs/PROTOCOL.md sections 3 to 7 in
Python (using only the `cryptography` package and hashlib), written from the
document, that recomputes every vector in docs/vectors/ and exits 1 on any
mismatch. It shares no code with the Rust implementation."""
import hashlib
import hmac as hmac_mod
import json
import pathlib
import sys

try:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives import serialization
except ImportError:
    sys.exit("verify_vectors.py needs the `cryptography` package: pip install cryptography")

RAW = dict(encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw)
HERE = pathlib.Path(__file__).resolve().parent
failures = []


def check(name, got, want):
    if got != want:
        failures.append(f"{name}: got {got!r}, want {want!r}")


def hkdf(salt, ikm, info, length, hashname="sha256"):
    size = hashlib.new(hashname).digest_size
    prk = hmac_mod.new(salt if salt else b"\0" * size, ikm, hashname).digest()
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac_mod.new(prk, block + info + bytes([i]), hashname).digest()
        out += block
        i += 1
    return out[:length]


def u16(v):
    return v.to_bytes(2, "big")


def u64(v):
    return v.to_bytes(8, "big")


def identity_public(seed):
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(**RAW)


def x25519_public(secret):
    return X25519PrivateKey.from_private_bytes(secret).public_key().public_bytes(**RAW)


e2ee = json.loads((HERE / "vectors/e2ee.json").read_text())
H = bytes.fromhex

# Section 3: key package.
kp = e2ee["key_package"]
seed = H(kp["identity_seed"])
room = kp["room"].encode()
signed = (b"\x01" + u16(len(room)) + room + H(kp["participant_id"]) + identity_public(seed)
          + x25519_public(H(kp["ephemeral_secret"])) + u64(kp["created_ms"]))
check("key_package.signing_input", (b"hush/v1 key package" + signed).hex(), kp["signing_input"])
signature = Ed25519PrivateKey.from_private_bytes(seed).sign(b"hush/v1 key package" + signed)
check("key_package.encoded", (signed + signature).hex(), kp["encoded"])

# Section 4: pairwise channel.
pw = e2ee["pairwise"]
a, b = pw["a"], pw["b"]
for m in (a, b):
    check("pairwise.ephemeral_public", x25519_public(H(m["ephemeral_secret"])).hex(), m["ephemeral_public"])
shared = X25519PrivateKey.from_private_bytes(H(a["ephemeral_secret"])).exchange(
    X25519PublicKey.from_public_bytes(H(b["ephemeral_public"])))
check("pairwise.shared_secret", shared.hex(), pw["shared_secret"])
lo, hi = sorted([a, b], key=lambda m: H(m["ephemeral_public"]))
check("pairwise.lo", "a" if lo is a else "b", pw["lo"])
info = (b"hush/v1 pairwise" + H(lo["identity_public"]) + H(hi["identity_public"])
        + H(lo["ephemeral_public"]) + H(hi["ephemeral_public"]))
check("pairwise.info", info.hex(), pw["info"])
okm = hkdf(pw["room"].encode(), shared, info, 64)
lo_to_hi, hi_to_lo = okm[:32], okm[32:]
key_ab = lo_to_hi if lo is a else hi_to_lo
key_ba = hi_to_lo if lo is a else lo_to_hi
check("pairwise.key_a_to_b", key_ab.hex(), pw["key_a_to_b"])
check("pairwise.key_b_to_a", key_ba.hex(), pw["key_b_to_a"])

# Section 4.1-4.2: envelopes and messages.
for i, env in enumerate(e2ee["envelopes"]):
    if env["message"] == "key_ack":
        plaintext = b"\x02" + u64(env["kid"])
    elif env["message"] == "hello":
        plaintext = b"\x03"
    else:
        key = H(env["base_key"])
        plaintext = b"\x01" + u64(env["kid"]) + bytes([len(key)]) + key
    check(f"envelopes[{i}].plaintext", plaintext.hex(), env["plaintext"])
    header = b"\x01" + H(a["participant_id"]) + H(b["participant_id"]) + u64(env["counter"])
    nonce = b"\0\0\0\0" + u64(env["counter"])
    sealed = header + AESGCM(key_ab).encrypt(nonce, plaintext, header)
    check(f"envelopes[{i}].envelope", sealed.hex(), env["envelope"])

# Section 5: ratchet and KID layout.
steps = e2ee["ratchet"]
key = H(steps[0]["base_key"])
for step in steps[1:]:
    key = hkdf(b"", key, b"hush/v1 sender ratchet" + u16(step["rekey"]) + u16(step["ratchet"]), 32)
    check(f"ratchet[{step['ratchet']}]", key.hex(), step["base_key"])
for k in e2ee["kid_layout"]:
    check("kid_layout", k["slot"] << 32 | k["rekey"] << 16 | k["ratchet"], k["kid"])

# Section 7: safety number.
sn = e2ee["safety_number"]


def digits(k):
    h = hashlib.sha512(b"hush/v1 safety number" + k).digest()
    for _ in range(5199):
        h = hashlib.sha512(h + k).digest()
    return "".join("%05d" % (int.from_bytes(h[i:i + 5], "big") % 100000) for i in range(0, 30, 5))


ka, kb = sorted([H(sn["identity_a"]), H(sn["identity_b"])])
number = digits(ka) + digits(kb)
check("safety_number.digits", number, sn["digits"])
check("safety_number.display", " ".join(number[i:i + 5] for i in range(0, 60, 5)), sn["display"])

# Section 6: media frames (SFrame, RFC 9605, suite 0x0004).


def sframe_header(kid, ctr):
    def part(v):
        if v < 8:
            return v, b""
        n = (v.bit_length() + 7) // 8
        return 0x8 | (n - 1), v.to_bytes(n, "big")
    k, kb_ = part(kid)
    c, cb = part(ctr)
    return bytes([k << 4 | c]) + kb_ + cb


media = json.loads((HERE / "vectors/media.json").read_text())
for f in media["frames"]:
    frame = H(f["frame"])
    if f["codec"] == "opus":
        clear = 0
    else:
        clear = 10 if frame[0] & 1 == 0 else 3
    check(f"media.{f['codec']}.clear_prefix_len", clear, f["clear_prefix_len"])
    prefix, payload = frame[:clear], frame[clear:]
    secret_salt_info = u64(f["kid"]) + u16(4)
    prk = hmac_mod.new(b"\0" * 32, H(f["base_key"]), "sha256").digest()

    def expand(info, n):
        out, block, i = b"", b"", 1
        while len(out) < n:
            block = hmac_mod.new(prk, block + info + bytes([i]), "sha256").digest()
            out += block
            i += 1
        return out[:n]

    key = expand(b"SFrame 1.0 Secret key " + secret_salt_info, 16)
    salt = expand(b"SFrame 1.0 Secret salt " + secret_salt_info, 12)
    nonce = (int.from_bytes(salt, "big") ^ f["ctr"]).to_bytes(12, "big")
    header = sframe_header(f["kid"], f["ctr"])
    sealed = prefix + header + AESGCM(key).encrypt(nonce, payload, header + prefix)
    check(f"media.{f['codec']}.encrypted_frame", sealed.hex(), f["encrypted_frame"])

red = json.loads((HERE / "vectors/red.json").read_text())
pt = red["payload_type"]
built = b""
for b in red["redundant"]:
    data = H(b["data"])
    built += ((0x80 | pt) << 24 | b["timestamp_offset"] << 10 | len(data)).to_bytes(4, "big")
built += bytes([pt])
for b in red["redundant"]:
    built += H(b["data"])
built += H(red["primary"])
check("red.payload", built.hex(), red["payload"])

for line in failures:
    print("FAIL", line)
print(f"{'ok' if not failures else 'FAILED'}: {len(failures)} mismatches")
sys.exit(1 if failures else 0)
