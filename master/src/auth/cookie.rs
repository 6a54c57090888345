//! The cookies the master sets: the session (`__Host-kiln_session`) and a sign-in in progress
//! (`__Host-kiln_login`). Both are HttpOnly, SameSite=Lax, Path=/, and Secure with the `__Host-`
//! prefix, except when the master serves plain HTTP on loopback (a browser drops Secure
//! cookies there), where they are `kiln_session` and `kiln_login` without Secure.

use axum::http::{header, HeaderMap, HeaderValue};

pub const SESSION: &str = "kiln_session";
pub const LOGIN_FLOW: &str = "kiln_login";

/// The cookie's name as set and read on this master.
pub fn name(base: &str, secure: bool) -> String {
    if secure {
        format!("__Host-{base}")
    } else {
        base.to_string()
    }
}

/// A `Set-Cookie` value; `max_age` `None` ends the cookie with the browser session, `Some(0)`
/// deletes it.
pub fn set(base: &str, value: &str, max_age: Option<u64>, secure: bool) -> HeaderValue {
    let mut c = format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Lax",
        name(base, secure)
    );
    if secure {
        c.push_str("; Secure");
    }
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static(""))
}

pub fn clear(base: &str, secure: bool) -> HeaderValue {
    set(base, "", Some(0), secure)
}

/// The value of cookie `base` (under this master's name for it) in the request.
pub fn read<'a>(headers: &'a HeaderMap, base: &str, secure: bool) -> Option<&'a str> {
    let wanted = name(base, secure);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == wanted)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_cookies_carry_the_host_prefix() {
        let c = set(SESSION, "abc", Some(60), true);
        assert_eq!(
            c.to_str().unwrap(),
            "__Host-kiln_session=abc; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=60"
        );
        let plain = set(SESSION, "abc", None, false);
        assert_eq!(
            plain.to_str().unwrap(),
            "kiln_session=abc; Path=/; HttpOnly; SameSite=Lax"
        );
    }

    #[test]
    fn reads_only_its_own_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("kiln_session=plain; __Host-kiln_session=sec; other=1"),
        );
        assert_eq!(read(&h, SESSION, true), Some("sec"));
        assert_eq!(read(&h, SESSION, false), Some("plain"));
        assert_eq!(read(&h, LOGIN_FLOW, false), None);
    }
}
