// Signs in to the Kiln console through OpenID Connect in Debian's headless Chromium, as a person
// would: the console's login page, the provider's own sign-in form, and back to Kiln.
// Started by tests/e2e/oidc_browser.rs with a running farm and a running test provider
// (tests/browser/oidc-provider.mjs); reads:
//   KILN_URL             the console (the master's public_url)
//   OIDC_ISSUER          the provider's issuer (its pages are on that origin)
//   KILN_PROVIDER_LABEL  the provider's display_name, as the login page names it
//   KILN_MEMBER          the user name of an account in a mapped group ...
//   KILN_TEAM, KILN_ROLE ... and the team and role that group maps to
//   KILN_OUTSIDER        the user name of an account in no mapped group
//   KILN_OUT             where screenshots go
// Each person has their own browser context (a fresh profile: no cookies, at Kiln or at the
// provider). Exits non-zero on the first failed step, after a screenshot of the page.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';

const env = (k) => { const v = process.env[k]; if (!v) throw new Error(`${k} is not set`); return v; };
const URL = env('KILN_URL'), ISSUER = env('OIDC_ISSUER'), LABEL = env('KILN_PROVIDER_LABEL');
const MEMBER = env('KILN_MEMBER'), TEAM = env('KILN_TEAM'), ROLE = env('KILN_ROLE');
const OUTSIDER = env('KILN_OUTSIDER'), OUT = env('KILN_OUT');
mkdirSync(OUT, { recursive: true });
const KILN = new globalThis.URL(URL).origin, OP = new globalThis.URL(ISSUER).origin;
const T = 60_000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

let step = '';
let page = null;
const errors = [];
// Every page the browser was on, in order (main frame navigations), for the failure report.
const visited = [];

async function person() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('framenavigated', (f) => { if (f === page.mainFrame()) visited.push(f.url()); });
  return { context, page };
}
async function shoot(name) {
  try { await page.screenshot({ path: `${OUT}/${name}.png`, fullPage: true }); } catch {}
}
function fail(msg) { throw new Error(msg); }
// Polls `pred` from Node (the console's CSP forbids the eval behind page.waitForFunction).
async function until(pred, what) {
  const deadline = Date.now() + T;
  while (!(await pred().catch(() => false))) {
    if (Date.now() > deadline) fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
const at = (origin, path) => (u) => u.origin === origin && (typeof path === 'string' ? u.pathname === path : path.test(u.pathname));
// `GET /api/me` from inside the page, with its cookies (as the console itself asks).
const me = (p) => p.evaluate(async () => {
  const r = await fetch('/api/me', { headers: { Accept: 'application/json' } });
  return { status: r.status, body: r.ok ? await r.json() : await r.text() };
});

// Opens the console signed out, lands on the login page, picks the provider there and signs in
// on the provider's form as `account` (the button a person would press). Returns the page once
// the browser has left the provider for Kiln again.
async function signIn(p, account, start, name) {
  step = `${account}: the console sends someone signed out to the login page`;
  await p.goto(URL + start);
  await p.waitForURL(at(KILN, '/login'), { timeout: T });
  const link = p.getByRole('link', { name: `Sign in with ${LABEL}` });
  await link.waitFor({ timeout: T });
  const href = await link.getAttribute('href');
  if (!/^\/auth\/oidc\/[a-z0-9_-]+\/login\?return_to=/.test(href || '')) {
    fail(`the provider's link goes to "${href}", not Kiln's /auth/oidc/NAME/login?return_to=...`);
  }
  await shoot(`${name}-1-login`);

  step = `${account}: the provider's link leads to the provider's sign-in form`;
  await link.click();
  await p.waitForURL(at(OP, /^\/interaction\/[^/]+$/), { timeout: T });
  const button = p.getByRole('button', { name: `Sign in as ${account}` });
  await button.waitFor({ timeout: T });
  await shoot(`${name}-2-provider`);

  step = `${account}: the provider's form sends the browser back to Kiln`;
  await button.click();
  // Through the provider's redirects and Kiln's callback to a page of the console.
  await p.waitForURL((u) => u.origin === KILN && !u.pathname.startsWith('/auth/'), { timeout: T });
}

try {
  // ---- A member of a mapped group ------------------------------------------------------------
  const member = await person();
  await signIn(member.page, MEMBER, '/', 'member');

  step = `${MEMBER}: lands on the dashboard, signed in`;
  const landed = new globalThis.URL(page.url());
  if (landed.pathname !== '/' || landed.search !== '') {
    fail(`after signing in the browser is at ${page.url()}, not ${URL}/`);
  }
  await page.waitForSelector('#dashboard', { timeout: T });
  const who = page.locator('header #user-name');
  await who.waitFor({ timeout: T });
  const shownName = (await who.textContent()).trim();
  if (shownName !== MEMBER) fail(`the header names "${shownName}", not ${MEMBER}`);
  await shoot('member-3-dashboard');

  step = `${MEMBER}: the session is Kiln's HttpOnly cookie; the sign-in flow's cookie is gone`;
  const cookies = await member.context.cookies(URL);
  const session = cookies.find((c) => /^(__Host-)?kiln_session$/.test(c.name));
  if (!session) fail(`no session cookie for ${URL}: ${cookies.map((c) => c.name).join(', ')}`);
  if (!session.httpOnly) fail('the session cookie is readable by scripts (not HttpOnly)');
  if (session.sameSite !== 'Lax' && session.sameSite !== 'Strict') fail(`the session cookie is SameSite=${session.sameSite}`);
  const flow = cookies.find((c) => /^(__Host-)?kiln_login$/.test(c.name));
  if (flow) fail(`the sign-in flow's cookie ${flow.name} outlived the sign-in`);

  step = `${MEMBER}: GET /api/me from the page names the team of the mapped group`;
  const mine = await me(page);
  if (mine.status !== 200) fail(`GET /api/me: HTTP ${mine.status} ${JSON.stringify(mine.body)}`);
  const want = [{ team: TEAM, role: ROLE }];
  if (mine.body.username !== MEMBER || mine.body.via !== 'session' || mine.body.admin !== false
      || JSON.stringify(mine.body.teams) !== JSON.stringify(want)) {
    fail(`GET /api/me: ${JSON.stringify(mine.body)}; want ${MEMBER}, via session, no admin, teams ${JSON.stringify(want)}`);
  }

  step = `${MEMBER}: not an admin, so no admin pages in the menu`;
  for (const sel of ['nav a[href="/users"]', 'nav a[href="/audit"]']) {
    if (await page.locator(sel).count() !== 0) fail(`someone signed in through a ${ROLE} mapping is shown ${sel}`);
  }

  step = `${MEMBER}: the Account page shows the team and the role`;
  await page.click('header #user-name a');
  await page.waitForURL(at(KILN, '/account'), { timeout: T });
  await page.waitForSelector('#account', { timeout: T });
  const name = (await page.locator('#account-name').textContent({ timeout: T })).trim();
  if (name !== MEMBER) fail(`the Account page names "${name}", not ${MEMBER}`);
  const teamLink = page.locator(`#account dl.facts a[href="/teams/${TEAM}"]`);
  await teamLink.waitFor({ timeout: T });
  const teams = (await teamLink.locator('xpath=..').textContent()).replace(/\s+/g, ' ').trim();
  if (teams !== `${TEAM} (${ROLE})`) fail(`the Account page lists teams "${teams}", want "${TEAM} (${ROLE})"`);
  await shoot('member-4-account');

  step = `${MEMBER}: the session holds across a reload`;
  await page.reload();
  await page.waitForSelector('#account', { timeout: T });
  await until(async () => (await page.locator('#account-name').textContent()).trim() === MEMBER, `${MEMBER} still signed in after a reload`);
  if (new globalThis.URL(page.url()).pathname !== '/account') fail(`a reload led to ${page.url()}`);
  await member.context.close();

  // ---- Someone in no mapped group ------------------------------------------------------------
  const outsider = await person();
  await signIn(outsider.page, OUTSIDER, '/projects', 'outsider');

  step = `${OUTSIDER}: refused, back on the login page with the reason`;
  await page.waitForURL(at(KILN, '/login'), { timeout: T });
  const error = new globalThis.URL(page.url()).searchParams.get('error');
  if (!error) fail(`a refused sign-in ended at ${page.url()}, with no ?error=`);
  const refused = page.locator('#login-refused');
  await refused.waitFor({ timeout: T });
  const shown = (await refused.textContent()).trim();
  if (!shown.includes(error)) fail(`the login page shows "${shown}", not the refusal "${error}"`);
  if (!shown.startsWith('Sign-in refused') || !shown.includes(`'${OUTSIDER}'`) || !/no group/.test(shown)) {
    fail(`the refusal shown does not say that ${OUTSIDER} is in no admitted group: "${shown}"`);
  }
  await shoot('outsider-3-refused');

  step = `${OUTSIDER}: no session, and the provider is still offered to try again`;
  const theirs = await me(page);
  if (theirs.status !== 401) fail(`GET /api/me after a refusal: HTTP ${theirs.status} ${JSON.stringify(theirs.body)}`);
  const left = await outsider.context.cookies(URL);
  if (left.some((c) => /kiln_session$/.test(c.name) && c.value)) {
    fail(`a refused sign-in left a session cookie: ${left.map((c) => c.name).join(', ')}`);
  }
  if (await page.locator('header #user-name').count() !== 0) fail('the header names someone after a refusal');
  await page.getByRole('link', { name: `Sign in with ${LABEL}` }).waitFor({ timeout: T });
  await outsider.context.close();

  if (errors.length) fail(`uncaught errors in the page: ${errors.join('; ')}`);
  await browser.close();
  console.log('oidc browser test: all steps passed');
} catch (e) {
  console.error(`FAILED at step "${step}": ${e.stack || e}`);
  if (page) console.error(`the page is at ${page.url()}`);
  console.error(`pages visited:\n  ${visited.join('\n  ')}`);
  if (errors.length) console.error(`page errors: ${errors.join('\n')}`);
  await shoot('failure');
  await browser.close();
  process.exit(1);
}
