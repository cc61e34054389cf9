//! The send time inside each packet, as Opus padding (RFC 6716 §3.2.5), so every packet stays
//! a valid Opus packet and the SFU forwards it unchanged.
//!
//! A code-0 packet (TOC, one frame) becomes a code-3 packet: the TOC with `c = 3`, the frame
//! count byte `0x41` (CBR, padding flag, one frame), the padding length byte `8`, the frame,
//! then 8 padding bytes holding the send time in microseconds, big-endian. A decoder skips
//! the padding.

/// Bytes of padding carrying the stamp.
pub const STAMP_LEN: usize = 8;
/// Bytes added to the original packet: frame count, padding length, the stamp.
pub const OVERHEAD: usize = 2 + STAMP_LEN;
/// Frame count byte: `v = 0` (CBR), `p = 1` (padding), `M = 1` (one frame).
const ONE_FRAME_PADDED: u8 = 0x41;

/// Why a packet cannot be stamped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StampError {
    /// Empty input.
    #[error("an Opus packet has at least its TOC byte")]
    Empty,
    /// Only single-frame (code 0) packets are stamped.
    #[error("not a code-0 Opus packet (TOC {0:#04x})")]
    NotCodeZero(u8),
}

/// Writes `frame` (a code-0 Opus packet) with `sent_us` as padding into `out` (cleared first).
pub fn stamp(frame: &[u8], sent_us: u64, out: &mut Vec<u8>) -> Result<(), StampError> {
    let (&toc, body) = frame.split_first().ok_or(StampError::Empty)?;
    if toc & 0x03 != 0 {
        return Err(StampError::NotCodeZero(toc));
    }
    out.clear();
    out.reserve(frame.len() + OVERHEAD);
    out.push(toc | 0x03);
    out.push(ONE_FRAME_PADDED);
    out.push(STAMP_LEN as u8);
    out.extend_from_slice(body);
    out.extend_from_slice(&sent_us.to_be_bytes());
    Ok(())
}

/// The send time of a packet made by [`stamp`], or `None` if it does not have that structure.
pub fn read_stamp(packet: &[u8]) -> Option<u64> {
    let [toc, count, padding, ..] = *packet else {
        return None;
    };
    if toc & 0x03 != 0x03
        || count != ONE_FRAME_PADDED
        || usize::from(padding) != STAMP_LEN
        || packet.len() < 3 + STAMP_LEN
    {
        return None;
    }
    let tail: [u8; STAMP_LEN] = packet[packet.len() - STAMP_LEN..].try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamped_packet_keeps_its_frame_and_gives_back_the_time() {
        let frame = [0xfc, 1, 2, 3, 4, 5];
        let mut out = Vec::new();
        stamp(&frame, 0x0102_0304_0506_0708, &mut out).unwrap();
        assert_eq!(out.len(), frame.len() + OVERHEAD);
        assert_eq!(out[..3], [0xff, 0x41, 8]);
        assert_eq!(out[3..8], frame[1..]);
        assert_eq!(out[8..], [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(read_stamp(&out), Some(0x0102_0304_0506_0708));
        // Opus's own view: still one 20 ms frame of the same configuration.
        assert_eq!(veza_client::audio::opus_packet_samples(&out), Some(960));
    }

    #[test]
    fn a_toc_only_packet_is_stamped_too() {
        let mut out = Vec::new();
        stamp(&[0x78], 42, &mut out).unwrap();
        assert_eq!(read_stamp(&out), Some(42));
    }

    #[test]
    fn only_code_zero_packets_are_stamped() {
        let mut out = Vec::new();
        assert_eq!(stamp(&[], 1, &mut out), Err(StampError::Empty));
        assert_eq!(
            stamp(&[0x79, 1, 2], 1, &mut out),
            Err(StampError::NotCodeZero(0x79))
        );
    }

    #[test]
    fn malformed_packets_give_no_stamp() {
        let mut good = Vec::new();
        stamp(&[0xfc, 9, 9], 7, &mut good).unwrap();
        assert_eq!(read_stamp(&good), Some(7));
        // Plain code-0 packet, wrong frame count byte, wrong padding length, truncated.
        assert_eq!(read_stamp(&[0xfc, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]), None);
        let mut bad = good.clone();
        bad[1] = 0x42;
        assert_eq!(read_stamp(&bad), None);
        let mut bad = good.clone();
        bad[2] = 7;
        assert_eq!(read_stamp(&bad), None);
        assert_eq!(read_stamp(&good[..10]), None);
        assert_eq!(read_stamp(&[]), None);
    }
}
