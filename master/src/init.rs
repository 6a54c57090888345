//! `kiln-master init --data-dir DIR`: writes a commented `DIR/kiln.toml` and a fresh admin token
//! to `DIR/admin.token` (mode 0600); only the token's hash goes into the config.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub fn config_text(admin_hash: &str, listen: &str) -> String {
    format!(
        r#"# Kiln configuration: one file for the master and its slaves.
# Every relative path below is resolved against data_dir; data_dir itself is relative to this
# file's directory. Unknown keys are refused, and errors name the key that is wrong.
version = 1
data_dir = "."

[master]
# Address the web console, REST API and WebSockets listen on.
listen = "{listen}"
# sha256 of the admin token (the token itself is in admin.token, readable by its owner only).
admin_token_sha256 = "{admin_hash}"
# Build logs and artifacts.
storage_dir = "storage"
# Built web console (Trunk's dist); a placeholder page is served when absent.
# console_dir = "console"
# Accept file: URLs and local paths as branch URLs (single-machine setups).
allow_file_urls = false
# Cadence sent to every slave in the handshake.
heartbeat_secs = 5
lost_timeout_secs = 30
log_chunk_bytes = 65536
# How often a build lost with its slave is queued again (projects may override).
lost_retries = 1
# Time zone of schedules that name none (IANA name); default: this machine's, else UTC.
# timezone = "Europe/Berlin"
# A scheduled time missed while the master was down runs once at start.
catch_up_missed = true
retention_interval_secs = 600
# What the console offers users; architectures default to what the slaves have.
architectures = []
series = []

[database]
# Leave url out to run a private PostgreSQL cluster in data_dir/postgres (unix socket only).
# url = "postgres://kiln@db-host/kiln"
# embedded_user = "postgres"   # runs the embedded cluster when the master runs as root
# pg_bin_dir = "/usr/lib/postgresql/15/bin"
max_connections = 16

[slave]
# Used by kiln-slave --config; command-line flags override these.
# master = "http://127.0.0.1:8080"
# token_file = "slave.token"
# name = "board-1"
work_dir = "work"
tags = []
capacity = 1
# mirror = ""   # default: the mirror the slave's own apt uses
"#
    )
}

pub fn run(data_dir: &Path, listen: &str, force: bool) -> Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let cfg_path = data_dir.join("kiln.toml");
    let token_path = data_dir.join("admin.token");
    if cfg_path.exists() && !force {
        bail!(
            "{} already exists; pass --force to overwrite it (this also replaces the admin token)",
            cfg_path.display()
        );
    }
    let token = crate::auth::new_token("kiln_a_");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&token_path)
        .with_context(|| format!("cannot write {}", token_path.display()))?;
    writeln!(f, "{token}")?;
    std::fs::write(
        &cfg_path,
        config_text(&crate::auth::sha256_hex(&token), listen),
    )
    .with_context(|| format!("cannot write {}", cfg_path.display()))?;
    println!("wrote {} and {}", cfg_path.display(), token_path.display());
    Ok(())
}
