// @ts-check
/**
 * The page's defence against an impersonator: a name that comes back with
 * another identity key gets a loud warning, and "Mark verified" sticks to
 * the key that was compared.
 *
 * amy's page (one browser profile: its pins in localStorage survive) meets
 * `hush call` as "cli" twice: first with one identity (pinned, no
 * warning; amy marks it verified), then — as a server or an attacker
 * holding a token for that name could arrange — with a new identity under
 * the same name: the page must show the warning banner and the tile must
 * say the key changed and is not verified. Then the first key comes back
 * under another name ("mallory"): the page knows whose key it is, warns,
 * and does not call it verified (it was verified as "cli").
 *
 * Run with `npm run e2e` (binaries from ../target/debug).
 */

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';

import {
  ARTIFACTS,
  hushStats,
  launchChromium,
  openPage,
  startCli,
  startServer,
  stopAll,
  tempDir,
  waitFor,
} from './harness.js';

const ROOM = 'identity-e2e';

after(stopAll);

/**
 * The tile of the member called `name`: its badge, warning text and border class.
 * @param {import('playwright-core').Page} page
 * @param {string} name
 */
function tile(page, name) {
  return page.evaluate((who) => {
    const el = [...document.querySelectorAll('#tiles .tile')].find(
      (t) => t.querySelector('.name')?.textContent === who,
    );
    return {
      badge: el?.querySelector('.badge')?.textContent ?? null,
      changed: el?.querySelector('.changed')?.textContent ?? '',
      flagged: el?.classList.contains('identity-changed') ?? false,
      banner: /** @type {HTMLElement} */ (document.getElementById('banner')).hidden
        ? null
        : document.getElementById('banner')?.textContent ?? null,
    };
  }, name);
}

/**
 * Waits until the page shows a safety number for `name`; returns it.
 * @param {import('playwright-core').Page} page
 * @param {string} name
 */
async function safetyNumberOf(page, name) {
  let number = '';
  await waitFor(
    async () => {
      number = (await hushStats(page))?.peers?.[name]?.safety_number ?? '';
      return number !== '';
    },
    30_000,
    async () => `the page sees ${name}: ${JSON.stringify(await hushStats(page))}`,
  );
  return number;
}

test('a known name with a new key, or a known key under a new name, is a loud warning, and verification sticks to the key', { timeout: 120_000 }, async () => {
  const server = await startServer();
  const browser = await launchChromium();
  const amy = await openPage(browser, 'amy');
  await amy.page.goto(server.link(ROOM, 'amy'));

  // First meeting: pinned, no warning; amy compares and marks it verified.
  const firstKey = path.join(tempDir(), 'identity.pem');
  const first = startCli(server, ROOM, 'cli', ['--audio', 'sine:660'], { identity: firstKey });
  const number = await safetyNumberOf(amy.page, 'cli');
  const met = await tile(amy.page, 'cli');
  assert.equal(met.banner, null, 'no warning on a first meeting');
  assert.equal(met.flagged, false);
  await amy.page.click('#tiles .tile:not(.me) .sn summary');
  await amy.page.click('#tiles .tile:not(.me) .verify');
  await waitFor(async () => (await tile(amy.page, 'cli')).badge === 'verified', 5_000, async () => JSON.stringify(await tile(amy.page, 'cli')));
  await first.stop();
  await waitFor(async () => (await hushStats(amy.page))?.peers?.cli === undefined, 15_000, async () => 'cli leaves');

  // Same name, another key.
  const newKey = startCli(server, ROOM, 'cli', ['--audio', 'sine:660']);
  const second = await safetyNumberOf(amy.page, 'cli');
  assert.notEqual(second, number, 'a new identity gives a new safety number');
  const now = await tile(amy.page, 'cli');
  console.log(`the page says: ${now.banner} / ${now.changed}`);
  assert.match(now.banner ?? '', /new identity key/, 'the warning banner');
  assert.match(now.changed, /identity key changed/);
  assert.equal(now.flagged, true, 'the tile is marked');
  assert.notEqual(now.badge, 'verified', 'verification was for the old key');
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await amy.page.screenshot({ path: path.join(ARTIFACTS, 'identity-changed.png') });
  await newKey.stop();
  await waitFor(async () => (await hushStats(amy.page))?.peers?.cli === undefined, 15_000, async () => 'the new cli leaves');

  // The first key again, under another name: the page knows whose key it is.
  await amy.page.evaluate(() => {
    /** @type {HTMLElement} */ (document.getElementById('banner')).hidden = true;
  });
  startCli(server, ROOM, 'mallory', ['--audio', 'sine:660'], { identity: firstKey });
  await safetyNumberOf(amy.page, 'mallory');
  const renamed = await tile(amy.page, 'mallory');
  console.log(`the page says: ${renamed.banner} / ${renamed.changed}`);
  assert.equal((await hushStats(amy.page)).peers.mallory.safety_number, number, 'the same key as the first cli');
  assert.match(renamed.banner ?? '', /"mallory" is using the key of "cli"/);
  assert.equal(renamed.flagged, true);
  assert.notEqual(renamed.badge, 'verified', 'verified as cli, not as mallory');
});
