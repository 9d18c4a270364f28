//! Typed configuration, read from the environment once and validated at boot (checklist item 3):
//! listen address, data dir, store, JWT signer, master keyring, admin credentials, private-network
//! allow list, the env layer of the AI config and the log format. In dev mode (the embedded SQLite
//! store) missing secrets are generated into the data dir (files mode 0600); with PostgreSQL they
//! must be supplied. Error messages name the variable, never its value.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::distr::{Alphanumeric, SampleString};
use rand::RngCore;
use secrecy::{ExposeSecret, ExposeSecretMut, SecretBox, SecretString};
use wagate_projections::messages::Retention;

use crate::auth::{self, JwtSigner};
use crate::crypto::{Keyring, MasterKey};

/// File names of the generated dev secrets, inside the data dir.
pub const JWT_SECRET_FILE: &str = "jwt_secret";
pub const MASTER_KEY_FILE: &str = "master.key";
pub const ADMIN_PASSWORD_HASH_FILE: &str = "admin_password.hash";

/// Shortest admin password accepted outside dev mode.
pub const MIN_ADMIN_PASSWORD_CHARS: usize = 12;
/// Length of a generated dev admin password.
const GENERATED_PASSWORD_CHARS: usize = 24;
/// Random bytes of a generated dev JWT secret.
const GENERATED_JWT_SECRET_BYTES: usize = 64;
/// The settings of the config file `WAGATE_CONFIG` names, with the environment's on top (a
/// variable set in the environment wins). The file is TOML read by figment; its keys are the
/// variables' names (`WAGATE_LISTEN = "0.0.0.0:8080"`, `WAGATE_MAX_MODEL_CALLS = 2048`), and each
/// value is then checked like the variable's, with the same messages.
fn with_config_file(
    env: &HashMap<String, String>,
    first: &mut FirstRun,
) -> Result<HashMap<String, String>, ConfigError> {
    use figment::providers::{Format, Toml};
    use figment::value::Value;
    let Some(path) = env
        .get("WAGATE_CONFIG")
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
    else {
        return Ok(env.clone());
    };
    let path = Path::new(path);
    let meta = fs::metadata(path)
        .map_err(|e| file_error(path, format!("WAGATE_CONFIG names no readable file ({e})")))?;
    if meta.permissions().mode() & 0o077 != 0 {
        first.warn(format!(
            "{}: the config file can be read by other users of this machine; if it holds secrets, \
             chmod 600 it",
            path.display()
        ));
    }
    let values: std::collections::BTreeMap<String, Value> =
        figment::Figment::from(Toml::file_exact(path))
            .extract()
            .map_err(|e| file_error(path, e))?;
    let mut merged = HashMap::with_capacity(values.len() + env.len());
    for (key, value) in values {
        if !(key.starts_with("WAGATE_") || key.starts_with("OPENAI_")) || key == "WAGATE_CONFIG" {
            return Err(file_error(
                path,
                format!(
                    "{key} is not a setting (the keys are the WAGATE_* and OPENAI_* variables)"
                ),
            ));
        }
        let text = match value {
            Value::String(_, s) => s,
            Value::Char(_, c) => c.to_string(),
            Value::Bool(_, b) => b.to_string(),
            Value::Num(_, n) => match (n.to_u128(), n.to_i128(), n.to_f64()) {
                (Some(u), _, _) => u.to_string(),
                (None, Some(i), _) => i.to_string(),
                (None, None, Some(f)) => f.to_string(),
                (None, None, None) => {
                    return Err(file_error(path, format!("{key} is not a usable number")))
                }
            },
            Value::Empty(..) | Value::Dict(..) | Value::Array(..) => {
                return Err(file_error(
                    path,
                    format!("{key} must be a string, a number or true/false"),
                ))
            }
        };
        merged.insert(key, text);
    }
    merged.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(merged)
}

/// Longest accepted AI base URL.
const MAX_URL_LEN: usize = 2048;

/// A configuration that cannot start the gateway. Messages name the variable or file and what is
/// wrong with it, never a secret value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `var` is set but unusable; `message` completes the sentence ("must be …").
    #[error("{var} {message}")]
    Invalid { var: &'static str, message: String },
    #[error(
        "{var} is required when the store is PostgreSQL (only the embedded SQLite dev mode \
         generates it); {hint}"
    )]
    Missing {
        var: &'static str,
        hint: &'static str,
    },
    #[error("{path}: {message}")]
    File { path: String, message: String },
}

fn invalid(var: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        var,
        message: message.into(),
    }
}

fn file_error(path: &Path, message: impl std::fmt::Display) -> ConfigError {
    ConfigError::File {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Where events and read models live.
pub enum DatabaseConfig {
    /// The embedded store (dev mode).
    Sqlite { path: PathBuf },
    /// The URL may carry a password, hence a secret.
    Postgres { url: SecretString },
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseConfig::Sqlite { path } => {
                f.debug_struct("Sqlite").field("path", path).finish()
            }
            DatabaseConfig::Postgres { url } => f
                .debug_struct("Postgres")
                .field("url", &redact_postgres_url(url.expose_secret()))
                .finish(),
        }
    }
}

/// The env layer of the AI config (below global, account and chat settings).
#[derive(Debug, Default)]
pub struct EnvAiLayer {
    /// Validated absolute http(s) URL, trailing `/` dropped.
    pub base_url: Option<String>,
    pub api_key: Option<SecretString>,
    pub model_name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// What the read models keep in memory unless configured: ~85 MB of messages and ~65 MB of
/// AI-log rows of typical sizes (ADR 0013).
pub const DEFAULT_READ_MODEL: Retention = Retention {
    messages: 200_000,
    ai_log: 100_000,
};

/// Events folded between two read-model checkpoints unless configured (ADR 0015).
pub const DEFAULT_CHECKPOINT_EVERY: u64 = 1_000_000;
/// The largest media an inbound message may carry by default (`WAGATE_MEDIA_MAX_BYTES`): 16 MiB,
/// WhatsApp's own limit for audio and video.
pub const DEFAULT_MEDIA_MAX_BYTES: usize = 16 * 1024 * 1024;
/// The largest `WAGATE_MEDIA_MAX_BYTES` accepted (the sandbox route's body limit is sized for it).
pub const MEDIA_MAX_BYTES_LIMIT: usize = 32 * 1024 * 1024;
/// The longest `WAGATE_MEDIA_KEEP_SECONDS` accepted: ten years.
pub const MEDIA_KEEP_SECONDS_LIMIT: u64 = 10 * 365 * 24 * 3600;

/// The validated configuration. `Debug` prints no secret (see [`Config::redacted_summary`]).
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database: DatabaseConfig,
    pub jwt: JwtSigner,
    pub keyring: Keyring,
    pub admin_username: String,
    /// Argon2id PHC string.
    pub admin_password_hash: String,
    pub allow_private_networks: Vec<ipnet::IpNet>,
    /// Whether account tokens may point an account's model URLs into
    /// `allow_private_networks` (`WAGATE_ALLOW_PRIVATE_NETWORKS_FOR_ACCOUNTS`, default false:
    /// private targets are the admin's).
    pub allow_private_networks_for_accounts: bool,
    pub ai_env: EnvAiLayer,
    /// The embedded SQLite store: secrets may be generated.
    pub dev_mode: bool,
    pub log_format: LogFormat,
    /// Concurrent model calls across the process (`WAGATE_MAX_MODEL_CALLS`, default 1024).
    pub max_model_calls: usize,
    /// Concurrent model calls per account (`WAGATE_MAX_MODEL_CALLS_PER_ACCOUNT`, default 256).
    pub max_model_calls_per_account: usize,
    /// The length of one "minute" of `human_takeover_minutes`
    /// (`WAGATE_TAKEOVER_MINUTE_SECONDS`, 1..=60, default 60). Only demos and tests shorten it,
    /// to watch a pause end without waiting half an hour.
    pub takeover_minute: Duration,
    pub webhooks: WebhookConfig,
    /// How much of the message history the read models keep in memory
    /// (`WAGATE_READ_MODEL_MESSAGES`, default 200000; `WAGATE_READ_MODEL_AI_LOG_ROWS`, default
    /// 100000). Older pages are read from the store (ADR 0013).
    pub read_model: Retention,
    /// How long the AI log keeps a reply's text (`WAGATE_AI_LOG_BODY_RETENTION`, e.g. `30d`;
    /// unset: kept). Older texts are erased from their `AiReplyGenerated` events; the message
    /// sent to the customer stays in the chat.
    pub ai_log_body_retention: Option<Duration>,
    /// Events folded between two checkpoints of the messages read model
    /// (`WAGATE_READ_MODEL_CHECKPOINT_EVERY`, default 1000000; 0 turns checkpoints off, written
    /// and read). A start folds only the events after the newest checkpoint (ADR 0015); one is
    /// also written when the gateway stops.
    pub checkpoint_every: u64,
    /// Header and body read timeouts and the connection cap of the HTTP server.
    pub http: HttpLimits,
    /// Requests per caller (admin JWT subject or account token) through the API
    /// (`WAGATE_API_RATE_LIMIT_PER_SECOND`, default 100, 0 = no limit;
    /// `WAGATE_API_RATE_LIMIT_BURST`, default 500); past it, 429 with `Retry-After`.
    pub api_rate_limit: Option<ApiRateLimit>,
    /// How gateways sharing a PostgreSQL store divide the accounts (ADR 0026).
    pub cluster: ClusterConfig,
    /// Where WhatsApp Web connections go (issue 23).
    pub whatsapp_web: WhatsAppWebConfig,
    /// The largest media an inbound message may carry (`WAGATE_MEDIA_MAX_BYTES`, default 16 MiB,
    /// at most 32 MiB); larger is refused (ADR 0028).
    pub media_max_bytes: usize,
    /// How long a media's bytes are kept after a message last brought them
    /// (`WAGATE_MEDIA_KEEP_SECONDS`, default 0: deleted once the reply that used them settled;
    /// only the transcript and the hash stay). The purge deletes older bytes (ADR 0028).
    pub media_keep: Duration,
}

/// Overrides for WhatsApp Web connections; both unset in production.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WhatsAppWebConfig {
    /// `WAGATE_WHATSAPP_WEB_URL`: the `ws://` or `wss://` endpoint instead of WhatsApp's (a relay,
    /// or a loopback stand-in in tests).
    pub url: Option<String>,
    /// `WAGATE_WHATSAPP_WEB_VERSION` (`2.3000.1023…`): the client version to announce instead of
    /// fetching WhatsApp Web's current one.
    pub version: Option<(u32, u32, u32)>,
}

fn parse_whatsapp_web(vars: &Vars<'_>) -> Result<WhatsAppWebConfig, ConfigError> {
    let url = match vars
        .get("WAGATE_WHATSAPP_WEB_URL")
        .map(|u| u.trim().to_string())
    {
        Some(u) if u.is_empty() => None,
        Some(u) => match url::Url::parse(&u) {
            Ok(p) if matches!(p.scheme(), "ws" | "wss") && p.host_str().is_some() => Some(u),
            _ => {
                return Err(invalid(
                    "WAGATE_WHATSAPP_WEB_URL",
                    "must be a ws:// or wss:// URL",
                ))
            }
        },
        None => None,
    };
    let version = match vars
        .get("WAGATE_WHATSAPP_WEB_VERSION")
        .map(|v| v.trim().to_string())
    {
        Some(v) if v.is_empty() => None,
        Some(v) => {
            let parts: Vec<Option<u32>> = v.split('.').map(|p| p.parse().ok()).collect();
            match parts.as_slice() {
                [Some(a), Some(b), Some(c)] => Some((*a, *b, *c)),
                _ => {
                    return Err(invalid(
                        "WAGATE_WHATSAPP_WEB_VERSION",
                        "must be three numbers, e.g. 2.3000.1023456789",
                    ))
                }
            }
        }
        None => None,
    };
    Ok(WhatsAppWebConfig { url, version })
}

/// This gateway's place among the gateways sharing a PostgreSQL store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `WAGATE_NODE_ID`: unique among the running gateways (default: the host name and the
    /// listening port). A second process with the id of a live one refuses to start.
    pub node_id: String,
    /// `WAGATE_LEASE_SECONDS` (2..=300, default 10): how long an account lease and a node's
    /// heartbeat last; they are renewed every third of it, and a dead node's accounts move to the
    /// others within it.
    pub lease: Duration,
    /// `WAGATE_NODE_URL` (`http(s)://host:port`, optional): where the other gateways reach this
    /// one, to forward a request that needs the gateway running an account (ADR 0029). Unset:
    /// the listening address, or the host name and port when it listens on every address.
    pub url: Option<String>,
}

/// The default `WAGATE_LEASE_SECONDS`.
pub const DEFAULT_LEASE_SECONDS: u64 = 10;

/// This machine's host name (letters, digits, `.`, `_`, `-`; `wagate` when it has none).
pub fn host_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "wagate".into());
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(90)
        .collect();
    if host.is_empty() {
        "wagate".into()
    } else {
        host
    }
}

impl ClusterConfig {
    /// Where the other gateways reach this one once it listens on `addr`: `WAGATE_NODE_URL`,
    /// else the address itself, else (listening on every address) the host name and port.
    pub fn advertised_url(&self, addr: SocketAddr) -> String {
        match &self.url {
            Some(url) => url.clone(),
            None if addr.ip().is_unspecified() => format!("http://{}:{}", host_name(), addr.port()),
            None => format!("http://{addr}"),
        }
    }
}

fn parse_cluster(
    vars: &Vars<'_>,
    plain: &Plain,
    listen: SocketAddr,
) -> Result<ClusterConfig, ConfigError> {
    let lease = Duration::from_secs(within(
        "WAGATE_LEASE_SECONDS",
        plain.lease_seconds.unwrap_or(DEFAULT_LEASE_SECONDS),
        2..=300,
    )?);
    let node_id = match vars.get("WAGATE_NODE_ID") {
        Some(id) => id.trim().to_string(),
        None => format!("{}:{}", host_name(), listen.port()),
    };
    let valid = !node_id.is_empty()
        && node_id.len() <= 100
        && node_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':'));
    if !valid {
        return Err(invalid(
            "WAGATE_NODE_ID",
            "must be 1 to 100 letters, digits, '.', '_', '-' or ':'",
        ));
    }
    let url = match vars.get("WAGATE_NODE_URL").map(|u| u.trim().to_string()) {
        Some(u) if u.is_empty() => None,
        Some(u) => match url::Url::parse(&u) {
            Ok(p)
                if matches!(p.scheme(), "http" | "https")
                    && p.host_str().is_some()
                    && p.query().is_none()
                    && p.fragment().is_none()
                    && p.username().is_empty()
                    && p.password().is_none() =>
            {
                Some(u.trim_end_matches('/').to_string())
            }
            _ => {
                return Err(invalid(
                    "WAGATE_NODE_URL",
                    "must be an http:// or https:// URL without credentials, query or fragment, e.g. http://10.0.0.5:8080",
                ))
            }
        },
        None => None,
    };
    Ok(ClusterConfig {
        node_id,
        lease,
        url,
    })
}

// --- The plain settings: extracted by figment, checked with the variables' messages ---

/// What each plain setting must be: the message of a refused value (a wrong type from figment's
/// extraction, or a value out of range), completing "<VAR> …".
const MESSAGES: &[(&str, &str)] = &[
    (
        "WAGATE_LISTEN",
        "must be an IP address and port, e.g. 127.0.0.1:8080 or [::]:8080",
    ),
    ("WAGATE_LOG_FORMAT", "must be text or json"),
    (
        "WAGATE_ALLOW_PRIVATE_NETWORKS_FOR_ACCOUNTS",
        "must be true or false",
    ),
    (
        "WAGATE_MAX_MODEL_CALLS",
        "must be a whole number from 1 to 100000",
    ),
    (
        "WAGATE_MAX_MODEL_CALLS_PER_ACCOUNT",
        "must be a whole number from 1 to 100000",
    ),
    (
        "WAGATE_TAKEOVER_MINUTE_SECONDS",
        "must be a whole number from 1 to 60",
    ),
    (
        "WAGATE_READ_MODEL_MESSAGES",
        "must be a whole number from 0 to 1000000000",
    ),
    (
        "WAGATE_READ_MODEL_AI_LOG_ROWS",
        "must be a whole number from 0 to 1000000000",
    ),
    (
        "WAGATE_READ_MODEL_CHECKPOINT_EVERY",
        "must be a whole number from 0 to 1000000000",
    ),
    (
        "WAGATE_MEDIA_MAX_BYTES",
        "must be a whole number from 1 to 33554432",
    ),
    (
        "WAGATE_MEDIA_KEEP_SECONDS",
        "must be a whole number of seconds from 0 (deleted once its reply settled) to 315360000 \
         (ten years)",
    ),
    (
        "WAGATE_AI_LOG_BODY_RETENTION",
        "must be a duration of at least 1s, such as 30d or 12h",
    ),
    (
        "WAGATE_API_RATE_LIMIT_PER_SECOND",
        "must be a whole number from 0 (no limit) to 1000000",
    ),
    (
        "WAGATE_API_RATE_LIMIT_BURST",
        "must be a whole number from 1 to 1000000",
    ),
    (
        "WAGATE_WEBHOOK_TIMEOUT",
        "must be a duration from 100ms to 120s, e.g. 10s",
    ),
    (
        "WAGATE_HEADER_READ_TIMEOUT",
        "must be a duration from 100ms to 5m, e.g. 10s",
    ),
    (
        "WAGATE_BODY_READ_TIMEOUT",
        "must be a duration from 100ms to 1h, e.g. 30s",
    ),
    (
        "WAGATE_REQUEST_TIMEOUT",
        "must be a duration from 100ms to 1h, e.g. 5m",
    ),
    (
        "WAGATE_MAX_CONNECTIONS",
        "must be a whole number from 1 to 1000000",
    ),
    (
        "WAGATE_LEASE_SECONDS",
        "must be a whole number of seconds from 2 to 300",
    ),
];

/// The refusal of a plain setting's value, with its message.
fn refused(var: &str) -> ConfigError {
    let (var, message) = MESSAGES
        .iter()
        .find(|(v, _)| *v == var)
        .copied()
        .unwrap_or(("WAGATE_*", "has a value that cannot be used"));
    invalid(var, message)
}

/// `value` when it lies in `range`, else the variable's refusal.
fn within<T: PartialOrd>(
    var: &'static str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(refused(var))
    }
}

/// A duration such as `10s`, `5m` or `30d`, read with humantime.
#[derive(Debug, Clone, Copy)]
struct Human(Duration);

impl<'de> serde::Deserialize<'de> for Human {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim())
            .map(Human)
            .map_err(serde::de::Error::custom)
    }
}

/// The plain settings — addresses, numbers, durations, switches — as figment extracts them from
/// the environment and the config file (numbers and switches read from their text); an unset
/// variable is `None` here and takes its default where it is used.
#[derive(Debug, Default, serde::Deserialize)]
struct Plain {
    #[serde(rename = "WAGATE_LISTEN")]
    listen: Option<SocketAddr>,
    #[serde(rename = "WAGATE_LOG_FORMAT")]
    log_format: Option<String>,
    #[serde(rename = "WAGATE_ALLOW_PRIVATE_NETWORKS_FOR_ACCOUNTS")]
    allow_private_networks_for_accounts: Option<bool>,
    #[serde(rename = "WAGATE_MAX_MODEL_CALLS")]
    max_model_calls: Option<usize>,
    #[serde(rename = "WAGATE_MAX_MODEL_CALLS_PER_ACCOUNT")]
    max_model_calls_per_account: Option<usize>,
    #[serde(rename = "WAGATE_TAKEOVER_MINUTE_SECONDS")]
    takeover_minute_seconds: Option<u64>,
    #[serde(rename = "WAGATE_READ_MODEL_MESSAGES")]
    read_model_messages: Option<usize>,
    #[serde(rename = "WAGATE_READ_MODEL_AI_LOG_ROWS")]
    read_model_ai_log_rows: Option<usize>,
    #[serde(rename = "WAGATE_READ_MODEL_CHECKPOINT_EVERY")]
    read_model_checkpoint_every: Option<usize>,
    #[serde(rename = "WAGATE_MEDIA_MAX_BYTES")]
    media_max_bytes: Option<usize>,
    #[serde(rename = "WAGATE_MEDIA_KEEP_SECONDS")]
    media_keep_seconds: Option<u64>,
    #[serde(rename = "WAGATE_AI_LOG_BODY_RETENTION")]
    ai_log_body_retention: Option<Human>,
    #[serde(rename = "WAGATE_API_RATE_LIMIT_PER_SECOND")]
    api_rate_limit_per_second: Option<u32>,
    #[serde(rename = "WAGATE_API_RATE_LIMIT_BURST")]
    api_rate_limit_burst: Option<u32>,
    #[serde(rename = "WAGATE_WEBHOOK_TIMEOUT")]
    webhook_timeout: Option<Human>,
    #[serde(rename = "WAGATE_HEADER_READ_TIMEOUT")]
    header_read_timeout: Option<Human>,
    #[serde(rename = "WAGATE_BODY_READ_TIMEOUT")]
    body_read_timeout: Option<Human>,
    #[serde(rename = "WAGATE_REQUEST_TIMEOUT")]
    request_timeout: Option<Human>,
    #[serde(rename = "WAGATE_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    #[serde(rename = "WAGATE_LEASE_SECONDS")]
    lease_seconds: Option<u64>,
}

impl Plain {
    /// Extracts the plain settings with figment (lossy: `"64"` reads as a number, `"true"` and
    /// `"1"` as a switch); a value of the wrong type is refused with its variable's message.
    fn extract(vars: &Vars<'_>) -> Result<Self, ConfigError> {
        let set: HashMap<&str, &str> = MESSAGES
            .iter()
            .filter_map(|(var, _)| vars.get(var).map(|v| (*var, v)))
            .collect();
        figment::Figment::from(figment::providers::Serialized::globals(set))
            .extract_lossy::<Plain>()
            .map_err(|e| {
                let var = e.path.first().cloned().unwrap_or_default();
                refused(&var)
            })
    }
}

/// The per-caller API rate limit: `per_second` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiRateLimit {
    pub per_second: std::num::NonZeroU32,
    pub burst: std::num::NonZeroU32,
}

/// Default API requests per second per caller.
pub const DEFAULT_API_RATE_LIMIT_PER_SECOND: u32 = 100;
/// Default API burst per caller.
pub const DEFAULT_API_RATE_LIMIT_BURST: u32 = 500;

fn parse_api_rate_limit(plain: &Plain) -> Result<Option<ApiRateLimit>, ConfigError> {
    let per_second = within(
        "WAGATE_API_RATE_LIMIT_PER_SECOND",
        plain
            .api_rate_limit_per_second
            .unwrap_or(DEFAULT_API_RATE_LIMIT_PER_SECOND),
        0..=1_000_000,
    )?;
    let burst = within(
        "WAGATE_API_RATE_LIMIT_BURST",
        plain
            .api_rate_limit_burst
            .unwrap_or(DEFAULT_API_RATE_LIMIT_BURST),
        1..=1_000_000,
    )?;
    Ok(
        std::num::NonZeroU32::new(per_second).map(|per_second| ApiRateLimit {
            per_second,
            // 1..=1000000 by the check above.
            burst: std::num::NonZeroU32::new(burst).unwrap_or(std::num::NonZeroU32::MIN),
        }),
    )
}

/// Webhook delivery settings.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    /// Waits before each retry (`WAGATE_WEBHOOK_RETRY_SCHEDULE`, comma-separated durations such as
    /// `5s,5m,30m`); after the last one fails the delivery is dead-lettered.
    pub retry_schedule: Vec<Duration>,
    /// Per-request timeout (`WAGATE_WEBHOOK_TIMEOUT`, default 10s).
    pub timeout: Duration,
}

/// The default retry schedule: 7 retries over about 27.5 hours (5s, 5m, 30m, 2h, 5h, 10h, 10h).
pub const DEFAULT_WEBHOOK_SCHEDULE: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            retry_schedule: DEFAULT_WEBHOOK_SCHEDULE.to_vec(),
            timeout: Duration::from_secs(10),
        }
    }
}

fn parse_webhooks(vars: &Vars<'_>, plain: &Plain) -> Result<WebhookConfig, ConfigError> {
    let mut cfg = WebhookConfig::default();
    if let Some(v) = vars.get("WAGATE_WEBHOOK_RETRY_SCHEDULE") {
        let schedule: Result<Vec<Duration>, _> = v
            .split(',')
            .map(|d| humantime::parse_duration(d.trim()))
            .collect();
        cfg.retry_schedule = schedule
            .ok()
            .filter(|s| (1..=50).contains(&s.len()))
            .ok_or_else(|| {
                invalid(
                    "WAGATE_WEBHOOK_RETRY_SCHEDULE",
                    "must be 1 to 50 comma-separated durations, e.g. 5s,5m,30m,2h",
                )
            })?;
    }
    if let Some(Human(d)) = plain.webhook_timeout {
        cfg.timeout = within(
            "WAGATE_WEBHOOK_TIMEOUT",
            d,
            Duration::from_millis(100)..=Duration::from_secs(120),
        )?;
    }
    Ok(cfg)
}

// --- HTTP edge limits and weak-secret rules (issue 21, findings 6 and 8) ---

/// Limits on what one client may hold open at the HTTP edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time to receive a request's head (`WAGATE_HEADER_READ_TIMEOUT`, default 10s); the
    /// connection is closed after it. Also bounds how long an idle keep-alive connection waits
    /// for its next request.
    pub header_read_timeout: Duration,
    /// Time to receive a request's whole body, counted from the end of its head
    /// (`WAGATE_BODY_READ_TIMEOUT`, default 30s): 408 `request_timeout` after it.
    pub body_read_timeout: Duration,
    /// Connections open at once (`WAGATE_MAX_CONNECTIONS`, default 10000); further ones wait in
    /// the listen backlog until one closes.
    pub max_connections: usize,
    /// Time to answer a request once its head is in (`WAGATE_REQUEST_TIMEOUT`, default 5m): 503
    /// `timeout` after it. It bounds the test routes' model calls too.
    pub request_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            request_timeout: Duration::from_secs(300),
        }
    }
}

fn parse_http_limits(plain: &Plain) -> Result<HttpLimits, ConfigError> {
    let defaults = HttpLimits::default();
    let at_least = Duration::from_millis(100);
    let duration = |var: &'static str, value: Option<Human>, default: Duration, max| {
        within(var, value.map_or(default, |h| h.0), at_least..=max)
    };
    Ok(HttpLimits {
        header_read_timeout: duration(
            "WAGATE_HEADER_READ_TIMEOUT",
            plain.header_read_timeout,
            defaults.header_read_timeout,
            Duration::from_secs(300),
        )?,
        body_read_timeout: duration(
            "WAGATE_BODY_READ_TIMEOUT",
            plain.body_read_timeout,
            defaults.body_read_timeout,
            Duration::from_secs(3600),
        )?,
        request_timeout: duration(
            "WAGATE_REQUEST_TIMEOUT",
            plain.request_timeout,
            defaults.request_timeout,
            Duration::from_secs(3600),
        )?,
        max_connections: within(
            "WAGATE_MAX_CONNECTIONS",
            plain.max_connections.unwrap_or(defaults.max_connections),
            1..=1_000_000,
        )?,
    })
}

/// Fewest distinct byte values a JWT secret must have: 32 random bytes, or 32 random hex or
/// base64 characters, have far more; one character repeated, or a short word repeated, fewer.
pub const MIN_JWT_SECRET_DISTINCT_BYTES: usize = 8;

/// Whether a JWT secret is long enough but predictable: too few distinct bytes (e.g. 32 times
/// the same character, or `abcabc…`).
pub fn is_low_entropy_secret(secret: &[u8]) -> bool {
    let mut seen = [false; 256];
    for b in secret {
        seen[usize::from(*b)] = true;
    }
    seen.iter().filter(|s| **s).count() < MIN_JWT_SECRET_DISTINCT_BYTES
}

/// Weak or well-known secrets are accepted (with a warning) only by the embedded SQLite store
/// listening on a loopback address: a developer's machine. Anything reachable from elsewhere, or
/// on PostgreSQL, refuses to start.
fn weak_secrets_tolerated(dev_mode: bool, listen: SocketAddr) -> bool {
    dev_mode && listen.ip().is_loopback()
}

/// Refuses a weak secret (`why` completes "VAR …") unless weak secrets are tolerated, where it
/// only warns.
fn weak_secret(
    var: &'static str,
    why: &str,
    tolerated: bool,
    first: &mut FirstRun,
) -> Result<(), ConfigError> {
    if !tolerated {
        return Err(invalid(
            var,
            format!(
                "{why}; weak secrets are refused unless the embedded SQLite store listens on a \
                 loopback address (WAGATE_LISTEN)"
            ),
        ));
    }
    first.warn(format!(
        "{var} is weak ({why}); accepted only because the embedded dev store listens on loopback"
    ));
    Ok(())
}

// --- end of HTTP edge limits and weak-secret rules ---

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database", &self.database)
            .field("jwt", &self.jwt)
            .field("keyring", &self.keyring)
            .field("admin_username", &self.admin_username)
            .field("admin_password_hash", &"<redacted>")
            .field("allow_private_networks", &self.allow_private_networks)
            .field("ai_env", &self.ai_env)
            .field("dev_mode", &self.dev_mode)
            .field("log_format", &self.log_format)
            .finish()
    }
}

/// What this start generated or noticed, for the binary to print once (logging may not be set up
/// yet when the configuration is read).
#[derive(Debug, Default)]
pub struct FirstRun {
    /// Human lines, e.g. "generated a JWT secret at data/jwt_secret".
    pub generated: Vec<String>,
    /// The generated admin password, only on the start that generated it.
    pub admin_password: Option<SecretString>,
    /// Non-fatal problems, e.g. a secret file readable by other users.
    pub warnings: Vec<String>,
}

impl FirstRun {
    fn warn(&mut self, line: String) {
        tracing::warn!("{line}");
        self.warnings.push(line);
    }
}

/// Passwords refused outside dev mode (compared case-insensitively, also with trailing digits
/// and punctuation removed, so `Password2024!` is refused too).
const WELL_KNOWN_PASSWORDS: &[&str] = &[
    "admin",
    "administrator",
    "password",
    "passw0rd",
    "changeme",
    "change_me",
    "wagate",
    "wagateadmin",
    "123456",
    "12345678",
    "123456789",
    "1234567890",
    "123456789012",
    "qwerty",
    "qwertyuiop",
    "letmein",
    "secret",
    "default",
    "welcome",
    "root",
    "toor",
    "test",
    "iloveyou",
];

/// Whether `pw` is a well-known default (see [`WELL_KNOWN_PASSWORDS`]) or one repeated character.
pub fn is_well_known_password(pw: &str) -> bool {
    let lower = pw.to_lowercase();
    let stem = lower.trim_end_matches(|c: char| c.is_ascii_digit() || c.is_ascii_punctuation());
    let mut chars = lower.chars();
    let single_char = chars.next().is_some_and(|first| chars.all(|c| c == first));
    single_char
        || WELL_KNOWN_PASSWORDS
            .iter()
            .any(|w| *w == lower || (!stem.is_empty() && *w == stem))
}

/// Read access to the variables: empty values count as unset.
struct Vars<'a>(&'a HashMap<String, String>);

impl<'a> Vars<'a> {
    /// Trimmed, non-empty.
    fn get(&self, key: &str) -> Option<&'a str> {
        self.0.get(key).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// As given (secrets are taken byte for byte), non-empty.
    fn raw(&self, key: &str) -> Option<&'a str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// Reads a dev secret file; `None` when it does not exist. Warns when others may read it.
fn read_secret_file(path: &Path, first: &mut FirstRun) -> Result<Option<String>, ConfigError> {
    let text = match fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(file_error(path, e)),
    };
    if let Ok(meta) = fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            first.warn(format!(
                "{} is readable by other users; run: chmod 600 {}",
                path.display(),
                path.display()
            ));
        }
    }
    if text.trim().is_empty() {
        return Err(file_error(
            path,
            "is empty; delete it to generate a new one",
        ));
    }
    Ok(Some(text))
}

/// Writes `contents` to `path` atomically with mode 0600 unless the file already exists: a temp
/// file in the same dir is written and synced, then hard-linked into place (create-if-absent, so
/// two processes starting at once keep one secret; rename where links are unsupported). Returns
/// `false` when another process created the file first (the caller then reads that one).
fn create_secret_file(path: &Path, contents: &str) -> Result<bool, ConfigError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(
        ".{name}.{}.{:08x}.tmp",
        std::process::id(),
        rand::rng().next_u32()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
        match fs::hard_link(&tmp, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(_) => fs::rename(&tmp, path).map(|()| true),
        }
    })();
    // The temp name is gone after a rename; otherwise it is an extra link or a partial file.
    let _ = fs::remove_file(&tmp);
    if let Some(dir) = path.parent() {
        // Persist the new directory entry; failure only weakens crash safety.
        let _ = fs::File::open(dir).and_then(|d| d.sync_all());
    }
    result.map_err(|e| file_error(path, e))
}

/// The dev secret at `path`: read back, or generated by `make` and stored. The flag is true when
/// this call generated it.
fn load_or_create(
    path: &Path,
    first: &mut FirstRun,
    make: impl FnOnce() -> Result<String, ConfigError>,
) -> Result<(String, bool), ConfigError> {
    if let Some(existing) = read_secret_file(path, first)? {
        return Ok((existing, false));
    }
    let contents = make()?;
    if create_secret_file(path, &contents)? {
        return Ok((contents, true));
    }
    let existing = read_secret_file(path, first)?
        .ok_or_else(|| file_error(path, "vanished while it was being created"))?;
    Ok((existing, false))
}

/// Validates and normalizes an AI base URL: absolute http(s) with a host, no credentials, query
/// or fragment; a trailing `/` is dropped.
fn check_base_url(var: &'static str, raw: &str) -> Result<String, ConfigError> {
    if raw.len() > MAX_URL_LEN {
        return Err(invalid(var, "must be at most 2048 characters"));
    }
    let url = url::Url::parse(raw)
        .map_err(|e| invalid(var, format!("must be an absolute http(s) URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(var, "must be an http:// or https:// URL"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(var, "must be a URL with a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            var,
            "must not carry credentials; put the key in WAGATE_AI_API_KEY",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(var, "must not have a query string or fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// `postgres://user@host:port/db` without password or query parameters (which may hold one).
fn redact_postgres_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            // Both only fail for URLs that cannot have credentials; then there is nothing to strip.
            let _ = u.set_password(None);
            u.set_query(None);
            u.set_fragment(None);
            u.to_string()
        }
        Err(_) => "postgres://<unparsable>".to_string(),
    }
}

fn parse_database(vars: &Vars<'_>, data_dir: &Path) -> Result<DatabaseConfig, ConfigError> {
    const VAR: &str = "WAGATE_DATABASE_URL";
    let Some(raw) = vars.get(VAR) else {
        return Ok(DatabaseConfig::Sqlite {
            path: data_dir.join("wagate.db"),
        });
    };
    if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
        // The url crate's errors never quote the input, which may contain a password.
        url::Url::parse(raw)
            .map_err(|e| invalid(VAR, format!("must be a valid postgres:// URL ({e})")))?;
        return Ok(DatabaseConfig::Postgres {
            url: SecretString::from(raw),
        });
    }
    let path = raw
        .strip_prefix("sqlite://")
        .or_else(|| raw.strip_prefix("sqlite:"))
        .ok_or_else(|| {
            invalid(
                VAR,
                "must be sqlite://PATH, sqlite:PATH, postgres://… or postgresql://…",
            )
        })?;
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() {
        return Err(invalid(VAR, "must name a file after sqlite://"));
    }
    Ok(DatabaseConfig::Sqlite {
        path: PathBuf::from(path),
    })
}

fn parse_networks(vars: &Vars<'_>) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    const VAR: &str = "WAGATE_ALLOW_PRIVATE_NETWORKS";
    let Some(list) = vars.get(VAR) else {
        return Ok(Vec::new());
    };
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    invalid(
                        VAR,
                        format!(
                            "must be comma-separated CIDRs or IP addresses (e.g. 127.0.0.0/8,::1); \
                             {s:?} is neither"
                        ),
                    )
                })
        })
        .collect()
}

impl Config {
    /// Reads the process environment once (non-UTF-8 variables are ignored) and validates it.
    pub fn from_env() -> Result<(Config, FirstRun), ConfigError> {
        let vars: HashMap<String, String> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        Self::from_vars(&vars)
    }

    /// Builds and validates the configuration from these variables (tests pass their own map),
    /// under the settings of the config file `WAGATE_CONFIG` names, if any.
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<(Config, FirstRun), ConfigError> {
        let mut first = FirstRun::default();
        let merged = with_config_file(vars, &mut first)?;
        let vars = Vars(&merged);

        let plain = Plain::extract(&vars)?;
        let listen = plain
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let data_dir = PathBuf::from(vars.get("WAGATE_DATA_DIR").unwrap_or("./data"));
        let database = parse_database(&vars, &data_dir)?;
        let dev_mode = matches!(database, DatabaseConfig::Sqlite { .. });

        let needs_dev_files = dev_mode
            && (vars.raw("WAGATE_JWT_SECRET").is_none()
                || vars.get("WAGATE_MASTER_KEY").is_none()
                || vars.raw("WAGATE_ADMIN_PASSWORD").is_none());
        if needs_dev_files {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&data_dir)
                .map_err(|e| file_error(&data_dir, format!("cannot create the data dir: {e}")))?;
        }

        let tolerated = weak_secrets_tolerated(dev_mode, listen);
        let jwt = Self::jwt_signer(&vars, dev_mode, tolerated, &data_dir, &mut first)?;
        let keyring = Self::keyring(&vars, dev_mode, &data_dir, &mut first)?;
        let admin_username = vars
            .get("WAGATE_ADMIN_USERNAME")
            .unwrap_or("admin")
            .to_string();
        let admin_password_hash =
            Self::admin_password(&vars, dev_mode, tolerated, &data_dir, &mut first)?;
        let allow_private_networks = parse_networks(&vars)?;
        let allow_private_networks_for_accounts =
            plain.allow_private_networks_for_accounts.unwrap_or(false);

        let base_url = match vars.get("WAGATE_AI_BASE_URL") {
            Some(u) => Some(check_base_url("WAGATE_AI_BASE_URL", u)?),
            None => vars
                .get("OPENAI_BASE_URL")
                .map(|u| check_base_url("OPENAI_BASE_URL", u))
                .transpose()?,
        };
        let ai_env = EnvAiLayer {
            base_url,
            api_key: vars
                .get("WAGATE_AI_API_KEY")
                .or_else(|| vars.get("OPENAI_API_KEY"))
                .map(SecretString::from),
            model_name: vars.get("WAGATE_AI_MODEL").map(str::to_string),
        };
        let log_format = match plain
            .log_format
            .as_deref()
            .unwrap_or("text")
            .to_ascii_lowercase()
            .as_str()
        {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => return Err(refused("WAGATE_LOG_FORMAT")),
        };

        let model_calls =
            |var, value: Option<usize>, default| within(var, value.unwrap_or(default), 1..=100_000);
        let max_model_calls = model_calls("WAGATE_MAX_MODEL_CALLS", plain.max_model_calls, 1024)?;
        let max_model_calls_per_account = model_calls(
            "WAGATE_MAX_MODEL_CALLS_PER_ACCOUNT",
            plain.max_model_calls_per_account,
            256,
        )?;
        let takeover_minute = Duration::from_secs(within(
            "WAGATE_TAKEOVER_MINUTE_SECONDS",
            plain.takeover_minute_seconds.unwrap_or(60),
            1..=60,
        )?);
        let webhooks = parse_webhooks(&vars, &plain)?;
        let http = parse_http_limits(&plain)?;
        let retained = |var, value: Option<usize>, default| {
            within(var, value.unwrap_or(default), 0..=1_000_000_000)
        };
        let ai_log_body_retention = plain
            .ai_log_body_retention
            .map(|Human(d)| {
                within(
                    "WAGATE_AI_LOG_BODY_RETENTION",
                    d,
                    Duration::from_secs(1)..=Duration::MAX,
                )
            })
            .transpose()?;
        let read_model = Retention {
            messages: retained(
                "WAGATE_READ_MODEL_MESSAGES",
                plain.read_model_messages,
                DEFAULT_READ_MODEL.messages,
            )?,
            ai_log: retained(
                "WAGATE_READ_MODEL_AI_LOG_ROWS",
                plain.read_model_ai_log_rows,
                DEFAULT_READ_MODEL.ai_log,
            )?,
        };
        let checkpoint_every = retained(
            "WAGATE_READ_MODEL_CHECKPOINT_EVERY",
            plain.read_model_checkpoint_every,
            DEFAULT_CHECKPOINT_EVERY as usize,
        )? as u64;
        let media_max_bytes = within(
            "WAGATE_MEDIA_MAX_BYTES",
            plain.media_max_bytes.unwrap_or(DEFAULT_MEDIA_MAX_BYTES),
            1..=MEDIA_MAX_BYTES_LIMIT,
        )?;
        let media_keep = Duration::from_secs(within(
            "WAGATE_MEDIA_KEEP_SECONDS",
            plain.media_keep_seconds.unwrap_or(0),
            0..=MEDIA_KEEP_SECONDS_LIMIT,
        )?);
        let api_rate_limit = parse_api_rate_limit(&plain)?;
        let cluster = parse_cluster(&vars, &plain, listen)?;
        let whatsapp_web = parse_whatsapp_web(&vars)?;

        Ok((
            Config {
                listen,
                data_dir,
                database,
                jwt,
                keyring,
                admin_username,
                admin_password_hash,
                allow_private_networks,
                allow_private_networks_for_accounts,
                ai_env,
                dev_mode,
                log_format,
                max_model_calls,
                max_model_calls_per_account,
                takeover_minute,
                webhooks,
                read_model,
                ai_log_body_retention,
                checkpoint_every,
                http,
                api_rate_limit,
                cluster,
                whatsapp_web,
                media_max_bytes,
                media_keep,
            },
            first,
        ))
    }

    /// `WAGATE_JWT_SECRET` (raw bytes), else in dev mode the base64 `jwt_secret` file.
    fn jwt_signer(
        vars: &Vars<'_>,
        dev_mode: bool,
        tolerated: bool,
        data_dir: &Path,
        first: &mut FirstRun,
    ) -> Result<JwtSigner, ConfigError> {
        let issuer = vars.get("WAGATE_JWT_ISSUER").unwrap_or("wagate");
        if let Some(secret) = vars.raw("WAGATE_JWT_SECRET") {
            if secret.len() >= auth::MIN_JWT_SECRET && is_low_entropy_secret(secret.as_bytes()) {
                weak_secret(
                    "WAGATE_JWT_SECRET",
                    &format!(
                        "has fewer than {MIN_JWT_SECRET_DISTINCT_BYTES} distinct bytes, so it can \
                         be guessed (use e.g. $(openssl rand -base64 48))"
                    ),
                    tolerated,
                    first,
                )?;
            }
            return JwtSigner::new(secret.as_bytes(), issuer).map_err(|_| {
                invalid(
                    "WAGATE_JWT_SECRET",
                    format!(
                        "must be at least {} bytes (e.g. $(openssl rand -base64 48))",
                        auth::MIN_JWT_SECRET
                    ),
                )
            });
        }
        if !dev_mode {
            return Err(ConfigError::Missing {
                var: "WAGATE_JWT_SECRET",
                hint: "set at least 32 random bytes, e.g. WAGATE_JWT_SECRET=$(openssl rand -base64 48)",
            });
        }
        let path = data_dir.join(JWT_SECRET_FILE);
        let (text, created) = load_or_create(&path, first, || {
            let mut bytes = SecretBox::new(Box::new([0u8; GENERATED_JWT_SECRET_BYTES]));
            rand::rng().fill_bytes(bytes.expose_secret_mut());
            Ok(STANDARD.encode(bytes.expose_secret()))
        })?;
        if created {
            first
                .generated
                .push(format!("generated a JWT secret at {}", path.display()));
        }
        let text = SecretString::from(text);
        let bytes = SecretBox::new(Box::new(
            STANDARD
                .decode(text.expose_secret().trim())
                .map_err(|_| file_error(&path, "is not base64; delete it to generate a new one"))?,
        ));
        JwtSigner::new(bytes.expose_secret(), issuer).map_err(|_| {
            file_error(
                &path,
                format!(
                    "must hold at least {} bytes; delete it to generate a new one",
                    auth::MIN_JWT_SECRET
                ),
            )
        })
    }

    /// `WAGATE_MASTER_KEY` (+ `WAGATE_MASTER_KEYS_OLD`), else in dev mode the `master.key` file
    /// (current key on the first line, old keys after it).
    fn keyring(
        vars: &Vars<'_>,
        dev_mode: bool,
        data_dir: &Path,
        first: &mut FirstRun,
    ) -> Result<Keyring, ConfigError> {
        let old = match vars.get("WAGATE_MASTER_KEYS_OLD") {
            Some(list) => list
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .enumerate()
                .map(|(i, s)| {
                    MasterKey::from_base64(s).map_err(|e| {
                        invalid(
                            "WAGATE_MASTER_KEYS_OLD",
                            format!("entry {} is invalid: {e}", i + 1),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        if let Some(k) = vars.get("WAGATE_MASTER_KEY") {
            let current = MasterKey::from_base64(k).map_err(|e| {
                invalid(
                    "WAGATE_MASTER_KEY",
                    format!("is invalid: {e}; generate one with: openssl rand -base64 64"),
                )
            })?;
            return Ok(Keyring::new(current, old));
        }
        if !dev_mode {
            return Err(ConfigError::Missing {
                var: "WAGATE_MASTER_KEY",
                hint: "set base64 of 64 random bytes, e.g. WAGATE_MASTER_KEY=$(openssl rand -base64 64)",
            });
        }
        let path = data_dir.join(MASTER_KEY_FILE);
        let (text, created) = load_or_create(&path, first, || {
            Ok(format!("{}\n", MasterKey::generate().to_base64()))
        })?;
        if created {
            first
                .generated
                .push(format!("generated a master key at {}", path.display()));
        }
        let text = SecretString::from(text);
        let mut keys = text
            .expose_secret()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                MasterKey::from_base64(l)
                    .map_err(|e| file_error(&path, format!("line {} is invalid: {e}", i + 1)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(file_error(&path, "holds no key"));
        }
        let current = keys.remove(0);
        keys.extend(old);
        Ok(Keyring::new(current, keys))
    }

    /// Argon2 PHC of `WAGATE_ADMIN_PASSWORD` (a weak one refused unless `tolerated`), else in dev
    /// mode the `admin_password.hash` file, generated with a random password on first start.
    fn admin_password(
        vars: &Vars<'_>,
        dev_mode: bool,
        tolerated: bool,
        data_dir: &Path,
        first: &mut FirstRun,
    ) -> Result<String, ConfigError> {
        const VAR: &str = "WAGATE_ADMIN_PASSWORD";
        let hash_err = |_| invalid(VAR, "cannot be hashed");
        if let Some(pw) = vars.raw(VAR) {
            let weak = if is_well_known_password(pw) {
                Some("must not be a well-known default password")
            } else if pw.chars().count() < MIN_ADMIN_PASSWORD_CHARS {
                Some("must be at least 12 characters")
            } else {
                None
            };
            if let Some(why) = weak {
                weak_secret(
                    VAR,
                    &format!("{why} (e.g. $(openssl rand -base64 18))"),
                    tolerated,
                    first,
                )?;
            }
            return auth::hash_password(pw).map_err(hash_err);
        }
        if !dev_mode {
            return Err(ConfigError::Missing {
                var: VAR,
                hint: "set at least 12 characters that are not a well-known default, e.g. \
                       WAGATE_ADMIN_PASSWORD=$(openssl rand -base64 18)",
            });
        }
        let path = data_dir.join(ADMIN_PASSWORD_HASH_FILE);
        let mut generated: Option<SecretString> = None;
        let (hash, created) = load_or_create(&path, first, || {
            let pw = SecretString::from(
                Alphanumeric.sample_string(&mut rand::rng(), GENERATED_PASSWORD_CHARS),
            );
            let hash = auth::hash_password(pw.expose_secret()).map_err(hash_err)?;
            generated = Some(pw);
            Ok(format!("{hash}\n"))
        })?;
        let hash = hash.trim().to_string();
        if !hash.starts_with("$argon2") {
            return Err(file_error(
                &path,
                "is not an argon2 PHC string; delete it to generate a new password",
            ));
        }
        if created {
            first.generated.push(format!(
                "generated the admin password; its argon2 hash is at {} (delete it to generate a new one)",
                path.display()
            ));
            first.admin_password = generated;
        }
        Ok(hash)
    }

    /// A one-line description for logs: listen address, data dir, store (PostgreSQL URL without
    /// password), issuer, allowed networks and whether an env AI key is set. Never a secret.
    pub fn redacted_summary(&self) -> String {
        let store = match &self.database {
            DatabaseConfig::Sqlite { path } => format!("sqlite:{}", path.display()),
            DatabaseConfig::Postgres { url } => redact_postgres_url(url.expose_secret()),
        };
        let networks: Vec<String> = self
            .allow_private_networks
            .iter()
            .map(ToString::to_string)
            .collect();
        format!(
            "listen={} data_dir={} store={} dev_mode={} jwt_issuer={} admin_username={} \
             master_keys={} allow_private_networks=[{}] env_ai_base_url={} env_ai_key_set={} \
             env_ai_model={}",
            self.listen,
            self.data_dir.display(),
            store,
            self.dev_mode,
            self.jwt.issuer(),
            self.admin_username,
            self.keyring.kids().len(),
            networks.join(","),
            self.ai_env.base_url.as_deref().unwrap_or("-"),
            self.ai_env.api_key.is_some(),
            self.ai_env.model_name.as_deref().unwrap_or("-"),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const JWT: &str = "0123456789abcdef0123456789abcdef-config-test";
    const PASSWORD: &str = "a long enough passphrase";

    fn vars(dir: &Path, extra: &[(&str, &str)]) -> HashMap<String, String> {
        let mut v = HashMap::new();
        v.insert("WAGATE_DATA_DIR".to_string(), dir.display().to_string());
        for (k, val) in extra {
            v.insert((*k).to_string(), (*val).to_string());
        }
        v
    }

    fn key_b64(byte: u8) -> String {
        STANDARD.encode([byte; 64])
    }

    /// Postgres with all required secrets, plus `extra` (later entries win).
    fn pg(dir: &Path, extra: &[(&str, &str)]) -> HashMap<String, String> {
        let key = key_b64(7);
        let mut all = vec![
            (
                "WAGATE_DATABASE_URL",
                "postgres://wagate:pg-pass-xyz@db.internal:5432/wagate",
            ),
            ("WAGATE_JWT_SECRET", JWT),
            ("WAGATE_MASTER_KEY", key.as_str()),
            ("WAGATE_ADMIN_PASSWORD", PASSWORD),
        ];
        all.extend_from_slice(extra);
        vars(dir, &all)
    }

    fn err_of(v: &HashMap<String, String>) -> String {
        match Config::from_vars(v) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    #[test]
    fn dev_first_run_generates_secret_files_0600() {
        let dir = tempfile::tempdir().expect("tmp");
        let data = dir.path().join("data");
        let (c, first) = Config::from_vars(&vars(&data, &[])).expect("first run");
        assert!(c.dev_mode);
        assert_eq!(mode(&data), 0o700, "data dir");
        for f in [JWT_SECRET_FILE, MASTER_KEY_FILE, ADMIN_PASSWORD_HASH_FILE] {
            assert_eq!(mode(&data.join(f)), 0o600, "{f}");
        }
        assert_eq!(first.generated.len(), 3, "{:?}", first.generated);
        assert!(first.warnings.is_empty(), "{:?}", first.warnings);
        let pw = first.admin_password.expect("generated password");
        assert_eq!(pw.expose_secret().len(), 24);
        assert!(auth::verify_password(
            &c.admin_password_hash,
            pw.expose_secret()
        ));
        let jwt_file = fs::read_to_string(data.join(JWT_SECRET_FILE)).expect("read");
        assert_eq!(STANDARD.decode(jwt_file.trim()).expect("b64").len(), 64);
        // No temp files left behind.
        let names: Vec<String> = fs::read_dir(&data)
            .expect("dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(c.admin_username, "admin");
        assert_eq!(c.listen, "127.0.0.1:8080".parse().expect("addr"));
        assert!(
            matches!(&c.database, DatabaseConfig::Sqlite { path } if *path == data.join("wagate.db"))
        );
        assert_eq!(c.log_format, LogFormat::Text);
    }

    #[test]
    fn node_url_is_checked_and_defaults_to_the_listening_address() {
        let dir = tempfile::tempdir().expect("tmp");
        let (c, _) = Config::from_vars(&vars(dir.path(), &[])).expect("defaults");
        assert_eq!(c.cluster.url, None);
        let addr: SocketAddr = "127.0.0.1:8081".parse().expect("addr");
        assert_eq!(c.cluster.advertised_url(addr), "http://127.0.0.1:8081");
        let any: SocketAddr = "[::]:8082".parse().expect("addr");
        assert_eq!(
            c.cluster.advertised_url(any),
            format!("http://{}:8082", host_name())
        );
        let set = vars(
            dir.path(),
            &[("WAGATE_NODE_URL", "https://gw1.internal:8443/")],
        );
        let (c, _) = Config::from_vars(&set).expect("a URL");
        assert_eq!(c.cluster.advertised_url(addr), "https://gw1.internal:8443");
        for bad in [
            "gw1:8080",
            "ftp://gw1",
            "http://user:pw@gw1",
            "http://gw1/?a=b",
            "http://",
        ] {
            let e = err_of(&vars(dir.path(), &[("WAGATE_NODE_URL", bad)]));
            assert!(e.contains("WAGATE_NODE_URL"), "{bad}: {e}");
        }
    }

    #[test]
    fn dev_second_run_reuses_secrets() {
        let dir = tempfile::tempdir().expect("tmp");
        let v = vars(dir.path(), &[]);
        let (c1, first) = Config::from_vars(&v).expect("first");
        assert!(first.admin_password.is_some());
        let (c2, second) = Config::from_vars(&v).expect("second");
        assert!(second.admin_password.is_none());
        assert!(second.generated.is_empty(), "{:?}", second.generated);
        let (t, _) = c1.jwt.issue("admin", Duration::from_secs(60)).expect("t");
        assert!(c2.jwt.verify(&t).is_ok(), "same JWT secret across starts");
        let sealed = c1.keyring.seal(b"k", "ad");
        assert!(c2.keyring.open(&sealed, "ad").is_ok(), "same master key");
        assert_eq!(c1.admin_password_hash, c2.admin_password_hash);
    }

    #[test]
    fn dev_env_overrides_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let (from_files, _) = Config::from_vars(&vars(dir.path(), &[])).expect("files");
        let key = key_b64(9);
        let v = vars(
            dir.path(),
            &[
                ("WAGATE_JWT_SECRET", JWT),
                ("WAGATE_MASTER_KEY", &key),
                ("WAGATE_ADMIN_PASSWORD", "dev"),
            ],
        );
        let (c, first) = Config::from_vars(&v).expect("env");
        assert!(first.admin_password.is_none() && first.generated.is_empty());
        assert_eq!(first.warnings.len(), 1, "weak dev password is a warning");
        let (t, _) = from_files
            .jwt
            .issue("a", Duration::from_secs(60))
            .expect("t");
        assert!(c.jwt.verify(&t).is_err(), "env JWT secret wins");
        assert_ne!(c.keyring.current_kid(), from_files.keyring.current_kid());
        assert!(auth::verify_password(&c.admin_password_hash, "dev"));
        let signer = JwtSigner::new(JWT.as_bytes(), "wagate").expect("signer");
        let (t, _) = signer.issue("a", Duration::from_secs(60)).expect("t");
        assert!(c.jwt.verify(&t).is_ok(), "raw bytes of WAGATE_JWT_SECRET");
    }

    #[test]
    fn dev_env_only_writes_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let data = dir.path().join("data");
        let key = key_b64(1);
        let v = vars(
            &data,
            &[
                ("WAGATE_JWT_SECRET", JWT),
                ("WAGATE_MASTER_KEY", &key),
                ("WAGATE_ADMIN_PASSWORD", PASSWORD),
            ],
        );
        let (c, first) = Config::from_vars(&v).expect("env only");
        assert!(c.dev_mode && first.generated.is_empty());
        assert!(!data.exists());
    }

    #[test]
    fn dev_master_key_file_holds_old_keys() {
        let dir = tempfile::tempdir().expect("tmp");
        let (k1, k2) = (key_b64(1), key_b64(2));
        fs::write(dir.path().join(MASTER_KEY_FILE), format!("{k2}\n\n{k1}\n")).expect("write");
        fs::set_permissions(
            dir.path().join(MASTER_KEY_FILE),
            fs::Permissions::from_mode(0o644),
        )
        .expect("chmod");
        let (c, first) = Config::from_vars(&vars(dir.path(), &[])).expect("config");
        let kids = c.keyring.kids();
        assert_eq!(kids.len(), 2);
        let old = Keyring::new(MasterKey::from_base64(&k1).expect("k1"), vec![]);
        assert_eq!(kids[1], old.current_kid());
        assert!(
            first.warnings.iter().any(|w| w.contains("chmod 600")),
            "{:?}",
            first.warnings
        );
    }

    #[test]
    fn dev_corrupt_files_refused_with_path() {
        let dir = tempfile::tempdir().expect("tmp");
        fs::write(dir.path().join(MASTER_KEY_FILE), "not-a-key\n").expect("write");
        let e = err_of(&vars(dir.path(), &[]));
        assert!(e.contains(MASTER_KEY_FILE) && e.contains("line 1"), "{e}");
        assert!(!e.contains("not-a-key"), "{e}");

        let dir = tempfile::tempdir().expect("tmp");
        fs::write(dir.path().join(JWT_SECRET_FILE), STANDARD.encode([1u8; 8])).expect("write");
        let e = err_of(&vars(dir.path(), &[]));
        assert!(e.contains(JWT_SECRET_FILE) && e.contains("32 bytes"), "{e}");

        let dir = tempfile::tempdir().expect("tmp");
        fs::write(dir.path().join(ADMIN_PASSWORD_HASH_FILE), "plaintext").expect("write");
        let e = err_of(&vars(dir.path(), &[]));
        assert!(e.contains(ADMIN_PASSWORD_HASH_FILE), "{e}");
    }

    #[test]
    fn postgres_requires_secrets() {
        let dir = tempfile::tempdir().expect("tmp");
        let url = ("WAGATE_DATABASE_URL", "postgres://u@127.0.0.1/db");
        let e = err_of(&vars(dir.path(), &[url]));
        assert!(
            e.contains("WAGATE_JWT_SECRET") && e.contains("openssl rand"),
            "{e}"
        );
        let e = err_of(&vars(dir.path(), &[url, ("WAGATE_JWT_SECRET", JWT)]));
        assert!(
            e.contains("WAGATE_MASTER_KEY") && e.contains("openssl rand -base64 64"),
            "{e}"
        );
        let key = key_b64(3);
        let e = err_of(&vars(
            dir.path(),
            &[url, ("WAGATE_JWT_SECRET", JWT), ("WAGATE_MASTER_KEY", &key)],
        ));
        assert!(e.contains("WAGATE_ADMIN_PASSWORD"), "{e}");
        assert_eq!(
            fs::read_dir(dir.path()).expect("dir").count(),
            0,
            "no dev files"
        );
    }

    #[test]
    fn read_model_and_retention_settings() {
        let dir = tempfile::tempdir().expect("tmp");
        let (c, _) = Config::from_vars(&pg(dir.path(), &[])).expect("config");
        assert_eq!(c.read_model, DEFAULT_READ_MODEL);
        assert_eq!(c.ai_log_body_retention, None);
        assert_eq!(c.media_keep, Duration::ZERO, "media is not kept by default");
        assert_eq!(c.checkpoint_every, DEFAULT_CHECKPOINT_EVERY);
        let (c, _) = Config::from_vars(&pg(
            dir.path(),
            &[
                ("WAGATE_READ_MODEL_CHECKPOINT_EVERY", "0"),
                ("WAGATE_READ_MODEL_MESSAGES", "0"),
                ("WAGATE_READ_MODEL_AI_LOG_ROWS", "5000"),
                ("WAGATE_AI_LOG_BODY_RETENTION", "30d"),
            ],
        ))
        .expect("config");
        assert_eq!((c.read_model.messages, c.read_model.ai_log), (0, 5000));
        assert_eq!(c.checkpoint_every, 0);
        assert_eq!(
            c.ai_log_body_retention,
            Some(Duration::from_secs(30 * 86_400))
        );
        for (var, bad) in [
            ("WAGATE_READ_MODEL_MESSAGES", "-1"),
            ("WAGATE_READ_MODEL_AI_LOG_ROWS", "2000000000"),
            ("WAGATE_READ_MODEL_CHECKPOINT_EVERY", "many"),
            ("WAGATE_AI_LOG_BODY_RETENTION", "0s"),
            ("WAGATE_AI_LOG_BODY_RETENTION", "forever"),
        ] {
            let e = err_of(&pg(dir.path(), &[(var, bad)]));
            assert!(e.contains(var), "{var}={bad}: {e}");
        }
    }

    #[test]
    fn api_rate_limit_settings() {
        let dir = tempfile::tempdir().expect("tmp");
        let (c, _) = Config::from_vars(&pg(dir.path(), &[])).expect("config");
        let limit = c.api_rate_limit.expect("on by default");
        assert_eq!(
            (limit.per_second.get(), limit.burst.get()),
            (
                DEFAULT_API_RATE_LIMIT_PER_SECOND,
                DEFAULT_API_RATE_LIMIT_BURST
            )
        );
        let (c, _) = Config::from_vars(&pg(
            dir.path(),
            &[
                ("WAGATE_API_RATE_LIMIT_PER_SECOND", "2"),
                ("WAGATE_API_RATE_LIMIT_BURST", "3"),
            ],
        ))
        .expect("config");
        let limit = c.api_rate_limit.expect("on");
        assert_eq!((limit.per_second.get(), limit.burst.get()), (2, 3));
        let (c, _) = Config::from_vars(&pg(
            dir.path(),
            &[("WAGATE_API_RATE_LIMIT_PER_SECOND", "0")],
        ))
        .expect("config");
        assert_eq!(c.api_rate_limit, None, "0 turns the limit off");
        for (var, bad, says) in [
            (
                "WAGATE_API_RATE_LIMIT_PER_SECOND",
                "-1",
                "must be a whole number from 0 (no limit) to 1000000",
            ),
            (
                "WAGATE_API_RATE_LIMIT_PER_SECOND",
                "fast",
                "must be a whole number from 0 (no limit) to 1000000",
            ),
            (
                "WAGATE_API_RATE_LIMIT_BURST",
                "0",
                "must be a whole number from 1 to 1000000",
            ),
            (
                "WAGATE_API_RATE_LIMIT_BURST",
                "2000000",
                "must be a whole number from 1 to 1000000",
            ),
        ] {
            let e = err_of(&pg(dir.path(), &[(var, bad)]));
            assert_eq!(e, format!("{var} {says}"), "{var}={bad}");
        }
    }

    #[test]
    fn postgres_with_secrets_accepted() {
        let dir = tempfile::tempdir().expect("tmp");
        let (c, first) = Config::from_vars(&pg(dir.path(), &[])).expect("config");
        assert!(!c.dev_mode);
        assert!(matches!(c.database, DatabaseConfig::Postgres { .. }));
        assert!(first.admin_password.is_none() && first.generated.is_empty());
        assert!(auth::verify_password(&c.admin_password_hash, PASSWORD));
        let v = pg(
            dir.path(),
            &[("WAGATE_DATABASE_URL", "postgresql://u@localhost/db")],
        );
        assert!(!Config::from_vars(&v).expect("postgresql://").0.dev_mode);
    }

    #[test]
    fn short_jwt_secret_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        for v in [
            vars(
                dir.path(),
                &[("WAGATE_JWT_SECRET", "too-short-secret-value")],
            ),
            pg(
                dir.path(),
                &[("WAGATE_JWT_SECRET", "too-short-secret-value")],
            ),
        ] {
            let e = err_of(&v);
            assert!(
                e.contains("WAGATE_JWT_SECRET must be at least 32 bytes"),
                "{e}"
            );
            assert!(!e.contains("too-short-secret-value"), "{e}");
        }
    }

    #[test]
    fn malformed_master_key_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let short = STANDARD.encode([5u8; 32]);
        for bad in ["bm90LWEta2V5", "%%% not base64 %%%", short.as_str()] {
            let e = err_of(&vars(dir.path(), &[("WAGATE_MASTER_KEY", bad)]));
            assert!(e.contains("WAGATE_MASTER_KEY"), "{e}");
            assert!(!e.contains(bad), "{e}");
        }
        let e = err_of(&pg(dir.path(), &[("WAGATE_MASTER_KEY", short.as_str())]));
        assert!(e.contains("got 32 bytes"), "{e}");
        let e = err_of(&pg(dir.path(), &[("WAGATE_MASTER_KEYS_OLD", "abc")]));
        assert!(e.contains("WAGATE_MASTER_KEYS_OLD"), "{e}");
    }

    #[test]
    fn master_keys_from_env_with_old_keys() {
        let dir = tempfile::tempdir().expect("tmp");
        let (k1, k2) = (key_b64(1), key_b64(2));
        // `openssl rand -base64 64` output wraps after 64 characters.
        let wrapped = format!("{}\n{}", &k2[..64], &k2[64..]);
        let old = format!("{k1}, ");
        let v = pg(
            dir.path(),
            &[
                ("WAGATE_MASTER_KEY", &wrapped),
                ("WAGATE_MASTER_KEYS_OLD", &old),
            ],
        );
        let (c, _) = Config::from_vars(&v).expect("config");
        assert_eq!(c.keyring.kids().len(), 2);
        let ring1 = Keyring::new(MasterKey::from_base64(&k1).expect("k1"), vec![]);
        let sealed = ring1.seal(b"old secret", "ad");
        assert!(c.keyring.open(&sealed, "ad").is_ok());
        assert!(c.keyring.needs_rotation(&sealed));
    }

    #[test]
    fn weak_admin_password_refused_outside_dev_mode() {
        let dir = tempfile::tempdir().expect("tmp");
        for weak in [
            "admin",
            "Password",
            "CHANGEME",
            "wagate",
            "123456789012",
            "Password2024!",
            "aaaaaaaaaaaaaaaa",
        ] {
            let e = err_of(&pg(dir.path(), &[("WAGATE_ADMIN_PASSWORD", weak)]));
            assert!(
                e.contains("WAGATE_ADMIN_PASSWORD") && e.contains("well-known"),
                "{weak}: {e}"
            );
            assert!(!e.contains(weak), "{e}");
        }
        let e = err_of(&pg(dir.path(), &[("WAGATE_ADMIN_PASSWORD", "Xk3#short")]));
        assert!(e.contains("at least 12 characters"), "{e}");
        // The embedded dev store on loopback accepts it with a warning.
        for listen in ["127.0.0.1:8080", "[::1]:8080"] {
            let (_, first) = Config::from_vars(&vars(
                dir.path(),
                &[
                    ("WAGATE_ADMIN_PASSWORD", "admin"),
                    ("WAGATE_LISTEN", listen),
                ],
            ))
            .expect("dev on loopback accepts");
            assert!(!first.warnings.is_empty(), "{listen}");
        }
    }

    #[test]
    fn weak_admin_password_refused_on_sqlite_outside_loopback() {
        let dir = tempfile::tempdir().expect("tmp");
        for listen in ["0.0.0.0:8080", "[::]:8080", "192.0.2.10:8080"] {
            for weak in ["admin", "changeme", "Password2024!", "Xk3#short"] {
                let e = err_of(&vars(
                    dir.path(),
                    &[("WAGATE_ADMIN_PASSWORD", weak), ("WAGATE_LISTEN", listen)],
                ));
                assert!(
                    e.starts_with("WAGATE_ADMIN_PASSWORD") && e.contains("loopback"),
                    "{listen} {weak}: {e}"
                );
                assert!(!e.contains(weak), "{e}");
            }
        }
        // A strong password is fine anywhere.
        let v = vars(
            dir.path(),
            &[
                ("WAGATE_ADMIN_PASSWORD", PASSWORD),
                ("WAGATE_LISTEN", "0.0.0.0:8080"),
            ],
        );
        assert!(Config::from_vars(&v).expect("strong").1.warnings.is_empty());
    }

    #[test]
    fn low_entropy_jwt_secret_refused_outside_loopback() {
        let dir = tempfile::tempdir().expect("tmp");
        let same = "a".repeat(32);
        let few = "abcabcabcabcabcabcabcabcabcabcabcabc";
        for secret in [same.as_str(), few] {
            for v in [
                vars(
                    dir.path(),
                    &[
                        ("WAGATE_JWT_SECRET", secret),
                        ("WAGATE_LISTEN", "0.0.0.0:8080"),
                    ],
                ),
                pg(dir.path(), &[("WAGATE_JWT_SECRET", secret)]),
            ] {
                let e = err_of(&v);
                assert!(
                    e.starts_with("WAGATE_JWT_SECRET") && e.contains("distinct bytes"),
                    "{e}"
                );
                assert!(!e.contains(secret), "{e}");
            }
            // The dev store on loopback warns.
            let (_, first) = Config::from_vars(&vars(dir.path(), &[("WAGATE_JWT_SECRET", secret)]))
                .expect("dev on loopback accepts");
            assert!(
                first
                    .warnings
                    .iter()
                    .any(|w| w.contains("WAGATE_JWT_SECRET")),
                "{:?}",
                first.warnings
            );
        }
        assert!(is_low_entropy_secret(&[7u8; 64]));
        assert!(!is_low_entropy_secret(JWT.as_bytes()));
        assert!(!is_low_entropy_secret(b"0123456789abcdef0123456789abcdef"));
    }

    /// A config file adds to the environment (which wins); its values are checked like the
    /// variables', and what is not a setting is refused naming the file.
    #[test]
    fn config_file_adds_to_the_environment() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("wagate.toml");
        fs::write(
            &file,
            "WAGATE_MAX_MODEL_CALLS = 2048\nWAGATE_MAX_CONNECTIONS = 64\n\
             WAGATE_ALLOW_PRIVATE_NETWORKS_FOR_ACCOUNTS = true\nWAGATE_REQUEST_TIMEOUT = \"90s\"\n",
        )
        .expect("write");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).expect("chmod");
        let path = file.display().to_string();
        let (c, first) = Config::from_vars(&pg(
            dir.path(),
            &[("WAGATE_CONFIG", &path), ("WAGATE_MAX_CONNECTIONS", "32")],
        ))
        .expect("config");
        assert_eq!(c.max_model_calls, 2048, "from the file");
        assert_eq!(c.http.max_connections, 32, "the environment wins");
        assert!(c.allow_private_networks_for_accounts);
        assert_eq!(c.http.request_timeout, Duration::from_secs(90));
        assert!(first.warnings.is_empty(), "{:?}", first.warnings);

        for (contents, needle) in [
            (
                "WAGATE_MAX_MODEL_CALLS = 0\n",
                "WAGATE_MAX_MODEL_CALLS must be",
            ),
            ("LISTEN = \"0.0.0.0:80\"\n", "LISTEN is not a setting"),
            ("WAGATE_LISTEN = [1, 2]\n", "WAGATE_LISTEN must be a string"),
            ("WAGATE_LISTEN = \n", "wagate.toml"),
        ] {
            fs::write(&file, contents).expect("write");
            let e = err_of(&pg(dir.path(), &[("WAGATE_CONFIG", &path)]));
            assert!(e.contains(needle), "{contents:?}: {e}");
        }
        let e = err_of(&pg(
            dir.path(),
            &[("WAGATE_CONFIG", "/nonexistent/wagate.toml")],
        ));
        assert!(
            e.starts_with("/nonexistent/wagate.toml: WAGATE_CONFIG names no readable file"),
            "{e}"
        );
        // Readable by others: a warning, not a refusal.
        fs::write(&file, "WAGATE_MAX_MODEL_CALLS = 8\n").expect("write");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).expect("chmod");
        let (_, first) =
            Config::from_vars(&pg(dir.path(), &[("WAGATE_CONFIG", &path)])).expect("config");
        assert!(
            first.warnings.iter().any(|l| l.contains("chmod 600")),
            "{:?}",
            first.warnings
        );
    }

    /// Every plain setting refuses a value of the wrong type or out of range with its variable
    /// and message, and reads a good one (numbers and switches from their text).
    #[test]
    fn plain_settings_refuse_bad_values_with_their_messages() {
        let dir = tempfile::tempdir().expect("tmp");
        let bad: &[(&str, &[&str])] = &[
            ("WAGATE_LISTEN", &["nowhere", "127.0.0.1"]),
            ("WAGATE_LOG_FORMAT", &["xml"]),
            (
                "WAGATE_ALLOW_PRIVATE_NETWORKS_FOR_ACCOUNTS",
                &["maybe", "2"],
            ),
            (
                "WAGATE_MAX_MODEL_CALLS",
                &["abc", "0", "100001", "-1", "1.5"],
            ),
            ("WAGATE_MAX_MODEL_CALLS_PER_ACCOUNT", &["many", "0"]),
            ("WAGATE_TAKEOVER_MINUTE_SECONDS", &["0", "61", "x"]),
            ("WAGATE_READ_MODEL_MESSAGES", &["-5", "1000000001"]),
            ("WAGATE_READ_MODEL_AI_LOG_ROWS", &["lots"]),
            ("WAGATE_READ_MODEL_CHECKPOINT_EVERY", &["often"]),
            ("WAGATE_AI_LOG_BODY_RETENTION", &["0s", "forever"]),
            (
                "WAGATE_MEDIA_KEEP_SECONDS",
                &["-1", "1h", "1.5", "315360001"],
            ),
            ("WAGATE_API_RATE_LIMIT_PER_SECOND", &["1000001", "fast"]),
            ("WAGATE_API_RATE_LIMIT_BURST", &["0"]),
            ("WAGATE_WEBHOOK_TIMEOUT", &["50ms", "3m", "soon"]),
            ("WAGATE_HEADER_READ_TIMEOUT", &["10m"]),
            ("WAGATE_BODY_READ_TIMEOUT", &["2h"]),
            ("WAGATE_REQUEST_TIMEOUT", &["0s"]),
            ("WAGATE_MAX_CONNECTIONS", &["0"]),
        ];
        for (var, values) in bad {
            let message = MESSAGES
                .iter()
                .find(|(v, _)| v == var)
                .map(|(_, m)| *m)
                .expect("a message");
            for value in *values {
                let e = err_of(&pg(dir.path(), &[(var, value)]));
                assert_eq!(e, format!("{var} {message}"), "{var}={value}");
            }
        }
        let (c, _) = Config::from_vars(&pg(
            dir.path(),
            &[
                ("WAGATE_LISTEN", " [::1]:9000 "),
                ("WAGATE_LOG_FORMAT", "JSON"),
                ("WAGATE_ALLOW_PRIVATE_NETWORKS_FOR_ACCOUNTS", "1"),
                ("WAGATE_MAX_MODEL_CALLS", "64"),
                ("WAGATE_TAKEOVER_MINUTE_SECONDS", "4"),
                ("WAGATE_AI_LOG_BODY_RETENTION", "30d"),
                ("WAGATE_WEBHOOK_TIMEOUT", "2s"),
                ("WAGATE_MAX_CONNECTIONS", ""),
                ("WAGATE_MEDIA_KEEP_SECONDS", "86400"),
            ],
        ))
        .expect("config");
        assert_eq!(c.media_keep, Duration::from_secs(86_400));
        assert_eq!(c.listen, "[::1]:9000".parse().expect("addr"));
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(c.allow_private_networks_for_accounts);
        assert_eq!(c.max_model_calls, 64);
        assert_eq!(c.takeover_minute, Duration::from_secs(4));
        assert_eq!(
            c.ai_log_body_retention,
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(c.webhooks.timeout, Duration::from_secs(2));
        assert_eq!(c.http.max_connections, 10_000, "empty is unset");
    }

    #[test]
    fn http_limits_settings() {
        let dir = tempfile::tempdir().expect("tmp");
        let (c, _) = Config::from_vars(&pg(dir.path(), &[])).expect("config");
        assert_eq!(c.http, HttpLimits::default());
        let (c, _) = Config::from_vars(&pg(
            dir.path(),
            &[
                ("WAGATE_HEADER_READ_TIMEOUT", "2s"),
                ("WAGATE_BODY_READ_TIMEOUT", "500ms"),
                ("WAGATE_MAX_CONNECTIONS", "64"),
                ("WAGATE_REQUEST_TIMEOUT", "90s"),
            ],
        ))
        .expect("config");
        assert_eq!(
            c.http,
            HttpLimits {
                header_read_timeout: Duration::from_secs(2),
                body_read_timeout: Duration::from_millis(500),
                max_connections: 64,
                request_timeout: Duration::from_secs(90),
            }
        );
        for (var, bad) in [
            ("WAGATE_HEADER_READ_TIMEOUT", "0s"),
            ("WAGATE_HEADER_READ_TIMEOUT", "10m"),
            ("WAGATE_HEADER_READ_TIMEOUT", "soon"),
            ("WAGATE_BODY_READ_TIMEOUT", "50ms"),
            ("WAGATE_BODY_READ_TIMEOUT", "2h"),
            ("WAGATE_MAX_CONNECTIONS", "0"),
            ("WAGATE_MAX_CONNECTIONS", "many"),
            ("WAGATE_REQUEST_TIMEOUT", "2h"),
            ("WAGATE_REQUEST_TIMEOUT", "never"),
        ] {
            let e = err_of(&pg(dir.path(), &[(var, bad)]));
            assert!(
                e.starts_with(var) && e.contains("must be"),
                "{var}={bad}: {e}"
            );
        }
    }

    #[test]
    fn openai_api_key_used_when_wagate_key_absent() {
        let dir = tempfile::tempdir().expect("tmp");
        let v = pg(
            dir.path(),
            &[
                ("OPENAI_API_KEY", "sk-openai-env"),
                ("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1/"),
            ],
        );
        let (c, _) = Config::from_vars(&v).expect("config");
        let key = c
            .ai_env
            .api_key
            .as_ref()
            .map(|k| k.expose_secret().to_string());
        assert_eq!(key.as_deref(), Some("sk-openai-env"));
        assert_eq!(
            c.ai_env.base_url.as_deref(),
            Some("http://127.0.0.1:11434/v1")
        );
        assert!(c.ai_env.model_name.is_none());

        let v = pg(
            dir.path(),
            &[
                ("OPENAI_API_KEY", "sk-openai-env"),
                ("WAGATE_AI_API_KEY", "sk-wagate-env"),
                ("OPENAI_BASE_URL", "https://api.openai.com/v1"),
                ("WAGATE_AI_BASE_URL", "https://example.com/v1"),
                ("WAGATE_AI_MODEL", "gpt-4o-mini"),
            ],
        );
        let (c, _) = Config::from_vars(&v).expect("config");
        let key = c
            .ai_env
            .api_key
            .as_ref()
            .map(|k| k.expose_secret().to_string());
        assert_eq!(key.as_deref(), Some("sk-wagate-env"));
        assert_eq!(c.ai_env.base_url.as_deref(), Some("https://example.com/v1"));
        assert_eq!(c.ai_env.model_name.as_deref(), Some("gpt-4o-mini"));
    }

    #[test]
    fn bad_ai_base_url_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        for bad in [
            "ftp://example.com",
            "example.com/v1",
            "https://user:pw@example.com",
            "https://example.com/v1?key=x",
        ] {
            let e = err_of(&pg(dir.path(), &[("WAGATE_AI_BASE_URL", bad)]));
            assert!(e.contains("WAGATE_AI_BASE_URL"), "{bad}: {e}");
        }
        let e = err_of(&pg(dir.path(), &[("OPENAI_BASE_URL", "nope")]));
        assert!(e.contains("OPENAI_BASE_URL"), "{e}");
    }

    #[test]
    fn bad_allow_private_networks_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        for bad in ["10.0.0.0/33", "localhost", "10.0.0.0/8,,nope"] {
            let e = err_of(&pg(dir.path(), &[("WAGATE_ALLOW_PRIVATE_NETWORKS", bad)]));
            assert!(e.contains("WAGATE_ALLOW_PRIVATE_NETWORKS"), "{bad}: {e}");
        }
        let v = pg(
            dir.path(),
            &[(
                "WAGATE_ALLOW_PRIVATE_NETWORKS",
                "127.0.0.0/8, 192.168.1.7,::1",
            )],
        );
        let (c, _) = Config::from_vars(&v).expect("config");
        let nets: Vec<String> = c
            .allow_private_networks
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(nets, ["127.0.0.0/8", "192.168.1.7/32", "::1/128"]);
    }

    #[test]
    fn bad_listen_database_and_log_format_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        for (var, bad) in [
            ("WAGATE_LISTEN", "nope"),
            ("WAGATE_LISTEN", "localhost:8080"),
            ("WAGATE_DATABASE_URL", "mysql://u:secretpw@h/db"),
            ("WAGATE_DATABASE_URL", "sqlite://"),
            ("WAGATE_DATABASE_URL", "postgres://u:secretpw@[bad/db"),
            ("WAGATE_LOG_FORMAT", "xml"),
        ] {
            let e = err_of(&pg(dir.path(), &[(var, bad)]));
            assert!(e.starts_with(var), "{bad}: {e}");
            assert!(!e.contains("secretpw"), "{e}");
        }
        let v = pg(
            dir.path(),
            &[("WAGATE_LISTEN", "[::]:0"), ("WAGATE_LOG_FORMAT", "json")],
        );
        let (c, _) = Config::from_vars(&v).expect("config");
        assert_eq!(c.listen.port(), 0);
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn sqlite_url_forms() {
        let dir = tempfile::tempdir().expect("tmp");
        for (url, path) in [
            ("sqlite://db/w.db", "db/w.db"),
            ("sqlite:w.db", "w.db"),
            ("sqlite:///abs/w.db?mode=rwc", "/abs/w.db"),
        ] {
            let (c, _) = Config::from_vars(&vars(dir.path(), &[("WAGATE_DATABASE_URL", url)]))
                .expect("config");
            assert!(c.dev_mode);
            assert!(
                matches!(&c.database, DatabaseConfig::Sqlite { path: p } if p == Path::new(path)),
                "{url}"
            );
        }
    }

    #[test]
    fn debug_and_summary_print_no_secret() {
        let dir = tempfile::tempdir().expect("tmp");
        let key = key_b64(0x5a);
        let v = pg(
            dir.path(),
            &[
                ("WAGATE_MASTER_KEY", &key),
                ("WAGATE_AI_API_KEY", "sk-canary-config"),
                ("WAGATE_JWT_ISSUER", "wagate-test"),
                (
                    "WAGATE_DATABASE_URL",
                    "postgres://wagate:pg-pass-xyz@db.internal:5432/wagate?password=pg-pass-xyz",
                ),
            ],
        );
        let (c, _) = Config::from_vars(&v).expect("config");
        let summary = c.redacted_summary();
        let text = format!("{c:?} {c:#?} {summary}");
        for secret in [
            JWT,
            &key[..16],
            "WlpaWlpa",
            "sk-canary-config",
            "pg-pass-xyz",
            PASSWORD,
            c.admin_password_hash.as_str(),
        ] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert!(
            summary.contains("postgres://wagate@db.internal:5432/wagate"),
            "{summary}"
        );
        assert!(summary.contains("jwt_issuer=wagate-test"), "{summary}");
        assert!(summary.contains("env_ai_key_set=true"), "{summary}");
        assert_eq!(c.jwt.issuer(), "wagate-test");
    }

    #[test]
    fn well_known_passwords() {
        assert!(is_well_known_password("Admin"));
        assert!(is_well_known_password("changeme123"));
        assert!(is_well_known_password("zzzzzzzzzzzzzz"));
        assert!(!is_well_known_password("correct horse battery staple"));
        assert!(!is_well_known_password(""));
    }
}
