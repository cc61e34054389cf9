//! Dialing a moq-lite server over raw QUIC (ALPN `moq-lite-06`), pinning its certificate by
//! SHA-256 the way WebTransport's `serverCertificateHashes` does. Used by the command-line
//! client, the load tool and the cluster cascade (a media node pulling a room from another).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use web_transport_quinn::quinn;

use super::{Options, Session};
use crate::message::Setup;

/// Why a dial failed.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {reason}")]
pub struct DialError {
    /// Where we dialed.
    pub url: String,
    /// What went wrong.
    pub reason: String,
}

/// Keep-alive and idle timeout of dialed connections: a server that went away is noticed
/// within [`DIAL_IDLE_TIMEOUT`].
pub const DIAL_KEEP_ALIVE: Duration = Duration::from_secs(1);
/// See [`DIAL_KEEP_ALIVE`].
pub const DIAL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// Connects to `url` (`https://host:port/path`) with `query` appended to the SETUP path
/// (`/path?query`), accepting only the certificate whose SHA-256 is `sha256`.
pub async fn dial(url: &str, query: &str, sha256: [u8; 32]) -> Result<Session, DialError> {
    dial_with(url, query, sha256, Options::default()).await
}

/// [`dial`] with session options (their `setup` is replaced by one carrying the path).
pub async fn dial_with(
    url: &str,
    query: &str,
    sha256: [u8; 32],
    options: Options,
) -> Result<Session, DialError> {
    let failed = |reason: String| DialError {
        url: url.to_owned(),
        reason,
    };
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| failed("the URL must start with https://".into()))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let addr: SocketAddr = tokio::net::lookup_host(authority)
        .await
        .map_err(|e| failed(format!("cannot resolve {authority}: {e}")))?
        .next()
        .ok_or_else(|| failed(format!("{authority} has no address")))?;
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
        .trim_matches(['[', ']']);
    let config = pinned_client_config(sha256, &[crate::ALPN.as_bytes()]);
    let bind: SocketAddr = if addr.is_ipv6() {
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
    } else {
        SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0))
    };
    let endpoint = quinn::Endpoint::client(bind).map_err(|e| failed(e.to_string()))?;
    let connection = endpoint
        .connect_with(config, addr, host)
        .map_err(|e| failed(e.to_string()))?
        .await
        .map_err(|e| failed(e.to_string()))?;
    let transport = web_transport_quinn::Session::raw(connection);
    Ok(Session::start(
        transport,
        Options {
            setup: Setup::with_path(&format!("/{path}?{query}")),
            ..options
        },
    ))
}

/// A QUIC client configuration that accepts only the certificate with this SHA-256, offering
/// `alpns`, with keep-alives every [`DIAL_KEEP_ALIVE`] and an idle timeout of
/// [`DIAL_IDLE_TIMEOUT`].
pub fn pinned_client_config(sha256: [u8; 32], alpns: &[&[u8]]) -> quinn::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("the ring provider supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCertificate { sha256, provider }))
        .with_no_client_auth();
    tls.alpn_protocols = alpns.iter().map(|alpn| alpn.to_vec()).collect();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .expect("a TLS 1.3 configuration with an initial cipher suite");
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(DIAL_KEEP_ALIVE))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(DIAL_IDLE_TIMEOUT).expect("a valid idle timeout"),
        ))
        .max_concurrent_uni_streams(1024u32.into());
    config.transport_config(Arc::new(transport));
    config
}

/// 64 hex digits as 32 bytes (a certificate hash).
pub fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Accepts exactly the certificate with the expected SHA-256, checking the handshake
/// signature with it.
#[derive(Debug)]
struct PinnedCertificate {
    sha256: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let digest = ring::digest::digest(&ring::digest::SHA256, end_entity);
        if digest.as_ref() == self.sha256 {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the server's certificate is not the one its API published".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not used by QUIC".into()))
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::parse_hex;

    #[test]
    fn certificate_hashes_parse_from_hex() {
        let hex = "00ff".repeat(16);
        let parsed = parse_hex(&hex).unwrap();
        assert_eq!(parsed[0], 0);
        assert_eq!(parsed[1], 0xff);
        assert!(parse_hex("abc").is_none());
        assert!(parse_hex(&"zz".repeat(32)).is_none());
    }
}
