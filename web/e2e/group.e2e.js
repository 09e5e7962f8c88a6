// @ts-check
/**
 * A group call of two browsers and one `hush call` (issue 19's group and
 * video tests): amy (RTCRtpScriptTransform) and ben (the older
 * createEncodedStreams path) join the CLI's call with their fake cameras
 * and microphones; ben leaves and rejoins. Then:
 *
 * - no frame was lost to a key change and none failed, on any side;
 * - the SFU's capture contains none of the browsers' plaintext frames;
 * - the CLI's recording of amy's camera decodes (VP8, with Chromium's
 *   own decoder), and the CLI's test clip plays in amy's page;
 * - a screenshot of amy's page with three participants is kept in
 *   `e2e/artifacts/group.png`.
 *
 * Run with `npm run e2e` (binaries from ../target/debug).
 */

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

import {
  ARTIFACTS,
  audit,
  chromiumCpuSeconds,
  decodeIvf,
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

const ROOM = 'group-e2e';

after(stopAll);

/**
 * Whether a page decrypts frames from each of `names`.
 * @param {import('playwright-core').Page} page
 * @param {string[]} names
 */
async function hears(page, names) {
  const s = await hushStats(page);
  return names.every((n) => (s.peers?.[n]?.decrypted ?? 0) > 20);
}

test('two browsers and hush call: a leave and a rejoin lose no frame, the SFU sees no plaintext, video decodes both ways', { timeout: 150_000 }, async () => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const dir = tempDir();
  const capture = path.join(dir, 'capture.bin');
  const record = path.join(dir, 'rec');
  const server = await startServer({ capture });
  const cli = startCli(server, ROOM, 'cli', ['--audio', 'sine:660', '--video', 'test', '--record', record]);
  const browser = await launchChromium();
  const amy = await openPage(browser, 'amy');
  await amy.page.goto(`${server.link(ROOM, 'amy')}&audit=1`);
  const ben = await openPage(browser, 'ben');
  await ben.page.goto(`${server.link(ROOM, 'ben')}&audit=1&transforms=streams`);

  const describe = async () => JSON.stringify({ amy: await hushStats(amy.page), ben: await hushStats(ben.page) });
  await waitFor(async () => (await hears(amy.page, ['cli', 'ben'])) && (await hears(ben.page, ['cli', 'amy'])), 45_000, async () => `everyone hears everyone: ${await describe()}`);
  assert.equal((await hushStats(ben.page)).transforms, 'streams');
  assert.equal((await hushStats(amy.page)).transforms, 'script');

  // ben leaves (the Leave button), and comes back in a new page of the same
  // browser profile: the same identity, a new membership.
  /** @type {string[]} */
  const plaintext = [...(await amy.page.evaluate(() => /** @type {any} */ (window).hushAudit()))];
  plaintext.push(...(await ben.page.evaluate(() => /** @type {any} */ (window).hushAudit())));
  await ben.page.click('#leave');
  await waitFor(async () => (await hushStats(amy.page)).peers?.ben === undefined, 10_000, async () => `amy sees ben leave: ${await describe()}`);
  await sleep(1_000);
  await ben.page.close();
  const ben2 = await ben.context.newPage();
  ben2.on('pageerror', (e) => process.stderr.write(`[ben2 pageerror] ${e.message}\n`));
  await ben2.goto(`${server.link(ROOM, 'ben')}&audit=1&transforms=streams`);
  const describe2 = async () => JSON.stringify({ amy: await hushStats(amy.page), ben: await hushStats(ben2) });
  await waitFor(async () => (await hears(amy.page, ['cli', 'ben'])) && (await hears(ben2, ['cli', 'amy'])), 45_000, async () => `everyone hears the rejoined ben: ${await describe2()}`);

  // The CLI's clip plays in amy's page: decoded frames keep coming.
  const before = (await hushStats(amy.page)).peers.cli.video_frames;
  const cpu0 = chromiumCpuSeconds();
  const wall0 = Date.now();
  await sleep(3_000);
  const cpu = (chromiumCpuSeconds() - cpu0) / ((Date.now() - wall0) / 1000);
  console.log(`Chromium (two pages of a 3-party call with video): ${(cpu * 100).toFixed(0)} % of a core`);
  const amyStats = await hushStats(amy.page);
  const benStats = await hushStats(ben2);
  assert.ok(amyStats.peers.cli.video_frames > before + 10, `the clip plays in amy's page: ${before} → ${amyStats.peers.cli.video_frames}`);
  await amy.page.evaluate(() => {
    for (const d of document.querySelectorAll('details')) d.open = true;
  });
  await amy.page.screenshot({ path: path.join(ARTIFACTS, 'group.png'), fullPage: true });
  plaintext.push(...(await ben2.evaluate(() => /** @type {any} */ (window).hushAudit())));

  // The CLI leaves cleanly (Ctrl-C) and says what it counted.
  cli.child.kill('SIGINT');
  assert.equal(await cli.exited, 0, `hush call: ${cli.out.stdout}\n${cli.out.stderr}`);
  const totals = /frames received (\d+), decrypted (\d+), failed (\d+), lost to key changes (\d+)/.exec(cli.out.stdout);
  assert.ok(totals !== null, `hush call's summary: ${cli.out.stdout}`);
  const [received, decrypted, failed, lost] = totals.slice(1).map(Number);
  console.log(`cli: received ${received}, decrypted ${decrypted}, failed ${failed}, lost to key changes ${lost}`);
  assert.equal(lost, 0, 'cli lost frames to key changes');
  assert.equal(failed, 0, 'cli failed frames');

  for (const [who, s] of [['amy', amyStats], ['ben', benStats]]) {
    for (const [name, p] of Object.entries(s.peers)) {
      const peer = /** @type {any} */ (p);
      console.log(`${who} from ${name}: ${peer.decrypted} decrypted, ${peer.failed} failed, ${peer.lost_to_key_change} lost to key changes, first frame after ${peer.first_frame_ms} ms`);
      assert.equal(peer.lost_to_key_change, 0, `${who} lost frames of ${name} to key changes`);
      assert.equal(peer.failed, 0, `${who} failed frames of ${name}: ${JSON.stringify(peer.failures)}`);
    }
  }

  // The ciphertext audit: the browsers' plaintext frames against every payload the SFU forwarded.
  const frames = plaintext.map((b) => Uint8Array.from(Buffer.from(b, 'base64')));
  // The control: bytes the SFU did forward are found, so the search can see.
  const forwarded = fs.readFileSync(capture).subarray(8 + 11 + 2, 8 + 11 + 2 + 40);
  assert.equal(audit(capture, [forwarded]).visible, 1, 'the audit finds bytes that were forwarded');
  const result = audit(capture, frames);
  console.log(`audit: ${result.visible} of ${result.checked} browser plaintext frames visible in ${result.packets} forwarded packets`);
  assert.ok(result.checked >= 200, `enough frames checked: ${result.checked}`);
  assert.equal(result.visible, 0, 'plaintext frames visible to the SFU');

  // amy's camera, as the CLI recorded it, decodes.
  const ivf = fs.readdirSync(record).find((f) => f.startsWith('amy-') && f.endsWith('.ivf'));
  assert.ok(ivf !== undefined, `a recording of amy's video in ${fs.readdirSync(record).join(', ')}`);
  const decoded = await decodeIvf(amy.page, path.join(record, ivf));
  console.log(`amy's video as the CLI recorded it: ${decoded.decoded} of ${decoded.fed} frames decoded (${decoded.frames} in the file)`);
  assert.deepEqual(decoded.errors, []);
  assert.ok(decoded.fed >= 60 && decoded.decoded === decoded.fed, JSON.stringify(decoded));
});
