//! `kiln-master init --data-dir DIR`: writes a commented `DIR/kiln.toml` and a fresh admin token
//! to `DIR/admin.token` (mode 0600); only the token's hash goes into the config.

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub fn config_text(admin_hash: &str, listen: &str, tls: bool) -> String {
    let tls = if tls {
        "# HTTPS and WSS on `listen` (re-read on SIGHUP). Slaves verify it with --ca tls/ca.pem or\n# --ca-sha256 <the CA's fingerprint>.\n[master.tls]\ncert = \"tls/server.pem\"\nkey = \"tls/server.key\"\n"
    } else {
        "# HTTPS and WSS on `listen`: a certificate chain and its key (PEM). Plain HTTP is refused on\n# anything but loopback unless allow_plain_http = true (behind a TLS proxy).\n# [master.tls]\n# cert = \"tls/server.pem\"\n# key = \"tls/server.key\"\n"
    };
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

# Connections held at once (in all, and from one IP address; WebSockets count) and how long the
# master waits for the TLS handshake and a request's headers, and on a keep-alive connection with
# no request. Connections over a limit are closed as soon as they are accepted. The master raises
# its open-file limit to the hard limit at start: keep max_total below that.
[master.connections]
max_total = 4096
max_per_address = 256
header_read_secs = 10
idle_secs = 120

# Quotas, in bytes (whole numbers; none may be 0, there is no "unlimited"). A build whose log
# would pass log_bytes keeps its log so far and fails ("log limit of 1 GiB exceeded"), stopped on
# its slave; an artifact upload that would take the build past artifact_bytes, or the project's
# kept artifacts past project_storage_bytes, is refused (HTTP 413) and the build fails naming it.
[master.limits]
log_bytes = 1073741824               # 1 GiB
artifact_bytes = 68719476736         # 64 GiB
project_storage_bytes = 274877906944 # 256 GiB

{tls}
# Who may sign in. Local accounts: `kiln-master --config THIS user add NAME --admin` prints a
# one-time password. Providers need master.public_url (the URL people open, e.g.
# "https://kiln.example.org"); who gets in is decided by group mappings an admin makes
# (console: Teams; API: /api/teams/{{name}}/mappings). See docs/configuration.md.
[auth]
local_accounts = true
session_idle_secs = 28800     # 8 hours without a request ends a session
session_max_secs = 604800     # 7 days after sign-in, whatever happens
login_attempts_per_account = 5
login_attempts_per_address = 20
login_window_secs = 900
# allowed_origins = []        # besides master.public_url's
#
# [[auth.oidc]]                # any number of OpenID Connect providers
# name = "corp"
# display_name = "Company sign-in"
# issuer = "https://sso.example.org/realms/main"
# client_id = "kiln"
# client_secret_file = "oidc-corp.secret"
# scopes = ["openid", "profile", "email", "groups"]
# groups_claim = "groups"
#
# [auth.launchpad]             # Launchpad teams (OpenID 2.0); Ubuntu's endpoint by default
# refresh_secs = 3600

# Notifications: who is told what is data (console: a project's settings); how mail and
# webhooks leave is here. See docs/notifications.md. Mail needs master.public_url.
[notify]
retry_for_secs = 86400        # a delivery is retried this long, then marked failed
# webhook_allow = []          # loopback/link-local webhook targets an admin allows ("127.0.0.1/32")
#
# [notify.smtp]
# host = "smtp.example.org"
# tls = "starttls"            # "starttls" (port 587), "tls" (465) or "none" (25)
# username = "kiln"
# password_file = "smtp.password"
# from = "Kiln <kiln@example.org>"

# The apt sources a build used are shown with internal mirrors under their public names
# (docs/image-record.md); a project adds its own in its settings.
# [sources.rewrite]
# "http://mirror.internal/debian" = "https://deb.debian.org/debian"

# Each build's SHA256SUMS signed with minisign (docs/image-record.md): make the key with
# `minisign -G -s signing.key` and keep its password in a file.
# [signing]
# minisign_key_file = "signing.key"
# password_file = "signing.password"

# GET /metrics (Prometheus) answers site admins; a scraper without an account sends the token
# kept in this file as "Authorization: Bearer ..." (docs/operations.md, Monitoring).
# [metrics]
# token_file = "metrics.token"

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

/// Writes `content` to a file only its owner may read (0600).
pub fn write_private(path: &Path, content: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(content.as_bytes())?;
    Ok(())
}

/// `tls_names`: make a private CA and a server certificate for these names (`--tls-self-signed`).
pub fn run(data_dir: &Path, listen: &str, force: bool, tls_names: Option<&[String]>) -> Result<()> {
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
    write_private(&token_path, &format!("{token}\n"))?;
    std::fs::write(
        &cfg_path,
        config_text(
            &crate::auth::sha256_hex(&token),
            listen,
            tls_names.is_some(),
        ),
    )
    .with_context(|| format!("cannot write {}", cfg_path.display()))?;
    crate::upload_token::UploadKeys::load_or_create(data_dir)?;
    println!(
        "wrote {}, {} and {}",
        cfg_path.display(),
        token_path.display(),
        data_dir.join(crate::upload_token::FILE).display()
    );
    println!(
        "first sign-in: kiln-master --config {} user add NAME --admin (prints a one-time password)",
        cfg_path.display()
    );
    if let Some(names) = tls_names {
        let s = crate::tls::self_signed(&data_dir.join("tls"), names)?;
        println!(
            "wrote {}, {} and {} for {}",
            s.ca.display(),
            s.cert.display(),
            s.key.display(),
            names.join(", ")
        );
        println!("CA sha256 fingerprint: {}", s.ca_sha256);
    }
    Ok(())
}

/// Names a self-signed certificate is for when none are given: `localhost` and this host's name.
pub fn default_tls_names() -> Vec<String> {
    let mut names = vec!["localhost".to_string()];
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        if let Ok(h) = std::str::from_utf8(&buf[..end]) {
            if !h.is_empty() && h != "localhost" {
                names.push(h.to_string());
            }
        }
    }
    names
}
