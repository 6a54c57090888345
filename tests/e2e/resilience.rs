//! Slaves and masters die; builds are accounted for and logs are whole.

use chrono::Utc;
use kiln_master::clock::ManualClock;
use kiln_master::liveness;
use kiln_shared::api::Build;
use kiln_shared::BuildState;
use kiln_tests::{Farm, FarmOptions, GitServer, Proxy};
use serde_json::json;
use std::sync::Arc;
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
    // The backend's own first line is stored (the slave's notes before it come earlier).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !farm.log(b.id).await.contains("begin") {
        assert!(Instant::now() < deadline, "{}", farm.log(b.id).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    // A retry is queued in the same transaction that marks its build lost, so once the build is
    // seen lost, a third build would already be there.
    let all: Vec<kiln_shared::api::Build> = farm.get("/api/builds?project=slow").await;
    assert_eq!(all.len(), 2, "one retry only: {all:?}");
}

/// A job still on its way when the slave's daemon ended: the slave comes back without it and
/// never said it started, so nothing of it ran. It goes back to the queue as the same build,
/// not as a lost attempt and a retry (which a restart of a busy slave used to leave behind, two
/// per restart, and which used up the project's `lost_retries`).
#[tokio::test]
async fn a_job_that_never_reached_a_restarted_slave_is_queued_again_not_lost() {
    use kiln_shared::frames::SlaveFrame;
    let git = GitServer::start();
    let repo = git.repo("unreached");
    repo.script_branch("main", "true");
    let farm = Farm::start().await;
    let token = farm.register_slave("raw").await;
    let say_hello = |ws| async {
        let mut s = kiln_tests::RawSlave { ws };
        s.send(SlaveFrame::Hello(kiln_tests::farm::test_hello("raw")))
            .await;
        s
    };
    let mut first = say_hello(farm.slave_ws(&token).await.unwrap()).await;
    farm.project("unreached", &repo.url, "main").await;
    let b = farm.request_build("unreached", json!({})).await;
    assert_eq!(first.job().await.build, b.id);
    // The daemon ends with the job unread, and its next start holds nothing.
    drop(first);
    let mut again = say_hello(farm.slave_ws(&token).await.unwrap()).await;
    assert_eq!(
        again.job().await.build,
        b.id,
        "the same build is given again"
    );
    let all: Vec<Build> = farm.get("/api/builds?project=unreached").await;
    assert_eq!(all.len(), 1, "no lost attempt, no retry: {all:?}");
    assert_eq!(all[0].state, BuildState::Dispatched);
    assert_eq!(
        all[0].reason.as_deref(),
        Some("slave 'raw' restarted before its job reached it")
    );
}

#[tokio::test]
async fn a_master_down_longer_than_the_lost_timeout_loses_no_build() {
    let git = GitServer::start();
    let repo = git.repo("numbers");
    repo.numbered_branch(600);
    let lost_timeout = 3;
    let mut farm = Farm::with(FarmOptions {
        heartbeat_secs: 1,
        lost_timeout_secs: lost_timeout,
        ..Default::default()
    })
    .await;
    let slave = farm.slave("s1").await;
    farm.project("numbers", &repo.url, "main").await;
    let b = farm.request_build("numbers", json!({})).await;
    farm.wait_build(b.id, Duration::from_secs(60), "streaming", |b| {
        b.log_lines > 60
    })
    .await;
    farm.kill_master();
    slave
        .wait_log("connection to the master", Duration::from_secs(30))
        .await;
    // The outage itself: three times the lost time-out, an upgrade or a reboot.
    tokio::time::sleep(Duration::from_secs(3 * u64::from(lost_timeout))).await;
    farm.restart_master();
    let done = farm.wait_ended(b.id, Duration::from_secs(90)).await;
    assert_eq!(done.state, BuildState::Succeeded, "{:?}", done.reason);
    farm.assert_numbered(b.id, 600).await;
    let log = farm.log(b.id).await;
    let all: Vec<Build> = farm.get("/api/builds?project=numbers").await;
    assert_eq!(all.len(), 1, "nothing was lost or retried: {all:?}");
    assert_eq!(
        done.log_lines as usize,
        log.lines().count(),
        "the index matches the file"
    );
}

#[tokio::test]
async fn a_partitioned_slave_loses_its_build_to_a_healthy_one_and_nothing_runs_twice() {
    let git = GitServer::start();
    let repo = git.repo("cut");
    let farm = Farm::with(FarmOptions {
        heartbeat_secs: 1,
        lost_timeout_secs: 4,
        ..Default::default()
    })
    .await;
    let drop = kiln_tests::drop_dir();
    let mark = drop.path().join("first");
    // The first attempt hangs; the retry (the mark exists by then) is quick.
    repo.script_branch(
        "main",
        &format!(
            "if [ ! -e {p} ]; then touch {p}; echo first; sleep 295; fi\necho retry > \"$KILN_OUTPUT_DIR/out\"",
            p = mark.display()
        ),
    );
    let proxy = Proxy::start(&farm.url).await;
    let cut = farm.slave_through("cut-off", &proxy.url, &[]).await;
    farm.project("cut", &repo.url, "main").await;
    let b = farm.request_build("cut", json!({})).await;
    let first = kiln_tests::wait_process("sleep 295").await;
    farm.wait_build(b.id, Duration::from_secs(30), "running", |b| {
        b.state == BuildState::Running
    })
    .await;
    let _healthy = farm.slave("healthy").await;
    proxy.partition();
    let lost = farm
        .wait_build(b.id, Duration::from_secs(60), "lost", |b| {
            b.state == BuildState::Lost
        })
        .await;
    assert!(lost.reason.unwrap().contains("stopped responding"));
    let all: Vec<Build> = farm.get("/api/builds?project=cut").await;
    let retry = all
        .iter()
        .find(|x| x.retry_of == Some(b.id))
        .expect("retried");
    let retry = farm.wait_ended(retry.id, Duration::from_secs(60)).await;
    assert_eq!(retry.state, BuildState::Succeeded, "{:?}", retry.reason);
    assert_eq!(
        retry.slave.as_deref(),
        Some("healthy"),
        "not to the silent slave"
    );
    // Heal: the cut-off slave comes back, is told to forget its copy, and stops it.
    proxy.heal();
    kiln_tests::wait_dead(first, "the lost build's copy").await;
    farm.wait_slave_online("cut-off", true).await;
    let copy = cut.work.join("builds").join(b.id.to_string());
    kiln_tests::wait_gone(&copy, "the lost build's dir on the cut-off slave").await;
    let all: Vec<Build> = farm.get("/api/builds?project=cut").await;
    assert_eq!(all.len(), 2, "one build, one retry: {all:?}");
    assert_eq!(farm.build(b.id).await.state, BuildState::Lost);
    assert_eq!(farm.build(retry.id).await.state, BuildState::Succeeded);
    assert_eq!(farm.download(retry.id, "out").await, b"retry\n");
}

/// Liveness on the master's own clock, driven by the test: a slave is lost only after it was
/// silent for the time-out while the master could hear it, and then nothing more goes to it.
///
/// The slave speaks the real protocol from the test, so the test knows when it has said its
/// last word: the master answered every frame before the clock moves. (A slave process sends
/// a heartbeat and a ping on its own timer; one still on its way when the clock jumped counted
/// as heard at the new time.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_is_counted_on_the_masters_clock_and_a_silent_slave_gets_nothing() {
    use futures_util::StreamExt;
    use kiln_shared::codec;
    use kiln_shared::frames::{MasterFrame, SlaveFrame};
    use tokio_tungstenite::tungstenite::Message;
    let t0 = Utc::now();
    let clock = Arc::new(ManualClock::new(t0));
    let farm = Farm::in_process(
        FarmOptions {
            heartbeat_secs: 1,
            lost_timeout_secs: 30,
            ..Default::default()
        },
        clock.clone(),
    )
    .await;
    farm.project("quiet", "https://git.example.org/quiet.git", "main")
        .await;
    let mut slave = kiln_tests::RawSlave::connect(&farm, "s1").await;
    let b = farm.request_build("quiet", json!({})).await;
    assert_eq!(slave.job().await.build, b.id);
    for f in [
        SlaveFrame::Started {
            build: b.id,
            commit: "c".repeat(40),
        },
        SlaveFrame::Log {
            build: b.id,
            first_seq: 0,
            lines: vec!["begin".into()],
        },
    ] {
        slave.send(f).await;
    }
    // The answer to its last frame: the master has heard all it said. It says nothing more.
    loop {
        if let MasterFrame::LogAck { build, next_seq } = slave.next().await {
            assert_eq!((build, next_seq), (b.id, 1));
            break;
        }
    }
    assert_eq!(farm.build(b.id).await.state, BuildState::Running);
    clock.set(t0 + chrono::Duration::seconds(29));
    assert!(
        liveness::sweep(farm.state()).await.unwrap().is_empty(),
        "29 s of 30"
    );
    // Quiet for two heartbeats: no new build for it, and the waiting reason says so.
    let other = farm.request_build("quiet", json!({})).await;
    let waiting = farm
        .wait_build(other.id, Duration::from_secs(30), "explained", |b| {
            b.waiting_reason.is_some()
        })
        .await;
    assert_eq!(waiting.state, BuildState::Queued);
    assert!(
        waiting
            .waiting_reason
            .as_deref()
            .unwrap()
            .contains("gone quiet (s1)"),
        "{waiting:?}"
    );
    clock.set(t0 + chrono::Duration::seconds(31));
    assert_eq!(liveness::sweep(farm.state()).await.unwrap(), vec![b.id]);
    // Its session is closed in the same step.
    farm.wait_slave_online("s1", false).await;
    let lost = farm.build(b.id).await;
    assert_eq!(lost.state, BuildState::Lost);
    assert!(lost.reason.unwrap().contains("stopped responding"));
    assert_eq!(
        lost.log_lines as usize,
        farm.log(b.id).await.lines().count()
    );
    // And nothing more went to it: its session ended without another job.
    loop {
        match slave.ws.next().await {
            Some(Ok(Message::Binary(m))) => match codec::decode::<MasterFrame>(&m).unwrap() {
                MasterFrame::Assign(job) => panic!("a silent slave got build {}", job.build),
                _ => continue,
            },
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            Some(Ok(_)) => continue,
        }
    }
    assert_eq!(farm.build(other.id).await.state, BuildState::Queued);
}

/// A master that was down (its clock moved on an hour) gives slaves the lost time-out from its
/// start before any of their builds can be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_master_gives_slaves_the_time_out_from_its_start() {
    let git = GitServer::start();
    let repo = git.repo("held");
    repo.script_branch("main", "echo begin\nsleep 300");
    let t0 = Utc::now();
    let clock = Arc::new(ManualClock::new(t0));
    let mut farm = Farm::in_process(
        FarmOptions {
            heartbeat_secs: 1,
            lost_timeout_secs: 30,
            ..Default::default()
        },
        clock.clone(),
    )
    .await;
    let slave = farm.slave("s1").await;
    farm.project("held", &repo.url, "main").await;
    let b = farm.request_build("held", json!({})).await;
    farm.wait_build(b.id, Duration::from_secs(60), "running", |b| {
        b.state == BuildState::Running
    })
    .await;
    // The slave is frozen, so it cannot reconnect to the new master before the sweeps below.
    slave.signal(libc::SIGSTOP);
    let later = t0 + chrono::Duration::hours(1);
    clock.set(later);
    farm.restart_in_process(clock.clone()).await;
    assert!(
        liveness::sweep(farm.state()).await.unwrap().is_empty(),
        "just started"
    );
    clock.set(later + chrono::Duration::seconds(29));
    assert!(liveness::sweep(farm.state()).await.unwrap().is_empty());
    // Back within the time-out: it reconnects and the build carries on.
    slave.signal(libc::SIGCONT);
    farm.wait_slave_online("s1", true).await;
    clock.set(later + chrono::Duration::seconds(45));
    assert!(
        liveness::sweep(farm.state()).await.unwrap().is_empty(),
        "heard from since"
    );
    assert_eq!(farm.build(b.id).await.state, BuildState::Running);
}

/// The embedded PostgreSQL is killed mid-build, and cannot come back at once (its data dir is
/// moved away for a while): health says so, the API fails fast with 503, the master restarts the
/// cluster by itself once it can, and the build completes with its whole log. SIGTERM during an
/// outage still stops the master.
#[tokio::test]
async fn the_embedded_database_killed_is_noticed_restarted_and_loses_nothing() {
    let git = GitServer::start();
    let repo = git.repo("numbers");
    repo.numbered_branch(400);
    let mut farm = Farm::with(FarmOptions {
        embedded_db: true,
        heartbeat_secs: 1,
        lost_timeout_secs: 60,
        ..Default::default()
    })
    .await;
    let _slave = farm.slave("s1").await;
    farm.project("numbers", &repo.url, "main").await;
    let b = farm.request_build("numbers", json!({})).await;
    farm.wait_build(b.id, Duration::from_secs(60), "streaming", |b| {
        b.log_lines > 40
    })
    .await;
    let pgdata = farm.dir.path().join("postgres");
    let away = farm.dir.path().join("postgres.away");
    let kill_db = || {
        let pid: i32 = std::fs::read_to_string(pgdata.join("postmaster.pid"))
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // SAFETY: the test's own database server.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        kiln_tests::wait_dead_blocking(pid);
        std::fs::rename(&pgdata, &away).unwrap();
    };
    kill_db();
    let killed = Instant::now();
    let health = wait_health(&farm, 503).await;
    let noticed = killed.elapsed();
    assert!(
        noticed < Duration::from_secs(10),
        "noticed after {noticed:?}"
    );
    assert_eq!(health["status"], "unavailable");
    assert!(
        health["database"].as_str().unwrap().starts_with("down"),
        "{health}"
    );
    let asked = Instant::now();
    let r = farm.get_raw("/api/projects").await;
    assert_eq!(r.status().as_u16(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("database is unavailable"),
        "{v}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "fails fast: {:?}",
        asked.elapsed()
    );
    // Meanwhile the killed postmaster's pid goes to another process (a machine with pid_max
    // 32768 reuses pids within minutes): its postmaster.pid now names a live process that is
    // no postmaster, which must neither be signalled nor keep the cluster from starting. It is
    // the cluster's user's, whom `pg_ctl` may signal.
    use std::os::unix::{fs::MetadataExt, process::CommandExt};
    let owner = std::fs::metadata(&away).unwrap();
    let mut decoy = kiln_tests::proc::Killed(
        std::process::Command::new("sleep")
            .arg("600")
            .uid(owner.uid())
            .gid(owner.gid())
            .spawn()
            .unwrap(),
    );
    let lock = away.join("postmaster.pid");
    let text = std::fs::read_to_string(&lock).unwrap();
    let rest = text.split_once('\n').map_or("", |(_, r)| r);
    std::fs::write(&lock, format!("{}\n{rest}", decoy.pid())).unwrap();
    // The data dir comes back; the master restarts the cluster by itself.
    std::fs::rename(&away, &pgdata).unwrap();
    wait_health(&farm, 200).await;
    assert!(
        decoy.0.try_wait().unwrap().is_none(),
        "the process that took the killed postmaster's pid was left alone"
    );
    drop(decoy);
    let done = farm.wait_ended(b.id, Duration::from_secs(120)).await;
    assert_eq!(done.state, BuildState::Succeeded, "{:?}", done.reason);
    farm.assert_numbered(b.id, 400).await;
    assert!(
        farm.master_log().contains("restarted it"),
        "{}",
        farm.master_log()
    );

    // SIGTERM while the database is away still stops the master.
    kill_db();
    wait_health(&farm, 503).await;
    let status = farm.stop_master(Duration::from_secs(60)).await;
    assert!(
        status.is_some(),
        "the master did not stop on SIGTERM during an outage"
    );
    std::fs::rename(&away, &pgdata).unwrap();
}

/// Polls `/api/health` (no login needed) until it answers `status`; its body.
async fn wait_health(farm: &Farm, status: u16) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = farm.http.get(farm.api("/api/health")).send().await {
            if r.status().as_u16() == status {
                return r.json().await.unwrap();
            }
        }
        assert!(Instant::now() < deadline, "health never answered {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An external database (`database.url`) that stops taking the master's connections: health
/// says so, the API fails fast with 503, and everything resumes when it is back.
#[tokio::test]
async fn an_external_database_that_goes_away_fails_fast_and_resumes() {
    let git = GitServer::start();
    let repo = git.repo("numbers");
    repo.numbered_branch(300);
    let farm = Farm::with(FarmOptions {
        lost_timeout_secs: 60,
        ..Default::default()
    })
    .await;
    let _slave = farm.slave("s1").await;
    farm.project("numbers", &repo.url, "main").await;
    let b = farm.request_build("numbers", json!({})).await;
    farm.wait_build(b.id, Duration::from_secs(60), "streaming", |b| {
        b.log_lines > 30
    })
    .await;
    let db = farm.database_name().expect("an external database");
    let pg = kiln_tests::Postgres::shared();
    assert!(pg.psql(
        "postgres",
        &format!(
            "ALTER DATABASE {db} ALLOW_CONNECTIONS false; \
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"
        )
    ));
    let health = wait_health(&farm, 503).await;
    assert!(
        health["database"].as_str().unwrap().starts_with("down"),
        "{health}"
    );
    let asked = Instant::now();
    let r = farm.get_raw("/api/builds").await;
    assert_eq!(r.status().as_u16(), 503);
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "fails fast: {:?}",
        asked.elapsed()
    );
    assert!(pg.psql(
        "postgres",
        &format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true")
    ));
    wait_health(&farm, 200).await;
    let done = farm.wait_ended(b.id, Duration::from_secs(120)).await;
    assert_eq!(done.state, BuildState::Succeeded, "{:?}", done.reason);
    farm.assert_numbered(b.id, 300).await;
}

/// A revoke that was cut short (its master died after removing the slave, before losing its
/// builds) leaves builds no slave will report: the next liveness sweep loses them (and the
/// project's retry takes over) rather than leaving them running for ever.
#[tokio::test]
async fn a_build_whose_slave_was_removed_under_it_is_lost_by_the_next_sweep() {
    use kiln_shared::frames::SlaveFrame;
    let farm = Farm::in_process(
        FarmOptions::default(),
        Arc::new(kiln_master::clock::SystemClock),
    )
    .await;
    farm.project("p", "https://git.example.org/p.git", "main")
        .await;
    let mut slave = kiln_tests::RawSlave::connect(&farm, "raw").await;
    let b = farm.request_build("p", json!({})).await;
    assert_eq!(slave.job().await.build, b.id);
    slave
        .send(SlaveFrame::Started {
            build: b.id,
            commit: "a".repeat(40),
        })
        .await;
    farm.wait_build(b.id, Duration::from_secs(30), "running", |b| {
        b.state == BuildState::Running
    })
    .await;
    assert!(liveness::sweep(farm.state()).await.unwrap().is_empty());
    // What the cut-short revoke did: the slave's row is gone, its builds still running.
    sqlx::query("DELETE FROM slaves WHERE name = 'raw'")
        .execute(&farm.state().db)
        .await
        .unwrap();
    assert_eq!(liveness::sweep(farm.state()).await.unwrap(), vec![b.id]);
    let lost = farm.build(b.id).await;
    assert_eq!(lost.state, BuildState::Lost);
    assert_eq!(
        lost.reason.as_deref(),
        Some("its slave was revoked while it held the build")
    );
}

/// A job whose `Assign` never reached its slave (sent on a session already dead, say by another
/// master that still held one) does not stay `dispatched` while the slave is heard from: once
/// the slave's heartbeats have not listed it for `master.lost_timeout_secs`, it goes back to
/// the queue as the same build. A job listed in time stays with its slave.
#[tokio::test]
async fn a_job_its_slave_never_lists_goes_back_to_the_queue() {
    use futures_util::StreamExt;
    use kiln_shared::frames::{MasterFrame, SlaveFrame};
    use tokio_tungstenite::tungstenite::Message;
    let farm = Farm::with(FarmOptions {
        heartbeat_secs: 1,
        lost_timeout_secs: 2,
        ..Default::default()
    })
    .await;
    farm.project("p", "https://git.example.org/p.git", "main")
        .await;
    let mut hello = kiln_tests::farm::test_hello("raw");
    hello.capacity = 2;
    let mut slave = kiln_tests::RawSlave::connect_with(&farm, hello).await;
    let listed = farm.request_build("p", json!({})).await.id;
    assert_eq!(slave.job().await.build, listed);
    // Its second job "never arrives": the slave's heartbeats list only the first.
    let unlisted = farm.request_build("p", json!({})).await.id;
    assert_eq!(slave.job().await.build, unlisted);
    let beat = || SlaveFrame::Heartbeat {
        builds: vec![listed],
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut tick = tokio::time::interval(Duration::from_millis(300));
    let again = loop {
        assert!(
            Instant::now() < deadline,
            "the unlisted job was never given again"
        );
        tokio::select! {
            _ = tick.tick() => slave.send(beat()).await,
            m = slave.ws.next() => {
                let Some(Ok(Message::Binary(b))) = m else { continue };
                if let MasterFrame::Assign(job) = kiln_shared::codec::decode(&b).unwrap() {
                    break job.build;
                }
            }
        }
    };
    assert_eq!(again, unlisted, "the same build, given again");
    let all: Vec<Build> = farm.get("/api/builds?project=p").await;
    assert_eq!(all.len(), 2, "no retry was made: {all:?}");
    let b = farm.build(unlisted).await;
    assert_eq!(b.state, BuildState::Dispatched);
    assert_eq!(
        b.reason.as_deref(),
        Some("slave 'raw' never received its job (not among what it holds 2 s after it was sent)")
    );
    let first = farm.build(listed).await;
    assert_eq!(first.state, BuildState::Dispatched, "{:?}", first.reason);
    assert_eq!(first.reason, None, "a listed job stays with its slave");
}
