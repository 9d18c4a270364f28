//! Typed configuration, read from the environment once and validated at boot (checklist item 3).
//! In dev mode (the embedded SQLite store) missing secrets are generated into the data dir with
//! mode 0600; with PostgreSQL they must be supplied.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::distr::{Alphanumeric, SampleString};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};

use crate::auth::{self, JwtSigner};
use crate::crypto::{Keyring, MasterKey};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}: {message}")]
    Invalid { var: &'static str, message: String },
    #[error("{var} is required when the store is PostgreSQL: {hint}")]
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

pub enum DatabaseConfig {
    Sqlite { path: PathBuf },
    Postgres { url: SecretString },
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DatabaseConfig::Sqlite { path } => write!(f, "Sqlite({})", path.display()),
            DatabaseConfig::Postgres { .. } => write!(f, "Postgres(<redacted url>)"),
        }
    }
}

/// The env layer of the AI config.
#[derive(Debug, Default)]
pub struct EnvAiLayer {
    pub base_url: Option<String>,
    pub api_key: Option<SecretString>,
    pub model_name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database: DatabaseConfig,
    pub jwt: JwtSigner,
    pub keyring: Keyring,
    pub admin_username: String,
    pub admin_password_hash: String,
    pub allow_private_networks: Vec<ipnet::IpNet>,
    pub ai_env: EnvAiLayer,
    /// The embedded SQLite store: secrets may be generated.
    pub dev_mode: bool,
    pub log_format: LogFormat,
}

/// What a first start generated, for the binary to print once.
#[derive(Debug, Default)]
pub struct FirstRun {
    pub generated: Vec<String>,
    /// The generated admin password, only on the start that generated it.
    pub admin_password: Option<SecretString>,
}

const WEAK_PASSWORDS: [&str; 10] = [
    "admin",
    "password",
    "changeme",
    "wagate",
    "123456",
    "12345678",
    "123456789",
    "qwerty",
    "letmein",
    "secret",
];

fn get<'a>(vars: &'a HashMap<String, String>, key: &str) -> Option<&'a str> {
    vars.get(key)
        .map(String::as_str)
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Writes `contents` to `path` atomically with mode 0600.
fn write_secret_file(path: &Path, contents: &str) -> Result<(), ConfigError> {
    let file_err = |e: std::io::Error| ConfigError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(file_err)?;
    f.write_all(contents.as_bytes()).map_err(file_err)?;
    f.sync_all().map_err(file_err)?;
    fs::rename(&tmp, path).map_err(file_err)
}

fn read_file(path: &Path) -> Result<Option<String>, ConfigError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ConfigError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        }),
    }
}

fn check_url(var: &'static str, raw: &str) -> Result<String, ConfigError> {
    wagate_events::settings::normalize_base_url(raw).map_err(|e| invalid(var, e.to_string()))
}

impl Config {
    /// Reads the process environment once.
    pub fn from_env() -> Result<(Config, FirstRun), ConfigError> {
        let vars: HashMap<String, String> = std::env::vars().collect();
        Self::from_vars(&vars)
    }

    /// Builds and validates the configuration from these variables (tests pass their own).
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<(Config, FirstRun), ConfigError> {
        let mut first = FirstRun::default();
        let listen: SocketAddr = get(vars, "WAGATE_LISTEN")
            .unwrap_or("127.0.0.1:8080")
            .parse()
            .map_err(|_| invalid("WAGATE_LISTEN", "expected host:port, e.g. 127.0.0.1:8080"))?;
        let data_dir = PathBuf::from(get(vars, "WAGATE_DATA_DIR").unwrap_or("./data"));

        let database = match get(vars, "WAGATE_DATABASE_URL") {
            None => DatabaseConfig::Sqlite {
                path: data_dir.join("wagate.db"),
            },
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                DatabaseConfig::Postgres {
                    url: SecretString::from(url.to_string()),
                }
            }
            Some(url) => {
                let path = url
                    .strip_prefix("sqlite://")
                    .or_else(|| url.strip_prefix("sqlite:"))
                    .ok_or_else(|| {
                        invalid(
                            "WAGATE_DATABASE_URL",
                            "expected sqlite://PATH or postgres://…",
                        )
                    })?;
                if path.is_empty() {
                    return Err(invalid("WAGATE_DATABASE_URL", "sqlite URL has no path"));
                }
                DatabaseConfig::Sqlite {
                    path: PathBuf::from(path.split('?').next().unwrap_or(path)),
                }
            }
        };
        let dev_mode = matches!(database, DatabaseConfig::Sqlite { .. });
        let needs_dev_files = dev_mode
            && (get(vars, "WAGATE_JWT_SECRET").is_none()
                || get(vars, "WAGATE_MASTER_KEY").is_none()
                || get(vars, "WAGATE_ADMIN_PASSWORD").is_none());
        if needs_dev_files {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&data_dir)
                .map_err(|e| ConfigError::File {
                    path: data_dir.display().to_string(),
                    message: e.to_string(),
                })?;
        }

        // JWT secret.
        let issuer = get(vars, "WAGATE_JWT_ISSUER")
            .unwrap_or("wagate")
            .to_string();
        let jwt_secret: Vec<u8> = match get(vars, "WAGATE_JWT_SECRET") {
            Some(s) => s.as_bytes().to_vec(),
            None if dev_mode => {
                let path = data_dir.join("jwt_secret");
                match read_file(&path)? {
                    Some(s) => STANDARD.decode(s.trim()).map_err(|_| ConfigError::File {
                        path: path.display().to_string(),
                        message: "not base64; delete it to generate a new secret".into(),
                    })?,
                    None => {
                        let mut bytes = vec![0u8; 64];
                        rand::rng().fill_bytes(&mut bytes);
                        write_secret_file(&path, &STANDARD.encode(&bytes))?;
                        first
                            .generated
                            .push(format!("generated a JWT secret at {}", path.display()));
                        bytes
                    }
                }
            }
            None => {
                return Err(ConfigError::Missing {
                    var: "WAGATE_JWT_SECRET",
                    hint: "at least 32 bytes, e.g. $(openssl rand -base64 48)",
                })
            }
        };
        let jwt = JwtSigner::new(&jwt_secret, &issuer).map_err(|_| {
            invalid(
                "WAGATE_JWT_SECRET",
                format!("must be at least {} bytes", auth::MIN_JWT_SECRET),
            )
        })?;

        // Master keys.
        let keyring = match get(vars, "WAGATE_MASTER_KEY") {
            Some(k) => {
                let current = MasterKey::from_base64(k)
                    .map_err(|e| invalid("WAGATE_MASTER_KEY", e.to_string()))?;
                let old = get(vars, "WAGATE_MASTER_KEYS_OLD")
                    .map(|list| {
                        list.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(|s| {
                                MasterKey::from_base64(s)
                                    .map_err(|e| invalid("WAGATE_MASTER_KEYS_OLD", e.to_string()))
                            })
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .transpose()?
                    .unwrap_or_default();
                Keyring::new(current, old)
            }
            None if dev_mode => {
                let path = data_dir.join("master.key");
                match read_file(&path)? {
                    Some(s) => {
                        let mut keys = s
                            .lines()
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .map(|l| {
                                MasterKey::from_base64(l).map_err(|e| ConfigError::File {
                                    path: path.display().to_string(),
                                    message: e.to_string(),
                                })
                            })
                            .collect::<Result<Vec<_>, _>>()?;
                        if keys.is_empty() {
                            return Err(ConfigError::File {
                                path: path.display().to_string(),
                                message: "holds no key".into(),
                            });
                        }
                        let current = keys.remove(0);
                        Keyring::new(current, keys)
                    }
                    None => {
                        let key = MasterKey::generate();
                        write_secret_file(&path, &format!("{}\n", key.to_base64()))?;
                        first
                            .generated
                            .push(format!("generated a master key at {}", path.display()));
                        Keyring::new(key, vec![])
                    }
                }
            }
            None => {
                return Err(ConfigError::Missing {
                    var: "WAGATE_MASTER_KEY",
                    hint: "base64 of 64 bytes, e.g. $(openssl rand -base64 64)",
                })
            }
        };

        // Admin credentials.
        let admin_username = get(vars, "WAGATE_ADMIN_USERNAME")
            .unwrap_or("admin")
            .to_string();
        let hash_err = |_| invalid("WAGATE_ADMIN_PASSWORD", "cannot hash the password");
        let admin_password_hash = match get(vars, "WAGATE_ADMIN_PASSWORD") {
            Some(pw) => {
                if !dev_mode {
                    if WEAK_PASSWORDS.contains(&pw.to_ascii_lowercase().as_str()) {
                        return Err(invalid(
                            "WAGATE_ADMIN_PASSWORD",
                            "is a well-known default password",
                        ));
                    }
                    if pw.chars().count() < 12 {
                        return Err(invalid(
                            "WAGATE_ADMIN_PASSWORD",
                            "must be at least 12 characters",
                        ));
                    }
                }
                auth::hash_password(pw).map_err(hash_err)?
            }
            None if dev_mode => {
                let path = data_dir.join("admin_password.hash");
                match read_file(&path)? {
                    Some(h) => h.trim().to_string(),
                    None => {
                        let pw = Alphanumeric.sample_string(&mut rand::rng(), 24);
                        let h = auth::hash_password(&pw).map_err(hash_err)?;
                        write_secret_file(&path, &h)?;
                        first.generated.push(format!(
                            "stored the admin password hash at {} (delete it to generate a new password)",
                            path.display()
                        ));
                        first.admin_password = Some(SecretString::from(pw));
                        h
                    }
                }
            }
            None => {
                return Err(ConfigError::Missing {
                    var: "WAGATE_ADMIN_PASSWORD",
                    hint: "at least 12 characters, not a well-known default",
                })
            }
        };

        let allow_private_networks = get(vars, "WAGATE_ALLOW_PRIVATE_NETWORKS")
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| {
                        s.parse::<ipnet::IpNet>()
                            .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                            .map_err(|_| {
                                invalid(
                                    "WAGATE_ALLOW_PRIVATE_NETWORKS",
                                    format!("{s:?} is not a CIDR or IP"),
                                )
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?
            .unwrap_or_default();

        let base_url = match get(vars, "WAGATE_AI_BASE_URL") {
            Some(u) => Some(check_url("WAGATE_AI_BASE_URL", u)?),
            None => get(vars, "OPENAI_BASE_URL")
                .map(|u| check_url("OPENAI_BASE_URL", u))
                .transpose()?,
        };
        let ai_env = EnvAiLayer {
            base_url,
            api_key: get(vars, "WAGATE_AI_API_KEY")
                .or_else(|| get(vars, "OPENAI_API_KEY"))
                .map(|k| SecretString::from(k.to_string())),
            model_name: get(vars, "WAGATE_AI_MODEL").map(str::to_string),
        };
        let log_format = match get(vars, "WAGATE_LOG_FORMAT").unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => return Err(invalid("WAGATE_LOG_FORMAT", "expected text or json")),
        };

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
                ai_env,
                dev_mode,
                log_format,
            },
            first,
        ))
    }

    /// A one-line description for logs, without secrets.
    pub fn redacted_summary(&self) -> String {
        let store = match &self.database {
            DatabaseConfig::Sqlite { path } => format!("sqlite:{}", path.display()),
            DatabaseConfig::Postgres { url } => {
                let u = url.expose_secret();
                match url::Url::parse(u) {
                    Ok(p) => format!("postgres://{}{}", p.host_str().unwrap_or(""), p.path()),
                    Err(_) => "postgres".into(),
                }
            }
        };
        format!(
            "listen={} data_dir={} store={} issuer={} allow_private_networks={:?} env_ai_key={}",
            self.listen,
            self.data_dir.display(),
            store,
            self.jwt.issuer(),
            self.allow_private_networks,
            self.ai_env.api_key.is_some()
        )
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn vars(dir: &Path, extra: &[(&str, &str)]) -> HashMap<String, String> {
        let mut v = HashMap::new();
        v.insert("WAGATE_DATA_DIR".to_string(), dir.display().to_string());
        for (k, val) in extra {
            v.insert(k.to_string(), val.to_string());
        }
        v
    }

    fn err_of(v: &HashMap<String, String>) -> String {
        Config::from_vars(v)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn dev_first_run_generates_secrets_0600_and_reuses_them() {
        let dir = tempfile::tempdir().expect("tmp");
        let v = vars(dir.path(), &[]);
        let (c1, first) = Config::from_vars(&v).expect("first");
        assert!(c1.dev_mode);
        assert!(first.admin_password.is_some());
        for f in ["jwt_secret", "master.key", "admin_password.hash"] {
            let mode = fs::metadata(dir.path().join(f))
                .expect(f)
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        let pw = first.admin_password.expect("pw");
        assert!(auth::verify_password(
            &c1.admin_password_hash,
            pw.expose_secret()
        ));
        let (c2, second) = Config::from_vars(&v).expect("second");
        assert!(second.admin_password.is_none() && second.generated.is_empty());
        let (t, _) = c1
            .jwt
            .issue("x", std::time::Duration::from_secs(60))
            .expect("t");
        assert!(c2.jwt.verify(&t).is_ok(), "same JWT secret across starts");
        let sealed = c1.keyring.seal(b"k", "ad");
        assert!(
            c2.keyring.open(&sealed, "ad").is_ok(),
            "same master key across starts"
        );
    }

    #[test]
    fn postgres_requires_secrets() {
        let dir = tempfile::tempdir().expect("tmp");
        let v = vars(
            dir.path(),
            &[("WAGATE_DATABASE_URL", "postgres://u@127.0.0.1/db")],
        );
        assert!(err_of(&v).contains("WAGATE_JWT_SECRET"));
    }

    #[test]
    fn weak_values_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let key = STANDARD.encode([7u8; 64]);
        let jwt = "0123456789abcdef0123456789abcdef0123";
        let pg = [
            ("WAGATE_DATABASE_URL", "postgres://u@127.0.0.1/db"),
            ("WAGATE_JWT_SECRET", jwt),
            ("WAGATE_MASTER_KEY", key.as_str()),
        ];
        let mut with_pw = pg.to_vec();
        with_pw.push(("WAGATE_ADMIN_PASSWORD", "Password"));
        assert!(err_of(&vars(dir.path(), &with_pw)).contains("well-known"));
        let mut short_pw = pg.to_vec();
        short_pw.push(("WAGATE_ADMIN_PASSWORD", "short1"));
        assert!(err_of(&vars(dir.path(), &short_pw)).contains("12 characters"));
        let mut ok = pg.to_vec();
        ok.push(("WAGATE_ADMIN_PASSWORD", "a long enough passphrase"));
        assert!(Config::from_vars(&vars(dir.path(), &ok)).is_ok());

        let e = err_of(&vars(dir.path(), &[("WAGATE_JWT_SECRET", "too-short")]));
        assert!(
            e.contains("WAGATE_JWT_SECRET") && !e.contains("too-short"),
            "{e}"
        );
        let e = err_of(&vars(dir.path(), &[("WAGATE_MASTER_KEY", "bm90LWEta2V5")]));
        assert!(e.contains("WAGATE_MASTER_KEY"), "{e}");
        let e = err_of(&vars(
            dir.path(),
            &[("WAGATE_ALLOW_PRIVATE_NETWORKS", "10.0.0.0/33")],
        ));
        assert!(e.contains("WAGATE_ALLOW_PRIVATE_NETWORKS"), "{e}");
        let e = err_of(&vars(dir.path(), &[("WAGATE_LISTEN", "nope")]));
        assert!(e.contains("WAGATE_LISTEN"), "{e}");
        let e = err_of(&vars(dir.path(), &[("WAGATE_AI_BASE_URL", "ftp://x")]));
        assert!(e.contains("WAGATE_AI_BASE_URL"), "{e}");
    }

    #[test]
    fn env_ai_layer_and_networks() {
        let dir = tempfile::tempdir().expect("tmp");
        let v = vars(
            dir.path(),
            &[
                ("OPENAI_API_KEY", "sk-env"),
                ("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1/"),
                ("WAGATE_ALLOW_PRIVATE_NETWORKS", "127.0.0.0/8, ::1"),
            ],
        );
        let (c, _) = Config::from_vars(&v).expect("config");
        assert_eq!(
            c.ai_env
                .api_key
                .as_ref()
                .map(|k| k.expose_secret().to_string())
                .as_deref(),
            Some("sk-env")
        );
        assert_eq!(
            c.ai_env.base_url.as_deref(),
            Some("http://127.0.0.1:11434/v1")
        );
        assert_eq!(c.allow_private_networks.len(), 2);
        let dbg = format!("{c:?} {}", c.redacted_summary());
        assert!(!dbg.contains("sk-env"), "{dbg}");
    }
}
