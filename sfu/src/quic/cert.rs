//! The QUIC endpoint's certificate: from files, or self-signed and short-lived.
//!
//! Browsers accept a self-signed certificate for WebTransport only through
//! `serverCertificateHashes`, and only an ECDSA P-256 one valid for at most 14 days. In embedded
//! mode the server therefore makes such a certificate (13 days), serves its SHA-256 from the API,
//! and makes a new one 3 days before the old one expires. The TLS config resolves the current
//! certificate at every handshake, so renewal needs no restart.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::ring::sign::any_ecdsa_type;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// How long a self-signed certificate is valid (browsers refuse hashes of longer ones).
pub const SELF_SIGNED_VALIDITY: Duration = Duration::from_secs(13 * 24 * 3600);
/// How long before expiry a self-signed certificate is replaced.
pub const RENEW_BEFORE: Duration = Duration::from_secs(3 * 24 * 3600);

/// Why a certificate could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Reading a PEM file failed.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM file held nothing usable.
    #[error("{0}")]
    Invalid(String),
    /// Generating the self-signed certificate failed.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// One certificate with its key, ready for rustls.
#[derive(Clone)]
pub struct Certificate {
    key: Arc<CertifiedKey>,
    /// SHA-256 of the leaf certificate's DER.
    sha256: [u8; 32],
    /// When a self-signed certificate should be replaced; `None` for configured ones.
    renew_at: Option<SystemTime>,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate")
            .field("sha256", &hex(&self.sha256))
            .field("renew_at", &self.renew_at)
            .finish()
    }
}

impl Certificate {
    /// A new self-signed ECDSA P-256 certificate for `names`, valid from an hour ago (clock
    /// skew) for [`SELF_SIGNED_VALIDITY`].
    pub fn self_signed(names: &[String]) -> Result<Self, CertError> {
        let now = SystemTime::now();
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = rcgen::CertificateParams::new(names.to_vec())?;
        params.not_before = (now - Duration::from_secs(3600)).into();
        params.not_after = (now + SELF_SIGNED_VALIDITY).into();
        let cert = params.self_signed(&key_pair)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
        let mut made = Self::from_der(vec![cert.der().clone()], key)?;
        made.renew_at = Some(now + SELF_SIGNED_VALIDITY - RENEW_BEFORE);
        Ok(made)
    }

    /// A certificate chain and private key from PEM files (configured deployments).
    pub fn from_pem_files(chain: &Path, key: &Path) -> Result<Self, CertError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| CertError::Read {
                path: path.display().to_string(),
                source,
            })
        };
        let chain_pem = read(chain)?;
        let key_pem = read(key)?;
        let certs: Vec<CertificateDer<'static>> = rustls_pemfile_certs(&chain_pem)?;
        let key = rustls::pki_types::pem::PemObject::from_pem_slice(&key_pem)
            .map_err(|e| CertError::Invalid(format!("{}: {e}", key.display())))?;
        Self::from_der(certs, key)
    }

    fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, CertError> {
        let leaf = chain
            .first()
            .ok_or_else(|| CertError::Invalid("the certificate chain is empty".into()))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, leaf);
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(digest.as_ref());
        let signing = any_ecdsa_type(&key)
            .or_else(|_| rustls::crypto::ring::sign::any_supported_type(&key))
            .map_err(|e| CertError::Invalid(format!("unusable private key: {e}")))?;
        Ok(Self {
            key: Arc::new(CertifiedKey::new(chain, signing)),
            sha256,
            renew_at: None,
        })
    }

    /// SHA-256 of the leaf certificate (what WebTransport's `serverCertificateHashes` takes).
    pub fn sha256(&self) -> [u8; 32] {
        self.sha256
    }

    /// The leaf certificate, DER encoded (for clients that pin it).
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.key.cert[0]
    }
}

fn rustls_pemfile_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertError> {
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Invalid(format!("certificate PEM: {e}")))?;
    if certs.is_empty() {
        return Err(CertError::Invalid("no certificate in the PEM file".into()));
    }
    Ok(certs)
}

/// The certificate in use, shared by the TLS config (which resolves it per handshake), the
/// renewal task and the API (which serves its hash).
#[derive(Debug, Clone)]
pub struct CertStore {
    current: Arc<RwLock<Certificate>>,
    names: Arc<[String]>,
}

impl CertStore {
    /// A store holding `cert`; `names` are used for self-signed renewals.
    pub fn new(cert: Certificate, names: Vec<String>) -> Self {
        Self {
            current: Arc::new(RwLock::new(cert)),
            names: names.into(),
        }
    }

    /// The certificate in use.
    pub fn current(&self) -> Certificate {
        self.current
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    /// Lower-case hex SHA-256 of the certificate in use.
    pub fn sha256_hex(&self) -> String {
        hex(&self.current().sha256)
    }

    /// Replaces a self-signed certificate that is due for renewal; true if it did.
    pub fn renew_if_due(&self, now: SystemTime) -> Result<bool, CertError> {
        let due = self.current().renew_at.is_some_and(|at| now >= at);
        if !due {
            return Ok(false);
        }
        let fresh = Certificate::self_signed(&self.names)?;
        *self
            .current
            .write()
            .unwrap_or_else(|poison| poison.into_inner()) = fresh;
        Ok(true)
    }

    /// Checks for renewal every hour, for as long as the runtime runs.
    pub fn spawn_renewal(&self) {
        let store = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(3600));
            loop {
                tick.tick().await;
                match store.renew_if_due(SystemTime::now()) {
                    Ok(true) => tracing::info!(
                        sha256 = %store.sha256_hex(),
                        "QUIC self-signed certificate renewed"
                    ),
                    Ok(false) => {}
                    Err(err) => tracing::warn!(%err, "QUIC certificate renewal failed"),
                }
            }
        });
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().key)
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_certificates_are_short_lived_p256_and_renewed() {
        let cert = Certificate::self_signed(&["localhost".into()]).unwrap();
        let renew_at = cert.renew_at.unwrap();
        let left = renew_at.duration_since(SystemTime::now()).unwrap();
        assert!(left > Duration::from_secs(9 * 24 * 3600) && left <= SELF_SIGNED_VALIDITY);
        assert_eq!(cert.key.key.algorithm(), rustls::SignatureAlgorithm::ECDSA);
        let digest = ring::digest::digest(&ring::digest::SHA256, cert.der());
        assert_eq!(digest.as_ref(), cert.sha256());

        let store = CertStore::new(cert, vec!["localhost".into()]);
        let before = store.sha256_hex();
        assert_eq!(before.len(), 64);
        assert!(!store.renew_if_due(SystemTime::now()).unwrap());
        assert_eq!(store.sha256_hex(), before);
        assert!(store.renew_if_due(renew_at).unwrap());
        assert_ne!(
            store.sha256_hex(),
            before,
            "a renewed certificate is a new one"
        );
    }

    #[test]
    fn pem_files_load_and_garbage_is_refused() {
        let dir = std::env::temp_dir().join(format!("veza-cert-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["veza.test".to_string()])
            .unwrap()
            .self_signed(&key_pair)
            .unwrap();
        let (chain, key) = (dir.join("chain.pem"), dir.join("key.pem"));
        std::fs::write(&chain, cert.pem()).unwrap();
        std::fs::write(&key, key_pair.serialize_pem()).unwrap();
        let loaded = Certificate::from_pem_files(&chain, &key).unwrap();
        assert_eq!(loaded.der().as_ref(), cert.der().as_ref());
        assert!(
            loaded.renew_at.is_none(),
            "configured certificates are not replaced"
        );

        std::fs::write(&chain, "not a certificate").unwrap();
        let err = Certificate::from_pem_files(&chain, &key).unwrap_err();
        assert!(err.to_string().contains("no certificate"), "{err}");
        let err = Certificate::from_pem_files(&dir.join("missing.pem"), &key).unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
