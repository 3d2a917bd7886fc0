#!/usr/bin/env node
// Browser test of the dashboard: Debian's Chromium driven by playwright-core.
//
// Run by .ci/run after `npm ci --prefix interop` (which installs playwright-core; its own
// browser download is never used: Chromium comes from Debian, /usr/bin/chromium):
//     node interop/dashboard_test.mjs
//
// What it does:
//  1. Starts `apns-sim serve` with every port 0 on 127.0.0.1, fresh certificates in a temp
//     folder and one demo device, and reads the control API's address from its banner (as
//     interop/run.py does).
//  2. Launches Chromium headless with a new empty user data dir and opens the dashboard.
//  3. Waits for the event stream to be live and the demo device to be listed online with its
//     app and token.
//  4. Sends a push from the page (HTTP/2), and sees it reach the device on the page: its lane
//     ends "delivered" and the device's inbox lists it.
//  5. Sends one through the binary gateway, opens it, and sees its bytes with each field
//     labelled.
//  6. Saves a screenshot of the whole page to target/dashboard.png.
//  7. Adds the example fault from the page and removes it; takes the device offline, sees a
//     push stored, brings it online and sees it delivered; downloads an inbox entry as an
//     .apns file; adds a bad fault and sees the API's refusal shown in words; uninstalls the
//     app and sees it gone.
//  8. Starts a second simulator with --control-token and sees /?access_token=T work (assets,
//     requests and event stream) and / alone refused.
//  9. Runs `apns-sim tour --control-port 0` at a terminal (a pseudo-terminal from util-linux
//     `script`), opens its dashboard before step 1 and presses Enter step by step, checking
//     after each that the page shows live what the tour just did: the device and its token,
//     the delivered push, the not-installed push and the 410, the discarded and expired
//     ones, the rejected frame; then, at the end, that the tour lingers and stops on Enter.
//     Without `script`, it runs `tour --fast --linger` and checks the same once at the end.
//     A screenshot of the tour's dashboard goes to target/dashboard-tour.png.
//
// One line per check, then `N passed, M failed`; exit status 1 on any failure (and on a page
// error or an API error shown on the page), 2 when the whole run exceeds its time box. Only
// 127.0.0.1 is contacted; the simulator and the browser are stopped on every exit.
//
// Environment: APNS_SIM_BIN (default target/debug/apns-sim, built with `cargo build` if
// missing), CHROMIUM (default /usr/bin/chromium), DASHBOARD_SCREENSHOT (default
// target/dashboard.png), DASHBOARD_URL (test a dashboard already running there instead of
// starting a simulator), DASHBOARD_KEEP=1 keeps the temp folder with the simulator's log,
// SCRIPT (default /usr/bin/script, util-linux; a path that does not exist runs the tour
// check without a terminal, at the end only).

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.dirname(HERE);
const HOST = '127.0.0.1';
// Any single wait (the simulator's banner, an element on the page); a healthy run needs
// far less, but the CI machine is shared and slow.
const WAIT_MS = 30_000;
// The whole run, browser start included: past this it is killed and fails.
const TOTAL_MS = 180_000;
// Chromium as the machine's notes say it runs here: headless, as root (no sandbox), no GPU,
// and nothing that reaches out to the network (this machine's network is closed).
const CHROMIUM_FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
const VIEWPORT = { width: 1400, height: 1000 };

const children = [];
let browserContext = null;
let tmp = null;
let passed = 0;
let failed = 0;

function report(ok, name, text) {
  if (ok) passed += 1;
  else failed += 1;
  console.log(`${ok ? 'PASS' : 'FAIL'} ${name}: ${text}`);
}

async function cleanUp() {
  if (browserContext) {
    const context = browserContext;
    browserContext = null;
    await context.close().catch(() => {});
  }
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
  }
  if (tmp && !process.env.DASHBOARD_KEEP) fs.rmSync(tmp, { recursive: true, force: true });
}

class Failure extends Error {}

function simulatorBinary() {
  const bin = process.env.APNS_SIM_BIN || path.join(ROOT, 'target', 'debug', 'apns-sim');
  if (!fs.existsSync(bin)) {
    const built = spawnSync('cargo', ['build', '--quiet'], { cwd: ROOT, stdio: 'inherit', timeout: 1_800_000 });
    if (built.status !== 0 || !fs.existsSync(bin)) throw new Failure(`no simulator binary at ${bin}`);
  }
  return bin;
}

/**
 * Starts `apns-sim serve` on port 0 everywhere, with its certificates and log under
 * `name` in the temp folder and `extra` arguments; resolves to the dashboard's URL.
 */
function startSimulator(bin, name = 'serve', extra = []) {
  const log = fs.openSync(path.join(tmp, `${name}.log`), 'a');
  const sim = spawn(bin, [
    'serve', '--certs', path.join(tmp, `${name}-certs`), '--bind', HOST,
    '--gateway-port', '0', '--feedback-port', '0', '--http2-port', '0',
    '--device-port', '0', '--control-port', '0', '--devices', '1',
    // In memory: the default state folder is `state/` beside the certificates, the same
    // for both simulators this test runs at once, and a state folder has one owner.
    '--in-memory', ...extra,
  ], { cwd: tmp, stdio: ['ignore', 'pipe', log] });
  children.push(sim);
  // The banner of `serve` (src/cli/serve.rs): "  control API      ADDR", …, then the demo
  // devices and "push to the first one …" once they are online.
  const seen = [];
  return new Promise((resolve, reject) => {
    let control = null;
    const timer = setTimeout(() => reject(new Failure(
      `apns-sim serve: no banner within ${WAIT_MS / 1000} s; its output: ${seen.slice(-8).join(' | ')}`)), WAIT_MS);
    const lines = readline.createInterface({ input: sim.stdout });
    lines.on('line', (line) => {
      seen.push(line);
      const m = /^\s+control API\s+(\S+)/.exec(line); // " (bearer token required)" may follow
      if (m) control = m[1];
      if (line.startsWith('push to the first one')) {
        clearTimeout(timer);
        if (!control) reject(new Failure('serve printed no control API address'));
        else if (!control.startsWith(`${HOST}:`)) reject(new Failure(`the control API is on ${control}, not ${HOST}`));
        else resolve(`http://${control}/`);
      }
    });
    sim.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Failure(`apns-sim serve exited (${signal || code}) before its banner; its output: ${seen.slice(-8).join(' | ')}`));
    });
  });
}

async function launchBrowser() {
  let chromium;
  try {
    ({ chromium } = await import('playwright-core'));
  } catch (e) {
    throw new Failure(`playwright-core is not installed (run \`npm ci --prefix interop\`): ${e.message}`);
  }
  const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
  if (!fs.existsSync(executablePath)) {
    throw new Failure(`no Chromium at ${executablePath} (apt-get install -y chromium)`);
  }
  // A persistent context on a new, empty folder: the user data dir is ours and starts blank.
  const userDataDir = fs.mkdtempSync(path.join(tmp, 'chromium-profile-'));
  browserContext = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    args: CHROMIUM_FLAGS,
    viewport: VIEWPORT,
    timeout: WAIT_MS,
  });
  return browserContext;
}

async function main() {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'apns-sim-dashboard-'));
  if (process.env.DASHBOARD_KEEP) console.log(`dashboard test: keeping ${tmp}`);
  const screenshot = process.env.DASHBOARD_SCREENSHOT || path.join(ROOT, 'target', 'dashboard.png');

  let dashboard;
  let page;
  let bin;
  let context;
  const problems = []; // page errors and failed API calls, reported at the end
  try {
    bin = process.env.DASHBOARD_URL ? null : simulatorBinary();
    dashboard = process.env.DASHBOARD_URL || await startSimulator(bin);
    context = await launchBrowser();
    page = context.pages()[0] || await context.newPage();
    page.setDefaultTimeout(WAIT_MS);
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
    page.on('response', (r) => {
      if (r.status() >= 400) problems.push(`${r.request().method()} ${r.url()} answered ${r.status()}`);
    });
    const loaded = await page.goto(dashboard, { waitUntil: 'domcontentloaded' });
    if (!loaded || loaded.status() !== 200) throw new Failure(`GET ${dashboard} answered ${loaded && loaded.status()}`);
  } catch (e) {
    report(false, 'dashboard loads', `setup failed: ${e.message}`);
    return;
  }
  report(true, 'dashboard loads', dashboard);

  const check = async (name, fn) => {
    try {
      report(true, name, await fn());
      return true;
    } catch (e) {
      report(false, name, e.message.split('\n')[0]);
      return false;
    }
  };

  await check('the event stream is live', async () => {
    await page.locator('[data-testid=stream-status][data-state=ok]').waitFor();
    return await page.locator('[data-testid=stream-status]').textContent();
  });

  const ready = await check('the demo device is listed online with its app and token', async () => {
    const device = page.locator('[data-testid=device][data-online=true]').first();
    await device.waitFor();
    const app = device.locator('[data-testid=app]').first();
    await app.waitFor();
    const serial = await device.getAttribute('data-serial');
    const token = (await app.locator('code.token').textContent()).trim();
    if (!/^[0-9a-f]{64}$/.test(token)) throw new Error(`the app's token is ${JSON.stringify(token)}`);
    return `${serial}, ${await app.getAttribute('data-app')} ${token.slice(0, 8)}…`;
  });

  /** Sends a push from the page's form through `api`; resolves to its apns-id. */
  const pushFromPage = async (api) => {
    await page.locator('[data-testid=push-api]').selectOption(api);
    const result = page.locator('[data-testid=push-result]');
    const before = await result.getAttribute('data-apns-id');
    await page.locator('[data-testid=push-send]').click();
    await page.waitForFunction(
      ([prev]) => {
        const r = document.querySelector('[data-testid=push-result]');
        return r.dataset.apnsId && r.dataset.apnsId !== prev;
      },
      [before],
      { timeout: WAIT_MS },
    ).catch(async () => {
      const errors = await page.locator('[data-testid=error]').allTextContents();
      throw new Error(`no answer on the page; it says: ${(await result.textContent()) || '(nothing)'}`
        + `${errors.length ? `; errors: ${errors.join(' / ')}` : ''}`);
    });
    const text = await result.textContent();
    if (!(await result.getAttribute('class')).includes('ok')) throw new Error(`not accepted: ${text}`);
    return { apnsId: await result.getAttribute('data-apns-id'), text };
  };

  /** Waits until the lane of `apnsId` ends delivered, and the device's inbox lists it. */
  const delivered = async (apnsId) => {
    const lane = page.locator(`[data-testid=notification][data-apns-id="${apnsId}"]`);
    await lane.waitFor().catch(() => { throw new Error(`no lane for ${apnsId} on the page`); });
    await page.locator(`[data-testid=notification][data-apns-id="${apnsId}"][data-outcome=acknowledged]`)
      .waitFor()
      .catch(async () => {
        throw new Error(`the lane of ${apnsId} ends ${await lane.getAttribute('data-outcome')}: `
          + `${await lane.locator('[data-testid=notification-outcome]').textContent()}`);
      });
    const end = await lane.locator('[data-testid=step-end]').getAttribute('data-state');
    if (end !== 'ok') throw new Error(`the lane's last step is ${end}, not ok`);
    await page.locator(`[data-testid=inbox-entry][data-apns-id="${apnsId}"]`).waitFor()
      .catch(() => { throw new Error(`the device's inbox on the page does not list ${apnsId}`); });
    return `${apnsId}: ${await lane.locator('[data-testid=notification-outcome]').textContent()}; in the inbox`;
  };

  if (ready) {
    let http2 = null;
    await check('a push sent from the page (HTTP/2) is answered 200', async () => {
      http2 = await pushFromPage('http2');
      if (!http2.text.includes('HTTP 200')) throw new Error(http2.text);
      return http2.text;
    });
    if (http2) await check('it reaches the device on the page (lane delivered, inbox lists it)', () => delivered(http2.apnsId));

    let binary = null;
    await check('a push sent from the page through the binary gateway is accepted', async () => {
      binary = await pushFromPage('binary');
      return binary.text;
    });
    if (binary) {
      await check('it reaches the device on the page too', () => delivered(binary.apnsId));
      await check('clicking it shows its bytes with each field labelled', async () => {
        await page.locator(`[data-testid=notification][data-apns-id="${binary.apnsId}"] button.lane`).click();
        const detail = page.locator('[data-testid=notification-detail]');
        await detail.locator('[data-field=apns_id]').waitFor();
        const frame = detail.locator('[data-testid=frame]');
        await frame.waitFor().catch(() => { throw new Error('the detail shows no bytes'); });
        await frame.locator('[data-testid=frame-fields] tbody tr:nth-child(3)').waitFor()
          .catch(() => { throw new Error('the bytes are shown without their fields labelled'); });
        const names = await frame.locator('[data-testid=frame-fields] tbody tr td:nth-child(4)').allTextContents();
        if (names.length < 3) throw new Error(`only ${names.length} labelled fields: ${names.join(', ')}`);
        return `${await frame.locator('.byte').count()} bytes; fields ${names.join(', ')}`;
      });
    }
  }

  await check(`a screenshot is saved to ${path.relative(ROOT, screenshot)}`, async () => {
    fs.mkdirSync(path.dirname(screenshot), { recursive: true });
    await page.screenshot({ path: screenshot, fullPage: true });
    return `${fs.statSync(screenshot).size} bytes`;
  });

  if (ready) {
    await check('a fault added from the page (the example as given) is listed, then removed', async () => {
      await page.locator('[data-testid=fault-add]').click();
      const fault = page.locator('[data-testid=fault]');
      await fault.first().waitFor().catch(() => { throw new Error('the fault is not listed'); });
      const id = await fault.first().getAttribute('data-fault-id');
      await fault.first().getByRole('button', { name: /Remove fault/ }).click();
      await page.locator('[data-testid=fault]').first().waitFor({ state: 'detached' })
        .catch(() => { throw new Error(`fault ${id} is still listed after Remove`); });
      return `${id} added and removed`;
    });

    await check('offline from the page: a push is stored, and delivered when back online', async () => {
      const device = page.locator('[data-testid=device][data-online=true]').first();
      const serial = await device.getAttribute('data-serial');
      const card = page.locator(`[data-testid=device][data-serial="${serial}"]`);
      await card.locator('[data-testid=device-offline]').click();
      await page.locator(`[data-testid=device][data-serial="${serial}"][data-online=false]`).waitFor()
        .catch(() => { throw new Error(`${serial} is not shown offline`); });
      const { apnsId } = await pushFromPage('http2');
      const lane = (outcome) => page.locator(
        `[data-testid=notification][data-apns-id="${apnsId}"][data-outcome=${outcome}]`);
      await lane('stored').waitFor().catch(() => { throw new Error(`${apnsId} is not shown stored`); });
      await card.locator('[data-testid=device-online]').click();
      await delivered(apnsId);
      return `${serial}: ${apnsId} stored, then delivered`;
    });
  }

  if (ready) {
    await check('an inbox entry downloads as an .apns file with its Simulator Target Bundle', async () => {
      const entry = page.locator('[data-testid=inbox-entry]').first();
      const [download] = await Promise.all([
        page.waitForEvent('download', { timeout: WAIT_MS }),
        entry.locator('[data-testid=download-apns]').click(),
      ]);
      const saved = path.join(tmp, 'download.apns');
      await download.saveAs(saved);
      const file = JSON.parse(fs.readFileSync(saved, 'utf8'));
      if (!file.aps || typeof file['Simulator Target Bundle'] !== 'string') {
        throw new Error(`not an .apns file: ${JSON.stringify(file)}`);
      }
      return `${download.suggestedFilename()}: aps and "Simulator Target Bundle": "${file['Simulator Target Bundle']}"`;
    });
  }

  // An API refusal is shown on the page in the API's own words (a 400 naming the field).
  const refused = await check('an API error is shown on the page in words', async () => {
    const before = problems.length;
    await page.locator('[data-testid=fault-spec]').fill('{"on": "nowhere"}');
    await page.locator('[data-testid=fault-add]').click();
    const error = page.locator('[data-testid=error]').last();
    await error.waitFor().catch(() => { throw new Error('POST /v1/faults with a bad "on" showed no error'); });
    const text = (await error.locator('span').textContent()).trim();
    if (!/answered 4\d\d: \S/.test(text)) throw new Error(`the error does not say why: ${text}`);
    // That refusal was the point: not a problem of the page.
    problems.splice(before, problems.length - before,
      ...problems.slice(before).filter((p) => !/\/v1\/faults answered 4\d\d|status of 4\d\d/.test(p)));
    await error.getByRole('button', { name: 'Dismiss' }).click();
    return text;
  });
  if (!refused) problems.length = 0; // reported already; keep the last check about the rest

  if (ready) {
    await check('an app uninstalled from the page leaves its device', async () => {
      const app = page.locator('[data-testid=device][data-online=true] [data-testid=app]').first();
      const name = await app.getAttribute('data-app');
      const kind = await app.getAttribute('data-kind');
      const serial = await page.locator('[data-testid=device][data-online=true]').first().getAttribute('data-serial');
      await app.locator('[data-testid=app-uninstall]').click();
      await page.locator(`[data-testid=device][data-serial="${serial}"] [data-testid=app][data-app="${name}"][data-kind="${kind}"]`)
        .waitFor({ state: 'detached' })
        .catch(() => { throw new Error(`${name} (${kind}) is still listed on ${serial}`); });
      return `${name} (${kind}) uninstalled from ${serial}`;
    });
  }

  const shown = await page.locator('[data-testid=error]').allTextContents().catch(() => []);
  report(problems.length === 0 && shown.length === 0, 'no page error, no failed API call',
    [...problems, ...shown.map((s) => `shown: ${s}`)].join(' | ') || 'none');

  // With --control-token, the page opened as /?access_token=T works: its assets load, its
  // requests carry the token, its event stream goes live. Without the token, no page.
  if (bin) {
    await check('with --control-token, /?access_token= opens a working page (and / alone does not)', async () => {
      const token = `dash-${process.pid}-${Date.now()}`;
      const guarded = await startSimulator(bin, 'serve-token', ['--control-token', token]);
      const bare = await fetch(guarded);
      if (bare.status !== 401) throw new Error(`GET / without the token answered ${bare.status}, not 401`);
      const second = await context.newPage();
      const errors = [];
      second.on('pageerror', (e) => errors.push(e.message));
      second.on('response', (r) => { if (r.status() >= 400) errors.push(`${r.url()} answered ${r.status()}`); });
      await second.goto(`${guarded}?access_token=${encodeURIComponent(token)}`);
      await second.locator('[data-testid=stream-status][data-state=ok]').waitFor({ timeout: WAIT_MS })
        .catch(() => { throw new Error(`the event stream did not go live (${errors.join('; ') || 'no error seen'})`); });
      await second.locator('[data-testid=device][data-online=true] [data-testid=app]').first().waitFor({ timeout: WAIT_MS })
        .catch(() => { throw new Error(`no device listed (${errors.join('; ') || 'no error seen'})`); });
      if (errors.length) throw new Error(errors.join('; '));
      await second.close();
      return 'stream live, devices listed, no refusal';
    });
    await tourOnTheDashboard(bin, context, check);
  }
}

/** `text` quoted for /bin/sh. */
function shellQuote(text) {
  return `'${String(text).replace(/'/g, `'\\''`)}'`;
}

/**
 * Runs `apns-sim tour` on port 0 everywhere and checks that its dashboard shows its steps.
 * Live: at a pseudo-terminal the tour waits for Enter before each step, so the page is
 * opened first and checked after each step. `check` reports each check.
 */
async function tourOnTheDashboard(bin, context, check) {
  const script = process.env.SCRIPT || '/usr/bin/script';
  const live = fs.existsSync(script);
  const log = fs.openSync(path.join(tmp, 'tour.log'), 'a');
  const tour = live
    ? spawn(script, ['-qfec', `${shellQuote(bin)} tour --control-port 0`, '/dev/null'],
      { cwd: tmp, stdio: ['pipe', 'pipe', log] })
    : spawn(bin, ['tour', '--fast', '--linger', '--control-port', '0'],
      { cwd: tmp, stdio: ['pipe', 'pipe', log] });
  children.push(tour);
  let output = '';
  let cursor = 0;
  let exited = null;
  const wake = new Set();
  tour.stdout.on('data', (d) => { output += d.toString(); for (const w of wake) w(); });
  tour.on('exit', (code, signal) => { exited = signal || code; for (const w of wake) w(); });
  // Resolves to the first match of `re` in the output after the cursor, and moves the cursor
  // past it.
  const next = (re) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => { wake.delete(look); reject(new Error(
      `the tour did not print ${re} within ${WAIT_MS / 1000} s; it ended: ${JSON.stringify(output.slice(-300))}`)); }, WAIT_MS);
    function look() {
      const m = re.exec(output.slice(cursor));
      if (m) {
        cursor += m.index + m[0].length;
        clearTimeout(timer);
        wake.delete(look);
        resolve(m);
      } else if (exited !== null) {
        clearTimeout(timer);
        wake.delete(look);
        reject(new Error(`the tour exited (${exited}) before printing ${re}: ${JSON.stringify(output.slice(-300))}`));
      }
    }
    wake.add(look);
    look();
  });
  const exit = () => new Promise((resolve) => {
    if (exited !== null) resolve(exited);
    else tour.on('exit', (code, signal) => resolve(signal || code));
  });

  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  const errors = [];
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  page.on('response', (r) => { if (r.status() >= 400) errors.push(`${r.url()} answered ${r.status()}`); });
  const lanes = (api, outcome) => page.locator(
    `[data-testid=notification][data-api=${api}][data-outcome=${outcome}]`);
  const atLeast = async (locator, n, what) => {
    await locator.nth(n - 1).waitFor().catch(async () => {
      throw new Error(`${await locator.count()} ${what} on the page, not ${n}`);
    });
    return `${await locator.count()} ${what}`;
  };
  const tokenShown = async (token) => {
    const app = page.locator('[data-testid=device][data-serial=TOUR-PHONE][data-online=true] '
      + '[data-testid=app][data-app="com.example.app"]');
    await page.waitForFunction(([t]) => [...document.querySelectorAll(
      '[data-testid=device][data-serial=TOUR-PHONE][data-online=true] [data-testid=app] code.token')]
      .some((c) => c.textContent.trim() === t), [token], { timeout: WAIT_MS })
      .catch(async () => {
        const shown = await app.locator('code.token').allTextContents().catch(() => []);
        throw new Error(`TOUR-PHONE is not shown online with ${token.slice(0, 8)}… (shown: ${shown.join(', ') || 'nothing'})`);
      });
    return `TOUR-PHONE online, com.example.app ${token.slice(0, 8)}…`;
  };
  // What each step leaves on the page (checked right after the step when live).
  const minted = () => {
    const all = [...output.matchAll(/minted the device token ([0-9a-f]{64})/g)];
    if (!all.length) throw new Error('the tour printed no token');
    return all[all.length - 1][1];
  };
  const steps = [
    ['step 1: the device and its token', () => tokenShown(minted())],
    ['step 2: the binary push delivered', () => atLeast(lanes('binary', 'acknowledged'), 1, 'delivered binary pushes')],
    ['step 3: the push reported not installed', () => atLeast(lanes('binary', 'not_installed'), 1, 'not-installed pushes')],
    ['step 3: the HTTP/2 push answered 410 Unregistered', () => atLeast(lanes('http2', 'unregistered'), 1, 'unregistered HTTP/2 pushes')],
    ['step 3: the reinstalled app\'s new token', () => tokenShown(minted())],
    ['step 4: the expiry-0 push discarded', () => atLeast(lanes('binary', 'discarded'), 1, 'discarded pushes')],
    ['step 4: the stored push delivered on return', () => atLeast(lanes('binary', 'acknowledged'), 2, 'delivered binary pushes')],
    ['step 4: the stored push whose expiry passed expired', () => atLeast(lanes('binary', 'expired'), 1, 'expired pushes')],
    ['step 5: the bad frame rejected', () => atLeast(lanes('binary', 'rejected'), 1, 'rejected frames')],
    ['step 5: the first of the batch delivered', () => atLeast(lanes('binary', 'acknowledged'), 3, 'delivered binary pushes')],
  ];
  const stepOf = (name) => Number(/^step (\d)/.exec(name)[1]);
  const mode = live ? 'live' : 'at the end';

  try {
    const [, dashboard] = await next(/dashboard: (http:\/\/127\.0\.0\.1:\d+\/)/);
    if (live) await next(/Press Enter to go on/);
    else await next(/The simulator stays up/);
    const loaded = await page.goto(dashboard, { waitUntil: 'domcontentloaded' });
    if (!loaded || loaded.status() !== 200) throw new Error(`GET ${dashboard} answered ${loaded && loaded.status()}`);
    await page.locator('[data-testid=stream-status][data-state=ok]').waitFor();
    report(true, `tour: its dashboard is open ${live ? 'before step 1' : 'after the last step'}`, dashboard);
  } catch (e) {
    report(false, 'tour: its dashboard opens', e.message.split('\n')[0]);
    return;
  }
  if (live) {
    await check('tour: before step 1, the page shows no device yet', async () => {
      const n = await page.locator('[data-testid=device]').count();
      if (n !== 0) throw new Error(`${n} devices listed before the tour did anything`);
      return 'no device';
    });
    for (let step = 1; step <= 5; step += 1) {
      tour.stdin.write('\n');
      const done = await next(new RegExp(`Step ${step} done\\.`)).then(() => true, (e) => {
        report(false, `tour: step ${step} runs`, e.message.split('\n')[0]);
        return false;
      });
      if (!done) return;
      for (const [name, fn] of steps.filter(([n]) => stepOf(n) === step)) await check(`tour (${mode}): ${name}`, fn);
      if (step < 5) await next(/Press Enter to go on/).catch(() => {});
    }
    await check('tour: at a terminal it offers to keep the simulator up', async () => {
      await next(/The simulator stays up/);
      return 'offered';
    });
  } else {
    for (const [name, fn] of steps) await check(`tour (${mode}): ${name}`, fn);
  }
  const tourShot = path.join(path.dirname(process.env.DASHBOARD_SCREENSHOT || path.join(ROOT, 'target', 'dashboard.png')),
    'dashboard-tour.png');
  await check(`tour: a screenshot of its dashboard is saved to ${path.relative(ROOT, tourShot)}`, async () => {
    await page.screenshot({ path: tourShot, fullPage: true });
    return `${fs.statSync(tourShot).size} bytes`;
  });
  await check('tour: the page is none the worse (no page error, no failed request)', async () => {
    if (errors.length) throw new Error(errors.join(' | '));
    return 'none';
  });
  await check('tour: Enter stops the lingering tour, which exits 0', async () => {
    if (live) tour.stdin.write('\n');
    else tour.stdin.end();
    const code = await Promise.race([exit(), new Promise((r) => setTimeout(() => r('still running'), WAIT_MS))]);
    if (code !== 0) throw new Error(`the tour ended with ${code}`);
    return 'exit 0';
  });
  await page.close();
}

const deadline = setTimeout(async () => {
  report(false, 'time box', `the test did not finish within ${TOTAL_MS / 1000} s`);
  await cleanUp();
  process.exit(2);
}, TOTAL_MS);

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, async () => {
    await cleanUp();
    process.exit(128 + (signal === 'SIGINT' ? 2 : 15));
  });
}

try {
  await main();
} catch (e) {
  report(false, 'dashboard test', `unexpected error: ${e.stack || e}`);
} finally {
  clearTimeout(deadline);
  await cleanUp();
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 && passed > 0 ? 0 : 1);
