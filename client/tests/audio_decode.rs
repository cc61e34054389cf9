//! Decoding files and raw PCM into 48 kHz 20 ms frames.

mod audio_util;

use std::io::{Cursor, Read};
use std::path::Path;

use audio_util::*;
use veza_client::audio::{AudioError, FRAME_SAMPLES, open_file, raw_pcm};

/// Writes a 16-bit WAV of `channels` tones (one frequency per channel) with hound.
fn write_wav(path: &Path, rate: u32, freqs: &[f64], secs: f64, amp: f64) {
    let spec = hound::WavSpec {
        channels: freqs.len() as u16,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let frames = (secs * f64::from(rate)).round() as usize;
    let tones: Vec<Vec<f64>> = freqs.iter().map(|&f| sine(f, rate, frames, amp)).collect();
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for s in interleave(&tones) {
        w.write_sample((s * 32767.0).round() as i16).unwrap();
    }
    w.finalize().unwrap();
}

/// Opens `path`, decodes it all, and checks channels, duration and each channel's tone.
fn check_file(path: &Path, channels: u16, freqs: &[f64], secs: f64, rms: f64, rel: f64) {
    let mut src = open_file(path).unwrap();
    assert_eq!(src.channels(), channels, "{}", path.display());
    let reported = src
        .duration()
        .expect("files report a duration")
        .as_secs_f64();
    let pcm = drain(src.as_mut());
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    for (i, &f) in freqs.iter().enumerate() {
        let ch = channel(&pcm, usize::from(channels), i);
        assert_duration(content_len(&ch), secs, rel, &format!("{name} ch{i} length"));
        assert_tone(&ch, f, 2.0, rms, &format!("{name} ch{i}"));
    }
    eprintln!("{name}: duration() {reported:.4} s");
    assert!(
        (reported / secs - 1.0).abs() <= rel.max(0.05),
        "{name}: duration() {reported} s, want {secs} s"
    );
}

const AMP: f64 = 0.5;
const RMS: f64 = AMP * std::f64::consts::FRAC_1_SQRT_2;

/// Decodes a generated WAV and checks every channel against the ideal 48 kHz tone.
fn check_aligned(path: &Path, freqs: &[f64], amp: f64) {
    let mut src = open_file(path).unwrap();
    let pcm = drain(src.as_mut());
    for (i, &f) in freqs.iter().enumerate() {
        let ch = channel(&pcm, freqs.len(), i);
        assert_aligned(&ch, f, amp, &format!("{} ch{i}", path.display()));
    }
}

#[test]
fn wav_44k1_mono_is_resampled_to_48k() {
    let path = scratch("44k1-mono.wav");
    write_wav(&path, 44_100, &[1000.0], 1.0, AMP);
    check_file(&path, 1, &[1000.0], 1.0, RMS, 0.01);
    check_aligned(&path, &[1000.0], AMP);
}

#[test]
fn wav_44k1_stereo_keeps_channel_order() {
    let path = scratch("44k1-stereo.wav");
    write_wav(&path, 44_100, &[440.0, 1250.0], 1.2, AMP);
    check_file(&path, 2, &[440.0, 1250.0], 1.2, RMS, 0.01);
    check_aligned(&path, &[440.0, 1250.0], AMP);
}

#[test]
fn wav_48k_mono_passes_through() {
    let path = scratch("48k-mono.wav");
    write_wav(&path, 48_000, &[523.0], 0.73, AMP);
    check_file(&path, 1, &[523.0], 0.73, RMS, 0.01);
}

#[test]
fn wav_48k_stereo_passes_through() {
    let path = scratch("48k-stereo.wav");
    write_wav(&path, 48_000, &[300.0, 3000.0], 1.0, AMP);
    check_file(&path, 2, &[300.0, 3000.0], 1.0, RMS, 0.01);
    check_aligned(&path, &[300.0, 3000.0], AMP);
}

#[test]
fn wav_with_six_channels_is_downmixed_to_stereo() {
    let path = scratch("22k-5.1.wav");
    // Front left and right carry tones, the other four are silent.
    let spec = hound::WavSpec {
        channels: 6,
        sample_rate: 22_050,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let n = 22_050;
    let (l, r) = (sine(600.0, 22_050, n, AMP), sine(900.0, 22_050, n, AMP));
    let mut w = hound::WavWriter::create(&path, spec).unwrap();
    for i in 0..n {
        for s in [l[i], r[i], 0.0, 0.0, 0.0, 0.0] {
            w.write_sample((s * 32767.0).round() as i16).unwrap();
        }
    }
    w.finalize().unwrap();
    // Four silent extra channels: the downmix scales by 1 / (1 + 4 × 0.707).
    let scale = 1.0 / (1.0 + 4.0 * std::f64::consts::FRAC_1_SQRT_2);
    check_file(&path, 2, &[600.0, 900.0], 1.0, RMS * scale, 0.01);
}

#[test]
fn raw_pcm_16k_mono_is_resampled() {
    let rate = 16_000;
    let tone = sine(700.0, rate, 24_000, AMP); // 1.5 s
    let bytes: Vec<u8> = tone
        .iter()
        .flat_map(|s| ((s * 32767.0).round() as i16).to_le_bytes())
        .collect();
    let mut src = raw_pcm(Cursor::new(bytes), rate, 1).unwrap();
    assert_eq!(src.channels(), 1);
    assert!(src.duration().is_none());
    let pcm = drain(src.as_mut());
    let ch = channel(&pcm, 1, 0);
    assert_duration(content_len(&ch), 1.5, 0.01, "raw 16 kHz length");
    assert_tone(&ch, 700.0, 2.0, RMS, "raw 16 kHz");
    assert_aligned(&ch, 700.0, AMP, "raw 16 kHz");
}

/// A reader that hands out a few bytes at a time, splitting samples and frames like a pipe.
struct Trickle(Cursor<Vec<u8>>);

impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(7);
        self.0.read(&mut buf[..n])
    }
}

#[test]
fn raw_pcm_survives_split_reads_and_a_trailing_odd_byte() {
    let tone = interleave(&[
        sine(1000.0, 48_000, 4800, AMP),
        sine(2000.0, 48_000, 4800, AMP),
    ]);
    let mut bytes: Vec<u8> = tone
        .iter()
        .flat_map(|s| ((s * 32767.0).round() as i16).to_le_bytes())
        .collect();
    bytes.push(0x7f); // half a sample: dropped
    let mut src = raw_pcm(Trickle(Cursor::new(bytes)), 48_000, 2).unwrap();
    let pcm = drain(src.as_mut());
    assert_eq!(pcm.len(), 5 * FRAME_SAMPLES * 2, "100 ms = 5 frames");
    // At 48 kHz nothing is resampled: samples come through bit-exact (to 16-bit precision).
    for (got, want) in pcm.iter().zip(&tone) {
        assert!((f64::from(*got) - want).abs() < 1.0 / 16_000.0);
    }
}

#[test]
fn raw_pcm_rejects_zero_rate_or_channels() {
    assert!(matches!(
        raw_pcm(Cursor::new(Vec::new()), 0, 1),
        Err(AudioError::InvalidInput(_))
    ));
    assert!(matches!(
        raw_pcm(Cursor::new(Vec::new()), 48_000, 0),
        Err(AudioError::InvalidInput(_))
    ));
}

// Fixtures made with ffmpeg (see tests/fixtures/README.md). ffmpeg's sine is 1/8 full scale
// (RMS 0.0884, -21.1 dBFS); its mono-to-stereo upmix takes 3 dB off each channel (0.0625).
// The RMS each fixture should decode to is what ffmpeg's own decoder measures (astats):
// FLAC and Vorbis -24.1 dBFS, MP3 -21.5 dBFS, AAC at 32 kb/s -19.5 dBFS, Opus -21.1 dBFS.
const NOMINAL_FIXTURE_RMS: f64 = 0.125 * std::f64::consts::FRAC_1_SQRT_2;
const STEREO_FIXTURE_RMS: f64 = 0.0625;
const MP3_FIXTURE_RMS: f64 = 0.0840;
const AAC_FIXTURE_RMS: f64 = 0.1060;

#[test]
fn flac_fixture_decodes() {
    check_file(
        &fixture("tone440_44k1_stereo.flac"),
        2,
        &[440.0, 440.0],
        0.5,
        STEREO_FIXTURE_RMS,
        0.01,
    );
}

#[test]
fn mp3_fixture_decodes() {
    check_file(
        &fixture("tone660_44k1_mono.mp3"),
        1,
        &[660.0],
        1.0,
        MP3_FIXTURE_RMS,
        0.01,
    );
}

#[test]
fn ogg_vorbis_fixture_decodes() {
    check_file(
        &fixture("tone880_48k_stereo.ogg"),
        2,
        &[880.0, 880.0],
        1.0,
        STEREO_FIXTURE_RMS,
        0.01,
    );
}

#[test]
fn aac_m4a_fixture_decodes() {
    check_file(
        &fixture("tone1000_48k_mono.m4a"),
        1,
        &[1000.0],
        1.0,
        AAC_FIXTURE_RMS,
        0.01,
    );
}

#[test]
fn ogg_opus_fixture_from_ffmpeg_decodes_with_exact_trimming() {
    let path = fixture("tone750_48k_mono.opus");
    check_file(&path, 1, &[750.0], 0.75, NOMINAL_FIXTURE_RMS, 0.01);
    // Pre-skip and end trimming leave exactly the 36 000 samples ffmpeg encoded.
    let mut src = open_file(&path).unwrap();
    assert_eq!(content_len(&channel(&drain(src.as_mut()), 1, 0)), 36_000);
}

#[test]
fn garbage_missing_and_empty_files_give_clear_errors() {
    let garbage = scratch("garbage.mp3");
    let noise: Vec<u8> = (0u32..20_000)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&garbage, noise).unwrap();
    let err = open_file(&garbage).err().expect("garbage must not open");
    eprintln!("garbage: {err}");
    assert!(
        matches!(err, AudioError::Unreadable { .. } | AudioError::Decode(_)),
        "{err:?}"
    );
    assert!(err.to_string().contains("garbage.mp3"), "{err}");

    let text = scratch("notes.wav");
    std::fs::write(&text, "this is not audio\n").unwrap();
    let err = open_file(&text).err().expect("text must not open");
    eprintln!("text: {err}");
    assert!(matches!(err, AudioError::Unreadable { .. }), "{err:?}");

    let empty = scratch("empty.flac");
    std::fs::write(&empty, b"").unwrap();
    let err = open_file(&empty)
        .err()
        .expect("an empty file must not open");
    eprintln!("empty: {err}");
    assert!(matches!(err, AudioError::Unreadable { .. }), "{err:?}");

    let missing = scratch("missing.wav");
    let err = open_file(&missing)
        .err()
        .expect("a missing file must not open");
    eprintln!("missing: {err}");
    assert!(matches!(err, AudioError::Open { .. }), "{err:?}");
    assert!(err.to_string().contains("missing.wav"), "{err}");
}

#[test]
fn truncated_wav_does_not_panic() {
    let path = scratch("full.wav");
    write_wav(&path, 48_000, &[1000.0], 0.5, AMP);
    let bytes = std::fs::read(&path).unwrap();
    let cut = scratch("cut.wav");
    std::fs::write(&cut, &bytes[..bytes.len() / 2 + 1]).unwrap();
    // Half the data: opens and yields about half the audio, or fails cleanly.
    match open_file(&cut) {
        Ok(mut src) => {
            let mut n = 0;
            while let Ok(Some(frame)) = src.next_frame() {
                n += frame.len();
            }
            assert!(n > 0 && n <= 24_000 + FRAME_SAMPLES, "{n}");
        }
        Err(e) => eprintln!("truncated: {e}"),
    }
    // A header alone.
    let head = scratch("head.wav");
    std::fs::write(&head, &bytes[..20]).unwrap();
    let err = open_file(&head).err().expect("a bare header must not open");
    eprintln!("header only: {err}");
}

#[test]
fn looped_restarts_the_file() {
    let path = scratch("loop.wav");
    write_wav(&path, 48_000, &[1000.0], 0.1, AMP); // 5 frames
    let mut src = veza_client::audio::looped(path).unwrap();
    assert!(src.duration().is_none());
    for _ in 0..17 {
        let frame = src.next_frame().unwrap().expect("a loop never ends");
        assert_eq!(frame.len(), FRAME_SAMPLES);
        assert!(frame.iter().any(|&s| s != 0.0));
    }
}
