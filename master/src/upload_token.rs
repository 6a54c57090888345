//! Per-build upload tokens: when a build is assigned, the master signs a short-lived JWT (HS256)
//! naming the build, the slave and an expiry a little past the build's time-out. Artifact uploads
//! for that build take only that token, so a slave cannot upload into another slave's build, and
//! an expired token is refused.
//!
//! The signing keys live in `upload-keys` in the data dir (0600): one `kid secret-hex` per line,
//! newest first. The master makes one when there is none; `kiln-master rotate-upload-key` puts a
//! new one first and keeps the previous one, so tokens already handed out stay valid (overlap).

use anyhow::{bail, Context, Result};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// How many keys are kept: the current one and the one before (the overlap).
const KEEP: usize = 2;

pub const FILE: &str = "upload-keys";

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The build the token is for.
    pub build: i64,
    /// The slave it was assigned to.
    pub slave: i64,
    /// Expiry (seconds since the epoch).
    pub exp: u64,
    pub iat: u64,
}

struct Key {
    kid: String,
    secret: Vec<u8>,
}

pub struct UploadKeys {
    /// Newest first.
    keys: Vec<Key>,
}

fn new_key() -> Key {
    use rand::RngCore;
    let mut secret = vec![0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let mut id = [0u8; 6];
    rand::rngs::OsRng.fill_bytes(&mut id);
    Key {
        kid: hex::encode(id),
        secret,
    }
}

fn write(path: &Path, keys: &[Key]) -> Result<()> {
    let text: String = keys
        .iter()
        .map(|k| format!("{} {}\n", k.kid, hex::encode(&k.secret)))
        .collect();
    crate::init::write_private(path, &text)
}

impl UploadKeys {
    /// Reads the keys from the data dir, making the first one if there is none.
    pub fn load_or_create(data_dir: &Path) -> Result<UploadKeys> {
        let path = data_dir.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let keys = vec![new_key()];
                write(&path, &keys)?;
                tracing::info!("made the upload signing key {}", path.display());
                return Ok(UploadKeys { keys });
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let mut keys = vec![];
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let parsed = line
                .split_once(' ')
                .and_then(|(kid, s)| Some((kid.to_string(), hex::decode(s.trim()).ok()?)));
            match parsed {
                Some((kid, secret)) if secret.len() >= 32 => keys.push(Key { kid, secret }),
                _ => bail!(
                    "{} line {}: expected '<key id> <64 hex digits>'",
                    path.display(),
                    n + 1
                ),
            }
        }
        if keys.is_empty() {
            bail!("{} holds no key", path.display());
        }
        Ok(UploadKeys { keys })
    }

    /// Puts a new key first, keeping the previous one for tokens already handed out.
    pub fn rotate(data_dir: &Path) -> Result<String> {
        let mut keys = UploadKeys::load_or_create(data_dir)?.keys;
        let key = new_key();
        let kid = key.kid.clone();
        keys.insert(0, key);
        keys.truncate(KEEP);
        write(&data_dir.join(FILE), &keys)?;
        Ok(kid)
    }

    /// A token for `build` on `slave`, valid for `valid_secs` from `now` (epoch seconds).
    pub fn issue(&self, build: i64, slave: i64, now: u64, valid_secs: u64) -> Result<String> {
        let key = &self.keys[0];
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.kid.clone());
        let claims = Claims {
            build,
            slave,
            iat: now,
            exp: now + valid_secs,
        };
        Ok(jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret(&key.secret),
        )?)
    }

    /// Checks signature (with the key it names) and expiry at `now` (epoch seconds, the same
    /// clock [`issue`](Self::issue) was given); the claims, or why not.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, String> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| format!("the upload token is not a JWT: {e}"))?;
        let key = self
            .keys
            .iter()
            .find(|k| header.kid.as_deref() == Some(k.kid.as_str()))
            .ok_or("the upload token was signed with a key this master no longer has")?;
        let mut v = Validation::new(Algorithm::HS256);
        // Expiry is checked below against the master's clock, not the system's: a token is
        // issued by that clock (`dispatch.rs`).
        v.validate_exp = false;
        v.required_spec_claims = ["exp"].iter().map(|s| s.to_string()).collect();
        let claims =
            jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&key.secret), &v)
                .map(|d| d.claims)
                .map_err(|e| format!("the upload token does not verify: {e}"))?;
        if claims.exp < now {
            return Err("the upload token has expired".into());
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    #[test]
    fn tokens_verify_expire_and_survive_one_rotation() {
        let dir = std::env::temp_dir().join(format!("kiln-upload-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let keys = UploadKeys::load_or_create(&dir).unwrap();
        let t = keys.issue(7, 3, now(), 60).unwrap();
        let c = keys.verify(&t, now()).unwrap();
        assert_eq!((c.build, c.slave), (7, 3));
        let old = keys.issue(7, 3, now() - 120, 60).unwrap();
        assert_eq!(
            keys.verify(&old, now()).unwrap_err(),
            "the upload token has expired"
        );
        // Expiry follows the clock the token was issued by, not the system's.
        let then = 1_000_000;
        let past = keys.issue(7, 3, then, 60).unwrap();
        assert!(keys.verify(&past, then + 60).is_ok());
        assert_eq!(
            keys.verify(&past, then + 61).unwrap_err(),
            "the upload token has expired"
        );
        let tampered = format!("{}x", &t[..t.len() - 1]);
        assert!(keys.verify(&tampered, now()).is_err());
        // One rotation: the old token still verifies; two: it does not.
        UploadKeys::rotate(&dir).unwrap();
        assert!(UploadKeys::load_or_create(&dir)
            .unwrap()
            .verify(&t, now())
            .is_ok());
        UploadKeys::rotate(&dir).unwrap();
        assert!(UploadKeys::load_or_create(&dir)
            .unwrap()
            .verify(&t, now())
            .is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
