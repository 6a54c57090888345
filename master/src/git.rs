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
