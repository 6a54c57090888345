//! The little git the master does itself: resolving a branch head (to pin release builds).

use std::time::Duration;
use tokio::process::Command;

/// Commit SHA of `branch` at `url`, or a message saying why it cannot be had.
pub async fn branch_head(url: &str, branch: &str, allow_file: bool) -> Result<String, String> {
    let mut cmd = Command::new("git");
    cmd.args(["ls-remote", "--heads", "--", url])
        .arg(format!("refs/heads/{branch}"))
        .env("GIT_TERMINAL_PROMPT", "0")
        .env(
            "GIT_ALLOW_PROTOCOL",
            kiln_shared::branch_url::UrlPolicy { allow_file }.git_allow_protocol(),
        )
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .map_err(|_| format!("{url} did not answer within 60 s"))?
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cannot reach {url}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .map(str::to_string)
        .ok_or_else(|| format!("branch '{branch}' not found in {url}"))
}

/// The most commits a comparison of two builds lists.
const MAX_COMMITS: usize = 200;

/// The commits after `from` up to `to` on `branch` at `url` (newest first, at most
/// [`MAX_COMMITS`]), read from a throw-away fetch of the branch into `tmp`; a message a person
/// can read when they cannot be had (the remote is gone, the branch was rewritten).
pub async fn commits_between(
    url: &str,
    branch: &str,
    from: &str,
    to: &str,
    allow_file: bool,
    tmp: &std::path::Path,
) -> Result<Vec<kiln_shared::record::Commit>, String> {
    for c in [from, to] {
        kiln_shared::branch_url::validate_commit(c)
            .map_err(|e| format!("'{c}' is not a commit id: {e}"))?;
    }
    tokio::fs::create_dir_all(tmp)
        .await
        .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("history-")
        .tempdir_in(tmp)
        .map_err(|e| format!("cannot create a directory in {}: {e}", tmp.display()))?;
    let git = |args: &[&str]| {
        let mut c = Command::new("git");
        c.arg("-C")
            .arg(dir.path())
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env(
                "GIT_ALLOW_PROTOCOL",
                kiln_shared::branch_url::UrlPolicy { allow_file }.git_allow_protocol(),
            )
            .kill_on_drop(true);
        c
    };
    let run = |mut c: Command, what: &'static str| async move {
        let out = tokio::time::timeout(Duration::from_secs(60), c.output())
            .await
            .map_err(|_| format!("{what} took longer than 60 s"))?
            .map_err(|e| format!("cannot run git: {e}"))?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(format!(
                "{what} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    run(git(&["init", "-q", "--bare"]), "git init").await?;
    run(
        git(&[
            "fetch",
            "-q",
            "--no-tags",
            "--",
            url,
            &format!("refs/heads/{branch}"),
        ]),
        "fetching the branch's history",
    )
    .await?;
    let out = run(
        git(&[
            "log",
            "--format=%H%x1f%s",
            &format!("--max-count={MAX_COMMITS}"),
            &format!("{from}..{to}"),
            "--",
        ]),
        "reading the history between the two commits",
    )
    .await
    .map_err(|e| format!("{e} (one of the commits is no longer on branch '{branch}'?)"))?;
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .filter_map(|l| l.split_once('\x1f'))
        .map(|(id, subject)| kiln_shared::record::Commit {
            id: id.to_string(),
            subject: subject.to_string(),
        })
        .collect())
}
