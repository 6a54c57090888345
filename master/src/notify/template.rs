//! Notification templates: a subject and a body per event, written in minijinja (Jinja2's
//! syntax; `docs/notifications.md` lists every field), rendered against one build's facts.
//!
//! Templates are plain text: no autoescaping, an unknown field is an error (strict undefined),
//! `None` prints as nothing, and `trim_blocks`/`lstrip_blocks` are on, so a `{% ... %}` tag
//! alone on its line leaves no blank line behind. The HTML alternative of a mail is made here
//! from the rendered text (escaped, links made clickable): no HTML from a template is trusted.

use minijinja::value::{Serde, Value};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior};
use serde::Serialize;

/// Everything a template can use. `build`/`artifacts`/`log_tail` are empty for
/// `slave_offline`, `slave` is empty for build events.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Context {
    /// The event (`failed`, `fixed`, ...).
    pub event: String,
    /// The project's name ("" for `slave_offline`).
    pub project: String,
    pub build: Option<BuildFacts>,
    pub slave: Option<SlaveFacts>,
    pub artifacts: Vec<ArtifactFacts>,
    /// The build's page in the console (`{public_url}/builds/{id}`).
    pub url: String,
    /// The build's raw log (`{public_url}/api/builds/{id}/log`).
    pub log_url: String,
    /// The log's last lines (failures and lost builds), else "".
    pub log_tail: String,
    /// `master.public_url`.
    pub public_url: String,
    /// Where the recipient stops these messages ("" for webhooks).
    pub unsubscribe_url: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct BuildFacts {
    pub id: i64,
    pub state: String,
    pub reason: Option<String>,
    /// `manual`, `schedule`, `release`, `rebuild`.
    pub trigger: String,
    pub release: Option<String>,
    pub release_notes: Option<String>,
    pub commit: Option<String>,
    pub branch: String,
    pub branch_url: String,
    pub slave: Option<String>,
    /// Who asked for it (a user name), `None` for the scheduler.
    pub requested_by: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// From start (or creation) to end, like "3m 12s".
    pub duration: String,
    pub duration_secs: i64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ArtifactFacts {
    pub name: String,
    pub size: i64,
    /// Like "1.2 GiB".
    pub size_human: String,
    pub sha256: String,
    /// Download URL (`{public_url}/api/builds/{id}/artifacts/{name}`, name percent-encoded).
    pub url: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SlaveFacts {
    pub name: String,
    /// RFC 3339, when the master last heard from it.
    pub last_seen: Option<String>,
}

/// Why a template cannot be used: which part, on which line, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateError {
    /// `subject` or `body`.
    pub field: &'static str,
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}, line {l}: {}", self.field, self.message),
            None => write!(f, "{}: {}", self.field, self.message),
        }
    }
}

/// A rendered message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    /// One line.
    pub subject: String,
    pub text: String,
    /// The HTML alternative (the text, escaped, links made clickable).
    pub html: String,
}

/// The longest subject, in characters (longer ones are cut, ending in `…`).
pub const MAX_SUBJECT_CHARS: usize = 250;
/// The longest template source (subject or body), in bytes: a backstop (the API refuses
/// shorter ones first).
pub const MAX_SOURCE_BYTES: usize = 256 * 1024;
/// The longest rendered body, in bytes (a longer one is cut, with a note saying so).
pub const MAX_TEXT_BYTES: usize = 1024 * 1024;
/// The work one render may do (minijinja's fuel: instructions and allocations), so that a
/// template cannot loop or allocate without bound. Kiln's built-ins use a few thousand.
const FUEL: u64 = 500_000;

// The built-in templates, assembled from shared pieces (macros so that `concat!` sees
// literals). They are written for `trim_blocks` and `lstrip_blocks`: a block tag alone on its
// line leaves nothing behind.

/// The facts of a build, one per line.
macro_rules! facts {
    () => {
        "Project:    {{ project }}
Build:      #{{ build.id }} ({{ build.state }})
{% if build.release %}
Release:    {{ build.release }}
{% endif %}
{% if build.reason %}
Reason:     {{ build.reason }}
{% endif %}
Branch:     {{ build.branch }}
{% if build.commit %}
Commit:     {{ build.commit }}
{% endif %}
Started by: {{ build.requested_by or \"the scheduler\" }} ({{ build.trigger }})
{% if build.slave %}
Slave:      {{ build.slave }}
{% endif %}
{% if build.duration %}
Duration:   {{ build.duration }}
{% endif %}
{% if url %}
Details:    {{ url }}
{% endif %}
"
    };
}

/// The artifacts: name, size, checksum, download link.
macro_rules! artifacts {
    () => {
        "{% if artifacts %}

Artifacts:
{% for a in artifacts %}
  {{ a.name }} ({{ a.size_human }})
    sha256: {{ a.sha256 }}
    {{ a.url }}
{% endfor %}
{% endif %}
"
    };
}

/// The log's last lines and the link to all of it.
macro_rules! log {
    () => {
        "{% if log_tail %}

The log's last lines:

{{ log_tail|trim }}
{% endif %}
{% if log_url %}

Full log:   {{ log_url }}
{% endif %}
"
    };
}

/// The release notes of a release build.
macro_rules! notes {
    () => {
        "{% if build.release_notes %}

Release notes:

{{ build.release_notes|trim }}
{% endif %}
"
    };
}

/// The unsubscribe line (mails only: webhooks have no `unsubscribe_url`).
macro_rules! unsubscribe {
    () => {
        "{% if unsubscribe_url %}

Stop these mails: {{ unsubscribe_url }}
{% endif %}
"
    };
}

const RELEASE_SUBJECT: &str = "[kiln] {{ project }} release \
{% if build.release %}{{ build.release }}{% else %}#{{ build.id }}{% endif %} is ready";
const RELEASE_BODY: &str = concat!(
    "{% if build.release %}Release {{ build.release }}{% else %}A release{% endif %} \
of {{ project }} is ready (build #{{ build.id }}).\n\n",
    facts!(),
    notes!(),
    artifacts!(),
    unsubscribe!(),
);

const FIXED_SUBJECT: &str = "[kiln] {{ project }} #{{ build.id }} fixed";
const FIXED_BODY: &str = concat!(
    "Build #{{ build.id }} of {{ project }} succeeded: the project is fixed \
(its previous build had failed).\n\n",
    facts!(),
    artifacts!(),
    unsubscribe!(),
);

const SUCCEEDED_SUBJECT: &str = "[kiln] {{ project }} #{{ build.id }} succeeded";
const SUCCEEDED_BODY: &str = concat!(
    "Build #{{ build.id }} of {{ project }} succeeded.\n\n",
    facts!(),
    artifacts!(),
    unsubscribe!(),
);

const FAILED_SUBJECT: &str =
    "[kiln] {{ project }} #{{ build.id }} failed{% if build.reason %}: {{ build.reason }}{% endif %}";
const FAILED_BODY: &str = concat!(
    "Build #{{ build.id }} of {{ project }} failed.\n\n",
    facts!(),
    log!(),
    unsubscribe!(),
);

const LOST_SUBJECT: &str = "[kiln] {{ project }} #{{ build.id }} lost";
const LOST_BODY: &str = concat!(
    "Build #{{ build.id }} of {{ project }} was lost: it never finished on its slave. \
A retry, if there is one, is a new build.\n\n",
    facts!(),
    log!(),
    unsubscribe!(),
);

const SLAVE_OFFLINE_SUBJECT: &str = "[kiln] slave {{ slave.name }} is offline";
const SLAVE_OFFLINE_BODY: &str = concat!(
    "The slave {{ slave.name }} went offline.
{% if slave.last_seen %}
The master last heard from it at {{ slave.last_seen }}.
{% else %}
The master has not heard from it.
{% endif %}
{% if url %}

Slaves: {{ url }}
{% elif public_url %}

Console: {{ public_url }}
{% endif %}
",
    unsubscribe!(),
);

const GENERIC_SUBJECT: &str = "[kiln] {% if build %}{{ project }} #{{ build.id }} {{ event }}\
{% elif slave %}slave {{ slave.name }}: {{ event }}{% else %}{{ event }}{% endif %}";
const GENERIC_BODY: &str = concat!(
    "Kiln event: {{ event }}.\n\n",
    "{% if build %}\n",
    facts!(),
    artifacts!(),
    log!(),
    "{% elif slave %}
Slave:      {{ slave.name }}
{% if slave.last_seen %}
Last seen:  {{ slave.last_seen }}
{% endif %}
{% endif %}
",
    unsubscribe!(),
);

/// Kiln's built-in (subject, body) for `event` (no site facts in them).
pub fn builtin(event: &str) -> (&'static str, &'static str) {
    match event {
        "release" => (RELEASE_SUBJECT, RELEASE_BODY),
        "fixed" => (FIXED_SUBJECT, FIXED_BODY),
        "succeeded" => (SUCCEEDED_SUBJECT, SUCCEEDED_BODY),
        "failed" => (FAILED_SUBJECT, FAILED_BODY),
        "lost" => (LOST_SUBJECT, LOST_BODY),
        "slave_offline" => (SLAVE_OFFLINE_SUBJECT, SLAVE_OFFLINE_BODY),
        _ => (GENERIC_SUBJECT, GENERIC_BODY),
    }
}

const SAMPLE_PUBLIC_URL: &str = "https://kiln.example.org";
const SAMPLE_LOG_TAIL: &str = "\
+ make image
mkimage: writing board.img
mkimage: error: partition 'rootfs' needs 1612 MiB, image has 1536 MiB
make: *** [Makefile:42: image] Error 2
kiln: step `make image` exited with status 2";

/// A plausible context for `event`, to check a template renders before it is saved.
pub fn sample(event: &str) -> Context {
    let public_url = SAMPLE_PUBLIC_URL.to_string();
    let unsubscribe_url = format!("{public_url}/unsubscribe#sample-token");
    if event == "slave_offline" {
        return Context {
            event: event.to_string(),
            slave: Some(SlaveFacts {
                name: "lab-1".into(),
                last_seen: Some("2026-11-26T09:41:07Z".into()),
            }),
            url: format!("{public_url}/slaves"),
            public_url,
            unsubscribe_url,
            ..Context::default()
        };
    }
    let id = 12;
    let (state, reason) = match event {
        "failed" => ("failed", Some("step `make image` exited with status 2")),
        "lost" => ("lost", Some("slave lab-1 stopped answering")),
        _ => ("succeeded", None),
    };
    let is_release = event == "release";
    let artifact = |name: &str, size: i64, size_human: &str, sha256: &str| ArtifactFacts {
        name: name.into(),
        size,
        size_human: size_human.into(),
        sha256: sha256.into(),
        url: format!("{public_url}/api/builds/{id}/artifacts/{name}"),
    };
    Context {
        event: event.to_string(),
        project: "board".into(),
        build: Some(BuildFacts {
            id,
            state: state.into(),
            reason: reason.map(str::to_string),
            trigger: if is_release { "release" } else { "manual" }.into(),
            release: is_release.then(|| "v1.0".to_string()),
            release_notes: is_release
                .then(|| "First stable release.\n- Faster boot\n- New kernel".to_string()),
            commit: Some("3f9c2b7e1d4a5f6081b2c3d4e5f60718293a4b5c".into()),
            branch: "main".into(),
            branch_url: "https://git.example.org/board.git".into(),
            slave: Some("lab-1".into()),
            requested_by: Some("alice".into()),
            created_at: "2026-11-26T09:30:00Z".into(),
            started_at: Some("2026-11-26T09:30:04Z".into()),
            finished_at: Some("2026-11-26T09:33:16Z".into()),
            duration: "3m 12s".into(),
            duration_secs: 192,
        }),
        slave: None,
        artifacts: vec![
            artifact(
                "board.img",
                1_073_741_824,
                "1.0 GiB",
                "9b74c9897bac770ffc029102a200c5de2c8f5d8e0b1c6e1e5c8f3a3b2d1e0f9a",
            ),
            artifact(
                "board-sdk.tar.xz",
                50_647_450,
                "48.3 MiB",
                "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8",
            ),
        ],
        url: format!("{public_url}/builds/{id}"),
        log_url: format!("{public_url}/api/builds/{id}/log"),
        log_tail: if matches!(event, "failed" | "lost") {
            SAMPLE_LOG_TAIL.to_string()
        } else {
            String::new()
        },
        public_url,
        unsubscribe_url,
    }
}

/// Renders `subject` and `body` against `ctx`; an unknown field or a syntax error is an error
/// naming the part and line.
pub fn render(subject: &str, body: &str, ctx: &Context) -> Result<Rendered, TemplateError> {
    let value = Value::from(Serde(ctx));
    if subject.trim().is_empty() {
        return Err(TemplateError {
            field: "subject",
            line: None,
            message: "the subject is empty".into(),
        });
    }
    let subject = one_line(&render_part("subject", subject, &value)?);
    let text = normalize_text(render_part("body", body, &value)?);
    let html = html_of(&text);
    Ok(Rendered {
        subject,
        text,
        html,
    })
}

/// Checks a template before it is saved: it parses and renders against [`sample`].
pub fn check(event: &str, subject: &str, body: &str) -> Result<(), TemplateError> {
    render(subject, body, &sample(event)).map(|_| ())
}

/// The environment templates render in: strict, plain text, bounded, with Kiln's filters.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_fuel(Some(FUEL));
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .build()
        .expect("the default delimiters are valid");
    env.set_syntax(syntax);
    // `None` prints as nothing (not "none"), so an optional fact can be printed as it is.
    env.set_formatter(|out, state, value| {
        if value.is_none() {
            Ok(())
        } else {
            minijinja::escape_formatter(out, state, value)
        }
    });
    env.add_filter("default", filter_default);
    env.add_filter("d", filter_default);
    env.add_filter("truncate", filter_truncate);
    env.add_filter("tail", filter_tail);
    env.add_filter("short", filter_short);
    env
}

/// `default(other="", falsy=false)`: `other` when the value is undefined or none (or, with
/// `falsy`, anything false, like "" or an empty list).
fn filter_default(value: &Value, other: Option<Value>, falsy: Option<bool>) -> Value {
    if value.is_undefined() || value.is_none() || (falsy == Some(true) && !value.is_true()) {
        other.unwrap_or_else(|| Value::from(""))
    } else {
        value.clone()
    }
}

/// The text of a value for the string filters ("" for none).
fn text_of(value: &Value) -> String {
    if value.is_none() {
        String::new()
    } else if let Some(s) = value.as_str() {
        s.to_string()
    } else {
        value.to_string()
    }
}

/// `truncate(length=255, end="...")`: at most `length` characters, ending in `end` when cut.
fn filter_truncate(value: &Value, length: Option<usize>, end: Option<String>) -> String {
    let text = text_of(value);
    let length = length.unwrap_or(255);
    if text.chars().count() <= length {
        return text;
    }
    let end = end.unwrap_or_else(|| "...".to_string());
    let keep = length.saturating_sub(end.chars().count());
    let mut out: String = text.chars().take(keep).collect();
    out.push_str(&end);
    out
}

/// `tail(lines=10)`: the last `lines` lines of a text.
fn filter_tail(value: &Value, lines: Option<usize>) -> String {
    let text = text_of(value);
    let all: Vec<&str> = text.trim_end_matches('\n').lines().collect();
    let n = lines.unwrap_or(10).min(all.len());
    all[all.len() - n..].join("\n")
}

/// `short(length=12)`: the first `length` characters (a commit's short id).
fn filter_short(value: &Value, length: Option<usize>) -> String {
    text_of(value).chars().take(length.unwrap_or(12)).collect()
}

/// Parses and renders one part, naming it in the error.
fn render_part(field: &'static str, source: &str, ctx: &Value) -> Result<String, TemplateError> {
    if source.len() > MAX_SOURCE_BYTES {
        return Err(TemplateError {
            field,
            line: None,
            message: format!("the {field} is longer than {} KiB", MAX_SOURCE_BYTES / 1024),
        });
    }
    // Text typed in a browser has CRLF line ends; lines stay where they were.
    let source = source.replace("\r\n", "\n");
    let env = environment();
    env.template_from_str(&source)
        .and_then(|t| t.render(ctx))
        .map_err(|e| template_error(field, &e))
}

fn template_error(field: &'static str, e: &Error) -> TemplateError {
    let detail = e.detail().unwrap_or("");
    let message = match e.kind() {
        ErrorKind::UndefinedError if !detail.is_empty() => {
            format!("{detail} (no such field, or not set for this event)")
        }
        ErrorKind::UndefinedError => "undefined value (no such field)".to_string(),
        ErrorKind::OutOfFuel => "the template does too much work (it ran out of fuel)".into(),
        kind if detail.is_empty() => kind.to_string(),
        kind => format!("{kind}: {detail}"),
    };
    TemplateError {
        field,
        line: e.line(),
        message,
    }
}

/// A subject is one line: control characters and runs of whitespace become one space, the
/// ends are trimmed, and it is cut to [`MAX_SUBJECT_CHARS`].
fn one_line(s: &str) -> String {
    let spaced: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let line = spaced.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= MAX_SUBJECT_CHARS {
        return line;
    }
    let mut cut: String = line.chars().take(MAX_SUBJECT_CHARS - 1).collect();
    cut.truncate(cut.trim_end().len());
    cut.push('…');
    cut
}

/// The body's text: `\n` line ends, no trailing blank lines, one final newline, at most
/// [`MAX_TEXT_BYTES`].
fn normalize_text(text: String) -> String {
    let mut text = text.replace("\r\n", "\n");
    text.truncate(text.trim_end().len());
    if text.len() > MAX_TEXT_BYTES {
        let mut cut = MAX_TEXT_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("\n[... cut: the message was longer than 1 MiB]");
    }
    if !text.is_empty() {
        text.push('\n');
    }
    text
}

/// The HTML alternative of a rendered text: the text, escaped, in a `<pre>`, with `http://` and
/// `https://` URLs made links. Nothing in the text can add markup.
pub fn html_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8 + 128);
    out.push_str("<html><body><pre style=\"font-family:monospace;white-space:pre-wrap\">");
    let mut rest = text;
    while let Some((start, end)) = find_url(rest) {
        escape_into(&mut out, &rest[..start]);
        let url = &rest[start..end];
        out.push_str("<a href=\"");
        escape_into(&mut out, url);
        out.push_str("\">");
        escape_into(&mut out, url);
        out.push_str("</a>");
        rest = &rest[end..];
    }
    escape_into(&mut out, rest);
    out.push_str("</pre></body></html>");
    out
}

/// Escapes `s` for HTML text and double- or single-quoted attributes.
fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// The byte range of the first `http://` or `https://` URL in `s`: it starts at a word
/// boundary, runs to whitespace, a quote or `<>`, and leaves off trailing punctuation (and a
/// closing bracket it did not open).
fn find_url(s: &str) -> Option<(usize, usize)> {
    let bytes = s.as_bytes();
    let mut from = 0;
    while let Some(pos) = s[from..].find("http").map(|p| p + from) {
        from = pos + 4;
        let boundary =
            pos == 0 || !(bytes[pos - 1].is_ascii_alphanumeric() || bytes[pos - 1] == b'_');
        let scheme = ["https://", "http://"]
            .into_iter()
            .find(|p| s[pos..].starts_with(p));
        let (true, Some(scheme)) = (boundary, scheme) else {
            continue;
        };
        let body_start = pos + scheme.len();
        let mut end = s[body_start..]
            .find(|c: char| {
                c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"' | '\'' | '`')
            })
            .map_or(s.len(), |p| p + body_start);
        // Leave off what ends a sentence or closes a bracket around the URL.
        while end > body_start {
            let last = s[..end].chars().next_back().unwrap_or(' ');
            let unbalanced = |open: char, close: char| {
                last == close
                    && s[pos..end].matches(close).count() > s[pos..end].matches(open).count()
            };
            if matches!(last, '.' | ',' | ';' | ':' | '!' | '?' | '*')
                || unbalanced('(', ')')
                || unbalanced('[', ']')
                || unbalanced('{', '}')
            {
                end -= last.len_utf8();
            } else {
                break;
            }
        }
        if end > body_start {
            return Some((pos, end));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENTS: [&str; 6] = [
        "release",
        "fixed",
        "succeeded",
        "failed",
        "lost",
        "slave_offline",
    ];

    #[test]
    fn every_builtin_renders_against_every_sample() {
        for template_event in EVENTS.iter().chain(&["no_such_event"]) {
            let (subject, body) = builtin(template_event);
            for sample_event in EVENTS.iter().chain(&["no_such_event"]) {
                let ctx = sample(sample_event);
                let slave_template = *template_event == "slave_offline";
                let slave_sample = *sample_event == "slave_offline";
                let r = render(subject, body, &ctx);
                // A build template needs a build, the slave template a slave; the generic
                // fallback takes either.
                if *template_event != "no_such_event" && slave_template != slave_sample {
                    assert!(r.is_err(), "{template_event} on {sample_event} should fail");
                    continue;
                }
                let r = r.unwrap_or_else(|e| panic!("{template_event} on {sample_event}: {e}"));
                assert!(r.subject.starts_with("[kiln] "), "{}", r.subject);
                assert!(!r.subject.contains('\n'));
                assert!(
                    !r.text.contains("none") && !r.text.contains("None"),
                    "{}",
                    r.text
                );
                assert!(!r.text.contains("\n\n\n"), "blank lines:\n{}", r.text);
                assert!(
                    r.text.trim_end().ends_with(
                        "Stop these mails: https://kiln.example.org/unsubscribe#sample-token"
                    ),
                    "{}",
                    r.text
                );
            }
            assert_eq!(check(template_event, subject, body), Ok(()));
        }
    }

    #[test]
    fn builtins_say_what_matters() {
        let r = |e: &str| {
            let (s, b) = builtin(e);
            render(s, b, &sample(e)).unwrap()
        };
        let failed = r("failed");
        assert_eq!(
            failed.subject,
            "[kiln] board #12 failed: step `make image` exited with status 2"
        );
        assert!(failed
            .text
            .contains("Reason:     step `make image` exited with status 2"));
        assert!(failed
            .text
            .contains("make: *** [Makefile:42: image] Error 2"));
        assert!(failed
            .text
            .contains("Full log:   https://kiln.example.org/api/builds/12/log"));
        assert!(failed.text.contains("Started by: alice (manual)"));
        assert!(!failed.text.contains("Artifacts:"));
        let release = r("release");
        assert_eq!(release.subject, "[kiln] board release v1.0 is ready");
        assert!(release.text.contains("- New kernel"));
        assert!(release.text.contains("  board.img (1.0 GiB)"));
        assert!(release
            .text
            .contains("https://kiln.example.org/api/builds/12/artifacts/board-sdk.tar.xz"));
        assert_eq!(r("succeeded").subject, "[kiln] board #12 succeeded");
        assert_eq!(r("fixed").subject, "[kiln] board #12 fixed");
        assert_eq!(r("lost").subject, "[kiln] board #12 lost");
        let offline = r("slave_offline");
        assert_eq!(offline.subject, "[kiln] slave lab-1 is offline");
        assert!(offline.text.contains("2026-11-26T09:41:07Z"));
        assert!(offline
            .text
            .contains("Slaves: https://kiln.example.org/slaves"));

        // Optional facts absent: no "none", the scheduler started it, no unsubscribe line.
        let mut ctx = sample("failed");
        let b = ctx.build.as_mut().unwrap();
        b.reason = None;
        b.commit = None;
        b.requested_by = None;
        b.slave = None;
        ctx.unsubscribe_url.clear();
        ctx.log_tail.clear();
        let (s, body) = builtin("failed");
        let out = render(s, body, &ctx).unwrap();
        assert_eq!(out.subject, "[kiln] board #12 failed");
        assert!(out.text.contains("Started by: the scheduler (manual)"));
        assert!(!out.text.contains("Stop these mails"));
        assert!(!out.text.contains("Reason:") && !out.text.contains("Commit:"));
        let mut ctx = sample("slave_offline");
        ctx.slave.as_mut().unwrap().last_seen = None;
        let (s, body) = builtin("slave_offline");
        assert!(render(s, body, &ctx)
            .unwrap()
            .text
            .contains("has not heard"));
    }

    #[test]
    fn syntax_error_names_part_and_line() {
        let e = check("failed", "[kiln] {{ project }}", "one\ntwo\n{% if %}\nfour").unwrap_err();
        assert_eq!(e.field, "body");
        assert_eq!(e.line, Some(3));
        assert!(e.message.contains("syntax error"), "{}", e.message);
        let e = check("failed", "{{ project ", "fine").unwrap_err();
        assert_eq!(e.field, "subject");
        assert_eq!(e.line, Some(1));
        // CRLF line ends count lines the same.
        let e = check("failed", "s", "one\r\ntwo\r\n{% endif %}").unwrap_err();
        assert_eq!((e.field, e.line), ("body", Some(3)));
    }

    #[test]
    fn unknown_field_is_an_error_naming_it() {
        let e = check("failed", "s", "Build {{ build.id }}\n{{ build.nope }}").unwrap_err();
        assert_eq!((e.field, e.line), ("body", Some(2)));
        assert!(e.message.contains("build.nope"), "{}", e.message);
        let e = check("failed", "{{ nope }}", "b").unwrap_err();
        assert_eq!(e.field, "subject");
        assert!(e.message.contains("nope"), "{}", e.message);
        // Also in a condition, and the slave of a build event.
        assert!(check("failed", "s", "{% if build.nope %}x{% endif %}").is_err());
        assert!(check("failed", "s", "{{ slave.name }}").is_err());
        assert!(check("slave_offline", "s", "{{ build.id }}").is_err());
        // `is defined` and `default` are the ways to be lenient.
        assert_eq!(
            check(
                "failed",
                "s",
                "{{ nope|default('x') }}{% if nope is defined %}{% endif %}"
            ),
            Ok(())
        );
        let e = check("failed", "s", "{{ project|nofilter }}").unwrap_err();
        assert!(e.message.contains("nofilter"), "{}", e.message);
    }

    #[test]
    fn subject_is_one_line() {
        let ctx = sample("failed");
        let r = render(
            "  [kiln]\n {{ project }}\t\n\n #{{ build.id }}  \r\n",
            "b",
            &ctx,
        )
        .unwrap();
        assert_eq!(r.subject, "[kiln] board #12");
        let r = render("{{ 'x' * 400 }}", "b", &ctx).unwrap();
        assert_eq!(r.subject.chars().count(), 250);
        assert!(r.subject.ends_with('…'));
        assert!(render("  \n", "b", &ctx).is_err());
    }

    #[test]
    fn html_escapes_and_links() {
        let mut ctx = sample("failed");
        ctx.build.as_mut().unwrap().reason =
            Some("<script>alert(1)</script> \"q\" & 'a' see https://x.example/a?b=1&c=<2>".into());
        ctx.log_tail =
            "fetch (https://mirror.example.org/pkg.tar.gz).\n\"><img src=x onerror=alert(1)>"
                .into();
        let (s, b) = builtin("failed");
        let r = render(s, b, &ctx).unwrap();
        assert!(r.text.contains("<script>alert(1)</script>"));
        assert!(!r.html.contains("<script>"));
        assert!(!r.html.contains("<img"));
        assert!(r
            .html
            .contains("&lt;script&gt;alert(1)&lt;/script&gt; &quot;q&quot; &amp; &#39;a&#39;"));
        assert!(r.html.contains(
            "<a href=\"https://x.example/a?b=1&amp;c=\">https://x.example/a?b=1&amp;c=</a>&lt;2&gt;"
        ));
        assert!(r.html.contains(
            "(<a href=\"https://mirror.example.org/pkg.tar.gz\">https://mirror.example.org/pkg.tar.gz</a>)."
        ));
        assert!(r.html.contains(
            "<a href=\"https://kiln.example.org/builds/12\">https://kiln.example.org/builds/12</a>"
        ));
        assert!(r
            .html
            .starts_with("<html><body><pre style=\"font-family:monospace;white-space:pre-wrap\">"));
        assert!(r.html.ends_with("</pre></body></html>"));
        // Only http(s), only at a word boundary, and not an empty one.
        assert_eq!(
            html_of("javascript:alert(1) xhttp://a.b http:// ftp://c.d"),
            "<html><body><pre style=\"font-family:monospace;white-space:pre-wrap\">\
             javascript:alert(1) xhttp://a.b http:// ftp://c.d</pre></body></html>"
        );
        assert!(html_of("see <https://a.example/x_(y)>, ok").contains(
            "&lt;<a href=\"https://a.example/x_(y)\">https://a.example/x_(y)</a>&gt;, ok"
        ));
    }

    #[test]
    fn none_prints_as_nothing_and_filters_work() {
        let mut ctx = sample("failed");
        ctx.build.as_mut().unwrap().requested_by = None;
        let body = "[{{ build.requested_by }}]\n\
            {{ build.requested_by|default('scheduler') }}\n\
            {{ ''|default('empty', true) }}\n\
            {{ build.commit|short }} {{ build.commit|short(7) }}\n\
            {{ log_tail|tail(2) }}\n\
            {{ build.reason|truncate(10) }}\n\
            {{ artifacts|length }} {{ artifacts|map(attribute='name')|join(', ') }}\n\
            {{ project|upper }} {{ build.duration_secs }}\n\
            {% for a in artifacts %}{{ loop.index }}:{{ a.size }}{% if not loop.last %},{% endif %}{% endfor %}";
        let r = render("s", body, &ctx).unwrap();
        assert_eq!(
            r.text,
            "[]\nscheduler\nempty\n3f9c2b7e1d4a 3f9c2b7\n\
             make: *** [Makefile:42: image] Error 2\nkiln: step `make image` exited with status 2\n\
             step `m...\n2 board.img, board-sdk.tar.xz\nBOARD 192\n1:1073741824,2:50647450\n"
        );
    }

    /// The example and the filters `docs/notifications.md` shows.
    #[test]
    fn documented_example_and_filters_work() {
        let subject = "[kiln] {{ project }} #{{ build.id }} {{ build.state }}\
{% if build.reason %}: {{ build.reason }}{% endif %}";
        let body = r#"{{ project }} build #{{ build.id }} {{ build.state }} after {{ build.duration }}.
Started by {{ build.requested_by|default("the scheduler") }} on {{ build.branch }}{% if build.commit %} at {{ build.commit|short }}{% endif %}.
{% if log_tail %}

{{ log_tail|tail(10) }}
{% endif %}
{% for a in artifacts %}
{% if loop.first %}

Artifacts:
{% endif %}
  {{ a.name }} ({{ a.size_human }}) {{ a.url }}
{% endfor %}

{{ url }}
{% if unsubscribe_url %}
Stop these mails: {{ unsubscribe_url }}
{% endif %}
"#;
        for event in EVENTS.iter().filter(|e| **e != "slave_offline") {
            assert_eq!(check(event, subject, body), Ok(()), "{event}");
        }
        let r = render(subject, body, &sample("succeeded")).unwrap();
        assert_eq!(r.subject, "[kiln] board #12 succeeded");
        assert_eq!(
            r.text,
            "board build #12 succeeded after 3m 12s.
Started by alice on main at 3f9c2b7e1d4a.

Artifacts:
  board.img (1.0 GiB) https://kiln.example.org/api/builds/12/artifacts/board.img
  board-sdk.tar.xz (48.3 MiB) https://kiln.example.org/api/builds/12/artifacts/board-sdk.tar.xz

https://kiln.example.org/builds/12
Stop these mails: https://kiln.example.org/unsubscribe#sample-token
"
        );

        let mut ctx = sample("release");
        ctx.build.as_mut().unwrap().requested_by = None;
        ctx.build.as_mut().unwrap().release = None;
        let cases = [
            ("{{ build.requested_by|default('x') }}|{{ build.requested_by|d('y') }}", "x|y"),
            ("{{ ''|default('e', true) }}{{ project|default('e', true) }}", "eboard"),
            ("{{ project|truncate(3) }} {{ 'kiln'|truncate(3, '…') }} {{ 'ab'|truncate(3) }}", "... ki… ab"),
            ("{{ 'a\nb\nc'|tail(2) }}|{{ build.commit|short }}|{{ build.commit|short(4) }}", "b\nc|3f9c2b7e1d4a|3f9c"),
            ("{{ artifacts|length }} {{ artifacts|count }} {{ project|length }}", "2 2 5"),
            ("{{ artifacts|map(attribute='name')|join(', ') }}", "board.img, board-sdk.tar.xz"),
            ("{{ artifacts|selectattr('size', 'gt', 1000000000)|map(attribute='name')|join }}", "board.img"),
            ("{{ artifacts|rejectattr('size', 'gt', 1000000000)|map(attribute='name')|join }}", "board-sdk.tar.xz"),
            ("{{ (artifacts|sort(attribute='size')|first).name }} {{ (artifacts|reverse|last).name }}", "board-sdk.tar.xz board.img"),
            ("{{ [2, 1, 2]|unique|list }} {{ [2, 1]|sum }} {{ [2, 1]|min }} {{ [2, 1]|max }}", "[2, 1] 3 1 2"),
            ("{{ 'a b'|upper }} {{ 'A'|lower }} {{ 'a b'|title }} {{ 'ab'|capitalize }} [{{ ' t '|trim }}]", "A B a A B Ab [t]"),
            ("{{ 'a-b'|replace('-', '+') }} {{ 'a\nb'|lines|length }} {{ 'a,b'|split(',')|join(';') }}", "a+b 2 a;b"),
            ("{{ 'a\nb'|indent(2) }}|{{ 'a\nb'|indent(2, true) }}", "a\n  b|  a\n  b"),
            ("{{ '%s #%d'|format(project, build.id) }}", "board #12"),
            ("{{ 2.25|round(1) }} {{ '3'|int }} {{ '1.5'|float }} {{ -2|abs }} {{ 7|string }}", "2.2 3 1.5 2 7"),
            ("{{ build.release|default('')|upper }}[{{ build.release }}]", "[]"),
            ("{% set n = artifacts|length %}{{ n ~ '!' }} {{ 'y' if n else 'n' }} {{ build.commit[:8] }}", "2! y 3f9c2b7e"),
            ("{% for a in artifacts %}{{ loop.index }}{{ loop.first }}{{ loop.last }}{{ loop.length }} {% endfor %}", "1TrueFalse2 2FalseTrue2"),
            ("{% for a in [] %}x{% else %}(none){% endfor %}{# c #}", "(none)"),
            ("{% if build.release is none and build is defined and build.state in ['succeeded'] %}ok{% endif %}", "ok"),
            ("a  {%- if true %} b {% endif -%}  c", "a b c"),
        ];
        for (body, want) in cases {
            let got = render("s", body, &ctx).unwrap_or_else(|e| panic!("{body}: {e}"));
            assert_eq!(got.text, format!("{want}\n"), "{body}");
        }
    }

    #[test]
    fn runaway_templates_stop() {
        let e = check(
            "failed",
            "s",
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        )
        .unwrap_err();
        assert_eq!(e.field, "body");
        assert!(e.message.contains("fuel"), "{}", e.message);
        let e = check("failed", "s", "{% include 'x' %}").unwrap_err();
        assert_eq!(e.line, Some(1));
    }
}
