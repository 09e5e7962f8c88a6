// @ts-check
/**
 * What the browser end-to-end tests share: the binaries, a `hush-server`
 * on free loopback ports, join tokens and invite links, `hush call`
 * processes, Chromium through playwright-core, the artifacts directory and
 * failure dumps, the ciphertext audit of a capture file, and a VP8 decode
 * of an IVF recording with the browser's own decoder (WebCodecs). Every
 * process, browser and temporary directory started here is stopped or
 * removed by {@link stopAll}.
 */

import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

/** The web/ directory. */
export const WEB_DIR = fileURLToPath(new URL('..', import.meta.url));
/** Where `hush` and `hush-server` are (`HUSH_BIN_DIR`, relative to the current directory; default ../target/debug). */
export const BIN_DIR = process.env['HUSH_BIN_DIR']
  ? path.resolve(process.env['HUSH_BIN_DIR'])
  : path.resolve(WEB_DIR, '..', 'target', 'debug');
/** Debian's Chromium (`HUSH_CHROMIUM` to use another). */
export const CHROMIUM = process.env['HUSH_CHROMIUM'] ?? '/usr/bin/chromium';
/** Screenshots and failure dumps (gitignored). */
export const ARTIFACTS = path.join(WEB_DIR, 'e2e', 'artifacts');

/**
 * Headless Chromium (../shared/DEPENDENCIES.md, DEVELOPERS.md): no sandbox
 * or GPU (containers), no background traffic, fake camera and microphone
 * granted without a prompt, audio may play without a gesture.
 */
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

/** @type {(() => void | Promise<void>)[]} */
const stops = [];
/** @type {Proc[]} every process {@link run} started, for {@link dumpFailure} */
const procs = [];

/** Stops every process and browser started here and removes the temporary directories, newest first (idempotent). */
export async function stopAll() {
  for (const stop of stops.splice(0).reverse()) {
    try {
      await stop();
    } catch {
      // Already gone.
    }
  }
}

// Last resort if the runner exits with a test still running.
process.on('exit', () => {
  for (const p of procs) if (p.status === null) p.child.kill('SIGKILL');
});

/** @param {number} ms */
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** A fresh temporary directory, removed by {@link stopAll}. */
export function tempDir() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hush-e2e-'));
  stops.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** When this process started: artifacts older than that are an earlier run's. */
const STARTED = Date.now() - process.uptime() * 1000;

/**
 * Creates {@link ARTIFACTS} and removes the screenshots and dumps (`.png`,
 * `.json`, `.txt`) written there before this process started, so nothing
 * in it is left from an earlier run (and nothing a test file running
 * alongside this one wrote is lost).
 */
export function clearArtifacts() {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  for (const f of fs.readdirSync(ARTIFACTS)) {
    const file = path.join(ARTIFACTS, f);
    if (/\.(png|json|txt)$/.test(f) && fs.statSync(file).mtimeMs < STARTED) fs.rmSync(file, { force: true });
  }
}

/** @param {string} name */
export function binary(name) {
  const file = path.join(BIN_DIR, name);
  assert.ok(
    fs.existsSync(file),
    `${file} is missing: build it with \`nice -n 19 cargo build -p hush-signaling --bin hush-server -p hush\` (or set HUSH_BIN_DIR)`,
  );
  return file;
}

/**
 * A started process: its output is kept (stdout also line by line) and it
 * is stopped by {@link stopAll}. Its environment is this one's (RUST_LOG
 * included: hush-server logs at info, `hush call` not at all, by default)
 * with NO_COLOR.
 */
export class Proc {
  /**
   * @param {string} name prefix of its echoed lines, and of its files in a failure dump
   * @param {string} file
   * @param {string[]} args
   * @param {{ echo?: boolean | undefined, env?: NodeJS.ProcessEnv | undefined }} options
   *   echo: its stdout lines to stderr as they come; env: more environment
   */
  constructor(name, file, args, options) {
    this.name = name;
    this.program = path.basename(file);
    this.out = { stdout: '', stderr: '' };
    /** @type {string[]} complete, non-empty stdout lines */
    this.lines = [];
    /** @type {((line: string) => void)[]} */
    this.lineListeners = [];
    /** @type {((tail: string) => void)[]} */
    this.tailListeners = [];
    /** @type {{ code: number | null, signal: string | null } | null} how it ended, once it has */
    this.status = null;
    this.child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1', ...options.env } });
    /** @type {Promise<{ code: number | null, signal: string | null }>} once it has exited and its output is all read */
    this.closed = new Promise((resolve) => {
      /** @param {{ code: number | null, signal: string | null }} status */
      const end = (status) => {
        this.status ??= status;
        resolve(this.status);
      };
      this.child.on('error', (e) => {
        this.out.stderr += `\n[spawn error] ${e.message}\n`;
        end({ code: null, signal: 'spawn-error' });
      });
      this.child.on('close', (code, signal) => end({ code, signal }));
    });
    /** Its exit code (null if a signal ended it). */
    this.exited = this.closed.then((s) => s.code);
    let pending = '';
    this.child.stdout.setEncoding('utf8').on('data', (/** @type {string} */ chunk) => {
      this.out.stdout += chunk;
      pending += chunk;
      const parts = pending.split(/\r\n|\r|\n/);
      pending = parts.pop() ?? '';
      for (const line of parts) {
        if (line === '') continue;
        if (options.echo) process.stderr.write(`[${name}] ${line}\n`);
        this.lines.push(line);
        for (const l of this.lineListeners) l(line);
      }
    });
    this.child.stderr.setEncoding('utf8').on('data', (/** @type {string} */ chunk) => {
      this.out.stderr += chunk;
      const err = this.out.stderr;
      const tail = err.slice(Math.max(err.lastIndexOf('\r'), err.lastIndexOf('\n')) + 1);
      for (const l of this.tailListeners) l(tail);
    });
  }

  /**
   * Calls `listener` with stderr's unfinished last line (after its last
   * `\r` or `\n`) whenever stderr grows: a status line redrawn with `\r`.
   * @param {(tail: string) => void} listener
   */
  onStderrTail(listener) {
    this.tailListeners.push(listener);
  }

  /**
   * The first stdout line matching `re` (already read or to come).
   * @param {RegExp} re
   * @param {number} ms how long to wait
   * @returns {Promise<RegExpExecArray>}
   */
  waitForLine(re, ms) {
    for (const line of this.lines) {
      const m = re.exec(line);
      if (m) return Promise.resolve(m);
    }
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        this.lineListeners = this.lineListeners.filter((l) => l !== listen);
      };
      /** @param {string} line */
      const listen = (line) => {
        const m = re.exec(line);
        if (m) {
          done();
          resolve(m);
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${this.name}: no line matching ${re} within ${ms} ms`));
      }, ms);
      this.lineListeners.push(listen);
      void this.closed.then((s) => {
        done();
        reject(new Error(`${this.name} exited (${JSON.stringify(s)}) before printing a line matching ${re}`));
      });
    });
  }

  /**
   * Waits for the exit, killing the process (and failing) after `ms`.
   * @param {number} ms
   */
  async waitExit(ms) {
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    let timer;
    const late = new Promise((resolve) => {
      timer = setTimeout(resolve, ms, 'late');
    });
    const r = await Promise.race([this.closed, late]);
    clearTimeout(timer);
    if (r === 'late') {
      await this.stop();
      throw new Error(`${this.name} still running after ${ms} ms; killed`);
    }
    return this.closed;
  }

  /** SIGTERM, then SIGKILL after 3 s; resolves once it is gone. */
  async stop() {
    if (this.status !== null) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 3000);
    await this.closed;
    clearTimeout(timer);
  }
}

/**
 * Starts a {@link Proc}, stopped by {@link stopAll}.
 * @param {string} file
 * @param {string[]} args
 * @param {{ name?: string | undefined, echo?: boolean | undefined, env?: NodeJS.ProcessEnv | undefined }} [options]
 *   name: its label (default the program's; made unique)
 */
export function run(file, args, options = {}) {
  const base = options.name ?? path.basename(file);
  let name = base;
  for (let i = 2; procs.some((p) => p.name === name); i += 1) name = `${base}-${i}`;
  const proc = new Proc(name, file, args, options);
  procs.push(proc);
  stops.push(() => proc.stop());
  return proc;
}

/**
 * `hush-server` with its embedded SFU on loopback: port 0 for signaling
 * and media, so free ports and no race; the server says which it got on
 * its first stdout line.
 * @param {{ capture?: string, sfuWorkers?: number, port?: number, secretFile?: string, extra?: string[] }} [options]
 *   capture: write a ciphertext capture file; sfuWorkers: `--sfu-workers`
 *   (default the server's, one per core); port: listen on this one (a
 *   server started again); secretFile: use this secret (the same service);
 *   extra: more `hush-server` arguments
 */
export async function startServer(options = {}) {
  // A fresh secret, in a file, so it is not on any command line (or the
  // given one: a server started again as the same service).
  let secretFile = options.secretFile;
  if (secretFile === undefined) {
    secretFile = path.join(tempDir(), 'secret');
    fs.writeFileSync(secretFile, randomBytes(32).toString('base64'), { mode: 0o600 });
  }
  const args = ['--listen', `127.0.0.1:${options.port ?? 0}`, '--secret-file', secretFile, '--rtc-port', '0'];
  if (options.capture) args.push('--capture', options.capture);
  if (options.sfuWorkers !== undefined) args.push('--sfu-workers', String(options.sfuWorkers));
  args.push(...(options.extra ?? []));
  const proc = run(binary('hush-server'), args, { name: 'server' });
  const [, base = ''] = await proc
    .waitForLine(/listening on (http:\/\/127\.0\.0\.1:\d+)/, 15_000)
    .catch((e) => assert.fail(`hush-server did not start: ${e.message}\n${proc.out.stderr}`));
  assert.ok(base);
  let health = '';
  await waitFor(
    async () => {
      assert.equal(proc.status, null, `hush-server exited: ${proc.out.stderr}`);
      try {
        const r = await fetch(`${base}/healthz`);
        health = `HTTP ${r.status}`;
        return r.ok;
      } catch (e) {
        health = String(e);
        return false;
      }
    },
    10_000,
    async () => `${base}/healthz healthy: ${health}`,
  );
  /**
   * The lines `hush-server token` prints for `name` in `room` (the token, then with `--link-base` the invite link).
   * @param {string} room
   * @param {string} name
   * @param {string[]} extra
   */
  const mint = (room, name, extra) => {
    const out = execFileSync(binary('hush-server'), ['token', '--secret-file', secretFile, '--room', room, '--name', name, ...extra], {
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 10_000,
    }).toString();
    const lines = out.trim().split('\n').map((l) => l.trim());
    assert.ok(lines[0]?.startsWith('v1.'), `no token in:\n${out}`);
    return lines;
  };
  return {
    base,
    ws: base.replace(/^http/, 'ws'),
    proc,
    secretFile,
    port: Number(new URL(base).port),
    /**
     * A join token for `name` in `room`.
     * @param {string} room
     * @param {string} name
     */
    token(room, name) {
      return mint(room, name, [])[0] ?? '';
    },
    /**
     * An invite link for `name` (PROTOCOL.md §10), as `hush-server token --link-base` prints it.
     * @param {string} room
     * @param {string} name
     */
    link(room, name) {
      const link = mint(room, name, ['--link-base', base])[1] ?? '';
      assert.ok(link.startsWith(`${base}/#room=`), `not an invite link: ${link}`);
      return link;
    },
  };
}

/**
 * `hush call` in `room` as `name` (also its label), its identity and known peers in a temporary directory.
 * @param {{ ws: string, token: (room: string, name: string) => string }} server
 * @param {string} room
 * @param {string} name
 * @param {string[]} extra more arguments (`--audio`, `--video`, `--record`, `--seconds`)
 * @param {{ echo?: boolean, identity?: string }} [options] echo: its stdout lines to stderr;
 *   identity: this identity file (default a new one)
 */
export function startCli(server, room, name, extra, options = {}) {
  const dir = tempDir();
  return run(
    binary('hush'),
    [
      'call', '--server', server.ws, '--room', room, '--name', name, '--token', server.token(room, name),
      '--identity', options.identity ?? path.join(dir, 'identity.pem'), '--config-dir', dir, ...extra,
    ],
    { name, echo: options.echo },
  );
}

/**
 * Whether this machine has an IPv4 address beyond loopback: Chromium
 * gathers no loopback ICE candidates unless told to, but from eth0's
 * address it reaches the SFU's 127.0.0.1 candidate fine.
 */
function hasNonLoopbackIpv4() {
  return Object.values(os.networkInterfaces())
    .flat()
    .some((a) => a !== undefined && a.family === 'IPv4' && !a.internal);
}

/**
 * Headless Chromium (closed by {@link stopAll}). On a machine with loopback
 * only (a bare container, `unshare -n`) it would gather no candidate at
 * all and get no media, so it may then use loopback.
 * @param {string[]} [extraFlags] e.g. `--use-file-for-fake-audio-capture=FILE`
 */
export async function launchChromium(extraFlags = []) {
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: run scripts/setup (apt-get install chromium) or set HUSH_CHROMIUM`);
  const args = [...CHROMIUM_FLAGS, ...extraFlags];
  if (!hasNonLoopbackIpv4()) args.push('--allow-loopback-in-peer-connection');
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args, timeout: 30_000 });
  stops.push(() => browser.close().catch(() => undefined));
  return browser;
}

/**
 * A page whose console messages and page errors go to stderr, prefixed, and to `log`.
 * @param {import('playwright-core').Browser} browser
 * @param {string} label
 */
export async function openPage(browser, label) {
  const context = await browser.newContext();
  const page = await context.newPage();
  /** @type {string[]} */
  const log = [];
  /** @param {string} line */
  const note = (line) => {
    log.push(line);
    process.stderr.write(`${line}\n`);
  };
  page.on('console', (m) => note(`[${label} console.${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => note(`[${label} pageerror] ${e.stack ?? e.message}`));
  return { context, page, log };
}

/**
 * The page's `window.hushStats()`, or null while the page has none.
 * @param {import('playwright-core').Page} page
 * @returns {Promise<any>}
 */
export function hushStats(page) {
  return page.evaluate(() => {
    const f = /** @type {any} */ (window).hushStats;
    return typeof f === 'function' ? f() : null;
  });
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
 * Writes what explains a failure to {@link ARTIFACTS} and stderr: each of
 * `parts` to its file (and to stderr unless `quiet`), then the output of
 * every process {@link run} started, to NAME.stdout.txt and NAME.stderr.txt
 * (stdout all of it, stderr its last 3000 characters, on stderr). Best
 * effort: it does not throw.
 * @param {{ file: string, title: string, text: string, quiet?: boolean }[]} [parts]
 */
export function dumpFailure(parts = []) {
  /** @type {{ file: string, title: string, text: string, quiet?: boolean, tail?: number }[]} */
  const all = [...parts];
  for (const p of procs) {
    all.push({ file: `${p.name}.stdout.txt`, title: `${p.name} (${p.program}) stdout`, text: p.out.stdout });
    all.push({ file: `${p.name}.stderr.txt`, title: `${p.name} (${p.program}) stderr`, text: p.out.stderr.replaceAll('\r', '\n'), tail: 3000 });
  }
  let report = '\n';
  for (const p of all) {
    try {
      fs.mkdirSync(ARTIFACTS, { recursive: true });
      fs.writeFileSync(path.join(ARTIFACTS, p.file), p.text);
    } catch {
      // The dump is best effort.
    }
    if (p.quiet) continue;
    const cut = p.tail !== undefined && p.text.length > p.tail;
    report += `--- ${p.title}${cut ? ` (last ${p.tail} chars)` : ''} ---\n${cut ? p.text.slice(-(p.tail ?? 0)) : p.text}\n`;
  }
  process.stderr.write(`${report}(all of it in ${ARTIFACTS})\n`);
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

/**
 * CPU seconds used so far by every Chromium process on this machine (user
 * and system, from /proc; clock ticks of 1/100 s): read twice around a
 * window for the browsers' CPU use. Linux only; 0 elsewhere.
 */
export function chromiumCpuSeconds() {
  let ticks = 0;
  let entries = [];
  try {
    entries = fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d));
  } catch {
    return 0;
  }
  for (const pid of entries) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
      const comm = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      if (!comm.startsWith('chromium') && !comm.startsWith('chrome')) continue;
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // The process ended meanwhile.
    }
  }
  return ticks / 100;
}
