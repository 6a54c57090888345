//! The slave's git cache: a bare mirror per branch URL in `<work dir>/git-cache/`, named by the
//! sha256 of the URL, so a build fetches only what is new on its branch, or nothing at all when
//! the commit the master pinned is already there.
//!
//! The daemon works the cache, outside every sandbox (the work dir is hidden from builds), and
//! gives each build an *export* of its commit: `git archive` into a tar file in the build's
//! sandbox, which the runner unpacks inside the sandbox (`fetch::unpack`). So a build shares no
//! file with the cache (no hard link, no alternates, no worktree, no `.git` at all) and cannot
//! poison it for later builds, nor see another project's mirror.
//!
//! - **Concurrency**: each mirror has a lock file next to it (`<hash>.lock`, `flock`), held while
//!   the mirror is fetched into and exported from, so two builds of one project (two runner
//!   slots) take turns; its modification time is the mirror's last use.
//! - **Exports**: a mirror keeps its last export (`kiln-export-<commit>.tar` in its directory),
//!   so a commit built again is copied into the next build's sandbox instead of archived again
//!   (one git process less per build); a new commit's export replaces it. It counts in the size.
//! - **Size**: past `slave.git_cache_bytes`, the least recently used mirrors are removed, never
//!   one that is locked (in use).
//! - **Damage**: a mirror that fails while the remote has the branch (a fetch killed half-way, a
//!   lost object) is removed and fetched afresh, once; errors that are the remote's ("branch
//!   'relase' not found in URL (known: main, release)") are reported as they are.

use crate::fetch::{ask_remote, capture, git, run_git, validate, FetchError};
use crate::process::Log;
use kiln_shared::branch_url::UrlPolicy;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

/// The cache's directory in the slave's work dir.
pub const DIR: &str = "git-cache";

#[derive(Clone, Debug)]
pub struct GitCache {
    root: PathBuf,
    limit: u64,
}

/// Why one attempt failed: the remote's answer (final), or a mirror that looks damaged (worth
/// one fresh start).
enum Failure {
    Final(FetchError),
    Mirror(String),
}

impl From<FetchError> for Failure {
    fn from(e: FetchError) -> Self {
        Failure::Final(e)
    }
}

impl GitCache {
    /// The cache of a slave's work dir; `None` when `limit` is 0 (no cache).
    pub fn new(work_dir: &Path, limit: u64) -> Option<GitCache> {
        (limit > 0).then(|| GitCache::at(work_dir.join(DIR), limit))
    }

    pub fn at(root: PathBuf, limit: u64) -> GitCache {
        GitCache { root, limit }
    }

    fn stem(url: &str) -> String {
        hex::encode(&Sha256::digest(url.as_bytes())[..16])
    }

    /// The mirror of `url`.
    pub fn mirror(&self, url: &str) -> PathBuf {
        self.root.join(format!("{}.git", GitCache::stem(url)))
    }

    fn lock_path(&self, url: &str) -> PathBuf {
        self.root.join(format!("{}.lock", GitCache::stem(url)))
    }

    /// Writes to `archive` a tar of the commit to build (`commit`, else the head of `branch`)
    /// from the mirror of `url`, fetching only what the mirror lacks; returns the full commit id.
    pub async fn export(
        &self,
        url: &str,
        branch: &str,
        commit: Option<&str>,
        allow_file: bool,
        archive: &Path,
        log: &Log,
    ) -> Result<String, FetchError> {
        validate(url, branch, commit, allow_file)?;
        private_dir(&self.root).map_err(|e| {
            FetchError::Local(format!(
                "cannot create the git cache {}: {e}",
                self.root.display()
            ))
        })?;
        let lock = self.lock(url, log).await?;
        let job = Job {
            cache: self,
            url,
            branch,
            commit,
            allow_file,
            archive,
            log,
        };
        let result = match job.attempt().await {
            Ok(c) => Ok(c),
            Err(Failure::Final(e)) => Err(e),
            Err(Failure::Mirror(why)) => {
                log.note(&format!(
                    "git cache: the mirror of {url} is unusable ({why}); fetching it afresh"
                ));
                match std::fs::remove_dir_all(self.mirror(url)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => Err(FetchError::Local(
                        format!("cannot remove the damaged mirror of {url}: {e}"),
                    )),
                    _ => match job.attempt().await {
                        Ok(c) => Ok(c),
                        Err(Failure::Final(e)) => Err(e),
                        Err(Failure::Mirror(why)) => {
                            Err(FetchError::Local(format!("git cache: {why}")))
                        }
                    },
                }
            }
        };
        // While this mirror is still locked: it is never the one removed.
        let (root, limit) = (self.root.clone(), self.limit);
        match tokio::task::spawn_blocking(move || evict(&root, limit)).await {
            Ok(Ok(removed)) => {
                for (name, size) in removed {
                    tracing::info!(
                        "git cache: removed the least recently used mirror {name} ({size} bytes)"
                    );
                }
            }
            Ok(Err(e)) => tracing::warn!("git cache: cannot trim the cache: {e}"),
            Err(e) => tracing::warn!("git cache: trimming panicked: {e}"),
        }
        drop(lock);
        result
    }

    /// Takes the mirror's lock (waiting while another build has it) and marks it used now.
    async fn lock(&self, url: &str, log: &Log) -> Result<File, FetchError> {
        let path = self.lock_path(url);
        let (log, url) = (log.clone(), url.to_string());
        tokio::task::spawn_blocking(move || loop {
            let f = open_lock(&path)?;
            match f.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    log.note(&format!(
                        "git cache: waiting for another build using the mirror of {url}"
                    ));
                    f.lock()?;
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
            // A lock file removed with its mirror (`evict`) while this one waited for it: take
            // the new one.
            if same_file(&f, &path) {
                f.set_modified(SystemTime::now())?;
                return Ok(f);
            }
        })
        .await
        .map_err(|e| FetchError::Local(format!("git cache: {e}")))?
        .map_err(|e| FetchError::Local(format!("git cache: cannot lock a mirror: {e}")))
    }
}

/// One export, with everything it needs.
struct Job<'a> {
    cache: &'a GitCache,
    url: &'a str,
    branch: &'a str,
    commit: Option<&'a str>,
    allow_file: bool,
    archive: &'a Path,
    log: &'a Log,
}

impl Job<'_> {
    fn git(&self, mirror: &Path) -> tokio::process::Command {
        let mut c = git(&self.cache.root, self.allow_file);
        // The daemon's environment is not git's business (its token least of all); HOME is the
        // cache, which has no git config.
        c.env_clear()
            .envs(std::env::vars().filter(|(k, _)| {
                crate::supervisor::BUILD_ENV_ALLOWED.contains(&k.as_str()) && k != "HOME"
            }))
            .env("HOME", &self.cache.root)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "true")
            .env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
            .env(
                "GIT_ALLOW_PROTOCOL",
                UrlPolicy {
                    allow_file: self.allow_file,
                }
                .git_allow_protocol(),
            )
            .arg("--git-dir")
            .arg(mirror)
            // A build cancelled during its fetch drops it: git goes too.
            .kill_on_drop(true);
        c
    }

    /// The full id of `rev` if the mirror has it as a commit.
    async fn resolve(&self, mirror: &Path, rev: &str) -> Option<String> {
        let mut c = self.git(mirror);
        c.args(["rev-parse", "-q", "--verify", &format!("{rev}^{{commit}}")]);
        match capture(c).await {
            Ok((true, out, _)) => Some(out.trim().to_string()),
            _ => None,
        }
    }

    /// The head of the branch as the server advertises it, when the mirror already has that
    /// commit (`git://` and smart HTTP, see `git_refs.rs`; the object store read in-process,
    /// `git_objects.rs`).
    async fn advertised_and_present(&self, mirror: &Path) -> Option<String> {
        let head = crate::git_refs::advertised_head(self.url, self.branch).await?;
        let head = head.to_ascii_lowercase();
        crate::git_objects::has_object(mirror, &head).then_some(head)
    }

    async fn fetch(&self, mirror: &Path, what: &str) -> Result<bool, FetchError> {
        let mut f = self.git(mirror);
        f.args([
            "fetch",
            "-q",
            "--no-tags",
            "--no-write-fetch-head",
            "--",
            self.url,
            what,
        ]);
        run_git(f, self.log).await
    }

    async fn attempt(&self) -> Result<String, Failure> {
        let (url, branch, log) = (self.url, self.branch, self.log);
        let mirror = self.cache.mirror(url);
        let fresh = !(mirror.join("HEAD").is_file() && mirror.join("objects").is_dir());
        if fresh {
            let _ = std::fs::remove_dir_all(&mirror);
            let mut init = git(&self.cache.root, self.allow_file);
            init.args(["init", "-q", "--bare", "--"])
                .arg(&mirror)
                .kill_on_drop(true);
            if !run_git(init, log).await? {
                return Err(FetchError::Local("git cache: git init failed".into()).into());
            }
            // Exports are checkouts: the branch's .gitattributes may not leave files out or
            // rewrite them (export-ignore, export-subst); gc never runs in the background, after
            // the lock is released.
            let setup = std::fs::write(
                mirror.join("info").join("attributes"),
                "* -export-ignore -export-subst\n",
            );
            let mut cfg = self.git(&mirror);
            cfg.args(["config", "gc.autoDetach", "false"]);
            if setup.is_err() || !run_git(cfg, log).await? {
                return Err(
                    FetchError::Local("git cache: cannot set up a new mirror".into()).into(),
                );
            }
            log.note(&format!("git cache: new mirror of {url}"));
        }
        let present = match self.commit {
            Some(c) => self.resolve(&mirror, c).await,
            None if !fresh => self.advertised_and_present(&mirror).await,
            None => None,
        };
        let sha = match (present, self.commit) {
            (Some(sha), Some(c)) => {
                log.note(&format!("git cache: commit {c} already present, no fetch"));
                sha
            }
            (Some(sha), None) => {
                log.note(&format!(
                    "git cache: branch '{branch}' is at {sha} on the server, already present, no fetch"
                ));
                sha
            }
            (_, commit) => {
                let head = format!("refs/heads/{branch}");
                let before = self.resolve(&mirror, &head).await;
                log.note(&format!(
                    "fetching {url} branch '{branch}'{} into the git cache",
                    commit.map(|c| format!(" for {c}")).unwrap_or_default()
                ));
                let began = Instant::now();
                if !self.fetch(&mirror, &format!("+{head}:{head}")).await? {
                    return Err(
                        match ask_remote(url, branch, self.allow_file, &self.cache.root).await {
                            Some(e) => Failure::Final(e),
                            None if !fresh => Failure::Mirror("git fetch failed".into()),
                            None => Failure::Final(FetchError::Unreachable {
                                url: url.into(),
                                message: "git fetch failed (see the log above)".into(),
                            }),
                        },
                    );
                }
                let after = self.resolve(&mirror, &head).await;
                let ms = began.elapsed().as_millis();
                match (&after, before == after) {
                    (Some(a), true) => log.note(&format!(
                        "git cache: branch '{branch}' unchanged at {a} ({ms} ms)"
                    )),
                    (Some(a), false) => log.note(&format!(
                        "git cache: branch '{branch}' updated to {a} ({ms} ms)"
                    )),
                    (None, _) => {
                        return Err(Failure::Mirror(format!(
                            "branch '{branch}' is not in the mirror after a fetch"
                        )))
                    }
                }
                match commit {
                    None => after.expect("checked above"),
                    Some(c) => match self.resolve(&mirror, c).await {
                        Some(sha) => sha,
                        None => {
                            // Not on the branch (any more): a server may still give it by id.
                            if c.len() == 40 {
                                let _ = self.fetch(&mirror, c).await?;
                            }
                            match self.resolve(&mirror, c).await {
                                Some(sha) => sha,
                                None if !fresh => {
                                    return Err(Failure::Mirror(format!(
                                        "commit {c} is not in the mirror after a fetch"
                                    )))
                                }
                                None => {
                                    return Err(Failure::Final(FetchError::NoSuchCommit {
                                        commit: c.into(),
                                        branch: branch.into(),
                                        url: url.into(),
                                    }))
                                }
                            }
                        }
                    },
                }
            }
        };
        let kept = mirror.join(format!("{KEPT_EXPORT}{sha}.tar"));
        match tokio::fs::copy(&kept, self.archive).await {
            Ok(_) => return Ok(sha),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("git cache: cannot copy the kept export of {sha}: {e}"),
        }
        // Archived in the mirror's directory, never in the build's (which its user owns), kept
        // there, then copied into the sandbox.
        let part = mirror.join(format!("{KEPT_EXPORT}part"));
        let mut export = self.git(&mirror);
        export
            .args(["archive", "--format=tar", "-o"])
            .arg(&part)
            .args([&sha, "--"]);
        let (ok, _, err) = capture(export).await?;
        if !ok {
            let _ = std::fs::remove_file(&part);
            return Err(Failure::Mirror(format!(
                "git archive failed: {}",
                err.lines()
                    .rfind(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .trim()
            )));
        }
        let from = match keep_export(&mirror, &part, &kept).await {
            Ok(()) => &kept,
            Err(e) => {
                tracing::warn!("git cache: cannot keep the export of {sha}: {e}");
                if part.exists() {
                    &part
                } else {
                    &kept
                }
            }
        };
        let copied = tokio::fs::copy(from, self.archive).await;
        let _ = std::fs::remove_file(&part);
        copied.map_err(|e| {
            FetchError::Local(format!(
                "cannot copy the export of {sha} into the build's directory: {e}"
            ))
        })?;
        Ok(sha)
    }
}

/// The start of the name of the export a mirror keeps (`kiln-export-<commit>.tar`, in the
/// mirror's directory, where git ignores it): its last one, so a commit built again (a nightly
/// without a new push, builds fanned out from one commit) is copied, not archived again.
const KEPT_EXPORT: &str = "kiln-export-";

/// Makes `part`, the export just archived, the mirror's kept export `kept`, in place of the
/// one kept before: on disk before it is renamed, so a kept export is whole even after a crash.
/// Under the mirror's lock.
async fn keep_export(mirror: &Path, part: &Path, kept: &Path) -> io::Result<()> {
    let mut dir = tokio::fs::read_dir(mirror).await?;
    while let Some(e) = dir.next_entry().await? {
        let name = e.file_name();
        if name.to_string_lossy().starts_with(KEPT_EXPORT) && e.path() != part {
            tokio::fs::remove_file(e.path()).await?;
        }
    }
    let (part, kept, mirror) = (part.to_owned(), kept.to_owned(), mirror.to_owned());
    tokio::task::spawn_blocking(move || {
        File::open(&part)?.sync_all()?;
        std::fs::rename(&part, &kept)?;
        File::open(&mirror)?.sync_all()
    })
    .await
    .map_err(io::Error::other)?
}

fn open_lock(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Whether `f` is still the file at `path`.
fn same_file(f: &File, path: &Path) -> bool {
    match (f.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn private_dir(p: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(p)?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700))
}

/// Bytes of the files under `p` (links not followed).
fn size_of(p: &Path) -> u64 {
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if !m.is_dir() {
        return m.len();
    }
    let mut total = 0;
    crate::tree::walk(p, |_, m| {
        if !m.is_dir() {
            total += m.len();
        }
    });
    total
}

/// Removes the least recently used mirrors until the cache holds at most `limit` bytes, skipping
/// those in use (locked). Returns the names and sizes of those removed.
pub fn evict(root: &Path, limit: u64) -> io::Result<Vec<(String, u64)>> {
    let mut mirrors = vec![];
    for e in std::fs::read_dir(root)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".git") else {
            continue;
        };
        if !e.file_type()?.is_dir() {
            continue;
        }
        let lock = root.join(format!("{stem}.lock"));
        let used = std::fs::metadata(&lock)
            .or_else(|_| e.metadata())
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        mirrors.push((used, name, e.path(), lock, size_of(&e.path())));
    }
    let mut total: u64 = mirrors.iter().map(|m| m.4).sum();
    mirrors.sort();
    let mut removed = vec![];
    for (_, name, path, lock_path, size) in mirrors {
        if total <= limit {
            break;
        }
        let lock = open_lock(&lock_path)?;
        if lock.try_lock().is_err() || !same_file(&lock, &lock_path) {
            continue;
        }
        std::fs::remove_dir_all(&path)?;
        // Whoever waits on this lock file sees it gone and takes a new one (`GitCache::lock`).
        let _ = std::fs::remove_file(&lock_path);
        total -= size;
        removed.push((name, size));
    }
    Ok(removed)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::process::Command;

    /// A scratch dir with repositories made in it (removed on drop) and a build log.
    pub(crate) struct Fixture {
        pub(crate) root: PathBuf,
        log_path: PathBuf,
        log: Log,
    }

    impl Fixture {
        pub(crate) fn new(name: &str) -> Fixture {
            let root =
                std::env::temp_dir().join(format!("kiln-git-cache-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            std::fs::create_dir_all(&root).unwrap();
            let log_path = root.join("log");
            let log = Log::open(&log_path).unwrap();
            Fixture {
                root,
                log_path,
                log,
            }
        }

        fn log_text(&self) -> String {
            std::fs::read_to_string(&self.log_path).unwrap()
        }

        fn cache(&self, limit: u64) -> GitCache {
            GitCache::at(self.root.join("cache"), limit)
        }

        /// A repository with `file` = `content` committed on main; returns its file:// URL.
        pub(crate) fn remote(&self, name: &str) -> String {
            let dir = self.root.join(name);
            std::fs::create_dir_all(&dir).unwrap();
            sh(&dir, &["init", "-q", "-b", "main"]);
            format!("file://{}", dir.display())
        }

        /// Commits `file` = `content` in the repository `name`; returns the commit's id.
        pub(crate) fn commit(&self, name: &str, content: &str) -> String {
            let dir = self.root.join(name);
            std::fs::write(dir.join("file"), content).unwrap();
            sh(&dir, &["add", "-A"]);
            sh(
                &dir,
                &[
                    "-c",
                    "user.name=t",
                    "-c",
                    "user.email=t@t",
                    "commit",
                    "-qm",
                    content,
                ],
            );
            sh(&dir, &["rev-parse", "HEAD"])
        }

        async fn export(
            &self,
            cache: &GitCache,
            url: &str,
            commit: Option<&str>,
        ) -> Result<(String, String), FetchError> {
            let archive = self.root.join("out.tar");
            let sha = cache
                .export(url, "main", commit, true, &archive, &self.log)
                .await?;
            // The export is a plain tree: the file, and no .git.
            let dest = self.root.join("unpacked");
            let _ = std::fs::remove_dir_all(&dest);
            std::fs::create_dir_all(&dest).unwrap();
            let ok = Command::new("tar")
                .arg("-xf")
                .arg(&archive)
                .arg("-C")
                .arg(&dest)
                .status()
                .unwrap()
                .success();
            assert!(ok);
            assert!(!dest.join(".git").exists());
            Ok((sha, std::fs::read_to_string(dest.join("file")).unwrap()))
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    /// Runs git in `dir`, asserting it succeeds; its trimmed output.
    pub(crate) fn sh(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .current_dir(dir)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    #[tokio::test]
    async fn new_commits_are_fetched_and_a_pinned_commit_present_is_not() {
        let f = Fixture::new("pinned");
        let url = f.remote("r");
        let c1 = f.commit("r", "one");
        let cache = f.cache(1 << 30);
        assert_eq!(
            f.export(&cache, &url, None).await.unwrap(),
            (c1.clone(), "one".into())
        );
        assert!(f.log_text().contains("git cache: new mirror of"));
        let c2 = f.commit("r", "two");
        assert_eq!(
            f.export(&cache, &url, None).await.unwrap(),
            (c2.clone(), "two".into())
        );
        assert!(f
            .log_text()
            .contains(&format!("git cache: branch 'main' updated to {c2}")));
        // With the remote gone, pinned commits the mirror has still export: no fetch at all.
        std::fs::rename(f.root.join("r"), f.root.join("gone")).unwrap();
        assert_eq!(
            f.export(&cache, &url, Some(&c1)).await.unwrap(),
            (c1.clone(), "one".into())
        );
        assert!(f
            .log_text()
            .contains(&format!("git cache: commit {c1} already present, no fetch")));
        assert_eq!(f.export(&cache, &url, Some(&c2[..12])).await.unwrap().0, c2);
        // The branch head needs the remote: its error is the remote's.
        let e = f.export(&cache, &url, None).await.unwrap_err();
        assert!(matches!(e, FetchError::Unreachable { .. }), "{e}");
    }

    #[tokio::test]
    async fn a_commit_exported_again_is_copied_from_the_kept_export() {
        let f = Fixture::new("kept");
        let url = f.remote("r");
        let c1 = f.commit("r", "one");
        let cache = f.cache(1 << 30);
        let mirror = cache.mirror(&url);
        let kept = |sha: &str| mirror.join(format!("{KEPT_EXPORT}{sha}.tar"));
        let exports = || {
            std::fs::read_dir(&mirror)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.starts_with(KEPT_EXPORT))
                .collect::<Vec<_>>()
        };
        assert_eq!(f.export(&cache, &url, None).await.unwrap().1, "one");
        assert_eq!(exports(), [format!("{KEPT_EXPORT}{c1}.tar")]);
        // The next build of that commit gets the kept export (here made to say so), git
        // archives nothing.
        let other = f.root.join("other");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("file"), "from the kept export").unwrap();
        let made = Command::new("tar")
            .arg("-cf")
            .arg(kept(&c1))
            .args(["-C", other.to_str().unwrap(), "file"])
            .status()
            .unwrap();
        assert!(made.success());
        assert_eq!(
            f.export(&cache, &url, Some(&c1)).await.unwrap().1,
            "from the kept export"
        );
        // A new commit's export takes the place of the old one.
        let c2 = f.commit("r", "two");
        assert_eq!(f.export(&cache, &url, None).await.unwrap().1, "two");
        assert_eq!(exports(), [format!("{KEPT_EXPORT}{c2}.tar")]);
    }

    #[tokio::test]
    async fn errors_name_the_branches_and_the_missing_commit() {
        let f = Fixture::new("errors");
        let url = f.remote("r");
        f.commit("r", "one");
        let cache = f.cache(1 << 30);
        let e = cache
            .export(&url, "relase", None, true, &f.root.join("t"), &f.log)
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("branch 'relase' not found in {url} (known: main)")
        );
        let missing = "0123456789abcdef0123456789abcdef01234567";
        let e = f.export(&cache, &url, Some(missing)).await.unwrap_err();
        assert!(matches!(e, FetchError::NoSuchCommit { .. }), "{e}");
        // The mirror is fine for the next build.
        assert!(f.export(&cache, &url, None).await.is_ok());
    }

    #[tokio::test]
    async fn a_damaged_mirror_is_fetched_afresh() {
        let f = Fixture::new("damaged");
        let url = f.remote("r");
        let c1 = f.commit("r", "one");
        let cache = f.cache(1 << 30);
        f.export(&cache, &url, None).await.unwrap();
        let mirror = cache.mirror(&url);
        // A fetch killed half-way leaves its ref lock behind: the next fetch fails on it.
        std::fs::write(mirror.join("refs/heads/main.lock"), "").unwrap();
        let c2 = f.commit("r", "two");
        assert_eq!(
            f.export(&cache, &url, None).await.unwrap(),
            (c2, "two".into())
        );
        assert!(f.log_text().contains("is unusable"), "{}", f.log_text());
        // Objects lost: the pinned commit is no longer there, nor readable.
        let objects = mirror.join("objects");
        std::fs::remove_dir_all(&objects).unwrap();
        std::fs::create_dir_all(objects.join("pack")).unwrap();
        assert_eq!(
            f.export(&cache, &url, Some(&c1)).await.unwrap(),
            (c1, "one".into())
        );
    }

    #[tokio::test]
    async fn a_mirror_in_use_is_waited_for() {
        let f = Fixture::new("lock");
        let url = f.remote("r");
        let c1 = f.commit("r", "one");
        let cache = f.cache(1 << 30);
        std::fs::create_dir_all(&cache.root).unwrap();
        // Another build holds the mirror.
        let held = open_lock(&cache.lock_path(&url)).unwrap();
        held.lock().unwrap();
        let (c, u, log, archive) = (
            cache.clone(),
            url.clone(),
            f.log.clone(),
            f.root.join("t.tar"),
        );
        let task =
            tokio::spawn(async move { c.export(&u, "main", None, true, &archive, &log).await });
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        while !f.log_text().contains("waiting for another build") {
            assert!(Instant::now() < deadline, "{}", f.log_text());
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(!task.is_finished());
        assert!(!cache.mirror(&url).exists(), "nothing fetched while locked");
        drop(held);
        assert_eq!(task.await.unwrap().unwrap(), c1);
    }

    #[tokio::test]
    async fn the_cache_keeps_to_its_size_and_never_removes_the_mirror_in_use() {
        let f = Fixture::new("size");
        let (a, b) = (f.remote("a"), f.remote("b"));
        f.commit("a", "a");
        f.commit("b", "b");
        // A limit smaller than one mirror: each export removes every other mirror, never its own.
        let cache = f.cache(1);
        f.export(&cache, &a, None).await.unwrap();
        assert!(cache.mirror(&a).exists());
        f.export(&cache, &b, None).await.unwrap();
        assert!(!cache.mirror(&a).exists(), "the least recently used goes");
        assert!(cache.mirror(&b).exists(), "the one in use stays");
    }

    #[test]
    fn eviction_takes_the_least_recently_used_and_skips_locked_mirrors() {
        let f = Fixture::new("lru");
        let root = f.root.join("cache");
        let now = SystemTime::now();
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            let m = root.join(format!("{name}.git"));
            std::fs::create_dir_all(&m).unwrap();
            std::fs::write(m.join("data"), vec![0u8; 100]).unwrap();
            let lock = open_lock(&root.join(format!("{name}.lock"))).unwrap();
            // a is the oldest, c the newest.
            lock.set_modified(now - std::time::Duration::from_secs(100 - i as u64 * 10))
                .unwrap();
        }
        let gone = |n: &str| !root.join(format!("{n}.git")).exists();
        assert!(evict(&root, 300).unwrap().is_empty());
        // a is in use: b goes instead.
        let a = open_lock(&root.join("a.lock")).unwrap();
        a.lock().unwrap();
        assert_eq!(evict(&root, 200).unwrap(), vec![("b.git".to_string(), 100)]);
        assert!(!gone("a") && gone("b") && !gone("c"));
        // Released, a is the least recently used again. c is held meanwhile: until a child
        // process another test forks right now has exec'd, it shares the descriptor of a's
        // lock (and so its flock), and eviction must then skip a, never take c instead.
        let c = open_lock(&root.join("c.lock")).unwrap();
        c.lock().unwrap();
        drop(a);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let removed = evict(&root, 100).unwrap();
            if !removed.is_empty() {
                assert_eq!(removed, vec![("a.git".to_string(), 100)]);
                break;
            }
            assert!(std::time::Instant::now() < deadline, "a stayed locked");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(gone("a") && !gone("c"));
    }

    /// `cargo test -p kiln-slave bench_fetch -- --ignored --nocapture`: a fresh shallow fetch and
    /// checkout (no cache) against the cache's export and unpack, on a small repository.
    #[tokio::test]
    #[ignore]
    async fn bench_fetch() {
        let f = Fixture::new("bench");
        let url = f.remote("r");
        for i in 0..30 {
            std::fs::write(f.root.join("r").join(format!("f{i}")), "x".repeat(2000)).unwrap();
        }
        let c1 = f.commit("r", "one");
        let cache = f.cache(1 << 30);
        let archive = f.root.join("x.tar");
        let ms = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;
        let (mut old, mut hit, mut update) = (vec![], vec![], vec![]);
        for i in 0..10 {
            let dest = f.root.join(format!("old{i}"));
            let t = Instant::now();
            crate::fetch::fetch(&url, "main", None, true, &dest, &f.log)
                .await
                .unwrap();
            old.push(ms(t));
            let dest = f.root.join(format!("new{i}"));
            std::fs::create_dir_all(&dest).unwrap();
            let t = Instant::now();
            cache
                .export(&url, "main", Some(&c1), true, &archive, &f.log)
                .await
                .unwrap();
            crate::fetch::unpack(&archive, &dest, &c1, &f.log)
                .await
                .unwrap();
            hit.push(ms(t));
            let dest = f.root.join(format!("upd{i}"));
            std::fs::create_dir_all(&dest).unwrap();
            let t = Instant::now();
            let c = cache
                .export(&url, "main", None, true, &archive, &f.log)
                .await
                .unwrap();
            crate::fetch::unpack(&archive, &dest, &c, &f.log)
                .await
                .unwrap();
            update.push(ms(t));
        }
        let med = |v: &mut Vec<f64>| {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap());
            v[v.len() / 2]
        };
        eprintln!(
            "median of 10: shallow fetch + checkout {:.1} ms; cache, pinned commit present {:.1} ms; cache, branch fetched (nothing new) {:.1} ms",
            med(&mut old),
            med(&mut hit),
            med(&mut update)
        );
    }
}
