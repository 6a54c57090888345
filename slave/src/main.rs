//! `kiln-slave`: runs image builds for a Kiln master.

use anyhow::Result;
use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "kiln-slave", version, about = "The Kiln build slave")]
struct Cli {
    /// The Kiln config file; its [slave] section fills in what flags leave out.
    #[arg(long, env = "KILN_CONFIG")]
    config: Option<PathBuf>,
    /// Base URL of the master, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    master: Option<String>,
    /// The token the master returned when this slave was registered.
    #[arg(long, env = "KILN_SLAVE_TOKEN")]
    token: Option<String>,
    #[arg(long)]
    name: Option<String>,
    /// Scratch space for builds.
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
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let c = Cli::parse();
    let settings = kiln_slave::settings::resolve(
        c.config.as_deref(),
        c.master,
        c.token,
        c.name,
        c.work_dir,
        c.tags,
        c.capacity,
        c.arch,
    )?;
    kiln_slave::run(settings).await
}
