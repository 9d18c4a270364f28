//! One event as read back from the store, with its commit-ordered global position.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// An event row: stream, sequence in the stream, global position, type, version, payload and
/// the metadata written with it (actor, request id, time).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredEvent {
    pub position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: serde_json::Value,
    pub metadata: HashMap<String, String>,
    pub recorded_at: DateTime<Utc>,
}

impl StoredEvent {
    /// Who caused the event, from its metadata (`system` when unknown).
    pub fn actor(&self) -> &str {
        self.metadata
            .get(wagate_events::metadata::ACTOR)
            .map_or("system", String::as_str)
    }
}
