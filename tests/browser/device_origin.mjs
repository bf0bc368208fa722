// Device origins in a real browser (Debian's chromium, playwright-core):
// alice opens her device from the web UI and lands on the device's own
// origin, where a device web app that uses absolute paths, its own cookie,
// localStorage and a WebSocket works; bob gets 404 for it; after alice
// signs out, her old pass no longer opens the origin.
//
// Env: API_URL, DEVICE_ID, DEVICE_ORIGIN, SCREENSHOT_DIR, CHROMIUM.
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const env = (k, d) => {
  const v = process.env[k] ?? d;
  if (v === undefined) throw new Error(`${k} is required`);
  return v;
};
const api = env('API_URL');
const deviceId = env('DEVICE_ID');
const deviceOrigin = env('DEVICE_ORIGIN');
const shots = env('SCREENSHOT_DIR');

async function signIn(page, user) {
  await page.goto(`${api}/`);
  for (let i = 0; i < 10 && !page.url().startsWith(api); i++) {
    if (await page.locator('input[name="login"]').count()) {
      await page.fill('input[name="login"]', user);
      await page.fill('input[name="password"]', 'any password');
    }
    await Promise.all([page.waitForNavigation(), page.locator('form [type="submit"]').first().click()]);
  }
  await page.waitForFunction((u) => document.querySelector('#me')?.textContent.includes(u), `${user}@example.com`);
}

const browser = await chromium.launch({ executablePath: env('CHROMIUM', '/usr/bin/chromium'), headless: true, args: ['--no-sandbox'] });
try {
  const alice = await browser.newContext();
  const page = await alice.newPage();
  page.setDefaultTimeout(15000);
  await signIn(page, 'alice');
  const row = page.locator(`tr[data-device="${deviceId}"]`);
  await row.locator('.badge.online').waitFor();
  const [device] = await Promise.all([page.waitForEvent('popup'), row.locator('a', { hasText: 'Open' }).click()]);
  await device.waitForLoadState();
  if (!device.url().startsWith(deviceOrigin + '/')) throw new Error(`"Open" landed on ${device.url()}, not ${deviceOrigin}`);
  console.log('landed on the device origin:', device.url());

  await device.goto(`${deviceOrigin}/app`);
  await device.waitForFunction(() => document.querySelector('#result')?.textContent !== 'running');
  const result = JSON.parse(await device.textContent('#result'));
  await device.screenshot({ path: join(shots, 'device-origin-app.png'), fullPage: true });
  for (const k of ['cookie', 'storage', 'ws']) {
    if (result[k] !== 'ok') throw new Error(`device app: ${k} failed: ${JSON.stringify(result)}`);
  }
  console.log('device app: absolute paths, cookie, localStorage and WebSocket work');

  // Bob: 404 for alice's device, from api-server and at the origin.
  const bobCtx = await browser.newContext();
  const bob = await bobCtx.newPage();
  bob.setDefaultTimeout(15000);
  await signIn(bob, 'bob');
  const direct = await bob.goto(`${api}/api/v1/devices/${deviceId}/open`);
  if (direct.status() !== 404) throw new Error(`bob's open answered ${direct.status()}`);
  const via = await bob.goto(`${deviceOrigin}/app`);
  if (via.status() !== 404) throw new Error(`bob at the device origin got ${via.status()} (${bob.url()})`);
  console.log('bob: 404');

  // Alice signs out: the device origin no longer lets her old pass in.
  const [out] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/api/auth/logout')),
    page.click('#logout'),
  ]);
  if (!out.ok()) throw new Error(`sign-out answered ${out.status()}`);
  // The pass the browser still holds is refused (the request is sent back
  // to api-server, which would have to sign her in again).
  const pass = (await alice.cookies(deviceOrigin)).find((c) => c.name === 'edgelink-pass');
  if (!pass) throw new Error('no pass cookie on the device origin');
  // (The development provider may sign her in again silently afterwards:
  // what matters is the first answer, to the old pass.)
  const resp = await device.goto(`${deviceOrigin}/app`);
  let first = resp.request();
  while (first.redirectedFrom()) first = first.redirectedFrom();
  const answer = await first.response();
  const where = answer.headers()['location'] ?? '';
  if (answer.status() !== 302 || !where.startsWith(`${api}/api/v1/devices/${deviceId}/open`)) {
    throw new Error(`after sign-out the old pass got ${answer.status()} ${where}`);
  }
  console.log('after sign-out: the old pass is refused, sent to', where.split('?')[0]);
} finally {
  await browser.close();
}
