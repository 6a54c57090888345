//! Validation of configuration branch URLs and branch names, before anything is handed to git.
//!
//! Refused: empty or over-long URLs, whitespace or control characters, anything starting with `-`
//! (it would be read as an option), git's remote-helper syntax (`ext::`, `fd::`, any `x::y`), and
//! schemes other than `https`, `http`, `git` and `ssh` (plus scp-style `user@host:path`).
//! `file:` URLs and local paths are accepted only when the master's configuration allows them.

/// Schemes accepted for configuration branches.
pub const NETWORK_SCHEMES: [&str; 4] = ["https", "http", "git", "ssh"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UrlPolicy {
    pub allow_file: bool,
}

impl UrlPolicy {
    /// The value for git's `GIT_ALLOW_PROTOCOL`, so git itself refuses anything else (even
    /// through a redirect or a submodule).
    pub fn git_allow_protocol(self) -> &'static str {
        if self.allow_file {
            "https:http:git:ssh:file"
        } else {
            "https:http:git:ssh"
        }
    }
}

pub fn validate_branch_url(url: &str, policy: UrlPolicy) -> Result<(), String> {
    if url.is_empty() {
        return Err("branch URL is empty".into());
    }
    if url.len() > 2048 {
        return Err("branch URL is longer than 2048 characters".into());
    }
    if url.starts_with('-') {
        return Err(format!(
            "branch URL '{}' starts with '-'; git would read it as an option",
            url.escape_debug()
        ));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "branch URL '{}' contains whitespace or control characters",
            url.escape_debug()
        ));
    }
    let local = || -> Result<(), String> {
        if policy.allow_file {
            Ok(())
        } else {
            Err(format!(
                "branch URL '{url}' is a local path or file: URL; these are disabled (set master.allow_file_urls = true in the config to allow them)"
            ))
        }
    };
    if let Some((scheme, rest)) = url.split_once("://") {
        let scheme_lc = scheme.to_ascii_lowercase();
        if scheme_lc == "file" {
            return local();
        }
        if !NETWORK_SCHEMES.contains(&scheme_lc.as_str()) {
            return Err(format!(
                "branch URL '{url}' uses scheme '{scheme}'; allowed: https, http, git, ssh"
            ));
        }
        let authority = rest.split('/').next().unwrap_or("");
        let host = authority.rsplit('@').next().unwrap_or("");
        if host.is_empty() || host.starts_with(':') {
            return Err(format!("branch URL '{url}' has no host"));
        }
        if host.starts_with('-') || host.starts_with("[-") {
            return Err(format!(
                "branch URL '{url}' has a host starting with '-'; ssh would read it as an option"
            ));
        }
        if rest.len() <= authority.len() + 1 {
            return Err(format!("branch URL '{url}' has no repository path"));
        }
        return Ok(());
    }
    if url.contains("::") {
        return Err(format!(
            "branch URL '{url}' uses git's remote-helper syntax ('transport::address'), which is not allowed"
        ));
    }
    if url.starts_with("file:") || url.starts_with('/') || url.starts_with('.') {
        return local();
    }
    // scp-like syntax: [user@]host:path, with no slash before the first colon.
    if let Some((host, path)) = url.split_once(':') {
        if !host.contains('/') && !host.is_empty() && !path.is_empty() {
            let hostname = host.rsplit('@').next().unwrap_or("");
            if hostname.is_empty() {
                return Err(format!("branch URL '{url}' has no host"));
            }
            if hostname.starts_with('-') || hostname.starts_with("[-") {
                return Err(format!(
                    "branch URL '{url}' has a host starting with '-'; ssh would read it as an option"
                ));
            }
            return Ok(());
        }
    }
    Err(format!(
        "branch URL '{url}' is not a URL git can fetch; use https://host/repo.git, git://host/repo.git or ssh://user@host/repo.git"
    ))
}

/// Branch names follow `git check-ref-format`'s rules, and may not look like an option.
/// The host a network branch URL names (lower case, without user or port); `None` for local
/// paths and `file:` URLs.
pub fn host_of(url: &str) -> Option<String> {
    let strip = |h: &str| -> String {
        let h = h.rsplit('@').next().unwrap_or("");
        let h = if let Some(rest) = h.strip_prefix('[') {
            rest.split(']').next().unwrap_or("")
        } else {
            h.split(':').next().unwrap_or("")
        };
        h.to_ascii_lowercase()
    };
    if let Some((scheme, rest)) = url.split_once("://") {
        if scheme.eq_ignore_ascii_case("file") {
            return None;
        }
        return Some(strip(rest.split('/').next().unwrap_or("")));
    }
    let (host, _) = url.split_once(':')?;
    (!host.contains('/') && !host.is_empty())
        .then(|| host.rsplit('@').next().unwrap_or("").to_ascii_lowercase())
}

/// Checks a branch URL's host against the site's allow-list (`master.branch_hosts`; empty:
/// any host).
pub fn check_branch_host(url: &str, allowed: &[String]) -> Result<(), String> {
    if allowed.is_empty() {
        return Ok(());
    }
    match host_of(url) {
        Some(h) if allowed.iter().any(|a| a.eq_ignore_ascii_case(&h)) => Ok(()),
        Some(h) => Err(format!(
            "branch URL host '{h}' is not one this master fetches from (master.branch_hosts: {})",
            allowed.join(", ")
        )),
        None => Ok(()),
    }
}

pub fn validate_branch_name(branch: &str) -> Result<(), String> {
    let bad = branch.is_empty()
        || branch.len() > 255
        || branch.starts_with('-')
        || branch.starts_with('/')
        || branch.ends_with('/')
        || branch.ends_with('.')
        || branch.ends_with(".lock")
        || branch.contains("..")
        || branch.contains("//")
        || branch.contains("@{")
        || branch == "@"
        || branch
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c))
        || branch.split('/').any(|part| part.starts_with('.'));
    if bad {
        return Err(format!(
            "branch name '{}' is not a valid git branch name",
            branch.escape_debug()
        ));
    }
    Ok(())
}

/// A commit asked for by SHA: 7 to 64 hex digits.
pub fn validate_commit(commit: &str) -> Result<(), String> {
    if (7..=64).contains(&commit.len()) && commit.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!(
            "commit '{}' is not a commit SHA (7 to 64 hex digits)",
            commit.escape_debug()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const STRICT: UrlPolicy = UrlPolicy { allow_file: false };
    const LAX: UrlPolicy = UrlPolicy { allow_file: true };

    #[test]
    fn hosts_and_the_allow_list() {
        assert_eq!(
            host_of("https://user@Git.Example.org:8443/r.git").as_deref(),
            Some("git.example.org")
        );
        assert_eq!(host_of("git@host:team/repo.git").as_deref(), Some("host"));
        assert_eq!(host_of("ssh://[::1]:22/r.git").as_deref(), Some("::1"));
        assert_eq!(host_of("file:///tmp/r"), None);
        let allowed = vec!["git.example.org".to_string()];
        assert!(check_branch_host("https://git.example.org/r.git", &allowed).is_ok());
        let e = check_branch_host("https://evil.example/r.git", &allowed).unwrap_err();
        assert!(
            e.contains("'evil.example'") && e.contains("master.branch_hosts"),
            "{e}"
        );
        assert!(check_branch_host("https://evil.example/r.git", &[]).is_ok());
    }

    #[test]
    fn accepts_ordinary_urls() {
        for url in [
            "https://git.example.org/board/image.git",
            "git://127.0.0.1:9418/config.git",
            "ssh://git@host/repo.git",
            "git@host:team/repo.git",
        ] {
            assert_eq!(validate_branch_url(url, STRICT), Ok(()), "{url}");
        }
    }

    #[test]
    fn refuses_dangerous_urls_with_reasons() {
        for (url, says) in [
            ("ext::sh -c touch% /tmp/pwned", "whitespace"),
            ("ext::sh", "remote-helper"),
            ("fd::3", "remote-helper"),
            ("-uhttps://x/y", "starts with '-'"),
            ("--upload-pack=touch /tmp/x", "starts with '-'"),
            ("file:///tmp/repo", "disabled"),
            ("/tmp/repo", "disabled"),
            ("ftp://host/repo", "scheme 'ftp'"),
            ("https:///repo", "no host"),
            ("ssh://-oProxyCommand=x/repo", "starting with '-'"),
            ("ssh://git@[-oProxyCommand=x]/repo", "starting with '-'"),
            ("git@-oProxyCommand=x:repo", "starting with '-'"),
            ("https://host", "no repository path"),
            ("not a url", "whitespace"),
            ("justaword", "not a URL git can fetch"),
            ("", "empty"),
        ] {
            let err = validate_branch_url(url, STRICT).unwrap_err();
            assert!(err.contains(says), "{url}: {err}");
        }
    }

    #[test]
    fn file_urls_when_allowed() {
        assert_eq!(validate_branch_url("file:///tmp/repo", LAX), Ok(()));
        assert_eq!(validate_branch_url("/tmp/repo", LAX), Ok(()));
        assert!(validate_branch_url("ext::sh", LAX).is_err());
    }

    #[test]
    fn branch_names() {
        for ok in ["main", "release/1.0", "feature-x"] {
            assert_eq!(validate_branch_name(ok), Ok(()));
        }
        for bad in ["", "-f", "a..b", "a b", "x.lock", "a:b", "/a", "a/", "a/.b"] {
            assert!(validate_branch_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn commits() {
        assert!(validate_commit("abc1234").is_ok());
        assert!(validate_commit("xyz1234").is_err());
        assert!(validate_commit("abc").is_err());
    }
}
