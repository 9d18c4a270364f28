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
//!
//! Every genuinely new id is also "not in the window", so that question would cost every inbound
//! message of a long chat a round trip to the store. A Bloom filter of every id the window ever
//! held, built when the window first drops one, answers "never seen" for almost all new ids
//! without asking; only "maybe seen" asks the store. It has a fixed size ([`FILTER_BYTES`]), so
//! the state stays bounded: as a chat's ids grow far beyond what the filter was sized for, more
//! new ids are "maybe seen" and ask the store, which is always right.

use std::collections::{HashMap, VecDeque};
use std::hash::Hasher;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::chat::DeliveryStatus;

/// Message ids kept in memory per chat.
pub const ID_WINDOW: usize = 512;

/// Size of the filter of ids a chat ever held (only in chats that dropped ids from the window).
/// With 4 hashes it answers "maybe seen" for a new id with a probability of ~0.2 % after
/// 10,000 ids, ~2 % after 16,000 and ~37 % after 50,000.
pub const FILTER_BYTES: usize = 16 * 1024;
const FILTER_BITS: u64 = (FILTER_BYTES * 8) as u64;
const FILTER_HASHES: u64 = 4;

/// A Bloom filter of message ids, serialized as base64. Its hash (FNV-1a over the id's bytes,
/// twice with different prefixes, combined by double hashing) is fixed: snapshots keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SeenFilter(Vec<u8>);

impl SeenFilter {
    fn new() -> Self {
        Self(vec![0; FILTER_BYTES])
    }

    fn bits(id: &str) -> impl Iterator<Item = usize> {
        let hash = |prefix: u8| {
            let mut h = fnv::FnvHasher::default();
            h.write(&[prefix]);
            h.write(id.as_bytes());
            h.finish()
        };
        let (h1, h2) = (hash(0), hash(1) | 1);
        (0..FILTER_HASHES).map(move |i| {
            // In 0..FILTER_BITS, which fits usize.
            usize::try_from(h1.wrapping_add(i.wrapping_mul(h2)) % FILTER_BITS).unwrap_or(0)
        })
    }

    fn insert(&mut self, id: &str) {
        for bit in Self::bits(id) {
            if let Some(byte) = self.0.get_mut(bit / 8) {
                *byte |= 1 << (bit % 8);
            }
        }
    }

    fn may_contain(&self, id: &str) -> bool {
        Self::bits(id).all(|bit| {
            self.0
                .get(bit / 8)
                .is_some_and(|b| b & (1 << (bit % 8)) != 0)
        })
    }
}

impl Serialize for SeenFilter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for SeenFilter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)?;
        if bytes.len() != FILTER_BYTES {
            return Err(serde::de::Error::custom(format!(
                "a filter of {} bytes, expected {FILTER_BYTES}",
                bytes.len()
            )));
        }
        Ok(Self(bytes))
    }
}

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
    /// Every id the window ever held, once it dropped one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seen: Option<SeenFilter>,
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
    /// hold it, and it may be one of the ids dropped from the window (the filter of seen ids does
    /// not rule it out).
    pub fn needs_recall(&self, id: &str) -> bool {
        !self.complete()
            && !self.contains(id)
            && self.seen.as_ref().is_none_or(|seen| seen.may_contain(id))
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
        if let Some(seen) = &mut self.seen {
            seen.insert(&id);
        }
        self.facts.insert(id.clone(), fact);
        self.order.push_back(id);
        while self.order.len() > ID_WINDOW {
            if self.seen.is_none() {
                // The first drop: until now the window held every id of the stream.
                let mut seen = SeenFilter::new();
                for known in &self.order {
                    seen.insert(known);
                }
                self.seen = Some(seen);
            }
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
    fn the_filter_spares_new_ids_the_store_and_survives_a_snapshot() {
        let mut w = MessageWindow::default();
        for i in 0..3 * ID_WINDOW {
            w.received(format!("wamid.{i}"));
        }
        assert!(!w.complete());
        // No false negatives: every dropped id is "maybe seen" and asked of the store.
        assert!((0..2 * ID_WINDOW).all(|i| w.needs_recall(&format!("wamid.{i}"))));
        // New ids almost never are (1,536 ids in 131,072 bits).
        let asked = (0..10_000)
            .filter(|i| w.needs_recall(&format!("new.{i}")))
            .count();
        assert!(asked < 10, "{asked} of 10,000 new ids would ask the store");
        let json = serde_json::to_string(&w).expect("serializes");
        let back: MessageWindow = serde_json::from_str(&json).expect("reads back");
        assert_eq!(back, w);
        // A window from before the filter (or with a damaged one) asks the store for every id
        // it does not hold, which is always right.
        let mut old: serde_json::Value = serde_json::from_str(&json).expect("json");
        old.as_object_mut().map(|o| o.remove("seen"));
        let old: MessageWindow = serde_json::from_value(old).expect("reads");
        assert!(old.needs_recall("new.1"));
        let mut damaged: serde_json::Value = serde_json::from_str(&json).expect("json");
        damaged["seen"] = serde_json::json!("AAAA");
        assert!(serde_json::from_value::<MessageWindow>(damaged).is_err());
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
