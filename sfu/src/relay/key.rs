//! Node-to-node credentials for the cascade: an HMAC-SHA256 over the pulling node's id, the
//! room and an expiry, keyed with `VEZA_CLUSTER_SECRET`. Short-lived (a minute), so a token
//! seen in a log is soon worthless; every pull dials with a fresh one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ring::hmac;
use veza_proto::RoomId;

/// How long a cascade token is valid.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);

/// The cluster secret, ready to sign and check cascade tokens.
#[derive(Clone)]
pub struct CascadeKey(hmac::Key);

impl std::fmt::Debug for CascadeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CascadeKey(…)")
    }
}

/// Why a cascade token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CascadeTokenError {
    /// Not `v1.<node>.<expiry>.<signature>`.
    #[error("malformed cascade token")]
    Malformed,
    /// Past its expiry.
    #[error("expired cascade token")]
    Expired,
    /// Signed with another secret, or for another room.
    #[error("bad cascade token signature")]
    BadSignature,
}

impl CascadeKey {
    /// The key for `secret` (at least 16 bytes; the configuration checks).
    pub fn new(secret: &[u8]) -> Self {
        CascadeKey(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// A token for `node` to pull `room`, valid for [`TOKEN_TTL`].
    pub fn sign(&self, node: &str, room: RoomId) -> String {
        let expires = unix_now() + TOKEN_TTL.as_secs();
        let tag = hmac::sign(&self.0, message(node, room, expires).as_bytes());
        format!("v1.{node}.{expires}.{}", hex(tag.as_ref()))
    }

    /// The pulling node's id, if `token` is valid for `room` now.
    pub fn verify(&self, token: &str, room: RoomId) -> Result<String, CascadeTokenError> {
        let mut parts = token.split('.');
        let (Some("v1"), Some(node), Some(expires), Some(signature), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(CascadeTokenError::Malformed);
        };
        let expires: u64 = expires.parse().map_err(|_| CascadeTokenError::Malformed)?;
        let signature = unhex(signature).ok_or(CascadeTokenError::Malformed)?;
        hmac::verify(&self.0, message(node, room, expires).as_bytes(), &signature)
            .map_err(|_| CascadeTokenError::BadSignature)?;
        if expires < unix_now() {
            return Err(CascadeTokenError::Expired);
        }
        Ok(node.to_owned())
    }
}

fn message(node: &str, room: RoomId, expires: u64) -> String {
    format!("veza-cascade-v1\n{node}\n{room}\n{expires}")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_with_the_same_secret_and_room() {
        let key = CascadeKey::new(b"a cluster secret of some length");
        let room = RoomId::new();
        let token = key.sign("node-1", room);
        assert_eq!(key.verify(&token, room).as_deref(), Ok("node-1"));
        assert_eq!(
            key.verify(&token, RoomId::new()),
            Err(CascadeTokenError::BadSignature)
        );
        let other = CascadeKey::new(b"another cluster secret entirely");
        assert_eq!(
            other.verify(&token, room),
            Err(CascadeTokenError::BadSignature)
        );
        let forged = token.replace("node-1", "node-2");
        assert_eq!(
            key.verify(&forged, room),
            Err(CascadeTokenError::BadSignature)
        );
        for bad in [
            "",
            "v1",
            "v2.a.1.00",
            "v1.a.x.00",
            "v1.a.1.zz",
            "v1.a.1.0",
            "v1.a.1.00.x",
        ] {
            assert!(key.verify(bad, room).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn expired_tokens_are_refused() {
        let key = CascadeKey::new(b"a cluster secret of some length");
        let room = RoomId::new();
        let expires = unix_now() - 1;
        let tag = hmac::sign(&key.0, message("n", room, expires).as_bytes());
        let token = format!("v1.n.{expires}.{}", hex(tag.as_ref()));
        assert_eq!(key.verify(&token, room), Err(CascadeTokenError::Expired));
    }
}
