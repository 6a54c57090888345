//! The one TOML configuration file that serves both the master and the slave.
//!
//! Every key has a default in code. Unknown keys are refused (the error names them), and so are
//! values out of range, naming the key. Relative paths are resolved once, against `data_dir`,
//! which is itself relative to the directory holding the file.

use serde::Deserialize;
use std::path::{Path, PathBuf};

pub const CONFIG_VERSION: u32 = 1;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Format version of this file; only 1 exists.
    #[serde(default = "one")]
    pub version: u32,
    /// Where state lives; relative to the config file's directory. Default: that directory.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub master: MasterConfig,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub slave: SlaveConfig,
    /// Who may sign in and how (`[auth]`).
    #[serde(default)]
    pub auth: AuthConfig,
    /// Mail and webhooks (`[notify]`, `[notify.smtp]`).
    #[serde(default)]
    pub notify: NotifyConfig,
    /// What builds' apt sources look like when shown (`[sources]`).
    #[serde(default)]
    pub sources: SourcesConfig,
    /// Signing builds' `SHA256SUMS` (`[signing]`).
    #[serde(default)]
    pub signing: SigningConfig,
    /// Who may scrape `GET /metrics` besides site admins (`[metrics]`).
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Where artifacts are kept (`[storage]`): the data dir or an S3-compatible object store.
    #[serde(default)]
    pub storage: StorageConfig,
}

/// `[storage]`: where the master keeps artifacts (logs always stay in `master.storage_dir`).
/// `kind = "filesystem"` (the default) keeps them under `master.storage_dir`; `kind = "s3"` in a
/// bucket of an S3-compatible object store, with the credentials in a file of their own.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub kind: StorageKind,
    /// The store's URL, e.g. `https://s3.example.net` or `http://127.0.0.1:3900` (s3).
    pub endpoint: Option<String>,
    /// The bucket artifacts go to (s3).
    pub bucket: Option<String>,
    /// The region the store expects in signatures (s3; Garage's default is `garage`).
    pub region: String,
    /// A TOML file (relative to the data dir) with `access_key_id` and `secret_access_key`
    /// (s3): the secrets never sit in this file.
    pub credentials_file: Option<PathBuf>,
    /// Path-style requests (`endpoint/bucket/key`) rather than virtual-hosted ones
    /// (`bucket.endpoint/key`); most self-hosted stores want path style.
    pub path_style: bool,
    /// A prefix before every key (`{prefix}/builds/{id}/{name}`), to share a bucket.
    pub prefix: Option<String>,
    /// Downloads answer 307 to a presigned URL of the store, which users must be able to
    /// reach; off: the master streams the bytes itself.
    pub presign_downloads: bool,
    /// How long a presigned download URL stays valid, in seconds.
    pub presign_secs: u32,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            kind: StorageKind::Filesystem,
            endpoint: None,
            bucket: None,
            region: "us-east-1".into(),
            credentials_file: None,
            path_style: true,
            prefix: None,
            presign_downloads: false,
            presign_secs: 300,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    #[default]
    Filesystem,
    S3,
}

/// The file `storage.credentials_file` names.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<hidden>")
            .finish()
    }
}

impl StorageConfig {
    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_string(),
            })
        };
        if self.kind == StorageKind::Filesystem {
            for (key, set) in [
                ("storage.endpoint", self.endpoint.is_some()),
                ("storage.bucket", self.bucket.is_some()),
                ("storage.credentials_file", self.credentials_file.is_some()),
                ("storage.prefix", self.prefix.is_some()),
                ("storage.presign_downloads", self.presign_downloads),
            ] {
                if set {
                    return invalid(key, "is for kind = \"s3\" only");
                }
            }
            return Ok(());
        }
        match self.endpoint.as_deref() {
            None => return invalid("storage.endpoint", "is needed for kind = \"s3\""),
            Some(e) if !(e.starts_with("http://") || e.starts_with("https://")) => {
                return invalid(
                    "storage.endpoint",
                    &format!("'{e}' is not an http:// or https:// URL"),
                )
            }
            Some(_) => {}
        }
        match self.bucket.as_deref() {
            None => return invalid("storage.bucket", "is needed for kind = \"s3\""),
            Some(b) if b.is_empty() || b.contains('/') => {
                return invalid("storage.bucket", &format!("'{b}' is not a bucket name"))
            }
            Some(_) => {}
        }
        if self.region.is_empty() {
            return invalid("storage.region", "must not be empty");
        }
        if self
            .credentials_file
            .as_ref()
            .is_none_or(|f| f.as_os_str().is_empty())
        {
            return invalid(
                "storage.credentials_file",
                "is needed for kind = \"s3\" (a file with access_key_id and secret_access_key)",
            );
        }
        if let Some(p) = &self.prefix {
            if p.is_empty() || p.starts_with('/') || p.ends_with('/') || p.contains("//") {
                return invalid(
                    "storage.prefix",
                    &format!("'{p}' must be path segments like 'kiln/prod', without a leading or trailing '/'"),
                );
            }
        }
        if !(1..=7 * 24 * 3600).contains(&self.presign_secs) {
            return invalid(
                "storage.presign_secs",
                "must be between 1 and 604800 (7 days)",
            );
        }
        Ok(())
    }
}

/// `[metrics]`: `GET /metrics` (Prometheus) answers site admins, and with `token_file` also
/// `Authorization: Bearer <the token in that file>` (for a Prometheus server that has no account).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// A file holding the scrape token (relative to the data dir), read at start; absent: only
    /// site admins may read the metrics.
    pub token_file: Option<PathBuf>,
}

/// `[signing]`: the key the master signs each build's `SHA256SUMS` with (minisign), so that a
/// download can be verified away from Kiln (`docs/image-record.md`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningConfig {
    /// A minisign secret key file (`minisign -G -s FILE`), relative to the data dir; absent: no
    /// signatures.
    pub minisign_key_file: Option<PathBuf>,
    /// The key's password, in a file (relative to the data dir); absent: the key is not
    /// encrypted (`minisign -G -W`).
    pub password_file: Option<PathBuf>,
}

/// `[sources]`: how the apt sources a build used are shown (issue 18).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesConfig {
    /// `[sources.rewrite]`: internal mirror URL → public URL, for every project (a project's
    /// own `source_rewrites` are applied after it), e.g.
    /// `"http://mirror.internal/debian" = "https://deb.debian.org/debian"`.
    pub rewrite: std::collections::BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MasterConfig {
    /// Address the HTTP server binds.
    pub listen: String,
    /// sha256 (hex) of the admin bearer token; `kiln-master init` writes it.
    pub admin_token_sha256: Option<String>,
    /// Logs and artifacts, relative to data_dir.
    pub storage_dir: PathBuf,
    /// Built web console (Trunk's dist), relative to data_dir; optional.
    pub console_dir: Option<PathBuf>,
    /// Accept `file:` URLs and local paths as branch URLs (for single-machine setups and tests).
    pub allow_file_urls: bool,
    /// Seconds between slave heartbeats (sent to slaves in the handshake).
    pub heartbeat_secs: u32,
    /// Seconds of silence after which a slave is lost and its builds are marked lost.
    pub lost_timeout_secs: u32,
    /// Largest text of one log frame, in bytes.
    pub log_chunk_bytes: u32,
    /// How many times a lost build is queued again unless the project says otherwise.
    pub lost_retries: i32,
    /// Time zone of schedules that name none (IANA); default: the machine's, else UTC.
    pub timezone: Option<String>,
    /// A scheduled time missed while the master was down runs once at start (never once per slot).
    pub catch_up_missed: bool,
    /// Seconds between retention passes.
    pub retention_interval_secs: u32,
    /// Architectures offered to users; default: those the slaves have.
    pub architectures: Vec<String>,
    /// Distribution series offered to users.
    pub series: Vec<String>,
    /// HTTPS and WSS on `listen` with this certificate and key (PEM files, relative to data_dir
    /// or absolute); re-read on SIGHUP.
    pub tls: Option<TlsFiles>,
    /// Hosts branch URLs may name (`git.example.org`); empty: any host. Checked when a project
    /// is created or its URL changed, and before each build is queued.
    pub branch_hosts: Vec<String>,
    /// Serve plain HTTP on an address other than loopback (behind a TLS proxy, say).
    pub allow_plain_http: bool,
    /// After a slave's token is rotated, the old one keeps working this long (seconds).
    pub token_grace_secs: u32,
    /// Limits and time-outs of the connections the master accepts (`[master.connections]`).
    pub connections: ConnectionLimits,
    /// Quotas: log, artifacts per build, storage per project (`[master.limits]`).
    pub limits: Limits,
    /// The URL people reach the console at (`https://kiln.example.org`): sign-in providers
    /// return there, and it is an allowed `Origin`. Required when a sign-in provider is set.
    pub public_url: Option<String>,
}

/// `[auth]`: sign-in methods, sessions and login rate limits.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Accounts with a password kept by Kiln (`kiln-master user add`).
    pub local_accounts: bool,
    /// A session ends after this long without a request (seconds).
    pub session_idle_secs: u64,
    /// A session ends this long after sign-in whatever happens (seconds).
    pub session_max_secs: u64,
    /// Origins (`https://host[:port]`) besides `master.public_url` (or, without it, the
    /// request's own host) that may send state-changing requests with the session cookie.
    pub allowed_origins: Vec<String>,
    /// Failed sign-ins allowed per account, and per client address, in `login_window_secs`.
    pub login_attempts_per_account: u32,
    pub login_attempts_per_address: u32,
    pub login_window_secs: u64,
    /// OpenID Connect providers (`[[auth.oidc]]`), any number.
    pub oidc: Vec<OidcProvider>,
    /// Launchpad (OpenID 2.0 with the teams extension), when the section is present.
    pub launchpad: Option<LaunchpadConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            local_accounts: true,
            session_idle_secs: 8 * 3600,
            session_max_secs: 7 * 24 * 3600,
            allowed_origins: Vec::new(),
            login_attempts_per_account: 5,
            login_attempts_per_address: 20,
            login_window_secs: 900,
            oidc: Vec::new(),
            launchpad: None,
        }
    }
}

/// One OpenID Connect provider.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcProvider {
    /// Short name used in routes (`/auth/oidc/{name}/login`) and mappings (`oidc:{name}`).
    pub name: String,
    /// Shown on the login page ("Sign in with …"); default: `name`.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Issuer URL; `{issuer}/.well-known/openid-configuration` is read at start-up.
    pub issuer: String,
    pub client_id: String,
    /// File holding the client secret (relative to data_dir); never the secret itself.
    pub client_secret_file: PathBuf,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// ID-token or userinfo claim that lists the person's groups.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Claim used as the Kiln user name.
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
}

fn default_scopes() -> Vec<String> {
    ["openid", "profile", "email"].map(String::from).to_vec()
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_username_claim() -> String {
    "preferred_username".into()
}

/// `[auth.launchpad]`: one OpenID 2.0 endpoint (default Ubuntu's), pinned.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LaunchpadConfig {
    /// Shown on the login page.
    pub display_name: String,
    /// The OpenID 2.0 endpoint requests go to and assertions must name as `openid.op_endpoint`.
    pub endpoint: String,
    /// Claimed identifiers must start with this.
    pub claimed_id_prefix: String,
    /// Launchpad's REST API, for team membership refreshes (`{api_url}/~{name}/super_teams`).
    pub api_url: String,
    /// How often memberships are refreshed (seconds).
    pub refresh_secs: u64,
}

impl Default for LaunchpadConfig {
    fn default() -> Self {
        LaunchpadConfig {
            display_name: "Launchpad".into(),
            endpoint: "https://login.ubuntu.com/+openid".into(),
            claimed_id_prefix: "https://login.ubuntu.com/+id/".into(),
            api_url: "https://api.launchpad.net/devel".into(),
            refresh_secs: 3600,
        }
    }
}

/// How many connections the master holds and how long it waits for them: what keeps a rude
/// network (connections that never finish their request, a flood from one address) from
/// exhausting its file descriptors and memory.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionLimits {
    /// Connections open at once, WebSockets included; more are closed as soon as accepted.
    pub max_total: u32,
    /// Connections open at once from one IP address, WebSockets included.
    pub max_per_address: u32,
    /// Seconds a connection has to complete its TLS handshake and the headers of a request.
    pub header_read_secs: u32,
    /// Seconds a connection may sit with no request and no traffic (keep-alive) before it is
    /// closed; WebSockets are not affected.
    pub idle_secs: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_total: 4096,
            max_per_address: 256,
            header_read_secs: 10,
            idle_secs: 120,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The server's certificate chain (the server's certificate first).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            listen: "127.0.0.1:8080".into(),
            admin_token_sha256: None,
            storage_dir: "storage".into(),
            console_dir: None,
            allow_file_urls: false,
            heartbeat_secs: 5,
            lost_timeout_secs: 30,
            log_chunk_bytes: 64 * 1024,
            lost_retries: 1,
            timezone: None,
            catch_up_missed: true,
            retention_interval_secs: 600,
            architectures: vec![],
            series: vec![],
            tls: None,
            branch_hosts: vec![],
            allow_plain_http: false,
            token_grace_secs: 600,
            connections: ConnectionLimits::default(),
            limits: Limits::default(),
            public_url: None,
        }
    }
}

/// `[master.limits]`: quotas, each in bytes (integers), each finite (there is no "unlimited": a
/// slave and a branch are untrusted, so every one of them has a ceiling). A build that goes over
/// one fails naming it; see `docs/configuration.md`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// The largest stored log of one build. Lines past it are dropped and the build fails with
    /// "log limit of N exceeded"; the log so far is kept (whole lines).
    pub log_bytes: u64,
    /// The largest total of one build's artifacts.
    pub artifact_bytes: u64,
    /// The largest total of the artifacts a project keeps (over all its builds not yet removed
    /// by retention).
    pub project_storage_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            log_bytes: 1 << 30,
            artifact_bytes: 64 << 30,
            project_storage_bytes: 256 << 30,
        }
    }
}

impl Limits {
    /// The smallest log limit: room for the master's note that says the limit was reached.
    pub const MIN_LOG_BYTES: u64 = 4096;

    fn check(&self) -> Result<(), ConfigError> {
        let at_least = |key: &'static str, v: u64, min: u64| {
            if v < min {
                Err(ConfigError::Invalid {
                    key,
                    message: format!(
                        "is {v}, must be at least {min} (bytes; every limit is finite, there is no unlimited)"
                    ),
                })
            } else {
                Ok(())
            }
        };
        at_least(
            "master.limits.log_bytes",
            self.log_bytes,
            Self::MIN_LOG_BYTES,
        )?;
        at_least("master.limits.artifact_bytes", self.artifact_bytes, 1)?;
        at_least(
            "master.limits.project_storage_bytes",
            self.project_storage_bytes,
            1,
        )
    }
}

/// A byte count the way a person writes a limit: `1 GiB`, `64 MiB`, `512 KiB` when it is a whole
/// number of that unit, else `1500000 bytes` (exact, never rounded).
pub fn human_bytes(n: u64) -> String {
    for (unit, name) in [
        (1u64 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ] {
        if n >= unit && n.is_multiple_of(unit) {
            return format!("{} {name}", n / unit);
        }
    }
    if n == 1 {
        "1 byte".into()
    } else {
        format!("{n} bytes")
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `postgres://...`; when absent the master runs its own cluster inside data_dir.
    pub url: Option<String>,
    /// Directory of PostgreSQL's binaries for the embedded cluster; searched when absent.
    pub pg_bin_dir: Option<PathBuf>,
    /// Unprivileged user that runs the embedded cluster when the master runs as root.
    pub embedded_user: String,
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: None,
            pg_bin_dir: None,
            embedded_user: "postgres".into(),
            max_connections: 16,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlaveConfig {
    /// Base URL of the master, e.g. `http://127.0.0.1:8080`.
    pub master: Option<String>,
    /// The slave's token, or…
    pub token: Option<String>,
    /// …a file holding it (relative to data_dir).
    pub token_file: Option<PathBuf>,
    pub name: Option<String>,
    /// Scratch space for builds (relative to data_dir).
    pub work_dir: PathBuf,
    pub tags: Vec<String>,
    /// Builds run at once.
    pub capacity: u32,
    /// Overrides the architecture read from the machine.
    pub arch: Option<String>,
    /// Debian mirror for mmdebstrap; default: the first one the slave's own apt uses.
    pub mirror: Option<String>,
    /// Debian security archive for builds that use the slave's mirror (live-build's
    /// `use_slave_mirror`); default: the security archive the slave's own apt uses.
    pub security_mirror: Option<String>,
    /// How builds are confined (see docs/security.md): `user-namespace` (default: each build is
    /// root only inside a user namespace of its own, an unprivileged user id on the host) or
    /// `host-root` (builds run as the host's root inside their own mount, PID, IPC and UTS
    /// namespaces; needed by live-build, whose debootstrap makes device nodes; only for slaves
    /// dedicated to branches trusted with the machine).
    pub sandbox: SandboxMode,
    /// With `user-namespace` on a slave running as root: build N of those running at once is
    /// host user ids `sandbox_uid_base + N*65536` … `+65535` (the same for groups). Keep the
    /// range free of real users.
    pub sandbox_uid_base: u32,
    /// Bytes the slave's git cache (`git-cache/` in the work dir: a bare mirror per branch URL,
    /// so a build fetches only what is new, or nothing when its commit is already there) may
    /// hold; the least recently used mirrors are removed past it. 0 turns the cache off: each
    /// build then fetches its branch afresh, inside its sandbox.
    pub git_cache_bytes: u64,
    /// Bytes the slave's package cache (`apt-cache/` in the work dir: the package files its
    /// builds downloaded, kept for the next build of any project) may hold; the least recently
    /// used go first. 0 turns it off.
    pub apt_cache_bytes: u64,
    /// Bytes the slave's root file system cache (`rootfs-cache/` in the work dir: per project,
    /// the last root file system of an mmdebstrap build with `rootfs_cache = true`, reused while
    /// its inputs and the archive stay the same) may hold; the least recently used projects'
    /// go first. 0 turns it off.
    pub rootfs_cache_bytes: u64,
}

/// How a slave confines its builds (`slave.sandbox`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SandboxMode {
    UserNamespace,
    HostRoot,
}

/// The first host user id of build sandboxes (2^30: far above the ids distributions give to
/// users and to `/etc/subuid` ranges).
pub const DEFAULT_SANDBOX_UID_BASE: u32 = 1 << 30;

/// The default size of a slave's package cache (`slave.apt_cache_bytes`): 10 GiB.
pub const DEFAULT_APT_CACHE_BYTES: u64 = 10 << 30;

/// The default size of a slave's git cache (`slave.git_cache_bytes`): 2 GiB.
pub const DEFAULT_GIT_CACHE_BYTES: u64 = 2 << 30;

/// The default size of a slave's root file system cache (`slave.rootfs_cache_bytes`): 8 GiB.
pub const DEFAULT_ROOTFS_CACHE_BYTES: u64 = 8 << 30;

impl Default for SlaveConfig {
    fn default() -> Self {
        SlaveConfig {
            master: None,
            token: None,
            token_file: None,
            name: None,
            work_dir: "work".into(),
            tags: vec![],
            capacity: 1,
            arch: None,
            mirror: None,
            security_mirror: None,
            sandbox: SandboxMode::UserNamespace,
            sandbox_uid_base: DEFAULT_SANDBOX_UID_BASE,
            git_cache_bytes: DEFAULT_GIT_CACHE_BYTES,
            apt_cache_bytes: DEFAULT_APT_CACHE_BYTES,
            rootfs_cache_bytes: DEFAULT_ROOTFS_CACHE_BYTES,
        }
    }
}

/// `[notify]`: how notifications are sent (who gets them is data, in the database).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// Mail; without it, no mail is sent and mail subscriptions are refused.
    pub smtp: Option<SmtpConfig>,
    /// How long a delivery is retried before it is given up (`failed`), in seconds.
    pub retry_for_secs: u64,
    /// The first retry's delay (ms); each next one doubles, up to `retry_max_delay_secs`.
    pub retry_first_ms: u64,
    pub retry_max_delay_secs: u64,
    /// How long a webhook's receiver has to answer.
    pub webhook_timeout_secs: u64,
    /// Addresses or networks (`127.0.0.1/32`, `::1`) a webhook may target although they are
    /// loopback, link-local, unspecified or multicast (refused otherwise).
    pub webhook_allow: Vec<String>,
    /// How many of the log's last lines a failure's message carries.
    pub log_tail_lines: u32,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            smtp: None,
            retry_for_secs: 24 * 3600,
            retry_first_ms: 1000,
            retry_max_delay_secs: 600,
            webhook_timeout_secs: 10,
            webhook_allow: Vec::new(),
            log_tail_lines: 30,
        }
    }
}

/// `[notify.smtp]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    /// Default: 587 with `starttls`, 465 with `tls`, 25 with `none`.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: SmtpTls,
    #[serde(default)]
    pub username: Option<String>,
    /// A file holding the password (relative to the data dir).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The sender (`Kiln <kiln@example.org>` or a bare address).
    pub from: String,
    /// Connections kept open to the server.
    #[serde(default = "four")]
    pub pool_size: u32,
}

fn four() -> u32 {
    4
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    #[default]
    Starttls,
    Tls,
    None,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key {key}: {message}")]
    Invalid { key: &'static str, message: String },
}

impl Config {
    /// Reads and checks a config file; `data_dir` comes back absolute.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Config::parse(&text, &base).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parses config text; relative `data_dir` is taken from `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
        cfg.data_dir = Some(match cfg.data_dir.take() {
            Some(d) if d.is_absolute() => d,
            Some(d) => base.join(d),
            None => base,
        });
        cfg.check()?;
        Ok(cfg)
    }

    /// Defaults only, with the given data dir (for command-line-only slaves).
    pub fn with_data_dir(dir: PathBuf) -> Config {
        Config {
            version: CONFIG_VERSION,
            data_dir: Some(dir),
            master: MasterConfig::default(),
            database: DatabaseConfig::default(),
            slave: SlaveConfig::default(),
            auth: AuthConfig::default(),
            notify: NotifyConfig::default(),
            sources: SourcesConfig::default(),
            signing: SigningConfig::default(),
            metrics: MetricsConfig::default(),
            storage: StorageConfig::default(),
        }
    }

    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_string(),
            })
        };
        if self.version != CONFIG_VERSION {
            return invalid(
                "version",
                &format!(
                    "is {}, this Kiln reads version {CONFIG_VERSION}",
                    self.version
                ),
            );
        }
        let m = &self.master;
        if m.listen.parse::<std::net::SocketAddr>().is_err() {
            return invalid(
                "master.listen",
                &format!("'{}' is not an address like 127.0.0.1:8080", m.listen),
            );
        }
        if m.heartbeat_secs == 0 || m.heartbeat_secs > 3600 {
            return invalid("master.heartbeat_secs", "must be between 1 and 3600");
        }
        if m.lost_timeout_secs < 2 * m.heartbeat_secs {
            return invalid(
                "master.lost_timeout_secs",
                &format!(
                    "must be at least twice master.heartbeat_secs ({})",
                    m.heartbeat_secs
                ),
            );
        }
        if !(1024..=1024 * 1024).contains(&m.log_chunk_bytes) {
            return invalid("master.log_chunk_bytes", "must be between 1024 and 1048576");
        }
        if !(0..=10).contains(&m.lost_retries) {
            return invalid("master.lost_retries", "must be between 0 and 10");
        }
        if m.retention_interval_secs == 0 {
            return invalid("master.retention_interval_secs", "must be at least 1");
        }
        let c = &m.connections;
        for (key, value) in [
            ("master.connections.max_total", c.max_total),
            ("master.connections.max_per_address", c.max_per_address),
            ("master.connections.header_read_secs", c.header_read_secs),
            ("master.connections.idle_secs", c.idle_secs),
        ] {
            if value == 0 {
                return invalid(key, "must be at least 1");
            }
        }
        if c.max_per_address > c.max_total {
            return invalid(
                "master.connections.max_per_address",
                &format!(
                    "must be at most master.connections.max_total ({})",
                    c.max_total
                ),
            );
        }
        m.limits.check()?;
        crate::record::check_rewrite_map(&self.sources.rewrite).map_err(|message| {
            ConfigError::Invalid {
                key: "sources.rewrite",
                message,
            }
        })?;
        if let Some(h) = &m.admin_token_sha256 {
            if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                return invalid(
                    "master.admin_token_sha256",
                    "must be 64 hex digits (the sha256 of the token)",
                );
            }
        }
        self.check_auth()?;
        self.check_notify()?;
        self.storage.check()?;
        if self
            .metrics
            .token_file
            .as_ref()
            .is_some_and(|f| f.as_os_str().is_empty())
        {
            return invalid(
                "metrics.token_file",
                "is empty: name a file holding the scrape token, or leave the key out",
            );
        }
        if self.slave.sandbox_uid_base < 65536
            || u64::from(self.slave.sandbox_uid_base) + 64 * 65536 > u64::from(u32::MAX)
        {
            return invalid(
                "slave.sandbox_uid_base",
                "must leave room for 64 ranges of 65536 ids above 65535",
            );
        }
        if let Some(url) = &self.database.url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return invalid(
                    "database.url",
                    "must start with postgres:// (or be left out for the embedded cluster)",
                );
            }
        }
        // A scheduler pass holds one connection for its lock and queues builds on another.
        if self.database.max_connections < 2 {
            return invalid("database.max_connections", "must be at least 2");
        }
        let s = &self.slave;
        if s.capacity == 0 || s.capacity > 64 {
            return invalid("slave.capacity", "must be between 1 and 64");
        }
        if let Some(url) = &s.master {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return invalid(
                    "slave.master",
                    &format!("'{url}' must start with http:// or https://"),
                );
            }
        }
        if let Some(name) = &s.name {
            crate::api::validate_name("slave name", name).or_else(|m| invalid("slave.name", &m))?;
        }
        Ok(())
    }

    fn check_auth(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: String| Err(ConfigError::Invalid { key, message });
        let a = &self.auth;
        let is_origin = |u: &str| {
            (u.starts_with("http://") || u.starts_with("https://"))
                && !u
                    .trim_start_matches("https://")
                    .trim_start_matches("http://")
                    .is_empty()
        };
        if let Some(u) = &self.master.public_url {
            if !is_origin(u) || u.contains('?') || u.contains('#') {
                return invalid(
                    "master.public_url",
                    format!("'{u}' must be an http:// or https:// URL without query"),
                );
            }
        }
        for o in &a.allowed_origins {
            if !is_origin(o)
                || o.trim_start_matches("https://")
                    .trim_start_matches("http://")
                    .contains('/')
            {
                return invalid(
                    "auth.allowed_origins",
                    format!("'{o}' is not an origin like https://kiln.example.org"),
                );
            }
        }
        if a.session_idle_secs == 0 || a.session_max_secs < a.session_idle_secs {
            return invalid(
                "auth.session_max_secs",
                "sessions need session_idle_secs ≥ 1 and session_max_secs ≥ session_idle_secs"
                    .into(),
            );
        }
        if a.login_attempts_per_account == 0
            || a.login_attempts_per_address == 0
            || a.login_window_secs == 0
        {
            return invalid(
                "auth.login_window_secs",
                "login limits must be at least 1".into(),
            );
        }
        // Plain http reaches a provider only on this machine (tests, a local proxy): anywhere
        // else a network attacker could answer for it.
        let transport_ok = |u: &str| {
            if u.starts_with("https://") {
                return true;
            }
            let Some(rest) = u.strip_prefix("http://") else {
                return false;
            };
            let host = rest.split(['/', '?', '#']).next().unwrap_or("");
            let host = match host.strip_prefix('[') {
                Some(v6) => v6.split(']').next().unwrap_or(""),
                None => host.rsplit_once(':').map_or(host, |(h, _)| h),
            };
            host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        };
        let mut seen = std::collections::BTreeSet::new();
        for p in &a.oidc {
            crate::api::validate_name("provider name", &p.name)
                .or_else(|m| invalid("auth.oidc.name", m))?;
            if !seen.insert(p.name.as_str()) {
                return invalid("auth.oidc.name", format!("'{}' is named twice", p.name));
            }
            if !transport_ok(&p.issuer) {
                return invalid(
                    "auth.oidc.issuer",
                    format!(
                        "provider '{}': '{}' must be an https:// URL (http:// only on loopback)",
                        p.name, p.issuer
                    ),
                );
            }
            if !p.scopes.iter().any(|s| s == "openid") {
                return invalid(
                    "auth.oidc.scopes",
                    format!("provider '{}': the scopes must include openid", p.name),
                );
            }
        }
        if let Some(lp) = &a.launchpad {
            for (key, u) in [
                ("auth.launchpad.endpoint", &lp.endpoint),
                ("auth.launchpad.claimed_id_prefix", &lp.claimed_id_prefix),
                ("auth.launchpad.api_url", &lp.api_url),
            ] {
                if !transport_ok(u) {
                    return invalid(
                        key,
                        format!("'{u}' must be an https:// URL (http:// only on loopback)"),
                    );
                }
            }
            if lp.refresh_secs == 0 {
                return invalid("auth.launchpad.refresh_secs", "must be at least 1".into());
            }
        }
        if (!a.oidc.is_empty() || a.launchpad.is_some()) && self.master.public_url.is_none() {
            return invalid(
                "master.public_url",
                "is needed when a sign-in provider is configured (providers send people back there)"
                    .into(),
            );
        }
        Ok(())
    }

    fn check_notify(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: String| Err(ConfigError::Invalid { key, message });
        let n = &self.notify;
        if n.retry_first_ms == 0 || n.retry_max_delay_secs == 0 || n.webhook_timeout_secs == 0 {
            return invalid(
                "notify.retry_first_ms",
                "retry_first_ms, retry_max_delay_secs and webhook_timeout_secs must be at least 1"
                    .into(),
            );
        }
        for net in &n.webhook_allow {
            let ok = match net.split_once('/') {
                Some((ip, len)) => {
                    ip.parse::<std::net::IpAddr>().is_ok() && len.parse::<u8>().is_ok()
                }
                None => net.parse::<std::net::IpAddr>().is_ok(),
            };
            if !ok {
                return invalid(
                    "notify.webhook_allow",
                    format!("'{net}' is not an address or network like 127.0.0.1/32 or ::1"),
                );
            }
        }
        if let Some(s) = &n.smtp {
            if s.host.trim().is_empty() {
                return invalid("notify.smtp.host", "names no host".into());
            }
            if !s.from.contains('@') {
                return invalid(
                    "notify.smtp.from",
                    format!("'{}' is not a mail address like kiln@example.org", s.from),
                );
            }
            if s.username.is_some() != s.password_file.is_some() {
                return invalid(
                    "notify.smtp.password_file",
                    "username and password_file go together".into(),
                );
            }
            if self.master.public_url.is_none() {
                return invalid(
                    "master.public_url",
                    "is needed when [notify.smtp] is configured (mails link to builds there)"
                        .into(),
                );
            }
        }
        Ok(())
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.as_deref().unwrap_or(Path::new("."))
    }

    /// Resolves a configured path against the data dir.
    pub fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.data_dir().join(p)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults() {
        let c = Config::parse("", Path::new("/x")).unwrap();
        assert_eq!(c.data_dir(), Path::new("/x"));
        assert_eq!(c.path(Path::new("storage")), PathBuf::from("/x/storage"));
        assert_eq!(c.master.lost_timeout_secs, 30);
    }

    #[test]
    fn relative_data_dir_is_relative_to_the_file() {
        let c = Config::parse("data_dir = \"d\"", Path::new("/etc/kiln")).unwrap();
        assert_eq!(c.data_dir(), Path::new("/etc/kiln/d"));
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::parse("[master]\nlisten_addr = \"x\"", Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("listen_addr"), "{e}");
    }

    #[test]
    fn bad_value_names_the_key() {
        let e = Config::parse(
            "[master]\nheartbeat_secs = 10\nlost_timeout_secs = 5",
            Path::new("/"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("master.lost_timeout_secs"), "{e}");
        let c = Config::parse("[slave]\ngit_cache_bytes = 0", Path::new("/")).unwrap();
        assert_eq!(c.slave.git_cache_bytes, 0);
        assert_eq!(
            Config::parse("", Path::new("/"))
                .unwrap()
                .slave
                .git_cache_bytes,
            2 << 30
        );
        let e = Config::parse("[slave]\ncapacity = 0", Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("slave.capacity"), "{e}");
        let e = Config::parse("[master]\nlisten = \"nowhere\"", Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("master.listen"), "{e}");
    }

    #[test]
    fn connection_limits_have_defaults_and_refuse_zero() {
        let c = Config::parse("", Path::new("/")).unwrap();
        assert_eq!(c.master.connections.max_total, 4096);
        assert_eq!(c.master.connections.idle_secs, 120);
        let c = Config::parse(
            "[master.connections]\nheader_read_secs = 2\nmax_per_address = 10",
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(c.master.connections.header_read_secs, 2);
        assert_eq!(c.master.connections.max_per_address, 10);
        assert_eq!(c.master.connections.max_total, 4096);
        for key in [
            "max_total",
            "max_per_address",
            "header_read_secs",
            "idle_secs",
        ] {
            let e = Config::parse(&format!("[master.connections]\n{key} = 0"), Path::new("/"))
                .unwrap_err();
            assert!(
                e.to_string().contains(&format!("master.connections.{key}")),
                "{e}"
            );
        }
        let e = Config::parse(
            "[master.connections]\nmax_total = 10\nmax_per_address = 11",
            Path::new("/"),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("master.connections.max_per_address"),
            "{e}"
        );
        let e = Config::parse("[master.connections]\nmax = 1", Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("max"), "{e}");
    }

    #[test]
    fn metrics_token_file_is_optional_and_checked() {
        let c = Config::parse("", Path::new("/x")).unwrap();
        assert!(c.metrics.token_file.is_none());
        let c =
            Config::parse("[metrics]\ntoken_file = \"metrics.token\"", Path::new("/x")).unwrap();
        assert_eq!(
            c.path(c.metrics.token_file.as_deref().unwrap()),
            PathBuf::from("/x/metrics.token")
        );
        let e = Config::parse("[metrics]\ntoken = \"secret\"", Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("token"), "{e}");
        let e = Config::parse("[metrics]\ntoken_file = \"\"", Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("metrics.token_file"), "{e}");
    }

    #[test]
    fn notify_settings_are_checked_naming_the_key() {
        let c = Config::parse("", Path::new("/")).unwrap();
        assert!(c.notify.smtp.is_none());
        assert_eq!(c.notify.retry_for_secs, 86400);
        let smtp = "[notify.smtp]\nhost = \"127.0.0.1\"\nport = 2525\ntls = \"none\"\nfrom = \"kiln@example.org\"\n";
        let e = Config::parse(smtp, Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("master.public_url"), "{e}");
        let ok = format!("[master]\npublic_url = \"https://kiln.example.org\"\n{smtp}");
        let c = Config::parse(&ok, Path::new("/")).unwrap();
        let s = c.notify.smtp.unwrap();
        assert_eq!((s.port, s.tls, s.pool_size), (Some(2525), SmtpTls::None, 4));
        let e = Config::parse(&format!("{ok}username = \"k\"\n"), Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("notify.smtp.password_file"), "{e}");
        let e =
            Config::parse(&ok.replace("kiln@example.org", "nobody"), Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("notify.smtp.from"), "{e}");
        let e = Config::parse(&ok.replace("\"none\"", "\"ssl\""), Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("ssl"), "{e}");
        let e =
            Config::parse("[notify]\nwebhook_allow = [\"localhost\"]", Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("notify.webhook_allow"), "{e}");
        Config::parse(
            "[notify]\nwebhook_allow = [\"127.0.0.1/32\", \"::1\"]",
            Path::new("/"),
        )
        .unwrap();
    }

    #[test]
    fn limits_default_finite_and_zero_is_refused_naming_the_key() {
        let c = Config::parse("", Path::new("/")).unwrap();
        assert_eq!(c.master.limits.log_bytes, 1 << 30);
        assert_eq!(c.master.limits.artifact_bytes, 64 << 30);
        assert_eq!(c.master.limits.project_storage_bytes, 256 << 30);
        let c = Config::parse(
            "[master.limits]\nlog_bytes = 4194304\nproject_storage_bytes = 1000",
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(c.master.limits.log_bytes, 4 << 20);
        assert_eq!(c.master.limits.project_storage_bytes, 1000);
        assert_eq!(c.master.limits.artifact_bytes, 64 << 30, "default kept");
        for key in ["log_bytes", "artifact_bytes", "project_storage_bytes"] {
            let e =
                Config::parse(&format!("[master.limits]\n{key} = 0"), Path::new("/")).unwrap_err();
            assert!(
                e.to_string().contains(&format!("master.limits.{key}")),
                "{e}"
            );
        }
        let e = Config::parse("[master.limits]\nlog_bytes = -1", Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("log_bytes"), "{e}");
        let e = Config::parse("[master.limits]\nlogs = 1", Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("logs"), "{e}");
    }

    #[test]
    fn byte_counts_read_like_a_person_wrote_them() {
        assert_eq!(human_bytes(1 << 30), "1 GiB");
        assert_eq!(human_bytes(64 << 30), "64 GiB");
        assert_eq!(human_bytes(4 << 20), "4 MiB");
        assert_eq!(human_bytes(1536 << 20), "1536 MiB");
        assert_eq!(human_bytes(4096), "4 KiB");
        assert_eq!(human_bytes(1_500_000), "1500000 bytes");
        assert_eq!(human_bytes(0), "0 bytes");
        assert_eq!(human_bytes(1), "1 byte");
    }

    #[test]
    fn providers_need_https_except_on_loopback() {
        let base = Path::new("/srv/kiln");
        let lp = |endpoint: &str| {
            format!(
                "[master]\npublic_url = \"https://kiln.example.org\"\n[auth.launchpad]\nendpoint = \"{endpoint}\"\n"
            )
        };
        let err = Config::parse(&lp("http://login.example.org/+openid"), base).unwrap_err();
        assert!(err.to_string().contains("auth.launchpad.endpoint"), "{err}");
        for ok in [
            "https://login.example.org/+openid",
            "http://127.0.0.1:9/+openid",
            "http://localhost:8/x",
            "http://[::1]:8/x",
        ] {
            Config::parse(&lp(ok), base).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let oidc = "[master]\npublic_url = \"https://kiln.example.org\"\n[[auth.oidc]]\nname = \"corp\"\nissuer = \"http://sso.example.org\"\nclient_id = \"k\"\nclient_secret_file = \"s\"\n";
        let err = Config::parse(oidc, base).unwrap_err();
        assert!(err.to_string().contains("auth.oidc.issuer"), "{err}");
        // A provider needs master.public_url.
        let err = Config::parse("[auth.launchpad]\n", base).unwrap_err();
        assert!(err.to_string().contains("master.public_url"), "{err}");
    }

    #[test]
    fn wrong_type_is_named() {
        let e = Config::parse("[slave]\ntags = \"a\"", Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("tags"), "{e}");
    }

    #[test]
    fn storage_section_is_checked_naming_the_key() {
        let c = Config::parse("", Path::new("/")).unwrap();
        assert_eq!(c.storage.kind, StorageKind::Filesystem);
        let s3 = "[storage]\nkind = \"s3\"\nendpoint = \"http://127.0.0.1:3900\"\nbucket = \"kiln\"\nregion = \"garage\"\ncredentials_file = \"s3.toml\"\n";
        let c = Config::parse(s3, Path::new("/d")).unwrap();
        assert_eq!(c.storage.kind, StorageKind::S3);
        assert!(c.storage.path_style && !c.storage.presign_downloads);
        for (text, key) in [
            (s3.replace("bucket = \"kiln\"\n", ""), "storage.bucket"),
            (s3.replace("http://127", "ftp://127"), "storage.endpoint"),
            (
                s3.replace("credentials_file = \"s3.toml\"\n", ""),
                "storage.credentials_file",
            ),
            (format!("{s3}prefix = \"/a/\"\n"), "storage.prefix"),
            (format!("{s3}presign_secs = 0\n"), "storage.presign_secs"),
            ("[storage]\nbucket = \"x\"\n".to_string(), "storage.bucket"),
            (
                format!("{s3}secret_access_key = \"x\"\n"),
                "secret_access_key",
            ),
            ("[storage]\nkind = \"ftp\"\n".to_string(), "ftp"),
        ] {
            let e = Config::parse(&text, Path::new("/")).unwrap_err();
            assert!(e.to_string().contains(key), "{key}: {e}");
        }
    }
}
