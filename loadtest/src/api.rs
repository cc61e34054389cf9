//! Users, rooms and media tokens through the HTTP API, and the WHIP/WHEP requests.
//!
//! Every room gets an owner (who only creates it and makes the publishers speakers), N
//! speakers and M listeners, each with a fresh account and a media token from
//! `POST /api/v1/rooms/{id}/join`.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::Error;

/// The password of every load-test account.
const PASSWORD: &str = "veza loadtest password";
/// Accounts registered at once (registration hashes a password: heavy on the server).
const CONCURRENT_SETUP: usize = 8;

/// One participant's way in: its media token and where to use it.
#[derive(Debug, Clone)]
pub struct Ticket {
    /// The media token.
    pub token: String,
    /// The participant id of the token.
    pub participant: String,
    /// The signaling WebSocket URL of the node the room is on.
    pub signaling: String,
    /// The WHIP URL of the room.
    pub whip: String,
    /// The WHEP URL of the room.
    pub whep: String,
    /// The room's moq-lite URL, when the server runs QUIC.
    pub quic: Option<String>,
    /// The SHA-256 of that node's QUIC certificate, when the join answer names it.
    pub quic_sha256: Option<[u8; 32]>,
}

/// One room's participants.
#[derive(Debug, Clone)]
pub struct RoomPlan {
    /// The room id.
    pub id: String,
    /// Speakers.
    pub publishers: Vec<Ticket>,
    /// Listeners.
    pub subscribers: Vec<Ticket>,
}

/// A JSON and SDP client for one server.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    /// A client for the server at `base` (`http://host:port`).
    pub fn new(base: &str) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Setup(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        }
    }

    async fn json(&self, request: reqwest::RequestBuilder, what: &str) -> Result<Value, Error> {
        let response = request
            .send()
            .await
            .map_err(|e| Error::Api(format!("{what}: cannot reach {}: {e}", self.base)))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let message = body["error"]["message"]
            .as_str()
            .or(body["message"].as_str())
            .unwrap_or("no details");
        let hint = if status == StatusCode::TOO_MANY_REQUESTS {
            " (start the server with high VEZA_RATE_LIMIT_PER_MIN and \
             VEZA_AUTH_RATE_LIMIT_PER_MIN)"
        } else {
            ""
        };
        Err(Error::Api(format!("{what}: {status}: {message}{hint}")))
    }

    /// Registers `username`; returns its access token and user id.
    pub async fn register(&self, username: &str) -> Result<(String, String), Error> {
        let request = self
            .http
            .post(self.url("/api/v1/auth/register"))
            .json(&json!({ "username": username, "password": PASSWORD }));
        let session = self.json(request, "register").await?;
        let access = field(&session, "/access_token")?;
        let id = field(&session, "/user/id")?;
        Ok((access, id))
    }

    /// Creates a public room; returns its id.
    pub async fn create_room(&self, access: &str, name: &str) -> Result<String, Error> {
        let request = self
            .http
            .post(self.url("/api/v1/rooms"))
            .bearer_auth(access)
            .json(&json!({ "name": name, "visibility": "public" }));
        field(&self.json(request, "create room").await?, "/id")
    }

    /// Gives `user` a role in `room` (as its owner).
    pub async fn set_role(
        &self,
        owner: &str,
        room: &str,
        user: &str,
        role: &str,
    ) -> Result<(), Error> {
        let request = self
            .http
            .put(self.url(&format!("/api/v1/rooms/{room}/members/{user}")))
            .bearer_auth(owner)
            .json(&json!({ "role": role }));
        self.json(request, "set role").await.map(drop)
    }

    /// Joins `room`; returns the media token and its URLs.
    pub async fn join(&self, access: &str, room: &str) -> Result<Ticket, Error> {
        let request = self
            .http
            .post(self.url(&format!("/api/v1/rooms/{room}/join")))
            .bearer_auth(access)
            .json(&json!({}));
        let join = self.json(request, "join").await?;
        Ok(Ticket {
            token: field(&join, "/token")?,
            participant: field(&join, "/participant_id")?,
            signaling: field(&join, "/urls/signaling").unwrap_or_default(),
            whip: field(&join, "/urls/whip").unwrap_or_else(|_| self.url(&format!("/whip/{room}"))),
            whep: field(&join, "/urls/whep").unwrap_or_else(|_| self.url(&format!("/whep/{room}"))),
            quic: field(&join, "/urls/quic").ok(),
            quic_sha256: field(&join, "/urls/quic_sha256")
                .ok()
                .and_then(|hex| parse_hex(&hex)),
        })
    }

    /// The QUIC endpoint's certificate SHA-256, to pin.
    pub async fn quic_certificate(&self) -> Result<[u8; 32], Error> {
        let request = self.http.get(self.url("/api/v1/quic/certificate-hash"));
        let hash = self.json(request, "QUIC certificate hash").await?;
        parse_hex(&field(&hash, "/value")?)
            .ok_or_else(|| Error::Api("the QUIC certificate hash is not 64 hex digits".into()))
    }

    /// Posts an SDP offer to a WHIP or WHEP URL; returns the answer and the session's
    /// `Location`.
    pub async fn post_sdp(
        &self,
        url: &str,
        token: &str,
        offer: String,
    ) -> Result<(String, Option<String>), Error> {
        let response = self
            .http
            .post(self.url(url))
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "application/sdp")
            .body(offer)
            .send()
            .await
            .map_err(|e| Error::Api(format!("POST {url}: {e}")))?;
        let status = response.status();
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .text()
            .await
            .map_err(|e| Error::Api(format!("POST {url}: {e}")))?;
        if status != StatusCode::CREATED {
            return Err(Error::Api(format!("POST {url}: {status}: {body}")));
        }
        Ok((body, location))
    }

    /// Ends a WHIP or WHEP session (`DELETE` on its `Location`); failures are ignored: the
    /// server times the session out anyway.
    pub async fn end_session(&self, location: &str, token: &str) {
        let _ = self
            .http
            .delete(self.url(location))
            .bearer_auth(token)
            .send()
            .await;
    }
}

fn field(value: &Value, pointer: &str) -> Result<String, Error> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| Error::Api(format!("no {pointer} in the answer {value}")))
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

/// Creates `rooms` rooms with `publishers` speakers and `subscribers` listeners each. Names
/// start with `prefix` (unique per run).
pub async fn prepare(
    api: &Api,
    prefix: &str,
    rooms: usize,
    publishers: usize,
    subscribers: usize,
) -> Result<Vec<RoomPlan>, Error> {
    let gate = Arc::new(Semaphore::new(CONCURRENT_SETUP));
    let mut plans = Vec::with_capacity(rooms);
    for r in 0..rooms {
        let (owner, _) = api.register(&format!("{prefix}-r{r}-owner")).await?;
        let room = api
            .create_room(&owner, &format!("loadtest {prefix} room {r}"))
            .await?;
        let mut tasks = JoinSet::new();
        for (i, speaker) in (0..publishers)
            .map(|i| (i, true))
            .chain((0..subscribers).map(|i| (i, false)))
        {
            let (api, gate, owner, room) = (api.clone(), gate.clone(), owner.clone(), room.clone());
            let name = format!("{prefix}-r{r}-{}{i}", if speaker { "p" } else { "s" });
            tasks.spawn(async move {
                let _permit = gate.acquire_owned().await;
                let (access, user) = api.register(&name).await?;
                if speaker {
                    api.set_role(&owner, &room, &user, "speaker").await?;
                }
                let ticket = api.join(&access, &room).await?;
                Ok::<_, Error>((speaker, i, ticket))
            });
        }
        let mut speakers = Vec::with_capacity(publishers);
        let mut listeners = Vec::with_capacity(subscribers);
        while let Some(done) = tasks.join_next().await {
            let (speaker, i, ticket) =
                done.map_err(|e| Error::Setup(format!("setup task failed: {e}")))??;
            if speaker {
                speakers.push((i, ticket));
            } else {
                listeners.push((i, ticket));
            }
        }
        speakers.sort_by_key(|(i, _)| *i);
        listeners.sort_by_key(|(i, _)| *i);
        plans.push(RoomPlan {
            id: room,
            publishers: speakers.into_iter().map(|(_, t)| t).collect(),
            subscribers: listeners.into_iter().map(|(_, t)| t).collect(),
        });
    }
    Ok(plans)
}

/// Registers `names` (at most [`CONCURRENT_SETUP`] at once); returns their access tokens and
/// user ids, in order.
pub async fn register_many(api: &Api, names: &[String]) -> Result<Vec<(String, String)>, Error> {
    let gate = Arc::new(Semaphore::new(CONCURRENT_SETUP));
    let mut tasks = JoinSet::new();
    for (i, name) in names.iter().enumerate() {
        let (api, gate, name) = (api.clone(), gate.clone(), name.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await;
            Ok::<_, Error>((i, api.register(&name).await?))
        });
    }
    let mut users = collect(tasks).await?;
    users.sort_by_key(|(i, _)| *i);
    Ok(users.into_iter().map(|(_, user)| user).collect())
}

/// Creates `rooms` public rooms owned by `owner`, named after `prefix`; returns their ids.
pub async fn create_rooms(
    api: &Api,
    owner: &str,
    prefix: &str,
    rooms: usize,
) -> Result<Vec<String>, Error> {
    let mut ids = Vec::with_capacity(rooms);
    for r in 0..rooms {
        ids.push(
            api.create_room(owner, &format!("loadtest {prefix} room {r}"))
                .await?,
        );
    }
    Ok(ids)
}

/// Joins every `(access token, room)` pair (`concurrency` at once; every join mints a new
/// participant, so one user may join a room many times); returns the tickets in order.
pub async fn join_many(
    api: &Api,
    joins: Vec<(String, String)>,
    concurrency: usize,
) -> Result<Vec<Ticket>, Error> {
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for (i, (access, room)) in joins.into_iter().enumerate() {
        let (api, gate) = (api.clone(), gate.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await;
            Ok::<_, Error>((i, api.join(&access, &room).await?))
        });
    }
    let mut tickets = collect(tasks).await?;
    tickets.sort_by_key(|(i, _)| *i);
    Ok(tickets.into_iter().map(|(_, ticket)| ticket).collect())
}

async fn collect<T: 'static>(mut tasks: JoinSet<Result<T, Error>>) -> Result<Vec<T>, Error> {
    let mut out = Vec::with_capacity(tasks.len());
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(value)) => out.push(value),
            Ok(Err(err)) => return Err(err),
            Err(err) => return Err(Error::Setup(format!("setup task failed: {err}"))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn certificate_hashes_parse_from_hex() {
        let parsed = super::parse_hex(&"00ff".repeat(16)).unwrap();
        assert_eq!((parsed[0], parsed[1]), (0, 0xff));
        assert!(super::parse_hex("abc").is_none());
        assert!(super::parse_hex(&"zz".repeat(32)).is_none());
    }
}
