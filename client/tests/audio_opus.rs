//! Opus encode/decode, TOC parsing, and Ogg Opus written and read back.

mod audio_util;

use audio_util::*;
use veza_client::audio::{
    Application, AudioError, FRAME_SAMPLES, OggOpusWriter, OpusDecoder, OpusEncoder, open_file,
    opus_packet_channels, opus_packet_samples,
};

/// libopus's encoder lookahead at 48 kHz: the decoded signal lags the input by this much.
const LOOKAHEAD: usize = 312;

/// Encodes interleaved `pcm` in 20 ms frames (the last zero-padded) into packets.
fn encode_all(enc: &mut OpusEncoder, pcm: &[f32], channels: usize) -> Vec<Vec<u8>> {
    pcm.chunks(FRAME_SAMPLES * channels)
        .map(|chunk| {
            let mut frame = chunk.to_vec();
            frame.resize(FRAME_SAMPLES * channels, 0.0);
            enc.encode(&frame).unwrap()
        })
        .collect()
}

fn to_f32(x: &[f64]) -> Vec<f32> {
    x.iter().map(|&v| v as f32).collect()
}

#[test]
fn stereo_music_round_trip_keeps_each_channel_tone() {
    let (l, r) = (
        sine(1000.0, 48_000, 48_000, 0.5),
        sine(440.0, 48_000, 48_000, 0.5),
    );
    let pcm = to_f32(&interleave(&[l, r]));
    let mut enc = OpusEncoder::new(2, 128_000, Application::Music).unwrap();
    let packets = encode_all(&mut enc, &pcm, 2);
    assert_eq!(packets.len(), 50);
    let bytes: usize = packets.iter().map(Vec::len).sum();
    eprintln!("50 packets, {bytes} bytes ({} kb/s)", bytes * 8 / 1000);
    assert!(
        (8_000..=24_000).contains(&bytes),
        "128 kb/s for 1 s ≈ 16 kB, got {bytes}"
    );

    let mut dec = OpusDecoder::new(2).unwrap();
    let mut out = Vec::new();
    for p in &packets {
        assert_eq!(opus_packet_samples(p), Some(960));
        assert_eq!(opus_packet_channels(p), Some(2));
        let frame = dec.decode(p).unwrap();
        assert_eq!(frame.len(), 960 * 2);
        out.extend_from_slice(&frame);
    }
    let out = &out[LOOKAHEAD * 2..];
    let rms = 0.5 * std::f64::consts::FRAC_1_SQRT_2;
    assert_tone(&channel(out, 2, 0), 1000.0, 2.0, rms, "opus left");
    assert_tone(&channel(out, 2, 1), 440.0, 2.0, rms, "opus right");

    let lost = dec.conceal().unwrap();
    assert_eq!(lost.len(), 960 * 2);
}

#[test]
fn mono_voice_round_trip_and_conceal() {
    let pcm = to_f32(&sine(1000.0, 48_000, 24_000, 0.5));
    let mut enc = OpusEncoder::new(1, 24_000, Application::Voice).unwrap();
    let packets = encode_all(&mut enc, &pcm, 1);
    let mut dec = OpusDecoder::new(1).unwrap();
    let mut out = Vec::new();
    for p in &packets {
        assert_eq!(opus_packet_samples(p), Some(960));
        assert_eq!(opus_packet_channels(p), Some(1));
        out.extend(dec.decode(p).unwrap());
    }
    let conceal = dec.conceal().unwrap();
    assert_eq!(conceal.len(), 960);
    // Concealment continues the tone rather than going silent.
    let c: Vec<f64> = conceal.iter().map(|&s| f64::from(s)).collect();
    assert!(rms(&c) > 0.05, "concealed frame rms {}", rms(&c));
    let out = channel(&out[LOOKAHEAD..], 1, 0);
    assert_tone(
        &out,
        1000.0,
        2.0,
        0.5 * std::f64::consts::FRAC_1_SQRT_2,
        "opus voice",
    );
}

#[test]
fn encoder_and_decoder_reject_bad_input() {
    let mut enc = OpusEncoder::new(2, 64_000, Application::Music).unwrap();
    // 1000 samples is no Opus frame size, in mono or stereo.
    assert!(matches!(
        enc.encode(&[0.0; 1000]),
        Err(AudioError::InvalidInput(_))
    ));
    assert!(matches!(
        OpusEncoder::new(3, 64_000, Application::Music),
        Err(AudioError::InvalidInput(_))
    ));
    let mut dec = OpusDecoder::new(1).unwrap();
    assert!(dec.decode(&[]).is_err());
    // A code-3 packet claiming 40 frames of 60 ms: libopus refuses it.
    let err = dec.decode(&[(3 << 3) | 3, 40, 0, 0]).unwrap_err();
    assert!(matches!(err, AudioError::Opus { .. }), "{err:?}");
}

/// One Ogg page as read back from bytes.
struct Page {
    flags: u8,
    granule: u64,
    serial: u32,
    sequence: u32,
    packets: Vec<Vec<u8>>,
}

/// Ogg CRC-32, bit by bit (independent of the writer's table-driven one).
fn crc_bitwise(data: &[u8]) -> u32 {
    let mut crc = 0u32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Splits a whole Ogg stream into pages, checking capture patterns and CRCs.
fn read_pages(mut bytes: &[u8]) -> Vec<Page> {
    let mut pages = Vec::new();
    while !bytes.is_empty() {
        assert_eq!(&bytes[..4], b"OggS");
        assert_eq!(bytes[4], 0, "version");
        let nseg = usize::from(bytes[26]);
        let lacing = &bytes[27..27 + nseg];
        let body: usize = lacing.iter().map(|&l| usize::from(l)).sum();
        let len = 27 + nseg + body;
        let mut page = bytes[..len].to_vec();
        let stored = u32::from_le_bytes(page[22..26].try_into().unwrap());
        page[22..26].fill(0);
        assert_eq!(crc_bitwise(&page), stored, "CRC of page {}", pages.len());
        let mut packets = Vec::new();
        let mut cur = Vec::new();
        let mut at = 27 + nseg;
        for &l in lacing {
            cur.extend_from_slice(&bytes[at..at + usize::from(l)]);
            at += usize::from(l);
            if l < 255 {
                packets.push(std::mem::take(&mut cur));
            }
        }
        assert!(
            cur.is_empty(),
            "the writer never continues a packet on the next page"
        );
        pages.push(Page {
            flags: bytes[5],
            granule: u64::from_le_bytes(bytes[6..14].try_into().unwrap()),
            serial: u32::from_le_bytes(bytes[14..18].try_into().unwrap()),
            sequence: u32::from_le_bytes(bytes[18..22].try_into().unwrap()),
            packets,
        });
        bytes = &bytes[len..];
    }
    pages
}

#[test]
fn ogg_opus_writer_pages_are_valid_and_read_back() {
    let secs = 1.3;
    let n = (secs * 48_000.0) as usize;
    let input = to_f32(&sine(1000.0, 48_000, n, 0.5));
    let mut enc = OpusEncoder::new(1, 64_000, Application::Music).unwrap();
    let packets = encode_all(&mut enc, &input, 1);
    assert_eq!(packets.len(), 65);

    let mut w = OggOpusWriter::new(Vec::new(), 1).unwrap();
    for p in &packets {
        w.write_packet(p).unwrap();
    }
    let bytes = w.finish().unwrap();
    let pages = read_pages(&bytes);

    // Headers: OpusHead alone on a BOS page, OpusTags alone on the next, granule 0.
    assert_eq!(pages[0].flags, 0x02);
    assert_eq!(pages[0].packets.len(), 1);
    let head = &pages[0].packets[0];
    assert_eq!(&head[..8], b"OpusHead");
    assert_eq!(head[9], 1, "channels");
    assert_eq!(u16::from_le_bytes([head[10], head[11]]), 312, "pre-skip");
    assert_eq!(&pages[1].packets[0][..8], b"OpusTags");
    assert_eq!((pages[0].granule, pages[1].granule), (0, 0));

    // Audio pages: sequence numbers count up, one serial, granules are the running sample
    // count, EOS only on the last page.
    let mut total = 0u64;
    let mut got = Vec::new();
    for (i, page) in pages.iter().enumerate() {
        assert_eq!(page.sequence, i as u32);
        assert_eq!(page.serial, pages[0].serial);
        assert_eq!(
            page.flags & 0x04 != 0,
            i == pages.len() - 1,
            "EOS on page {i}"
        );
        if i < 2 {
            continue;
        }
        assert_eq!(page.flags & 0x02, 0);
        for p in &page.packets {
            total += u64::from(opus_packet_samples(p).unwrap());
            got.push(p.clone());
        }
        assert_eq!(page.granule, total, "granule of page {i}");
    }
    assert_eq!(got, packets, "packets come back unchanged, in order");
    assert_eq!(total, 65 * 960);
    eprintln!("{} pages, {} bytes", pages.len(), bytes.len());

    // Back through open_file: pre-skip removed, same tone, same length within 20 ms.
    let path = scratch("roundtrip.opus");
    std::fs::write(&path, &bytes).unwrap();
    let mut src = open_file(&path).unwrap();
    assert_eq!(src.channels(), 1);
    let pcm = drain(src.as_mut());
    let ch = channel(&pcm, 1, 0);
    let len = content_len(&ch);
    assert_eq!(len, 65 * 960 - 312, "granule minus pre-skip");
    assert!(
        (len as f64 / 48_000.0 - secs).abs() <= 0.020,
        "{len} samples vs {secs} s"
    );
    assert_tone(
        &ch,
        1000.0,
        2.0,
        0.5 * std::f64::consts::FRAC_1_SQRT_2,
        "ogg opus",
    );
    // The pre-skip realigns the decoded tone with the input: compare a stretch sample by
    // sample (lossy, so loosely).
    let diff: Vec<f64> = (10_000..11_000)
        .map(|i| ch[i] - f64::from(input[i]))
        .collect();
    assert!(
        rms(&diff) < 0.1,
        "decoded tone is aligned with the input, rms diff {}",
        rms(&diff)
    );
    if let Some(d) = src.duration() {
        eprintln!("ogg opus duration() {:.4} s", d.as_secs_f64());
        assert!((d.as_secs_f64() - len as f64 / 48_000.0).abs() < 0.001);
    }
}

#[test]
fn ogg_opus_stereo_reads_back_as_stereo() {
    let (l, r) = (
        sine(600.0, 48_000, 24_000, 0.5),
        sine(1500.0, 48_000, 24_000, 0.5),
    );
    let pcm = to_f32(&interleave(&[l, r]));
    let mut enc = OpusEncoder::new(2, 96_000, Application::Music).unwrap();
    let mut w = OggOpusWriter::new(Vec::new(), 2).unwrap();
    for p in encode_all(&mut enc, &pcm, 2) {
        w.write_packet(&p).unwrap();
    }
    let path = scratch("stereo.opus");
    std::fs::write(&path, w.finish().unwrap()).unwrap();
    let mut src = open_file(&path).unwrap();
    assert_eq!(src.channels(), 2);
    let out = drain(src.as_mut());
    let rms = 0.5 * std::f64::consts::FRAC_1_SQRT_2;
    assert_tone(&channel(&out, 2, 0), 600.0, 2.0, rms, "ogg opus left");
    assert_tone(&channel(&out, 2, 1), 1500.0, 2.0, rms, "ogg opus right");
}

#[test]
fn ogg_opus_writer_rejects_non_opus_and_writes_eos_without_audio() {
    let mut w = OggOpusWriter::new(Vec::new(), 2).unwrap();
    assert!(w.write_packet(&[]).is_err());
    let bytes = w.finish().unwrap();
    let pages = read_pages(&bytes);
    assert_eq!(pages.len(), 3);
    assert_eq!(pages[2].flags, 0x04);
    assert!(pages[2].packets.is_empty());
}
