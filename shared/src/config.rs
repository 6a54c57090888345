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
    /// Serve plain HTTP on an address other than loopback (behind a TLS proxy, say).
    pub allow_plain_http: bool,
    /// After a slave's token is rotated, the old one keeps working this long (seconds).
    pub token_grace_secs: u32,
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
            allow_plain_http: false,
            token_grace_secs: 600,
        }
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
}

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
        }
    }
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
        if let Some(h) = &m.admin_token_sha256 {
            if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                return invalid(
                    "master.admin_token_sha256",
                    "must be 64 hex digits (the sha256 of the token)",
                );
            }
        }
        if let Some(url) = &self.database.url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return invalid(
                    "database.url",
                    "must start with postgres:// (or be left out for the embedded cluster)",
                );
            }
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections", "must be at least 1");
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
        let e = Config::parse("[slave]\ncapacity = 0", Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("slave.capacity"), "{e}");
        let e = Config::parse("[master]\nlisten = \"nowhere\"", Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("master.listen"), "{e}");
    }

    #[test]
    fn wrong_type_is_named() {
        let e = Config::parse("[slave]\ntags = \"a\"", Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("tags"), "{e}");
    }
}
