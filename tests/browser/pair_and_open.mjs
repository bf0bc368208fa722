// The web UI end to end in a real browser (Debian's chromium, driven by
// playwright-core): sign in as alice at the development provider, create a
// pairing code, pair and start the demo agent with it, open the device's
// web service from the device list, and screenshot both pages.
//
// Then an API token and an intermediary, which runs a command on the
// test's OpenSSH server from the page.
//
// Env: API_URL, AGENT_BIN, WORK_DIR, ORIGIN_URL, EXPECT (text the device
// page must show), SCREENSHOT_DIR, CHROMIUM (default /usr/bin/chromium),
// SSH_PORT, SSH_USER, SSH_PASSWORD, SSH_HOST_KEY.
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const env = (k, d) => {
  const v = process.env[k] ?? d;
  if (v === undefined) throw new Error(`${k} is required`);
  return v;
};
const api = env('API_URL');
const agentBin = env('AGENT_BIN');
const work = env('WORK_DIR');
const shots = env('SCREENSHOT_DIR');
const agentEnv = {
  ...process.env,
  EDGELINK_AGENT__KEY_FILE: join(work, 'device.key'),
  EDGELINK_AGENT__STATE_FILE: join(work, 'state.json'),
  // Native commands: these command lines only.
  EDGELINK_AGENT__COMMANDS_ALLOW: '["/bin/echo *", "/bin/sleep *"]',
};

const browser = await chromium.launch({
  executablePath: env('CHROMIUM', '/usr/bin/chromium'),
  headless: true,
  args: ['--no-sandbox'],
});
let agent;
let proxy;
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(15000);
  await page.goto(`${api}/`);
  // Signed out: api-server sends us to the provider; sign in and consent.
  for (let i = 0; i < 10 && !page.url().startsWith(api); i++) {
    if (await page.locator('input[name="login"]').count()) {
      await page.fill('input[name="login"]', 'alice');
      await page.fill('input[name="password"]', 'any password');
    }
    await Promise.all([page.waitForNavigation(), page.locator('form [type="submit"]').first().click()]);
  }
  await page.waitForFunction(() => document.querySelector('#me')?.textContent.includes('alice@example.com'));
  console.log('signed in:', await page.textContent('#me'));

  await page.click('#pair');
  await page.waitForFunction(() => /^[A-Z0-9]{4}-[A-Z0-9]{4}$/.test(document.querySelector('#pair-code')?.textContent ?? ''));
  const code = (await page.textContent('#pair-code')).trim();
  console.log('pairing code:', code);

  const paired = spawnSync(agentBin, ['pair', '--server', api, '--code', code, '--name', 'demo device'], {
    env: agentEnv, encoding: 'utf8',
  });
  if (paired.status !== 0) throw new Error(`edge-agent pair failed: ${paired.stdout} ${paired.stderr}`);
  console.log(paired.stdout.trim());
  agent = spawn(agentBin, ['run', '--local-service', env('ORIGIN_URL')], { env: agentEnv, stdio: 'ignore' });

  // The list refreshes by itself; wait until the device shows online.
  const row = page.locator('tr', { hasText: 'demo device' });
  await row.locator('.badge.online').waitFor();
  await page.screenshot({ path: join(shots, 'devices.png'), fullPage: true });

  const [device] = await Promise.all([page.waitForEvent('popup'), row.locator('a', { hasText: 'Open' }).click()]);
  await device.waitForLoadState();
  const text = await device.textContent('body');
  if (!text.includes(env('EXPECT'))) throw new Error(`device page does not show the demo service: ${text}`);
  await device.screenshot({ path: join(shots, 'device.png'), fullPage: true });
  console.log('device page:', text.trim().slice(0, 80));

  // The device panel: latest values, the 24-hour chart drawn from the
  // agent's heartbeats, and the message queue with a message sent from
  // this page.
  const deviceId = await row.getAttribute('data-device');
  const sent = await page.evaluate(async (id) => {
    const r = await fetch('/api/v1/messages', { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ to: [id], type: 'browser_test', content: { hello: 1 }, priority: 'high' }) });
    return r.status;
  }, deviceId);
  if (sent !== 201) throw new Error(`sending a message answered ${sent}`);
  let drawn = 0;
  // The list redraws itself every 3 s; one click opens the panel, then the
  // panel is refreshed until the first heartbeat has reached the chart.
  await row.locator('button', { hasText: 'Details' }).click();
  await page.locator('#device:not([hidden])').waitFor();
  for (let i = 0; i < 40 && drawn === 0; i++) {
    drawn = await page.evaluate(async () => {
      await refreshDevice();
      const c = document.querySelector('#device-chart canvas');
      if (!c || !c.width) return 0;
      const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let ink = 0;
      for (let j = 3; j < px.length; j += 4) if (px[j] > 0) ink++;
      return ink;
    });
    if (drawn === 0) await page.waitForTimeout(500);
  }
  if (drawn === 0) throw new Error('the device chart was never drawn');
  await page.locator('#device-messages tr', { hasText: 'browser_test' }).waitFor();
  const latest = await page.textContent('#device-latest');
  if (!latest.includes('Memory') || latest.includes('never')) throw new Error(`no latest values: ${latest}`);
  console.log(`device panel: chart drawn (${drawn} pixels), message queue shown`);

  // A native command from the device panel: run by the agent, listed.
  await page.fill('#device-command', '/bin/echo native hello');
  await page.click('#device-command-form button[type="submit"]');
  await page.waitForFunction(() => /^(succeeded|failed|expired)/.test(document.querySelector('#device-command-output')?.textContent ?? ''));
  const native = await page.textContent('#device-command-output');
  if (!native.startsWith('succeeded (exit 0)') || !native.includes('native hello')) throw new Error(`native command: ${native}`);
  await page.locator('#device-commands tr', { hasText: '/bin/echo native hello' }).waitFor();
  await page.fill('#device-command', '/bin/cat /etc/shadow');
  await page.click('#device-command-form button[type="submit"]');
  await page.waitForFunction(() => /^(succeeded|failed|expired)/.test(document.querySelector('#device-command-output')?.textContent ?? ''));
  const refused = await page.textContent('#device-command-output');
  if (!refused.startsWith('failed') || !refused.includes('allowlist')) throw new Error(`refused command: ${refused}`);
  // A long one, stopped from its row in the history while it runs.
  await page.fill('#device-command', '/bin/sleep 120');
  await page.click('#device-command-form button[type="submit"]');
  const sleeping = page.locator('#device-commands tr', { hasText: '/bin/sleep 120' });
  await sleeping.locator('button', { hasText: 'running' }).waitFor({ timeout: 20000 });
  await sleeping.locator('button', { hasText: 'Cancel' }).click();
  await page.waitForFunction(() => /^canceled: the command was canceled/.test(document.querySelector('#device-command-output')?.textContent ?? ''), null, { timeout: 30000 });
  await page.screenshot({ path: join(shots, 'device-panel.png'), fullPage: true });
  console.log('device commands: allowed one ran, another refused, a running one canceled');

  // An API token: created on the page, shown once, works, revoked.
  await page.fill('#token-name', 'ci pipeline');
  await page.check('#token-scopes input[value="device:read"]');
  await page.click('#token-form button[type="submit"]');
  await page.locator('#token-secret').waitFor();
  const secret = (await page.textContent('#token-value')).trim();
  if (!/^elk_[0-9A-Za-z]{38}$/.test(secret)) throw new Error(`not a token: ${secret}`);
  const tokenRow = page.locator('#tokens tr', { hasText: 'ci pipeline' });
  await tokenRow.waitFor();
  const use = async () => (await fetch(`${api}/api/v1/devices`, { headers: { authorization: `Bearer ${secret}` } })).status;
  if (await use() !== 200) throw new Error('the new token does not work');
  await page.screenshot({ path: join(shots, 'tokens.png'), fullPage: true });
  page.once('dialog', (d) => d.accept());
  await tokenRow.locator('button', { hasText: 'Revoke' }).click();
  await tokenRow.waitFor({ state: 'detached' });
  const after = await use();
  if (after !== 401) throw new Error(`a revoked token answered ${after}`);
  console.log('token: created, used, revoked');

  // An intermediary: registered on the page (key shown once), started as
  // `edge-agent proxy` with what the page shows, listed as connected, and
  // a command run through it on the test's OpenSSH server from the page.
  await page.fill('#proxy-name', 'lab proxy');
  await page.click('#proxy-form button[type="submit"]');
  await page.locator('#proxy-secret:not([hidden])').waitFor();
  const shown = (await page.textContent('#proxy-value')).trim();
  const proxyId = /PROXY_ID=(prx_[0-9a-f]+)/.exec(shown)?.[1];
  const apiKey = /API_KEY=(elp_[A-Za-z0-9_-]+)/.exec(shown)?.[1];
  if (!proxyId || !apiKey) throw new Error(`no proxyId/apiKey shown: ${shown}`);
  proxy = spawn(agentBin, ['proxy'], {
    env: { ...process.env, SERVER_URL: api, PROXY_ID: proxyId, API_KEY: apiKey }, stdio: 'ignore',
  });
  const proxyRow = page.locator('#proxies tr', { hasText: 'lab proxy' });
  for (let i = 0; i < 40; i++) {
    await page.evaluate(() => loadProxies());
    if ((await proxyRow.locator('td').nth(3).textContent()) === 'yes') break;
    await page.waitForTimeout(250);
  }
  if ((await proxyRow.locator('td').nth(3).textContent()) !== 'yes') throw new Error('the intermediary never connected');
  await proxyRow.locator('button', { hasText: 'Run command' }).click();
  await page.fill('#command-host', '127.0.0.1');
  await page.fill('#command-port', env('SSH_PORT'));
  await page.fill('#command-user', env('SSH_USER'));
  await page.fill('#command-password', env('SSH_PASSWORD'));
  await page.fill('#command-hostkey', env('SSH_HOST_KEY'));
  await page.fill('#command-line', 'echo hello from $(hostname -s)');
  await page.click('#command-form button[type="submit"]');
  await page.waitForFunction(() => /^(succeeded|failed|expired)/.test(document.querySelector('#command-output')?.textContent ?? ''));
  const output = await page.textContent('#command-output');
  if (!output.startsWith('succeeded (exit 0)') || !output.includes('hello from')) throw new Error(`command output: ${output}`);
  await page.screenshot({ path: join(shots, 'intermediaries.png'), fullPage: true });
  console.log('intermediary: registered, connected, command run');
} finally {
  if (proxy) proxy.kill();
  if (agent) agent.kill();
  await browser.close();
}
