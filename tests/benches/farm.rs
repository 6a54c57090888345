//! `cargo bench -p kiln-tests --bench farm` (after `cargo build --release --bins`): measures the
//! real farm on this machine and prints a Markdown table for docs/benchmarks.md.
//!
//! - dispatch latency: build requested (client clock) → backend process started (the script's
//!   first `date`), p50/p99 over 200 `script` builds on an idle slave, each requested
//!   `KILN_BENCH_PAUSE_MS` (50) after the previous one ended, then 200 back to back; also the
//!   request's own part (requested → created) and the master's (created → dispatched);
//! - with `KILN_PG_STATS=1` (the test cluster then loads `pg_stat_statements`): the database
//!   statements, and explicit transactions (`BEGIN`s), per build in the at-rest phase;
//! - log throughput: 100 MB of output, slave → stored log;
//! - artifact upload of a 1 GiB file, and the master's peak RSS while it arrives;
//! - the 1 GiB artifact against this machine's own `dd` and `sha256sum` of a file as large, and
//!   the longest the upload can have waited after the build's end;
//! - throughput: 200 no-op builds queued at once, run by 2 slaves (builds per second, from the
//!   first request to the last build's `finished_at`), with each slave's capacity 1 and then
//!   `KILN_BENCH_CAPACITY` (4 unless set);
//!   and the whole machine's CPU per build in each burst (every process on the machine: the
//!   farm's, the database's, the git server's, the scripts', this bench's own polling and
//!   whatever else runs: run it on a quiet machine);
//! - idle: the master's CPU (share of one core) and RSS over 30 s with 2 slaves and no build;
//! - the floor: what a no-op build costs this machine outside Kiln's code, each part run alone
//!   (the script; the git server's answer to a slave's head check, with the slave's own small
//!   client for it), and the builds/s the cores would allow if Kiln's own part cost nothing.
//!
//! Many slaves (1,000, simulated) and a 10,000-build queue: `--bench scale`.

use kiln_tests::measure::{
    cores, cpu_ticks, machine_cpu_ticks, now_ns, percentile, status_kib, ticks_per_second,
};
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
    let slave1 = farm.slave("bench").await;

    // 1. Dispatch latency.
    let repo = git.repo("noop");
    repo.script_branch("main", NOOP);
    farm.project("noop", &repo.url, "main").await;
    let noop_url = repo.url.clone();
    // Each request on a farm at rest: the previous build's tail (its slave clearing its
    // directory, the master's bookkeeping) is not counted in the next one's latency…
    let pause: u64 = std::env::var("KILN_BENCH_PAUSE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let statements = farm
        .database_url()
        .and_then(|url| kiln_tests::measure::Statements::start(&url));
    let mut rest = sequential(&farm, n, Duration::from_millis(pause)).await;
    let per_build = statements.map(|s| {
        let (all, transactions) = s.count();
        (all as f64 / n as f64, transactions as f64 / n as f64)
    });
    // …and back to back, the next request as soon as the previous build is seen finished.
    let mut busy = sequential(&farm, n, Duration::ZERO).await;

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
        "head -c 1073741824 /dev/urandom > \"$KILN_OUTPUT_DIR/big.bin\"\necho \"E=$(date +%s%N)\"",
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
    let upload_secs: f64 = upload
        .split_once(" in ")
        .and_then(|(_, r)| r.split_once(" s")?.0.parse().ok())
        .expect("upload seconds");
    let script_end: i128 = log
        .lines()
        .find_map(|l| l.strip_prefix("E=")?.parse().ok())
        .expect("E= line");
    let big = farm.build(b.id).await;
    let finished = big.finished_at.unwrap().timestamp_nanos_opt().unwrap() as i128;
    // An upper bound: the rest after the upload (SHA256SUMS, `Finished`) is counted as waiting.
    let upload_wait_ms = (finished - script_end) as f64 / 1e6 - upload_secs * 1e3;
    let (dd_mbs, sha_mbs) = reference_rates(&slave1.work);
    let upload_mbs = 1073741824.0 / 1e6 / upload_secs;

    // 4. Throughput: builds queued at once on two slaves, each taking one build at a time…
    let slave2 = farm.slave("bench-2").await;
    let (queued_secs, burst_secs, burst_cpu) = burst(&farm, n).await;
    // …then on two slaves taking several at once.
    let capacity: u32 = std::env::var("KILN_BENCH_CAPACITY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    drop((slave1, slave2));
    let c = capacity.to_string();
    let _wide1 = farm.slave_with("wide-1", &["--capacity", &c]).await;
    let _wide2 = farm.slave_with("wide-2", &["--capacity", &c]).await;
    let (wide_queued_secs, wide_secs, wide_cpu) = burst(&farm, n).await;

    // 5. Idle: nothing to do, two slaves connected.
    let hz = ticks_per_second();
    let idle_secs = 30;
    let (c0, w0) = (cpu_ticks(pid), std::time::Instant::now());
    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let idle_cpu = (cpu_ticks(pid) - c0) as f64 / hz / w0.elapsed().as_secs_f64();

    // 6. The floor, on the farm at rest.
    let (script_ms, git_ms) = outside_kiln(&noop_url, 500).await;

    println!("| measure | value |");
    println!("|---|---|");
    for (l, when) in [
        (
            &mut rest,
            format!("each {pause} ms after the previous one ended"),
        ),
        (&mut busy, "back to back".to_string()),
    ] {
        latency_row(
            &format!("dispatch latency, requested → backend started ({n} `script` builds, {when})"),
            &mut l.to_backend,
            1,
        );
        latency_row(
            "of which the request: requested → created (client → master, row inserted)",
            &mut l.to_created,
            2,
        );
        latency_row(
            "of which master: created → dispatched",
            &mut l.to_dispatch,
            2,
        );
        latency_row(
            &format!("no-op build end to end (request → client sees succeeded, {when})"),
            &mut l.end_to_end,
            1,
        );
    }
    if let Some((all, transactions)) = per_build {
        println!(
            "| database statements per no-op build at rest (`KILN_PG_STATS=1`; the client's request, 5 ms polls and log read included) | {all:.1}, in {transactions:.1} transactions |"
        );
    }
    println!(
        "| log throughput slave → stored log | {log_mb:.0} MB in {log_secs:.2} s = {:.1} MB/s |",
        log_mb / log_secs
    );
    println!("| artifact upload, 1 GiB | {upload} |");
    println!(
        "| the same machine on a 1 GiB file: `dd` to /dev/null, `sha256sum` | {dd_mbs:.0} MB/s, {sha_mbs:.0} MB/s: the upload ran at {:.0} % of the slower |",
        upload_mbs / dd_mbs.min(sha_mbs) * 100.0
    );
    println!(
        "| build's end (script's last line) → upload started, at most | {upload_wait_ms:.0} ms |"
    );
    println!(
        "| master RSS during the 1 GiB upload | {:.1} MiB before, peak {:.1} MiB (sampled every 10 ms) |",
        rss_before as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    println!(
        "| {n} no-op builds queued at once ({queued_secs:.1} s to ask), 2 slaves of capacity 1 | {:.1} builds/s (first request → last finished: {burst_secs:.1} s) |",
        n as f64 / burst_secs
    );
    println!(
        "| {n} no-op builds queued at once ({wide_queued_secs:.1} s to ask), 2 slaves of capacity {capacity} | {:.1} builds/s (first request → last finished: {wide_secs:.1} s) |",
        n as f64 / wide_secs
    );
    println!(
        "| CPU per no-op build in those bursts, whole machine (every process, all cores) | {burst_cpu:.1} ms (capacity 1), {wide_cpu:.1} ms (capacity {capacity}): {TARGET_BUILDS_PER_SEC:.0} builds/s is {:.1} ms |",
        cores() * 1000.0 / TARGET_BUILDS_PER_SEC
    );
    println!(
        "| of which outside Kiln's code, each run alone 500 times: the no-op script (`sh`, `date`) / the git server answering a slave's head check | {script_ms:.2} ms / {git_ms:.2} ms: at most {:.0} builds/s on these {} cores if Kiln's own part cost nothing |",
        cores() * 1000.0 / (script_ms + git_ms),
        cores()
    );
    println!(
        "| master idle, 2 slaves, no build ({idle_secs} s) | {:.2} % of a core, RSS {:.1} MiB |",
        idle_cpu * 100.0,
        status_kib(pid, "VmRSS:") as f64 / 1024.0
    );
}

/// The throughput target, builds per second.
const TARGET_BUILDS_PER_SEC: f64 = 200.0;

/// The `noop` branch's script (after `#!/bin/sh` and `set -e`).
const NOOP: &str = "echo \"T=$(date +%s%N)\"\necho ok > \"$KILN_OUTPUT_DIR/ok\"";

/// Queues `n` no-op builds as fast as the API takes them and waits for all: (seconds to ask,
/// seconds from the first request to the last build's `finished_at`, milliseconds of the whole
/// machine's CPU per build from the first request until the last build was seen ended).
async fn burst(farm: &Farm, n: usize) -> (f64, f64, f64) {
    let cpu0 = machine_cpu_ticks();
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
    let cpu_ms = (machine_cpu_ticks() - cpu0) as f64 / ticks_per_second() * 1e3 / n as f64;
    (queued_secs, (last_end - t0) as f64 / 1e9, cpu_ms)
}

/// What a no-op build costs this machine outside Kiln's code, each part alone `n` times:
/// (the `noop` script as the backend runs it, the test git server's answer to the head check
/// a slave makes for an unpinned build: an `upload-pack` per answer), milliseconds of the whole
/// machine's CPU per build.
async fn outside_kiln(url: &str, n: usize) -> (f64, f64) {
    let per_build = |ticks: u64| ticks as f64 / ticks_per_second() * 1e3 / n as f64;
    let dir = kiln_tests::tempdir("kiln-floor-");
    let script = dir.path().join("build.sh");
    std::fs::write(&script, kiln_tests::git::script_text(NOOP)).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let t = machine_cpu_ticks();
    for _ in 0..n {
        let out = std::process::Command::new(&script)
            .env("KILN_OUTPUT_DIR", dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let script_ms = per_build(machine_cpu_ticks() - t);
    let t = machine_cpu_ticks();
    for _ in 0..n {
        kiln_slave::git_refs::advertised_head(url, "main")
            .await
            .expect("the test git server's head of main");
    }
    (script_ms, per_build(machine_cpu_ticks() - t))
}

/// This machine's own rates on a 1 GiB file in `dir` (the slave's work dir, so the same disk and
/// page cache as the artifact): `dd` reading it to /dev/null and `sha256sum` hashing it, MB/s.
fn reference_rates(dir: &std::path::Path) -> (f64, f64) {
    let file = dir.join("bench-reference.bin");
    let made = std::process::Command::new("sh")
        .arg("-c")
        .arg("head -c 1073741824 /dev/urandom > \"$0\"")
        .arg(&file)
        .status()
        .unwrap();
    assert!(made.success(), "cannot write {}", file.display());
    let rate = |program: &str, args: &[&str]| {
        let t = std::time::Instant::now();
        let out = std::process::Command::new(program)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{program}: {out:?}");
        1073741824.0 / 1e6 / t.elapsed().as_secs_f64()
    };
    let path = file.to_str().unwrap();
    let dd = rate("dd", &[&format!("if={path}"), "of=/dev/null", "bs=1M"]);
    let sha = rate("sha256sum", &[path]);
    std::fs::remove_file(&file).unwrap();
    (dd, sha)
}

/// One farm's no-op builds requested one after the other: milliseconds, per build.
#[derive(Default)]
struct Latencies {
    to_backend: Vec<f64>,
    to_created: Vec<f64>,
    to_dispatch: Vec<f64>,
    end_to_end: Vec<f64>,
}

/// Requests `n` builds of the `noop` project one at a time, `pause` after each has ended.
async fn sequential(farm: &Farm, n: usize, pause: Duration) -> Latencies {
    let mut l = Latencies::default();
    for _ in 0..n {
        tokio::time::sleep(pause).await;
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
        l.to_backend.push((t - t0) as f64 / 1e6);
        l.end_to_end.push((t_end - t0) as f64 / 1e6);
        let d = b.dispatched_at.unwrap() - b.created_at;
        l.to_dispatch
            .push(d.num_microseconds().unwrap() as f64 / 1e3);
        let created = b.created_at.timestamp_nanos_opt().unwrap() as i128;
        l.to_created.push((created - t0) as f64 / 1e6);
    }
    l
}

/// One table row: `what`, then the p50 and p99 of `ms` with `decimals` places.
fn latency_row(what: &str, ms: &mut [f64], decimals: usize) {
    println!(
        "| {what} | p50 {:.decimals$} ms, p99 {:.decimals$} ms |",
        percentile(ms, 0.5),
        percentile(ms, 0.99)
    );
}
