//! How the slave trusts the master over HTTPS/WSS (rustls, ring): the system's roots by default,
//! a private CA (`--ca FILE`), or a pinned CA (`--ca-sha256 HEX`, the fingerprint that
//! `kiln-master init --tls-self-signed` prints). Verification can be narrowed, never turned off.

use anyhow::{bail, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;

/// What the slave trusts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Trust {
    /// The system's certificate store.
    #[default]
    System,
    /// Certificates (a private CA) from a PEM file.
    CaFile(std::path::PathBuf),
    /// A CA certificate with this sha256 (hex), which the master sends in its chain.
    Pin(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>> {
    Ok(ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?)
}

fn roots_from_file(path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("--ca: cannot read {}", path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("--ca: {} is not a PEM certificate file", path.display()))?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        bail!("--ca: {} holds no usable certificate", path.display());
    }
    Ok(roots)
}

/// The client TLS context for `trust`.
pub fn client_config(trust: &Trust) -> Result<Arc<ClientConfig>> {
    let config = match trust {
        Trust::System => {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            builder()?
                .with_root_certificates(roots)
                .with_no_client_auth()
        }
        Trust::CaFile(path) => builder()?
            .with_root_certificates(roots_from_file(path)?)
            .with_no_client_auth(),
        Trust::Pin(hex) => builder()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCa::new(hex)?))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Trusts the CA whose certificate has the pinned sha256, when the master presents it in its
/// chain; the server's certificate is then verified against it as against any root (signature,
/// name, validity).
#[derive(Debug)]
struct PinnedCa {
    pin: [u8; 32],
    schemes: Vec<SignatureScheme>,
}

impl PinnedCa {
    fn new(hex_pin: &str) -> Result<Self> {
        let bytes = hex::decode(hex_pin.trim().replace(':', ""))
            .ok()
            .filter(|b| b.len() == 32)
            .context("--ca-sha256: give the CA's sha256 fingerprint as 64 hex digits")?;
        let mut pin = [0u8; 32];
        pin.copy_from_slice(&bytes);
        Ok(PinnedCa {
            pin,
            schemes: provider()
                .signature_verification_algorithms
                .supported_schemes(),
        })
    }
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let pinned = intermediates
            .iter()
            .find(|c| Sha256::digest(c.as_ref()).as_slice() == self.pin)
            .ok_or_else(|| {
                rustls::Error::General(
                    "no certificate in the master's chain has the pinned sha256".into(),
                )
            })?;
        let mut roots = RootCertStore::empty();
        roots
            .add(pinned.clone().into_owned())
            .map_err(|e| rustls::Error::General(format!("the pinned CA is unusable: {e}")))?;
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes.clone()
    }
}

/// The rustls error inside an error chain, if the failure was the master's certificate.
pub fn certificate_error(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            if matches!(
                r,
                rustls::Error::InvalidCertificate(_) | rustls::Error::General(_)
            ) {
                return Some(r.to_string());
            }
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(found) = certificate_error(inner) {
                    return Some(found);
                }
            }
        }
        cur = err.source();
    }
    None
}

/// The message that stops the slave when the master's certificate does not verify.
pub fn refusal(host: &str, why: &str, trust: &Trust) -> String {
    let hint = match trust {
        Trust::System => "if the master uses a private CA, give it with --ca FILE (its ca.pem) or pin it with --ca-sha256 HEX (the fingerprint `kiln-master init --tls-self-signed` printed)",
        Trust::CaFile(_) => "check that --ca names the CA that signed the master's certificate (its ca.pem), or pin it with --ca-sha256 HEX",
        Trust::Pin(_) => "check --ca-sha256 against the fingerprint `kiln-master init --tls-self-signed` printed, or give the CA with --ca FILE",
    };
    format!("the certificate of the master at {host} does not verify ({why}); {hint}")
}
