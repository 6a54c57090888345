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
    #[serde(default)]
    pub path: Option<String>,
    /// The team that owns the project; its members hold their role on it. Admins may leave
    /// it out (only admins then reach a private project).
    #[serde(default)]
    pub team: Option<String>,
    /// `private` (the default: only the team sees it) or `public` (everyone signed in).
    #[serde(default)]
    pub visibility: Option<Visibility>,
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
            path: self.path.clone().map(Some),
            team: None,
            visibility: None,
            source_rewrites: None,
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
    /// The directory of the branch the build runs in (where its `kiln.toml` is), like
    /// `images/board`, for a repository holding several image configurations; `null`: the top.
    #[serde(default, with = "double_option")]
    pub path: Option<Option<String>>,
    /// Moves the project to another team (a maintainer of both, or an admin); `null`: no team
    /// (admins only).
    #[serde(default, with = "double_option")]
    pub team: Option<Option<String>>,
    #[serde(default)]
    pub visibility: Option<Visibility>,
    /// Internal apt mirror URL → public URL, applied (after the site's `[sources.rewrite]`
    /// map) when the project's builds' apt sources are shown; replaces the whole map.
    #[serde(default)]
    pub source_rewrites: Option<std::collections::BTreeMap<String, String>>,
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
    /// The directory of the branch its builds run in; absent: the top.
    #[serde(default)]
    pub path: Option<String>,
    /// When the schedule runs next.
    #[serde(default, with = "crate::ts::option")]
    pub next_run: Option<DateTime<Utc>>,
    /// Bytes of logs and artifacts the project's builds keep on the master.
    pub disk_bytes: i64,
    #[serde(with = "crate::ts")]
    pub created_at: DateTime<Utc>,
    /// The newest build of the project, if any.
    pub last_build: Option<BuildId>,
    pub last_state: Option<BuildState>,
    /// The team that owns the project.
    #[serde(default)]
    pub team: Option<String>,
    #[serde(default)]
    pub visibility: Visibility,
    /// What the person asking may do with it (absent in contexts without a person).
    #[serde(default)]
    pub role: Option<Role>,
    /// Internal apt mirror URL → public URL for the project's builds' apt sources.
    #[serde(default)]
    pub source_rewrites: std::collections::BTreeMap<String, String>,
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
    /// What a release is for (release builds only; at most 10,000 characters).
    #[serde(default)]
    pub notes: Option<String>,
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
    /// The directory of the branch it ran in (its project's `path` when it was requested).
    #[serde(default)]
    pub path: Option<String>,
    pub slave: Option<String>,
    /// The build this one retries (after its slave was lost).
    pub retry_of: Option<BuildId>,
    pub log_lines: i64,
    #[serde(with = "crate::ts")]
    pub created_at: DateTime<Utc>,
    #[serde(default, with = "crate::ts::option")]
    pub dispatched_at: Option<DateTime<Utc>>,
    #[serde(default, with = "crate::ts::option")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, with = "crate::ts::option")]
    pub finished_at: Option<DateTime<Utc>>,
    /// The notes given with a release build.
    #[serde(default)]
    pub release_notes: Option<String>,
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
    #[serde(with = "crate::ts")]
    pub expires_at: DateTime<Utc>,
    pub revoked: bool,
    #[serde(with = "crate::ts")]
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
    #[serde(with = "crate::ts")]
    pub previous_valid_until: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slave {
    pub id: SlaveId,
    pub name: String,
    pub online: bool,
    /// A disabled slave stays connected and finishes the builds it holds, but is given no new
    /// ones until it is enabled again.
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
    #[serde(default, with = "crate::ts::option")]
    pub last_seen: Option<DateTime<Utc>>,
    pub builds: Vec<BuildId>,
    /// What the slave found on its machine when it last connected.
    #[serde(default)]
    pub capabilities: Option<Capabilities>,
}

/// What a slave's machine offers image tools, probed by the slave at each connection (and
/// printed by `kiln-slave doctor`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Tool → version (`"mmdebstrap": "1.3.5"`; `"unknown"` for a tool found on `PATH` that no
    /// Debian package installed).
    pub tools: std::collections::BTreeMap<String, String>,
    /// `/dev/kvm` opens for the slave.
    pub kvm: bool,
    /// `/dev/loop-control` is there.
    #[serde(rename = "loop")]
    pub loop_devices: bool,
    /// The kernel has device-mapper (`kpartx` needs it).
    pub device_mapper: bool,
    /// Foreign architectures run through an enabled qemu-user binfmt entry.
    pub binfmt: Vec<String>,
    /// Free space in the slave's work dir.
    pub free_disk_bytes: u64,
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
    /// `ok`, or `unavailable` (HTTP 503) while the database does not answer or its schema is
    /// not the one this master needs.
    pub status: String,
    /// `up`, or `down: <why>`.
    pub database: String,
    /// Where the schema stands against the master's migrations: `current (migration 11 (image
    /// record))`, or what is wrong ("the database is at migration 10 (notifications); this
    /// master needs 11 (image record): run `kiln-master migrate`").
    #[serde(default)]
    pub schema: String,
    /// What is wrong, in words, when `status` is `unavailable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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

/// A project's `path`: a relative directory inside its branch, like `images/board`: 1–200 bytes
/// of `/`-separated names, none empty, `.` or `..`, no leading or trailing `/`, no control
/// characters or backslashes. Checked where a project names it and again on the slave.
pub fn check_branch_dir(p: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("path \"{}\" {why}", p.escape_debug()));
    if p.is_empty() || p.len() > 200 {
        return bad("must be 1-200 bytes long");
    }
    if p.starts_with('/') {
        return bad("must be relative to the top of the branch (no leading /)");
    }
    if p.chars()
        .any(|c| c.is_control() || c == '\\' || is_bidi_control(c))
    {
        return bad("has a control character or a backslash");
    }
    if p.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return bad("must name directories: no empty, . or .. parts and no trailing /");
    }
    Ok(())
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

// ---- People, teams, roles, sessions and tokens -------------------------------------------

/// What someone may do with a project, from least to most. `Admin` is site-wide (an account
/// flag); on a team, members are viewers, builders or maintainers.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees projects, builds, logs and artifacts.
    #[default]
    Viewer,
    /// Also starts, cancels and rebuilds builds, and starts release builds.
    Builder,
    /// Also edits the project's settings.
    Maintainer,
    /// Everything: users, teams, slaves, every project.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Builder => "builder",
            Role::Maintainer => "maintainer",
            Role::Admin => "admin",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "viewer" => Role::Viewer,
            "builder" => Role::Builder,
            "maintainer" => Role::Maintainer,
            "admin" => Role::Admin,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Only the project's team (and admins); everyone else gets 404.
    #[default]
    Private,
    /// Everyone signed in may view it.
    Public,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Private => "private",
            Visibility::Public => "public",
        }
    }
}

/// `GET /auth/providers`: the ways to sign in on this master.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Providers {
    /// Whether `POST /auth/local/login` is on.
    pub local: bool,
    pub providers: Vec<ProviderInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderInfo {
    /// `oidc:NAME` or `launchpad` (as in group mappings).
    pub id: String,
    /// Shown on the login page.
    pub display_name: String,
    /// Where the browser goes to sign in (`/auth/oidc/NAME/login`, `/auth/launchpad/login`).
    pub login_url: String,
}

/// `POST /auth/local/login`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalLogin {
    pub username: String,
    pub password: String,
}

/// A team someone belongs to, and their role on its projects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamRole {
    pub team: String,
    pub role: Role,
}

/// `GET /api/me`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Me {
    pub username: String,
    pub admin: bool,
    pub email: Option<String>,
    pub teams: Vec<TeamRole>,
    /// Send it as `X-CSRF-Token` with every state-changing request made with the session
    /// cookie; absent when signed in with an API token.
    pub csrf_token: Option<String>,
    /// How this request was signed in: `session` or `token`.
    pub via: String,
    /// The password was set by an admin and should be changed.
    #[serde(default)]
    pub must_change_password: bool,
    /// The highest role an API token carries (tokens only).
    #[serde(default)]
    pub token_role: Option<Role>,
}

/// `POST /api/me/password`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    pub current: String,
    pub new: String,
}

/// `GET /api/users` items.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub username: String,
    pub email: Option<String>,
    pub admin: bool,
    /// Sign-in methods linked to the account: `local`, `oidc:NAME`, `launchpad`.
    pub logins: Vec<String>,
    pub teams: Vec<TeamRole>,
    #[serde(with = "crate::ts")]
    pub created_at: DateTime<Utc>,
    #[serde(default, with = "crate::ts::option")]
    pub last_login: Option<DateTime<Utc>>,
}

/// `POST /api/users`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub username: String,
    /// Left out: a one-time password is made and returned once.
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub admin: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserCreated {
    pub user: User,
    /// The one-time password, when the request gave none; shown only now.
    pub password: Option<String>,
}

/// `GET /api/teams` items.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Team {
    pub name: String,
    pub members: Vec<Member>,
    pub projects: Vec<String>,
    #[serde(with = "crate::ts")]
    pub created_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub username: String,
    pub role: Role,
    /// `manual` (set by an admin) or the provider whose group mapping made it (`oidc:NAME`,
    /// `launchpad`).
    pub source: String,
}

/// `POST /api/teams`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTeam {
    pub name: String,
}

/// `PUT /api/teams/{name}/members/{user}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetMember {
    pub role: Role,
}

/// `GET/POST /api/teams/{name}/mappings`: members of `group` at `provider` get `role` on the
/// team at sign-in (and, for Launchpad, at each refresh).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mapping {
    pub id: i64,
    pub team: String,
    pub provider: String,
    pub group: String,
    pub role: Role,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMapping {
    /// `launchpad` or `oidc:NAME`.
    pub provider: String,
    pub group: String,
    pub role: Role,
}

/// `GET /api/tokens` items (the token itself is never shown again).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    pub id: i64,
    pub name: String,
    pub role: Role,
    #[serde(with = "crate::ts")]
    pub created_at: DateTime<Utc>,
    #[serde(default, with = "crate::ts::option")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default, with = "crate::ts::option")]
    pub last_used: Option<DateTime<Utc>>,
}

/// `POST /api/tokens`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewApiToken {
    pub name: String,
    /// At most the owner's own role; default: the owner's.
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default, with = "crate::ts::option")]
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiTokenCreated {
    pub token: ApiToken,
    /// `Authorization: Bearer <secret>`; shown only now.
    pub secret: String,
}

/// `GET /api/audit` items, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    #[serde(with = "crate::ts")]
    pub at: DateTime<Utc>,
    /// Who did it (a user name), when known.
    pub actor: Option<String>,
    /// `login`, `login_refused`, `logout`, `build_requested`, `build_cancelled`,
    /// `memberships_refreshed`, ... (the list is in `docs/api.md`)
    pub action: String,
    /// What it was done to (`project board-a`, `build 12`, `team boards`, ...).
    pub target: Option<String>,
    /// The client's address.
    pub address: Option<String>,
    pub detail: serde_json::Value,
}
