//! Slaves and masters die; builds are accounted for and logs are whole.

use kiln_shared::BuildState;
use kiln_tests::{Farm, GitServer};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_killed_slave_loses_its_build_with_a_reason_and_it_is_requeued_once() {
    let git = GitServer::start();
    let repo = git.repo("slow");
    repo.script_branch("main", "echo begin\nsleep 600");
    let farm = Farm::start().await; // heartbeat 1 s, lost after 4 s
    let mut slave = farm.slave("doomed").await;
    farm.project("slow", &repo.url, "main").await;
    let b = farm.request_build("slow", json!({})).await;
    farm.wait_build(b.id, Duration::from_secs(60), "running", |b| {
        b.state == BuildState::Running && b.log_lines > 0
    })
    .await;
    slave.kill9();
    let killed = Instant::now();
    let lost = farm
        .wait_build(b.id, Duration::from_secs(30), "lost", |b| {
            b.state == BuildState::Lost
        })
        .await;
    // Within the heartbeat timeout (4 s) plus the sweep interval, with margin for a busy machine.
    assert!(
        killed.elapsed() < Duration::from_secs(20),
        "lost after {:?}",
        killed.elapsed()
    );
    let reason = lost.reason.unwrap();
    assert!(
        reason.contains("slave 'doomed' stopped responding"),
        "{reason}"
    );
    assert!(
        farm.log(b.id).await.contains("begin"),
        "the log so far is kept"
    );
    let all: Vec<kiln_shared::api::Build> = farm.get("/api/builds?project=slow").await;
    let retry = all
        .iter()
        .find(|x| x.retry_of == Some(b.id))
        .expect("requeued once");
    assert_eq!(retry.state, BuildState::Queued);
    assert_eq!(all.len(), 2);

    // A new slave runs the retry; the project allows one retry only, so losing it is final.
    let mut s2 = farm.slave("second").await;
    farm.wait_build(retry.id, Duration::from_secs(60), "running", |b| {
        b.state == BuildState::Running
    })
    .await;
    s2.kill9();
    farm.wait_build(retry.id, Duration::from_secs(30), "lost", |b| {
        b.state == BuildState::Lost
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all: Vec<kiln_shared::api::Build> = farm.get("/api/builds?project=slow").await;
    assert_eq!(all.len(), 2, "one retry only: {all:?}");
}

#[tokio::test]
async fn master_killed_mid_build_the_build_finishes_with_every_line_once() {
    let git = GitServer::start();
    let repo = git.repo("numbers");
    repo.script_branch(
        "main",
        "i=1\nwhile [ $i -le 600 ]; do echo \"n=$i\"; i=$((i+1)); [ $((i % 50)) -eq 0 ] && sleep 0.3; done\necho done > \"$KILN_OUTPUT_DIR/out\"",
    );
    let mut farm = Farm::with(kiln_tests::FarmOptions {
        heartbeat_secs: 1,
        lost_timeout_secs: 30,
        ..Default::default()
    })
    .await;
    let _slave = farm.slave("s1").await;
    farm.project("numbers", &repo.url, "main").await;
    let b = farm.request_build("numbers", json!({})).await;
    farm.wait_build(b.id, Duration::from_secs(60), "streaming", |b| {
        b.log_lines > 60
    })
    .await;
    farm.kill_master();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    farm.restart_master();
    let done = farm.wait_ended(b.id, Duration::from_secs(90)).await;
    assert_eq!(done.state, BuildState::Succeeded, "{:?}", done.reason);
    let log = farm.log(b.id).await;
    let numbers: Vec<&str> = log.lines().filter(|l| l.starts_with("n=")).collect();
    let want: Vec<String> = (1..=600).map(|i| format!("n={i}")).collect();
    assert_eq!(numbers, want, "every line once, in order");
    assert_eq!(farm.download(b.id, "out").await, b"done\n");
}
