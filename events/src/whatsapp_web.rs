//! The WhatsApp Web part of an account (issue 23): whether the operator wants it connected, the
//! state its connection last reported, and its settings. The session itself (keys, Signal
//! state) is not an event: it lives sealed in the session store; a QR code is never recorded.

use serde::{Deserialize, Serialize};

use crate::account::AccountEvent;
use crate::DomainError;

/// Longest reason recorded with a connection state.
pub const MAX_REASON: usize = 300;

/// Where an account's WhatsApp Web connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WebConnectionState {
    /// Not started: nobody asked to connect yet (or the gateway stopped it).
    #[default]
    Stopped,
    /// Waiting for the phone: a QR code or pair code is on offer.
    Pairing,
    /// Connecting (or reconnecting) with a paired session.
    Connecting,
    Connected,
    /// The connection dropped; the library reconnects with backoff.
    Disconnected,
    /// The device was unlinked (from the phone, by WhatsApp, or by `logout`): the session is
    /// erased and a new pairing is needed.
    LoggedOut,
    /// WhatsApp banned the number for a while.
    TemporarilyBanned,
    /// WhatsApp refuses this client version; an upgrade of the gateway is needed.
    ClientOutdated,
    /// Another connection with the same session took over (a second gateway or a copy).
    StreamReplaced,
}

impl WebConnectionState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stopped => "stopped",
            Self::Pairing => "pairing",
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Disconnected => "disconnected",
            Self::LoggedOut => "logged_out",
            Self::TemporarilyBanned => "temporarily_banned",
            Self::ClientOutdated => "client_outdated",
            Self::StreamReplaced => "stream_replaced",
        }
    }

    /// Every state, in the order of the list above.
    pub const ALL: [Self; 9] = [
        Self::Stopped,
        Self::Pairing,
        Self::Connecting,
        Self::Connected,
        Self::Disconnected,
        Self::LoggedOut,
        Self::TemporarilyBanned,
        Self::ClientOutdated,
        Self::StreamReplaced,
    ];

    /// A state after which the gateway does not reconnect by itself: the operator must connect
    /// (and for `logged_out`, pair) again.
    pub fn ends_connection(self) -> bool {
        matches!(
            self,
            Self::LoggedOut | Self::ClientOutdated | Self::StreamReplaced
        )
    }
}

/// An account's WhatsApp Web state as folded from its events.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WebState {
    /// The operator asked to connect and no state that ends the connection came since: a
    /// gateway that runs the account connects it (at start, after a takeover).
    pub wanted: bool,
    pub state: WebConnectionState,
    /// Why the connection is in `state` (the library's words, or who logged out); never a key
    /// or a QR code.
    pub reason: Option<String>,
    /// Send read receipts for the messages the AI answers.
    pub mark_read: bool,
}

impl WebState {
    /// Folds an account event (shared with the read model, so both agree).
    pub fn fold(state: &mut Option<WebState>, event: &AccountEvent) {
        match event {
            AccountEvent::AccountCreated {
                transport: crate::account::Transport::WhatsappWeb,
                ..
            } => *state = Some(WebState::default()),
            AccountEvent::WhatsAppWebConnectRequested => {
                if let Some(s) = state {
                    s.wanted = true;
                }
            }
            AccountEvent::WhatsAppWebStateChanged { state: new, reason } => {
                if let Some(s) = state {
                    s.state = *new;
                    s.reason.clone_from(reason);
                    if new.ends_connection() {
                        s.wanted = false;
                    }
                }
            }
            AccountEvent::WhatsAppWebSettingsChanged { mark_read } => {
                if let Some(s) = state {
                    s.mark_read = *mark_read;
                }
            }
            _ => {}
        }
    }

    /// Connect: recorded once (a connect on an account that is wanted already is a no-op).
    pub fn decide_connect(&self) -> Vec<AccountEvent> {
        if self.wanted {
            vec![]
        } else {
            vec![AccountEvent::WhatsAppWebConnectRequested]
        }
    }

    /// A state the connection reported: recorded when it differs from the last one.
    pub fn decide_state(
        &self,
        state: WebConnectionState,
        reason: Option<String>,
    ) -> Result<Vec<AccountEvent>, DomainError> {
        let reason = reason.map(|r| clip(&r));
        if self.state == state && self.reason == reason {
            return Ok(vec![]);
        }
        Ok(vec![AccountEvent::WhatsAppWebStateChanged {
            state,
            reason,
        }])
    }

    pub fn decide_settings(&self, mark_read: Option<bool>) -> Vec<AccountEvent> {
        match mark_read {
            Some(m) if m != self.mark_read => {
                vec![AccountEvent::WhatsAppWebSettingsChanged { mark_read: m }]
            }
            _ => vec![],
        }
    }
}

/// At most [`MAX_REASON`] characters, without control characters.
fn clip(reason: &str) -> String {
    reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_by_name() {
        for s in WebConnectionState::ALL {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(
                serde_json::from_str::<WebConnectionState>(&json).unwrap(),
                s
            );
        }
    }

    #[test]
    fn logged_out_ends_the_wish_to_connect() {
        let mut st = Some(WebState::default());
        WebState::fold(&mut st, &AccountEvent::WhatsAppWebConnectRequested);
        assert!(st.as_ref().unwrap().wanted);
        WebState::fold(
            &mut st,
            &AccountEvent::WhatsAppWebStateChanged {
                state: WebConnectionState::Disconnected,
                reason: None,
            },
        );
        assert!(st.as_ref().unwrap().wanted, "a drop reconnects");
        WebState::fold(
            &mut st,
            &AccountEvent::WhatsAppWebStateChanged {
                state: WebConnectionState::LoggedOut,
                reason: Some("unlinked from the phone".into()),
            },
        );
        let st = st.unwrap();
        assert!(!st.wanted);
        assert_eq!(st.state, WebConnectionState::LoggedOut);
        assert_eq!(st.decide_connect().len(), 1);
    }

    #[test]
    fn a_repeated_state_is_not_recorded_again() {
        let st = WebState {
            state: WebConnectionState::Connected,
            ..Default::default()
        };
        assert!(st
            .decide_state(WebConnectionState::Connected, None)
            .unwrap()
            .is_empty());
        let long = "x\n".repeat(400);
        match st
            .decide_state(WebConnectionState::Disconnected, Some(long))
            .unwrap()
            .as_slice()
        {
            [AccountEvent::WhatsAppWebStateChanged {
                reason: Some(r), ..
            }] => {
                assert_eq!(r.chars().count(), MAX_REASON);
                assert!(!r.contains('\n'));
            }
            other => panic!("{other:?}"),
        }
    }
}
