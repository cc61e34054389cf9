//! QUIC helpers: a room with members and their media tokens, raw quinn connections that pin
//! the server's certificate by the SHA-256 its API publishes, and moq-lite sessions (ours,
//! `veza_moq::session`) on top.

use std::net::SocketAddr;

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
        let sha256 = veza_client::net::parse_hex(str_field(&hash, "/value"))
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

    /// A QUIC configuration that accepts only this certificate, offering `alpns`.
    pub fn client_config(&self, alpns: &[&[u8]]) -> quinn::ClientConfig {
        veza_client::net::pinned_client_config(self.sha256, alpns)
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
