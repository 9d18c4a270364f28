//! Pure functions from whatsapp-rust's values to the [`crate::port`] vocabulary: inbound
//! messages to [`WebInbound`], connection events to [`WebEvent`]. No I/O, no state: what the
//! account's own JIDs are is a parameter ([`OwnJids`]).
//!
//! What an inbound message maps to:
//!
//! | WhatsApp content | kind | text |
//! |---|---|---|
//! | `conversation`, `extendedTextMessage` | Text | the body |
//! | image / video (incl. round video) / document | Image / Video / Document | the caption, else `[kind]` |
//! | audio, voice note | Audio | `[audio]` |
//! | sticker (incl. animated) | Sticker | `[sticker]` |
//!
//! Images, audio (voice notes too), stickers and documents carry their [`WebMedia`]: the
//! declared MIME type, size, SHA-256 and file name, and the CDN fields the connection downloads
//! the file with ([`crate::port::WebConnection::download`]); a video carries none (no reply
//! uses it).
//! | reaction | Reaction | the emoji; `quoted` is the reacted-to message |
//! | location, live location | Location | name and address, else `[location]` |
//! | contact, contact list | Contacts | the display names, else `[contacts]` |
//! | button / template-button reply | Button | the button's text, else its id |
//! | list reply, interactive (flow) reply | Interactive | the title / body, else the row id |
//! | poll creation | Other | the poll's question |
//! | anything else with content | Other | `[other]` |
//!
//! Wrappers are unwrapped first: device-sent (our own messages from the phone), ephemeral,
//! view-once (all three versions), document-with-caption, edited, group-mentioned, bot-invoke,
//! animated sticker, spoiler and group-status wrappers.
//!
//! Dropped (`None`), as they are not customer content the gateway records or answers:
//! - protocol messages (`protocolMessage`: revokes, edits, ephemeral settings, history-sync and
//!   app-state key notifications, peer-data operations…), and any stanza whose `edit`
//!   attribute marks it as an edit, a pin or a revoke;
//! - the removal of a reaction (a reaction with an empty emoji);
//! - key distribution and other housekeeping that carries no content of its own (sender-key
//!   distribution, message secrets, keep-in-chat, pin-in-chat, poll votes, encrypted reactions
//!   and event responses, placeholders, history notices, call signalling);
//! - undecryptable messages the sender flagged `decrypt-fail="hide"` (reactions, edits, votes
//!   and the like, which WhatsApp itself never shows as "waiting for this message").

use std::str::FromStr;

use wacore::types::events::{
    DecryptFailMode, Event, InboundMessage, Receipt, UndecryptableMessage,
};
use wacore::types::message::{EditAttribute, MessageInfo};
use wacore::types::presence::ReceiptType;
use wagate_events::chat::{DeliveryStatus, MessageKind};
use whatsapp_rust::waproto::whatsapp as wa;
use whatsapp_rust::Jid;

use crate::port::{MediaLocator, Quoted, WebEvent, WebInbound, WebMedia};

/// The account's own JIDs (without device part), to tell whether a message mentions it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnJids {
    /// `<digits>@s.whatsapp.net`, once paired.
    pub pn: Option<String>,
    /// `<digits>@lid`, once WhatsApp assigned one.
    pub lid: Option<String>,
}

impl OwnJids {
    fn is_me(&self, jid: &str) -> bool {
        let jid = non_ad(jid);
        self.pn.as_deref() == Some(jid.as_str()) || self.lid.as_deref() == Some(jid.as_str())
    }
}

/// A JID string without its device (and agent) part; unparseable input is kept as it is.
pub fn non_ad(jid: &str) -> String {
    match Jid::from_str(jid) {
        Ok(parsed) => parsed.to_non_ad_string(),
        Err(_) => jid.to_string(),
    }
}

/// An inbound message as the durability hook and `Event::Messages` carry it.
pub fn inbound_message(message: &InboundMessage, own: &OwnJids) -> Option<WebInbound> {
    inbound(&message.message, &message.info, own)
}

/// A decrypted inbound message, or `None` when it is not customer content (see the module
/// documentation for what is dropped).
pub fn inbound(message: &wa::Message, info: &MessageInfo, own: &OwnJids) -> Option<WebInbound> {
    if matches!(
        info.edit,
        EditAttribute::MessageEdit
            | EditAttribute::PinInChat
            | EditAttribute::AdminEdit
            | EditAttribute::SenderRevoke
            | EditAttribute::AdminRevoke
    ) {
        return None;
    }
    let content = content(unwrap(message))?;
    let (chat, sender) = chat_and_sender(info);
    let mentions_me = content
        .context
        .is_some_and(|ctx| ctx.mentioned_jid.iter().any(|jid| own.is_me(jid)));
    let quoted = match content.reacted_to {
        Some(key) => Some(Quoted {
            id: key.id.clone().filter(|id| !id.is_empty()),
            sender: key
                .participant
                .as_deref()
                .filter(|p| !p.is_empty())
                .map(non_ad),
            text: None,
        }),
        None => content.context.and_then(quoted),
    };
    Some(WebInbound {
        id: info.id.clone(),
        chat,
        sender,
        from_me: info.source.is_from_me,
        push_name: push_name(info),
        kind: content.kind,
        text: content
            .text
            .unwrap_or_else(|| format!("[{}]", content.kind.as_str())),
        quoted,
        mentions_me,
        undecryptable: false,
        media: content.media,
    })
}

/// A message that could not be decrypted: recorded with the kind the stanza announces, never
/// answered. `None` when the sender flagged it `decrypt-fail="hide"` (not shown to anyone).
pub fn undecryptable(event: &UndecryptableMessage) -> Option<WebInbound> {
    if event.decrypt_fail_mode == DecryptFailMode::Hide {
        return None;
    }
    let info = &event.info;
    let (chat, sender) = chat_and_sender(info);
    Some(WebInbound {
        id: info.id.clone(),
        chat,
        sender,
        from_me: info.source.is_from_me,
        push_name: push_name(info),
        kind: announced_kind(info),
        text: "[undecryptable]".to_string(),
        quoted: None,
        mentions_me: false,
        undecryptable: true,
        media: None,
    })
}

/// A connection event, or `None` for the events the gateway does not need (messages go through
/// [`inbound_message`] and [`undecryptable`]; presence, app state, groups, calls, history sync,
/// server acks… are ignored).
pub fn event(event: &Event) -> Option<WebEvent> {
    Some(match event {
        Event::PairingQrCode(qr) => WebEvent::Qr {
            code: qr.code.clone(),
            valid_for: qr.timeout,
        },
        Event::PairingCode(pc) => WebEvent::PairCode {
            code: pc.code.clone(),
            valid_for: pc.timeout,
        },
        Event::PairError(e) => WebEvent::PairError {
            reason: e.error.clone(),
        },
        Event::PairingCodeError(e) => WebEvent::PairError {
            reason: e.error.clone(),
        },
        // Nobody scanned any of the QR codes: with no pair-code flow outstanding the library
        // closes the connection for good, and only a new connect brings new codes.
        Event::PairingQrCodesExhausted(e) if e.disconnected => WebEvent::PairError {
            reason: "no QR code was scanned in time; the connection stopped, connect again for \
                     new codes"
                .to_string(),
        },
        Event::PairSuccess(p) => WebEvent::Paired {
            jid: p.id.to_non_ad_string(),
        },
        Event::Connected(_) => WebEvent::Connected,
        Event::Disconnected(_) => WebEvent::Disconnected,
        Event::LoggedOut(l) => WebEvent::LoggedOut {
            reason: format!("{:?} ({})", l.reason, l.reason.code()),
        },
        Event::TemporaryBan(b) => WebEvent::TemporarilyBanned {
            reason: b.code.to_string(),
            expires_in: b.expire.to_std().ok(),
        },
        Event::ClientOutdated(_) => WebEvent::ClientOutdated,
        Event::StreamReplaced(_) => WebEvent::StreamReplaced,
        Event::Receipt(r) => return receipt(r),
        _ => return None,
    })
}

/// Delivery (`delivery`) and read (`read`, `read-self`, `played`) receipts; `None` for the
/// others (retry, sender, server-error, inactive, history-sync…).
pub fn receipt(receipt: &Receipt) -> Option<WebEvent> {
    let status = match receipt.r#type {
        ReceiptType::Delivered => DeliveryStatus::Delivered,
        ReceiptType::Read | ReceiptType::ReadSelf | ReceiptType::Played => DeliveryStatus::Read,
        _ => return None,
    };
    if receipt.message_ids.is_empty() {
        return None;
    }
    Some(WebEvent::Receipt {
        chat: receipt.source.chat.to_non_ad_string(),
        ids: receipt.message_ids.clone(),
        status,
    })
}

fn chat_and_sender(info: &MessageInfo) -> (String, String) {
    let chat = info.source.chat.to_non_ad_string();
    let sender = if info.source.sender.user.is_empty() {
        chat.clone()
    } else {
        info.source.sender.to_non_ad_string()
    };
    (chat, sender)
}

fn push_name(info: &MessageInfo) -> Option<String> {
    let name = info.push_name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// The kind an undecryptable stanza announces (its `mediatype`, else its `type`).
fn announced_kind(info: &MessageInfo) -> MessageKind {
    match info.media_type.as_str() {
        "image" => return MessageKind::Image,
        "video" | "gif" | "ptv" => return MessageKind::Video,
        "audio" | "ptt" => return MessageKind::Audio,
        "document" => return MessageKind::Document,
        "sticker" => return MessageKind::Sticker,
        "location" | "livelocation" => return MessageKind::Location,
        "vcard" | "contact_array" => return MessageKind::Contacts,
        _ => {}
    }
    match info.r#type.as_str() {
        "text" => MessageKind::Text,
        "reaction" => MessageKind::Reaction,
        _ => MessageKind::Other,
    }
}

/// How deep wrappers may nest before we stop unwrapping (a malicious message could nest many).
const MAX_WRAPPERS: usize = 8;

/// The message inside its wrappers (device-sent, ephemeral, view-once…).
fn unwrap(message: &wa::Message) -> &wa::Message {
    let mut current = message;
    for _ in 0..MAX_WRAPPERS {
        let inner = current
            .device_sent_message
            .as_option()
            .and_then(|dsm| dsm.message.as_option())
            .or_else(|| {
                [
                    &current.ephemeral_message,
                    &current.view_once_message,
                    &current.view_once_message_v2,
                    &current.view_once_message_v2_extension,
                    &current.document_with_caption_message,
                    &current.edited_message,
                    &current.group_mentioned_message,
                    &current.bot_invoke_message,
                    &current.lottie_sticker_message,
                    &current.spoiler_message,
                    &current.group_status_message,
                    &current.group_status_message_v2,
                ]
                .into_iter()
                .find_map(|wrapper| wrapper.as_option().and_then(|w| w.message.as_option()))
            });
        match inner {
            Some(inner) => current = inner,
            None => break,
        }
    }
    current
}

/// What a (unwrapped) message carries.
struct Content<'a> {
    kind: MessageKind,
    /// `None`: no text of its own (the caller writes `[kind]`).
    text: Option<String>,
    context: Option<&'a wa::ContextInfo>,
    /// For a reaction: the message reacted to.
    reacted_to: Option<&'a wa::MessageKey>,
    /// The media of a voice note, image, sticker or document.
    media: Option<WebMedia>,
}

impl<'a> Content<'a> {
    fn new(
        kind: MessageKind,
        text: Option<&str>,
        context: &'a whatsapp_rust::buffa::MessageField<wa::ContextInfo>,
    ) -> Self {
        Self {
            kind,
            text: non_empty(text),
            context: context.as_option(),
            reacted_to: None,
            media: None,
        }
    }

    fn with_media(mut self, media: WebMedia) -> Self {
        self.media = Some(media);
        self
    }
}

/// What a media message declares of its file, and where it is (the fields the library's
/// `Downloadable` reads).
struct Declared<'a> {
    mimetype: &'a Option<String>,
    file_length: Option<u64>,
    file_sha256: &'a Option<Vec<u8>>,
    file_enc_sha256: &'a Option<Vec<u8>>,
    media_key: &'a Option<Vec<u8>>,
    direct_path: &'a Option<String>,
    static_url: Option<&'a String>,
}

fn media(kind: MessageKind, d: Declared<'_>, filename: Option<&str>, voice: bool) -> WebMedia {
    WebMedia {
        kind,
        mime_type: d.mimetype.clone().unwrap_or_default(),
        size: d.file_length,
        sha256: d.file_sha256.clone().filter(|h| !h.is_empty()),
        filename: non_empty(filename),
        voice,
        locator: MediaLocator {
            direct_path: d.direct_path.clone().filter(|p| !p.is_empty()),
            static_url: d.static_url.filter(|u| !u.is_empty()).cloned(),
            media_key: d.media_key.clone().filter(|k| !k.is_empty()),
            file_enc_sha256: d.file_enc_sha256.clone().filter(|h| !h.is_empty()),
        },
    }
}

macro_rules! declared {
    ($x:expr) => {
        declared!($x, None)
    };
    ($x:expr, $static_url:expr) => {
        Declared {
            mimetype: &$x.mimetype,
            file_length: $x.file_length,
            file_sha256: &$x.file_sha256,
            file_enc_sha256: &$x.file_enc_sha256,
            media_key: &$x.media_key,
            direct_path: &$x.direct_path,
            static_url: $static_url,
        }
    };
}

fn non_empty(text: Option<&str>) -> Option<String> {
    text.filter(|t| !t.trim().is_empty()).map(str::to_string)
}

fn content(m: &wa::Message) -> Option<Content<'_>> {
    use MessageKind as K;
    if m.protocol_message.is_set() {
        return None;
    }
    if let Some(text) = non_empty(m.conversation.as_deref()) {
        return Some(Content {
            kind: K::Text,
            text: Some(text),
            context: None,
            reacted_to: None,
            media: None,
        });
    }
    if let Some(x) = m.extended_text_message.as_option() {
        return Some(Content::new(K::Text, x.text.as_deref(), &x.context_info));
    }
    if let Some(x) = m.image_message.as_option() {
        return Some(
            Content::new(K::Image, x.caption.as_deref(), &x.context_info).with_media(media(
                K::Image,
                declared!(x, x.static_url.as_ref()),
                None,
                false,
            )),
        );
    }
    if let Some(x) = m.video_message.as_option().or(m.ptv_message.as_option()) {
        return Some(Content::new(
            K::Video,
            x.caption.as_deref(),
            &x.context_info,
        ));
    }
    if let Some(x) = m.document_message.as_option() {
        let name = x.file_name.as_deref().or(x.title.as_deref());
        return Some(
            Content::new(K::Document, x.caption.as_deref(), &x.context_info).with_media(media(
                K::Document,
                declared!(x),
                name,
                false,
            )),
        );
    }
    if let Some(x) = m.audio_message.as_option() {
        let voice = x.ptt.unwrap_or(false);
        return Some(
            Content::new(K::Audio, None, &x.context_info).with_media(media(
                K::Audio,
                declared!(x),
                None,
                voice,
            )),
        );
    }
    if let Some(x) = m.sticker_message.as_option() {
        return Some(
            Content::new(K::Sticker, None, &x.context_info).with_media(media(
                K::Sticker,
                declared!(x),
                None,
                false,
            )),
        );
    }
    if let Some(x) = m.reaction_message.as_option() {
        // An empty emoji takes a reaction back: nothing to record.
        let emoji = non_empty(x.text.as_deref())?;
        return Some(Content {
            kind: K::Reaction,
            text: Some(emoji),
            context: None,
            reacted_to: x.key.as_option(),
            media: None,
        });
    }
    if let Some(x) = m.location_message.as_option() {
        let text = join([x.name.as_deref(), x.address.as_deref()], ", ");
        return Some(Content::new(K::Location, text.as_deref(), &x.context_info));
    }
    if let Some(x) = m.live_location_message.as_option() {
        return Some(Content::new(
            K::Location,
            x.caption.as_deref(),
            &x.context_info,
        ));
    }
    if let Some(x) = m.contact_message.as_option() {
        return Some(Content::new(
            K::Contacts,
            x.display_name.as_deref(),
            &x.context_info,
        ));
    }
    if let Some(x) = m.contacts_array_message.as_option() {
        let names = join(x.contacts.iter().map(|c| c.display_name.as_deref()), ", ")
            .or_else(|| non_empty(x.display_name.as_deref()));
        return Some(Content::new(K::Contacts, names.as_deref(), &x.context_info));
    }
    if let Some(x) = m.buttons_response_message.as_option() {
        use whatsapp_rust::waproto::whatsapp::__buffa::oneof::message::buttons_response_message::Response;
        let shown = match &x.response {
            Some(Response::SelectedDisplayText(text)) => Some(text.as_str()),
            _ => None,
        };
        let text = non_empty(shown).or_else(|| non_empty(x.selected_button_id.as_deref()));
        return Some(Content::new(K::Button, text.as_deref(), &x.context_info));
    }
    if let Some(x) = m.template_button_reply_message.as_option() {
        let text = non_empty(x.selected_display_text.as_deref())
            .or_else(|| non_empty(x.selected_id.as_deref()));
        return Some(Content::new(K::Button, text.as_deref(), &x.context_info));
    }
    if let Some(x) = m.list_response_message.as_option() {
        let text = non_empty(x.title.as_deref()).or_else(|| {
            x.single_select_reply
                .as_option()
                .and_then(|r| non_empty(r.selected_row_id.as_deref()))
        });
        return Some(Content::new(
            K::Interactive,
            text.as_deref(),
            &x.context_info,
        ));
    }
    if let Some(x) = m.interactive_response_message.as_option() {
        let text = x.body.as_option().and_then(|b| b.text.as_deref());
        return Some(Content::new(K::Interactive, text, &x.context_info));
    }
    if let Some(x) = [
        &m.poll_creation_message,
        &m.poll_creation_message_v2,
        &m.poll_creation_message_v3,
        &m.poll_creation_message_v5,
        &m.poll_creation_message_v6,
    ]
    .into_iter()
    .find_map(|p| p.as_option())
    {
        return Some(Content::new(K::Other, x.name.as_deref(), &x.context_info));
    }
    has_other_content(m).then_some(Content {
        kind: K::Other,
        text: None,
        context: None,
        reacted_to: None,
        media: None,
    })
}

/// Whether anything is left once the housekeeping fields are set aside.
fn has_other_content(m: &wa::Message) -> bool {
    use whatsapp_rust::buffa::MessageField;
    let mut rest = m.clone();
    rest.conversation = None;
    rest.sender_key_distribution_message = MessageField::none();
    rest.fast_ratchet_key_sender_key_distribution_message = MessageField::none();
    rest.message_context_info = MessageField::none();
    rest.keep_in_chat_message = MessageField::none();
    rest.pin_in_chat_message = MessageField::none();
    rest.poll_update_message = MessageField::none();
    rest.enc_reaction_message = MessageField::none();
    rest.enc_event_response_message = MessageField::none();
    rest.secret_encrypted_message = MessageField::none();
    rest.placeholder_message = MessageField::none();
    rest.message_history_notice = MessageField::none();
    rest.message_history_bundle = MessageField::none();
    rest.call = MessageField::none();
    rest.bcall_message = MessageField::none();
    rest.sticker_sync_rmr_message = MessageField::none();
    // By encoded size, not `!= default()`: a field set to an empty message is content (of a
    // kind we do not know), and protobuf equality treats it as unset.
    whatsapp_rust::waproto::codec::message_encoded_len(&rest) > 0
}

fn join<'a>(parts: impl IntoIterator<Item = Option<&'a str>>, separator: &str) -> Option<String> {
    let parts: Vec<&str> = parts
        .into_iter()
        .flatten()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(separator))
}

fn quoted(ctx: &wa::ContextInfo) -> Option<Quoted> {
    let id = non_empty(ctx.stanza_id.as_deref());
    let quoted_message = ctx.quoted_message.as_option();
    if id.is_none() && quoted_message.is_none() {
        return None;
    }
    Some(Quoted {
        id,
        sender: non_empty(ctx.participant.as_deref()).map(|p| non_ad(&p)),
        text: quoted_message
            .and_then(|m| content(unwrap(m)))
            .and_then(|c| c.text),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use wacore::types::events::{
        ConnectFailureReason, Connected, LoggedOut, PairingQrCode, PairingQrCodesExhausted,
        StreamReplaced, TempBanReason, TemporaryBan, UnavailableType,
    };
    use wacore::types::message::MessageSource;
    use whatsapp_rust::buffa::MessageField;
    use whatsapp_rust::chrono::{self, Utc};

    use super::*;

    const ME_PN: &str = "15550001111@s.whatsapp.net";
    const ME_LID: &str = "99887766554433@lid";
    const CUSTOMER: &str = "4915112345678@s.whatsapp.net";
    const GROUP: &str = "120363012345678901@g.us";

    fn own() -> OwnJids {
        OwnJids {
            pn: Some(ME_PN.to_string()),
            lid: Some(ME_LID.to_string()),
        }
    }

    fn info(chat: &str, sender: &str, id: &str) -> MessageInfo {
        let chat: Jid = chat.parse().unwrap();
        MessageInfo {
            id: id.to_string(),
            source: MessageSource {
                is_group: chat.server == whatsapp_rust::Server::Group,
                chat,
                sender: sender.parse().unwrap(),
                ..Default::default()
            },
            push_name: "Ana".to_string(),
            r#type: "text".to_string(),
            timestamp: Utc::now(),
            ..Default::default()
        }
    }

    fn text(body: &str) -> wa::Message {
        wa::Message {
            conversation: Some(body.to_string()),
            ..Default::default()
        }
    }

    /// Through the same value the durability hook receives.
    fn map(message: wa::Message, info: MessageInfo) -> Option<WebInbound> {
        let inbound = InboundMessage::builder()
            .message(Arc::new(message))
            .info(Arc::new(info))
            .build();
        inbound_message(&inbound, &own())
    }

    #[test]
    fn text_message() {
        let sender = "4915112345678:3@s.whatsapp.net";
        let got = map(
            text("Hallo, habt ihr offen?"),
            info(CUSTOMER, sender, "3EB0A1"),
        )
        .unwrap();
        assert_eq!(
            got,
            WebInbound {
                id: "3EB0A1".to_string(),
                chat: CUSTOMER.to_string(),
                sender: CUSTOMER.to_string(),
                from_me: false,
                push_name: Some("Ana".to_string()),
                kind: MessageKind::Text,
                text: "Hallo, habt ihr offen?".to_string(),
                quoted: None,
                mentions_me: false,
                undecryptable: false,
                media: None,
            }
        );
    }

    #[test]
    fn extended_text_with_quote() {
        let message = wa::Message {
            extended_text_message: MessageField::some(wa::message::ExtendedTextMessage {
                text: Some("Ja, genau das".to_string()),
                context_info: MessageField::some(wa::ContextInfo {
                    stanza_id: Some("3EB0QUOTED".to_string()),
                    participant: Some("15550001111:12@s.whatsapp.net".to_string()),
                    quoted_message: MessageField::some(text("Möchten Sie den Termin um 10?")),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let got = map(message, info(CUSTOMER, CUSTOMER, "3EB0A2")).unwrap();
        assert_eq!(got.kind, MessageKind::Text);
        assert_eq!(got.text, "Ja, genau das");
        assert_eq!(
            got.quoted,
            Some(Quoted {
                id: Some("3EB0QUOTED".to_string()),
                sender: Some(ME_PN.to_string()),
                text: Some("Möchten Sie den Termin um 10?".to_string()),
            })
        );
        assert!(!got.mentions_me);
    }

    #[test]
    fn image_with_caption_and_without() {
        let image = |caption: Option<&str>| wa::Message {
            image_message: MessageField::some(wa::message::ImageMessage {
                caption: caption.map(str::to_string),
                mimetype: Some("image/jpeg".to_string()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let got = map(image(Some("Die Rechnung")), info(CUSTOMER, CUSTOMER, "I1")).unwrap();
        assert_eq!(
            (got.kind, got.text.as_str()),
            (MessageKind::Image, "Die Rechnung")
        );
        let got = map(image(None), info(CUSTOMER, CUSTOMER, "I2")).unwrap();
        assert_eq!(
            (got.kind, got.text.as_str()),
            (MessageKind::Image, "[image]")
        );
    }

    #[test]
    fn media_messages_carry_what_the_download_needs() {
        let voice = wa::Message {
            audio_message: MessageField::some(wa::message::AudioMessage {
                ptt: Some(true),
                mimetype: Some("audio/ogg; codecs=opus".to_string()),
                file_length: Some(4321),
                file_sha256: Some(vec![1; 32]),
                file_enc_sha256: Some(vec![2; 32]),
                media_key: Some(vec![3; 32]),
                direct_path: Some("/v/t62.7117-24/voice.enc".to_string()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let got = map(voice, info(CUSTOMER, CUSTOMER, "M1")).unwrap();
        assert_eq!(
            (got.kind, got.text.as_str()),
            (MessageKind::Audio, "[audio]")
        );
        assert_eq!(
            got.media,
            Some(WebMedia {
                kind: MessageKind::Audio,
                mime_type: "audio/ogg; codecs=opus".to_string(),
                size: Some(4321),
                sha256: Some(vec![1; 32]),
                filename: None,
                voice: true,
                locator: MediaLocator {
                    direct_path: Some("/v/t62.7117-24/voice.enc".to_string()),
                    static_url: None,
                    media_key: Some(vec![3; 32]),
                    file_enc_sha256: Some(vec![2; 32]),
                },
            })
        );
        // The key never shows in logs.
        assert!(!format!("{:?}", got.media).contains("3, 3"));

        let image = wa::Message {
            image_message: MessageField::some(wa::message::ImageMessage {
                caption: Some("Die Rechnung".to_string()),
                mimetype: Some("image/jpeg".to_string()),
                direct_path: Some("/v/image.enc".to_string()),
                media_key: Some(vec![4; 32]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let got = map(image, info(CUSTOMER, CUSTOMER, "M2")).unwrap();
        let media = got.media.unwrap();
        assert_eq!(
            (media.kind, media.mime_type.as_str(), media.voice),
            (MessageKind::Image, "image/jpeg", false)
        );
        assert_eq!(media.locator.direct_path.as_deref(), Some("/v/image.enc"));

        let sticker = wa::Message {
            sticker_message: MessageField::some(wa::message::StickerMessage {
                mimetype: Some("image/webp".to_string()),
                direct_path: Some("/v/sticker.enc".to_string()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let got = map(sticker, info(CUSTOMER, CUSTOMER, "M3")).unwrap();
        assert_eq!(got.media.map(|m| m.kind), Some(MessageKind::Sticker));

        // A document with a caption comes wrapped; its file name is kept.
        let document = wa::Message {
            document_with_caption_message: MessageField::some(wa::message::FutureProofMessage {
                message: MessageField::some(wa::Message {
                    document_message: MessageField::some(wa::message::DocumentMessage {
                        caption: Some("Anbei".to_string()),
                        file_name: Some("Rechnung.pdf".to_string()),
                        mimetype: Some("application/pdf".to_string()),
                        file_length: Some(99),
                        direct_path: Some("/v/doc.enc".to_string()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let got = map(document, info(CUSTOMER, CUSTOMER, "M4")).unwrap();
        assert_eq!(
            (got.kind, got.text.as_str()),
            (MessageKind::Document, "Anbei")
        );
        let media = got.media.unwrap();
        assert_eq!(media.filename.as_deref(), Some("Rechnung.pdf"));
        assert_eq!(media.size, Some(99));

        // Text and video carry no media to download.
        assert_eq!(
            map(text("hallo"), info(CUSTOMER, CUSTOMER, "M5"))
                .unwrap()
                .media,
            None
        );
        let video = wa::Message {
            video_message: MessageField::some(wa::message::VideoMessage::default()),
            ..Default::default()
        };
        assert_eq!(
            map(video, info(CUSTOMER, CUSTOMER, "M6")).unwrap().media,
            None
        );
    }

    #[test]
    fn group_message_from_participant_mentioning_us() {
        let mut i = info(GROUP, "4915112345678:2@s.whatsapp.net", "G1");
        i.push_name = "  ".to_string();
        let message = wa::Message {
            extended_text_message: MessageField::some(wa::message::ExtendedTextMessage {
                text: Some("@99887766554433 kannst du helfen?".to_string()),
                context_info: MessageField::some(wa::ContextInfo {
                    mentioned_jid: vec!["99887766554433@lid".to_string()],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let got = map(message, i).unwrap();
        assert_eq!(got.chat, GROUP);
        assert_eq!(got.sender, CUSTOMER);
        assert!(got.mentions_me);
        assert_eq!(got.push_name, None);

        // A mention of someone else is not a mention of us.
        let other = wa::Message {
            extended_text_message: MessageField::some(wa::message::ExtendedTextMessage {
                text: Some("@4917600000000".to_string()),
                context_info: MessageField::some(wa::ContextInfo {
                    mentioned_jid: vec!["4917600000000@s.whatsapp.net".to_string()],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(!map(other, info(GROUP, CUSTOMER, "G2")).unwrap().mentions_me);
    }

    #[test]
    fn from_me_through_device_sent_and_ephemeral_wrappers() {
        let mut i = info(CUSTOMER, "15550001111:0@s.whatsapp.net", "ME1");
        i.source.is_from_me = true;
        let message = wa::Message {
            device_sent_message: MessageField::some(wa::message::DeviceSentMessage {
                destination_jid: Some(CUSTOMER.to_string()),
                message: MessageField::some(wa::Message {
                    ephemeral_message: MessageField::some(wa::message::FutureProofMessage {
                        message: MessageField::some(text("Bin gleich da")),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let got = map(message, i).unwrap();
        assert!(got.from_me);
        assert_eq!(got.sender, ME_PN);
        assert_eq!(got.chat, CUSTOMER);
        assert_eq!(got.text, "Bin gleich da");
    }

    #[test]
    fn status_broadcast() {
        let message = wa::Message {
            video_message: MessageField::some(wa::message::VideoMessage {
                caption: Some("Neu im Laden".to_string()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let got = map(message, info("status@broadcast", CUSTOMER, "S1")).unwrap();
        assert_eq!(got.chat, "status@broadcast");
        assert_eq!(got.sender, CUSTOMER);
        assert_eq!(
            (got.kind, got.text.as_str()),
            (MessageKind::Video, "Neu im Laden")
        );
    }

    #[test]
    fn reaction_and_its_removal() {
        let reaction = |emoji: &str| wa::Message {
            reaction_message: MessageField::some(wa::message::ReactionMessage {
                key: MessageField::some(wa::MessageKey {
                    remote_jid: Some(CUSTOMER.to_string()),
                    from_me: Some(true),
                    id: Some("3EB0OURS".to_string()),
                    participant: None,
                }),
                text: Some(emoji.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let got = map(reaction("👍"), info(CUSTOMER, CUSTOMER, "R1")).unwrap();
        assert_eq!((got.kind, got.text.as_str()), (MessageKind::Reaction, "👍"));
        assert_eq!(got.quoted.unwrap().id.as_deref(), Some("3EB0OURS"));
        assert_eq!(map(reaction(""), info(CUSTOMER, CUSTOMER, "R2")), None);
    }

    #[test]
    fn audio_location_contacts_and_view_once() {
        let voice = wa::Message {
            audio_message: MessageField::some(wa::message::AudioMessage {
                ptt: Some(true),
                seconds: Some(4),
                ..Default::default()
            }),
            ..Default::default()
        };
        let got = map(voice, info(CUSTOMER, CUSTOMER, "A1")).unwrap();
        assert_eq!(
            (got.kind, got.text.as_str()),
            (MessageKind::Audio, "[audio]")
        );

        let location = wa::Message {
            location_message: MessageField::some(wa::message::LocationMessage {
                degrees_latitude: Some(52.52),
                degrees_longitude: Some(13.40),
                name: Some("Laden".to_string()),
                address: Some("Hauptstr. 1".to_string()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let got = map(location, info(CUSTOMER, CUSTOMER, "L1")).unwrap();
        assert_eq!(
            (got.kind, got.text.as_str()),
            (MessageKind::Location, "Laden, Hauptstr. 1")
        );

        let contacts = wa::Message {
            contacts_array_message: MessageField::some(wa::message::ContactsArrayMessage {
                contacts: vec![
                    wa::message::ContactMessage {
                        display_name: Some("Bea".to_string()),
                        ..Default::default()
                    },
                    wa::message::ContactMessage {
                        display_name: Some("Cem".to_string()),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        let got = map(contacts, info(CUSTOMER, CUSTOMER, "C1")).unwrap();
        assert_eq!(
            (got.kind, got.text.as_str()),
            (MessageKind::Contacts, "Bea, Cem")
        );

        let view_once = wa::Message {
            view_once_message_v2: MessageField::some(wa::message::FutureProofMessage {
                message: MessageField::some(wa::Message {
                    image_message: MessageField::some(wa::message::ImageMessage {
                        view_once: Some(true),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let got = map(view_once, info(CUSTOMER, CUSTOMER, "V1")).unwrap();
        assert_eq!(
            (got.kind, got.text.as_str()),
            (MessageKind::Image, "[image]")
        );
    }

    #[test]
    fn protocol_messages_edits_and_housekeeping_are_dropped() {
        let revoke = wa::Message {
            protocol_message: MessageField::some(wa::message::ProtocolMessage {
                r#type: Some(wa::message::protocol_message::Type::REVOKE),
                key: MessageField::some(wa::MessageKey {
                    id: Some("3EB0GONE".to_string()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(map(revoke, info(CUSTOMER, CUSTOMER, "P1")), None);

        let mut edit_info = info(CUSTOMER, CUSTOMER, "P2");
        edit_info.edit = EditAttribute::MessageEdit;
        assert_eq!(map(text("korrigiert"), edit_info), None);

        let key_only = wa::Message {
            sender_key_distribution_message: MessageField::some(
                wa::message::SenderKeyDistributionMessage::default(),
            ),
            message_context_info: MessageField::some(wa::MessageContextInfo::default()),
            ..Default::default()
        };
        assert_eq!(map(key_only, info(GROUP, CUSTOMER, "P3")), None);
        assert_eq!(
            map(wa::Message::default(), info(CUSTOMER, CUSTOMER, "P4")),
            None
        );

        // Unknown content is kept as Other.
        let poll = wa::Message {
            poll_creation_message_v3: MessageField::some(wa::message::PollCreationMessage {
                name: Some("Welcher Tag?".to_string()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let got = map(poll, info(CUSTOMER, CUSTOMER, "P5")).unwrap();
        assert_eq!(
            (got.kind, got.text.as_str()),
            (MessageKind::Other, "Welcher Tag?")
        );
        let order = wa::Message {
            order_message: MessageField::some(wa::message::OrderMessage::default()),
            ..Default::default()
        };
        let got = map(order, info(CUSTOMER, CUSTOMER, "P6")).unwrap();
        assert_eq!(
            (got.kind, got.text.as_str()),
            (MessageKind::Other, "[other]")
        );
    }

    #[test]
    fn undecryptable_message() {
        let mut i = info(GROUP, "4915112345678:5@s.whatsapp.net", "U1");
        i.r#type = "media".to_string();
        i.media_type = "image".to_string();
        let event = UndecryptableMessage::builder()
            .info(Arc::new(i.clone()))
            .is_unavailable(false)
            .unavailable_type(UnavailableType::Unknown)
            .decrypt_fail_mode(DecryptFailMode::Show)
            .build();
        let got = undecryptable(&event).unwrap();
        assert_eq!(got.id, "U1");
        assert_eq!(got.chat, GROUP);
        assert_eq!(got.sender, CUSTOMER);
        assert_eq!(got.kind, MessageKind::Image);
        assert_eq!(got.text, "[undecryptable]");
        assert!(got.undecryptable);

        let hidden = UndecryptableMessage::builder()
            .info(Arc::new(i))
            .is_unavailable(false)
            .unavailable_type(UnavailableType::Unknown)
            .decrypt_fail_mode(DecryptFailMode::Hide)
            .build();
        assert_eq!(undecryptable(&hidden), None);
    }

    fn receipt_event(kind: ReceiptType) -> Event {
        Event::Receipt(
            Receipt::builder()
                .source(MessageSource {
                    chat: "4915112345678:1@s.whatsapp.net".parse().unwrap(),
                    sender: "4915112345678:1@s.whatsapp.net".parse().unwrap(),
                    ..Default::default()
                })
                .message_ids(vec!["3EB0X".to_string(), "3EB0Y".to_string()])
                .timestamp(Utc::now())
                .r#type(kind)
                .offline(false)
                .build(),
        )
    }

    #[test]
    fn delivery_and_read_receipts() {
        let expect = |status| WebEvent::Receipt {
            chat: CUSTOMER.to_string(),
            ids: vec!["3EB0X".to_string(), "3EB0Y".to_string()],
            status,
        };
        assert_eq!(
            event(&receipt_event(ReceiptType::Delivered)),
            Some(expect(DeliveryStatus::Delivered))
        );
        assert_eq!(
            event(&receipt_event(ReceiptType::Read)),
            Some(expect(DeliveryStatus::Read))
        );
        assert_eq!(
            event(&receipt_event(ReceiptType::Played)),
            Some(expect(DeliveryStatus::Read))
        );
        assert_eq!(event(&receipt_event(ReceiptType::Retry)), None);
        assert_eq!(event(&receipt_event(ReceiptType::Sender)), None);
    }

    #[test]
    fn connection_events() {
        let qr = Event::PairingQrCode(
            PairingQrCode::builder()
                .code("2@abc,def,ghi".to_string())
                .timeout(Duration::from_secs(60))
                .build(),
        );
        assert_eq!(
            event(&qr),
            Some(WebEvent::Qr {
                code: "2@abc,def,ghi".to_string(),
                valid_for: Duration::from_secs(60)
            })
        );

        let logged_out = Event::LoggedOut(
            LoggedOut::builder()
                .on_connect(false)
                .reason(ConnectFailureReason::LoggedOut)
                .build(),
        );
        match event(&logged_out) {
            Some(WebEvent::LoggedOut { reason }) => assert!(reason.contains("401"), "{reason}"),
            other => panic!("{other:?}"),
        }

        let ban = Event::TemporaryBan(
            TemporaryBan::builder()
                .code(TempBanReason::SentToTooManyPeople)
                .expire(chrono::Duration::hours(2))
                .build(),
        );
        match event(&ban) {
            Some(WebEvent::TemporarilyBanned { reason, expires_in }) => {
                assert!(reason.starts_with("101"), "{reason}");
                assert_eq!(expires_in, Some(Duration::from_secs(7200)));
            }
            other => panic!("{other:?}"),
        }

        assert_eq!(
            event(&Event::StreamReplaced(StreamReplaced::builder().build())),
            Some(WebEvent::StreamReplaced)
        );
        assert_eq!(
            event(&Event::Connected(Connected::builder().build())),
            Some(WebEvent::Connected)
        );

        let exhausted = |disconnected| {
            Event::PairingQrCodesExhausted(
                PairingQrCodesExhausted::builder()
                    .disconnected(disconnected)
                    .build(),
            )
        };
        assert!(matches!(
            event(&exhausted(true)),
            Some(WebEvent::PairError { .. })
        ));
        // A pair code is still on its way.
        assert_eq!(event(&exhausted(false)), None);
    }
}
