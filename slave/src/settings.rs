//! The slave's settings: command-line flags over the `[slave]` section of the config file.

use anyhow::{bail, Context, Result};
use kiln_shared::api::validate_name;
use std::path::PathBuf;

#[derive(Clone, Debug)]
pub struct Settings {
    /// Base URL of the master (`http://host:port`).
    pub master: String,
    pub token: String,
    pub name: String,
    pub work_dir: PathBuf,
    pub tags: Vec<String>,
    pub capacity: u32,
    pub arch: String,
    pub mirror: Option<String>,
    /// How the master's certificate is verified (for https:// masters).
    pub trust: crate::tls::Trust,
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

/// Fills in what flags left out from the config file, then checks everything, naming the flag or
/// key at fault.
#[allow(clippy::too_many_arguments)]
pub fn resolve(
    config: Option<&std::path::Path>,
    master: Option<String>,
    token: Option<String>,
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
    let token = match token.or_else(|| s.token.clone()) {
        Some(t) => t,
        None => {
            let f = s
                .token_file
                .as_ref()
                .context("--token (or slave.token / slave.token_file in the config) is required")?;
            let path = cfg.path(f);
            std::fs::read_to_string(&path)
                .with_context(|| {
                    format!(
                        "config key slave.token_file: cannot read {}",
                        path.display()
                    )
                })?
                .trim()
                .to_string()
        }
    };
    if token.is_empty() {
        bail!("--token is empty");
    }
    let name = name
        .or_else(|| s.name.clone())
        .context("--name (or slave.name in the config) is required")?;
    validate_name("--name", &name).map_err(anyhow::Error::msg)?;
    let work_dir = match work_dir {
        Some(w) => std::path::absolute(w)?,
        None => cfg.path(&s.work_dir),
    };
    let tags = tags.unwrap_or_else(|| s.tags.clone());
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
        name,
        work_dir,
        tags,
        capacity,
        arch,
        mirror: s.mirror.clone(),
        trust: crate::tls::Trust::System,
    })
}
