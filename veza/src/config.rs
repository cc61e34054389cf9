//! The one typed configuration of the binary: defaults → TOML file (`--config`) → environment
//! → flags, then [`Config::validate`]. Unknown keys in the file are rejected.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, for log shippers.
    Json,
    /// Human-readable lines.
    Pretty,
}

impl FromStr for LogFormat {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "json" => Ok(LogFormat::Json),
            "pretty" => Ok(LogFormat::Pretty),
            _ => bail!("expected json or pretty, got {s:?}"),
        }
    }
}

/// Every setting of `veza`. See `veza.example.toml` for each one's meaning.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `VEZA_HTTP_ADDR`: where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// `VEZA_DATA_DIR`: SQLite database, JWT keys.
    pub data_dir: PathBuf,
    /// `DATABASE_URL`: `postgres://…` or `sqlite://…`; default a SQLite file in the data dir.
    pub database_url: Option<String>,
    /// `REDIS_URL`: shared rate limits (and, later, placement and presence).
    pub redis_url: Option<String>,
    /// `NATS_URL`: the event bus of a cluster.
    pub nats_url: Option<String>,
    /// `VEZA_PUBLIC_URL`: how clients reach this node; default `http://<http_addr>`.
    pub public_url: Option<String>,
    /// `VEZA_RATE_LIMIT_PER_MIN`: API requests per minute per IP.
    pub rate_limit_per_min: u32,
    /// `VEZA_AUTH_RATE_LIMIT_PER_MIN`: `/api/v1/auth/*` requests per minute per IP.
    pub auth_rate_limit_per_min: u32,
    /// `VEZA_LOG_FORMAT`: `json` or `pretty`.
    pub log_format: LogFormat,
    /// `VEZA_CORS_ORIGINS`: comma-separated origins allowed to call the API from a browser.
    pub cors_origins: Vec<String>,
    /// `VEZA_MAX_BODY_BYTES`: largest accepted request body.
    pub max_body_bytes: usize,
    /// `VEZA_ACCESS_TOKEN_TTL_SECS`: access-token lifetime.
    pub access_token_ttl_secs: u64,
    /// `VEZA_REFRESH_TOKEN_TTL_SECS`: refresh-token lifetime.
    pub refresh_token_ttl_secs: u64,
    /// `VEZA_MEDIA_TOKEN_TTL_SECS`: media (join) token lifetime.
    pub media_token_ttl_secs: u64,
    /// `VEZA_JWT_KEYS_FILE`: the signing-key file; default `<data_dir>/jwt-keys.json`.
    pub jwt_keys_file: Option<PathBuf>,
    /// `VEZA_JWT_ISSUER`: the `iss` of every token; default the public URL. Every node of a
    /// cluster must use the same one.
    pub jwt_issuer: Option<String>,
    /// `VEZA_STUN_URLS`: comma-separated STUN URLs handed to clients.
    pub stun_urls: Vec<String>,
    /// `VEZA_TURN_URLS`: comma-separated coturn URLs (`turn:host:3478?transport=udp`, …).
    pub turn_urls: Vec<String>,
    /// `VEZA_TURN_SECRET`: coturn's `static-auth-secret`.
    pub turn_secret: Option<String>,
    /// `VEZA_TURN_TTL_SECS`: lifetime of TURN credentials.
    pub turn_ttl_secs: u64,
    /// `VEZA_RTC_UDP_ADDR`: the one UDP socket of every WebRTC peer.
    pub rtc_udp_addr: SocketAddr,
    /// `VEZA_RTC_SHARDS`: media shards, each a task with its own UDP port counted up from
    /// `rtc_udp_addr`'s; 0 (the default) is one per CPU core.
    pub rtc_shards: usize,
    /// `VEZA_RTC_PUBLIC_IPS`: comma-separated IPs announced as ICE host candidates; default
    /// the bound IP, or 127.0.0.1 and the default route's address.
    pub rtc_public_ips: Vec<IpAddr>,
    /// `VEZA_QUIC_ADDR`: the UDP address of moq-lite over QUIC and WebTransport.
    pub quic_addr: SocketAddr,
    /// `VEZA_QUIC_PUBLIC_URL`: how clients reach the QUIC endpoint (`https://host:port`);
    /// default the public URL's host on the QUIC port.
    pub quic_public_url: Option<String>,
    /// `VEZA_QUIC_CERT`: PEM certificate chain for QUIC; default a self-signed certificate
    /// (13 days, renewed) whose hash the API serves for WebTransport.
    pub quic_cert: Option<PathBuf>,
    /// `VEZA_QUIC_KEY`: the PEM private key of `quic_cert`.
    pub quic_key: Option<PathBuf>,
    /// `VEZA_CHAT_BLOCKED_WORDS`: comma-separated words and phrases refused in chat messages
    /// (without case, on word boundaries).
    pub chat_blocked_words: Vec<String>,
    /// `VEZA_CLUSTER_SECRET`: authenticates media nodes to each other (the cascade); the same
    /// long random string on every node. Without it a node neither pulls nor serves pulls.
    pub cluster_secret: Option<String>,
    /// `VEZA_CASCADE_URL`: where other media nodes reach this node's QUIC endpoint for the
    /// cascade (`https://host:port`, usually a private address); default the public QUIC URL.
    pub cascade_url: Option<String>,
    /// `VEZA_CLUSTER_NAME`: the nodes sharing this name (and Redis) form one cluster; it
    /// prefixes the registry's Redis keys. Default `veza`.
    pub cluster_name: String,
    /// `VEZA_NODE_ID`: this media node's id in the registry; default a random one per start.
    pub node_id: Option<String>,
    /// `VEZA_NODE_MAX_PARTICIPANTS`: a room's later joiners go to its home node until that
    /// node holds this many participants, then to another node (the room is cascaded).
    pub node_max_participants: u32,
    /// `VEZA_DRAIN_TIMEOUT_SECS`: on SIGTERM a media node waits this long for its clients to
    /// move to other nodes before it exits.
    pub drain_timeout_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./veza-data"),
            database_url: None,
            redis_url: None,
            nats_url: None,
            public_url: None,
            rate_limit_per_min: 100,
            auth_rate_limit_per_min: 10,
            log_format: LogFormat::Pretty,
            cors_origins: Vec::new(),
            max_body_bytes: 64 * 1024,
            access_token_ttl_secs: 15 * 60,
            refresh_token_ttl_secs: 7 * 24 * 3600,
            media_token_ttl_secs: 10 * 60,
            jwt_keys_file: None,
            jwt_issuer: None,
            stun_urls: vec![DEFAULT_STUN_URL.to_owned()],
            turn_urls: Vec::new(),
            turn_secret: None,
            turn_ttl_secs: 24 * 3600,
            rtc_udp_addr: SocketAddr::from(([0, 0, 0, 0], 7882)),
            rtc_public_ips: Vec::new(),
            rtc_shards: 0,
            chat_blocked_words: Vec::new(),
            quic_addr: SocketAddr::from(([0, 0, 0, 0], 4443)),
            quic_public_url: None,
            quic_cert: None,
            quic_key: None,
            cluster_secret: None,
            cluster_name: "veza".into(),
            cascade_url: None,
            node_id: None,
            node_max_participants: 500,
            drain_timeout_secs: 30,
        }
    }
}

/// The STUN server handed to clients unless configured otherwise (LiveKit's default too).
pub const DEFAULT_STUN_URL: &str = "stun:stun.l.google.com:19302";

fn parse<T: FromStr>(name: &str, value: &str) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e| anyhow::anyhow!("{name}={value:?} is not valid: {e}"))
}

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Config {
    /// Defaults, then the TOML file at `path` if given.
    pub fn from_file(path: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("in config file {}", path.display()))
    }

    /// Applies environment variables from `vars`; returns the `VEZA_*` names it did not know.
    pub fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Vec<String>> {
        let mut unknown = Vec::new();
        for (name, value) in vars {
            match name.as_str() {
                "VEZA_HTTP_ADDR" => self.http_addr = parse(&name, &value)?,
                "VEZA_DATA_DIR" => self.data_dir = PathBuf::from(value),
                "DATABASE_URL" => self.database_url = Some(value),
                "REDIS_URL" => self.redis_url = Some(value),
                "NATS_URL" => self.nats_url = Some(value),
                "VEZA_PUBLIC_URL" => self.public_url = Some(value),
                "VEZA_RATE_LIMIT_PER_MIN" => self.rate_limit_per_min = parse(&name, &value)?,
                "VEZA_AUTH_RATE_LIMIT_PER_MIN" => {
                    self.auth_rate_limit_per_min = parse(&name, &value)?;
                }
                "VEZA_LOG_FORMAT" => self.log_format = parse(&name, &value)?,
                "VEZA_CORS_ORIGINS" => self.cors_origins = list(&value),
                "VEZA_MAX_BODY_BYTES" => self.max_body_bytes = parse(&name, &value)?,
                "VEZA_ACCESS_TOKEN_TTL_SECS" => self.access_token_ttl_secs = parse(&name, &value)?,
                "VEZA_REFRESH_TOKEN_TTL_SECS" => {
                    self.refresh_token_ttl_secs = parse(&name, &value)?;
                }
                "VEZA_MEDIA_TOKEN_TTL_SECS" => self.media_token_ttl_secs = parse(&name, &value)?,
                "VEZA_JWT_KEYS_FILE" => self.jwt_keys_file = Some(PathBuf::from(value)),
                "VEZA_JWT_ISSUER" => self.jwt_issuer = Some(value),
                "VEZA_STUN_URLS" => self.stun_urls = list(&value),
                "VEZA_TURN_URLS" => self.turn_urls = list(&value),
                "VEZA_TURN_SECRET" => self.turn_secret = Some(value),
                "VEZA_TURN_TTL_SECS" => self.turn_ttl_secs = parse(&name, &value)?,
                "VEZA_CHAT_BLOCKED_WORDS" => self.chat_blocked_words = list(&value),
                "VEZA_QUIC_ADDR" => self.quic_addr = parse(&name, &value)?,
                "VEZA_QUIC_PUBLIC_URL" => self.quic_public_url = Some(value),
                "VEZA_QUIC_CERT" => self.quic_cert = Some(PathBuf::from(value)),
                "VEZA_QUIC_KEY" => self.quic_key = Some(PathBuf::from(value)),
                "VEZA_RTC_UDP_ADDR" => self.rtc_udp_addr = parse(&name, &value)?,
                "VEZA_RTC_SHARDS" => self.rtc_shards = parse(&name, &value)?,
                "VEZA_RTC_PUBLIC_IPS" => {
                    self.rtc_public_ips = list(&value)
                        .iter()
                        .map(|ip| parse(&name, ip))
                        .collect::<anyhow::Result<_>>()?;
                }
                "VEZA_CLUSTER_SECRET" => self.cluster_secret = Some(value),
                "VEZA_NODE_ID" => self.node_id = Some(value),
                "VEZA_CLUSTER_NAME" => self.cluster_name = value,
                "VEZA_CASCADE_URL" => self.cascade_url = Some(value),
                "VEZA_NODE_MAX_PARTICIPANTS" => {
                    self.node_max_participants = parse(&name, &value)?;
                }
                "VEZA_DRAIN_TIMEOUT_SECS" => self.drain_timeout_secs = parse(&name, &value)?,
                other if other.starts_with("VEZA_") => {
                    unknown.push(name);
                }
                _ => {}
            }
        }
        Ok(unknown)
    }

    /// Checks that the settings make sense together.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.rate_limit_per_min == 0 || self.auth_rate_limit_per_min == 0 {
            bail!("rate limits must be at least 1 per minute");
        }
        for (name, secs) in [
            ("access_token_ttl_secs", self.access_token_ttl_secs),
            ("refresh_token_ttl_secs", self.refresh_token_ttl_secs),
            ("media_token_ttl_secs", self.media_token_ttl_secs),
            ("turn_ttl_secs", self.turn_ttl_secs),
        ] {
            if secs == 0 {
                bail!("{name} must be positive");
            }
        }
        if self
            .jwt_issuer
            .as_deref()
            .is_some_and(|iss| iss.trim().is_empty())
        {
            bail!("jwt_issuer must not be empty");
        }
        if self.max_body_bytes < 1024 {
            bail!("max_body_bytes must be at least 1024");
        }
        let public_url = self.public_url();
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            bail!("public_url must start with http:// or https://, got {public_url:?}");
        }
        for origin in &self.cors_origins {
            if !(origin.starts_with("http://") || origin.starts_with("https://"))
                || origin.trim_end_matches('/').matches('/').count() != 2
            {
                bail!("cors origin {origin:?} must look like https://host[:port]");
            }
        }
        let url = self.database_url();
        if !(url.starts_with("postgres://")
            || url.starts_with("postgresql://")
            || url.starts_with("sqlite:"))
        {
            bail!("database_url must be postgres://… or sqlite://…");
        }
        if let Some(redis) = &self.redis_url
            && !(redis.starts_with("redis://") || redis.starts_with("rediss://"))
        {
            bail!("redis_url must be redis://…");
        }
        if let Some(nats) = &self.nats_url
            && !(nats.starts_with("nats://") || nats.starts_with("tls://"))
        {
            bail!("nats_url must be nats://…");
        }
        match (self.turn_urls.is_empty(), &self.turn_secret) {
            (true, Some(_)) => bail!("turn_secret is set but turn_urls is empty"),
            (false, None) => bail!("turn_urls is set but turn_secret is not"),
            (false, Some(secret)) if secret.len() < 16 => {
                bail!("turn_secret must be at least 16 characters")
            }
            _ => {}
        }
        if self
            .chat_blocked_words
            .iter()
            .any(|w| w.trim().is_empty() || w.contains('\0'))
        {
            bail!("chat_blocked_words must not hold empty words or U+0000");
        }
        if self.cluster_secret.as_ref().is_some_and(|s| s.len() < 16) {
            bail!("cluster_secret must be at least 16 characters");
        }
        let name_ok = |id: &str| {
            !id.is_empty()
                && id.len() <= 64
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if self.node_id.as_deref().is_some_and(|id| !name_ok(id)) {
            bail!("node_id must be 1 to 64 letters, digits, '-' or '_'");
        }
        if self
            .cascade_url
            .as_ref()
            .is_some_and(|url| !url.starts_with("https://"))
        {
            bail!("cascade_url must start with https://");
        }
        if !name_ok(&self.cluster_name) {
            bail!("cluster_name must be 1 to 64 letters, digits, '-' or '_'");
        }
        if self.rtc_shards > 256 {
            bail!("rtc_shards must be at most 256");
        }
        if self.node_max_participants == 0 {
            bail!("node_max_participants must be at least 1");
        }
        if self.quic_cert.is_some() != self.quic_key.is_some() {
            bail!("quic_cert and quic_key go together");
        }
        if !self.quic_public_url().starts_with("https://") {
            bail!("quic_public_url must start with https://");
        }
        for url in self.turn_urls.iter().chain(&self.stun_urls) {
            if !["turn:", "turns:", "stun:", "stuns:"]
                .iter()
                .any(|p| url.starts_with(p))
            {
                bail!("ICE server URL {url:?} must start with stun:, stuns:, turn: or turns:");
            }
        }
        Ok(())
    }

    /// The media shards to run: as configured, or one per CPU core.
    pub fn rtc_shards(&self) -> usize {
        match self.rtc_shards {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }

    /// The database URL in force.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("veza.db").display()))
    }

    /// The public URL in force.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                let mut addr = self.http_addr;
                if addr.ip().is_unspecified() {
                    addr.set_ip([127, 0, 0, 1].into());
                }
                format!("http://{addr}")
            }
        }
    }

    /// The QUIC endpoint's URL in force: configured, or the public URL's host on the QUIC
    /// port.
    pub fn quic_public_url(&self) -> String {
        self.quic_public_url_on(self.quic_addr.port())
    }

    /// The QUIC URL for an endpoint bound to `port` (the configured port may be 0).
    pub fn quic_public_url_on(&self, port: u16) -> String {
        if let Some(url) = &self.quic_public_url {
            return url.trim_end_matches('/').to_owned();
        }
        let public = self.public_url();
        let authority = public
            .split_once("://")
            .map_or(public.as_str(), |(_, rest)| rest);
        let authority = authority.split('/').next().unwrap_or(authority);
        let host = match authority.rsplit_once(':') {
            // Not the colons of a bracketed IPv6 address.
            Some((host, port)) if !port.contains(']') => host,
            _ => authority,
        };
        format!("https://{host}:{port}")
    }

    /// The issuer of tokens in force.
    pub fn jwt_issuer(&self) -> String {
        self.jwt_issuer.clone().unwrap_or_else(|| self.public_url())
    }

    /// The JWT key file in force.
    pub fn jwt_keys_file(&self) -> PathBuf {
        self.jwt_keys_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("jwt-keys.json"))
    }

    /// The chat service's settings.
    pub fn chat(&self) -> veza_api::ChatConfig {
        veza_api::ChatConfig {
            blocked_words: self.chat_blocked_words.clone(),
            ..veza_api::ChatConfig::default()
        }
    }

    /// The API service's settings.
    pub fn api(&self) -> veza_api::ApiConfig {
        let mut api = veza_api::ApiConfig::new(self.public_url());
        api.access_ttl = Duration::from_secs(self.access_token_ttl_secs);
        api.refresh_ttl = Duration::from_secs(self.refresh_token_ttl_secs);
        api.media_ttl = Duration::from_secs(self.media_token_ttl_secs);
        api.rate_limit_per_min = self.rate_limit_per_min;
        api.auth_rate_limit_per_min = self.auth_rate_limit_per_min;
        api.cors_origins = self.cors_origins.clone();
        api.max_body_bytes = self.max_body_bytes;
        api.stun_urls = self.stun_urls.clone();
        api.turn = self
            .turn_secret
            .as_ref()
            .map(|secret| veza_turn::TurnSettings {
                urls: self.turn_urls.clone(),
                secret: secret.clone(),
                ttl: Duration::from_secs(self.turn_ttl_secs),
            });
        api
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_are_valid_and_embedded() {
        let config = Config::default();
        config.validate().expect("defaults are valid");
        assert_eq!(config.public_url(), "http://127.0.0.1:8080");
        assert_eq!(config.database_url(), "sqlite://./veza-data/veza.db");
        assert_eq!(config.rate_limit_per_min, 100);
        assert_eq!(config.auth_rate_limit_per_min, 10);
    }

    #[test]
    fn file_then_env_layer_in_order() {
        let dir = std::env::temp_dir().join(format!("veza-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let file = dir.join("veza.toml");
        std::fs::write(
            &file,
            "http_addr = \"127.0.0.1:9000\"\nrate_limit_per_min = 5\nlog_format = \"json\"\n",
        )
        .expect("write");
        let mut config = Config::from_file(Some(&file)).expect("parse");
        assert_eq!(config.http_addr.port(), 9000);
        assert_eq!(config.log_format, LogFormat::Json);
        let unknown = config
            .apply_env(env(&[
                ("VEZA_RATE_LIMIT_PER_MIN", "7"),
                ("VEZA_CORS_ORIGINS", "https://a.example, https://b.example"),
                ("VEZA_QUIC_ADDR", "0.0.0.0:4443"),
                ("VEZA_RTC_PUBLIC_IPS", "203.0.113.7, 127.0.0.1"),
                ("VEZA_CHAT_BLOCKED_WORDS", " darn, heck no ,,"),
                ("VEZA_TYPO", "1"),
                ("PATH", "/bin"),
            ]))
            .expect("env");
        assert_eq!(unknown, ["VEZA_TYPO"]);
        assert_eq!(config.rate_limit_per_min, 7, "env beats file");
        assert_eq!(config.http_addr.port(), 9000, "file beats default");
        assert_eq!(config.cors_origins.len(), 2);
        assert_eq!(config.rtc_public_ips.len(), 2);
        assert_eq!(config.chat_blocked_words, ["darn", "heck no"]);
        assert_eq!(config.chat().blocked_words, ["darn", "heck no"]);
        assert_eq!(config.chat().max_len, 4000);
        config.validate().expect("valid");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn unknown_file_keys_and_bad_values_are_rejected() {
        assert!(toml::from_str::<Config>("no_such_key = 1").is_err());
        assert!(toml::from_str::<Config>("rate_limit_per_min = \"many\"").is_err());
        let mut config = Config::default();
        assert!(
            config
                .apply_env(env(&[("VEZA_HTTP_ADDR", "nowhere")]))
                .is_err()
        );
        assert!(
            config
                .apply_env(env(&[("VEZA_LOG_FORMAT", "xml")]))
                .is_err()
        );
    }

    #[test]
    fn validation_catches_inconsistent_settings() {
        let bad = [
            Config {
                turn_urls: vec!["turn:127.0.0.1:3478".into()],
                ..Config::default()
            },
            Config {
                turn_secret: Some("0123456789abcdef".into()),
                ..Config::default()
            },
            Config {
                database_url: Some("mysql://x".into()),
                ..Config::default()
            },
            Config {
                public_url: Some("ftp://x".into()),
                ..Config::default()
            },
            Config {
                rate_limit_per_min: 0,
                ..Config::default()
            },
            Config {
                cors_origins: vec!["https://a.example/path".into()],
                ..Config::default()
            },
            Config {
                stun_urls: vec!["http://x".into()],
                ..Config::default()
            },
            Config {
                chat_blocked_words: vec![" ".into()],
                ..Config::default()
            },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?}");
        }
        let turn = Config {
            turn_urls: vec!["turn:127.0.0.1:3478".into()],
            turn_secret: Some("0123456789abcdef".into()),
            ..Config::default()
        };
        turn.validate().expect("turn both set");
        assert!(turn.api().turn.is_some());
    }

    #[test]
    fn the_example_file_parses_and_validates() {
        let text = include_str!("../../veza.example.toml");
        let config: Config = toml::from_str(text).expect("veza.example.toml parses");
        config.validate().expect("veza.example.toml is valid");
    }
}
