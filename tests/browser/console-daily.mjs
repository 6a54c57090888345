// The console as a board team's daily tool (issue 15), in Debian's headless Chromium.
// Started by tests/e2e/console_daily.rs with a running farm, a project `board` (branches main
// and dev, builds that run a few seconds) and a slave; reads KILN_URL, KILN_TOKEN (the admin
// token, for the API calls a teammate would make meanwhile), KILN_USER, KILN_PASSWORD, KILN_OUT.
// Exits non-zero on the first failed step, after a screenshot into KILN_OUT.
// The console's CSP forbids the eval behind page.waitForFunction: conditions are polled from
// Node (`until`) or waited for with locators. No fixed sleeps.
import { chromium } from 'playwright-core';
import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const env = (k) => { const v = process.env[k]; if (!v) throw new Error(`${k} is not set`); return v; };
const URL = env('KILN_URL'), TOKEN = env('KILN_TOKEN'), USER = env('KILN_USER'), PASSWORD = env('KILN_PASSWORD'), OUT = env('KILN_OUT');
mkdirSync(OUT, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
// Notifications are allowed, and every one the page makes is recorded (the init script runs
// through DevTools, outside the page's CSP).
await context.grantPermissions(['notifications'], { origin: URL });
const page = await context.newPage();
await page.addInitScript(() => {
  window.__notes = [];
  const N = window.Notification;
  if (N) window.Notification = class extends N { constructor(title, opts) { super(title, opts); window.__notes.push(title); } };
});
const errors = [];
page.on('pageerror', (e) => errors.push(String(e)));

let step = '';
const T = 60_000;
async function until(pred, what) {
  const deadline = Date.now() + T;
  let last;
  while (!(await Promise.resolve().then(pred).then((v) => { last = v; return v; }).catch((e) => { last = e; return false; }))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
// The API as a teammate's script would call it: the admin token.
async function api(method, path, body) {
  const r = await fetch(URL + path, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`${method} ${path}: HTTP ${r.status}: ${text}`);
  return text ? JSON.parse(text) : null;
}
async function titleIs(want) {
  let seen = '';
  try {
    await until(async () => (seen = await page.title()) === want, `the title "${want}"`);
  } catch (e) {
    throw new Error(`${e.message}; the title is "${seen}"`);
  }
}
// axe-core, the accessibility engine behind Lighthouse, run in the page (evaluated through
// DevTools, outside the page's CSP). Every page's violations are collected, then reported at once.
const AXE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');
const axeFound = [];
async function axeCheck(what) {
  if (!(await page.evaluate(() => typeof window.axe === 'object'))) await page.evaluate(AXE);
  const found = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return r.violations.map((v) => `${v.id} (${v.impact}): ${v.help}; ` +
      v.nodes.slice(0, 3).map((n) => `${n.target.join(' ')}: ${n.failureSummary.replace(/\s+/g, ' ')}`).join(' | '));
  });
  for (const f of found) axeFound.push(`${what}: ${f}`);
}
const focusedTag = () => page.evaluate(() => document.activeElement && document.activeElement.tagName);
const focusOnH1 = (what) => until(async () => (await focusedTag()) === 'H1', `focus on the h1 of ${what}`);

try {
  step = 'the login page has its title; "Skip to content" is the first thing a keyboard reaches';
  await page.goto(URL + '/login');
  await page.waitForSelector('#login', { timeout: T });
  await titleIs('Sign in · Kiln');
  await axeCheck('/login');
  await page.keyboard.press('Tab');
  const first = await page.evaluate(() => document.activeElement && document.activeElement.textContent);
  if (first !== 'Skip to content') throw new Error(`the first Tab reaches "${first}", not "Skip to content"`);

  step = 'sign in';
  await page.fill('#username', USER);
  await page.fill('#password', PASSWORD);
  await page.click('#login button[type=submit]');
  await page.waitForSelector('#dashboard', { timeout: T });

  step = 'every page has its own title';
  for (const [path, title, sel] of [
    ['/', 'Dashboard · Kiln', '#dashboard'],
    ['/projects', 'Projects · Kiln', 'main h1'],
    ['/projects/board', 'board · Kiln', '#project'],
    ['/slaves', 'Slaves · Kiln', '#slaves'],
    ['/teams', 'Teams · Kiln', 'main h1'],
    ['/tokens', 'API tokens · Kiln', 'main h1'],
    ['/users', 'Users · Kiln', 'main h1'],
    ['/audit', 'Audit log · Kiln', 'main h1'],
    ['/account', 'Your account · Kiln', 'main h1'],
    ['/no/such/page', 'Not found · Kiln', 'main h1'],
  ]) {
    await page.goto(URL + path);
    await page.waitForSelector(sel, { timeout: T });
    await titleIs(title);
    await axeCheck(path);
  }

  step = 'the slaves table names every column';
  await page.goto(URL + '/slaves');
  await page.waitForSelector('#slaves tbody tr', { timeout: T });
  const heads = await page.$$eval('#slaves th', (ths) => ths.map((t) => t.textContent.trim()));
  if (heads.some((h) => !h)) throw new Error(`a column without a heading: ${JSON.stringify(heads)}`);

  step = 'after a navigation, focus is on the new page\'s h1';
  await page.click('nav a[href="/projects"]');
  await page.waitForURL((u) => u.pathname === '/projects', { timeout: T });
  await focusOnH1('the projects page');
  await page.click('a[href="/projects/board"]');
  await page.waitForURL((u) => u.pathname === '/projects/board', { timeout: T });
  await focusOnH1('the project page');
  if ((await page.textContent('main h1')).trim() !== 'board') throw new Error('focus is on the wrong h1');
  await titleIs('board · Kiln');

  step = 'a field the server refuses is marked aria-invalid';
  await page.click('details.settings summary');
  await page.fill('#set-schedule', 'daily 25:00');
  await page.click('#settings button[type=submit]');
  await page.waitForSelector('#schedule-error', { timeout: T });
  if ((await page.getAttribute('#set-schedule', 'aria-invalid')) !== 'true') throw new Error('#set-schedule is not aria-invalid');

  step = 'Settings keeps what is typed while live updates arrive';
  await page.fill('#set-branch', 'dev');
  await page.fill('#set-schedule', 'daily 03:15');
  await page.fill('#set-keep_builds', '7');
  // Meanwhile a teammate changes another field, and a build is asked for: live events arrive,
  // the page reloads the project.
  await api('PATCH', '/api/projects/board', { timezone: 'Europe/Berlin' });
  const asked = await api('POST', '/api/projects/board/builds', {});
  await page.waitForSelector(`#project a[href="/builds/${asked.id}"]`, { timeout: T });
  await page.locator('#timezone-server').filter({ hasText: 'Europe/Berlin' }).waitFor({ timeout: T });
  for (const [id, want] of [['#set-branch', 'dev'], ['#set-schedule', 'daily 03:15'], ['#set-keep_builds', '7'], ['#set-timezone', '']]) {
    const v = await page.inputValue(id);
    if (v !== want) throw new Error(`${id} shows "${v}" after a live update, not "${want}"`);
  }

  step = 'Save stores exactly what was typed (and keeps the teammate\'s change)';
  await page.click('#settings button[type=submit]');
  await page.locator('#settings-saved').filter({ hasText: 'Saved.' }).waitFor({ timeout: T });
  const stored = await api('GET', '/api/projects/board');
  const want = { branch: 'dev', schedule: 'daily 03:15', keep_builds: 7, timezone: 'Europe/Berlin' };
  for (const [k, v] of Object.entries(want)) {
    if (stored[k] !== v) throw new Error(`the server has ${k}=${JSON.stringify(stored[k])}, not ${JSON.stringify(v)}`);
  }
  // Afterwards the form shows what the server stored, also after a reload.
  await until(async () => (await page.inputValue('#set-timezone')) === 'Europe/Berlin', 'the stored time zone in the form');
  await page.reload();
  await page.waitForSelector('#project h1', { timeout: T });
  await page.click('details.settings summary');
  for (const [id, v] of [['#set-branch', 'dev'], ['#set-schedule', 'daily 03:15'], ['#set-keep_builds', '7'], ['#set-timezone', 'Europe/Berlin']]) {
    await until(async () => (await page.inputValue(id)) === v, `${id} = ${v} after a reload`);
  }

  step = 'a running build\'s page: title with its state, elapsed time, then the end in the title and favicon';
  await page.click('#build-now');
  await page.waitForURL((u) => u.pathname.startsWith('/builds/'), { timeout: T });
  const id = new globalThis.URL(page.url()).pathname.split('/').pop();
  await focusOnH1('the build page');
  await page.click('#notify');
  await page.waitForSelector('#notify[aria-pressed=true]', { timeout: T });
  await until(async () => /^#\d+ (queued|dispatched|running) · board · Kiln$/.test(await page.title()), `a running title for #${id}`);
  await page.waitForSelector('h1 .badge[data-state=running]', { timeout: T });
  await page.waitForSelector('#elapsed', { timeout: T });
  const e0 = await page.textContent('#elapsed');
  await until(async () => { const l = page.locator('#elapsed'); return (await l.count()) > 0 && (await l.textContent()) !== e0; }, 'the elapsed time to tick');
  await page.waitForSelector('#build-announce[aria-live=polite]', { state: 'attached', timeout: T });
  await titleIs(`#${id} succeeded · board · Kiln`);
  await until(async () => (await page.getAttribute('link[rel=icon]', 'data-state')) === 'succeeded', 'the favicon of a succeeded build');
  const icon = await page.getAttribute('link[rel=icon]', 'href');
  if (!icon.startsWith('data:image/svg+xml,')) throw new Error(`favicon: ${icon}`);
  if ((await page.textContent('#build-announce')).trim() !== `Build #${id} succeeded`) throw new Error('the live region does not say it ended');
  await page.waitForSelector('#artifacts a.download', { timeout: T });
  await axeCheck('/builds/ID (succeeded)');
  await until(async () => (await page.evaluate(() => window.__notes)).includes(`Build #${id} succeeded`), 'the notification that it ended');

  step = 'sizes are human and every sha256 has a Copy button';
  await page.waitForSelector('#artifacts a.download', { timeout: T });
  const size = (await page.textContent('#artifacts tbody td:nth-child(2)')).trim();
  if (!/^\d+ B$|^\d+\.\d (KiB|MiB|GiB)$/.test(size)) throw new Error(`artifact size "${size}"`);
  const shas = await page.locator('#artifacts .sha').count();
  const copies = await page.locator('#artifacts button.copy').count();
  if (shas === 0 || shas !== copies) throw new Error(`${shas} sha256 and ${copies} Copy buttons`);

  step = 'the release form refuses an invalid name with the server\'s message';
  await page.goto(URL + '/projects/board');
  await page.waitForSelector('#project h1', { timeout: T });
  await page.click('#release-build');
  await page.waitForSelector('#release-form', { timeout: T });
  await page.click('details.settings summary');
  await axeCheck('/projects/board (release form and settings open)');
  await page.fill('#release-name', 'bad name!');
  // The recent good build's commit is offered.
  await until(async () => (await page.locator('#release-commit option').count()) >= 2, 'a good build\'s commit offered');
  await page.click('#release-submit');
  await page.locator('#release-error').filter({ hasText: 'is not valid' }).waitFor({ timeout: T });
  if ((await page.getAttribute('#release-name', 'aria-invalid')) !== 'true') throw new Error('the refused field is not aria-invalid');
  if (new globalThis.URL(page.url()).pathname !== '/projects/board') throw new Error('a refused release left the page');

  step = 'at 390 px, a wide table scrolls sideways with a visible cue';
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForSelector('#project table tbody tr', { timeout: T });
  const table = await page.$eval('#project table', (t) => {
    const cs = getComputedStyle(t);
    return { overflowX: cs.overflowX, bg: cs.backgroundImage, wide: t.scrollWidth > t.clientWidth, page: document.documentElement.scrollWidth };
  });
  if (table.overflowX !== 'auto' || !table.wide || !/gradient/.test(table.bg)) throw new Error(`history table at 390 px: ${JSON.stringify(table)}`);
  if (table.page > 390) throw new Error(`the page itself is ${table.page} px wide at 390 px`);
  await page.setViewportSize({ width: 1280, height: 900 });

  step = 'a good build is promoted to a release';
  await page.goto(`${URL}/builds/${id}`);
  await page.waitForSelector('#promote', { timeout: T });
  await page.fill('#promote-name', 'v1.0');
  await page.click('#promote button[type=submit]');
  await page.waitForURL((u) => u.pathname.startsWith('/builds/') && !u.pathname.endsWith(`/${id}`), { timeout: T });
  const release = await api('GET', new globalThis.URL(page.url()).pathname.replace('/builds/', '/api/builds/'));
  if (release.release !== 'v1.0') throw new Error(`promoted build: ${JSON.stringify(release)}`);

  step = 'the release form refuses a name used before, saying which build has it';
  await page.goto(URL + '/projects/board');
  await page.waitForSelector('#project h1', { timeout: T });
  await page.click('#release-build');
  await page.fill('#release-name', 'v1.0');
  await page.fill('#release-notes', 'the same name again');
  await page.click('#release-submit');
  await page.locator('#release-error').filter({ hasText: `already has a release named 'v1.0' (build ${release.id})` }).waitFor({ timeout: T });
  if ((await page.getAttribute('#release-name', 'aria-invalid')) !== 'true') throw new Error('the refused name is not aria-invalid');
  if (new globalThis.URL(page.url()).pathname !== '/projects/board') throw new Error('a refused release left the page');
  const releases = (await api('GET', '/api/builds?project=board')).filter((b) => b.release === 'v1.0');
  if (releases.length !== 1) throw new Error(`${releases.length} builds named release v1.0`);

  step = 'a release with notes: the build page shows them as typed';
  await page.fill('#release-name', 'v1.1');
  await page.fill('#release-notes', 'First factory image.\nFixes the eMMC timing.');
  await page.click('#release-submit');
  await page.waitForURL((u) => u.pathname.startsWith('/builds/'), { timeout: T });
  await page.waitForSelector('#notes', { timeout: T });
  const shown = await page.$eval('#notes', (d) => d.innerText);
  if (shown !== 'First factory image.\nFixes the eMMC timing.') throw new Error(`release notes shown as ${JSON.stringify(shown)}`);
  await axeCheck('/builds/ID (release)');

  step = 'axe-core finds no accessibility violation on any page';
  if (axeFound.length) throw new Error(`${axeFound.length} violation(s):\n${axeFound.join('\n')}`);

  if (errors.length) throw new Error(`page errors: ${errors.join('\n')}`);
  console.log('console-daily: all steps passed');
  await browser.close();
} catch (e) {
  console.error(`FAILED at step "${step}": ${e.stack || e}`);
  if (errors.length) console.error(`page errors: ${errors.join('\n')}`);
  try { await page.screenshot({ path: `${OUT}/failure.png`, fullPage: true }); } catch {}
  await browser.close();
  process.exit(1);
}
