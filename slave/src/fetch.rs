//! Fetching the configuration branch: a shallow git fetch into a fresh directory (when the slave
//! has no git cache, `git_cache.rs`), with errors a person can act on ("branch 'relase' not
//! found in URL (known: main, release)"); and unpacking the commit the daemon exported from its
//! cache.

use crate::process::{self, Log};
use kiln_shared::branch_url::{
    validate_branch_name, validate_branch_url, validate_commit, UrlPolicy,
};
use std::path::Path;
use tokio::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Invalid(String),
    #[error("branch '{branch}' not found in {url} (known: {known})")]
    NoSuchBranch {
        branch: String,
        url: String,
        known: String,
    },
    #[error("commit {commit} not found on branch '{branch}' of {url}")]
    NoSuchCommit {
        commit: String,
        branch: String,
        url: String,
    },
    #[error("cannot fetch {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("{0}")]
    Local(String),
}

pub(crate) fn git(dir: &Path, allow_file: bool) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ASKPASS", "true")
        .env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
        .env(
            "GIT_ALLOW_PROTOCOL",
            UrlPolicy { allow_file }.git_allow_protocol(),
        )
        .args([
            "-c",
            "advice.detachedHead=false",
            "-c",
            "init.defaultBranch=main",
        ]);
    c
}

/// Runs git (or another tool of the fetch), logging its output; returns whether it succeeded.
pub(crate) async fn run_git(cmd: Command, log: &Log) -> Result<bool, FetchError> {
    match process::run(cmd, log).await {
        Ok(s) => Ok(s.success()),
        Err(e) => Err(FetchError::Local(e.to_string())),
    }
}

pub(crate) async fn capture(mut cmd: Command) -> Result<(bool, String, String), FetchError> {
    let out = cmd
        .output()
        .await
        .map_err(|e| FetchError::Local(format!("cannot run git: {e}")))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// After a failed fetch: asks the remote what it has, to tell a missing branch from a dead
/// server ("branch 'relase' not found in URL (known: main, release)").
async fn diagnose(url: &str, branch: &str, allow_file: bool, dest: &Path) -> FetchError {
    ask_remote(url, branch, allow_file, dest)
        .await
        .unwrap_or_else(|| FetchError::Unreachable {
            url: url.into(),
            message: "git fetch failed (see the log above)".into(),
        })
}

/// What the remote says after a failed fetch: the server cannot be reached, or the branch is not
/// there (naming those that are); `None` when the branch is there (so the fetch failed on this
/// side, or in the middle of the transfer).
pub(crate) async fn ask_remote(
    url: &str,
    branch: &str,
    allow_file: bool,
    dir: &Path,
) -> Option<FetchError> {
    let mut ls = git(dir, allow_file);
    ls.args(["ls-remote", "--heads", "--", url]);
    let (ok, out, err) = match capture(ls).await {
        Ok(r) => r,
        Err(e) => return Some(e),
    };
    if !ok {
        let message = err
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or("git ls-remote failed")
            .trim()
            .to_string();
        return Some(FetchError::Unreachable {
            url: url.into(),
            message,
        });
    }
    let mut known: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1)?.strip_prefix("refs/heads/"))
        .collect();
    if !known.contains(&branch) {
        known.sort();
        return Some(FetchError::NoSuchBranch {
            branch: branch.into(),
            url: url.into(),
            known: if known.is_empty() {
                "no branches".into()
            } else {
                known.join(", ")
            },
        });
    }
    None
}

/// Unpacks the export of a commit the daemon made from its git cache (`git_cache.rs`) into the
/// build's `dest`, inside the sandbox, then removes it: the checkout shares nothing with the
/// cache.
pub async fn unpack(
    archive: &Path,
    dest: &Path,
    commit: &str,
    log: &Log,
) -> Result<(), FetchError> {
    // In this process (no `tar` to start): entries stay inside `dest`, owners are not kept,
    // file modes (the executable bit) and times are.
    let (from, to) = (archive.to_path_buf(), dest.to_path_buf());
    let unpacked = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let file = std::fs::File::open(&from)?;
        let mut tar = tar::Archive::new(std::io::BufReader::new(file));
        tar.set_overwrite(true);
        tar.unpack(&to)
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    let _ = std::fs::remove_file(archive);
    if let Err(e) = unpacked {
        return Err(FetchError::Local(format!(
            "cannot unpack commit {commit} into {}: {e}",
            dest.display()
        )));
    }
    log.note(&format!("checked out {commit}"));
    Ok(())
}

/// Checks what the master sent before git sees any of it: the URL against the protocol policy,
/// the branch name and the commit id. Both ways of fetching (the git cache, the sandbox's own
/// shallow fetch) start here.
pub fn validate(
    url: &str,
    branch: &str,
    commit: Option<&str>,
    allow_file: bool,
) -> Result<(), FetchError> {
    validate_branch_url(url, UrlPolicy { allow_file }).map_err(FetchError::Invalid)?;
    validate_branch_name(branch).map_err(FetchError::Invalid)?;
    if let Some(c) = commit {
        validate_commit(c).map_err(FetchError::Invalid)?;
    }
    Ok(())
}

/// Fetches `branch` (or `commit` on it) of `url` into `dest`; returns the commit SHA checked out.
pub async fn fetch(
    url: &str,
    branch: &str,
    commit: Option<&str>,
    allow_file: bool,
    dest: &Path,
    log: &Log,
) -> Result<String, FetchError> {
    validate(url, branch, commit, allow_file)?;
    std::fs::create_dir_all(dest)
        .map_err(|e| FetchError::Local(format!("cannot create {}: {e}", dest.display())))?;

    let mut init = git(dest, allow_file);
    init.args(["init", "-q", "."]);
    if !run_git(init, log).await? {
        return Err(FetchError::Local("git init failed".into()));
    }
    let refspec = format!("+refs/heads/{branch}:refs/remotes/origin/{branch}");
    let mut f = git(dest, allow_file);
    match commit {
        // A full SHA can be fetched alone; an abbreviated one needs the branch history.
        Some(c) if c.len() == 40 => {
            f.args(["fetch", "-q", "--depth", "1", "--", url, c]);
        }
        Some(_) => {
            f.args(["fetch", "-q", "--", url, &refspec]);
        }
        None => {
            f.args(["fetch", "-q", "--depth", "1", "--", url, &refspec]);
        }
    }
    log.note(&format!(
        "fetching {url} branch '{branch}'{}",
        commit.map(|c| format!(" at {c}")).unwrap_or_default()
    ));
    let mut fetched = run_git(f, log).await?;
    if !fetched && commit.is_some() {
        // Servers that refuse fetching by SHA: take the branch and look for the commit in it.
        let mut f = git(dest, allow_file);
        f.args(["fetch", "-q", "--", url, &refspec]);
        fetched = run_git(f, log).await?;
    }
    if !fetched {
        return Err(diagnose(url, branch, allow_file, dest).await);
    }
    let target = match commit {
        Some(c) => c.to_string(),
        None => format!("refs/remotes/origin/{branch}"),
    };
    let mut co = git(dest, allow_file);
    co.args(["checkout", "-q", "--detach", &target, "--"]);
    if !run_git(co, log).await? {
        return Err(match commit {
            Some(c) => FetchError::NoSuchCommit {
                commit: c.into(),
                branch: branch.into(),
                url: url.into(),
            },
            None => FetchError::Local("git checkout failed".into()),
        });
    }
    let mut rev = git(dest, allow_file);
    rev.args(["rev-parse", "HEAD"]);
    let (ok, sha, err) = capture(rev).await?;
    if !ok {
        return Err(FetchError::Local(format!(
            "git rev-parse failed: {}",
            err.trim()
        )));
    }
    let sha = sha.trim().to_string();
    log.note(&format!("checked out {sha}"));
    Ok(sha)
}
