// The browser client in a real call: Chromium (headless, its microphone a
// 440 Hz WAV) opens an invite link served by hush-server, and `hush call`
// (the Rust client, a 660 Hz sine, recording) joins the same room. Each
// must hear the other's tone, the page must decrypt at least 95 % of what
// the CLI sent while both were connected (the criterion of the Rust tests'
// `assert_heard_each_other`), and both must show the same safety number.
//
//   cd web && npm run e2e
//
// Needs target/debug/hush-server and target/debug/hush (HUSH_BIN_DIR, a
// path relative to the current directory, overrides the directory),
// /usr/bin/chromium (HUSH_CHROMIUM overrides it; scripts/setup installs it)
// and playwright-core (npm ci). Screenshots go to e2e/artifacts/
// (call-live.png once the page hears the CLI, call.png at the end), and on
// failure the page's stats, its console and the outputs of the CLI and the
// server as well.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { decodeWav, encodeWav, fractionNear, sine, windowFrequencies } from './audio.js';
import {
  ARTIFACTS,
  clearArtifacts,
  dumpFailure,
  hushStats,
  launchChromium,
  openPage,
  sleep,
  startCli,
  startServer,
  stopAll,
  tempDir,
  waitFor,
} from './harness.js';

const ROOM = 'e2e';
/** How long `hush call` stays in the call. */
const CALL_SECONDS = 15;
/** The page's microphone (Chromium's fake capture file) and the CLI's tone. */
const WEB_HZ = 440;
const CLI_HZ = 660;

/**
 * What the page's `window.hushStats()` returns about one remote member.
 * @typedef {object} PeerStats
 * @property {number} decrypted frames of this member that decrypted
 * @property {number | Record<string, number>} failed frames that did not
 *   (a count, or counts by reason)
 * @property {number} lost_to_key_change
 * @property {string} safety_number as `hush call` prints it
 * @property {number | null} audio_hz dominant frequency of its audio
 * @property {number} video_frames decoded frames of its video element
 */

/**
 * @typedef {object} HushStats
 * @property {string} room
 * @property {string} you
 * @property {string} state "joined", then "connected" once media flows
 * @property {number} sent
 * @property {Record<string, PeerStats>} peers by display name
 */

// The processes, the browser and the temporary directories, however the test ends.
after(stopAll);

/**
 * A member's failed count, whichever shape the page reports.
 * @param {PeerStats['failed'] | undefined} failed
 */
function failedCount(failed) {
  if (failed === undefined) return 0;
  if (typeof failed === 'number') return failed;
  return Object.values(failed).reduce((a, b) => a + b, 0);
}

test('a browser and hush call hear each other, decrypt, and agree on the safety number', { timeout: 120_000 }, async () => {
  // Nothing left from an earlier run.
  clearArtifacts();
  const tmp = tempDir();

  // The page's microphone: a 440 Hz tone, longer than the call (Chromium
  // loops the file anyway).
  const toneFile = path.join(tmp, `tone-${WEB_HZ}.wav`);
  fs.writeFileSync(toneFile, encodeWav(sine(WEB_HZ, 30), 48000, 1));

  /** @type {HushStats[]} */
  const snapshots = [];
  /** @type {Awaited<ReturnType<typeof openPage>> | null} */
  let web = null;
  try {
    const server = await startServer({ sfuWorkers: 1 });
    const browser = await launchChromium([`--use-file-for-fake-audio-capture=${toneFile}`]);
    web = await openPage(browser, 'web');
    const p = web.page;
    await p.goto(server.link(ROOM, 'web'), { timeout: 15_000 });

    /** The page's stats now, or null while it has no `hushStats`. */
    const readStats = async () => {
      /** @type {HushStats | null} */
      const s = await hushStats(p);
      if (s !== null) snapshots.push(s);
      return s;
    };

    // The page joins first, as ann does in the Rust tests; then the CLI.
    /** @type {HushStats | null} */
    let joining = null;
    await waitFor(
      async () => {
        joining = await readStats();
        return joining !== null && (joining.state === 'joined' || joining.state === 'connected');
      },
      30_000,
      async () => `the page did not join within 30 s; hushStats(): ${JSON.stringify(joining)}`,
    );

    const recordDir = path.join(tmp, 'cli-record');
    const cli = startCli(
      server,
      ROOM,
      'cli',
      ['--audio', `sine:${CLI_HZ}`, '--record', recordDir, '--seconds', String(CALL_SECONDS)],
      { echo: true },
    );

    // Pairs of (frames the CLI sent, frames of the CLI the page decrypted),
    // the page read as soon as the CLI's once-a-second stats line arrives
    // (stderr: "\rsent S | received R | decrypted D | failed F   ").
    /** @type {{sent: number, decrypted: number}[]} */
    const pairs = [];
    let lastTail = '';
    cli.onStderrTail((tail) => {
      const m = /^sent (\d+) \| received \d+ \| decrypted \d+ \| failed \d+ {3}$/.exec(tail);
      if (!m || tail === lastTail || cli.status !== null) return;
      lastTail = tail;
      const sent = Number(m[1]);
      readStats()
        .then((s) => {
          const peer = s?.peers?.['cli'];
          if (peer && cli.status === null) pairs.push({ sent, decrypted: peer.decrypted });
        })
        .catch(() => {});
    });

    // While the call lasts, watch the page for the CLI's tone.
    /** @type {(number | null)[]} */
    const heardHz = [];
    let heard = false;
    const exited = cli.waitExit((CALL_SECONDS + 30) * 1000);
    let cliDone = false;
    void exited.then(
      () => (cliDone = true),
      () => (cliDone = true),
    );
    while (!cliDone) {
      const s = await readStats().catch(() => null);
      const hz = s?.peers?.['cli']?.audio_hz;
      if (hz !== undefined) {
        heardHz.push(hz);
        if (!heard && hz !== null && Math.abs(hz - CLI_HZ) <= 10) {
          heard = true;
          process.stderr.write(`web heard cli at ${hz} Hz (reading ${heardHz.length})\n`);
          // The call as it looks with both in it.
          await p
            .screenshot({ path: path.join(ARTIFACTS, 'call-live.png'), fullPage: true, timeout: 10_000 })
            .catch((e) => process.stderr.write(`screenshot failed: ${e}\n`));
        }
      }
      await sleep(250);
    }
    const status = await exited;
    // The page's counters after the CLI left, if it still lists the CLI.
    await readStats().catch(() => null);

    /** @type {string[]} */
    const problems = [];

    if (status.code !== 0) {
      problems.push(`hush call exited with ${JSON.stringify(status)} (3 not joined, 4 server ended, 5 media failed)`);
    }

    // Safety numbers: the CLI prints "  safety number with web: 12 groups of 5 digits".
    const cliSafety = cli.lines
      .map((l) => /^\s*safety number with web: (\d{5}(?: \d{5}){11})\s*$/.exec(l)?.[1])
      .find((x) => x !== undefined);
    const pageSafety = snapshots.map((s) => s.peers?.['cli']?.safety_number).find((x) => x !== undefined);
    if (cliSafety === undefined) problems.push('hush call printed no safety number with web');
    if (pageSafety === undefined) problems.push('the page showed no safety number for cli');
    if (cliSafety !== undefined && cliSafety === pageSafety) {
      process.stderr.write(`safety number, both sides: ${cliSafety}\n`);
    } else if (cliSafety !== undefined && pageSafety !== undefined) {
      problems.push(`safety numbers differ: hush call ${JSON.stringify(cliSafety)}, page ${JSON.stringify(pageSafety)}`);
    }

    // The page hears the CLI's 660 Hz.
    if (!heard) {
      problems.push(`the page never heard cli at ${CLI_HZ} ± 10 Hz; its audio_hz readings: ${runs(heardHz)}`);
    }

    // Frames: between the first sample where the page had decrypted a few of
    // the CLI's frames (both connected) and the last one before the CLI
    // left, the page decrypted ≥ 95 % of what the CLI sent, over ≥ 200
    // frames: `assert_heard_each_other` with `until_decrypted(5)`.
    const first = pairs.find((x) => x.decrypted >= 5);
    const last = pairs.at(-1);
    if (first === undefined || last === undefined) {
      problems.push(`no samples of the page's decrypted count while the CLI sent (page decrypted < 5 frames?)`);
    } else {
      const sent = last.sent - first.sent;
      const decrypted = last.decrypted - first.decrypted;
      process.stderr.write(
        `web from cli: ${decrypted} of ${sent} frames decrypted (${((100 * decrypted) / Math.max(sent, 1)).toFixed(1)} %) while both were connected\n`,
      );
      if (sent < 200) problems.push(`cli sent only ${sent} frames while both were connected`);
      else if (decrypted < 0.95 * sent) problems.push(`web decrypted ${decrypted} of ${sent} frames cli sent (< 95 %)`);
    }
    // The whole call, set-up and leave included, for the record: the CLI's
    // summary "left ROOM: sent N audio and M video frames" counts every
    // frame it sealed (15 s × 50), from before its media connected. Two
    // Rust clients reach about 96.5 % on this (724 of 750); it is printed,
    // not asserted, as it also measures how fast the page subscribes.
    const summary = /^left \S+: sent (\d+) audio and (\d+) video frames$/.exec(
      cli.lines.find((l) => l.startsWith('left ')) ?? '',
    );
    const pageTotal = Math.max(0, ...snapshots.map((s) => s.peers?.['cli']?.decrypted ?? 0));
    if (summary) {
      const total = Number(summary[1]);
      process.stderr.write(
        `web from cli, whole call: ${pageTotal} of ${total} audio frames (${((100 * pageTotal) / Math.max(total, 1)).toFixed(1)} %)\n`,
      );
    } else {
      problems.push('hush call printed no "left ROOM: sent N audio and M video frames" summary');
    }
    const pageFailed = Math.max(0, ...snapshots.map((s) => failedCount(s.peers?.['cli']?.failed)));
    if (pageFailed > 0) problems.push(`the page failed to decrypt ${pageFailed} of cli's frames`);

    // The CLI's recording of web ("web-p<ID>.wav"): 440 ± 5 Hz in ≥ 80 % of
    // its 1-second windows, the first one (codec and jitter buffer start-up)
    // left out.
    const recordings = fs.existsSync(recordDir)
      ? fs.readdirSync(recordDir).filter((f) => /^web-.*\.wav$/.test(f))
      : [];
    const largest = recordings
      .map((f) => path.join(recordDir, f))
      .sort((a, b) => fs.statSync(b).size - fs.statSync(a).size)[0];
    if (largest === undefined) {
      problems.push(`hush call recorded no audio of web in ${recordDir}: ${JSON.stringify(fs.existsSync(recordDir) ? fs.readdirSync(recordDir) : [])}`);
    } else {
      const wav = decodeWav(new Uint8Array(fs.readFileSync(largest)));
      const windows = windowFrequencies(wav.samples, wav.sampleRate, 1).slice(1);
      const near = fractionNear(windows, WEB_HZ, 5);
      process.stderr.write(
        `cli heard web (${path.basename(largest)}, ${(wav.samples.length / wav.sampleRate).toFixed(1)} s): ${windows.map((f) => (f === null ? '-' : f.toFixed(1))).join(' ')} Hz; ${(100 * near).toFixed(0)} % at ${WEB_HZ} ± 5\n`,
      );
      if (windows.length < 5) problems.push(`the recording of web holds only ${windows.length + 1} s`);
      else if (near < 0.8) problems.push(`the recording of web is at ${WEB_HZ} ± 5 Hz in only ${(100 * near).toFixed(0)} % of its 1-s windows`);
    }

    if (problems.length > 0) assert.fail(problems.join('\n'));
  } catch (e) {
    dumpFailure([
      { file: 'hushStats.json', title: 'last hushStats()', text: JSON.stringify(snapshots.at(-1) ?? null, null, 2) },
      { file: 'hushStats-history.json', title: 'hushStats() history', text: JSON.stringify(snapshots, null, 1), quiet: true },
      { file: 'console.txt', title: 'page console', text: (web?.log ?? []).join('\n'), quiet: true },
    ]);
    throw e;
  } finally {
    if (web !== null) {
      await web.page
        .screenshot({ path: path.join(ARTIFACTS, 'call.png'), fullPage: true, timeout: 10_000 })
        .catch((e) => process.stderr.write(`screenshot failed: ${e}\n`));
    }
  }
});

/**
 * Values with repeats collapsed: "null ×12, 655.3, 660 ×3".
 * @param {unknown[]} values
 */
function runs(values) {
  /** @type {string[]} */
  const out = [];
  for (let i = 0; i < values.length; ) {
    let j = i;
    while (j < values.length && values[j] === values[i]) j++;
    out.push(j - i > 1 ? `${String(values[i])} ×${j - i}` : String(values[i]));
    i = j;
  }
  return out.length > 0 ? out.join(', ') : '(none: the page never listed cli)';
}
