//! A build cannot touch other builds, the slave's secrets or what the slave reads after it: each
//! attack of issue 13 made by a real build on a real slave.

use kiln_shared::state::BuildState;
use kiln_tests::farm::Farm;
use kiln_tests::git::GitServer;
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const MINUTE: Duration = Duration::from_secs(60);

fn bash_branch(repo: &kiln_tests::git::Repo, body: &str) -> String {
    repo.file(
        "kiln.toml",
        "backend = \"script\"\n[script]\ncommand = \"./build.sh\"\n",
        false,
    )
    .file("build.sh", &format!("#!/bin/bash\n{body}\n"), true)
    .commit("main", "build")
}

/// The token file, the slave's state and other builds' dirs are out of reach; so are the
/// daemon's command line and environment (its /proc is not the build's).
#[tokio::test]
async fn a_build_cannot_read_the_slaves_token_or_state() {
    let git = GitServer::start();
    let repo = git.repo("nosy");
    let farm = Farm::start().await;
    let slave = farm.slave("s1").await;
    let work = slave.work.display().to_string();
    bash_branch(
        &repo,
        &format!(
            r#"W={work}
for f in "$W/slave.token" "$W/registration.json" "$W"/builds/*/input.json "$W"/builds/*/daemon.json "$W"/builds/*/acked; do
  if [ -r "$f" ] && cat "$f" > /dev/null 2>&1; then echo "READ $f"; fi
done
cat /proc/[0-9]*/cmdline /proc/[0-9]*/environ 2>/dev/null | tr '\0' '\n' > "$KILN_OUTPUT_DIR/proc" || true
ls -a "$W" "$W/builds" > "$KILN_OUTPUT_DIR/seen" 2>&1 || true
id -u > "$KILN_OUTPUT_DIR/id"
echo "home=$HOME tmp=$TMPDIR"
"#
        ),
    );
    farm.project("nosy", &repo.url, "main").await;
    let b = farm.request_build("nosy", json!({})).await;
    let b = farm.wait_ended(b.id, MINUTE).await;
    let log = farm.log(b.id).await;
    assert_eq!(b.state, BuildState::Succeeded, "{:?}\n{log}", b.reason);
    assert!(
        !log.contains("READ "),
        "the build read the slave's files:\n{log}"
    );
    assert!(!log.contains(&slave.token), "{log}");
    let proc_ = String::from_utf8(farm.download(b.id, "proc").await).unwrap();
    assert!(
        !proc_.contains(&slave.token),
        "the token leaked through /proc"
    );
    assert!(
        !proc_.contains("--work-dir"),
        "the daemon is visible:\n{proc_}"
    );
    let seen = String::from_utf8(farm.download(b.id, "seen").await).unwrap();
    assert!(!seen.contains("slave.token"), "{seen}");
    assert!(
        seen.contains(&b.id.to_string()),
        "its own build dir is there:\n{seen}"
    );
    // Root inside its namespace; an unprivileged id of its own on the host.
    assert_eq!(
        String::from_utf8(farm.download(b.id, "id").await)
            .unwrap()
            .trim(),
        "0"
    );
    assert!(log.contains("sandbox: user namespace, host ids"), "{log}");
}

/// Two builds of two projects at once on one slave: neither sees the other's directory or
/// temp files, so neither can change the other's image.
#[tokio::test]
async fn builds_on_one_slave_cannot_touch_each_others_files() {
    let git = GitServer::start();
    let farm = Farm::start().await;
    let slave = farm.slave_with("s1", &["--capacity", "2"]).await;
    let work = slave.work.display().to_string();
    // A barrier the two builds meet at, so each tries while the other is running.
    let barrier = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = barrier.local_addr().unwrap().port();
    let meet = tokio::spawn(async move {
        let mut conns = vec![];
        for _ in 0..2 {
            let (s, _) = barrier.accept().await.unwrap();
            conns.push(BufReader::new(s));
        }
        for c in &mut conns {
            c.get_mut().write_all(b"go\n").await.unwrap();
        }
        for c in &mut conns {
            let mut line = String::new();
            c.read_line(&mut line).await.unwrap();
        }
        for c in &mut conns {
            c.get_mut().write_all(b"end\n").await.unwrap();
        }
    });
    let body = format!(
        r#"set -e
echo "$KILN_PROJECT" > "$KILN_OUTPUT_DIR/image.img"
touch "/tmp/mark-$KILN_PROJECT"
exec 3<>/dev/tcp/127.0.0.1/{port}
read -r go <&3
for d in {work}/builds/*/sandbox/output {work}/builds/*/output; do
  [ -d "$d" ] || continue
  [ "$d" = "$KILN_OUTPUT_DIR" ] && continue
  echo "saw $d"
  if echo poisoned > "$d/image.img" 2>/dev/null; then echo "WROTE $d"; fi
done
echo "tmp: $(ls /tmp | tr '\n' ' ')"
echo done >&3
read -r end <&3
"#
    );
    let mut ids = vec![];
    for p in ["red", "blue"] {
        let repo = git.repo(p);
        bash_branch(&repo, &body);
        farm.project(p, &repo.url, "main").await;
        ids.push((p, farm.request_build(p, json!({})).await.id));
    }
    for (p, id) in &ids {
        let b = farm.wait_ended(*id, MINUTE).await;
        assert_eq!(b.state, BuildState::Succeeded, "{p}: {:?}", b.reason);
        let log = farm.log(*id).await;
        assert!(
            !log.contains("WROTE") && !log.contains("saw "),
            "{p} reached another build:\n{log}"
        );
        let other = if *p == "red" { "blue" } else { "red" };
        assert!(
            !log.contains(&format!("mark-{other}")),
            "{p} saw the other's /tmp:\n{log}"
        );
        assert_eq!(
            farm.download(*id, "image.img").await,
            format!("{p}\n").into_bytes()
        );
    }
    meet.await.unwrap();
}

/// A process a build starts in a session of its own (`setsid`) ends with the build.
#[tokio::test]
async fn nothing_a_build_starts_outlives_it() {
    let git = GitServer::start();
    let repo = git.repo("escape");
    let marker = format!("kiln-escapee-{}", std::process::id());
    // The build goes on only once the test has seen its escapee running.
    let gate = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = gate.local_addr().unwrap().port();
    bash_branch(
        &repo,
        &format!(
            r#"setsid bash -c 'exec -a {marker} sleep 600' < /dev/null > /dev/null 2>&1 &
exec 3<>/dev/tcp/127.0.0.1/{port}
read -r go <&3
echo ok > "$KILN_OUTPUT_DIR/ok"
"#
        ),
    );
    let farm = Farm::start().await;
    let _slave = farm.slave("s1").await;
    farm.project("escape", &repo.url, "main").await;
    let b = farm.request_build("escape", json!({})).await;
    let (mut conn, _) = tokio::time::timeout(MINUTE, gate.accept())
        .await
        .expect("the build reached the gate")
        .unwrap();
    // It runs while the build runs…
    kiln_tests::wait_process(&marker).await;
    conn.write_all(b"go\n").await.unwrap();
    let b = farm.wait_ended(b.id, MINUTE).await;
    assert_eq!(
        b.state,
        BuildState::Succeeded,
        "{:?}\n{}",
        b.reason,
        farm.log(b.id).await
    );
    // …and is gone once the build has ended.
    kiln_tests::wait_no_process(&marker, Duration::from_secs(10)).await;
}

/// The build's processes are created in the build's own cgroup (the runner's PID 1 is made there
/// with `clone3`, not moved there): the script and what it starts in the background, detached,
/// all report the build's cgroup.
#[tokio::test]
async fn every_process_of_a_build_is_in_its_cgroup() {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    if !mountinfo.lines().any(|l| l.contains(" - cgroup2 ")) {
        eprintln!("no cgroup v2 hierarchy on this host: the slave runs builds without a cgroup");
        return;
    }
    let git = GitServer::start();
    let repo = git.repo("cgroup");
    bash_branch(
        &repo,
        r#"echo "script $(grep '^0::' /proc/self/cgroup)"
setsid bash -c 'echo "detached $(grep "^0::" /proc/self/cgroup)" > "$0/detached"' "$KILN_OUTPUT_DIR" < /dev/null &
while [ ! -s "$KILN_OUTPUT_DIR/detached" ]; do sleep 0.05; done
cat "$KILN_OUTPUT_DIR/detached"
"#,
    );
    let farm = Farm::start().await;
    let _slave = farm.slave("s1").await;
    farm.project("cgroup", &repo.url, "main").await;
    let b = farm.request_build("cgroup", json!({})).await;
    let b = farm.wait_ended(b.id, MINUTE).await;
    let log = farm.log(b.id).await;
    assert_eq!(b.state, BuildState::Succeeded, "{:?}\n{log}", b.reason);
    let own = format!("/kiln-build-{}-", b.id);
    for who in ["script", "detached"] {
        let line = log
            .lines()
            .find(|l| l.starts_with(&format!("{who} 0::")))
            .unwrap_or_else(|| panic!("no cgroup line from the {who} process in\n{log}"));
        assert!(
            line.contains(&own),
            "the {who} process is not in the build's cgroup ({own}…): {line}"
        );
    }
}

/// What the daemon uploads is what the build left in its output dir, read once every process of
/// the build has ended: a file swapped for a link, or the output dir made a link, reads nothing
/// outside it.
#[tokio::test]
async fn the_upload_reads_nothing_outside_the_output_dir() {
    let git = GitServer::start();
    let farm = Farm::start().await;
    let _slave = farm.slave("s1").await;

    let swap = git.repo("swap");
    bash_branch(
        &swap,
        r#"O="$KILN_OUTPUT_DIR"
echo good > "$O/image.img"
setsid bash -c 'while true; do ln -sf /etc/passwd "$0/x.tmp"; mv -f "$0/x.tmp" "$0/image.img"; echo good > "$0/y.tmp"; mv -f "$0/y.tmp" "$0/image.img"; done' "$O" < /dev/null > /dev/null 2>&1 &
sleep 0.2
"#,
    );
    farm.project("swap", &swap.url, "main").await;
    let b = farm.request_build("swap", json!({})).await;
    let b = farm.wait_ended(b.id, MINUTE).await;
    match b.state {
        BuildState::Succeeded => {
            assert_eq!(farm.download(b.id, "image.img").await, b"good\n");
        }
        BuildState::Failed => {
            let reason = b.reason.clone().unwrap_or_default();
            assert!(reason.contains("symbolic link"), "{reason}");
        }
        other => panic!("unexpected {other:?}: {:?}", b.reason),
    }
    for a in farm.artifacts(b.id).await {
        let data = farm.download(b.id, &a.name).await;
        assert!(
            !String::from_utf8_lossy(&data).contains("root:"),
            "{} holds /etc/passwd",
            a.name
        );
    }

    let dirlink = git.repo("dirlink");
    bash_branch(
        &dirlink,
        r#"rm -rf "$KILN_OUTPUT_DIR"; ln -s /etc "$KILN_OUTPUT_DIR""#,
    );
    farm.project("dirlink", &dirlink.url, "main").await;
    let b = farm.request_build("dirlink", json!({})).await;
    let b = farm.wait_ended(b.id, MINUTE).await;
    assert_eq!(b.state, BuildState::Failed);
    let reason = b.reason.unwrap_or_default();
    assert!(
        reason.contains("output dir cannot be opened as a directory"),
        "{reason}"
    );
    assert!(farm.artifacts(b.id).await.is_empty());
}

/// Files of the branch are read only inside the checkout, and a failure never quotes a file of
/// the slave's.
#[tokio::test]
async fn a_recipe_linked_outside_the_branch_is_refused_without_quoting_it() {
    let git = GitServer::start();
    let farm = Farm::start().await;
    let _slave = farm.slave("s1").await;

    let toml = git.repo("toml");
    toml.symlink("kiln.toml", "/etc/passwd")
        .commit("main", "link");
    farm.project("toml", &toml.url, "main").await;
    let b = farm.request_build("toml", json!({})).await;
    let b = farm.wait_ended(b.id, MINUTE).await;
    assert_eq!(b.state, BuildState::Failed);
    let reason = b.reason.unwrap_or_default();
    assert!(
        reason.contains("kiln.toml") && reason.contains("symbolic link"),
        "{reason}"
    );
    let log = farm.log(b.id).await;
    assert!(!reason.contains("root:") && !log.contains("root:"), "{log}");

    let script = git.repo("script");
    script
        .file(
            "kiln.toml",
            "backend = \"script\"\n[script]\ncommand = \"build.sh\"\n",
            false,
        )
        .symlink("build.sh", "/usr/bin/id")
        .commit("main", "link");
    farm.project("script", &script.url, "main").await;
    let b = farm.request_build("script", json!({})).await;
    let b = farm.wait_ended(b.id, MINUTE).await;
    assert_eq!(b.state, BuildState::Failed);
    let reason = b.reason.unwrap_or_default();
    assert!(reason.contains("outside the branch"), "{reason}");
}

/// A slave is what an admin registered: it cannot declare itself into a tag it was not given
/// (`release-signing`), nor claim another architecture later.
#[tokio::test]
async fn a_slave_cannot_declare_itself_into_tags_or_another_architecture() {
    let farm = Farm::start().await;
    // The kit registers it with the tags it is started with: imx6, approved by the admin.
    let mut slave = farm.slave_with("board", &["--tags", "imx6"]).await;
    slave.stop();
    farm.wait_slave_online("board", false).await;
    slave.extra = vec!["--tags".into(), "imx6,release-signing".into()];
    slave.start();
    farm.wait_slave_online("board", true).await;
    let s = farm
        .slaves()
        .await
        .into_iter()
        .find(|s| s.name == "board")
        .unwrap();
    assert_eq!(
        s.tags,
        vec!["imx6".to_string()],
        "only the approved tags count"
    );
    // The architecture of its first connection is the one it keeps.
    slave.stop();
    farm.wait_slave_online("board", false).await;
    let other = if s.arch.as_deref() == Some("riscv64") {
        "amd64"
    } else {
        "riscv64"
    };
    slave.extra = vec!["--arch".into(), other.into()];
    slave.start();
    slave
        .wait_log("an admin must register it again", Duration::from_secs(30))
        .await;
    assert!(
        !farm
            .slaves()
            .await
            .iter()
            .any(|s| s.name == "board" && s.online),
        "refused, it is not online"
    );
}
