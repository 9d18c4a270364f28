//! Webhook delivery (Standard Webhooks): subscriptions are events (`wagate_events::webhook`);
//! what to deliver derives from the event history by commit-ordered position (the fan-out,
//! checkpointed in the same transaction as the deliveries it writes); senders post each
//! delivery, signed, retrying on a schedule of at least 24 hours before dead-lettering it.
//!
//! One slow or dead receiver never delays others: each webhook has a small cap of requests in
//! flight, and a request's time is bounded by the configured timeout.

pub mod signing;

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use std::net::SocketAddr;

use rand::Rng;
use reqwest::header::{CONTENT_TYPE, HOST};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use url::{Host, Url};
use wagate_events::webhook::{WebhookCommand, WebhookStatus};
use wagate_projections::messages::{AiLogRow, MessagesModel};
use wagate_projections::outbox::{outgoing, Replies};

use crate::app::cold;
use crate::app::{App, Who};
use crate::model::guard::{GuardError, OutboundGuard};
use crate::store::outbox::{self, Due, NewDelivery, Outcome};
use crate::store::EventQuery;

/// Requests in flight across all webhooks.
const MAX_IN_FLIGHT: usize = 256;
/// Requests in flight to one webhook: a slow receiver holds at most this many slots.
const PER_WEBHOOK_IN_FLIGHT: usize = 32;
/// Events read per fan-out transaction.
const FANOUT_BATCH: i64 = 500;
/// With no active webhook, the fan-out checkpoint moves once this many events have passed.
const SKIP_CHECKPOINT_EVERY: i64 = 5_000;
/// How often senders look for due deliveries when nothing wakes them.
const POLL: Duration = Duration::from_millis(250);

/// The system actor recorded on events the delivery machinery causes (410 disables).
fn system() -> Who {
    Who {
        actor: "system:webhooks".into(),
        request_id: None,
    }
}

/// Starts the fan-out and the sender; both stop when the app is dropped or the handles aborted.
pub fn start(app: &Arc<App>) -> Vec<JoinHandle<()>> {
    let guard = Arc::new(OutboundGuard::new(
        app.config.allow_private_networks.clone(),
    ));
    let client = match crate::model::client::guarded_client(&guard) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client; webhooks are not delivered");
            return vec![];
        }
    };
    let (outcomes, recorder_rx) = tokio::sync::mpsc::unbounded_channel();
    let sender = Arc::new(Sender {
        app: Arc::downgrade(app),
        outcomes,
        client,
        guard,
        permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        in_flight: Mutex::new(HashMap::new()),
    });
    vec![
        tokio::spawn(fan_out_loop(Arc::downgrade(app))),
        tokio::spawn(sender.run()),
        tokio::spawn(record_loop(Arc::downgrade(app), recorder_rx)),
    ]
}

/// Writes the deliveries of every folded event past the checkpoint, batch by batch.
async fn fan_out_loop(app: Weak<App>) {
    // The checkpoint as last read or written here, used only while nobody is subscribed (then
    // this loop is the only one that moves it, and re-reading it at every wake-up was one query
    // per commit batch for nothing).
    let mut known = None;
    loop {
        let Some(app) = app.upgrade() else { return };
        let _ = tokio::time::timeout(Duration::from_secs(1), app.read.outbox_wake.notified()).await;
        loop {
            match fan_out_once(&app, &mut known).await {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => {
                    known = None;
                    app.note_store_error();
                    tracing::warn!(error = %e, "webhook fan-out failed; will retry");
                    break;
                }
            }
        }
    }
}

/// One batch of the fan-out; true when there may be more.
pub async fn fan_out_once(app: &App, known: &mut Option<i64>) -> Result<bool, String> {
    let store = &app.store;
    let any_active = app
        .model()
        .webhooks
        .values()
        .any(|w| w.status == WebhookStatus::Active);
    let after = match known {
        Some(p) if !any_active => *p,
        _ => outbox::checkpoint(store, outbox::FANOUT)
            .await
            .map_err(|e| e.to_string())?,
    };
    *known = Some(after);
    let folded = app.folded();
    if folded <= after {
        return Ok(false);
    }
    if !any_active {
        // Nobody subscribed: nothing up to `folded` is owed to anyone (a webhook only gets events
        // after its creation), so the events are not read. The checkpoint moves only every
        // SKIP_CHECKPOINT_EVERY events (not one commit per wake-up); a webhook created meanwhile
        // makes the next pass read at most that many events it does not want.
        if folded - after >= SKIP_CHECKPOINT_EVERY {
            outbox::append(store, outbox::FANOUT, folded, &[])
                .await
                .map_err(|e| e.to_string())?;
            *known = Some(folded);
        }
        return Ok(false);
    }
    let events = store
        .read(&EventQuery {
            after,
            until: Some(folded),
            limit: FANOUT_BATCH,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let Some(last) = events.last().map(|e| e.position) else {
        return Ok(false);
    };
    let mut deliveries = Vec::new();
    // Chats folded from the store for reply rows no longer in memory (a fan-out far behind).
    let mut cold_chats: HashMap<String, MessagesModel> = HashMap::new();
    loop {
        let mut missing: Vec<String> = vec![];
        deliveries.clear();
        {
            let model = app.model();
            let hooks: Vec<_> = model
                .webhooks
                .values()
                .filter(|w| w.status == WebhookStatus::Active)
                .collect();
            if !hooks.is_empty() {
                let messages = app.messages();
                for ev in &events {
                    let replies = WithCold {
                        live: &messages,
                        cold: &cold_chats,
                        missed: Cell::new(false),
                    };
                    let out = outgoing(ev, &replies).map_err(|e| e.to_string())?;
                    if replies.missed.get() && !cold_chats.contains_key(&ev.aggregate_id) {
                        missing.push(ev.aggregate_id.clone());
                        continue;
                    }
                    for o in out {
                        let body = o.body().to_string();
                        for w in &hooks {
                            if w.wants(ev.position, o.event_type, o.account_id.as_deref()) {
                                deliveries.push(NewDelivery {
                                    id: format!("msg_{}", uuid::Uuid::now_v7().simple()),
                                    webhook_id: w.id.clone(),
                                    event_position: ev.position,
                                    event_type: o.event_type.to_string(),
                                    body: body.clone(),
                                });
                            }
                        }
                    }
                }
            }
        }
        if missing.is_empty() {
            break;
        }
        missing.sort();
        missing.dedup();
        for stream in missing {
            let (acc, jid) = stream.split_once('/').unwrap_or((stream.as_str(), ""));
            let chat = cold::fold_chat(store, acc, jid)
                .await
                .map_err(|e| e.to_string())?;
            cold_chats.insert(stream, chat);
        }
    }
    let inserted = outbox::append(store, outbox::FANOUT, last, &deliveries)
        .await
        .map_err(|e| e.to_string())?;
    *known = Some(last);
    if inserted > 0 {
        app.delivery_wake.notify_one();
    }
    Ok(events.len() as i64 == FANOUT_BATCH)
}

/// An attempt's outcome on its way to the store, and who to tell once it is recorded.
type Recorded = (String, Outcome, tokio::sync::oneshot::Sender<bool>);

/// Writes attempt outcomes in batches: one transaction for all outcomes waiting, instead of
/// one per delivery.
async fn record_loop(app: Weak<App>, mut rx: tokio::sync::mpsc::UnboundedReceiver<Recorded>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 500 {
            match rx.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let Some(app) = app.upgrade() else { return };
        let outcomes: Vec<(String, Outcome)> = batch
            .iter()
            .map(|(id, o, _)| (id.clone(), o.clone()))
            .collect();
        let ok = match outbox::record(&app.store, &outcomes).await {
            Ok(()) => true,
            Err(e) => {
                // The leases run out and the deliveries are tried again: at least once.
                app.note_store_error();
                tracing::warn!(error = %e, n = outcomes.len(), "cannot record webhook attempts");
                false
            }
        };
        for (_, _, done) in batch {
            let _ = done.send(ok);
        }
    }
}

struct Sender {
    app: Weak<App>,
    outcomes: tokio::sync::mpsc::UnboundedSender<Recorded>,
    client: reqwest::Client,
    guard: Arc<OutboundGuard>,
    permits: Arc<Semaphore>,
    in_flight: Mutex<HashMap<String, usize>>,
}

impl Sender {
    async fn run(self: Arc<Self>) {
        loop {
            let Some(app) = self.app.upgrade() else {
                return;
            };
            let _ = tokio::time::timeout(POLL, app.delivery_wake.notified()).await;
            if let Err(e) = self.dispatch_due(&app).await {
                app.note_store_error();
                tracing::warn!(error = %e, "webhook sender cannot read due deliveries; will retry");
            }
        }
    }

    async fn dispatch_due(self: &Arc<Self>, app: &Arc<App>) -> Result<(), String> {
        let free = self.permits.available_permits();
        if free == 0 {
            return Ok(());
        }
        let now = outbox::now_ms();
        let due = outbox::due(&app.store, now, free.min(512) as i64)
            .await
            .map_err(|e| e.to_string())?;
        let lease =
            i64::try_from(app.config.webhooks.timeout.as_millis()).unwrap_or(i64::MAX) + 30_000;
        let mut picked = Vec::new();
        for d in due {
            if !self.take_slot(&d.webhook_id) {
                continue;
            }
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                self.release_slot(&d.webhook_id);
                break;
            };
            picked.push((d, permit));
        }
        if picked.is_empty() {
            return Ok(());
        }
        let due: Vec<Due> = picked.iter().map(|(d, _)| d.clone()).collect();
        let claimed = match outbox::claim(&app.store, &due, now + lease).await {
            Ok(c) => c,
            Err(e) => {
                for (d, _) in &picked {
                    self.release_slot(&d.webhook_id);
                }
                return Err(e.to_string());
            }
        };
        for ((d, permit), got) in picked.into_iter().zip(claimed) {
            if !got {
                self.release_slot(&d.webhook_id);
                continue;
            }
            let this = self.clone();
            let app = app.clone();
            tokio::spawn(async move {
                // The receiver's slot is freed as soon as its request is over; recording the
                // outcome (batched with others) does not hold it.
                let release = || {
                    this.release_slot(&d.webhook_id);
                    drop(permit);
                    app.delivery_wake.notify_one();
                };
                this.deliver(&app, &d, release).await;
            });
        }
        Ok(())
    }

    fn take_slot(&self, webhook: &str) -> bool {
        let mut m = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(webhook.to_string()).or_insert(0);
        if *n >= PER_WEBHOOK_IN_FLIGHT {
            return false;
        }
        *n += 1;
        true
    }

    fn release_slot(&self, webhook: &str) {
        let mut m = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(webhook) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(webhook);
            }
        }
    }

    /// One attempt of a claimed delivery, and its recorded outcome.
    /// `release` runs once the receiver is done with (or never got) the request.
    async fn deliver(&self, app: &App, d: &Due, release: impl FnOnce()) {
        let hook = app.model().webhooks.get(&d.webhook_id).cloned();
        let Some(hook) = hook.filter(|h| h.status == WebhookStatus::Active) else {
            release();
            if let Err(e) =
                outbox::cancel_pending(&app.store, &d.webhook_id, "webhook deleted or disabled")
                    .await
            {
                tracing::warn!(error = %e, "cannot cancel deliveries of a removed webhook");
            }
            return;
        };
        let outcome = match self.attempt(app, &hook.url, &hook.secret_sealed, d).await {
            Ok(status) if (200..300).contains(&status) => Outcome::Delivered { status },
            Ok(410) => Outcome::Dead {
                status: Some(410),
                error: "the receiver answered 410 Gone; the webhook was disabled".into(),
            },
            Ok(status) => self.retry_or_dead(app, d, Some(status), status_error(status)),
            Err(error) => self.retry_or_dead(app, d, None, error),
        };
        release();
        let counters = &app.delivery_counters;
        match &outcome {
            Outcome::Delivered { .. } => counters.delivered.fetch_add(1, Ordering::Relaxed),
            Outcome::Retry { .. } => counters.failed_attempts.fetch_add(1, Ordering::Relaxed),
            Outcome::Dead { .. } => counters.dead.fetch_add(1, Ordering::Relaxed),
        };
        tracing::info!(
            webhook = %d.webhook_id,
            delivery = %d.id,
            result = match &outcome {
                Outcome::Delivered { .. } => "delivered",
                Outcome::Retry { .. } => "retry",
                Outcome::Dead { .. } => "dead",
            },
            "webhook attempt"
        );
        let (done, recorded) = tokio::sync::oneshot::channel();
        if self
            .outcomes
            .send((d.id.clone(), outcome.clone(), done))
            .is_err()
            || !recorded.await.unwrap_or(false)
        {
            return;
        }
        if matches!(
            outcome,
            Outcome::Dead {
                status: Some(410),
                ..
            }
        ) {
            if let Err(e) = app
                .execute(
                    &app.webhooks,
                    &d.webhook_id,
                    WebhookCommand::Disable {
                        reason: "the receiver answered 410 Gone".into(),
                    },
                    &system(),
                )
                .await
            {
                tracing::warn!(error = %e, webhook = %d.webhook_id, "cannot disable a gone webhook");
            }
            if let Err(e) =
                outbox::cancel_pending(&app.store, &d.webhook_id, "webhook disabled (410 Gone)")
                    .await
            {
                tracing::warn!(error = %e, "cannot cancel deliveries of a disabled webhook");
            }
        }
    }

    fn retry_or_dead(&self, app: &App, d: &Due, status: Option<u16>, error: String) -> Outcome {
        let schedule = &app.config.webhooks.retry_schedule;
        match usize::try_from(d.round_attempts)
            .ok()
            .and_then(|i| schedule.get(i))
        {
            Some(wait) => Outcome::Retry {
                status,
                error,
                next: outbox::now_ms() + jittered_ms(*wait),
            },
            None => Outcome::Dead {
                status,
                error: format!("{error}; retries exhausted"),
            },
        }
    }

    /// Posts the delivery; the receiver's status code, or why there was none. Never reads more
    /// of the response than its status: a receiver's body is not ours to keep.
    async fn attempt(
        &self,
        app: &App,
        url: &str,
        secret_sealed: &str,
        d: &Due,
    ) -> Result<u16, String> {
        let url = Url::parse(url).map_err(|_| "the webhook URL is not valid".to_string())?;
        let checked = self
            .guard
            .checked_addrs(&url)
            .await
            .map_err(|e: GuardError| format!("refused by the outbound guard: {e}"))?;
        let secret = app
            .config
            .keyring
            .open_string(secret_sealed, &signing::secret_ad(&d.webhook_id))
            .map_err(|_| "the webhook secret cannot be decrypted".to_string())?;
        let timestamp = chrono::Utc::now().timestamp();
        let signature = signing::sign(
            secrecy::ExposeSecret::expose_secret(&secret),
            &d.id,
            timestamp,
            d.body.as_bytes(),
        )?;
        let timeout = app.config.webhooks.timeout;
        let timestamp = timestamp.to_string();
        let resp = post_pinned(&self.client, &url, &checked, timeout, |req| {
            req.header(CONTENT_TYPE, "application/json")
                .header("webhook-id", &d.id)
                .header("webhook-timestamp", &timestamp)
                .header("webhook-signature", &signature)
                .body(d.body.clone())
        })
        .await?;
        Ok(resp.status().as_u16())
    }
}

/// Posts to `url`. A plain-http URL naming a domain goes only to `checked`, the addresses the
/// outbound guard just resolved and allowed (the URL's host replaced by each address in turn,
/// the name kept in `Host`): looking the name up again could answer another address (DNS
/// rebinding) and move the unencrypted body, message texts included, outside the allowed
/// networks. An https domain is checked by the client's guarded resolver on every connection
/// (and its certificate must match the name); a literal IP host is the address checked.
async fn post_pinned(
    client: &reqwest::Client,
    url: &Url,
    checked: &[SocketAddr],
    timeout: Duration,
    request: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> Result<reqwest::Response, String> {
    let send = |target: Url, host: Option<&str>| {
        let mut req = client.post(target).timeout(timeout);
        if let Some(host) = host {
            req = req.header(HOST, host);
        }
        request(req).send()
    };
    let pinned = url.scheme() == "http" && matches!(url.host(), Some(Host::Domain(_)));
    if !pinned {
        return send(url.clone(), None)
            .await
            .map_err(|e| transport_error(&e, timeout));
    }
    let host = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    let mut last = "refused by the outbound guard: no checked address".to_owned();
    for addr in checked {
        let mut target = url.clone();
        // Cannot fail: an http URL takes any IP host and port.
        let _ = target.set_ip_host(addr.ip());
        let _ = target.set_port(Some(addr.port()));
        match send(target, Some(&host)).await {
            // Refused or unreachable: the next checked address, as a resolver's list would be.
            Err(e) if e.is_connect() => last = transport_error(&e, timeout),
            other => return other.map_err(|e| transport_error(&e, timeout)),
        }
    }
    Err(last)
}

fn status_error(status: u16) -> String {
    match status {
        300..=399 => format!("HTTP {status}: redirects are not followed"),
        _ => format!("HTTP {status}"),
    }
}

fn transport_error(e: &reqwest::Error, timeout: Duration) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(g) = s.downcast_ref::<GuardError>() {
            return format!("refused by the outbound guard: {g}");
        }
        source = s.source();
    }
    if e.is_timeout() {
        format!("timeout after {}s", timeout.as_secs_f64())
    } else if e.is_connect() {
        "connect error".into()
    } else {
        "the connection failed before a response".into()
    }
}

/// `wait` ± 10%, in milliseconds: receivers that came back are not hit by every retry at once.
fn jittered_ms(wait: Duration) -> i64 {
    let ms = wait.as_millis() as f64;
    let factor = rand::rng().random_range(0.9..=1.1);
    (ms * factor) as i64
}

/// A reply's row from the live read model, else from chats folded from the store; notes a miss.
struct WithCold<'a> {
    live: &'a MessagesModel,
    cold: &'a HashMap<String, MessagesModel>,
    missed: Cell<bool>,
}

impl Replies for WithCold<'_> {
    fn reply(&self, reply_id: &str) -> Option<&AiLogRow> {
        let found = self
            .live
            .reply(reply_id)
            .or_else(|| self.cold.values().find_map(|m| m.reply(reply_id)));
        if found.is_none() {
            self.missed.set(true);
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let j = jittered_ms(Duration::from_secs(10));
            assert!((9_000..=11_000).contains(&j), "{j}");
        }
    }

    /// A plain-http domain URL goes to the checked addresses only, never to a new lookup of
    /// the name: `rebinding.invalid` resolves nowhere, so any lookup would fail the delivery.
    #[tokio::test]
    async fn plain_http_domain_is_sent_only_to_the_checked_addresses() {
        use wiremock::matchers::{header, method, path};
        use wiremock::{Mock, MockServer, ResponseTemplate};

        let rx = MockServer::start().await;
        let port = rx.address().port();
        Mock::given(method("POST"))
            .and(path("/hook"))
            .and(header("host", format!("rebinding.invalid:{port}").as_str()))
            .respond_with(ResponseTemplate::new(204))
            .expect(2)
            .mount(&rx)
            .await;
        let guard = Arc::new(OutboundGuard::new(vec!["127.0.0.0/8".parse().unwrap()]));
        let client = crate::model::client::guarded_client(&guard).unwrap();
        let url = Url::parse(&format!("http://rebinding.invalid:{port}/hook")).unwrap();
        let body = |req: reqwest::RequestBuilder| req.body("{}");
        let timeout = Duration::from_secs(5);

        let resp = post_pinned(&client, &url, &[*rx.address()], timeout, body)
            .await
            .expect("delivered to the checked address");
        assert_eq!(resp.status().as_u16(), 204);

        // A checked address that refuses the connection: the next checked one is used.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        let resp = post_pinned(&client, &url, &[closed_addr, *rx.address()], timeout, body)
            .await
            .expect("delivered to the second checked address");
        assert_eq!(resp.status().as_u16(), 204);

        // Only refusing addresses: a connect error, and no lookup of the name as a fallback.
        let err = post_pinned(&client, &url, &[closed_addr], timeout, body)
            .await
            .unwrap_err();
        assert_eq!(err, "connect error");
        let err = post_pinned(&client, &url, &[], timeout, body)
            .await
            .unwrap_err();
        assert!(err.contains("no checked address"), "{err}");
    }

    #[test]
    fn default_schedule_covers_a_day() {
        let total: Duration = crate::config::DEFAULT_WEBHOOK_SCHEDULE.iter().sum();
        assert!(total >= Duration::from_secs(24 * 3600), "{total:?}");
    }
}
