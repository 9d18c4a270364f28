//! Each account's connection status (issue 26): what came in from its transport and when, its
//! last successful send and its last send failure, folded from the `chat` streams inside the
//! messages model (so it is in the checkpoint and a replay gives the same), and the state the
//! accounts pages show, computed with the account's configuration ([`status`]).
//!
//! Times are the events' commit times (`recorded_at`); which of a failure and a success is newer
//! is decided by their positions, so two events committed within the same clock tick still order.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use wagate_events::account::Transport;
use wagate_events::chat::{ChatEvent, DeliveryStatus};
use wagate_events::reason::{ReasonCode, ReplyReason};
use wagate_events::whatsapp_web::WebConnectionState;

use crate::AccountView;

/// Reason text of a delivery the transport reported `failed` without saying why.
const DELIVERY_FAILED: &str = "delivery failed";

/// A moment in the history: when an event was committed, and its position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    pub at: DateTime<Utc>,
    pub position: i64,
}

/// The last send failure of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendError {
    pub at: DateTime<Utc>,
    pub position: i64,
    /// The human text: the reply's `send_failed` reason, or the transport's delivery error.
    pub reason: String,
}

/// What the chat events say about one account's transport.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// The newest event that came in from the transport: a received message (the customer's,
    /// or the owner's own from the phone) or a delivery status.
    pub last_inbound: Option<Mark>,
    /// The newest message the account sent (`MessageSent`: the transport took it).
    pub last_sent: Option<Mark>,
    /// The newest send failure: a reply that failed with `send_failed`, or a delivery the
    /// transport reported `failed`.
    pub last_send_error: Option<SendError>,
}

/// Every account's [`Activity`], by account id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionModel {
    pub accounts: BTreeMap<String, Activity>,
}

impl ConnectionModel {
    /// Folds one chat event of `account`, committed at `at` with `position`.
    pub fn apply(&mut self, account: &str, at: DateTime<Utc>, position: i64, event: &ChatEvent) {
        let mark = Mark { at, position };
        let error = |reason: String| SendError {
            at,
            position,
            reason,
        };
        match event {
            ChatEvent::MessageReceived { .. } => {
                self.activity_mut(account).last_inbound = Some(mark)
            }
            ChatEvent::MessageStatusUpdated {
                status, error: e, ..
            } => {
                let a = self.activity_mut(account);
                a.last_inbound = Some(mark);
                if *status == DeliveryStatus::Failed {
                    a.last_send_error = Some(error(
                        e.clone()
                            .filter(|e| !e.is_empty())
                            .unwrap_or_else(|| DELIVERY_FAILED.to_string()),
                    ));
                }
            }
            ChatEvent::MessageSent { .. } => self.activity_mut(account).last_sent = Some(mark),
            ChatEvent::AiReplyFailed { reason, .. } if is_send_failure(reason) => {
                self.activity_mut(account).last_send_error = Some(error(reason.text()));
            }
            _ => {}
        }
    }

    fn activity_mut(&mut self, account: &str) -> &mut Activity {
        self.accounts.entry(account.to_string()).or_default()
    }

    pub fn activity(&self, account: &str) -> Option<&Activity> {
        self.accounts.get(account)
    }
}

fn is_send_failure(reason: &ReplyReason) -> bool {
    reason.kind() == ReasonCode::SendFailed
}

/// An account's connection state, as the accounts pages and the API show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    /// A sandbox account: nothing leaves the process.
    Sandbox,
    /// Cloud API: configured, nothing received or sent yet.
    Waiting,
    /// Cloud API: something came in or went out, and no send failed since the last success.
    Connected,
    /// Cloud API: the last send failed after the last successful one.
    SendFailing,
    /// Cloud API: Meta rejected the access token (error 190); sends stop until a new one is set.
    TokenRejected,
    /// WhatsApp Web: not started (connect it).
    Stopped,
    /// WhatsApp Web: waiting for the phone to scan the QR code (or enter the pair code).
    Pairing,
    /// WhatsApp Web: connecting with a paired session.
    Connecting,
    /// WhatsApp Web: the connection dropped; it reconnects by itself.
    Disconnected,
    /// WhatsApp Web: the device was unlinked; pair again.
    LoggedOut,
    /// WhatsApp Web: WhatsApp banned the number for a while.
    TemporarilyBanned,
    /// WhatsApp Web: WhatsApp refuses this client version.
    ClientOutdated,
    /// WhatsApp Web: another connection took the session over.
    StreamReplaced,
}

impl ConnectionState {
    /// Every state, in the order the API documents them.
    pub const ALL: [ConnectionState; 13] = [
        Self::Sandbox,
        Self::Waiting,
        Self::Connected,
        Self::SendFailing,
        Self::TokenRejected,
        Self::Stopped,
        Self::Pairing,
        Self::Connecting,
        Self::Disconnected,
        Self::LoggedOut,
        Self::TemporarilyBanned,
        Self::ClientOutdated,
        Self::StreamReplaced,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sandbox => "sandbox",
            Self::Waiting => "waiting",
            Self::Connected => "connected",
            Self::SendFailing => "send_failing",
            Self::TokenRejected => "token_rejected",
            Self::Stopped => "stopped",
            Self::Pairing => "pairing",
            Self::Connecting => "connecting",
            Self::Disconnected => "disconnected",
            Self::LoggedOut => "logged_out",
            Self::TemporarilyBanned => "temporarily_banned",
            Self::ClientOutdated => "client_outdated",
            Self::StreamReplaced => "stream_replaced",
        }
    }

    /// The words people read for the state.
    pub fn label(self) -> &'static str {
        match self {
            Self::Sandbox => "Sandbox",
            Self::Waiting => "Waiting for Meta",
            Self::Connected => "Connected",
            Self::SendFailing => "Sends failing",
            Self::TokenRejected => "Token rejected",
            Self::Stopped => "Not connected",
            Self::Pairing => "Waiting for the phone",
            Self::Connecting => "Connecting",
            Self::Disconnected => "Reconnecting",
            Self::LoggedOut => "Logged out",
            Self::TemporarilyBanned => "Temporarily banned",
            Self::ClientOutdated => "Client outdated",
            Self::StreamReplaced => "Replaced by another connection",
        }
    }
}

/// An account's connection status: its configuration and its activity together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionStatus {
    pub state: ConnectionState,
    pub transport: Transport,
    pub last_inbound_at: Option<DateTime<Utc>>,
    pub last_sent_at: Option<DateTime<Utc>>,
    pub last_send_error: Option<SendError>,
    /// Cloud API: the access token is flagged as rejected by Meta.
    pub token_invalid: bool,
}

/// The connection status of `account` given its folded activity (`None`: no chat event yet).
pub fn status(account: &AccountView, activity: Option<&Activity>) -> ConnectionStatus {
    let activity = activity.cloned().unwrap_or_default();
    let token_invalid = account
        .cloud_api
        .as_ref()
        .is_some_and(|c| c.token_invalid.is_some());
    let failing = activity.last_send_error.as_ref().is_some_and(|e| {
        activity
            .last_sent
            .is_none_or(|sent| sent.position < e.position)
    });
    let state = match account.transport {
        Transport::Sandbox => ConnectionState::Sandbox,
        Transport::CloudApi if token_invalid => ConnectionState::TokenRejected,
        Transport::CloudApi if failing => ConnectionState::SendFailing,
        Transport::CloudApi if activity.last_inbound.is_some() || activity.last_sent.is_some() => {
            ConnectionState::Connected
        }
        Transport::CloudApi => ConnectionState::Waiting,
        Transport::WhatsappWeb => {
            let web = account.whatsapp_web.clone().unwrap_or_default();
            match web.state {
                WebConnectionState::Connected if failing => ConnectionState::SendFailing,
                WebConnectionState::Connected => ConnectionState::Connected,
                WebConnectionState::Stopped => ConnectionState::Stopped,
                WebConnectionState::Pairing => ConnectionState::Pairing,
                WebConnectionState::Connecting => ConnectionState::Connecting,
                WebConnectionState::Disconnected => ConnectionState::Disconnected,
                WebConnectionState::LoggedOut => ConnectionState::LoggedOut,
                WebConnectionState::TemporarilyBanned => ConnectionState::TemporarilyBanned,
                WebConnectionState::ClientOutdated => ConnectionState::ClientOutdated,
                WebConnectionState::StreamReplaced => ConnectionState::StreamReplaced,
            }
        }
    };
    ConnectionStatus {
        state,
        transport: account.transport,
        last_inbound_at: activity.last_inbound.map(|m| m.at),
        last_sent_at: activity.last_sent.map(|m| m.at),
        last_send_error: activity.last_send_error,
        token_invalid,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::Duration;
    use serde_json::json;
    use wagate_events::account::{CloudApiSettings, CloudApiState};
    use wagate_events::settings::LayerState;

    use super::*;

    /// The API's enum list (`ALL` with `as_str`) is what the state serializes to, every state
    /// once.
    #[test]
    fn every_state_is_listed_under_its_serialized_name() {
        let names: Vec<String> = ConnectionState::ALL
            .iter()
            .map(|s| {
                assert_eq!(json!(s), json!(s.as_str()));
                s.as_str().to_string()
            })
            .collect();
        let unique: std::collections::BTreeSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
        // A new variant must be added to ALL: this match stops compiling otherwise.
        for s in ConnectionState::ALL {
            match s {
                ConnectionState::Sandbox
                | ConnectionState::Waiting
                | ConnectionState::Connected
                | ConnectionState::SendFailing
                | ConnectionState::TokenRejected
                | ConnectionState::Stopped
                | ConnectionState::Pairing
                | ConnectionState::Connecting
                | ConnectionState::Disconnected
                | ConnectionState::LoggedOut
                | ConnectionState::TemporarilyBanned
                | ConnectionState::ClientOutdated
                | ConnectionState::StreamReplaced => {}
            }
        }
    }

    fn t(s: i64) -> DateTime<Utc> {
        "2026-11-25T10:00:00Z"
            .parse::<DateTime<Utc>>()
            .expect("time")
            + Duration::seconds(s)
    }

    fn ev(v: serde_json::Value) -> ChatEvent {
        serde_json::from_value(v).expect("chat event")
    }

    fn account(transport: Transport, token_invalid: Option<&str>) -> AccountView {
        AccountView {
            id: "acme".into(),
            name: "acme".into(),
            transport,
            whatsapp_web: (transport == Transport::WhatsappWeb).then(Default::default),
            cloud_api: (transport == Transport::CloudApi).then(|| CloudApiState {
                settings: CloudApiSettings {
                    phone_number_id: "1".into(),
                    business_account_id: "2".into(),
                    access_token_sealed: "x".into(),
                    app_secret_sealed: "y".into(),
                    verify_token_sha256: "z".into(),
                    graph_base_url: "https://graph.facebook.com".into(),
                    graph_version: "v21.0".into(),
                },
                token_invalid: token_invalid.map(str::to_string),
            }),
            created_at: t(0),
            deleted: false,
            ai: LayerState::default(),
            ai_updated_at: None,
            model_urls: Default::default(),
            tokens: BTreeMap::new(),
        }
    }

    #[test]
    fn fold_and_state() {
        let cloud = account(Transport::CloudApi, None);
        let mut m = ConnectionModel::default();
        assert_eq!(
            status(&cloud, m.activity("acme")).state,
            ConnectionState::Waiting
        );

        let at = t(0).to_rfc3339();
        m.apply(
            "acme",
            t(1),
            1,
            &ev(json!({"MessageReceived":{"message_id":"m1","from":"1","text":"hi","from_me":false,"at":at}})),
        );
        let s = status(&cloud, m.activity("acme"));
        assert_eq!(s.state, ConnectionState::Connected);
        assert_eq!(s.last_inbound_at, Some(t(1)));
        assert_eq!(s.last_sent_at, None);

        // A reply that failed for another reason is not a send failure.
        m.apply(
            "acme",
            t(2),
            2,
            &ev(json!({"AiReplyFailed":{"reply_id":"r1","reason":{"code":"interrupted"}}})),
        );
        assert_eq!(
            status(&cloud, m.activity("acme")).state,
            ConnectionState::Connected
        );

        m.apply(
            "acme",
            t(3),
            3,
            &ev(json!({"AiReplyFailed":{"reply_id":"r2","reason":{"code":"send_failed","detail":"graph 400"}}})),
        );
        let s = status(&cloud, m.activity("acme"));
        assert_eq!(s.state, ConnectionState::SendFailing);
        let e = s.last_send_error.expect("error");
        assert_eq!((e.at, e.reason.as_str()), (t(3), "send failed: graph 400"));

        // A later success: connected again, the error kept with its time.
        m.apply(
            "acme",
            t(3),
            4,
            &ev(json!({"MessageSent":{"message_id":"o1","text":"x","source":"operator","ai_reply_id":null,"at":at}})),
        );
        let s = status(&cloud, m.activity("acme"));
        assert_eq!(s.state, ConnectionState::Connected);
        assert_eq!(s.last_sent_at, Some(t(3)));
        assert!(s.last_send_error.is_some());

        // A delivery reported failed: an inbound event and a send error.
        m.apply(
            "acme",
            t(5),
            5,
            &ev(json!({"MessageStatusUpdated":{"message_id":"o1","status":"failed","at":at}})),
        );
        let s = status(&cloud, m.activity("acme"));
        assert_eq!(s.state, ConnectionState::SendFailing);
        assert_eq!(s.last_inbound_at, Some(t(5)));
        assert_eq!(s.last_send_error.expect("error").reason, DELIVERY_FAILED);

        // The token flag wins over everything; other accounts are untouched.
        let rejected = account(Transport::CloudApi, Some("190"));
        let s = status(&rejected, m.activity("acme"));
        assert_eq!(s.state, ConnectionState::TokenRejected);
        assert!(s.token_invalid);
        assert_eq!(m.activity("other"), None);

        let sandbox = account(Transport::Sandbox, None);
        assert_eq!(
            status(&sandbox, m.activity("acme")).state,
            ConnectionState::Sandbox
        );
    }
}
