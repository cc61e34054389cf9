//! Just enough STUN parsing to route a datagram to its peer: the local ICE ufrag from the
//! USERNAME attribute of a Binding request (RFC 8489, RFC 8445 §7.2.2).

/// STUN's magic cookie, bytes 4..8 of every STUN message.
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
/// The USERNAME attribute.
const ATTR_USERNAME: u16 = 0x0006;

/// Whether `buf` looks like a STUN message (RFC 7983 demultiplexing: first byte 0..=3, and the
/// magic cookie).
pub fn is_stun(buf: &[u8]) -> bool {
    buf.len() >= 20 && buf[0] < 4 && buf[4..8] == MAGIC_COOKIE
}

/// The local ufrag of a STUN message: the part of USERNAME before the `:`. For a Binding
/// request sent to us, USERNAME is `<our ufrag>:<their ufrag>`.
pub fn local_ufrag(buf: &[u8]) -> Option<&str> {
    if !is_stun(buf) {
        return None;
    }
    let declared = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    let end = 20usize.checked_add(declared)?.min(buf.len());
    let mut at = 20;
    while at + 4 <= end {
        let kind = u16::from_be_bytes([buf[at], buf[at + 1]]);
        let len = usize::from(u16::from_be_bytes([buf[at + 2], buf[at + 3]]));
        let value = buf.get(at + 4..at + 4 + len)?;
        if kind == ATTR_USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next().filter(|u| !u.is_empty());
        }
        // Attributes are padded to 4 bytes.
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_request(username: &[u8]) -> Vec<u8> {
        let padded = username.len().div_ceil(4) * 4;
        let mut msg = vec![0x00, 0x01];
        msg.extend_from_slice(&u16::try_from(4 + padded).expect("small").to_be_bytes());
        msg.extend_from_slice(&MAGIC_COOKIE);
        msg.extend_from_slice(&[7; 12]);
        // A PRIORITY attribute first, so the parser has to skip one.
        msg.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        msg.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        msg.extend_from_slice(&u16::try_from(username.len()).expect("small").to_be_bytes());
        msg.extend_from_slice(username);
        msg.resize(msg.len() + padded - username.len(), 0);
        let total = u16::try_from(msg.len() - 20).expect("small");
        msg[2..4].copy_from_slice(&total.to_be_bytes());
        msg
    }

    #[test]
    fn finds_the_local_ufrag() {
        let msg = binding_request(b"srvUfrag:cli1");
        assert!(is_stun(&msg));
        assert_eq!(local_ufrag(&msg), Some("srvUfrag"));
    }

    #[test]
    fn garbage_is_not_routed() {
        assert_eq!(local_ufrag(b""), None);
        assert_eq!(local_ufrag(&[0x80; 40]), None, "RTP");
        let mut msg = binding_request(b"abc:def");
        msg.truncate(30);
        assert_eq!(local_ufrag(&msg), None, "truncated");
        let msg = binding_request(&[0xff, 0xfe, b':', b'x']);
        assert_eq!(local_ufrag(&msg), None, "not UTF-8");
        let msg = binding_request(b":x");
        assert_eq!(local_ufrag(&msg), None, "empty ufrag");
        // Every prefix of a valid message parses without panicking.
        let msg = binding_request(b"srvUfrag:cli1");
        for n in 0..msg.len() {
            let _ = local_ufrag(&msg[..n]);
        }
    }
}
