//! Webhooks: the address policy a webhook URL must pass, the signature, and one POST.
//!
//! The interface below is used by `notify::outbox` and `api::notify`.
//!
//! The policy is checked twice: on the URL when a subscription is made (`Policy::check_url`,
//! which can only judge an IP literal), and on every attempt against the addresses the host
//! resolves to then (`send`), and the HTTP client is pinned to exactly those checked addresses,
//! so a name that later resolves elsewhere (DNS rebinding) gains nothing.

use hmac::{Hmac, Mac};
use ipnet::IpNet;
use kiln_shared::config::NotifyConfig;
use reqwest::Url;
use sha2::Sha256;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The longest webhook URL accepted.
pub const MAX_URL_CHARS: usize = 2000;
/// How much of a refusing answer's body goes into the delivery record.
const ERROR_BODY_BYTES: usize = 200;

/// Which targets a webhook may have: public addresses, and loopback / link-local /
/// unspecified / multicast ones only inside `notify.webhook_allow`.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// `notify.webhook_allow`, parsed (a bare address is a /32 or /128).
    allow: Vec<IpNet>,
}

/// Why an address is refused unless allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Loopback,
    LinkLocal,
    Unspecified,
    Multicast,
    Broadcast,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Loopback => "a loopback address",
            Kind::LinkLocal => "a link-local address",
            Kind::Unspecified => "an unspecified address",
            Kind::Multicast => "a multicast address",
            Kind::Broadcast => "a broadcast address",
        })
    }
}

fn kind_v4(a: Ipv4Addr) -> Option<Kind> {
    if a.is_loopback() {
        Some(Kind::Loopback)
    } else if a.is_link_local() {
        Some(Kind::LinkLocal)
    } else if a.octets()[0] == 0 {
        // 0.0.0.0/8, "this network": 0.0.0.0 itself reaches the local host.
        Some(Kind::Unspecified)
    } else if a.is_multicast() {
        Some(Kind::Multicast)
    } else if a.is_broadcast() {
        Some(Kind::Broadcast)
    } else {
        None
    }
}

fn kind_v6(a: Ipv6Addr) -> Option<Kind> {
    if a.is_loopback() {
        Some(Kind::Loopback)
    } else if a.is_unspecified() {
        Some(Kind::Unspecified)
    } else if a.segments()[0] & 0xffc0 == 0xfe80 {
        Some(Kind::LinkLocal)
    } else if a.is_multicast() {
        Some(Kind::Multicast)
    } else {
        None
    }
}

/// One entry of `notify.webhook_allow`: a network (`127.0.0.0/8`) or an address (`::1`).
fn parse_allow(entry: &str) -> Result<IpNet, String> {
    let s = entry.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    Err(format!(
        "notify.webhook_allow: '{entry}' is neither an IP address nor a network (127.0.0.1/32, ::1)"
    ))
}

impl Policy {
    pub fn from_config(cfg: &NotifyConfig) -> Policy {
        let mut allow = Vec::new();
        for entry in &cfg.webhook_allow {
            match parse_allow(entry) {
                Ok(net) => allow.push(net),
                Err(e) => tracing::warn!("{e}; entry ignored"),
            }
        }
        Policy { allow }
    }

    /// Like `from_config`, but an entry of `notify.webhook_allow` that is not an address or a
    /// network is an error (for checking the configuration at start).
    pub fn try_from_config(cfg: &NotifyConfig) -> Result<Policy, String> {
        let allow = cfg
            .webhook_allow
            .iter()
            .map(|e| parse_allow(e))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policy { allow })
    }

    fn listed(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|n| n.contains(&ip))
    }

    /// Why `ip` is refused ("a loopback address (127.0.0.1)"), or `None` when it may be
    /// connected to.
    fn refusal(&self, ip: IpAddr) -> Option<String> {
        if self.listed(ip) {
            return None;
        }
        match ip {
            IpAddr::V4(a) => kind_v4(a).map(|k| format!("{k} ({a})")),
            IpAddr::V6(a) => {
                if let Some(v4) = a.to_ipv4_mapped() {
                    if self.listed(IpAddr::V4(v4)) {
                        return None;
                    }
                    kind_v4(v4).map(|k| format!("{k} ({a}, the IPv4-mapped form of {v4})"))
                } else {
                    kind_v6(a).map(|k| format!("{k} ({a})"))
                }
            }
        }
    }

    /// Whether a webhook may connect to `ip`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.refusal(ip).is_none()
    }

    /// Checks a URL's form (http or https, a host, no user:password@, no fragment, at most
    /// 2,000 characters) and, when the host is an IP literal, the address policy.
    pub fn check_url(&self, url: &str) -> Result<(), String> {
        self.parse_url(url).map(|_| ())
    }

    /// `check_url`, giving the parsed URL and its host.
    fn parse_url(&self, url: &str) -> Result<(Url, Host), String> {
        let url = url.trim();
        let chars = url.chars().count();
        if chars > MAX_URL_CHARS {
            return Err(format!(
                "webhook URL is {chars} characters long; at most {MAX_URL_CHARS} are accepted"
            ));
        }
        // The text is not repeated in these first errors: it may hold a password.
        let parsed = Url::parse(url).map_err(|e| format!("webhook URL is not a valid URL: {e}"))?;
        let scheme = parsed.scheme();
        if scheme != "http" && scheme != "https" {
            return Err(format!(
                "webhook URL must be http:// or https://, not {scheme}://"
            ));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(
                "webhook URL carries user:password@: credentials do not belong in the \
                        URL; the subscription's secret signs each delivery instead"
                    .to_string(),
            );
        }
        if parsed.fragment().is_some() {
            return Err(format!(
                "webhook URL {url} has a fragment (#...), which is never sent; remove it"
            ));
        }
        let host = match parsed.host_str() {
            Some(h) if !h.is_empty() => h,
            _ => return Err(format!("webhook URL {url} has no host")),
        };
        let host = match host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .parse::<IpAddr>()
        {
            Ok(ip) => {
                if let Some(why) = self.refusal(ip) {
                    return Err(format!(
                        "webhook URL {url} targets {why}; an admin can allow it with \
                         notify.webhook_allow"
                    ));
                }
                Host::Ip
            }
            Err(_) => Host::Name(host.to_string()),
        };
        Ok((parsed, host))
    }
}

/// A URL's host.
enum Host {
    Ip,
    Name(String),
}

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &str) -> HmacSha256 {
    HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length")
}

/// `sha256=<hex of HMAC-SHA256(secret, body)>`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut m = mac(secret);
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

/// Whether `header` is `body`'s signature under `secret` (constant time).
pub fn verify(secret: &str, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let mut m = mac(secret);
    m.update(body);
    m.verify_slice(&sig).is_ok()
}

/// How one POST went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// A 2xx answer.
    pub delivered: bool,
    pub status: Option<u16>,
    /// Why not, for the delivery record ("connection refused", "HTTP 500: <first 200 bytes>").
    pub error: Option<String>,
}

impl Outcome {
    fn failed(status: Option<u16>, error: impl Into<String>) -> Outcome {
        Outcome {
            delivered: false,
            status,
            error: Some(error.into()),
        }
    }
}

/// The TLS configuration of webhook clients: the platform's CA certificates
/// (`rustls-native-certs`: the system bundle, or `SSL_CERT_FILE`). `None` when there are none:
/// reqwest's built-in roots are used then.
fn tls_config() -> Option<&'static rustls::ClientConfig> {
    static CONFIG: OnceLock<Option<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = rustls::RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                tracing::warn!(
                    "webhooks: no system CA certificates found (install ca-certificates or set \
                     SSL_CERT_FILE); HTTPS webhooks are verified against built-in roots"
                );
                return None;
            }
            let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions();
            match builder {
                Ok(b) => Some(b.with_root_certificates(roots).with_no_client_auth()),
                Err(e) => {
                    tracing::warn!("webhooks: TLS configuration: {e}; using built-in roots");
                    None
                }
            }
        })
        .as_ref()
}

/// Text from a receiver for a delivery record: lossy UTF-8, control characters made spaces,
/// runs of spaces folded, trimmed.
fn clean(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(c);
    }
    out.trim_end().to_string()
}

/// At most the first `n` bytes of an answer's body (a read error ends it early).
async fn first_bytes(mut resp: reqwest::Response, n: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    while buf.len() < n {
        match resp.chunk().await {
            Ok(Some(c)) => buf.extend_from_slice(&c),
            _ => break,
        }
    }
    buf.truncate(n);
    buf
}

/// A transport error on one line, without the URL (its path may be a secret): the innermost
/// cause, which says what happened, under the layer just above it ("tcp connect error:
/// Connection refused (os error 111)").
fn transport_error(e: reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {}s (timed out)", timeout.as_secs_f64());
    }
    let e = e.without_url();
    let mut layers: Vec<String> = vec![e.to_string()];
    let mut cur = std::error::Error::source(&e);
    while let Some(c) = cur {
        let m = c.to_string();
        if !layers.iter().any(|p| p.contains(&m)) {
            layers.push(m);
        }
        cur = c.source();
    }
    match layers.as_slice() {
        [.., above, last] if layers.len() > 2 => format!("{above}: {last}"),
        [.., last] => last.clone(),
        [] => String::new(),
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// One delivery attempt: adds `"timestamp"` (unix seconds, now) and `"delivery"` (`delivery`)
/// to the JSON object `payload`, signs the bytes it sends, resolves the host and refuses
/// addresses the policy forbids (checked on the addresses actually connected to), POSTs with
/// `Content-Type: application/json`, `X-Kiln-Event`, `X-Kiln-Delivery`, `X-Kiln-Timestamp`,
/// `X-Kiln-Signature`, follows no redirect, gives up after `timeout`.
pub async fn send(
    policy: &Policy,
    url: &str,
    secret: &str,
    event: &str,
    delivery: i64,
    payload: &serde_json::Value,
    timeout: Duration,
) -> Outcome {
    let started = Instant::now();
    let (parsed, host) = match policy.parse_url(url) {
        Ok(p) => p,
        Err(e) => return Outcome::failed(None, e),
    };

    let timestamp = unix_now();
    let serde_json::Value::Object(map) = payload else {
        return Outcome::failed(None, "the webhook payload is not a JSON object");
    };
    let mut map = map.clone();
    map.insert("timestamp".into(), timestamp.into());
    map.insert("delivery".into(), delivery.into());
    let body = match serde_json::to_vec(&serde_json::Value::Object(map)) {
        Ok(b) => b,
        Err(e) => return Outcome::failed(None, format!("the webhook payload: {e}")),
    };
    let signature = sign(secret, &body);

    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        // A proxy would resolve and connect by itself, past the address policy.
        .no_proxy()
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")));
    if let Host::Name(name) = &host {
        let port = parsed.port_or_known_default().unwrap_or(80);
        let resolved =
            match tokio::time::timeout(timeout, tokio::net::lookup_host((name.as_str(), port)))
                .await
            {
                Ok(Ok(addrs)) => addrs.collect::<Vec<SocketAddr>>(),
                Ok(Err(e)) => return Outcome::failed(None, format!("cannot resolve {name}: {e}")),
                Err(_) => {
                    return Outcome::failed(
                        None,
                        format!(
                            "cannot resolve {name}: no answer within {}s",
                            timeout.as_secs_f64()
                        ),
                    )
                }
            };
        let mut allowed: Vec<SocketAddr> = Vec::new();
        let mut refused: Vec<String> = Vec::new();
        for a in resolved {
            match policy.refusal(a.ip()) {
                None => {
                    if !allowed.contains(&a) {
                        allowed.push(a);
                    }
                }
                Some(why) => {
                    if !refused.contains(&why) {
                        refused.push(why);
                    }
                }
            }
        }
        if allowed.is_empty() {
            return Outcome::failed(
                None,
                if refused.is_empty() {
                    format!("cannot resolve {name}: no addresses")
                } else {
                    format!(
                        "webhook host {name} resolves only to refused addresses: {}; an admin \
                         can allow them with notify.webhook_allow",
                        refused.join(", ")
                    )
                },
            );
        }
        builder = builder.resolve_to_addrs(name, &allowed);
    }
    let remaining = timeout.saturating_sub(started.elapsed());
    if remaining.is_zero() {
        return Outcome::failed(
            None,
            format!("no answer within {}s (timed out)", timeout.as_secs_f64()),
        );
    }
    builder = builder.timeout(remaining).connect_timeout(remaining);
    if parsed.scheme() == "https" {
        if let Some(tls) = tls_config() {
            builder = builder.use_preconfigured_tls(tls.clone());
        }
    }
    let client = match builder.build() {
        Ok(c) => c,
        Err(e) => return Outcome::failed(None, format!("HTTP client: {}", e.without_url())),
    };

    let resp = client
        .post(parsed)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-Kiln-Event", event)
        .header("X-Kiln-Delivery", delivery.to_string())
        .header("X-Kiln-Timestamp", timestamp.to_string())
        .header("X-Kiln-Signature", signature)
        .body(body)
        .send()
        .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => return Outcome::failed(None, transport_error(e, timeout)),
    };
    let status = resp.status();
    let code = status.as_u16();
    if status.is_success() {
        return Outcome {
            delivered: true,
            status: Some(code),
            error: None,
        };
    }
    if status.is_redirection() {
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .map(|v| clean(&v.as_bytes()[..v.len().min(ERROR_BODY_BYTES)]));
        let error = match location {
            Some(l) if !l.is_empty() => {
                format!("HTTP {code}: redirects are not followed (Location: {l})")
            }
            _ => format!("HTTP {code}: redirects are not followed"),
        };
        return Outcome::failed(Some(code), error);
    }
    let text = clean(&first_bytes(resp, ERROR_BODY_BYTES).await);
    let error = if text.is_empty() {
        match status.canonical_reason() {
            Some(r) => format!("HTTP {code}: {r}"),
            None => format!("HTTP {code}"),
        }
    } else {
        format!("HTTP {code}: {text}")
    };
    Outcome::failed(Some(code), error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn policy(allow: &[&str]) -> Policy {
        let cfg = NotifyConfig {
            webhook_allow: allow.iter().map(|s| s.to_string()).collect(),
            ..NotifyConfig::default()
        };
        Policy::try_from_config(&cfg).unwrap()
    }

    #[test]
    fn address_policy() {
        let none = policy(&[]);
        let table: &[(&str, bool)] = &[
            ("127.0.0.1", false),
            ("127.1.2.3", false),
            ("::1", false),
            ("169.254.1.1", false),
            ("fe80::1", false),
            ("febf::1", false),
            ("::ffff:127.0.0.1", false),
            ("::ffff:169.254.169.254", false),
            ("0.0.0.0", false),
            ("::", false),
            ("224.0.0.1", false),
            ("ff02::1", false),
            ("255.255.255.255", false),
            ("10.0.0.1", true),
            ("192.168.1.20", true),
            ("172.16.0.5", true),
            ("fd00::1", true),
            ("93.184.216.34", true),
            ("2606:2800:220:1::1", true),
            ("::ffff:10.0.0.1", true),
            ("fec0::1", true),
        ];
        for (ip, ok) in table {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(none.allows(ip), *ok, "{ip}");
        }

        let p = policy(&["127.0.0.1/32", "fe80::/10", " 169.254.169.254 "]);
        assert!(p.allows("127.0.0.1".parse().unwrap()));
        assert!(p.allows("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!p.allows("127.0.0.2".parse().unwrap()));
        assert!(!p.allows("::1".parse().unwrap()));
        assert!(p.allows("fe80::1234".parse().unwrap()));
        assert!(p.allows("169.254.169.254".parse().unwrap()));
        assert!(!p.allows("169.254.1.1".parse().unwrap()));
        let p = policy(&["::1"]);
        assert!(p.allows("::1".parse().unwrap()));
        assert!(!p.allows("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn bad_allow_entries() {
        let cfg = NotifyConfig {
            webhook_allow: vec!["localhost".into(), "127.0.0.1/32".into()],
            ..NotifyConfig::default()
        };
        let e = Policy::try_from_config(&cfg).unwrap_err();
        assert!(e.contains("'localhost'"), "{e}");
        // from_config keeps the good ones.
        assert!(Policy::from_config(&cfg).allows("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn url_checks() {
        let p = policy(&[]);
        assert!(p.check_url("https://hooks.example.org/kiln?x=1").is_ok());
        assert!(p.check_url("http://10.0.0.1:8080/hook").is_ok());
        assert!(p.check_url("http://[2001:db8::1]/hook").is_ok());
        // A name is only checked for form: it is resolved at each attempt.
        assert!(p.check_url("http://localhost/hook").is_ok());

        let e = p.check_url("http://127.0.0.1:9/x").unwrap_err();
        assert_eq!(
            e,
            "webhook URL http://127.0.0.1:9/x targets a loopback address (127.0.0.1); an admin \
             can allow it with notify.webhook_allow"
        );
        assert!(policy(&["127.0.0.1/32"])
            .check_url("http://127.0.0.1:9/x")
            .is_ok());
        // Other spellings of the loopback address.
        for u in [
            "http://2130706433/",
            "http://0x7f.1/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
        ] {
            let e = p.check_url(u).unwrap_err();
            assert!(e.contains("loopback"), "{u}: {e}");
        }
        let e = p
            .check_url("http://169.254.169.254/latest/meta-data")
            .unwrap_err();
        assert!(e.contains("link-local"), "{e}");
        let e = p.check_url("http://[fe80::1]/").unwrap_err();
        assert!(e.contains("link-local"), "{e}");
        let e = p.check_url("http://0.0.0.0:8080/").unwrap_err();
        assert!(e.contains("unspecified"), "{e}");
        let e = p.check_url("http://224.0.0.1/").unwrap_err();
        assert!(e.contains("multicast"), "{e}");
        let e = p.check_url("http://255.255.255.255/").unwrap_err();
        assert!(e.contains("broadcast"), "{e}");

        let e = p.check_url("ftp://example.org/x").unwrap_err();
        assert!(
            e.contains("http:// or https://") && e.contains("ftp://"),
            "{e}"
        );
        let e = p.check_url("file:///etc/passwd").unwrap_err();
        assert!(e.contains("file://"), "{e}");
        let e = p
            .check_url("https://user:hunter2@example.org/x")
            .unwrap_err();
        assert!(e.contains("credentials do not belong in the URL"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        assert!(p.check_url("https://user@example.org/x").is_err());
        assert!(p.check_url("https://:pw@example.org/x").is_err());
        let e = p.check_url("https://example.org/x#frag").unwrap_err();
        assert!(e.contains("fragment"), "{e}");
        let e = p.check_url("http://").unwrap_err();
        assert!(e.contains("not a valid URL"), "{e}");
        let e = p.check_url("http:?x").unwrap_err();
        assert!(
            e.contains("not a valid URL") || e.contains("no host"),
            "{e}"
        );
        let e = p.check_url("not a url").unwrap_err();
        assert!(e.contains("not a valid URL"), "{e}");
        let long = format!("https://example.org/{}", "a".repeat(2000));
        let e = p.check_url(&long).unwrap_err();
        assert!(e.contains("at most 2000"), "{e}");
        let ok = format!("https://example.org/{}", "a".repeat(2000 - 20));
        assert_eq!(ok.len(), 2000);
        assert!(p.check_url(&ok).is_ok());
    }

    #[test]
    fn signatures() {
        // GitHub's documented example, computed with Python's hmac too.
        let s = sign("It's a Secret to Everybody", b"Hello, World!");
        assert_eq!(
            s,
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        assert!(verify("It's a Secret to Everybody", b"Hello, World!", &s));
        let body = br#"{"event":"failed","delivery":42}"#;
        assert_eq!(
            sign("kiln-secret", body),
            "sha256=db4651c3c9b4d4cfce12b3ff9963c59f65b68fceb3c843d5d06381690ca83cbb"
        );
        assert_eq!(
            sign("", b""),
            "sha256=b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad"
        );
        assert!(!verify("kiln-secret", b"{}", &sign("kiln-secret", body)));
        assert!(!verify("other", body, &sign("kiln-secret", body)));
        assert!(!verify("kiln-secret", body, "sha256=zz"));
        assert!(!verify("kiln-secret", body, "sha256="));
        assert!(!verify("kiln-secret", body, ""));
        let bare = sign("kiln-secret", body)["sha256=".len()..].to_string();
        assert!(!verify("kiln-secret", body, &bare));
        let upper = format!("sha256={}", bare.to_uppercase());
        assert!(verify("kiln-secret", body, &upper));
    }

    #[test]
    fn cleaning() {
        assert_eq!(clean(b"  oops\r\n\tbad\x00 thing \n"), "oops bad thing");
        assert_eq!(clean(b"\xff\xfeok"), "\u{fffd}\u{fffd}ok");
    }

    /// What the test server received.
    struct Seen {
        head: String,
        body: Vec<u8>,
    }

    impl Seen {
        fn header(&self, name: &str) -> Option<String> {
            self.head.lines().skip(1).find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        }
    }

    /// Reads one request from `sock` (head and a `Content-Length` body).
    async fn read_request(sock: &mut tokio::net::TcpStream) -> Seen {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = sock.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed mid-request");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buf[..end].to_vec()).unwrap();
        let mut seen = Seen {
            head,
            body: Vec::new(),
        };
        let len: usize = seen
            .header("content-length")
            .map(|v| v.parse().unwrap())
            .unwrap_or(0);
        let mut body = buf[end..].to_vec();
        while body.len() < len {
            let n = sock.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed mid-body");
            body.extend_from_slice(&chunk[..n]);
        }
        seen.body = body;
        seen
    }

    /// A server on 127.0.0.1 that answers one request with `answer` and hands back what it saw.
    async fn serve_once(answer: &'static str) -> (u16, tokio::task::JoinHandle<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let seen = read_request(&mut sock).await;
            sock.write_all(answer.as_bytes()).await.unwrap();
            sock.shutdown().await.ok();
            seen
        });
        (port, task)
    }

    const SECS: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn delivers_signed() {
        let (port, server) =
            serve_once("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n").await;
        let p = policy(&["127.0.0.1/32"]);
        let payload = json!({"version": 1, "event": "failed", "project": "board"});
        let url = format!("http://127.0.0.1:{port}/hook?x=1");
        let before = unix_now();
        let out = send(&p, &url, "s3cret", "failed", 42, &payload, SECS).await;
        assert_eq!(
            out,
            Outcome {
                delivered: true,
                status: Some(204),
                error: None
            }
        );
        let seen = server.await.unwrap();
        assert!(
            seen.head.starts_with("POST /hook?x=1 HTTP/1.1\r\n"),
            "{}",
            seen.head
        );
        assert_eq!(
            seen.header("content-type").as_deref(),
            Some("application/json")
        );
        assert_eq!(
            seen.header("user-agent"),
            Some(format!("kiln/{}", env!("CARGO_PKG_VERSION")))
        );
        assert_eq!(seen.header("x-kiln-event").as_deref(), Some("failed"));
        assert_eq!(seen.header("x-kiln-delivery").as_deref(), Some("42"));
        let sig = seen.header("x-kiln-signature").unwrap();
        assert!(verify("s3cret", &seen.body, &sig), "{sig}");
        assert!(!verify("other", &seen.body, &sig));
        let body: serde_json::Value = serde_json::from_slice(&seen.body).unwrap();
        assert_eq!(body["delivery"], 42);
        assert_eq!(body["version"], 1);
        assert_eq!(body["project"], "board");
        let ts = body["timestamp"].as_i64().unwrap();
        assert!(ts >= before && ts <= unix_now(), "{ts}");
        assert_eq!(seen.header("x-kiln-timestamp"), Some(ts.to_string()));
        // The caller's payload is not touched.
        assert!(payload.get("timestamp").is_none());
    }

    #[tokio::test]
    async fn resolves_names_and_connects_only_to_allowed_addresses() {
        let (port, server) = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
        // Only 127.0.0.1 is allowed: were ::1 tried, nothing listens there.
        let p = policy(&["127.0.0.1/32"]);
        let url = format!("http://localhost:{port}/h");
        let out = send(&p, &url, "k", "test", 1, &json!({}), SECS).await;
        assert!(out.delivered, "{out:?}");
        let seen = server.await.unwrap();
        assert!(verify(
            "k",
            &seen.body,
            &seen.header("x-kiln-signature").unwrap()
        ));
    }

    #[tokio::test]
    async fn server_error_is_reported() {
        let (port, server) = serve_once(
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 300\r\nConnection: close\r\n\r\n\
             database\r\n\tis down\x07 \
             xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
             xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
             xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\
             yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy",
        )
        .await;
        let p = policy(&["127.0.0.1/32"]);
        let url = format!("http://127.0.0.1:{port}/hook");
        let out = send(&p, &url, "k", "failed", 7, &json!({"a": 1}), SECS).await;
        assert!(!out.delivered);
        assert_eq!(out.status, Some(500));
        let e = out.error.unwrap();
        assert!(e.starts_with("HTTP 500: database is down x"), "{e}");
        assert!(!e.contains('y'), "{e}");
        assert!(e.len() <= "HTTP 500: ".len() + 200, "{e}");
        server.await.unwrap();

        let (port, server) =
            serve_once("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n").await;
        let url = format!("http://127.0.0.1:{port}/hook");
        let out = send(&p, &url, "k", "failed", 7, &json!({}), SECS).await;
        assert_eq!(out.status, Some(503));
        assert_eq!(out.error.as_deref(), Some("HTTP 503: Service Unavailable"));
        server.await.unwrap();
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target_port = target.local_addr().unwrap().port();
        let answer: &'static str = Box::leak(
            format!(
                "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{target_port}/elsewhere\r\n\
                 Content-Length: 0\r\n\r\n"
            )
            .into_boxed_str(),
        );
        let (port, server) = serve_once(answer).await;
        let p = policy(&["127.0.0.1/32"]);
        let url = format!("http://127.0.0.1:{port}/hook");
        let out = send(&p, &url, "k", "failed", 7, &json!({}), SECS).await;
        assert!(!out.delivered);
        assert_eq!(out.status, Some(302));
        let e = out.error.unwrap();
        assert!(e.contains("redirects are not followed"), "{e}");
        assert!(e.contains("/elsewhere"), "{e}");
        server.await.unwrap();
        let followed = tokio::time::timeout(Duration::from_millis(200), target.accept()).await;
        assert!(followed.is_err(), "the redirect was followed");
    }

    #[tokio::test]
    async fn refused_targets_are_never_connected_to() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let p = policy(&[]);
        for url in [
            format!("http://127.0.0.1:{port}/x"),
            format!("http://localhost:{port}/x"),
        ] {
            let out = send(&p, &url, "k", "failed", 1, &json!({}), SECS).await;
            assert!(!out.delivered);
            assert_eq!(out.status, None);
            let e = out.error.unwrap();
            assert!(
                e.contains("loopback") && e.contains("notify.webhook_allow"),
                "{e}"
            );
        }
        let out = send(
            &p,
            &format!("http://localhost:{port}/x"),
            "k",
            "failed",
            1,
            &json!({}),
            SECS,
        )
        .await;
        assert!(out
            .error
            .unwrap()
            .starts_with("webhook host localhost resolves only to refused addresses: "),);
        let connected = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(connected.is_err(), "a refused target was connected to");
    }

    #[tokio::test]
    async fn https_certificates_are_verified() {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert = ck.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(
            rustls::pki_types::PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()),
        );
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            // The client gives up during the handshake: the certificate is self-signed.
            acceptor.accept(sock).await.is_ok()
        });
        let p = policy(&["127.0.0.1/32"]);
        let url = format!("https://localhost:{port}/x");
        let out = send(&p, &url, "k", "failed", 1, &json!({}), SECS).await;
        assert!(!out.delivered);
        assert_eq!(out.status, None);
        let e = out.error.unwrap();
        assert!(e.contains("certificate"), "{e}");
        assert!(!server.await.unwrap());
    }

    #[tokio::test]
    async fn transport_errors() {
        let p = policy(&["127.0.0.1/32"]);
        // Nothing listens on a port just freed.
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{port}/secret-path");
        let out = send(&p, &url, "k", "failed", 1, &json!({}), SECS).await;
        assert!(!out.delivered);
        assert_eq!(out.status, None);
        let e = out.error.unwrap();
        assert!(e.to_lowercase().contains("connection refused"), "{e}");
        assert!(!e.contains("secret-path"), "{e}");

        // A receiver that never answers.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hold = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let _ = read_request(&mut sock).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let url = format!("http://127.0.0.1:{port}/x");
        let t = Instant::now();
        let out = send(
            &p,
            &url,
            "k",
            "failed",
            1,
            &json!({}),
            Duration::from_millis(300),
        )
        .await;
        assert!(t.elapsed() < Duration::from_secs(3));
        assert!(!out.delivered);
        let e = out.error.unwrap();
        assert!(e.contains("timed out"), "{e}");
        hold.abort();

        // TLS to a receiver that does not speak it (the platform roots are loaded first).
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let plain = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        });
        let url = format!("https://127.0.0.1:{port}/x");
        let out = send(&p, &url, "k", "failed", 1, &json!({}), SECS).await;
        assert!(!out.delivered);
        assert_eq!(out.status, None);
        assert!(
            out.error.as_deref().is_some_and(|e| !e.is_empty()),
            "{out:?}"
        );
        plain.abort();

        // Not an object.
        let out = send(&p, &url, "k", "failed", 1, &json!([1, 2]), SECS).await;
        assert_eq!(
            out.error.as_deref(),
            Some("the webhook payload is not a JSON object")
        );
        // A bad URL.
        let out = send(&p, "ftp://x/", "k", "failed", 1, &json!({}), SECS).await;
        assert!(out.error.unwrap().contains("http:// or https://"));
    }
}
