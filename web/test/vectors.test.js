// @ts-check
// The hush protocol module against docs/vectors/*.json (vector by vector,
// as docs/verify_vectors.py checks them), then round trips, then attacks.
// Run with `npm test` (node --test test/).

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, webcrypto } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';

import * as P from '../src/protocol.js';

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

const VECTORS = new URL('../../docs/vectors/', import.meta.url);

/**
 * @param {string} name
 * @returns {any}
 */
function loadVectors(name) {
  return JSON.parse(readFileSync(new URL(name, VECTORS), 'utf8'));
}

const e2ee = loadVectors('e2ee.json');
const media = loadVectors('media.json');
const red = loadVectors('red.json');

/** @param {string} text */
function h(text) {
  assert.match(text, /^(?:[0-9a-f]{2})*$/, 'vector bytes are lowercase hex');
  return Uint8Array.from(Buffer.from(text, 'hex'));
}

/** @param {Uint8Array} bytes */
function hex(bytes) {
  return Buffer.from(bytes).toString('hex');
}

/**
 * Expects `promise` (or `fn`) to throw a ProtocolError with `code`.
 * @param {Promise<unknown> | (() => unknown)} action
 * @param {P.ErrorCode} code
 */
async function rejectsWith(action, code) {
  const run = typeof action === 'function' ? async () => action() : () => action;
  await assert.rejects(run, (/** @type {unknown} */ err) => {
    assert.ok(err instanceof P.ProtocolError, `expected a ProtocolError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return true;
  });
}

/**
 * A copy of `bytes` with bit 0 of byte `at` flipped.
 * @param {Uint8Array} bytes
 * @param {number} at
 */
function flip(bytes, at) {
  const out = bytes.slice();
  out[at] = (out[at] ?? 0) ^ 0x01;
  return out;
}

/**
 * Decrypts an envelope with a raw directional key, as an outside check
 * that the channel sealed it under that key (§4.1).
 * @param {Uint8Array} key
 * @param {Uint8Array} envelope
 */
async function openWithRawKey(key, envelope) {
  const aes = await webcrypto.subtle.importKey('raw', key, 'AES-GCM', false, ['decrypt']);
  const nonce = new Uint8Array(12);
  nonce.set(envelope.subarray(33, 41), 4);
  const plain = await webcrypto.subtle.decrypt(
    { name: 'AES-GCM', iv: nonce, additionalData: envelope.subarray(0, 41) },
    aes,
    envelope.subarray(41),
  );
  return new Uint8Array(plain);
}

/** The key package vector's member "a" and the pairwise vector's member "b", with their channels. */
async function vectorPair() {
  const pw = e2ee.pairwise;
  const a = await P.EphemeralKeyPair.fromSecret(h(pw.a.ephemeral_secret));
  const b = await P.EphemeralKeyPair.fromSecret(h(pw.b.ephemeral_secret));
  /**
   * @param {any} m
   * @param {P.EphemeralKeyPair} pair
   */
  const own = (m, pair) => ({ participantId: h(m.participant_id), identity: h(m.identity_public), ephemeral: pair });
  /** @param {any} m */
  const peer = (m) => ({
    participantId: h(m.participant_id),
    identity: h(m.identity_public),
    ephemeral: h(m.ephemeral_public),
  });
  const aToB = await P.PairwiseChannel.derive(pw.room, own(pw.a, a), peer(pw.b));
  const bToA = await P.PairwiseChannel.derive(pw.room, own(pw.b, b), peer(pw.a));
  return { a, b, aToB, bToA };
}

/** Two fresh members of one room and their channels to each other. */
async function freshPair(room = 'test-room', nowMs = 1_800_000_000_000) {
  const alice = await P.LocalMember.create(await P.Identity.generate(), room, nowMs);
  const bob = await P.LocalMember.create(await P.Identity.generate(), room, nowMs);
  return { alice, bob, ab: await alice.channelTo(bob.keyPackage), ba: await bob.channelTo(alice.keyPackage) };
}

/**
 * A receiver holding `key`, and a sender under it.
 * @param {bigint} [kid]
 */
async function framePair(kid = 0xa1a1_0000_0001n) {
  const key = await P.SframeKey.derive(new Uint8Array(32).fill(7), kid);
  const receiver = new P.SframeReceiver();
  receiver.addKey(key);
  return { sender: new P.SframeSender(key), receiver, key };
}

/** The identity of the key package vector (seed 0x11...). */
async function vectorIdentity() {
  return P.Identity.fromSeed(h(e2ee.key_package.identity_seed));
}

// Every vector file and section is listed here; a new one must get a check.
const CHECKED = {
  'e2ee.json': ['description', 'envelopes', 'key_package', 'kid_layout', 'pairwise', 'ratchet', 'safety_number'],
  'media.json': ['description', 'frames'],
  'red.json': ['description', 'payload_type', 'redundant', 'primary', 'payload'],
};
// Files the Rust side may add; checked where they are (group.json: replayed by test/group.test.js).
const OPTIONAL = {
  'group.json': ['description', 'room', 'config', 'me', 'steps'],
};

// ---------------------------------------------------------------------------
// Vectors
// ---------------------------------------------------------------------------

describe('vectors', () => {
  test('every vector file and section has a check here', () => {
    const files = readdirSync(VECTORS).filter((n) => n.endsWith('.json')).sort();
    const present = Object.entries(OPTIONAL).filter(([file]) => files.includes(file));
    const known = { ...CHECKED, ...Object.fromEntries(present) };
    assert.deepEqual(files, Object.keys(known).sort());
    for (const [file, keys] of Object.entries(known)) {
      assert.deepEqual(Object.keys(loadVectors(file)).sort(), [...keys].sort(), file);
    }
  });

  describe('e2ee.json key_package (§2, §3)', () => {
    const kp = e2ee.key_package;

    test('identity public key and fingerprint from the seed', async () => {
      const identity = await vectorIdentity();
      assert.equal(hex(identity.publicKey), kp.identity_public);
      // §2: first 8 bytes of SHA-256, four groups of four hex digits.
      const digest = createHash('sha256').update(h(kp.identity_public)).digest('hex');
      const want = [0, 4, 8, 12].map((i) => digest.slice(i, i + 4)).join(':');
      assert.equal(await P.fingerprint(identity.publicKey), want);
      assert.match(want, /^[0-9a-f]{4}(:[0-9a-f]{4}){3}$/);
    });

    test('ephemeral public key from the secret', async () => {
      const pair = await P.EphemeralKeyPair.fromSecret(h(kp.ephemeral_secret));
      assert.equal(hex(pair.publicKey), kp.ephemeral_public);
    });

    test('signing input', () => {
      const input = P.keyPackageSigningInput({
        room: kp.room,
        participantId: h(kp.participant_id),
        identity: h(kp.identity_public),
        ephemeral: h(kp.ephemeral_public),
        created: BigInt(kp.created_ms),
      });
      assert.equal(hex(input), kp.signing_input);
    });

    test('encoding (Ed25519 signatures are deterministic)', async () => {
      const member = await P.LocalMember.fromSecrets(
        await vectorIdentity(),
        kp.room,
        kp.created_ms,
        h(kp.participant_id),
        h(kp.ephemeral_secret),
      );
      assert.equal(hex(member.keyPackage.bytes), kp.encoded);
    });

    test('the encoded package verifies and parses to its fields', async () => {
      const got = await P.verifyKeyPackage(h(kp.encoded), { room: kp.room, nowMs: kp.created_ms });
      assert.equal(got.room, kp.room);
      assert.equal(hex(got.participantId), kp.participant_id);
      assert.equal(hex(got.identity), kp.identity_public);
      assert.equal(hex(got.ephemeral), kp.ephemeral_public);
      assert.equal(got.created, BigInt(kp.created_ms));
      assert.equal(hex(got.bytes), kp.encoded);
      assert.equal(kp.signing_input.slice(-16), BigInt(kp.created_ms).toString(16).padStart(16, '0'));
    });
  });

  describe('e2ee.json pairwise (§4)', () => {
    const pw = e2ee.pairwise;

    test('ephemeral public keys from the secrets', async () => {
      const { a, b } = await vectorPair();
      assert.equal(hex(a.publicKey), pw.a.ephemeral_public);
      assert.equal(hex(b.publicKey), pw.b.ephemeral_public);
    });

    test('shared secret, from both ends', async () => {
      const { a, b } = await vectorPair();
      assert.equal(hex(await a.sharedSecret(h(pw.b.ephemeral_public))), pw.shared_secret);
      assert.equal(hex(await b.sharedSecret(h(pw.a.ephemeral_public))), pw.shared_secret);
    });

    test('lo member and HKDF info, whatever the argument order', () => {
      const a = { identity: h(pw.a.identity_public), ephemeral: h(pw.a.ephemeral_public) };
      const b = { identity: h(pw.b.identity_public), ephemeral: h(pw.b.ephemeral_public) };
      const ab = P.pairwiseInfo(a, b);
      assert.equal(ab.aIsLo ? 'a' : 'b', pw.lo);
      assert.equal(hex(ab.info), pw.info);
      const ba = P.pairwiseInfo(b, a);
      assert.equal(ba.aIsLo ? 'b' : 'a', pw.lo);
      assert.equal(hex(ba.info), pw.info);
    });

    test('key a -> b seals what a sends and b opens', async () => {
      const { aToB, bToA } = await vectorPair();
      const envelope = await aToB.seal({ type: 'hello' });
      assert.deepEqual(await openWithRawKey(h(pw.key_a_to_b), envelope), Uint8Array.of(0x03));
      assert.deepEqual(await bToA.open(envelope), { type: 'hello' });
    });

    test('key b -> a seals what b sends and a opens', async () => {
      const { aToB, bToA } = await vectorPair();
      const envelope = await bToA.seal({ type: 'hello' });
      assert.deepEqual(await openWithRawKey(h(pw.key_b_to_a), envelope), Uint8Array.of(0x03));
      assert.deepEqual(await aToB.open(envelope), { type: 'hello' });
    });
  });

  describe('e2ee.json envelopes (§4.1, §4.2)', async () => {
    // One channel pair for the list: the vectors are consecutive envelopes a -> b.
    const pair = vectorPair();
    const pw = e2ee.pairwise;
    /** @type {any[]} */
    const envelopes = e2ee.envelopes;
    for (const [i, env] of envelopes.entries()) {
      test(`envelopes[${i}]: ${env.message}, counter ${env.counter}`, async () => {
        const { aToB, bToA } = await pair;
        assert.equal(env.from, 'a');
        assert.equal(env.to, 'b');
        assert.equal(env.counter, i, 'the vectors are a -> b counters 0, 1, 2 in order');
        /** @type {P.Message} */
        let message;
        if (env.message === 'key_ack') message = { type: 'key_ack', kid: BigInt(env.kid) };
        else if (env.message === 'hello') message = { type: 'hello' };
        else if (env.message === 'sender_key') message = { type: 'sender_key', kid: BigInt(env.kid), key: h(env.base_key) };
        else throw new Error(`unknown message ${env.message}`);
        assert.equal(hex(P.encodeMessage(message)), env.plaintext);
        assert.deepEqual(P.decodeMessage(h(env.plaintext)), message);
        const sealed = await aToB.seal(message);
        assert.equal(hex(sealed), env.envelope);
        const header = P.parseEnvelopeHeader(sealed);
        assert.equal(hex(header.from), pw.a.participant_id);
        assert.equal(hex(header.to), pw.b.participant_id);
        assert.equal(header.counter, BigInt(env.counter));
        assert.deepEqual(await bToA.open(h(env.envelope)), message);
      });
    }
  });

  describe('e2ee.json ratchet (§5.2)', () => {
    /** @type {any[]} */
    const steps = e2ee.ratchet;
    test('ratchet[0] is generation (0, 0)', () => {
      assert.equal(steps[0].rekey, 0);
      assert.equal(steps[0].ratchet, 0);
    });
    for (const [i, step] of steps.entries()) {
      if (i === 0) continue;
      test(`ratchet[${i}]: generation (${step.rekey}, ${step.ratchet})`, async () => {
        const next = await P.ratchetBaseKey(h(steps[i - 1].base_key), { rekey: step.rekey, ratchet: step.ratchet });
        assert.equal(hex(next), step.base_key);
      });
    }
  });

  describe('e2ee.json kid_layout (§5.1)', () => {
    /** @type {any[]} */
    const layouts = e2ee.kid_layout;
    for (const [i, k] of layouts.entries()) {
      test(`kid_layout[${i}]: slot ${k.slot}, generation (${k.rekey}, ${k.ratchet})`, () => {
        const kid = P.makeKid(k.slot, { rekey: k.rekey, ratchet: k.ratchet });
        assert.equal(kid, BigInt(k.kid));
        assert.deepEqual(P.splitKid(BigInt(k.kid)), { slot: k.slot, rekey: k.rekey, ratchet: k.ratchet });
        assert.ok(P.kidInSlot(kid, k.slot));
      });
    }
    test('the slot of the vector participants is their first two bytes', () => {
      assert.equal(P.slotOf(h(e2ee.pairwise.a.participant_id)), 0xa1a1);
      assert.equal(layouts[1].slot, 0xa1a1);
    });
  });

  describe('e2ee.json safety_number (§7)', () => {
    const sn = e2ee.safety_number;
    test('digits and display, in both orders', async () => {
      const ab = await P.safetyNumber(h(sn.identity_a), h(sn.identity_b));
      assert.equal(ab.digits, sn.digits);
      assert.equal(ab.display, sn.display);
      const ba = await P.safetyNumber(h(sn.identity_b), h(sn.identity_a));
      assert.deepEqual(ba, ab);
    });
  });

  describe('media.json frames (§6)', () => {
    /** @type {any[]} */
    const frames = media.frames;
    for (const [i, f] of frames.entries()) {
      test(`frames[${i}]: ${f.codec}, ctr ${f.ctr}`, async () => {
        assert.equal(f.cipher_suite, P.SFRAME_CIPHER_SUITE);
        /** @type {P.Codec} */
        const codec = f.codec === 'opus' ? 'opus' : 'vp8';
        assert.ok(['opus', 'vp8_key', 'vp8_delta'].includes(f.codec), f.codec);
        const frame = h(f.frame);
        assert.equal(P.clearPrefixLength(codec, frame), f.clear_prefix_len);
        if (f.codec !== 'opus') assert.equal(((frame[0] ?? 0) & 1) === 0, f.codec === 'vp8_key');
        const kid = BigInt(f.kid);
        const key = await P.SframeKey.derive(h(f.base_key), kid);
        const sender = new P.SframeSender(key, BigInt(f.ctr));
        const sealed = await sender.seal(codec, frame);
        assert.equal(hex(sealed), f.encrypted_frame);
        const receiver = new P.SframeReceiver();
        assert.ok(receiver.addKey(key));
        const opened = await receiver.open(codec, h(f.encrypted_frame));
        assert.equal(opened.kid, kid);
        assert.equal(opened.ctr, BigInt(f.ctr));
        assert.equal(hex(opened.frame), f.frame);
      });
    }
  });

  describe('red.json (RFC 2198, §11)', () => {
    test('write', () => {
      /** @type {any[]} */
      const blocks = red.redundant;
      const payload = P.writeRed(
        blocks.map((b) => ({ timestampOffset: b.timestamp_offset, payloadType: red.payload_type, data: h(b.data) })),
        red.payload_type,
        h(red.primary),
      );
      assert.equal(hex(payload), red.payload);
    });

    test('parse', () => {
      const parsed = P.parseRed(h(red.payload));
      assert.deepEqual(
        parsed.redundant.map((b) => ({ timestamp_offset: b.timestampOffset, data: hex(b.data) })),
        red.redundant,
      );
      for (const b of parsed.redundant) assert.equal(b.payloadType, red.payload_type);
      assert.equal(parsed.primary.payloadType, red.payload_type);
      assert.equal(hex(parsed.primary.data), red.primary);
    });
  });
});

// ---------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------

describe('round trips', () => {
  test('a generated identity signs key packages that verify', async () => {
    const identity = await P.Identity.generate();
    const member = await P.LocalMember.create(identity, 'room-1', 1_000_000);
    const got = await P.verifyKeyPackage(member.keyPackage.bytes, { room: 'room-1', nowMs: 1_000_000, newcomer: true });
    assert.deepEqual(got.identity, identity.publicKey);
    assert.deepEqual(got.participantId, member.participantId);
    assert.match(await P.fingerprint(identity.publicKey), /^[0-9a-f]{4}(:[0-9a-f]{4}){3}$/);
  });

  test('an identity loads from the PKCS#8 PEM the CLI writes (v2, with public key) and from v1', async () => {
    const kp = e2ee.key_package;
    const seed = h(kp.identity_seed);
    const v2 = Buffer.concat([
      h('3051020101300506032b657004220420'),
      seed,
      h('812100'),
      h(kp.identity_public),
    ]);
    const pem = (/** @type {Buffer} */ der) =>
      `-----BEGIN PRIVATE KEY-----\n${der.toString('base64')}\n-----END PRIVATE KEY-----\n`;
    assert.equal(hex((await P.Identity.fromPkcs8Pem(pem(v2))).publicKey), kp.identity_public);
    const v1 = Buffer.concat([h('302e020100300506032b657004220420'), seed]);
    assert.equal(hex((await P.Identity.fromPkcs8Pem(pem(v1))).publicKey), kp.identity_public);
    const wrongPublic = Buffer.from(v2);
    wrongPublic[82] = (wrongPublic[82] ?? 0) ^ 1;
    await rejectsWith(P.Identity.fromPkcs8Pem(pem(wrongPublic)), 'malformed');
    await rejectsWith(P.Identity.fromPkcs8Pem(pem(v1.subarray(0, 47))), 'malformed');
    await rejectsWith(P.Identity.fromPkcs8Pem('-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n'), 'malformed');
  });

  test('messages of every type and key length round trip', () => {
    /** @type {P.Message[]} */
    const messages = [
      { type: 'hello' },
      { type: 'key_ack', kid: 0n },
      { type: 'key_ack', kid: (1n << 64n) - 1n },
      { type: 'sender_key', kid: 0xffff_ffff_ffffn, key: new Uint8Array(16).fill(1) },
      { type: 'sender_key', kid: 1n, key: new Uint8Array(64).fill(2) },
    ];
    for (const m of messages) assert.deepEqual(P.decodeMessage(P.encodeMessage(m)), m);
    assert.throws(() => P.encodeMessage({ type: 'sender_key', kid: 1n, key: new Uint8Array(15) }), P.ProtocolError);
    assert.throws(() => P.encodeMessage({ type: 'sender_key', kid: 1n, key: new Uint8Array(65) }), P.ProtocolError);
  });

  test('a channel carries messages both ways, in and out of order', async () => {
    const { ab, ba } = await freshPair();
    const sealed = [];
    for (let i = 0; i < 5; i += 1) sealed.push(await ab.seal({ type: 'key_ack', kid: BigInt(i) }));
    for (const i of [3, 0, 4, 1, 2]) {
      assert.deepEqual(await ba.open(/** @type {Uint8Array} */ (sealed[i])), { type: 'key_ack', kid: BigInt(i) });
    }
    const key = P.randomSenderKey();
    // Bob's key carries Bob's slot; Alice's channel knows Bob as its peer.
    const kid = P.makeKid(P.slotOf(ab.peerId), { rekey: 0, ratchet: 0 });
    assert.deepEqual(await ab.open(await ba.seal({ type: 'sender_key', kid, key })), { type: 'sender_key', kid, key });
  });

  test('concurrent seals never share a counter', async () => {
    const { ab } = await freshPair();
    const sealed = await Promise.all(Array.from({ length: 20 }, () => ab.seal({ type: 'hello' })));
    const counters = new Set(sealed.map((e) => P.parseEnvelopeHeader(e).counter));
    assert.equal(counters.size, 20);
  });

  test('the ratchet depends on the generation it makes', async () => {
    const base = new Uint8Array(32).fill(0x5a);
    const a = await P.ratchetBaseKey(base, { rekey: 0, ratchet: 1 });
    const b = await P.ratchetBaseKey(base, { rekey: 1, ratchet: 1 });
    assert.notDeepEqual(a, b);
    assert.equal(a.length, 32);
  });

  test('SFrame headers: short and extended forms, minimal encodings', () => {
    const cases = [
      [0n, 0n, '00'],
      [7n, 5n, '75'],
      [8n, 0x1_0000n, '8a08010000'],
      [0xa1a1_0000_0001n, 7n, 'd7a1a100000001'],
      [(1n << 64n) - 1n, (1n << 64n) - 1n, 'ff' + 'ff'.repeat(16)],
    ];
    for (const [kid, ctr, want] of /** @type {[bigint, bigint, string][]} */ (cases)) {
      const header = P.encodeSframeHeader(kid, ctr);
      assert.equal(hex(header), want);
      assert.deepEqual(P.parseSframeHeader(Buffer.concat([header, h('abcd')])), { kid, ctr, length: header.length });
    }
  });

  test('frames of every codec round trip with the clear prefix in clear', async () => {
    const { sender, receiver } = await framePair();
    const vp8Key = Uint8Array.from([0x50, 0x2c, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00, 1, 2, 3]);
    const vp8Delta = Uint8Array.from([0x31, 0x05, 0x00, 9, 9, 9, 9]);
    const cases = /** @type {[P.Codec, Uint8Array, number][]} */ ([
      ['opus', Uint8Array.from([0xfc, 1, 2, 3]), 0],
      ['vp8', vp8Key, 10],
      ['vp8', vp8Delta, 3],
      ['vp8', vp8Key.subarray(0, 10), 10],
      ['vp8', vp8Delta.subarray(0, 3), 3],
      ['opus', new Uint8Array(0), 0],
    ]);
    for (const [codec, frame, clear] of cases) {
      const sealed = await sender.seal(codec, frame);
      assert.deepEqual(sealed.subarray(0, clear), frame.subarray(0, clear));
      assert.deepEqual((await receiver.open(codec, sealed)).frame, frame);
    }
  });

  test('a VP8 frame shorter than its clear prefix is refused, not sent half clear', async () => {
    const { sender } = await framePair();
    // The Rust client clamps the prefix to the frame here, which its own
    // receiver then splits differently (docs gap, see README).
    for (const frame of [new Uint8Array(0), Uint8Array.of(0x50, 1, 2, 3), Uint8Array.of(0x31, 1)]) {
      await rejectsWith(sender.seal('vp8', frame), 'malformed');
    }
  });

  test('a KID installed again keeps its key and its replay window (§6)', async () => {
    const { sender, receiver, key } = await framePair();
    const sealed = await sender.seal('opus', Uint8Array.of(1, 2, 3));
    await receiver.open('opus', sealed);
    assert.equal(receiver.addKey(await P.SframeKey.derive(new Uint8Array(32).fill(7), key.kid)), false);
    await rejectsWith(receiver.open('opus', sealed), 'replayed_frame');
  });

  test('RED with zero, one and two earlier frames round trips', () => {
    for (const n of [0, 1, 2]) {
      const blocks = Array.from({ length: n }, (_, i) => ({
        timestampOffset: (n - i) * 960,
        payloadType: 111,
        data: new Uint8Array(40 + i).fill(i),
      }));
      const primary = new Uint8Array(60).fill(9);
      const parsed = P.parseRed(P.writeRed(blocks, 111, primary));
      assert.deepEqual(parsed.redundant, blocks);
      assert.deepEqual(parsed.primary, { timestampOffset: 0, payloadType: 111, data: primary });
    }
    assert.deepEqual(P.writeRed([], 111, Uint8Array.of(1)), Uint8Array.of(0x6f, 1));
  });

  test('RED leaves out blocks it cannot describe, as the Rust writer', () => {
    const ok = Uint8Array.of(7, 7, 7);
    const payload = P.writeRed(
      [
        { timestampOffset: 2880, payloadType: 111, data: new Uint8Array(P.RED_MAX_BLOCK_LEN + 1) },
        { timestampOffset: P.RED_MAX_TIMESTAMP_OFFSET + 1, payloadType: 111, data: ok },
        { timestampOffset: 960, payloadType: 111, data: ok },
        { timestampOffset: 960, payloadType: 111, data: ok },
      ],
      111,
      Uint8Array.of(1),
    );
    const parsed = P.parseRed(payload);
    assert.equal(parsed.redundant.length, 1);
    assert.equal(parsed.redundant[0]?.timestampOffset, 960);
  });
});

// ---------------------------------------------------------------------------
// Attacks
// ---------------------------------------------------------------------------

describe('attacks', () => {
  describe('key packages (§3)', () => {
    const kp = e2ee.key_package;
    const encoded = h(kp.encoded);
    const at = { room: kp.room, nowMs: kp.created_ms };
    const sigStart = encoded.length - 64;

    test('a forged signature is refused', async () => {
      await rejectsWith(P.verifyKeyPackage(flip(encoded, sigStart), at), 'bad_signature');
      await rejectsWith(P.verifyKeyPackage(flip(encoded, encoded.length - 1), at), 'bad_signature');
    });

    test('any signed field changed is refused', async () => {
      // participant id, ephemeral key and created time: all under the signature.
      for (const offset of [14, 14 + 16 + 32, sigStart - 1]) {
        await rejectsWith(P.verifyKeyPackage(flip(encoded, offset), at), 'bad_signature');
      }
    });

    test('a malleable signature (S + L) is refused', async () => {
      const L = (1n << 252n) + 27742317777372353535851937790883648493n;
      let s = 0n;
      for (let i = 31; i >= 0; i -= 1) s = (s << 8n) | BigInt(encoded[sigStart + 32 + i] ?? 0);
      const malleable = encoded.slice();
      let v = s + L;
      for (let i = 0; i < 32; i += 1, v >>= 8n) malleable[sigStart + 32 + i] = Number(v & 0xffn);
      assert.equal(v, 0n, 'S + L still fits 32 bytes');
      await rejectsWith(P.verifyKeyPackage(malleable, at), 'bad_signature');
    });

    test('small-order identity keys and R are refused although WebCrypto accepts them', async () => {
      // The 8 torsion points of edwards25519 (both x signs where x != 0),
      // plus non-canonical encodings of 0 and 1 (y + p) that dalek decodes.
      const smallOrder = [
        '0000000000000000000000000000000000000000000000000000000000000000',
        '0000000000000000000000000000000000000000000000000000000000000080',
        '0100000000000000000000000000000000000000000000000000000000000000',
        '26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05',
        '26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85',
        'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a',
        'c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa',
        'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
        'edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
        'eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
      ];
      const message = new TextEncoder().encode('anything at all');
      // A = R = identity, S = 0: [S]B = R + [k]A holds for every message
      // (Node 20's WebCrypto accepts it; RFC 8032 cofactorless checks do).
      const identityPoint = h(smallOrder[2] ?? '');
      const forged = Buffer.concat([identityPoint, new Uint8Array(32)]);
      assert.equal(await P.verifyStrict(identityPoint, message, forged), false);
      for (const point of smallOrder) {
        assert.ok(P.isValidIdentityPoint(h(point)), `${point} decodes`);
        assert.equal(await P.verifyStrict(h(point), message, Buffer.concat([h(point), new Uint8Array(32)])), false);
      }
      // The whole key package path: fields signed "by" the identity point.
      const body = P.keyPackageSigningInput({
        room: kp.room,
        participantId: h(kp.participant_id),
        identity: identityPoint,
        ephemeral: h(kp.ephemeral_public),
        created: BigInt(kp.created_ms),
      }).subarray(P.KEY_PACKAGE_LABEL.length);
      const package_ = Buffer.concat([body, forged]);
      await rejectsWith(P.verifyKeyPackage(package_, at), 'bad_signature');
    });

    test('equations that hold only through a small-order A or R are refused', async () => {
      // With A = [a]B the vector identity (a from its seed, RFC 8032 §5.1.5):
      // (1) key = identity point, R = A, S = a: [S]B = R + [k]identity for any message;
      // (2) key = A, R = identity point, S = k * a: [S]B = identity + [k]A.
      const L = (1n << 252n) + 27742317777372353535851937790883648493n;
      const le = (/** @type {Uint8Array} */ b) => b.reduceRight((v, x) => (v << 8n) | BigInt(x), 0n);
      const toLe = (/** @type {bigint} */ v) => Uint8Array.from({ length: 32 }, (_, i) => Number((v >> BigInt(8 * i)) & 0xffn));
      const digest = createHash('sha512').update(h(kp.identity_seed)).digest();
      const scalar = Uint8Array.from(digest.subarray(0, 32));
      scalar[0] = (scalar[0] ?? 0) & 248;
      scalar[31] = ((scalar[31] ?? 0) & 127) | 64;
      const a = le(scalar) % L;
      const A = h(kp.identity_public);
      const identityPoint = h('01' + '00'.repeat(31));
      const message = new TextEncoder().encode('not signed by anyone');
      const smallKey = Buffer.concat([A, toLe(a)]);
      assert.equal(await P.verifyStrict(identityPoint, message, smallKey), false);
      const k = le(createHash('sha512').update(identityPoint).update(A).update(message).digest()) % L;
      const smallR = Buffer.concat([identityPoint, toLe((k * a) % L)]);
      assert.equal(await P.verifyStrict(A, message, smallR), false);
      // The control: a real signature of the same key verifies.
      const identity = await vectorIdentity();
      assert.equal(await P.verifyStrict(A, message, await identity.sign(message)), true);
    });

    test('an identity key that is not a curve point is malformed', async () => {
      const notAPoint = encoded.slice();
      notAPoint.set(h('02' + '00'.repeat(31)), 3 + kp.room.length + 16);
      await rejectsWith(P.verifyKeyPackage(notAPoint, at), 'malformed');
    });

    test('a package for another room is refused', async () => {
      await rejectsWith(P.verifyKeyPackage(encoded, { ...at, room: 'another-room' }), 'wrong_room');
      await rejectsWith(P.verifyKeyPackage(encoded, { ...at, room: 'vector-roo' }), 'wrong_room');
    });

    test('a stale package is refused: 24 h for members, 10 min for newcomers', async () => {
      const day = 24 * 3600 * 1000;
      await P.verifyKeyPackage(encoded, { ...at, nowMs: kp.created_ms + day });
      await rejectsWith(P.verifyKeyPackage(encoded, { ...at, nowMs: kp.created_ms + day + 1 }), 'stale_key_package');
      const tenMinutes = 10 * 60 * 1000;
      await P.verifyKeyPackage(encoded, { ...at, nowMs: kp.created_ms + tenMinutes, newcomer: true });
      await rejectsWith(
        P.verifyKeyPackage(encoded, { ...at, nowMs: kp.created_ms + tenMinutes + 1, newcomer: true }),
        'stale_key_package',
      );
    });

    test('a package from more than 5 minutes in the future is refused', async () => {
      const skew = 5 * 60 * 1000;
      await P.verifyKeyPackage(encoded, { ...at, nowMs: kp.created_ms - skew });
      await rejectsWith(P.verifyKeyPackage(encoded, { ...at, nowMs: kp.created_ms - skew - 1 }), 'key_package_from_future');
    });

    test('checks run in the order of §3: the signature before room and time', async () => {
      const forged = flip(encoded, sigStart);
      await rejectsWith(P.verifyKeyPackage(forged, { room: 'elsewhere', nowMs: 0 }), 'bad_signature');
      await rejectsWith(P.verifyKeyPackage(encoded, { room: 'elsewhere', nowMs: 0 }), 'wrong_room');
    });

    test('an unknown version, a truncated package and trailing bytes are refused', async () => {
      const v2 = encoded.slice();
      v2[0] = 2;
      await rejectsWith(P.verifyKeyPackage(v2, at), 'unsupported_version');
      await rejectsWith(P.verifyKeyPackage(encoded.subarray(0, encoded.length - 1), at), 'malformed');
      await rejectsWith(P.verifyKeyPackage(Buffer.concat([encoded, Uint8Array.of(0)]), at), 'malformed');
      await rejectsWith(P.verifyKeyPackage(new Uint8Array(0), at), 'malformed');
      // A room length pointing far past the end.
      const long = encoded.slice();
      long[1] = 0xff;
      long[2] = 0xff;
      await rejectsWith(P.verifyKeyPackage(long, at), 'malformed');
    });

    test('a room id that is not UTF-8 is malformed', async () => {
      const identity = await vectorIdentity();
      const body = P.keyPackageSigningInput({
        room: 'ab',
        participantId: h(kp.participant_id),
        identity: identity.publicKey,
        ephemeral: h(kp.ephemeral_public),
        created: BigInt(kp.created_ms),
      }).subarray(P.KEY_PACKAGE_LABEL.length);
      const bad = body.slice();
      bad[3] = 0xff; // "\xffb"
      const signature = await identity.sign(Buffer.concat([P.KEY_PACKAGE_LABEL, bad]));
      await rejectsWith(P.verifyKeyPackage(Buffer.concat([bad, signature]), at), 'malformed');
    });

    test('our own id or ephemeral key, and a known id, are refused (step 6)', async () => {
      const own = { participantId: h(kp.participant_id), ephemeral: new Uint8Array(32) };
      await rejectsWith(P.verifyKeyPackage(encoded, { ...at, own }), 'from_self');
      const ownKey = { participantId: new Uint8Array(16), ephemeral: h(kp.ephemeral_public) };
      await rejectsWith(P.verifyKeyPackage(encoded, { ...at, own: ownKey }), 'from_self');
      await rejectsWith(
        P.verifyKeyPackage(encoded, { ...at, isKnown: (id) => hex(id) === kp.participant_id }),
        'duplicate_member',
      );
      await P.verifyKeyPackage(encoded, { ...at, own: { participantId: new Uint8Array(16), ephemeral: new Uint8Array(32) }, isKnown: () => false });
    });
  });

  describe('pairwise channel (§4)', () => {
    test('a low-order ephemeral key gives no channel', async () => {
      const pair = await P.EphemeralKeyPair.generate();
      for (const u of ['00'.repeat(32), '01' + '00'.repeat(31)]) {
        await rejectsWith(pair.sharedSecret(h(u)), 'weak_key_agreement');
      }
    });

    test('a tampered envelope fails, and the genuine one still opens', async () => {
      const { ab, ba } = await freshPair();
      const kid = P.makeKid(P.slotOf(ba.peerId), { rekey: 0, ratchet: 1 });
      const envelope = await ab.seal({ type: 'sender_key', kid, key: new Uint8Array(32).fill(3) });
      // Counter (in the AAD), ciphertext, tag.
      for (const offset of [40, 41, 45, envelope.length - 1]) {
        await rejectsWith(ba.open(flip(envelope, offset)), 'envelope_authentication');
      }
      await rejectsWith(ba.open(envelope.subarray(0, envelope.length - 1)), 'envelope_authentication');
      await rejectsWith(ba.open(envelope.subarray(0, 41 + 15)), 'malformed');
      await rejectsWith(ba.open(flip(envelope, 0)), 'unsupported_version');
      await rejectsWith(ba.open(flip(envelope, 1)), 'wrong_sender');
      await rejectsWith(ba.open(flip(envelope, 17)), 'not_for_me');
      // Reflected to its sender: addressed to Alice, from Alice.
      const reflected = envelope.slice();
      reflected.set(envelope.subarray(1, 17), 17);
      await rejectsWith(ab.open(reflected), 'from_self');
      assert.equal((await ba.open(envelope)).type, 'sender_key');
    });

    test('a sender key sealed under the right key but the wrong slot is refused', async () => {
      const { ab, ba } = await freshPair();
      // Bob's channel expects Alice's slot (Alice is its peer).
      const aliceSlot = P.slotOf(ba.peerId);
      const wrongSlot = P.makeKid(aliceSlot ^ 1, { rekey: 0, ratchet: 0 });
      const envelope = await ab.seal({ type: 'sender_key', kid: wrongSlot, key: new Uint8Array(32) });
      await rejectsWith(ba.open(envelope), 'foreign_key_id');
      // Refused, so not recorded: the same envelope is refused for its KID again, not as a replay.
      await rejectsWith(ba.open(envelope), 'foreign_key_id');
      const highBits = (1n << 48n) | P.makeKid(aliceSlot, { rekey: 0, ratchet: 0 });
      await rejectsWith(ba.open(await ab.seal({ type: 'sender_key', kid: highBits, key: new Uint8Array(32) })), 'foreign_key_id');
      const good = P.makeKid(aliceSlot, { rekey: 0, ratchet: 0 });
      assert.equal((await ba.open(await ab.seal({ type: 'sender_key', kid: good, key: new Uint8Array(32) }))).type, 'sender_key');
    });

    test('a replayed envelope fails, and so does one below the window', async () => {
      const { ab, ba } = await freshPair();
      const first = await ab.seal({ type: 'hello' });
      assert.deepEqual(await ba.open(first), { type: 'hello' });
      await rejectsWith(ba.open(first), 'replayed_envelope');
      const sealed = [first];
      for (let i = 1; i <= 300; i += 1) sealed.push(await ab.seal({ type: 'key_ack', kid: BigInt(i) }));
      await ba.open(/** @type {Uint8Array} */ (sealed[300]));
      // 300 - 44 = 256: outside; 300 - 45 = 255: inside and fresh.
      await rejectsWith(ba.open(/** @type {Uint8Array} */ (sealed[44])), 'envelope_outside_window');
      assert.deepEqual(await ba.open(/** @type {Uint8Array} */ (sealed[45])), { type: 'key_ack', kid: 45n });
      await rejectsWith(ba.open(/** @type {Uint8Array} */ (sealed[45])), 'replayed_envelope');
    });

    test('a failed envelope does not advance the window', async () => {
      const { ab, ba } = await freshPair();
      /** @type {Uint8Array[]} */
      const sealed = [];
      for (let i = 0; i < 300; i += 1) sealed.push(await ab.seal({ type: 'hello' }));
      const last = /** @type {Uint8Array} */ (sealed[299]);
      await rejectsWith(ba.open(flip(last, last.length - 1)), 'envelope_authentication');
      // Had the forgery moved the window to 299, counter 0 would be too old.
      assert.deepEqual(await ba.open(/** @type {Uint8Array} */ (sealed[0])), { type: 'hello' });
    });

    test('the same envelope opened twice at once opens once', async () => {
      const { ab, ba } = await freshPair();
      const envelope = await ab.seal({ type: 'hello' });
      const results = await Promise.allSettled([ba.open(envelope), ba.open(envelope)]);
      assert.deepEqual(results.map((r) => r.status).sort(), ['fulfilled', 'rejected']);
    });

    test('an envelope for a third member opens nowhere else', async () => {
      const room = 'three';
      const { alice, ba } = await freshPair(room);
      const carol = await P.LocalMember.create(await P.Identity.generate(), room, 1_800_000_000_000);
      const ac = await alice.channelTo(carol.keyPackage);
      const ca = await carol.channelTo(alice.keyPackage);
      const toCarol = await ac.seal({ type: 'hello' });
      // Bob's channel from Alice: addressed to Carol, not to Bob.
      await rejectsWith(ba.open(toCarol), 'not_for_me');
      assert.deepEqual(await ca.open(toCarol), { type: 'hello' });
    });

    test('channels of different rooms do not interoperate', async () => {
      const alice = await P.LocalMember.create(await P.Identity.generate(), 'room-a', 1);
      const bob = await P.LocalMember.create(await P.Identity.generate(), 'room-b', 1);
      await rejectsWith(alice.channelTo(bob.keyPackage), 'wrong_room');
      // Below LocalMember: the room salts the keys (§4).
      const { a, b, aToB } = await vectorPair();
      const pw = e2ee.pairwise;
      const elsewhere = await P.PairwiseChannel.derive(
        'another-room',
        { participantId: h(pw.b.participant_id), identity: h(pw.b.identity_public), ephemeral: b },
        { participantId: h(pw.a.participant_id), identity: h(pw.a.identity_public), ephemeral: a.publicKey },
      );
      await rejectsWith(elsewhere.open(await aToB.seal({ type: 'hello' })), 'envelope_authentication');
    });
  });

  describe('messages (§4.2)', () => {
    test('unknown types, bad key lengths and trailing bytes are malformed', () => {
      for (const good of ['03', '02' + '00'.repeat(8), '01' + '00'.repeat(8) + '10' + '00'.repeat(16)]) {
        P.decodeMessage(h(good));
      }
      for (const bad of [
        '',
        '00',
        '04',
        '0300',
        '02' + '00'.repeat(7),
        '02' + '00'.repeat(9),
        '01' + '00'.repeat(8) + '0f' + '00'.repeat(15),
        '01' + '00'.repeat(8) + '41' + '00'.repeat(65),
        '01' + '00'.repeat(8) + '20' + '00'.repeat(31),
        '01' + '00'.repeat(8) + '20' + '00'.repeat(33),
        '01' + '00'.repeat(7),
      ]) {
        assert.throws(
          () => P.decodeMessage(Uint8Array.from(Buffer.from(bad, 'hex'))),
          (/** @type {unknown} */ e) => e instanceof P.ProtocolError && e.code === 'malformed',
          bad,
        );
      }
    });
  });

  describe('sender keys (§5.1)', () => {
    test('a KID with bits 63..48 set does not split', () => {
      assert.throws(() => P.splitKid(1n << 48n), P.ProtocolError);
      assert.equal(P.kidInSlot((1n << 48n) | (0xa1a1n << 32n), 0xa1a1), false);
      assert.equal(P.kidInSlot(0xa1a1n << 32n, 0xa1a2), false);
    });
  });

  describe('SFrame (§6)', () => {
    test('a tampered frame fails, and the genuine one still opens', async () => {
      const { sender, receiver } = await framePair();
      const frame = Uint8Array.from([0x50, 0x2c, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00, 1, 2, 3, 4]);
      const sealed = await sender.seal('vp8', frame);
      // Clear prefix (AAD), ciphertext, tag.
      for (const offset of [5, sealed.length - 17, sealed.length - 1]) {
        await rejectsWith(receiver.open('vp8', flip(sealed, offset)), 'frame_authentication');
      }
      // Counter byte of the header: the nonce changes, the tag fails.
      await rejectsWith(receiver.open('vp8', flip(sealed, 10 + 7)), 'frame_authentication');
      // KID byte of the header: no such key.
      await rejectsWith(receiver.open('vp8', flip(sealed, 11)), 'unknown_key_id');
      await rejectsWith(receiver.open('vp8', sealed.subarray(0, sealed.length - 1)), 'frame_authentication');
      assert.deepEqual((await receiver.open('vp8', sealed)).frame, frame);
    });

    test('the key-frame bit is authenticated: a flipped bit 0 is refused', async () => {
      const { sender, receiver } = await framePair();
      const sealed = await sender.seal('vp8', Uint8Array.from([0x31, 0x05, 0x00, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7]));
      await assert.rejects(receiver.open('vp8', flip(sealed, 0)), P.ProtocolError);
    });

    test('a replayed frame fails, and so does one below the window', async () => {
      const { sender, receiver } = await framePair();
      /** @type {Uint8Array[]} */
      const sealed = [];
      for (let i = 0; i < 1100; i += 1) sealed.push(await sender.seal('opus', Uint8Array.of(i & 0xff)));
      const at = (/** @type {number} */ i) => /** @type {Uint8Array} */ (sealed[i]);
      assert.equal(P.SFRAME_REPLAY_WINDOW, 1024);
      await receiver.open('opus', at(0));
      await rejectsWith(receiver.open('opus', at(0)), 'replayed_frame');
      await receiver.open('opus', at(1099));
      // 1099 - 75 = 1024: outside; 1099 - 76 = 1023: inside and fresh.
      await rejectsWith(receiver.open('opus', at(75)), 'frame_outside_window');
      assert.deepEqual((await receiver.open('opus', at(76))).frame, Uint8Array.of(76));
      await rejectsWith(receiver.open('opus', at(76)), 'replayed_frame');
    });

    test('the replay window agrees with a model that remembers every counter', () => {
      // Sizes that fill their words exactly and ones that do not; counters
      // in and out of order, jumps past the whole ring, and repeats.
      for (const size of [1, 31, 32, 100, 256, 1024]) {
        let seed = size;
        const next = () => {
          seed = (seed * 1103515245 + 12345) % 2147483648;
          return seed;
        };
        const w = new P.ReplayWindow(size);
        /** @type {Set<bigint>} */
        const accepted = new Set();
        let newest = -1n;
        for (let step = 0; step < 5000; step += 1) {
          const r = next() % 100;
          const jump = r < 2 ? BigInt(size * 3) : r < 30 ? 1n : r < 50 ? BigInt(2 + (next() % (size + 5))) : 0n;
          const back = BigInt(next() % (size * 2 + 2));
          const c = newest < 0n ? 0n : jump > 0n ? newest + jump : newest - back < 0n ? 0n : newest - back;
          const want = newest >= 0n && c <= newest && newest - c >= BigInt(size) ? 'too_old' : accepted.has(c) ? 'replayed' : 'fresh';
          assert.equal(w.check(c), want, `size ${size}, step ${step}, counter ${c}, newest ${newest}`);
          if (want === 'fresh') {
            w.accept(c);
            accepted.add(c);
            if (c > newest) newest = c;
          } else {
            assert.throws(() => w.accept(c), P.ProtocolError);
          }
        }
      }
    });

    test('a failed frame does not advance the window', async () => {
      const { sender, receiver } = await framePair();
      /** @type {Uint8Array[]} */
      const sealed = [];
      for (let i = 0; i < 200; i += 1) sealed.push(await sender.seal('opus', Uint8Array.of(i)));
      const last = /** @type {Uint8Array} */ (sealed[199]);
      await rejectsWith(receiver.open('opus', flip(last, last.length - 1)), 'frame_authentication');
      assert.deepEqual((await receiver.open('opus', /** @type {Uint8Array} */ (sealed[0]))).frame, Uint8Array.of(0));
    });

    test('a frame under another key of the same KID fails', async () => {
      const kid = 0xa1a1_0000_0002n;
      const sender = new P.SframeSender(await P.SframeKey.derive(new Uint8Array(32).fill(1), kid));
      const receiver = new P.SframeReceiver();
      receiver.addKey(await P.SframeKey.derive(new Uint8Array(32).fill(2), kid));
      await rejectsWith(receiver.open('opus', await sender.seal('opus', Uint8Array.of(1))), 'frame_authentication');
    });

    test('a key erased while a frame is being opened opens nothing', async () => {
      const { sender, receiver, key } = await framePair();
      const sealed = await sender.seal('opus', Uint8Array.of(1));
      const opening = receiver.open('opus', sealed);
      receiver.removeKey(key.kid);
      await rejectsWith(opening, 'unknown_key_id');
    });

    test('the same frame opened twice at once opens once', async () => {
      const { sender, receiver } = await framePair();
      const sealed = await sender.seal('opus', Uint8Array.of(1));
      const results = await Promise.allSettled([receiver.open('opus', sealed), receiver.open('opus', sealed)]);
      assert.deepEqual(results.map((r) => r.status).sort(), ['fulfilled', 'rejected']);
    });

    test('concurrent seals never share a counter', async () => {
      const { sender } = await framePair();
      const sealed = await Promise.all(Array.from({ length: 20 }, () => sender.seal('opus', Uint8Array.of(0))));
      assert.equal(new Set(sealed.map((f) => P.parseSframeHeader(f).ctr)).size, 20);
    });

    test('an erased key opens nothing', async () => {
      const { sender, receiver, key } = await framePair();
      const sealed = await sender.seal('opus', Uint8Array.of(1));
      assert.ok(receiver.removeKey(key.kid));
      await rejectsWith(receiver.open('opus', sealed), 'unknown_key_id');
    });

    test('truncated and non-minimal headers are refused', async () => {
      const { receiver } = await framePair();
      await rejectsWith(receiver.open('opus', new Uint8Array(0)), 'malformed');
      await rejectsWith(receiver.open('opus', h('ff0102')), 'malformed');
      assert.throws(() => P.parseSframeHeader(h('8005')), (/** @type {any} */ e) => e.code === 'non_minimal_header');
      assert.throws(() => P.parseSframeHeader(h('0a000100')), (/** @type {any} */ e) => e.code === 'non_minimal_header');
      assert.throws(() => P.parseSframeHeader(h('0900ff')), (/** @type {any} */ e) => e.code === 'non_minimal_header');
      // A header with no room for a tag.
      await rejectsWith(receiver.open('opus', Buffer.concat([P.encodeSframeHeader(0xa1a1_0000_0001n, 0n), new Uint8Array(15)])), 'malformed');
    });
  });

  describe('RED (RFC 2198)', () => {
    test('truncated, disordered and endless payloads are refused', () => {
      /** @param {string} bytes */
      const refused = (bytes) =>
        assert.throws(
          () => P.parseRed(h(bytes)),
          (/** @type {unknown} */ e) => e instanceof P.ProtocolError && e.code === 'malformed',
          bytes,
        );
      refused('');
      refused('ef00');
      // A block longer than what follows.
      refused('ef0f000a6f010203');
      // Offset zero, then offsets not decreasing.
      refused('ef0000016f0909');
      refused('ef0f0001ef1e00016f010203');
      // Nine redundant headers.
      let endless = '';
      for (let i = 0; i <= P.RED_MAX_BLOCKS_ACCEPTED; i += 1) {
        const word = ((0xef << 24) | ((16000 - i * 960) << 10)) >>> 0;
        endless += word.toString(16).padStart(8, '0');
      }
      refused(endless + '6f');
    });
  });
});
