//! Messages: an inbound message injected into a sandbox account, a text sent as the account,
//! and the reads of chats and their messages.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use wagate_actors::Inbound;
use wagate_events::chat::{MessageKind, Source};
use wagate_events::ids::{chat_kind, ChatKind};
use wagate_projections::messages::{ChatView, MessageView};

use super::error::{Error, Result};
use crate::app::{cold, App, Who};

/// An inbound sandbox message as a front end parsed it (not yet checked).
#[derive(Debug)]
pub struct InboundMessage {
    /// The chat JID.
    pub chat_id: String,
    /// The sender: 1..=128 bytes, not blank.
    pub from: String,
    /// The text; with `media`, its caption (optional then).
    pub text: Option<String>,
    /// The WhatsApp message id (generated when absent): 1..=256 bytes, not blank.
    pub id: Option<String>,
    /// A message the account itself sent from another device (never answered).
    pub from_me: bool,
    /// The message mentions the account.
    pub mentioned: bool,
    /// The message it replies to: 1..=256 bytes, not blank.
    pub reply_to: Option<String>,
    /// The sender's profile name, as WhatsApp would report it: 1..=256 bytes, not blank.
    pub contact_name: Option<String>,
    /// An image, voice note, sticker or document (ADR 0028).
    pub media: Option<InboundMedia>,
}

/// The media of a sandbox inbound message, as a front end parsed it (not yet checked).
#[derive(Debug)]
pub struct InboundMedia {
    /// `audio`, `image`, `sticker` or `document`.
    pub kind: String,
    /// The declared MIME type (`audio/ogg; codecs=opus`, `image/jpeg`, …).
    pub mime_type: String,
    /// The bytes, base64 (standard alphabet, padded).
    pub data_base64: String,
    /// The file name (documents): 1..=255 bytes.
    pub filename: Option<String>,
}

pub use crate::transport::media::CheckedMedia;
use crate::transport::media::{self as edge, Refusal};

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Self {
        Error::invalid(r.field, r.message)
    }
}

/// Checks a sandbox message's media: its kind, the base64, then the bytes as every transport's
/// are ([`edge::accept`]: the size cap `WAGATE_MEDIA_MAX_BYTES`, the declared MIME type against
/// the type the bytes show). A refusal is a 400 naming the field.
pub fn check_media(media: InboundMedia, max_bytes: usize) -> Result<CheckedMedia> {
    use base64::Engine;
    let kind = edge::media_kind(&media.kind)?;
    edge::declared_type(kind, &media.mime_type)?;
    edge::check_filename(media.filename.as_deref())?;
    // Refused before decoding when the text alone is too long for the cap.
    let encoded = media.data_base64.trim();
    let estimate = encoded.len() / 4 * 3;
    if estimate > max_bytes.saturating_add(3) {
        return Err(edge::too_large(estimate as u64, max_bytes).into());
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| Error::invalid("media.data_base64", "must be base64 (standard alphabet)"))?;
    Ok(edge::accept(
        kind,
        &media.mime_type,
        bytes,
        media.filename,
        max_bytes,
    )?)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct InboundAccepted {
    pub message_id: String,
    /// The position of the committed message event.
    pub position: Option<i64>,
    /// True when this id was seen before (nothing new was written).
    pub duplicate: bool,
}

/// Validates an inbound sandbox message and hands it to the chat actor; answers once the message
/// event is committed (the caller checked the account).
pub async fn inject_inbound(
    app: &App,
    who: &Who,
    acc: &str,
    req: InboundMessage,
) -> Result<InboundAccepted> {
    let kind = chat_kind(&req.chat_id, "chat_id")?;
    if req.from.trim().is_empty() || req.from.len() > 128 {
        return Err(Error::invalid("from", "1..=128 characters"));
    }
    let message_id = match req.id {
        Some(id) if id.trim().is_empty() || id.len() > 256 => {
            return Err(Error::invalid("id", "1..=256 characters"))
        }
        Some(id) => id,
        None => format!("sbx_in_{}", uuid::Uuid::now_v7().simple()),
    };
    if req
        .reply_to
        .as_ref()
        .is_some_and(|id| id.trim().is_empty() || id.len() > 256)
    {
        return Err(Error::invalid("reply_to", "1..=256 characters"));
    }
    if req
        .contact_name
        .as_ref()
        .is_some_and(|n| n.trim().is_empty() || n.len() > 256)
    {
        return Err(Error::invalid("contact_name", "1..=256 characters"));
    }
    let media = req
        .media
        .map(|m| check_media(m, app.config.media_max_bytes))
        .transpose()?;
    let text = match (req.text, &media) {
        (Some(t), _) if !t.trim().is_empty() => t,
        (Some(_), _) => return Err(Error::invalid("text", "must not be blank")),
        (None, None) => return Err(Error::invalid("text", "required without media")),
        // Media without a caption is recorded with its kind as its text, as the Cloud API's is.
        (None, Some(m)) => format!("[{}]", m.kind.as_str()),
    };
    let reply_candidate = !req.from_me && kind != ChatKind::Broadcast;
    let meta = who.metadata();
    let gateway = app.gateway()?;
    // The bytes are kept before the message is committed, so a reply never finds its media
    // missing (a message that then fails to commit leaves a use the purge gives up).
    // Only media a reply can use is kept: a voice note, an image or a sticker that may be
    // answered (a document reaches the model as its caption and file name; a `from_me` message
    // or a broadcast is never answered).
    if let Some(m) = media
        .as_ref()
        .filter(|m| reply_candidate && wagate_events::chat::keeps_bytes(m.kind))
    {
        let used = crate::store::media::MediaUse {
            account: acc,
            chat_id: &req.chat_id,
            message_id: &message_id,
            sha256: &m.info.sha256,
        };
        crate::store::media::put(&app.store, used, &m.info.mime_type, &m.bytes).await?;
    }
    let inbound = Inbound {
        message_id: message_id.clone(),
        from: req.from,
        text,
        from_me: req.from_me,
        reply_candidate,
        kind: media.as_ref().map_or(MessageKind::Text, |m| m.kind),
        contact_name: req.contact_name,
        mentioned: req.mentioned,
        reply_to: req.reply_to,
        media: media.map(|m| m.info),
    };
    let ack = gateway.receive(acc, &req.chat_id, inbound, meta).await?;
    let position = match ack.position {
        Some(p) => Some(p),
        None => {
            // A duplicate: answer with the position of the original.
            app.catch_up().await?;
            cold::message_position(app, acc, &req.chat_id, &message_id).await?
        }
    };
    Ok(InboundAccepted {
        message_id,
        position,
        duplicate: ack.duplicate,
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatSummary {
    pub chat_id: String,
    /// `private`, `group`, `channel` or `broadcast`.
    pub chat_kind: String,
    pub last_message_at: Option<DateTime<Utc>>,
    pub message_count: usize,
    /// The chat's AI mode: `inherit`, `enabled` or `disabled`.
    pub ai_mode: String,
    pub blocked: bool,
    /// Human takeover: the AI does not answer in this chat before this time (`null`: not paused).
    pub ai_paused_until: Option<DateTime<Utc>>,
    /// Position of the chat's newest message: the list's order and its cursor.
    pub position: i64,
    /// The customer's profile name as the transport last reported it, if it did.
    pub contact_name: Option<String>,
}

/// The longest chat search accepted.
pub const MAX_SEARCH: usize = 200;

/// A search of an account's chats: a number (digits, with any `+`, spaces, dashes or brackets)
/// matches the chats whose JID holds those digits; other text matches the contact's name or the
/// JID, ignoring case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatSearch {
    Number(String),
    Text(String),
}

impl ChatSearch {
    /// The search `raw` asks for: `None` when blank, 400 (`field`) when longer than
    /// [`MAX_SEARCH`] bytes.
    pub fn parse(raw: &str, field: &str) -> Result<Option<Self>> {
        let raw = raw.trim();
        if raw.len() > MAX_SEARCH {
            return Err(Error::invalid(
                field,
                format!("at most {MAX_SEARCH} characters"),
            ));
        }
        if raw.is_empty() {
            return Ok(None);
        }
        let digits: String = raw
            .chars()
            .filter(|c| !matches!(c, '+' | ' ' | '-' | '(' | ')' | '.'))
            .collect();
        Ok(Some(
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                Self::Number(digits)
            } else {
                Self::Text(raw.to_lowercase())
            },
        ))
    }

    /// Whether the chat `jid`, whose contact is called `name`, matches.
    pub fn matches(&self, jid: &str, name: Option<&str>) -> bool {
        match self {
            Self::Number(d) => jid
                .split('@')
                .next()
                .is_some_and(|user| user.contains(d.as_str())),
            Self::Text(t) => {
                jid.to_lowercase().contains(t.as_str())
                    || name.is_some_and(|n| n.to_lowercase().contains(t.as_str()))
            }
        }
    }
}

/// Checks a page size: `1..=500`, `default` when absent.
fn page_limit(limit: Option<usize>, default: usize) -> Result<usize> {
    let limit = limit.unwrap_or(default);
    if !(1..=500).contains(&limit) {
        return Err(Error::invalid("limit", "must be between 1 and 500"));
    }
    Ok(limit)
}

/// A page of the account's chats (default 100 at most), most recent first, read after the
/// latest commits; `limit` is the page size used.
pub async fn chats_page(
    app: &App,
    acc: &str,
    before: Option<i64>,
    limit: Option<usize>,
) -> Result<(Vec<ChatSummary>, usize)> {
    let limit = page_limit(limit, 100)?;
    app.catch_up().await?;
    Ok((chat_summaries(app, acc, before, limit, None), limit))
}

/// The account's chats from the read models, most recent first, whose newest message is before
/// position `before` and that match `search` (when given), `limit` at most (call `catch_up`
/// first to read the latest).
pub fn chat_summaries(
    app: &App,
    acc: &str,
    before: Option<i64>,
    limit: usize,
    search: Option<&ChatSearch>,
) -> Vec<ChatSummary> {
    let now = Utc::now();
    let config = app.model();
    let messages = app.messages();
    let mut page: Vec<(&String, &ChatView)> = messages
        .chats
        .range((acc.to_string(), String::new())..)
        .take_while(|((a, _), _)| a == acc)
        .filter(|(_, view)| before.is_none_or(|b| view.last_position < b))
        .filter(|((_, jid), view)| search.is_none_or(|q| q.matches(jid, view.name.as_deref())))
        .map(|((_, jid), view)| (jid, view))
        .collect();
    // Newest first; only the page is built.
    page.sort_unstable_by_key(|(_, view)| std::cmp::Reverse(view.last_position));
    page.truncate(limit);
    page.into_iter()
        .map(|(jid, view)| {
            let settings = config.chat(acc, jid).cloned().unwrap_or_default();
            let ai_paused_until = config
                .pause(acc, jid)
                .map(|p| p.until)
                .filter(|until| *until > now);
            ChatSummary {
                ai_paused_until,
                chat_id: jid.clone(),
                chat_kind: chat_kind(jid, "jid")
                    .map(|k| {
                        serde_json::to_value(k)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default()
                    })
                    .unwrap_or_default(),
                last_message_at: view.last_message_at,
                message_count: view.message_count,
                ai_mode: serde_json::to_value(settings.mode)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                blocked: settings.blocked,
                position: view.last_position,
                contact_name: view.name.clone(),
            }
        })
        .collect()
}

/// A page of a chat's messages (default 50 at most), newest first, read after the latest
/// commits (from the store when memory does not hold the page); `limit` is the page size used.
pub async fn messages_page(
    app: &App,
    acc: &str,
    jid: &str,
    before: Option<i64>,
    limit: Option<usize>,
) -> Result<(Vec<MessageView>, usize)> {
    chat_kind(jid, "jid")?;
    let limit = page_limit(limit, 50)?;
    app.catch_up().await?;
    let items = cold::messages_page(app, acc, jid, before, limit).await?;
    Ok((items, limit))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SentMessage {
    pub id: String,
    pub chat_id: String,
    pub position: Option<i64>,
}

/// Sends `text` into a chat through its chat actor, as `source` (an operator, a test reply);
/// the caller checked the account and the JID.
pub async fn send_as_account(
    app: &App,
    who: &Who,
    acc: &str,
    jid: &str,
    text: &str,
    source: Source,
) -> Result<SentMessage> {
    super::whatsapp_web::require_connection_here(app, acc)?;
    let meta = who.metadata();
    let ack = app.gateway()?.send(acc, jid, text, source, meta).await?;
    Ok(SentMessage {
        id: ack.message_id,
        chat_id: jid.to_string(),
        position: ack.position,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_searches_match_numbers_names_and_jids() {
        let number = ChatSearch::parse(" +49 170-123 ", "q").ok().flatten();
        assert_eq!(number, Some(ChatSearch::Number("49170123".into())));
        let number = number.expect("a search");
        assert!(number.matches("491701234567@s.whatsapp.net", None));
        assert!(!number.matches("441701234567@s.whatsapp.net", Some("49170123")));
        let name = ChatSearch::parse("aNa", "q")
            .ok()
            .flatten()
            .expect("a search");
        assert!(name.matches("1@s.whatsapp.net", Some("Ana María")));
        assert!(!name.matches("1@s.whatsapp.net", None));
        let jid = ChatSearch::parse("g.us", "q")
            .ok()
            .flatten()
            .expect("a search");
        assert!(jid.matches("120363@g.us", None));
        assert_eq!(ChatSearch::parse("  ", "q").ok(), Some(None));
        assert!(ChatSearch::parse(&"x".repeat(201), "q").is_err());
    }
}
