//! The cost of SRTP-protecting one 160-byte RTP packet (12-byte header, 148-byte payload):
//!
//! * AES_CM_128_HMAC_SHA1_80 (RFC 3711) with the RustCrypto crates str0m's `rust-crypto`
//!   backend uses, the way it uses them: the AES key schedule and the HMAC key set up per
//!   packet, AES-128 in counter mode over the payload, HMAC-SHA1 over the packet and the
//!   rollover counter, truncated to 80 bits;
//! * AEAD_AES_128_GCM (RFC 7714) with ring: the header as associated data, a 16-byte tag.

use std::hint::black_box;
use std::time::{Duration, Instant};

use aes::cipher::{KeyIvInit, StreamCipher};
use hmac::{Hmac, Mac};
use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use sha1::Sha1;

use super::DATAGRAM;

type Aes128Ctr = ctr::Ctr128BE<aes::Aes128>;

const HEADER: usize = 12;
const SSRC: u32 = 0x1234_5678;
/// Packets between clock reads.
const BATCH: u64 = 64;

/// An RTP header for packet `index` (sequence number and timestamp from it).
fn header(index: u64, out: &mut [u8]) {
    out[0] = 0x80;
    out[1] = 111;
    out[2..4].copy_from_slice(&(index as u16).to_be_bytes());
    out[4..8].copy_from_slice(&((index as u32).wrapping_mul(960)).to_be_bytes());
    out[8..12].copy_from_slice(&SSRC.to_be_bytes());
}

/// Runs `protect` on packet indexes until `duration` passed; ns per call.
fn time_per_call(duration: Duration, mut protect: impl FnMut(u64)) -> f64 {
    let start = Instant::now();
    let mut index = 0u64;
    while start.elapsed() < duration {
        for _ in 0..BATCH {
            protect(index);
            index += 1;
        }
    }
    start.elapsed().as_nanos() as f64 / index as f64
}

/// Protects one packet in place with AES_CM_128_HMAC_SHA1_80: `packet` holds the RTP packet
/// followed by 10 bytes for the tag.
pub fn protect_aes_cm(
    session_key: &[u8; 16],
    salt: &[u8; 14],
    auth_key: &[u8; 20],
    index: u64,
    packet: &mut [u8],
) {
    let rtp_len = packet.len() - 10;
    // RFC 3711 §4.1.1: IV = (salt · 2^16) XOR (SSRC · 2^64) XOR (index · 2^16).
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(salt);
    for (i, b) in SSRC.to_be_bytes().iter().enumerate() {
        iv[4 + i] ^= b;
    }
    for (i, b) in index.to_be_bytes()[2..].iter().enumerate() {
        iv[8 + i] ^= b;
    }
    let mut cipher = Aes128Ctr::new(session_key.into(), &iv.into());
    cipher.apply_keystream(&mut packet[HEADER..rtp_len]);
    let roc = (index >> 16) as u32;
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(auth_key).expect("any key length");
    mac.update(&packet[..rtp_len]);
    mac.update(&roc.to_be_bytes());
    let tag = mac.finalize().into_bytes();
    packet[rtp_len..].copy_from_slice(&tag[..10]);
}

/// Nanoseconds to protect one packet with AES_CM_128_HMAC_SHA1_80.
pub fn aes_cm_hmac_sha1_80_ns(duration: Duration) -> f64 {
    let (key, salt, auth) = ([0x11u8; 16], [0x22u8; 14], [0x33u8; 20]);
    let mut packet = vec![0x5au8; DATAGRAM + 10];
    time_per_call(duration, |index| {
        header(index, &mut packet);
        protect_aes_cm(&key, &salt, &auth, index, &mut packet);
        black_box(&packet);
    })
}

/// Nanoseconds to protect one packet with AEAD_AES_128_GCM.
pub fn aead_aes_128_gcm_ns(duration: Duration) -> f64 {
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &[0x11; 16]).expect("a 16-byte key"));
    let salt = [0x22u8; 12];
    let mut head = [0u8; HEADER];
    let mut payload = vec![0x5au8; DATAGRAM - HEADER];
    time_per_call(duration, |index| {
        header(index, &mut head);
        // RFC 7714 §8.1: IV = salt XOR (00 00 || SSRC || ROC || SEQ).
        let mut iv = salt;
        let mut mix = [0u8; 12];
        mix[2..6].copy_from_slice(&SSRC.to_be_bytes());
        mix[6..10].copy_from_slice(&((index >> 16) as u32).to_be_bytes());
        mix[10..12].copy_from_slice(&(index as u16).to_be_bytes());
        for (a, b) in iv.iter_mut().zip(mix) {
            *a ^= b;
        }
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(iv),
                Aad::from(&head),
                &mut payload,
            )
            .expect("sealing 148 bytes");
        let _ = black_box(tag);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3711 Appendix B.2: the AES-CM keystream for this key, salt-derived IV and index 0.
    #[test]
    fn counter_mode_matches_rfc_3711() {
        let key: [u8; 16] = [
            0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6, 0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf,
            0x4f, 0x3c,
        ];
        let iv: [u8; 16] = [
            0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd,
            0x00, 0x00,
        ];
        let mut block = [0u8; 16];
        Aes128Ctr::new(&key.into(), &iv.into()).apply_keystream(&mut block);
        assert_eq!(
            block,
            [
                0xe0, 0x3e, 0xad, 0x09, 0x35, 0xc9, 0x5e, 0x80, 0xe1, 0x66, 0xb1, 0x6d, 0xd9, 0x2b,
                0x4e, 0xb4
            ]
        );
    }

    #[test]
    fn protection_encrypts_the_payload_and_appends_a_tag() {
        let mut packet = vec![0u8; DATAGRAM + 10];
        header(7, &mut packet);
        let before = packet.clone();
        protect_aes_cm(&[1; 16], &[2; 14], &[3; 20], 7, &mut packet);
        assert_eq!(packet[..HEADER], before[..HEADER]);
        assert_ne!(packet[HEADER..DATAGRAM], before[HEADER..DATAGRAM]);
        assert_ne!(packet[DATAGRAM..], [0u8; 10]);
        assert!(aes_cm_hmac_sha1_80_ns(Duration::from_millis(10)) > 0.0);
        assert!(aead_aes_128_gcm_ns(Duration::from_millis(10)) > 0.0);
    }
}
