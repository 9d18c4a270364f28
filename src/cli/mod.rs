//! The command line: `serve`, `migrate`, `admin-token`, `rotate-keys`, `replay`, `audit`,
//! `snapshot-chats`. Each reads the same configuration (env + data dir), so a token printed by
//! `admin-token` is accepted by `serve`.

pub mod audit;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;
use tracing_subscriber::EnvFilter;

use crate::app::{App, Who};
use crate::config::{Config, DatabaseConfig, FirstRun, LogFormat};
use crate::startup;

#[derive(Debug, Parser)]
#[command(
    name = "wagate",
    version,
    about = "WhatsApp gateway with AI auto-reply"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (HTTP API) on WAGATE_LISTEN.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print an admin JWT for scripts: `export ADMIN_JWT=$(wagate admin-token)`.
    AdminToken {
        /// Lifetime, e.g. 30m, 1h, 7d (at most 30d).
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: Duration,
        /// The `sub` claim (who the events will name); defaults to the admin username.
        #[arg(long)]
        sub: Option<String>,
    },
    /// Re-encrypt every stored API key under the current master key (after adding a new
    /// WAGATE_MASTER_KEY and moving the old one to WAGATE_MASTER_KEYS_OLD).
    RotateKeys,
    /// Rebuild the read models from the event history (with a progress bar); prints events/s,
    /// what was rebuilt and a digest that equals a running gateway's for the same history.
    Replay {
        /// Stop at this time (RFC 3339) or event position.
        #[arg(long)]
        as_of: Option<String>,
        #[arg(long, value_enum, default_value = "all")]
        projection: crate::store::replay::Projection,
    },
    /// Write a snapshot of every chat whose history runs `--behind` or more events past its
    /// last snapshot, so that its next start reads only the events after it. Run it once after
    /// upgrading a store that holds long chats (docs/OPERATIONS.md); safe while the gateway runs.
    SnapshotChats {
        #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(i64).range(1..))]
        behind: i64,
    },
    /// Print who changed the AI configuration of an account (or one chat) and when, with the
    /// effective config after each change.
    Audit {
        #[arg(long)]
        account: String,
        /// A chat JID of the account.
        #[arg(long)]
        chat: Option<String>,
        /// One JSON object per line instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Parses `90s`, `15m`, `1h`, `7d` or plain seconds.
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: use e.g. 30m, 1h, 7d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("invalid duration unit in {s:?}: use s, m, h or d")),
    };
    if secs == 0 || secs > 30 * 86_400 {
        return Err("duration must be between 1s and 30d".into());
    }
    Ok(Duration::from_secs(secs))
}

fn init_logging(format: LogFormat) {
    // whatsapp-rust logs through `log`, with phone numbers and pair codes at info: only its
    // errors reach the log (installed before the subscriber, which then skips its own bridge).
    let _ = tracing_log::LogTracer::builder()
        .with_max_level(log::LevelFilter::Error)
        .init();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only on a terminal: a file or a pipe gets plain text, not escape codes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn load_config() -> Result<(Config, FirstRun), ExitCode> {
    Config::from_env().map_err(|e| {
        eprintln!("wagate: configuration error: {e}");
        ExitCode::from(2)
    })
}

fn print_first_run(first: &FirstRun, to_stderr: bool) {
    let mut lines: Vec<String> = first.generated.clone();
    lines.extend(first.warnings.iter().map(|w| format!("warning: {w}")));
    if let Some(pw) = &first.admin_password {
        lines.push(format!(
            "generated admin password (shown once, stored only as an argon2 hash): {}",
            pw.expose_secret()
        ));
    }
    for l in lines {
        if to_stderr {
            eprintln!("wagate: {l}");
        } else {
            println!("  {l}");
        }
    }
}

/// Runs one command to completion.
pub async fn run(cli: Cli) -> ExitCode {
    let (config, first) = match load_config() {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logging(config.log_format);
    match cli.command {
        Command::Serve => serve(config, first).await,
        Command::Replay { as_of, projection } => {
            replay(&config, as_of.as_deref(), projection).await
        }
        Command::Audit {
            account,
            chat,
            json,
        } => audit(&config, &account, chat.as_deref(), json).await,
        Command::Migrate => {
            print_first_run(&first, true);
            match startup::open_store(&config).await {
                Ok(store) => {
                    println!("migrations applied ({})", store.kind());
                    store.close().await;
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("wagate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::AdminToken { ttl, sub } => {
            print_first_run(&first, true);
            let sub = sub.unwrap_or_else(|| config.admin_username.clone());
            match config.jwt.issue(&sub, ttl) {
                Ok((token, _)) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("wagate: cannot issue a token: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::RotateKeys => rotate_keys(config).await,
        Command::SnapshotChats { behind } => snapshot_chats(&config, behind).await,
    }
}

async fn snapshot_chats(config: &Config, behind: i64) -> ExitCode {
    let store = match startup::open_store(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("wagate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = std::time::Instant::now();
    let bar = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(|| {
        indicatif::ProgressBar::new(0).with_style(
            indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} chats {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        )
    });
    let result = crate::store::chats::backfill(&store, behind, |done, total| {
        if let Some(bar) = &bar {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
    })
    .await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    store.close().await;
    match result {
        Ok(done) => {
            println!(
                "snapshots written for {} chat(s) {behind} or more events past their snapshot; {} events folded in {:.1} s",
                done.chats,
                done.events_folded,
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wagate: snapshot-chats failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config, first: FirstRun) -> ExitCode {
    let store_desc = match &config.database {
        DatabaseConfig::Sqlite { path } => format!("sqlite ({})", path.display()),
        DatabaseConfig::Postgres { .. } => "postgres".to_string(),
    };
    let admin = config.admin_username.clone();
    let running = match startup::start(config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wagate: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let base = format!("http://{}", running.addr);
    println!("wagate is running");
    println!("  API:       {base}   (OpenAPI document: {base}/openapi.json)");
    println!("  store:     {store_desc}");
    println!("  dashboard: {base}/   (open it in a browser; log in as {admin:?} with the admin password)");
    println!("  admin:     export ADMIN_JWT=$(cargo run --release -- admin-token)");
    println!(
        "             or POST {base}/v1/auth/login with username {admin:?} and the admin password"
    );
    print_first_run(&first, false);
    running.serve_until(shutdown_signal()).await;
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

async fn rotate_keys(config: Config) -> ExitCode {
    let store = match startup::open_store(&config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("wagate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let app = match App::new(config, store).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("wagate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let who = Who {
        actor: "cli:rotate-keys".into(),
        request_id: None,
    };
    let report = crate::service::keys::rotate_keys(&app, &who).await;
    for f in &report.failed {
        eprintln!("wagate: {f}");
    }
    println!(
        "re-encrypted {} API key(s) under key id {}; {} failed",
        report.resealed,
        app.config.keyring.current_kid(),
        report.failed.len()
    );
    app.store.close().await;
    if report.failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn replay(
    config: &Config,
    as_of: Option<&str>,
    projection: crate::store::replay::Projection,
) -> ExitCode {
    let store = match startup::open_store(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("wagate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let until = match as_of {
        None => None,
        Some(raw) => match raw.parse::<i64>() {
            Ok(p) if p >= 0 => Some(p),
            _ => match chrono::DateTime::parse_from_rfc3339(raw) {
                Ok(t) => match store.position_at(t.with_timezone(&chrono::Utc)).await {
                    Ok(p) => Some(p),
                    Err(e) => {
                        eprintln!("wagate: {e}");
                        return ExitCode::FAILURE;
                    }
                },
                Err(_) => {
                    eprintln!("wagate: --as-of must be an RFC 3339 time or an event position");
                    return ExitCode::from(2);
                }
            },
        },
    };
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let result =
        crate::store::replay::replay(&store, until, projection, config.read_model, progress).await;
    store.close().await;
    match result {
        Ok(report) => {
            print!("{}", audit::summary(&report));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wagate: replay failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn audit(config: &Config, account: &str, chat: Option<&str>, json: bool) -> ExitCode {
    let store = match startup::open_store(config).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("wagate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let env = crate::app::env_layer(config);
    let result = audit::audit(&store, &env, account, chat).await;
    store.close().await;
    match result {
        Ok(entries) if json => {
            for e in &entries {
                println!("{}", serde_json::to_string(e).unwrap_or_default());
            }
            ExitCode::SUCCESS
        }
        Ok(entries) => {
            print!("{}", audit::render_audit(&entries));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wagate: {e}");
            ExitCode::FAILURE
        }
    }
}
