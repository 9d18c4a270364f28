//! `wagate replay`'s summary and `wagate audit`: who changed an account's (or chat's) AI
//! configuration, when, and the effective config after each change.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use wagate_events::ids::chat_kind;
use wagate_projections::config::CONFIG_AGGREGATES;
use wagate_projections::effective::{resolve_layers, Target};
use wagate_projections::{ConfigModel, EnvLayer};

use crate::store::replay::{digest, redact, ReplayReport, BATCH};
use crate::store::{EventQuery, Store};

/// A human summary of a replay.
pub fn summary(r: &ReplayReport) -> String {
    let mut out = String::new();
    // A config-only replay reads just the configuration's history (its own index): a rate over
    // the positions it skipped would mean nothing.
    let (scope, rate) = match r.messages {
        None => ("the configuration's history: ", String::new()),
        Some(_) => ("", format!(" ({:.0} events/s)", r.events_per_second())),
    };
    let _ = writeln!(
        out,
        "replayed {scope}{} event{} up to position {} in {:.3}s{rate}",
        r.events,
        if r.events == 1 { "" } else { "s" },
        r.position,
        r.elapsed.as_secs_f64(),
    );
    if let Some(c) = &r.config {
        let live = c.accounts.values().filter(|a| !a.deleted).count();
        let _ = writeln!(
            out,
            "config:   {live} accounts, {} chat layers, {} webhooks",
            c.chats.len(),
            c.webhooks.len()
        );
    }
    if let Some(m) = &r.messages {
        let t = m.totals();
        let statuses: Vec<String> = [
            ("failed", t.failed),
            ("generated", t.in_generated),
            ("pending", t.pending),
            ("sent", t.sent),
            ("skipped", t.skipped),
        ]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(s, n)| format!("{s} {n}"))
        .collect();
        let _ = writeln!(
            out,
            "messages: {} chats, {} messages, {} AI replies ({})",
            m.chats.len(),
            m.message_count(),
            m.ai_log_rows_total(),
            statuses.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "digest:   {}",
        digest(r.config.as_ref(), r.messages.as_ref())
    );
    out
}

/// One configuration change of an audit, and the effective config after it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditEntry {
    pub position: i64,
    pub time: DateTime<Utc>,
    pub actor: String,
    pub layer: String,
    pub event_type: String,
    /// The change, secrets redacted.
    pub change: serde_json::Value,
    pub effective: wagate_projections::Effective,
}

/// The configuration history relevant to `account` (and `chat`): global, account and chat layer
/// changes in commit order, each with the effective config right after it.
pub async fn audit(
    store: &Store,
    env: &EnvLayer,
    account: &str,
    chat: Option<&str>,
) -> Result<Vec<AuditEntry>, String> {
    let kind = match chat {
        Some(jid) => chat_kind(jid, "chat").map_err(|e| e.to_string())?,
        None => wagate_events::ids::ChatKind::Private,
    };
    let mut model = ConfigModel::default();
    let mut out = Vec::new();
    let mut seen_account = false;
    let mut after = 0;
    loop {
        let batch = store
            .read(&EventQuery {
                after,
                limit: BATCH,
                aggregate_types: &CONFIG_AGGREGATES,
                config_history: true,
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        for ev in &batch {
            model.apply(ev).map_err(|e| e.to_string())?;
            let layer = match ev.aggregate_type.as_str() {
                "ai_global" => "global".to_string(),
                "account" if ev.aggregate_id == account => {
                    seen_account = true;
                    "account".to_string()
                }
                "chat_settings" => match ev.aggregate_id.split_once('/') {
                    Some((a, j)) if a == account && chat.is_none_or(|c| c == j) => {
                        format!("chat {j}")
                    }
                    _ => continue,
                },
                _ => continue,
            };
            if ev.event_type.starts_with("Token") {
                continue;
            }
            let jid = match (chat, ev.aggregate_id.split_once('/')) {
                (Some(c), _) => c,
                (None, Some((_, j))) if ev.aggregate_type == "chat_settings" => j,
                _ => "",
            };
            let chat_layer = model.chat(account, jid).cloned().unwrap_or_default();
            let effective = resolve_layers(
                &chat_layer,
                model.account(account).map(|a| &a.ai),
                &model.global,
                env,
                Target {
                    account_id: account,
                    jid,
                    chat_kind: if jid.is_empty() {
                        kind
                    } else {
                        chat_kind(jid, "chat").unwrap_or(kind)
                    },
                    position: ev.position,
                },
            );
            let mut change = ev.payload.clone();
            redact(&mut change);
            out.push(AuditEntry {
                position: ev.position,
                time: ev.recorded_at,
                actor: ev.actor().to_string(),
                layer,
                event_type: ev.event_type.clone(),
                change,
                effective,
            });
        }
        match batch.last() {
            Some(last) if batch.len() as i64 == BATCH => after = last.position,
            _ => break,
        }
    }
    if !seen_account {
        return Err(format!("no account {account:?} in the history"));
    }
    Ok(out)
}

/// The audit as text: one block per change.
pub fn render_audit(entries: &[AuditEntry]) -> String {
    let mut out = String::new();
    for e in entries {
        let _ = writeln!(
            out,
            "#{} {} {} [{}] {} {}",
            e.position,
            e.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            e.actor,
            e.layer,
            e.event_type,
            e.change
        );
        let eff = &e.effective;
        let _ = writeln!(
            out,
            "    effective: enabled={} ({:?}) model={} ({:?}) base_url={} ({:?}) has_api_key={} ({:?}) \
             temperature={} ({:?}) max_tokens={} ({:?}) mode={:?} blocked={} will_reply={}{}",
            eff.enabled.value,
            eff.enabled.source,
            eff.model_name.value,
            eff.model_name.source,
            eff.base_url.value,
            eff.base_url.source,
            eff.has_api_key.value,
            eff.has_api_key.source,
            eff.temperature.value,
            eff.temperature.source,
            eff.max_tokens.value,
            eff.max_tokens.source,
            eff.mode,
            eff.blocked,
            eff.will_reply,
            eff.reason
                .as_deref()
                .map(|r| format!(" reason={r:?}"))
                .unwrap_or_default()
        );
    }
    out
}
