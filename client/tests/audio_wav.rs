//! WAV output: to a file (hound fixes the header) and streamed to a non-seekable writer.

mod audio_util;

use std::io::Write;
use std::sync::{Arc, Mutex};

use audio_util::*;
use veza_client::audio::{AudioError, WavWriter, open_file};

/// A `Write` that keeps what it got where the test can still see it, and cannot seek.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn stereo_tone(frames: usize) -> Vec<f32> {
    interleave(&[
        sine(1000.0, 48_000, frames, 0.5),
        sine(250.0, 48_000, frames, 0.25),
    ])
    .into_iter()
    .map(|s| s as f32)
    .collect()
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}

#[test]
fn file_output_is_a_complete_wav_hound_can_read() {
    let pcm = stereo_tone(9_600);
    let path = scratch("out.wav");
    let mut w = WavWriter::to_path(&path, 2).unwrap();
    for frame in pcm.chunks(1920) {
        w.write(frame).unwrap();
    }
    // Out-of-range samples are clamped, not wrapped.
    w.write(&[1.5, -1.5]).unwrap();
    w.finish().unwrap();

    let mut r = hound::WavReader::open(&path).unwrap();
    let spec = r.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (2, 48_000, 16)
    );
    assert_eq!(spec.sample_format, hound::SampleFormat::Int);
    assert_eq!(r.len() as usize, pcm.len() + 2);
    let samples: Vec<i16> = r.samples::<i16>().map(Result::unwrap).collect();
    for (got, want) in samples.iter().zip(&pcm) {
        assert!((f32::from(*got) / 32767.0 - want).abs() <= 1.0 / 32767.0);
    }
    assert_eq!(&samples[pcm.len()..], &[32767, -32767]);
}

#[test]
fn streaming_output_has_a_max_size_header_and_raw_samples() {
    let pcm = stereo_tone(4_800);
    let sink = Shared::default();
    let mut w = WavWriter::streaming(sink.clone(), 2).unwrap();
    // The header is out before any audio, so a player can start at once.
    assert_eq!(sink.0.lock().unwrap().len(), 44);
    w.write(&pcm).unwrap();
    w.finish().unwrap();

    let b = sink.0.lock().unwrap().clone();
    assert_eq!(&b[0..4], b"RIFF");
    assert_eq!(u32_at(&b, 4), 0xFFFF_FFFF);
    assert_eq!(&b[8..16], b"WAVEfmt ");
    assert_eq!(u32_at(&b, 16), 16);
    assert_eq!(u16_at(&b, 20), 1, "PCM");
    assert_eq!(u16_at(&b, 22), 2, "channels");
    assert_eq!(u32_at(&b, 24), 48_000);
    assert_eq!(u32_at(&b, 28), 48_000 * 4, "byte rate");
    assert_eq!(u16_at(&b, 32), 4, "block align");
    assert_eq!(u16_at(&b, 34), 16, "bits");
    assert_eq!(&b[36..40], b"data");
    assert_eq!(u32_at(&b, 40), 0xFFFF_FFFF);
    assert_eq!(b.len(), 44 + pcm.len() * 2);
    for (i, want) in pcm.iter().enumerate() {
        let got = i16::from_le_bytes([b[44 + 2 * i], b[45 + 2 * i]]);
        assert!((f32::from(got) / 32767.0 - want).abs() <= 1.0 / 32767.0);
    }
}

#[test]
fn streamed_wav_saved_to_a_file_opens_again() {
    let pcm = stereo_tone(24_000);
    let sink = Shared::default();
    let mut w = WavWriter::streaming(sink.clone(), 2).unwrap();
    w.write(&pcm).unwrap();
    w.finish().unwrap();
    let path = scratch("streamed.wav");
    std::fs::write(&path, sink.0.lock().unwrap().as_slice()).unwrap();

    // What `veza listen -o - > x.wav` leaves behind can be broadcast again.
    let mut src = open_file(&path).unwrap();
    assert_eq!(src.channels(), 2);
    let out = drain(src.as_mut());
    assert_eq!(content_len(&channel(&out, 2, 0)), 24_000);
    assert_tone(&channel(&out, 2, 0), 1000.0, 2.0, 0.3536, "streamed left");
    assert_tone(&channel(&out, 2, 1), 250.0, 2.0, 0.1768, "streamed right");
}

#[test]
fn bad_channel_counts_and_ragged_writes_are_refused() {
    assert!(matches!(
        WavWriter::streaming(Shared::default(), 0),
        Err(AudioError::InvalidInput(_))
    ));
    assert!(matches!(
        WavWriter::to_path(&scratch("three.wav"), 3),
        Err(AudioError::InvalidInput(_))
    ));
    let mut w = WavWriter::streaming(Shared::default(), 2).unwrap();
    assert!(matches!(
        w.write(&[0.0; 3]),
        Err(AudioError::InvalidInput(_))
    ));
    let err = WavWriter::to_path(std::path::Path::new("/nonexistent-dir/x.wav"), 1).unwrap_err();
    assert!(err.to_string().contains("/nonexistent-dir/x.wav"), "{err}");
}
