//! The slave's git cache: one bare mirror per branch URL in its work dir, updated incrementally,
//! not fetched at all when the commit the master pinned is already in it, and never shared with a
//! build (each build gets an export of the commit).

use kiln_shared::api::Build;
use kiln_shared::BuildState;
use kiln_tests::{Farm, GitServer};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Milliseconds from dispatched to running: the slave's fetch and the runner's start.
fn fetch_ms(b: &Build) -> i64 {
    (b.started_at.expect("started") - b.dispatched_at.expect("dispatched")).num_milliseconds()
}

async fn build(farm: &Farm, body: Value) -> Build {
    let b = farm.request_build("board", body).await;
    let b = farm.wait_ended(b.id, Duration::from_secs(60)).await;
    assert_eq!(
        b.state,
        BuildState::Succeeded,
        "reason: {:?}\n{}",
        b.reason,
        farm.log(b.id).await
    );
    eprintln!("build {}: dispatched → running {} ms", b.id, fetch_ms(&b));
    b
}

#[tokio::test]
async fn a_second_build_uses_the_cache_picks_up_new_commits_and_pinned_old_ones() {
    let git = GitServer::start();
    let repo = git.repo("board");
    let script = |n: u32| {
        format!(
            "echo \"version {n} at $KILN_COMMIT\" > \"$KILN_OUTPUT_DIR/out.txt\"\ntest ! -e .git || echo 'a .git is in the checkout'"
        )
    };
    let first = repo.script_branch("main", &script(1));
    let farm = Farm::start().await;
    let _slave = farm.slave_with("s1", &["--capacity", "2"]).await;
    farm.project("board", &repo.url, "main").await;

    // 1. A new mirror.
    let b1 = build(&farm, json!({})).await;
    assert_eq!(b1.commit.as_deref(), Some(first.as_str()));
    let log1 = farm.log(b1.id).await;
    assert!(log1.contains("git cache: new mirror of"), "{log1}");
    assert!(!log1.contains("a .git is in the checkout"), "{log1}");

    // 2. The same commit pinned: no fetch at all.
    let b2 = build(&farm, json!({"commit": first})).await;
    let log2 = farm.log(b2.id).await;
    assert!(
        log2.contains(&format!(
            "git cache: commit {first} already present, no fetch"
        )),
        "{log2}"
    );

    // 2b. The branch unchanged on the server, unpinned: its head is asked, present, no fetch.
    let b2b = build(&farm, json!({})).await;
    assert_eq!(b2b.commit.as_deref(), Some(first.as_str()));
    let log2b = farm.log(b2b.id).await;
    assert!(
        log2b.contains(&format!(
            "git cache: branch 'main' is at {first} on the server, already present, no fetch"
        )),
        "{log2b}"
    );

    // 3. A new commit pushed between builds is fetched (incrementally) and built.
    let second = repo.script_branch("main", &script(2));
    let b3 = build(&farm, json!({})).await;
    assert_eq!(b3.commit.as_deref(), Some(second.as_str()));
    let log3 = farm.log(b3.id).await;
    assert!(
        log3.contains(&format!("git cache: branch 'main' updated to {second}")),
        "{log3}"
    );
    let out = String::from_utf8(farm.download(b3.id, "out.txt").await).unwrap();
    assert_eq!(out.trim(), format!("version 2 at {second}"));

    // 4. An older commit, pinned, still builds from the mirror: its own files, no fetch.
    let b4 = build(&farm, json!({"commit": first})).await;
    assert_eq!(b4.commit.as_deref(), Some(first.as_str()));
    let log4 = farm.log(b4.id).await;
    assert!(log4.contains("already present, no fetch"), "{log4}");
    let out = String::from_utf8(farm.download(b4.id, "out.txt").await).unwrap();
    assert_eq!(out.trim(), format!("version 1 at {first}"));

    // 5. Two builds at once on one slave take turns on the mirror; both build.
    let (x, y) = (
        farm.request_build("board", json!({})).await,
        farm.request_build("board", json!({"commit": first})).await,
    );
    for (b, want) in [(x, &second), (y, &first)] {
        let b = farm.wait_ended(b.id, Duration::from_secs(60)).await;
        assert_eq!(b.state, BuildState::Succeeded, "{:?}", b.reason);
        assert_eq!(b.commit.as_ref(), Some(want));
    }

    eprintln!(
        "dispatched → running: new mirror {} ms, pinned hit {} ms, incremental {} ms, pinned old {} ms",
        fetch_ms(&b1),
        fetch_ms(&b2),
        fetch_ms(&b3),
        fetch_ms(&b4)
    );
}

/// Over git's smart HTTP (the real `git http-backend`): a branch that did not move is not fetched
/// again, its head read from the server's advertisement (one request); a push is fetched.
#[tokio::test]
async fn an_unchanged_http_branch_is_not_fetched_again() {
    let git = GitServer::start();
    let http = kiln_tests::GitHttp::start(&git);
    let repo = git.repo("web");
    let first = repo.script_branch("main", "echo one > \"$KILN_OUTPUT_DIR/out.txt\"");
    let url = http.url("web");
    let farm = Farm::start().await;
    let _slave = farm.slave("s1").await;
    farm.project("board", &url, "main").await;
    let b1 = build(&farm, json!({})).await;
    assert_eq!(b1.commit.as_deref(), Some(first.as_str()));
    let log1 = farm.log(b1.id).await;
    assert!(log1.contains("git cache: new mirror of http://"), "{log1}");

    let before = http.requests.load(std::sync::atomic::Ordering::SeqCst);
    let b2 = build(&farm, json!({})).await;
    let log2 = farm.log(b2.id).await;
    assert!(
        log2.contains(&format!(
            "git cache: branch 'main' is at {first} on the server, already present, no fetch"
        )),
        "{log2}"
    );
    let asked = http.requests.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert_eq!(asked, 1, "one GET of info/refs, no fetch");

    let second = repo.script_branch("main", "echo two > \"$KILN_OUTPUT_DIR/out.txt\"");
    let b3 = build(&farm, json!({})).await;
    assert_eq!(b3.commit.as_deref(), Some(second.as_str()));
    let log3 = farm.log(b3.id).await;
    assert!(
        log3.contains(&format!("git cache: branch 'main' updated to {second}")),
        "{log3}"
    );
    let out = String::from_utf8(farm.download(b3.id, "out.txt").await).unwrap();
    assert_eq!(out.trim(), "two");
}

#[tokio::test]
async fn a_build_waiting_for_the_cache_is_fetched_again_after_a_slave_kill_and_cancels_at_once() {
    let git = GitServer::start();
    let repo = git.repo("board");
    let sha = repo.script_branch("main", "echo ok > \"$KILN_OUTPUT_DIR/out.txt\"");
    let farm = Farm::start().await;
    let mut slave = farm.slave("s1").await;
    farm.project("board", &repo.url, "main").await;
    // Another build holds the mirror of this URL: the fetch waits for it.
    let cache = slave.work.join("git-cache");
    let held = lock(&cache, &repo.url);
    let b = farm.request_build("board", json!({})).await;
    wait_log(&farm, b.id, "git cache: waiting for another build").await;
    // The daemon dies mid-fetch; the next one starts the build's fetch again. Its sandbox is
    // left as a daemon stopped half-way through preparing it would leave it (the runner's copy
    // of the input not written yet): the next daemon prepares it again.
    slave.kill9();
    let sandbox = slave
        .work
        .join("builds")
        .join(b.id.to_string())
        .join("sandbox");
    std::fs::remove_file(sandbox.join("input.json")).unwrap();
    drop(held);
    slave.start();
    let b = farm.wait_ended(b.id, Duration::from_secs(60)).await;
    assert_eq!(
        b.state,
        BuildState::Succeeded,
        "{:?}\n{}",
        b.reason,
        farm.log(b.id).await
    );
    assert_eq!(b.commit.as_deref(), Some(sha.as_str()));

    // A build cancelled while it waits for the mirror ends at once, and its slave is free.
    let held = lock(&cache, &repo.url);
    let b = farm.request_build("board", json!({})).await;
    wait_log(&farm, b.id, "git cache: waiting for another build").await;
    let (s, v) = farm
        .post(&format!("/api/builds/{}/cancel", b.id), json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    // Its dir goes once the slave reported it, while the mirror is still held.
    let dir = slave.work.join("builds").join(b.id.to_string());
    kiln_tests::wait_gone(&dir, "the cancelled build's dir").await;
    drop(held);
    let next = build(&farm, json!({})).await;
    assert_eq!(next.commit.as_deref(), Some(sha.as_str()));
}

/// Takes the lock of the slave's mirror of `url`, as a build using it would.
fn lock(cache: &std::path::Path, url: &str) -> std::fs::File {
    std::fs::create_dir_all(cache).unwrap();
    let stem = hex::encode(&Sha256::digest(url.as_bytes())[..16]);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(cache.join(format!("{stem}.lock")))
        .unwrap();
    f.lock().unwrap();
    f
}

async fn wait_log(farm: &Farm, id: kiln_shared::BuildId, needle: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !farm.log(id).await.contains(needle) {
        assert!(
            std::time::Instant::now() < deadline,
            "no '{needle}' in {}",
            farm.log(id).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
