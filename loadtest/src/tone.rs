//! The audio publishers send: one second of a two-tone chord, encoded once with libopus into
//! 20 ms packets and then cycled, so sending costs no encoding.

use veza_client::audio::{Application, AudioError, FRAME_SAMPLES, OpusEncoder, SAMPLE_RATE};

/// Channels of the tone.
pub const CHANNELS: u16 = 2;
/// Opus bitrate: 64 kb/s gives packets of about 160 bytes.
pub const BITRATE: u32 = 64_000;
/// Packets per second (20 ms each).
pub const PACKETS_PER_SECOND: u32 = 50;

/// One second of packets, every one a single-frame (code 0) Opus packet as [`crate::payload`]
/// stamps them.
pub fn packets() -> Result<Vec<Vec<u8>>, AudioError> {
    let mut encoder = OpusEncoder::new(CHANNELS, BITRATE, Application::Music)?;
    let channels = usize::from(CHANNELS);
    let mut packets = Vec::with_capacity(PACKETS_PER_SECOND as usize);
    let mut pcm = vec![0.0f32; FRAME_SAMPLES * channels];
    for frame in 0..PACKETS_PER_SECOND as usize {
        for (i, pair) in pcm.chunks_exact_mut(channels).enumerate() {
            let t = (frame * FRAME_SAMPLES + i) as f32 / SAMPLE_RATE as f32;
            let a = (2.0 * std::f32::consts::PI * 440.0 * t).sin();
            let e = (2.0 * std::f32::consts::PI * 659.25 * t).sin();
            pair[0] = 0.25 * a + 0.15 * e;
            pair[1] = 0.15 * a + 0.25 * e;
        }
        let packet = encoder.encode(&pcm)?;
        // libopus makes one frame per 20 ms packet; keep only what can be stamped.
        if packet.first().is_some_and(|toc| toc & 0x03 == 0) {
            packets.push(packet);
        }
    }
    if packets.is_empty() {
        return Err(AudioError::InvalidInput(
            "libopus made no single-frame packet".into(),
        ));
    }
    Ok(packets)
}

#[cfg(test)]
mod tests {
    use veza_client::audio::OpusDecoder;

    use crate::payload;

    #[test]
    fn stamped_tone_packets_decode_as_opus() {
        let packets = super::packets().unwrap();
        assert!(packets.len() >= 45, "{} packets", packets.len());
        let mut decoder = OpusDecoder::new(super::CHANNELS).unwrap();
        let mut stamped = Vec::new();
        for (i, packet) in packets.iter().enumerate() {
            payload::stamp(packet, i as u64 * 20_000, &mut stamped).unwrap();
            assert_eq!(payload::read_stamp(&stamped), Some(i as u64 * 20_000));
            let pcm = decoder.decode(&stamped).unwrap();
            assert_eq!(pcm.len(), 960 * 2, "packet {i}");
        }
        let mean = packets.iter().map(Vec::len).sum::<usize>() / packets.len();
        assert!((100..=220).contains(&mean), "mean packet {mean} bytes");
    }
}
