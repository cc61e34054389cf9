//! `veza`: the one binary of the Veza platform.
//!
//! `veza serve` runs everything in one process on embedded defaults (SQLite and a JWT key in the
//! data folder, in-process rate limits); with `DATABASE_URL=postgres://…` and `REDIS_URL` the
//! same binary serves as one node of a cluster.

mod client;
mod config;
mod loadtest;
mod web;

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use veza_api::{AppState, KeyRing};
use veza_cluster::RateLimiter;
use veza_proto::MediaClaims;
use veza_sfu::engine::{Config as EngineConfig, Engine};
use veza_sfu::quic::{CertStore, Certificate, QuicConfig, QuicServer};
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

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole platform in this process.
    Serve {
        /// Where the HTTP API listens (overrides VEZA_HTTP_ADDR).
        #[arg(long, value_name = "ADDR")]
        http_addr: Option<SocketAddr>,
        /// The URL clients reach this node at (overrides VEZA_PUBLIC_URL).
        #[arg(long, value_name = "URL")]
        public_url: Option<String>,
    },
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
    if let Command::Serve {
        http_addr,
        public_url,
    } = &command
    {
        if let Some(addr) = http_addr {
            config.http_addr = *addr;
        }
        if let Some(url) = public_url {
            config.public_url = Some(url.clone());
        }
    }
    config.validate().context("invalid configuration")?;
    init_logging(config.log_format);
    for name in unknown_env {
        tracing::warn!(variable = %name, "unknown VEZA_ environment variable ignored");
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match command {
            Command::Serve { .. } => serve(config).await,
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

async fn serve(config: Config) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    let keys = KeyRing::load_or_create(&config.jwt_keys_file(), &config.jwt_issuer())?;
    let limiter = match &config.redis_url {
        Some(url) => RateLimiter::redis(url, "veza:rl:")
            .await
            .with_context(|| format!("connecting to Redis at {}", redact(url)))?,
        None => RateLimiter::memory(),
    };
    let chat = veza_api::ChatService::new(store.clone(), config.chat());
    let state = AppState::new(config.api(), store.clone(), keys, limiter, chat);
    spawn_housekeeping(state.clone());

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
        },
        Engine::new(EngineConfig {
            // Start values of sequence numbers and timestamps differ from run to run
            // (RFC 3550 §5.1).
            seed: random_seed(),
            ..EngineConfig::default()
        }),
        media_metrics,
    )
    .await
    .with_context(|| format!("starting WebRTC media on {}", config.rtc_udp_addr))?;
    let tokens = Arc::new(MediaTokens(state.clone()));
    let quic = start_quic(&config, media.clone(), tokens.clone())?;
    let signaling = Signaling::new(media, tokens, Some(state.chat.clone()), RECONNECT_GRACE);

    let listener = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding {}", config.http_addr))?;
    let local = listener.local_addr()?;
    tracing::info!(
        addr = %local,
        public_url = %config.public_url(),
        database = %redact(&config.database_url()),
        redis = config.redis_url.is_some(),
        nats = config.nats_url.is_some(),
        "veza is serving"
    );
    state.set_media_control(Arc::new(SignalingControl {
        signaling: signaling.clone(),
        quic_url: config.quic_public_url_on(quic.local_addr().port()),
        quic: quic.clone(),
    }));
    let app = veza_api::router(state)
        .merge(veza_signaling::router(signaling))
        .merge(web::router());
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .context("serving HTTP")?;
    quic.close();
    store.close().await;
    tracing::info!("veza stopped");
    Ok(())
}

/// Starts moq-lite over QUIC with the configured certificate, or a self-signed one that is
/// renewed before it expires.
fn start_quic(
    config: &Config,
    media: MediaServer,
    tokens: Arc<MediaTokens>,
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

/// REST moderation reaches the media path through signaling.
#[derive(Debug)]
struct SignalingControl {
    signaling: Signaling,
    quic: QuicServer,
    quic_url: String,
}

impl veza_api::MediaControl for SignalingControl {
    fn remove_user(&self, room: veza_proto::RoomId, user: veza_proto::UserId) {
        self.signaling.remove_user(room, user);
        self.quic.remove_user(room, user);
    }

    fn room_live(&self, room: veza_proto::RoomId) -> (u32, u32) {
        self.quic
            .media()
            .room_live(room)
            .map_or((0, 0), |live| (live.participants, live.publishers))
    }

    fn quic_endpoint(&self) -> Option<veza_api::QuicEndpoint> {
        Some(veza_api::QuicEndpoint {
            url: self.quic_url.clone(),
            sha256: self.quic.certificate().sha256_hex(),
        })
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
