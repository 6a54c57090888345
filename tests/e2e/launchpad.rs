//! Launchpad sign-in end to end: the real master against a real OpenID 2.0 provider on loopback
//! (python3-openid's server with python-openid-teams, `tests/launchpad/fake_launchpad.py`) and a
//! stand-in for Launchpad's REST API speaking its wire format (`super_teams` collections), driven
//! like a browser would: the login redirect, the provider's answer (a redirect, or an
//! auto-submitted form), the callback, then `/api/me` with the session cookie.

use kiln_tests::proc::{Killed, Service};
use kiln_tests::{Farm, FarmOptions};
use reqwest::{redirect, StatusCode, Url};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

// ---- the fake Launchpad -------------------------------------------------------------------------

/// Installs the provider's PyPI dependency once (tests/launchpad/install.sh: idempotent, locked)
/// into the target dir; the directory for PYTHONPATH.
fn pydeps() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        kiln_tests::install_into_target(
            "launchpad/install.sh",
            "KILN_PYDEPS_DIR",
            "launchpad-py",
            "scripts/install-deps.sh installs python3-openid",
        )
    })
}

/// `tests/launchpad/fake_launchpad.py`: the provider and the REST API, with their control.
struct FakeLaunchpad {
    /// `http://127.0.0.1:P` (the endpoint is `{openid}/+openid`).
    openid: String,
    /// `http://127.0.0.1:Q/devel`.
    api: String,
    http: reqwest::Client,
    log: PathBuf,
    _child: Killed,
    _dir: tempfile::TempDir,
}

impl FakeLaunchpad {
    fn start() -> FakeLaunchpad {
        let deps = pydeps();
        let dir = kiln_tests::tempdir("kiln-launchpad-");
        let log = dir.path().join("launchpad.log");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("launchpad/fake_launchpad.py");
        let (child, urls) = Service {
            name: "fake_launchpad.py",
            log: &log,
            timeout: Duration::from_secs(20),
            attempts: 3,
        }
        .start(
            || {
                let mut c = Command::new("/usr/bin/python3");
                c.arg(&script)
                    .env("PYTHONPATH", deps)
                    .env("PYTHONDONTWRITEBYTECODE", "1");
                c
            },
            |line| serde_json::from_str::<Value>(line).ok(),
        );
        FakeLaunchpad {
            openid: urls["openid"].as_str().unwrap().to_string(),
            api: urls["api"].as_str().unwrap().to_string(),
            http: reqwest::Client::new(),
            log,
            _child: child,
            _dir: dir,
        }
    }

    fn endpoint(&self) -> String {
        format!("{}/+openid", self.openid)
    }

    fn id_prefix(&self) -> String {
        format!("{}/+id/", self.openid)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn put(&self, path: &str, body: Value) {
        let r = self
            .http
            .put(format!("{}{path}", self.openid))
            .json(&body)
            .send()
            .await
            .expect("the fake Launchpad's control");
        assert_eq!(
            r.status(),
            StatusCode::NO_CONTENT,
            "PUT {path}: {:?}",
            r.text().await
        );
    }

    /// A Launchpad person and the teams they are in (at the provider and in the REST API).
    async fn person(&self, name: &str, teams: &[&str]) {
        self.put(
            &format!("/_test/people/{name}"),
            json!({"teams": teams, "email": format!("{name}@example.org")}),
        )
        .await;
    }

    /// Who is signed in at the provider, and how it answers (see SESSION_DEFAULTS there).
    async fn session(&self, s: Value) {
        self.put("/_test/session", s).await;
    }

    async fn api_mode(&self, m: Value) {
        self.put("/_test/api", m).await;
    }

    async fn stats(&self) -> Value {
        self.http
            .get(format!("{}/_test/stats", self.openid))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats JSON")
    }

    /// REST reads of `name`'s teams that succeeded / failed.
    async fn reads(&self, name: &str) -> (u64, u64) {
        let s = self.stats().await;
        let c = &s["super_teams"][name];
        (
            c["ok"].as_u64().unwrap_or(0),
            c["failed"].as_u64().unwrap_or(0),
        )
    }
}

/// A farm whose master signs in with `lp`, refreshing memberships every `refresh_secs`.
async fn farm_for(lp: &FakeLaunchpad, refresh_secs: u64) -> Farm {
    let port = kiln_tests::free_port();
    Farm::with(FarmOptions {
        listen: Some(format!("127.0.0.1:{port}")),
        tls: false,
        extra_master_toml: format!("public_url = \"http://127.0.0.1:{port}\"\n"),
        extra_toml: format!(
            "[auth.launchpad]\ndisplay_name = \"Launchpad (test)\"\nendpoint = \"{}\"\nclaimed_id_prefix = \"{}\"\napi_url = \"{}\"\nrefresh_secs = {refresh_secs}\n",
            lp.endpoint(),
            lp.id_prefix(),
            lp.api
        ),
        ..Default::default()
    })
    .await
}

/// An admin makes Kiln team `team` and maps Launchpad team `group` to it with `role`.
async fn map(farm: &Farm, team: &str, group: &str, role: &str) {
    let teams: Vec<Value> = farm.get("/api/teams").await;
    if !teams.iter().any(|t| t["name"] == team) {
        let (s, v) = farm.post("/api/teams", json!({ "name": team })).await;
        assert_eq!(s, 201, "creating team {team}: {v}");
    }
    let (s, v) = farm
        .post(
            &format!("/api/teams/{team}/mappings"),
            json!({"provider": "launchpad", "group": group, "role": role}),
        )
        .await;
    assert_eq!(s, 201, "mapping {group} to {team}: {v}");
}

/// The refusals of sign-ins in the audit log (newest first).
async fn refusals(farm: &Farm) -> Vec<Value> {
    farm.get("/api/audit?action=login_refused").await
}

// ---- a browser --------------------------------------------------------------------------------

/// The provider's answer as a browser gets it.
#[derive(Clone, Debug)]
enum Answer {
    /// A redirect to this callback URL.
    Redirect(String),
    /// An auto-submitted form: POST these fields to `action`.
    Form {
        action: String,
        fields: Vec<(String, String)>,
    },
}

impl Answer {
    fn fields(&self) -> Vec<(String, String)> {
        match self {
            Answer::Redirect(u) => Url::parse(u).unwrap().query_pairs().into_owned().collect(),
            Answer::Form { fields, .. } => fields.clone(),
        }
    }

    fn field(&self, k: &str) -> Option<String> {
        self.fields()
            .into_iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v)
    }

    /// The same answer with field `k` set to `v` (a tampering attacker).
    fn with(&self, k: &str, v: &str) -> Answer {
        match self {
            Answer::Redirect(u) => {
                let mut url = Url::parse(u).unwrap();
                let pairs: Vec<(String, String)> = url
                    .query_pairs()
                    .into_owned()
                    .map(|(n, old)| if n == k { (n, v.to_string()) } else { (n, old) })
                    .collect();
                url.query_pairs_mut().clear().extend_pairs(pairs);
                Answer::Redirect(url.into())
            }
            Answer::Form { action, fields } => Answer::Form {
                action: action.clone(),
                fields: fields
                    .iter()
                    .map(|(n, old)| (n.clone(), if n == k { v.to_string() } else { old.clone() }))
                    .collect(),
            },
        }
    }
}

/// How a sign-in ended.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// A session; the browser goes on to this path.
    SignedIn(String),
    /// Sent to the login page with this reason.
    Refused(String),
}

impl Outcome {
    #[track_caller]
    fn refused_because(&self, needle: &str) {
        match self {
            Outcome::Refused(why) => assert!(
                why.contains(needle),
                "refused because {why:?}, not {needle:?}"
            ),
            other => panic!("expected a refusal ({needle}), got {other:?}"),
        }
    }
}

struct Browser {
    http: reqwest::Client,
    farm: String,
}

fn html_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#10;", "\n")
        .replace("&#39;", "'")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// The value of attribute `name` in an HTML tag.
fn attr(tag: &str, name: &str) -> Option<String> {
    let at = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let end = tag[at..].find('"')?;
    Some(html_unescape(&tag[at..at + end]))
}

impl Browser {
    fn new(farm: &Farm) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            farm: farm.url.clone(),
        }
    }

    fn location(r: &reqwest::Response) -> String {
        r.headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    /// Clicks "Sign in with Launchpad" and lets the provider answer (without delivering it).
    async fn to_provider(&self, lp: &FakeLaunchpad) -> Answer {
        let r = self
            .http
            .get(format!(
                "{}/auth/launchpad/login?return_to=%2Fprojects",
                self.farm
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{:?}", r.text().await);
        let to = Self::location(&r);
        assert!(
            to.starts_with(&format!("{}?", lp.endpoint())),
            "login went to {to}"
        );
        let r = self.http.get(&to).send().await.unwrap();
        match r.status() {
            StatusCode::FOUND => Answer::Redirect(Self::location(&r)),
            StatusCode::OK => {
                let html = r.text().await.unwrap();
                let form_at = html.find("<form").expect("a form");
                let form_tag = &html[form_at..form_at + html[form_at..].find('>').unwrap()];
                let action = attr(form_tag, "action").expect("the form's action");
                let fields = html
                    .split("<input ")
                    .skip(1)
                    .filter(|t| t.contains("type=\"hidden\""))
                    .filter_map(|t| Some((attr(t, "name")?, attr(t, "value")?)))
                    .collect();
                Answer::Form { action, fields }
            }
            s => panic!(
                "the provider answered {s}: {:?}\n{}",
                r.text().await,
                lp.log()
            ),
        }
    }

    /// Delivers a provider's answer to the master, as the browser would.
    async fn deliver(&self, answer: &Answer) -> Outcome {
        let callback = match answer {
            Answer::Redirect(u) => u.clone(),
            Answer::Form { action, fields } => {
                let r = self.http.post(action).form(fields).send().await.unwrap();
                assert_eq!(
                    r.status(),
                    StatusCode::SEE_OTHER,
                    "posting the answer: {:?}",
                    r.text().await
                );
                let to = Self::location(&r);
                assert!(
                    to.starts_with(&format!("{}/auth/launchpad/callback?", self.farm)),
                    "{to}"
                );
                to
            }
        };
        self.finish(self.http.get(&callback)).await
    }

    async fn finish(&self, req: reqwest::RequestBuilder) -> Outcome {
        let r = req.send().await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::SEE_OTHER,
            "the callback: {:?}",
            r.text().await
        );
        let to = Self::location(&r);
        match to.strip_prefix("/login?error=") {
            Some(why) => Outcome::Refused(
                Url::parse(&format!("http://x/?e={why}"))
                    .unwrap()
                    .query_pairs()
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default(),
            ),
            None => Outcome::SignedIn(to),
        }
    }

    async fn sign_in(&self, lp: &FakeLaunchpad) -> (Answer, Outcome) {
        let a = self.to_provider(lp).await;
        let o = self.deliver(&a).await;
        (a, o)
    }

    /// `GET /api/me` with this browser's session: `None` when not signed in.
    async fn me(&self) -> Option<Value> {
        let r = self
            .http
            .get(format!("{}/api/me", self.farm))
            .send()
            .await
            .unwrap();
        match r.status() {
            StatusCode::UNAUTHORIZED => None,
            StatusCode::OK => Some(r.json().await.unwrap()),
            s => panic!("/api/me: {s}: {:?}", r.text().await),
        }
    }

    async fn teams(&self) -> Vec<(String, String)> {
        let me = self.me().await.expect("signed in");
        me["teams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["team"].as_str().unwrap().to_string(),
                    t["role"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Polls `check` until it gives a value, failing after `secs`.
async fn wait_for<T, F, Fut>(what: &str, secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---- the tests --------------------------------------------------------------------------------

#[tokio::test]
async fn launchpad_member_signs_in_with_the_mapped_role() {
    let lp = FakeLaunchpad::start();
    let farm = farm_for(&lp, 3600).await;
    map(&farm, "builders", "kiln-builders", "builder").await;
    map(&farm, "readers", "kiln-readers", "viewer").await;
    map(&farm, "ops", "kiln-ops", "maintainer").await;
    // The login page offers Launchpad.
    let providers: Value = farm.get("/auth/providers").await;
    assert!(
        providers["providers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == "launchpad"
                && p["login_url"] == "/auth/launchpad/login"
                && p["display_name"] == "Launchpad (test)"),
        "{providers}"
    );

    lp.person("alice", &["ubuntu-dev", "kiln-builders", "kiln-readers"])
        .await;
    lp.session(json!({"name": "alice"})).await;
    let alice = Browser::new(&farm);
    assert_eq!(alice.me().await, None);
    let (answer, outcome) = alice.sign_in(&lp).await;
    assert!(
        matches!(answer, Answer::Redirect(_)),
        "a short answer comes as a redirect"
    );
    assert_eq!(outcome, Outcome::SignedIn("/projects".into()));
    // The provider was asked about exactly the mapped teams.
    let asked = lp.stats().await["query_membership"].clone();
    assert_eq!(asked, json!(["kiln-builders", "kiln-ops", "kiln-readers"]));
    let me = alice.me().await.expect("signed in");
    assert_eq!(me["username"], "alice");
    assert_eq!(me["email"], "alice@example.org");
    assert_eq!(me["via"], "session");
    assert_eq!(
        alice.teams().await,
        pairs(&[("builders", "builder"), ("readers", "viewer")]),
        "the teams alice is in at Launchpad, with their mapped roles; not ops"
    );
    // The identity is the claimed id under the pinned prefix.
    let users: Vec<Value> = farm.get("/api/users").await;
    let u = users
        .iter()
        .find(|u| u["username"] == "alice")
        .expect("alice is a user");
    assert_eq!(u["logins"], json!(["launchpad"]));

    // A provider that answers with an auto-submitted form (a long answer) works too: the posted
    // answer is carried on to the GET callback, with the browser's login cookie.
    lp.person("bob", &["kiln-ops"]).await;
    lp.session(json!({"name": "bob", "form_post": true})).await;
    let bob = Browser::new(&farm);
    let (answer, outcome) = bob.sign_in(&lp).await;
    assert!(matches!(answer, Answer::Form { .. }), "{answer:?}");
    assert_eq!(outcome, Outcome::SignedIn("/projects".into()));
    assert_eq!(bob.teams().await, pairs(&[("ops", "maintainer")]));

    // Signing in again keeps the same user.
    lp.session(json!({"name": "alice"})).await;
    let again = Browser::new(&farm);
    assert_eq!(
        again.sign_in(&lp).await.1,
        Outcome::SignedIn("/projects".into())
    );
    assert_eq!(again.me().await.unwrap()["username"], "alice");
    let users: Vec<Value> = farm.get("/api/users").await;
    assert_eq!(
        users
            .iter()
            .filter(|u| u["logins"] == json!(["launchpad"]))
            .count(),
        2
    );
}

#[tokio::test]
async fn launchpad_non_member_is_refused() {
    let lp = FakeLaunchpad::start();
    let farm = farm_for(&lp, 3600).await;
    map(&farm, "builders", "kiln-builders", "builder").await;
    lp.person("carol", &["ubuntu-dev", "kiln-builders-fans"])
        .await;
    lp.session(json!({"name": "carol"})).await;
    let carol = Browser::new(&farm);
    let (answer, outcome) = carol.sign_in(&lp).await;
    // The provider vouched for carol, with no mapped team.
    assert_eq!(
        answer.field("openid.sreg.nickname").as_deref(),
        Some("carol")
    );
    assert_eq!(answer.field("openid.lp.is_member").as_deref(), Some(""));
    outcome.refused_because("no group");
    assert_eq!(carol.me().await, None, "no session");
    let users: Vec<Value> = farm.get("/api/users").await;
    assert!(
        users.iter().all(|u| u["username"] != "carol"),
        "no user made: {users:?}"
    );
    let audit = refusals(&farm).await;
    assert_eq!(audit[0]["detail"]["provider"], "launchpad", "{audit:?}");
    assert_eq!(audit[0]["actor"], "carol");

    // Cancelling at the provider is a refusal too.
    lp.session(json!({ "name": null })).await;
    let (answer, outcome) = carol.sign_in(&lp).await;
    assert_eq!(answer.field("openid.mode").as_deref(), Some("cancel"));
    outcome.refused_because("cancelled");
    assert_eq!(carol.me().await, None);
}

#[tokio::test]
async fn launchpad_replayed_assertion_is_refused() {
    let lp = FakeLaunchpad::start();
    let farm = farm_for(&lp, 3600).await;
    map(&farm, "builders", "kiln-builders", "builder").await;
    lp.person("alice", &["kiln-builders"]).await;
    lp.session(json!({"name": "alice"})).await;
    let alice = Browser::new(&farm);
    let (answer, outcome) = alice.sign_in(&lp).await;
    assert_eq!(outcome, Outcome::SignedIn("/projects".into()));
    let Answer::Redirect(url) = answer.clone() else {
        panic!("{answer:?}")
    };
    let flow = answer.field("lpflow").expect("the return_to's sign-in key");

    // Replayed in another browser (which has a sign-in of its own under way): refused.
    let mallory = Browser::new(&farm);
    let _ = mallory.to_provider(&lp).await;
    mallory
        .deliver(&answer)
        .await
        .refused_because("not started in this browser");
    assert_eq!(mallory.me().await, None);

    // Replayed with the login cookie of the original browser too: the sign-in was used.
    let plain = reqwest::Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .unwrap();
    let stolen = mallory
        .finish(
            plain
                .get(&url)
                .header("cookie", format!("kiln_login={flow}")),
        )
        .await;
    stolen.refused_because("already used");

    // The same response nonce in a new, otherwise valid answer (a provider vouching for it
    // again): the nonce was accepted once, so it is refused.
    let nonce = answer.field("openid.response_nonce").unwrap();
    let before = lp.stats().await["check_authentication"]["valid"]
        .as_u64()
        .unwrap();
    lp.session(json!({"name": "alice", "nonce": nonce})).await;
    let again = Browser::new(&farm);
    let (replay, outcome) = again.sign_in(&lp).await;
    assert_eq!(replay.field("openid.response_nonce"), Some(nonce));
    outcome.refused_because("replayed");
    assert_eq!(
        lp.stats().await["check_authentication"]["valid"]
            .as_u64()
            .unwrap(),
        before + 1,
        "the provider confirmed the answer; the nonce alone refused it"
    );
    assert_eq!(again.me().await, None);
    // alice's own session is untouched.
    assert_eq!(alice.teams().await, pairs(&[("builders", "builder")]));
}

#[tokio::test]
async fn launchpad_unsigned_is_member_is_ignored() {
    let lp = FakeLaunchpad::start();
    let farm = farm_for(&lp, 3600).await;
    map(&farm, "builders", "kiln-builders", "builder").await;
    map(&farm, "ops", "kiln-ops", "maintainer").await;

    // The provider lists kiln-builders in lp.is_member but does not sign it.
    lp.person("mallory", &["ubuntu-dev"]).await;
    lp.session(json!({"name": "mallory", "unsigned_is_member": "kiln-builders"}))
        .await;
    let mallory = Browser::new(&farm);
    let (answer, outcome) = mallory.sign_in(&lp).await;
    assert_eq!(
        answer.field("openid.lp.is_member").as_deref(),
        Some("kiln-builders")
    );
    let signed = answer.field("openid.signed").unwrap();
    assert!(!signed.split(',').any(|f| f == "lp.is_member"), "{signed}");
    assert!(signed.split(',').any(|f| f == "ns.lp"), "{signed}");
    // The answer itself is genuine (the sign-in got as far as the team check), but the unsigned
    // membership does not count.
    outcome.refused_because("no group");
    assert_eq!(mallory.me().await, None);

    // A signed is_member changed on the way (dave is in kiln-builders, claims kiln-ops too):
    // the provider does not confirm the answer.
    lp.person("dave", &["kiln-builders"]).await;
    lp.session(json!({"name": "dave"})).await;
    let dave = Browser::new(&farm);
    let answer = dave.to_provider(&lp).await;
    assert_eq!(
        answer.field("openid.lp.is_member").as_deref(),
        Some("kiln-builders")
    );
    let tampered = answer.with("openid.lp.is_member", "kiln-builders,kiln-ops");
    dave.deliver(&tampered)
        .await
        .refused_because("did not confirm");
    assert_eq!(dave.me().await, None);
    // Untampered, dave gets just what he is in.
    let dave = Browser::new(&farm);
    assert_eq!(
        dave.sign_in(&lp).await.1,
        Outcome::SignedIn("/projects".into())
    );
    assert_eq!(dave.teams().await, pairs(&[("builders", "builder")]));
}

#[tokio::test]
async fn launchpad_answers_outside_the_pinned_provider_are_refused() {
    let lp = FakeLaunchpad::start();
    let farm = farm_for(&lp, 3600).await;
    map(&farm, "builders", "kiln-builders", "builder").await;
    lp.person("alice", &["kiln-builders"]).await;
    let port = lp.openid.rsplit(':').next().unwrap().to_string();

    // An answer naming another provider endpoint (signed, and confirmed by this provider).
    lp.session(json!({"name": "alice", "op_endpoint": "http://127.0.0.1:9/+openid"}))
        .await;
    let b = Browser::new(&farm);
    b.sign_in(&lp).await.1.refused_because("not the configured");
    assert_eq!(b.me().await, None);

    // Claimed ids outside the configured prefix.
    for claimed in [
        format!("http://localhost:{port}/+id/alice"),
        format!("{}/+other/alice", lp.openid),
        format!("{}/+id/alice/../admin", lp.openid),
    ] {
        lp.session(json!({"name": "alice", "claimed_id": claimed}))
            .await;
        let b = Browser::new(&farm);
        let (answer, outcome) = b.sign_in(&lp).await;
        assert_eq!(answer.field("openid.claimed_id"), Some(claimed.clone()));
        outcome.refused_because("is not under");
        assert_eq!(b.me().await, None, "{claimed}");
    }

    // A sign-in whose answer lost its way to another return_to is refused too.
    lp.session(json!({"name": "alice"})).await;
    let b = Browser::new(&farm);
    let answer = b.to_provider(&lp).await;
    let Answer::Redirect(url) = &answer else {
        panic!("{answer:?}")
    };
    let flow = answer.field("lpflow").unwrap();
    let other = url.replace(
        &format!("callback%3F{}%3D{flow}", "lpflow"),
        &format!("callback%3Fx%3D1%26lpflow%3D{flow}"),
    );
    assert_ne!(&other, url);
    b.deliver(&Answer::Redirect(other))
        .await
        .refused_because("return_to");
    assert_eq!(b.me().await, None);
    assert!(refusals(&farm).await.len() >= 5);
}

#[tokio::test]
async fn launchpad_removed_member_loses_access_after_refresh() {
    let lp = FakeLaunchpad::start();
    // Pages of two teams: the mapped one is on the second page.
    lp.api_mode(json!({"page_size": 2})).await;
    let farm = farm_for(&lp, 1).await;
    map(&farm, "builders", "kiln-builders", "builder").await;
    lp.person("erin", &["aaa-team", "bbb-team", "kiln-builders"])
        .await;
    lp.session(json!({"name": "erin"})).await;
    let erin = Browser::new(&farm);
    assert_eq!(
        erin.sign_in(&lp).await.1,
        Outcome::SignedIn("/projects".into())
    );
    assert_eq!(erin.teams().await, pairs(&[("builders", "builder")]));

    // A refresh reads all pages and keeps the team.
    let (lpr, erinr) = (&lp, &erin);
    wait_for("a refresh of erin's teams", 30, || async move {
        (lpr.reads("erin").await.0 >= 1).then_some(())
    })
    .await;
    assert_eq!(erin.teams().await, pairs(&[("builders", "builder")]));

    // While the API fails, memberships stay as they are.
    lp.api_mode(json!({"fail": true})).await;
    wait_for("two failed refreshes", 30, || async move {
        (lpr.reads("erin").await.1 >= 2).then_some(())
    })
    .await;
    assert_eq!(erin.teams().await, pairs(&[("builders", "builder")]));

    // Erin leaves the Launchpad team: at the next refresh her session loses the team.
    lp.person("erin", &["aaa-team", "bbb-team"]).await;
    lp.api_mode(json!({"fail": false})).await;
    wait_for("erin to lose the builders team", 30, || async move {
        erinr.teams().await.is_empty().then_some(())
    })
    .await;
    // The audit entry is written just after the memberships change: wait for it as well.
    let farmr = &farm;
    let audit: Vec<Value> = wait_for("the refresh in the audit log", 30, || async move {
        let a: Vec<Value> = farmr.get("/api/audit?action=memberships_refreshed").await;
        (!a.is_empty()).then_some(a)
    })
    .await;
    assert_eq!(audit[0]["target"], "user erin", "{audit:?}");
    assert_eq!(audit[0]["detail"]["after"], json!([]));
    // And she cannot sign in again while in no mapped team.
    let again = Browser::new(&farm);
    again.sign_in(&lp).await.1.refused_because("in no team");
}
