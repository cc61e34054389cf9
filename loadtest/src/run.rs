//! The coordinator of a run: setup, publishers, subscribers, the measured window, the report.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::api::{self, Api};
use crate::live::Live;
use crate::peer::{CONNECT_TIMEOUT, Context, Outcome, Role};
use crate::report::Report;
use crate::{Error, Options, Transport, clock, misbehave, proc, progress, quic, tone, webrtc, ws};

/// Time after every peer is ready before measuring starts, so start-up transients settle.
const SETTLE: Duration = Duration::from_millis(500);
/// How long peers get to wind down after the window.
const WIND_DOWN: Duration = Duration::from_secs(10);

/// Collects every peer task's outcome after the stop signal; tasks still running after
/// [`WIND_DOWN`] are aborted. A task that panicked or was aborted becomes `failed(error)`. Then
/// the progress line stops.
pub(crate) async fn gather<T: Send + 'static>(
    tasks: &mut JoinSet<T>,
    progress_stop: watch::Sender<bool>,
    progress: Option<tokio::task::JoinHandle<()>>,
    failed: impl Fn(tokio::task::JoinError) -> T,
) -> Vec<T> {
    let mut outcomes = Vec::with_capacity(tasks.len());
    let wind_down = tokio::time::sleep(WIND_DOWN);
    tokio::pin!(wind_down);
    loop {
        tokio::select! {
            done = tasks.join_next() => match done {
                Some(Ok(outcome)) => outcomes.push(outcome),
                Some(Err(err)) => outcomes.push(failed(err)),
                None => break,
            },
            () = &mut wind_down => {
                tasks.abort_all();
                break;
            }
        }
    }
    progress_stop.send_replace(true);
    if let Some(progress) = progress {
        let _ = progress.await;
    }
    outcomes
}

/// Runs a load test and returns its figures.
pub fn run(options: &Options) -> Result<Report, Error> {
    if options.rooms == 0 || options.publishers == 0 || options.subscribers == 0 {
        return Err(Error::Setup(
            "--rooms, --publishers and --subscribers must be at least 1".into(),
        ));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.threads.max(1))
        .thread_name("veza-loadtest")
        .enable_all()
        .build()?;
    runtime.block_on(coordinate(options))
}

async fn coordinate(options: &Options) -> Result<Report, Error> {
    clock::start();
    let api = Api::new(&options.server)?;
    let server_addr = resolve(&options.server).await?;
    let prefix = format!("lt{:06x}", run_id() & 0xff_ffff);
    let plans = api::prepare(
        &api,
        &prefix,
        options.rooms,
        options.publishers,
        options.subscribers,
    )
    .await?;
    // In a cluster the API node serves no QUIC itself: each join names its node's hash.
    let sha256 = api.quic_certificate().await.ok();
    let packets: Arc<[Vec<u8>]> = tone::packets()?.into();
    let cert = webrtc::certificate();
    let local_ip = webrtc::local_ip_towards(server_addr);
    let misbehaving = if options.misbehave > 0 {
        let (access, _) = api.register(&format!("{prefix}-misbehave")).await?;
        let quic_sha256 = sha256;
        Some(misbehave::Setup {
            api: api.clone(),
            endpoint: Arc::new(ws::Endpoint::new(&options.server, server_addr)?),
            access,
            room: plans[0].id.clone(),
            sections: options.publishers,
            quic_sha256,
            local_ip,
            cert: cert.clone(),
            packets: packets.clone(),
        })
    } else {
        None
    };

    let live = Arc::new(Live::default());
    let (stop_tx, stop) = watch::channel(false);
    let (phase_tx, phase) = watch::channel("connecting");
    let ctx = Context {
        api: api.clone(),
        live: live.clone(),
        packets,
        connecting: Arc::new(Semaphore::new(options.concurrent_connects.max(1))),
        stop,
        vanish: false,
    };
    let total_publishers = options.rooms * options.publishers;
    let total_subscribers = options.rooms * options.subscribers;
    let (progress_stop, progress_stopped) = watch::channel(false);
    let progress = options.progress.then(|| {
        tokio::spawn(progress::show(
            live.clone(),
            progress::MEDIA,
            total_publishers,
            total_subscribers,
            phase,
            progress_stopped,
        ))
    });

    let spawn = |tasks: &mut JoinSet<Outcome>, role, ticket, publishers| {
        let ctx = ctx.clone();
        match options.transport {
            Transport::Quic => tasks.spawn(quic::run(role, ticket, publishers, sha256, ctx)),
            Transport::WebRtc => tasks.spawn(webrtc::run(
                role,
                ticket,
                publishers,
                local_ip,
                cert.clone(),
                ctx,
            )),
        };
    };
    let mut tasks = JoinSet::new();
    // Publishers first, so every subscriber finds them all.
    for plan in &plans {
        for ticket in &plan.publishers {
            spawn(
                &mut tasks,
                Role::Publisher,
                ticket.clone(),
                plan.publishers.len(),
            );
        }
    }
    let deadline = Instant::now() + connect_budget(total_publishers, options);
    wait_until(deadline, || {
        live.publishers_ready.load(Ordering::Relaxed) + live.failed.load(Ordering::Relaxed)
            >= total_publishers
    })
    .await;
    let failed_publishers = live.failed.load(Ordering::Relaxed);
    for plan in &plans {
        for ticket in &plan.subscribers {
            spawn(
                &mut tasks,
                Role::Subscriber,
                ticket.clone(),
                plan.publishers.len(),
            );
        }
    }
    let deadline = Instant::now() + connect_budget(total_subscribers, options);
    wait_until(deadline, || {
        live.subscribers_ready.load(Ordering::Relaxed) + live.failed.load(Ordering::Relaxed)
            - failed_publishers
            >= total_subscribers
    })
    .await;
    if live.subscribers_ready.load(Ordering::Relaxed) > 0 {
        tokio::time::sleep(SETTLE).await;
    }

    // The measured window.
    phase_tx.send_replace("measuring");
    let window = proc::Window::open(options.server_pid)?;
    let sent_before = live.sent.load(Ordering::Relaxed);
    let opened = clock::now_us();
    live.open_window(opened);
    // Nothing to measure without peers on both sides: end now, with the errors.
    let nobody = live.publishers_ready.load(Ordering::Relaxed) == 0
        || live.subscribers_ready.load(Ordering::Relaxed) == 0;
    let (misbehave_stop, misbehave_stopped) = watch::channel(false);
    let misbehaving = misbehaving.filter(|_| !nobody).map(|setup| {
        tokio::spawn(misbehave::run(
            options.misbehave,
            options.misbehave_pps,
            setup,
            misbehave_stopped,
        ))
    });
    if !nobody {
        tokio::time::sleep(options.duration).await;
    }
    let closed = clock::now_us();
    live.close_window(closed);
    misbehave_stop.send_replace(true);
    let usage = window.close()?;
    let sent = live.sent.load(Ordering::Relaxed) - sent_before;
    let duration = Duration::from_micros(closed - opened);

    let misbehaved = match misbehaving {
        Some(task) => Some(
            task.await
                .map_err(|e| e.to_string())
                .and_then(|stats| stats),
        ),
        None => None,
    };

    phase_tx.send_replace("stopping");
    stop_tx.send_replace(true);
    let outcomes = gather(&mut tasks, progress_stop, progress, |err| {
        Outcome::failed(Role::Subscriber, None, format!("peer task: {err}"), &live)
    })
    .await;

    let mut report = Report {
        transport: options.transport,
        rooms: options.rooms,
        publishers: options.publishers,
        subscribers: options.subscribers,
        duration,
        measured: Default::default(),
        connect_us: Vec::new(),
        publishers_connected: 0,
        subscribers_connected: 0,
        failed: 0,
        errors: Vec::new(),
        sent_pps: sent as f64 / duration.as_secs_f64().max(1e-9),
        server_cpu_seconds: usage.server_cpu_seconds,
        server_rss_bytes: usage.server_rss_bytes,
        loadtest_cpu_seconds: usage.loadtest_cpu_seconds,
        misbehaving_clients: options.misbehave,
        misbehaving: None,
    };
    report.outcomes(&outcomes);
    match misbehaved {
        Some(Ok(stats)) => report.misbehaving = Some(stats),
        Some(Err(err)) => report.errors.push(format!("misbehaving clients: {err}")),
        None => {}
    }
    Ok(report)
}

/// How long `peers` peers may take to get ready.
fn connect_budget(peers: usize, options: &Options) -> Duration {
    let waves = peers.div_ceil(options.concurrent_connects.max(1)) as u32;
    CONNECT_TIMEOUT + Duration::from_millis(200) * waves
}

async fn wait_until(deadline: Instant, mut done: impl FnMut() -> bool) {
    while !done() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The server's address from its base URL.
pub(crate) async fn resolve(server: &str) -> Result<SocketAddr, Error> {
    let rest = server
        .strip_prefix("http://")
        .or_else(|| server.strip_prefix("https://"))
        .ok_or_else(|| Error::Setup(format!("--server {server} is not an http(s) URL")))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_owned()
    } else if server.starts_with("https://") {
        format!("{authority}:443")
    } else {
        format!("{authority}:80")
    };
    tokio::net::lookup_host(&with_port)
        .await
        .map_err(|e| Error::Setup(format!("resolving {authority}: {e}")))?
        .next()
        .ok_or_else(|| Error::Setup(format!("{authority} has no address")))
}

/// A number that differs from run to run, for unique user names.
pub(crate) fn run_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}
