//! The web console in a real browser (Debian's headless Chromium, driven from Node with
//! playwright-core) against the real master, slave, PostgreSQL and git: see
//! `tests/browser/console.mjs` for the steps. Needs the console built (`scripts/build-console.sh`)
//! and `npm ci` in tests/browser; `scripts/test.sh` does both and runs this tier.
//!
//! The browser signs in as a person: the test makes a local admin account with the farm's admin
//! bearer token (`POST /api/users`) and hands its name and password to the script, which fills
//! the login page.

use kiln_tests::{Farm, FarmOptions, GitServer};
use serde_json::json;
use std::path::PathBuf;
use std::process::Command;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

#[tokio::test]
#[ignore = "browser tier: needs the built console, Node and Chromium (scripts/test.sh runs it)"]
async fn the_console_in_a_real_browser() {
    let root = repo_root();
    let dist = root.join("frontend/dist");
    assert!(
        dist.join("index.html").exists(),
        "the console is not built: run scripts/build-console.sh"
    );
    let git = GitServer::start();
    let ok = git.repo("ok");
    ok.script_branch(
        "main",
        "for i in 1 2 3 4 5 6; do echo \"tick $i\"; sleep 0.5; done\nhead -c 200000 /dev/urandom > \"$KILN_OUTPUT_DIR/image.img\"",
    );
    let slow = git.repo("slow");
    slow.script_branch("main", "echo sleeping\nsleep 300");
    // 50,000 ANSI-coloured lines in 20 bursts a third of a second apart, so the build page
    // renders a log that grows for several seconds (the frame budget is judged over hundreds of
    // frames, not the few of one burst).
    let chatty = git.repo("chatty");
    chatty.script_branch(
        "main",
        "i=0; while [ $i -lt 50000 ]; do echo \"\\033[32mline\\033[0m $i of a long log\"; i=$((i+1)); if [ $((i % 2500)) -eq 0 ]; then sleep 0.33; fi; done\necho ok > \"$KILN_OUTPUT_DIR/ok\"",
    );
    let farm = Farm::with(FarmOptions {
        extra_master_toml: format!("console_dir = \"{}\"", dist.display()),
        ..Default::default()
    })
    .await;
    let (user, password) = ("lead", "a browser's long passphrase");
    let (status, body) = farm
        .post(
            "/api/users",
            json!({"username": user, "password": password, "admin": true}),
        )
        .await;
    assert_eq!(status, 201, "creating the console's account: {body}");
    let slave = farm.slave("browser-slave").await;
    let out = std::env::var_os("KILN_TEST_OUTPUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/browser-test-output"));
    let result = Command::new("node")
        .arg(root.join("tests/browser/console.mjs"))
        .env("KILN_URL", &farm.url)
        .env("KILN_USER", user)
        .env("KILN_PASSWORD", password)
        .env("KILN_REPO_OK", &ok.url)
        .env("KILN_REPO_SLOW", &slow.url)
        .env("KILN_REPO_CHATTY", &chatty.url)
        .env("KILN_SLAVE_PID", slave.pid().unwrap().to_string())
        .env("KILN_OUT", &out)
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
}
