//! OpenID Connect sign-in (authorization code flow with PKCE, state and nonce) for each
//! `[[auth.oidc]]` provider; the master is the client, the browser never sees a token.
//!
//! - At start-up [`discover`] reads every provider's discovery document and keys (an error names
//!   the provider) and its client secret (`client_secret_file`).
//! - `GET /auth/oidc/{name}/login?return_to=/path`: a fresh `state` (also the key of the flow kept
//!   in the database and the value of the flow cookie), `nonce` and PKCE verifier (S256); 303 to
//!   the provider.
//! - `GET /auth/oidc/{name}/callback?code&state`: the state must be the flow cookie's and the
//!   flow must still be there (single use, 10 minutes); the code is exchanged with the verifier
//!   (client secret, HTTP Basic); the ID token's signature, issuer, audience, expiry and nonce are
//!   checked (the provider's keys are read again once if it signed with a key it did not have at
//!   start-up); the user name, e-mail and groups come from the ID token, else from the userinfo
//!   endpoint; then [`super::complete`] signs the person in (or refuses them).
//!
//! The HTTP client follows no redirect, has time-outs, trusts the system's CA store, and talks
//! plain HTTP only to a provider on loopback. Tokens, codes and verifiers are never logged.

use super::{Client, Identity};
use crate::error::ApiError;
use crate::state::AppState;
use anyhow::{anyhow, bail, Context};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use kiln_shared::config::{Config, OidcProvider};
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreErrorResponseType, CoreIdToken, CoreProviderMetadata,
    CoreTokenResponse,
};
use openidconnect::reqwest;
use openidconnect::{
    AccessToken, AccessTokenHash, AuthorizationCode, ClaimsVerificationError, ClientId,
    ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet, EndpointSet, JsonWebKeySet, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError,
    Scope, SignatureVerificationError, StandardErrorResponse, TokenResponse,
};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How long one request to a provider may take (discovery at start-up, token exchange,
/// userinfo); connecting has [`CONNECT_TIMEOUT`].
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The provider's keys are read again at most this often (a token signed with a key Kiln does
/// not know yet: the provider rotated its keys).
const KEYS_REFRESH_MIN: Duration = Duration::from_secs(60);
/// The largest userinfo answer read.
const USERINFO_MAX_BYTES: usize = 1 << 20;

/// A client made from discovery: authorization endpoint set, token and userinfo maybe.
type Oidc = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// One configured provider, ready to use.
struct Provider {
    cfg: OidcProvider,
    /// `oidc:NAME`: the provider as flows, identities and group mappings name it.
    id: String,
    secret: ClientSecret,
    redirect: RedirectUrl,
    http: reqwest::Client,
    /// Rebuilt when the provider's keys are read again.
    client: RwLock<Arc<Oidc>>,
    userinfo: Option<String>,
    keys_read: Mutex<Instant>,
}

/// The configured providers, discovered at start-up.
#[derive(Default)]
pub struct OidcClients {
    providers: HashMap<String, Arc<Provider>>,
}

impl OidcClients {
    fn get(&self, name: &str) -> Result<Arc<Provider>, ApiError> {
        self.providers.get(name).cloned().ok_or_else(|| {
            ApiError::NotFound(format!("no OpenID Connect provider is named '{name}'"))
        })
    }
}

/// Reads each provider's discovery document; an error names the provider.
pub async fn discover(cfg: &Config) -> anyhow::Result<OidcClients> {
    if cfg.auth.oidc.is_empty() {
        return Ok(OidcClients::default());
    }
    let public_url = cfg
        .master
        .public_url
        .as_deref()
        .context("config key master.public_url is needed with [[auth.oidc]]")?
        .trim_end_matches('/')
        .to_string();
    let roots = system_roots();
    if roots.is_none()
        && cfg
            .auth
            .oidc
            .iter()
            .any(|p| p.issuer.starts_with("https://"))
    {
        tracing::warn!(
            "no system CA certificates found (install ca-certificates or set SSL_CERT_FILE): HTTPS OpenID Connect providers cannot be verified"
        );
    }
    let http = http_client(roots.unwrap_or_else(rustls::RootCertStore::empty))
        .context("the HTTP client for OpenID Connect providers")?;
    let found = futures_util::future::try_join_all(
        cfg.auth
            .oidc
            .iter()
            .map(|p| provider(cfg, p, &public_url, http.clone())),
    )
    .await?;
    Ok(OidcClients {
        providers: found
            .into_iter()
            .map(|p| (p.cfg.name.clone(), Arc::new(p)))
            .collect(),
    })
}

async fn provider(
    cfg: &Config,
    p: &OidcProvider,
    public_url: &str,
    http: reqwest::Client,
) -> anyhow::Result<Provider> {
    let name = &p.name;
    let secret_path = cfg.path(&p.client_secret_file);
    // One line that names the provider and says what failed (`{:#}`: with its causes).
    let secret = read_secret(&secret_path).map_err(|e| {
        anyhow!("OpenID Connect provider '{name}': config key auth.oidc.client_secret_file: {e:#}")
    })?;
    if !transport_ok(&p.issuer) {
        bail!(
            "OpenID Connect provider '{name}': config key auth.oidc.issuer: '{}' must be https:// (plain http only on loopback)",
            p.issuer
        );
    }
    let redirect = RedirectUrl::new(format!("{public_url}/auth/oidc/{name}/callback"))
        .map_err(|e| anyhow!("OpenID Connect provider '{name}': the redirect URI: {e}"))?;
    let client = read_provider(p, &secret, &redirect, &http)
        .await
        .map_err(|e| anyhow!("OpenID Connect provider '{name}': {e:#}"))?;
    let userinfo = client.user_info_url().map(|u| u.to_string());
    tracing::info!(
        provider = %name,
        issuer = %p.issuer,
        redirect_uri = %redirect.as_str(),
        "OpenID Connect provider ready"
    );
    Ok(Provider {
        cfg: p.clone(),
        id: format!("oidc:{name}"),
        secret,
        redirect,
        http,
        client: RwLock::new(Arc::new(client)),
        userinfo,
        keys_read: Mutex::new(Instant::now()),
    })
}

fn read_secret(path: &std::path::Path) -> anyhow::Result<ClientSecret> {
    let s =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let s = s.trim();
    if s.is_empty() {
        bail!("{} is empty", path.display());
    }
    Ok(ClientSecret::new(s.to_string()))
}

/// The discovery document (whose issuer must be the configured one, exactly) and the keys.
async fn read_provider(
    p: &OidcProvider,
    secret: &ClientSecret,
    redirect: &RedirectUrl,
    http: &reqwest::Client,
) -> anyhow::Result<Oidc> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        p.issuer.trim_end_matches('/')
    );
    let doc = get_json(http, &url, None)
        .await
        .with_context(|| format!("cannot read {url}"))?;
    let meta: CoreProviderMetadata = serde_json::from_value(Value::Object(doc))
        .map_err(|e| anyhow!("cannot read {url}: not an OpenID Connect discovery document: {e}"))?;
    if meta.issuer().as_str() != p.issuer {
        bail!(
            "{url} names the issuer '{}', not '{}' (auth.oidc.issuer must be exactly the provider's issuer)",
            meta.issuer().as_str(),
            p.issuer
        );
    }
    let Some(token_url) = meta.token_endpoint() else {
        bail!("{url} names no token_endpoint (the authorization code flow needs one)");
    };
    for (what, u) in [
        (
            "authorization_endpoint",
            Some(meta.authorization_endpoint().as_str()),
        ),
        ("token_endpoint", Some(token_url.as_str())),
        (
            "userinfo_endpoint",
            meta.userinfo_endpoint().map(|u| u.as_str()),
        ),
        ("jwks_uri", Some(meta.jwks_uri().as_str())),
    ] {
        if let Some(u) = u {
            if !transport_ok(u) {
                bail!("{url}: the {what} '{u}' must be https:// (plain http only on loopback)");
            }
        }
    }
    let jwks_url = meta.jwks_uri().as_str().to_string();
    let jwks: JsonWebKeySet<_> = serde_json::from_value(Value::Object(
        get_json(http, &jwks_url, None)
            .await
            .with_context(|| format!("cannot read its keys at {jwks_url}"))?,
    ))
    .map_err(|e| anyhow!("cannot read its keys at {jwks_url}: not a JSON Web Key Set: {e}"))?;
    let meta = meta.set_jwks(jwks);
    Ok(CoreClient::from_provider_metadata(
        meta,
        ClientId::new(p.client_id.clone()),
        Some(secret.clone()),
    )
    .set_redirect_uri(redirect.clone()))
}

/// `GET url` (with a bearer token) answering a JSON object, at most [`USERINFO_MAX_BYTES`].
async fn get_json(
    http: &reqwest::Client,
    url: &str,
    bearer: Option<&AccessToken>,
) -> anyhow::Result<Map<String, Value>> {
    let mut req = http.get(url).header(header::ACCEPT, "application/json");
    if let Some(t) = bearer {
        req = req.bearer_auth(t.secret());
    }
    let mut resp = req.send().await.map_err(|e| anyhow!(chain(&e)))?;
    let status = resp.status();
    if !status.is_success() {
        bail!("HTTP status {status}");
    }
    let jwt = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/jwt"));
    if jwt {
        bail!("the answer is a signed JWT; Kiln reads plain JSON only (do not register a userinfo signing algorithm for Kiln)");
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| anyhow!(chain(&e)))? {
        if body.len() + chunk.len() > USERINFO_MAX_BYTES {
            bail!("the answer is larger than {USERINFO_MAX_BYTES} bytes");
        }
        body.extend_from_slice(&chunk);
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => bail!("the answer is not a JSON object"),
        Err(e) => bail!("the answer is not JSON: {e}"),
    }
}

/// `https://…`, or `http://` to a loopback host.
fn transport_ok(u: &str) -> bool {
    let Ok(url) = openidconnect::url::Url::parse(u) else {
        return false;
    };
    match url.scheme() {
        "https" => true,
        "http" => match url.host() {
            Some(openidconnect::url::Host::Ipv4(a)) => a.is_loopback(),
            Some(openidconnect::url::Host::Ipv6(a)) => a.is_loopback(),
            Some(openidconnect::url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            None => false,
        },
        _ => false,
    }
}

/// The system's CA certificates (the bundle the usual distributions keep, or `SSL_CERT_FILE`).
fn system_roots() -> Option<rustls::RootCertStore> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(f) = std::env::var_os("SSL_CERT_FILE") {
        candidates.push(f.into());
    }
    candidates.extend(
        [
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/pki/tls/certs/ca-bundle.crt",
            "/etc/ssl/ca-bundle.pem",
            "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
            "/etc/ssl/cert.pem",
        ]
        .map(PathBuf::from),
    );
    for path in candidates {
        let Ok(certs) = CertificateDer::pem_file_iter(&path) else {
            continue;
        };
        let mut roots = rustls::RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(certs.filter_map(Result::ok));
        if added > 0 {
            tracing::debug!(
                "OpenID Connect: {added} CA certificates from {}",
                path.display()
            );
            return Some(roots);
        }
    }
    None
}

fn http_client(roots: rustls::RootCertStore) -> anyhow::Result<reqwest::Client> {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .user_agent(concat!("kiln-master/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// What the flow keeps between the login and the callback.
#[derive(serde::Serialize, serde::Deserialize)]
struct Flow {
    pkce_verifier: String,
    nonce: String,
    return_to: String,
}

/// `GET /auth/oidc/{provider}/login?return_to=/path`: 303 to the provider.
pub async fn login(
    State(st): State<Arc<AppState>>,
    Path(provider): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let p = match st.auth.oidc.get(&provider) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let return_to = super::safe_return_to(q.get("return_to").map(String::as_str));
    let state = super::flow_key();
    let nonce = Nonce::new_random();
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let client = p.client();
    let (url, _, _) = {
        let (state, nonce) = (state.clone(), nonce.clone());
        let mut req = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            move || CsrfToken::new(state),
            move || nonce,
        );
        for s in p.cfg.scopes.iter().filter(|s| *s != "openid") {
            req = req.add_scope(Scope::new(s.clone()));
        }
        req.set_pkce_challenge(challenge).url()
    };
    let flow = Flow {
        pkce_verifier: verifier.secret().clone(),
        nonce: nonce.secret().clone(),
        return_to,
    };
    let flow = serde_json::to_value(&flow).expect("a flow is JSON");
    if let Err(e) = super::flow_put(&st, &state, &p.id, &flow).await {
        return e.into_response();
    }
    let Ok(location) = HeaderValue::from_str(url.as_str()) else {
        return ApiError::Internal(anyhow!("the authorization URL is not a header value"))
            .into_response();
    };
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, location),
            (header::SET_COOKIE, super::flow_cookie(&st, &state)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
    )
        .into_response()
}

/// `GET /auth/oidc/{provider}/callback?code&state`: signs the person in, or refuses them.
pub async fn callback(
    State(st): State<Arc<AppState>>,
    Path(provider): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    client: Client,
) -> Response {
    let p = match st.auth.oidc.get(&provider) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let mut resp = match p.callback(&st, &q, &client).await {
        Ok(Signed(identity, return_to)) => {
            super::complete(&st, &client, identity, &return_to).await
        }
        Err(Refused::Why(why, who)) => {
            super::refuse(&st, &client, &p.id, who.as_deref(), &why).await
        }
        Err(Refused::Error(e)) => e.into_response(),
    };
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

struct Signed(Identity, String);

enum Refused {
    /// A sign-in refused, why (no token or code in it), and who if known.
    Why(String, Option<String>),
    /// Kiln's own trouble (the database).
    Error(ApiError),
}

fn refused(why: impl Into<String>) -> Refused {
    Refused::Why(why.into(), None)
}

impl From<ApiError> for Refused {
    fn from(e: ApiError) -> Self {
        Refused::Error(e)
    }
}

/// What a provider's error parameter may show: printable ASCII, at most 200 characters.
fn shown(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(200)
        .collect()
}

impl Provider {
    fn client(&self) -> Arc<Oidc> {
        self.client.read().expect("not poisoned").clone()
    }

    fn display_name(&self) -> &str {
        self.cfg.display_name.as_deref().unwrap_or(&self.cfg.name)
    }

    async fn callback(
        &self,
        st: &AppState,
        q: &HashMap<String, String>,
        client: &Client,
    ) -> Result<Signed, Refused> {
        // The flow: started in this browser (the cookie), still there, taken once.
        let state = q.get("state").map(String::as_str).unwrap_or("");
        let cookie = super::flow_cookie_value(st, &client.headers).unwrap_or_default();
        if state.is_empty() || !crate::auth::constant_time_eq(state.as_bytes(), cookie.as_bytes()) {
            return Err(refused("wrong or expired state"));
        }
        let Some(flow) = super::flow_take(st, state, &self.id).await? else {
            return Err(refused("wrong or expired state"));
        };
        let flow: Flow = serde_json::from_value(flow)
            .map_err(|e| ApiError::Internal(anyhow!("a stored OpenID Connect flow: {e}")))?;
        if let Some(err) = q.get("error") {
            let desc = q
                .get("error_description")
                .map(|d| format!(": {}", shown(d)))
                .unwrap_or_default();
            return Err(refused(format!(
                "{} refused the sign-in: {}{desc}",
                self.display_name(),
                shown(err)
            )));
        }
        // RFC 9207: an answer that names its issuer must name this one (no mix-up).
        if let Some(iss) = q.get("iss") {
            if iss != &self.cfg.issuer {
                return Err(refused("the answer came from another issuer"));
            }
        }
        let Some(code) = q.get("code").filter(|c| !c.is_empty()) else {
            return Err(refused("the provider sent no authorization code"));
        };
        let oidc = self.client();
        let token: CoreTokenResponse = oidc
            .exchange_code(AuthorizationCode::new(code.clone()))
            .map_err(|e| ApiError::Internal(anyhow!("provider '{}': {e}", self.cfg.name)))?
            .set_pkce_verifier(PkceCodeVerifier::new(flow.pkce_verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| refused(token_error(&e)))?;
        let Some(id_token) = token.id_token() else {
            return Err(refused("the provider sent no ID token"));
        };
        let nonce = Nonce::new(flow.nonce);
        let claims = match verify(&oidc, id_token, token.access_token(), &nonce) {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                // Signed with a key Kiln has not seen: the provider may have new keys.
                let oidc = self.read_keys_again().await.map_err(refused)?;
                verify(&oidc, id_token, token.access_token(), &nonce)
            }
            r => r,
        };
        let claims = match claims {
            Ok(c) => c,
            Err(ClaimsVerificationError::InvalidNonce(_)) => return Err(refused("wrong nonce")),
            Err(e) => return Err(refused(format!("the ID token is not valid: {}", chain(&e)))),
        };
        self.identity(claims, token.access_token(), flow.return_to)
            .await
    }

    /// Who the verified claims (and, for what they lack, the userinfo endpoint) say this is.
    async fn identity(
        &self,
        mut claims: Map<String, Value>,
        access_token: &AccessToken,
        return_to: String,
    ) -> Result<Signed, Refused> {
        let Some(sub) = claims
            .get("sub")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return Err(refused("the ID token names no subject"));
        };
        let groups_claim = self.cfg.groups_claim.as_str();
        let username_claim = self.cfg.username_claim.as_str();
        let lacks = |c: &Map<String, Value>, k: &str| c.get(k).is_none_or(Value::is_null);
        let groups_missing = lacks(&claims, groups_claim);
        if groups_missing || lacks(&claims, username_claim) || lacks(&claims, "email") {
            if let Some(url) = &self.userinfo {
                match get_json(&self.http, url, Some(access_token)).await {
                    Ok(info) => {
                        // OpenID Connect Core 5.3.2: the answer is about the same person.
                        if info.get("sub").and_then(Value::as_str) != Some(sub.as_str()) {
                            return Err(refused(
                                "the userinfo endpoint answered about someone else",
                            ));
                        }
                        for (k, v) in info {
                            if lacks(&claims, &k) {
                                claims.insert(k, v);
                            }
                        }
                    }
                    Err(e) if groups_missing => {
                        return Err(refused(format!(
                            "cannot read the groups from the userinfo endpoint: {e:#}"
                        )))
                    }
                    Err(e) => tracing::warn!(
                        provider = %self.cfg.name,
                        "cannot read the userinfo endpoint ({e:#}); going on with the ID token"
                    ),
                }
            }
        }
        let username = claims
            .get(username_claim)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .unwrap_or(&sub)
            .to_string();
        let email_unverified = claims.get("email_verified") == Some(&Value::Bool(false));
        let email = claims
            .get("email")
            .and_then(Value::as_str)
            .filter(|e| !email_unverified && e.contains('@'))
            .map(str::to_string);
        let groups = match claims.get(groups_claim) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        };
        Ok(Signed(
            Identity {
                provider: self.id.clone(),
                // `sub` is unique per issuer only: a provider name pointed at another issuer
                // must not sign its people into the old issuer's accounts.
                subject: format!("{} {sub}", self.cfg.issuer),
                username,
                email,
                groups,
            },
            return_to,
        ))
    }

    /// Reads the discovery document and keys again (at most once a [`KEYS_REFRESH_MIN`]).
    async fn read_keys_again(&self) -> Result<Arc<Oidc>, String> {
        {
            let mut last = self.keys_read.lock().expect("not poisoned");
            if last.elapsed() < KEYS_REFRESH_MIN {
                return Err(
                    "the ID token is signed with a key the provider does not publish".into(),
                );
            }
            *last = Instant::now();
        }
        tracing::info!(provider = %self.cfg.name, "reading the provider's keys again");
        match read_provider(&self.cfg, &self.secret, &self.redirect, &self.http).await {
            Ok(c) => {
                let c = Arc::new(c);
                *self.client.write().expect("not poisoned") = c.clone();
                Ok(c)
            }
            Err(e) => Err(format!("cannot read the provider's keys again: {e:#}")),
        }
    }
}

/// Checks the ID token (signature, issuer, audience, expiry, nonce; the access token's hash when
/// it carries one) and returns its claims, all of them.
fn verify(
    oidc: &Oidc,
    id_token: &CoreIdToken,
    access_token: &AccessToken,
    nonce: &Nonce,
) -> Result<Map<String, Value>, ClaimsVerificationError> {
    let verifier = oidc.id_token_verifier();
    let claims = id_token.claims(&verifier, nonce)?;
    if let Some(expected) = claims.access_token_hash() {
        let alg = id_token
            .signing_alg()
            .map_err(ClaimsVerificationError::SignatureVerification)?;
        let key = id_token
            .signing_key(&verifier)
            .map_err(ClaimsVerificationError::SignatureVerification)?;
        let actual = AccessTokenHash::from_token(access_token, alg, key)
            .map_err(|e| ClaimsVerificationError::Unsupported(e.to_string()))?;
        if actual != *expected {
            return Err(ClaimsVerificationError::Other(
                "the access token does not match the ID token's at_hash".into(),
            ));
        }
    }
    // The claims as signed (the verifier checked exactly these bytes), for any claim name.
    let raw = id_token.to_string();
    let payload = raw
        .split('.')
        .nth(1)
        .and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<Map<String, Value>>(&b).ok())
        .ok_or_else(|| ClaimsVerificationError::Other("unreadable ID token claims".into()))?;
    Ok(payload)
}

/// A failed code exchange, without the provider's answer body (it may hold tokens).
fn token_error<RE: std::error::Error + 'static>(
    e: &RequestTokenError<RE, StandardErrorResponse<CoreErrorResponseType>>,
) -> String {
    match e {
        RequestTokenError::ServerResponse(r) => {
            let desc = r
                .error_description()
                .map(|d| format!(": {}", shown(d)))
                .unwrap_or_default();
            format!(
                "the provider refused the code: {}{desc}",
                r.error().as_ref()
            )
        }
        RequestTokenError::Request(e) => format!("cannot reach the token endpoint: {}", chain(e)),
        RequestTokenError::Parse(e, _) => {
            format!(
                "the token endpoint's answer is not understood (at '{}')",
                e.path()
            )
        }
        RequestTokenError::Other(s) => format!("the token endpoint failed: {}", shown(s)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_on_loopback() {
        for ok in [
            "https://id.example.org",
            "http://127.0.0.1:8080",
            "http://[::1]:9",
            "http://localhost:3000/realms/x",
        ] {
            assert!(transport_ok(ok), "{ok}");
        }
        for bad in [
            "http://id.example.org",
            "http://10.0.0.1",
            "ftp://x",
            "nonsense",
        ] {
            assert!(!transport_ok(bad), "{bad}");
        }
    }

    #[test]
    fn provider_errors_are_shown_tamed() {
        assert_eq!(shown("access_denied"), "access_denied");
        assert_eq!(shown("a\nb\u{202e}c"), "abc");
        assert_eq!(shown(&"x".repeat(500)).len(), 200);
    }

    #[test]
    fn flows_round_trip() {
        let f = Flow {
            pkce_verifier: "v".into(),
            nonce: "n".into(),
            return_to: "/builds/3".into(),
        };
        let back: Flow = serde_json::from_value(serde_json::to_value(&f).unwrap()).unwrap();
        assert_eq!(back.return_to, "/builds/3");
    }
}
