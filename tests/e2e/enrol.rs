//! Enrolment with registration tokens, revocation, rotation, and what a slave may say about
//! builds that are not its own: real master, real `kiln-slave register` and daemons, over TLS.

use futures_util::{SinkExt, StreamExt};
use kiln_shared::api::{Build, RegistrationToken, TokenRotated};
use kiln_shared::codec;
use kiln_shared::frames::{Hello, MasterFrame, Outcome, SlaveFrame};
use kiln_shared::BuildState;
use kiln_tests::{bin_dir, Farm, FarmOptions, GitServer};
use serde_json::json;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

async fn registration(farm: &Farm, body: serde_json::Value) -> RegistrationToken {
    let (s, v) = farm.post("/api/slaves/registration-tokens", body).await;
    assert_eq!(s, 201, "{v}");
    serde_json::from_value(v).unwrap()
}

/// `kiln-slave register`, the token on stdin (as the master's printed command does).
fn register(farm: &Farm, token: &str, name: &str, work: &std::path::Path) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(bin_dir().join("kiln-slave"))
        .args([
            "register",
            "--master",
            &farm.url,
            "--registration-token",
            "-",
            "--name",
            name,
        ])
        .arg("--work-dir")
        .arg(work)
        .arg("--ca")
        .arg(farm.ca.as_ref().unwrap())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{token}").unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn a_board_is_enrolled_with_one_command_and_a_token_works_only_as_long_as_allowed() {
    let git = GitServer::start();
    let repo = git.repo("enrolled");
    repo.script_branch("main", "echo built > \"$KILN_OUTPUT_DIR/out\"");
    let farm = Farm::start().await;
    let reg = registration(
        &farm,
        json!({"name": "board-1", "tags": ["imx8"], "expires_in_s": 600, "uses": 1}),
    )
    .await;
    let token = reg.token.clone().expect("shown once");
    let command = reg.command.clone().unwrap();
    assert!(
        command.contains("kiln-slave register")
            && command.starts_with(&format!("echo {token} | "))
            && command.contains("--registration-token - "),
        "{command}"
    );
    let listed: Vec<RegistrationToken> = farm.get("/api/slaves/registration-tokens").await;
    assert!(
        listed.iter().all(|r| r.token.is_none()),
        "never listed again"
    );

    let work = farm.dir.path().join("board-1");
    let out = register(&farm, &token, "board-1", &work);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token_file = work.join("slave.token");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&token_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // No token on the command line: the daemon reads it from the work dir.
    let log = std::fs::File::create(farm.dir.path().join("board-1.log")).unwrap();
    let mut daemon = kiln_tests::proc::Killed(
        Command::new(bin_dir().join("kiln-slave"))
            .args(["--master", &farm.url, "--ca"])
            .arg(farm.ca.as_ref().unwrap())
            .arg("--work-dir")
            .arg(&work)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    farm.wait_slave_online("board-1", true).await;
    let slaves = farm.slaves().await;
    let s = slaves.iter().find(|s| s.name == "board-1").unwrap();
    assert_eq!(s.tags, vec!["imx8".to_string()], "the admin's tags");
    farm.project("enrolled", &repo.url, "main").await;
    let b = farm.request_build("enrolled", json!({})).await;
    let b = farm.wait_ended(b.id, Duration::from_secs(60)).await;
    assert_eq!(b.state, BuildState::Succeeded, "{:?}", b.reason);
    assert_eq!(farm.download(b.id, "out").await, b"built\n");

    // The same registration token a second time: used up.
    let out = register(&farm, &token, "board-1", &farm.dir.path().join("again"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("used up"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An expired one, and one for another name.
    let short = registration(&farm, json!({"expires_in_s": 60, "uses": 5})).await;
    sqlx_expire(&farm, short.id);
    let out = register(
        &farm,
        short.token.as_deref().unwrap(),
        "board-2",
        &farm.dir.path().join("late"),
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("expired"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let named = registration(
        &farm,
        json!({"name": "board-3", "expires_in_s": 600, "uses": 1}),
    )
    .await;
    let out = register(
        &farm,
        named.token.as_deref().unwrap(),
        "board-4",
        &farm.dir.path().join("other"),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("is for the slave 'board-3'"));
    // A revoked one.
    let revoked = registration(&farm, json!({"expires_in_s": 600, "uses": 1})).await;
    let r = farm
        .http
        .delete(farm.api(&format!("/api/slaves/registration-tokens/{}", revoked.id)))
        .bearer_auth(&farm.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let out = register(
        &farm,
        revoked.token.as_deref().unwrap(),
        "board-5",
        &farm.dir.path().join("revoked"),
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("revoked"));
    daemon.kill_and_wait();
}

/// Moves a registration token's expiry into the past (the test cannot wait a minute).
fn sqlx_expire(farm: &Farm, id: i64) {
    let db = farm.database_name().unwrap();
    assert!(kiln_tests::Postgres::shared().psql(
        &db,
        &format!("UPDATE registration_tokens SET expires_at = now() - interval '1 second' WHERE id = {id}")
    ));
}

#[tokio::test]
async fn revoking_a_slave_mid_build_closes_it_and_requeues_the_build_elsewhere() {
    let git = GitServer::start();
    let repo = git.repo("revoke");
    let farm = Farm::with(FarmOptions {
        lost_retries: 1,
        ..Default::default()
    })
    .await;
    let drop = kiln_tests::drop_dir();
    let pidfile = drop.path().join("first");
    repo.script_branch(
        "main",
        &format!(
            "if [ ! -e {p} ]; then touch {p}; sleep 291; fi\necho again > \"$KILN_OUTPUT_DIR/out\"",
            p = pidfile.display()
        ),
    );
    let mut doomed = farm.slave("doomed").await;
    farm.project("revoke", &repo.url, "main").await;
    let b = farm.request_build("revoke", json!({})).await;
    kiln_tests::wait_process("sleep 291").await;
    let _other = farm.slave("other").await;
    let asked = Instant::now();
    let (s, v) = farm.post("/api/slaves/doomed/revoke", json!({})).await;
    assert_eq!(s, 204, "{v}");
    // Its connection is closed: the daemon, refused on reconnecting, exits.
    let status = doomed.wait_exit(Duration::from_secs(30)).await;
    let closed = asked.elapsed();
    assert!(
        status.is_some(),
        "the revoked slave's daemon is still running"
    );
    assert!(closed < Duration::from_secs(30), "closed after {closed:?}");
    println!("revoked slave gone after {closed:?}");
    let lost = farm.build(b.id).await;
    assert_eq!(lost.state, BuildState::Lost);
    assert!(lost.reason.unwrap().contains("slave revoked"));
    let all: Vec<Build> = farm.get("/api/builds?project=revoke").await;
    let retry = all
        .iter()
        .find(|x| x.retry_of == Some(b.id))
        .expect("requeued");
    let retry = farm.wait_ended(retry.id, Duration::from_secs(60)).await;
    assert_eq!(retry.state, BuildState::Succeeded, "{:?}", retry.reason);
    assert_eq!(retry.slave.as_deref(), Some("other"));
}

#[tokio::test]
async fn a_rotated_token_reaches_the_slave_and_the_old_one_works_for_the_grace_only() {
    let farm = Farm::with(FarmOptions {
        extra_master_toml: "token_grace_secs = 2\n".into(),
        ..Default::default()
    })
    .await;
    let mut slave = farm.slave("s1").await;
    let old = slave.token.clone();
    let (s, v) = farm.post("/api/slaves/s1/rotate-token", json!({})).await;
    assert_eq!(s, 200, "{v}");
    let rotated: TokenRotated = serde_json::from_value(v).unwrap();
    // The old token works during the grace period only.
    let ws_status = |token: String| {
        let farm = &farm;
        async move {
            match farm.slave_ws(&token).await {
                Ok(_) => 101,
                Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
                Err(e) => panic!("{e}"),
            }
        }
    };
    assert_eq!(
        ws_status(old.clone()).await,
        101,
        "the old token works during the grace"
    );
    // The slave keeps the new token in its work dir, received over its connection.
    let file = slave.work.join("slave.token");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&file).unwrap().trim() != rotated.token {
        assert!(
            Instant::now() < deadline,
            "the slave never kept the new token"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Restarted, it connects with the new one.
    slave.stop();
    farm.wait_slave_online("s1", false).await;
    slave.start();
    farm.wait_slave_online("s1", true).await;
    let wait_until = rotated.previous_valid_until + chrono::Duration::milliseconds(200);
    while chrono::Utc::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        ws_status(old).await,
        401,
        "the old token is refused after the grace"
    );
}

#[tokio::test]
async fn another_slave_cannot_speak_for_or_upload_into_a_build_it_does_not_hold() {
    let git = GitServer::start();
    let repo = git.repo("mine");
    repo.script_branch(
        "main",
        "for i in $(seq 1 30); do echo \"n=$i\"; sleep 0.1; done\necho mine > \"$KILN_OUTPUT_DIR/out\"",
    );
    let farm = Farm::start().await;
    let _a = farm.slave("a").await;
    farm.project("mine", &repo.url, "main").await;
    let b = farm.request_build("mine", json!({})).await;
    farm.wait_build(b.id, Duration::from_secs(60), "running", |b| {
        b.state == BuildState::Running
    })
    .await;
    // Slave B: a registered slave speaking the real protocol, about A's build.
    let token_b = farm.register_slave("b").await;
    let mut ws = farm.slave_ws(&token_b).await.expect("b connects");
    let send = |f: SlaveFrame| Message::Binary(codec::encode(&f).unwrap().into());
    // A valid hello offering no backend: nothing is queued for it.
    ws.send(send(SlaveFrame::Hello(Hello {
        backends: vec![],
        ..kiln_tests::farm::test_hello("b")
    })))
    .await
    .unwrap();
    let frames = [
        SlaveFrame::Log {
            build: b.id,
            first_seq: 0,
            lines: vec!["forged".into()],
        },
        SlaveFrame::Started {
            build: b.id,
            commit: "f".repeat(40),
        },
        SlaveFrame::Progress {
            build: b.id,
            phase: "forged".into(),
            percent: Some(99),
        },
        SlaveFrame::Finished {
            build: b.id,
            outcome: Outcome::Succeeded,
            log_lines: 1,
        },
    ];
    for f in frames.clone() {
        ws.send(send(f)).await.unwrap();
    }
    // A heartbeat claiming A's build gets a bare "not yours", not its state.
    ws.send(send(SlaveFrame::Heartbeat { builds: vec![b.id] }))
        .await
        .unwrap();
    let reason = loop {
        match ws.next().await {
            Some(Ok(Message::Binary(bytes))) => match codec::decode::<MasterFrame>(&bytes).unwrap()
            {
                MasterFrame::Reconcile { builds } => break format!("{builds:?}"),
                _ => continue,
            },
            other => panic!("expected a reconcile, got {other:?}"),
        }
    };
    assert!(reason.contains("not this slave's"), "{reason}");
    // Repeated abuse: disconnected.
    let mut closed = false;
    for _ in 0..20 {
        if ws.send(send(frames[0].clone())).await.is_err() {
            closed = true;
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !closed {
        match tokio::time::timeout(Duration::from_secs(1), ws.next()).await {
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => closed = true,
            _ => assert!(
                Instant::now() < deadline,
                "the abusive slave stays connected"
            ),
        }
    }
    // Uploads: B's own token, a forged token and no token are all refused.
    for bearer in [token_b.as_str(), "eyJhbGciOiJIUzI1NiJ9.e30.x", ""] {
        let r = farm
            .http
            .put(farm.api(&format!("/api/slave/builds/{}/artifacts/out", b.id)))
            .bearer_auth(bearer)
            .header("x-kiln-sha256", "ab".repeat(32))
            .body("trojan")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 401, "{bearer}");
    }
    // A's build is unaffected.
    let done = farm.wait_ended(b.id, Duration::from_secs(60)).await;
    assert_eq!(done.state, BuildState::Succeeded, "{:?}", done.reason);
    assert_eq!(farm.download(done.id, "out").await, b"mine\n");
    let log = farm.log(done.id).await;
    assert!(!log.contains("forged"), "{log}");
    let numbers: Vec<&str> = log.lines().filter(|l| l.starts_with("n=")).collect();
    assert_eq!(numbers.len(), 30);
}

/// A slave's own build: a start with a commit id that is not hex is refused (the build stays
/// queued for the master to decide, nothing stored), and once the slave is disabled its upload
/// token is worth nothing.
#[tokio::test]
async fn a_bad_commit_id_is_refused_and_a_revoked_slave_cannot_upload() {
    let farm = Farm::start().await;
    farm.project("p", "https://git.example.org/p.git", "main")
        .await;
    let mut slave = kiln_tests::RawSlave::connect(&farm, "raw").await;
    let b = farm.request_build("p", json!({})).await;
    let job = slave.job().await;
    assert_eq!(job.build, b.id);
    slave
        .send(SlaveFrame::Started {
            build: b.id,
            commit: "$(touch /tmp/x)".into(),
        })
        .await;
    let reason = loop {
        if let MasterFrame::Cancel { reason, .. } = slave.next().await {
            break reason;
        }
    };
    assert!(reason.contains("not a full hex commit id"), "{reason}");
    assert_ne!(
        farm.build(b.id).await.commit.as_deref(),
        Some("$(touch /tmp/x)")
    );

    let (s, v) = farm.post("/api/slaves/raw/revoke", json!({})).await;
    assert_eq!(s, 204, "{v}");
    let r = kiln_tests::farm::client(farm.ca.as_deref())
        .put(format!("{}{}/out", farm.url, job.upload_path))
        .bearer_auth(&job.upload_token)
        .header("x-kiln-sha256", "0".repeat(64))
        .body("trojan")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    assert!(status == 401 || status == 403, "{status}: {body}");
    assert!(farm.artifacts(b.id).await.is_empty());
}
