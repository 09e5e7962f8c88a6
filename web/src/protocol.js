// @ts-check
/**
 * @file The hush protocol, version 1 (docs/PROTOCOL.md §1-8), for browsers:
 * identities, key packages, pairwise channels and their envelopes, sender
 * keys, SFrame media frames, safety numbers and RFC 2198 audio redundancy.
 *
 * Plain ES module, no dependencies: every primitive is WebCrypto
 * (`globalThis.crypto.subtle`), so the same file runs in Chromium and in
 * Node 20. Like the Rust crates it takes bytes and `now` and returns bytes:
 * no IO, no clock, no logging.
 *
 * Conventions:
 * - Byte strings are `Uint8Array`. Functions never keep a caller's array
 *   (they copy) unless documented, and never zero one they did not make.
 * - Every `u64` from the wire (KIDs, counters, times) is a `bigint`;
 *   16-bit and smaller values are `number`s.
 * - Malformed or hostile input throws {@link ProtocolError} with a `code`;
 *   misuse of the API throws it with code `invalid_argument`.
 * - CryptoKeys are non-extractable. Raw key bytes this module makes only to
 *   import them are zeroed right after.
 */

const subtle = globalThis.crypto.subtle;
const utf8 = new TextEncoder();

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/**
 * Why something was refused. Peer or network input: `malformed`,
 * `unsupported_version`, `bad_signature`, `wrong_room`, `stale_key_package`,
 * `key_package_from_future`, `from_self`, `duplicate_member`,
 * `weak_key_agreement`, `not_for_me`, `wrong_sender`,
 * `envelope_authentication`, `replayed_envelope`, `envelope_outside_window`,
 * `foreign_key_id`, `non_minimal_header`, `unknown_key_id`,
 * `frame_authentication`, `replayed_frame`, `frame_outside_window`. Group
 * state (src/group.js): `departed` (a departed member's key package shown
 * again), `unknown_member`, `unknown_key` (no key for a KID and none
 * derivable), `key_held` (nothing to derive: installed already). Local:
 * `channel_exhausted`, `counter_exhausted`, `generation_exhausted`,
 * `invalid_argument` (misuse).
 * @typedef {'malformed' | 'unsupported_version' | 'bad_signature' | 'wrong_room'
 *   | 'stale_key_package' | 'key_package_from_future' | 'from_self'
 *   | 'duplicate_member' | 'weak_key_agreement' | 'not_for_me' | 'wrong_sender'
 *   | 'envelope_authentication' | 'replayed_envelope' | 'envelope_outside_window'
 *   | 'foreign_key_id' | 'non_minimal_header' | 'unknown_key_id'
 *   | 'frame_authentication' | 'replayed_frame' | 'frame_outside_window'
 *   | 'departed' | 'unknown_member' | 'unknown_key' | 'key_held'
 *   | 'channel_exhausted' | 'counter_exhausted' | 'generation_exhausted'
 *   | 'invalid_argument'} ErrorCode
 */

/**
 * Non-secret facts about a refusal, for the caller's decisions and logs.
 * @typedef {{ kid?: bigint, counter?: bigint, participantId?: Uint8Array }} ErrorDetail
 */

/** The one error type of this module: a refused input or a misuse, named by `code`. */
export class ProtocolError extends Error {
  /**
   * @param {ErrorCode} code
   * @param {string} message never contains key material
   * @param {ErrorDetail} [detail]
   */
  constructor(code, message, detail = {}) {
    super(message);
    this.name = 'ProtocolError';
    /** @readonly */
    this.code = code;
    /** @readonly */
    this.detail = detail;
  }
}

// ---------------------------------------------------------------------------
// §2 Identities
// ---------------------------------------------------------------------------

/** Ed25519 PKCS#8 v1 prefix (RFC 8410): the 32-byte seed follows. */
const ED25519_PKCS8_PREFIX = Uint8Array.of(
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
);
/** PKCS#8 v2 (OneAsymmetricKey with the public key, as ed25519-dalek writes it) up to the seed. */
const ED25519_PKCS8_V2_PREFIX = Uint8Array.of(
  0x30, 0x51, 0x02, 0x01, 0x01, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
);
/** Between the seed and the public key in PKCS#8 v2: `[1] IMPLICIT BIT STRING`, 0 unused bits. */
const ED25519_PKCS8_V2_PUBLIC = Uint8Array.of(0x81, 0x21, 0x00);
/** X25519 PKCS#8 v1 prefix (RFC 8410): the 32-byte secret follows. */
const X25519_PKCS8_PREFIX = Uint8Array.of(
  0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20,
);

/** A device identity (§2): an Ed25519 key pair whose private half never leaves WebCrypto. */
export class Identity {
  /** @type {CryptoKey} */
  #privateKey;
  /** @type {Uint8Array} */
  #publicKey;

  /**
   * Use {@link Identity.generate}, {@link Identity.fromSeed} or
   * {@link Identity.fromPkcs8Pem}; this only pairs a key with its public bytes.
   * @param {CryptoKey} privateKey Ed25519 private key with the `sign` usage
   * @param {Uint8Array} publicKey its 32-byte public key
   */
  constructor(privateKey, publicKey) {
    if (privateKey.algorithm.name !== 'Ed25519' || privateKey.type !== 'private') {
      throw new ProtocolError('invalid_argument', 'identity key must be an Ed25519 private key');
    }
    this.#privateKey = privateKey;
    this.#publicKey = copyBytes(publicKey, 32, 'identity public key');
  }

  /** A new random identity (non-extractable private key: store the CryptoKey itself, e.g. in IndexedDB). */
  static async generate() {
    const pair = /** @type {CryptoKeyPair} */ (
      await subtle.generateKey({ name: 'Ed25519' }, false, ['sign', 'verify'])
    );
    const publicKey = new Uint8Array(await subtle.exportKey('raw', pair.publicKey));
    return new Identity(pair.privateKey, publicKey);
  }

  /**
   * The identity of a 32-byte RFC 8032 seed (test vectors, imported keys).
   * WebCrypto cannot compute a public key from a private one, so the seed
   * is imported once as extractable to read the public key from its JWK
   * (whose `d` string, a copy of the seed, cannot be zeroed; it is dropped
   * at once) and once more as the non-extractable key kept.
   * @param {Uint8Array} seed
   */
  static async fromSeed(seed) {
    const der = concat(ED25519_PKCS8_PREFIX, copyBytes(seed, 32, 'identity seed'));
    try {
      const probe = await subtle.importKey('pkcs8', der, { name: 'Ed25519' }, true, ['sign']);
      const jwk = await subtle.exportKey('jwk', probe);
      const publicKey = fromBase64Url(jwk.x ?? '');
      const privateKey = await subtle.importKey('pkcs8', der, { name: 'Ed25519' }, false, ['sign']);
      return new Identity(privateKey, publicKey);
    } finally {
      der.fill(0);
    }
  }

  /**
   * The identity in a PKCS#8 PEM file as the hush CLI writes it (§2,
   * `-----BEGIN PRIVATE KEY-----`, v1 or v2); a v2 file's public key must
   * match its seed.
   * @param {string} pem
   */
  static async fromPkcs8Pem(pem) {
    const match = /^-----BEGIN PRIVATE KEY-----\r?\n([A-Za-z0-9+/=\r\n]+)-----END PRIVATE KEY-----\r?\n?$/.exec(
      pem.trim() + '\n',
    );
    if (match === null) {
      throw new ProtocolError('malformed', 'not a PKCS#8 PEM private key');
    }
    const der = fromBase64((match[1] ?? '').replace(/[\r\n]/g, ''));
    try {
      /** @type {Uint8Array | null} */
      let claimed = null;
      let seed;
      if (der.length === 48 && startsWith(der, ED25519_PKCS8_PREFIX)) {
        seed = der.subarray(16, 48);
      } else if (
        der.length === 83 &&
        startsWith(der, ED25519_PKCS8_V2_PREFIX) &&
        startsWith(der.subarray(48), ED25519_PKCS8_V2_PUBLIC)
      ) {
        seed = der.subarray(16, 48);
        claimed = der.subarray(51, 83);
      } else {
        throw new ProtocolError('malformed', 'not an Ed25519 PKCS#8 private key');
      }
      const identity = await Identity.fromSeed(seed);
      if (claimed !== null && !bytesEqual(claimed, identity.#publicKey)) {
        throw new ProtocolError('malformed', 'PKCS#8 public key does not match its private key');
      }
      return identity;
    } finally {
      der.fill(0);
    }
  }

  /** The 32-byte public identity key other members see and pin (a copy). */
  get publicKey() {
    return this.#publicKey.slice();
  }

  /**
   * An Ed25519 signature (RFC 8032) of `message`.
   * @param {Uint8Array} message
   */
  async sign(message) {
    return new Uint8Array(await subtle.sign({ name: 'Ed25519' }, this.#privateKey, bufferOf(message)));
  }
}

/**
 * The printable fingerprint of a public identity (§2): the first 8 bytes of
 * SHA-256(key) as four groups of four hex digits joined by `:`.
 * @param {Uint8Array} publicIdentity 32 bytes
 */
export async function fingerprint(publicIdentity) {
  const key = copyBytes(publicIdentity, 32, 'identity public key');
  const digest = new Uint8Array(await subtle.digest('SHA-256', key));
  const hex = toHex(digest.subarray(0, 8));
  return [0, 4, 8, 12].map((i) => hex.slice(i, i + 4)).join(':');
}

/**
 * Ed25519 verification as ed25519-dalek's `verify_strict` (§1): rejects
 * `S >= L`, undecodable or small-order public keys and `R`, then checks the
 * signature with WebCrypto (which accepts small-order keys by itself).
 * @param {Uint8Array} publicKey 32 bytes
 * @param {Uint8Array} message
 * @param {Uint8Array} signature 64 bytes
 * @returns {Promise<boolean>}
 */
export async function verifyStrict(publicKey, message, signature) {
  if (!(publicKey instanceof Uint8Array) || publicKey.length !== 32) return false;
  if (!(signature instanceof Uint8Array) || signature.length !== 64) return false;
  if (littleEndian(signature.subarray(32, 64)) >= ED_L) return false;
  const a = edDecompress(publicKey);
  const r = edDecompress(signature.subarray(0, 32));
  if (a === null || r === null || edIsSmallOrder(a) || edIsSmallOrder(r)) return false;
  try {
    const key = await subtle.importKey('raw', bufferOf(publicKey), { name: 'Ed25519' }, false, ['verify']);
    return await subtle.verify({ name: 'Ed25519' }, key, bufferOf(signature), bufferOf(message));
  } catch {
    return false;
  }
}

/**
 * Whether 32 bytes decode to a point of edwards25519 the way ed25519-dalek
 * reads an identity key (`VerifyingKey::from_bytes`; §3 step 2).
 * @param {Uint8Array} bytes
 */
export function isValidIdentityPoint(bytes) {
  return bytes instanceof Uint8Array && bytes.length === 32 && edDecompress(bytes) !== null;
}

// ---------------------------------------------------------------------------
// §3 Key packages
// ---------------------------------------------------------------------------

/** Key package format version (§3, §8). */
export const KEY_PACKAGE_VERSION = 1;
/** Signature label of key packages: "hush/v1 key package". */
export const KEY_PACKAGE_LABEL = utf8.encode('hush/v1 key package');
/** Oldest acceptable key package of a listed member (§3 step 5): 24 h. */
export const KEY_PACKAGE_MAX_AGE_MS = 24 * 3600 * 1000;
/** Oldest acceptable key package of a newcomer (`member_joined`, §3 step 5): 10 min. */
export const NEWCOMER_KEY_PACKAGE_MAX_AGE_MS = 10 * 60 * 1000;
/** Clock skew tolerated for key packages dated in the future (§3 step 5): 5 min. */
export const KEY_PACKAGE_MAX_SKEW_MS = 5 * 60 * 1000;

/**
 * A key package whose signature has been verified (or our own). Every field is a copy.
 * @typedef {object} KeyPackage
 * @property {string} room the room id
 * @property {Uint8Array} participantId 16 bytes
 * @property {Uint8Array} identity 32-byte Ed25519 public key
 * @property {Uint8Array} ephemeral 32-byte X25519 public key
 * @property {bigint} created Unix milliseconds
 * @property {Uint8Array} signature 64 bytes
 * @property {Uint8Array} bytes the whole encoding, as sent
 */

/**
 * The fields a key package signs.
 * @typedef {object} KeyPackageFields
 * @property {string} room UTF-8 room id, at most 65535 bytes
 * @property {Uint8Array} participantId 16 bytes
 * @property {Uint8Array} identity 32-byte Ed25519 public key
 * @property {Uint8Array} ephemeral 32-byte X25519 public key
 * @property {bigint} created Unix milliseconds
 */

/**
 * How a received key package is judged (§3).
 * @typedef {object} KeyPackageCheck
 * @property {string} room the room we are in
 * @property {number} nowMs our clock, Unix milliseconds
 * @property {boolean} [newcomer] a `member_joined` package: 10 minutes old at most, not 24 h
 * @property {number} [maxAgeMs] oldest acceptable age, overriding the 24 h / 10 min of `newcomer`
 * @property {number} [maxSkewMs] clock skew tolerated for packages dated in the future (default 5 min)
 * @property {{ participantId: Uint8Array, ephemeral: Uint8Array }} [own] our own package's id and key (step 6)
 * @property {(participantId: Uint8Array) => boolean} [isKnown] whether the id is, or recently was,
 *   in the group (step 6)
 */

/**
 * The exact bytes a key package signature covers: label || every field before the signature.
 * @param {KeyPackageFields} fields
 */
export function keyPackageSigningInput(fields) {
  return concat(KEY_PACKAGE_LABEL, keyPackageBody(fields));
}

/**
 * Encodes and signs a key package (§3) with `identity`, whose public key must be `fields.identity`.
 * @param {Identity} identity
 * @param {KeyPackageFields} fields
 * @returns {Promise<KeyPackage>}
 */
export async function signKeyPackage(identity, fields) {
  if (!bytesEqual(identity.publicKey, fields.identity)) {
    throw new ProtocolError('invalid_argument', 'key package identity is not the signing identity');
  }
  const body = keyPackageBody(fields);
  const signature = await identity.sign(concat(KEY_PACKAGE_LABEL, body));
  return parseKeyPackage(concat(body, signature));
}

/**
 * Parses and verifies a received key package in the order of §3 (version,
 * exact parse and identity point, signature, room, freshness, then our own
 * id/key and known ids); any failure throws and nothing is returned.
 * @param {Uint8Array} bytes
 * @param {KeyPackageCheck} check
 * @returns {Promise<KeyPackage>}
 */
export async function verifyKeyPackage(bytes, check) {
  const now = millis(check.nowMs);
  const expectedRoom = roomBytes(check.room);
  const kp = parseKeyPackage(bytes);
  const signed = bytes.subarray(0, bytes.length - 64);
  // Signature first: nothing unauthenticated is judged further.
  if (!(await verifyStrict(kp.identity, concat(KEY_PACKAGE_LABEL, signed), kp.signature))) {
    throw new ProtocolError('bad_signature', 'key package signature does not verify');
  }
  if (!bytesEqual(utf8.encode(kp.room), expectedRoom)) {
    throw new ProtocolError('wrong_room', 'key package is for another room');
  }
  const maxSkew = check.maxSkewMs === undefined ? BigInt(KEY_PACKAGE_MAX_SKEW_MS) : millis(check.maxSkewMs);
  if (kp.created > now + maxSkew) {
    throw new ProtocolError('key_package_from_future', `key package is dated ${kp.created - now} ms ahead`);
  }
  const maxAge =
    check.maxAgeMs !== undefined
      ? millis(check.maxAgeMs)
      : BigInt(check.newcomer === true ? NEWCOMER_KEY_PACKAGE_MAX_AGE_MS : KEY_PACKAGE_MAX_AGE_MS);
  const age = now > kp.created ? now - kp.created : 0n;
  if (age > maxAge) {
    throw new ProtocolError('stale_key_package', `key package is ${age} ms old`);
  }
  if (
    check.own !== undefined &&
    (bytesEqual(kp.participantId, check.own.participantId) || bytesEqual(kp.ephemeral, check.own.ephemeral))
  ) {
    throw new ProtocolError('from_self', 'key package carries our own participant id or ephemeral key');
  }
  if (check.isKnown !== undefined && check.isKnown(kp.participantId.slice())) {
    throw new ProtocolError('duplicate_member', 'participant id is or was already in the group', {
      participantId: kp.participantId.slice(),
    });
  }
  return kp;
}

/**
 * Steps 1-2 of §3: version, exact layout, UTF-8 room, identity point.
 * Internal: an unverified package must never reach a caller.
 * @param {Uint8Array} bytes
 * @returns {KeyPackage}
 */
function parseKeyPackage(bytes) {
  const r = new Reader(bytes, 'key package');
  const version = r.u8();
  if (version !== KEY_PACKAGE_VERSION) {
    throw new ProtocolError('unsupported_version', `unsupported key package version ${version}`);
  }
  const roomLen = r.u16();
  const room = decodeUtf8(r.bytes(roomLen), 'key package room id');
  const participantId = r.bytes(16);
  const identity = r.bytes(32);
  if (!isValidIdentityPoint(identity)) {
    throw new ProtocolError('malformed', 'key package identity key is not a valid Ed25519 point');
  }
  const ephemeral = r.bytes(32);
  const created = r.u64();
  const signature = r.bytes(64);
  r.finish();
  return Object.freeze({ room, participantId, identity, ephemeral, created, signature, bytes: bytes.slice() });
}

/**
 * @param {KeyPackageFields} fields
 */
function keyPackageBody(fields) {
  const room = roomBytes(fields.room);
  const w = new Writer();
  w.u8(KEY_PACKAGE_VERSION);
  w.u16(room.length);
  w.bytes(room);
  w.bytes(copyBytes(fields.participantId, 16, 'participant id'));
  w.bytes(copyBytes(fields.identity, 32, 'identity public key'));
  w.bytes(copyBytes(fields.ephemeral, 32, 'ephemeral public key'));
  w.u64(u64Arg(fields.created, 'created'));
  return w.finish();
}

// ---------------------------------------------------------------------------
// §4 Pairwise channels
// ---------------------------------------------------------------------------

/** HKDF info label of the pairwise channel: "hush/v1 pairwise". */
export const PAIRWISE_LABEL = utf8.encode('hush/v1 pairwise');
/** Envelope format version (§4.1, §8). */
export const ENVELOPE_VERSION = 1;
/** Bytes of an envelope before its ciphertext: version, sender, recipient, counter. */
export const ENVELOPE_HEADER_LEN = 41;
/** Counters a receiver remembers per sender (§4.1). */
export const ENVELOPE_REPLAY_WINDOW = 256;
const TAG_LEN = 16;
const U64_MAX = (1n << 64n) - 1n;

/** A member's X25519 ephemeral key pair for one stay in one room (§3); the secret stays in WebCrypto. */
export class EphemeralKeyPair {
  /** @type {CryptoKey} */
  #secret;
  /** @type {Uint8Array} */
  #publicKey;

  /**
   * Use {@link EphemeralKeyPair.generate} or {@link EphemeralKeyPair.fromSecret}.
   * @param {CryptoKey} secret X25519 private key with the `deriveBits` usage
   * @param {Uint8Array} publicKey its 32-byte public key
   */
  constructor(secret, publicKey) {
    if (secret.algorithm.name !== 'X25519' || secret.type !== 'private') {
      throw new ProtocolError('invalid_argument', 'ephemeral key must be an X25519 private key');
    }
    this.#secret = secret;
    this.#publicKey = copyBytes(publicKey, 32, 'ephemeral public key');
  }

  /** A fresh random key pair (non-extractable secret). */
  static async generate() {
    const pair = /** @type {CryptoKeyPair} */ (await subtle.generateKey({ name: 'X25519' }, false, ['deriveBits']));
    return new EphemeralKeyPair(pair.privateKey, new Uint8Array(await subtle.exportKey('raw', pair.publicKey)));
  }

  /**
   * The key pair of a given 32-byte secret (test vectors); its public key
   * is X25519(secret, 9), computed without making the secret extractable.
   * @param {Uint8Array} secretBytes
   */
  static async fromSecret(secretBytes) {
    const der = concat(X25519_PKCS8_PREFIX, copyBytes(secretBytes, 32, 'ephemeral secret'));
    try {
      const secret = await subtle.importKey('pkcs8', der, { name: 'X25519' }, false, ['deriveBits']);
      const basePoint = new Uint8Array(32);
      basePoint[0] = 9;
      const pair = new EphemeralKeyPair(secret, new Uint8Array(32));
      pair.#publicKey = await pair.sharedSecret(basePoint);
      return pair;
    } finally {
      der.fill(0);
    }
  }

  /** The 32-byte X25519 public key (a copy). */
  get publicKey() {
    return this.#publicKey.slice();
  }

  /**
   * X25519(own secret, peer public) (RFC 7748); an all-zero result is
   * refused with `weak_key_agreement` (§1). The result is secret: zero it after use.
   * @param {Uint8Array} peerPublic 32 bytes
   */
  async sharedSecret(peerPublic) {
    const peer = await subtle.importKey(
      'raw',
      copyBytes(peerPublic, 32, 'peer ephemeral key'),
      { name: 'X25519' },
      false,
      [],
    );
    let shared;
    try {
      shared = new Uint8Array(await subtle.deriveBits({ name: 'X25519', public: peer }, this.#secret, 256));
    } catch {
      // WebCrypto itself refuses an all-zero secret (Secure Curves §X25519).
      throw new ProtocolError('weak_key_agreement', 'X25519 key agreement is not contributory');
    }
    if (shared.every((b) => b === 0)) {
      throw new ProtocolError('weak_key_agreement', 'X25519 key agreement is not contributory');
    }
    return shared;
  }
}

/**
 * Our membership in one room (§3): identity public key, fresh participant
 * id and ephemeral key pair, and the signed key package announcing them.
 */
export class LocalMember {
  /** @type {EphemeralKeyPair} */
  #ephemeral;

  /**
   * Use {@link LocalMember.create} or {@link LocalMember.fromSecrets}.
   * @param {KeyPackage} keyPackage our signed key package
   * @param {EphemeralKeyPair} ephemeral the key pair it announces
   */
  constructor(keyPackage, ephemeral) {
    if (!bytesEqual(keyPackage.ephemeral, ephemeral.publicKey)) {
      throw new ProtocolError('invalid_argument', 'key package does not announce this ephemeral key');
    }
    /** Our signed key package, to send with `join`. */
    this.keyPackage = keyPackage;
    this.#ephemeral = ephemeral;
  }

  /**
   * A fresh participant id and ephemeral key, signed by `identity`, for joining `room` at `nowMs`.
   * @param {Identity} identity
   * @param {string} room
   * @param {number} nowMs
   */
  static async create(identity, room, nowMs) {
    const participantId = globalThis.crypto.getRandomValues(new Uint8Array(16));
    const ephemeral = await EphemeralKeyPair.generate();
    return LocalMember.#make(identity, room, nowMs, participantId, ephemeral);
  }

  /**
   * As {@link LocalMember.create} with a chosen participant id and ephemeral secret (test vectors).
   * @param {Identity} identity
   * @param {string} room
   * @param {number} nowMs
   * @param {Uint8Array} participantId 16 bytes
   * @param {Uint8Array} ephemeralSecret 32 bytes
   */
  static async fromSecrets(identity, room, nowMs, participantId, ephemeralSecret) {
    const ephemeral = await EphemeralKeyPair.fromSecret(ephemeralSecret);
    return LocalMember.#make(identity, room, nowMs, participantId, ephemeral);
  }

  /**
   * @param {Identity} identity
   * @param {string} room
   * @param {number} nowMs
   * @param {Uint8Array} participantId
   * @param {EphemeralKeyPair} ephemeral
   */
  static async #make(identity, room, nowMs, participantId, ephemeral) {
    const keyPackage = await signKeyPackage(identity, {
      room,
      participantId,
      identity: identity.publicKey,
      ephemeral: ephemeral.publicKey,
      created: millis(nowMs),
    });
    return new LocalMember(keyPackage, ephemeral);
  }

  /** Our participant id (a copy). */
  get participantId() {
    return this.keyPackage.participantId.slice();
  }

  /**
   * The pairwise channel to the member of a verified key package of our room.
   * @param {KeyPackage} peer
   */
  async channelTo(peer) {
    if (!bytesEqual(utf8.encode(peer.room), utf8.encode(this.keyPackage.room))) {
      throw new ProtocolError('wrong_room', 'key package is for another room');
    }
    return PairwiseChannel.derive(
      this.keyPackage.room,
      { participantId: this.keyPackage.participantId, identity: this.keyPackage.identity, ephemeral: this.#ephemeral },
      peer,
    );
  }
}

/**
 * One member's half of the channel inputs (§4): id, identity, ephemeral key.
 * @typedef {{ participantId: Uint8Array, identity: Uint8Array, ephemeral: Uint8Array }} ChannelPeer
 */

/**
 * The HKDF info of the channel between two members and whether `a` is the
 * lower one (§4: members ordered by ephemeral public key, bytewise).
 * @param {{ identity: Uint8Array, ephemeral: Uint8Array }} a
 * @param {{ identity: Uint8Array, ephemeral: Uint8Array }} b
 */
export function pairwiseInfo(a, b) {
  const order = compareBytes(copyBytes(a.ephemeral, 32, 'ephemeral key'), copyBytes(b.ephemeral, 32, 'ephemeral key'));
  if (order === 0) {
    throw new ProtocolError('from_self', 'both members have the same ephemeral key');
  }
  const aIsLo = order < 0;
  const [lo, hi] = aIsLo ? [a, b] : [b, a];
  const info = concat(
    PAIRWISE_LABEL,
    copyBytes(lo.identity, 32, 'identity public key'),
    copyBytes(hi.identity, 32, 'identity public key'),
    lo.ephemeral,
    hi.ephemeral,
  );
  return { info, aIsLo };
}

/**
 * A message inside an envelope (§4.2). `key` of a sender key is secret.
 * @typedef {{ type: 'sender_key', kid: bigint, key: Uint8Array }
 *   | { type: 'key_ack', kid: bigint }
 *   | { type: 'hello' }} Message
 */

/** Message type bytes (§4.2). */
export const MESSAGE_TYPE = Object.freeze({ sender_key: 0x01, key_ack: 0x02, hello: 0x03 });

/**
 * Encodes a message (§4.2). The result holds a sender key's bytes: zero it after use.
 * @param {Message} message
 */
export function encodeMessage(message) {
  const w = new Writer();
  switch (message.type) {
    case 'sender_key': {
      const { key } = message;
      if (!(key instanceof Uint8Array) || key.length < 16 || key.length > 64) {
        throw new ProtocolError('invalid_argument', 'sender key must be 16 to 64 bytes');
      }
      w.u8(MESSAGE_TYPE.sender_key);
      w.u64(u64Arg(message.kid, 'kid'));
      w.u8(key.length);
      w.bytes(key);
      break;
    }
    case 'key_ack':
      w.u8(MESSAGE_TYPE.key_ack);
      w.u64(u64Arg(message.kid, 'kid'));
      break;
    case 'hello':
      w.u8(MESSAGE_TYPE.hello);
      break;
    default:
      throw new ProtocolError('invalid_argument', 'unknown message type');
  }
  return w.finish();
}

/**
 * Decodes a message (§4.2); an unknown type, a wrong length or trailing bytes are `malformed`.
 * @param {Uint8Array} bytes
 * @returns {Message}
 */
export function decodeMessage(bytes) {
  const r = new Reader(bytes, 'envelope message');
  /** @type {Message} */
  let message;
  switch (r.u8()) {
    case MESSAGE_TYPE.sender_key: {
      const kid = r.u64();
      const len = r.u8();
      if (len < 16 || len > 64) {
        throw new ProtocolError('malformed', 'sender key length out of range');
      }
      message = { type: 'sender_key', kid, key: r.bytes(len) };
      break;
    }
    case MESSAGE_TYPE.key_ack:
      message = { type: 'key_ack', kid: r.u64() };
      break;
    case MESSAGE_TYPE.hello:
      message = { type: 'hello' };
      break;
    default:
      throw new ProtocolError('malformed', 'unknown message type');
  }
  r.finish();
  return message;
}

/**
 * The clear header of an envelope (§4.1): enough to route it to its
 * channel. `from` is authenticated only once the envelope opens.
 * @param {Uint8Array} envelope
 * @returns {{ from: Uint8Array, to: Uint8Array, counter: bigint }}
 */
export function parseEnvelopeHeader(envelope) {
  const r = new Reader(envelope, 'envelope');
  const version = r.u8();
  if (version !== ENVELOPE_VERSION) {
    throw new ProtocolError('unsupported_version', `unsupported envelope version ${version}`);
  }
  const header = { from: r.bytes(16), to: r.bytes(16), counter: r.u64() };
  if (envelope.length < ENVELOPE_HEADER_LEN + TAG_LEN) {
    throw new ProtocolError('malformed', 'envelope shorter than its tag');
  }
  return header;
}

/**
 * One end of a pairwise channel (§4): seals envelopes to the peer and
 * opens the peer's, with the replay window of §4.1.
 */
export class PairwiseChannel {
  /** @type {Uint8Array} */
  #me;
  /** @type {Uint8Array} */
  #peer;
  /** @type {CryptoKey} */
  #sendKey;
  /** @type {CryptoKey} */
  #recvKey;
  /** @type {bigint | null} next counter to send; null once U64_MAX was used */
  #next = 0n;
  #window = new ReplayWindow(ENVELOPE_REPLAY_WINDOW);

  /**
   * Use {@link PairwiseChannel.derive} (or {@link LocalMember.channelTo}).
   * @param {Uint8Array} me
   * @param {Uint8Array} peer
   * @param {CryptoKey} sendKey
   * @param {CryptoKey} recvKey
   */
  constructor(me, peer, sendKey, recvKey) {
    this.#me = copyBytes(me, 16, 'participant id');
    this.#peer = copyBytes(peer, 16, 'participant id');
    this.#sendKey = sendKey;
    this.#recvKey = recvKey;
  }

  /**
   * Derives the channel between us and a peer in `room` (§4): X25519, then
   * HKDF-SHA256 (salt = room, info = label || identities || ephemerals of
   * lo then hi) to 64 bytes, lo→hi key first.
   * @param {string} room
   * @param {{ participantId: Uint8Array, identity: Uint8Array, ephemeral: EphemeralKeyPair }} own
   * @param {ChannelPeer} peer
   */
  static async derive(room, own, peer) {
    if (bytesEqual(own.participantId, peer.participantId)) {
      throw new ProtocolError('from_self', 'a channel to ourselves');
    }
    const { info, aIsLo } = pairwiseInfo(
      { identity: own.identity, ephemeral: own.ephemeral.publicKey },
      { identity: peer.identity, ephemeral: peer.ephemeral },
    );
    const shared = await own.ephemeral.sharedSecret(peer.ephemeral);
    /** @type {Uint8Array<ArrayBuffer> | null} */
    let okm = null;
    try {
      const ikm = await subtle.importKey('raw', shared, 'HKDF', false, ['deriveBits']);
      okm = new Uint8Array(
        await subtle.deriveBits({ name: 'HKDF', hash: 'SHA-256', salt: roomBytes(room), info }, ikm, 512),
      );
      const loToHi = await importAesGcm(okm.subarray(0, 32));
      const hiToLo = await importAesGcm(okm.subarray(32, 64));
      const [send, recv] = aIsLo ? [loToHi, hiToLo] : [hiToLo, loToHi];
      return new PairwiseChannel(own.participantId, peer.participantId, send, recv);
    } finally {
      shared.fill(0);
      okm?.fill(0);
    }
  }

  /** The peer's participant id (a copy). */
  get peerId() {
    return this.#peer.slice();
  }

  /**
   * Seals a message into the next envelope to the peer (§4.1). The counter
   * is taken before any await, so concurrent seals never share a nonce.
   * @param {Message} message
   */
  async seal(message) {
    const plaintext = encodeMessage(message);
    try {
      const counter = this.#next;
      if (counter === null) {
        throw new ProtocolError('channel_exhausted', 'envelope counter exhausted');
      }
      this.#next = counter === U64_MAX ? null : counter + 1n;
      const w = new Writer();
      w.u8(ENVELOPE_VERSION);
      w.bytes(this.#me);
      w.bytes(this.#peer);
      w.u64(counter);
      const header = w.finish();
      const sealed = await subtle.encrypt(
        { name: 'AES-GCM', iv: envelopeNonce(counter), additionalData: header, tagLength: 128 },
        this.#sendKey,
        plaintext,
      );
      return concat(header, new Uint8Array(sealed));
    } finally {
      plaintext.fill(0);
    }
  }

  /**
   * Opens an envelope from the peer (§4.1) and decodes its message (§4.2).
   * Refuses a wrong version, recipient or sender, a replayed counter or one
   * 256 or more below the newest, a failed tag, a malformed message and a
   * sender key whose KID is not in the peer's slot (§5.1). A refused
   * envelope changes nothing, the replay window included.
   * @param {Uint8Array} envelope
   * @returns {Promise<Message>}
   */
  async open(envelope) {
    const header = parseEnvelopeHeader(envelope);
    const { counter } = header;
    if (!bytesEqual(header.to, this.#me)) {
      throw new ProtocolError('not_for_me', 'envelope addressed to another participant');
    }
    if (bytesEqual(header.from, this.#me)) {
      throw new ProtocolError('from_self', 'envelope claims to come from us');
    }
    if (!bytesEqual(header.from, this.#peer)) {
      throw new ProtocolError('wrong_sender', 'envelope is from another member than this channel\'s');
    }
    this.#judge(counter);
    let plaintext;
    try {
      plaintext = new Uint8Array(
        await subtle.decrypt(
          {
            name: 'AES-GCM',
            iv: envelopeNonce(counter),
            additionalData: envelope.slice(0, ENVELOPE_HEADER_LEN),
            tagLength: 128,
          },
          this.#recvKey,
          envelope.slice(ENVELOPE_HEADER_LEN),
        ),
      );
    } catch {
      throw new ProtocolError('envelope_authentication', 'envelope failed authentication', { counter });
    }
    try {
      const message = decodeMessage(plaintext);
      if (message.type === 'sender_key' && !kidInSlot(message.kid, slotOf(this.#peer))) {
        throw new ProtocolError('foreign_key_id', 'sender key KID is not in the sender\'s slot', { kid: message.kid });
      }
      // Judged again: another open of the same counter may have finished meanwhile.
      this.#judge(counter);
      this.#window.accept(counter);
      return message;
    } finally {
      plaintext.fill(0);
    }
  }

  /** @param {bigint} counter */
  #judge(counter) {
    const verdict = this.#window.check(counter);
    if (verdict === 'replayed') {
      throw new ProtocolError('replayed_envelope', `replayed envelope, counter ${counter}`, { counter });
    }
    if (verdict === 'too_old') {
      throw new ProtocolError('envelope_outside_window', `envelope too old, counter ${counter}`, { counter });
    }
  }
}

/** @param {bigint} counter */
function envelopeNonce(counter) {
  const nonce = new Uint8Array(12);
  new DataView(nonce.buffer).setBigUint64(4, counter);
  return nonce;
}

/**
 * @param {Uint8Array<ArrayBuffer>} raw
 */
function importAesGcm(raw) {
  return subtle.importKey('raw', raw, { name: 'AES-GCM' }, false, ['encrypt', 'decrypt']);
}

/**
 * Which counters of one sender (or one KID) were accepted: the newest and
 * the `size - 1` before it (RFC 9605 §9.3 style; §4.1 with 256, §6 with
 * 1024). One bit per counter, in a ring as wide as the window.
 */
export class ReplayWindow {
  /** @type {bigint} */
  #size;
  /** @type {bigint | null} */
  #newest = null;
  /** Bit `c mod capacity` is set when counter `c` (within the window) was accepted. @type {Uint32Array} */
  #bits;
  /** @type {bigint} */
  #capacity;

  /** @param {number} size counters remembered, 1 to 65536 */
  constructor(size) {
    if (!Number.isInteger(size) || size < 1 || size > 65536) {
      throw new ProtocolError('invalid_argument', 'replay window size must be 1 to 65536');
    }
    this.#size = BigInt(size);
    this.#bits = new Uint32Array(Math.ceil(size / 32));
    this.#capacity = BigInt(this.#bits.length * 32);
  }

  /**
   * The word and mask of a counter's bit.
   * @param {bigint} counter
   * @returns {[number, number]}
   */
  #bit(counter) {
    const i = Number(counter % this.#capacity);
    return [i >>> 5, 1 << (i & 31)];
  }

  /**
   * Judges a counter without changing anything.
   * @param {bigint} counter
   * @returns {'fresh' | 'replayed' | 'too_old'}
   */
  check(counter) {
    if (this.#newest === null || counter > this.#newest) return 'fresh';
    if (this.#newest - counter >= this.#size) return 'too_old';
    const [w, m] = this.#bit(counter);
    return ((this.#bits[w] ?? 0) & m) !== 0 ? 'replayed' : 'fresh';
  }

  /**
   * Records a counter; call only after {@link ReplayWindow.check} said `fresh` and the input authenticated.
   * @param {bigint} counter
   */
  accept(counter) {
    if (this.check(counter) !== 'fresh') {
      throw new ProtocolError('invalid_argument', 'counter accepted twice or too old');
    }
    if (this.#newest === null || counter > this.#newest) {
      if (this.#newest !== null && counter - this.#newest < this.#capacity) {
        // Forget the counters the window slides past.
        for (let c = this.#newest + 1n; c <= counter; c += 1n) {
          const [w, m] = this.#bit(c);
          this.#bits[w] = (this.#bits[w] ?? 0) & ~m;
        }
      } else {
        this.#bits.fill(0);
      }
      this.#newest = counter;
    }
    const [w, m] = this.#bit(counter);
    this.#bits[w] = (this.#bits[w] ?? 0) | m;
  }
}

// ---------------------------------------------------------------------------
// §5 Sender keys
// ---------------------------------------------------------------------------

/** HKDF info label of the sender key ratchet: "hush/v1 sender ratchet". */
export const RATCHET_LABEL = utf8.encode('hush/v1 sender ratchet');

/**
 * Which key of a sender (§5.1): fresh keys since it joined, HKDF steps since the last fresh key; both u16.
 * @typedef {{ rekey: number, ratchet: number }} Generation
 */

/**
 * A participant's sender slot (§5.1): the first two bytes of its id, big-endian.
 * @param {Uint8Array} participantId 16 bytes
 */
export function slotOf(participantId) {
  const id = copyBytes(participantId, 16, 'participant id');
  return ((id[0] ?? 0) << 8) | (id[1] ?? 0);
}

/**
 * The SFrame KID of a sender's key (§5.1): `slot << 32 | rekey << 16 | ratchet`.
 * @param {number} slot u16
 * @param {Generation} generation
 */
export function makeKid(slot, generation) {
  return (
    (BigInt(u16Arg(slot, 'slot')) << 32n) |
    (BigInt(u16Arg(generation.rekey, 'rekey')) << 16n) |
    BigInt(u16Arg(generation.ratchet, 'ratchet'))
  );
}

/**
 * Splits a KID into slot and generation (§5.1); `foreign_key_id` if any of bits 63..48 is set.
 * @param {bigint} kid
 * @returns {{ slot: number, rekey: number, ratchet: number }}
 */
export function splitKid(kid) {
  if (typeof kid !== 'bigint' || kid < 0n || kid >> 48n !== 0n) {
    throw new ProtocolError('foreign_key_id', 'KID has bits above 47 set', { kid: typeof kid === 'bigint' ? kid : 0n });
  }
  return {
    slot: Number((kid >> 32n) & 0xffffn),
    rekey: Number((kid >> 16n) & 0xffffn),
    ratchet: Number(kid & 0xffffn),
  };
}

/**
 * Whether a KID is a valid hush KID of the given slot (§5.1).
 * @param {bigint} kid
 * @param {number} slot
 */
export function kidInSlot(kid, slot) {
  return typeof kid === 'bigint' && kid >= 0n && kid >> 48n === 0n && Number(kid >> 32n) === slot;
}

/**
 * One ratchet step (§5.2): the base key of generation `next` from the key
 * of the generation before it. The result is secret: the caller owns it.
 * @param {Uint8Array} baseKey the current base key
 * @param {Generation} next the NEW generation (its numbers go into the info)
 */
export async function ratchetBaseKey(baseKey, next) {
  const info = new Uint8Array(RATCHET_LABEL.length + 4);
  info.set(RATCHET_LABEL);
  const view = new DataView(info.buffer);
  view.setUint16(RATCHET_LABEL.length, u16Arg(next.rekey, 'rekey'));
  view.setUint16(RATCHET_LABEL.length + 2, u16Arg(next.ratchet, 'ratchet'));
  const ikm = await subtle.importKey('raw', keyBytes(baseKey), 'HKDF', false, ['deriveBits']);
  return new Uint8Array(
    await subtle.deriveBits({ name: 'HKDF', hash: 'SHA-256', salt: new Uint8Array(0), info }, ikm, 256),
  );
}

/** A fresh random 32-byte sender key (§5: what hush sends). The caller owns it. */
export function randomSenderKey() {
  return globalThis.crypto.getRandomValues(new Uint8Array(32));
}

// ---------------------------------------------------------------------------
// §6 Media frames: SFrame (RFC 9605) with the codec's clear prefix
// ---------------------------------------------------------------------------

/** The SFrame cipher suite of every hush frame (§6): AES_128_GCM_SHA256_128. */
export const SFRAME_CIPHER_SUITE = 0x0004;
/** Counters a receiver remembers per KID (§6). */
export const SFRAME_REPLAY_WINDOW = 1024;
const SFRAME_KEY_LABEL = utf8.encode('SFrame 1.0 Secret key ');
const SFRAME_SALT_LABEL = utf8.encode('SFrame 1.0 Secret salt ');

/**
 * A codec hush carries: its frames' clear prefix differs (§6).
 * @typedef {'opus' | 'vp8'} Codec
 */

/**
 * How many leading bytes of a frame (plain or encrypted) stay clear (§6):
 * Opus none; VP8 10 on a key frame (bit 0 of the first byte is 0), 3
 * otherwise. A VP8 frame shorter than its prefix is `malformed`: the Rust
 * client would send it with a shorter prefix that no receiver can split
 * back off (docs gap), so it is refused here on both sides.
 * @param {Codec} codec
 * @param {Uint8Array} frame
 */
export function clearPrefixLength(codec, frame) {
  if (codec === 'opus') return 0;
  if (codec !== 'vp8') throw new ProtocolError('invalid_argument', `unknown codec ${String(codec)}`);
  const wanted = ((frame[0] ?? 0) & 0x01) === 0 ? 10 : 3;
  if (frame.length < wanted) {
    throw new ProtocolError('malformed', `VP8 frame shorter than its ${wanted}-byte clear prefix`);
  }
  return wanted;
}

/**
 * Encodes an SFrame header in its minimal form (RFC 9605 §4.3).
 * @param {bigint} kid
 * @param {bigint} ctr
 */
export function encodeSframeHeader(kid, ctr) {
  const k = headerField(u64Arg(kid, 'kid'));
  const c = headerField(u64Arg(ctr, 'ctr'));
  return concat(Uint8Array.of((k.bits << 4) | c.bits), k.extra, c.extra);
}

/**
 * Parses an SFrame header at the start of `bytes` (RFC 9605 §4.3);
 * truncated headers are `malformed`, non-minimal ones `non_minimal_header`.
 * @param {Uint8Array} bytes
 * @returns {{ kid: bigint, ctr: bigint, length: number }}
 */
export function parseSframeHeader(bytes) {
  const r = new Reader(bytes, 'SFrame header');
  const config = r.u8();
  const kid = readHeaderField(r, config >> 4);
  const ctr = readHeaderField(r, config & 0x0f);
  return { kid, ctr, length: r.offset };
}

/** An SFrame key for one KID (RFC 9605 §4.4.2): the AES-128-GCM key (non-extractable) and the salt. */
export class SframeKey {
  /** @type {CryptoKey} */
  #aead;
  /** @type {Uint8Array} */
  #salt;

  /**
   * Use {@link SframeKey.derive}.
   * @param {bigint} kid
   * @param {CryptoKey} aead
   * @param {Uint8Array} salt
   */
  constructor(kid, aead, salt) {
    /** The KID this key is for. */
    this.kid = u64Arg(kid, 'kid');
    this.#aead = aead;
    this.#salt = copyBytes(salt, 12, 'SFrame salt');
  }

  /**
   * Derives sframe_key and sframe_salt of `kid` from a base key (RFC 9605
   * §4.4.2, suite 0x0004: HKDF-SHA256, empty salt, 16-byte key, 12-byte salt).
   * @param {Uint8Array} baseKey
   * @param {bigint} kid
   */
  static async derive(baseKey, kid) {
    const suffix = new Uint8Array(10);
    const view = new DataView(suffix.buffer);
    view.setBigUint64(0, u64Arg(kid, 'kid'));
    view.setUint16(8, SFRAME_CIPHER_SUITE);
    const secret = await subtle.importKey('raw', keyBytes(baseKey), 'HKDF', false, ['deriveBits', 'deriveKey']);
    const noSalt = new Uint8Array(0);
    const aead = await subtle.deriveKey(
      { name: 'HKDF', hash: 'SHA-256', salt: noSalt, info: concat(SFRAME_KEY_LABEL, suffix) },
      secret,
      { name: 'AES-GCM', length: 128 },
      false,
      ['encrypt', 'decrypt'],
    );
    const salt = new Uint8Array(
      await subtle.deriveBits(
        { name: 'HKDF', hash: 'SHA-256', salt: noSalt, info: concat(SFRAME_SALT_LABEL, suffix) },
        secret,
        96,
      ),
    );
    const key = new SframeKey(kid, aead, salt);
    salt.fill(0);
    return key;
  }

  /**
   * Seals `payload` at counter `ctr` with `header || metadata` as AAD (RFC 9605 §4.4.3).
   * @param {bigint} ctr
   * @param {Uint8Array} header
   * @param {Uint8Array} metadata
   * @param {Uint8Array} payload
   */
  async seal(ctr, header, metadata, payload) {
    const sealed = await subtle.encrypt(
      { name: 'AES-GCM', iv: this.#nonce(ctr), additionalData: concat(header, metadata), tagLength: 128 },
      this.#aead,
      bufferOf(payload),
    );
    return new Uint8Array(sealed);
  }

  /**
   * Opens `ciphertext || tag` at counter `ctr`; `frame_authentication` if the tag fails.
   * @param {bigint} ctr
   * @param {Uint8Array} header
   * @param {Uint8Array} metadata
   * @param {Uint8Array} sealed
   */
  async open(ctr, header, metadata, sealed) {
    try {
      const plain = await subtle.decrypt(
        { name: 'AES-GCM', iv: this.#nonce(ctr), additionalData: concat(header, metadata), tagLength: 128 },
        this.#aead,
        bufferOf(sealed),
      );
      return new Uint8Array(plain);
    } catch {
      throw new ProtocolError('frame_authentication', `SFrame authentication failed, ctr ${ctr}`, {
        kid: this.kid,
        counter: ctr,
      });
    }
  }

  /**
   * sframe_salt XOR CTR, big-endian over 12 bytes (RFC 9605 §4.4.3).
   * @param {bigint} ctr
   */
  #nonce(ctr) {
    const nonce = this.#salt.slice();
    const view = new DataView(nonce.buffer);
    view.setBigUint64(4, view.getBigUint64(4) ^ u64Arg(ctr, 'ctr'));
    return nonce;
  }
}

/** Seals our frames under one key (§6): clear prefix || SFrame header || ciphertext || tag, CTR from 0 up. */
export class SframeSender {
  /** @type {SframeKey} */
  #key;
  /** @type {bigint | null} next counter; null once U64_MAX was used */
  #next;

  /**
   * @param {SframeKey} key
   * @param {bigint} [firstCounter] where the counter starts (0; a restored context resumes)
   */
  constructor(key, firstCounter = 0n) {
    this.#key = key;
    this.#next = u64Arg(firstCounter, 'first counter');
  }

  /** The KID our frames carry. */
  get kid() {
    return this.#key.kid;
  }

  /**
   * Encrypts one encoded frame. The counter is taken before any await, so a
   * (KID, CTR) pair is never used twice.
   * @param {Codec} codec
   * @param {Uint8Array} frame
   */
  async seal(codec, frame) {
    const ctr = this.#next;
    if (ctr === null) {
      throw new ProtocolError('counter_exhausted', 'SFrame counter exhausted', { kid: this.#key.kid });
    }
    const clear = clearPrefixLength(codec, frame);
    this.#next = ctr === U64_MAX ? null : ctr + 1n;
    const prefix = frame.slice(0, clear);
    const header = encodeSframeHeader(this.#key.kid, ctr);
    const sealed = await this.#key.seal(ctr, header, prefix, frame.subarray(clear));
    return concat(prefix, header, sealed);
  }
}

/**
 * Opens one sender's frames (§6): keys by KID, each with its own replay
 * window of 1024 counters.
 */
export class SframeReceiver {
  /** @type {Map<bigint, { key: SframeKey, window: ReplayWindow }>} */
  #keys = new Map();

  /**
   * Installs a key; a KID already held keeps its key and replay window
   * (§6: resetting the window would let seen frames open again). Returns
   * whether the key was installed.
   * @param {SframeKey} key
   */
  addKey(key) {
    if (this.#keys.has(key.kid)) return false;
    this.#keys.set(key.kid, { key, window: new ReplayWindow(SFRAME_REPLAY_WINDOW) });
    return true;
  }

  /**
   * Erases the key of a KID; returns whether it was held.
   * @param {bigint} kid
   */
  removeKey(kid) {
    return this.#keys.delete(kid);
  }

  /**
   * Whether a key for this KID is held.
   * @param {bigint} kid
   */
  hasKey(kid) {
    return this.#keys.has(kid);
  }

  /**
   * Decrypts one encrypted frame: `unknown_key_id` (with `detail.kid`) if
   * no key is held for its KID, then the replay window, then the tag. A
   * refused frame changes nothing.
   * @param {Codec} codec
   * @param {Uint8Array} data clear prefix || SFrame
   * @returns {Promise<{ kid: bigint, ctr: bigint, frame: Uint8Array }>}
   */
  async open(codec, data) {
    const { prefix, header, kid, ctr, sealed } = splitEncryptedFrame(codec, data);
    const entry = this.#keys.get(kid);
    if (entry === undefined) {
      throw new ProtocolError('unknown_key_id', `no SFrame key for KID ${kid}`, { kid, counter: ctr });
    }
    judgeFrame(entry.window, kid, ctr);
    const plaintext = await entry.key.open(ctr, header, prefix, sealed);
    if (this.#keys.get(kid) !== entry) {
      // The key was erased (or replaced) while the frame was being opened.
      throw new ProtocolError('unknown_key_id', `SFrame key for KID ${kid} was erased`, { kid, counter: ctr });
    }
    judgeFrame(entry.window, kid, ctr);
    entry.window.accept(ctr);
    return { kid, ctr, frame: concat(prefix, plaintext) };
  }
}

/**
 * Splits an encrypted frame into clear prefix, SFrame header (KID, CTR) and
 * ciphertext || tag, without decrypting: what routing a frame to its key
 * (or deriving that key, §5.3) needs. Views into `data`.
 * @param {Codec} codec
 * @param {Uint8Array} data
 */
export function splitEncryptedFrame(codec, data) {
  const clear = clearPrefixLength(codec, data);
  const prefix = data.subarray(0, clear);
  const { kid, ctr, length } = parseSframeHeader(data.subarray(clear));
  const header = data.subarray(clear, clear + length);
  const sealed = data.subarray(clear + length);
  if (sealed.length < TAG_LEN) {
    throw new ProtocolError('malformed', 'SFrame shorter than its tag', { kid, counter: ctr });
  }
  return { prefix, header, kid, ctr, sealed };
}

/**
 * @param {ReplayWindow} window
 * @param {bigint} kid
 * @param {bigint} ctr
 */
function judgeFrame(window, kid, ctr) {
  const verdict = window.check(ctr);
  if (verdict === 'replayed') {
    throw new ProtocolError('replayed_frame', `replayed SFrame, KID ${kid} ctr ${ctr}`, { kid, counter: ctr });
  }
  if (verdict === 'too_old') {
    throw new ProtocolError('frame_outside_window', `SFrame too old, KID ${kid} ctr ${ctr}`, { kid, counter: ctr });
  }
}

/**
 * The 4-bit X|KKK (or Y|CCC) field of a value and its extra bytes.
 * @param {bigint} value
 */
function headerField(value) {
  if (value < 8n) return { bits: Number(value), extra: new Uint8Array(0) };
  let len = 0;
  for (let v = value; v > 0n; v >>= 8n) len += 1;
  const extra = new Uint8Array(len);
  for (let i = len - 1, v = value; i >= 0; i -= 1, v >>= 8n) extra[i] = Number(v & 0xffn);
  return { bits: 0x08 | (len - 1), extra };
}

/**
 * @param {Reader} r
 * @param {number} field
 */
function readHeaderField(r, field) {
  if ((field & 0x08) === 0) return BigInt(field & 0x07);
  const extra = r.bytes((field & 0x07) + 1);
  let value = 0n;
  for (const b of extra) value = (value << 8n) | BigInt(b);
  if (headerField(value).extra.length !== extra.length) {
    throw new ProtocolError('non_minimal_header', 'SFrame header is not minimally encoded');
  }
  return value;
}

// ---------------------------------------------------------------------------
// §7 Safety numbers
// ---------------------------------------------------------------------------

/** Label that starts each safety number hash chain: "hush/v1 safety number". */
export const SAFETY_NUMBER_LABEL = utf8.encode('hush/v1 safety number');
/** SHA-512 iterations per identity (§7). */
export const SAFETY_NUMBER_ITERATIONS = 5200;

/**
 * The 60-digit safety number of two identities (§7), the same whatever the
 * order, and its display form (12 groups of 5 digits).
 * @param {Uint8Array} identityA 32 bytes
 * @param {Uint8Array} identityB 32 bytes
 */
export async function safetyNumber(identityA, identityB) {
  const a = copyBytes(identityA, 32, 'identity public key');
  const b = copyBytes(identityB, 32, 'identity public key');
  const [lo, hi] = compareBytes(a, b) <= 0 ? [a, b] : [b, a];
  const digits = (await safetyDigits(lo)) + (await safetyDigits(hi));
  const display = (digits.match(/.{5}/g) ?? []).join(' ');
  return { digits, display };
}

/** @param {Uint8Array} key */
async function safetyDigits(key) {
  let h = new Uint8Array(await subtle.digest('SHA-512', concat(SAFETY_NUMBER_LABEL, key)));
  for (let i = 1; i < SAFETY_NUMBER_ITERATIONS; i += 1) {
    h = new Uint8Array(await subtle.digest('SHA-512', concat(h, key)));
  }
  let out = '';
  for (let i = 0; i < 30; i += 5) {
    out += String(bigEndian(h.subarray(i, i + 5)) % 100000n).padStart(5, '0');
  }
  return out;
}

// ---------------------------------------------------------------------------
// RFC 2198 audio redundancy (§11, red.json)
// ---------------------------------------------------------------------------

/** Most redundant blocks a receiver accepts in one RED payload (as the Rust client). */
export const RED_MAX_BLOCKS_ACCEPTED = 8;
/** Largest redundant block RED can describe (10-bit length). */
export const RED_MAX_BLOCK_LEN = 1023;
/** Largest timestamp offset RED can describe (14 bits). */
export const RED_MAX_TIMESTAMP_OFFSET = (1 << 14) - 1;

/**
 * One block of a RED payload; `data` is one encrypted frame (§6).
 * @typedef {{ timestampOffset: number, payloadType: number, data: Uint8Array }} RedBlock
 */

/**
 * Reads a RED payload (RFC 2198 §3): redundant blocks oldest first (offsets
 * non-zero and strictly decreasing, at most 8), then the primary. Block
 * data are views into `payload`.
 * @param {Uint8Array} payload
 * @returns {{ redundant: RedBlock[], primary: RedBlock }}
 */
export function parseRed(payload) {
  const r = new Reader(payload, 'RED payload');
  /** @type {{ offset: number, pt: number, len: number }[]} */
  const headers = [];
  let first = r.u8();
  while ((first & 0x80) !== 0) {
    if (headers.length === RED_MAX_BLOCKS_ACCEPTED) {
      throw new ProtocolError('malformed', `RED payload has more than ${RED_MAX_BLOCKS_ACCEPTED} redundant blocks`);
    }
    const rest = r.bytes(3);
    const word = (((first & 0x7f) << 24) | ((rest[0] ?? 0) << 16) | ((rest[1] ?? 0) << 8) | (rest[2] ?? 0)) >>> 0;
    const offset = (word >>> 10) & 0x3fff;
    const last = headers[headers.length - 1];
    if (offset === 0 || (last !== undefined && offset >= last.offset)) {
      throw new ProtocolError('malformed', 'RED block timestamp offsets out of order');
    }
    headers.push({ offset, pt: first & 0x7f, len: word & 0x3ff });
    first = r.u8();
  }
  const redundant = headers.map((h) => ({ timestampOffset: h.offset, payloadType: h.pt, data: r.bytes(h.len) }));
  return { redundant, primary: { timestampOffset: 0, payloadType: first & 0x7f, data: r.rest() } };
}

/**
 * Writes a RED payload: the redundant blocks (oldest first), then the
 * primary. As the Rust client, a block RED cannot describe (over 1023
 * bytes, offset 0 or over 16383, not older than the block before) is left
 * out; a payload type outside 0..127 is misuse.
 * @param {RedBlock[]} redundant
 * @param {number} primaryPayloadType
 * @param {Uint8Array} primary
 */
export function writeRed(redundant, primaryPayloadType, primary) {
  /** @type {RedBlock[]} */
  const kept = [];
  for (const block of redundant) {
    payloadTypeArg(block.payloadType);
    const last = kept[kept.length - 1];
    const fits =
      block.data.length <= RED_MAX_BLOCK_LEN &&
      Number.isInteger(block.timestampOffset) &&
      block.timestampOffset >= 1 &&
      block.timestampOffset <= RED_MAX_TIMESTAMP_OFFSET &&
      (last === undefined || block.timestampOffset < last.timestampOffset);
    if (fits) kept.push(block);
  }
  const w = new Writer();
  for (const block of kept) {
    w.u8(0x80 | block.payloadType);
    const rest = (block.timestampOffset << 10) | block.data.length;
    w.u8((rest >>> 16) & 0xff);
    w.u16(rest & 0xffff);
  }
  w.u8(payloadTypeArg(primaryPayloadType));
  for (const block of kept) w.bytes(block.data);
  w.bytes(primary);
  return w.finish();
}

// ---------------------------------------------------------------------------
// edwards25519 arithmetic for the strict checks of §1 (public data only)
// ---------------------------------------------------------------------------

const ED_P = (1n << 255n) - 19n;
/** Order of the prime-order subgroup. */
const ED_L = (1n << 252n) + 27742317777372353535851937790883648493n;
const ED_D = edMod(-121665n * edPow(121666n, ED_P - 2n));
/** 2^((p-1)/4) is a square root of -1, since 2 is not a square mod p (p = 5 mod 8). */
const ED_SQRT_M1 = edPow(2n, (ED_P - 1n) / 4n);

/** @param {bigint} a */
function edMod(a) {
  const r = a % ED_P;
  return r >= 0n ? r : r + ED_P;
}

/**
 * @param {bigint} base
 * @param {bigint} exp
 */
function edPow(base, exp) {
  let result = 1n;
  let b = edMod(base);
  for (let e = exp; e > 0n; e >>= 1n) {
    if (e & 1n) result = (result * b) % ED_P;
    b = (b * b) % ED_P;
  }
  return result;
}

/**
 * Decodes a compressed point as curve25519-dalek's `CompressedEdwardsY::decompress`
 * (y taken mod p, sign bit applied to the root): null if y is not on the curve.
 * @param {Uint8Array} bytes 32 bytes
 * @returns {{ x: bigint, y: bigint } | null}
 */
function edDecompress(bytes) {
  const raw = littleEndian(bytes);
  const sign = raw >> 255n;
  const y = edMod(raw & ((1n << 255n) - 1n));
  const y2 = (y * y) % ED_P;
  const u = edMod(y2 - 1n);
  const v = edMod(ED_D * y2 + 1n);
  const v3 = (((v * v) % ED_P) * v) % ED_P;
  const v7 = (((v3 * v3) % ED_P) * v) % ED_P;
  let x = (((u * v3) % ED_P) * edPow((u * v7) % ED_P, (ED_P - 5n) / 8n)) % ED_P;
  const vx2 = (((v * x) % ED_P) * x) % ED_P;
  if (vx2 !== u) {
    if (vx2 !== edMod(-u)) return null;
    x = (x * ED_SQRT_M1) % ED_P;
  }
  if ((x & 1n) === 1n) x = ED_P - x;
  if (sign === 1n) x = edMod(-x);
  return { x, y };
}

/**
 * Whether [8]P is the identity (the unified addition law is complete on edwards25519).
 * @param {{ x: bigint, y: bigint }} point
 */
function edIsSmallOrder(point) {
  let q = point;
  for (let i = 0; i < 3; i += 1) {
    const xx = (q.x * q.x) % ED_P;
    const yy = (q.y * q.y) % ED_P;
    const dxy = (((ED_D * xx) % ED_P) * yy) % ED_P;
    q = {
      x: edMod(2n * q.x * q.y * edPow(1n + dxy, ED_P - 2n)),
      y: edMod((yy + xx) * edPow(edMod(1n - dxy), ED_P - 2n)),
    };
  }
  return q.x === 0n && q.y === 1n;
}

// ---------------------------------------------------------------------------
// Bytes
// ---------------------------------------------------------------------------

/** Bounds-checked big-endian reader: every short read is `malformed`, never a guess. */
class Reader {
  /**
   * @param {Uint8Array} bytes
   * @param {string} what
   */
  constructor(bytes, what) {
    if (!(bytes instanceof Uint8Array)) {
      throw new ProtocolError('invalid_argument', `${what} must be a Uint8Array`);
    }
    this.buf = bytes;
    this.what = what;
    this.offset = 0;
  }

  /** @param {number} n */
  take(n) {
    if (this.buf.length - this.offset < n) {
      throw new ProtocolError('malformed', `${this.what} truncated`);
    }
    const out = this.buf.subarray(this.offset, this.offset + n);
    this.offset += n;
    return out;
  }

  /** A copy of the next `n` bytes. @param {number} n */
  bytes(n) {
    return this.take(n).slice();
  }

  u8() {
    return this.take(1)[0] ?? 0;
  }

  u16() {
    const b = this.take(2);
    return ((b[0] ?? 0) << 8) | (b[1] ?? 0);
  }

  u64() {
    return bigEndian(this.take(8));
  }

  /** Everything not read yet, as a view. */
  rest() {
    return this.take(this.buf.length - this.offset);
  }

  finish() {
    if (this.offset !== this.buf.length) {
      throw new ProtocolError('malformed', `${this.what} has trailing bytes`);
    }
  }
}

/** Big-endian writer. */
class Writer {
  constructor() {
    /** @type {Uint8Array[]} */
    this.parts = [];
  }

  /** @param {number} v */
  u8(v) {
    this.parts.push(Uint8Array.of(v));
  }

  /** @param {number} v */
  u16(v) {
    this.parts.push(Uint8Array.of(v >> 8, v & 0xff));
  }

  /** @param {bigint} v */
  u64(v) {
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, v);
    this.parts.push(b);
  }

  /** @param {Uint8Array} b */
  bytes(b) {
    this.parts.push(b);
  }

  finish() {
    return concat(...this.parts);
  }
}

/**
 * Concatenation into a new array.
 * @param {...Uint8Array} parts
 */
function concat(...parts) {
  let len = 0;
  for (const p of parts) len += p.length;
  const out = new Uint8Array(len);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * A copy of `bytes`, which must be a Uint8Array of `len` bytes.
 * @param {Uint8Array} bytes
 * @param {number} len
 * @param {string} what
 */
function copyBytes(bytes, len, what) {
  if (!(bytes instanceof Uint8Array) || bytes.length !== len) {
    throw new ProtocolError('invalid_argument', `${what} must be ${len} bytes`);
  }
  return bytes.slice();
}

/**
 * A base key as WebCrypto input (checked, not copied: WebCrypto copies it).
 * @param {Uint8Array} key
 */
function keyBytes(key) {
  if (!(key instanceof Uint8Array) || key.length === 0) {
    throw new ProtocolError('invalid_argument', 'base key must be a non-empty Uint8Array');
  }
  return bufferOf(key);
}

/**
 * `bytes` as a WebCrypto BufferSource: itself when backed by an ArrayBuffer, else a copy.
 * @param {Uint8Array} bytes
 * @returns {Uint8Array<ArrayBuffer>}
 */
function bufferOf(bytes) {
  if (!(bytes instanceof Uint8Array)) {
    throw new ProtocolError('invalid_argument', 'expected a Uint8Array');
  }
  return bytes.buffer instanceof ArrayBuffer ? /** @type {Uint8Array<ArrayBuffer>} */ (bytes) : bytes.slice();
}

/**
 * @param {Uint8Array} a
 * @param {Uint8Array} b
 */
function bytesEqual(a, b) {
  return a.length === b.length && compareBytes(a, b) === 0;
}

/**
 * Bytewise (memcmp) order; a prefix sorts first.
 * @param {Uint8Array} a
 * @param {Uint8Array} b
 */
function compareBytes(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i += 1) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d < 0 ? -1 : 1;
  }
  return a.length === b.length ? 0 : a.length < b.length ? -1 : 1;
}

/**
 * @param {Uint8Array} bytes
 * @param {Uint8Array} prefix
 */
function startsWith(bytes, prefix) {
  return bytes.length >= prefix.length && bytesEqual(bytes.subarray(0, prefix.length), prefix);
}

/** @param {Uint8Array} bytes */
function bigEndian(bytes) {
  let v = 0n;
  for (const b of bytes) v = (v << 8n) | BigInt(b);
  return v;
}

/** @param {Uint8Array} bytes */
function littleEndian(bytes) {
  let v = 0n;
  for (let i = bytes.length - 1; i >= 0; i -= 1) v = (v << 8n) | BigInt(bytes[i] ?? 0);
  return v;
}

/** @param {Uint8Array} bytes */
function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * Strict UTF-8 (no replacement characters, a leading BOM kept as a character).
 * @param {Uint8Array} bytes
 * @param {string} what
 */
function decodeUtf8(bytes, what) {
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw new ProtocolError('malformed', `${what} is not UTF-8`);
  }
}

/**
 * A room id's UTF-8 bytes: a well-formed string of at most 65535 bytes.
 * @param {string} room
 */
function roomBytes(room) {
  if (typeof room !== 'string') {
    throw new ProtocolError('invalid_argument', 'room id must be a string');
  }
  const bytes = utf8.encode(room);
  // TextEncoder turns lone surrogates into U+FFFD: that would be another room.
  if (decodeUtf8(bytes, 'room id') !== room || bytes.length > 0xffff) {
    throw new ProtocolError('invalid_argument', 'room id must be well-formed and at most 65535 UTF-8 bytes');
  }
  return bytes;
}

/** @param {string} text */
function fromBase64(text) {
  if (!/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(text)) {
    throw new ProtocolError('malformed', 'not base64');
  }
  const binary = atob(text);
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

/** @param {string} text */
function fromBase64Url(text) {
  const b64 = text.replace(/-/g, '+').replace(/_/g, '/');
  return fromBase64(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
}

/**
 * Unix milliseconds from the caller's clock as a u64.
 * @param {number} ms
 */
function millis(ms) {
  if (!Number.isSafeInteger(ms) || ms < 0) {
    throw new ProtocolError('invalid_argument', 'time must be a non-negative integer of milliseconds');
  }
  return BigInt(ms);
}

/**
 * @param {bigint} v
 * @param {string} what
 */
function u64Arg(v, what) {
  if (typeof v !== 'bigint' || v < 0n || v > U64_MAX) {
    throw new ProtocolError('invalid_argument', `${what} must be a bigint in 0..2^64-1`);
  }
  return v;
}

/**
 * @param {number} v
 * @param {string} what
 */
function u16Arg(v, what) {
  if (!Number.isInteger(v) || v < 0 || v > 0xffff) {
    throw new ProtocolError('invalid_argument', `${what} must be an integer in 0..65535`);
  }
  return v;
}

/** @param {number} pt */
function payloadTypeArg(pt) {
  if (!Number.isInteger(pt) || pt < 0 || pt > 127) {
    throw new ProtocolError('invalid_argument', 'RTP payload type must be 0..127');
  }
  return pt;
}
