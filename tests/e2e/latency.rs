//! How quickly the slave daemon passes on what a build does: a log line from the moment the
//! build script writes it (`date +%s%N`) to the moment it is in the slave's log file (the
//! build's own part), in the master's stored log, and on a console following it live over the
//! WebSocket; a build's dispatched → running and end-of-script → finished times; and the
//! daemon's CPU time while idle.
//!
//! Speed is never asserted here (a loaded CI machine is slow): the numbers are printed
//! (`MEASURE …`, see them with `--nocapture`); what is asserted is correctness: every line
//! arrives once, in order.

use futures_util::{SinkExt, StreamExt};
use kiln_shared::api::Build;
use kiln_shared::codec::{self, PROTOCOL_VERSION};
use kiln_shared::frames::{ConsoleEvent, ConsoleRequest};
use kiln_shared::BuildState;
use kiln_tests::measure::now_ns;
use kiln_tests::{Farm, GitServer};
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const LINES: u32 = 200;

fn ms(ns: i128) -> f64 {
    ns as f64 / 1e6
}

/// The value at quantile `q` (0..=1) of sorted `v`.
fn quantile(v: &[i128], q: f64) -> i128 {
    v[((v.len() - 1) as f64 * q).round() as usize]
}

/// "p50 …, p99 …, max … over N lines" of sorted delays (nanoseconds).
fn spread(v: &[i128]) -> String {
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} lines",
        ms(quantile(v, 0.5)),
        ms(quantile(v, 0.99)),
        ms(*v.last().expect("some delays")),
        v.len()
    )
}

/// When the build's script ended: the `end` file it wrote (`date +%s%N`).
async fn script_end(farm: &Farm, build: kiln_shared::BuildId) -> i128 {
    String::from_utf8(farm.download(build, "end").await)
        .unwrap()
        .trim()
        .parse()
        .expect("the script's end time")
}

fn ts_ns(t: &chrono::DateTime<chrono::Utc>) -> i128 {
    i128::from(t.timestamp_nanos_opt().expect("a timestamp in range"))
}

/// dispatched → running and created → finished of an ended build, in nanoseconds.
fn build_times(b: &Build) -> (i128, i128) {
    let (d, s, f) = (
        b.dispatched_at.as_ref().expect("dispatched_at"),
        b.started_at.as_ref().expect("started_at"),
        b.finished_at.as_ref().expect("finished_at"),
    );
    (ts_ns(s) - ts_ns(d), ts_ns(f) - ts_ns(&b.created_at))
}

#[tokio::test]
async fn log_lines_reach_the_master_once_in_order_and_their_delay_is_measured() {
    let git = GitServer::start();
    let repo = git.repo("latency");
    // Each line carries the time it was written (date +%s%N, the same clock as the test's).
    repo.script_branch(
        "main",
        &format!(
            r#"i=1
while [ $i -le {LINES} ]; do
  echo "lat $i $(date +%s%N)"
  sleep 0.01
  i=$((i+1))
done
date +%s%N > "$KILN_OUTPUT_DIR/end""#
        ),
    );
    let farm = Farm::start().await;
    let slave = farm.slave("lat-slave").await;
    farm.project("latency", &repo.url, "main").await;
    let mut console = farm
        .ws(
            "/ws/console",
            Some(&farm.token),
            &PROTOCOL_VERSION.to_string(),
        )
        .await
        .expect("console socket");
    let b = farm.request_build("latency", json!({})).await;
    // The master's own copy of the log, looked at every millisecond: when it has each line.
    let stored_path = farm.dir.path().join(format!("storage/builds/{}/log", b.id));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tailer = {
        let stop = stop.clone();
        std::thread::spawn(move || tail_stored(&stored_path, &stop))
    };
    // And the slave's: how much of the delay is the build's own (its pipe to the runner).
    let slave_path = slave.work.join(format!("builds/{}/log", b.id));
    let slave_tailer = {
        let stop = stop.clone();
        std::thread::spawn(move || tail_stored(&slave_path, &stop))
    };
    // Followed from its first line before it is even dispatched: every line comes live.
    console
        .send(Message::Binary(
            codec::encode(&ConsoleRequest::SubscribeLog {
                build: b.id,
                from_seq: 0,
            })
            .unwrap()
            .into(),
        ))
        .await
        .unwrap();
    let mut next_seq = 0u64;
    let mut seen: Vec<u32> = vec![];
    let mut delays: Vec<i128> = vec![];
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(120), console.next())
            .await
            .expect("a console event within 120 s");
        let event: ConsoleEvent = match msg {
            Some(Ok(Message::Binary(bytes))) => codec::decode(&bytes).expect("a console event"),
            Some(Ok(_)) => continue,
            other => panic!("the console closed: {other:?}"),
        };
        let arrived = now_ns();
        match event {
            ConsoleEvent::LogLines {
                build,
                first_seq,
                lines,
            } if build == b.id => {
                assert_eq!(first_seq, next_seq, "log events follow each other");
                next_seq += lines.len() as u64;
                for l in lines {
                    let mut f = l.split(' ');
                    if f.next() != Some("lat") {
                        continue;
                    }
                    let n: u32 = f.next().and_then(|n| n.parse().ok()).expect("line number");
                    let written: i128 = f.next().and_then(|t| t.parse().ok()).expect("time");
                    seen.push(n);
                    delays.push(arrived - written);
                }
            }
            ConsoleEvent::LogEnd { build } if build == b.id => break,
            _ => {}
        }
    }
    assert_eq!(
        seen,
        (1..=LINES).collect::<Vec<_>>(),
        "every line once, in order, live"
    );
    let b = farm.wait_ended(b.id, Duration::from_secs(60)).await;
    assert_eq!(b.state, BuildState::Succeeded, "{:?}", b.reason);
    let stored: Vec<String> = farm
        .log(b.id)
        .await
        .lines()
        .filter(|l| l.starts_with("lat "))
        .map(|l| l.split(' ').nth(1).unwrap().to_string())
        .collect();
    assert_eq!(
        stored,
        (1..=LINES).map(|n| n.to_string()).collect::<Vec<_>>(),
        "the stored log has every line once, in order"
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (stored_seen, mut stored_delays) = tailer.join().unwrap();
    assert_eq!(
        stored_seen,
        (1..=LINES).collect::<Vec<_>>(),
        "the master's file got every line once, in order"
    );
    stored_delays.sort();
    delays.sort();
    let (_, mut slave_delays) = slave_tailer.join().unwrap();
    slave_delays.sort();
    if !slave_delays.is_empty() {
        eprintln!(
            "MEASURE log line written → in the slave's file: {}",
            spread(&slave_delays)
        );
    }
    eprintln!(
        "MEASURE log line written → stored by the master: {}",
        spread(&stored_delays)
    );
    let end = script_end(&farm, b.id).await;
    let (dispatched_running, _) = build_times(&b);
    eprintln!(
        "MEASURE log line written → master (console): {}",
        spread(&delays)
    );
    eprintln!(
        "MEASURE dispatched → running {:.1} ms; script end → finished {:.1} ms",
        ms(dispatched_running),
        ms(ts_ns(b.finished_at.as_ref().unwrap()) - end)
    );
}

/// Follows a log file (the master's stored copy, the slave's) until `stop`: the number of each
/// `lat` line and how long after it was written it was there.
fn tail_stored(
    path: &std::path::Path,
    stop: &std::sync::atomic::AtomicBool,
) -> (Vec<u32>, Vec<i128>) {
    use std::io::Read;
    let (mut seen, mut delays) = (vec![], vec![]);
    let mut file = None;
    let mut pending = Vec::new();
    loop {
        let done = stop.load(std::sync::atomic::Ordering::SeqCst);
        if file.is_none() {
            file = std::fs::File::open(path).ok();
        }
        if let Some(f) = file.as_mut() {
            let mut buf = vec![];
            f.read_to_end(&mut buf).expect("reading the stored log");
            let arrived = now_ns();
            pending.extend_from_slice(&buf);
            while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=nl).collect();
                let line = String::from_utf8_lossy(&line);
                let mut f = line.trim_end().split(' ');
                if f.next() != Some("lat") {
                    continue;
                }
                let n: u32 = f.next().and_then(|n| n.parse().ok()).expect("line number");
                let written: i128 = f.next().and_then(|t| t.parse().ok()).expect("time");
                seen.push(n);
                delays.push(arrived - written);
            }
        }
        if done {
            return (seen, delays);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// No-op builds one after another: the medians of dispatched → running, request → finished and
/// script end → finished; then the daemon's CPU time over an idle spell
/// (`KILN_IDLE_SECS`, 30 by default). A measurement only: run it with
/// `--ignored --nocapture`.
#[tokio::test]
#[ignore = "measurement (about a minute): run with --ignored --nocapture"]
async fn noop_build_times_and_idle_cpu() {
    let git = GitServer::start();
    let repo = git.repo("noop");
    repo.script_branch("main", r#"date +%s%N > "$KILN_OUTPUT_DIR/end""#);
    let farm = Farm::start().await;
    let slave = farm.slave("noop-slave").await;
    farm.project("noop", &repo.url, "main").await;
    noop_builds(&farm, "with the git cache").await;
    let secs: u64 = std::env::var("KILN_IDLE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let pid = slave.pid().expect("the slave runs");
    let cpu = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let rest = stat.rsplit_once(')').unwrap().1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime: fields 14 and 15 of stat(5), 12 and 13 after the name.
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let before = cpu();
    // A measurement's own duration, not a guess at an event.
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let used = (cpu() - before) as f64 / hz;
    eprintln!(
        "MEASURE idle daemon: {:.0} ms of CPU in {secs} s ({:.3} %)",
        used * 1e3,
        used * 100.0 / secs as f64
    );
    // Without the git cache the runner fetches, and the daemon learns the commit from its
    // state file.
    drop(slave);
    let config = farm.dir.path().join("no-cache.toml");
    std::fs::write(&config, "version = 1\n[slave]\ngit_cache_bytes = 0\n").unwrap();
    let _slave = farm
        .slave_with("no-cache-slave", &["--config", config.to_str().unwrap()])
        .await;
    noop_builds(&farm, "without the git cache").await;
}

/// 21 no-op builds one after another; prints the medians of the last 20 (the first fills the
/// git cache).
async fn noop_builds(farm: &Farm, what: &str) {
    let (mut running, mut finished, mut exit) = (vec![], vec![], vec![]);
    for _ in 0..21 {
        let b = farm.request_build("noop", json!({})).await;
        let b = farm.wait_ended(b.id, Duration::from_secs(60)).await;
        assert_eq!(b.state, BuildState::Succeeded, "{:?}", b.reason);
        let end = script_end(farm, b.id).await;
        let (r, f) = build_times(&b);
        running.push(r);
        finished.push(f);
        exit.push(ts_ns(b.finished_at.as_ref().unwrap()) - end);
    }
    for v in [&mut running, &mut finished, &mut exit] {
        v.remove(0);
        v.sort();
    }
    eprintln!(
        "MEASURE no-op build {what}, median of {}: dispatched → running {:.1} ms, request → finished {:.1} ms, script end → finished {:.1} ms",
        running.len(),
        ms(quantile(&running, 0.5)),
        ms(quantile(&finished, 0.5)),
        ms(quantile(&exit, 0.5)),
    );
}
