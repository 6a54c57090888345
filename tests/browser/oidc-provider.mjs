// A real OpenID Connect provider for Kiln's tests: the OpenID-certified `oidc-provider` (node),
// on loopback over plain HTTP, with one confidential client and a fixed list of accounts.
//
// Settings come from the environment or from `--name value` arguments (the argument wins):
//   OIDC_PORT            --port            port on 127.0.0.1 (default 0: any free one)
//   OIDC_CLIENT_ID       --client-id       the client Kiln is (required)
//   OIDC_CLIENT_SECRET   --client-secret   its secret (required)
//   OIDC_REDIRECT_URI    --redirect-uri    Kiln's callback, `{public_url}/auth/oidc/NAME/callback`;
//                                          several may be given separated by spaces (required)
//   OIDC_ACCOUNTS        --accounts        JSON list of accounts (required):
//        [{"id": "alice", "username": "alice", "email": "a@example.org", "groups": ["builders"]}]
//        (`id` is the `sub`; `username` is `preferred_username`, default the id)
//   OIDC_CLAIMS_IN_ID_TOKEN --claims-in-id-token  `1`: put the profile, email and groups claims in
//        the ID token as well (by default, as OpenID Connect Core says for the code flow, they
//        are only served by the userinfo endpoint)
//
// Prints `oidc-provider ready on ISSUER` once it accepts requests; logs each request it serves to
// stderr. The client must use PKCE (S256). Scopes: openid, profile, email, groups.
//
// Signing in: the provider sends the browser to `/interaction/UID`. With `login_hint=ID` in the
// authorization request that page signs in as account ID at once (303 onwards); otherwise it is a
// form with one button per account (`<button name="account" value="ID">`), posted to
// `/interaction/UID/login` (`account=ID`, form-encoded). Consent is given automatically (the
// grant covers what the client asked for): Kiln is a first-party client here.
import Provider from 'oidc-provider';
import { createServer } from 'node:http';
import { generateKeyPairSync } from 'node:crypto';

function setting(name, env, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  if (i >= 0 && i + 1 < process.argv.length) return process.argv[i + 1];
  const v = process.env[env];
  if (v !== undefined && v !== '') return v;
  if (fallback !== undefined) return fallback;
  console.error(`oidc-provider: ${env} (or --${name}) is not set`);
  process.exit(2);
}

const port = Number(setting('port', 'OIDC_PORT', '0'));
const clientId = setting('client-id', 'OIDC_CLIENT_ID');
const clientSecret = setting('client-secret', 'OIDC_CLIENT_SECRET');
const redirectUris = setting('redirect-uri', 'OIDC_REDIRECT_URI').split(/\s+/).filter(Boolean);
const claimsInIdToken = setting('claims-in-id-token', 'OIDC_CLAIMS_IN_ID_TOKEN', '0') === '1';
let accounts;
try {
  accounts = JSON.parse(setting('accounts', 'OIDC_ACCOUNTS'));
  if (!Array.isArray(accounts) || accounts.some((a) => typeof a.id !== 'string' || !a.id)) {
    throw new Error('a list of objects, each with a non-empty string "id"');
  }
} catch (e) {
  console.error(`oidc-provider: OIDC_ACCOUNTS must be JSON: ${e.message}`);
  process.exit(2);
}
const byId = new Map(accounts.map((a) => [a.id, a]));

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

// A signing key made for this run (no development keys with warnings). Each start-up step is
// logged, so that a start that stalls shows where.
console.error('oidc-provider: making the signing key');
const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test-key-1', use: 'sig' };

let provider; // made once the port (and so the issuer) is known

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 10_000) throw new Error('form too large');
  }
  return new URLSearchParams(body);
}

function page(res, status, html) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
  res.end(`<!DOCTYPE html><html><head><meta charset="utf-8"><title>Test provider</title></head><body>${html}</body></html>`);
}

async function finishLogin(req, res, accountId) {
  await provider.interactionFinished(req, res, { login: { accountId } }, { mergeWithLastSubmission: false });
}

// The login interaction (consent is granted by loadExistingGrant below).
async function interaction(req, res, url) {
  const m = url.pathname.match(/^\/interaction\/([^/]+)(\/login)?$/);
  if (!m) return page(res, 404, '<p>no such page</p>');
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== m[1]) return page(res, 400, '<p>this sign-in is not the one in progress</p>');
  if (details.prompt.name !== 'login') {
    // Nothing else is ever asked; say so rather than hang.
    return page(res, 400, `<p>unexpected prompt ${escape(details.prompt.name)}</p>`);
  }
  if (m[2] && req.method === 'POST') {
    const id = (await readForm(req)).get('account');
    if (!byId.has(id)) return page(res, 400, `<p>no account ${escape(id)}</p>`);
    return finishLogin(req, res, id);
  }
  const hint = details.params.login_hint;
  if (hint && byId.has(hint)) return finishLogin(req, res, hint);
  const buttons = accounts
    .map((a) => `<button type="submit" name="account" value="${escape(a.id)}">Sign in as ${escape(a.username || a.id)}</button>`)
    .join('\n');
  return page(res, 200, `<h1>Test provider</h1>
    <form method="post" action="/interaction/${escape(details.uid)}/login">${buttons}</form>`);
}

const server = createServer((req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1');
  console.error(`oidc-provider: ${req.method} ${url.pathname}`);
  if (url.pathname.startsWith('/interaction/')) {
    interaction(req, res, url).catch((e) => {
      console.error(`oidc-provider: interaction failed: ${e.stack || e}`);
      if (!res.headersSent) page(res, 500, `<p>${escape(e.message)}</p>`);
      else res.end();
    });
    return;
  }
  provider.callback()(req, res);
});

console.error('oidc-provider: listening');
server.listen(port, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  provider = new Provider(issuer, {
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: redirectUris,
      response_types: ['code'],
      grant_types: ['authorization_code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    jwks: { keys: [signingKey] },
    cookies: { keys: ['kiln-test-provider-cookie-key'] },
    scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
    claims: {
      openid: ['sub'],
      profile: ['preferred_username', 'name'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
    },
    conformIdTokenClaims: !claimsInIdToken,
    pkce: { required: () => true },
    features: { devInteractions: { enabled: false } },
    interactions: { url: (ctx, i) => `/interaction/${i.uid}` },
    async findAccount(ctx, id) {
      const a = byId.get(id);
      if (!a) return undefined;
      return {
        accountId: id,
        async claims() {
          const c = { sub: id, preferred_username: a.username || id, name: a.name || a.username || id };
          if (a.email) Object.assign(c, { email: a.email, email_verified: true });
          if (a.groups) c.groups = a.groups;
          return c;
        },
      };
    },
    // Consent without asking: a grant for all the client asked for.
    async loadExistingGrant(ctx) {
      const { Grant } = ctx.oidc.provider;
      const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      const grant = (grantId && await Grant.find(grantId))
        || new Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
      grant.addOIDCScope([...ctx.oidc.requestParamScopes].join(' '));
      await grant.save();
      return grant;
    },
    renderError(ctx, out) {
      ctx.type = 'html';
      ctx.body = `<!DOCTYPE html><html><body><h1>oops</h1><pre>${escape(JSON.stringify(out))}</pre></body></html>`;
    },
  });
  provider.on('server_error', (ctx, e) => console.error(`oidc-provider: server error: ${e.stack || e}`));
  for (const ev of ['grant.error', 'authorization.error', 'userinfo.error']) {
    provider.on(ev, (ctx, e) => console.error(`oidc-provider: ${ev}: ${e.message}${e.error_description ? `: ${e.error_description}` : ''}`));
  }
  console.log(`oidc-provider ready on ${issuer}`);
});
