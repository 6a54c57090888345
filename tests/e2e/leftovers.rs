//! Nothing left behind (issue 19): the loop devices a build attached are detached after it ends,
//! whether it succeeded, failed or was cancelled, and its log says so.

use kiln_shared::BuildState;
use kiln_tests::{Farm, GitServer};
use serde_json::json;
use std::process::Command;
use std::time::Duration;

/// The device the build said it attached ("attached /dev/loopN" in its log).
fn attached(log: &str) -> String {
    log.lines()
        .find_map(|l| l.split("attached ").nth(1))
        .map(|d| d.trim().to_string())
        .unwrap_or_else(|| panic!("the build attached no loop device:\n{log}"))
}

fn is_attached(dev: &str) -> bool {
    Command::new("losetup")
        .arg(dev)
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn loop_devices_a_build_attached_are_detached_after_it_whatever_its_end() {
    let git = GitServer::start();
    let repo = git.repo("loops");
    let attach = "f=\"$KILN_SCRATCH_DIR/disk.img\"\ntruncate -s 16M \"$f\"\n\
                  dev=$(losetup -f --show \"$f\")\necho \"attached $dev\"\n";
    repo.script_branch("ok", &format!("{attach}echo ok > \"$KILN_OUTPUT_DIR/ok\""));
    repo.script_branch(
        "fail",
        &format!("{attach}echo 'E: broken on purpose'\nexit 3"),
    );
    repo.script_branch("wait", &format!("{attach}echo waiting\nsleep 600"));
    let farm = Farm::start().await;
    // Attaching a loop device needs the host's root: a host-root slave (docs/security.md).
    let _slave = farm.slave_with("s1", &["--sandbox", "host-root"]).await;
    for (name, branch) in [("ok", "ok"), ("fail", "fail"), ("wait", "wait")] {
        farm.project(name, &repo.url, branch).await;
    }

    for (project, want) in [("ok", BuildState::Succeeded), ("fail", BuildState::Failed)] {
        let b = farm.request_build(project, json!({})).await;
        let b = farm.wait_ended(b.id, Duration::from_secs(60)).await;
        let log = farm.log(b.id).await;
        assert_eq!(b.state, want, "{:?}\n{log}", b.reason);
        let dev = attached(&log);
        assert!(
            !is_attached(&dev),
            "{project}: {dev} is still attached\n{log}"
        );
        assert!(
            log.contains(&format!("detached loop devices {dev}")),
            "{project}: the log says what was released:\n{log}"
        );
    }

    // Cancelled while it runs, the device attached.
    let b = farm.request_build("wait", json!({})).await;
    farm.wait_build(b.id, Duration::from_secs(60), "the build waiting", |b| {
        b.log_lines > 0 && b.state == BuildState::Running
    })
    .await;
    let mut log = String::new();
    for _ in 0..600 {
        log = farm.log(b.id).await;
        if log.contains("waiting") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dev = attached(&log);
    assert!(is_attached(&dev), "attached while the build runs");
    let (s, v) = farm
        .post(&format!("/api/builds/{}/cancel", b.id), json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    let b = farm.wait_ended(b.id, Duration::from_secs(60)).await;
    assert_eq!(b.state, BuildState::Cancelled, "{:?}", b.reason);
    // The master ends a cancelled build at once; the slave stops the runner, then releases
    // what it left attached.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while is_attached(&dev) {
        assert!(
            std::time::Instant::now() < deadline,
            "{dev} is still attached a minute after the cancel"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
