//! `kiln-master`: the command-line shell around the `kiln_master` library.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use kiln_shared::config::Config;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "kiln-master", version, about = "The Kiln build farm master")]
struct Cli {
    /// The Kiln config file (see `kiln-master init`).
    #[arg(long, global = true, env = "KILN_CONFIG")]
    config: Option<PathBuf>,
    /// Overrides master.listen.
    #[arg(long, global = true)]
    listen: Option<String>,
    /// Overrides master.console_dir (the built web console, e.g. frontend/dist).
    #[arg(long, global = true)]
    console_dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write a commented config file and an admin token into a data dir.
    Init {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        force: bool,
        /// Also make a private CA and a server certificate (tls/ca.pem, tls/server.pem,
        /// tls/server.key) and serve HTTPS with them.
        #[arg(long)]
        tls_self_signed: bool,
        /// A name (host name or IP address) the certificate is for; repeatable. Default:
        /// localhost and this host's name.
        #[arg(long = "tls-name", requires = "tls_self_signed")]
        tls_names: Vec<String>,
    },
    /// Apply database migrations and exit.
    Migrate {
        /// Change nothing: print the applied and the pending migrations and any that was
        /// changed after it was applied; exit 0 when none is pending, 1 when some are, 2 on an
        /// error (a changed or unknown migration, the database unreachable).
        #[arg(long)]
        check: bool,
    },
    /// Make a new upload signing key (the previous one stays valid for tokens already handed
    /// out); restart the master to use it.
    RotateUploadKey,
    /// Local accounts.
    User {
        #[command(subcommand)]
        cmd: UserCmd,
    },
    /// Run the master (the default).
    Serve,
}

#[derive(Subcommand)]
enum UserCmd {
    /// Create a local account and print its one-time password (to be changed at first sign-in).
    Add {
        name: String,
        /// A site admin (users, teams, slaves, every project).
        #[arg(long)]
        admin: bool,
        #[arg(long)]
        email: Option<String>,
    },
}

fn load(cli: &Cli) -> Result<Config> {
    let path = cli
        .config
        .as_ref()
        .context("--config FILE is required (create one with `kiln-master init --data-dir DIR`)")?;
    let mut cfg = Config::load(path)?;
    if let Some(l) = &cli.listen {
        if l.parse::<std::net::SocketAddr>().is_err() {
            anyhow::bail!("--listen: '{l}' is not an address like 127.0.0.1:8080");
        }
        cfg.master.listen = l.clone();
    }
    if let Some(d) = &cli.console_dir {
        cfg.master.console_dir = Some(std::path::absolute(d)?);
    }
    Ok(cfg)
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    // The daemon logs to stdout (its service manager's journal); a one-off command logs to
    // stderr, so that what it prints (`migrate --check`'s report) is all of its stdout.
    let daemon = matches!(cli.cmd, None | Some(Cmd::Serve));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
                .unwrap_or_else(|_| "info,sqlx=warn,tower_http=warn".into()),
        )
        .with_writer(move || -> Box<dyn std::io::Write> {
            if daemon {
                Box::new(std::io::stdout())
            } else {
                Box::new(std::io::stderr())
            }
        })
        .init();
    match &cli.cmd {
        Some(Cmd::Init {
            data_dir,
            force,
            tls_self_signed,
            tls_names,
        }) => {
            let listen = cli.listen.as_deref().unwrap_or("127.0.0.1:8080");
            let names = match (tls_self_signed, tls_names.is_empty()) {
                (false, _) => None,
                (true, true) => Some(kiln_master::init::default_tls_names()),
                (true, false) => Some(tls_names.clone()),
            };
            kiln_master::init::run(data_dir, listen, *force, names.as_deref())
        }
        Some(Cmd::Migrate { check: true }) => {
            let code = match migrate_check(&cli).await {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    2
                }
            };
            std::process::exit(code)
        }
        Some(Cmd::Migrate { check: false }) => {
            let cfg = load(&cli)?;
            let (pool, mut pg) = kiln_master::db::open(&cfg).await?;
            if let Some(pg) = &mut pg {
                pg.leave_running_if_reused();
            }
            let before = {
                let mut conn = pool.acquire().await?;
                kiln_master::db::migrations::status(&mut conn).await?
            };
            kiln_master::db::migrate(&pool).await?;
            for p in &before.pending {
                println!("applied migration {p}");
            }
            let after = {
                let mut conn = pool.acquire().await?;
                kiln_master::db::migrations::status(&mut conn).await?
            };
            println!("database is up to date: {}", after.summary());
            Ok(())
        }
        Some(Cmd::RotateUploadKey) => {
            let cfg = load(&cli)?;
            let kid = kiln_master::upload_token::UploadKeys::rotate(cfg.data_dir())?;
            println!("new upload signing key {kid}; restart the master to sign with it");
            Ok(())
        }
        Some(Cmd::User {
            cmd: UserCmd::Add { name, admin, email },
        }) => {
            let cfg = load(&cli)?;
            let (pool, mut pg) = kiln_master::db::open(&cfg).await?;
            // Next to a running master: its embedded cluster keeps running.
            if let Some(pg) = &mut pg {
                pg.leave_running_if_reused();
            }
            kiln_master::db::migrate(&pool).await?;
            let req = kiln_shared::api::NewUser {
                username: name.clone(),
                password: None,
                email: email.clone(),
                admin: Some(*admin),
            };
            let (_, password) = kiln_master::api::accounts::create_user_in(&pool, &req)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            kiln_master::db::accounts::audit(
                &pool,
                kiln_master::db::accounts::Audit {
                    actor: None,
                    action: "user_created",
                    target: Some(format!("user {name}")),
                    address: None,
                    detail: serde_json::json!({ "admin": admin, "via": "kiln-master user add" }),
                },
            )
            .await?;
            println!(
                "user '{name}'{} created; one-time password (shown only now, change it after signing in):",
                if *admin { " (admin)" } else { "" }
            );
            println!("{}", password.unwrap_or_default());
            Ok(())
        }
        Some(Cmd::Serve) | None => serve(load(&cli)?).await,
    }
}

/// `kiln-master migrate --check`: what `kiln-master migrate` (or starting this master) would do
/// to the database, changing nothing. The exit code: 0 nothing pending, 1 migrations pending, 2
/// an error (printed on stderr; `Err` here is one too).
async fn migrate_check(cli: &Cli) -> Result<i32> {
    use std::io::Write;
    let cfg = load(cli)?;
    let (mut conn, _pg) = kiln_master::db::connect_once(&cfg).await?;
    let status = kiln_master::db::migrations::status(&mut conn)
        .await
        .context("reading the applied migrations (_sqlx_migrations)")?;
    let mut out = std::io::stdout().lock();
    for a in &status.applied {
        let what = if status.unknown.iter().any(|u| u.version == a.version) {
            "unknown"
        } else if status.changed.iter().any(|c| c.version == a.version) {
            "changed"
        } else if !a.success {
            "failed "
        } else {
            "applied"
        };
        writeln!(
            out,
            "{what} {} ({}), {}",
            a.version,
            a.description,
            a.installed_on.format("%Y-%m-%d %H:%M:%S UTC")
        )?;
    }
    for p in &status.pending {
        writeln!(out, "pending {p}")?;
    }
    if let Some(e) = status.error() {
        out.flush()?;
        eprintln!("error: {e}");
        return Ok(2);
    }
    match status.pending.len() {
        0 => {
            writeln!(out, "nothing to do: {}", status.summary())?;
            Ok(0)
        }
        n => {
            writeln!(
                out,
                "{n} migration{} pending: `kiln-master migrate` (or starting this master) applies {}; back up first (docs/operations.md)",
                if n == 1 { "" } else { "s" },
                if n == 1 { "it" } else { "them" },
            )?;
            Ok(1)
        }
    }
}

async fn serve(cfg: Config) -> Result<()> {
    let listen = cfg.master.listen.clone();
    // Every connection is a file descriptor: take all the system allows this process.
    match kiln_master::listener::raise_open_file_limit() {
        Ok(n) => tracing::info!("open-file limit: {n}"),
        Err(e) => tracing::warn!("cannot raise the open-file limit: {e}"),
    }
    // Refuse plain HTTP off loopback before touching anything else.
    if cfg.master.tls.is_none() {
        let addr: std::net::SocketAddr = listen.parse().context("config key master.listen")?;
        kiln_master::tls::check_plain_http(&cfg, addr)?;
    }
    let (pool, pg) = kiln_master::db::open(&cfg).await?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("config key master.listen: cannot bind {listen}"))?;
    let server = kiln_master::build(cfg, pool, listener).await?;
    if let Some(pg) = pg {
        // The master keeps its embedded cluster running (restarts it if it dies) and stops it.
        server.state.database.supervise(pg);
    }
    // Readiness line, read by scripts and tests.
    println!("kiln-master ready on {}", server.url());
    if let Some(reload) = server.tls_reloader() {
        tokio::spawn(async move {
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .expect("SIGHUP handler");
            while hup.recv().await.is_some() {
                match reload() {
                    Ok(()) => tracing::info!("SIGHUP: re-read the TLS certificate and key"),
                    Err(e) => tracing::error!("SIGHUP: kept the old certificate: {e:#}"),
                }
            }
        });
    }
    let stop = server.shutdown_handle();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down");
        let _ = stop.send(true);
        // Whatever hangs (a request stuck on a dead database, say), the master is gone soon.
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        tracing::error!("did not stop within 30 s of SIGTERM; exiting now");
        std::process::exit(1);
    });
    server.wait().await?;
    Ok(())
}
