//! `veza loadtest --baseline`: what this machine can do at most, to compare the SFU with —
//! how many 160-byte UDP datagrams one thread sends on loopback ([`udp`]) and what SRTP
//! protection of one such packet costs ([`srtp`]).

pub mod srtp;
pub mod udp;

use std::time::Duration;

use serde_json::{Value, json};

use crate::report::round3;

/// How long each measurement runs.
pub const MEASURE_FOR: Duration = Duration::from_secs(1);
/// Bytes of every datagram (an RTP packet of a 64 kb/s Opus stream, roughly).
pub const DATAGRAM: usize = 160;

/// The machine's limits.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// Datagrams per second with one `send_to` each.
    pub udp_plain: udp::Rates,
    /// Datagrams per second with UDP GSO (`None` where the platform has none).
    pub udp_gso: Option<udp::Rates>,
    /// Segments per GSO send.
    pub gso_segments: usize,
    /// SRTP AES_CM_128_HMAC_SHA1_80 protect of one packet, ns (RustCrypto, as str0m).
    pub srtp_aes_cm_ns: f64,
    /// SRTP AEAD_AES_128_GCM protect of one packet, ns (ring).
    pub srtp_aes_gcm_ns: f64,
}

impl Baseline {
    /// The best UDP send rate.
    pub fn udp_send_pps(&self) -> f64 {
        self.udp_plain
            .sent
            .max(self.udp_gso.map_or(0.0, |r| r.sent))
    }

    /// The JSON object.
    pub fn to_json(&self) -> Value {
        json!({
            "build": crate::BUILD,
            "datagram_bytes": DATAGRAM,
            "udp_send_pps": round3(self.udp_send_pps()),
            "udp_send_pps_plain": round3(self.udp_plain.sent),
            "udp_send_pps_gso": self.udp_gso.map(|r| round3(r.sent)),
            "udp_delivered_pps_plain": round3(self.udp_plain.delivered),
            "udp_delivered_pps_gso": self.udp_gso.map(|r| round3(r.delivered)),
            "gso_segments": self.gso_segments,
            "srtp_protect_ns": round3(self.srtp_aes_cm_ns),
            "srtp_protect_ns_aes_cm_128_hmac_sha1_80": round3(self.srtp_aes_cm_ns),
            "srtp_protect_ns_aead_aes_128_gcm": round3(self.srtp_aes_gcm_ns),
        })
    }

    /// The summary for people.
    pub fn summary(&self) -> String {
        let gso = match self.udp_gso {
            Some(r) => format!(
                "{:.0}/s with GSO ({} segments per send; {:.0}/s delivered)",
                r.sent, self.gso_segments, r.delivered
            ),
            None => "no GSO".to_owned(),
        };
        format!(
            "baseline ({build} build), one thread, {DATAGRAM}-byte datagrams on loopback\n\
             udp send      {best:.0}/s best: {plain:.0}/s with send_to ({plain_in:.0}/s \
             delivered), {gso}\n\
             srtp protect  {cm:.0} ns AES_CM_128_HMAC_SHA1_80 (RustCrypto), \
             {gcm:.0} ns AEAD_AES_128_GCM (ring)\n",
            build = crate::BUILD,
            best = self.udp_send_pps(),
            plain = self.udp_plain.sent,
            plain_in = self.udp_plain.delivered,
            cm = self.srtp_aes_cm_ns,
            gcm = self.srtp_aes_gcm_ns,
        )
    }
}

/// Measures everything, one after the other, on this thread (and a receiving thread).
pub fn run() -> std::io::Result<Baseline> {
    let udp_plain = udp::plain_send_pps(MEASURE_FOR)?;
    let (udp_gso, gso_segments) = match udp::gso_send_pps(MEASURE_FOR)? {
        Some((rates, segments)) => (Some(rates), segments),
        None => (None, 1),
    };
    Ok(Baseline {
        udp_plain,
        udp_gso,
        gso_segments,
        srtp_aes_cm_ns: srtp::aes_cm_hmac_sha1_80_ns(MEASURE_FOR),
        srtp_aes_gcm_ns: srtp::aead_aes_128_gcm_ns(MEASURE_FOR),
    })
}
