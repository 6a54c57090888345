//! JSON bodies of the REST API (`docs/api.md` documents each route).

use crate::{BuildId, BuildState, SlaveId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    pub name: String,
    pub branch_url: String,
    #[serde(default)]
    pub branch: Option<String>,
    /// Debian architecture a slave must have; any slave when absent.
    #[serde(default)]
    pub architecture: Option<String>,
    /// Tags a slave must all carry.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// How many times a build lost with its slave is queued again (default 1).
    #[serde(default)]
    pub lost_retries: Option<i32>,
    /// Any of the settings a PATCH takes may be given at creation too.
    #[serde(default)]
    pub schedule: Option<String>,
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub only_if_changed: Option<bool>,
    #[serde(default)]
    pub priority: Option<i32>,
    #[serde(default)]
    pub timeout_minutes: Option<i32>,
    #[serde(default)]
    pub keep_builds: Option<i32>,
    #[serde(default)]
    pub keep_days: Option<i32>,
    #[serde(default)]
    pub max_running: Option<i32>,
    #[serde(default)]
    pub allow_emulation: Option<bool>,
    #[serde(default)]
    pub backend: Option<String>,
}

impl CreateProject {
    /// The settings part, as a PATCH would carry them.
    pub fn settings(&self) -> PatchProject {
        PatchProject {
            branch_url: None,
            branch: None,
            architecture: None,
            tags: None,
            lost_retries: None,
            schedule: self.schedule.clone().map(Some),
            timezone: self.timezone.clone().map(Some),
            only_if_changed: self.only_if_changed,
            priority: self.priority,
            timeout_minutes: self.timeout_minutes.map(Some),
            keep_builds: self.keep_builds.map(Some),
            keep_days: self.keep_days.map(Some),
            max_running: self.max_running.map(Some),
            allow_emulation: self.allow_emulation,
            backend: self.backend.clone().map(Some),
        }
    }
}

/// Fields absent from a PATCH keep their value; `null` clears an optional one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchProject {
    #[serde(default)]
    pub branch_url: Option<String>,
    #[serde(default)]
    pub branch: Option<String>,
    /// `null` clears the requirement.
    #[serde(default, with = "double_option")]
    pub architecture: Option<Option<String>>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    #[serde(default)]
    pub lost_retries: Option<i32>,
    /// `"daily HH:MM"` or a five-field cron expression.
    #[serde(default, with = "double_option")]
    pub schedule: Option<Option<String>>,
    /// IANA time zone of the schedule; `null`: the master's.
    #[serde(default, with = "double_option")]
    pub timezone: Option<Option<String>>,
    /// Scheduled builds run only when the branch moved since the last successful build.
    #[serde(default)]
    pub only_if_changed: Option<bool>,
    /// Priority of the project's builds (higher first); one-off builds may set their own.
    #[serde(default)]
    pub priority: Option<i32>,
    #[serde(default, with = "double_option")]
    pub timeout_minutes: Option<Option<i32>>,
    /// Keep the newest N builds (release builds are always kept).
    #[serde(default, with = "double_option")]
    pub keep_builds: Option<Option<i32>>,
    /// Keep builds for N days (release builds are always kept).
    #[serde(default, with = "double_option")]
    pub keep_days: Option<Option<i32>>,
    /// At most N builds of this project run at once.
    #[serde(default, with = "double_option")]
    pub max_running: Option<Option<i32>>,
    /// Slaves that emulate the project's architecture (qemu-user) may take its builds.
    #[serde(default)]
    pub allow_emulation: Option<bool>,
    /// The backend the branch's `kiln.toml` uses (e.g. `mmdebstrap`): only slaves that report it
    /// take the project's builds; `null`: any slave.
    #[serde(default, with = "double_option")]
    pub backend: Option<Option<String>>,
}

/// Distinguishes "absent" (`None`) from "null" (`Some(None)`).
mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    pub fn serialize<S: Serializer, T: Serialize>(
        v: &Option<Option<T>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            None => s.serialize_none(),
            Some(inner) => inner.serialize(s),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    pub name: String,
    pub branch_url: String,
    pub branch: String,
    pub architecture: Option<String>,
    pub tags: Vec<String>,
    pub lost_retries: i32,
    pub schedule: Option<String>,
    pub timezone: Option<String>,
    pub only_if_changed: bool,
    pub priority: i32,
    pub timeout_minutes: Option<i32>,
    pub keep_builds: Option<i32>,
    pub keep_days: Option<i32>,
    pub max_running: Option<i32>,
    pub allow_emulation: bool,
    /// Only slaves reporting this backend take the project's builds.
    #[serde(default)]
    pub backend: Option<String>,
    /// When the schedule runs next.
    pub next_run: Option<DateTime<Utc>>,
    /// Bytes of logs and artifacts the project's builds keep on the master.
    pub disk_bytes: i64,
    pub created_at: DateTime<Utc>,
    /// The newest build of the project, if any.
    pub last_build: Option<BuildId>,
    pub last_state: Option<BuildState>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestBuild {
    /// A release name makes this a release build, pinned to `commit` or the branch head.
    #[serde(default)]
    pub release: Option<String>,
    /// Build this exact commit (full or abbreviated SHA).
    #[serde(default)]
    pub commit: Option<String>,
    /// Overrides the project's priority for this build (higher first).
    #[serde(default)]
    pub priority: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Build {
    pub id: BuildId,
    pub project: String,
    pub state: BuildState,
    /// Why the build is in its state: always set for failed, cancelled and lost builds.
    pub reason: Option<String>,
    /// The commit that was built (known once the slave fetched the branch).
    pub commit: Option<String>,
    /// The commit that was asked for, if one was.
    pub requested_commit: Option<String>,
    pub release: Option<String>,
    /// `manual`, `schedule`, `release` or `rebuild`.
    pub trigger: String,
    pub priority: i32,
    /// Why a queued build still waits ("no online slave with tag imx6").
    pub waiting_reason: Option<String>,
    /// The build this one rebuilds (same commit).
    pub rebuild_of: Option<BuildId>,
    pub branch_url: String,
    pub branch: String,
    pub slave: Option<String>,
    /// The build this one retries (after its slave was lost).
    pub retry_of: Option<BuildId>,
    pub log_lines: i64,
    pub created_at: DateTime<Utc>,
    pub dispatched_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub name: String,
    pub size: i64,
    pub sha256: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSlave {
    pub name: String,
    /// The tags this slave may have: it can declare fewer, never others.
    #[serde(default)]
    pub tags: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaveCreated {
    pub id: SlaveId,
    pub name: String,
    /// Shown once; only its hash is stored.
    pub token: String,
    /// Tags the admin gave with the registration token (for `kiln-slave register`).
    #[serde(default)]
    pub tags: Vec<String>,
}

/// `POST /api/slaves/registration-tokens`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRegistrationToken {
    /// The slave name it may register; any when absent.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// Seconds it stays valid.
    pub expires_in_s: i64,
    /// How many slaves it may register.
    pub uses: i32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationToken {
    pub id: i64,
    pub name: Option<String>,
    pub tags: Vec<String>,
    pub uses_left: i32,
    pub expires_at: DateTime<Utc>,
    pub revoked: bool,
    pub created_at: DateTime<Utc>,
    /// Only in the answer to its creation (only its hash is stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The command to run on the board, with the token (only at creation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

/// `POST /api/slaves/register` with `Authorization: Bearer <registration token>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterSlave {
    pub name: String,
}

/// `POST /api/slaves/{name}/rotate-token`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRotated {
    /// The new token (shown once); the connected slave receives it over its connection.
    pub token: String,
    /// Until then the previous token still works.
    pub previous_valid_until: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slave {
    pub id: SlaveId,
    pub name: String,
    pub online: bool,
    /// A disabled slave is refused when it connects.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Finishing its builds, taking no new ones.
    #[serde(default)]
    pub draining: bool,
    pub arch: Option<String>,
    pub tags: Vec<String>,
    pub backends: Vec<String>,
    pub capacity: i32,
    /// Foreign architectures it runs through emulation.
    #[serde(default)]
    pub emulates: Vec<String>,
    pub version: Option<String>,
    pub last_seen: Option<DateTime<Utc>>,
    pub builds: Vec<BuildId>,
}

/// What the console offers users to choose from: from the configuration, else from the slaves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    pub architectures: Vec<String>,
    pub series: Vec<String>,
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok`, or `unavailable` (HTTP 503) while the database does not answer.
    pub status: String,
    /// `up`, or `down: <why>`.
    pub database: String,
    pub version: String,
    pub protocol: u16,
}

/// Every API error has this body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What was wrong and what to do.
    pub error: String,
    /// Stable machine-readable code, e.g. `not_found`, `invalid`, `conflict`, `unavailable`.
    pub code: String,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub field: Option<String>,
}

/// Names of projects, slaves and releases: 1–63 characters of `a-z A-Z 0-9 . _ -`, starting with a
/// letter or digit.
pub fn validate_name(what: &str, name: &str) -> Result<(), String> {
    let ok_first = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_rest = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || name.len() > 63 || !ok_first || !ok_rest {
        return Err(format!(
            "{what} '{name}' is not valid: use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
        ));
    }
    Ok(())
}

/// Artifact file names: one path component, no leading dot, at most 200 bytes.
/// Architecture and backend names: 1–32 of `a-z 0-9 -`, not starting with `-`. Checked where a
/// project names them and where a slave reports them.
pub fn is_word(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 32
        && !v.starts_with('-')
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Percent-encodes everything but RFC 3986's unreserved characters (a path segment, or the
/// `filename*` of a `Content-Disposition`).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Characters that reorder text on screen (bidi controls): a name could show as another.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// An artifact's name: one file name, checked on the slave before upload and on the master on
/// arrival. No path separators, no leading `.`, no `"`, `%`, `?` or `#` (they would change the
/// meaning of a URL or a header), no control or bidi characters.
pub fn validate_artifact_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 200
        || name.starts_with('.')
        || name.contains(['/', '\\', '\0', '"', '%', '?', '#'])
        || name.chars().any(|c| c.is_control() || is_bidi_control(c))
    {
        return Err(format!(
            "artifact name '{}' is not valid: one file name, not starting with '.', without '/', '\\', '\"', '%', '?', '#', control or bidi characters",
            name.escape_debug()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("project", "board-a_1.0").is_ok());
        for bad in ["", "-x", ".x", "a/b", "a b", &"x".repeat(64)] {
            assert!(validate_name("project", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn artifact_names() {
        assert!(validate_artifact_name("disk.img.zst").is_ok());
        assert!(validate_artifact_name("Ünïcode board image.img").is_ok());
        for bad in [
            "",
            "../x",
            ".hidden",
            "a/b",
            "a\nb",
            "a?b.txt",
            "ok\"; filename=\"evil.exe",
            "100%.img",
            "a#b",
            "evil\u{202e}gmi.exe",
        ] {
            assert!(validate_artifact_name(bad).is_err(), "{bad}");
        }
        assert_eq!(percent_encode("a b/ü?"), "a%20b%2F%C3%BC%3F");
    }

    #[test]
    fn patch_distinguishes_null_from_absent() {
        let p: PatchProject = serde_json::from_str(r#"{"architecture":null}"#).unwrap();
        assert_eq!(p.architecture, Some(None));
        let p: PatchProject = serde_json::from_str(r#"{"architecture":"arm64"}"#).unwrap();
        assert_eq!(p.architecture, Some(Some("arm64".into())));
        let p: PatchProject = serde_json::from_str("{}").unwrap();
        assert_eq!(p.architecture, None);
        assert!(serde_json::from_str::<PatchProject>(r#"{"nope":1}"#).is_err());
    }
}
