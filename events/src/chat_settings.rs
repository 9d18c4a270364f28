//! Per-chat AI settings: one stream per chat (`chat_settings` / `<account>/<jid>`), holding the
//! chat layer of the config (mode, custom system prompt, the per-chat conversation controls) and
//! the blocked flag.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::settings::{self, AiSettingsPatch, Patch, MAX_PROMPT_BYTES};
use crate::DomainError;

/// The stream id of a chat's settings.
pub fn stream_id(account_id: &str, jid: &str) -> String {
    format!("{account_id}/{jid}")
}

/// The per-chat toggle of the seed: inherit the layers above, or force AI on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatMode {
    #[default]
    Inherit,
    Enabled,
    Disabled,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatSettings {
    pub mode: ChatMode,
    pub custom_system_prompt: Option<String>,
    pub blocked: bool,
    /// The chat layer of the conversation controls (`None`: inherit).
    #[serde(default)]
    pub controls: ChatControls,
}

/// The conversation controls a chat may set for itself (ADR 0007). The daily token budget and
/// the fallback model are account-wide and live on the account and global layers only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ChatControls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub human_takeover_minutes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debounce_seconds: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replies_per_chat_per_hour: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_history_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_window_hours: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retries: Option<u32>,
}

impl ChatControls {
    /// The controls as a layer's settings (the fields the settings table marks `chat`).
    pub fn as_settings(&self) -> settings::AiSettings {
        settings::AiSettings {
            human_takeover_minutes: self.human_takeover_minutes,
            debounce_seconds: self.debounce_seconds,
            max_replies_per_chat_per_hour: self.max_replies_per_chat_per_hour,
            max_history_tokens: self.max_history_tokens,
            history_window_hours: self.history_window_hours,
            max_retries: self.max_retries,
            ..Default::default()
        }
    }
}

/// A change to a chat's conversation controls (absent: keep, `null`: inherit, value: set).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatControlsPatch {
    pub human_takeover_minutes: Patch<u32>,
    pub debounce_seconds: Patch<u32>,
    pub max_replies_per_chat_per_hour: Patch<u32>,
    pub max_history_tokens: Patch<u32>,
    pub history_window_hours: Patch<u32>,
    pub max_retries: Patch<u32>,
}

fn patched(current: Option<u32>, patch: &Patch<u32>) -> Option<u32> {
    match patch {
        Patch::Keep => current,
        Patch::Clear => None,
        Patch::Set(v) => Some(*v),
    }
}

impl ChatControlsPatch {
    /// The chat controls of a settings patch (the fields the settings table marks `chat`).
    pub fn from_settings<K>(p: &AiSettingsPatch<K>) -> Self {
        Self {
            human_takeover_minutes: p.human_takeover_minutes.clone(),
            debounce_seconds: p.debounce_seconds.clone(),
            max_replies_per_chat_per_hour: p.max_replies_per_chat_per_hour.clone(),
            max_history_tokens: p.max_history_tokens.clone(),
            history_window_hours: p.history_window_hours.clone(),
            max_retries: p.max_retries.clone(),
        }
    }

    /// Validates with the same ranges as the account and global layers (400 naming the field).
    fn validate(&self) -> Result<(), DomainError> {
        settings::validate(AiSettingsPatch::<settings::SealedKey> {
            human_takeover_minutes: self.human_takeover_minutes.clone(),
            debounce_seconds: self.debounce_seconds.clone(),
            max_replies_per_chat_per_hour: self.max_replies_per_chat_per_hour.clone(),
            max_history_tokens: self.max_history_tokens.clone(),
            history_window_hours: self.history_window_hours.clone(),
            max_retries: self.max_retries.clone(),
            ..Default::default()
        })
        .map(drop)
    }

    fn apply_to(&self, c: &ChatControls) -> ChatControls {
        ChatControls {
            human_takeover_minutes: patched(c.human_takeover_minutes, &self.human_takeover_minutes),
            debounce_seconds: patched(c.debounce_seconds, &self.debounce_seconds),
            max_replies_per_chat_per_hour: patched(
                c.max_replies_per_chat_per_hour,
                &self.max_replies_per_chat_per_hour,
            ),
            max_history_tokens: patched(c.max_history_tokens, &self.max_history_tokens),
            history_window_hours: patched(c.history_window_hours, &self.history_window_hours),
            max_retries: patched(c.max_retries, &self.max_retries),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ChatSettingsCommand {
    SetAi {
        mode: Option<ChatMode>,
        custom_system_prompt: Patch<String>,
        controls: ChatControlsPatch,
    },
    SetBlocked {
        blocked: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ChatSettingsEvent {
    /// The chat layer after the change (both fields, so the event reads on its own).
    ChatAiSettingsChanged {
        mode: ChatMode,
        custom_system_prompt: Option<String>,
    },
    ChatBlockedChanged {
        blocked: bool,
    },
    /// The chat's conversation controls after the change (all of them, so the event reads on
    /// its own).
    ChatControlsChanged {
        controls: ChatControls,
    },
}

impl DomainEvent for ChatSettingsEvent {
    fn event_type(&self) -> String {
        match self {
            Self::ChatAiSettingsChanged { .. } => "ChatAiSettingsChanged",
            Self::ChatBlockedChanged { .. } => "ChatBlockedChanged",
            Self::ChatControlsChanged { .. } => "ChatControlsChanged",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        crate::EVENT_VERSION.to_string()
    }
}

impl Aggregate for ChatSettings {
    const TYPE: &'static str = "chat_settings";
    type Command = ChatSettingsCommand;
    type Event = ChatSettingsEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        match command {
            ChatSettingsCommand::SetAi {
                mode,
                custom_system_prompt,
                controls,
            } => {
                controls.validate()?;
                let prompt = match custom_system_prompt {
                    Patch::Keep => self.custom_system_prompt.clone(),
                    Patch::Clear => None,
                    Patch::Set(p) if p.len() > MAX_PROMPT_BYTES => {
                        return Err(DomainError::invalid(
                            "custom_system_prompt",
                            format!("longer than {MAX_PROMPT_BYTES} bytes"),
                        ))
                    }
                    Patch::Set(p) if p.contains('\0') => {
                        return Err(DomainError::invalid(
                            "custom_system_prompt",
                            "must not contain NUL characters",
                        ))
                    }
                    // An empty prompt means "no custom prompt".
                    Patch::Set(p) if p.trim().is_empty() => None,
                    Patch::Set(p) => Some(p),
                };
                let mode = mode.unwrap_or(self.mode);
                if mode != self.mode || prompt != self.custom_system_prompt {
                    let event = ChatSettingsEvent::ChatAiSettingsChanged {
                        mode,
                        custom_system_prompt: prompt,
                    };
                    sink.write(event, self).await;
                }
                let controls = controls.apply_to(&self.controls);
                if controls != self.controls {
                    sink.write(ChatSettingsEvent::ChatControlsChanged { controls }, self)
                        .await;
                }
            }
            ChatSettingsCommand::SetBlocked { blocked } => {
                if blocked != self.blocked {
                    sink.write(ChatSettingsEvent::ChatBlockedChanged { blocked }, self)
                        .await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.fold(event);
    }
}

impl ChatSettings {
    /// Folds one event (the aggregate's `apply`, callable without cqrs-es by read models).
    pub fn fold(&mut self, event: ChatSettingsEvent) {
        match event {
            ChatSettingsEvent::ChatAiSettingsChanged {
                mode,
                custom_system_prompt,
            } => {
                self.mode = mode;
                self.custom_system_prompt = custom_system_prompt;
            }
            ChatSettingsEvent::ChatBlockedChanged { blocked } => self.blocked = blocked,
            ChatSettingsEvent::ChatControlsChanged { controls } => self.controls = controls,
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    type Fw = TestFramework<ChatSettings>;

    /// The chat controls are exactly the settings the table marks `chat`, both ways.
    #[test]
    fn chat_controls_are_the_tables_chat_settings() {
        for spec in settings::FIELDS {
            let mut patch = AiSettingsPatch::<String>::default();
            let value = match spec.kind {
                settings::Kind::U32 { max, .. } => settings::Value::U32(max),
                _ => continue,
            };
            patch.set(spec.field, Patch::Set(value.clone()));
            let controls =
                ChatControlsPatch::from_settings(&patch).apply_to(&ChatControls::default());
            let back = controls.as_settings().get(spec.field);
            assert_eq!(back.is_some(), spec.chat, "{}", spec.name);
            if spec.chat {
                assert_eq!(back, Some(value), "{}", spec.name);
            }
        }
        let all = ChatControls {
            human_takeover_minutes: Some(1),
            debounce_seconds: Some(1),
            max_replies_per_chat_per_hour: Some(1),
            max_history_tokens: Some(1),
            history_window_hours: Some(1),
            max_retries: Some(1),
        }
        .as_settings();
        let set: Vec<&str> = settings::FIELDS
            .iter()
            .filter(|f| all.get(f.field).is_some())
            .map(|f| f.name)
            .collect();
        let marked: Vec<&str> = settings::FIELDS
            .iter()
            .filter(|f| f.chat)
            .map(|f| f.name)
            .collect();
        assert_eq!(set, marked);
    }

    #[test]
    fn seed_disable_chat() {
        Fw::with(())
            .given_no_previous_events()
            .when(ChatSettingsCommand::SetAi {
                mode: Some(ChatMode::Disabled),
                custom_system_prompt: Patch::Clear,
                controls: Default::default(),
            })
            .then_expect_events(vec![ChatSettingsEvent::ChatAiSettingsChanged {
                mode: ChatMode::Disabled,
                custom_system_prompt: None,
            }]);
    }

    #[test]
    fn same_values_write_nothing() {
        Fw::with(())
            .given(vec![ChatSettingsEvent::ChatAiSettingsChanged {
                mode: ChatMode::Enabled,
                custom_system_prompt: Some("Be brief.".into()),
            }])
            .when(ChatSettingsCommand::SetAi {
                mode: None,
                custom_system_prompt: Patch::Set("Be brief.".into()),
                controls: Default::default(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn keep_prompt_when_only_mode_changes() {
        Fw::with(())
            .given(vec![ChatSettingsEvent::ChatAiSettingsChanged {
                mode: ChatMode::Enabled,
                custom_system_prompt: Some("Be brief.".into()),
            }])
            .when(ChatSettingsCommand::SetAi {
                mode: Some(ChatMode::Disabled),
                custom_system_prompt: Patch::Keep,
                controls: Default::default(),
            })
            .then_expect_events(vec![ChatSettingsEvent::ChatAiSettingsChanged {
                mode: ChatMode::Disabled,
                custom_system_prompt: Some("Be brief.".into()),
            }]);
    }

    #[test]
    fn oversized_prompt_refused() {
        Fw::with(())
            .given_no_previous_events()
            .when(ChatSettingsCommand::SetAi {
                mode: None,
                custom_system_prompt: Patch::Set("x".repeat(MAX_PROMPT_BYTES + 1)),
                controls: Default::default(),
            })
            .then_expect_error_message("custom_system_prompt: longer than 32768 bytes");
    }

    #[test]
    fn block_and_unblock() {
        Fw::with(())
            .given(vec![ChatSettingsEvent::ChatBlockedChanged {
                blocked: true,
            }])
            .when(ChatSettingsCommand::SetBlocked { blocked: true })
            .then_expect_events(vec![]);
        Fw::with(())
            .given(vec![ChatSettingsEvent::ChatBlockedChanged {
                blocked: true,
            }])
            .when(ChatSettingsCommand::SetBlocked { blocked: false })
            .then_expect_events(vec![ChatSettingsEvent::ChatBlockedChanged {
                blocked: false,
            }]);
    }

    #[test]
    fn chat_controls_set_validate_and_inherit() {
        let set = |debounce: Patch<u32>| ChatSettingsCommand::SetAi {
            mode: None,
            custom_system_prompt: Patch::Keep,
            controls: ChatControlsPatch {
                debounce_seconds: debounce,
                ..Default::default()
            },
        };
        let with = |d: Option<u32>| ChatSettingsEvent::ChatControlsChanged {
            controls: ChatControls {
                debounce_seconds: d,
                ..Default::default()
            },
        };
        Fw::with(())
            .given_no_previous_events()
            .when(set(Patch::Set(5)))
            .then_expect_events(vec![with(Some(5))]);
        Fw::with(())
            .given(vec![with(Some(5))])
            .when(set(Patch::Set(5)))
            .then_expect_events(vec![]);
        Fw::with(())
            .given(vec![with(Some(5))])
            .when(set(Patch::Clear))
            .then_expect_events(vec![with(None)]);
        Fw::with(())
            .given_no_previous_events()
            .when(set(Patch::Set(3601)))
            .then_expect_error_message("debounce_seconds: must be between 0 and 3600, got 3601");
    }
}
