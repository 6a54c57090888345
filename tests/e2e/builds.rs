//! A build travels from a branch URL to a downloadable artifact.

use kiln_shared::BuildState;
use kiln_tests::{Farm, GitServer};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::time::Duration;

#[tokio::test]
async fn script_build_produces_downloadable_artifacts() {
    let git = GitServer::start();
    let repo = git.repo("board");
    let sha = repo.script_branch(
        "main",
        r#"for i in $(seq 1 20); do echo "step $i"; done
echo "built $KILN_PROJECT at $KILN_COMMIT for $KILN_ARCH as $KILN_BUILD_ID" > "$KILN_OUTPUT_DIR/image.txt"
head -c 300000 /dev/urandom > "$KILN_OUTPUT_DIR/blob.bin""#,
    );
    let farm = Farm::start().await;
    let _slave = farm.slave("s1").await;
    farm.project("board", &repo.url, "main").await;
    let b = farm.request_build("board", json!({})).await;
    assert_eq!(b.state, BuildState::Queued);
    let b = farm.wait_ended(b.id, Duration::from_secs(60)).await;
    assert_eq!(b.state, BuildState::Succeeded, "reason: {:?}", b.reason);
    assert_eq!(
        b.commit.as_deref(),
        Some(sha.as_str()),
        "the built commit is recorded"
    );
    assert_eq!(b.slave.as_deref(), Some("s1"));
    assert!(b.started_at.is_some() && b.finished_at.is_some());

    let log = farm.log(b.id).await;
    let steps: Vec<&str> = log.lines().filter(|l| l.starts_with("step ")).collect();
    assert_eq!(
        steps,
        (1..=20).map(|i| format!("step {i}")).collect::<Vec<_>>()
    );

    let arts = farm.artifacts(b.id).await;
    let names: Vec<&str> = arts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["SHA256SUMS", "blob.bin", "image.txt"]);
    for a in &arts {
        let data = farm.download(b.id, &a.name).await;
        assert_eq!(data.len() as i64, a.size);
        assert_eq!(hex::encode(Sha256::digest(&data)), a.sha256, "{}", a.name);
    }
    let text = String::from_utf8(farm.download(b.id, "image.txt").await).unwrap();
    assert_eq!(
        text.trim(),
        format!("built board at {sha} for {} as {}", arch(), b.id)
    );
    let sums = String::from_utf8(farm.download(b.id, "SHA256SUMS").await).unwrap();
    let blob = arts.iter().find(|a| a.name == "blob.bin").unwrap();
    assert!(
        sums.contains(&format!("{}  blob.bin", blob.sha256)),
        "{sums}"
    );

    // Range requests resume a download.
    let r = farm
        .http
        .get(farm.api(&format!("/api/builds/{}/artifacts/blob.bin", b.id)))
        .bearer_auth(&farm.token)
        .header("range", "bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    let part = r.bytes().await.unwrap();
    assert_eq!(&part[..], &farm.download(b.id, "blob.bin").await[100..200]);
}

fn arch() -> String {
    let out = std::process::Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn builds_a_pinned_commit_and_pins_releases() {
    let git = GitServer::start();
    let repo = git.repo("pin");
    let first = repo.script_branch("main", "echo one > \"$KILN_OUTPUT_DIR/v\"");
    let second = repo.script_branch("main", "echo two > \"$KILN_OUTPUT_DIR/v\"");
    let farm = Farm::start().await;
    let _slave = farm.slave("s1").await;
    farm.project("pin", &repo.url, "main").await;

    let old = farm.request_build("pin", json!({"commit": first})).await;
    let old = farm.wait_ended(old.id, Duration::from_secs(60)).await;
    assert_eq!(old.state, BuildState::Succeeded, "{:?}", old.reason);
    assert_eq!(old.commit.as_deref(), Some(first.as_str()));
    assert_eq!(farm.download(old.id, "v").await, b"one\n");

    // A release is pinned to the branch head at the moment it is asked for, even if the branch
    // moves before it runs.
    let rel = farm.request_build("pin", json!({"release": "v1.0"})).await;
    assert_eq!(rel.requested_commit.as_deref(), Some(second.as_str()));
    assert_eq!(rel.trigger, "release");
    repo.script_branch("main", "echo three > \"$KILN_OUTPUT_DIR/v\"");
    let rel = farm.wait_ended(rel.id, Duration::from_secs(60)).await;
    assert_eq!(rel.state, BuildState::Succeeded, "{:?}", rel.reason);
    assert_eq!(rel.commit.as_deref(), Some(second.as_str()));
    assert_eq!(rel.release.as_deref(), Some("v1.0"));
    assert_eq!(farm.download(rel.id, "v").await, b"two\n");
}

#[tokio::test]
async fn dispatch_goes_to_the_right_architecture_and_tags() {
    let git = GitServer::start();
    let repo = git.repo("tagged");
    repo.script_branch("main", "echo ok > \"$KILN_OUTPUT_DIR/ok\"");
    let farm = Farm::start().await;
    let _plain = farm.slave("plain").await;
    let _board = farm.slave_with("imx6", &["--tags", "imx6,kvm"]).await;
    let (s, v) = farm
        .post(
            "/api/projects",
            json!({"name": "tagged", "branch_url": repo.url, "tags": ["imx6"]}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    for _ in 0..3 {
        let b = farm.request_build("tagged", json!({})).await;
        let b = farm.wait_ended(b.id, Duration::from_secs(60)).await;
        assert_eq!(b.state, BuildState::Succeeded, "{:?}", b.reason);
        assert_eq!(b.slave.as_deref(), Some("imx6"));
    }
    // No slave of that architecture: the build waits.
    let (s, v) = farm
        .post(
            "/api/projects",
            json!({"name": "other-arch", "branch_url": repo.url, "architecture": "s390x"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let b = farm.request_build("other-arch", json!({})).await;
    // The dispatcher has looked at it (and given the reason) and left it queued.
    let waiting = farm
        .wait_build(b.id, Duration::from_secs(30), "explained", |b| {
            b.waiting_reason.is_some()
        })
        .await;
    assert_eq!(waiting.state, BuildState::Queued);
    assert_eq!(
        waiting.waiting_reason.as_deref(),
        Some("no online slave is s390x (the project does not allow emulation)")
    );
    // Cancelling a queued build removes it from the queue.
    let (s, v) = farm
        .post(&format!("/api/builds/{}/cancel", b.id), json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "cancelled");
    assert!(v["reason"].as_str().unwrap().contains("before it started"));
    let (s, _) = farm
        .post(&format!("/api/builds/{}/cancel", b.id), json!({}))
        .await;
    assert_eq!(s, 409, "cancelling twice is a conflict");
}

#[tokio::test]
async fn cancelling_a_running_build_kills_its_processes() {
    let git = GitServer::start();
    let repo = git.repo("long");
    let farm = Farm::start().await;
    repo.script_branch("main", "sleep 296 &\necho started\nwait");
    let _slave = farm.slave("s1").await;
    farm.project("long", &repo.url, "main").await;
    let b = farm.request_build("long", json!({})).await;
    farm.wait_build(b.id, Duration::from_secs(60), "running with output", |b| {
        b.state == BuildState::Running && b.log_lines > 0
    })
    .await;
    let child = kiln_tests::wait_process("sleep 296").await;
    let (s, v) = farm
        .post(&format!("/api/builds/{}/cancel", b.id), json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "cancelled");
    // The backend's whole process group goes, grandchildren included.
    kiln_tests::wait_dead(child, "the cancelled build's child").await;
    // The slave is free again for the next build.
    repo.script_branch("main", "echo next > \"$KILN_OUTPUT_DIR/n\"");
    let b2 = farm.request_build("long", json!({})).await;
    let b2 = farm.wait_ended(b2.id, Duration::from_secs(60)).await;
    assert_eq!(b2.state, BuildState::Succeeded, "{:?}", b2.reason);
}

/// A repository holding several image configurations: a project builds in its `path`, each build
/// keeps the path it ran in, and a path that is malformed, missing, not a directory or leads
/// out of the checkout fails with a reason that names it.
#[tokio::test]
async fn a_project_builds_in_its_directory_of_the_branch() {
    let git = GitServer::start();
    let repo = git.repo("several");
    let script = "backend = \"script\"\n[script]\ncommand = \"./build.sh\"\n";
    repo.file("kiln.toml", script, false)
        .file(
            "build.sh",
            "#!/bin/sh\necho top > \"$KILN_OUTPUT_DIR/which\"\n",
            true,
        )
        .file("images/board/kiln.toml", script, false)
        .file(
            "images/board/build.sh",
            "#!/bin/sh\nset -e\necho \"board in ${PWD##*/}\" > \"$KILN_OUTPUT_DIR/which\"\n",
            true,
        )
        .file("images/notes.txt", "not a directory\n", false)
        .file("images/bare/README", "no kiln.toml here\n", false)
        .symlink("images/out", "/etc")
        .commit("main", "two configurations");
    let farm = Farm::start().await;
    let _slave = farm.slave("s1").await;
    let (s, v) = farm
        .post(
            "/api/projects",
            json!({"name": "board", "branch_url": repo.url, "branch": "main",
                   "path": "images/board"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["path"], "images/board", "{v}");

    let b = farm.request_build("board", json!({})).await;
    let b = farm.wait_ended(b.id, Duration::from_secs(60)).await;
    assert_eq!(b.state, BuildState::Succeeded, "{:?}", b.reason);
    assert_eq!(b.path.as_deref(), Some("images/board"));
    assert_eq!(farm.download(b.id, "which").await, b"board in board\n");

    let patch = |body: serde_json::Value| farm.patch("/api/projects/board", body);
    // Malformed paths are refused by the API, naming the field.
    for bad in [
        "/etc",
        "images/../..",
        "images//board",
        "images/board/",
        "",
        "a\\b",
    ] {
        let (s, v) = patch(json!({ "path": bad })).await;
        assert_eq!(s, 400, "path {bad:?}: {v}");
        assert_eq!(v["field"], "path", "path {bad:?}: {v}");
    }
    // Paths the branch does not have as a directory of its own fail the build, saying so.
    for (path, says) in [
        ("images/none", "the branch has no directory images/none"),
        ("images/notes.txt", "is not a directory"),
        ("images/bare", "no kiln.toml in images/bare"),
        ("images/out", "leads outside the branch"),
    ] {
        let (s, v) = patch(json!({ "path": path })).await;
        assert_eq!(s, 200, "{v}");
        let b = farm.request_build("board", json!({})).await;
        let b = farm.wait_ended(b.id, Duration::from_secs(60)).await;
        assert_eq!(b.state, BuildState::Failed, "{path}: {b:?}");
        let reason = b.reason.unwrap_or_default();
        assert!(reason.contains(says), "{path}: {reason}");
    }
    // null: the top of the branch again.
    let (s, v) = patch(json!({ "path": null })).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["path"].is_null(), "{v}");
    let b = farm.request_build("board", json!({})).await;
    let b = farm.wait_ended(b.id, Duration::from_secs(60)).await;
    assert_eq!(b.state, BuildState::Succeeded, "{:?}", b.reason);
    assert_eq!(b.path, None);
    assert_eq!(farm.download(b.id, "which").await, b"top\n");
}
