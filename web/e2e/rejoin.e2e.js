// @ts-check
/**
 * A server that goes away mid-call (killed, then started again on the same
 * port with the same secret, as a restarted service or a replaced node
 * behind one address): the page and `hush call` both join again by
 * themselves, with the same identities, and hear each other again.
 *
 * Run with `npm run e2e` (binaries from ../target/debug).
 */

import { after, test } from 'node:test';
import assert from 'node:assert/strict';

import { hushStats, launchChromium, openPage, sleep, startCli, startServer, stopAll, waitFor } from './harness.js';

const ROOM = 'rejoin-e2e';

after(stopAll);

test('after a server restart the page and hush call join again and hear each other', { timeout: 120_000 }, async () => {
  const first = await startServer();
  const browser = await launchChromium();
  const amy = await openPage(browser, 'amy');
  await amy.page.goto(first.link(ROOM, 'amy'));
  const cli = startCli(first, ROOM, 'cli', ['--audio', 'sine:660']);
  const decrypted = async () => (await hushStats(amy.page))?.peers?.cli?.decrypted ?? 0;
  const describe = async () => JSON.stringify(await hushStats(amy.page));
  await waitFor(async () => (await decrypted()) > 50, 30_000, async () => `amy hears cli: ${await describe()}`);
  const number = (await hushStats(amy.page)).peers.cli.safety_number;

  // The server dies (no goodbye), and comes back on the same port.
  first.proc.child.kill('SIGKILL');
  const killed = Date.now();
  await waitFor(async () => (await hushStats(amy.page))?.peers?.cli === undefined, 10_000, async () => `amy notices: ${await describe()}`);
  await sleep(1_000);
  await startServer({ port: first.port, secretFile: first.secretFile });
  await waitFor(async () => (await decrypted()) > 50, 45_000, async () => `amy hears cli again: ${await describe()}`);
  console.log(`the page heard hush call again ${Date.now() - killed} ms after the server was killed (1 s of it down)`);
  await cli.waitForLine(/^joined rejoin-e2e again/, 10_000);
  // The same two identities, so the same safety number.
  assert.equal((await hushStats(amy.page)).peers.cli.safety_number, number);
  assert.equal((await hushStats(amy.page)).state, 'connected');
});
