//! The signaling WebSocket (`GET /rtc?token=…`, docs/protocol.md) as the load tool speaks it:
//! tokio-tungstenite over a TCP connection to the `--server` address, with small buffers (a
//! run may hold 10,000 of these), and the few fields of the server's JSON frames the tool
//! reads.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::Error;

/// One signaling session.
pub type Ws = WebSocketStream<TcpStream>;

/// How often real clients ping (docs/protocol.md); the server does not require it.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// Where the signaling sessions go.
#[derive(Debug, Clone)]
pub struct Endpoint {
    addr: SocketAddr,
    /// `ws://authority/rtc`.
    url: String,
}

impl Endpoint {
    /// The signaling endpoint of the server at `base` (`http://host:port`), reached at `addr`.
    pub fn new(base: &str, addr: SocketAddr) -> Result<Self, Error> {
        let url = ws_url(base).ok_or_else(|| {
            Error::Setup(format!(
                "--server {base}: signaling runs need a plain http:// URL (the load tool \
                 speaks no TLS)"
            ))
        })?;
        Ok(Self { addr, url })
    }

    /// The endpoint at a join answer's signaling URL (`ws://host:port/rtc`): in a cluster
    /// each media node has its own.
    pub async fn at(url: &str) -> Result<Self, String> {
        let authority = url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .ok_or_else(|| format!("{url}: the load tool speaks plain ws:// only"))?;
        let addr = tokio::net::lookup_host(authority)
            .await
            .map_err(|e| format!("resolving {authority}: {e}"))?
            .next()
            .ok_or_else(|| format!("{authority} has no address"))?;
        Ok(Self {
            addr,
            url: url.to_owned(),
        })
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Opens a session with `token` (TCP connect and WebSocket upgrade).
    pub async fn connect(&self, token: &str) -> Result<Ws, String> {
        let stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("TCP connect to {}: {e}", self.addr))?;
        let _ = stream.set_nodelay(true);
        let config = WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let (ws, _) = tokio_tungstenite::client_async_with_config(
            format!("{}?token={token}", self.url),
            stream,
            Some(config),
        )
        .await
        .map_err(|e| format!("WebSocket upgrade: {e}"))?;
        Ok(ws)
    }

    /// The `/rtc` URL without a token.
    pub fn url(&self) -> &str {
        &self.url
    }
}

/// `ws://authority/rtc` from `http://authority[/…]`.
fn ws_url(base: &str) -> Option<String> {
    let rest = base.strip_prefix("http://")?;
    let authority = rest.split('/').next().filter(|a| !a.is_empty())?;
    Some(format!("ws://{authority}/rtc"))
}

/// The fields of a server frame the load tool reads (others are ignored).
#[derive(Debug, Deserialize)]
pub struct ServerFrame {
    /// `joined`, `offer`, `error`, `pong`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The SDP of an `offer`.
    #[serde(default)]
    pub sdp: Option<String>,
    /// The code of an `error`.
    #[serde(default)]
    pub code: Option<String>,
    /// The sentence of an `error`.
    #[serde(default)]
    pub message: Option<String>,
}

/// The next JSON frame from the server; `Ok(None)` once the session ended. Frames that are not
/// JSON objects with a `type` are skipped.
pub async fn next(ws: &mut Ws) -> Result<Option<ServerFrame>, String> {
    loop {
        match ws.next().await {
            None => return Ok(None),
            Some(Err(err)) => return Err(format!("WebSocket: {err}")),
            Some(Ok(Message::Close(_))) => return Ok(None),
            Some(Ok(Message::Text(text))) => {
                if let Ok(frame) = serde_json::from_str::<ServerFrame>(text.as_str()) {
                    return Ok(Some(frame));
                }
            }
            Some(Ok(_)) => {}
        }
    }
}

/// Reads frames until the server's first `offer` (after `joined`); returns its SDP.
pub async fn until_offer(ws: &mut Ws) -> Result<String, String> {
    loop {
        match next(ws).await? {
            None => return Err("the server closed the session before its offer".into()),
            Some(ServerFrame {
                kind,
                sdp: Some(sdp),
                ..
            }) if kind == "offer" => return Ok(sdp),
            Some(ServerFrame {
                kind,
                code,
                message,
                ..
            }) if kind == "error" => {
                return Err(format!(
                    "signaling error {}: {}",
                    code.unwrap_or_default(),
                    message.unwrap_or_default()
                ));
            }
            Some(_) => {}
        }
    }
}

/// Sends one JSON text frame.
pub async fn send(ws: &mut Ws, value: &serde_json::Value) -> Result<(), String> {
    ws.send(Message::text(value.to_string()))
        .await
        .map_err(|e| format!("WebSocket send: {e}"))
}

/// The first UDP host candidate (`a=candidate:… udp … <ip> <port> typ host`) of an SDP: the
/// server's media address.
pub fn udp_candidate(sdp: &str) -> Option<SocketAddr> {
    sdp.lines().find_map(|line| {
        let line = line.trim().strip_prefix("a=candidate:")?;
        let fields: Vec<&str> = line.split_whitespace().collect();
        // foundation component transport priority address port "typ" type
        if fields.len() < 8 || !fields[2].eq_ignore_ascii_case("udp") || fields[6] != "typ" {
            return None;
        }
        let ip: std::net::IpAddr = fields[4].parse().ok()?;
        let port: u16 = fields[5].parse().ok()?;
        Some(SocketAddr::new(ip, port))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signaling_url_follows_the_server_url() {
        assert_eq!(
            ws_url("http://127.0.0.1:8080").as_deref(),
            Some("ws://127.0.0.1:8080/rtc")
        );
        assert_eq!(
            ws_url("http://example.org/").as_deref(),
            Some("ws://example.org/rtc")
        );
        assert_eq!(ws_url("https://example.org"), None);
        assert_eq!(ws_url("http://"), None);
    }

    #[test]
    fn the_media_address_is_the_first_udp_host_candidate() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
                   a=candidate:1 1 tcp 2130706431 10.0.0.1 9 typ host\r\n\
                   a=candidate:2 1 udp 2130706431 127.0.0.1 40123 typ host\r\n\
                   a=candidate:3 1 udp 2130706431 10.0.0.2 40124 typ host\r\n";
        assert_eq!(udp_candidate(sdp), Some("127.0.0.1:40123".parse().unwrap()));
        assert_eq!(udp_candidate("v=0\r\n"), None);
        assert_eq!(
            udp_candidate("a=candidate:1 1 UDP 1 ::1 5000 typ host"),
            Some("[::1]:5000".parse().unwrap())
        );
    }

    #[test]
    fn server_frames_keep_what_the_tool_reads() {
        let frame: ServerFrame =
            serde_json::from_str(r#"{"type":"offer","sdp":"v=0","extra":1}"#).unwrap();
        assert_eq!(
            (frame.kind.as_str(), frame.sdp.as_deref()),
            ("offer", Some("v=0"))
        );
        let frame: ServerFrame = serde_json::from_str(
            r#"{"type":"joined","protocol":1,"participants":[{"participant_id":"x"}]}"#,
        )
        .unwrap();
        assert_eq!(frame.kind, "joined");
    }
}
