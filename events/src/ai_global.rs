//! The global AI settings: one stream (`ai_global` / `global`) holding the top stored layer.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::settings::{self, AiSettingsPatch, LayerState, SettingsEvent};
use crate::DomainError;

/// The only id of the global stream.
pub const GLOBAL_ID: &str = "global";

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AiGlobal {
    pub layer: LayerState,
}

#[derive(Debug, Clone, PartialEq)]
// A command lives for one request; boxing the patch would only add noise.
#[allow(clippy::large_enum_variant)]
pub enum AiGlobalCommand {
    Change(AiSettingsPatch),
    /// Re-encrypt the stored key under the current master key (key rotation).
    ResealApiKey {
        sealed: String,
    },
    /// Re-encrypt the stored fallback key under the current master key (key rotation).
    ResealFallbackApiKey {
        sealed: String,
    },
}

impl DomainEvent for SettingsEvent {
    fn event_type(&self) -> String {
        match self {
            SettingsEvent::AiSettingsChanged { .. } => "AiSettingsChanged",
            SettingsEvent::AiApiKeySet { .. } => "AiApiKeySet",
            SettingsEvent::AiApiKeyCleared { .. } => "AiApiKeyCleared",
            SettingsEvent::AiApiKeyResealed { .. } => "AiApiKeyResealed",
            SettingsEvent::AiFallbackApiKeySet { .. } => "AiFallbackApiKeySet",
            SettingsEvent::AiFallbackApiKeyCleared { .. } => "AiFallbackApiKeyCleared",
            SettingsEvent::AiFallbackApiKeyResealed { .. } => "AiFallbackApiKeyResealed",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        crate::EVENT_VERSION.to_string()
    }
}

impl Aggregate for AiGlobal {
    const TYPE: &'static str = "ai_global";
    type Command = AiGlobalCommand;
    type Event = SettingsEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        let events = match command {
            AiGlobalCommand::Change(patch) => settings::decide(&self.layer, patch)?,
            AiGlobalCommand::ResealApiKey { sealed } => {
                settings::decide_reseal(&self.layer, sealed)?
            }
            AiGlobalCommand::ResealFallbackApiKey { sealed } => {
                settings::decide_reseal_fallback(&self.layer, sealed)?
            }
        };
        for e in events {
            sink.write(e, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.layer.apply(&event);
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;
    use crate::settings::{AiSettings, Patch, SealedKey};

    type Fw = TestFramework<AiGlobal>;

    #[test]
    fn seed_global_config_sets_fields_and_key() {
        let key = SealedKey {
            sealed: "CT".into(),
            origin: "https://api.openai.com".into(),
        };
        Fw::with(())
            .given_no_previous_events()
            .when(AiGlobalCommand::Change(AiSettingsPatch {
                enabled: Patch::Set(true),
                base_url: Patch::Set("https://api.openai.com/v1".into()),
                temperature: Patch::Set(0.3),
                api_key: Patch::Set(key.clone()),
                ..Default::default()
            }))
            .then_expect_events(vec![
                SettingsEvent::AiSettingsChanged {
                    set: AiSettings {
                        enabled: Some(true),
                        base_url: Some("https://api.openai.com/v1".into()),
                        temperature: Some(0.3),
                        ..Default::default()
                    },
                    cleared: vec![],
                },
                SettingsEvent::AiApiKeySet { key },
            ]);
    }

    #[test]
    fn clearing_absent_key_writes_nothing() {
        Fw::with(())
            .given_no_previous_events()
            .when(AiGlobalCommand::Change(AiSettingsPatch {
                api_key: Patch::Clear,
                ..Default::default()
            }))
            .then_expect_events(vec![]);
    }

    #[test]
    fn invalid_patch_is_refused() {
        Fw::with(())
            .given_no_previous_events()
            .when(AiGlobalCommand::Change(AiSettingsPatch {
                max_tokens: Patch::Set(0),
                ..Default::default()
            }))
            .then_expect_error_message("max_tokens: must be between 1 and 32768, got 0");
    }

    #[test]
    fn reseal_needs_a_key() {
        Fw::with(())
            .given_no_previous_events()
            .when(AiGlobalCommand::ResealApiKey { sealed: "x".into() })
            .then_expect_error_message("no API key stored at this layer");
    }
}
