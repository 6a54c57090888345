//! Bad input gets a clear error and loses nothing; no build fails without a reason.

use kiln_shared::BuildState;
use kiln_tests::{Farm, GitServer};
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn malformed_or_disallowed_branch_urls_are_refused_with_the_field() {
    let farm = Farm::start().await;
    for (url, says) in [
        ("ext::sh -c touch% /tmp/pwned", "whitespace"),
        ("ext::sh", "remote-helper"),
        ("file:///etc", "disabled"),
        ("/var/lib/repo", "disabled"),
        ("-uhttps://x/y", "starts with '-'"),
        ("ftp://host/x.git", "scheme 'ftp'"),
        ("", "empty"),
    ] {
        let (s, v) = farm
            .post("/api/projects", json!({"name": "bad", "branch_url": url}))
            .await;
        assert_eq!(s, 400, "{url}: {v}");
        assert_eq!(v["code"], "invalid");
        assert_eq!(v["field"], "branch_url", "{url}: {v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{url}: {v}");
    }
    let (s, v) = farm
        .post(
            "/api/projects",
            json!({"name": "ok", "branch_url": "git://127.0.0.1/x.git", "branch": "-x"}),
        )
        .await;
    assert_eq!((s, v["field"].as_str()), (400, Some("branch")), "{v}");
    let (s, v) = farm
        .post(
            "/api/projects",
            json!({"name": "no/slash", "branch_url": "git://127.0.0.1/x.git"}),
        )
        .await;
    assert_eq!((s, v["field"].as_str()), (400, Some("name")), "{v}");
    // Nothing was created by the refused requests.
    let projects: Vec<serde_json::Value> = farm.get("/api/projects").await;
    assert!(projects.is_empty(), "{projects:?}");
    // Unknown routes and ids are 404s with a message, not 500s.
    let r = farm.get_raw("/api/builds/999999").await;
    assert_eq!(r.status(), 404);
    let r = farm
        .http
        .get(farm.api("/api/projects"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the API needs the admin token");
}

/// Requests a build of `branch` and returns it once ended; it must have failed with a reason
/// containing every one of `says`.
async fn fails_with(farm: &Farm, project: &str, says: &[&str]) -> kiln_shared::api::Build {
    let b = farm.request_build(project, json!({})).await;
    let b = farm.wait_ended(b.id, Duration::from_secs(60)).await;
    assert_eq!(b.state, BuildState::Failed, "{b:?}");
    let reason = b.reason.clone().expect("a failed build has a reason");
    for s in says {
        assert!(reason.contains(s), "reason {reason:?} should mention {s:?}");
    }
    // The log says it too.
    let log = farm.log(b.id).await;
    assert!(log.contains(says[0]), "log should carry the reason:\n{log}");
    b
}

#[tokio::test]
async fn fetch_and_recipe_failures_say_why() {
    let git = GitServer::start();
    let farm = Farm::start().await;
    let _slave = farm.slave("s1").await;

    let repo = git.repo("cfg");
    repo.script_branch("main", "true");
    repo.script_branch("release", "true");
    farm.project("nobranch", &repo.url, "relase").await;
    fails_with(
        &farm,
        "nobranch",
        &["branch 'relase' not found", "known: main, release"],
    )
    .await;

    farm.project("noserver", "git://127.0.0.1:9/nothing.git", "main")
        .await;
    fails_with(
        &farm,
        "noserver",
        &["cannot fetch git://127.0.0.1:9/nothing.git"],
    )
    .await;

    let r = git.repo("norecipe");
    r.file("README", "nothing here", false)
        .commit("main", "empty");
    farm.project("norecipe", &r.url, "main").await;
    let b = fails_with(&farm, "norecipe", &["no kiln.toml"]).await;
    assert!(
        b.commit.is_some(),
        "the commit is recorded even when the recipe is missing"
    );

    let r = git.repo("unknown");
    r.file("kiln.toml", "backend = \"kiwi\"\n", false)
        .commit("main", "kiwi");
    farm.project("unknown", &r.url, "main").await;
    fails_with(
        &farm,
        "unknown",
        &["unknown backend \"kiwi\"", "script, mmdebstrap, live-build"],
    )
    .await;

    let r = git.repo("badopt");
    r.file(
        "kiln.toml",
        "backend = \"mmdebstrap\"\n[mmdebstrap]\nsuite = \"bookworm\"\nimage_size = \"lots\"\n",
        false,
    )
    .commit("main", "bad size");
    farm.project("badopt", &r.url, "main").await;
    fails_with(&farm, "badopt", &["mmdebstrap.image_size"]).await;

    let r = git.repo("typo");
    r.file(
        "kiln.toml",
        "backend = \"script\"\n[script]\ncomand = \"./x\"\n",
        false,
    )
    .commit("main", "typo");
    farm.project("typo", &r.url, "main").await;
    fails_with(&farm, "typo", &["comand"]).await;

    let r = git.repo("noexec");
    r.file(
        "kiln.toml",
        "backend = \"script\"\n[script]\ncommand = \"./build.sh\"\n",
        false,
    )
    .file("build.sh", "#!/bin/sh\n", false)
    .commit("main", "not executable");
    farm.project("noexec", &r.url, "main").await;
    fails_with(&farm, "noexec", &["not an executable"]).await;

    let r = git.repo("nothing");
    r.script_branch("main", "echo made nothing");
    farm.project("nothing", &r.url, "main").await;
    fails_with(&farm, "nothing", &["left no files"]).await;
}

#[tokio::test]
async fn failing_backend_keeps_the_whole_log_and_the_exit_status() {
    let git = GitServer::start();
    let repo = git.repo("fails");
    repo.script_branch(
        "main",
        "for i in $(seq 1 3000); do echo \"output line $i\"; done\necho 'E: Unable to locate package nope' >&2\nexit 3",
    );
    let farm = Farm::start().await;
    let _slave = farm.slave("s1").await;
    farm.project("fails", &repo.url, "main").await;
    let b = fails_with(
        &farm,
        "fails",
        &["exit status 3", "E: Unable to locate package nope"],
    )
    .await;
    let log = farm.log(b.id).await;
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("output line "))
        .collect();
    assert_eq!(lines.len(), 3000, "every line is kept");
    assert_eq!(lines[2999], "output line 3000");
    assert_eq!(b.log_lines as usize, log.lines().count());
}

#[tokio::test]
async fn bad_build_requests_are_refused() {
    let git = GitServer::start();
    let repo = git.repo("r");
    repo.script_branch("main", "true");
    let farm = Farm::start().await;
    farm.project("r", &repo.url, "main").await;
    let (s, v) = farm
        .post("/api/projects/r/builds", json!({"commit": "not-a-sha"}))
        .await;
    assert_eq!((s, v["field"].as_str()), (400, Some("commit")), "{v}");
    let (s, v) = farm
        .post("/api/projects/r/builds", json!({"release": "a b"}))
        .await;
    assert_eq!((s, v["field"].as_str()), (400, Some("release")), "{v}");
    let (s, v) = farm.post("/api/projects/nope/builds", json!({})).await;
    assert_eq!(s, 404, "{v}");
    // A release of a branch that does not exist cannot be pinned: refused, nothing queued.
    let (s, v) = farm
        .post(
            "/api/projects",
            json!({"name": "gone", "branch_url": repo.url, "branch": "gone"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = farm
        .post("/api/projects/gone/builds", json!({"release": "r1"}))
        .await;
    assert_eq!(s, 422, "{v}");
    assert!(v["error"].as_str().unwrap().contains("not found"), "{v}");
    let builds: Vec<serde_json::Value> = farm.get("/api/builds?project=gone").await;
    assert!(builds.is_empty());
    let (s, v) = farm
        .post(
            "/api/projects",
            json!({"name": "r", "branch_url": repo.url}),
        )
        .await;
    assert_eq!(s, 409, "duplicate name: {v}");
}

/// The master's storage fills up mid-upload: the build fails saying so, the master carries on.
#[tokio::test]
async fn a_full_disk_on_the_master_fails_the_build_with_that_reason() {
    let Some(small) = kiln_tests::SmallDisk::mount("4m") else {
        return;
    };
    let git = GitServer::start();
    let repo = git.repo("big");
    repo.script_branch(
        "main",
        "head -c 8000000 /dev/zero > \"$KILN_OUTPUT_DIR/big.img\"",
    );
    let farm = Farm::with(kiln_tests::FarmOptions {
        extra_master_toml: format!("storage_dir = \"{}\"", small.dir.path().display()),
        ..Default::default()
    })
    .await;
    let _slave = farm.slave("s1").await;
    farm.project("big", &repo.url, "main").await;
    fails_with(&farm, "big", &["No space left on device"]).await;
    let h: serde_json::Value = farm.get("/api/health").await;
    assert_eq!(h["status"], "ok", "the master carries on");
}

/// The master's disk fills while two builds stream their logs: both fail saying "disk full", each
/// log holds only whole lines, each exactly once and in order (a failed write is cut back to the
/// last whole line, so no later write tears it), and the master keeps serving.
#[tokio::test]
async fn a_full_disk_during_two_builds_keeps_both_logs_whole() {
    let Some(small) = kiln_tests::SmallDisk::mount("3m") else {
        return;
    };
    let git = GitServer::start();
    let pad = "p".repeat(100);
    let repos: Vec<_> = ["a", "b"]
        .iter()
        .map(|tag| {
            let r = git.repo(&format!("chatty-{tag}"));
            r.script_branch(
                "main",
                &format!(
                    "seq 1 60000 | sed 's/.*/{tag} n=& {pad}/'\necho ok > \"$KILN_OUTPUT_DIR/ok\""
                ),
            );
            r
        })
        .collect();
    let farm = Farm::with(kiln_tests::FarmOptions {
        extra_master_toml: format!("storage_dir = \"{}\"", small.dir.path().display()),
        ..Default::default()
    })
    .await;
    let _slave = farm.slave_with("s1", &["--capacity", "2"]).await;
    let mut ids = vec![];
    for (tag, repo) in ["a", "b"].iter().zip(&repos) {
        farm.project(&format!("chatty-{tag}"), &repo.url, "main")
            .await;
        ids.push((
            *tag,
            farm.request_build(&format!("chatty-{tag}"), json!({}))
                .await
                .id,
        ));
    }
    let mut stored = 0;
    for (tag, id) in ids {
        let b = farm.wait_ended(id, Duration::from_secs(120)).await;
        assert_eq!(b.state, BuildState::Failed, "{tag}: {:?}", b.reason);
        let reason = b.reason.unwrap_or_default();
        // Whichever write meets the full disk first ends the build: a log frame ("disk full: …")
        // or, when the other build's log filled it while this one's last frames were in flight,
        // this build's artifact upload ("… the master's storage is full …").
        assert!(
            reason.contains("disk full") || reason.contains("storage is full"),
            "{tag}: {reason}"
        );
        let log = farm.log(id).await;
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| !l.starts_with('[') && !l.starts_with("+ ") && l.contains(" n="))
            .collect();
        stored += lines.len();
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(
                *l,
                format!("{tag} n={} {pad}", i + 1),
                "{tag}: line {i} whole, once, in order"
            );
        }
        assert_eq!(
            b.log_lines as usize,
            log.lines().count(),
            "{tag}: the index matches the file"
        );
    }
    assert!(
        stored > 0,
        "some of the logs were stored before the disk filled"
    );
    let h: serde_json::Value = farm.get("/api/health").await;
    assert_eq!(h["status"], "ok", "the master carries on");
}

#[tokio::test]
async fn a_symlink_in_the_output_dir_fails_the_build_naming_it_and_nothing_is_uploaded() {
    let git = GitServer::start();
    let repo = git.repo("sneaky");
    repo.script_branch(
        "main",
        "echo fine > \"$KILN_OUTPUT_DIR/a-fine-file\"\nln -s /etc/hostname \"$KILN_OUTPUT_DIR/evil\"",
    );
    let farm = Farm::start().await;
    let _slave = farm.slave("s1").await;
    farm.project("sneaky", &repo.url, "main").await;
    let b = fails_with(&farm, "sneaky", &["'evil'", "symbolic link"]).await;
    assert!(farm.artifacts(b.id).await.is_empty(), "nothing is uploaded");
}

#[tokio::test]
async fn a_failed_build_keeps_the_files_it_left_without_sums() {
    let git = GitServer::start();
    let repo = git.repo("half");
    repo.script_branch(
        "main",
        "echo 'E: the tool gave up at step 3' > \"$KILN_OUTPUT_DIR/tool.log\"\necho 'E: the tool gave up' >&2\nexit 4",
    );
    let farm = Farm::start().await;
    let _slave = farm.slave("s1").await;
    farm.project("half", &repo.url, "main").await;
    let b = fails_with(&farm, "half", &["exit status 4", "E: the tool gave up"]).await;
    let names = farm.artifact_names(b.id).await;
    assert_eq!(names, ["tool.log"], "kept, and not summed or signed");
    assert_eq!(
        farm.download(b.id, "tool.log").await,
        b"E: the tool gave up at step 3\n"
    );
}
