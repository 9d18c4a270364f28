//! Keys of the metadata stored with every event: who made the change, in which request, when.

/// Who caused the event: `admin:<sub>`, `token:<id>`, `cli:<command>` or `system`.
pub const ACTOR: &str = "actor";
/// The HTTP request id (`x-request-id`) the event was written in, when there was one.
pub const REQUEST_ID: &str = "request_id";
/// RFC 3339 UTC time at which the command was decided.
pub const TIME: &str = "time";
