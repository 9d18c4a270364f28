//! Identifiers with rules: account slugs and WhatsApp JIDs (whose suffix decides the chat kind).

use serde::{Deserialize, Serialize};

use crate::DomainError;

/// Checks an account id: `[a-z0-9][a-z0-9_-]{0,62}`.
pub fn validate_account_id(id: &str) -> Result<(), DomainError> {
    let mut chars = id.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if first_ok && rest_ok && id.len() <= 63 {
        Ok(())
    } else {
        Err(DomainError::invalid(
            "id",
            "account id must match [a-z0-9][a-z0-9_-]{0,62}",
        ))
    }
}

/// What kind of chat a JID names; decides which `reply_to_*` flag applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatKind {
    /// `<digits>@s.whatsapp.net` or `<digits>@lid`.
    Private,
    /// `<id>@g.us`.
    Group,
    /// `<digits>@newsletter`.
    Channel,
    /// `status@broadcast` and other `@broadcast` lists: never replied to.
    Broadcast,
}

/// Parses a WhatsApp JID and returns its chat kind, or a 400-worthy error naming `field`.
pub fn chat_kind(jid: &str, field: &'static str) -> Result<ChatKind, DomainError> {
    let bad = || {
        DomainError::invalid(
            field,
            "not a WhatsApp JID: expected <digits>@s.whatsapp.net, <digits>@lid, <id>@g.us, \
             <digits>@newsletter or status@broadcast",
        )
    };
    let (user, server) = jid.split_once('@').ok_or_else(bad)?;
    if user.is_empty() || user.len() > 64 {
        return Err(bad());
    }
    let digits = user.chars().all(|c| c.is_ascii_digit());
    match server {
        "s.whatsapp.net" | "lid" if digits => Ok(ChatKind::Private),
        "g.us" if user.chars().all(|c| c.is_ascii_digit() || c == '-') => Ok(ChatKind::Group),
        "newsletter" if digits => Ok(ChatKind::Channel),
        "broadcast" if user == "status" || digits => Ok(ChatKind::Broadcast),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids() {
        for ok in ["a", "acme", "acme-1", "0_x", &"a".repeat(63)] {
            assert!(validate_account_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "_a", "Acme", "a b", "a/b", &"a".repeat(64), "é"] {
            assert!(validate_account_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn jid_kinds() {
        assert_eq!(
            chat_kind("491701234567@s.whatsapp.net", "j"),
            Ok(ChatKind::Private)
        );
        assert_eq!(chat_kind("123456789@lid", "j"), Ok(ChatKind::Private));
        assert_eq!(chat_kind("120363042@g.us", "j"), Ok(ChatKind::Group));
        assert_eq!(
            chat_kind("4917012-1600000000@g.us", "j"),
            Ok(ChatKind::Group)
        );
        assert_eq!(chat_kind("120363@newsletter", "j"), Ok(ChatKind::Channel));
        assert_eq!(chat_kind("status@broadcast", "j"), Ok(ChatKind::Broadcast));
        for bad in [
            "",
            "CHAT_JID",
            "abc@s.whatsapp.net",
            "1@example.com",
            "@g.us",
            "1@g.us/x",
        ] {
            assert!(chat_kind(bad, "j").is_err(), "{bad}");
        }
    }
}
