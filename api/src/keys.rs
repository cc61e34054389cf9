//! JWT signing keys: Ed25519 (EdDSA), each with a `kid`, published as a JWKS.
//!
//! The key file (`jwt-keys.json` in the data folder, mode 0600) holds every live key. The newest
//! signs; all verify. `veza keys rotate` appends a new key and drops keys whose successor is
//! older than the longest token lifetime, so tokens signed by an old key stay valid until they
//! expire. A running server notices a changed file within 30 s, and at once when it meets an
//! unknown `kid` (so every node sharing the file verifies new tokens straight away).

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use veza_proto::{ACCESS_AUDIENCE, MEDIA_AUDIENCE, MediaClaims, UserId};

/// How often a server re-reads the key file to pick up a rotation.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(30);
/// Clock skew allowed when checking `exp`.
pub(crate) const LEEWAY: Duration = Duration::from_secs(5);

/// Claims of an access token (REST API, 15 minutes by default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer: the public URL.
    pub iss: String,
    /// The user.
    pub sub: UserId,
    /// Always [`ACCESS_AUDIENCE`].
    pub aud: String,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Expires at (Unix seconds).
    pub exp: u64,
    /// Unique token id.
    pub jti: String,
    /// The username.
    pub name: String,
}

/// Why a key or token operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the key file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The key file is not valid.
    #[error("key file {0} is corrupt: {1}")]
    Corrupt(PathBuf, String),
    /// The token names no key we know.
    #[error("unknown signing key")]
    UnknownKid,
    /// The token failed validation (signature, expiry, audience...).
    #[error("{0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    keys: Vec<StoredKey>,
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    /// Unix seconds.
    created_at: u64,
    /// PKCS#8 document, standard base64.
    pkcs8: String,
}

struct Loaded {
    signing_kid: String,
    signing: EncodingKey,
    verifying: HashMap<String, DecodingKey>,
    jwks: serde_json::Value,
    modified: Option<SystemTime>,
}

/// The live signing keys. Shared by every handler.
pub struct KeyRing {
    path: PathBuf,
    issuer: String,
    loaded: RwLock<Loaded>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("path", &self.path)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn new_key() -> Result<StoredKey, String> {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| "the system random source failed".to_owned())?;
    let mut kid = [0u8; 12];
    ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut kid)
        .map_err(|_| "the system random source failed".to_owned())?;
    Ok(StoredKey {
        kid: URL_SAFE_NO_PAD.encode(kid),
        created_at: unix_now(),
        pkcs8: STANDARD.encode(pkcs8.as_ref()),
    })
}

fn read_file(path: &Path) -> Result<KeyFile, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    let file: KeyFile = serde_json::from_str(&text)
        .map_err(|e| KeyError::Corrupt(path.to_owned(), e.to_string()))?;
    if file.keys.is_empty() {
        return Err(KeyError::Corrupt(path.to_owned(), "no keys".into()));
    }
    Ok(file)
}

fn write_file(path: &Path, file: &KeyFile) -> Result<(), KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("json.tmp");
    let json = serde_json::to_vec_pretty(file).map_err(|e| io(std::io::Error::other(e)))?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    out.write_all(&json).map_err(io)?;
    out.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn load(path: &Path) -> Result<Loaded, KeyError> {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let file = read_file(path)?;
    let corrupt = |msg: &str| KeyError::Corrupt(path.to_owned(), msg.to_owned());
    let mut verifying = HashMap::new();
    let mut jwks = Vec::new();
    let mut newest: Option<(&StoredKey, Vec<u8>)> = None;
    for key in &file.keys {
        let der = STANDARD
            .decode(&key.pkcs8)
            .map_err(|_| corrupt("a key is not base64"))?;
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
            .map_err(|_| corrupt("a key is not an Ed25519 PKCS#8 document"))?;
        let public = pair.public_key().as_ref();
        verifying.insert(key.kid.clone(), DecodingKey::from_ed_der(public));
        jwks.push(serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "alg": "EdDSA",
            "use": "sig",
            "kid": key.kid,
            "x": URL_SAFE_NO_PAD.encode(public),
        }));
        if newest
            .as_ref()
            .is_none_or(|(n, _)| key.created_at >= n.created_at)
        {
            newest = Some((key, der));
        }
    }
    let (newest, der) = newest.ok_or_else(|| corrupt("no keys"))?;
    Ok(Loaded {
        signing_kid: newest.kid.clone(),
        signing: EncodingKey::from_ed_der(&der),
        verifying,
        jwks: serde_json::json!({ "keys": jwks }),
        modified,
    })
}

impl KeyRing {
    /// Loads the key file at `path`, creating it with one new key if it does not exist.
    pub fn load_or_create(path: &Path, issuer: &str) -> Result<Self, KeyError> {
        if !path.exists() {
            let key = new_key().map_err(|e| KeyError::Corrupt(path.to_owned(), e))?;
            write_file(path, &KeyFile { keys: vec![key] })?;
            tracing::info!(path = %path.display(), "generated a new JWT signing key");
        }
        Ok(Self {
            path: path.to_owned(),
            issuer: issuer.to_owned(),
            loaded: RwLock::new(load(path)?),
        })
    }

    /// Adds a new signing key to the file at `path` and drops keys whose successor has existed
    /// for `retain` (the longest token lifetime) or longer. Returns the new `kid`.
    pub fn rotate_file(path: &Path, retain: Duration) -> Result<String, KeyError> {
        let mut file = read_file(path)?;
        let key = new_key().map_err(|e| KeyError::Corrupt(path.to_owned(), e))?;
        let kid = key.kid.clone();
        file.keys.push(key);
        file.keys.sort_by_key(|k| k.created_at);
        let now = unix_now();
        let successors: Vec<u64> = file.keys.iter().skip(1).map(|k| k.created_at).collect();
        let mut index = 0;
        file.keys.retain(|_| {
            let keep = successors
                .get(index)
                .is_none_or(|&next| now.saturating_sub(next) < retain.as_secs());
            index += 1;
            keep
        });
        write_file(path, &file)?;
        Ok(kid)
    }

    /// Reloads the key file if it changed since it was last read.
    pub fn reload_if_changed(&self) -> Result<bool, KeyError> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .ok();
        let current = self.read_loaded(|l| l.modified);
        if modified == current {
            return Ok(false);
        }
        let fresh = load(&self.path)?;
        *self.loaded.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        tracing::info!(path = %self.path.display(), "reloaded JWT signing keys");
        Ok(true)
    }

    fn read_loaded<R>(&self, f: impl FnOnce(&Loaded) -> R) -> R {
        f(&self.loaded.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// The issuer (`iss`) of every token.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The `kid` of the key that signs now.
    pub fn signing_kid(&self) -> String {
        self.read_loaded(|l| l.signing_kid.clone())
    }

    /// The public keys as a JWKS document.
    pub fn jwks(&self) -> serde_json::Value {
        self.read_loaded(|l| l.jwks.clone())
    }

    /// Signs `claims` with the newest key.
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        self.read_loaded(|l| {
            let mut header = Header::new(Algorithm::EdDSA);
            header.kid = Some(l.signing_kid.clone());
            Ok(jsonwebtoken::encode(&header, claims, &l.signing)?)
        })
    }

    /// Verifies an access token.
    pub fn verify_access(&self, token: &str) -> Result<AccessClaims, KeyError> {
        self.verify(token, ACCESS_AUDIENCE)
    }

    /// Verifies a media token.
    pub fn verify_media(&self, token: &str) -> Result<MediaClaims, KeyError> {
        self.verify(token, MEDIA_AUDIENCE)
    }

    fn verify<T: DeserializeOwned>(&self, token: &str, audience: &str) -> Result<T, KeyError> {
        let header = jsonwebtoken::decode_header(token)?;
        if header.alg != Algorithm::EdDSA {
            return Err(jsonwebtoken::errors::Error::from(
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm,
            )
            .into());
        }
        let kid = header.kid.ok_or(KeyError::UnknownKid)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_audience(&[audience]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
        validation.leeway = LEEWAY.as_secs();
        let attempt = |ring: &KeyRing| {
            ring.read_loaded(|l| {
                let key = l.verifying.get(&kid).ok_or(KeyError::UnknownKid)?;
                Ok(jsonwebtoken::decode::<T>(token, key, &validation)?.claims)
            })
        };
        match attempt(self) {
            Err(KeyError::UnknownKid) if self.reload_if_changed().unwrap_or(false) => attempt(self),
            other => other,
        }
    }
}
