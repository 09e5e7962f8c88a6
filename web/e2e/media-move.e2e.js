// @ts-check
/**
 * The media node carrying a call is killed (`kill -9` of its `hush-sfu`):
 * the room's node moves the room's media to the other media node and
 * tells its members `media_moved`. The page and `hush call` each make a
 * new peer connection there without leaving the call (same member, same
 * keys) and hear each other again.
 *
 * Needs `redis-server` (scripts/setup installs it). Run with `npm run e2e`
 * (binaries from ../target/debug).
 */

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

import { binary, hushStats, launchChromium, openPage, run, startCli, startServer, stopAll, tempDir, waitFor } from './harness.js';

const ROOM = 'move-e2e';

after(stopAll);

/** A free loopback TCP port. */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => resolve(typeof a === 'object' && a !== null ? a.port : 0));
    });
  });
}

test('a killed media node: the page and hush call move to the other one without leaving the call', { timeout: 120_000 }, async () => {
  const dir = tempDir();
  const redisPort = await freePort();
  const redis = `redis://127.0.0.1:${redisPort}`;
  const redisProc = run('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { name: 'redis' });
  await redisProc.waitForLine(/Ready to accept connections/, 15_000);
  const control = path.join(dir, 'control');
  fs.writeFileSync(control, randomBytes(32).toString('base64'), { mode: 0o600 });
  /** @type {Record<string, import('./harness.js').Proc>} */
  const sfus = {};
  for (const id of ['sfu-1', 'sfu-2']) {
    const args = ['--listen', '127.0.0.1:0', '--rtc-port', '0', '--no-rtc-tcp', '--redis', redis, '--node-id', id, '--control-secret-file', control];
    sfus[id] = run(binary('hush-sfu'), args, { name: id });
    await sfus[id].waitForLine(/^media node /, 15_000);
  }
  const server = await startServer({ extra: ['--redis', redis, '--node-id', 'node-a', '--no-media', '--sfu-control-secret-file', control] });
  const browser = await launchChromium();
  const amy = await openPage(browser, 'amy');
  await amy.page.goto(server.link(ROOM, 'amy'));
  const cli = startCli(server, ROOM, 'cli', ['--audio', 'sine:660']);
  const stats = async () => (await hushStats(amy.page))?.peers?.cli;
  const describe = async () => JSON.stringify(await hushStats(amy.page));
  await waitFor(async () => ((await stats())?.decrypted ?? 0) > 50, 30_000, async () => `amy hears cli: ${await describe()}`);
  const before = await stats();

  // Which media node carries the room.
  const status = () => execFileSync(binary('hush-server'), ['cluster', 'status', '--redis', redis], { timeout: 10_000 }).toString();
  const carrying = /media on (sfu-\d)/.exec(status())?.[1];
  assert.ok(carrying !== undefined && sfus[carrying] !== undefined, status());
  sfus[carrying]?.child.kill('SIGKILL');
  const killed = Date.now();

  await cli.waitForLine(/^media connection restored/, 20_000);
  await waitFor(
    async () => ((await stats())?.decrypted ?? 0) > before.decrypted + 60,
    20_000,
    async () => `amy hears cli again: ${await describe()}`,
  );
  console.log(`the page decrypted hush call again within ${Date.now() - killed} ms of the media node's kill`);
  const later = await stats();
  const now = /media on (sfu-\d)/.exec(status())?.[1];
  assert.ok(now !== undefined && now !== carrying, `the room's media moved from ${carrying}:\n${status()}`);
  // The same member (signaling id), its keys unchanged: no rejoin.
  assert.equal(later.id, before.id);
  assert.equal(later.safety_number, before.safety_number);
  assert.equal(later.failed, 0, JSON.stringify(later));
  assert.equal(later.lost_to_key_change, 0, JSON.stringify(later));
  assert.equal((await hushStats(amy.page)).state, 'connected');
  assert.ok(!/joined move-e2e again/.test(cli.out.stdout), cli.out.stdout);
});
