//! Start-up: open and migrate the store, fold the history, bind the listener, serve until asked
//! to stop. Returns the bound address so tests can run a real server on port 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::app::{App, AppError, SharedApp};
use crate::config::Config;
use crate::http;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot load the history: {0}")]
    App(#[from] AppError),
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
}

impl Running {
    /// Stops accepting, lets in-flight requests finish, and closes the store.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.ticker.abort();
        if let Err(e) = (&mut self.task).await {
            tracing::warn!(error = %e, "server task ended abnormally");
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

/// Opens the store, loads the history and starts serving on `config.listen`.
pub async fn start(config: Config) -> Result<Running, StartupError> {
    let store = open_store(&config).await?;
    let listen = config.listen;
    let app = App::new(config, store).await?;
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
    let (tx, rx) = oneshot::channel::<()>();
    let router = http::router(app.clone());
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = rx.await;
        })
        .await
    });
    // Other gateway processes may share a PostgreSQL store: follow their commits too.
    let weak = Arc::downgrade(&app);
    let ticker = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let Some(app) = weak.upgrade() else { return };
            if let Err(e) = app.catch_up().await {
                tracing::warn!(error = %e, "read model catch-up failed; will retry");
            }
        }
    });
    tracing::info!(%addr, store = app.store.kind(), position = app.model().position, "wagate listening");
    Ok(Running {
        addr,
        app,
        shutdown: Some(tx),
        task,
        ticker,
    })
}
