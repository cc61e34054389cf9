//! Helpers shared by the audio tests: tone generation and measurement.
#![allow(dead_code)] // each test crate uses a different subset

use std::f64::consts::PI;
use std::path::PathBuf;

use veza_client::audio::{FRAME_SAMPLES, PcmSource, SAMPLE_RATE};

/// A scratch path unique to this test binary and `name`.
pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("veza-audio-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{}-{name}", std::process::id()))
}

/// The fixture file `name` under tests/fixtures.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// `frames` samples of a sine at `freq` Hz sampled at `rate`, amplitude `amp`.
pub fn sine(freq: f64, rate: u32, frames: usize, amp: f64) -> Vec<f64> {
    (0..frames)
        .map(|i| amp * (2.0 * PI * freq * i as f64 / f64::from(rate)).sin())
        .collect()
}

/// Interleaves per-channel signals.
pub fn interleave(channels: &[Vec<f64>]) -> Vec<f64> {
    let n = channels[0].len();
    (0..n)
        .flat_map(|i| channels.iter().map(move |c| c[i]))
        .collect()
}

/// Every frame of `src`, checked to be exactly 20 ms each, concatenated.
pub fn drain(src: &mut dyn PcmSource) -> Vec<f32> {
    let len = FRAME_SAMPLES * usize::from(src.channels());
    let mut all = Vec::new();
    while let Some(frame) = src.next_frame().unwrap() {
        assert_eq!(frame.len(), len, "every frame is 20 ms");
        all.extend_from_slice(&frame);
    }
    all
}

/// Channel `idx` of interleaved `pcm`.
pub fn channel(pcm: &[f32], channels: usize, idx: usize) -> Vec<f64> {
    pcm.iter()
        .skip(idx)
        .step_by(channels)
        .map(|&s| f64::from(s))
        .collect()
}

/// Length in samples up to the last non-zero one (the zero padding of the last frame removed).
pub fn content_len(mono: &[f64]) -> usize {
    mono.iter().rposition(|&s| s != 0.0).map_or(0, |i| i + 1)
}

/// Power of `freq` in `x` (Hann-windowed Goertzel).
fn goertzel(x: &[f64], freq: f64, rate: f64) -> f64 {
    let n = x.len() as f64;
    let coeff = 2.0 * (2.0 * PI * freq / rate).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for (i, &v) in x.iter().enumerate() {
        let w = 0.5 - 0.5 * (2.0 * PI * i as f64 / n).cos();
        let s = v * w + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

/// The dominant frequency of `x` (sampled at 48 kHz) between 50 Hz and 8 kHz, to about 1 Hz.
pub fn dominant_freq(x: &[f64]) -> f64 {
    let rate = f64::from(SAMPLE_RATE);
    let best = |lo: f64, hi: f64, step: f64| {
        let mut f = lo;
        let (mut best_f, mut best_p) = (lo, f64::MIN);
        while f <= hi {
            let p = goertzel(x, f, rate);
            if p > best_p {
                (best_f, best_p) = (f, p);
            }
            f += step;
        }
        best_f
    };
    let coarse = best(50.0, 8000.0, 10.0);
    best(coarse - 10.0, coarse + 10.0, 0.5)
}

/// Root mean square of `x`.
pub fn rms(x: &[f64]) -> f64 {
    (x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64).sqrt()
}

/// The middle half of `x`, clear of start-up and end effects.
pub fn middle(x: &[f64]) -> &[f64] {
    &x[x.len() / 4..x.len() * 3 / 4]
}

/// Asserts that `x` is a tone of `freq` Hz (±`tol` Hz) of RMS `rms_expected` (±15 %).
pub fn assert_tone(x: &[f64], freq: f64, tol: f64, rms_expected: f64, what: &str) {
    let seg = middle(x);
    let f = dominant_freq(seg);
    let r = rms(seg);
    eprintln!("{what}: dominant {f:.1} Hz (want {freq}), rms {r:.4} (want {rms_expected:.4})");
    assert!(
        (f - freq).abs() <= tol,
        "{what}: dominant {f} Hz, want {freq} Hz"
    );
    assert!(
        (r / rms_expected - 1.0).abs() < 0.15,
        "{what}: rms {r}, want {rms_expected}"
    );
}

/// Asserts that `actual` samples at 48 kHz last `secs` seconds within `rel` (relative).
pub fn assert_duration(actual: usize, secs: f64, rel: f64, what: &str) {
    let got = actual as f64 / f64::from(SAMPLE_RATE);
    eprintln!("{what}: {got:.4} s (want {secs} s)");
    assert!(
        (got / secs - 1.0).abs() <= rel,
        "{what}: {got} s, want {secs} s ± {}%",
        rel * 100.0
    );
}

/// Asserts that `x` (48 kHz) matches, sample by sample over its middle half, the sine of
/// `freq` Hz and amplitude `amp` that started at sample 0: no added delay, no rate drift.
pub fn assert_aligned(x: &[f64], freq: f64, amp: f64, what: &str) {
    let ideal = sine(freq, SAMPLE_RATE, x.len(), amp);
    let (lo, hi) = (x.len() / 4, x.len() * 3 / 4);
    let diff: Vec<f64> = (lo..hi).map(|i| x[i] - ideal[i]).collect();
    let err = rms(&diff) / (amp * std::f64::consts::FRAC_1_SQRT_2);
    eprintln!("{what}: relative rms error against the ideal tone {err:.5}");
    assert!(
        err < 0.01,
        "{what}: off the ideal tone by {err} (delay or drift)"
    );
}
