//! Unsubscribe tokens: `{subscription id}.{hex HMAC-SHA256(key, id and recipient), 16 bytes}`.
//! Bound to the recipient, so a token stops working when the subscription is replaced by one
//! to someone else; carried after `#` in links, so no server's access log holds one.

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub struct Keys {
    key: Vec<u8>,
}

impl Keys {
    pub fn new(key: Vec<u8>) -> Keys {
        Keys { key }
    }

    fn mac(&self, id: i64, recipient: &str) -> Hmac<Sha256> {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        m.update(format!("kiln-unsubscribe\n{id}\n{recipient}").as_bytes());
        m
    }

    pub fn token(&self, id: i64, recipient: &str) -> String {
        let tag = self.mac(id, recipient).finalize().into_bytes();
        format!("{id}.{}", hex::encode(&tag[..16]))
    }

    /// The subscription a token names, before its signature is checked.
    pub fn subscription_of(token: &str) -> Option<i64> {
        token.split_once('.')?.0.parse().ok()
    }

    /// Whether `token` is this master's for subscription `id` to `recipient`.
    pub fn verify(&self, token: &str, id: i64, recipient: &str) -> bool {
        let Some((sid, tag)) = token.split_once('.') else {
            return false;
        };
        let Ok(tag) = hex::decode(tag) else {
            return false;
        };
        tag.len() == 16
            && sid.parse() == Ok(id)
            && self.mac(id, recipient).verify_truncated_left(&tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_one_subscription_and_recipient() {
        let k = Keys::new(vec![7; 32]);
        let t = k.token(12, "email:a@x");
        assert_eq!(Keys::subscription_of(&t), Some(12));
        assert!(k.verify(&t, 12, "email:a@x"));
        assert!(!k.verify(&t, 12, "email:b@x"));
        assert!(!k.verify(&t, 13, "email:a@x"));
        assert!(!Keys::new(vec![8; 32]).verify(&t, 12, "email:a@x"));
        assert!(!k.verify(&format!("{t}00"), 12, "email:a@x"));
        assert!(!k.verify("12.zz", 12, "email:a@x"));
        assert!(!k.verify("12.", 12, "email:a@x"));
        // A shortened tag is not a weaker match.
        assert!(!k.verify(&t[..t.len() - 2], 12, "email:a@x"));
    }
}
