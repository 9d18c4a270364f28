//! The port on the real library: [`LibraryConnector`] starts a whatsapp-rust `Bot` per account
//! and [`LibraryConnection`] drives it.
//!
//! Inbound messages and their acks: an inbound durability hook maps each batch the library
//! decrypted and awaits [`WebHandler::messages`]; only when it returns `Ok` does the library
//! acknowledge the batch to WhatsApp, and on `Err` the messages stay in WhatsApp's offline queue
//! and come again on the next connect (at-least-once: the same id can arrive twice). The library
//! also buffers every batch in the session store's pending-inbound table before the hook runs,
//! so a crash mid-commit replays from there: the session [`SessionBackend`] must implement those
//! methods, or `connect` fails.
//!
//! Everything else goes through one ordered event queue (the library's own callback delivery is
//! unordered): pairing codes, connection state and receipts become [`WebEvent`]s; undecryptable
//! messages, newsletter posts and messages recovered from the phone (which the library dispatches
//! without the hook, and acks by itself) go to [`WebHandler::messages`] too, where an `Err` is
//! only logged since there is nothing left to redeliver them. `Event::Messages` batches that the
//! hook already committed are skipped.
//!
//! Pairing by phone number: the first code is requested once the socket is up; when WhatsApp
//! asks for a new one (or the code in use goes unanswered) another is requested for the same
//! number. When nobody scanned any QR code in time the library ends the connection for good
//! (reported as [`WebEvent::PairError`]); a new `connect` brings new codes.
//!
//! Nothing here logs a message text, a key or a QR/pair code; message ids are logged at debug.
//! The library itself logs through the `log` crate, and logs the pair code at info under the
//! targets `Client/PairCode` and `Bot/PairCode`: a `log` bridge must filter those out.
//!
//! [`SessionBackend`]: crate::port::SessionBackend

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wacore::pair_code::PairCodeOptions;
use wacore::proto_helpers::MessageBuilderExt;
use wacore::types::events::{Event, EventHandler, EventInterest, EventKind, InboundMessage};
use wagate_events::chat::MessageKind;
use whatsapp_rust::anyhow;
use whatsapp_rust::bot::{Bot, BotBuilderError, BotHandle};
use whatsapp_rust::features::ChatStateType;
use whatsapp_rust::transport::TokioWebSocketTransportFactory;
use whatsapp_rust::wacore_binary::JidExt;
use whatsapp_rust::waproto::whatsapp as wa;
use whatsapp_rust::{
    Client, ClientError, InboundDurabilityHook, IqError, Jid, SendError, SendOptions, TokioRuntime,
};

use crate::http::ReqwestHttpClient;
use crate::mapping::{self, OwnJids};
use crate::port::{
    ConnectOptions, WebConnection, WebConnector, WebError, WebEvent, WebHandler, WebMedia,
};

/// How long `send_text` waits for WhatsApp's server ack of a sent message, to tell an accepted
/// message from a refused one (463…). Without an ack in time the message counts as sent.
const SERVER_ACK_WAIT: Duration = Duration::from_secs(10);
/// How long a media download (the media connection, the CDN fetch and the decryption) may take.
const DOWNLOAD_WAIT: Duration = Duration::from_secs(60);
/// How long `stop` and `logout` wait for the library to flush and end before aborting it.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(15);

/// Starts whatsapp-rust connections: one `Bot` per [`ConnectOptions`], on the tokio websocket
/// transport, wagate's reqwest HTTP client and the tokio runtime.
#[derive(Debug, Clone)]
pub struct LibraryConnector {
    http: ReqwestHttpClient,
    ws_url: Option<String>,
    version: Option<(u32, u32, u32)>,
}

impl LibraryConnector {
    /// The connector for WhatsApp itself (`wss://web.whatsapp.com/ws/chat`, the current web
    /// client version fetched from web.whatsapp.com once a day).
    pub fn new() -> Result<Self, WebError> {
        let http = ReqwestHttpClient::new()
            .map_err(|e| WebError::permanent(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            ws_url: None,
            version: None,
        })
    }

    /// Dial this websocket URL instead of WhatsApp's (a relay, or a test server).
    pub fn with_ws_url(mut self, url: impl Into<String>) -> Self {
        self.ws_url = Some(url.into());
        self
    }

    /// Announce this WhatsApp Web version instead of fetching the current one.
    pub fn with_version(mut self, version: (u32, u32, u32)) -> Self {
        self.version = Some(version);
        self
    }
}

#[async_trait]
impl WebConnector for LibraryConnector {
    async fn connect(&self, options: ConnectOptions) -> Result<Arc<dyn WebConnection>, WebError> {
        let ConnectOptions {
            account,
            backend,
            pair_phone,
            handler,
        } = options;

        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let acks = Arc::new(AckWaiters::default());
        let client_slot: Arc<OnceLock<Weak<Client>>> = Arc::new(OnceLock::new());

        let mut transport = TokioWebSocketTransportFactory::new();
        if let Some(url) = &self.ws_url {
            transport = transport.with_url(url.clone());
        }
        let mut builder = Bot::builder()
            .with_backend_arc(backend)
            .with_transport_factory(transport)
            .with_http_client(self.http.clone())
            .with_runtime(TokioRuntime)
            .with_inbound_durability_hook(Hook {
                handler: handler.clone(),
            })
            .with_event_handler(Forwarder {
                events: events_tx.clone(),
                acks: acks.clone(),
            });
        if let Some(version) = self.version {
            builder = builder.with_version(version);
        }
        let pair_code = pair_phone.map(|phone| PairCodeOptions {
            phone_number: phone.chars().filter(char::is_ascii_digit).collect(),
            ..Default::default()
        });
        if let Some(options) = &pair_code {
            builder = builder.with_pair_code(options.clone());
        }
        let bot = builder.build().await.map_err(|e| match e {
            // The session store failed: worth another try.
            BotBuilderError::Store(e) => {
                WebError::retryable(format!("session store unavailable: {e}"))
            }
            other => WebError::permanent(format!("cannot start the connection: {other}")),
        })?;

        let client = bot.client();
        // Set once, right here: the slot is new.
        let _ = client_slot.set(Arc::downgrade(&client));
        let events_task = tokio::spawn(forward_events(events_rx, handler, client_slot, pair_code));
        let stop_events = events_tx;
        let handle = bot.spawn();
        tracing::info!(account = %account, "whatsapp web connection started");

        Ok(Arc::new(LibraryConnection {
            account,
            client,
            handle: tokio::sync::Mutex::new(Some(handle)),
            events_task: Mutex::new(Some(events_task)),
            stop_events,
            acks,
        }))
    }
}

/// One running connection (a spawned whatsapp-rust `Bot`).
pub struct LibraryConnection {
    account: String,
    client: Arc<Client>,
    handle: tokio::sync::Mutex<Option<BotHandle>>,
    events_task: Mutex<Option<JoinHandle<()>>>,
    /// To end the event queue once the library has stopped (the library's handler keeps its
    /// own sender for as long as the client lives).
    stop_events: mpsc::UnboundedSender<Queued>,
    acks: Arc<AckWaiters>,
}

impl LibraryConnection {
    /// The account's own JIDs (without device part), as far as the session knows them: none
    /// before pairing.
    pub fn own_jids(&self) -> OwnJids {
        own_jids(&self.client)
    }

    fn ready(&self) -> Result<(), WebError> {
        if self.client.is_connected() && self.client.is_logged_in() {
            Ok(())
        } else {
            Err(WebError::retryable("not connected to WhatsApp"))
        }
    }

    /// Ends the run loop (gracefully, then by abort), then the event queue once it has handed
    /// over what the library emitted until then.
    async fn wind_down(&self, graceful: bool) {
        if let Some(handle) = self.handle.lock().await.take() {
            let finished = if graceful {
                tokio::time::timeout(SHUTDOWN_WAIT, handle.shutdown()).await
            } else {
                // `logout` already disconnected: wait for the run loop to end.
                tokio::time::timeout(SHUTDOWN_WAIT, handle).await
            };
            // On timeout the handle was dropped with the future, which aborts the bot task.
            if finished.is_err() {
                tracing::warn!(account = %self.account, "whatsapp web connection did not stop in time; aborted");
            }
        }
        let _ = self.stop_events.send(Queued::Stop);
        let task = lock(&self.events_task).take();
        if let Some(mut task) = task {
            if tokio::time::timeout(SHUTDOWN_WAIT, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

/// The account's own JIDs (without device part) from a client's device store.
pub fn own_jids(client: &Client) -> OwnJids {
    OwnJids {
        pn: client.pn().map(|jid| jid.to_non_ad_string()),
        lid: client.lid().map(|jid| jid.to_non_ad_string()),
    }
}

#[async_trait]
impl WebConnection for LibraryConnection {
    async fn send_text(&self, chat: &str, text: &str) -> Result<String, WebError> {
        let to = parse_jid(chat)?;
        self.ready()?;
        let id = self.client.generate_message_id();
        let ack = self.acks.register(&id);
        let sent = self
            .client
            .send_message_with_options(
                to,
                wa::Message::text(text),
                SendOptions::default().with_message_id(id.clone()),
            )
            .await;
        if let Err(e) = sent {
            self.acks.forget(&id);
            return Err(send_error(e));
        }
        match tokio::time::timeout(SERVER_ACK_WAIT, ack).await {
            Ok(Ok(None)) => {
                tracing::debug!(account = %self.account, id = %id, "message accepted");
                Ok(id)
            }
            Ok(Ok(Some(code))) => {
                tracing::debug!(account = %self.account, id = %id, code = %code, "message refused");
                Err(nack_error(&code))
            }
            // No ack in time (or the connection went away): the stanza was written, so it
            // counts as sent, as the library has it.
            Ok(Err(_)) | Err(_) => {
                self.acks.forget(&id);
                tracing::debug!(account = %self.account, id = %id, "no server ack in time");
                Ok(id)
            }
        }
    }

    async fn typing(&self, chat: &str, composing: bool) -> Result<(), WebError> {
        let to = parse_jid(chat)?;
        self.ready()?;
        let state = if composing {
            ChatStateType::Composing
        } else {
            ChatStateType::Paused
        };
        self.client
            .chatstate()
            .send(&to, state)
            .await
            .map_err(|e| match e {
                whatsapp_rust::features::ChatStateError::Client(e) => client_error(&e),
                other => WebError::retryable(other.to_string()),
            })
    }

    async fn mark_read(&self, chat: &str, sender: &str, ids: &[String]) -> Result<(), WebError> {
        if ids.is_empty() {
            return Ok(());
        }
        let chat = parse_jid(chat)?;
        let sender = if chat.is_group() || chat.is_status_broadcast() || chat.is_broadcast_list() {
            Some(parse_jid(sender)?)
        } else {
            None
        };
        self.ready()?;
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        self.client
            .mark_as_read(&chat, sender.as_ref(), &ids)
            .await
            .map_err(anyhow_error)
    }

    async fn download(&self, media: &WebMedia, max_bytes: usize) -> Result<Vec<u8>, WebError> {
        if let Some(size) = media.size.filter(|s| *s > max_bytes as u64) {
            return Err(WebError::permanent(format!(
                "the media is {size} bytes; at most {max_bytes} are accepted \
                 (WAGATE_MEDIA_MAX_BYTES)"
            )));
        }
        let l = &media.locator;
        if l.direct_path.is_none() && l.static_url.is_none() {
            return Err(WebError::permanent(
                "WhatsApp gave no location for the media",
            ));
        }
        self.ready()?;
        // The library's own message values, which it knows how to download and decrypt.
        let download = async {
            // The library downloads a message of the media's own type, rebuilt from its locator.
            macro_rules! download_as {
                ($ty:ident { $($field:ident: $value:expr),* }) => {{
                    let m = wa::message::$ty {
                        direct_path: l.direct_path.clone(),
                        media_key: l.media_key.clone(),
                        file_enc_sha256: l.file_enc_sha256.clone(),
                        file_sha256: media.sha256.clone(),
                        file_length: media.size,
                        $($field: $value,)*
                        ..Default::default()
                    };
                    self.client.download(&m).await
                }};
            }
            match media.kind {
                MessageKind::Audio => download_as!(AudioMessage {}),
                MessageKind::Image => download_as!(ImageMessage {
                    static_url: l.static_url.clone()
                }),
                MessageKind::Sticker => download_as!(StickerMessage {}),
                MessageKind::Document => download_as!(DocumentMessage {}),
                other => Err(anyhow::anyhow!("no download for {} media", other.as_str())),
            }
        };
        let bytes = match tokio::time::timeout(DOWNLOAD_WAIT, download).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => {
                tracing::debug!(account = %self.account, error = %format!("{e:#}"), "media download failed");
                return Err(download_error(e));
            }
            Err(_) => return Err(WebError::retryable("the media download timed out")),
        };
        if bytes.len() > max_bytes {
            return Err(WebError::permanent(format!(
                "the media is {} bytes; at most {max_bytes} are accepted \
                 (WAGATE_MEDIA_MAX_BYTES)",
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    async fn logout(&self) -> Result<(), WebError> {
        if self.client.pn().is_some() {
            // Unlinking is an IQ to WhatsApp: without a connection it cannot happen, and the
            // library would only tear down locally, leaving the device linked on the phone.
            self.ready()?;
            // Sends the unlink IQ (best effort: the library only logs its failure), reports
            // `LoggedOut`, stops reconnecting and disconnects.
            self.client.logout().await;
            self.wind_down(false).await;
        } else {
            // Never paired: nothing to unlink.
            self.wind_down(true).await;
        }
        tracing::info!(account = %self.account, "whatsapp web device logged out");
        Ok(())
    }

    async fn stop(&self) {
        self.wind_down(true).await;
        tracing::info!(account = %self.account, "whatsapp web connection stopped");
    }
}

/// Maps every decrypted batch and hands it to the handler before the library acks it.
struct Hook {
    handler: Arc<dyn WebHandler>,
}

#[async_trait]
impl InboundDurabilityHook for Hook {
    async fn on_messages(
        &self,
        client: Arc<Client>,
        batch: &[InboundMessage],
    ) -> anyhow::Result<()> {
        let own = own_jids(&client);
        let mapped: Vec<_> = batch
            .iter()
            .filter_map(|m| mapping::inbound_message(m, &own))
            .collect();
        if mapped.is_empty() {
            return Ok(());
        }
        for m in &mapped {
            tracing::debug!(id = %m.id, "inbound message");
        }
        self.handler
            .messages(mapped)
            .await
            .map_err(|reason| anyhow::anyhow!("inbound batch not committed: {reason}"))
    }
}

/// On the library's dispatch path (inline, so it must not block): resolves the server acks
/// `send_text` waits for, and queues the rest, in order, for [`forward_events`].
struct Forwarder {
    events: mpsc::UnboundedSender<Queued>,
    acks: Arc<AckWaiters>,
}

impl EventHandler for Forwarder {
    fn handle_event(&self, event: Arc<Event>) {
        match &*event {
            Event::ServerAck(ack) => {
                if ack.class.as_deref().is_none_or(|class| class == "message") {
                    self.acks.resolve(&ack.id, ack.error.clone());
                }
            }
            // Already delivered (and committed) by the durability hook.
            Event::Messages(batch) if batch.hook_committed => {}
            _ => {
                // Closed only once the connection is stopped.
                let _ = self.events.send(Queued::Event(event));
            }
        }
    }

    fn interest(&self) -> EventInterest {
        EventInterest::of(&[
            EventKind::Connected,
            EventKind::Disconnected,
            EventKind::PairSuccess,
            EventKind::PairError,
            EventKind::LoggedOut,
            EventKind::PairingQrCode,
            EventKind::PairingCode,
            EventKind::PairingCodeError,
            EventKind::PairingCodeRefresh,
            EventKind::PairingQrCodesExhausted,
            EventKind::ClientOutdated,
            EventKind::Messages,
            EventKind::Receipt,
            EventKind::UndecryptableMessage,
            EventKind::StreamReplaced,
            EventKind::TemporaryBan,
            EventKind::ServerAck,
        ])
    }
}

/// Hands the queued events to the handler, one at a time, in the order the library emitted them.
async fn forward_events(
    mut events: mpsc::UnboundedReceiver<Queued>,
    handler: Arc<dyn WebHandler>,
    client: Arc<OnceLock<Weak<Client>>>,
    pair_code: Option<PairCodeOptions>,
) {
    while let Some(Queued::Event(event)) = events.recv().await {
        match &*event {
            // The pair code in use expired or WhatsApp asked for a new one: request it (it
            // arrives as a `PairingCode` event, a failure as `PairingCodeError`).
            Event::PairingCodeRefresh(_) => {
                let client = client.get().and_then(Weak::upgrade);
                if let (Some(client), Some(options)) = (client, pair_code.clone()) {
                    tokio::spawn(async move {
                        if let Err(e) = client.pair_with_code(options).await {
                            tracing::warn!(error = %e, "new pair code not issued");
                        }
                    });
                }
            }
            // Newsletter posts and messages recovered from the phone: the library acked them
            // already, so an error cannot bring them back.
            Event::Messages(batch) => {
                let own = client
                    .get()
                    .and_then(Weak::upgrade)
                    .map(|c| own_jids(&c))
                    .unwrap_or_default();
                let mapped: Vec<_> = batch
                    .iter()
                    .filter_map(|m| mapping::inbound_message(m, &own))
                    .collect();
                if !mapped.is_empty() {
                    if let Err(reason) = handler.messages(mapped).await {
                        tracing::warn!(%reason, "inbound messages outside the durable path were not committed");
                    }
                }
            }
            Event::UndecryptableMessage(u) => {
                if let Some(inbound) = mapping::undecryptable(u) {
                    tracing::debug!(id = %inbound.id, "undecryptable inbound message");
                    if let Err(reason) = handler.messages(vec![inbound]).await {
                        tracing::warn!(%reason, "undecryptable message was not committed");
                    }
                }
            }
            other => {
                if let Some(mapped) = mapping::event(other) {
                    log_event(&mapped);
                    handler.event(mapped).await;
                }
            }
        }
    }
}

/// What the event queue carries.
enum Queued {
    Event(Arc<Event>),
    /// The connection stopped: nothing more to hand over.
    Stop,
}

/// The event's name, never its codes.
fn log_event(event: &WebEvent) {
    let name = match event {
        WebEvent::Qr { .. } => "qr",
        WebEvent::PairCode { .. } => "pair_code",
        WebEvent::PairError { .. } => "pair_error",
        WebEvent::Paired { .. } => "paired",
        WebEvent::Connected => "connected",
        WebEvent::Disconnected => "disconnected",
        WebEvent::LoggedOut { .. } => "logged_out",
        WebEvent::TemporarilyBanned { .. } => "temporarily_banned",
        WebEvent::ClientOutdated => "client_outdated",
        WebEvent::StreamReplaced => "stream_replaced",
        WebEvent::Receipt { .. } => "receipt",
    };
    tracing::debug!(event = name, "whatsapp web event");
}

/// The sends waiting for their server ack, by message id. The value is the nack code, if any.
#[derive(Default)]
struct AckWaiters {
    waiting: Mutex<HashMap<String, oneshot::Sender<Option<String>>>>,
}

impl AckWaiters {
    fn register(&self, id: &str) -> oneshot::Receiver<Option<String>> {
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting).insert(id.to_string(), tx);
        rx
    }

    fn resolve(&self, id: &str, error: Option<String>) {
        if let Some(tx) = lock(&self.waiting).remove(id) {
            let _ = tx.send(error);
        }
    }

    fn forget(&self, id: &str) {
        lock(&self.waiting).remove(id);
    }
}

/// A poisoned lock still holds consistent data here (plain inserts and removes).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn parse_jid(jid: &str) -> Result<Jid, WebError> {
    jid.parse::<Jid>()
        .map_err(|_| WebError::permanent(format!("not a WhatsApp JID: {jid:?}")))
}

/// A nack of a sent message.
fn nack_error(code: &str) -> WebError {
    match code {
        "463" => WebError::permanent(
            "WhatsApp refused the message (463): this contact has not written to the account \
             yet, and WhatsApp does not let a linked device start the conversation",
        ),
        "479" => WebError::permanent("WhatsApp refused the message as malformed (479)"),
        "404" => WebError::permanent("WhatsApp does not know the recipient (404)"),
        "429" => WebError::retryable("WhatsApp rate-limited the message (429)"),
        code if code.starts_with('5') => {
            WebError::retryable(format!("WhatsApp could not take the message ({code})"))
        }
        code => WebError::permanent(format!("WhatsApp refused the message ({code})")),
    }
}

fn send_error(error: SendError) -> WebError {
    match error {
        SendError::Client(e) => client_error(&e),
        SendError::NotLoggedIn => WebError::retryable("not logged in to WhatsApp"),
        SendError::Iq(e) => iq_error(&e),
        SendError::InvalidRequest(reason) => {
            WebError::permanent(format!("invalid send request: {reason}"))
        }
        SendError::Internal(e) => WebError::permanent(format!("send failed: {e}")),
        other => WebError::permanent(format!("send failed: {other}")),
    }
}

fn client_error(error: &ClientError) -> WebError {
    match error {
        ClientError::NotConnected | ClientError::Socket(_) | ClientError::EncryptSend(_) => {
            WebError::retryable(format!("connection to WhatsApp unavailable: {error}"))
        }
        ClientError::NotLoggedIn => WebError::retryable("not logged in to WhatsApp"),
        ClientError::Iq(e) => iq_error(e),
        _ => WebError::permanent(error.to_string()),
    }
}

fn iq_error(error: &IqError) -> WebError {
    match error {
        IqError::Timeout
        | IqError::NotConnected
        | IqError::Socket(_)
        | IqError::EncryptSend(_)
        | IqError::Disconnected(_)
        | IqError::InternalChannelClosed
        | IqError::ClientState(_) => {
            WebError::retryable(format!("WhatsApp request failed: {error}"))
        }
        IqError::ServerError { code, .. } if *code == 429 || *code >= 500 => {
            WebError::retryable(format!("WhatsApp request failed: {error}"))
        }
        _ => WebError::permanent(format!("WhatsApp request failed: {error}")),
    }
}

/// A failed media download, without the library's detail (it may name the CDN URL, which is
/// signed): connection trouble is retryable.
fn download_error(error: anyhow::Error) -> WebError {
    if error.downcast_ref::<ClientError>().is_some() || error.downcast_ref::<IqError>().is_some() {
        return WebError::retryable(format!(
            "the media download failed: {}",
            anyhow_error(error).reason
        ));
    }
    WebError::permanent(
        "the media download failed (WhatsApp's CDN refused it, or it did not decrypt)",
    )
}

/// Errors the library returns as `anyhow` (read receipts): connection trouble is retryable.
fn anyhow_error(error: anyhow::Error) -> WebError {
    if let Some(e) = error.downcast_ref::<ClientError>() {
        return client_error(e);
    }
    if let Some(e) = error.downcast_ref::<IqError>() {
        return iq_error(e);
    }
    WebError::retryable(format!("{error:#}"))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Instant;

    use tokio::net::TcpListener;
    use wacore::store::InMemoryBackend;
    use wacore::types::events::{
        BatchOrigin, Connected, Disconnected, MessageBatch, PairingQrCode, ServerAck,
    };
    use wacore::types::message::{MessageInfo, MessageSource};
    use wagate_events::chat::MessageKind;

    use super::*;
    use crate::port::WebInbound;

    #[derive(Default)]
    struct Recorder {
        batches: Mutex<Vec<Vec<WebInbound>>>,
        events: Mutex<Vec<WebEvent>>,
        fail: AtomicBool,
    }

    #[async_trait]
    impl WebHandler for Recorder {
        async fn messages(&self, batch: Vec<WebInbound>) -> Result<(), String> {
            if self.fail.load(Ordering::SeqCst) {
                return Err("database down".to_string());
            }
            lock(&self.batches).push(batch);
            Ok(())
        }
        async fn event(&self, event: WebEvent) {
            lock(&self.events).push(event);
        }
    }

    fn inbound(chat: &str, id: &str, text: &str) -> InboundMessage {
        InboundMessage::builder()
            .message(Arc::new(wa::Message::text(text)))
            .info(Arc::new(MessageInfo {
                id: id.to_string(),
                source: MessageSource {
                    chat: chat.parse().unwrap(),
                    sender: chat.parse().unwrap(),
                    ..Default::default()
                },
                ..Default::default()
            }))
            .build()
    }

    /// A client that is built but never started: nothing dials.
    async fn idle_client() -> Arc<Client> {
        Bot::builder()
            .with_backend_arc(Arc::new(InMemoryBackend::new()))
            .with_transport_factory(
                TokioWebSocketTransportFactory::new().with_url("ws://127.0.0.1:9/ws/chat"),
            )
            .with_http_client(ReqwestHttpClient::new().unwrap())
            .with_runtime(TokioRuntime)
            .with_version((2, 3000, 1))
            .build()
            .await
            .unwrap()
            .client()
    }

    #[tokio::test]
    async fn the_hook_commits_mapped_messages_and_fails_when_the_handler_does() {
        let recorder = Arc::new(Recorder::default());
        let hook = Hook {
            handler: recorder.clone(),
        };
        let client = idle_client().await;
        let protocol_only = InboundMessage::builder()
            .message(Arc::new(wa::Message {
                protocol_message: whatsapp_rust::buffa::MessageField::some(
                    wa::message::ProtocolMessage::default(),
                ),
                ..Default::default()
            }))
            .info(Arc::new(MessageInfo::default()))
            .build();
        let batch = vec![
            inbound("4915112345678@s.whatsapp.net", "A", "eins"),
            protocol_only.clone(),
            inbound("4915112345678@s.whatsapp.net", "B", "zwei"),
        ];
        hook.on_messages(client.clone(), &batch).await.unwrap();
        {
            let batches = lock(&recorder.batches);
            assert_eq!(batches.len(), 1);
            let ids: Vec<_> = batches[0].iter().map(|m| m.id.as_str()).collect();
            assert_eq!(ids, ["A", "B"]);
        }

        // Nothing to commit: acked without bothering the handler.
        hook.on_messages(client.clone(), &[protocol_only])
            .await
            .unwrap();
        assert_eq!(lock(&recorder.batches).len(), 1);

        // The handler could not commit: the library must not ack.
        recorder.fail.store(true, Ordering::SeqCst);
        assert!(hook.on_messages(client, &batch).await.is_err());
    }

    #[tokio::test]
    async fn events_are_forwarded_in_order_and_acks_resolve_sends() {
        let recorder = Arc::new(Recorder::default());
        let (tx, rx) = mpsc::unbounded_channel();
        let acks = Arc::new(AckWaiters::default());
        let forwarder = Forwarder {
            events: tx.clone(),
            acks: acks.clone(),
        };
        let task = tokio::spawn(forward_events(
            rx,
            recorder.clone(),
            Arc::new(OnceLock::new()),
            None,
        ));

        let accepted = acks.register("3EB0OK");
        let refused = acks.register("3EB0NO");
        let ack = |id: &str, error: Option<&str>| {
            Arc::new(Event::ServerAck(
                ServerAck::builder()
                    .id(id.to_string())
                    .class("message".to_string())
                    .maybe_error(error.map(str::to_string))
                    .build(),
            ))
        };
        let committed = |hook_committed: bool, id: &str| {
            Arc::new(Event::Messages(
                MessageBatch::builder()
                    .messages(Arc::from([inbound(
                        "120363000000000001@newsletter",
                        id,
                        "news",
                    )]))
                    .origin(BatchOrigin::Live)
                    .hook_committed(hook_committed)
                    .build(),
            ))
        };

        forwarder.handle_event(Arc::new(Event::PairingQrCode(
            PairingQrCode::builder()
                .code("2@qr".to_string())
                .timeout(Duration::from_secs(20))
                .build(),
        )));
        forwarder.handle_event(Arc::new(Event::Connected(Connected::builder().build())));
        forwarder.handle_event(ack("3EB0OK", None));
        forwarder.handle_event(ack("3EB0NO", Some("463")));
        forwarder.handle_event(committed(true, "SEEN-BY-HOOK"));
        forwarder.handle_event(committed(false, "NEWSLETTER"));
        forwarder.handle_event(Arc::new(Event::Disconnected(
            Disconnected::builder()
                .reason(wacore::net::DisconnectReason::StreamEnded)
                .build(),
        )));
        tx.send(Queued::Stop).unwrap();
        task.await.unwrap();

        assert_eq!(accepted.await.unwrap(), None);
        assert_eq!(refused.await.unwrap().as_deref(), Some("463"));
        assert!(nack_error("463").reason.contains("463"));
        assert!(!nack_error("463").retryable);
        assert!(nack_error("503").retryable);

        let events = lock(&recorder.events).clone();
        assert_eq!(
            events,
            [
                WebEvent::Qr {
                    code: "2@qr".to_string(),
                    valid_for: Duration::from_secs(20)
                },
                WebEvent::Connected,
                WebEvent::Disconnected,
            ]
        );
        let batches = lock(&recorder.batches).clone();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0][0].id, "NEWSLETTER");
        assert_eq!(batches[0][0].kind, MessageKind::Text);
    }

    /// The real connector against a loopback server that accepts and hangs up: it starts,
    /// dials only where it was told, refuses to send while not connected, and stops promptly.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connect_starts_and_stop_returns_promptly() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let dials = Arc::new(AtomicUsize::new(0));
        let counter = dials.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                drop(socket);
            }
        });

        let connector = LibraryConnector::new()
            .unwrap()
            .with_ws_url(format!("ws://{addr}/ws/chat"))
            .with_version((2, 3000, 1));
        let recorder = Arc::new(Recorder::default());
        let connection = connector
            .connect(ConnectOptions {
                account: "test".to_string(),
                backend: Arc::new(InMemoryBackend::new()),
                pair_phone: None,
                handler: recorder.clone(),
            })
            .await
            .unwrap();

        tokio::time::timeout(Duration::from_secs(30), async {
            while dials.load(Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the connection dials the loopback server");

        let error = connection
            .send_text("4915112345678@s.whatsapp.net", "hallo")
            .await
            .unwrap_err();
        assert!(error.retryable, "{error:?}");
        let error = connection
            .send_text("not a jid", "hallo")
            .await
            .unwrap_err();
        assert!(!error.retryable, "{error:?}");

        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(20), connection.stop())
            .await
            .expect("stop returns");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(lock(&recorder.batches).is_empty());
        server.abort();
    }
}
