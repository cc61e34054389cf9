//! What every peer task gets and gives back, whatever its transport.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};

use crate::api::Api;
use crate::live::Live;
use crate::stats::Measurements;

/// How long a peer may take from its first request to being ready.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Publisher or subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Sends the tone.
    Publisher,
    /// Receives every publisher of its room and measures.
    Subscriber,
}

/// Shared by every peer of a run.
#[derive(Debug, Clone)]
pub struct Context {
    /// The HTTP API (WHIP/WHEP).
    pub api: Api,
    /// Counters and the measurement window.
    pub live: Arc<Live>,
    /// The pre-encoded tone, cycled.
    pub packets: Arc<[Vec<u8>]>,
    /// Limits how many peers connect at once.
    pub connecting: Arc<Semaphore>,
    /// Becomes `true` when the run ends.
    pub stop: watch::Receiver<bool>,
    /// On stop, vanish (no `DELETE`, no DTLS close) instead of ending the session: what the
    /// misbehaving clients do.
    pub vanish: bool,
}

/// Resolves once `flag` is `value` (at once if it is), or its sender is gone. The guard
/// `wait_for` returns is dropped inside, so callers' futures stay `Send`.
pub async fn until(flag: &mut watch::Receiver<bool>, value: bool) {
    let _ = flag.wait_for(|now| *now == value).await;
}

impl Context {
    /// Resolves when the run ends.
    pub async fn stopped(stop: &mut watch::Receiver<bool>) {
        // An error means the coordinator is gone: stop too.
        let _ = stop.wait_for(|stop| *stop).await;
    }
}

/// What one peer did.
#[derive(Debug)]
pub struct Outcome {
    /// Its role.
    pub role: Role,
    /// From its offer (WebRTC) or QUIC dial to connected; `None` if it never connected.
    pub connect: Option<Duration>,
    /// What it received (subscribers).
    pub measured: Measurements,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

impl Outcome {
    /// A peer that failed with `error`.
    pub fn failed(role: Role, connect: Option<Duration>, error: String, live: &Live) -> Self {
        live.failed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self {
            role,
            connect,
            measured: Measurements::default(),
            error: Some(error),
        }
    }
}
