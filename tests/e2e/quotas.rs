//! Quotas with clear failures (`[master.limits]`), and logs of any size served in bounded pieces:
//! a log over its limit, artifacts over the build's and the project's limits, a console following
//! a big log (in chunks, from any line, from its tail), and the master's memory meanwhile.

use futures_util::{SinkExt, StreamExt};
use kiln_shared::codec::{self, MAX_FRAME_BYTES, PROTOCOL_VERSION};
use kiln_shared::frames::{ConsoleEvent, ConsoleRequest, SlaveFrame};
use kiln_shared::{BuildId, BuildState};
use kiln_tests::farm::Ws;
use kiln_tests::{Farm, FarmOptions, GitServer, RawSlave};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const MIB: u64 = 1024 * 1024;

/// A farm with these `[master.limits]`. Nothing here is about liveness: a slave busy streaming
/// tens of MiB on a loaded 2-core machine is given a generous lost time-out.
fn limits(toml: &str) -> FarmOptions {
    FarmOptions {
        extra_master_toml: format!("[master.limits]\n{toml}\n"),
        lost_timeout_secs: 30,
        ..Default::default()
    }
}

/// Pids of live processes whose command line is exactly `args` (as the host sees them).
fn processes(args: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = args
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .filter(|pid| kiln_tests::alive(*pid))
        .collect()
}

async fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "{what} within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A line of 100 characters (101 bytes stored).
const LINE: &str =
    "kiln quota test: 0123456789 0123456789 0123456789 0123456789 0123456789 0123456789 0123456789 012345";

/// A branch whose build prints `bytes` of `LINE`s as fast as it can, then waits as `sleep
/// <marker>` (stopped only by its slave).
fn flood_branch(git: &GitServer, name: &str, bytes: u64, marker: &str) -> String {
    assert_eq!(LINE.len(), 100);
    let repo = git.repo(name);
    repo.script_branch(
        "main",
        &format!("yes '{LINE}' | head -c {bytes}\necho\nexec sleep {marker}"),
    );
    repo.url.clone()
}

#[tokio::test]
async fn a_log_over_its_limit_fails_the_build_keeps_the_log_so_far_and_stops_the_build() {
    let git = GitServer::start();
    let marker = "2718.2818";
    let url = flood_branch(&git, "flood", 8 * MIB, marker);
    let farm = Farm::with(limits(&format!("log_bytes = {}", 4 * MIB))).await;
    let slave = farm.slave("s1").await;
    farm.project("flood", &url, "main").await;
    let b = farm.request_build("flood", json!({})).await;
    let b = farm.wait_ended(b.id, Duration::from_secs(120)).await;
    assert_eq!(b.state, BuildState::Failed);
    assert_eq!(
        b.reason.as_deref(),
        Some("log limit of 4 MiB exceeded"),
        "the reason names the limit"
    );

    // The build's processes are stopped on the slave, and the slave lets go of the build.
    wait_until(
        "the build's script stopped",
        Duration::from_secs(30),
        || processes(&["sleep", marker]).is_empty(),
    )
    .await;
    wait_until("the build's runner gone", Duration::from_secs(30), || {
        slave.runner_pids().is_empty()
    })
    .await;
    kiln_tests::wait_gone(
        &slave.work.join(format!("builds/{}", b.id)),
        "the build's dir on the slave",
    )
    .await;

    // The log so far is kept: whole lines, up to the limit, and the reason last.
    let log = farm.log(b.id).await;
    let size = log.len() as u64;
    assert!(
        size <= 4 * MIB,
        "the stored log ({size} bytes) is within the limit"
    );
    assert!(
        size > 4 * MIB - 1024,
        "the log is kept up to the limit, not cut short ({size} bytes)"
    );
    assert!(
        log.ends_with("\n[kiln-master] log limit of 4 MiB exceeded\n"),
        "{}",
        kiln_tests::farm::tail(&log, 3)
    );
    let flooded = log.lines().filter(|l| *l == LINE).count();
    assert!(flooded > 40_000, "{flooded} lines of the flood kept");
    for l in log.lines() {
        assert!(
            l == LINE || l.starts_with('[') || l.starts_with("+ ") || l.is_empty(),
            "a torn or foreign line: {l:?}"
        );
    }
    // Nothing was added after the end (later lines are dropped), and the index agrees.
    let b = farm.build(b.id).await;
    assert_eq!(b.log_lines as usize, log.lines().count());
    assert_eq!(farm.log(b.id).await.len() as u64, size);
    let h: serde_json::Value = farm.get("/api/health").await;
    assert_eq!(h["status"], "ok", "the master carries on");
}

/// A branch whose build writes the given artifacts (name, bytes of random data).
fn artifacts_branch(git: &GitServer, name: &str, files: &[(&str, u64)]) -> String {
    let repo = git.repo(name);
    let body: Vec<String> = files
        .iter()
        .map(|(f, n)| format!("head -c {n} /dev/urandom > \"$KILN_OUTPUT_DIR/{f}\""))
        .collect();
    repo.script_branch("main", &body.join("\n"));
    repo.url.clone()
}

fn stored_artifact_files(farm: &Farm, id: BuildId) -> Vec<String> {
    let dir = farm
        .dir
        .path()
        .join(format!("storage/builds/{}/artifacts", id.0));
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test]
async fn artifacts_over_the_build_limit_fail_the_build_and_none_are_kept() {
    let git = GitServer::start();
    let url = artifacts_branch(&git, "big", &[("a.img", 600_000), ("b.img", 600_000)]);
    let farm = Farm::with(limits(&format!("artifact_bytes = {MIB}"))).await;
    let slave = farm.slave("s1").await;
    farm.project("big", &url, "main").await;
    let b = farm.request_build("big", json!({})).await;
    let b = farm.wait_ended(b.id, Duration::from_secs(120)).await;
    assert_eq!(b.state, BuildState::Failed);
    let want = format!("artifact limit of 1 MiB exceeded for build {}", b.id);
    assert_eq!(b.reason.as_deref(), Some(want.as_str()));
    assert!(
        farm.artifacts(b.id).await.is_empty(),
        "no artifact is listed"
    );
    assert_eq!(
        stored_artifact_files(&farm, b.id),
        Vec::<String>::new(),
        "no file (whole or partial) is kept"
    );
    assert!(farm.log(b.id).await.contains(&want), "the log says it too");
    // The slave lets go of the build (what it was told is in `an_upload_over_the_limit_...`).
    kiln_tests::wait_gone(
        &slave.work.join(format!("builds/{}", b.id)),
        "the build's dir on the slave",
    )
    .await;
}

#[tokio::test]
async fn a_project_over_its_storage_limit_fails_its_next_build_naming_the_limit() {
    let git = GitServer::start();
    let url = artifacts_branch(&git, "keeper", &[("image.img", 700_000)]);
    let farm = Farm::with(FarmOptions {
        extra_master_toml: format!(
            "retention_interval_secs = 1\n[master.limits]\nproject_storage_bytes = {MIB}\n"
        ),
        ..limits("")
    })
    .await;
    let _slave = farm.slave("s1").await;
    farm.project("keeper", &url, "main").await;
    let first = farm.request_build("keeper", json!({})).await;
    let first = farm.wait_ended(first.id, Duration::from_secs(120)).await;
    assert_eq!(first.state, BuildState::Succeeded, "{:?}", first.reason);
    let kept: u64 = farm
        .artifacts(first.id)
        .await
        .iter()
        .map(|a| a.size as u64)
        .sum();
    assert!(kept > 700_000);

    let next = farm.request_build("keeper", json!({})).await;
    let next = farm.wait_ended(next.id, Duration::from_secs(120)).await;
    assert_eq!(next.state, BuildState::Failed);
    let want =
        format!("storage limit of 1 MiB for project 'keeper' exceeded (holding {kept} bytes)");
    assert_eq!(next.reason.as_deref(), Some(want.as_str()));
    assert!(farm.artifacts(next.id).await.is_empty());
    assert_eq!(stored_artifact_files(&farm, next.id), Vec::<String>::new());
    // What the project kept stays.
    assert_eq!(
        farm.artifacts(first.id)
            .await
            .iter()
            .map(|a| a.size as u64)
            .sum::<u64>(),
        kept
    );

    // Retention removes the first build (the project keeps one, the failed one): its bytes
    // leave the project's total, and the next build fits again.
    let (s, v) = farm
        .patch("/api/projects/keeper", json!({"keep_builds": 1}))
        .await;
    assert_eq!(s, 200, "{v}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while farm
        .get_raw(&format!("/api/builds/{}", first.id))
        .await
        .status()
        != 404
    {
        assert!(
            Instant::now() < deadline,
            "retention kept build {}",
            first.id
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again = farm.request_build("keeper", json!({})).await;
    let again = farm.wait_ended(again.id, Duration::from_secs(120)).await;
    assert_eq!(again.state, BuildState::Succeeded, "{:?}", again.reason);
}

/// An upload refused for a limit is a 413 with a JSON error naming it, before a byte is stored
/// when the declared length already says so; the build fails with the same words.
#[tokio::test]
async fn an_upload_over_the_limit_is_a_413_naming_it() {
    let farm = Farm::with(limits(&format!("artifact_bytes = {MIB}"))).await;
    farm.project("p", "git://127.0.0.1:9/unused.git", "main")
        .await;
    let mut hand = RawSlave::connect(&farm, "hand").await;
    let b = farm.request_build("p", json!({})).await;
    let job = hand.job().await;
    hand.send(SlaveFrame::Started {
        build: b.id,
        commit: "0".repeat(40),
    })
    .await;
    farm.wait_build(b.id, Duration::from_secs(10), "running", |b| {
        b.state == BuildState::Running
    })
    .await;
    let put = |name: &str, bytes: usize| {
        farm.http
            .put(farm.api(&format!("{}/{name}", job.upload_path)))
            .bearer_auth(&job.upload_token)
            .header("x-kiln-sha256", "ab".repeat(32))
            .body(vec![7u8; bytes])
            .send()
    };
    let r = put("huge.img", 2 * MIB as usize).await.unwrap();
    assert_eq!(r.status(), 413);
    let v: serde_json::Value = r.json().await.unwrap();
    let want = format!("artifact limit of 1 MiB exceeded for build {}", b.id);
    assert_eq!(v["error"], want.as_str(), "{v}");
    assert_eq!(v["code"], "too_large", "{v}");
    let b = farm.build(b.id).await;
    assert_eq!(b.state, BuildState::Failed);
    assert_eq!(b.reason.as_deref(), Some(want.as_str()));
    assert!(farm.artifacts(b.id).await.is_empty());
    assert_eq!(stored_artifact_files(&farm, b.id), Vec::<String>::new());
}

/// The test's own console: `/ws/console` with the admin token.
struct Console(Ws);

impl Console {
    async fn open(farm: &Farm) -> Console {
        Console(
            farm.ws(
                "/ws/console",
                Some(&farm.token),
                &PROTOCOL_VERSION.to_string(),
            )
            .await
            .expect("console socket"),
        )
    }

    async fn send(&mut self, r: ConsoleRequest) {
        self.0
            .send(Message::Binary(codec::encode(&r).unwrap().into()))
            .await
            .unwrap();
    }

    /// The next event and the size of its frame.
    async fn next(&mut self) -> (usize, ConsoleEvent) {
        loop {
            match tokio::time::timeout(Duration::from_secs(60), self.0.next()).await {
                Ok(Some(Ok(Message::Binary(b)))) => {
                    return (b.len(), codec::decode(&b).expect("console event"))
                }
                Ok(Some(Ok(_))) => {}
                other => panic!("no event from the master: {other:?}"),
            }
        }
    }

    /// A followed log's events until its end: its lines (numbered from `start`, each event
    /// right after the previous one), the largest frame and the number of events.
    async fn read_log(&mut self, build: BuildId, start: Option<u64>) -> LogRead {
        let mut r = LogRead {
            first: start,
            lines: vec![],
            largest_frame: 0,
            events: 0,
        };
        loop {
            let (size, ev) = self.next().await;
            match ev {
                ConsoleEvent::LogLines {
                    build: b,
                    first_seq,
                    lines,
                } if b == build => {
                    let first = *r.first.get_or_insert(first_seq);
                    assert_eq!(
                        first_seq,
                        first + r.lines.len() as u64,
                        "event {} starts right after the previous one",
                        r.events
                    );
                    assert!(!lines.is_empty(), "no empty events");
                    r.largest_frame = r.largest_frame.max(size);
                    r.events += 1;
                    r.lines.extend(lines);
                }
                ConsoleEvent::LogEnd { build: b } if b == build => return r,
                other => panic!("unexpected event {other:?}"),
            }
        }
    }
}

struct LogRead {
    first: Option<u64>,
    lines: Vec<String>,
    largest_frame: usize,
    events: usize,
}

#[tokio::test]
async fn a_console_gets_a_big_log_in_bounded_chunks_from_any_line_and_from_its_tail() {
    let git = GitServer::start();
    let repo = git.repo("chatty");
    repo.script_branch(
        "main",
        "seq 1 200000 | sed 's/^/line /'\necho ok > \"$KILN_OUTPUT_DIR/ok\"",
    );
    let farm = Farm::start().await;
    let _slave = farm.slave("s1").await;
    farm.project("chatty", &repo.url, "main").await;
    let b = farm.request_build("chatty", json!({})).await;
    let b = farm.wait_ended(b.id, Duration::from_secs(180)).await;
    assert_eq!(b.state, BuildState::Succeeded, "{:?}", b.reason);
    let stored: Vec<String> = farm.log(b.id).await.lines().map(String::from).collect();
    assert_eq!(stored.len() as i64, b.log_lines);
    assert!(stored.len() > 200_000);

    // From the first line: every line once, in order, in chunks far below the frame limit.
    let mut console = Console::open(&farm).await;
    console
        .send(ConsoleRequest::SubscribeLog {
            build: b.id,
            from_seq: 0,
        })
        .await;
    let all = console.read_log(b.id, Some(0)).await;
    assert_eq!(all.lines, stored, "the whole log, each line once, in order");
    assert!(all.events >= 40, "in chunks ({} events)", all.events);
    // At most 5,000 lines and about 1 MiB of text per event: a quarter of the frame limit.
    assert!(
        all.largest_frame <= MAX_FRAME_BYTES / 4,
        "largest frame {} bytes",
        all.largest_frame
    );
    eprintln!(
        "MEASURE console backlog: {} lines in {} events, largest frame {} bytes",
        all.lines.len(),
        all.events,
        all.largest_frame
    );

    // From a line in the middle.
    let from = 123_457u64;
    console
        .send(ConsoleRequest::SubscribeLog {
            build: b.id,
            from_seq: from,
        })
        .await;
    let mid = console.read_log(b.id, Some(from)).await;
    assert_eq!(mid.lines, stored[from as usize..]);

    // The tail: exactly the last N lines come first (then the end: the build is over).
    console
        .send(ConsoleRequest::SubscribeLogTail {
            build: b.id,
            lines: 2_000,
        })
        .await;
    let tail = console.read_log(b.id, None).await;
    let n = stored.len();
    assert_eq!(tail.first, Some(n as u64 - 2_000));
    assert_eq!(tail.lines, stored[n - 2_000..]);

    // Earlier lines, just before the tail's first one.
    console
        .send(ConsoleRequest::EarlierLog {
            build: b.id,
            before_seq: n as u64 - 2_000,
            lines: 3_000,
        })
        .await;
    match console.next().await.1 {
        ConsoleEvent::EarlierLines {
            build,
            first_seq,
            before_seq,
            lines,
        } => {
            assert_eq!((build, before_seq), (b.id, n as u64 - 2_000));
            assert_eq!(first_seq, n as u64 - 5_000);
            assert_eq!(lines, stored[n - 5_000..n - 2_000]);
        }
        other => panic!("expected the earlier lines, got {other:?}"),
    }
}

/// `(VmRSS, VmHWM)` of a process, in bytes.
fn memory(pid: i32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The case of a 2 GiB log, scaled down: a build floods 64 MiB into a 32 MiB limit while
/// a console follows it live (and another opens it at the tail); the master (a child process
/// here) keeps its memory bounded meanwhile, and the console gets every stored line.
#[tokio::test]
async fn the_master_stays_small_while_a_console_follows_a_big_log() {
    let git = GitServer::start();
    let marker = "3141.5926";
    let url = flood_branch(&git, "huge", 64 * MIB, marker);
    let farm = Farm::with(limits(&format!("log_bytes = {}", 32 * MIB))).await;
    let _slave = farm.slave("s1").await;
    farm.project("huge", &url, "main").await;
    let pid = farm
        .master_pid()
        .expect("the master runs as a child process");
    let (rss_before, hwm_before) = memory(pid);

    let mut console = Console::open(&farm).await;
    let b = farm.request_build("huge", json!({})).await;
    console
        .send(ConsoleRequest::SubscribeLog {
            build: b.id,
            from_seq: 0,
        })
        .await;
    let followed = console.read_log(b.id, Some(0)).await;
    let b = farm.wait_ended(b.id, Duration::from_secs(120)).await;
    assert_eq!(b.reason.as_deref(), Some("log limit of 32 MiB exceeded"));
    // A second console opens the ended log at its tail, and reads it all from there.
    let mut late = Console::open(&farm).await;
    late.send(ConsoleRequest::SubscribeLogTail {
        build: b.id,
        lines: 100_000,
    })
    .await;
    let tail = late.read_log(b.id, None).await;
    let (rss_after, hwm_after) = memory(pid);

    assert_eq!(
        followed.lines.len() as i64,
        b.log_lines,
        "every stored line"
    );
    assert_eq!(
        followed.lines.last().map(String::as_str),
        Some("[kiln-master] log limit of 32 MiB exceeded")
    );
    assert_eq!(
        tail.lines[..],
        followed.lines[followed.lines.len() - 100_000..]
    );
    let text: u64 = followed.lines.iter().map(|l| l.len() as u64 + 1).sum();
    let growth = hwm_after.saturating_sub(rss_before);
    eprintln!(
        "MEASURE master memory: RSS {} MB before, peak {} MB before and {} MB after (RSS {} MB \
         after), growth of the peak over the RSS before {} MB; log {} MB in {} events (largest \
         frame {} bytes) followed live",
        rss_before / MIB,
        hwm_before / MIB,
        hwm_after / MIB,
        rss_after / MIB,
        growth / MIB,
        text / MIB,
        followed.events,
        followed.largest_frame
    );
    assert!(text > 31 * MIB, "the console got the whole stored log");
    assert!(followed.largest_frame <= MAX_FRAME_BYTES / 4);
    assert!(
        growth < 64 * MIB,
        "the master's peak memory grew by {} MB while a console followed a {} MB log",
        growth / MIB,
        text / MIB
    );
}
