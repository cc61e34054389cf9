//! QUIC helpers: a room with members and their media tokens, raw quinn connections that pin
//! the server's certificate by the SHA-256 its API publishes, and moq-lite sessions (ours,
//! `veza_moq::session`) on top.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::{Value, json};
use veza_moq::message::Setup;
use veza_moq::session::{Options, Session};

use super::{Server, str_field};

/// The server's QUIC endpoint as `GET /api/v1/quic/certificate-hash` describes it.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    /// UDP address.
    pub addr: SocketAddr,
    /// SHA-256 of the leaf certificate.
    pub sha256: [u8; 32],
}

impl Endpoint {
    /// Asks the API.
    pub async fn of(server: &Server) -> Self {
        let hash = server
            .api()
            .get("/api/v1/quic/certificate-hash", None)
            .await
            .expect(200, "certificate hash");
        assert_eq!(hash["algorithm"], "sha-256", "{hash}");
        let sha256 = parse_hex(str_field(&hash, "/value"))
            .unwrap_or_else(|| panic!("not a hex SHA-256: {hash}"));
        let url = str_field(&hash, "/url");
        let authority = url
            .strip_prefix("https://")
            .unwrap_or_else(|| panic!("the QUIC URL is not https: {url}"));
        let addr = authority
            .parse()
            .unwrap_or_else(|e| panic!("the QUIC URL {url} has no socket address: {e}"));
        Self { addr, sha256 }
    }

    /// A TLS configuration for QUIC that accepts only this certificate, offering `alpns`.
    pub fn client_config(&self, alpns: &[&[u8]]) -> quinn::ClientConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                sha256: self.sha256,
                provider,
            }))
            .with_no_client_auth();
        tls.alpn_protocols = alpns.iter().map(|a| a.to_vec()).collect();
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC TLS");
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport
            .keep_alive_interval(Some(Duration::from_secs(2)))
            .max_concurrent_uni_streams(1024u32.into());
        config.transport_config(Arc::new(transport));
        config
    }

    /// A QUIC connection from a fresh loopback client endpoint, offering `alpns`.
    pub async fn connect(
        &self,
        alpns: &[&[u8]],
    ) -> Result<quinn::Connection, quinn::ConnectionError> {
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("an address"))
            .expect("a client endpoint");
        endpoint
            .connect_with(self.client_config(alpns), self.addr, "localhost")
            .expect("starting the connection")
            .await
    }

    /// A QUIC connection with ALPN `moq-lite-06`.
    pub async fn connect_moq(&self) -> quinn::Connection {
        self.connect(&[veza_moq::ALPN.as_bytes()])
            .await
            .expect("the QUIC handshake")
    }

    /// Our moq-lite session to `room` with `token` (the path goes in our SETUP).
    pub async fn session(&self, room: &str, token: &str) -> Session {
        let conn = self.connect_moq().await;
        Session::start(
            web_transport_quinn::Session::raw(conn),
            Options {
                setup: Setup::with_path(&room_path(room, token)),
                ..Options::default()
            },
        )
    }
}

/// The SETUP path of a raw QUIC session: `/room/{id}?jwt={token}`.
pub fn room_path(room: &str, token: &str) -> String {
    format!("/room/{room}?jwt={token}")
}

/// One member of a room.
#[derive(Debug, Clone)]
pub struct Member {
    /// Media token from the join.
    pub token: String,
    /// Participant id (the name of its broadcast for the others).
    pub participant: String,
    /// The whole join reply.
    pub join: Value,
}

/// A public room owned by a fresh user, with its owner (who may publish) joined.
#[derive(Debug, Clone)]
pub struct Room {
    /// The room id.
    pub id: String,
    /// The owner's membership.
    pub owner: Member,
    /// The owner's API access token.
    pub owner_access: String,
}

impl Room {
    /// Registers `owner`, creates a public room and joins it.
    pub async fn create(server: &Server, owner: &str) -> Self {
        let api = server.api();
        let session = api.register(owner).await;
        let access = str_field(&session, "/access_token").to_owned();
        let body = json!({ "name": format!("{owner}'s room"), "visibility": "public" });
        let room = api
            .post("/api/v1/rooms", Some(&access), body)
            .await
            .expect(201, "create room");
        let id = str_field(&room, "/id").to_owned();
        let owner = join(server, &id, &access).await;
        assert_eq!(owner.join["grants"]["can_publish"], true, "{}", owner.join);
        Self {
            id,
            owner,
            owner_access: access,
        }
    }

    /// Registers `name`, makes it a speaker (by the owner) and joins.
    pub async fn speaker(&self, server: &Server, name: &str) -> Member {
        let api = server.api();
        let session = api.register(name).await;
        let user = str_field(&session, "/user/id");
        api.put(
            &format!("/api/v1/rooms/{}/members/{user}", self.id),
            Some(&self.owner_access),
            json!({ "role": "speaker" }),
        )
        .await
        .expect(200, "make a speaker");
        let member = join(server, &self.id, str_field(&session, "/access_token")).await;
        assert_eq!(
            member.join["grants"]["can_publish"], true,
            "{}",
            member.join
        );
        member
    }

    /// Registers `name` and joins as a listener.
    pub async fn listener(&self, server: &Server, name: &str) -> Member {
        let session = server.api().register(name).await;
        let member = join(server, &self.id, str_field(&session, "/access_token")).await;
        assert_eq!(
            member.join["grants"]["can_publish"], false,
            "{}",
            member.join
        );
        member
    }
}

async fn join(server: &Server, room: &str, access: &str) -> Member {
    let join = server
        .api()
        .post(
            &format!("/api/v1/rooms/{room}/join"),
            Some(access),
            json!({}),
        )
        .await
        .expect(200, "join");
    let quic = str_field(&join, "/urls/quic");
    assert!(
        quic.starts_with("https://127.0.0.1:") && quic.ends_with(&format!("/room/{room}")),
        "{join}"
    );
    Member {
        token: str_field(&join, "/token").to_owned(),
        participant: str_field(&join, "/participant_id").to_owned(),
        join,
    }
}

fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Fake Opus packet number `n`: an 8-byte big-endian counter, then bytes derived from it
/// (the SFU never decodes Opus), `len` bytes in all (at least 8).
pub fn opus_payload(n: u64, len: usize) -> Vec<u8> {
    let mut bytes = n.to_be_bytes().to_vec();
    bytes.extend((8..len).map(|i| (n as usize).wrapping_mul(31).wrapping_add(i) as u8));
    bytes
}

/// The counter of a payload that is exactly what [`opus_payload`] made, else `None`.
pub fn opus_counter(bytes: &[u8]) -> Option<u64> {
    let n = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    (bytes == opus_payload(n, bytes.len()).as_slice()).then_some(n)
}

/// Accepts exactly the pinned certificate, checking handshake signatures with it.
#[derive(Debug)]
struct Pinned {
    sha256: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
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
                "not the published certificate".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("QUIC is TLS 1.3 only".into()))
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
