//! A real load balancer (Debian's `haproxy`) in front of several masters, as
//! `docs/deployment.md` shows: TCP mode (TLS and WebSockets pass through), round robin, each
//! master's `GET /api/health` checked every 300 ms, so a master that dies is out of the rotation
//! within a second and its slaves reconnect to another one.

use crate::proc::Killed;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Haproxy {
    /// `https://127.0.0.1:PORT` (the scheme of the masters behind it).
    pub url: String,
    _proc: Killed,
}

impl Haproxy {
    /// Balances over `masters` (their URLs, all `https://` or all `http://`); its config and
    /// log go to `dir`. Returns once it answers a health check through to a master.
    pub async fn start(dir: &Path, masters: &[&str], http: &reqwest::Client) -> Result<Haproxy> {
        let port = crate::free_port();
        let tls = masters.iter().all(|m| m.starts_with("https://"));
        let check = if tls { " check-ssl verify none" } else { "" };
        let mut servers = String::new();
        for (i, m) in masters.iter().enumerate() {
            let hostport = m
                .split("://")
                .nth(1)
                .context("a master URL without a scheme")?
                .trim_end_matches('/');
            servers.push_str(&format!("    server m{i} {hostport} check{check}\n"));
        }
        let cfg = format!(
            "global\n    maxconn 4096\n\
             defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 1h\n    \
             timeout server 1h\n    timeout tunnel 1h\n    option redispatch\n    retries 3\n\
             frontend kiln\n    bind 127.0.0.1:{port}\n    default_backend masters\n\
             backend masters\n    balance roundrobin\n    option httpchk GET /api/health\n    \
             http-check expect status 200\n    \
             default-server inter 300ms fall 2 rise 1 on-marked-down shutdown-sessions\n\
             {servers}"
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, cfg)?;
        let log = std::fs::File::create(dir.join("haproxy.log"))?;
        let mut c = Command::new("haproxy");
        c.arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(log.try_clone()?)
            .stderr(log);
        crate::proc::die_with_parent(&mut c, libc::SIGKILL);
        let proc = Killed(
            c.spawn()
                .context("starting haproxy (scripts/install-deps.sh installs it)")?,
        );
        let url = format!("{}://127.0.0.1:{port}", if tls { "https" } else { "http" });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = http
                .get(format!("{url}/api/health"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(Haproxy { url, _proc: proc });
            }
            if Instant::now() > deadline {
                bail!(
                    "haproxy did not pass a health check through; its log:\n{}",
                    std::fs::read_to_string(dir.join("haproxy.log")).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
