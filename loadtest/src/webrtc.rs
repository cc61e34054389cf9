//! WebRTC peers: str0m in a tokio task each, on a UDP socket of its own (the SFU tells peers
//! apart by their address). Publishers publish over WHIP with one send-only Opus section;
//! subscribers play over WHEP with one receive-only section per publisher of their room, so
//! the SFU gives each of them one active-speaker slot per publisher.
//!
//! The tasks run on the load tool's few runtime threads: many peers per thread.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::config::DtlsCert;
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;

use crate::api::Ticket;
use crate::clock;
use crate::meter::Meter;
use crate::payload;
use crate::peer::{CONNECT_TIMEOUT, Context, Outcome, Role};

/// One Opus frame.
const FRAME: Duration = Duration::from_millis(20);
/// RTP ticks per frame at 48 kHz.
const TICKS_PER_FRAME: u64 = 960;
/// A publisher that fell this far behind its schedule starts afresh instead of bursting.
const MAX_BEHIND: Duration = Duration::from_millis(100);

/// One DTLS certificate for every peer: generating a key pair per peer only costs time.
pub fn certificate() -> Option<DtlsCert> {
    str0m::crypto::from_feature_flags()
        .dtls_provider
        .generate_certificate()
}

/// The local address to use towards `server` (the one the kernel would pick).
pub fn local_ip_towards(server: SocketAddr) -> IpAddr {
    let probe = std::net::UdpSocket::bind(SocketAddr::new(
        if server.is_ipv4() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
        },
        0,
    ));
    probe
        .and_then(|p| p.connect(server).and_then(|()| p.local_addr()))
        .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |a| a.ip())
}

/// What the peer does once connected.
enum Job {
    Publish {
        mid: Mid,
        pt: Option<Pt>,
        next: Option<Instant>,
        sent: u64,
        buf: Vec<u8>,
    },
    Subscribe(Meter),
}

/// Runs one peer until the run stops: `sections` is how many audio sections a subscriber
/// offers (ignored for a publisher).
pub async fn run(
    role: Role,
    ticket: Ticket,
    sections: usize,
    local_ip: IpAddr,
    cert: Option<DtlsCert>,
    ctx: Context,
) -> Outcome {
    let permit = ctx.connecting.clone().acquire_owned().await;
    let socket = match UdpSocket::bind(SocketAddr::new(local_ip, 0)).await {
        Ok(socket) => socket,
        Err(err) => return Outcome::failed(role, None, format!("UDP bind: {err}"), &ctx.live),
    };
    let local = match socket.local_addr() {
        Ok(local) => local,
        Err(err) => return Outcome::failed(role, None, format!("UDP socket: {err}"), &ctx.live),
    };
    let mut config = Rtc::builder()
        .clear_codecs()
        .enable_opus(true, false)
        // Subscribers see every RTP packet with its sequence number as it arrives.
        .set_rtp_mode(role == Role::Subscriber);
    if let Some(cert) = cert {
        config = config.set_dtls_cert(cert);
    }
    let mut rtc = config.build(Instant::now());
    match Candidate::host(local, "udp") {
        Ok(candidate) => {
            rtc.add_local_candidate(candidate);
        }
        Err(err) => return Outcome::failed(role, None, format!("candidate: {err}"), &ctx.live),
    }
    let mut api = rtc.sdp_api();
    let (url, mut job) = match role {
        Role::Publisher => {
            let mid = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
            let job = Job::Publish {
                mid,
                pt: None,
                next: None,
                sent: 0,
                buf: Vec::with_capacity(512),
            };
            (ticket.whip.clone(), job)
        }
        Role::Subscriber => {
            for _ in 0..sections.max(1) {
                api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
            }
            (
                ticket.whep.clone(),
                Job::Subscribe(Meter::new(ctx.live.clone())),
            )
        }
    };
    let Some((offer, pending)) = api.apply() else {
        return Outcome::failed(role, None, "str0m made no offer".into(), &ctx.live);
    };
    let started = Instant::now();
    let (answer, location) = match ctx
        .api
        .post_sdp(&url, &ticket.token, offer.to_sdp_string())
        .await
    {
        Ok(reply) => reply,
        Err(err) => return Outcome::failed(role, None, err.to_string(), &ctx.live),
    };
    let accepted = SdpAnswer::from_sdp_string(&answer)
        .map_err(|e| e.to_string())
        .and_then(|answer| {
            rtc.sdp_api()
                .accept_answer(pending, answer)
                .map_err(|e| e.to_string())
        });
    if let Err(err) = accepted {
        return Outcome::failed(role, None, format!("the answer: {err}"), &ctx.live);
    }

    let mut permit = Some(permit);
    let mut connect = None;
    let mut stop = ctx.stop.clone();
    let mut buf = vec![0u8; 2048];
    let give_up = started + CONNECT_TIMEOUT;
    let error = loop {
        // Everything str0m has to say, until it names its next deadline.
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(at)) => break Ok(at),
                Ok(Output::Transmit(t)) => {
                    // Loopback sends fail only when the server is gone; str0m notices.
                    let _ = socket.send_to(&t.contents, t.destination).await;
                }
                Ok(Output::Event(event)) => {
                    on_event(&mut rtc, &mut job, event, &ctx, |at| {
                        if connect.is_none() {
                            connect = Some(at.saturating_duration_since(started));
                            // Let the next peer start its handshake.
                            permit = None;
                        }
                    });
                }
                Err(err) => break Err(format!("str0m: {err}")),
            }
        };
        let timeout = match timeout {
            Ok(at) => at,
            Err(err) => break Some(err),
        };
        if !rtc.is_alive() {
            break Some("the connection ended".to_owned());
        }
        if connect.is_none() && Instant::now() > give_up {
            break Some(format!("not connected within {CONNECT_TIMEOUT:?}"));
        }
        let mut deadline = timeout;
        if let Job::Publish {
            next: Some(next), ..
        } = &job
        {
            deadline = deadline.min(*next);
        }
        if connect.is_none() {
            deadline = deadline.min(give_up);
        }
        // Due work first: under load the socket is always ready, and the biased select below
        // would otherwise starve the timer (sends and str0m's timeouts).
        let now = Instant::now();
        if deadline <= now {
            send_due(&mut rtc, &mut job, now, &ctx);
            if let Err(err) = rtc.handle_input(Input::Timeout(now)) {
                break Some(format!("str0m: {err}"));
            }
            continue;
        }
        tokio::select! {
            biased;
            () = Context::stopped(&mut stop) => break None,
            received = socket.recv_from(&mut buf) => {
                let now = Instant::now();
                let Ok((n, source)) = received else { continue };
                let Ok(contents) = buf[..n].try_into() else { continue };
                let input = Input::Receive(now, Receive {
                    proto: Protocol::Udp,
                    source,
                    destination: local,
                    contents,
                });
                if let Err(err) = rtc.handle_input(input) {
                    break Some(format!("str0m: {err}"));
                }
            }
            () = tokio::time::sleep_until(deadline.into()) => {
                let now = Instant::now();
                send_due(&mut rtc, &mut job, now, &ctx);
                if let Err(err) = rtc.handle_input(Input::Timeout(now)) {
                    break Some(format!("str0m: {err}"));
                }
            }
        }
    };
    if !ctx.vanish {
        if let Some(location) = &location {
            ctx.api.end_session(location, &ticket.token).await;
        }
        rtc.disconnect();
    }
    match (error, job) {
        (Some(err), _) => Outcome::failed(role, connect, err, &ctx.live),
        (None, Job::Subscribe(meter)) => Outcome {
            role,
            connect,
            measured: meter.finish(),
            error: None,
        },
        (None, Job::Publish { .. }) => Outcome {
            role,
            connect,
            measured: Default::default(),
            error: None,
        },
    }
}

fn on_event(
    rtc: &mut Rtc,
    job: &mut Job,
    event: Event,
    ctx: &Context,
    mut connected: impl FnMut(Instant),
) {
    match event {
        Event::Connected => {
            let now = Instant::now();
            connected(now);
            match job {
                Job::Publish { mid, pt, next, .. } => {
                    *pt = rtc.writer(*mid).and_then(|w| {
                        w.payload_params()
                            .find(|p| p.spec().codec == Codec::Opus)
                            .map(|p| p.pt())
                    });
                    *next = Some(now);
                    ctx.live.publishers_ready.fetch_add(1, Ordering::Relaxed);
                }
                Job::Subscribe(_) => {
                    ctx.live.subscribers_ready.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Event::RtpPacket(packet) => {
            if let Job::Subscribe(meter) = job {
                meter.rtp(
                    *packet.header.ssrc,
                    packet.header.sequence_number,
                    &packet.payload,
                    clock::now_us(),
                );
            }
        }
        _ => {}
    }
}

/// Sends the publisher's packets that are due by `now`.
fn send_due(rtc: &mut Rtc, job: &mut Job, now: Instant, ctx: &Context) {
    let Job::Publish {
        mid,
        pt: Some(pt),
        next: Some(next),
        sent,
        buf,
    } = job
    else {
        return;
    };
    if now.saturating_duration_since(*next) > MAX_BEHIND {
        *next = now;
    }
    while *next <= now {
        let frame = &ctx.packets[(*sent % ctx.packets.len() as u64) as usize];
        if payload::stamp(frame, clock::now_us(), buf).is_err() {
            return;
        }
        let Some(writer) = rtc.writer(*mid) else {
            return;
        };
        let time = MediaTime::new(*sent * TICKS_PER_FRAME, Frequency::FORTY_EIGHT_KHZ);
        if writer.write(*pt, now, time, buf.as_slice()).is_ok() {
            ctx.live.sent.fetch_add(1, Ordering::Relaxed);
        }
        *sent += 1;
        *next += FRAME;
    }
}
