//! OpenID Connect sign-in end to end in a real browser: Debian's headless Chromium (driven from
//! Node with playwright-core, `tests/browser/oidc-login.mjs`) signs in to the console through the
//! OpenID-certified node `oidc-provider` (`tests/browser/oidc-provider.mjs`, on loopback) and the
//! real `kiln-master` serving the built console. Where `oidc.rs` plays the browser by hand to
//! tamper with each hop, this one is a person: the login page's provider link, the provider's
//! form, back to the dashboard with the groups mapped to their team; and someone in no mapped
//! group is sent back to the login page, which says why.
//!
//! The console is at `http://localhost:PORT` and the provider at `http://127.0.0.1:PORT2`: two
//! sites, as in real life, so the browser's cookie rules (SameSite) apply to the redirects.
//!
//! Needs the console built (`scripts/build-console.sh`), Node and `npm ci` in tests/browser;
//! `scripts/test.sh` does all that and runs this tier.

use crate::oidc::{repo_root, TestProvider, SECRET};
use kiln_tests::proc::die_with_parent;
use kiln_tests::{free_port, Farm, FarmOptions};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

const MAPPED_GROUP: &str = "kiln-board-builders";
const TEAM: &str = "boards";
const ROLE: &str = "builder";
const LABEL: &str = "Corp SSO";

#[tokio::test]
#[ignore = "browser tier: needs the built console, Node and Chromium (scripts/test.sh runs it)"]
async fn signing_in_with_openid_connect_in_a_real_browser() {
    let root = repo_root();
    let dist = root.join("frontend/dist");
    assert!(
        dist.join("index.html").exists(),
        "the console is not built: run scripts/build-console.sh"
    );
    let dir = kiln_tests::tempdir("kiln-oidc-browser-");
    // The master's URL must be known before either starts: the provider registers the callback,
    // the master reads the provider's issuer. `localhost` (the master listens on 127.0.0.1) makes
    // the console another site than the provider's 127.0.0.1.
    let port = free_port();
    let public_url = format!("http://localhost:{port}");
    let op = TestProvider::start(
        dir.path(),
        &format!("{public_url}/auth/oidc/corp/callback"),
        json!([
            {"id": "sub-alice", "username": "alice", "email": "alice@example.org",
             "groups": ["staff", MAPPED_GROUP]},
            {"id": "sub-bob", "username": "bob", "email": "bob@example.org", "groups": ["staff"]},
        ]),
        false,
    );
    let secret = dir.path().join("corp.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let farm = Farm::with(FarmOptions {
        tls: false,
        listen: Some(format!("127.0.0.1:{port}")),
        extra_master_toml: format!(
            "public_url = \"{public_url}\"\nconsole_dir = \"{}\"\n",
            dist.display()
        ),
        extra_toml: format!(
            "[[auth.oidc]]\nname = \"corp\"\ndisplay_name = \"{LABEL}\"\nissuer = \"{}\"\nclient_id = \"kiln\"\nclient_secret_file = \"{}\"\nscopes = [\"openid\", \"profile\", \"email\", \"groups\"]\n",
            op.issuer,
            secret.display()
        ),
        ..Default::default()
    })
    .await;
    let (status, body) = farm.post("/api/teams", json!({"name": TEAM})).await;
    assert_eq!(status, 201, "creating the team: {body}");
    let (status, body) = farm
        .post(
            &format!("/api/teams/{TEAM}/mappings"),
            json!({"provider": "oidc:corp", "group": MAPPED_GROUP, "role": ROLE}),
        )
        .await;
    assert!(
        status == 201 || status == 200,
        "mapping the group: {status} {body}"
    );

    let out = std::env::var_os("KILN_TEST_OUTPUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/browser-test-output"))
        .join("oidc");
    let mut c = Command::new("node");
    c.arg(root.join("tests/browser/oidc-login.mjs"))
        .env("KILN_URL", &public_url)
        .env("OIDC_ISSUER", &op.issuer)
        .env("KILN_PROVIDER_LABEL", LABEL)
        .env("KILN_MEMBER", "alice")
        .env("KILN_TEAM", TEAM)
        .env("KILN_ROLE", ROLE)
        .env("KILN_OUTSIDER", "bob")
        .env("KILN_OUT", &out)
        .stdin(Stdio::null());
    die_with_parent(&mut c, libc::SIGKILL);
    let mut c = tokio::process::Command::from(c);
    c.kill_on_drop(true);
    let result = tokio::time::timeout(Duration::from_secs(300), c.output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the browser test did not end in 5 minutes (screenshots in {})",
                out.display()
            )
        })
        .expect("node (install nodejs) and tests/browser/node_modules (npm ci)");
    let stdout = String::from_utf8_lossy(&result.stdout);
    println!("{stdout}");
    assert!(
        result.status.success(),
        "OpenID Connect browser test failed (screenshots in {}):\n{stdout}\n{}\nthe provider's log:\n{}",
        out.display(),
        String::from_utf8_lossy(&result.stderr),
        op.log()
    );

    // The browser went through the provider's form (not a shortcut), and Kiln redeemed the code
    // and read the groups from userinfo.
    let log = op.log();
    for want in ["POST /interaction/", "POST /token", "GET /me"] {
        assert!(
            log.contains(want),
            "the provider never served {want}:\n{log}"
        );
    }
    // The member has an account now; the one refused has none.
    let users: Value = farm.get("/api/users").await;
    let names: Vec<&str> = users
        .as_array()
        .expect("a list of users")
        .iter()
        .filter_map(|u| u["username"].as_str())
        .collect();
    assert!(names.contains(&"alice"), "{names:?}");
    assert!(
        !names.contains(&"bob"),
        "no account is made for someone refused: {names:?}"
    );
}
