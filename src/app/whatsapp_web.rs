//! WhatsApp Web connections (issue 23). Each `whatsapp_web` account that the operator asked to
//! connect has one [`Link`] in the process that runs the account (its lease holder, or the one
//! process on SQLite). The account's actor owns it: opening the account's session opens the
//! link, and stopping the actor (account deleted, lease lost, gateway stopping) stops the
//! connection, so one account never has two live connections in the cluster.
//!
//! A link starts a connection through the [`WebConnector`] port, on the account's session store
//! (sealed rows in the gateway's database). What the connection reports comes back through the
//! link's handler: inbound messages are committed in their chats before WhatsApp is told they
//! arrived; states become `WhatsAppWebStateChanged` events (and `account.connection` webhooks);
//! QR and pair codes stay in memory only, for `GET …/whatsapp-web/qr`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use wagate_actors::ports::{SendError, Session};
use wagate_actors::ActorError;
use wagate_actors::Inbound;
use wagate_events::account::{AccountCommand, Transport};
use wagate_events::chat::{keeps_bytes, MessageKind};
use wagate_events::whatsapp_web::{WebConnectionState, WebState};
use wagate_events::DomainError;
use wagate_waweb::port::{
    ConnectOptions, SessionBackend, WebConnection, WebConnector, WebError, WebEvent, WebHandler,
    WebInbound, WebMedia,
};

use wagate_waweb::store::{Db, SealError, Sealer, SessionCheck, SessionStore};

use super::{App, Who};
use crate::store::Store;
use crate::transport::media::{clean_filename, declared_info, Received};
use crate::transport::whatsapp_web::qr_svg;

/// How many received message ids a link remembers with their sender (for read receipts in
/// groups, which name the participant).
const SENDERS_KEPT: usize = 4096;

/// Longest quoted text put in front of a reply's text for the model.
const QUOTE_CHARS: usize = 300;

/// Why a WhatsApp Web request was refused (the service layer turns it into its error).
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    App(#[from] super::AppError),
    #[error(transparent)]
    Actor(#[from] ActorError),
    #[error("{0}")]
    NotFound(String),
    /// 409 with a stable code (`wrong_transport`).
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("{0}")]
    Unavailable(String),
    /// Another gateway of the cluster runs this account (and its connection).
    #[error("another gateway runs this account's WhatsApp Web connection")]
    OtherNode(String),
}

/// What the session store says before a connection starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionHealth {
    /// No device: the connection pairs first.
    Empty,
    Paired,
    /// The stored session cannot be opened (corrupt, or sealed for another account or key).
    Corrupt(String),
}

/// Where the accounts' sessions live.
#[async_trait]
pub trait SessionStores: Send + Sync + 'static {
    /// The session store of `account`.
    fn backend(&self, account: &str) -> Arc<dyn SessionBackend>;
    async fn check(&self, account: &str) -> Result<SessionHealth, String>;
    /// Erases everything of `account`'s session (logout, unlinked device, corrupt rows).
    async fn erase(&self, account: &str) -> Result<(), String>;
}

/// The sessions in the gateway's own database, sealed with its master keyring (bound to the
/// account and the row).
pub struct StoreSessions {
    db: Db,
    sealer: Arc<dyn Sealer>,
}

/// The master keyring as the session store's sealer.
struct KeyringSealer(Arc<crate::config::Config>);

impl Sealer for KeyringSealer {
    fn seal(&self, plain: &[u8], ad: &str) -> String {
        self.0.keyring.seal(plain, ad)
    }

    fn open(&self, sealed: &str, ad: &str) -> Result<Vec<u8>, SealError> {
        use secrecy::ExposeSecret;
        self.0
            .keyring
            .open(sealed, ad)
            .map(|plain| plain.expose_secret().clone())
            .map_err(|e| SealError(e.to_string()))
    }
}

impl StoreSessions {
    pub fn new(app: &App) -> Self {
        Self {
            db: match &app.store {
                Store::Postgres(pool) => Db::Postgres(pool.clone()),
                Store::Sqlite(pool) => Db::Sqlite(pool.clone()),
            },
            sealer: Arc::new(KeyringSealer(app.config.clone())),
        }
    }

    fn store(&self, account: &str) -> SessionStore {
        SessionStore::new(self.db.clone(), self.sealer.clone(), account)
    }
}

#[async_trait]
impl SessionStores for StoreSessions {
    fn backend(&self, account: &str) -> Arc<dyn SessionBackend> {
        Arc::new(self.store(account))
    }

    async fn check(&self, account: &str) -> Result<SessionHealth, String> {
        match self.store(account).check().await {
            Ok(SessionCheck::Empty) => Ok(SessionHealth::Empty),
            Ok(SessionCheck::Paired) => Ok(SessionHealth::Paired),
            Ok(SessionCheck::Corrupt(why)) => Ok(SessionHealth::Corrupt(why)),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn erase(&self, account: &str) -> Result<(), String> {
        self.store(account).erase().await.map_err(|e| e.to_string())
    }
}

/// A code on offer while pairing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub code: String,
    pub expires_at: DateTime<Utc>,
    /// A QR code's drawing (SVG), made once when the code arrives; `None` for a pair code.
    pub svg: Option<Arc<str>>,
}

/// What `GET …/whatsapp-web/qr` and the dashboard show of a link.
#[derive(Debug, Clone, Default)]
pub struct Pairing {
    pub qr: Option<Offer>,
    pub pair_code: Option<Offer>,
    /// Why pairing by phone number could not start.
    pub pair_error: Option<String>,
}

/// The WhatsApp Web connections of this process.
pub struct WebSessions {
    app: Weak<App>,
    connector: Arc<dyn WebConnector>,
    stores: Arc<dyn SessionStores>,
    links: Mutex<HashMap<String, Arc<Link>>>,
}

impl WebSessions {
    pub fn new(
        app: &Arc<App>,
        connector: Arc<dyn WebConnector>,
        stores: Arc<dyn SessionStores>,
    ) -> Arc<Self> {
        Arc::new(Self {
            app: Arc::downgrade(app),
            connector,
            stores,
            links: Mutex::new(HashMap::new()),
        })
    }

    fn links(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Link>>> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The link of `account` in this process, if its actor runs here.
    pub fn link(&self, account: &str) -> Option<Arc<Link>> {
        self.links().get(account).cloned()
    }

    /// Opens `account`'s session for its actor: a new link, connected at once when the operator
    /// wants it connected and this process runs the account.
    pub fn open(self: &Arc<Self>, account: &str) -> Arc<dyn Session> {
        let link = Arc::new(Link {
            account: account.to_string(),
            sessions: Arc::downgrade(self),
            inner: Mutex::new(LinkInner::default()),
            starting: tokio::sync::Mutex::new(()),
        });
        if let Some(old) = self.links().insert(account.to_string(), link.clone()) {
            old.shut();
            tokio::spawn(async move { old.stop().await });
        }
        let starting = link.clone();
        tokio::spawn(async move { starting.start(None).await });
        Arc::new(WebSession { link })
    }

    /// Whether this process runs `account` (holds its lease; always on SQLite).
    fn runs(&self, app: &App, account: &str) -> bool {
        app.cluster.get().is_none_or(|c| c.runs(account))
    }

    /// Makes sure every `whatsapp_web` account this process runs and the operator wants
    /// connected has its actor (and so its connection) running: at start, and after a lease
    /// was taken.
    pub async fn resume(&self) {
        let Some(app) = self.app.upgrade() else {
            return;
        };
        let wanted: Vec<String> = {
            let model = app.model();
            model
                .accounts
                .values()
                .filter(|a| !a.deleted && a.transport == Transport::WhatsappWeb)
                .filter(|a| a.whatsapp_web.as_ref().is_some_and(|w| w.wanted))
                .map(|a| a.id.clone())
                .collect()
        };
        for account in wanted {
            if !self.runs(&app, &account) {
                continue;
            }
            if let Some(link) = self.link(&account) {
                if link.connection().is_some() {
                    continue;
                }
            }
            match app.gateway() {
                Ok(gateway) => {
                    if let Err(e) = gateway.open_account(&account).await {
                        tracing::warn!(account = %account, error = %e, "cannot start a whatsapp_web account");
                        continue;
                    }
                }
                Err(_) => return,
            }
            if let Some(link) = self.link(&account) {
                link.start(None).await;
            }
        }
    }

    /// `POST …/whatsapp-web/connect`: records the wish to connect, then starts the connection
    /// when this process runs the account (with a pair code for `pair_phone`), and waits up to
    /// `wait` for it to show a code or connect.
    pub async fn connect(
        &self,
        who: &Who,
        account: &str,
        pair_phone: Option<String>,
        wait: Duration,
    ) -> Result<(), LinkError> {
        let app = self
            .app
            .upgrade()
            .ok_or_else(|| LinkError::Unavailable("the gateway is stopping".into()))?;
        require_web(&app, account)?;
        // The gateway that runs the account connects it: a free lease is taken here; one held
        // by another gateway sends the request there (ADR 0029) before anything is recorded.
        if let Some(cluster) = app.cluster.get() {
            if !cluster.claim(&app, account).await {
                return Err(not_here(account));
            }
        }
        app.execute(
            &app.accounts,
            account,
            AccountCommand::ConnectWhatsAppWeb,
            who,
        )
        .await?;
        let gateway = app.gateway()?;
        gateway.open_account(account).await?;
        let Some(link) = self.link(account) else {
            return Err(LinkError::Unavailable(
                "the account's session did not open; retry".into(),
            ));
        };
        link.start(pair_phone).await;
        let until = tokio::time::Instant::now() + wait;
        while tokio::time::Instant::now() < until {
            let p = link.pairing();
            let state = web_state(&app, account).map(|w| w.state);
            let settled = state.is_some_and(|s| {
                !matches!(
                    s,
                    WebConnectionState::Connecting | WebConnectionState::Pairing
                )
            });
            if p.qr.is_some() || p.pair_code.is_some() || p.pair_error.is_some() || settled {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// `POST …/whatsapp-web/logout`: unlinks the device (when connected), erases the session and
    /// records `logged_out`.
    pub async fn logout(&self, who: &Who, account: &str) -> Result<(), LinkError> {
        let app = self
            .app
            .upgrade()
            .ok_or_else(|| LinkError::Unavailable("the gateway is stopping".into()))?;
        require_web(&app, account)?;
        if !self.runs(&app, account) {
            return Err(not_here(account));
        }
        if let Some(link) = self.link(account) {
            link.inner().logging_out = true;
            if let Some(conn) = link.connection() {
                if let Err(e) = conn.logout().await {
                    tracing::warn!(account = %account, error = %e, "whatsapp_web logout was not confirmed by WhatsApp; the session is erased anyway");
                }
            }
            link.stop().await;
            link.inner().logging_out = false;
        }
        self.stores.erase(account).await.map_err(|e| {
            tracing::error!(account = %account, error = %e, "cannot erase a whatsapp_web session");
            LinkError::Unavailable("the session could not be erased; retry".into())
        })?;
        let cmd = AccountCommand::RecordWhatsAppWebState {
            state: WebConnectionState::LoggedOut,
            reason: Some(format!("logged out by {}", who.actor)),
        };
        app.execute(&app.accounts, account, cmd, who).await?;
        Ok(())
    }

    /// The account was deleted: unlink its device (when connected here) and erase its session.
    pub async fn account_deleted(&self, account: &str) {
        if let Some(link) = self.link(account) {
            if let Some(conn) = link.connection() {
                if let Err(e) = conn.logout().await {
                    tracing::warn!(account = %account, error = %e, "a deleted account's device was not unlinked; remove it on the phone");
                }
            }
            link.shut();
            link.stop().await;
        }
        if let Err(e) = self.stores.erase(account).await {
            tracing::error!(account = %account, error = %e, "cannot erase a deleted account's whatsapp_web session");
        }
    }

    /// The codes on offer for `account` (409 for another transport or when another node runs
    /// it).
    pub fn pairing(&self, account: &str) -> Result<Pairing, LinkError> {
        let app = self
            .app
            .upgrade()
            .ok_or_else(|| LinkError::Unavailable("the gateway is stopping".into()))?;
        let web = require_web(&app, account)?;
        // Nothing is on offer anywhere unless the account is wanted connected.
        if web.wanted && !self.runs(&app, account) {
            return Err(not_here(account));
        }
        Ok(self.link(account).map(|l| l.pairing()).unwrap_or_default())
    }

    /// Stops every connection (the gateway is stopping; the actors close their links too).
    pub async fn stop_all(&self) {
        let links: Vec<Arc<Link>> = self.links().drain().map(|(_, l)| l).collect();
        for link in links {
            link.shut();
            link.stop().await;
        }
    }

    /// Forgets `link` (its actor stopped) unless a newer link took its place.
    fn forget(&self, link: &Arc<Link>) {
        let mut links = self.links();
        if links
            .get(&link.account)
            .is_some_and(|l| Arc::ptr_eq(l, link))
        {
            links.remove(&link.account);
        }
    }
}

fn web_state(app: &App, account: &str) -> Option<WebState> {
    app.model()
        .account(account)
        .and_then(|a| a.whatsapp_web.clone())
}

/// 404 for an unknown account, 409 for one on another transport.
fn require_web(app: &App, account: &str) -> Result<WebState, LinkError> {
    let model = app.model();
    let acc = model
        .account(account)
        .ok_or_else(|| LinkError::NotFound("account not found".into()))?;
    acc.whatsapp_web
        .clone()
        .ok_or_else(|| LinkError::Conflict {
            code: "wrong_transport",
            message: format!(
                "this account uses the {} transport; QR codes, pairing and logout are for whatsapp_web accounts",
                acc.transport.as_str()
            ),
        })
}

/// The account runs on another gateway of the cluster, which holds its connection.
fn not_here(account: &str) -> LinkError {
    LinkError::OtherNode(account.to_string())
}

#[derive(Default)]
struct LinkInner {
    conn: Option<Arc<dyn WebConnection>>,
    /// The number the running connection pairs with (`None`: a QR code, or paired already).
    pair_phone: Option<String>,
    pairing: Pairing,
    /// The link's actor stopped: nothing starts any more.
    shut: bool,
    /// An operator logout is under way: the connection's own `LoggedOut` is not recorded.
    logging_out: bool,
    /// Senders of recently received messages, by message id (read receipts in groups).
    senders: HashMap<String, String>,
    order: VecDeque<String>,
}

/// One account's connection in this process.
pub struct Link {
    account: String,
    sessions: Weak<WebSessions>,
    inner: Mutex<LinkInner>,
    /// One start at a time.
    starting: tokio::sync::Mutex<()>,
}

impl Link {
    fn inner(&self) -> std::sync::MutexGuard<'_, LinkInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn connection(&self) -> Option<Arc<dyn WebConnection>> {
        self.inner().conn.clone()
    }

    /// The codes on offer now (expired ones are left out).
    pub fn pairing(&self) -> Pairing {
        let now = Utc::now();
        let mut p = self.inner().pairing.clone();
        p.qr = p.qr.filter(|o| o.expires_at > now);
        p.pair_code = p.pair_code.filter(|o| o.expires_at > now);
        p
    }

    fn paired(&self, app: &App) -> bool {
        web_state(app, &self.account).is_some_and(|w| {
            matches!(
                w.state,
                WebConnectionState::Connected | WebConnectionState::Disconnected
            )
        })
    }

    fn shut(&self) {
        self.inner().shut = true;
    }

    /// Starts the connection unless it runs, the link was shut, the operator does not want it,
    /// or this process does not run the account.
    async fn start(self: &Arc<Self>, pair_phone: Option<String>) {
        let _one = self.starting.lock().await;
        let Some(sessions) = self.sessions.upgrade() else {
            return;
        };
        let Some(app) = sessions.app.upgrade() else {
            return;
        };
        if self.connection().is_some() {
            let other_phone = pair_phone.is_some() && self.inner().pair_phone != pair_phone;
            if !other_phone || self.paired(&app) {
                return;
            }
            // Pairing by QR code (or another number) runs: start again with this pair code.
            self.stop().await;
        }
        if self.inner().shut
            || !web_state(&app, &self.account).is_some_and(|w| w.wanted)
            || !sessions.runs(&app, &self.account)
        {
            return;
        }
        let account = self.account.as_str();
        let health = match sessions.stores.check(account).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(account, error = %e, "cannot read the whatsapp_web session store; not connecting now");
                self.record(
                    &app,
                    WebConnectionState::Disconnected,
                    Some("the session store cannot be read; retrying later".into()),
                )
                .await;
                return;
            }
        };
        if let SessionHealth::Corrupt(why) = &health {
            tracing::warn!(account, reason = %why, "the stored whatsapp_web session cannot be opened; it is erased and the account pairs again");
            if let Err(e) = sessions.stores.erase(account).await {
                tracing::error!(account, error = %e, "cannot erase a corrupt whatsapp_web session");
                return;
            }
            self.record(
                &app,
                WebConnectionState::Pairing,
                Some("the stored session could not be opened (corrupt, or sealed for another account); pair the phone again".into()),
            )
            .await;
        } else {
            let state = if health == SessionHealth::Empty {
                WebConnectionState::Pairing
            } else {
                WebConnectionState::Connecting
            };
            self.record(&app, state, None).await;
        }
        self.inner().pairing = Pairing::default();
        let phone = pair_phone.clone();
        let options = ConnectOptions {
            account: self.account.clone(),
            backend: sessions.stores.backend(account),
            pair_phone,
            handler: Arc::new(LinkHandler {
                link: Arc::downgrade(self),
            }),
        };
        match sessions.connector.connect(options).await {
            Ok(conn) => {
                let stale = {
                    let mut inner = self.inner();
                    if inner.shut {
                        Some(conn)
                    } else {
                        inner.conn = Some(conn);
                        inner.pair_phone = phone;
                        None
                    }
                };
                if let Some(conn) = stale {
                    conn.stop().await;
                }
            }
            Err(e) => {
                tracing::warn!(account, error = %e, "the whatsapp_web connection did not start");
                self.record(&app, WebConnectionState::Disconnected, Some(e.reason))
                    .await;
            }
        }
    }

    /// Stops the connection (the session stays).
    async fn stop(&self) {
        let conn = {
            let mut inner = self.inner();
            inner.pairing = Pairing::default();
            inner.conn.take()
        };
        if let Some(conn) = conn {
            conn.stop().await;
        }
    }

    async fn record(&self, app: &App, state: WebConnectionState, reason: Option<String>) {
        // A process that no longer runs the account (its lease expired while it was paused or
        // cut off) must not speak for the connection: the new owner's connection replaced this
        // one, and its `stream_replaced` would stop the account everywhere.
        let runs = self
            .sessions
            .upgrade()
            .is_some_and(|s| s.runs(app, &self.account));
        if !runs {
            tracing::debug!(account = %self.account, state = state.as_str(), "whatsapp_web state not recorded: another gateway runs the account");
            return;
        }
        // The same state without a new reason keeps the reason recorded (a new QR code while
        // pairing after a corrupt session still says why the account pairs).
        if reason.is_none() && web_state(app, &self.account).is_some_and(|w| w.state == state) {
            return;
        }
        let who = Who {
            actor: "system:whatsapp_web".into(),
            request_id: None,
        };
        let cmd = AccountCommand::RecordWhatsAppWebState { state, reason };
        match app.execute(&app.accounts, &self.account, cmd, &who).await {
            Ok(()) => {
                tracing::info!(account = %self.account, state = state.as_str(), "whatsapp_web connection state")
            }
            Err(e) => {
                tracing::warn!(account = %self.account, state = state.as_str(), error = %e, "cannot record a whatsapp_web connection state")
            }
        }
    }

    fn remember_sender(&self, id: &str, sender: &str) {
        let mut inner = self.inner();
        if inner.senders.len() >= SENDERS_KEPT {
            if let Some(old) = inner.order.pop_front() {
                inner.senders.remove(&old);
            }
        }
        if inner
            .senders
            .insert(id.to_string(), sender.to_string())
            .is_none()
        {
            inner.order.push_back(id.to_string());
        }
    }

    fn sender_of(&self, id: &str) -> Option<String> {
        self.inner().senders.get(id).cloned()
    }
}

/// What a connection reports, handled for its link.
struct LinkHandler {
    link: Weak<Link>,
}

impl LinkHandler {
    fn parts(&self) -> Option<(Arc<Link>, Arc<WebSessions>, Arc<App>)> {
        let link = self.link.upgrade()?;
        let sessions = link.sessions.upgrade()?;
        let app = sessions.app.upgrade()?;
        Some((link, sessions, app))
    }
}

/// The chat command of an inbound message: `None` when it has no chat wagate can record (a
/// JID of another kind).
pub fn inbound_of(m: &WebInbound) -> Inbound {
    let broadcast = m.chat == "status@broadcast" || m.chat.ends_with("@broadcast");
    let text = match m.quoted.as_ref().and_then(|q| q.text.as_deref()) {
        Some(quoted) if !quoted.trim().is_empty() => {
            let quoted: String = quoted.chars().take(QUOTE_CHARS).collect();
            format!("[replying to: \"{quoted}\"]\n{}", m.text)
        }
        _ => m.text.clone(),
    };
    Inbound {
        // WhatsApp may deliver the real message under the same id after the sender re-sent it:
        // the undecryptable one must not make it a duplicate.
        message_id: if m.undecryptable {
            format!("{}.undecryptable", m.id)
        } else {
            m.id.clone()
        },
        from: m
            .sender
            .split_once('@')
            .map_or(m.sender.as_str(), |(user, _)| user)
            .to_string(),
        text,
        from_me: m.from_me,
        // Broadcasts, undecryptable messages and reactions are recorded, never answered.
        reply_candidate: !(broadcast || m.undecryptable || m.kind == MessageKind::Reaction),
        kind: m.kind,
        contact_name: m.push_name.clone(),
        mentioned: m.mentions_me,
        reply_to: m.quoted.as_ref().and_then(|q| q.id.clone()),
        media: None,
    }
}

/// The media of an inbound message: downloaded through the connection and checked as every
/// transport's media are, when a reply may use its bytes (`answered`: a voice note, image or
/// sticker that may be answered); otherwise what WhatsApp declared of it.
async fn receive_media(link: &Link, app: &App, media: &WebMedia, answered: bool) -> Received {
    let sha256 = media.sha256.as_deref().map(hex::encode);
    if !(answered && keeps_bytes(media.kind)) {
        return Received::Declared(declared_info(
            &media.mime_type,
            media.size,
            sha256.as_deref(),
            clean_filename(media.filename.as_deref()),
            None,
        ));
    }
    let max_bytes = app.config.media_max_bytes;
    let fetched = match link.connection() {
        Some(conn) => conn.download(media, max_bytes).await.map_err(|e| e.reason),
        None => Err("the connection is not open".to_string()),
    };
    if let Err(why) = &fetched {
        tracing::warn!(account = %link.account, kind = media.kind.as_str(), reason = %why, "whatsapp_web media not downloaded; the message is recorded without it");
    }
    Received::from_download(
        media.kind,
        &media.mime_type,
        media.size,
        sha256.as_deref(),
        clean_filename(media.filename.as_deref()),
        fetched.map_err(|why| format!("download failed: {why}")),
        max_bytes,
    )
}

#[async_trait]
impl WebHandler for LinkHandler {
    async fn messages(&self, batch: Vec<WebInbound>) -> Result<(), String> {
        let Some((link, _, app)) = self.parts() else {
            return Err("the gateway is stopping".into());
        };
        let gateway = app.gateway().map_err(|e| e.to_string())?;
        let meta = Who {
            actor: "transport:whatsapp_web".into(),
            request_id: None,
        }
        .metadata();
        for m in batch {
            let mut inbound = inbound_of(&m);
            link.remember_sender(&m.id, &m.sender);
            // Media a reply may use is downloaded and kept before its message is committed (and
            // so before WhatsApp is told it arrived); a failed download marks it unavailable.
            if let Some(media) = &m.media {
                let answered = inbound.reply_candidate && !inbound.from_me;
                let received = receive_media(&link, &app, media, answered).await;
                if let Some(kept) = received.kept() {
                    let used = crate::store::media::MediaUse {
                        account: &link.account,
                        chat_id: &m.chat,
                        message_id: &inbound.message_id,
                        sha256: &kept.info.sha256,
                    };
                    crate::store::media::put(&app.store, used, &kept.info.mime_type, &kept.bytes)
                    .await
                    .map_err(|e| {
                        tracing::warn!(account = %link.account, error = %e, "whatsapp_web media not kept; WhatsApp delivers the message again");
                        e.to_string()
                    })?;
                }
                inbound.media = Some(received.into_info());
            }
            match gateway
                .receive(&link.account, &m.chat, inbound, meta.clone())
                .await
            {
                Ok(_) => {}
                // A chat wagate cannot record (a JID of another kind): acknowledged and dropped,
                // or WhatsApp would deliver it again forever.
                Err(ActorError::Domain(DomainError::Invalid { .. })) => {
                    tracing::debug!(account = %link.account, "whatsapp_web message for a chat of an unknown kind dropped");
                }
                Err(e) => {
                    tracing::warn!(account = %link.account, error = %e, "whatsapp_web message not committed; WhatsApp delivers it again");
                    return Err(e.to_string());
                }
            }
        }
        Ok(())
    }

    async fn event(&self, event: WebEvent) {
        let Some((link, sessions, app)) = self.parts() else {
            return;
        };
        let account = link.account.as_str();
        let offer = |code: String, valid_for: Duration, svg: Option<Arc<str>>| Offer {
            code,
            expires_at: Utc::now()
                + chrono::Duration::from_std(valid_for).unwrap_or(chrono::Duration::seconds(20)),
            svg,
        };
        match event {
            WebEvent::Qr { code, valid_for } => {
                let svg = qr_svg(&code).map(Arc::from);
                link.inner().pairing.qr = Some(offer(code, valid_for, svg));
                link.record(&app, WebConnectionState::Pairing, None).await;
            }
            WebEvent::PairCode { code, valid_for } => {
                {
                    let mut inner = link.inner();
                    inner.pairing.pair_code = Some(offer(code, valid_for, None));
                    inner.pairing.pair_error = None;
                }
                link.record(&app, WebConnectionState::Pairing, None).await;
            }
            WebEvent::PairError { reason } => {
                // The library ends the connection when pairing fails or its QR codes ran out:
                // a new `connect` starts over.
                link.inner().pairing.pair_error = Some(reason.clone());
                let why = format!("pairing ended: {reason}; connect again to get a new code");
                end(link, app, None, WebConnectionState::Stopped, Some(why));
            }
            WebEvent::Paired { .. } => {
                link.inner().pairing = Pairing::default();
                link.record(&app, WebConnectionState::Connecting, None)
                    .await;
            }
            WebEvent::Connected => {
                link.inner().pairing = Pairing::default();
                link.record(&app, WebConnectionState::Connected, None).await;
            }
            WebEvent::Disconnected => {
                link.record(&app, WebConnectionState::Disconnected, None)
                    .await;
            }
            WebEvent::LoggedOut { .. } if link.inner().logging_out => {}
            WebEvent::LoggedOut { reason } => {
                let state = WebConnectionState::LoggedOut;
                end(link, app, Some(sessions), state, Some(reason));
            }
            WebEvent::TemporarilyBanned { reason, expires_in } => {
                let reason = match expires_in {
                    Some(d) => format!("{reason} (for about {} min)", d.as_secs().div_ceil(60)),
                    None => reason,
                };
                link.record(&app, WebConnectionState::TemporarilyBanned, Some(reason))
                    .await;
            }
            WebEvent::ClientOutdated => {
                end(link, app, None, WebConnectionState::ClientOutdated, None);
            }
            WebEvent::StreamReplaced => {
                // Another connection runs on this session: fighting it would make both flap.
                let why = "another connection with this session replaced this one";
                end(
                    link,
                    app,
                    None,
                    WebConnectionState::StreamReplaced,
                    Some(why.into()),
                );
            }
            WebEvent::Receipt { chat, ids, status } => {
                let Ok(gateway) = app.gateway() else { return };
                let meta = Who {
                    actor: "transport:whatsapp_web".into(),
                    request_id: None,
                }
                .metadata();
                for id in ids {
                    if let Err(e) = gateway
                        .status(account, &chat, &id, status, None, meta.clone())
                        .await
                    {
                        tracing::debug!(account, error = %e, "whatsapp_web receipt not recorded");
                    }
                }
            }
        }
    }
}

/// The connection ended for good (`state`): stop it, erase the session when `erase` holds the
/// stores (logged out), and record the state. On a task of its own: the library reports from
/// the queue its stop waits for.
fn end(
    link: Arc<Link>,
    app: Arc<App>,
    erase: Option<Arc<WebSessions>>,
    state: WebConnectionState,
    reason: Option<String>,
) {
    tokio::spawn(async move {
        link.stop().await;
        if let Some(sessions) = erase {
            if let Err(e) = sessions.stores.erase(&link.account).await {
                tracing::error!(account = %link.account, error = %e, "cannot erase a logged-out whatsapp_web session");
            }
        }
        link.record(&app, state, reason).await;
    });
}

/// An account's session for its actor: sends through the link's connection.
struct WebSession {
    link: Arc<Link>,
}

fn send_error(e: WebError) -> SendError {
    if e.retryable {
        SendError::retryable(format!("whatsapp_web: {}", e.reason))
    } else {
        SendError::permanent(format!("whatsapp_web: {}", e.reason))
    }
}

impl WebSession {
    fn conn(&self) -> Result<Arc<dyn WebConnection>, SendError> {
        let elsewhere = self
            .link
            .sessions
            .upgrade()
            .and_then(|s| s.app.upgrade().map(|app| !s.runs(&app, &self.link.account)))
            .unwrap_or(false);
        if elsewhere {
            // The connection lives on the gateway that runs the account (ADR 0027).
            return Err(SendError::permanent(
                "whatsapp_web: another gateway runs this account's connection; send through it (GET /v1/nodes names it)",
            ));
        }
        self.link.connection().ok_or_else(|| {
            let state = self
                .link
                .sessions
                .upgrade()
                .and_then(|s| s.app.upgrade())
                .and_then(|app| web_state(&app, &self.link.account))
                .map_or("stopped", |w| w.state.as_str());
            SendError::retryable(format!("whatsapp_web is not connected (state: {state})"))
        })
    }

    fn mark_read(&self) -> bool {
        self.link
            .sessions
            .upgrade()
            .and_then(|s| s.app.upgrade())
            .and_then(|app| web_state(&app, &self.link.account))
            .is_some_and(|w| w.mark_read)
    }
}

#[async_trait]
impl Session for WebSession {
    async fn send_text(&self, jid: &str, text: &str) -> Result<String, SendError> {
        self.conn()?.send_text(jid, text).await.map_err(send_error)
    }

    async fn typing(&self, jid: &str, reply_to: Option<&str>) -> Result<(), SendError> {
        let conn = self.conn()?;
        if let (Some(id), true) = (reply_to, self.mark_read()) {
            let sender = self.link.sender_of(id).unwrap_or_else(|| jid.to_string());
            if let Err(e) = conn.mark_read(jid, &sender, &[id.to_string()]).await {
                tracing::debug!(account = %self.link.account, error = %e, "read receipt not sent");
            }
        }
        conn.typing(jid, true).await.map_err(send_error)
    }

    async fn close(&self) {
        self.link.shut();
        self.link.stop().await;
        if let Some(sessions) = self.link.sessions.upgrade() {
            sessions.forget(&self.link);
        }
    }
}

#[cfg(test)]
mod tests {
    use wagate_waweb::port::Quoted;

    use super::*;

    fn msg(chat: &str, sender: &str) -> WebInbound {
        WebInbound {
            id: "3EB0A1".into(),
            chat: chat.into(),
            sender: sender.into(),
            from_me: false,
            push_name: Some("Ana".into()),
            kind: MessageKind::Text,
            text: "hello".into(),
            quoted: None,
            mentions_me: false,
            undecryptable: false,
            media: None,
        }
    }

    #[test]
    fn a_private_text_is_a_reply_candidate_from_the_senders_number() {
        let i = inbound_of(&msg("5511999@s.whatsapp.net", "5511999@s.whatsapp.net"));
        assert!(i.reply_candidate);
        assert_eq!(i.from, "5511999");
        assert_eq!(i.text, "hello");
        assert_eq!(i.contact_name.as_deref(), Some("Ana"));
    }

    #[test]
    fn broadcasts_reactions_and_undecryptable_messages_are_never_answered() {
        assert!(!inbound_of(&msg("status@broadcast", "5511999@s.whatsapp.net")).reply_candidate);
        let mut r = msg("5511999@s.whatsapp.net", "5511999@s.whatsapp.net");
        r.kind = MessageKind::Reaction;
        assert!(!inbound_of(&r).reply_candidate);
        let mut u = msg("5511999@s.whatsapp.net", "5511999@s.whatsapp.net");
        u.undecryptable = true;
        assert!(!inbound_of(&u).reply_candidate);
    }

    #[test]
    fn a_quote_goes_to_the_model_as_context_and_names_the_quoted_message() {
        let mut m = msg("120363@g.us", "5511888@s.whatsapp.net");
        m.quoted = Some(Quoted {
            id: Some("OURS1".into()),
            sender: None,
            text: Some("We open at 9".into()),
        });
        m.mentions_me = true;
        let i = inbound_of(&m);
        assert_eq!(i.text, "[replying to: \"We open at 9\"]\nhello");
        assert_eq!(i.reply_to.as_deref(), Some("OURS1"));
        assert!(i.mentioned);
        assert_eq!(i.from, "5511888");
    }
}
