//! The build log in a real browser: search over a 50,000-line log (count, next/previous, the
//! match on screen and highlighted, regex), "first error", `#L` links to any line (earlier lines
//! loaded as needed), a click on a line number, colour carried across lines and `\r` progress.
//! See `tests/browser/log-search.mjs` for the steps; the set-up is `browser.rs`'s (the console
//! built by `scripts/build-console.sh`, `npm ci` in tests/browser, Debian's Chromium).

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

/// 50,000 lines: a red colour set on one line and kept on the next, a 512-character line, a `\r`
/// progress bar, a unique marker at line 1234 of the script's output, an error line at 30,000.
const SCRIPT: &str = r#"printf '\033[31mred from here\n'
echo 'still red, no code on this line'
printf '\033[0mplain again\n'
s=long; j=0; while [ $j -lt 7 ]; do s="$s$s"; j=$((j+1)); done; echo "$s"
printf 'progress  10%%\rprogress  20%%\rprogress 100%%\n'
i=6
while [ $i -le 50000 ]; do
  if [ $i -eq 1234 ]; then echo "UNIQUE-Marker-7f3a is here"
  elif [ $i -eq 30000 ]; then echo "E: pretend failure at $i"
  else echo "line $i of the log"; fi
  i=$((i+1))
done
echo ok > "$KILN_OUTPUT_DIR/ok""#;

#[tokio::test]
#[ignore = "browser tier: needs the built console, Node and Chromium (scripts/test.sh runs it)"]
async fn log_search_links_and_rendering_in_a_real_browser() {
    let root = repo_root();
    let dist = root.join("frontend/dist");
    assert!(
        dist.join("index.html").exists(),
        "the console is not built: run scripts/build-console.sh"
    );
    let git = GitServer::start();
    let repo = git.repo("long");
    repo.script_branch("main", SCRIPT);
    let farm = Farm::with(FarmOptions {
        extra_master_toml: format!("console_dir = \"{}\"", dist.display()),
        ..Default::default()
    })
    .await;
    let (user, password) = ("reader", "a log reader's long passphrase");
    let (status, body) = farm
        .post(
            "/api/users",
            json!({"username": user, "password": password, "admin": true}),
        )
        .await;
    assert_eq!(status, 201, "creating the console's account: {body}");
    let _slave = farm.slave("search-slave").await;
    let out = std::env::var_os("KILN_TEST_OUTPUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/browser-test-output/log-search"));
    let result = Command::new("node")
        .arg(root.join("tests/browser/log-search.mjs"))
        .env("KILN_URL", &farm.url)
        .env("KILN_USER", user)
        .env("KILN_PASSWORD", password)
        .env("KILN_REPO", &repo.url)
        .env("KILN_OUT", &out)
        .output()
        .expect("node (install nodejs) and tests/browser/node_modules (npm ci)");
    let stdout = String::from_utf8_lossy(&result.stdout);
    println!("{stdout}");
    assert!(
        result.status.success(),
        "log search browser test failed (screenshots in {}):\n{stdout}\n{}",
        out.display(),
        String::from_utf8_lossy(&result.stderr)
    );
}
