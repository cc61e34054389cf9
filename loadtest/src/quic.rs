//! moq-lite peers over QUIC: a session each (its own quinn endpoint and UDP socket), as
//! `veza broadcast` and `veza listen` do. A publisher announces one broadcast and writes one
//! group per packet; a subscriber follows the room's announcements and subscribes to every
//! publisher's broadcast, measuring loss from group-number gaps.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::task::JoinSet;
use veza_moq::session::{AudioInfo, Session};

use crate::api::Ticket;
use crate::clock;
use crate::meter::Meter;
use crate::payload;
use crate::peer::{CONNECT_TIMEOUT, Context, Outcome, Role};
use crate::stats::Measurements;
use crate::tone;

/// One Opus frame.
const FRAME: Duration = Duration::from_millis(20);
/// A publisher that fell this far behind its schedule starts afresh instead of bursting.
const MAX_BEHIND: Duration = Duration::from_millis(100);
/// How late a group may be before the server drops it rather than send it.
const MAX_LATENCY: Duration = Duration::from_millis(500);

/// Runs one peer until the run stops: a subscriber is ready once subscribed to `publishers`
/// broadcasts (ignored for a publisher).
pub async fn run(
    role: Role,
    ticket: Ticket,
    publishers: usize,
    sha256: Option<[u8; 32]>,
    ctx: Context,
) -> Outcome {
    let permit = ctx.connecting.clone().acquire_owned().await;
    let Some(url) = ticket.quic.clone() else {
        return Outcome::failed(role, None, "the server has no QUIC URL".into(), &ctx.live);
    };
    let Some(sha256) = ticket.quic_sha256.or(sha256) else {
        return Outcome::failed(role, None, "no QUIC certificate hash".into(), &ctx.live);
    };
    let started = Instant::now();
    let session = match tokio::time::timeout(
        CONNECT_TIMEOUT,
        veza_client::net::dial(&url, &format!("jwt={}", ticket.token), sha256),
    )
    .await
    {
        Ok(Ok(session)) => session,
        Ok(Err(err)) => return Outcome::failed(role, None, err.to_string(), &ctx.live),
        Err(_) => {
            return Outcome::failed(
                role,
                None,
                format!("no QUIC session within {CONNECT_TIMEOUT:?}"),
                &ctx.live,
            );
        }
    };
    let connect = started.elapsed();
    let result = match role {
        Role::Publisher => publish(&session, permit, &ctx).await.map(|()| None),
        Role::Subscriber => subscribe(&session, publishers, permit, &ctx)
            .await
            .map(Some),
    };
    session.close(veza_moq::code::session::NO_ERROR, "loadtest finished");
    match result {
        Ok(measured) => Outcome {
            role,
            connect: Some(connect),
            measured: measured.unwrap_or_default(),
            error: None,
        },
        Err(err) => Outcome::failed(role, Some(connect), err, &ctx.live),
    }
}

async fn publish<P>(session: &Session, permit: P, ctx: &Context) -> Result<(), String> {
    let writer = session.publisher().publish(
        "loadtest",
        AudioInfo {
            track: "audio".into(),
            channels: tone::CHANNELS,
            bitrate: Some(tone::BITRATE),
        },
    );
    // Ready once the server subscribed to the broadcast.
    let give_up = Instant::now() + CONNECT_TIMEOUT;
    let mut stop = ctx.stop.clone();
    while writer.subscribers() == 0 {
        if Instant::now() > give_up {
            return Err(format!(
                "the server did not subscribe within {CONNECT_TIMEOUT:?}"
            ));
        }
        tokio::select! {
            () = Context::stopped(&mut stop) => return Ok(()),
            reason = session.closed() => return Err(format!("session closed: {reason}")),
            () = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    }
    drop(permit);
    ctx.live.publishers_ready.fetch_add(1, Ordering::Relaxed);
    let mut buf = Vec::with_capacity(512);
    let mut next = Instant::now();
    for group in 0u64.. {
        // On schedule, catching up after a short stall; after a long one, afresh.
        if next.elapsed() > MAX_BEHIND {
            next = Instant::now();
        }
        tokio::select! {
            biased;
            () = Context::stopped(&mut stop) => break,
            reason = session.closed() => return Err(format!("session closed: {reason}")),
            () = tokio::time::sleep_until(next.into()) => {}
        }
        next += FRAME;
        let frame = &ctx.packets[(group % ctx.packets.len() as u64) as usize];
        if payload::stamp(frame, clock::now_us(), &mut buf).is_ok() {
            writer.write(
                group,
                group * FRAME.as_micros() as u64,
                Bytes::copy_from_slice(&buf),
            );
            ctx.live.sent.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

async fn subscribe<P>(
    session: &Session,
    publishers: usize,
    permit: P,
    ctx: &Context,
) -> Result<Measurements, String> {
    let subscriber = session.subscriber();
    let mut announcements = subscriber
        .announced("")
        .await
        .map_err(|e| format!("announcements: {e}"))?;
    let mut permit = Some(permit);
    let mut readers = JoinSet::new();
    let mut subscribed = 0;
    let mut stop = ctx.stop.clone();
    let give_up = tokio::time::sleep(CONNECT_TIMEOUT);
    tokio::pin!(give_up);
    let mut error = None;
    loop {
        tokio::select! {
            biased;
            () = Context::stopped(&mut stop) => break,
            reason = session.closed() => {
                error = Some(format!("session closed: {reason}"));
                break;
            }
            () = &mut give_up, if permit.is_some() => {
                error = Some(format!(
                    "subscribed to {subscribed} of {publishers} broadcasts within {CONNECT_TIMEOUT:?}"
                ));
                break;
            }
            next = announcements.next() => match next {
                Ok(Some(announcement)) if announcement.active => {
                    match subscriber.subscribe_audio(&announcement.path, MAX_LATENCY).await {
                        Ok(track) => {
                            readers.spawn(read(track, ctx.live.clone(), ctx.stop.clone()));
                            subscribed += 1;
                        }
                        Err(err) => {
                            error = Some(format!("subscribing to {}: {err}", announcement.path));
                            break;
                        }
                    }
                    if subscribed >= publishers && permit.take().is_some() {
                        ctx.live.subscribers_ready.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    // No more announcements; keep reading what we have.
                    Context::stopped(&mut stop).await;
                    break;
                }
                Err(err) => {
                    error = Some(format!("announcements: {err}"));
                    break;
                }
            },
        }
    }
    let mut measured = Measurements::default();
    if error.is_some() {
        readers.abort_all();
    }
    while let Some(done) = readers.join_next().await {
        if let Ok(track) = done {
            measured.merge(&track);
        }
    }
    match error {
        Some(err) => Err(err),
        None => Ok(measured),
    }
}

/// Reads one subscribed track until the run stops or the broadcast ends.
async fn read(
    mut track: veza_moq::session::AudioTrack,
    live: Arc<crate::live::Live>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Measurements {
    let mut meter = Meter::new(live);
    loop {
        tokio::select! {
            biased;
            () = Context::stopped(&mut stop) => break,
            frame = track.next() => match frame {
                Some(frame) => meter.group(frame.group, &frame.payload, clock::now_us()),
                None => break,
            },
        }
    }
    meter.finish()
}
