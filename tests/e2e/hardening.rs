//! What crosses a trust boundary is checked where it enters: a slave's hello, artifact names on
//! both sides and in the download header, branch URLs that would be options, schedules that
//! never fire, and the security headers on every response.

use futures_util::{SinkExt, StreamExt};
use kiln_shared::codec;
use kiln_shared::frames::{Hello, MasterFrame, SlaveFrame};
use kiln_shared::BuildState;
use kiln_tests::{Farm, FarmOptions, GitServer};
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn a_hello_out_of_bounds_is_refused_with_the_reason() {
    let farm = Farm::start().await;
    for (capacity, tags, says) in [
        (0u32, vec![], "capacity 0"),
        (4_000_000_000, vec![], "capacity 4000000000"),
        (1, vec!["release signing".to_string()], "tag"),
    ] {
        let token = farm
            .register_slave(&format!("greedy-{capacity}-{}", tags.len()))
            .await;
        let mut ws = farm.slave_ws(&token).await.unwrap();
        let hello = SlaveFrame::Hello(Hello {
            name: "greedy".into(),
            arch: "amd64".into(),
            tags,
            backends: vec!["script".into()],
            capacity,
            version: "test".into(),
            builds: vec![],
            emulates: vec![],
            capabilities: Default::default(),
        });
        ws.send(Message::Binary(codec::encode(&hello).unwrap().into()))
            .await
            .unwrap();
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => match codec::decode::<MasterFrame>(&b).unwrap() {
                MasterFrame::Refused { reason } => assert!(reason.contains(says), "{reason}"),
                other => panic!("expected a refusal, got {other:?}"),
            },
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
    let slaves = farm.slaves().await;
    assert!(slaves.iter().all(|s| !s.online), "none of them came online");
}

#[tokio::test]
async fn artifact_names_are_checked_and_downloads_name_them_safely() {
    let git = GitServer::start();
    let farm = Farm::start().await;
    let _slave = farm.slave("s1").await;
    let odd = git.repo("odd");
    odd.script_branch("main", "echo x > \"$KILN_OUTPUT_DIR/a?b.txt\"");
    farm.project("odd", &odd.url, "main").await;
    let b = farm.request_build("odd", json!({})).await;
    let b = farm.wait_ended(b.id, Duration::from_secs(60)).await;
    assert_eq!(b.state, BuildState::Failed);
    assert!(
        b.reason.as_deref().unwrap_or("").contains("a?b.txt"),
        "{:?}",
        b.reason
    );

    let nice = git.repo("nice");
    nice.script_branch("main", "echo x > \"$KILN_OUTPUT_DIR/Ünïcode image.img\"");
    farm.project("nice", &nice.url, "main").await;
    let b = farm.request_build("nice", json!({})).await;
    let b = farm.wait_ended(b.id, Duration::from_secs(60)).await;
    assert_eq!(b.state, BuildState::Succeeded, "{:?}", b.reason);
    let r = farm
        .get_raw(&format!(
            "/api/builds/{}/artifacts/%C3%9Cn%C3%AFcode%20image.img",
            b.id
        ))
        .await;
    assert_eq!(r.status().as_u16(), 200);
    let cd = r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    // On the master's disk, logs and artifacts are its own: 0600 files in 0700 directories.
    let mode = |p: std::path::PathBuf| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&p).unwrap().permissions())
            & 0o777
    };
    let dir = farm.dir.path().join(format!("storage/builds/{}", b.id));
    assert_eq!(mode(farm.dir.path().join("storage")), 0o700);
    assert_eq!(mode(dir.clone()), 0o700);
    assert_eq!(mode(dir.join("log")), 0o600);
    assert_eq!(mode(dir.join("artifacts")), 0o700);
    assert_eq!(mode(dir.join("artifacts/Ünïcode image.img")), 0o600);
    assert_eq!(
        cd,
        "attachment; filename=\"_n_code image.img\"; filename*=UTF-8''%C3%9Cn%C3%AFcode%20image.img"
    );
}

#[tokio::test]
async fn options_disguised_as_hosts_and_schedules_that_never_fire_are_refused() {
    let farm = Farm::start().await;
    for url in [
        "ssh://-oProxyCommand=touch%20pwned/repo",
        "ssh://git@[-oProxyCommand=x]/repo",
        "git@-oProxyCommand=x:repo",
    ] {
        let (s, v) = farm
            .post("/api/projects", json!({"name": "evil", "branch_url": url}))
            .await;
        assert_eq!(
            (s, v["field"].as_str()),
            (400, Some("branch_url")),
            "{url}: {v}"
        );
        assert!(
            v["error"].as_str().unwrap().contains("starting with '-'"),
            "{v}"
        );
    }
    let (s, v) = farm
        .post(
            "/api/projects",
            json!({"name": "never", "branch_url": "https://h/r.git", "schedule": "0 0 30 2 *"}),
        )
        .await;
    assert_eq!((s, v["field"].as_str()), (400, Some("schedule")), "{v}");
    assert!(v["error"].as_str().unwrap().contains("never fires"), "{v}");
}

/// A site can name the only hosts branches come from.
#[tokio::test]
async fn branch_urls_outside_the_host_allow_list_are_refused() {
    let farm = Farm::with(kiln_tests::farm::FarmOptions {
        extra_master_toml: "branch_hosts = [\"git.example.org\", \"127.0.0.1\"]\n".into(),
        ..Default::default()
    })
    .await;
    let (s, v) = farm
        .post(
            "/api/projects",
            json!({"name": "evil", "branch_url": "https://evil.example/r.git"}),
        )
        .await;
    assert_eq!((s, v["field"].as_str()), (400, Some("branch_url")), "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("'evil.example'")
            && v["error"].as_str().unwrap().contains("master.branch_hosts"),
        "{v}"
    );
    let (s, v) = farm
        .post(
            "/api/projects",
            json!({"name": "good", "branch_url": "https://GIT.example.org/r.git"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = farm
        .post(
            "/api/projects",
            json!({"name": "scp", "branch_url": "git@evil.example:r.git"}),
        )
        .await;
    assert_eq!((s, v["field"].as_str()), (400, Some("branch_url")), "{v}");
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let dist = kiln_tests::tempdir("kiln-console-");
    let inline = "\nimport init from '/app.js';\nawait init();\n";
    std::fs::write(
        dist.path().join("index.html"),
        format!("<html><head><script type=\"module\">{inline}</script></head></html>"),
    )
    .unwrap();
    let farm = Farm::with(FarmOptions {
        extra_master_toml: format!("console_dir = \"{}\"", dist.path().display()),
        ..Default::default()
    })
    .await;
    let api = farm.get_raw("/api/health").await;
    let page = farm.get_raw("/builds/1").await;
    for r in [&api, &page] {
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert!(h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'"));
    }
    assert!(api.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .starts_with("default-src 'none'"));
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    use base64::Engine;
    let want = base64::engine::general_purpose::STANDARD
        .encode(<sha2::Sha256 as sha2::Digest>::digest(inline.as_bytes()));
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert!(csp.contains(&format!("'sha256-{want}'")), "{csp}");
}

/// A build sees an environment built from an allow-list, never the daemon's: no slave token,
/// no other secret the daemon was started with.
#[tokio::test]
async fn a_build_never_sees_the_daemons_environment() {
    let git = GitServer::start();
    let repo = git.repo("nosy");
    repo.script_branch("main", "env > \"$KILN_OUTPUT_DIR/env\"");
    let farm = Farm::start().await;
    let mut slave = farm.slave("s1").await;
    slave.stop();
    farm.wait_slave_online("s1", false).await;
    slave.envs = vec![
        ("KILN_SLAVE_TOKEN".into(), slave.token.clone()),
        ("SITE_SECRET".into(), "hunter2".into()),
    ];
    slave.start();
    farm.wait_slave_online("s1", true).await;
    farm.project("nosy", &repo.url, "main").await;
    let b = farm.request_build("nosy", json!({})).await;
    let b = farm.wait_ended(b.id, Duration::from_secs(60)).await;
    assert_eq!(b.state, BuildState::Succeeded, "{:?}", b.reason);
    let env = String::from_utf8(farm.download(b.id, "env").await).unwrap();
    assert!(
        !env.contains(&slave.token),
        "the slave token leaked:\n{env}"
    );
    assert!(
        !env.contains("hunter2") && !env.contains("KILN_SLAVE_TOKEN"),
        "{env}"
    );
    assert!(env.contains(&format!("KILN_BUILD_ID={}", b.id)), "{env}");
    assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
}
