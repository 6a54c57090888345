//! Launchpad sign-in: an OpenID 2.0 relying party for the one endpoint in `[auth.launchpad]`
//! (default Ubuntu's, `https://login.ubuntu.com/+openid`), in stateless mode (no association:
//! every assertion is confirmed by the provider with `check_authentication`), with the Launchpad
//! teams extension (`openid.ns.lp = http://ns.launchpad.net/2007/openid-teams`,
//! `lp.query_membership` → `lp.is_member`) and SReg 1.1 for the nickname and e-mail.
//!
//! The rules that keep out the well-known OpenID 2.0 account take-overs:
//! - the endpoint and the claimed-id prefix come from the config, never from an answer: an
//!   assertion must name the pinned endpoint as `openid.op_endpoint`, its claimed id must start
//!   with `claimed_id_prefix` (and equal `openid.identity`: no delegation), and
//!   `check_authentication` goes to the pinned endpoint;
//! - `openid.return_to` must be exactly the URL this master sent for this sign-in, which carries
//!   the sign-in's single-use key (`lpflow`) that must also be in the browser's login cookie;
//! - `openid.response_nonce` must be recent and is kept: an answer whose nonce was accepted once
//!   is refused;
//! - a field counts only if it is listed in `openid.signed` (as is its extension's namespace
//!   declaration): an `lp.is_member` someone added or the provider did not sign is ignored, and
//!   a changed signed one fails `check_authentication`.
//!
//! Admins map Launchpad teams to Kiln teams and roles (group mappings of provider `launchpad`);
//! those teams are what a sign-in asks about. In the background [`refresh_loop`] re-reads each
//! person's teams from Launchpad's public REST API (`{api_url}/~{nickname}/super_teams`) every
//! `refresh_secs`, backing off while it fails (memberships stay as they were); someone who left
//! a mapped team loses it at the next refresh.
//!
//! The message handling is pure ([`checkid_setup_url`], [`verify_assertion`], [`parse_kv`],
//! [`parse_team_page`], [`retry_delay`]); the handlers and the loop do the I/O around it.

use super::{complete, flow_cookie, flow_put, flow_take, public_url, refuse, safe_return_to};
use super::{Client, Identity};
use crate::auth::constant_time_eq;
use crate::db::accounts;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDateTime, Utc};
use kiln_shared::config::LaunchpadConfig;
use reqwest::Url;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The provider's name in identities, group mappings, nonces, sessions and the audit log.
pub const PROVIDER: &str = "launchpad";
pub const OPENID2_NS: &str = "http://specs.openid.net/auth/2.0";
pub const IDENTIFIER_SELECT: &str = "http://specs.openid.net/auth/2.0/identifier_select";
pub const SREG_NS: &str = "http://openid.net/extensions/sreg/1.1";
pub const TEAMS_NS: &str = "http://ns.launchpad.net/2007/openid-teams";
/// The query parameter of `return_to` that names the sign-in in progress.
pub const FLOW_PARAM: &str = "lpflow";
/// How old a response nonce may be (its time is the provider's clock: some slack both ways).
pub const NONCE_MAX_AGE_SECS: i64 = 15 * 60;
pub const NONCE_MAX_AHEAD_SECS: i64 = 5 * 60;
/// The most a callback URL made from a posted answer may hold.
const MAX_CALLBACK_QUERY: usize = 32 * 1024;
/// The most a `check_authentication` answer, or one page of the REST API, may hold.
const MAX_KV_BYTES: usize = 64 * 1024;
const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024;
/// Pages of `super_teams` followed at most (Launchpad pages hold 75 teams).
const MAX_PAGES: usize = 40;

/// The one HTTP client for Launchpad: no redirects followed (an answer is the pinned URL's own),
/// short time-outs.
fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .user_agent(concat!("kiln-master/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client for Launchpad")
    })
}

// ---- the request ------------------------------------------------------------------------------

/// The `checkid_setup` URL that sends the browser to the provider: identifier select (the
/// provider says who the person is), no association (stateless), SReg for the nickname (needed:
/// it is the name the REST API knows) and e-mail, and the teams to ask about.
pub fn checkid_setup_url(
    endpoint: &str,
    return_to: &str,
    realm: &str,
    teams: &[String],
) -> Result<String, String> {
    let mut url = Url::parse(endpoint).map_err(|e| format!("endpoint '{endpoint}': {e}"))?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("openid.ns", OPENID2_NS)
            .append_pair("openid.mode", "checkid_setup")
            .append_pair("openid.claimed_id", IDENTIFIER_SELECT)
            .append_pair("openid.identity", IDENTIFIER_SELECT)
            .append_pair("openid.return_to", return_to)
            .append_pair("openid.realm", realm)
            .append_pair("openid.ns.sreg", SREG_NS)
            .append_pair("openid.sreg.required", "nickname")
            .append_pair("openid.sreg.optional", "email");
        if !teams.is_empty() {
            q.append_pair("openid.ns.lp", TEAMS_NS)
                .append_pair("openid.lp.query_membership", &teams.join(","));
        }
    }
    Ok(url.into())
}

/// A team name that can be asked about (Launchpad's names: no commas, no spaces).
fn askable(team: &str) -> bool {
    !team.is_empty()
        && team.len() <= 100
        && !team.contains(',')
        && team.chars().all(|c| c.is_ascii_graphic())
}

/// Launchpad's rule for person and team names; a nickname goes into a REST URL path.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && name.len() <= 64
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '.' | '-'))
}

// ---- the answer -------------------------------------------------------------------------------

/// What the pinned config says about the provider.
pub struct Pinned<'a> {
    pub endpoint: &'a str,
    pub claimed_id_prefix: &'a str,
}

/// A positive assertion that passed every check this side can make (the signature is the
/// provider's to confirm, with `check_authentication`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assertion {
    pub claimed_id: String,
    pub nickname: String,
    pub email: Option<String>,
    /// The requested teams the signed `lp.is_member` lists, spelled as requested.
    pub teams: Vec<String>,
    pub nonce: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The person cancelled at the provider.
    Cancelled,
    /// The provider answered with an error (or `setup_needed`).
    Provider(String),
    /// The answer breaks a rule.
    Invalid(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Cancelled => write!(f, "the sign-in was cancelled at Launchpad"),
            Refusal::Provider(m) => write!(f, "Launchpad answered: {m}"),
            Refusal::Invalid(m) => write!(f, "Launchpad's answer was refused: {m}"),
        }
    }
}

fn invalid<T>(why: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal::Invalid(why.into()))
}

/// A value from an answer, shortened for a message (it is the sender's text).
fn shown(s: &str) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(120).collect();
    if s.chars().count() > 120 {
        out.push('…');
    }
    out
}

/// The fields an answer must sign (OpenID 2.0 §10.1, with the claimed id always present).
const MUST_SIGN: [&str; 6] = [
    "op_endpoint",
    "return_to",
    "response_nonce",
    "assoc_handle",
    "claimed_id",
    "identity",
];

/// An answer's fields (`openid.*`, keys with the `openid.` prefix) and what it signed.
struct Message<'a> {
    fields: &'a HashMap<String, String>,
    signed: BTreeSet<&'a str>,
    /// Extension namespace URI → alias, from signed declarations only.
    aliases: HashMap<&'a str, &'a str>,
}

impl<'a> Message<'a> {
    fn new(fields: &'a HashMap<String, String>) -> Result<Self, Refusal> {
        let signed: BTreeSet<&str> = fields
            .get("openid.signed")
            .map(|s| {
                s.split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let mut aliases = HashMap::new();
        for (k, uri) in fields {
            let Some(alias) = k.strip_prefix("openid.ns.") else {
                continue;
            };
            if alias.is_empty() || alias.contains('.') || !signed.contains(&k["openid.".len()..]) {
                continue;
            }
            if aliases.insert(uri.as_str(), alias).is_some() {
                return invalid(format!("the namespace {uri} is declared twice"));
            }
        }
        Ok(Message {
            fields,
            signed,
            aliases,
        })
    }

    fn get(&self, key: &str) -> Option<&'a str> {
        self.fields
            .get(&format!("openid.{key}"))
            .map(String::as_str)
    }

    /// A field of the OpenID namespace, only if signed.
    fn signed(&self, key: &str) -> Option<&'a str> {
        self.signed.contains(key).then(|| self.get(key)).flatten()
    }

    /// An extension's field, only if both it and its namespace declaration are signed.
    fn extension(&self, ns: &str, key: &str) -> Option<&'a str> {
        let alias = self.aliases.get(ns)?;
        self.signed(&format!("{alias}.{key}"))
    }
}

/// The time at the start of a response nonce (`2005-05-15T17:11:51Z` then up to 235 more
/// printable characters).
pub fn nonce_time(nonce: &str) -> Option<DateTime<Utc>> {
    if nonce.len() < 20 || nonce.len() > 255 || !nonce.bytes().all(|b| (33..=126).contains(&b)) {
        return None;
    }
    NaiveDateTime::parse_from_str(&nonce[..20], "%Y-%m-%dT%H:%M:%SZ")
        .ok()
        .map(|t| t.and_utc())
}

/// Checks a positive assertion against the pinned provider, the `return_to` this sign-in sent,
/// the teams it asked about, and the time; the signature is not checked here.
pub fn verify_assertion(
    fields: &HashMap<String, String>,
    pinned: &Pinned<'_>,
    expected_return_to: &str,
    requested_teams: &[String],
    now: DateTime<Utc>,
) -> Result<Assertion, Refusal> {
    let m = Message::new(fields)?;
    if m.get("ns") != Some(OPENID2_NS) {
        return invalid("it is not an OpenID 2.0 answer");
    }
    match m.get("mode") {
        Some("id_res") => {}
        Some("cancel") => return Err(Refusal::Cancelled),
        Some("setup_needed") => return Err(Refusal::Provider("setup needed".into())),
        Some("error") => {
            let why: String = m
                .get("error")
                .unwrap_or("an error")
                .chars()
                .take(200)
                .collect();
            return Err(Refusal::Provider(why));
        }
        other => return invalid(format!("unknown mode {other:?}")),
    }
    for key in MUST_SIGN {
        if !m.signed.contains(key) {
            return invalid(format!("openid.{key} is not signed"));
        }
    }
    if m.get("sig").is_none_or(str::is_empty) || m.get("assoc_handle").is_none_or(str::is_empty) {
        return invalid("it carries no signature");
    }
    let endpoint = m.signed("op_endpoint").unwrap_or("");
    if endpoint != pinned.endpoint {
        return invalid(format!(
            "it names the provider '{}', not the configured {}",
            shown(endpoint),
            pinned.endpoint
        ));
    }
    if m.signed("return_to") != Some(expected_return_to) {
        return invalid("its return_to is not the one this sign-in sent");
    }
    let claimed = m.signed("claimed_id").unwrap_or("");
    if m.signed("identity") != Some(claimed) {
        return invalid("its identity differs from its claimed id (delegation is not accepted)");
    }
    let local = claimed.strip_prefix(pinned.claimed_id_prefix).unwrap_or("");
    if local.is_empty()
        || local.len() > 200
        || !local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '+'))
        || local.starts_with('.')
    {
        return invalid(format!(
            "the claimed id '{}' is not under {}",
            shown(claimed),
            pinned.claimed_id_prefix
        ));
    }
    let nonce = m.signed("response_nonce").unwrap_or("");
    let Some(at) = nonce_time(nonce) else {
        return invalid("its response nonce is malformed");
    };
    if at > now + chrono::Duration::seconds(NONCE_MAX_AHEAD_SECS)
        || at < now - chrono::Duration::seconds(NONCE_MAX_AGE_SECS)
    {
        return invalid(format!("its response nonce is from {at}, too far from now"));
    }
    let nickname = m.extension(SREG_NS, "nickname").unwrap_or("").to_string();
    if nickname.is_empty() {
        return invalid("Launchpad did not share the nickname (SReg, signed)");
    }
    if !valid_name(&nickname) {
        return invalid(format!("'{}' is not a Launchpad name", shown(&nickname)));
    }
    let email = m
        .extension(SREG_NS, "email")
        .map(str::trim)
        .filter(|e| !e.is_empty() && e.len() <= 254)
        .map(str::to_string);
    let teams = m
        .extension(TEAMS_NS, "is_member")
        .map(|list| matching_teams(requested_teams, list.split(',')))
        .unwrap_or_default();
    Ok(Assertion {
        claimed_id: claimed.to_string(),
        nickname,
        email,
        teams,
        nonce: nonce.to_string(),
    })
}

/// The teams of `wanted` (as spelled there) that `names` lists, ignoring case (Launchpad's names
/// are lower case; an admin may have typed a mapping otherwise).
pub fn matching_teams<'a>(
    wanted: &[String],
    names: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    let have: BTreeSet<String> = names
        .into_iter()
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    let mut out: Vec<String> = wanted
        .iter()
        .filter(|w| have.contains(&w.to_ascii_lowercase()))
        .cloned()
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Parses OpenID key-value form (`key:value` lines).
pub fn parse_kv(body: &str) -> HashMap<String, String> {
    body.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Reads a response body up to `limit` bytes.
async fn body_limited(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if out.len() + chunk.len() > limit {
            return Err(format!("the answer is larger than {limit} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Asks the pinned endpoint whether it signed this answer (stateless mode, OpenID 2.0 §11.4.2):
/// every `openid.*` field as received, with `openid.mode=check_authentication`.
async fn check_authentication(
    endpoint: &str,
    fields: &HashMap<String, String>,
) -> Result<bool, String> {
    let mut form: Vec<(&str, &str)> = fields
        .iter()
        .filter(|(k, _)| k.starts_with("openid.") && k.as_str() != "openid.mode")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    form.push(("openid.mode", "check_authentication"));
    let resp = http()
        .post(endpoint)
        .form(&form)
        .send()
        .await
        .map_err(|e| format!("check_authentication at {endpoint}: {e}"))?;
    let status = resp.status();
    let body = body_limited(resp, MAX_KV_BYTES).await?;
    let kv = parse_kv(&String::from_utf8_lossy(&body));
    if !status.is_success() {
        return Err(format!(
            "check_authentication at {endpoint} answered {status}: {}",
            kv.get("error").map(String::as_str).unwrap_or("")
        ));
    }
    // An OpenID 2.0 answer names its namespace; none at all is taken as 2.0 (it came from the
    // pinned endpoint), another is not.
    Ok(kv.get("ns").is_none_or(|ns| ns == OPENID2_NS)
        && kv.get("is_valid").map(String::as_str) == Some("true"))
}

// ---- the handlers -----------------------------------------------------------------------------

fn not_configured() -> Response {
    ApiError::NotFound("Launchpad sign-in is not configured".into()).into_response()
}

/// `GET /auth/launchpad/login?return_to=/path`: starts a sign-in and sends the browser to the
/// provider.
pub async fn login(
    State(st): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
    _client: Client,
) -> Response {
    let Some(lp) = st.cfg.auth.launchpad.as_ref() else {
        return not_configured();
    };
    match start(&st, lp, q.get("return_to").map(String::as_str)).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn start(
    st: &AppState,
    lp: &LaunchpadConfig,
    after: Option<&str>,
) -> Result<Response, ApiError> {
    let teams: Vec<String> = accounts::mapped_groups(&st.db, PROVIDER)
        .await?
        .into_iter()
        .filter(|t| {
            let ok = askable(t);
            if !ok {
                tracing::warn!(
                    "the Launchpad team mapping '{t}' is not a team name; not asked about"
                );
            }
            ok
        })
        .collect();
    let key = super::flow_key();
    let base = public_url(st);
    let return_to = format!("{base}/auth/launchpad/callback?{FLOW_PARAM}={key}");
    let url = checkid_setup_url(&lp.endpoint, &return_to, &format!("{base}/"), &teams)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!(e)))?;
    flow_put(
        st,
        &key,
        PROVIDER,
        &serde_json::json!({
            "return_to": return_to,
            "after": safe_return_to(after),
            "teams": teams,
        }),
    )
    .await?;
    let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, url)]).into_response();
    resp.headers_mut()
        .append(header::SET_COOKIE, flow_cookie(st, &key));
    Ok(resp)
}

/// `GET /auth/launchpad/callback?lpflow=…&openid.…`: the provider's answer, through the browser.
pub async fn callback(
    State(st): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
    client: Client,
) -> Response {
    let Some(lp) = st.cfg.auth.launchpad.as_ref() else {
        return not_configured();
    };
    match finish(&st, lp, &client, &q).await {
        Ok((identity, after)) => {
            let subject = identity.subject.clone();
            let resp = complete(&st, &client, identity, &after).await;
            let signed_in = resp.status() == StatusCode::SEE_OTHER
                && resp
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .is_some_and(|l| !l.starts_with("/login?error"));
            if signed_in {
                // The memberships were just read from the assertion: the next refresh is due a
                // whole period from now.
                let next = st.clock.now() + chrono::Duration::seconds(lp.refresh_secs as i64);
                if let Err(e) = accounts::set_refresh(&st.db, PROVIDER, &subject, next, 0).await {
                    tracing::warn!("recording the Launchpad refresh time of {subject}: {e}");
                }
            }
            resp
        }
        Err(Failed::Refused(who, why)) => {
            refuse(&st, &client, PROVIDER, who.as_deref(), &why).await
        }
        Err(Failed::Error(e)) => e.into_response(),
    }
}

/// A provider may answer with an auto-submitted form (a long assertion). A form posted from
/// another site carries no SameSite=Lax cookie, so the browser is sent on to the GET callback
/// with the same fields: that top-level navigation carries the login cookie, and every check is
/// made there.
pub async fn callback_post(
    State(st): State<Arc<AppState>>,
    Query(q): Query<HashMap<String, String>>,
    client: Client,
    axum::extract::Form(f): axum::extract::Form<HashMap<String, String>>,
) -> Response {
    if st.cfg.auth.launchpad.is_none() {
        return not_configured();
    }
    let mut pairs: Vec<(&str, &str)> = f
        .iter()
        .filter(|(k, _)| k.starts_with("openid."))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    pairs.sort();
    if let Some(key) = q.get(FLOW_PARAM) {
        pairs.insert(0, (FLOW_PARAM, key));
    }
    let query = reqwest::Url::parse_with_params("http://kiln.invalid/", &pairs)
        .ok()
        .and_then(|u| u.query().map(str::to_string))
        .unwrap_or_default();
    if query.len() > MAX_CALLBACK_QUERY {
        return refuse(
            &st,
            &client,
            PROVIDER,
            None,
            "Launchpad's answer is too large",
        )
        .await;
    }
    let to = format!("{}/auth/launchpad/callback?{query}", public_url(&st));
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

enum Failed {
    /// Refused: (who, if known; why).
    Refused(Option<String>, String),
    Error(ApiError),
}

impl From<ApiError> for Failed {
    fn from(e: ApiError) -> Self {
        Failed::Error(e)
    }
}

impl From<sqlx::Error> for Failed {
    fn from(e: sqlx::Error) -> Self {
        Failed::Error(e.into())
    }
}

fn refused<T>(who: Option<&str>, why: impl Into<String>) -> Result<T, Failed> {
    Err(Failed::Refused(who.map(str::to_string), why.into()))
}

/// Every check of an answer; the identity it proves and where the browser goes next.
async fn finish(
    st: &AppState,
    lp: &LaunchpadConfig,
    client: &Client,
    q: &HashMap<String, String>,
) -> Result<(Identity, String), Failed> {
    let Some(key) = q.get(FLOW_PARAM).filter(|k| !k.is_empty()) else {
        return refused(None, "no Launchpad sign-in is in progress; start again");
    };
    let bound = super::flow_cookie_value(st, &client.headers)
        .is_some_and(|c| constant_time_eq(c.as_bytes(), key.as_bytes()));
    if !bound {
        return refused(
            None,
            "this Launchpad sign-in was not started in this browser (or took too long); start again",
        );
    }
    let Some(flow) = flow_take(st, key, PROVIDER).await? else {
        return refused(
            None,
            "this Launchpad sign-in has expired or was already used; start again",
        );
    };
    let text = |k: &str| {
        flow.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    let (return_to, after) = (text("return_to"), text("after"));
    let requested: Vec<String> = flow
        .get("teams")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let fields: HashMap<String, String> = q
        .iter()
        .filter(|(k, _)| k.starts_with("openid."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let pinned = Pinned {
        endpoint: &lp.endpoint,
        claimed_id_prefix: &lp.claimed_id_prefix,
    };
    let a = match verify_assertion(&fields, &pinned, &return_to, &requested, st.clock.now()) {
        Ok(a) => a,
        Err(r) => return refused(None, r.to_string()),
    };
    let who = Some(a.nickname.as_str());
    match check_authentication(&lp.endpoint, &fields).await {
        Ok(true) => {}
        Ok(false) => return refused(who, "Launchpad did not confirm its answer (bad signature)"),
        Err(e) => {
            tracing::warn!("Launchpad check_authentication failed: {e}");
            return refused(
                who,
                "Launchpad could not be asked to confirm its answer; try again later",
            );
        }
    }
    if !accounts::nonce_fresh(&st.db, PROVIDER, &a.nonce).await? {
        return refused(who, "this Launchpad answer was already used (replayed)");
    }
    Ok((
        Identity {
            provider: PROVIDER.into(),
            subject: a.claimed_id,
            username: a.nickname,
            email: a.email,
            groups: a.teams,
        },
        after,
    ))
}

// ---- membership refresh -----------------------------------------------------------------------

/// `{api_url}/~{name}/super_teams`.
pub fn super_teams_url(api_url: &str, name: &str) -> String {
    format!("{}/~{name}/super_teams", api_url.trim_end_matches('/'))
}

/// One page of a Launchpad collection: the `name` of each entry, and the next page's link
/// (followed only when it is under `api_url`).
pub fn parse_team_page(
    page: &serde_json::Value,
    api_url: &str,
) -> Result<(Vec<String>, Option<String>), String> {
    let entries = page
        .get("entries")
        .and_then(|e| e.as_array())
        .ok_or("the answer is not a Launchpad collection (no entries)")?;
    let names = entries
        .iter()
        .map(|e| {
            e.get("name")
                .and_then(|n| n.as_str())
                .map(str::to_string)
                .ok_or_else(|| "an entry has no name".to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let next = match page.get("next_collection_link").and_then(|l| l.as_str()) {
        None => None,
        Some(link) => {
            let base = format!("{}/", api_url.trim_end_matches('/'));
            if !link.starts_with(&base) {
                return Err(format!("the next page '{link}' is not under {base}"));
            }
            Some(link.to_string())
        }
    };
    Ok((names, next))
}

/// What the REST API says about someone's teams.
#[derive(Debug, PartialEq, Eq)]
pub enum Teams {
    Names(Vec<String>),
    /// No such person (any more, under that name).
    NoSuchPerson,
}

/// Every team `name` is in, from `super_teams`, page by page.
pub async fn fetch_teams(api_url: &str, name: &str) -> Result<Teams, String> {
    let mut url = super_teams_url(api_url, name);
    let mut names = Vec::new();
    for _ in 0..MAX_PAGES {
        let resp = http()
            .get(&url)
            .header(header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
            return Ok(Teams::NoSuchPerson);
        }
        if !status.is_success() {
            return Err(format!("{url} answered {status}"));
        }
        let body = body_limited(resp, MAX_PAGE_BYTES).await?;
        let page: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("{url}: not JSON: {e}"))?;
        let (mut more, next) = parse_team_page(&page, api_url)?;
        names.append(&mut more);
        match next {
            Some(n) => url = n,
            None => return Ok(Teams::Names(names)),
        }
    }
    Err(format!(
        "{} has more than {MAX_PAGES} pages",
        super_teams_url(api_url, name)
    ))
}

/// When to try again after `failures` refreshes in a row failed: from a minute (or the refresh
/// period, if shorter) doubling up to the refresh period.
pub fn retry_delay(refresh_secs: u64, failures: i32) -> Duration {
    let base = refresh_secs.clamp(1, 60);
    let cap = refresh_secs.max(base);
    let shift = failures.saturating_sub(1).clamp(0, 30) as u32;
    Duration::from_secs(base.saturating_mul(1u64 << shift).min(cap))
}

/// Refreshes Launchpad members' team memberships in the background (`auth.launchpad.refresh_secs`):
/// each identity whose refresh is due gets its teams from the REST API, and its memberships
/// from the group mappings; a failure keeps them and retries later ([`retry_delay`]).
pub async fn refresh_loop(st: Arc<AppState>) {
    let Some(lp) = st.cfg.auth.launchpad.clone() else {
        return;
    };
    let tick = Duration::from_secs(lp.refresh_secs.clamp(1, 30));
    loop {
        tokio::time::sleep(tick).await;
        if let Err(e) = refresh_due(&st, &lp).await {
            tracing::warn!("Launchpad membership refresh: {e}");
        }
    }
}

/// One pass over the identities due now; returns how many were refreshed successfully.
pub async fn refresh_due(st: &AppState, lp: &LaunchpadConfig) -> sqlx::Result<usize> {
    let now = st.clock.now();
    let due = accounts::identities_due(&st.db, PROVIDER, now).await?;
    if due.is_empty() {
        return Ok(0);
    }
    let mapped = accounts::mapped_groups(&st.db, PROVIDER).await?;
    let mut done = 0;
    for row in due {
        let answer = match row.name.as_deref() {
            Some(name) if valid_name(name) => fetch_teams(&lp.api_url, name).await,
            _ => Ok(Teams::NoSuchPerson),
        };
        let now = st.clock.now();
        match answer {
            Ok(teams) => {
                let groups = match &teams {
                    Teams::Names(names) => {
                        matching_teams(&mapped, names.iter().map(String::as_str))
                    }
                    Teams::NoSuchPerson => {
                        tracing::warn!(
                            "Launchpad knows no person {:?} ({}): their Launchpad memberships end until they sign in again",
                            row.name.as_deref().unwrap_or("(no name on record)"),
                            row.subject
                        );
                        Vec::new()
                    }
                };
                let before = accounts::memberships(&st.db, row.user_id).await?;
                accounts::set_provider_memberships(&st.db, row.user_id, PROVIDER, &groups).await?;
                let after = accounts::memberships(&st.db, row.user_id).await?;
                let next = now + chrono::Duration::seconds(lp.refresh_secs as i64);
                accounts::set_refresh(&st.db, PROVIDER, &row.subject, next, 0).await?;
                if before != after {
                    record_change(st, row.user_id, &before, &after).await;
                }
                done += 1;
            }
            Err(e) => {
                let failures = row.refresh_failures.saturating_add(1);
                let delay = retry_delay(lp.refresh_secs, failures);
                tracing::warn!(
                    "Launchpad teams of '{}' could not be read ({failures} failure(s) in a row; memberships kept, next try in {} s): {e}",
                    row.name.as_deref().unwrap_or(""),
                    delay.as_secs()
                );
                let next =
                    now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1));
                accounts::set_refresh(&st.db, PROVIDER, &row.subject, next, failures).await?;
            }
        }
    }
    Ok(done)
}

/// Audits a membership change made by a refresh (which teams were lost or gained).
async fn record_change(
    st: &AppState,
    user: i64,
    before: &[(String, kiln_shared::api::Role)],
    after: &[(String, kiln_shared::api::Role)],
) {
    let name = match accounts::user_by_id(&st.db, user).await {
        Ok(Some(u)) => u.username,
        _ => format!("#{user}"),
    };
    let list = |v: &[(String, kiln_shared::api::Role)]| {
        v.iter()
            .map(|(t, r)| serde_json::json!({ "team": t, "role": r.as_str() }))
            .collect::<Vec<_>>()
    };
    tracing::info!("Launchpad refresh changed the teams of '{name}'");
    crate::audit::record(
        st,
        None,
        "memberships_refreshed",
        Some(format!("user {name}")),
        None,
        serde_json::json!({ "provider": PROVIDER, "before": list(before), "after": list(after) }),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const EP: &str = "https://login.ubuntu.com/+openid";
    const PREFIX: &str = "https://login.ubuntu.com/+id/";
    const RT: &str = "https://kiln.example.org/auth/launchpad/callback?lpflow=abc";

    fn pinned() -> Pinned<'static> {
        Pinned {
            endpoint: EP,
            claimed_id_prefix: PREFIX,
        }
    }

    fn now() -> DateTime<Utc> {
        "2024-05-01T12:00:00Z".parse().unwrap()
    }

    fn requested() -> Vec<String> {
        vec!["kiln-devs".into(), "Kiln-Admins".into()]
    }

    /// A positive assertion as python-openid's server makes it (everything signed).
    fn good() -> HashMap<String, String> {
        let mut f: HashMap<String, String> = [
            ("ns", OPENID2_NS),
            ("mode", "id_res"),
            ("op_endpoint", EP),
            ("claimed_id", "https://login.ubuntu.com/+id/AbC12de"),
            ("identity", "https://login.ubuntu.com/+id/AbC12de"),
            ("return_to", RT),
            ("response_nonce", "2024-05-01T11:59:30ZUNIQUE"),
            ("assoc_handle", "{HMAC-SHA1}{66321a}{x}"),
            ("ns.sreg", SREG_NS),
            ("sreg.nickname", "alice"),
            ("sreg.email", "alice@example.org"),
            ("ns.lp", TEAMS_NS),
            ("lp.is_member", "kiln-devs,other-team"),
            ("sig", "c2lnbmF0dXJl"),
        ]
        .into_iter()
        .map(|(k, v)| (format!("openid.{k}"), v.to_string()))
        .collect();
        let mut signed: Vec<String> = f
            .keys()
            .map(|k| k["openid.".len()..].to_string())
            .filter(|k| k != "sig")
            .collect();
        signed.push("signed".into());
        signed.sort();
        f.insert("openid.signed".into(), signed.join(","));
        f
    }

    fn verify(f: &HashMap<String, String>) -> Result<Assertion, Refusal> {
        verify_assertion(f, &pinned(), RT, &requested(), now())
    }

    fn unsign(f: &mut HashMap<String, String>, key: &str) {
        let s = f["openid.signed"]
            .split(',')
            .filter(|k| *k != key)
            .collect::<Vec<_>>()
            .join(",");
        f.insert("openid.signed".into(), s);
    }

    fn refused_because(r: Result<Assertion, Refusal>, needle: &str) {
        match r {
            Err(Refusal::Invalid(m)) => assert!(m.contains(needle), "{m:?} lacks {needle:?}"),
            other => panic!("expected a refusal naming {needle:?}, got {other:?}"),
        }
    }

    #[test]
    fn the_request_is_stateless_identifier_select_with_sreg_and_teams() {
        let url = checkid_setup_url(EP, RT, "https://kiln.example.org/", &requested()).unwrap();
        let u = Url::parse(&url).unwrap();
        assert_eq!(u.as_str().split('?').next(), Some(EP));
        let q: HashMap<String, String> = u.query_pairs().into_owned().collect();
        assert_eq!(q["openid.ns"], OPENID2_NS);
        assert_eq!(q["openid.mode"], "checkid_setup");
        assert_eq!(q["openid.claimed_id"], IDENTIFIER_SELECT);
        assert_eq!(q["openid.identity"], IDENTIFIER_SELECT);
        assert_eq!(q["openid.return_to"], RT);
        assert_eq!(q["openid.realm"], "https://kiln.example.org/");
        assert_eq!(q["openid.ns.sreg"], SREG_NS);
        assert_eq!(q["openid.sreg.required"], "nickname");
        assert_eq!(q["openid.ns.lp"], TEAMS_NS);
        assert_eq!(q["openid.lp.query_membership"], "kiln-devs,Kiln-Admins");
        assert!(
            !q.contains_key("openid.assoc_handle"),
            "stateless: no association"
        );
        let none = checkid_setup_url(EP, RT, "https://kiln.example.org/", &[]).unwrap();
        assert!(
            !none.contains("openid.ns.lp"),
            "no teams mapped: no teams extension"
        );
    }

    #[test]
    fn a_good_assertion_gives_the_signed_identity_and_requested_teams() {
        let a = verify(&good()).unwrap();
        assert_eq!(a.claimed_id, "https://login.ubuntu.com/+id/AbC12de");
        assert_eq!(a.nickname, "alice");
        assert_eq!(a.email.as_deref(), Some("alice@example.org"));
        assert_eq!(
            a.teams,
            vec!["kiln-devs".to_string()],
            "only teams that were asked about"
        );
        assert_eq!(a.nonce, "2024-05-01T11:59:30ZUNIQUE");
    }

    #[test]
    fn teams_match_as_requested_whatever_the_case() {
        let mut f = good();
        f.insert(
            "openid.lp.is_member".into(),
            "kiln-admins, kiln-devs".into(),
        );
        assert_eq!(
            verify(&f).unwrap().teams,
            vec!["Kiln-Admins".to_string(), "kiln-devs".to_string()]
        );
    }

    #[test]
    fn an_extension_alias_other_than_lp_works() {
        let mut f = good();
        let v = f.remove("openid.lp.is_member").unwrap();
        f.remove("openid.ns.lp");
        f.insert("openid.ns.ext1".into(), TEAMS_NS.into());
        f.insert("openid.ext1.is_member".into(), v);
        let s = f["openid.signed"]
            .replace("lp.is_member", "ext1.is_member")
            .replace("ns.lp", "ns.ext1");
        f.insert("openid.signed".into(), s);
        assert_eq!(verify(&f).unwrap().teams, vec!["kiln-devs".to_string()]);
    }

    #[test]
    fn an_unsigned_is_member_is_ignored() {
        let mut f = good();
        unsign(&mut f, "lp.is_member");
        let a = verify(&f).unwrap();
        assert!(a.teams.is_empty(), "{a:?}");
        // An added alias that the provider did not sign does not count either.
        let mut f = good();
        unsign(&mut f, "lp.is_member");
        f.insert("openid.ns.evil".into(), TEAMS_NS.into());
        f.insert("openid.evil.is_member".into(), "kiln-devs".into());
        assert!(verify(&f).unwrap().teams.is_empty());
        // Nor a signed field under an unsigned namespace declaration.
        let mut f = good();
        unsign(&mut f, "ns.lp");
        assert!(verify(&f).unwrap().teams.is_empty());
    }

    #[test]
    fn unsigned_sreg_is_ignored_and_the_nickname_is_needed() {
        let mut f = good();
        unsign(&mut f, "sreg.email");
        assert_eq!(verify(&f).unwrap().email, None);
        let mut f = good();
        unsign(&mut f, "sreg.nickname");
        refused_because(verify(&f), "nickname");
        let mut f = good();
        f.insert("openid.sreg.nickname".into(), "../../admin".into());
        refused_because(verify(&f), "not a Launchpad name");
    }

    #[test]
    fn another_op_endpoint_is_refused() {
        for other in [
            "https://evil.example/+openid",
            "https://login.ubuntu.com/+openid/",
            "https://login.ubuntu.com.evil.example/+openid",
            "",
        ] {
            let mut f = good();
            f.insert("openid.op_endpoint".into(), other.into());
            refused_because(verify(&f), "not the configured");
        }
        let mut f = good();
        f.remove("openid.op_endpoint");
        refused_because(verify(&f), "not the configured");
    }

    #[test]
    fn a_claimed_id_outside_the_prefix_is_refused() {
        for other in [
            "https://evil.example/+id/AbC12de",
            "https://login.ubuntu.com.evil.example/+id/AbC12de",
            "http://login.ubuntu.com/+id/AbC12de",
            "https://login.ubuntu.com/+id/",
            "https://login.ubuntu.com/+id/../+id/x",
            "https://login.ubuntu.com/+id/a/b",
            "https://login.ubuntu.com/+id/a#frag",
            "https://login.ubuntu.com/~alice",
        ] {
            let mut f = good();
            f.insert("openid.claimed_id".into(), other.into());
            f.insert("openid.identity".into(), other.into());
            refused_because(verify(&f), "is not under");
        }
        // Delegation (identity ≠ claimed id) is not accepted.
        let mut f = good();
        f.insert(
            "openid.identity".into(),
            "https://login.ubuntu.com/+id/Other".into(),
        );
        refused_because(verify(&f), "differs");
    }

    #[test]
    fn the_return_to_must_be_this_sign_ins() {
        for other in [
            "https://kiln.example.org/auth/launchpad/callback?lpflow=other",
            "https://evil.example/auth/launchpad/callback?lpflow=abc",
            "https://kiln.example.org/auth/launchpad/callback",
        ] {
            let mut f = good();
            f.insert("openid.return_to".into(), other.into());
            refused_because(verify(&f), "return_to");
        }
    }

    #[test]
    fn the_essential_fields_must_be_signed() {
        for key in MUST_SIGN {
            let mut f = good();
            unsign(&mut f, key);
            refused_because(verify(&f), &format!("openid.{key} is not signed"));
        }
        let mut f = good();
        f.remove("openid.sig");
        refused_because(verify(&f), "no signature");
    }

    #[test]
    fn nonces_must_be_well_formed_and_recent() {
        for (nonce, ok) in [
            ("2024-05-01T11:59:30Z", true),
            ("2024-05-01T11:46:00Zx", true),
            ("2024-05-01T12:04:00Zx", true),
            ("2024-05-01T11:44:00Zx", false),
            ("2024-05-01T12:06:00Zx", false),
            ("2024-05-01 11:59:30Zx", false),
            ("garbage", false),
            ("2024-05-01T11:59:30Z with space", false),
        ] {
            let mut f = good();
            f.insert("openid.response_nonce".into(), nonce.into());
            assert_eq!(verify(&f).is_ok(), ok, "{nonce}");
        }
    }

    #[test]
    fn other_modes() {
        let mut f = good();
        f.insert("openid.mode".into(), "cancel".into());
        assert_eq!(verify(&f), Err(Refusal::Cancelled));
        f.insert("openid.mode".into(), "error".into());
        f.insert("openid.error".into(), "no".into());
        assert_eq!(verify(&f), Err(Refusal::Provider("no".into())));
        let mut f = good();
        f.insert("openid.ns".into(), "http://openid.net/signon/1.1".into());
        refused_because(verify(&f), "OpenID 2.0");
        let mut f = good();
        f.insert("openid.ns.other".into(), TEAMS_NS.into());
        let s = format!("{},ns.other", f["openid.signed"]);
        f.insert("openid.signed".into(), s);
        refused_because(verify(&f), "declared twice");
    }

    #[test]
    fn key_value_form() {
        let kv = parse_kv("ns:http://specs.openid.net/auth/2.0\nis_valid:true\n");
        assert_eq!(kv["ns"], OPENID2_NS);
        assert_eq!(kv["is_valid"], "true");
    }

    #[test]
    fn names() {
        for ok in ["alice", "a", "kiln-devs", "ubuntu+dev", "x.y", "0day"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "Alice", "-x", "a/b", "a b", "~alice", "..", "a?b"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn super_teams_pages() {
        let api = "https://api.launchpad.net/devel";
        assert_eq!(
            super_teams_url(&format!("{api}/"), "alice"),
            "https://api.launchpad.net/devel/~alice/super_teams"
        );
        let page = serde_json::json!({
            "total_size": 3, "start": 0,
            "entries": [{"name": "kiln-devs", "self_link": format!("{api}/~kiln-devs")},
                        {"name": "other"}],
            "next_collection_link": format!("{api}/~alice/super_teams?ws.size=2&memo=2&ws.start=2"),
            "resource_type_link": format!("{api}/#team-page-resource"),
        });
        let (names, next) = parse_team_page(&page, api).unwrap();
        assert_eq!(names, vec!["kiln-devs", "other"]);
        assert!(next.unwrap().ends_with("ws.start=2"));
        let last = serde_json::json!({"total_size": 3, "start": 2, "entries": [{"name": "x"}]});
        assert_eq!(
            parse_team_page(&last, api).unwrap(),
            (vec!["x".to_string()], None)
        );
        let elsewhere = serde_json::json!({"entries": [], "next_collection_link": "https://evil.example/devel/x"});
        assert!(
            parse_team_page(&elsewhere, api).is_err(),
            "a next page off the API is not followed"
        );
        assert!(parse_team_page(&serde_json::json!({"error": 1}), api).is_err());
        assert_eq!(
            matching_teams(
                &["Kiln-Devs".to_string(), "ops".to_string()],
                ["kiln-devs", "other"]
            ),
            vec!["Kiln-Devs".to_string()]
        );
    }

    #[test]
    fn retries_back_off_up_to_the_refresh_period() {
        let d = |r, f| retry_delay(r, f).as_secs();
        assert_eq!(
            [d(3600, 1), d(3600, 2), d(3600, 3), d(3600, 7), d(3600, 30)],
            [60, 120, 240, 3600, 3600]
        );
        assert_eq!([d(1, 1), d(1, 5)], [1, 1]);
        assert_eq!([d(100, 1), d(100, 2), d(100, 3)], [60, 100, 100]);
        assert_eq!(d(3600, i32::MAX), 3600);
    }
}
