//! Reads of the history that the bounded read models no longer hold in memory (ADR 0013): a
//! chat's older messages, older AI-log rows, a reply's row for a webhook far behind. The store
//! has every event; these fold the part a request needs, and answer exactly what the unbounded
//! model would have answered.

use wagate_projections::messages::{AiLogRow, MessageView, MessagesModel, Retention};

use crate::app::{App, AppError};
use crate::store::replay::parse_for_fold;
use crate::store::{EventQuery, RawEvent, Store, StoreError};

/// Events per query.
const BATCH: i64 = 5_000;

/// Folds events into `model`; the last position and sequence folded.
fn fold_all(model: &mut MessagesModel, raw: Vec<RawEvent>) -> Result<(i64, i64), StoreError> {
    let mut last = (0, 0);
    for r in raw {
        let (ev, parsed) = parse_for_fold(r)?;
        last = (ev.position, ev.sequence);
        model
            .apply_parsed(&ev, parsed)
            .map_err(|e| StoreError::Other(e.to_string()))?;
    }
    Ok(last)
}

/// One chat's whole stream, folded from the store with everything in memory. Read in sequence
/// order through the primary key, not by position (which would walk the whole history).
pub async fn fold_chat(store: &Store, acc: &str, jid: &str) -> Result<MessagesModel, StoreError> {
    let stream = format!("{acc}/{jid}");
    let mut model = MessagesModel::default();
    let mut after = -1;
    loop {
        let raw = store.read_stream_raw("chat", &stream, after, BATCH).await?;
        let n = raw.len() as i64;
        after = fold_all(&mut model, raw)?.1;
        if n < BATCH {
            return Ok(model);
        }
    }
}

fn key(acc: &str, jid: &str) -> (String, String) {
    (acc.to_string(), jid.to_string())
}

/// `answer` from the live model when it can (`Some`), else from the chat folded from the store.
async fn memory_or_chat<T: Default>(
    app: &App,
    acc: &str,
    jid: &str,
    answer: impl Fn(&MessagesModel) -> Option<T>,
) -> Result<T, AppError> {
    if let Some(v) = answer(&app.messages()) {
        return Ok(v);
    }
    let full = fold_chat(&app.store, acc, jid).await?;
    Ok(answer(&full).unwrap_or_default())
}

/// A chat's messages newest first, older than `before`, `limit` at most (`GET .../messages`).
/// From memory when it holds the whole page, else from the store.
pub async fn messages_page(
    app: &App,
    acc: &str,
    jid: &str,
    before: Option<i64>,
    limit: usize,
) -> Result<Vec<MessageView>, AppError> {
    memory_or_chat(app, acc, jid, |m| {
        let Some(chat) = m.chats.get(&key(acc, jid)) else {
            return Some(vec![]);
        };
        let items: Vec<MessageView> = chat
            .messages
            .iter()
            .rev()
            .filter(|m| before.is_none_or(|b| m.position < b))
            .take(limit)
            .cloned()
            .collect();
        (items.len() == limit || chat.evicted == 0).then_some(items)
    })
    .await
}

/// The position of a chat's message `message_id` (a repeated inbound id answers with it).
pub async fn message_position(
    app: &App,
    acc: &str,
    jid: &str,
    message_id: &str,
) -> Result<Option<i64>, AppError> {
    memory_or_chat(app, acc, jid, |m| {
        let Some(chat) = m.chats.get(&key(acc, jid)) else {
            return Some(None);
        };
        let found = chat
            .messages
            .iter()
            .find(|m| m.id == message_id)
            .map(|m| m.position);
        (found.is_some() || chat.evicted == 0).then_some(found)
    })
    .await
}

/// A chat's newest `n` messages (oldest first) and its AI-log rows from the oldest of them on:
/// the dashboard's conversation view.
pub async fn thread(
    app: &App,
    acc: &str,
    jid: &str,
    n: usize,
) -> Result<(Vec<MessageView>, Vec<AiLogRow>), AppError> {
    memory_or_chat(app, acc, jid, |m| {
        let Some(chat) = m.chats.get(&key(acc, jid)) else {
            return Some((vec![], vec![]));
        };
        if chat.messages.len() < n && chat.evicted > 0 {
            return None;
        }
        let skip = chat.messages.len().saturating_sub(n);
        let messages: Vec<MessageView> = chat.messages.iter().skip(skip).cloned().collect();
        let Some(oldest) = messages.first().map(|m| m.position) else {
            // No messages, so no rows either.
            return Some((vec![], vec![]));
        };
        // Rows above `log_evicted_upto` are all in memory.
        if oldest <= m.log_evicted_upto {
            return None;
        }
        let rows = m
            .ai_log
            .iter()
            .filter(|r| r.account_id == acc && r.chat_id == jid && r.position >= oldest)
            .cloned()
            .collect();
        Some((messages, rows))
    })
    .await
}

/// The filters of `GET /v1/ai/logs`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogFilter<'a> {
    pub account_id: Option<&'a str>,
    pub chat_id: Option<&'a str>,
    pub status: Option<&'a str>,
}

impl LogFilter<'_> {
    pub fn matches(&self, r: &AiLogRow) -> bool {
        self.account_id.is_none_or(|a| r.account_id == a)
            && self.chat_id.is_none_or(|c| r.chat_id == c)
            && self.status.is_none_or(|s| r.status.as_str() == s)
    }
}

/// AI-log rows requested after position `after`, oldest first, `limit` at most, each as it is
/// now (`GET /v1/ai/logs`).
///
/// Rows above the model's `log_evicted_upto` are all in memory. Older ones come from a scan of
/// the AI log's events from `after` on (their own index; one chat's stream when both
/// `account_id` and `chat_id` are given), folded in batches: a scanned row is handed out once
/// its state is known, i.e. it is decided, or memory holds it (an open row that left memory
/// stays there until decided).
pub async fn ai_log_page(
    app: &App,
    f: &LogFilter<'_>,
    after: Option<i64>,
    limit: usize,
) -> Result<Vec<AiLogRow>, AppError> {
    let after = after.unwrap_or(0);
    let from_memory = |m: &MessagesModel, above: i64, out: &mut Vec<AiLogRow>| {
        let room = limit.saturating_sub(out.len());
        out.extend(
            m.ai_log
                .iter()
                .filter(|r| r.position > above && f.matches(r))
                .take(room)
                .cloned(),
        );
    };
    let mut out = Vec::new();
    {
        let m = app.messages();
        if after >= m.log_evicted_upto {
            from_memory(&m, after, &mut out);
            return Ok(out);
        }
    }
    if let (Some(acc), Some(jid)) = (f.account_id, f.chat_id) {
        let full = fold_chat(&app.store, acc, jid).await?;
        from_memory(&full, after, &mut out);
        return Ok(out);
    }
    // The scan keeps no messages, and its rows only until they are handed out or passed over.
    let mut scan = MessagesModel::with_retention(Retention {
        messages: 0,
        ai_log: usize::MAX,
    });
    let mut cursor = after;
    loop {
        let raw = app
            .store
            .read_raw(&EventQuery {
                after: cursor,
                limit: BATCH,
                ai_log_history: true,
                ..Default::default()
            })
            .await?;
        let ended = (raw.len() as i64) < BATCH;
        if !raw.is_empty() {
            cursor = fold_all(&mut scan, raw)?.0;
        }
        let m = app.messages();
        let upto = m.log_evicted_upto;
        let mut blocked = false;
        while let Some(row) = scan.ai_log.front().filter(|r| r.position <= upto) {
            let now = match m.reply(&row.id) {
                // Decided is final (the scan may have read past what memory folded).
                _ if !row.is_open() => row.clone(),
                // Open when it left memory: memory keeps it up to date.
                Some(r) => r.clone(),
                None if ended => row.clone(),
                // Decided after the scan's position: read on.
                None => {
                    blocked = true;
                    break;
                }
            };
            scan.take_front_row();
            if f.matches(&now) {
                out.push(now);
                if out.len() == limit {
                    return Ok(out);
                }
            }
        }
        if !blocked && (cursor >= upto || ended) {
            from_memory(&m, upto.max(after), &mut out);
            return Ok(out);
        }
    }
}
