//! `kiln-slave`: runs image builds for a Kiln master.

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "kiln-slave", version, about = "The Kiln build slave")]
struct Cli {
    /// The Kiln config file; its [slave] section fills in what flags leave out.
    #[arg(long, env = "KILN_CONFIG")]
    config: Option<PathBuf>,
    /// Base URL of the master, e.g. https://kiln.example.org:8080.
    #[arg(long)]
    master: Option<String>,
    /// Trust the master's certificate if this CA (a PEM file, e.g. the master's tls/ca.pem)
    /// signed it, instead of the system's roots.
    #[arg(long, conflicts_with = "ca_sha256")]
    ca: Option<PathBuf>,
    /// Trust the master's certificate if it is signed by the CA with this sha256 fingerprint
    /// (printed by `kiln-master init --tls-self-signed`).
    #[arg(long)]
    ca_sha256: Option<String>,
    /// The token the master returned when this slave was registered.
    #[arg(long, env = "KILN_SLAVE_TOKEN")]
    token: Option<String>,
    #[arg(long)]
    name: Option<String>,
    /// State and scratch space for builds; running builds are re-adopted from here after a restart.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Comma-separated tags (board names, kvm, ...).
    #[arg(long, value_delimiter = ',')]
    tags: Option<Vec<String>>,
    /// Builds run at once.
    #[arg(long)]
    capacity: Option<u32>,
    /// Overrides the architecture read from the machine.
    #[arg(long)]
    arch: Option<String>,
    /// On SIGTERM take no new builds, let running ones finish and be reported, then exit.
    /// Without it SIGTERM exits at once and running builds are re-adopted by the next start.
    #[arg(long)]
    drain: bool,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Internal: runs one build in its directory (started by the daemon, detached).
    #[command(hide = true)]
    RunBuild {
        #[arg(long)]
        dir: PathBuf,
    },
}

fn main() -> Result<()> {
    let c = Cli::parse();
    if let Some(Cmd::RunBuild { dir }) = &c.cmd {
        return kiln_slave::runner::main(dir);
    }
    tokio::runtime::Runtime::new()?.block_on(daemon(c))
}

async fn daemon(c: Cli) -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let mut settings = kiln_slave::settings::resolve(
        c.config.as_deref(),
        c.master,
        c.token,
        c.name,
        c.work_dir,
        c.tags,
        c.capacity,
        c.arch,
    )?;
    settings.trust = match (c.ca, c.ca_sha256) {
        (Some(f), _) => kiln_slave::tls::Trust::CaFile(std::path::absolute(f)?),
        (None, Some(pin)) => kiln_slave::tls::Trust::Pin(pin),
        (None, None) => kiln_slave::tls::Trust::System,
    };
    kiln_slave::run(settings, c.drain).await
}
