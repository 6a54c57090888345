//! Exactly once, under churn: 200 builds over 3 slaves while slave daemons are restarted (SIGTERM
//! and SIGKILL), the master is SIGKILLed and restarted, and one slave is partitioned for three
//! lost time-outs. Every requested build ends with exactly one success (a lost attempt's retry
//! succeeds instead), none is stuck, none is reported twice, every log is whole.

use kiln_shared::api::Build;
use kiln_shared::BuildState;
use kiln_tests::{Farm, FarmOptions, GitServer, Proxy};
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const BUILDS: usize = 200;
const LINES: usize = 30;

async fn all_builds(farm: &Farm) -> Vec<Build> {
    farm.get("/api/builds?project=churn&limit=1000").await
}

/// Waits until at least `n` builds have ended.
async fn until_ended(farm: &Farm, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let ended = all_builds(farm)
            .await
            .iter()
            .filter(|b| b.state.is_terminal())
            .count();
        if ended >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {ended} of {n} builds ended"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow tier: 200 builds through restarts and a partition (scripts/test.sh runs it)"]
async fn two_hundred_builds_through_restarts_and_a_partition_each_succeed_once() {
    let git = GitServer::start();
    let repo = git.repo("churn");
    repo.script_branch(
        "main",
        &format!(
            "i=1\nwhile [ $i -le {LINES} ]; do echo \"n=$i\"; i=$((i+1)); done\nsleep 0.2\necho \"$KILN_BUILD_ID\" > \"$KILN_OUTPUT_DIR/id\""
        ),
    );
    let lost_timeout = 5;
    let mut farm = Farm::with(FarmOptions {
        heartbeat_secs: 1,
        lost_timeout_secs: lost_timeout,
        lost_retries: 10,
        ..Default::default()
    })
    .await;
    let proxy = Proxy::start(&farm.url).await;
    let cap = ["--capacity", "2"];
    let mut s1 = farm.slave_with("s1", &cap).await;
    let mut s2 = farm.slave_with("s2", &cap).await;
    let _s3 = farm.slave_through("s3", &proxy.url, &cap).await;
    farm.project("churn", &repo.url, "main").await;
    let mut requested = vec![];
    for _ in 0..BUILDS {
        requested.push(farm.request_build("churn", json!({})).await.id);
    }

    until_ended(&farm, 20).await;
    s1.stop(); // SIGTERM: its builds run on and are re-adopted
    s1.start();
    until_ended(&farm, 50).await;
    s2.kill9();
    s2.start();
    until_ended(&farm, 80).await;
    farm.kill_master();
    farm.restart_master();
    until_ended(&farm, 110).await;
    proxy.partition();
    // The partition itself lasts three lost time-outs.
    tokio::time::sleep(Duration::from_secs(3 * u64::from(lost_timeout))).await;
    proxy.heal();

    // Every request resolved. A lost attempt's retry is queued in the transaction that marks it
    // lost, so once every build has ended no retry is still to come.
    let deadline = Instant::now() + Duration::from_secs(900);
    let builds = loop {
        let all = all_builds(&farm).await;
        if all.iter().all(|b| b.state.is_terminal()) {
            break all;
        }
        assert!(
            Instant::now() < deadline,
            "stuck: {:?}",
            all.iter()
                .filter(|b| !b.state.is_terminal())
                .map(|b| (b.id, b.state, b.waiting_reason.clone()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let by_id: HashMap<_, _> = builds.iter().map(|b| (b.id, b)).collect();
    let retry_of: HashMap<_, _> = builds
        .iter()
        .filter_map(|b| b.retry_of.map(|r| (r, b.id)))
        .collect();
    assert_eq!(
        builds.len(),
        BUILDS + retry_of.len(),
        "every build is a request or a retry"
    );
    for first in &requested {
        let mut chain = vec![*first];
        while let Some(next) = retry_of.get(chain.last().unwrap()) {
            chain.push(*next);
        }
        let states: Vec<BuildState> = chain.iter().map(|id| by_id[id].state).collect();
        let reasons: Vec<(i64, Option<&str>, Option<&str>)> = chain
            .iter()
            .map(|id| {
                let b = by_id[id];
                (id.0, b.slave.as_deref(), b.reason.as_deref())
            })
            .collect();
        let (last, before) = states.split_last().unwrap();
        assert_eq!(
            *last,
            BuildState::Succeeded,
            "build {first}: {states:?}, attempts (id, slave, reason): {reasons:?}"
        );
        assert!(
            before.iter().all(|s| *s == BuildState::Lost),
            "build {first}: only lost attempts are retried: {states:?}"
        );
    }
    let succeeded: Vec<&Build> = builds
        .iter()
        .filter(|b| b.state == BuildState::Succeeded)
        .collect();
    assert_eq!(
        succeeded.len(),
        BUILDS,
        "one success per request, none twice"
    );
    let want: Vec<String> = (1..=LINES).map(|i| format!("n={i}")).collect();
    for b in succeeded {
        let id = farm.download(b.id, "id").await;
        assert_eq!(String::from_utf8_lossy(&id).trim(), b.id.to_string());
        let log = farm.log(b.id).await;
        let numbers: Vec<&str> = log.lines().filter(|l| l.starts_with("n=")).collect();
        assert_eq!(numbers, want, "build {}: every line once, in order", b.id);
    }
}
