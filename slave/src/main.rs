//! `kiln-slave`: runs image builds for a Kiln master.

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "kiln-slave", version, about = "The Kiln build slave")]
struct Cli {
    /// The Kiln config file; its [slave] section fills in what flags leave out.
    #[arg(long, env = "KILN_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Base URL of the master, e.g. https://kiln.example.org:8080.
    #[arg(long, global = true)]
    master: Option<String>,
    /// Trust the master's certificate if this CA (a PEM file, e.g. the master's tls/ca.pem)
    /// signed it, instead of the system's roots.
    #[arg(long, conflicts_with = "ca_sha256", global = true)]
    ca: Option<PathBuf>,
    /// Trust the master's certificate if it is signed by the CA with this sha256 fingerprint
    /// (printed by `kiln-master init --tls-self-signed`).
    #[arg(long, global = true)]
    ca_sha256: Option<String>,
    /// A file holding the slave's token, 0600 (default: slave.token in the work dir, where
    /// `kiln-slave register` puts it). There is no --token: a command line is readable by any
    /// local user.
    #[arg(long)]
    token_file: Option<PathBuf>,
    #[arg(long, global = true)]
    name: Option<String>,
    /// State and scratch space for builds; running builds are re-adopted from here after a
    /// restart; `kiln-slave register` keeps the slave's token here.
    #[arg(long, global = true)]
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
    /// How builds are confined: user-namespace (the default) or host-root (for live-build, on a
    /// slave dedicated to trusted branches); overrides slave.sandbox. See docs/security.md.
    #[arg(long, value_parser = ["user-namespace", "host-root"])]
    sandbox: Option<String>,
    /// On SIGTERM take no new builds, let running ones finish and be reported, then exit.
    /// Without it SIGTERM exits at once and running builds are re-adopted by the next start.
    #[arg(long)]
    drain: bool,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Enrol this machine: exchange a registration token (from an admin) for the slave's own
    /// token, kept in slave.token (0600) in the work dir. Then start `kiln-slave --master URL
    /// --work-dir DIR`.
    Register {
        /// The registration token; `-` reads it from stdin (keeps it out of `ps`).
        #[arg(long)]
        registration_token: String,
    },
    /// Says what this machine has for image builds (tools and versions, KVM, loop devices,
    /// device-mapper, qemu-user binfmt, free disk) and which Debian packages it lacks for each
    /// backend; exits 1 when something is missing.
    Doctor {
        /// Only these backends (script, exec, mmdebstrap, live-build, debos, vmdb2, boot-test); default all.
        #[arg(long = "backend")]
        backends: Vec<String>,
    },
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
    if let Some(Cmd::Doctor { backends }) = &c.cmd {
        let work_dir = c.work_dir.clone().unwrap_or_else(|| PathBuf::from("."));
        let sandbox = match c.sandbox.as_deref() {
            Some("host-root") => kiln_shared::config::SandboxMode::HostRoot,
            _ => kiln_shared::config::SandboxMode::UserNamespace,
        };
        let caps = kiln_slave::capabilities::probe(&work_dir);
        let (report, lacking) = kiln_slave::capabilities::doctor(&caps, backends, sandbox);
        print!("{report}");
        std::process::exit(i32::from(lacking));
    }
    if let Some(Cmd::Register { registration_token }) = &c.cmd {
        let registration_token = &if registration_token == "-" {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line.trim().to_string()
        } else {
            registration_token.clone()
        };
        let trust = trust(&c)?;
        let master = c
            .master
            .clone()
            .ok_or_else(|| anyhow::anyhow!("--master URL is required"))?;
        let name = c
            .name
            .clone()
            .ok_or_else(|| anyhow::anyhow!("--name is required"))?;
        let work_dir = c
            .work_dir
            .clone()
            .ok_or_else(|| anyhow::anyhow!("--work-dir is required"))?;
        return tokio::runtime::Runtime::new()?.block_on(kiln_slave::register::run(
            &master,
            &trust,
            registration_token,
            &name,
            &work_dir,
        ));
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
        c.master.clone(),
        std::env::var("KILN_SLAVE_TOKEN").ok(),
        c.token_file.clone(),
        c.name.clone(),
        c.work_dir.clone(),
        c.tags.clone(),
        c.capacity,
        c.arch.clone(),
    )?;
    settings.trust = trust(&c)?;
    match c.sandbox.as_deref() {
        Some("host-root") => settings.sandbox = kiln_shared::config::SandboxMode::HostRoot,
        Some(_) => settings.sandbox = kiln_shared::config::SandboxMode::UserNamespace,
        None => {}
    }
    kiln_slave::run(settings, c.drain).await
}

fn trust(c: &Cli) -> Result<kiln_slave::tls::Trust> {
    Ok(match (&c.ca, &c.ca_sha256) {
        (Some(f), _) => kiln_slave::tls::Trust::CaFile(std::path::absolute(f)?),
        (None, Some(pin)) => kiln_slave::tls::Trust::Pin(pin.clone()),
        (None, None) => kiln_slave::tls::Trust::System,
    })
}
