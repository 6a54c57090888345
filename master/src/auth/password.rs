//! Local accounts' passwords: argon2id (the crate's defaults: 19 MiB, 2 passes), stored as PHC
//! strings. A sign-in with an unknown name still hashes once, so its time does not tell which
//! names exist.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::{Argon2, PasswordVerifier};

/// Shortest password Kiln accepts.
pub const MIN_LEN: usize = 10;

pub fn hash(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))
}

/// Whether `password` matches `stored` (a PHC string); `None` runs a dummy verification.
pub fn verify(password: &str, stored: Option<&str>) -> bool {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash("not a password of anyone").unwrap_or_default());
    let (phc, real) = match stored {
        Some(s) => (s, true),
        None => (dummy.as_str(), false),
    };
    let ok = PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false);
    ok && real
}

/// Why `password` cannot be someone's password, if it cannot.
pub fn weakness(password: &str) -> Option<String> {
    if password.chars().count() < MIN_LEN {
        return Some(format!("a password needs at least {MIN_LEN} characters"));
    }
    if password.len() > 1024 {
        return Some("a password may have at most 1024 bytes".into());
    }
    None
}

/// A fresh one-time password: 20 characters from an alphabet without look-alikes.
pub fn one_time() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rngs::OsRng;
    (0..20)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_are_argon2id() {
        let h = hash("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("correct horse battery", Some(&h)));
        assert!(!verify("wrong horse battery", Some(&h)));
        assert!(!verify("correct horse battery", None));
        assert!(!verify("x", Some("not a phc string")));
    }

    #[test]
    fn short_passwords_are_refused() {
        assert!(weakness("short").is_some());
        assert!(weakness("long enough pass").is_none());
        assert_eq!(one_time().len(), 20);
    }
}
