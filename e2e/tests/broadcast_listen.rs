//! `veza broadcast` into a room and `veza listen` out of it, both the real binary over QUIC
//! (moq-lite), against a real `veza serve`: the sound arrives whole (duration, frequencies),
//! the latency from encoder to decoder is measured, and bad input ends the commands with a
//! clear message and a non-zero exit.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Serve, Server, TempDir, str_field, veza_bin, write_wav};
use tokio::process::Command;

/// A public room with an owner (who may publish) and a listener; their media tokens.
struct Room {
    id: String,
    owner_token: String,
    listener_token: String,
    second_listener_token: String,
}

async fn room(server: &Server) -> Room {
    let api = server.api();
    let owner = api.register("owner").await;
    let owner_access = str_field(&owner, "/access_token").to_owned();
    let listener = api.register("listener").await;
    let listener_access = str_field(&listener, "/access_token").to_owned();
    let second = api.register("second").await;
    let second_access = str_field(&second, "/access_token").to_owned();
    let body = json!({ "name": "quic", "visibility": "public" });
    let room = api
        .post("/api/v1/rooms", Some(&owner_access), body)
        .await
        .expect(201, "create room");
    let id = str_field(&room, "/id").to_owned();
    let join = |access: String| {
        let api = server.api();
        let path = format!("/api/v1/rooms/{id}/join");
        async move {
            api.post(&path, Some(&access), json!({}))
                .await
                .expect(200, "join")
        }
    };
    let owner_join: Value = join(owner_access).await;
    let listener_join: Value = join(listener_access).await;
    let second_join: Value = join(second_access).await;
    let quic = str_field(&owner_join, "/urls/quic");
    assert!(
        quic.starts_with("https://127.0.0.1:") && quic.ends_with(&format!("/room/{id}")),
        "{owner_join}"
    );
    Room {
        owner_token: str_field(&owner_join, "/token").to_owned(),
        listener_token: str_field(&listener_join, "/token").to_owned(),
        second_listener_token: str_field(&second_join, "/token").to_owned(),
        id,
    }
}

/// `veza <args>` as a child process.
fn veza(args: &[&str]) -> Command {
    let mut command = Command::new(veza_bin());
    command
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .env_remove("VEZA_USERNAME")
        .env_remove("VEZA_PASSWORD")
        .env_remove("VEZA_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The first channel of a 16-bit PCM WAV, and its rate.
fn read_wav(path: &Path) -> (u32, Vec<f32>) {
    let bytes = std::fs::read(path).expect("reading the listener's WAV");
    assert_eq!(&bytes[..4], b"RIFF", "not a WAV file");
    let channels = u16::from_le_bytes([bytes[22], bytes[23]]) as usize;
    let rate = u32::from_le_bytes(bytes[24..28].try_into().unwrap());
    let bits = u16::from_le_bytes([bytes[34], bytes[35]]);
    assert_eq!(bits, 16);
    let data = bytes
        .windows(4)
        .position(|w| w == b"data")
        .expect("a data chunk")
        + 8;
    let samples = bytes[data..]
        .chunks_exact(2 * channels)
        .map(|frame| f32::from(i16::from_le_bytes([frame[0], frame[1]])) / 32768.0)
        .collect();
    (rate, samples)
}

/// The strongest frequency in `samples` between 100 and 4000 Hz, 5 Hz steps (Goertzel).
fn dominant_frequency(samples: &[f32], rate: u32) -> f64 {
    let power = |frequency: f64| {
        let w = 2.0 * std::f64::consts::PI * frequency / f64::from(rate);
        let coefficient = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &x in samples {
            let s = f64::from(x) + coefficient * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        s1 * s1 + s2 * s2 - coefficient * s1 * s2
    };
    (20..=800)
        .map(|step| f64::from(step) * 5.0)
        .max_by(|a, b| power(*a).total_cmp(&power(*b)))
        .unwrap()
}

/// Seconds of `samples` in 10 ms windows louder than -40 dBFS.
fn sounding_seconds(samples: &[f32], rate: u32) -> f64 {
    let window = rate as usize / 100;
    let loud = samples
        .chunks(window)
        .filter(|w| (w.iter().map(|x| x * x).sum::<f32>() / w.len() as f32).sqrt() > 0.01)
        .count();
    loud as f64 * 0.01
}

/// `<hash> <unix µs>` lines, keyed by the hash and its occurrence (a steady tone encodes to
/// identical packets, so the n-th copy on one side is the n-th on the other).
fn timing_log(path: &Path) -> HashMap<(String, usize), i64> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (hash, micros) = l.split_once(' ')?;
            let n = seen.entry(hash.to_owned()).or_default();
            *n += 1;
            Some(((hash.to_owned(), *n), micros.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_file_is_heard_whole_by_a_quic_listener() {
    let server = Serve::new().start().await;
    let room = room(&server).await;
    let dir = TempDir::new("broadcast");
    let input = dir.path().join("tones.wav");
    // 44.1 kHz, as most music files: 2.5 s of 1 kHz, then 2.5 s of 2 kHz.
    write_wav(&input, 44_100, &[(1000.0, 2.5), (2000.0, 2.5)]);
    let (out, tx_log, rx_log) = (
        dir.path().join("heard.wav"),
        dir.path().join("tx.log"),
        dir.path().join("rx.log"),
    );
    let base = server.base_url();
    let listener = veza(&[
        "listen",
        "--server",
        &base,
        "--room",
        &room.id,
        "--token",
        &room.listener_token,
        "--out",
        out.to_str().unwrap(),
        "--duration",
        "9",
        "--timing-log",
        rx_log.to_str().unwrap(),
    ])
    .spawn()
    .expect("starting veza listen");
    // A second listener takes its audio as QUIC datagrams.
    let datagram_out = dir.path().join("datagrams.wav");
    let mut datagram_listener = veza(&[
        "listen",
        "--server",
        &base,
        "--room",
        &room.id,
        "--token",
        &room.second_listener_token,
        "--out",
        datagram_out.to_str().unwrap(),
        "--duration",
        "9",
        "--datagrams",
    ]);
    let datagram_listener = datagram_listener.spawn().expect("starting veza listen");
    // The listener is in the room before the broadcast starts.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = Instant::now();
    let broadcast = veza(&[
        "broadcast",
        input.to_str().unwrap(),
        "--server",
        &base,
        "--room",
        &room.id,
        "--token",
        &room.owner_token,
        "--timing-log",
        tx_log.to_str().unwrap(),
    ])
    .spawn()
    .expect("starting veza broadcast");
    // Mid-broadcast the room has three participants over QUIC, one of them publishing.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let live = server
        .api()
        .get(
            &format!("/api/v1/rooms/{}/live", room.id),
            Some(&room.listener_token),
        )
        .await
        .expect(200, "live counts");
    println!("live: {live}");
    assert_eq!(live, json!({ "participants": 3, "publishers": 1 }));
    let broadcast = broadcast
        .wait_with_output()
        .await
        .expect("running veza broadcast");
    let took = started.elapsed();
    assert!(
        broadcast.status.success(),
        "broadcast failed: {}",
        stderr(&broadcast)
    );
    println!(
        "broadcast: {} (wall {:.2} s)",
        stderr(&broadcast).trim(),
        took.as_secs_f64()
    );
    assert!(
        took >= Duration::from_millis(4900),
        "a 5 s file must take real time to broadcast, took {took:?}"
    );
    let listened = listener.wait_with_output().await.expect("veza listen");
    assert!(
        listened.status.success(),
        "listen failed: {}",
        stderr(&listened)
    );
    println!("listen: {}", stderr(&listened).trim());

    let datagrams = datagram_listener
        .wait_with_output()
        .await
        .expect("veza listen --datagrams");
    assert!(
        datagrams.status.success(),
        "listen --datagrams failed: {}",
        stderr(&datagrams)
    );
    println!("listen --datagrams: {}", stderr(&datagrams).trim());
    let (rate, samples) = read_wav(&datagram_out);
    let sounding = sounding_seconds(&samples, rate);
    assert!(
        (sounding - 5.0).abs() <= 0.1,
        "over datagrams: sounding {sounding:.3} s"
    );

    // The QUIC metrics saw it all.
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    let metric = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    };
    let (groups, datagrams_sent) = (
        metric("veza_quic_groups_sent_total"),
        metric("veza_quic_datagrams_sent_total"),
    );
    println!(
        "metrics: {groups} groups on streams, {datagrams_sent} datagrams, {} stale, {} RTT samples",
        metric("veza_quic_groups_dropped_stale_total"),
        metric("veza_quic_rtt_seconds_count")
    );
    // 250 to each listener: one on streams, one as datagrams.
    assert!(groups >= 245.0, "{groups} groups");
    assert!(datagrams_sent >= 245.0, "{datagrams_sent} datagrams");
    assert!(metric("veza_quic_rtt_seconds_count") >= 3.0);

    let (rate, samples) = read_wav(&out);
    assert_eq!(rate, 48_000, "the listener writes 48 kHz");
    let sounding = sounding_seconds(&samples, rate);
    println!("sounding duration {sounding:.3} s of 5.000 s");
    assert!(
        (sounding - 5.0).abs() <= 0.1,
        "sounding {sounding:.3} s is not within 2 % of 5 s"
    );
    // Where the sound starts in the file, then each half away from the switch.
    let window = rate as usize / 100;
    let onset = samples
        .chunks(window)
        .position(|w| (w.iter().map(|x| x * x).sum::<f32>() / w.len() as f32).sqrt() > 0.01)
        .unwrap()
        * window;
    let at = |seconds: f64| onset + (seconds * f64::from(rate)) as usize;
    let first = dominant_frequency(&samples[at(0.5)..at(2.0)], rate);
    let second = dominant_frequency(&samples[at(3.0)..at(4.5)], rate);
    println!("dominant frequencies: {first} Hz then {second} Hz");
    assert_eq!(first, 1000.0);
    assert_eq!(second, 2000.0);

    // Encoder to decoder, joined by the packet's hash (the Opus bytes pass unchanged).
    let sent = timing_log(&tx_log);
    let received = timing_log(&rx_log);
    let mut latencies: Vec<f64> = received
        .iter()
        .filter_map(|(hash, at)| Some((at - sent.get(hash)?) as f64 / 1000.0))
        .collect();
    latencies.sort_by(f64::total_cmp);
    assert!(
        latencies.len() >= 245,
        "only {} packets matched",
        latencies.len()
    );
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let (p50, p99, max) = (pct(0.5), pct(0.99), latencies[latencies.len() - 1]);
    println!(
        "latency encoder → decoder over {} packets: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms; \
         with the 20 ms frame: p50 {:.2} ms, p99 {:.2} ms",
        latencies.len(),
        p50 + 20.0,
        p99 + 20.0
    );
    assert!(
        p99 + 20.0 < 50.0,
        "p99 {p99:.2} ms + 20 ms framing is not under 50 ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_ends_the_commands_with_a_clear_message() {
    let mut server = Serve::new().start().await;
    let room = room(&server).await;
    let dir = TempDir::new("broadcast-bad");
    let base = server.base_url();
    let target = |token: &str| {
        vec![
            "--server".to_owned(),
            base.clone(),
            "--room".to_owned(),
            room.id.clone(),
            "--token".to_owned(),
            token.to_owned(),
        ]
    };
    // `veza broadcast FILE --token TOKEN` must fail, saying `expected`; its first line.
    let refused = |file: &Path, token: &str, expected: &'static str| {
        let mut args = vec!["broadcast".to_owned(), file.display().to_string()];
        args.extend(target(token));
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let output = tokio::time::timeout(Duration::from_secs(30), veza(&args).output())
                .await
                .expect("the command ended within 30 s")
                .expect("running veza");
            let message = stderr(&output);
            assert!(!output.status.success(), "{message}");
            assert!(message.contains(expected), "{message}");
            message.lines().next().unwrap_or_default().to_owned()
        }
    };

    // A file that does not exist, and one that is not audio.
    let missing = dir.path().join("missing.flac");
    refused(&missing, &room.owner_token, "missing.flac").await;
    let garbage = dir.path().join("garbage.mp3");
    std::fs::write(&garbage, b"this is not an mp3 file at all, just text").unwrap();
    let message = refused(&garbage, &room.owner_token, "not a readable audio file").await;
    println!("unreadable file: {message}");

    // A forged token, and a listener's token trying to broadcast.
    let input = dir.path().join("tone.wav");
    write_wav(&input, 48_000, &[(440.0, 1.0)]);
    let forged = format!("{}x", room.owner_token);
    let message = refused(&input, &forged, "invalid media token").await;
    println!("forged token: {message}");
    let message = refused(&input, &room.listener_token, "cannot publish").await;
    println!("listener token: {message}");

    // The server dies mid-broadcast.
    let mut args = vec![
        "broadcast".to_owned(),
        input.display().to_string(),
        "--loop".to_owned(),
    ];
    args.extend(target(&room.owner_token));
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let child = veza(&args_ref).spawn().expect("starting veza broadcast");
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.kill();
    let died = Instant::now();
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("broadcast noticed the lost server within 20 s")
        .unwrap();
    assert!(!output.status.success());
    println!(
        "lost server noticed after {:.1} s: {}",
        died.elapsed().as_secs_f64(),
        stderr(&output).lines().next().unwrap_or_default()
    );
    assert!(
        stderr(&output).contains("the server ended the session"),
        "{}",
        stderr(&output)
    );
}
