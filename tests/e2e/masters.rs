//! Several masters serving one farm: two `kiln-master` processes on one database, one storage
//! dir and one object store (a real Garage on loopback, for the artifacts), behind a real load
//! balancer (HAProxy, as `docs/deployment.md` shows), three slaves
//! spread over both. Builds requested on either master run exactly once, consoles on both see
//! the queue and a live log whichever master holds the slave, and SIGKILLing one master in the
//! middle moves its slaves to the other with no build lost and every log whole.

use futures_util::StreamExt;
use kiln_shared::frames::{ConsoleEvent, ConsoleRequest};
use kiln_shared::{codec, BuildId, BuildState};
use kiln_tests::farm::Ws;
use kiln_tests::garage::Garage;
use kiln_tests::haproxy::Haproxy;
use kiln_tests::session::console_send;
use kiln_tests::{Farm, FarmOptions, GitServer};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const BUILDS: usize = 200;
const LINES: u32 = 20;

async fn get(farm: &Farm, base: &str, path: &str) -> Value {
    let r = farm
        .http
        .get(format!("{base}{path}"))
        .bearer_auth(&farm.token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {base}{path}: {e}"));
    assert!(r.status().is_success(), "GET {base}{path}: {}", r.status());
    r.json().await.unwrap()
}

async fn request(farm: &Farm, base: &str, project: &str) -> BuildId {
    let r = farm
        .http
        .post(format!("{base}/api/projects/{project}/builds"))
        .bearer_auth(&farm.token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    BuildId(r.json::<Value>().await.unwrap()["id"].as_i64().unwrap())
}

/// What one console saw: builds by their last state, and each followed log's lines and end.
#[derive(Default)]
struct Seen {
    states: BTreeMap<BuildId, BuildState>,
    lines: BTreeMap<BuildId, Vec<String>>,
    ended: BTreeSet<BuildId>,
}

/// Reads a console until `done` holds; false if 120 s pass without it.
async fn watch(ws: &mut Ws, seen: &mut Seen, done: impl Fn(&Seen) -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done(seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(msg) = tokio::time::timeout(left, ws.next()).await else {
            return false;
        };
        let Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(b))) = msg else {
            panic!("the console closed: {msg:?}");
        };
        match codec::decode::<ConsoleEvent>(&b).unwrap() {
            ConsoleEvent::Build(b) => {
                seen.states.insert(b.id, b.state);
            }
            ConsoleEvent::LogLines {
                build,
                first_seq,
                lines,
            } => {
                let have = seen.lines.entry(build).or_default();
                assert_eq!(first_seq as usize, have.len(), "lines in order, none twice");
                have.extend(lines);
            }
            ConsoleEvent::LogEnd { build } => {
                seen.ended.insert(build);
            }
            // Events were dropped: ask again (a fresh snapshot).
            ConsoleEvent::Resync => console_send(ws, &ConsoleRequest::SubscribeQueue).await,
            _ => {}
        }
    }
    true
}

fn numbered(lines: &[String]) -> bool {
    let want: Vec<String> = (1..=LINES).map(|i| format!("line {i}")).collect();
    lines
        .iter()
        .filter(|l| l.starts_with("line "))
        .cloned()
        .collect::<Vec<_>>()
        == want
}

#[tokio::test]
async fn two_masters_serve_one_farm_and_one_dies_without_losing_a_build() {
    let git = GitServer::start();
    let repo = git.repo("masters");
    repo.script_branch(
        "main",
        &format!(
            "for i in $(seq 1 {LINES}); do echo \"line $i\"; done\necho ok > \"$KILN_OUTPUT_DIR/ok\""
        ),
    );
    let garage = Garage::start();
    let creds = garage.write_credentials(garage.dir.path());
    // A lost build would be retried as a new build: none may be.
    let mut farm = Farm::with(FarmOptions {
        lost_retries: 0,
        lost_timeout_secs: 20,
        extra_toml: garage.storage_toml(&creds, "masters", false),
        ..Default::default()
    })
    .await;
    let (_b, b_url) = farm.another_master("b");
    let a_url = farm.url.clone();
    let lb = Haproxy::start(farm.dir.path(), &[&a_url, &b_url], &farm.http)
        .await
        .expect("haproxy");
    farm.project("p", &repo.url, "main").await;
    let _slaves = [
        farm.slave_through("s1", &lb.url, &["--capacity", "2"])
            .await,
        farm.slave_through("s2", &lb.url, &["--capacity", "2", "--tags", "t2"])
            .await,
        farm.slave_through("s3", &lb.url, &["--capacity", "2"])
            .await,
    ];
    // Round robin put slaves on both masters.
    let url = farm.database_url().expect("the farm's database");
    let pool = kiln_master::db::connect(kiln_master::db::Target::Url(&url), 1)
        .await
        .unwrap();
    let holders: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT master_instance) FROM slaves WHERE online")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        holders, 2,
        "the balancer spread the slaves over both masters"
    );

    // Why a build waits speaks of the whole farm, whichever master explains it: only s2 has
    // the tag, and it is disabled.
    let (s, v) = farm
        .post(
            "/api/projects",
            json!({"name": "tagged", "branch_url": repo.url, "branch": "main", "tags": ["t2"]}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = farm.post("/api/slaves/s2/disable", json!({})).await;
    assert_eq!(s, 200, "{v}");
    let tagged = request(&farm, &b_url, "tagged").await;
    let want = "every matching slave is disabled (s2); an admin can enable it";
    let mut reasons = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline || reasons.is_empty() {
        for url in [&a_url, &b_url] {
            let b = get(&farm, url, &format!("/api/builds/{}", tagged.0)).await;
            if let Some(r) = b["waiting_reason"].as_str() {
                reasons.insert(r.to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        reasons,
        BTreeSet::from([want.to_string()]),
        "the waiting reason stays right"
    );
    let (s, v) = farm.post("/api/slaves/s2/enable", json!({})).await;
    assert_eq!(s, 200, "{v}");

    // A console on each master follows the first build's log and the queue.
    let version = codec::PROTOCOL_VERSION.to_string();
    let mut consoles = vec![];
    for url in [&a_url, &b_url] {
        let mut ws = farm
            .ws_at(url, "/ws/console", Some(&farm.token), &version)
            .await
            .expect("a console");
        console_send(&mut ws, &ConsoleRequest::SubscribeQueue).await;
        consoles.push(ws);
    }
    let first = request(&farm, &a_url, "p").await;
    for ws in &mut consoles {
        console_send(
            ws,
            &ConsoleRequest::SubscribeLog {
                build: first,
                from_seq: 0,
            },
        )
        .await;
    }
    let mut states = BTreeMap::new();
    for ws in &mut consoles {
        let mut seen = Seen::default();
        assert!(
            watch(ws, &mut seen, |s| s.ended.contains(&first)).await,
            "the first build's log did not end on a console: {:?}",
            seen.lines
        );
        assert!(
            numbered(&seen.lines[&first]),
            "a console on each master got the whole live log: {:?}",
            seen.lines[&first]
        );
        states.extend(seen.states);
    }

    // The rest, requested alternately on each master; one master dies part-way.
    let mut ids = vec![first];
    for i in 1..BUILDS {
        ids.push(request(&farm, if i % 2 == 0 { &a_url } else { &b_url }, "p").await);
    }
    let ended = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .filter(|b| {
                ["succeeded", "failed", "cancelled", "lost"].contains(&b["state"].as_str().unwrap())
            })
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let v = get(&farm, &b_url, "/api/builds?project=p&limit=500").await;
        if ended(&v) >= BUILDS / 3 {
            break;
        }
        assert!(Instant::now() < deadline, "builds did not get going");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    farm.kill_master();
    let mut b_console = consoles.pop().unwrap();
    drop(consoles);

    // The surviving master's console sees every build end (those the dead master's slaves ran
    // too), all of them succeeded, and nothing was retried.
    let mut seen = Seen {
        states,
        ..Default::default()
    };
    let all_ended = watch(&mut b_console, &mut seen, |s| {
        ids.iter()
            .all(|id| s.states.get(id).is_some_and(|st| st.is_terminal()))
    })
    .await;
    let v = get(&farm, &b_url, "/api/builds?project=p&limit=500").await;
    let t = get(&farm, &b_url, &format!("/api/builds/{}", tagged.0)).await;
    assert_eq!(
        t["state"], "succeeded",
        "the tagged build ran once s2 was enabled: {t}"
    );
    if !all_ended {
        let open: Vec<String> = ids
            .iter()
            .filter(|id| !seen.states.get(id).is_some_and(|st| st.is_terminal()))
            .map(|id| {
                let b = v.as_array().unwrap().iter().find(|b| b["id"] == id.0);
                format!(
                    "{}: {:?} in the console, {} in the API",
                    id.0,
                    seen.states.get(id),
                    b.map_or("?".into(), |b| b.to_string())
                )
            })
            .collect();
        panic!(
            "the surviving master's console did not see every build end:\n{}",
            open.join("\n")
        );
    }
    let all = v.as_array().unwrap();
    assert_eq!(all.len(), BUILDS, "no build was added (a retry) or lost");
    for b in all {
        assert_eq!(b["state"], "succeeded", "{b}");
    }
    // Every log whole: its numbered lines once each, in order.
    for id in &ids {
        let r = farm
            .http
            .get(format!("{b_url}/api/builds/{}/log", id.0))
            .bearer_auth(&farm.token)
            .send()
            .await
            .unwrap();
        let text = r.text().await.unwrap();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        assert!(numbered(&lines), "build {}: log not whole:\n{text}", id.0);
    }
    // Every build's artifact is in the shared bucket, whichever master took the upload.
    let kept: Vec<String> = garage
        .list("masters/builds")
        .await
        .into_iter()
        .map(|(key, _)| key)
        .filter(|key| key.ends_with("/ok"))
        .collect();
    for id in ids.iter().chain([&tagged]) {
        let key = format!("masters/builds/{}/ok", id.0);
        assert!(kept.contains(&key), "{key} is not in the bucket");
    }
}

/// A slave session remembers that its slave holds a build (it does not read the database for
/// every frame), yet the first frame after the build is cancelled, through the other master or
/// through its own, is refused and nothing of it is stored.
#[tokio::test]
async fn a_frame_about_a_build_cancelled_on_either_master_is_refused_at_once() {
    use kiln_shared::frames::{MasterFrame, SlaveFrame};
    let farm = Farm::start().await;
    let (_b, b_url) = farm.another_master("b");
    farm.project("p", "https://git.example.org/p.git", "main")
        .await;
    let mut slave = kiln_tests::RawSlave::connect(&farm, "raw").await;
    for (which, base) in [("the other master", b_url.as_str()), ("its own", &farm.url)] {
        let id = request(&farm, base, "p").await;
        assert_eq!(slave.job().await.build, id);
        let log = |seq: u64, line: &str| SlaveFrame::Log {
            build: id,
            first_seq: seq,
            lines: vec![line.to_string()],
        };
        slave
            .send(SlaveFrame::Started {
                build: id,
                commit: "a".repeat(40),
            })
            .await;
        for (seq, line) in ["one", "two"].into_iter().enumerate() {
            slave.send(log(seq as u64, line)).await;
            loop {
                match slave.next().await {
                    MasterFrame::LogAck { build, next_seq } if build == id => {
                        assert_eq!(next_seq, seq as u64 + 1);
                        break;
                    }
                    MasterFrame::Cancel { reason, .. } => panic!("cancelled early: {reason}"),
                    _ => {}
                }
            }
        }
        let r = farm
            .http
            .post(format!("{base}/api/builds/{id}/cancel"))
            .bearer_auth(&farm.token)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "cancel on {which}: {}", r.status());
        // The stop reaches the slave (through its master either way)…
        loop {
            if let MasterFrame::Cancel { build, .. } = slave.next().await {
                assert_eq!(build, id);
                break;
            }
        }
        // …and the very next line about the build is refused, not stored.
        slave.send(log(2, "after the cancel")).await;
        loop {
            match slave.next().await {
                MasterFrame::LogAck { build, next_seq } if build == id => {
                    panic!("a line after the cancel on {which} was stored (next_seq {next_seq})")
                }
                MasterFrame::Cancel { build, reason } if build == id => {
                    assert!(reason.contains("no longer expects"), "{reason}");
                    break;
                }
                _ => {}
            }
        }
        let b = farm.build(id).await;
        assert_eq!(b.state, BuildState::Cancelled, "{:?}", b.reason);
        let text = farm.log(id).await;
        assert!(text.contains("two"), "{text}");
        assert!(
            !text.contains("after the cancel"),
            "cancel on {which}: {text}"
        );
    }
}

/// A build's end seals its log (`log.ended` beside it), so a slave's lines that race with the end
/// cannot land after the master's reason. A seal whose end never committed (its master died
/// first) does not stop a running build's log: the lines are stored and the seal goes; the
/// build's real end seals it again, its reason last.
#[tokio::test]
async fn a_log_sealed_by_an_end_that_never_committed_still_takes_the_running_builds_lines() {
    use kiln_shared::frames::{MasterFrame, SlaveFrame};
    let farm = Farm::start().await;
    farm.project("p", "https://git.example.org/p.git", "main")
        .await;
    let mut slave = kiln_tests::RawSlave::connect(&farm, "raw").await;
    let id = request(&farm, &farm.url, "p").await;
    assert_eq!(slave.job().await.build, id);
    slave
        .send(SlaveFrame::Started {
            build: id,
            commit: "a".repeat(40),
        })
        .await;
    let seal = farm
        .dir
        .path()
        .join(format!("storage/builds/{id}/log.ended"));
    std::fs::create_dir_all(seal.parent().unwrap()).unwrap();
    std::fs::write(&seal, b"").unwrap();
    slave
        .send(SlaveFrame::Log {
            build: id,
            first_seq: 0,
            lines: vec!["one".into(), "two".into()],
        })
        .await;
    loop {
        match slave.next().await {
            MasterFrame::LogAck { build, next_seq } if build == id => {
                assert_eq!(next_seq, 2, "both lines stored");
                break;
            }
            MasterFrame::Cancel { reason, .. } => panic!("refused: {reason}"),
            _ => {}
        }
    }
    assert!(!seal.exists(), "the stale seal is gone");
    let (s, v) = farm
        .post(&format!("/api/builds/{id}/cancel"), json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(seal.exists(), "the real end seals the log");
    let b = farm.build(id).await;
    let text = farm.log(id).await;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[..2], ["one", "two"], "{text}");
    assert!(lines[2].starts_with("[kiln-master] "), "{text}");
    assert_eq!(
        b.log_lines as usize,
        lines.len(),
        "the index matches the file"
    );
}

/// A master that dies between ending a build and telling the others (`fanout.rs`) leaves their
/// consoles without that end for good. Its slaves come to another master once it is gone: the
/// first of them makes the consoles ask again.
#[tokio::test]
async fn a_slave_that_comes_from_another_master_makes_consoles_ask_again() {
    use kiln_shared::frames::{MasterFrame, SlaveFrame};
    let farm = Farm::start().await;
    let (_b, b_url) = farm.another_master("b");
    let version = codec::PROTOCOL_VERSION.to_string();
    let mut console = farm
        .ws_at(&b_url, "/ws/console", Some(&farm.token), &version)
        .await
        .expect("a console on b");
    console_send(&mut console, &ConsoleRequest::SubscribeQueue).await;
    let token = farm.register_slave("mover").await;
    let welcomed_at = |base: String| {
        let (farm, token, version) = (&farm, &token, &version);
        async move {
            let ws = farm
                .ws_at(&base, "/ws/slave", Some(token), version)
                .await
                .expect("the slave connects");
            let mut s = kiln_tests::RawSlave { ws };
            s.send(SlaveFrame::Hello(kiln_tests::farm::test_hello("mover")))
                .await;
            assert!(matches!(s.next().await, MasterFrame::Welcome { .. }));
            s
        }
    };
    // Held by the first master, then gone from it, then on b.
    drop(welcomed_at(farm.url.clone()).await);
    let _on_b = welcomed_at(b_url.clone()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(b)))) =
            tokio::time::timeout(left, console.next()).await
        else {
            panic!("b's console was not told to ask again");
        };
        if let ConsoleEvent::Resync = codec::decode::<ConsoleEvent>(&b).unwrap() {
            break;
        }
    }
}
