//! Folds of the stored history into read models: the whole history by parallel readers (a
//! start without a checkpoint, and `wagate replay`), the events after a checkpoint, and the one
//! parse both share with the live catch-up ([`parse_for_fold`]); the digest that compares two
//! folds; and the redaction of secrets in event payloads shown to people.

use std::time::{Duration, Instant};

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use sha2::{Digest, Sha256};
use wagate_projections::config as config_model;
use wagate_projections::messages::{MessagesModel, Retention};
use wagate_projections::{ConfigModel, StoredEvent};

use crate::store::{EventQuery, RawEvent, Store, StoreError};

/// Which read models a replay rebuilds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Projection {
    /// Accounts, tokens, the three AI layers, webhook subscriptions.
    Config,
    /// Chats, messages and the AI log.
    Messages,
    All,
}

/// What a replay rebuilt.
#[derive(Debug)]
pub struct ReplayReport {
    pub events: u64,
    pub position: i64,
    pub elapsed: Duration,
    pub config: Option<ConfigModel>,
    pub messages: Option<MessagesModel>,
}

impl ReplayReport {
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Positions read per query.
pub const BATCH: i64 = 5_000;
/// Queries in flight during a replay.
const READERS: usize = 3;

/// Folds the history up to `until` (all of it when `None`) into fresh read models.
pub async fn replay(
    store: &Store,
    until: Option<i64>,
    projection: Projection,
    retention: Retention,
    progress: bool,
) -> Result<ReplayReport, StoreError> {
    let head = match until {
        Some(p) => p,
        None => store.head().await?,
    };
    let bar = if progress {
        let bar = ProgressBar::new(u64::try_from(head).unwrap_or(0));
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} replay [{bar:40}] {pos}/{len} positions  {per_sec}  eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut config =
        matches!(projection, Projection::Config | Projection::All).then(ConfigModel::default);
    let mut messages = matches!(projection, Projection::Messages | Projection::All)
        .then(|| MessagesModel::with_retention(retention));
    let types: &[&str] = match projection {
        Projection::Messages => &["chat"],
        Projection::Config | Projection::All => &[],
    };
    let config_history = projection == Projection::Config;
    let started = Instant::now();
    let events = fold_range(
        store,
        (0, head),
        types,
        config_history,
        (&mut config, &mut messages),
        &bar,
    )
    .await?;
    bar.finish_and_clear();
    if let Some(c) = config.as_mut() {
        c.position = head;
    }
    Ok(ReplayReport {
        events,
        position: head,
        elapsed: started.elapsed(),
        config,
        messages,
    })
}

/// Folds the chat events after `model`'s position up to `head` into it (a start from a
/// checkpoint, ADR 0015); the model and how many events were folded.
pub async fn fold_messages_after(
    store: &Store,
    model: MessagesModel,
    head: i64,
) -> Result<(MessagesModel, u64), StoreError> {
    let after = model.position;
    let mut messages = Some(model);
    let events = fold_range(
        store,
        (after, head),
        &["chat"],
        false,
        (&mut None, &mut messages),
        &ProgressBar::hidden(),
    )
    .await?;
    let mut model = messages.unwrap_or_default();
    model.position = model.position.max(head);
    Ok((model, events))
}

/// Folds the events in positions `(after, head]` (of `types`, or the config history) into the
/// models; how many were folded.
async fn fold_range(
    store: &Store,
    (after, head): (i64, i64),
    types: &[&'static str],
    config_history: bool,
    (config, messages): (&mut Option<ConfigModel>, &mut Option<MessagesModel>),
    bar: &ProgressBar,
) -> Result<u64, StoreError> {
    // Reading (queries and row decoding) runs in several tasks over consecutive position
    // ranges, ahead of the fold, which takes the batches in order.
    let ranges: Vec<(i64, i64)> = (after..head)
        .step_by(usize::try_from(BATCH).unwrap_or(1))
        .map(|lo| (lo, (lo + BATCH).min(head)))
        .collect();
    let types = types.to_vec();
    let mut batches = futures::stream::iter(ranges.into_iter().map(|(lo, hi)| {
        let store = store.clone();
        let types = types.clone();
        tokio::spawn(async move {
            let batch = store
                .read_raw(&EventQuery {
                    after: lo,
                    until: Some(hi),
                    limit: BATCH,
                    aggregate_types: &types,
                    config_history,
                    ..Default::default()
                })
                .await?;
            // Parsing happens here, in parallel with the fold.
            batch
                .into_iter()
                .map(parse_for_fold)
                .collect::<Result<Vec<_>, StoreError>>()
        })
    }))
    .buffered(READERS);
    let mut events = 0u64;
    while let Some(batch) = batches.next().await {
        let batch =
            batch.map_err(|e| StoreError::Other(format!("a replay reader failed: {e}")))??;
        events += batch.len() as u64;
        if let Some((last, _)) = batch.last() {
            bar.set_position(u64::try_from(last.position).unwrap_or(0));
        }
        for (ev, parsed) in batch {
            fold(config, messages, &ev, parsed)?;
        }
    }
    Ok(events)
}

/// Parses an event for the read models: a chat event straight from its JSON text into its typed
/// event, with its payload also kept as a value only when the config model folds it too (the
/// human-takeover pauses); any other event into a value.
pub fn parse_for_fold(
    raw: RawEvent,
) -> Result<(StoredEvent, Option<wagate_events::chat::ChatEvent>), StoreError> {
    if raw.aggregate_type != "chat" {
        return Ok((raw.parse()?, None));
    }
    let parsed: wagate_events::chat::ChatEvent = serde_json::from_str(&raw.payload)
        .map_err(|e| StoreError::Other(format!("event {}: bad payload: {e}", raw.position)))?;
    let ev = if config_model::folds_kind(&raw.aggregate_type, &raw.event_type) {
        raw.parse()?
    } else {
        raw.without_payload()?
    };
    Ok((ev, Some(parsed)))
}

fn fold(
    config: &mut Option<ConfigModel>,
    messages: &mut Option<MessagesModel>,
    ev: &StoredEvent,
    parsed: Option<wagate_events::chat::ChatEvent>,
) -> Result<(), StoreError> {
    let bad = |e: wagate_projections::config::FoldError| StoreError::Other(e.to_string());
    if let Some(c) = config.as_mut() {
        if wagate_projections::config::folds(ev) {
            c.apply(ev).map_err(bad)?;
        }
    }
    if let Some(m) = messages.as_mut() {
        m.apply_parsed(ev, parsed).map_err(bad)?;
    }
    Ok(())
}

/// A digest of the read models' answers (what the API would return), to compare a replay with a
/// running gateway or with another replay.
pub fn digest(config: Option<&ConfigModel>, messages: Option<&MessagesModel>) -> String {
    let mut h = Sha256::new();
    if let Some(c) = config {
        let mut chats: Vec<_> = c.chats.iter().collect();
        chats.sort_by(|a, b| a.0.cmp(b.0));
        let accounts: Vec<_> = c
            .accounts
            .values()
            .map(|a| {
                json!({"id": a.id, "name": a.name, "deleted": a.deleted, "ai": a.ai.settings,
                       "has_key": a.ai.api_key.is_some(), "tokens": a.tokens.keys().collect::<Vec<_>>()})
            })
            .collect();
        let webhooks: Vec<_> = c
            .webhooks
            .values()
            .map(|w| json!({"id": w.id, "url": w.url, "events": w.events, "status": w.status}))
            .collect();
        let doc = json!({
            "global": c.global.settings, "global_key": c.global.api_key.is_some(),
            "accounts": accounts, "chats": chats, "webhooks": webhooks,
        });
        h.update(doc.to_string().as_bytes());
    }
    if let Some(m) = messages {
        // What the model holds: with the same retention, a replay holds the same.
        for ((acc, jid), chat) in &m.chats {
            h.update(acc.as_bytes());
            h.update(jid.as_bytes());
            h.update(format!("{} {}", chat.message_count, chat.evicted).as_bytes());
            for msg in &chat.messages {
                h.update(serde_json::to_string(msg).unwrap_or_default().as_bytes());
            }
        }
        for row in &m.ai_log {
            h.update(serde_json::to_string(row).unwrap_or_default().as_bytes());
        }
        let mut lingering: Vec<_> = m.lingering().collect();
        lingering.sort_by(|a, b| a.id.cmp(&b.id));
        for row in lingering {
            h.update(serde_json::to_string(row).unwrap_or_default().as_bytes());
        }
        h.update(
            serde_json::to_string(&m.totals())
                .unwrap_or_default()
                .as_bytes(),
        );
        // The overview's numbers (`GET /v1/stats`): a replay draws the same charts.
        h.update(
            serde_json::to_string(&m.stats)
                .unwrap_or_default()
                .as_bytes(),
        );
        // The accounts' connection status (`connection` of `GET /v1/accounts`).
        h.update(
            serde_json::to_string(&m.connection)
                .unwrap_or_default()
                .as_bytes(),
        );
    }
    hex::encode(h.finalize())
}

/// Replaces secrets (sealed keys and Cloud API secrets, token and verify-token hashes) anywhere
/// in a payload.
pub fn redact(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if k == "sealed"
                    || k == "token_hash"
                    || k.ends_with("_sealed")
                    || k == "verify_token_sha256"
                {
                    *val = serde_json::Value::String("[redacted]".into());
                } else {
                    redact(val);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}
