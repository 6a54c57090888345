//! TLS for the master: HTTPS and WSS on the one listen address, with rustls (ring as its one
//! crypto backend). The certificate and key are PEM files named by `[master.tls]`, re-read on
//! SIGHUP without dropping connections; `kiln-master init --tls-self-signed` makes a private CA
//! and a server certificate signed by it.

use anyhow::{bail, Context, Result};
use kiln_shared::config::Config;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The one crypto backend every TLS context in Kiln uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate and key files of `[master.tls]`, resolved against the data dir.
pub fn files(cfg: &Config) -> Option<(PathBuf, PathBuf)> {
    let t = cfg.master.tls.as_ref()?;
    Some((cfg.path(&t.cert), cfg.path(&t.key)))
}

/// Reads the certificate chain and key into a server config (HTTP/1.1 only: WebSockets upgrade
/// over it).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("config key master.tls.cert: cannot read {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("config key master.tls.cert: {} is not PEM", cert.display()))?;
    if chain.is_empty() {
        bail!(
            "config key master.tls.cert: {} holds no certificate",
            cert.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "config key master.tls.key: cannot read a private key from {}",
            key.display()
        )
    })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("config keys master.tls.cert/key: the key does not match the certificate")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Plain HTTP is for loopback only, unless the config says otherwise (a TLS proxy in front).
pub fn check_plain_http(cfg: &Config, addr: SocketAddr) -> Result<()> {
    if addr.ip().is_loopback() {
        tracing::warn!(
            "serving plain HTTP on {addr} (loopback only; set [master.tls] to serve HTTPS)"
        );
        return Ok(());
    }
    if cfg.master.allow_plain_http {
        tracing::warn!(
            "serving plain HTTP on {addr} because master.allow_plain_http = true: tokens and images cross the network unencrypted unless a TLS proxy is in front"
        );
        return Ok(());
    }
    bail!(
        "refusing to serve plain HTTP on {addr}: slave tokens and images would cross the network unencrypted. Set [master.tls] cert/key (kiln-master init --tls-self-signed makes them), listen on loopback, or set master.allow_plain_http = true behind a TLS proxy"
    )
}

/// sha256 of a certificate (DER), as lower-case hex: what `kiln-slave --ca-sha256` pins.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// What `init --tls-self-signed` wrote.
pub struct SelfSigned {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca_sha256: String,
}

/// Makes a private CA and a server certificate for `names` (DNS names or IP addresses), signed
/// by it, into `dir`: `ca.pem`, `server.pem` (the server's certificate, then the CA's) and
/// `server.key` (0600).
pub fn self_signed(dir: &Path, names: &[String]) -> Result<SelfSigned> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name
        .push(DnType::CommonName, "Kiln private CA");
    ca.not_after = rcgen::date_time_ymd(2036, 1, 1);
    let ca_cert = ca.self_signed(&ca_key)?;
    let server_key = KeyPair::generate()?;
    let mut server = CertificateParams::new(names.to_vec())
        .context("--tls-name: not a host name or IP address")?;
    server.distinguished_name.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    server.not_after = rcgen::date_time_ymd(2036, 1, 1);
    let server_cert = server.signed_by(&server_key, &ca_cert, &ca_key)?;
    let out = SelfSigned {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        ca_sha256: fingerprint(ca_cert.der()),
    };
    std::fs::write(&out.ca, ca_cert.pem())?;
    std::fs::write(&out.cert, format!("{}{}", server_cert.pem(), ca_cert.pem()))?;
    crate::init::write_private(&out.key, &server_key.serialize_pem())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_signed_pair_loads_and_names_its_ca() {
        let dir = std::env::temp_dir().join(format!("kiln-tls-{}", std::process::id()));
        let s = self_signed(&dir, &["localhost".into(), "127.0.0.1".into()]).unwrap();
        assert_eq!(s.ca_sha256.len(), 64);
        server_config(&s.cert, &s.key).unwrap();
        let err = server_config(&s.key, &s.key).unwrap_err();
        assert!(format!("{err:#}").contains("master.tls.cert"), "{err:#}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
