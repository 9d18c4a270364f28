//! The message ids a chat keeps in memory: the newest [`ID_WINDOW`] of them, each with what the
//! chat knows of it (received, or sent with its last delivery status).
//!
//! A chat's stream can hold any number of messages; its in-memory state must not grow with them
//! (it is cloned per multi-command decision, folded on activation and snapshotted). Ids that fell
//! out of the window are not forgotten by the store: when the window is not the whole story
//! ([`MessageWindow::complete`] is false) and a command names an id the window does not hold,
//! the chat actor asks the store (an index on the stream's message ids) and
//! [`MessageWindow::remember`]s the answer before the command is decided. The decision itself
//! stays pure.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::chat::DeliveryStatus;

/// Message ids kept in memory per chat.
pub const ID_WINDOW: usize = 512;

/// What a chat knows of one message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageFact {
    /// Received (inbound, or `from_me` from the owner's phone).
    Received,
    /// Sent by the gateway, with the last delivery status the transport reported.
    Sent(Option<DeliveryStatus>),
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MessageWindow {
    /// Oldest first; every entry is a key of `facts`.
    order: VecDeque<String>,
    facts: HashMap<String, MessageFact>,
    /// How many ids were dropped from the window (0: it holds every id of the stream).
    evicted: u64,
}

impl MessageWindow {
    pub fn get(&self, id: &str) -> Option<MessageFact> {
        self.facts.get(id).copied()
    }

    pub fn contains(&self, id: &str) -> bool {
        self.facts.contains_key(id)
    }

    /// Whether the window holds every message id of the stream.
    pub fn complete(&self) -> bool {
        self.evicted == 0
    }

    /// Whether deciding a command about `id` needs the store's answer first: the window does not
    /// hold it, and it may be one of the ids dropped from the window.
    pub fn needs_recall(&self, id: &str) -> bool {
        !self.complete() && !self.contains(id)
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Records a received id (a known id keeps what is known of it).
    pub fn received(&mut self, id: String) {
        if !self.facts.contains_key(&id) {
            self.insert(id, MessageFact::Received);
        }
    }

    /// Records a sent id, without a delivery status yet.
    pub fn sent(&mut self, id: String) {
        match self.facts.get_mut(&id) {
            Some(fact) => *fact = MessageFact::Sent(None),
            None => self.insert(id, MessageFact::Sent(None)),
        }
    }

    /// Records a delivery status of a sent id the window holds.
    pub fn status(&mut self, id: &str, status: DeliveryStatus) {
        if let Some(MessageFact::Sent(s)) = self.facts.get_mut(id) {
            *s = Some(status);
        }
    }

    /// Takes in what the store knows of an id that fell out of the window.
    pub fn remember(&mut self, id: String, fact: MessageFact) {
        match self.facts.get_mut(&id) {
            Some(known) => *known = fact,
            None => self.insert(id, fact),
        }
    }

    fn insert(&mut self, id: String, fact: MessageFact) {
        self.facts.insert(id.clone(), fact);
        self.order.push_back(id);
        while self.order.len() > ID_WINDOW {
            if let Some(old) = self.order.pop_front() {
                self.facts.remove(&old);
                self.evicted += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_keeps_the_newest_ids_and_knows_it_is_incomplete() {
        let mut w = MessageWindow::default();
        for i in 0..ID_WINDOW {
            w.received(format!("m{i}"));
        }
        assert!(w.complete());
        assert!(!w.needs_recall("new"));
        w.sent("out".into());
        assert_eq!(w.len(), ID_WINDOW);
        assert!(!w.complete());
        assert!(!w.contains("m0"));
        assert!(w.needs_recall("m0"));
        assert!(!w.needs_recall("m1"));
        assert_eq!(w.get("out"), Some(MessageFact::Sent(None)));
    }

    #[test]
    fn statuses_apply_to_sent_ids_only_and_remembered_ids_come_back() {
        let mut w = MessageWindow::default();
        w.received("in".into());
        w.sent("out".into());
        w.status("in", DeliveryStatus::Read);
        w.status("out", DeliveryStatus::Delivered);
        assert_eq!(w.get("in"), Some(MessageFact::Received));
        assert_eq!(
            w.get("out"),
            Some(MessageFact::Sent(Some(DeliveryStatus::Delivered)))
        );
        for i in 0..ID_WINDOW {
            w.received(format!("m{i}"));
        }
        assert!(w.needs_recall("out"));
        w.remember("out".into(), MessageFact::Sent(Some(DeliveryStatus::Read)));
        assert!(!w.needs_recall("out"));
        assert_eq!(w.len(), ID_WINDOW);
        // A repeated received id changes nothing.
        w.received("out".into());
        assert_eq!(
            w.get("out"),
            Some(MessageFact::Sent(Some(DeliveryStatus::Read)))
        );
    }
}
