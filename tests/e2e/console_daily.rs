//! The console as a board team's daily tool (issue 15), in a real browser: the project Settings
//! form keeps what is typed through live updates and saves exactly that; every page has its own
//! title; a build page's title follows its build to the end; focus lands on the page's heading
//! after a navigation; the release form shows the server's refusal; notifications (issue 17): a
//! maintainer subscribes a mailing list and a webhook in the project's settings and previews a
//! template, the webhook receives the release builds, signed, and the unsubscribe page works
//! signed out. The steps are in `tests/browser/console-daily.mjs`; the set-up is the one of `browser.rs` (a farm serving the
//! built console, a local admin account made with the admin token, a slave).

use kiln_tests::{free_port, Farm, FarmOptions, GitServer};
use serde_json::json;
use std::path::PathBuf;
use std::process::Command;

#[tokio::test]
#[ignore = "browser tier: needs the built console, Node and Chromium (scripts/test.sh runs it)"]
async fn console_daily_settings_titles_focus_and_releases() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let dist = root.join("frontend/dist");
    assert!(
        dist.join("index.html").exists(),
        "the console is not built: run scripts/build-console.sh"
    );
    let git = GitServer::start();
    let board = git.repo("board");
    // A few seconds of running (the page's title is seen to change when it ends), on both the
    // branch the project starts with and the one the Settings form moves it to.
    // A small root file system and a real ext4 image of it: the build page shows what the
    // image carries (docs/image-record.md).
    let script = r#"for i in 1 2 3 4 5 6; do echo "tick $i"; sleep 1; done
R="$KILN_SCRATCH_DIR/rootfs"
mkdir -p "$R/var/lib/dpkg" "$R/etc/apt"
printf 'Package: base-files\nStatus: install ok installed\nArchitecture: all\nVersion: 12.4\n' > "$R/var/lib/dpkg/status"
echo 'deb http://deb.example/debian bookworm main' > "$R/etc/apt/sources.list"
PATH="$PATH:/usr/sbin:/sbin" mkfs.ext4 -q -F -L rootfs -d "$R" "$KILN_OUTPUT_DIR/board.img" 8M"#;
    board.script_branch("main", script);
    board.script_branch("dev", script);
    // Notifications: mail through a server nobody listens on (no build here fails, so none is
    // sent), webhooks to the script's own receiver on loopback (allowed for the test), and the
    // public URL the mails' links use.
    let port = free_port();
    let farm = Farm::with(FarmOptions {
        listen: Some(format!("127.0.0.1:{port}")),
        extra_master_toml: format!(
            "console_dir = \"{}\"\npublic_url = \"https://127.0.0.1:{port}\"\n",
            dist.display()
        ),
        extra_toml: format!(
            "[notify]\nwebhook_allow = [\"127.0.0.1/32\"]\nretry_first_ms = 500\n\
             retry_max_delay_secs = 2\n\
             [notify.smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
             from = \"kiln@example.org\"\n",
            free_port()
        ),
        ..Default::default()
    })
    .await;
    let (user, password) = ("lead", "a board team's long passphrase");
    let (status, body) = farm
        .post(
            "/api/users",
            json!({"username": user, "password": password, "admin": true}),
        )
        .await;
    assert_eq!(status, 201, "creating the console's account: {body}");
    let (status, body) = farm
        .post(
            "/api/projects",
            json!({"name": "board", "branch_url": board.url, "branch": "main"}),
        )
        .await;
    assert_eq!(status, 201, "creating the project: {body}");
    let _slave = farm.slave("daily-slave").await;
    let out = std::env::var_os("KILN_TEST_OUTPUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/browser-test-output/console-daily"));
    let result = Command::new("node")
        .arg(root.join("tests/browser/console-daily.mjs"))
        .env("KILN_URL", &farm.url)
        .env("KILN_TOKEN", &farm.token)
        .env("KILN_USER", user)
        .env("KILN_PASSWORD", password)
        .env("KILN_OUT", &out)
        // Node's own API calls (the admin token) reach the farm's private-CA HTTPS.
        .env("NODE_TLS_REJECT_UNAUTHORIZED", "0")
        .output()
        .expect("node (install nodejs) and tests/browser/node_modules (npm ci)");
    let stdout = String::from_utf8_lossy(&result.stdout);
    println!("{stdout}");
    assert!(
        result.status.success(),
        "browser test failed (screenshots in {}):\n{stdout}\n{}",
        out.display(),
        String::from_utf8_lossy(&result.stderr)
    );
    // What the form saved is what the server holds (the script checked it too, through the API).
    let p: serde_json::Value = farm.get("/api/projects/board").await;
    assert_eq!(p["branch"], "dev", "{p}");
    assert_eq!(p["schedule"], "daily 03:15", "{p}");
    assert_eq!(p["keep_builds"], 7, "{p}");
    // The subscriptions the form made are the server's.
    let subs: serde_json::Value = farm.get("/api/projects/board/subscriptions").await;
    let subs = subs.as_array().expect("a list of subscriptions");
    let mail = subs
        .iter()
        .find(|s| s["email"] == "board-team@example.org")
        .unwrap_or_else(|| panic!("no subscription of the list: {subs:?}"));
    assert_eq!(mail["events"], json!(["failed"]), "{mail}");
    let hook = subs
        .iter()
        .find(|s| s["webhook"].as_str().is_some_and(|w| w.ends_with("/hook")))
        .unwrap_or_else(|| panic!("no webhook subscription: {subs:?}"));
    assert_eq!(hook["events"], json!(["release"]), "{hook}");
    assert!(hook.get("secret").is_none(), "the secret is shown: {hook}");
}
