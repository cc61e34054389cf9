//! `veza`: the one binary of the Veza platform.
//!
//! `veza serve` runs everything in one process on embedded defaults (SQLite and a JWT key in the
//! data folder, in-process rate limits, registry and chat fan-out); with
//! `DATABASE_URL=postgres://…`, `REDIS_URL` and `NATS_URL` the same binary is one node of a
//! cluster, and `veza api` / `veza media` run the two halves separately.

mod client;
mod config;
mod control;
mod loadtest;
mod node;
mod web;

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use veza_api::{AppState, KeyRing, Placement};
use veza_chat::ChatBus;
use veza_cluster::{NodeInfo, NodeRegistry, RateLimiter};
use veza_proto::MediaClaims;
use veza_sfu::engine::Config as EngineConfig;
use veza_sfu::quic::{CertStore, Certificate, QuicConfig, QuicServer};
use veza_sfu::relay::{CascadeKey, Relay};
use veza_sfu::webrtc::{MediaConfig, MediaMetrics, MediaServer};
use veza_signaling::{Signaling, TokenVerifier};
use veza_store::Store;

use crate::config::{Config, LogFormat};

/// Veza: real-time audio rooms.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// A TOML configuration file (see veza.example.toml).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log format (overrides VEZA_LOG_FORMAT).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    /// Data folder (overrides VEZA_DATA_DIR).
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Database URL (overrides DATABASE_URL).
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

/// Where a server listens, over the configuration.
#[derive(Debug, Clone, clap::Args)]
struct ServeArgs {
    /// Where HTTP listens (overrides VEZA_HTTP_ADDR).
    #[arg(long, value_name = "ADDR")]
    http_addr: Option<SocketAddr>,
    /// The URL clients reach this node at (overrides VEZA_PUBLIC_URL).
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole platform in this process (API and media).
    Serve(ServeArgs),
    /// Run only the REST API (and the web client): stateless, any number behind a load
    /// balancer; joins are placed on the media nodes in the registry. Needs REDIS_URL and
    /// NATS_URL.
    Api(ServeArgs),
    /// Run only a media node: signaling, WebRTC, QUIC, chat delivery and the cascade to other
    /// nodes. Needs REDIS_URL and NATS_URL.
    Media(ServeArgs),
    /// Apply database migrations and exit.
    Migrate,
    /// Administer users.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Manage JWT signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// TURN (coturn) helpers for local tests and development.
    Turn {
        #[command(subcommand)]
        command: TurnCommand,
    },
    /// Broadcast an audio file (or live PCM from stdin) into a room over QUIC.
    Broadcast(client::BroadcastArgs),
    /// Listen to a room over QUIC and write WAV or Ogg Opus.
    Listen(client::ListenArgs),
    /// Load-test a running server with many WebRTC or QUIC peers, or measure this machine.
    Loadtest(loadtest::LoadtestArgs),
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Make a user an admin (may read the audit log).
    Grant {
        /// The user's name.
        username: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Start signing with a new key; old keys verify until their tokens expire.
    Rotate,
}

#[derive(Debug, Subcommand)]
enum TurnCommand {
    /// Print a coturn configuration for local tests and development to stdout.
    ///
    /// coturn listens on 127.0.0.1 only, without TLS, allows loopback peers and logs verbosely
    /// to stdout; use it with `turnserver -c FILE`. Never use it in production: render the
    /// production template instead (see docs/operations.md).
    LocalConf {
        /// The UDP and TCP port coturn listens on, on 127.0.0.1.
        #[arg(long)]
        port: u16,
        /// The shared TURN REST API secret; give veza the same value in VEZA_TURN_SECRET.
        #[arg(long)]
        secret: String,
        /// The authentication realm.
        #[arg(long, default_value = "veza.local")]
        realm: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Needs no configuration, no logging and no runtime: print and leave.
    if let Command::Turn {
        command:
            TurnCommand::LocalConf {
                port,
                secret,
                realm,
            },
    } = &cli.command
    {
        if secret.contains(['\n', '\r']) || realm.contains(['\n', '\r']) {
            anyhow::bail!("the TURN secret and realm must not contain line breaks");
        }
        print!("{}", veza_turn::local_test_conf(*port, secret, realm));
        return Ok(());
    }
    // The client commands need no server configuration.
    let command = match cli.command {
        Command::Broadcast(args) => return client::broadcast(args),
        Command::Listen(args) => return client::listen(args),
        Command::Loadtest(args) => return loadtest::loadtest(args),
        other => other,
    };
    let mut config = Config::from_file(cli.config.as_deref())?;
    let unknown_env = config.apply_env(std::env::vars())?;
    if let Some(format) = cli.log_format {
        config.log_format = format;
    }
    if let Some(dir) = &cli.data_dir {
        config.data_dir.clone_from(dir);
    }
    if let Some(url) = &cli.database_url {
        config.database_url = Some(url.clone());
    }
    let role = match &command {
        Command::Serve(args) => Some((Role::All, args)),
        Command::Api(args) => Some((Role::Api, args)),
        Command::Media(args) => Some((Role::Media, args)),
        _ => None,
    };
    if let Some((role, args)) = role {
        if let Some(addr) = args.http_addr {
            config.http_addr = addr;
        }
        if let Some(url) = &args.public_url {
            config.public_url = Some(url.clone());
        }
        if role != Role::All && (config.redis_url.is_none() || config.nats_url.is_none()) {
            anyhow::bail!(
                "`veza api` and `veza media` are cluster roles: set REDIS_URL and NATS_URL \
                 (or run everything with `veza serve`)"
            );
        }
        // Placement may put one room on several media nodes; without the secret they could
        // not cascade it, and people on different nodes would not hear each other.
        if role == Role::Media && config.cluster_secret.is_none() {
            anyhow::bail!(
                "`veza media` needs VEZA_CLUSTER_SECRET (the same on every media node) to \
                 cascade rooms between nodes"
            );
        }
    }
    config.validate().context("invalid configuration")?;
    init_logging(config.log_format);
    if config.redis_url.is_some() && config.cluster_secret.is_none() {
        tracing::warn!(
            "REDIS_URL without VEZA_CLUSTER_SECRET: rooms placed on several nodes are not \
             cascaded between them"
        );
    }
    for name in unknown_env {
        tracing::warn!(variable = %name, "unknown VEZA_ environment variable ignored");
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match command {
            Command::Serve(_) => serve(config, Role::All).await,
            Command::Api(_) => serve(config, Role::Api).await,
            Command::Media(_) => serve(config, Role::Media).await,
            Command::Migrate => {
                let store = open_store(&config).await?;
                store.close().await;
                println!("migrations applied to {}", redact(&config.database_url()));
                Ok(())
            }
            Command::Admin {
                command: AdminCommand::Grant { username },
            } => {
                let store = open_store(&config).await?;
                let user = match store.grant_admin(&username).await {
                    Err(veza_store::StoreError::NotFound) => {
                        anyhow::bail!("no user named {username:?}")
                    }
                    other => other.with_context(|| format!("granting admin to {username:?}"))?,
                };
                store.close().await;
                println!("{} ({}) is now an admin", user.username, user.id);
                Ok(())
            }
            Command::Keys {
                command: KeysCommand::Rotate,
            } => {
                let path = config.jwt_keys_file();
                let retain = config.api().key_retention();
                // Make sure a key file exists, then add a new key to it.
                KeyRing::load_or_create(&path, &config.jwt_issuer())?;
                let kid = KeyRing::rotate_file(&path, retain)?;
                println!(
                    "new signing key {kid} in {}; running servers pick it up within 30 s",
                    path.display()
                );
                Ok(())
            }
            Command::Turn { .. }
            | Command::Broadcast(_)
            | Command::Listen(_)
            | Command::Loadtest(_) => {
                unreachable!("handled before the configuration is read")
            }
        }
    })
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Pretty => builder.init(),
    }
}

/// A URL with any password replaced, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

async fn open_store(config: &Config) -> anyhow::Result<Store> {
    // The data folder holds the database and the signing keys: owner-only.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.data_dir)
        .with_context(|| format!("creating data folder {}", config.data_dir.display()))?;
    let url = config.database_url();
    let store = Store::connect(&url)
        .await
        .with_context(|| format!("connecting to {}", redact(&url)))?;
    store.migrate().await.context("running migrations")?;
    Ok(store)
}

/// Which halves of the platform a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// `veza serve`: API and media.
    All,
    /// `veza api`.
    Api,
    /// `veza media`.
    Media,
}

async fn serve(config: Config, role: Role) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    let keys = match role {
        // The API creates the key file; a media node only reads it (and may start first).
        Role::Media => wait_for_keys(&config).await?,
        Role::All | Role::Api => {
            KeyRing::load_or_create(&config.jwt_keys_file(), &config.jwt_issuer())?
        }
    };
    let limiter = match &config.redis_url {
        Some(url) => RateLimiter::redis(url, "veza:rl:")
            .await
            .with_context(|| format!("connecting to Redis at {}", redact(url)))?,
        None => RateLimiter::memory(),
    };
    let registry = match &config.redis_url {
        Some(url) => NodeRegistry::redis(url, &format!("{}:", config.cluster_name))
            .await
            .with_context(|| format!("connecting to Redis at {}", redact(url)))?,
        None => NodeRegistry::memory(),
    };
    let nats = match &config.nats_url {
        Some(url) => Some(
            async_nats::connect(url.as_str())
                .await
                .with_context(|| format!("connecting to NATS at {}", redact(url)))?,
        ),
        None => None,
    };
    let bus = match &config.nats_url {
        Some(url) => ChatBus::nats(url, store.clone())
            .await
            .with_context(|| format!("connecting chat to NATS at {}", redact(url)))?,
        None => ChatBus::local(),
    };
    let chat = veza_api::ChatService::with_bus(store.clone(), config.chat(), bus);
    let state = AppState::new(config.api(), store.clone(), keys, limiter, chat);
    spawn_housekeeping(state.clone());
    if role != Role::Media {
        state.set_placement(Placement {
            registry: registry.clone(),
            max_participants: config.node_max_participants,
        });
    }

    let listener = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding {}", config.http_addr))?;
    let local = listener.local_addr()?;
    let media = match role {
        Role::Api => None,
        Role::All | Role::Media => Some(start_media(&config, &state, registry).await?),
    };
    state.set_media_control(control::Control::new(
        nats.clone(),
        media.as_ref().map(|(local, _)| local.clone()),
    ));
    if let (Some(nats), Some((local, _))) = (&nats, &media) {
        control::Control::listen(nats, local.clone()).await?;
    }
    let app = match (&media, role) {
        (Some((local, _)), Role::Media) => veza_api::ops_router(state.clone())
            .merge(veza_signaling::router(local.signaling.clone())),
        (Some((local, _)), _) => veza_api::router(state.clone())
            .merge(veza_signaling::router(local.signaling.clone()))
            .merge(web::router()),
        (None, _) => veza_api::router(state.clone()).merge(web::router()),
    };
    tracing::info!(
        addr = %local,
        role = ?role,
        public_url = %config.public_url(),
        database = %redact(&config.database_url()),
        redis = config.redis_url.is_some(),
        nats = config.nats_url.is_some(),
        "veza is serving"
    );
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = http_stopped.await;
        })
        .into_future(),
    );
    shutdown_signal().await;
    state.start_draining();
    // Draining sends clients to other nodes; a node without a cluster (no Redis registry)
    // has none to send them to, and stops at once.
    if let Some((local, node)) = &media
        && config.redis_url.is_some()
    {
        drain(&config, local, node).await;
    }
    let _ = stop_http.send(());
    match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(result)) => result.context("serving HTTP")?,
        Ok(Err(err)) => tracing::warn!(%err, "the HTTP server task failed"),
        Err(_) => tracing::warn!("open HTTP connections did not close within 5 s"),
    }
    if let Some((local, _)) = &media {
        local.quic.close();
    }
    store.close().await;
    tracing::info!("veza stopped");
    Ok(())
}

/// Starts WebRTC, QUIC, signaling and the cascade, and registers the node.
async fn start_media(
    config: &Config,
    state: &AppState,
    registry: NodeRegistry,
) -> anyhow::Result<(control::LocalMedia, node::MediaNode)> {
    // Media and signaling metrics are served with the API's at /metrics.
    let media_metrics = MediaMetrics::new();
    media_metrics
        .register(state.metrics.registry())
        .context("registering media metrics")?;
    let media = MediaServer::start(
        MediaConfig {
            udp_addr: config.rtc_udp_addr,
            announce_ips: config.rtc_public_ips.clone(),
            reconnect_grace: RECONNECT_GRACE,
            shards: config.rtc_shards(),
        },
        EngineConfig {
            // Start values of sequence numbers and timestamps differ from run to run
            // (RFC 3550 §5.1).
            seed: random_seed(),
            ..EngineConfig::default()
        },
        media_metrics,
    )
    .await
    .with_context(|| format!("starting WebRTC media on {}", config.rtc_udp_addr))?;
    let tokens = Arc::new(MediaTokens(state.clone()));
    let cascade = config
        .cluster_secret
        .as_ref()
        .map(|secret| CascadeKey::new(secret.as_bytes()));
    let quic = start_quic(config, media.clone(), tokens.clone(), cascade.clone())?;
    let id = config.node_id.clone().unwrap_or_else(|| {
        veza_proto::ParticipantId::new()
            .to_string()
            .replace('-', "")
    });
    let signaling = Signaling::new(
        media.clone(),
        tokens,
        Some(state.chat.clone()),
        RECONNECT_GRACE,
    );
    // Presence, speaking, mutes and moderation cross nodes over NATS.
    if let Some(url) = &config.nats_url {
        signaling
            .join_cluster(url, veza_signaling::ClusterConfig::new(id.clone()))
            .await
            .with_context(|| {
                format!("joining the signaling cluster over NATS at {}", redact(url))
            })?;
    }
    let quic_url = config.quic_public_url_on(quic.local_addr().port());
    let relay = cascade.map(|key| Relay::new(id.clone(), key, media.clone()));
    let node = node::MediaNode::new(
        registry,
        NodeInfo {
            id,
            http_url: config.public_url(),
            quic_url: Some(quic_url.clone()),
            quic_sha256: None,
            cascade_url: config.cascade_url.clone(),
            udp_addr: media.local_addr().to_string(),
            participants: 0,
            packets_per_s: 0,
            cpu: 0.0,
            draining: false,
        },
        media,
        quic.clone(),
        relay,
    );
    node.start().await?;
    Ok((
        control::LocalMedia {
            signaling,
            quic,
            quic_url,
        },
        node,
    ))
}

/// On SIGTERM a media node stops taking rooms, sends its clients elsewhere (signaling
/// `reconnect`, QUIC GOAWAY) and waits until they are gone or the drain timeout passes.
async fn drain(config: &Config, local: &control::LocalMedia, node: &node::MediaNode) {
    let timeout = Duration::from_secs(config.drain_timeout_secs);
    tracing::info!(node = node.id(), ?timeout, "draining");
    node.drain().await;
    local.signaling.drain("draining");
    local.quic.drain();
    let deadline = tokio::time::Instant::now() + timeout;
    // The live counts lag by up to a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    loop {
        let left = node.participants();
        if left == 0 {
            tracing::info!("drained: no participant left");
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                participants = left,
                "drain timeout: exiting with participants left"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    node.deregister().await;
}

/// Waits up to 30 s for the JWT key file the API creates.
async fn wait_for_keys(config: &Config) -> anyhow::Result<KeyRing> {
    let path = config.jwt_keys_file();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "no JWT key file at {} after 30 s: start `veza api` first, or run `veza keys rotate`",
                path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(KeyRing::load_or_create(&path, &config.jwt_issuer())?)
}

/// Starts moq-lite over QUIC with the configured certificate, or a self-signed one that is
/// renewed before it expires.
fn start_quic(
    config: &Config,
    media: MediaServer,
    tokens: Arc<MediaTokens>,
    cascade: Option<CascadeKey>,
) -> anyhow::Result<QuicServer> {
    let certificate = match (&config.quic_cert, &config.quic_key) {
        (Some(chain), Some(key)) => Certificate::from_pem_files(chain, key)?,
        _ => Certificate::self_signed(&quic_names(config))?,
    };
    let store = CertStore::new(certificate, quic_names(config));
    store.spawn_renewal();
    QuicServer::start(
        QuicConfig {
            addr: config.quic_addr,
            certificate: store,
            idle_timeout: Duration::from_secs(30),
            cascade,
        },
        media,
        tokens,
    )
    .with_context(|| format!("starting QUIC on {}", config.quic_addr))
}

/// The names a self-signed QUIC certificate is made for.
fn quic_names(config: &Config) -> Vec<String> {
    let url = config.quic_public_url();
    let host = url
        .trim_start_matches("https://")
        .rsplit_once(':')
        .map_or(url.as_str(), |(host, _)| host)
        .trim_matches(['[', ']'])
        .to_owned();
    let mut names = vec![host];
    if !names.iter().any(|n| n == "localhost") {
        names.push("localhost".into());
    }
    names
}

/// A random seed from the standard library's per-process random hasher keys.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

/// How long a participant whose connection dropped is kept for a reconnect.
const RECONNECT_GRACE: Duration = Duration::from_secs(30);

/// Media tokens are checked with the API's key ring.
struct MediaTokens(AppState);

impl TokenVerifier for MediaTokens {
    fn verify_media(&self, token: &str) -> Result<MediaClaims, String> {
        self.0.keys.verify_media(token).map_err(|e| e.to_string())
    }
}

/// Background chores: pick up rotated keys, purge expired refresh tokens.
fn spawn_housekeeping(state: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(veza_api::RELOAD_INTERVAL);
        let mut ticks: u64 = 0;
        loop {
            tick.tick().await;
            if let Err(err) = state.keys.reload_if_changed() {
                tracing::error!(%err, "could not reload JWT keys; keeping the old ones");
            }
            // About hourly.
            if ticks.is_multiple_of(120) {
                match state
                    .store
                    .purge_expired_refresh_tokens(veza_store::now_ms())
                    .await
                {
                    Ok(n) if n > 0 => tracing::info!(purged = n, "expired refresh tokens removed"),
                    Ok(_) => {}
                    Err(err) => tracing::warn!(%err, "could not purge refresh tokens"),
                }
            }
            ticks += 1;
        }
    });
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            super::redact("postgres://veza:hunter2@db:5432/veza"),
            "postgres://veza:***@db:5432/veza"
        );
        assert_eq!(
            super::redact("sqlite://./veza-data/veza.db"),
            "sqlite://./veza-data/veza.db"
        );
    }
}
