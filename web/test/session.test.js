// @ts-check
// The browser's call session (src/session.js) between members relayed by
// an in-memory signaling server that speaks the §9 messages: keys agree,
// frames open, a newcomer's and a departure's key changes lose nothing,
// and the attacks the Rust session's tests play (a forged KID from the
// SFU, a tampered frame, a replayed frame, an envelope under another
// member's name) are refused and counted.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import * as P from '../src/protocol.js';
import { Session, fromBase64, toBase64 } from '../src/session.js';

const T0 = 1_800_000_000_000;
const ROOM = 'session-test';

/**
 * @typedef {Session<number>} S
 * @typedef {import('../src/session.js').CallEvent<number>} Event
 */

/** A signaling server in memory: ids, `joined`, `member_joined`, envelopes relayed with `from`. */
class Server {
  /** @type {Map<number, { name: string, session: S, keyPackage: string, frames: Event[] }>} */
  members = new Map();
  next = 1;
  now = T0;

  /**
   * Joins a new member and delivers what follows, until quiet.
   * @param {string} name
   */
  async join(name) {
    const identity = await P.Identity.generate();
    const { session, join } = await Session.create(identity, { room: ROOM, name, token: 't' }, this.now);
    const id = this.next++;
    const others = [...this.members].map(([mid, m]) => ({ id: mid, name: m.name, key_package: m.keyPackage }));
    this.members.set(id, { name, session, keyPackage: /** @type {string} */ (join.key_package), frames: [] });
    /** @type {{ to: number, msg: Record<string, unknown> }[]} */
    const queue = [{ to: id, msg: { type: 'joined', protocol: 1, room: ROOM, you: id, members: others } }];
    for (const mid of this.members.keys()) {
      if (mid === id) continue;
      queue.push({ to: mid, msg: { type: 'member_joined', member: { id, name, key_package: join.key_package } } });
      // Every member forwards every other's stream, named as the SFU names it.
      queue.push({ to: mid, msg: { type: 'track_added', publisher: id, kind: 'audio', stream_id: `p${id}` } });
      queue.push({ to: id, msg: { type: 'track_added', publisher: mid, kind: 'audio', stream_id: `p${mid}` } });
    }
    await this.deliver(queue);
    return id;
  }

  /** @param {number} id */
  async leave(id) {
    this.members.delete(id);
    await this.deliver([...this.members.keys()].map((to) => ({ to, msg: { type: 'member_left', id } })));
  }

  /**
   * Delivers messages, and everything they cause, in order.
   * @param {{ to: number, msg: Record<string, unknown> }[]} queue
   */
  async deliver(queue) {
    while (queue.length > 0) {
      const { to, msg } = /** @type {{ to: number, msg: Record<string, unknown> }} */ (queue.shift());
      const m = this.members.get(to);
      if (m === undefined) continue;
      for (const e of await m.session.handleServer(msg, this.now)) this.#carry(to, e, queue);
    }
  }

  /**
   * @param {number} from
   * @param {Event} e
   * @param {{ to: number, msg: Record<string, unknown> }[]} queue
   */
  #carry(from, e, queue) {
    if (e.type === 'send' && e.message.type === 'envelope') {
      queue.push({ to: /** @type {number} */ (e.message.to), msg: { ...e.message, from } });
    } else if (e.type === 'frame') {
      this.members.get(from)?.frames.push(e);
    }
  }

  /**
   * `from` seals an Opus frame; every other member receives it. Returns the sealed bytes.
   * @param {number} from
   * @param {Uint8Array} frame
   */
  async speak(from, frame) {
    const sender = /** @type {NonNullable<ReturnType<Map<number, any>['get']>>} */ (this.members.get(from));
    const sealed = await sender.session.seal('opus', frame);
    assert.ok(sealed !== null, 'the sender has a key');
    for (const id of this.members.keys()) {
      if (id !== from) await this.receive(id, from, sealed);
    }
    return sealed;
  }

  /**
   * @param {number} at who receives
   * @param {number} from whose stream it came on
   * @param {Uint8Array} data
   */
  async receive(at, from, data) {
    const m = /** @type {{ session: S, frames: Event[] }} */ (this.members.get(at));
    for (const e of await m.session.receiveMedia(`p${from}`, 'opus', data, from, this.now)) {
      if (e.type === 'frame') m.frames.push(e);
    }
  }

  /** @param {number} id */
  session(id) {
    return /** @type {{ session: S }} */ (this.members.get(id)).session;
  }

  /** @param {number} id */
  frames(id) {
    return /** @type {{ frames: Event[] }} */ (this.members.get(id)).frames;
  }
}

/** @param {number} n */
const frame = (n) => new TextEncoder().encode(`opus frame ${n}`);

test('base64 round-trips and refuses what is not standard base64', () => {
  const bytes = Uint8Array.from({ length: 70_000 }, (_, i) => i * 7);
  assert.deepEqual(fromBase64(toBase64(bytes)), bytes);
  assert.equal(toBase64(Uint8Array.of(0xfb, 0xff)), '+/8=');
  for (const bad of ['-_8=', 'abc', 'a===', 7]) {
    assert.throws(() => fromBase64(bad), /base64/);
  }
});

test('three members agree on keys, hear each other through joins and a departure, and lose nothing', async () => {
  const server = new Server();
  const ann = await server.join('ann');
  const bob = await server.join('bob');
  await server.speak(ann, frame(1));
  await server.speak(bob, frame(2));
  assert.deepEqual(server.frames(bob).map((e) => e.type === 'frame' && new TextDecoder().decode(e.frame)), ['opus frame 1']);
  assert.deepEqual(server.frames(ann).map((e) => e.type === 'frame' && new TextDecoder().decode(e.frame)), ['opus frame 2']);

  const cat = await server.join('cat');
  // Everyone ratchets on the join; receivers derive the new keys from frames.
  await server.speak(ann, frame(3));
  await server.speak(bob, frame(4));
  await server.speak(cat, frame(5));
  assert.equal(server.frames(cat).length, 2, 'the newcomer hears both');
  assert.equal(server.frames(ann).length, 3);
  await server.leave(bob);
  // A fresh key after the departure (activated when acknowledged).
  await server.speak(ann, frame(6));
  await server.speak(cat, frame(7));
  assert.equal(server.frames(ann).length, 4);
  assert.equal(server.frames(cat).length, 3);
  for (const id of [ann, cat]) {
    const s = server.session(id).stats;
    assert.equal(s.lost_to_key_change, 0, `lost at ${id}`);
    assert.deepEqual(s.failed, {}, `failures at ${id}`);
    assert.equal(s.decrypted, s.received);
  }
  // Both ends compute the same safety number.
  assert.equal(await server.session(ann).safetyNumber(cat), await server.session(cat).safetyNumber(ann));
  assert.match(/** @type {string} */ (await server.session(ann).safetyNumber(cat)), /^(\d{5} ){11}\d{5}$/);
  assert.ok(server.session(ann).isConfirmed(cat));
});

test('a forged KID, a tampered frame and a replay are counted as failures and erase no key', async () => {
  const server = new Server();
  const ann = await server.join('ann');
  const bob = await server.join('bob');
  const genuine = await server.speak(ann, frame(1));
  const { kid } = P.splitEncryptedFrame('opus', genuine);
  // The SFU forges a frame under a later generation of ann's slot.
  const forged = Uint8Array.from([...P.encodeSframeHeader(kid + 3n, 9n), ...new Uint8Array(24)]);
  await server.receive(bob, ann, forged);
  // A frame changed on its way (not yet seen: its tag is what refuses it).
  const next = /** @type {Uint8Array} */ (await server.session(ann).seal('opus', frame(2)));
  const tampered = next.slice();
  tampered.set([(tampered.at(-1) ?? 0) ^ 1], tampered.length - 1);
  await server.receive(bob, ann, tampered);
  await server.receive(bob, ann, genuine);
  assert.deepEqual(server.session(bob).peerStats(ann).failed, { authentication: 2, replay: 1 });
  // Past the grace period ann's real key still opens her frames, the
  // untouched one included.
  server.now += 5_000;
  for (const e of await server.session(bob).handleTimeout(server.now)) assert.notEqual(e.type, 'frame');
  await server.receive(bob, ann, next);
  await server.speak(ann, frame(3));
  assert.equal(server.frames(bob).length, 3);
  assert.equal(server.session(bob).peerStats(ann).decrypted, 3);
});

test('an envelope whose e2ee sender is not the member the server names is dropped, and a frame on an unannounced stream is not opened', async () => {
  const server = new Server();
  const ann = await server.join('ann');
  const bob = await server.join('bob');
  const cat = await server.join('cat');
  // An envelope cat sends, relayed as if from bob.
  const events = await server.session(ann).handleServer(
    { type: 'envelope', from: bob, to: ann, payload: toBase64(Uint8Array.of(1, ...new Uint8Array(40 + 16))) },
    server.now,
  );
  assert.deepEqual(
    events.map((e) => e.type === 'warning' && e.code),
    ['envelope_sender_mismatch'],
  );
  const sealed = await server.session(cat).seal('opus', frame(1));
  assert.ok(sealed !== null);
  assert.deepEqual(await server.session(ann).receiveMedia('p99', 'opus', sealed, cat, server.now), []);
  assert.equal(server.session(ann).stats.unattributed, 1);
});
