//! The AI settings of one configuration layer (global or one account), the patch that changes
//! them, and the pure decision that turns a patch into events. Both the global aggregate and the
//! account aggregate hold a [`LayerState`] and delegate to [`decide`] / [`LayerState::apply`].

use serde::{Deserialize, Deserializer, Serialize};

pub use crate::hours::BusinessHours;
use crate::DomainError;

/// Longest system prompt accepted (32 KiB).
pub const MAX_PROMPT_BYTES: usize = 32 * 1024;
/// Longest model name accepted.
pub const MAX_MODEL_NAME: usize = 200;
/// Longest base URL accepted.
pub const MAX_URL: usize = 2048;

/// Conversation-control limits (ADR 0007). Values outside them are refused with a 400 naming
/// the field: they are typos, not settings (a week of takeover, an hour of debounce).
pub const MAX_TAKEOVER_MINUTES: u32 = 7 * 24 * 60;
pub const MAX_DEBOUNCE_SECONDS: u32 = 3600;
pub const MAX_REPLIES_PER_HOUR: u32 = 1000;
pub const MAX_DAILY_TOKEN_BUDGET: u64 = 1_000_000_000;
pub const MAX_HISTORY_TOKENS: u32 = 1_000_000;
pub const MAX_HISTORY_WINDOW_HOURS: u32 = 24 * 365;
pub const MAX_RETRIES: u32 = 10;
/// Longest handoff or away message (a WhatsApp text is at most 4,096 characters).
pub const MAX_NOTICE_BYTES: usize = 4096;
/// The trigger modes (`trigger`).
pub const TRIGGERS: &[&str] = &["always", "keywords", "mention"];
/// How a plain trigger keyword matches (`trigger_match`); `/…/` entries are regexes.
pub const TRIGGER_MATCHES: &[&str] = &["contains", "word", "exact", "prefix"];
/// What happens to a message outside business hours (`outside_hours`).
pub const OUTSIDE_HOURS: &[&str] = &["reply", "silent", "away_message"];

/// How a setting is typed and checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// On or off.
    Bool,
    /// A non-empty name (a model's): at most `max` bytes, no NUL.
    Name {
        max: usize,
    },
    /// A free text that may be empty (a prompt): at most `max` bytes, no NUL.
    Prompt {
        max: usize,
    },
    /// An absolute http(s) URL without credentials, query or fragment (normalized when set).
    Url,
    Float {
        min: f64,
        max: f64,
    },
    U32 {
        min: u32,
        max: u32,
    },
    U64 {
        min: u64,
        max: u64,
    },
    /// One of a fixed list of names.
    Choice {
        options: &'static [&'static str],
    },
    /// A list of keywords (`/…/` entries are regular expressions), checked by
    /// [`crate::matcher::Matcher::check`].
    Keywords,
    /// A time zone and weekly opening ranges ([`BusinessHours`]).
    Hours,
}

/// Where a setting sits on the dashboard's form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// The model and when to reply.
    Reply,
    /// Conversation control (ADR 0007): takeover, debounce, limits, history, retries, fallback.
    Control,
    /// When the AI speaks: triggers, handoff to a human, business hours.
    Speak,
}

/// A setting's built-in default: what applies when no layer (env, global, account, chat) sets it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Builtin {
    /// No default: unset means "none" (no fallback model, for instance).
    None,
    Bool(bool),
    U32(u32),
    U64(u64),
    Float(f64),
    Text(&'static str),
}

/// One AI setting, as declared in the table [`FIELDS`]: everything else about the setting — the
/// stored struct, the patch, the validation, the API's schema, the dashboard's form, the
/// resolver's default — follows from it.
#[derive(Debug, Clone, Copy)]
pub struct FieldSpec {
    pub field: AiField,
    /// The name in the API, the events and the forms.
    pub name: &'static str,
    /// The dashboard's label.
    pub label: &'static str,
    pub kind: Kind,
    pub default: Builtin,
    /// Whether a chat may set it for itself (the conversation controls of `ChatControls`); the
    /// account and global layers set every setting, the env layer `base_url` and `model_name`.
    pub chat: bool,
    pub group: Group,
    /// What the setting does (the API's description, the dashboard's help).
    pub help: &'static str,
}

impl FieldSpec {
    /// The setting named `name`, if there is one.
    pub fn named(name: &str) -> Option<&'static FieldSpec> {
        FIELDS.iter().find(|f| f.name == name)
    }

    /// The setting's declaration.
    pub fn of(field: AiField) -> &'static FieldSpec {
        // The table lists every field, in the enum's order.
        &FIELDS[field as usize]
    }
}

/// A setting's value, whatever its type (serialized as the bare value).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    U32(u32),
    U64(u64),
    Float(f64),
    Text(String),
    List(Vec<String>),
    Hours(BusinessHours),
}

impl Value {
    /// The value as a form or a log shows it.
    pub fn display(&self) -> String {
        match self {
            Value::Bool(b) => b.to_string(),
            Value::U32(v) => v.to_string(),
            Value::U64(v) => v.to_string(),
            Value::Float(v) => v.to_string(),
            Value::Text(t) => t.clone(),
            Value::List(items) => items.join(", "),
            Value::Hours(h) => h.to_string(),
        }
    }
}

impl Builtin {
    pub fn value(self) -> Option<Value> {
        match self {
            Builtin::None => None,
            Builtin::Bool(b) => Some(Value::Bool(b)),
            Builtin::U32(v) => Some(Value::U32(v)),
            Builtin::U64(v) => Some(Value::U64(v)),
            Builtin::Float(v) => Some(Value::Float(v)),
            Builtin::Text(t) => Some(Value::Text(t.to_string())),
        }
    }
}

/// The Rust types settings have, and their [`Value`]s.
pub trait SettingValue: Sized + Clone + PartialEq {
    fn into_value(self) -> Value;
    fn from_value(v: Value) -> Option<Self>;
}

macro_rules! setting_value {
    ($ty:ty, $variant:ident) => {
        impl SettingValue for $ty {
            fn into_value(self) -> Value {
                Value::$variant(self)
            }
            fn from_value(v: Value) -> Option<Self> {
                match v {
                    Value::$variant(x) => Some(x),
                    _ => None,
                }
            }
        }
    };
}
setting_value!(bool, Bool);
setting_value!(u32, U32);
setting_value!(u64, U64);
setting_value!(f64, Float);
setting_value!(String, Text);
setting_value!(Vec<String>, List);
setting_value!(BusinessHours, Hours);

/// The built-in default of a setting, typed (`None` for a setting without one, or asked as the
/// wrong type).
pub fn default_of<T: SettingValue>(field: AiField) -> Option<T> {
    FieldSpec::of(field).default.value().and_then(T::from_value)
}

/// Declares the AI settings once: from each row come the field of [`AiSettings`] (a layer's
/// values), the variant of [`AiField`] (the name in events), the field of [`AiSettingsPatch`], and
/// the row of [`FIELDS`] (kind and range, default, chat layer, form group, label, help).
macro_rules! ai_settings {
    ($(
        $f:ident / $variant:ident : $ty:ty {
            kind: $kind:expr,
            default: $default:expr,
            chat: $chat:literal,
            group: $group:ident,
            label: $label:literal,
            help: $help:literal $(,)?
        }
    )*) => {
        /// The values one layer sets. `None` means "this layer does not set it" (inherit).
        #[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct AiSettings {
            $(
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $f: Option<$ty>,
            )*
        }

        /// The name of one AI setting, as it appears in the API and in `cleared` lists of events.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum AiField {
            $( $variant, )*
        }

        /// The one table of AI settings, in the order of [`AiField`].
        pub const FIELDS: &[FieldSpec] = &[
            $(
                FieldSpec {
                    field: AiField::$variant,
                    name: stringify!($f),
                    label: $label,
                    kind: $kind,
                    default: $default,
                    chat: $chat,
                    group: Group::$group,
                    help: $help,
                },
            )*
        ];

        /// A patch of one layer's AI settings, validated by [`decide`]. `K` is the form of a key:
        /// the plain text in a request, a [`SealedKey`] in the domain (the caller seals it).
        /// Deserializes strictly (unknown fields refused): absent keeps, `null` clears.
        #[derive(Debug, Clone, PartialEq, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct AiSettingsPatch<K = SealedKey> {
            $(
                #[serde(default)]
                pub $f: Patch<$ty>,
            )*
            #[serde(default)]
            pub api_key: Patch<K>,
            /// The fallback model's own key, for the origin of the fallback base URL.
            #[serde(default)]
            pub fallback_api_key: Patch<K>,
        }

        impl<K> Default for AiSettingsPatch<K> {
            fn default() -> Self {
                Self {
                    $( $f: Patch::Keep, )*
                    api_key: Patch::Keep,
                    fallback_api_key: Patch::Keep,
                }
            }
        }

        impl AiSettings {
            /// The value this layer sets for `field`, if any.
            pub fn get(&self, field: AiField) -> Option<Value> {
                match field {
                    $( AiField::$variant => self.$f.clone().map(SettingValue::into_value), )*
                }
            }

            /// Sets (or, with `None` or a value of another type, unsets) `field`.
            pub fn set(&mut self, field: AiField, value: Option<Value>) {
                match field {
                    $( AiField::$variant => self.$f = value.and_then(SettingValue::from_value), )*
                }
            }
        }

        impl<K> AiSettingsPatch<K> {
            /// The change to `field`.
            pub fn get(&self, field: AiField) -> Patch<Value> {
                match field {
                    $( AiField::$variant => self.$f.clone().map(SettingValue::into_value), )*
                }
            }

            /// Replaces the change to `field` (a value of another type keeps the field).
            pub fn set(&mut self, field: AiField, patch: Patch<Value>) {
                match field {
                    $(
                        AiField::$variant => {
                            self.$f = match patch {
                                Patch::Keep => Patch::Keep,
                                Patch::Clear => Patch::Clear,
                                Patch::Set(v) => match SettingValue::from_value(v) {
                                    Some(v) => Patch::Set(v),
                                    None => Patch::Keep,
                                },
                            }
                        }
                    )*
                }
            }

            /// The same settings changes with the keys in another form (sealed by the caller).
            pub fn with_keys<K2>(
                self,
                api_key: Patch<K2>,
                fallback_api_key: Patch<K2>,
            ) -> AiSettingsPatch<K2> {
                AiSettingsPatch {
                    $( $f: self.$f, )*
                    api_key,
                    fallback_api_key,
                }
            }
        }
    };
}

ai_settings! {
    enabled / Enabled: bool {
        kind: Kind::Bool, default: Builtin::Bool(false), chat: false, group: Reply,
        label: "AI auto-reply enabled",
        help: "Whether the AI answers at all (a chat's mode can still turn it on or off there).",
    }
    base_url / BaseUrl: String {
        kind: Kind::Url, default: Builtin::Text("https://api.openai.com/v1"), chat: false,
        group: Reply,
        label: "Base URL (OpenAI-compatible API)",
        help: "Absolute http(s) URL of an OpenAI-compatible API (without `/chat/completions`). \
               A key follows its origin: a base URL on another origin needs its own key.",
    }
    model_name / ModelName: String {
        kind: Kind::Name { max: MAX_MODEL_NAME }, default: Builtin::Text("gpt-4.1-mini"),
        chat: false, group: Reply,
        label: "Model",
        help: "The model asked for replies.",
    }
    default_system_prompt / DefaultSystemPrompt: String {
        kind: Kind::Prompt { max: MAX_PROMPT_BYTES },
        default: Builtin::Text("You are a helpful WhatsApp assistant."), chat: false, group: Reply,
        label: "Default system prompt",
        help: "The system prompt of every chat without a custom prompt of its own.",
    }
    temperature / Temperature: f64 {
        kind: Kind::Float { min: 0.0, max: 2.0 }, default: Builtin::Float(0.3), chat: false,
        group: Reply,
        label: "Temperature (0–2)",
        help: "Sampling temperature, 0..=2.",
    }
    max_tokens / MaxTokens: u32 {
        kind: Kind::U32 { min: 1, max: 32_768 }, default: Builtin::U32(700), chat: false,
        group: Reply,
        label: "Max tokens (1–32768)",
        help: "Longest answer, in model tokens, 1..=32768.",
    }
    timeout_seconds / TimeoutSeconds: u32 {
        kind: Kind::U32 { min: 1, max: 600 }, default: Builtin::U32(60), chat: false, group: Reply,
        label: "Timeout, seconds (1–600)",
        help: "How long one model call may take, 1..=600 seconds.",
    }
    reply_delay_seconds / ReplyDelaySeconds: u32 {
        kind: Kind::U32 { min: 0, max: 3600 }, default: Builtin::U32(2), chat: false, group: Reply,
        label: "Reply delay, seconds (0–3600)",
        help: "The wait between the model's answer and sending it, 0..=3600 seconds.",
    }
    reply_to_private / ReplyToPrivate: bool {
        kind: Kind::Bool, default: Builtin::Bool(true), chat: false, group: Reply,
        label: "Reply in private chats",
        help: "Answer one-to-one chats.",
    }
    reply_to_groups / ReplyToGroups: bool {
        kind: Kind::Bool, default: Builtin::Bool(false), chat: false, group: Reply,
        label: "Reply in groups",
        help: "Answer group chats.",
    }
    reply_to_channels / ReplyToChannels: bool {
        kind: Kind::Bool, default: Builtin::Bool(false), chat: false, group: Reply,
        label: "Reply in channels",
        help: "Answer channels (newsletters).",
    }
    echo_mode / EchoMode: bool {
        kind: Kind::Bool, default: Builtin::Bool(false), chat: false, group: Reply,
        label: "Echo mode (reply with the incoming text, no model call)",
        help: "Reply with the incoming text itself, without calling the model (tests the send \
               path).",
    }
    human_takeover_minutes / HumanTakeoverMinutes: u32 {
        kind: Kind::U32 { min: 0, max: MAX_TAKEOVER_MINUTES }, default: Builtin::U32(30),
        chat: true, group: Control,
        label: "Human takeover, minutes (0–10080)",
        help: "When a person answers in a chat (a send from the dashboard or the API, or the \
               owner typing on the phone), the AI stays quiet there for this long. 0 = never \
               step back. Resume early from the chat page.",
    }
    debounce_seconds / DebounceSeconds: u32 {
        kind: Kind::U32 { min: 0, max: MAX_DEBOUNCE_SECONDS }, default: Builtin::U32(0),
        chat: true, group: Control,
        label: "Burst debounce, seconds (0–3600)",
        help: "Customer messages arriving within this window get one reply that answers all of \
               them; each new message restarts the window. 0 = off.",
    }
    max_replies_per_chat_per_hour / MaxRepliesPerChatPerHour: u32 {
        kind: Kind::U32 { min: 0, max: MAX_REPLIES_PER_HOUR }, default: Builtin::U32(30),
        chat: true, group: Control,
        label: "Max AI replies per chat per hour (0–1000)",
        help: "Over the cap a reply is skipped (logged and sent to webhooks as \
               ai.reply.skipped). 0 = no cap.",
    }
    daily_token_budget / DailyTokenBudget: u64 {
        kind: Kind::U64 { min: 0, max: MAX_DAILY_TOKEN_BUDGET }, default: Builtin::U64(0),
        chat: false, group: Control,
        label: "Daily token budget per account (0–1000000000)",
        help: "Model tokens an account may use per UTC day, counted from the usage the model \
               reports. Once used up, replies are skipped until midnight UTC. 0 = no budget.",
    }
    max_history_tokens / MaxHistoryTokens: u32 {
        kind: Kind::U32 { min: 0, max: MAX_HISTORY_TOKENS }, default: Builtin::U32(4000),
        chat: true, group: Control,
        label: "History budget, estimated tokens (0–1000000)",
        help: "The prompt keeps the newest messages (at most 20) that fit, estimating a message \
               as its characters / 4 (rounded up) + 4 tokens. 0 = only the 20-message cap.",
    }
    history_window_hours / HistoryWindowHours: u32 {
        kind: Kind::U32 { min: 0, max: MAX_HISTORY_WINDOW_HOURS }, default: Builtin::U32(0),
        chat: true, group: Control,
        label: "History window, hours (0–8760)",
        help: "Messages older than this stay out of the prompt. 0 = no window.",
    }
    max_retries / MaxRetries: u32 {
        kind: Kind::U32 { min: 0, max: MAX_RETRIES }, default: Builtin::U32(2), chat: true,
        group: Control,
        label: "Retries of a failed model call (0–10)",
        help: "A timeout, 429 or 5xx is retried with backoff this many times before the \
               fallback model (if any) is asked.",
    }
    fallback_model_name / FallbackModelName: String {
        kind: Kind::Name { max: MAX_MODEL_NAME }, default: Builtin::None, chat: false,
        group: Control,
        label: "Fallback model",
        help: "Answers when the main model still fails after the retries. Unset = no fallback.",
    }
    fallback_base_url / FallbackBaseUrl: String {
        kind: Kind::Url, default: Builtin::None, chat: false, group: Control,
        label: "Fallback base URL",
        help: "Where the fallback model is served; unset = the main base URL. A different \
               origin needs its own fallback API key.",
    }
    loop_guard_quick_seconds / LoopGuardQuickSeconds: u32 {
        kind: Kind::U32 { min: 0, max: 60 }, default: Builtin::U32(2), chat: true,
        group: Control,
        label: "Bot loop: quick answer, seconds (0–60)",
        help: "A message arriving within this many seconds of our reply is a quick answer; \
               loop_guard_quick_replies of them in a row look like another bot and the next reply \
               is skipped (bot_loop). 0 = off.",
    }
    loop_guard_quick_replies / LoopGuardQuickReplies: u32 {
        kind: Kind::U32 { min: 2, max: 10 }, default: Builtin::U32(5), chat: true,
        group: Control,
        label: "Bot loop: quick answers in a row (2–10)",
        help: "How many of our replies in a row answered within loop_guard_quick_seconds make a \
               bot loop.",
    }
    loop_guard_repeats / LoopGuardRepeats: u32 {
        kind: Kind::U32 { min: 0, max: 20 }, default: Builtin::U32(4), chat: true,
        group: Control,
        label: "Bot loop: the same message in a row (0–20)",
        help: "The same message this many times in a row looks like another bot. 0 or 1 = off. \
               Our own reply coming back as a message is a bot loop at once.",
    }
    max_message_chars / MaxMessageChars: u32 {
        kind: Kind::U32 { min: 0, max: 4096 }, default: Builtin::U32(0), chat: true,
        group: Reply,
        label: "Split replies longer than, characters (0–4096)",
        help: "A longer reply is sent as several messages, cut at paragraphs, then sentences, \
               each with its own typing indicator. 0 = one message (WhatsApp's limit of 4,096 \
               characters always applies).",
    }
    trigger / Trigger: String {
        kind: Kind::Choice { options: TRIGGERS }, default: Builtin::Text("always"), chat: true,
        group: Speak,
        label: "Trigger (always, keywords, mention)",
        help: "always: every message is answered. keywords: only a message matching \
               trigger_keywords, then every message for trigger_window_minutes. mention: in \
               groups only a message that mentions the account or replies to it (private chats \
               are always answered).",
    }
    trigger_keywords / TriggerKeywords: Vec<String> {
        kind: Kind::Keywords, default: Builtin::None, chat: true, group: Speak,
        label: "Trigger keywords",
        help: "Words or phrases that start a conversation when trigger is keywords, matched as \
               trigger_match says, ignoring case; an entry written /…/ is a regular expression.",
    }
    trigger_match / TriggerMatch: String {
        kind: Kind::Choice { options: TRIGGER_MATCHES }, default: Builtin::Text("contains"),
        chat: true, group: Speak,
        label: "Keyword match (contains, word, exact, prefix)",
        help: "contains: anywhere in the message; word: as whole words; exact: the whole \
               message; prefix: at its start.",
    }
    trigger_window_minutes / TriggerWindowMinutes: u32 {
        kind: Kind::U32 { min: 0, max: 1440 }, default: Builtin::U32(10), chat: true,
        group: Speak,
        label: "Stay in the conversation, minutes (0–1440)",
        help: "After a keyword matched, the AI answers every message of the chat for this long \
               (each answered message extends it). 0 = only matching messages.",
    }
    handoff_keywords / HandoffKeywords: Vec<String> {
        kind: Kind::Keywords, default: Builtin::None, chat: true, group: Speak,
        label: "Handoff keywords",
        help: "A customer message with one of these words (whole words, ignoring case; /…/ for \
               a regular expression) pauses the AI in the chat as a human takeover would, sends \
               handoff_message and emits ai.handoff.requested.",
    }
    handoff_message / HandoffMessage: String {
        kind: Kind::Prompt { max: MAX_NOTICE_BYTES }, default: Builtin::None, chat: true,
        group: Speak,
        label: "Handoff message",
        help: "Sent to the customer when the chat is handed to a human. Empty = none.",
    }
    handoff_tool / HandoffTool: bool {
        kind: Kind::Bool, default: Builtin::Bool(false), chat: true, group: Speak,
        label: "Let the model hand off (handoff_to_human tool)",
        help: "Offer the model a handoff_to_human function; when it calls it, the chat is handed \
               to a human as a handoff keyword would.",
    }
    business_hours / BusinessHours: BusinessHours {
        kind: Kind::Hours, default: Builtin::None, chat: true, group: Speak,
        label: "Business hours",
        help: "A time zone and weekly ranges, e.g. {\"time_zone\": \"Europe/Lisbon\", \
               \"ranges\": [{\"days\": \"mon-fri\", \"open\": \"09:00\", \"close\": \
               \"18:00\"}]}. Unset = always open.",
    }
    outside_hours / OutsideHours: String {
        kind: Kind::Choice { options: OUTSIDE_HOURS }, default: Builtin::Text("reply"),
        chat: true, group: Speak,
        label: "Outside business hours (reply, silent, away_message)",
        help: "reply: answer as usual; silent: no answer; away_message: send away_message, at \
               most once per chat per closed period.",
    }
    away_message / AwayMessage: String {
        kind: Kind::Prompt { max: MAX_NOTICE_BYTES }, default: Builtin::None, chat: true,
        group: Speak,
        label: "Away message",
        help: "Sent outside business hours when outside_hours is away_message.",
    }
    transcription_model / TranscriptionModel: String {
        kind: Kind::Name { max: MAX_MODEL_NAME }, default: Builtin::None, chat: false,
        group: Reply,
        label: "Transcription model (voice notes)",
        help: "The model that transcribes a customer's voice note or audio (POST \
               {base_url}/audio/transcriptions, e.g. whisper-1); the model answers the \
               transcript. Unset = off: an audio message's reply is skipped (transcription_off).",
    }
    vision / Vision: bool {
        kind: Kind::Bool, default: Builtin::Bool(false), chat: false, group: Reply,
        label: "Vision (send images to the model)",
        help: "Send a customer's image or sticker to the model as an image_url part with its \
               caption (the model must accept images). Off: the model sees the caption alone. \
               An image counts 765 estimated tokens in the history budget.",
    }
    format_for_whatsapp / FormatForWhatsapp: bool {
        kind: Kind::Bool, default: Builtin::Bool(true), chat: true, group: Reply,
        label: "Format replies for WhatsApp",
        help: "Turn the model's Markdown into WhatsApp's markup: *bold*, _italic_, ~strike~, \
               monospace blocks and lists; headings as bold lines, links as text (url), tables \
               as one line per row.",
    }
}

/// Business hours as a form or a log shows them: `Europe/Lisbon: mon-fri 09:00-18:00, sat
/// 10:00-13:00`.
impl std::fmt::Display for BusinessHours {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:", self.time_zone)?;
        for (i, r) in self.ranges.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            write!(f, "{sep}{} {}-{}", r.days, r.open, r.close)?;
        }
        Ok(())
    }
}

/// A change to one field: leave it, clear it (JSON `null`), or set it.
///
/// Deserializes from an optional field: absent -> `Keep` (needs `#[serde(default)]`),
/// `null` -> `Clear`, a value -> `Set`.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Patch<T> {
    #[default]
    Keep,
    Clear,
    Set(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(d)? {
            None => Patch::Clear,
            Some(v) => Patch::Set(v),
        })
    }
}

impl<T> Patch<T> {
    pub fn is_keep(&self) -> bool {
        matches!(self, Patch::Keep)
    }

    /// The same change with the value converted.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Patch<U> {
        match self {
            Patch::Keep => Patch::Keep,
            Patch::Clear => Patch::Clear,
            Patch::Set(v) => Patch::Set(f(v)),
        }
    }
}

/// An API key sealed by the gateway's keyring (base64 of version || key id || nonce ||
/// ciphertext) together with the origin (`scheme://host[:port]`) of the base URL it was entered
/// for. The plain key never reaches the domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedKey {
    pub sealed: String,
    pub origin: String,
}

/// Why a stored key was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyClearReason {
    /// `"api_key": null` in a request.
    Requested,
    /// `base_url` moved to another origin without a new key (checklist item 10).
    BaseUrlOriginChanged,
}

/// The events a settings change produces, shared by the global and account aggregates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
// Events are decided and folded one at a time; their size is not worth a box (and the serialized
// form must stay the same).
#[allow(clippy::large_enum_variant)]
pub enum SettingsEvent {
    /// Fields set to new values (`set`) and fields removed from this layer (`cleared`).
    AiSettingsChanged {
        set: AiSettings,
        cleared: Vec<AiField>,
    },
    AiApiKeySet {
        key: SealedKey,
    },
    AiApiKeyCleared {
        reason: KeyClearReason,
    },
    /// The same key re-encrypted under the current master key (key rotation).
    AiApiKeyResealed {
        key: SealedKey,
    },
    /// The fallback model's key (ADR 0007); it follows `fallback_base_url`'s origin as the main
    /// key follows `base_url`'s.
    AiFallbackApiKeySet {
        key: SealedKey,
    },
    AiFallbackApiKeyCleared {
        reason: KeyClearReason,
    },
    AiFallbackApiKeyResealed {
        key: SealedKey,
    },
}

/// One layer's state: its settings and its sealed key.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LayerState {
    pub settings: AiSettings,
    pub api_key: Option<SealedKey>,
    #[serde(default)]
    pub fallback_api_key: Option<SealedKey>,
}

/// `scheme://host[:port]` of an absolute http(s) URL, or `None` when it is not one.
pub fn origin_of(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    match parsed.scheme() {
        "http" | "https" => {}
        _ => return None,
    }
    let host = parsed.host_str()?;
    Some(match parsed.port() {
        Some(port) => format!("{}://{}:{}", parsed.scheme(), host, port),
        None => format!("{}://{}", parsed.scheme(), host),
    })
}

/// Validates and normalizes a model base URL (absolute http(s), no credentials, no query or
/// fragment; a trailing `/` is dropped).
pub fn normalize_base_url(raw: &str) -> Result<String, DomainError> {
    let field = "base_url";
    if raw.len() > MAX_URL {
        return Err(DomainError::invalid(field, "longer than 2048 characters"));
    }
    let url = url::Url::parse(raw.trim())
        .map_err(|e| DomainError::invalid(field, format!("not an absolute URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(DomainError::invalid(field, "scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(DomainError::invalid(field, "URL has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(DomainError::invalid(
            field,
            "credentials in the URL are not allowed; use api_key",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(DomainError::invalid(
            field,
            "query strings and fragments are not allowed",
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

fn check_range<T: PartialOrd + std::fmt::Display + Copy>(
    field: &'static str,
    v: T,
    lo: T,
    hi: T,
) -> Result<(), DomainError> {
    if v < lo || v > hi {
        return Err(DomainError::invalid(
            field,
            format!("must be between {lo} and {hi}, got {v}"),
        ));
    }
    Ok(())
}

fn check_text(
    field: &'static str,
    v: &str,
    max: usize,
    allow_empty: bool,
) -> Result<(), DomainError> {
    if !allow_empty && v.trim().is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    if v.len() > max {
        return Err(DomainError::invalid(
            field,
            format!("longer than {max} bytes"),
        ));
    }
    if v.contains('\0') {
        return Err(DomainError::invalid(
            field,
            "must not contain NUL characters",
        ));
    }
    Ok(())
}

/// Checks one value against its setting's kind; returns it normalized (a URL without its
/// trailing `/`).
fn check_value(spec: &FieldSpec, value: Value) -> Result<Value, DomainError> {
    let field = spec.name;
    match (spec.kind, value) {
        (Kind::Url, Value::Text(url)) => {
            normalize_base_url(&url)
                .map(Value::Text)
                .map_err(|e| match e {
                    DomainError::Invalid { message, .. } => DomainError::invalid(field, message),
                    other => other,
                })
        }
        (Kind::Name { max }, Value::Text(v)) => {
            check_text(field, &v, max, false).map(|_| Value::Text(v))
        }
        (Kind::Prompt { max }, Value::Text(v)) => {
            check_text(field, &v, max, true).map(|_| Value::Text(v))
        }
        (Kind::Float { min, max }, Value::Float(v)) => {
            if !v.is_finite() {
                return Err(DomainError::invalid(field, "must be a number"));
            }
            check_range(field, v, min, max).map(|_| Value::Float(v))
        }
        (Kind::U32 { min, max }, Value::U32(v)) => {
            check_range(field, v, min, max).map(|_| Value::U32(v))
        }
        (Kind::U64 { min, max }, Value::U64(v)) => {
            check_range(field, v, min, max).map(|_| Value::U64(v))
        }
        (Kind::Bool, v @ Value::Bool(_)) => Ok(v),
        (Kind::Choice { options }, Value::Text(v)) => {
            if options.contains(&v.as_str()) {
                Ok(Value::Text(v))
            } else {
                Err(DomainError::invalid(
                    field,
                    format!("must be one of {}, got {v:?}", options.join(", ")),
                ))
            }
        }
        (Kind::Keywords, Value::List(v)) => crate::matcher::Matcher::check(&v)
            .map(|_| Value::List(v))
            .map_err(|message| DomainError::invalid(field, message)),
        (Kind::Hours, Value::Hours(h)) => {
            h.validate().map(|_| Value::Hours(h)).map_err(|e| match e {
                DomainError::Invalid { message, .. } => DomainError::invalid(field, message),
                other => other,
            })
        }
        (_, _) => Err(DomainError::invalid(field, "has the wrong type")),
    }
}

/// Validates a patch in isolation (ranges, URL syntax, lengths), each field by its kind in
/// [`FIELDS`]. Returns the patch with the URLs normalized.
pub fn validate<K>(mut patch: AiSettingsPatch<K>) -> Result<AiSettingsPatch<K>, DomainError> {
    for spec in FIELDS {
        if let Patch::Set(v) = patch.get(spec.field) {
            let checked = check_value(spec, v)?;
            patch.set(spec.field, Patch::Set(checked));
        }
    }
    Ok(patch)
}

/// Decides the events for a settings patch on a layer: only real changes become events (a PUT
/// that changes nothing writes nothing). The key follows its origin: when this layer's
/// `base_url` moves to another origin and the same patch brings no new key, the key is cleared.
pub fn decide(
    state: &LayerState,
    patch: AiSettingsPatch,
) -> Result<Vec<SettingsEvent>, DomainError> {
    let patch = validate(patch)?;
    let cur = &state.settings;
    let mut set = AiSettings::default();
    let mut cleared = Vec::new();
    for spec in FIELDS {
        match patch.get(spec.field) {
            Patch::Keep => {}
            Patch::Clear => {
                if cur.get(spec.field).is_some() {
                    cleared.push(spec.field);
                }
            }
            Patch::Set(v) => {
                if cur.get(spec.field).as_ref() != Some(&v) {
                    set.set(spec.field, Some(v));
                }
            }
        }
    }

    let mut events = Vec::new();
    if set != AiSettings::default() || !cleared.is_empty() {
        events.push(SettingsEvent::AiSettingsChanged { set, cleared });
    }

    let main = key_change(
        state.api_key.as_ref(),
        patch.api_key,
        cur.base_url.as_deref(),
        &patch.base_url,
    );
    events.extend(main.map(|c| match c {
        KeyChange::Set(key) => SettingsEvent::AiApiKeySet { key },
        KeyChange::Cleared(reason) => SettingsEvent::AiApiKeyCleared { reason },
    }));
    let fallback = key_change(
        state.fallback_api_key.as_ref(),
        patch.fallback_api_key,
        cur.fallback_base_url.as_deref(),
        &patch.fallback_base_url,
    );
    events.extend(fallback.map(|c| match c {
        KeyChange::Set(key) => SettingsEvent::AiFallbackApiKeySet { key },
        KeyChange::Cleared(reason) => SettingsEvent::AiFallbackApiKeyCleared { reason },
    }));
    Ok(events)
}

enum KeyChange {
    Set(SealedKey),
    Cleared(KeyClearReason),
}

/// What happens to a stored key: a new one replaces it, `null` clears it, and a URL moved to
/// another origin without a new key in the same patch clears it (the key follows its origin).
fn key_change(
    stored: Option<&SealedKey>,
    patch: Patch<SealedKey>,
    current_url: Option<&str>,
    url_patch: &Patch<String>,
) -> Option<KeyChange> {
    match patch {
        Patch::Set(key) => (stored != Some(&key)).then_some(KeyChange::Set(key)),
        Patch::Clear => stored
            .is_some()
            .then_some(KeyChange::Cleared(KeyClearReason::Requested)),
        Patch::Keep => {
            let old_origin = current_url.and_then(origin_of);
            let new_origin = match url_patch {
                Patch::Keep => old_origin.clone(),
                Patch::Clear => None,
                Patch::Set(url) => origin_of(url),
            };
            (stored.is_some() && !url_patch.is_keep() && old_origin != new_origin)
                .then_some(KeyChange::Cleared(KeyClearReason::BaseUrlOriginChanged))
        }
    }
}

/// Decides the re-encryption of this layer's fallback key under the current master key.
pub fn decide_reseal_fallback(
    state: &LayerState,
    resealed: String,
) -> Result<Vec<SettingsEvent>, DomainError> {
    let Some(current) = &state.fallback_api_key else {
        return Err(DomainError::NotFound(
            "no fallback API key stored at this layer".into(),
        ));
    };
    if current.sealed == resealed {
        return Ok(vec![]);
    }
    Ok(vec![SettingsEvent::AiFallbackApiKeyResealed {
        key: SealedKey {
            sealed: resealed,
            origin: current.origin.clone(),
        },
    }])
}

/// Decides the re-encryption of this layer's key under the current master key.
pub fn decide_reseal(
    state: &LayerState,
    resealed: String,
) -> Result<Vec<SettingsEvent>, DomainError> {
    let Some(current) = &state.api_key else {
        return Err(DomainError::NotFound(
            "no API key stored at this layer".into(),
        ));
    };
    if current.sealed == resealed {
        return Ok(vec![]);
    }
    Ok(vec![SettingsEvent::AiApiKeyResealed {
        key: SealedKey {
            sealed: resealed,
            origin: current.origin.clone(),
        },
    }])
}

/// Overlays the fields `from` sets onto `onto`.
fn overlay(onto: &mut AiSettings, from: &AiSettings) {
    for spec in FIELDS {
        if let Some(v) = from.get(spec.field) {
            onto.set(spec.field, Some(v));
        }
    }
}

impl LayerState {
    /// Folds one settings event into the layer.
    pub fn apply(&mut self, event: &SettingsEvent) {
        match event {
            SettingsEvent::AiSettingsChanged { set, cleared } => {
                for f in cleared {
                    self.settings.set(*f, None);
                }
                overlay(&mut self.settings, set);
            }
            SettingsEvent::AiApiKeySet { key } | SettingsEvent::AiApiKeyResealed { key } => {
                self.api_key = Some(key.clone());
            }
            SettingsEvent::AiApiKeyCleared { .. } => self.api_key = None,
            SettingsEvent::AiFallbackApiKeySet { key }
            | SettingsEvent::AiFallbackApiKeyResealed { key } => {
                self.fallback_api_key = Some(key.clone());
            }
            SettingsEvent::AiFallbackApiKeyCleared { .. } => self.fallback_api_key = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table is in the enum's order (`FieldSpec::of` indexes it), every row's default has its
    /// setting's type, and every setting reads back what was set.
    #[test]
    fn the_table_declares_every_setting_once() {
        for (i, spec) in FIELDS.iter().enumerate() {
            assert_eq!(spec.field as usize, i, "{}", spec.name);
            assert_eq!(
                FieldSpec::named(spec.name).map(|s| s.field),
                Some(spec.field)
            );
            let sample = match spec.kind {
                Kind::Bool => Value::Bool(true),
                Kind::Name { .. } | Kind::Prompt { .. } => Value::Text("x".into()),
                Kind::Url => Value::Text("https://example.com/v1".into()),
                Kind::Float { max, .. } => Value::Float(max),
                Kind::U32 { max, .. } => Value::U32(max),
                Kind::U64 { max, .. } => Value::U64(max),
                Kind::Choice { options } => Value::Text(options[options.len() - 1].into()),
                Kind::Keywords => Value::List(vec!["human".into(), "/^order \\d+$/".into()]),
                Kind::Hours => Value::Hours(
                    serde_json::from_str(
                        r#"{"time_zone":"Europe/Lisbon","ranges":[{"days":"mon-fri","open":"09:00","close":"18:00"}]}"#,
                    )
                    .expect("hours"),
                ),
            };
            if let Some(d) = spec.default.value() {
                assert_eq!(
                    std::mem::discriminant(&d),
                    std::mem::discriminant(&sample),
                    "{}",
                    spec.name
                );
                assert!(
                    check_value(spec, d).is_ok(),
                    "{}'s default is valid",
                    spec.name
                );
            }
            let mut s = AiSettings::default();
            s.set(spec.field, Some(sample.clone()));
            assert_eq!(s.get(spec.field), Some(sample.clone()), "{}", spec.name);
            let json = serde_json::to_value(&s).expect("json");
            assert!(
                json.get(spec.name).is_some(),
                "{} is its serde name",
                spec.name
            );
            let mut p = AiSettingsPatch::<String>::default();
            p.set(spec.field, Patch::Set(sample.clone()));
            assert_eq!(p.get(spec.field), Patch::Set(sample), "{}", spec.name);
        }
    }

    fn key(s: &str, origin: &str) -> SealedKey {
        SealedKey {
            sealed: s.into(),
            origin: origin.into(),
        }
    }

    fn state_with_key() -> LayerState {
        let mut st = LayerState::default();
        st.apply(&SettingsEvent::AiSettingsChanged {
            set: AiSettings {
                base_url: Some("https://api.openai.com/v1".into()),
                ..Default::default()
            },
            cleared: vec![],
        });
        st.apply(&SettingsEvent::AiApiKeySet {
            key: key("ct", "https://api.openai.com"),
        });
        st
    }

    #[test]
    fn patch_deserializes_missing_null_and_value() {
        #[derive(Deserialize)]
        struct P {
            #[serde(default)]
            a: Patch<u32>,
            #[serde(default)]
            b: Patch<u32>,
            #[serde(default)]
            c: Patch<u32>,
        }
        let p: P = serde_json::from_str(r#"{"b":null,"c":3}"#).unwrap();
        assert_eq!((p.a, p.b, p.c), (Patch::Keep, Patch::Clear, Patch::Set(3)));
    }

    #[test]
    fn unchanged_values_write_nothing() {
        let st = state_with_key();
        let patch = AiSettingsPatch {
            base_url: Patch::Set("https://api.openai.com/v1/".into()),
            ..Default::default()
        };
        assert_eq!(decide(&st, patch), Ok(vec![]));
    }

    #[test]
    fn base_url_to_other_host_clears_key() {
        let st = state_with_key();
        let patch = AiSettingsPatch {
            base_url: Patch::Set("https://evil.example/v1".into()),
            ..Default::default()
        };
        let events = decide(&st, patch).unwrap();
        assert_eq!(
            events.last(),
            Some(&SettingsEvent::AiApiKeyCleared {
                reason: KeyClearReason::BaseUrlOriginChanged
            })
        );
    }

    #[test]
    fn base_url_same_host_other_path_keeps_key() {
        let st = state_with_key();
        let patch = AiSettingsPatch {
            base_url: Patch::Set("https://api.openai.com/v2".into()),
            ..Default::default()
        };
        let events = decide(&st, patch).unwrap();
        assert_eq!(events.len(), 1, "{events:?}");
    }

    #[test]
    fn base_url_change_with_new_key_keeps_new_key() {
        let st = state_with_key();
        let patch = AiSettingsPatch {
            base_url: Patch::Set("https://openrouter.ai/api/v1".into()),
            api_key: Patch::Set(key("ct2", "https://openrouter.ai")),
            ..Default::default()
        };
        let events = decide(&st, patch).unwrap();
        assert!(matches!(
            events.last(),
            Some(SettingsEvent::AiApiKeySet { .. })
        ));
    }

    #[test]
    fn out_of_range_values_name_the_field() {
        let cases: Vec<(AiSettingsPatch, &str)> = vec![
            (
                AiSettingsPatch {
                    temperature: Patch::Set(2.5),
                    ..Default::default()
                },
                "temperature",
            ),
            (
                AiSettingsPatch {
                    temperature: Patch::Set(f64::NAN),
                    ..Default::default()
                },
                "temperature",
            ),
            (
                AiSettingsPatch {
                    max_tokens: Patch::Set(0),
                    ..Default::default()
                },
                "max_tokens",
            ),
            (
                AiSettingsPatch {
                    max_tokens: Patch::Set(40_000),
                    ..Default::default()
                },
                "max_tokens",
            ),
            (
                AiSettingsPatch {
                    timeout_seconds: Patch::Set(601),
                    ..Default::default()
                },
                "timeout_seconds",
            ),
            (
                AiSettingsPatch {
                    reply_delay_seconds: Patch::Set(3601),
                    ..Default::default()
                },
                "reply_delay_seconds",
            ),
            (
                AiSettingsPatch {
                    base_url: Patch::Set("ftp://x/".into()),
                    ..Default::default()
                },
                "base_url",
            ),
            (
                AiSettingsPatch {
                    base_url: Patch::Set("not a url".into()),
                    ..Default::default()
                },
                "base_url",
            ),
            (
                AiSettingsPatch {
                    base_url: Patch::Set("https://u:p@h/".into()),
                    ..Default::default()
                },
                "base_url",
            ),
            (
                AiSettingsPatch {
                    model_name: Patch::Set(" ".into()),
                    ..Default::default()
                },
                "model_name",
            ),
            (
                AiSettingsPatch {
                    default_system_prompt: Patch::Set("x".repeat(MAX_PROMPT_BYTES + 1)),
                    ..Default::default()
                },
                "default_system_prompt",
            ),
            (
                AiSettingsPatch {
                    debounce_seconds: Patch::Set(MAX_DEBOUNCE_SECONDS + 1),
                    ..Default::default()
                },
                "debounce_seconds",
            ),
            (
                AiSettingsPatch {
                    human_takeover_minutes: Patch::Set(MAX_TAKEOVER_MINUTES + 1),
                    ..Default::default()
                },
                "human_takeover_minutes",
            ),
            (
                AiSettingsPatch {
                    max_retries: Patch::Set(11),
                    ..Default::default()
                },
                "max_retries",
            ),
            (
                AiSettingsPatch {
                    daily_token_budget: Patch::Set(MAX_DAILY_TOKEN_BUDGET + 1),
                    ..Default::default()
                },
                "daily_token_budget",
            ),
            (
                AiSettingsPatch {
                    fallback_base_url: Patch::Set("file:///etc".into()),
                    ..Default::default()
                },
                "fallback_base_url",
            ),
            (
                AiSettingsPatch {
                    fallback_model_name: Patch::Set("".into()),
                    ..Default::default()
                },
                "fallback_model_name",
            ),
        ];
        for (patch, field) in cases {
            match decide(&LayerState::default(), patch) {
                Err(DomainError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn clear_then_apply_round_trip() {
        let mut st = state_with_key();
        let events = decide(
            &st,
            AiSettingsPatch {
                base_url: Patch::Clear,
                temperature: Patch::Set(0.3),
                ..Default::default()
            },
        )
        .unwrap();
        for e in &events {
            st.apply(e);
        }
        assert_eq!(st.settings.base_url, None);
        assert_eq!(st.settings.temperature, Some(0.3));
        assert_eq!(st.api_key, None, "key follows its origin");
    }

    #[test]
    fn fallback_key_follows_the_fallback_origin() {
        let mut st = LayerState::default();
        let set = decide(
            &st,
            AiSettingsPatch {
                fallback_base_url: Patch::Set("http://127.0.0.1:8080/v1".into()),
                fallback_api_key: Patch::Set(key("fb", "http://127.0.0.1:8080")),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(matches!(
            set.last(),
            Some(SettingsEvent::AiFallbackApiKeySet { .. })
        ));
        for e in &set {
            st.apply(e);
        }
        assert!(st.api_key.is_none(), "the main key is untouched");
        let moved = decide(
            &st,
            AiSettingsPatch {
                fallback_base_url: Patch::Set("https://elsewhere.example/v1".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            moved.last(),
            Some(&SettingsEvent::AiFallbackApiKeyCleared {
                reason: KeyClearReason::BaseUrlOriginChanged
            })
        );
        // The primary base URL moving does not touch the fallback key.
        let primary = decide(
            &st,
            AiSettingsPatch {
                base_url: Patch::Set("https://elsewhere.example/v1".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(primary.len(), 1, "{primary:?}");
    }
}
