//! Schedules, priorities, the rules of the queue, time-outs and retention.

use chrono::{DateTime, Duration as Days, Utc};
use kiln_master::clock::ManualClock;
use kiln_master::scheduler::{self, Decision};
use kiln_shared::api::{Build, Project};
use kiln_shared::BuildState;
use kiln_tests::{Farm, FarmOptions, GitServer};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

async fn patch(farm: &Farm, project: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    farm.patch(&format!("/api/projects/{project}"), body).await
}

async fn builds_of(farm: &Farm, project: &str) -> Vec<Build> {
    farm.get(&format!("/api/builds?project={project}&limit=1000"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_run_once_per_slot_and_only_when_the_branch_moved() {
    let git = GitServer::start();
    let repo = git.repo("nightly");
    let first = repo.script_branch("main", "echo one > \"$KILN_OUTPUT_DIR/v\"");
    let clock = Arc::new(ManualClock::new(t("2026-11-20T12:00:00Z")));
    let farm = Farm::in_process(FarmOptions::default(), clock.clone()).await;
    let _slave = farm.slave("s1").await;
    farm.project("nightly", &repo.url, "main").await;

    // A schedule that cannot be parsed is refused with the reason.
    let (s, v) = patch(&farm, "nightly", json!({"schedule": "daily 25:00"})).await;
    assert_eq!((s, v["field"].as_str()), (400, Some("schedule")), "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("not a time of day"),
        "{v}"
    );
    let (s, v) = patch(&farm, "nightly", json!({"timezone": "Mars/Base"})).await;
    assert_eq!((s, v["field"].as_str()), (400, Some("timezone")), "{v}");

    let (s, v) = patch(
        &farm,
        "nightly",
        json!({"schedule": "daily 02:00", "timezone": "Europe/Berlin", "only_if_changed": true}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let p: Project = serde_json::from_value(v).unwrap();
    assert_eq!(
        p.next_run,
        Some(t("2026-11-21T01:00:00Z")),
        "02:00 in Berlin (UTC+1)"
    );

    // Before the slot: nothing.
    assert!(scheduler::tick(farm.state(), t("2026-11-21T00:59:00Z"))
        .await
        .unwrap()
        .is_empty());
    // The slot: one build, pinned to the branch head, run by the real slave.
    let out = scheduler::tick(farm.state(), t("2026-11-21T01:00:10Z"))
        .await
        .unwrap();
    let Decision::Queued(id) = out[0].1 else {
        panic!("{out:?}")
    };
    let b = farm.wait_ended(id, Duration::from_secs(60)).await;
    assert_eq!(
        (b.state, b.trigger.as_str()),
        (BuildState::Succeeded, "schedule"),
        "{:?}",
        b.reason
    );
    assert_eq!(b.commit.as_deref(), Some(first.as_str()));
    let p: Project = farm.get("/api/projects/nightly").await;
    assert_eq!(p.next_run, Some(t("2026-11-22T01:00:00Z")));

    // Next night, the branch has not moved: skipped.
    let out = scheduler::tick(farm.state(), t("2026-11-22T01:00:05Z"))
        .await
        .unwrap();
    assert_eq!(out[0].1, Decision::SkippedUnchanged);
    assert_eq!(builds_of(&farm, "nightly").await.len(), 1);

    // The branch moves; the night after, it builds the new head.
    let second = repo.script_branch("main", "echo two > \"$KILN_OUTPUT_DIR/v\"");
    let out = scheduler::tick(farm.state(), t("2026-11-23T01:00:05Z"))
        .await
        .unwrap();
    let Decision::Queued(id) = out[0].1 else {
        panic!("{out:?}")
    };
    let b = farm.wait_ended(id, Duration::from_secs(60)).await;
    assert_eq!(b.commit.as_deref(), Some(second.as_str()));

    // The master was down for four nights: one build on start, not four; next run is tomorrow.
    repo.script_branch("main", "echo three > \"$KILN_OUTPUT_DIR/v\"");
    let out = scheduler::tick(farm.state(), t("2026-11-27T09:30:00Z"))
        .await
        .unwrap();
    assert!(matches!(out[..], [(_, Decision::Queued(_))]), "{out:?}");
    let again = scheduler::tick(farm.state(), t("2026-11-27T09:31:00Z"))
        .await
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
    let p: Project = farm.get("/api/projects/nightly").await;
    assert_eq!(p.next_run, Some(t("2026-11-28T01:00:00Z")));
    // Clearing the schedule clears the next run.
    let (_, v) = patch(&farm, "nightly", json!({"schedule": null})).await;
    assert!(v["next_run"].is_null(), "{v}");
    let _ = clock;
}

/// Two masters on one database (two pools, two `AppState`s): while one holds the scheduler's
/// advisory lock (mid-pass), the other's pass skips, queuing nothing and leaving the slots
/// pending; passes of both at once fire each due daily schedule exactly once, all from one
/// master's pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_masters_fire_a_due_daily_schedule_once() {
    const PROJECTS: usize = 6;
    let git = GitServer::start();
    let repo = git.repo("nightly");
    repo.script_branch("main", "true");
    let clock = Arc::new(ManualClock::new(t("2026-11-20T12:00:00Z")));
    let farm = Farm::in_process(FarmOptions::default(), clock.clone()).await;
    let cfg = kiln_shared::config::Config::load(farm.config_path()).expect("config");
    let (pool, _) = kiln_master::db::open(&cfg).await.expect("database");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other = kiln_master::build_with(
        cfg,
        pool,
        listener,
        clock.clone(),
        kiln_master::Loops::DispatchOnly,
    )
    .await
    .expect("the second master");
    let names: Vec<String> = (0..PROJECTS).map(|i| format!("nightly{i}")).collect();
    for name in &names {
        farm.project(name, &repo.url, "main").await;
        let (s, v) = patch(&farm, name, json!({"schedule": "daily 02:00"})).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["next_run"], json!("2026-11-21T02:00:00Z"), "{v}");
    }
    let due = t("2026-11-21T02:00:10Z");

    // The first master is mid-pass (it holds the scheduler lock): the second skips its pass.
    let mut held = farm.state().db.begin().await.unwrap();
    assert!(kiln_master::db::projects::try_lock_scheduler(&mut held)
        .await
        .unwrap());
    let skipped = scheduler::tick(&other.state, due).await.unwrap();
    assert!(skipped.is_empty(), "{skipped:?}");
    for name in &names {
        assert!(builds_of(&farm, name).await.is_empty(), "{name}");
        let p: Project = farm.get(&format!("/api/projects/{name}")).await;
        assert_eq!(p.next_run, Some(t("2026-11-21T02:00:00Z")), "still pending");
    }
    held.rollback().await.unwrap();

    // Both pass at once: each slot fires once, and one master ran the pass.
    let (a, b) = tokio::join!(
        scheduler::tick(farm.state(), due),
        scheduler::tick(&other.state, due)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.is_empty() || b.is_empty(), "both ran a pass: {a:?} {b:?}");
    let mut fired: Vec<&str> = a.iter().chain(&b).map(|(n, _)| n.as_str()).collect();
    fired.sort_unstable();
    assert_eq!(fired, names, "{a:?} {b:?}");
    assert!(
        a.iter()
            .chain(&b)
            .all(|(_, d)| matches!(d, Decision::Queued(_))),
        "{a:?} {b:?}"
    );
    for name in &names {
        let builds = builds_of(&farm, name).await;
        assert_eq!(builds.len(), 1, "{name}: {builds:?}");
        assert_eq!(builds[0].trigger, "schedule");
        let p: Project = farm.get(&format!("/api/projects/{name}")).await;
        assert_eq!(p.next_run, Some(t("2026-11-22T02:00:00Z")));
    }
    // The slot is spent for both.
    let (a, b) = tokio::join!(
        scheduler::tick(farm.state(), t("2026-11-21T02:01:00Z")),
        scheduler::tick(&other.state, t("2026-11-21T02:01:00Z"))
    );
    assert!(a.unwrap().is_empty() && b.unwrap().is_empty());
    other.shutdown().await.expect("stopping the second master");
}

#[tokio::test]
async fn three_slaves_racing_for_200_builds_run_each_exactly_once() {
    let git = GitServer::start();
    let repo = git.repo("race");
    let farm = Farm::start().await;
    let drop = kiln_tests::drop_dir();
    let ledger = drop.path().join("ledger");
    repo.script_branch(
        "main",
        &format!(
            "echo \"$KILN_BUILD_ID\" >> {}\necho ok > \"$KILN_OUTPUT_DIR/ok\"",
            ledger.display()
        ),
    );
    farm.project("race", &repo.url, "main").await;
    let mut ids = vec![];
    for _ in 0..200 {
        ids.push(farm.request_build("race", json!({})).await.id);
    }
    let _a = farm.slave("a").await;
    let _b = farm.slave("b").await;
    let _c = farm.slave("c").await;
    let mut by_slave = std::collections::BTreeMap::new();
    for id in &ids {
        let b = farm.wait_ended(*id, Duration::from_secs(300)).await;
        assert_eq!(b.state, BuildState::Succeeded, "{:?}", b.reason);
        *by_slave.entry(b.slave.unwrap()).or_insert(0) += 1;
    }
    let mut ran: Vec<i64> = std::fs::read_to_string(&ledger)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    ran.sort();
    let mut want: Vec<i64> = ids.iter().map(|b| b.0).collect();
    want.sort();
    assert_eq!(ran, want, "every build ran exactly once");
    assert_eq!(
        by_slave.len(),
        3,
        "all three slaves took builds: {by_slave:?}"
    );
}

/// A project's next build goes to the slave that built it last, whose package and git caches
/// are warm for it, even when another slave is free and first in line; a project never built
/// goes to the first free slave.
#[tokio::test]
async fn a_projects_next_build_goes_to_the_slave_that_built_it_last() {
    let git = GitServer::start();
    let repo = git.repo("warm");
    repo.script_branch("main", "echo ok > \"$KILN_OUTPUT_DIR/ok\"");
    let farm = Farm::start().await;
    let _s1 = farm.slave("s1").await;
    let _s2 = farm.slave("s2").await;
    farm.wait_slave_online("s1", true).await;
    farm.wait_slave_online("s2", true).await;
    farm.project("warm", &repo.url, "main").await;
    farm.project("cold", &repo.url, "main").await;

    // s1 is first in line; while it is disabled the first build goes to s2.
    let (s, v) = farm.post("/api/slaves/s1/disable", json!({})).await;
    assert_eq!(s, 200, "{v}");
    let first = farm.request_build("warm", json!({})).await;
    let first = farm.wait_ended(first.id, Duration::from_secs(60)).await;
    assert_eq!(first.state, BuildState::Succeeded, "{:?}", first.reason);
    assert_eq!(first.slave.as_deref(), Some("s2"));
    let (s, v) = farm.post("/api/slaves/s1/enable", json!({})).await;
    assert_eq!(s, 200, "{v}");

    // Both are free now: the project's next build goes back to s2, another project's to s1.
    let again = farm.request_build("warm", json!({})).await;
    let again = farm.wait_ended(again.id, Duration::from_secs(60)).await;
    assert_eq!(again.state, BuildState::Succeeded, "{:?}", again.reason);
    assert_eq!(again.slave.as_deref(), Some("s2"), "the warm slave");
    let other = farm.request_build("cold", json!({})).await;
    let other = farm.wait_ended(other.id, Duration::from_secs(60)).await;
    assert_eq!(other.state, BuildState::Succeeded, "{:?}", other.reason);
    assert_eq!(other.slave.as_deref(), Some("s1"), "the first free slave");
}

#[tokio::test]
async fn one_projects_fifty_builds_do_not_starve_anothers_one() {
    let git = GitServer::start();
    let repo = git.repo("fair");
    repo.script_branch("main", "echo ok > \"$KILN_OUTPUT_DIR/ok\"");
    let farm = Farm::start().await;
    farm.project("a", &repo.url, "main").await;
    farm.project("b", &repo.url, "main").await;
    for _ in 0..50 {
        farm.request_build("a", json!({})).await;
    }
    let lone = farm.request_build("b", json!({})).await;
    let _slave = farm.slave("s1").await;
    farm.wait_ended(lone.id, Duration::from_secs(120)).await;
    let mut all: Vec<Build> = farm.get("/api/builds?limit=1000").await;
    all.retain(|b| b.dispatched_at.is_some());
    all.sort_by_key(|b| b.dispatched_at);
    let pos = all.iter().position(|b| b.id == lone.id).unwrap();
    assert!(
        pos <= 1,
        "project b's build started as dispatch #{} of {}",
        pos + 1,
        all.len()
    );

    // A higher priority goes first, whatever the project.
    let farm2 = Farm::start().await;
    farm2.project("a", &repo.url, "main").await;
    for _ in 0..5 {
        farm2.request_build("a", json!({})).await;
    }
    let urgent = farm2.request_build("a", json!({"priority": 10})).await;
    assert_eq!(urgent.priority, 10);
    let _s = farm2.slave("s1").await;
    farm2.wait_ended(urgent.id, Duration::from_secs(60)).await;
    let mut all: Vec<Build> = farm2.get("/api/builds?limit=100").await;
    all.sort_by_key(|b| b.dispatched_at.unwrap_or(chrono::DateTime::<Utc>::MAX_UTC));
    assert_eq!(
        all[0].id, urgent.id,
        "the priority build is dispatched first"
    );
}

#[tokio::test]
async fn a_waiting_build_says_why_and_rebuild_uses_the_exact_commit() {
    let git = GitServer::start();
    let repo = git.repo("why");
    let first = repo.script_branch("main", "echo one > \"$KILN_OUTPUT_DIR/v\"");
    let farm = Farm::start().await;
    let _slave = farm.slave("plain").await;
    let (s, v) = farm
        .post(
            "/api/projects",
            json!({"name": "board", "branch_url": repo.url, "tags": ["imx6"]}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let b = farm.request_build("board", json!({})).await;
    let b = farm
        .wait_build(b.id, Duration::from_secs(10), "explained", |b| {
            b.waiting_reason.is_some()
        })
        .await;
    assert_eq!(
        b.waiting_reason.as_deref(),
        Some("no online slave with tag imx6")
    );
    assert_eq!(b.state, BuildState::Queued);
    let (s, _) = farm
        .post(&format!("/api/builds/{}/cancel", b.id), json!({}))
        .await;
    assert_eq!(s, 200);

    farm.project("plain", &repo.url, "main").await;
    let b1 = farm.request_build("plain", json!({})).await;
    let b1 = farm.wait_ended(b1.id, Duration::from_secs(60)).await;
    repo.script_branch("main", "echo two > \"$KILN_OUTPUT_DIR/v\"");
    let (s, v) = farm
        .post(&format!("/api/builds/{}/rebuild", b1.id), json!({}))
        .await;
    assert_eq!(s, 201, "{v}");
    let r: Build = serde_json::from_value(v).unwrap();
    assert_eq!((r.trigger.as_str(), r.rebuild_of), ("rebuild", Some(b1.id)));
    let r = farm.wait_ended(r.id, Duration::from_secs(60)).await;
    assert_eq!(r.commit.as_deref(), Some(first.as_str()));
    assert_eq!(farm.download(r.id, "v").await, b"one\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_past_its_timeout_is_stopped_and_says_timed_out() {
    let git = GitServer::start();
    let repo = git.repo("slow");
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let farm = Farm::in_process(FarmOptions::default(), clock.clone()).await;
    repo.script_branch("main", "sleep 292 &\nwait");
    let _slave = farm.slave("s1").await;
    farm.project("slow", &repo.url, "main").await;
    let (s, v) = patch(&farm, "slow", json!({"timeout_minutes": 5})).await;
    assert_eq!(s, 200, "{v}");
    let b = farm.request_build("slow", json!({})).await;
    farm.wait_build(b.id, Duration::from_secs(60), "running", |b| {
        b.state == BuildState::Running
    })
    .await;
    let child = kiln_tests::wait_process("sleep 292").await;
    assert_eq!(
        kiln_master::liveness::time_out(farm.state()).await.unwrap(),
        0,
        "not yet"
    );
    clock.set(Utc::now() + Days::minutes(6));
    assert_eq!(
        kiln_master::liveness::time_out(farm.state()).await.unwrap(),
        1
    );
    let b = farm.build(b.id).await;
    assert_eq!(b.state, BuildState::Failed);
    assert!(b.reason.unwrap().starts_with("timed out after 5 minute(s)"));
    kiln_tests::wait_dead(child, "the timed-out build's child").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_frees_old_builds_and_never_a_release() {
    let git = GitServer::start();
    let repo = git.repo("keep");
    repo.script_branch(
        "main",
        "head -c 100000 /dev/urandom > \"$KILN_OUTPUT_DIR/img\"",
    );
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let farm = Farm::in_process(FarmOptions::default(), clock.clone()).await;
    let _slave = farm.slave("s1").await;
    farm.project("keep", &repo.url, "main").await;
    let release = farm.request_build("keep", json!({"release": "v1"})).await;
    farm.wait_ended(release.id, Duration::from_secs(60)).await;
    let mut ids = vec![];
    for _ in 0..4 {
        let b = farm.request_build("keep", json!({})).await;
        farm.wait_ended(b.id, Duration::from_secs(60)).await;
        ids.push(b.id);
    }
    let before: Project = farm.get("/api/projects/keep").await;
    assert!(before.disk_bytes > 5 * 100_000, "{}", before.disk_bytes);
    let (s, v) = patch(&farm, "keep", json!({"keep_builds": 2})).await;
    assert_eq!(s, 200, "{v}");
    let removed = kiln_master::retention::sweep(farm.state()).await.unwrap();
    assert_eq!(removed, 2, "the two oldest non-release builds");
    let left: Vec<i64> = builds_of(&farm, "keep")
        .await
        .iter()
        .map(|b| b.id.0)
        .collect();
    let mut want = vec![ids[3].0, ids[2].0, release.id.0];
    want.sort_by(|a, b| b.cmp(a));
    assert_eq!(left, want, "the newest two and the release");
    for gone in &ids[..2] {
        assert!(
            !farm.state().storage.build_dir(*gone).exists(),
            "files of build {gone} freed"
        );
    }
    let after: Project = farm.get("/api/projects/keep").await;
    assert!(
        after.disk_bytes < before.disk_bytes - 150_000,
        "{} -> {}",
        before.disk_bytes,
        after.disk_bytes
    );

    // By age: builds older than a day go, the release still stays.
    let (s, _) = patch(&farm, "keep", json!({"keep_builds": null, "keep_days": 1})).await;
    assert_eq!(s, 200);
    clock.set(Utc::now() + Days::days(2));
    assert_eq!(
        kiln_master::retention::sweep(farm.state()).await.unwrap(),
        2
    );
    let left: Vec<i64> = builds_of(&farm, "keep")
        .await
        .iter()
        .map(|b| b.id.0)
        .collect();
    assert_eq!(left, vec![release.id.0]);
    assert_eq!(farm.download(release.id, "img").await.len(), 100_000);
}

#[tokio::test]
async fn emulation_per_project_limits_and_the_catalog() {
    let git = GitServer::start();
    let repo = git.repo("emu");
    repo.script_branch(
        "main",
        "sleep 1\necho \"$KILN_ARCH\" > \"$KILN_OUTPUT_DIR/arch\"",
    );
    let farm = Farm::start().await;
    let _slave = farm.slave_with("s1", &["--capacity", "2"]).await;
    let me = farm
        .slaves()
        .await
        .into_iter()
        .find(|s| s.name == "s1")
        .unwrap();
    let native = me.arch.clone().unwrap();

    // Per-project limit: two free slots, but the project allows one running build.
    let (s, v) = farm
        .post(
            "/api/projects",
            json!({"name": "one-at-a-time", "branch_url": repo.url, "max_running": 1}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let a = farm.request_build("one-at-a-time", json!({})).await;
    let b = farm.request_build("one-at-a-time", json!({})).await;
    let waiting = farm
        .wait_build(b.id, Duration::from_secs(20), "explained", |b| {
            b.waiting_reason.is_some()
        })
        .await;
    assert!(
        waiting.waiting_reason.unwrap().contains("limit of 1"),
        "{:?}",
        farm.build(b.id).await
    );
    let a = farm.wait_ended(a.id, Duration::from_secs(60)).await;
    let b = farm.wait_ended(b.id, Duration::from_secs(60)).await;
    assert!(
        b.started_at.unwrap() >= a.finished_at.unwrap(),
        "never two at once"
    );

    // The catalog lists what the slaves offer when the config lists nothing.
    let cat: kiln_shared::api::Catalog = farm.get("/api/catalog").await;
    assert!(cat.architectures.contains(&native), "{cat:?}");

    // Emulation: a foreign architecture goes to a slave that emulates it only when allowed.
    let Some(foreign) = me.emulates.first().cloned() else {
        eprintln!("\n!!!!!!!! SKIPPED the emulation half: this slave emulates nothing (no qemu-user binfmt) !!!!!!!!\n");
        return;
    };
    let (s, _) = farm
        .post(
            "/api/projects",
            json!({"name": "foreign", "branch_url": repo.url, "architecture": foreign}),
        )
        .await;
    assert_eq!(s, 201);
    let f = farm.request_build("foreign", json!({})).await;
    let f = farm
        .wait_build(f.id, Duration::from_secs(20), "explained", |b| {
            b.waiting_reason.is_some()
        })
        .await;
    assert!(
        f.waiting_reason
            .as_deref()
            .unwrap()
            .contains("does not allow emulation"),
        "{f:?}"
    );
    let (s, v) = patch(&farm, "foreign", json!({"allow_emulation": true})).await;
    assert_eq!(s, 200, "{v}");
    let f = farm.wait_ended(f.id, Duration::from_secs(60)).await;
    assert_eq!(f.state, BuildState::Succeeded, "{:?}", f.reason);
    assert_eq!(f.slave.as_deref(), Some("s1"));
}
