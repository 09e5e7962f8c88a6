// @ts-check
/**
 * The media worker: every key and every frame of the call lives here. It
 * owns the call's {@link Session} (group keys, SFrame), is fed the
 * server's messages by the page, and encrypts and decrypts frames in
 * `RTCRtpScriptTransform`s (PROTOCOL.md §6). Keys never leave it; the page
 * gets envelopes to send, member events, safety numbers and counters.
 *
 * Messages from the page: `init` (identity, join), `server` (a signaling
 * message), `stream` (a receiver's MID now carries this MSID stream id),
 * `stats`. To the page: `send`, `event`, `stats`, `fatal`.
 */

import { Identity, ProtocolError } from './protocol.js';
import { Session, toBase64 } from './session.js';

/**
 * What the browser gives a script transform (lib.webworker's
 * `RTCRtpScriptTransformer`, declared here because this file is checked
 * against the DOM library).
 * @typedef {{ data: ArrayBuffer }} EncodedFrame
 * @typedef {{ readable: ReadableStream<EncodedFrame>, writable: WritableStream<EncodedFrame>,
 *   options: { side: 'send' | 'recv', codec: 'opus' | 'vp8', mid?: string } }} Transformer
 * @typedef {{ frame: EncodedFrame, out: TransformStreamDefaultController<EncodedFrame> }} Handle
 */

const scope = /** @type {any} */ (globalThis);

/** @type {Session<Handle> | null} */
let session = null;
/** Receiver MID → the MSID stream id it carries now. @type {Map<string, string>} */
const streams = new Map();
/** Frames passed through send transforms before we had a key (not sent). */
let unkeyed = 0;
/** When each member's first frame opened, ms after it and we were both in the call. @type {Map<number, number>} */
const firstFrame = new Map();
/** When we, or each member after us, joined (Unix ms). @type {Map<number, number>} */
const joinedAt = new Map();
let ourJoin = 0;
/** Our plaintext frames kept for a ciphertext audit (tests only), or null. @type {Uint8Array[] | null} */
let auditSample = null;
/** How many plaintext frames the audit keeps. */
const AUDIT_FRAMES = 500;

/** @param {unknown} message */
function post(message) {
  scope.postMessage(message);
}

/**
 * Carries out what the session returned: frames go to their receiver's
 * stream (the decoder), envelopes to the page to send, the rest is shown.
 * @param {import('./session.js').CallEvent<Handle>[]} events
 */
async function carryOut(events) {
  // Members listed in our own `joined` count from our join.
  const ours = events.some((e) => e.type === 'joined');
  for (const e of events) {
    if (e.type === 'frame') {
      if (!firstFrame.has(e.from)) firstFrame.set(e.from, Date.now() - Math.max(ourJoin, joinedAt.get(e.from) ?? 0));
      e.handle.frame.data = new Uint8Array(e.frame).buffer;
      try {
        e.handle.out.enqueue(e.handle.frame);
      } catch {
        // The receiver's stream ended (its track was removed): nothing to play.
      }
    } else if (e.type === 'send') {
      post({ type: 'send', message: e.message });
    } else if (e.type === 'peer_joined' || e.type === 'peer_confirmed') {
      const p = e.peer;
      if (e.type === 'peer_joined' && !ours) joinedAt.set(p.id, Date.now());
      const safetyNumber = session === null ? null : await session.safetyNumber(p.id);
      post({ type: 'event', event: e.type, id: p.id, name: p.name, identity: Array.from(p.identity), safetyNumber });
    } else if (e.type === 'peer_left') {
      post({ type: 'event', event: 'peer_left', id: e.peer.id, name: e.peer.name });
    } else {
      post({ type: 'event', event: e.type, ...('code' in e ? { code: e.code, detail: e.detail } : {}) });
    }
  }
}

/** Acts on the session's deadlines (grace periods, held frames). */
async function tick() {
  if (session === null) return;
  const due = session.nextTimeout();
  if (due !== null && due <= Date.now()) await carryOut(await session.handleTimeout(Date.now()));
}
setInterval(() => {
  tick().catch(fatal);
}, 50);

/** @param {unknown} e */
function fatal(e) {
  post({ type: 'fatal', message: e instanceof Error ? `${e.name}: ${e.message}` : String(e) });
}

scope.onmessage = async (/** @type {MessageEvent} */ ev) => {
  const msg = ev.data;
  try {
    if (msg.type === 'init') {
      const identity = new Identity(msg.privateKey, new Uint8Array(msg.publicKey));
      if (msg.audit === true) auditSample = [];
      ourJoin = Date.now();
      const made = await Session.create(identity, msg.join, ourJoin);
      session = /** @type {Session<Handle>} */ (made.session);
      post({ type: 'send', message: made.join });
    } else if (msg.type === 'server' && session !== null) {
      await carryOut(await session.handleServer(msg.message, Date.now()));
    } else if (msg.type === 'stream') {
      streams.set(msg.mid, msg.streamId);
    } else if (msg.type === 'streams') {
      // createEncodedStreams: the page hands over the streams themselves.
      transform({ readable: msg.readable, writable: msg.writable, options: msg.options });
    } else if (msg.type === 'audit') {
      post({ type: 'audit', frames: (auditSample ?? []).map((f) => toBase64(f)) });
    } else if (msg.type === 'stats') {
      post({ type: 'stats', stats: await stats() });
    }
  } catch (e) {
    fatal(e);
  }
};

/** Our counters and each member's, for the page's panel and `hushStats()`. */
async function stats() {
  if (session === null) return null;
  const peers = [];
  for (const p of session.peers()) {
    peers.push({
      id: p.id,
      name: p.name,
      confirmed: session.isConfirmed(p.id),
      first_frame_ms: firstFrame.get(p.id) ?? null,
      ...session.peerStats(p.id),
    });
  }
  return { you: session.you, canSend: session.canSend, unkeyed, ...session.stats, peers };
}

/**
 * One sender's or receiver's frames through encryption.
 * @param {Transformer} transformer
 */
function transform(transformer) {
  const { side, codec, mid } = transformer.options;
  /** @type {TransformStream<EncodedFrame, EncodedFrame>} */
  const stream = new TransformStream({
    async transform(frame, out) {
      if (session === null) {
        if (side === 'send') unkeyed += 1;
        return;
      }
      const data = new Uint8Array(frame.data);
      if (side === 'send') {
        const sealed = await session.seal(codec, data);
        if (sealed === null) {
          unkeyed += 1;
          return;
        }
        if (auditSample !== null && auditSample.length < AUDIT_FRAMES) auditSample.push(data.slice());
        frame.data = new Uint8Array(sealed).buffer;
        out.enqueue(frame);
        return;
      }
      // Frames whose key has not come yet stay in the session and come
      // back (to this same `out`) from a later call; failures never reach
      // the decoder.
      const streamId = streams.get(mid ?? '') ?? '';
      try {
        await carryOut(await session.receiveMedia(streamId, codec, data, { frame, out }, Date.now()));
      } catch (e) {
        if (!(e instanceof ProtocolError)) throw e;
      }
    },
  });
  transformer.readable.pipeThrough(stream).pipeTo(transformer.writable).catch(() => {
    // The track ended.
  });
}

scope.onrtctransform = (/** @type {{ transformer: Transformer }} */ ev) => transform(ev.transformer);
