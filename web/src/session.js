// @ts-check
/**
 * One participant's call without sockets (the browser's port of the Rust
 * client's `media-client/src/session.rs`): signaling messages (§9), the
 * group's keys (§5.3) and frame encryption (§6), driven by events and the
 * time. The page's media worker owns one; the page's thread carries out
 * what it returns (WebSocket messages) and feeds it the server's messages.
 *
 * Two kinds of participant id meet here, as in the Rust client: the
 * signaling server's numeric id (who a message or a forwarded stream is
 * from) and the e2ee participant id in each member's signed key package.
 * The roster maps one to the other, learned from the key package each
 * member joined with.
 *
 * Every method that changes state runs one at a time in call order (a
 * queue, as the Rust `&mut self` methods), because WebCrypto is async.
 */

import {
  LocalMember,
  ProtocolError,
  SframeKey,
  SframeReceiver,
  SframeSender,
  parseEnvelopeHeader,
  splitEncryptedFrame,
} from './protocol.js';
import { Group, KeyOutlook } from './group.js';

/** How long a frame whose key has not arrived yet is kept (ms), as the Rust client. */
export const HOLD_MS = 1_000;
/** How many such frames are kept at most (four senders' worth). */
export const HOLD_MAX = 512;
/** How many of them may come from one sender. */
export const HOLD_PER_SENDER = 128;
/**
 * A held frame that never opened counts as lost to a key change if its
 * sender's first key has not reached us, or if the membership changed
 * within this long (ms) before it arrived or while it was held; otherwise
 * as a failure (`unknown_key`).
 */
export const CHANGE_WINDOW_MS = 5_000;

/**
 * A remote member as this client knows it.
 * @typedef {object} Peer
 * @property {number} id signaling id
 * @property {string} name display name (the server's claim)
 * @property {Uint8Array} e2ee e2ee participant id from its key package
 * @property {Uint8Array} identity its identity key
 */

/**
 * Counters of one sender's frames (and the totals, over every sender).
 * @typedef {object} FrameCounts
 * @property {number} received frames that arrived
 * @property {number} decrypted frames that decrypted
 * @property {Record<string, number>} failed frames dropped, by reason
 * @property {number} held_then_decrypted frames that waited for their key and then decrypted
 * @property {number} lost_to_key_change frames whose key never came in time
 * @property {number} before_join frames sealed before the sender saw our join (neither failed nor lost)
 */

/**
 * What the caller must do, or may show.
 * @template H
 * @typedef {{ type: 'send', message: Record<string, unknown> }
 *   | { type: 'joined', you: number }
 *   | { type: 'peer_joined', peer: Peer }
 *   | { type: 'peer_confirmed', peer: Peer }
 *   | { type: 'peer_left', peer: Peer }
 *   | { type: 'frame', from: number, codec: import('./protocol.js').Codec, frame: Uint8Array, handle: H }
 *   | { type: 'warning', code: string, detail: string }} CallEvent
 */

/**
 * A frame kept until its key may come.
 * @template H
 * @typedef {{ from: number, codec: import('./protocol.js').Codec, data: Uint8Array, handle: H, since: number }} Held
 */

/** Counters of nothing yet. @returns {FrameCounts} */
function noCounts() {
  return { received: 0, decrypted: 0, failed: {}, held_then_decrypted: 0, lost_to_key_change: 0, before_join: 0 };
}

/** @param {Uint8Array} bytes */
function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * Standard base64 with padding (§9), as signaling carries opaque bytes.
 * @param {Uint8Array} bytes
 */
export function toBase64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

/**
 * Decodes standard base64; `malformed` if it is not.
 * @param {unknown} text
 */
export function fromBase64(text) {
  if (typeof text !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) {
    throw new ProtocolError('malformed', 'not standard base64');
  }
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

/**
 * Seals our frames and opens everyone else's, following the group's key
 * outputs (the Rust client's `FrameCrypto`).
 */
export class FrameCrypto {
  /** @type {SframeSender | null} */
  #sender = null;
  /** @type {Map<string, SframeReceiver>} by e2ee id (hex) */
  #receivers = new Map();

  /**
   * Applies one key output of the group; zeroes its base key.
   * @param {import('./group.js').Output} output
   */
  async apply(output) {
    if (output.type === 'use_send_key') {
      try {
        this.#sender = new SframeSender(await SframeKey.derive(output.baseKey, output.kid));
      } finally {
        output.baseKey.fill(0);
      }
    } else if (output.type === 'install_receive_key') {
      try {
        const key = hex(output.sender);
        let rx = this.#receivers.get(key);
        if (rx === undefined) {
          rx = new SframeReceiver();
          this.#receivers.set(key, rx);
        }
        // A live KID keeps its key and replay window (§6).
        if (!rx.hasKey(output.kid)) rx.addKey(await SframeKey.derive(output.baseKey, output.kid));
      } finally {
        output.baseKey.fill(0);
      }
    } else if (output.type === 'remove_receive_key') {
      this.#receivers.get(hex(output.sender))?.removeKey(output.kid);
    }
  }

  /** The KID our frames carry now, or null before our first key. */
  get sendKid() {
    return this.#sender?.kid ?? null;
  }

  /**
   * Encrypts one of our encoded frames.
   * @param {import('./protocol.js').Codec} codec
   * @param {Uint8Array} frame
   */
  seal(codec, frame) {
    if (this.#sender === null) throw new ProtocolError('unknown_key', 'no send key yet');
    return this.#sender.seal(codec, frame);
  }

  /**
   * Opens a frame of `sender`; `unknown_key_id` (with `detail.kid`) when no key is held for its KID.
   * @param {Uint8Array} sender
   * @param {import('./protocol.js').Codec} codec
   * @param {Uint8Array} data
   */
  async open(sender, codec, data) {
    const rx = this.#receivers.get(hex(sender));
    if (rx === undefined) {
      const { kid } = splitEncryptedFrame(codec, data);
      throw new ProtocolError('unknown_key_id', `no key of this sender yet, KID ${kid}`, { kid });
    }
    return (await rx.open(codec, data)).frame;
  }

  /**
   * Whether `data` authenticates under a candidate key (derived, not
   * installed). Nothing here changes: a forged frame leaves every key and
   * replay window as it was.
   * @param {import('./group.js').CandidateKey} candidate
   * @param {import('./protocol.js').Codec} codec
   * @param {Uint8Array} data
   */
  async checkCandidate(candidate, codec, data) {
    const trial = new SframeReceiver();
    trial.addKey(await candidate.sframeKey());
    await trial.open(codec, data);
  }

  /**
   * Forgets a departed sender entirely.
   * @param {Uint8Array} sender
   */
  forget(sender) {
    this.#receivers.delete(hex(sender));
  }
}

/**
 * The call state of one participant.
 * @template H a handle the caller attaches to each received frame (the
 *   browser's encoded frame and where to put it), given back with it
 */
export class Session {
  /** @type {LocalMember | null} */
  #local;
  /** @type {Partial<import('./group.js').ConfigInput>} */
  #config;
  /** @type {Group | null} */
  #group = null;
  #crypto = new FrameCrypto();
  /** @type {number | null} */
  #you = null;
  /** @type {Map<number, Peer>} */
  #bySig = new Map();
  /** @type {Map<string, number>} */
  #byE2ee = new Map();
  /** @type {number[]} the last members that left (their late frames are not failures) */
  #departed = [];
  /** @type {Map<string, number>} forwarded stream id → publisher, as `track_added` said */
  #streams = new Map();
  /** @type {Held<H>[]} */
  #held = [];
  /** @type {Map<number, FrameCounts>} */
  #perPeer = new Map();
  /** Totals over every sender, and our own frames. */
  stats = { ...noCounts(), sent: 0, unsendable: 0, unattributed: 0, after_leave: 0 };
  /** @type {Promise<unknown>} */
  #tail = Promise.resolve();

  /**
   * Use {@link Session.create}.
   * @param {LocalMember} local
   * @param {import('./group.js').ConfigInput} config
   */
  constructor(local, config) {
    this.#local = local;
    this.#config = config;
  }

  /**
   * Prepares to join `room`: makes the key package and the `join` message.
   * @template H
   * @param {import('./protocol.js').Identity} identity
   * @param {{ room: string, name: string, token: string }} join
   * @param {number} now Unix ms
   * @param {import('./group.js').ConfigInput} [config]
   * @returns {Promise<{ session: Session<H>, join: Record<string, unknown> }>}
   */
  static async create(identity, join, now, config = {}) {
    const local = await LocalMember.create(identity, join.room, now);
    /** @type {Session<H>} */
    const session = new Session(local, config);
    const message = {
      type: 'join',
      protocol: 1,
      room: join.room,
      name: join.name,
      token: join.token,
      key_package: toBase64(local.keyPackage.bytes),
    };
    return { session, join: message };
  }

  /** Our signaling id, once joined. */
  get you() {
    return this.#you;
  }

  /** The members we know, in signaling id order. */
  peers() {
    return [...this.#bySig.values()].sort((a, b) => a.id - b.id);
  }

  /**
   * One member's frame counters.
   * @param {number} id signaling id
   */
  peerStats(id) {
    return this.#perPeer.get(id) ?? noCounts();
  }

  /**
   * Whether a member proved it is live (§5.3).
   * @param {number} id signaling id
   */
  isConfirmed(id) {
    const peer = this.#bySig.get(id);
    return peer !== undefined && this.#group !== null && this.#group.isConfirmed(peer.e2ee);
  }

  /**
   * The safety number with a member (§7), in its display form.
   * @param {number} id signaling id
   */
  async safetyNumber(id) {
    const peer = this.#bySig.get(id);
    if (peer === undefined || this.#group === null) return null;
    return (await this.#group.safetyNumber(peer.e2ee)).display;
  }

  /** Whether we have a key to send under. */
  get canSend() {
    return this.#crypto.sendKid !== null;
  }

  /**
   * Runs `f` after every earlier state change.
   * @template T
   * @param {() => Promise<T>} f
   * @returns {Promise<T>}
   */
  #exclusive(f) {
    const run = this.#tail.then(f);
    this.#tail = run.catch(() => undefined);
    return run;
  }

  /**
   * A message from the signaling server (already parsed JSON). Messages
   * the e2ee layer does not use (SDP, candidates, errors) give nothing.
   * @param {Record<string, unknown>} msg
   * @param {number} now
   * @returns {Promise<CallEvent<H>[]>}
   */
  handleServer(msg, now) {
    return this.#exclusive(async () => {
      /** @type {CallEvent<H>[]} */
      const events = [];
      try {
        await this.#handleServer(msg, now, events);
      } catch (e) {
        if (!(e instanceof ProtocolError)) throw e;
        events.push({ type: 'warning', code: e.code, detail: `${String(msg.type)}: ${e.message}` });
      }
      return events;
    });
  }

  /**
   * @param {Record<string, unknown>} msg
   * @param {number} now
   * @param {CallEvent<H>[]} events
   */
  async #handleServer(msg, now, events) {
    switch (msg.type) {
      case 'joined': {
        const local = this.#local;
        if (local === null) {
          events.push({ type: 'warning', code: 'second_joined', detail: 'a second joined was ignored' });
          return;
        }
        this.#local = null;
        const members = Array.isArray(msg.members) ? msg.members.map(member) : [];
        this.#you = sigId(msg.you);
        events.push({ type: 'joined', you: this.#you });
        const joined = await Group.join(
          local,
          members.map((m) => m.keyPackage),
          now,
          this.#config,
        );
        for (const { index, error } of joined.rejected) {
          const m = members[index];
          if (m !== undefined) events.push(refused(m.id, error));
        }
        for (const { index, participantId } of joined.accepted) {
          const m = members[index];
          const kp = joined.group.member(participantId);
          if (m === undefined || kp === undefined || this.#byE2ee.has(hex(participantId))) continue;
          const peer = { id: m.id, name: m.name, e2ee: participantId, identity: kp.identity };
          this.#insert(peer);
          events.push({ type: 'peer_joined', peer });
        }
        this.#group = joined.group;
        await this.#carryOut(joined.outputs, now, events);
        return;
      }
      case 'member_joined': {
        const m = member(msg.member);
        if (this.#group === null) {
          events.push(refused(m.id, new ProtocolError('unknown_member', 'a member joined before we did')));
          return;
        }
        let admitted;
        try {
          admitted = await this.#group.admitNewcomer(m.keyPackage, now);
        } catch (e) {
          if (!(e instanceof ProtocolError)) throw e;
          events.push(refused(m.id, e));
          return;
        }
        const peer = { id: m.id, name: m.name, e2ee: admitted.package.participantId, identity: admitted.package.identity };
        this.#insert(peer);
        events.push({ type: 'peer_joined', peer });
        const installed = await this.#carryOutKeys(admitted.outputs, events);
        // Keys of others are derived from their frames (§5.3): a held
        // frame may be in reach after this join.
        if (installed || this.#held.length > 0) await this.#retryHeld(now, events);
        return;
      }
      case 'member_left': {
        const id = sigId(msg.id);
        const peer = this.#forget(id);
        if (peer !== null) {
          if (this.#group !== null) {
            await this.#carryOut(await this.#group.memberLeft(peer.e2ee, now), now, events);
          }
          events.push({ type: 'peer_left', peer });
        } else if (this.#group !== null) {
          // One we refused: the others rekey all the same.
          await this.#group.departureSeen(now);
        }
        return;
      }
      case 'envelope': {
        const from = sigId(msg.from);
        const payload = fromBase64(msg.payload);
        const claimed = parseEnvelopeHeader(payload).from;
        const expected = this.#bySig.get(from);
        if (expected === undefined || this.#group === null || hex(claimed) !== hex(expected.e2ee)) {
          events.push({ type: 'warning', code: 'envelope_sender_mismatch', detail: `envelope from ${from}` });
          return;
        }
        try {
          await this.#carryOut(await this.#group.receiveEnvelope(payload, now), now, events);
        } catch (e) {
          if (!(e instanceof ProtocolError)) throw e;
          events.push({ type: 'warning', code: e.code, detail: `envelope from ${from} refused: ${e.message}` });
        }
        return;
      }
      case 'track_added':
        if (typeof msg.stream_id === 'string') this.#streams.set(msg.stream_id, sigId(msg.publisher));
        return;
      case 'track_removed':
        if (typeof msg.stream_id === 'string') this.#streams.delete(msg.stream_id);
        return;
      default:
    }
  }

  /**
   * Deadlines of the group and of held frames.
   * @param {number} now
   * @returns {Promise<CallEvent<H>[]>}
   */
  handleTimeout(now) {
    return this.#exclusive(async () => {
      /** @type {CallEvent<H>[]} */
      const events = [];
      if (this.#group !== null) await this.#carryOut(await this.#group.handleTimeout(now), now, events);
      while (this.#held.length > 0 && /** @type {Held<H>} */ (this.#held[0]).since + HOLD_MS <= now) {
        this.#giveUp(/** @type {Held<H>} */ (this.#held.shift()));
      }
      return events;
    });
  }

  /** When {@link Session#handleTimeout} next has work, or null. */
  nextTimeout() {
    const g = this.#group?.nextTimeout() ?? null;
    const h = this.#held[0] === undefined ? null : this.#held[0].since + HOLD_MS;
    if (g === null) return h;
    return h === null ? g : Math.min(g, h);
  }

  /**
   * Encrypts one of our encoded frames; null when it cannot be sent (no
   * key yet, or a VP8 frame shorter than its clear prefix), counted.
   * @param {import('./protocol.js').Codec} codec
   * @param {Uint8Array} frame
   */
  async seal(codec, frame) {
    if (!this.canSend) return null;
    try {
      const sealed = await this.#crypto.seal(codec, frame);
      this.stats.sent += 1;
      return sealed;
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      this.stats.unsendable += 1;
      return null;
    }
  }

  /**
   * A media frame that arrived on the forwarded stream `streamId`: from
   * the member `track_added` named for it, or counted as unattributed.
   * Returns the frames that opened now (this one, or held ones whose key
   * it brought), each with its handle; a frame still waiting for its key
   * comes back from a later call.
   * @param {string} streamId
   * @param {import('./protocol.js').Codec} codec
   * @param {Uint8Array} data
   * @param {H} handle
   * @param {number} now
   * @returns {Promise<CallEvent<H>[]>}
   */
  receiveMedia(streamId, codec, data, handle, now) {
    return this.#exclusive(async () => {
      /** @type {CallEvent<H>[]} */
      const events = [];
      const from = this.#streams.get(streamId);
      if (from === undefined) {
        this.stats.unattributed += 1;
        return events;
      }
      this.stats.received += 1;
      this.#counts(from).received += 1;
      await this.#open({ from, codec, data, handle, since: now }, now, false, events);
      return events;
    });
  }

  /** @param {number} from */
  #counts(from) {
    let c = this.#perPeer.get(from);
    if (c === undefined) {
      c = noCounts();
      this.#perPeer.set(from, c);
    }
    return c;
  }

  /**
   * Counts a frame by outcome, in the totals and for its sender.
   * @param {number} from
   * @param {'decrypted' | 'held_then_decrypted' | 'lost_to_key_change' | 'before_join'} what
   */
  #count(from, what) {
    this.stats[what] += 1;
    this.#counts(from)[what] += 1;
  }

  /**
   * @param {number} from
   * @param {string} reason
   */
  #fail(from, reason) {
    this.stats.failed[reason] = (this.stats.failed[reason] ?? 0) + 1;
    const c = this.#counts(from);
    c.failed[reason] = (c.failed[reason] ?? 0) + 1;
  }

  /**
   * Opens a frame, or holds it until its key may come; returns whether it opened.
   * @param {Held<H>} frame
   * @param {number} now
   * @param {boolean} wasHeld
   * @param {CallEvent<H>[]} events
   */
  async #open(frame, now, wasHeld, events) {
    const { from, codec, data } = frame;
    const peer = this.#bySig.get(from);
    if (peer === undefined) {
      if (this.#departed.includes(from)) {
        this.stats.after_leave += 1;
      } else {
        this.#fail(from, 'unknown_sender');
      }
      return false;
    }
    /** @type {unknown} */
    let error = null;
    /** @type {Uint8Array | null} */
    let plain = null;
    try {
      plain = await this.#crypto.open(peer.e2ee, codec, data);
    } catch (e) {
      error = e;
    }
    if (error instanceof ProtocolError && error.code === 'unknown_key_id' && this.#group !== null) {
      // A later ratchet step of a key we hold: derive it, and install it
      // only if this frame authenticates under it (§5.3).
      const kid = /** @type {bigint} */ (error.detail.kid);
      /** @type {import('./group.js').CandidateKey | null} */
      let candidate = null;
      try {
        candidate = await this.#group.candidateReceiveKey(peer.e2ee, kid);
      } catch (e) {
        if (!(e instanceof ProtocolError)) throw e;
      }
      if (candidate !== null) {
        try {
          await this.#crypto.checkCandidate(candidate, codec, data);
          const outputs = await this.#group.deriveReceiveKey(peer.e2ee, kid, now);
          await this.#carryOutKeys(outputs, events);
          error = null;
          try {
            plain = await this.#crypto.open(peer.e2ee, codec, data);
          } catch (e) {
            error = e;
          }
        } catch (e) {
          // Derivable but not authentic: a forgery, not a frame to hold.
          error = e;
        } finally {
          candidate.zeroize();
        }
      }
    }
    if (plain !== null && error === null) {
      this.#count(from, 'decrypted');
      if (wasHeld) this.#count(from, 'held_then_decrypted');
      events.push({ type: 'frame', from, codec, frame: plain, handle: frame.handle });
      return true;
    }
    if (!(error instanceof ProtocolError)) throw error;
    if (error.code === 'unknown_key_id') {
      const kid = /** @type {bigint} */ (error.detail.kid);
      const outlook = this.#group === null ? KeyOutlook.MayCome : this.#group.keyOutlook(peer.e2ee, kid);
      if (outlook === KeyOutlook.BeforeUs) {
        this.#count(from, 'before_join');
      } else if (outlook === KeyOutlook.Gone) {
        this.#count(from, 'lost_to_key_change');
      } else if (outlook === KeyOutlook.Never) {
        this.#fail(from, 'unknown_key');
      } else {
        this.#hold(frame);
      }
      return false;
    }
    const reason =
      error.code === 'frame_authentication'
        ? 'authentication'
        : error.code === 'replayed_frame'
          ? 'replay'
          : error.code === 'frame_outside_window'
            ? 'too_old'
            : 'malformed';
    this.#fail(from, reason);
    return false;
  }

  /**
   * Keeps a frame whose key may still come, within the bounds.
   * @param {Held<H>} frame
   */
  #hold(frame) {
    const mine = this.#held.filter((h) => h.from === frame.from).length;
    let evicted;
    if (mine >= HOLD_PER_SENDER) {
      const i = this.#held.findIndex((h) => h.from === frame.from);
      evicted = this.#held.splice(i, 1)[0];
    } else if (this.#held.length >= HOLD_MAX) {
      evicted = this.#held.shift();
    }
    if (evicted !== undefined) this.#giveUp(evicted);
    this.#held.push(frame);
  }

  /**
   * Counts a held frame that never opened (see {@link CHANGE_WINDOW_MS}).
   * @param {Held<H>} held
   */
  #giveUp(held) {
    const since = Math.max(0, held.since - CHANGE_WINDOW_MS);
    const peer = this.#bySig.get(held.from);
    const g = this.#group;
    const lost = g === null || (peer !== undefined && g.awaitsFirstKey(peer.e2ee)) || g.changedSince(since);
    if (lost) {
      this.#count(held.from, 'lost_to_key_change');
    } else {
      this.#fail(held.from, 'unknown_key');
    }
  }

  /**
   * Carries out group outputs; retries held frames when a key arrived.
   * @param {import('./group.js').Output[]} outputs
   * @param {number} now
   * @param {CallEvent<H>[]} events
   */
  async #carryOut(outputs, now, events) {
    if (await this.#carryOutKeys(outputs, events)) await this.#retryHeld(now, events);
  }

  /**
   * @param {number} now
   * @param {CallEvent<H>[]} events
   */
  async #retryHeld(now, events) {
    const held = this.#held;
    this.#held = [];
    for (const h of held) await this.#open(h, now, true, events);
  }

  /**
   * Envelopes become signaling messages, keys go to the frame layer;
   * returns whether a receive key was installed.
   * @param {import('./group.js').Output[]} outputs
   * @param {CallEvent<H>[]} events
   */
  async #carryOutKeys(outputs, events) {
    let installed = false;
    for (const o of outputs) {
      if (o.type === 'send') {
        const sig = this.#byE2ee.get(hex(o.to));
        if (sig === undefined) {
          events.push({ type: 'warning', code: 'no_signaling_id', detail: 'an envelope to a member we cannot address' });
        } else {
          events.push({ type: 'send', message: { type: 'envelope', to: sig, payload: toBase64(o.envelope) } });
        }
      } else if (o.type === 'confirmed') {
        const sig = this.#byE2ee.get(hex(o.participantId));
        const peer = sig === undefined ? undefined : this.#bySig.get(sig);
        if (peer !== undefined) events.push({ type: 'peer_confirmed', peer });
      } else {
        installed ||= o.type === 'install_receive_key';
        await this.#crypto.apply(o);
      }
    }
    return installed;
  }

  /** @param {Peer} peer */
  #insert(peer) {
    this.#bySig.set(peer.id, peer);
    this.#byE2ee.set(hex(peer.e2ee), peer.id);
    this.#perPeer.set(peer.id, noCounts());
  }

  /**
   * @param {number} id
   * @returns {Peer | null}
   */
  #forget(id) {
    const peer = this.#bySig.get(id);
    if (peer === undefined) return null;
    this.#bySig.delete(id);
    if (this.#byE2ee.get(hex(peer.e2ee)) === id) this.#byE2ee.delete(hex(peer.e2ee));
    this.#departed.push(id);
    if (this.#departed.length > 256) this.#departed.shift();
    this.#held = this.#held.filter((h) => h.from !== id);
    this.#crypto.forget(peer.e2ee);
    return peer;
  }
}

/**
 * A signaling id from the wire.
 * @param {unknown} v
 */
function sigId(v) {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw new ProtocolError('malformed', 'not a participant id');
  }
  return v;
}

/**
 * A `members` entry or `member` of the wire.
 * @param {unknown} v
 */
function member(v) {
  const m = /** @type {Record<string, unknown>} */ (typeof v === 'object' && v !== null ? v : {});
  if (typeof m.name !== 'string') throw new ProtocolError('malformed', 'member without a name');
  return { id: sigId(m.id), name: m.name, keyPackage: fromBase64(m.key_package) };
}

/**
 * @template H
 * @param {number} id
 * @param {ProtocolError} error
 * @returns {CallEvent<H>}
 */
function refused(id, error) {
  return { type: 'warning', code: 'member_refused', detail: `member ${id} refused: ${error.code}: ${error.message}` };
}
