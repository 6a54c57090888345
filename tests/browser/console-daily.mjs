// The console as a board team's daily tool (issue 15), in Debian's headless Chromium.
// Started by tests/e2e/console_daily.rs with a running farm, a project `board` (branches main
// and dev, builds that run a few seconds) and a slave; reads KILN_URL, KILN_TOKEN (the admin
// token, for the API calls a teammate would make meanwhile), KILN_USER, KILN_PASSWORD, KILN_OUT.
// Exits non-zero on the first failed step, after a screenshot into KILN_OUT.
// The console's CSP forbids the eval behind page.waitForFunction: conditions are polled from
// Node (`until`) or waited for with locators. No fixed sleeps.
// Notifications (issue 17): the farm sends webhooks to the receiver below (loopback is allowed by
// its `notify.webhook_allow`) and mail to a server nobody listens on (nothing here fails).
import { chromium } from 'playwright-core';
import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:http';
import { createHmac } from 'node:crypto';

const env = (k) => { const v = process.env[k]; if (!v) throw new Error(`${k} is not set`); return v; };
const URL = env('KILN_URL'), TOKEN = env('KILN_TOKEN'), USER = env('KILN_USER'), PASSWORD = env('KILN_PASSWORD'), OUT = env('KILN_OUT');
mkdirSync(OUT, { recursive: true });

// The webhook receiver: every request it gets, with its raw body, answered 204.
const hooks = [];
const receiver = createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    hooks.push({ path: req.url, method: req.method, headers: req.headers, raw: Buffer.concat(chunks) });
    res.statusCode = 204;
    res.end();
  });
});
await new Promise((r) => receiver.listen(0, '127.0.0.1', r));
const HOOK_URL = `http://127.0.0.1:${receiver.address().port}/hook`;
const HOOK_SECRET = 'a webhook secret the board team shares';

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
  step = 'the unsubscribe page works signed out and shows the server\'s refusal of a bogus token';
  await page.goto(URL + '/unsubscribe#not-a-token-kiln-made');
  await page.waitForSelector('#unsubscribe-button', { timeout: T });
  await titleIs('Unsubscribe · Kiln');
  await page.click('#unsubscribe-button');
  await page.waitForSelector('#unsubscribe-error', { timeout: T });
  if (new globalThis.URL(page.url()).pathname !== '/unsubscribe') throw new Error(`a signed-out visitor was sent to ${page.url()}`);
  await axeCheck('/unsubscribe (signed out, refused)');
  {
    // Refused for the token, not for the missing sign-in.
    const r = await fetch(URL + '/api/unsubscribe', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ token: 'not-a-token-kiln-made' }) });
    if (![400, 404].includes(r.status)) throw new Error(`POST /api/unsubscribe with a bogus token: HTTP ${r.status}: ${await r.text()}`);
  }

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
  step = 'the slaves table shows what each slave\'s machine offers';
  const tools = await page.textContent('#slaves tbody tr td.tools');
  const versions = await page.getAttribute('#slaves tbody tr td.tools', 'title');
  if (!tools.includes('script') || !tools.includes('free')) throw new Error(`the tools cell says ${tools}`);
  if (!/^git \S+$/m.test(versions || '')) throw new Error(`the tools cell's title lists no git version: ${versions}`);

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

  step = 'a succeeded build shows what its image carries: layout, apt sources, packages, compare buttons';
  for (const sel of ['#image-layout', '#apt-sources', '#packages > summary', '#compare-previous', '#compare-release']) {
    await page.waitForSelector(sel, { timeout: T });
  }
  await page.waitForSelector('#packages > summary:has-text("Packages (1)")', { timeout: T });
  await page.waitForSelector('#image-layout table.partitions td:has-text("rootfs")', { timeout: T });
  await page.waitForSelector('#image-layout a:has-text("board.img.bmap")', { timeout: T });
  await page.waitForSelector('#apt-sources-text:has-text("URIs: http://deb.example/debian")', { timeout: T });
  for (const b of ['#compare-previous', '#compare-release']) {
    // Disabled only with a title that says why.
    if (await page.isDisabled(b) && !(await page.getAttribute(b, 'title'))) throw new Error(`${b} is disabled without a reason`);
  }
  if (!(await page.isDisabled('#compare-previous'))) {
    await page.click('#compare-previous');
    await page.waitForSelector('#build-diff h4:has-text("Packages")', { timeout: T });
  }

  step = 'notifications: the add form refuses a missing address at its field';
  await page.goto(URL + '/projects/board');
  await page.waitForSelector('#project h1', { timeout: T });
  await page.click('#notifications > summary');
  await page.waitForSelector('#add-subscription', { timeout: T });
  await page.waitForSelector('#no-subscription, #subscription-list', { timeout: T });
  await page.check('#sub-kind-email');
  await page.click('#add-subscription-submit');
  await page.waitForSelector('#sub-email-error', { timeout: T });
  if ((await page.getAttribute('#sub-email', 'aria-invalid')) !== 'true') throw new Error('#sub-email is not aria-invalid');

  step = 'notifications: a mailing list is subscribed to failed builds only';
  await page.fill('#sub-email', 'board-team@example.org');
  for (const ev of ['release', 'fixed', 'succeeded', 'lost']) await page.uncheck(`#sub-event-${ev}`);
  if (await page.isChecked('#sub-event-slave_offline')) throw new Error('slave_offline is ticked by default');
  await page.check('#sub-event-failed');
  await page.click('#add-subscription-submit');
  await page.locator('#subscription-list tr[data-subscription]').filter({ hasText: 'board-team@example.org' }).waitFor({ timeout: T });

  step = 'notifications: the server refuses a webhook URL that is not http(s), at the field';
  await page.check('#sub-kind-webhook');
  await page.fill('#sub-webhook', 'ftp://127.0.0.1/hook');
  await page.fill('#sub-secret', HOOK_SECRET);
  await page.check('#sub-event-release');
  await page.uncheck('#sub-event-failed');
  await page.click('#add-subscription-submit');
  await page.waitForSelector('#sub-webhook-error', { timeout: T });
  if ((await page.getAttribute('#sub-webhook', 'aria-invalid')) !== 'true') throw new Error('#sub-webhook is not aria-invalid');

  step = 'notifications: a webhook with a secret is subscribed to releases only';
  await page.fill('#sub-webhook', HOOK_URL);
  await page.fill('#sub-secret', HOOK_SECRET);
  await page.click('#add-subscription-submit');
  await page.locator('#subscription-list tr[data-subscription]').filter({ hasText: HOOK_URL }).waitFor({ timeout: T });
  {
    const subs = await api('GET', '/api/projects/board/subscriptions');
    const mail = subs.find((s) => s.email === 'board-team@example.org');
    const hook = subs.find((s) => s.webhook === HOOK_URL);
    if (!mail || JSON.stringify(mail.events) !== '["failed"]') throw new Error(`the list's subscription: ${JSON.stringify(mail)}`);
    if (!hook || JSON.stringify(hook.events) !== '["release"]') throw new Error(`the webhook's subscription: ${JSON.stringify(hook)}`);
    if (JSON.stringify(subs).includes(HOOK_SECRET)) throw new Error('the webhook\'s secret is shown again');
  }
  await axeCheck('/projects/board (notifications)');

  step = 'notifications: the template for failed previews a rendered subject';
  await page.click('#tpl-failed-details > summary');
  await page.waitForSelector('#tpl-failed-subject', { timeout: T });
  await page.click('#tpl-failed-preview-button');
  await page.waitForSelector('#tpl-failed-preview-subject', { timeout: T });
  const rendered = (await page.textContent('#tpl-failed-preview-subject')).trim();
  if (!rendered || rendered.includes('{{')) throw new Error(`the preview's subject is "${rendered}"`);
  if (!(await page.textContent('#tpl-failed-preview-text')).trim()) throw new Error('the preview has no text');
  await axeCheck('/projects/board (template preview)');

  step = 'notifications: a template that does not render is refused at its field, with the line';
  await page.fill('#tpl-failed-body', 'Build {{ build.id }} failed.\n{{ build.no_such_field }}\n');
  await page.click('#tpl-failed-preview-button');
  await page.locator('#tpl-failed-body-error').filter({ hasText: 'line 2' }).waitFor({ timeout: T });
  if ((await page.getAttribute('#tpl-failed-body', 'aria-invalid')) !== 'true') throw new Error('#tpl-failed-body is not aria-invalid');
  await axeCheck('/projects/board (template refused)');

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

  step = 'notifications: the webhook receives the release builds, signed';
  await until(() => hooks.some((h) => h.headers['x-kiln-event'] === 'release'), 'a release webhook');
  const got = hooks.find((h) => h.headers['x-kiln-event'] === 'release');
  const sig = 'sha256=' + createHmac('sha256', HOOK_SECRET).update(got.raw).digest('hex');
  if (got.headers['x-kiln-signature'] !== sig) throw new Error(`signature ${got.headers['x-kiln-signature']}, expected ${sig}`);
  const sent = JSON.parse(got.raw.toString('utf8'));
  if (sent.event !== 'release' || sent.project !== 'board' || !sent.build || !['v1.0', 'v1.1'].includes(sent.build.release)) throw new Error(`webhook body: ${got.raw}`);
  if (String(sent.delivery) !== got.headers['x-kiln-delivery']) throw new Error(`X-Kiln-Delivery ${got.headers['x-kiln-delivery']}, body ${sent.delivery}`);
  if (got.path !== '/hook' || got.method !== 'POST') throw new Error(`${got.method} ${got.path}`);
  if (hooks.some((h) => h.headers['x-kiln-event'] !== 'release')) throw new Error(`a webhook for another event: ${hooks.map((h) => h.headers['x-kiln-event'])}`);

  step = 'notifications: the console lists the webhook\'s deliveries and redelivers one';
  const hookSub = (await api('GET', '/api/projects/board/subscriptions')).find((s) => s.webhook === HOOK_URL);
  await until(async () => (await api('GET', `/api/projects/board/subscriptions/${hookSub.id}/deliveries`))
    .some((d) => d.id === sent.delivery && d.state === 'delivered'), `delivery ${sent.delivery} marked delivered`);
  await page.goto(URL + '/projects/board');
  await page.waitForSelector('#project h1', { timeout: T });
  await page.click('#notifications > summary');
  const hookRow = page.locator('#subscription-list tr[data-subscription]').filter({ hasText: HOOK_URL });
  await hookRow.locator('button.deliveries-toggle').click();
  await page.waitForSelector(`tr[data-delivery="${sent.delivery}"][data-state=delivered]`, { timeout: T });
  await axeCheck('/projects/board (deliveries)');
  const before = hooks.length;
  await page.click(`button[aria-label="Redeliver delivery ${sent.delivery}"]`);
  await until(() => hooks.slice(before).some((h) => {
    const b = JSON.parse(h.raw.toString('utf8'));
    return b.event === 'release' && b.build && b.build.id === sent.build.id && b.delivery !== sent.delivery;
  }), 'the redelivered webhook');
  await page.locator(`tr[data-delivery]`).filter({ hasText: '(again)' }).first().waitFor({ timeout: T });

  step = 'axe-core finds no accessibility violation on any page';
  if (axeFound.length) throw new Error(`${axeFound.length} violation(s):\n${axeFound.join('\n')}`);

  if (errors.length) throw new Error(`page errors: ${errors.join('\n')}`);
  console.log('console-daily: all steps passed');
  receiver.close();
  await browser.close();
} catch (e) {
  console.error(`FAILED at step "${step}": ${e.stack || e}`);
  if (errors.length) console.error(`page errors: ${errors.join('\n')}`);
  try { await page.screenshot({ path: `${OUT}/failure.png`, fullPage: true }); } catch {}
  receiver.close();
  await browser.close();
  process.exit(1);
}
