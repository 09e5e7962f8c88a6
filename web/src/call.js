// @ts-check
/**
 * One call from the browser: the signaling WebSocket (PROTOCOL.md §9), the
 * peer connection to the SFU (§11) and the media worker that holds every
 * key (`media-worker.js`). No UI: it emits events the page shows.
 *
 * Events (`CustomEvent`s, `detail` as named): `state` ({state, reason,
 * rejoin}: `closed` with `rejoin` when the server went away after we joined),
 * `peer` ({id, name, safetyNumber, identity, confirmed}), `peer_left`
 * ({id, name}), `track` ({publisher, kind, stream}), `speaker`
 * ({participant}), `warning` ({code, detail}).
 */

/**
 * What the worker said of a member and its frames.
 * @typedef {object} PeerStats
 * @property {number} id
 * @property {string} name
 * @property {boolean} confirmed
 * @property {number} received
 * @property {number} decrypted
 * @property {Record<string, number>} failed
 * @property {number} held_then_decrypted
 * @property {number} lost_to_key_change
 * @property {number} before_join
 * @property {number | null} first_frame_ms from our join (or its, if later) to its first frame that opened
 */

/**
 * The worker's counters.
 * @typedef {{ you: number | null, canSend: boolean, unkeyed: number, sent: number, unsendable: number,
 *   received: number, decrypted: number, failed: Record<string, number>, lost_to_key_change: number,
 *   unattributed: number, after_leave: number, peers: PeerStats[] }} WorkerStats
 */

/** Codecs hush carries, by kind (§11). */
const WANTED = { audio: ['audio/opus'], video: ['video/vp8', 'video/rtx'] };

export class Call extends EventTarget {
  /** @type {WebSocket | null} */
  #ws = null;
  /** @type {RTCPeerConnection | null} */
  #pc = null;
  #worker;
  /** @type {WorkerStats | null} */
  stats = null;
  /** @type {((s: WorkerStats) => void)[]} */
  #statsWaiters = [];
  /** @type {((frames: string[]) => void)[]} */
  #auditWaiters = [];
  /** MSID stream id → publisher, from `track_added`. @type {Map<string, number>} */
  streams = new Map();
  /** Receivers already given a decrypting transform. @type {WeakSet<RTCRtpReceiver>} */
  #transformed = new WeakSet();
  /** Signaling ids of members, by name, as the server said. @type {Map<number, string>} */
  names = new Map();
  state = 'idle';
  /** @type {number | null} */
  you = null;
  /** @type {ReturnType<typeof setInterval> | null} */
  #pinger = null;
  /** Why the server said it closes the connection, if it did. @type {string | null} */
  #closing = null;
  /** The server's messages, handled one after another. @type {Promise<void>} */
  #inbox = Promise.resolve();
  /** Offers are made one at a time; the SFU's offers win (§11). */
  #negotiating = false;
  #offerAgain = false;

  /**
   * @param {{ url: string, room: string, name: string, token: string }} join
   * @param {MediaStream} local the microphone (and camera) to send
   * @param {{ transforms?: 'script' | 'streams', audit?: boolean }} [options] force the
   *   older `createEncodedStreams` path (tests); keep a sample of our plaintext frames
   *   for a ciphertext audit (tests)
   */
  constructor(join, local, options = {}) {
    super();
    this.join = join;
    this.local = local;
    /** How frames reach the worker: `RTCRtpScriptTransform`, else `createEncodedStreams`. */
    this.transforms = pickTransforms(options.transforms);
    this.audit = options.audit === true;
    this.#worker = new Worker(new URL('./media-worker.js', import.meta.url), { type: 'module', name: 'hush-media' });
    this.#worker.onmessage = (ev) => this.#fromWorker(ev.data);
    // A script that failed to load (the server is down) has no message.
    this.#worker.onerror = (ev) =>
      this.#emit('warning', { code: 'worker', detail: ev.message || 'the media worker could not start' });
  }

  /**
   * Connects and joins with this identity (its private key stays a
   * non-extractable CryptoKey, handed to the worker).
   * @param {{ privateKey: CryptoKey, publicKey: Uint8Array }} identity
   */
  start(identity) {
    if (this.transforms === 'none') {
      throw new Error('this browser has no encoded transforms: frames could not be encrypted');
    }
    this.#setState('connecting');
    const ws = new WebSocket(this.join.url);
    this.#ws = ws;
    ws.onopen = () => {
      this.#worker.postMessage({
        type: 'init',
        privateKey: identity.privateKey,
        publicKey: Array.from(identity.publicKey),
        join: { room: this.join.room, name: this.join.name, token: this.join.token },
        audit: this.audit,
      });
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data !== 'string') return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        this.#emit('warning', { code: 'malformed_json', detail: 'the server sent a message that is not JSON' });
        return;
      }
      // One message at a time, in order: an SFU offer is answered before
      // the next one is looked at.
      this.#inbox = this.#inbox
        .then(() => this.#fromServer(msg))
        .catch((e) => this.#emit('warning', { code: 'media', detail: String(e) }));
    };
    ws.onclose = (ev) => {
      if (this.state !== 'left') {
        // Joined, and the server went away (shut down, or the connection
        // was lost): worth joining again. Not when it ended the call on
        // purpose (replaced, refused, too slow) or we never got in.
        const why = this.#closing;
        const rejoin =
          this.you !== null && (why === null || why === 'server_shutdown' || why === 'idle_timeout' || why === 'media_moved');
        this.#setState('closed', why ?? (ev.reason || `connection closed (${ev.code})`), rejoin);
      }
      this.#stop();
    };
    this.#pinger = setInterval(() => this.#send({ type: 'ping', nonce: 0 }), 10_000);
  }

  /** Leaves the call. */
  leave() {
    this.#send({ type: 'leave' });
    this.#setState('left');
    this.#stop();
  }

  /** The worker's latest counters (asks for fresh ones). */
  refreshStats() {
    return new Promise((resolve) => {
      this.#statsWaiters.push(resolve);
      this.#worker.postMessage({ type: 'stats' });
    });
  }

  /** The peer connection, for its statistics. */
  get peerConnection() {
    return this.#pc;
  }

  #stop() {
    if (this.#pinger !== null) clearInterval(this.#pinger);
    this.#pinger = null;
    this.#pc?.close();
    this.#ws?.close(1000);
    this.#worker.terminate();
  }

  /** @param {Record<string, unknown>} message */
  #send(message) {
    if (this.#ws?.readyState === WebSocket.OPEN) this.#ws.send(JSON.stringify(message));
  }

  /**
   * @param {string} type
   * @param {Record<string, unknown>} detail
   */
  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /**
   * @param {string} state
   * @param {string} [reason]
   * @param {boolean} [rejoin] (`closed` only) the call may be joined again
   */
  #setState(state, reason = '', rejoin = false) {
    this.state = state;
    this.#emit('state', { state, reason, rejoin });
  }

  /** @param {any} msg */
  #fromWorker(msg) {
    if (msg.type === 'send') {
      this.#send(msg.message);
    } else if (msg.type === 'stats') {
      this.stats = msg.stats;
      for (const w of this.#statsWaiters.splice(0)) w(msg.stats);
    } else if (msg.type === 'event') {
      if (msg.event === 'peer_joined' || msg.event === 'peer_confirmed') {
        this.#emit('peer', {
          id: msg.id,
          name: msg.name,
          safetyNumber: msg.safetyNumber,
          identity: new Uint8Array(msg.identity),
          confirmed: msg.event === 'peer_confirmed',
        });
      } else if (msg.event === 'joined') {
        // The page learned it from the server's `joined` already.
      } else if (msg.event === 'peer_left') {
        this.#emit('peer_left', { id: msg.id, name: msg.name });
      } else {
        this.#emit('warning', { code: msg.code ?? msg.event, detail: msg.detail ?? '' });
      }
    } else if (msg.type === 'audit') {
      for (const w of this.#auditWaiters.splice(0)) w(msg.frames);
    } else if (msg.type === 'fatal') {
      this.#emit('warning', { code: 'worker', detail: msg.message });
    }
  }

  /**
   * A message from the server: key material and membership go to the
   * worker (in order), media negotiation is done here.
   * @param {any} msg
   */
  async #fromServer(msg) {
    switch (msg.type) {
      case 'joined':
        this.you = msg.you;
        for (const m of msg.members ?? []) this.names.set(m.id, m.name);
        this.#worker.postMessage({ type: 'server', message: msg });
        this.#setState('joined');
        this.#startMedia();
        return;
      case 'member_joined':
        this.names.set(msg.member?.id, msg.member?.name);
        this.#worker.postMessage({ type: 'server', message: msg });
        return;
      case 'member_left':
      case 'envelope':
        this.#worker.postMessage({ type: 'server', message: msg });
        return;
      case 'track_added':
        this.streams.set(msg.stream_id, msg.publisher);
        this.#worker.postMessage({ type: 'server', message: msg });
        return;
      case 'track_removed':
        this.streams.delete(msg.stream_id);
        this.#worker.postMessage({ type: 'server', message: msg });
        this.#emit('track_removed', { publisher: msg.publisher, stream: msg.stream_id });
        return;
      case 'sdp_answer':
        await this.#pc?.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
        this.#negotiating = false;
        if (this.#offerAgain) await this.#offer();
        return;
      case 'sdp_offer':
        await this.#answer(msg.sdp);
        return;
      case 'ice_candidate':
        // The SFU's candidates are in its SDP (§11); a trickled one is optional.
        try {
          await this.#pc?.addIceCandidate({
            candidate: msg.candidate?.candidate,
            sdpMid: msg.candidate?.sdp_mid || null,
            sdpMLineIndex: msg.candidate?.sdp_m_line_index ?? 0,
          });
        } catch {
          // Unusable here; connectivity checks find the SFU anyway.
        }
        return;
      case 'active_speaker':
        this.#emit('speaker', { participant: msg.participant });
        return;
      case 'error':
        this.#emit('warning', { code: msg.code, detail: msg.message });
        if (msg.code === 'media_closed' || msg.code === 'media_failed') this.#setState('media_lost', msg.message);
        return;
      case 'media_moved':
        // The SFU that carried our media is gone; the room's media is on
        // another now (§11): a new peer connection, offered afresh. Keys
        // and membership are unchanged.
        this.#moveMedia();
        return;
      case 'closing':
        // Said before the server closes; the close itself ends the call.
        this.#closing = typeof msg.reason === 'string' ? msg.reason : 'unknown';
        return;
      default:
    }
  }

  /** Closes the peer connection and opens a new one (`media_moved`). */
  #moveMedia() {
    const old = this.#pc;
    this.#pc = null;
    this.#negotiating = false;
    this.#offerAgain = false;
    old?.close();
    this.#emit('warning', { code: 'media_moved', detail: "the room's media moved to another server; reconnecting media" });
    this.#setState('reconnecting');
    this.#startMedia();
  }

  /** Opens the peer connection to the SFU and offers our tracks (§11). */
  #startMedia() {
    /** @type {RTCConfiguration & { encodedInsertableStreams?: boolean }} */
    const config = { bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' };
    if (this.transforms === 'streams') config.encodedInsertableStreams = true;
    const pc = new RTCPeerConnection(config);
    this.#pc = pc;
    for (const track of this.local.getTracks()) {
      const kind = /** @type {'audio' | 'video'} */ (track.kind);
      const t = pc.addTransceiver(track, { direction: 'sendonly', streams: [this.local] });
      preferCodecs(t, kind);
      this.#transform(t.sender, { side: 'send', codec: kind === 'audio' ? 'opus' : 'vp8' });
    }
    pc.ontrack = (ev) => this.#onTrack(ev);
    pc.onconnectionstatechange = () => {
      const s = pc.connectionState;
      if (s === 'connected') this.#setState('connected');
      if (s === 'disconnected' || s === 'failed') {
        this.#setState('reconnecting');
        if (s === 'failed') pc.restartIce();
      }
    };
    pc.onnegotiationneeded = () => {
      this.#offer().catch((e) => this.#emit('warning', { code: 'media', detail: String(e) }));
    };
  }

  /** Sends our offer (one at a time; again later if one is under way). */
  async #offer() {
    const pc = this.#pc;
    if (pc === null) return;
    if (this.#negotiating || pc.signalingState !== 'stable') {
      this.#offerAgain = true;
      return;
    }
    this.#offerAgain = false;
    this.#negotiating = true;
    await pc.setLocalDescription(await pc.createOffer());
    this.#send({ type: 'sdp_offer', sdp: pc.localDescription?.sdp });
  }

  /**
   * Answers an SFU offer (tracks came or went).
   * @param {string} sdp
   */
  async #answer(sdp) {
    const pc = this.#pc;
    if (pc === null) return;
    if (pc.signalingState === 'have-local-offer') {
      // The SFU wins glare (§11): drop ours, answer, offer again.
      await pc.setLocalDescription({ type: 'rollback' });
      this.#negotiating = false;
      this.#offerAgain = true;
    }
    await pc.setRemoteDescription({ type: 'offer', sdp });
    for (const t of pc.getTransceivers()) {
      if (t.receiver.track && t.currentDirection !== 'stopped') preferCodecs(t, /** @type {'audio' | 'video'} */ (t.receiver.track.kind));
    }
    await pc.setLocalDescription(await pc.createAnswer());
    this.#send({ type: 'sdp_answer', sdp: pc.localDescription?.sdp });
    if (this.#offerAgain) await this.#offer();
  }

  /**
   * Routes a sender's or receiver's encoded frames through the worker.
   * @param {RTCRtpSender | RTCRtpReceiver} end
   * @param {{ side: 'send' | 'recv', codec: 'opus' | 'vp8', mid?: string }} options
   */
  #transform(end, options) {
    if (this.transforms === 'script') {
      end.transform = new RTCRtpScriptTransform(this.#worker, options);
      return;
    }
    const { readable, writable } = /** @type {any} */ (end).createEncodedStreams();
    this.#worker.postMessage({ type: 'streams', readable, writable, options }, [readable, writable]);
  }

  /** Our plaintext frames the worker kept for an audit (`audit` option), base64. */
  auditSample() {
    return new Promise((resolve) => {
      this.#auditWaiters.push(resolve);
      this.#worker.postMessage({ type: 'audit' });
    });
  }

  /**
   * A forwarded track (or an m-line now carrying another member's track):
   * its frames are decrypted in the worker, attributed by MSID stream id.
   * @param {RTCTrackEvent} ev
   */
  #onTrack(ev) {
    const stream = ev.streams[0];
    const mid = ev.transceiver.mid;
    if (stream === undefined || mid === null) return;
    this.#worker.postMessage({ type: 'stream', mid, streamId: stream.id });
    if (!this.#transformed.has(ev.receiver)) {
      this.#transformed.add(ev.receiver);
      this.#transform(ev.receiver, { side: 'recv', codec: ev.track.kind === 'audio' ? 'opus' : 'vp8', mid });
    }
    this.#emit('track', { publisher: this.streams.get(stream.id) ?? null, kind: ev.track.kind, stream, track: ev.track });
  }
}

/**
 * Offers (and accepts) only the codecs of §11: Opus without RED (the
 * browser's transform would see whole RED payloads), VP8 with RTX.
 * @param {RTCRtpTransceiver} t
 * @param {'audio' | 'video'} kind
 */
function preferCodecs(t, kind) {
  const caps = RTCRtpReceiver.getCapabilities(kind)?.codecs ?? [];
  const codecs = caps.filter((c) => WANTED[kind].includes(c.mimeType.toLowerCase()));
  if (codecs.length > 0) t.setCodecPreferences(codecs);
}

/**
 * Which encoded-transform API to use: the standard one where it exists.
 * @param {'script' | 'streams' | undefined} wanted
 * @returns {'script' | 'streams' | 'none'}
 */
function pickTransforms(wanted) {
  const script = typeof RTCRtpScriptTransform !== 'undefined';
  const streams = typeof RTCRtpSender !== 'undefined' && 'createEncodedStreams' in RTCRtpSender.prototype;
  if (wanted === 'streams' && streams) return 'streams';
  if (script) return 'script';
  return streams ? 'streams' : 'none';
}
