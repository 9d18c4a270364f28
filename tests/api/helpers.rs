//! The test harness: a real gateway on port 0 over a fresh store (a temp SQLite file, or a new
//! PostgreSQL database from `WAGATE_TEST_DATABASE_URL`), and a small JSON client.

use std::collections::HashMap;

use reqwest::header::HeaderMap;
use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use tempfile::TempDir;
use tokio::sync::OnceCell;
use wagate::config::Config;
use wagate::startup::{self, Running};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub const JWT_SECRET: &str = "integration-test-jwt-secret-0123456789abcdef";
/// Base64 of 64 bytes 0x01..=0x40.
pub fn master_key(seed: u8) -> String {
    use base64::Engine;
    let bytes: Vec<u8> = (0..64u8).map(|i| i.wrapping_add(seed)).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

static PG_SWEEP: OnceCell<()> = OnceCell::const_new();

/// A new, empty PostgreSQL database for one test, or `None` when PostgreSQL tests are not
/// configured here (outside CI only: under CI a missing or unreachable server fails the test).
pub async fn fresh_postgres_url() -> Option<String> {
    let base = match std::env::var("WAGATE_TEST_DATABASE_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but WAGATE_TEST_DATABASE_URL is not: PostgreSQL tests must not be skipped"
            );
            eprintln!("WAGATE_TEST_DATABASE_URL not set: skipping the PostgreSQL variant");
            return None;
        }
    };
    let admin = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect(&base)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at WAGATE_TEST_DATABASE_URL: {e}"));
    PG_SWEEP
        .get_or_init(|| async {
            // Databases left by earlier runs of this suite (not in use by anyone).
            let old: Vec<(String,)> = sqlx::query_as(
                "SELECT datname FROM pg_database d WHERE datname LIKE 'wagate_t_%' \
                 AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)",
            )
            .fetch_all(&admin)
            .await
            .unwrap_or_default();
            for (name,) in old {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\""))
                    .execute(&admin)
                    .await;
            }
        })
        .await;
    let name = format!("wagate_t_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&admin)
        .await
        .expect("create test database");
    admin.close().await;
    let mut url = url::Url::parse(&base).expect("WAGATE_TEST_DATABASE_URL is a URL");
    url.set_path(&format!("/{name}"));
    Some(url.to_string())
}

pub struct Resp {
    pub status: u16,
    pub json: Value,
    pub text: String,
    pub headers: HeaderMap,
}

pub struct TestApp {
    pub backend: Backend,
    pub base: String,
    pub client: reqwest::Client,
    pub vars: HashMap<String, String>,
    pub running: Option<Running>,
    /// Keeps the data directory alive as long as the app.
    pub _dir: TempDir,
    /// Every response body this app returned (for the canary checks).
    pub seen: std::sync::Mutex<Vec<String>>,
    /// The WhatsApp Web connector the gateway starts with (a fake; `None`: the library).
    pub web: Option<std::sync::Arc<dyn wagate_waweb::port::WebConnector>>,
}

impl TestApp {
    /// The env a test gateway runs with.
    pub async fn vars(backend: Backend, dir: &TempDir) -> Option<HashMap<String, String>> {
        let mut v = HashMap::new();
        v.insert("WAGATE_LISTEN".into(), "127.0.0.1:0".into());
        v.insert("WAGATE_DATA_DIR".into(), dir.path().display().to_string());
        v.insert("WAGATE_JWT_SECRET".into(), JWT_SECRET.into());
        v.insert("WAGATE_MASTER_KEY".into(), master_key(1));
        v.insert("WAGATE_ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into());
        // The model stubs listen on loopback.
        v.insert("WAGATE_ALLOW_PRIVATE_NETWORKS".into(), "127.0.0.0/8".into());
        if backend == Backend::Postgres {
            v.insert("WAGATE_DATABASE_URL".into(), fresh_postgres_url().await?);
        }
        Some(v)
    }

    /// An admin JWT for a gateway started from `vars` (a real binary, outside a `TestApp`).
    pub fn admin_token_for(vars: &HashMap<String, String>, subject: &str) -> String {
        Config::from_vars(vars)
            .expect("valid test config")
            .0
            .jwt
            .issue(subject, std::time::Duration::from_secs(600))
            .expect("issue admin token")
            .0
    }

    pub async fn spawn(backend: Backend) -> Option<TestApp> {
        Self::spawn_with_settings(backend, &[]).await
    }

    /// A gateway with the test settings plus `settings` (environment variables), or `None` when
    /// the backend is not available.
    pub async fn spawn_with_settings(
        backend: Backend,
        settings: &[(&str, &str)],
    ) -> Option<TestApp> {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut vars = Self::vars(backend, &dir).await?;
        for (k, v) in settings {
            vars.insert((*k).into(), (*v).into());
        }
        Some(Self::spawn_with(backend, dir, vars).await)
    }

    pub async fn spawn_with(
        backend: Backend,
        dir: TempDir,
        vars: HashMap<String, String>,
    ) -> TestApp {
        Self::spawn_with_web(backend, dir, vars, None).await
    }

    /// [`TestApp::spawn_with`] with a WhatsApp Web connector (a fake at the port).
    pub async fn spawn_with_web(
        backend: Backend,
        dir: TempDir,
        vars: HashMap<String, String>,
        web: Option<std::sync::Arc<dyn wagate_waweb::port::WebConnector>>,
    ) -> TestApp {
        let (config, _) = Config::from_vars(&vars).expect("valid test config");
        let extras = startup::Extras {
            web_connector: web.clone(),
        };
        let running = startup::start_with(config, extras)
            .await
            .expect("gateway starts");
        TestApp {
            backend,
            base: format!("http://{}", running.addr),
            client: reqwest::Client::new(),
            vars,
            running: Some(running),
            _dir: dir,
            seen: Default::default(),
            web,
        }
    }

    pub fn config(&self) -> Config {
        Config::from_vars(&self.vars).expect("valid test config").0
    }

    /// The config of another gateway on the same store and secrets, as node `node_id`.
    pub fn config_as(&self, node_id: &str) -> Config {
        let mut vars = self.vars.clone();
        vars.insert("WAGATE_NODE_ID".into(), node_id.into());
        Config::from_vars(&vars).expect("valid test config").0
    }

    /// Stops the server and starts a new one on the same store and secrets.
    pub async fn restart(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
        let extras = startup::Extras {
            web_connector: self.web.clone(),
        };
        let running = startup::start_with(self.config(), extras)
            .await
            .expect("gateway restarts");
        self.base = format!("http://{}", running.addr);
        self.running = Some(running);
    }

    pub fn app(&self) -> &wagate::app::SharedApp {
        &self.running.as_ref().expect("running").app
    }

    /// Runs the `wagate` binary with `args` on this app's configuration (same store), as an
    /// operator would next to the running gateway.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_wagate"))
            .args(args)
            .env_clear()
            .envs(&self.vars)
            .output()
            .expect("run wagate")
    }

    /// Runs `wagate <args>`, asserts it succeeded and returns its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "wagate {args:?}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    pub fn admin_token(&self) -> String {
        self.app()
            .config
            .jwt
            .issue("tester", std::time::Duration::from_secs(3600))
            .expect("issue admin token")
            .0
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        self.call_at(&self.base, method, path, token, body).await
    }

    /// As [`TestApp::call`], to the gateway at `base` (another node on the same store).
    pub async fn call_at(
        &self,
        base: &str,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.client.request(method, format!("{base}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.send(req).await
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let resp = req.send().await.expect("request reaches the gateway");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        self.seen.lock().expect("lock").push(text.clone());
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            json,
            text,
            headers,
        }
    }

    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        let t = self.admin_token();
        self.call(method, path, Some(&t), body).await
    }

    /// A new account token of `acc` (created by the admin), the secret shown once.
    pub async fn account_token(&self, acc: &str) -> String {
        let r = self
            .admin(
                "POST",
                &format!("/v1/accounts/{acc}/tokens"),
                Some(serde_json::json!({"name": "tenant"})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.json["token"].as_str().expect("a token").to_string()
    }

    /// Creates a sandbox account.
    pub async fn create_account(&self, id: &str) {
        let r = self
            .admin(
                "POST",
                "/v1/accounts",
                Some(serde_json::json!({"id": id, "name": id, "transport": "sandbox"})),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }

    /// Replies echo the inbound text without a model (tests of the send path and of what
    /// follows a reply).
    pub async fn echo_mode(&self) {
        let r = self
            .admin(
                "PUT",
                "/v1/ai/global",
                Some(serde_json::json!({"enabled": true, "echo_mode": true, "reply_delay_seconds": 0})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
    }

    /// `GET /metrics` (no auth), as text.
    pub async fn metrics(&self) -> String {
        self.send(self.client.get(format!("{}/metrics", self.base)))
            .await
            .text
    }

    /// The highest event position (to prove that bad input wrote nothing).
    pub async fn head(&self) -> i64 {
        self.app().store.head().await.expect("head")
    }
}

/// Runs one async test body against both stores, as two tests: `<name>::sqlite` and
/// `<name>::postgres`. The body takes a gateway spawned with the default test settings, or, as
/// `both_stores!(name, body(Backend))`, the backend (it spawns its own, or skips without one).
#[macro_export]
macro_rules! both_stores {
    ($name:ident, $body:ident(Backend)) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body($crate::helpers::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$body($crate::helpers::Backend::Postgres).await;
            }
        }
    };
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                if let Some(app) =
                    $crate::helpers::TestApp::spawn($crate::helpers::Backend::Sqlite).await
                {
                    super::$body(app).await;
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(app) =
                    $crate::helpers::TestApp::spawn($crate::helpers::Backend::Postgres).await
                {
                    super::$body(app).await;
                }
            }
        }
    };
}

/// Polls `check` until it returns `Some`, or panics with `what` after `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// The real `wagate serve` binary in a child process (for kill -9 and log capture tests).
pub struct Binary {
    pub child: tokio::process::Child,
    pub base: String,
    /// Everything printed on stdout until the address line.
    pub banner: String,
    stdout: tokio::io::BufReader<tokio::process::ChildStdout>,
    stderr: tokio::task::JoinHandle<String>,
}

impl Binary {
    /// Starts `wagate serve` with exactly `vars` (plus `RUST_LOG=log`) and waits for its address.
    pub async fn start(vars: &HashMap<String, String>, log: &str) -> Binary {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt};
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wagate"))
            .arg("serve")
            .env_clear()
            .envs(vars)
            .env("RUST_LOG", log)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn wagate");
        let mut stdout = tokio::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut stderr = child.stderr.take().expect("stderr");
        let stderr = tokio::spawn(async move {
            let mut buf = String::new();
            let _ = stderr.read_to_string(&mut buf).await;
            buf
        });
        let mut banner = String::new();
        let base = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            loop {
                let mut line = String::new();
                if stdout.read_line(&mut line).await.expect("read") == 0 {
                    panic!("wagate exited early: {banner}");
                }
                banner.push_str(&line);
                if let Some(rest) = line.trim().strip_prefix("API:") {
                    return rest.split_whitespace().next().expect("url").to_string();
                }
            }
        })
        .await
        .expect("wagate prints its address");
        Binary {
            child,
            base,
            banner,
            stdout,
            stderr,
        }
    }

    /// Reads stdout until a line holding `needle` (at most 30 s), adding what it reads to the
    /// banner: `start` returns at the address line, before the rest of the banner is printed.
    pub async fn wait_for_line(&mut self, needle: &str) {
        use tokio::io::AsyncBufReadExt;
        tokio::time::timeout(std::time::Duration::from_secs(30), async {
            loop {
                let mut line = String::new();
                if self.stdout.read_line(&mut line).await.expect("read") == 0 {
                    panic!("wagate exited before printing {needle:?}: {}", self.banner);
                }
                self.banner.push_str(&line);
                if line.contains(needle) {
                    return;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no line with {needle:?} within 30 s: {}", self.banner));
    }

    /// SIGKILL: no shutdown code runs.
    pub async fn kill9(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Kills the process and returns (stdout, stderr).
    pub async fn finish(mut self) -> (String, String) {
        use tokio::io::AsyncReadExt;
        self.kill9().await;
        let mut out = self.banner;
        let _ = self.stdout.read_to_string(&mut out).await;
        (out, self.stderr.await.unwrap_or_default())
    }
}

/// A stream folded from every event as cqrs-es loads it (postgres-es / sqlite-es, no snapshot,
/// no window shortcut): the independent reference the chat path's own loads are checked against.
pub async fn cqrs_load<A>(store: &wagate::store::Store, id: &str) -> (A, usize)
where
    A: cqrs_es::Aggregate<Services = ()> + 'static,
{
    use cqrs_es::persist::PersistedEventStore;
    use cqrs_es::EventStore;
    let ctx = match store {
        wagate::store::Store::Postgres(p) => {
            PersistedEventStore::<_, A>::new_event_store(postgres_es::PostgresEventRepository::new(
                p.clone(),
            ))
            .load_aggregate(id)
            .await
        }
        wagate::store::Store::Sqlite(p) => {
            PersistedEventStore::<_, A>::new_event_store(sqlite_es::SqliteEventRepository::new(
                p.clone(),
            ))
            .load_aggregate(id)
            .await
        }
    }
    .expect("cqrs-es load");
    (ctx.aggregate, ctx.current_sequence)
}
