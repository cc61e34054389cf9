//! Short runs of the load tool's other modes against a real `veza serve`, so they cannot rot:
//! `--signaling` (idle WebSocket sessions), `--chat` (messages on the `chat` data channel) and
//! `--misbehave` (garbage and abandoned sessions beside a WebRTC run, compared with the same
//! run without them). The heavy runs are by hand (see docs/benchmarks.md).

mod support;

use serde_json::Value;
use support::{Serve, Server, describe, last_json_line, number, run_veza};

/// Runs `veza loadtest --server … --server-pid … --json <args>`; returns the report and a
/// context for assertion messages.
async fn loadtest(server: &Server, args: &[&str]) -> (Value, String) {
    let base = server.base_url();
    let pid = server.pid().to_string();
    let mut all = vec![
        "loadtest",
        "--server",
        base.as_str(),
        "--server-pid",
        pid.as_str(),
        "--json",
    ];
    all.extend_from_slice(args);
    let output = run_veza(&all, &[]).await;
    assert!(
        output.status.success(),
        "veza {} failed: {}\n--- server stderr ---\n{}",
        all.join(" "),
        describe(&output),
        server.stderr()
    );
    let report = last_json_line(&output);
    println!("{}: {report}", args.join(" "));
    let context = format!("{report}\n--- loadtest ---\n{}", describe(&output));
    (report, context)
}

/// A 2 × 3 WebRTC run, with `misbehave` misbehaving clients; checks what must hold either way.
async fn media(server: &Server, misbehave: &str) -> Value {
    let (report, context) = loadtest(
        server,
        &[
            "--transport",
            "webrtc",
            "--publishers",
            "2",
            "--subscribers",
            "3",
            "--duration",
            "4s",
            "--misbehave",
            misbehave,
        ],
    )
    .await;
    assert_eq!(report["publishers_connected"], 2, "{context}");
    assert_eq!(report["subscribers_connected"], 3, "{context}");
    assert_eq!(report["peers_failed"], 0, "{context}");
    assert_eq!(report["malformed"], 0, "{context}");
    let pps = number(&report, "/forwarded_pps");
    assert!(
        (210.0..=390.0).contains(&pps),
        "forwarded {pps}/s: {context}"
    );
    let loss = number(&report, "/loss_ratio");
    assert!((0.0..0.05).contains(&loss), "loss {loss}: {context}");
    let p99 = number(&report, "/latency_ms/p99");
    assert!(p99 > 0.0 && p99 < 200.0, "latency p99 {p99} ms: {context}");
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_modes_report_sane_figures() {
    let server = Serve::new().start().await;

    // Misbehaving clients beside a run leave the well-behaved figures within bounds.
    let calm = media(&server, "0").await;
    assert!(calm.get("misbehaving_packets_sent").is_none(), "{calm}");
    let disturbed = media(&server, "2").await;
    assert_eq!(disturbed["misbehaving_clients"], 2, "{disturbed}");
    // 2 clients × 2,000/s for 4 s, give or take the start.
    let garbage = number(&disturbed, "/misbehaving_packets_sent");
    assert!(
        garbage > 4_000.0,
        "{garbage} garbage datagrams: {disturbed}"
    );
    assert!(
        number(&disturbed, "/misbehaving_sessions") >= 8.0,
        "{disturbed}"
    );
    assert_eq!(disturbed["errors"], Value::Array(vec![]), "{disturbed}");
    println!(
        "loss {} → {}, p99 {} ms → {} ms",
        calm["loss_ratio"],
        disturbed["loss_ratio"],
        calm["latency_ms"]["p99"],
        disturbed["latency_ms"]["p99"]
    );

    // Chat: 2 senders (the tool spreads 10/s each over accounts the server's 5/s per-user
    // limit allows) × 2 receivers at 20 messages/s.
    let (chat, context) = loadtest(
        &server,
        &[
            "--chat",
            "--senders",
            "2",
            "--receivers",
            "2",
            "--rate",
            "20",
            "--duration",
            "3s",
        ],
    )
    .await;
    assert_eq!(chat["mode"], "chat", "{context}");
    assert_eq!(chat["receivers_connected"], 2, "{context}");
    assert_eq!(chat["peers_failed"], 0, "{context}");
    assert_eq!(chat["refused"], 0, "{context}");
    assert_eq!(chat["chat_errors"], 0, "{context}");
    let sent = number(&chat, "/sent");
    assert!((50.0..=70.0).contains(&sent), "sent {sent}: {context}");
    assert_eq!(chat["acked"], chat["sent"], "{context}");
    let delivered = number(&chat, "/delivered");
    assert!(
        delivered >= sent * 2.0 * 0.95 && delivered <= sent * 2.0,
        "delivered {delivered} of {sent} × 2 receivers: {context}"
    );
    let p50 = number(&chat, "/latency_ms/p50");
    let p99 = number(&chat, "/latency_ms/p99");
    assert!(
        0.0 < p50 && p50 <= p99 && p99 < 500.0,
        "latency p50 {p50} p99 {p99}: {context}"
    );
    let per_receiver = number(&chat, "/messages_per_s_per_receiver");
    assert!((15.0..=25.0).contains(&per_receiver), "{context}");

    // Signaling: 200 idle sessions held for 3 s.
    let (signaling, context) = loadtest(&server, &["--signaling", "200", "--duration", "3s"]).await;
    assert_eq!(signaling["mode"], "signaling", "{context}");
    assert_eq!(signaling["sessions_open"], 200, "{context}");
    assert_eq!(signaling["failed"], 0, "{context}");
    assert_eq!(signaling["closed_by_server"], 0, "{context}");
    assert!(number(&signaling, "/join_rate_per_s") > 0.0, "{context}");
    let held = number(&signaling, "/duration_s");
    assert!((2.9..4.0).contains(&held), "held {held} s: {context}");
    let per_session = number(&signaling, "/server_rss_per_session_bytes");
    assert!(
        per_session > 0.0,
        "{per_session} bytes per session: {context}"
    );
    assert!(
        number(&signaling, "/server_rss_bytes_after")
            > number(&signaling, "/server_rss_bytes_before"),
        "{context}"
    );
}
