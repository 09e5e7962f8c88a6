// @ts-check
/**
 * What the browser end-to-end tests share: the binaries, a `hush-server`
 * on a free loopback port, join tokens and invite links, `hush call`
 * processes, Chromium through playwright-core, the ciphertext audit of a
 * capture file, and a VP8 decode of an IVF recording with the browser's
 * own decoder (WebCodecs). Every process started here is stopped by
 * {@link stopAll}.
 */

import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

/** The web/ directory. */
export const WEB_DIR = fileURLToPath(new URL('..', import.meta.url));
/** Where `hush` and `hush-server` are (`HUSH_BIN_DIR`, default ../target/debug). */
export const BIN_DIR = process.env['HUSH_BIN_DIR'] ?? path.join(WEB_DIR, '..', 'target', 'debug');
/** Debian's Chromium (`HUSH_CHROMIUM` to use another). */
export const CHROMIUM = process.env['HUSH_CHROMIUM'] ?? '/usr/bin/chromium';
/** Screenshots and failure dumps (gitignored). */
export const ARTIFACTS = path.join(WEB_DIR, 'e2e', 'artifacts');

/** Headless Chromium with fake media devices (../shared/DEPENDENCIES.md, DEVELOPERS.md). */
export const CHROMIUM_FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required',
];

/** @type {(() => void)[]} */
const stops = [];

/** Stops every process and browser started here (idempotent). */
export function stopAll() {
  for (const stop of stops.splice(0).reverse()) {
    try {
      stop();
    } catch {
      // Already gone.
    }
  }
}

/** @param {number} ms */
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A fresh temporary directory, removed by {@link stopAll}. */
export function tempDir() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hush-e2e-'));
  stops.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** @param {string} name */
export function binary(name) {
  const file = path.join(BIN_DIR, name);
  assert.ok(fs.existsSync(file), `${file} is missing: run \`cargo build -p hush -p hush-signaling\` first (or set HUSH_BIN_DIR)`);
  return file;
}

/** A free TCP port on loopback (also free for UDP in practice: the SFU takes port 0 anyway). */
export async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const address = s.address();
      s.close(() => (typeof address === 'object' && address !== null ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}

/**
 * A process whose output is collected; stopped (SIGKILL) by {@link stopAll}.
 * @param {string} file
 * @param {string[]} args
 * @param {NodeJS.ProcessEnv} [env]
 */
export function run(file, args, env = {}) {
  const child = spawn(file, args, { env: { ...process.env, RUST_LOG: 'warn', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const out = { stdout: '', stderr: '' };
  child.stdout.on('data', (d) => (out.stdout += d));
  child.stderr.on('data', (d) => (out.stderr += d));
  /** @type {Promise<number | null>} */
  const exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  stops.push(() => child.exitCode === null && child.kill('SIGKILL'));
  return { child, out, exited };
}

/**
 * `hush-server` with its embedded SFU on free loopback ports.
 * @param {{ capture?: string }} [options] write a ciphertext capture file
 */
export async function startServer(options = {}) {
  const dir = tempDir();
  const secretFile = path.join(dir, 'secret');
  fs.writeFileSync(secretFile, randomBytes(32).toString('base64'));
  const port = await freePort();
  const args = ['--listen', `127.0.0.1:${port}`, '--secret-file', secretFile, '--rtc-port', '0'];
  if (options.capture) args.push('--capture', options.capture);
  const proc = run(binary('hush-server'), args);
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i += 1) {
    try {
      if ((await fetch(`${base}/healthz`)).ok) break;
    } catch {
      // Not up yet.
    }
    assert.ok(i < 100 && proc.child.exitCode === null, `hush-server did not start: ${proc.out.stderr}`);
    await sleep(100);
  }
  return {
    base,
    ws: `ws://127.0.0.1:${port}`,
    proc,
    /**
     * A join token for `name` in `room` (the last line `hush-server token` prints).
     * @param {string} room
     * @param {string} name
     */
    token(room, name) {
      const out = execFileSync(binary('hush-server'), ['token', '--secret-file', secretFile, '--room', room, '--name', name], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      return out.toString().trim().split('\n').at(-1) ?? '';
    },
    /**
     * An invite link for `name` (PROTOCOL.md §10), as `hush-server token --link-base` prints it.
     * @param {string} room
     * @param {string} name
     */
    link(room, name) {
      const out = execFileSync(binary('hush-server'), [
        'token', '--secret-file', secretFile, '--room', room, '--name', name, '--link-base', base,
      ], { stdio: ['ignore', 'pipe', 'pipe'] });
      const link = out.toString().trim().split('\n').at(-1) ?? '';
      assert.ok(link.startsWith(`${base}/#room=`), `not an invite link: ${link}`);
      return link;
    },
  };
}

/**
 * `hush call` in `room` as `name`, its identity and known peers in a temporary directory.
 * @param {{ ws: string, token: (room: string, name: string) => string }} server
 * @param {string} room
 * @param {string} name
 * @param {string[]} extra more arguments (`--audio`, `--video`, `--record`, `--seconds`)
 */
export function startCli(server, room, name, extra) {
  const dir = tempDir();
  return run(binary('hush'), [
    'call', '--server', server.ws, '--room', room, '--name', name, '--token', server.token(room, name),
    '--identity', path.join(dir, 'identity.pem'), '--config-dir', dir, ...extra,
  ]);
}

/**
 * Headless Chromium (closed by {@link stopAll}).
 * @param {string[]} [extraFlags]
 */
export async function launchChromium(extraFlags = []) {
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: run scripts/setup (apt-get install chromium)`);
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: [...CHROMIUM_FLAGS, ...extraFlags] });
  stops.push(() => {
    browser.close().catch(() => undefined);
  });
  return browser;
}

/**
 * A page whose console errors and page errors go to stderr, prefixed.
 * @param {import('playwright-core').Browser} browser
 * @param {string} label
 */
export async function openPage(browser, label) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') process.stderr.write(`[${label} ${m.type()}] ${m.text()}\n`);
  });
  page.on('pageerror', (e) => process.stderr.write(`[${label} pageerror] ${e.message}\n`));
  return { context, page };
}

/**
 * The page's `window.hushStats()`.
 * @param {import('playwright-core').Page} page
 * @returns {Promise<any>}
 */
export function hushStats(page) {
  return page.evaluate(() => /** @type {any} */ (window).hushStats());
}

/**
 * Polls `check` every 250 ms until it returns true, for at most `ms`.
 * @param {() => Promise<boolean>} check
 * @param {number} ms
 * @param {() => Promise<string>} what says what was waited for, on timeout
 */
export async function waitFor(check, ms, what) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) assert.fail(`timed out: ${await what()}`);
    await sleep(250);
  }
}

/**
 * The ciphertext audit: how many of these plaintext frames (16 bytes or
 * longer) have a 16-byte window anywhere in what the SFU forwarded, read
 * from a `hush-server --capture` file (format in hush-proto's `capture`).
 * @param {string} captureFile
 * @param {Uint8Array[]} frames
 */
export function audit(captureFile, frames) {
  const W = 16;
  const data = fs.readFileSync(captureFile);
  assert.equal(data.subarray(0, 8).toString('latin1'), 'HUSHCAP1', 'a capture file');
  const windows = new Set();
  let packets = 0;
  for (let at = 8; at < data.length; ) {
    const len = data.readUInt32BE(at + 7);
    const payload = data.subarray(at + 11, at + 11 + len);
    for (let i = 0; i + W <= payload.length; i += 1) windows.add(payload.toString('latin1', i, i + W));
    at += 11 + len;
    packets += 1;
  }
  let checked = 0;
  let visible = 0;
  for (const f of frames.filter((x) => x.length >= W)) {
    checked += 1;
    const text = Buffer.from(f).toString('latin1');
    for (let i = 0; i + W <= text.length; i += 1) {
      if (windows.has(text.slice(i, i + W))) {
        visible += 1;
        break;
      }
    }
  }
  return { packets, checked, visible };
}

/**
 * Decodes an IVF recording (VP8) with the browser's WebCodecs decoder,
 * from its first key frame on: how many frames went in, how many decoded,
 * and any decoder error.
 * @param {import('playwright-core').Page} page a page on a secure origin
 * @param {string} ivfFile
 */
export async function decodeIvf(page, ivfFile) {
  const data = fs.readFileSync(ivfFile);
  assert.equal(data.subarray(0, 4).toString('latin1'), 'DKIF', 'an IVF file');
  /** @type {string[]} */
  const frames = [];
  for (let at = data.readUInt16LE(6); at + 12 <= data.length; ) {
    const size = data.readUInt32LE(at);
    frames.push(data.subarray(at + 12, at + 12 + size).toString('base64'));
    at += 12 + size;
  }
  return page.evaluate(async (encoded) => {
    const chunks = encoded.map((b) => Uint8Array.from(atob(b), (c) => c.charCodeAt(0)));
    const first = chunks.findIndex((c) => ((c[0] ?? 1) & 1) === 0);
    let decoded = 0;
    /** @type {string[]} */
    const errors = [];
    const decoder = new VideoDecoder({
      output: (frame) => {
        decoded += 1;
        frame.close();
      },
      error: (e) => errors.push(String(e)),
    });
    decoder.configure({ codec: 'vp8' });
    const fed = first < 0 ? [] : chunks.slice(first);
    fed.forEach((c, i) => {
      const type = ((c[0] ?? 1) & 1) === 0 ? 'key' : 'delta';
      decoder.decode(new EncodedVideoChunk({ type, timestamp: i * 33_333, data: c }));
    });
    await decoder.flush().catch((e) => errors.push(String(e)));
    return { frames: chunks.length, fed: fed.length, decoded, errors };
  }, frames);
}
