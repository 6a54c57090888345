//! `backend = "exec"`: a site's own image tool run from the branch, talking to Kiln in JSON lines
//! on its stdout (`docs/backends.md`): steps and progress reach the log and the master's live
//! views, reported artifacts are taken from the build's work dirs (and from nowhere else), and an
//! `{"error"}` line is the failure reason of a tool that then exits non-zero.

use kiln_shared::codec::PROTOCOL_VERSION;
use kiln_shared::frames::{ConsoleEvent, ConsoleRequest};
use kiln_shared::BuildState;
use kiln_tests::session::{console_next, console_send};
use kiln_tests::{Farm, GitServer, Repo};
use serde_json::json;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Commits an `exec` branch whose tool is `tools/build-image` (a bash script with `body`), run
/// with two arguments.
fn exec_branch(repo: &Repo, body: &str) -> String {
    repo.file(
        "kiln.toml",
        "backend = \"exec\"\n[exec]\ncommand = [\"./tools/build-image\", \"--flavour\", \"tiny board\"]\n",
        false,
    )
    .file(
        "tools/build-image",
        &format!("#!/bin/bash\nset -euo pipefail\n{body}\n"),
        true,
    )
    .commit("main", "exec build")
}

#[tokio::test]
async fn an_exec_tool_reports_steps_progress_and_artifacts() {
    // The tool waits on this connection after each progress report until the test has seen the
    // report reach the master: every report is observed, none is superseded by the next.
    let gate = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = gate.local_addr().unwrap().port();
    let git = GitServer::start();
    let repo = git.repo("exec-ok");
    exec_branch(
        &repo,
        &format!(
            r#"exec 3<>/dev/tcp/127.0.0.1/{port}
seen() {{ read -r _ <&3; }}
echo "tool started with: $*"
printf '{{"step": "preparing", "progress": 0.25}}\n'
seen
echo "an ordinary line"
printf '{{"progress": 0.5}}\n'
seen
echo "to stderr" >&2
printf '{{"step": "installing packages", "progress": 0.75}}\n'
seen
printf 'made in scratch\n' > "$KILN_SCRATCH_DIR/board.bin"
mkdir -p out/sub
printf 'made in the checkout\n' > out/sub/notes.txt
printf '{{"artifact": "%s"}}\n' "$KILN_SCRATCH_DIR/board.bin"
printf '{{"artifact": "out/sub/notes.txt"}}\n'
printf 'written directly\n' > "$KILN_OUTPUT_DIR/direct.txt""#
        ),
    );
    let farm = Farm::start().await;
    let _slave = farm.slave("exec-slave").await;
    farm.project("exec-ok", &repo.url, "main").await;
    let mut console = farm
        .ws(
            "/ws/console",
            Some(&farm.token),
            &PROTOCOL_VERSION.to_string(),
        )
        .await
        .expect("console socket");
    console_send(&mut console, &ConsoleRequest::SubscribeQueue).await;
    let b = farm.request_build("exec-ok", json!({})).await;
    let (mut tool, _) = tokio::time::timeout(Duration::from_secs(120), gate.accept())
        .await
        .expect("the tool connects within 120 s")
        .unwrap();

    let want = [
        ("preparing", Some(25)),
        ("preparing", Some(50)),
        ("installing packages", Some(75)),
    ];
    let mut seen = 0;
    while seen < want.len() {
        match console_next(&mut console).await {
            Some(ConsoleEvent::Progress {
                build,
                phase,
                percent,
            }) if build == b.id => {
                if (phase.as_str(), percent) == want[seen] {
                    seen += 1;
                    tool.write_all(b"go\n").await.unwrap();
                }
            }
            Some(ConsoleEvent::Build(x)) if x.id == b.id && x.state.is_terminal() => {
                panic!(
                    "the build ended before its progress was seen ({seen} of {}): {:?} {:?}\n{}",
                    want.len(),
                    x.state,
                    x.reason,
                    farm.log(b.id).await
                );
            }
            Some(_) => {}
            None => panic!("the console closed"),
        }
    }

    let b = farm.wait_ended(b.id, Duration::from_secs(60)).await;
    assert_eq!(
        b.state,
        BuildState::Succeeded,
        "reason: {:?}\n{}",
        b.reason,
        farm.log(b.id).await
    );
    let arts = farm.artifacts(b.id).await;
    let names: Vec<&str> = arts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        ["SHA256SUMS", "board.bin", "direct.txt", "notes.txt"]
    );
    for (name, content) in [
        ("board.bin", "made in scratch\n"),
        ("notes.txt", "made in the checkout\n"),
        ("direct.txt", "written directly\n"),
    ] {
        assert_eq!(
            farm.download(b.id, name).await,
            content.as_bytes(),
            "{name}"
        );
    }

    let log = farm.log(b.id).await;
    for line in [
        "[kiln] exec ./tools/build-image --flavour tiny board",
        "tool started with: --flavour tiny board",
        "[kiln] step: preparing",
        "an ordinary line",
        "to stderr",
        "[kiln] step: installing packages",
        "[kiln] artifact: notes.txt (from out/sub/notes.txt)",
    ] {
        assert!(log.lines().any(|l| l == line), "{line:?} in\n{log}");
    }
    assert!(
        log.lines()
            .any(|l| l.starts_with("[kiln] artifact: board.bin (from /")),
        "{log}"
    );
    // The messages themselves are Kiln's, not the log's.
    assert!(!log.lines().any(|l| l.starts_with("{\"")), "{log}");
}

#[tokio::test]
async fn an_artifact_outside_the_work_dirs_fails_the_build() {
    let git = GitServer::start();
    let repo = git.repo("exec-outside");
    exec_branch(
        &repo,
        r#"ln -s /etc/passwd "$KILN_SCRATCH_DIR/passwd"
printf '{"progress": 1.5}\n'
printf '{"step": oops}\n'
printf '{"artifact": "%s"}\n' "$KILN_SCRATCH_DIR/passwd"
printf '{"artifact": "/etc/passwd"}\n'
printf '{"artifact": "missing.img"}\n'
echo fine > "$KILN_OUTPUT_DIR/fine.txt""#,
    );
    let farm = Farm::start().await;
    let _slave = farm.slave("exec-slave").await;
    farm.project("exec-outside", &repo.url, "main").await;
    let b = farm.request_build("exec-outside", json!({})).await;
    let b = farm.wait_ended(b.id, Duration::from_secs(60)).await;
    let log = farm.log(b.id).await;
    assert_eq!(b.state, BuildState::Failed, "{log}");
    let reason = b.reason.unwrap();
    assert!(
        reason.starts_with("exec: stdout line 3: artifact \"/")
            && reason.ends_with(
                "/scratch/passwd\" is outside the build's work dirs (the checkout, $KILN_SCRATCH_DIR and $KILN_OUTPUT_DIR)"
            ),
        "{reason}"
    );
    for line in [
        "[kiln] exec: stdout line 1 is not a valid message: \"progress\" must be a number from 0 to 1, not 1.5: {\"progress\": 1.5}",
        "[kiln] exec: stdout line 4: artifact \"/etc/passwd\" is outside the build's work dirs (the checkout, $KILN_SCRATCH_DIR and $KILN_OUTPUT_DIR)",
        "[kiln] exec: stdout line 5: artifact \"missing.img\" does not exist",
    ] {
        assert!(log.lines().any(|l| l == line), "{line:?} in\n{log}");
    }
    assert!(
        log.lines()
            .any(|l| l
                .starts_with("[kiln] exec: stdout line 2 is not a valid message: not valid JSON")),
        "{log}"
    );
    // Nothing of the slave's is read into the log or taken as an artifact (a failed build may
    // keep the files it left itself).
    assert!(!log.contains("root:"), "{log}");
    for a in farm.artifacts(b.id).await {
        assert_ne!(a.name, "passwd");
        let data = farm.download(b.id, &a.name).await;
        assert!(
            !String::from_utf8_lossy(&data).contains("root:"),
            "{}",
            a.name
        );
    }
}

#[tokio::test]
async fn an_error_line_is_the_reason_of_a_failing_tool() {
    let git = GitServer::start();
    let repo = git.repo("exec-error");
    exec_branch(
        &repo,
        r#"echo "Error: an earlier complaint of the tool's"
printf '{"error": "the image is larger than the 4 GiB eMMC"}\n'
exit 3"#,
    );
    let farm = Farm::start().await;
    let _slave = farm.slave("exec-slave").await;
    farm.project("exec-error", &repo.url, "main").await;
    let b = farm.request_build("exec-error", json!({})).await;
    let b = farm.wait_ended(b.id, Duration::from_secs(60)).await;
    let log = farm.log(b.id).await;
    assert_eq!(b.state, BuildState::Failed, "{log}");
    assert_eq!(
        b.reason.as_deref(),
        Some(
            "exec ./tools/build-image failed with exit status 3: the image is larger than the 4 GiB eMMC"
        ),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l
                == "[kiln] the tool reports an error: the image is larger than the 4 GiB eMMC"),
        "{log}"
    );
}
