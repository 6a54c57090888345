//! The slave's settings: command-line flags over the `[slave]` section of the config file.

use anyhow::{bail, Context, Result};
use kiln_shared::api::validate_name;
use std::path::PathBuf;

#[derive(Clone, Debug)]
pub struct Settings {
    /// Base URL of the master (`http://host:port`).
    pub master: String,
    pub token: String,
    /// Where the token was read from; a rotated token is written back there (else to
    /// `slave.token` in the work dir).
    pub token_file: Option<PathBuf>,
    pub name: String,
    pub work_dir: PathBuf,
    pub tags: Vec<String>,
    pub capacity: u32,
    pub arch: String,
    pub mirror: Option<String>,
    pub security_mirror: Option<String>,
    /// How the master's certificate is verified (for https:// masters).
    pub trust: crate::tls::Trust,
    /// How builds are confined (`slave.sandbox`).
    pub sandbox: kiln_shared::config::SandboxMode,
    pub sandbox_uid_base: u32,
    /// The most the git cache (`git-cache/` in the work dir) may hold; 0: no cache
    /// (`slave.git_cache_bytes`).
    pub git_cache_bytes: u64,
    /// The most the package cache (`apt-cache/` in the work dir) may hold; 0: none
    /// (`slave.apt_cache_bytes`).
    pub apt_cache_bytes: u64,
    /// The most the root file system cache (`rootfs-cache/` in the work dir) may hold; 0: none
    /// (`slave.rootfs_cache_bytes`).
    pub rootfs_cache_bytes: u64,
    /// The config file read, if any (hidden from builds: it may hold the token).
    pub config_file: Option<PathBuf>,
}

impl Settings {
    pub fn ws_url(&self) -> String {
        let base = self.master.trim_end_matches('/');
        let ws = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            base.to_string()
        };
        format!("{ws}/ws/slave")
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("{}{}", self.master.trim_end_matches('/'), path)
    }
}

/// What `kiln-slave register` leaves in the work dir besides the token: the name it registered
/// and the tags the admin gave, used when the command line names none.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Registration {
    pub name: String,
    #[serde(default)]
    pub tags: Vec<String>,
}

pub const TOKEN_FILE: &str = "slave.token";
pub const REGISTRATION_FILE: &str = "registration.json";

/// Fills in what flags left out from the config file, then checks everything, naming the flag or
/// key at fault. The token comes from `KILN_SLAVE_TOKEN` (for containers), else `--token-file`,
/// else the config (`slave.token`, `slave.token_file`), else `slave.token` in the work dir (where
/// `kiln-slave register` puts it). It is never taken from the command line, where any local
/// user could read it.
#[allow(clippy::too_many_arguments)]
pub fn resolve(
    config: Option<&std::path::Path>,
    master: Option<String>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    name: Option<String>,
    work_dir: Option<PathBuf>,
    tags: Option<Vec<String>>,
    capacity: Option<u32>,
    arch: Option<String>,
) -> Result<Settings> {
    let cfg = match config {
        Some(p) => kiln_shared::config::Config::load(p)?,
        None => kiln_shared::config::Config::with_data_dir(std::env::current_dir()?),
    };
    let s = &cfg.slave;
    let master = master
        .or_else(|| s.master.clone())
        .context("--master URL (or slave.master in the config) is required")?;
    if !(master.starts_with("http://") || master.starts_with("https://")) {
        bail!("--master: '{master}' must start with http:// or https://");
    }
    let work_dir = match work_dir {
        Some(w) => std::path::absolute(w)?,
        None => cfg.path(&s.work_dir),
    };
    let registration: Option<Registration> =
        std::fs::read_to_string(work_dir.join(REGISTRATION_FILE))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
    let (token, token_file) = match token.or_else(|| s.token.clone()) {
        Some(t) => (t, None),
        None => {
            let path = token_file
                .map(std::path::absolute)
                .transpose()?
                .or_else(|| s.token_file.as_ref().map(|f| cfg.path(f)))
                .unwrap_or_else(|| work_dir.join(TOKEN_FILE));
            let t = std::fs::read_to_string(&path)
                .with_context(|| {
                    format!(
                        "cannot read the slave's token from {} (register the slave with `kiln-slave register`, or give --token-file)",
                        path.display()
                    )
                })?
                .trim()
                .to_string();
            (t, Some(path))
        }
    };
    if token.is_empty() {
        bail!("the slave's token is empty");
    }
    let name = name
        .or_else(|| s.name.clone())
        .or_else(|| registration.as_ref().map(|r| r.name.clone()))
        .context("--name (or slave.name in the config) is required")?;
    validate_name("--name", &name).map_err(anyhow::Error::msg)?;
    let tags = tags
        .or_else(|| registration.map(|r| r.tags).filter(|t| !t.is_empty()))
        .unwrap_or_else(|| s.tags.clone());
    for t in &tags {
        validate_name("--tags entry", t).map_err(anyhow::Error::msg)?;
    }
    let capacity = capacity.unwrap_or(s.capacity);
    if capacity == 0 || capacity > 64 {
        bail!("--capacity must be between 1 and 64");
    }
    let arch = arch
        .or_else(|| s.arch.clone())
        .unwrap_or_else(crate::machine::native_arch);
    Ok(Settings {
        master,
        token,
        token_file,
        name,
        work_dir,
        tags,
        capacity,
        arch,
        mirror: s.mirror.clone(),
        security_mirror: s.security_mirror.clone(),
        trust: crate::tls::Trust::System,
        sandbox: s.sandbox,
        sandbox_uid_base: s.sandbox_uid_base,
        git_cache_bytes: s.git_cache_bytes,
        apt_cache_bytes: s.apt_cache_bytes,
        rootfs_cache_bytes: s.rootfs_cache_bytes,
        config_file: config.map(std::path::absolute).transpose()?,
    })
}
