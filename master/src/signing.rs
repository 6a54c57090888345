//! Signed checksums (issue 18): with `[signing] minisign_key_file`, the master signs each
//! build's `SHA256SUMS` with minisign once it has checked every line against the artifacts it
//! stored (so a signature says "the master received exactly these files"), and keeps the
//! signature as the artifact `SHA256SUMS.minisig`. `GET /api/signing-key` gives the public key;
//! `docs/image-record.md` says how to verify a download.

use anyhow::{bail, Context, Result};
use kiln_shared::config::Config;
use minisign::{PublicKey, SecretKey, SecretKeyBox};
use std::collections::HashMap;

/// The artifact a build's checksums are signed in.
pub const SIGNATURE: &str = "SHA256SUMS.minisig";
/// The signed file.
pub const SUMS: &str = "SHA256SUMS";

pub struct Signer {
    sk: SecretKey,
    /// The public key as a `minisign.pub` file holds it.
    pub public_key: String,
}

impl Signer {
    /// The configured key, `None` without one; an error names the config key at fault.
    pub fn load(cfg: &Config) -> Result<Option<Signer>> {
        let Some(file) = &cfg.signing.minisign_key_file else {
            return Ok(None);
        };
        let path = cfg.path(file);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "config key signing.minisign_key_file: cannot read {}",
                path.display()
            )
        })?;
        let sk_box = SecretKeyBox::from_string(&text)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| {
                format!(
                    "config key signing.minisign_key_file: {} is not a minisign secret key",
                    path.display()
                )
            })?;
        let sk = match &cfg.signing.password_file {
            Some(pw) => {
                let pw_path = cfg.path(pw);
                let password = std::fs::read_to_string(&pw_path).with_context(|| {
                    format!(
                        "config key signing.password_file: cannot read {}",
                        pw_path.display()
                    )
                })?;
                SecretKey::from_box(
                    sk_box,
                    Some(password.trim_end_matches(['\n', '\r']).to_string()),
                )
                .map_err(|e| {
                    anyhow::anyhow!(
                        "config key signing.password_file: the key in {} does not open with it: {e}",
                        path.display()
                    )
                })?
            }
            None => {
                let sk = SecretKey::from_unencrypted_box(sk_box).map_err(|e| {
                    anyhow::anyhow!(
                        "config key signing.minisign_key_file: {} cannot be used without a password ({e}): set signing.password_file if it is encrypted",
                        path.display()
                    )
                })?;
                if sk.is_encrypted() {
                    bail!(
                        "config key signing.minisign_key_file: {} is encrypted: set signing.password_file",
                        path.display()
                    );
                }
                sk
            }
        };
        let pk =
            PublicKey::from_secret_key(&sk).map_err(|e| anyhow::anyhow!("signing key: {e}"))?;
        let public_key = pk
            .to_box()
            .map_err(|e| anyhow::anyhow!("signing key: {e}"))?
            .to_string();
        Ok(Some(Signer { sk, public_key }))
    }

    /// A minisign signature (the `.minisig` file's text) of `data`; the trusted comment (signed
    /// too, shown by `minisign -V`) says what it is.
    pub fn sign(&self, data: &[u8], trusted_comment: &str) -> Result<String> {
        let sig = minisign::sign(None, &self.sk, data, Some(trusted_comment), None)
            .map_err(|e| anyhow::anyhow!("signing: {e}"))?;
        Ok(sig.to_string())
    }
}

/// Checks that `sums` (a `SHA256SUMS` file: `HEX  NAME` lines) names exactly the stored
/// `artifacts` (name → sha256), apart from the sums and their signature themselves.
pub fn check_sums(sums: &str, artifacts: &HashMap<String, String>) -> Result<(), String> {
    let mut seen = HashMap::new();
    for (n, line) in sums.lines().enumerate() {
        let Some((sum, name)) = kiln_shared::record::sums_line(line) else {
            return Err(format!("line {} is not 'SHA256  NAME'", n + 1));
        };
        match artifacts.get(name) {
            Some(stored) if stored.eq_ignore_ascii_case(sum) => {}
            Some(stored) => {
                return Err(format!(
                    "it says {sum} for '{name}', the master stored {stored}"
                ))
            }
            None => return Err(format!("it names '{name}', which the build did not upload")),
        }
        seen.insert(name, ());
    }
    for name in artifacts.keys() {
        if name != SUMS && name != SIGNATURE && !seen.contains_key(name.as_str()) {
            return Err(format!("it does not name the artifact '{name}'"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn config(dir: &std::path::Path, extra: &str) -> Config {
        let file = dir.join("kiln.toml");
        std::fs::write(
            &file,
            format!("version = 1\n[signing]\nminisign_key_file = \"key\"\n{extra}"),
        )
        .unwrap();
        Config::load(&file).unwrap()
    }

    #[test]
    fn an_encrypted_key_needs_its_password_file_and_signs_then() {
        let dir = tempfile::tempdir().unwrap();
        let kp = minisign::KeyPair::generate_encrypted_keypair(Some("pw".into())).unwrap();
        std::fs::write(
            dir.path().join("key"),
            kp.sk.to_box(None).unwrap().to_string(),
        )
        .unwrap();
        let e = Signer::load(&config(dir.path(), ""))
            .err()
            .expect("an encrypted key without a password is refused")
            .to_string();
        assert!(e.contains("signing.password_file"), "{e}");
        std::fs::write(dir.path().join("pw"), "wrong\n").unwrap();
        let e = Signer::load(&config(dir.path(), "password_file = \"pw\"\n"))
            .err()
            .expect("a wrong password is refused")
            .to_string();
        assert!(e.contains("signing.password_file"), "{e}");
        std::fs::write(dir.path().join("pw"), "pw\n").unwrap();
        let signer = Signer::load(&config(dir.path(), "password_file = \"pw\"\n"))
            .unwrap()
            .unwrap();
        let sig = signer.sign(b"aa  disk.img\n", "kiln build 1").unwrap();
        let sig_box = minisign::SignatureBox::from_string(&sig).unwrap();
        minisign::verify(
            &kp.pk,
            &sig_box,
            std::io::Cursor::new(b"aa  disk.img\n"),
            true,
            false,
            false,
        )
        .unwrap();
        assert!(signer.public_key.contains(&kp.pk.to_base64()));
    }

    #[test]
    fn a_missing_or_bad_key_file_names_the_config_key() {
        let dir = tempfile::tempdir().unwrap();
        let e = Signer::load(&config(dir.path(), ""))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("signing.minisign_key_file"), "{e}");
        std::fs::write(dir.path().join("key"), "not a key").unwrap();
        let e = format!("{:#}", Signer::load(&config(dir.path(), "")).err().unwrap());
        assert!(e.contains("signing.minisign_key_file"), "{e}");
    }

    #[test]
    fn sums_must_name_exactly_what_was_stored() {
        let a = stored(&[("disk.img", "aa"), ("SHA256SUMS", "ff")]);
        assert!(check_sums("aa  disk.img\n", &a).is_ok());
        assert!(check_sums("AA *disk.img\n", &a).is_ok());
        let e = check_sums("bb  disk.img\n", &a).unwrap_err();
        assert!(e.contains("stored aa"), "{e}");
        let e = check_sums("aa  disk.img\ncc  other\n", &a).unwrap_err();
        assert!(e.contains("'other'"), "{e}");
        let b = stored(&[("disk.img", "aa"), ("sbom.json", "cc")]);
        let e = check_sums("aa  disk.img\n", &b).unwrap_err();
        assert!(e.contains("'sbom.json'"), "{e}");
        assert!(check_sums("garbage\n", &a).is_err());
    }
}
