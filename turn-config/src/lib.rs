//! coturn configuration and TURN credentials for Veza.
//!
//! Veza relays media through [coturn](https://github.com/coturn/coturn) using
//! the *TURN REST API* scheme (coturn's `use-auth-secret` mode, described in
//! draft-uberti-behave-turn-rest). The Veza API and coturn share one secret;
//! nothing else is stored or synchronised:
//!
//! * **username** = `"<expiry>:<user id>"`, where `<expiry>` is the Unix time
//!   (seconds) after which the credential is no longer valid;
//! * **password** (the WebRTC `credential`) = standard base64, with padding,
//!   of `HMAC-SHA1(key = secret, message = username)`.
//!
//! coturn recomputes the HMAC from the username it receives, compares it with
//! the password, and rejects the request once the embedded expiry has passed.
//! Credentials therefore cannot be revoked individually: keep the TTL short.
//!
//! This crate provides:
//!
//! * [`mint_credential`] and [`TurnSettings::ice_server`] to create
//!   credentials and the `RTCIceServer` JSON handed to browsers ([`IceServer`]);
//! * [`TURNSERVER_CONF_TEMPLATE`], a commented production `turnserver.conf`,
//!   rendered with [`render_turnserver_conf`] (placeholders listed in
//!   [`TEMPLATE_PLACEHOLDERS`]);
//! * [`local_test_conf`], a loopback-only configuration for end-to-end tests.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64_STANDARD;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha1::Sha1;

/// Placeholder text shown instead of secrets in `Debug` output.
const REDACTED: &str = "<redacted>";

// ---------------------------------------------------------------------------
// Credentials
// ---------------------------------------------------------------------------

/// A short-lived TURN credential in coturn's REST API format.
///
/// `Serialize` includes the credential (it is meant to be sent to the client);
/// `Debug` redacts it.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct TurnCredential {
    /// `"<expires_at_unix>:<user id>"`.
    pub username: String,
    /// Base64 (standard alphabet, padded) HMAC-SHA1 of `username` keyed with the shared secret.
    pub credential: String,
    /// Unix time (seconds) after which coturn rejects the credential.
    pub expires_at_unix: u64,
}

impl fmt::Debug for TurnCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnCredential")
            .field("username", &self.username)
            .field("credential", &REDACTED)
            .field("expires_at_unix", &self.expires_at_unix)
            .finish()
    }
}

/// Mints a TURN REST API credential for `user_id`, valid until `expires_at_unix`.
///
/// `secret` must equal coturn's `static-auth-secret`. `user_id` may contain
/// `:` (coturn reads the expiry up to the first separator), but it is visible
/// to coturn and in its logs, so prefer an opaque identifier.
pub fn mint_credential(secret: &str, user_id: &str, expires_at_unix: u64) -> TurnCredential {
    let username = format!("{expires_at_unix}:{user_id}");
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(username.as_bytes());
    let credential = BASE64_STANDARD.encode(mac.finalize().into_bytes());
    TurnCredential {
        username,
        credential,
        expires_at_unix,
    }
}

/// TURN settings of the Veza API: where coturn is and how to mint credentials for it.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnSettings {
    /// TURN URLs handed to clients, e.g. `turn:turn.example.com:3478?transport=udp`
    /// and `turns:turn.example.com:5349?transport=tcp`.
    pub urls: Vec<String>,
    /// Shared secret; must equal coturn's `static-auth-secret`.
    pub secret: String,
    /// Lifetime of minted credentials.
    pub ttl: Duration,
}

impl fmt::Debug for TurnSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnSettings")
            .field("urls", &self.urls)
            .field("secret", &REDACTED)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl TurnSettings {
    /// Returns an [`IceServer`] for [`urls`](Self::urls) with a fresh credential
    /// for `user_id` that expires at `now_unix + ttl` (whole seconds, saturating).
    pub fn ice_server(&self, user_id: &str, now_unix: u64) -> IceServer {
        let expires_at_unix = now_unix.saturating_add(self.ttl.as_secs());
        let cred = mint_credential(&self.secret, user_id, expires_at_unix);
        IceServer {
            urls: self.urls.clone(),
            username: Some(cred.username),
            credential: Some(cred.credential),
        }
    }
}

/// One entry of WebRTC's `RTCConfiguration.iceServers` (`RTCIceServer`), serialised
/// as `{"urls": [...], "username": "...", "credential": "..."}`; the credential
/// fields are omitted when `None`.
///
/// `Debug` redacts the credential.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct IceServer {
    /// `stun:`, `turn:` or `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN username, `None` for STUN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password, `None` for STUN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl IceServer {
    /// A STUN server entry (no credentials).
    pub fn stun(urls: Vec<String>) -> IceServer {
        IceServer {
            urls,
            username: None,
            credential: None,
        }
    }
}

impl fmt::Debug for IceServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceServer")
            .field("urls", &self.urls)
            .field("username", &self.username)
            .field("credential", &self.credential.as_ref().map(|_| REDACTED))
            .finish()
    }
}

// ---------------------------------------------------------------------------
// coturn configuration
// ---------------------------------------------------------------------------

/// Commented production `turnserver.conf` for coturn with `${NAME}` placeholders
/// (listed in [`TEMPLATE_PLACEHOLDERS`]); render it with [`render_turnserver_conf`].
pub const TURNSERVER_CONF_TEMPLATE: &str = include_str!("../turnserver.conf.template");

/// Every placeholder of [`TURNSERVER_CONF_TEMPLATE`] with its meaning, as `(name, description)`.
pub const TEMPLATE_PLACEHOLDERS: &[(&str, &str)] = &[
    (
        "VEZA_TURN_SECRET",
        "shared TURN REST API secret (coturn static-auth-secret); same value as TurnSettings::secret",
    ),
    ("REALM", "authentication realm, normally the TURN host name"),
    (
        "EXTERNAL_IP",
        "public IP of the relay, or PUBLIC/PRIVATE when coturn is behind 1:1 NAT",
    ),
    (
        "LISTENING_PORT",
        "STUN/TURN UDP and TCP port (standard 3478)",
    ),
    (
        "TLS_LISTENING_PORT",
        "TURNS TLS and DTLS port (standard 5349)",
    ),
    ("MIN_PORT", "first UDP relay port (inclusive)"),
    ("MAX_PORT", "last UDP relay port (inclusive)"),
    (
        "TLS_CERT_FILE",
        "path of the PEM certificate chain for REALM",
    ),
    (
        "TLS_PKEY_FILE",
        "path of the PEM private key of TLS_CERT_FILE",
    ),
];

/// Why a configuration template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TemplateError {
    /// These placeholders (in order of first appearance) were given no value.
    MissingValues(Vec<String>),
    /// The value for this placeholder contains a line break, which would inject
    /// extra configuration directives. The value itself is not included.
    InvalidValue {
        /// Placeholder name.
        name: String,
    },
    /// A `${` on this (1-based) line does not start a well-formed `${NAME}`
    /// placeholder (`NAME` = ASCII letters, digits and `_`, not starting with a digit).
    Malformed {
        /// 1-based line number in the template.
        line: usize,
    },
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateError::MissingValues(names) => {
                f.write_str("no value for template placeholder(s): ")?;
                for (i, name) in names.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "${{{name}}}")?;
                }
                Ok(())
            }
            TemplateError::InvalidValue { name } => {
                write!(
                    f,
                    "value for template placeholder ${{{name}}} contains a line break"
                )
            }
            TemplateError::Malformed { line } => {
                write!(f, "malformed template placeholder on line {line}")
            }
        }
    }
}

impl std::error::Error for TemplateError {}

/// Renders [`TURNSERVER_CONF_TEMPLATE`], replacing each `${NAME}` with the value
/// paired with `NAME` in `vars`.
///
/// Fails with [`TemplateError::MissingValues`] naming every placeholder that has
/// no entry in `vars`, and with [`TemplateError::InvalidValue`] if a used value
/// contains `\n` or `\r`. Values are inserted verbatim (never re-scanned for
/// placeholders). Unused entries in `vars` are ignored; if a name appears more
/// than once, the first entry wins.
pub fn render_turnserver_conf(vars: &[(&str, &str)]) -> Result<String, TemplateError> {
    render(TURNSERVER_CONF_TEMPLATE, vars)
}

/// Substitutes `${NAME}` placeholders in `template`; see [`render_turnserver_conf`].
fn render(template: &str, vars: &[(&str, &str)]) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut missing: Vec<String> = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let name = after
            .find('}')
            .map(|end| &after[..end])
            .filter(|name| is_placeholder_name(name))
            .ok_or_else(|| TemplateError::Malformed {
                line: line_of(template, template.len() - rest.len() + start),
            })?;
        match vars.iter().find(|(k, _)| *k == name) {
            Some((_, value)) if value.contains(['\n', '\r']) => {
                return Err(TemplateError::InvalidValue {
                    name: name.to_owned(),
                });
            }
            Some((_, value)) => out.push_str(value),
            None => {
                if !missing.iter().any(|m| m == name) {
                    missing.push(name.to_owned());
                }
            }
        }
        rest = &after[name.len() + 1..];
    }
    out.push_str(rest);
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(TemplateError::MissingValues(missing))
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`
fn is_placeholder_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// 1-based line number of byte offset `pos` in `text`.
fn line_of(text: &str, pos: usize) -> usize {
    text[..pos].matches('\n').count() + 1
}

/// First relay port of [`local_test_conf`].
pub const LOCAL_TEST_MIN_PORT: u16 = 49160;
/// Last relay port of [`local_test_conf`].
pub const LOCAL_TEST_MAX_PORT: u16 = 49200;

/// A `turnserver.conf` for a throw-away coturn used by end-to-end tests.
///
/// It uses the same `use-auth-secret` scheme with `secret` and `realm`, listens
/// on `127.0.0.1:listen_port` (UDP and TCP, no TLS/DTLS), relays from
/// `127.0.0.1` on ports [`LOCAL_TEST_MIN_PORT`]..=[`LOCAL_TEST_MAX_PORT`],
/// allows loopback peers, disables the CLI and logs verbosely to stdout.
/// Never use it in production.
///
/// # Panics
///
/// If `secret` or `realm` contains a line break (it would inject directives).
pub fn local_test_conf(listen_port: u16, secret: &str, realm: &str) -> String {
    assert!(
        !secret.contains(['\n', '\r']) && !realm.contains(['\n', '\r']),
        "TURN secret and realm must not contain line breaks"
    );
    format!(
        "\
# coturn configuration for local end-to-end tests (generated by veza_turn::local_test_conf).
# Loopback only; NOT for production.
listening-ip=127.0.0.1
listening-port={listen_port}
relay-ip=127.0.0.1
min-port={LOCAL_TEST_MIN_PORT}
max-port={LOCAL_TEST_MAX_PORT}
no-tls
no-dtls

use-auth-secret
static-auth-secret={secret}
realm={realm}
stale-nonce=600
fingerprint
no-software-attribute
no-cli
no-rfc5780
no-stun-backward-compatibility
response-origin-only-with-rfc5780
user-quota=12
total-quota=100

# Test peers live on 127.0.0.1. allow-loopback-peers is required, and
# 127.0.0.0/8 must not appear in a denied-peer-ip line (that would still refuse them).
allow-loopback-peers
no-multicast-peers
denied-peer-ip=10.0.0.0-10.255.255.255
denied-peer-ip=172.16.0.0-172.31.255.255
denied-peer-ip=192.168.0.0-192.168.255.255

log-file=stdout
simple-log
verbose
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Example values for every documented placeholder.
    fn example_vars() -> Vec<(&'static str, &'static str)> {
        TEMPLATE_PLACEHOLDERS
            .iter()
            .map(|&(name, _)| {
                let value = match name {
                    "VEZA_TURN_SECRET" => "prod-secret-value",
                    "REALM" => "turn.example.com",
                    "EXTERNAL_IP" => "203.0.113.5/10.0.0.5",
                    "LISTENING_PORT" => "3478",
                    "TLS_LISTENING_PORT" => "5349",
                    "MIN_PORT" => "49152",
                    "MAX_PORT" => "65535",
                    "TLS_CERT_FILE" => "/etc/coturn/fullchain.pem",
                    "TLS_PKEY_FILE" => "/etc/coturn/privkey.pem",
                    other => panic!("no example value for documented placeholder {other}"),
                };
                (name, value)
            })
            .collect()
    }

    /// All placeholder names in `template`, in order of first appearance.
    fn placeholders_in(template: &str) -> Vec<String> {
        match render(template, &[]) {
            Ok(_) => Vec::new(),
            Err(TemplateError::MissingValues(names)) => names,
            Err(e) => panic!("template does not parse: {e}"),
        }
    }

    #[test]
    fn credential_matches_independent_hmac_sha1() {
        // Expected values computed independently with Python's standard library:
        // python3 -c 'import hmac,hashlib,base64;u="1700000000:alice";print(base64.b64encode(hmac.new(b"north-wind-secret",u.encode(),hashlib.sha1).digest()).decode())'
        let c = mint_credential("north-wind-secret", "alice", 1_700_000_000);
        assert_eq!(c.username, "1700000000:alice");
        assert_eq!(c.credential, "r/l6ttQtMIfbS2lfULS0mDRRNUg=");
        assert_eq!(c.expires_at_unix, 1_700_000_000);

        // python3 -c 'import hmac,hashlib,base64;u="1700003600:user-42";print(base64.b64encode(hmac.new(b"s3cr3t",u.encode(),hashlib.sha1).digest()).decode())'
        let c = mint_credential("s3cr3t", "user-42", 1_700_003_600);
        assert_eq!(c.credential, "fS5hqkRIZOZgSfBbJv9okP7Xb3E=");
    }

    #[test]
    fn username_is_expiry_colon_user() {
        let c = mint_credential("k", "user:with:colons", 42);
        assert_eq!(c.username, "42:user:with:colons");
        // Different secrets give different credentials for the same username.
        assert_ne!(
            mint_credential("a", "u", 1).credential,
            mint_credential("b", "u", 1).credential
        );
    }

    #[test]
    fn ice_server_has_fresh_credentials_expiring_after_ttl() {
        let settings = TurnSettings {
            urls: vec!["turn:turn.example.com:3478?transport=udp".into()],
            secret: "s3cr3t".into(),
            ttl: Duration::from_secs(3600),
        };
        let ice = settings.ice_server("user-42", 1_700_000_000);
        assert_eq!(ice.urls, settings.urls);
        assert_eq!(ice.username.as_deref(), Some("1700003600:user-42"));
        // Same python-computed vector as in credential_matches_independent_hmac_sha1.
        assert_eq!(
            ice.credential.as_deref(),
            Some("fS5hqkRIZOZgSfBbJv9okP7Xb3E=")
        );

        let json = serde_json::to_value(&ice).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "urls": ["turn:turn.example.com:3478?transport=udp"],
                "username": "1700003600:user-42",
                "credential": "fS5hqkRIZOZgSfBbJv9okP7Xb3E=",
            })
        );
    }

    #[test]
    fn ice_server_expiry_saturates() {
        let settings = TurnSettings {
            urls: vec![],
            secret: "s".into(),
            ttl: Duration::from_secs(10),
        };
        let ice = settings.ice_server("u", u64::MAX - 1);
        assert_eq!(ice.username, Some(format!("{}:u", u64::MAX)));
    }

    #[test]
    fn stun_entry_omits_credentials() {
        let ice = IceServer::stun(vec!["stun:stun.example.com:3478".into()]);
        assert_eq!(
            serde_json::to_string(&ice).unwrap(),
            r#"{"urls":["stun:stun.example.com:3478"]}"#
        );
    }

    #[test]
    fn debug_does_not_leak_secret_or_credential() {
        let secret = "super-secret-value";
        let cred = mint_credential(secret, "alice", 1_700_000_000);
        let dbg = format!("{cred:?} {cred:#?}");
        assert!(!dbg.contains(&cred.credential), "{dbg}");
        assert!(dbg.contains("1700000000:alice") && dbg.contains(REDACTED));

        let settings = TurnSettings {
            urls: vec!["turn:x".into()],
            secret: secret.into(),
            ttl: Duration::from_secs(60),
        };
        let dbg = format!("{settings:?} {settings:#?}");
        assert!(!dbg.contains(secret), "{dbg}");
        assert!(dbg.contains("turn:x") && dbg.contains(REDACTED));

        let ice = settings.ice_server("alice", 0);
        let credential = ice.credential.clone().unwrap();
        let dbg = format!("{ice:?} {ice:#?}");
        assert!(!dbg.contains(&credential) && !dbg.contains(secret), "{dbg}");
    }

    #[test]
    fn render_substitutes_placeholders() {
        let out = render(
            "a=${A}\nb=${B_2} ${A}\n",
            &[
                ("A", "1"),
                ("B_2", "two"),
                ("A", "ignored"),
                ("UNUSED", "x"),
            ],
        );
        assert_eq!(out.unwrap(), "a=1\nb=two 1\n");
        // Values are not re-scanned for placeholders.
        assert_eq!(render("${A}", &[("A", "${B}")]).unwrap(), "${B}");
        assert_eq!(render("no placeholders", &[]).unwrap(), "no placeholders");
    }

    #[test]
    fn render_fails_naming_missing_placeholders() {
        let err = render("a=${A}\nb=${B}\nc=${C}\nb2=${B}\n", &[("A", "1")]).unwrap_err();
        assert_eq!(
            err,
            TemplateError::MissingValues(vec!["B".into(), "C".into()])
        );
        assert_eq!(
            err.to_string(),
            "no value for template placeholder(s): ${B}, ${C}"
        );

        let mut vars = example_vars();
        vars.retain(|(name, _)| *name != "REALM");
        let err = render_turnserver_conf(&vars).unwrap_err();
        assert_eq!(err, TemplateError::MissingValues(vec!["REALM".into()]));
        assert!(err.to_string().contains("REALM"));
        let _: &dyn std::error::Error = &err;
    }

    #[test]
    fn render_rejects_line_breaks_and_malformed_placeholders() {
        let err = render("s=${S}", &[("S", "x\nno-auth")]).unwrap_err();
        assert_eq!(err, TemplateError::InvalidValue { name: "S".into() });
        assert!(!err.to_string().contains("no-auth"));
        assert_eq!(
            render("ok\nbad=${oops", &[]).unwrap_err(),
            TemplateError::Malformed { line: 2 }
        );
        assert_eq!(
            render("${}", &[]).unwrap_err(),
            TemplateError::Malformed { line: 1 }
        );
        assert_eq!(
            render("${1X}", &[("1X", "v")]).unwrap_err(),
            TemplateError::Malformed { line: 1 }
        );
    }

    #[test]
    fn template_placeholders_are_documented() {
        let mut found = placeholders_in(TURNSERVER_CONF_TEMPLATE);
        let mut documented: Vec<String> = TEMPLATE_PLACEHOLDERS
            .iter()
            .map(|(name, _)| (*name).to_owned())
            .collect();
        found.sort();
        documented.sort();
        assert_eq!(found, documented);
        for (name, _) in TEMPLATE_PLACEHOLDERS {
            // Also described in the template's own header comment.
            assert!(
                TURNSERVER_CONF_TEMPLATE.contains(&format!("#   {name}"))
                    || TURNSERVER_CONF_TEMPLATE.contains(&format!(", {name}")),
                "{name} not described in template header"
            );
        }
    }

    #[test]
    fn template_renders_with_all_documented_placeholders() {
        let conf = render_turnserver_conf(&example_vars()).unwrap();
        assert!(!conf.contains("${"));
        let lines: Vec<&str> = conf.lines().map(str::trim).collect();
        for directive in [
            "use-auth-secret",
            "static-auth-secret=prod-secret-value",
            "realm=turn.example.com",
            "listening-port=3478",
            "tls-listening-port=5349",
            "external-ip=203.0.113.5/10.0.0.5",
            "min-port=49152",
            "max-port=65535",
            "fingerprint",
            "no-cli",
            "no-tlsv1",
            "no-tlsv1_1",
            "no-multicast-peers",
            "stale-nonce=600",
            "denied-peer-ip=10.0.0.0-10.255.255.255",
            "denied-peer-ip=127.0.0.0-127.255.255.255",
            "denied-peer-ip=192.168.0.0-192.168.255.255",
        ] {
            assert!(lines.contains(&directive), "missing directive {directive}");
        }
        assert!(lines.iter().any(|l| l.starts_with("user-quota=")));
        assert!(lines.iter().any(|l| l.starts_with("total-quota=")));
        assert!(!lines.contains(&"allow-loopback-peers"));
        assert!(!lines.contains(&"no-auth"));
    }

    #[test]
    fn local_test_conf_is_loopback_only_without_tls() {
        let conf = local_test_conf(34780, "test-secret", "veza.test");
        let lines: Vec<&str> = conf.lines().collect();
        for directive in [
            "listening-ip=127.0.0.1",
            "listening-port=34780",
            "relay-ip=127.0.0.1",
            "min-port=49160",
            "max-port=49200",
            "no-tls",
            "no-dtls",
            "use-auth-secret",
            "static-auth-secret=test-secret",
            "realm=veza.test",
            "allow-loopback-peers",
            "no-cli",
            "log-file=stdout",
        ] {
            assert!(lines.contains(&directive), "missing directive {directive}");
        }
        assert!(!conf.contains("${"));
        assert!(
            !lines.iter().any(
                |l| l.starts_with("denied-peer-ip=127.") || l.starts_with("denied-peer-ip=::1")
            ),
            "loopback must not be denied"
        );
        assert!(
            !lines
                .iter()
                .any(|l| l.starts_with("listening-ip=") && *l != "listening-ip=127.0.0.1")
        );
    }

    #[test]
    #[should_panic(expected = "line breaks")]
    fn local_test_conf_rejects_injection() {
        let _ = local_test_conf(3478, "s\nno-auth", "r");
    }
}
