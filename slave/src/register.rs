//! `kiln-slave register`: exchanges a registration token (handed out by an admin, short-lived,
//! for a few uses) for the slave's own token, which is kept in `slave.token` (0600) in the work
//! dir, with the name and the admin's tags in `registration.json`. No long-lived secret is ever
//! typed on a command line.

use crate::settings::{Registration, REGISTRATION_FILE, TOKEN_FILE};
use crate::tls::Trust;
use anyhow::{bail, Context, Result};
use kiln_shared::api::{ErrorBody, RegisterSlave, SlaveCreated};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `content` readable by the owner only.
pub fn write_private(path: &Path, content: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(content.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

pub async fn run(
    master: &str,
    trust: &Trust,
    registration_token: &str,
    name: &str,
    work_dir: &Path,
) -> Result<()> {
    if !(master.starts_with("http://") || master.starts_with("https://")) {
        bail!("--master: '{master}' must start with http:// or https://");
    }
    std::fs::create_dir_all(work_dir)
        .with_context(|| format!("cannot create work dir {}", work_dir.display()))?;
    let token_path = work_dir.join(TOKEN_FILE);
    if token_path.exists() {
        bail!(
            "{} exists: this work dir is registered already (remove it to register again)",
            token_path.display()
        );
    }
    let http = reqwest::Client::builder()
        .use_preconfigured_tls((*crate::tls::client_config(trust)?).clone())
        .build()?;
    let url = format!("{}/api/slaves/register", master.trim_end_matches('/'));
    let resp = http
        .post(&url)
        .bearer_auth(registration_token)
        .json(&RegisterSlave {
            name: name.to_string(),
        })
        .send()
        .await
        .map_err(|e| match crate::tls::certificate_error(&e) {
            Some(why) => anyhow::anyhow!(crate::tls::refusal(master, &why, trust)),
            None => anyhow::anyhow!("cannot reach the master at {master}: {e}"),
        })?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        let why = serde_json::from_str::<ErrorBody>(&text)
            .map(|e| e.error)
            .unwrap_or(text);
        bail!("the master refused the registration (HTTP {status}): {why}");
    }
    let created: SlaveCreated =
        serde_json::from_str(&text).context("the master's answer is not a registration")?;
    write_private(&token_path, &format!("{}\n", created.token))?;
    let registration = Registration {
        name: created.name.clone(),
        tags: created.tags,
    };
    write_private(
        &work_dir.join(REGISTRATION_FILE),
        &serde_json::to_string_pretty(&registration)?,
    )?;
    let trust_flags = match trust {
        Trust::System => String::new(),
        Trust::CaFile(f) => format!(" --ca {}", f.display()),
        Trust::Pin(p) => format!(" --ca-sha256 {p}"),
    };
    println!(
        "registered as '{}'; its token is in {} (readable by this user only). Start it with:\n  kiln-slave --master {master} --work-dir {}{trust_flags}",
        created.name,
        token_path.display(),
        work_dir.display()
    );
    Ok(())
}
