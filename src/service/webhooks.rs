//! Webhooks: subscribe a URL (the signing secret is shown once), list, get, delete, and each
//! webhook's deliveries with redelivery.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use wagate_events::webhook::{check_events, check_url, WebhookCommand, WebhookStatus};
use wagate_projections::config::WebhookView;

use super::error::{Error, Result};
use super::Page;
use crate::app::{App, Who};
use crate::model::guard::OutboundGuard;
use crate::store::outbox::{self, Delivery};
use crate::webhooks::signing;

/// A new subscription as a front end parsed it (not yet checked).
#[derive(Debug)]
pub struct NewWebhook {
    pub url: String,
    /// Event types, or `["*"]`.
    pub events: Vec<String>,
    /// Only events of this (existing) account.
    pub account_id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookResponse {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub account_id: Option<String>,
    /// `active`, or `disabled` after the receiver answered 410 Gone.
    pub status: String,
    pub disabled_reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: WebhookResponse,
    /// The signing secret (`whsec_…`), shown only in this response.
    pub secret: String,
}

impl From<&WebhookView> for WebhookResponse {
    fn from(w: &WebhookView) -> Self {
        Self {
            id: w.id.clone(),
            url: w.url.clone(),
            events: w.events.clone(),
            account_id: w.account_id.clone(),
            status: match w.status {
                WebhookStatus::Active => "active",
                WebhookStatus::Disabled => "disabled",
                WebhookStatus::Deleted => "deleted",
                WebhookStatus::Absent => "absent",
            }
            .into(),
            disabled_reason: w.disabled_reason.clone(),
            created_at: w.created_at,
        }
    }
}

/// One webhook (never its secret); 404 when unknown or deleted.
pub fn get(app: &App, id: &str) -> Result<WebhookResponse> {
    app.model()
        .webhook(id)
        .map(WebhookResponse::from)
        .ok_or_else(|| Error::not_found("webhook not found"))
}

/// Subscribes a URL. Nothing is stored when a check fails. The answer carries the signing
/// secret, the only time it is ever shown.
pub async fn create(app: &App, who: &Who, req: NewWebhook) -> Result<CreatedWebhook> {
    check_url(&req.url)?;
    check_events(&req.events)?;
    if let Some(acc) = &req.account_id {
        if app.model().account(acc).is_none() {
            return Err(Error::invalid("account_id", "no such account"));
        }
    }
    // The guard decides again at every attempt (DNS may change); refusing a target by policy
    // here tells the user now rather than through a dead letter. A name that does not resolve
    // yet is accepted: its attempts fail and retry until it does.
    let url = url::Url::parse(&req.url).map_err(|e| Error::invalid("url", e.to_string()))?;
    if let Err(e) = OutboundGuard::new(app.config.allow_private_networks.clone())
        .check_url(&url)
        .await
    {
        if e.is_policy() {
            return Err(Error::invalid("url", format!("refused: {e}")));
        }
    }
    let id = format!("wh_{}", uuid::Uuid::now_v7().simple());
    let secret = signing::new_secret();
    let secret_sealed = app
        .config
        .keyring
        .seal(secret.as_bytes(), &signing::secret_ad(&id));
    let cmd = WebhookCommand::Create {
        url: req.url,
        events: req.events,
        account_id: req.account_id,
        secret_sealed,
    };
    app.execute(&app.webhooks, &id, cmd, who).await?;
    Ok(CreatedWebhook {
        webhook: get(app, &id)?,
        secret,
    })
}

/// Webhooks that are not deleted (never their secrets), oldest first.
pub fn list(app: &App) -> Vec<WebhookResponse> {
    let m = app.model();
    m.webhooks
        .values()
        .filter(|w| w.status != WebhookStatus::Deleted)
        .map(WebhookResponse::from)
        .collect()
}

/// Deletes a webhook and cancels its pending deliveries.
pub async fn delete(app: &App, who: &Who, id: &str) -> Result<()> {
    app.execute(&app.webhooks, id, WebhookCommand::Delete, who)
        .await?;
    outbox::cancel_pending(&app.store, id, "webhook deleted").await?;
    Ok(())
}

/// Which deliveries to list.
#[derive(Debug, Default)]
pub struct DeliveryFilter {
    /// One of [`DELIVERY_STATUSES`].
    pub status: Option<String>,
    /// 1..=500, default 50.
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub before: Option<String>,
}

/// The delivery statuses a filter may name.
pub const DELIVERY_STATUSES: [&str; 4] = ["pending", "delivered", "dead", "cancelled"];

/// A page of a webhook's deliveries, newest first, after checking the status filter and the
/// limit.
pub async fn deliveries(app: &App, id: &str, q: &DeliveryFilter) -> Result<Page<Delivery>> {
    if app.model().webhook(id).is_none() {
        return Err(Error::not_found("webhook not found"));
    }
    if let Some(s) = &q.status {
        if !DELIVERY_STATUSES.contains(&s.as_str()) {
            return Err(Error::invalid(
                "status",
                "must be pending, delivered, dead or cancelled",
            ));
        }
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(Error::invalid("limit", "must be between 1 and 500"));
    }
    let items = outbox::list(
        &app.store,
        id,
        q.status.as_deref(),
        q.before.as_deref(),
        limit,
    )
    .await?;
    Ok(Page::of(items, usize::try_from(limit).unwrap_or(0), |d| {
        d.id.clone()
    }))
}

/// Whether the webhook's deliveries may be sent again: only while it is active (404 when it is
/// unknown, 409 when it is disabled).
pub fn may_redeliver(app: &App, id: &str) -> Result<()> {
    match app.model().webhook(id).map(|w| w.status) {
        None => Err(Error::not_found("webhook not found")),
        Some(WebhookStatus::Active) => Ok(()),
        Some(_) => Err(Error::Conflict {
            code: "conflict",
            message: "the webhook is disabled; create a new subscription for this receiver".into(),
        }),
    }
}

/// Makes a delivery due now with the same id and a fresh retry schedule.
pub async fn redeliver_now(app: &App, who: &Who, id: &str, delivery: &str) -> Result<Delivery> {
    may_redeliver(app, id)?;
    let d = outbox::redeliver(&app.store, id, delivery)
        .await?
        .ok_or_else(|| Error::not_found("delivery not found"))?;
    app.delivery_wake.notify_one();
    tracing::info!(webhook = %id, delivery = %delivery, actor = %who.actor, "webhook delivery queued again");
    Ok(d)
}
