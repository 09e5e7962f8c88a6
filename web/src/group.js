// @ts-check
/**
 * @file The group key state machine of hush (docs/PROTOCOL.md §5.3): who
 * holds which media key, and when keys change. A port of hush-e2ee's
 * `Group` (e2ee/src/group.rs), with its names in camelCase, on top of
 * ./protocol.js.
 *
 * A pure state machine: inputs are membership changes (our join with the
 * members' key packages, a member joined, a member left or a departure
 * seen), envelopes from members and the time (`now`, Unix milliseconds,
 * always passed in, never read from a clock); outputs are envelopes to
 * send to a member and key events for the SFrame layer, plus "member
 * confirmed". No IO, no timers, no logging.
 *
 * Every method that changes state is `async` (WebCrypto is) and runs
 * alone: calls are queued and run one at a time in call order, as the
 * Rust `&mut self` methods do, so a caller may fire them without awaiting
 * each and no two interleave. The read-only queries (`keyOutlook`,
 * `nextTimeout`, `isConfirmed`, ...) are synchronous.
 *
 * Key material: sender keys are raw 32-byte strings by nature (they travel
 * in envelopes and are ratcheted with HKDF), so the group keeps them in
 * private {@link Secret} holders that print as `[redacted]` and are zeroed
 * as soon as the Rust code would drop them (a key replaced, erased, paid,
 * pruned; every intermediate ratchet step; everything at {@link Group#close}).
 * Key events hand the caller a *copy* of a base key: the caller owns it,
 * derives its SFrame key ({@link SframeKey.derive}) and zeroes it.
 * Pairwise channel keys are non-extractable CryptoKeys (protocol.js).
 */

import {
  KEY_PACKAGE_MAX_AGE_MS,
  KEY_PACKAGE_MAX_SKEW_MS,
  NEWCOMER_KEY_PACKAGE_MAX_AGE_MS,
  ProtocolError,
  SframeKey,
  kidInSlot,
  parseEnvelopeHeader,
  randomSenderKey,
  ratchetBaseKey,
  safetyNumber,
  slotOf,
  verifyKeyPackage,
} from './protocol.js';

/**
 * @typedef {import('./protocol.js').KeyPackage} KeyPackage
 * @typedef {import('./protocol.js').LocalMember} LocalMember
 * @typedef {import('./protocol.js').PairwiseChannel} PairwiseChannel
 * @typedef {import('./protocol.js').Message} Message
 * @typedef {import('./protocol.js').Generation} Generation
 */

// ---------------------------------------------------------------------------
// Configuration and outputs
// ---------------------------------------------------------------------------

/** Length of every sender base key (Rust `SENDER_KEY_LEN`). */
export const SENDER_KEY_LEN = 32;

/**
 * Age limits for key packages (Rust `Freshness`).
 * @typedef {object} Freshness
 * @property {number} maxAgeMs oldest acceptable age of a listed member's package (default 24 h)
 * @property {number} newcomerMaxAgeMs oldest acceptable age of a newcomer's package, made for that join (default 10 min)
 * @property {number} maxSkewMs clock skew tolerated for packages dated in the future (default 5 min)
 */

/**
 * Tunables of the group state machine (Rust `Config`).
 * @typedef {object} Config
 * @property {number} graceMs how long a receiver keeps a replaced key for frames in flight (default 2 s)
 * @property {number} rekeyWaitMs longest a sender waits for acknowledgements of a fresh key (default 1 s)
 * @property {number} maxRatchetAhead most ratchet steps a receiver derives ahead on its own (default 16)
 * @property {Freshness} freshness age limits for key packages
 * @property {() => Uint8Array} randomKey where fresh sender keys come from (default
 *   {@link randomSenderKey}); the group takes the returned 32 bytes and zeroes them
 *   when done. Replace it only to replay a fixed transcript (tests, fixtures).
 */

/**
 * A partial {@link Config}; what is left out takes its default.
 * @typedef {object} ConfigInput
 * @property {number} [graceMs]
 * @property {number} [rekeyWaitMs]
 * @property {number} [maxRatchetAhead]
 * @property {Partial<Freshness>} [freshness]
 * @property {() => Uint8Array} [randomKey]
 */

/** @type {Readonly<Config>} */
export const DEFAULT_CONFIG = Object.freeze({
  graceMs: 2_000,
  rekeyWaitMs: 1_000,
  maxRatchetAhead: 16,
  freshness: Object.freeze({
    maxAgeMs: KEY_PACKAGE_MAX_AGE_MS,
    newcomerMaxAgeMs: NEWCOMER_KEY_PACKAGE_MAX_AGE_MS,
    maxSkewMs: KEY_PACKAGE_MAX_SKEW_MS,
  }),
  randomKey: randomSenderKey,
});

/**
 * What the state machine asks its caller to do (Rust `Output`, with
 * `Output::Key(KeyEvent::…)` flattened):
 * - `send`: relay `envelope` to member `to` (through signaling);
 * - `use_send_key`: install this key and use it for our frames from now
 *   on; the previous send key can be dropped (`KeyEvent::UseSendKey`);
 * - `install_receive_key`: install this key for frames from `sender`
 *   under `kid` (`KeyEvent::InstallReceiveKey`);
 * - `remove_receive_key`: erase the key of `sender`'s `kid`, its grace
 *   period ended (`KeyEvent::RemoveReceiveKey`);
 * - `confirmed`: a member proved it is live, the first envelope from it
 *   authenticated (`Output::Confirmed`).
 *
 * `baseKey` is a copy the caller owns: derive the SFrame key and zero it.
 * Participant ids are 16-byte copies.
 * @typedef {{ type: 'send', to: Uint8Array, envelope: Uint8Array }
 *   | { type: 'use_send_key', kid: bigint, baseKey: Uint8Array }
 *   | { type: 'install_receive_key', sender: Uint8Array, kid: bigint, baseKey: Uint8Array }
 *   | { type: 'remove_receive_key', sender: Uint8Array, kid: bigint }
 *   | { type: 'confirmed', participantId: Uint8Array }} Output
 */

/**
 * What {@link Group#keyOutlook} says of a frame no key opens (Rust `KeyOutlook`).
 * @typedef {'may_come' | 'gone' | 'never' | 'before_us'} KeyOutlookValue
 */

/**
 * - `MayCome`: its key may still come: hold the frame briefly.
 * - `Gone`: its key is behind us (never given to us, or erased): lost to a key change.
 * - `Never`: its sender could not have sent it as things stand: a failure.
 * - `BeforeUs`: under a generation older than the first key its sender
 *   gave us: sealed before the sender saw our join, under a key a
 *   newcomer is never given (§5.3). Neither a failure nor a loss.
 */
export const KeyOutlook = Object.freeze({
  MayCome: /** @type {KeyOutlookValue} */ ('may_come'),
  Gone: /** @type {KeyOutlookValue} */ ('gone'),
  Never: /** @type {KeyOutlookValue} */ ('never'),
  BeforeUs: /** @type {KeyOutlookValue} */ ('before_us'),
});

/**
 * Non-secret counters of the work keys cost, for tests and profiling (the
 * Rust tests' `RECEIVE_STEPS` and `TIMER_VISITS`): ratchet steps run for
 * receive keys, and members visited by timer work. Shared by every group.
 */
export const instrumentation = { receiveSteps: 0, timerVisits: 0 };

const INSPECT = Symbol.for('nodejs.util.inspect.custom');

// ---------------------------------------------------------------------------
// Secrets and generations
// ---------------------------------------------------------------------------

/**
 * A raw secret (a sender base key) with one owner: never printed, zeroed by
 * {@link Secret#zeroize} when its owner drops it. Internal.
 */
class Secret {
  /** @type {Uint8Array} */
  #bytes;

  /** @param {Uint8Array} bytes taken over, not copied: the caller no longer uses them */
  constructor(bytes) {
    this.#bytes = bytes;
  }

  /** An independent copy (its own owner zeroes it). */
  clone() {
    return new Secret(this.#bytes.slice());
  }

  /** A copy of the bytes for the caller, who owns (and zeroes) it. */
  copy() {
    return this.#bytes.slice();
  }

  /** The bytes themselves, for immediate use only (never kept, never handed out). */
  view() {
    return this.#bytes;
  }

  zeroize() {
    this.#bytes.fill(0);
  }

  toJSON() {
    return '[redacted]';
  }

  [INSPECT]() {
    return 'Secret([redacted])';
  }
}

/** A generation packed into one number, `rekey * 2^16 + ratchet`: ordered as (rekey, ratchet). */
const RATCHET_SPAN = 0x10000;
const U16_MAX = 0xffff;

/**
 * @param {number} rekey
 * @param {number} ratchet
 */
function gen(rekey, ratchet) {
  return rekey * RATCHET_SPAN + ratchet;
}

/** @param {number} g */
function rekeyOf(g) {
  return Math.floor(g / RATCHET_SPAN);
}

/** @param {number} g */
function ratchetOf(g) {
  return g % RATCHET_SPAN;
}

/**
 * @param {number} g
 * @returns {Generation}
 */
function genObject(g) {
  return { rekey: rekeyOf(g), ratchet: ratchetOf(g) };
}

/**
 * hush's KID of a slot and a packed generation (§5.1).
 * @param {number} slot
 * @param {number} g
 */
function kidOf(slot, g) {
  return (BigInt(slot) << 32n) | BigInt(g);
}

/**
 * The packed generation a KID of `slot` names, or null if it is not one (§5.1).
 * @param {bigint} kid
 * @param {number} slot
 */
function generationOfKid(kid, slot) {
  return kidInSlot(kid, slot) ? Number(kid & 0xffff_ffffn) : null;
}

/**
 * One ratchet step (§5.2) into a new secret.
 * @param {Secret} base
 * @param {number} next the new generation
 */
async function ratchet(base, next) {
  return new Secret(await ratchetBaseKey(base.view(), genObject(next)));
}

/**
 * `base`, the key of generation `from`, ratcheted up to `to` (same
 * `rekey`, `to` not below `from`); intermediate keys are zeroed.
 * @param {Secret} base
 * @param {number} from
 * @param {number} to
 */
async function ratchetFrom(base, from, to) {
  let key = base.clone();
  for (let step = ratchetOf(from); step < ratchetOf(to); step += 1) {
    instrumentation.receiveSteps += 1;
    const next = await ratchet(key, gen(rekeyOf(to), step + 1));
    key.zeroize();
    key = next;
  }
  return key;
}

/**
 * Participant ids as map keys: lowercase hex, whose order is the bytes'
 * order (the Rust `BTreeMap<ParticipantId, _>` order outputs follow).
 * @param {Uint8Array} id
 */
function idKey(id) {
  let out = '';
  for (const b of id) out += b.toString(16).padStart(2, '0');
  return out;
}

/**
 * @param {unknown} id
 * @param {string} what
 */
function participantArg(id, what) {
  if (!(id instanceof Uint8Array) || id.length !== 16) {
    throw new ProtocolError('invalid_argument', `${what} must be a 16-byte participant id`);
  }
  return id;
}

/** @param {unknown} now */
function timeArg(now) {
  if (typeof now !== 'number' || !Number.isSafeInteger(now) || now < 0) {
    throw new ProtocolError('invalid_argument', 'time must be a non-negative integer of milliseconds');
  }
  return now;
}

/** @param {unknown} kid */
function kidArg(kid) {
  if (typeof kid !== 'bigint') {
    throw new ProtocolError('invalid_argument', 'KID must be a bigint');
  }
  return kid;
}

/**
 * @param {ConfigInput} input
 * @returns {Config}
 */
function resolveConfig(input) {
  const f = input.freshness ?? {};
  /** @type {Config} */
  const config = {
    graceMs: input.graceMs ?? DEFAULT_CONFIG.graceMs,
    rekeyWaitMs: input.rekeyWaitMs ?? DEFAULT_CONFIG.rekeyWaitMs,
    maxRatchetAhead: input.maxRatchetAhead ?? DEFAULT_CONFIG.maxRatchetAhead,
    freshness: {
      maxAgeMs: f.maxAgeMs ?? DEFAULT_CONFIG.freshness.maxAgeMs,
      newcomerMaxAgeMs: f.newcomerMaxAgeMs ?? DEFAULT_CONFIG.freshness.newcomerMaxAgeMs,
      maxSkewMs: f.maxSkewMs ?? DEFAULT_CONFIG.freshness.maxSkewMs,
    },
    randomKey: input.randomKey ?? DEFAULT_CONFIG.randomKey,
  };
  for (const v of [config.graceMs, config.rekeyWaitMs, ...Object.values(config.freshness)]) {
    timeArg(v);
  }
  if (!Number.isInteger(config.maxRatchetAhead) || config.maxRatchetAhead < 0 || config.maxRatchetAhead > U16_MAX) {
    throw new ProtocolError('invalid_argument', 'maxRatchetAhead must be an integer in 0..65535');
  }
  return config;
}

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------

/**
 * A receive key: erased at `expires`; null while it is the newest.
 * @typedef {{ base: Secret, expires: number | null }} ReceiveKey
 */

/**
 * One of our sender keys.
 * @typedef {{ generation: number, base: Secret }} SenderKey
 */

/**
 * Our keys owed to a member not yet confirmed (Rust `Owed`): `first`, the
 * key it would have got when we learnt of it; `fresh`, the fresh key of our
 * latest departure since, at ratchet 0.
 * @typedef {{ first: SenderKey | null, fresh: SenderKey | null }} Owed
 */

/**
 * A fresh key waiting for acknowledgements (Rust `PendingKey`).
 * @typedef {{ key: SenderKey, waiting: Set<string>, deadline: number }} PendingKey
 */

/**
 * A current member (Rust `Member`; see its field docs there).
 * @typedef {object} Member
 * @property {Uint8Array} id
 * @property {number} slot
 * @property {KeyPackage} package
 * @property {PairwiseChannel} channel
 * @property {Map<number, ReceiveKey>} keys held keys by packed generation
 * @property {number} missedJoins joins seen while we held no key of this member
 * @property {boolean} countingMissed whether joins still count towards `missedJoins`
 * @property {number | null} current the generation it sends under, as its key messages and the joins since say
 * @property {Map<number, Secret>} chain keys derived to serve frames, not installed (at most two)
 * @property {boolean} confirmed whether an envelope from it has authenticated
 * @property {number | null} firstKey the oldest generation of it we were given
 */

/**
 * @param {SenderKey | null | undefined} key
 */
function zeroizeSenderKey(key) {
  key?.base.zeroize();
}

/** @param {Owed | undefined} owed */
function zeroizeOwed(owed) {
  zeroizeSenderKey(owed?.first);
  zeroizeSenderKey(owed?.fresh);
}

/**
 * Generations of a key map, ascending.
 * @param {Map<number, unknown>} map
 */
function sortedGenerations(map) {
  return [...map.keys()].sort((a, b) => a - b);
}

/**
 * The newest held key below `target`, if it has `target`'s `rekey` (Rust `Member::held_below`).
 * @param {Map<number, ReceiveKey>} keys
 * @param {number} target
 * @returns {{ generation: number, key: ReceiveKey } | null}
 */
function heldBelow(keys, target) {
  let best = -1;
  for (const g of keys.keys()) {
    if (g < target && g > best) best = g;
  }
  const key = keys.get(best);
  if (key === undefined || rekeyOf(best) !== rekeyOf(target)) return null;
  return { generation: best, key };
}

/**
 * The newest chain key at or below `target`, as `range(..=target).next_back()`.
 * @param {Map<number, Secret>} chain
 * @param {number} target
 */
function chainAtOrBelow(chain, target) {
  let best = -1;
  for (const g of chain.keys()) {
    if (g <= target && g > best) best = g;
  }
  const key = chain.get(best);
  return key === undefined ? null : { generation: best, key };
}

/**
 * Whether a cached chain key of generation `g` still serves a member
 * sending under `current` whose held keys are `keys` (Rust `chain_key_serves`).
 * @param {number} current
 * @param {Map<number, ReceiveKey>} keys
 * @param {number} g
 */
function chainKeyServes(current, keys, g) {
  if (rekeyOf(g) !== rekeyOf(current) || keys.has(g)) return false;
  let below = -1;
  for (const h of keys.keys()) {
    if (h < g && h > below) below = h;
  }
  return below >= 0 && rekeyOf(below) === rekeyOf(g);
}

/**
 * Drops (and zeroes) cached chain keys that no longer serve (Rust `Member::prune_chain`).
 * @param {Member} member
 */
function pruneChain(member) {
  for (const [g, key] of member.chain) {
    if (member.current === null || !chainKeyServes(member.current, member.keys, g)) {
      key.zeroize();
      member.chain.delete(g);
    }
  }
}

/**
 * The earliest deadline of a key we hold of this member, or null.
 * @param {Member} member
 * @returns {number | null}
 */
function earliestExpiry(member) {
  /** @type {number | null} */
  let earliest = null;
  for (const k of member.keys.values()) {
    if (k.expires !== null && (earliest === null || k.expires < earliest)) earliest = k.expires;
  }
  return earliest;
}

/** @typedef {{ at: number, id: string }} Deadline */

/**
 * The deadline index (Rust `Group::timed`, a set ordered by deadline then
 * member): a binary min-heap of `(at, member)` entries, each at most once.
 */
class DeadlineIndex {
  /** @type {Deadline[]} */
  #heap = [];
  /** @type {Set<string>} the entries present, as `at:id` */
  #present = new Set();

  /**
   * @param {Deadline} a
   * @param {Deadline} b
   */
  static #before(a, b) {
    return a.at < b.at || (a.at === b.at && a.id < b.id);
  }

  /**
   * @param {number} i
   * @param {number} j
   */
  #swap(i, j) {
    const h = this.#heap;
    const t = /** @type {Deadline} */ (h[i]);
    h[i] = /** @type {Deadline} */ (h[j]);
    h[j] = t;
  }

  /**
   * Files `id` under `at` (nothing if that entry exists).
   * @param {number} at
   * @param {string} id
   */
  add(at, id) {
    const name = `${at}:${id}`;
    if (this.#present.has(name)) return;
    this.#present.add(name);
    const h = this.#heap;
    h.push({ at, id });
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!DeadlineIndex.#before(/** @type {Deadline} */ (h[i]), /** @type {Deadline} */ (h[parent]))) break;
      this.#swap(i, parent);
      i = parent;
    }
  }

  /** The first entry, if any. @returns {Deadline | undefined} */
  first() {
    return this.#heap[0];
  }

  /** Takes the first entry out. @returns {Deadline | undefined} */
  popFirst() {
    const h = this.#heap;
    const top = h[0];
    const last = h.pop();
    if (top === undefined || last === undefined) return undefined;
    this.#present.delete(`${top.at}:${top.id}`);
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && DeadlineIndex.#before(/** @type {Deadline} */ (h[l]), /** @type {Deadline} */ (h[m]))) m = l;
        if (r < h.length && DeadlineIndex.#before(/** @type {Deadline} */ (h[r]), /** @type {Deadline} */ (h[m]))) m = r;
        if (m === i) break;
        this.#swap(i, m);
        i = m;
      }
    }
    return top;
  }

  /** Every entry, in order. @returns {Deadline[]} */
  entries() {
    return [...this.#heap].sort((a, b) => (DeadlineIndex.#before(a, b) ? -1 : DeadlineIndex.#before(b, a) ? 1 : 0));
  }

  clear() {
    this.#heap.length = 0;
    this.#present.clear();
  }
}

/**
 * The base key of generation `target`, with the deadline of the nearest
 * earlier key of the same `rekey` we hold (there must be one): ratcheted
 * from that key, or from a cached chain key between it and `target`.
 * Changes nothing (Rust `derive_base`).
 * @param {Member} member
 * @param {number} target
 * @returns {Promise<{ base: Secret, inherited: number | null } | null>}
 */
async function deriveBase(member, target) {
  const held = heldBelow(member.keys, target);
  if (held === null) return null;
  const cached = chainAtOrBelow(member.chain, target);
  const [from, base] =
    cached !== null && rekeyOf(cached.generation) === rekeyOf(target) && cached.generation > held.generation
      ? [cached.generation, cached.key]
      : [held.generation, held.key.base];
  return { base: await ratchetFrom(base, from, target), inherited: held.key.expires };
}

/**
 * Replaces the chain cache with the keys at `current` and `maxAhead`
 * below it (those not held and derivable), each derived from the nearest
 * key below it (Rust `Member::catch_up_chain`).
 * @param {Member} member
 * @param {number} maxAhead
 */
async function catchUpChain(member, maxAhead) {
  const current = member.current;
  if (current === null) return;
  const floor = gen(rekeyOf(current), Math.max(0, ratchetOf(current) - maxAhead));
  for (const anchor of [floor, current]) {
    if (member.keys.has(anchor) || member.chain.has(anchor)) continue;
    const derived = await deriveBase(member, anchor);
    if (derived !== null) member.chain.set(anchor, derived.base);
  }
  for (const [g, key] of member.chain) {
    if (g !== floor && g !== current) {
      key.zeroize();
      member.chain.delete(g);
    }
  }
  pruneChain(member);
}

/**
 * Makes sure `target` is at most `maxAhead` steps above a key we have,
 * bringing the chain cache up to `current` if it is not (Rust
 * `Member::bring_chain_near`).
 * @param {Member} member
 * @param {number} target
 * @param {number} maxAhead
 */
async function bringChainNear(member, target, maxAhead) {
  const cached = chainAtOrBelow(member.chain, target);
  const fromChain = cached !== null && rekeyOf(cached.generation) === rekeyOf(target) ? cached.generation : null;
  const fromHeld = heldBelow(member.keys, target)?.generation ?? null;
  const from = fromChain === null ? fromHeld : fromHeld === null ? fromChain : Math.max(fromChain, fromHeld);
  if (from !== null && ratchetOf(target) - ratchetOf(from) > maxAhead) {
    await catchUpChain(member, maxAhead);
  }
}

/**
 * The generation `kid` names, if a frame may make us derive it from a key
 * of this member we hold (Rust `derivable`): `key_held` if it is held
 * already, `unknown_key` if it is not derivable. It must have the `rekey`
 * of a held key below it and be at most `maxAhead` ratchet steps above that
 * key, or at most `maxAhead` steps from the member's current generation
 * (above or below).
 * @param {Member} member
 * @param {bigint} kid
 * @param {number} maxAhead
 */
function derivable(member, kid, maxAhead) {
  const unknown = () =>
    new ProtocolError('unknown_key', `no key for KID ${kid} and none derivable`, {
      kid,
      participantId: member.id.slice(),
    });
  const target = generationOfKid(kid, member.slot);
  if (target === null) throw unknown();
  if (member.keys.has(target)) {
    throw new ProtocolError('key_held', 'that key is installed already', { kid });
  }
  const held = heldBelow(member.keys, target);
  if (held === null) throw unknown();
  const nearHeld = ratchetOf(target) - ratchetOf(held.generation) <= maxAhead;
  const c = member.current;
  const nearCurrent =
    c !== null && rekeyOf(c) === rekeyOf(target) && Math.abs(ratchetOf(c) - ratchetOf(target)) <= maxAhead;
  if (!nearHeld && !nearCurrent) throw unknown();
  return target;
}

/**
 * Removes the keys whose deadline is at or before `now`, in generation order (Rust `remove_expired`).
 * @param {Uint8Array} id
 * @param {number} slot
 * @param {Map<number, ReceiveKey>} keys
 * @param {number} now
 * @returns {Output[]}
 */
function removeExpired(id, slot, keys, now) {
  /** @type {Output[]} */
  const out = [];
  for (const g of sortedGenerations(keys)) {
    const key = keys.get(g);
    if (key === undefined || key.expires === null || key.expires > now) continue;
    key.base.zeroize();
    keys.delete(g);
    out.push({ type: 'remove_receive_key', sender: id.slice(), kid: kidOf(slot, g) });
  }
  return out;
}

/** Only `Group.join` makes groups. */
const CONSTRUCT = Symbol('Group');

// ---------------------------------------------------------------------------
// Candidate keys
// ---------------------------------------------------------------------------

/**
 * A receive key derived for a frame's KID and **not installed** (Rust
 * `CandidateKey`, from {@link Group#candidateReceiveKey}): open the frame
 * under it, then install it with {@link Group#deriveReceiveKey} only if the
 * frame authenticates. Secret: never printed; {@link CandidateKey#zeroize} it when done.
 */
export class CandidateKey {
  /** @type {Secret} */
  #base;

  /**
   * @param {symbol} token
   * @param {Uint8Array} sender
   * @param {bigint} kid
   * @param {Secret} base
   */
  constructor(token, sender, kid, base) {
    if (token !== CONSTRUCT) {
      throw new ProtocolError('invalid_argument', 'candidate keys come from Group.candidateReceiveKey');
    }
    /** Whose key (a copy). */
    this.sender = sender.slice();
    /** The KID the frame named. */
    this.kid = kid;
    this.#base = base;
  }

  /** A copy of the derived base key; the caller owns it and zeroes it. */
  get baseKey() {
    return this.#base.copy();
  }

  /** The SFrame key of this candidate (§6), to trial-decrypt the frame. */
  async sframeKey() {
    const raw = this.#base.copy();
    try {
      return await SframeKey.derive(raw, this.kid);
    } finally {
      raw.fill(0);
    }
  }

  /** Zeroes the derived key. */
  zeroize() {
    this.#base.zeroize();
  }

  toJSON() {
    return { sender: idKey(this.sender), kid: this.kid.toString(), base: '[redacted]' };
  }

  [INSPECT]() {
    return `CandidateKey { sender: ${idKey(this.sender).slice(0, 8)}, kid: ${this.kid}, base: [redacted] }`;
  }
}

// ---------------------------------------------------------------------------
// The group
// ---------------------------------------------------------------------------

/**
 * The result of joining (Rust `Joined`): the group, what to do, and which
 * of the given key packages were accepted and which refused (those stay out
 * of the group), each by its index in the input.
 * @typedef {object} Joined
 * @property {Group} group
 * @property {Output[]} outputs
 * @property {{ index: number, participantId: Uint8Array }[]} accepted in input order
 * @property {{ index: number, error: ProtocolError }[]} rejected in input order
 */

/**
 * One member's view of a room's keys (Rust `Group`). See the module docs
 * and docs/PROTOCOL.md §5.3. Timers ({@link Group#nextTimeout},
 * {@link Group#handleTimeout}) cost in proportion to the deadlines that
 * pass, not to the room or to the members holding a key in its grace period.
 */
export class Group {
  /** @type {Config} */
  #config;
  /** @type {LocalMember} */
  #me;
  /** @type {string} */
  #meKey;
  /** @type {number} */
  #slot;
  /** @type {Map<string, Member>} */
  #members = new Map();
  /**
   * The deadline index: every current member holding a key with a deadline
   * has an entry no later than that deadline ({@link Group#install} files
   * it). An entry may outlive what it stood for (a key replaced, a member
   * gone): its visit finds nothing due. Timers visit only due entries.
   */
  #timed = new DeadlineIndex();
  /**
   * Keys of departed members, kept until their grace period ends.
   * @type {Map<string, { id: Uint8Array, slot: number, keys: Map<number, ReceiveKey> }>}
   */
  #departed = new Map();
  /**
   * Members who left, until their key package could no longer pass as fresh.
   * @type {Map<string, number>}
   */
  #left = new Map();
  /** @type {SenderKey} */
  #active;
  /** @type {PendingKey | null} */
  #pending = null;
  /** @type {Map<string, Owed>} */
  #owed = new Map();
  /** @type {number | null} */
  #lastJoin;
  /** @type {number | null} */
  #lastDeparture = null;
  /** Joins since the last departure: how far every sender has ratcheted that departure's fresh key. */
  #joinsSinceLeave = 0;
  /** @type {Promise<unknown>} the queue that runs state changes one at a time */
  #tail = Promise.resolve();
  #closed = false;

  /**
   * Use {@link Group.join}.
   * @param {symbol} token
   * @param {Config} config
   * @param {LocalMember} me
   * @param {SenderKey} active
   * @param {number} now
   */
  constructor(token, config, me, active, now) {
    if (token !== CONSTRUCT) {
      throw new ProtocolError('invalid_argument', 'groups are made by Group.join');
    }
    this.#config = config;
    this.#me = me;
    this.#meKey = idKey(me.keyPackage.participantId);
    this.#slot = slotOf(me.keyPackage.participantId);
    this.#active = active;
    // Our own join: every member's key is on its way.
    this.#lastJoin = now;
  }

  /**
   * Joins a room whose current members sent these key packages (the
   * signaling server's `joined`). Makes our first sender key (0, 0),
   * starts using it, and sends each accepted member a hello (no key). Our
   * key goes to a member only once an envelope from it authenticates: a
   * package the server lists for someone who is not there (a departed
   * member's, replayed) never gets a key, and that member stays unconfirmed.
   * @param {LocalMember} me our membership (its key package names the room)
   * @param {Uint8Array[]} memberPackages
   * @param {number} now
   * @param {ConfigInput} [config]
   * @returns {Promise<Joined>}
   */
  static async join(me, memberPackages, now, config = {}) {
    timeArg(now);
    if (!Array.isArray(memberPackages)) {
      throw new ProtocolError('invalid_argument', 'member packages must be an array');
    }
    const cfg = resolveConfig(config);
    const active = { generation: gen(0, 0), base: new Secret(freshKey(cfg)) };
    const group = new Group(CONSTRUCT, cfg, me, active, now);
    /** @type {Output[]} */
    const outputs = [group.#useSendKeyEvent()];
    /** @type {Joined['accepted']} */
    const accepted = [];
    /** @type {Joined['rejected']} */
    const rejected = [];
    for (const [index, bytes] of memberPackages.entries()) {
      /** @type {Member} */
      let member;
      try {
        member = await group.#admit(bytes, now, cfg.freshness.maxAgeMs);
      } catch (e) {
        if (!(e instanceof ProtocolError)) throw e;
        rejected.push({ index, error: e });
        continue;
      }
      const key = idKey(member.id);
      group.#members.set(key, member);
      try {
        outputs.push(await group.#send(member, { type: 'hello' }));
      } catch (e) {
        // Refused means not in the group: a member that never hears from us is not kept.
        group.#members.delete(key);
        if (!(e instanceof ProtocolError)) throw e;
        rejected.push({ index, error: e });
        continue;
      }
      accepted.push({ index, participantId: member.id.slice() });
      group.#owed.set(key, { first: group.#cloneActive(), fresh: null });
    }
    return { group, outputs, accepted, rejected };
  }

  /**
   * A member joined with this key package. We ratchet our sender key one
   * step (so the newcomer cannot read earlier frames) and send the new key
   * to the newcomer only: at once if its package was made after ours (give
   * or take the clock skew), else once an envelope of it authenticates.
   * Every other member ratchets its key the same way, with no message: we
   * note the generation each now sends under and derive nothing. The
   * package must be fresh by the newcomer bound (10 min). On error nothing
   * changes.
   * @param {Uint8Array} keyPackage
   * @param {number} now
   * @returns {Promise<Output[]>}
   */
  async memberJoined(keyPackage, now) {
    return (await this.admitNewcomer(keyPackage, now)).outputs;
  }

  /**
   * As {@link Group#memberJoined}, also giving the newcomer's verified key
   * package, so that the caller need not verify it a second time.
   * @param {Uint8Array} keyPackage
   * @param {number} now
   * @returns {Promise<{ package: KeyPackage, outputs: Output[] }>}
   */
  admitNewcomer(keyPackage, now) {
    timeArg(now);
    return this.#exclusive(async () => {
      const last = this.#pending?.key.generation ?? this.#active.generation;
      if (ratchetOf(last) === U16_MAX) {
        throw new ProtocolError('generation_exhausted', `sender key generation exhausted at ${rekeyOf(last)}:${U16_MAX}`);
      }
      const next = last + 1;
      // A newcomer's package was made for this join: the shorter bound.
      const member = await this.#admit(keyPackage, now, this.#config.freshness.newcomerMaxAgeMs);
      // A fresh key still waiting for acknowledgements is activated now:
      // the newcomer must get a key that is never used before it joined.
      const base = this.#pending?.key.base ?? this.#active.base;
      const ratcheted = await ratchet(base, next);
      // A package made after ours (within the clock skew) is one whose
      // departure we would have seen, so `#admit` refused it if it is a
      // replay: the newcomer gets our key at once. An older one could be a
      // member who left before we came: it gets our key once it is live.
      const afterUs =
        member.package.created + BigInt(this.#config.freshness.maxSkewMs) >= this.#me.keyPackage.created;
      /** @type {Uint8Array | null} */
      let envelope = null;
      if (afterUs) {
        envelope = await member.channel.seal({ type: 'sender_key', kid: kidOf(this.#slot, next), key: ratcheted.view() });
      }
      // Commit: nothing above changed the group.
      zeroizeSenderKey(this.#pending?.key);
      this.#pending = null;
      zeroizeSenderKey(this.#active);
      this.#active = { generation: next, base: ratcheted };
      const newcomer = idKey(member.id);
      this.#members.set(newcomer, member);
      /** @type {Output[]} */
      const outputs = [this.#useSendKeyEvent()];
      this.#lastJoin = now;
      this.#joinsSinceLeave = Math.min(this.#joinsSinceLeave + 1, U16_MAX);
      // Everyone else ratchets too, with no message: note it, derive nothing.
      for (const [key, m] of this.#members) {
        if (key === newcomer) continue;
        if (m.current === null) {
          // Its key is still on the way; it will be this much behind.
          if (m.countingMissed) m.missedJoins = Math.min(m.missedJoins + 1, U16_MAX);
        } else if (ratchetOf(m.current) < U16_MAX) {
          m.current += 1;
        }
      }
      if (envelope !== null) {
        outputs.push({ type: 'send', to: member.id.slice(), envelope });
      } else {
        this.#owed.set(newcomer, { first: this.#cloneActive(), fresh: null });
      }
      return { package: member.package, outputs };
    });
  }

  /**
   * A member left or was removed. We make a fresh random sender key, send
   * it to the remaining confirmed members only (unconfirmed ones are owed
   * it), and use it once they all acknowledge it or after `rekeyWaitMs`
   * (at once if there is nobody to wait for). The departed member's keys
   * are erased after the grace period, and its id is remembered so that
   * its key package is refused if shown again.
   * @param {Uint8Array} who
   * @param {number} now
   * @returns {Promise<Output[]>}
   */
  memberLeft(who, now) {
    participantArg(who, 'departed member');
    timeArg(now);
    return this.#exclusive(async () => {
      const whoKey = idKey(who);
      const member = this.#members.get(whoKey);
      if (member === undefined) throw unknownMember(who);
      // Its entries in `#timed` find no member when due.
      this.#members.delete(whoKey);
      zeroizeOwed(this.#owed.get(whoKey));
      this.#owed.delete(whoKey);
      const expiry = now + this.#config.graceMs;
      for (const key of member.keys.values()) {
        key.expires = key.expires === null ? expiry : Math.min(key.expires, expiry);
      }
      for (const key of member.chain.values()) key.zeroize();
      member.chain.clear();
      this.#departed.set(whoKey, { id: member.id, slot: member.slot, keys: member.keys });
      // Its package was at most `maxSkewMs` in the future when it arrived,
      // so after this it is stale wherever it is replayed.
      const stale = now + this.#config.freshness.maxAgeMs + this.#config.freshness.maxSkewMs;
      for (const [id, until] of this.#left) {
        if (until <= now) this.#left.delete(id);
      }
      this.#left.set(whoKey, stale);
      this.#noteDeparture(now);
      const last = this.#pending?.key.generation ?? this.#active.generation;
      const rekey = Math.max(rekeyOf(last), rekeyOf(this.#active.generation)) + 1;
      if (rekey > U16_MAX) {
        throw new ProtocolError('generation_exhausted', `sender key generation exhausted at ${U16_MAX}:${ratchetOf(last)}`);
      }
      const generation = gen(rekey, 0);
      const key = { generation, base: new Secret(freshKey(this.#config)) };
      // Members not confirmed yet get this one when they are, with what
      // else they are owed, and nobody waits for them.
      const ids = [...this.#members.keys()].sort();
      for (const id of ids) {
        const m = this.#members.get(id);
        if (m === undefined || m.confirmed) continue;
        let owed = this.#owed.get(id);
        if (owed === undefined) {
          owed = { first: null, fresh: null };
          this.#owed.set(id, owed);
        }
        zeroizeSenderKey(owed.fresh);
        owed.fresh = { generation, base: key.base.clone() };
      }
      const waiting = ids.filter((id) => this.#members.get(id)?.confirmed === true);
      /** @type {Output[]} */
      const outputs = [];
      for (const id of waiting) {
        const m = /** @type {Member} */ (this.#members.get(id));
        outputs.push(await this.#send(m, this.#keyMessage(key)));
      }
      zeroizeSenderKey(this.#pending?.key);
      this.#pending = { key, waiting: new Set(waiting), deadline: now + this.#config.rekeyWaitMs };
      // Nobody to wait for (alone, or only unconfirmed members): use it at once.
      if (waiting.length === 0) outputs.push(this.#activatePending());
      return outputs;
    });
  }

  /**
   * A member left that we had refused (so {@link Group#memberLeft} does not
   * apply): the others, who accepted it, each make a fresh key now, and the
   * joins that follow ratchet that key. `memberLeft` does this too.
   * @param {number} now
   * @returns {Promise<void>}
   */
  departureSeen(now) {
    timeArg(now);
    return this.#exclusive(() => {
      this.#noteDeparture(now);
    });
  }

  /**
   * An envelope arrived from the relay. Errors (tampered, replayed,
   * misaddressed, unknown sender) change nothing. The first envelope that
   * authenticates from a member confirms it: what we owe it is sent first,
   * then `confirmed`.
   * @param {Uint8Array} envelope
   * @param {number} now
   * @returns {Promise<Output[]>}
   */
  receiveEnvelope(envelope, now) {
    timeArg(now);
    return this.#exclusive(async () => {
      const header = parseEnvelopeHeader(envelope);
      if (idKey(header.to) !== this.#meKey) {
        throw new ProtocolError('not_for_me', 'envelope addressed to another participant', {
          participantId: header.to,
        });
      }
      const fromKey = idKey(header.from);
      if (fromKey === this.#meKey) {
        throw new ProtocolError('from_self', 'envelope claims to come from us');
      }
      const member = this.#members.get(fromKey);
      if (member === undefined) throw unknownMember(header.from);
      // Opens, decodes, and refuses a sender key outside the member's slot.
      const message = await member.channel.open(envelope);
      // It authenticated: the member is live. What we owe it goes first.
      /** @type {Output[]} */
      const outputs = [];
      if (!member.confirmed) {
        outputs.push(...(await this.#payOwed(member)));
        outputs.push({ type: 'confirmed', participantId: member.id.slice() });
      }
      member.confirmed = true;
      switch (message.type) {
        case 'sender_key':
          outputs.push(...(await this.#receiveSenderKey(member, message.kid, message.key, now)));
          return outputs;
        case 'key_ack': {
          const p = this.#pending;
          if (p !== null && kidOf(this.#slot, p.key.generation) === message.kid) {
            p.waiting.delete(fromKey);
            if (p.waiting.size === 0) outputs.push(this.#activatePending());
          }
          return outputs;
        }
        case 'hello':
          // Its work (confirming the member, paying what we owe it) is done above.
          return outputs;
        default:
          return outputs;
      }
    });
  }

  /**
   * The key a frame from `sender` under `kid` would need, derived but
   * **not installed**: a later ratchet step of a key we hold, of the same
   * `rekey`, at most `maxRatchetAhead` steps above that key or from the
   * generation the member sends under. No key is installed, no event
   * emitted, no deadline started: a forged KID costs only the derivation,
   * at most `maxRatchetAhead` HKDF steps (the first frame after joins may
   * bring the member's cached chain keys up to date once). Open the frame
   * under it and call {@link Group#deriveReceiveKey} only if it
   * authenticates (§5.3). Throws `unknown_member`, `unknown_key`, or
   * `key_held` (the key is installed already).
   * @param {Uint8Array} sender
   * @param {bigint} kid
   * @returns {Promise<CandidateKey>}
   */
  candidateReceiveKey(sender, kid) {
    participantArg(sender, 'sender');
    kidArg(kid);
    return this.#exclusive(async () => {
      const member = this.#members.get(idKey(sender));
      if (member === undefined) throw unknownMember(sender);
      const maxAhead = this.#config.maxRatchetAhead;
      const target = derivable(member, kid, maxAhead);
      await bringChainNear(member, target, maxAhead);
      const derived = await deriveBase(member, target);
      if (derived === null) {
        throw new ProtocolError('unknown_key', `no key for KID ${kid} and none derivable`, { kid });
      }
      return new CandidateKey(CONSTRUCT, member.id, kid, derived.base);
    });
  }

  /**
   * What to make of a frame of `sender` under `kid` that no key we hold
   * opens and {@link Group#candidateReceiveKey} cannot derive:
   * `never` (not a member, or another slot's KID), `before_us` (older than
   * the first key `sender` gave us), `gone` (below the newest key we hold
   * of it: erased), else `may_come` (ahead of what we hold).
   * @param {Uint8Array} sender
   * @param {bigint} kid
   * @returns {KeyOutlookValue}
   */
  keyOutlook(sender, kid) {
    participantArg(sender, 'sender');
    kidArg(kid);
    const member = this.#members.get(idKey(sender));
    if (member === undefined) return KeyOutlook.Never;
    const target = generationOfKid(kid, member.slot);
    if (target === null) return KeyOutlook.Never;
    if (member.firstKey !== null && target < member.firstKey) return KeyOutlook.BeforeUs;
    const newest = sortedGenerations(member.keys).pop();
    return newest !== undefined && target < newest ? KeyOutlook.Gone : KeyOutlook.MayCome;
  }

  /**
   * Whether `sender` is a member whose first key has not reached us yet.
   * @param {Uint8Array} sender
   */
  awaitsFirstKey(sender) {
    participantArg(sender, 'sender');
    return this.#members.get(idKey(sender))?.keys.size === 0;
  }

  /**
   * Whether we saw a member join or leave (ours, or one we refused) at or
   * after `at`, or joined ourselves then: keys were changing.
   * @param {number} at
   */
  changedSince(at) {
    timeArg(at);
    return (this.#lastJoin !== null && this.#lastJoin >= at) || (this.#lastDeparture !== null && this.#lastDeparture >= at);
  }

  /**
   * Derives and installs the receive key for a frame from `sender` under
   * `kid`: call it only once a frame has authenticated under that key
   * (installing a newer key starts the grace period of the older ones).
   * Nothing to do (`[]`) if the key is installed already.
   * @param {Uint8Array} sender
   * @param {bigint} kid
   * @param {number} now
   * @returns {Promise<Output[]>}
   */
  deriveReceiveKey(sender, kid, now) {
    participantArg(sender, 'sender');
    kidArg(kid);
    timeArg(now);
    return this.#exclusive(async () => {
      const member = this.#members.get(idKey(sender));
      if (member === undefined) throw unknownMember(sender);
      const maxAhead = this.#config.maxRatchetAhead;
      let target;
      try {
        target = derivable(member, kid, maxAhead);
      } catch (e) {
        if (e instanceof ProtocolError && e.code === 'key_held') return [];
        throw e;
      }
      await bringChainNear(member, target, maxAhead);
      const event = await this.#deriveUpTo(member, target, now);
      if (event === null) {
        throw new ProtocolError('unknown_key', `no key for KID ${kid} and none derivable`, { kid });
      }
      return [event];
    });
  }

  /**
   * Acts on every deadline up to `now`: erases keys whose grace ended,
   * activates a fresh key whose acknowledgements did not all arrive.
   * Visits only members with an entry that is due.
   * @param {number} now
   * @returns {Promise<Output[]>}
   */
  handleTimeout(now) {
    timeArg(now);
    return this.#exclusive(() => {
      /** @type {Output[]} */
      const outputs = [];
      for (let due = this.#timed.first(); due !== undefined && due.at <= now; due = this.#timed.first()) {
        this.#timed.popFirst();
        const member = this.#members.get(due.id);
        if (member === undefined) continue; // it left; its keys went to `departed`
        instrumentation.timerVisits += 1;
        outputs.push(...removeExpired(member.id, member.slot, member.keys, now));
        pruneChain(member);
        const next = earliestExpiry(member);
        if (next !== null) this.#timed.add(next, due.id);
      }
      for (const id of [...this.#departed.keys()].sort()) {
        const d = /** @type {{ id: Uint8Array, slot: number, keys: Map<number, ReceiveKey> }} */ (this.#departed.get(id));
        outputs.push(...removeExpired(d.id, d.slot, d.keys, now));
        if (d.keys.size === 0) this.#departed.delete(id);
      }
      if (this.#pending !== null && this.#pending.deadline <= now) {
        outputs.push(this.#activatePending());
      }
      return outputs;
    });
  }

  /**
   * The earliest time {@link Group#handleTimeout} may have work to do, or
   * null: never later than a deadline, and after `handleTimeout(now)`,
   * later than `now`. Looks at the first entry of the index, the keys of
   * members who left within the grace period, and the pending key.
   * @returns {number | null}
   */
  nextTimeout() {
    let next = this.#pending?.deadline ?? null;
    const first = this.#timed.first();
    if (first !== undefined && (next === null || first.at < next)) next = first.at;
    for (const d of this.#departed.values()) {
      for (const k of d.keys.values()) {
        if (k.expires !== null && (next === null || k.expires < next)) next = k.expires;
      }
    }
    return next;
  }

  /** Our participant id (a copy). */
  me() {
    return this.#me.keyPackage.participantId.slice();
  }

  /** The room. */
  room() {
    return this.#me.keyPackage.room;
  }

  /**
   * Current members other than us, with their verified key packages, by participant id.
   * @returns {{ participantId: Uint8Array, package: KeyPackage }[]}
   */
  members() {
    return [...this.#members.keys()].sort().map((k) => {
      const m = /** @type {Member} */ (this.#members.get(k));
      return { participantId: m.id.slice(), package: m.package };
    });
  }

  /**
   * A current member's verified key package.
   * @param {Uint8Array} id
   */
  member(id) {
    participantArg(id, 'member');
    return this.#members.get(idKey(id))?.package;
  }

  /**
   * Whether a current member is confirmed: an envelope from it has authenticated.
   * @param {Uint8Array} id
   */
  isConfirmed(id) {
    participantArg(id, 'member');
    return this.#members.get(idKey(id))?.confirmed === true;
  }

  /** The KID our frames currently carry. */
  activeKid() {
    return kidOf(this.#slot, this.#active.generation);
  }

  /**
   * The safety number between us and a member (§7; compare it out of band).
   * @param {Uint8Array} peer
   */
  async safetyNumber(peer) {
    participantArg(peer, 'member');
    const member = this.#members.get(idKey(peer));
    if (member === undefined) throw unknownMember(peer);
    return safetyNumber(this.#me.keyPackage.identity, member.package.identity);
  }

  /**
   * A non-secret picture of the state (generations, deadlines, flags; no
   * key material), for tests, debugging and the fixture tests. Ids are hex.
   */
  snapshot() {
    /** @param {Map<number, ReceiveKey>} keys */
    const keyList = (keys) =>
      sortedGenerations(keys).map((g) => ({ generation: genObject(g), expires: keys.get(g)?.expires ?? null }));
    /** @param {number | null} g */
    const opt = (g) => (g === null ? null : genObject(g));
    return {
      me: this.#meKey,
      active: genObject(this.#active.generation),
      pending:
        this.#pending === null
          ? null
          : {
              generation: genObject(this.#pending.key.generation),
              waiting: [...this.#pending.waiting].sort(),
              deadline: this.#pending.deadline,
            },
      members: [...this.#members.keys()].sort().map((id) => {
        const m = /** @type {Member} */ (this.#members.get(id));
        return {
          participantId: id,
          confirmed: m.confirmed,
          current: opt(m.current),
          firstKey: opt(m.firstKey),
          missedJoins: m.missedJoins,
          countingMissed: m.countingMissed,
          keys: keyList(m.keys),
          chain: sortedGenerations(m.chain).map(genObject),
        };
      }),
      timed: this.#timed.entries().map((e) => ({ at: e.at, participantId: e.id })),
      departed: [...this.#departed.keys()].sort().map((id) => ({
        participantId: id,
        keys: keyList(/** @type {{ keys: Map<number, ReceiveKey> }} */ (this.#departed.get(id)).keys),
      })),
      left: [...this.#left.keys()].sort().map((id) => ({ participantId: id, until: this.#left.get(id) ?? 0 })),
      owed: [...this.#owed.keys()].sort().map((id) => {
        const o = /** @type {Owed} */ (this.#owed.get(id));
        return {
          participantId: id,
          first: o.first === null ? null : genObject(o.first.generation),
          fresh: o.fresh === null ? null : genObject(o.fresh.generation),
        };
      }),
      lastJoin: this.#lastJoin,
      lastDeparture: this.#lastDeparture,
      joinsSinceLeave: this.#joinsSinceLeave,
    };
  }

  /**
   * Zeroes every key the group holds and refuses further changes (after
   * the calls already queued). The Rust group does this on drop.
   * @returns {Promise<void>}
   */
  close() {
    return this.#exclusive(() => {
      this.#closed = true;
      zeroizeSenderKey(this.#active);
      zeroizeSenderKey(this.#pending?.key);
      this.#pending = null;
      for (const owed of this.#owed.values()) zeroizeOwed(owed);
      this.#owed.clear();
      for (const m of this.#members.values()) {
        for (const k of m.keys.values()) k.base.zeroize();
        for (const k of m.chain.values()) k.zeroize();
        m.keys.clear();
        m.chain.clear();
      }
      for (const d of this.#departed.values()) {
        for (const k of d.keys.values()) k.base.zeroize();
      }
      this.#departed.clear();
      this.#timed.clear();
    });
  }

  toJSON() {
    return { me: this.#meKey, members: [...this.#members.keys()].sort(), active: genObject(this.#active.generation) };
  }

  [INSPECT]() {
    return `Group ${JSON.stringify(this.toJSON())}`;
  }

  // -------------------------------------------------------------------------
  // Internals
  // -------------------------------------------------------------------------

  /**
   * Runs `fn` after every state change queued before it, alone.
   * @template T
   * @param {() => Promise<T> | T} fn
   * @returns {Promise<T>}
   */
  #exclusive(fn) {
    const run = this.#tail.then(async () => {
      if (this.#closed) throw new ProtocolError('invalid_argument', 'the group is closed');
      return await fn();
    });
    this.#tail = run.catch(() => undefined);
    return run;
  }

  /**
   * Verifies a key package, no older than `maxAgeMs`, and opens a channel
   * to its member; the member is not added (Rust `admit`, which adds it).
   * @param {Uint8Array} bytes
   * @param {number} now
   * @param {number} maxAgeMs
   * @returns {Promise<Member>}
   */
  async #admit(bytes, now, maxAgeMs) {
    const own = this.#me.keyPackage;
    const kp = await verifyKeyPackage(bytes, {
      room: own.room,
      nowMs: now,
      maxAgeMs: Math.min(maxAgeMs, this.#config.freshness.maxAgeMs),
      maxSkewMs: this.#config.freshness.maxSkewMs,
      own: { participantId: own.participantId, ephemeral: own.ephemeral },
      isKnown: (id) => this.#members.has(idKey(id)) || this.#departed.has(idKey(id)),
    });
    const key = idKey(kp.participantId);
    const until = this.#left.get(key);
    if (until !== undefined && until > now) {
      throw new ProtocolError('departed', 'that participant left this room; its key package cannot be used again', {
        participantId: kp.participantId.slice(),
      });
    }
    const channel = await this.#me.channelTo(kp);
    // Checked again after the awaits: the same package twice in one `joined`.
    if (this.#members.has(key)) {
      throw new ProtocolError('duplicate_member', 'participant id is or was already in the group', {
        participantId: kp.participantId.slice(),
      });
    }
    return {
      id: kp.participantId,
      slot: slotOf(kp.participantId),
      package: kp,
      channel,
      keys: new Map(),
      missedJoins: 0,
      countingMissed: true,
      current: null,
      chain: new Map(),
      confirmed: false,
      firstKey: null,
    };
  }

  /**
   * A sender key (type 0x01) from an authenticated member (the `SenderKey`
   * arm of Rust `receive_envelope`): install it unless stale or held,
   * move the member's current generation by the joins seen since it was
   * made, derive that generation's key, and acknowledge in every case.
   * @param {Member} member
   * @param {bigint} kid
   * @param {Uint8Array} keyBytes ours: adopted or zeroed
   * @param {number} now
   * @returns {Promise<Output[]>}
   */
  async #receiveSenderKey(member, kid, keyBytes, now) {
    /** @type {Output[]} */
    const outputs = [];
    const generation = generationOfKid(kid, member.slot);
    if (generation === null) {
      // protocol.js refused it already; kept for the reader comparing with the Rust.
      keyBytes.fill(0);
      throw new ProtocolError('foreign_key_id', 'sender key KID is not in the sender\'s slot', { kid });
    }
    const memberKey = idKey(member.id);
    const newest = sortedGenerations(member.keys).pop();
    const stale = newest !== undefined && rekeyOf(generation) < rekeyOf(newest);
    if (!stale && !member.keys.has(generation)) {
      const base = new Secret(keyBytes);
      this.#install(memberKey, member, generation, base, now + this.#config.graceMs, null);
      outputs.push({ type: 'install_receive_key', sender: member.id.slice(), kid, baseKey: base.copy() });
    } else {
      keyBytes.fill(0);
    }
    if (!stale) {
      // The sender has ratcheted this key once per join since it made it;
      // we saw those joins before the key arrived.
      const c = member.current;
      /** @type {number | null} */
      let behind = null;
      if (c === null) behind = member.missedJoins;
      else if (rekeyOf(generation) > rekeyOf(c)) behind = this.#joinsSinceLeave;
      else if (generation > c) behind = 0;
      if (behind !== null) {
        const nowAt = gen(rekeyOf(generation), Math.min(ratchetOf(generation) + behind, U16_MAX));
        member.current = nowAt;
        member.missedJoins = 0;
        const event = await this.#deriveUpTo(member, nowAt, now);
        if (event !== null) outputs.push(event);
      }
      pruneChain(member);
    }
    // Acknowledge even duplicates and stale keys, so the sender stops waiting.
    outputs.push({ type: 'send', to: member.id.slice(), envelope: await member.channel.seal({ type: 'key_ack', kid }) });
    return outputs;
  }

  /**
   * Installs the key of generation `target`, derived from the nearest
   * earlier key of the same `rekey` we hold (or a cached chain key above
   * it); nothing if it is held already or no such key is held. A key
   * derived from one on its way out leaves with it (Rust `derive_up_to`).
   * @param {Member} member
   * @param {number} target
   * @param {number} now
   * @returns {Promise<Output | null>}
   */
  async #deriveUpTo(member, target, now) {
    if (member.keys.has(target)) return null;
    const derived = await deriveBase(member, target);
    if (derived === null) return null;
    this.#install(idKey(member.id), member, target, derived.base, now + this.#config.graceMs, derived.inherited);
    pruneChain(member);
    return {
      type: 'install_receive_key',
      sender: member.id.slice(),
      kid: kidOf(member.slot, target),
      baseKey: derived.base.copy(),
    };
  }

  /**
   * Installs a receive key (Rust `install`). Only the newest key of a
   * member lives without a deadline: every older one (this one too, if a
   * newer exists) is erased at `graceEnd`, or at `inherited` (the deadline
   * of the key it was derived from) or an earlier deadline already set. A
   * member given a deadline is filed in `#timed` under its earliest.
   * @param {string} memberKey
   * @param {Member} member
   * @param {number} generation
   * @param {Secret} base taken over
   * @param {number} graceEnd
   * @param {number | null} inherited
   */
  #install(memberKey, member, generation, base, graceEnd, inherited) {
    let newerExists = false;
    for (const g of member.keys.keys()) {
      if (g >= generation) newerExists = true;
    }
    const deadline = inherited === null ? graceEnd : Math.min(inherited, graceEnd);
    const expires = newerExists || inherited !== null ? deadline : null;
    member.keys.get(generation)?.base.zeroize();
    member.keys.set(generation, { base, expires });
    member.firstKey = member.firstKey === null ? generation : Math.min(member.firstKey, generation);
    for (const [g, key] of member.keys) {
      if (g < generation && key.expires === null) key.expires = graceEnd;
    }
    const earliest = earliestExpiry(member);
    if (earliest !== null) this.#timed.add(earliest, memberKey);
  }

  /**
   * Sends what we owe a member, first then fresh, and forgets (zeroes) it.
   * @param {Member} member
   * @returns {Promise<Output[]>}
   */
  async #payOwed(member) {
    const key = idKey(member.id);
    const owed = this.#owed.get(key);
    if (owed === undefined) return [];
    /** @type {Output[]} */
    const outputs = [];
    for (const k of [owed.first, owed.fresh]) {
      if (k !== null) outputs.push(await this.#send(member, this.#keyMessage(k)));
    }
    zeroizeOwed(owed);
    this.#owed.delete(key);
    return outputs;
  }

  /**
   * The sender-key message carrying one of our keys. Its `key` is a view:
   * seal it at once (sealing copies it, then zeroes the plaintext).
   * @param {SenderKey} key
   * @returns {Message}
   */
  #keyMessage(key) {
    return { type: 'sender_key', kid: kidOf(this.#slot, key.generation), key: key.base.view() };
  }

  /**
   * @param {Member} member
   * @param {Message} message
   * @returns {Promise<Output>}
   */
  async #send(member, message) {
    return { type: 'send', to: member.id.slice(), envelope: await member.channel.seal(message) };
  }

  /** @returns {Output} */
  #useSendKeyEvent() {
    return { type: 'use_send_key', kid: this.activeKid(), baseKey: this.#active.base.copy() };
  }

  #cloneActive() {
    return { generation: this.#active.generation, base: this.#active.base.clone() };
  }

  /** @returns {Output} */
  #activatePending() {
    const p = /** @type {PendingKey} */ (this.#pending);
    this.#pending = null;
    zeroizeSenderKey(this.#active);
    this.#active = p.key;
    return this.#useSendKeyEvent();
  }

  /**
   * Rust `departure_seen`, for use inside a queued change.
   * @param {number} now
   */
  #noteDeparture(now) {
    this.#lastDeparture = now;
    this.#joinsSinceLeave = 0;
    for (const m of this.#members.values()) {
      if (m.current === null) m.countingMissed = false;
    }
  }
}

/**
 * A fresh sender key from the configured source, checked.
 * @param {Config} config
 */
function freshKey(config) {
  const key = config.randomKey();
  if (!(key instanceof Uint8Array) || key.length !== SENDER_KEY_LEN) {
    throw new ProtocolError('invalid_argument', `randomKey must return ${SENDER_KEY_LEN} bytes`);
  }
  return key;
}

/** @param {Uint8Array} id */
function unknownMember(id) {
  return new ProtocolError('unknown_member', 'participant is not a member', { participantId: id.slice() });
}
