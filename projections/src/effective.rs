//! The effective AI config of one chat: each field resolved chat -> account -> global -> env ->
//! built-in default, with the layer it came from, and whether the gateway would reply there.

use chrono::{DateTime, Utc};
use serde::Serialize;
use wagate_events::chat::PauseCause;
use wagate_events::chat_settings::ChatMode;
use wagate_events::ids::ChatKind;
use wagate_events::reason::{ReasonCode, ReplyReason};
use wagate_events::settings::{
    origin_of, AiField, AiSettings, BusinessHours, FieldSpec, SealedKey, SettingValue, Value,
};

use crate::config::Pause;
use crate::ConfigModel;

/// Which layer a value came from.
pub use wagate_events::reason::Layer as Source;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sourced<T> {
    pub value: T,
    pub source: Source,
}

/// The env layer: values from `WAGATE_AI_*` / `OPENAI_*`, below every stored layer.
#[derive(Debug, Clone, Default)]
pub struct EnvLayer {
    pub settings: AiSettings,
    /// Whether an env API key is configured. It was entered for the env base URL's origin, or
    /// for the built-in default base URL's origin when the env sets none.
    pub has_api_key: bool,
}

/// The built-in default of the setting `name`, from the settings table
/// (`wagate_events::settings::FIELDS`); the type's zero for a setting without one (the fallback
/// model's fields, where empty means none).
pub fn builtin<T: SettingValue + Default>(name: &str) -> T {
    FieldSpec::named(name)
        .and_then(|spec| spec.default.value())
        .and_then(T::from_value)
        .unwrap_or_default()
}

/// Where the key to use lives (the caller decrypts it when it calls the model).
#[derive(Debug, Clone, PartialEq)]
pub enum KeySource {
    Account(SealedKey),
    Global(SealedKey),
    Env,
}

/// The key the fallback model is called with: a layer's own fallback key, or the main key when
/// the fallback lives at the main key's origin.
#[derive(Debug, Clone, PartialEq)]
pub enum FallbackKey {
    Own(KeySource),
    Main(KeySource),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Effective {
    pub account_id: String,
    pub chat_id: String,
    pub chat_kind: ChatKind,
    pub mode: ChatMode,
    pub blocked: bool,
    pub enabled: Sourced<bool>,
    pub base_url: Sourced<String>,
    pub model_name: Sourced<String>,
    pub system_prompt: Sourced<String>,
    pub temperature: Sourced<f64>,
    pub max_tokens: Sourced<u32>,
    pub timeout_seconds: Sourced<u32>,
    pub reply_delay_seconds: Sourced<u32>,
    pub reply_to_private: Sourced<bool>,
    pub reply_to_groups: Sourced<bool>,
    pub reply_to_channels: Sourced<bool>,
    pub echo_mode: Sourced<bool>,
    pub human_takeover_minutes: Sourced<u32>,
    pub debounce_seconds: Sourced<u32>,
    pub max_replies_per_chat_per_hour: Sourced<u32>,
    pub daily_token_budget: Sourced<u64>,
    pub max_history_tokens: Sourced<u32>,
    pub history_window_hours: Sourced<u32>,
    pub max_retries: Sourced<u32>,
    pub fallback_model_name: Sourced<Option<String>>,
    pub fallback_base_url: Sourced<Option<String>>,
    pub loop_guard_quick_seconds: Sourced<u32>,
    pub loop_guard_quick_replies: Sourced<u32>,
    pub loop_guard_repeats: Sourced<u32>,
    pub transcription_model: Sourced<Option<String>>,
    pub vision: Sourced<bool>,
    pub format_for_whatsapp: Sourced<bool>,
    pub max_message_chars: Sourced<u32>,
    pub trigger: Sourced<String>,
    pub trigger_keywords: Sourced<Vec<String>>,
    pub trigger_match: Sourced<String>,
    pub trigger_window_minutes: Sourced<u32>,
    pub handoff_keywords: Sourced<Vec<String>>,
    pub handoff_message: Sourced<Option<String>>,
    pub handoff_tool: Sourced<bool>,
    pub business_hours: Sourced<Option<BusinessHours>>,
    pub outside_hours: Sourced<String>,
    pub away_message: Sourced<Option<String>>,
    /// Whether the business is open now (`business_hours`; always open without them), and when
    /// it opens next while it is closed.
    pub open_now: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opens_at: Option<DateTime<Utc>>,
    /// Human takeover: the AI does not answer in this chat before this time.
    pub paused_until: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pause_cause: Option<PauseCause>,
    /// Whether a key usable with the effective `base_url` exists, and from which layer.
    pub has_api_key: Sourced<bool>,
    /// Set when a key exists but was entered for another origin than the effective base URL's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_note: Option<String>,
    /// Whether the fallback model (when one is set) gets a key: its own (`source`: the layer of
    /// the fallback key) or the main key when the fallback has the main key's origin.
    pub has_fallback_api_key: Sourced<bool>,
    pub will_reply: bool,
    /// Why the AI does not reply (the human text), when it does not.
    pub reason: Option<String>,
    /// The stable code of `reason`.
    pub reason_code: Option<ReasonCode>,
    /// Spend limits an account or chat layer set above what it inherits while the key in effect
    /// is not the account's own: the inherited limit applies (ADR 0022).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub spend_ceilings: Vec<SpendCeiling>,
    /// `reason` with its details, for the reply pipeline.
    #[serde(skip)]
    pub why_not: Option<ReplyReason>,
    /// The history position this answer reflects.
    pub position: i64,
    #[serde(skip)]
    pub key: Option<KeySource>,
    #[serde(skip)]
    pub fallback_key: Option<FallbackKey>,
}

impl Effective {
    /// The resolved value of a setting of the settings table and the layer it came from (`None`
    /// for a setting without a value: no fallback model).
    pub fn setting(&self, field: AiField) -> Option<(Value, Source)> {
        fn of<T: SettingValue>(s: &Sourced<T>) -> Option<(Value, Source)> {
            Some((s.value.clone().into_value(), s.source))
        }
        fn opt<T: SettingValue>(s: &Sourced<Option<T>>) -> Option<(Value, Source)> {
            s.value.clone().map(|v| (v.into_value(), s.source))
        }
        use AiField as F;
        match field {
            F::Enabled => of(&self.enabled),
            F::BaseUrl => of(&self.base_url),
            F::ModelName => of(&self.model_name),
            F::DefaultSystemPrompt => of(&self.system_prompt),
            F::Temperature => of(&self.temperature),
            F::MaxTokens => of(&self.max_tokens),
            F::TimeoutSeconds => of(&self.timeout_seconds),
            F::ReplyDelaySeconds => of(&self.reply_delay_seconds),
            F::ReplyToPrivate => of(&self.reply_to_private),
            F::ReplyToGroups => of(&self.reply_to_groups),
            F::ReplyToChannels => of(&self.reply_to_channels),
            F::EchoMode => of(&self.echo_mode),
            F::HumanTakeoverMinutes => of(&self.human_takeover_minutes),
            F::DebounceSeconds => of(&self.debounce_seconds),
            F::MaxRepliesPerChatPerHour => of(&self.max_replies_per_chat_per_hour),
            F::DailyTokenBudget => of(&self.daily_token_budget),
            F::MaxHistoryTokens => of(&self.max_history_tokens),
            F::HistoryWindowHours => of(&self.history_window_hours),
            F::MaxRetries => of(&self.max_retries),
            F::FallbackModelName => opt(&self.fallback_model_name),
            F::FallbackBaseUrl => opt(&self.fallback_base_url),
            F::LoopGuardQuickSeconds => of(&self.loop_guard_quick_seconds),
            F::LoopGuardQuickReplies => of(&self.loop_guard_quick_replies),
            F::LoopGuardRepeats => of(&self.loop_guard_repeats),
            F::TranscriptionModel => opt(&self.transcription_model),
            F::Vision => of(&self.vision),
            F::FormatForWhatsapp => of(&self.format_for_whatsapp),
            F::MaxMessageChars => of(&self.max_message_chars),
            F::Trigger => of(&self.trigger),
            F::TriggerKeywords => of(&self.trigger_keywords),
            F::TriggerMatch => of(&self.trigger_match),
            F::TriggerWindowMinutes => of(&self.trigger_window_minutes),
            F::HandoffKeywords => of(&self.handoff_keywords),
            F::HandoffMessage => opt(&self.handoff_message),
            F::HandoffTool => of(&self.handoff_tool),
            F::BusinessHours => opt(&self.business_hours),
            F::OutsideHours => of(&self.outside_hours),
            F::AwayMessage => opt(&self.away_message),
        }
    }

    /// Whether the model URLs in effect were set by an account token, given who set the account
    /// layer's: (primary, fallback). The fallback without a URL of its own uses the primary's.
    pub fn tenant_model_urls(&self, origins: &crate::config::ModelUrlOrigins) -> (bool, bool) {
        let primary = self.base_url.source == Source::Account && origins.base_url_by_tenant;
        let fallback = match self.fallback_base_url.value {
            Some(_) => {
                self.fallback_base_url.source == Source::Account
                    && origins.fallback_base_url_by_tenant
            }
            None => primary,
        };
        (primary, fallback)
    }
}

/// A spend limit that was capped: the account (or chat) asked for `requested`, the layer above
/// it allows `ceiling`, and the key is not the account's own (ADR 0022).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpendCeiling {
    pub field: &'static str,
    pub requested: u64,
    pub requested_source: Source,
    pub ceiling: u64,
    pub ceiling_source: Source,
}

/// `chosen`, unless an account or chat layer set it above `inherited` (what the global, env and
/// default layers give) while the key in effect is not the account's own: then `inherited`, and
/// the cap is recorded. With `zero_is_unlimited`, 0 means "no limit" (the largest value).
fn capped<T: Copy + Into<u64>>(
    chosen: Sourced<T>,
    inherited: Sourced<T>,
    own_key: bool,
    zero_is_unlimited: bool,
    field: &'static str,
    caps: &mut Vec<SpendCeiling>,
) -> Sourced<T> {
    if own_key || !matches!(chosen.source, Source::Account | Source::Chat) {
        return chosen;
    }
    let limit = |v: T| match v.into() {
        0 if zero_is_unlimited => u64::MAX,
        v => v,
    };
    if limit(chosen.value) <= limit(inherited.value) {
        return chosen;
    }
    caps.push(SpendCeiling {
        field,
        requested: chosen.value.into(),
        requested_source: chosen.source,
        ceiling: inherited.value.into(),
        ceiling_source: inherited.source,
    });
    inherited
}

fn pick<T: Clone>(layers: [(Option<&T>, Source); 4], default: T) -> Sourced<T> {
    for (v, source) in layers {
        if let Some(v) = v {
            return Sourced {
                value: v.clone(),
                source,
            };
        }
    }
    Sourced {
        value: default,
        source: Source::Default,
    }
}

/// Resolves the effective config of `jid` in `account_id` now, or `None` when the account does
/// not exist (or is deleted) in `model`.
pub fn resolve(
    model: &ConfigModel,
    env: &EnvLayer,
    account_id: &str,
    jid: &str,
    chat_kind: ChatKind,
) -> Option<Effective> {
    resolve_at(model, env, account_id, jid, chat_kind, Utc::now())
}

/// An account's effective daily token budget (0 = none), with its ceiling applied as for any of
/// its chats (no chat layer sets it), or `None` when the account does not exist.
pub fn account_daily_token_budget(
    model: &ConfigModel,
    env: &EnvLayer,
    account_id: &str,
) -> Option<Sourced<u64>> {
    let acc = model.account(account_id)?;
    let eff = resolve_layers(
        &wagate_events::chat_settings::ChatSettings::default(),
        Some(&acc.ai),
        &model.global,
        env,
        Target {
            account_id,
            jid: "",
            chat_kind: ChatKind::Private,
            position: model.position,
        },
    );
    Some(eff.daily_token_budget)
}

/// [`resolve`] at time `now` (a human-takeover pause counts while `now` is before its end).
pub fn resolve_at(
    model: &ConfigModel,
    env: &EnvLayer,
    account_id: &str,
    jid: &str,
    chat_kind: ChatKind,
    now: DateTime<Utc>,
) -> Option<Effective> {
    let acc = model.account(account_id)?;
    let chat = model.chat(account_id, jid).cloned().unwrap_or_default();
    let eff = resolve_layers(
        &chat,
        Some(&acc.ai),
        &model.global,
        env,
        Target {
            account_id,
            jid,
            chat_kind,
            position: model.position,
        },
    );
    Some(
        eff.with_pause(model.pause(account_id, jid), now)
            .with_hours(now),
    )
}

impl Effective {
    /// Applies a human-takeover pause that is still running at `now`: `will_reply` turns false
    /// with a reason saying until when, unless a stronger reason (blocked, disabled...) already
    /// holds.
    pub fn with_pause(mut self, pause: Option<&Pause>, now: DateTime<Utc>) -> Self {
        let Some(p) = pause.filter(|p| p.until > now) else {
            return self;
        };
        self.paused_until = Some(p.until);
        self.pause_cause = Some(p.cause);
        if self.will_reply {
            self.set_reason(Some(ReplyReason::PausedByHuman {
                until: p.until,
                cause: Some(p.cause),
            }));
        }
        self
    }

    /// When the AI speaks in this chat (triggers, handoff, business hours), for the chat's
    /// decisions; `takeover` is the human-takeover pause, which a handoff uses too (a day when
    /// human takeover is off). Off while the AI does not answer here at all (disabled, blocked,
    /// no key...). Settings were validated when set; an entry that still does not compile is left
    /// out.
    pub fn speak(&self, takeover: chrono::Duration) -> wagate_events::chat::Speak {
        use wagate_events::chat::{Handoff, Hours, Outside, Speak, Trigger};
        use wagate_events::matcher::MatchMode;
        let mut speak = Speak::default();
        let answering = self.why_not.is_none()
            || matches!(
                self.why_not,
                Some(ReplyReason::OutsideBusinessHours { .. } | ReplyReason::PausedByHuman { .. })
            );
        if !answering {
            return speak;
        }
        let matcher = |mode: MatchMode, words: &[String]| compiled(mode, words);
        let handoff_words = &self.handoff_keywords.value;
        if let Some(keywords) = (!handoff_words.is_empty())
            .then(|| matcher(MatchMode::Word, handoff_words))
            .flatten()
        {
            speak.handoff = Some(Handoff {
                keywords,
                message: self.handoff_message.value.clone(),
                pause: handoff_pause(takeover),
            });
        }
        if let Some(schedule) = &self.business_hours.value {
            let outside = match (self.outside_hours.value.as_str(), &self.away_message.value) {
                ("silent", _) | ("away_message", None) => Outside::Silent,
                ("away_message", Some(m)) => Outside::Away(m.clone()),
                _ => Outside::Reply,
            };
            speak.hours = Some(Hours {
                schedule: schedule.clone(),
                outside,
            });
        }
        let mode = self
            .trigger_match
            .value
            .parse()
            .unwrap_or(MatchMode::Contains);
        speak.trigger = match self.trigger.value.as_str() {
            "keywords" => match matcher(mode, &self.trigger_keywords.value) {
                Some(keywords) => Trigger::Keywords {
                    keywords,
                    window: chrono::Duration::minutes(i64::from(self.trigger_window_minutes.value)),
                },
                None => Trigger::Always,
            },
            "mention" if self.chat_kind == ChatKind::Group => Trigger::Mention,
            _ => Trigger::Always,
        };
        speak
    }

    /// Applies business hours at `now`: `open_now` and `opens_at`; while closed with
    /// `outside_hours` other than `reply`, the AI does not answer (an away message is a notice).
    pub fn with_hours(mut self, now: DateTime<Utc>) -> Self {
        let Some(opens_at) = self
            .business_hours
            .value
            .as_ref()
            .and_then(|h| h.next_open(now))
        else {
            return self;
        };
        self.open_now = false;
        self.opens_at = Some(opens_at);
        if self.will_reply && self.outside_hours.value != "reply" {
            self.set_reason(Some(ReplyReason::OutsideBusinessHours {
                opens_at: Some(opens_at),
            }));
        }
        self
    }

    /// Sets why the AI does not reply (`None`: it does): `will_reply`, `reason`, `reason_code`.
    pub fn set_reason(&mut self, why_not: Option<ReplyReason>) {
        self.will_reply = why_not.is_none();
        self.reason = why_not.as_ref().map(ReplyReason::text);
        self.reason_code = why_not.as_ref().map(ReplyReason::kind);
        self.why_not = why_not;
    }
}

/// What a resolution is for.
pub struct Target<'a> {
    pub account_id: &'a str,
    pub jid: &'a str,
    pub chat_kind: ChatKind,
    pub position: i64,
}

/// Resolves explicit layers: a chat layer, an optional account layer (none: global only), the
/// global layer and the env layer.
pub fn resolve_layers(
    chat: &wagate_events::chat_settings::ChatSettings,
    account: Option<&wagate_events::settings::LayerState>,
    global: &wagate_events::settings::LayerState,
    env: &EnvLayer,
    target: Target<'_>,
) -> Effective {
    let Target {
        account_id,
        jid,
        chat_kind,
        position,
    } = target;
    let no_account = wagate_events::settings::LayerState::default();
    let account_layer = account.unwrap_or(&no_account);
    let (a, g, e) = (&account_layer.settings, &global.settings, &env.settings);
    macro_rules! field {
        ($f:ident) => {
            pick(
                [
                    (None, Source::Chat),
                    (a.$f.as_ref(), Source::Account),
                    (g.$f.as_ref(), Source::Global),
                    (e.$f.as_ref(), Source::Env),
                ],
                builtin(stringify!($f)),
            )
        };
    }
    // The conversation controls a chat may set for itself (ADR 0007).
    macro_rules! chat_field {
        ($f:ident) => {
            pick(
                [
                    (chat.controls.$f.as_ref(), Source::Chat),
                    (a.$f.as_ref(), Source::Account),
                    (g.$f.as_ref(), Source::Global),
                    (e.$f.as_ref(), Source::Env),
                ],
                builtin(stringify!($f)),
            )
        };
    }
    // A chat setting without a built-in default (unset: none).
    macro_rules! chat_option {
        ($f:ident) => {{
            let layers = [
                (chat.controls.$f.as_ref(), Source::Chat),
                (a.$f.as_ref(), Source::Account),
                (g.$f.as_ref(), Source::Global),
                (e.$f.as_ref(), Source::Env),
            ];
            let found = layers.into_iter().find_map(|(v, source)| {
                v.map(|v| Sourced {
                    value: Some(v.clone()),
                    source,
                })
            });
            found.unwrap_or(Sourced {
                value: None,
                source: Source::Default,
            })
        }};
    }
    let enabled = match chat.mode {
        ChatMode::Enabled => Sourced {
            value: true,
            source: Source::Chat,
        },
        ChatMode::Disabled => Sourced {
            value: false,
            source: Source::Chat,
        },
        ChatMode::Inherit => field!(enabled),
    };
    let base_url = field!(base_url);
    let system_prompt = match &chat.custom_system_prompt {
        Some(p) => Sourced {
            value: p.clone(),
            source: Source::Chat,
        },
        None => field!(default_system_prompt),
    };
    let reply_to_private = field!(reply_to_private);
    let reply_to_groups = field!(reply_to_groups);
    let reply_to_channels = field!(reply_to_channels);
    let echo_mode = field!(echo_mode);

    // The most specific key wins, and it is only usable with the origin it was entered for.
    let base_origin = origin_of(&base_url.value);
    let env_key_origin = origin_of(
        e.base_url
            .as_deref()
            .unwrap_or(&builtin::<String>("base_url")),
    );
    let found: Option<(KeySource, Option<String>, Source)> = if let Some(k) = &account_layer.api_key
    {
        Some((
            KeySource::Account(k.clone()),
            Some(k.origin.clone()),
            Source::Account,
        ))
    } else if let Some(k) = &global.api_key {
        Some((
            KeySource::Global(k.clone()),
            Some(k.origin.clone()),
            Source::Global,
        ))
    } else if env.has_api_key {
        Some((KeySource::Env, env_key_origin, Source::Env))
    } else {
        None
    };
    let (has_api_key, key, key_mismatch) = match found {
        None => (
            Sourced {
                value: false,
                source: Source::Default,
            },
            None,
            None,
        ),
        Some((k, origin, source)) if origin == base_origin => (
            Sourced {
                value: true,
                source,
            },
            Some(k),
            None,
        ),
        Some((_, origin, source)) => (
            Sourced {
                value: false,
                source,
            },
            None,
            Some(ReplyReason::KeyOriginMismatch {
                source,
                key_origin: origin,
                base_origin: base_origin.clone(),
            }),
        ),
    };

    // The fallback's key: the most specific fallback key entered for the fallback's origin, else
    // the main key if the fallback lives at the main key's origin.
    let fallback_base = field!(fallback_base_url);
    let fallback_origin = if fallback_base.value.is_empty() {
        base_origin.clone()
    } else {
        origin_of(&fallback_base.value)
    };
    let own_fallback = [
        (account_layer.fallback_api_key.as_ref(), Source::Account),
        (global.fallback_api_key.as_ref(), Source::Global),
    ]
    .into_iter()
    .find_map(|(k, source)| {
        k.filter(|k| Some(&k.origin) == fallback_origin.as_ref())
            .map(|k| (k.clone(), source))
    });
    let (has_fallback_api_key, fallback_key) = match (own_fallback, &key) {
        (Some((k, Source::Account)), _) => (
            Sourced {
                value: true,
                source: Source::Account,
            },
            Some(FallbackKey::Own(KeySource::Account(k))),
        ),
        (Some((k, source)), _) => (
            Sourced {
                value: true,
                source,
            },
            Some(FallbackKey::Own(KeySource::Global(k))),
        ),
        (None, Some(main)) if fallback_origin == base_origin => {
            (has_api_key.clone(), Some(FallbackKey::Main(main.clone())))
        }
        (None, _) => (
            Sourced {
                value: false,
                source: Source::Default,
            },
            None,
        ),
    };

    // Spend limits protect whoever pays for the key: an account (or chat) may lower them, and
    // raise them only with its own key (ADR 0022; issue 21, finding 2).
    let own_key = matches!(key, Some(KeySource::Account(_)));
    macro_rules! inherited {
        ($f:ident) => {
            pick(
                [
                    (None, Source::Chat),
                    (None, Source::Account),
                    (g.$f.as_ref(), Source::Global),
                    (e.$f.as_ref(), Source::Env),
                ],
                builtin(stringify!($f)),
            )
        };
    }
    let mut spend_ceilings = Vec::new();
    let max_tokens = capped(
        field!(max_tokens),
        inherited!(max_tokens),
        own_key,
        false,
        "max_tokens",
        &mut spend_ceilings,
    );
    let max_replies_per_chat_per_hour = capped(
        chat_field!(max_replies_per_chat_per_hour),
        inherited!(max_replies_per_chat_per_hour),
        own_key,
        true,
        "max_replies_per_chat_per_hour",
        &mut spend_ceilings,
    );
    let daily_token_budget = capped(
        field!(daily_token_budget),
        inherited!(daily_token_budget),
        own_key,
        true,
        "daily_token_budget",
        &mut spend_ceilings,
    );

    let kind_flag = match chat_kind {
        ChatKind::Private => Some(&reply_to_private),
        ChatKind::Group => Some(&reply_to_groups),
        ChatKind::Channel => Some(&reply_to_channels),
        ChatKind::Broadcast => None,
    };
    let why_not = if chat.blocked {
        Some(ReplyReason::Blocked)
    } else if !enabled.value {
        Some(ReplyReason::Disabled {
            source: enabled.source,
        })
    } else if chat_kind == ChatKind::Broadcast {
        Some(ReplyReason::StatusBroadcast)
    } else if let Some(flag) = kind_flag.filter(|f| !f.value) {
        Some(ReplyReason::ChatKindOff {
            kind: chat_kind,
            source: flag.source,
        })
    } else if !echo_mode.value && !has_api_key.value {
        Some(key_mismatch.clone().unwrap_or(ReplyReason::NoApiKey))
    } else {
        None
    };
    let api_key_note = key_mismatch.as_ref().map(ReplyReason::text);

    Effective {
        account_id: account_id.to_string(),
        chat_id: jid.to_string(),
        chat_kind,
        mode: chat.mode,
        blocked: chat.blocked,
        enabled,
        base_url,
        model_name: field!(model_name),
        system_prompt,
        temperature: field!(temperature),
        max_tokens,
        timeout_seconds: field!(timeout_seconds),
        reply_delay_seconds: field!(reply_delay_seconds),
        reply_to_private,
        reply_to_groups,
        reply_to_channels,
        echo_mode,
        human_takeover_minutes: chat_field!(human_takeover_minutes),
        debounce_seconds: chat_field!(debounce_seconds),
        max_replies_per_chat_per_hour,
        daily_token_budget,
        max_history_tokens: chat_field!(max_history_tokens),
        history_window_hours: chat_field!(history_window_hours),
        max_retries: chat_field!(max_retries),
        fallback_model_name: optional(field!(fallback_model_name)),
        fallback_base_url: optional(field!(fallback_base_url)),
        loop_guard_quick_seconds: chat_field!(loop_guard_quick_seconds),
        loop_guard_quick_replies: chat_field!(loop_guard_quick_replies),
        loop_guard_repeats: chat_field!(loop_guard_repeats),
        transcription_model: optional(field!(transcription_model)),
        vision: field!(vision),
        format_for_whatsapp: chat_field!(format_for_whatsapp),
        max_message_chars: chat_field!(max_message_chars),
        trigger: chat_field!(trigger),
        trigger_keywords: chat_field!(trigger_keywords),
        trigger_match: chat_field!(trigger_match),
        trigger_window_minutes: chat_field!(trigger_window_minutes),
        handoff_keywords: chat_field!(handoff_keywords),
        handoff_message: non_empty(chat_option!(handoff_message)),
        handoff_tool: chat_field!(handoff_tool),
        business_hours: chat_option!(business_hours),
        outside_hours: chat_field!(outside_hours),
        away_message: non_empty(chat_option!(away_message)),
        open_now: true,
        opens_at: None,
        paused_until: None,
        pause_cause: None,
        has_api_key,
        api_key_note,
        has_fallback_api_key,
        will_reply: why_not.is_none(),
        reason: why_not.as_ref().map(ReplyReason::text),
        reason_code: why_not.as_ref().map(ReplyReason::kind),
        spend_ceilings,
        why_not,
        position,
        key,
        fallback_key,
    }
}

/// Keyword lists compiled once: [`Effective::speak`] runs for every inbound message, and a list
/// with regular expressions takes a while to compile. At most [`MATCHER_CACHE`] lists are kept
/// (all dropped when full: settings change rarely).
static MATCHERS: std::sync::LazyLock<std::sync::Mutex<MatcherCache>> =
    std::sync::LazyLock::new(Default::default);
type MatcherCache = std::collections::HashMap<
    (wagate_events::matcher::MatchMode, Vec<String>),
    wagate_events::matcher::Matcher,
>;
const MATCHER_CACHE: usize = 1024;

/// The compiled matcher of `words` (`None` when they do not compile: they were validated when
/// set, so only a list stored by an older version could).
fn compiled(
    mode: wagate_events::matcher::MatchMode,
    words: &[String],
) -> Option<wagate_events::matcher::Matcher> {
    let key = (mode, words.to_vec());
    let mut cache = MATCHERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(m) = cache.get(&key) {
        return Some(m.clone());
    }
    let m = wagate_events::matcher::Matcher::new(mode, words).ok()?;
    if cache.len() >= MATCHER_CACHE {
        cache.clear();
    }
    cache.insert(key, m.clone());
    Some(m)
}

/// How long a handoff pauses the AI: the human-takeover pause, or a day when takeover is off
/// (`human_takeover_minutes` 0: a human answer never pauses, but a customer asking for one does).
pub fn handoff_pause(takeover: chrono::Duration) -> chrono::Duration {
    if takeover > chrono::Duration::zero() {
        takeover
    } else {
        chrono::Duration::hours(24)
    }
}

/// An optional message: an empty one is none.
fn non_empty(v: Sourced<Option<String>>) -> Sourced<Option<String>> {
    Sourced {
        value: v.value.filter(|m| !m.trim().is_empty()),
        source: v.source,
    }
}

/// An optional text setting: the empty default means "not set".
fn optional(v: Sourced<String>) -> Sourced<Option<String>> {
    Sourced {
        value: (!v.value.is_empty()).then_some(v.value),
        source: v.source,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use chrono::Utc;
    use serde_json::json;

    use super::*;
    use crate::StoredEvent;

    struct History(ConfigModel, i64);

    impl History {
        fn new() -> Self {
            let mut h = History(ConfigModel::default(), 0);
            h.push(
                "account",
                "acme",
                json!({"AccountCreated":{"id":"acme","name":"Acme","transport":"sandbox"}}),
            );
            h
        }
        fn push(&mut self, t: &str, id: &str, payload: serde_json::Value) -> &mut Self {
            self.1 += 1;
            let ev = StoredEvent {
                position: self.1,
                aggregate_type: t.into(),
                aggregate_id: id.into(),
                sequence: 1,
                event_type: String::new(),
                event_version: "1".into(),
                payload,
                metadata: HashMap::new(),
                recorded_at: Utc::now(),
            };
            self.0.apply(&ev).unwrap();
            self
        }
        fn eff(&self, env: &EnvLayer) -> Effective {
            resolve(&self.0, env, "acme", "1@s.whatsapp.net", ChatKind::Private).unwrap()
        }
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        let h = History::new();
        let e = h.eff(&EnvLayer::default());
        assert_eq!(
            e.enabled,
            Sourced {
                value: false,
                source: Source::Default
            }
        );
        assert_eq!(e.model_name.value, builtin::<String>("model_name"));
        assert!(!e.will_reply);
        assert_eq!(
            e.reason.as_deref(),
            Some("AI is disabled (source: default)")
        );
        assert_eq!(e.reason_code, Some(ReasonCode::Disabled));
        assert_eq!(
            e.why_not,
            Some(ReplyReason::Disabled {
                source: Source::Default
            })
        );
    }

    #[test]
    fn layers_override_in_order_with_sources() {
        let mut h = History::new();
        h.push("ai_global", "global", json!({"AiSettingsChanged":{"set":{"enabled":true,"temperature":0.3,"model_name":"g"},"cleared":[]}}));
        h.push(
            "account",
            "acme",
            json!({"AiSettingsChanged":{"set":{"model_name":"a"},"cleared":[]}}),
        );
        h.push(
            "chat_settings",
            "acme/1@s.whatsapp.net",
            json!({"ChatAiSettingsChanged":{"mode":"inherit","custom_system_prompt":"Be brief."}}),
        );
        let env = EnvLayer {
            settings: AiSettings {
                max_tokens: Some(99),
                temperature: Some(1.0),
                ..Default::default()
            },
            has_api_key: false,
        };
        let e = h.eff(&env);
        assert_eq!(e.enabled.source, Source::Global);
        assert_eq!(
            (e.model_name.value.as_str(), e.model_name.source),
            ("a", Source::Account)
        );
        assert_eq!(
            e.temperature,
            Sourced {
                value: 0.3,
                source: Source::Global
            }
        );
        assert_eq!(
            e.max_tokens,
            Sourced {
                value: 99,
                source: Source::Env
            }
        );
        assert_eq!(
            e.system_prompt,
            Sourced {
                value: "Be brief.".into(),
                source: Source::Chat
            }
        );
        assert_eq!(e.reason.as_deref(), Some("no API key configured"));
    }

    #[test]
    fn chat_mode_and_block_decide() {
        let mut h = History::new();
        h.push(
            "ai_global",
            "global",
            json!({"AiSettingsChanged":{"set":{"enabled":true,"echo_mode":true},"cleared":[]}}),
        );
        assert!(
            h.eff(&EnvLayer::default()).will_reply,
            "echo mode needs no key"
        );
        h.push(
            "chat_settings",
            "acme/1@s.whatsapp.net",
            json!({"ChatAiSettingsChanged":{"mode":"disabled","custom_system_prompt":null}}),
        );
        let e = h.eff(&EnvLayer::default());
        assert_eq!(e.reason.as_deref(), Some("AI is disabled (source: chat)"));
        h.push(
            "chat_settings",
            "acme/1@s.whatsapp.net",
            json!({"ChatBlockedChanged":{"blocked":true}}),
        );
        assert_eq!(
            h.eff(&EnvLayer::default()).reason.as_deref(),
            Some("chat is blocked")
        );
    }

    #[test]
    fn key_only_usable_for_its_origin() {
        let mut h = History::new();
        h.push("ai_global", "global", json!({"AiSettingsChanged":{"set":{"enabled":true,"base_url":"https://api.openai.com/v1"},"cleared":[]}}));
        h.push(
            "ai_global",
            "global",
            json!({"AiApiKeySet":{"key":{"sealed":"CT","origin":"https://api.openai.com"}}}),
        );
        let e = h.eff(&EnvLayer::default());
        assert!(e.will_reply, "{:?}", e.reason);
        assert_eq!(
            e.has_api_key,
            Sourced {
                value: true,
                source: Source::Global
            }
        );
        // An account points at another host but inherits the global key: not usable there.
        h.push("account", "acme", json!({"AiSettingsChanged":{"set":{"base_url":"https://other.example/v1"},"cleared":[]}}));
        let e = h.eff(&EnvLayer::default());
        assert!(!e.will_reply);
        assert!(e.key.is_none());
        assert!(e.reason.unwrap().contains("https://api.openai.com"));
    }

    /// Issue 21, finding 2 (ADR 0022): on the admin's key, an account can lower the spend limits
    /// but not raise them; with its own key it can.
    #[test]
    fn spend_limits_are_ceilings_on_anothers_key() {
        let mut h = History::new();
        h.push("ai_global", "global", json!({"AiSettingsChanged":{"set":{"enabled":true,"base_url":"https://api.openai.com/v1","max_tokens":500,"daily_token_budget":1000,"max_replies_per_chat_per_hour":5},"cleared":[]}}));
        h.push(
            "ai_global",
            "global",
            json!({"AiApiKeySet":{"key":{"sealed":"CT","origin":"https://api.openai.com"}}}),
        );
        h.push("account", "acme", json!({"AiSettingsChanged":{"set":{"max_tokens":32768,"daily_token_budget":0,"max_replies_per_chat_per_hour":3},"cleared":[]}}));
        let e = h.eff(&EnvLayer::default());
        assert_eq!(
            (e.max_tokens.value, e.max_tokens.source),
            (500, Source::Global)
        );
        // 0 is "no budget": above any budget.
        assert_eq!(
            (e.daily_token_budget.value, e.daily_token_budget.source),
            (1000, Source::Global)
        );
        // Lowering is always allowed.
        assert_eq!(
            (
                e.max_replies_per_chat_per_hour.value,
                e.max_replies_per_chat_per_hour.source
            ),
            (3, Source::Account)
        );
        let fields: Vec<_> = e.spend_ceilings.iter().map(|c| c.field).collect();
        assert_eq!(fields, ["max_tokens", "daily_token_budget"]);
        assert_eq!(
            e.spend_ceilings[0],
            SpendCeiling {
                field: "max_tokens",
                requested: 32768,
                requested_source: Source::Account,
                ceiling: 500,
                ceiling_source: Source::Global,
            }
        );
        // With its own key, the account's limits apply as set.
        h.push(
            "account",
            "acme",
            json!({"AiApiKeySet":{"key":{"sealed":"CT2","origin":"https://api.openai.com"}}}),
        );
        let e = h.eff(&EnvLayer::default());
        assert_eq!(
            (e.max_tokens.value, e.max_tokens.source),
            (32768, Source::Account)
        );
        assert_eq!(e.daily_token_budget.value, 0);
        assert!(e.spend_ceilings.is_empty());
    }

    #[test]
    fn group_flag_and_broadcast() {
        let mut h = History::new();
        h.push(
            "ai_global",
            "global",
            json!({"AiSettingsChanged":{"set":{"enabled":true,"echo_mode":true},"cleared":[]}}),
        );
        let e = resolve(
            &h.0,
            &EnvLayer::default(),
            "acme",
            "1-2@g.us",
            ChatKind::Group,
        )
        .unwrap();
        assert_eq!(
            e.reason.as_deref(),
            Some("reply_to_groups is false (source: default)")
        );
        let e = resolve(
            &h.0,
            &EnvLayer::default(),
            "acme",
            "status@broadcast",
            ChatKind::Broadcast,
        )
        .unwrap();
        assert_eq!(
            e.reason.as_deref(),
            Some("status broadcasts are never answered")
        );
    }

    #[test]
    fn deleted_account_resolves_to_none() {
        let mut h = History::new();
        h.push("account", "acme", json!("AccountDeleted"));
        assert!(resolve(
            &h.0,
            &EnvLayer::default(),
            "acme",
            "1@s.whatsapp.net",
            ChatKind::Private
        )
        .is_none());
    }

    #[test]
    fn a_running_pause_turns_will_reply_off_until_it_ends_or_is_resumed() {
        let mut h = History::new();
        h.push(
            "ai_global",
            "global",
            json!({"AiSettingsChanged":{"set":{"enabled":true,"echo_mode":true},"cleared":[]}}),
        );
        let until = "2026-11-25T10:30:00Z";
        let ev = |t: &str, payload: serde_json::Value| StoredEvent {
            position: 99,
            aggregate_type: "chat".into(),
            aggregate_id: "acme/1@s.whatsapp.net".into(),
            sequence: 1,
            event_type: t.into(),
            event_version: "1".into(),
            payload,
            metadata: HashMap::new(),
            recorded_at: Utc::now(),
        };
        let paused = ev(
            "AiPaused",
            json!({"AiPaused":{"until":until,"cause":"operator_send","message_id":"o1","at":"2026-11-25T10:00:00Z"}}),
        );
        assert!(crate::config::folds(&paused));
        h.0.apply(&paused).unwrap();
        let at = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .with_timezone(&Utc)
        };
        let env = EnvLayer::default();
        let during = resolve_at(
            &h.0,
            &env,
            "acme",
            "1@s.whatsapp.net",
            ChatKind::Private,
            at("2026-11-25T10:10:00Z"),
        )
        .unwrap();
        assert!(!during.will_reply);
        assert_eq!(during.paused_until, Some(at(until)));
        assert_eq!(during.reason_code, Some(ReasonCode::PausedByHuman));
        assert!(during
            .reason
            .unwrap()
            .starts_with("human takeover: an operator answered"));
        let after = resolve_at(
            &h.0,
            &env,
            "acme",
            "1@s.whatsapp.net",
            ChatKind::Private,
            at("2026-11-25T10:31:00Z"),
        )
        .unwrap();
        assert!(after.will_reply);
        assert_eq!(after.paused_until, None);
        h.0.apply(&ev(
            "AiResumed",
            json!({"AiResumed":{"at":"2026-11-25T10:05:00Z"}}),
        ))
        .unwrap();
        let resumed = resolve_at(
            &h.0,
            &env,
            "acme",
            "1@s.whatsapp.net",
            ChatKind::Private,
            at("2026-11-25T10:10:00Z"),
        )
        .unwrap();
        assert!(resumed.will_reply);
        // Other chat events are not this model's business.
        assert!(!crate::config::folds(&ev("MessageSent", json!({}))));
    }
}
