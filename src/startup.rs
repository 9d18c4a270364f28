//! Start-up: open and migrate the store, fold the history, bind the listener, serve until asked
//! to stop. Returns the bound address so tests can run a real server on port 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;
use tower::Service;

use wagate_waweb::client::LibraryConnector;
use wagate_waweb::port::WebConnector;

use crate::app::whatsapp_web::{StoreSessions, WebSessions};
use crate::app::{App, AppError, SharedApp};
use crate::config::{Config, HttpLimits};
use crate::http;
use crate::store::{Store, StoreError};

/// The shortest time between two background folds of the read models.
const PROJECTOR_EVERY: Duration = Duration::from_millis(5);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot start the actors: {0}")]
    Actors(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot load the history: {0}")]
    App(#[from] AppError),
    #[error(transparent)]
    Cluster(#[from] crate::app::cluster::ClusterError),
    #[error("cannot start the WhatsApp Web connector: {0}")]
    WhatsAppWeb(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Connects to the configured store and applies pending migrations.
pub async fn open_store(config: &Config) -> Result<Store, StoreError> {
    let store = Store::connect(&config.database).await?;
    store.migrate().await?;
    Ok(store)
}

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    pub app: SharedApp,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    ticker: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish, and closes the store.
    pub async fn stop(mut self) {
        // Long-lived responses (the dashboard's live pages) end, so open requests can finish.
        self.app.read.stopping.send_replace(true);
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.ticker.abort();
        for task in &self.background {
            task.abort();
        }
        if let Some(g) = self.app.gateway.get() {
            g.shutdown().await;
        }
        if let Some(web) = self.app.web.get() {
            web.stop_all().await;
        }
        // No reply step runs here any more: the other nodes may take the accounts at once.
        if let Some(cluster) = self.app.cluster.get() {
            cluster.leave().await;
        }
        if let Err(e) = (&mut self.task).await {
            tracing::warn!(error = %e, "server task ended abnormally");
        }
        // A checkpoint of everything committed, so the next start folds nothing (ADR 0015).
        if self.app.config.checkpoint_every > 0 {
            match self.app.catch_up().await {
                Ok(()) => {
                    crate::app::checkpoint::write_logged(&self.app, false).await;
                }
                Err(e) => tracing::warn!(error = %e, "no checkpoint at stop: catch-up failed"),
            }
        }
        self.app.store.close().await;
    }

    /// Serves until `signal` completes, then stops gracefully.
    pub async fn serve_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        tracing::info!("shutting down");
        self.stop().await;
    }
}

/// What a start can be given besides the configuration (tests swap the WhatsApp Web library for
/// a fake at its port).
#[derive(Default)]
pub struct Extras {
    /// Starts WhatsApp Web connections; `None`: whatsapp-rust ([`LibraryConnector`]).
    pub web_connector: Option<Arc<dyn WebConnector>>,
}

/// Opens the store, loads the history and starts serving on `config.listen`.
pub async fn start(config: Config) -> Result<Running, StartupError> {
    start_with(config, Extras::default()).await
}

/// [`start`] with [`Extras`].
pub async fn start_with(config: Config, extras: Extras) -> Result<Running, StartupError> {
    let store = open_store(&config).await?;
    let listen = config.listen;
    let app = App::new(config, store).await?;
    if let Store::Postgres(pool) = &app.store {
        let cluster = crate::app::cluster::Cluster::join(pool.clone(), &app.config.cluster).await?;
        let _ = app.cluster.set(cluster);
    }
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| StartupError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartupError::Bind {
        addr: listen,
        source,
    })?;
    if let Some(cluster) = app.cluster.get() {
        cluster
            .advertise(app.config.cluster.advertised_url(addr))
            .await?;
    }
    let connector: Arc<dyn WebConnector> = match extras.web_connector {
        Some(c) => c,
        None => {
            let mut c =
                LibraryConnector::new().map_err(|e| StartupError::WhatsAppWeb(e.to_string()))?;
            if let Some(url) = &app.config.whatsapp_web.url {
                c = c.with_ws_url(url.clone());
            }
            if let Some(v) = app.config.whatsapp_web.version {
                c = c.with_version(v);
            }
            Arc::new(c)
        }
    };
    let _ = app.web.set(WebSessions::new(
        &app,
        connector,
        Arc::new(StoreSessions::new(&app)),
    ));
    start_actors(&app).await?;
    if app.cluster.get().is_none() {
        // On PostgreSQL each lease taken resumes its accounts (cluster::balance).
        if let Some(web) = app.web.get() {
            web.resume().await;
        }
    }
    let (tx, rx) = oneshot::channel::<()>();
    let router = http::router(app.clone(), crate::dashboard::router());
    let limits = app.config.http;
    let task = tokio::spawn(serve(listener, router, limits, async {
        let _ = rx.await;
    }));
    // The projector: folds new events into the read models when a chat actor commits, and every
    // second for commits of other processes sharing a PostgreSQL store. Under load it folds at
    // most every PROJECTOR_EVERY, so one read takes many commits' events (readers that need their
    // own writes folded call `catch_up` themselves).
    let weak = Arc::downgrade(&app);
    let ticker = tokio::spawn(async move {
        loop {
            let Some(app) = weak.upgrade() else { return };
            let _ =
                tokio::time::timeout(Duration::from_secs(1), app.read.projector_wake.notified())
                    .await;
            tokio::time::sleep(PROJECTOR_EVERY).await;
            if let Err(e) = app.catch_up().await {
                app.note_store_error();
                tracing::warn!(error = %e, "read model catch-up failed; will retry");
            }
        }
    });
    let mut background = crate::webhooks::start(&app);
    if let Some(cluster) = app.cluster.get() {
        background.extend(crate::app::cluster::start(&app, cluster.clone()));
    }
    if app.config.checkpoint_every > 0 {
        background.push(crate::app::checkpoint::start(
            &app,
            app.config.checkpoint_every,
        ));
    }
    if let Some(retention) = app.config.ai_log_body_retention {
        background.push(crate::app::retention::start(&app, retention));
    }
    background.push(crate::app::media_retention::start(&app));
    tracing::info!(%addr, store = app.store.kind(), position = app.model().position, "wagate listening");
    Ok(Running {
        addr,
        app,
        shutdown: Some(tx),
        task,
        ticker,
        background,
    })
}

/// Serves `router` on `listener` until `shutdown` completes, then lets open requests finish.
///
/// What `axum::serve` does (HTTP/1.1 and cleartext HTTP/2, the client address as `ConnectInfo`,
/// graceful shutdown), plus the limits it lacks: a connection's first bytes and every HTTP/1.1
/// request head must arrive within `limits.header_read_timeout` (the connection is closed
/// otherwise; this also ends idle keep-alive connections), and at most `limits.max_connections`
/// connections are open at once (the next ones wait in the listen backlog). The body read
/// deadline is a layer of the router.
async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let mut make_service = router.into_make_service_with_connect_info::<SocketAddr>();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = match make_service.call(remote).await {
            Ok(s) => s,
            Err(never) => match never {},
        };
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let mut stopping = stop_rx.clone();
        let first_bytes = limits.header_read_timeout;
        tokio::spawn(async move {
            // hyper's header timer starts once it has seen the first bytes (they tell HTTP/1 from
            // HTTP/2): a connection that sends nothing is closed here.
            let mut first = [0u8; 1];
            tokio::select! {
                ready = tokio::time::timeout(first_bytes, stream.peek(&mut first)) => {
                    if !matches!(ready, Ok(Ok(1..))) {
                        tracing::debug!("connection sent nothing in time; closed");
                        return;
                    }
                }
                _ = stopping.wait_for(|stop| *stop) => return,
            }
            let conn = builder.serve_connection_with_upgrades(
                TokioIo::new(stream),
                TowerToHyperService::new(service),
            );
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    graceful.shutdown().await;
    Ok(())
}

/// Starts the actor system and recovers the replies a previous process left open (ADR 0025): one
/// marked as handed to the transport fails as `interrupted` (never sent twice); the others are
/// worked on again, so every acknowledged message is answered. On PostgreSQL this node takes its
/// share of the account leases first and recovers only the accounts it took (ADR 0026): another
/// live node's replies are never touched.
async fn start_actors(app: &SharedApp) -> Result<(), StartupError> {
    let gateway = wagate_actors::Gateway::start(crate::app::ports::ports(app))
        .await
        .map_err(|e| StartupError::Actors(e.to_string()))?;
    let _ = app.gateway.set(gateway.clone());
    if let Some(cluster) = app.cluster.get() {
        cluster.balance(app).await;
        return Ok(());
    }
    let open = app.messages().chats_with_open_replies();
    for (account, jid) in &open {
        let closed = gateway
            .close_interrupted(account, jid)
            .await
            .map_err(|e| StartupError::Actors(format!("cannot close interrupted replies: {e}")))?;
        if closed > 0 {
            tracing::warn!(account = %account, replies = closed, "closed replies a restart interrupted (superseded, or maybe sent)");
        }
    }
    if !open.is_empty() {
        app.catch_up().await?;
    }
    Ok(())
}
