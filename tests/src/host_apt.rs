//! The Debian archives this machine's apt uses, read from its sources at run time (the tests
//! never name a mirror): the main archive, and the security archive.

/// deb822 stanzas of `/etc/apt/sources.list.d/*.sources`, in file order.
fn stanzas() -> Vec<String> {
    let mut files: Vec<_> = std::fs::read_dir("/etc/apt/sources.list.d")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sources"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            text.split("\n\n").map(str::to_string).collect::<Vec<_>>()
        })
        .collect()
}

/// The first http `URIs:` of a stanza whose `Suites:` satisfy `wanted`.
fn uri_where(wanted: impl Fn(&str) -> bool) -> Option<String> {
    stanzas()
        .iter()
        .filter(|s| {
            s.lines()
                .filter_map(|l| l.strip_prefix("Suites:"))
                .any(|l| l.split_whitespace().any(&wanted))
        })
        .find_map(|s| {
            s.lines()
                .filter_map(|l| l.strip_prefix("URIs:"))
                .flat_map(|l| l.split_whitespace())
                .find(|u| u.starts_with("http"))
                .map(|u| u.trim_end_matches('/').to_string())
        })
}

/// The main Debian archive (a suite that is not `-security`), else the first `deb` line of
/// `/etc/apt/sources.list`.
pub fn mirror() -> String {
    uri_where(|s| !s.contains("security"))
        .or_else(|| {
            std::fs::read_to_string("/etc/apt/sources.list")
                .unwrap_or_default()
                .lines()
                .filter(|l| l.starts_with("deb "))
                .flat_map(|l| l.split_whitespace())
                .find(|u| u.starts_with("http"))
                .map(|u| u.trim_end_matches('/').to_string())
        })
        .expect("this machine's apt has an http mirror")
}

/// The security archive (a `-security` suite).
pub fn security_mirror() -> String {
    uri_where(|s| s.ends_with("-security")).expect("this machine's apt has a security archive")
}
