//! OpenID Connect sign-in against a real provider: the OpenID-certified node `oidc-provider`
//! (`tests/browser/oidc-provider.mjs`, on loopback) and the real `kiln-master` binary. A test
//! plays the browser with its own cookie jar and follows every redirect by hand, so each hop can
//! be looked at (and tampered with). Needs Node and `npm ci` in tests/browser (scripts/test.sh
//! runs it before this tier).

use kiln_tests::proc::{Killed, Service};
use kiln_tests::{free_port, Farm, FarmOptions, Postgres};
use reqwest::cookie::{CookieStore, Jar};
use reqwest::{StatusCode, Url};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

pub(crate) const SECRET: &str = "a-client-secret-for-kiln-tests";
const MAPPED_GROUP: &str = "kiln-builders";

pub(crate) fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The test provider, running.
pub(crate) struct TestProvider {
    pub(crate) issuer: String,
    log: PathBuf,
    _child: Killed,
}

impl TestProvider {
    pub(crate) fn start(
        dir: &Path,
        redirect_uri: &str,
        accounts: Value,
        claims_in_id_token: bool,
    ) -> Self {
        let browser_dir = repo_root().join("tests/browser");
        assert!(
            browser_dir
                .join("node_modules/oidc-provider/package.json")
                .exists(),
            "{} has no oidc-provider: run `npm ci` in tests/browser (scripts/test.sh does)",
            browser_dir.join("node_modules").display()
        );
        let log = dir.join("oidc-provider.log");
        let (child, issuer) = Service {
            name: "the test OpenID provider",
            log: &log,
            timeout: Duration::from_secs(20),
            attempts: 3,
        }
        .start(
            || {
                let mut c = Command::new("node");
                c.arg(browser_dir.join("oidc-provider.mjs"))
                    .env("OIDC_PORT", "0")
                    .env("OIDC_CLIENT_ID", "kiln")
                    .env("OIDC_CLIENT_SECRET", SECRET)
                    .env("OIDC_REDIRECT_URI", redirect_uri)
                    .env("OIDC_ACCOUNTS", accounts.to_string())
                    .env(
                        "OIDC_CLAIMS_IN_ID_TOKEN",
                        if claims_in_id_token { "1" } else { "0" },
                    );
                c
            },
            |line| {
                line.strip_prefix("oidc-provider ready on ")
                    .map(str::to_string)
            },
        );
        TestProvider {
            issuer,
            log,
            _child: child,
        }
    }

    /// The provider's log so far (a line per request it served).
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A farm whose master has the provider `corp` and maps its group [`MAPPED_GROUP`] to the team
/// `builders` as builders.
struct Kiln {
    farm: Farm,
    op: TestProvider,
    _dir: tempfile::TempDir,
}

fn accounts() -> Value {
    json!([
        {"id": "sub-alice", "username": "alice", "email": "alice@example.org",
         "groups": ["staff", MAPPED_GROUP]},
        {"id": "sub-bob", "username": "bob", "email": "bob@example.org", "groups": ["staff"]},
    ])
}

impl Kiln {
    async fn start(claims_in_id_token: bool) -> Kiln {
        let dir = kiln_tests::tempdir("kiln-oidc-");
        // The master's address must be known before either starts: the provider registers the
        // callback, the master reads the provider's issuer.
        let port = free_port();
        let public_url = format!("http://127.0.0.1:{port}");
        let op = TestProvider::start(
            dir.path(),
            &format!("{public_url}/auth/oidc/corp/callback"),
            accounts(),
            claims_in_id_token,
        );
        let secret = dir.path().join("corp.secret");
        std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
        let farm = Farm::with(FarmOptions {
            tls: false,
            listen: Some(format!("127.0.0.1:{port}")),
            extra_master_toml: format!("public_url = \"{public_url}\"\n"),
            extra_toml: provider_toml(&op.issuer, &secret),
            ..Default::default()
        })
        .await;
        let (status, body) = farm.post("/api/teams", json!({"name": "builders"})).await;
        assert_eq!(status, 201, "creating the team: {body}");
        let (status, body) = farm
            .post(
                "/api/teams/builders/mappings",
                json!({"provider": "oidc:corp", "group": MAPPED_GROUP, "role": "builder"}),
            )
            .await;
        assert!(
            status == 201 || status == 200,
            "mapping the group: {status} {body}"
        );
        Kiln {
            farm,
            op,
            _dir: dir,
        }
    }

    fn callback_prefix(&self) -> String {
        format!("{}/auth/oidc/corp/callback", self.farm.url)
    }

    /// Who `GET /api/users` (as admin) lists.
    async fn usernames(&self) -> Vec<String> {
        let users: Value = self.farm.get("/api/users").await;
        users
            .as_array()
            .expect("a list of users")
            .iter()
            .map(|u| u["username"].as_str().unwrap().to_string())
            .collect()
    }
}

fn provider_toml(issuer: &str, secret: &Path) -> String {
    format!(
        "[[auth.oidc]]\nname = \"corp\"\ndisplay_name = \"Corp SSO\"\nissuer = \"{issuer}\"\nclient_id = \"kiln\"\nclient_secret_file = \"{}\"\nscopes = [\"openid\", \"profile\", \"email\", \"groups\"]\n",
        secret.display()
    )
}

/// A browser: its own cookies, no automatic redirects.
struct Browser {
    http: reqwest::Client,
    jar: Arc<Jar>,
}

impl Browser {
    fn new() -> Browser {
        let jar = Arc::new(Jar::default());
        let http = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Browser { http, jar }
    }

    /// The value of cookie `name` this browser would send to `url`.
    fn cookie(&self, url: &str, name: &str) -> Option<String> {
        let all = self.jar.cookies(&Url::parse(url).unwrap())?;
        all.to_str()
            .unwrap()
            .split("; ")
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }

    /// `GET` Kiln's login for `corp`: checks the redirect to the provider and returns its URL.
    async fn start(&self, kiln: &Kiln, return_to: Option<&str>) -> Url {
        let mut url = Url::parse(&format!("{}/auth/oidc/corp/login", kiln.farm.url)).unwrap();
        if let Some(r) = return_to {
            url.query_pairs_mut().append_pair("return_to", r);
        }
        let r = self.http.get(url).send().await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::SEE_OTHER,
            "login: {:?}",
            r.headers()
        );
        let to = Url::parse(location(&r).unwrap()).unwrap();
        assert!(
            to.as_str()
                .starts_with(&format!("{}/auth?", kiln.op.issuer)),
            "login goes to the provider's authorization endpoint: {to}"
        );
        let q = params(&to);
        assert_eq!(q("response_type").as_deref(), Some("code"));
        assert_eq!(q("client_id").as_deref(), Some("kiln"));
        assert_eq!(
            q("redirect_uri").as_deref(),
            Some(kiln.callback_prefix().as_str())
        );
        assert_eq!(q("code_challenge_method").as_deref(), Some("S256"));
        assert!(q("code_challenge").is_some_and(|c| c.len() >= 43), "{to}");
        assert!(q("nonce").is_some_and(|n| n.len() >= 16), "{to}");
        let scope = q("scope").unwrap();
        assert!(
            scope.split(' ').any(|s| s == "openid") && scope.split(' ').any(|s| s == "groups"),
            "{scope}"
        );
        // The flow is bound to this browser: the flow cookie holds the state.
        let state = q("state").expect("a state");
        assert!(state.len() >= 32, "{state}");
        assert_eq!(
            self.cookie(&kiln.farm.url, "kiln_login").as_deref(),
            Some(state.as_str()),
            "the flow cookie holds the state"
        );
        to
    }

    /// Follows the provider's redirects, signing in as `account` on its form, until it sends
    /// the browser back to Kiln's callback; returns that URL (not visited).
    async fn at_provider(&self, kiln: &Kiln, mut url: Url, account: &str) -> Url {
        let callback = kiln.callback_prefix();
        for _ in 0..20 {
            let r = self.http.get(url.clone()).send().await.unwrap();
            let r = if r.status() == StatusCode::OK {
                let page = r.text().await.unwrap();
                let action = page
                    .split("<form method=\"post\" action=\"")
                    .nth(1)
                    .and_then(|s| s.split('"').next())
                    .unwrap_or_else(|| panic!("the provider's page at {url} has no form:\n{page}"));
                assert!(
                    page.contains(&format!("value=\"{account}\"")),
                    "no button for {account}:\n{page}"
                );
                self.http
                    .post(url.join(action).unwrap())
                    .form(&[("account", account)])
                    .send()
                    .await
                    .unwrap()
            } else {
                r
            };
            assert!(
                r.status().is_redirection(),
                "the provider answered {} at {url}:\n{}\nits log:\n{}",
                r.status(),
                r.text().await.unwrap_or_default(),
                kiln.op.log()
            );
            url = url.join(location(&r).unwrap()).unwrap();
            if url.as_str().starts_with(&callback) {
                return url;
            }
        }
        panic!("the provider never sent the browser back to Kiln");
    }

    /// Visits Kiln's callback.
    async fn callback(&self, url: &Url) -> Answer {
        let r = self.http.get(url.clone()).send().await.unwrap();
        Answer {
            status: r.status(),
            location: location(&r).map(str::to_string),
            set_session: r
                .headers()
                .get_all(reqwest::header::SET_COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|c| c.starts_with("kiln_session=") && !c.starts_with("kiln_session=;")),
        }
    }

    /// `GET /api/me` with this browser's cookies: the status and the body.
    async fn me(&self, kiln: &Kiln) -> (StatusCode, Value) {
        let r = self
            .http
            .get(format!("{}/api/me", kiln.farm.url))
            .send()
            .await
            .unwrap();
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// The whole sign-in as `account`.
    async fn sign_in(&self, kiln: &Kiln, account: &str, return_to: Option<&str>) -> (Url, Answer) {
        let at = self.start(kiln, return_to).await;
        let back = self.at_provider(kiln, at, account).await;
        let answer = self.callback(&back).await;
        (back, answer)
    }
}

/// What Kiln's callback answered.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    location: Option<String>,
    /// Whether it started a session (a non-empty session cookie).
    set_session: bool,
}

impl Answer {
    fn assert_signed_in(&self, to: &str) {
        assert_eq!(self.status, StatusCode::SEE_OTHER, "{self:?}");
        assert_eq!(self.location.as_deref(), Some(to), "{self:?}");
        assert!(self.set_session, "a session was started: {self:?}");
    }

    /// Checks it is a refusal (303 to the login page, no session) and returns the reason shown.
    fn refusal(&self) -> String {
        assert_eq!(self.status, StatusCode::SEE_OTHER, "{self:?}");
        assert!(
            !self.set_session,
            "a refused sign-in starts no session: {self:?}"
        );
        let loc = self.location.as_deref().expect("a Location");
        assert!(loc.starts_with("/login?error="), "{loc}");
        let url = Url::parse(&format!("http://x{loc}")).unwrap();
        let q = params(&url);
        q("error").unwrap()
    }
}

fn location(r: &reqwest::Response) -> Option<&str> {
    r.headers()
        .get(reqwest::header::LOCATION)
        .map(|v| v.to_str().unwrap())
}

fn params(url: &Url) -> impl Fn(&str) -> Option<String> {
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    move |k| {
        pairs
            .iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.clone())
    }
}

/// `url` with query parameter `k` set to `v` (added when absent).
fn with_param(url: &Url, k: &str, v: &str) -> Url {
    let mut pairs: Vec<(String, String)> = url
        .query_pairs()
        .into_owned()
        .filter(|(name, _)| name != k)
        .collect();
    pairs.push((k.to_string(), v.to_string()));
    let mut out = url.clone();
    out.query_pairs_mut().clear().extend_pairs(pairs);
    out
}

#[tokio::test]
async fn a_member_of_a_mapped_group_signs_in_with_the_groups_from_userinfo() {
    let kiln = Kiln::start(false).await;
    let b = Browser::new();
    let (_, answer) = b.sign_in(&kiln, "sub-alice", None).await;
    answer.assert_signed_in("/");
    assert!(
        b.cookie(&kiln.farm.url, "kiln_session").is_some(),
        "the browser keeps the session cookie"
    );
    assert_eq!(
        b.cookie(&kiln.farm.url, "kiln_login"),
        None,
        "the flow cookie is gone"
    );
    let (status, me) = b.me(&kiln).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["username"], "alice", "{me}");
    assert_eq!(me["email"], "alice@example.org", "{me}");
    assert_eq!(me["via"], "session", "{me}");
    assert_eq!(
        me["teams"],
        json!([{"team": "builders", "role": "builder"}]),
        "{me}"
    );
    // The provider's ID token held no groups (OpenID Connect Core: with an access token the
    // profile claims are userinfo's), so Kiln asked the userinfo endpoint.
    assert!(kiln.op.log().contains("GET /me"), "{}", kiln.op.log());

    // Signing in again (another browser) is the same person, not a new user.
    let again = Browser::new();
    let (_, answer) = again.sign_in(&kiln, "sub-alice", Some("/builds/7")).await;
    answer.assert_signed_in("/builds/7");
    assert_eq!(again.me(&kiln).await.1["username"], "alice");
    let users = kiln.usernames().await;
    assert_eq!(
        users.iter().filter(|u| u.starts_with("alice")).count(),
        1,
        "{users:?}"
    );

    // return_to never leaves the site.
    let (_, answer) = Browser::new()
        .sign_in(&kiln, "sub-alice", Some("//evil.example/x"))
        .await;
    answer.assert_signed_in("/");

    // An unknown provider is a JSON 404.
    let r = b
        .http
        .get(format!("{}/auth/oidc/nope/login", kiln.farm.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body: Value = r.json().await.expect("a JSON error");
    assert!(
        body.to_string().contains("nope"),
        "the error names the provider: {body}"
    );
}

#[tokio::test]
async fn groups_in_the_id_token_need_no_userinfo() {
    let kiln = Kiln::start(true).await;
    let b = Browser::new();
    let (_, answer) = b.sign_in(&kiln, "sub-alice", Some("/projects")).await;
    answer.assert_signed_in("/projects");
    let me = b.me(&kiln).await.1;
    assert_eq!(
        me["teams"],
        json!([{"team": "builders", "role": "builder"}]),
        "{me}"
    );
    assert_eq!(me["username"], "alice", "{me}");
    assert!(
        !kiln.op.log().contains("GET /me"),
        "everything was in the ID token: {}",
        kiln.op.log()
    );
}

#[tokio::test]
async fn a_replayed_callback_is_refused() {
    let kiln = Kiln::start(false).await;
    let b = Browser::new();
    let at = b.start(&kiln, Some("/projects")).await;
    let state = params(&at)("state").unwrap();
    let back = b.at_provider(&kiln, at, "sub-alice").await;
    b.callback(&back).await.assert_signed_in("/projects");

    // The same browser again: its flow cookie is gone.
    let answer = b.callback(&back).await;
    assert_eq!(answer.refusal(), "wrong or expired state");

    // A browser that kept the flow cookie (or a thief of it): the flow was used.
    let thief = Browser::new();
    thief.jar.add_cookie_str(
        &format!("kiln_login={state}; Path=/"),
        &Url::parse(&kiln.farm.url).unwrap(),
    );
    assert_eq!(thief.cookie(&kiln.farm.url, "kiln_login"), Some(state));
    let answer = thief.callback(&back).await;
    assert_eq!(answer.refusal(), "wrong or expired state");
    let (status, _) = thief.me(&kiln).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the replay made no session"
    );
}

#[tokio::test]
async fn a_wrong_state_is_refused() {
    let kiln = Kiln::start(false).await;
    let b = Browser::new();
    let at = b.start(&kiln, None).await;
    let back = b.at_provider(&kiln, at, "sub-alice").await;

    // Someone else's browser handed this callback (login CSRF): no flow cookie, refused.
    let victim = Browser::new();
    assert_eq!(
        victim.callback(&back).await.refusal(),
        "wrong or expired state"
    );
    assert_eq!(victim.me(&kiln).await.0, StatusCode::UNAUTHORIZED);

    // The right browser with another state.
    let forged = with_param(&back, "state", &"0".repeat(64));
    assert_eq!(
        b.callback(&forged).await.refusal(),
        "wrong or expired state"
    );
    // Without any state.
    let mut none = back.clone();
    none.set_query(Some(&format!("code={}", params(&back)("code").unwrap())));
    assert_eq!(b.callback(&none).await.refusal(), "wrong or expired state");
    assert_eq!(b.me(&kiln).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_wrong_nonce_is_refused() {
    let kiln = Kiln::start(false).await;
    let b = Browser::new();
    let at = b.start(&kiln, None).await;
    // The provider is asked for another nonce (state and code challenge unchanged): the code
    // exchange works, but the ID token carries the other nonce.
    let tampered = with_param(&at, "nonce", "a-nonce-kiln-never-made");
    // (and signs in without its form, as `login_hint` lets the test provider do)
    let tampered = with_param(&tampered, "login_hint", "sub-alice");
    let back = b.at_provider(&kiln, tampered, "sub-alice").await;
    assert!(
        !kiln.op.log().contains("/login"),
        "no form was posted: {}",
        kiln.op.log()
    );
    assert_eq!(b.callback(&back).await.refusal(), "wrong nonce");
    assert_eq!(b.me(&kiln).await.0, StatusCode::UNAUTHORIZED);
    assert!(
        kiln.op.log().contains("POST /token"),
        "the code was exchanged (the refusal is the nonce's): {}",
        kiln.op.log()
    );
}

#[tokio::test]
async fn someone_in_no_mapped_group_is_refused() {
    let kiln = Kiln::start(false).await;
    let b = Browser::new();
    let (_, answer) = b.sign_in(&kiln, "sub-bob", None).await;
    let why = answer.refusal();
    assert!(why.contains("bob") && why.contains("no group"), "{why}");
    assert_eq!(b.me(&kiln).await.0, StatusCode::UNAUTHORIZED);
    assert!(
        !kiln.usernames().await.contains(&"bob".to_string()),
        "no account is made for someone refused"
    );
}

/// Runs `kiln-master` with a config holding one provider `corp` at `issuer` and returns what it
/// printed when it stopped (it must stop, and fail).
async fn master_fails_with(issuer: &str, secret: &Path) -> String {
    let dir = kiln_tests::tempdir("kiln-oidc-bad-");
    let config = dir.path().join("kiln.toml");
    std::fs::write(
        &config,
        format!(
            "version = 1\n[master]\npublic_url = \"http://127.0.0.1:8080\"\n[database]\nurl = \"{}\"\nmax_connections = 2\n{}",
            Postgres::shared().new_database(),
            provider_toml(issuer, secret)
        ),
    )
    .unwrap();
    let mut c = tokio::process::Command::new(kiln_tests::bin_dir().join("kiln-master"));
    c.arg("--config")
        .arg(&config)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .env("KILN_LOG", "info")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), c.output())
        .await
        .expect("the master stops by itself")
        .expect("kiln-master runs");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "the master must fail:\n{printed}");
    assert!(!printed.contains("kiln-master ready"), "{printed}");
    printed
}

#[tokio::test]
async fn a_provider_that_does_not_answer_stops_the_master_at_start() {
    // Accepts connections (the kernel does) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let issuer = format!("http://{}", silent.local_addr().unwrap());
    let dir = kiln_tests::tempdir("kiln-oidc-secret-");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let printed = master_fails_with(&issuer, &secret).await;
    assert!(
        printed.contains(&format!(
            "OpenID Connect provider 'corp': cannot read {issuer}/.well-known/openid-configuration"
        )),
        "the error names the provider and the URL:\n{printed}"
    );
    assert!(printed.contains("timed out"), "and why:\n{printed}");
    drop(silent);
}

#[tokio::test]
async fn a_missing_client_secret_stops_the_master_at_start() {
    let dir = kiln_tests::tempdir("kiln-oidc-secret-");
    let printed = master_fails_with("http://127.0.0.1:9", &dir.path().join("nowhere")).await;
    assert!(
        printed.contains("OpenID Connect provider 'corp'")
            && printed.contains("auth.oidc.client_secret_file")
            && printed.contains("nowhere"),
        "the error names the provider, the key and the file:\n{printed}"
    );
}

/// Group mappings are data an admin edits: deleting one takes the team away from the people it
/// let in at once (their open sessions included), and a new one gives it without a new sign-in.
#[tokio::test]
async fn changing_a_mapping_changes_access_at_once() {
    let kiln = Kiln::start(false).await;
    let b = Browser::new();
    b.sign_in(&kiln, "sub-alice", None)
        .await
        .1
        .assert_signed_in("/");
    let (status, body) = kiln
        .farm
        .post(
            "/api/projects",
            json!({"name": "p", "branch_url": "https://git.example.org/p.git", "team": "builders"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let project = |b: &Browser| {
        let http = b.http.clone();
        let url = format!("{}/api/projects/p", kiln.farm.url);
        async move { http.get(url).send().await.unwrap().status() }
    };
    assert_eq!(project(&b).await, StatusCode::OK);
    let mappings: Value = kiln.farm.get("/api/teams/builders/mappings").await;
    let id = mappings[0]["id"].as_i64().unwrap();
    let r = kiln
        .farm
        .http
        .delete(kiln.farm.api(&format!("/api/teams/builders/mappings/{id}")))
        .bearer_auth(&kiln.farm.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(b.me(&kiln).await.1["teams"], json!([]));
    assert_eq!(project(&b).await, StatusCode::NOT_FOUND);
    // Mapped again (as a viewer): alice is back in at once, with that role.
    let (status, _) = kiln
        .farm
        .post(
            "/api/teams/builders/mappings",
            json!({"provider": "oidc:corp", "group": MAPPED_GROUP, "role": "viewer"}),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(
        b.me(&kiln).await.1["teams"],
        json!([{"team": "builders", "role": "viewer"}])
    );
    assert_eq!(project(&b).await, StatusCode::OK);
}
