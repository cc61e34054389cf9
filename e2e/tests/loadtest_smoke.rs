//! A short run of `veza loadtest` against a real `veza serve`, over WebRTC and over QUIC, and
//! of `veza loadtest --baseline`: the figures must be sane, so the load tool cannot rot. The
//! heavy runs are by hand (see docs/benchmarks.md).
//!
//! 2 publishers × 3 subscribers in one room at 50 packets/s: every subscriber hears both
//! publishers, so 300 packets/s arrive in all.

mod support;

use serde_json::Value;
use support::{Serve, Server, describe, last_json_line, number, run_veza};

/// Packets per second all subscribers should receive: 2 publishers × 3 subscribers × 50/s.
const EXPECTED_PPS: f64 = 300.0;

async fn load(server: &Server, transport: &str) -> Value {
    let base = server.base_url();
    let pid = server.pid().to_string();
    let args = [
        "loadtest",
        "--server",
        base.as_str(),
        "--transport",
        transport,
        "--rooms",
        "1",
        "--publishers",
        "2",
        "--subscribers",
        "3",
        "--duration",
        "4s",
        "--json",
        "--server-pid",
        pid.as_str(),
    ];
    let output = run_veza(&args, &[]).await;
    assert!(
        output.status.success(),
        "veza loadtest --transport {transport} failed: {}\n--- server stderr ---\n{}",
        describe(&output),
        server.stderr()
    );
    let report = last_json_line(&output);
    println!("{transport}: {report}");
    let context = format!(
        "{transport}: {report}\n--- loadtest ---\n{}",
        describe(&output)
    );

    assert_eq!(report["transport"], transport, "{context}");
    assert_eq!(report["publishers_connected"], 2, "{context}");
    assert_eq!(report["subscribers_connected"], 3, "{context}");
    assert_eq!(report["peers_failed"], 0, "{context}");
    assert_eq!(report["malformed"], 0, "{context}");
    let duration = number(&report, "/duration_s");
    assert!(
        (3.9..4.5).contains(&duration),
        "duration {duration}: {context}"
    );
    let pps = number(&report, "/forwarded_pps");
    assert!(
        (EXPECTED_PPS * 0.7..=EXPECTED_PPS * 1.3).contains(&pps),
        "forwarded {pps} packets/s, expected {EXPECTED_PPS} ± 30 %: {context}"
    );
    let loss = number(&report, "/loss_ratio");
    assert!((0.0..0.05).contains(&loss), "loss {loss}: {context}");
    let p50 = number(&report, "/latency_ms/p50");
    let p99 = number(&report, "/latency_ms/p99");
    let max = number(&report, "/latency_ms/max");
    assert!(
        0.0 < p50 && p50 <= p99 && p99 <= max,
        "latency p50 {p50} p99 {p99} max {max}: {context}"
    );
    assert!(p99 < 200.0, "latency p99 {p99} ms: {context}");
    let jitter = number(&report, "/jitter_ms");
    assert!(
        (0.0..50.0).contains(&jitter),
        "jitter {jitter} ms: {context}"
    );
    let connect = number(&report, "/connect_ms/p50");
    assert!(
        connect > 0.0 && connect <= number(&report, "/connect_ms/p99"),
        "connect {connect} ms: {context}"
    );
    assert!(connect < 10_000.0, "connect p50 {connect} ms: {context}");
    let cpu = number(&report, "/server_cpu_seconds");
    assert!(cpu > 0.0, "server CPU {cpu} s: {context}");
    let rss = number(&report, "/server_rss_bytes");
    assert!(rss > 1e6, "server RSS {rss} bytes: {context}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_tool_reports_sane_figures() {
    let server = Serve::new().start().await;
    // One after the other: runs side by side would share the two cores.
    load(&server, "webrtc").await;
    load(&server, "quic").await;
    drop(server);

    let output = run_veza(&["loadtest", "--baseline", "--json"], &[]).await;
    assert!(output.status.success(), "{}", describe(&output));
    let baseline = last_json_line(&output);
    println!("baseline: {baseline}");
    for pointer in [
        "/udp_send_pps",
        "/udp_send_pps_plain",
        "/srtp_protect_ns",
        "/srtp_protect_ns_aes_cm_128_hmac_sha1_80",
        "/srtp_protect_ns_aead_aes_128_gcm",
    ] {
        let value = number(&baseline, pointer);
        assert!(value > 0.0, "{pointer} = {value}: {baseline}");
    }
    // The best rate is at least the plain one, and loopback does better than 10,000/s.
    assert!(number(&baseline, "/udp_send_pps") >= number(&baseline, "/udp_send_pps_plain"));
    assert!(
        number(&baseline, "/udp_send_pps_plain") > 10_000.0,
        "{baseline}"
    );
}
