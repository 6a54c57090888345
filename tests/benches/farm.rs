//! `cargo bench -p kiln-tests --bench farm` (after `cargo build --release --bins`): measures the
//! real farm on this machine and prints a Markdown table for docs/benchmarks.md.
//!
//! - dispatch latency: build requested (client clock) → backend process started (the script's
//!   first `date`), p50/p99 over 200 `script` builds on an idle slave; also the master's own
//!   created → dispatched time;
//! - log throughput: 100 MB of output, slave → stored log;
//! - artifact upload of a 1 GiB file, and the master's peak RSS while it arrives;
//! - throughput: 200 no-op builds queued at once, run by 2 slaves (builds per second, from the
//!   first request to the last build's `finished_at`);
//! - idle: the master's CPU (share of one core) and RSS over 30 s with 2 slaves and no build.
//!
//! Many slaves (1,000, simulated) and a 10,000-build queue: `--bench scale`.

use kiln_tests::measure::{cpu_ticks, now_ns, percentile, status_kib, ticks_per_second};
use kiln_tests::{Farm, FarmOptions, GitServer};
use serde_json::json;
use std::time::Duration;

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("KILN_BENCH_BUILDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let git = GitServer::start();
    let mut farm = Farm::with(FarmOptions {
        heartbeat_secs: 5,
        lost_timeout_secs: 60,
        ..Default::default()
    })
    .await;
    farm.poll = Duration::from_millis(5);
    let _slave = farm.slave("bench").await;

    // 1. Dispatch latency.
    let repo = git.repo("noop");
    repo.script_branch(
        "main",
        "echo \"T=$(date +%s%N)\"\necho ok > \"$KILN_OUTPUT_DIR/ok\"",
    );
    farm.project("noop", &repo.url, "main").await;
    let (mut to_backend, mut to_dispatch, mut end_to_end) = (vec![], vec![], vec![]);
    for _ in 0..n {
        let t0 = now_ns();
        let b = farm.request_build("noop", json!({})).await;
        let b = farm.wait_ended(b.id, Duration::from_secs(60)).await;
        let t_end = now_ns();
        assert_eq!(
            b.state,
            kiln_shared::BuildState::Succeeded,
            "{:?}",
            b.reason
        );
        let log = farm.log(b.id).await;
        let t: i128 = log
            .lines()
            .find_map(|l| l.strip_prefix("T=")?.parse().ok())
            .expect("T= line");
        to_backend.push((t - t0) as f64 / 1e6);
        end_to_end.push((t_end - t0) as f64 / 1e6);
        let d = b.dispatched_at.unwrap() - b.created_at;
        to_dispatch.push(d.num_microseconds().unwrap() as f64 / 1e3);
    }

    // 2. Log throughput: 100 MB of 100-byte lines.
    let repo = git.repo("chatty");
    repo.script_branch(
        "main",
        "echo \"T=$(date +%s%N)\"\nyes 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' | head -c 100000000\necho ok > \"$KILN_OUTPUT_DIR/ok\"",
    );
    farm.project("chatty", &repo.url, "main").await;
    farm.poll = Duration::from_millis(20);
    let b = farm.request_build("chatty", json!({})).await;
    let b = farm.wait_ended(b.id, Duration::from_secs(900)).await;
    assert_eq!(
        b.state,
        kiln_shared::BuildState::Succeeded,
        "{:?}",
        b.reason
    );
    let log = farm.log(b.id).await;
    let t: i128 = log
        .lines()
        .find_map(|l| l.strip_prefix("T=")?.parse().ok())
        .unwrap();
    let end = b.finished_at.unwrap().timestamp_nanos_opt().unwrap() as i128;
    let log_secs = (end - t) as f64 / 1e9;
    let log_mb = log.len() as f64 / 1e6;

    // 3. A 1 GiB artifact; the master's peak RSS while it arrives.
    let repo = git.repo("big");
    repo.script_branch(
        "main",
        "head -c 1073741824 /dev/urandom > \"$KILN_OUTPUT_DIR/big.bin\"",
    );
    farm.project("big", &repo.url, "main").await;
    let pid = farm.master_pid().unwrap();
    let rss_before = status_kib(pid, "VmRSS:");
    let b = farm.request_build("big", json!({})).await;
    let mut peak = 0;
    loop {
        peak = peak.max(status_kib(pid, "VmRSS:"));
        let cur = farm.build(b.id).await;
        if cur.state.is_terminal() {
            assert_eq!(
                cur.state,
                kiln_shared::BuildState::Succeeded,
                "{:?}",
                cur.reason
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let log = farm.log(b.id).await;
    let upload = log
        .lines()
        .find(|l| l.contains("uploaded big.bin in"))
        .expect("upload timing line")
        .trim_start_matches("[kiln] ")
        .to_string();

    // 4. Throughput: builds queued at once on two slaves.
    let _slave2 = farm.slave("bench-2").await;
    let t0 = now_ns();
    let mut ids = vec![];
    for _ in 0..n {
        ids.push(farm.request_build("noop", json!({})).await.id);
    }
    let queued_secs = (now_ns() - t0) as f64 / 1e9;
    let mut last_end = 0i128;
    for id in ids {
        let b = farm.wait_ended(id, Duration::from_secs(600)).await;
        assert_eq!(
            b.state,
            kiln_shared::BuildState::Succeeded,
            "{:?}",
            b.reason
        );
        last_end = last_end.max(b.finished_at.unwrap().timestamp_nanos_opt().unwrap() as i128);
    }
    let burst_secs = (last_end - t0) as f64 / 1e9;

    // 5. Idle: nothing to do, two slaves connected.
    let hz = ticks_per_second();
    let idle_secs = 30;
    let (c0, w0) = (cpu_ticks(pid), std::time::Instant::now());
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let idle_cpu = (cpu_ticks(pid) - c0) as f64 / hz / w0.elapsed().as_secs_f64();

    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| dispatch latency, requested → backend started ({n} `script` builds) | p50 {:.1} ms, p99 {:.1} ms |",
        percentile(&mut to_backend, 0.5),
        percentile(&mut to_backend, 0.99)
    );
    println!(
        "| of which master: created → dispatched | p50 {:.2} ms, p99 {:.2} ms |",
        percentile(&mut to_dispatch, 0.5),
        percentile(&mut to_dispatch, 0.99)
    );
    println!(
        "| no-op build end to end (request → client sees succeeded) | p50 {:.1} ms, p99 {:.1} ms |",
        percentile(&mut end_to_end, 0.5),
        percentile(&mut end_to_end, 0.99)
    );
    println!(
        "| log throughput slave → stored log | {log_mb:.0} MB in {log_secs:.2} s = {:.1} MB/s |",
        log_mb / log_secs
    );
    println!("| artifact upload, 1 GiB | {upload} |");
    println!(
        "| master RSS during the 1 GiB upload | {:.1} MiB before, peak {:.1} MiB (sampled every 10 ms) |",
        rss_before as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    println!(
        "| {n} no-op builds queued at once ({queued_secs:.1} s to ask), 2 slaves | {:.1} builds/s (first request → last finished: {burst_secs:.1} s) |",
        n as f64 / burst_secs
    );
    println!(
        "| master idle, 2 slaves, no build ({idle_secs} s) | {:.2} % of a core, RSS {:.1} MiB |",
        idle_cpu * 100.0,
        status_kib(pid, "VmRSS:") as f64 / 1024.0
    );
}
