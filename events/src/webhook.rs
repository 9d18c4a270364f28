//! Webhook subscriptions (`webhook` / `<id>`): a URL, the event types it wants, an optional
//! account filter and its signing secret (sealed: the plain secret is shown once at creation and
//! exists afterwards only in memory). A subscription is active until deleted by an admin or
//! disabled because its receiver answered 410 Gone.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::DomainError;

/// Every event type a subscription can ask for (`*` asks for all of them).
pub const EVENT_TYPES: [&str; 10] = [
    "message.received",
    "message.sent",
    "ai.reply.generated",
    "ai.reply.sent",
    "ai.reply.failed",
    "ai.reply.skipped",
    "ai.handoff.requested",
    "ai.config.changed",
    "account.owner.changed",
    "account.connection",
];

/// Longest webhook URL accepted.
pub const MAX_URL: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookStatus {
    /// Not created yet.
    #[default]
    Absent,
    Active,
    /// The receiver answered 410 Gone: nothing more is sent.
    Disabled,
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Webhook {
    pub status: WebhookStatus,
}

#[derive(Debug, Clone, PartialEq)]
pub enum WebhookCommand {
    Create {
        url: String,
        /// Event types, or `["*"]`.
        events: Vec<String>,
        account_id: Option<String>,
        /// The signing secret, sealed by the caller.
        secret_sealed: String,
    },
    Delete,
    Disable {
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WebhookEvent {
    WebhookCreated {
        url: String,
        events: Vec<String>,
        account_id: Option<String>,
        secret_sealed: String,
    },
    WebhookDeleted,
    WebhookDisabled {
        reason: String,
    },
}

impl DomainEvent for WebhookEvent {
    fn event_type(&self) -> String {
        match self {
            Self::WebhookCreated { .. } => "WebhookCreated",
            Self::WebhookDeleted => "WebhookDeleted",
            Self::WebhookDisabled { .. } => "WebhookDisabled",
        }
        .to_string()
    }
    fn event_version(&self) -> String {
        crate::EVENT_VERSION.to_string()
    }
}

/// Whether a subscription to `events` wants `event_type`.
pub fn wants(events: &[String], event_type: &str) -> bool {
    events.iter().any(|e| e == "*" || e == event_type)
}

/// An absolute http(s) URL with a host, no credentials, bounded length.
pub fn check_url(url: &str) -> Result<(), DomainError> {
    if url.len() > MAX_URL {
        return Err(DomainError::invalid(
            "url",
            format!("must be at most {MAX_URL} bytes"),
        ));
    }
    let parsed =
        url::Url::parse(url).map_err(|e| DomainError::invalid("url", format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(DomainError::invalid("url", "must be an http or https URL"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(DomainError::invalid("url", "must name a host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(DomainError::invalid(
            "url",
            "must not carry credentials; receivers authenticate requests by their signature",
        ));
    }
    Ok(())
}

/// A non-empty list of known event types (or `*`).
pub fn check_events(events: &[String]) -> Result<(), DomainError> {
    if events.is_empty() {
        return Err(DomainError::invalid(
            "events",
            "must name at least one event type, or \"*\"",
        ));
    }
    if events.len() > EVENT_TYPES.len() + 1 {
        return Err(DomainError::invalid("events", "too many entries"));
    }
    for e in events {
        if e != "*" && !EVENT_TYPES.contains(&e.as_str()) {
            return Err(DomainError::invalid(
                "events",
                format!(
                    "unknown event type {e:?}; known: {} or \"*\"",
                    EVENT_TYPES.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

impl Aggregate for Webhook {
    const TYPE: &'static str = "webhook";
    type Command = WebhookCommand;
    type Event = WebhookEvent;
    type Error = DomainError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), DomainError> {
        let event = match command {
            WebhookCommand::Create {
                url,
                events,
                account_id,
                secret_sealed,
            } => {
                if self.status != WebhookStatus::Absent {
                    return Err(DomainError::Conflict("the webhook already exists".into()));
                }
                check_url(&url)?;
                check_events(&events)?;
                let mut events = events;
                events.sort();
                events.dedup();
                WebhookEvent::WebhookCreated {
                    url,
                    events,
                    account_id,
                    secret_sealed,
                }
            }
            WebhookCommand::Delete => match self.status {
                WebhookStatus::Absent | WebhookStatus::Deleted => {
                    return Err(DomainError::NotFound("no such webhook".into()))
                }
                WebhookStatus::Active | WebhookStatus::Disabled => WebhookEvent::WebhookDeleted,
            },
            WebhookCommand::Disable { reason } => match self.status {
                WebhookStatus::Active => WebhookEvent::WebhookDisabled { reason },
                // Already disabled (a second 410 in flight): nothing to record.
                WebhookStatus::Disabled => return Ok(()),
                WebhookStatus::Absent | WebhookStatus::Deleted => {
                    return Err(DomainError::NotFound("no such webhook".into()))
                }
            },
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.status = match event {
            WebhookEvent::WebhookCreated { .. } => WebhookStatus::Active,
            WebhookEvent::WebhookDeleted => WebhookStatus::Deleted,
            WebhookEvent::WebhookDisabled { .. } => WebhookStatus::Disabled,
        };
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    type Fw = TestFramework<Webhook>;

    fn created() -> WebhookEvent {
        WebhookEvent::WebhookCreated {
            url: "https://example.com/hook".into(),
            events: vec!["ai.reply.sent".into()],
            account_id: None,
            secret_sealed: "CT".into(),
        }
    }

    fn create(url: &str, events: &[&str]) -> WebhookCommand {
        WebhookCommand::Create {
            url: url.into(),
            events: events.iter().map(|e| e.to_string()).collect(),
            account_id: None,
            secret_sealed: "CT".into(),
        }
    }

    #[test]
    fn create_sorts_and_dedups_event_types() {
        Fw::with(())
            .given_no_previous_events()
            .when(create(
                "https://example.com/hook",
                &["ai.reply.sent", "ai.reply.generated", "ai.reply.sent"],
            ))
            .then_expect_events(vec![WebhookEvent::WebhookCreated {
                url: "https://example.com/hook".into(),
                events: vec!["ai.reply.generated".into(), "ai.reply.sent".into()],
                account_id: None,
                secret_sealed: "CT".into(),
            }]);
    }

    #[test]
    fn unknown_event_type_is_refused() {
        Fw::with(())
            .given_no_previous_events()
            .when(create("https://example.com/hook", &["ai.reply.exploded"]))
            .then_expect_error(DomainError::invalid(
                "events",
                format!(
                    "unknown event type \"ai.reply.exploded\"; known: {} or \"*\"",
                    EVENT_TYPES.join(", ")
                ),
            ));
    }

    #[test]
    fn empty_event_list_is_refused() {
        Fw::with(())
            .given_no_previous_events()
            .when(create("https://example.com/hook", &[]))
            .then_expect_error_message("events: must name at least one event type, or \"*\"");
    }

    #[test]
    fn non_http_urls_are_refused() {
        for url in [
            "ftp://example.com/x",
            "file:///etc/passwd",
            "not a url",
            "https://user:pw@example.com/",
        ] {
            Fw::with(())
                .given_no_previous_events()
                .when(create(url, &["*"]))
                .then_expect_error(match check_url(url) {
                    Err(e) => e,
                    Ok(()) => panic!("{url} accepted"),
                });
        }
    }

    #[test]
    fn created_twice_is_a_conflict() {
        Fw::with(())
            .given(vec![created()])
            .when(create("https://example.com/hook", &["*"]))
            .then_expect_error(DomainError::Conflict("the webhook already exists".into()));
    }

    #[test]
    fn disable_is_recorded_once() {
        Fw::with(())
            .given(vec![created()])
            .when(WebhookCommand::Disable {
                reason: "410".into(),
            })
            .then_expect_events(vec![WebhookEvent::WebhookDisabled {
                reason: "410".into(),
            }]);
        Fw::with(())
            .given(vec![
                created(),
                WebhookEvent::WebhookDisabled {
                    reason: "410".into(),
                },
            ])
            .when(WebhookCommand::Disable {
                reason: "410".into(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn delete_needs_an_existing_webhook() {
        Fw::with(())
            .given_no_previous_events()
            .when(WebhookCommand::Delete)
            .then_expect_error(DomainError::NotFound("no such webhook".into()));
        Fw::with(())
            .given(vec![created(), WebhookEvent::WebhookDeleted])
            .when(WebhookCommand::Delete)
            .then_expect_error(DomainError::NotFound("no such webhook".into()));
        Fw::with(())
            .given(vec![created()])
            .when(WebhookCommand::Delete)
            .then_expect_events(vec![WebhookEvent::WebhookDeleted]);
    }

    #[test]
    fn wildcard_wants_everything() {
        assert!(wants(&["*".into()], "ai.reply.sent"));
        assert!(wants(&["ai.reply.sent".into()], "ai.reply.sent"));
        assert!(!wants(&["ai.reply.sent".into()], "message.sent"));
    }
}
