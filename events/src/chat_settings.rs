//! Per-chat AI settings: one stream per chat (`chat_settings` / `<account>/<jid>`), holding the
//! chat layer of the config (mode, custom system prompt) and the blocked flag.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::settings::{Patch, MAX_PROMPT_BYTES};
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
}

#[derive(Debug, Clone, PartialEq)]
pub enum ChatSettingsCommand {
    SetAi {
        mode: Option<ChatMode>,
        custom_system_prompt: Patch<String>,
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
}

impl DomainEvent for ChatSettingsEvent {
    fn event_type(&self) -> String {
        match self {
            Self::ChatAiSettingsChanged { .. } => "ChatAiSettingsChanged",
            Self::ChatBlockedChanged { .. } => "ChatBlockedChanged",
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
            } => {
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
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    type Fw = TestFramework<ChatSettings>;

    #[test]
    fn seed_disable_chat() {
        Fw::with(())
            .given_no_previous_events()
            .when(ChatSettingsCommand::SetAi {
                mode: Some(ChatMode::Disabled),
                custom_system_prompt: Patch::Clear,
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
}
