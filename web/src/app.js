// @ts-check
/**
 * The call page: join form or invite link (PROTOCOL.md §10), identity in
 * IndexedDB, a tile per participant, controls, safety numbers, a stats
 * panel, and `window.hushStats()` for tests and support.
 */

import { fingerprint } from './protocol.js';
import { Call } from './call.js';

/**
 * What the page shows of one member.
 * @typedef {object} Tile
 * @property {number} id
 * @property {string} name
 * @property {HTMLElement} el
 * @property {HTMLVideoElement} video
 * @property {HTMLAudioElement} audio
 * @property {AnalyserNode | null} analyser
 * @property {string | null} safetyNumber
 * @property {boolean} confirmed
 * @property {string} identity hex
 * @property {number} level 0..1, the last audio level heard
 */

/** @param {string} id */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

/** @type {Call | null} */
let call = null;
/** @type {Map<number, Tile>} by signaling id */
const tiles = new Map();
/** @type {AudioContext | null} */
let audioContext = null;
/** @type {AnalyserNode | null} */
let localAnalyser = null;
/** @type {MediaStream | null} */
let local = null;
let speaker = /** @type {number | null} */ (null);
let myFingerprint = '';
/** The latest snapshot `hushStats()` returns. @type {Record<string, unknown>} */
let snapshot = { state: 'idle', peers: {} };

// ---------------------------------------------------------------------------
// Identity (IndexedDB) and known peers (localStorage)
// ---------------------------------------------------------------------------

/**
 * Our Ed25519 identity: made once per browser profile, the private key a
 * non-extractable CryptoKey stored as such in IndexedDB.
 * @returns {Promise<{ privateKey: CryptoKey, publicKey: Uint8Array }>}
 */
async function identity() {
  const db = await new Promise((resolve, reject) => {
    const open = indexedDB.open('hush', 1);
    open.onupgradeneeded = () => open.result.createObjectStore('identity');
    open.onsuccess = () => resolve(open.result);
    open.onerror = () => reject(open.error);
  });
  /** @param {'readonly' | 'readwrite'} mode */
  const store = (mode) => /** @type {IDBDatabase} */ (db).transaction('identity', mode).objectStore('identity');
  const found = await new Promise((resolve, reject) => {
    const get = store('readonly').get('default');
    get.onsuccess = () => resolve(get.result);
    get.onerror = () => reject(get.error);
  });
  if (found !== undefined) return { privateKey: found.privateKey, publicKey: new Uint8Array(found.publicKey) };
  const pair = /** @type {CryptoKeyPair} */ (await crypto.subtle.generateKey({ name: 'Ed25519' }, false, ['sign', 'verify']));
  const publicKey = new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey));
  await new Promise((resolve, reject) => {
    const put = store('readwrite').put({ privateKey: pair.privateKey, publicKey }, 'default');
    put.onsuccess = () => resolve(undefined);
    put.onerror = () => reject(put.error);
  });
  return { privateKey: pair.privateKey, publicKey };
}

/**
 * The identity keys we have met, by key (hex), with the name each came
 * under and whether it was verified. Pins are by key, as the CLI's: the
 * name is only the server's claim.
 * @returns {Record<string, { name: string, verified: boolean }>}
 */
function pins() {
  try {
    return JSON.parse(localStorage.getItem('hush.pins') ?? '{}');
  } catch {
    return {};
  }
}

/** @param {Record<string, { name: string, verified: boolean }>} all */
function savePins(all) {
  localStorage.setItem('hush.pins', JSON.stringify(all));
}

/** @param {Uint8Array} b */
const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');

// ---------------------------------------------------------------------------
// Joining
// ---------------------------------------------------------------------------

/** The join in the URL fragment (§10), if all three keys are there. */
function fromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const room = params.get('room');
  const name = params.get('name');
  const token = params.get('token');
  return room && name && token ? { room, name, token } : null;
}

/**
 * Test options in the fragment, ignored by everyone else (§10 readers
 * ignore other keys): `transforms=streams` forces the older
 * `createEncodedStreams` path, `audit=1` keeps a sample of our plaintext
 * frames for `window.hushAudit()`.
 */
function testOptions() {
  const params = new URLSearchParams(location.hash.slice(1));
  /** @type {{ transforms?: 'streams', audit?: boolean }} */
  const options = {};
  if (params.get('transforms') === 'streams') options.transforms = 'streams';
  if (params.get('audit') === '1') options.audit = true;
  return options;
}

/** @param {{ room: string, name: string, token: string }} join */
async function start(join) {
  $('join').hidden = true;
  $('call').hidden = false;
  $('room').textContent = join.room;
  const options = testOptions();
  // The token stays out of the address bar (and out of bookmarks).
  history.replaceState(null, '', `${location.pathname}#room=${encodeURIComponent(join.room)}`);
  const id = await identity();
  myFingerprint = await fingerprint(id.publicKey);
  $('fingerprint').textContent = myFingerprint;
  try {
    local = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: 640, height: 360 } });
  } catch {
    local = await navigator.mediaDevices.getUserMedia({ audio: true });
  }
  audioContext = new AudioContext();
  localAnalyser = analyserOf(new MediaStream(local.getAudioTracks()));
  const me = /** @type {HTMLVideoElement} */ ($('me-video'));
  me.srcObject = new MediaStream(local.getVideoTracks());
  $('me-name').textContent = `${join.name} (you)`;
  await listDevices();

  connect(join, id, options);
  setInterval(() => {
    refresh().catch((e) => console.warn('hush: stats', e));
  }, 250);
}

/** When the server went away, while joining again (ms since the epoch). @type {number | null} */
let lostAt = null;
/** The pause before the next attempt to join again. */
let backoff = 500;
/** How long to keep trying to join again (as `hush call --rejoin-for`). */
const REJOIN_FOR_MS = 60_000;

/**
 * Joins (again): a new call with our identity and media; the old one's
 * worker, keys and peer connection are gone with it.
 * @param {{ room: string, name: string, token: string }} join
 * @param {{ privateKey: CryptoKey, publicKey: Uint8Array }} id
 * @param {{ transforms?: 'streams', audit?: boolean }} options
 */
function connect(join, id, options) {
  if (local === null) return;
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const c = new Call({ url: `${scheme}//${location.host}/v1/ws`, ...join }, local, options);
  call = c;
  c.addEventListener('state', (e) => {
    const s = /** @type {CustomEvent} */ (e).detail;
    if (s.state === 'joined') {
      if (lostAt !== null) console.info(`hush: joined again ${Date.now() - lostAt} ms after the server went away`);
      lostAt = null;
      backoff = 500;
    }
    if (s.state === 'closed' && (s.rejoin || lostAt !== null) && Date.now() - (lostAt ?? Date.now()) < REJOIN_FOR_MS) {
      // The server went away (or the last attempt failed): join again.
      lostAt ??= Date.now();
      for (const id of [...tiles.keys()]) removeTile(id);
      onState({ state: 'rejoining', reason: `${s.reason}; joining again in ${(backoff / 1000).toFixed(1)} s` });
      setTimeout(() => connect(join, id, options), backoff);
      backoff = Math.min(backoff * 2, 2_000);
      return;
    }
    onState(s);
  });
  c.addEventListener('peer', (e) => onPeer(/** @type {CustomEvent} */ (e).detail));
  c.addEventListener('peer_left', (e) => removeTile(/** @type {CustomEvent} */ (e).detail.id));
  c.addEventListener('track', (e) => onTrack(/** @type {CustomEvent} */ (e).detail));
  c.addEventListener('speaker', (e) => {
    speaker = /** @type {CustomEvent} */ (e).detail.participant;
  });
  c.addEventListener('warning', (e) => {
    const { code, detail } = /** @type {CustomEvent} */ (e).detail;
    console.warn(`hush: ${code}: ${detail}`);
    if (code === 'media_closed' || code === 'media_failed' || code.startsWith('token_') || code === 'room_full') {
      banner(`${code}: ${detail}`);
    }
  });
  c.start(id);
  snapshot = { room: join.room, you: join.name, fingerprint: myFingerprint, state: 'connecting', peers: {} };
}

/** @param {{ state: string, reason: string }} s */
function onState(s) {
  const el = $('state');
  el.textContent = s.reason ? `${s.state}: ${s.reason}` : s.state;
  el.dataset.state = s.state;
  if (s.state === 'closed' || s.state === 'left') {
    for (const t of local?.getTracks() ?? []) t.stop();
  }
}

/**
 * A member joined, or proved it is live: its tile, safety number, and the
 * checks against the keys we have met: a known name with a new key, or a
 * known key under a new name, is a loud warning.
 * @param {{ id: number, name: string, safetyNumber: string | null, identity: Uint8Array, confirmed: boolean }} p
 */
function onPeer(p) {
  const tile = tileOf(p.id, p.name);
  tile.safetyNumber = p.safetyNumber;
  tile.confirmed = p.confirmed;
  tile.identity = hex(p.identity);
  const all = pins();
  const pinned = all[tile.identity];
  const otherKey = Object.entries(all).some(([key, pin]) => pin.name === p.name && key !== tile.identity);
  const warn = tile.el.querySelector('.changed');
  if (pinned !== undefined && pinned.name !== p.name) {
    // A key we know, under another name: it is that member, whatever the server calls it.
    tile.el.classList.add('identity-changed');
    if (warn) warn.textContent = `The server calls this member "${p.name}", but its key is the one you know as "${pinned.name}".`;
    banner(`Warning: "${p.name}" is using the key of "${pinned.name}". The name is only the server's claim.`);
  } else if (pinned === undefined && otherKey) {
    tile.el.classList.add('identity-changed');
    if (warn) warn.textContent = `${p.name}'s identity key changed since you last talked! Compare safety numbers before trusting this call.`;
    banner(`Warning: ${p.name} has a new identity key. Someone may be impersonating them.`);
  } else if (pinned === undefined) {
    all[tile.identity] = { name: p.name, verified: false };
    savePins(all);
  }
  renderTile(tile);
}

/**
 * @param {number} id
 * @param {string} name
 * @returns {Tile}
 */
function tileOf(id, name) {
  let tile = tiles.get(id);
  if (tile !== undefined) return tile;
  const el = /** @type {HTMLElement} */ (/** @type {HTMLTemplateElement} */ ($('tile')).content.firstElementChild?.cloneNode(true));
  $('tiles').append(el);
  tile = {
    id,
    name,
    el,
    video: /** @type {HTMLVideoElement} */ (el.querySelector('video')),
    audio: /** @type {HTMLAudioElement} */ (el.querySelector('audio')),
    analyser: null,
    safetyNumber: null,
    confirmed: false,
    identity: '',
    level: 0,
  };
  const t = tile;
  /** @type {HTMLButtonElement} */ (el.querySelector('.verify')).onclick = () => {
    // Compared out of band: this key is this name's from now on.
    const all = pins();
    for (const [key, pin] of Object.entries(all)) if (pin.name === t.name) delete all[key];
    all[t.identity] = { name: t.name, verified: true };
    savePins(all);
    t.el.classList.remove('identity-changed');
    renderTile(t);
  };
  tiles.set(id, tile);
  renderTile(tile);
  return tile;
}

/** @param {Tile} t */
function renderTile(t) {
  const q = (/** @type {string} */ s) => /** @type {HTMLElement} */ (t.el.querySelector(s));
  q('.name').textContent = t.name;
  q('.safety').textContent = t.safetyNumber ?? '…';
  const pin = pins()[t.identity];
  const verified = pin !== undefined && pin.verified && pin.name === t.name;
  q('.badge').textContent = verified ? 'verified' : t.confirmed ? 'not verified' : 'unconfirmed';
  q('.badge').dataset.kind = verified ? 'verified' : 'unverified';
  /** @type {HTMLButtonElement} */ (q('.verify')).hidden = verified;
}

/** @param {number} id */
function removeTile(id) {
  tiles.get(id)?.el.remove();
  tiles.delete(id);
}

/**
 * A forwarded track: its member's video or audio (and an analyser on the audio).
 * @param {{ publisher: number | null, kind: string, stream: MediaStream, track: MediaStreamTrack }} t
 */
function onTrack(t) {
  if (t.publisher === null || call === null) return;
  const tile = tileOf(t.publisher, call.names.get(t.publisher) ?? `member ${t.publisher}`);
  if (t.kind === 'video') {
    tile.video.srcObject = new MediaStream([t.track]);
    tile.el.classList.add('has-video');
  } else {
    const stream = new MediaStream([t.track]);
    // Chromium feeds WebAudio from a remote track only while an element plays it.
    tile.audio.srcObject = stream;
    tile.audio.play().catch(() => banner('Click anywhere to hear the call.'));
    tile.analyser = analyserOf(stream);
  }
}

/** @param {MediaStream} stream */
function analyserOf(stream) {
  if (audioContext === null || stream.getAudioTracks().length === 0) return null;
  const analyser = audioContext.createAnalyser();
  analyser.fftSize = 8192;
  analyser.smoothingTimeConstant = 0;
  audioContext.createMediaStreamSource(stream).connect(analyser);
  return analyser;
}

/**
 * The dominant frequency (Hz, parabolic interpolation between FFT bins)
 * and the RMS level of what an analyser hears; null frequency in silence.
 * @param {AnalyserNode} a
 */
function listen(a) {
  const time = new Float32Array(a.fftSize);
  a.getFloatTimeDomainData(time);
  let sum = 0;
  for (const v of time) sum += v * v;
  const rms = Math.sqrt(sum / time.length);
  const spectrum = new Float32Array(a.frequencyBinCount);
  a.getFloatFrequencyData(spectrum);
  let best = 1;
  for (let i = 2; i < spectrum.length - 1; i += 1) {
    if ((spectrum[i] ?? -Infinity) > (spectrum[best] ?? -Infinity)) best = i;
  }
  const [l, c, r] = [spectrum[best - 1] ?? 0, spectrum[best] ?? 0, spectrum[best + 1] ?? 0];
  const shift = l - 2 * c + r === 0 ? 0 : (0.5 * (l - r)) / (l - 2 * c + r);
  const binHz = a.context.sampleRate / a.fftSize;
  return { hz: rms > 0.001 ? Math.round((best + shift) * binHz * 10) / 10 : null, rms };
}

// ---------------------------------------------------------------------------
// Controls
// ---------------------------------------------------------------------------

async function listDevices() {
  const devices = await navigator.mediaDevices.enumerateDevices();
  for (const [kind, select] of /** @type {const} */ ([['audioinput', 'mic'], ['videoinput', 'cam']])) {
    const el = /** @type {HTMLSelectElement} */ ($(select));
    el.replaceChildren(
      ...devices
        .filter((d) => d.kind === kind)
        .map((d, i) => new Option(d.label || `${kind === 'audioinput' ? 'microphone' : 'camera'} ${i + 1}`, d.deviceId)),
    );
  }
}

/**
 * Switches to another microphone or camera without renegotiating.
 * @param {'audio' | 'video'} kind
 * @param {string} deviceId
 */
async function switchDevice(kind, deviceId) {
  const pc = call?.peerConnection;
  if (!pc || local === null) return;
  const fresh = await navigator.mediaDevices.getUserMedia({ [kind]: { deviceId: { exact: deviceId } } });
  const track = fresh.getTracks()[0];
  if (track === undefined) return;
  const old = kind === 'audio' ? local.getAudioTracks()[0] : local.getVideoTracks()[0];
  track.enabled = old?.enabled ?? true;
  const sender = pc.getSenders().find((s) => s.track?.kind === kind);
  await sender?.replaceTrack(track);
  if (old) {
    local.removeTrack(old);
    old.stop();
  }
  local.addTrack(track);
  if (kind === 'video') /** @type {HTMLVideoElement} */ ($('me-video')).srcObject = new MediaStream([track]);
}

/** @param {string} text */
function banner(text) {
  const el = $('banner');
  el.textContent = text;
  el.hidden = false;
}

function wireControls() {
  const toggle = (/** @type {string} */ button, /** @type {'audio' | 'video'} */ kind, /** @type {string[]} */ labels) => {
    const el = /** @type {HTMLButtonElement} */ ($(button));
    el.onclick = () => {
      const tracks = kind === 'audio' ? local?.getAudioTracks() : local?.getVideoTracks();
      const on = !(tracks?.[0]?.enabled ?? false);
      for (const t of tracks ?? []) t.enabled = on;
      el.setAttribute('aria-pressed', String(!on));
      el.textContent = on ? labels[0] ?? '' : labels[1] ?? '';
    };
  };
  toggle('mute', 'audio', ['Mute', 'Unmute']);
  toggle('camera', 'video', ['Camera off', 'Camera on']);
  /** @type {HTMLButtonElement} */ ($('leave')).onclick = () => call?.leave();
  /** @type {HTMLSelectElement} */ ($('mic')).onchange = (e) =>
    switchDevice('audio', /** @type {HTMLSelectElement} */ (e.target).value);
  /** @type {HTMLSelectElement} */ ($('cam')).onchange = (e) =>
    switchDevice('video', /** @type {HTMLSelectElement} */ (e.target).value);
  const form = /** @type {HTMLFormElement} */ ($('join'));
  form.onsubmit = (e) => {
    e.preventDefault();
    const data = new FormData(form);
    start({ room: String(data.get('room')), name: String(data.get('name')), token: String(data.get('token')) }).catch(fail);
  };
  document.body.addEventListener('click', () => {
    audioContext?.resume();
    for (const t of tiles.values()) t.audio.play().catch(() => undefined);
  });
}

/** @param {unknown} e */
function fail(e) {
  banner(`Could not join: ${e instanceof Error ? e.message : String(e)}`);
  console.error('hush:', e);
}

// ---------------------------------------------------------------------------
// Stats: the panel and window.hushStats()
// ---------------------------------------------------------------------------

async function refresh() {
  if (call === null) return;
  const s = await call.refreshStats();
  if (s === null) return;
  let rtt = null;
  const pc = call.peerConnection;
  if (pc) {
    for (const r of (await pc.getStats()).values()) {
      if (r.type === 'candidate-pair' && r.nominated && typeof r.currentRoundTripTime === 'number') {
        rtt = Math.round(r.currentRoundTripTime * 1000);
      }
    }
  }
  /** @type {Record<string, unknown>} */
  const peers = {};
  for (const p of s.peers) {
    const tile = tiles.get(p.id) ?? tileOf(p.id, p.name);
    const heard = tile.analyser ? listen(tile.analyser) : { hz: null, rms: 0 };
    tile.level = heard.rms;
    tile.el.classList.toggle('speaking', speaker === p.id || heard.rms > 0.02);
    const failed = Object.values(p.failed).reduce((a, b) => a + b, 0);
    peers[p.name] = {
      id: p.id,
      received: p.received,
      decrypted: p.decrypted,
      failed,
      failures: p.failed,
      lost_to_key_change: p.lost_to_key_change,
      held_then_decrypted: p.held_then_decrypted,
      first_frame_ms: p.first_frame_ms,
      confirmed: p.confirmed,
      safety_number: tile.safetyNumber,
      audio_hz: heard.hz,
      video_frames: tile.video.getVideoPlaybackQuality?.().totalVideoFrames ?? 0,
    };
  }
  if (localAnalyser) $('me').classList.toggle('speaking', listen(localAnalyser).rms > 0.02);
  const failed = Object.values(s.failed).reduce((a, b) => a + b, 0);
  snapshot = {
    room: call.join.room,
    you: call.join.name,
    you_id: call.you,
    fingerprint: myFingerprint,
    state: call.state,
    transforms: call.transforms,
    sent: s.sent,
    received: s.received,
    decrypted: s.decrypted,
    failed,
    lost_to_key_change: s.lost_to_key_change,
    rtt_ms: rtt,
    peers,
  };
  const rows = [
    ['sent', s.sent],
    ['received', s.received],
    ['decrypted', s.decrypted],
    ['failed', failed],
    ['lost to key changes', s.lost_to_key_change],
    ['round-trip time', rtt === null ? '–' : `${rtt} ms`],
  ];
  $('stats-body').replaceChildren(
    ...rows.map(([k, v]) => {
      const tr = document.createElement('tr');
      const th = document.createElement('th');
      th.textContent = String(k);
      const td = document.createElement('td');
      td.textContent = String(v);
      tr.append(th, td);
      return tr;
    }),
  );
}

/** Our plaintext frames kept for a ciphertext audit (with `audit=1` in the fragment), base64. */
/** @type {any} */ (window).hushAudit = () => call?.auditSample() ?? Promise.resolve([]);

/** A JSON snapshot of the call for tests and support: room, you, state, counters, and per member. */
/** @type {any} */ (window).hushStats = () => JSON.parse(JSON.stringify(snapshot));

wireControls();
const invited = fromFragment();
if (invited !== null) {
  start(invited).catch(fail);
} else {
  const params = new URLSearchParams(location.hash.slice(1));
  const room = params.get('room');
  if (room) /** @type {HTMLInputElement} */ ($('join-room')).value = room;
}
