//! Apt sources: parsed from one-line (`sources.list`) and deb822 (`*.sources`) text, cleaned of
//! credentials, rewritten through a site's and a project's URL map, and rendered back in either
//! form.

use super::AptSource;
use std::collections::BTreeMap;

/// Options apt knows by name: (one-line name, deb822 name, list-valued). A list-valued option
/// is comma-separated in one-line form and space-separated in deb822; `arch`, `lang` and
/// `target` also come as `arch+=` / `arch-=` (`Architectures-Add` / `Architectures-Remove`).
const KNOWN_OPTIONS: &[(&str, &str, bool)] = &[
    ("arch", "Architectures", true),
    ("arch+", "Architectures-Add", true),
    ("arch-", "Architectures-Remove", true),
    ("lang", "Languages", true),
    ("lang+", "Languages-Add", true),
    ("lang-", "Languages-Remove", true),
    ("target", "Targets", true),
    ("target+", "Targets-Add", true),
    ("target-", "Targets-Remove", true),
    ("trusted", "Trusted", false),
    ("signed-by", "Signed-By", false),
    ("pdiffs", "PDiffs", false),
    ("by-hash", "By-Hash", false),
    ("check-valid-until", "Check-Valid-Until", false),
    ("valid-until-min", "Valid-Until-Min", false),
    ("valid-until-max", "Valid-Until-Max", false),
    ("check-date", "Check-Date", false),
    ("date-max-future", "Date-Max-Future", false),
    ("inrelease-path", "InRelease-Path", false),
    ("allow-insecure", "Allow-Insecure", false),
    ("allow-weak", "Allow-Weak", false),
    (
        "allow-downgrade-to-insecure",
        "Allow-Downgrade-To-Insecure",
        false,
    ),
    ("snapshot", "Snapshot", false),
];

/// The deb822 name of a one-line option key (`arch` → `Architectures`); unknown keys get each
/// dash-separated word capitalised (`x-foo` → `X-Foo`).
pub fn deb822_option_name(one_line_key: &str) -> String {
    let lower = one_line_key.to_ascii_lowercase();
    match KNOWN_OPTIONS.iter().find(|(k, _, _)| *k == lower) {
        Some((_, name, _)) => (*name).to_string(),
        None => capitalise_words(&lower),
    }
}

/// The one-line key of a deb822 option name (`Architectures` → `arch`); unknown names are
/// lowercased. Case-insensitive.
pub fn one_line_option_key(deb822_name: &str) -> String {
    match known_by_deb822(deb822_name) {
        Some((key, _, _)) => key.to_string(),
        None => deb822_name.to_ascii_lowercase(),
    }
}

fn known_by_deb822(name: &str) -> Option<&'static (&'static str, &'static str, bool)> {
    KNOWN_OPTIONS
        .iter()
        .find(|(_, n, _)| n.eq_ignore_ascii_case(name))
}

fn is_list_option(deb822_name: &str) -> bool {
    known_by_deb822(deb822_name).is_some_and(|(_, _, list)| *list)
}

/// The canonical spelling of a deb822 field name (field names are case-insensitive).
fn canonical_field(name: &str) -> String {
    for known in ["Types", "URIs", "Suites", "Components", "Enabled"] {
        if known.eq_ignore_ascii_case(name) {
            return known.to_string();
        }
    }
    match known_by_deb822(name) {
        Some((_, n, _)) => (*n).to_string(),
        None => capitalise_words(&name.to_ascii_lowercase()),
    }
}

fn capitalise_words(s: &str) -> String {
    s.split('-')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + &c.as_str().to_ascii_lowercase(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// A list option's values, however separated (spaces, commas, new lines), joined by spaces.
fn normalise_list(value: &str) -> String {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|v| !v.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn is_cdrom(uri: &str) -> bool {
    uri.len() >= 6 && uri[..6].eq_ignore_ascii_case("cdrom:")
}

/// Parses `sources.list` text (one-line form): `deb [opt=val ...] URI SUITE [COMPONENT...]`.
/// Comments and blank lines are skipped; `origin` is stored in each entry. Options use their
/// deb822 names (`arch` → `Architectures`, `signed-by` → `Signed-By`, ...).
///
/// Lines of another type than `deb`/`deb-src`, lines without a URI and a suite, lines with an
/// unterminated `[` and `cdrom:` entries are skipped. An option without `=` is ignored.
pub fn parse_one_line(text: &str, origin: &str) -> Vec<AptSource> {
    text.lines()
        .filter_map(|line| parse_line(line, origin))
        .collect()
}

fn parse_line(line: &str, origin: &str) -> Option<AptSource> {
    let line = match line.find('#') {
        Some(i) => &line[..i],
        None => line,
    };
    let line = line.trim();
    let ty_end = line
        .find(|c: char| c.is_whitespace() || c == '[')
        .unwrap_or(line.len());
    let ty = &line[..ty_end];
    if ty != "deb" && ty != "deb-src" {
        return None;
    }
    let mut rest = line[ty_end..].trim_start();
    let mut options = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('[') {
        let close = inner.find(']')?;
        for opt in inner[..close].split_whitespace() {
            let Some((key, value)) = opt.split_once('=') else {
                continue;
            };
            let name = deb822_option_name(key);
            let value = if is_list_option(&name) {
                normalise_list(value)
            } else {
                value.to_string()
            };
            options.insert(name, value);
        }
        rest = inner[close + 1..].trim_start();
    }
    let mut words = rest.split_whitespace();
    let uri = words.next()?;
    let suite = words.next()?;
    if is_cdrom(uri) {
        return None;
    }
    Some(AptSource {
        types: vec![ty.to_string()],
        uris: vec![uri.to_string()],
        suites: vec![suite.to_string()],
        components: words.map(str::to_string).collect(),
        options,
        origin: origin.to_string(),
    })
}

/// Parses deb822 text (`*.sources`): stanzas separated by blank lines; `Enabled: no` stanzas
/// are skipped; multi-line fields (an inline `Signed-By` key) are kept with their lines joined
/// by `\n`.
///
/// Field names are case-insensitive (stored under their canonical spelling, unknown ones with
/// each dash-separated word capitalised); `#` comment lines are ignored anywhere; a
/// continuation line of ` .` is an empty line. When a field's first line is empty its value
/// is just the continuation lines. A stanza without `Types`, `URIs` or `Suites` is skipped, as
/// are `cdrom:` URIs. `Enabled` itself is not kept as an option.
pub fn parse_deb822(text: &str, origin: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    let mut stanza: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            out.extend(stanza_to_source(std::mem::take(&mut stanza), origin));
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some((_, lines)) = stanza.last_mut() {
                let l = line.trim();
                lines.push(if l == "." {
                    String::new()
                } else {
                    l.to_string()
                });
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let lines = if value.is_empty() {
            Vec::new()
        } else {
            vec![value.to_string()]
        };
        let name = canonical_field(name.trim());
        stanza.retain(|(n, _)| *n != name);
        stanza.push((name, lines));
    }
    out.extend(stanza_to_source(stanza, origin));
    out
}

fn stanza_to_source(fields: Vec<(String, Vec<String>)>, origin: &str) -> Option<AptSource> {
    if fields.is_empty() {
        return None;
    }
    let mut src = AptSource {
        origin: origin.to_string(),
        ..AptSource::default()
    };
    let (mut has_types, mut has_uris, mut has_suites) = (false, false, false);
    for (name, lines) in fields {
        let value = lines.join("\n");
        let words = || {
            value
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        match name.as_str() {
            "Types" => {
                src.types = words();
                has_types = true;
            }
            "URIs" => {
                src.uris = words().into_iter().filter(|u| !is_cdrom(u)).collect();
                has_uris = true;
            }
            "Suites" => {
                src.suites = words();
                has_suites = true;
            }
            "Components" => src.components = words(),
            "Enabled" => {
                let v = value.trim().to_ascii_lowercase();
                if matches!(
                    v.as_str(),
                    "no" | "false" | "off" | "0" | "disable" | "without"
                ) {
                    return None;
                }
            }
            _ => {
                let value = if is_list_option(&name) {
                    normalise_list(&value)
                } else {
                    value
                };
                src.options.insert(name, value);
            }
        }
    }
    if !has_types || !has_uris || !has_suites || src.types.is_empty() || src.uris.is_empty() {
        return None;
    }
    Some(src)
}

/// `http://user:password@host/path` → `http://host/path` (any userinfo removed).
///
/// Works on any text: after every `://` the authority (up to the next `/` or white space, as
/// apt delimits it) loses everything up to its last `@`. IPv6 hosts (`[::1]:3142`) are kept
/// whole; text without `://` is returned unchanged.
pub fn strip_credentials(uri: &str) -> String {
    let mut out = String::with_capacity(uri.len());
    let mut rest = uri;
    while let Some(i) = rest.find("://") {
        out.push_str(&rest[..i + 3]);
        rest = &rest[i + 3..];
        let mut end = rest
            .find(|c: char| c == '/' || c.is_whitespace())
            .unwrap_or(rest.len());
        // Another URI right after this one's authority (`http://a,http://b`): stop before its
        // scheme so that it is cleaned too.
        if rest[..end].ends_with(':') && rest[end..].starts_with("//") {
            let scheme_start = rest[..end - 1]
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-')))
                .map_or(0, |i| i + 1);
            end = scheme_start;
        }
        let authority = &rest[..end];
        let host = match authority.rfind('@') {
            Some(at) => &authority[at + 1..],
            None => authority,
        };
        out.push_str(host);
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Removes credentials from every URI of every source (and from option values that are URIs).
///
/// Any option value containing `://` is passed through [`strip_credentials`].
pub fn clean(sources: &mut [AptSource]) {
    for src in sources {
        for uri in &mut src.uris {
            *uri = strip_credentials(uri);
        }
        for value in src.options.values_mut() {
            if value.contains("://") {
                *value = strip_credentials(value);
            }
        }
    }
}

/// Applies a rewrite map (internal URL prefix → public URL prefix) to every URI: the longest
/// matching prefix wins; a prefix matches only at a path boundary (`http://m/debian` matches
/// `http://m/debian` and `http://m/debian/` but not `http://m/debian-security`); trailing
/// slashes in the map and the URI do not matter.
///
/// The rest of the URI after the prefix (including its trailing slash, if any) is kept:
/// `{"http://m/debian": "https://d/debian"}` makes `http://m/debian/` `https://d/debian/`.
/// Empty prefixes (or only slashes) never match.
pub fn rewrite(sources: &mut [AptSource], map: &BTreeMap<String, String>) {
    for src in sources {
        for uri in &mut src.uris {
            if let Some(new) = rewrite_uri(uri, map) {
                *uri = new;
            }
        }
    }
}

/// One URI through the rewrite map; `None` when no prefix matches.
pub fn rewrite_uri(uri: &str, map: &BTreeMap<String, String>) -> Option<String> {
    let mut best: Option<(&str, &str)> = None;
    for (from, to) in map {
        let prefix = from.trim_end_matches('/');
        if prefix.is_empty() || !uri.starts_with(prefix) {
            continue;
        }
        let rest = &uri[prefix.len()..];
        if !(rest.is_empty() || rest.starts_with('/')) {
            continue;
        }
        let longer = match best {
            Some((p, _)) => prefix.len() > p.len(),
            None => true,
        };
        if longer {
            best = Some((prefix, to));
        }
    }
    let (prefix, to) = best?;
    Some(format!(
        "{}{}",
        to.trim_end_matches('/'),
        &uri[prefix.len()..]
    ))
}

/// Renders deb822 stanzas (`Types`, `URIs`, `Suites`, `Components`, then the options in name
/// order), separated by blank lines, preceded by a comment naming each entry's origin.
///
/// `Components` is left out when empty (a flat repository). A multi-line value is written as
/// an empty first line followed by continuation lines, an empty line as ` .`.
pub fn to_deb822(sources: &[AptSource]) -> String {
    let mut out = String::new();
    for (i, src) in sources.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        push_origin(&mut out, &src.origin);
        push_field(&mut out, "Types", &src.types.join(" "));
        push_field(&mut out, "URIs", &src.uris.join(" "));
        push_field(&mut out, "Suites", &src.suites.join(" "));
        if !src.components.is_empty() {
            push_field(&mut out, "Components", &src.components.join(" "));
        }
        for (name, value) in &src.options {
            push_field(&mut out, name, value);
        }
    }
    out
}

fn push_origin(out: &mut String, origin: &str) {
    if !origin.is_empty() {
        out.push_str("# from ");
        out.push_str(&origin.replace(['\n', '\r'], " "));
        out.push('\n');
    }
}

fn push_field(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push(':');
    if value.contains('\n') {
        out.push('\n');
        for line in value.split('\n') {
            let line = line.trim();
            out.push(' ');
            out.push_str(if line.is_empty() { "." } else { line });
            out.push('\n');
        }
    } else {
        if !value.is_empty() {
            out.push(' ');
            out.push_str(value);
        }
        out.push('\n');
    }
}

/// Renders one-line form: one line per type × URI × suite, options in `[...]` (a multi-line
/// `Signed-By` key cannot be written on one line and is left out there).
///
/// An entry with an origin is preceded by a `# from ORIGIN` comment line. Option names are
/// written as apt's one-line keys (`Architectures` → `arch`, unknown names lowercased), list
/// values comma-separated; white space inside any other value becomes a comma too (a one-line
/// option cannot hold spaces). Any multi-line option value is left out.
pub fn to_one_line(sources: &[AptSource]) -> String {
    let mut out = String::new();
    for src in sources {
        push_origin(&mut out, &src.origin);
        for line in entry_lines(src) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// The one-line entries of every source, without comments: what [`to_one_line`] writes minus
/// the `# from` lines (the form the build diff compares).
pub fn one_line_entries(sources: &[AptSource]) -> Vec<String> {
    sources.iter().flat_map(entry_lines).collect()
}

fn entry_lines(src: &AptSource) -> Vec<String> {
    let opts: Vec<String> = src
        .options
        .iter()
        .filter(|(_, v)| !v.contains('\n'))
        .map(|(name, value)| {
            let value = value
                .split(|c: char| c.is_whitespace() || (c == ',' && is_list_option(name)))
                .filter(|v| !v.is_empty())
                .collect::<Vec<_>>()
                .join(",");
            format!("{}={}", one_line_option_key(name), value)
        })
        .collect();
    let opts = if opts.is_empty() {
        String::new()
    } else {
        format!(" [{}]", opts.join(" "))
    };
    let comps: String = src.components.iter().map(|c| format!(" {c}")).collect();
    let mut lines = Vec::new();
    for ty in &src.types {
        for uri in &src.uris {
            for suite in &src.suites {
                lines.push(format!("{ty}{opts} {uri} {suite}{comps}"));
            }
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    const KEY: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZk1234567890abcdef\n=AbCd\n-----END PGP PUBLIC KEY BLOCK-----";

    // ---- one-line parsing ----

    #[test]
    fn one_line_basic() {
        let text = "# a comment\n\ndeb http://deb.debian.org/debian bookworm main contrib non-free-firmware\n  deb-src http://deb.debian.org/debian bookworm main # trailing\n";
        let got = parse_one_line(text, "/etc/apt/sources.list");
        assert_eq!(
            got,
            vec![
                AptSource {
                    types: strings(&["deb"]),
                    uris: strings(&["http://deb.debian.org/debian"]),
                    suites: strings(&["bookworm"]),
                    components: strings(&["main", "contrib", "non-free-firmware"]),
                    options: BTreeMap::new(),
                    origin: "/etc/apt/sources.list".into(),
                },
                AptSource {
                    types: strings(&["deb-src"]),
                    uris: strings(&["http://deb.debian.org/debian"]),
                    suites: strings(&["bookworm"]),
                    components: strings(&["main"]),
                    options: BTreeMap::new(),
                    origin: "/etc/apt/sources.list".into(),
                },
            ]
        );
    }

    #[test]
    fn one_line_options() {
        let text = "deb [arch=amd64,arm64 signed-by=/usr/share/keyrings/x.gpg trusted=yes] https://x.example/debian bookworm main\n";
        let got = parse_one_line(text, "");
        assert_eq!(got.len(), 1);
        assert_eq!(
            got[0].options,
            opts(&[
                ("Architectures", "amd64 arm64"),
                ("Signed-By", "/usr/share/keyrings/x.gpg"),
                ("Trusted", "yes"),
            ])
        );
        assert_eq!(got[0].uris, strings(&["https://x.example/debian"]));
        assert_eq!(got[0].suites, strings(&["bookworm"]));
        assert_eq!(got[0].components, strings(&["main"]));
        assert_eq!(got[0].origin, "");
    }

    #[test]
    fn one_line_option_names() {
        let text = "deb [ lang=en,de target=Contents-deb pdiffs=no by-hash=force check-valid-until=no inrelease-path=InRelease arch+=i386 x-my-thing=1 ] http://h/d s c\n";
        let got = parse_one_line(text, "o");
        assert_eq!(
            got[0].options,
            opts(&[
                ("Architectures-Add", "i386"),
                ("By-Hash", "force"),
                ("Check-Valid-Until", "no"),
                ("InRelease-Path", "InRelease"),
                ("Languages", "en de"),
                ("PDiffs", "no"),
                ("Targets", "Contents-deb"),
                ("X-My-Thing", "1"),
            ])
        );
    }

    #[test]
    fn one_line_brackets_without_spaces_and_flat_repo() {
        let got = parse_one_line("deb [arch=amd64]http://h/repo ./\n", "");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].uris, strings(&["http://h/repo"]));
        assert_eq!(got[0].suites, strings(&["./"]));
        assert!(got[0].components.is_empty());
        assert_eq!(got[0].options, opts(&[("Architectures", "amd64")]));
    }

    #[test]
    fn one_line_skips_junk() {
        let text = "\
deb cdrom:[Debian GNU/Linux 12]/ bookworm main
deb
deb http://h/only-uri
rpm http://h/x a b
debx http://h/x a b
deb [arch=amd64 http://h/x a b
#deb http://h/commented bookworm main
deb http://h/ok bookworm main
";
        let got = parse_one_line(text, "");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].uris, strings(&["http://h/ok"]));
    }

    #[test]
    fn one_line_option_without_value_is_ignored() {
        let got = parse_one_line("deb [weird arch=amd64] http://h/d s main\n", "");
        assert_eq!(got[0].options, opts(&[("Architectures", "amd64")]));
    }

    // ---- deb822 parsing ----

    #[test]
    fn deb822_basic() {
        let text = "\
# Debian
Types: deb deb-src
URIs: https://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main contrib
Architectures: amd64 arm64
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: https://security.debian.org/debian-security
Suites: bookworm-security
Components: main
";
        let got = parse_deb822(text, "/etc/apt/sources.list.d/debian.sources");
        assert_eq!(
            got,
            vec![
                AptSource {
                    types: strings(&["deb", "deb-src"]),
                    uris: strings(&["https://deb.debian.org/debian"]),
                    suites: strings(&["bookworm", "bookworm-updates"]),
                    components: strings(&["main", "contrib"]),
                    options: opts(&[
                        ("Architectures", "amd64 arm64"),
                        (
                            "Signed-By",
                            "/usr/share/keyrings/debian-archive-keyring.gpg"
                        ),
                    ]),
                    origin: "/etc/apt/sources.list.d/debian.sources".into(),
                },
                AptSource {
                    types: strings(&["deb"]),
                    uris: strings(&["https://security.debian.org/debian-security"]),
                    suites: strings(&["bookworm-security"]),
                    components: strings(&["main"]),
                    options: BTreeMap::new(),
                    origin: "/etc/apt/sources.list.d/debian.sources".into(),
                },
            ]
        );
    }

    #[test]
    fn deb822_case_insensitive_fields_and_comments() {
        let text = "\
types: deb
# a comment inside the stanza
URIS: http://h/d
sUiTeS: s
components: main
signed-by: /k.gpg
pdiffs: no
x-repolib-name: Thing
";
        let got = parse_deb822(text, "");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].types, strings(&["deb"]));
        assert_eq!(got[0].uris, strings(&["http://h/d"]));
        assert_eq!(got[0].suites, strings(&["s"]));
        assert_eq!(
            got[0].options,
            opts(&[
                ("PDiffs", "no"),
                ("Signed-By", "/k.gpg"),
                ("X-Repolib-Name", "Thing")
            ])
        );
    }

    #[test]
    fn deb822_inline_key() {
        let text = "\
Types: deb
URIs: https://repo.example/apt
Suites: stable
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mDMEZk1234567890abcdef
\t=AbCd
 -----END PGP PUBLIC KEY BLOCK-----
Trusted: no
";
        let got = parse_deb822(text, "x");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].options["Signed-By"], KEY);
        assert_eq!(got[0].options["Trusted"], "no");
    }

    #[test]
    fn deb822_value_on_first_line_and_continuation() {
        let text = "Types: deb\nURIs: http://a/d\n http://b/d\nSuites: s\nComponents: main\n contrib\nX-Note: first\n second\n";
        let got = parse_deb822(text, "");
        assert_eq!(got[0].uris, strings(&["http://a/d", "http://b/d"]));
        assert_eq!(got[0].components, strings(&["main", "contrib"]));
        assert_eq!(got[0].options["X-Note"], "first\nsecond");
    }

    #[test]
    fn deb822_enabled_and_incomplete_stanzas() {
        let text = "\
Types: deb
URIs: http://h/off
Suites: s
Components: main
Enabled: no

Types: deb
URIs: http://h/on
Suites: s
Components: main
Enabled: yes

Types: deb
Suites: s

URIs: cdrom:[Debian]/
Types: deb
Suites: s



Types: deb
URIs: http://h/flat
Suites: ./
";
        let got = parse_deb822(text, "");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].uris, strings(&["http://h/on"]));
        assert!(got[0].options.is_empty(), "Enabled is not kept");
        assert_eq!(got[1].uris, strings(&["http://h/flat"]));
        assert!(got[1].components.is_empty());
    }

    #[test]
    fn deb822_enabled_false_variants() {
        for v in ["no", "No", "false", "off", "0"] {
            let text = format!("Types: deb\nURIs: http://h/d\nSuites: s\nEnabled: {v}\n");
            assert!(parse_deb822(&text, "").is_empty(), "{v}");
        }
    }

    #[test]
    fn deb822_whitespace_only_line_separates_and_crlf() {
        let text = "Types: deb\r\nURIs: http://a/d\r\nSuites: s\r\n  \r\nTypes: deb\r\nURIs: http://b/d\r\nSuites: t\r\n";
        let got = parse_deb822(text, "");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].suites, strings(&["s"]));
        assert_eq!(got[1].uris, strings(&["http://b/d"]));
    }

    #[test]
    fn deb822_list_options_normalised() {
        let text = "Types: deb\nURIs: http://a/d\nSuites: s\nArchitectures: amd64,  arm64\n i386\n";
        let got = parse_deb822(text, "");
        assert_eq!(got[0].options["Architectures"], "amd64 arm64 i386");
    }

    // ---- credentials ----

    #[test]
    fn strip_credentials_cases() {
        let cases = [
            ("http://user:password@host/path", "http://host/path"),
            ("https://user@host/path", "https://host/path"),
            ("http://host/path", "http://host/path"),
            ("http://u:p@host", "http://host"),
            ("http://u:p@host:8080/x", "http://host:8080/x"),
            ("http://u:p@[::1]:3142/debian", "http://[::1]:3142/debian"),
            ("http://[::1]:3142/debian", "http://[::1]:3142/debian"),
            ("http://u@[fe80::1%25eth0]/d", "http://[fe80::1%25eth0]/d"),
            ("tor+http://u:p@onion/x", "tor+http://onion/x"),
            ("mirror+https://u:p@h/list", "mirror+https://h/list"),
            ("http://u:p@ss@host/x", "http://host/x"),
            ("http://host/~user@x/y", "http://host/~user@x/y"),
            ("file:/srv/repo", "file:/srv/repo"),
            ("not a uri user@host", "not a uri user@host"),
            ("", ""),
            (
                "see http://a:b@h1/x and ftp://c@h2/y, done",
                "see http://h1/x and ftp://h2/y, done",
            ),
            ("http://u@a,http://v@b/", "http://a,http://b/"),
            ("http://ünï:cødé@hôst/ü", "http://hôst/ü"),
        ];
        for (input, want) in cases {
            assert_eq!(strip_credentials(input), want, "{input}");
        }
    }

    #[test]
    fn clean_uris_and_options() {
        let mut v = vec![AptSource {
            types: strings(&["deb"]),
            uris: strings(&["https://tok:secret@repo.example/apt", "http://plain/d"]),
            suites: strings(&["s"]),
            components: strings(&["main"]),
            options: opts(&[
                ("Signed-By", "/usr/share/keyrings/a.gpg"),
                ("X-Proxy", "http://proxy-user:pw@proxy:3128"),
                ("X-Mail", "someone@example.org"),
            ]),
            origin: "o".into(),
        }];
        clean(&mut v);
        assert_eq!(
            v[0].uris,
            strings(&["https://repo.example/apt", "http://plain/d"])
        );
        assert_eq!(v[0].options["X-Proxy"], "http://proxy:3128");
        assert_eq!(v[0].options["X-Mail"], "someone@example.org");
        assert_eq!(v[0].options["Signed-By"], "/usr/share/keyrings/a.gpg");
    }

    // ---- rewrite ----

    fn src_with_uris(uris: &[&str]) -> AptSource {
        AptSource {
            types: strings(&["deb"]),
            uris: strings(uris),
            suites: strings(&["s"]),
            ..AptSource::default()
        }
    }

    #[test]
    fn rewrite_example_from_the_doc() {
        let map = opts(&[(
            "http://mirror.internal/debian",
            "https://deb.debian.org/debian",
        )]);
        let mut v = vec![src_with_uris(&[
            "http://mirror.internal/debian/",
            "http://mirror.internal/debian",
            "http://mirror.internal/debian-security",
            "http://mirror.internal/debian/pool/x",
            "http://other/debian",
        ])];
        rewrite(&mut v, &map);
        assert_eq!(
            v[0].uris,
            strings(&[
                "https://deb.debian.org/debian/",
                "https://deb.debian.org/debian",
                "http://mirror.internal/debian-security",
                "https://deb.debian.org/debian/pool/x",
                "http://other/debian",
            ])
        );
    }

    #[test]
    fn rewrite_longest_prefix_and_trailing_slashes() {
        let map = opts(&[
            ("http://m/", "https://public/"),
            (
                "http://m/debian-security/",
                "https://security.debian.org/debian-security/",
            ),
            ("http://m/debian//", "https://deb.debian.org/debian"),
        ]);
        let mut v = vec![src_with_uris(&[
            "http://m/debian-security",
            "http://m/debian-security/",
            "http://m/debian/",
            "http://m/ubuntu/",
            "http://m",
            "http://mx/debian",
        ])];
        rewrite(&mut v, &map);
        assert_eq!(
            v[0].uris,
            strings(&[
                "https://security.debian.org/debian-security",
                "https://security.debian.org/debian-security/",
                "https://deb.debian.org/debian/",
                "https://public/ubuntu/",
                "https://public",
                "http://mx/debian",
            ])
        );
    }

    #[test]
    fn rewrite_empty_map_and_empty_prefix() {
        let mut v = vec![src_with_uris(&["http://h/d"])];
        rewrite(&mut v, &BTreeMap::new());
        assert_eq!(v[0].uris, strings(&["http://h/d"]));
        rewrite(&mut v, &opts(&[("", "http://evil"), ("/", "http://evil")]));
        assert_eq!(v[0].uris, strings(&["http://h/d"]));
    }

    #[test]
    fn rewrite_leaves_options_alone() {
        let map = opts(&[("http://m/d", "https://p/d")]);
        let mut v = vec![src_with_uris(&["http://m/d"])];
        v[0].options.insert("X-Url".into(), "http://m/d".into());
        rewrite(&mut v, &map);
        assert_eq!(v[0].uris, strings(&["https://p/d"]));
        assert_eq!(v[0].options["X-Url"], "http://m/d");
    }

    // ---- rendering ----

    #[test]
    fn to_deb822_renders() {
        let v = vec![
            AptSource {
                types: strings(&["deb", "deb-src"]),
                uris: strings(&["https://deb.debian.org/debian"]),
                suites: strings(&["bookworm", "bookworm-updates"]),
                components: strings(&["main"]),
                options: opts(&[("Trusted", "yes"), ("Architectures", "amd64 arm64")]),
                origin: "/etc/apt/sources.list.d/debian.sources".into(),
            },
            AptSource {
                types: strings(&["deb"]),
                uris: strings(&["https://repo.example/apt"]),
                suites: strings(&["./"]),
                components: vec![],
                options: opts(&[("Signed-By", KEY)]),
                origin: String::new(),
            },
        ];
        let want = "\
# from /etc/apt/sources.list.d/debian.sources
Types: deb deb-src
URIs: https://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Architectures: amd64 arm64
Trusted: yes

Types: deb
URIs: https://repo.example/apt
Suites: ./
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mDMEZk1234567890abcdef
 =AbCd
 -----END PGP PUBLIC KEY BLOCK-----
";
        assert_eq!(to_deb822(&v), want);
        assert_eq!(to_deb822(&[]), "");
    }

    #[test]
    fn to_one_line_renders() {
        let v = vec![
            AptSource {
                types: strings(&["deb", "deb-src"]),
                uris: strings(&["https://a/debian", "https://b/debian"]),
                suites: strings(&["bookworm"]),
                components: strings(&["main", "contrib"]),
                options: opts(&[
                    ("Architectures", "amd64 arm64"),
                    ("Signed-By", "/usr/share/keyrings/k.gpg"),
                    ("By-Hash", "yes"),
                    ("X-Thing", "a b"),
                ]),
                origin: "/etc/apt/sources.list.d/a.sources".into(),
            },
            AptSource {
                types: strings(&["deb"]),
                uris: strings(&["https://repo.example/apt"]),
                suites: strings(&["./"]),
                components: vec![],
                options: opts(&[("Signed-By", KEY), ("Trusted", "yes")]),
                origin: String::new(),
            },
            AptSource {
                types: strings(&["deb"]),
                uris: strings(&["https://c/d"]),
                suites: strings(&["s"]),
                components: strings(&["main"]),
                options: BTreeMap::new(),
                origin: "mmdebstrap".into(),
            },
        ];
        let opts = "[arch=amd64,arm64 by-hash=yes signed-by=/usr/share/keyrings/k.gpg x-thing=a,b]";
        let want = format!(
            "# from /etc/apt/sources.list.d/a.sources
deb {opts} https://a/debian bookworm main contrib
deb {opts} https://b/debian bookworm main contrib
deb-src {opts} https://a/debian bookworm main contrib
deb-src {opts} https://b/debian bookworm main contrib
deb [trusted=yes] https://repo.example/apt ./
# from mmdebstrap
deb https://c/d s main
"
        );
        assert_eq!(to_one_line(&v), want);
        assert_eq!(
            one_line_entries(&v[1..]),
            strings(&[
                "deb [trusted=yes] https://repo.example/apt ./",
                "deb https://c/d s main"
            ])
        );
        assert_eq!(to_one_line(&[]), "");
    }

    // ---- round trips ----

    const ONE_LINE: &str = "\
deb http://deb.debian.org/debian bookworm main contrib non-free non-free-firmware
deb-src http://deb.debian.org/debian bookworm main
deb [arch=amd64,arm64 signed-by=/usr/share/keyrings/x.gpg trusted=yes] https://x.example/debian bookworm main
deb [lang=en,de target=Contents-deb pdiffs=no by-hash=force check-valid-until=no arch-=i386 x-foo-bar=baz] http://h/d s c1 c2
deb [signed-by=/k.gpg] https://repo.example/apt ./
deb http://[::1]:3142/debian bookworm-updates main
";

    #[test]
    fn one_line_round_trip() {
        let parsed = parse_one_line(ONE_LINE, "/etc/apt/sources.list");
        assert_eq!(parsed.len(), 6);
        let rendered = to_one_line(&parsed);
        assert_eq!(parse_one_line(&rendered, "/etc/apt/sources.list"), parsed);
        // And it is stable.
        assert_eq!(
            to_one_line(&parse_one_line(&rendered, "/etc/apt/sources.list")),
            rendered
        );
    }

    #[test]
    fn one_line_to_deb822_round_trip() {
        let parsed = parse_one_line(ONE_LINE, "o");
        let rendered = to_deb822(&parsed);
        assert_eq!(parse_deb822(&rendered, "o"), parsed);
    }

    const DEB822: &str = "\
Types: deb deb-src
URIs: https://deb.debian.org/debian http://mirror/debian
Suites: bookworm bookworm-updates
Components: main contrib
Architectures: amd64 arm64
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: https://repo.example/apt
Suites: stable
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mDMEZk1234567890abcdef
 =AbCd
 -----END PGP PUBLIC KEY BLOCK-----
X-Repolib-Name: Example

Types: deb
URIs: http://h/flat
Suites: ./
";

    #[test]
    fn deb822_round_trip() {
        let parsed = parse_deb822(DEB822, "/etc/apt/sources.list.d/x.sources");
        assert_eq!(parsed.len(), 3);
        let rendered = to_deb822(&parsed);
        assert_eq!(
            parse_deb822(&rendered, "/etc/apt/sources.list.d/x.sources"),
            parsed
        );
        assert_eq!(
            to_deb822(&parse_deb822(
                &rendered,
                "/etc/apt/sources.list.d/x.sources"
            )),
            rendered
        );
    }

    #[test]
    fn deb822_to_one_line_drops_only_the_inline_key() {
        let parsed = parse_deb822(DEB822, "o");
        let lines = parse_one_line(&to_one_line(&parsed), "o");
        // 2 types × 2 URIs × 2 suites + 1 + 1.
        assert_eq!(lines.len(), 10);
        assert_eq!(
            lines[0].options,
            opts(&[
                ("Architectures", "amd64 arm64"),
                (
                    "Signed-By",
                    "/usr/share/keyrings/debian-archive-keyring.gpg"
                ),
            ])
        );
        assert_eq!(lines[8].options, opts(&[("X-Repolib-Name", "Example")]));
        assert_eq!(lines[8].uris, strings(&["https://repo.example/apt"]));
        assert!(lines[9].components.is_empty());
    }
}
