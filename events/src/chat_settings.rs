//! Per-chat AI settings: one stream per chat (`chat_settings` / `<account>/<jid>`), holding the
//! chat layer of the config (mode, custom system prompt, the per-chat conversation controls) and
//! the blocked flag.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::settings::{self, AiSettings, AiSettingsPatch, Patch, MAX_PROMPT_BYTES};
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

/// A chat's own layer of the AI settings: only the settings the table marks `chat` (ADR 0007:
/// conversation controls, splitting, triggers, handoff, business hours), `None` inheriting. The
/// account-wide ones (the model, its key, the daily token budget, the fallback model) live on the
/// account and global layers only. Stored as the settings' names, as it always was.
pub type ChatControls = AiSettings;

/// A change to a chat's own settings (absent: keep, `null`: inherit, value: set): a settings patch
/// holding only the settings the table marks `chat`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatControlsPatch(AiSettingsPatch);

impl ChatControlsPatch {
    /// The chat settings of a settings patch (the others are left out; the API refuses them as
    /// it reads the body, by the same `chat` mark of the settings table).
    pub fn from_settings<K>(p: &AiSettingsPatch<K>) -> Self {
        let mut out = AiSettingsPatch::default();
        for spec in settings::FIELDS.iter().filter(|f| f.chat) {
            out.set(spec.field, p.get(spec.field));
        }
        Self(out)
    }

    /// Validates with the same rules as the account and global layers (400 naming the field);
    /// returns the patch normalized.
    fn validated(self) -> Result<Self, DomainError> {
        settings::validate(self.0).map(Self)
    }

    fn apply_to(&self, c: &ChatControls) -> ChatControls {
        let mut out = c.clone();
        for spec in settings::FIELDS.iter().filter(|f| f.chat) {
            match self.0.get(spec.field) {
                Patch::Keep => {}
                Patch::Clear => out.set(spec.field, None),
                Patch::Set(v) => out.set(spec.field, Some(v)),
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq)]
// Decided and folded one at a time; the size is not worth a box (and the serialized form must
// stay the same).
#[allow(clippy::large_enum_variant)]
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
// Decided and folded one at a time; the size is not worth a box (and the serialized form must
// stay the same).
#[allow(clippy::large_enum_variant)]
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
                let controls = controls.validated()?;
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

    /// A chat's patch keeps exactly the settings the table marks `chat`.
    #[test]
    fn chat_controls_are_the_tables_chat_settings() {
        for spec in settings::FIELDS {
            let mut patch = AiSettingsPatch::<String>::default();
            let value = match spec.kind {
                settings::Kind::U32 { max, .. } => settings::Value::U32(max),
                settings::Kind::Bool => settings::Value::Bool(true),
                _ => continue,
            };
            patch.set(spec.field, Patch::Set(value.clone()));
            let controls =
                ChatControlsPatch::from_settings(&patch).apply_to(&ChatControls::default());
            let back = controls.get(spec.field);
            assert_eq!(back.is_some(), spec.chat, "{}", spec.name);
            if spec.chat {
                assert_eq!(back, Some(value), "{}", spec.name);
            }
        }
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
            controls: ChatControlsPatch::from_settings(&AiSettingsPatch::<String> {
                debounce_seconds: debounce,
                ..Default::default()
            }),
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
